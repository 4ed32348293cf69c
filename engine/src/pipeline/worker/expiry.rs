//! Timers and expiry (a child module of `worker`): scheduler ticks, the incremental sweeps
//! of connections, expectations and fragments, held packets past their deadline, and the
//! removal of a connection with everything that refers to it (scheduler counts, its FTP
//! links, interned ids, the cluster's view).

use super::*;
use crate::flow::table::EXPIRED_BATCH;

impl<Q: BufAlloc> Worker<Q> {
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
    pub(super) fn sweep_tick(&mut self, now: u64, ticks: usize) {
        let slots = self.flows.slots();
        if !self.flows.is_empty() {
            let churn = self.flows.version().wrapping_sub(self.sweep_ver).min(SWEEP_MAX_CHURN as u64) as usize;
            let per_tick = SWEEP_MIN_TICK.max(slots.div_ceil(SWEEP_TICKS));
            let mut budget = (per_tick * ticks + churn * SWEEP_PER_CHURN).min(slots);
            let mut pos = self.sweep_pos;
            let mut batch = [0u32; EXPIRED_BATCH];
            loop {
                let found = self.flows.scan_expired(&mut pos, &mut budget, now, &mut batch);
                // Expiring a connection changes no other slot's liveness or expiry (at most
                // its own expiry, a control connection's with live children, and its
                // parent's child count, which `expire` reads when it gets there): the batch
                // is what a scan resumed after each expiry would find.
                for &i in &batch[..found] {
                    self.expire(i, now);
                }
                if found < EXPIRED_BATCH {
                    break;
                }
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

    pub(super) fn housekeeping(&mut self, now: u64) {
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
        // Neighbour aging (probes, failed and unused entries), every 2^AGE_SHIFT ns.
        if self.neigh.has_dynamic() && now >> neigh::AGE_SHIFT != self.neigh_aged {
            self.neigh_aged = now >> neigh::AGE_SHIFT;
            self.age_neighbours(now);
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
        if !self.moved.is_empty() {
            self.sweep_moved(now);
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
        self.release_unreserved();
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
    pub(super) fn expire(&mut self, i: u32, now: u64) {
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

    pub(super) fn remove_conn(&mut self, i: u32, expired: bool) {
        // The hot entry, read once: nothing below writes it before the table removes it
        // (`remove_entry` takes this copy instead of looking the slot up again).
        let c = *self.flows.get(i);
        let (parent, parent_gen, alg) = {
            let k = self.flows.cold_of(&c);
            (k.parent, k.parent_gen, k.alg.is_some())
        };
        let (svc, dest, flags) = (c.svc as usize, c.dest as usize, c.flags);
        if c.snap_gen == self.snap_gen && flags & F_COUNTED != 0 {
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
            self.expect.remove_session(i, c.gen);
            self.release_unreserved();
        }
        let (state, fwd, la, proto, lport) = (c.state, c.fwd, self.flows.laddr_of(&c), c.proto, c.lport());
        // (A backup entry in SYN_RECV was never counted: see `adopt`.)
        if state == crate::flow::tcpstate::TcpState::SynRecv && flags & F_SYNCED == 0 {
            self.half_open = self.half_open.saturating_sub(1);
        }
        if self.sync_on && flags & F_SYNCED == 0 && !self.one_packet(&c) {
            let (client, cport, (vip, vport)) = (c.client(), c.cport, self.flows.vip_of(&c));
            let lport = (fwd == Forward::Fnat).then_some(lport);
            self.push_sync(SyncEntry::Delete { proto, client, cport, vip, vport, lport });
        }
        if fwd == Forward::Fnat {
            self.lports.release(la, proto, lport);
        }
        // (`FlowTable::remove` leaves a free slot alone: so does this.)
        if c.live {
            self.flows.remove_entry(i, &c);
        }
        if flags & F_SYNCED == 0 {
            bump(&self.counters.flows_active, u64::MAX); // -1 (backup state was never counted)
        }
        if expired {
            bump(&self.counters.flows_expired, 1);
        }
    }
}

/// Drops (counted as `r`) the packets of `v` (pending next hops, SYN-proxy or fragment
/// holds) whose deadline has passed. The others keep their order (packets parked for one
/// next hop leave in the order they came).
pub(super) fn expire_held<K, B>(v: &mut Vec<Held<K, B>>, now: u64, counters: &WorkerCounters, r: DropReason) {
    v.retain(|h| {
        let keep = h.deadline > now;
        if !keep {
            counters.count_drop(r);
        }
        keep
    });
}
