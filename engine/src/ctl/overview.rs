//! Everything an operator looks at, in one structure: the listing with
//! rates and health, flow-table fill, drops by reason, FTP gateway counters
//! and health-check details. The daemon builds it ([`crate::ctl::control::State::overview`]) for the
//! status page and the control socket's `overview` op; `ferrovsadm top`
//! fetches it and lays it out with [`rows`].

use crate::ctl::health::HealthInfo;
use crate::ctl::ipvsadm::{self, ListData};
use serde::{Deserialize, Serialize};

/// FTP gateway counters of one service, every counter of
/// [`crate::pipeline::counters::FtpCounters::fields`] in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtpRow {
    pub service: String,
    pub counters: Vec<(String, u64)>,
}

impl FtpRow {
    /// A counter by name (0 if unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.counters.iter().find(|c| c.0 == name).map(|c| c.1).unwrap_or(0)
    }

    pub(crate) fn from_json(v: &serde_json::Value) -> FtpRow {
        FtpRow {
            service: v.get("service").and_then(|s| s.as_str()).unwrap_or("?").to_string(),
            counters: crate::pipeline::counters::FtpCounters::names()
                .iter()
                .map(|n| (n.to_string(), v.get(*n).and_then(|x| x.as_u64()).unwrap_or(0)))
                .collect(),
        }
    }
}

/// The FTP counters `ferrovsadm top` shows in its panel, with short titles.
pub const FTP_SHORT: &[(&str, &str)] = &[
    ("control_sessions", "sess"),
    ("expectations_created", "pinh"),
    ("expectations_used", "used"),
    ("expectations_expired", "expd"),
    ("rewrites", "rewr"),
    ("bounce_refused", "bounce"),
    ("expectations_refused", "refus"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub version: String,
    pub uptime_s: u64,
    pub workers: usize,
    pub config: Option<String>,
    pub list: ListData,
    pub flows_active: u64,
    /// Total flow-table capacity (all workers).
    pub flow_capacity: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Drops summed over workers, every reason (zeros included), in
    /// [`crate::pipeline::counters::DropReason::ALL`] order.
    pub drops: Vec<(String, u64)>,
    /// New connections refused per service: (service, reason, count) for each non-zero
    /// count, by service then in [`crate::pipeline::counters::REFUSALS`] order. Absent (empty)
    /// from a daemon that predates it.
    #[serde(default)]
    pub refused: Vec<(String, String, u64)>,
    pub ftp: Vec<FtpRow>,
    pub health: Vec<HealthInfo>,
}

impl Overview {
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum()
    }
}

/// A line of the services table: a service or one of its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub service: bool,
    /// Service: `name (TCP 10.0.0.1:21)`; real server: `ADDR:PORT`.
    pub name: String,
    pub forward: String,
    /// Weight in use / configured (real servers).
    pub weight: Option<(u32, u32)>,
    /// `up`, `down`, or `-` (no check); services: `n/m up`.
    pub health: String,
    pub active: u64,
    pub inactive: u64,
    pub conns: u64,
    pub cps: u64,
    pub pps: u64,
    /// Bytes per second, both directions.
    pub bytes_ps: u64,
}

impl Row {
    fn key(&self, col: &str) -> (u64, String) {
        match col {
            "name" => (0, self.name.clone()),
            "active" => (self.active, String::new()),
            "pps" => (self.pps, String::new()),
            "bps" => (self.bytes_ps, String::new()),
            "weight" => (self.weight.map(|w| w.0 as u64).unwrap_or(0), String::new()),
            "health" => (0, self.health.clone()),
            _ => (self.conns, String::new()),
        }
    }
}

fn cmp_rows(a: &Row, b: &Row, col: &str, reverse: bool) -> std::cmp::Ordering {
    // Numbers sort largest first, text alphabetically; `reverse` flips it.
    let (ka, kb) = (a.key(col), b.key(col));
    let o = if col == "name" || col == "health" { ka.1.cmp(&kb.1) } else { kb.0.cmp(&ka.0) };
    let o = o.then_with(|| a.name.cmp(&b.name));
    if reverse {
        o.reverse()
    } else {
        o
    }
}

/// Services (sorted by `col`), each followed by its real servers (sorted by `col`).
pub fn rows(ov: &Overview, col: &str, reverse: bool) -> Vec<Row> {
    let mut groups: Vec<(Row, Vec<Row>)> = ov
        .list
        .services
        .iter()
        .map(|s| {
            let servers: Vec<Row> = s
                .dests
                .iter()
                .map(|d| {
                    let st = &d.stats;
                    Row {
                        service: false,
                        name: ipvsadm::addrport(d.addr, d.port),
                        forward: d.forward.clone(),
                        weight: Some((d.weight, d.config_weight)),
                        health: d.health.clone().unwrap_or_else(|| "-".into()),
                        active: d.active as u64,
                        inactive: d.inactive as u64,
                        conns: st.conns,
                        cps: st.cps,
                        pps: st.inpps + st.outpps,
                        bytes_ps: (st.inbps + st.outbps) / 8,
                    }
                })
                .collect();
            let checked = s.dests.iter().filter(|d| d.health.is_some()).count();
            let up = s.dests.iter().filter(|d| d.health.as_deref() == Some("up")).count();
            let st = &s.stats;
            let svc = Row {
                service: true,
                name: format!("{} ({} {})", s.name, s.proto, ipvsadm::addrport(s.vip, s.port)),
                forward: s.scheduler.clone(),
                weight: None,
                health: if checked == 0 { "-".into() } else { format!("{up}/{checked} up") },
                active: servers.iter().map(|r| r.active).sum(),
                inactive: servers.iter().map(|r| r.inactive).sum(),
                conns: st.conns,
                cps: st.cps,
                pps: st.inpps + st.outpps,
                bytes_ps: (st.inbps + st.outbps) / 8,
            };
            (svc, servers)
        })
        .collect();
    groups.sort_by(|a, b| cmp_rows(&a.0, &b.0, col, reverse));
    let mut out = Vec::new();
    for (svc, mut servers) in groups {
        servers.sort_by(|a, b| cmp_rows(a, b, col, reverse));
        out.push(svc);
        out.extend(servers);
    }
    out
}

/// 1234567 -> "1.2M"; below 10 000 the number itself.
pub fn human(v: u64) -> String {
    match v {
        0..=9_999 => v.to_string(),
        10_000..=999_999 => format!("{:.1}k", v as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", v as f64 / 1e6),
        _ => format!("{:.1}G", v as f64 / 1e9),
    }
}

pub fn uptime(s: u64) -> String {
    if s >= 86_400 {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    } else {
        format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    }
}

/// The column titles of the services table, with the sort key of each.
pub const COLUMNS: &[(&str, &str)] = &[
    ("SERVICE / REAL SERVER", "name"),
    ("FWD/SCHED", ""),
    ("WEIGHT", "weight"),
    ("HEALTH", "health"),
    ("ACTIVE", "active"),
    ("INACT", "active"),
    ("CONNS", "conns"),
    ("CONN/S", "conns"),
    ("PKT/S", "pps"),
    ("BYTES/S", "bps"),
];

/// The cells of a row, in [`COLUMNS`] order.
pub fn cells(r: &Row) -> Vec<String> {
    vec![
        if r.service { r.name.clone() } else { format!("  -> {}", r.name) },
        r.forward.clone(),
        r.weight.map(|(w, c)| if w == c { w.to_string() } else { format!("{w}/{c}") }).unwrap_or_default(),
        r.health.clone(),
        human(r.active),
        human(r.inactive),
        human(r.conns),
        human(r.cps),
        human(r.pps),
        human(r.bytes_ps),
    ]
}

/// The whole overview as plain text (what `ferrovsadm top` prints when
/// stdout is not a terminal).
pub fn text(ov: &Overview, col: &str, reverse: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let fill = if ov.flow_capacity > 0 { ov.flows_active as f64 * 100.0 / ov.flow_capacity as f64 } else { 0.0 };
    let _ = writeln!(
        s,
        "ferrovs {} up {}, {} workers, flows {} of {} ({fill:.1}%), rx {} tx {} packets, drops {}",
        ov.version,
        uptime(ov.uptime_s),
        ov.workers,
        ov.flows_active,
        ov.flow_capacity,
        ov.rx_packets,
        ov.tx_packets,
        ov.drops_total()
    );
    let rows = rows(ov, col, reverse);
    let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.0.len()).collect();
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |s: &mut String, cells: &[String]| {
        for (i, c) in cells.iter().enumerate() {
            if i < 2 {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(s, "{c:>w$}  ", w = widths[i]);
            }
        }
        let t = s.trim_end().len();
        s.truncate(t);
        s.push('\n');
    };
    line(&mut s, &COLUMNS.iter().map(|c| c.0.to_string()).collect::<Vec<_>>());
    for r in &table {
        line(&mut s, r);
    }
    let nz: Vec<String> = ov.drops.iter().filter(|d| d.1 > 0).map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "drops: {}", if nz.is_empty() { "none".into() } else { nz.join(" ") });
    for (svc, reason, n) in &ov.refused {
        let _ = writeln!(s, "refused {svc}: {reason}={n}");
    }
    for f in &ov.ftp {
        let parts: Vec<String> = f.counters.iter().filter(|c| c.1 > 0).map(|(k, v)| format!("{k}={v}")).collect();
        let _ =
            writeln!(s, "ftp {}: {}", f.service, if parts.is_empty() { "no activity".into() } else { parts.join(" ") });
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ctl::ipvsadm::{DestView, ServiceView, Stats};

    pub(crate) fn sample() -> Overview {
        let dest = |a: &str, conns: u64, pps: u64, health: Option<&str>, weight: u32| DestView {
            addr: a.parse().unwrap(),
            port: 21,
            forward: "Masq".into(),
            weight,
            config_weight: 1,
            upper: 0,
            lower: 0,
            active: conns as u32 / 2,
            inactive: 1,
            health: health.map(String::from),
            stats: Stats { conns, inpps: pps, outpps: pps, inbps: 8000, outbps: 16000, ..Default::default() },
        };
        let svc = |name: &str, conns: u64, dests: Vec<DestView>| ServiceView {
            stats: Stats {
                conns,
                inpps: dests.iter().map(|d| d.stats.inpps).sum(),
                outpps: dests.iter().map(|d| d.stats.outpps).sum(),
                ..Default::default()
            },
            name: name.into(),
            proto: "TCP".into(),
            vip: "10.0.1.100".parse().unwrap(),
            port: 21,
            ports: "21".into(),
            fwmark: None,
            scheduler: "rr".into(),
            persistent: None,
            netmask: 32,
            ops: false,
            sched_flags: Vec::new(),
            ftp: true,
            dests,
        };
        Overview {
            version: "0.1.0".into(),
            uptime_s: 3725,
            workers: 2,
            config: Some("/etc/ferrovs/ferrovs.toml".into()),
            list: ListData {
                size: 4096,
                services: vec![
                    svc(
                        "ftp",
                        10,
                        vec![dest("10.0.2.2", 4, 100, Some("up"), 1), dest("10.0.2.3", 6, 5, Some("down"), 0)],
                    ),
                    svc("<web&>", 50, vec![dest("10.0.2.4", 50, 1, None, 1)]),
                ],
                timeouts: [900, 120, 300],
            },
            flows_active: 250,
            flow_capacity: 1000,
            rx_packets: 10,
            tx_packets: 9,
            drops: vec![("no_service".into(), 3), ("no_flow".into(), 0), ("source_denied".into(), 2)],
            refused: vec![("<web&>".into(), "source_denied".into(), 2)],
            ftp: vec![FtpRow {
                service: "ftp".into(),
                counters: crate::pipeline::counters::FtpCounters::names()
                    .iter()
                    .map(|n| {
                        let v = match *n {
                            "control_sessions" => 7,
                            "rewrites" => 4,
                            _ => 0,
                        };
                        (n.to_string(), v)
                    })
                    .collect(),
            }],
            health: vec![HealthInfo {
                service: "ftp".into(),
                server: "10.0.2.3:21".into(),
                up: false,
                last_error: Some("connect: refused <x>".into()),
                checks: 9,
                failures: 3,
            }],
        }
    }

    #[test]
    fn rows_sort_services_then_their_servers() {
        let ov = sample();
        let r = rows(&ov, "conns", false);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["<web&> (TCP 10.0.1.100:21)", "10.0.2.4:21", "ftp (TCP 10.0.1.100:21)", "10.0.2.3:21", "10.0.2.2:21"]
        );
        let r = rows(&ov, "pps", false);
        assert_eq!(r[0].name, "ftp (TCP 10.0.1.100:21)", "ftp has 210 pkt/s, web 2");
        assert_eq!(r[1].name, "10.0.2.2:21");
        let r = rows(&ov, "name", true);
        assert_eq!(r[0].name, "ftp (TCP 10.0.1.100:21)");
        assert_eq!(r[1].name, "10.0.2.3:21");
        assert_eq!(r[0].health, "1/2 up");
        assert_eq!(r[0].active, 5);
        assert_eq!(r[1].bytes_ps, 3000);
    }

    #[test]
    fn text_lists_everything() {
        let t = text(&sample(), "conns", false);
        assert!(t.starts_with("ferrovs 0.1.0 up 01:02:05, 2 workers, flows 250 of 1000 (25.0%)"), "{t}");
        assert!(t.contains("  -> 10.0.2.3:21"), "{t}");
        assert!(t.contains("0/1"), "quiesced weight shown as in-use/configured: {t}");
        assert!(t.contains("drops: no_service=3 source_denied=2\n"), "{t}");
        assert!(t.contains("refused <web&>: source_denied=2\n"), "{t}");
        assert!(t.contains("ftp ftp: control_sessions=7 rewrites=4\n"), "{t}");
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(9999), "9999");
        assert_eq!(human(12_345), "12.3k");
        assert_eq!(human(2_500_000), "2.5M");
        assert_eq!(human(3_000_000_000), "3.0G");
        assert_eq!(uptime(90_061), "1d 01h");
    }

    #[test]
    fn overview_survives_json() {
        let ov = sample();
        let mut v = serde_json::to_value(&ov).unwrap();
        let back: Overview = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, ov);
        // From a daemon without per-service refusals.
        v.as_object_mut().unwrap().remove("refused");
        let back: Overview = serde_json::from_value(v).unwrap();
        assert!(back.refused.is_empty());
    }
}
