//! `ferrovs bench`: the real pipeline ([`Worker::poll`], the same code as
//! `run` and `replay`) on in-memory ports, fed with synthetic traffic, no I/O.
//!
//! Every worker runs on its own OS thread (pinned with `core_affinity`),
//! with its own [`Worker`] and its own pre-built packet set whose clients
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

use crate::frame::{write4, Frame4, Rng};
use crate::parse::{self, v4_to_addr, PROTO_TCP, TCP_ACK, TCP_PSH, TCP_SYN};
use crate::port::memory::{HeapBuf, MemQueue};
use crate::port::{Packet, PortCaps, BURST};
use crate::snapshot::{owner_of, Snapshot};
use crate::worker::{Fabric, Worker};
use ferrovs_cfg::Config;
use std::sync::{Arc, Barrier};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Established,
    New,
    Dr,
    Fnat,
    Ftp,
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
}

impl Scenario {
    /// The scenarios that mix a flood into established traffic (one flood packet after
    /// every established one).
    fn is_flood(self) -> bool {
        matches!(self, Scenario::Synflood | Scenario::FloodUnknown | Scenario::FloodIcmp | Scenario::FloodArp)
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
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            scenario: Scenario::Established,
            flows: 100_000,
            packets: 10_000_000,
            workers: 1,
            size: 64,
            pin: true,
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
    pub setup_seconds: f64,
    /// SYN proxy cookies sent per second (synflood).
    pub cookies_per_sec: f64,
    /// Packets per second of established connections forwarded (the floods: the rest are
    /// flood packets).
    pub established_mpps: f64,
    /// Flood packets per second (the floods).
    pub flood_mpps: f64,
}

/// What `ferrovs bench` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub scenario: Scenario,
    pub workers: usize,
    pub flows: usize,
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
addresses = ["10.0.1.1/24"]

[[interface]]
name = "int"
device = "mem1"
mac = "02:00:00:00:02:01"
addresses = ["10.0.2.1/24"]

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"

[[neighbor]]
address = "10.0.1.254"
mac = "02:00:00:00:01:fe"
"#,
    );
    for i in 0..RS_COUNT {
        t += &format!("\n[[neighbor]]\naddress = \"10.0.2.{}\"\nmac = \"02:00:00:00:02:{:02x}\"\n", 2 + i, 2 + i);
    }
    for (name, vip, port, fwd, extra) in [
        ("web", "10.0.1.100", 80, "nat", "syn_proxy = \"off\"\n"),
        ("dr", "10.0.1.101", 80, "dr", "syn_proxy = \"off\"\n"),
        ("ftp", "10.0.1.102", 21, "nat", "syn_proxy = \"off\"\nftp = true\n"),
        ("synweb", "10.0.1.103", 80, "nat", "syn_proxy = \"on\"\n"),
        ("fweb", "10.0.1.104", 80, "fnat", "syn_proxy = \"off\"\nlocal_addresses = [\"10.0.2.200-10.0.2.215\"]\n"),
    ] {
        t += &format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"tcp\"\nports = [{port}]\nscheduler = \"rr\"\nforward = \"{fwd}\"\n{extra}"
        );
        for i in 0..RS_COUNT {
            t += &format!("\n[[service.real_server]]\naddress = \"10.0.2.{}\"\n", 2 + i);
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
    w: Worker<MemQueue>,
    free: Vec<HeapBuf>,
    now: u64,
    len: usize,
    refills: u64,
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
        let w = Worker::new(id, queues, snap, fabric);
        let zero = vec![0u8; len.max(HEAD)];
        let free = (0..BURST * 8).map(|_| HeapBuf::from_slice(&zero)).collect();
        Rig { w, free, now: 1_000_000_000, len, refills: 0 }
    }

    #[inline]
    fn buf(&mut self) -> HeapBuf {
        match self.free.pop() {
            Some(b) => b,
            None => {
                self.refills += 1;
                HeapBuf::from_slice(&vec![0u8; self.len.max(HEAD)])
            }
        }
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

/// A set of pre-built packets: header templates (stride `HEAD`) and the
/// interface each arrives on.
struct Templates {
    head: Vec<u8>,
    iface: Vec<u8>,
    len: usize,
}

impl Templates {
    fn new(len: usize, n: usize) -> Self {
        Templates { head: Vec::with_capacity(n * HEAD), iface: Vec::with_capacity(n), len }
    }
    fn push(&mut self, iface: u8, f: &Frame4) {
        let mut b = [0u8; 2048];
        let n = write4(&mut b, f, self.len, b"");
        debug_assert_eq!(n, self.len);
        self.head.extend_from_slice(&b[..HEAD]);
        self.iface.push(iface);
    }
    /// A ready-made frame (its first `HEAD` bytes; shorter ones are zero-padded).
    fn push_raw(&mut self, iface: u8, f: &[u8]) {
        let mut h = [0u8; HEAD];
        let n = f.len().min(HEAD);
        h[..n].copy_from_slice(&f[..n]);
        self.head.extend_from_slice(&h);
        self.iface.push(iface);
    }
    fn count(&self) -> usize {
        self.iface.len()
    }
    fn shuffle(&mut self, rng: &mut Rng) {
        let n = self.count();
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let mut head = Vec::with_capacity(self.head.len());
        let mut iface = Vec::with_capacity(n);
        for i in order {
            head.extend_from_slice(&self.head[i * HEAD..(i + 1) * HEAD]);
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

/// Build the connections of a scenario through the pipeline and return
/// the measured packet set, and the virtual time per burst.
fn setup(
    rig: &mut Rig,
    sc: Scenario,
    w: usize,
    workers: usize,
    flows: usize,
    rng: &mut Rng,
) -> Result<(Templates, u64), String> {
    let len = rig.len;
    match sc {
        Scenario::Established
        | Scenario::Dr
        | Scenario::Fnat
        | Scenario::Synflood
        | Scenario::FloodUnknown
        | Scenario::FloodIcmp
        | Scenario::FloodArp => {
            let cl = clients(w, workers, flows);
            let vip = match sc {
                Scenario::Dr => VIP_DR,
                Scenario::Fnat => VIP_FNAT,
                _ => VIP_NAT,
            };
            let syns: Vec<Vec<u8>> =
                cl.iter().map(|&c| frame(&tcp(GW_MAC, LB_EXT, c, (vip, 80), TCP_SYN, 999, 0), len)).collect();
            let out = rig.batch(EXT, &syns)?;
            drop(syns);
            let rs: Vec<([u8; 4], u16)> = out.iter().map(|f| dst_of(f)).collect::<Result<_, _>>()?;
            // Where the real servers answer: the client (NAT) or the local address and port.
            let back: Vec<([u8; 4], u16)> = if sc == Scenario::Fnat {
                out.iter().map(|f| src_of(f)).collect::<Result<_, _>>()?
            } else {
                cl.clone()
            };
            drop(out);
            if sc == Scenario::Established || sc == Scenario::Fnat {
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
            let both = sc != Scenario::Dr;
            let flood = sc.is_flood();
            let mut t = Templates::new(len, flows * if both { 2 } else { 1 } * if flood { 2 } else { 1 });
            // Spoofed flood sources: this worker's, in another range than the clients.
            let spoofed = if flood { clients_from(0x6480_0000, w, workers, flows * 2) } else { Vec::new() };
            let mut k = 0;
            for ((&c, &r), &b) in cl.iter().zip(&rs).zip(&back) {
                t.push(EXT, &tcp(GW_MAC, LB_EXT, c, (vip, 80), TCP_ACK, 1000, 5000));
                if both {
                    t.push(INT, &tcp(rs_mac(r.0), LB_INT, r, b, TCP_ACK, 5000, 1000));
                }
                for _ in 0..if flood { 1 + usize::from(both) } else { 0 } {
                    let (a, p) = spoofed[k];
                    match sc {
                        Scenario::FloodUnknown => {
                            t.push(EXT, &tcp(GW_MAC, LB_EXT, (a, p), (VIP_NAT, 80), TCP_ACK, k as u32, 1))
                        }
                        Scenario::FloodIcmp => {
                            // "Port unreachable" from a spoofed host about VIP:80 -> it, which
                            // never was (the quoted ports lie past the 64-byte template: 0).
                            let quoted = crate::testpkt::udp4(VIP_NAT, 80, a, p, b"");
                            let f = crate::testpkt::icmp4_error(a, VIP_NAT, 3, 3, 0, &quoted);
                            t.push_raw(EXT, &crate::testpkt::with_macs(f, GW_MAC, LB_EXT));
                        }
                        Scenario::FloodArp => {
                            // Senders all over the client subnet (on link: learnt, bounded)
                            // and beyond it (ignored).
                            let sender = [10, 0, (k % 2) as u8 + 1, (k / 2 % 253) as u8 + 2];
                            let mac = [2, 0xaa, 0, 0, (k >> 8) as u8, k as u8];
                            t.push_raw(EXT, &crate::testpkt::arp_request(mac, sender, VIP_NAT));
                        }
                        _ => t.push(EXT, &tcp(GW_MAC, LB_EXT, (a, p), (VIP_SYN, 80), TCP_SYN, k as u32, 0)),
                    }
                    k += 1;
                }
            }
            t.shuffle(rng);
            Ok((t, 1_000))
        }
        Scenario::New => {
            let cl = clients(w, workers, flows);
            let mut t = Templates::new(len, flows);
            for &c in &cl {
                t.push(EXT, &tcp(GW_MAC, LB_EXT, c, (VIP_NAT, 80), TCP_SYN, 999, 0));
            }
            t.shuffle(rng);
            // SYN_RECV times out after half a cycle of the tuple space.
            let syn_recv = rig.w.snapshot().timeouts[crate::tcpstate::TcpState::SynRecv as usize];
            let per_pkt = syn_recv / (flows as u64 / 2).max(1) + 1;
            Ok((t, per_pkt * BURST as u64))
        }
        Scenario::Ftp => {
            let all = clients(w, workers, (flows / 3).max(1));
            let mut t = Templates::new(len, all.len() * 4);
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
                for ((&c, &r), (&vp, &rp)) in cl.iter().zip(&rs).zip(vports.iter().zip(&rports)) {
                    t.push(INT, &tcp(rs_mac(r), LB_INT, (r, rp), pdata(c), TCP_ACK, 8, 2));
                    t.push(EXT, &tcp(GW_MAC, LB_EXT, pdata(c), (VIP_FTP, vp), TCP_ACK, 2, 8));
                    t.push(INT, &tcp(rs_mac(r), LB_INT, (r, 20), adata(c), TCP_ACK, 8, 2));
                    t.push(EXT, &tcp(GW_MAC, LB_EXT, c, (VIP_FTP, 21), TCP_ACK, cseq + 40, sseq_ctl));
                }
            }
            t.shuffle(rng);
            Ok((t, 1_000))
        }
    }
}

/// The measured loop. Returns (packets, seconds).
fn measure(rig: &mut Rig, t: &Templates, packets: u64, dt_burst: u64, pos: &mut usize) -> (u64, f64) {
    let len = rig.len;
    let n = t.count();
    let head = &t.head[..];
    let ifaces = &t.iface[..];
    let mut k = *pos % n.max(1);
    let mut done = 0u64;
    let start = Instant::now();
    while done < packets {
        let burst = (BURST as u64).min(packets - done) as usize;
        for _ in 0..burst {
            let mut b = rig.buf();
            // The whole template (bytes past `len` are zero and lie past the
            // frame's end): a fixed 64-byte copy.
            b.restore(&head[k * HEAD..k * HEAD + HEAD], len);
            rig.w.queues_mut()[ifaces[k] as usize].rx.push_back(b);
            k += 1;
            if k == n {
                k = 0;
            }
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
        let len = size.clamp(64, 1518) - 4;
        let cfg = Arc::new(config(flows + flows / 8 + 1024, 1));
        let macs: Vec<[u8; 6]> = cfg.interfaces.iter().map(|i| i.mac.expect("bench config sets MACs")).collect();
        let snap = Arc::new(Snapshot::build(cfg, &macs));
        let mut rig = Rig::new(0, snap, Fabric::new(1), len);
        let (t, dt) = setup(&mut rig, scenario, 0, 1, flows, &mut Rng(0xbe9c_0000))?;
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

/// Run a bench.
pub fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    let workers = args.workers.max(1);
    if args.size < 64 || args.size > 1518 {
        return Err("--size must be 64..=1518 (frame size with FCS)".into());
    }
    // An ICMP error quoting a header + 8 bytes needs 70 bytes (74 on the wire).
    let len = if args.scenario == Scenario::FloodIcmp { args.size.max(74) - 4 } else { args.size - 4 };
    let per_worker_flows = (args.flows / workers).max(1);
    let per_worker_packets = (args.packets / workers as u64).max(1);
    // The table holds every connection of a worker, plus headroom (FTP:
    // three connections per session; `new`: the tuple space).
    let table = per_worker_flows + per_worker_flows / 8 + 1024;
    let cfg = Arc::new(config(table, workers));
    let macs: Vec<[u8; 6]> = cfg.interfaces.iter().map(|i| i.mac.expect("bench config sets MACs")).collect();
    let snap = Arc::new(Snapshot::build(cfg.clone(), &macs));
    let fabric: Arc<Fabric<HeapBuf>> = Fabric::new(workers);
    let cores = if args.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let barrier = Arc::new(Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let snap = snap.clone();
        let fabric = fabric.clone();
        let barrier = barrier.clone();
        let core = if cores.is_empty() { None } else { Some(cores[w % cores.len()]) };
        let sc = args.scenario;
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
                    let (t, dt) = set?;
                    if sc == Scenario::New {
                        // One cycle of the tuple space unmeasured: steady state.
                        measure(&mut rig, &t, t.count() as u64, dt, &mut 0);
                    }
                    let c0 = rig.w.counters().snapshot();
                    let start = Instant::now();
                    let (pk, secs) = measure(&mut rig, &t, per_worker_packets, dt, &mut 0);
                    let end = Instant::now();
                    let c1 = rig.w.counters().snapshot();
                    let dropped: u64 = c1.drops.iter().zip(&c0.drops).map(|(a, b)| a.1 - b.1).sum();
                    // Floods: every other packet is a flood packet.
                    let flood = if sc.is_flood() { pk / 2 } else { 0 };
                    Ok((
                        WorkerFigures {
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
                            setup_seconds,
                            cookies_per_sec: (c1.cookies_sent - c0.cookies_sent) as f64 / secs,
                            established_mpps: (pk - flood) as f64 / secs / 1e6,
                            flood_mpps: flood as f64 / secs / 1e6,
                        },
                        start,
                        end,
                    ))
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
        "scenario {:?}: {} workers, {} flows, {}-byte frames, {} packets in {:.3} s",
        r.scenario, r.workers, r.flows, r.frame_size, r.packets, r.wall_seconds
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
        if r.scenario == Scenario::Synflood {
            let _ = writeln!(
                s,
                "  worker {}: {:.2} M SYN cookies/s beside {:.2} Mpps of established traffic",
                f.worker,
                f.cookies_per_sec / 1e6,
                f.established_mpps
            );
        } else if r.scenario.is_flood() {
            let _ = writeln!(
                s,
                "  worker {}: {:.2} Mpps of flood beside {:.2} Mpps of established traffic",
                f.worker, f.flood_mpps, f.established_mpps
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(sc: Scenario, workers: usize) -> BenchReport {
        let a = BenchArgs { scenario: sc, flows: 3000, packets: 20_000, workers, size: 64, pin: false };
        run(&a).unwrap_or_else(|e| panic!("{sc:?}: {e}"))
    }

    #[test]
    fn scenarios_forward_everything() {
        for sc in
            [Scenario::Established, Scenario::New, Scenario::Dr, Scenario::Fnat, Scenario::Ftp, Scenario::Synflood]
        {
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

    #[test]
    fn floods_create_no_state_and_spare_established_traffic() {
        for sc in [Scenario::FloodUnknown, Scenario::FloodIcmp, Scenario::FloodArp] {
            let r = small(sc, 1);
            let w = &r.per_worker[0];
            assert_eq!(w.flows_created, 0, "{sc:?}: no state from the flood");
            // Every packet is accounted for: sent (established, ARP replies) or a counted drop.
            assert_eq!(w.tx_packets + w.dropped, r.packets, "{sc:?}: {:?}", r.drops);
            assert!(w.tx_packets >= r.packets / 2, "{sc:?}: established traffic forwarded");
            assert!(w.flood_mpps > 0.0 && w.established_mpps > 0.0);
        }
    }

    #[test]
    fn two_workers_no_handoff() {
        let r = small(Scenario::Established, 2);
        assert_eq!(r.dropped, 0);
        assert_eq!(r.per_worker.iter().map(|f| f.tx_packets).sum::<u64>(), r.packets);
    }
}
