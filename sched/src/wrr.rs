//! Weighted round robin (`wrr`), IPVS `ip_vs_wrr.c`.
//!
//! The current weight `cw` starts at the maximum weight; each pass over the list picks, in order,
//! the servers whose weight is `>= cw`; at the end of a pass `cw` steps down by the gcd of the
//! weights, wrapping to the maximum. Weights 4, 3, 2 give `A A B A B C A B C`.
//!
//! Passes that cannot pick anybody (every server with weight `>= cw` is overloaded) are skipped by
//! lowering `cw` straight to the highest eligible weight: same sequence as IPVS, but a pick costs
//! at most about three passes instead of `max_weight / gcd` passes.

use crate::{gcd, ConnStats, Dest, FlowKey, Overload, Scheduler};

/// Weighted round robin.
#[derive(Clone, Debug)]
pub struct Wrr {
    ov: Overload,
    /// Last picked index; `None` = start of a pass.
    cl: Option<usize>,
    cw: u32,
    mw: u32,
    di: u32,
}

impl Wrr {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        let mut s = Wrr { ov: Overload::new(dests), cl: None, cw: 0, mw: 0, di: 1 };
        s.update(dests);
        s
    }
}

impl Scheduler for Wrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn uses_key(&self) -> bool {
        false
    }

    fn pick(&mut self, _key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        if self.mw == 0 {
            return None;
        }
        // The common case: the next server in the pass has the current weight and no
        // connection threshold (never overloaded): it is the one the loop below would pick.
        let next = self.cl.map_or(0, |c| c + 1);
        if let Some(d) = dests.get(next) {
            if d.weight >= self.cw && d.weight > 0 && d.upper == 0 {
                self.ov.clear(next);
                self.cl = Some(next);
                return Some(next);
            }
        }
        // Bounded: after the first end-of-pass cw is at most the highest eligible weight, so the
        // next full pass finds that server.
        for _ in 0..3 {
            let start = self.cl.map_or(0, |c| c + 1);
            for (i, d) in dests.iter().enumerate().skip(start) {
                if d.weight >= self.cw && self.ov.usable(i, d, stats) {
                    self.cl = Some(i);
                    return Some(i);
                }
            }
            let mut best = 0;
            for (i, d) in dests.iter().enumerate() {
                if d.weight > best && self.ov.usable(i, d, stats) {
                    best = d.weight;
                }
            }
            if best == 0 {
                return None;
            }
            self.cw = if self.cw <= self.di { self.mw } else { self.cw - self.di };
            self.cw = self.cw.min(best);
            self.cl = None;
        }
        None
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        self.di = dests.iter().fold(0, |g, d| gcd(g, d.weight)).max(1);
        self.mw = dests.iter().map(|d| d.weight).max().unwrap_or(0);
        // IPVS restarts the pass from the head and keeps cw when still valid.
        self.cl = None;
        if self.cw == 0 || self.cw > self.mw {
            self.cw = self.mw;
        } else {
            self.cw = (self.cw / self.di).max(1) * self.di;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn letters(v: Vec<Option<usize>>) -> String {
        v.into_iter().map(|i| (b'A' + i.unwrap() as u8) as char).collect()
    }

    #[test]
    fn ipvs_sequence_4_3_2() {
        let ds = dests(&[4, 3, 2]);
        let mut s = Wrr::new(&ds);
        assert_eq!(letters(seq(&mut s, &ds, 18)), "AABABCABCAABABCABC");
    }

    #[test]
    fn gcd_steps_and_zero_weight() {
        let ds = dests(&[100, 0, 50]);
        let mut s = Wrr::new(&ds);
        assert_eq!(letters(seq(&mut s, &ds, 6)), "AACAAC");
    }

    #[test]
    fn overloaded_heaviest_is_skipped() {
        let mut ds = dests(&[4, 3, 2]);
        ds[0] = ds[0].with_thresholds(1, 0);
        let st = counts(&[1, 0, 0], &[0, 0, 0]);
        let mut s = Wrr::new(&ds);
        let got: String = (0..5).map(|c| (b'A' + s.pick(&key(c), &ds, &st).unwrap() as u8) as char).collect();
        assert_eq!(got, "BBCBC");
    }
}
