//! Neighbour resolution (ARP for IPv4, neighbour discovery for IPv6).
//!
//! Every worker keeps its own cache. A worker that learns a MAC (from an
//! ARP reply or request, or a neighbour advertisement or solicitation)
//! updates its cache and posts the update to every other worker through
//! their control rings, so no cache is shared and no lock is taken.
//! Static `[[neighbor]]` entries are loaded first and never overwritten.
//!
//! Floods of ARP/ND from many addresses: the table is bounded (the stalest
//! dynamic entry is evicted), a neighbour nobody asked for may evict only at
//! a bounded rate (the worker's [`EVICT_PER_SEC`] bucket; past it, it is not
//! learnt and `neigh_limited` counts it), and an entry is confirmed (moved
//! to the fresh end of the eviction order) at most every [`CONFIRM_NS`]:
//! more confirmations from the same neighbour cost a lookup and nothing else.

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
    /// When (ns) it was last learnt or confirmed with a clock ([`NeighCache::learn_with`]).
    confirmed: Option<u64>,
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

/// What [`NeighCache::learn_with`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learnt {
    /// A new entry, or a new MAC for an entry.
    Changed,
    /// Already known with this MAC (confirmed), static, or not a unicast MAC.
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
        let e = Entry { addr: a, mac, is_static: true, used: true, confirmed: None, prev: NIL, next: NIL };
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
    /// [`CONFIRM_NS`] ago is not confirmed again.
    pub fn learn_with(&mut self, a: Addr, mac: [u8; 6], now: Option<u64>, may_evict: impl FnOnce() -> bool) -> Learnt {
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Learnt::Unchanged;
        }
        match self.map.get(&a).copied() {
            Some(i) => {
                let e = &mut self.slots[i as usize];
                if e.is_static {
                    return Learnt::Unchanged;
                }
                if e.mac == mac {
                    let recent = matches!((now, e.confirmed), (Some(n), Some(c)) if n.wrapping_sub(c) < CONFIRM_NS);
                    if !recent {
                        e.confirmed = now;
                        self.touch(i);
                    }
                    return Learnt::Unchanged;
                }
                e.mac = mac;
                e.confirmed = now;
                self.touch(i);
                self.asked.remove(&a);
                self.invalidate();
                Learnt::Changed
            }
            None => {
                if self.dynamic >= self.max {
                    if !self.asked.contains_key(&a) && !may_evict() {
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
                    prev: NIL,
                    next: NIL,
                });
                self.map.insert(a, i);
                self.push_back(i);
                self.dynamic += 1;
                self.asked.remove(&a);
                // No flow holds a MAC for an address that had no entry (a flow whose next hop
                // is unresolved looks it up again on its next packet): `gen` stays, so a
                // flood of new neighbours does not make every flow look its MACs up again.
                Learnt::Changed
            }
        }
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
            let (a, used) = (e.addr, e.used);
            self.unlink(i);
            self.map.remove(&a);
            self.slots[i as usize].next = self.free;
            self.free = i;
            self.dynamic -= 1;
            self.evicted += 1;
            if used {
                // Flows may have cached its MAC.
                self.invalidate();
            }
            return;
        }
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
    let ck = csum::finish(m, csum::pseudo_v6(&src, &dst, PROTO_ICMPV6, ND_LEN as u32));
    m[2..4].copy_from_slice(&ck.to_be_bytes());
    Ok(54 + ND_LEN)
}

/// The rest of RFC 4861's validity checks (sections 7.1.1 and 7.1.2, as Linux's
/// `ndisc_rcv`, `ndisc_recv_ns` and `ndisc_recv_na` apply them) of a solicitation (135) or
/// advertisement (136) `m` (the ICMPv6 message, at least 24 bytes) from `src` to `dst`: the
/// ICMPv6 checksum is right, the code 0, the target not a multicast address; a solicitation
/// from the unspecified address (duplicate address detection) goes to a solicited-node
/// address and carries no source link-layer address; an advertisement to a multicast
/// address is not "solicited". Anything else is silently discarded.
pub fn nd_valid(ty: u8, m: &[u8], src: &[u8; 16], dst: &[u8; 16]) -> bool {
    let pseudo = csum::pseudo_v6(src, dst, PROTO_ICMPV6, m.len() as u32);
    if csum::finish(m, pseudo) != 0 || m[1] != 0 || m[8] == 0xff {
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
