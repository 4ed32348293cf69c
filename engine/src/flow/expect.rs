//! The FTP expectations (pinholes) of one worker: data connections the gateway announced and
//! the balancer must let through to the control connection's real server.
//!
//! What Linux does, and what we do:
//!
//! * **Bounded.** nf_conntrack_ftp allows `max_expected` (1) expectations per master and a
//!   global `nf_ct_expect_max`; a new one beyond the per-master limit evicts the master's oldest
//!   (`nf_ct_expect_related` → `evict_oldest_expect`), beyond the global limit it *fails*. Here a
//!   control connection holds at most `ftp.max_expectations` (default 4: clients such as lftp
//!   issue a PASV ahead of time), a newer one replacing its oldest; and the worker table holds at
//!   most `engine.expectation_table_size`: when full, the requesting session's oldest, or else the
//!   worker's oldest, is evicted — so one client can never deny pinholes to the others.
//! * **Never crossed.** An expectation is keyed by what identifies the data connection (client,
//!   VIP and the port). A second session wanting a key another live session holds is a clash:
//!   the caller ([`crate::pipeline::worker`]) moves a NAT passive one to another VIP port (as nf_nat_ftp
//!   does) and refuses an active one (the client's listening port cannot be moved; Linux's
//!   `nf_ct_expect_related` refuses a clashing expectation of another master with -EBUSY).
//!   DR passive expectations name no port at all (the balancer sees no replies); two sessions
//!   of one client waiting at once for the same real server are served oldest first (a chain
//!   per key, at most [`MAX_CHAIN`] long); for different servers the caller refuses the newer.
//! * **Cheap.** Expiry is swept incrementally from the oldest end of the creation order with a
//!   fixed budget per poll and no allocation; lookups check expiry lazily.
//!
//! TLS session pins (a control connection that switched to TLS pins every new connection of
//! its client to the VIP to its real server) live beside the expectations, one per client and
//! VIP, and die with their control connection.

use crate::wire::parse::Addr;
use hashbrown::HashMap;
use std::collections::VecDeque;

/// Keys of the expectation table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpKey {
    /// client -> vip:port (NAT passive).
    Passive(Addr, Addr, u16),
    /// client -> vip:any (DR passive).
    PassiveAny(Addr, Addr),
    /// rs -> client:port (NAT active); rs -> local address:reserved port (full NAT active).
    Active(Addr, Addr, u16),
    /// client:port -> vip (DR active: the client's side of a data connection the real server
    /// opened directly).
    DrActive(Addr, u16, Addr),
}

/// Where an expected data connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpVal {
    pub svc: u16,
    pub dest: u16,
    pub rs: Addr,
    /// Real-server port (`None`: the port the client used).
    pub rport: Option<u16>,
    pub vip: Addr,
    /// The control connection (flow index and generation).
    pub parent: u32,
    pub parent_gen: u32,
    pub expires: u64,
    /// Full NAT active (`ExpKey::Active(rs, local address, reserved port)`): the client
    /// address and port the real server's connection is translated to. 0 otherwise.
    pub client: Addr,
    pub cport: u16,
}

impl ExpVal {
    fn owner(&self) -> (u32, u32) {
        (self.parent, self.parent_gen)
    }
}

/// Longest chain of DR passive expectations for one (client, VIP).
pub const MAX_CHAIN: usize = 16;
/// Largest per-session limit (`ftp.max_expectations` is validated against it).
pub const MAX_PER_SESSION: usize = 16;
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    key: ExpKey,
    val: ExpVal,
    live: bool,
    serial: u32,
    /// The next (newer) slot with the same key.
    next: u32,
}

#[derive(Clone, Copy)]
struct Session {
    gen: u32,
    n: u8,
    /// Oldest first.
    slots: [u32; MAX_PER_SESSION],
}

/// What an insertion displaced, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Displaced {
    /// The session's oldest, replaced under the per-session limit (its service).
    pub replaced: Option<u16>,
    /// Evicted because the table was full (its service).
    pub evicted: Option<u16>,
}

/// The expectation table of one worker.
pub struct ExpectTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Key -> oldest slot with that key.
    index: HashMap<ExpKey, u32>,
    /// (slot, serial) in creation order; entries whose slot died or was reused are skipped.
    order: VecDeque<(u32, u32)>,
    sessions: HashMap<u32, Session>,
    pins: HashMap<(Addr, Addr), ExpVal>,
    serial: u32,
    cap: usize,
    len: usize,
    /// Full-NAT active expectations removed unused (replaced, evicted, their session ended,
    /// expired, unconfigured) with their expiry: the local ports reserved for them are to go
    /// back to the pool ([`ExpectTable::pop_unreserved`]). Not those taken by a connection.
    unreserved: Vec<(ExpKey, u64)>,
}

impl ExpectTable {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let pre = cap.min(4096);
        ExpectTable {
            slots: Vec::with_capacity(pre),
            free: Vec::new(),
            index: HashMap::with_capacity(pre),
            order: VecDeque::with_capacity(pre),
            sessions: HashMap::new(),
            pins: HashMap::new(),
            serial: 0,
            cap,
            len: 0,
            unreserved: Vec::new(),
        }
    }

    /// Live expectations (pins not included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The oldest expectation with `key`.
    pub fn get(&self, key: &ExpKey) -> Option<&ExpVal> {
        self.index.get(key).map(|&s| &self.slots[s as usize].val)
    }

    /// Every expectation with `key`, oldest first.
    pub fn chain(&self, key: &ExpKey) -> impl Iterator<Item = &ExpVal> + '_ {
        let mut s = self.index.get(key).copied().unwrap_or(NIL);
        std::iter::from_fn(move || {
            if s == NIL {
                return None;
            }
            let slot = &self.slots[s as usize];
            s = slot.next;
            Some(&slot.val)
        })
    }

    /// Removes and returns the oldest expectation with `key`.
    pub fn take(&mut self, key: &ExpKey) -> Option<ExpVal> {
        let s = *self.index.get(key)?;
        let v = self.slots[s as usize].val;
        self.remove_slot(s);
        Some(v)
    }

    /// Keeps only the expectations with `key` for which `keep` is true.
    pub fn retain_key(&mut self, key: &ExpKey, mut keep: impl FnMut(&ExpVal) -> bool) {
        let mut s = self.index.get(key).copied().unwrap_or(NIL);
        while s != NIL {
            let next = self.slots[s as usize].next;
            if !keep(&self.slots[s as usize].val) {
                self.drop_slot(s);
            }
            s = next;
        }
    }

    /// Inserts `val` under `key`, after any expectations already there (callers remove or
    /// refuse clashing ones first; only DR passive keys chain). Enforces the per-session limit
    /// `per_session` and the table capacity, and reports what had to go.
    pub fn insert(&mut self, key: ExpKey, val: ExpVal, per_session: usize) -> Displaced {
        let mut out = Displaced::default();
        let per_session = per_session.clamp(1, MAX_PER_SESSION);
        // Per session: the newest replaces the oldest.
        if let Some(sess) = self.sessions.get(&val.parent) {
            if sess.gen == val.parent_gen && sess.n as usize >= per_session {
                let oldest = sess.slots[0];
                out.replaced = Some(self.slots[oldest as usize].val.svc);
                self.drop_slot(oldest);
            }
        }
        // Per key chain (DR passive): bounded, oldest goes.
        if self.chain(&key).count() >= MAX_CHAIN {
            let head = self.index[&key];
            out.evicted = Some(self.slots[head as usize].val.svc);
            self.drop_slot(head);
        }
        // Whole table: the session's own oldest first, else the worker's oldest.
        if self.len >= self.cap {
            let own = self.sessions.get(&val.parent).filter(|s| s.gen == val.parent_gen && s.n > 0).map(|s| s.slots[0]);
            let victim = own.or_else(|| self.oldest());
            if let Some(v) = victim {
                out.evicted = Some(self.slots[v as usize].val.svc);
                self.drop_slot(v);
            }
        }
        self.serial = self.serial.wrapping_add(1);
        let slot = Slot { key, val, live: true, serial: self.serial, next: NIL };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        // Append to the key's chain.
        match self.index.get(&key).copied() {
            None => {
                self.index.insert(key, s);
            }
            Some(mut t) => {
                while self.slots[t as usize].next != NIL {
                    t = self.slots[t as usize].next;
                }
                self.slots[t as usize].next = s;
            }
        }
        self.order.push_back((s, self.serial));
        let sess = self.sessions.entry(val.parent).or_insert(Session {
            gen: val.parent_gen,
            n: 0,
            slots: [NIL; MAX_PER_SESSION],
        });
        if sess.gen != val.parent_gen {
            // The flow slot was reused by another connection: its old list is stale (those
            // expectations were removed with their session).
            *sess = Session { gen: val.parent_gen, n: 0, slots: [NIL; MAX_PER_SESSION] };
        }
        if (sess.n as usize) < MAX_PER_SESSION {
            sess.slots[sess.n as usize] = s;
            sess.n += 1;
        }
        self.len += 1;
        if self.order.len() > 2 * self.cap + 64 {
            let slots = &self.slots;
            self.order.retain(|&(s, ser)| slots[s as usize].live && slots[s as usize].serial == ser);
        }
        out
    }

    /// The oldest live expectation.
    fn oldest(&mut self) -> Option<u32> {
        while let Some(&(s, ser)) = self.order.front() {
            let slot = &self.slots[s as usize];
            if slot.live && slot.serial == ser {
                return Some(s);
            }
            self.order.pop_front();
        }
        None
    }

    /// Removes slot `s`, which no connection took: a full-NAT active expectation's reserved
    /// local port is noted for release.
    fn drop_slot(&mut self, s: u32) {
        let slot = &self.slots[s as usize];
        if slot.live && slot.val.cport != 0 && matches!(slot.key, ExpKey::Active(..)) {
            self.unreserved.push((slot.key, slot.val.expires));
        }
        self.remove_slot(s);
    }

    /// A full-NAT active expectation (`ExpKey::Active(rs, local address, reserved port)`)
    /// removed without a connection taking it, and its expiry: the caller releases the
    /// reservation it made for it (if it still holds that one).
    pub fn pop_unreserved(&mut self) -> Option<(ExpKey, u64)> {
        self.unreserved.pop()
    }

    fn remove_slot(&mut self, s: u32) {
        let slot = self.slots[s as usize];
        if !slot.live {
            return;
        }
        // Unlink from the key chain.
        let head = self.index[&slot.key];
        if head == s {
            if slot.next == NIL {
                self.index.remove(&slot.key);
            } else {
                self.index.insert(slot.key, slot.next);
            }
        } else {
            let mut t = head;
            while self.slots[t as usize].next != s {
                t = self.slots[t as usize].next;
            }
            self.slots[t as usize].next = slot.next;
        }
        // Out of its session's list.
        if let Some(sess) = self.sessions.get_mut(&slot.val.parent) {
            let n = sess.n as usize;
            if let Some(k) = sess.slots[..n].iter().position(|&x| x == s) {
                sess.slots.copy_within(k + 1..n, k);
                sess.n -= 1;
                sess.slots[n - 1] = NIL;
            }
            if sess.n == 0 {
                self.sessions.remove(&slot.val.parent);
            }
        }
        self.slots[s as usize].live = false;
        self.slots[s as usize].next = NIL;
        self.free.push(s);
        self.len -= 1;
    }

    /// Removes everything control connection `parent` (generation `gen`) holds, its TLS pin
    /// included.
    pub fn remove_session(&mut self, parent: u32, gen: u32) {
        if let Some(sess) = self.sessions.get(&parent).copied() {
            if sess.gen == gen {
                for &s in &sess.slots[..sess.n as usize] {
                    self.drop_slot(s);
                }
                self.sessions.remove(&parent);
            }
        }
        self.pins.retain(|_, v| v.owner() != (parent, gen));
    }

    /// Removes expired expectations from the oldest end, looking at no more than `budget`
    /// entries; `expired(svc)` is called for each one removed. No allocation. Entries that are
    /// not in expiry order (a service with a longer pinhole timeout) stay until the sweep
    /// reaches them, and are checked at lookup.
    pub fn sweep(&mut self, now: u64, mut budget: usize, mut expired: impl FnMut(u16)) {
        while budget > 0 {
            let Some(s) = self.oldest() else { break };
            let v = self.slots[s as usize].val;
            if v.expires > now {
                break;
            }
            self.order.pop_front();
            self.drop_slot(s);
            expired(v.svc);
            budget -= 1;
        }
    }

    /// Every live expectation and pin goes through `f(svc, dest)`: `Some` re-indexes it (a new
    /// configuration), `None` removes it.
    pub fn remap(&mut self, f: impl Fn(u16, u16) -> Option<(u16, u16)>) {
        for s in 0..self.slots.len() as u32 {
            let slot = self.slots[s as usize];
            if !slot.live {
                continue;
            }
            match f(slot.val.svc, slot.val.dest) {
                Some((ns, nd)) => {
                    let v = &mut self.slots[s as usize].val;
                    v.svc = ns;
                    v.dest = nd;
                }
                None => self.drop_slot(s),
            }
        }
        self.pins.retain(|_, v| match f(v.svc, v.dest) {
            Some((ns, nd)) => {
                v.svc = ns;
                v.dest = nd;
                true
            }
            None => false,
        });
    }

    /// Pins `client -> vip` to `val` (a TLS control connection). An existing pin of another
    /// live session is kept (first wins); returns whether `val` is now the pin.
    pub fn pin(&mut self, client: Addr, vip: Addr, val: ExpVal, alive: impl Fn(u32, u32) -> bool) -> bool {
        match self.pins.get(&(client, vip)) {
            Some(old) if old.owner() != val.owner() && alive(old.parent, old.parent_gen) => false,
            _ => {
                self.pins.insert((client, vip), val);
                true
            }
        }
    }

    pub fn get_pin(&self, client: Addr, vip: Addr) -> Option<&ExpVal> {
        self.pins.get(&(client, vip))
    }

    pub fn pins(&self) -> usize {
        self.pins.len()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        self.order.clear();
        self.sessions.clear();
        self.pins.clear();
        self.unreserved.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(parent: u32, svc: u16, expires: u64) -> ExpVal {
        ExpVal { svc, dest: 0, rs: 9, rport: None, vip: 100, parent, parent_gen: 1, expires, client: 0, cport: 0 }
    }

    fn check(t: &ExpectTable) {
        let live = t.slots.iter().filter(|s| s.live).count();
        assert_eq!(live, t.len);
        let chained: usize = t.index.keys().map(|k| t.chain(k).count()).sum();
        assert_eq!(chained, t.len, "every live slot on exactly one chain");
        let in_sessions: usize = t.sessions.values().map(|s| s.n as usize).sum();
        assert_eq!(in_sessions, t.len, "every live slot in exactly one session");
    }

    #[test]
    fn per_session_limit_replaces_the_oldest() {
        let mut t = ExpectTable::new(100);
        for p in 0..3u16 {
            assert_eq!(t.insert(ExpKey::Passive(1, 100, 5000 + p), val(7, 0, 10), 3), Displaced::default());
        }
        let d = t.insert(ExpKey::Passive(1, 100, 5003), val(7, 0, 10), 3);
        assert_eq!(d, Displaced { replaced: Some(0), evicted: None });
        // The 4th insert replaced the first.
        assert!(t.get(&ExpKey::Passive(1, 100, 5000)).is_none());
        assert!(t.get(&ExpKey::Passive(1, 100, 5003)).is_some());
        assert_eq!(t.len(), 3);
        let d = t.insert(ExpKey::Passive(1, 100, 5004), val(7, 2, 10), 3);
        assert_eq!(d.replaced, Some(0));
        check(&t);
    }

    #[test]
    fn full_table_evicts_own_then_oldest_never_skips() {
        let mut t = ExpectTable::new(4);
        for p in 0..4u16 {
            t.insert(ExpKey::Passive(p as u128, 100, 5000), val(p as u32, p, 10), 4);
        }
        // A new session: the worker's oldest (session 0) goes.
        let d = t.insert(ExpKey::Passive(9, 100, 5000), val(9, 9, 10), 4);
        assert_eq!(d.evicted, Some(0));
        assert!(t.get(&ExpKey::Passive(0, 100, 5000)).is_none());
        // Session 9 again: its own oldest goes, others keep theirs.
        let d = t.insert(ExpKey::Passive(9, 100, 5001), val(9, 9, 10), 4);
        assert_eq!(d.evicted, Some(9));
        assert!(t.get(&ExpKey::Passive(9, 100, 5000)).is_none());
        assert!(t.get(&ExpKey::Passive(1, 100, 5000)).is_some());
        assert_eq!(t.len(), 4);
        check(&t);
    }

    #[test]
    fn dr_chains_fifo_and_bounded() {
        let mut t = ExpectTable::new(100);
        let k = ExpKey::PassiveAny(1, 100);
        t.insert(k, val(1, 1, 10), 4);
        t.insert(k, val(2, 2, 10), 4);
        assert_eq!(t.chain(&k).map(|v| v.parent).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(t.take(&k).unwrap().parent, 1);
        assert_eq!(t.take(&k).unwrap().parent, 2);
        assert!(t.take(&k).is_none());
        for p in 0..MAX_CHAIN as u32 + 3 {
            t.insert(k, val(p, 0, 10), 4);
        }
        assert_eq!(t.chain(&k).count(), MAX_CHAIN);
        assert_eq!(t.get(&k).unwrap().parent, 3);
        check(&t);
    }

    #[test]
    fn sweep_is_bounded_and_removes_sessions() {
        let mut t = ExpectTable::new(100);
        for p in 0..10u16 {
            t.insert(ExpKey::Passive(1, 100, 5000 + p), val(p as u32, 0, 5 + p as u64), 4);
        }
        let mut n = 0;
        t.sweep(100, 3, |_| n += 1);
        assert_eq!((n, t.len()), (3, 7));
        t.sweep(9, usize::MAX, |_| n += 1);
        assert_eq!((n, t.len()), (5, 5));
        t.remove_session(7, 1);
        assert_eq!(t.len(), 4);
        check(&t);
        t.remap(|s, d| (s != 0).then_some((s + 1, d)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn unused_full_nat_active_expectations_are_noted_for_release() {
        let mut t = ExpectTable::new(100);
        let fnat = |parent, port: u16| ExpVal { client: 7, cport: port, ..val(parent, 0, 10) };
        let k = |p: u16| ExpKey::Active(9, 200, p);
        t.insert(k(2000), fnat(1, 40000), 2);
        t.insert(k(2001), fnat(1, 40001), 2);
        // NAT active (no reserved port) and passive ones are not noted.
        t.insert(ExpKey::Active(9, 7, 40005), val(2, 0, 10), 2);
        t.insert(ExpKey::Passive(7, 100, 5000), val(2, 0, 10), 2);
        assert_eq!(t.pop_unreserved(), None);
        // Taken by a connection: the connection owns the port, nothing to release.
        assert!(t.take(&k(2000)).is_some());
        assert_eq!(t.pop_unreserved(), None);
        // Replaced under the per-session limit, or gone with the session.
        t.insert(k(2002), fnat(1, 40002), 2);
        t.insert(k(2003), fnat(1, 40003), 2);
        assert_eq!(t.pop_unreserved(), Some((k(2001), 10)));
        t.remove_session(1, 1);
        let mut gone: Vec<_> = std::iter::from_fn(|| t.pop_unreserved()).collect();
        gone.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(gone, vec![(k(2002), 10), (k(2003), 10)]);
        check(&t);
    }

    #[test]
    fn pins_first_live_wins() {
        let mut t = ExpectTable::new(10);
        assert!(t.pin(1, 100, val(5, 0, u64::MAX), |_, _| true));
        assert!(!t.pin(1, 100, val(6, 0, u64::MAX), |_, _| true));
        assert!(t.pin(1, 100, val(6, 0, u64::MAX), |_, _| false), "a dead owner's pin is replaced");
        t.remove_session(6, 1);
        assert!(t.get_pin(1, 100).is_none());
    }
}
