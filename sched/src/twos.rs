//! Weighted random "power of two choices" (`twos`), IPVS `ip_vs_twos.c`: draw two servers at
//! random with probability proportional to weight, take the one with the lower
//! `(active * 256 + inactive) / weight` (the first draw on a tie).
//!
//! The RNG is a xorshift64* seeded per worker: deterministic for tests, independent across
//! workers. (IPVS draws from `[0, total]` which gives the first server one extra share; we draw
//! from `[0, total)`.)

use crate::{overhead, worse, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Power of two choices.
#[derive(Clone, Debug)]
pub struct Twos {
    ov: Overload,
    rng: u64,
}

impl Twos {
    /// A scheduler for `dests` with RNG `seed` (give each worker its own).
    pub fn new(dests: &[Dest], seed: u64) -> Self {
        // Spread the seed (splitmix64 finaliser) so seeds 0, 1, 2 ... give unrelated streams;
        // xorshift needs a non-zero state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Twos { ov: Overload::new(dests), rng: if z == 0 { 1 } else { z } }
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (multiply-shift; bias below 2^-32 for our n).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

impl Scheduler for Twos {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let mut total: u64 = 0;
        for (i, d) in dests.iter().enumerate() {
            if self.ov.usable(i, d, stats) {
                total += d.weight as u64;
            }
        }
        if total == 0 {
            return None;
        }
        let (mut r1, mut r2) = (self.below(total), self.below(total));
        let (mut c1, mut c2) = (None, None);
        for (i, d) in dests.iter().enumerate() {
            // Flags were just evaluated with the same counts: check() is stable.
            if !self.ov.usable(i, d, stats) {
                continue;
            }
            let w = d.weight as u64;
            if c1.is_none() {
                if r1 < w {
                    c1 = Some(i);
                } else {
                    r1 -= w;
                }
            }
            if c2.is_none() {
                if r2 < w {
                    c2 = Some(i);
                } else {
                    r2 -= w;
                }
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (a, b) = (c1?, c2?);
        if worse(overhead(stats, a), dests[a].weight, overhead(stats, b), dests[b].weight) {
            Some(b)
        } else {
            Some(a)
        }
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn deterministic_per_seed_weighted_and_avoids_loaded() {
        let ds = dests(&[1, 3, 0]);
        let (mut a, mut b) = (Twos::new(&ds, 42), Twos::new(&ds, 42));
        assert_eq!(seq(&mut a, &ds, 100), seq(&mut b, &ds, 100));
        let mut hits = [0u32; 3];
        let mut s = Twos::new(&ds, 1);
        for _ in 0..40_000 {
            hits[s.pick(&key(0), &ds, &NoConns).unwrap()] += 1;
        }
        assert_eq!(hits[2], 0, "quiescent never drawn");
        // Idle servers tie, so the first draw wins: shares follow weights 1:3.
        assert!((9_000..11_000).contains(&hits[0]), "{hits:?}");
        // Heavily loaded server 1 only wins when both draws are server 1: (3/4)^2.
        let st = counts(&[0, 100, 0], &[0; 3]);
        let mut h1 = 0;
        for _ in 0..40_000 {
            h1 += (s.pick(&key(0), &ds, &st) == Some(1)) as u32;
        }
        assert!((21_000..24_000).contains(&h1), "{h1}");
    }
}
