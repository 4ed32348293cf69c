//! `ferrovs gen`: a pktgen-style traffic generator on the engine's own port
//! backends. It sends IPv4 TCP SYNs or UDP datagrams at a given rate and
//! size, cycling through ranges of source/destination addresses and ports
//! (so RSS / packet fanout spreads them), and counts what comes back on a
//! second port. It prints live rates every second and a summary (`--json`).
//!
//! Backends: AF_PACKET (`crate::port::afpacket::open`) and, in a build
//! with the `dpdk` feature, DPDK (`--backend dpdk`: the devices are vdev
//! specs or PCI addresses, EAL arguments come from `--eal-args`).

use crate::port::{Packet, PortQueue, BURST};
use crate::tools::frame::{write4, Frame4};
use crate::wire::parse::{self, PROTO_TCP, PROTO_UDP, TCP_SYN};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// An inclusive range of values parsed from `A` or `A-B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<T> {
    pub lo: T,
    pub hi: T,
}

impl std::str::FromStr for Span<Ipv4Addr> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let lo: Ipv4Addr = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
        let hi: Ipv4Addr = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
        if u32::from(lo) > u32::from(hi) {
            return Err(format!("{s}: empty range"));
        }
        Ok(Span { lo, hi })
    }
}

impl std::str::FromStr for Span<u16> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
        let hi: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
        if lo > hi {
            return Err(format!("{s}: empty range"));
        }
        Ok(Span { lo, hi })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GenProto {
    /// TCP SYN (every packet looks like a new connection attempt).
    Syn,
    Udp,
}

#[derive(Clone, Debug)]
pub struct GenArgs {
    /// Packets per second (0: as fast as possible).
    pub rate: u64,
    /// Frame size including FCS (64..=1518).
    pub size: usize,
    pub src: Span<Ipv4Addr>,
    pub dst: Span<Ipv4Addr>,
    pub sport: Span<u16>,
    pub dport: Span<u16>,
    pub proto: GenProto,
    pub dst_mac: [u8; 6],
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many packets (0: no limit).
    pub count: u64,
    /// Print a line every second.
    pub live: bool,
}

/// One second (or the summary) of generator figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenFigures {
    pub seconds: f64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_pps: f64,
    pub rx_pps: f64,
    /// rx / tx.
    pub delivered: f64,
}

/// The summary `ferrovs gen --json` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenReport {
    pub backend: &'static str,
    pub proto: GenProto,
    pub frame_size: usize,
    pub rate: u64,
    pub total: GenFigures,
    pub per_second: Vec<GenFigures>,
}

/// Tuple `i` of the ranges: every field cycles through its range at its
/// own pace so consecutive packets differ in all of them.
struct Tuples {
    src: (u32, u64),
    dst: (u32, u64),
    sport: (u16, u64),
    dport: (u16, u64),
}

impl Tuples {
    fn new(a: &GenArgs) -> Tuples {
        let n = |lo: u64, hi: u64| hi - lo + 1;
        Tuples {
            src: (u32::from(a.src.lo), n(u32::from(a.src.lo) as u64, u32::from(a.src.hi) as u64)),
            dst: (u32::from(a.dst.lo), n(u32::from(a.dst.lo) as u64, u32::from(a.dst.hi) as u64)),
            sport: (a.sport.lo, n(a.sport.lo as u64, a.sport.hi as u64)),
            dport: (a.dport.lo, n(a.dport.lo as u64, a.dport.hi as u64)),
        }
    }
    #[inline]
    fn get(&self, i: u64) -> ([u8; 4], [u8; 4], u16, u16) {
        let sp = i % self.sport.1;
        let s = (i / self.sport.1) % self.src.1;
        let d = i % self.dst.1;
        let dp = (i / self.dst.1) % self.dport.1;
        (
            (self.src.0 + s as u32).to_be_bytes(),
            (self.dst.0 + d as u32).to_be_bytes(),
            self.sport.0 + sp as u16,
            self.dport.0 + dp as u16,
        )
    }
}

/// Run the generator: send on `tx`, count what arrives on `rx`.
pub fn run<Q: PortQueue>(
    mut tx: Q,
    mut rx: Option<Q>,
    a: &GenArgs,
    backend: &'static str,
) -> Result<GenReport, String> {
    if a.size < 64 || a.size > 1518 {
        return Err("--size must be 64..=1518 (frame size with FCS)".into());
    }
    let len = a.size - 4;
    let proto = match a.proto {
        GenProto::Syn => PROTO_TCP,
        GenProto::Udp => PROTO_UDP,
    };
    let src_mac = tx.caps().mac;
    let tuples = Tuples::new(a);
    let mut out: Vec<Q::Buf> = Vec::with_capacity(BURST);
    let mut inbox: Vec<Q::Buf> = Vec::with_capacity(BURST);
    let start = Instant::now();
    let mut total = GenFigures::default();
    let mut sec = GenFigures::default();
    let mut per_second = Vec::new();
    let mut next_tick = start + Duration::from_secs(1);
    let mut tick_start = start;
    let mut i: u64 = 0;
    let deadline = start + a.duration;
    // After the last packet, keep counting arrivals for a moment.
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let sending = drain_until.is_none();
        if sending && (now >= deadline || (a.count > 0 && i >= a.count)) {
            drain_until = Some(now + Duration::from_millis(200));
        }
        if let Some(t) = drain_until {
            if now >= t {
                break;
            }
        }
        if drain_until.is_none() {
            // Packets due by now at the configured rate.
            let due = if a.rate == 0 {
                u64::MAX
            } else {
                (now.duration_since(start).as_nanos() * a.rate as u128 / 1_000_000_000) as u64
            };
            let mut room = due.saturating_sub(i).min(BURST as u64);
            if a.count > 0 {
                room = room.min(a.count - i);
            }
            for _ in 0..room {
                let Some(mut b) = tx.alloc() else { break };
                if !b.set_len(len) {
                    return Err("backend buffers are too small for --size".into());
                }
                let (s, d, sp, dp) = tuples.get(i);
                let f = Frame4 {
                    src_mac,
                    dst_mac: a.dst_mac,
                    src: s,
                    dst: d,
                    sport: sp,
                    dport: dp,
                    proto,
                    flags: TCP_SYN,
                    seq: i as u32,
                    ack: 0,
                    ttl: 64,
                };
                write4(b.data_mut(), &f, len, b"");
                out.push(b);
                i += 1;
            }
            if !out.is_empty() {
                let r = tx.tx_burst(&mut out);
                sec.tx_packets += r.sent as u64;
                sec.tx_bytes += r.bytes;
                sec.tx_dropped += r.dropped as u64;
            }
            tx.flush();
        }
        if let Some(q) = rx.as_mut() {
            q.rx_burst(&mut inbox);
            for b in inbox.drain(..) {
                if matches!(parse::parse(b.data()), Ok(p) if p.proto == proto) {
                    sec.rx_packets += 1;
                    sec.rx_bytes += b.len() as u64;
                }
            }
            q.flush();
        }
        if now >= next_tick {
            let secs = now.duration_since(tick_start).as_secs_f64();
            finish(&mut sec, secs);
            if a.live {
                eprintln!(
                    "{:>5.1}s  tx {:>10.0} pps  rx {:>10.0} pps  ({:.1}% delivered, {} tx drops)",
                    now.duration_since(start).as_secs_f64(),
                    sec.tx_pps,
                    sec.rx_pps,
                    sec.delivered * 100.0,
                    sec.tx_dropped
                );
            }
            add(&mut total, &sec);
            per_second.push(std::mem::take(&mut sec));
            tick_start = now;
            next_tick += Duration::from_secs(1);
        }
    }
    add(&mut total, &sec);
    finish(&mut total, start.elapsed().as_secs_f64());
    Ok(GenReport { backend, proto: a.proto, frame_size: a.size, rate: a.rate, total, per_second })
}

fn add(t: &mut GenFigures, s: &GenFigures) {
    t.tx_packets += s.tx_packets;
    t.tx_bytes += s.tx_bytes;
    t.tx_dropped += s.tx_dropped;
    t.rx_packets += s.rx_packets;
    t.rx_bytes += s.rx_bytes;
}

fn finish(f: &mut GenFigures, secs: f64) {
    f.seconds = secs;
    f.tx_pps = f.tx_packets as f64 / secs.max(1e-9);
    f.rx_pps = f.rx_packets as f64 / secs.max(1e-9);
    f.delivered = if f.tx_packets > 0 { f.rx_packets as f64 / f.tx_packets as f64 } else { 0.0 };
}

/// Open AF_PACKET queues on `tx_dev` (and `rx_dev`) and run.
pub fn run_afpacket(tx_dev: &str, rx_dev: Option<&str>, a: &GenArgs) -> Result<GenReport, String> {
    let mut txq = crate::port::afpacket::open(tx_dev, 1, None, "gen-tx").map_err(|e| format!("{tx_dev}: {e}"))?;
    let tx = txq.pop().ok_or_else(|| format!("{tx_dev}: no queue"))?;
    let rx = match rx_dev {
        Some(d) => {
            let mut q = crate::port::afpacket::open(d, 1, None, "gen-rx").map_err(|e| format!("{d}: {e}"))?;
            Some(q.pop().ok_or_else(|| format!("{d}: no queue"))?)
        }
        None => None,
    };
    run(tx, rx, a, "af_packet")
}

/// Open DPDK ports for `tx_dev` (and `rx_dev`: vdev specs or PCI
/// addresses) with `eal_args`, and run on one queue of each.
#[cfg(feature = "dpdk")]
pub fn run_dpdk(tx_dev: &str, rx_dev: Option<&str>, eal_args: &[String], a: &GenArgs) -> Result<GenReport, String> {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = String::from("[engine]\nworkers = 1\nbackend = \"dpdk\"\nmbufs = 8192\n");
    text += &format!("eal_args = [{}]\n", eal_args.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
    for (name, dev) in [("gen-tx", Some(tx_dev)), ("gen-rx", rx_dev)] {
        if let Some(dev) = dev {
            text += &format!("\n[[interface]]\nname = \"{name}\"\ndevice = {}\naddresses = []\n", q(dev));
        }
    }
    let cfg = ferrovs_cfg::Config::from_str(&text, "ferrovs gen").map_err(|e| e.to_string())?;
    let mut be = crate::port::dpdk::DpdkBackend::open(&cfg).map_err(|e| e.to_string())?;
    crate::port::dpdk::register_thread().map_err(|e| e.to_string())?;
    let mut queues = be.take_queues().pop().ok_or("DPDK gave no queues")?;
    let rx = if rx_dev.is_some() { queues.pop() } else { None };
    let tx = queues.pop().ok_or("DPDK gave no tx queue")?;
    let r = run(tx, rx, a, "dpdk");
    // Queues (and their mbufs) are gone before the backend tears EAL down.
    drop(be);
    r
}

/// Human-readable summary.
pub fn format(r: &GenReport) -> String {
    let t = &r.total;
    format!(
        "gen ({}, {:?}, {}-byte frames): {:.2} s, sent {} ({:.0} pps, {} tx drops), received {} ({:.0} pps), {:.2}% delivered\n",
        r.backend,
        r.proto,
        r.frame_size,
        t.seconds,
        t.tx_packets,
        t.tx_pps,
        t.tx_dropped,
        t.rx_packets,
        t.rx_pps,
        t.delivered * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::MemQueue;
    use crate::port::PortCaps;

    #[test]
    fn generates_the_ranges_on_a_memory_port() {
        let caps = PortCaps { name: "g".into(), mac: [2, 0, 0, 0, 0, 9], queues: 1, mtu: 1500 };
        let tx = MemQueue::new(caps.clone());
        let mut rxq = MemQueue::new(caps);
        rxq.inject(&crate::tools::testpkt::udp4([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, b"x"));
        let a = GenArgs {
            rate: 0,
            size: 64,
            src: "100.64.0.1-100.64.0.4".parse().unwrap(),
            dst: "10.0.1.100".parse().unwrap(),
            sport: "1000-1001".parse().unwrap(),
            dport: "80".parse().unwrap(),
            proto: GenProto::Udp,
            dst_mac: [2, 0, 0, 0, 1, 1],
            duration: Duration::from_secs(5),
            count: 16,
            live: false,
        };
        let r = run(tx, Some(rxq), &a, "memory").unwrap();
        assert_eq!(r.total.tx_packets, 16);
        assert_eq!(r.total.rx_packets, 1);
        let t = Tuples::new(&a);
        let seen: std::collections::HashSet<_> = (0..8).map(|i| t.get(i)).collect();
        assert_eq!(seen.len(), 8, "4 sources x 2 source ports");
    }
}
