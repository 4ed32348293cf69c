//! Weighted least connection (`wlc`, the default), IPVS `ip_vs_wlc.c`: the server with the lowest
//! `(active * 256 + inactive) / weight`. Ties go to the first.

use crate::{overhead, weighted_least, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Weighted least connection.
#[derive(Clone, Debug)]
pub struct Wlc {
    ov: Overload,
}

impl Wlc {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Wlc { ov: Overload::new(dests) }
    }
}

impl Scheduler for Wlc {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        weighted_least(dests, stats, &mut self.ov, overhead)
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
    fn weighted_ratio_and_ties() {
        let ds = dests(&[1, 3, 0]);
        let mut s = Wlc::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &NoConns), Some(0), "all idle: first");
        // 256/1 vs 768/3: equal ratio, first wins
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 3, 0], &[0, 0, 0])), Some(0));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 2, 0], &[0, 1, 0])), Some(1));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 3, 0], &[0, 1, 0])), Some(0));
    }
}
