//! Schedulers and persistence through the engine: 60 client SYNs to a NAT
//! service with wrr over weights 3,2,1 reach the servers 30/20/10 in the
//! IPVS order; with persistence every connection of one client reaches one
//! server, across the ports of a port group.

mod common;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::TCP_SYN;

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
