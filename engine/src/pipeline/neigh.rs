//! Neighbour resolution (ARP for IPv4, neighbour discovery for IPv6).
//!
//! Every worker keeps its own cache. A worker that learns a MAC (from an
//! ARP reply or request, or a neighbour advertisement or solicitation)
//! updates its cache and posts the update to every other worker through
//! their control rings, so no cache is shared and no lock is taken.
//! Static `[[neighbor]]` entries are loaded first and never overwritten.
//! ARP / ND whose sender claims one of our own addresses (interface, VIP,
//! full NAT local) never reaches the cache: the worker counts it
//! (`arp_own_addr`) instead of learning the claimant's MAC.
//!
//! Floods of ARP/ND from many addresses: the table is bounded (the stalest
//! dynamic entry is evicted), a neighbour nobody asked for may evict only at
//! a bounded rate (the worker's [`EVICT_PER_SEC`] bucket; past it, it is not
//! learnt and `neigh_limited` counts it), and an entry is confirmed (moved
//! to the fresh end of the eviction order) at most every [`CONFIRM_NS`]:
//! more confirmations from the same neighbour cost a lookup and nothing else.
//!
//! Aging (Linux's neighbour state machine, driven by the worker's timer, never by a
//! packet: flows cache a next hop's MAC against [`NeighCache::gen`] and the express lane
//! reads only that). [`NeighCache::age`] visits a share of the table each time: a dynamic
//! entry confirmed more than [`REACHABLE_NS`] ago that a connection uses as its next hop
//! is probed by unicast (an ARP request to its cached MAC, a neighbour solicitation to its
//! address and cached MAC: Linux's PROBE state) up to [`UCAST_PROBES`] times
//! [`PROBE_NS`] apart; an answer confirms it (and ends the probing); unanswered, the entry is
//! removed and `gen` moves on, so the next packet resolves the
//! address again by broadcast / multicast (parked meanwhile). An entry no connection uses
//! is not probed: it is removed once unconfirmed for [`UNUSED_NS`]. Static entries never
//! age.
//!
//! What confirms an entry ([`Seen`]): only what answers us, as in Linux and RFC 4861
//! section 7.2.5: an ARP reply unicast to us for our address, a solicited neighbour
//! advertisement ([`Seen::Reachable`]). An ARP request, a gratuitous ARP, a broadcast reply,
//! a solicitation, an unsolicited advertisement say where an address is, not that its owner
//! is alive ([`Seen::Stale`]): with the MAC the entry holds they change nothing (a dead
//! neighbour, or whoever sends them in its name, cannot keep its entry reachable), with
//! another they replace it (a failover's gratuitous ARP: traffic follows at once) and the
//! entry is STALE. Linux's states map onto an entry's `confirmed`, `stale` and `probes`:
//! REACHABLE is confirmed less than [`REACHABLE_NS`] ago and not stale; STALE is stale, or
//! confirmed longer ago, and still used to send; DELAY and PROBE are the same entry in use:
//! a stale one is probed [`DELAY_NS`] after it became stale (Linux's
//! `delay_first_probe_time`, counted from the update, not from the first use, as ferrovs
//! has no upper-layer confirmations to wait for), an aged one at once; FAILED is the entry
//! removed. INCOMPLETE is the worker's pending request ([`NeighCache::resolving`]), not an
//! entry.
//!
//! Workers: a confirmation is shared with the other workers (as a learnt MAC is), at most
//! every [`SHARE_NS`] per neighbour, and the worker whose probe is answered may not be the
//! one receiving the answer (RSS), so every worker's entry is confirmed by any worker's
//! probe. The workers do not all probe at once: worker `w` waits [`STAGGER_NS`] times the
//! neighbour's rank for it (`(hash(address) + w) mod workers`) beyond [`REACHABLE_NS`],
//! so the first worker using it probes and its answer, shared, confirms the others'
//! entries before their turn; each worker's decision still stands on its own (a worker
//! that hears nothing probes, and removes its entry, itself).

use crate::wire::csum;
use crate::wire::parse::{addr_v4_bytes, addr_v6_bytes, Addr, PROTO_ICMPV6};
use crate::wire::view::{Arp, EthAddrs, Ipv6, Truncated, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use hashbrown::HashMap;

#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: Addr,
    mac: [u8; 6],
    is_static: bool,
    /// A flow resolved its next hop to this entry (and may have cached the MAC against
    /// `gen`): evicted only when no unused entry is left, and then `gen` changes.
    used: bool,
    /// When (ns) it was last confirmed with a clock ([`NeighCache::learn_with`]), or, for a
    /// `stale` entry, when it became stale (its MAC learnt from a frame not proving reachability).
    confirmed: Option<u64>,
    /// Not known to be reachable (Linux's STALE; see the module docs): used, and probed
    /// [`DELAY_NS`] after `confirmed` if in use, until a confirmation.
    stale: bool,
    /// Unicast probes sent since the last confirmation, and when the last one was.
    probes: u8,
    probed: u64,
    /// When (ns) a confirmation of it was last shared with the other workers.
    shared: u64,
    /// Neighbours in the eviction order (dynamic entries; [`NIL`] at either end, and for
    /// static entries and free slots, whose `next` links the free list instead).
    prev: u32,
    next: u32,
}

/// No slot (the ends of the eviction order and of the free list).
const NIL: u32 = u32::MAX;

/// Entries in use passed over per eviction before the stalest is evicted anyway.
const SECOND_CHANCES: usize = 8;

/// Default bound on dynamic entries per worker (static entries are not
/// counted and never evicted).
pub const DEFAULT_MAX: usize = 4096;

/// Evictions per second (and burst) that neighbours nobody asked for may cause, per worker
/// (see [`NeighCache::learn_with`]): a table that is full stays mostly in place under a
/// flood of ARP/ND from new addresses, while answers to our own requests always get in.
pub const EVICT_PER_SEC: u32 = 100;
pub const EVICT_BURST: u32 = 256;

/// An entry learnt or confirmed less than this long ago is not confirmed again (ns): its
/// place in the eviction order is at most this much staler than the truth.
pub const CONFIRM_NS: u64 = 100_000_000;

/// An entry confirmed this long ago is no longer known to be reachable (Linux's
/// `base_reachable_time`): if a connection uses it, it is probed.
pub const REACHABLE_NS: u64 = 30_000_000_000;
/// Unicast probes of an unconfirmed entry (Linux's `ucast_probes`), this far apart
/// (`retrans_time`); unanswered, the entry is removed.
pub const UCAST_PROBES: u8 = 3;
pub const PROBE_NS: u64 = 1_000_000_000;
/// A stale entry in use is probed this long after it became stale (Linux's
/// `delay_first_probe_time`).
pub const DELAY_NS: u64 = 5_000_000_000;
/// A request of ours for an address is pending this long (Linux's INCOMPLETE state:
/// `mcast_probes` requests `retrans_time` apart): an unsolicited advertisement for it is
/// taken as the answer ([`NeighCache::resolving`]).
pub const INCOMPLETE_NS: u64 = 3_000_000_000;
/// An entry no connection uses and not confirmed for this long is removed (Linux's
/// `gc_stale_time`).
pub const UNUSED_NS: u64 = 60_000_000_000;
/// A confirmation is shared with the other workers at most this often per neighbour.
pub const SHARE_NS: u64 = 500_000_000;
/// How much later than the one before it each worker (in the neighbour's rank) probes.
/// More than a pass over the table ([`AGE_SHIFT`], [`AGE_PARTS`]) plus a round trip.
pub const STAGGER_NS: u64 = 500_000_000;
/// The worker ages its table every 2^AGE_SHIFT ns (~34 ms), an `1 / AGE_PARTS` share of
/// its slots (at least [`AGE_MIN`]) each time: a pass over the table takes ~270 ms.
pub const AGE_SHIFT: u32 = 25;
pub const AGE_PARTS: usize = 8;
pub const AGE_MIN: usize = 64;

/// What a received ARP / ND frame says of a neighbour ([`NeighCache::update`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It answered us (an ARP reply unicast to us, a solicited advertisement): REACHABLE.
    Reachable,
    /// Where it is, not that it is alive (an ARP request, a gratuitous ARP, a solicitation,
    /// an unsolicited advertisement): a new MAC is taken and the entry is STALE; the MAC the
    /// entry holds changes nothing.
    Stale,
}

/// What [`NeighCache::learn_with`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learnt {
    /// A new entry, or a new MAC for an entry.
    Changed,
    /// Already known with this MAC and confirmed (with a clock), a confirmation to share
    /// with the other workers (not shared for [`SHARE_NS`]).
    Confirmed,
    /// Already known with this MAC (confirmed, but shared recently or confirmed too
    /// recently to count), static, or not a unicast MAC.
    Unchanged,
    /// Not learnt: the table is full and the eviction was refused.
    Limited,
}

/// The neighbour table: entries in a slab, found by address, the dynamic ones also on a
/// doubly linked list in the order of their last learn or confirm (stalest first), so a
/// confirmation moves an entry to the fresh end and an eviction takes the stalest, each in
/// a few steps and without records to clean up later (a flood of re-announcements costs
/// a lookup and a relink per packet).
pub struct NeighCache {
    map: HashMap<Addr, u32>,
    slots: Vec<Entry>,
    /// Free slots, linked through `next`.
    free: u32,
    /// The stalest and the freshest dynamic entry.
    head: u32,
    tail: u32,
    dynamic: usize,
    max: usize,
    /// Evictions not yet collected by [`NeighCache::take_evicted`].
    evicted: u64,
    /// Last time (ns) a request was sent per address (rate limit: 1/s).
    asked: HashMap<Addr, u64>,
    /// Where the next [`NeighCache::age`] starts (a slot).
    age_pos: usize,
    /// Bumped on every change ([`NeighCache::invalidate`]); flows cache MACs against it.
    /// Never 0, the generation of next hops not resolved yet.
    pub gen: u32,
}

impl Default for NeighCache {
    fn default() -> Self {
        Self::new()
    }
}

impl NeighCache {
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX)
    }
    /// A cache holding at most `max` (at least 1) dynamic entries. When it
    /// is full, learning a new address evicts the stalest dynamic entry
    /// (least recently learned or confirmed), like the kernel's neighbour
    /// table `gc_thresh3` forced GC but without ever refusing a new entry;
    /// static entries are never evicted.
    pub fn with_max(max: usize) -> Self {
        let max = max.max(1);
        NeighCache {
            map: HashMap::with_capacity(max.min(1024)),
            slots: Vec::with_capacity(max.min(1024)),
            free: NIL,
            head: NIL,
            tail: NIL,
            dynamic: 0,
            max,
            evicted: 0,
            asked: HashMap::new(),
            age_pos: 0,
            gen: 1,
        }
    }
    /// A new generation: every MAC (and Ethernet header) cached against the last one is
    /// stale. Also what the worker does when a port's MAC or MTU changed. Skips 0, the
    /// generation of a next hop not resolved yet, so such a hop never matches.
    #[inline]
    pub fn invalidate(&mut self) {
        self.gen = self.gen.wrapping_add(1).max(1);
    }

    /// A slot for a new entry (not linked).
    fn alloc(&mut self, e: Entry) -> u32 {
        match self.slots.get_mut(self.free as usize) {
            Some(slot) => {
                let i = self.free;
                self.free = slot.next;
                *slot = e;
                i
            }
            None => {
                self.slots.push(e);
                (self.slots.len() - 1) as u32
            }
        }
    }
    /// Take dynamic entry `i` off the eviction order.
    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match self.slots.get_mut(p as usize) {
            Some(e) => e.next = n,
            None => self.head = n,
        }
        match self.slots.get_mut(n as usize) {
            Some(e) => e.prev = p,
            None => self.tail = p,
        }
    }
    /// Put dynamic entry `i` (not on the order) at its fresh end.
    fn push_back(&mut self, i: u32) {
        let t = self.tail;
        let e = &mut self.slots[i as usize];
        (e.prev, e.next) = (t, NIL);
        match self.slots.get_mut(t as usize) {
            Some(e) => e.next = i,
            None => self.head = i,
        }
        self.tail = i;
    }
    /// Move dynamic entry `i` to the fresh end of the eviction order.
    fn touch(&mut self, i: u32) {
        if self.tail != i {
            self.unlink(i);
            self.push_back(i);
        }
    }

    pub fn add_static(&mut self, a: Addr, mac: [u8; 6]) {
        let e = Entry {
            addr: a,
            mac,
            is_static: true,
            used: true,
            confirmed: None,
            stale: false,
            probes: 0,
            probed: 0,
            shared: 0,
            prev: NIL,
            next: NIL,
        };
        match self.map.get(&a).copied() {
            Some(i) => {
                if !self.slots[i as usize].is_static {
                    self.unlink(i);
                    self.dynamic -= 1;
                }
                self.slots[i as usize] = e;
            }
            None => {
                let i = self.alloc(e);
                self.map.insert(a, i);
            }
        }
        self.invalidate();
    }
    /// Learn a dynamic entry; returns true if it changed anything. Learning
    /// the same MAC again only refreshes the entry (it becomes the least
    /// stale one).
    pub fn learn(&mut self, a: Addr, mac: [u8; 6]) -> bool {
        self.learn_with(a, mac, None, || true) == Learnt::Changed
    }

    /// [`NeighCache::learn`] at time `now` (ns; `None`: no clock), asking `may_evict` first
    /// when learning `a` would evict an entry and nobody asked for `a` (no request of ours
    /// for it is pending, see [`NeighCache::should_ask`]): if it says no, nothing changes
    /// ([`Learnt::Limited`]). With a clock, an entry learnt or confirmed less than
    /// [`CONFIRM_NS`] ago is not confirmed again; a confirmation ends the entry's probing and
    /// is [`Learnt::Confirmed`] if none was shared for [`SHARE_NS`].
    pub fn learn_with(&mut self, a: Addr, mac: [u8; 6], now: Option<u64>, may_evict: impl FnOnce() -> bool) -> Learnt {
        self.update(a, mac, Seen::Reachable, now, may_evict)
    }

    /// [`NeighCache::learn_with`] for what a frame proves, `seen`: [`Seen::Reachable`]
    /// confirms; [`Seen::Stale`] with the MAC the entry holds changes nothing (not even its
    /// place in the eviction order), with another MAC (or for a new entry) takes it and makes
    /// the entry stale (probed [`DELAY_NS`] later if in use). A stale entry's confirmation is
    /// never "recent" and always shared.
    pub fn update(
        &mut self,
        a: Addr,
        mac: [u8; 6],
        seen: Seen,
        now: Option<u64>,
        may_evict: impl FnOnce() -> bool,
    ) -> Learnt {
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Learnt::Unchanged;
        }
        let stale = seen == Seen::Stale;
        match self.map.get(&a).copied() {
            Some(i) => {
                let e = &mut self.slots[i as usize];
                if e.is_static {
                    return Learnt::Unchanged;
                }
                if e.mac == mac {
                    if stale {
                        return Learnt::Unchanged;
                    }
                    let recent =
                        !e.stale && matches!((now, e.confirmed), (Some(n), Some(c)) if n.wrapping_sub(c) < CONFIRM_NS);
                    if recent {
                        return Learnt::Unchanged;
                    }
                    let was_stale = std::mem::replace(&mut e.stale, false);
                    e.confirmed = now;
                    e.probes = 0;
                    let share = match now {
                        Some(n) if was_stale || n.wrapping_sub(e.shared) >= SHARE_NS || e.shared == 0 => {
                            e.shared = n;
                            Learnt::Confirmed
                        }
                        _ => Learnt::Unchanged,
                    };
                    self.touch(i);
                    return share;
                }
                e.mac = mac;
                e.confirmed = now;
                e.stale = stale;
                e.probes = 0;
                e.shared = now.unwrap_or(0);
                self.touch(i);
                self.forget_asked(a);
                self.invalidate();
                Learnt::Changed
            }
            None => {
                if self.dynamic >= self.max {
                    let asked = !self.asked.is_empty() && self.asked.contains_key(&a);
                    if !asked && !may_evict() {
                        return Learnt::Limited;
                    }
                    self.evict_stalest();
                }
                let i = self.alloc(Entry {
                    addr: a,
                    mac,
                    is_static: false,
                    used: false,
                    confirmed: now,
                    stale,
                    probes: 0,
                    probed: 0,
                    shared: now.unwrap_or(0),
                    prev: NIL,
                    next: NIL,
                });
                self.map.insert(a, i);
                self.push_back(i);
                self.dynamic += 1;
                self.forget_asked(a);
                // No flow holds a MAC for an address that had no entry (a flow whose next hop
                // is unresolved looks it up again on its next packet): `gen` stays, so a
                // flood of new neighbours does not make every flow look its MACs up again.
                Learnt::Changed
            }
        }
    }
    /// An advertisement without the Override flag for another MAC than `a`'s entry holds (RFC
    /// 4861 section 7.2.5): a REACHABLE entry (confirmed less than [`REACHABLE_NS`] ago, not
    /// stale, not probing) becomes STALE, keeping its MAC; anything else stays.
    pub fn suspect(&mut self, a: Addr, now: u64) {
        let Some(&i) = self.map.get(&a) else { return };
        let e = &mut self.slots[i as usize];
        let reachable = matches!(e.confirmed, Some(c) if now.saturating_sub(c) < REACHABLE_NS);
        if !e.is_static && !e.stale && e.probes == 0 && reachable {
            e.stale = true;
            e.confirmed = Some(now);
        }
    }

    /// `a` answered: no request of ours for it is pending any more. Most of the time none
    /// is pending for any address, and the check spares a neighbour flood a hash of `a`.
    #[inline]
    fn forget_asked(&mut self, a: Addr) {
        if !self.asked.is_empty() {
            self.asked.remove(&a);
        }
    }

    /// Is a request of ours for `a` pending (sent less than [`INCOMPLETE_NS`] ago, not
    /// answered): Linux's INCOMPLETE entry.
    pub fn resolving(&self, a: Addr, now: u64) -> bool {
        self.asked.get(&a).is_some_and(|&t| now.saturating_sub(t) < INCOMPLETE_NS)
    }

    /// Evict the stalest dynamic entry no flow uses as a next hop; entries in use get a
    /// second chance (moved to the fresh end, at most [`SECOND_CHANCES`] of them per
    /// eviction), so a flood of new neighbours does not push out the next hops of live
    /// connections.
    fn evict_stalest(&mut self) {
        let mut chances = SECOND_CHANCES;
        while let Some(e) = self.slots.get(self.head as usize) {
            let i = self.head;
            if e.used && chances > 0 {
                chances -= 1;
                self.touch(i);
                continue;
            }
            if self.remove(i) {
                // Flows may have cached its MAC.
                self.invalidate();
            }
            self.evicted += 1;
            return;
        }
    }

    /// Remove dynamic entry `i`; returns whether a flow used it (may have cached its MAC:
    /// the caller moves `gen` on).
    fn remove(&mut self, i: u32) -> bool {
        let e = self.slots[i as usize];
        self.unlink(i);
        self.map.remove(&e.addr);
        self.slots[i as usize].next = self.free;
        self.free = i;
        self.dynamic -= 1;
        e.used
    }

    /// Age a share of the table at `now` (the worker's timer, every 2^[`AGE_SHIFT`] ns): the
    /// next `max(AGE_MIN, slots / AGE_PARTS)` slots. `in_use(a)` tells whether a connection
    /// uses `a` as its next hop, and where (`T`, the interface): an entry confirmed more
    /// than [`REACHABLE_NS`] (plus this worker's turn: `who` = (worker, workers), see the
    /// module docs) ago and in use gets a unicast probe, pushed to `probes` as (address,
    /// cached MAC, where), every [`PROBE_NS`] up to [`UCAST_PROBES`]; then, unanswered, it is
    /// removed. An entry not in use is removed once unconfirmed for [`UNUSED_NS`]. Removing
    /// an entry a flow used moves `gen` on (once per call). Returns the entries removed
    /// (failed after their probes, unused).
    pub fn age<T>(
        &mut self,
        now: u64,
        who: (usize, usize),
        mut in_use: impl FnMut(Addr) -> Option<T>,
        probes: &mut Vec<(Addr, [u8; 6], T)>,
    ) -> Aged {
        let mut aged = Aged::default();
        let n = self.slots.len();
        if self.dynamic == 0 || n == 0 {
            return aged;
        }
        let mut invalidate = false;
        let budget = AGE_MIN.max(n.div_ceil(AGE_PARTS)).min(n);
        let mut pos = self.age_pos;
        for _ in 0..budget {
            if pos >= n {
                pos = 0;
            }
            let i = pos as u32;
            pos += 1;
            let e = &mut self.slots[i as usize];
            // Static entries and free slots (free ones are off the map: their `addr` is stale).
            if e.is_static || self.map.get(&e.addr) != Some(&i) {
                continue;
            }
            let confirmed = *e.confirmed.get_or_insert(now);
            let age = now.saturating_sub(confirmed);
            if e.probes > 0 {
                if now.saturating_sub(e.probed) < PROBE_NS {
                    continue;
                }
                if e.probes >= UCAST_PROBES {
                    aged.failed += 1;
                    invalidate |= self.remove(i);
                    continue;
                }
            } else if age < if e.stale { DELAY_NS } else { REACHABLE_NS } + stagger(e.addr, who) {
                continue;
            }
            let (a, mac) = (e.addr, e.mac);
            match in_use(a) {
                Some(t) => {
                    let e = &mut self.slots[i as usize];
                    e.probes += 1;
                    e.probed = now;
                    probes.push((a, mac, t));
                }
                None if age >= UNUSED_NS => {
                    aged.unused += 1;
                    invalidate |= self.remove(i);
                }
                // No longer in use: no more probes (it ages out unless confirmed or used).
                None => self.slots[i as usize].probes = 0,
            }
        }
        self.age_pos = pos;
        if invalidate {
            self.invalidate();
        }
        aged
    }
    /// Are there dynamic entries (anything for [`NeighCache::age`] to do)?
    pub fn has_dynamic(&self) -> bool {
        self.dynamic > 0
    }

    /// [`NeighCache::get`] for a flow resolving its next hop: marks the entry in use.
    #[inline]
    pub fn resolve(&mut self, a: Addr) -> Option<[u8; 6]> {
        let i = *self.map.get(&a)?;
        let e = &mut self.slots[i as usize];
        e.used = true;
        Some(e.mac)
    }
    /// Entries evicted since the last call (for the worker's counter).
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }
    /// The bound on dynamic entries.
    pub fn max(&self) -> usize {
        self.max
    }
    #[inline]
    pub fn get(&self, a: Addr) -> Option<[u8; 6]> {
        self.map.get(&a).map(|&i| self.slots[i as usize].mac)
    }
    /// Should a request for `a` go out now? (At most one per second.)
    pub fn should_ask(&mut self, a: Addr, now: u64) -> bool {
        match self.asked.get(&a) {
            Some(&t) if now.saturating_sub(t) < 1_000_000_000 => false,
            _ => {
                if self.asked.len() > 4096 {
                    self.asked.clear();
                }
                self.asked.insert(a, now);
                true
            }
        }
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Forget every entry, static or learnt, and every pending request
    /// (keeps the tables' memory).
    pub fn clear(&mut self) {
        self.map.clear();
        self.slots.clear();
        (self.free, self.head, self.tail) = (NIL, NIL, NIL);
        self.dynamic = 0;
        self.evicted = 0;
        self.asked.clear();
        self.age_pos = 0;
        self.gen = 1;
    }

    /// The dynamic entries' addresses, stalest first (tests).
    #[cfg(test)]
    fn order(&self) -> Vec<Addr> {
        let mut v = Vec::new();
        let mut i = self.head;
        while let Some(e) = self.slots.get(i as usize) {
            v.push(e.addr);
            i = e.next;
        }
        v
    }
}

/// What [`NeighCache::age`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aged {
    /// Entries in use whose unicast probes went unanswered.
    pub failed: u64,
    /// Entries no connection used, unconfirmed for [`UNUSED_NS`].
    pub unused: u64,
}

/// How much longer than [`REACHABLE_NS`] worker `who.0` of `who.1` waits before it probes
/// `a`: [`STAGGER_NS`] times its rank for `a` (a hash of the address plus the worker, so the
/// first to probe is not always the same worker).
fn stagger(a: Addr, (w, n): (usize, usize)) -> u64 {
    if n <= 1 {
        return 0;
    }
    let h = ((a as u64) ^ ((a >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    (h.wrapping_add(w as u64) % n as u64) * STAGGER_NS
}

/// Write an ARP packet (request if `target_mac` is None) into `out`;
/// returns its length (42), [`Truncated`] if `out` is shorter.
pub fn build_arp(
    out: &mut [u8],
    op: u16,
    src_mac: [u8; 6],
    src: Addr,
    target_mac: Option<[u8; 6]>,
    target: Addr,
) -> Result<usize, Truncated> {
    let mut eth = EthAddrs::at_mut(out, 0)?;
    eth.set_dst(target_mac.unwrap_or([0xff; 6]));
    eth.set_src(src_mac);
    out.get_mut(12..14).ok_or(Truncated)?.copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    Arp::at_mut(out, 14)?.write(
        op,
        (src_mac, addr_v4_bytes(src)),
        (target_mac.unwrap_or([0; 6]), addr_v4_bytes(target)),
    );
    Ok(14 + 28)
}

/// Solicited-node multicast address and MAC for `target`.
pub fn solicited_node(target: Addr) -> ([u8; 16], [u8; 6]) {
    let t = addr_v6_bytes(target);
    let ip = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]];
    (ip, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
}

/// Write a neighbour solicitation (ty 135) or advertisement (ty 136) into
/// `out`; returns its length (86), [`Truncated`] if `out` is shorter.
#[allow(clippy::too_many_arguments)]
pub fn build_nd(
    out: &mut [u8],
    ty: u8,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    flags: u8,
) -> Result<usize, Truncated> {
    // The message: ICMPv6 header (flags in the first byte after the checksum), the
    // target, and one option, the source (1) or target (2) link-layer address.
    const ND_LEN: usize = 8 + 16 + 8;
    let mut eth = EthAddrs::at_mut(out, 0)?;
    eth.set_dst(dst_mac);
    eth.set_src(src_mac);
    out.get_mut(12..14).ok_or(Truncated)?.copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let mut ip = Ipv6::at_mut(out, 14)?;
    ip.set_version_class(0);
    ip.set_payload_len(ND_LEN as u16);
    ip.set_next_header(PROTO_ICMPV6);
    // RFC 4861: neighbour discovery is sent with hop limit 255 and checked for it.
    ip.set_hop_limit(255);
    ip.set_src(src);
    ip.set_dst(dst);
    let m: &mut [u8; ND_LEN] = out.get_mut(54..).and_then(|m| m.first_chunk_mut()).ok_or(Truncated)?;
    *m = [0; ND_LEN];
    m[0] = ty;
    m[4] = flags;
    m[8..24].copy_from_slice(&target);
    m[24] = if ty == 135 { 1 } else { 2 };
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac);
    let ck = csum::finish_v6(&src, &dst, PROTO_ICMPV6, m);
    m[2..4].copy_from_slice(&ck.to_be_bytes());
    Ok(54 + ND_LEN)
}

/// The rest of RFC 4861's validity checks (sections 7.1.1 and 7.1.2, as Linux's
/// `ndisc_rcv`, `ndisc_recv_ns` and `ndisc_recv_na` apply them) of a solicitation (135) or
/// advertisement (136) `m` (the ICMPv6 message, at least 24 bytes) from `src` to `dst`, but
/// the checksum ([`nd_checksum_ok`]): the code 0, the target not a multicast address; a
/// solicitation from the unspecified address (duplicate address detection) goes to a
/// solicited-node address and carries no source link-layer address; an advertisement to a
/// multicast address is not "solicited". Anything else is silently discarded.
///
/// Apart from the checksum because these checks cost a few compares and the checksum a sum
/// over the whole message: the worker verifies it only for a message it acts on (learns
/// from, answers, counts), so a flood of messages it ignores anyway does not pay for it.
pub fn nd_form_ok(ty: u8, m: &[u8], src: &[u8; 16], dst: &[u8; 16]) -> bool {
    if m.len() < 24 || m[1] != 0 || m[8] == 0xff {
        return false;
    }
    match ty {
        135 if src == &[0; 16] => {
            let solicited_node = dst[..13] == [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
            solicited_node && nd_lladdr(&m[24..], 1).is_none()
        }
        136 => dst[0] != 0xff || m[4] & 0x40 == 0,
        _ => true,
    }
}

/// Is the ICMPv6 checksum of ND message `m` from `src` to `dst` right (RFC 4861 section
/// 7.1.1's first check; see [`nd_form_ok`] for the others)?
pub fn nd_checksum_ok(m: &[u8], src: &[u8; 16], dst: &[u8; 16]) -> bool {
    csum::finish_v6(src, dst, PROTO_ICMPV6, m) == 0
}

/// Are the ND options `opts` well formed: every option at least 8 bytes long (a length of 0
/// is invalid: RFC 4861 section 4.6 and 7.1.1, the message is silently discarded, as Linux's
/// `ndisc_parse_options` does) and none running past the message?
pub fn nd_options_ok(opts: &[u8]) -> bool {
    let mut o = opts;
    while !o.is_empty() {
        let len = o.get(1).map_or(0, |&l| l as usize * 8);
        if len == 0 || len > o.len() {
            return false;
        }
        o = &o[len..];
    }
    true
}

/// Find the link-layer address option of type `want` in ND options.
pub fn nd_lladdr(opts: &[u8], want: u8) -> Option<[u8; 6]> {
    let mut o = opts;
    while o.len() >= 8 {
        let len = o[1] as usize * 8;
        if len == 0 || len > o.len() {
            return None;
        }
        if o[0] == want && len >= 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&o[2..8]);
            return Some(m);
        }
        o = &o[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    #[test]
    fn built_nd_messages_verify_with_the_full_checksum() {
        // The advertisement answering a solicitation and a solicitation, with addresses whose
        // words carry (0xffff) and not: the checksum build_nd writes is the one a full sum
        // over pseudo-header and message verifies (as a receiver checks it).
        let ours = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let peers = [[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], [0xff; 16], [0; 16]];
        for peer in peers {
            for (ty, flags) in [(136, 0x60), (136, 0x20), (135, 0)] {
                let mut out = [0u8; 86];
                let n = build_nd(&mut out, ty, [2, 0xff, 0xff, 0, 0, 1], mac(9), ours, peer, ours, flags)
                    .expect("86 bytes");
                assert_eq!(n, 86);
                let m = &out[54..n];
                assert_eq!(csum::finish(m, csum::pseudo_v6(&ours, &peer, PROTO_ICMPV6, 32)), 0, "{ty} to {peer:?}");
                assert!(nd_checksum_ok(m, &ours, &peer));
                crate::tools::testpkt::verify_checksums(&out).expect("valid");
            }
        }
    }

    #[test]
    fn bounded_evicts_the_stalest_dynamic_never_static() {
        let mut c = NeighCache::with_max(3);
        c.add_static(100, mac(100));
        for a in 1..=3 {
            assert!(c.learn(a, mac(a as u8)));
        }
        // Confirm 1: now 2 is the stalest.
        assert!(!c.learn(1, mac(1)));
        let gen = c.gen;
        assert!(c.learn(4, mac(4)));
        assert_eq!(c.gen, gen, "no flow used 2: nothing to invalidate");
        assert_eq!(c.get(2), None, "stalest evicted");
        assert_eq!(c.take_evicted(), 1);
        assert_eq!(c.take_evicted(), 0);
        for a in 5..50 {
            c.learn(a, mac(a as u8));
        }
        assert_eq!(c.len(), 4, "3 dynamic + 1 static");
        assert_eq!(c.get(100), Some(mac(100)), "static never evicted");
        assert_eq!(c.take_evicted(), 45);
        assert_eq!(c.order(), vec![47, 48, 49], "the dynamic entries, stalest first");
        assert_eq!(c.slots.len(), 4, "evicted entries' slots are reused");
    }

    #[test]
    fn a_new_generation_never_is_that_of_an_unresolved_hop() {
        let mut c = NeighCache::with_max(4);
        let g = c.gen;
        c.invalidate();
        assert_eq!(c.gen, g + 1);
        // At the wrap the next generation is 1, never 0 (`flow::HopMac` of a hop not
        // resolved yet): a stale cache entry cannot pass for a valid one.
        c.gen = u32::MAX;
        c.invalidate();
        assert_eq!(c.gen, 1);
        c.clear();
        assert_ne!(c.gen, 0);
    }

    #[test]
    fn next_hops_in_use_outlive_a_flood_of_new_neighbours() {
        let mut c = NeighCache::with_max(4);
        assert!(c.learn(1, mac(1)));
        assert_eq!(c.resolve(1), Some(mac(1)), "a flow's next hop");
        let gen = c.gen;
        for a in 2..1000 {
            c.learn(a, mac(a as u8));
        }
        assert_eq!(c.get(1), Some(mac(1)), "the next hop in use survived");
        assert_eq!(c.gen, gen, "flows' cached MACs stay valid");
        assert_eq!(c.len(), 4);
        // All in use: the stalest goes anyway, and flows must look again.
        for a in 996..1000 {
            c.resolve(a);
        }
        c.learn(5000, mac(1));
        assert_ne!(c.gen, gen);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn full_table_evicts_for_the_unasked_only_when_allowed() {
        let mut c = NeighCache::with_max(4);
        for a in 1..=4 {
            assert_eq!(
                c.learn_with(a, mac(a as u8), None, || panic!("room left: no eviction to ask about")),
                Learnt::Changed
            );
        }
        // Full: a stranger may not evict...
        assert_eq!(c.learn_with(9, mac(9), None, || false), Learnt::Limited);
        assert_eq!((c.get(9), c.len(), c.take_evicted()), (None, 4, 0));
        // ...known entries are still confirmed and changed without asking...
        assert_eq!(c.learn_with(1, mac(1), None, || panic!("no eviction")), Learnt::Unchanged);
        assert_eq!(c.learn_with(2, mac(22), None, || panic!("no eviction")), Learnt::Changed);
        assert_eq!(c.get(2), Some(mac(22)));
        // ...and a neighbour we asked for gets in whatever the limit says.
        assert!(c.should_ask(10, 0));
        assert_eq!(c.learn_with(10, mac(10), None, || false), Learnt::Changed);
        assert_eq!((c.get(10), c.len(), c.take_evicted()), (Some(mac(10)), 4, 1));
        // Allowed: the stranger evicts the stalest.
        assert_eq!(c.learn_with(9, mac(9), None, || true), Learnt::Changed);
        assert_eq!((c.get(9), c.take_evicted()), (Some(mac(9)), 1));
    }

    #[test]
    fn confirmations_are_rate_bound_per_neighbour() {
        let mut c = NeighCache::with_max(16);
        for a in 1..=16 {
            c.learn_with(a, mac(a as u8), Some(0), || true);
        }
        let learnt = c.order();
        assert_eq!(learnt, (1..=16).collect::<Vec<Addr>>());
        // Confirmed within CONFIRM_NS of learning: in place.
        for t in 0..100 {
            assert_eq!(c.learn_with(1, mac(1), Some(t * 1000), || true), Learnt::Unchanged);
        }
        assert_eq!(c.order(), learnt);
        // Later: 1 moves to the fresh end, so 2 is evicted first.
        c.learn_with(1, mac(1), Some(CONFIRM_NS), || true);
        assert_eq!(c.order().first().copied(), Some(2));
        assert_eq!(c.order().last().copied(), Some(1));
        c.learn_with(100, mac(100), Some(CONFIRM_NS), || true);
        assert_eq!((c.get(1), c.get(2)), (Some(mac(1)), None));
        // A new MAC is never "recent": it changes at once.
        assert_eq!(c.learn_with(3, mac(33), Some(CONFIRM_NS), || true), Learnt::Changed);
        assert_eq!(c.get(3), Some(mac(33)));
        assert_eq!(c.order().last().copied(), Some(3), "a changed entry is the freshest");
        // Without a clock every confirmation counts.
        c.learn(4, mac(4));
        assert_eq!(c.order().last().copied(), Some(4));
        c.learn(5, mac(5));
        c.learn(4, mac(4));
        assert_eq!(c.order().last().copied(), Some(4));
        assert_eq!(c.order().len(), 16);
    }

    #[test]
    fn refreshes_do_not_grow_without_bound() {
        let mut c = NeighCache::with_max(4);
        for a in 1..=4 {
            c.learn(a, mac(a as u8));
        }
        for _ in 0..10_000 {
            for a in 1..=4 {
                c.learn(a, mac(a as u8));
            }
        }
        assert_eq!(c.order().len(), 4);
        assert_eq!(c.slots.len(), 4);
        assert_eq!(c.len(), 4);
        assert_eq!(c.take_evicted(), 0);
        // A static entry replacing a dynamic one frees its place in the bound.
        c.add_static(1, mac(9));
        assert_eq!(c.order(), vec![2, 3, 4]);
        assert!(c.learn(5, mac(5)));
        assert_eq!(c.take_evicted(), 0);
        assert!(!c.learn(1, mac(1)), "static wins");
        assert_eq!(c.order(), vec![2, 3, 4, 5]);
        assert_eq!(c.get(1), Some(mac(9)));
    }

    const SEC: u64 = 1_000_000_000;

    /// `c.age` at `now` as worker `who`, `in_use` the addresses connections use (on
    /// interface 7): the probes it asks for (address, MAC) and what it removed.
    fn age_at(c: &mut NeighCache, now: u64, who: (usize, usize), in_use: &[Addr]) -> (Vec<(Addr, [u8; 6])>, Aged) {
        let mut probes = Vec::new();
        let aged = c.age(now, who, |a| in_use.contains(&a).then_some(7u8), &mut probes);
        assert!(probes.iter().all(|p| p.2 == 7), "where the connections use it");
        (probes.into_iter().map(|(a, m, _)| (a, m)).collect(), aged)
    }

    #[test]
    fn an_unconfirmed_entry_in_use_is_probed_three_times_then_removed() {
        let mut c = NeighCache::with_max(16);
        let none = Aged::default();
        c.learn_with(1, mac(1), Some(0), || true);
        assert_eq!(c.resolve(1), Some(mac(1)));
        let gen = c.gen;
        // Reachable for REACHABLE_NS: no probe.
        assert_eq!(age_at(&mut c, REACHABLE_NS - 1, (0, 1), &[1]), (vec![], none));
        // Then a unicast probe to the cached MAC, every PROBE_NS, three in all.
        let t = REACHABLE_NS;
        assert_eq!(age_at(&mut c, t, (0, 1), &[1]), (vec![(1, mac(1))], none));
        assert_eq!(age_at(&mut c, t + PROBE_NS / 2, (0, 1), &[1]), (vec![], none), "1 s apart");
        assert_eq!(age_at(&mut c, t + PROBE_NS, (0, 1), &[1]), (vec![(1, mac(1))], none));
        assert_eq!(age_at(&mut c, t + 2 * PROBE_NS, (0, 1), &[1]), (vec![(1, mac(1))], none));
        assert_eq!((c.get(1), c.gen), (Some(mac(1)), gen), "still used while probing (Linux's PROBE)");
        // Unanswered: removed, and flows that cached its MAC must look again.
        let failed = Aged { failed: 1, unused: 0 };
        assert_eq!(age_at(&mut c, t + 3 * PROBE_NS, (0, 1), &[1]), (vec![], failed));
        assert_eq!(c.get(1), None);
        assert_ne!(c.gen, gen);
        assert!(!c.has_dynamic());
        // Resolved again (by broadcast), maybe at another MAC: a fresh entry.
        assert_eq!(c.learn_with(1, mac(2), Some(t + 4 * PROBE_NS), || true), Learnt::Changed);
        assert_eq!(age_at(&mut c, t + 5 * PROBE_NS, (0, 1), &[1]), (vec![], none));
    }

    #[test]
    fn an_answered_probe_keeps_the_entry() {
        let mut c = NeighCache::with_max(16);
        let none = Aged::default();
        c.learn_with(1, mac(1), Some(0), || true);
        c.resolve(1);
        let t = REACHABLE_NS;
        assert_eq!(age_at(&mut c, t, (0, 1), &[1]).0, vec![(1, mac(1))]);
        // The answer (an ARP reply, an advertisement) confirms it.
        assert_eq!(c.learn_with(1, mac(1), Some(t + 1000), || true), Learnt::Confirmed);
        let gen = c.gen;
        for k in 1..30 {
            assert_eq!(age_at(&mut c, t + k * SEC, (0, 1), &[1]), (vec![], none), "{k} s after the answer");
        }
        assert_eq!((c.get(1), c.gen), (Some(mac(1)), gen));
        // Reachable time after the answer: probed again.
        assert_eq!(age_at(&mut c, 2 * t + 1000, (0, 1), &[1]).0, vec![(1, mac(1))]);
        // An answer between the second and the third probe also counts.
        assert_eq!(age_at(&mut c, 2 * t + 1000 + SEC, (0, 1), &[1]).0, vec![(1, mac(1))]);
        c.learn_with(1, mac(1), Some(2 * t + SEC + 2000), || true);
        for k in 2..10 {
            assert_eq!(age_at(&mut c, 2 * t + k * SEC, (0, 1), &[1]), (vec![], none));
        }
        assert_eq!(c.get(1), Some(mac(1)));
    }

    #[test]
    fn unused_entries_age_out_unprobed_and_static_ones_never() {
        let mut c = NeighCache::with_max(16);
        c.add_static(9, mac(9));
        c.learn_with(1, mac(1), Some(0), || true);
        c.learn_with(2, mac(2), Some(0), || true);
        // 2 was a next hop once (a flow may still hold its MAC), no connection uses it now.
        c.resolve(2);
        let gen = c.gen;
        for k in 0..UNUSED_NS / SEC {
            let (probes, aged) = age_at(&mut c, k * SEC, (0, 1), &[]);
            assert_eq!((probes, aged), (vec![], Aged::default()), "not probed ({k} s)");
        }
        assert_eq!(age_at(&mut c, UNUSED_NS, (0, 1), &[]), (vec![], Aged { failed: 0, unused: 2 }));
        assert_eq!((c.get(1), c.get(2)), (None, None));
        assert_ne!(c.gen, gen, "2 was used: flows must look again");
        let gen = c.gen;
        // Static entries: never probed, never removed, even in use.
        assert_eq!(age_at(&mut c, 100 * UNUSED_NS, (0, 1), &[9]), (vec![], Aged::default()));
        assert_eq!((c.get(9), c.gen), (Some(mac(9)), gen));
        // An entry learnt without a clock (another worker, tests) ages from when it is first seen.
        c.learn(3, mac(3));
        let t = 200 * UNUSED_NS;
        assert_eq!(age_at(&mut c, t, (0, 1), &[3]).0, vec![]);
        assert_eq!(age_at(&mut c, t + REACHABLE_NS, (0, 1), &[3]).0, vec![(3, mac(3))]);
        // Probing stops when the entry is no longer in use.
        assert_eq!(age_at(&mut c, t + REACHABLE_NS + SEC, (0, 1), &[]).0, vec![]);
        assert_eq!(age_at(&mut c, t + REACHABLE_NS + 2 * SEC, (0, 1), &[]).0, vec![]);
        assert_eq!(c.get(3), Some(mac(3)));
    }

    #[test]
    fn a_large_table_is_aged_in_shares() {
        let n = 4096;
        let mut c = NeighCache::with_max(n);
        for a in 0..n as Addr {
            c.learn_with(a, mac(1), Some(0), || true);
            c.resolve(a);
        }
        let all: Vec<Addr> = (0..n as Addr).collect();
        let mut probed = std::collections::HashSet::new();
        for k in 0..AGE_PARTS as u64 {
            let (p, _) = age_at(&mut c, REACHABLE_NS + k, (0, 1), &all);
            assert_eq!(p.len(), n / AGE_PARTS, "a share per call");
            probed.extend(p.into_iter().map(|(a, _)| a));
        }
        assert_eq!(probed.len(), n, "every entry once per pass");
    }

    #[test]
    fn workers_take_turns_and_share_confirmations() {
        // Two workers' caches, both using neighbour 1, learnt at the same time.
        let mut w = [NeighCache::with_max(16), NeighCache::with_max(16)];
        for c in w.iter_mut() {
            c.learn_with(1, mac(1), Some(0), || true);
            c.resolve(1);
        }
        // One worker probes first, the other STAGGER_NS later.
        let first: Vec<usize> =
            (0..2).filter(|&k| !age_at(&mut w[k], REACHABLE_NS, (k, 2), &[1]).0.is_empty()).collect();
        assert_eq!(first.len(), 1, "one worker probes at the reachable time");
        let (f, o) = (first[0], 1 - first[0]);
        // Its answer, received by either worker, is shared: a confirmation of each entry.
        let t = REACHABLE_NS + 1_000_000;
        assert_eq!(w[o].learn_with(1, mac(1), Some(t), || true), Learnt::Confirmed, "shared...");
        assert_eq!(w[f].learn_with(1, mac(1), Some(t), || true), Learnt::Confirmed, "...and confirms");
        // So the other never probes.
        for k in 0..10 {
            assert_eq!(age_at(&mut w[o], REACHABLE_NS + STAGGER_NS + k * SEC, (o, 2), &[1]).0, vec![]);
        }
        // Without an answer the other probes after its turn.
        let mut w = [NeighCache::with_max(16), NeighCache::with_max(16)];
        for c in w.iter_mut() {
            c.learn_with(1, mac(1), Some(0), || true);
            c.resolve(1);
        }
        assert_eq!(age_at(&mut w[o], REACHABLE_NS + STAGGER_NS - 1, (o, 2), &[1]).0, vec![]);
        assert_eq!(age_at(&mut w[o], REACHABLE_NS + STAGGER_NS, (o, 2), &[1]).0, vec![(1, mac(1))]);
    }

    #[test]
    fn confirmations_are_shared_at_most_every_share_ns() {
        let mut c = NeighCache::with_max(4);
        let t = 10 * SEC;
        assert_eq!(c.learn_with(1, mac(1), Some(t), || true), Learnt::Changed);
        assert_eq!(c.learn_with(1, mac(1), Some(t + CONFIRM_NS), || true), Learnt::Unchanged, "shared when learnt");
        assert_eq!(c.learn_with(1, mac(1), Some(t + SHARE_NS), || true), Learnt::Confirmed);
        assert_eq!(c.learn_with(1, mac(1), Some(t + SHARE_NS + CONFIRM_NS), || true), Learnt::Unchanged);
        assert_eq!(c.learn_with(1, mac(1), Some(t + 2 * SHARE_NS), || true), Learnt::Confirmed);
        assert_eq!(c.learn_with(1, mac(1), None, || true), Learnt::Unchanged, "no clock: nothing to share");
    }

    #[test]
    fn only_reachable_confirms_and_stale_is_probed_after_the_delay() {
        let mut c = NeighCache::with_max(16);
        c.learn_with(1, mac(1), Some(0), || true);
        c.resolve(1);
        // The same MAC, not proving reachability: nothing, the entry is probed on time.
        assert_eq!(c.update(1, mac(1), Seen::Stale, Some(10 * SEC), || true), Learnt::Unchanged);
        assert_eq!(c.order(), vec![1]);
        assert_eq!(age_at(&mut c, REACHABLE_NS, (0, 1), &[1]).0, vec![(1, mac(1))]);
        // A new MAC: taken at once (flows must look again), stale, probed after DELAY_NS.
        let (t, gen) = (REACHABLE_NS + 100, c.gen);
        assert_eq!(c.update(1, mac(2), Seen::Stale, Some(t), || true), Learnt::Changed);
        assert_eq!((c.get(1), c.gen == gen), (Some(mac(2)), false));
        assert_eq!(age_at(&mut c, t + DELAY_NS - 1, (0, 1), &[1]).0, vec![]);
        assert_eq!(age_at(&mut c, t + DELAY_NS, (0, 1), &[1]).0, vec![(1, mac(2))]);
        // Confirmed at once after (never "recent" while stale), and shared.
        assert_eq!(c.update(1, mac(2), Seen::Reachable, Some(t + DELAY_NS + 1), || true), Learnt::Confirmed);
        assert_eq!(age_at(&mut c, t + DELAY_NS + SEC, (0, 1), &[1]).0, vec![]);
        // Another MAC without override: a reachable entry turns stale, keeping its MAC.
        let t2 = t + DELAY_NS + 2 * SEC;
        c.suspect(1, t2);
        assert_eq!(c.get(1), Some(mac(2)));
        assert_eq!(age_at(&mut c, t2 + DELAY_NS, (0, 1), &[1]).0, vec![(1, mac(2))]);
        // A stale new entry, unused, still ages out after UNUSED_NS.
        assert_eq!(c.update(5, mac(5), Seen::Stale, Some(t2), || true), Learnt::Changed);
        assert_eq!(age_at(&mut c, t2 + UNUSED_NS, (0, 1), &[1]).1.unused, 1);
        assert_eq!(c.get(5), None);
    }

    /// What the cache must do, kept the simplest way: the dynamic entries in a vector,
    /// stalest first.
    #[derive(Default)]
    struct Model {
        entries: std::collections::HashMap<Addr, ([u8; 6], bool, bool)>, // mac, static, used
        order: Vec<Addr>,
    }

    impl Model {
        fn learn(&mut self, a: Addr, m: [u8; 6], max: usize) -> bool {
            match self.entries.get_mut(&a) {
                Some((_, true, _)) => false,
                Some((old, false, _)) => {
                    let changed = *old != m;
                    *old = m;
                    self.order.retain(|&x| x != a);
                    self.order.push(a);
                    changed
                }
                None => {
                    if self.order.len() >= max {
                        let mut chances = SECOND_CHANCES;
                        loop {
                            let h = self.order[0];
                            if self.entries[&h].2 && chances > 0 {
                                chances -= 1;
                                self.order.remove(0);
                                self.order.push(h);
                                continue;
                            }
                            self.order.remove(0);
                            self.entries.remove(&h);
                            break;
                        }
                    }
                    self.entries.insert(a, (m, false, false));
                    self.order.push(a);
                    true
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_plain_model(ops in proptest::collection::vec((0u8..4, 0u128..12, 1u8..4), 1..200)) {
            let max = 5;
            let mut c = NeighCache::with_max(max);
            let mut m = Model::default();
            for (op, a, x) in ops {
                match op {
                    0 | 1 => proptest::prop_assert_eq!(c.learn(a, mac(x)), m.learn(a, mac(x), max)),
                    2 => {
                        let want = m.entries.get_mut(&a).map(|e| {
                            e.2 = true;
                            e.0
                        });
                        proptest::prop_assert_eq!(c.resolve(a), want);
                    }
                    _ if x == 1 => {
                        c.add_static(a, mac(x));
                        m.order.retain(|&y| y != a);
                        m.entries.insert(a, (mac(x), true, true));
                    }
                    _ => {}
                }
                proptest::prop_assert_eq!(c.order(), m.order.clone());
                proptest::prop_assert_eq!(c.len(), m.entries.len());
                for a in 0..12 {
                    proptest::prop_assert_eq!(c.get(a), m.entries.get(&a).map(|e| e.0));
                }
                proptest::prop_assert!(c.slots.len() <= max + 12, "slots are reused");
            }
        }
    }
}
