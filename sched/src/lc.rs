//! Least connection (`lc`), IPVS `ip_vs_lc.c`: the server with the lowest
//! `active * 256 + inactive`, ignoring weights (except 0 = quiescent). Ties go to the first.

use crate::{overhead, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Least connection.
#[derive(Clone, Debug)]
pub struct Lc {
    ov: Overload,
}

impl Lc {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Lc { ov: Overload::new(dests) }
    }
}

impl Scheduler for Lc {
    fn name(&self) -> &'static str {
        "lc"
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
            let doh = overhead(stats, i);
            if least.map_or(true, |(_, loh)| doh < loh) {
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
    fn least_overhead_ties_to_first_ignores_weight() {
        let ds = dests(&[1, 9, 1, 0]);
        let mut s = Lc::new(&ds);
        // overheads: 256+3, 256+3, 300, 0 (quiescent)
        let st = counts(&[1, 1, 0, 0], &[3, 3, 300, 0]);
        assert_eq!(s.pick(&key(0), &ds, &st), Some(0));
        let st = counts(&[1, 1, 0, 0], &[3, 3, 200, 0]);
        assert_eq!(s.pick(&key(0), &ds, &st), Some(2), "1 active outweighs 200 inactive");
    }
}
