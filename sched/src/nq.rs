//! Never queue (`nq`), IPVS `ip_vs_nq.c`: the first idle server (no active connections) if any,
//! otherwise as `sed`.

use crate::sed::sed_overhead;
use crate::{worse, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Never queue.
#[derive(Clone, Debug)]
pub struct Nq {
    ov: Overload,
}

impl Nq {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Nq { ov: Overload::new(dests) }
    }
}

impl Scheduler for Nq {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !self.ov.usable(i, d, stats) {
                continue;
            }
            if stats.active(i) == 0 {
                return Some(i);
            }
            let doh = sed_overhead(stats, i);
            if least.map_or(true, |(l, loh)| worse(loh, dests[l].weight, doh, d.weight)) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
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
    fn idle_first_then_sed() {
        let ds = dests(&[1, 5, 1]);
        let mut s = Nq::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 1, 0], &[0, 0, 0])), Some(2), "idle wins");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 9, 1], &[0, 0, 0])), Some(0), "2/1 vs 10/5");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[2, 9, 2], &[0, 0, 0])), Some(1));
    }
}
