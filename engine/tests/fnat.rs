//! Full NAT (`forward = "fnat"`) fixtures: client -> VIP:vport leaves as
//! LADDR:lport -> RS:rport, the real server's reply to LADDR:lport comes back
//! as VIP:vport -> client, for IPv4 and IPv6, TCP and UDP; local port
//! exhaustion (a counted drop after the next local address was tried),
//! release on expiry, reload, two workers (the reply is handed to the worker
//! owning the local port), ARP/ND for the local addresses, ICMP errors,
//! persistence.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

const LADDR: [u8; 4] = [10, 0, 2, 200];
const LADDR2: [u8; 4] = [10, 0, 2, 201];
const LADDR6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];

const SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
forward = "fnat"
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
forward = "fnat"
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "two"
vip = "10.0.1.102"
protocol = "tcp"
ports = [80]
forward = "fnat"
persistence = 300
local_addresses = ["10.0.2.200-10.0.2.201"]

[[service.real_server]]
address = "10.0.2.2"

[[service.real_server]]
address = "10.0.2.3"
"#;

/// The lab topology with a local port range of 64 ports (2000-2063), so the
/// allocated ports are predictable and exhaustion is quick ([`config_text_fnat`]).
fn cfg(services: &str) -> ferrovs_cfg::Config {
    ferrovs_cfg::Config::from_str(&config_text_fnat(services), "fnat-test.toml").expect("config parses")
}

fn engine(workers: usize) -> MemEngine {
    MemEngine::new(cfg(SERVICES), workers)
}

/// What the engine sends: TTL / hop limit one lower, the next hop's MAC.
fn to_rs(f: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    with_macs(dec_ttl(f), LB_INT, mac)
}
fn to_client(f: Vec<u8>) -> Vec<u8> {
    with_macs(dec_ttl(f), LB_EXT, CLIENT_MAC)
}
fn dec_ttl(f: Vec<u8>) -> Vec<u8> {
    if f[12..14] == [0x86, 0xdd] {
        let mut f = f;
        f[14 + 7] -= 1;
        f
    } else {
        let t = f[14 + 8];
        set_ttl(f, t - 1)
    }
}

#[test]
fn tcp4_both_directions() {
    let mut e = engine(1);
    // SYN: client:40000 -> VIP:80 becomes LADDR:2000 -> RS1:8080.
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_SYN, 1000, 0, b""), RS1_MAC));
    // SYN-ACK: RS1:8080 -> LADDR:2000 becomes VIP:80 -> client:40000.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_SYN | TCP_ACK, 5000, 1001, b""), RS1_MAC), S);
    exactly(out, EXT, to_client(tcp4(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b"")));
    let data = b"GET / HTTP/1.0\r\n\r\n";
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK | TCP_PSH, 1001, 5001, data)), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_ACK | TCP_PSH, 1001, 5001, data), RS1_MAC));
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK | TCP_FIN, 5001, 1019, b"ok"), RS1_MAC), S);
    exactly(out, EXT, to_client(tcp4(VIP, 80, CLIENT, 40000, TCP_ACK | TCP_FIN, 5001, 1019, b"ok")));
    // A second connection gets the next local port.
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40001, VIP, 80, TCP_SYN, 7, 0, b"")), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2001, RS1, 8080, TCP_SYN, 7, 0, b""), RS1_MAC));
    // The real server's packet to the client itself (it has no route there, but if it did):
    // not a connection of ours.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, CLIENT, 40000, TCP_ACK, 5002, 1019, b""), RS1_MAC), S);
    assert!(out.is_empty());
    // To the local address on a port no connection uses: dropped.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2010, TCP_ACK, 1, 1, b""), RS1_MAC), S);
    assert!(out.is_empty());
    assert_drops(&e, &[(DropReason::NoFlow, 2)]);
    let c = e.counters();
    assert_eq!(c.flows_active, 2);
}

#[test]
fn udp4_and_ipv6_both_directions() {
    let mut e = engine(1);
    let q = b"query";
    let out = e.inject(EXT, &from_client(udp4(CLIENT, 5353, VIP, 53, q)), S);
    exactly(out, INT, to_rs(udp4(LADDR, 2000, RS1, 53, q), RS1_MAC));
    let out = e.inject(INT, &from_rs(udp4(RS1, 53, LADDR, 2000, b"answer"), RS1_MAC), S);
    exactly(out, EXT, to_client(udp4(VIP, 53, CLIENT, 5353, b"answer")));
    // TCP has its own ports: its first connection also gets 2000.
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, b"")), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_SYN, 1, 0, b""), RS1_MAC));

    // IPv6 TCP.
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 1000, 0, b"")), S);
    exactly(out, INT, to_rs(tcp6(LADDR6, 2000, RS6, 80, TCP_SYN, 1000, 0, b""), RS1_MAC));
    let out = e.inject(INT, &from_rs(tcp6(RS6, 80, LADDR6, 2000, TCP_SYN | TCP_ACK, 9, 1001, b""), RS1_MAC), S);
    exactly(out, EXT, to_client(tcp6(VIP6, 80, C6, 40000, TCP_SYN | TCP_ACK, 9, 1001, b"")));
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_ACK, 1001, 10, b"hello")), S);
    exactly(out, INT, to_rs(tcp6(LADDR6, 2000, RS6, 80, TCP_ACK, 1001, 10, b"hello"), RS1_MAC));
    // IPv6 UDP.
    let out = e.inject(EXT, &from_client(udp6(C6, 5353, VIP6, 53, q)), S);
    exactly(out, INT, to_rs(udp6(LADDR6, 2000, RS6, 53, q), RS1_MAC));
    let out = e.inject(INT, &from_rs(udp6(RS6, 53, LADDR6, 2000, b"answer6"), RS1_MAC), S);
    exactly(out, EXT, to_client(udp6(VIP6, 53, C6, 5353, b"answer6")));
    assert_drops(&e, &[]);
}

/// A service's new connections take its local addresses in turn even while another
/// service's connections come in between (the round robin is the service's own, as DPVS keeps
/// one per service): with "two" (two addresses) and "web" (one) alternating, "two" still
/// spreads over both of its addresses.
#[test]
fn local_addresses_alternate_per_service_when_services_interleave() {
    let mut e = engine(1);
    let vip2 = [10, 0, 1, 102];
    let mut on = std::collections::HashMap::new();
    for i in 0..8u16 {
        let c = [10, 0, 1, 10 + i as u8];
        let out = e.inject(EXT, &from_client(tcp4(c, 10000 + i, vip2, 80, TCP_SYN, 1, 0, b"")), S);
        let src: [u8; 4] = out[0].1[26..30].try_into().unwrap();
        *on.entry(src).or_insert(0) += 1;
        let out = e.inject(EXT, &from_client(tcp4(c, 20000 + i, VIP, 80, TCP_SYN, 1, 0, b"")), S);
        assert_eq!(&out[0].1[26..30], &LADDR);
    }
    assert_eq!((on.get(&LADDR).copied(), on.get(&LADDR2).copied()), (Some(4), Some(4)), "{on:?}");
    assert_drops(&e, &[]);
}

/// 64 local ports on each of two local addresses: 128 connections, both
/// addresses used; the next is a counted drop; expiry gives the ports back.
#[test]
fn port_exhaustion_moves_to_the_next_address_then_drops() {
    let mut e = engine(1);
    let vip2 = [10, 0, 1, 102];
    let mut used = std::collections::HashSet::new();
    for i in 0..128u16 {
        // Several clients (persistence keeps each on one real server).
        let c = [10, 0, 1, 10 + (i % 8) as u8];
        let out = e.inject(EXT, &from_client(tcp4(c, 10000 + i, vip2, 80, TCP_SYN, 1, 0, b"")), S);
        assert_eq!(out.len(), 1, "connection {i}");
        let f = &out[0].1;
        let src: [u8; 4] = f[26..30].try_into().unwrap();
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert!(src == LADDR || src == LADDR2, "{src:?}");
        assert!((2000..=2063).contains(&sport));
        assert!(used.insert((src, sport)), "{src:?}:{sport} twice");
    }
    assert_eq!(used.iter().filter(|(a, _)| *a == LADDR2).count(), 64, "the second address filled too");
    let out = e.inject(EXT, &from_client(tcp4([10, 0, 1, 99], 999, vip2, 80, TCP_SYN, 1, 0, b"")), S);
    assert!(out.is_empty());
    assert_drops(&e, &[(DropReason::FnatPortsExhausted, 1)]);
    // The half-open connections time out (IPVS syn_recv, 60 s): every port is free again.
    let later = 200 * S;
    e.workers[0].expire_all(later);
    let out = e.inject(EXT, &from_client(tcp4([10, 0, 1, 99], 999, vip2, 80, TCP_SYN, 1, 0, b"")), later);
    assert_eq!(out.len(), 1, "a port is free after expiry");
    let mut n = 0;
    for i in 0..127u16 {
        let out = e.inject(EXT, &from_client(tcp4([10, 0, 1, 98], 20000 + i, vip2, 80, TCP_SYN, 1, 0, b"")), later);
        n += out.len();
    }
    assert_eq!(n, 127, "every port came back");
    assert_drops(&e, &[(DropReason::FnatPortsExhausted, 1)]);
}

/// A reload (another weight, another service) keeps the connection and its
/// local port; the next connection does not reuse the port.
#[test]
fn reload_keeps_connections_and_ports() {
    let mut e = engine(1);
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_SYN, 1000, 0, b""), RS1_MAC));
    let changed = SERVICES.replacen("port = 8080\n", "port = 8080\nweight = 5\n", 1)
        + "\n[[service]]\nname = \"extra\"\nvip = \"10.0.1.103\"\nports = [80]\nforward = \"fnat\"\n\
           local_addresses = [\"10.0.2.200\"]\n[[service.real_server]]\naddress = \"10.0.2.3\"\n";
    // Also widen the port range: the live connection's port stays taken.
    let text = config_text_fnat(&changed).replace("2000-2063", "2000-2127");
    e.reload(ferrovs_cfg::Config::from_str(&text, "r.toml").unwrap(), 2 * S);
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_SYN | TCP_ACK, 5000, 1001, b""), RS1_MAC), 2 * S);
    exactly(out, EXT, to_client(tcp4(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b"")));
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40001, [10, 0, 1, 103], 80, TCP_SYN, 5, 0, b"")), 2 * S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2001, RS2, 80, TCP_SYN, 5, 0, b""), RS2_MAC));
    assert_drops(&e, &[]);
    // A reload that removes the service removes its connections (and frees their ports).
    e.reload(cfg(""), 3 * S);
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK, 5001, 1001, b""), RS1_MAC), 3 * S);
    assert!(out.is_empty());
    assert_drops(&e, &[(DropReason::NoFlow, 1)]);
    assert_eq!(e.workers[0].flows.len(), 0);
}

/// Two workers: the reply arrives on whichever worker the "NIC" picks and is
/// handed to the worker owning the local port, the one that opened it.
#[test]
fn two_workers_replies_reach_the_owner() {
    let mut e = engine(2);
    let mut seen = std::collections::HashSet::new();
    for i in 0..64u8 {
        let (c, _, lport) = open_client(&mut e, i);
        assert!(seen.insert(lport), "local port {lport} used twice across workers");
        let reply = from_rs(tcp4(RS1, 8080, LADDR, lport, TCP_SYN | TCP_ACK, 9, 2, b""), RS1_MAC);
        let out = e.inject(INT, &reply, S);
        assert_eq!(out.len(), 1, "reply {i}");
        assert_eq!(&out[0].1[26..30], &VIP);
        assert_eq!(&out[0].1[30..34], &c);
    }
    assert!(handed(&e) > 0, "some replies arrived on the other worker");
    assert!(e.workers.iter().all(|w| !w.flows.is_empty()), "both workers own connections");
    // The ports of each worker come from its own half of 2000-2063.
    for (w, worker) in e.workers.iter().enumerate() {
        for i in 0..worker.flows.slots() as u32 {
            if let Some(c) = worker.flows.try_get(i) {
                let own = if w == 0 { 2000..=2031 } else { 2032..=2063 };
                assert!(own.contains(&c.lport()), "worker {w} port {}", c.lport());
            }
        }
    }
    assert_drops(&e, &[]);
}

#[test]
fn arp_and_nd_for_local_addresses() {
    let mut e = engine(1);
    let out = e.inject(INT, &arp_request(RS1_MAC, RS1, LADDR), S);
    assert_eq!(out.len(), 1, "ARP reply for the local address");
    let f = &out[0].1;
    assert_eq!(&f[20..22], &[0, 2], "a reply");
    assert_eq!(&f[22..28], &LB_INT, "our MAC");
    assert_eq!(&f[28..32], &LADDR);
    let out = e.inject(INT, &neighbor_solicit(RS1_MAC, RS6, LADDR6), S);
    assert_eq!(out.len(), 1, "NA for the local address");
    verify_checksums(&out[0].1).unwrap();
    // And ping.
    let out = e.inject(INT, &from_rs(ping4(RS1, LADDR, 1, 1), RS1_MAC), S);
    assert_eq!(out.len(), 1, "echo reply");
    assert_drops(&e, &[]);
}

/// Client `i` of 10.0.1.10 + i (its MAC, ARP learnt) opens 30000 -> VIP:80: the client,
/// its MAC and the local port its SYN left from.
fn open_client(e: &mut MemEngine, i: u8) -> ([u8; 4], [u8; 6], u16) {
    let c = [10, 0, 1, 10 + i];
    let cmac = [2, 0, 0, 0, 1, 10 + i];
    e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), S);
    let out = e.inject(EXT, &with_macs(tcp4(c, 30000, VIP, 80, TCP_SYN, 1, 0, b""), cmac, LB_EXT), S);
    assert_eq!(out.len(), 1, "SYN {i}");
    (c, cmac, u16::from_be_bytes([out[0].1[34], out[0].1[35]]))
}

/// Packets handed to another worker, all workers.
fn handed(e: &MemEngine) -> u64 {
    e.fabric.counters.iter().map(|w| w.handoff_out.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// Two workers: an ICMP error about a connection reaches the worker that owns it, whichever
/// received it: from the real server to the local address by the quoted local port, from the
/// client to the VIP by the client (the quoted packet's destination).
#[test]
fn two_workers_icmp_errors_reach_the_owner() {
    let mut e = engine(2);
    for i in 0..32u8 {
        let (c, cmac, lport) = open_client(&mut e, i);
        // Port unreachable from the real server about LADDR:lport -> RS1:8080.
        let before = handed(&e);
        let quoted = tcp4(LADDR, lport, RS1, 8080, TCP_SYN, 1, 0, b"");
        let out = e.inject(INT, &from_rs(icmp4_error(RS1, LADDR, 3, 3, 0, &quoted), RS1_MAC), S);
        assert_eq!(out.len(), 1, "error {i} to the client");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!((&f[26..30], &f[30..34]), (&VIP[..], &c[..]), "error {i}: VIP -> client");
        let inner = 14 + 20 + 8;
        assert_eq!(&f[inner + 20..inner + 24], &[0x75, 0x30, 0, 80], "error {i}: quoted ports 30000 -> 80");
        let from_rs_handed = handed(&e) - before;
        // Fragmentation needed from the client about VIP:80 -> client:30000.
        let before = handed(&e);
        let quoted = tcp4(VIP, 80, c, 30000, TCP_ACK, 1, 2, b"");
        let err = with_macs(icmp4_error(c, VIP, 3, 4, 1400, &quoted), cmac, LB_EXT);
        let out = e.inject(EXT, &err, S);
        assert_eq!(out.len(), 1, "error {i} to the real server");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!((&f[26..30], &f[30..34]), (&LADDR[..], &RS1[..]), "error {i}: local address -> RS1");
        assert!(from_rs_handed + handed(&e) - before <= 2);
    }
    assert!(handed(&e) > 0, "some errors arrived on the worker that does not own their connection");
    assert!(e.workers.iter().all(|w| !w.flows.is_empty()), "both workers own connections");
    assert_drops(&e, &[]);
}

#[test]
fn icmp_errors_both_ways() {
    let mut e = engine(1);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    // The real server: port unreachable about LADDR:2000 -> RS1:8080.
    let quoted = tcp4(LADDR, 2000, RS1, 8080, TCP_SYN, 1000, 0, b"");
    let out = e.inject(INT, &from_rs(icmp4_error_whole(RS1, LADDR, 3, 3, 0, &quoted), RS1_MAC), S);
    assert_eq!(out.len(), 1, "to the client");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    verify_quoted_checksum(f).unwrap();
    assert_eq!(out[0].0, EXT);
    assert_eq!(&f[26..30], &VIP, "outer source");
    assert_eq!(&f[30..34], &CLIENT, "outer destination");
    let inner = 14 + 20 + 8;
    assert_eq!(&f[inner + 12..inner + 16], &CLIENT, "quoted source");
    assert_eq!(&f[inner + 16..inner + 20], &VIP, "quoted destination");
    assert_eq!(&f[inner + 20..inner + 24], &[0x9c, 0x40, 0, 80], "quoted ports 40000 -> 80");
    assert_eq!(ferrovs_engine::wire::csum::finish(&f[inner..inner + 20], 0), 0, "quoted IP header checksum");
    // The client side: fragmentation needed about VIP:80 -> client:40000.
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 1, 1, b"");
    let out = e.inject(EXT, &from_client(icmp4_error_whole(CLIENT, VIP, 3, 4, 1400, &quoted)), S);
    assert_eq!(out.len(), 1, "to the real server");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    verify_quoted_checksum(f).unwrap();
    assert_eq!(out[0].0, INT);
    assert_eq!(&f[26..30], &LADDR, "outer source: the local address");
    assert_eq!(&f[30..34], &RS1, "outer destination");
    assert_eq!(&f[inner + 12..inner + 16], &RS1, "quoted source");
    assert_eq!(&f[inner + 16..inner + 20], &LADDR, "quoted destination");
    assert_eq!(&f[inner + 20..inner + 24], &[0x1f, 0x90, 0x07, 0xd0], "quoted ports 8080 -> 2000");
    assert_drops(&e, &[]);
}

/// Persistence: a client's connections stick to one real server, each with
/// its own local port.
#[test]
fn persistence_sticks_to_one_server() {
    let mut e = engine(1);
    let vip2 = [10, 0, 1, 102];
    let mut rs = None;
    for i in 0..6u16 {
        let out = e.inject(EXT, &from_client(tcp4(CLIENT, 41000 + i, vip2, 80, TCP_SYN, 1, 0, b"")), S);
        assert_eq!(out.len(), 1);
        let d: [u8; 4] = out[0].1[30..34].try_into().unwrap();
        assert_eq!(*rs.get_or_insert(d), d, "connection {i} on the same real server");
    }
    assert_drops(&e, &[]);
}

/// The SYN proxy splices full-NAT connections too: the client's handshake is
/// answered with a cookie, then the real server's, from the local address.
#[test]
fn syn_proxy_on_fnat() {
    let text = SERVICES.replacen(
        "forward = \"fnat\"\nlocal_addresses",
        "forward = \"fnat\"\nsyn_proxy = \"on\"\nlocal_addresses",
        1,
    );
    let mut e = MemEngine::new(cfg(&text), 1);
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    assert_eq!(out.len(), 1);
    let synack = common::seg::seg(&out[0].1);
    assert_eq!(synack.flags, TCP_SYN | TCP_ACK);
    assert_eq!(out[0].0, EXT);
    let cookie = synack.seq;
    let ack = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, cookie.wrapping_add(1), b""));
    let out = e.inject(EXT, &ack, S);
    assert_eq!(out.len(), 1, "our SYN to the real server");
    let syn = common::seg::seg(&out[0].1);
    assert_eq!((syn.src, syn.sport, syn.dst, syn.dport, syn.flags), (LADDR, 2000, RS1, 8080, TCP_SYN));
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, b""), RS1_MAC), S);
    assert_eq!(out.len(), 1, "our ACK to the real server");
    let a = common::seg::seg(&out[0].1);
    assert_eq!((a.src, a.sport, a.dst, a.dport, a.flags, a.ack), (LADDR, 2000, RS1, 8080, TCP_ACK, 7001));
    // Server data reaches the client in the cookie's sequence space.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK | TCP_PSH, 7001, 1001, b"hi"), RS1_MAC), S);
    assert_eq!(out.len(), 1);
    let d = common::seg::seg(&out[0].1);
    assert_eq!((d.src, d.sport, d.dst, d.dport, d.seq), (VIP, 80, CLIENT, 40000, cookie.wrapping_add(1)));
    assert_drops(&e, &[]);
}

const FTP: &str = r#"
[[service]]
name = "ftp"
vip = "10.0.1.100"
protocol = "tcp"
ports = [21]
forward = "fnat"
ftp = true
local_addresses = ["10.0.2.200", "10.0.2.201"]

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [21]
forward = "fnat"
ftp = true
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"
"#;

/// An FTP control connection through full NAT (IPv4 or IPv6), opened by `open`; each side's
/// segments are built here.
struct Ftp {
    e: MemEngine,
    v6: bool,
    /// Client and server sequence numbers (original spaces).
    c: u32,
    s: u32,
    lport: u16,
}

impl Ftp {
    fn open(v6: bool) -> Ftp {
        let mut e = MemEngine::new(cfg(FTP), 1);
        let mut f = Ftp { e: MemEngine::new(cfg(""), 1), v6, c: 1000, s: 5000, lport: 0 };
        let out = e.inject(EXT, &f.client_seg(21, 40000, TCP_SYN, b""), S);
        assert_eq!(out.len(), 1);
        let syn = &out[0].1;
        let p = ferrovs_engine::wire::parse::parse(syn).unwrap();
        f.lport = p.sport;
        f.e = e;
        let out = f.e.inject(INT, &f.rs_seg(21, f.lport, TCP_SYN | TCP_ACK, b""), S);
        assert_eq!(out.len(), 1);
        f.c += 1;
        f.s += 1;
        f
    }
    fn client_frame(&self, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        if self.v6 {
            from_client(tcp6(C6, sport, VIP6, dport, flags, seq, ack, data))
        } else {
            from_client(tcp4(CLIENT, sport, VIP, dport, flags, seq, ack, data))
        }
    }
    /// A control-connection segment from the client (`sport` 40000 -> VIP:`dport`).
    fn client_seg(&self, dport: u16, sport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        self.client_frame(sport, dport, flags, self.c, self.s, data)
    }
    fn rs_seg(&self, sport: u16, lport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let (seq, ack) = (self.s, self.c);
        if self.v6 {
            from_rs(tcp6(RS6, sport, LADDR6, lport, flags, seq, ack, data), RS1_MAC)
        } else {
            from_rs(tcp4(RS1, sport, LADDR, lport, flags, seq, ack, data), RS1_MAC)
        }
    }
    /// The client sends a command; returns the payload the real server gets.
    fn command(&mut self, line: &str) -> Vec<u8> {
        let f = self.client_seg(21, 40000, TCP_ACK | TCP_PSH, line.as_bytes());
        self.c += line.len() as u32;
        let out = self.e.inject(EXT, &f, S);
        assert_eq!(out.len(), 1, "{line:?} forwarded");
        payload(&out[0].1)
    }
    /// The server replies; returns the payload the client gets.
    fn reply(&mut self, line: &str) -> Vec<u8> {
        let f = self.rs_seg(21, self.lport, TCP_ACK | TCP_PSH, line.as_bytes());
        self.s += line.len() as u32;
        let out = self.e.inject(INT, &f, S);
        assert_eq!(out.len(), 1, "{line:?} forwarded");
        payload(&out[0].1)
    }
}

#[test]
fn ftp_passive_pasv_and_epsv() {
    let mut f = Ftp::open(false);
    assert_eq!(f.lport, 2000);
    f.command("PASV\r\n");
    let got = f.reply("227 Entering Passive Mode (10,0,2,2,117,49).\r\n");
    assert_eq!(got, b"227 Entering Passive Mode (10,0,1,100,117,49).\r\n");
    // The data connection VIP:30001 -> LADDR:lp' -> RS:30001, from the control's local address.
    let out = f.e.inject(EXT, &f.client_frame(40001, 30001, TCP_SYN, 77, 0, b""), S);
    assert_eq!(out.len(), 1);
    let (src, sport, dst, dport) = ends(&out[0].1);
    assert_eq!((src.as_str(), dst.as_str(), dport), ("10.0.2.200", "10.0.2.2", 30001));
    assert_ne!(sport, f.lport);
    let back = from_rs(tcp4(RS1, 30001, LADDR, sport, TCP_SYN | TCP_ACK, 9, 78, b""), RS1_MAC);
    let out = f.e.inject(INT, &back, S);
    assert_eq!(ends(&out[0].1), ("10.0.1.100".into(), 30001, "10.0.1.2".into(), 40001));
    // EPSV: the port goes through unchanged.
    f.command("EPSV\r\n");
    let got = f.reply("229 Entering Extended Passive Mode (|||30002|)\r\n");
    assert_eq!(got, b"229 Entering Extended Passive Mode (|||30002|)\r\n");
    let out = f.e.inject(EXT, &f.client_frame(40002, 30002, TCP_SYN, 77, 0, b""), S);
    let (src, _, dst, dport) = ends(&out[0].1);
    assert_eq!((src.as_str(), dst.as_str(), dport), ("10.0.2.200", "10.0.2.2", 30002));
    assert_drops(&f.e, &[]);
}

#[test]
fn ftp_active_port_and_eprt() {
    let mut f = Ftp::open(false);
    // PORT names the client: the server is told a port reserved on the local address.
    let got = f.command("PORT 10,0,1,2,156,65\r\n");
    assert_eq!(got, b"PORT 10,0,2,200,7,209\r\n", "{}", String::from_utf8_lossy(&got));
    let reserved = 7 * 256 + 209;
    f.reply("200 PORT command successful.\r\n");
    // The server connects from RS:20 to LADDR:2001: the client sees VIP:20 -> client:40001.
    let syn = from_rs(tcp4(RS1, 20, LADDR, reserved, TCP_SYN, 9000, 0, b""), RS1_MAC);
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, EXT);
    assert_eq!(ends(&out[0].1), ("10.0.1.100".into(), 20, "10.0.1.2".into(), 40001));
    let synack = f.client_frame(40001, 20, TCP_SYN | TCP_ACK, 300, 9001, b"");
    let out = f.e.inject(EXT, &synack, S);
    assert_eq!(ends(&out[0].1), ("10.0.2.200".into(), reserved, "10.0.2.2".into(), 20));
    // A second connection to the same reserved port is not opened (single use).
    let again = from_rs(tcp4(RS1, 21000, LADDR, reserved, TCP_SYN, 1, 0, b""), RS1_MAC);
    assert!(f.e.inject(INT, &again, S).is_empty());
    // EPRT.
    let got = f.command("EPRT |1|10.0.1.2|40002|\r\n");
    assert_eq!(got, b"EPRT |1|10.0.2.200|2002|\r\n", "{}", String::from_utf8_lossy(&got));
    f.reply("200 EPRT command successful.\r\n");
    let syn = from_rs(tcp4(RS1, 20, LADDR, 2002, TCP_SYN, 9000, 0, b""), RS1_MAC);
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(ends(&out[0].1), ("10.0.1.100".into(), 20, "10.0.1.2".into(), 40002));
    assert_drops(&f.e, &[(DropReason::NoFlow, 1)]);
    // A reserved port nobody connects to goes back to the pool after the pinhole timeout.
    let la = ferrovs_engine::wire::parse::v4_to_addr(LADDR);
    let free = f.e.workers[0].fnat_free_ports(la, 6);
    f.command("PORT 10,0,1,2,156,70\r\n");
    assert_eq!(f.e.workers[0].fnat_free_ports(la, 6), free - 1);
    assert_eq!(f.e.workers[0].fnat_reserved(), 1);
    let _ = f.e.run(30 * S);
    assert_eq!(f.e.workers[0].fnat_reserved(), 1, "still within the pinhole timeout");
    let _ = f.e.run(62 * S);
    assert_eq!(f.e.workers[0].fnat_reserved(), 0);
    assert_eq!(f.e.workers[0].fnat_free_ports(la, 6), free);
}

#[test]
fn ftp_ipv6_epsv_and_eprt() {
    let mut f = Ftp::open(true);
    f.command("EPSV\r\n");
    f.reply("229 Entering Extended Passive Mode (|||30003|)\r\n");
    let out = f.e.inject(EXT, &f.client_frame(40003, 30003, TCP_SYN, 1, 0, b""), S);
    let (src, _, dst, dport) = ends(&out[0].1);
    assert_eq!((src.as_str(), dst.as_str(), dport), ("fd00:2::200", "fd00:2::2", 30003));
    let got = f.command("EPRT |2|fd00:1::2|40004|\r\n");
    assert_eq!(got, b"EPRT |2|fd00:2::200|2002|\r\n", "{}", String::from_utf8_lossy(&got));
    f.reply("200 EPRT command successful.\r\n");
    let syn = from_rs(tcp6(RS6, 20, LADDR6, 2002, TCP_SYN, 9000, 0, b""), RS1_MAC);
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(ends(&out[0].1), ("fd00:1::100".into(), 20, "fd00:1::2".into(), 40004));
    // The EPRT grew by one byte: the server's acknowledgement of it maps back to the
    // client's sequence space.
    let ack = from_rs(tcp6(RS6, 21, LADDR6, f.lport, TCP_ACK, f.s, f.c + 1, b""), RS1_MAC);
    let out = f.e.inject(INT, &ack, S);
    let got = common::seg::seg6_ack(&out[0].1);
    assert_eq!(got, f.c, "acknowledges the client's bytes");
    assert_drops(&f.e, &[]);
}

/// A fragmented UDP reply to a local address, with two workers: every fragment arrives on
/// worker 0 (the "NIC" cannot hash fragments by port); the first is handed to the worker
/// owning the local port, and the later ones follow it, also when they came first.
#[test]
fn fragmented_replies_follow_their_first_fragment_to_the_owner() {
    for later_first in [false, true] {
        let mut e = engine(2);
        // A client whose connections live on worker 1 (local ports 2032-2063).
        let (c, lport) = (0..64u8)
            .find_map(|i| {
                let c = [10, 0, 1, 10 + i];
                let cmac = [2, 0, 0, 0, 1, 10 + i];
                e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), S);
                let out = e.inject(EXT, &with_macs(udp4(c, 5353, VIP, 53, b"q"), cmac, LB_EXT), S);
                let lport = u16::from_be_bytes([out[0].1[34], out[0].1[35]]);
                (lport >= 2032).then_some((c, lport))
            })
            .expect("some client is owned by worker 1");
        let big = vec![0x5au8; 3000];
        let reply = from_rs(udp4(RS1, 53, LADDR, lport, &big), RS1_MAC);
        let mut frags = fragment4(&reply, 1400, 777);
        assert_eq!(frags.len(), 3);
        if later_first {
            frags.rotate_left(1);
        }
        let mut out = Vec::new();
        for f in &frags {
            out.extend(e.inject(INT, f, S));
        }
        assert_eq!(out.len(), 3, "all fragments forwarded (later first: {later_first})");
        let got: Vec<Vec<u8>> = out.into_iter().map(|(_, f)| f).collect();
        let whole = reassemble(&got).expect("complete datagram");
        verify_checksums(&whole).unwrap();
        assert_eq!(&whole[26..30], &VIP);
        assert_eq!(&whole[30..34], &c);
        assert_eq!(&whole[36..38], &5353u16.to_be_bytes());
        assert_drops(&e, &[]);
    }
}

const PP: &str = r#"
[[service]]
name = "pp1"
vip = "10.0.1.104"
protocol = "tcp"
ports = [80]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"
proxy_protocol = "v1"

[[service]]
name = "pp2"
vip = "10.0.1.105"
protocol = "tcp"
ports = [80]
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"
proxy_protocol = "v2"
"#;

/// PROXY protocol v1 through full NAT: the header is inserted at the start of the client's
/// stream (on the handshake's ACK), the first data segment and its retransmission carry the
/// same header, later sequence numbers and the server's acknowledgements are translated, the
/// SYN-ACK's MSS leaves room for the header.
#[test]
fn proxy_protocol_v1_inserted_and_translated() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let hdr = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n";
    let h = hdr.len() as u32;
    let c = |e: &mut MemEngine, flags, seq, ack, data: &[u8]| {
        let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, vip, 80, flags, seq, ack, data)), S);
        assert_eq!(out.len(), 1);
        seg(&out[0].1)
    };
    let syn = c(&mut e, TCP_SYN, 1000, 0, b"");
    assert_eq!((syn.src, syn.sport, syn.seq, syn.payload.len()), (LADDR, 2000, 1000, 0));
    // SYN-ACK with MSS 1460: the client is told 1460 - header.
    let sa = tcp4_opts(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, &opt_mss(1460), b"");
    let out = e.inject(INT, &from_rs(sa, RS1_MAC), S);
    let s = seg(&out[0].1);
    assert_eq!((s.ack, s.mss), (1001, Some(1460 - h as u16)));
    // The handshake's ACK carries the header.
    let a = c(&mut e, TCP_ACK, 1001, 7001, b"");
    assert_eq!((a.seq, &a.payload[..]), (1001, &hdr[..]));
    // The first data segment, also at the stream start (the header not acknowledged yet).
    let d = c(&mut e, TCP_ACK | TCP_PSH, 1001, 7001, b"GET /");
    assert_eq!(d.seq, 1001);
    assert_eq!(d.payload, [&hdr[..], b"GET /"].concat());
    // Its retransmission: the same bytes.
    let r = c(&mut e, TCP_ACK | TCP_PSH, 1001, 7001, b"GET /");
    assert_eq!(r.payload, d.payload);
    // The server acknowledges header + 5 bytes: the client sees 5.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_ACK, 7001, 1001 + h + 5, b""), RS1_MAC), S);
    assert_eq!(seg(&out[0].1).ack, 1006);
    // An acknowledgement inside the header maps to the stream start.
    let out = e.inject(INT, &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_ACK, 7001, 1001 + 3, b""), RS1_MAC), S);
    assert_eq!(seg(&out[0].1).ack, 1001);
    // Later client data is shifted by the header.
    let l = c(&mut e, TCP_ACK | TCP_PSH, 1006, 7001, b" HTTP/1.0\r\n\r\n");
    assert_eq!((l.seq, &l.payload[..]), (1006 + h, &b" HTTP/1.0\r\n\r\n"[..]));
    // Now the header is acknowledged: a pure ACK at the start carries nothing more.
    let p = c(&mut e, TCP_ACK, 1001, 7001, b"");
    assert!(p.payload.is_empty());
    // Server data passes with its own sequence numbers.
    let out = e.inject(
        INT,
        &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_ACK | TCP_PSH, 7001, 1019 + h, b"HTTP/1.0 200"), RS1_MAC),
        S,
    );
    let s = seg(&out[0].1);
    assert_eq!((s.src, s.seq, s.ack, &s.payload[..]), (vip, 7001, 1019, &b"HTTP/1.0 200"[..]));
    assert_drops(&e, &[]);
}

/// The segment that gets the PROXY protocol header in front of its payload is written anew,
/// its TCP checksum computed afresh: one corrupted on the wire (its checksum then fails) is
/// dropped, not sent with a fresh valid checksum that would hand the corruption to the server's
/// application as the client's data. The handshake's ACK and the first data segment alike;
/// their retransmissions carry the header as usual.
#[test]
fn proxy_protocol_segments_with_a_bad_tcp_checksum_get_no_header() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let hdr = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n";
    let c = |flags, seq, ack, data: &[u8]| from_client(tcp4(CLIENT, 40000, vip, 80, flags, seq, ack, data));
    assert_eq!(e.inject(EXT, &c(TCP_SYN, 1000, 0, b""), S).len(), 1);
    let sa = tcp4(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, b"");
    assert_eq!(e.inject(INT, &from_rs(sa, RS1_MAC), S).len(), 1);
    // The handshake's ACK, its acknowledgement number corrupted; the first data, a byte of it.
    let ack = corrupt(c(TCP_ACK, 1001, 7001, b""), 14 + 20 + 11, 0x01);
    assert!(e.inject(EXT, &ack, S).is_empty(), "no header on a corrupted ACK");
    let data = c(TCP_ACK | TCP_PSH, 1001, 7001, b"GET /");
    assert!(e.inject(EXT, &corrupt(data.clone(), data.len() - 1, 0x01), S).is_empty(), "nor on corrupted data");
    assert_drops(&e, &[(DropReason::L4BadChecksum, 2)]);
    let out = e.inject(EXT, &data, S);
    assert_eq!(out.len(), 1, "the retransmission goes");
    verify_checksums(&out[0].1).unwrap();
    let d = seg(&out[0].1);
    assert_eq!((d.seq, d.payload), (1001, [&hdr[..], b"GET /"].concat()));
}

/// The segment that gets the PROXY protocol header has its IPv4 header written anew (its length
/// grows, a fresh checksum): one whose header checksum fails (corrupted on the wire: Linux drops
/// it in `ip_rcv`) is dropped, not sent with its corrupted header made valid. The good copy
/// carries the header.
#[test]
fn a_proxy_protocol_segment_with_a_bad_header_checksum_gets_no_header() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let hdr = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n";
    let c = |flags, seq, ack, data: &[u8]| from_client(tcp4(CLIENT, 40000, vip, 80, flags, seq, ack, data));
    assert_eq!(e.inject(EXT, &c(TCP_SYN, 1000, 0, b""), S).len(), 1);
    let sa = tcp4(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, b"");
    assert_eq!(e.inject(INT, &from_rs(sa, RS1_MAC), S).len(), 1);
    let data = c(TCP_ACK | TCP_PSH, 1001, 7001, b"GET /");
    assert!(e.inject(EXT, &bad_ip_csum(data.clone()), S).is_empty(), "no header on a corrupted header");
    assert_drops(&e, &[(DropReason::IpBadChecksum, 1)]);
    let out = e.inject(EXT, &data, S);
    assert_eq!(out.len(), 1, "the retransmission goes");
    verify_checksums(&out[0].1).unwrap();
    assert_eq!(seg(&out[0].1).payload, [&hdr[..], b"GET /"].concat());
}

/// A fragmented first data segment cannot get the PROXY protocol header (it would go into one
/// piece of the datagram, and the TCP checksum covers the whole datagram, not one fragment): it
/// is refused as a fragment, as the FTP gateway refuses a fragmented control segment, not
/// counted as a corrupted segment. The unfragmented retransmission carries the header.
#[test]
fn a_fragmented_first_proxy_protocol_segment_is_refused_as_a_fragment() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let hdr = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n";
    let c = |flags, seq, ack, data: &[u8]| from_client(tcp4(CLIENT, 40000, vip, 80, flags, seq, ack, data));
    assert_eq!(e.inject(EXT, &c(TCP_SYN, 1000, 0, b""), S).len(), 1);
    let sa = tcp4(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, b"");
    assert_eq!(e.inject(INT, &from_rs(sa, RS1_MAC), S).len(), 1);
    let data = c(TCP_ACK | TCP_PSH, 1001, 7001, &[b'x'; 200]);
    let frags = fragment4(&data, 100, 7);
    assert!(frags.len() > 1);
    assert!(e.inject(EXT, &frags[0], S).is_empty(), "no header in a fragment");
    assert_drops(&e, &[(DropReason::Fragment, 1)]);
    let out = e.inject(EXT, &data, S);
    assert_eq!(out.len(), 1, "the whole segment goes");
    verify_checksums(&out[0].1).unwrap();
    assert_eq!(seg(&out[0].1).payload, [&hdr[..], &[b'x'; 200]].concat());
}

/// PROXY protocol with a server that speaks first (SMTP, FTP, SSH): the header rides on the
/// handshake's ACK and the server acknowledges it; the client's later pure ACKs (of the
/// banner), still at the stream start in its space, must come after the header in the
/// server's space, or the server's TCP finds them before its window and discards them (the
/// banner is never acknowledged).
#[test]
fn proxy_protocol_pure_acks_after_the_acknowledged_header_are_shifted() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let h = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n".len() as u32;
    let c = |e: &mut MemEngine, flags, seq, ack, data: &[u8]| {
        let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, vip, 80, flags, seq, ack, data)), S);
        assert_eq!(out.len(), 1);
        seg(&out[0].1)
    };
    c(&mut e, TCP_SYN, 1000, 0, b"");
    e.inject(INT, &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001, b""), RS1_MAC), S);
    let a = c(&mut e, TCP_ACK, 1001, 7001, b"");
    assert_eq!((a.seq, a.payload.len() as u32), (1001, h));
    // The server acknowledges the header and sends its banner.
    let out = e.inject(
        INT,
        &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_ACK | TCP_PSH, 7001, 1001 + h, b"220 hello\r\n"), RS1_MAC),
        S,
    );
    assert_eq!(seg(&out[0].1).ack, 1001);
    // The client acknowledges the banner: in the server's space its sequence number is past
    // the header.
    let b = c(&mut e, TCP_ACK, 1001, 7012, b"");
    assert!(b.payload.is_empty());
    assert_eq!((b.seq, b.ack), (1001 + h, 7012));
    // Its first data then: the header again (the server discards the copy) or shifted, but
    // never before the server's window.
    let d = c(&mut e, TCP_ACK | TCP_PSH, 1001, 7012, b"EHLO x\r\n");
    assert_eq!(d.seq.wrapping_add(d.payload.len() as u32), 1001 + h + 8);
    assert_drops(&e, &[]);
}

/// PROXY protocol and data in the SYN (TCP Fast Open): a server that takes the SYN's data
/// must find the header in front of it, or it reads the client's own bytes as the header (a
/// client writing `PROXY TCP4 <any address> ...` there would choose the address the server
/// believes). The SYN-ACK acknowledging the data in the server's space is mapped back.
#[test]
fn proxy_protocol_header_precedes_data_in_the_syn() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 104];
    let hdr = b"PROXY TCP4 10.0.1.2 10.0.1.104 40000 80\r\n";
    let h = hdr.len() as u32;
    let spoof = b"PROXY TCP4 192.0.2.66 10.0.1.104 1 80\r\nGET /";
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, vip, 80, TCP_SYN, 1000, 0, spoof)), S);
    assert_eq!(out.len(), 1);
    let s = seg(&out[0].1);
    assert_eq!(s.seq, 1000);
    assert_eq!(s.payload, [&hdr[..], &spoof[..]].concat(), "the header first");
    // The server took the data: its SYN-ACK acknowledges header + data.
    let n = spoof.len() as u32;
    let out =
        e.inject(INT, &from_rs(tcp4(RS1, 80, LADDR, 2000, TCP_SYN | TCP_ACK, 7000, 1001 + h + n, b""), RS1_MAC), S);
    assert_eq!(seg(&out[0].1).ack, 1001 + n);
    // Later data is shifted by the header.
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, vip, 80, TCP_ACK, 1001 + n, 7001, b"x")), S);
    let s = seg(&out[0].1);
    assert_eq!((s.seq, &s.payload[..]), (1001 + n + h, &b"x"[..]));
    assert_drops(&e, &[]);
}

/// PROXY protocol v2 through NAT: the binary header names the client and the VIP.
#[test]
fn proxy_protocol_v2_over_nat() {
    use common::seg::seg;
    let mut e = MemEngine::new(cfg(PP), 1);
    let vip = [10, 0, 1, 105];
    e.inject(EXT, &from_client(tcp4(CLIENT, 40001, vip, 80, TCP_SYN, 50, 0, b"")), S);
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40001, vip, 80, TCP_ACK | TCP_PSH, 51, 9, b"hi")), S);
    let s = seg(&out[0].1);
    let mut want = vec![0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0, 12];
    want.extend_from_slice(&[10, 0, 1, 2, 10, 0, 1, 105, 0x9c, 0x41, 0, 80]);
    want.extend_from_slice(b"hi");
    assert_eq!((s.src, s.dst, s.seq), (CLIENT, RS1, 51));
    assert_eq!(s.payload, want);
    assert_drops(&e, &[]);
}

/// A reload that changes `local_port_range` with two workers: each worker's share moves, so
/// a port a connection holds may now lie in the other worker's share. The replies of the
/// connections opened before must still reach the worker that holds them, and no new
/// connection may be given a local port a live connection still holds (its replies would go
/// to one of the two).
#[test]
fn port_range_change_keeps_replies_with_their_worker_and_ports_unique() {
    let svc = "[[service]]\nname = \"u\"\nvip = \"10.0.1.104\"\nprotocol = \"udp\"\nports = [53]\nforward = \"fnat\"\n\
               local_addresses = [\"10.0.2.200\"]\n[[service.real_server]]\naddress = \"10.0.2.2\"\n";
    let mut e = MemEngine::new(cfg(svc), 2);
    let vip = [10, 0, 1, 104];
    let client = |i: u16| [10, 0, 1 + (i / 200) as u8, 10 + (i % 200) as u8];
    let mut old = Vec::new();
    for i in 0..40u16 {
        let c = client(i);
        let cmac = [2, 0, 0, 0, 1, i as u8];
        e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), S);
        let out = e.inject(EXT, &with_macs(udp4(c, 5353, vip, 53, b"q"), cmac, LB_EXT), S);
        assert_eq!(out.len(), 1);
        old.push((c, u16::from_be_bytes([out[0].1[34], out[0].1[35]])));
    }
    assert!(old.iter().any(|&(_, p)| p >= 2032), "worker 1 holds some");
    // 2000-2127: worker 0 now owns 2000-2063, which held worker 1's ports.
    let text = config_text_fnat(svc).replace("local_port_range = \"2000-2063\"", "local_port_range = \"2000-2127\"");
    e.reload(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 2 * S);
    for &(c, lport) in &old {
        let out = e.inject(INT, &from_rs(udp4(RS1, 53, LADDR, lport, b"a"), RS1_MAC), 3 * S);
        assert_eq!(out.len(), 1, "reply to port {lport}");
        assert_eq!(&out[0].1[30..34], &c);
    }
    let held: std::collections::HashSet<u16> = old.iter().map(|&(_, p)| p).collect();
    let (mut opened, mut full) = (0, 0);
    for i in 40..140u16 {
        let c = client(i);
        if c == vip {
            continue; // A martian source (the VIP's own address) opens nothing.
        }
        let cmac = [2, 0, 0, 0, 3, i as u8];
        e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), 3 * S);
        let out = e.inject(EXT, &with_macs(udp4(c, 5353, vip, 53, b"q"), cmac, LB_EXT), 3 * S);
        // Worker 0's new share is its old one plus worker 1's old ports, still held: it fills.
        let Some((_, f)) = out.first() else {
            full += 1;
            continue;
        };
        opened += 1;
        let lport = u16::from_be_bytes([f[34], f[35]]);
        assert!(!held.contains(&lport), "port {lport} given to a new connection while an old one holds it");
    }
    assert!(opened >= 40, "{opened} opened");
    let want = [(DropReason::FnatPortsExhausted, full)];
    assert_drops(&e, if full > 0 { &want } else { &[] });
}

/// A reload that removes a local address (the service stays): with two workers, the replies
/// to it still reach the worker that owns each connection (the owner is named by the port
/// range the address's ports came from, not looked up as an ordinary address), ARP is still
/// answered for it, and at the end of its grace period (the longest timeout, 900 s) the
/// connections left on it are removed and counted.
#[test]
fn removed_local_address_keeps_its_connections_until_the_grace_ends() {
    let svc = "[[service]]\nname = \"u\"\nvip = \"10.0.1.104\"\nprotocol = \"udp\"\nports = [53]\nforward = \"fnat\"\n\
               local_addresses = [\"10.0.2.200\", \"10.0.2.201\"]\n[[service.real_server]]\naddress = \"10.0.2.2\"\n";
    let mut e = MemEngine::new(cfg(svc), 2);
    let vip = [10, 0, 1, 104];
    // Connections on both addresses, owned by both workers.
    let mut on201 = Vec::new();
    for i in 0..32u8 {
        let c = [10, 0, 1, 10 + i];
        let cmac = [2, 0, 0, 0, 1, 10 + i];
        e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), S);
        let out = e.inject(EXT, &with_macs(udp4(c, 5353, vip, 53, b"q"), cmac, LB_EXT), S);
        assert_eq!(out.len(), 1);
        let f = &out[0].1;
        if f[26..30] == LADDR2 {
            on201.push((c, u16::from_be_bytes([f[34], f[35]])));
        }
    }
    assert!(on201.iter().any(|&(_, p)| p < 2032) && on201.iter().any(|&(_, p)| p >= 2032), "both workers");
    let without = svc.replace("\"10.0.2.200\", \"10.0.2.201\"", "\"10.0.2.200\"");
    e.reload(cfg(&without), 2 * S);
    let before = handed(&e);
    for &(c, lport) in &on201 {
        // Delivered by the "NIC" to the worker that does not own it.
        let other = if lport < 2032 { 1 } else { 0 };
        e.workers[other].queues_mut()[INT].inject(&from_rs(udp4(RS1, 53, LADDR2, lport, b"a"), RS1_MAC));
        let out = e.run(3 * S);
        assert_eq!(out.len(), 1, "reply to the removed address, port {lport}");
        assert_eq!(&out[0].1[26..30], &vip);
        assert_eq!(&out[0].1[30..34], &c);
    }
    assert_eq!(handed(&e) - before, on201.len() as u64, "every reply was handed to its owner");
    let out = e.inject(INT, &arp_request(RS1_MAC, RS1, LADDR2), 3 * S);
    assert_eq!(out.len(), 1, "ARP still answered for the removed address");
    // New connections use the remaining address only.
    let out = e.inject(EXT, &from_client(udp4(CLIENT, 7000, vip, 53, b"q")), 3 * S);
    assert_eq!(&out[0].1[26..30], &LADDR);
    assert_drops(&e, &[]);
    // One connection kept busy past the grace period (UDP timeout 300 s, grace 900 s).
    let (c, lport) = on201[0];
    // (Minutes pass without a word from the clients: the worker probes their neighbour entries
    // by unicast ARP; only the datagrams count here.)
    let no_arp = |out: Vec<(usize, Vec<u8>)>| out.into_iter().filter(|(_, f)| f[12..14] != [8, 6]).collect::<Vec<_>>();
    for t in [250, 500, 750u64] {
        let out = no_arp(e.inject(INT, &from_rs(udp4(RS1, 53, LADDR2, lport, b"a"), RS1_MAC), t * S));
        assert_eq!(out.len(), 1, "at {t} s");
        assert_eq!(&out[0].1[30..34], &c);
    }
    let _ = e.run(1000 * S);
    let retired: u64 =
        e.fabric.counters.iter().map(|w| w.fnat_laddr_retired.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(retired, 1, "the busy connection was removed at the end of the grace period");
    let out = no_arp(e.inject(INT, &from_rs(udp4(RS1, 53, LADDR2, lport, b"a"), RS1_MAC), 1000 * S));
    assert!(out.is_empty(), "after the grace period");
    let out = e.inject(INT, &arp_request(RS1_MAC, RS1, LADDR2), 1001 * S);
    assert!(out.is_empty(), "no longer ours");
}

/// An ICMP error quoting a non-first IPv4 fragment: the bytes after the quoted IP header are
/// payload, not ports (conntrack's `ipv4_get_l4proto` refuses such a quote). Read as ports they
/// name whichever connection the fragment's sender chose: a client of the full NAT service
/// whose datagram carries "2000, 8080" at the start of a later fragment (LADDR -> RS1 once
/// translated, like every client's) would have an error about it, a router's "time exceeded"
/// it provoked with a low TTL say, delivered to another client's connection LADDR:2000.
#[test]
fn icmp_error_quoting_a_later_fragment_names_no_connection() {
    let mut e = engine(1);
    // The victim: CLIENT:40000 -> VIP:80, LADDR:2000 -> RS1:8080.
    e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    // The quoted packet: LADDR -> RS1, TCP, fragment offset 185 (1480 bytes), whose data
    // begins with the victim's ports.
    let mut quoted = tcp4(LADDR, 2000, RS1, 8080, TCP_ACK, 1000, 0, b"");
    quoted[20..22].copy_from_slice(&185u16.to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut quoted, 14).unwrap();
    let out = e.inject(INT, &from_rs(icmp4_error(RS1, LADDR, 11, 0, 0, &quoted), RS1_MAC), S);
    assert!(out.is_empty(), "not translated to the victim: {out:?}");
    assert_drops(&e, &[(DropReason::Fragment, 1)]);
}

#[test]
fn ftp_active_reservations_are_bounded_per_session() {
    // Every PORT/EPRT reserves a local port for the server's data connection. A newer one
    // replaces the session's oldest expectation (max_expectations, 4): the oldest's port must
    // go back to the pool with it, or one client sending PORT after PORT would hold the whole
    // local port range (64 ports here) for the pinhole timeout and every other full-NAT
    // connection through that address would fail.
    let mut f = Ftp::open(false);
    let la = ferrovs_engine::wire::parse::v4_to_addr(LADDR);
    let free = f.e.workers[0].fnat_free_ports(la, 6);
    let mut last = Vec::new();
    for i in 0..100u16 {
        let p = 40100 + i;
        last = f.command(&format!("PORT 10,0,1,2,{},{}\r\n", p >> 8, p & 0xff));
        assert!(last.starts_with(b"PORT 10,0,2,200,"), "PORT {i} rewritten: {}", String::from_utf8_lossy(&last));
        f.reply("200 PORT command successful.\r\n");
    }
    assert_eq!(f.e.workers[0].fnat_reserved(), 4);
    assert_eq!(f.e.workers[0].fnat_free_ports(la, 6), free - 4);
    // The newest still works.
    let text = String::from_utf8_lossy(&last[5..last.len() - 2]).to_string();
    let n: Vec<u16> = text.split(',').map(|x| x.parse().unwrap()).collect();
    let reserved = n[4] * 256 + n[5];
    let syn = from_rs(tcp4(RS1, 20, LADDR, reserved, TCP_SYN, 9000, 0, b""), RS1_MAC);
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(ends(&out[0].1), ("10.0.1.100".into(), 20, "10.0.1.2".into(), 40199));
    assert_eq!(f.e.workers[0].fnat_reserved(), 3);
    assert_eq!(f.e.workers[0].fnat_free_ports(la, 6), free - 4, "3 reserved, 1 data connection");
    // The client closes the control connection: its reservations go with its expectations.
    let fin = f.client_seg(21, 40000, TCP_ACK | TCP_FIN, b"");
    assert_eq!(f.e.inject(EXT, &fin, S).len(), 1);
    assert_eq!(f.e.workers[0].fnat_reserved(), 0);
    assert_eq!(f.e.workers[0].fnat_free_ports(la, 6), free - 1, "the data connection");
}

/// Full NAT: a router between the balancer and the real server reports about LADDR -> RS1
/// (its "time exceeded" for a client's packet with a low TTL): the client gets it from the
/// VIP, as Linux's NAT rewrites an error's outer source (`nf_nat_icmp_reply_translation`), never
/// from the router's address on the real servers' network (which would map that network for
/// the client and, being private, be filtered on the way).
#[test]
fn an_internal_routers_error_reaches_the_client_from_the_vip() {
    let mut e = engine(1);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")), S);
    let quoted = tcp4(LADDR, 2000, RS1, 8080, TCP_SYN, 1000, 0, b"");
    let out = e.inject(INT, &from_rs(icmp4_error([10, 0, 2, 254], LADDR, 11, 0, 0, &quoted), RS2_MAC), S);
    assert_eq!(out.len(), 1, "to the client");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(out[0].0, EXT);
    assert_eq!(&f[26..30], &VIP, "outer source: the VIP, not the router");
    assert_eq!(&f[30..34], &CLIENT, "outer destination");
    let inner = 14 + 20 + 8;
    assert_eq!(&f[inner + 12..inner + 16], &CLIENT, "quoted source");
    assert_eq!(&f[inner + 16..inner + 20], &VIP, "quoted destination");
    assert_drops(&e, &[]);
}

/// A blind attacker who knows a client's address sends resets and FINs for its ports: on a
/// full-NAT connection as on a plain NAT one, a client segment outside the sequence window
/// (`Conn::client_seq_ok`) goes on to the real server (which judges it) but leaves the
/// connection as it was, counted `tcp_out_of_window`; the client's own reset, at the
/// sequence number its data reached, closes it. Before, full NAT kept no sequence mark (the
/// local port took its place) and any reset closed the connection.
#[test]
fn a_blind_reset_outside_the_window_leaves_a_full_nat_connection() {
    for v6 in [false, true] {
        let mut e = engine(1);
        let pkt = |flags: u8, seq: u32, data: &[u8]| {
            if v6 {
                from_client(tcp6(C6, 40003, VIP6, 80, flags, seq, 1, data))
            } else {
                from_client(tcp4(CLIENT, 40003, VIP, 80, flags, seq, 1, data))
            }
        };
        let isn = 0x1234_5678u32;
        assert_eq!(e.inject(EXT, &pkt(TCP_SYN, isn, b""), S).len(), 1);
        assert_eq!(e.inject(EXT, &pkt(TCP_ACK, isn + 1, b""), S).len(), 1);
        blind_resets_leave_the_connection(&mut e, isn, pkt);
    }
}
