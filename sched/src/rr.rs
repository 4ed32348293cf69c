//! Round robin (`rr`), IPVS `ip_vs_rr.c`: the next server after the last one picked that has a
//! weight and is not overloaded.

use crate::{ConnStats, Dest, DestId, FlowKey, Overload, Scheduler};

/// Round robin.
#[derive(Clone, Debug)]
pub struct Rr {
    ov: Overload,
    /// Last picked index; `None` = start of the list.
    last: Option<usize>,
    /// The servers' identities as of the last update (where the cursor goes on the next).
    ids: Vec<DestId>,
}

impl Rr {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Rr { ov: Overload::new(dests), last: None, ids: dests.iter().map(Dest::id).collect() }
    }

    /// Where the search of `n` servers starts: after the last one picked.
    #[inline(always)]
    fn next_start(&self, n: usize) -> usize {
        match self.last {
            Some(l) if l + 1 < n => l + 1,
            _ => 0,
        }
    }

    /// [`Scheduler::pick`] past its common case: the list updated if it changed, then the
    /// first usable server from the start (the common case's test is this loop's first step).
    #[inline(never)]
    fn pick_scan(&mut self, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let n = dests.len();
        let start = self.next_start(n);
        for k in 0..n {
            let i = (start + k) % n;
            if self.ov.usable(i, &dests[i], stats) {
                self.last = Some(i);
                return Some(i);
            }
        }
        None
    }
}

impl Scheduler for Rr {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        // The common case: the list unchanged and the next server with a weight and no
        // connection threshold (never overloaded), so it is the one; no modulo, no look at the
        // counts. The rest is out of line, so this path saves no registers.
        if dests.len() == self.ov.len() {
            let start = self.next_start(dests.len());
            if let Some(d) = dests.get(start) {
                if d.weight > 0 && d.upper == 0 {
                    self.ov.clear(start);
                    self.last = Some(start);
                    return Some(start);
                }
            }
        }
        self.pick_scan(dests, stats)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        // Keep the cursor on the same server (IPVS moves it only when that server is deleted).
        let last_id = self.last.and_then(|l| self.ids.get(l).copied());
        self.ids.clear();
        self.ids.extend(dests.iter().map(Dest::id));
        self.last = last_id.and_then(|id| dests.iter().position(|d| d.id() == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn cycles_and_skips_quiescent() {
        let ds = dests(&[1, 0, 5, 1]);
        let mut s = Rr::new(&ds);
        let got: Vec<_> = seq(&mut s, &ds, 6).into_iter().map(Option::unwrap).collect();
        assert_eq!(got, vec![0, 2, 3, 0, 2, 3]);
    }

    /// The fast pick (next server, weight, no threshold) and the general loop agree: the
    /// same sequence as a plain reference round robin over random weights and thresholds.
    #[test]
    fn fast_pick_matches_the_reference_cycle() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200 {
            let n = 1 + (next() % 7) as usize;
            let weights: Vec<u32> = (0..n).map(|_| (next() % 3) as u32).collect();
            let mut ds = dests(&weights);
            for d in ds.iter_mut() {
                if next() % 3 == 0 {
                    *d = d.with_thresholds(2, 0);
                }
            }
            let totals: Vec<u32> = (0..n).map(|_| (next() % 4) as u32).collect();
            let st = counts(&totals, &vec![0; n]);
            let mut s = Rr::new(&ds);
            let mut cur: Option<usize> = None;
            for _ in 0..3 * n {
                let start = cur.map_or(0, |l| (l + 1) % n);
                let want = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| ds[i].weight > 0 && (ds[i].upper == 0 || totals[i] < ds[i].upper));
                assert_eq!(s.pick(&key(0), &ds, &st), want, "weights {weights:?} totals {totals:?}");
                if want.is_some() {
                    cur = want;
                }
            }
        }
    }

    #[test]
    fn skips_overloaded_and_keeps_cursor_across_update() {
        let mut ds = dests(&[1, 1, 1]);
        ds[1] = ds[1].with_thresholds(2, 0);
        let st = counts(&[0, 2, 0], &[0, 0, 0]);
        let mut s = Rr::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &st), Some(0));
        assert_eq!(s.pick(&key(0), &ds, &st), Some(2));
        let ds2 = vec![ds[2], ds[0], ds[1]];
        s.update(&ds2);
        assert_eq!(s.pick(&key(0), &ds2, &NoConns), Some(1), "after old #2 comes old #0");
    }
}
