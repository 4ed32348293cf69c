//! `ferrovs run`: open the backend, start one pinned poll-mode worker
//! thread per queue, run until SIGINT/SIGTERM, print counters on exit.

use crate::pipeline::counters::{CounterSnapshot, ServiceCounters, WorkerCounters};
use crate::pipeline::driver::Driver;
use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::worker::{Ctrl, Fabric};
use crate::port::memory::MemQueue;
use crate::port::{PortCaps, PortCounters, PortQueue, PortReport, PortSource};
use ferrovs_cfg::{Backend, Config};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
static HUP: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HUP.fetch_add(1, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// Install SIGINT/SIGTERM (stop) and SIGHUP (reload) handlers.
pub fn install_signal_handlers() {
    // SAFETY: `on_signal` is async-signal-safe (it only touches atomics),
    // and the handler pointer is valid for the life of the process.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Ask the main loop to stop, as SIGTERM does (`ferrovsadm --drain`: a cluster node then
/// withdraws its VIPs and drains before it exits).
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Number of SIGHUPs received so far.
pub fn hup_count() -> u32 {
    HUP.load(Ordering::Relaxed)
}

/// What the control plane needs from running workers, whatever the
/// backend's buffer type.
pub trait EngineView: Send + Sync {
    fn workers(&self) -> usize;
    fn counters(&self) -> Vec<Arc<WorkerCounters>>;
    fn service_counters(&self) -> Vec<Arc<Vec<ServiceCounters>>>;
    fn post(&self, worker: usize, msg: Ctrl) -> bool;
    /// A new snapshot is being posted to the workers.
    fn snapshot_posted(&self, snap: &Snapshot);
    /// Per worker, per port: the queue's own counters as last published (`None`: none).
    fn port_counters(&self) -> Vec<Vec<Option<PortCounters>>>;
}

impl<B: Send> EngineView for Fabric<B> {
    fn workers(&self) -> usize {
        self.workers
    }
    fn counters(&self) -> Vec<Arc<WorkerCounters>> {
        self.counters.clone()
    }
    fn service_counters(&self) -> Vec<Arc<Vec<ServiceCounters>>> {
        self.services.iter().map(|m| m.lock().map(|g| g.clone()).unwrap_or_default()).collect()
    }
    fn post(&self, worker: usize, msg: Ctrl) -> bool {
        self.ctrl.get(worker).is_some_and(|q| q.push(msg).is_ok())
    }
    fn snapshot_posted(&self, snap: &Snapshot) {
        self.set_placement(snap);
    }
    fn port_counters(&self) -> Vec<Vec<Option<PortCounters>>> {
        Fabric::port_counters(self)
    }
}

/// The reports of ports whose queues count themselves (AF_PACKET: one socket per worker):
/// each of `config`'s interfaces, its queues' last published counters summed.
pub fn queue_reports(view: Arc<dyn EngineView>, config: &Config, driver: &str) -> PortSource {
    let ports: Vec<(String, String)> = config.interfaces.iter().map(|i| (i.name.clone(), i.device.clone())).collect();
    let driver = driver.to_string();
    Arc::new(move || {
        let per_worker = view.port_counters();
        ports
            .iter()
            .enumerate()
            .map(|(p, (name, device))| {
                let queues: Vec<PortCounters> = per_worker.iter().filter_map(|w| w.get(p).copied().flatten()).collect();
                let mut counters = PortCounters::default();
                for q in &queues {
                    counters.add(q);
                }
                PortReport {
                    name: name.clone(),
                    device: device.clone(),
                    driver: driver.clone(),
                    link_up: None,
                    counters,
                    queues,
                }
            })
            .collect()
    })
}

/// The one way a new snapshot reaches the workers: posted on every worker's
/// control ring, applied at its next poll. A full ring is retried every
/// millisecond for up to `patience` (a snapshot must not be lost: workers
/// drain their rings every poll, so a full one clears quickly). Returns
/// the workers it could not be delivered to, after logging them.
pub fn post_snapshot(view: &dyn EngineView, snap: &Arc<Snapshot>, patience: Duration) -> Vec<usize> {
    let deadline = Instant::now() + patience;
    let mut undelivered = Vec::new();
    view.snapshot_posted(snap);
    for w in 0..view.workers() {
        while !view.post(w, Ctrl::Snapshot(snap.clone())) {
            if Instant::now() >= deadline {
                tracing::error!(worker = w, "control ring full: snapshot not delivered");
                undelivered.push(w);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    undelivered
}

pub fn sum_counters(c: &[Arc<WorkerCounters>]) -> CounterSnapshot {
    let mut total = CounterSnapshot::default();
    for w in c {
        total.add(&w.snapshot());
    }
    total
}

/// Human-readable counters of a running or finished engine.
pub fn format_counters(view: &dyn EngineView, snap: &Snapshot) -> String {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut s = String::new();
    let counters = view.counters();
    for (w, c) in counters.iter().enumerate() {
        let c = c.snapshot();
        let _ = writeln!(
            s,
            "worker {w}: rx {} pkts {} bytes, tx {} pkts {} bytes, flows created {} expired {} active {}, handoff out {} in {}",
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.flows_created,
            c.flows_expired,
            c.flows_active as i64,
            c.handoff_out,
            c.handoff_in
        );
        if c.cookies_sent + c.cookies_failed > 0 {
            let _ = writeln!(
                s,
                "worker {w}: syn proxy cookies sent {} validated {} failed {}",
                c.cookies_sent, c.cookies_validated, c.cookies_failed
            );
        }
        if c.icmp_sent + c.icmp_ratelimited > 0 {
            let _ = writeln!(s, "worker {w}: icmp errors sent {} rate-limited {}", c.icmp_sent, c.icmp_ratelimited);
        }
        if c.to_kernel + c.from_kernel + c.kernel_limited > 0 {
            let _ = writeln!(
                s,
                "worker {w}: kernel port: to kernel {} from kernel {} over kernel_rate {}",
                c.to_kernel, c.from_kernel, c.kernel_limited
            );
        }
        let drops: Vec<String> = c.drops.iter().filter(|d| d.1 > 0).map(|(n, v)| format!("{n}={v}")).collect();
        let _ = writeln!(s, "worker {w}: drops {}", if drops.is_empty() { "none".into() } else { drops.join(" ") });
    }
    let per = view.service_counters();
    for (i, svc) in snap.services.iter().enumerate() {
        let sum = |f: &dyn Fn(&ServiceCounters) -> u64| -> u64 { per.iter().filter_map(|v| v.get(i)).map(f).sum() };
        let _ = writeln!(
            s,
            "service {}: conns {} in {} pkts {} bytes, out {} pkts {} bytes",
            svc.name,
            sum(&|c| c.conns.load(Relaxed)),
            sum(&|c| c.in_packets.load(Relaxed)),
            sum(&|c| c.in_bytes.load(Relaxed)),
            sum(&|c| c.out_packets.load(Relaxed)),
            sum(&|c| c.out_bytes.load(Relaxed)),
        );
        for (d, dest) in svc.dests.iter().enumerate() {
            let ds = |f: &dyn Fn(&crate::pipeline::counters::DestCounters) -> u64| -> u64 {
                per.iter().filter_map(|v| v.get(i)).filter_map(|c| c.dests.get(d)).map(f).sum()
            };
            let _ = writeln!(
                s,
                "  real server {}: conns {} in {} pkts, out {} pkts",
                crate::wire::parse::addr_to_ip(dest.addr),
                ds(&|c| c.conns.load(Relaxed)),
                ds(&|c| c.in_packets.load(Relaxed)),
                ds(&|c| c.out_packets.load(Relaxed)),
            );
        }
        let refused: Vec<String> = crate::pipeline::counters::REFUSALS
            .iter()
            .enumerate()
            .map(|(k, r)| (r.label(), sum(&|c| c.refused.0[k].load(Relaxed))))
            .filter(|&(_, n)| n > 0)
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        if !refused.is_empty() {
            let _ = writeln!(s, "  refused: {}", refused.join(", "));
        }
        if svc.ftp.is_some() {
            let names = crate::pipeline::counters::FtpCounters::names();
            let parts: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(k, n)| format!("{} {}", n.replace('_', " "), sum(&|c| c.ftp.fields()[k].1.load(Relaxed))))
                .collect();
            let _ = writeln!(s, "  ftp: {}", parts.join(", "));
        }
    }
    s
}

/// A monotonic nanosecond clock.
pub fn clock() -> impl Fn() -> u64 {
    let t0 = Instant::now();
    move || t0.elapsed().as_nanos() as u64
}

/// Established (active) connections of all workers in `snap` (what a drain waits for).
pub fn established(snap: &Snapshot) -> u64 {
    let mut n = 0u64;
    for c in &snap.conn_counts {
        for w in 0..c.workers() {
            for d in 0..c.dests() {
                n += c.row_active(w, d) as u64;
            }
        }
    }
    n
}

/// Packets forwarded for services so far, all workers (a drain ends early once this stops
/// moving: the routers sent the remaining connections elsewhere).
pub fn service_packets(view: &dyn EngineView) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    view.service_counters()
        .iter()
        .flat_map(|w| w.iter())
        .map(|s| s.in_packets.load(Relaxed) + s.out_packets.load(Relaxed))
        .sum()
}

/// Running workers of one backend.
pub struct Running {
    pub view: Arc<dyn EngineView>,
    pub snapshot: Arc<Snapshot>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Backend state that must outlive the workers (DPDK ports, EAL); it
    /// is dropped after the worker threads have joined.
    pub backend: Option<Box<dyn std::any::Any + Send>>,
    /// Cluster: the connection sync thread's counters.
    pub sync_stats: Option<Arc<crate::cluster::syncd::SyncStats>>,
    /// The ports' own counters (none for the in-memory backend).
    pub ports: Option<PortSource>,
}

impl Running {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        drop(self.backend.take());
    }
}

/// The core each of `workers` workers is pinned to (`None`: not pinned).
///
/// `allowed` is the process's CPU set. With `engine.cores` configured, worker
/// w takes `configured[w]` if the process may run there. Without it, workers
/// take the allowed cores in order, wrapping around, but skip core 0 when
/// any other core is allowed: core 0 is where IRQs, the kernel's own work
/// and often a traffic generator run (on a 2-core machine a worker on core 0
/// forwarded 0.52x the kernel's NAT rate, on core 1 1.20x).
pub fn worker_cores(allowed: &[usize], configured: Option<&[usize]>, workers: usize) -> Vec<Option<usize>> {
    if let Some(list) = configured {
        return (0..workers).map(|w| list.get(w).copied().filter(|c| allowed.contains(c))).collect();
    }
    let off_zero: Vec<usize> = allowed.iter().copied().filter(|&c| c != 0).collect();
    let pool = if off_zero.is_empty() { allowed } else { &off_zero[..] };
    (0..workers).map(|w| pool.get(w % pool.len().max(1)).copied()).collect()
}

/// A Linux CPU list (`/sys/devices/system/cpu/isolated`, `cpuset.cpus`: "0-3,8,10-11"; empty:
/// none), or `None` if it is not one. At most 65,536 CPUs.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi >= 1 << 16 {
            return None;
        }
        v.extend(lo..=hi);
    }
    Some(v)
}

/// The cores of `pinned` (the workers') that the kernel's scheduler may give other tasks:
/// not in `isolated` (the `isolcpus=` list). A task scheduled on a poll-mode worker's core
/// stops the worker while it runs, and the worker's receive rings fill meanwhile: a lab run
/// lost a client's first SYN about every other connection that way during a SYN flood, each
/// connection delayed a second (its retransmission).
pub fn shared_cores(pinned: &[usize], isolated: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = pinned.iter().copied().filter(|c| !isolated.contains(c)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Start workers on `queues[w][i]` (worker w, interface i).
pub fn start<Q: PortQueue + 'static>(
    config: Arc<Config>,
    queues: Vec<Vec<Q>>,
    on_thread_start: Arc<dyn Fn(usize) + Send + Sync>,
) -> Result<Running, String> {
    let n = queues.len();
    // Cluster: the sync socket first, so a bad sync address fails the start.
    let sync_sock = match &config.cluster {
        Some(c) => Some({
            if let Some(w) = crate::cluster::syncd::key_file_warning(c) {
                tracing::warn!("{w}");
            }
            crate::cluster::syncd::open_socket(c)
                .map_err(|e| format!("cluster sync socket {}:{}: {e}", c.sync_address, c.sync_port))?
        }),
        None => None,
    };
    let macs: Vec<[u8; 6]> = queues.first().map(|qs| qs.iter().map(|q| q.caps().mac).collect()).unwrap_or_default();
    let host = crate::port::afpacket::kernel_addresses(&config);
    let snapshot = Arc::new(Snapshot::build_with_host(config.clone(), &macs, &host));
    let fabric: Arc<Fabric<Q::Buf>> = Fabric::randomized(n);
    fabric.set_placement(&snapshot);
    let stop = Arc::new(AtomicBool::new(false));
    // The CPUs of this process's affinity mask (sched_getaffinity).
    let allowed: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    let placement = worker_cores(&allowed, config.engine.cores.as_deref(), n);
    let unavailable: Vec<usize> = (0..n)
        .filter(|&w| placement[w].is_none())
        .filter_map(|w| config.engine.cores.as_ref().and_then(|l| l.get(w).copied()))
        .collect();
    if !unavailable.is_empty() {
        tracing::warn!(
            ?unavailable,
            ?allowed,
            "configured cores are not in this process's CPU set; those workers are not pinned"
        );
    }
    let pinned: Vec<usize> = placement.iter().flatten().copied().collect();
    tracing::info!(configured = config.engine.cores.is_some(), "workers pinned to cores {pinned:?}");
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").ok().and_then(|s| parse_cpu_list(&s));
    if let Some(isolated) = isolated {
        let shared = shared_cores(&pinned, &isolated);
        if !shared.is_empty() {
            tracing::warn!(
                ?isolated,
                "worker cores {shared:?} are not isolated (isolcpus=): a task the kernel schedules there stops its \
                 worker while it runs, and the receive rings overflow meanwhile; on an appliance isolate them \
                 (isolcpus=, nohz_full=) or keep other tasks off them with cpusets"
            );
        }
    }
    let mut threads = Vec::new();
    for (w, qs) in queues.into_iter().enumerate() {
        let snap = snapshot.clone();
        let fab = fabric.clone();
        let stop = stop.clone();
        let core = placement[w].map(|id| core_affinity::CoreId { id });
        let start_hook = on_thread_start.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("fvs-worker-{w}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            tracing::warn!(worker = w, core = c.id, "could not pin worker");
                        }
                    }
                    start_hook(w);
                    let mut worker = Driver::new(w, qs, snap, fab);
                    let now = clock();
                    let mut idle = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let work = worker.poll(now());
                        if work == 0 {
                            idle += 1;
                            // Poll mode with a back-off when idle, so a lab
                            // on two shared vCPUs still leaves CPU to its
                            // servers and clients.
                            if idle > 256 {
                                std::thread::sleep(Duration::from_micros(50));
                            } else {
                                std::hint::spin_loop();
                            }
                        } else {
                            idle = 0;
                        }
                    }
                    worker.flush_tx();
                })
                .expect("spawn worker thread"),
        );
    }
    let mut sync_stats = None;
    if let (Some(sock), Some(c)) = (sync_sock, config.cluster.clone()) {
        let stats = Arc::new(crate::cluster::syncd::SyncStats::default());
        sync_stats = Some(stats.clone());
        let (fab, stop) = (fabric.clone(), stop.clone());
        let range = config.engine.local_port_range;
        threads.push(
            std::thread::Builder::new()
                .name("fvs-sync".into())
                .spawn(move || crate::cluster::syncd::run(c, range, sock, fab, stats, stop))
                .expect("spawn sync thread"),
        );
    }
    Ok(Running { view: fabric, snapshot, threads, stop, backend: None, sync_stats, ports: None })
}

/// Open the configured backend and start the workers.
pub fn open_and_start(config: Arc<Config>) -> Result<Running, String> {
    let workers = config.engine.workers.max(1);
    match config.engine.backend {
        Backend::Memory => {
            let queues: Vec<Vec<MemQueue>> = (0..workers)
                .map(|_| {
                    crate::pipeline::snapshot::port_list(&config)
                        .into_iter()
                        .map(|(name, i)| {
                            let itf = &config.interfaces[i];
                            let mut q = MemQueue::new(PortCaps {
                                name,
                                mac: itf.mac.unwrap_or(crate::port::memory::default_mac(i)),
                                queues: workers as u16,
                                mtu: 1500,
                            });
                            q.capture = false;
                            q
                        })
                        .collect()
                })
                .collect();
            start(config, queues, Arc::new(|_| {}))
        }
        Backend::AfPacket => {
            let mut per_iface = Vec::new();
            for itf in &config.interfaces {
                let qs = crate::port::afpacket::open(&itf.device, workers, itf.mac, &itf.name)
                    .map_err(|e| format!("interface {:?} (device {}): {e}", itf.name, itf.device))?;
                per_iface.push(qs);
            }
            let queues = transpose(per_iface, workers);
            let mut running = start(config.clone(), queues, Arc::new(|_| {}))?;
            running.ports = Some(queue_reports(running.view.clone(), &config, "af_packet"));
            Ok(running)
        }
        Backend::Dpdk => open_dpdk(config),
    }
}

#[cfg(feature = "dpdk")]
fn open_dpdk(config: Arc<Config>) -> Result<Running, String> {
    let mut be = crate::port::dpdk::DpdkBackend::open(&config).map_err(|e| e.to_string())?;
    let queues = be.take_queues();
    let mut running = start(
        config,
        queues,
        Arc::new(|w| {
            if let Err(e) = crate::port::dpdk::register_thread() {
                tracing::warn!(worker = w, "DPDK thread registration failed: {e}");
            }
        }),
    )?;
    let stats = be.stats_handle();
    running.ports = Some(Arc::new(move || stats.get().iter().map(crate::port::dpdk::report_of).collect()));
    running.backend = Some(Box::new(be));
    Ok(running)
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(_config: Arc<Config>) -> Result<Running, String> {
    Err("backend = \"dpdk\" needs a ferrovs built with `--features dpdk` (see README)".into())
}

fn transpose<Q>(per_iface: Vec<Vec<Q>>, workers: usize) -> Vec<Vec<Q>> {
    let mut out: Vec<Vec<Q>> = (0..workers).map(|_| Vec::new()).collect();
    for qs in per_iface {
        for (w, q) in qs.into_iter().enumerate() {
            out[w].push(q);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{parse_cpu_list, shared_cores, worker_cores};

    #[test]
    fn cpu_lists_parse_as_linux_writes_them() {
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("1\n"), Some(vec![1]));
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        for bad in ["x", "3-1", "1-", "-2", "1,,a", "0-99999999999", "0-70000"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cores_shared_with_the_scheduler_are_the_pinned_ones_not_isolated() {
        assert_eq!(shared_cores(&[1], &[]), vec![1]);
        assert_eq!(shared_cores(&[1, 1], &[1]), Vec::<usize>::new());
        assert_eq!(shared_cores(&[3, 1, 2, 1], &[2, 5]), vec![1, 3]);
    }

    #[test]
    fn default_placement_keeps_workers_off_core_0() {
        // Two cores, one worker: core 1, not core 0.
        assert_eq!(worker_cores(&[0, 1], None, 1), vec![Some(1)]);
        // More workers than cores other than 0: they share those, still not 0.
        assert_eq!(worker_cores(&[0, 1], None, 2), vec![Some(1), Some(1)]);
        assert_eq!(worker_cores(&[0, 1, 2, 3], None, 3), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(worker_cores(&[0, 1, 2], None, 3), vec![Some(1), Some(2), Some(1)]);
    }

    #[test]
    fn default_placement_follows_the_affinity_mask() {
        // taskset -c 0: core 0 is the only choice.
        assert_eq!(worker_cores(&[0], None, 2), vec![Some(0), Some(0)]);
        // taskset -c 2,5: only those, in order.
        assert_eq!(worker_cores(&[2, 5], None, 3), vec![Some(2), Some(5), Some(2)]);
        // Unknown CPU set: nothing pinned.
        assert_eq!(worker_cores(&[], None, 2), vec![None, None]);
    }

    #[test]
    fn configured_cores_are_taken_as_given_if_allowed() {
        assert_eq!(worker_cores(&[0, 1, 2, 3], Some(&[0, 3]), 2), vec![Some(0), Some(3)]);
        // Not in the CPU set, or no entry for the worker: not pinned.
        assert_eq!(worker_cores(&[0, 1], Some(&[1, 7]), 3), vec![Some(1), None, None]);
    }
}
