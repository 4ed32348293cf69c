//! Shortest expected delay (`sed`), IPVS `ip_vs_sed.c`: the server with the lowest
//! `(active + 1) / weight`; inactive connections are ignored. Ties go to the first.

use crate::{weighted_least, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Shortest expected delay.
#[derive(Clone, Debug)]
pub struct Sed {
    ov: Overload,
}

impl Sed {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Sed { ov: Overload::new(dests) }
    }
}

/// sed/nq overhead: `active + 1`.
#[inline]
pub(crate) fn sed_overhead(stats: &dyn ConnStats, i: usize) -> u64 {
    stats.active(i) as u64 + 1
}

impl Scheduler for Sed {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        weighted_least(dests, stats, &mut self.ov, sed_overhead)
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
    fn expected_delay() {
        let ds = dests(&[1, 2]);
        let mut s = Sed::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &NoConns), Some(1), "1/1 > 1/2");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 1], &[0, 0])), Some(0), "1/1 == 2/2: first");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 1], &[0, 0]).clone()), Some(0));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 2], &[0, 0])), Some(1), "2/1 > 3/2");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[0, 0], &[0, 99])), Some(1), "inactive ignored");
    }
}
