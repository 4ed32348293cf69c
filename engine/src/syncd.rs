//! The cluster sync thread (the I/O side of [`crate::sync`]): one UDP socket, unicast to the
//! configured peers or a multicast group; sends the workers' batches through the
//! rate-bounded [`Batcher`] and hands what the peers send to the owning workers.

use crate::sync::{parse, route, Batcher, SyncEntry};

/// What the sync thread did (for `ferrovsadm` counters and metrics).
#[derive(Debug, Default)]
pub struct SyncStats {
    pub messages_sent: std::sync::atomic::AtomicU64,
    pub entries_sent: std::sync::atomic::AtomicU64,
    /// Entries not sent: over `sync_rate`, or the socket refused them.
    pub entries_dropped: std::sync::atomic::AtomicU64,
    pub messages_received: std::sync::atomic::AtomicU64,
    pub entries_received: std::sync::atomic::AtomicU64,
    /// Datagrams refused: not a sync message, another version, malformed.
    pub messages_bad: std::sync::atomic::AtomicU64,
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

/// The sync thread: sends the workers' batches to the peers (rate-bounded) and delivers
/// what the peers send to the owning workers, until `stop`.
pub fn run<B: Send + 'static>(
    cluster: ferrovs_cfg::Cluster,
    sock: std::net::UdpSocket,
    fabric: std::sync::Arc<crate::worker::Fabric<B>>,
    stats: std::sync::Arc<SyncStats>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut dests: Vec<std::net::SocketAddr> =
        cluster.peers.iter().map(|a| std::net::SocketAddr::new(*a, cluster.sync_port)).collect();
    if let Some(g) = cluster.multicast_group {
        dests.push(std::net::SocketAddr::new(g, cluster.sync_port));
    }
    let mut batcher = Batcher::new(cluster.node_id, cluster.sync_rate);
    let clock = crate::daemon::clock();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<SyncEntry> = Vec::new();
    let mut bad_log = crate::ratelimit::RateLimit::default();
    while !stop.load(Relaxed) {
        while let Some(b) = fabric.sync_tx.pop() {
            pending.extend(b);
        }
        if !pending.is_empty() {
            let before = batcher.dropped;
            for m in batcher.encode(&pending, clock()) {
                for d in &dests {
                    if sock.send_to(&m, d).is_ok() {
                        stats.messages_sent.fetch_add(1, Relaxed);
                    }
                }
            }
            stats.entries_sent.fetch_add((pending.len() as u64).saturating_sub(batcher.dropped - before), Relaxed);
            stats.entries_dropped.fetch_add(batcher.dropped - before, Relaxed);
            pending.clear();
        }
        // Receive until the socket is idle (read timeout 2 ms).
        for _ in 0..256 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            match parse(&buf[..n]) {
                Ok(m) if m.node == cluster.node_id => {}
                Ok(m) => {
                    stats.messages_received.fetch_add(1, Relaxed);
                    stats.entries_received.fetch_add(m.entries.len() as u64, Relaxed);
                    for (w, es) in route(m.entries, fabric.workers).into_iter().enumerate() {
                        if !es.is_empty() {
                            let _ = fabric.ctrl[w].push(crate::worker::Ctrl::Sync(es));
                        }
                    }
                }
                Err(e) => {
                    stats.messages_bad.fetch_add(1, Relaxed);
                    if bad_log.allow(clock()) {
                        tracing::warn!(%from, "sync message refused: {e}");
                    }
                }
            }
        }
    }
}
