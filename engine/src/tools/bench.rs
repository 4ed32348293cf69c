//! `ferrovs bench`: the real pipeline ([`Driver::poll`], the same code as
//! `run` and `replay`) on in-memory ports, fed with synthetic traffic, no I/O.
//!
//! Every worker runs on its own OS thread (pinned with `core_affinity`),
//! with its own [`Driver`] and its own pre-built packet set whose clients
//! it owns ([`owner_of`]), so no packet is handed off between workers. The
//! measured loop does not allocate: each worker recycles a small ring of
//! [`HeapBuf`]s. Per burst it restores the header bytes of the next
//! `BURST` packets from a template array (a 64-byte copy per packet, the
//! analogue of a NIC writing a descriptor's buffer), pushes them on the
//! in-memory rx queue, calls `poll`, and takes the transmitted buffers
//! back. That copy and the queue moves are included in the figures.
//!
//! Scenarios:
//! - `established`: NAT TCP, `--flows` connections set up first (SYN,
//!   SYN-ACK, ACK), then ACK segments of random flows, half from clients
//!   (to the VIP), half from real servers (to the client).
//! - `new`: every packet is the SYN of a new connection: lookup miss,
//!   scheduling (rr over 8 real servers), insert, NAT, forward. The tuple
//!   space is `--flows` per worker; a virtual clock makes the SYN_RECV
//!   timeout run out after half a cycle, so the incremental sweep removes
//!   old connections at the rate new ones arrive (steady state).
//! - `dr`: direct routing; ACKs from clients to the VIP (MAC rewrite only).
//! - `fnat`: `established` through full NAT (16 local addresses): client
//!   ACKs leave from a local address and port, the real servers' ACKs come
//!   back to it. Compare its instructions per packet with `established`
//!   (`SCENARIO="established fnat" scripts/callgrind-pps`).
//! - `ftp`: FTP control sessions (NAT) each with a PASV (227 rewritten) and
//!   a PORT data connection, set up through the gateway; then ACK segments
//!   on the data connections (both directions) and on the control
//!   connection (which goes through the gateway's seq/ack mapping).
//! - `ftp-data`: the `ftp` set-up (each data connection's handshake completed),
//!   then ACK segments on the data connections only (passive and active, both
//!   directions): compare its instructions per packet with `established`.
//!
//! - `synflood`: the `established` traffic with, between every two of its
//!   packets, a SYN from a spoofed source to a service whose SYN proxy is on
//!   (`syn_proxy = "on"`): each is answered with a cookie, none creates
//!   state. Reports cookies per second per worker beside the established
//!   packets per second.
//! - `flood-unknown`, `flood-icmp`, `flood-arp`: the `established` traffic
//!   with, between every two of its packets, a packet of a flood: ACKs for
//!   connections that do not exist (spoofed sources), ICMP errors quoting
//!   connections that do not exist (frames of at least 74 bytes), ARP
//!   requests for the VIP from every address of the client subnet and
//!   beyond. Each flood packet is answered (ARP) or dropped and counted;
//!   the established packets are all forwarded. Reports the established
//!   packets per second beside the flood's.
//!
//! `--flows` and `--packets` are totals, split evenly between workers.
//!
//! The template array is the frame memory the measured loop streams through: one 64-byte
//! frame per flow and direction (both directions in `established`), so 1.3 MB at 10 k flows
//! (it stays in the caches) and 128 MB at 1 M (read from memory, evicting the table's
//! lines). `--frames N` repeats each flow's frames in a shuffled array of N, so that a run
//! with few flows streams as much frame memory per packet as one with many: the difference
//! between `--flows 10000 --frames 2000000` and `--flows 1000000` is the flow table's own
//! (index and connection misses), apart from the template stream's.

use crate::pipeline::driver::Driver;
use crate::pipeline::snapshot::{owner_of, Snapshot};
use crate::pipeline::worker::Fabric;
use crate::port::memory::{HeapBuf, MemQueue};
use crate::port::{Packet, PortCaps, BURST};
use crate::tools::frame::{write4, Frame4, Rng};
use crate::wire::parse::{self, v4_to_addr, PROTO_TCP, TCP_ACK, TCP_PSH, TCP_SYN};
use ferrovs_cfg::Config;
use std::sync::{Arc, Barrier};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Established,
    /// The `established` traffic over IPv6: IPv6 clients, VIP and real servers (NAT).
    Established6,
    New,
    Dr,
    Fnat,
    Ftp,
    /// The `ftp` set-up, measuring only the data connections' packets.
    #[value(name = "ftp-data")]
    #[serde(rename = "ftp-data")]
    FtpData,
    Synflood,
    #[value(name = "flood-unknown")]
    #[serde(rename = "flood-unknown")]
    FloodUnknown,
    #[value(name = "flood-icmp")]
    #[serde(rename = "flood-icmp")]
    FloodIcmp,
    #[value(name = "flood-arp")]
    #[serde(rename = "flood-arp")]
    FloodArp,
    #[value(name = "flood-nd")]
    #[serde(rename = "flood-nd")]
    FloodNd,
    #[value(name = "flood-ftp-tiny")]
    #[serde(rename = "flood-ftp-tiny")]
    FloodFtpTiny,
}

impl Scenario {
    /// The scenarios that mix a flood into established traffic (one flood packet after
    /// every established one).
    pub fn is_flood(self) -> bool {
        matches!(
            self,
            Scenario::Synflood
                | Scenario::FloodUnknown
                | Scenario::FloodIcmp
                | Scenario::FloodArp
                | Scenario::FloodNd
                | Scenario::FloodFtpTiny
        )
    }

    /// Bytes of template restored per packet: [`HEAD`], or 128 where the flood's frames are
    /// longer (ND: 86 bytes, ICMP errors: 70); then for every packet of the run, established ones included,
    /// so the figures alone and under the flood stay comparable.
    fn stride(self) -> usize {
        if matches!(self, Scenario::FloodNd | Scenario::FloodIcmp | Scenario::Established6) {
            2 * HEAD
        } else {
            HEAD
        }
    }

    /// Smallest frame (without FCS) the scenario's packets need.
    fn min_len(self) -> usize {
        match self {
            // An ICMP error quoting a header + 8 bytes: 70 bytes.
            Scenario::FloodIcmp => 70,
            // A neighbour solicitation / advertisement with its link-layer address option.
            Scenario::FloodNd => 86,
            // Ethernet, IPv6 and TCP headers: 74 bytes.
            Scenario::Established6 => 74,
            _ => 60,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchArgs {
    pub scenario: Scenario,
    /// Connections (total over workers).
    pub flows: usize,
    /// Measured packets (total over workers).
    pub packets: u64,
    pub workers: usize,
    /// Frame size on the wire including the 4-byte FCS (64 = minimum).
    pub size: usize,
    /// Pin worker `w` to core `cores[w % len]` (default: all cores in order).
    pub pin: bool,
    /// Flood scenarios: measure the flood packets alone (for instruction counts per flood
    /// packet with callgrind), not the established traffic and the mix.
    pub flood_only: bool,
    /// Frames the measured traffic cycles through (total over workers; 0: one per flow and
    /// direction). More than that repeats each flow's frames in a shuffled array this long,
    /// so a run with few flows reads as much frame memory per packet as one with many:
    /// the flow table's own cost of a large table shows apart from the template stream's.
    pub frames: usize,
}

/// Largest `--frames` (6.4 GB of templates): a bigger one is refused, not an abort on
/// allocation.
pub const MAX_FRAMES: usize = 100_000_000;

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            scenario: Scenario::Established,
            flows: 100_000,
            packets: 10_000_000,
            workers: 1,
            size: 64,
            pin: true,
            flood_only: false,
            frames: 0,
        }
    }
}

/// Figures of one worker.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WorkerFigures {
    pub worker: usize,
    pub core: Option<usize>,
    pub packets: u64,
    pub seconds: f64,
    pub mpps: f64,
    pub ns_per_packet: f64,
    pub tx_packets: u64,
    pub dropped: u64,
    pub flows_created: u64,
    pub flows_in_table: usize,
    pub table_bytes: usize,
    /// Frames its established traffic cycled through.
    pub frames: usize,
    pub setup_seconds: f64,
    /// SYN proxy cookies sent per second (synflood: while the mix ran).
    pub cookies_per_sec: f64,
    /// The flood scenarios' figures.
    pub flood: Option<FloodFigures>,
    /// Microseconds the worker took to install a configuration snapshot that changes one
    /// real server's weight (what a health-check flap or `ferrovsadm -e -w` posts), with its
    /// connections in the table: the median of [`SNAPSHOT_ROUNDS`] (established scenarios).
    pub weight_change_us: Option<f64>,
}

/// Snapshot changes measured after the traffic (`WorkerFigures::weight_change_us`).
const SNAPSHOT_ROUNDS: usize = 9;

/// The median time, in microseconds, `rig`'s worker takes to install a snapshot that changes
/// the weight of the first service's first real server (back and forth), its connections in
/// its table. The worker stops forwarding while it does (the NIC's ring fills meanwhile).
fn weight_change_us(rig: &mut Rig) -> f64 {
    let base = rig.w.core().snapshot().clone();
    let macs: Vec<[u8; 6]> = base.ifaces.iter().map(|i| i.mac).collect();
    let mut us: Vec<f64> = (0..SNAPSHOT_ROUNDS)
        .map(|k| {
            let mut cfg = (*base.config).clone();
            let w = &mut cfg.services[0].real_servers[0].weight;
            *w = if k % 2 == 0 { *w + 1 } else { *w };
            let snap = Arc::new(Snapshot::build(Arc::new(cfg), &macs));
            let t = Instant::now();
            rig.w.core_mut().handle_ctrl(rig.now, crate::pipeline::worker::Ctrl::Snapshot(snap));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    us[us.len() / 2]
}

/// What a flood scenario measures on one worker (see [`FLOOD_MODEL`]).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FloodFigures {
    /// `--flood-only`: only the flood was measured (`ns_flood`, `flood_mpps`).
    pub flood_only: bool,
    /// Established packets alone: the worker's capacity C.
    pub established_alone_mpps: f64,
    /// The 1:1 mix of established and flood packets, all packets per second.
    pub mix_mpps: f64,
    /// Established packets per second while the worker is saturated by the mix (half of it).
    pub established_in_mix_mpps: f64,
    pub flood_mpps: f64,
    /// The model's result: the share of the established rate (offered at C/2 beside a flood
    /// of C/2) that is forwarded: min(1, mix_mpps / C).
    pub kept: f64,
    pub ns_established: f64,
    /// Cost of a flood packet: 2 * ns(mix) - ns(established).
    pub ns_flood: f64,
    /// ns_flood / ns_established.
    pub flood_relative: f64,
    /// Flood packets per second the worker absorbs beside established traffic at half its
    /// capacity without losing any: 0.5 s of every second / ns_flood.
    pub absorbable_flood_mpps: f64,
    pub established_packets_alone: u64,
    pub established_tx_alone: u64,
    pub mix_packets: u64,
    pub mix_tx: u64,
    pub mix_dropped: u64,
    /// Counters that moved during the warm-up pass and the measurement (name, delta).
    pub counters_moved: Vec<(String, u64)>,
    /// Bounded tables and buffers before the flood's first packet and after the last.
    pub tables_before: crate::pipeline::worker::TableSizes,
    pub tables_after: crate::pipeline::worker::TableSizes,
}

/// The model the flood scenarios report against (printed with their figures).
pub const FLOOD_MODEL: &str =
    "model: established traffic is offered at half of what the worker forwards when it carries \
nothing else (C/2, C measured alone), and the flood at the same packet rate (C/2), interleaved 1:1. If the worker \
processes the mix at >= C packets/s it keeps up and forwards all established packets; if not, its receive ring \
overflows and the NIC drops packets of both kinds alike, so it forwards the share mix/C of them. kept = min(1, mix/C). \
Flood cost per packet = 2 x ns(mix) - ns(established). 'absorbable' = the flood rate the worker takes beside \
established traffic at C/2 without losing any (0.5 s per second / flood cost). Alone and mix are measured in 4 \
alternating rounds over the same connections, after one unmeasured pass of the mix.";

/// What `ferrovs bench` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub scenario: Scenario,
    pub workers: usize,
    pub flows: usize,
    /// Frames the measured traffic cycled through (all workers).
    pub frames: usize,
    pub frame_size: usize,
    pub packets: u64,
    pub wall_seconds: f64,
    pub mpps_total: f64,
    pub mpps_per_worker: f64,
    pub ns_per_packet: f64,
    pub gbps_total: f64,
    /// New connections per second (all workers) during the measured loop.
    pub new_flows_per_sec: f64,
    pub flows_in_table: usize,
    /// Flow table memory (slab + index, reserved) divided by live flows.
    pub table_bytes_per_flow: f64,
    /// Size of one connection slot in the slab.
    pub conn_slot_bytes: usize,
    pub dropped: u64,
    pub drops: Vec<(&'static str, u64)>,
    pub per_worker: Vec<WorkerFigures>,
}

const LB_EXT: [u8; 6] = [2, 0, 0, 0, 1, 1];
const LB_INT: [u8; 6] = [2, 0, 0, 0, 2, 1];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];
const RS_COUNT: u8 = 8;
const VIP_NAT: [u8; 4] = [10, 0, 1, 100];
const VIP_DR: [u8; 4] = [10, 0, 1, 101];
const VIP_FTP: [u8; 4] = [10, 0, 1, 102];
const VIP_SYN: [u8; 4] = [10, 0, 1, 103];
const VIP_FNAT: [u8; 4] = [10, 0, 1, 104];
/// The balancer's IPv6 address on `ext` (bench config) and an off-link prefix (ND flood).
const LB_EXT_V6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const OFF_LINK_V6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// FTP control connections the `flood-ftp-tiny` flood runs on, per worker (at most).
const FTP_TINY_SESSIONS: usize = 4096;
const EXT: u8 = 0;
const INT: u8 = 1;
/// Template stride: the header bytes restored per packet.
const HEAD: usize = 64;
/// Connections per client address.
const PORTS_PER_CLIENT: u32 = 64;

fn rs_mac(rs: [u8; 4]) -> [u8; 6] {
    [2, 0, 0, 0, 2, rs[3]]
}

/// The bench configuration: two interfaces, a default route via a
/// gateway on `ext` (clients live in 100.64.0.0/10), 8 real servers on
/// `int`, a NAT web service, a DR service and a NAT FTP service.
pub fn config(flow_table_size: usize, workers: usize) -> Config {
    let mut t = String::from(
        r#"
[engine]
workers = 1
backend = "memory"

[[interface]]
name = "ext"
device = "mem0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[interface]]
name = "int"
device = "mem1"
mac = "02:00:00:00:02:01"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"

[[route]]
prefix = "::/0"
via = "fd00:1::fe"

[[neighbor]]
address = "10.0.1.254"
mac = "02:00:00:00:01:fe"

[[neighbor]]
address = "fd00:1::fe"
mac = "02:00:00:00:01:fe"
"#,
    );
    for i in 0..RS_COUNT {
        t += &format!("\n[[neighbor]]\naddress = \"10.0.2.{}\"\nmac = \"02:00:00:00:02:{:02x}\"\n", 2 + i, 2 + i);
        t += &format!("\n[[neighbor]]\naddress = \"fd00:2::{:x}\"\nmac = \"02:00:00:00:02:{:02x}\"\n", 2 + i, 2 + i);
    }
    for (name, vip, port, fwd, extra) in [
        ("web", "10.0.1.100", 80, "nat", "syn_proxy = \"off\"\n"),
        ("dr", "10.0.1.101", 80, "dr", "syn_proxy = \"off\"\n"),
        ("ftp", "10.0.1.102", 21, "nat", "syn_proxy = \"off\"\nftp = true\n"),
        ("synweb", "10.0.1.103", 80, "nat", "syn_proxy = \"on\"\n"),
        ("fweb", "10.0.1.104", 80, "fnat", "syn_proxy = \"off\"\nlocal_addresses = [\"10.0.2.200-10.0.2.215\"]\n"),
        ("web6", "fd00:1::100", 80, "nat", "syn_proxy = \"off\"\n"),
    ] {
        t += &format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"tcp\"\nports = [{port}]\nscheduler = \"rr\"\nforward = \"{fwd}\"\n{extra}"
        );
        for i in 0..RS_COUNT {
            let rs = if vip.contains(':') { format!("fd00:2::{:x}", 2 + i) } else { format!("10.0.2.{}", 2 + i) };
            t += &format!("\n[[service.real_server]]\naddress = \"{rs}\"\n");
        }
    }
    let mut c = Config::from_str(&t, "bench.toml").expect("bench config parses");
    c.engine.flow_table_size = flow_table_size;
    c.engine.workers = workers;
    c
}

/// `n` client tuples (address, port) owned by worker `w` of `workers`.
fn clients(w: usize, workers: usize, n: usize) -> Vec<([u8; 4], u16)> {
    clients_from(0x6440_0000, w, workers, n) // from 100.64.0.0
}

/// [`clients`] with addresses counted from `base`.
fn clients_from(base: u32, w: usize, workers: usize, n: usize) -> Vec<([u8; 4], u16)> {
    let mut v = Vec::with_capacity(n);
    let mut i: u32 = 0;
    while v.len() < n {
        let a = (base + i).to_be_bytes();
        i += 1;
        if owner_of(v4_to_addr(a), workers) != w {
            continue;
        }
        for j in 0..PORTS_PER_CLIENT {
            if v.len() == n {
                break;
            }
            v.push((a, 1024 + (j as u16) * 997 % 60000));
        }
    }
    v
}

fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: u8,
    seq: u32,
    ack: u32,
) -> Frame4 {
    Frame4 {
        src_mac,
        dst_mac,
        src: src.0,
        dst: dst.0,
        sport: src.1,
        dport: dst.1,
        proto: PROTO_TCP,
        flags,
        seq,
        ack,
        ttl: 64,
    }
}

/// A worker with its in-memory queues, driven by the bench thread.
struct Rig {
    w: Driver<MemQueue>,
    free: Vec<HeapBuf>,
    now: u64,
    len: usize,
    refills: u64,
}

/// A buffer off the rig's free list, else (counted in `refills`) from the thread's pool of
/// dropped buffers (the flood's drops) or new.
#[inline(always)]
fn take_buf(free: &mut Vec<HeapBuf>, refills: &mut u64) -> HeapBuf {
    match free.pop() {
        Some(b) => b,
        None => {
            *refills += 1;
            HeapBuf::new()
        }
    }
}

impl Rig {
    fn new(id: usize, snap: Arc<Snapshot>, fabric: Arc<Fabric<HeapBuf>>, len: usize) -> Rig {
        let n = snap.workers;
        let queues = snap
            .ifaces
            .iter()
            .map(|itf| {
                let mut q =
                    MemQueue::new(PortCaps { name: itf.name.clone(), mac: itf.mac, queues: n as u16, mtu: 1500 });
                q.rx.reserve(BURST * 4);
                q.tx.reserve(BURST * 8);
                q
            })
            .collect();
        // A fixed flow-table seed per worker: callgrind counts then compare between builds.
        crate::flow::table::fix_seed(0x6a09_e667_f3bc_c908 ^ (id as u64) << 1);
        let w = Driver::new(id, queues, snap, fabric);
        let zero = vec![0u8; len.max(2 * HEAD)];
        let free = (0..BURST * 8).map(|_| HeapBuf::from_slice(&zero)).collect();
        Rig { w, free, now: 1_000_000_000, len, refills: 0 }
    }

    /// The frames of templates `a..b` of `t` into their interfaces' receive queues: what
    /// a NIC's DMA does. Each template a burst ahead is prefetched: at 1 M flows they stream
    /// from memory (128 MB), where a NIC would have written the frames before the burst.
    /// Inlined into `measure`, whose self cost `scripts/callgrind-pps` names the generator's.
    #[inline(always)]
    fn generate(&mut self, t: &Templates, a: usize, b: usize) {
        let s = t.stride;
        let (heads, ifaces) = (&t.head[a * s..b * s], &t.iface[a..b]);
        let queues = self.w.queues_mut();
        for (h, &i) in heads.chunks_exact(s).zip(ifaces) {
            crate::flow::table::prefetch_ptr(h.as_ptr().wrapping_add(BURST * s));
            let mut buf = take_buf(&mut self.free, &mut self.refills);
            // The whole template (bytes past `len` are zero and lie past the frame's end):
            // a fixed 64- or 128-byte copy.
            buf.restore(h, self.len);
            if let Some(q) = queues.get_mut(i as usize) {
                q.rx.push_back(buf);
            }
        }
    }

    #[inline]
    fn buf(&mut self) -> HeapBuf {
        take_buf(&mut self.free, &mut self.refills)
    }

    /// Setup helper: send `frames` (all on `iface`) in bursts; every input
    /// must produce exactly one output; returns the outputs in order.
    fn batch(&mut self, iface: u8, frames: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(BURST) {
            for f in chunk {
                let mut b = self.buf();
                b.fill(f);
                self.w.queues_mut()[iface as usize].rx.push_back(b);
            }
            self.now += 1_000;
            self.w.poll(self.now);
            let before = out.len();
            for q in self.w.queues_mut().iter_mut() {
                for b in q.tx.drain(..) {
                    out.push(b.data().to_vec());
                    self.free.push(b);
                }
            }
            if out.len() - before != chunk.len() {
                let c = self.w.counters().snapshot();
                let drops: Vec<_> = c.drops.iter().filter(|d| d.1 > 0).collect();
                return Err(format!(
                    "setup: {} packets in, {} out (drops: {drops:?})",
                    chunk.len(),
                    out.len() - before
                ));
            }
        }
        Ok(out)
    }
}

/// A set of pre-built packets: header templates (`stride` bytes each, [`HEAD`] unless a
/// scenario's frames need more) and the interface each arrives on.
struct Templates {
    head: Vec<u8>,
    iface: Vec<u8>,
    len: usize,
    stride: usize,
}

impl Templates {
    fn new(len: usize, stride: usize, n: usize) -> Self {
        let head = Vec::with_capacity(n * stride);
        // At 1 M flows the templates are 128 MB read in a stream: huge pages keep the
        // generator's TLB misses out of the pipeline's figure (a NIC's DMA has none).
        crate::flow::table::advise_huge(&head);
        Templates { head, iface: Vec::with_capacity(n), len, stride }
    }
    fn push(&mut self, iface: u8, f: &Frame4) {
        let mut b = [0u8; 2048];
        let n = write4(&mut b, f, self.len, b"");
        debug_assert_eq!(n, self.len);
        self.head.extend_from_slice(&b[..self.stride]);
        self.iface.push(iface);
    }
    /// A ready-made frame (its first `stride` bytes; shorter ones are zero-padded).
    fn push_raw(&mut self, iface: u8, f: &[u8]) {
        let mut h = [0u8; 2 * HEAD];
        let n = f.len().min(self.stride);
        h[..n].copy_from_slice(&f[..n]);
        self.head.extend_from_slice(&h[..self.stride]);
        self.iface.push(iface);
    }
    /// `a` and `b` alternately (a, b, a, b, ...), each cycled to the longer one's length:
    /// the 1:1 mix of established traffic and a flood.
    fn interleave(a: &Templates, b: &Templates) -> Templates {
        let n = a.count().max(b.count());
        let mut t = Templates::new(a.len, a.stride, 2 * n);
        for i in 0..n {
            for x in [a, b] {
                let k = i % x.count().max(1);
                if x.count() > 0 {
                    t.head.extend_from_slice(&x.head[k * x.stride..(k + 1) * x.stride]);
                    t.iface.push(x.iface[k]);
                }
            }
        }
        t
    }
    fn count(&self) -> usize {
        self.iface.len()
    }
    /// Every frame repeated (the last round cut short) to `n` frames, shuffled.
    fn cycled(&self, n: usize, rng: &mut Rng) -> Templates {
        let mut t = Templates::new(self.len, self.stride, n);
        for k in 0..n {
            let i = k % self.count();
            t.head.extend_from_slice(&self.head[i * self.stride..(i + 1) * self.stride]);
            t.iface.push(self.iface[i]);
        }
        t.shuffle(rng);
        t
    }
    fn shuffle(&mut self, rng: &mut Rng) {
        let n = self.count();
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let mut head = Vec::with_capacity(self.head.len());
        crate::flow::table::advise_huge(&head);
        let mut iface = Vec::with_capacity(n);
        for i in order {
            head.extend_from_slice(&self.head[i * self.stride..(i + 1) * self.stride]);
            iface.push(self.iface[i]);
        }
        self.head = head;
        self.iface = iface;
    }
}

fn frame(f: &Frame4, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = write4(&mut b, f, len, b"");
    b.truncate(n);
    b
}

fn frame_payload(f: &Frame4, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = write4(&mut b, f, 0, payload);
    b.truncate(n);
    b
}

fn src_of(f: &[u8]) -> Result<([u8; 4], u16), String> {
    let p = parse::parse(f).map_err(|e| format!("setup output does not parse: {e:?}"))?;
    Ok((parse::addr_v4_bytes(p.src), p.sport))
}

fn dst_of(f: &[u8]) -> Result<([u8; 4], u16), String> {
    let p = parse::parse(f).map_err(|e| format!("setup output does not parse: {e:?}"))?;
    Ok((parse::addr_v4_bytes(p.dst), p.dport))
}

/// The bench's IPv6 VIP (service `web6`), and where its clients' addresses start.
const VIP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const CLIENTS6: u128 = 0x2001_0db8_6440_0000_0000_0000_0000_0000;

/// A TCP frame over IPv6 from `src_mac` to `dst_mac`, zero-padded to `len` bytes.
#[allow(clippy::too_many_arguments)]
fn tcp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    flags: u8,
    seq: u32,
    ack: u32,
    len: usize,
) -> Vec<u8> {
    let f = crate::tools::testpkt::tcp6(src.0, src.1, dst.0, dst.1, flags, seq, ack, b"");
    let mut f = crate::tools::testpkt::with_macs(f, src_mac, dst_mac);
    f.resize(f.len().max(len), 0);
    f
}

/// Source or destination (address, port) of a set-up output frame, IPv6.
fn end6_of(f: &[u8], src: bool) -> Result<([u8; 16], u16), String> {
    let p = parse::parse(f).map_err(|e| format!("setup output does not parse: {e:?}"))?;
    Ok(if src { (parse::addr_v6_bytes(p.src), p.sport) } else { (parse::addr_v6_bytes(p.dst), p.dport) })
}

/// `established6`: `flows` IPv6 NAT connections of worker `w` (SYN, SYN-ACK, ACK through
/// the pipeline, as `established` makes its IPv4 ones) and their ACKs both ways.
fn established6(rig: &mut Rig, w: usize, workers: usize, flows: usize, rng: &mut Rng) -> Result<Sets, String> {
    let len = rig.len;
    let mut cl: Vec<([u8; 16], u16)> = Vec::with_capacity(flows);
    let mut i: u128 = 0;
    while cl.len() < flows {
        let a = CLIENTS6 + i;
        i += 1;
        if owner_of(a, workers) != w {
            continue;
        }
        for j in 0..PORTS_PER_CLIENT.min((flows - cl.len()) as u32) {
            cl.push((a.to_be_bytes(), 1024 + (j as u16) * 997 % 60000));
        }
    }
    let mut est = Templates::new(len, 2 * HEAD, flows * 2);
    for cl in cl.chunks(1 << 16) {
        let syns: Vec<Vec<u8>> =
            cl.iter().map(|&c| tcp6_frame(GW_MAC, LB_EXT, c, (VIP6, 80), TCP_SYN, 999, 0, len)).collect();
        let out = rig.batch(EXT, &syns)?;
        drop(syns);
        let rs: Vec<([u8; 16], u16)> = out.iter().map(|f| end6_of(f, false)).collect::<Result<_, _>>()?;
        drop(out);
        let rs_mac6 = |r: [u8; 16]| [2, 0, 0, 0, 2, r[15]];
        let sa: Vec<Vec<u8>> = cl
            .iter()
            .zip(&rs)
            .map(|(&c, &r)| tcp6_frame(rs_mac6(r.0), LB_INT, r, c, TCP_SYN | TCP_ACK, 4999, 1000, len))
            .collect();
        rig.batch(INT, &sa)?;
        drop(sa);
        let acks: Vec<Vec<u8>> =
            cl.iter().map(|&c| tcp6_frame(GW_MAC, LB_EXT, c, (VIP6, 80), TCP_ACK, 1000, 5000, len)).collect();
        rig.batch(EXT, &acks)?;
        drop(acks);
        for (&c, &r) in cl.iter().zip(&rs) {
            est.push_raw(EXT, &tcp6_frame(GW_MAC, LB_EXT, c, (VIP6, 80), TCP_ACK, 1000, 5000, len));
            est.push_raw(INT, &tcp6_frame(rs_mac6(r.0), LB_INT, r, c, TCP_ACK, 5000, 1000, len));
        }
    }
    est.shuffle(rng);
    Ok(Sets { est, flood: Templates::new(len, 2 * HEAD, 0), dt: 1_000 })
}

/// The measured packet sets of a scenario: its established traffic, the flood
/// (flood scenarios; empty otherwise), and the virtual time per burst.
struct Sets {
    est: Templates,
    flood: Templates,
    dt: u64,
}

/// Build the connections of a scenario through the pipeline and return
/// the measured packet sets.
fn setup(rig: &mut Rig, sc: Scenario, w: usize, workers: usize, flows: usize, rng: &mut Rng) -> Result<Sets, String> {
    let len = rig.len;
    let stride = sc.stride();
    match sc {
        Scenario::Established
        | Scenario::Dr
        | Scenario::Fnat
        | Scenario::Synflood
        | Scenario::FloodUnknown
        | Scenario::FloodIcmp
        | Scenario::FloodArp
        | Scenario::FloodNd
        | Scenario::FloodFtpTiny => {
            let cl = clients(w, workers, flows);
            let vip = match sc {
                Scenario::Dr => VIP_DR,
                Scenario::Fnat => VIP_FNAT,
                _ => VIP_NAT,
            };
            let both = sc != Scenario::Dr;
            let mut est = Templates::new(len, stride, flows * if both { 2 } else { 1 });
            // In chunks: the frames of a handshake step for millions of flows at once would
            // take far more memory than the table under test.
            for cl in cl.chunks(1 << 16) {
                let syns: Vec<Vec<u8>> =
                    cl.iter().map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (vip, 80), TCP_SYN, 999, 0), len)).collect();
                let out = rig.batch(EXT, &syns)?;
                drop(syns);
                let rs: Vec<([u8; 4], u16)> = out.iter().map(|f| dst_of(f)).collect::<Result<_, _>>()?;
                // Where the real servers answer: the client (NAT) or the local address and port.
                let back: Vec<([u8; 4], u16)> = if sc == Scenario::Fnat {
                    out.iter().map(|f| src_of(f)).collect::<Result<_, _>>()?
                } else {
                    cl.to_vec()
                };
                drop(out);
                if both {
                    let sa: Vec<Vec<u8>> = back
                        .iter()
                        .zip(&rs)
                        .map(|(&c, &r)| frame(&tcp(rs_mac(r.0), LB_INT, r, c, TCP_SYN | TCP_ACK, 4999, 1000), len))
                        .collect();
                    rig.batch(INT, &sa)?;
                }
                let acks: Vec<Vec<u8>> =
                    cl.iter().map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (vip, 80), TCP_ACK, 1000, 5000), len)).collect();
                rig.batch(EXT, &acks)?;
                drop(acks);
                for ((&c, &r), &b) in cl.iter().zip(&rs).zip(&back) {
                    est.push(EXT, &tcp(GW_MAC, LB_EXT, c, (vip, 80), TCP_ACK, 1000, 5000));
                    if both {
                        est.push(INT, &tcp(rs_mac(r.0), LB_INT, r, b, TCP_ACK, 5000, 1000));
                    }
                }
            }
            est.shuffle(rng);
            let mut flood = Templates::new(len, stride, if sc.is_flood() { flows * 2 } else { 0 });
            if sc.is_flood() {
                flood_set(rig, sc, &mut flood, w, workers, flows)?;
                if sc != Scenario::FloodFtpTiny {
                    flood.shuffle(rng);
                }
            }
            Ok(Sets { est, flood, dt: 1_000 })
        }
        Scenario::Established6 => established6(rig, w, workers, flows, rng),
        Scenario::New => {
            let cl = clients(w, workers, flows);
            let mut t = Templates::new(len, stride, flows);
            for &c in &cl {
                t.push(EXT, &tcp(GW_MAC, LB_EXT, c, (VIP_NAT, 80), TCP_SYN, 999, 0));
            }
            t.shuffle(rng);
            // SYN_RECV times out after half a cycle of the tuple space.
            let syn_recv = rig.w.snapshot().timeouts[crate::flow::tcpstate::TcpState::SynRecv as usize];
            let per_pkt = syn_recv / (flows as u64 / 2).max(1) + 1;
            Ok(Sets { est: t, flood: Templates::new(len, stride, 0), dt: per_pkt * BURST as u64 })
        }
        Scenario::Ftp | Scenario::FtpData => {
            let all = clients(w, workers, (flows / 3).max(1));
            let mut t = Templates::new(len, stride, all.len() * 5);
            // In chunks: the gateway keeps at most 65536 pending
            // expectations per worker; each chunk's are used before the next.
            for (ci, chunk) in all.chunks(16384).enumerate() {
                let base = ci * 16384;
                let cl = chunk.to_vec();
                let sessions = cl.len();
                let ctl = |c: ([u8; 4], u16)| (c.0, c.1);
                let step = |rig: &mut Rig, iface: u8, v: Vec<Vec<u8>>| rig.batch(iface, &v);
                // 1. SYN; learn the real server of each session.
                let out = step(
                    rig,
                    EXT,
                    cl.iter()
                        .map(|&c| frame(&tcp(GW_MAC, LB_EXT, ctl(c), (VIP_FTP, 21), TCP_SYN, 999, 0), len))
                        .collect(),
                )?;
                let rs: Vec<[u8; 4]> = out.iter().map(|f| dst_of(f).map(|d| d.0)).collect::<Result<_, _>>()?;
                // 2. SYN-ACK, 3. ACK.
                step(
                    rig,
                    INT,
                    cl.iter()
                        .zip(&rs)
                        .map(|(&c, &r)| frame(&tcp(rs_mac(r), LB_INT, (r, 21), c, TCP_SYN | TCP_ACK, 4999, 1000), len))
                        .collect(),
                )?;
                step(
                    rig,
                    EXT,
                    cl.iter()
                        .map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK, 1000, 5000), len))
                        .collect(),
                )?;
                // 4. PASV, 5. 227 from the server (rewritten to the VIP).
                let pasv = b"PASV\r\n";
                step(
                    rig,
                    EXT,
                    cl.iter()
                        .map(|&c| {
                            frame_payload(&tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK | TCP_PSH, 1000, 5000), pasv)
                        })
                        .collect(),
                )?;
                let cseq = 1000 + pasv.len() as u32;
                let rports: Vec<u16> = (0..sessions).map(|i| 30000 + ((base + i) % 20000) as u16).collect();
                let out = step(
                    rig,
                    INT,
                    cl.iter()
                        .zip(&rs)
                        .zip(&rports)
                        .map(|((&c, &r), &p)| {
                            let line = format!(
                                "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                                r[0],
                                r[1],
                                r[2],
                                r[3],
                                p >> 8,
                                p & 0xff
                            );
                            frame_payload(
                                &tcp(rs_mac(r), LB_INT, (r, 21), c, TCP_ACK | TCP_PSH, 5000, cseq),
                                line.as_bytes(),
                            )
                        })
                        .collect(),
                )?;
                let mut vports = Vec::with_capacity(sessions);
                for f in &out {
                    let p = parse::parse(f).map_err(|e| format!("227 output: {e:?}"))?;
                    let (sa, _) = ferrovs_ftp_alg::parse::parse_227(&f[p.payload..p.end])
                        .ok_or_else(|| "227 reply was not rewritten into a parsable line".to_string())?;
                    if sa.ip().octets() != VIP_FTP {
                        return Err(format!("227 names {} instead of the VIP", sa.ip()));
                    }
                    vports.push(sa.port());
                }
                let sseq_ctl = 5000
                    + out
                        .first()
                        .map(|f| {
                            let p = parse::parse(f).expect("parsed above");
                            p.payload_len() as u32
                        })
                        .unwrap_or(0);
                drop(out);
                // 6. Passive data connection from the client.
                let pdata = |c: ([u8; 4], u16)| (c.0, c.1.wrapping_add(1));
                let out = step(
                    rig,
                    EXT,
                    cl.iter()
                        .zip(&vports)
                        .map(|(&c, &vp)| frame(&tcp(GW_MAC, LB_EXT, pdata(c), (VIP_FTP, vp), TCP_SYN, 1, 0), len))
                        .collect(),
                )?;
                let pdst: Vec<([u8; 4], u16)> = out.iter().map(|f| dst_of(f)).collect::<Result<_, _>>()?;
                for (d, (&r, &p)) in pdst.iter().zip(rs.iter().zip(&rports)) {
                    if *d != (r, p) {
                        return Err(format!("passive data connection went to {d:?}, expected {r:?}:{p}"));
                    }
                }
                drop(out);
                // Its handshake completes (SYN-ACK from the server, ACK from the client), as the
                // established scenario's do: the measured segments then find it ESTABLISHED.
                step(
                    rig,
                    INT,
                    cl.iter()
                        .zip(&rs)
                        .zip(&rports)
                        .map(|((&c, &r), &rp)| {
                            frame(&tcp(rs_mac(r), LB_INT, (r, rp), pdata(c), TCP_SYN | TCP_ACK, 7, 2), len)
                        })
                        .collect(),
                )?;
                step(
                    rig,
                    EXT,
                    cl.iter()
                        .zip(&vports)
                        .map(|(&c, &vp)| frame(&tcp(GW_MAC, LB_EXT, pdata(c), (VIP_FTP, vp), TCP_ACK, 2, 8), len))
                        .collect(),
                )?;
                // 7. PORT from the client, 8. the server's active data SYN.
                let adata = |c: ([u8; 4], u16)| (c.0, c.1.wrapping_add(2));
                step(
                    rig,
                    EXT,
                    cl.iter()
                        .map(|&c| {
                            let a = adata(c);
                            let line = format!(
                                "PORT {},{},{},{},{},{}\r\n",
                                a.0[0],
                                a.0[1],
                                a.0[2],
                                a.0[3],
                                a.1 >> 8,
                                a.1 & 0xff
                            );
                            frame_payload(
                                &tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK | TCP_PSH, cseq, sseq_ctl),
                                line.as_bytes(),
                            )
                        })
                        .collect(),
                )?;
                let out = step(
                    rig,
                    INT,
                    cl.iter()
                        .zip(&rs)
                        .map(|(&c, &r)| frame(&tcp(rs_mac(r), LB_INT, (r, 20), adata(c), TCP_SYN, 7, 0), len))
                        .collect(),
                )?;
                for f in &out {
                    if src_of(f)?.0 != VIP_FTP {
                        return Err("active data connection not translated to the VIP".into());
                    }
                }
                drop(out);
                // The client's SYN-ACK and the server's ACK complete it.
                step(
                    rig,
                    EXT,
                    cl.iter()
                        .map(|&c| frame(&tcp(GW_MAC, LB_EXT, adata(c), (VIP_FTP, 20), TCP_SYN | TCP_ACK, 1, 8), len))
                        .collect(),
                )?;
                step(
                    rig,
                    INT,
                    cl.iter()
                        .zip(&rs)
                        .map(|(&c, &r)| frame(&tcp(rs_mac(r), LB_INT, (r, 20), adata(c), TCP_ACK, 8, 2), len))
                        .collect(),
                )?;
                for ((&c, &r), (&vp, &rp)) in cl.iter().zip(&rs).zip(vports.iter().zip(&rports)) {
                    t.push(INT, &tcp(rs_mac(r), LB_INT, (r, rp), pdata(c), TCP_ACK, 8, 2));
                    t.push(EXT, &tcp(GW_MAC, LB_EXT, pdata(c), (VIP_FTP, vp), TCP_ACK, 2, 8));
                    t.push(INT, &tcp(rs_mac(r), LB_INT, (r, 20), adata(c), TCP_ACK, 8, 2));
                    // Both directions of the active one too: half the segments towards the
                    // real servers and half back, as in `established`.
                    t.push(EXT, &tcp(GW_MAC, LB_EXT, adata(c), (VIP_FTP, 20), TCP_ACK, 2, 8));
                    if sc == Scenario::Ftp {
                        t.push(EXT, &tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK, cseq + 40, sseq_ctl));
                    }
                }
            }
            t.shuffle(rng);
            Ok(Sets { est: t, flood: Templates::new(len, stride, 0), dt: 1_000 })
        }
    }
}

/// The flood packets of a flood scenario (about `2 * flows` of them), set up through the
/// pipeline where the flood needs state of its own (the FTP control connections).
fn flood_set(
    rig: &mut Rig,
    sc: Scenario,
    t: &mut Templates,
    w: usize,
    workers: usize,
    flows: usize,
) -> Result<(), String> {
    let n = flows * 2;
    // Spoofed flood sources: this worker's, in another range than the clients.
    let spoofed = clients_from(0x6480_0000, w, workers, n);
    match sc {
        Scenario::FloodFtpTiny => return ftp_tiny_set(rig, t, w, workers, flows),
        Scenario::FloodNd => {
            // Solicitations for the balancer's address and unsolicited advertisements, from
            // sources on the link (solicitations learnt: the neighbour table is bounded and
            // evicts the stalest; advertisements for addresses without an entry ignored, RFC
            // 4861 section 7.2.5) and off it (ignored), each with its own MAC.
            for k in 0..n {
                let mac = [2, 0xbb, (k >> 16) as u8, (k >> 8) as u8, k as u8, 1];
                let on_link = k % 2 == 0;
                let mut a = if on_link { LB_EXT_V6 } else { OFF_LINK_V6 };
                a[10..16].copy_from_slice(&[0, 1, (k >> 24) as u8, (k >> 16) as u8, (k >> 8) as u8, k as u8]);
                let f = if k % 4 < 2 {
                    crate::tools::testpkt::neighbor_solicit(mac, a, LB_EXT_V6)
                } else {
                    crate::tools::testpkt::neighbor_advert(mac, a, a, mac)
                };
                t.push_raw(
                    EXT,
                    &crate::tools::testpkt::with_macs(
                        f,
                        mac,
                        if k % 4 < 2 { [0x33, 0x33, 0xff, 0, 0, 1] } else { [0x33, 0x33, 0, 0, 0, 1] },
                    ),
                );
            }
        }
        _ => {
            for (k, &(a, p)) in spoofed.iter().enumerate() {
                match sc {
                    Scenario::FloodUnknown => {
                        t.push(EXT, &tcp(GW_MAC, LB_EXT, (a, p), (VIP_NAT, 80), TCP_ACK, k as u32, 1))
                    }
                    Scenario::FloodIcmp => {
                        // "Port unreachable" from a spoofed host about VIP:80 -> it, which
                        // never was.
                        let quoted = crate::tools::testpkt::udp4(VIP_NAT, 80, a, p, b"");
                        let f = crate::tools::testpkt::icmp4_error(a, VIP_NAT, 3, 3, 0, &quoted);
                        t.push_raw(EXT, &crate::tools::testpkt::with_macs(f, GW_MAC, LB_EXT));
                    }
                    Scenario::FloodArp => {
                        // Senders all over the client subnet (on link: learnt, bounded)
                        // and beyond it (ignored).
                        let sender = [10, 0, (k % 2) as u8 + 1, (k / 2 % 253) as u8 + 2];
                        let mac = [2, 0xaa, 0, 0, (k >> 8) as u8, k as u8];
                        t.push_raw(EXT, &crate::tools::testpkt::arp_request(mac, sender, VIP_NAT));
                    }
                    _ => t.push(EXT, &tcp(GW_MAC, LB_EXT, (a, p), (VIP_SYN, 80), TCP_SYN, k as u32, 0)),
                }
            }
        }
    }
    Ok(())
}

/// `flood-ftp-tiny`: FTP control connections opened through the gateway (the attacker's
/// own, so every segment is in its tuple), then a flood on them: one-byte segments of a
/// command line that never ends (2048 bytes per session: past the gateway's line bound),
/// zero-byte ACKs, and one-byte segments far out of the window. Replayed cyclically, the
/// one-byte segments are then retransmissions.
fn ftp_tiny_set(rig: &mut Rig, t: &mut Templates, w: usize, workers: usize, flows: usize) -> Result<(), String> {
    let len = rig.len;
    // Each session gets about 4096 flood packets: 2048 bytes of one line, twice the bound.
    let sessions = (flows * 2 / 4096).clamp(1, FTP_TINY_SESSIONS);
    let cl = clients_from(0x6490_0000, w, workers, sessions);
    let out = rig.batch(
        EXT,
        &cl.iter().map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_SYN, 999, 0), len)).collect::<Vec<_>>(),
    )?;
    let rs: Vec<[u8; 4]> = out.iter().map(|f| dst_of(f).map(|d| d.0)).collect::<Result<_, _>>()?;
    rig.batch(
        INT,
        &cl.iter()
            .zip(&rs)
            .map(|(&c, &r)| frame(&tcp(rs_mac(r), LB_INT, (r, 21), c, TCP_SYN | TCP_ACK, 4999, 1000), len))
            .collect::<Vec<_>>(),
    )?;
    rig.batch(
        EXT,
        &cl.iter()
            .map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK, 1000, 5000), len))
            .collect::<Vec<_>>(),
    )?;
    let per = (flows * 2).div_ceil(sessions);
    // Sequence number of each client's next byte: its line only grows. Round-robin over the
    // sessions, in order within each (the set is not shuffled).
    let mut seqs = vec![1000u32; cl.len()];
    for j in 0..per {
        for (&c, seq) in cl.iter().zip(seqs.iter_mut()) {
            let seg = |seq: u32, payload: &[u8]| {
                let f = tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK | TCP_PSH, seq, 5000);
                frame_payload(&f, payload)
            };
            let f = match j % 4 {
                // Zero-byte ACK.
                3 => frame(&tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK, *seq, 5000), len),
                // Far out of the window (2^31 - 1 ahead).
                2 => seg(seq.wrapping_add(0x7fff_ffff), b"X"),
                // A command line that never ends, one byte per segment.
                _ => {
                    *seq += 1;
                    seg(*seq - 1, b"N")
                }
            };
            t.push_raw(EXT, &f);
        }
    }
    Ok(())
}

/// The measured loop. Returns (packets, seconds).
fn measure(rig: &mut Rig, t: &Templates, packets: u64, dt_burst: u64, pos: &mut usize) -> (u64, f64) {
    let n = t.count();
    let mut k = *pos % n.max(1);
    let mut done = 0u64;
    let start = Instant::now();
    while done < packets && n > 0 {
        let burst = (BURST as u64).min(packets - done) as usize;
        // The burst's templates in at most two runs (the second from the start).
        let mut left = burst;
        while left > 0 {
            let e = (k + left).min(n);
            rig.generate(t, k, e);
            left -= e - k;
            k = if e == n { 0 } else { e };
        }
        rig.now += dt_burst;
        rig.w.poll(rig.now);
        for q in rig.w.queues_mut().iter_mut() {
            rig.free.append(&mut q.tx);
        }
        done += burst as u64;
    }
    *pos = k;
    (done, start.elapsed().as_secs_f64())
}

/// One worker with a scenario set up, for Criterion (`benches/`): each
/// `run(n)` pushes `n` packets through the pipeline as the bench does.
pub struct Prepared {
    rig: Rig,
    t: Templates,
    dt: u64,
    pos: usize,
}

impl Prepared {
    /// A single worker (id 0 of 1) with `flows` connections of `scenario`.
    pub fn new(scenario: Scenario, flows: usize, size: usize) -> Result<Prepared, String> {
        let len = size.clamp(64, 1518).max(scenario.min_len() + 4) - 4;
        let cfg = Arc::new(config(flows + flows / 8 + 1024, 1));
        let macs: Vec<[u8; 6]> = cfg.interfaces.iter().map(|i| i.mac.expect("bench config sets MACs")).collect();
        let snap = Arc::new(Snapshot::build(cfg, &macs));
        let mut rig = Rig::new(0, snap, Fabric::new(1), len);
        let sets = setup(&mut rig, scenario, 0, 1, flows, &mut Rng(0xbe9c_0000))?;
        // Floods: the 1:1 mix of established traffic and flood.
        let t = if scenario.is_flood() { Templates::interleave(&sets.est, &sets.flood) } else { sets.est };
        let dt = sets.dt;
        if scenario == Scenario::New {
            measure(&mut rig, &t, t.count() as u64, dt, &mut 0);
        }
        Ok(Prepared { rig, t, dt, pos: 0 })
    }
    /// Push `packets` packets (in bursts) through the pipeline; returns
    /// the packets transmitted so far (monotonic).
    pub fn run(&mut self, packets: u64) -> u64 {
        measure(&mut self.rig, &self.t, packets, self.dt, &mut self.pos);
        self.rig.w.counters().snapshot().tx_packets
    }
}

/// Per-phase accumulator of the measured loop.
#[derive(Default)]
struct Phase {
    packets: u64,
    seconds: f64,
    tx: u64,
    dropped: u64,
}

impl Phase {
    fn run(&mut self, rig: &mut Rig, t: &Templates, packets: u64, dt: u64, pos: &mut usize) {
        let c0 = rig.w.counters().snapshot();
        let (pk, secs) = measure(rig, t, packets, dt, pos);
        let c1 = rig.w.counters().snapshot();
        self.packets += pk;
        self.seconds += secs;
        self.tx += c1.tx_packets - c0.tx_packets;
        self.dropped += c1.drops.iter().zip(&c0.drops).map(|(a, b)| a.1 - b.1).sum::<u64>();
    }
    fn mpps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }
    fn ns(&self) -> f64 {
        if self.packets > 0 {
            self.seconds * 1e9 / self.packets as f64
        } else {
            0.0
        }
    }
}

/// Alternating measurement rounds (established alone, then the mix) of a flood scenario, so
/// both see the same machine load on a shared host.
const FLOOD_ROUNDS: u64 = 4;

/// Every named counter of a worker (worker counters, drops, FTP gateway counters summed over
/// services) that differs between `a` and `b`.
fn moved(
    a: &crate::pipeline::counters::CounterSnapshot,
    b: &crate::pipeline::counters::CounterSnapshot,
    fa: &[(&'static str, u64)],
    fb: &[(&'static str, u64)],
) -> Vec<(String, u64)> {
    let named = |c: &crate::pipeline::counters::CounterSnapshot| -> Vec<(&'static str, u64)> {
        vec![
            ("tx_packets", c.tx_packets),
            ("flows_created", c.flows_created),
            ("arp_replies", c.arp_replies),
            ("nd_replies", c.nd_replies),
            ("neigh_evicted", c.neigh_evicted),
            ("neigh_limited", c.neigh_limited),
            ("arp_own_addr", c.arp_own_addr),
            ("icmp_translated", c.icmp_translated),
            ("icmp_sent", c.icmp_sent),
            ("cookies_sent", c.cookies_sent),
            ("cookies_failed", c.cookies_failed),
        ]
    };
    let mut v = Vec::new();
    for ((n, x), (_, y)) in named(a).into_iter().zip(named(b)) {
        if y != x {
            v.push((n.to_string(), y.wrapping_sub(x)));
        }
    }
    for ((n, x), (_, y)) in a.drops.iter().zip(&b.drops) {
        if y != x {
            v.push((format!("drop {n}"), y - x));
        }
    }
    for ((n, x), (_, y)) in fa.iter().zip(fb) {
        if y != x {
            v.push((format!("ftp {n}"), y - x));
        }
    }
    v
}

fn ftp_counters(w: &Driver<MemQueue>) -> Vec<(&'static str, u64)> {
    let names = crate::pipeline::counters::FtpCounters::names();
    let mut v: Vec<(&'static str, u64)> = names.iter().map(|n| (*n, 0)).collect();
    for sc in w.service_counters().iter() {
        for (k, (_, c)) in sc.ftp.fields().iter().enumerate() {
            v[k].1 += c.load(std::sync::atomic::Ordering::Relaxed);
        }
    }
    v
}

/// Run a bench.
pub fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    let workers = args.workers.max(1);
    if args.size < 64 || args.size > 1518 {
        return Err("--size must be 64..=1518 (frame size with FCS)".into());
    }
    if args.flood_only && !args.scenario.is_flood() {
        return Err("--flood-only needs a flood scenario".into());
    }
    if args.frames > 0 && args.scenario == Scenario::New {
        return Err("--frames does not apply to the new scenario (one SYN per tuple)".into());
    }
    if args.frames > MAX_FRAMES {
        return Err(format!("--frames is at most {MAX_FRAMES} (64 bytes of memory each)"));
    }
    let len = args.size.max(args.scenario.min_len() + 4) - 4;
    let per_worker_flows = (args.flows / workers).max(1);
    let per_worker_packets = (args.packets / workers as u64).max(1);
    // The table holds every connection of a worker, plus headroom (FTP:
    // three connections per session; `new`: the tuple space; flood-ftp-tiny: its sessions).
    let table = per_worker_flows + per_worker_flows / 8 + 1024;
    let cfg = Arc::new(config(table, workers));
    let macs: Vec<[u8; 6]> = cfg.interfaces.iter().map(|i| i.mac.expect("bench config sets MACs")).collect();
    let snap = Arc::new(Snapshot::build(cfg.clone(), &macs));
    let fabric: Arc<Fabric<HeapBuf>> = Fabric::new(workers);
    // Core 0 last: one worker runs off core 0 (where IRQs and the kernel
    // work), more take every core. Unlike the daemon (which keeps core 0 for
    // the traffic that reaches it), the bench has no other load to leave room for.
    let cores: Vec<core_affinity::CoreId> = if args.pin {
        let mut ids = core_affinity::get_core_ids().unwrap_or_default();
        ids.sort_by_key(|c| (c.id == 0, c.id));
        ids
    } else {
        Vec::new()
    };
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let snap = snap.clone();
        let fabric = fabric.clone();
        let barrier = barrier.clone();
        let core = if cores.is_empty() { None } else { Some(cores[w % cores.len()]) };
        let sc = args.scenario;
        let flood_only = args.flood_only;
        let per_worker_frames = args.frames / workers;
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{w}"))
                .spawn(move || -> Result<(WorkerFigures, Instant, Instant), String> {
                    let pinned = core.filter(|c| core_affinity::set_for_current(*c)).map(|c| c.id);
                    let t0 = Instant::now();
                    let mut rng = Rng(0xbe9c_0000 + w as u64);
                    let mut rig = Rig::new(w, snap, fabric, len);
                    let set = setup(&mut rig, sc, w, workers, per_worker_flows, &mut rng);
                    let setup_seconds = t0.elapsed().as_secs_f64();
                    // Wait for everyone even on error so the barrier releases.
                    barrier.wait();
                    let Sets { mut est, flood, dt } = set?;
                    if est.count() > 0 && per_worker_frames > est.count() {
                        est = est.cycled(per_worker_frames, &mut rng);
                    }
                    if sc == Scenario::New {
                        // One cycle of the tuple space unmeasured: steady state.
                        measure(&mut rig, &est, est.count() as u64, dt, &mut 0);
                    }
                    let mix = if sc.is_flood() { Some(Templates::interleave(&est, &flood)) } else { None };
                    let tables_before = rig.w.table_sizes();
                    // Counters that moved: from before the warm-up pass (where the flood first
                    // fills what it can fill), to the end.
                    let cw = rig.w.counters().snapshot();
                    let fw = ftp_counters(&rig.w);
                    if let Some(mix) = &mix {
                        // One pass of the mix unmeasured: the flood's steady state (neighbour
                        // table full, gateway buffers at their bound).
                        measure(&mut rig, mix, mix.count() as u64, dt, &mut 0);
                    }
                    let c0 = rig.w.counters().snapshot();
                    let start = Instant::now();
                    let (mut alone, mut mixed, mut fl) = (Phase::default(), Phase::default(), Phase::default());
                    match &mix {
                        Some(_) if flood_only => fl.run(&mut rig, &flood, per_worker_packets, dt, &mut 0),
                        Some(mix) => {
                            let per = (per_worker_packets / (2 * FLOOD_ROUNDS)).max(1);
                            let (mut pe, mut pm) = (0, 0);
                            for _ in 0..FLOOD_ROUNDS {
                                alone.run(&mut rig, &est, per, dt, &mut pe);
                                mixed.run(&mut rig, mix, per, dt, &mut pm);
                            }
                        }
                        None => alone.run(&mut rig, &est, per_worker_packets, dt, &mut 0),
                    }
                    let end = Instant::now();
                    let c1 = rig.w.counters().snapshot();
                    let f1 = ftp_counters(&rig.w);
                    let tables_after = rig.w.table_sizes();
                    let pk = alone.packets + mixed.packets + fl.packets;
                    let secs = alone.seconds + mixed.seconds + fl.seconds;
                    let dropped: u64 = c1.drops.iter().zip(&c0.drops).map(|(a, b)| a.1 - b.1).sum();
                    let mut f = WorkerFigures {
                        worker: w,
                        core: pinned,
                        packets: pk,
                        seconds: secs,
                        mpps: pk as f64 / secs / 1e6,
                        ns_per_packet: secs * 1e9 / pk as f64,
                        tx_packets: c1.tx_packets - c0.tx_packets,
                        dropped,
                        flows_created: c1.flows_created - c0.flows_created,
                        flows_in_table: rig.w.flows.len(),
                        table_bytes: rig.w.flows.memory_bytes(),
                        frames: est.count(),
                        setup_seconds,
                        ..Default::default()
                    };
                    if matches!(sc, Scenario::Established | Scenario::Established6) {
                        f.weight_change_us = Some(weight_change_us(&mut rig));
                    }
                    if sc.is_flood() {
                        let cookie_secs = if flood_only { fl.seconds } else { mixed.seconds };
                        f.cookies_per_sec = (c1.cookies_sent - c0.cookies_sent) as f64 / cookie_secs;
                        f.flood = Some(if flood_only {
                            FloodFigures {
                                flood_only: true,
                                ns_flood: fl.ns(),
                                flood_mpps: fl.mpps(),
                                counters_moved: moved(&cw, &c1, &fw, &f1),
                                tables_before,
                                tables_after,
                                ..Default::default()
                            }
                        } else {
                            let ns_est = alone.ns();
                            // Half of the mix is flood: ns(mix) = (ns(est) + ns(flood)) / 2.
                            let ns_flood = (2.0 * mixed.ns() - ns_est).max(0.0);
                            FloodFigures {
                                flood_only: false,
                                established_alone_mpps: alone.mpps(),
                                mix_mpps: mixed.mpps(),
                                established_in_mix_mpps: mixed.mpps() / 2.0,
                                flood_mpps: mixed.mpps() / 2.0,
                                kept: (mixed.mpps() / alone.mpps()).min(1.0),
                                ns_established: ns_est,
                                ns_flood,
                                flood_relative: if ns_est > 0.0 { ns_flood / ns_est } else { 0.0 },
                                absorbable_flood_mpps: if ns_flood > 0.0 { 500.0 / ns_flood } else { f64::INFINITY },
                                established_tx_alone: alone.tx,
                                established_packets_alone: alone.packets,
                                mix_tx: mixed.tx,
                                mix_dropped: mixed.dropped,
                                mix_packets: mixed.packets,
                                counters_moved: moved(&cw, &c1, &fw, &f1),
                                tables_before,
                                tables_after,
                            }
                        });
                    }
                    Ok((f, start, end))
                })
                .map_err(|e| format!("spawn: {e}"))?,
        );
    }
    barrier.wait();
    let mut per = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for h in handles {
        let (f, s, e) = h.join().map_err(|_| "bench worker panicked".to_string())??;
        first = Some(first.map_or(s, |x| x.min(s)));
        last = Some(last.map_or(e, |x| x.max(e)));
        per.push(f);
    }
    let wall = last.expect("workers").duration_since(first.expect("workers")).as_secs_f64();
    let packets: u64 = per.iter().map(|f| f.packets).sum();
    let flows_in_table: usize = per.iter().map(|f| f.flows_in_table).sum();
    let table_bytes: usize = per.iter().map(|f| f.table_bytes).sum();
    let created: u64 = per.iter().map(|f| f.flows_created).sum();
    let counters = crate::daemon::sum_counters(&fabric.counters);
    let drops: Vec<_> = counters.drops.iter().copied().filter(|d| d.1 > 0).collect();
    let dropped = per.iter().map(|f| f.dropped).sum();
    let mpps_total = packets as f64 / wall / 1e6;
    Ok(BenchReport {
        scenario: args.scenario,
        workers,
        flows: per_worker_flows * workers,
        frames: per.iter().map(|f| f.frames).sum(),
        frame_size: args.size,
        packets,
        wall_seconds: wall,
        mpps_total,
        mpps_per_worker: per.iter().map(|f| f.mpps).sum::<f64>() / workers as f64,
        ns_per_packet: per.iter().map(|f| f.ns_per_packet).sum::<f64>() / workers as f64,
        gbps_total: mpps_total * 1e6 * (args.size + 20) as f64 * 8.0 / 1e9,
        new_flows_per_sec: created as f64 / wall,
        flows_in_table,
        table_bytes_per_flow: if flows_in_table > 0 { table_bytes as f64 / flows_in_table as f64 } else { 0.0 },
        conn_slot_bytes: crate::flow::FlowTable::conn_slot_bytes(),
        dropped,
        drops,
        per_worker: per,
    })
}

/// Human-readable report.
pub fn format(r: &BenchReport) -> String {
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "scenario {:?}: {} workers, {} flows, {}-byte frames ({} cycled), {} packets in {:.3} s",
        r.scenario, r.workers, r.flows, r.frame_size, r.frames, r.packets, r.wall_seconds
    );
    let _ = writeln!(
        s,
        "  {:.2} Mpps total ({:.2} Gbit/s on the wire), {:.2} Mpps per worker, {:.1} ns/packet",
        r.mpps_total, r.gbps_total, r.mpps_per_worker, r.ns_per_packet
    );
    if r.scenario == Scenario::New {
        let _ = writeln!(s, "  {:.2} M new connections/s", r.new_flows_per_sec / 1e6);
    }
    let _ = writeln!(
        s,
        "  {} flows in table, {:.0} bytes of table memory per flow (connection slot {} bytes)",
        r.flows_in_table, r.table_bytes_per_flow, r.conn_slot_bytes
    );
    if r.dropped > 0 {
        let _ = writeln!(s, "  dropped {} during the measurement; drop counters: {:?}", r.dropped, r.drops);
    }
    for f in &r.per_worker {
        let _ = writeln!(
            s,
            "  worker {} (core {}): {:.2} Mpps, {:.1} ns/packet, {} flows, setup {:.2} s",
            f.worker,
            f.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            f.mpps,
            f.ns_per_packet,
            f.flows_in_table,
            f.setup_seconds
        );
        if let Some(us) = f.weight_change_us {
            let _ = writeln!(
                s,
                "    a weight change (health-check flap) installed in {us:.1} us with {} flows in the table",
                f.flows_in_table
            );
        }
        if let Some(fl) = &f.flood {
            if r.scenario == Scenario::Synflood {
                let _ = writeln!(s, "    {:.2} M SYN cookies/s", f.cookies_per_sec / 1e6);
            }
            if fl.flood_only {
                let _ =
                    writeln!(s, "    flood alone: {:.2} Mpps, {:.1} ns per flood packet", fl.flood_mpps, fl.ns_flood);
            } else {
                let _ = writeln!(
                    s,
                    "    established alone: {:.2} Mpps = C ({:.1} ns/packet); established + flood 1:1: {:.2} Mpps \
                     ({:.2} Mpps established beside {:.2} Mpps flood)",
                    fl.established_alone_mpps,
                    fl.ns_established,
                    fl.mix_mpps,
                    fl.established_in_mix_mpps,
                    fl.flood_mpps
                );
                let _ = writeln!(
                    s,
                    "    flood cost {:.1} ns/packet ({:.2} x an established packet); established offered at C/2 beside \
                     a C/2 flood: {:.1} % forwarded ({}); flood absorbable beside C/2 established: {}",
                    fl.ns_flood,
                    fl.flood_relative,
                    fl.kept * 100.0,
                    if fl.kept >= 0.9 { ">= 90 %" } else { "BELOW 90 %" },
                    if fl.absorbable_flood_mpps.is_finite() {
                        format!("{:.2} Mpps", fl.absorbable_flood_mpps)
                    } else {
                        "unbounded".into()
                    }
                );
                let _ = writeln!(
                    s,
                    "    established alone: {} of {} forwarded; mix: {} sent, {} dropped of {}",
                    fl.established_tx_alone, fl.established_packets_alone, fl.mix_tx, fl.mix_dropped, fl.mix_packets
                );
            }
            let moved: Vec<String> = fl.counters_moved.iter().map(|(n, v)| format!("{n} +{v}")).collect();
            let _ = writeln!(s, "    counters: {}", moved.join(", "));
            let tb = |t: &crate::pipeline::worker::TableSizes| {
                format!(
                    "flows {}, neighbours {}, expectations {}, fragments {}+{} held, proxy held {}, verified {}, \
                     parked {}, ftp sessions {} ({} buffer bytes)",
                    t.flows,
                    t.neighbors,
                    t.expectations,
                    t.frag_datagrams,
                    t.frag_held,
                    t.proxy_held,
                    t.verified_clients,
                    t.parked,
                    t.ftp_sessions,
                    t.ftp_buffer_bytes
                )
            };
            let _ = writeln!(s, "    tables before: {}", tb(&fl.tables_before));
            let _ = writeln!(s, "    tables after:  {}", tb(&fl.tables_after));
        }
    }
    if r.scenario.is_flood() {
        let _ = writeln!(s, "  {FLOOD_MODEL}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(sc: Scenario, workers: usize) -> BenchReport {
        let a = BenchArgs {
            scenario: sc,
            flows: 3000,
            packets: 20_000,
            workers,
            size: 64,
            pin: false,
            flood_only: false,
            frames: 0,
        };
        run(&a).unwrap_or_else(|e| panic!("{sc:?}: {e}"))
    }

    #[test]
    fn scenarios_forward_everything() {
        for sc in [
            Scenario::Established,
            Scenario::Established6,
            Scenario::New,
            Scenario::Dr,
            Scenario::Fnat,
            Scenario::Ftp,
            Scenario::FtpData,
            Scenario::Synflood,
        ] {
            let r = small(sc, 1);
            assert_eq!(r.dropped, 0, "{sc:?}: {:?}", r.drops);
            assert_eq!(r.per_worker[0].tx_packets, r.packets, "{sc:?}");
            assert!(r.flows_in_table > 0, "{sc:?}");
        }
        let r = small(Scenario::New, 1);
        assert_eq!(r.per_worker[0].flows_created, r.packets, "every SYN makes a connection");
        let r = small(Scenario::Synflood, 1);
        assert!(r.per_worker[0].cookies_per_sec > 0.0);
        assert_eq!(r.per_worker[0].flows_created, 0, "the flood creates no state");
    }

    /// `ftp-data` compares FTP data connections with `established` ones: like those, each
    /// completed its handshake (passive and active), so the measured segments find it
    /// ESTABLISHED, and they stay so.
    #[test]
    fn ftp_data_connections_are_established() {
        let mut p = Prepared::new(Scenario::FtpData, 300, 64).expect("set up");
        let check = |p: &Prepared| {
            let conns = p.rig.w.list_conns();
            let data = conns.iter().filter(|c| c.parent.is_some()).count();
            assert_eq!(data, 2 * 100, "a passive and an active data connection per session");
            for c in &conns {
                assert_eq!(c.state, "ESTABLISHED", "{c:?}");
            }
        };
        check(&p);
        p.run(2000);
        check(&p);
    }

    #[test]
    fn floods_create_no_state_and_spare_established_traffic() {
        for sc in [
            Scenario::Synflood,
            Scenario::FloodUnknown,
            Scenario::FloodIcmp,
            Scenario::FloodArp,
            Scenario::FloodNd,
            Scenario::FloodFtpTiny,
        ] {
            let r = small(sc, 1);
            let w = &r.per_worker[0];
            let fl = w.flood.as_ref().expect("flood figures");
            assert_eq!(w.flows_created, 0, "{sc:?}: no state from the flood");
            // Every packet is accounted for: sent (established, ARP/ND replies, cookies) or a
            // counted drop (the gateway's held bytes are `alg_hold` drops).
            assert_eq!(w.tx_packets + w.dropped, r.packets, "{sc:?}: {:?}", r.drops);
            assert_eq!(
                fl.established_tx_alone, fl.established_packets_alone,
                "{sc:?}: established alone all forwarded"
            );
            // In the mix every established packet is forwarded: at least half the mix is sent.
            assert!(fl.mix_tx >= fl.mix_packets / 2, "{sc:?}: established traffic forwarded in the mix");
            assert!(fl.established_alone_mpps > 0.0 && fl.mix_mpps > 0.0 && fl.kept > 0.0 && fl.kept <= 1.0);
            assert!(!fl.counters_moved.is_empty(), "{sc:?}: the flood shows in counters");
            // Bounded: nothing grows but what has a bound.
            let (b, a) = (fl.tables_before, fl.tables_after);
            assert_eq!((a.flows, a.expectations, a.proxy_held, a.parked), (b.flows, b.expectations, 0, 0), "{sc:?}");
            assert!(a.neighbors <= 4096 + 16, "{sc:?}: neighbour table bounded: {}", a.neighbors);
            assert!(
                a.ftp_buffer_bytes <= a.ftp_sessions * 2 * ferrovs_ftp_alg::MAX_LINE,
                "{sc:?}: gateway buffers bounded"
            );
        }
        let r = small(Scenario::FloodNd, 1);
        let moved = &r.per_worker[0].flood.as_ref().expect("flood").counters_moved;
        assert!(moved.iter().any(|(n, v)| n == "nd_replies" && *v > 0), "{moved:?}");
        let r = small(Scenario::FloodFtpTiny, 1);
        let fl = r.per_worker[0].flood.as_ref().expect("flood");
        assert!(fl.tables_after.ftp_sessions > 0);
        for c in ["drop out_of_window", "ftp oversized_lines"] {
            assert!(fl.counters_moved.iter().any(|(n, v)| n == c && *v > 0), "{c}: {:?}", fl.counters_moved);
        }
    }

    #[test]
    fn frames_cycle_every_flow_through_a_longer_array() {
        let a = BenchArgs {
            scenario: Scenario::Established,
            flows: 3000,
            packets: 40_000,
            workers: 1,
            size: 64,
            pin: false,
            flood_only: false,
            frames: 20_000,
        };
        let r = run(&a).expect("bench");
        assert_eq!(r.frames, 20_000);
        // Every frame still belongs to a set-up connection: all forwarded, none created.
        assert_eq!((r.dropped, r.per_worker[0].tx_packets, r.per_worker[0].flows_created), (0, 40_000, 0));
        // Default: one frame per flow and direction (half the established frames come back
        // from the real servers).
        let r = run(&BenchArgs { frames: 0, ..a.clone() }).expect("bench");
        assert_eq!(r.frames, 6000);
        let e = run(&BenchArgs { scenario: Scenario::New, ..a.clone() }).expect_err("new takes no --frames");
        assert!(e.contains("--frames"), "{e}");
        let e = run(&BenchArgs { frames: MAX_FRAMES + 1, ..a }).expect_err("too many frames");
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn flood_only_measures_the_flood() {
        let a = BenchArgs {
            scenario: Scenario::FloodUnknown,
            flows: 3000,
            packets: 10_000,
            workers: 1,
            size: 64,
            pin: false,
            flood_only: true,
            frames: 0,
        };
        let r = run(&a).expect("bench");
        let fl = r.per_worker[0].flood.as_ref().expect("flood");
        assert!(fl.flood_only && fl.ns_flood > 0.0);
        let w = &r.per_worker[0];
        assert_eq!((w.dropped, w.tx_packets), (10_000, 0), "every flood packet is a counted drop");
        assert!(run(&BenchArgs { scenario: Scenario::Established, ..a }).is_err());
    }

    #[test]
    fn two_workers_no_handoff() {
        for sc in [Scenario::Established, Scenario::Established6] {
            let r = small(sc, 2);
            assert_eq!(r.dropped, 0, "{sc:?}");
            assert_eq!(r.per_worker.iter().map(|f| f.tx_packets).sum::<u64>(), r.packets, "{sc:?}");
            assert!(r.per_worker.iter().all(|f| f.flows_in_table > 0), "{sc:?}: both workers carry connections");
        }
    }

    /// `established6` measures what it says: IPv6 connections, all ESTABLISHED, through
    /// the IPv6 service.
    #[test]
    fn established6_runs_on_ipv6_connections() {
        let mut p = Prepared::new(Scenario::Established6, 500, 64).expect("set up");
        p.run(4_000);
        let conns = p.rig.w.list_conns();
        assert_eq!(conns.len(), 500);
        for c in &conns {
            let v6 = |a: &str| a.matches(':').count() > 1;
            assert!(v6(&c.client) && v6(&c.vip) && v6(&c.real), "{c:?}");
            assert_eq!(c.state, "ESTABLISHED", "{c:?}");
        }
    }
}
