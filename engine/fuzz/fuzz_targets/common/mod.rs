//! Shared by the engine's fuzz targets: one in-memory engine per thread,
//! built once and reset between inputs, and the packet-conservation ledger.
#![allow(dead_code)]

use ferrovs_engine::pipeline::counters::{DropReason, WorkerCounters};
use ferrovs_engine::pipeline::snapshot::Snapshot;
use ferrovs_engine::pipeline::worker::{Fabric, Verdict, Worker};
use ferrovs_engine::port::memory::{default_mac, HeapBuf};
use ferrovs_engine::port::{HeapAlloc, Packet, PortCaps};
use ferrovs_engine::tools::replay::{rx_worker, MemEngine};
use ferrovs_engine::tools::testpkt::is_solicitation;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The queue of `ext`'s exception path to the kernel (after the two interfaces).
pub const KERNEL_QUEUE: usize = 2;

/// The two-port lab every target uses (client side `ext` with an exception path to
/// the kernel, queue 2; real-server side `int`; IPv4 and IPv6), with a flow table of `flows` per worker; the
/// target's neighbours and services follow.
pub fn topology(flows: usize) -> String {
    format!(
        r#"
[engine]
backend = "memory"
flow_table_size = {flows}

[[interface]]
name = "ext"
device = "mem0"
kernel_port = "kni0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[interface]]
name = "int"
device = "mem1"
mac = "02:00:00:00:02:01"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]
"#
    )
}

/// What the ledger needs of an engine: in-memory ports with drivers ([`MemEngine`]) or the
/// workers' cores alone ([`Cores`]).
pub trait Rig {
    /// Receive `frame` on `iface` at `now`, run until idle; what was transmitted.
    fn inject(&mut self, iface: usize, frame: &[u8], now: u64) -> Vec<(usize, Vec<u8>)>;
    fn counters(&self) -> &[Arc<WorkerCounters>];
    /// Packets held for later.
    fn parked(&self) -> usize;
}

impl Rig for MemEngine {
    fn inject(&mut self, iface: usize, frame: &[u8], now: u64) -> Vec<(usize, Vec<u8>)> {
        MemEngine::inject(self, iface, frame, now)
    }
    fn counters(&self) -> &[Arc<WorkerCounters>] {
        &self.fabric.counters
    }
    fn parked(&self) -> usize {
        MemEngine::parked(self)
    }
}

/// The workers' sans-IO cores driven directly, without ports: this harness is their driver
/// (it routes handoffs, control messages and the cores' events between them, the neighbours
/// one learns into the others' control rings included, runs their timers when
/// `poll_timeout` says and counts what they transmit, as `pipeline::driver::Driver` does).
pub struct Cores {
    pub cores: Vec<Worker<HeapAlloc>>,
    pub fabric: Arc<Fabric<HeapBuf>>,
}

impl Cores {
    pub fn new(config: ferrovs_cfg::Config, workers: usize) -> Cores {
        let mut config = config;
        config.engine.workers = workers;
        let macs: Vec<[u8; 6]> =
            config.interfaces.iter().enumerate().map(|(i, itf)| itf.mac.unwrap_or(default_mac(i))).collect();
        let config = Arc::new(config);
        let snap = Arc::new(Snapshot::build(config.clone(), &macs));
        let fabric = Fabric::new(workers);
        fabric.set_placement(&snap);
        // Kernel ports after the interfaces, as the backends open them.
        let caps: Vec<PortCaps> = ferrovs_engine::pipeline::snapshot::port_list(&config)
            .into_iter()
            .map(|(name, i)| PortCaps { name, mac: macs[i], queues: workers as u16, mtu: 1500 })
            .collect();
        let mut cores: Vec<Worker<HeapAlloc>> = (0..workers)
            .map(|w| Worker::new(w, vec![HeapAlloc; caps.len()], caps.clone(), snap.clone(), fabric.env(w)))
            .collect();
        for (k, c) in cores.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                fabric.deliver(k, e);
            }
        }
        Cores { cores, fabric }
    }

    /// Back to the state of `new` (see `Worker::reset`).
    pub fn reset(&mut self) {
        for q in self.fabric.ctrl.iter() {
            while q.pop().is_some() {}
        }
        for c in self.cores.iter_mut() {
            while c.poll_transmit().is_some() {}
            while c.poll_handoff().is_some() {}
            c.reset();
        }
        for (k, c) in self.cores.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                self.fabric.deliver(k, e);
            }
        }
        for q in self.fabric.ctrl.iter() {
            while q.pop().is_some() {}
        }
        while self.fabric.sync_tx.pop().is_some() {}
    }
}

impl Rig for Cores {
    fn inject(&mut self, iface: usize, frame: &[u8], now: u64) -> Vec<(usize, Vec<u8>)> {
        let w = rx_worker(frame, self.cores.len());
        let v = self.cores[w].handle(now, iface, HeapBuf::from_slice(frame));
        if let Verdict::Tx(i) = v {
            assert!(!self.cores[w].transmit_queues()[i].is_empty(), "verdict {v:?} with nothing to send there");
        }
        let mut out = Vec::new();
        loop {
            let mut work = 0;
            for k in 0..self.cores.len() {
                // Events (a neighbour learnt: into the other cores' control rings).
                while let Some(e) = self.cores[k].poll_event() {
                    work += 1;
                    self.fabric.deliver(k, e);
                }
                while let Some(m) = self.fabric.ctrl[k].pop() {
                    work += 1;
                    self.cores[k].handle_ctrl(now, m);
                }
                while let Some((owner, i, b)) = self.cores[k].poll_handoff() {
                    work += 1;
                    self.cores[owner].handle_handed(now, i as usize, b);
                }
            }
            if work == 0 {
                break;
            }
        }
        for (k, c) in self.cores.iter_mut().enumerate() {
            if c.poll_timeout().is_some_and(|d| d <= now) {
                c.handle_timeout(now);
            }
            while let Some(e) = c.poll_event() {
                self.fabric.deliver(k, e);
            }
            c.flush_svc_counters();
            while let Some((i, b)) = c.poll_transmit() {
                self.fabric.counters[k].tx_packets.fetch_add(1, Relaxed);
                out.push((i, b.data().to_vec()));
            }
        }
        out
    }
    fn counters(&self) -> &[Arc<WorkerCounters>] {
        &self.fabric.counters
    }
    fn parked(&self) -> usize {
        self.cores.iter().map(|c| c.held_packets()).sum()
    }
}

/// Run `f` on this thread's engine (config `topology(flows)` + `rest`),
/// reset first (built on first use: the config is parsed and the snapshot
/// compiled only once).
pub fn with_engine<R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<MemEngine>>>,
    flows: usize,
    rest: &str,
    workers: usize,
    f: impl FnOnce(&mut MemEngine) -> R,
) -> R {
    with_cached(cell, flows, rest, workers, MemEngine::new, MemEngine::reset, f)
}

/// [`with_engine`] for the cores alone ([`Cores`]).
pub fn with_cores<R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<Cores>>>,
    flows: usize,
    rest: &str,
    workers: usize,
    f: impl FnOnce(&mut Cores) -> R,
) -> R {
    with_cached(cell, flows, rest, workers, Cores::new, Cores::reset, f)
}

/// This thread's `T` in `cell`, built by `build` from the config on first use and `reset`
/// before each use.
fn with_cached<T, R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    flows: usize,
    rest: &str,
    workers: usize,
    build: fn(ferrovs_cfg::Config, usize) -> T,
    reset: fn(&mut T),
    f: impl FnOnce(&mut T) -> R,
) -> R {
    cell.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_or_insert_with(|| {
            let config = topology(flows) + rest;
            let cfg = ferrovs_cfg::Config::from_str(&config, "fuzz.toml").expect("fuzz config");
            build(cfg, workers)
        });
        reset(e);
        f(e)
    })
}

/// Every received packet must end in exactly one place: transmitted (as
/// itself, possibly rewritten: forwarded, or turned into an ARP/ND/echo
/// reply or a translated ICMP error), counted under exactly one drop
/// reason (`alg_hold` for FTP segments the gateway keeps), or held for
/// later (`MemEngine::parked`: waiting for a neighbour, a first fragment or
/// a SYN-proxied handshake). Handoffs to another worker are transparent
/// (the owner does one of the above). The engine's own packets:
/// solicitations (always sent) and the extra pieces of a rewritten FTP
/// segment split to fit the MTU (`split_segments`, each then accounted like
/// a received packet).
#[derive(Default, Debug)]
pub struct Ledger {
    /// Frames injected.
    pub fed: u64,
    /// Frames transmitted that stem from a received frame.
    pub out: u64,
    /// ARP requests / neighbour solicitations the engine built.
    pub solicits: u64,
}

impl Ledger {
    /// Inject `frame` on `iface` at `now`, account for the output, check
    /// conservation; returns the output.
    pub fn inject(&mut self, e: &mut impl Rig, iface: usize, frame: &[u8], now: u64) -> Vec<(usize, Vec<u8>)> {
        let out = e.inject(iface, frame, now);
        self.fed += 1;
        for (i, f) in &out {
            // A solicitation passed to the kernel is someone else's, not one the engine built.
            if *i != KERNEL_QUEUE && is_solicitation(f) {
                self.solicits += 1;
            } else {
                self.out += 1;
            }
        }
        self.check(e, frame);
        out
    }

    /// The conservation equation on the engine's counters.
    pub fn check(&self, e: &impl Rig, last: &[u8]) {
        let sum = |f: &dyn Fn(&ferrovs_engine::pipeline::counters::WorkerCounters) -> u64| -> u64 {
            e.counters().iter().map(|c| f(c)).sum()
        };
        let drops: u64 = sum(&|c| c.drops.iter().map(|d| d.load(Relaxed)).sum());
        let parked = e.parked() as u64;
        let rx = sum(&|c| c.rx_packets.load(Relaxed));
        let tx = sum(&|c| c.tx_packets.load(Relaxed));
        let h_out = sum(&|c| c.handoff_out.load(Relaxed));
        let h_in = sum(&|c| c.handoff_in.load(Relaxed));
        let h_full = sum(&|c| c.drops_of(DropReason::HandoffFull));
        let split = sum(&|c| c.split_segments.load(Relaxed));
        let by_reason: Vec<(&str, u64)> =
            DropReason::ALL.iter().map(|r| (r.label(), sum(&|c| c.drops_of(*r)))).filter(|(_, n)| *n > 0).collect();
        let ctx = || {
            format!("{self:?} split={split} drops={drops} {by_reason:?} held={parked} rx={rx} tx={tx} last {last:02x?}")
        };
        assert_eq!(rx, self.fed, "rx_packets counts every injected frame: {}", ctx());
        assert_eq!(tx, self.out + self.solicits, "tx_packets counts every transmitted frame: {}", ctx());
        assert_eq!(h_in + h_full, h_out, "every handoff arrives or is a handoff_full drop: {}", ctx());
        assert_eq!(self.fed + split, self.out + drops + parked, "packet conservation: {}", ctx());
    }
}
