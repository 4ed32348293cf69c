//! Destination hashing (`dh`), IPVS `ip_vs_dh.c`: the destination address — for a ferrovs
//! service the VIP, `FlowKey::vip` — hashes into a table of `2^table_bits` buckets filled
//! round-robin with every server (weights are not used, except 0 = unavailable). No fallback: an
//! unavailable (quiescent or overloaded) server means no server, as in IPVS.

use crate::hash::{hash_addr, KEY_LOOKUP};
use crate::sh::{sorted_order, NONE};
use crate::{ConnStats, Dest, FlowKey, Overload, SchedOptions, Scheduler};

/// Destination hashing.
#[derive(Clone, Debug)]
pub struct Dh {
    ov: Overload,
    buckets: Vec<u32>,
}

impl Dh {
    /// A scheduler for `dests` with 256 buckets.
    pub fn new(dests: &[Dest]) -> Self {
        Self::with_options(dests, &SchedOptions::default())
    }

    /// A scheduler for `dests`; uses `table_bits`.
    pub fn with_options(dests: &[Dest], opts: &SchedOptions) -> Self {
        let size = 1usize << opts.table_bits.clamp(1, 20);
        let mut s = Dh { ov: Overload::new(dests), buckets: vec![NONE; size] };
        s.update(dests);
        s
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let h = hash_addr(KEY_LOOKUP, key.vip, 0, 0) & (self.buckets.len() as u64 - 1);
        let b = self.buckets[h as usize];
        if b == NONE {
            return None;
        }
        let i = b as usize;
        self.ov.usable(i, &dests[i], stats).then_some(i)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        let order = sorted_order(dests);
        for (k, b) in self.buckets.iter_mut().enumerate() {
            *b = if order.is_empty() { NONE } else { order[k % order.len()] as u32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn keyed_on_vip_not_client() {
        let ds = dests(&[1, 1, 1, 1]);
        let mut s = Dh::new(&ds);
        let picks = seq(&mut s, &ds, 50);
        assert!(picks.iter().all(|p| *p == picks[0] && p.is_some()), "one VIP, one server");
        let mut seen = std::collections::HashSet::new();
        for v in 0..64u8 {
            let mut k = key(1);
            k.vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, v));
            seen.insert(s.pick(&k, &ds, &NoConns));
        }
        assert_eq!(seen.len(), 4, "many VIPs spread over all servers");
    }

    #[test]
    fn unavailable_means_none() {
        let mut ds = dests(&[1, 1]);
        let mut s = Dh::new(&ds);
        let i = s.pick(&key(0), &ds, &NoConns).unwrap();
        ds[i].weight = 0;
        assert_eq!(s.pick(&key(0), &ds, &NoConns), None);
        ds[i].weight = 1;
        ds[i] = ds[i].with_thresholds(1, 0);
        let mut st = StaticCounts::new(2);
        st.active[i] = 1;
        assert_eq!(s.pick(&key(0), &ds, &st), None);
    }
}
