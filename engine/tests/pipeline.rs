//! Fixture tables through the in-memory port: input packet from a builder,
//! expected output packet(s) or verdict (counted drop).

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

const SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80, "8000-8100"]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
scheduler = "rr"

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "dr"
vip = "10.0.1.101"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "dr"

[[service.real_server]]
address = "10.0.2.2"
"#;

pub fn engine(workers: usize) -> MemEngine {
    MemEngine::new(config(SERVICES), workers)
}

/// One fixture: frames in (iface, frame, time), expected frames out.
struct Case {
    what: &'static str,
    input: Vec<(usize, Vec<u8>, u64)>,
    /// Expected transmissions after the LAST input, exactly.
    want: Vec<(usize, Vec<u8>)>,
    /// The whole drop-counter vector after all inputs: these reasons with
    /// these counts, every other reason zero.
    drops: &'static [(DropReason, u64)],
}

fn run_cases(cases: Vec<Case>, workers: usize) {
    for c in cases {
        let mut e = engine(workers);
        let mut last = Vec::new();
        for (iface, f, t) in &c.input {
            last = e.inject(*iface, f, *t);
        }
        for (_, f) in &last {
            verify_checksums(f).unwrap_or_else(|err| panic!("{}: bad checksum in output: {err}", c.what));
        }
        assert_eq!(last.len(), c.want.len(), "{}: number of output packets (got {:?})", c.what, last);
        for (i, ((gi, gf), (wi, wf))) in last.iter().zip(c.want.iter()).enumerate() {
            assert_eq!(gi, wi, "{}: output {i} interface", c.what);
            assert_eq!(gf, wf, "{}: output {i} bytes", c.what);
        }
        if let Some(m) = drops_mismatch(&e, c.drops) {
            panic!("{}: {m}", c.what);
        }
    }
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    from_client(tcp4(CLIENT, sport, VIP, dport, TCP_SYN, 1000, 0, b""))
}

#[test]
fn nat_fixtures() {
    let synack_rs = from_rs(tcp4(RS1, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b""), RS1_MAC);
    let cases = vec![
        Case {
            what: "NAT SYN to VIP:80 goes to rs1:8080 (rr first), TTL-1, MACs rewritten",
            input: vec![(EXT, syn(40000, 80), S)],
            want: vec![(
                INT,
                set_ttl(with_macs(tcp4(CLIENT, 40000, RS1, 8080, TCP_SYN, 1000, 0, b""), LB_INT, RS1_MAC), 63),
            )],
            drops: &[],
        },
        Case {
            what: "NAT reply from rs1 gets VIP:80 as source",
            input: vec![(EXT, syn(40000, 80), S), (INT, synack_rs.clone(), S + 1)],
            want: vec![(
                EXT,
                set_ttl(
                    with_macs(tcp4(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b""), LB_EXT, CLIENT_MAC),
                    63,
                ),
            )],
            drops: &[],
        },
        Case {
            what: "second connection goes to rs2, port kept (no port in config)",
            input: vec![(EXT, syn(40000, 80), S), (EXT, syn(40001, 8050), S)],
            want: vec![(
                INT,
                set_ttl(with_macs(tcp4(CLIENT, 40001, RS2, 8050, TCP_SYN, 1000, 0, b""), LB_INT, RS2_MAC), 63),
            )],
            drops: &[],
        },
        Case {
            what: "data with payload both ways keeps checksums right",
            input: vec![
                (EXT, syn(40000, 80), S),
                (
                    EXT,
                    from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK | TCP_PSH, 1001, 5001, b"GET / HTTP/1.0\r\n\r\n")),
                    S,
                ),
            ],
            want: vec![(
                INT,
                set_ttl(
                    with_macs(
                        tcp4(CLIENT, 40000, RS1, 8080, TCP_ACK | TCP_PSH, 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"),
                        LB_INT,
                        RS1_MAC,
                    ),
                    63,
                ),
            )],
            drops: &[],
        },
        Case {
            what: "UDP NAT",
            input: vec![(EXT, from_client(udp4(CLIENT, 5353, VIP, 53, b"query")), S)],
            want: vec![(INT, set_ttl(with_macs(udp4(CLIENT, 5353, RS1, 53, b"query"), LB_INT, RS1_MAC), 63))],
            drops: &[],
        },
        Case {
            what: "UDP reply",
            input: vec![
                (EXT, from_client(udp4(CLIENT, 5353, VIP, 53, b"query")), S),
                (INT, from_rs(udp4(RS1, 53, CLIENT, 5353, b"answer"), RS1_MAC), S),
            ],
            want: vec![(EXT, set_ttl(with_macs(udp4(VIP, 53, CLIENT, 5353, b"answer"), LB_EXT, CLIENT_MAC), 63))],
            drops: &[],
        },
        Case {
            what: "IPv6 NAT",
            input: vec![(EXT, from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S)],
            want: vec![(INT, set_ttl(with_macs(tcp6(C6, 40000, RS6, 80, TCP_SYN, 7, 0, b""), LB_INT, RS1_MAC), 63))],
            drops: &[],
        },
        Case {
            what: "IPv6 NAT reply",
            input: vec![
                (EXT, from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S),
                (INT, from_rs(tcp6(RS6, 80, C6, 40000, TCP_SYN | TCP_ACK, 9, 8, b""), RS1_MAC), S),
            ],
            want: vec![(
                EXT,
                set_ttl(with_macs(tcp6(VIP6, 80, C6, 40000, TCP_SYN | TCP_ACK, 9, 8, b""), LB_EXT, CLIENT_MAC), 63),
            )],
            drops: &[],
        },
        Case {
            what: "DR rewrites only MACs",
            input: vec![(EXT, from_client(tcp4(CLIENT, 40000, VIP_DR, 80, TCP_SYN, 1, 0, b"")), S)],
            want: vec![(INT, with_macs(tcp4(CLIENT, 40000, VIP_DR, 80, TCP_SYN, 1, 0, b""), LB_INT, RS1_MAC))],
            drops: &[],
        },
        Case {
            what: "no service on port 81",
            input: vec![(EXT, syn(40000, 81), S)],
            want: vec![],
            drops: &[(DropReason::NoService, 1)],
        },
        Case {
            what: "ACK without connection is dropped",
            input: vec![(EXT, from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1, 1, b"")), S)],
            want: vec![],
            drops: &[(DropReason::NoFlow, 1)],
        },
        Case {
            what: "stray packet from a real server",
            input: vec![(INT, synack_rs.clone(), S)],
            want: vec![],
            drops: &[(DropReason::NoFlow, 1)],
        },
        Case {
            what: "frame for another MAC",
            input: vec![(
                EXT,
                with_macs(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, b""), CLIENT_MAC, [2, 9, 9, 9, 9, 9]),
                S,
            )],
            want: vec![],
            drops: &[(DropReason::NotForUs, 1)],
        },
        Case {
            what: "truncated frame",
            input: vec![(EXT, syn(40000, 80)[..30].to_vec(), S)],
            want: vec![],
            drops: &[(DropReason::Malformed, 1)],
        },
        Case {
            what: "TTL 1 is not forwarded",
            input: vec![(EXT, set_ttl(syn(40000, 80), 1), S)],
            want: vec![],
            drops: &[(DropReason::TtlExceeded, 1)],
        },
    ];
    run_cases(cases, 1);
}

#[test]
fn arp_and_nd_replies() {
    let mut e = engine(1);
    // ARP for the VIP and for the interface address.
    for target in [VIP, [10, 0, 1, 1]] {
        let out = e.inject(EXT, &arp_request(CLIENT_MAC, CLIENT, target), S);
        assert_eq!(out.len(), 1);
        let (i, f) = &out[0];
        assert_eq!(*i, EXT);
        let mut want = arp_reply(LB_EXT, target, CLIENT_MAC, CLIENT);
        want.resize(60, 0);
        assert_eq!(f, &want, "ARP reply for {target:?} (zero padding)");
    }
    // Not ours: silence.
    assert!(e.inject(EXT, &arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 77]), S).is_empty());
    // Neighbour solicitation for the IPv6 VIP.
    let out = e.inject(EXT, &neighbor_solicit(CLIENT_MAC, C6, VIP6), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(f[54], 136, "neighbour advertisement");
    assert_eq!(&f[62..78], &VIP6, "target");
    assert_eq!(&f[80..86], &LB_EXT, "target link-layer address");
    assert_drops(&e, &[(DropReason::NotForUs, 1)]);
}

#[test]
fn the_kernels_own_traffic_on_the_port_is_not_a_lost_connection() {
    // AF_PACKET shares the port with the host's kernel: its address there (BGP, BFD, sync,
    // health checks) reaches the engine too. Those frames are the kernel's (`not_for_us`),
    // not packets of a connection the engine does not know (`no_flow`), which a stray reply
    // to a client still is.
    let kernel = [10, 0, 2, 99];
    let addr = ferrovs_engine::wire::parse::v4_to_addr(kernel);
    let mut e = MemEngine::with_host(config(SERVICES), 1, &[addr]);
    let bgp = from_rs(tcp4(RS1, 179, kernel, 41000, TCP_ACK, 1, 1, b""), RS1_MAC);
    let bfd = from_rs(udp4(RS1, 49152, kernel, 3784, &[0x20; 24]), RS1_MAC);
    assert!(e.inject(INT, &bgp, S).is_empty());
    assert!(e.inject(INT, &bfd, S).is_empty());
    assert_drops(&e, &[(DropReason::NotForUs, 2)]);
    let stray = from_rs(tcp4(RS1, 8080, CLIENT, 40000, TCP_ACK, 1, 1, b""), RS1_MAC);
    assert!(e.inject(INT, &stray, S).is_empty());
    assert_drops(&e, &[(DropReason::NotForUs, 2), (DropReason::NoFlow, 1)]);
    // It stays the kernel's after a reload; without it known, such frames are `no_flow`.
    e.reload(config(SERVICES), 2 * S);
    assert!(e.inject(INT, &bfd, 2 * S).is_empty());
    assert_drops(&e, &[(DropReason::NotForUs, 3), (DropReason::NoFlow, 1)]);
    let mut plain = engine(1);
    assert!(plain.inject(INT, &bfd, S).is_empty());
    assert_drops(&plain, &[(DropReason::NoFlow, 1)]);
}

#[test]
fn arp_resolution_of_unknown_neighbor() {
    // The client 10.0.1.9 is not in [[neighbor]]: the reply is held, an ARP
    // request goes out, and the ARP reply releases the held packet.
    let mut e = engine(1);
    let c9 = [10, 0, 1, 9];
    let c9mac = [2, 0, 0, 0, 1, 9];
    let out = e.inject(EXT, &with_macs(tcp4(c9, 5555, VIP, 80, TCP_SYN, 1, 0, b""), c9mac, LB_EXT), S);
    assert_eq!(out.len(), 1, "SYN forwarded to rs1 (static neighbour)");
    let out = e.inject(INT, &from_rs(tcp4(RS1, 8080, c9, 5555, TCP_SYN | TCP_ACK, 1, 2, b""), RS1_MAC), S);
    assert_eq!(out.len(), 1, "an ARP request");
    assert_eq!(&out[0].1[12..14], &[0x08, 0x06]);
    assert_eq!(&out[0].1[38..42], &c9, "asks for the client");
    let out = e.inject(EXT, &arp_reply(c9mac, c9, LB_EXT, [10, 0, 1, 1]), S);
    assert_eq!(out.len(), 1, "held SYN-ACK released");
    assert_eq!(&out[0].1[0..6], &c9mac);
    verify_checksums(&out[0].1).unwrap();
    // The ARP reply itself is consumed (learnt, not forwarded).
    assert_drops(&e, &[(DropReason::NotForUs, 1)]);
}

#[test]
fn icmp_errors_are_translated() {
    let mut e = engine(1);
    e.inject(EXT, &syn(40000, 80), S);
    // Real server says "port unreachable" about client->rs1:8080.
    let quoted = tcp4(CLIENT, 40000, RS1, 8080, TCP_SYN, 1000, 0, b"");
    let err = from_rs(icmp4_error(RS1, CLIENT, 3, 3, 0, &quoted), RS1_MAC);
    let out = e.inject(INT, &err, S);
    assert_eq!(out.len(), 1, "forwarded to the client");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[26..30], &VIP, "outer source is the VIP");
    let inner = 14 + 20 + 8;
    assert_eq!(&f[inner + 16..inner + 20], &VIP, "quoted destination is the VIP");
    assert_eq!(&f[inner + 22..inner + 24], &80u16.to_be_bytes(), "quoted port is the VIP port");
    assert_eq!(ferrovs_engine::wire::csum::finish(&f[inner..inner + 20], 0), 0, "quoted IP header checksum");
    // Fragmentation needed from the client side about VIP->client reply.
    let quoted = tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 1, 1, b"");
    let err = from_client(icmp4_error(CLIENT, VIP, 3, 4, 1400, &quoted));
    let out = e.inject(EXT, &err, S);
    assert_eq!(out.len(), 1, "forwarded to the real server");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(&f[0..6], &RS1_MAC);
    assert_eq!(&f[30..34], &RS1, "outer destination is rs1");
    assert_eq!(&f[inner + 12..inner + 16], &RS1, "quoted source is rs1");
    assert_eq!(&f[inner + 20..inner + 22], &8080u16.to_be_bytes());
    assert_drops(&e, &[]);
    // IPv6: packet too big about the reply.
    let mut e = engine(1);
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 7, 0, b"")), S);
    let quoted = tcp6(VIP6, 80, C6, 40000, TCP_ACK, 1, 1, b"");
    let out = e.inject(EXT, &from_client(icmp6_error(C6, VIP6, 2, 0, 1280, &quoted)), S);
    assert_eq!(out.len(), 1);
    verify_checksums(&out[0].1).unwrap();
    assert_eq!(&out[0].1[38..54], &RS6, "outer destination is the v6 real server");
    // An error about no connection is dropped.
    let quoted = tcp4(VIP, 80, CLIENT, 1, TCP_ACK, 1, 1, b"");
    assert!(e.inject(EXT, &from_client(icmp4_error(CLIENT, VIP, 3, 4, 1400, &quoted)), S).is_empty());
    assert_drops(&e, &[(DropReason::NoFlow, 1)]);
}

#[test]
fn ping_the_vip() {
    let mut e = engine(1);
    let out = e.inject(EXT, &from_client(ping4(CLIENT, VIP, 7, 1)), S);
    assert_eq!(out.len(), 1);
    verify_checksums(&out[0].1).unwrap();
    assert_eq!(&out[0].1[30..34], &CLIENT);
    assert_eq!(out[0].1[34], 0, "echo reply");
    assert_drops(&e, &[]);
}

/// An echo request whose IPv4 header checksum fails (corrupted on the wire: Linux drops it in
/// `ip_rcv`) gets no reply: the reply's header, its checksum computed afresh, would go out
/// valid to whatever the corrupted source address became.
#[test]
fn an_echo_request_with_a_bad_header_checksum_gets_no_reply() {
    let mut e = engine(1);
    assert!(e.inject(EXT, &bad_ip_csum(from_client(ping4(CLIENT, VIP, 7, 1))), S).is_empty());
    assert!(e.inject(EXT, &bad_ip_csum(from_client(ping4(CLIENT, [10, 0, 1, 1], 7, 2))), S).is_empty());
    assert_drops(&e, &[(DropReason::IpBadChecksum, 2)]);
    assert_eq!(e.counters().icmp_echo_replies, 0);
    assert_eq!(e.inject(EXT, &from_client(ping4(CLIENT, VIP, 7, 3)), S).len(), 1, "the good copy is answered");
}

/// An echo request whose ICMP checksum fails (its data corrupted on the wire) gets no reply,
/// IPv4 (the checksum over the message) and IPv6 (with the pseudo-header), as Linux's
/// `icmp_reply` / `icmpv6_rcv` drop it: the reply's checksum, computed afresh over the
/// request's data, would hand the corruption back as good data. The good copies are answered.
#[test]
fn an_echo_request_with_a_bad_icmp_checksum_gets_no_reply() {
    let mut e = engine(1);
    let p4 = from_client(ping4(CLIENT, VIP, 7, 1));
    let p6 = from_client(ping6(C6, VIP6, 7, 1));
    let at4 = p4.len() - 1;
    assert!(e.inject(EXT, &corrupt(p4.clone(), at4, 0x20), S).is_empty(), "a VIP");
    assert!(e.inject(EXT, &corrupt(from_client(ping4(CLIENT, [10, 0, 1, 1], 7, 2)), at4, 0x20), S).is_empty());
    assert!(e.inject(EXT, &corrupt(p6.clone(), p6.len() - 1, 0x20), S).is_empty(), "IPv6");
    assert_drops(&e, &[(DropReason::L4BadChecksum, 3)]);
    assert_eq!(e.counters().icmp_echo_replies, 0);
    for p in [p4, p6] {
        let out = e.inject(EXT, &p, S);
        assert_eq!(out.len(), 1, "the good copy is answered");
        verify_checksums(&out[0].1).unwrap();
    }
}

/// An echo request from a martian source (a broadcast or multicast address, loopback, or one
/// of our own addresses) gets no reply, as Linux drops such a packet in `ip_route_input` before
/// ICMP sees it: a reply to a subnet's broadcast address reaches every host on it (a smurf
/// amplifier), one to our own address loops back. A host's request is answered.
#[test]
fn an_echo_request_from_a_martian_source_gets_no_reply() {
    let mut e = engine(1);
    let mut n = 0;
    for src in [[10, 0, 1, 255], [255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1], [10, 0, 1, 1], VIP] {
        for dst in [VIP, [10, 0, 1, 1]] {
            assert!(e.inject(EXT, &from_client(ping4(src, dst, 7, 1)), S).is_empty(), "{src:?} -> {dst:?}");
            n += 1;
        }
    }
    let mut ff02 = [0u8; 16];
    ff02[..2].copy_from_slice(&[0xff, 0x02]);
    ff02[15] = 1;
    for src in [ff02, VIP6] {
        assert!(e.inject(EXT, &from_client(ping6(src, VIP6, 7, 1)), S).is_empty(), "{src:?}");
        n += 1;
    }
    assert_drops(&e, &[(DropReason::MartianSource, n)]);
    assert_eq!(e.counters().icmp_echo_replies, 0);
    assert_eq!(e.inject(EXT, &from_client(ping4(CLIENT, VIP, 7, 2)), S).len(), 1, "a host is answered");
    assert_eq!(e.inject(EXT, &from_client(ping6(C6, VIP6, 7, 2)), S).len(), 1, "an IPv6 host is answered");
}

#[test]
fn tcp_states_and_expiry_follow_the_clock() {
    let mut e = engine(1);
    e.inject(EXT, &syn(40000, 80), S);
    let conns = |e: &MemEngine| e.workers[0].flows.len();
    assert_eq!(conns(&e), 1);
    // SYN_RECV lasts 60 s: at 59 s the ACK still passes and establishes.
    let ack = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, b""));
    assert_eq!(e.inject(EXT, &ack, 59 * S).len(), 1);
    // ESTABLISHED lasts 900 s.
    assert_eq!(e.inject(EXT, &ack, 958 * S).len(), 1, "still there after 899 s idle");
    e.workers[0].expire_all(1859 * S);
    assert_eq!(conns(&e), 0, "expired after 900 s idle");
    // FIN from client -> CLOSE_WAIT (60 s), RST -> CLOSE (10 s).
    let mut e = engine(1);
    e.inject(EXT, &syn(40001, 80), S);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40001, VIP, 80, TCP_ACK, 1001, 1, b"")), S);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40001, VIP, 80, TCP_RST, 1001, 0, b"")), S);
    e.workers[0].expire_all(S + 9 * S);
    assert_eq!(conns(&e), 1, "CLOSE lasts 10 s");
    e.workers[0].expire_all(S + 10 * S);
    assert_eq!(conns(&e), 0);
    let mut e = engine(1);
    e.inject(EXT, &syn(40002, 80), S);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40002, VIP, 80, TCP_ACK, 1001, 1, b"")), S);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40002, VIP, 80, TCP_FIN | TCP_ACK, 1001, 1, b"")), S);
    e.workers[0].expire_all(S + 59 * S);
    assert_eq!(conns(&e), 1, "CLOSE_WAIT lasts 60 s");
    e.workers[0].expire_all(S + 60 * S);
    assert_eq!(conns(&e), 0);
    // UDP lasts 300 s.
    let mut e = engine(1);
    e.inject(EXT, &from_client(udp4(CLIENT, 5353, VIP, 53, b"q")), S);
    e.workers[0].expire_all(300 * S);
    assert_eq!(conns(&e), 1);
    e.workers[0].expire_all(301 * S);
    assert_eq!(conns(&e), 0);
}

/// A blind attacker who knows a client's address sends resets and FINs for its ports: a
/// segment whose sequence number lies outside the connection's window (`Conn::client_seq_ok`)
/// goes on to the real server (which judges it, RFC 5961) but leaves the connection as it
/// was, counted (`tcp_out_of_window`); before, it closed the connection (CLOSE: gone after
/// 10 s idle, counted inactive at once). The client's own reset, at the sequence number its
/// data reached (through the express lane), still closes it.
#[test]
fn a_blind_reset_or_fin_outside_the_window_leaves_the_connection() {
    let mut e = engine(1);
    let isn = 0x1234_5678u32;
    let pkt = |flags: u8, seq: u32, data: &[u8]| from_client(tcp4(CLIENT, 40003, VIP, 80, flags, seq, 1, data));
    e.inject(EXT, &pkt(TCP_SYN, isn, b""), S);
    e.inject(EXT, &pkt(TCP_ACK, isn + 1, b""), S);
    blind_resets_leave_the_connection(&mut e, isn, pkt);
}

#[test]
fn martian_sources_open_no_connection() {
    // Linux's martian sources (and our own addresses: a LAND attack) get nothing: no
    // connection, no packet to a real server, counted martian_source; a host is served.
    let v4: [[u8; 4]; 8] = [
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        [0, 9, 9, 9],
        [224, 0, 0, 5],
        [255, 255, 255, 255],
        [10, 0, 1, 255],
        VIP,
        [10, 0, 2, 1],
    ];
    let one = |v6: bool| {
        let mut x = [0u8; 16];
        x[15] = 1;
        if v6 {
            x[0] = 0xff;
            x[1] = 2;
        }
        x
    };
    for workers in [1, 2] {
        let mut e = engine(workers);
        let mut n = 0;
        for src in v4 {
            let syn = from_client(tcp4(src, 40000, VIP, 80, TCP_SYN, 1, 0, b""));
            let dns = from_client(udp4(src, 40000, VIP, 53, b"q"));
            for f in [syn, dns] {
                assert_eq!(e.inject(EXT, &f, S), vec![], "{src:?}");
                n += 1;
            }
        }
        for src in [one(false), one(true), VIP6] {
            let f = from_client(tcp6(src, 40000, VIP6, 80, TCP_SYN, 1, 0, b""));
            assert_eq!(e.inject(EXT, &f, S), vec![], "{src:?}");
            n += 1;
        }
        assert_drops(&e, &[(DropReason::MartianSource, n)]);
        assert_eq!(e.workers.iter().map(|w| w.table_sizes().flows).sum::<usize>(), 0);
        // A host and the subnet's network address are served.
        for src in [CLIENT, [10, 0, 1, 0]] {
            let out = e.inject(EXT, &from_client(tcp4(src, 40001, VIP, 80, TCP_SYN, 1, 0, b"")), S);
            assert_eq!(out.len(), 1, "{src:?}");
        }
    }
}

#[test]
fn cross_worker_handoff_keeps_one_owner() {
    // Two workers; many clients. Every connection must be handled by the
    // owner of its client, whichever worker the "NIC" delivered it to, and
    // replies must find the connection.
    let mut e = engine(2);
    let mut handed = 0;
    for i in 0..64u8 {
        let c = [10, 0, 1, 10 + i];
        let cmac = [2, 0, 0, 0, 1, 10 + i];
        let out = e.inject(EXT, &with_macs(tcp4(c, 30000 + i as u16, VIP, 80, TCP_SYN, 1, 0, b""), cmac, LB_EXT), S);
        assert_eq!(out.len(), 1, "SYN {i} forwarded");
        let (rs, rmac, rport) = if out[0].1[30..34] == RS1 { (RS1, RS1_MAC, 8080) } else { (RS2, RS2_MAC, 80) };
        // Learn the client's MAC through ARP so the reply can go out.
        e.inject(EXT, &arp_request(cmac, c, [10, 0, 1, 1]), S);
        let out = e.inject(INT, &from_rs(tcp4(rs, rport, c, 30000 + i as u16, TCP_SYN | TCP_ACK, 9, 2, b""), rmac), S);
        assert_eq!(out.len(), 1, "reply {i} forwarded");
        assert_eq!(&out[0].1[26..30], &VIP);
    }
    for w in &e.fabric.counters {
        handed += w.handoff_out.load(std::sync::atomic::Ordering::Relaxed);
    }
    assert!(handed > 0, "some packets arrived on the non-owner and were handed over");
    let total: usize = e.workers.iter().map(|w| w.flows.len()).sum();
    assert_eq!(total, 64);
    assert!(e.workers.iter().all(|w| !w.flows.is_empty()), "both workers own connections");
    assert_drops(&e, &[]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    #[test]
    fn random_frames_are_counted_drops_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300), iface in 0usize..2) {
        let mut e = engine(2);
        let mut f = data;
        if f.len() >= 12 {
            f[0..6].copy_from_slice(&LB_EXT);
        }
        let out = e.inject(iface, &f, S);
        // Conservation: the frame went out, or is one counted drop, or is
        // parked (waiting for a neighbour; then an ARP/ND request went out).
        let drops: u64 = ferrovs_engine::pipeline::counters::DropReason::ALL
            .iter()
            .map(|r| e.fabric.counters.iter().map(|w| w.drops_of(*r)).sum::<u64>())
            .sum();
        let solicits = out.iter().filter(|(_, f)| is_solicitation(f)).count() as u64;
        proptest::prop_assert_eq!(out.len() as u64 - solicits + drops + e.parked() as u64, 1, "{:?}", out);
    }

    #[test]
    fn mutated_session_never_panics(pos in 0usize..80, val in proptest::num::u8::ANY) {
        let mut e = engine(1);
        let first = e.inject(EXT, &syn(40000, 80), S).len() as u64;
        let mut f = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 1, b"payload"));
        let p = pos % f.len();
        f[p] = val;
        let out = e.inject(EXT, &f, S);
        let drops: u64 = ferrovs_engine::pipeline::counters::DropReason::ALL
            .iter()
            .map(|r| e.fabric.counters.iter().map(|w| w.drops_of(*r)).sum::<u64>())
            .sum();
        let solicits = out.iter().filter(|(_, f)| is_solicitation(f)).count() as u64;
        proptest::prop_assert_eq!(first + out.len() as u64 - solicits + drops + e.parked() as u64, 2, "{:?}", out);
    }
}

#[test]
fn reset_gives_a_fresh_engine() {
    // The fuzz targets reuse one engine: after `reset` the same inputs must
    // give the same outputs and counters as on a new engine.
    let c9 = [10, 0, 1, 9];
    let c9mac = [2, 0, 0, 0, 1, 9];
    let inputs: Vec<(usize, Vec<u8>)> = vec![
        (EXT, with_macs(tcp4(c9, 5555, VIP, 80, TCP_SYN, 1, 0, b""), c9mac, LB_EXT)),
        // The reply to the unknown client is parked while it is resolved.
        (INT, from_rs(tcp4(RS1, 8080, c9, 5555, TCP_SYN | TCP_ACK, 1, 2, b""), RS1_MAC)),
        (EXT, syn(40000, 80)),
        (EXT, from_client(udp4(CLIENT, 5353, VIP, 53, b"query"))),
        (EXT, syn(40001, 81)),
    ];
    let run = |e: &mut MemEngine| -> Vec<Vec<(usize, Vec<u8>)>> {
        inputs.iter().enumerate().map(|(i, (iface, f))| e.inject(*iface, f, S + i as u64)).collect()
    };
    let mut fresh = engine(2);
    let want = run(&mut fresh);
    assert_eq!(fresh.parked(), 1);
    let mut e = engine(2);
    for _ in 0..3 {
        run(&mut e);
        e.reset();
        assert_eq!(e.parked(), 0);
        assert!(e.workers.iter().all(|w| w.flows.is_empty()));
        assert_eq!(e.counters(), MemEngine::new(config(SERVICES), 2).counters());
        for (si, counts) in e.snapshot.conn_counts.iter().enumerate() {
            for w in 0..2 {
                for d in 0..counts.dests() {
                    assert_eq!((counts.row_active(w, d), counts.row_inactive(w, d)), (0, 0), "service {si}");
                }
            }
        }
        assert_eq!(run(&mut e), want);
        assert_eq!(e.counters(), fresh.counters());
        e.reset();
    }
}

#[test]
fn one_way_traffic_does_not_hoard_buffers() {
    // DR: every packet arrives on ext and leaves on int. Each transmitted
    // buffer goes back to the int queue's pool, which used to grow by one
    // buffer per packet for ever (a long one-way replay used ~2 KiB per packet).
    use ferrovs_engine::port::memory::POOL_MAX;
    let mut e = engine(1);
    let n = POOL_MAX as u32 + 500;
    for i in 0..n {
        let flags = if i == 0 { TCP_SYN } else { TCP_ACK };
        let f = from_client(tcp4(CLIENT, 40000, VIP_DR, 80, flags, 1 + i, 1, b""));
        assert_eq!(e.inject(EXT, &f, S).len(), 1);
    }
    let pooled: usize = e.workers[0].queues_mut().iter().map(|q| q.pooled()).sum();
    assert!(pooled <= 2 * POOL_MAX, "{pooled} buffers pooled after {n} one-way packets");
    assert_drops(&e, &[]);
}

/// A full flow table: the next new connection is a counted `table_full` drop; the
/// connections in the table keep flowing, and a slot freed by expiry is taken again.
#[test]
fn full_flow_table_is_a_counted_drop() {
    let text = config_text(SERVICES).replacen("flow_table_size = 4096", "flow_table_size = 16", 1);
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "full.toml").unwrap(), 1);
    for p in 0..16 {
        assert_eq!(e.inject(EXT, &syn(41000 + p, 80), S).len(), 1, "connection {p} fits");
    }
    assert!(e.inject(EXT, &syn(41016, 80), S).is_empty());
    assert_drops(&e, &[(DropReason::TableFull, 1)]);
    assert_eq!(e.workers[0].flows.len(), 16);
    // The ones in the table still pass.
    let ack = from_client(tcp4(CLIENT, 41003, VIP, 80, TCP_ACK, 1001, 5001, b""));
    assert_eq!(e.inject(EXT, &ack, 2 * S).len(), 1);
    // After SYN_RECV's 60 s the others expire; the refused tuple then gets a slot.
    e.workers[0].expire_all(70 * S);
    assert_eq!(e.workers[0].flows.len(), 1, "the established one stays");
    assert_eq!(e.inject(EXT, &syn(41016, 80), 70 * S).len(), 1);
    assert_drops(&e, &[(DropReason::TableFull, 1)]);
}

#[test]
fn rp_filter_checks_a_new_connections_source() {
    // `[engine] rp_filter`: strict needs the route back to the source through the interface
    // the first packet came in on, loose a route at all; off (the default) checks nothing.
    // ext is 10.0.1.0/24 and fd00:1::/64, int 10.0.2.0/24 and fd00:2::/64; no default route.
    let eng = |mode: &str| {
        let t = config_text(SERVICES).replacen(
            "flow_table_size = 4096",
            &format!("flow_table_size = 4096\nrp_filter = \"{mode}\""),
            1,
        );
        MemEngine::new(ferrovs_cfg::Config::from_str(&t, "rp.toml").expect("config"), 1)
    };
    let spoofed_int = [10, 0, 2, 77]; // int's subnet, arriving on ext
    let unrouted = [192, 0, 2, 7];
    let syn4 = |src: [u8; 4], vip: [u8; 4]| from_client(tcp4(src, 40000, vip, 80, TCP_SYN, 1, 0, b""));
    let int6 = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77];
    // (mode, frame, forwarded, drops)
    type RpCase = (&'static str, Vec<u8>, bool, &'static [(DropReason, u64)]);
    let cases: Vec<RpCase> = vec![
        ("strict", syn4(CLIENT, VIP), true, &[]),
        ("strict", from_client(udp4(CLIENT, 40000, VIP, 53, b"q")), true, &[]),
        ("strict", syn4(spoofed_int, VIP), false, &[(DropReason::RpFilter, 1)]),
        ("strict", from_client(udp4(spoofed_int, 40000, VIP, 53, b"q")), false, &[(DropReason::RpFilter, 1)]),
        ("strict", syn4(spoofed_int, VIP_DR), false, &[(DropReason::RpFilter, 1)]),
        ("strict", syn4(unrouted, VIP_DR), false, &[(DropReason::RpFilter, 1)]),
        ("strict", from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 1, 0, b"")), true, &[]),
        ("strict", from_client(tcp6(int6, 40000, VIP6, 80, TCP_SYN, 1, 0, b"")), false, &[(DropReason::RpFilter, 1)]),
        ("loose", syn4(spoofed_int, VIP), true, &[]),
        ("loose", syn4(spoofed_int, VIP_DR), true, &[]),
        ("loose", syn4(unrouted, VIP_DR), false, &[(DropReason::RpFilter, 1)]),
        ("loose", from_client(tcp6(int6, 40000, VIP6, 80, TCP_SYN, 1, 0, b"")), true, &[]),
        // Off: as before (DR needs no route back; NAT does, to send the replies).
        ("off", syn4(spoofed_int, VIP_DR), true, &[]),
        ("off", syn4(unrouted, VIP_DR), true, &[]),
        ("off", syn4(unrouted, VIP), false, &[(DropReason::NoRoute, 1)]),
    ];
    for (i, (mode, f, forwarded, drops)) in cases.into_iter().enumerate() {
        let mut e = eng(mode);
        let out = e.inject(EXT, &f, S);
        assert_eq!(out.len(), usize::from(forwarded), "case {i} ({mode}): {out:?}");
        if forwarded {
            assert_eq!(out[0].0, INT, "case {i} ({mode})");
        }
        if let Some(m) = drops_mismatch(&e, drops) {
            panic!("case {i} ({mode}): {m}");
        }
        let flows: usize = e.workers.iter().map(|w| w.table_sizes().flows).sum();
        assert_eq!(flows, usize::from(forwarded), "case {i} ({mode}): a refused source leaves no state");
    }
}
