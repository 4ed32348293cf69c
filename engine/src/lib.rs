//! # ferrovs engine
//!
//! The data plane of ferrovs, a kernel-bypass L4 load balancer in the LVS
//! tradition, plus its I/O backends, daemon and command-line tools.
//!
//! ## Layers (one folder each)
//! - [`wire`]: what a frame looks like: parsing into offsets and flow
//!   fields, checksums, TCP options.
//! - [`flow`]: the per-worker connection table, IPVS TCP states, FTP
//!   expectations and the fragment cache, all driven by a clock passed in.
//! - [`pipeline`]: one poll-mode worker's packet path: classification,
//!   scheduling, NAT / full NAT / DR / tunnel forwarding, SYN proxy, ICMP,
//!   ARP/ND, the FTP gateway glue, and the immutable config snapshot it
//!   reads. An established connection's packet is looked up in the flow
//!   table first and forwarded without classification; only misses are
//!   classified.
//! - [`port`]: the I/O boundary. A backend (in-memory, pcap, AF_PACKET,
//!   DPDK) opens every configured interface and gives each worker one queue
//!   of each. The pipeline sees only [`port::Packet`] buffers.
//! - [`daemon`]: running the workers on pinned threads; its
//!   [`daemon::EngineView`] (counters, and [`pipeline::worker::Ctrl`]
//!   messages such as a new snapshot, posted only through
//!   [`daemon::post_snapshot`]) is the data plane's whole interface to the
//!   control plane.
//! - [`ctl`]: the control plane: control socket, ipvsadm front end, health
//!   checks, metrics, status page, `top`.
//! - [`cluster`]: connection sync between nodes and BIRD control.
//! - [`tools`]: bench, generator, replay and packet builders, built on the
//!   pipeline and never used by it.
//! - [`cli`], [`logging`], [`sdnotify`]: the binaries' surfaces.
//!
//! ## Flow ownership (shared-nothing)
//! Every connection belongs to exactly one worker, chosen by hashing the
//! **client address** ([`pipeline::snapshot::owner_of`]). The client is the source
//! of a packet addressed to a VIP and the destination of anything else
//! (replies from real servers, active FTP data connections opened by a
//! real server towards the client); for an ICMP error sent to a VIP it is
//! the destination of the quoted packet. So both directions of a NAT
//! connection, and the FTP control connection of a client together with
//! all its data connections, land on the same worker: the FTP gateway's
//! expectations live in that worker's table and are found without any
//! sharing.
//!
//! NICs (RSS, AF_PACKET fanout) spread packets by their own hash, which
//! does not follow this rule. A worker that receives a packet it does not
//! own pushes it, buffer and all, onto the owner's lock-free handoff ring
//! (`crossbeam_queue::ArrayQueue`); the owner drains its ring every poll
//! iteration. Neighbour updates and new config snapshots travel on a
//! second ring per worker. No lock is taken on the packet path; a full
//! ring is a counted drop (`handoff_full`).

pub mod cli;
pub mod cluster;
pub mod ctl;
pub mod daemon;
pub mod flow;
pub mod logging;
pub mod pipeline;
pub mod port;
pub mod sdnotify;
pub mod tools;
pub mod wire;

#[cfg(test)]
mod layering_tests {
    use std::path::Path;

    /// The code of a source file before its test module (`#[cfg(test)]`),
    /// without comment lines.
    fn code(path: &Path) -> String {
        let src = std::fs::read_to_string(path).unwrap();
        let body = src.split("#[cfg(test)]").next().unwrap_or("");
        body.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
    }

    /// Whether `code` names the module path `crate::PATH` (not a longer
    /// identifier that starts with it).
    fn uses(code: &str, path: &str) -> bool {
        let pat = format!("crate::{path}");
        code.match_indices(&pat)
            .any(|(i, _)| !code[i + pat.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    }

    /// Every `.rs` file of a folder of `src/` and its subfolders (or one file), with its code.
    fn files(rel: &str) -> Vec<(String, String)> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(rel);
        let mut out = Vec::new();
        if p.is_dir() {
            let mut dirs = vec![p];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let f = e.unwrap().path();
                    if f.is_dir() {
                        dirs.push(f);
                    } else if f.extension().is_some_and(|x| x == "rs") {
                        out.push((f.display().to_string(), code(&f)));
                    }
                }
            }
        } else {
            out.push((p.display().to_string(), code(&p)));
        }
        assert!(!out.is_empty(), "no sources under {rel}");
        out
    }

    /// The layers only look down: wire knows nothing else; flow knows wire
    /// (and holds the boxed per-connection extension state of the SYN proxy
    /// and PROXY protocol); the pipeline knows no control plane, daemon or
    /// tool; the daemon does not know the control plane or the tools; the
    /// health checker, exporter, overview and status page reach the control
    /// server only through `health::HealthTarget` and `metrics::Exported`.
    #[test]
    fn layers_only_look_down() {
        let rules: &[(&str, &[&str])] = &[
            ("wire", &["flow", "pipeline", "port", "daemon", "ctl", "cluster", "tools"]),
            ("flow", &["pipeline::worker", "pipeline::snapshot", "port", "daemon", "ctl", "cluster", "tools"]),
            ("pipeline", &["daemon", "ctl", "cluster::syncd", "cluster::bird", "tools"]),
            ("port", &["flow", "pipeline", "daemon", "ctl", "cluster", "tools"]),
            ("daemon.rs", &["ctl", "tools"]),
            ("ctl/health.rs", &["ctl::control"]),
            ("ctl/metrics.rs", &["ctl::control"]),
            ("ctl/overview.rs", &["ctl::control"]),
            ("ctl/statuspage.rs", &["ctl::control"]),
        ];
        for (dir, forbidden) in rules {
            for (file, code) in files(dir) {
                for dep in *forbidden {
                    assert!(!uses(&code, dep), "{file} uses crate::{dep}");
                }
            }
        }
        // The check sees real uses, and only whole path segments.
        let control = files("ctl/control.rs").pop().unwrap().1;
        assert!(uses(&control, "ctl::health"));
        assert!(!uses("use crate::ctlx;", "ctl"));
    }
}
