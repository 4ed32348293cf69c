//! Which service and real server of a new [`Snapshot`] each one of the old
//! snapshot became: built once per snapshot change, then used to carry
//! connections, persistence templates, scheduler state, counters (and the
//! FTP expectations and TLS pins) across a reload, an `ipvsadm` edit or a
//! health-check flap.
//!
//! Identity rules:
//! - a **service** is the same service if it has the same name, protocol
//!   and VIP. The name is what the config and `ferrovsadm` use to name a
//!   service: `ipvsadm -E` edits a service in place and keeps its name
//!   (`ipvsadm::apply`), a health-check flap rebuilds the snapshot from the
//!   same config with another weight. A service that changed VIP or
//!   protocol under the same name is a different service (like IPVS, where
//!   a service *is* its protocol/VIP/port: its connections go when it goes);
//! - a **real server** of a surviving service is the same one if it has the
//!   same address and port (IPVS `ip_vs_lookup_dest`); weight, thresholds
//!   and forwarding method may change.

use crate::pipeline::snapshot::Snapshot;
use hashbrown::HashMap;

/// Old service index -> new service index and, per old real-server
/// index, the new real-server index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMap {
    svcs: Vec<Option<(u16, Vec<Option<u16>>)>>,
}

impl SnapshotMap {
    /// The map of a snapshot to itself.
    pub fn identity(s: &Snapshot) -> Self {
        SnapshotMap {
            svcs: s
                .services
                .iter()
                .enumerate()
                .map(|(i, svc)| Some((i as u16, (0..svc.dests.len() as u16).map(Some).collect())))
                .collect(),
        }
    }

    /// How `old`'s services and real servers map into `new`'s (see the
    /// module docs for what "the same" means). O(services + real servers).
    pub fn build(old: &Snapshot, new: &Snapshot) -> Self {
        let by_name: HashMap<&str, usize> =
            new.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let svcs = old
            .services
            .iter()
            .map(|os| {
                let &ni = by_name.get(os.name.as_str())?;
                let ns = &new.services[ni];
                if ns.proto != os.proto || ns.vip != os.vip {
                    return None;
                }
                let by_id: HashMap<(crate::wire::parse::Addr, Option<u16>), usize> =
                    ns.dests.iter().enumerate().map(|(i, d)| ((d.addr, d.port), i)).collect();
                let dests = os.dests.iter().map(|d| by_id.get(&(d.addr, d.port)).map(|&i| i as u16)).collect();
                Some((ni as u16, dests))
            })
            .collect();
        SnapshotMap { svcs }
    }

    /// The new (service, real server) of old `(svc, dest)`; None if either
    /// is gone.
    #[inline]
    pub fn map(&self, old_svc: u16, old_dest: u16) -> Option<(u16, u16)> {
        let (s, dests) = self.svcs.get(old_svc as usize)?.as_ref()?;
        Some((*s, (*dests.get(old_dest as usize)?)?))
    }

    /// The new index of old service `old_svc`; None if it is gone.
    #[inline]
    pub fn service(&self, old_svc: u16) -> Option<u16> {
        self.svcs.get(old_svc as usize)?.as_ref().map(|(s, _)| *s)
    }

    /// For each new service, the old service it continues (the inverse of
    /// [`SnapshotMap::service`]), as a vector of `new_len` entries.
    pub fn inverse(&self, new_len: usize) -> Vec<Option<u16>> {
        let mut v = vec![None; new_len];
        for (o, m) in self.svcs.iter().enumerate() {
            if let Some((n, _)) = m {
                if let Some(slot) = v.get_mut(*n as usize) {
                    *slot = Some(o as u16);
                }
            }
        }
        v
    }

    /// Does every old service and real server keep its index (none gone, none moved)? Then
    /// the connections' indices stay right as they are: a weight change, a real server or a
    /// service added at the end, the same configuration again.
    pub fn keeps_indices(&self) -> bool {
        self.svcs.iter().enumerate().all(|(i, m)| {
            m.as_ref().is_some_and(|(s, dests)| {
                *s as usize == i && dests.iter().enumerate().all(|(d, n)| *n == Some(d as u16))
            })
        })
    }

    /// Number of old services.
    pub fn len(&self) -> usize {
        self.svcs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.svcs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(services: &str) -> Snapshot {
        crate::pipeline::snapshot::test_snapshot("\"10.0.1.1/24\"", services)
    }

    const A: &str = r#"
[[service]]
name = "a"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
[[service.real_server]]
address = "10.0.1.2"
[[service.real_server]]
address = "10.0.1.3"
port = 8080

[[service]]
name = "b"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
[[service.real_server]]
address = "10.0.1.4"
"#;

    #[test]
    fn identity_and_same_config() {
        let s = snap(A);
        assert_eq!(SnapshotMap::build(&s, &snap(A)), SnapshotMap::identity(&s));
        assert_eq!(SnapshotMap::identity(&s).map(0, 1), Some((0, 1)));
        assert_eq!(SnapshotMap::identity(&s).map(2, 0), None);
    }

    /// Indices kept: the same configuration, a weight changed, a server or a service added
    /// at the end; not kept: a server removed or moved, a service gone.
    #[test]
    fn keeps_indices() {
        let s = snap(A);
        assert!(SnapshotMap::build(&s, &snap(A)).keeps_indices());
        assert!(SnapshotMap::build(&s, &snap(&A.replace("port = 8080", "port = 8080\nweight = 9"))).keeps_indices());
        let more = A.replace("port = 8080", "port = 8080\n[[service.real_server]]\naddress = \"10.0.1.9\"");
        assert!(SnapshotMap::build(&s, &snap(&more)).keeps_indices(), "a server added after the others");
        let svc = format!("{A}\n[[service]]\nname = \"c\"\nvip = \"10.0.1.101\"\nports = [80]\n");
        assert!(SnapshotMap::build(&s, &snap(&svc)).keeps_indices(), "a service added at the end");
        let first = A.replace("[[service.real_server]]\naddress = \"10.0.1.2\"\n", "");
        assert!(!SnapshotMap::build(&s, &snap(&first)).keeps_indices(), "10.0.1.3 moved to index 0");
        let ahead = A.replacen(
            "[[service.real_server]]\naddress = \"10.0.1.2\"",
            "[[service.real_server]]\naddress = \"10.0.1.9\"\n[[service.real_server]]\naddress = \"10.0.1.2\"",
            1,
        );
        assert!(!SnapshotMap::build(&s, &snap(&ahead)).keeps_indices(), "a server added before the others");
        let no_b = &A[..A.find("[[service]]\nname = \"b\"").unwrap()];
        assert!(!SnapshotMap::build(&s, &snap(no_b)).keeps_indices(), "b is gone");
    }

    #[test]
    fn reordered_removed_and_reweighted() {
        // b first; a's servers swapped, 10.0.1.3 now on another port (a new server), weight changed.
        let b = r#"
[[service]]
name = "b"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
[[service.real_server]]
address = "10.0.1.4"
weight = 0

[[service]]
name = "a"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80, 81]
[[service.real_server]]
address = "10.0.1.3"
port = 9090
[[service.real_server]]
address = "10.0.1.2"
weight = 7
"#;
        let m = SnapshotMap::build(&snap(A), &snap(b));
        assert_eq!(m.map(0, 0), Some((1, 1)), "a/10.0.1.2 moved");
        assert_eq!(m.map(0, 1), None, "10.0.1.3:8080 is gone (9090 is another server)");
        assert_eq!(m.map(1, 0), Some((0, 0)), "weight 0 is still the server");
        assert_eq!(m.service(0), Some(1));
        assert_eq!(m.inverse(2), vec![Some(1), Some(0)]);
    }

    #[test]
    fn same_name_other_vip_is_another_service() {
        let moved =
            A.replacen("vip = \"10.0.1.100\"\nprotocol = \"tcp\"", "vip = \"10.0.1.101\"\nprotocol = \"tcp\"", 1);
        let m = SnapshotMap::build(&snap(A), &snap(&moved));
        assert_eq!(m.service(0), None);
        assert_eq!(m.service(1), Some(1));
    }
}
