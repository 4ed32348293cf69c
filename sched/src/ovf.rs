//! Weighted overflow (`ovf`), IPVS `ip_vs_ovf.c`: the highest-weight server whose active
//! connection count has not exceeded its weight; ties go to the first.
//!
//! As in the kernel, a server is skipped when `active > weight`, so a server of weight `w` takes
//! new flows while it has `0..=w` active connections (it "overflows" once it *exceeds* its
//! weight).

use crate::{ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Weighted overflow.
#[derive(Clone, Debug)]
pub struct Ovf {
    ov: Overload,
}

impl Ovf {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Ovf { ov: Overload::new(dests) }
    }
}

impl Scheduler for Ovf {
    fn name(&self) -> &'static str {
        "ovf"
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
            if best.map_or(true, |b| d.weight > dests[b].weight)
                && stats.active(i) <= d.weight
                && self.ov.usable(i, d, stats)
            {
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
    fn overflows_when_active_exceeds_weight() {
        let ds = dests(&[2, 4, 1]);
        let mut s = Ovf::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 4, 0], &[0; 3])), Some(1), "4 <= 4");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 5, 0], &[0; 3])), Some(0));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[3, 5, 1], &[0; 3])), Some(2));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[3, 5, 2], &[9; 3])), None);
    }
}
