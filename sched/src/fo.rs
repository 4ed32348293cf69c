//! Weighted failover (`fo`), IPVS `ip_vs_fo.c`: the available server with the highest weight;
//! ties go to the first.

use crate::{ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Weighted failover.
#[derive(Clone, Debug)]
pub struct Fo {
    ov: Overload,
}

impl Fo {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Fo { ov: Overload::new(dests) }
    }
}

impl Scheduler for Fo {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let mut best: Option<usize> = None;
        for (i, d) in dests.iter().enumerate() {
            if best.map_or(true, |b| d.weight > dests[b].weight) && self.ov.usable(i, d, stats) {
                best = Some(i);
            }
        }
        best
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
    fn highest_weight_not_overloaded() {
        let mut ds = dests(&[5, 9, 9, 0]);
        let mut s = Fo::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &NoConns), Some(1));
        ds[1] = ds[1].with_thresholds(3, 0);
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 3, 50, 0], &[0; 4])), Some(2));
        ds[2].weight = 0;
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 3, 0, 0], &[0; 4])), Some(0));
    }
}
