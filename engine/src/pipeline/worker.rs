//! The poll-mode worker: one per queue, owning its flow table, neighbour
//! cache, schedulers, persistence templates and FTP expectations.
//!
//! `poll(now)` receives a burst from every port queue, classifies each
//! packet, hands packets it does not own to their owner through a
//! lock-free ring, forwards the rest and transmits. It never blocks, and
//! in steady state it does not allocate (buffers are recycled, tables are
//! sized at start; an FTP control session allocates its gateway state once).

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
use crate::pipeline::snapshot::{lport_owner, lport_share, owner_of, Snapshot};
use crate::pipeline::synproxy::{self, Cookies, Handshake};
use crate::port::{Packet, PortQueue};
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

#[path = "worker_tcp.rs"]
mod tcp;
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
    pub stop: AtomicBool,
}

impl<B> Fabric<B> {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Fabric {
            workers,
            handoff: (0..workers).map(|_| ArrayQueue::new(8192)).collect(),
            ctrl: (0..workers).map(|_| ArrayQueue::new(4096)).collect(),
            counters: (0..workers).map(|_| Arc::new(WorkerCounters::default())).collect(),
            services: (0..workers).map(|_| Mutex::new(Arc::new(Vec::new()))).collect(),
            sync_tx: ArrayQueue::new(1024),
            stop: AtomicBool::new(false),
        })
    }
    /// Post a control message to every worker (best effort: a full ring
    /// drops the message, which for neighbours only delays resolution).
    pub fn broadcast(&self, mut make: impl FnMut() -> Ctrl) {
        for q in &self.ctrl {
            let _ = q.push(make());
        }
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
const SWEEP_PER_POLL: usize = 64;
/// Expired expectations removed per poll at most.
const EXPECT_SWEEP_PER_POLL: usize = 8;
/// Longest time (ns) per-worker service/real-server traffic deltas wait
/// before `poll` folds them into the shared counters.
const SVC_FLUSH_NS: u64 = 100_000_000;

/// Per-service worker state rebuilt with each snapshot.
struct SvcState {
    sched: Box<dyn sched::Scheduler>,
    persist: Option<sched::PersistTable>,
    /// The real servers in the scheduler's form, built once per snapshot.
    dests: Vec<sched::Dest>,
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

pub struct Worker<Q: PortQueue> {
    pub id: usize,
    queues: Vec<Q>,
    snap: Arc<Snapshot>,
    snap_gen: u32,
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
    fabric: Arc<Fabric<Q::Buf>>,
    counters: Arc<WorkerCounters>,
    rx: Vec<Q::Buf>,
    /// Per rx burst: parse result, flow hash (0: none) and the index word
    /// found by the burst's second pass (`NONE`: missed / not looked up).
    /// Kept at (at least) the largest burst's length and overwritten in
    /// place by each burst (entries past the burst are stale).
    pre: Vec<(Result<Parsed, parse::ParseError>, u64, u32)>,
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
    tx: Vec<Vec<Q::Buf>>,
    pending: Vec<Held<Addr, Q::Buf>>,
    actions: alg::Actions,
    /// Rate limit (kernel `net_ratelimit` defaults) for the FTP bounce
    /// refusal warning, which a client can trigger at will.
    bounce_log: crate::pipeline::ratelimit::RateLimit,
    /// Rate limit for the neighbour-table-full warning.
    neigh_log: crate::pipeline::ratelimit::RateLimit,
    /// Evictions from a full neighbour table by neighbours nobody asked for
    /// ([`neigh::EVICT_PER_SEC`]).
    neigh_evict_rl: crate::pipeline::ratelimit::RateLimit,
    /// Token bucket of the ICMP errors this worker originates (`[engine] icmp_rate` /
    /// `icmp_burst`) and the (rate, burst) it was built for.
    icmp_rl: crate::pipeline::ratelimit::RateLimit,
    icmp_cfg: (u32, u32),
    /// Exception path (`interface.kernel_port`, DPDK): the queue of each interface's kernel
    /// port, the interface each kernel queue belongs to (fixed when the backend opened the
    /// ports), and the `[engine] kernel_rate` bucket.
    kern_q: Vec<Option<usize>>,
    kern_of: Vec<Option<usize>>,
    kern_rl: crate::pipeline::ratelimit::RateLimit,
    sweep_pos: usize,
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

/// Slots the sync refresh scan visits per poll.
const SYNC_SCAN_PER_POLL: usize = 64;
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

impl<Q: PortQueue> Worker<Q> {
    pub fn new(id: usize, queues: Vec<Q>, snap: Arc<Snapshot>, fabric: Arc<Fabric<Q::Buf>>) -> Self {
        let cap = snap.config.engine.flow_table_size;
        let ifaces = queues.len();
        // Kernel ports the backend opened (a backend without them leaves the queues out).
        let kern_q: Vec<Option<usize>> = crate::pipeline::snapshot::kernel_queues(&snap.config)
            .into_iter()
            .map(|q| q.filter(|&q| q < ifaces))
            .collect();
        let mut kern_of = vec![None; ifaces];
        for (i, q) in kern_q.iter().enumerate() {
            if let Some(q) = *q {
                kern_of[q] = Some(i);
            }
        }
        let kern_rate = snap.config.engine.kernel_rate;
        let mut w = Worker {
            id,
            counters: fabric.counters[id].clone(),
            queues,
            snap: snap.clone(),
            snap_gen: 0,
            svcs: Vec::new(),
            remap: Default::default(),
            svc_counters: Arc::new(Vec::new()),
            flows: FlowTable::new(cap),
            lports: LportPools::new(lport_share(snap.port_range, id, fabric.workers)),
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
            fabric,
            rx: Vec::with_capacity(crate::port::BURST),
            pre: Vec::with_capacity(crate::port::BURST),
            acc: Vec::new(),
            acc_base: Vec::new(),
            acc_dirty: Vec::new(),
            if_macs: Vec::new(),
            hint_ver: u64::MAX,
            timeouts: [0; crate::flow::tcpstate::N_STATES],
            tx: (0..ifaces).map(|_| Vec::with_capacity(crate::port::BURST * 4)).collect(),
            pending: Vec::with_capacity(MAX_PENDING),
            actions: alg::Actions::default(),
            bounce_log: Default::default(),
            neigh_log: Default::default(),
            neigh_evict_rl: crate::pipeline::ratelimit::RateLimit::new(neigh::EVICT_PER_SEC, neigh::EVICT_BURST),
            icmp_rl: crate::pipeline::ratelimit::RateLimit::new(0, 1),
            icmp_cfg: (u32::MAX, 0),
            kern_q,
            kern_of,
            kern_rl: crate::pipeline::ratelimit::RateLimit::new(kern_rate, (kern_rate / 10).clamp(64, 100_000)),
            sweep_pos: 0,
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

    pub fn queues_mut(&mut self) -> &mut [Q] {
        &mut self.queues
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

    /// Install a new configuration. Everything that belongs to a service
    /// and real server that still exist (see [`crate::pipeline::remap`] for what
    /// "still exist" means) carries over: connections, persistence
    /// templates (if the persistence settings did not change), the
    /// scheduler's state (if it is the same scheduler: rr/wrr position,
    /// lblc/lblcr tables; it is told about changed servers through
    /// `Scheduler::update`, which rebuilds sh/dh/mh tables deterministically)
    /// and counters. Connections of removed services or real servers are
    /// removed. A health-check flap (a weight change) thus changes the
    /// weight and nothing else. The old -> new map is kept in
    /// `self.remap` for the rest of the worker (FTP expectations, pins).
    fn apply_snapshot(&mut self, snap: Arc<Snapshot>) {
        // Fold pending traffic into the old counters before they are carried.
        self.flush_svc_counters();
        let old = std::mem::replace(&mut self.snap, snap.clone());
        self.snap_gen = self.snap_gen.wrapping_add(1);
        if !Arc::ptr_eq(&old, &snap) {
            self.retire_laddrs(&old, &snap);
        }
        let icmp = (snap.config.engine.icmp_rate, snap.config.engine.icmp_burst);
        if icmp != self.icmp_cfg {
            self.icmp_rl = crate::pipeline::ratelimit::RateLimit::new(icmp.0, icmp.1);
            self.icmp_cfg = icmp;
        }
        self.remap = if Arc::ptr_eq(&old, &snap) {
            crate::pipeline::remap::SnapshotMap::identity(&snap)
        } else {
            crate::pipeline::remap::SnapshotMap::build(&old, &snap)
        };
        let from_old = self.remap.inverse(snap.services.len());
        let seed = 0x5eed_0000 + self.id as u64;
        let mut old_svcs: Vec<Option<SvcState>> = std::mem::take(&mut self.svcs).into_iter().map(Some).collect();
        self.svcs = snap
            .services
            .iter()
            .zip(&from_old)
            .map(|(s, o)| {
                let dests = sched_dests(s);
                let carried = o.and_then(|o| Some((old_svcs.get_mut(o as usize)?.take()?, &old.services[o as usize])));
                let persist_new = || {
                    s.persistence.map(|(t, p)| {
                        let v4 = p.saturating_sub(96);
                        sched::PersistTable::new(t, v4.min(32), p.min(128))
                    })
                };
                match carried {
                    Some((mut st, os)) => {
                        if st.sched.name() != s.scheduler {
                            st.sched = sched::new_scheduler(&s.scheduler, &dests, seed)
                                .unwrap_or_else(|_| sched::new_scheduler("rr", &dests, seed).expect("rr exists"));
                        } else if st.dests != dests {
                            st.sched.update(&dests);
                        }
                        if os.persistence != s.persistence {
                            st.persist = persist_new();
                        }
                        st.dests = dests;
                        st
                    }
                    None => {
                        let sched = sched::new_scheduler(&s.scheduler, &dests, seed)
                            .unwrap_or_else(|_| sched::new_scheduler("rr", &dests, seed).expect("rr exists"));
                        SvcState { sched, persist: persist_new(), dests }
                    }
                }
            })
            .collect();
        // Keep counters of services that survive so stats do not reset.
        let old_counters = std::mem::take(&mut self.svc_counters);
        let counters: Vec<ServiceCounters> =
            snap.services.iter().map(|s| ServiceCounters::new(s.dests.len())).collect();
        for (i, s) in snap.services.iter().enumerate() {
            if let Some(j) = from_old[i].map(|j| j as usize) {
                if let Some(oc) = old_counters.get(j) {
                    carry_counters(oc, &counters[i], &old.services[j], s);
                }
            }
        }
        self.svc_counters = Arc::new(counters);
        self.acc_base.clear();
        let mut n = 0u32;
        for s in snap.services.iter() {
            self.acc_base.push(n);
            n += s.dests.len() as u32;
        }
        self.acc = vec![SvcAcc::default(); n as usize];
        self.acc_dirty = Vec::with_capacity(n as usize);
        self.if_macs = snap.ifaces.iter().map(|i| i.mac).collect();
        self.sync_on = snap.config.cluster.is_some();
        self.sync_refresh = snap.config.cluster.as_ref().map_or(0, |c| c.sync_refresh as u64 * 1_000_000_000);
        self.timeouts = snap.timeouts;
        if let Ok(mut g) = self.fabric.services[self.id].lock() {
            *g = self.svc_counters.clone();
        }
        for &(a, m) in &snap.static_neighbors {
            self.neigh.add_static(a, m);
        }
        let share = lport_share(snap.port_range, self.id, self.fabric.workers);
        if share != self.lports.share() {
            // Another local_port_range: the ports of live connections stay theirs.
            let flows = &self.flows;
            let in_use = (0..flows.slots() as u32)
                .filter_map(|i| flows.try_get(i))
                .filter(|c| c.fwd == Forward::Fnat)
                .map(|c| (flows.laddr_of(c), c.proto, c.lport));
            self.lports.reshare(share, in_use);
        }
        if Arc::ptr_eq(&old, &snap) {
            return;
        }
        // FTP expectations and TLS pins follow their service and real server.
        let remap = &self.remap;
        self.expect.remap(|svc, dest| remap.map(svc, dest));
        // Remap live connections to the new service/dest indices.
        for i in 0..self.flows.slots() as u32 {
            let (live, svc, dest) = {
                let c = self.flows.get(i);
                (c.live, c.svc, c.dest)
            };
            if !live {
                continue;
            }
            match self.remap.map(svc, dest) {
                Some((ni, nd)) => {
                    let c = self.flows.get_mut(i);
                    c.svc = ni;
                    c.dest = nd;
                    c.snap_gen = self.snap_gen;
                    c.flags &= !(F_ACTIVE_COUNTED | F_COUNTED);
                    let active = c.state.is_active();
                    let counts = &snap.conn_counts[ni as usize];
                    if active {
                        counts.inc_active(self.id, nd as usize);
                    } else {
                        counts.inc_inactive(self.id, nd as usize);
                    }
                    c.flags |= F_COUNTED | if active { F_ACTIVE_COUNTED } else { 0 };
                }
                None => self.remove_conn(i, false),
            }
        }
    }

    /// How the services and real servers of the previous snapshot map into
    /// the current one (see [`crate::pipeline::remap::SnapshotMap`]).
    pub fn remap(&self) -> &crate::pipeline::remap::SnapshotMap {
        &self.remap
    }

    /// One iteration of the poll loop at time `now` (ns). Returns the number
    /// of packets handled.
    pub fn poll(&mut self, now: u64) -> usize {
        self.now = now;
        let mut work = 0;
        // Control messages first: a new snapshot applies before new packets.
        while let Some(m) = self.fabric.ctrl[self.id].pop() {
            self.handle_ctrl(m);
        }
        let mut rx = std::mem::take(&mut self.rx);
        let mut pre = std::mem::take(&mut self.pre);
        for i in 0..self.queues.len() {
            self.queues[i].rx_burst(&mut rx);
            if rx.is_empty() {
                continue;
            }
            if let Some(data) = self.kern_of[i] {
                // The kernel's own frames (BGP, BFD, ARP, ...) leave through its data port as sent.
                work += rx.len();
                bump(&self.counters.from_kernel, rx.len() as u64);
                self.tx[data].append(&mut rx);
                continue;
            }
            // Burst in three passes so the flow table's cache misses
            // overlap instead of serialising: (1) parse, hash the 5-tuple,
            // prefetch its index line; (2) find the connection slot and
            // prefetch it; (3) process. Pass 3 reuses the index word found
            // by pass 2 while the table's version is unchanged (nothing
            // inserted or removed since); otherwise it re-checks / looks
            // up again, so a connection created or removed by an earlier
            // packet of the same burst is seen correctly.
            let n = rx.len();
            if pre.len() < n {
                pre.resize(n, (Ok(Parsed::default()), 0, NONE));
            }
            let mut bytes = 0u64;
            // Parse straight into the burst array (no `Parsed` copies).
            for (pkt, (r, h, hint)) in rx.iter().zip(pre.iter_mut()) {
                bytes += pkt.len() as u64;
                parse::parse_into(pkt.data(), r);
                *hint = NONE;
                *h = match &*r {
                    Ok(p) if p.proto == PROTO_TCP || p.proto == PROTO_UDP => {
                        let h = self.flows.hash(&flow_key(p));
                        self.flows.prefetch(h);
                        h
                    }
                    _ => 0,
                };
            }
            for (r, h, hint) in pre[..n].iter_mut() {
                if let (Ok(p), true) = (&*r, *h != 0) {
                    if let Some(v) = self.flows.lookup_word(&flow_key(p), *h) {
                        self.flows.prefetch_conn(v >> 1);
                        *hint = v;
                    }
                }
            }
            self.hint_ver = self.flows.version();
            work += n;
            bump(&self.counters.rx_packets, n as u64);
            bump(&self.counters.rx_bytes, bytes);
            // By reference: the parse results stay where pass 1 wrote them.
            for (pkt, (r, h, hint)) in rx.drain(..).zip(pre.iter()) {
                self.process_parsed(i, pkt, false, r, *h, *hint);
            }
        }
        self.rx = rx;
        self.pre = pre;
        for _ in 0..crate::port::BURST * 4 {
            match self.fabric.handoff[self.id].pop() {
                Some((i, pkt)) => {
                    work += 1;
                    bump(&self.counters.handoff_in, 1);
                    let r = parse::parse(pkt.data());
                    self.process_parsed(i as usize, pkt, true, &r, 0, NONE);
                }
                None => break,
            }
        }
        // Service counters: folded at most every SVC_FLUSH_NS of traffic,
        // and at once when a poll finds nothing to do, so statistics lag
        // by at most ~100 ms while busy and not at all once idle.
        if work == 0 || now.wrapping_sub(self.last_svc_flush) >= SVC_FLUSH_NS {
            self.last_svc_flush = now;
            self.flush_svc_counters();
        }
        self.flush_tx();
        self.housekeeping(now);
        if self.sync_on {
            self.sync_refresh_scan(now);
            self.flush_sync();
        }
        work
    }

    /// Hand this poll's sync entries to the sync thread (one batch per poll).
    pub fn flush_sync(&mut self) {
        if self.sync_out.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.sync_out);
        if let Err(b) = self.fabric.sync_tx.push(batch) {
            bump(&self.counters.sync_skipped, b.len() as u64);
        }
    }

    fn push_sync(&mut self, e: SyncEntry) {
        if self.sync_out.len() < SYNC_MAX_PER_POLL {
            self.sync_out.push(e);
        } else {
            bump(&self.counters.sync_skipped, 1);
        }
    }

    /// The sync entry of connection `idx` as it is now.
    fn conn_entry(&self, idx: u32) -> SyncEntry {
        let c = self.flows.get(idx);
        let k = self.flows.cold(idx);
        SyncEntry::Conn(crate::cluster::sync::ConnSync {
            proto: c.proto,
            state: c.state as u8,
            fwd: match c.fwd {
                Forward::Nat => 0,
                Forward::Dr => 1,
                Forward::Tunnel => 2,
                Forward::Fnat => 3,
            },
            data: c.flags & F_DATA != 0,
            client: c.client,
            cport: c.cport,
            vip: c.vip,
            vport: c.vport,
            rs: c.rs,
            rport: c.rport,
            timeout_s: (c.expires.saturating_sub(self.now) / 1_000_000_000).min(u32::MAX as u64) as u32,
            proxy_delta: k.proxy.as_ref().filter(|p| p.established).map(|p| p.delta),
            fnat: (c.fwd == Forward::Fnat).then(|| (self.flows.laddr_of(c), c.lport)),
        })
    }

    /// Queue connection `idx` for the peers (a creation, a state change or a refresh).
    fn sync_conn(&mut self, idx: u32) {
        let c = self.flows.get(idx);
        if !self.sync_on || c.flags & F_SYNCED != 0 {
            return;
        }
        let e = self.conn_entry(idx);
        self.flows.cold_mut(idx).synced_at = self.now.max(1);
        self.push_sync(e);
        if let Some(e) = self.seq_entry(idx) {
            self.push_sync(e);
        }
    }

    /// The gateway's sequence-number translation of NAT / full-NAT control connection `idx`,
    /// if a rewrite moved it (a peer taking the connection over needs it).
    fn seq_entry(&self, idx: u32) -> Option<SyncEntry> {
        let c = self.flows.get(idx);
        let s = self.flows.cold(idx).alg.as_deref()?;
        if !c.fwd.two_way() {
            return None;
        }
        let (orig, reply) = (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        if orig == alg::SeqShift::default() && reply == alg::SeqShift::default() {
            return None;
        }
        Some(SyncEntry::Seq(crate::cluster::sync::SeqSync {
            client: c.client,
            cport: c.cport,
            vip: c.vip,
            vport: c.vport,
            lport: (c.fwd == Forward::Fnat).then_some(c.lport),
            orig,
            reply,
        }))
    }

    /// A peer's gateway translation for its control connection: this node's backup copy
    /// continues from it.
    fn install_synced_seq(&mut self, q: &crate::cluster::sync::SeqSync) -> bool {
        let key = FlowKey { proto: PROTO_TCP, src: q.client, sport: q.cport, dst: q.vip, dport: q.vport };
        let Some((idx, Dir::In)) = self.flows.lookup(&key) else { return false };
        let c = self.flows.get(idx);
        if c.flags & F_SYNCED == 0 || !c.fwd.two_way() {
            return false; // this node carries it: its own gateway knows better
        }
        let (si, di) = (c.svc as usize, c.dest as usize);
        if si >= self.snap.services.len() || di >= self.snap.services[si].dests.len() {
            return false;
        }
        self.start_ftp_session(si, di, idx, Some((q.orig, q.reply)));
        true
    }

    /// Re-send live connections not sent for `sync_refresh`, a few slots per poll.
    fn sync_refresh_scan(&mut self, now: u64) {
        let n = self.flows.slots();
        if n == 0 {
            return;
        }
        for _ in 0..SYNC_SCAN_PER_POLL.min(n) {
            let i = (self.sync_pos % n) as u32;
            self.sync_pos = (self.sync_pos + 1) % n;
            let c = self.flows.get(i);
            if c.live
                && c.flags & F_SYNCED == 0
                && c.expires > now
                && now.saturating_sub(self.flows.cold(i).synced_at) >= self.sync_refresh
            {
                self.sync_conn(i);
            }
        }
    }

    /// Install state a peer sent (see [`crate::cluster::sync`]): backup connections (not counted by
    /// the schedulers until a packet arrives for them), removals of backup connections,
    /// persistence templates and FTP expectations.
    pub fn apply_sync(&mut self, entries: &[SyncEntry]) {
        for e in entries {
            let ok = match *e {
                SyncEntry::Conn(c) => self.install_synced_conn(&c),
                SyncEntry::Delete { proto, client, cport, vip, vport, .. } => {
                    let key = FlowKey { proto, src: client, sport: cport, dst: vip, dport: vport };
                    match self.flows.lookup(&key) {
                        Some((idx, Dir::In)) if self.flows.get(idx).flags & F_SYNCED != 0 => {
                            self.remove_conn(idx, false);
                            true
                        }
                        _ => false,
                    }
                }
                SyncEntry::Template(t) => self.install_synced_template(&t),
                SyncEntry::Expect(x) => self.install_synced_expect(&x),
                SyncEntry::Seq(q) => self.install_synced_seq(&q),
            };
            bump(if ok { &self.counters.sync_installed } else { &self.counters.sync_skipped }, 1);
        }
    }

    fn find_dest(&self, si: usize, rs: Addr, rport: u16, vport: u16) -> Option<usize> {
        self.snap.services[si]
            .dests
            .iter()
            .position(|d| d.addr == rs && d.port.unwrap_or(vport) == rport)
            .or_else(|| self.snap.services[si].dests.iter().position(|d| d.addr == rs))
    }

    fn install_synced_conn(&mut self, s: &crate::cluster::sync::ConnSync) -> bool {
        let key = FlowKey { proto: s.proto, src: s.client, sport: s.cport, dst: s.vip, dport: s.vport };
        if let Some((idx, _)) = self.flows.lookup(&key) {
            // Known: a backup entry follows its owner's state and timeout; a connection this
            // node carries traffic for keeps its own.
            let c = self.flows.get_mut(idx);
            if c.flags & F_SYNCED != 0 {
                if let Some(st) = crate::flow::tcpstate::TcpState::from_u8(s.state) {
                    c.state = st;
                }
                c.expires = self.now + s.timeout_s as u64 * 1_000_000_000;
            }
            return true;
        }
        let si = match self.snap.service(s.vip, s.proto, s.vport) {
            Some(si) => si,
            // An FTP data connection (a port no service owns): its VIP's FTP service.
            None => {
                match self.snap.services.iter().position(|x| x.vip == s.vip && x.proto == s.proto && x.ftp.is_some()) {
                    Some(si) if s.data => si,
                    _ => return false,
                }
            }
        };
        let Some(di) = self.find_dest(si, s.rs, s.rport, s.vport) else { return false };
        let Some(st) = crate::flow::tcpstate::TcpState::from_u8(s.state) else { return false };
        // Full NAT: the sender's local address and port, reserved here so this worker never
        // hands them out (an FTP active data connection of an adopted control connection
        // takes ports on that address); both sides must agree it is full NAT.
        let local = match (self.snap.services[si].dests[di].forward == Forward::Fnat, s.fnat) {
            (false, None) => Local::Any,
            (true, Some((la, lport))) => {
                if !self.lports.reserve(la, s.proto, lport) {
                    return false; // in use here: a connection of this node holds it
                }
                Local::Fixed(la, lport)
            }
            _ => return false,
        };
        let idx = match self.create_backup(si, di, s, local) {
            Ok(i) => i,
            Err(_) => {
                if let Local::Fixed(la, lport) = local {
                    self.lports.release(la, s.proto, lport);
                }
                return false;
            }
        };
        let c = self.flows.get_mut(idx);
        c.state = st;
        c.expires = self.now + s.timeout_s as u64 * 1_000_000_000;
        if s.data {
            c.flags |= F_DATA;
        }
        if let Some(delta) = s.proxy_delta {
            c.flags |= F_SYNPROXY;
            self.flows.cold_mut(idx).proxy =
                Some(Box::new(crate::pipeline::synproxy::Proxied { isn: 0, cookie: 0, delta, established: true }));
        }
        // A NAT / full-NAT FTP control connection: a gateway session, so that once this node
        // carries it the commands and replies are still translated (no rewrite so far; a
        // kind-5 entry brings the peer's, `install_synced_seq`).
        let svc = &self.snap.services[si];
        if !s.data && s.proto == PROTO_TCP && svc.is_ftp_control(s.vport) && svc.dests[di].forward.two_way() {
            self.start_ftp_session(si, di, idx, Some(Default::default()));
        }
        true
    }

    /// A connection from a peer's sync: as `create_conn`, but not counted anywhere (the
    /// schedulers, flows_created, the service's connections) until traffic arrives.
    fn create_backup(
        &mut self,
        si: usize,
        di: usize,
        s: &crate::cluster::sync::ConnSync,
        local: Local,
    ) -> Result<u32, DropReason> {
        let idx = self.create_conn(si, di, s.client, s.cport, s.vip, s.vport, s.rs, s.rport, local)?;
        // Undo create_conn's accounting: backup state is invisible to the schedulers.
        let counts = &self.snap.conn_counts[si];
        counts.dec_inactive(self.id, di);
        bump(&self.counters.flows_created, u64::MAX);
        let sc = &self.svc_counters[si];
        bump(&sc.conns, u64::MAX);
        bump(&sc.dests[di].conns, u64::MAX);
        bump(&self.counters.flows_active, u64::MAX);
        let c = self.flows.get_mut(idx);
        c.flags &= !F_COUNTED;
        c.flags |= F_SYNCED;
        Ok(idx)
    }

    /// The first packet of a backup connection: from now on it is this node's, counted as
    /// a connection created here.
    #[cold]
    fn adopt(&mut self, idx: u32) {
        let (si, di, active) = {
            let c = self.flows.get_mut(idx);
            c.flags &= !F_SYNCED;
            c.flags |= F_COUNTED;
            (c.svc as usize, c.dest as usize, c.state.is_active())
        };
        if let Some(counts) = self.snap.conn_counts.get(si) {
            if active {
                counts.inc_active(self.id, di);
                self.flows.get_mut(idx).flags |= F_ACTIVE_COUNTED;
            } else {
                counts.inc_inactive(self.id, di);
            }
        }
        bump(&self.counters.flows_created, 1);
        bump(&self.counters.flows_active, 1);
        if let Some(sc) = self.svc_counters.get(si) {
            bump(&sc.conns, 1);
            if let Some(d) = sc.dests.get(di) {
                bump(&d.conns, 1);
            }
        }
    }

    fn install_synced_template(&mut self, t: &crate::cluster::sync::TemplateSync) -> bool {
        let Some(si) = self.snap.service(t.vip, t.proto, t.vport) else { return false };
        let Some(di) = self.find_dest(si, t.rs, t.rport, t.vport) else { return false };
        let now = self.now;
        let st = &mut self.svcs[si];
        let Some(pt) = st.persist.as_mut() else { return false };
        pt.insert(addr_to_ip(t.client), di, now, &st.dests);
        true
    }

    fn install_synced_expect(&mut self, x: &crate::cluster::sync::ExpectSync) -> bool {
        use crate::cluster::sync::ExpectKind as K;
        let proto = PROTO_TCP;
        let ctl = FlowKey { proto, src: x.client, sport: x.ctl_cport, dst: x.vip, dport: x.ctl_vport };
        let Some((parent, Dir::In)) = self.flows.lookup(&ctl) else { return false };
        let c = self.flows.get(parent);
        let (svc, dest, gen) = (c.svc, c.dest, c.gen);
        let key = match x.kind {
            K::Passive => ExpKey::Passive(x.client, x.vip, x.port),
            K::PassiveAny => ExpKey::PassiveAny(x.client, x.vip),
            K::Active => ExpKey::Active(x.rs, x.client, x.port),
            K::DrActive => ExpKey::DrActive(x.client, x.port, x.vip),
        };
        let per_session = self
            .snap
            .services
            .get(svc as usize)
            .and_then(|s| s.ftp.as_ref())
            .map_or(4, |f| usize::from(f.max_expectations));
        let val = ExpVal {
            svc,
            dest,
            rs: x.rs,
            rport: (x.rport != 0).then_some(x.rport),
            vip: x.vip,
            parent,
            parent_gen: gen,
            expires: self.now + x.timeout_s as u64 * 1_000_000_000,
            client: Addr::default(),
            cport: 0,
        };
        self.expect.insert(key, val, per_session);
        true
    }

    fn handle_ctrl(&mut self, m: Ctrl) {
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

    /// Transmit everything queued.
    pub fn flush_tx(&mut self) {
        for i in 0..self.queues.len() {
            if !self.tx[i].is_empty() {
                let r = self.queues[i].tx_burst(&mut self.tx[i]);
                bump(&self.counters.tx_packets, r.sent as u64);
                bump(&self.counters.tx_bytes, r.bytes);
                if r.dropped > 0 {
                    bump(&self.counters.drops[DropReason::TxFull as usize], r.dropped as u64);
                }
            }
            self.queues[i].flush();
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
        // Incremental expiry sweep.
        let mut budget = SWEEP_PER_POLL.min(self.flows.slots());
        let mut pos = self.sweep_pos;
        while let Some(i) = self.flows.scan_expired(&mut pos, &mut budget, now) {
            self.expire(i, now);
        }
        self.sweep_pos = pos;
        // Pending packets waiting for a neighbour.
        expire_held(&mut self.pending, now, &self.counters, DropReason::NoNeighbor);
        if !self.expect.is_empty() {
            self.sweep_expectations(now, EXPECT_SWEEP_PER_POLL);
        }
        if !self.frags.is_empty() {
            self.frags.sweep(now, EXPECT_SWEEP_PER_POLL);
        }
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

    /// A reload removed local addresses: each stays owned (replies classified by the port range
    /// its ports came from, ARP/ND answered) for as long as a connection could stay idle
    /// (the longest timeout), so the connections on it end normally; then the ones left are
    /// removed and counted (`fnat_laddr_retired`). Every worker applies the same snapshots,
    /// so they agree on the retired set and on which worker owns a reply to it.
    fn retire_laddrs(&mut self, old: &Snapshot, new: &Snapshot) {
        self.retired.retain(|r| !new.laddrs.contains(&r.addr));
        let grace = new.timeouts.iter().copied().max().unwrap_or(0).max(1_000_000_000);
        let until = self.now.saturating_add(grace);
        for &a in old.laddrs.iter().filter(|&a| !new.laddrs.contains(a)) {
            if !self.retired.iter().any(|r| r.addr == a) {
                self.retired.push(Retired { addr: a, range: old.port_range, until });
            }
        }
        if self.retired.len() > MAX_RETIRED {
            self.retired.sort_by_key(|r| (r.until, r.addr));
            let cut = self.retired.len() - MAX_RETIRED;
            self.retired.drain(..cut);
        }
    }

    /// The local port range that names the owner of a reply to `a`: the configured one for a
    /// local address, the one it had for a retired one; `None`: not a local address.
    #[inline(always)]
    fn laddr_range(&self, a: Addr) -> Option<ferrovs_cfg::PortRange> {
        if self.snap.laddrs.contains(&a) {
            return Some(self.snap.port_range);
        }
        if self.retired.is_empty() {
            return None;
        }
        self.retired.iter().find(|r| r.addr == a).map(|r| r.range)
    }

    fn is_retired(&self, a: Addr) -> bool {
        self.retired.iter().any(|r| r.addr == a)
    }

    /// The grace period of retired local addresses ended: their remaining connections go.
    fn sweep_retired(&mut self, now: u64) {
        if !self.retired.iter().any(|r| r.until <= now) {
            return;
        }
        let gone: Vec<Addr> = self.retired.iter().filter(|r| r.until <= now).map(|r| r.addr).collect();
        self.retired.retain(|r| r.until > now);
        for i in 0..self.flows.slots() as u32 {
            let hit =
                self.flows.try_get(i).is_some_and(|c| c.fwd == Forward::Fnat && gone.contains(&self.flows.laddr_of(c)));
            if hit {
                bump(&self.counters.fnat_laddr_retired, 1);
                self.remove_conn(i, false);
            }
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
            if c.live && c.expires <= now {
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
            c.expires = now + t;
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
        let (client, cport, vip, vport) = (c.client, c.cport, c.vip, c.vport);
        if state == crate::flow::tcpstate::TcpState::SynRecv {
            self.half_open = self.half_open.saturating_sub(1);
        }
        if self.sync_on && flags & F_SYNCED == 0 {
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

    /// A frame the engine does not handle: to the kernel through the interface's exception
    /// path if it has one (at most `[engine] kernel_rate` per second), otherwise a drop for `r`.
    fn punt(&mut self, iface: usize, pkt: Q::Buf, r: DropReason) {
        let Some(q) = self.kern_q.get(iface).copied().flatten() else {
            return self.drop_pkt(r);
        };
        if !self.kern_rl.allow(self.now) {
            bump(&self.counters.kernel_limited, 1);
            return self.drop_pkt(r);
        }
        bump(&self.counters.to_kernel, 1);
        self.tx[q].push(pkt);
    }

    /// Classify and forward one packet received on interface `iface`.
    pub fn process(&mut self, iface: usize, pkt: Q::Buf, handed: bool) {
        let r = parse::parse(pkt.data());
        self.process_parsed(iface, pkt, handed, &r, 0, NONE);
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
    /// none) from the burst's first passes.
    #[inline(always)]
    fn process_parsed(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        handed: bool,
        parsed: &Result<Parsed, parse::ParseError>,
        hash: u64,
        hint: u32,
    ) {
        // Fast path: an established TCP/UDP connection of this worker's
        // table. Only the owner of a connection ever creates it, so a hit
        // also settles ownership (no VIP/local classification, no handoff
        // check). Everything else (misses, expired entries, ARP/ND, ICMP)
        // takes the classification path below, as before.
        if let Ok(p) = parsed {
            if p.proto == PROTO_TCP || p.proto == PROTO_UDP {
                // The hint from the burst's second pass is exact while no
                // connection was inserted or removed since (the common
                // case); otherwise it is re-checked against the slot, and
                // a miss is looked up again (an earlier packet of the burst
                // may have created the connection).
                let found = if hint != NONE && self.hint_ver == self.flows.version() {
                    Some(hint)
                } else {
                    let key = flow_key(p);
                    if hint != NONE && self.flows.word_matches(hint, &key) {
                        Some(hint)
                    } else {
                        let hash = if hash != 0 { hash } else { self.flows.hash(&key) };
                        self.flows.lookup_word(&key, hash)
                    }
                };
                if let Some(v) = found {
                    let idx = v >> 1;
                    let dir = if v & 1 == 0 { Dir::In } else { Dir::Out };
                    let d = pkt.data();
                    let ours = d[0] & 1 == 1 || self.if_macs.get(iface).is_some_and(|m| *m == d[0..6]);
                    // A bare SYN on a known tuple may start a new connection (port reuse):
                    // the slow path decides.
                    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                    if ours && !syn && self.flows.get(idx).expires > self.now {
                        let next = self.forward(idx, dir, &mut pkt, p);
                        self.finish(pkt, next);
                        return;
                    }
                }
            }
        }
        // The burst's lookup pass missed and nothing was inserted since: a known miss (floods
        // of unknown flows skip a second, cache-missing probe).
        let known_miss = hash != 0 && hint == NONE && self.hint_ver == self.flows.version();
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
            Ok(p) => *p,
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
            return self.handle_arp(iface, pkt, &p);
        }
        if p.v6 && p.proto == PROTO_ICMPV6 && (p.icmp_type == 135 || p.icmp_type == 136) {
            return self.handle_nd(iface, pkt, &p);
        }
        let snap = &self.snap;
        let dst_vip = snap.vips.contains(&p.dst);
        let is_icmp = p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6;
        let icmp_err = is_icmp && icmp_is_error(p.v6, p.icmp_type);
        let local = snap.local.contains(&p.dst);
        if (local || dst_vip) && is_icmp && icmp_is_echo(p.v6, p.icmp_type) {
            return self.echo_reply(iface, pkt, &p);
        }
        // Full NAT: a reply (or an ICMP error about our packet) to a local address.
        let laddr_range = if dst_vip { None } else { self.laddr_range(p.dst) };
        let to_laddr = laddr_range.is_some() && (p.proto == PROTO_TCP || p.proto == PROTO_UDP || icmp_err);
        if local && !dst_vip && !to_laddr {
            // The engine's own address, not a service (BGP, BFD on it): the kernel's.
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        let inner = if icmp_err {
            match parse::parse_inner(pkt.data(), &p) {
                Ok(i) => Some(i),
                Err(_) => {
                    self.drop_pkt(DropReason::Malformed);
                    return;
                }
            }
        } else {
            None
        };
        // The client this packet belongs to decides the owning worker.
        let client = match (&inner, dst_vip) {
            (Some(i), true) => i.dst,
            (None, true) => p.src,
            (_, false) => p.dst,
        };
        if !handed && self.fabric.workers > 1 {
            let owner = if to_laddr {
                // The local port names the worker that opened the connection.
                let lport = inner.as_ref().map_or(p.dport, |i| i.sport);
                lport_owner(laddr_range.unwrap_or(self.snap.port_range), lport, self.fabric.workers)
            } else {
                owner_of(client, self.fabric.workers)
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                if self.fabric.handoff[owner].push((iface as u8, pkt)).is_err() {
                    self.drop_pkt(DropReason::HandoffFull);
                }
                return;
            }
        }
        if let Some(inner) = inner {
            return self.icmp_error(pkt, &p, &inner, dst_vip);
        }
        if p.proto != PROTO_TCP && p.proto != PROTO_UDP {
            // OSPF, VRRP, router advertisements, echo to the kernel's address, ...
            if dst_vip {
                self.drop_pkt(DropReason::Unsupported);
                return;
            }
            return self.punt(iface, pkt, DropReason::Unsupported);
        }
        let key = flow_key(&p);
        let hash = if hash != 0 { hash } else { self.flows.hash(&key) };
        let found = if known_miss { None } else { self.flows.lookup_hashed(&key, hash) };
        let next = match found {
            Some((idx, dir)) => {
                let c = self.flows.get(idx);
                if dst_vip && dir == Dir::In && self.reusable(idx, &p) {
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
                    let next = self.new_inbound(&mut pkt, &p);
                    return self.finish(pkt, next);
                }
                if c.expires <= self.now {
                    self.expire(idx, self.now);
                    if self.flows.try_get(idx).is_some_and(|c| c.live) {
                        self.forward(idx, dir, &mut pkt, &p)
                    } else if dst_vip {
                        self.new_inbound(&mut pkt, &p)
                    } else {
                        self.new_outbound(&mut pkt, &p)
                    }
                } else {
                    self.forward(idx, dir, &mut pkt, &p)
                }
            }
            None if dst_vip => match self.syn_proxy(iface, &mut pkt, &p) {
                Some(next) => next,
                None => self.new_inbound(&mut pkt, &p),
            },
            None => match self.new_outbound(&mut pkt, &p) {
                // No connection, no expectation, not a service: the kernel's (its own
                // address, or a host it forwards for), if there is an exception path.
                Next::Drop(DropReason::NoFlow) if !to_laddr => return self.punt(iface, pkt, DropReason::NoFlow),
                next => next,
            },
        };
        self.finish(pkt, next);
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
        if p.proto == PROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
            return self.dr_active_data(pkt, p);
        }
        // 1. FTP expectations and session pins.
        let mut chosen: Option<(usize, usize, Addr, u16, u32, u32, bool)> = None; // svc, dest, rs, rport, parent, gen, data
        if p.proto == PROTO_TCP {
            // A port another service owns is that service's: DR passive expectations and TLS
            // pins (which name no port) never take it over; the FTP service's own ports (a
            // second control connection of a TLS client) follow the pin.
            let owner = self.snap.service(p.dst, p.proto, p.dport);
            let mut v = self.take_expected(&ExpKey::Passive(p.src, p.dst, p.dport));
            if v.is_none() && owner.is_none() {
                v = self.take_expected(&ExpKey::PassiveAny(p.src, p.dst));
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
            } else if let Some(pin) = self.expect.get_pin(p.src, p.dst).copied() {
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
            let owned = self.snap.service(p.dst, p.proto, p.dport);
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
        // The client sees the data connection come from VIP:20.
        // Whatever port the real server used (20 with vsftpd; pyftpdlib
        // picks another when not root), the client sees FTP data from VIP:20.
        let vport = 20;
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
        let idx = match self.create_conn(
            v.svc as usize,
            v.dest as usize,
            v.client,
            v.cport,
            v.vip,
            20,
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
        let client_ip = addr_to_ip(p.src);
        if let Some(pt) = st.persist.as_mut() {
            if let Some(d) = pt.lookup(client_ip, self.now, dests) {
                pt.touch(client_ip, self.now);
                return Some(d);
            }
        }
        let key = sched::FlowKey {
            client: client_ip,
            client_port: p.sport,
            vip: addr_to_ip(p.dst),
            vport: p.dport,
            proto: p.proto,
        };
        let d = st.sched.pick(&key, dests, &snap.conn_counts[si])?;
        if let Some(pt) = st.persist.as_mut() {
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
        let fwd = svc.dests[di].forward;
        let proto = svc.proto;
        let mut c = flow::new_conn(proto, fwd, client, cport, vip, vport, rs, rport);
        c.svc = si as u16;
        c.dest = di as u16;
        c.snap_gen = self.snap_gen;
        // Routes towards the real server and back to the client.
        let Some((if_in, nh_in)) = snap.route(rs) else { return Err(DropReason::NoRoute) };
        c.if_in = if_in as u8;
        let mut nh_out = 0;
        if fwd.two_way() {
            let Some((if_out, nh)) = snap.route(client) else { return Err(DropReason::NoRoute) };
            c.if_out = if_out as u8;
            nh_out = nh;
        }
        // Checksum deltas: address words, port word, and (NAT) TTL.
        let v4 = addr_is_v4(client);
        // (No allocation: both forms as 16-byte arrays, IPv4 in the last 4.)
        let (vb, rb) = (addr_v6_bytes(vip), addr_v6_bytes(rs));
        let from = if v4 { 12 } else { 0 };
        let mut a_in = csum::delta(&vb[from..], &rb[from..]);
        let mut a_out = csum::delta(&rb[from..], &vb[from..]);
        let mut p_in = csum::delta16(vport, rport);
        let mut p_out = csum::delta16(rport, vport);
        let mut laddr = 0;
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
            let Some(li) = self.flows.intern_laddr(la) else {
                if !matches!(local, Local::Fixed(..)) {
                    self.lports.release(la, proto, lport);
                }
                return Err(DropReason::TableFull);
            };
            laddr = la;
            c.laddr = li;
            c.lport = lport;
            let (cb, lb) = (addr_v6_bytes(client), addr_v6_bytes(la));
            a_in = csum::add(a_in, csum::delta(&cb[from..], &lb[from..]));
            a_out = csum::add(a_out, csum::delta(&lb[from..], &cb[from..]));
            p_in = csum::add(p_in, csum::delta16(cport, lport));
            p_out = csum::add(p_out, csum::delta16(lport, cport));
        }
        if fwd == Forward::Fnat && v4 != addr_is_v4(rs) {
            // IPv6 <-> IPv4: every packet is translated (`nat64`), its checksums adjusted
            // there; the precomputed deltas do not apply.
            c.flags |= F_XLAT;
            (a_in, a_out, p_in, p_out) = (0, 0, 0, 0);
        }
        let ttl = if v4 { TTL_DELTA } else { 0 };
        c.l3_in = if v4 { csum::add(a_in, ttl) } else { 0 };
        c.l3_out = if v4 { csum::add(a_out, ttl) } else { 0 };
        c.l4_in = csum::add(a_in, p_in);
        c.l4_out = csum::add(a_out, p_out);
        c.expires = self.now + snap.timeouts[c.state as usize];
        let lport = c.lport;
        let idx = match self.flows.insert(c) {
            Ok(i) => i,
            Err(_) => {
                if fwd == Forward::Fnat && !matches!(local, Local::Fixed(..)) {
                    self.lports.release(laddr, proto, lport);
                }
                return Err(DropReason::TableFull);
            }
        };
        let pp = match snap.services[si].dests[di].proxy_v2 {
            Some(v2) if proto == PROTO_TCP && fwd.two_way() => {
                Some(crate::pipeline::proxyproto::for_conn(v2, client, cport, vip, vport))
            }
            _ => None,
        };
        let k = self.flows.cold_mut(idx);
        k.nh_in = nh_in;
        k.nh_out = nh_out;
        if let Some(pp) = pp {
            k.pp = Some(Box::new(pp));
            self.flows.get_mut(idx).flags |= F_PPROTO;
        }
        let counts = &snap.conn_counts[si];
        counts.inc_inactive(self.id, di);
        self.flows.get_mut(idx).flags |= F_COUNTED;
        bump(&self.counters.flows_created, 1);
        bump(&self.counters.flows_active, 1);
        let sc = &self.svc_counters[si];
        bump(&sc.conns, 1);
        bump(&sc.dests[di].conns, 1);
        Ok(idx)
    }

    /// Give control connection `idx` (service `si`, real server `di`) its FTP gateway session:
    /// a new one, or (`resume`: a cluster peer carried it until now) one continuing the
    /// peer's sequence-number translation.
    fn start_ftp_session(&mut self, si: usize, di: usize, idx: u32, resume: Option<(alg::SeqShift, alg::SeqShift)>) {
        let svc = &self.snap.services[si];
        let opts = svc.ftp.clone().unwrap_or_default();
        let c = self.flows.get(idx);
        let mode = match svc.dests[di].forward {
            Forward::Nat => alg::Mode::Nat,
            Forward::Fnat => alg::Mode::Fnat { local: addr_to_ip(self.flows.laddr_of(c)) },
            Forward::Dr | Forward::Tunnel => alg::Mode::Dr,
        };
        let params = alg::SessionParams {
            mode,
            client: std::net::SocketAddr::new(addr_to_ip(c.client), c.cport),
            vip: std::net::SocketAddr::new(addr_to_ip(c.vip), c.vport),
            real: std::net::SocketAddr::new(addr_to_ip(c.rs), c.rport),
            allow_foreign_port_address: opts.allow_foreign_port_address,
            pinhole_timeout: opts.pinhole_timeout as u64 * 1_000_000_000,
        };
        let mut session = match resume {
            None => alg::FtpSession::new(params),
            Some((o, r)) => alg::FtpSession::resume(params, o, r),
        };
        session.set_allow_low_data_ports(opts.allow_low_data_ports);
        session.set_max_payload(self.ftp_max_payload(idx));
        self.flows.cold_mut(idx).alg = Some(Box::new(session));
        self.flows.get_mut(idx).flags |= F_ALG;
    }

    /// Forward a packet of connection `idx` travelling in `dir`.
    #[inline(always)]
    fn forward(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Next {
        // Egress MTU (IPVS `ensure_mtu_is_adequate`), before the packet changes any state: one
        // compare on the fast path; a packet too big becomes an ICMP error to its sender.
        {
            let c = self.flows.get(idx);
            let (egress, over) = match (dir, c.fwd) {
                (Dir::Out, _) => (c.if_out, 0),
                (Dir::In, Forward::Tunnel) => (c.if_in, if addr_is_v4(c.rs) { 20 } else { 40 }),
                (Dir::In, _) => (c.if_in, 0),
            };
            let mtu = self.queues.get(egress as usize).map_or(usize::MAX, |q| q.caps().mtu as usize);
            // FTP control connections are exempt: the gateway cuts every segment it writes
            // to the egress MTU (`ftp_replace`), and their handshake MSS is clamped to it.
            if p.end - p.l3 + over > mtu && c.flags & F_ALG == 0 {
                return self.too_big(dir, pkt, p, mtu.saturating_sub(over));
            }
        }
        let now = self.now;
        let snap_gen = self.snap_gen;
        let id = self.id;
        let len = pkt.len() as u64;
        // State, timeout, counters.
        let wrapped;
        let state_before;
        if self.flows.get(idx).flags & F_SYNCED != 0 {
            self.adopt(idx);
        }
        {
            let snap = &self.snap;
            let c = self.flows.get_mut(idx);
            state_before = c.state;
            if p.proto == PROTO_TCP {
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
                        self.half_open = self.half_open.saturating_sub(1);
                    } else if new == crate::flow::tcpstate::TcpState::SynRecv {
                        self.half_open += 1;
                    }
                    if c.snap_gen == snap_gen && c.flags & F_COUNTED != 0 {
                        let counts = &snap.conn_counts[c.svc as usize];
                        let was = c.flags & F_ACTIVE_COUNTED != 0;
                        let is = new.is_active();
                        if was && !is {
                            counts.dec_active(id, c.dest as usize);
                            counts.inc_inactive(id, c.dest as usize);
                            c.flags &= !F_ACTIVE_COUNTED;
                        } else if !was && is {
                            counts.dec_inactive(id, c.dest as usize);
                            counts.inc_active(id, c.dest as usize);
                            c.flags |= F_ACTIVE_COUNTED;
                        }
                    }
                }
            }
            c.expires = now + self.timeouts[c.state as usize];
            // Packet count (the high halves live in the cold array).
            let n = if dir == Dir::In { &mut c.pkts_in } else { &mut c.pkts_out };
            *n = n.wrapping_add(1);
            wrapped = *n == 0;
            // Service / real-server traffic: worker-local deltas, folded
            // into the shared counters every ~100 ms (see `flush_svc_counters`).
            let slot = self.acc_base.get(c.svc as usize).map_or(u32::MAX, |b| b + c.dest as u32);
            if let Some(a) = self.acc.get_mut(slot as usize) {
                if a.in_packets | a.out_packets == 0 {
                    self.acc_dirty.push((c.svc as u32) << 16 | c.dest as u32);
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
        }
        if wrapped {
            self.flows.carry_pkt(idx, dir == Dir::In);
        }
        // Cluster: a new connection or a state change goes to the peers.
        if self.sync_on && (self.flows.get(idx).state != state_before || self.flows.cold(idx).synced_at == 0) {
            self.sync_conn(idx);
        }
        // FTP gateway on control connections (may resize the payload).
        let c = self.flows.get(idx);
        if c.flags & (F_ALG | F_SYNPROXY | F_PPROTO) == 0 && c.fwd == Forward::Nat {
            // The common case: NAT without the gateway.
            let d = pkt.data_mut();
            let r = match dir {
                Dir::In => rewrite_nat(d, p, true, c.rs, c.rport, c.l3_in, c.l4_in),
                Dir::Out => rewrite_nat(d, p, false, c.vip, c.vport, c.l3_out, c.l4_out),
            };
            if let Err(r) = r {
                return Next::Drop(r);
            }
            return self.l2_write(idx, dir == Dir::In, d);
        }
        if c.flags & (F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) == 0 && c.fwd == Forward::Fnat {
            // Full NAT without the gateway: both ends, deltas precomputed as for NAT.
            let la = self.flows.laddr_of(c);
            let d = pkt.data_mut();
            let r = match dir {
                Dir::In => rewrite_fnat(d, p, la, c.lport, c.rs, c.rport, c.l3_in, c.l4_in),
                Dir::Out => rewrite_fnat(d, p, c.vip, c.vport, c.client, c.cport, c.l3_out, c.l4_out),
            };
            if let Err(r) = r {
                return Next::Drop(r);
            }
            return self.l2_write(idx, dir == Dir::In, d);
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
        let ftp_p;
        let p = if c.flags & F_ALG != 0 {
            match self.ftp_segment(idx, dir, pkt, p) {
                Err(n) => {
                    if matches!(n, Next::Drop(DropReason::AlgHold)) && p.tcp_flags & parse::TCP_FIN != 0 {
                        // Held: its FIN did not go out either.
                        self.redo_tcp_state(idx, dir, state_before, None);
                    }
                    return n;
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
            (Forward::Nat, Dir::In) => {
                let d = pkt.data_mut();
                if let Err(r) = rewrite_nat(d, p, true, c.rs, c.rport, c.l3_in, c.l4_in) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, true, d)
            }
            (Forward::Nat, Dir::Out) => {
                let d = pkt.data_mut();
                if let Err(r) = rewrite_nat(d, p, false, c.vip, c.vport, c.l3_out, c.l4_out) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, false, d)
            }
            (Forward::Fnat, _) if c.flags & F_XLAT != 0 => self.xlat(idx, dir, pkt, p),
            (Forward::Fnat, Dir::In) => {
                let la = self.flows.laddr_of(c);
                let d = pkt.data_mut();
                if let Err(r) = rewrite_fnat(d, p, la, c.lport, c.rs, c.rport, c.l3_in, c.l4_in) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, true, d)
            }
            (Forward::Fnat, Dir::Out) => {
                let d = pkt.data_mut();
                if let Err(r) = rewrite_fnat(d, p, c.vip, c.vport, c.client, c.cport, c.l3_out, c.l4_out) {
                    return Next::Drop(r);
                }
                self.l2_write(idx, false, d)
            }
            (Forward::Dr, _) => self.l2_out(idx, true, pkt),
            (Forward::Tunnel, _) => {
                let iface = c.if_in as usize;
                let rs = c.rs;
                let Some(src) = self.snap.ifaces[iface].source_for(rs) else {
                    return Next::Drop(DropReason::NoRoute);
                };
                if !encap_ipip(pkt, p, src, rs, self.queues[iface].caps().mtu) {
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
            Dir::In => (self.flows.laddr_of(c), c.lport, c.rs, c.rport, c.if_in),
            Dir::Out => (c.vip, c.vport, c.client, c.cport, c.if_out),
        };
        let mtu = self.queues.get(egress as usize).map_or(1500, |q| q.caps().mtu as usize);
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

    /// [`Worker::l2_out`] on the frame's bytes.
    #[inline(always)]
    fn l2_write(&mut self, idx: u32, to_rs: bool, frame: &mut [u8]) -> Next {
        let gen = self.neigh.gen;
        let (c, k) = self.flows.both_mut(idx);
        if c.mac_gen != gen {
            c.mac_in = self.neigh.resolve(k.nh_in).unwrap_or([0; 6]);
            let nat = c.fwd.two_way();
            c.mac_out = if nat { self.neigh.resolve(k.nh_out).unwrap_or([0; 6]) } else { [0; 6] };
            // Valid for this generation only if every MAC was known: learning a new neighbour
            // does not change `gen` (see `NeighCache::learn`), so a flow still missing one
            // looks them up again on its next packet.
            let complete = c.mac_in != [0; 6] && (!nat || c.mac_out != [0; 6]);
            c.mac_gen = if complete { gen } else { gen.wrapping_sub(1) };
        }
        let (iface, mac) = if to_rs { (c.if_in as usize, c.mac_in) } else { (c.if_out as usize, c.mac_out) };
        let src_mac = self.if_macs[iface];
        // Parsed frames hold at least an Ethernet header.
        let Some(Ok::<&mut [u8; 12], _>(eth)) = frame.get_mut(..12).map(|s| s.try_into()) else {
            return Next::Drop(DropReason::Malformed);
        };
        eth[6..12].copy_from_slice(&src_mac);
        if mac != [0; 6] {
            eth[0..6].copy_from_slice(&mac);
            return Next::Tx(iface);
        }
        // Force a re-resolve on the next packet.
        self.flows.get_mut(idx).mac_gen = gen.wrapping_sub(1);
        let k = self.flows.cold(idx);
        let nh = if to_rs { k.nh_in } else { k.nh_out };
        self.solicit(iface, nh);
        Next::Park(iface, nh)
    }

    /// Send an ARP request / neighbour solicitation for `nh` (rate limited).
    fn solicit(&mut self, iface: usize, nh: Addr) {
        if !self.neigh.should_ask(nh, self.now) {
            return;
        }
        let Some(src) = self.snap.ifaces[iface].source_for(nh) else { return };
        let mac = self.snap.ifaces[iface].mac;
        let Some(mut b) = self.queues[iface].alloc() else {
            self.drop_pkt(DropReason::NoBuffer);
            return;
        };
        if !b.set_len(86) {
            return;
        }
        let n = if addr_is_v4(nh) {
            neigh::build_arp(b.data_mut(), 1, mac, src, None, nh)
        } else {
            let (dst, dmac) = neigh::solicited_node(nh);
            neigh::build_nd(b.data_mut(), 135, mac, dmac, addr_v6_bytes(src), dst, addr_v6_bytes(nh), 0)
        };
        b.set_len(n);
        self.tx[iface].push(b);
    }

    fn release_pending(&mut self, a: Addr, mac: [u8; 6]) {
        let mut k = 0;
        while k < self.pending.len() {
            if self.pending[k].key == a {
                let mut p = self.pending.swap_remove(k);
                p.buf.data_mut()[0..6].copy_from_slice(&mac);
                self.tx[p.iface as usize].push(p.buf);
            } else {
                k += 1;
            }
        }
    }

    fn count_neigh_evictions(&mut self) {
        let n = self.neigh.take_evicted();
        if n > 0 {
            bump(&self.counters.neigh_evicted, n);
            if self.neigh_log.allow(self.now) {
                let suppressed = self.neigh_log.take_suppressed();
                tracing::warn!(
                    worker = self.id,
                    max = self.neigh.max(),
                    suppressed,
                    "neighbour table full: evicted the stalest entry"
                );
            }
        }
    }

    /// May a neighbour advertisement / solicitation received on `iface`
    /// teach us `a`? The same on-link rule as ARP (`Snapshot::on_link`),
    /// plus link-local fe80::/10, which is on-link on every link (RFC 4861
    /// section 5.2) and what IPv6 routers answer from.
    fn nd_may_learn(&self, iface: usize, a: Addr) -> bool {
        self.snap.on_link(iface, a) || (!addr_is_v4(a) && (a >> 118) == 0xfe80 >> 6)
    }

    /// Learn `a` at `mac` from an ARP or ND packet received here (and tell the other workers).
    /// When the table is full, a neighbour nobody asked for evicts an entry only within
    /// [`neigh::EVICT_PER_SEC`]; past it, it is not learnt (`neigh_limited`).
    fn learn_neighbor(&mut self, a: Addr, mac: [u8; 6]) {
        let (now, rl) = (self.now, &mut self.neigh_evict_rl);
        let learnt = self.neigh.learn_with(a, mac, Some(now), || rl.allow(now));
        if learnt == neigh::Learnt::Limited {
            bump(&self.counters.neigh_limited, 1);
            return;
        }
        self.count_neigh_evictions();
        if learnt == neigh::Learnt::Changed {
            self.release_pending(a, mac);
            let id = self.id;
            for (w, q) in self.fabric.ctrl.iter().enumerate() {
                if w != id {
                    let _ = q.push(Ctrl::Neigh(a, mac));
                }
            }
        }
    }

    fn handle_arp(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        let d = pkt.data();
        let a = &d[p.l3..p.l3 + 28];
        if a[0..2] != [0, 1] || a[2..4] != [0x08, 0] || a[4] != 6 || a[5] != 4 {
            self.drop_pkt(DropReason::Unsupported);
            return;
        }
        let op = u16::from_be_bytes([a[6], a[7]]);
        let mut smac = [0u8; 6];
        smac.copy_from_slice(&a[8..14]);
        let sip = parse::v4_to_addr([a[14], a[15], a[16], a[17]]);
        let tip = parse::v4_to_addr([a[24], a[25], a[26], a[27]]);
        let for_us = self.snap.local.contains(&tip) || self.snap.vips.contains(&tip) || self.is_retired(tip);
        // Learn senders on our subnets (requests to us and replies).
        if sip != parse::v4_to_addr([0; 4]) && self.snap.on_link(iface, sip) && (for_us || op == 2) {
            self.learn_neighbor(sip, smac);
        }
        if op == 1 && for_us {
            let mac = self.snap.ifaces[iface].mac;
            let n = {
                let buf = pkt.data_mut();
                let l3 = p.l3;
                // Turn the request into a reply in place.
                buf[0..6].copy_from_slice(&smac);
                buf[6..12].copy_from_slice(&mac);
                buf[l3 + 6..l3 + 8].copy_from_slice(&2u16.to_be_bytes());
                buf[l3 + 18..l3 + 24].copy_from_slice(&smac);
                buf[l3 + 24..l3 + 28].copy_from_slice(&addr_v4_bytes(sip));
                buf[l3 + 8..l3 + 14].copy_from_slice(&mac);
                buf[l3 + 14..l3 + 18].copy_from_slice(&addr_v4_bytes(tip));
                l3 + 28
            };
            pkt.set_len(n.max(60));
            bump(&self.counters.arp_replies, 1);
            self.tx[iface].push(pkt);
            return;
        }
        // Requests for other addresses and replies: the kernel's too, if it has an exception path.
        self.punt(iface, pkt, DropReason::NotForUs);
    }

    fn handle_nd(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        let d = pkt.data();
        let m = &d[p.l4..p.end];
        if m.len() < 24 || d[p.l3 + 7] != 255 {
            self.drop_pkt(DropReason::Malformed);
            return;
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&m[8..24]);
        let target = parse::v6_to_addr(t);
        let opts = &m[24..];
        if p.icmp_type == 136 {
            if let Some(mac) = neigh::nd_lladdr(opts, 2) {
                if self.nd_may_learn(iface, target) {
                    self.learn_neighbor(target, mac);
                }
            }
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        // Solicitation.
        let for_us = self.snap.local.contains(&target) || self.snap.vips.contains(&target) || self.is_retired(target);
        let smac = neigh::nd_lladdr(opts, 1);
        if p.src != 0 {
            if let Some(mac) = smac {
                if for_us && self.nd_may_learn(iface, p.src) {
                    self.learn_neighbor(p.src, mac);
                }
            }
        }
        if !for_us {
            return self.punt(iface, pkt, DropReason::NotForUs);
        }
        let mac = self.snap.ifaces[iface].mac;
        let mut src6 = [0u8; 16];
        src6.copy_from_slice(&d[p.l3 + 8..p.l3 + 24]);
        let unspecified = p.src == 0;
        let (dst, dmac) = if unspecified {
            ([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1])
        } else {
            (
                src6,
                smac.unwrap_or_else(|| {
                    let mut s = [0u8; 6];
                    s.copy_from_slice(&d[6..12]);
                    s
                }),
            )
        };
        // Flags: solicited (unless unspecified source) + override.
        let flags = if unspecified { 0x20 } else { 0x60 };
        if !pkt.set_len(86) {
            self.drop_pkt(DropReason::NoBuffer);
            return;
        }
        let n = neigh::build_nd(pkt.data_mut(), 136, mac, dmac, t, dst, t, flags);
        pkt.set_len(n);
        bump(&self.counters.nd_replies, 1);
        self.tx[iface].push(pkt);
    }

    /// An IP fragment (see [`crate::flow::frag`]): the first one goes through the ordinary
    /// connection path (it carries the ports); later ones follow it by datagram, or wait for it.
    fn fragment(&mut self, iface: usize, mut pkt: Q::Buf, handed: bool) {
        let f = match frag::parse_fragment(pkt.data()) {
            Ok(f) => f,
            Err(e) => {
                self.drop_pkt(match e {
                    parse::ParseError::Unsupported => DropReason::Fragment,
                    _ => DropReason::Malformed,
                });
                return;
            }
        };
        let dmac = &pkt.data()[0..6];
        if !(dmac[0] & 1 == 1 || self.snap.ifaces.get(iface).is_some_and(|i| i.mac == dmac)) {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
            self.drop_pkt(DropReason::Fragment);
            return;
        }
        let dst_vip = self.snap.vips.contains(&f.dst);
        let client = if dst_vip { f.src } else { f.dst };
        if !handed && self.fabric.workers > 1 {
            let range = if dst_vip { None } else { self.laddr_range(f.dst) };
            let owner = if let Some(range) = range {
                // Full NAT reply: the first fragment's local port names the owner; later
                // fragments (no ports) follow where their first went.
                let key = f.key();
                self.frag_steer.retain(|s| s.2 > self.now);
                if f.offset == 0 {
                    let Some(p) = f.first(pkt.data()) else {
                        self.drop_pkt(DropReason::FragTiny);
                        return;
                    };
                    let owner = lport_owner(range, p.dport, self.fabric.workers);
                    if owner != self.id {
                        if self.frag_steer.len() >= frag::MAX_FRAG_HELD {
                            self.frag_steer.remove(0);
                        }
                        self.frag_steer.push((key, owner as u8, self.now + frag::FRAG_HOLD_NS));
                        // Later fragments that came first go along.
                        let mut k = 0;
                        while k < self.frag_held.len() {
                            if self.frag_held[k].key == key {
                                let h = self.frag_held.swap_remove(k);
                                bump(&self.counters.handoff_out, 1);
                                if self.fabric.handoff[owner].push((h.iface, h.buf)).is_err() {
                                    self.drop_pkt(DropReason::HandoffFull);
                                }
                            } else {
                                k += 1;
                            }
                        }
                    }
                    owner
                } else {
                    match self.frag_steer.iter().find(|s| s.0 == key) {
                        Some(s) => s.1 as usize,
                        // Not seen its first yet: the ordinary path holds it here (or forwards
                        // it, if this worker had the first).
                        None => self.id,
                    }
                }
            } else {
                owner_of(client, self.fabric.workers)
            };
            if owner != self.id {
                bump(&self.counters.handoff_out, 1);
                if self.fabric.handoff[owner].push((iface as u8, pkt)).is_err() {
                    self.drop_pkt(DropReason::HandoffFull);
                }
                return;
            }
        }
        let key = f.key();
        if f.offset == 0 {
            let Some(p) = f.first(pkt.data()) else {
                self.drop_pkt(DropReason::FragTiny);
                return;
            };
            let fkey = flow_key(&p);
            let next = match self.flows.lookup(&fkey) {
                // The FTP gateway works on whole segments: a fragmented control segment
                // (never seen from real stacks, which use path MTU discovery) is refused.
                Some((idx, _)) if self.flows.get(idx).flags & F_ALG != 0 => Next::Drop(DropReason::Fragment),
                // Across families a fragment would need an IPv6 fragment header: not done.
                Some((idx, _)) if self.flows.get(idx).flags & F_XLAT != 0 => Next::Drop(DropReason::XlatUnsupported),
                Some((idx, dir)) if self.flows.get(idx).expires > self.now => self.forward(idx, dir, &mut pkt, &p),
                _ if dst_vip => self.new_inbound(&mut pkt, &p),
                _ => self.new_outbound(&mut pkt, &p),
            };
            if !matches!(next, Next::Drop(_)) {
                if let Some((idx, dir)) = self.flows.lookup(&fkey) {
                    let flow = frag::FragFlow { conn: idx, gen: self.flows.get(idx).gen, inbound: dir == Dir::In };
                    if self.frags.first(key, flow, f.range(), self.now) == FragVerdict::Overlap {
                        self.drop_pkt(DropReason::FragOverlap);
                        return;
                    }
                }
            }
            self.finish(pkt, next);
            // Fragments that came first now have their datagram. Each is taken out and
            // handled once: if the first fragment was dropped they are held again (until
            // they time out); re-scanning would take them again, for ever.
            let mut ready = Vec::new();
            let mut k = 0;
            while k < self.frag_held.len() {
                if self.frag_held[k].key == key {
                    ready.push(self.frag_held.swap_remove(k));
                } else {
                    k += 1;
                }
            }
            for h in ready {
                self.fragment(h.iface as usize, h.buf, true);
            }
            return;
        }
        // RFC 1858: a TCP fragment at offset 8 can rewrite the flags of the first one.
        if f.proto == PROTO_TCP && f.offset == 8 {
            self.drop_pkt(DropReason::FragTiny);
            return;
        }
        match self.frags.later(&key, f.range(), self.now) {
            FragVerdict::Forward(fl) => {
                let next = self.forward_fragment(fl, &mut pkt, &f);
                self.finish(pkt, next);
            }
            FragVerdict::Overlap => self.drop_pkt(DropReason::FragOverlap),
            FragVerdict::Unknown => {
                if self.frag_held.len() >= frag::MAX_FRAG_HELD {
                    self.drop_pkt(DropReason::FragHeldFull);
                    return;
                }
                let deadline = self.now + frag::FRAG_HOLD_NS;
                self.frag_held.push(Held { key, iface: iface as u8, buf: pkt, deadline });
            }
        }
    }

    /// A later fragment of a datagram whose first fragment went out on connection `fl`: the
    /// same IP-level translation (NAT: addresses and TTL; the ports and the L4 checksum live in
    /// the first fragment), DR/tunnel as any packet.
    fn forward_fragment(&mut self, fl: frag::FragFlow, pkt: &mut Q::Buf, f: &frag::Fragment) -> Next {
        let Some(c) = self.flows.try_get(fl.conn).filter(|c| c.gen == fl.gen) else {
            return Next::Drop(DropReason::FragTimeout);
        };
        if c.flags & F_XLAT != 0 {
            return Next::Drop(DropReason::XlatUnsupported);
        }
        let inbound = fl.inbound;
        let egress = if inbound { c.if_in } else { c.if_out };
        let over = if c.fwd == Forward::Tunnel {
            if addr_is_v4(c.rs) {
                20
            } else {
                40
            }
        } else {
            0
        };
        let mtu = self.queues.get(egress as usize).map_or(usize::MAX, |q| q.caps().mtu as usize);
        if f.end - f.l3 + over > mtu {
            // Not the first fragment: no ICMP error (RFC 1122 3.2.2).
            return Next::Drop(DropReason::TooBig);
        }
        match c.fwd {
            Forward::Nat => {
                let (addr, l3d) = if inbound { (c.rs, c.l3_in) } else { (c.vip, c.l3_out) };
                match rewrite_ip(pkt.data_mut(), f.l3, f.v6, inbound, addr, l3d) {
                    Ok(()) => {}
                    Err(r) => return Next::Drop(r),
                }
            }
            Forward::Fnat => {
                let (src, dst, l3d) =
                    if inbound { (self.flows.laddr_of(c), c.rs, c.l3_in) } else { (c.vip, c.client, c.l3_out) };
                if let Err(r) = rewrite_ip2(pkt.data_mut(), f.l3, f.v6, src, dst, l3d) {
                    return Next::Drop(r);
                }
            }
            Forward::Dr => {}
            Forward::Tunnel => {
                let (iface, rs) = (c.if_in as usize, c.rs);
                let Some(src) = self.snap.ifaces[iface].source_for(rs) else {
                    return Next::Drop(DropReason::NoRoute);
                };
                if !encap_ipip(pkt, &f.as_parsed(), src, rs, self.queues[iface].caps().mtu) {
                    return Next::Drop(DropReason::TooBig);
                }
            }
        }
        self.l2_out(fl.conn, inbound, pkt)
    }

    /// A packet of a connection that does not fit the egress MTU (`mtu`, what the next hop
    /// takes): turned into ICMP "fragmentation needed" / ICMPv6 "packet too big" back to its
    /// sender when [`icmpgen::may_answer`] allows and the worker's token bucket has a token;
    /// otherwise a `too_big` drop.
    ///
    /// The error's source is what the sender talked to: the VIP for a client's packet (Linux's
    /// `icmp_send` answers from the packet's local destination; IPVS calls it on the packet
    /// before NAT). For a real server's NAT reply (a client-side MTU smaller than the real
    /// server's), the error goes to the real server from the balancer's own address on that
    /// side: in Linux the reply is routed by `ip_forward`, which checks the MTU before IPVS's
    /// SNAT and answers from the router's address, so the real server learns the path MTU
    /// towards the client.
    #[inline(never)]
    fn too_big(&mut self, dir: Dir, pkt: &mut Q::Buf, p: &Parsed, mtu: usize) -> Next {
        if !crate::pipeline::icmpgen::may_answer(pkt.data(), p) {
            return Next::Drop(DropReason::TooBig);
        }
        let Some((iface, nh)) = self.snap.route(p.src) else {
            return Next::Drop(DropReason::TooBig);
        };
        let src = match dir {
            Dir::In => Some(p.dst),
            Dir::Out => self.snap.ifaces.get(iface).and_then(|i| i.source_for(p.src)),
        };
        let Some(src) = src else {
            return Next::Drop(DropReason::TooBig);
        };
        if self.icmp_cfg.0 == 0 || !self.icmp_rl.allow(self.now) {
            bump(&self.counters.icmp_ratelimited, 1);
            return Next::Drop(DropReason::TooBig);
        }
        // Back to the neighbour the packet came from when the route's next hop is unknown.
        let d = pkt.data();
        let dmac = self.neigh.get(nh).unwrap_or_else(|| d[6..12].try_into().unwrap_or([0; 6]));
        let smac = self.if_macs.get(iface).copied().unwrap_or([0; 6]);
        if !crate::pipeline::icmpgen::build(pkt, p, src, mtu.min(u32::MAX as usize) as u32, smac, dmac) {
            return Next::Drop(DropReason::TooBig);
        }
        bump(&self.counters.icmp_sent, 1);
        Next::Tx(iface)
    }

    /// Answer an echo request to a VIP or an interface address.
    fn echo_reply(&mut self, iface: usize, mut pkt: Q::Buf, p: &Parsed) {
        let req = if p.v6 { 128 } else { 8 };
        if p.icmp_type != req {
            self.drop_pkt(DropReason::NotForUs);
            return;
        }
        let d = pkt.data_mut();
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&d[6..12]);
        d.copy_within(0..6, 6);
        d[0..6].copy_from_slice(&mac);
        let l3 = p.l3;
        if p.v6 {
            let mut s = [0u8; 16];
            s.copy_from_slice(&d[l3 + 8..l3 + 24]);
            d.copy_within(l3 + 24..l3 + 40, l3 + 8);
            d[l3 + 24..l3 + 40].copy_from_slice(&s);
            d[l3 + 7] = 64;
            d[p.l4] = 129;
        } else {
            let mut s = [0u8; 4];
            s.copy_from_slice(&d[l3 + 12..l3 + 16]);
            d.copy_within(l3 + 16..l3 + 20, l3 + 12);
            d[l3 + 16..l3 + 20].copy_from_slice(&s);
            d[l3 + 8] = 64;
            d[p.l4] = 0;
            fix_ipv4_csum(d, l3);
        }
        fix_l4_csum(d, p);
        bump(&self.counters.icmp_echo_replies, 1);
        self.tx[iface].push(pkt);
    }

    /// Translate an ICMP error about a tracked connection.
    fn icmp_error(&mut self, mut pkt: Q::Buf, p: &Parsed, inner: &parse::Inner, to_vip: bool) {
        // The quoted packet travelled the other way: reverse it to find
        // the connection key as this side sees it.
        let key =
            FlowKey { src: inner.dst, dst: inner.src, sport: inner.dport, dport: inner.sport, proto: inner.proto };
        let Some((idx, dir)) = self.flows.lookup(&key) else {
            self.drop_pkt(DropReason::NoFlow);
            return;
        };
        let c = self.flows.get(idx);
        let (fwd, rs, rport, vip, vport) = (c.fwd, c.rs, c.rport, c.vip, c.vport);
        let (client, cport, la, lport) = (c.client, c.cport, self.flows.laddr_of(c), c.lport);
        if c.flags & F_XLAT != 0 {
            // Across families: the error is rebuilt in the other family (RFC 7915), reported
            // by the VIP to the client or by the local address to the real server.
            let r = match (dir, to_vip) {
                (Dir::Out, false) => crate::pipeline::nat64::translate_icmp_error(
                    &mut pkt,
                    p,
                    inner,
                    vip,
                    client,
                    (client, cport),
                    (vip, vport),
                ),
                (Dir::In, true) => {
                    crate::pipeline::nat64::translate_icmp_error(&mut pkt, p, inner, la, rs, (rs, rport), (la, lport))
                }
                _ => Err(DropReason::NoFlow),
            };
            if let Err(r) = r {
                self.drop_pkt(r);
                return;
            }
            bump(&self.counters.icmp_translated, 1);
            let next = self.l2_out(idx, dir == Dir::In, &mut pkt);
            return self.finish(pkt, next);
        }
        let d = pkt.data_mut();
        let v6 = p.v6;
        match (dir, to_vip) {
            (Dir::In, true) if fwd == Forward::Fnat => {
                // From the client side about our VIP:vport -> client:cport: as the real server
                // sees it, RS:rport -> LADDR:lport, reported by the local address.
                set_addr(d, p.l3, v6, true, la);
                set_addr(d, p.l3, v6, false, rs);
                set_addr(d, inner.l3, v6, true, rs);
                set_addr(d, inner.l3, v6, false, la);
                d[inner.l4..inner.l4 + 2].copy_from_slice(&rport.to_be_bytes());
                d[inner.l4 + 2..inner.l4 + 4].copy_from_slice(&lport.to_be_bytes());
            }
            (Dir::Out, false) if fwd == Forward::Fnat => {
                // From the real-server side about our LADDR:lport -> RS:rport: the client sees
                // its own VIP-bound packet quoted (a router's address stays the reporter).
                let outer_src =
                    if v6 { parse::v6_to_addr(d[p.l3 + 8..p.l3 + 24].try_into().unwrap_or([0; 16])) } else { p.src };
                if outer_src == rs {
                    set_addr(d, p.l3, v6, true, vip);
                }
                set_addr(d, p.l3, v6, false, client);
                set_addr(d, inner.l3, v6, true, client);
                set_addr(d, inner.l3, v6, false, vip);
                d[inner.l4..inner.l4 + 2].copy_from_slice(&cport.to_be_bytes());
                d[inner.l4 + 2..inner.l4 + 4].copy_from_slice(&vport.to_be_bytes());
            }
            (Dir::In, true) => {
                // Error from the client side about our VIP->client packet.
                if fwd == Forward::Nat {
                    set_addr(d, p.l3, v6, false, rs); // outer dst
                    set_addr(d, inner.l3, v6, true, rs); // quoted src
                    d[inner.l4..inner.l4 + 2].copy_from_slice(&rport.to_be_bytes());
                }
            }
            (Dir::Out, false) => {
                // Error from the real-server side about client->RS packet.
                let outer_src =
                    if v6 { parse::v6_to_addr(d[p.l3 + 8..p.l3 + 24].try_into().unwrap_or([0; 16])) } else { p.src };
                if outer_src == rs {
                    set_addr(d, p.l3, v6, true, vip);
                }
                set_addr(d, inner.l3, v6, false, vip); // quoted dst
                d[inner.l4 + 2..inner.l4 + 4].copy_from_slice(&vport.to_be_bytes());
            }
            _ => {
                self.drop_pkt(DropReason::NoFlow);
                return;
            }
        }
        // Quoted IPv4 header checksum; quoted L4 checksums are left as they
        // are (the quote is usually truncated, receivers do not verify it).
        if !v6 {
            let ihl = (d[inner.l3] & 0xf) as usize * 4;
            if inner.l3 + ihl <= p.end {
                fix_ipv4_csum(d, inner.l3);
            }
            if d[p.l3 + 8] <= 1 {
                self.drop_pkt(DropReason::TtlExceeded);
                return;
            }
            d[p.l3 + 8] -= 1;
            fix_ipv4_csum(d, p.l3);
        }
        fix_l4_csum(d, p);
        bump(&self.counters.icmp_translated, 1);
        let next = self.l2_out(idx, dir == Dir::In, &mut pkt);
        self.finish(pkt, next);
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

    /// The real server answered a proxied connection's SYN: its held client packets go now.
    fn release_proxied(&mut self, idx: u32) {
        let gen = self.flows.get(idx).gen;
        let mut k = 0;
        while k < self.proxy_held.len() {
            if self.proxy_held[k].key == (idx, gen) {
                let mut h = self.proxy_held.remove(k);
                let next = match parse::parse(h.buf.data()) {
                    Ok(p) if self.flows.try_get(idx).is_some_and(|c| c.gen == gen) => {
                        self.forward(idx, Dir::In, &mut h.buf, &p)
                    }
                    _ => Next::Drop(DropReason::ProxyWait),
                };
                self.finish(h.buf, next);
            } else {
                k += 1;
            }
        }
    }

    /// SYN proxy for a packet to a VIP with no connection: answers a SYN with a cookie, or
    /// opens the connection for an ACK carrying a valid one. `None`: not for the proxy (the
    /// ordinary path takes it).
    fn syn_proxy(&mut self, iface: usize, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        use ferrovs_cfg::SynProxy;
        if p.proto != PROTO_TCP {
            return None;
        }
        // Not a SYN, and no cookie went out lately: neither a handshake's last segment nor a
        // verifying reset can carry one (the checks below would all let it go). Decided
        // before the service lookup and the real-server scans, so a flood of stray segments
        // stays cheap.
        let recent = self.last_cookie != 0 && self.now.saturating_sub(self.last_cookie) <= 2 << 36;
        if p.tcp_flags & TCP_SYN == 0 && !recent {
            return None;
        }
        let si = self.snap.service(p.dst, p.proto, p.dport)?;
        let svc = &self.snap.services[si];
        let mode = svc.syn_proxy;
        if mode == SynProxy::Off {
            return None;
        }
        // PROXY protocol shifts the client's sequence space itself: not combined with the
        // SYN proxy's splice (documented with the key).
        // Nor with a translated service (its handshake with the real server would have to be
        // built in the other family).
        if svc.dests.is_empty()
            || svc.dests.iter().any(|d| d.proxy_v2.is_some() || addr_is_v4(d.addr) != addr_is_v4(p.dst))
        {
            return None;
        }
        let engaged = match mode {
            SynProxy::On => true,
            SynProxy::Auto => self.half_open >= self.snap.config.engine.syn_proxy_threshold,
            SynProxy::Off => false,
        };
        let hs = Handshake { client: p.src, vip: p.dst, cport: p.sport, vport: p.dport, isn: 0 };
        let (seq, ack) = {
            let t = &pkt.data()[p.l4..];
            (u32::from_be_bytes([t[4], t[5], t[6], t[7]]), u32::from_be_bytes([t[8], t[9], t[10], t[11]]))
        };
        // In DR and tunnel mode the real server answers the client directly, with its own
        // sequence numbers, which the balancer never sees: no handshake can be spliced.
        if svc.dests.iter().any(|d| !d.forward.two_way()) {
            return self.syn_verify(iface, pkt, p, &hs, seq, mode != SynProxy::Off && engaged);
        }
        if p.tcp_flags & parse::TCP_RST != 0 {
            return None;
        }
        if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // A data connection an FTP session announced on a service port is not proxied.
            if !engaged || self.expect.get(&ExpKey::Passive(p.src, p.dst, p.dport)).is_some() {
                return None;
            }
            let mss = synproxy::mss_option(&pkt.data()[p.l4..p.end]).unwrap_or(536);
            let cookie = self.cookies.make(self.now, &Handshake { isn: seq, ..hs }, mss);
            let ours = (self.queues[iface].caps().mtu as u16).saturating_sub(if p.v6 { 60 } else { 40 }).max(536);
            // The answer carries an MSS option: room for 24 bytes of TCP header.
            if pkt.len() < p.l4 + 24 && !pkt.set_len(p.l4 + 24) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
            let d = pkt.data_mut();
            synproxy::turn_around(d, p);
            let end = synproxy::rebuild_tcp(d, p, TCP_SYN | TCP_ACK, cookie, seq.wrapping_add(1), Some(ours), 65535)?;
            synproxy::finish_tcp(d, p, end);
            if !pkt.set_len(end) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
            self.last_cookie = self.now;
            bump(&self.counters.cookies_sent, 1);
            return Some(Next::Tx(iface));
        }
        // Only the handshake's last segment can carry a cookie: a plain ACK (with or without
        // data), no SYN, FIN or RST.
        // (An ACK for no connection is a cookie only if cookies went out lately, checked
        // above; else it is an ordinary stray, counted as no_flow by the ordinary path.)
        if p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_FIN) != TCP_ACK {
            return None;
        }
        let isn = seq.wrapping_sub(1);
        let cookie = ack.wrapping_sub(1);
        let Some(mss) = self.cookies.check(self.now, &Handshake { isn, ..hs }, cookie) else {
            bump(&self.counters.cookies_failed, 1);
            return Some(Next::Drop(DropReason::BadCookie));
        };
        bump(&self.counters.cookies_validated, 1);
        // The handshake is proven: the ACK becomes our SYN to the real server (its data, if any,
        // is dropped: the client retransmits it once the real server acknowledges).
        {
            if pkt.len() < p.l4 + 24 && !pkt.set_len(p.l4 + 24) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
            let d = pkt.data_mut();
            let end = synproxy::rebuild_tcp(d, p, TCP_SYN, isn, 0, Some(mss), 29200)?;
            synproxy::finish_tcp(d, p, end);
            if !pkt.set_len(end) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
        }
        let Ok(p2) = parse::parse(pkt.data()) else { return Some(Next::Drop(DropReason::Malformed)) };
        let next = self.new_inbound(pkt, &p2);
        if !matches!(next, Next::Drop(_)) {
            if let Some((idx, _)) = self.flows.lookup(&flow_key(&p2)) {
                self.flows.get_mut(idx).flags |= F_SYNPROXY;
                self.flows.cold_mut(idx).proxy =
                    Some(Box::new(synproxy::Proxied { isn, cookie, delta: 0, established: false }));
            }
        }
        Some(next)
    }

    /// The SYN proxy of DR and tunnel services. The real server answers the client itself, so
    /// the balancer verifies the client's address instead: during a flood a SYN from an
    /// unverified address is answered with a SYN-ACK whose acknowledgement number is a cookie.
    /// A real client's stack answers that unacceptable acknowledgement with a reset carrying
    /// it as sequence number (RFC 793, SYN-SENT), which verifies the address for
    /// [`VERIFIED_NS`]; the client's SYN retransmission (about a second later) then goes to
    /// the real server as usual. Spoofed sources never answer and cost no state. The price: a
    /// new client's first connection during a flood waits one SYN retransmission.
    fn syn_verify(
        &mut self,
        iface: usize,
        pkt: &mut Q::Buf,
        p: &Parsed,
        hs: &Handshake,
        seq: u32,
        engaged: bool,
    ) -> Option<Next> {
        if p.tcp_flags & (TCP_SYN | TCP_ACK | parse::TCP_RST) == TCP_SYN {
            if !engaged || self.is_verified(p.src) {
                return None;
            }
            let cookie = self.cookies.make(self.now, hs, 0);
            if cookie == seq.wrapping_add(1) {
                return None; // an acceptable ack by chance (2^-32): let it through
            }
            if pkt.len() < p.l4 + 20 && !pkt.set_len(p.l4 + 20) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
            let d = pkt.data_mut();
            synproxy::turn_around(d, p);
            let end = synproxy::rebuild_tcp(d, p, TCP_SYN | TCP_ACK, cookie, cookie, None, 0)?;
            synproxy::finish_tcp(d, p, end);
            if !pkt.set_len(end) {
                return Some(Next::Drop(DropReason::NoBuffer));
            }
            self.last_cookie = self.now;
            bump(&self.counters.cookies_sent, 1);
            return Some(Next::Tx(iface));
        }
        let recent = self.last_cookie != 0 && self.now.saturating_sub(self.last_cookie) <= 2 << 36;
        if p.tcp_flags & parse::TCP_RST != 0 && recent && self.cookies.check(self.now, hs, seq).is_some() {
            self.verify(p.src);
            bump(&self.counters.cookies_validated, 1);
            return Some(Next::Drop(DropReason::SynVerified));
        }
        None
    }

    fn verified_slot(a: Addr) -> usize {
        let x = (a as u64) ^ ((a >> 64) as u64);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - VERIFIED_BITS)) as usize
    }

    fn is_verified(&self, a: Addr) -> bool {
        self.verified.get(Self::verified_slot(a)).is_some_and(|&(x, until)| x == a && until > self.now)
    }

    fn verify(&mut self, a: Addr) {
        if self.verified.is_empty() {
            self.verified = vec![(0, 0); 1 << VERIFIED_BITS];
        }
        let until = self.now + VERIFIED_NS;
        self.verified[Self::verified_slot(a)] = (a, until);
    }

    /// A segment of a SYN-proxied connection: the real server's handshake, then the sequence
    /// offset on the client's acknowledgements (the server's sequence numbers are shifted in
    /// [`Worker::forward_rewrite`], after the FTP gateway). `None`: go on forwarding.
    fn proxy_segment(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Option<Next> {
        let px = *self.flows.cold(idx).proxy.as_deref()?;
        let l4 = p.l4;
        let field = |d: &[u8], off: usize| u32::from_be_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
        match (dir, px.established) {
            (Dir::In, false) => {
                // Our own SYN (made from the client's ACK) goes; the client's data waits.
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    None
                } else {
                    Some(Next::ProxyHold(idx))
                }
            }
            (Dir::Out, false) => {
                let d = pkt.data_mut();
                let rs_seq = field(d, l4 + 4);
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                    // Answer the real server ourselves and start translating.
                    let delta = px.cookie.wrapping_sub(rs_seq);
                    synproxy::turn_around(d, p);
                    let end = synproxy::rebuild_tcp(
                        d,
                        p,
                        TCP_ACK,
                        px.isn.wrapping_add(1),
                        rs_seq.wrapping_add(1),
                        None,
                        29200,
                    )?;
                    synproxy::finish_tcp(d, p, end);
                    if !pkt.set_len(end) {
                        return Some(Next::Drop(DropReason::NoBuffer));
                    }
                    if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
                        x.delta = delta;
                        x.established = true;
                    }
                    self.proxy_release = Some(idx);
                    return Some(self.l2_write(idx, true, pkt.data_mut()));
                }
                if p.tcp_flags & parse::TCP_RST != 0 {
                    // Refused: the client gets the reset in its own sequence space.
                    if let Some(x) = self.flows.cold_mut(idx).proxy.as_deref_mut() {
                        x.delta = px.cookie.wrapping_add(1).wrapping_sub(rs_seq);
                        x.established = true;
                    }
                    return None;
                }
                Some(Next::Drop(DropReason::ProxyWait))
            }
            (Dir::In, true) => {
                if p.tcp_flags & TCP_ACK != 0 {
                    let d = pkt.data_mut();
                    let c = synproxy::shift_field(d, l4 + 8, px.delta.wrapping_neg());
                    csum::apply_at(d, l4 + 16, c);
                }
                None
            }
            (Dir::Out, true) => None,
        }
    }

    /// PROXY protocol on a segment of connection `idx` (see [`crate::pipeline::proxyproto`]): the
    /// client's SYN gives the stream start; a client segment at the start gets the header in
    /// front of its payload, later ones are shifted by its length; the server's
    /// acknowledgements (and SACK edges) are shifted back and its SYN-ACK's MSS lowered.
    /// `Ok(Some(p))`: the frame changed shape, `p` is its new parse.
    fn pp_segment(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Result<Option<Parsed>, Next> {
        let Some(mut pp) = self.flows.cold(idx).pp.as_deref().copied() else { return Ok(None) };
        if p.proto != PROTO_TCP {
            return Ok(None);
        }
        let l4 = p.l4;
        let field = |d: &[u8], off: usize| u32::from_be_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
        let opts_end = (l4 + ((pkt.data()[l4 + 12] >> 4) as usize) * 4).min(p.payload);
        let mut reparsed = None;
        match dir {
            Dir::In => {
                let seq = field(pkt.data(), l4 + 4);
                if p.tcp_flags & TCP_SYN != 0 {
                    pp.isn = seq;
                    pp.known = true;
                } else if pp.known && seq == pp.start() && !(pp.acked && p.payload_len() == 0) {
                    // The header goes in front of this segment's payload.
                    let h = pp.delta() as usize;
                    let mtu =
                        self.queues.get(self.flows.get(idx).if_in as usize).map_or(1500, |q| q.caps().mtu as usize);
                    if p.end - p.l3 + h > mtu.max(576) {
                        return Err(Next::Drop(DropReason::TooBig));
                    }
                    let end = p.end;
                    if !pkt.set_len(end + h) {
                        return Err(Next::Drop(DropReason::NoBuffer));
                    }
                    let d = pkt.data_mut();
                    d.copy_within(p.payload..end, p.payload + h);
                    d[p.payload..p.payload + h].copy_from_slice(pp.header());
                    if p.v6 {
                        let n = u16::from_be_bytes([d[p.l3 + 4], d[p.l3 + 5]]) as usize + h;
                        d[p.l3 + 4..p.l3 + 6].copy_from_slice(&(n as u16).to_be_bytes());
                    } else {
                        let n = u16::from_be_bytes([d[p.l3 + 2], d[p.l3 + 3]]) as usize + h;
                        d[p.l3 + 2..p.l3 + 4].copy_from_slice(&(n as u16).to_be_bytes());
                        fix_ipv4_csum(d, p.l3);
                    }
                    let Ok(p2) = parse::parse(pkt.data()) else { return Err(Next::Drop(DropReason::Malformed)) };
                    fix_l4_csum(pkt.data_mut(), &p2);
                    reparsed = Some(p2);
                } else if pp.known {
                    let new = pp.map_seq(seq);
                    if new != seq {
                        let d = pkt.data_mut();
                        d[l4 + 4..l4 + 8].copy_from_slice(&new.to_be_bytes());
                        csum::apply_at(
                            d,
                            l4 + 16,
                            csum::add(
                                csum::delta16((seq >> 16) as u16, (new >> 16) as u16),
                                csum::delta16(seq as u16, new as u16),
                            ),
                        );
                    }
                }
            }
            Dir::Out => {
                let d = pkt.data_mut();
                let mut opt_delta = 0;
                if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                    // Room for the header in the client's first full-sized segment.
                    let opts = &mut d[l4 + 20..opts_end];
                    if let Some(m) = crate::wire::tcpopt::mss(opts) {
                        let old = opts.to_vec();
                        crate::wire::tcpopt::clamp_mss(opts, m.saturating_sub(pp.delta() as u16).max(256));
                        opt_delta = crate::wire::tcpopt::csum_delta(&old, opts);
                    }
                }
                if p.tcp_flags & TCP_ACK != 0 && pp.known {
                    let ack = field(d, l4 + 8);
                    let new = pp.map_ack(ack);
                    if ack.wrapping_sub(pp.start()) >= pp.delta() && (ack.wrapping_sub(pp.start()) as i32) > 0 {
                        pp.acked = true;
                    }
                    if new != ack {
                        d[l4 + 8..l4 + 12].copy_from_slice(&new.to_be_bytes());
                        opt_delta = csum::add(
                            opt_delta,
                            csum::add(
                                csum::delta16((ack >> 16) as u16, (new >> 16) as u16),
                                csum::delta16(ack as u16, new as u16),
                            ),
                        );
                    }
                    let opts = &mut d[l4 + 20..opts_end];
                    let old = opts.to_vec();
                    if crate::wire::tcpopt::map_sack(opts, |a, b| (pp.map_ack(a), pp.map_ack(b))) {
                        opt_delta = csum::add(opt_delta, crate::wire::tcpopt::csum_delta(&old, opts));
                    }
                }
                if opt_delta != 0 {
                    csum::apply_at(d, l4 + 16, opt_delta);
                }
            }
        }
        if let Some(x) = self.flows.cold_mut(idx).pp.as_deref_mut() {
            *x = pp;
        }
        Ok(reparsed)
    }

    /// Run the FTP gateway on a control-connection segment. Returns
    /// `Err(next)` when the segment must not be forwarded as is, and the parse of the
    /// segment now in `pkt` when the gateway replaced its payload.
    ///
    /// The segments that need nothing from the gateway (no data, a retransmission, a line it
    /// skips: floods of tiny segments among them) are only translated, here; the others go
    /// to [`Worker::ftp_segment_full`].
    #[inline(always)]
    fn ftp_segment(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Result<Option<Parsed>, Next> {
        if p.proto != PROTO_TCP || p.tcp_flags & TCP_SYN != 0 {
            return self.ftp_segment_full(idx, dir, pkt, p);
        }
        let adir = if dir == Dir::In { alg::Dir::Original } else { alg::Dir::Reply };
        let Some(h) = pkt.data().get(p.l4 + 4..p.l4 + 12) else { return Ok(None) };
        let seq = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let ack = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let Some(s) = self.flows.cold_mut(idx).alg.as_deref_mut() else { return Ok(None) };
        if ftp_out_of_window(s, adir, seq, p.payload_len()) {
            return Err(Next::Drop(DropReason::OutOfWindow));
        }
        if !s.on_segment_quick(adir, seq, &pkt.data()[p.payload..p.end]) {
            return self.ftp_segment_full(idx, dir, pkt, p);
        }
        let new_ack = if p.tcp_flags & TCP_ACK != 0 { s.map_ack(adir, ack) } else { ack };
        let new_seq = s.map_seq(adir, seq);
        let opt_delta = self.ftp_tcp_options(idx, adir, pkt, p);
        if new_seq != seq || new_ack != ack || opt_delta != 0 {
            ftp_set_seq_ack(pkt.data_mut(), p.l4, new_seq, new_ack, opt_delta);
        }
        Ok(None)
    }

    /// [`Worker::ftp_segment`] through the gateway's parser.
    #[inline(never)]
    fn ftp_segment_full(&mut self, idx: u32, dir: Dir, pkt: &mut Q::Buf, p: &Parsed) -> Result<Option<Parsed>, Next> {
        if p.proto != PROTO_TCP {
            return Ok(None);
        }
        let now = self.now;
        let adir = if dir == Dir::In { alg::Dir::Original } else { alg::Dir::Reply };
        let Some(h) = pkt.data().get(p.l4 + 4..p.l4 + 12) else { return Ok(None) };
        let seq = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let ack = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        // A SYN's payload (TCP Fast Open) starts at isn + 1: the gateway is
        // fed that, after `set_isn` (Linux's nf_conntrack_ftp never sees SYN
        // data; we do, at the right offset: `p.payload` is past the options).
        let syn = p.tcp_flags & TCP_SYN != 0;
        let data_seq = seq.wrapping_add(syn as u32);
        let plen = p.payload_len();
        let mut actions = std::mem::take(&mut self.actions);
        actions.expectations.clear();
        actions.events.clear();
        // The session leaves its slot while it runs, so the pinhole broker can look at the
        // flow table (other sessions' liveness) beside it.
        let Some(mut s) = self.flows.cold_mut(idx).alg.take() else {
            self.actions = actions;
            return Ok(None);
        };
        let svc = self.flows.get(idx).svc as usize;
        if syn {
            s.set_isn(adir, seq);
        }
        // (After `set_isn`: a SYN's data is in the window it opens.)
        if ftp_out_of_window(&s, adir, data_seq, plen) {
            self.flows.cold_mut(idx).alg = Some(s);
            self.actions = actions;
            return Err(Next::Drop(DropReason::OutOfWindow));
        }
        let shifts = (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        let verdict = if plen > 0 {
            let mut pins = Broker::new(self, idx);
            s.on_segment_with(now, adir, data_seq, &pkt.data()[p.payload..p.end], &mut actions, &mut pins)
        } else {
            alg::Verdict::Forward
        };
        // Cluster: a rewrite moved the sequence numbers; the peers must know to carry on.
        let moved = self.sync_on && shifts != (s.seq_shift(alg::Dir::Original), s.seq_shift(alg::Dir::Reply));
        let new_ack = if p.tcp_flags & TCP_ACK != 0 { s.map_ack(adir, ack) } else { ack };
        let new_seq = match &verdict {
            // A Replace names its first data byte; on a SYN the SYN comes first.
            alg::Verdict::Replace { seq, .. } => s.map_seq(adir, *seq).wrapping_sub(syn as u32),
            _ => s.map_seq(adir, seq),
        };
        // Where the segment's data ends once translated: a Replace ending anywhere else
        // (bytes after it held or left for a retransmission) must not carry the segment's FIN.
        let data_end = s.map_seq(adir, data_seq.wrapping_add(p.payload_len() as u32));
        self.flows.cold_mut(idx).alg = Some(s);
        if moved && self.flows.get(idx).flags & F_SYNCED == 0 {
            if let Some(e) = self.seq_entry(idx) {
                self.push_sync(e);
            }
        }
        self.ftp_actions(idx, svc, &actions);
        self.actions = actions;
        // SACK edges and the handshake MSS live in the options (see `ftp_tcp_options`).
        let opt_delta = self.ftp_tcp_options(idx, adir, pkt, p);
        match verdict {
            alg::Verdict::Hold => {
                bump(&self.svc_counters[svc].ftp.held_segments, 1);
                Err(Next::Drop(DropReason::AlgHold))
            }
            alg::Verdict::Forward => {
                if new_seq != seq || new_ack != ack || opt_delta != 0 {
                    ftp_set_seq_ack(pkt.data_mut(), p.l4, new_seq, new_ack, opt_delta);
                }
                Ok(None)
            }
            alg::Verdict::Replace { payload, .. } => {
                let wire_end = new_seq.wrapping_add(syn as u32).wrapping_add(payload.len() as u32);
                let keep_fin = wire_end == data_end;
                let mut np = *p;
                self.ftp_replace(idx, dir, pkt, &mut np, &payload, new_seq, new_ack, keep_fin)?;
                bump(&self.svc_counters[svc].ftp.rewrites, 1);
                Ok(Some(np))
            }
        }
    }

    /// Counts (and, for TLS, pins) what the gateway reported. Expectations were already
    /// installed by the [`Broker`] while the segment was parsed.
    fn ftp_actions(&mut self, idx: u32, svc: usize, actions: &alg::Actions) {
        if actions.events.is_empty() {
            return;
        }
        let sc = self.svc_counters.clone();
        let Some(counters) = sc.get(svc).map(|c| &c.ftp) else { return };
        for ev in &actions.events {
            match ev {
                alg::Event::Rewrite | alg::Event::Malformed | alg::Event::Refused | alg::Event::Moved { .. } => {}
                alg::Event::BounceRefused { named, port } => {
                    bump(&counters.bounce_refused, 1);
                    if self.bounce_log.allow(self.now) {
                        let client = self.flows.get(idx).client;
                        let suppressed = self.bounce_log.take_suppressed();
                        tracing::warn!(client = %addr_to_ip(client), %named, port, suppressed, "FTP PORT/EPRT bounce attempt refused");
                    }
                }
                alg::Event::LowPort { .. } => bump(&counters.low_ports_refused, 1),
                alg::Event::Unsolicited => bump(&counters.unsolicited_replies, 1),
                alg::Event::TlsRefused => bump(&counters.tls_refused, 1),
                alg::Event::TlsFallback => {
                    bump(&counters.tls_fallbacks, 1);
                    let c = self.flows.get(idx);
                    let val = ExpVal {
                        svc: svc as u16,
                        dest: c.dest,
                        rs: c.rs,
                        rport: None,
                        vip: c.vip,
                        parent: idx,
                        parent_gen: c.gen,
                        expires: u64::MAX,
                        client: 0,
                        cport: 0,
                    };
                    let (client, vip) = (c.client, c.vip);
                    let flows = &self.flows;
                    let alive = |i: u32, g: u32| flows.try_get(i).is_some_and(|c| c.gen == g);
                    if !self.expect.pin(client, vip, val, alive) {
                        // Another live TLS session of this client pins the VIP to its server
                        // (new connections of this client already follow it).
                        bump(&counters.expectations_refused, 1);
                    }
                }
                alg::Event::Oversized => bump(&counters.oversized_lines, 1),
            }
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
                vip: sa(c.vip, c.vport),
                real: sa(c.rs, c.rport),
                state: c.state.name().into(),
                expires_in_s: c.expires.saturating_sub(self.now) / 1_000_000_000,
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

    /// Park a packet until its next hop resolves (bounded).
    fn park(&mut self, iface: usize, nh: Addr, pkt: Q::Buf) {
        if self.pending.len() >= MAX_PENDING {
            self.drop_pkt(DropReason::NoNeighbor);
            return;
        }
        self.pending.push(Held { key: nh, iface: iface as u8, buf: pkt, deadline: self.now + PENDING_NS });
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
        self.neigh_evict_rl = crate::pipeline::ratelimit::RateLimit::new(neigh::EVICT_PER_SEC, neigh::EVICT_BURST);
        self.pending.clear();
        self.rx.clear();
        for t in self.tx.iter_mut() {
            t.clear();
        }
        self.actions.clear();
        self.acc_dirty.clear();
        self.hint_ver = u64::MAX;
        self.sweep_pos = 0;
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

/// Local ports a worker may hold reserved for announced full-NAT active FTP data connections
/// (each session holds at most `max_expectations` live ones; older ones wait for their expiry).
const MAX_RESERVED: usize = 65_536;

/// How many VIP ports after the announced one a clashing passive expectation may move to.
const MOVE_TRIES: u16 = 64;

/// The worker's side of the gateway's [`alg::Pinholes`]: installs the expectations one control
/// connection announces, while its reply is being parsed, and settles clashes with other
/// sessions' expectations (see [`crate::flow::expect`] for the rules and what Linux does).
struct Broker<'a> {
    table: &'a mut ExpectTable,
    flows: &'a FlowTable,
    snap: &'a Snapshot,
    counters: &'a [ServiceCounters],
    idx: u32,
    gen: u32,
    svc: u16,
    dest: u16,
    fwd: Forward,
    per_session: usize,
    now: u64,
    /// Cluster: expectations go to the peers too.
    sync: Option<&'a mut Vec<SyncEntry>>,
    /// Full NAT: the control connection's local address, the worker's local ports and its
    /// reservations (active data connections).
    laddr: Addr,
    lports: &'a mut LportPools,
    reserved: &'a mut Vec<(Addr, u16, u64)>,
}

impl<'a> Broker<'a> {
    fn new<Q: PortQueue>(w: &'a mut Worker<Q>, idx: u32) -> Self {
        let c = w.flows.get(idx);
        let (gen, svc, dest, fwd) = (c.gen, c.svc, c.dest, c.fwd);
        let laddr = if fwd == Forward::Fnat { w.flows.laddr_of(c) } else { 0 };
        let per_session = w
            .snap
            .services
            .get(svc as usize)
            .and_then(|s| s.ftp.as_ref())
            .map_or(4, |f| usize::from(f.max_expectations));
        Broker {
            table: &mut w.expect,
            flows: &w.flows,
            snap: &w.snap,
            counters: &w.svc_counters,
            idx,
            gen,
            svc,
            dest,
            fwd,
            per_session,
            now: w.now,
            sync: if w.sync_on && w.sync_out.len() < SYNC_MAX_PER_POLL { Some(&mut w.sync_out) } else { None },
            laddr,
            lports: &mut w.lports,
            reserved: &mut w.reserved,
        }
    }

    fn alive(&self, v: &ExpVal) -> bool {
        v.expires > self.now && self.flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen)
    }

    fn mine(&self, v: &ExpVal) -> bool {
        v.parent == self.idx && v.parent_gen == self.gen
    }

    /// Another live session expects `key`.
    fn taken(&self, key: &ExpKey) -> bool {
        self.table.chain(key).any(|v| !self.mine(v) && self.alive(v))
    }

    fn ftp(&self, svc: u16) -> Option<&'a crate::pipeline::counters::FtpCounters> {
        self.counters.get(svc as usize).map(|c| &c.ftp)
    }

    /// Installs `key -> (rs, rport)` for this session, replacing its own older one with the
    /// same key and dropping dead ones.
    fn install(&mut self, key: ExpKey, rs: Addr, rport: Option<u16>, vip: Addr, expires: u64) {
        self.install_for(key, rs, rport, vip, expires, 0, 0)
    }

    /// [`Broker::install`] naming the client (full NAT active).
    #[allow(clippy::too_many_arguments)]
    fn install_for(
        &mut self,
        key: ExpKey,
        rs: Addr,
        rport: Option<u16>,
        vip: Addr,
        expires: u64,
        client: Addr,
        cport: u16,
    ) {
        let (now, flows, idx, gen) = (self.now, self.flows, self.idx, self.gen);
        let mut dead = 0;
        self.table.retain_key(&key, |v| {
            let alive = v.expires > now && flows.try_get(v.parent).is_some_and(|c| c.gen == v.parent_gen);
            let own = v.parent == idx && v.parent_gen == gen;
            dead += u64::from(!alive);
            alive && !own
        });
        let val = ExpVal {
            svc: self.svc,
            dest: self.dest,
            rs,
            rport,
            vip,
            parent: idx,
            parent_gen: gen,
            expires,
            client,
            cport,
        };
        // A full-NAT active expectation waits on a port reserved on this node's local address
        // (keyed by it): the format has no field for that, so it is not synced (README).
        let fnat_active = self.fwd == Forward::Fnat && matches!(key, ExpKey::Active(..));
        if let Some(out) = self.sync.as_mut().filter(|_| !fnat_active) {
            use crate::cluster::sync::ExpectKind as K;
            let c = flows.get(idx);
            let (kind, port) = match key {
                ExpKey::Passive(_, _, p) => (K::Passive, p),
                ExpKey::PassiveAny(..) => (K::PassiveAny, 0),
                ExpKey::Active(_, _, p) => (K::Active, p),
                ExpKey::DrActive(_, p, _) => (K::DrActive, p),
            };
            out.push(SyncEntry::Expect(crate::cluster::sync::ExpectSync {
                kind,
                port,
                rport: rport.unwrap_or(0),
                ctl_cport: c.cport,
                ctl_vport: c.vport,
                client: c.client,
                vip: c.vip,
                rs,
                timeout_s: (expires.saturating_sub(now) / 1_000_000_000) as u32,
            }));
        }
        let d = self.table.insert(key, val, self.per_session);
        if let Some(c) = self.ftp(self.svc) {
            bump(&c.expectations_created, 1);
            bump(&c.expectations_expired, dead);
        }
        if let Some(c) = d.replaced.and_then(|s| self.ftp(s)) {
            bump(&c.expectations_replaced, 1);
        }
        if let Some(c) = d.evicted.and_then(|s| self.ftp(s)) {
            bump(&c.expectations_evicted, 1);
        }
    }

    fn refuse(&self) -> alg::Grant {
        if let Some(c) = self.ftp(self.svc) {
            bump(&c.expectations_refused, 1);
        }
        alg::Grant::Refused
    }
}

impl alg::Pinholes for Broker<'_> {
    fn open(&mut self, e: &alg::Expectation) -> alg::Grant {
        let (client, vip, rs) = (parse::ip_to_addr(e.client), parse::ip_to_addr(e.vip), parse::ip_to_addr(e.real));
        match e.kind {
            alg::ExpectKind::Passive { vip_port: Some(p), real_port } => {
                // A VIP port is free for this session if no other live session expects it from
                // this client and no other service listens on it (the expectation would take
                // that service's connections from this client).
                let free = |q: u16| {
                    !self.taken(&ExpKey::Passive(client, vip, q))
                        && self.snap.service(vip, PROTO_TCP, q).is_none_or(|o| o == self.svc as usize)
                };
                let mut q = p;
                let mut found = None;
                for _ in 0..MOVE_TRIES {
                    if free(q) {
                        found = Some(q);
                        break;
                    }
                    q = if q == u16::MAX { 1024 } else { q + 1 };
                }
                let Some(q) = found else { return self.refuse() };
                self.install(ExpKey::Passive(client, vip, q), rs, real_port.or(Some(p)), vip, e.expires);
                if q == p {
                    alg::Grant::Open
                } else {
                    if let Some(c) = self.ftp(self.svc) {
                        bump(&c.expectations_moved, 1);
                    }
                    alg::Grant::OpenAt(q)
                }
            }
            alg::ExpectKind::Passive { vip_port: None, real_port } => {
                // DR: the balancer never sees the port the server announced, so two sessions
                // of one client address waiting at once cannot be told apart. Towards the same
                // real server they queue (oldest first, either is right); towards another
                // server the newer is refused: its transfer fails rather than risk receiving
                // the other session's data.
                let key = ExpKey::PassiveAny(client, vip);
                let other_rs = self.table.chain(&key).any(|v| !self.mine(v) && self.alive(v) && v.rs != rs);
                if other_rs {
                    if let Some(c) = self.ftp(self.svc) {
                        bump(&c.expectations_ambiguous, 1);
                    }
                    return self.refuse();
                }
                self.install(key, rs, real_port, vip, e.expires);
                alg::Grant::Open
            }
            alg::ExpectKind::Active { client_port, .. } if self.fwd == Forward::Fnat => {
                // The real server is told to connect to a port reserved on the control
                // connection's local address; that connection becomes VIP:20 -> client:port.
                if self.reserved.len() >= MAX_RESERVED {
                    return self.refuse();
                }
                let Some(port) = self.lports.take_on(self.laddr, PROTO_TCP) else {
                    return self.refuse();
                };
                let key = ExpKey::Active(rs, self.laddr, port);
                self.install_for(key, rs, None, vip, e.expires, client, client_port);
                self.reserved.push((self.laddr, port, e.expires));
                alg::Grant::OpenAt(port)
            }
            alg::ExpectKind::Active { client_port, .. } => {
                let key = if self.fwd.two_way() {
                    ExpKey::Active(rs, client, client_port)
                } else {
                    ExpKey::DrActive(client, client_port, vip)
                };
                if self.taken(&key) {
                    return self.refuse();
                }
                self.install(key, rs, None, vip, e.expires);
                alg::Grant::Open
            }
        }
    }
}

/// A full NAT local address a reload removed (see [`Worker::retire_laddrs`]).
struct Retired {
    addr: Addr,
    /// `[engine] local_port_range` when it was removed: its ports' owners.
    range: ferrovs_cfg::PortRange,
    /// End of the grace period (ns).
    until: u64,
}

/// At most this many retired local addresses are remembered (the oldest go first).
const MAX_RETIRED: usize = 4096;

/// Is a control segment of `len` bytes from `seq` (its first data byte) out of the window?
/// Data beyond the largest window TCP can announce (65535 << 14) past what the gateway
/// expects: no receiver takes it, and fed to the gateway it would look like a hole and stop it
/// reading until the next line (nf_conntrack's window tracking keeps such segments from its
/// FTP helper too). Dropped and counted.
#[inline(always)]
fn ftp_out_of_window(s: &alg::FtpSession, adir: alg::Dir, seq: u32, len: usize) -> bool {
    let ahead = s.next_seq(adir).map_or(0, |n| seq.wrapping_sub(n));
    len > 0 && ahead > MAX_TCP_WINDOW && ahead < 1 << 31
}

/// Write a control segment's translated sequence and acknowledgement numbers (at `l4`) and
/// fix the TCP checksum, with `opt_delta` for options the gateway changed.
fn ftp_set_seq_ack(d: &mut [u8], l4: usize, seq: u32, ack: u32, opt_delta: u32) {
    let Some(h) = d.get_mut(l4 + 4..l4 + 12) else { return };
    let mut new = [0u8; 8];
    new[..4].copy_from_slice(&seq.to_be_bytes());
    new[4..].copy_from_slice(&ack.to_be_bytes());
    let delta = csum::add(opt_delta, csum::delta(h, &new));
    h.copy_from_slice(&new);
    csum::apply_at(d, l4 + 16, delta);
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
    l3d: u32,
    l4d: u32,
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
            let c = csum::apply(u16::from_be_bytes([t[16], t[17]]), l4d);
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
                let mut n = csum::apply(c, l4d);
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
fn rewrite_ip(d: &mut [u8], l3: usize, v6: bool, inbound: bool, addr: Addr, l3d: u32) -> Result<(), DropReason> {
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
        let c = csum::apply(u16::from_be_bytes([h[10], h[11]]), l3d);
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
