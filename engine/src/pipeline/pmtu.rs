//! Path MTUs learnt towards tunnel real servers: what IPVS gets from the kernel's route
//! cache. A router between the balancer and a tunnel real server that reports "fragmentation
//! needed" / "packet too big" for an outer packet teaches the path MTU towards that real
//! server (Linux records it on the route, `__ip_rt_update_pmtu` / `rt6_do_update_pmtu`, for
//! `mtu_expires`, 600 s); `ip_vs_tunnel_xmit` then checks each packet against it, less the
//! tunnel header, and answers a packet too big itself, before encapsulating, instead of
//! sending it for the router to drop again (a round trip lost per large packet, per client).
//! A packet without DF is encapsulated and its IPv4 outer packet cut to the learnt path MTU
//! (`Worker::tunnel_cut`), as Linux's output path cuts to the route's MTU.
//!
//! One table per worker (single writer, no locks), keyed by the real server's address, at
//! most [`MAX_ENTRIES`] entries: only an error that names a live tunnel connection to that
//! real server (`Worker::tunnel_icmp_error`'s checks) teaches, so there are at most as many
//! as the configuration has tunnel real servers. When full, the entry that expires first
//! (the oldest learnt) makes room, counted. Expired entries are ignored and their slots
//! reused. An empty table costs the forwarding path one compare.
//!
//! ```
//! use ferrovs_engine::pipeline::pmtu::{PmtuTable, EXPIRES_NS};
//! let mut t = PmtuTable::new();
//! assert!(t.learn(7, 1400, 0));
//! assert_eq!(t.get(7, 1), Some(1400));
//! assert!(!t.learn(7, 1450, 2), "a live path MTU is only ever lowered");
//! assert_eq!(t.get(7, EXPIRES_NS), None, "expired");
//! assert!(t.is_empty());
//! ```

use crate::wire::parse::Addr;

/// Real servers a worker remembers a path MTU for.
pub const MAX_ENTRIES: usize = 256;

/// How long a learnt path MTU holds (ns): Linux's `net.ipv4.route.mtu_expires` default
/// (600 s), after which a larger MTU is tried again.
pub const EXPIRES_NS: u64 = 600 * 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    rs: Addr,
    mtu: u32,
    /// `now` (ns) from which the entry no longer holds.
    until: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct PmtuTable {
    entries: Vec<Entry>,
    /// Entries evicted to make room since the caller last took them.
    pub evicted: u64,
}

impl Default for PmtuTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PmtuTable {
    /// An empty table, its room allocated once.
    pub fn new() -> Self {
        PmtuTable { entries: Vec::with_capacity(MAX_ENTRIES), evicted: 0 }
    }

    /// Nothing learnt (or only what has been forgotten since): the forwarding path's check.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held, expired ones not yet reused included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The path MTU learnt towards `rs` that still holds at `now`; an expired one is
    /// forgotten.
    pub fn get(&mut self, rs: Addr, now: u64) -> Option<u32> {
        let i = self.entries.iter().position(|e| e.rs == rs)?;
        let e = self.entries[i];
        if now >= e.until {
            self.entries.swap_remove(i);
            return None;
        }
        Some(e.mtu)
    }

    /// Record path MTU `mtu` towards `rs` at `now`, for [`EXPIRES_NS`]. As Linux, a report
    /// only lowers a path MTU that still holds (the same one refreshes it): false when it
    /// was higher and nothing changed.
    pub fn learn(&mut self, rs: Addr, mtu: u32, now: u64) -> bool {
        let until = now.saturating_add(EXPIRES_NS);
        if let Some(e) = self.entries.iter_mut().find(|e| e.rs == rs) {
            if now < e.until && e.mtu < mtu {
                return false;
            }
            *e = Entry { rs, mtu, until };
            return true;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|e| now < e.until);
        }
        if self.entries.len() >= MAX_ENTRIES {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.until).map_or(0, |(i, _)| i);
            self.entries.swap_remove(oldest);
            self.evicted += 1;
        }
        self.entries.push(Entry { rs, mtu, until });
        true
    }

    /// Forget everything (a worker reset).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.evicted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_refreshed_expired_and_evicted() {
        let mut t = PmtuTable::new();
        assert_eq!(t.get(1, 0), None);
        assert!(t.learn(1, 1400, 10));
        assert!(t.learn(1, 1300, 20), "lowered");
        assert!(!t.learn(1, 1400, 30), "not raised while it holds");
        assert_eq!(t.get(1, 30), Some(1300));
        assert!(t.learn(1, 1300, 40), "the same one refreshes");
        assert_eq!(t.get(1, 40 + EXPIRES_NS - 1), Some(1300));
        assert_eq!(t.get(1, 40 + EXPIRES_NS), None);
        assert!(t.is_empty(), "an expired entry is gone once seen");
        // Expired, not yet seen: a higher report replaces it.
        assert!(t.learn(2, 1300, 0));
        assert!(t.learn(2, 1450, EXPIRES_NS));
        assert_eq!(t.get(2, EXPIRES_NS), Some(1450));
        // Full: expired entries make room first, uncounted; then the one expiring first.
        let mut t = PmtuTable::new();
        for rs in 0..MAX_ENTRIES as Addr {
            assert!(t.learn(rs, 1400, rs as u64));
        }
        assert!(t.learn(1000, 1400, EXPIRES_NS + 1), "entries 0 and 1 expired");
        assert_eq!((t.len(), t.evicted), (MAX_ENTRIES - 1, 0));
        assert!(t.learn(1001, 1400, EXPIRES_NS + 1));
        assert!(t.learn(1002, 1400, EXPIRES_NS + 1));
        assert_eq!((t.len(), t.evicted), (MAX_ENTRIES, 1));
        assert_eq!(t.get(2, EXPIRES_NS + 1), None, "the oldest live one evicted");
        assert_eq!(t.get(3, EXPIRES_NS + 1), Some(1400));
        assert_eq!(t.get(1002, EXPIRES_NS + 1), Some(1400));
    }
}
