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
            input: vec![(INT, solicited_advert(MAC9, RS9, LB_INT, LB_INT6)), (EXT, syn(80))],
            want: vec![(INT, Out::Tcp(MAC9))],
        },
        Case {
            what: "the same advertisement arriving on the client side is off-link there: not learnt",
            input: vec![(EXT, solicited_advert(MAC9, RS9, LB_EXT, OUR_EXT6)), (EXT, syn(80))],
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
            input: vec![(INT, solicited_advert(MAC9, LL9, LB_INT, LB_INT6)), (EXT, syn(81))],
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
        e.inject(INT, &solicited_advert(MAC9, a, LB_INT, LB_INT6), S);
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
        e.inject(INT, &solicited_advert(MAC9, a, LB_INT, LB_INT6), S);
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
        e2.inject(INT, &solicited_advert(MAC9, a, LB_INT, LB_INT6), S);
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
        solicited_advert(MAC9, a, LB_INT, LB_INT6)
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

/// Packets parked while their next hop resolves leave in the order they came (a FIFO, as
/// Linux's per-neighbour `arp_queue`): three segments of one connection must reach the
/// real server as they were sent, not reordered.
#[test]
fn parked_packets_leave_in_arrival_order() {
    use ferrovs_engine::wire::parse::{TCP_ACK, TCP_PSH};
    let mut e = MemEngine::new(config(SERVICES), 1);
    let seg =
        |flags, seq: u32, data: &[u8]| with_macs(tcp6(C6, 40000, VIP6, 80, flags, seq, 0, data), CLIENT_MAC, LB_EXT);
    let out = e.inject(EXT, &seg(TCP_SYN, 1, b""), S);
    assert_eq!(out.iter().map(|(_, f)| kind(f)).collect::<Vec<_>>(), vec![Out::Solicit]);
    for (k, data) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
        let out = e.inject(EXT, &seg(TCP_ACK | TCP_PSH, 2 + k as u32, *data), S);
        assert!(out.iter().all(|(_, f)| kind(f) != Out::Tcp(MAC9)), "parked");
    }
    let out = e.inject(INT, &neighbor_advert(MAC9, RS9, RS9, MAC9), S);
    let seqs = seqs_to_rs9(&out);
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "in the order they were parked");

    // Another next hop's packet leaving the queue (its resolution timed out) does not
    // reorder the others either.
    let mut e = MemEngine::new(config(SERVICES), 1);
    e.inject(EXT, &syn(81), S); // parked for fe80::9, until 4 s
    let t = S * 5 / 2;
    e.inject(EXT, &seg(TCP_SYN, 1, b""), t);
    for (k, data) in [b"a", b"b", b"c"].iter().enumerate() {
        e.inject(EXT, &seg(TCP_ACK | TCP_PSH, 2 + k as u32, *data), t);
    }
    e.run(S * 41 / 10);
    let out = e.inject(INT, &neighbor_advert(MAC9, RS9, RS9, MAC9), S * 41 / 10);
    let seqs = seqs_to_rs9(&out);
    assert_eq!(seqs, vec![1, 2, 3, 4], "in the order they were parked, after an expiry");
}

/// The sequence numbers of the TCP segments in `out` sent to RS9's MAC, in order.
fn seqs_to_rs9(out: &[(usize, Vec<u8>)]) -> Vec<u32> {
    out.iter()
        .filter(|(_, f)| kind(f) == Out::Tcp(MAC9))
        .map(|(_, f)| {
            let p = ferrovs_engine::wire::parse::parse(f).expect("parse");
            u32::from_be_bytes(f[p.l4 + 4..p.l4 + 8].try_into().unwrap())
        })
        .collect()
}

/// An ND message (here a solicitation for a VIP) with options, `opts`, after the target.
fn ns_with_opts(src: [u8; 16], target: [u8; 16], opts: &[u8]) -> Vec<u8> {
    let mut dst = [0xffu8, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    dst[13..16].copy_from_slice(&target[13..16]);
    let mut body = target.to_vec();
    body.extend_from_slice(opts);
    let t = etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] };
    let dmac = [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]];
    let b = etherparse::PacketBuilder::ethernet2(MAC9, dmac).ipv6(src, dst, 255).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &body).expect("build ns");
    v
}

/// RFC 4861 section 7.1.1: a neighbour discovery message with an option of length 0 is
/// silently discarded (a receiver walking the options could loop on it; Linux's
/// `ndisc_parse_options` refuses the message). Neither answered nor learnt from: a counted drop.
#[test]
fn nd_with_a_zero_length_option_is_dropped() {
    let sll = [1, 1, 2, 0, 0, 0, 2, 9];
    let zero = [14, 0, 0, 0, 0, 0, 0, 0];
    for (what, opts) in [
        ("source link-layer address, then a zero-length option", [&sll[..], &zero[..]].concat()),
        ("a zero-length option alone", zero.to_vec()),
    ] {
        let mut e = MemEngine::new(config(SERVICES), 1);
        // From the real server fd00:2::9 (learning it would send the SYN below to its MAC).
        let out = e.inject(INT, &with_macs(ns_with_opts(RS9, VIP6, &opts), MAC9, LB_INT), S);
        assert!(out.is_empty(), "{what}: not answered");
        assert_eq!(e.counters().nd_replies, 0, "{what}");
        let drops = common::seg::drops(&e);
        assert_eq!(drops.iter().map(|d| d.1).sum::<u64>(), 1, "{what}: a counted drop ({drops:?})");
        let out = e.inject(EXT, &syn(80), 2 * S);
        assert_eq!(out.iter().map(|(_, f)| kind(f)).collect::<Vec<_>>(), vec![Out::Solicit], "{what}: not learnt");
        // The well-formed message is answered (the control).
        let out = e.inject(INT, &with_macs(ns_with_opts(RS9, VIP6, &sll), MAC9, LB_INT), 3 * S);
        assert_eq!(e.counters().nd_replies, 1, "{what}: a well-formed solicitation is answered");
        assert!(out.iter().any(|(_, f)| kind(f) == Out::Tcp(MAC9)), "{what}: and its sender learnt");
    }
}

/// RFC 4861 section 7.2.5: an advertisement without the Override flag (a proxy's, or an
/// anycast responder's) does not replace the link-layer address of an entry the cache holds;
/// it may still create one while we resolve it, and with the flag the address changes (Linux's `ndisc_recv_na`,
/// `NEIGH_UPDATE_F_OVERRIDE` only with the flag).
#[test]
fn an_advertisement_without_override_does_not_replace_a_known_mac() {
    let na = |flags: u8, mac: [u8; 6]| {
        let mut body = RS9.to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&mac);
        let t = etherparse::Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [flags, 0, 0, 0] };
        let dst = [0xffu8, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let b = etherparse::PacketBuilder::ethernet2(mac, [0x33, 0x33, 0, 0, 0, 1]).ipv6(RS9, dst, 255).icmpv6(t);
        let mut v = Vec::new();
        b.write(&mut v, &body).expect("build na");
        v
    };
    let syn_from = |sport: u16| with_macs(tcp6(C6, sport, VIP6, 80, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
    let to = |out: Vec<(usize, Vec<u8>)>| out.iter().map(|(_, f)| kind(f)).next_back();
    let mac_b = [2, 0, 0, 0, 2, 0xb];
    let mut e = MemEngine::new(config(SERVICES), 1);
    // No entry yet, resolving it (RFC 4861's INCOMPLETE): learnt even without the flag.
    assert_eq!(to(e.inject(EXT, &syn_from(40001), S)), Some(Out::Solicit));
    assert_eq!(to(e.inject(INT, &na(0x00, MAC9), S)), Some(Out::Tcp(MAC9)));
    // Another MAC without the flag: ignored.
    e.inject(INT, &na(0x00, mac_b), 2 * S);
    assert_eq!(to(e.inject(EXT, &syn_from(40002), 2 * S)), Some(Out::Tcp(MAC9)), "not overridden");
    // With the flag: replaced.
    e.inject(INT, &na(0x20, mac_b), 3 * S);
    assert_eq!(to(e.inject(EXT, &syn_from(40003), 3 * S)), Some(Out::Tcp(mac_b)), "overridden");
}

/// RFC 4861 sections 7.1.1 and 7.1.2 (Linux's `ndisc_rcv`, `ndisc_recv_ns`, `ndisc_recv_na`):
/// a neighbour discovery message that fails a validity check is silently discarded, neither
/// answered nor learnt from: a counted drop. Each case is a well-formed message from the real
/// server fd00:2::9 with one thing wrong; the control (nothing wrong) is answered and learnt.
#[test]
fn invalid_nd_messages_are_neither_answered_nor_learnt() {
    let sll = [1, 1, 2, 0, 0, 0, 2, 9];
    let fix = |mut f: Vec<u8>| {
        // The ICMPv6 checksum over the message as changed.
        let p = ferrovs_engine::wire::parse::parse(&f).expect("parse");
        f[p.l4 + 2..p.l4 + 4].fill(0);
        let src: [u8; 16] = f[22..38].try_into().unwrap();
        let dst: [u8; 16] = f[38..54].try_into().unwrap();
        let pseudo = ferrovs_engine::wire::csum::pseudo_v6(&src, &dst, 58, (p.end - p.l4) as u32);
        let ck = ferrovs_engine::wire::csum::finish(&f[p.l4..p.end], pseudo);
        f[p.l4 + 2..p.l4 + 4].copy_from_slice(&ck.to_be_bytes());
        f
    };
    let ns = || with_macs(ns_with_opts(RS9, VIP6, &sll), MAC9, LB_INT);
    let na = |flags: u8| {
        let mut f = with_macs(neighbor_advert(MAC9, RS9, RS9, MAC9), MAC9, LB_INT);
        f[14 + 40 + 4] = flags;
        fix(f)
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("control: a solicitation", ns(), true),
        ("control: a solicited advertisement", solicited_advert(MAC9, RS9, LB_INT, LB_INT6), true),
        (
            "a bad ICMPv6 checksum",
            {
                let mut f = ns();
                f[14 + 40 + 2] ^= 0x40;
                f
            },
            false,
        ),
        (
            "ICMPv6 code 1",
            {
                let mut f = ns();
                f[14 + 40 + 1] = 1;
                fix(f)
            },
            false,
        ),
        (
            "a multicast target",
            fix(with_macs(ns_with_opts(RS9, [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], &sll), MAC9, LB_INT)),
            false,
        ),
        // The checksum is verified before anything is learnt from a message (whatever the
        // worker does first to decide whether it acts on the message at all).
        (
            "a solicited advertisement with a bad ICMPv6 checksum",
            {
                let mut f = solicited_advert(MAC9, RS9, LB_INT, LB_INT6);
                f[14 + 40 + 2] ^= 0x40;
                f
            },
            false,
        ),
        ("a solicited advertisement to all nodes", na(0x60), false),
        (
            "an advertisement with code 1",
            {
                let mut f = na(0x20);
                f[14 + 40 + 1] = 1;
                fix(f)
            },
            false,
        ),
        (
            "duplicate address detection (unspecified source) with a source link-layer address",
            with_macs(ns_with_opts([0; 16], VIP6, &sll), MAC9, LB_INT),
            false,
        ),
    ];
    for (what, frame, valid) in cases {
        let mut e = MemEngine::new(config(SERVICES), 1);
        let out = e.inject(INT, &frame, S);
        let drops = common::seg::drops(&e);
        if valid {
            // (An advertisement is punted to the kernel's path, here `not_for_us`.)
            assert!(drops.iter().all(|d| d.0 == "not_for_us"), "{what}: {drops:?}");
        } else {
            assert!(out.is_empty(), "{what}: not answered");
            assert_eq!(e.counters().nd_replies, 0, "{what}");
            assert_eq!(drops, vec![("malformed", 1)], "{what}: a counted drop");
        }
        // Learnt (the SYN goes to its MAC) only if valid.
        let out = e.inject(EXT, &syn(80), 2 * S);
        let want = if valid { Out::Tcp(MAC9) } else { Out::Solicit };
        assert_eq!(out.iter().map(|(_, f)| kind(f)).collect::<Vec<_>>(), vec![want], "{what}: learnt?");
    }
}

/// An unsolicited advertisement is learnt while the worker resolves its target (a
/// solicitation went out): with a bad checksum it is not, and the next packet still asks.
/// An unsolicited advertisement for an address the worker neither holds nor resolves is
/// ignored before its checksum is summed (a flood of them costs no sum): a counted drop.
#[test]
fn a_corrupted_advertisement_is_not_learnt_while_resolving() {
    let mut e = MemEngine::new(config(SERVICES), 1);
    let out = e.inject(EXT, &syn(80), S);
    assert_eq!(out.iter().map(|(_, f)| kind(f)).collect::<Vec<_>>(), vec![Out::Solicit]);
    let mut na = with_macs(neighbor_advert(MAC9, RS9, RS9, MAC9), MAC9, LB_INT);
    na[14 + 40 + 2] ^= 0x40;
    e.inject(INT, &na, S);
    assert_eq!(common::seg::drops(&e), vec![("malformed", 1)]);
    assert_eq!(e.workers[0].neighbor(ferrovs_engine::wire::parse::v6_to_addr(RS9)), None, "learnt");
    // Ignored unverified: for fd00:2::8, neither held nor resolved.
    let mut other = RS9;
    other[15] = 8;
    let mut na = with_macs(neighbor_advert(MAC9, other, other, MAC9), MAC9, LB_INT);
    na[14 + 40 + 2] ^= 0x40;
    e.inject(INT, &na, S);
    assert_eq!(common::seg::drops(&e), vec![("malformed", 1), ("not_for_us", 1)]);
    assert_eq!(e.workers[0].neighbor(ferrovs_engine::wire::parse::v6_to_addr(other)), None, "learnt");
    // The advertisement intact is learnt (the control).
    e.inject(INT, &with_macs(neighbor_advert(MAC9, RS9, RS9, MAC9), MAC9, LB_INT), S);
    assert_eq!(e.workers[0].neighbor(ferrovs_engine::wire::parse::v6_to_addr(RS9)), Some(MAC9));
}

/// A UDP service whose real servers have no static neighbour entry: 10.0.2.9 and fd00:2::9
/// on int's subnets (UDP: the connection lives 300 s, through the whole test).
const UDP_SERVICES: &str = r#"
[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
scheduler = "rr"

[[service.real_server]]
address = "10.0.2.9"

[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
scheduler = "rr"

[[service.real_server]]
address = "fd00:2::9"
"#;

const RS4_9: [u8; 4] = [10, 0, 2, 9];
const LB_INT4: [u8; 4] = [10, 0, 2, 1];
const LB_INT6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The real server's new MAC (a new box, a moved VM, a failover without gratuitous ARP).
const MAC_NEW: [u8; 6] = [2, 0, 0, 0, 2, 0xb];
const MS: u64 = 1_000_000;

/// A datagram from `client` to the IPv4 VIP.
fn dgram4(client: [u8; 4]) -> Vec<u8> {
    with_macs(udp4(client, 5353, VIP, 53, b"q"), CLIENT_MAC, LB_EXT)
}

/// What a frame out is, in the detail these tests look at.
#[derive(Debug, PartialEq)]
enum Frame {
    /// A UDP datagram to this MAC.
    Udp([u8; 6]),
    /// An ARP request: Ethernet destination, sender MAC and address, target MAC and address.
    ArpRequest {
        to: [u8; 6],
        sha: [u8; 6],
        spa: [u8; 4],
        tha: [u8; 6],
        tpa: [u8; 4],
    },
    /// A neighbour solicitation: Ethernet destination, IPv6 destination, target.
    Solicit {
        to: [u8; 6],
        dst: [u8; 16],
        target: [u8; 16],
    },
    Other,
}

fn frame(f: &[u8]) -> Frame {
    if f[12..14] == [8, 6] && f[20..22] == [0, 1] {
        return Frame::ArpRequest {
            to: f[0..6].try_into().unwrap(),
            sha: f[22..28].try_into().unwrap(),
            spa: f[28..32].try_into().unwrap(),
            tha: f[32..38].try_into().unwrap(),
            tpa: f[38..42].try_into().unwrap(),
        };
    }
    let Ok(p) = ferrovs_engine::wire::parse::parse(f) else { return Frame::Other };
    match p.proto {
        17 => Frame::Udp(f[0..6].try_into().unwrap()),
        58 if f[p.l4] == 135 => {
            verify_checksums(f).expect("a valid solicitation");
            assert_eq!(f[14 + 7], 255, "hop limit 255");
            // The source link-layer address option: ours.
            assert_eq!(&f[p.l4 + 24..p.l4 + 32], &[1, 1, 2, 0, 0, 0, 2, 1]);
            Frame::Solicit {
                to: f[0..6].try_into().unwrap(),
                dst: f[38..54].try_into().unwrap(),
                target: f[p.l4 + 8..p.l4 + 24].try_into().unwrap(),
            }
        }
        _ => Frame::Other,
    }
}

fn frames(out: &[(usize, Vec<u8>)]) -> Vec<(usize, Frame)> {
    out.iter().map(|(i, f)| (*i, frame(f))).collect()
}

/// The unicast ARP probe of 10.0.2.9 at `mac` (Linux's: target hardware address 0).
fn arp_probe(mac: [u8; 6]) -> (usize, Frame) {
    (INT, Frame::ArpRequest { to: mac, sha: LB_INT, spa: LB_INT4, tha: [0; 6], tpa: RS4_9 })
}

/// An engine that learnt 10.0.2.9 at MAC9 at time `S` (a datagram parked, an ARP request
/// broadcast, the reply), with a connection to it from `client`.
fn learnt4(workers: usize, client: [u8; 4]) -> MemEngine {
    let mut e = MemEngine::new(config(UDP_SERVICES), workers);
    let out = e.inject(EXT, &dgram4(client), S);
    let bcast = Frame::ArpRequest { to: [0xff; 6], sha: LB_INT, spa: LB_INT4, tha: [0; 6], tpa: RS4_9 };
    assert_eq!(frames(&out), vec![(INT, bcast)], "resolved by broadcast");
    let out = e.inject(INT, &arp_reply(MAC9, RS4_9, LB_INT, LB_INT4), S);
    assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC9))], "released to the learnt MAC");
    e
}

/// Linux's neighbour state machine: an entry in use not confirmed for the reachable time is
/// probed by unicast (PROBE: `ucast_probes` = 3, 1 s apart); unanswered, it fails and the
/// next packet resolves the address again by broadcast, so a real server that changed its
/// MAC (replaced, failed over without a gratuitous ARP) is found again instead of its
/// traffic going to the old MAC for ever.
#[test]
fn a_neighbour_that_stops_answering_is_probed_then_resolved_again() {
    let mut e = learnt4(1, CLIENT);
    // Reachable: no probe.
    assert_eq!(frames(&e.run(S + 29 * S)), vec![]);
    // Then three unicast probes to the cached MAC, a second apart; traffic still goes to it.
    assert_eq!(frames(&e.run(31 * S)), vec![arp_probe(MAC9)]);
    assert_eq!(frames(&e.inject(EXT, &dgram4(CLIENT), 31 * S + 500 * MS)), vec![(INT, Frame::Udp(MAC9))]);
    assert_eq!(frames(&e.run(31 * S + 600 * MS)), vec![], "a second apart");
    assert_eq!(frames(&e.run(32 * S + 100 * MS)), vec![arp_probe(MAC9)]);
    assert_eq!(frames(&e.run(33 * S + 200 * MS)), vec![arp_probe(MAC9)]);
    let c = e.counters();
    assert_eq!((c.neigh_probes, c.neigh_failed), (3, 0));
    // Unanswered: the entry fails.
    assert_eq!(frames(&e.run(34 * S + 300 * MS)), vec![]);
    assert_eq!(e.counters().neigh_failed, 1);
    // The next datagram is parked while the address is resolved by broadcast...
    let out = e.inject(EXT, &dgram4(CLIENT), 34 * S + 500 * MS);
    let bcast = Frame::ArpRequest { to: [0xff; 6], sha: LB_INT, spa: LB_INT4, tha: [0; 6], tpa: RS4_9 };
    assert_eq!(frames(&out), vec![(INT, bcast)]);
    assert_eq!(e.parked(), 1);
    // ...and the server's new MAC answers: the parked datagram and the next go there.
    let out = e.inject(INT, &arp_reply(MAC_NEW, RS4_9, LB_INT, LB_INT4), 34 * S + 600 * MS);
    assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC_NEW))]);
    assert_eq!(frames(&e.inject(EXT, &dgram4(CLIENT), 35 * S)), vec![(INT, Frame::Udp(MAC_NEW))]);
    let c = e.counters();
    assert_eq!((c.neigh_probes, c.neigh_failed), (3, 1));
}

/// A probe answered (any ARP from the neighbour) confirms the entry: no more probes until the
/// reachable time passes again, traffic keeps its MAC.
#[test]
fn an_answered_arp_probe_keeps_the_neighbour() {
    let mut e = learnt4(1, CLIENT);
    assert_eq!(frames(&e.run(31 * S)), vec![arp_probe(MAC9)]);
    e.inject(INT, &arp_reply(MAC9, RS4_9, LB_INT, LB_INT4), 31 * S + 100 * MS);
    for k in 1..30 {
        assert_eq!(frames(&e.run(31 * S + k * S + 200 * MS)), vec![], "confirmed ({k} s after the answer)");
    }
    assert_eq!(frames(&e.inject(EXT, &dgram4(CLIENT), 60 * S)), vec![(INT, Frame::Udp(MAC9))]);
    let c = e.counters();
    assert_eq!((c.neigh_probes, c.neigh_failed), (1, 0));
    // The reachable time after the answer: probed again.
    assert_eq!(frames(&e.run(62 * S)), vec![arp_probe(MAC9)]);
}

/// A failover (VRRP / keepalived moving the server's address to another box, a bonding
/// switch-over) announces the new MAC by a gratuitous ARP, a broadcast request for its own
/// address; Linux's `arp_process` takes the new MAC for an entry it holds from it, and from
/// any ARP request of the neighbour (`neigh_update` with override). Traffic must follow at
/// once, not only when the old MAC's probes have failed 33 s later.
#[test]
fn a_gratuitous_arp_moves_traffic_to_the_new_mac() {
    let cases = [
        ("a gratuitous ARP request", arp_request(MAC_NEW, RS4_9, RS4_9)),
        ("a gratuitous ARP reply (arping -A)", arp_reply(MAC_NEW, RS4_9, [0xff; 6], RS4_9)),
        ("an ARP request of the server for another host", arp_request(MAC_NEW, RS4_9, [10, 0, 2, 7])),
    ];
    for (what, garp) in cases {
        let mut e = learnt4(1, CLIENT);
        e.inject(INT, &garp, 2 * S);
        let out = e.inject(EXT, &dgram4(CLIENT), 2 * S + MS);
        assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC_NEW))], "{what}: the next datagram to the new MAC");
    }
}

/// Linux's `arp_process`: only a reply to us (unicast to our MAC, for our address) asserts a
/// neighbour's reachability; a request, a gratuitous ARP or a broadcast reply says where the
/// address is, not that its owner is alive (STALE), and with the MAC the entry holds it
/// changes nothing. So a dead server, or an attacker on the segment sending ARP in its name,
/// cannot keep its entry reachable with ARP nobody asked for: it is probed and fails as if
/// silent, while answered probes keep it (the control).
#[test]
fn unsolicited_arp_does_not_keep_a_dead_neighbour_reachable() {
    let unsolicited = [
        arp_request(MAC9, RS4_9, RS4_9),
        arp_reply(MAC9, RS4_9, [0xff; 6], RS4_9),
        arp_request(MAC9, RS4_9, LB_INT4),
        with_macs(arp_reply(MAC9, RS4_9, LB_INT, LB_INT4), MAC9, [0xff; 6]),
    ];
    for (what, answered) in [("probes unanswered", false), ("probes answered", true)] {
        let mut e = learnt4(1, CLIENT);
        let mut probes = 0;
        for k in 2..36 {
            let mut out = Vec::new();
            for f in &unsolicited {
                out.extend(e.inject(INT, f, k * S + 500 * MS));
            }
            out.extend(e.run(k * S + 900 * MS));
            let n = frames(&out).into_iter().filter(|f| *f == arp_probe(MAC9)).count();
            if answered && n > 0 {
                e.inject(INT, &arp_reply(MAC9, RS4_9, LB_INT, LB_INT4), k * S + 950 * MS);
            }
            probes += n;
        }
        let c = e.counters();
        let want = if answered { (1, 0) } else { (3, 1) };
        assert_eq!((probes, c.neigh_probes, c.neigh_failed), (want.0, want.0 as u64, want.1), "{what}");
    }
}

/// A new MAC learnt from ARP nobody asked for (a failover's gratuitous ARP) is used at once
/// but not known to be reachable (Linux's STALE): after Linux's `delay_first_probe_time` it is
/// probed at the new MAC, and the answer confirms it for the reachable time.
#[test]
fn a_mac_learnt_unasked_is_probed_at_the_new_mac() {
    use ferrovs_engine::pipeline::neigh::DELAY_NS;
    let mut e = learnt4(1, CLIENT);
    e.inject(INT, &arp_request(MAC_NEW, RS4_9, RS4_9), 2 * S);
    assert_eq!(frames(&e.inject(EXT, &dgram4(CLIENT), 2 * S + MS)), vec![(INT, Frame::Udp(MAC_NEW))]);
    assert_eq!(frames(&e.run(2 * S + DELAY_NS - MS)), vec![], "Linux's DELAY");
    let t = 2 * S + DELAY_NS + 100 * MS;
    assert_eq!(frames(&e.run(t)), vec![arp_probe(MAC_NEW)]);
    e.inject(INT, &arp_reply(MAC_NEW, RS4_9, LB_INT, LB_INT4), t + MS);
    for k in 1..30 {
        assert_eq!(frames(&e.run(t + k * S)), vec![], "confirmed ({k} s after the answer)");
    }
    assert_eq!(frames(&e.run(t + 31 * S)), vec![arp_probe(MAC_NEW)]);
    assert_eq!(e.counters().neigh_failed, 0);
}

/// A datagram to fd00:2::9 (UDP_SERVICES' dns6).
fn dgram6() -> Vec<u8> {
    with_macs(udp6(C6, 5353, VIP6, 53, b"q"), CLIENT_MAC, LB_EXT)
}

/// An engine that resolved fd00:2::9 at MAC9 at time `S` (a datagram parked, a solicitation,
/// the solicited advertisement), with a connection to it.
fn learnt6() -> MemEngine {
    let mut e = MemEngine::new(config(UDP_SERVICES), 1);
    e.inject(EXT, &dgram6(), S);
    let out = e.inject(INT, &solicited_advert(MAC9, RS9, LB_INT, LB_INT6), S);
    assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC9))]);
    e
}

/// An advertisement from fd00:2::9 for itself with `flags` (0x40 Solicited, 0x20 Override)
/// and target link-layer address `mac`, to all nodes if not solicited, else to us.
fn na9(flags: u8, mac: [u8; 6]) -> Vec<u8> {
    let (dmac, dst) = if flags & 0x40 != 0 {
        (LB_INT, LB_INT6)
    } else {
        ([0x33, 0x33, 0, 0, 0, 1], [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    };
    let mut body = RS9.to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mac);
    let t = etherparse::Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [flags, 0, 0, 0] };
    let b = etherparse::PacketBuilder::ethernet2(mac, dmac).ipv6(RS9, dst, 255).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &body).expect("build na");
    v
}

/// RFC 4861 section 7.2.5 (Linux's `ndisc_recv_na`): only a solicited advertisement confirms
/// reachability; an unsolicited one with the MAC the entry holds changes nothing, and a
/// solicitation from the neighbour only creates or updates its entry as STALE (section
/// 7.2.3). So neither keeps a dead neighbour's entry reachable: it is probed and fails as if
/// silent, while solicited advertisements answering the probes keep it (the control).
#[test]
fn unsolicited_nd_does_not_keep_a_dead_neighbour_reachable() {
    let unsolicited = [na9(0x20, MAC9), na9(0, MAC9), with_macs(neighbor_solicit(MAC9, RS9, LB_INT6), MAC9, LB_INT)];
    let probe = (INT, Frame::Solicit { to: MAC9, dst: RS9, target: RS9 });
    for (what, answered) in [("probes unanswered", false), ("probes answered", true)] {
        let mut e = learnt6();
        let mut probes = 0;
        for k in 2..36 {
            let mut out = Vec::new();
            for f in &unsolicited {
                out.extend(e.inject(INT, f, k * S + 500 * MS));
            }
            out.extend(e.run(k * S + 900 * MS));
            let n = frames(&out).into_iter().filter(|f| *f == probe).count();
            if answered && n > 0 {
                e.inject(INT, &na9(0x60, MAC9), k * S + 950 * MS);
            }
            probes += n;
        }
        let c = e.counters();
        let want = if answered { (1, 0) } else { (3, 1) };
        assert_eq!((probes, c.neigh_probes, c.neigh_failed), (want.0, want.0 as u64, want.1), "{what}");
    }
}

/// RFC 4861 section 7.2.5: an advertisement for an address the cache holds no entry for
/// creates none, unless we are resolving it (Linux's INCOMPLETE entry: our solicitation is
/// out, and an unsolicited answer is recorded as STALE) or it is solicited (the answer to a
/// solicitation of ours: ferrovs keeps no shared INCOMPLETE entry, and RSS may hand the
/// answer to another worker than the one that asked).
#[test]
fn an_advertisement_creates_an_entry_only_when_we_resolve_or_asked() {
    let mut e = MemEngine::new(config(UDP_SERVICES), 1);
    e.inject(INT, &na9(0x20, MAC9), S);
    let out = e.inject(EXT, &dgram6(), S + MS);
    assert!(matches!(frames(&out)[..], [(INT, Frame::Solicit { .. })]), "not learnt: resolved ({out:?})");
    // Resolving now: the same advertisement is the answer.
    let out = e.inject(INT, &na9(0x20, MAC9), S + 2 * MS);
    assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC9))]);
    // A solicited advertisement creates its entry.
    let mut e = MemEngine::new(config(UDP_SERVICES), 1);
    e.inject(INT, &na9(0x60, MAC9), S);
    assert_eq!(frames(&e.inject(EXT, &dgram6(), S + MS)), vec![(INT, Frame::Udp(MAC9))]);
}

/// RFC 4861 section 7.2.5: an advertisement without the Override flag and with another
/// MAC than the entry's does not change the MAC, but a REACHABLE entry becomes STALE: it is
/// probed (at the MAC it holds) after the delay instead of after the reachable time.
#[test]
fn an_advertisement_of_another_mac_without_override_makes_a_reachable_entry_stale() {
    use ferrovs_engine::pipeline::neigh::DELAY_NS;
    let mut e = learnt6();
    e.inject(INT, &na9(0, MAC_NEW), 3 * S);
    assert_eq!(frames(&e.inject(EXT, &dgram6(), 3 * S + MS)), vec![(INT, Frame::Udp(MAC9))], "the MAC stays");
    assert_eq!(frames(&e.run(3 * S + DELAY_NS - MS)), vec![]);
    let probe = (INT, Frame::Solicit { to: MAC9, dst: RS9, target: RS9 });
    assert_eq!(frames(&e.run(3 * S + DELAY_NS + 100 * MS)), vec![probe]);
}

/// IPv6: the probe is a solicitation to the neighbour's own address at its cached MAC (RFC
/// 4861 section 7.3.3), and Linux answers a unicast solicitation with a solicited
/// advertisement without the target link-layer address option, which confirms the entry
/// (RFC 4861 section 7.2.5).
#[test]
fn an_answered_nd_probe_keeps_the_neighbour() {
    let dgram6 = || with_macs(udp6(C6, 5353, VIP6, 53, b"q"), CLIENT_MAC, LB_EXT);
    let mut e = MemEngine::new(config(UDP_SERVICES), 1);
    e.inject(EXT, &dgram6(), S);
    let out = e.inject(INT, &solicited_advert(MAC9, RS9, LB_INT, LB_INT6), S);
    assert_eq!(frames(&out), vec![(INT, Frame::Udp(MAC9))]);
    let probe = (INT, Frame::Solicit { to: MAC9, dst: RS9, target: RS9 });
    assert_eq!(frames(&e.run(31 * S)), vec![probe]);
    // Linux's answer: solicited, no Override, no option.
    let na = {
        let t = etherparse::Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [0x40, 0, 0, 0] };
        let b = etherparse::PacketBuilder::ethernet2(MAC9, LB_INT).ipv6(RS9, LB_INT6, 255).icmpv6(t);
        let mut v = Vec::new();
        b.write(&mut v, &RS9).expect("build na");
        v
    };
    e.inject(INT, &na, 31 * S + 100 * MS);
    for k in 1..10 {
        assert_eq!(frames(&e.run(31 * S + k * S + 200 * MS)), vec![], "confirmed ({k} s after the answer)");
    }
    assert_eq!(frames(&e.inject(EXT, &dgram6(), 45 * S)), vec![(INT, Frame::Udp(MAC9))]);
    let c = e.counters();
    assert_eq!((c.neigh_probes, c.neigh_failed), (1, 0));
}

/// Two workers, each with a connection to the same real server: they do not both probe it,
/// and the answer (whichever worker receives it) confirms both workers' entries.
#[test]
fn workers_probe_a_neighbour_once_and_share_the_answer() {
    use ferrovs_engine::pipeline::snapshot::owner_of;
    use ferrovs_engine::wire::parse::v4_to_addr;
    let clients: Vec<[u8; 4]> = (2..50u8).map(|n| [10, 0, 1, n]).collect();
    let a = clients[0];
    let b = *clients.iter().find(|c| owner_of(v4_to_addr(**c), 2) != owner_of(v4_to_addr(a), 2)).unwrap();
    let mut e = learnt4(2, a);
    assert_eq!(frames(&e.inject(EXT, &dgram4(b), S)), vec![(INT, Frame::Udp(MAC9))], "the other worker");
    // 30 to 40 s, in steps of 50 ms; each probe is answered at once.
    let mut probes = 0;
    for k in 0..200 {
        let t = 30 * S + k * 50 * MS;
        for (_, f) in frames(&e.run(t)) {
            assert_eq!((INT, f), arp_probe(MAC9));
            probes += 1;
            e.inject(INT, &arp_reply(MAC9, RS4_9, LB_INT, LB_INT4), t + MS);
        }
    }
    assert_eq!(probes, 1, "one probe for both workers");
    for c in [a, b] {
        assert_eq!(frames(&e.inject(EXT, &dgram4(c), 40 * S)), vec![(INT, Frame::Udp(MAC9))]);
    }
    assert_eq!(e.counters().neigh_failed, 0);
}

/// A VIP and a full NAT local address of each family, besides the interface addresses.
const OWN: &str = r#"
[[service]]
name = "full"
vip = "10.0.1.100"
protocol = "tcp"
ports = [81]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "full6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [81]
forward = "fnat"
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"
"#;

/// ARP and neighbour discovery whose sender claims one of our own addresses (an interface
/// address, a VIP, a full NAT local address) are an address conflict, not a neighbour (Linux's
/// `arp_process` does not learn such a sender): learning it would poison the entry with the
/// attacker's MAC. Not learnt, not updated, counted (`arp_own_addr`); a stranger's still is.
#[test]
fn arp_and_nd_claiming_our_own_addresses_are_not_learnt_nor_answered() {
    use ferrovs_engine::wire::parse::{v4_to_addr, v6_to_addr};
    const EVIL: [u8; 6] = [2, 0, 0, 0, 0x66, 0x66];
    let (ext4, int4, laddr4) = ([10, 0, 1, 1], [10, 0, 2, 1], [10, 0, 2, 200]);
    let ext6 = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let laddr6 = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00];
    let stranger6 = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let cases: Vec<(&str, usize, Vec<u8>, u128)> = vec![
        ("gratuitous ARP request for the VIP", EXT, arp_request(EVIL, VIP, VIP), v4_to_addr(VIP)),
        ("ARP request from the VIP for our address", EXT, arp_request(EVIL, VIP, ext4), v4_to_addr(VIP)),
        ("ARP reply from the VIP to us", EXT, arp_reply(EVIL, VIP, LB_EXT, ext4), v4_to_addr(VIP)),
        ("gratuitous ARP reply for our address", EXT, arp_reply(EVIL, ext4, [0xff; 6], ext4), v4_to_addr(ext4)),
        ("ARP request from our address", INT, arp_request(EVIL, int4, [10, 0, 2, 2]), v4_to_addr(int4)),
        ("ARP reply from the local address", INT, arp_reply(EVIL, laddr4, LB_INT, int4), v4_to_addr(laddr4)),
        ("solicited NA for the VIP", EXT, solicited_advert(EVIL, VIP6, LB_EXT, ext6), v6_to_addr(VIP6)),
        ("NA for our address", EXT, solicited_advert(EVIL, ext6, LB_EXT, ext6), v6_to_addr(ext6)),
        ("NA for the local address", INT, solicited_advert(EVIL, laddr6, LB_INT, LB_INT6), v6_to_addr(laddr6)),
        (
            "NA for the VIP with override, unsolicited",
            EXT,
            neighbor_advert(EVIL, stranger6, VIP6, EVIL),
            v6_to_addr(VIP6),
        ),
        ("NS from the VIP for our address", EXT, neighbor_solicit(EVIL, VIP6, ext6), v6_to_addr(VIP6)),
    ];
    for (what, iface, frame, own) in &cases {
        for workers in [1, 2] {
            let mut e = MemEngine::new(config(OWN), workers);
            let before = e.workers[0].table_sizes().neighbors;
            e.inject(*iface, frame, S);
            e.inject(*iface, frame, 2 * S);
            for (w, d) in e.workers.iter().enumerate() {
                assert_eq!(d.neighbor(*own), None, "{what}: worker {w} of {workers} learnt it");
            }
            assert_eq!(e.workers[0].table_sizes().neighbors, before, "{what}");
            assert_eq!(e.counters().arp_own_addr, 2, "{what}");
            // Nor answered (Linux's `arp_process` refuses a local source): a request for
            // our address from the VIP gets no reply.
            let c = e.counters();
            assert_eq!((c.arp_replies, c.nd_replies), (0, 0), "{what}: answered");
        }
    }
    // With a bad checksum, the claims are malformed drops: not counted as claims either.
    for (what, iface, mut frame, _) in cases.into_iter().filter(|c| c.2[12..14] == [0x86, 0xdd]) {
        frame[14 + 40 + 2] ^= 0x40;
        let mut e = MemEngine::new(config(OWN), 1);
        e.inject(iface, &frame, S);
        assert_eq!(e.counters().arp_own_addr, 0, "{what}, corrupted: counted");
        assert_eq!(common::seg::drops(&e), vec![("malformed", 1)], "{what}, corrupted");
    }
    // The same from a stranger is learnt.
    let mut e = MemEngine::new(config(OWN), 1);
    e.inject(EXT, &arp_reply(EVIL, [10, 0, 1, 7], LB_EXT, [10, 0, 1, 1]), S);
    e.inject(EXT, &solicited_advert(EVIL, stranger6, LB_EXT, ext6), S);
    assert_eq!(e.workers[0].neighbor(v4_to_addr([10, 0, 1, 7])), Some(EVIL));
    assert_eq!(e.workers[0].neighbor(v6_to_addr(stranger6)), Some(EVIL));
    assert_eq!(e.counters().arp_own_addr, 0);
    // And a stranger's requests for our addresses are answered.
    e.inject(EXT, &arp_request(EVIL, [10, 0, 1, 7], ext4), S);
    e.inject(EXT, &neighbor_solicit(EVIL, stranger6, ext6), S);
    let c = e.counters();
    assert_eq!((c.arp_replies, c.nd_replies), (1, 1));
}
