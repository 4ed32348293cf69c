//! The worker's sans-IO core driven directly, without any port: a fixture table of frames in
//! (time, interface, frame) and, for each, the verdict and the frames that come out of
//! `poll_transmit`; timers through `poll_timeout` / `handle_timeout`.

mod common;
use common::*;
use ferrovs_engine::daemon::{self, EngineView};
use ferrovs_engine::flow::tcpstate::TcpState;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::pipeline::driver::Driver;
use ferrovs_engine::pipeline::snapshot::Snapshot;
use ferrovs_engine::pipeline::worker::{Fabric, Verdict, Worker, EXPIRY_BOUND_NS, TICK_SHIFT};
use ferrovs_engine::port::memory::HeapBuf;
use ferrovs_engine::port::memory::MemQueue;
use ferrovs_engine::port::{HeapAlloc, Packet, PortCaps, PortCounters, PortQueue, TxResult, PORT_COUNTERS_EVERY_NS};
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};
use std::sync::atomic::Ordering::Relaxed;
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

[[service]]
name = "far"
vip = "10.0.1.100"
protocol = "tcp"
ports = [81]
forward = "nat"

# No [[neighbor]] for it: resolved by ARP.
[[service.real_server]]
address = "10.0.2.9"
"#;

const RS9: [u8; 4] = [10, 0, 2, 9];
const RS9_MAC: [u8; 6] = [2, 0, 0, 0, 2, 9];

/// Worker 0 of `workers`, its core alone: heap-buffer allocators and the ports' capabilities.
fn core(workers: usize) -> (Worker<HeapAlloc>, Arc<Fabric<HeapBuf>>) {
    let mut config = config(SERVICES);
    config.engine.workers = workers;
    let (macs, caps) = ports_of(&config, workers as u16);
    let snap = Arc::new(Snapshot::build(Arc::new(config), &macs));
    let fabric = Fabric::new(workers);
    let allocs = vec![HeapAlloc; caps.len()];
    (Worker::new(0, allocs, caps, snap, fabric.env(0)), fabric)
}

fn out(w: &mut Worker<HeapAlloc>) -> Vec<(usize, Vec<u8>)> {
    std::iter::from_fn(|| w.poll_transmit()).map(|(i, b)| (i, b.data().to_vec())).collect()
}

/// What one step's output must be.
enum Want {
    /// Exactly these frames.
    Frames(Vec<(usize, Vec<u8>)>),
    /// One frame on this interface, whose bytes pass this check.
    One(usize, fn(&[u8]) -> bool),
}

struct Step {
    what: &'static str,
    now: u64,
    iface: usize,
    frame: Vec<u8>,
    verdict: Verdict,
    out: Want,
}

fn run(w: &mut Worker<HeapAlloc>, steps: Vec<Step>) {
    for s in steps {
        let v = w.handle(s.now, s.iface, HeapBuf::from_slice(&s.frame));
        assert_eq!(v, s.verdict, "{}: verdict", s.what);
        let got = out(w);
        for (_, f) in &got {
            if f[12..14] != [0x08, 0x06] {
                verify_checksums(f).unwrap_or_else(|e| panic!("{}: bad checksum: {e}", s.what));
            }
        }
        match s.out {
            Want::Frames(want) => assert_eq!(got, want, "{}: frames out", s.what),
            Want::One(i, check) => {
                assert_eq!(got.len(), 1, "{}: one frame out, got {got:?}", s.what);
                assert_eq!(got[0].0, i, "{}: interface", s.what);
                assert!(check(&got[0].1), "{}: frame {:?}", s.what, got[0].1);
            }
        }
    }
}

/// `a` as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10..12].copy_from_slice(&[0xff, 0xff]);
    m[12..].copy_from_slice(&a);
    m
}

#[test]
fn fixtures() {
    let (mut w, fabric) = core(1);
    let mut arp_reply_ext = arp_reply(LB_EXT, [10, 0, 1, 1], CLIENT_MAC, CLIENT);
    arp_reply_ext.resize(60, 0);
    let steps = vec![
        Step {
            what: "ARP request for the interface address: the reply comes out of poll_transmit",
            now: S,
            iface: EXT,
            frame: arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 1]),
            verdict: Verdict::Tx(EXT),
            out: Want::One(EXT, |f| f[..6] == CLIENT_MAC && f[20..22] == [0, 2] && f[22..28] == LB_EXT),
        },
        Step {
            what: "NAT SYN: to rs1:8080, TTL-1, MACs rewritten",
            now: S,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b"")),
            verdict: Verdict::Tx(INT),
            out: Want::Frames(vec![(
                INT,
                set_ttl(with_macs(tcp4(CLIENT, 40000, RS1, 8080, TCP_SYN, 1000, 0, b""), LB_INT, RS1_MAC), 63),
            )]),
        },
        Step {
            what: "NAT reply: source rewritten to the VIP",
            now: S + 1000,
            iface: INT,
            frame: with_macs(tcp4(RS1, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b""), RS1_MAC, LB_INT),
            verdict: Verdict::Tx(EXT),
            out: Want::Frames(vec![(
                EXT,
                set_ttl(
                    with_macs(tcp4(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b""), LB_EXT, CLIENT_MAC),
                    63,
                ),
            )]),
        },
        Step {
            what: "established NAT: the client's data rewritten to rs1:8080",
            now: S + 2000,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, b"GET /")),
            verdict: Verdict::Tx(INT),
            out: Want::Frames(vec![(
                INT,
                set_ttl(with_macs(tcp4(CLIENT, 40000, RS1, 8080, TCP_ACK, 1001, 5001, b"GET /"), LB_INT, RS1_MAC), 63),
            )]),
        },
        Step {
            what: "IPv6 with the connection's addresses IPv4-mapped (the engine's own form of IPv4): malformed, a counted drop",
            now: S + 2500,
            iface: EXT,
            frame: from_client(tcp6(mapped(CLIENT), 40000, mapped(VIP), 80, TCP_ACK, 1006, 5001, b"GET /")),
            verdict: Verdict::Drop(DropReason::Malformed),
            out: Want::Frames(vec![]),
        },
        Step {
            what: "to a real server with no known MAC: parked, an ARP request goes out",
            now: S + 3000,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40001, VIP, 81, TCP_SYN, 7, 0, b"")),
            verdict: Verdict::Parked,
            out: Want::One(INT, |f| is_solicitation(f) && f[38..42] == RS9),
        },
        Step {
            what: "the ARP reply releases the parked SYN through poll_transmit",
            now: S + 4000,
            iface: INT,
            frame: arp_reply(RS9_MAC, RS9, LB_INT, [10, 0, 2, 1]),
            verdict: Verdict::Drop(DropReason::NotForUs),
            out: Want::Frames(vec![(
                INT,
                set_ttl(with_macs(tcp4(CLIENT, 40001, RS9, 81, TCP_SYN, 7, 0, b""), LB_INT, RS9_MAC), 63),
            )]),
        },
        Step {
            what: "a SYN to an address no service has: a counted drop, nothing out",
            now: S + 5000,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40002, [10, 0, 1, 77], 80, TCP_SYN, 1, 0, b"")),
            verdict: Verdict::Drop(DropReason::NoFlow),
            out: Want::Frames(vec![]),
        },
        Step {
            what: "an ACK to the VIP with no connection (an ACK flood's segment): a counted drop, nothing out",
            now: S + 5500,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40004, VIP, 80, TCP_ACK, 1, 1, b"")),
            verdict: Verdict::Drop(DropReason::NoFlow),
            out: Want::Frames(vec![]),
        },
        Step {
            what: "a truncated frame: a counted drop",
            now: S + 6000,
            iface: EXT,
            frame: from_client(tcp4(CLIENT, 40003, VIP, 80, TCP_SYN, 1, 0, b""))[..30].to_vec(),
            verdict: Verdict::Drop(DropReason::Malformed),
            out: Want::Frames(vec![]),
        },
        Step {
            what: "an interface the core has no port for",
            now: S + 7000,
            iface: 9,
            frame: arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 1]),
            verdict: Verdict::Drop(DropReason::NoRoute),
            out: Want::Frames(vec![]),
        },
    ];
    run(&mut w, steps);
    assert_eq!(w.flows.len(), 2);
    assert_eq!(fabric.counters[0].flows_expired.load(Relaxed), 0);
}

/// An ARP reply is padded to 60 bytes with zeros, whatever the buffer held past the
/// request's end (a 42-byte request, as veth delivers them, in a reused buffer): stale
/// bytes sent as padding would leak another packet's contents.
#[test]
fn arp_reply_padding_is_zeros_not_stale_bytes() {
    let (mut w, _) = core(1);
    let req = arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 1]);
    let reply = arp_reply(LB_EXT, [10, 0, 1, 1], CLIENT_MAC, CLIENT);
    assert_eq!(req.len(), 42);
    // Untagged (42 bytes) and with an 802.1Q tag (46), each in a buffer that held a longer
    // frame of 0xAA bytes.
    for (req, reply) in [(req.clone(), reply.clone()), (vlan(&req, 7), vlan(&reply, 7))] {
        let mut b = HeapBuf::from_slice(&[0xaa; 128]);
        b.fill(&req);
        assert_eq!(w.handle(S, EXT, b), Verdict::Tx(EXT));
        let o = out(&mut w);
        assert_eq!(o.len(), 1);
        let f = &o[0].1;
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..reply.len()], &reply[..]);
        assert!(f[reply.len()..].iter().all(|&x| x == 0), "padding: {:?}", &f[reply.len()..]);
    }
}

#[test]
fn timeouts_expire_connections() {
    let (mut w, fabric) = core(1);
    let before = w.next_timeout();
    let syn = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b""));
    assert_eq!(w.handle(S, EXT, HeapBuf::from_slice(&syn)), Verdict::Tx(INT));
    out(&mut w);
    assert_eq!(w.flows.len(), 1);
    // The cheap deadline after the work is the full one: the next timer tick.
    assert_eq!(w.timeout_after_work(before), w.poll_timeout());
    // An idle core with a connection: the next deadline is the next timer tick, not now.
    let t = w.poll_timeout().expect("a deadline");
    assert!(t > S && t <= S + (1 << TICK_SHIFT), "{t}");
    // Well before the SYN's timeout: still there, and the deadline moves on.
    w.handle_timeout(t);
    assert_eq!(w.flows.len(), 1);
    let t2 = w.poll_timeout().expect("a deadline");
    assert!(t2 > t, "{t2} after {t}");
    // An hour later: one late call (due at once), then the deadlines it returns.
    let mut now = S + 3600 * S;
    w.handle_timeout(now);
    let mut calls = 0;
    while !w.flows.is_empty() {
        let t = w.poll_timeout().expect("a deadline");
        assert!(t > now, "the deadline {t} is after the last call {now}");
        now = t;
        w.handle_timeout(now);
        calls += 1;
        assert!(now <= S + 3600 * S + EXPIRY_BOUND_NS, "still there after {calls} deadlines");
    }
    assert_eq!(fabric.counters[0].flows_expired.load(Relaxed), 1);
    // Nothing left but the scheduler's tick.
    assert_eq!(w.poll_timeout(), Some(((now >> 30) + 1) << 30));
    assert!(out(&mut w).is_empty());
}

/// Connections created over time expire no earlier than their expiry and leave the table
/// within `EXPIRY_BOUND_NS` of it, with `handle_timeout` called only at the deadlines
/// `poll_timeout` returns (and packets in between), which are never the last call's time.
#[test]
fn expired_connections_leave_within_the_bound() {
    let (mut w, fabric) = core(1);
    let tick = 1u64 << TICK_SHIFT;
    let syn_recv = w.snapshot().timeouts[TcpState::SynRecv as usize];
    assert!(syn_recv > 0);
    // 60 connections, one every 47 ms (spread over 2.8 s, many ticks and table positions).
    let n = 60u64;
    let born: Vec<u64> = (0..n).map(|k| S + k * 47_000_000).collect();
    let expiry: Vec<u64> = born.iter().map(|b| b + syn_recv).collect();
    let mut next = 0usize;
    let mut now = S;
    let mut calls = 0u64;
    loop {
        let deadline = w.poll_timeout();
        let created = next as u64;
        let gone = |at: u64| expiry[..next].iter().filter(|&&e| at >= e + EXPIRY_BOUND_NS).count() as u64;
        let expired = |at: u64| expiry[..next].iter().filter(|&&e| at + tick >= e).count() as u64;
        if next < born.len() && deadline.is_none_or(|d| born[next] < d) {
            now = born[next];
            let sport = 30000 + next as u16;
            let syn = from_client(tcp4(CLIENT, sport, VIP, 80, TCP_SYN, 1000, 0, b""));
            assert_eq!(w.handle(now, EXT, HeapBuf::from_slice(&syn)), Verdict::Tx(INT));
            out(&mut w);
            next += 1;
            continue;
        }
        let Some(d) = deadline else { break };
        assert!(d > now, "an idle core's deadline {d} is after the last call {now}");
        now = d;
        w.handle_timeout(now);
        calls += 1;
        let live = w.flows.len() as u64;
        assert!(live <= created - gone(now), "at {now}: {live} live, {} past expiry + bound", gone(now));
        assert!(live >= created - expired(now), "at {now}: {live} live, removed before their expiry");
        if next == born.len() && live == 0 {
            break;
        }
        assert!(now < expiry[n as usize - 1] + 2 * EXPIRY_BOUND_NS, "no progress");
    }
    assert_eq!(fabric.counters[0].flows_expired.load(Relaxed), n);
    // Deadlines about a tick apart: from the first connection to the last one's removal.
    let span = (now - S) / tick;
    assert!(calls <= span + span / 8 + 64, "{calls} calls over {span} ticks");
}

/// The driver delivers its core's events: the per-service counters at construction, a
/// neighbour one worker learns into the other's control ring, which that worker applies.
#[test]
fn driver_routes_events_between_workers() {
    let config = {
        let mut c = config(SERVICES);
        c.engine.workers = 2;
        c
    };
    let (macs, caps) = ports_of(&config, 2);
    let snap = Arc::new(Snapshot::build(Arc::new(config), &macs));
    let fabric = Fabric::new(2);
    let queues = || caps.iter().map(|c| MemQueue::new(c.clone())).collect::<Vec<_>>();
    let mut d0 = Driver::new(0, queues(), snap.clone(), fabric.clone());
    let mut d1 = Driver::new(1, queues(), snap.clone(), fabric.clone());
    for id in 0..2 {
        assert_eq!(fabric.services[id].lock().unwrap().len(), snap.services.len(), "worker {id}'s service counters");
    }
    let n0 = d0.table_sizes().neighbors;
    let n1 = d1.table_sizes().neighbors;
    d0.queues_mut()[INT].inject(&arp_reply(RS9_MAC, RS9, LB_INT, [10, 0, 2, 1]));
    d0.poll(S);
    assert_eq!(d0.table_sizes().neighbors, n0 + 1, "worker 0 learnt RS9");
    assert!(fabric.ctrl[0].is_empty(), "nothing for the worker that learnt it");
    assert_eq!(fabric.ctrl[1].len(), 1, "the neighbour for worker 1");
    assert_eq!(d1.table_sizes().neighbors, n1);
    d1.poll(S + 1000);
    assert_eq!(d1.table_sizes().neighbors, n1 + 1, "worker 1 learnt RS9 from worker 0");
    assert!(fabric.ctrl[1].is_empty());
    // The same neighbour again changes nothing: no event.
    d0.queues_mut()[INT].inject(&arp_reply(RS9_MAC, RS9, LB_INT, [10, 0, 2, 1]));
    d0.poll(S + 2000);
    assert!(fabric.ctrl[1].is_empty());
    // Idle drivers with no connections wait for the scheduler tick, not for now.
    for d in [&d0, &d1] {
        let t = d.timeout().expect("the scheduler tick");
        assert!(t > S + 2000, "{t}");
    }
}

#[test]
fn parked_packets_time_out() {
    let (mut w, fabric) = core(1);
    let syn = from_client(tcp4(CLIENT, 40001, VIP, 81, TCP_SYN, 7, 0, b""));
    let before = w.next_timeout();
    assert_eq!(w.handle(S, EXT, HeapBuf::from_slice(&syn)), Verdict::Parked);
    assert_eq!(out(&mut w).len(), 1, "the ARP request");
    // The cheap deadline after the work sees the parked packet.
    assert_eq!(w.timeout_after_work(before), w.poll_timeout());
    // The parked packet's deadline is among the timers.
    let t = w.poll_timeout().expect("a deadline");
    assert!(t <= S + 3 * S, "{t}");
    w.handle_timeout(S + 10 * S);
    assert_eq!(w.pending_len(), 0);
    assert_eq!(fabric.counters[0].drops_of(DropReason::NoNeighbor), 1);
    // The ARP reply comes too late: nothing released.
    w.handle(S + 11 * S, INT, HeapBuf::from_slice(&arp_reply(RS9_MAC, RS9, LB_INT, [10, 0, 2, 1])));
    assert!(out(&mut w).is_empty());
}

#[test]
fn packets_of_another_worker_come_out_of_poll_handoff() {
    let (mut w, fabric) = core(2);
    let mut handed = 0;
    for c in 2..40u8 {
        let client = [10, 0, 1, c];
        let syn = with_macs(tcp4(client, 40000, VIP, 80, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
        match w.handle(S, EXT, HeapBuf::from_slice(&syn)) {
            Verdict::Handoff(owner) => {
                assert_eq!(owner, 1);
                let (o, i, b) = w.poll_handoff().expect("the handed packet");
                assert_eq!((o, i as usize, b.data()), (1, EXT, &syn[..]));
                handed += 1;
            }
            v => assert!(matches!(v, Verdict::Tx(INT) | Verdict::Parked), "{v:?}"),
        }
        out(&mut w);
    }
    assert!(handed > 0 && handed < 38, "some clients belong to worker 1: {handed}");
    assert_eq!(fabric.counters[0].handoff_out.load(Relaxed), handed);
}

/// A memory queue that counts what it receives and transmits, as an AF_PACKET queue does
/// (its own counters, [`PortQueue::counters`]), with `dropped` standing for the kernel's.
struct CountingQueue {
    q: MemQueue,
    c: PortCounters,
    asked: u32,
}

impl PortQueue for CountingQueue {
    type Buf = HeapBuf;
    type Alloc = HeapAlloc;
    fn rx_burst(&mut self, out: &mut Vec<HeapBuf>) -> usize {
        let before = out.len();
        let n = self.q.rx_burst(out);
        self.c.rx_packets += n as u64;
        self.c.rx_bytes += out[before..].iter().map(|b| b.len() as u64).sum::<u64>();
        n
    }
    fn tx_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let r = self.q.tx_burst(pkts);
        self.c.tx_packets += r.sent as u64;
        self.c.tx_bytes += r.bytes;
        r
    }
    fn alloc(&mut self) -> Option<HeapBuf> {
        self.q.alloc()
    }
    fn allocator(&self) -> HeapAlloc {
        self.q.allocator()
    }
    fn caps(&self) -> &PortCaps {
        self.q.caps()
    }
    fn counters(&mut self) -> Option<PortCounters> {
        self.asked += 1;
        Some(self.c)
    }
}

/// Each driver publishes its queues' own counters when it starts polling and then about once
/// a second (not per poll: an AF_PACKET queue makes a system call for them), and the control
/// plane's report of a port sums its queues over the workers.
#[test]
fn drivers_publish_their_queues_own_counters_once_a_second() {
    let config = {
        let mut c = config(SERVICES);
        c.engine.workers = 2;
        c
    };
    let (macs, caps) = ports_of(&config, 2);
    let config = Arc::new(config);
    let snap = Arc::new(Snapshot::build(config.clone(), &macs));
    let fabric = Fabric::new(2);
    let queues = || {
        caps.iter()
            .map(|c| CountingQueue { q: MemQueue::new(c.clone()), c: PortCounters::default(), asked: 0 })
            .collect::<Vec<_>>()
    };
    let mut d0 = Driver::new(0, queues(), snap.clone(), fabric.clone());
    let mut d1 = Driver::new(1, queues(), snap.clone(), fabric.clone());
    let view: Arc<dyn EngineView> = fabric.clone();
    let reports = daemon::queue_reports(view, &config, "counting");
    assert!(reports().iter().all(|p| p.queues.is_empty()), "nothing published before the first poll");
    // An ARP request for the balancer's internal address on worker 0 (answered), nothing
    // on worker 1.
    let arp = arp_request([2, 0, 0, 0, 2, 2], [10, 0, 2, 2], [10, 0, 2, 1]);
    d0.queues_mut()[INT].q.inject(&arp);
    d0.poll(S);
    d1.poll(S);
    let r = reports();
    assert_eq!(r.len(), config.interfaces.len());
    assert_eq!(r[INT].name, config.interfaces[INT].name);
    assert_eq!((r[INT].device.as_str(), r[INT].driver.as_str()), (config.interfaces[INT].device.as_str(), "counting"));
    assert_eq!(r[INT].queues.len(), 2, "one queue per worker");
    assert_eq!((r[INT].counters.rx_packets, r[INT].counters.tx_packets), (1, 1), "{:?}", r[INT]);
    assert_eq!(r[INT].counters.rx_bytes, arp.len() as u64);
    assert_eq!(r[EXT].counters, PortCounters::default());
    // Within the second: the counters are not asked for again, so not republished.
    for k in 1..100u64 {
        d0.queues_mut()[EXT].q.inject(&arp);
        d0.poll(S + k * 1_000_000);
    }
    assert_eq!(d0.queues_mut()[EXT].asked, 1, "asked once in the first second");
    assert_eq!(reports()[EXT].counters.rx_packets, 0);
    d0.poll(S + PORT_COUNTERS_EVERY_NS);
    assert_eq!(d0.queues_mut()[EXT].asked, 2);
    assert_eq!(reports()[EXT].counters.rx_packets, 99, "published a second later");
    assert_eq!(reports()[INT].counters.rx_packets, 1, "worker 1's queue still counted");
}
