//! Offline, deterministic replay: packets from pcap files are received on
//! in-memory ports, every worker is stepped in turn on one thread with the
//! pcap timestamps as the clock, and everything transmitted is written out.
//!
//! Determinism: the receiving worker of a packet is a fixed hash of its raw
//! 5-tuple (like NIC RSS, deliberately *not* the ownership hash, so
//! cross-worker handoff is exercised); after each input packet all workers
//! are polled until no work is left, and output is collected in worker,
//! then interface order.

use crate::pipeline::driver::Driver;
use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::worker::Fabric;
use crate::port::memory::{default_mac, HeapBuf, MemQueue};
use crate::port::pcap::{PcapReader, PcapWriter};
use crate::port::{Packet, PortCaps};
use ferrovs_cfg::Config;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// An in-memory engine: the workers of a config on in-memory ports, driven
/// by the caller. Used by replay, tests and benches.
pub struct MemEngine {
    pub workers: Vec<Driver<MemQueue>>,
    pub fabric: Arc<Fabric<HeapBuf>>,
    pub snapshot: Arc<Snapshot>,
    /// The host's kernel addresses on the ports (kept for reloads).
    pub host: Vec<crate::wire::parse::Addr>,
}

impl MemEngine {
    pub fn new(config: Config, workers: usize) -> MemEngine {
        Self::with_host(config, workers, &[])
    }

    /// [`MemEngine::new`] with addresses the host's kernel has on the ports (as an AF_PACKET
    /// port's device has, see [`crate::port::afpacket::kernel_addresses`]).
    pub fn with_host(config: Config, workers: usize, host: &[crate::wire::parse::Addr]) -> MemEngine {
        let mut config = config;
        config.engine.workers = workers.max(1);
        let n = config.engine.workers;
        let macs: Vec<[u8; 6]> =
            config.interfaces.iter().enumerate().map(|(i, itf)| itf.mac.unwrap_or(default_mac(i))).collect();
        let config = Arc::new(config);
        let snapshot = Arc::new(Snapshot::build_with_host(config.clone(), &macs, host));
        let fabric = Fabric::new(n);
        fabric.set_placement(&snapshot);
        let workers = (0..n)
            .map(|w| {
                // Kernel ports (`interface.kernel_port`) after the interfaces, as the backends
                // open them.
                let queues = crate::pipeline::snapshot::port_list(&config)
                    .into_iter()
                    .map(|(name, i)| MemQueue::new(PortCaps { name, mac: macs[i], queues: n as u16, mtu: 1500 }))
                    .collect();
                Driver::new(w, queues, snapshot.clone(), fabric.clone())
            })
            .collect();
        MemEngine { workers, fabric, snapshot, host: host.to_vec() }
    }

    /// Index of the interface named `name`.
    pub fn iface(&self, name: &str) -> Option<usize> {
        self.snapshot.ifaces.iter().position(|i| i.name == name)
    }

    /// The worker a frame arrives on (an RSS-like hash of the raw tuple).
    pub fn rx_worker(&self, frame: &[u8]) -> usize {
        rx_worker(frame, self.workers.len())
    }

    /// Receive `frame` on interface `iface` at time `now` and run the
    /// workers until idle. Returns what was transmitted: (iface, frame).
    pub fn inject(&mut self, iface: usize, frame: &[u8], now: u64) -> Vec<(usize, Vec<u8>)> {
        let w = self.rx_worker(frame);
        self.workers[w].queues_mut()[iface].inject(frame);
        self.run(now)
    }

    /// Poll every worker until no work is left; collect transmissions.
    pub fn run(&mut self, now: u64) -> Vec<(usize, Vec<u8>)> {
        loop {
            let mut work = 0;
            for w in self.workers.iter_mut() {
                work += w.poll(now);
            }
            let handoff_pending = self.fabric.handoff.iter().any(|q| !q.is_empty());
            let ctrl_pending = self.fabric.ctrl.iter().any(|q| !q.is_empty());
            if work == 0 && !handoff_pending && !ctrl_pending {
                break;
            }
        }
        let mut out = Vec::new();
        for w in self.workers.iter_mut() {
            for (i, q) in w.queues_mut().iter_mut().enumerate() {
                for b in q.take_tx() {
                    out.push((i, b.data().to_vec()));
                    q.recycle(b);
                }
            }
        }
        out
    }

    /// Cluster: what the workers queued for the peers since the last call, encoded by
    /// `batcher` at `now` as the daemon's sync thread does (with this engine's placement).
    pub fn take_sync(&mut self, batcher: &mut crate::cluster::sync::Batcher, now: u64) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(b) = self.fabric.sync_tx.pop() {
            all.extend(b);
        }
        batcher.set_placement(self.sync_placement());
        batcher.encode(&all, now)
    }

    /// Cluster: this engine's placement-relevant configuration, as its sync thread sends
    /// and requires it ([`crate::cluster::sync::Placement::of`]).
    pub fn sync_placement(&self) -> crate::cluster::sync::Placement {
        self.fabric.placement()
    }

    /// Cluster: a sync datagram from a peer, delivered to the owning workers, which install
    /// it at `now`. Returns the number of entries, or why the message was refused (the
    /// placement block is not compared here: that is the sync thread's
    /// [`crate::cluster::syncd::Receiver`]).
    pub fn deliver_sync(&mut self, msg: &[u8], now: u64) -> Result<usize, crate::cluster::sync::SyncError> {
        let m = crate::cluster::sync::parse(msg)?;
        let n = m.entries.len();
        for (w, es) in
            crate::cluster::sync::route(m.entries, self.workers.len(), self.snapshot.port_range).into_iter().enumerate()
        {
            if !es.is_empty() {
                let _ = self.fabric.ctrl[w].push(crate::pipeline::worker::Ctrl::Sync(es));
            }
        }
        let out = self.run(now);
        debug_assert!(out.is_empty(), "installing sync state sends nothing");
        Ok(n)
    }

    /// Install a new configuration, as a SIGHUP reload does: a snapshot posted to every
    /// worker's control ring, applied at its next poll (at `now`).
    pub fn reload(&mut self, config: Config, now: u64) {
        let macs: Vec<[u8; 6]> = self.snapshot.ifaces.iter().map(|i| i.mac).collect();
        let mut config = config;
        config.engine.workers = self.workers.len();
        let snap = Arc::new(Snapshot::build_with_host(Arc::new(config), &macs, &self.host));
        // Single-threaded: a full ring would never drain while waiting.
        let undelivered = crate::daemon::post_snapshot(&*self.fabric, &snap, Duration::ZERO);
        assert!(undelivered.is_empty(), "control ring full");
        self.snapshot = snap;
        let _ = self.run(now);
    }

    /// Back to the state of `MemEngine::new` without rebuilding the
    /// snapshot or reallocating tables: see [`Worker::reset`](crate::pipeline::worker::Worker::reset). Port queues
    /// and the fabric's rings are emptied.
    pub fn reset(&mut self) {
        for q in self.fabric.handoff.iter() {
            while q.pop().is_some() {}
        }
        for q in self.fabric.ctrl.iter() {
            while q.pop().is_some() {}
        }
        for w in self.workers.iter_mut() {
            for q in w.queues_mut() {
                while let Some(b) = q.rx.pop_front() {
                    q.recycle(b);
                }
                for b in q.take_tx() {
                    q.recycle(b);
                }
            }
            w.reset();
        }
        while self.fabric.sync_tx.pop().is_some() {}
    }

    /// Packets held by all workers for later (see [`Worker::held_packets`](crate::pipeline::worker::Worker::held_packets):
    /// waiting for a neighbour, a first fragment or a SYN-proxied handshake).
    pub fn parked(&self) -> usize {
        self.workers.iter().map(|w| w.held_packets()).sum()
    }

    /// The new connections service `svc` (its index in the config) refused, summed over the
    /// workers: each reason of [`crate::pipeline::counters::REFUSALS`] with a count.
    pub fn refused(&self, svc: usize) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        crate::pipeline::counters::REFUSALS
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let n = self
                    .workers
                    .iter()
                    .filter_map(|w| w.service_counters().get(svc))
                    .map(|c| c.refused.0[k].load(Relaxed));
                (r.label(), n.sum::<u64>())
            })
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Sum of all workers' counters.
    pub fn counters(&self) -> crate::pipeline::counters::CounterSnapshot {
        crate::daemon::sum_counters(&self.fabric.counters)
    }
}

/// Which of `n` workers a frame arrives on: an RSS-like hash of its raw tuple (deliberately
/// not the ownership hash, so handoffs happen).
pub fn rx_worker(frame: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    match crate::wire::parse::parse(frame) {
        Ok(p) => {
            let h = (p.src as u64)
                .wrapping_mul(31)
                .wrapping_add(p.dst as u64)
                .wrapping_mul(31)
                .wrapping_add(((p.sport as u64) << 16) | p.dport as u64);
            (h.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 33) as usize % n
        }
        Err(_) => 0,
    }
}

/// Where replay reads and writes.
pub struct ReplayArgs {
    pub config: Config,
    /// (interface name or None for the first, file)
    pub inputs: Vec<(Option<String>, PathBuf)>,
    /// (interface name or None for all, file)
    pub outputs: Vec<(Option<String>, PathBuf)>,
    pub workers: Option<usize>,
}

#[derive(Debug)]
pub struct ReplayError(pub String);

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplayError {}

/// Summary of a replay.
pub struct ReplayReport {
    pub packets_in: u64,
    pub packets_out: u64,
    pub engine: MemEngine,
}

pub fn replay(args: ReplayArgs) -> Result<ReplayReport, ReplayError> {
    let workers = args.workers.unwrap_or(args.config.engine.workers).max(1);
    if args.config.interfaces.is_empty() {
        return Err(ReplayError("replay needs at least one [[interface]] in the config".into()));
    }
    let mut engine = MemEngine::new(args.config, workers);
    let mut readers = Vec::new();
    for (name, path) in &args.inputs {
        let iface = match name {
            Some(n) => {
                engine.iface(n).ok_or_else(|| ReplayError(format!("--input {n}=...: no interface named {n:?}")))?
            }
            None => 0,
        };
        let r = PcapReader::open(path).map_err(|e| ReplayError(format!("{}: {e}", path.display())))?;
        readers.push((iface, path.clone(), r, None::<(u64, Vec<u8>)>));
    }
    let mut writers: Vec<(Option<usize>, PcapWriter<std::io::BufWriter<std::fs::File>>)> = Vec::new();
    for (name, path) in &args.outputs {
        let iface = match name {
            Some(n) => Some(
                engine.iface(n).ok_or_else(|| ReplayError(format!("--output {n}=...: no interface named {n:?}")))?,
            ),
            None => None,
        };
        let w = PcapWriter::create(path).map_err(|e| ReplayError(format!("{}: {e}", path.display())))?;
        writers.push((iface, w));
    }
    // Prime one packet per reader; merge by timestamp (ties: input order).
    for r in readers.iter_mut() {
        r.3 = r.2.next_packet().map_err(|e| ReplayError(format!("{}: {e}", r.1.display())))?;
    }
    let (mut n_in, mut n_out, mut now) = (0u64, 0u64, 0u64);
    loop {
        let mut best: Option<usize> = None;
        for (k, r) in readers.iter().enumerate() {
            if let Some((ts, _)) = &r.3 {
                if best.is_none_or(|b| *ts < readers[b].3.as_ref().map(|x| x.0).unwrap_or(u64::MAX)) {
                    best = Some(k);
                }
            }
        }
        let Some(k) = best else { break };
        let (ts, frame) = readers[k].3.take().expect("primed");
        now = now.max(ts);
        n_in += 1;
        let iface = readers[k].0;
        for (i, out) in engine.inject(iface, &frame, now) {
            n_out += 1;
            for (want, w) in writers.iter_mut() {
                if want.is_none_or(|x| x == i) {
                    w.write_packet(now, &out).map_err(|e| ReplayError(format!("writing output: {e}")))?;
                }
            }
        }
        let r = &mut readers[k];
        r.3 = r.2.next_packet().map_err(|e| ReplayError(format!("{}: {e}", r.1.display())))?;
    }
    for (_, w) in writers.iter_mut() {
        w.flush().map_err(|e| ReplayError(format!("writing output: {e}")))?;
    }
    Ok(ReplayReport { packets_in: n_in, packets_out: n_out, engine })
}
