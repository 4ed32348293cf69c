//! The worker's sans-IO core: one per queue, owning its flow table, neighbour
//! cache, schedulers, persistence templates and FTP expectations.
//!
//! It owns no port and reads no ring (the loop around it, with the queues,
//! the rx burst and the rings, is [`crate::pipeline::driver::Driver`]).
//! `handle_burst(now, iface, rx)` (or `handle(now, iface, frame) -> Verdict`
//! for one frame) classifies each packet, queues packets it does not own for
//! their owner (`poll_handoff`), and forwards the rest into per-interface
//! transmit queues, where frames it originates or releases go too
//! (`poll_transmit`, or `transmit_queues` for a driver's `tx_burst`). Timers:
//! `poll_timeout` / `handle_timeout`. It never blocks, and in steady state it
//! does not allocate (buffers are recycled, tables are sized at start; an FTP
//! control session allocates its gateway state once).
//!
//! This file holds the worker's state and the core's entry points (bursts, single
//! frames, handed-over frames, control messages, timers, transmit and handoff queues).
//! The packet's path is in child modules, each an `impl Worker` block that sees the
//! worker's private state, in the order a packet meets them:
//! - `express`: the burst's three passes (parse and hash, index, connection) and the
//!   express lane of established IPv4 NAT / full NAT / DR packets;
//! - `classify`: everything the lane did not forward: a known connection's packet, or
//!   what a miss is (VIP, local address, reply, FTP data, cluster recreation, handoff);
//! - `connect`: scheduling a first packet and creating its connection;
//! - `forward`: forwarding a known connection's packet (TCP state, counters, the NAT /
//!   full NAT / DR / tunnel rewrite, the Ethernet header);
//! - `expiry`: timers, the incremental sweeps and connection removal;
//! - beside them: `local` (ARP/ND, echo, parked packets, the kernel's exception path),
//!   `icmp` (errors originated and translated), `fragments`, `syn_proxy`, `pp` (PROXY
//!   protocol), `ftp` (the gateway glue and pinhole broker) with `tcp` (SACK, MSS clamp,
//!   split rewrites), `redirect` (cluster liveness), `reload` (new snapshots, retired
//!   local addresses) and `sync` (cluster sync on the worker's side).
//!
//! The header rewrites themselves are functions of the frame alone, in
//! [`crate::pipeline::nat`] and [`crate::pipeline::fnat`].

use crate::cluster::sync::SyncEntry;
use crate::flow::expect::{ExpKey, ExpVal, ExpectTable};
use crate::flow::frag::{self, FragTable, FragVerdict};
use crate::flow::tcpstate::{self, Direction};
use crate::flow::{
    self, Dir, FlowKey, FlowTable, F_ACTIVE_COUNTED, F_ALG, F_COUNTED, F_DATA, F_PPROTO, F_SYNCED, F_SYNPROXY, F_XLAT,
    NONE,
};
use crate::pipeline::counters::{bump, DropReason, ServiceCounters, WorkerCounters};
use crate::pipeline::fnat::{rewrite_fnat, LportPools};
use crate::pipeline::neigh::{self, NeighCache};
use crate::pipeline::snapshot::{
    lport_owner, lport_share, owner_of, Snapshot, ADDR_HOST, ADDR_LADDR, ADDR_LOCAL, ADDR_VIP,
};
use crate::pipeline::synproxy::{self, Cookies, Handshake};
use crate::port::{BufAlloc, Packet, PortCaps};
use crate::wire::csum;
use crate::wire::parse::{
    self, addr_is_v4, addr_to_ip, addr_v6_bytes, icmp_is_echo, icmp_is_error, Addr, Parsed, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN,
};
use crossbeam_queue::ArrayQueue;
use ferrovs_cfg::Forward;
use ferrovs_ftp_alg as alg;
use ferrovs_sched as sched;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

mod classify;
mod connect;
mod expiry;
mod express;
mod forward;
mod fragments;
mod ftp;
mod icmp;
mod local;
mod pp;
mod redirect;
mod reload;
mod syn_proxy;
mod sync;
mod tcp;
use crate::pipeline::nat::{encap_ipip, rewrite_addrs, rewrite_ip, rewrite_nat, TTL_DELTA};
use forward::{account, rewrite_conn};
pub use redirect::{Liveness, DEAD_AFTER_MS, HEARTBEAT_MS};
use reload::{Moved, Retired};
pub use tcp::ALG_MAX_GROWTH;

/// Messages to a worker's control ring.
pub enum Ctrl {
    /// A neighbour learnt by another worker.
    Neigh(Addr, [u8; 6], neigh::Seen),
    /// A new configuration snapshot.
    Snapshot(Arc<Snapshot>),
    /// Send a listing of the worker's connections.
    ListConns(crossbeam_channel::Sender<Vec<flow::ConnRow>>),
    /// Cluster: state from a peer, for connections this worker owns.
    Sync(Vec<SyncEntry>),
}

/// What a worker's core gets from the rest of the engine at construction ([`Fabric::env`]):
/// the number of workers (who owns a flow), its counters, and the cluster liveness table it
/// reads. The core writes nothing shared but its counters; what it has for others comes out
/// of [`Worker::poll_event`] and the driver delivers it.
pub struct CoreEnv {
    pub workers: usize,
    pub counters: Arc<WorkerCounters>,
    pub liveness: Arc<redirect::Liveness>,
    /// Where full NAT's port search starts on each local address
    /// ([`crate::pipeline::fnat::LportPools::randomized`]); 0: at the start of the share.
    pub lport_seed: u64,
    /// The SYN proxy's cookie secret and last cookie, the same for every worker.
    pub syn: Arc<crate::pipeline::synproxy::Shared>,
}

impl CoreEnv {
    /// A lone core (tests, tools): `workers` workers, fresh counters, nobody heard from.
    pub fn standalone(workers: usize) -> Self {
        CoreEnv {
            workers,
            counters: Default::default(),
            liveness: Default::default(),
            lport_seed: 0,
            syn: Default::default(),
        }
    }
}

/// What the core has for the rest of the engine ([`Worker::poll_event`]); the driver
/// delivers it (rings, mutexes).
pub enum Event {
    /// A neighbour this worker learnt or whose MAC changed: for every other worker
    /// (`Ctrl::Neigh`).
    Neigh(Addr, [u8; 6], neigh::Seen),
    /// Cluster: sync entries gathered since the last batch, for the sync thread.
    Sync(Vec<SyncEntry>),
    /// The per-service counters of the snapshot the core now runs (for the control plane).
    Services(Arc<Vec<ServiceCounters>>),
}

/// Everything workers share: rings and counters. Built once at start.
pub struct Fabric<B> {
    pub workers: usize,
    pub handoff: Vec<ArrayQueue<(u8, B)>>,
    pub ctrl: Vec<ArrayQueue<Ctrl>>,
    pub counters: Vec<Arc<WorkerCounters>>,
    /// Per worker: the per-service counters of its current snapshot.
    pub services: Vec<Mutex<Arc<Vec<ServiceCounters>>>>,
    /// Per worker, per port: its queue's own counters as last published
    /// ([`crate::port::PortQueue::counters`]; `None`: the backend keeps none per queue).
    pub ports: Vec<Mutex<Vec<Option<crate::port::PortCounters>>>>,
    /// Cluster: batches of sync entries from the workers to the sync thread.
    pub sync_tx: ArrayQueue<Vec<SyncEntry>>,
    /// Cluster: the placement-relevant configuration of the newest snapshot (the sync thread
    /// sends it and requires it of the peers; a reload may change the node tables).
    pub sync_placement: Mutex<crate::cluster::sync::Placement>,
    /// Cluster: when each peer was last heard from (the sync thread records, the workers read).
    pub liveness: Arc<redirect::Liveness>,
    pub stop: AtomicBool,
    /// Every worker's [`CoreEnv::lport_seed`].
    pub lport_seed: u64,
    /// Every worker's [`CoreEnv::syn`].
    pub syn: Arc<crate::pipeline::synproxy::Shared>,
}

impl<B> Fabric<B> {
    /// Rings and counters for `workers` workers, full NAT's port searches starting at the
    /// start of their shares (tests and tools: reproducible).
    pub fn new(workers: usize) -> Arc<Self> {
        Self::with_lport_seed(workers, 0)
    }

    /// [`Fabric::new`] for the daemon: full NAT's port searches start at a random point, so a
    /// restarted node does not reuse, first thing, the ports of its previous run.
    pub fn randomized(workers: usize) -> Arc<Self> {
        Self::with_lport_seed(workers, crate::flow::table::seed())
    }

    fn with_lport_seed(workers: usize, lport_seed: u64) -> Arc<Self> {
        Arc::new(Fabric {
            workers,
            handoff: (0..workers).map(|_| ArrayQueue::new(8192)).collect(),
            ctrl: (0..workers).map(|_| ArrayQueue::new(4096)).collect(),
            counters: (0..workers).map(|_| Arc::new(WorkerCounters::default())).collect(),
            services: (0..workers).map(|_| Mutex::new(Arc::new(Vec::new()))).collect(),
            ports: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            sync_tx: ArrayQueue::new(1024),
            sync_placement: Mutex::new(Default::default()),
            liveness: Default::default(),
            stop: AtomicBool::new(false),
            lport_seed,
            syn: Default::default(),
        })
    }
    /// The environment of worker `id`'s core.
    pub fn env(&self, id: usize) -> CoreEnv {
        CoreEnv {
            workers: self.workers,
            counters: self.counters[id].clone(),
            liveness: self.liveness.clone(),
            lport_seed: self.lport_seed,
            syn: self.syn.clone(),
        }
    }

    /// Deliver an event of worker `id`'s core: a neighbour to the other workers' control
    /// rings (best effort: a full ring drops it, which only delays resolution there), a sync
    /// batch to the sync thread's ring (a full ring counts its entries `sync_skipped`), the
    /// service counters for the control plane.
    pub fn deliver(&self, id: usize, e: Event) {
        match e {
            Event::Neigh(a, mac, seen) => {
                for (w, q) in self.ctrl.iter().enumerate() {
                    if w != id {
                        let _ = q.push(Ctrl::Neigh(a, mac, seen));
                    }
                }
            }
            Event::Sync(batch) => {
                if let Err(b) = self.sync_tx.push(batch) {
                    bump(&self.counters[id].sync_skipped, b.len() as u64);
                }
            }
            Event::Services(s) => {
                if let Ok(mut g) = self.services[id].lock() {
                    *g = s;
                }
            }
        }
    }

    /// Worker `id`'s queues' own counters, one per port (`None`: none kept), for the control
    /// plane.
    pub fn publish_ports(&self, id: usize, c: Vec<Option<crate::port::PortCounters>>) {
        if let Some(Ok(mut g)) = self.ports.get(id).map(|m| m.lock()) {
            *g = c;
        }
    }

    /// Every worker's last published port counters (see [`Fabric::publish_ports`]).
    pub fn port_counters(&self) -> Vec<Vec<Option<crate::port::PortCounters>>> {
        self.ports.iter().map(|m| m.lock().map(|g| g.clone()).unwrap_or_default()).collect()
    }

    /// Record `snap`'s placement-relevant configuration for the sync thread.
    pub fn set_placement(&self, snap: &crate::pipeline::snapshot::Snapshot) {
        let nodes = snap.config.cluster.as_ref().map_or(&[][..], |c| &c.nodes[..]);
        let p = crate::cluster::sync::Placement::of(self.workers, snap.port_range, nodes);
        if let Ok(mut g) = self.sync_placement.lock() {
            *g = p;
        }
    }

    /// The placement-relevant configuration of the newest snapshot.
    pub fn placement(&self) -> crate::cluster::sync::Placement {
        self.sync_placement.lock().map(|g| *g).unwrap_or_default()
    }
}

/// A packet held until something happens, or its deadline passes: its next hop `key`
/// resolves (`pending`), its datagram's first fragment comes (`frag_held`), its SYN-proxied
/// connection `key` = (slot, generation) completes the real server's handshake (`proxy_held`).
struct Held<K, B> {
    key: K,
    iface: u8,
    buf: B,
    deadline: u64,
}

const MAX_PENDING: usize = 256;
const PENDING_NS: u64 = 3_000_000_000;
/// The timer tick (2^20 ns, about 1 ms): the incremental sweeps of connections,
/// expectations and fragments and the cluster sync refresh scan run once per tick.
pub const TICK_SHIFT: u32 = 20;
/// Ticks per full pass of the connection sweep: each tick scans at least
/// `ceil(slots / SWEEP_TICKS)` slots, so the cursor covers the whole table within
/// `SWEEP_TICKS` ticks = 2^30 ns.
const SWEEP_TICKS: usize = 1024;
/// Slots per tick at least (small tables).
const SWEEP_MIN_TICK: usize = 64;
/// Expiry sweep: slots more per connection inserted or removed since the last sweep (so it
/// keeps pace with connection churn: expired connections leave the table, and their index
/// words the probe chains, within a bounded number of new connections), up to
/// `SWEEP_MAX_CHURN` churn slots a tick.
const SWEEP_PER_CHURN: usize = 2;
const SWEEP_MAX_CHURN: usize = 16384;
/// Ticks' shares of the sweep a late `handle_timeout` does at most. One: a driver that
/// falls behind its deadlines (or a clock that jumps, like the bench's, where one poll spans
/// tens of ticks) sweeps one tick's share per call, so a late call never costs a burst more
/// than a tick's share; the bound [`EXPIRY_BOUND_NS`] holds for a driver that keeps to the
/// deadlines.
const SWEEP_CATCH_UP: u64 = 1;
/// An expired connection leaves the table at most this long (ns) after its expiry, when
/// `handle_timeout` is called at the deadlines `poll_timeout` returns: the cursor visits
/// every slot within `SWEEP_TICKS` ticks, plus one tick for the deadline's alignment
/// (2^30 + 2^20 ns, about 1.07 s). Lookups treat an expired connection as absent before.
pub const EXPIRY_BOUND_NS: u64 = ((SWEEP_TICKS as u64) + 1) << TICK_SHIFT;
/// Expired expectations and fragment datagrams removed per tick at most (each queue is
/// oldest first).
const EXPECT_SWEEP_PER_TICK: usize = 64;
/// Longest time (ns) per-worker service/real-server traffic deltas wait
/// before `poll` folds them into the shared counters.
const SVC_FLUSH_NS: u64 = 100_000_000;

/// Per-service worker state rebuilt with each snapshot.
struct SvcState {
    sched: Box<dyn sched::Scheduler>,
    /// `sched.uses_key()`, asked once per scheduler (not per new connection).
    uses_key: bool,
    persist: Option<sched::PersistTable>,
    /// The real servers in the scheduler's form, built once per snapshot.
    dests: Vec<sched::Dest>,
    /// Per real server: what the last connection created to it computed that the next
    /// one may reuse ([`DestMemo`]).
    ids: Vec<DestMemo>,
    /// `source_conn_rate`: this worker's buckets per client address, and the service's
    /// (rate, burst) they were made for; `None`: no limit.
    src_limit: Option<(crate::pipeline::ratelimit::HostLimit, (u32, u32))>,
}

/// This worker's buckets for a service's `source_conn` (rate, burst): the whole rate, as
/// every connection of a client is its owner's ([`crate::pipeline::snapshot::owner_of`]),
/// so one worker sees all of a client's new connections.
fn source_limit(conf: (u32, u32), seed: u64) -> Option<(crate::pipeline::ratelimit::HostLimit, (u32, u32))> {
    let (rate, burst) = conf;
    (rate != 0).then(|| (crate::pipeline::ratelimit::HostLimit::new(rate, burst, seed), conf))
}

/// Per real server of a service, from the last connection created to it: the flow table's
/// interned ids (VIP, real server, next hops), hints for the next one
/// ([`flow::NewConn::hint`]), and the checksum deltas of its (VIP, port) -> (real server,
/// port) rewrite, reused while a new connection has the same four (plain NAT, DR, tunnel:
/// full NAT adds the client side, computed per connection).
#[derive(Clone, Copy)]
pub(crate) struct DestMemo {
    ids: [u16; 4],
    /// The flow table's [`FlowTable::ids_epoch`] when `ids` were taken: while it is unchanged,
    /// the first three (VIP, real server, next hop in) still name the values of `key` (a
    /// connection with the same key has the same route to the real server: the memo lives
    /// for one snapshot), so a connection that hits the memo takes them without comparing
    /// values ([`flow::NewConn::hint_sure`]).
    epoch: u64,
    /// (VIP, real server, VIP port, real-server port, IPv4) the deltas are for.
    key: (Addr, Addr, u16, u16, bool),
    /// The IPv4 header delta and the L4 delta in, folded.
    l3_in: u16,
    l4_in: u16,
    /// `key` holds a computed entry.
    valid: bool,
}

impl DestMemo {
    pub(crate) const EMPTY: DestMemo = DestMemo {
        ids: flow::NO_HINT,
        epoch: flow::NO_EPOCH,
        key: (0, 0, 0, 0, false),
        l3_in: 0,
        l4_in: 0,
        valid: false,
    };
}

/// The largest receive window TCP can announce: 65535 scaled by 2^14 (RFC 7323).
const MAX_TCP_WINDOW: u32 = 65_535 << 14;

/// See [`Worker::table_sizes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableSizes {
    pub flows: usize,
    /// Neighbour cache entries (static and learnt).
    pub neighbors: usize,
    pub expectations: usize,
    pub frag_datagrams: usize,
    pub frag_held: usize,
    pub proxy_held: usize,
    pub verified_clients: usize,
    /// Packets parked while a next hop is resolved.
    pub parked: usize,
    pub ftp_sessions: usize,
    /// Line reassembly buffers of the FTP gateway sessions (capacity, bytes).
    pub ftp_buffer_bytes: usize,
}

/// The worker's core (see the crate's `pipeline::driver` for the loop around it). `Q` is
/// the buffer allocator of the ports (one per port; [`BufAlloc`]): the core allocates the
/// frames it originates from it and otherwise only sees `Q::Buf` frames.
pub struct Worker<Q: BufAlloc> {
    pub id: usize,
    /// Per port: the allocator for frames the core originates there, and what the core needs
    /// of the port (MTU, MAC), given at construction and by the driver with each snapshot.
    allocs: Vec<Q>,
    caps: Vec<PortCaps>,
    /// Packets for other workers (owner, interface, frame): the driver pushes them into the
    /// owners' handoff rings (`poll_handoff`).
    handoff_out: Vec<(usize, u8, Q::Buf)>,
    snap: Arc<Snapshot>,
    /// The generation of the connections' snapshot indices and counts (`Conn::snap_gen`):
    /// it moves on when a snapshot remaps every connection, not when one is installed in
    /// place (`apply_snapshot`).
    snap_gen: u16,
    /// The last destination `process_slow` classified and what the snapshot says it is (a
    /// burst of new connections goes to one VIP): cleared with every snapshot.
    addr_memo: Option<(Addr, crate::pipeline::snapshot::AddrInfo)>,
    svcs: Vec<SvcState>,
    /// Old -> new service and real-server indices of the last snapshot
    /// change, built once per change in `apply_snapshot`.
    remap: crate::pipeline::remap::SnapshotMap,
    svc_counters: Arc<Vec<ServiceCounters>>,
    pub flows: FlowTable,
    /// Full NAT: this worker's local ports on each local address.
    lports: LportPools,
    /// Full NAT FTP: local ports reserved for announced active data connections (local
    /// address, port, expiry); the data connection takes its port over, an unused one goes
    /// back to the pool when it expires.
    /// Full NAT local addresses a reload removed while connections may still use them (see
    /// [`Retired`]): still ours for those connections' replies until the grace period ends.
    retired: Vec<Retired>,
    /// Earlier local port ranges (a reload changed `local_port_range`) whose connections may
    /// still live (see [`Moved`]), oldest first.
    moved: Vec<Moved>,
    reserved: Vec<(Addr, u16, u64)>,
    neigh: NeighCache,
    /// The last neighbour aging period (`now >> neigh::AGE_SHIFT`) and the unicast probes it
    /// asked for (address, cached MAC, interface; kept for its allocation).
    neigh_aged: u64,
    neigh_probes: Vec<(Addr, [u8; 6], usize)>,
    expect: ExpectTable,
    /// IP fragments: datagrams in flight and fragments waiting for their first.
    frags: FragTable,
    frag_held: Vec<Held<frag::FragKey, Q::Buf>>,
    /// Full NAT replies in fragments that arrived here but belong to another worker: which
    /// worker each datagram's first fragment went to (its local port named it), so the later
    /// fragments (no ports) follow it. Held fragments of such a datagram wait in `frag_held`.
    frag_steer: Vec<(frag::FragKey, u8, u64)>,
    /// SYN proxy: the cookie secret (the workers' shared one, and a copy of its key), TCP
    /// connections in SYN_RECV (the `auto` trigger), when this worker's last cookie went out,
    /// held client packets, and a connection whose held packets are due.
    syn: Arc<crate::pipeline::synproxy::Shared>,
    cookies: Cookies,
    half_open: u32,
    last_cookie: u64,
    proxy_held: Vec<Held<(u32, u32), Q::Buf>>,
    proxy_release: Option<u32>,
    /// DR/tunnel SYN proxy: verified client addresses (see `syn_verify`).
    verified: Vec<(Addr, u64)>,
    /// Workers in the engine and the cluster liveness table (see [`CoreEnv`]).
    workers: usize,
    liveness: Arc<redirect::Liveness>,
    /// Events for the driver ([`Worker::poll_event`]), oldest first.
    events: std::collections::VecDeque<Event>,
    counters: Arc<WorkerCounters>,
    /// Per rx burst: the full parse of each frame the express lane did not take (or
    /// declined). Kept at (at least) the largest burst's length, like `lanes`, and
    /// overwritten in place by each burst (entries past the burst are stale).
    pre: Vec<Result<Parsed, parse::ParseError>>,
    /// Per rx burst: flow hash, candidate index word and express offset (`express::Lane`).
    lanes: Vec<express::Lane>,
    /// The express lane on (tests turn it off to compare it with the general path).
    express_on: bool,
    /// Per (service, real server) packet/byte deltas not yet folded into
    /// the shared `ServiceCounters` (see [`Worker::flush_svc_counters`]).
    acc: Vec<SvcAcc>,
    /// First `acc` slot of each service.
    acc_base: Vec<u32>,
    /// `acc` slots with pending deltas.
    acc_dirty: Vec<u32>,
    /// Copies from the snapshot for the fast path: interface MACs and
    /// TCP/UDP state timeouts.
    if_macs: Vec<[u8; 6]>,
    /// Flow table version when the current burst's hints were looked up.
    hint_ver: u64,
    timeouts: [u64; crate::flow::tcpstate::N_STATES],
    /// Per interface: frames to transmit, in order (forwarded, reflected, originated,
    /// released). The driver hands each to the port's `tx_burst` in place; `poll_transmit`
    /// yields them one by one.
    tx: Vec<Vec<Q::Buf>>,
    pending: Vec<Held<Addr, Q::Buf>>,
    /// IPv4 output fragmentation (`split_out`): the later fragments of the packet being cut,
    /// built before any goes out (kept for its allocation), and the next ID of an IPIP
    /// header with DF clear ([`encap_ipip`]), each worker starting at its own share of the
    /// 16-bit space so that workers tunnelling to one real server do not reuse each other's
    /// IDs soon.
    frag_out: Vec<Q::Buf>,
    ip_ident: u16,
    actions: alg::Actions,
    /// Rate limit (kernel `net_ratelimit` defaults) for the FTP bounce
    /// refusal warning, which a client can trigger at will.
    bounce_log: crate::pipeline::ratelimit::RateLimit,
    /// Rate limit for the neighbour-table-full warning.
    neigh_log: crate::pipeline::ratelimit::RateLimit,
    /// Rate limit for the warning about a peer's connection not installed (cluster sync).
    sync_log: crate::pipeline::ratelimit::RateLimit,
    /// Evictions from a full neighbour table by neighbours nobody asked for
    /// ([`neigh::EVICT_PER_SEC`]).
    neigh_evict_rl: crate::pipeline::ratelimit::RateLimit,
    /// Token bucket of the ICMP errors this worker originates (`[engine] icmp_rate` /
    /// `icmp_burst`) and the (rate, burst) it was built for.
    icmp_rl: crate::pipeline::ratelimit::RateLimit,
    /// The per-destination-host buckets within it (`icmp_host_rate` / `icmp_host_burst`) and
    /// the (rate, burst) they were built for.
    icmp_hosts: crate::pipeline::ratelimit::HostLimit,
    icmp_host_cfg: (u32, u32),
    icmp_cfg: (u32, u32),
    /// Path MTUs towards tunnel real servers learnt from routers' errors (see
    /// [`crate::pipeline::pmtu`]): `forward` answers a packet that would outgrow one.
    pmtu: crate::pipeline::pmtu::PmtuTable,
    /// Exception path (`interface.kernel_port`, DPDK): the queue of each interface's kernel
    /// port (fixed when the backend opened the ports; the driver passes the kernel's own
    /// frames through), and the `[engine] kernel_rate` bucket.
    kern_q: Vec<Option<usize>>,
    kern_rl: crate::pipeline::ratelimit::RateLimit,
    sweep_pos: usize,
    /// The flow table's version after the last expiry sweep (churn since: `sweep_tick`).
    sweep_ver: u64,
    /// The last timer tick swept (`now >> TICK_SHIFT`).
    tick: u64,
    /// What `timeout_after_work` compares to see whether work added a timer: the lengths of
    /// the held-packet, reserved-port and retired-address lists and whether services exist,
    /// when `poll_timeout` last ran in full.
    timer_sig: [usize; 8],
    now: u64,
    last_tick: u64,
    /// `now` of the last service-counter flush from `poll`.
    last_svc_flush: u64,
    /// Cluster sync: on (a `[cluster]` is configured), refresh period (ns), entries for the
    /// peers gathered during this poll, and the refresh scan position.
    sync_on: bool,
    sync_refresh: u64,
    sync_out: Vec<SyncEntry>,
    sync_pos: usize,
}

/// Slots the sync refresh scan visits per tick at least (more in a large table: the whole
/// table about once a second).
const SYNC_SCAN_PER_TICK: usize = 64;
/// Entries a worker gathers per poll at most (beyond: left to the refresh, counted).
const SYNC_MAX_PER_POLL: usize = 4096;

/// Unfolded per (service, real server) traffic of one worker.
#[derive(Clone, Copy, Default)]
struct SvcAcc {
    in_packets: u64,
    in_bytes: u64,
    out_packets: u64,
    out_bytes: u64,
}

/// Which local address and port a new full-NAT connection uses.
#[derive(Clone, Copy)]
enum Local {
    /// Round robin over the service's local addresses.
    Any,
    /// This address if it has a free port (an FTP data connection: its control connection's).
    Prefer(Addr),
    /// This reserved address and port (a full-NAT active FTP data connection).
    Fixed(Addr, u16),
}

/// What to do with a packet after classification.
#[derive(Clone, Copy)]
enum Next {
    Tx(usize),
    Drop(DropReason),
    /// Hold until the next hop (iface, address) resolves.
    Park(usize, Addr),
    /// SYN proxy: client data of connection `idx` while the real server's handshake is
    /// pending; held until it completes.
    ProxyHold(u32),
}

/// DR/tunnel SYN proxy: client addresses verified per worker (a direct-mapped table, 2^16
/// slots, allocated on first use) and for how long.
const VERIFIED_BITS: u32 = 16;
const VERIFIED_NS: u64 = 300_000_000_000;

/// Client packets held per worker while SYN-proxied handshakes complete, and for how long.
const MAX_PROXY_HELD: usize = 256;
const PROXY_HOLD_NS: u64 = 3_000_000_000;

fn sched_dests(s: &crate::pipeline::snapshot::Svc) -> Vec<sched::Dest> {
    s.dests
        .iter()
        .map(|d| sched::Dest {
            addr: addr_to_ip(d.addr),
            port: d.port.unwrap_or(0),
            weight: d.weight,
            upper: d.upper,
            lower: d.lower,
        })
        .collect()
}

/// The scheduler of service `s` with its flags (round robin for a name the config's
/// validation would have refused).
fn new_sched(s: &crate::pipeline::snapshot::Svc, dests: &[sched::Dest], seed: u64) -> Box<dyn sched::Scheduler> {
    sched::new_scheduler_with(&s.scheduler, dests, seed, &s.sched_opts)
        .unwrap_or_else(|_| sched::new_scheduler("rr", dests, seed).expect("rr exists"))
}

impl<Q: BufAlloc> Worker<Q> {
    /// The core of worker `id` over ports with these allocators and capabilities (one each,
    /// in interface order; kernel ports after the configured interfaces).
    pub fn new(id: usize, allocs: Vec<Q>, caps: Vec<PortCaps>, snap: Arc<Snapshot>, env: CoreEnv) -> Self {
        assert_eq!(allocs.len(), caps.len(), "one allocator and one PortCaps per port");
        let cap = snap.config.engine.flow_table_size;
        let ifaces = caps.len();
        let kern_q = kernel_ports(&snap, ifaces);
        let kern_rate = snap.config.engine.kernel_rate;
        let mut w = Worker {
            id,
            counters: env.counters,
            allocs,
            caps,
            handoff_out: Vec::new(),
            snap: snap.clone(),
            snap_gen: 0,
            addr_memo: None,
            svcs: Vec::new(),
            remap: Default::default(),
            svc_counters: Arc::new(Vec::new()),
            flows: FlowTable::new(cap),
            lports: LportPools::randomized(lport_share(snap.port_range, id, env.workers), env.lport_seed),
            retired: Vec::new(),
            moved: Vec::new(),
            reserved: Vec::new(),
            neigh: NeighCache::with_max(snap.config.engine.neighbor_table_size),
            neigh_aged: 0,
            neigh_probes: Vec::new(),
            expect: ExpectTable::new(snap.config.engine.expectation_table_size),
            frags: FragTable::new(),
            frag_held: Vec::new(),
            frag_steer: Vec::new(),
            cookies: env.syn.cookies,
            syn: env.syn.clone(),
            half_open: 0,
            last_cookie: 0,
            proxy_held: Vec::new(),
            proxy_release: None,
            verified: Vec::new(),
            workers: env.workers,
            liveness: env.liveness,
            events: Default::default(),
            pre: Vec::with_capacity(crate::port::BURST),
            lanes: Vec::with_capacity(crate::port::BURST),
            express_on: true,
            acc: Vec::new(),
            acc_base: Vec::new(),
            acc_dirty: Vec::new(),
            if_macs: Vec::new(),
            hint_ver: u64::MAX,
            timeouts: [0; crate::flow::tcpstate::N_STATES],
            tx: (0..ifaces).map(|_| Vec::with_capacity(crate::port::BURST * 4)).collect(),
            pending: Vec::with_capacity(MAX_PENDING),
            frag_out: Vec::new(),
            ip_ident: (id * 65536 / env.workers.max(1)) as u16,
            actions: alg::Actions::default(),
            bounce_log: Default::default(),
            neigh_log: Default::default(),
            sync_log: Default::default(),
            neigh_evict_rl: crate::pipeline::ratelimit::RateLimit::new(neigh::EVICT_PER_SEC, neigh::EVICT_BURST),
            icmp_rl: crate::pipeline::ratelimit::RateLimit::new(0, 1),
            icmp_hosts: crate::pipeline::ratelimit::HostLimit::new(0, 1, 1),
            icmp_host_cfg: (u32::MAX, 0),
            icmp_cfg: (u32::MAX, 0),
            pmtu: crate::pipeline::pmtu::PmtuTable::new(),
            kern_q,
            kern_rl: crate::pipeline::ratelimit::RateLimit::new(kern_rate, (kern_rate / 10).clamp(64, 100_000)),
            sweep_pos: 0,
            sweep_ver: 0,
            tick: 0,
            timer_sig: [usize::MAX; 8],
            now: 0,
            last_tick: 0,
            last_svc_flush: 0,
            sync_on: false,
            sync_refresh: 0,
            sync_out: Vec::new(),
            sync_pos: 0,
        };
        w.apply_snapshot(snap);
        w
    }

    /// What the core knows of each port (MTU, MAC).
    pub fn port_caps(&self) -> &[PortCaps] {
        &self.caps
    }
    /// Replace what the core knows of the ports (the driver, with each snapshot, or after a
    /// test changed a port's MTU).
    pub fn set_port_caps(&mut self, i: usize, caps: PortCaps) {
        if let Some(c) = self.caps.get_mut(i) {
            *c = caps;
        }
        self.l2_changed();
    }

    /// A port's MAC or MTU may have changed (new port caps, a new snapshot): every next
    /// hop's cached Ethernet header and MTU ([`flow::HopMac`]) is stale, so the neighbour
    /// generation moves on and each next hop is looked up again on its next packet.
    fn l2_changed(&mut self) {
        self.neigh.invalidate();
    }
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }
    /// Sizes of the worker's bounded tables and buffers (what a flood could try to grow),
    /// for `ferrovs bench`. Walks the flow table: not for the packet path.
    pub fn table_sizes(&self) -> TableSizes {
        let mut ftp_sessions = 0;
        let mut ftp_buffer_bytes = 0;
        for i in 0..self.flows.slots() as u32 {
            if self.flows.try_get(i).is_some() {
                if let Some(s) = self.flows.cold(i).alg.as_deref() {
                    ftp_sessions += 1;
                    ftp_buffer_bytes += s.buffer_bytes();
                }
            }
        }
        TableSizes {
            flows: self.flows.len(),
            neighbors: self.neigh.len(),
            expectations: self.expect.len(),
            frag_datagrams: self.frags.len(),
            frag_held: self.frag_held.len(),
            proxy_held: self.proxy_held.len(),
            verified_clients: self.verified.len(),
            parked: self.pending.len(),
            ftp_sessions,
            ftp_buffer_bytes,
        }
    }

    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }
    pub fn service_counters(&self) -> &Arc<Vec<ServiceCounters>> {
        &self.svc_counters
    }

    /// A burst of frames received on interface `iface` at `now` (ns), drained from `rx`: the
    /// driver's form of [`Worker::handle`]. Their verdicts are not returned: transmitted frames
    /// wait in the transmit queues, handoffs in `poll_handoff`. Returns the number of frames.
    #[inline]
    pub fn handle_burst(&mut self, now: u64, iface: usize, rx: &mut Vec<Q::Buf>) -> usize {
        self.now = now;
        let mut pre = std::mem::take(&mut self.pre);
        let mut lanes = std::mem::take(&mut self.lanes);
        // Three passes (see `express`): parse and hash, candidate index word, then each
        // packet: the express lane, else the full parse and the general path. A failed
        // candidate is looked up in full, and so is a miss once the table's version changed
        // (something inserted or removed since), so a connection created or removed by an
        // earlier packet of the same burst is seen correctly.
        let n = rx.len();
        if pre.len() < n {
            pre.resize(n, Ok(Parsed::default()));
            lanes.resize(n, express::Lane::default());
        }
        let bytes = express::parse_pass(&self.flows, rx, &mut lanes[..n], &mut pre[..n]);
        let any6 = express::lookup_pass(&self.flows, &mut lanes[..n]);
        // The version the hints were looked up at; misses stay known across this burst's
        // inserts of other keys (`FlowTable::still_missing`).
        self.hint_ver = self.flows.mark_misses();
        bump(&self.counters.rx_packets, n as u64);
        bump(&self.counters.rx_bytes, bytes);
        // A burst with IPv6 frames for the lane takes the loop that has room for them; one
        // without, the loop with the IPv4 lane alone.
        if any6 {
            self.packet_pass6(iface, rx, &lanes[..n], &mut pre[..n]);
        } else {
            self.packet_pass::<false>(iface, rx, &lanes[..n], &mut pre[..n]);
        }
        self.pre = pre;
        self.lanes = lanes;
        n
    }

    /// [`Worker::packet_pass`] of a burst with IPv6 frames for the lane, out of line: the
    /// IPv4 loop is the one inlined.
    #[inline(never)]
    fn packet_pass6(
        &mut self,
        iface: usize,
        rx: &mut Vec<Q::Buf>,
        lanes_n: &[express::Lane],
        pre_n: &mut [Result<Parsed, parse::ParseError>],
    ) {
        self.packet_pass::<true>(iface, rx, lanes_n, pre_n);
    }

    /// Pass 3 of a burst: each packet through the express lane, else its full parse and the
    /// general path. `V6`: some of the lane's frames are IPv6 ([`express::LANE_IS_V6`]);
    /// they go through [`Worker::lane6`].
    #[inline(always)]
    fn packet_pass<const V6: bool>(
        &mut self,
        iface: usize,
        rx: &mut Vec<Q::Buf>,
        lanes_n: &[express::Lane],
        pre_n: &mut [Result<Parsed, parse::ParseError>],
    ) {
        // Per burst: the lane is on (not while cluster sync wants every packet), and the
        // receiving interface's MAC as a 48-bit word.
        let lane_on = self.express_on && !self.sync_on;
        let my_mac = self.if_macs.get(iface).map_or(u64::MAX, express::mac_word);
        for (i, mut pkt) in rx.drain(..).enumerate() {
            let lane = lanes_n[i];
            let mut confirmed = false;
            if lane.l3 != 0 {
                if V6 && lane.l3 & express::LANE_IS_V6 != 0 {
                    self.lane6(iface, pkt, lane, lane_on, my_mac, &mut pre_n[i]);
                    continue;
                }
                if lane.hint != NONE && lane_on {
                    match self.express::<false>(my_mac, lane, &mut pkt) {
                        express::Express::Tx(q) => {
                            self.tx[q].push(pkt);
                            continue;
                        }
                        express::Express::Confirmed => confirmed = true,
                        express::Express::Unconfirmed => {}
                    }
                }
                pre_n[i] = express::express_parsed(pkt.data(), lane.l3 as usize, false);
            }
            self.process_parsed(iface, pkt, false, &pre_n[i], lane.h, lane.hint, confirmed);
        }
    }

    /// Turn the express lane (`express`) on (the default) or off: with it off every packet
    /// takes the general path. The lane is an optimisation only, so the frames, counters
    /// and connections come out the same either way (tests compare the two).
    pub fn set_express(&mut self, on: bool) {
        self.express_on = on;
    }

    /// A frame another worker handed over (received there on `iface`).
    pub fn handle_handed(&mut self, now: u64, iface: usize, pkt: Q::Buf) {
        self.now = now;
        bump(&self.counters.handoff_in, 1);
        let r = parse::parse(pkt.data());
        self.process_parsed(iface, pkt, true, &r, 0, NONE, false);
    }

    /// One frame received on interface `iface` at `now` (ns), without a port: what became of
    /// it. Frames to transmit (this one and any it caused: an ARP request, released parked
    /// packets, ...) then come out of [`Worker::poll_transmit`], packets for other workers out
    /// of [`Worker::poll_handoff`]. Service counters are folded at once.
    ///
    /// The verdict is read off the core's queues and drop counters around the call, so the
    /// burst path pays nothing for it.
    pub fn handle(&mut self, now: u64, iface: usize, frame: Q::Buf) -> Verdict {
        self.now = now;
        let drops: Vec<u64> =
            self.counters.drops.iter().map(|d| d.load(std::sync::atomic::Ordering::Relaxed)).collect();
        let tx: Vec<usize> = self.tx.iter().map(Vec::len).collect();
        let (handed, pending) = (self.handoff_out.len(), self.pending.len());
        let held = self.proxy_held.len() + self.frag_held.len() + self.frags.len();
        bump(&self.counters.rx_packets, 1);
        bump(&self.counters.rx_bytes, frame.len() as u64);
        if iface >= self.caps.len() {
            drop(frame);
            self.drop_pkt(DropReason::NoRoute);
        } else {
            self.process(iface, frame, false);
        }
        if self.handoff_out.len() > handed {
            return Verdict::Handoff(self.handoff_out[handed].0);
        }
        for (r, d) in self.counters.drops.iter().enumerate() {
            if d.load(std::sync::atomic::Ordering::Relaxed) > drops[r] {
                return Verdict::Drop(DropReason::ALL[r]);
            }
        }
        if self.pending.len() > pending {
            return Verdict::Parked;
        }
        if self.proxy_held.len() + self.frag_held.len() + self.frags.len() > held {
            return Verdict::Held;
        }
        match self.tx.iter().zip(&tx).position(|(q, &n)| q.len() > n) {
            Some(i) => Verdict::Tx(i),
            None => Verdict::Consumed,
        }
    }

    /// The next frame to transmit: (interface, frame), in order per interface.
    pub fn poll_transmit(&mut self) -> Option<(usize, Q::Buf)> {
        let i = self.tx.iter().position(|q| !q.is_empty())?;
        Some((i, self.tx[i].remove(0)))
    }

    /// The per-interface transmit queues, for a driver that hands them to its ports'
    /// `tx_burst` in place (draining them).
    pub fn transmit_queues(&mut self) -> &mut [Vec<Q::Buf>] {
        &mut self.tx
    }

    /// The next packet for another worker: (owner, interface it came in on, frame).
    pub fn poll_handoff(&mut self) -> Option<(usize, u8, Q::Buf)> {
        (!self.handoff_out.is_empty()).then(|| self.handoff_out.remove(0))
    }

    /// Hand `pkt` (received on `iface`) to worker `owner`, through the driver.
    #[inline]
    fn hand_off(&mut self, owner: usize, iface: u8, pkt: Q::Buf) {
        self.handoff_out.push((owner, iface, pkt));
    }

    /// Packets for other workers waiting in the core, drained (driver).
    pub fn handoffs(&mut self) -> std::vec::Drain<'_, (usize, u8, Q::Buf)> {
        self.handoff_out.drain(..)
    }

    /// When the core next wants [`Worker::handle_timeout`] (ns): the earliest of the next
    /// timer tick (every 2^20 ns) while connections, expectations or fragments exist (the
    /// incremental sweeps and the cluster sync refresh run once a tick), the next scheduler
    /// tick (every 2^30 ns) while services exist, the next neighbour aging (every
    /// 2^[`neigh::AGE_SHIFT`] ns) while learnt neighbours exist, a held packet's deadline, a reserved
    /// port's or retired address's end. `None`: nothing to do, ever. Never earlier than the
    /// last `now` the core saw unless something was due then (a late call catches up).
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |d: u64| t = Some(t.map_or(d, |t| t.min(d)));
        if let Some(d) = self.next_tick() {
            at(d);
        }
        if !self.svcs.is_empty() {
            at(((self.now >> 30) + 1) << 30);
        }
        if self.neigh.has_dynamic() {
            at(((self.now >> neigh::AGE_SHIFT) + 1) << neigh::AGE_SHIFT);
        }
        for d in self.pending.iter().map(|h| h.deadline) {
            at(d);
        }
        for d in self.proxy_held.iter().map(|h| h.deadline) {
            at(d);
        }
        for d in self.frag_held.iter().map(|h| h.deadline) {
            at(d);
        }
        for &(_, _, until) in &self.reserved {
            at(until);
        }
        for r in &self.retired {
            at(r.until());
        }
        for m in &self.moved {
            at(m.until);
        }
        t
    }

    /// The next timer tick while a tick has work (connections, expectations, fragments).
    #[inline]
    fn next_tick(&self) -> Option<u64> {
        let busy = !self.flows.is_empty() || !self.expect.is_empty() || !self.frags.is_empty();
        // Never swept yet (a new or reset core): the tick after the last `now` it saw.
        let tick = if self.tick == 0 { self.now >> TICK_SHIFT } else { self.tick };
        busy.then(|| (tick + 1) << TICK_SHIFT)
    }

    #[inline]
    fn timer_sig(&self) -> [usize; 8] {
        [
            self.neigh.has_dynamic() as usize,
            self.pending.len(),
            self.proxy_held.len(),
            self.frag_held.len(),
            self.reserved.len(),
            self.retired.len(),
            self.moved.len(),
            self.svcs.len(),
        ]
    }

    /// [`Worker::poll_timeout`], remembered for [`Worker::timeout_after_work`] (a driver
    /// calls it after `handle_timeout` and control messages).
    pub fn next_timeout(&mut self) -> Option<u64> {
        self.timer_sig = self.timer_sig();
        self.poll_timeout()
    }

    /// The deadline after a burst of work, cheaply, given `cached`, the deadline the driver
    /// had before it (from [`Worker::next_timeout`] or this): the work may have added
    /// connections (the next tick) or timers. Held packets, reserved ports and retired
    /// addresses added since (their lists grew or shrank) mean a full
    /// [`Worker::poll_timeout`]; otherwise the result is `cached` or the next tick if
    /// earlier. Never later than `poll_timeout` (it may be earlier: a timer that went away
    /// during the work leaves a spurious early deadline, where `handle_timeout` finds
    /// nothing due).
    #[inline]
    pub fn timeout_after_work(&mut self, cached: Option<u64>) -> Option<u64> {
        if self.timer_sig() != self.timer_sig {
            return self.next_timeout();
        }
        match (cached, self.next_tick()) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        }
    }

    /// The next event for the driver: a neighbour to tell the other workers, a cluster sync
    /// batch (what the core gathered since the last one), new per-service counters.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.sync_out.is_empty() {
            return None;
        }
        Some(Event::Sync(std::mem::take(&mut self.sync_out)))
    }

    /// Fold the service counters if `SVC_FLUSH_NS` passed since the last fold or the poll
    /// was idle (see [`Worker::flush_svc_counters`]).
    pub fn flush_svc_counters_at(&mut self, now: u64, idle: bool) {
        // Service counters: folded at most every SVC_FLUSH_NS of traffic,
        // and at once when a poll finds nothing to do, so statistics lag
        // by at most ~100 ms while busy and not at all once idle.
        if idle || now.wrapping_sub(self.last_svc_flush) >= SVC_FLUSH_NS {
            self.last_svc_flush = now;
            self.flush_svc_counters();
        }
    }

    /// A control message from the worker's ring (the driver reads the ring).
    pub fn handle_ctrl(&mut self, now: u64, m: Ctrl) {
        self.now = now;
        match m {
            Ctrl::Neigh(a, mac, seen) => {
                // With the clock: a confirmation another worker shares confirms this
                // worker's entry too (see `neigh`'s aging); a MAC it learnt unasked is as
                // stale here as there.
                if self.neigh.update(a, mac, seen, Some(now), || true) == neigh::Learnt::Changed {
                    self.release_pending(a, mac);
                }
                self.count_neigh_evictions();
            }
            Ctrl::Snapshot(s) => self.apply_snapshot(s),
            Ctrl::ListConns(tx) => {
                let _ = tx.send(self.list_conns());
            }
            Ctrl::Sync(entries) => self.apply_sync(&entries),
        }
    }

    #[inline]
    fn drop_pkt(&self, r: DropReason) {
        self.counters.count_drop(r);
    }

    /// Fold the per-(service, real server) packet and byte deltas gathered
    /// by `forward` into the shared [`ServiceCounters`]. `poll` calls it
    /// at most every `SVC_FLUSH_NS` (100 ms) while traffic flows and on
    /// every idle poll, so stats read by `ferrovsadm --stats` / metrics lag
    /// by at most ~100 ms under load; also after [`Worker::process`] and
    /// before a snapshot replaces the counters.
    pub fn flush_svc_counters(&mut self) {
        if self.acc_dirty.is_empty() {
            return;
        }
        for &w in &self.acc_dirty {
            let (si, di) = ((w >> 16) as usize, (w & 0xffff) as usize);
            let slot = self.acc_base.get(si).map_or(usize::MAX, |&b| b as usize + di);
            let Some(a) = self.acc.get_mut(slot) else { continue };
            let a = std::mem::take(a);
            let Some(sc) = self.svc_counters.get(si) else { continue };
            bump(&sc.in_packets, a.in_packets);
            bump(&sc.in_bytes, a.in_bytes);
            bump(&sc.out_packets, a.out_packets);
            bump(&sc.out_bytes, a.out_bytes);
            if let Some(d) = sc.dests.get(di) {
                bump(&d.in_packets, a.in_packets);
                bump(&d.in_bytes, a.in_bytes);
                bump(&d.out_packets, a.out_packets);
                bump(&d.out_bytes, a.out_bytes);
            }
        }
        self.acc_dirty.clear();
    }

    pub fn list_conns(&self) -> Vec<flow::ConnRow> {
        let mut v = Vec::new();
        for i in 0..self.flows.slots() as u32 {
            let Some(c) = self.flows.try_get(i) else { continue };
            let k = self.flows.cold(i);
            let (pkts_in, pkts_out) = self.flows.pkts(i);
            let proto = match c.proto {
                PROTO_TCP => "TCP",
                PROTO_UDP => "UDP",
                _ => "?",
            };
            let sa = |a: Addr, p: u16| std::net::SocketAddr::new(addr_to_ip(a), p).to_string();
            v.push(flow::ConnRow {
                worker: self.id,
                id: i,
                proto: proto.into(),
                client: sa(c.client(), c.cport),
                vip: sa(self.flows.vip_of(c).0, self.flows.vip_of(c).1),
                real: sa(self.flows.rs_of(c).0, self.flows.rs_of(c).1),
                state: c.state.name().into(),
                expires_in_s: c.expires_in(self.now) / 1_000_000_000,
                service: self.snap.services.get(c.svc as usize).map(|s| s.name.clone()).unwrap_or_default(),
                ftp_control: k.alg.is_some(),
                parent: (k.parent != NONE).then_some(k.parent),
                children: k.children,
                pkts_in,
                pkts_out,
                local: (c.fwd == Forward::Fnat).then(|| sa(self.flows.laddr_of(c), c.lport())),
            });
        }
        v
    }

    /// Full NAT: free local ports of this worker on `laddr` for `proto` (tests, statistics).
    pub fn fnat_free_ports(&mut self, laddr: Addr, proto: u8) -> u32 {
        self.lports.free_on(laddr, proto)
    }

    /// Full NAT FTP: local ports reserved for announced active data connections.
    pub fn fnat_reserved(&self) -> usize {
        self.reserved.len()
    }

    /// The MAC this worker's neighbour cache holds for `a` (static or learnt), if any.
    pub fn neighbor(&self, a: Addr) -> Option<[u8; 6]> {
        self.neigh.get(a)
    }

    /// Packets parked until their next hop resolves (each is later sent or
    /// counted as a `no_neighbor` drop).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Every packet the worker holds for later: parked for a neighbour,
    /// later fragments waiting for their first, client segments of a
    /// SYN-proxied connection waiting for the real server. Each is later
    /// sent or counted as a drop (`no_neighbor`, `frag_timeout`, `proxy_wait`).
    pub fn held_packets(&self) -> usize {
        self.pending.len() + self.frag_held.len() + self.proxy_held.len()
    }

    /// Back to the state of `Worker::new` with the current snapshot, keeping
    /// the allocations: no connection, expectation, learnt neighbour,
    /// fragment, parked, proxy-held or queued packet; fresh schedulers,
    /// persistence templates and service counters; worker counters zeroed
    /// (the SYN-cookie secret stays). For fuzzing and tests that reuse one
    /// engine (the caller empties the port queues and the fabric's rings).
    pub fn reset(&mut self) {
        // Through remove_conn, so the snapshot's shared per-real-server
        // connection counts go back to zero.
        for i in 0..self.flows.slots() as u32 {
            if self.flows.get(i).live {
                self.remove_conn(i, false);
            }
        }
        self.flows.clear();
        self.sync_out.clear();
        self.sync_pos = 0;
        self.lports.clear();
        self.moved.clear();
        self.reserved.clear();
        self.expect.clear();
        self.neigh.clear();
        self.neigh_aged = 0;
        self.neigh_probes.clear();
        // `clear` restarts the neighbour generation: forget every memo.
        self.frags.clear();
        self.frag_held.clear();
        self.frag_steer.clear();
        self.half_open = 0;
        self.last_cookie = 0;
        self.proxy_held.clear();
        self.proxy_release = None;
        self.verified.clear();
        self.pmtu.clear();
        self.bounce_log = Default::default();
        self.neigh_log = Default::default();
        self.sync_log = Default::default();
        self.neigh_evict_rl = crate::pipeline::ratelimit::RateLimit::new(neigh::EVICT_PER_SEC, neigh::EVICT_BURST);
        self.pending.clear();
        self.handoff_out.clear();
        for t in self.tx.iter_mut() {
            t.clear();
        }
        self.actions.clear();
        self.acc_dirty.clear();
        self.hint_ver = u64::MAX;
        self.sweep_pos = 0;
        self.sweep_ver = self.flows.version();
        self.tick = 0;
        self.timer_sig = [usize::MAX; 8];
        self.events.clear();
        self.now = 0;
        self.last_tick = 0;
        self.last_svc_flush = 0;
        self.counters.reset();
        // Nothing to carry: apply_snapshot builds fresh schedulers,
        // persistence templates and service counters.
        self.svcs.clear();
        self.svc_counters = Arc::new(Vec::new());
        self.snap_gen = 0;
        let snap = self.snap.clone();
        self.apply_snapshot(snap);
    }
}

/// What became of one frame given to [`Worker::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It leaves (rewritten, or answered in place) on this interface: `poll_transmit`.
    Tx(usize),
    /// Dropped and counted under this reason.
    Drop(DropReason),
    /// Parked until its next hop resolves (an ARP request / solicitation went out).
    Parked,
    /// Held by the SYN proxy or fragment reassembly.
    Held,
    /// Handed to this worker, its owner: `poll_handoff`.
    Handoff(usize),
    /// Taken in (an ARP reply learnt, a segment absorbed by the FTP gateway, ...).
    Consumed,
}

/// Per interface: the kernel port (an interface index) of each interface that has one and
/// the backend opened (a backend without them leaves them out: index past `ports`).
pub fn kernel_ports(snap: &Snapshot, ports: usize) -> Vec<Option<usize>> {
    crate::pipeline::snapshot::kernel_queues(&snap.config).into_iter().map(|q| q.filter(|&q| q < ports)).collect()
}

/// The flow-table key of a parsed packet, as received.
#[inline(always)]
fn flow_key(p: &Parsed) -> FlowKey {
    FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto }
}

fn carry_counters(
    old: &ServiceCounters,
    new: &ServiceCounters,
    os: &crate::pipeline::snapshot::Svc,
    ns: &crate::pipeline::snapshot::Svc,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mv = |a: &std::sync::atomic::AtomicU64, b: &std::sync::atomic::AtomicU64| b.store(a.load(Relaxed), Relaxed);
    mv(&old.conns, &new.conns);
    mv(&old.in_packets, &new.in_packets);
    mv(&old.in_bytes, &new.in_bytes);
    mv(&old.out_packets, &new.out_packets);
    mv(&old.out_bytes, &new.out_bytes);
    for ((_, a), (_, b)) in old.ftp.fields().iter().zip(new.ftp.fields().iter()) {
        mv(a, b);
    }
    for ((_, a), (_, b)) in old.refused.fields().zip(new.refused.fields()) {
        mv(a, b);
    }
    for (i, d) in ns.dests.iter().enumerate() {
        if let Some(j) = os.dests.iter().position(|x| x.addr == d.addr && x.port == d.port) {
            let (a, b) = (&old.dests[j], &new.dests[i]);
            mv(&a.conns, &b.conns);
            mv(&a.in_packets, &b.in_packets);
            mv(&a.in_bytes, &b.in_bytes);
            mv(&a.out_packets, &b.out_packets);
            mv(&a.out_bytes, &b.out_bytes);
        }
    }
}
