//! Persistence templates (`ipvsadm -p timeout -M netmask`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Dest, DestId};

#[derive(Clone, Copy, Debug)]
struct Template {
    dest: DestId,
    /// Index the server had last time; checked against `dests` before use.
    hint: usize,
    expires: u64,
}

/// Persistence templates of one service on one worker: masked client address -> real server.
///
/// Owned by one worker (no sharing, no lock). The scope is the service, not the port, so a
/// port-group (fwmark / port 0) service shares one template across all its ports. Templates name
/// the server by `(addr, port)` and survive a reordering of the destination list. A template whose
/// server was removed or is quiescent (weight 0) is dropped when a new connection looks it up
/// (IPVS `expire_quiescent_template`); an overloaded server keeps its clients, as in IPVS.
///
/// Time is `now` in nanoseconds, passed in. A template expires `timeout_ns` after it was created
/// or last refreshed; [`lookup`](Self::lookup) hits and [`touch`](Self::touch) refresh it. IPVS keeps
/// a template alive while connections controlled by it exist: the engine gets that by calling
/// `touch` for traffic on such connections (or at least when they are swept). Call
/// [`expire`](Self::expire) periodically; it is O(len).
#[derive(Clone, Debug)]
pub struct PersistTable {
    timeout_ns: u64,
    v4_mask: u32,
    v6_mask: u128,
    map: HashMap<IpAddr, Template>,
}

impl Default for PersistTable {
    fn default() -> Self {
        PersistTable::new(Self::DEFAULT_TIMEOUT_NS, 32, 128)
    }
}

impl PersistTable {
    /// ipvsadm's default persistence timeout, 300 s.
    pub const DEFAULT_TIMEOUT_NS: u64 = 300_000_000_000;

    /// Templates living `timeout_ns`, keyed by the client address masked to `v4_prefix` /
    /// `v6_prefix` bits (clamped to 32 / 128).
    pub fn new(timeout_ns: u64, v4_prefix: u8, v6_prefix: u8) -> Self {
        let p4 = v4_prefix.min(32) as u32;
        let p6 = v6_prefix.min(128) as u32;
        PersistTable {
            timeout_ns,
            v4_mask: u32::MAX.checked_shl(32 - p4).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - p6).unwrap_or(0),
            map: HashMap::new(),
        }
    }

    /// The template timeout.
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }

    /// The template key for `client`: its address under the persistence netmask.
    pub fn mask(&self, client: IpAddr) -> IpAddr {
        match client {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & self.v4_mask)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & self.v6_mask)),
        }
    }

    /// The server index in `dests` that `client` is pinned to, refreshing the template. None (and
    /// the template dropped) when there is none, it expired, or its server is gone or quiescent.
    pub fn lookup(&mut self, client: IpAddr, now: u64, dests: &[Dest]) -> Option<usize> {
        let key = self.mask(client);
        let t = self.map.get_mut(&key)?;
        let idx = if now >= t.expires {
            None
        } else if dests.get(t.hint).is_some_and(|d| d.id() == t.dest) {
            Some(t.hint)
        } else {
            dests.iter().position(|d| d.id() == t.dest)
        };
        match idx {
            Some(i) if dests[i].weight > 0 => {
                t.hint = i;
                t.expires = now.saturating_add(self.timeout_ns);
                Some(i)
            }
            _ => {
                self.map.remove(&key);
                None
            }
        }
    }

    /// Pin `client`'s netmask to `dests[dest_idx]` (replacing any template) until
    /// `now + timeout`. Ignored if `dest_idx` is out of range.
    pub fn insert(&mut self, client: IpAddr, dest_idx: usize, now: u64, dests: &[Dest]) {
        let Some(d) = dests.get(dest_idx) else { return };
        let t = Template { dest: d.id(), hint: dest_idx, expires: now.saturating_add(self.timeout_ns) };
        self.map.insert(self.mask(client), t);
    }

    /// A connection under `client`'s template is still in use: push its expiry to
    /// `now + timeout`. Returns whether a template exists.
    pub fn touch(&mut self, client: IpAddr, now: u64) -> bool {
        let timeout = self.timeout_ns;
        match self.map.get_mut(&self.mask(client)) {
            Some(t) => {
                t.expires = t.expires.max(now.saturating_add(timeout));
                true
            }
            None => false,
        }
    }

    /// Drop `client`'s template.
    pub fn remove(&mut self, client: IpAddr) -> bool {
        self.map.remove(&self.mask(client)).is_some()
    }

    /// Drop templates whose expiry is at or before `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, t| t.expires > now);
        before - self.map.len()
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No templates.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop every template (e.g. the service's persistence was turned off).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pins_by_masked_client_and_follows_identity() {
        let mut ds = dests(&[1, 1, 1]);
        let mut t = PersistTable::new(300 * S, 24, 64);
        t.insert(ip("198.51.100.7"), 2, 0, &ds);
        assert_eq!(t.lookup(ip("198.51.100.200"), S, &ds), Some(2), "same /24");
        assert_eq!(t.lookup(ip("198.51.101.7"), S, &ds), None);
        ds.swap(0, 2);
        assert_eq!(t.lookup(ip("198.51.100.7"), S, &ds), Some(0), "reordered config");
        t.insert(ip("2001:db8:0:1:aaaa::1"), 1, 0, &ds);
        assert_eq!(t.lookup(ip("2001:db8:0:1:bbbb::9"), S, &ds), Some(1), "same /64");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn default_masks_are_host_routes() {
        let ds = dests(&[1, 1]);
        let mut t = PersistTable::default();
        t.insert(ip("198.51.100.7"), 1, 0, &ds);
        assert_eq!(t.lookup(ip("198.51.100.6"), 0, &ds), None);
        assert_eq!(t.lookup(ip("198.51.100.7"), 0, &ds), Some(1));
        assert_eq!(t.mask(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(PersistTable::new(1, 0, 0).mask(ip("2001:db8::1")), ip("::"));
    }

    #[test]
    fn quiescent_or_removed_server_drops_template_overloaded_keeps_it() {
        let mut ds = dests(&[1, 1]);
        let mut t = PersistTable::new(300 * S, 32, 128);
        t.insert(ip("203.0.113.1"), 0, 0, &ds);
        t.insert(ip("203.0.113.2"), 1, 0, &ds);
        ds[0].upper = 1; // overloaded or not, templates ignore thresholds
        ds[1].weight = 0;
        assert_eq!(t.lookup(ip("203.0.113.1"), S, &ds), Some(0));
        assert_eq!(t.lookup(ip("203.0.113.2"), S, &ds), None);
        assert_eq!(t.len(), 1, "quiescent template dropped");
        ds.remove(0);
        assert_eq!(t.lookup(ip("203.0.113.1"), S, &ds), None);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_touch_and_sweep() {
        let ds = dests(&[1]);
        let mut t = PersistTable::new(10 * S, 32, 128);
        t.insert(ip("203.0.113.1"), 0, 0, &ds);
        t.insert(ip("203.0.113.2"), 0, 0, &ds);
        assert!(t.touch(ip("203.0.113.1"), 8 * S));
        assert!(!t.touch(ip("203.0.113.3"), 8 * S));
        assert_eq!(t.expire(9 * S), 0);
        assert_eq!(t.expire(10 * S), 1, "untouched one expires at 10 s");
        assert_eq!(t.lookup(ip("203.0.113.1"), 17 * S, &ds), Some(0), "lookup refreshes");
        assert_eq!(t.lookup(ip("203.0.113.1"), 27 * S - 1, &ds), Some(0));
        assert_eq!(t.lookup(ip("203.0.113.1"), 37 * S, &ds), None, "expired on lookup");
        assert_eq!(t.len(), 0);
    }
}
