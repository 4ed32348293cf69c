//! DPDK backend tests (feature `dpdk`).
//!
//! EAL can be initialised once per process, so every scenario runs in a
//! child process: the parent test re-executes this test binary with
//! `FVS_DPDK_CHILD=<scenario>` and the filter `--exact child`, waits for it
//! with a deadline (a hang is a failure, the child is killed) and prints its
//! output. Memory is not hugepage-backed (`--no-huge -m 512`), no PCI bus is
//! scanned, and each child has its own `--file-prefix fvs-test-<pid>-<tag>`,
//! whose /var/run/dpdk directory is removed afterwards.
//!
//! - `ring_loopback`: a `net_ring0` vdev (its tx ring feeds its rx ring),
//!   2 queues, frames through tx and back on rx, zero-copy, Packet ops,
//!   a registered worker thread, tx overflow counted as dropped, stats.
//! - `pipeline_on_net_ring`: the real worker pipeline on a `net_ring0`
//!   vdev, no veth at all: an ARP request for the VIP is answered and a
//!   SYN to the VIP leaves NAT-translated with correct checksums.
//! - `errors`: rejected eal_args, a non-DPDK device, bad EAL arguments and
//!   a device that does not probe give errors, not exits or hangs.
//! - `af_packet_veth`: two `net_af_packet` ports on a veth pair inside a
//!   private namespace `fvs-dt-<pid>-<tag>` (needs root and ip(8), skipped
//!   otherwise), frames both ways across 2 queue pairs; and 2 workers
//!   without `qpairs=2` is a clear error.
//! - `af_xdp_veth`: two `net_af_xdp` ports on a veth pair (same namespace
//!   rules): frames built in the mbufs at the far end of the pool cross (the
//!   PMD's UMEM holds the whole pool), and the receiving port still receives
//!   after every mbuf of its pool has been through its fill ring.
#![cfg(feature = "dpdk")]

mod common;
use common::netns::VethNs;
use ferrovs_cfg::{Backend as CfgBackend, Config, Engine, Interface, Timeouts};
use ferrovs_engine::port::dpdk::{self, DpdkBackend, DpdkError, Mbuf};
use ferrovs_engine::port::{Packet, PortQueue, BURST, HEADROOM, MAX_FRAME};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "FVS_DPDK_CHILD";
const PREFIX_ENV: &str = "FVS_DPDK_PREFIX";
const ETH_TEST: u16 = 0x88b5;
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Parent side

/// Run `scenario` in a child process (optionally inside `netns`), fail on a
/// non-zero exit or when it outlives the deadline.
fn run_child(scenario: &str, netns: Option<&str>) {
    let prefix = format!("fvs-test-{}-{scenario}", std::process::id());
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out_path = std::env::temp_dir().join(format!("{prefix}.log"));
    let out = std::fs::File::create(&out_path).unwrap();
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env(PREFIX_ENV, &prefix)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd.spawn().expect("spawn child test process");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    let _ = std::fs::File::open(&out_path).and_then(|mut f| f.read_to_string(&mut log));
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    println!("---- child {scenario} output ----\n{log}---- end ----");
    match status {
        None => panic!("child {scenario} hung for {CHILD_DEADLINE:?} and was killed"),
        Some(st) => assert!(st.success(), "child {scenario} failed: {st}"),
    }
    assert!(log.contains("CHILD-OK"), "child {scenario} did not run its scenario");
}

#[test]
fn ring_loopback() {
    run_child("ring", None);
}

#[test]
fn pipeline_on_net_ring() {
    run_child("pipeline", None);
}

#[test]
fn errors() {
    run_child("errors_pre", None);
    run_child("errors_eal", None);
}

#[test]
fn af_packet_veth() {
    let Some(ns) = VethNs::new("fvs-dt", "afp", None) else { return };
    run_child("af_packet", Some(&ns.name));
    run_child("af_packet_noqpairs", Some(&ns.name));
}

#[test]
fn af_xdp_veth() {
    let Some(ns) = VethNs::new("fvs-dt", "axd", None) else { return };
    run_child("af_xdp", Some(&ns.name));
}

/// The child entry point: does nothing unless run by `run_child`.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    match scenario.as_str() {
        "ring" => scenario_ring(),
        "pipeline" => scenario_pipeline(),
        "errors_pre" => scenario_errors_pre(),
        "errors_eal" => scenario_errors_eal(),
        "af_packet" => scenario_af_packet(),
        "af_packet_noqpairs" => scenario_af_packet_noqpairs(),
        "af_xdp" => scenario_af_xdp(),
        s => panic!("unknown scenario {s}"),
    }
    let prefix = std::env::var(PREFIX_ENV).unwrap();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    println!("CHILD-OK {scenario}");
}

// ---------------------------------------------------------------------------
// Child side

fn config(devices: &[(&str, Option<[u8; 6]>)], workers: usize, extra_eal: &[&str]) -> Config {
    let prefix = std::env::var(PREFIX_ENV).unwrap_or_else(|_| format!("fvs-test-{}", std::process::id()));
    let mut eal_args: Vec<String> =
        ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", &prefix]
            .iter()
            .map(|s| s.to_string())
            .collect();
    eal_args.extend(extra_eal.iter().map(|s| s.to_string()));
    Config {
        engine: Engine {
            workers,
            backend: CfgBackend::Dpdk,
            cores: None,
            eal_args,
            mbufs: 4096,
            flow_table_size: 1024,
            expectation_table_size: 1024,
            neighbor_table_size: 4096,
            syn_proxy_threshold: 64,
            icmp_rate: 1000,
            icmp_burst: 50,
            icmp_host_rate: 100,
            icmp_host_burst: 10,
            kernel_rate: 100_000,
            health_check_threads: 128,
            control_socket: "/tmp/fvs-dpdk-test.sock".into(),
            metrics_listen: None,
            timeouts: Timeouts::default(),
            local_port_range: ferrovs_cfg::PortRange { lo: 1024, hi: 65535 },
            rp_filter: ferrovs_cfg::RpFilter::Off,
            deny_from: Vec::new(),
        },
        interfaces: devices
            .iter()
            .enumerate()
            .map(|(i, (dev, mac))| Interface {
                name: format!("if{i}"),
                device: dev.to_string(),
                mac: *mac,
                addresses: vec![],
                kernel_port: None,
            })
            .collect(),
        neighbors: vec![],
        routes: vec![],
        services: vec![],
        cluster: None,
        source: None,
    }
}

/// A test frame: broadcast, ETH_TEST, then `tag`, `seq` and a pattern.
fn frame(tag: u8, seq: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, tag]);
    f[12..14].copy_from_slice(&ETH_TEST.to_be_bytes());
    f[14] = tag;
    f[15..17].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[17..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seq as u8);
    }
    f
}

fn fill(q: &mut impl PortQueue<Buf = Mbuf>, bytes: &[u8]) -> Mbuf {
    let mut m = q.alloc().expect("mbuf pool exhausted");
    assert!(m.set_len(bytes.len()));
    m.data_mut().copy_from_slice(bytes);
    m
}

/// Poll `q` until `n` frames with ETH_TEST arrived or `timeout` passes.
fn receive(qs: &mut [&mut dpdk::DpdkQueue], n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let start = Instant::now();
    while got.len() < n && start.elapsed() < timeout {
        for q in qs.iter_mut() {
            q.rx_burst(&mut burst);
            for m in burst.drain(..) {
                let d = m.data();
                if d.len() >= 14 && d[12..14] == ETH_TEST.to_be_bytes() {
                    got.push(d.to_vec());
                }
            }
        }
        std::thread::yield_now();
    }
    got
}

fn cpu_count() -> i32 {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        libc::CPU_COUNT(&set)
    }
}

fn scenario_ring() {
    let mac = [0x02, 0xf0, 0, 0, 0, 0x01];
    let cfg = config(&[("net_ring0", Some(mac))], 2, &[]);
    let cpus_before = cpu_count();
    let mut be = DpdkBackend::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    println!("opened: {}", dpdk::version());
    // EAL pinned this thread to the main lcore; open() restored it.
    assert_eq!(cpu_count(), cpus_before, "affinity of the opening thread restored");
    // The main thread is EAL's main lcore already.
    dpdk::register_thread().unwrap();
    assert_eq!(dpdk::lcore_id(), Some(0));

    let mut qs = be.take_queues();
    assert_eq!(qs.len(), 2, "one queue set per worker");
    assert!(qs.iter().all(|w| w.len() == 1));
    assert!(be.take_queues().is_empty(), "queues are handed out once");
    let caps = qs[0][0].caps().clone();
    assert_eq!(caps.mac, mac, "configured MAC applied");
    assert_eq!(caps.queues, 2);
    assert!(caps.mtu >= 1500 && (caps.mtu as usize) < MAX_FRAME);

    // Packet operations on a fresh mbuf.
    {
        let q = &mut qs[0][0];
        let mut m = q.alloc().unwrap();
        assert_eq!(m.len(), 0);
        assert!(m.capacity() >= MAX_FRAME);
        assert!(!m.set_len(m.capacity() + 1));
        assert!(m.set_len(100));
        m.data_mut().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        assert!(m.prepend(20), "headroom for an outer header");
        assert_eq!(m.len(), 120);
        assert_eq!(m.data()[20], 0);
        assert!(m.adj(20));
        assert_eq!(m.data()[..3], [0, 1, 2]);
        assert!(!m.adj(101), "cannot remove more than the frame");
        assert_eq!(m.len(), 100);
        assert!(!m.prepend(HEADROOM + 1), "beyond the headroom");
        assert!(m.prepend(HEADROOM), "the full HEADROOM is available");
        assert!(m.adj(HEADROOM));
        assert!(m.set_len(0));
    }

    // Each worker's queue loops back on itself: tx -> ring -> rx.
    for (w, wq) in qs.iter_mut().enumerate() {
        let q = &mut wq[0];
        let frames: Vec<Vec<u8>> = (0..BURST as u16).map(|i| frame(w as u8, i, 60 + i as usize * 13)).collect();
        let mut burst: Vec<Mbuf> = frames.iter().map(|f| fill(q, f)).collect();
        let ptrs: Vec<*const u8> = burst.iter().map(|m| m.data().as_ptr()).collect();
        let r = q.tx_burst(&mut burst);
        assert!(burst.is_empty());
        assert_eq!((r.sent, r.dropped), (BURST, 0));
        assert_eq!(r.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
        let mut rx: Vec<Mbuf> = Vec::with_capacity(BURST);
        let n = q.rx_burst(&mut rx);
        assert_eq!(n, BURST);
        for (i, m) in rx.iter().enumerate() {
            assert_eq!(m.data(), &frames[i][..], "worker {w} frame {i}");
            // Zero copy: the very same buffer came back.
            assert_eq!(m.data().as_ptr(), ptrs[i]);
        }
        // rx appends, never beyond BURST.
        assert_eq!(q.rx_burst(&mut rx), 0);
        drop(rx);
    }

    // A registered worker thread: queue and mbufs moved across threads.
    let mut q1 = qs[1].pop().unwrap();
    let made_here = fill(&mut qs[0][0], &frame(9, 9, 64));
    let t = std::thread::spawn(move || {
        assert_eq!(dpdk::lcore_id(), None);
        dpdk::register_thread().unwrap();
        let id = dpdk::lcore_id().expect("registered thread has an lcore id");
        assert_ne!(id, 0);
        drop(made_here); // freed on another thread than it was allocated on
        let mut b = vec![fill(&mut q1, &frame(7, 1, 200))];
        assert_eq!(q1.tx_burst(&mut b).sent, 1);
        let mut rx = Vec::new();
        assert_eq!(q1.rx_burst(&mut rx), 1);
        assert_eq!(rx[0].data(), &frame(7, 1, 200)[..]);
        drop(rx);
        dpdk::unregister_thread();
        q1
    });
    let q1 = t.join().unwrap();
    qs[1].push(q1);

    // Overflow: the ring holds 1023 frames; the rest are freed and counted.
    let q = &mut qs[0][0];
    let before = be.stats()[0].pool_free;
    let (mut sent, mut dropped) = (0, 0);
    for i in 0..40u16 {
        let mut b: Vec<Mbuf> = (0..BURST as u16).map(|j| fill(q, &frame(1, i * 32 + j, 64))).collect();
        let r = q.tx_burst(&mut b);
        assert!(b.is_empty());
        sent += r.sent;
        dropped += r.dropped;
    }
    assert_eq!(sent + dropped, 40 * BURST);
    assert!(dropped > 0 && sent >= 1000, "sent {sent} dropped {dropped}");
    let back = receive(&mut [&mut *q], sent, Duration::from_secs(5));
    assert_eq!(back.len(), sent);
    let after = be.stats()[0].pool_free;
    println!("pool free before {before} after {after}");
    // Nothing leaked (per-lcore caches may hold a few).
    assert!(after + 600 >= before, "mbufs leaked: {before} -> {after}");

    let st = be.stats();
    println!("{}", serde_json::to_string(&st).unwrap());
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].driver, "net_ring");
    assert!(st[0].opackets >= (2 * BURST + 1 + sent) as u64);
    assert!(st[0].ipackets >= (2 * BURST + 1 + sent) as u64);
    assert_eq!(st[0].queues.len(), 2);
    assert!(st[0].link.up);
    assert!(!st[0].xstats.is_empty());
    // What `ferrovsadm ports` shows of it.
    let r = dpdk::report_of(&st[0]);
    assert_eq!((r.name.as_str(), r.driver.as_str(), r.link_up), (st[0].name.as_str(), "net_ring", Some(true)));
    let c = r.counters;
    assert_eq!(
        (c.rx_packets, c.rx_bytes, c.rx_dropped, c.rx_nobuf),
        (st[0].ipackets, st[0].ibytes, st[0].imissed, st[0].rx_nombuf)
    );
    assert_eq!((c.tx_packets, c.tx_bytes, c.tx_errors), (st[0].opackets, st[0].obytes, st[0].oerrors));
    assert_eq!(r.queues.len(), 2);
    assert_eq!(r.queues[0].rx_packets, st[0].queues[0].ipackets);

    drop(qs);
    drop(be);
    // EAL is gone now and cannot come back in this process.
    let e = DpdkBackend::open(&cfg).err().expect("second EAL init must fail");
    assert_eq!(e, DpdkError::EalUsed);
    println!("second open: {e}");
}

fn scenario_errors_pre() {
    // Rejected before EAL is touched (EAL would print usage and exit(0)).
    let cfg = config(&[("net_ring0", None)], 1, &["--help"]);
    let e = DpdkBackend::open(&cfg).err().unwrap();
    println!("{e}");
    assert!(matches!(e, DpdkError::EalArgs(_)) && e.to_string().contains("--help"));

    for args in [&["--log-level=help"][..], &["--log-level", "help"]] {
        let e = DpdkBackend::open(&config(&[("net_ring0", None)], 1, args)).err().unwrap();
        assert!(matches!(e, DpdkError::EalArgs(_)), "{e:?}");
    }

    let cfg = config(&[("eth0", None)], 1, &[]);
    let e = DpdkBackend::open(&cfg).err().unwrap();
    println!("{e}");
    assert!(e.to_string().starts_with("device eth0: not a DPDK device"), "{e}");

    let mut cfg = config(&[("net_ring0", None)], 1, &[]);
    cfg.interfaces.clear();
    assert!(matches!(DpdkBackend::open(&cfg), Err(DpdkError::Config(_))));

    // An option EAL does not know: EAL returns an error (EINVAL).
    let cfg = config(&[("net_ring0", None)], 1, &["--definitely-not-an-eal-option"]);
    let e = DpdkBackend::open(&cfg).err().unwrap();
    println!("{e}");
    assert!(matches!(e, DpdkError::EalInit { .. }), "{e:?}");
    assert!(e.to_string().starts_with("EAL init failed: "), "{e}");
    assert!(e.to_string().contains("check eal_args"), "{e}");
    assert!(matches!(dpdk::register_thread(), Err(DpdkError::EalNotRunning)));
}

fn scenario_errors_eal() {
    // A vdev whose PMD cannot probe: EAL comes up, the port does not.
    let dev = "net_af_packet0,iface=fvs-nope0";
    let cfg = config(&[(dev, None)], 1, &[]);
    let e = DpdkBackend::open(&cfg).err().unwrap();
    println!("{e}");
    assert!(e.to_string().starts_with(&format!("device {dev}: probe failed")), "{e}");
    // The failed open cleaned EAL up; DPDK cannot initialise it again.
    assert_eq!(DpdkBackend::open(&config(&[("net_ring0", None)], 1, &[])).err(), Some(DpdkError::EalUsed));
}

fn scenario_af_packet() {
    let mac_a = std::fs::read_to_string("/sys/class/net/fvsa/address").unwrap();
    let cfg = config(
        &[
            ("net_af_packet0,iface=fvsa,qpairs=2", None),
            ("net_af_packet1,iface=fvsb,qpairs=2", Some([2, 0, 0, 0, 0, 0xb])),
        ],
        2,
        &[],
    );
    let mut be = DpdkBackend::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    let mut qs = be.take_queues();
    assert_eq!(qs.len(), 2);
    let caps_a = qs[0][0].caps().clone();
    let mac_a: Vec<u8> = mac_a.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    assert_eq!(&caps_a.mac[..], &mac_a[..], "MAC read from the device");
    assert_eq!(qs[0][1].caps().mac, [2, 0, 0, 0, 0, 0xb]);

    // Interface 0 -> interface 1 and back, sent from worker 0's queues,
    // received on any worker's queue (the kernel's fanout picks it).
    for (from, to, tag) in [(0usize, 1usize, 0xa1u8), (1, 0, 0xb2)] {
        let n = 64u16;
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(tag, i, 60 + i as usize * 11)).collect();
        let mut sent = 0;
        for chunk in frames.chunks(BURST) {
            let mut b: Vec<Mbuf> = chunk.iter().map(|f| fill(&mut qs[0][from], f)).collect();
            let r = qs[0][from].tx_burst(&mut b);
            assert_eq!(r.dropped, 0);
            sent += r.sent;
        }
        assert_eq!(sent, n as usize);
        let (w0, w1) = qs.split_at_mut(1);
        let got = receive(&mut [&mut w0[0][to], &mut w1[0][to]], n as usize, Duration::from_secs(10));
        let mut got: Vec<Vec<u8>> = got.into_iter().filter(|f| f[14] == tag).collect();
        got.sort_by_key(|f| u16::from_be_bytes([f[15], f[16]]));
        assert_eq!(got.len(), n as usize, "frames across the veth {from} -> {to}");
        assert_eq!(got, frames);
    }
    let st = be.stats();
    println!("{}", serde_json::to_string(&st).unwrap());
    assert_eq!(st[0].driver, "net_af_packet");
    assert!(st[0].opackets >= 64 && st[1].opackets >= 64);
    assert!(st[0].ipackets >= 64 && st[1].ipackets >= 64);
    drop(qs);
    drop(be);
}

fn scenario_af_packet_noqpairs() {
    let cfg = config(&[("net_af_packet0,iface=fvsa", None)], 2, &[]);
    let e = DpdkBackend::open(&cfg).err().unwrap();
    println!("{e}");
    let s = e.to_string();
    assert!(s.starts_with("device net_af_packet0,iface=fvsa: net_af_packet supports 1 rx"), "{s}");
    assert!(s.contains("qpairs=2"), "{s}");
}

/// DPDK 22.11's af_xdp PMD registers `populated_size * object size` bytes of
/// the pool as the socket's UMEM; a pool whose objects each take a page
/// (`rte_pktmbuf_pool_create` without hugepages) has 42 % of its mbufs outside
/// it: frames in them never leave, and each one given to the fill ring is
/// discarded by the kernel until the port receives nothing.
fn scenario_af_xdp() {
    let cfg = config(
        &[("net_af_xdp0,iface=fvsa,start_queue=0", None), ("net_af_xdp1,iface=fvsb,start_queue=0", None)],
        1,
        &[],
    );
    let mut be = DpdkBackend::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    let mut qs = be.take_queues();
    let (qa, qb) = qs[0].split_at_mut(1);
    let (qa, qb) = (&mut qa[0], &mut qb[0]);

    // Every mbuf the pools will hand out; frames in the last 64 of port a's
    // (the far end of its memory: the ring hands them out in address order).
    let drain = |q: &mut dpdk::DpdkQueue| {
        let mut held = Vec::new();
        while let Some(m) = q.alloc() {
            held.push(m);
            assert!(held.len() <= 1 << 20, "the pool never runs dry");
        }
        held
    };
    let mut held = drain(qa);
    assert!(held.len() > 1024, "{} mbufs free in a pool of {}", held.len(), cfg.engine.mbufs);
    let mut deep = held.split_off(held.len() - 64);
    drop(held);
    let frames: Vec<Vec<u8>> = (0..64u16).map(|i| frame(0xd1, i, 60 + i as usize * 23)).collect();
    for (m, f) in deep.iter_mut().zip(&frames) {
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(f);
    }
    let mut sent = 0;
    while !deep.is_empty() {
        let rest = deep.split_off(deep.len().min(BURST));
        let r = qa.tx_burst(&mut deep);
        assert_eq!(r.dropped, 0);
        sent += r.sent;
        deep = rest;
    }
    assert_eq!(sent, 64);
    let mut got = receive(&mut [&mut *qb], 64, Duration::from_secs(10));
    got.sort_by_key(|f| u16::from_be_bytes([f[15], f[16]]));
    assert_eq!(got.len(), 64, "frames built in the far end of the pool crossed the veth");
    assert_eq!(got, frames);

    // Port b's whole pool through its fill ring: drained and given back, the
    // far end first (the per-core cache hands out what was freed last), then
    // three pools' worth of frames received in lock-step bursts.
    drop(drain(qb));
    let rounds = 3 * cfg.engine.mbufs as usize / BURST;
    for round in 0..rounds {
        let seq0 = (round * BURST) as u16;
        let frames: Vec<Vec<u8>> = (0..BURST as u16).map(|i| frame(0xd2, seq0.wrapping_add(i), 64)).collect();
        let mut b: Vec<Mbuf> = frames.iter().map(|f| fill(qa, f)).collect();
        assert_eq!(qa.tx_burst(&mut b).sent, BURST);
        let got = receive(&mut [&mut *qb], BURST, Duration::from_secs(5));
        assert_eq!(got.len(), BURST, "round {round} of {rounds}: port b stopped receiving");
    }
    let st = be.stats();
    println!("{}", serde_json::to_string(&st).unwrap());
    assert_eq!(st[0].driver, "net_af_xdp");
    drop(qs);
    drop(be);
}

/// The worker pipeline (the same code as the AF_PACKET and memory backends)
/// polling a DPDK queue: frames go in through the ring's tx side, the
/// worker receives them, and what it transmits is read back from the ring.
fn scenario_pipeline() {
    use ferrovs_engine::pipeline::driver::Driver;
    use ferrovs_engine::pipeline::snapshot::Snapshot;
    use ferrovs_engine::pipeline::worker::Fabric;
    use ferrovs_engine::tools::testpkt::{arp_request, tcp4, verify_checksums, with_macs};
    use std::sync::Arc;
    let prefix = std::env::var(PREFIX_ENV).unwrap();
    let text = format!(
        r#"
[engine]
workers = 1
backend = "dpdk"
eal_args = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", "{prefix}"]
mbufs = 4096
flow_table_size = 1024

[[interface]]
name = "ring"
device = "net_ring0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24"]

[[neighbor]]
address = "10.0.1.50"
mac = "02:00:00:00:01:32"

[[service]]
name = "web"
vip = "10.0.1.100"
ports = [80]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.1.50"
port = 8080
"#
    );
    let cfg = Arc::new(Config::from_str(&text, "dpdk-pipeline.toml").expect("config"));
    let mut be = DpdkBackend::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    dpdk::register_thread().unwrap();
    let mut qs = be.take_queues();
    let queues = qs.remove(0);
    let macs: Vec<[u8; 6]> = queues.iter().map(|q| q.caps().mac).collect();
    let snap = Arc::new(Snapshot::build(cfg.clone(), &macs));
    let fabric = Fabric::<Mbuf>::new(1);
    let mut w = Driver::new(0, queues, snap, fabric);
    let lb = [2, 0, 0, 0, 1, 1];
    let client_mac = [2, 0, 0, 0, 1, 2];
    let inject = |w: &mut Driver<dpdk::DpdkQueue>, f: &[u8]| {
        let q = &mut w.queues_mut()[0];
        let m = fill(q, f);
        let mut v = vec![m];
        assert_eq!(q.tx_burst(&mut v).sent, 1);
    };
    let take = |w: &mut Driver<dpdk::DpdkQueue>| -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        w.queues_mut()[0].rx_burst(&mut burst);
        for m in burst.drain(..) {
            got.push(m.data().to_vec());
        }
        got
    };
    // ARP for the VIP: answered.
    inject(&mut w, &arp_request(client_mac, [10, 0, 1, 2], [10, 0, 1, 100]));
    assert_eq!(w.poll(1_000_000_000), 1, "the worker received the ARP request");
    let out = take(&mut w);
    assert_eq!(out.len(), 1, "one ARP reply");
    assert_eq!(&out[0][12..14], &[0x08, 0x06]);
    assert_eq!(&out[0][6..12], &lb, "from the interface MAC");
    assert_eq!(&out[0][28..32], &[10, 0, 1, 100], "sender is the VIP");
    // A SYN to the VIP leaves towards the real server, NAT-translated.
    let syn = with_macs(tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, 0x02, 1, 0, b""), client_mac, lb);
    inject(&mut w, &syn);
    assert_eq!(w.poll(1_000_001_000), 1);
    let out = take(&mut w);
    assert_eq!(out.len(), 1, "the SYN was forwarded");
    verify_checksums(&out[0]).unwrap();
    assert_eq!(&out[0][0..6], &[2, 0, 0, 0, 1, 0x32], "to the real server's MAC");
    assert_eq!(&out[0][30..34], &[10, 0, 1, 50], "destination rewritten");
    assert_eq!(&out[0][36..38], &8080u16.to_be_bytes(), "port rewritten");
    assert_eq!(w.flows.len(), 1);
    // Buffers and queues go before the backend (EAL cleanup).
    drop(w);
    drop(be);
}
