//! Maglev hashing (`mh`), IPVS `ip_vs_mh.c` after the Maglev paper (NSDI '16, section 3.4).
//!
//! Each server gets a permutation of the `M` table slots (`M` prime, default 65537) from
//! `offset = h1(addr, port) % M` and `skip = h2(addr, port) % (M - 1) + 1`; servers take turns
//! claiming their next free preferred slot, `weight / gcd` slots per turn (scaled down by a shift
//! so the largest is at most about `sqrt(M)`, as IPVS does), until the table is full. The client
//! address (and port with the `port` option) hashes to a slot. Removing one of N servers moves
//! about 1/N of the clients.
//!
//! As IPVS: a server set to weight 0 keeps its slots (last weight remembered); flows hashing to an
//! unavailable server get `None`, or with `fallback` are re-hashed around the table. Servers are
//! placed in `(addr, port)` order, so the table depends on the set of servers, not their order.

use std::fmt;

use crate::hash::{hash_addr, KEY_LOOKUP, KEY_OFFSET, KEY_SKIP};
use crate::sh::{sorted_order, LastWeights, NONE};
use crate::{gcd, ConnStats, Dest, FlowKey, Overload, SchedOptions, Scheduler};

/// A validated Maglev table size: a prime in `2..=MhTableSize::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MhTableSize(u32);

/// The requested mh table size is not an allowed prime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidTableSize(pub u64);

impl fmt::Display for InvalidTableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mh table size {} is not a prime between 2 and {} (e.g. 251, 4093, 65521, 65537, 131071)",
            self.0,
            MhTableSize::MAX
        )
    }
}

impl std::error::Error for InvalidTableSize {}

impl MhTableSize {
    /// 65537, a prime well above 100x a few hundred servers.
    pub const DEFAULT: MhTableSize = MhTableSize(65537);
    /// Largest accepted size (16 M slots, 64 MiB per table at 4 bytes a slot).
    pub const MAX: u32 = 1 << 24;

    /// Validate `n`.
    pub fn new(n: u64) -> Result<Self, InvalidTableSize> {
        let ok = (2..=Self::MAX as u64).contains(&n) && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
        if ok {
            Ok(MhTableSize(n as u32))
        } else {
            Err(InvalidTableSize(n))
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MhTableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Maglev hashing.
#[derive(Clone, Debug)]
pub struct Mh {
    ov: Overload,
    opts: SchedOptions,
    last: LastWeights,
    lookup: Vec<u32>,
    /// What the table was last populated from: each server's identity and effective weight,
    /// in the servers' order. An update that leaves it as it is (a server quiesced, weight 0,
    /// keeps its last weight; a threshold changed) keeps the table without populating it
    /// again: about a millisecond at 65537 slots, which a worker spends with every
    /// configuration snapshot.
    built: Vec<(crate::DestId, u32)>,
    /// Times the table was populated (tests).
    builds: u64,
}

impl Mh {
    /// A scheduler for `dests` with default options (table 65537, no fallback, address only).
    pub fn new(dests: &[Dest]) -> Self {
        Self::with_options(dests, &SchedOptions::default())
    }

    /// A scheduler for `dests`; uses `mh_table_size`, `fallback` and `port`.
    pub fn with_options(dests: &[Dest], opts: &SchedOptions) -> Self {
        let m = opts.mh_table_size.get() as usize;
        let mut s = Mh {
            ov: Overload::new(dests),
            opts: *opts,
            last: LastWeights::default(),
            lookup: vec![NONE; m],
            built: Vec::new(),
            builds: 0,
        };
        s.update(dests);
        s
    }

    /// The lookup table: destination index per slot (`u32::MAX` = empty).
    pub fn table(&self) -> &[u32] {
        &self.lookup
    }

    /// Times the table was populated.
    pub fn builds(&self) -> u64 {
        self.builds
    }

    fn populate(&mut self, dests: &[Dest], ws: &[u32]) {
        self.builds += 1;
        let m = self.lookup.len() as u64;
        self.lookup.fill(NONE);
        let g = ws.iter().fold(0, |g, &w| gcd(g, w));
        if g == 0 {
            return;
        }
        let mw = ws.iter().max().copied().unwrap_or(0) / g;
        // IPVS: shift = fls(max weight / gcd) - table bits, table bits = log2(M) / 2.
        let tab_bits = (63 - m.leading_zeros()) / 2;
        let fls = 32 - mw.leading_zeros();
        let shift = fls.saturating_sub(tab_bits);
        struct Setup {
            idx: u32,
            perm: u64,
            skip: u64,
            turns: u32,
        }
        let mut setup: Vec<Setup> = sorted_order(dests)
            .into_iter()
            .filter(|&i| ws[i] > 0)
            .map(|i| {
                let d = &dests[i];
                let t = (ws[i] / g) >> shift;
                Setup {
                    idx: i as u32,
                    perm: hash_addr(KEY_OFFSET, d.addr, d.port, 0) % m,
                    skip: hash_addr(KEY_SKIP, d.addr, d.port, 0) % (m - 1) + 1,
                    turns: t.max(1),
                }
            })
            .collect();
        if setup.is_empty() {
            return;
        }
        let mut filled = 0u64;
        loop {
            for s in setup.iter_mut() {
                for _ in 0..s.turns {
                    let mut c = s.perm;
                    while self.lookup[c as usize] != NONE {
                        c += s.skip;
                        if c >= m {
                            c -= m;
                        }
                    }
                    s.perm = c;
                    self.lookup[c as usize] = s.idx;
                    filled += 1;
                    if filled == m {
                        return;
                    }
                }
            }
        }
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let m = self.lookup.len() as u64;
        let port = if self.opts.port { key.client_port } else { 0 };
        let ihash = hash_addr(KEY_LOOKUP, key.client, port, 0) % m;
        let b = self.lookup[ihash as usize];
        if b == NONE {
            return None;
        }
        if self.ov.usable(b as usize, &dests[b as usize], stats) {
            return Some(b as usize);
        }
        if !self.opts.fallback || !(0..dests.len()).any(|j| self.ov.usable(j, &dests[j], stats)) {
            return None;
        }
        for off in 0..m {
            let salt = ((off + ihash) % m) as u32;
            let h = hash_addr(KEY_LOOKUP, key.client, port, salt.wrapping_add(1)) % m;
            let b = self.lookup[h as usize];
            if b != NONE && self.ov.usable(b as usize, &dests[b as usize], stats) {
                return Some(b as usize);
            }
        }
        (0..m)
            .map(|off| self.lookup[((ihash + off) % m) as usize])
            .find(|&b| b != NONE && self.ov.usable(b as usize, &dests[b as usize], stats))
            .map(|b| b as usize)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        let ws = self.last.effective(dests);
        let built: Vec<(crate::DestId, u32)> = dests.iter().map(Dest::id).zip(ws.iter().copied()).collect();
        if self.builds > 0 && built == self.built {
            return;
        }
        self.populate(dests, &ws);
        self.built = built;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn small(n: u64) -> SchedOptions {
        SchedOptions { mh_table_size: MhTableSize::new(n).unwrap(), ..Default::default() }
    }

    /// The table is populated again only when a server's identity, place or effective weight
    /// changed, and then it is the table a new scheduler builds.
    #[test]
    fn populated_again_only_on_a_change() {
        let mut ds = dests(&[1, 2, 1]);
        let mut s = Mh::with_options(&ds, &small(251));
        assert_eq!(s.builds(), 1);
        s.update(&ds);
        ds[1].upper = 10;
        s.update(&ds);
        assert_eq!(s.builds(), 1, "the same servers and weights; a threshold");
        ds[1].weight = 3;
        s.update(&ds);
        assert_eq!(s.builds(), 2);
        assert_eq!(s.table(), Mh::with_options(&ds, &small(251)).table());
        ds.swap(0, 2);
        s.update(&ds);
        assert_eq!(s.builds(), 3, "the servers' places changed (the table holds indices)");
        assert_eq!(s.table(), Mh::with_options(&ds, &small(251)).table());
        ds.pop();
        s.update(&ds);
        assert_eq!(s.builds(), 4);
        assert_eq!(s.table(), Mh::with_options(&ds, &small(251)).table());
    }

    #[test]
    fn table_sizes() {
        assert!(MhTableSize::new(65537).is_ok());
        assert!(MhTableSize::new(251).is_ok());
        assert!(MhTableSize::new(65536).is_err());
        assert!(MhTableSize::new(1).is_err());
        assert!(MhTableSize::new((1 << 24) + 43).is_err());
        assert!(InvalidTableSize(4).to_string().contains("not a prime"));
    }

    #[test]
    fn table_full_and_weighted() {
        let ds = dests(&[1, 2, 1, 4]);
        let s = Mh::new(&ds);
        let mut n = [0usize; 4];
        for &b in s.table() {
            n[b as usize] += 1;
        }
        assert_eq!(n.iter().sum::<usize>(), 65537);
        let unit = 65537.0 / 8.0;
        for (i, w) in [1.0, 2.0, 1.0, 4.0].iter().enumerate() {
            let r = n[i] as f64 / (unit * w);
            assert!((0.97..1.03).contains(&r), "{n:?}");
        }
    }

    #[test]
    fn huge_weights_are_shifted_not_starving() {
        let ds = dests(&[65535, 1]);
        let s = Mh::with_options(&ds, &small(251));
        assert!(s.table().contains(&1), "a weight-1 server still gets a slot");
        assert!(s.table().iter().filter(|&&b| b == 0).count() > 200);
    }

    #[test]
    fn quiesce_keeps_slots_fallback_reroutes() {
        let mut ds = dests(&[1, 1, 1]);
        let before = Mh::with_options(&ds, &small(251)).table().to_vec();
        let mut s = Mh::with_options(&ds, &SchedOptions { fallback: true, ..small(251) });
        ds[0].weight = 0;
        s.update(&ds);
        assert_eq!(s.table(), &before[..], "draining does not reshuffle");
        assert_eq!(s.builds(), 1, "nor populate the table again");
        for c in 0..300 {
            let p = s.pick(&key(c), &ds, &NoConns);
            assert!(matches!(p, Some(1) | Some(2)));
        }
        let mut added_idle = dests(&[1, 1, 1]);
        added_idle[0].weight = 0;
        let fresh = Mh::with_options(&added_idle, &small(251));
        assert!(!fresh.table().contains(&0), "added with weight 0: no slots");
    }
}
