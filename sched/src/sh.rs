//! Source hashing (`sh`), IPVS `ip_vs_sh.c`: a table of `2^table_bits` buckets (256 by default)
//! filled round-robin with each server repeated `weight / gcd` times; the client address (and
//! port with the `port` option) hashes to a bucket.
//!
//! Differences from IPVS, all deliberate: the hash is fixed-key SipHash (see [`crate::hash`]);
//! the table is filled in `(addr, port)` order so it does not depend on configuration order;
//! weights are divided by their gcd first (IPVS uses raw weights, so weights 100/100 fill the
//! table 100-100-56); a server added with weight 0 gets no bucket. Weight ratios whose sum
//! exceeds the table size saturate (the first servers fill it): use `mh` for fine weights.
//!
//! A server set to weight 0 keeps its buckets (its last weight is remembered), so draining it
//! does not move anybody else; flows hashing to it get `None`, or with `fallback` another server.

use std::collections::HashMap;

use crate::hash::{hash_addr, KEY_LOOKUP};
use crate::{gcd, ConnStats, Dest, DestId, FlowKey, Overload, SchedOptions, Scheduler};

pub(crate) const NONE: u32 = u32::MAX;

/// Remembers each server's last non-zero weight (IPVS `last_weight`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LastWeights(HashMap<DestId, u32>);

impl LastWeights {
    /// Effective table weights: the weight, or the last non-zero one for a quiesced server.
    pub(crate) fn effective(&mut self, dests: &[Dest]) -> Vec<u32> {
        let ws: Vec<u32> = dests
            .iter()
            .map(|d| if d.weight > 0 { d.weight } else { self.0.get(&d.id()).copied().unwrap_or(0) })
            .collect();
        self.0 = dests.iter().zip(&ws).filter(|(_, &w)| w > 0).map(|(d, &w)| (d.id(), w)).collect();
        ws
    }
}

/// Destination indices sorted by identity, for configuration-order-independent tables.
pub(crate) fn sorted_order(dests: &[Dest]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..dests.len()).collect();
    o.sort_by_key(|&i| dests[i].id());
    o
}

/// Source hashing.
#[derive(Clone, Debug)]
pub struct Sh {
    ov: Overload,
    opts: SchedOptions,
    last: LastWeights,
    buckets: Vec<u32>,
}

impl Sh {
    /// A scheduler for `dests` with default options (no fallback, address only, 256 buckets).
    pub fn new(dests: &[Dest]) -> Self {
        Self::with_options(dests, &SchedOptions::default())
    }

    /// A scheduler for `dests`; uses `fallback`, `port` and `table_bits`.
    pub fn with_options(dests: &[Dest], opts: &SchedOptions) -> Self {
        let size = 1usize << opts.table_bits.clamp(1, 20);
        let mut s =
            Sh { ov: Overload::new(dests), opts: *opts, last: LastWeights::default(), buckets: vec![NONE; size] };
        s.update(dests);
        s
    }

    fn mask(&self) -> u64 {
        self.buckets.len() as u64 - 1
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let port = if self.opts.port { key.client_port } else { 0 };
        let ihash = hash_addr(KEY_LOOKUP, key.client, port, 0) & self.mask();
        let b = self.buckets[ihash as usize];
        if b == NONE {
            return None;
        }
        let i = b as usize;
        if self.ov.usable(i, &dests[i], stats) {
            return Some(i);
        }
        if !self.opts.fallback {
            return None;
        }
        // Cheap bail-out before re-hashing around the whole table.
        if !(0..dests.len()).any(|j| self.ov.usable(j, &dests[j], stats)) {
            return None;
        }
        let size = self.buckets.len() as u64;
        for off in 0..size {
            let salt = ((off + ihash) % size) as u32;
            let h = hash_addr(KEY_LOOKUP, key.client, port, salt.wrapping_add(1)) & self.mask();
            let b = self.buckets[h as usize];
            if b != NONE && self.ov.usable(b as usize, &dests[b as usize], stats) {
                return Some(b as usize);
            }
        }
        // Unlucky hashes: walk the table from the original bucket.
        (0..size)
            .map(|off| self.buckets[((ihash + off) % size) as usize])
            .find(|&b| b != NONE && self.ov.usable(b as usize, &dests[b as usize], stats))
            .map(|b| b as usize)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        let ws = self.last.effective(dests);
        let g = ws.iter().fold(0, |g, &w| gcd(g, w)).max(1);
        let order: Vec<(usize, u32)> =
            sorted_order(dests).into_iter().map(|i| (i, ws[i] / g)).filter(|&(_, t)| t > 0).collect();
        self.buckets.fill(NONE);
        if order.is_empty() {
            return;
        }
        let (mut p, mut count) = (0, 0);
        for b in self.buckets.iter_mut() {
            *b = order[p].0 as u32;
            count += 1;
            if count >= order[p].1 {
                count = 0;
                p = (p + 1) % order.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn table_follows_weights_over_gcd_and_order() {
        let ds = dests(&[200, 100]);
        let s = Sh::new(&ds);
        assert_eq!(&s.buckets[..6], &[0, 0, 1, 0, 0, 1]);
        let rev = vec![ds[1], ds[0]];
        let s2 = Sh::new(&rev);
        assert_eq!(&s2.buckets[..3], &[1, 1, 0], "same servers, same table by identity");
    }

    #[test]
    fn same_client_same_server_and_quiesce_keeps_table() {
        let mut ds = dests(&[1, 1, 1, 1]);
        let mut s = Sh::new(&ds);
        let before: Vec<_> = seq(&mut s, &ds, 200);
        assert_eq!(seq(&mut Sh::new(&ds), &ds, 200), before);
        let victim = before[0].unwrap();
        ds[victim].weight = 0;
        s.update(&ds);
        let after = seq(&mut s, &ds, 200);
        for (b, a) in before.iter().zip(&after) {
            if *b == Some(victim) {
                assert_eq!(*a, None, "no fallback: unavailable");
            } else {
                assert_eq!(a, b, "others unmoved");
            }
        }
        let mut f = Sh::with_options(&ds, &SchedOptions { fallback: true, ..Default::default() });
        f.last = s.last.clone();
        f.update(&ds);
        for (b, a) in before.iter().zip(seq(&mut f, &ds, 200)) {
            assert!(a.is_some() && a != Some(victim));
            if *b != Some(victim) {
                assert_eq!(a, *b);
            }
        }
    }

    #[test]
    fn port_option_spreads_one_client() {
        let ds = dests(&[1; 8]);
        let mut s = Sh::with_options(&ds, &SchedOptions { port: true, ..Default::default() });
        let mut k = key(5);
        let mut seen = std::collections::HashSet::new();
        for p in 0..200 {
            k.client_port = p;
            seen.insert(s.pick(&k, &ds, &NoConns));
        }
        assert!(seen.len() > 4);
        let mut plain = Sh::new(&ds);
        let first = plain.pick(&k, &ds, &NoConns);
        k.client_port = 1;
        assert_eq!(plain.pick(&k, &ds, &NoConns), first);
    }
}
