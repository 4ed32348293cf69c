//! Locality-based least connection with replication (`lblcr`), IPVS `ip_vs_lblcr.c`.
//!
//! Keyed on the destination address (the VIP): each address maps to a *set* of servers; a flow
//! goes to the weighted-least-loaded member of the set. When that member is missing or
//! lblc-overloaded (see `lblc`), `wlc` over all servers picks one and adds it to the set. When a
//! set has more than one member and has not changed for 24 h, its most loaded member is removed.
//! Per worker, like `lblc`; time comes from [`Scheduler::tick`].

use crate::locality::{lb_overloaded, Locality, EXPIRATION_NS};
use crate::{overhead, weighted_least, worse, ConnStats, Dest, DestId, FlowKey, Overload, Scheduler};

#[derive(Clone, Debug)]
struct Set {
    members: Vec<(DestId, usize)>,
    lastmod: u64,
}

/// Locality-based least connection with replication.
#[derive(Clone, Debug)]
pub struct Lblcr {
    ov: Overload,
    tab: Locality<Set>,
}

impl Lblcr {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Lblcr { ov: Overload::new(dests), tab: Locality::default() }
    }

    /// Servers currently in the set of destination address `vip` (indices into the last `dests`).
    pub fn set_of(&mut self, vip: &std::net::IpAddr) -> Vec<usize> {
        self.tab.get(vip).map(|s| s.members.iter().map(|m| m.1).collect()).unwrap_or_default()
    }
}

/// IPVS `ip_vs_dest_set_min`: weighted least loaded member with weight > 0, not overloaded.
fn set_min(set: &Set, dests: &[Dest], stats: &dyn ConnStats, ov: &mut Overload) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for &(_, i) in &set.members {
        if !ov.usable(i, &dests[i], stats) {
            continue;
        }
        let doh = overhead(stats, i);
        if least.map_or(true, |(l, loh)| worse(loh, dests[l].weight, doh, dests[i].weight)) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

/// IPVS `ip_vs_dest_set_max`: weighted most loaded member with weight > 0.
fn set_max(set: &Set, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
    let mut most: Option<(usize, u64)> = None;
    for &(_, i) in &set.members {
        if dests[i].weight == 0 {
            continue;
        }
        let doh = overhead(stats, i);
        if most.map_or(true, |(m, moh)| worse(doh, dests[i].weight, moh, dests[m].weight)) {
            most = Some((i, doh));
        }
    }
    most.map(|(i, _)| i)
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        let now = self.tab.now;
        let Lblcr { ov, tab } = self;
        if let Some(set) = tab.get(&key.vip) {
            let min = set_min(set, dests, stats, ov);
            if set.members.len() > 1 && now.saturating_sub(set.lastmod) > EXPIRATION_NS {
                if let Some(m) = set_max(set, dests, stats) {
                    set.members.retain(|&(_, i)| i != m);
                    set.lastmod = now;
                }
            }
            if let Some(m) = min {
                if !lb_overloaded(m, dests, stats) {
                    return Some(m);
                }
            }
            let i = weighted_least(dests, stats, ov, overhead)?;
            if !set.members.iter().any(|&(_, j)| j == i) {
                set.members.insert(0, (dests[i].id(), i));
                set.lastmod = now;
            }
            return Some(i);
        }
        let i = weighted_least(dests, stats, ov, overhead)?;
        tab.insert(key.vip, Set { members: vec![(dests[i].id(), i)], lastmod: now });
        Some(i)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        self.tab.retain(|set| {
            set.members.retain_mut(|(id, i)| match dests.iter().position(|d| d.id() == *id) {
                Some(n) => {
                    *i = n;
                    true
                }
                None => false,
            });
            true
        });
    }

    fn tick(&mut self, now_ns: u64) {
        self.tab.tick(now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn replicates_when_overloaded_then_uses_least_member() {
        let ds = dests(&[2, 2, 2]);
        let vip = key(0).vip;
        let mut s = Lblcr::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &NoConns), Some(0));
        assert_eq!(s.pick(&key(0), &ds, &counts(&[2, 0, 0], &[0; 3])), Some(0), "not overloaded");
        assert_eq!(s.pick(&key(0), &ds, &counts(&[3, 0, 1], &[0; 3])), Some(1), "replicate");
        assert_eq!(s.set_of(&vip), vec![1, 0]);
        assert_eq!(s.pick(&key(0), &ds, &counts(&[1, 2, 0], &[0; 3])), Some(0), "least member");
        // an entry unused for 24 h is swept by tick
        s.tick(EXPIRATION_NS + 1);
        assert!(s.set_of(&vip).is_empty());
    }

    #[test]
    fn shrinks_stale_set() {
        let ds = dests(&[2, 2, 2]);
        let vip = key(0).vip;
        let mut s = Lblcr::new(&ds);
        s.pick(&key(0), &ds, &NoConns);
        s.pick(&key(0), &ds, &counts(&[3, 0, 1], &[0; 3]));
        assert_eq!(s.set_of(&vip).len(), 2);
        // keep the entry in use while the set ages
        for h in 1..=25u64 {
            s.tick(h * 3600 * 1_000_000_000);
            s.pick(&key(0), &ds, &counts(&[1, 1, 0], &[0, 1, 0]));
        }
        assert_eq!(s.set_of(&vip), vec![0], "most loaded (1) removed after 24 h");
    }
}
