//! Prometheus text exposition over a tiny HTTP/1.0 server
//! (`[engine] metrics_listen = "127.0.0.1:9610"`, `GET /metrics`).
//! It runs on its own thread with std::net; a client gets 2 s to send
//! its whole request (one deadline, not one per read).

use crate::ctl::ipvsadm::ListData;
use crate::pipeline::counters::{ServiceCounters, WorkerCounters};
use crate::pipeline::snapshot::Snapshot;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What the exporter serves; implemented by the control plane
/// ([`crate::ctl::control::State`]), so this module needs nothing of it.
pub trait Exported: Send + Sync {
    /// `GET /metrics`: the exposition text ([`render`]).
    fn metrics(&self) -> String;
    /// `GET /`: the status page.
    fn status_page(&self) -> String;
}

/// The figures the exposition text is made of.
pub struct Figures<'a> {
    pub list: &'a ListData,
    pub workers: &'a [Arc<WorkerCounters>],
    /// Flow table capacity of each worker.
    pub flow_capacity: usize,
    pub snapshot: &'a Snapshot,
    /// Per worker: the per-service counters of its snapshot.
    pub services: &'a [Arc<Vec<ServiceCounters>>],
    /// Cluster: the sync thread's counters (none on a single node).
    pub sync: Option<&'a crate::cluster::syncd::SyncStats>,
    /// The ports' own counters (none for the in-memory backend).
    pub ports: &'a [crate::port::PortReport],
    /// The health checker's pool.
    pub health: &'a crate::ctl::health::pool::PoolStats,
}

/// The exposition text.
pub fn render(f: &Figures) -> String {
    let mut o = String::new();
    let list = f.list;
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    type F = fn(&crate::ctl::ipvsadm::Stats) -> u64;
    let series: [(&str, &str, &str, F); 10] = [
        ("connections_total", "counter", "Connections scheduled.", |s| s.conns),
        ("in_packets_total", "counter", "Packets from clients.", |s| s.inpkts),
        ("out_packets_total", "counter", "Packets to clients.", |s| s.outpkts),
        ("in_bytes_total", "counter", "Bytes from clients.", |s| s.inbytes),
        ("out_bytes_total", "counter", "Bytes to clients.", |s| s.outbytes),
        ("connections_per_second", "gauge", "Connection rate (2 s EWMA, as ipvsadm --rate).", |s| s.cps),
        ("in_packets_per_second", "gauge", "Inbound packet rate.", |s| s.inpps),
        ("out_packets_per_second", "gauge", "Outbound packet rate.", |s| s.outpps),
        ("in_bits_per_second", "gauge", "Inbound bit rate.", |s| s.inbps),
        ("out_bits_per_second", "gauge", "Outbound bit rate.", |s| s.outbps),
    ];
    for (suffix, kind, help, f) in series {
        let name = format!("ferrovs_service_{suffix}");
        family(&mut o, &name, kind, help);
        for s in &list.services {
            let _ = writeln!(
                o,
                "{name}{{service=\"{}\",proto=\"{}\",vip=\"{}\"}} {}",
                esc(&s.name),
                s.proto,
                s.vip,
                f(&s.stats)
            );
        }
        let name = format!("ferrovs_real_server_{suffix}");
        family(&mut o, &name, kind, help);
        for s in &list.services {
            for d in &s.dests {
                let _ = writeln!(
                    o,
                    "{name}{{service=\"{}\",server=\"{}\"}} {}",
                    esc(&s.name),
                    crate::ctl::ipvsadm::addrport(d.addr, d.port),
                    f(&d.stats)
                );
            }
        }
    }
    type G = fn(&crate::ctl::ipvsadm::DestView) -> u64;
    let gauges: [(&str, &str, G); 5] = [
        ("active_connections", "ActiveConn as ipvsadm -L.", |d| d.active as u64),
        ("inactive_connections", "InActConn as ipvsadm -L.", |d| d.inactive as u64),
        ("weight", "Weight in use (0 when quiesced by a health check).", |d| d.weight as u64),
        ("configured_weight", "Weight in the configuration.", |d| d.config_weight as u64),
        ("up", "1 if the health check passes (or there is none).", |d| (d.health.as_deref() != Some("down")) as u64),
    ];
    for (suffix, help, f) in gauges {
        let name = format!("ferrovs_real_server_{suffix}");
        family(&mut o, &name, "gauge", help);
        for s in &list.services {
            for d in &s.dests {
                let _ = writeln!(
                    o,
                    "{name}{{service=\"{}\",server=\"{}\"}} {}",
                    esc(&s.name),
                    crate::ctl::ipvsadm::addrport(d.addr, d.port),
                    f(d)
                );
            }
        }
    }
    let counters = f.workers;
    family(&mut o, "ferrovs_worker_drops_total", "counter", "Packets dropped, by worker and reason.");
    for (w, c) in counters.iter().enumerate() {
        for r in crate::pipeline::counters::DropReason::ALL {
            let _ =
                writeln!(o, "ferrovs_worker_drops_total{{worker=\"{w}\",reason=\"{}\"}} {}", r.label(), c.drops_of(*r));
        }
    }
    type W = fn(&crate::pipeline::counters::CounterSnapshot) -> u64;
    let wk: &[(&str, &str, &str, W)] = &[
        ("rx_packets_total", "counter", "Packets received.", |s| s.rx_packets),
        ("rx_bytes_total", "counter", "Bytes received.", |s| s.rx_bytes),
        ("tx_packets_total", "counter", "Packets transmitted.", |s| s.tx_packets),
        ("tx_bytes_total", "counter", "Bytes transmitted.", |s| s.tx_bytes),
        ("flows_active", "gauge", "Connections in the flow table.", |s| s.flows_active),
        ("handoff_out_total", "counter", "Packets handed to the owning worker.", |s| s.handoff_out),
        ("handoff_in_total", "counter", "Packets received from other workers.", |s| s.handoff_in),
        ("neigh_evicted_total", "counter", "Neighbour entries evicted from a full table.", |s| s.neigh_evicted),
        (
            "neigh_limited_total",
            "counter",
            "Unsolicited ARP/ND neighbours not learnt: table full and evictions over their rate.",
            |s| s.neigh_limited,
        ),
        (
            "tcp_out_of_window_total",
            "counter",
            "Client TCP segments with SYN, FIN or RST outside their connection's sequence window: state unchanged.",
            |s| s.tcp_out_of_window,
        ),
        (
            "arp_own_addr_total",
            "counter",
            "ARP/ND whose sender claims one of our own addresses (interface, VIP, full NAT local): not learnt.",
            |s| s.arp_own_addr,
        ),
        (
            "frag_evicted_total",
            "counter",
            "IP fragment datagrams in flight forgotten to make room (fair between sources).",
            |s| s.frag_evicted,
        ),
        (
            "neigh_probes_total",
            "counter",
            "Unicast probes of neighbours in use not confirmed for the reachable time.",
            |s| s.neigh_probes,
        ),
        (
            "neigh_failed_total",
            "counter",
            "Neighbour entries removed because their unicast probes went unanswered.",
            |s| s.neigh_failed,
        ),
        ("sync_installed_total", "counter", "Cluster sync: peers' entries installed.", |s| s.sync_installed),
        (
            "sync_skipped_total",
            "counter",
            "Cluster sync: peers' entries not installed (no such service or real server, table full, ...).",
            |s| s.sync_skipped,
        ),
        (
            "sync_carried_total",
            "counter",
            "Cluster sync: peers' entries for connections this node carries itself, ignored.",
            |s| s.sync_carried,
        ),
        (
            "sync_capped_total",
            "counter",
            "Cluster sync: peers' FTP expectations whose timeout was cut to this node's pinhole_timeout.",
            |s| s.sync_capped,
        ),
        ("syn_cookies_sent_total", "counter", "SYN proxy: SYN-ACKs with a cookie sent.", |s| s.cookies_sent),
        ("syn_cookies_validated_total", "counter", "SYN proxy: client ACKs with a valid cookie.", |s| {
            s.cookies_validated
        }),
        ("syn_cookies_failed_total", "counter", "SYN proxy: ACKs whose cookie was invalid.", |s| s.cookies_failed),
        ("syn_proxy_syn_retries_total", "counter", "SYN proxy: SYNs sent to a real server again.", |s| {
            s.proxy_syn_retries
        }),
        ("icmp_sent_total", "counter", "ICMP fragmentation-needed / packet-too-big errors originated.", |s| {
            s.icmp_sent
        }),
        ("icmp_ratelimited_total", "counter", "Originated ICMP errors suppressed by [engine] icmp_rate.", |s| {
            s.icmp_ratelimited
        }),
        (
            "tunnel_mtu_learnt_total",
            "counter",
            "Tunnel mode: path MTUs towards a real server learnt from a router's validated error.",
            |s| s.tunnel_mtu_learnt,
        ),
        (
            "tunnel_mtu_evicted_total",
            "counter",
            "Tunnel mode: learnt path MTUs forgotten to make room in a worker's table.",
            |s| s.tunnel_mtu_evicted,
        ),
        (
            "frags_made_total",
            "counter",
            "IPv4 fragments sent for packets with DF clear over the egress MTU (the first included).",
            |s| s.frags_made,
        ),
        (
            "fnat_laddr_retired_total",
            "counter",
            "Full NAT connections removed when the grace period of a local address a reload removed ended.",
            |s| s.fnat_laddr_retired,
        ),
        ("to_kernel_total", "counter", "Frames passed to the kernel through interface.kernel_port.", |s| s.to_kernel),
        ("from_kernel_total", "counter", "Frames the kernel sent out through interface.kernel_port.", |s| {
            s.from_kernel
        }),
        ("kernel_limited_total", "counter", "Frames for the kernel dropped over [engine] kernel_rate.", |s| {
            s.kernel_limited
        }),
    ];
    let snaps: Vec<_> = counters.iter().map(|c| c.snapshot()).collect();
    family(&mut o, "ferrovs_worker_flow_table_capacity", "gauge", "Connections the worker's flow table holds at most.");
    for w in 0..snaps.len() {
        let _ = writeln!(o, "ferrovs_worker_flow_table_capacity{{worker=\"{w}\"}} {}", f.flow_capacity);
    }
    for (suffix, kind, help, f) in wk {
        let name = format!("ferrovs_worker_{suffix}");
        family(&mut o, &name, kind, help);
        for (w, s) in snaps.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{w}\"}} {}", f(s));
        }
    }
    let (snap, per) = (f.snapshot, f.services);
    // New connections refused per service, by reason.
    family(
        &mut o,
        "ferrovs_service_refused_total",
        "counter",
        "New connections the service refused, by reason (also in ferrovs_worker_drops_total).",
    );
    for (i, s) in snap.services.iter().enumerate() {
        for (k, r) in crate::pipeline::counters::REFUSALS.iter().enumerate() {
            let v: u64 = per.iter().filter_map(|x| x.get(i)).map(|c| c.refused.0[k].load(Ordering::Relaxed)).sum();
            let _ = writeln!(
                o,
                "ferrovs_service_refused_total{{service=\"{}\",reason=\"{}\"}} {v}",
                esc(&s.name),
                r.label()
            );
        }
    }
    // FTP gateway counters per service.
    let names = crate::pipeline::counters::FtpCounters::names();
    for (k, suffix) in names.into_iter().enumerate() {
        let f = |c: &crate::pipeline::counters::FtpCounters| c.fields()[k].1.load(std::sync::atomic::Ordering::Relaxed);
        let name = format!("ferrovs_ftp_{suffix}_total");
        family(&mut o, &name, "counter", "FTP gateway counter.");
        for (i, s) in snap.services.iter().enumerate() {
            if s.ftp.is_none() {
                continue;
            }
            let v: u64 = per.iter().filter_map(|x| x.get(i)).map(|c| f(&c.ftp)).sum();
            let _ = writeln!(o, "{name}{{service=\"{}\"}} {v}", esc(&s.name));
        }
    }
    // Cluster sync thread.
    if let Some(s) = f.sync {
        for (k, help, v) in s.fields() {
            let name = format!("ferrovs_sync_{k}_total");
            family(&mut o, &name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
    // The health checker's pool (`[engine] health_check_threads`).
    let h = f.health;
    let pool: [(&str, &str, &str, u64); 5] = [
        (
            "health_check_threads",
            "gauge",
            "Threads of the health checker's pool.",
            h.threads.load(Ordering::Relaxed) as u64,
        ),
        ("health_checks_running", "gauge", "Health checks in progress.", h.running.load(Ordering::Relaxed) as u64),
        (
            "health_checks_queued",
            "gauge",
            "Health checks due, waiting for a thread (every one busy).",
            h.queued.load(Ordering::Relaxed) as u64,
        ),
        ("health_checks_total", "counter", "Health checks run.", h.started.load(Ordering::Relaxed)),
        (
            "health_checks_late_total",
            "counter",
            "Health checks that started a second or more after they were due, for want of a thread.",
            h.late.load(Ordering::Relaxed),
        ),
    ];
    for (suffix, kind, help, v) in pool {
        let name = format!("ferrovs_{suffix}");
        family(&mut o, &name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    // The ports' own counters: what never reached a worker.
    if !f.ports.is_empty() {
        type P = fn(&crate::port::PortCounters) -> u64;
        let series: [(&str, &str, P); 12] = [
            ("rx_packets_total", "Frames the port received.", |c| c.rx_packets),
            ("rx_bytes_total", "Bytes the port received.", |c| c.rx_bytes),
            ("rx_dropped_total", "Frames the port dropped because a worker's receive ring was full.", |c| c.rx_dropped),
            ("rx_nobuf_total", "Receive failures for want of a packet buffer.", |c| c.rx_nobuf),
            ("rx_errors_total", "Frames received in error.", |c| c.rx_errors),
            ("tx_packets_total", "Frames the port transmitted.", |c| c.tx_packets),
            ("tx_bytes_total", "Bytes the port transmitted.", |c| c.tx_bytes),
            ("tx_dropped_total", "Frames dropped because the transmit ring was full.", |c| c.tx_dropped),
            ("tx_errors_total", "Transmit failures.", |c| c.tx_errors),
            (
                "rx_csum_partial_total",
                "Frames received with their checksum left to offload by a local stack (AF_PACKET).",
                |c| c.rx_csum_partial,
            ),
            (
                "rx_csum_completed_total",
                "Of those, TCP/UDP frames whose checksum the port completed in software.",
                |c| c.rx_csum_completed,
            ),
            ("rx_vlan_restored_total", "Frames whose VLAN tag the kernel stripped and the port put back.", |c| {
                c.rx_vlan_restored
            }),
        ];
        for (suffix, help, g) in series {
            let name = format!("ferrovs_port_{suffix}");
            family(&mut o, &name, "counter", help);
            for p in f.ports {
                let _ =
                    writeln!(o, "{name}{{port=\"{}\",device=\"{}\"}} {}", esc(&p.name), esc(&p.device), g(&p.counters));
            }
        }
    }
    o
}

/// The time a client gets to send its whole request: the exporter serves one
/// client at a time, so a client that trickles its request a byte at a time
/// must not hold it (and every scrape behind it) longer than this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The time a client gets to take the whole reply (the same reasoning, for a
/// client that reads a byte at a time).
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

fn serve(state: &dyn Exported, s: TcpStream) {
    serve_within(state, s, REQUEST_DEADLINE, REPLY_DEADLINE)
}

/// Write all of `b` before `end`, or give up.
fn write_until(s: &mut TcpStream, mut b: &[u8], end: std::time::Instant) -> std::io::Result<()> {
    while !b.is_empty() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(b) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve_within(state: &dyn Exported, mut s: TcpStream, deadline: Duration, reply_deadline: Duration) {
    let end = std::time::Instant::now() + deadline;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") && req.len() < 8192 {
        // Each read waits only for what is left of the deadline.
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_string())
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", state.metrics())
    } else if path == "/" || path.starts_with("/?") || path == "/index.html" {
        ("200 OK", "text/html; charset=utf-8", state.status_page())
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let end = std::time::Instant::now() + reply_deadline;
    if write_until(&mut s, head.as_bytes(), end).is_ok() && method != "HEAD" {
        let _ = write_until(&mut s, body.as_bytes(), end);
    }
}

/// Start the exporter thread.
pub fn spawn(addr: SocketAddr, state: Arc<dyn Exported>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    tracing::info!(%addr, "metrics listening");
    std::thread::Builder::new().name("fvs-metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    serve(&*state, s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Fixed;
    impl Exported for Fixed {
        fn metrics(&self) -> String {
            "ferrovs_up 1\n".into()
        }
        fn status_page(&self) -> String {
            "<html></html>".into()
        }
    }

    /// An exposition far larger than the socket buffers.
    struct Large;
    impl Exported for Large {
        fn metrics(&self) -> String {
            "ferrovs_x 1\n".repeat(4 << 20)
        }
        fn status_page(&self) -> String {
            "<html></html>".into()
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn serves_a_scrape() {
        let (mut c, s) = pair();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        serve_within(&Fixed, s, Duration::from_secs(5), Duration::from_secs(5));
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
        assert!(out.ends_with("ferrovs_up 1\n"), "{out}");
    }

    /// A client that sends a byte every 100 ms never lets a per-read timeout
    /// expire; the deadline covers the whole request, so the exporter moves on.
    #[test]
    fn a_trickling_client_does_not_hold_the_exporter() {
        let (mut c, s) = pair();
        let stop = Arc::new(AtomicBool::new(false));
        let trickle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .iter()
                    .cycle()
                {
                    if stop.load(Ordering::Relaxed) || c.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let t0 = Instant::now();
        serve_within(&Fixed, s, Duration::from_millis(600), Duration::from_secs(5));
        let took = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        trickle.join().unwrap();
        assert!(took < Duration::from_secs(3), "a trickling client held the exporter for {took:?}");
    }

    /// A client that never reads the reply holds the exporter only for the
    /// reply deadline, not for a write timeout per write.
    #[test]
    fn a_client_that_does_not_read_does_not_hold_the_exporter() {
        let (mut c, s) = pair();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let t0 = Instant::now();
        serve_within(&Large, s, Duration::from_secs(5), Duration::from_millis(500));
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "a client that did not read held the exporter for {took:?}");
        drop(c);
    }
}
