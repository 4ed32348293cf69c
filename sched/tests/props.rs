//! Property tests: weights, least-connection choice, hash stability, Maglev disruption.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrovs_sched::*;
use proptest::prelude::*;

fn dest(i: usize, w: u32) -> Dest {
    Dest::new(IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)), 8080, w)
}

fn key(client: IpAddr, port: u16) -> FlowKey {
    FlowKey { client, client_port: port, vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), vport: 443, proto: 6 }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Every full wrr cycle (sum(w)/gcd picks) gives each server exactly w/gcd picks.
    #[test]
    fn wrr_shares_match_weights_every_cycle(ws in prop::collection::vec(0u32..=12, 1..8)) {
        let ds: Vec<Dest> = ws.iter().enumerate().map(|(i, &w)| dest(i, w)).collect();
        let g = ws.iter().fold(0, |g, &w| gcd(g, w));
        let mut s = new_scheduler("wrr", &ds, 0).unwrap();
        if g == 0 {
            prop_assert_eq!(s.pick(&key(v4(1), 1), &ds, &NoConns), None);
            return Ok(());
        }
        let cycle: u32 = ws.iter().map(|w| w / g).sum();
        for _ in 0..3 {
            let mut n = vec![0u32; ds.len()];
            for c in 0..cycle {
                n[s.pick(&key(v4(c), 1), &ds, &NoConns).unwrap()] += 1;
            }
            let want: Vec<u32> = ws.iter().map(|w| w / g).collect();
            prop_assert_eq!(n, want);
        }
    }

    /// lc/wlc pick an eligible server with no eligible server strictly better; ties to the first.
    #[test]
    fn lc_wlc_never_pick_a_worse_ratio(
        cfg in prop::collection::vec((0u32..5, 0u32..20, 0u32..50, 0u32..30), 1..10),
    ) {
        let ds: Vec<Dest> = cfg
            .iter()
            .enumerate()
            .map(|(i, &(w, _, _, up))| dest(i, w).with_thresholds(if up > 20 { up } else { 0 }, 0))
            .collect();
        let st = StaticCounts {
            active: cfg.iter().map(|c| c.1).collect(),
            inactive: cfg.iter().map(|c| c.2).collect(),
        };
        let oh = |i: usize| ((st.active[i] as u128) << 8) + st.inactive[i] as u128;
        let eligible = |i: usize| {
            ds[i].weight > 0
                && (ds[i].upper == 0 || (st.active[i] + st.inactive[i]) < ds[i].upper)
        };
        for name in ["lc", "wlc"] {
            let weighted = name == "wlc";
            // a / wa < b / wb, in integers
            let better = |a: usize, b: usize| if weighted {
                oh(a) * (ds[b].weight as u128) < oh(b) * (ds[a].weight as u128)
            } else {
                oh(a) < oh(b)
            };
            let got = new_scheduler(name, &ds, 0).unwrap().pick(&key(v4(9), 9), &ds, &st);
            match got {
                None => prop_assert!((0..ds.len()).all(|i| !eligible(i)), "{}", name),
                Some(p) => {
                    prop_assert!(eligible(p), "{} picked ineligible {}", name, p);
                    for j in 0..ds.len() {
                        if eligible(j) {
                            prop_assert!(!better(j, p), "{}: {} better than {}", name, j, p);
                            if j < p {
                                prop_assert!(better(p, j), "{}: tie must go to first", name);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whatever any scheduler picks has a weight and is below its upper threshold.
    #[test]
    fn no_scheduler_picks_quiescent_or_overloaded(
        cfg in prop::collection::vec((0u32..4, 0u32..8, 0u32..8, 0u32..10), 1..8),
        seed in any::<u64>(),
        client in any::<u32>(),
    ) {
        let ds: Vec<Dest> = cfg
            .iter()
            .enumerate()
            .map(|(i, &(w, _, _, up))| dest(i, w).with_thresholds(up, 0))
            .collect();
        let st = StaticCounts {
            active: cfg.iter().map(|c| c.1).collect(),
            inactive: cfg.iter().map(|c| c.2).collect(),
        };
        for &name in NAMES {
            let mut s = new_scheduler(name, &ds, seed).unwrap();
            for c in 0..4 {
                if let Some(p) = s.pick(&key(v4(client.wrapping_add(c)), c as u16), &ds, &st) {
                    let total = st.active[p] + st.inactive[p];
                    prop_assert!(ds[p].weight > 0, "{} picked quiescent", name);
                    prop_assert!(ds[p].upper == 0 || total < ds[p].upper, "{} overloaded", name);
                }
            }
        }
    }

    /// sh/dh/mh: two fresh instances (one with the list shuffled) send every key to the same
    /// server: consistent across workers and restarts.
    #[test]
    fn hashing_is_stable_across_instances_and_order(
        ws in prop::collection::vec(1u32..5, 1..12),
        rot in 0usize..12,
        clients in prop::collection::vec(any::<u128>(), 1..40),
    ) {
        let ds: Vec<Dest> = ws.iter().enumerate().map(|(i, &w)| dest(i, w)).collect();
        let mut shuffled = ds.clone();
        shuffled.rotate_left(rot % ds.len());
        let opts = SchedOptions { mh_table_size: MhTableSize::new(4093).unwrap(), ..Default::default() };
        for name in ["sh", "dh", "mh"] {
            let mut a = new_scheduler_with(name, &ds, 1, &opts).unwrap();
            let mut b = new_scheduler_with(name, &ds, 2, &opts).unwrap();
            let mut c = new_scheduler_with(name, &shuffled, 3, &opts).unwrap();
            for &cl in &clients {
                let addr = if cl & 1 == 0 { IpAddr::V6(Ipv6Addr::from(cl)) } else { v4(cl as u32) };
                let k = key(addr, 1234);
                let pa = a.pick(&k, &ds, &NoConns).map(|i| ds[i].id());
                prop_assert!(pa.is_some());
                prop_assert_eq!(pa, b.pick(&k, &ds, &NoConns).map(|i| ds[i].id()));
                prop_assert_eq!(pa, c.pick(&k, &shuffled, &NoConns).map(|i| shuffled[i].id()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Maglev at M = 65537: removing one of 10 equal servers moves at most 1/10 + 1% of keys.
    #[test]
    fn mh_removal_moves_about_one_nth(victim in 0usize..10, salt in any::<u32>()) {
        let ds: Vec<Dest> = (0..10).map(|i| dest(i, 1)).collect();
        let mut after = ds.clone();
        after.remove(victim);
        let mut a = new_scheduler("mh", &ds, 0).unwrap();
        let mut b = new_scheduler("mh", &after, 0).unwrap();
        let n = 20_000u32;
        let mut moved = 0;
        for c in 0..n {
            let k = key(v4(c.wrapping_mul(2_654_435_761).wrapping_add(salt)), 0);
            let x = a.pick(&k, &ds, &NoConns).map(|i| ds[i].id());
            let y = b.pick(&k, &after, &NoConns).map(|i| after[i].id());
            prop_assert!(y.is_some());
            if x != y {
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        prop_assert!(frac <= 0.1 + 0.01, "moved {}", frac);
    }
}
