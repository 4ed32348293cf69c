//! One-packet scheduling (`one_packet = true`, ipvsadm `--ops`): each UDP datagram is
//! scheduled on its own and leaves no connection behind, as IPVS's `IP_VS_CONN_F_ONE_PACKET`.

mod common;
use common::seg::drops;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;

const SERVICES: &str = r#"
[[service]]
name = "syslog"
vip = "10.0.1.100"
protocol = "udp"
ports = [514]
scheduler = "rr"
forward = "nat"
one_packet = true

[[service.real_server]]
address = "10.0.2.2"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "dns-dr"
vip = "10.0.1.101"
protocol = "udp"
ports = [53]
scheduler = "rr"
forward = "dr"
one_packet = true

[[service.real_server]]
address = "10.0.2.2"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "dns"
vip = "10.0.1.102"
protocol = "udp"
ports = [53]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"

[[service.real_server]]
address = "10.0.2.3"
"#;

const VIP_DR: [u8; 4] = [10, 0, 1, 101];
const VIP_PLAIN: [u8; 4] = [10, 0, 1, 102];

fn engine() -> MemEngine {
    MemEngine::new(config(SERVICES), 1)
}

/// The real server (by destination MAC) each frame of `out` went to, all on `int`.
fn servers(out: &[(usize, Vec<u8>)]) -> Vec<[u8; 6]> {
    out.iter()
        .map(|(i, f)| {
            assert_eq!(*i, INT);
            f[0..6].try_into().unwrap()
        })
        .collect()
}

/// Datagrams from one client port: each scheduled on its own (round robin over both real
/// servers), none leaves a connection; the same traffic to a plain service sticks to one
/// real server on its connection.
#[test]
fn each_datagram_is_scheduled_on_its_own_and_leaves_no_connection() {
    let mut e = engine();
    let mut to = Vec::new();
    for k in 0..4u64 {
        let d = from_client(udp4(CLIENT, 5140, VIP, 514, format!("<13>msg {k}").as_bytes()));
        let out = e.inject(EXT, &d, S + k);
        to.extend(servers(&out));
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!(
            (&f[26..30], &f[30..34]),
            (&CLIENT[..], if to[k as usize] == RS1_MAC { &RS1[..] } else { &RS2[..] })
        );
    }
    assert_eq!(to, [RS1_MAC, RS2_MAC, RS1_MAC, RS2_MAC], "each datagram scheduled");
    let c = e.counters();
    assert_eq!((c.flows_created, c.flows_expired, c.flows_active), (4, 4, 0));
    // DR: the same.
    let mut to = Vec::new();
    for k in 0..2u64 {
        to.extend(servers(&e.inject(EXT, &from_client(udp4(CLIENT, 5353, VIP_DR, 53, b"q")), 2 * S + k)));
    }
    assert_eq!(to, [RS1_MAC, RS2_MAC]);
    // A plain UDP service: one connection, one real server.
    let mut to = Vec::new();
    for k in 0..3u64 {
        to.extend(servers(&e.inject(EXT, &from_client(udp4(CLIENT, 5353, VIP_PLAIN, 53, b"q")), 3 * S + k)));
    }
    assert_eq!(to, [RS1_MAC; 3]);
    let c = e.counters();
    assert_eq!((c.flows_created, c.flows_expired, c.flows_active), (7, 6, 1));
    assert_eq!(drops(&e), vec![]);
}

/// As in IPVS, a reply through the balancer finds no connection: a counted drop, not
/// forwarded untranslated.
#[test]
fn a_nat_reply_finds_no_connection() {
    let mut e = engine();
    let out = e.inject(EXT, &from_client(udp4(CLIENT, 5140, VIP, 514, b"x")), S);
    assert_eq!(servers(&out), [RS1_MAC]);
    let reply = from_rs(udp4(RS1, 514, CLIENT, 5140, b"y"), RS1_MAC);
    assert!(e.inject(INT, &reply, S + 1).is_empty());
    assert_eq!(drops(&e), vec![("no_flow", 1)]);
}

/// A datagram in fragments: its connection is kept for the fragment hold time, so the later
/// fragments follow the first to its real server; then it expires, and the next datagram is
/// scheduled on its own.
#[test]
fn the_fragments_of_a_datagram_go_to_one_real_server() {
    let mut e = engine();
    let d = from_client(udp4(CLIENT, 5140, VIP, 514, &[5; 3000]));
    let frags = fragment4(&d, 1500, 0x31);
    assert_eq!(frags.len(), 3);
    let mut out = Vec::new();
    for f in &frags {
        out.extend(e.inject(EXT, f, S));
    }
    assert_eq!(servers(&out), [RS1_MAC; 3], "one real server for the whole datagram");
    let whole = reassemble(&out.into_iter().map(|(_, f)| f).collect::<Vec<_>>()).expect("complete");
    verify_checksums(&whole).unwrap();
    assert_eq!(&whole[30..34], &RS1[..]);
    // After the hold time: gone, and the next datagram goes to the other server.
    let out = e.inject(EXT, &from_client(udp4(CLIENT, 5140, VIP, 514, b"next")), 3 * S);
    assert_eq!(servers(&out), [RS2_MAC]);
    let c = e.counters();
    assert_eq!((c.flows_created, c.flows_active), (2, 0));
    assert_eq!(drops(&e), vec![]);
}
