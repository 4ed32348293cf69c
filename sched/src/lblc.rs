//! Locality-based least connection (`lblc`), IPVS `ip_vs_lblc.c`.
//!
//! Keyed on the destination address, i.e. the VIP (`FlowKey::vip`): a destination address keeps
//! going to the server it was last assigned while that server has a weight, is not over its
//! thresholds and is not "lblc-overloaded" (more active connections than its weight while some
//! server is under half its weight); otherwise `wlc` picks a new one and the entry is updated.
//! Unlike IPVS we also honour the `-x/-y` threshold flag for the cached server.
//!
//! The table is per worker (IPVS has one per service), so different workers may pin the same
//! address to different servers; entries unused for 24 h are dropped (time from
//! [`Scheduler::tick`]), and the table holds at most 16384 entries.

use crate::locality::{lb_overloaded, Locality};
use crate::{overhead, weighted_least, ConnStats, Dest, DestId, FlowKey, Overload, Scheduler};

/// Locality-based least connection.
#[derive(Clone, Debug)]
pub struct Lblc {
    ov: Overload,
    tab: Locality<(DestId, usize)>,
}

impl Lblc {
    /// A scheduler for `dests`.
    pub fn new(dests: &[Dest]) -> Self {
        Lblc { ov: Overload::new(dests), tab: Locality::default() }
    }

    /// Number of cached destination addresses.
    pub fn entries(&self) -> usize {
        self.tab.len()
    }
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize> {
        if dests.len() != self.ov.len() {
            self.update(dests);
        }
        if let Some(&mut (_, i)) = self.tab.get(&key.vip) {
            if self.ov.usable(i, &dests[i], stats) && !lb_overloaded(i, dests, stats) {
                return Some(i);
            }
        }
        let i = weighted_least(dests, stats, &mut self.ov, overhead)?;
        self.tab.insert(key.vip, (dests[i].id(), i));
        Some(i)
    }

    fn update(&mut self, dests: &[Dest]) {
        self.ov.update(dests);
        self.tab.retain(|(id, i)| match dests.iter().position(|d| d.id() == *id) {
            Some(n) => {
                *i = n;
                true
            }
            None => false,
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
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn sticks_to_vip_until_overloaded() {
        let ds = dests(&[2, 2]);
        let mut s = Lblc::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &NoConns), Some(0));
        // wlc would now prefer 1, but the VIP is cached on 0
        assert_eq!(s.pick(&key(1), &ds, &counts(&[2, 0], &[0, 0])), Some(0));
        // 3 active > weight 2 and server 1 is under half its weight: re-schedule and re-pin
        assert_eq!(s.pick(&key(2), &ds, &counts(&[3, 0], &[0, 0])), Some(1));
        assert_eq!(s.pick(&key(3), &ds, &NoConns), Some(1));
        let mut k = key(4);
        k.vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(s.pick(&k, &ds, &counts(&[0, 1], &[0, 0])), Some(0), "other VIP: wlc");
        assert_eq!(s.entries(), 2);
    }

    #[test]
    fn entry_follows_server_and_expires() {
        let ds = dests(&[1, 1, 1]);
        let mut s = Lblc::new(&ds);
        assert_eq!(s.pick(&key(0), &ds, &counts(&[5, 5, 0], &[0; 3])), Some(2));
        let ds2 = vec![ds[2], ds[0], ds[1]];
        s.update(&ds2);
        assert_eq!(s.pick(&key(0), &ds2, &NoConns), Some(0), "same server, new index");
        s.tick(crate::locality::EXPIRATION_NS + 1);
        assert_eq!(s.entries(), 0);
        s.update(&ds2[1..]);
        assert_eq!(s.pick(&key(0), &ds2[1..], &NoConns), Some(0));
    }
}
