//! The express lane (`pipeline::worker::express`) against the general path: two cores with
//! the same configuration, one with the lane and one without, get the same random traffic
//! in the same bursts at the same times (NAT, full NAT, DR, TCP and UDP, both directions,
//! every TCP flag the lane must decline, TTLs running out, foreign and broadcast MACs,
//! VLAN tags, an unresolved next hop, expiry, corrupted header bytes). The frames out,
//! the worker's counters, the service counters and the connection list must be identical.

mod common;
use common::*;
use ferrovs_engine::pipeline::snapshot::Snapshot;
use ferrovs_engine::pipeline::worker::{CoreEnv, Worker};
use ferrovs_engine::port::memory::HeapBuf;
use ferrovs_engine::port::{HeapAlloc, Packet};
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{self, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service.real_server]]
address = "10.0.2.3"
port = 8080

[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "full"
vip = "10.0.1.100"
protocol = "tcp"
ports = [81]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"
port = 8081

[[service]]
name = "direct"
vip = "10.0.1.101"
protocol = "tcp"
ports = [80]
forward = "dr"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "ftp"
vip = "10.0.1.100"
protocol = "tcp"
ports = [21]
forward = "nat"
ftp = true

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "fd00:2::2"
port = 8080

[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
forward = "nat"

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "full6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [81]
forward = "fnat"
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"
port = 8081

[[service]]
name = "direct6"
vip = "fd00:1::101"
protocol = "tcp"
ports = [80]
forward = "dr"

[[service.real_server]]
address = "fd00:2::2"
"#;

/// A client without a static neighbour: its replies wait for ARP / neighbour discovery.
const FAR_CLIENT: [u8; 4] = [10, 0, 1, 50];
const FAR_CLIENT6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50];
const FAR_MAC: [u8; 6] = [2, 0, 0, 0, 1, 50];
const VIP6_DR: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
const LB6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn core(express: bool) -> Worker<HeapAlloc> {
    let config = config(SERVICES);
    let (macs, caps) = ports_of(&config, 1);
    let snap = Arc::new(Snapshot::build(Arc::new(config), &macs));
    let allocs = vec![HeapAlloc; caps.len()];
    let mut w = Worker::new(0, allocs, caps, snap, CoreEnv::standalone(1));
    w.set_express(express);
    w
}

/// One step of traffic, turned into a frame when it runs (replies need what the real
/// server was told: the earlier output).
#[derive(Clone, Debug)]
struct Op {
    kind: u8,
    client: u8,
    flags: u8,
    ttl: u8,
    mac: u8,
    vlan: bool,
    /// IPv6 (the `*6` services) instead of IPv4.
    v6: bool,
    corrupt: Option<(u8, u8)>,
    advance: u8,
    flush: bool,
    /// The TCP sequence number: one of [`SEQS`] (the same connection's segments in and out
    /// of its window, `Conn::client_seq_ok`).
    seq: u8,
}

/// Sequence numbers a segment carries, in units of 64 KiB: 0x1234, 108 on (in the window),
/// 236 on (outside the first's window, inside the second's), and 0 (no mark known).
const SEQS: [u32; 4] = [0x1234_0007, 0x12a0_0007, 0x1320_0007, 7];

fn op() -> impl Strategy<Value = Op> {
    (
        (0u8..12, 0u8..6),
        prop_oneof![
            Just(TCP_ACK),
            Just(TCP_ACK),
            Just(TCP_PSH | TCP_ACK),
            Just(TCP_SYN),
            Just(TCP_SYN | TCP_ACK),
            Just(TCP_FIN | TCP_ACK),
            Just(TCP_RST),
            Just(0u8),
        ],
        prop_oneof![8 => Just(64u8), 1 => Just(1u8), 1 => Just(0u8)],
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        proptest::bool::weighted(0.1),
        proptest::bool::ANY,
        proptest::option::weighted(0.08, (14u8..78, any::<u8>())),
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        (proptest::bool::weighted(0.3), prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)]),
    )
        .prop_map(|((kind, client), flags, ttl, mac, vlan, v6, corrupt, advance, (flush, seq))| Op {
            kind,
            client,
            flags,
            ttl,
            mac,
            vlan,
            v6,
            corrupt,
            advance,
            flush,
            seq,
        })
}

/// An address of either family (4 or 16 bytes).
type A = Vec<u8>;
/// (source, sport, destination, dport) of a packet towards a real server.
type Toward = (A, u16, A, u16);

/// What the real servers saw: per family and client port (plain NAT, DR, UDP) and, for
/// full NAT, per family and flow in order of appearance (the client port is not in those
/// frames), the tuple of the packet towards the server, so a reply swaps them.
#[derive(Default)]
struct Seen {
    by_port: HashMap<(bool, u16), Toward>,
    fnat: [Vec<Toward>; 2],
}

fn tcp_any(s: &[u8], sp: u16, d: &[u8], dp: u16, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    match (<[u8; 4]>::try_from(s), <[u8; 4]>::try_from(d)) {
        (Ok(s), Ok(d)) => tcp4(s, sp, d, dp, flags, seq, 9, payload),
        _ => tcp6(s.try_into().unwrap(), sp, d.try_into().unwrap(), dp, flags, seq, 9, payload),
    }
}

fn udp_any(s: &[u8], sp: u16, d: &[u8], dp: u16, payload: &[u8]) -> Vec<u8> {
    match (<[u8; 4]>::try_from(s), <[u8; 4]>::try_from(d)) {
        (Ok(s), Ok(d)) => udp4(s, sp, d, dp, payload),
        _ => udp6(s.try_into().unwrap(), sp, d.try_into().unwrap(), dp, payload),
    }
}

fn frame(o: &Op, seen: &Seen) -> (usize, Vec<u8>) {
    let (near, far, vip, vip_dr, rs): (A, A, A, A, A) = if o.v6 {
        (C6.into(), FAR_CLIENT6.into(), VIP6.into(), VIP6_DR.into(), RS6.into())
    } else {
        (CLIENT.into(), FAR_CLIENT.into(), VIP.into(), VIP_DR.into(), RS1.into())
    };
    let (caddr, cmac) = if o.client == 5 { (far, FAR_MAC) } else { (near, CLIENT_MAC) };
    let cport = 40000 + o.client as u16;
    let payload: &[u8] = if o.flags & TCP_PSH != 0 { b"GET / HTTP/1.0\r\n\r\n" } else { b"" };
    let reply = |to: Option<Toward>, udp: bool| -> (usize, Vec<u8>) {
        let (s, sp, d, dp) = to.unwrap_or((caddr.clone(), cport, rs.clone(), 8080));
        let f = if udp {
            udp_any(&d, dp, &s, sp, b"answer")
        } else {
            tcp_any(&d, dp, &s, sp, o.flags, SEQS[o.seq as usize], payload)
        };
        (INT, with_macs(f, RS1_MAC, LB_INT))
    };
    let fam = &seen.fnat[o.v6 as usize];
    let fnat = (!fam.is_empty()).then(|| fam[o.client as usize % fam.len()].clone());
    let client_tcp = |port: u16, to: &A, dport: u16| {
        (EXT, with_macs(tcp_any(&caddr, port, to, dport, o.flags, SEQS[o.seq as usize], payload), cmac, LB_EXT))
    };
    let (iface, f) = match o.kind {
        0..=3 => client_tcp(cport, &vip, 80),
        4 | 5 => reply(seen.by_port.get(&(o.v6, cport)).cloned(), false),
        6 => (EXT, with_macs(udp_any(&caddr, cport, &vip, 53, b"query"), cmac, LB_EXT)),
        7 => reply(seen.by_port.get(&(o.v6, cport)).cloned(), true),
        8 => client_tcp(cport + 2000, &vip, 81),
        9 => reply(fnat, false),
        10 => client_tcp(cport + 3000, &vip_dr, 80),
        _ if o.v6 => (EXT, with_macs(neighbor_advert(FAR_MAC, FAR_CLIENT6, LB6, FAR_MAC), FAR_MAC, LB_EXT)),
        _ => (EXT, with_macs(arp_reply(FAR_MAC, FAR_CLIENT, LB_EXT, [10, 0, 1, 1]), FAR_MAC, LB_EXT)),
    };
    let mut f = if o.kind < 11 { set_ttl(f, o.ttl) } else { f };
    match o.mac {
        1 => f[..6].copy_from_slice(&[0xff; 6]),
        2 => f[..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]),
        _ => {}
    }
    if o.vlan {
        f = vlan(&f, 7);
    }
    if let Some((at, v)) = o.corrupt {
        if let Some(b) = f.get_mut(at as usize) {
            *b = v;
        }
    }
    (iface, f)
}

/// Learn, from frames going to the real servers, which addresses a reply must carry.
fn learn(seen: &mut Seen, out: &[(usize, Vec<u8>)]) {
    for (i, f) in out {
        let Ok(p) = parse::parse(f) else { continue };
        if *i != INT || p.arp || p.l3 + if p.v6 { 40 } else { 20 } > f.len() {
            continue;
        }
        let bytes = |a| -> A {
            if p.v6 {
                parse::addr_v6_bytes(a).into()
            } else {
                parse::addr_v4_bytes(a).into()
            }
        };
        let t = (bytes(p.src), p.sport, bytes(p.dst), p.dport);
        if p.dport == 8081 {
            let fam = &mut seen.fnat[p.v6 as usize];
            if !fam.contains(&t) {
                fam.push(t);
            }
        } else {
            seen.by_port.insert((p.v6, p.sport), t);
        }
    }
}

fn drain(w: &mut Worker<HeapAlloc>) -> Vec<(usize, Vec<u8>)> {
    std::iter::from_fn(|| w.poll_transmit()).map(|(i, b)| (i, b.data().to_vec())).collect()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut fast, mut slow) = (core(true), core(false));
    let mut seen = Seen::default();
    let mut now = S;
    let mut burst: Vec<(usize, Vec<u8>)> = Vec::new();
    for (k, o) in ops.iter().enumerate() {
        burst.push(frame(o, &seen));
        now += [0, 1_000_000, 5 * S, 1000 * S][o.advance as usize];
        if !(o.flush || k + 1 == ops.len()) {
            continue;
        }
        // One burst per interface run, as a driver hands them over.
        let mut i = 0;
        while i < burst.len() {
            let iface = burst[i].0;
            let j = burst[i..].iter().position(|b| b.0 != iface).map_or(burst.len(), |n| i + n);
            for w in [&mut fast, &mut slow] {
                let mut rx: Vec<HeapBuf> = burst[i..j].iter().map(|b| HeapBuf::from_slice(&b.1)).collect();
                w.handle_burst(now, iface, &mut rx);
            }
            i = j;
        }
        burst.clear();
        let (a, b) = (drain(&mut fast), drain(&mut slow));
        prop_assert_eq!(&a, &b, "frames out after step {}", k);
        learn(&mut seen, &a);
        prop_assert_eq!(fast.counters().snapshot(), slow.counters().snapshot(), "counters after step {}", k);
        fast.handle_timeout(now);
        slow.handle_timeout(now);
    }
    fast.flush_svc_counters();
    slow.flush_svc_counters();
    prop_assert_eq!(fast.list_conns(), slow.list_conns());
    for (a, b) in fast.service_counters().iter().zip(slow.service_counters().iter()) {
        let n = |c: &ferrovs_engine::pipeline::counters::ServiceCounters| {
            let v = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
            let dests: Vec<[u64; 5]> = c
                .dests
                .iter()
                .map(|d| [v(&d.conns), v(&d.in_packets), v(&d.in_bytes), v(&d.out_packets), v(&d.out_bytes)])
                .collect();
            (v(&c.conns), v(&c.in_packets), v(&c.in_bytes), v(&c.out_packets), v(&c.out_bytes), dests)
        };
        prop_assert_eq!(n(a), n(b));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn express_matches_general(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops)?;
    }
}

/// The lane is taken at all: the established NAT packets of a plain connection leave in
/// the same frames whether the lane is on or off, and a long run of them (no SYN, FIN or
/// RST) is the case the lane exists for.
#[test]
fn established_traffic_is_identical() {
    for v6 in [false, true] {
        established_run(v6);
    }
}

fn established_run(v6: bool) {
    let mut ops = vec![Op {
        kind: 0,
        client: 0,
        flags: TCP_SYN,
        ttl: 64,
        mac: 0,
        vlan: false,
        v6,
        corrupt: None,
        advance: 0,
        flush: true,
        seq: 0,
    }];
    for k in 0..64u8 {
        let reply = k % 2 == 1;
        ops.push(Op {
            kind: if reply { 4 } else { 1 },
            flags: if k == 1 { TCP_SYN | TCP_ACK } else { TCP_ACK },
            flush: k % 8 == 7,
            ..ops[0].clone()
        });
    }
    // The client's data 108 units of 64 KiB on (the lane moves the sequence mark as the
    // general path does), then its reset 128 further: in the window of the moved mark only.
    for (flags, seq) in [(TCP_PSH | TCP_ACK, 1), (TCP_RST, 2)] {
        ops.push(Op { kind: 1, flags, seq, flush: true, ..ops[0].clone() });
    }
    run(&ops).unwrap();
}
