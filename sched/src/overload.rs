//! Upper/lower connection threshold hysteresis (`ipvsadm -x/-y`).

use crate::{ConnStats, Dest, DestId};

/// Per-destination overload flags with IPVS hysteresis, kept inside each scheduler.
///
/// A server becomes overloaded when `active + inactive >= upper` and stays so until the total is
/// `< lower` (IPVS `ip_vs_unbind_dest`), or, when `lower == 0`, `< upper * 3 / 4`. `upper == 0`
/// disables the threshold. Evaluated lazily when a scheduler considers the server.
#[derive(Clone, Debug, Default)]
pub struct Overload {
    ids: Vec<DestId>,
    flags: Vec<bool>,
}

impl Overload {
    /// No server overloaded.
    pub fn new(dests: &[Dest]) -> Self {
        Overload { ids: dests.iter().map(Dest::id).collect(), flags: vec![false; dests.len()] }
    }

    /// New destination list: flags follow servers by `(addr, port)`.
    pub fn update(&mut self, dests: &[Dest]) {
        let flags =
            dests.iter().map(|d| self.ids.iter().position(|&id| id == d.id()).is_some_and(|i| self.flags[i])).collect();
        *self = Overload { ids: dests.iter().map(Dest::id).collect(), flags };
    }

    /// Number of destinations tracked.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// True when no destinations are tracked.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Is server `i` overloaded now (updating its flag)?
    #[inline]
    pub fn check(&mut self, i: usize, d: &Dest, stats: &dyn ConnStats) -> bool {
        if d.upper == 0 {
            if let Some(f) = self.flags.get_mut(i) {
                *f = false;
            }
            return false;
        }
        let total = stats.active(i) as u64 + stats.inactive(i) as u64;
        let Some(flag) = self.flags.get_mut(i) else {
            return total >= d.upper as u64;
        };
        if total >= d.upper as u64 {
            *flag = true;
        } else if *flag {
            let clear = if d.lower != 0 { total < d.lower as u64 } else { total * 4 < d.upper as u64 * 3 };
            if clear {
                *flag = false;
            }
        }
        *flag
    }

    /// Server `i` has no threshold (`upper == 0`): not overloaded, as [`Overload::check`]
    /// would note.
    #[inline(always)]
    pub fn clear(&mut self, i: usize) {
        if let Some(f) = self.flags.get_mut(i) {
            *f = false;
        }
    }

    /// Can server `i` take a new flow: weight > 0 and not overloaded.
    #[inline]
    pub fn usable(&mut self, i: usize, d: &Dest, stats: &dyn ConnStats) -> bool {
        d.weight > 0 && !self.check(i, d, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn total(n: u32) -> crate::StaticCounts {
        counts(&[n], &[0])
    }

    #[test]
    fn hysteresis_with_lower() {
        let ds = vec![d(1, 1).with_thresholds(10, 5)];
        let mut o = Overload::new(&ds);
        assert!(!o.check(0, &ds[0], &total(9)));
        assert!(o.check(0, &ds[0], &counts(&[6], &[4])), "active+inactive >= upper");
        assert!(o.check(0, &ds[0], &total(9)));
        assert!(o.check(0, &ds[0], &total(5)), "IPVS clears only below lower");
        assert!(!o.check(0, &ds[0], &total(4)));
        assert!(!o.check(0, &ds[0], &total(9)));
    }

    #[test]
    fn hysteresis_without_lower_uses_three_quarters() {
        let ds = vec![d(1, 1).with_thresholds(8, 0)];
        let mut o = Overload::new(&ds);
        assert!(o.check(0, &ds[0], &total(8)));
        assert!(o.check(0, &ds[0], &total(6)), "6*4 == 8*3: not below");
        assert!(!o.check(0, &ds[0], &total(5)));
    }

    #[test]
    fn no_upper_no_overload_and_flags_follow_identity() {
        let mut ds = vec![d(1, 1).with_thresholds(1, 0), d(2, 1)];
        let mut o = Overload::new(&ds);
        assert!(o.check(0, &ds[0], &total(1)));
        ds.swap(0, 1);
        o.update(&ds);
        assert_eq!(o.flags, vec![false, true]);
        ds[1].upper = 0;
        assert!(!o.check(1, &ds[1], &counts(&[0, 100], &[0, 0])));
    }
}
