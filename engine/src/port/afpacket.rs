//! AF_PACKET backend with memory-mapped rings.
//!
//! Each worker gets its own `AF_PACKET`/`SOCK_RAW` socket per interface,
//! bound to the interface's ifindex with `ETH_P_ALL`. When there is more
//! than one worker the sockets join one `PACKET_FANOUT` group in
//! `PACKET_FANOUT_HASH` mode (with `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`,
//! Linux ≥ 4.20), so the kernel spreads flows over workers and a
//! flow always lands on the same worker (the hash is the kernel's
//! symmetric flow hash). The group id is derived from the pid, the ifindex
//! and a per-process counter; if that id is taken by a group the socket
//! cannot join, a kernel-allocated unique id is used instead. Non-first IP
//! fragments carry no ports and may hash differently from the first one
//! (no `PACKET_FANOUT_FLAG_DEFRAG`: the load balancer must not forward
//! reassembled datagrams).
//!
//! * **RX** uses a `TPACKET_V3` ring (block based, default 64 × 64 KiB =
//!   4 MiB per queue, 1 ms block retire timeout). `rx_burst` copies frames
//!   out of the ring into pooled [`HeapBuf`]s and hands each block back to
//!   the kernel as soon as it is consumed. It never blocks and never calls
//!   `poll(2)`. A VLAN tag the kernel stripped (`TP_STATUS_VLAN_VALID`) is
//!   re-inserted so the pipeline sees the frame as it was on the wire.
//!   Frames longer than a buffer ([`MAX_FRAME`]) or cut short by the ring
//!   (`tp_len` > `tp_snaplen`) — e.g. GRO/LRO super-frames, or TSO/GSO ones a
//!   local stack sends over a veth — are dropped and counted (`rx_oversize`,
//!   the port's `rx_errors`); turn GRO/LRO off on the interface
//!   (`ethtool -K DEV gro off lro off`) and TSO/GSO on a veth's peer. One that
//!   fits a buffer but not the egress MTU is any too big packet to the pipeline
//!   ("fragmentation needed" / "packet too big" or `too_big`, `tx_oversize` at
//!   the last); the port never splits one.
//! * **TX** uses a `PACKET_TX_RING` on the same socket (same `TPACKET_V3`
//!   version, which the kernel drives as fixed-size frames: default 16 ×
//!   64 KiB = 1 MiB, 464 frames of 2224 bytes). `tx_burst` copies each packet
//!   into the next free frame, then kicks the kernel once per burst with
//!   `sendto(fd, NULL, 0, MSG_DONTWAIT)`. A packet that finds the next frame
//!   still owned by the kernel is dropped and counted (never waits).
//!   `PACKET_QDISC_BYPASS` is set (best effort) so frames go straight to the
//!   driver, and `PACKET_LOSS` so a malformed frame is skipped rather than
//!   wedging the ring. **Fallback:** only if the kernel refuses the TX ring
//!   does the queue send each packet with a plain `send(MSG_DONTWAIT)`
//!   ([`TxMode::Send`]); failures are counted as drops.
//! * `PACKET_IGNORE_OUTGOING` (best effort) keeps our own transmissions
//!   out of the RX ring, and `PACKET_ADD_MEMBERSHIP`/`PACKET_MR_PROMISC`
//!   puts the interface in promiscuous mode for as long as the sockets live,
//!   so frames for VIP MACs are seen.
//!
//! Buffers: every queue allocates a free list of [`HeapBuf`]s once. Buffers
//! the pipeline transmits go back to the free list of the queue that sent
//! them; since a worker may receive on one port and transmit on another,
//! a queue whose free list grows too long spills a batch into a bounded
//! process-wide lock-free pool, and a queue that runs dry refills from it
//! before allocating. Steady-state forwarding therefore allocates nothing.
//!
//! Checksums: frames locally generated on the same host (a stack behind a
//! veth with transmit checksum offload on) may arrive with
//! `TP_STATUS_CSUMNOTREADY` (CHECKSUM_PARTIAL: the TCP/UDP checksum field
//! holds only the pseudo-header sum). The port completes the checksum of such
//! a TCP or UDP frame (not a fragment) on receive, as the device would have
//! (`rx_checksum`), so the pipeline sees what the wire would carry: counted
//! in [`AfPacketStats::rx_csum_not_ready`], the completed ones in
//! [`AfPacketStats::rx_csum_completed`] (reported as the port's
//! [`PortCounters::rx_csum_partial`] and [`PortCounters::rx_csum_completed`],
//! with the VLAN tags put back as [`PortCounters::rx_vlan_restored`]: `ferrovsadm
//! ports`, the metrics). Frames from a NIC never carry the
//! status bit and pay nothing. The port reports no checksum offload in either
//! direction.

use super::memory::HeapBuf;
use super::{Packet, PortCaps, PortCounters, PortQueue, TxResult, BURST, MAX_FRAME};
use crate::wire::{csum, parse};
use crossbeam_queue::ArrayQueue;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

// ---- kernel ABI (linux/if_packet.h, linux/if_ether.h, linux/if_arp.h) ----
// Defined here rather than taken from `libc` so the code does not depend on
// which libc release exposes them; these values are fixed kernel ABI.

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_LOSS: libc::c_int = 14;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;
/// Fanout mode of every group: flow hash, and (since a group has its own
/// packet hook, which does not look at the member sockets'
/// `PACKET_IGNORE_OUTGOING`) ignore our own transmissions at group level.
const FANOUT_MODE: u32 = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
const TPACKET_V3: libc::c_int = 2;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1 << 0;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1 << 0;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ETH_P_8021Q: u16 = 0x8100;

/// `struct tpacket_req3`.
#[repr(C)]
#[derive(Default)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

/// `struct tpacket3_hdr` (with `tpacket_hdr_variant1` flattened).
#[repr(C)]
struct Tpacket3Hdr {
    tp_next_offset: u32,
    tp_sec: u32,
    tp_nsec: u32,
    tp_snaplen: u32,
    tp_len: u32,
    tp_status: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_rxhash: u32,
    tp_vlan_tci: u32,
    tp_vlan_tpid: u16,
    tp_padding: u16,
    tp_padding2: [u8; 8],
}

/// `struct tpacket_block_desc` with `tpacket_hdr_v1` flattened.
#[repr(C)]
struct TpacketBlockDesc {
    version: u32,
    offset_to_priv: u32,
    block_status: u32,
    num_pkts: u32,
    offset_to_first_pkt: u32,
    blk_len: u32,
    seq_num: u64,
    ts_first_pkt: [u32; 2],
    ts_last_pkt: [u32; 2],
}

/// `struct tpacket_stats_v3`.
#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: u32,
    tp_drops: u32,
    tp_freeze_q_cnt: u32,
}

const TPACKET_ALIGNMENT: usize = 16;
const fn tpacket_align(x: usize) -> usize {
    (x + TPACKET_ALIGNMENT - 1) & !(TPACKET_ALIGNMENT - 1)
}
/// Where the kernel expects frame data in a TX ring frame when
/// `PACKET_TX_HAS_OFF` is off: `TPACKET3_HDRLEN - sizeof(sockaddr_ll)`.
const TX_DATA_OFF: usize = tpacket_align(size_of::<Tpacket3Hdr>());

const _: () = assert!(size_of::<Tpacket3Hdr>() == 48);
const _: () = assert!(size_of::<TpacketBlockDesc>() == 48);
const _: () = assert!(std::mem::offset_of!(TpacketBlockDesc, block_status) == 8);
const _: () = assert!(std::mem::offset_of!(Tpacket3Hdr, tp_status) == 20);
const _: () = assert!(std::mem::offset_of!(Tpacket3Hdr, tp_vlan_tci) == 32);

// ---- configuration, errors, stats ----

/// Ring and pool sizes of a queue. The defaults suit 2 workers × several
/// interfaces: 4 MiB RX + 1 MiB TX of kernel memory per queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// RX block size (a multiple of the page size).
    pub rx_block_size: u32,
    pub rx_block_nr: u32,
    /// Milliseconds after which the kernel hands over a partly filled RX
    /// block (the worst-case added latency at low packet rates).
    pub rx_block_timeout_ms: u32,
    /// TX block size (a multiple of the page size).
    pub tx_block_size: u32,
    pub tx_block_nr: u32,
    /// TX frame slot size, 16-byte aligned; holds a 48-byte header and the
    /// frame.
    pub tx_frame_size: u32,
    /// Buffers allocated up front for the queue's free list.
    pub pool_bufs: usize,
    /// Use a TX ring (`false` forces the `send` fallback).
    pub tx_ring: bool,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            rx_block_size: 64 << 10,
            rx_block_nr: 64,
            rx_block_timeout_ms: 1,
            tx_block_size: 64 << 10,
            tx_block_nr: 16,
            tx_frame_size: tpacket_align(TX_DATA_OFF + MAX_FRAME + super::HEADROOM) as u32,
            pool_bufs: 512,
            tx_ring: true,
        }
    }
}

/// Why an AF_PACKET port could not be opened. Messages name the device.
#[derive(Debug)]
pub enum AfPacketError {
    /// The device does not exist (in this network namespace).
    NoSuchInterface { device: String },
    /// Opening a packet socket was refused.
    PermissionDenied { device: String },
    /// The device is not Ethernet-like (its ARPHRD type is given).
    NotEthernet { device: String, hw_type: u16 },
    /// Bad arguments or ring configuration.
    Config { device: String, msg: String },
    /// A system call failed.
    Sys { device: String, what: &'static str, err: io::Error },
}

impl fmt::Display for AfPacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AfPacketError::NoSuchInterface { device } => write!(f, "{device}: no such interface"),
            AfPacketError::PermissionDenied { device } => {
                write!(f, "{device}: opening an AF_PACKET socket needs root/CAP_NET_RAW (permission denied)")
            }
            AfPacketError::NotEthernet { device, hw_type } => {
                write!(f, "{device}: not an Ethernet interface (ARPHRD type {hw_type})")
            }
            AfPacketError::Config { device, msg } => write!(f, "{device}: {msg}"),
            AfPacketError::Sys { device, what, err } => write!(f, "{device}: {what}: {err}"),
        }
    }
}

impl std::error::Error for AfPacketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AfPacketError::Sys { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// How a queue transmits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// `PACKET_TX_RING`, one `sendto` kick per burst.
    Ring,
    /// Fallback: one `send` per packet (the kernel refused the TX ring).
    Send,
}

/// Per-queue counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames longer than a buffer, dropped.
    pub rx_oversize: u64,
    /// Frames whose stripped VLAN tag was re-inserted.
    pub rx_vlan_reinserted: u64,
    /// Frames received with their checksum left to offload (`TP_STATUS_CSUMNOTREADY`).
    pub rx_csum_not_ready: u64,
    /// Of those, TCP/UDP frames whose checksum the port completed.
    pub rx_csum_completed: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets dropped because the next TX ring frame was still in flight.
    pub tx_ring_full: u64,
    /// Packets dropped because they are empty, do not fit a TX frame, or
    /// exceed the device MTU (+ Ethernet header, + 4 if VLAN-tagged).
    pub tx_oversize: u64,
    /// `send` failures (fallback mode) and failed kicks (ring mode).
    pub tx_errors: u64,
    /// Buffers allocated because the pools were empty.
    pub pool_allocs: u64,
}

impl AfPacketStats {
    /// These as the generic [`PortCounters`] report them ([`PortQueue::counters`]), with
    /// `kernel_drops` the kernel's `tp_drops` summed so far.
    fn port_counters(&self, kernel_drops: u64) -> PortCounters {
        PortCounters {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            rx_dropped: kernel_drops,
            rx_nobuf: 0,
            rx_errors: self.rx_oversize,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            tx_dropped: self.tx_ring_full,
            tx_errors: self.tx_oversize + self.tx_errors,
            rx_csum_partial: self.rx_csum_not_ready,
            rx_csum_completed: self.rx_csum_completed,
            rx_vlan_restored: self.rx_vlan_reinserted,
        }
    }
}

/// Kernel-side counters from `PACKET_STATISTICS` (reset on every read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames that reached the socket (including those dropped).
    pub packets: u32,
    /// Frames dropped because the RX ring was full.
    pub drops: u32,
    /// Times the ring was frozen because it was full.
    pub freeze_q_cnt: u32,
}

// ---- buffer pools ----

/// Free list length above which a queue spills to the shared pool.
const LOCAL_HIGH: usize = 2048;
/// Buffers moved per spill/refill.
const SPILL: usize = 4 * BURST;
/// Capacity of the process-wide pool (≈ 36 MiB of buffers at most).
const GLOBAL_POOL_CAP: usize = 16384;

fn global_pool() -> &'static ArrayQueue<HeapBuf> {
    static POOL: OnceLock<ArrayQueue<HeapBuf>> = OnceLock::new();
    POOL.get_or_init(|| ArrayQueue::new(GLOBAL_POOL_CAP))
}

// ---- the queue ----

/// One worker's AF_PACKET queue of one interface.
pub struct AfPacketQueue {
    fd: OwnedFd,
    caps: PortCaps,
    device: String,
    /// The mapping holding the RX ring, followed by the TX ring (if any).
    map: *mut u8,
    map_len: usize,
    // RX ring.
    rx_block_size: usize,
    rx_block_nr: usize,
    rx_block: usize,
    /// Packets left in the current block (0: no block held).
    rx_left: u32,
    /// Offset of the next packet header inside the current block.
    rx_off: usize,
    rx_holding: bool,
    // TX ring.
    tx_mode: TxMode,
    tx_ring: *mut u8,
    tx_block_size: usize,
    tx_frame_size: usize,
    tx_frames_per_block: usize,
    tx_frame_nr: usize,
    tx_head: usize,
    /// Largest untagged frame the device accepts (MTU + Ethernet header).
    tx_mtu_frame: usize,
    /// The last kick failed transiently: kick again from `flush`.
    tx_retry: bool,
    free: Vec<HeapBuf>,
    stats: AfPacketStats,
    /// The kernel's `tp_drops` summed over every `PACKET_STATISTICS` read (each read clears
    /// the kernel's counter).
    kernel_drops: u64,
}

// SAFETY: the raw pointers point into a mapping owned exclusively by this
// queue (unmapped only in Drop); nothing else in the process aliases it, so
// moving the queue to another thread is sound. The kernel side of the ring
// is synchronised through the status words with atomic acquire/release.
unsafe impl Send for AfPacketQueue {}

/// The addresses the host's kernel has on the AF_PACKET devices of `config` (none for another
/// backend): the engine sees their frames too (BGP, BFD, sync, health checks) and leaves them
/// to the kernel without counting them as lost connections. Read when a snapshot is built, at
/// start and at each reload.
pub fn kernel_addresses(config: &ferrovs_cfg::Config) -> Vec<crate::wire::parse::Addr> {
    if config.engine.backend != ferrovs_cfg::Backend::AfPacket {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocated, freed below with freeifaddrs;
    // each entry's name is a NUL-terminated string and its address (when not null) a sockaddr
    // of the family it names, valid until then.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if !config.interfaces.iter().any(|i| i.device == name) {
                continue;
            }
            let ip: std::net::IpAddr = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)).into()
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr).into()
                }
                _ => continue,
            };
            out.push(crate::wire::parse::ip_to_addr(ip));
        }
        libc::freeifaddrs(head);
    }
    out
}

fn sys_err(device: &str, what: &'static str) -> AfPacketError {
    AfPacketError::Sys { device: device.to_string(), what, err: io::Error::last_os_error() }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a valid, initialised T for the duration of the call and
    // its exact size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(fd, SOL_PACKET, opt, val as *const T as *const libc::c_void, size_of::<T>() as libc::socklen_t)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A fanout group id from the pid, the ifindex and a per-process counter
/// (so a second `open` of the same device in one process, e.g. on reload,
/// never joins the first one's group).
fn fanout_id(pid: u32, ifindex: u32, seq: u32, attempt: u32) -> u16 {
    let mut h = pid.wrapping_mul(0x9E37_79B1)
        ^ ifindex.wrapping_mul(0x85EB_CA6B)
        ^ seq.wrapping_mul(0xC2B2_AE35)
        ^ attempt.wrapping_mul(0x27D4_EB2F);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 13;
    (h ^ (h >> 16)) as u16
}

/// Complete the transport checksum of a received frame `d` whose ring status `status` says
/// it was left to offload (`TP_STATUS_CSUMNOTREADY`: CHECKSUM_PARTIAL, a frame a local stack
/// sent over a veth with transmit checksum offload on). Its TCP/UDP checksum field holds only
/// the pseudo-header sum, which the pipeline would forward as is (the receiver drops the
/// segment) or, where it verifies checksums ([`csum::l4_ok`]), drop as `l4_bad_csum`. It is
/// computed from scratch over the whole segment, as the device would have; only TCP and UDP
/// over IPv4/IPv6, not a fragment (what Linux's stack leaves partial; ICMP is always summed
/// in software). Anything else the parser refuses or does not cover stays as it was, for
/// the pipeline to judge. Frames from a real NIC never carry the status bit, so they pay
/// only the test of one bit.
fn rx_checksum(d: &mut [u8], status: u32, stats: &mut AfPacketStats) {
    if status & TP_STATUS_CSUMNOTREADY == 0 {
        return;
    }
    stats.rx_csum_not_ready += 1;
    let Ok(p) = parse::parse(d) else { return };
    if p.arp || !matches!(p.proto, parse::PROTO_TCP | parse::PROTO_UDP) {
        return;
    }
    if csum::fill_l4(d, &p).is_ok() {
        stats.rx_csum_completed += 1;
    }
}

/// Insert an 802.1Q/802.1ad tag after the MAC addresses of `frame` into `b`.
fn fill_with_vlan(b: &mut HeapBuf, frame: &[u8], tpid: u16, tci: u16) -> bool {
    if frame.len() < 12 || !b.set_len(frame.len() + 4) {
        return false;
    }
    let d = b.data_mut();
    d[..12].copy_from_slice(&frame[..12]);
    d[12..14].copy_from_slice(&tpid.to_be_bytes());
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    d[16..].copy_from_slice(&frame[12..]);
    true
}

struct IfInfo {
    mac: [u8; 6],
    mtu: u32,
}

fn if_info(fd: RawFd, device: &str, cname: &CString) -> Result<IfInfo, AfPacketError> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name (NUL-terminated: the name is
    // shorter than IFNAMSIZ and the rest is zero) and writes ifru_hwaddr
    // inside the ifreq we own.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) } < 0 {
        return Err(sys_err(device, "SIOCGIFHWADDR"));
    }
    // SAFETY: the ioctl succeeded, so the union holds ifru_hwaddr.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != ARPHRD_ETHER && hw.sa_family != ARPHRD_LOOPBACK {
        return Err(AfPacketError::NotEthernet { device: device.into(), hw_type: hw.sa_family });
    }
    let mut mac = [0u8; 6];
    for (m, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *m = *s as u8;
    }
    // SAFETY: as above; SIOCGIFMTU writes ifru_mtu.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut ifr) } < 0 {
        return Err(sys_err(device, "SIOCGIFMTU"));
    }
    // SAFETY: the ioctl succeeded, so the union holds ifru_mtu.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(IfInfo { mac, mtu: mtu.max(0) as u32 })
}

fn new_socket(device: &str) -> Result<OwnedFd, AfPacketError> {
    // Protocol 0: the socket receives nothing until bound with ETH_P_ALL
    // after the rings are set up.
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => AfPacketError::PermissionDenied { device: device.into() },
            _ => AfPacketError::Sys { device: device.into(), what: "socket(AF_PACKET)", err },
        });
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `device` with one queue per worker and default ring sizes. `name`
/// is the configured interface name reported in [`PortCaps`];
/// `mac_override` replaces the interface MAC in the caps.
pub fn open(
    device: &str,
    workers: usize,
    mac_override: Option<[u8; 6]>,
    name: &str,
) -> Result<Vec<AfPacketQueue>, AfPacketError> {
    open_with(device, workers, mac_override, name, &AfPacketConfig::default())
}

/// [`open`] with explicit ring and pool sizes.
pub fn open_with(
    device: &str,
    workers: usize,
    mac_override: Option<[u8; 6]>,
    name: &str,
    cfg: &AfPacketConfig,
) -> Result<Vec<AfPacketQueue>, AfPacketError> {
    let config_err = |msg: String| AfPacketError::Config { device: device.into(), msg };
    if workers == 0 || workers > u16::MAX as usize {
        return Err(config_err(format!("invalid worker count {workers}")));
    }
    if device.is_empty() || device.len() >= libc::IFNAMSIZ || device.contains(['\0', '/']) {
        return Err(AfPacketError::NoSuchInterface { device: device.into() });
    }
    let cname = CString::new(device).map_err(|_| AfPacketError::NoSuchInterface { device: device.into() })?;
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(AfPacketError::NoSuchInterface { device: device.into() });
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if cfg.rx_block_size == 0
        || !cfg.rx_block_size.is_multiple_of(page)
        || cfg.rx_block_nr == 0
        || (cfg.tx_ring
            && (cfg.tx_block_size == 0
                || !cfg.tx_block_size.is_multiple_of(page)
                || cfg.tx_block_nr == 0
                || !(cfg.tx_frame_size as usize).is_multiple_of(TPACKET_ALIGNMENT)
                || (cfg.tx_frame_size as usize) < TX_DATA_OFF + 64
                || cfg.tx_frame_size > cfg.tx_block_size))
    {
        return Err(config_err(format!("invalid ring configuration {cfg:?} (page size {page})")));
    }

    let mut queues = Vec::with_capacity(workers);
    let mut fanout_arg: Option<u32> = None;
    // Caps and device MTU, read through the first socket.
    let mut first: Option<(PortCaps, u32)> = None;
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    for _ in 0..workers {
        let fd = new_socket(device)?;
        let (caps, mtu) = match &first {
            Some(f) => f.clone(),
            None => {
                let info = if_info(fd.as_raw_fd(), device, &cname)?;
                let caps = PortCaps {
                    name: name.to_string(),
                    mac: mac_override.unwrap_or(info.mac),
                    queues: workers as u16,
                    mtu: info.mtu.min(u16::MAX as u32) as u16,
                };
                first.insert((caps, info.mtu)).clone()
            }
        };
        let mut q = AfPacketQueue::setup(fd, device, ifindex, caps, mtu, cfg)?;
        if workers > 1 {
            q.join_fanout(ifindex, seq, &mut fanout_arg)?;
        }
        queues.push(q);
    }
    Ok(queues)
}

impl AfPacketQueue {
    fn setup(
        fd: OwnedFd,
        device: &str,
        ifindex: u32,
        caps: PortCaps,
        mtu: u32,
        cfg: &AfPacketConfig,
    ) -> Result<AfPacketQueue, AfPacketError> {
        let raw = fd.as_raw_fd();
        let err = |what| sys_err(device, what);
        setsockopt(raw, PACKET_VERSION, &TPACKET_V3).map_err(|_| err("PACKET_VERSION(TPACKET_V3)"))?;
        // Skip (rather than stall on) a TX frame the kernel cannot send.
        let _ = setsockopt(raw, PACKET_LOSS, &1 as &libc::c_int);

        let rx_frame_size = 2048u32;
        let rx_req = TpacketReq3 {
            tp_block_size: cfg.rx_block_size,
            tp_block_nr: cfg.rx_block_nr,
            tp_frame_size: rx_frame_size,
            tp_frame_nr: (cfg.rx_block_size / rx_frame_size) * cfg.rx_block_nr,
            tp_retire_blk_tov: cfg.rx_block_timeout_ms.max(1),
            ..Default::default()
        };
        setsockopt(raw, PACKET_RX_RING, &rx_req).map_err(|_| err("PACKET_RX_RING"))?;
        let rx_len = cfg.rx_block_size as usize * cfg.rx_block_nr as usize;

        let mut tx_mode = TxMode::Send;
        let mut tx_len = 0usize;
        let tx_fpb = (cfg.tx_block_size / cfg.tx_frame_size.max(1)) as usize;
        if cfg.tx_ring {
            let tx_req = TpacketReq3 {
                tp_block_size: cfg.tx_block_size,
                tp_block_nr: cfg.tx_block_nr,
                tp_frame_size: cfg.tx_frame_size,
                tp_frame_nr: tx_fpb as u32 * cfg.tx_block_nr,
                ..Default::default()
            };
            match setsockopt(raw, PACKET_TX_RING, &tx_req) {
                Ok(()) => {
                    tx_mode = TxMode::Ring;
                    tx_len = cfg.tx_block_size as usize * cfg.tx_block_nr as usize;
                }
                Err(e) => {
                    tracing::warn!(device, "PACKET_TX_RING refused ({e}), falling back to send()")
                }
            }
        }
        let map_len = rx_len + tx_len;
        // SAFETY: mapping a packet socket's rings: the kernel validates the
        // length against the configured rings; we own the fd.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(err("mmap of packet rings"));
        }
        let map = map as *mut u8;
        let mut free = Vec::with_capacity(cfg.pool_bufs.max(2 * BURST));
        free.extend((0..cfg.pool_bufs).map(|_| HeapBuf::new()));
        // From here on Drop unmaps and closes on any error.
        let q = AfPacketQueue {
            fd,
            caps,
            device: device.to_string(),
            map,
            map_len,
            rx_block_size: cfg.rx_block_size as usize,
            rx_block_nr: cfg.rx_block_nr as usize,
            rx_block: 0,
            rx_left: 0,
            rx_off: 0,
            rx_holding: false,
            tx_mode,
            // SAFETY: rx_len <= map_len; the TX ring (if any) follows the RX
            // ring in the mapping.
            tx_ring: unsafe { map.add(rx_len) },
            tx_block_size: cfg.tx_block_size as usize,
            tx_frame_size: cfg.tx_frame_size as usize,
            tx_frames_per_block: tx_fpb,
            tx_frame_nr: if tx_mode == TxMode::Ring { tx_fpb * cfg.tx_block_nr as usize } else { 0 },
            tx_head: 0,
            tx_mtu_frame: mtu as usize + 14,
            tx_retry: false,
            free,
            stats: AfPacketStats::default(),
            kernel_drops: 0,
        };

        if let Err(e) = setsockopt(raw, PACKET_QDISC_BYPASS, &1 as &libc::c_int) {
            tracing::debug!(device, "PACKET_QDISC_BYPASS not set: {e}");
        }
        if let Err(e) = setsockopt(raw, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int) {
            tracing::warn!(device, "PACKET_IGNORE_OUTGOING not set, own frames will be received: {e}");
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                raw,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(if io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) {
                AfPacketError::NoSuchInterface { device: device.into() }
            } else {
                err("bind")
            });
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(raw, PACKET_ADD_MEMBERSHIP, &mreq).map_err(|_| err("PACKET_ADD_MEMBERSHIP(PROMISC)"))?;
        Ok(q)
    }

    /// Join the interface's fanout group; the first socket picks the id.
    fn join_fanout(&mut self, ifindex: u32, seq: u32, arg: &mut Option<u32>) -> Result<(), AfPacketError> {
        let raw = self.fd.as_raw_fd();
        if let Some(a) = *arg {
            return setsockopt(raw, PACKET_FANOUT, &a)
                .map_err(|_| sys_err(&self.device, "PACKET_FANOUT (joining group)"));
        }
        let pid = std::process::id();
        for attempt in 0..8 {
            let a = fanout_id(pid, ifindex, seq, attempt) as u32 | (FANOUT_MODE << 16);
            if setsockopt(raw, PACKET_FANOUT, &a).is_ok() {
                *arg = Some(a);
                return Ok(());
            }
        }
        // Every derived id is taken by an incompatible group: let the kernel
        // pick a unique one and read it back.
        let a = (FANOUT_MODE | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
        setsockopt(raw, PACKET_FANOUT, &a).map_err(|_| sys_err(&self.device, "PACKET_FANOUT"))?;
        let mut got: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: `got` is a valid u32 of the size passed in `len`.
        let r = unsafe {
            libc::getsockopt(raw, SOL_PACKET, PACKET_FANOUT, &mut got as *mut u32 as *mut libc::c_void, &mut len)
        };
        if r < 0 {
            return Err(sys_err(&self.device, "getsockopt(PACKET_FANOUT)"));
        }
        // The read-back value carries the flags too; members join with the
        // id and the mode, without UNIQUEID.
        *arg = Some((got & 0xffff) | (FANOUT_MODE << 16));
        Ok(())
    }

    /// Device this queue is bound to.
    pub fn device(&self) -> &str {
        &self.device
    }
    /// How this queue transmits.
    pub fn tx_mode(&self) -> TxMode {
        self.tx_mode
    }
    /// Frames in the TX ring (0 in the `send` fallback).
    pub fn tx_ring_frames(&self) -> usize {
        self.tx_frame_nr
    }
    /// Largest frame a TX ring slot holds.
    pub fn tx_max_frame(&self) -> usize {
        match self.tx_mode {
            TxMode::Ring => self.tx_frame_size - TX_DATA_OFF,
            TxMode::Send => MAX_FRAME + super::HEADROOM,
        }
    }
    /// Cumulative counters.
    pub fn stats(&self) -> AfPacketStats {
        self.stats
    }
    /// Return a buffer the pipeline is done with (a dropped packet) to this
    /// queue's pool instead of freeing it.
    pub fn recycle(&mut self, b: HeapBuf) {
        self.put_buf(b);
    }

    /// Kernel counters since the last call (`PACKET_STATISTICS`; its drops are also summed
    /// into [`PortQueue::counters`]'s `rx_dropped`).
    pub fn kernel_stats(&mut self) -> io::Result<KernelStats> {
        let mut s = TpacketStatsV3::default();
        let mut len = size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `s` is a valid tpacket_stats_v3 of the size passed in `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                &mut s as *mut TpacketStatsV3 as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.kernel_drops += s.tp_drops as u64;
        Ok(KernelStats { packets: s.tp_packets, drops: s.tp_drops, freeze_q_cnt: s.tp_freeze_q_cnt })
    }

    /// The frame is too long for the device (tagged frames may carry 4
    /// bytes more, as the kernel allows).
    #[inline]
    fn over_mtu(&self, d: &[u8]) -> bool {
        let tagged = d.len() >= 14 && matches!([d[12], d[13]], [0x81, 0x00] | [0x88, 0xa8]);
        d.len() > self.tx_mtu_frame + if tagged { 4 } else { 0 }
    }

    #[inline]
    fn get_buf(&mut self) -> HeapBuf {
        if let Some(b) = self.free.pop() {
            return b;
        }
        let pool = global_pool();
        for _ in 0..SPILL {
            match pool.pop() {
                Some(b) => self.free.push(b),
                None => break,
            }
        }
        self.free.pop().unwrap_or_else(|| {
            self.stats.pool_allocs += 1;
            HeapBuf::new()
        })
    }

    #[inline]
    fn put_buf(&mut self, mut b: HeapBuf) {
        b.reset();
        self.free.push(b);
        if self.free.len() > LOCAL_HIGH {
            let pool = global_pool();
            for _ in 0..SPILL {
                let Some(b) = self.free.pop() else { break };
                // A full shared pool: free the buffer.
                let _ = pool.push(b);
            }
        }
    }

    #[inline]
    fn rx_block_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY (of the arithmetic): i < rx_block_nr, so the offset stays
        // inside the RX ring part of the mapping.
        unsafe { self.map.add(i * self.rx_block_size) }
    }

    #[inline]
    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: block_status is a 4-byte aligned u32 at offset 8 of a
        // page-aligned block inside our mapping; the kernel writes it
        // concurrently, so it is only accessed atomically.
        unsafe { &*(self.rx_block_ptr(i).add(8) as *const AtomicU32) }
    }

    /// Hand the current block back to the kernel and move to the next one.
    #[inline]
    fn release_block(&mut self) {
        self.block_status(self.rx_block).store(TP_STATUS_KERNEL, Ordering::Release);
        self.rx_block = (self.rx_block + 1) % self.rx_block_nr;
        self.rx_holding = false;
        self.rx_left = 0;
    }

    #[inline]
    fn tx_frame_ptr(&self, i: usize) -> *mut u8 {
        let off =
            (i / self.tx_frames_per_block) * self.tx_block_size + (i % self.tx_frames_per_block) * self.tx_frame_size;
        // SAFETY (of the arithmetic): i < tx_frame_nr, so the frame lies
        // inside the TX ring part of the mapping.
        unsafe { self.tx_ring.add(off) }
    }

    #[inline]
    fn tx_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is a 4-byte aligned u32 at offset 20 of a 16-byte
        // aligned frame inside our mapping, shared with the kernel and only
        // accessed atomically.
        unsafe { &*(self.tx_frame_ptr(i).add(20) as *const AtomicU32) }
    }

    fn kick(&mut self) {
        // SAFETY: a NULL/0 send on a packet socket with a TX ring asks the
        // kernel to transmit the frames marked SEND_REQUEST; no user memory
        // is passed.
        let r = unsafe { libc::sendto(self.fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
        self.tx_retry = false;
        if r < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Device queue busy / out of buffers: frames not sent stay
                // SEND_REQUEST; try again from flush().
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => self.tx_retry = true,
                _ => self.stats.tx_errors += 1,
            }
        }
    }

    fn tx_ring_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let mut res = TxResult::default();
        let max = self.tx_max_frame();
        let mut queued = 0;
        let mut drained = std::mem::take(pkts);
        for p in drained.drain(..) {
            let len = p.len();
            if len == 0 || len > max || self.over_mtu(p.data()) {
                self.stats.tx_oversize += 1;
                res.dropped += 1;
            } else {
                let i = self.tx_head;
                let st = self.tx_status(i).load(Ordering::Acquire);
                if st == TP_STATUS_AVAILABLE || st == TP_STATUS_WRONG_FORMAT {
                    let f = self.tx_frame_ptr(i);
                    // SAFETY: the frame is AVAILABLE (or rejected), so the
                    // kernel does not touch it until we set SEND_REQUEST;
                    // len <= frame_size - TX_DATA_OFF so the copy stays in
                    // the frame; header fields are written through raw
                    // pointers to the (aligned) Tpacket3Hdr at the frame
                    // start.
                    unsafe {
                        ptr::copy_nonoverlapping(p.data().as_ptr(), f.add(TX_DATA_OFF), len);
                        let h = f as *mut Tpacket3Hdr;
                        ptr::addr_of_mut!((*h).tp_next_offset).write(0);
                        ptr::addr_of_mut!((*h).tp_len).write(len as u32);
                        ptr::addr_of_mut!((*h).tp_snaplen).write(len as u32);
                    }
                    self.tx_status(i).store(TP_STATUS_SEND_REQUEST, Ordering::Release);
                    self.tx_head = (i + 1) % self.tx_frame_nr;
                    queued += 1;
                    res.sent += 1;
                    res.bytes += len as u64;
                } else {
                    self.stats.tx_ring_full += 1;
                    res.dropped += 1;
                }
            }
            self.put_buf(p);
        }
        *pkts = drained;
        if queued > 0 {
            self.kick();
        }
        res
    }

    fn tx_send_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let mut res = TxResult::default();
        let mut drained = std::mem::take(pkts);
        for p in drained.drain(..) {
            let d = p.data();
            if d.is_empty() || self.over_mtu(d) {
                self.stats.tx_oversize += 1;
                res.dropped += 1;
                self.put_buf(p);
                continue;
            }
            // SAFETY: `d` is a valid slice for the duration of the call; the
            // socket is bound, so no destination address is needed.
            let r = unsafe {
                libc::send(self.fd.as_raw_fd(), d.as_ptr() as *const libc::c_void, d.len(), libc::MSG_DONTWAIT)
            };
            if r == d.len() as isize {
                res.sent += 1;
                res.bytes += d.len() as u64;
            } else {
                self.stats.tx_errors += 1;
                res.dropped += 1;
            }
            self.put_buf(p);
        }
        *pkts = drained;
        res
    }
}

impl PortQueue for AfPacketQueue {
    type Buf = HeapBuf;
    type Alloc = super::HeapAlloc;

    fn rx_burst(&mut self, out: &mut Vec<HeapBuf>) -> usize {
        let mut n = 0;
        while out.len() < BURST {
            if !self.rx_holding {
                let st = self.block_status(self.rx_block).load(Ordering::Acquire);
                if st & TP_STATUS_USER == 0 {
                    break;
                }
                let bd = self.rx_block_ptr(self.rx_block) as *const TpacketBlockDesc;
                // SAFETY: the block belongs to user space (status acquired
                // above), so its descriptor is stable; bd is aligned.
                let (num, first) =
                    unsafe { (ptr::addr_of!((*bd).num_pkts).read(), ptr::addr_of!((*bd).offset_to_first_pkt).read()) };
                self.rx_holding = true;
                self.rx_left = num;
                self.rx_off = first as usize;
                if num == 0 {
                    self.release_block();
                    continue;
                }
            }
            let hdr_end = self.rx_off + size_of::<Tpacket3Hdr>();
            if !self.rx_off.is_multiple_of(4) || hdr_end > self.rx_block_size {
                // Corrupt offset: never read outside the block.
                self.release_block();
                continue;
            }
            let block = self.rx_block_ptr(self.rx_block);
            // SAFETY: rx_off is 4-aligned and the header lies inside the
            // block, which we own until release_block.
            let h = unsafe { &*(block.add(self.rx_off) as *const Tpacket3Hdr) };
            let (next, snap, len, status, mac) =
                (h.tp_next_offset as usize, h.tp_snaplen as usize, h.tp_len as usize, h.tp_status, h.tp_mac as usize);
            let (tci, tpid) = (h.tp_vlan_tci as u16, h.tp_vlan_tpid);
            let vlan = status & TP_STATUS_VLAN_VALID != 0;
            let extra = if vlan { 4 } else { 0 };
            if self.rx_off + mac + snap > self.rx_block_size {
                self.release_block();
                continue;
            }
            if snap != len || snap + extra > MAX_FRAME {
                self.stats.rx_oversize += 1;
            } else {
                // SAFETY: checked above that [rx_off+mac, +snap) lies inside
                // the block we own.
                let frame = unsafe { std::slice::from_raw_parts(block.add(self.rx_off + mac), snap) };
                let mut b = self.get_buf();
                if vlan {
                    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 { tpid } else { ETH_P_8021Q };
                    if fill_with_vlan(&mut b, frame, tpid, tci) {
                        self.stats.rx_vlan_reinserted += 1;
                    } else {
                        b.fill(frame);
                    }
                } else {
                    b.fill(frame);
                }
                rx_checksum(b.data_mut(), status, &mut self.stats);
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += b.len() as u64;
                out.push(b);
                n += 1;
            }
            self.rx_left -= 1;
            if self.rx_left == 0 || next == 0 {
                self.release_block();
            } else {
                self.rx_off += next;
            }
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Vec<HeapBuf>) -> TxResult {
        let res = match self.tx_mode {
            TxMode::Ring => self.tx_ring_burst(pkts),
            TxMode::Send => self.tx_send_burst(pkts),
        };
        self.stats.tx_packets += res.sent as u64;
        self.stats.tx_bytes += res.bytes;
        res
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        Some(self.get_buf())
    }

    fn allocator(&self) -> super::HeapAlloc {
        super::HeapAlloc
    }

    fn caps(&self) -> &PortCaps {
        &self.caps
    }

    fn flush(&mut self) {
        if self.tx_retry {
            self.kick();
        }
    }

    fn counters(&mut self) -> Option<PortCounters> {
        // A failed read leaves the drops summed so far (it cannot fail on an open socket).
        let _ = self.kernel_stats();
        Some(self.stats.port_counters(self.kernel_drops))
    }
}

impl Drop for AfPacketQueue {
    fn drop(&mut self) {
        // SAFETY: map/map_len are exactly what mmap returned; nothing
        // references the mapping after this (the queue is being dropped).
        // The socket is closed afterwards by OwnedFd's drop.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.map_len);
        }
    }
}

impl fmt::Debug for AfPacketQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfPacketQueue")
            .field("device", &self.device)
            .field("fd", &self.fd.as_raw_fd())
            .field("tx_mode", &self.tx_mode)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_are_the_configured_devices_own() {
        // Loopback has 127.0.0.1 on every Linux; a memory backend asks nothing.
        let text = |backend: &str| {
            format!(
                "[engine]\nbackend = \"{backend}\"\n[[interface]]\nname = \"lo\"\ndevice = \"lo\"\naddresses = [\"10.255.0.1/24\"]\n"
            )
        };
        let cfg = ferrovs_cfg::Config::from_str(&text("af_packet"), "<test>").unwrap();
        let got = kernel_addresses(&cfg);
        assert!(got.contains(&crate::wire::parse::v4_to_addr([127, 0, 0, 1])), "{got:?}");
        assert!(
            !got.contains(&crate::wire::parse::v4_to_addr([10, 255, 0, 1])),
            "the engine's own is not the kernel's"
        );
        let cfg = ferrovs_cfg::Config::from_str(&text("memory"), "<test>").unwrap();
        assert!(kernel_addresses(&cfg).is_empty());
    }

    #[test]
    fn abi_layout() {
        assert_eq!(TX_DATA_OFF, 48);
        assert_eq!(size_of::<TpacketReq3>(), 28);
        assert_eq!(size_of::<TpacketStatsV3>(), 12);
        let c = AfPacketConfig::default();
        assert_eq!(c.tx_frame_size % 16, 0);
        assert!(c.tx_frame_size as usize - TX_DATA_OFF >= MAX_FRAME + super::super::HEADROOM);
        assert_eq!(c.rx_block_size as usize * c.rx_block_nr as usize, 4 << 20);
        assert_eq!(c.tx_block_size as usize * c.tx_block_nr as usize, 1 << 20);
    }

    #[test]
    fn vlan_reinsertion() {
        let frame: Vec<u8> = (0..60u8).collect();
        let mut b = HeapBuf::new();
        assert!(fill_with_vlan(&mut b, &frame, 0x8100, 0x2064));
        let d = b.data();
        assert_eq!(d.len(), 64);
        assert_eq!(&d[..12], &frame[..12]);
        assert_eq!(&d[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&d[16..], &frame[12..]);
        assert!(!fill_with_vlan(&mut b, &frame[..10], 0x8100, 1));
        assert!(!fill_with_vlan(&mut b, &vec![0; MAX_FRAME - 3], 0x8100, 1));
    }

    /// `frame` as a local stack hands it over with the checksum left to offload
    /// (CHECKSUM_PARTIAL): the transport checksum field holds the pseudo-header sum only
    /// (`~csum_tcpudp_magic` / `~csum_ipv6_magic`, what `__tcp_v4_send_check` and
    /// `udp6_set_csum` write).
    fn partial(mut frame: Vec<u8>) -> Vec<u8> {
        let p = parse::parse(&frame).unwrap();
        let len = p.end - p.l4;
        let pseudo = if p.v6 {
            csum::pseudo_v6(&parse::addr_v6_bytes(p.src), &parse::addr_v6_bytes(p.dst), p.proto, len as u32)
        } else {
            csum::pseudo_v4(parse::addr_v4_bytes(p.src), parse::addr_v4_bytes(p.dst), p.proto, len as u16)
        };
        let off = p.l4 + if p.proto == parse::PROTO_TCP { 16 } else { 6 };
        frame[off..off + 2].copy_from_slice(&csum::fold(pseudo).to_be_bytes());
        frame
    }

    #[test]
    fn checksums_left_to_offload_are_completed() {
        use crate::tools::testpkt;
        let ok = |d: &[u8]| csum::l4_ok(d, &parse::parse(d).unwrap());
        let frames = [
            partial(testpkt::tcp4([10, 0, 0, 2], 40000, [10, 0, 0, 1], 80, 0x18, 1, 2, b"GET / HTTP/1.0\r\n\r\n")),
            partial(testpkt::udp6(testpkt::V6A, 5353, testpkt::V6B, 53, b"odd length payload")),
            partial(testpkt::udp4([10, 0, 0, 2], 40000, [10, 0, 0, 1], 53, &[])),
        ];
        let mut stats = AfPacketStats::default();
        for (i, f) in frames.iter().enumerate() {
            assert!(!ok(f), "frame {i}: the pseudo-header sum alone verifies");
            // Without the status bit the frame is left as it is (a NIC's frame, a bad checksum).
            let mut d = f.clone();
            rx_checksum(&mut d, TP_STATUS_USER, &mut stats);
            assert_eq!(&d, f, "frame {i}");
            rx_checksum(&mut d, TP_STATUS_USER | TP_STATUS_CSUMNOTREADY, &mut stats);
            assert!(ok(&d), "frame {i}: checksum not completed");
            let mut want = f.clone();
            csum::fill_l4(&mut want, &parse::parse(f).unwrap()).unwrap();
            assert_eq!(d, want, "frame {i}: only the checksum changes");
        }
        assert_eq!((stats.rx_csum_not_ready, stats.rx_csum_completed), (3, 3));
        // And the queue reports them with its other counters (`ferrovsadm ports`, the metrics).
        let c = stats.port_counters(0);
        assert_eq!((c.rx_csum_partial, c.rx_csum_completed), (3, 3), "{c:?}");

        // A fragment, a non-IP frame, an ICMP message, a truncated frame: left as they are.
        let whole = testpkt::udp4([10, 0, 0, 2], 40000, [10, 0, 0, 1], 53, &[7; 600]);
        let frag = partial(whole.clone());
        let frag = testpkt::fragment4(&frag, 300, 9).remove(0);
        assert_eq!(parse::parse(&frag), Err(parse::ParseError::Fragment));
        let arp = testpkt::arp_request([2, 0, 0, 0, 0, 9], [10, 0, 0, 9], [10, 0, 0, 1]);
        let mut ping = testpkt::ping4([10, 0, 0, 2], [10, 0, 0, 1], 1, 1);
        let l4 = parse::parse(&ping).unwrap().l4;
        ping[l4 + 2] ^= 0xff;
        let mut rest = vec![frag, arp, ping, vec![0x86, 0xdd], Vec::new()];
        let tcp = partial(testpkt::tcp4([10, 0, 0, 2], 40000, [10, 0, 0, 1], 80, 0x18, 1, 2, b"data"));
        rest.extend((0..tcp.len()).map(|n| tcp[..n].to_vec()));
        let mut stats = AfPacketStats::default();
        for (i, f) in rest.iter().enumerate() {
            let mut d = f.clone();
            rx_checksum(&mut d, TP_STATUS_USER | TP_STATUS_CSUMNOTREADY, &mut stats);
            assert_eq!(&d, f, "frame {i}");
        }
        assert_eq!((stats.rx_csum_not_ready, stats.rx_csum_completed), (rest.len() as u64, 0));
        let c = stats.port_counters(0);
        assert_eq!((c.rx_csum_partial, c.rx_csum_completed), (rest.len() as u64, 0), "{c:?}");
    }

    /// What a queue counted reaches the generic port counters, each where it belongs (distinct
    /// values, so a counter reported in another's place shows).
    #[test]
    fn queue_counters_carry_every_stat() {
        let s = AfPacketStats {
            rx_packets: 1,
            rx_bytes: 2,
            rx_oversize: 3,
            rx_vlan_reinserted: 4,
            rx_csum_not_ready: 5,
            rx_csum_completed: 6,
            tx_packets: 7,
            tx_bytes: 8,
            tx_ring_full: 9,
            tx_oversize: 10,
            tx_errors: 11,
            pool_allocs: 12,
        };
        let want = PortCounters {
            rx_packets: 1,
            rx_bytes: 2,
            rx_dropped: 13,
            rx_nobuf: 0,
            rx_errors: 3,
            tx_packets: 7,
            tx_bytes: 8,
            tx_dropped: 9,
            tx_errors: 10 + 11,
            rx_csum_partial: 5,
            rx_csum_completed: 6,
            rx_vlan_restored: 4,
        };
        assert_eq!(s.port_counters(13), want);
    }

    #[test]
    fn fanout_ids_differ() {
        let a = fanout_id(100, 2, 0, 0);
        assert_ne!(a, fanout_id(100, 3, 0, 0));
        assert_ne!(a, fanout_id(101, 2, 0, 0));
        assert_ne!(a, fanout_id(100, 2, 1, 0));
        assert_ne!(a, fanout_id(100, 2, 0, 1));
    }

    #[test]
    fn unprivileged_open_is_explained() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return; // root may open packet sockets; covered by tests/afpacket.rs
        }
        match open("lo", 1, None, "lo") {
            Err(e @ AfPacketError::PermissionDenied { .. }) => {
                assert!(e.to_string().starts_with("lo: ") && e.to_string().contains("CAP_NET_RAW"))
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => {} // has CAP_NET_RAW without being root
        }
    }

    #[test]
    fn bad_device_names() {
        for d in ["", "this-name-is-far-too-long", "a/b", "fvs-nonexistent0"] {
            let e = open(d, 1, None, "x").unwrap_err();
            assert!(matches!(e, AfPacketError::NoSuchInterface { .. }), "{d}: {e}");
            assert_eq!(e.to_string(), format!("{d}: no such interface"));
        }
        assert!(matches!(open("lo", 0, None, "x").unwrap_err(), AfPacketError::Config { .. }));
    }
}
