//! IPVS schedulers and persistence templates for ferrovs.
//!
//! # Layers
//!
//! - [`Scheduler`]: one file per IPVS scheduler (`rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, `dh`,
//!   `mh`, `lblc`, `lblcr`, `fo`, `ovf`, `twos`). A scheduler value is owned by one worker and one
//!   service; [`Scheduler::pick`] chooses a real server for a *new* flow from the flow key, the
//!   current [`Dest`] list and live connection counts ([`ConnStats`]). [`Scheduler::update`]
//!   rebuilds derived state (wrr cursor, sh/dh/mh tables) after a configuration change.
//! - [`SharedCounts`]: active/inactive connection counters shared by all workers without a lock.
//! - [`PersistTable`]: per-worker, per-service persistence templates (`ipvsadm -p`, `-M`).
//!
//! The crate is pure and deterministic: no I/O, no clock (time is passed in as `now` nanoseconds),
//! no global randomness (`twos` takes a seed), std only.
//!
//! # Connection counts without a lock
//!
//! lc/wlc/sed/nq/ovf/twos/lblc/lblcr read per-server active (established) and inactive counts.
//! Workers are share-nothing: a connection is created, changes state and dies on one worker. So
//! [`SharedCounts`] keeps one row of `AtomicU32` pairs per worker, and **only that worker writes
//! its row** (plain relaxed load + store, no locked read-modify-write, rows padded to cache lines so
//! workers do not false-share). A reader ([`ConnStats`]) sums the column over all rows with relaxed
//! loads.
//!
//! Accuracy cost: a worker's view of its own row is exact; the sum it reads may be off by the
//! updates other workers made in the last few hundred nanoseconds (not yet visible to it) and is
//! not a snapshot (rows are read one after another). For least-connection scheduling that error is
//! of the same order as the batching of a burst and is accepted; IPVS's own counters are likewise
//! read without a lock. Overload thresholds (`-x`/`-y`) are evaluated against the same sums, so a
//! server can briefly receive up to `workers - 1` connections past its upper threshold.
//!
//! # Overload (upper/lower thresholds)
//!
//! IPVS sets `IP_VS_DEST_F_OVERLOAD` when a connection is bound and `active + inactive >= upper`,
//! and clears it when a connection is unbound and the total is `< lower` (or, when `lower == 0`,
//! `total * 4 < upper * 3`). We do not see bind/unbind events, so the hysteresis is evaluated
//! lazily when a scheduler looks at a server, with the same rules; the per-server flag lives in an
//! [`Overload`] value inside each scheduler (per worker). `upper == 0` means no threshold. The
//! clear rule is IPVS's strict `< lower`.
//!
//! Overloaded or quiescent (weight 0) servers get no new flows from any scheduler. For `sh`/`mh`
//! the hashed server being unavailable means "no server" unless the fallback option is set
//! ([`SchedOptions::fallback`], IPVS `sh-fallback`/`mh-fallback`), which re-hashes around the table
//! to the next available one. `dh` has no fallback, as in IPVS.
//!
//! # Hashing (sh, dh, mh)
//!
//! All hashes are SipHash-1-3 with fixed keys ([`hash`]), so every worker and every restart map
//! the same input to the same server. Tables are built from the destinations sorted by
//! `(addr, port)`, so they do not depend on the order of the configuration either. sh hashes the
//! client address (and client port with [`SchedOptions::port`]); dh, lblc and lblcr key on the
//! packet's destination address, which for a ferrovs service is the VIP (`FlowKey::vip`): with a
//! single VIP they send all new flows of the service to one server until it is unavailable or
//! overloaded (that is their IPVS purpose: cache clusters behind fwmark services with many
//! destination addresses).
//!
//! # Weights
//!
//! Weights are `0..=65535` as in ipvsadm (larger values work; comparisons are done in 128 bits).
//! Weight 0 is quiescent: existing connections continue, new flows do not go there. sh and mh keep
//! a quiesced server's slots in their tables (remembering its last non-zero weight, like IPVS's
//! `last_weight`) so draining a server does not reshuffle the others.
//!
//! # Integration contract
//!
//! - Pass `pick` the same `dests` slice as the last `update` (a different length triggers an
//!   implicit `update`). Indices returned are into that slice.
//! - `ConnStats` indices are the same `dests` indices. When the list changes, map counters with
//!   [`index_map`] and [`SharedCounts::adopt_row`] (each worker copies its own row, which is exact).
//! - Call [`Scheduler::tick`] with the current time now and then (e.g. once per poll loop); only
//!   lblc/lblcr use it, to age their locality tables.
//!
//! # Cost of `pick`
//!
//! rr, wrr (amortised), nq with an idle server, sh, dh, mh, lblc and lblcr hits are O(1) (5-30 ns
//! in `benches/benches/sched.rs`); lc, wlc, sed, nq, fo, ovf and twos scan every server and read
//! its counts: O(servers x workers) with [`SharedCounts`] (about 0.7 us for 256 servers with
//! fixed counts). The sh/mh fallback re-hash runs only when the hashed server is unavailable.
//!
//! # Example
//!
//! ```
//! use ferrovs_sched::{new_scheduler, Dest, FlowKey, PersistTable, SharedCounts};
//!
//! let dests = [
//!     Dest::new("10.0.0.1".parse().unwrap(), 80, 3),
//!     Dest::new("10.0.0.2".parse().unwrap(), 80, 1).with_thresholds(1000, 800),
//! ];
//! let counts = SharedCounts::new(2, dests.len()); // shared by 2 workers (e.g. in an Arc)
//! let mut sched = new_scheduler("wlc", &dests, 0).unwrap(); // one per worker per service
//! let mut persist = PersistTable::new(PersistTable::DEFAULT_TIMEOUT_NS, 24, 64); // likewise
//!
//! let key = FlowKey {
//!     client: "198.51.100.7".parse().unwrap(),
//!     client_port: 40000,
//!     vip: "192.0.2.1".parse().unwrap(),
//!     vport: 80,
//!     proto: 6,
//! };
//! let now = 1_000_000_000;
//! let idx = match persist.lookup(key.client, now, &dests) {
//!     Some(i) => i,
//!     None => {
//!         let i = sched.pick(&key, &dests, &counts).expect("a server");
//!         persist.insert(key.client, i, now, &dests);
//!         i
//!     }
//! };
//! counts.inc_inactive(0, idx); // worker 0: SYN forwarded
//! counts.move_inactive_to_active(0, idx); // handshake done
//! assert_eq!(idx, 0);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::IpAddr;

mod counts;
pub mod hash;
mod overload;
mod persist;

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod locality;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

pub use counts::{NoConns, SharedCounts, StaticCounts};
pub use dh::Dh;
pub use fo::Fo;
pub use lblc::Lblc;
pub use lblcr::Lblcr;
pub use lc::Lc;
pub use mh::{InvalidTableSize, Mh, MhTableSize};
pub use nq::Nq;
pub use overload::Overload;
pub use ovf::Ovf;
pub use persist::PersistTable;
pub use rr::Rr;
pub use sed::Sed;
pub use sh::Sh;
pub use twos::Twos;
pub use wlc::Wlc;
pub use wrr::Wrr;

/// Identity of a real server inside a service: address and port. Templates and table entries
/// refer to servers by identity so they survive a reordering of the configuration.
pub type DestId = (IpAddr, u16);

/// A real server of a virtual service, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port; 0 means "same as the client's destination port".
    pub port: u16,
    /// Weight, 0..=65535; 0 is quiescent (no new flows).
    pub weight: u32,
    /// Upper connection threshold (`ipvsadm -x`), 0 = none.
    pub upper: u32,
    /// Lower connection threshold (`ipvsadm -y`), 0 = 3/4 of `upper`.
    pub lower: u32,
}

impl Dest {
    /// A server with the given weight and no thresholds.
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        Dest { addr, port, weight, upper: 0, lower: 0 }
    }

    /// The same server with upper/lower connection thresholds.
    pub fn with_thresholds(self, upper: u32, lower: u32) -> Self {
        Dest { upper, lower, ..self }
    }

    /// `(addr, port)` identity.
    pub fn id(&self) -> DestId {
        (self.addr, self.port)
    }
}

/// What a scheduler may look at for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client (source) address.
    pub client: IpAddr,
    /// Client (source) port.
    pub client_port: u16,
    /// Virtual (destination) address.
    pub vip: IpAddr,
    /// Virtual (destination) port.
    pub vport: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl FlowKey {
    /// A key for a scheduler whose [`Scheduler::uses_key`] is false.
    pub const UNUSED: FlowKey = FlowKey {
        client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        client_port: 0,
        vip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        vport: 0,
        proto: 0,
    };
}

/// Live connection counts per destination index.
pub trait ConnStats {
    /// Established connections to `dest`.
    fn active(&self, dest: usize) -> u32;
    /// Other (half-open, closing, UDP) connections to `dest`.
    fn inactive(&self, dest: usize) -> u32;
}

/// A connection scheduler for one service, owned by one worker.
pub trait Scheduler: Send {
    /// The IPVS name (`"wlc"`, ...).
    fn name(&self) -> &'static str;
    /// Index into `dests` or None when no server can take the flow.
    fn pick(&mut self, key: &FlowKey, dests: &[Dest], stats: &dyn ConnStats) -> Option<usize>;
    /// Does `pick` read its `key`? Schedulers that choose by weights and counts alone say
    /// no, and their caller may pass [`FlowKey::UNUSED`] instead of building one.
    fn uses_key(&self) -> bool {
        true
    }
    /// Config changed: rebuild tables (mh lookup table, wrr state ...).
    fn update(&mut self, dests: &[Dest]);
    /// Advance the scheduler's notion of time (nanoseconds, monotonic). Only schedulers with
    /// time-based state (lblc, lblcr) use it; the default does nothing.
    fn tick(&mut self, now_ns: u64) {
        let _ = now_ns;
    }
}

/// All scheduler names, in ipvsadm's order of the issue. The one list:
/// configuration validation, the importers, ferrovsadm `-s` and the
/// documentation of `service.scheduler` all use it.
pub const NAMES: &[&str] =
    &["rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "lblc", "lblcr", "fo", "ovf", "twos"];

/// The default scheduler, as in ipvsadm.
pub const DEFAULT: &str = "wlc";

/// Scheduler flags and sizes (`ipvsadm -b sh-fallback,sh-port` and build-time table sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedOptions {
    /// sh/mh: when the hashed server is unavailable, re-hash to another (`*-fallback`).
    pub fallback: bool,
    /// sh/mh: include the client port in the hash (`*-port`).
    pub port: bool,
    /// mh lookup table size (a prime).
    pub mh_table_size: MhTableSize,
    /// sh/dh table size as a power of two (IPVS `CONFIG_IP_VS_SH_TAB_BITS`, default 8); clamped to
    /// 1..=20.
    pub table_bits: u8,
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions { fallback: false, port: false, mh_table_size: MhTableSize::DEFAULT, table_bits: 8 }
    }
}

/// The name given to [`new_scheduler`] is not one of [`NAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownScheduler(pub String);

impl fmt::Display for UnknownScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scheduler {:?}: expected one of {}", self.0, NAMES.join(", "))
    }
}

impl std::error::Error for UnknownScheduler {}

/// `name` if it is one of [`NAMES`].
pub fn check_name(name: &str) -> Result<&str, UnknownScheduler> {
    if NAMES.contains(&name) {
        Ok(name)
    } else {
        Err(UnknownScheduler(name.to_string()))
    }
}

/// A scheduler by IPVS name with default options. `seed` feeds `twos`'s RNG (use a different seed
/// per worker); the others ignore it.
pub fn new_scheduler(name: &str, dests: &[Dest], seed: u64) -> Result<Box<dyn Scheduler>, UnknownScheduler> {
    new_scheduler_with(name, dests, seed, &SchedOptions::default())
}

/// A scheduler by IPVS name with explicit options.
pub fn new_scheduler_with(
    name: &str,
    dests: &[Dest],
    seed: u64,
    opts: &SchedOptions,
) -> Result<Box<dyn Scheduler>, UnknownScheduler> {
    Ok(match name {
        "rr" => Box::new(Rr::new(dests)),
        "wrr" => Box::new(Wrr::new(dests)),
        "lc" => Box::new(Lc::new(dests)),
        "wlc" => Box::new(Wlc::new(dests)),
        "sed" => Box::new(Sed::new(dests)),
        "nq" => Box::new(Nq::new(dests)),
        "sh" => Box::new(Sh::with_options(dests, opts)),
        "dh" => Box::new(Dh::with_options(dests, opts)),
        "mh" => Box::new(Mh::with_options(dests, opts)),
        "lblc" => Box::new(Lblc::new(dests)),
        "lblcr" => Box::new(Lblcr::new(dests)),
        "fo" => Box::new(Fo::new(dests)),
        "ovf" => Box::new(Ovf::new(dests)),
        "twos" => Box::new(Twos::new(dests, seed)),
        _ => return Err(UnknownScheduler(name.to_owned())),
    })
}

/// For each old destination index, its index in `new` (by `(addr, port)`), or None if removed.
pub fn index_map(old: &[Dest], new: &[Dest]) -> Vec<Option<usize>> {
    old.iter().map(|o| new.iter().position(|n| n.id() == o.id())).collect()
}

/// IPVS connection overhead for lc/wlc/lblc/twos: `active * 256 + inactive`.
#[inline]
pub(crate) fn overhead(stats: &dyn ConnStats, i: usize) -> u64 {
    ((stats.active(i) as u64) << 8) + stats.inactive(i) as u64
}

/// `a_oh / a_w > b_oh / b_w` without division (weights > 0).
#[inline]
pub(crate) fn worse(a_oh: u64, a_w: u32, b_oh: u64, b_w: u32) -> bool {
    (a_oh as u128) * (b_w as u128) > (b_oh as u128) * (a_w as u128)
}

pub(crate) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weighted-least-overhead choice shared by wlc, sed, lblc and lblcr: the first eligible server,
/// replaced by any later one with a strictly better `overhead / weight`. Ties go to the first.
#[inline]
pub(crate) fn weighted_least(
    dests: &[Dest],
    stats: &dyn ConnStats,
    ov: &mut Overload,
    oh: impl Fn(&dyn ConnStats, usize) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !ov.usable(i, d, stats) {
            continue;
        }
        let doh = oh(stats, i);
        match least {
            None => least = Some((i, doh)),
            Some((l, loh)) => {
                if worse(loh, dests[l].weight, doh, d.weight) {
                    least = Some((i, doh));
                }
            }
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    pub use crate::{NoConns, StaticCounts};
    use std::net::Ipv4Addr;

    pub fn d(n: u8, w: u32) -> Dest {
        Dest::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 80, w)
    }

    pub fn dests(ws: &[u32]) -> Vec<Dest> {
        ws.iter().enumerate().map(|(i, &w)| d(i as u8 + 1, w)).collect()
    }

    pub fn key(c: u32) -> FlowKey {
        FlowKey {
            client: IpAddr::V4(Ipv4Addr::from(c)),
            client_port: (c % 50000) as u16 + 1024,
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            vport: 80,
            proto: 6,
        }
    }

    pub fn counts(active: &[u32], inactive: &[u32]) -> StaticCounts {
        StaticCounts { active: active.to_vec(), inactive: inactive.to_vec() }
    }

    pub fn seq(s: &mut dyn Scheduler, dests: &[Dest], n: usize) -> Vec<Option<usize>> {
        (0..n as u32).map(|c| s.pick(&key(c), dests, &NoConns)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testutil::*;

    #[test]
    fn every_name_builds_and_reports_its_name() {
        let ds = dests(&[1, 2, 3]);
        for &n in NAMES {
            let mut s = new_scheduler(n, &ds, 7).unwrap();
            assert_eq!(s.name(), n);
            assert!(s.pick(&key(1), &ds, &NoConns).is_some(), "{n}");
            assert_eq!(s.pick(&key(1), &[], &NoConns), None, "{n} with no dests");
        }
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        assert_eq!(check_name("mh"), Ok("mh"));
        assert_eq!(check_name("foo").err(), new_scheduler("foo", &[], 0).err());
        let e = new_scheduler("foo", &[], 0).err().unwrap();
        assert_eq!(
            e.to_string(),
            "unknown scheduler \"foo\": expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, lblc, \
             lblcr, fo, ovf, twos"
        );
    }

    #[test]
    fn all_quiescent_means_none() {
        let ds = dests(&[0, 0]);
        for &n in NAMES {
            let mut s = new_scheduler(n, &ds, 1).unwrap();
            for c in 0..20 {
                assert_eq!(s.pick(&key(c), &ds, &NoConns), None, "{n}");
            }
        }
    }

    #[test]
    fn all_overloaded_means_none() {
        let ds: Vec<Dest> = dests(&[1, 2]).into_iter().map(|d| d.with_thresholds(5, 0)).collect();
        let st = counts(&[3, 4], &[2, 1]);
        for &n in NAMES {
            let mut s = new_scheduler(n, &ds, 1).unwrap();
            for c in 0..20 {
                assert_eq!(s.pick(&key(c), &ds, &st), None, "{n}");
            }
        }
    }

    #[test]
    fn index_map_by_identity() {
        let a = dests(&[1, 2, 3]);
        let b = vec![a[2], a[0]];
        assert_eq!(index_map(&a, &b), vec![Some(1), None, Some(0)]);
    }
}
