//! Prometheus text exposition over a tiny HTTP/1.0 server
//! (`[engine] metrics_listen = "127.0.0.1:9610"`, `GET /metrics`).
//! It runs on its own thread with std::net; a client gets 2 s to send
//! its request.

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
        ("syn_cookies_sent_total", "counter", "SYN proxy: SYN-ACKs with a cookie sent.", |s| s.cookies_sent),
        ("syn_cookies_validated_total", "counter", "SYN proxy: client ACKs with a valid cookie.", |s| {
            s.cookies_validated
        }),
        ("syn_cookies_failed_total", "counter", "SYN proxy: ACKs whose cookie was invalid.", |s| s.cookies_failed),
        ("icmp_sent_total", "counter", "ICMP fragmentation-needed / packet-too-big errors originated.", |s| {
            s.icmp_sent
        }),
        ("icmp_ratelimited_total", "counter", "Originated ICMP errors suppressed by [engine] icmp_rate.", |s| {
            s.icmp_ratelimited
        }),
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
    // FTP gateway counters per service.
    let (snap, per) = (f.snapshot, f.services);
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
    // The ports' own counters: what never reached a worker.
    if !f.ports.is_empty() {
        type P = fn(&crate::port::PortCounters) -> u64;
        let series: [(&str, &str, P); 9] = [
            ("rx_packets_total", "Frames the port received.", |c| c.rx_packets),
            ("rx_bytes_total", "Bytes the port received.", |c| c.rx_bytes),
            ("rx_dropped_total", "Frames the port dropped because a worker's receive ring was full.", |c| c.rx_dropped),
            ("rx_nobuf_total", "Receive failures for want of a packet buffer.", |c| c.rx_nobuf),
            ("rx_errors_total", "Frames received in error.", |c| c.rx_errors),
            ("tx_packets_total", "Frames the port transmitted.", |c| c.tx_packets),
            ("tx_bytes_total", "Bytes the port transmitted.", |c| c.tx_bytes),
            ("tx_dropped_total", "Frames dropped because the transmit ring was full.", |c| c.tx_dropped),
            ("tx_errors_total", "Transmit failures.", |c| c.tx_errors),
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

fn serve(state: &dyn Exported, mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") && req.len() < 8192 {
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
    let _ = s.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = s.write_all(body.as_bytes());
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
