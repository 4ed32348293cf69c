//! The port abstraction: every I/O backend (in-memory, pcap, AF_PACKET, DPDK)
//! hands the pipeline fixed-size bursts of packets through [`PortQueue`].
//!
//! A *port* is one network interface; a *queue* is the share of that port a
//! single worker polls. A worker owns exactly one queue of every port, so a
//! queue is `Send` but never shared: no locks on the fast path.

pub mod afpacket;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod memory;
pub mod pcap;

/// Packets per rx/tx burst. Every backend fills at most this many per call.
pub const BURST: usize = 32;

/// Bytes of headroom every backend leaves in front of a received frame, so
/// the pipeline can prepend an outer header (IPIP) without copying.
pub const HEADROOM: usize = 128;

/// Largest frame a buffer holds (without headroom): 1500-byte MTU, Ethernet
/// header, one VLAN tag, with room to spare for a rewrite that grows a line.
pub const MAX_FRAME: usize = 2048;

/// A packet buffer owned by the pipeline. Backends implement it over their
/// own memory (a heap buffer, a DPDK mbuf); the pipeline only sees bytes.
pub trait Packet: Send + 'static {
    /// The frame, starting at the Ethernet header.
    fn data(&self) -> &[u8];
    /// The frame, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Set the frame length (grow into tailroom or shrink). Returns false,
    /// leaving the packet unchanged, if `len` does not fit.
    fn set_len(&mut self, len: usize) -> bool;
    /// Grow the frame at the front by `n` bytes (from headroom).
    fn prepend(&mut self, n: usize) -> bool;
    /// Remove `n` bytes from the front of the frame.
    fn adj(&mut self, n: usize) -> bool;
    /// Bytes the frame may grow to.
    fn capacity(&self) -> usize;
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    #[inline]
    fn is_empty(&self) -> bool {
        self.data().is_empty()
    }
}

/// What a port can do; reported by the backend once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortCaps {
    /// Interface name as configured.
    pub name: String,
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// Number of rx/tx queue pairs (one per worker).
    pub queues: u16,
    /// Largest IP packet the port carries.
    pub mtu: u16,
}

/// Where the worker's core gets buffers for the frames it originates (ARP
/// requests, neighbour solicitations, split FTP segments): a port's packet
/// pool without its queue, so the core (`pipeline::worker`) needs no port.
/// One per port; [`PortQueue::allocator`] makes it.
pub trait BufAlloc: Send {
    type Buf: Packet;
    /// A fresh, empty buffer (len 0, with headroom). `None` if the pool is
    /// exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;
}

/// Heap buffers ([`memory::HeapBuf`], from the thread's buffer pool): the
/// allocator of the in-memory, pcap and AF_PACKET ports, and of tests and
/// fuzz targets that drive the core without a port.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapAlloc;

impl BufAlloc for HeapAlloc {
    type Buf = memory::HeapBuf;
    #[inline]
    fn alloc(&mut self) -> Option<memory::HeapBuf> {
        Some(memory::HeapBuf::new())
    }
}

/// One worker's queue of one port.
pub trait PortQueue: Send {
    type Buf: Packet;
    /// The allocator the worker's core uses for frames it originates on this port.
    type Alloc: BufAlloc<Buf = Self::Buf>;
    /// Receive up to `BURST - out.len()` packets, appended to `out`.
    /// Never blocks; returns the number received.
    fn rx_burst(&mut self, out: &mut Vec<Self::Buf>) -> usize;
    /// Transmit the packets in `pkts`, draining it. Packets the backend could
    /// not queue are freed and counted in the returned `TxResult::dropped`.
    fn tx_burst(&mut self, pkts: &mut Vec<Self::Buf>) -> TxResult;
    /// A fresh, empty buffer (len 0, with headroom) for a packet the engine
    /// originates (ARP reply, ICMP, a grown FTP segment). `None` if the pool
    /// is exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;
    /// An allocator drawing from this queue's packet pool, for the worker's core.
    fn allocator(&self) -> Self::Alloc;
    /// Capabilities of the port this queue belongs to.
    fn caps(&self) -> &PortCaps;
    /// Backend-specific periodic work (flush a tx ring, poll link). Called
    /// once per poll-loop iteration even when idle.
    fn flush(&mut self) {}
    /// This queue's own counters, cumulative since it was opened, where the backend keeps
    /// them per queue (AF_PACKET: one socket and ring per worker); `None` where it does not
    /// (in-memory and pcap queues; DPDK counts per port, read by the control plane through
    /// the backend's statistics handle). May make a system call: the driver asks about once
    /// a second ([`PORT_COUNTERS_EVERY_NS`]), never per packet.
    fn counters(&mut self) -> Option<PortCounters> {
        None
    }
}

/// How often a worker publishes its queues' [`PortQueue::counters`] (ns).
pub const PORT_COUNTERS_EVERY_NS: u64 = 1_000_000_000;

/// What a port (or one worker's queue of it) counted itself, below the pipeline: what
/// `ip -s link` or DPDK's `rte_eth_stats` show. A packet the port dropped never reached a
/// worker, so the pipeline's own drop counters cannot show it: `rx_dropped` growing means the
/// worker did not empty its receive ring in time (a flood, a worker starved of its core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Dropped because the receive ring was full (AF_PACKET's `tp_drops`, DPDK's `imissed`).
    pub rx_dropped: u64,
    /// Receive failures for want of a buffer (DPDK's `rx_nombuf`; AF_PACKET allocates instead).
    pub rx_nobuf: u64,
    /// Frames received in error (DPDK's `ierrors`; AF_PACKET: longer than a buffer).
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped because the transmit ring was full (AF_PACKET).
    pub tx_dropped: u64,
    /// Transmit failures (DPDK's `oerrors`; AF_PACKET: over the MTU, empty, failed sends).
    pub tx_errors: u64,
    /// Frames received with their transport checksum left to offload (AF_PACKET's
    /// `TP_STATUS_CSUMNOTREADY`, CHECKSUM_PARTIAL; other backends leave 0): a local stack
    /// behind the port (a veth) sends with transmit checksum offload on, so the port pays for
    /// the checksums it left undone (a NIC never hands such a frame over: a port facing one
    /// shows none); `ethtool -K DEV tx off` on the sender's veth moves that work to the sender.
    pub rx_csum_partial: u64,
    /// Of `rx_csum_partial`, the TCP/UDP frames whose checksum the port completed in software
    /// (AF_PACKET; others leave 0). The rest were left as received (a fragment, ICMP, a frame
    /// the parser refuses), for the pipeline to judge.
    pub rx_csum_completed: u64,
    /// Frames whose VLAN tag the kernel had stripped before the packet socket saw them and the
    /// port put back (AF_PACKET; others leave 0): tagged traffic reaches this port, expected
    /// on a trunk, a sign of a misconfigured switch port or parent device on a port meant for
    /// untagged frames.
    pub rx_vlan_restored: u64,
}

/// One port as the control plane reports it (`ferrovsadm ports`, the metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortReport {
    /// The interface's name in the config.
    pub name: String,
    /// Its device (a kernel interface, a DPDK PCI address or vdev).
    pub device: String,
    /// Who counted: `af_packet`, or the DPDK driver's name.
    pub driver: String,
    /// The link's state where the backend knows it (DPDK).
    pub link_up: Option<bool>,
    /// The whole port.
    pub counters: PortCounters,
    /// Per queue (AF_PACKET: per worker, in worker order; DPDK: its per-queue packet and
    /// byte counts).
    pub queues: Vec<PortCounters>,
}

/// Where the control plane reads the ports' reports (set by the backend that has them).
pub type PortSource = std::sync::Arc<dyn Fn() -> Vec<PortReport> + Send + Sync>;

impl PortCounters {
    /// Field by field sum (a port's queues).
    pub fn add(&mut self, o: &PortCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_dropped += o.rx_dropped;
        self.rx_nobuf += o.rx_nobuf;
        self.rx_errors += o.rx_errors;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.tx_errors += o.tx_errors;
        self.rx_csum_partial += o.rx_csum_partial;
        self.rx_csum_completed += o.rx_csum_completed;
        self.rx_vlan_restored += o.rx_vlan_restored;
    }
}

/// Outcome of a tx burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResult {
    pub sent: usize,
    pub bytes: u64,
    pub dropped: usize,
}
