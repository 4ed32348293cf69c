//! A new configuration snapshot: carrying connections, persistence, scheduler state and FTP state
//! over ([`crate::pipeline::remap`]), and full-NAT local addresses a reload removed, kept for their
//! connections until a grace period ends.

use super::*;

impl<Q: BufAlloc> Worker<Q> {
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
    pub(super) fn apply_snapshot(&mut self, snap: Arc<Snapshot>) {
        // Fold pending traffic into the old counters before they are carried.
        self.flush_svc_counters();
        let old = std::mem::replace(&mut self.snap, snap.clone());
        self.addr_memo = None;
        if !Arc::ptr_eq(&old, &snap) {
            self.retire_laddrs(&old, &snap);
        }
        let icmp = (snap.config.engine.icmp_rate, snap.config.engine.icmp_burst);
        if icmp != self.icmp_cfg {
            self.icmp_rl = crate::pipeline::ratelimit::RateLimit::new(icmp.0, icmp.1);
            self.icmp_cfg = icmp;
        }
        let host = (snap.config.engine.icmp_host_rate, snap.config.engine.icmp_host_burst);
        if host != self.icmp_host_cfg {
            self.icmp_hosts = crate::pipeline::ratelimit::HostLimit::new(host.0, host.1, crate::flow::table::seed());
            self.icmp_host_cfg = host;
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
                        if st.sched.name() != s.scheduler || os.sched_opts != s.sched_opts {
                            st.sched = new_sched(s, &dests, seed);
                        } else if st.dests != dests {
                            st.sched.update(&dests);
                        }
                        if os.persistence != s.persistence {
                            st.persist = persist_new();
                        }
                        if st.src_limit.as_ref().map(|l| l.1) != Some(s.source_conn).filter(|c| c.0 != 0) {
                            st.src_limit = source_limit(s.source_conn, crate::flow::table::seed());
                        }
                        st.uses_key = st.sched.uses_key();
                        st.ids = vec![super::DestMemo::EMPTY; dests.len()];
                        st.dests = dests;
                        st
                    }
                    None => {
                        let sched = new_sched(s, &dests, seed);
                        SvcState {
                            src_limit: source_limit(s.source_conn, crate::flow::table::seed()),
                            uses_key: sched.uses_key(),
                            sched,
                            persist: persist_new(),
                            ids: vec![super::DestMemo::EMPTY; dests.len()],
                            dests,
                        }
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
        self.l2_changed();
        self.sync_on = snap.config.cluster.is_some();
        self.sync_refresh = snap.config.cluster.as_ref().map_or(0, |c| c.sync_refresh as u64 * 1_000_000_000);
        // Clamped as `Conn::set_expires` would clamp them, so the fast path need not.
        self.timeouts = snap.timeouts.map(|t| t.min(crate::flow::table::MAX_SPAN_NS));
        self.events.push_back(Event::Services(self.svc_counters.clone()));
        for &(a, m) in &snap.static_neighbors {
            self.neigh.add_static(a, m);
        }
        let share = lport_share(snap.port_range, self.id, self.workers);
        if share != self.lports.share() {
            // Another local_port_range: the ports of live connections stay theirs, and the
            // old range is remembered for as long as they may live ([`Moved`]).
            let grace = snap.timeouts.iter().copied().max().unwrap_or(0).max(1_000_000_000);
            let until = self.now.saturating_add(grace);
            self.moved.push(Moved { range: old.port_range, share: self.lports.share(), until });
            if self.moved.len() > MAX_MOVED {
                self.moved.remove(0);
            }
            self.reshare_lports();
        }
        // The same snapshot again: the connections' indices and counters stay right (the
        // generation moves on only when the connections are remapped, below).
        if Arc::ptr_eq(&old, &snap) {
            return;
        }
        // FTP expectations and TLS pins follow their service and real server.
        let remap = &self.remap;
        self.expect.remap(|svc, dest| remap.map(svc, dest));
        self.release_unreserved();
        // Per old service: did its access lists change (its connections are checked against
        // them again)? Compared once per service here, not once per connection.
        let mut acl_changed = vec![false; old.services.len()];
        for (n, o) in from_old.iter().enumerate() {
            if let (Some(o), Some(s)) = (o, snap.services.get(n)) {
                if let Some(os) = old.services.get(*o as usize) {
                    acl_changed[*o as usize] = os.acl != s.acl;
                }
            }
        }
        // In place: every service and real server keeps its index and no access list changed
        // (a health-check flap, a weight edit, a server or service added at the end, the
        // same configuration reloaded). The connections stay as they are; each service's
        // counts of this worker's connections move to the new snapshot's counters, O(real
        // servers). Walking the table instead cost milliseconds per change at a million
        // slots, while the worker forwarded nothing and its receive ring filled.
        if self.remap.keeps_indices() && !acl_changed.contains(&true) {
            for (n, o) in from_old.iter().enumerate() {
                let (Some(o), Some(counts)) = (o, snap.conn_counts.get(n)) else { continue };
                if let Some(oc) = old.conn_counts.get(*o as usize) {
                    let same: Vec<Option<usize>> = (0..oc.dests()).map(Some).collect();
                    counts.adopt_row(self.id, oc, &same);
                }
            }
            bump(&self.counters.snapshots_in_place, 1);
            return;
        }
        // Otherwise the connections' indices change: every live one is remapped (and
        // counted in the new snapshot's counters), under a new generation.
        self.snap_gen = self.snap_gen.wrapping_add(1);
        bump(&self.counters.snapshots_remapped, 1);
        for i in 0..self.flows.slots() as u32 {
            let (live, svc, dest) = {
                let c = self.flows.get(i);
                (c.live, c.svc, c.dest)
            };
            if !live {
                continue;
            }
            match self.remap.map(svc, dest) {
                // Its service's changed access lists refuse its client now.
                Some((ni, _))
                    if acl_changed.get(svc as usize).copied().unwrap_or(false)
                        && !snap.services[ni as usize].admits(self.flows.get(i).client()) =>
                {
                    bump(&self.counters.acl_removed, 1);
                    self.remove_conn(i, false);
                }
                Some((ni, nd)) => {
                    let c = self.flows.get_mut(i);
                    c.svc = ni;
                    c.dest = nd;
                    c.snap_gen = self.snap_gen;
                    c.flags &= !(F_ACTIVE_COUNTED | F_COUNTED);
                    // A peer's backup entry stays invisible to the schedulers until adopted
                    // (`adopt` counts it then; counted here too, it was counted twice).
                    if c.flags & F_SYNCED != 0 {
                        continue;
                    }
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

    /// A reload removed local addresses: each stays owned (replies classified by the port range
    /// its ports came from, ARP/ND answered) for as long as a connection could stay idle
    /// (the longest timeout), so the connections on it end normally; then the ones left are
    /// removed and counted (`fnat_laddr_retired`). Every worker applies the same snapshots,
    /// so they agree on the retired set and on which worker owns a reply to it.
    pub(super) fn retire_laddrs(&mut self, old: &Snapshot, new: &Snapshot) {
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
    pub(super) fn laddr_range(&self, a: Addr) -> Option<ferrovs_cfg::PortRange> {
        if self.snap.laddrs.contains(&a) {
            return Some(self.snap.port_range);
        }
        if self.retired.is_empty() {
            return None;
        }
        self.retired.iter().find(|r| r.addr == a).map(|r| r.range)
    }

    /// The worker owning local port `port` of a local address whose ports come from `range`
    /// ([`lport_owner`]), or from the oldest earlier range still in its grace period that holds
    /// the port ([`Moved`]): only that range's owner can hold it (later shares do not hand it
    /// out meanwhile, see [`LportPools::reshare`]).
    #[inline]
    pub(super) fn lport_owner_at(&self, range: ferrovs_cfg::PortRange, port: u16) -> usize {
        if !self.moved.is_empty() {
            if let Some(m) = self.moved.iter().find(|m| m.range.contains(port)) {
                return lport_owner(m.range, port, self.workers);
            }
        }
        lport_owner(range, port, self.workers)
    }

    /// Start this worker's local ports over on its share of the configured range: the ports
    /// of its live full-NAT connections and of its reservations (FTP active data connections
    /// announced) stay taken, and so do other workers' ports of earlier ranges ([`Moved`]).
    fn reshare_lports(&mut self) {
        let share = lport_share(self.snap.port_range, self.id, self.workers);
        let flows = &self.flows;
        let conns = (0..flows.slots() as u32)
            .filter_map(|i| flows.try_get(i))
            .filter(|c| c.fwd == Forward::Fnat)
            .map(|c| (flows.laddr_of(c), c.proto, c.lport()));
        let reserved = self.reserved.iter().map(|&(a, port, _)| (a, PROTO_TCP, port));
        let fences = self.moved.iter().map(|m| (m.range, m.share)).collect();
        self.lports.reshare(share, conns.chain(reserved), fences);
    }

    /// The grace period of an earlier local port range ended: this worker's connections whose
    /// replies are no longer steered to it (their port now lies in another worker's share)
    /// are removed and counted (`fnat_laddr_retired`), and its ports start over without the
    /// fence of that range.
    pub(super) fn sweep_moved(&mut self, now: u64) {
        if !self.moved.iter().any(|m| m.until <= now) {
            return;
        }
        self.moved.retain(|m| m.until > now);
        for i in 0..self.flows.slots() as u32 {
            let lost = self.flows.try_get(i).is_some_and(|c| {
                c.fwd == Forward::Fnat
                    && self
                        .laddr_range(self.flows.laddr_of(c))
                        .is_some_and(|r| self.lport_owner_at(r, c.lport()) != self.id)
            });
            if lost {
                bump(&self.counters.fnat_laddr_retired, 1);
                self.remove_conn(i, false);
            }
        }
        self.reshare_lports();
    }

    pub(super) fn is_retired(&self, a: Addr) -> bool {
        self.retired.iter().any(|r| r.addr == a)
    }

    /// The grace period of retired local addresses ended: their remaining connections go.
    pub(super) fn sweep_retired(&mut self, now: u64) {
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
}

/// A full NAT local address a reload removed (see [`Worker::retire_laddrs`]).
impl Retired {
    /// End of the grace period (ns).
    pub(super) fn until(&self) -> u64 {
        self.until
    }
}

pub(super) struct Retired {
    addr: Addr,
    /// `[engine] local_port_range` when it was removed: its ports' owners.
    range: ferrovs_cfg::PortRange,
    /// End of the grace period (ns).
    until: u64,
}

/// At most this many retired local addresses are remembered (the oldest go first).
pub(super) const MAX_RETIRED: usize = 4096;

/// An earlier `[engine] local_port_range` (a reload changed it): the connections opened under
/// it keep their ports, whose replies are steered by it to the worker holding them, and other
/// workers do not hand those ports out, until the grace period ends (the longest timeout, as
/// for a retired local address; see [`Worker::sweep_moved`]).
pub(super) struct Moved {
    range: ferrovs_cfg::PortRange,
    /// This worker's share of it.
    share: ferrovs_cfg::PortRange,
    /// End of the grace period (ns).
    pub(super) until: u64,
}

/// At most this many earlier ranges are remembered (the oldest go first).
pub(super) const MAX_MOVED: usize = 8;
