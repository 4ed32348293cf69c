//! # ferrovs engine
//!
//! The data plane of ferrovs, a kernel-bypass L4 load balancer in the LVS
//! tradition, plus its I/O backends, daemon and command-line tools.
//!
//! ## Layers
//! - [`port`]: the I/O boundary. A backend (in-memory, pcap, AF_PACKET,
//!   DPDK) opens every configured interface and gives each worker one queue
//!   of each. The pipeline sees only [`port::Packet`] buffers.
//! - [`parse`]: parsing into offsets and flow fields: a hand-written fast
//!   parser for the common TCP/UDP case, etherparse (the reference) for
//!   everything else.
//! - [`flow`], [`tcpstate`]: the per-worker connection table and IPVS TCP
//!   states with timeouts driven by a clock passed in.
//! - [`snapshot`]: the configuration compiled for lookups, shared as an
//!   immutable `Arc` and replaced wholesale on reload; [`remap`]: which
//!   service and real server of the new snapshot each old one became, so
//!   connections, persistence and scheduler state survive the change.
//! - [`tcpopt`]: a bounds-checked TCP options walker (MSS clamping and SACK
//!   mapping on FTP control connections); [`ratelimit`]: a token bucket
//!   driven by `now` for packet-triggered log lines.
//! - [`worker`]: the poll-mode pipeline: classification, scheduling, NAT /
//!   DR / tunnel forwarding, ICMP error translation, ARP/ND, the FTP gateway.
//!   An established connection's packet is looked up in the flow table
//!   first and forwarded without any VIP/local classification (a hit also
//!   proves this worker owns the flow); only misses are classified.
//! - [`daemon`], [`replay`]: running the workers on threads or offline.
//!   The data plane's interface to the control plane is
//!   [`daemon::EngineView`] (counters, and [`worker::Ctrl`] messages such
//!   as a new snapshot, posted only through [`daemon::post_snapshot`]).
//! - [`control`]: the control socket and the state it shares with the
//!   health checker ([`health`], through [`health::HealthTarget`]) and the
//!   exporter ([`metrics`], through [`metrics::Exported`]); those modules
//!   do not import `control` (a test in this file keeps it so).
//!
//! ## Flow ownership (shared-nothing)
//! Every connection belongs to exactly one worker, chosen by hashing the
//! **client address** ([`snapshot::owner_of`]). The client is the source
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

pub mod bench;
pub mod bird;
pub mod cli;
pub mod control;
pub mod counters;
pub mod csum;
pub mod daemon;
pub mod expect;
pub mod flow;
pub mod fnat;
pub mod frag;
pub mod frame;
pub mod gen;
pub mod health;
pub mod icmpgen;
pub mod ipvsadm;
pub mod logging;
pub mod metrics;
pub mod nat64;
pub mod neigh;
pub mod overview;
pub mod parse;
pub mod port;
pub mod proxyproto;
pub mod ratelimit;
pub mod remap;
pub mod replay;
pub mod sdnotify;
pub mod snapshot;
pub mod statuspage;
pub mod sweep;
pub mod sync;
pub mod syncd;
pub mod synproxy;
pub mod tcpopt;
pub mod tcpstate;
pub mod testpkt;
pub mod top;
pub mod worker;

#[cfg(test)]
mod layering_tests {
    /// `crate::NAME` paths a module's code (not its comments) names.
    fn uses(src: &str, module: &str) -> bool {
        let pat = format!("crate::{module}");
        src.lines().filter(|l| !l.trim_start().starts_with("//")).any(|l| {
            l.match_indices(&pat)
                .any(|(i, _)| !l[i + pat.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    }

    /// The control plane (control) depends on the health checker, the
    /// exporter and the overview, never the other way round (they reach it
    /// through `health::HealthTarget` and `metrics::Exported`); replay
    /// drives the daemon's pieces, the daemon does not know replay; the
    /// data plane does not know the ipvsadm front end.
    #[test]
    fn no_import_loops_between_data_and_control_plane() {
        let forbidden = [
            ("health", include_str!("health.rs"), "control"),
            ("metrics", include_str!("metrics.rs"), "control"),
            ("overview", include_str!("overview.rs"), "control"),
            ("statuspage", include_str!("statuspage.rs"), "control"),
            ("daemon", include_str!("daemon.rs"), "replay"),
            ("worker", include_str!("worker.rs"), "ipvsadm"),
            ("flow", include_str!("flow.rs"), "ipvsadm"),
        ];
        for (name, src, dep) in forbidden {
            assert!(!uses(src, dep), "{name}.rs uses crate::{dep}");
        }
        assert!(uses(include_str!("control.rs"), "health"), "the check itself must see real uses");
        assert!(!uses("// crate::control\nuse crate::controlx;", "control"));
    }
}
