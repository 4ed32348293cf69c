//! The cluster sync thread (the I/O side of [`crate::cluster::sync`]): one UDP socket, unicast to the
//! configured peers or a multicast group; sends the workers' batches through the
//! rate-bounded [`Batcher`] and hands what the peers send to the owning workers.

use crate::cluster::sync::{parse_with, route, Batcher, ReplayGuard, SyncEntry, SyncKey};
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
}

impl SyncStats {
    /// Every counter: (name, help, value). The names are the JSON keys of `ferrovsadm drops
    /// --json` ("sync") and, as `ferrovs_sync_{name}_total`, the metric names.
    pub fn fields(&self) -> [(&'static str, &'static str, &AtomicU64); 12] {
        [
            ("messages_sent", "Sync datagrams sent (one per destination).", &self.messages_sent),
            ("entries_sent", "Sync entries sent.", &self.entries_sent),
            ("entries_dropped_rate", "Sync entries not sent for sync_rate.", &self.entries_dropped_rate),
            ("send_errors", "Sync datagrams the socket refused to send.", &self.send_errors),
            ("messages_received", "Sync datagrams accepted from peers.", &self.messages_received),
            ("entries_received", "Sync entries received from peers.", &self.entries_received),
            ("entries_unknown", "Sync entries of unknown kinds, skipped.", &self.entries_unknown),
            ("messages_not_sync", "Datagrams on the sync port that are not sync messages.", &self.messages_not_sync),
            ("messages_version", "Sync datagrams of another protocol version.", &self.messages_version),
            ("messages_malformed", "Malformed sync datagrams.", &self.messages_malformed),
            ("messages_auth_failed", "Sync datagrams whose MAC failed (or missing).", &self.messages_auth_failed),
            ("messages_replayed", "Authentic sync datagrams refused as replayed or stale.", &self.messages_replayed),
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

/// The sync thread: sends the workers' batches to the peers (rate-bounded) and delivers
/// what the peers send to the owning workers (full-NAT connections: the owner of their local
/// port in `port_range`), until `stop`.
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
    };
    let mut replay = ReplayGuard::default();
    let clock = crate::daemon::clock();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<SyncEntry> = Vec::new();
    let mut bad_log = crate::pipeline::ratelimit::RateLimit::default();
    while !stop.load(Relaxed) {
        while let Some(b) = fabric.sync_tx.pop() {
            pending.extend(b);
        }
        if !pending.is_empty() {
            let before = batcher.dropped;
            for m in batcher.encode_at(&pending, clock(), unix_secs()) {
                for d in &dests {
                    if sock.send_to(&m, d).is_ok() {
                        stats.messages_sent.fetch_add(1, Relaxed);
                    } else {
                        stats.send_errors.fetch_add(1, Relaxed);
                    }
                }
            }
            stats.entries_sent.fetch_add((pending.len() as u64).saturating_sub(batcher.dropped - before), Relaxed);
            stats.entries_dropped_rate.fetch_add(batcher.dropped - before, Relaxed);
            pending.clear();
        }
        // Receive until the socket is idle (read timeout 2 ms).
        for _ in 0..256 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            let r = parse_with(&buf[..n], key.as_ref()).and_then(|m| match &key {
                Some(_) if m.node != cluster.node_id => replay.check(&m, unix_secs()).map(|()| m),
                _ => Ok(m),
            });
            match r {
                Ok(m) if m.node == cluster.node_id => {}
                Ok(m) => {
                    stats.messages_received.fetch_add(1, Relaxed);
                    stats.entries_received.fetch_add(m.entries.len() as u64, Relaxed);
                    stats.entries_unknown.fetch_add(m.unknown as u64, Relaxed);
                    for (w, es) in route(m.entries, fabric.workers, port_range).into_iter().enumerate() {
                        if !es.is_empty() {
                            let _ = fabric.ctrl[w].push(crate::pipeline::worker::Ctrl::Sync(es));
                        }
                    }
                }
                Err(e) => {
                    stats.refused(&e);
                    if bad_log.allow(clock()) {
                        tracing::warn!(%from, "sync message refused: {e}");
                    }
                }
            }
        }
    }
}
