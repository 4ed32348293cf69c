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
//! This file holds the worker's state, the core's entry points, classification
//! (`process_slow`: VIP, local address, reply, FTP data, cluster
//! recreation), scheduling, connection creation and expiry, and the NAT /
//! full NAT / DR / tunnel forwarding. The other parts of a packet's path are
//! child modules, each an `impl Worker` block that sees the worker's private
//! state: `local` (ARP/ND, echo, parked packets, the kernel's exception
//! path), `icmp` (errors originated and translated), `fragments`, `syn_proxy`,
//! `pp` (PROXY protocol), `ftp` (the gateway glue and pinhole broker) with
//! `tcp` (SACK, MSS clamp, split rewrites), `reload` (new snapshots, retired
//! local addresses) and `sync` (cluster sync on the worker's side).

use crate::cluster::sync::SyncEntry;
use crate::flow::expect::{ExpKey, ExpVal, ExpectTable};
use crate::flow::frag::{self, FragTable, FragVerdict};
use crate::flow::tcpstate::{self, Direction};
use crate::flow::{
    self, Dir, FlowKey, FlowTable, F_ACTIVE_COUNTED, F_ALG, F_COUNTED, F_DATA, F_PPROTO, F_SYNCED, F_SYNPROXY, F_XLAT,
    NONE,
};
use crate::pipeline::counters::{bump, DropReason, ServiceCounters, WorkerCounters};
use crate::pipeline::fnat::{rewrite_fnat, rewrite_ip2, LportPools};
use crate::pipeline::neigh::{self, NeighCache};
use crate::pipeline::snapshot::{lport_owner, lport_share, owner_of, Snapshot, ADDR_LADDR, ADDR_LOCAL, ADDR_VIP};
use crate::pipeline::synproxy::{self, Cookies, Handshake};
use crate::port::{BufAlloc, Packet, PortCaps};
use crate::wire::csum;
use crate::wire::parse::{
    self, addr_is_v4, addr_to_ip, addr_v4_bytes, addr_v6_bytes, icmp_is_echo, icmp_is_error, Addr, Parsed, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN,
};
use crossbeam_queue::ArrayQueue;
use ferrovs_cfg::Forward;
use ferrovs_ftp_alg as alg;
use ferrovs_sched as sched;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

mod express;
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
pub use redirect::{Liveness, DEAD_AFTER_MS, HEARTBEAT_MS};
use reload::Retired;
pub use tcp::ALG_MAX_GROWTH;

/// Messages to a worker's control ring.
pub enum Ctrl {
    /// A neighbour learnt by another worker.
    Neigh(Addr, [u8; 6]),
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
}

impl CoreEnv {
    /// A lone core (tests, tools): `workers` workers, fresh counters, nobody heard from.
    pub fn standalone(workers: usize) -> Self {
        CoreEnv { workers, counters: Default::default(), liveness: Default::default(), lport_seed: 0 }
    }
}

/// What the core has for the rest of the engine ([`Worker::poll_event`]); the driver
/// delivers it (rings, mutexes).
pub enum Event {
    /// A neighbour this worker learnt or whose MAC changed: for every other worker
    /// (`Ctrl::Neigh`).
    Neigh(Addr, [u8; 6]),
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
            sync_tx: ArrayQueue::new(1024),
            sync_placement: Mutex::new(Default::default()),
            liveness: Default::default(),
            stop: AtomicBool::new(false),
            lport_seed,
        })
    }
    /// The environment of worker `id`'s core.
    pub fn env(&self, id: usize) -> CoreEnv {
        CoreEnv {
            workers: self.workers,
            counters: self.counters[id].clone(),
            liveness: self.liveness.clone(),
            lport_seed: self.lport_seed,
        }
    }

    /// Deliver an event of worker `id`'s core: a neighbour to the other workers' control
    /// rings (best effort: a full ring drops it, which only delays resolution there), a sync
    /// batch to the sync thread's ring (a full ring counts its entries `sync_skipped`), the
    /// service counters for the control plane.
    pub fn deliver(&self, id: usize, e: Event) {
        match e {
            Event::Neigh(a, mac) => {
                for (w, q) in self.ctrl.iter().enumerate() {
                    if w != id {
                        let _ = q.push(Ctrl::Neigh(a, mac));
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
    persist: Option<sched::PersistTable>,
    /// The real servers in the scheduler's form, built once per snapshot.
    dests: Vec<sched::Dest>,
    /// Per real server: what the last connection created to it computed that the next
    /// one may reuse ([`DestMemo`]).
    ids: Vec<DestMemo>,
}

/// Per real server of a service, from the last connection created to it: the flow table's
/// interned ids (VIP, real server, next hops), hints for the next one
/// ([`flow::NewConn::hint`]), and the checksum deltas of its (VIP, port) -> (real server,
/// port) rewrite, reused while a new connection has the same four (plain NAT, DR, tunnel:
/// full NAT adds the client side, computed per connection).
#[derive(Clone, Copy)]
pub(crate) struct DestMemo {
    ids: [u16; 4],
    /// (VIP, real server, VIP port, real-server port, IPv4) the deltas are for.
    key: (Addr, Addr, u16, u16, bool),
    /// IPv4 header deltas in/out and the L4 delta in, folded.
    l3_in: u16,
    l3_out: u16,
    l4_in: u16,
    /// `key` holds a computed entry.
    valid: bool,
}

impl DestMemo {
    pub(crate) const EMPTY: DestMemo =
        DestMemo { ids: flow::NO_HINT, key: (0, 0, 0, 0, false), l3_in: 0, l3_out: 0, l4_in: 0, valid: false };
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
    reserved: Vec<(Addr, u16, u64)>,
    neigh: NeighCache,
    expect: ExpectTable,
    /// IP fragments: datagrams in flight and fragments waiting for their first.
    frags: FragTable,
    frag_held: Vec<Held<frag::FragKey, Q::Buf>>,
    /// Full NAT replies in fragments that arrived here but belong to another worker: which
    /// worker each datagram's first fragment went to (its local port named it), so the later
    /// fragments (no ports) follow it. Held fragments of such a datagram wait in `frag_held`.
    frag_steer: Vec<(frag::FragKey, u8, u64)>,
    /// SYN proxy: the cookie secret, TCP connections in SYN_RECV (the `auto` trigger), when the
    /// last cookie went out, held client packets, and a connection whose held packets are due.
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
    /// Per transmit queue (one per port), what the express lane needs of the port: see
    /// [`express::Egress`]. Rebuilt when the snapshot or a port's caps change.
    egress: Vec<express::Egress>,
    /// Flow table version when the current burst's hints were looked up.
    hint_ver: u64,
    timeouts: [u64; crate::flow::tcpstate::N_STATES],
    /// Per interface: frames to transmit, in order (forwarded, reflected, originated,
    /// released). The driver hands each to the port's `tx_burst` in place; `poll_transmit`
    /// yields them one by one.
    tx: Vec<Vec<Q::Buf>>,
    pending: Vec<Held<Addr, Q::Buf>>,
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
    icmp_cfg: (u32, u32),
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
    timer_sig: [usize; 6],
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
            reserved: Vec::new(),
            neigh: NeighCache::with_max(snap.config.engine.neighbor_table_size),
            expect: ExpectTable::new(snap.config.engine.expectation_table_size),
            frags: FragTable::new(),
            frag_held: Vec::new(),
            frag_steer: Vec::new(),
            cookies: Cookies::new(),
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
            egress: Vec::new(),
            hint_ver: u64::MAX,
            timeouts: [0; crate::flow::tcpstate::N_STATES],
            tx: (0..ifaces).map(|_| Vec::with_capacity(crate::port::BURST * 4)).collect(),
            pending: Vec::with_capacity(MAX_PENDING),
            actions: alg::Actions::default(),
            bounce_log: Default::default(),
            neigh_log: Default::default(),
            sync_log: Default::default(),
            neigh_evict_rl: crate::pipeline::ratelimit::RateLimit::new(neigh::EVICT_PER_SEC, neigh::EVICT_BURST),
            icmp_rl: crate::pipeline::ratelimit::RateLimit::new(0, 1),
            icmp_cfg: (u32::MAX, 0),
            kern_q,
            kern_rl: crate::pipeline::ratelimit::RateLimit::new(kern_rate, (kern_rate / 10).clamp(64, 100_000)),
            sweep_pos: 0,
            sweep_ver: 0,
            tick: 0,
            timer_sig: [usize::MAX; 6],
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
        self.refresh_egress();
    }

    /// Rebuild [`Worker::egress`] from the ports' caps and the snapshot's interface MACs.
    fn refresh_egress(&mut self) {
        self.egress = (0..self.tx.len())
            .map(|i| match (self.if_macs.get(i), self.caps.get(i)) {
                (Some(&mac), Some(c)) => express::Egress { mac, mtu: c.mtu },
                _ => express::Egress::default(),
            })
            .collect();
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
        express::lookup_pass(&self.flows, &mut lanes[..n]);
        // The version the hints were looked up at; misses stay known across this burst's
        // inserts of other keys (`FlowTable::still_missing`).
        self.hint_ver = self.flows.mark_misses();
        bump(&self.counters.rx_packets, n as u64);
        bump(&self.counters.rx_bytes, bytes);
        // Per burst: the lane is on (not while cluster sync wants every packet), and the
        // receiving interface's MAC as a 48-bit word.
        let lane_on = self.express_on && !self.sync_on;
        let my_mac = self.if_macs.get(iface).map_or(u64::MAX, |m| express::mac_word(m));
        let lanes_n = &lanes[..n];
        let pre_n = &mut pre[..n];
        for (i, mut pkt) in rx.drain(..).enumerate() {
            let lane = lanes_n[i];
            let mut confirmed = false;
            if lane.l3 != 0 {
                if lane.hint != NONE && lane_on {
                    match self.express(my_mac, lane, &mut pkt) {
                        express::Express::Tx(q) => {
                            self.tx[q].push(pkt);
                            continue;
                        }
                        express::Express::Confirmed => confirmed = true,
                        express::Express::Unconfirmed => {}
                    }
                }
                pre_n[i] = express::express_parsed(pkt.data(), lane.l3 as usize);
            }
            self.process_parsed(iface, pkt, false, &pre_n[i], lane.h, lane.hint, confirmed);
        }
        self.pre = pre;
        self.lanes = lanes;
        n
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
    /// tick (every 2^30 ns) while services exist, a held packet's deadline, a reserved
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
    fn timer_sig(&self) -> [usize; 6] {
        [
            self.pending.len(),
            self.proxy_held.len(),
            self.frag_held.len(),
            self.reserved.len(),
            self.retired.len(),
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

    /// Timers due at `now` (ns): scheduler ticks and persistence templates, the incremental
    /// expiry sweep of connections, expectations and fragments (once per 2^20 ns tick,
    /// each tick's share for every tick passed since the last sweep, up to
    /// `SWEEP_CATCH_UP`), the cluster sync refresh, held packets past their deadline,
    /// reserved ports, retired local addresses. Calling it early or often costs little:
    /// the sweeps run once a tick.
    #[inline]
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        let tick = now >> TICK_SHIFT;
        if tick != self.tick {
            let ticks = if self.tick == 0 { 1 } else { tick.wrapping_sub(self.tick).min(SWEEP_CATCH_UP) as usize };
            self.tick = tick;
            self.sweep_tick(now, ticks);
        }
        self.housekeeping(now);
    }

    /// The per-tick sweeps, `ticks` ticks' worth: connections (`max(SWEEP_MIN_TICK,
    /// ceil(slots / SWEEP_TICKS))` slots a tick plus `SWEEP_PER_CHURN` per connection
    /// inserted or removed since), expectations, fragments, the cluster sync refresh.
    fn sweep_tick(&mut self, now: u64, ticks: usize) {
        let slots = self.flows.slots();
        if !self.flows.is_empty() {
            let churn = self.flows.version().wrapping_sub(self.sweep_ver).min(SWEEP_MAX_CHURN as u64) as usize;
            let per_tick = SWEEP_MIN_TICK.max(slots.div_ceil(SWEEP_TICKS));
            let mut budget = (per_tick * ticks + churn * SWEEP_PER_CHURN).min(slots);
            let mut pos = self.sweep_pos;
            while let Some(i) = self.flows.scan_expired(&mut pos, &mut budget, now) {
                self.expire(i, now);
            }
            self.sweep_pos = pos;
        }
        self.sweep_ver = self.flows.version();
        if !self.expect.is_empty() {
            self.sweep_expectations(now, EXPECT_SWEEP_PER_TICK * ticks);
        }
        if !self.frags.is_empty() {
            self.frags.sweep(now, EXPECT_SWEEP_PER_TICK * ticks);
        }
        if self.sync_on && slots > 0 {
            self.sync_refresh_scan(now, SYNC_SCAN_PER_TICK.max(slots.div_ceil(SWEEP_TICKS)) * ticks);
        }
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
            Ctrl::Neigh(a, mac) => {
                if self.neigh.learn(a, mac) {
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

    fn housekeeping(&mut self, now: u64) {
        // About once a second: let time-based schedulers (lblc, lblcr) age
        // their tables and persistence templates expire.
        if now >> 30 != self.last_tick {
            self.last_tick = now >> 30;
            for st in self.svcs.iter_mut() {
                st.sched.tick(now);
                if let Some(pt) = st.persist.as_mut() {
                    pt.expire(now);
                }
            }
        }
        // Pending packets waiting for a neighbour.
        expire_held(&mut self.pending, now, &self.counters, DropReason::NoNeighbor);
        expire_held(&mut self.proxy_held, now, &self.counters, DropReason::ProxyWait);
        if !self.reserved.is_empty() {
            let lports = &mut self.lports;
            self.reserved.retain(|&(a, port, until)| {
                if until > now {
                    return true;
                }
                lports.release(a, PROTO_TCP, port);
                false
            });
        }
        expire_held(&mut self.frag_held, now, &self.counters, DropReason::FragTimeout);
        if !self.retired.is_empty() {
            self.sweep_retired(now);
        }
    }

    /// Remove up to `budget` expired expectations (oldest first) and count them.
    pub fn sweep_expectations(&mut self, now: u64, budget: usize) {
        let sc = &self.svc_counters;
        self.expect.sweep(now, budget, |svc| {
            if let Some(c) = sc.get(svc as usize) {
                bump(&c.ftp.expectations_expired, 1);
            }
        });
    }

    /// Run a full expiry pass now (tests, replay end, shutdown).
    pub fn expire_all(&mut self, now: u64) {
        for i in 0..self.flows.slots() as u32 {
            let c = self.flows.get(i);
            if c.live && c.expired(now) {
                self.expire(i, now);
            }
        }
        self.sweep_expectations(now, usize::MAX);
    }

    /// Connection `i` reached its expiry time.
    fn expire(&mut self, i: u32, now: u64) {
        let children = self.flows.cold(i).children;
        let c = self.flows.get_mut(i);
        if children > 0 {
            // A control connection lives as long as its data connections.
            let t = self.snap.timeouts[c.state as usize].max(1_000_000_000);
            c.set_expires(now, now + t);
            return;
        }
        self.remove_conn(i, true);
    }

    fn remove_conn(&mut self, i: u32, expired: bool) {
        let (parent, parent_gen, svc, dest, flags, gen_ok, alg) = {
            let c = self.flows.get(i);
            let k = self.flows.cold(i);
            (
                k.parent,
                k.parent_gen,
                c.svc as usize,
                c.dest as usize,
                c.flags,
                c.snap_gen == self.snap_gen,
                k.alg.is_some(),
            )
        };
        if gen_ok && flags & F_COUNTED != 0 {
            if let Some(counts) = self.snap.conn_counts.get(svc) {
                if flags & F_ACTIVE_COUNTED != 0 {
                    counts.dec_active(self.id, dest);
                } else {
                    counts.dec_inactive(self.id, dest);
                }
            }
        }
        if parent != NONE {
            if let Some(p) = self.flows.try_get(parent) {
                if p.gen == parent_gen && self.flows.cold(parent).children > 0 {
                    self.flows.cold_mut(parent).children -= 1;
                }
            }
        }
        if alg {
            // Its expectations and TLS pin die with it.
            let gen = self.flows.get(i).gen;
            self.expect.remove_session(i, gen);
        }
        let c = self.flows.get(i);
        let (state, fwd, la, proto, lport) = (c.state, c.fwd, self.flows.laddr_of(c), c.proto, c.lport);
        if state == crate::flow::tcpstate::TcpState::SynRecv {
            self.half_open = self.half_open.saturating_sub(1);
        }
        if self.sync_on && flags & F_SYNCED == 0 {
            let (client, cport, (vip, vport)) = (c.client, c.cport, self.flows.vip_of(c));
            let lport = (fwd == Forward::Fnat).then_some(lport);
            self.push_sync(SyncEntry::Delete { proto, client, cport, vip, vport, lport });
        }
        if fwd == Forward::Fnat {
            self.lports.release(la, proto, lport);
        }
        self.flows.remove(i);
        if flags & F_SYNCED == 0 {
            bump(&self.counters.flows_active, u64::MAX); // -1 (backup state was never counted)
        }
        if expired {
            bump(&self.counters.flows_expired, 1);
        }
    }

    #[inline]
    fn drop_pkt(&self, r: DropReason) {
        self.counters.count_drop(r);
    }

    /// Classify and forward one packet received on interface `iface`.
    pub fn process(&mut self, iface: usize, pkt: Q::Buf, handed: bool) {
        let r = parse::parse(pkt.data());
        self.process_parsed(iface, pkt, handed, &r, 0, NONE, false);
        self.flush_svc_counters();
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

    /// [`Worker::process`] with the parse result, the flow hash (0: not
    /// computed) and the index word found earlier in the burst (`NONE`:
    /// none) from the burst's first passes; `confirmed`: that word is known to be the
    /// packet's connection (the express lane compared the key).
    #[inline(always)]
    fn process_parsed(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        handed: bool,
        parsed: &Result<Parsed, parse::ParseError>,
        mut hash: u64,
        hint: u32,
        confirmed: bool,
    ) {
        // Fast path: an established TCP/UDP connection of this worker's
        // table. Only the owner of a connection ever creates it, so a hit
        // also settles ownership (no VIP/local classification, no handoff
        // check). Everything else (misses, expired entries, ARP/ND, ICMP)
        // takes the classification path below, as before.
        // The burst's lookup pass missed and nothing with this hash was inserted since: a
        // known miss (a flood of unknown flows, or a burst of SYNs each creating its
        // connection, skips a second, cache-missing probe).
        let mut known_miss = hint == NONE && hash != 0 && self.flows.still_missing(hash, self.hint_ver);
        if let Ok(p) = parsed {
            if p.proto == PROTO_TCP || p.proto == PROTO_UDP {
                // The hint from the burst's second pass is the first index word whose tag
                // matches (its connection's line prefetched, the key not yet compared): the
                // key is confirmed here, now that the line has arrived. A failed candidate
                // is looked up in full, and so is a miss once the table changed (an earlier
                // packet of the burst may have created the connection).
                // `confirmed`: the express lane compared the key already.
                let key = flow_key(p);
                let found = if confirmed || (hint != NONE && self.flows.word_matches(hint, &key)) {
                    Some(hint)
                } else if known_miss {
                    // No tag on the probe sequence and no key of this hash inserted since.
                    None
                } else {
                    if hash == 0 {
                        hash = self.flows.hash(&key);
                    }
                    let found = self.flows.lookup_word(&key, hash);
                    // A miss now is as good as the lookup pass's (nothing changes the table
                    // before `process_slow` looks again).
                    known_miss = found.is_none();
                    found
                };
                if let Some(v) = found {
                    match self.forward_established(iface, v, &mut pkt, p) {
                        // The common end: straight onto its transmit queue (`finish` minus
                        // the cases that cannot be; the SYN proxy's release only follows
                        // its own connections' packets, which take `forward_general`).
                        Some(Next::Tx(t)) if self.proxy_release.is_none() => {
                            match self.tx.get_mut(t) {
                                Some(q) => q.push(pkt),
                                None => self.finish(pkt, Next::Tx(t)),
                            }
                            return;
                        }
                        Some(next) => {
                            self.finish(pkt, next);
                            return;
                        }
                        None => {}
                    }
                }
            }
        }
        self.process_slow(iface, pkt, handed, parsed, hash, known_miss)
    }

    /// Everything but an established connection's packet: classification
    /// (VIP, local address, ARP/ND, ICMP), handoff to the owner, new
    /// connections, expired entries.
    #[inline(never)]
    fn process_slow(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        handed: bool,
        parsed: &Result<Parsed, parse::ParseError>,
        hash: u64,
        known_miss: bool,
    ) {
        let p = match parsed {
            Ok(p) => p,
            Err(parse::ParseError::Fragment) => return self.fragment(iface, pkt, handed),
            // Another protocol (LLDP, ...): the kernel's, if it has an exception path.
            Err(parse::ParseError::Unsupported) => return self.punt(iface, pkt, DropReason::Unsupported),
            Err(e) => {
                self.drop_pkt(match *e {
                    parse::ParseError::Malformed => DropReason::Malformed,
                    parse::ParseError::Unsupported => DropReason::Unsupported,
                    parse::ParseError::Fragment => DropReason::Fragment,
                });
                return;
            }
        };
        // Frames for other hosts (flooded by a switch) are not ours.
        let dmac = &pkt.data()[0..6];
        let ours = dmac[0] & 1 == 1 || self.snap.ifaces.get(iface).is_some_and(|i| i.mac == dmac);
        if !ours {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        if p.arp {
            return self.handle_arp(iface, pkt, p);
        }
        if p.v6 && p.proto == PROTO_ICMPV6 && (p.icmp_type == 135 || p.icmp_type == 136) {
            return self.handle_nd(iface, pkt, p);
        }
        let info = match self.addr_memo {
            Some((a, info)) if a == p.dst => info,
            _ => {
                let info = self.snap.addr_info(p.dst);
                self.addr_memo = Some((p.dst, info));
                info
            }
        };
        let kind = info.kind;
        let dst_vip = kind & ADDR_VIP != 0;
        let is_icmp = p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6;
        let icmp_err = is_icmp && icmp_is_error(p.v6, p.icmp_type);
        let local = kind & ADDR_LOCAL != 0;
        if (local || dst_vip) && is_icmp && icmp_is_echo(p.v6, p.icmp_type) {
            return self.echo_reply(iface, pkt, p);
        }
        // Full NAT: a reply (or an ICMP error about our packet) to a local address.
        let laddr_range = if dst_vip {
            None
        } else if kind & ADDR_LADDR != 0 {
            Some(self.snap.port_range)
        } else if self.retired.is_empty() {
            None
        } else {
            self.laddr_range(p.dst)
        };
        let to_laddr = laddr_range.is_some() && (p.proto == PROTO_TCP || p.proto == PROTO_UDP || icmp_err);
        if local && !dst_vip && !to_laddr {
            // The engine's own address, not a service (BGP, BFD on it): the kernel's.
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        if icmp_err {
            return self.icmp_error_in(iface, pkt, p, dst_vip, to_laddr.then_some(laddr_range).flatten(), handed);
        }
        // The client this packet belongs to decides the owning worker.
        if !handed && self.workers > 1 {
            let owner = match laddr_range {
                // The local port names the worker that opened the connection.
                Some(range) if to_laddr => lport_owner(range, p.dport, self.workers),
                _ => owner_of(if dst_vip { p.src } else { p.dst }, self.workers),
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        if p.proto != PROTO_TCP && p.proto != PROTO_UDP {
            // OSPF, VRRP, router advertisements, echo to the kernel's address, ...
            if dst_vip {
                self.drop_pkt(DropReason::Unsupported);
                return;
            }
            return self.punt(iface, pkt, DropReason::Unsupported);
        }
        if known_miss
            && dst_vip
            && p.proto == PROTO_TCP
            && p.tcp_flags & TCP_SYN == 0
            && !self.cookie_recent()
            && self.snap.config.cluster.is_none()
        {
            // A stray segment to a VIP: no SYN, no connection (an ACK flood, or a connection
            // that expired or another balancer held). Without a cookie sent lately (the SYN
            // proxy's handshake end or a verifying reset) and without a cluster (whose peers'
            // connections are recreated, `cluster_recreate`), nothing below could take it:
            // dropped here as `new_inbound_svc` would, without its look-ups, so a flood of
            // them costs little more than a lookup.
            self.drop_pkt(DropReason::NoFlow);
            return;
        }
        let key = flow_key(p);
        let hash = if hash != 0 { hash } else { self.flows.hash(&key) };
        let found = if known_miss {
            // An insert of this key right after only looks for the first empty slot.
            self.flows.note_miss(&key, hash);
            None
        } else {
            self.flows.lookup_for_insert(&key, hash)
        };
        let next = match found {
            Some((idx, dir)) => {
                let c = self.flows.get(idx);
                if dst_vip && dir == Dir::In && self.reusable(idx, p) {
                    // IPVS conn_reuse_mode: a new SYN on the tuple of a closing connection starts
                    // a new one (new scheduling decision, new gateway session); the old state,
                    // its FTP expectations and pins go. Data connections are left alone, as
                    // IPVS leaves "controlled" connections.
                    if self.flows.cold(idx).alg.is_some() {
                        if let Some(sc) = self.svc_counters.get(c.svc as usize) {
                            bump(&sc.ftp.control_reused, 1);
                        }
                    }
                    bump(&self.counters.flows_reused, 1);
                    self.remove_conn(idx, false);
                    let next = self.new_inbound(&mut pkt, p);
                    return self.finish(pkt, next);
                }
                if c.expired(self.now) {
                    self.expire(idx, self.now);
                    if self.flows.try_get(idx).is_some_and(|c| c.live) {
                        self.forward(idx, dir, &mut pkt, p)
                    } else if dst_vip {
                        self.new_inbound(&mut pkt, p)
                    } else {
                        self.new_outbound(&mut pkt, p)
                    }
                } else {
                    self.forward(idx, dir, &mut pkt, p)
                }
            }
            None if dst_vip => {
                // A connection's first SYN: its service is looked up once for the SYN proxy and
                // the scheduler (other segments may not need it: looked up where they do).
                let syn = p.proto == PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                let svc = syn.then(|| self.snap.service_at(&info, p.proto, p.dport));
                // A SYN to a service without the SYN proxy: nothing for it to look at.
                let no_proxy = matches!(svc, Some(Some(si)) if self.snap.services.get(si)
                    .is_some_and(|s| s.syn_proxy == ferrovs_cfg::SynProxy::Off));
                match if no_proxy { None } else { self.syn_proxy(iface, &mut pkt, p, svc) } {
                    Some(next) => next,
                    None => self.new_inbound_svc(&mut pkt, p, svc),
                }
            }
            None => match self.new_outbound(&mut pkt, p) {
                // No connection, no expectation, not a service: the kernel's (its own
                // address, or a host it forwards for), if there is an exception path.
                Next::Drop(DropReason::NoFlow) if !to_laddr => return self.punt(iface, pkt, DropReason::NoFlow),
                next => next,
            },
        };
        self.finish(pkt, next);
    }

    /// An ICMP error that reached [`Worker::process_slow`] (to a VIP, or to a local address:
    /// `laddr` is then the local addresses' port range): the packet it quotes parsed, handed
    /// to the worker that owns the quoted connection, else [`Worker::icmp_error`]. Out of
    /// line, so the common TCP/UDP path carries no quoted packet.
    #[inline(never)]
    fn icmp_error_in(
        &mut self,
        iface: usize,
        pkt: Q::Buf,
        p: &Parsed,
        dst_vip: bool,
        laddr: Option<ferrovs_cfg::PortRange>,
        handed: bool,
    ) {
        let inner = match parse::parse_inner(pkt.data(), p) {
            Ok(i) => i,
            Err(_) => {
                self.drop_pkt(DropReason::Malformed);
                return;
            }
        };
        if !handed && self.workers > 1 {
            let owner = match laddr {
                // The quoted packet's local port names the worker that opened the connection.
                Some(range) => lport_owner(range, inner.sport, self.workers),
                // The client: the quoted packet went to it (to a VIP), else this error is for it.
                None => owner_of(if dst_vip { inner.dst } else { p.dst }, self.workers),
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                self.hand_off(owner, iface as u8, pkt);
                return;
            }
        }
        self.icmp_error(pkt, p, &inner, dst_vip)
    }

    /// A bare SYN from the client on connection `idx` that is closing (TIME_WAIT, CLOSE,
    /// CLOSE_WAIT, LAST_ACK) and is not an FTP data connection: the tuple is being reused.
    fn reusable(&self, idx: u32, p: &Parsed) -> bool {
        use crate::flow::tcpstate::TcpState as S;
        let c = self.flows.get(idx);
        p.proto == PROTO_TCP
            && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
            && c.flags & F_DATA == 0
            && matches!(c.state, S::TimeWait | S::Close | S::CloseWait | S::LastAck)
    }

    /// Pick a real server and create a connection for a first packet to a VIP.
    fn new_inbound(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        self.new_inbound_svc(pkt, p, None)
    }

    /// [`Worker::new_inbound`] with the service of (VIP, protocol, port) if the caller looked
    /// it up already (`Some`).
    fn new_inbound_svc(&mut self, pkt: &mut Q::Buf, p: &Parsed, svc: Option<Option<usize>>) -> Next {
        if p.proto == PROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
            return self.dr_active_data(pkt, p);
        }
        let snap = &self.snap;
        let owner = svc.unwrap_or_else(|| snap.service(p.dst, p.proto, p.dport));
        // 1. FTP expectations and session pins.
        let mut chosen: Option<(usize, usize, Addr, u16, u32, u32, bool)> = None; // svc, dest, rs, rport, parent, gen, data
        if p.proto == PROTO_TCP {
            // A port another service owns is that service's: DR passive expectations and TLS
            // pins (which name no port) never take it over; the FTP service's own ports (a
            // second control connection of a TLS client) follow the pin.
            let mut v = None;
            if !self.expect.is_empty() {
                v = self.take_expected(&ExpKey::Passive(p.src, p.dst, p.dport));
                if v.is_none() && owner.is_none() {
                    v = self.take_expected(&ExpKey::PassiveAny(p.src, p.dst));
                }
            }
            if let Some(v) = v {
                chosen = Some((
                    v.svc as usize,
                    v.dest as usize,
                    v.rs,
                    v.rport.unwrap_or(p.dport),
                    v.parent,
                    v.parent_gen,
                    true,
                ));
            } else if let Some(pin) =
                (self.expect.pins() > 0).then(|| self.expect.get_pin(p.src, p.dst).copied()).flatten()
            {
                let alive = self.flows.try_get(pin.parent).is_some_and(|c| c.gen == pin.parent_gen);
                if alive && owner.is_none() {
                    chosen =
                        Some((pin.svc as usize, pin.dest as usize, pin.rs, p.dport, pin.parent, pin.parent_gen, true));
                } else if alive && owner == Some(pin.svc as usize) {
                    // Another control connection of the pinned client: same real server, its
                    // own gateway session, no data-connection link.
                    let d = &self.snap.services[pin.svc as usize].dests[pin.dest as usize];
                    let rport = d.port.unwrap_or(p.dport);
                    chosen = Some((pin.svc as usize, pin.dest as usize, pin.rs, rport, NONE, 0, false));
                }
            }
        }
        // 2. The service and its scheduler.
        if chosen.is_none() {
            let owned = owner;
            // In a cluster, an FTP data connection this node holds no expectation for (its
            // control connection went through another node) follows the Maglev choice.
            let Some(si) = owned.or_else(|| self.cluster_service(p)) else {
                return Next::Drop(DropReason::NoService);
            };
            let Some(di) = self.schedule(si, p) else {
                return Next::Drop(DropReason::NoRealServer);
            };
            let d = &self.snap.services[si].dests[di];
            let rport = if owned.is_some() { d.port.unwrap_or(p.dport) } else { p.dport };
            chosen = Some((si, di, d.addr, rport, NONE, 0, owned.is_none()));
        }
        let (si, di, rs, rport, parent, parent_gen, data) = chosen.expect("set above");
        // An FTP data connection of a full-NAT session leaves from its control connection's
        // local address (vsftpd refuses data connections from another address).
        let local = match self.flows.try_get(parent) {
            Some(c) if data && c.gen == parent_gen && c.fwd == Forward::Fnat => Local::Prefer(self.flows.laddr_of(c)),
            _ => Local::Any,
        };
        let idx = match self.create_conn(si, di, p.src, p.sport, p.dst, p.dport, rs, rport, local) {
            Ok(i) => i,
            Err(r) => return Next::Drop(r),
        };
        if data {
            self.link_parent(idx, parent, parent_gen);
        }
        // An FTP control connection gets its gateway.
        let svc = &self.snap.services[si];
        if !data && p.proto == PROTO_TCP && svc.is_ftp_control(p.dport) {
            self.start_ftp_session(si, di, idx, None);
            bump(&self.svc_counters[si].ftp.control_sessions, 1);
        }
        self.forward(idx, Dir::In, pkt, p)
    }

    /// DR active FTP: the real server opened the data connection straight
    /// to the client; the client's first packet we see (its SYN-ACK to the
    /// VIP) must reach that real server.
    fn dr_active_data(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // Only the client's SYN-ACK opens it (a stray ACK does not consume the pinhole).
        if p.tcp_flags & TCP_SYN == 0 {
            return self.cluster_recreate(pkt, p);
        }
        let Some(v) = self.take_expected(&ExpKey::DrActive(p.src, p.sport, p.dst)) else {
            return self.cluster_recreate(pkt, p);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            p.src,
            p.sport,
            p.dst,
            p.dport,
            v.rs,
            p.dport,
            Local::Any,
        ) {
            Ok(i) => i,
            Err(r) => return Next::Drop(r),
        };
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::In, pkt, p)
    }

    /// Cluster: the service a client packet to a VIP belongs to, for placement without local
    /// state. The service owning the port; else, for a DR/tunnel FTP service of the VIP, an FTP
    /// data connection (a port >= 1024, or the active-mode port 20, as the service's data
    /// ports allow): it goes to the real server the cluster-wide Maglev choice gives the client,
    /// i.e. its control connection's, on every node, whether or not this node saw the PASV/PORT
    /// (as an IPVS persistent port-0 service places FTP data in DR). Not for NAT or full NAT:
    /// a full-NAT data connection must leave from its control connection's local address,
    /// which only the synced expectation names; without it the SYN is dropped (`no_service`)
    /// and its retransmission finds the expectation. `None` outside a cluster.
    fn cluster_service(&self, p: &Parsed) -> Option<usize> {
        self.snap.config.cluster.as_ref()?;
        if let Some(si) = self.snap.service(p.dst, p.proto, p.dport) {
            return Some(si);
        }
        if p.proto != PROTO_TCP {
            return None;
        }
        self.snap.services.iter().position(|s| {
            s.vip == p.dst
                && s.proto == PROTO_TCP
                && matches!(s.forward, Forward::Dr | Forward::Tunnel)
                && s.ftp.as_ref().is_some_and(|f| p.dport == 20 || p.dport >= 1024 || f.allow_low_data_ports)
        })
    }

    /// Cluster, DR/tunnel: a packet of a connection this node does not know (not a bare SYN:
    /// ECMP rehashed an established connection here after a node change) recreates it by the
    /// choice every node makes (Maglev over the client address, as Katran does); the TCP state
    /// follows from the packet (an ACK gives ESTABLISHED). NAT connections are not recreated:
    /// their replies carry rewritten addresses only the owning node (or a synced peer) knows.
    #[inline]
    fn cluster_recreate(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if self.snap.config.cluster.is_none() {
            return Next::Drop(DropReason::NoFlow);
        }
        self.cluster_recreate_slow(pkt, p)
    }

    #[inline(never)]
    fn cluster_recreate_slow(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let Some(si) = self.cluster_service(p) else { return Next::Drop(DropReason::NoFlow) };
        let Some(di) = self.schedule(si, p) else { return Next::Drop(DropReason::NoRealServer) };
        let d = &self.snap.services[si].dests[di];
        if matches!(d.forward, Forward::Nat | Forward::Fnat) {
            return Next::Drop(DropReason::NoFlow);
        }
        let owned = self.snap.service(p.dst, p.proto, p.dport) == Some(si);
        let (rs, rport) = (d.addr, if owned { d.port.unwrap_or(p.dport) } else { p.dport });
        let idx = match self.create_conn(si, di, p.src, p.sport, p.dst, p.dport, rs, rport, Local::Any) {
            Ok(i) => i,
            Err(r) => return Next::Drop(r),
        };
        bump(&self.counters.flows_recreated, 1);
        self.forward(idx, Dir::In, pkt, p)
    }

    /// A packet from a real server with no connection: an active FTP data
    /// connection the gateway expects, or a stray.
    fn new_outbound(&mut self, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if p.proto != PROTO_TCP || p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0 {
            return Next::Drop(DropReason::NoFlow);
        }
        let Some(v) = self.take_expected(&ExpKey::Active(p.src, p.dst, p.dport)) else {
            return Next::Drop(DropReason::NoFlow);
        };
        if v.cport != 0 {
            return self.fnat_active_data(pkt, p, v);
        }
        // The client sees the data connection come from VIP:20, whatever port the real server
        // used (20 with vsftpd; pyftpdlib when not root and proftpd pick another).
        let Some(vport) = self.active_data_vport(v.vip, p.dst, p.dport, p) else {
            return Next::Drop(DropReason::TupleInUse);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            p.dst,
            p.dport,
            v.vip,
            vport,
            p.src,
            p.sport,
            Local::Any,
        ) {
            Ok(i) => i,
            Err(r) => return Next::Drop(r),
        };
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::Out, pkt, p)
    }

    /// Full NAT active FTP: the real server connects from RS:port to the local port reserved
    /// for the client's PORT/EPRT; the connection becomes VIP:20 -> client:port (the client's
    /// answers to VIP:20 go back to RS:port from that local port).
    fn fnat_active_data(&mut self, pkt: &mut Q::Buf, p: &Parsed, v: ExpVal) -> Next {
        let Some(k) = self.reserved.iter().position(|&(a, port, _)| a == p.dst && port == p.dport) else {
            return Next::Drop(DropReason::NoFlow);
        };
        let local = Local::Fixed(p.dst, p.dport);
        let Some(vport) = self.active_data_vport(v.vip, v.client, v.cport, p) else {
            return Next::Drop(DropReason::TupleInUse);
        };
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            v.client,
            v.cport,
            v.vip,
            vport,
            p.src,
            p.sport,
            local,
        ) {
            Ok(i) => i,
            Err(r) => return Next::Drop(r),
        };
        // The connection owns the port now (released when it ends).
        self.reserved.swap_remove(k);
        self.link_parent(idx, v.parent, v.parent_gen);
        self.forward(idx, Dir::Out, pkt, p)
    }

    /// The VIP port an active FTP data connection from the real server (`p`, a SYN) to
    /// `client:cport` comes from: 20, as IPVS does. Clients pick their PORT/EPRT ports from the
    /// ephemeral range and reuse them, while the balancer still holds the previous data
    /// connection to that port in TIME_WAIT (the server closed it; the client's side is long
    /// gone): like nf_conntrack and IPVS's conn_reuse_mode, a connection that is closing (or
    /// expired) gives its tuple up to the new SYN. One still open keeps it, and the new
    /// connection comes from the real server's own port instead, as nf_nat moves a clashing
    /// source port (FTP clients accept a data connection from any port). `None`: both taken.
    fn active_data_vport(&mut self, vip: Addr, client: Addr, cport: u16, p: &Parsed) -> Option<u16> {
        // The reply key (real server -> client, or -> the local address in full NAT) is the
        // SYN's own 5-tuple: a closing connection on it goes the same way.
        let out = flow_key(p);
        if !self.free_closing(&out) {
            return None;
        }
        [20, p.sport].into_iter().find(|&vport| {
            let key = FlowKey { src: client, dst: vip, sport: cport, dport: vport, proto: PROTO_TCP };
            self.free_closing(&key)
        })
    }

    /// Is `key` free for a new connection? A connection holding it that is closing (a FIN
    /// seen: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) or expired is removed first
    /// (counted in `flows_reused`, or `flows_expired`); an open one keeps it (`false`).
    fn free_closing(&mut self, key: &FlowKey) -> bool {
        use crate::flow::tcpstate::TcpState as S;
        let Some((idx, _)) = self.flows.lookup(key) else { return true };
        let c = self.flows.get(idx);
        if c.expired(self.now) {
            self.remove_conn(idx, true);
            return true;
        }
        if !matches!(c.state, S::FinWait | S::TimeWait | S::Close | S::CloseWait | S::LastAck) {
            return false;
        }
        bump(&self.counters.flows_reused, 1);
        self.remove_conn(idx, false);
        true
    }

    /// The oldest live expectation with `key`, consumed (pinholes are single use). Dead or
    /// expired ones met on the way are dropped and counted.
    fn take_expected(&mut self, key: &ExpKey) -> Option<ExpVal> {
        while let Some(v) = self.expect.take(key) {
            let parent_ok = self.flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen);
            let c = self.svc_counters.get(v.svc as usize);
            if parent_ok && v.expires > self.now {
                if let Some(c) = c {
                    bump(&c.ftp.expectations_used, 1);
                }
                return Some(v);
            }
            if let Some(c) = c {
                bump(&c.ftp.expectations_expired, 1);
            }
        }
        None
    }

    fn link_parent(&mut self, idx: u32, parent: u32, parent_gen: u32) {
        if parent == NONE {
            return;
        }
        if self.flows.try_get(parent).is_some_and(|c| c.gen == parent_gen) {
            self.flows.cold_mut(parent).children += 1;
            let k = self.flows.cold_mut(idx);
            k.parent = parent;
            k.parent_gen = parent_gen;
            self.flows.get_mut(idx).flags |= F_DATA;
        }
    }

    /// Scheduler (with persistence) for service `si`.
    fn schedule(&mut self, si: usize, p: &Parsed) -> Option<usize> {
        let snap = &self.snap;
        let svc = &snap.services[si];
        if svc.dests.is_empty() {
            return None;
        }
        let st = &mut self.svcs[si];
        let dests = &st.dests;
        if let Some(pt) = st.persist.as_mut() {
            let client_ip = addr_to_ip(p.src);
            if let Some(d) = pt.lookup(client_ip, self.now, dests) {
                pt.touch(client_ip, self.now);
                return Some(d);
            }
        }
        // (Round robin, weights and counts do not look at the flow: no key built for them.)
        let key = if st.sched.uses_key() {
            sched::FlowKey {
                client: addr_to_ip(p.src),
                client_port: p.sport,
                vip: addr_to_ip(p.dst),
                vport: p.dport,
                proto: p.proto,
            }
        } else {
            sched::FlowKey::UNUSED
        };
        let d = st.sched.pick(&key, dests, &snap.conn_counts[si])?;
        if let Some(pt) = st.persist.as_mut() {
            let client_ip = addr_to_ip(p.src);
            pt.insert(client_ip, d, self.now, dests);
            if self.sync_on {
                let dd = &svc.dests[d];
                let vport = svc.ports.first().map_or(0, |r| r.lo);
                let timeout_s = svc.persistence.map_or(0, |(t, _)| (t / 1_000_000_000) as u32);
                let e = SyncEntry::Template(crate::cluster::sync::TemplateSync {
                    proto: p.proto,
                    client: p.src,
                    vip: p.dst,
                    vport,
                    rs: dd.addr,
                    rport: dd.port.unwrap_or(0),
                    timeout_s,
                });
                self.push_sync(e);
            }
        }
        Some(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_conn(
        &mut self,
        si: usize,
        di: usize,
        client: Addr,
        cport: u16,
        vip: Addr,
        vport: u16,
        rs: Addr,
        rport: u16,
        local: Local,
    ) -> Result<u32, DropReason> {
        let snap = &self.snap;
        let svc = &snap.services[si];
        let d = &svc.dests[di];
        let fwd = d.forward;
        let proto = svc.proto;
        let mut c = flow::new_conn(proto, fwd, client, cport, vip, vport, rs, rport);
        c.svc = si as u16;
        c.dest = di as u16;
        c.snap_gen = self.snap_gen;
        let memo = self.svcs.get(si).and_then(|st| st.ids.get(di)).copied().unwrap_or(DestMemo::EMPTY);
        c.hint = memo.ids;
        // Routes towards the real server (the snapshot's, for a configured one) and back to the
        // client.
        let Some((if_in, nh_in)) = (if rs == d.addr { d.route } else { snap.route(rs) }) else {
            return Err(DropReason::NoRoute);
        };
        c.if_in = if_in as u8;
        c.nh_in = nh_in;
        if fwd.two_way() {
            let Some((if_out, nh_out)) = snap.route(client) else { return Err(DropReason::NoRoute) };
            c.if_out = if_out as u8;
            c.nh_out = nh_out;
        }
        // Checksum deltas: address words, port word, and (NAT) TTL.
        let v4 = addr_is_v4(client);
        let mut laddr = 0;
        let sums_key = (vip, rs, vport, rport, v4);
        if fwd != Forward::Fnat && memo.valid && memo.key == sums_key {
            // The same rewrite as the last connection to this real server: its deltas.
            (c.l3_in, c.l3_out, c.l4_in) = (memo.l3_in as u32, memo.l3_out as u32, memo.l4_in as u32);
        } else {
            // Summed unfolded, folded once per field (the same ones-complement sums).
            let mut a_in = csum::delta_addr_unfolded(vip, rs, v4);
            let mut a_out = csum::delta_addr_unfolded(rs, vip, v4);
            let mut p_in = csum::delta16(vport, rport);
            if fwd == Forward::Fnat {
                // The source side too: client:cport <-> local address:port.
                let picked = match local {
                    Local::Fixed(a, port) => Some((a, port)),
                    // A cluster peer's local address (a data connection of a control connection
                    // the peer opened): from this node's slot of its ports.
                    Local::Prefer(a) if !svc.local.contains(&a) => {
                        let slot = self.snap.config.cluster.as_ref().map_or(0, |c| c.node_id);
                        self.lports.take_foreign(a, proto, slot).map(|port| (a, port))
                    }
                    Local::Prefer(a) => self.lports.take_on(a, proto).map(|port| (a, port)),
                    Local::Any => None,
                };
                let Some((la, lport)) = picked.or_else(|| self.lports.alloc(&svc.local, proto)) else {
                    return Err(DropReason::FnatPortsExhausted);
                };
                laddr = la;
                c.laddr = la;
                c.lport = lport;
                a_in += csum::delta_addr_unfolded(client, la, v4);
                a_out += csum::delta_addr_unfolded(la, client, v4);
                p_in += csum::delta16(cport, lport);
            }
            if fwd == Forward::Fnat && v4 != addr_is_v4(rs) {
                // IPv6 <-> IPv4: every packet is translated (`nat64`), its checksums adjusted
                // there; the precomputed deltas do not apply.
                c.flags |= F_XLAT;
                (a_in, a_out, p_in) = (0, 0, 0);
            }
            let ttl = if v4 { TTL_DELTA } else { 0 };
            c.l3_in = if v4 { csum::fold(a_in + ttl) as u32 } else { 0 };
            c.l3_out = if v4 { csum::fold(a_out + ttl) as u32 } else { 0 };
            // The reply direction's L4 delta is this one's complement (`Conn::l4_out`).
            c.l4_in = csum::fold(a_in + p_in) as u32;
        }
        c.expires = self.now + snap.timeouts[c.state as usize];
        // Counted below, once it is in.
        c.flags |= F_COUNTED;
        let lport = c.lport;
        let Some((idx, e)) = self.flows.insert_ref(&c, self.now) else {
            if fwd == Forward::Fnat && !matches!(local, Local::Fixed(..)) {
                self.lports.release(laddr, proto, lport);
            }
            return Err(DropReason::TableFull);
        };
        let ids = [e.vipi, e.rsi, e.hop_in, e.hop_out];
        if let Some(m) = self.svcs.get_mut(si).and_then(|st| st.ids.get_mut(di)) {
            // Written only when it changes (the common connection leaves it as it was).
            if m.ids != ids {
                m.ids = ids;
            }
            if fwd != Forward::Fnat && !(m.valid && m.key == sums_key) {
                m.key = sums_key;
                (m.l3_in, m.l3_out, m.l4_in) = (c.l3_in as u16, c.l3_out as u16, c.l4_in as u16);
                m.valid = true;
            }
        }
        let pp = match d.proxy_v2 {
            Some(v2) if proto == PROTO_TCP && fwd.two_way() => {
                Some(crate::pipeline::proxyproto::for_conn(v2, client, cport, vip, vport))
            }
            _ => None,
        };
        if let Some(pp) = pp {
            self.flows.cold_mut(idx).pp = Some(Box::new(pp));
            self.flows.get_mut(idx).flags |= F_PPROTO;
        }
        let counts = &snap.conn_counts[si];
        counts.inc_inactive(self.id, di);
        bump(&self.counters.flows_created, 1);
        bump(&self.counters.flows_active, 1);
        let sc = &self.svc_counters[si];
        bump(&sc.conns, 1);
        bump(&sc.dests[di].conns, 1);
        Ok(idx)
    }

    /// The established fast path: a packet that arrived on `iface` and the index word `v`
    /// the burst's lookup found for it. `None`: not the fast path's (not addressed to us, a
    /// bare SYN on a known tuple, an expired entry), the caller classifies it. A connection
    /// with anything special (FTP gateway, SYN proxy, PROXY protocol, translation, backup
    /// state, cluster sync, tunnel) takes the general [`Worker::forward`]; the common NAT,
    /// full NAT and DR packet is handled here with one look at its connection.
    #[inline(always)]
    fn forward_established(&mut self, iface: usize, v: u32, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        let idx = v >> 1;
        let dir = if v & 1 == 0 { Dir::In } else { Dir::Out };
        // Parsed frames hold at least an Ethernet header. The destination MAC as a 4- and a
        // 2-byte word: ours if multicast/broadcast or the interface's.
        let dst: &[u8; 6] = pkt.data().get(..6)?.try_into().ok()?;
        let ours = dst[0] & 1 == 1
            || self.if_macs.get(iface).is_some_and(|m| {
                u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) == u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]])
                    && u16::from_ne_bytes([m[4], m[5]]) == u16::from_ne_bytes([dst[4], dst[5]])
            });
        // A bare SYN on a known tuple may start a new connection (port reuse): the slow path decides.
        let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let c = self.flows.get(idx);
        if !ours || syn || c.expired(self.now) {
            return None;
        }
        if c.flags & (F_SYNCED | F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) != 0
            || self.sync_on
            || c.fwd == Forward::Tunnel
        {
            return Some(self.forward(idx, dir, pkt, p));
        }
        // The next hop of this direction, read once: its interface gives the egress MTU
        // (see `forward`; no tunnel overhead here) and, below, the frame's MACs.
        let h = if dir == Dir::In { c.hop_in } else { c.hop_out };
        let hop = self.flows.hop_mac(h);
        let mtu = self.caps.get(hop.iface as usize).map_or(usize::MAX, |c| c.mtu as usize);
        if p.end - p.l3 > mtu {
            return Some(self.too_big(dir, pkt, p, mtu));
        }
        let la = if c.fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
        // The far end this direction rewrites to: the real server (in) or the VIP (out).
        let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
        let t = TrackCtx {
            now: self.now,
            snap_gen: self.snap_gen,
            id: self.id,
            snap: &self.snap,
            timeouts: &self.timeouts,
            half_open: &mut self.half_open,
            acc: &mut self.acc,
            acc_base: &self.acc_base,
            acc_dirty: &mut self.acc_dirty,
        };
        let c = self.flows.get_mut(idx);
        let wrapped = track(c, dir, p, pkt.len() as u64, t);
        let d = pkt.data_mut();
        let r = if c.fwd == Forward::Dr { Ok(()) } else { rewrite_conn(c, la, far, dir, d, p) };
        if wrapped {
            self.flows.carry_pkt(idx, dir == Dir::In);
        }
        if let Err(r) = r {
            return Some(Next::Drop(r));
        }
        Some(self.l2_write_hop(h, hop, d))
    }

    /// Forward a packet of connection `idx` travelling in `dir`.
    #[inline(always)]
    fn forward(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // Egress MTU (IPVS `ensure_mtu_is_adequate`), before the packet changes any state: one
        // compare on the fast path; a packet too big becomes an ICMP error to its sender.
        let c = self.flows.get(idx);
        // FTP control connections are exempt: the gateway cuts every segment it writes
        // to the egress MTU (`ftp_replace`), and their handshake MSS is clamped to it.
        if c.flags & F_ALG == 0 {
            let (egress, over) = match (dir, c.fwd) {
                (Dir::Out, _) => (self.flows.if_out(c), 0),
                (Dir::In, Forward::Tunnel) => {
                    (self.flows.if_in(c), if addr_is_v4(self.flows.rs_of(c).0) { 20 } else { 40 })
                }
                (Dir::In, _) => (self.flows.if_in(c), 0),
            };
            let mtu = self.caps.get(egress as usize).map_or(usize::MAX, |c| c.mtu as usize);
            if p.end - p.l3 + over > mtu {
                return self.too_big(dir, pkt, p, mtu.saturating_sub(over));
            }
        }
        let len = pkt.len() as u64;
        if self.flows.get(idx).flags & F_SYNCED != 0 {
            self.adopt(idx);
        }
        // State, timeout, counters.
        let t = TrackCtx {
            now: self.now,
            snap_gen: self.snap_gen,
            id: self.id,
            snap: &self.snap,
            timeouts: &self.timeouts,
            half_open: &mut self.half_open,
            acc: &mut self.acc,
            acc_base: &self.acc_base,
            acc_dirty: &mut self.acc_dirty,
        };
        let c = self.flows.get_mut(idx);
        let state_before = c.state;
        let wrapped = track(c, dir, p, len, t);
        if wrapped {
            self.flows.carry_pkt(idx, dir == Dir::In);
        }
        // Cluster: a new connection or a state change goes to the peers.
        if self.sync_on && (self.flows.get(idx).state != state_before || self.flows.cold(idx).synced_at == 0) {
            self.sync_conn(idx);
        }
        // FTP gateway on control connections (may resize the payload).
        let c = self.flows.get(idx);
        if c.flags & (F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) == 0 && c.fwd.two_way() {
            // The common case: NAT or full NAT without the gateway (deltas precomputed).
            return self.rewrite_plain(idx, dir, pkt, p);
        }
        if c.flags & F_SYNPROXY != 0 {
            if let Some(next) = self.proxy_segment(idx, dir, pkt, p) {
                return next;
            }
        }
        if self.flows.get(idx).flags & F_PPROTO != 0 {
            return match self.pp_segment(idx, dir, pkt, p) {
                Ok(Some(p2)) => self.forward_rewrite(idx, dir, pkt, &p2),
                Ok(None) => self.forward_rewrite(idx, dir, pkt, p),
                Err(next) => next,
            };
        }
        let c = self.flows.get(idx);
        let (flags, fwd) = (c.flags, c.fwd);
        let ftp_p;
        let p = if flags & F_ALG != 0 {
            // Cluster, full NAT: the session's handling node may be another one.
            if fwd == Forward::Fnat && self.snap.config.cluster.is_some() {
                if let Some(n) = self.alg_redirect(idx, pkt) {
                    return n;
                }
            }
            match self.ftp_segment(idx, dir, pkt, p) {
                Err(n) => {
                    if matches!(n, Next::Drop(DropReason::AlgHold)) && p.tcp_flags & parse::TCP_FIN != 0 {
                        // Held: its FIN did not go out either.
                        self.redo_tcp_state(idx, dir, state_before, None);
                    }
                    return n;
                }
                Ok(None) if flags & (F_SYNPROXY | F_XLAT) == 0 && fwd.two_way() => {
                    // The gateway's common end (a segment it only translated: every tiny one
                    // of a flood): NAT or full NAT as on the fast path, in line.
                    return self.rewrite_plain(idx, dir, pkt, p);
                }
                Ok(None) => p,
                Ok(Some(replaced)) => {
                    if p.tcp_flags & !replaced.tcp_flags & parse::TCP_FIN != 0 {
                        // The gateway kept the FIN back: the state must not have seen it.
                        self.redo_tcp_state(idx, dir, state_before, Some(p.tcp_flags & !parse::TCP_FIN));
                    }
                    ftp_p = replaced;
                    &ftp_p
                }
            }
        } else {
            p
        };
        self.forward_rewrite(idx, dir, pkt, p)
    }

    /// The forwarding step after the gateway: NAT rewrite, DR MACs or IPIP
    /// encapsulation of one (possibly gateway-built) segment of `idx`.
    fn forward_rewrite(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        if dir == Dir::Out && self.flows.get(idx).flags & F_SYNPROXY != 0 {
            // SYN proxy: the server's sequence numbers into the client's space (our cookie).
            if let Some(delta) = self.flows.cold(idx).proxy.as_deref().map(|x| x.delta) {
                let d = pkt.data_mut();
                let c = synproxy::shift_field(d, p.l4 + 4, delta);
                csum::apply_at(d, p.l4 + 16, c);
            }
        }
        let c = self.flows.get(idx);
        let fwd = c.fwd;
        match (fwd, dir) {
            (Forward::Fnat, _) if c.flags & F_XLAT != 0 => self.xlat(idx, dir, pkt, p),
            (Forward::Nat | Forward::Fnat, _) => {
                let la = if fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
                let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
                let d = pkt.data_mut();
                if let Err(r) = rewrite_conn(c, la, far, dir, d, p) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, dir == Dir::In, d)
            }
            (Forward::Dr, _) => self.l2_out(idx, true, pkt),
            (Forward::Tunnel, _) => {
                let iface = self.flows.if_in(c) as usize;
                let rs = self.flows.rs_of(c).0;
                let Some(src) = self.snap.ifaces[iface].source_for(rs) else {
                    return Next::Drop(DropReason::NoRoute);
                };
                if !encap_ipip(pkt, p, src, rs, self.caps[iface].mtu) {
                    return Next::Drop(DropReason::TooBig);
                }
                self.l2_out(idx, true, pkt)
            }
        }
    }

    /// Full NAT across families: translate the packet to the other side's family (see
    /// [`crate::pipeline::nat64`]). One that outgrows the egress MTU once translated (IPv4 -> IPv6 adds
    /// 20 bytes) goes back to its sender as "fragmentation needed" / "packet too big" with
    /// the MTU its own family may use.
    fn xlat(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let c = self.flows.get(idx);
        let (src, sport, dst, dport, egress) = match dir {
            Dir::In => {
                (self.flows.laddr_of(c), c.lport, self.flows.rs_of(c).0, self.flows.rs_of(c).1, self.flows.if_in(c))
            }
            Dir::Out => (self.flows.vip_of(c).0, self.flows.vip_of(c).1, c.client, c.cport, self.flows.if_out(c)),
        };
        let mtu = self.caps.get(egress as usize).map_or(1500, |c| c.mtu as usize);
        let grow = crate::pipeline::nat64::translated_len(p).saturating_sub(p.end - p.l3);
        if crate::pipeline::nat64::translated_len(p) > mtu {
            return self.too_big(dir, pkt, p, mtu.saturating_sub(grow));
        }
        if let Err(r) = crate::pipeline::nat64::translate(pkt, p, src, sport, dst, dport, mtu) {
            return Next::Drop(r);
        }
        self.l2_write(idx, dir == Dir::In, pkt.data_mut())
    }

    /// Set MACs towards the real server (`to_rs`) or the client; holds the
    /// packet while the next hop is resolved.
    #[inline(always)]
    fn l2_out(&mut self, idx: u32, to_rs: bool, pkt: &mut Q::Buf) -> Next {
        self.l2_write(idx, to_rs, pkt.data_mut())
    }

    /// NAT or full NAT of a packet of connection `idx` with the precomputed deltas (no
    /// gateway, proxy or translation left to do), then its Ethernet header.
    #[inline(always)]
    fn rewrite_plain(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        let c = self.flows.get(idx);
        let la = if c.fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
        let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
        let d = pkt.data_mut();
        if let Err(r) = rewrite_conn(c, la, far, dir, d, p) {
            return Next::Drop(r);
        }
        self.l2_write(idx, dir == Dir::In, d)
    }

    /// [`Worker::l2_out`] on the frame's bytes.
    #[inline(always)]
    fn l2_write(&mut self, idx: u32, to_rs: bool, frame: &mut [u8]) -> Next {
        let c = self.flows.get(idx);
        let h = if to_rs { c.hop_in } else { c.hop_out };
        let hop = self.flows.hop_mac(h);
        self.l2_write_hop(h, hop, frame)
    }

    /// [`Worker::l2_write`] with the next hop `h` and what the table holds of it (`hop`)
    /// already read.
    #[inline(always)]
    fn l2_write_hop(&mut self, h: u16, mut hop: flow::HopMac, frame: &mut [u8]) -> Next {
        let gen = self.neigh.gen;
        // The MAC is cached per next hop (shared by every connection through it), valid for
        // one neighbour generation and only once known: learning a new neighbour does not
        // change `gen` (see `NeighCache::learn`), so a hop still missing its MAC looks it up
        // again on its next packet.
        if hop.mac_gen != gen {
            let nh = self.flows.hop_nh(h);
            hop.mac = if h == flow::NO_HOP { None } else { self.neigh.resolve(nh) }.unwrap_or([0; 6]);
            if hop.mac != [0; 6] {
                self.flows.set_hop_mac(h, hop.mac, gen);
            }
        }
        let (iface, mac) = (hop.iface as usize, hop.mac);
        // Parsed frames hold at least an Ethernet header.
        let (Some(src_mac), Some(Ok::<&mut [u8; 12], _>(eth))) =
            (self.if_macs.get(iface), frame.get_mut(..12).map(|s| s.try_into()))
        else {
            return Next::Drop(DropReason::Malformed);
        };
        eth[6..12].copy_from_slice(src_mac);
        if mac != [0; 6] {
            eth[0..6].copy_from_slice(&mac);
            return Next::Tx(iface);
        }
        let nh = self.flows.hop_nh(h);
        self.solicit(iface, nh);
        Next::Park(iface, nh)
    }

    #[inline(always)]
    fn finish(&mut self, pkt: Q::Buf, next: Next) {
        match next {
            Next::Tx(i) => self.tx[i].push(pkt),
            Next::Drop(r) => self.drop_pkt(r),
            Next::Park(i, nh) => self.park(i, nh, pkt),
            Next::ProxyHold(idx) => {
                if self.proxy_held.len() >= MAX_PROXY_HELD {
                    self.drop_pkt(DropReason::ProxyWait);
                } else {
                    let gen = self.flows.get(idx).gen;
                    let deadline = self.now + PROXY_HOLD_NS;
                    self.proxy_held.push(Held { key: (idx, gen), iface: 0, buf: pkt, deadline });
                }
            }
        }
        if let Some(idx) = self.proxy_release.take() {
            self.release_proxied(idx);
        }
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
                client: sa(c.client, c.cport),
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
                local: (c.fwd == Forward::Fnat).then(|| sa(self.flows.laddr_of(c), c.lport)),
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
        self.reserved.clear();
        self.expect.clear();
        self.neigh.clear();
        // `clear` restarts the neighbour generation: forget every memo.
        self.frags.clear();
        self.frag_held.clear();
        self.frag_steer.clear();
        self.half_open = 0;
        self.last_cookie = 0;
        self.proxy_held.clear();
        self.proxy_release = None;
        self.verified.clear();
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
        self.timer_sig = [usize::MAX; 6];
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

/// Drops (counted as `r`) the packets of `v` (pending next hops, SYN-proxy or fragment
/// holds) whose deadline has passed. Order is not kept.
fn expire_held<K, B>(v: &mut Vec<Held<K, B>>, now: u64, counters: &WorkerCounters, r: DropReason) {
    let mut k = 0;
    while k < v.len() {
        if v[k].deadline <= now {
            drop(v.swap_remove(k));
            counters.count_drop(r);
        } else {
            k += 1;
        }
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

/// A burst's parse result, flow hash (0: none) and index word (`NONE`: missed / not looked up).
/// What [`track`] needs of the worker besides the connection (disjoint borrows of its fields).
struct TrackCtx<'a> {
    now: u64,
    snap_gen: u16,
    id: usize,
    snap: &'a Snapshot,
    timeouts: &'a [u64; crate::flow::tcpstate::N_STATES],
    half_open: &'a mut u32,
    acc: &'a mut [SvcAcc],
    acc_base: &'a [u32],
    acc_dirty: &'a mut Vec<u32>,
}

/// One forwarded packet (`len` bytes) of connection `c` travelling in `dir`: TCP state (and
/// the scheduler's active/inactive counts, the SYN_RECV count), expiry, the packet count and
/// the per-(service, real server) traffic deltas. True if the packet count's low half
/// wrapped (the caller carries it, [`FlowTable::carry_pkt`]).
#[inline(always)]
fn track(c: &mut flow::Conn, dir: Dir, p: &Parsed, len: u64, t: TrackCtx<'_>) -> bool {
    // ESTABLISHED with an ACK or no flag at all stays ESTABLISHED whatever the direction
    // (`tcpstate::next`'s own shortcut, tested there): nothing to count either.
    let unchanged = c.state == crate::flow::tcpstate::TcpState::Established
        && p.tcp_flags & (parse::TCP_FIN | TCP_SYN | parse::TCP_RST) == 0;
    if p.proto == PROTO_TCP && !unchanged {
        let d = match (dir, c.fwd) {
            (Dir::Out, _) => Direction::Output,
            (Dir::In, f) if f.two_way() => Direction::Input,
            (Dir::In, _) => Direction::InputOnly,
        };
        let old = c.state;
        let new = tcpstate::next(old, d, p.tcp_flags);
        if new != old {
            c.state = new;
            if old == crate::flow::tcpstate::TcpState::SynRecv {
                *t.half_open = t.half_open.saturating_sub(1);
            } else if new == crate::flow::tcpstate::TcpState::SynRecv {
                *t.half_open += 1;
            }
            if c.snap_gen == t.snap_gen && c.flags & F_COUNTED != 0 {
                let counts = &t.snap.conn_counts[c.svc as usize];
                let was = c.flags & F_ACTIVE_COUNTED != 0;
                let is = new.is_active();
                if was && !is {
                    counts.dec_active(t.id, c.dest as usize);
                    counts.inc_inactive(t.id, c.dest as usize);
                    c.flags &= !F_ACTIVE_COUNTED;
                } else if !was && is {
                    counts.dec_inactive(t.id, c.dest as usize);
                    counts.inc_active(t.id, c.dest as usize);
                    c.flags |= F_ACTIVE_COUNTED;
                }
            }
        }
    }
    account(c, dir, len, t.now, t.timeouts, t.acc, t.acc_base, t.acc_dirty)
}

/// The part of [`track`] every forwarded packet needs (all the express lane needs): the
/// expiry from the connection's state, the packet count and the service / real-server
/// traffic. True if the packet count's low half wrapped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn account(
    c: &mut flow::Conn,
    dir: Dir,
    len: u64,
    now: u64,
    timeouts: &[u64; crate::flow::tcpstate::N_STATES],
    acc: &mut [SvcAcc],
    acc_base: &[u32],
    acc_dirty: &mut Vec<u32>,
) -> bool {
    // The worker's timeouts are clamped to `MAX_SPAN_NS` (`apply_snapshot`).
    c.expire_after(now, timeouts[c.state as usize]);
    // Packet count (the high halves live in the cold array).
    let n = if dir == Dir::In { &mut c.pkts_in } else { &mut c.pkts_out };
    *n = n.wrapping_add(1);
    let wrapped = *n == 0;
    // Service / real-server traffic: worker-local deltas, folded
    // into the shared counters every ~100 ms (see `flush_svc_counters`).
    let slot = acc_base.get(c.svc as usize).map_or(u32::MAX, |b| b + c.dest as u32);
    if let Some(a) = acc.get_mut(slot as usize) {
        if a.in_packets | a.out_packets == 0 {
            acc_dirty.push((c.svc as u32) << 16 | c.dest as u32);
        }
        match dir {
            Dir::In => {
                a.in_packets += 1;
                a.in_bytes += len;
            }
            Dir::Out => {
                a.out_packets += 1;
                a.out_bytes += len;
            }
        }
    }
    wrapped
}

/// The NAT / full NAT rewrite of a packet of `c` travelling in `dir` (precomputed checksum
/// deltas; no gateway, proxy or translation): `la` is `c`'s local address (full NAT).
#[inline(always)]
fn rewrite_conn(
    c: &flow::Conn,
    la: Addr,
    far: (Addr, u16),
    dir: Dir,
    d: &mut [u8],
    p: &Parsed,
) -> Result<(), DropReason> {
    let (fa, fp) = far;
    match (c.fwd, dir) {
        (Forward::Fnat, Dir::In) => rewrite_fnat(d, p, la, c.lport, fa, fp, c.l3_in, c.l4_in()),
        (Forward::Fnat, Dir::Out) => rewrite_fnat(d, p, fa, fp, c.client, c.cport, c.l3_out, c.l4_out()),
        (_, Dir::In) => rewrite_nat(d, p, true, fa, fp, c.l3_in, c.l4_in()),
        (_, Dir::Out) => rewrite_nat(d, p, false, fa, fp, c.l3_out, c.l4_out()),
    }
}

/// The flow-table key of a parsed packet, as received.
#[inline(always)]
fn flow_key(p: &Parsed) -> FlowKey {
    FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto }
}

/// RFC 1624 delta of decrementing the IPv4 TTL by one (the TTL/protocol
/// word loses 0x0100): ~old + new = ~0x0100 = 0xfeff.
const TTL_DELTA: u32 = 0xfeff;

/// NAT rewrite: inbound sets destination (addr, port), outbound sets
/// source. Decrements TTL/hop limit. Fails with `TtlExceeded` if it ran out
/// (the packet is left unchanged) and with `Malformed` if `p`'s offsets do
/// not fit `d` (cannot happen for a frame `p` was parsed from; the packet
/// is dropped and counted as what it is rather than as a TTL drop, as
/// IPVS's `ip_vs_nat_xmit` sends a failed `skb_ensure_writable` to
/// `tx_error` and never to `ICMP_TIME_EXCEEDED`).
#[inline(always)]
pub fn rewrite_nat(
    d: &mut [u8],
    p: &Parsed,
    inbound: bool,
    addr: Addr,
    port: u16,
    l3d: u16,
    l4d: u16,
) -> Result<(), DropReason> {
    // One bounds check per header: the parser guaranteed the IP header and
    // the TCP (20) / UDP (8) header lie inside the frame, so these slices
    // always succeed; constant offsets into fixed-size arrays need no
    // further checks.
    let l4 = p.l4;
    rewrite_ip(d, p.l3, p.v6, inbound, addr, l3d)?;
    match p.proto {
        PROTO_TCP => {
            let Some(Ok::<&mut [u8; 20], _>(t)) = d.get_mut(l4..l4 + 20).map(|s| s.try_into()) else {
                return Err(DropReason::Malformed);
            };
            if inbound {
                t[2..4].copy_from_slice(&port.to_be_bytes());
            } else {
                t[0..2].copy_from_slice(&port.to_be_bytes());
            }
            let c = csum::apply16(u16::from_be_bytes([t[16], t[17]]), l4d);
            t[16..18].copy_from_slice(&c.to_be_bytes());
        }
        PROTO_UDP => {
            let Some(Ok::<&mut [u8; 8], _>(u)) = d.get_mut(l4..l4 + 8).map(|s| s.try_into()) else {
                return Err(DropReason::Malformed);
            };
            if inbound {
                u[2..4].copy_from_slice(&port.to_be_bytes());
            } else {
                u[0..2].copy_from_slice(&port.to_be_bytes());
            }
            let c = u16::from_be_bytes([u[6], u[7]]);
            if c != 0 || p.v6 {
                let mut n = csum::apply16(c, l4d);
                if n == 0 {
                    n = 0xffff;
                }
                u[6..8].copy_from_slice(&n.to_be_bytes());
            }
        }
        _ => {
            let poff = if inbound { l4 + 2 } else { l4 };
            let Some(w) = d.get_mut(poff..poff + 2) else {
                return Err(DropReason::Malformed);
            };
            w.copy_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

/// The IP part of the NAT rewrite: inbound sets the destination, outbound the source;
/// decrements TTL / hop limit (the IPv4 header checksum takes `l3d`, which covers both).
#[inline(always)]
fn rewrite_ip(d: &mut [u8], l3: usize, v6: bool, inbound: bool, addr: Addr, l3d: u16) -> Result<(), DropReason> {
    if !v6 {
        let Some(Ok::<&mut [u8; 20], _>(h)) = d.get_mut(l3..l3 + 20).map(|s| s.try_into()) else {
            return Err(DropReason::Malformed);
        };
        if h[8] <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h[8] -= 1;
        let a = addr_v4_bytes(addr);
        if inbound {
            h[16..20].copy_from_slice(&a);
        } else {
            h[12..16].copy_from_slice(&a);
        }
        let c = csum::apply16(u16::from_be_bytes([h[10], h[11]]), l3d);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let Some(Ok::<&mut [u8; 40], _>(h)) = d.get_mut(l3..l3 + 40).map(|s| s.try_into()) else {
            return Err(DropReason::Malformed);
        };
        if h[7] <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h[7] -= 1;
        let a = addr_v6_bytes(addr);
        if inbound {
            h[24..40].copy_from_slice(&a);
        } else {
            h[8..24].copy_from_slice(&a);
        }
    }
    Ok(())
}

/// Write `a` as the source (`src`) or destination address of the IP header
/// at `l3`.
fn set_addr(d: &mut [u8], l3: usize, v6: bool, src: bool, a: Addr) {
    if v6 {
        let off = if src { l3 + 8 } else { l3 + 24 };
        d[off..off + 16].copy_from_slice(&addr_v6_bytes(a));
    } else {
        let off = if src { l3 + 12 } else { l3 + 16 };
        d[off..off + 4].copy_from_slice(&addr_v4_bytes(a));
    }
}

/// Recompute the IPv4 header checksum at `l3`.
pub fn fix_ipv4_csum(d: &mut [u8], l3: usize) {
    let ihl = (d[l3] & 0xf) as usize * 4;
    d[l3 + 10] = 0;
    d[l3 + 11] = 0;
    let c = csum::finish(&d[l3..l3 + ihl], 0);
    d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the transport checksum (TCP, UDP, ICMP, ICMPv6) from scratch.
pub fn fix_l4_csum(d: &mut [u8], p: &Parsed) {
    let l3 = p.l3;
    let l4 = p.l4;
    let len = p.end - l4;
    let off = match p.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        PROTO_ICMP | PROTO_ICMPV6 => 2,
        _ => return,
    };
    d[l4 + off] = 0;
    d[l4 + off + 1] = 0;
    let pseudo = if p.proto == PROTO_ICMP {
        0
    } else if p.v6 {
        let s: [u8; 16] = d[l3 + 8..l3 + 24].try_into().expect("16");
        let t: [u8; 16] = d[l3 + 24..l3 + 40].try_into().expect("16");
        csum::pseudo_v6(&s, &t, p.proto, len as u32)
    } else {
        let s: [u8; 4] = d[l3 + 12..l3 + 16].try_into().expect("4");
        let t: [u8; 4] = d[l3 + 16..l3 + 20].try_into().expect("4");
        csum::pseudo_v4(s, t, p.proto, len as u16)
    };
    let mut c = csum::finish(&d[l4..p.end], pseudo);
    if p.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    d[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Encapsulate the IP packet in an outer IPv4 (IPIP) or IPv6 (IPv6-in-IPv6)
/// header from `src` to `rs`. False if it would exceed the MTU.
fn encap_ipip<B: Packet>(pkt: &mut B, p: &Parsed, src: Addr, rs: Addr, mtu: u16) -> bool {
    let inner_len = p.end - p.l3;
    let v4 = addr_is_v4(rs);
    let hdr = if v4 { 20 } else { 40 };
    if inner_len + hdr > mtu as usize || !pkt.set_len(p.end) || !pkt.prepend(hdr) {
        return false;
    }
    let d = pkt.data_mut();
    // Move the L2 header to the front, then write the outer header.
    d.copy_within(hdr..hdr + p.l3, 0);
    let o = p.l3;
    if v4 {
        d[o - 2..o].copy_from_slice(&[0x08, 0x00]);
        let h = &mut d[o..o + 20];
        h.fill(0);
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((inner_len + 20) as u16).to_be_bytes());
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = if p.v6 { 41 } else { 4 };
        h[12..16].copy_from_slice(&addr_v4_bytes(src));
        h[16..20].copy_from_slice(&addr_v4_bytes(rs));
        fix_ipv4_csum(d, o);
    } else {
        d[o - 2..o].copy_from_slice(&[0x86, 0xdd]);
        let h = &mut d[o..o + 40];
        h.fill(0);
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
        h[6] = if p.v6 { 41 } else { 4 };
        h[7] = 64;
        h[8..24].copy_from_slice(&addr_v6_bytes(src));
        h[24..40].copy_from_slice(&addr_v6_bytes(rs));
    }
    true
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

#[cfg(test)]
mod rewrite_nat_tests {
    use super::*;
    use crate::tools::testpkt::{set_ttl, tcp4};

    #[test]
    fn ttl_exhausted_and_bounds_failures_are_told_apart() {
        let rs = parse::v4_to_addr([10, 0, 2, 2]);
        let f = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_SYN, 1, 0, b"");
        let p = parse::parse(&f).unwrap();
        let mut ok = f.clone();
        assert_eq!(rewrite_nat(&mut ok, &p, true, rs, 8080, 0, 0), Ok(()));
        let mut ttl1 = set_ttl(f.clone(), 1);
        assert_eq!(rewrite_nat(&mut ttl1, &p, true, rs, 8080, 0, 0), Err(DropReason::TtlExceeded));
        assert_eq!(ttl1, set_ttl(f.clone(), 1), "left unchanged");
        // Offsets that do not fit the buffer (a parse of another frame).
        let mut short = f[..p.l4 + 10].to_vec();
        assert_eq!(rewrite_nat(&mut short, &p, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
        let mut tiny = f[..p.l3 + 4].to_vec();
        assert_eq!(rewrite_nat(&mut tiny, &p, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
        let p6 = Parsed { v6: true, ..p };
        assert_eq!(rewrite_nat(&mut f[..p.l3 + 30].to_vec(), &p6, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
    }
}
