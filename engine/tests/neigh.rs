//! Neighbour discovery learns only on-link neighbours (the ARP rule) and
//! the neighbour table is bounded: fixture table of frames in, what the
//! engine sends next (the SYN forwarded to a learnt MAC, or a solicitation
//! because nothing was learnt), and counters.

mod common;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::TCP_SYN;

/// A service whose real servers have no static neighbour entry:
/// fd00:2::9 on int's subnet, and fd00:9::2 behind the link-local router
/// fe80::9 on int.
const SERVICES: &str = r#"
[[route]]
prefix = "fd00:9::/64"
via = "fe80::9"
interface = "int"

[[service]]
name = "web6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
scheduler = "rr"

[[service.real_server]]
address = "fd00:2::9"

[[service]]
name = "far6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [81]
scheduler = "rr"

[[service.real_server]]
address = "fd00:9::2"
"#;

const RS9: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const LL9: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const OUR_EXT6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MAC9: [u8; 6] = [2, 0, 0, 0, 2, 9];

fn syn(port: u16) -> Vec<u8> {
    with_macs(tcp6(C6, 40000, VIP6, port, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT)
}

/// What a frame out is.
#[derive(Debug, PartialEq)]
enum Out {
    /// A TCP segment to this MAC.
    Tcp([u8; 6]),
    /// A neighbour solicitation.
    Solicit,
    Other,
}

fn kind(f: &[u8]) -> Out {
    let p = ferrovs_engine::wire::parse::parse(f).expect("parse");
    match p.proto {
        6 => Out::Tcp(f[0..6].try_into().unwrap()),
        58 if f[p.l4] == 135 => Out::Solicit,
        _ => Out::Other,
    }
}

struct Case {
    what: &'static str,
    input: Vec<(usize, Vec<u8>)>,
    want: Vec<(usize, Out)>,
}

#[test]
fn nd_learns_only_on_link_neighbours() {
    let cases = vec![
        Case {
            what: "an advertisement on the server's segment is learnt",
            input: vec![(INT, neighbor_advert(MAC9, RS9, RS9, MAC9)), (EXT, syn(80))],
            want: vec![(INT, Out::Tcp(MAC9))],
        },
        Case {
            what: "the same advertisement arriving on the client side is off-link there: not learnt",
            input: vec![(EXT, neighbor_advert(MAC9, RS9, RS9, MAC9)), (EXT, syn(80))],
            want: vec![(INT, Out::Solicit)],
        },
        Case {
            what: "a solicitation from an off-link source is answered but its source is not learnt",
            input: vec![(EXT, with_macs(neighbor_solicit(MAC9, RS9, OUR_EXT6), MAC9, LB_EXT)), (EXT, syn(80))],
            want: vec![(INT, Out::Solicit)],
        },
        Case {
            what: "a solicitation from an on-link source is learnt",
            input: vec![
                (
                    INT,
                    with_macs(
                        neighbor_solicit(MAC9, RS9, [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                        MAC9,
                        LB_INT,
                    ),
                ),
                (EXT, syn(80)),
            ],
            want: vec![(INT, Out::Tcp(MAC9))],
        },
        Case {
            what: "a link-local router is on-link on every link",
            input: vec![(INT, neighbor_advert(MAC9, LL9, LL9, MAC9)), (EXT, syn(81))],
            want: vec![(INT, Out::Tcp(MAC9))],
        },
    ];
    for c in cases {
        let mut e = MemEngine::new(config(SERVICES), 1);
        let mut last = Vec::new();
        for (k, (i, f)) in c.input.iter().enumerate() {
            last = e.inject(*i, f, S + k as u64);
        }
        let got: Vec<(usize, Out)> = last.iter().map(|(i, f)| (*i, kind(f))).collect();
        assert_eq!(got, c.want, "{}", c.what);
    }
}

#[test]
fn neighbour_table_size_is_configurable() {
    let text =
        config_text(SERVICES).replace("flow_table_size = 4096", "flow_table_size = 4096\nneighbor_table_size = 16");
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").expect("config"), 1);
    for n in 0..20u32 {
        let mut a = RS9;
        a[12..16].copy_from_slice(&(0x1_0000 + n).to_be_bytes());
        e.inject(INT, &neighbor_advert(MAC9, a, a, MAC9), S);
    }
    assert_eq!(e.counters().neigh_evicted, 4);
}

#[test]
fn neighbour_table_is_bounded_and_evictions_counted() {
    let mut e = MemEngine::new(config(SERVICES), 1);
    let max = ferrovs_engine::pipeline::neigh::DEFAULT_MAX as u64;
    // 100 more on-link neighbours than the table holds (fd00:2::1:0 + n).
    for n in 0..max + 100 {
        let mut a = RS9;
        a[12..16].copy_from_slice(&(0x1_0000u32 + n as u32).to_be_bytes());
        e.inject(INT, &neighbor_advert(MAC9, a, a, MAC9), S);
    }
    assert_eq!(e.counters().neigh_evicted, 100);
    // The static entries survive: a SYN to the static rs fd00:2::2 is not a solicitation.
    let mut e2 = MemEngine::new(
        config(&format!(
            "{SERVICES}\n[[service]]\nname = \"s\"\nvip = \"fd00:1::100\"\nprotocol = \"tcp\"\nports = [82]\n\
             [[service.real_server]]\naddress = \"fd00:2::2\"\n"
        )),
        1,
    );
    for n in 0..max + 10 {
        let mut a = RS9;
        a[12..16].copy_from_slice(&(0x1_0000u32 + n as u32).to_be_bytes());
        e2.inject(INT, &neighbor_advert(MAC9, a, a, MAC9), S);
    }
    let out = e2.inject(EXT, &syn(82), 2 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(kind(&out[0].1), Out::Tcp(RS1_MAC), "static neighbour never evicted");
}

#[test]
fn a_flood_of_strangers_evicts_at_a_bounded_rate_and_answers_to_our_requests_still_get_in() {
    use ferrovs_engine::pipeline::neigh::{EVICT_BURST, EVICT_PER_SEC};
    let text =
        config_text(SERVICES).replace("flow_table_size = 4096", "flow_table_size = 4096\nneighbor_table_size = 16");
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").expect("config"), 1);
    let stranger = |n: u32| {
        let mut a = RS9;
        a[12..16].copy_from_slice(&(0x1_0000 + n).to_be_bytes());
        neighbor_advert(MAC9, a, a, MAC9)
    };
    // 16 fill the table, a burst of strangers evicts, the rest of the flood is not learnt.
    let (burst, extra) = (EVICT_BURST, 50);
    for n in 0..16 + burst + extra {
        e.inject(INT, &stranger(n), S);
    }
    let c = e.counters();
    assert_eq!((c.neigh_evicted, c.neigh_limited), (burst as u64, extra as u64));
    // The flood goes on, but the real server we ask for is learnt from its answer and the
    // SYN waiting for it leaves.
    let out = e.inject(EXT, &syn(80), S);
    assert_eq!(out.iter().map(|(i, f)| (*i, kind(f))).collect::<Vec<_>>(), vec![(INT, Out::Solicit)]);
    let out = e.inject(INT, &neighbor_advert(MAC9, RS9, RS9, MAC9), S);
    assert_eq!(out.iter().map(|(i, f)| (*i, kind(f))).collect::<Vec<_>>(), vec![(INT, Out::Tcp(MAC9))]);
    assert_eq!(e.counters().neigh_evicted, burst as u64 + 1);
    // A second later the bucket has refilled by EVICT_PER_SEC.
    let more = EVICT_PER_SEC + 10;
    for n in 0..more {
        e.inject(INT, &stranger(100_000 + n), S + 1_000_000_000);
    }
    let c = e.counters();
    assert_eq!(c.neigh_evicted, burst as u64 + 1 + EVICT_PER_SEC as u64);
    assert_eq!(c.neigh_limited, extra as u64 + 10);
}

#[test]
fn new_connections_follow_a_next_hop_whose_mac_changed() {
    // New connections take their next hops' MACs from a per-worker memo: an unknown next
    // hop is not remembered as such, and a changed MAC reaches the next new connection.
    let mut e = MemEngine::new(config(SERVICES), 1);
    let syn_from = |sport: u16| with_macs(tcp6(C6, sport, VIP6, 80, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
    let out = e.inject(EXT, &syn_from(40001), S);
    assert_eq!(out.iter().map(|(_, f)| kind(f)).collect::<Vec<_>>(), vec![Out::Solicit], "unknown next hop");
    e.inject(INT, &neighbor_advert(MAC9, RS9, RS9, MAC9), 2 * S);
    let out = e.inject(EXT, &syn_from(40002), 3 * S);
    assert_eq!(out.iter().map(|(_, f)| kind(f)).next_back(), Some(Out::Tcp(MAC9)), "learnt");
    let mac_b = [2, 0, 0, 0, 2, 0xb];
    e.inject(INT, &neighbor_advert(mac_b, RS9, RS9, mac_b), 4 * S);
    let out = e.inject(EXT, &syn_from(40003), 5 * S);
    assert_eq!(out.iter().map(|(_, f)| kind(f)).next_back(), Some(Out::Tcp(mac_b)), "the new MAC");
}
