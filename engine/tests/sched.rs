//! Schedulers and persistence through the engine: 60 client SYNs to a NAT
//! service with wrr over weights 3,2,1 reach the servers 30/20/10 in the
//! IPVS order; with persistence every connection of one client reaches one
//! server, across the ports of a port group.

mod common;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};

fn wrr_config(extra: &str) -> ferrovs_cfg::Config {
    config(&format!(
        r#"
[[service]]
name = "web"
vip = "10.0.1.100"
ports = [21, "10000-20000"]
scheduler = "wrr"
forward = "nat"
{extra}

[[service.real_server]]
address = "10.0.2.2"
weight = 3

[[service.real_server]]
address = "10.0.2.3"
weight = 2

[[service.real_server]]
address = "10.0.2.4"
weight = 1
"#
    ))
}

/// Send a SYN and return the last octet of the real server it reached.
fn syn(e: &mut MemEngine, client: [u8; 4], sport: u16, dport: u16) -> u8 {
    let cmac = [2, 0, 0, 0, 1, client[3]];
    let out = e.inject(0, &with_macs(tcp4(client, sport, VIP, dport, TCP_SYN, 1, 0, b""), cmac, LB_EXT), 1_000_000_000);
    assert_eq!(out.len(), 1, "SYN forwarded");
    out[0].1[33]
}

#[test]
fn wrr_3_2_1_in_ipvs_order() {
    for workers in [1, 2] {
        let mut e = MemEngine::new(wrr_config(""), workers);
        let mut seq = Vec::new();
        for i in 0..60u16 {
            // One client: with 2 workers every SYN is owned by the same worker,
            // so the order is the IPVS order on that worker.
            seq.push(syn(&mut e, [10, 0, 1, 2], 30000 + i, 21));
        }
        let cycle = [2, 2, 3, 2, 3, 4];
        for (i, got) in seq.iter().enumerate() {
            assert_eq!(*got, cycle[i % 6], "{workers} workers: pick {i}");
        }
        let count = |x: u8| seq.iter().filter(|&&s| s == x).count();
        assert_eq!((count(2), count(3), count(4)), (30, 20, 10));
    }
}

#[test]
fn persistence_keeps_a_client_on_one_server_across_the_port_group() {
    let mut e = MemEngine::new(wrr_config("persistence = { timeout = 300 }"), 1);
    for c in 2..20u8 {
        let client = [10, 0, 1, c];
        let first = syn(&mut e, client, 40000, 21);
        for (i, port) in [21u16, 10000, 15000, 20000, 21].iter().enumerate() {
            assert_eq!(syn(&mut e, client, 40001 + i as u16, *port), first, "client {c} port {port}");
        }
    }
}

/// A sorry server takes new connections only while no real server does (every one at
/// weight 0, or none), as keepalived's `sorry_server`; when a real server takes them again,
/// new connections go there.
#[test]
fn the_sorry_server_takes_new_connections_only_while_no_real_server_does() {
    let cfg = |weight: Option<u32>| {
        let rs = weight
            .map_or(String::new(), |w| format!("[[service.real_server]]\naddress = \"10.0.2.2\"\nweight = {w}\n"));
        config(&format!(
            "[[service]]\nname = \"web\"\nvip = \"10.0.1.100\"\nports = [80]\nscheduler = \"rr\"\n\
             sorry_server = {{ address = \"10.0.2.3\", port = 8080 }}\n\n{rs}"
        ))
    };
    // Where a new connection from client port `cport` goes: (destination MAC, address, port).
    let syn = |e: &mut MemEngine, cport: u16| {
        let out = e.inject(EXT, &from_client(tcp4(CLIENT, cport, VIP, 80, TCP_SYN, 1, 0, b"")), S);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        (f[0..6].to_vec(), f[30..34].to_vec(), u16::from_be_bytes([f[36], f[37]]))
    };
    let to_rs1 = (RS1_MAC.to_vec(), RS1.to_vec(), 80);
    let to_sorry = (RS2_MAC.to_vec(), RS2.to_vec(), 8080);
    let mut e = MemEngine::new(cfg(Some(1)), 1);
    assert_eq!(syn(&mut e, 41000), to_rs1);
    // The real server quiesced: new connections to the sorry server.
    e.reload(cfg(Some(0)), 2 * S);
    assert_eq!(syn(&mut e, 41001), to_sorry);
    // Back at weight 1: new connections to the real server again; the sorry server's go on.
    e.reload(cfg(Some(1)), 3 * S);
    assert_eq!(syn(&mut e, 41002), to_rs1);
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 41001, VIP, 80, TCP_ACK, 2, 1, b"")), 3 * S);
    assert_eq!(out.len(), 1, "the sorry server's connection carries on");
    assert_eq!((&out[0].1[0..6], &out[0].1[30..34]), (&RS2_MAC[..], &RS2[..]));
    // No real server at all.
    let mut e = MemEngine::new(cfg(None), 1);
    assert_eq!(syn(&mut e, 41003), to_sorry);
}

/// A service with scheduler `sched`, `flags` (sched_flags), and real servers 10.0.2.2-4
/// at `weights`.
fn hashed_config(sched: &str, flags: &str, weights: [u32; 3]) -> ferrovs_cfg::Config {
    let rs: String = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("[[service.real_server]]\naddress = \"10.0.2.{}\"\nweight = {w}\n\n", i + 2))
        .collect();
    config(&format!(
        "[[service]]\nname = \"web\"\nvip = \"10.0.1.100\"\nports = [80]\nscheduler = \"{sched}\"\n\
         forward = \"nat\"\nsched_flags = [{flags}]\n\n{rs}"
    ))
}

/// Where a SYN from `client`:`sport` to port 80 went (the real server's last octet), or
/// None if it was not forwarded.
fn syn80(e: &mut MemEngine, client: [u8; 4], sport: u16, now: u64) -> Option<u8> {
    let cmac = [2, 0, 0, 0, 1, client[3]];
    let out = e.inject(0, &with_macs(tcp4(client, sport, VIP, 80, TCP_SYN, 1, 0, b""), cmac, LB_EXT), now);
    match out.as_slice() {
        [] => None,
        [(_, f)] => {
            verify_checksums(f).unwrap();
            Some(f[33])
        }
        _ => panic!("{out:?}"),
    }
}

/// `sh-port` / `mh-port` (ipvsadm -b): one client's connections, from many ports, spread
/// over the real servers, on every worker alike; without the flag they all reach one. A
/// reload that changes only the flags takes effect.
#[test]
fn port_flag_hashes_the_client_port() {
    for sched in ["sh", "mh"] {
        for workers in [1, 2] {
            let mut e = MemEngine::new(hashed_config(sched, "", [1, 1, 1]), workers);
            let plain: Vec<u8> = (0..30).map(|i| syn80(&mut e, CLIENT, 20000 + i, S).unwrap()).collect();
            assert!(plain.iter().all(|&s| s == plain[0]), "{sched}: one server per client address: {plain:?}");
            let flag = format!("\"{sched}-port\"");
            let mut e = MemEngine::new(hashed_config(sched, &flag, [1, 1, 1]), workers);
            let spread: Vec<u8> = (0..30).map(|i| syn80(&mut e, CLIENT, 20000 + i, S).unwrap()).collect();
            for s in 2..=4 {
                assert!(spread.contains(&s), "{sched}-port, {workers} workers: 10.0.2.{s} gets some: {spread:?}");
            }
            // The same picks on another engine (and so on another node, or worker).
            let mut again = MemEngine::new(hashed_config(sched, &flag, [1, 1, 1]), 3 - workers);
            let same: Vec<u8> = (0..30).map(|i| syn80(&mut again, CLIENT, 20000 + i, S).unwrap()).collect();
            assert_eq!(same, spread, "{sched}-port: deterministic");
            // Flags taken away by a reload: new connections hash the address alone again.
            e.reload(hashed_config(sched, "", [1, 1, 1]), 2 * S);
            let back: Vec<u8> = (0..10).map(|i| syn80(&mut e, CLIENT, 30000 + i, 2 * S).unwrap()).collect();
            assert_eq!(back, vec![plain[0]; 10], "{sched}: after the reload");
        }
    }
}

/// `sh-fallback` / `mh-fallback`: with a real server quiesced (weight 0; sh and mh keep its
/// place in their tables), the clients that
/// hash to it are refused without the flag (as IPVS's sh and mh return no server) and go to
/// the others with it; the others' clients keep their server either way.
#[test]
fn fallback_flag_reschedules_around_an_unavailable_server() {
    for sched in ["sh", "mh"] {
        let clients: Vec<[u8; 4]> = (0..60).map(|i| [10, 0, 1, 10 + i]).collect();
        let mut e = MemEngine::new(hashed_config(sched, "", [1, 1, 1]), 1);
        let before: Vec<u8> = clients.iter().map(|&c| syn80(&mut e, c, 40000, S).unwrap()).collect();
        let on3 = before.iter().filter(|&&s| s == 3).count();
        assert!(on3 > 0 && on3 < clients.len(), "{sched}: 10.0.2.3 has some clients: {before:?}");
        for (flag, fallback) in [("", false), (&*format!("\"{sched}-fallback\""), true)] {
            // Quiesced by a reload (a fresh table would hash around it from the start).
            let mut e = MemEngine::new(hashed_config(sched, flag, [1, 1, 1]), 1);
            e.reload(hashed_config(sched, flag, [1, 0, 1]), S);
            let after: Vec<Option<u8>> = clients.iter().map(|&c| syn80(&mut e, c, 40001, S)).collect();
            for (b, a) in before.iter().zip(&after) {
                match (*b, fallback) {
                    (3, false) => assert_eq!(*a, None, "{sched}: refused without the flag"),
                    (3, true) => assert!(matches!(a, Some(2 | 4)), "{sched}-fallback: rescheduled: {a:?}"),
                    (s, _) => assert_eq!(*a, Some(s), "{sched}: another client keeps its server"),
                }
            }
        }
    }
}
