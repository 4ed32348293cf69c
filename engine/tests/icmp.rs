//! ICMP errors: the ones the balancer originates (fragmentation needed /
//! packet too big for a packet over the egress MTU, rate-limited) and the ones
//! it receives about a connection and translates (IPVS ip_vs_in_icmp /
//! ip_vs_out_icmp), for NAT, DR and tunnel, IPv4 and IPv6.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};
use std::sync::atomic::Ordering::Relaxed;

const SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service]]
name = "dr"
vip = "10.0.1.101"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "dr"

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "tun"
vip = "10.0.1.102"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "tunnel"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "web6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
scheduler = "rr"

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
scheduler = "rr"

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "tun6"
vip = "fd00:1::102"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "tunnel"

[[service.real_server]]
address = "fd00:2::2"
"#;

const VIP_TUN: [u8; 4] = [10, 0, 1, 102];
const LB_INT_ADDR: [u8; 4] = [10, 0, 2, 1];
const VIP6_TUN: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2];
const LB_INT6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ROUTER: [u8; 4] = [10, 0, 2, 254];
const ROUTER6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];

fn engine_with(engine_keys: &str) -> MemEngine {
    let text =
        config_text(SERVICES).replacen("flow_table_size = 4096", &format!("flow_table_size = 4096\n{engine_keys}"), 1);
    MemEngine::new(ferrovs_cfg::Config::from_str(&text, "icmp-test.toml").expect("parses"), 1)
}

fn engine() -> MemEngine {
    engine_with("")
}

/// Set or clear DF on an IPv4 frame (no VLAN) and fix its header checksum.
fn df(mut f: Vec<u8>, on: bool) -> Vec<u8> {
    if on {
        f[20] |= 0x40;
    } else {
        f[20] &= !0x40;
    }
    ferrovs_engine::wire::csum::fill_ipv4(&mut f, 14).unwrap();
    f
}

fn set_mtu(e: &mut MemEngine, iface: usize, mtu: u16) {
    for w in e.workers.iter_mut() {
        w.queues_mut()[iface].set_mtu(mtu);
        w.refresh_caps();
    }
}

fn icmp_counts(e: &MemEngine) -> (u64, u64) {
    let c = &e.fabric.counters[0];
    (c.icmp_sent.load(Relaxed), c.icmp_ratelimited.load(Relaxed))
}

/// An established NAT connection 10.0.1.2:40000 -> VIP:80 -> rs1:8080.
fn nat_conn(e: &mut MemEngine) {
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S).len(), 1);
    let sa = tcp4(RS1, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b"");
    assert_eq!(e.inject(INT, &from_rs(sa, RS1_MAC), S).len(), 1);
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, b"")), S).len(), 1);
}

#[test]
fn frag_needed_to_the_client_from_the_vip() {
    let mut e = engine();
    nat_conn(&mut e);
    set_mtu(&mut e, INT, 1000);
    let big = df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'x'; 1400])), true);
    let out = e.inject(EXT, &big, S);
    assert_eq!(out.len(), 1, "one ICMP error");
    let (iface, f) = &out[0];
    assert_eq!(*iface, EXT, "back out of the interface towards the client");
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[6..12], &LB_EXT);
    assert_eq!(&f[26..30], &VIP, "from the address the client talked to");
    assert_eq!(&f[30..34], &CLIENT);
    assert_eq!((f[23], f[34], f[35]), (1, 3, 4), "ICMP type 3 code 4");
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1000, "next-hop MTU");
    assert_eq!(f.len(), 14 + 576, "576-byte datagram");
    assert_eq!(&f[42..], &big[14..14 + 548], "quote: the packet as the client sent it");
    assert_eq!(icmp_counts(&e), (1, 0));
    assert_drops(&e, &[]);
    // A packet that fits still goes through, and the too-big one changed no state.
    let ok = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'y'; 900])), S);
    assert_eq!(ok.len(), 1);
    assert_eq!(&ok[0].1[30..34], &RS1);
    // DF clear: the sender allows fragmentation; the packet goes to the real server in
    // fragments (as Linux's output path cuts it; see the frag tests), no error.
    let big = df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'x'; 1400])), false);
    let out = e.inject(EXT, &big, S);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(i, f)| *i == INT && f.len() - 14 <= 1000 && f[30..34] == RS1));
    assert_drops(&e, &[]);
    assert_eq!(icmp_counts(&e), (1, 0));
}

#[test]
fn frag_needed_to_the_real_server_from_the_balancer() {
    let mut e = engine();
    nat_conn(&mut e);
    set_mtu(&mut e, EXT, 1200);
    let big = df(from_rs(tcp4(RS1, 8080, CLIENT, 40000, TCP_ACK, 5001, 1001, &[b'z'; 1400]), RS1_MAC), true);
    let out = e.inject(INT, &big, S);
    assert_eq!(out.len(), 1);
    let (iface, f) = &out[0];
    assert_eq!(*iface, INT);
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &RS1_MAC);
    assert_eq!(&f[26..30], &LB_INT_ADDR, "from the balancer's address on the real servers' side");
    assert_eq!(&f[30..34], &RS1);
    assert_eq!((f[34], f[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1200);
    assert_eq!(&f[42 + 12..42 + 20], &big[14 + 12..14 + 20], "quoted addresses are the real server's (before NAT)");
    assert_eq!(icmp_counts(&e), (1, 0));
}

#[test]
fn frag_needed_for_dr_and_tunnel() {
    let mut e = engine();
    // DR: the balancer only sees the client's side.
    e.inject(EXT, &from_client(tcp4(CLIENT, 40001, VIP_DR, 80, TCP_SYN, 1, 0, b"")), S);
    set_mtu(&mut e, INT, 1000);
    let big = df(from_client(tcp4(CLIENT, 40001, VIP_DR, 80, TCP_ACK, 2, 1, &[1; 1200])), true);
    let out = e.inject(EXT, &big, S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[26..30], &VIP_DR);
    assert_eq!(&f[30..34], &CLIENT);
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1000);
    // Tunnel: the outer header's 20 bytes come off the MTU the client is told.
    set_mtu(&mut e, INT, 1500);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40002, VIP_TUN, 80, TCP_SYN, 1, 0, b"")), S);
    let fits = df(from_client(tcp4(CLIENT, 40002, VIP_TUN, 80, TCP_ACK, 2, 1, &[1; 1440])), true);
    assert_eq!(e.inject(EXT, &fits, S).len(), 1, "1480 + 20 fits 1500");
    let big = df(from_client(tcp4(CLIENT, 40002, VIP_TUN, 80, TCP_ACK, 2, 1, &[1; 1441])), true);
    let out = e.inject(EXT, &big, S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[26..30], &VIP_TUN);
    assert_eq!((f[34], f[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1480);
    assert_eq!(icmp_counts(&e), (2, 0));
    assert_drops(&e, &[]);
}

#[test]
fn packet_too_big_v6_and_fragments() {
    let mut e = engine();
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S);
    set_mtu(&mut e, INT, 1280);
    let big = from_client(tcp6(C6, 40000, VIP6, 80, TCP_ACK, 8, 1, &[3; 1400]));
    let out = e.inject(EXT, &big, S);
    assert_eq!(out.len(), 1);
    let (iface, f) = &out[0];
    assert_eq!(*iface, EXT);
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(f[20], 58, "ICMPv6");
    assert_eq!(&f[22..38], &VIP6);
    assert_eq!(&f[38..54], &C6);
    assert_eq!((f[54], f[55]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), 1280);
    assert_eq!(f.len(), 14 + 1280, "1280-byte packet");
    assert_eq!(&f[62..], &big[14..14 + 1232]);
    // A fragmented datagram over the MTU: the first fragment is answered (IPv6 routers
    // never fragment), later ones are dropped without an error.
    let dgram = from_client(udp6(C6, 5353, VIP6, 53, &[4; 2600]));
    let frags = fragment6(&dgram, 1400, 77);
    assert!(frags.len() >= 2);
    let out = e.inject(EXT, &frags[0], S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[54], 2);
    verify_checksums(&out[0].1).unwrap();
    for f in &frags[1..] {
        assert!(e.inject(EXT, f, S).is_empty());
    }
    assert_drops(&e, &[(DropReason::TooBig, frags.len() as u64 - 1)]);
    assert_eq!(icmp_counts(&e), (2, 0));
}

#[test]
fn originated_errors_are_rate_limited() {
    let mut e = engine_with("icmp_rate = 2\nicmp_burst = 3");
    nat_conn(&mut e);
    set_mtu(&mut e, INT, 1000);
    let big = df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'x'; 1400])), true);
    let sent: usize = (0..10).map(|_| e.inject(EXT, &big, S).len()).sum();
    assert_eq!(sent, 3, "the burst");
    assert_eq!(icmp_counts(&e), (3, 7));
    assert_drops(&e, &[(DropReason::TooBig, 7)]);
    // Half a second later: one token (2 per second).
    let sent: usize = (0..5).map(|_| e.inject(EXT, &big, S + S / 2).len()).sum();
    assert_eq!(sent, 1);
    assert_eq!(icmp_counts(&e), (4, 11));
    // icmp_rate = 0: never.
    let mut e = engine_with("icmp_rate = 0");
    nat_conn(&mut e);
    set_mtu(&mut e, INT, 1000);
    assert!(e.inject(EXT, &big, S).is_empty());
    assert_eq!(icmp_counts(&e), (0, 1));
    assert_drops(&e, &[(DropReason::TooBig, 1)]);
}

/// A host that keeps sending packets too big gets its own share of errors
/// (`icmp_host_rate` / `icmp_host_burst`), not the whole worker's: another host's
/// packet too big is still answered, so its path MTU discovery works during the flood.
#[test]
fn one_host_cannot_use_up_the_errors_of_the_others() {
    let mut e = engine();
    nat_conn(&mut e);
    let other = [10, 0, 1, 3];
    assert_eq!(e.inject(EXT, &from_client(tcp4(other, 41000, VIP, 80, TCP_SYN, 1000, 0, b"")), S).len(), 1);
    let sa = tcp4(RS1, 8080, other, 41000, TCP_SYN | TCP_ACK, 5000, 1001, b"");
    assert_eq!(e.inject(INT, &from_rs(sa, RS1_MAC), S).len(), 1);
    set_mtu(&mut e, INT, 1000);
    let big = df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'x'; 1400])), true);
    // More than the worker's whole burst (icmp_burst, 50) from one host: its own burst (10).
    let sent: usize = (0..60).map(|_| e.inject(EXT, &big, S).len()).sum();
    assert_eq!(sent, 10, "the host's burst, not the worker's");
    assert_eq!(icmp_counts(&e), (10, 50));
    let big2 = df(from_client(tcp4(other, 41000, VIP, 80, TCP_ACK, 1001, 5001, &[b'y'; 1400])), true);
    let out = e.inject(EXT, &big2, S);
    assert_eq!(out.len(), 1, "the other host is still answered");
    verify_checksums(&out[0].1).unwrap();
    assert_eq!(&out[0].1[30..34], &other, "to the other host");
    assert_eq!(&out[0].1[34..36], &[3, 4], "fragmentation needed");
    // 100 per second per host: a tenth of a second later, 10 more for the first host.
    let sent: usize = (0..60).map(|_| e.inject(EXT, &big, S + S / 10).len()).sum();
    assert_eq!(sent, 10);
    // icmp_host_rate = 0: only the worker's bucket.
    let mut e = engine_with("icmp_host_rate = 0");
    nat_conn(&mut e);
    set_mtu(&mut e, INT, 1000);
    let sent: usize = (0..60).map(|_| e.inject(EXT, &big, S).len()).sum();
    assert_eq!(sent, 50, "the worker's burst");
}

#[test]
fn received_errors_are_translated_for_dr_and_ipv6_from_the_real_server() {
    let mut e = engine();
    // DR: "fragmentation needed" from the client's side about the real server's reply
    // (VIP -> client, sent straight by the real server): forwarded unchanged to it.
    e.inject(EXT, &from_client(tcp4(CLIENT, 40003, VIP_DR, 80, TCP_SYN, 1, 0, b"")), S);
    let quoted = tcp4(VIP_DR, 80, CLIENT, 40003, TCP_ACK, 1, 2, b"");
    let err = from_client(icmp4_error(CLIENT, VIP_DR, 3, 4, 1400, &quoted));
    let out = e.inject(EXT, &err, S);
    assert_eq!(out.len(), 1);
    let (iface, f) = &out[0];
    assert_eq!(*iface, INT);
    assert_eq!(&f[0..6], &RS1_MAC);
    verify_checksums(f).unwrap();
    assert_eq!(&f[30..34], &VIP_DR, "still to the VIP (the real server holds it)");
    assert_eq!(&f[34..], &err[34..], "ICMP message and quote unchanged");
    // IPv6 NAT: "destination unreachable" from the real server about client -> rs.
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S);
    let quoted = tcp6(C6, 40000, RS6, 80, TCP_SYN, 7, 0, b"");
    let err = from_rs(icmp6_error(RS6, C6, 1, 4, 0, &quoted), RS1_MAC);
    let out = e.inject(INT, &err, S);
    assert_eq!(out.len(), 1);
    let (iface, f) = &out[0];
    assert_eq!(*iface, EXT);
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[22..38], &VIP6, "outer source: the VIP");
    assert_eq!(&f[38..54], &C6);
    let inner = 14 + 40 + 8;
    assert_eq!(&f[inner + 24..inner + 40], &VIP6, "quoted destination: the VIP");
    assert_eq!(&f[inner + 42..inner + 44], &80u16.to_be_bytes());
    assert_eq!(f[21], 63, "hop limit decremented, as for any forwarded packet");
    assert_drops(&e, &[]);
    // One that has run out of hops is dropped and counted, not forwarded.
    let mut spent = err.clone();
    spent[21] = 1;
    assert!(e.inject(INT, &spent, S).is_empty());
    assert_drops(&e, &[(DropReason::TtlExceeded, 1)]);
    // The balancer originated nothing.
    assert_eq!(icmp_counts(&e), (0, 0));
}

/// Tunnel mode: an error from the client's side about the real server's reply (VIP ->
/// client, sent by the real server itself) goes to the real server as every packet of the
/// connection does, in an IPIP header (IPVS `ip_vs_icmp_xmit` calls the connection's
/// `packet_xmit`, `ip_vs_tunnel_xmit` here). Sent bare to the VIP, it would reach a real
/// server across a router only by being routed back to the balancer.
#[test]
fn received_errors_are_tunnelled_to_a_tunnel_real_server() {
    let mut e = engine();
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, 40004, VIP_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let quoted = tcp4(VIP_TUN, 80, CLIENT, 40004, TCP_ACK, 1, 2, b"");
    let err = from_client(icmp4_error(CLIENT, VIP_TUN, 3, 4, 1400, &quoted));
    let out = e.inject(EXT, &err, S);
    assert_eq!(out.len(), 1);
    let (iface, f) = &out[0];
    assert_eq!(*iface, INT);
    assert_eq!(&f[0..6], &RS2_MAC);
    assert_eq!(f[23], 4, "IPIP");
    assert_eq!(&f[26..30], &LB_INT_ADDR, "outer source: the balancer");
    assert_eq!(&f[30..34], &RS2, "outer destination: the real server");
    let inner = &f[34..];
    assert_eq!(inner[9], 1, "an ICMP packet inside");
    assert_eq!(&inner[16..20], &VIP_TUN, "to the VIP, which the real server holds");
    assert_eq!(&inner[20..], &err[34..], "ICMP message and quote unchanged");
    let mut bare = f[..14].to_vec();
    bare.extend_from_slice(inner);
    verify_checksums(&bare).unwrap();
    assert_eq!(ferrovs_engine::wire::csum::finish(&f[14..34], 0), 0, "outer header checksum");
    assert_drops(&e, &[]);
}

/// The quoted transport checksum follows the translation of a received error, as Linux's NAT
/// does (`nf_nat_icmp_reply_translation`): UDP always (its checksum is in the first 8 bytes
/// every error quotes), TCP when the quote holds the whole header (Linux hosts and routers
/// quote up to 576 bytes). A zero (absent) IPv4 UDP checksum stays absent.
#[test]
fn quoted_transport_checksums_follow_the_translation() {
    let mut e = engine();
    nat_conn(&mut e);
    let inner = 14 + 20 + 8;
    // From the real server about client -> rs1:8080: the quote becomes client -> VIP:80.
    let quoted = tcp4(CLIENT, 40000, RS1, 8080, TCP_ACK, 1001, 5001, b"some data");
    verify_checksums(&quoted).unwrap();
    let out = e.inject(INT, &from_rs(icmp4_error_whole(RS1, CLIENT, 3, 3, 0, &quoted), RS1_MAC), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[inner + 16..inner + 20], &VIP, "quoted destination: the VIP");
    assert_eq!(&f[inner + 22..inner + 24], &80u16.to_be_bytes());
    verify_quoted_checksum(f).unwrap();
    // From the client's side about VIP:80 -> client: the quote becomes rs1:8080 -> client.
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 5001, 1001, b"reply");
    let out = e.inject(EXT, &from_client(icmp4_error_whole(CLIENT, VIP, 3, 4, 1400, &quoted)), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[inner + 12..inner + 16], &RS1, "quoted source: the real server");
    verify_quoted_checksum(f).unwrap();
    // A quote too short to hold the TCP checksum (header + 8 bytes) is translated all the same.
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 5001, 1001, b"");
    let out = e.inject(EXT, &from_client(icmp4_error(CLIENT, VIP, 3, 4, 1400, &quoted)), S);
    assert_eq!(out.len(), 1);
    verify_checksums(&out[0].1).unwrap();
    // IPv6 UDP (NAT to fd00:2::2 port 53), quoting the whole datagram and only its header.
    assert_eq!(e.inject(EXT, &from_client(udp6(C6, 5353, VIP6, 53, b"query")), S).len(), 1);
    let inner6 = 14 + 40 + 8;
    for whole in [true, false] {
        let quoted = udp6(C6, 5353, RS6, 53, if whole { b"query" } else { b"" });
        let err =
            if whole { icmp6_error_whole(RS6, C6, 1, 4, 0, &quoted) } else { icmp6_error(RS6, C6, 1, 4, 0, &quoted) };
        let out = e.inject(INT, &from_rs(err, RS1_MAC), S);
        assert_eq!(out.len(), 1, "whole quote: {whole}");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!(&f[inner6 + 24..inner6 + 40], &VIP6, "quoted destination: the VIP");
        verify_quoted_checksum(f).unwrap();
    }
    assert_drops(&e, &[]);
}

/// A packet whose IPv4 header checksum fails (corrupted on the wire: Linux drops it in
/// `ip_rcv`, before IPVS or the MTU check) is not answered with "fragmentation needed", and
/// an ICMP error with one is not translated: both are built with a fresh header checksum,
/// which would make the corrupted header (its addresses, its lengths) valid again.
#[test]
fn no_icmp_error_is_built_or_translated_from_a_bad_header_checksum() {
    let mut e = engine();
    nat_conn(&mut e);
    set_mtu(&mut e, INT, 1000);
    let big = df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[b'x'; 1400])), true);
    assert!(e.inject(EXT, &bad_ip_csum(big.clone()), S).is_empty(), "no error built");
    assert_eq!(icmp_counts(&e), (0, 0));
    assert_drops(&e, &[(DropReason::IpBadChecksum, 1)]);
    assert_eq!(e.inject(EXT, &big, S).len(), 1, "the good copy is answered");
    // "Fragmentation needed" from the client's side about VIP:80 -> client: for the real server.
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 5001, 1001, b"");
    let err = from_client(icmp4_error(CLIENT, VIP, 3, 4, 1400, &quoted));
    assert!(e.inject(EXT, &bad_ip_csum(err.clone()), S).is_empty(), "not translated");
    assert_drops(&e, &[(DropReason::IpBadChecksum, 2)]);
    let out = e.inject(EXT, &err, S);
    assert_eq!(out.len(), 1, "the good copy is translated");
    assert_eq!(&out[0].1[30..34], &RS1);
}

/// An ICMP error whose ICMP checksum fails (the quote corrupted on the wire: Linux's
/// `icmp_error` / `icmpv6_error` in connection tracking mark it INVALID, never translated) is
/// not translated: the translation computes the outer checksum afresh over the rewritten quote,
/// which would hand the corruption on as a valid error (here a quoted port, which may name
/// another connection of the receiver's). IPv4 (over the message) and ICMPv6 (with the
/// pseudo-header); the good copies are translated.
#[test]
fn an_icmp_error_with_a_bad_checksum_is_not_translated() {
    let mut e = engine();
    nat_conn(&mut e);
    assert_eq!(e.inject(EXT, &from_client(udp6(C6, 5353, VIP6, 53, b"query")), S).len(), 1);
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 5001, 1001, b"reply");
    let err = from_client(icmp4_error_whole(CLIENT, VIP, 3, 4, 1400, &quoted));
    let quoted6 = udp6(VIP6, 53, C6, 5353, b"answer");
    let err6 = from_client(icmp6_error_whole(C6, VIP6, 1, 4, 0, &quoted6));
    // The last byte of each quote.
    for f in [&err, &err6] {
        assert!(e.inject(EXT, &corrupt(f.clone(), f.len() - 1, 0x04), S).is_empty(), "not translated");
    }
    assert_drops(&e, &[(DropReason::L4BadChecksum, 2)]);
    assert_eq!(e.counters().icmp_translated, 0);
    for f in [&err, &err6] {
        let out = e.inject(EXT, f, S);
        assert_eq!(out.len(), 1, "the good copy is translated");
        verify_checksums(&out[0].1).unwrap();
    }
    assert_eq!(e.counters().icmp_translated, 2);
}

/// An error from a router between the balancer and a NAT real server (its "time exceeded"
/// for a client packet the balancer forwarded with a low TTL, its "fragmentation needed")
/// reaches the client from the VIP, as IPVS's `ip_vs_nat_icmp` (outer source: the virtual
/// address, whoever reported) and Linux's NAT (`nf_nat_icmp_reply_translation` makes the outer
/// header the reply to the client's packet) send it. Left as the router's address, a client
/// sending low-TTL packets to the VIP would map the real servers' network hop by hop, and the
/// error would come from a (usually private) address the client's network filters, so the
/// client would never learn the path MTU.
#[test]
fn an_internal_routers_error_reaches_the_client_from_the_vip() {
    let mut e = engine();
    nat_conn(&mut e);
    let router = [10, 0, 2, 254];
    let quoted = tcp4(CLIENT, 40000, RS1, 8080, TCP_ACK, 1001, 5001, b"");
    for (ty, code, rest) in [(11, 0, 0), (3, 4, 1400)] {
        let out = e.inject(INT, &from_rs(icmp4_error(router, CLIENT, ty, code, rest, &quoted), RS2_MAC), S);
        assert_eq!(out.len(), 1, "type {ty}");
        let (iface, f) = &out[0];
        assert_eq!(*iface, EXT);
        verify_checksums(f).unwrap();
        assert_eq!(&f[26..30], &VIP, "type {ty}: outer source the VIP, not the router");
        assert_eq!(&f[30..34], &CLIENT);
        assert_eq!(&f[14 + 20 + 8 + 16..14 + 20 + 8 + 20], &VIP, "quoted destination");
    }
    // IPv6: a router on the real servers' side about client -> rs.
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S);
    let router6 = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    let quoted = tcp6(C6, 40000, RS6, 80, TCP_SYN, 7, 0, b"");
    let out = e.inject(INT, &from_rs(icmp6_error(router6, C6, 3, 0, 0, &quoted), RS2_MAC), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[22..38], &VIP6, "outer source the VIP, not the router");
    assert_eq!(&f[38..54], &C6);
    assert_drops(&e, &[]);
    assert_eq!(e.counters().icmp_translated, 3);
}

/// A tunnel connection client:cport -> VIP_TUN:80 (to 10.0.2.3) and its client's data packet
/// of 1400 payload bytes with DF, as the balancer sent it to the real server (IPIP, 1500
/// bytes outer).
fn tunnel_conn(e: &mut MemEngine, cport: u16) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, cport, VIP_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let data = df(from_client(tcp4(CLIENT, cport, VIP_TUN, 80, TCP_ACK, 2, 1, &[7; 1440])), true);
    let out = e.inject(EXT, &data, S);
    assert_eq!(out.len(), 1);
    let tun = out[0].1.clone();
    assert_eq!((tun[23], &tun[26..30], &tun[30..34]), (4, &LB_INT_ADDR[..], &RS2[..]), "IPIP to the real server");
    (data, tun)
}

/// ICMP error `ty`/`code` (`rest`) from a router on the real servers' side to `to` about the
/// tunnel packet `tun`, quoting its first `n` bytes (a Linux router quotes up to 576 bytes).
fn router_error(to: [u8; 4], ty: u8, code: u8, rest: u32, tun: &[u8], n: usize) -> Vec<u8> {
    from_rs(icmp4_error_whole(ROUTER, to, ty, code, rest, &tun[..14 + n]), RS2_MAC)
}

/// Path MTU discovery through a tunnel real server (IPVS `ip_vs_in_icmp`): a router between
/// the balancer and the real server reports "fragmentation needed" for the IPIP packet to the
/// balancer's own address; the client learns it from the VIP, about its own packet, with the
/// outer header's 20 bytes off the MTU. Another error about a tunnel packet (time exceeded)
/// reaches the client as IPVS relays it: the same type and code, from the VIP. Rate-limited by
/// the balancer's own ICMP token bucket.
#[test]
fn a_routers_frag_needed_for_a_tunnel_packet_reaches_the_client() {
    let mut e = engine();
    let (data, tun) = tunnel_conn(&mut e, 40010);
    let n = 576 - 20 - 8;
    let out = e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, n), S);
    assert_eq!(out.len(), 1, "one error to the client");
    let (iface, f) = &out[0];
    assert_eq!(*iface, EXT);
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[6..12], &LB_EXT);
    assert_eq!(f[23], 1, "ICMP");
    assert_eq!(&f[26..30], &VIP_TUN, "from the VIP");
    assert_eq!(&f[30..34], &CLIENT);
    assert_eq!((f[34], f[35]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1380, "the router's MTU less the outer header");
    let quoted = &tun[34..14 + n];
    assert_eq!(&f[42..], quoted, "the client's packet as far as the router quoted it");
    assert_eq!(&quoted[12..20], &data[26..34], "client -> VIP");
    assert_eq!(icmp_counts(&e), (1, 0));
    assert_drops(&e, &[]);
    // Time exceeded about the tunnel packet: relayed as it is, from the VIP.
    let out = e.inject(INT, &router_error(LB_INT_ADDR, 11, 0, 0, &tun, n), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!((&f[26..30], &f[30..34], f[34], f[35]), (&VIP_TUN[..], &CLIENT[..], 11, 0));
    assert_eq!(&f[42..], quoted);
    assert_eq!(icmp_counts(&e), (2, 0));
    assert_drops(&e, &[]);
    // No token: nothing, counted.
    let mut e = engine_with("icmp_rate = 0");
    let (_, tun) = tunnel_conn(&mut e, 40011);
    assert!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, n), S).is_empty());
    assert_eq!(icmp_counts(&e), (0, 1));
    assert_drops(&e, &[(DropReason::TooBig, 1)]);
}

/// A router's frag-needed about a tunnel packet with MTU 0 (pre-RFC 1191 routers) or an
/// implausibly small one: as Linux's `__ip_rt_update_pmtu` (`ip_rt_min_pmtu`), which IPVS's
/// `ip_vs_in_icmp` reads back from the route, the path MTU is not taken below 552 (nor above
/// the egress interface's MTU), so the client is told 552 less the outer header, not 68.
#[test]
fn a_routers_tiny_or_zero_mtu_for_a_tunnel_packet_is_taken_as_552() {
    let mut e = engine();
    let (_, tun) = tunnel_conn(&mut e, 40013);
    let n = 576 - 20 - 8;
    for (reported, told) in [(0, 532), (70, 532), (551, 532), (552, 532), (553, 533), (1000, 980)] {
        let out = e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, reported, &tun, n), S);
        assert_eq!(out.len(), 1, "reported {reported}");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!((&f[26..30], &f[30..34], f[34], f[35]), (&VIP_TUN[..], &CLIENT[..], 3, 4));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), told, "reported {reported}");
    }
    // An egress interface towards the real server under 552: its MTU is the path's.
    set_mtu(&mut e, INT, 500);
    let out = e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 0, &tun, n), S);
    assert_eq!(out.len(), 1);
    assert_eq!(u16::from_be_bytes([out[0].1[40], out[0].1[41]]), 480);
    assert_eq!(icmp_counts(&e), (7, 0));
    assert_drops(&e, &[]);
}

/// IPv6 in IPv6: "packet too big" from a router for the tunnel packet reaches the client as
/// "packet too big" from the VIP with the 40 bytes of the outer header off, never below 1280.
#[test]
fn a_routers_packet_too_big_for_a_tunnel_packet_reaches_the_client_v6() {
    let mut e = engine();
    assert_eq!(e.inject(EXT, &from_client(tcp6(C6, 40010, VIP6_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let data = from_client(tcp6(C6, 40010, VIP6_TUN, 80, TCP_ACK, 2, 1, &[7; 1400]));
    let out = e.inject(EXT, &data, S);
    assert_eq!(out.len(), 1);
    let tun = out[0].1.clone();
    assert_eq!((tun[20], &tun[22..38], &tun[38..54]), (41, &LB_INT6[..], &RS6[..]), "IPv6 in IPv6");
    let n = 1280 - 40 - 8;
    let err = |mtu: u32| from_rs(icmp6_error_whole(ROUTER6, LB_INT6, 2, 0, mtu, &tun[..14 + n]), RS1_MAC);
    // Under IPv6's minimum link MTU (RFC 8200: a node never takes a path MTU below 1280),
    // 0 included: the client, IPv6 too, is never told less than 1280.
    for (mtu, told) in [(1400, 1360), (1300, 1280), (1000, 1280), (0, 1280)] {
        let out = e.inject(INT, &err(mtu), S);
        assert_eq!(out.len(), 1, "reported {mtu}");
        let (iface, f) = &out[0];
        assert_eq!(*iface, EXT);
        verify_checksums(f).unwrap();
        assert_eq!(&f[0..6], &CLIENT_MAC);
        assert_eq!(f[20], 58, "ICMPv6");
        assert_eq!(&f[22..38], &VIP6_TUN, "from the VIP");
        assert_eq!(&f[38..54], &C6);
        assert_eq!((f[54], f[55]), (2, 0), "packet too big");
        assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), told);
        assert_eq!(&f[62..], &tun[54..14 + n], "the client's packet as far as it was quoted");
    }
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[]);
}

/// Errors that only look like a router's report about a tunnel packet are counted drops and
/// reach nobody: a quote too short for the client's header and 8 bytes, a quoted client
/// packet of no connection, a quote whose outer destination is not the connection's real
/// server (a forged error must not reach a client of another connection), one whose outer
/// source is not the address the error came to, one about a NAT connection.
#[test]
fn forged_or_short_tunnel_errors_are_counted_drops() {
    let mut e = engine();
    nat_conn(&mut e);
    let (_, tun) = tunnel_conn(&mut e, 40012);
    let n = 576 - 20 - 8;
    // The outer header and the client's IP header only.
    assert!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, 20 + 20 + 4), S).is_empty());
    assert_drops(&e, &[(DropReason::Malformed, 1)]);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut t = tun.clone();
        f(&mut t);
        ferrovs_engine::wire::csum::fill_ipv4(&mut t, 14).unwrap();
        ferrovs_engine::wire::csum::fill_ipv4(&mut t, 34).unwrap();
        t
    };
    let forged = [
        // Another client port: no connection.
        with(&|t| t[54..56].copy_from_slice(&40999u16.to_be_bytes())),
        // Outer destination another real server.
        with(&|t| t[30..34].copy_from_slice(&RS1)),
        // Outer source not ours.
        with(&|t| t[26..30].copy_from_slice(&[10, 0, 2, 99])),
        // A NAT connection's packet (client -> VIP:80, to rs1) dressed as a tunnel packet.
        with(&|t| {
            t[30..34].copy_from_slice(&RS1);
            t[50..54].copy_from_slice(&VIP);
            t[54..56].copy_from_slice(&40000u16.to_be_bytes());
        }),
    ];
    for t in &forged {
        assert!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, t, n), S).is_empty());
    }
    assert_drops(&e, &[(DropReason::Malformed, 1), (DropReason::NoFlow, forged.len() as u64)]);
    assert_eq!(icmp_counts(&e), (0, 0));
}

/// A router's parameter problem about a tunnel packet: its pointer indexes the quoted outer
/// packet, so the client, quoted its own packet, is told the pointer less the outer header's 20
/// bytes (pointer 29, the client's protocol byte: 9), as code 2 (bad length) too. One pointing
/// into the outer header (its protocol byte, 9) is about the header the balancer built, which
/// the client cannot fix: not relayed (`unsupported`). Code 1 (a required option missing) has
/// no pointer: relayed as it is.
#[test]
fn a_routers_parameter_problem_for_a_tunnel_packet_points_into_the_clients_packet() {
    let mut e = engine();
    let (data, tun) = tunnel_conn(&mut e, 40015);
    let n = 576 - 20 - 8;
    let quoted = &tun[34..14 + n];
    for (code, at, told) in [(0u8, 29u8, 9u8), (2, 20, 0), (0, 20 + 19, 19), (1, 0, 0)] {
        let out = e.inject(INT, &router_error(LB_INT_ADDR, 12, code, u32::from_be_bytes([at, 0, 0, 0]), &tun, n), S);
        assert_eq!(out.len(), 1, "code {code} pointer {at}");
        let (iface, f) = &out[0];
        assert_eq!(*iface, EXT);
        verify_checksums(f).unwrap();
        assert_eq!((&f[26..30], &f[30..34], f[34], f[35]), (&VIP_TUN[..], &CLIENT[..], 12, code));
        assert_eq!(&f[38..42], &[told, 0, 0, 0], "code {code}: pointer {at} less the outer header");
        assert_eq!(&f[42..], quoted);
        assert_eq!(&quoted[..20], &data[14..34], "the client's own header");
    }
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[]);
    // Into the outer header (its protocol byte, its first and last bytes).
    for at in [9u8, 0, 19] {
        let err = router_error(LB_INT_ADDR, 12, 0, u32::from_be_bytes([at, 0, 0, 0]), &tun, n);
        assert!(e.inject(INT, &err, S).is_empty(), "pointer {at}");
    }
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[(DropReason::Unsupported, 3)]);
}

/// IPv6 in IPv6: a router's parameter problem's 32-bit pointer, into the client's packet
/// (pointer 46, the client's next header field), reaches the client less the outer header's 40
/// bytes (6); one into the outer header (an unrecognized next header at 6: the router does not
/// take IPv6 in IPv6; a header field at 0) is not relayed (`unsupported`).
#[test]
fn a_routers_parameter_problem_for_a_tunnel_packet_points_into_the_clients_packet_v6() {
    let mut e = engine();
    assert_eq!(e.inject(EXT, &from_client(tcp6(C6, 40015, VIP6_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let data = from_client(tcp6(C6, 40015, VIP6_TUN, 80, TCP_ACK, 2, 1, &[7; 1400]));
    let tun = e.inject(EXT, &data, S)[0].1.clone();
    assert_eq!((tun[20], &tun[38..54]), (41, &RS6[..]), "IPv6 in IPv6");
    let n = 1280 - 40 - 8;
    let err = |code: u8, at: u32| from_rs(icmp6_error_whole(ROUTER6, LB_INT6, 4, code, at, &tun[..14 + n]), RS1_MAC);
    for (code, at, told) in [(0u8, 46u32, 6u32), (1, 46, 6), (0, 40, 0), (0, 40 + 60, 60)] {
        let out = e.inject(INT, &err(code, at), S);
        assert_eq!(out.len(), 1, "code {code} pointer {at}");
        let (iface, f) = &out[0];
        assert_eq!(*iface, EXT);
        verify_checksums(f).unwrap();
        assert_eq!((&f[22..38], &f[38..54], f[54], f[55]), (&VIP6_TUN[..], &C6[..], 4, code));
        assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), told, "code {code}: pointer {at} less 40");
        assert_eq!(&f[62..], &tun[54..14 + n]);
        assert_eq!(&f[62..102], &data[14..54], "the client's own header");
    }
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[]);
    for (code, at) in [(1u8, 6u32), (0, 0), (0, 39), (2, 39)] {
        assert!(e.inject(INT, &err(code, at), S).is_empty(), "code {code} pointer {at}");
    }
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[(DropReason::Unsupported, 4)]);
}

fn learnt(e: &MemEngine) -> (u64, u64) {
    let c = &e.fabric.counters[0];
    (c.tunnel_mtu_learnt.load(Relaxed), c.tunnel_mtu_evicted.load(Relaxed))
}

/// A learnt path MTU towards a tunnel real server (IPVS `ip_vs_tunnel_xmit` checks the
/// route's MTU, which the router's error lowered): after a router's validated frag-needed
/// (1400) about a tunnel packet to 10.0.2.3, a client's DF packet that would outgrow it once
/// encapsulated gets the balancer's own frag-needed from the VIP (1380, the outer header off)
/// and nothing goes to the real server; one that fits is encapsulated, and one without DF goes
/// as before. A forged error teaches nothing, and the path MTU is forgotten after 600 s.
#[test]
fn a_learnt_tunnel_path_mtu_answers_large_packets_before_encapsulating() {
    let mut e = engine();
    let (_, tun) = tunnel_conn(&mut e, 40014);
    let n = 576 - 20 - 8;
    let pkt =
        |len: usize, on: bool| df(from_client(tcp4(CLIENT, 40014, VIP_TUN, 80, TCP_ACK, 2, 1, &vec![7; len - 40])), on);
    let tunnelled = |out: &[(usize, Vec<u8>)], len: usize| {
        assert_eq!(out.len(), 1);
        let f = &out[0].1;
        assert_eq!((out[0].0, f[23], &f[30..34]), (INT, 4, &RS2[..]), "IPIP to the real server");
        assert_eq!(f.len(), 14 + 20 + len);
    };
    // Forged (the outer destination another real server): a counted drop, nothing learnt.
    let mut forged = tun.clone();
    forged[30..34].copy_from_slice(&RS1);
    ferrovs_engine::wire::csum::fill_ipv4(&mut forged, 14).unwrap();
    assert!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1000, &forged, n), S).is_empty());
    tunnelled(&e.inject(EXT, &pkt(1450, true), S), 1450);
    assert_eq!(learnt(&e), (0, 0));
    // The router's report: relayed to the client, and learnt.
    assert_eq!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, n), S).len(), 1);
    assert_eq!(learnt(&e), (1, 0));
    assert_eq!(icmp_counts(&e), (1, 0));
    let big = pkt(1450, true);
    let out = e.inject(EXT, &big, 2 * S);
    assert_eq!(out.len(), 1, "the balancer's own error, nothing to the real server");
    let (iface, f) = &out[0];
    assert_eq!(*iface, EXT);
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!((&f[26..30], &f[30..34], f[34], f[35]), (&VIP_TUN[..], &CLIENT[..], 3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1380, "the learnt MTU less the outer header");
    assert_eq!(&f[42..42 + 28], &big[14..14 + 28], "quoting the client's packet");
    assert_eq!(icmp_counts(&e), (2, 0));
    assert_drops(&e, &[(DropReason::NoFlow, 1)]);
    // Fits once encapsulated (1380 + 20 = 1400 too): as before.
    tunnelled(&e.inject(EXT, &pkt(1300, true), 2 * S), 1300);
    tunnelled(&e.inject(EXT, &pkt(1380, true), 2 * S), 1380);
    // No DF: the client does no path MTU discovery; the outer packet (DF clear as the
    // client's) is cut to the learnt path MTU, as Linux's output path cuts it to the route's
    // MTU. Before, it went whole, for the router to cut (or lose). One that fits goes whole.
    let out = e.inject(EXT, &pkt(1450, false), 2 * S);
    let lens: Vec<usize> = out.iter().map(|(i, f)| if *i == INT { f.len() - 14 } else { 0 }).collect();
    assert_eq!(lens, [1396, 94], "outer fragments within 1400 (1376 bytes of 1450 + 20, then 74)");
    for (_, f) in &out {
        assert_eq!((f[23], &f[30..34]), (4, &RS2[..]), "IPIP fragments to the real server");
        assert!(ferrovs_engine::wire::csum::ip_header_ok(f, 14, false));
    }
    let outer = reassemble(&out.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>()).expect("complete");
    assert_eq!(&outer[34..], &pkt(1450, false)[14..], "the client's packet whole inside");
    tunnelled(&e.inject(EXT, &pkt(1380, false), 2 * S), 1380);
    // A higher report does not raise it, a lower one lowers it.
    assert_eq!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1480, &tun, n), 3 * S).len(), 1);
    assert_eq!(e.inject(EXT, &pkt(1450, true), 3 * S)[0].0, EXT);
    assert_eq!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1300, &tun, n), 3 * S).len(), 1);
    let out = e.inject(EXT, &pkt(1300, true), 3 * S);
    assert_eq!((out.len(), out[0].0), (1, EXT));
    assert_eq!(u16::from_be_bytes([out[0].1[40], out[0].1[41]]), 1280);
    assert_eq!(learnt(&e), (2, 0));
    assert_eq!(icmp_counts(&e), (6, 0));
    // 600 s after the last report: forgotten, the large packet is encapsulated again.
    assert_eq!(e.inject(EXT, &pkt(1450, true), 603 * S - 1)[0].0, EXT, "still learnt");
    tunnelled(&e.inject(EXT, &pkt(1450, true), 603 * S), 1450);
    assert_eq!(icmp_counts(&e), (7, 0));
    assert_drops(&e, &[(DropReason::NoFlow, 1)]);
}

/// IPv6 in IPv6: a router's "packet too big" (1400) for the tunnel packet is learnt; a client
/// packet that would outgrow it gets the balancer's own "packet too big" (1360) from the VIP
/// and nothing goes to the real server. Learnt under 1280 (a report of 1000), an IPv6 client is
/// never asked for less than 1280: a 1280-byte packet goes on, a larger one is told 1280.
#[test]
fn a_learnt_tunnel_path_mtu_answers_large_packets_before_encapsulating_v6() {
    let mut e = engine();
    assert_eq!(e.inject(EXT, &from_client(tcp6(C6, 40014, VIP6_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let pkt = |len: usize| from_client(tcp6(C6, 40014, VIP6_TUN, 80, TCP_ACK, 2, 1, &vec![7; len - 60]));
    let tun = e.inject(EXT, &pkt(1460), S)[0].1.clone();
    let n = 1280 - 40 - 8;
    let err = |mtu: u32| from_rs(icmp6_error_whole(ROUTER6, LB_INT6, 2, 0, mtu, &tun[..14 + n]), RS1_MAC);
    let tunnelled = |out: &[(usize, Vec<u8>)], len: usize| {
        assert_eq!(out.len(), 1);
        let f = &out[0].1;
        assert_eq!((out[0].0, f[20], &f[38..54]), (INT, 41, &RS6[..]), "IPv6 in IPv6 to the real server");
        assert_eq!(f.len(), 14 + 40 + len);
    };
    let told = |out: &[(usize, Vec<u8>)]| {
        assert_eq!(out.len(), 1, "the balancer's own error, nothing to the real server");
        let f = &out[0].1;
        assert_eq!(out[0].0, EXT);
        verify_checksums(f).unwrap();
        assert_eq!((&f[22..38], &f[38..54], f[54], f[55]), (&VIP6_TUN[..], &C6[..], 2, 0));
        u32::from_be_bytes([f[58], f[59], f[60], f[61]])
    };
    assert_eq!(e.inject(INT, &err(1400), S).len(), 1);
    assert_eq!(learnt(&e), (1, 0));
    assert_eq!(told(&e.inject(EXT, &pkt(1450), 2 * S)), 1360);
    tunnelled(&e.inject(EXT, &pkt(1360), 2 * S), 1360);
    assert_eq!(e.inject(INT, &err(1000), 2 * S).len(), 1);
    tunnelled(&e.inject(EXT, &pkt(1280), 2 * S), 1280);
    assert_eq!(told(&e.inject(EXT, &pkt(1281), 2 * S)), 1280);
    assert_eq!(icmp_counts(&e), (4, 0));
    assert_drops(&e, &[]);
    tunnelled(&e.inject(EXT, &pkt(1450), 602 * S), 1450);
    // No token: a counted drop, still nothing to the real server.
    let mut e = engine_with("icmp_rate = 0");
    assert_eq!(e.inject(EXT, &from_client(tcp6(C6, 40014, VIP6_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    assert_eq!(e.inject(INT, &err(1400), S).len(), 0);
    assert!(e.inject(EXT, &pkt(1450), S).is_empty());
    assert_eq!(icmp_counts(&e), (0, 2));
    assert_drops(&e, &[(DropReason::TooBig, 2)]);
}

/// An FTP control connection of a tunnel service: the gateway only reads its client's
/// segments (in tunnel mode it rewrites none, and the real server's SYN-ACK, whose MSS it would
/// clamp, does not come back through the balancer), so they are checked as any tunnel packet
/// is: against the egress MTU less the outer header and against a path MTU learnt from a
/// router. Before, the control connection was exempt: one too big to encapsulate was dropped
/// without a word to the client, one over the learnt path MTU went to the router to be dropped.
#[test]
fn a_tunnel_ftp_control_connections_client_segments_are_checked_against_the_mtu() {
    const VIP_FTP: [u8; 4] = [10, 0, 1, 103];
    let ftp = "\n[[service]]\nname = \"ftp-tun\"\nvip = \"10.0.1.103\"\nprotocol = \"tcp\"\nports = [21]\n\
               scheduler = \"rr\"\nforward = \"tunnel\"\nftp = true\n\n[[service.real_server]]\naddress = \"10.0.2.3\"\n";
    let text = config_text(&format!("{SERVICES}{ftp}"));
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "icmp-test.toml").expect("parses"), 1);
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, 40020, VIP_FTP, 21, TCP_SYN, 1, 0, b"")), S).len(), 1);
    // One command line of `len` bytes in all (IP and TCP headers included), DF set.
    let seg = |len: usize, seq: u32| {
        let mut line = vec![b' '; len - 40];
        line[..4].copy_from_slice(b"NOOP");
        line[len - 42..].copy_from_slice(b"\r\n");
        df(from_client(tcp4(CLIENT, 40020, VIP_FTP, 21, TCP_ACK, seq, 1, &line)), true)
    };
    let frag_needed = |out: &[(usize, Vec<u8>)], mtu: u16| {
        assert_eq!(out.len(), 1, "the balancer's own error");
        let (iface, f) = &out[0];
        assert_eq!(*iface, EXT);
        verify_checksums(f).unwrap();
        assert_eq!((&f[26..30], &f[30..34], f[34], f[35]), (&VIP_FTP[..], &CLIENT[..], 3, 4));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), mtu);
    };
    let out = e.inject(EXT, &seg(1480, 2), S);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1[23], &out[0].1[30..34]), (INT, 4, &RS2[..]), "1480 + 20 fits 1500: IPIP");
    frag_needed(&e.inject(EXT, &seg(1481, 1442), S), 1480);
    // A router's report about an earlier tunnel packet to the same real server is learnt.
    let (_, tun) = tunnel_conn(&mut e, 40021);
    assert_eq!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, 576 - 28), 2 * S).len(), 1);
    frag_needed(&e.inject(EXT, &seg(1450, 1442), 2 * S), 1380);
    assert_drops(&e, &[]);
}

/// The later fragments of a datagram to a tunnel real server whose path MTU was learnt: one
/// that would outgrow it once encapsulated is dropped (`too_big`, no error: RFC 1122 3.2.2;
/// the first fragment's error told the sender), as one over the interface's MTU is, instead of
/// going to the router that reported the path MTU to be dropped there. One that fits goes on.
#[test]
fn later_fragments_over_a_learnt_tunnel_path_mtu_are_dropped() {
    let mut e = engine();
    assert_eq!(e.inject(EXT, &from_client(tcp6(C6, 40016, VIP6_TUN, 80, TCP_SYN, 1, 0, b"")), S).len(), 1);
    let tun = e.inject(EXT, &from_client(tcp6(C6, 40016, VIP6_TUN, 80, TCP_ACK, 2, 1, &[7; 1400])), S)[0].1.clone();
    let err = from_rs(icmp6_error_whole(ROUTER6, LB_INT6, 2, 0, 1400, &tun[..14 + 1280 - 48]), RS1_MAC);
    assert_eq!(e.inject(INT, &err, S).len(), 1);
    assert_eq!(learnt(&e), (1, 0));
    // Fragments of 1400 bytes (1360 fit once encapsulated), the last one of 164.
    let dgram = from_client(tcp6(C6, 40016, VIP6_TUN, 80, TCP_ACK, 1402, 1, &[8; 2800]));
    let frags = fragment6(&dgram, 1400, 93);
    assert_eq!(frags.iter().map(|f| f.len() - 14).collect::<Vec<_>>(), [1400, 1400, 164]);
    let out = e.inject(EXT, &frags[0], 2 * S);
    assert_eq!((out.len(), out[0].0, out[0].1[54]), (1, EXT, 2), "the first: packet too big to the client");
    assert!(e.inject(EXT, &frags[1], 2 * S).is_empty(), "over the learnt path MTU: nothing to the router");
    // One that fits is of a datagram answered with an error: useless to the real server
    // (`frag::later_fragments_of_an_answered_datagram_are_dropped`).
    assert!(e.inject(EXT, &frags[2], 2 * S).is_empty());
    assert_drops(&e, &[(DropReason::TooBig, 2)]);
}

/// IPv4 fragments (DF clear) to a tunnel real server whose path MTU was learnt (1400): each,
/// under the interface's MTU once encapsulated but over the learnt path MTU, goes out as outer
/// fragments within 1400 (Linux cuts to the route's learnt MTU), the first (the connection's
/// path) and the later ones (by datagram) alike; the outer fragments reassemble, datagram
/// fragment by datagram fragment, to the client's fragments encapsulated. Before, they went
/// whole, over the path MTU a router had reported.
#[test]
fn fragments_without_df_over_a_learnt_tunnel_path_mtu_are_cut_to_it() {
    let mut e = engine();
    let (_, tun) = tunnel_conn(&mut e, 40018);
    assert_eq!(e.inject(INT, &router_error(LB_INT_ADDR, 3, 4, 1400, &tun, 548), S).len(), 1);
    assert_eq!(learnt(&e), (1, 0));
    let dgram = from_client(tcp4(CLIENT, 40018, VIP_TUN, 80, TCP_ACK, 1442, 1, &[9; 2800]));
    let frags = fragment4(&dgram, 1456, 0x61);
    assert_eq!(frags.iter().map(|f| f.len() - 14).collect::<Vec<_>>(), [1452, 1408]);
    for (k, frag) in frags.iter().enumerate() {
        let out = e.inject(EXT, frag, 2 * S);
        assert!(out.iter().all(|(i, f)| *i == INT && f.len() - 14 <= 1400 && f[23] == 4), "fragment {k}");
        let want = if frag.len() - 14 + 20 > 1400 { 2 } else { 1 };
        assert_eq!(out.len(), want, "fragment {k}");
        let outer = reassemble(&out.into_iter().map(|(_, f)| f).collect::<Vec<_>>()).expect("complete");
        assert_eq!(&outer[34..], &frag[14..], "fragment {k} whole inside");
    }
    assert_drops(&e, &[]);
}

/// An ICMPv6 error whose quoted outer header is IPv6 to an IPv4-mapped address
/// (`::ffff:10.0.2.3`, the IPv4 real server's address in the engine's form): the balancer
/// never sends such a packet, so it is malformed, as an IPv4-mapped address in any IPv6
/// header is. Before, it passed the checks of the IPv4 tunnel connection it named: relayed to
/// the client, and its too-big report learnt as the IPv4 real server's path MTU.
#[test]
fn a_quoted_outer_ipv6_header_to_an_ipv4_mapped_address_is_malformed() {
    let mut e = engine();
    let (_, tun) = tunnel_conn(&mut e, 40017);
    let client_pkt = &tun[14 + 20..14 + 20 + 60];
    let mut outer = vec![0u8; 14 + 40];
    outer[14] = 0x60;
    outer[14 + 4..14 + 6].copy_from_slice(&(client_pkt.len() as u16).to_be_bytes());
    outer[14 + 6] = 4; // IPv4 inside
    outer[14 + 7] = 64;
    outer[14 + 8..14 + 24].copy_from_slice(&LB_INT6);
    outer[14 + 24 + 10..14 + 24 + 12].copy_from_slice(&[0xff, 0xff]);
    outer[14 + 24 + 12..14 + 40].copy_from_slice(&RS2);
    outer.extend_from_slice(client_pkt);
    let err = from_rs(icmp6_error_whole(ROUTER6, LB_INT6, 2, 0, 1280, &outer), RS1_MAC);
    assert!(e.inject(INT, &err, S).is_empty());
    assert_eq!(learnt(&e), (0, 0));
    assert_eq!(icmp_counts(&e), (0, 0));
    assert_drops(&e, &[(DropReason::Malformed, 1)]);
}
