//! The cluster sync thread (the I/O side of [`crate::cluster::sync`]): one UDP socket, unicast to the
//! configured peers or a multicast group; sends the workers' batches through the
//! rate-bounded [`Batcher`] and hands what the peers send to the owning workers.

use crate::cluster::sync::{
    parse_with, route, Batcher, Message, Placement, ReplayGuard, SyncEntry, SyncError, SyncKey,
};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the sync thread did (for `ferrovsadm drops` and the `ferrovs_sync_*` metrics).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Datagrams sent (one per destination).
    pub messages_sent: AtomicU64,
    pub entries_sent: AtomicU64,
    /// Entries not sent: over `sync_rate` (the next refresh sends live connections again).
    pub entries_dropped_rate: AtomicU64,
    /// Datagrams the socket refused to send.
    pub send_errors: AtomicU64,
    /// Datagrams accepted from a peer.
    pub messages_received: AtomicU64,
    pub entries_received: AtomicU64,
    /// Entries of kinds this node does not know (skipped by length).
    pub entries_unknown: AtomicU64,
    /// Entries lost because the owning worker's control ring was full.
    pub entries_dropped_ring: AtomicU64,
    /// Datagrams carrying this node's own node_id (a multicast loop, or a peer configured
    /// with the same node_id: its state is then never installed here), ignored.
    pub messages_own_node: AtomicU64,
    /// Datagrams refused: too short or not the sync magic.
    pub messages_not_sync: AtomicU64,
    /// Datagrams refused: another protocol version.
    pub messages_version: AtomicU64,
    /// Datagrams refused: an inconsistent entry, length or count.
    pub messages_malformed: AtomicU64,
    /// Datagrams refused: MAC missing or wrong (`sync_key` differs, or set on one side only).
    pub messages_auth_failed: AtomicU64,
    /// Authentic datagrams refused as replayed or stale.
    pub messages_replayed: AtomicU64,
    /// Datagrams refused: the sender's workers, local_port_range or `[[cluster.node]]`
    /// tables differ from this node's.
    pub messages_placement: AtomicU64,
}

impl SyncStats {
    /// Every counter: (name, help, value). The names are the JSON keys of `ferrovsadm drops
    /// --json` ("sync") and, as `ferrovs_sync_{name}_total`, the metric names.
    pub fn fields(&self) -> [(&'static str, &'static str, &AtomicU64); 15] {
        [
            ("messages_sent", "Sync datagrams sent (one per destination).", &self.messages_sent),
            ("entries_sent", "Sync entries sent.", &self.entries_sent),
            ("entries_dropped_rate", "Sync entries not sent for sync_rate.", &self.entries_dropped_rate),
            ("send_errors", "Sync datagrams the socket refused to send.", &self.send_errors),
            ("messages_received", "Sync datagrams accepted from peers.", &self.messages_received),
            ("entries_received", "Sync entries received from peers.", &self.entries_received),
            ("entries_unknown", "Sync entries of unknown kinds, skipped.", &self.entries_unknown),
            (
                "entries_dropped_ring",
                "Sync entries from peers lost because a worker's control ring was full.",
                &self.entries_dropped_ring,
            ),
            (
                "messages_own_node",
                "Sync datagrams carrying this node's own node_id (multicast loop or a duplicate node_id), ignored.",
                &self.messages_own_node,
            ),
            ("messages_not_sync", "Datagrams on the sync port that are not sync messages.", &self.messages_not_sync),
            ("messages_version", "Sync datagrams of another protocol version.", &self.messages_version),
            ("messages_malformed", "Malformed sync datagrams.", &self.messages_malformed),
            ("messages_auth_failed", "Sync datagrams whose MAC failed (or missing).", &self.messages_auth_failed),
            ("messages_replayed", "Authentic sync datagrams refused as replayed or stale.", &self.messages_replayed),
            (
                "messages_placement",
                "Sync datagrams from a node whose workers, local_port_range or cluster.node tables differ.",
                &self.messages_placement,
            ),
        ]
    }

    /// Count a refused datagram by its reason.
    pub fn refused(&self, e: &crate::cluster::sync::SyncError) {
        use crate::cluster::sync::SyncError;
        let c = match e {
            SyncError::NotSync => &self.messages_not_sync,
            SyncError::Version(_) => &self.messages_version,
            SyncError::Malformed => &self.messages_malformed,
            SyncError::Auth => &self.messages_auth_failed,
            SyncError::Replay => &self.messages_replayed,
            SyncError::Placement => &self.messages_placement,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Open the sync socket of `cluster`: bound to `sync_address:sync_port` for unicast, or to
/// the group's port with the group joined on `sync_address`'s interface for multicast.
pub fn open_socket(cluster: &ferrovs_cfg::Cluster) -> std::io::Result<std::net::UdpSocket> {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    let bind = match (cluster.multicast_group, cluster.sync_address) {
        (Some(_), IpAddr::V4(_)) => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), cluster.sync_port),
        (Some(_), IpAddr::V6(_)) => SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), cluster.sync_port),
        (None, a) => SocketAddr::new(a, cluster.sync_port),
    };
    let s = UdpSocket::bind(bind)?;
    match (cluster.multicast_group, cluster.sync_address) {
        (Some(IpAddr::V4(g)), IpAddr::V4(local)) => {
            s.join_multicast_v4(&g, &local)?;
            s.set_multicast_loop_v4(false)?;
            // Send from the sync interface.
            let mreq = libc::in_addr { s_addr: u32::from_ne_bytes(local.octets()) };
            // SAFETY: a valid socket descriptor and a properly sized in_addr.
            let r = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    &mreq as *const libc::in_addr as *const libc::c_void,
                    std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        (Some(IpAddr::V6(g)), _) => {
            s.join_multicast_v6(&g, 0)?;
            s.set_multicast_loop_v6(false)?;
        }
        _ => {}
    }
    s.set_read_timeout(Some(std::time::Duration::from_millis(2)))?;
    Ok(s)
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn unix_secs() -> u32 {
    (unix_micros() / 1_000_000) as u32
}

/// A warning if `sync_key_file` can be read by every user of the machine.
pub fn key_file_warning(cluster: &ferrovs_cfg::Cluster) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(ferrovs_cfg::SyncKeySource::File(p)) = &cluster.sync_key_source else { return None };
    let mode = std::fs::metadata(p).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!("cluster sync_key_file {} is world-readable (mode {:o}): chmod 600 it", p.display(), mode & 0o777)
    })
}

/// The receiving half of the sync thread: parses a datagram, checks its MAC, bounds replay
/// and compares the sender's placement-relevant configuration with this node's.
#[derive(Debug)]
pub struct Receiver {
    node: u8,
    key: Option<SyncKey>,
    replay: ReplayGuard,
    placement: Placement,
}

impl Receiver {
    pub fn new(node: u8, key: Option<SyncKey>, placement: Placement) -> Self {
        Receiver { node, key, replay: ReplayGuard::default(), placement }
    }

    /// A peer's message to install, `Ok(None)` for this node's own (a multicast loop, or
    /// this node among its peers), or why it is refused with the words for the log. `now_s`:
    /// the clock (seconds since 1970, low 32 bits).
    pub fn receive(&mut self, b: &[u8], now_s: u32) -> Result<Option<Message>, (SyncError, String)> {
        let err = |e: SyncError| (e, e.to_string());
        let m = parse_with(b, self.key.as_ref()).map_err(err)?;
        if m.node == self.node {
            return Ok(None);
        }
        if self.key.is_some() {
            self.replay.check(&m, now_s).map_err(err)?;
        }
        if let Some(d) = m.placement.and_then(|p| self.placement.differences(&p)) {
            return Err((
                SyncError::Placement,
                format!("node {}'s configuration places connections otherwise: {d}", m.node),
            ));
        }
        Ok(Some(m))
    }
}

/// One datagram from the sync socket, counted in `stats` by what became of it; a peer's
/// entries are handed to the workers owning them (`ctrl`, their control rings). The sending
/// node, to mark it alive, or `None` for this node's own datagram; why it was refused, for
/// the log.
pub fn on_datagram(
    receiver: &mut Receiver,
    stats: &SyncStats,
    ctrl: &[crossbeam_queue::ArrayQueue<crate::pipeline::worker::Ctrl>],
    port_range: ferrovs_cfg::PortRange,
    b: &[u8],
    now_s: u32,
) -> Result<Option<u8>, String> {
    match receiver.receive(b, now_s) {
        Ok(None) => {
            stats.messages_own_node.fetch_add(1, Relaxed);
            Ok(None)
        }
        Ok(Some(m)) => {
            stats.messages_received.fetch_add(1, Relaxed);
            stats.entries_received.fetch_add(m.entries.len() as u64, Relaxed);
            stats.entries_unknown.fetch_add(m.unknown as u64, Relaxed);
            for (w, es) in route(m.entries, ctrl.len(), port_range).into_iter().enumerate() {
                if es.is_empty() {
                    continue;
                }
                let n = es.len() as u64;
                if ctrl[w].push(crate::pipeline::worker::Ctrl::Sync(es)).is_err() {
                    // The worker is behind (a reload, a burst of peers' state): these
                    // backups are missing here until the peer's next refresh.
                    stats.entries_dropped_ring.fetch_add(n, Relaxed);
                }
            }
            Ok(Some(m.node))
        }
        Err((e, why)) => {
            stats.refused(&e);
            Err(why)
        }
    }
}

/// The sync thread: sends the workers' batches to the peers (rate-bounded) and delivers
/// what the peers send to the owning workers (full-NAT connections: the owner of their local
/// port in `port_range`), until `stop`. This node's placement ([`Placement::of`], the
/// newest snapshot's: `Fabric::placement`) goes with every datagram and is required of the
/// peers'.
pub fn run<B: Send + 'static>(
    cluster: ferrovs_cfg::Cluster,
    port_range: ferrovs_cfg::PortRange,
    sock: std::net::UdpSocket,
    fabric: std::sync::Arc<crate::pipeline::worker::Fabric<B>>,
    stats: std::sync::Arc<SyncStats>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut dests: Vec<std::net::SocketAddr> =
        cluster.peers.iter().map(|a| std::net::SocketAddr::new(*a, cluster.sync_port)).collect();
    if let Some(g) = cluster.multicast_group {
        dests.push(std::net::SocketAddr::new(g, cluster.sync_port));
    }
    let key = cluster.sync_key.as_ref().map(|k| SyncKey::new(&k.0));
    let mut batcher = match &key {
        Some(k) => Batcher::with_key(cluster.node_id, cluster.sync_rate, k.clone(), unix_micros()),
        None => Batcher::new(cluster.node_id, cluster.sync_rate),
    }
    .with_placement(fabric.placement());
    let mut receiver = Receiver::new(cluster.node_id, key, fabric.placement());
    let clock = crate::daemon::clock();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<SyncEntry> = Vec::new();
    let send = |m: &[u8]| {
        for d in &dests {
            if sock.send_to(m, d).is_ok() {
                stats.messages_sent.fetch_add(1, Relaxed);
            } else {
                stats.send_errors.fetch_add(1, Relaxed);
            }
        }
    };
    let mut bad_log = crate::pipeline::ratelimit::RateLimit::default();
    // The peers take a node not heard from for `DEAD_AFTER_MS` as dead: say something at least
    // every `HEARTBEAT_MS`.
    let mut last_sent = 0u64;
    while !stop.load(Relaxed) {
        // A reload may have changed the node tables.
        let placement = fabric.placement();
        batcher.set_placement(placement);
        receiver.placement = placement;
        while let Some(b) = fabric.sync_tx.pop() {
            pending.extend(b);
        }
        if !pending.is_empty() {
            let before = batcher.dropped;
            for m in batcher.encode_at(&pending, clock(), unix_secs()) {
                send(&m);
                last_sent = fabric.liveness.now_ms();
            }
            stats.entries_sent.fetch_add((pending.len() as u64).saturating_sub(batcher.dropped - before), Relaxed);
            stats.entries_dropped_rate.fetch_add(batcher.dropped - before, Relaxed);
            pending.clear();
        }
        if fabric.liveness.now_ms().saturating_sub(last_sent) >= crate::pipeline::worker::HEARTBEAT_MS {
            if let Some(m) = batcher.heartbeat_at(clock(), unix_secs()) {
                send(&m);
            }
            last_sent = fabric.liveness.now_ms();
        }
        // Receive until the socket is idle (read timeout 2 ms).
        for _ in 0..256 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            match on_datagram(&mut receiver, &stats, &fabric.ctrl, port_range, &buf[..n], unix_secs()) {
                Ok(None) => {}
                Ok(Some(node)) => {
                    fabric.liveness.heard(node, crate::wire::parse::ip_to_addr(from.ip()), fabric.liveness.now_ms());
                }
                Err(why) => {
                    if bad_log.allow(clock()) {
                        tracing::warn!(%from, "sync message refused: {why}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::sync::{SyncEntry, VERSION_V3};

    fn entry() -> SyncEntry {
        let a = |x| crate::wire::parse::v4_to_addr([10, 0, 0, x]);
        SyncEntry::Delete { proto: 6, client: a(2), cport: 40000, vip: a(100), vport: 80, lport: None }
    }

    fn placement(workers: usize, lo: u16) -> Placement {
        let nodes = [ferrovs_cfg::ClusterNode { id: 1, local_addresses: vec!["10.98.0.1".parse().unwrap()] }];
        Placement::of(workers, ferrovs_cfg::PortRange { lo, hi: 65535 }, &nodes)
    }

    #[test]
    fn a_peer_whose_placement_differs_is_refused_naming_it() {
        let ours = placement(2, 1024);
        let mut r = Receiver::new(1, None, ours);
        let from = |node, p| Batcher::new(node, 100).with_placement(p).encode(&[entry()], 1).remove(0);
        // The same configuration: installed.
        let m = r.receive(&from(2, ours), 0).unwrap().unwrap();
        assert_eq!((m.node, m.entries), (2, vec![entry()]));
        // Our own datagram (multicast loop): ignored, whatever it carries.
        assert_eq!(r.receive(&from(1, placement(8, 1024)), 0), Ok(None));
        // Other workers, another port range: refused, the words name both.
        let (e, why) = r.receive(&from(3, placement(4, 2000)), 0).unwrap_err();
        assert_eq!(e, SyncError::Placement);
        assert_eq!(
            why,
            "node 3's configuration places connections otherwise: workers 2 here, 4 there; \
             local_port_range 1024-65535 here, 2000-65535 there"
        );
        // Another node table.
        let other = Placement::of(2, ferrovs_cfg::PortRange { lo: 1024, hi: 65535 }, &[]);
        let (e, why) = r.receive(&from(3, other), 0).unwrap_err();
        assert!(e == SyncError::Placement && why.contains("[[cluster.node]] tables differ"), "{why}");
        // A node of an older release (version 3, no placement block) is still heard.
        let mut v3 = from(3, ours);
        v3.drain(12..12 + Placement::LEN);
        v3[4] = VERSION_V3;
        assert_eq!(r.receive(&v3, 0).unwrap().unwrap().entries, vec![entry()]);
        // Counting by reason.
        let stats = SyncStats::default();
        stats.refused(&SyncError::Placement);
        assert_eq!(stats.messages_placement.load(Relaxed), 1);
        assert!(stats.fields().iter().any(|f| f.0 == "messages_placement"));
    }

    #[test]
    fn authenticated_datagrams_pass_mac_and_replay_before_the_placement() {
        let key = SyncKey::new(b"0123456789abcdef");
        let ours = placement(2, 1024);
        let mut r = Receiver::new(1, Some(key.clone()), ours);
        let now = 1_800_000_000;
        let mut b = Batcher::with_key(2, 100, key.clone(), 5).with_placement(ours);
        let m = b.encode_at(&[entry()], 1, now).remove(0);
        assert!(r.receive(&m, now).unwrap().is_some());
        assert_eq!(r.receive(&m, now).unwrap_err().0, SyncError::Replay);
        // A forged placement block breaks the MAC.
        let mut forged = b.encode_at(&[entry()], 2, now).remove(0);
        forged[24] ^= 1;
        assert_eq!(r.receive(&forged, now).unwrap_err().0, SyncError::Auth);
        // Authentic but placed otherwise.
        b.set_placement(placement(3, 1024));
        let m = b.encode_at(&[entry()], 3, now).remove(0);
        assert_eq!(r.receive(&m, now).unwrap_err().0, SyncError::Placement);
    }

    #[test]
    fn a_batch_a_full_control_ring_refuses_is_counted() {
        use crate::pipeline::worker::Ctrl;
        let ours = placement(1, 1024);
        let mut r = Receiver::new(1, None, ours);
        let stats = SyncStats::default();
        let ctrl = vec![crossbeam_queue::ArrayQueue::new(1)];
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        let m = Batcher::new(2, 100).with_placement(ours).encode(&[entry(), entry()], 1).remove(0);
        assert_eq!(on_datagram(&mut r, &stats, &ctrl, range, &m, 0), Ok(Some(2)));
        assert!(matches!(ctrl[0].pop(), Some(Ctrl::Sync(es)) if es.len() == 2));
        assert_eq!(stats.entries_dropped_ring.load(Relaxed), 0);
        // The worker's ring full: the two entries are lost, counted.
        assert!(ctrl[0].push(Ctrl::Sync(Vec::new())).is_ok());
        let m = Batcher::new(2, 100).with_placement(ours).encode(&[entry(), entry()], 2).remove(0);
        assert_eq!(on_datagram(&mut r, &stats, &ctrl, range, &m, 0), Ok(Some(2)));
        assert_eq!(stats.entries_dropped_ring.load(Relaxed), 2);
        assert_eq!(stats.entries_received.load(Relaxed), 4);
        assert!(stats.fields().iter().any(|f| f.0 == "entries_dropped_ring"));
    }

    #[test]
    fn a_datagram_carrying_our_own_node_id_is_counted() {
        let ours = placement(1, 1024);
        let mut r = Receiver::new(1, None, ours);
        let stats = SyncStats::default();
        let ctrl = vec![crossbeam_queue::ArrayQueue::new(4)];
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        // A multicast loop, or another node configured with our node_id: nothing installed,
        // nothing counted as received, but not invisible either.
        let m = Batcher::new(1, 100).with_placement(ours).encode(&[entry()], 1).remove(0);
        assert_eq!(on_datagram(&mut r, &stats, &ctrl, range, &m, 0), Ok(None));
        assert!(ctrl[0].is_empty());
        assert_eq!(stats.messages_received.load(Relaxed), 0);
        assert_eq!(stats.messages_own_node.load(Relaxed), 1);
        assert!(stats.fields().iter().any(|f| f.0 == "messages_own_node"));
    }
}
