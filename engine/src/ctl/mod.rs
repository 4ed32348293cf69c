//! The control plane, on the other side of [`crate::daemon::EngineView`]
//! from the workers: it reads counters and posts snapshots, nothing else.
//!
//! - [`control`]: the unix-socket server (versioned JSON lines), the live
//!   configuration and its edits; [`clients`]: how many clients it serves and
//!   for how long.
//! - [`ipvsadm`]: the `ferrovsadm` command line, its edits and the ipvsadm
//!   `-L` / `-S` / `-c` output; the one ipvsadm-save parser.
//! - [`health`]: real-server health checks (through
//!   [`health::HealthTarget`]); [`notify`]: the services' notify programs
//!   (keepalived's notify_up / notify_down / quorum_up / quorum_down);
//!   [`metrics`]: the Prometheus exporter
//!   (through [`metrics::Exported`]), [`statuspage`] beside it;
//!   [`overview`]: everything an operator looks at, in one structure;
//!   [`top`]: `ferrovsadm top`.
//!
//! `health`, `metrics`, `overview` and `statuspage` do not import
//! `control` (a test in lib.rs keeps it so).

pub mod clients;
pub mod control;
pub mod health;
pub mod ipvsadm;
pub mod metrics;
pub mod notify;
pub mod overview;
pub mod statuspage;
pub mod top;
