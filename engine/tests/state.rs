//! State that must survive a configuration change (a reload, an ipvsadm
//! edit, a health-check flap, which all post a new snapshot): connections,
//! persistence templates and the scheduler's position, for every service
//! and real server that still exists. Fixture table: packets in, where
//! they went (or that they were dropped), configuration changes in between.

mod common;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{parse, TCP_ACK, TCP_SYN};

const C2: [u8; 4] = [10, 0, 1, 3];
const C3: [u8; 4] = [10, 0, 1, 4];

/// "web" (port 80): rr with persistence over rs1, rs2; "plain" (port 81):
/// rr without. `w2` is rs2's weight in "web" (a health check quiescing it
/// sets 0); `swap` lists the servers of "web" the other way round; `rs2`
/// false removes rs2 from "web".
fn services(w2: u32, swap: bool, rs2: bool) -> String {
    let s1 = "[[service.real_server]]\naddress = \"10.0.2.2\"\n".to_string();
    let s2 =
        if rs2 { format!("[[service.real_server]]\naddress = \"10.0.2.3\"\nweight = {w2}\n") } else { String::new() };
    let web = if swap { format!("{s2}\n{s1}") } else { format!("{s1}\n{s2}") };
    format!(
        r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "nat"
persistence = 300

{web}

[[service]]
name = "plain"
vip = "10.0.1.100"
protocol = "tcp"
ports = [81]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"

[[service.real_server]]
address = "10.0.2.3"
"#
    )
}

enum Step {
    /// A SYN from client:port to VIP:vport; where it must go (None: dropped).
    Syn([u8; 4], u16, u16, Option<[u8; 4]>),
    /// A pure ACK of an existing connection; where it must go.
    Ack([u8; 4], u16, u16, Option<[u8; 4]>),
    /// Install this configuration (what a reload or a health flap does).
    Config(String),
    /// Apply an ipvsadm command line to the current configuration.
    Edit(&'static str),
}
use Step::*;

struct Case {
    what: &'static str,
    steps: Vec<Step>,
}

fn run(cases: Vec<Case>) {
    run_on(cases, 1)
}

fn run_on(cases: Vec<Case>, workers: usize) {
    for c in cases {
        let mut cfg = config(&services(1, false, true));
        let mut e = MemEngine::new(cfg.clone(), workers);
        let mut t = S;
        for (k, step) in c.steps.into_iter().enumerate() {
            t += S;
            let (out, want) = match step {
                Syn(client, port, vport, want) => {
                    let f = with_macs(tcp4(client, port, VIP, vport, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
                    (e.inject(EXT, &f, t), want)
                }
                Ack(client, port, vport, want) => {
                    let f = with_macs(tcp4(client, port, VIP, vport, TCP_ACK, 2, 1, b""), CLIENT_MAC, LB_EXT);
                    (e.inject(EXT, &f, t), want)
                }
                Config(text) => {
                    cfg = config(&text);
                    e.reload(cfg.clone(), t);
                    continue;
                }
                Edit(line) => {
                    for cmd in ferrovs_engine::ctl::ipvsadm::parse_rules(line).expect("ipvsadm line") {
                        ferrovs_engine::ctl::ipvsadm::apply(&mut cfg, &cmd).expect("ipvsadm edit");
                    }
                    cfg = ferrovs_engine::ctl::control::validate(&cfg).expect("valid");
                    e.reload(cfg.clone(), t);
                    continue;
                }
            };
            match want {
                None => assert!(out.is_empty(), "{}: step {k}: expected a drop, got {out:?}", c.what),
                Some(rs) => {
                    assert_eq!(out.len(), 1, "{}: step {k}: one frame out", c.what);
                    let f = &out[0].1;
                    let p = parse(f).expect("parse");
                    assert_eq!(&f[p.l3 + 16..p.l3 + 20], &rs, "{}: step {k}: real server", c.what);
                }
            }
        }
    }
}

#[test]
fn state_survives_configuration_changes() {
    run(vec![
        Case {
            what: "a reload of the same config keeps connections, persistence and the rr cursor",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40000, 80, Some(RS2)),
                Syn(CLIENT, 40000, 81, Some(RS1)),
                Config(services(1, false, true)),
                Ack(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40001, 80, Some(RS2)),
                Syn(C3, 40000, 81, Some(RS2)),
            ],
        },
        Case {
            what: "a health flap changes the weight and nothing else",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40000, 80, Some(RS2)),
                Config(services(0, false, true)),
                // Established connections continue on a quiesced server...
                Ack(C2, 40000, 80, Some(RS2)),
                // ...its templates are not used (IPVS expire_quiescent_template)...
                Syn(C2, 40001, 80, Some(RS1)),
                Config(services(1, false, true)),
                // ...and once it is back the rr cursor continues after rs1,
                Syn(C3, 40000, 80, Some(RS2)),
                // while the template made during the flap is still there.
                Syn(C2, 40002, 80, Some(RS1)),
                Ack(CLIENT, 40000, 80, Some(RS1)),
            ],
        },
        Case {
            what: "servers listed in another order: connections and templates follow the server",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40000, 80, Some(RS2)),
                Config(services(1, true, true)),
                Ack(CLIENT, 40000, 80, Some(RS1)),
                Ack(C2, 40000, 80, Some(RS2)),
                Syn(CLIENT, 40001, 80, Some(RS1)),
                Syn(C2, 40001, 80, Some(RS2)),
            ],
        },
        Case {
            what: "ipvsadm -E (another scheduler, same persistence) keeps the service's state",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40000, 80, Some(RS2)),
                Edit("-E -t 10.0.1.100:80 -s wlc -p 300"),
                Ack(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40001, 80, Some(RS2)),
            ],
        },
        Case {
            what: "a removed real server takes its connections and templates with it",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(C2, 40000, 80, Some(RS2)),
                Config(services(1, false, false)),
                Ack(C2, 40000, 80, None),
                Syn(C2, 40001, 80, Some(RS1)),
                Ack(CLIENT, 40000, 80, Some(RS1)),
            ],
        },
    ]);
}

#[test]
fn state_survives_on_every_worker() {
    // Two workers: each keeps the state of the clients it owns.
    run_on(
        vec![Case {
            what: "two workers: reload keeps connections, persistence and rr cursors",
            steps: vec![
                Syn(CLIENT, 40000, 80, Some(RS1)),
                Syn(CLIENT, 40002, 81, Some(RS1)),
                Config(services(1, false, true)),
                Ack(CLIENT, 40000, 80, Some(RS1)),
                Syn(CLIENT, 40001, 80, Some(RS1)),
                Syn(CLIENT, 40003, 81, Some(RS2)),
            ],
        }],
        2,
    );
}

#[test]
fn connection_counts_follow_into_the_new_snapshot() {
    let mut e = MemEngine::new(config(&services(1, false, true)), 1);
    for (c, p) in [(CLIENT, 40000), (C2, 40000)] {
        let f = with_macs(tcp4(c, p, VIP, 80, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
        e.inject(EXT, &f, S);
    }
    e.reload(config(&services(1, true, true)), 2 * S);
    let counts = &e.snapshot.conn_counts[0];
    use ferrovs_sched::ConnStats;
    // Swapped: rs2 is index 0 now.
    assert_eq!((counts.inactive(0), counts.inactive(1)), (1, 1));
    assert_eq!(e.workers[0].remap().map(0, 1), Some((0, 0)));
}

/// A weight change (a health-check flap, `ferrovsadm -e -w`) is installed in place: the
/// connections are not walked (`snapshots_in_place`), the counts of every worker carry into
/// the new snapshot, and the connections' expiry still takes them off (their generation is
/// still the worker's). A change that moves a server remaps them (`snapshots_remapped`), with
/// the counts as exact.
#[test]
fn a_weight_change_is_installed_in_place() {
    use ferrovs_sched::ConnStats;
    let mut e = MemEngine::new(config(&services(1, false, true)), 2);
    let mut n = 0;
    for c in 2..10u8 {
        for port in [80, 81] {
            let f = with_macs(tcp4([10, 0, 1, c], 40000, VIP, port, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
            assert_eq!(e.inject(EXT, &f, S).len(), 1);
            n += 1;
        }
    }
    let total = |e: &MemEngine| -> u32 {
        e.snapshot.conn_counts.iter().map(|c| (0..c.dests()).map(|d| c.active(d) + c.inactive(d)).sum::<u32>()).sum()
    };
    assert_eq!(total(&e), n);
    let before: Vec<Vec<u32>> =
        e.snapshot.conn_counts.iter().map(|c| (0..c.dests()).map(|d| c.inactive(d)).collect()).collect();
    // rs2 quiesced in "web": in place on both workers.
    e.reload(config(&services(0, false, true)), 2 * S);
    let k = e.counters();
    assert_eq!((k.snapshots_in_place, k.snapshots_remapped), (2, 0));
    let after: Vec<Vec<u32>> =
        e.snapshot.conn_counts.iter().map(|c| (0..c.dests()).map(|d| c.inactive(d)).collect()).collect();
    assert_eq!(after, before, "every worker's counts carried");
    // Back to weight 1, then "web" swapped: the connections are remapped.
    e.reload(config(&services(1, false, true)), 3 * S);
    e.reload(config(&services(1, true, true)), 4 * S);
    let k = e.counters();
    assert_eq!((k.snapshots_in_place, k.snapshots_remapped), (4, 2));
    assert_eq!(total(&e), n);
    let web = &e.snapshot.conn_counts[0];
    assert_eq!((web.inactive(0), web.inactive(1)), (before[0][1], before[0][0]), "swapped with the servers");
    // Their SYN_RECV timeout over: expired, and the counts back to 0 (no stale generation).
    let _ = e.run(200 * S);
    assert_eq!(e.counters().flows_active, 0);
    assert_eq!(total(&e), 0);
    // And once more after an in-place change only.
    for c in 2..6u8 {
        let f = with_macs(tcp4([10, 0, 1, c], 40001, VIP, 81, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT);
        assert_eq!(e.inject(EXT, &f, 201 * S).len(), 1);
    }
    assert_eq!(total(&e), 4);
    e.reload(config(&services(0, true, true)), 202 * S);
    assert_eq!(e.counters().snapshots_in_place, 6);
    assert_eq!(total(&e), 4);
    let _ = e.run(400 * S);
    assert_eq!(total(&e), 0, "expired after an in-place change: counted off");
}
