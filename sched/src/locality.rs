//! Per-worker locality table for lblc/lblcr: destination address -> entry, aged by `tick` time.

use std::collections::HashMap;
use std::net::IpAddr;

/// IPVS `sysctl lblc_expiration` / `lblcr_expiration` default: 24 h.
pub(crate) const EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;
/// IPVS `ENTRY_TIMEOUT`: when the table is full, entries unused this long go first.
const ENTRY_TIMEOUT_NS: u64 = 6 * 60 * 1_000_000_000;
/// IPVS `CHECK_EXPIRE_INTERVAL`.
const CHECK_INTERVAL_NS: u64 = 60 * 1_000_000_000;
/// IPVS: `IP_VS_LBLC_TAB_SIZE * 16`.
pub(crate) const MAX_ENTRIES: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    pub(crate) v: V,
    lastuse: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Locality<V> {
    map: HashMap<IpAddr, Entry<V>>,
    pub(crate) now: u64,
    last_check: u64,
}

impl<V> Default for Locality<V> {
    fn default() -> Self {
        Locality { map: HashMap::new(), now: 0, last_check: 0 }
    }
}

impl<V> Locality<V> {
    pub(crate) fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.now - self.last_check >= CHECK_INTERVAL_NS {
            self.last_check = self.now;
            let now = self.now;
            self.map.retain(|_, e| e.lastuse.saturating_add(EXPIRATION_NS) > now);
        }
    }

    /// The entry for `addr`, marked used now.
    pub(crate) fn get(&mut self, addr: &IpAddr) -> Option<&mut V> {
        let now = self.now;
        self.map.get_mut(addr).map(|e| {
            e.lastuse = now;
            &mut e.v
        })
    }

    pub(crate) fn insert(&mut self, addr: IpAddr, v: V) {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&addr) {
            let now = self.now;
            self.map.retain(|_, e| e.lastuse.saturating_add(ENTRY_TIMEOUT_NS) > now);
            if self.map.len() >= MAX_ENTRIES {
                // Still full: drop the least recently used half.
                let mut ages: Vec<u64> = self.map.values().map(|e| e.lastuse).collect();
                let mid = ages.len() / 2;
                let t = *ages.select_nth_unstable(mid).1;
                self.map.retain(|_, e| e.lastuse > t);
            }
        }
        self.map.insert(addr, Entry { v, lastuse: self.now });
    }

    pub(crate) fn retain(&mut self, mut f: impl FnMut(&mut V) -> bool) {
        self.map.retain(|_, e| f(&mut e.v));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// IPVS lblc/lblcr `is_overloaded`: the server has more active connections than its weight
/// while some server is below half of its weight.
pub(crate) fn lb_overloaded(i: usize, dests: &[crate::Dest], stats: &dyn crate::ConnStats) -> bool {
    stats.active(i) > dests[i].weight && (0..dests.len()).any(|j| (stats.active(j) as u64) * 2 < dests[j].weight as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_bounds() {
        let mut t: Locality<u32> = Locality::default();
        let a = |n: u32| IpAddr::from(n.to_be_bytes());
        t.insert(a(1), 1);
        t.tick(EXPIRATION_NS / 2);
        t.insert(a(2), 2);
        t.tick(EXPIRATION_NS + 1);
        assert!(t.get(&a(1)).is_none() && t.get(&a(2)).is_some());
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            t.insert(a(n + 100), n);
        }
        assert!(t.len() <= MAX_ENTRIES);
    }
}
