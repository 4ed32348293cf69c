//! The control plane of a running ferrovs: a unix-socket server speaking
//! a versioned, newline-delimited JSON protocol, the live configuration,
//! counters, rate estimation, and the glue to the health checker and the
//! Prometheus exporter.
//!
//! ## Protocol (version 1)
//! One JSON object per line in each direction:
//! `{"v":1,"op":"list"}` -> `{"v":1,"ok":true,"list":{...}}`, errors as
//! `{"v":1,"ok":false,"error":"..."}`. A connection may carry any number
//! of requests. A request longer than 1 MiB, a request cut off by the end
//! of the stream, invalid JSON, an unknown `op` or a `v` other than 1 gets
//! an error reply; the daemon keeps running.
//!
//! | op        | request fields              | reply fields |
//! |-----------|-----------------------------|--------------|
//! | `status`  |                             | `version`, `workers`, `services`, `uptime_s`, `config` |
//! | `list`    |                             | `list` ([`ListData`]) |
//! | `conns`   |                             | `conns` ([`ConnRow`] list), `missing_workers` |
//! | `save`    |                             | `rules` (ipvsadm-save text) |
//! | `edit`    | `cmds` ([`Command`] list)   | `services` (count after the edit) |
//! | `zero`    | `service` (optional [`SvcKey`]) | |
//! | `reload`  |                             | `services` |
//! | `drops`   |                             | `workers`: per worker counters and drops by reason |
//! | `ftp`     |                             | `services`: FTP gateway counters per service |
//! | `health`  |                             | `servers`: health-check state per real server |
//! | `metrics` |                             | `text` (Prometheus exposition) |
//! | `overview`|                             | `overview` ([`crate::ctl::overview::Overview`]: all of the above that `ferrovsadm top` and the status page show) |
//!
//! An `edit` applies all its commands to a copy of the live
//! configuration, validates the result as a whole (the ferrovs-cfg
//! validator, through a TOML round trip) and only then builds a new
//! snapshot and posts it to every worker: a failed edit changes nothing.
//! Workers are never locked: they receive immutable snapshots on their
//! control rings.
//!
//! ## Access
//! The socket is created with mode 0660 (its directory is created if
//! needed) and every peer's credentials are checked (SO_PEERCRED): only
//! root and the daemon's own uid are served.

use crate::ctl::clients::{Admit, Client, Clients, Limits, Paced};
use crate::ctl::health::{HealthInfo, HealthTarget, ServerKey};
use crate::ctl::ipvsadm::{self, Command, ConnRow, ListData, Stats, SvcKey};
use crate::ctl::notify::{self, Job};
use crate::ctl::overview::{FtpRow, Overview};
use crate::daemon::{EngineView, Running};
use crate::pipeline::counters::{DropReason, ServiceCounters};
use crate::pipeline::snapshot::Snapshot;
use crate::pipeline::worker::Ctrl;
use ferrovs_cfg::Config;
use ferrovs_sched::ConnStats;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const PROTOCOL_VERSION: u64 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;
/// Rate estimator period (as IPVS's estimator).
pub const RATE_PERIOD: Duration = Duration::from_secs(2);

/// Builds a snapshot from a config and posts it to every worker.
pub type Applier = Arc<dyn Fn(Arc<Config>) -> Arc<Snapshot> + Send + Sync>;

/// Identifies a counter set: service name, and real server (address, shown port).
type CounterKey = (String, Option<(IpAddr, u16)>);

#[derive(Clone, Copy, Default)]
struct Raw {
    conns: u64,
    inpkts: u64,
    outpkts: u64,
    inbytes: u64,
    outbytes: u64,
}

impl Raw {
    fn minus(self, b: Raw) -> Raw {
        Raw {
            conns: self.conns.saturating_sub(b.conns),
            inpkts: self.inpkts.saturating_sub(b.inpkts),
            outpkts: self.outpkts.saturating_sub(b.outpkts),
            inbytes: self.inbytes.saturating_sub(b.inbytes),
            outbytes: self.outbytes.saturating_sub(b.outbytes),
        }
    }
    fn as_array(self) -> [u64; 5] {
        [self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes]
    }
}

/// EWMA of per-second rates, like IPVS's `ip_vs_est` (weight 1/4 every 2 s).
#[derive(Clone, Copy, Default)]
struct Rate {
    last: [u64; 5],
    avg: [f64; 5],
    primed: bool,
}

impl Rate {
    fn sample(&mut self, now: [u64; 5], secs: f64) {
        if self.primed {
            for ((avg, &n), &last) in self.avg.iter_mut().zip(&now).zip(&self.last) {
                let delta = n.saturating_sub(last) as f64 / secs;
                *avg += (delta - *avg) / 4.0;
            }
        }
        self.last = now;
        self.primed = true;
    }
    fn apply(&self, s: &mut Stats) {
        s.cps = self.avg[0].round() as u64;
        s.inpps = self.avg[1].round() as u64;
        s.outpps = self.avg[2].round() as u64;
        s.inbps = (self.avg[3] * 8.0).round() as u64;
        s.outbps = (self.avg[4] * 8.0).round() as u64;
    }
}

struct Inner {
    /// The configuration as administered (config file + ferrovsadm edits):
    /// what `-S` prints.
    admin: Arc<Config>,
    /// The snapshot workers run: `admin` with health-check overrides.
    snap: Arc<Snapshot>,
    /// Real servers a health check holds down.
    down: HashMap<ServerKey, ()>,
    zero: HashMap<CounterKey, Raw>,
    rates: HashMap<CounterKey, Rate>,
    health: HashMap<ServerKey, HealthInfo>,
    /// Each service's quorum state in the snapshot served (see [`notify::quorum_events`]).
    quorum: HashMap<String, bool>,
}

/// Everything the control server, health checker and exporter share.
pub struct State {
    pub view: Arc<dyn EngineView>,
    apply: Applier,
    config_path: Option<PathBuf>,
    inner: Mutex<Inner>,
    started: Instant,
    /// Flow table capacity of each worker (fixed when the workers started).
    pub flow_capacity: usize,
    /// Cluster: the sync thread's counters (set by [`spawn`] when the node syncs).
    pub sync_stats: std::sync::OnceLock<Arc<crate::cluster::syncd::SyncStats>>,
    /// The ports' own counters (set by [`spawn`] for a backend that has them).
    pub ports: std::sync::OnceLock<crate::port::PortSource>,
    /// The health checker's threads and checks.
    pub health_pool: Arc<crate::ctl::health::pool::PoolStats>,
    /// Runs the services' `[service.notify]` programs.
    notifier: notify::Notifier,
}

/// An applier that builds snapshots for the MACs of `running` and posts
/// them on the workers' control rings (what `Running::apply` does, but
/// shareable between threads).
pub fn applier_of(running: &Running) -> Applier {
    let view = running.view.clone();
    let macs: Vec<[u8; 6]> = running.snapshot.ifaces.iter().map(|i| i.mac).collect();
    Arc::new(move |cfg: Arc<Config>| {
        let host = crate::port::afpacket::kernel_addresses(&cfg);
        let s = Arc::new(Snapshot::build_with_host(cfg, &macs, &host));
        crate::daemon::post_snapshot(&*view, &s, Duration::from_secs(2));
        s
    })
}

/// Validate a config the way a config file is validated (TOML round trip
/// through the ferrovs-cfg validator).
pub fn validate(cfg: &Config) -> Result<Config, String> {
    for s in &cfg.services {
        ferrovs_sched::check_name(&s.scheduler).map_err(|e| format!("service {:?}: {e}", s.name))?;
    }
    let text = cfg.to_toml();
    let mut out = Config::from_str(&text, "<control>").map_err(|e| e.message)?;
    out.source = cfg.source.clone();
    Ok(out)
}

impl State {
    pub fn new(
        view: Arc<dyn EngineView>,
        apply: Applier,
        config_path: Option<PathBuf>,
        config: Arc<Config>,
        snap: Arc<Snapshot>,
    ) -> Arc<State> {
        let flow_capacity = config.engine.flow_table_size.max(16);
        let down: HashMap<ServerKey, ()> = Self::starting_down(None, &config).into_iter().map(|k| (k, ())).collect();
        // The quorum states served at the start: what the first change is measured against.
        let mut quorum = HashMap::new();
        notify::quorum_events(&mut quorum, &snap.config);
        let st = Arc::new(State {
            flow_capacity,
            view,
            apply,
            config_path,
            inner: Mutex::new(Inner {
                admin: config.clone(),
                snap,
                down: HashMap::new(),
                zero: HashMap::new(),
                rates: HashMap::new(),
                health: HashMap::new(),
                quorum,
            }),
            started: Instant::now(),
            sync_stats: std::sync::OnceLock::new(),
            ports: std::sync::OnceLock::new(),
            health_pool: Arc::default(),
            notifier: notify::Notifier::default(),
        });
        // Servers that start down are down in the first snapshot State makes, before the
        // checker runs.
        if !down.is_empty() {
            let mut g = st.lock();
            g.down = down;
            st.commit(&mut g, (*config).clone());
        }
        st
    }

    /// Is the health checker holding `key` down?
    pub fn is_down(&self, key: &ServerKey) -> bool {
        self.lock().down.contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The snapshot workers currently run (or are about to).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.lock().snap.clone()
    }

    /// The administered configuration.
    pub fn config(&self) -> Arc<Config> {
        self.lock().admin.clone()
    }

    /// `admin` with health-check overrides: down servers quiesced
    /// (weight 0) or removed, per the server's health checks.
    fn effective(admin: &Config, down: &HashMap<ServerKey, ()>) -> Config {
        let mut c = admin.clone();
        if down.is_empty() {
            return c;
        }
        for s in &mut c.services {
            let name = s.name.clone();
            let svc = s.clone();
            s.real_servers.retain_mut(|r| {
                let key = (name.clone(), r.address, ipvsadm::shown_port(&svc, r.port));
                if down.contains_key(&key) {
                    // As its checks say (keepalived's inhibit_on_failure is per real server).
                    if r.quiesces(&svc.health_checks) {
                        r.weight = 0;
                        true
                    } else {
                        false
                    }
                } else {
                    true
                }
            });
        }
        c
    }

    /// The real servers of `admin` that start down (`start_down`, keepalived's `alpha`): the
    /// checked ones of those services that `old` (the configuration before; `None`: the
    /// daemon's start) does not have, so a reload does not take a server that is up down.
    fn starting_down(old: Option<&Config>, admin: &Config) -> Vec<ServerKey> {
        let old = old.map(crate::ctl::health::checked_servers);
        crate::ctl::health::checked_servers(admin)
            .into_iter()
            // A service's checks agree on `start_down` (the configuration's rule).
            .filter(|(k, checks)| {
                checks.iter().any(|(hc, _)| hc.start_down) && old.as_ref().is_none_or(|o| !o.contains_key(k))
            })
            .map(|(k, _)| k)
            .collect()
    }

    fn commit(&self, g: &mut Inner, admin: Config) {
        for k in Self::starting_down(Some(&g.admin), &admin) {
            g.down.insert(k, ());
        }
        let eff = Self::effective(&admin, &g.down);
        // Workers start a service or real server that was not in the last
        // snapshot with new counters at zero (as IPVS a new destination):
        // a `-Z` baseline or rate estimate of an earlier one with the same
        // key must not apply to them.
        let old = &g.snap.config;
        let kept = |k: &CounterKey| -> bool {
            let has = |c: &Config| {
                c.services.iter().any(|s| {
                    s.name == k.0
                        && k.1.is_none_or(|(a, p)| {
                            s.real_servers.iter().any(|r| r.address == a && ipvsadm::shown_port(s, r.port) == p)
                        })
                })
            };
            has(old) && has(&eff)
        };
        g.zero.retain(|k, _| kept(k));
        g.rates.retain(|k, _| kept(k));
        g.admin = Arc::new(admin);
        // Sorry servers in here rather than in the snapshot's build: a service's quorum state
        // in the snapshot before is the memory its hysteresis needs.
        let served = eff.serving_after(Some(&g.snap.config)).unwrap_or(eff);
        for job in notify::quorum_events(&mut g.quorum, &served) {
            self.notifier.post(job);
        }
        g.snap = (self.apply)(Arc::new(served));
    }

    /// Apply ipvsadm edits atomically. Returns the number of services.
    pub fn edit(&self, cmds: &[Command]) -> Result<usize, String> {
        let mut g = self.lock();
        let mut cfg = (*g.admin).clone();
        for (i, c) in cmds.iter().enumerate() {
            ipvsadm::apply(&mut cfg, c)
                .map_err(|e| if cmds.len() > 1 { format!("command {}: {e}", i + 1) } else { e })?;
        }
        let cfg = validate(&cfg)?;
        let n = cfg.services.len();
        self.commit(&mut g, cfg);
        Ok(n)
    }

    /// Replace the whole configuration (reload).
    pub fn replace(&self, cfg: Config) -> usize {
        let mut g = self.lock();
        let n = cfg.services.len();
        self.commit(&mut g, cfg);
        n
    }

    /// Re-read the config file (SIGHUP, `ferrovsadm --reload`). On error the
    /// running configuration is kept.
    pub fn reload(&self) -> Result<usize, String> {
        let path = self.config_path.as_ref().ok_or("the daemon was not started from a config file")?;
        let cfg = Config::from_file(path).map_err(|e| e.to_string())?;
        Ok(self.replace(cfg))
    }

    /// Mark a real server up or down (health checker). Applies a new
    /// snapshot when the state changes.
    pub fn set_down(&self, key: &ServerKey, down: bool) {
        let mut g = self.lock();
        let changed = if down { g.down.insert(key.clone(), ()).is_none() } else { g.down.remove(key).is_some() };
        if changed {
            let admin = (*g.admin).clone();
            self.commit(&mut g, admin);
        }
    }

    pub fn set_health(&self, key: &ServerKey, info: HealthInfo) {
        self.lock().health.insert(key.clone(), info);
    }

    /// A server the health checker no longer checks: forget its state and
    /// stop holding it down.
    pub fn forget_health(&self, key: &ServerKey) {
        let mut g = self.lock();
        g.health.remove(key);
        if g.down.remove(key).is_some() {
            let admin = (*g.admin).clone();
            self.commit(&mut g, admin);
        }
    }

    pub fn health(&self) -> Vec<HealthInfo> {
        let g = self.lock();
        let mut v: Vec<HealthInfo> = g.health.values().cloned().collect();
        v.sort_by(|a, b| (&a.service, &a.server).cmp(&(&b.service, &b.server)));
        v
    }

    fn raw_counters(&self, snap: &Snapshot) -> HashMap<CounterKey, Raw> {
        use std::sync::atomic::Ordering::Relaxed;
        let per = self.view.service_counters();
        let mut out = HashMap::new();
        for (i, svc) in snap.config.services.iter().enumerate() {
            let blocks: Vec<&ServiceCounters> =
                per.iter().filter_map(|v| v.get(i)).filter(|c| c.dests.len() == svc.real_servers.len()).collect();
            let mut s = Raw::default();
            for c in &blocks {
                s.conns += c.conns.load(Relaxed);
                s.inpkts += c.in_packets.load(Relaxed);
                s.outpkts += c.out_packets.load(Relaxed);
                s.inbytes += c.in_bytes.load(Relaxed);
                s.outbytes += c.out_bytes.load(Relaxed);
            }
            out.insert((svc.name.clone(), None), s);
            for (j, r) in svc.real_servers.iter().enumerate() {
                let mut d = Raw::default();
                for c in &blocks {
                    let x = &c.dests[j];
                    d.conns += x.conns.load(Relaxed);
                    d.inpkts += x.in_packets.load(Relaxed);
                    d.outpkts += x.out_packets.load(Relaxed);
                    d.inbytes += x.in_bytes.load(Relaxed);
                    d.outbytes += x.out_bytes.load(Relaxed);
                }
                out.insert((svc.name.clone(), Some((r.address, ipvsadm::shown_port(svc, r.port)))), d);
            }
        }
        out
    }

    /// One rate-estimator tick.
    pub fn sample_rates(&self, secs: f64) {
        let snap = self.snapshot();
        let raw = self.raw_counters(&snap);
        let mut g = self.lock();
        g.rates.retain(|k, _| raw.contains_key(k));
        for (k, v) in raw {
            g.rates.entry(k).or_default().sample(v.as_array(), secs);
        }
    }

    /// Reset the counters shown (`-Z`): counters are owned by workers, so
    /// zeroing records a baseline.
    pub fn zero(&self, key: Option<&SvcKey>) -> Result<(), String> {
        let snap = self.snapshot();
        let only = match key {
            Some(k) => Some(
                snap.config.services
                    [ipvsadm::find_service(&snap.config, k).ok_or_else(|| ipvsadm::no_such_service(k))?]
                .name
                .clone(),
            ),
            None => None,
        };
        let raw = self.raw_counters(&snap);
        let mut g = self.lock();
        for (k, v) in raw {
            if only.as_ref().is_none_or(|n| *n == k.0) {
                g.zero.insert(k, v);
            }
        }
        Ok(())
    }

    /// What `-L` shows.
    pub fn list(&self) -> ListData {
        let snap = self.snapshot();
        let raw = self.raw_counters(&snap);
        let g = self.lock();
        let cfg = &snap.config;
        let mut d = ipvsadm::list_of_config(cfg);
        let admin_weight = |svc: &str, a: IpAddr, p: u16| -> Option<u32> {
            let s = g.admin.services.iter().find(|s| s.name == svc)?;
            s.real_servers.iter().find(|r| r.address == a && ipvsadm::shown_port(s, r.port) == p).map(|r| r.weight)
        };
        let stats = |k: &CounterKey| -> Stats {
            let r = raw.get(k).copied().unwrap_or_default().minus(g.zero.get(k).copied().unwrap_or_default());
            let mut s = Stats {
                conns: r.conns,
                inpkts: r.inpkts,
                outpkts: r.outpkts,
                inbytes: r.inbytes,
                outbytes: r.outbytes,
                ..Default::default()
            };
            if let Some(rt) = g.rates.get(k) {
                rt.apply(&mut s);
            }
            s
        };
        for (i, sv) in d.services.iter_mut().enumerate() {
            sv.stats = stats(&(sv.name.clone(), None));
            let counts = snap.conn_counts.get(i);
            let svc_cfg = &cfg.services[i];
            // The checked servers (not the sorry server, which is never checked).
            let checked: std::collections::HashSet<(IpAddr, u16)> = svc_cfg
                .real_servers
                .iter()
                .filter(|r| !r.checks(&svc_cfg.health_checks).is_empty())
                .map(|r| (r.address, ipvsadm::shown_port(svc_cfg, r.port)))
                .collect();
            for (j, dv) in sv.dests.iter_mut().enumerate() {
                let key = (sv.name.clone(), Some((dv.addr, dv.port)));
                dv.stats = stats(&key);
                if let Some(c) = counts {
                    if j < c.dests() {
                        dv.active = c.active(j);
                        dv.inactive = c.inactive(j);
                    }
                }
                dv.config_weight = admin_weight(&sv.name, dv.addr, dv.port).unwrap_or(dv.weight);
                if checked.contains(&(dv.addr, dv.port)) {
                    let down = g.down.contains_key(&(sv.name.clone(), dv.addr, dv.port));
                    dv.health = Some(if down { "down" } else { "up" }.into());
                }
            }
        }
        d
    }

    /// Ask every worker for its connections (bounded wait).
    pub fn conns(&self) -> (Vec<ConnRow>, Vec<usize>) {
        let n = self.view.workers();
        let mut rxs = Vec::new();
        let mut missing = Vec::new();
        for w in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if self.view.post(w, Ctrl::ListConns(tx)) {
                rxs.push((w, rx));
            } else {
                missing.push(w);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        for (w, rx) in rxs {
            match rx.recv_deadline(deadline) {
                Ok(v) => out.extend(v),
                Err(_) => missing.push(w),
            }
        }
        (out, missing)
    }

    fn drops(&self) -> Value {
        let counters = self.view.counters();
        let workers: Vec<Value> = counters
            .iter()
            .enumerate()
            .map(|(w, c)| {
                let s = c.snapshot();
                let drops: serde_json::Map<String, Value> = DropReason::ALL.iter().map(|r| (r.label().to_string(), json!(c.drops_of(*r)))).collect();
                json!({"worker": w, "rx_packets": s.rx_packets, "tx_packets": s.tx_packets, "flows_active": s.flows_active,
                       "handoff_out": s.handoff_out, "handoff_in": s.handoff_in, "neigh_evicted": s.neigh_evicted, "neigh_limited": s.neigh_limited, "arp_own_addr": s.arp_own_addr, "neigh_probes": s.neigh_probes, "neigh_failed": s.neigh_failed,
                       "frag_evicted": s.frag_evicted,
                       "cookies_sent": s.cookies_sent, "cookies_validated": s.cookies_validated,
                       "cookies_failed": s.cookies_failed, "proxy_syn_retries": s.proxy_syn_retries, "flows_created": s.flows_created,
                       "flows_recreated": s.flows_recreated, "tcp_out_of_window": s.tcp_out_of_window, "sync_installed": s.sync_installed,
                       "sync_skipped": s.sync_skipped, "sync_capped": s.sync_capped, "sync_carried": s.sync_carried, "redirected": s.redirected, "redirect_loop": s.redirect_loop, "icmp_sent": s.icmp_sent,
                       "icmp_ratelimited": s.icmp_ratelimited, "tunnel_mtu_learnt": s.tunnel_mtu_learnt, "tunnel_mtu_evicted": s.tunnel_mtu_evicted, "frags_made": s.frags_made, "fnat_laddr_retired": s.fnat_laddr_retired,
                       "to_kernel": s.to_kernel, "from_kernel": s.from_kernel, "kernel_limited": s.kernel_limited,
                       "drops": drops})
            })
            .collect();
        json!(workers)
    }

    /// New connections each service refused, by reason: every service, every reason of
    /// [`crate::pipeline::counters::REFUSALS`] in its order, summed over the workers.
    fn refusal_counts(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = self.snapshot();
        let per = self.view.service_counters();
        let count = |i: usize, k: usize| -> u64 {
            per.iter().filter_map(|v| v.get(i)).map(|c| c.refused.0[k].load(Relaxed)).sum()
        };
        snap.services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let by = crate::pipeline::counters::REFUSALS.iter().enumerate().map(|(k, r)| (r.label(), count(i, k)));
                (s.name.clone(), by.collect())
            })
            .collect()
    }

    /// [`State::refusal_counts`] as the `drops` reply's `services`.
    fn refused(&self) -> Value {
        let rows: Vec<Value> = self
            .refusal_counts()
            .into_iter()
            .map(|(name, by)| {
                let by: serde_json::Map<String, Value> =
                    by.into_iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
                json!({"service": name, "refused": by})
            })
            .collect();
        json!(rows)
    }

    /// The non-zero counts of [`State::refusal_counts`]: (service, reason, count).
    fn refused_rows(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (name, by) in self.refusal_counts() {
            out.extend(by.into_iter().filter(|&(_, n)| n > 0).map(|(r, n)| (name.clone(), r.to_string(), n)));
        }
        out
    }

    pub(crate) fn ftp(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = self.snapshot();
        let per = self.view.service_counters();
        let mut out = Vec::new();
        for (i, s) in snap.services.iter().enumerate() {
            if s.ftp.is_none() {
                continue;
            }
            let sum = |f: &dyn Fn(&crate::pipeline::counters::FtpCounters) -> u64| -> u64 {
                per.iter().filter_map(|v| v.get(i)).map(|c| f(&c.ftp)).sum()
            };
            let mut row = serde_json::Map::new();
            row.insert("service".into(), json!(s.name));
            let names = crate::pipeline::counters::FtpCounters::names();
            for (k, n) in names.iter().enumerate() {
                row.insert((*n).into(), json!(sum(&|c| c.fields()[k].1.load(Relaxed))));
            }
            out.push(serde_json::Value::Object(row));
        }
        json!(out)
    }

    /// Seconds since the control plane started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The config file the daemon reloads from.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Handle one request object; returns the reply (without `v`).
    pub fn handle(&self, req: &Value) -> Result<Value, String> {
        let op = req.get("op").and_then(|o| o.as_str()).ok_or("missing \"op\"")?;
        match op {
            "status" => {
                let cfg = self.config();
                Ok(json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "protocol": PROTOCOL_VERSION,
                    "workers": self.view.workers(),
                    "services": cfg.services.len(),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "config": self.config_path.as_ref().map(|p| p.display().to_string()),
                }))
            }
            "list" => Ok(json!({"list": self.list()})),
            "conns" => {
                let (c, missing) = self.conns();
                Ok(json!({"conns": c, "missing_workers": missing}))
            }
            "save" => Ok(json!({"rules": ipvsadm::format_save(&self.config())})),
            "edit" => {
                let cmds: Vec<Command> = serde_json::from_value(req.get("cmds").cloned().ok_or("missing \"cmds\"")?)
                    .map_err(|e| format!("bad \"cmds\": {e}"))?;
                let n = self.edit(&cmds)?;
                Ok(json!({"services": n}))
            }
            "zero" => {
                let key: Option<SvcKey> = match req.get("service") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| format!("bad \"service\": {e}"))?),
                };
                self.zero(key.as_ref())?;
                Ok(json!({}))
            }
            "reload" => Ok(json!({"services": self.reload()?})),
            "drain" => {
                let cfg = self.config();
                let Some(c) = &cfg.cluster else {
                    return Err("drain needs a [cluster] configuration (use SIGTERM to stop a single node)".into());
                };
                crate::daemon::request_stop();
                Ok(json!({"draining": true, "timeout_s": c.drain_timeout}))
            }
            "drops" => {
                let mut r = json!({"workers": self.drops(), "services": self.refused()});
                if let Some(s) = self.sync_stats.get() {
                    let m: serde_json::Map<String, Value> =
                        s.fields().iter().map(|(k, _, v)| (k.to_string(), json!(v.load(Ordering::Relaxed)))).collect();
                    r["sync"] = Value::Object(m);
                }
                Ok(r)
            }
            "ports" => Ok(match self.ports.get() {
                Some(source) => json!({"counted": true, "ports": source()}),
                None => json!({"counted": false, "ports": []}),
            }),
            "ftp" => Ok(json!({"services": self.ftp()})),
            "health" => Ok(json!({"servers": self.health()})),
            "metrics" => Ok(json!({"text": crate::ctl::metrics::Exported::metrics(self)})),
            "overview" => Ok(json!({"overview": self.overview()})),
            other => Err(format!("unknown op {other:?}")),
        }
    }

    /// Handle one raw request line (without the newline): the reply line.
    pub fn handle_line(&self, line: &[u8]) -> Value {
        let reply = (|| -> Result<Value, String> {
            let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
            let req: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            if !req.is_object() {
                return Err("request must be a JSON object".into());
            }
            match req.get("v").and_then(|v| v.as_u64()) {
                Some(PROTOCOL_VERSION) => {}
                Some(v) => {
                    return Err(format!("unsupported protocol version {v} (this daemon speaks {PROTOCOL_VERSION})"))
                }
                None => return Err("missing protocol version \"v\"".into()),
            }
            self.handle(&req)
        })();
        match reply {
            Ok(mut v) => {
                if let Value::Object(m) = &mut v {
                    m.insert("v".into(), json!(PROTOCOL_VERSION));
                    m.insert("ok".into(), json!(true));
                }
                v
            }
            Err(e) => error_reply(&e),
        }
    }
}

impl State {
    /// Everything `ferrovsadm top` and the status page show.
    pub fn overview(&self) -> Overview {
        let counters = self.view.counters();
        let total = crate::daemon::sum_counters(&counters);
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.label().to_string(), counters.iter().map(|c| c.drops_of(*r)).sum()))
            .collect();
        Overview {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.uptime_s(),
            workers: self.view.workers(),
            config: self.config_path().map(|p| p.display().to_string()),
            list: self.list(),
            flows_active: total.flows_active,
            flow_capacity: (self.flow_capacity * self.view.workers()) as u64,
            rx_packets: total.rx_packets,
            tx_packets: total.tx_packets,
            drops,
            refused: self.refused_rows(),
            ftp: self.ftp().as_array().map(|a| a.iter().map(FtpRow::from_json).collect()).unwrap_or_default(),
            health: self.health(),
        }
    }
}

impl HealthTarget for State {
    fn config(&self) -> Arc<Config> {
        State::config(self)
    }
    fn set_down(&self, key: &ServerKey, down: bool) {
        State::set_down(self, key, down)
    }
    fn set_health(&self, key: &ServerKey, info: HealthInfo) {
        State::set_health(self, key, info)
    }
    fn forget(&self, key: &ServerKey) {
        State::forget_health(self, key)
    }
    fn is_down(&self, key: &ServerKey) -> bool {
        State::is_down(self, key)
    }
    fn pool_stats(&self) -> Option<Arc<crate::ctl::health::pool::PoolStats>> {
        Some(self.health_pool.clone())
    }
    fn server_event(&self, key: &ServerKey, up: bool) {
        let cfg = self.lock().admin.clone();
        let event = if up { "up" } else { "down" };
        if let Some(job) =
            cfg.services.iter().find(|s| s.name == key.0).and_then(|s| Job::of(s, event, Some((key.1, key.2))))
        {
            self.notifier.post(job);
        }
    }
}

impl crate::ctl::metrics::Exported for State {
    fn metrics(&self) -> String {
        let (list, snap) = (self.list(), self.snapshot());
        crate::ctl::metrics::render(&crate::ctl::metrics::Figures {
            list: &list,
            workers: &self.view.counters(),
            flow_capacity: self.flow_capacity,
            snapshot: &snap,
            services: &self.view.service_counters(),
            sync: self.sync_stats.get().map(|s| &**s),
            ports: &self.ports.get().map(|p| p()).unwrap_or_default(),
            health: &self.health_pool,
        })
    }
    fn status_page(&self) -> String {
        crate::ctl::statuspage::render(&self.overview())
    }
}

pub fn error_reply(e: &str) -> Value {
    json!({"v": PROTOCOL_VERSION, "ok": false, "error": e})
}

// ---------------------------------------------------------------------------
// The socket server.

/// The running control plane; dropping it (or [`ControlHandle::shutdown`])
/// stops its threads and removes the socket.
pub struct ControlHandle {
    pub state: Arc<State>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket: PathBuf,
}

impl ControlHandle {
    /// Re-read the config file (for SIGHUP).
    pub fn reload(&self) -> Result<usize, String> {
        self.state.reload()
    }
    /// The snapshot workers run.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }
    pub fn shutdown(mut self) {
        self.stop_threads();
    }
    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if let Ok(meta) = std::fs::metadata(path) {
        // Only a stale socket is removed: never a file that is not a socket
        // (a control_socket naming the config file by mistake), nor a socket
        // whose daemon could not be asked (connect failing other than
        // "refused", e.g. for permission).
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket; not removing it", path.display()),
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{}: another ferrovs is listening there", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: cannot tell whether another ferrovs listens there: {e}", path.display()),
                ))
            }
        }
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// The uid of the peer of a unix stream.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid fd, and `cred`/`len` describe a writable ucred buffer.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

fn write_reply(s: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    s.write_all(&line)
}

fn serve_client(state: &State, mut stream: UnixStream, my_uid: u32, clients: &Clients, me: &Client) {
    match peer_uid(&stream) {
        Some(u) if u == 0 || u == my_uid => {}
        other => {
            tracing::warn!(uid = ?other, "control: refused a client that is neither root nor the daemon's user");
            let _ = write_reply(&mut stream, &error_reply("permission denied"));
            return;
        }
    }
    let _ = stream.set_write_timeout(Some(clients.limits.write));
    let Ok(rd) = stream.try_clone() else { return };
    let mut reader = BufReader::new(Paced::new(rd, clients, me));
    loop {
        reader.get_mut().next_request();
        let mut buf = Vec::new();
        let n = match (&mut reader).take(MAX_REQUEST as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                    if !buf.is_empty() {
                        let _ = write_reply(
                            &mut stream,
                            &error_reply(&format!(
                                "request not complete within {} s of its first byte",
                                clients.limits.request.as_secs_f64()
                            )),
                        );
                    }
                } else {
                    tracing::debug!("control: read error: {e}");
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_REQUEST {
                let _ =
                    write_reply(&mut stream, &error_reply(&format!("request too large (limit {MAX_REQUEST} bytes)")));
                // Let the client read the reply: stop writing, then discard
                // (a bounded amount of) what it is still sending.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = std::io::copy(&mut stream.take(64 << 20), &mut std::io::sink());
            } else {
                let _ = write_reply(&mut stream, &error_reply("truncated request (end of stream before newline)"));
            }
            return;
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let reply = state.handle_line(&buf);
        if write_reply(&mut stream, &reply).is_err() {
            return;
        }
    }
}

/// The control socket's accept loop (until `stop`): each client in its own thread, within
/// `clients`' limits.
fn accept_loop(listener: UnixListener, state: Arc<State>, stop: Arc<AtomicBool>, clients: Arc<Clients>) {
    // SAFETY: getuid has no preconditions.
    let my_uid = unsafe { libc::getuid() };
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let me = match clients.admit(&s) {
                    Ok(Admit::In(me)) => me,
                    Ok(Admit::Full) => {
                        let mut s = s;
                        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = write_reply(&mut s, &error_reply("too many control clients, try again"));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("control: cannot serve a client: {e}");
                        continue;
                    }
                };
                let st = state.clone();
                let cl = clients.clone();
                let mine = me.clone();
                let r = std::thread::Builder::new().name("fvs-control-client".into()).spawn(move || {
                    serve_client(&st, s, my_uid, &cl, &mine);
                    cl.leave(&mine);
                });
                if r.is_err() {
                    clients.leave(&me);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("control: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Start the control plane of a running engine: the socket server on
/// `config.engine.control_socket`, the rate estimator, the health checker
/// and (if `config.engine.metrics_listen` is set) the Prometheus exporter.
///
/// `config_path` is the file `--reload` re-reads.
pub fn spawn(config_path: Option<PathBuf>, config: Arc<Config>, running: &Running) -> std::io::Result<ControlHandle> {
    let state =
        State::new(running.view.clone(), applier_of(running), config_path, config.clone(), running.snapshot.clone());
    if let Some(s) = &running.sync_stats {
        let _ = state.sync_stats.set(s.clone());
    }
    if let Some(p) = &running.ports {
        let _ = state.ports.set(p.clone());
    }
    spawn_with(state, &config)
}

/// [`spawn`] for an existing [`State`].
pub fn spawn_with(state: Arc<State>, config: &Config) -> std::io::Result<ControlHandle> {
    spawn_limited(state, config, Limits::default())
}

/// [`spawn_with`] with the control socket's clients held to `limits`.
pub fn spawn_limited(state: Arc<State>, config: &Config, limits: Limits) -> std::io::Result<ControlHandle> {
    let path = config.engine.control_socket.clone();
    let listener = bind(&path)?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // Metrics first: a bad listen address fails the start, before threads.
    if let Some(addr) = config.engine.metrics_listen {
        threads.push(crate::ctl::metrics::spawn(addr, state.clone(), stop.clone())?);
    }

    {
        let state = state.clone();
        let stop = stop.clone();
        let clients = Arc::new(Clients::new(limits));
        threads.push(
            std::thread::Builder::new()
                .name("fvs-control".into())
                .spawn(move || accept_loop(listener, state, stop, clients))?,
        );
    }

    {
        let state = state.clone();
        let stop = stop.clone();
        threads.push(std::thread::Builder::new().name("fvs-rates".into()).spawn(move || {
            let mut last = Instant::now();
            state.sample_rates(RATE_PERIOD.as_secs_f64());
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= RATE_PERIOD {
                    let secs = last.elapsed().as_secs_f64();
                    last = Instant::now();
                    state.sample_rates(secs);
                }
            }
        })?);
    }

    threads.push(crate::ctl::health::spawn(state.clone(), stop.clone())?);

    tracing::info!(socket = %path.display(), "control socket listening");
    Ok(ControlHandle { state, stop, threads, socket: path })
}

// ---------------------------------------------------------------------------
// Client side.

/// Send one request and read one reply line.
pub fn request(socket: &Path, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e} (is ferrovs running? use --socket)", socket.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    // A daemon that stopped reading (hung) fails the request instead of hanging the tool.
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out).map_err(|e| format!("{}: {e}", socket.display()))?;
    if out.is_empty() {
        return Err("the daemon closed the connection without a reply".into());
    }
    serde_json::from_str(&out).map_err(|e| format!("bad reply from daemon: {e}"))
}

#[cfg(test)]
mod health_flap_tests {
    use super::*;

    const CFG: &str = r#"
[engine]
workers = 1
backend = "memory"

[[interface]]
name = "int"
device = "m"
addresses = ["10.0.2.1/24"]

[[service]]
name = "web"
vip = "10.0.2.100"
protocol = "tcp"
ports = [80]
scheduler = "wrr"
persistence = 300
health_check = { type = "tcp", on_fail = "quiesce" }

[[service.real_server]]
address = "10.0.2.2"
weight = 3

[[service.real_server]]
address = "10.0.2.3"
weight = 2
"#;

    /// A health flap (what `State::set_down` commits) changes one weight and
    /// nothing else: same services and servers in the same places, so the
    /// workers' snapshot map is the identity and every bit of their state
    /// (connections, persistence, scheduler, expectations) carries over.
    #[test]
    fn a_health_flap_changes_only_the_weight() {
        let admin = Config::from_str(CFG, "t.toml").expect("config");
        let mut down = HashMap::new();
        down.insert(("web".to_string(), "10.0.2.3".parse().unwrap(), 80u16), ());
        let eff = State::effective(&admin, &down);
        let mut expect = admin.clone();
        expect.services[0].real_servers[1].weight = 0;
        assert_eq!(eff.to_toml(), expect.to_toml(), "only the weight differs");
        let macs = [[2, 0, 0, 0, 2, 1]];
        let before = Snapshot::build(Arc::new(admin), &macs);
        let after = Snapshot::build(Arc::new(eff), &macs);
        assert_eq!(
            crate::pipeline::remap::SnapshotMap::build(&before, &after),
            crate::pipeline::remap::SnapshotMap::identity(&before)
        );
        assert_eq!(after.services[0].dests[1].weight, 0);
        assert_eq!(after.services[0].dests[0].weight, 3);
    }
}

#[cfg(test)]
mod health_state_tests {
    use super::*;
    use crate::pipeline::counters::WorkerCounters;

    /// An engine without workers: only the snapshots posted are kept.
    struct NoWorkers;
    impl EngineView for NoWorkers {
        fn workers(&self) -> usize {
            0
        }
        fn counters(&self) -> Vec<Arc<WorkerCounters>> {
            Vec::new()
        }
        fn service_counters(&self) -> Vec<Arc<Vec<ServiceCounters>>> {
            Vec::new()
        }
        fn post(&self, _: usize, _: Ctrl) -> bool {
            false
        }
        fn snapshot_posted(&self, _: &Snapshot) {}
        fn port_counters(&self) -> Vec<Vec<Option<crate::port::PortCounters>>> {
            Vec::new()
        }
    }

    fn state(cfg: &str) -> Arc<State> {
        let cfg = Arc::new(Config::from_str(cfg, "t.toml").expect("config"));
        let apply: Applier = Arc::new(|c: Arc<Config>| Arc::new(Snapshot::build(c, &[[2, 0, 0, 0, 2, 1]])));
        let snap = apply(cfg.clone());
        State::new(Arc::new(NoWorkers), apply, None, cfg, snap)
    }

    fn edit(st: &State, rules: &str) {
        st.edit(&ipvsadm::parse_rules(rules).expect("rules")).expect("edit");
    }

    /// Wait (at most 5 s) until `pred` holds.
    fn wait(what: &str, pred: impl Fn() -> bool) {
        let t = Instant::now();
        while !pred() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config(port: u16) -> String {
        format!(
            r#"
[engine]
workers = 1
backend = "memory"

[[service]]
name = "web"
vip = "10.0.0.1"
protocol = "tcp"
ports = [{port}]
scheduler = "wrr"
health_check = {{ type = "tcp", interval = 0.05, timeout = 0.2, rise = 1, fall = 1 }}

[[service.real_server]]
address = "127.0.0.1"
weight = 3
"#
        )
    }

    /// A port on 127.0.0.1 with nothing listening (connections refused).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// The weight of 127.0.0.1 in the snapshot the workers run.
    fn weight(st: &State) -> Option<u32> {
        st.snapshot().config.services.first()?.real_servers.first().map(|r| r.weight)
    }

    /// A server that is down when the admin removes it (`-d`), and that is
    /// added back (`-a`) once it works again, gets the weight it is added
    /// with: before, the removed server stayed in the set of servers the
    /// health check holds down while the checker started the new one as
    /// "up", so it was never put back and stayed at weight 0 for good.
    #[test]
    fn a_server_removed_while_down_gets_its_weight_when_added_back() {
        let port = closed_port();
        let st = state(&config(port));
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        wait("127.0.0.1 is quiesced", || weight(&st) == Some(0));

        edit(&st, &format!("-d -t 10.0.0.1:{port} -r 127.0.0.1:{port}\n"));
        wait("127.0.0.1 is gone", || weight(&st).is_none());
        // Give the checker time to see the edit.
        std::thread::sleep(Duration::from_millis(300));
        let _l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        edit(&st, &format!("-a -t 10.0.0.1:{port} -r 127.0.0.1:{port} -m -w 5\n"));
        wait("127.0.0.1 is back with weight 5", || weight(&st) == Some(5));
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    }

    /// A server no longer checked (removed, or its service lost its health
    /// check) leaves `ferrovsadm health`.
    #[test]
    fn a_removed_server_leaves_the_health_listing() {
        let port = closed_port();
        let st = state(&config(port));
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        wait("127.0.0.1 is listed down", || st.health().iter().any(|h| !h.up));
        edit(&st, &format!("-d -t 10.0.0.1:{port} -r 127.0.0.1:{port}\n"));
        wait("the health listing is empty", || st.health().is_empty());
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    }

    /// `start_down` (keepalived's `alpha`): a checked server is at weight 0 from the first
    /// snapshot State makes until its check has passed `rise` times; so is one added later.
    #[test]
    fn start_down_servers_wait_for_rise_successes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let text = config(port).replace("rise = 1, fall = 1", "rise = 3, fall = 1, start_down = true");
        let st = state(&text);
        assert_eq!(weight(&st), Some(0), "down before any check");
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        wait("127.0.0.1 is up", || weight(&st) == Some(3));
        let checks = st.health().first().map_or(0, |h| h.checks);
        assert!(checks >= 3, "up after {checks} checks, rise is 3");

        let _l2 = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
        edit(&st, &format!("-a -t 10.0.0.1:{port} -r 127.0.0.2:{port} -m -w 4\n"));
        let w2 = |st: &State| {
            st.snapshot().config.services[0]
                .real_servers
                .iter()
                .find(|r| r.address == ip("127.0.0.2"))
                .map(|r| r.weight)
        };
        assert_eq!(w2(&st), Some(0), "an added server starts down too");
        assert_eq!(weight(&st), Some(3), "the server already up stays up");
        wait("127.0.0.2 is up", || w2(&st) == Some(4));
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    /// A real server's own checks replace the service's, with their own on_fail (here
    /// remove, the service's quiesce: keepalived's inhibit_on_failure per real server); one
    /// with none is never taken down (keepalived's real server without a checker) and not
    /// listed by `ferrovsadm health`.
    #[test]
    fn real_servers_with_checks_of_their_own() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let text = config(port)
            + "[[service.real_server]]\naddress = \"127.0.0.2\"\n\
               [service.real_server.health_check]\ntype = \"tcp\"\ninterval = 0.05\ntimeout = 0.2\nrise = 1\nfall = 1\n\
               on_fail = \"remove\"\n\
               [[service.real_server]]\naddress = \"127.0.0.3\"\nweight = 2\nhealth_check = []\n";
        let text = text.replace(
            "[service.real_server.health_check]\ntype = \"tcp\"",
            &format!("[service.real_server.health_check]\ntype = \"tcp\"\nport = {}", closed_port()),
        );
        let st = state(&text);
        let weights = |st: &State| -> Vec<u32> {
            st.snapshot().config.services[0].real_servers.iter().map(|r| r.weight).collect()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        wait("127.0.0.2 removed by its own check", || weights(&st) == [3, 2]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(weights(&st), [3, 2], "the service's check passes for 127.0.0.1; 127.0.0.3 is not checked");
        let mut listed: Vec<String> = st.health().into_iter().map(|h| h.server).collect();
        listed.sort();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().all(|s| !s.starts_with("127.0.0.3")), "{listed:?}");
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
        drop(l);
    }

    /// `[engine] health_check_threads`: eight servers whose checks each take 400 ms are
    /// checked two at a time (before, each check had a thread of its own: eight at once),
    /// every one still gets its checks, and the checks that waited for a thread a second or
    /// more are counted late in the metrics.
    #[test]
    fn checks_run_on_a_bounded_pool() {
        use crate::ctl::metrics::Exported;
        use std::sync::atomic::AtomicUsize;
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n2, m2) = (now.clone(), most.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (now, most) = (n2.clone(), m2.clone());
                std::thread::spawn(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(400));
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = (&c).write_all(b"OK\r\n");
                });
            }
        });
        let mut text = config(port)
            .replace("backend = \"memory\"", "backend = \"memory\"\nhealth_check_threads = 2")
            .replace(
                "health_check = { type = \"tcp\", interval = 0.05, timeout = 0.2, rise = 1, fall = 1 }",
                "health_check = { type = \"send_expect\", expect = \"OK\", interval = 0.05, timeout = 2, rise = 1, fall = 1 }",
            );
        for i in 2..=8 {
            text += &format!("[[service.real_server]]\naddress = \"127.0.0.{i}\"\n");
        }
        let st = state(&text);
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        let metric = |st: &State, name: &str| -> u64 {
            let m = st.metrics();
            let line =
                m.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {m}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let t = Instant::now();
        while metric(&st, "ferrovs_health_checks_late_total") == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "no check counted late");
            std::thread::sleep(Duration::from_millis(50));
        }
        wait("every server checked", || st.health().len() == 8 && st.health().iter().all(|h| h.checks >= 1 && h.up));
        assert_eq!(most.load(Ordering::SeqCst), 2, "two checks at a time, at most");
        assert_eq!(metric(&st, "ferrovs_health_check_threads"), 2);
        assert!(metric(&st, "ferrovs_health_checks_total") >= 8);
        assert!(metric(&st, "ferrovs_health_checks_queued") <= 6, "one per check at most");
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    }

    /// Several checks (`[[service.health_check]]`): the server is down while any one fails
    /// (keepalived's checkers of a real server), and up again once every one passes; the
    /// health listing names the failing check.
    #[test]
    fn a_server_is_up_while_every_check_passes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let other = closed_port();
        let text = config(port)
            .replace("health_check = { type = \"tcp\", interval = 0.05, timeout = 0.2, rise = 1, fall = 1 }", "")
            + &format!(
                "[[service.health_check]]\ntype = \"tcp\"\ninterval = 0.05\ntimeout = 0.2\nrise = 1\nfall = 1\n\
             [[service.health_check]]\ntype = \"send_expect\"\nport = {other}\nexpect = \"OK\"\n\
             interval = 0.05\ntimeout = 0.2\nrise = 2\nfall = 1\n"
            );
        let st = state(&text);
        assert_eq!(st.snapshot().config.services[0].health_checks.len(), 2);
        let stop = Arc::new(AtomicBool::new(false));
        let checker = crate::ctl::health::spawn(st.clone(), stop.clone()).unwrap();
        wait("quiesced: the second check fails", || weight(&st) == Some(0));
        let h = st.health();
        assert_eq!(h.len(), 1, "one server, however many checks: {h:?}");
        let e = h[0].last_error.clone().unwrap_or_default();
        assert!(e.starts_with("send_expect: "), "the failing check is named: {e:?}");
        assert!(!h[0].up);

        // The second check's server answers: after its rise (2) the server is back.
        let l2 = std::net::TcpListener::bind(("127.0.0.1", other)).unwrap();
        std::thread::spawn(move || {
            for c in l2.incoming().flatten() {
                let _ = (&c).write_all(b"OK\r\n");
            }
        });
        wait("back at weight 3", || weight(&st) == Some(3));
        assert!(st.health()[0].up);

        // The first check fails: down again, although the second passes.
        drop(l);
        wait("quiesced: the first check fails", || weight(&st) == Some(0));
        let e = st.health()[0].last_error.clone().unwrap_or_default();
        assert!(e.starts_with("tcp: "), "{e:?}");
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    }

    /// quorum 3, hysteresis 1, four servers of weight 1 and a sorry server, taken down and
    /// put back as the health checker does: the sorry server takes new connections below
    /// quorum - 1 and until the live weight is back at quorum + 1.
    #[test]
    fn quorum_hysteresis_across_health_changes() {
        let mut text = String::from(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"web\"\nvip = \"10.0.0.1\"\nports = [80]\n\
             quorum = 3\nhysteresis = 1\nsorry_server = { address = \"127.0.0.9\" }\n",
        );
        for i in 1..=4 {
            text += &format!("[[service.real_server]]\naddress = \"127.0.0.{i}\"\nweight = 1\n");
        }
        let st = state(&text);
        let key = |i: u8| ("web".to_string(), ip(&format!("127.0.0.{i}")), 80u16);
        let weights = |st: &State| -> Vec<u32> {
            st.snapshot().config.services[0].real_servers.iter().map(|r| r.weight).collect()
        };
        let up = [1, 1, 1, 1, 0];
        assert_eq!(weights(&st), up, "4 = quorum + 1: up");
        st.set_down(&key(1), true);
        st.set_down(&key(2), true);
        assert_eq!(weights(&st), [0, 0, 1, 1, 0], "2 = quorum - 1: still up");
        st.set_down(&key(3), true);
        assert_eq!(weights(&st), [0, 0, 0, 0, 1], "1: the sorry server takes the new connections");
        st.set_down(&key(1), false);
        st.set_down(&key(2), false);
        assert_eq!(weights(&st), [0, 0, 0, 0, 1], "3 = quorum: still down");
        st.set_down(&key(3), false);
        assert_eq!(weights(&st), up, "4 = quorum + 1: up again");
        // A reload keeps the state (the live weight 3 does not bring a down service back).
        st.set_down(&key(4), true);
        st.set_down(&key(3), true);
        st.set_down(&key(2), true);
        st.set_down(&key(2), false);
        st.set_down(&key(3), false);
        assert_eq!(weights(&st), [0, 0, 0, 0, 1], "3 after 1: still down");
        st.replace(Config::from_str(&text, "t.toml").unwrap());
        assert_eq!(weights(&st), [0, 0, 0, 0, 1], "still down after a reload");
    }

    /// `[service.notify]`: the servers' up / down events from the checker and the quorum's
    /// changes, from the checker or an edit, run their programs in order.
    #[test]
    fn notify_programs_run_on_server_and_quorum_events() {
        let dir = std::env::temp_dir().join(format!("ferrovs-ctl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (script, log) = (dir.join("n.sh"), dir.join("log"));
        std::fs::write(&script, format!("#!/bin/sh\necho \"$FERROVS_EVENT $FERROVS_SERVER\" >> {}\n", log.display()))
            .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let sh = script.display();
        let mut text = format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"web\"\nvip = \"10.0.0.1\"\nports = [80]\n\
             quorum = 2\n[service.notify]\nup = [\"{sh}\"]\ndown = [\"{sh}\"]\nquorum_up = [\"{sh}\"]\n\
             quorum_down = [\"{sh}\"]\n"
        );
        for i in 1..=2 {
            text += &format!("[[service.real_server]]\naddress = \"127.0.0.{i}\"\nweight = 1\n");
        }
        let st = state(&text);
        let key = |i: u8| ("web".to_string(), ip(&format!("127.0.0.{i}")), 80u16);
        // As the checker does: the server down, then its event.
        st.set_down(&key(1), true);
        HealthTarget::server_event(&*st, &key(1), false);
        st.set_down(&key(1), false);
        HealthTarget::server_event(&*st, &key(1), true);
        // An edit that takes the live weight under the quorum, and back.
        edit(&st, "-e -t 10.0.0.1:80 -r 127.0.0.2:80 -w 0");
        edit(&st, "-e -t 10.0.0.1:80 -r 127.0.0.2:80 -w 3");
        let want = "quorum_down \ndown 127.0.0.1\nquorum_up \nup 127.0.0.1\nquorum_down \nquorum_up \n";
        let t = Instant::now();
        while std::fs::read_to_string(&log).map_or(0, |l| l.len()) < want.len() && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&log).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fvs-bind-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A control_socket that names an existing file that is not a socket (a
    /// typo naming the config file, say) is an error; the file is kept. Before,
    /// the daemon (often root) deleted whatever was there.
    #[test]
    fn a_file_that_is_not_a_socket_is_not_removed() {
        let d = tmp("file");
        let p = d.join("ferrovs.toml");
        std::fs::write(&p, "precious").unwrap();
        let e = match bind(&p) {
            Ok(_) => panic!("binding over a regular file must fail"),
            Err(e) => e,
        };
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious", "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A stale socket (nobody listening) is replaced, a live one is not.
    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_kept() {
        let d = tmp("stale");
        let p = d.join("ctl.sock");
        drop(UnixListener::bind(&p).unwrap());
        let l = bind(&p).expect("a stale socket is replaced");
        assert_eq!(bind(&p).err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
        drop(l);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[cfg(test)]
mod test_view {
    use super::*;
    use crate::pipeline::counters::WorkerCounters;

    /// One worker whose per-service counters the test sets (what a worker
    /// publishes for the snapshot it runs).
    #[derive(Default)]
    pub(super) struct OneWorker(pub(super) Mutex<Arc<Vec<ServiceCounters>>>);
    impl EngineView for OneWorker {
        fn workers(&self) -> usize {
            1
        }
        fn counters(&self) -> Vec<Arc<WorkerCounters>> {
            Vec::new()
        }
        fn service_counters(&self) -> Vec<Arc<Vec<ServiceCounters>>> {
            vec![self.0.lock().unwrap().clone()]
        }
        fn post(&self, _: usize, _: Ctrl) -> bool {
            false
        }
        fn snapshot_posted(&self, _: &Snapshot) {}
        fn port_counters(&self) -> Vec<Vec<Option<crate::port::PortCounters>>> {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod client_limit_tests {
    use super::test_view::OneWorker;
    use super::*;

    /// A client that connects and never sends does not lock the administrator out: with
    /// every place taken by silent clients, a new one gets its answer (before, it was told
    /// "too many control clients" for as long as they stayed, 30 s per read).
    #[test]
    fn silent_clients_make_room_for_the_administrator() {
        let dir = std::env::temp_dir().join(format!("fvs-clients-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ctl.sock");
        let text = format!("[engine]\nworkers = 1\nbackend = \"memory\"\ncontrol_socket = \"{}\"\n", sock.display());
        let cfg = Arc::new(Config::from_str(&text, "t.toml").expect("config"));
        let apply: Applier = Arc::new(|c: Arc<Config>| Arc::new(Snapshot::build(c, &[[2, 0, 0, 0, 2, 1]])));
        let snap = apply(cfg.clone());
        let st = State::new(Arc::new(OneWorker::default()), apply, None, cfg.clone(), snap);
        let limits = Limits {
            max: 2,
            idle: Duration::from_secs(30),
            request: Duration::from_secs(1),
            min_idle: Duration::from_millis(100),
            write: Duration::from_secs(1),
        };
        let h = spawn_limited(st, &cfg, limits).expect("control socket");
        let silent: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect(&sock).unwrap()).collect();
        // Once they have been idle for `min_idle` (retried for a loaded machine; with no
        // eviction every try is refused).
        let t0 = Instant::now();
        let r = loop {
            std::thread::sleep(Duration::from_millis(200));
            let r = request(&sock, &json!({"v": PROTOCOL_VERSION, "op": "status"})).expect("a reply");
            if r.get("ok") == Some(&json!(true)) || t0.elapsed() > Duration::from_secs(5) {
                break r;
            }
        };
        assert_eq!(r.get("ok"), Some(&json!(true)), "{r}");
        drop(silent);
        drop(h);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod zero_tests {
    use super::test_view::OneWorker;
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    const CFG: &str = r#"
[engine]
workers = 1
backend = "memory"

[[service]]
name = "tcp-10.0.0.1-80"
vip = "10.0.0.1"
protocol = "tcp"
ports = [80]
scheduler = "wrr"

[[service.real_server]]
address = "127.0.0.1"

[[service.real_server]]
address = "127.0.0.2"
"#;

    impl OneWorker {
        /// Publish counters for `snap`'s only service: its `conns`, and per
        /// real server (by address) its `conns`.
        fn publish(&self, snap: &Snapshot, svc_conns: u64, per_server: &[(&str, u64)]) {
            let rs = &snap.config.services[0].real_servers;
            let c = ServiceCounters::new(rs.len());
            c.conns.store(svc_conns, Relaxed);
            for (a, n) in per_server {
                let j = rs.iter().position(|r| r.address.to_string() == *a).expect("server in the snapshot");
                c.dests[j].conns.store(*n, Relaxed);
            }
            *self.0.lock().unwrap() = Arc::new(vec![c]);
        }
    }

    fn conns_of(l: &ListData, addr: &str) -> Option<u64> {
        l.services.first()?.dests.iter().find(|d| d.addr.to_string() == addr).map(|d| d.stats.conns)
    }

    /// `-Z` records a baseline of the workers' counters. A real server (or
    /// service) removed and added again starts with new counters at zero in
    /// the workers, as a new IPVS destination does; its old baseline must not
    /// be subtracted from them (before, its connections showed as 0 until
    /// they passed the count it had when -Z was run).
    #[test]
    fn a_server_added_again_after_zero_shows_its_new_counters() {
        let cfg = Arc::new(Config::from_str(CFG, "t.toml").expect("config"));
        let view = Arc::new(OneWorker::default());
        let apply: Applier = Arc::new(|c: Arc<Config>| Arc::new(Snapshot::build(c, &[[2, 0, 0, 0, 2, 1]])));
        let snap = apply(cfg.clone());
        let st = State::new(view.clone(), apply, None, cfg, snap);
        let edit = |rules: &str| st.edit(&ipvsadm::parse_rules(rules).expect("rules")).expect("edit");

        view.publish(&st.snapshot(), 10, &[("127.0.0.1", 6), ("127.0.0.2", 4)]);
        st.zero(None).unwrap();
        assert_eq!(conns_of(&st.list(), "127.0.0.1"), Some(0));

        edit("-d -t 10.0.0.1:80 -r 127.0.0.1:80\n");
        view.publish(&st.snapshot(), 10, &[("127.0.0.2", 4)]);
        edit("-a -t 10.0.0.1:80 -r 127.0.0.1:80 -m -w 1\n");
        // The worker's new counters for 127.0.0.1 start at 0; 3 new connections.
        view.publish(&st.snapshot(), 13, &[("127.0.0.2", 4), ("127.0.0.1", 3)]);
        let l = st.list();
        assert_eq!(conns_of(&l, "127.0.0.1"), Some(3), "the re-added server's own connections");
        assert_eq!(conns_of(&l, "127.0.0.2"), Some(0));
        assert_eq!(l.services[0].stats.conns, 3);

        // The same for a service deleted and created again (same name).
        st.zero(None).unwrap();
        edit("-D -t 10.0.0.1:80\n");
        *view.0.lock().unwrap() = Arc::new(Vec::new());
        edit("-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 127.0.0.2:80 -m -w 1\n");
        view.publish(&st.snapshot(), 2, &[("127.0.0.2", 2)]);
        let l = st.list();
        assert_eq!(l.services[0].stats.conns, 2, "the re-created service's own connections");
        assert_eq!(conns_of(&l, "127.0.0.2"), Some(2));
    }

    /// The new connections a service refused, by reason: in the `drops` reply (every
    /// reason, zeros too) and in the metrics.
    #[test]
    fn refusals_per_service_in_drops_and_metrics() {
        use crate::pipeline::counters::DropReason;
        let cfg = Arc::new(Config::from_str(CFG, "t.toml").expect("config"));
        let view = Arc::new(OneWorker::default());
        let apply: Applier = Arc::new(|c: Arc<Config>| Arc::new(Snapshot::build(c, &[[2, 0, 0, 0, 2, 1]])));
        let snap = apply(cfg.clone());
        let st = State::new(view.clone(), apply, None, cfg, snap);
        let c = ServiceCounters::new(2);
        for r in [DropReason::SourceDenied, DropReason::SourceDenied, DropReason::NoRealServer, DropReason::NoFlow] {
            c.refused.count(r);
        }
        *view.0.lock().unwrap() = Arc::new(vec![c]);
        let r = st.handle(&json!({"op": "drops"})).expect("drops");
        let want = json!([{"service": "tcp-10.0.0.1-80", "refused": {
            "source_denied": 2, "source_rate": 0, "no_real_server": 1, "fnat_ports_exhausted": 0, "table_full": 0
        }}]);
        assert_eq!(r["services"], want, "no_flow is not a service's refusal");
        let m = crate::ctl::metrics::Exported::metrics(&*st);
        assert!(m.contains("# TYPE ferrovs_service_refused_total counter"), "{m}");
        assert!(
            m.contains("\nferrovs_service_refused_total{service=\"tcp-10.0.0.1-80\",reason=\"source_denied\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("\nferrovs_service_refused_total{service=\"tcp-10.0.0.1-80\",reason=\"table_full\"} 0\n"),
            "{m}"
        );
        // The status page's and `ferrovsadm top`'s: the non-zero counts in the reasons' order.
        let ov = st.overview();
        let row = |r: &str, n: u64| ("tcp-10.0.0.1-80".to_string(), r.to_string(), n);
        assert_eq!(ov.refused, vec![row("source_denied", 2), row("no_real_server", 1)]);
    }
}
