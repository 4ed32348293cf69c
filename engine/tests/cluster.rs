//! Cluster placement (issue 14): every node with the same configuration makes the same choice
//! (Maglev over the client address, the same table everywhere), a node that gets a
//! mid-connection packet of a DR/tunnel connection it does not know recreates it by that
//! choice (`flows_recreated`), FTP data connections follow their control connection's server
//! on every node, and adding a real server moves at most about 1/N of the choices.

mod common;
use common::*;
use ferrovs_engine::counters::DropReason;
use ferrovs_engine::parse::{TCP_ACK, TCP_PSH, TCP_SYN};
use ferrovs_engine::replay::MemEngine;
use ferrovs_engine::testpkt::*;

const RS_COUNT: u8 = 6;

/// Node `id` of a cluster with a DR web service (port 80), a DR FTP service (21) and a NAT
/// service (8080) on the VIP, over `n_rs` real servers 10.0.2.10.. (static neighbours).
fn node(id: u8, n_rs: u8, cluster: bool) -> ferrovs_cfg::Config {
    let mut t = String::new();
    for i in 0..RS_COUNT + 2 {
        t += &format!("[[neighbor]]\naddress = \"10.0.2.{}\"\nmac = \"02:00:00:00:03:{:02x}\"\n\n", 10 + i, 10 + i);
    }
    for (name, port, fwd, ftp) in [("web", 80, "dr", ""), ("ftp", 21, "dr", "ftp = true\n"), ("nat", 8080, "nat", "")] {
        t += &format!(
            "[[service]]\nname = \"{name}\"\nvip = \"10.0.1.100\"\nports = [{port}]\nscheduler = \"mh\"\nforward = \"{fwd}\"\nsyn_proxy = \"off\"\n{ftp}"
        );
        for i in 0..n_rs {
            t += &format!("[[service.real_server]]\naddress = \"10.0.2.{}\"\n", 10 + i);
        }
        t += "\n";
    }
    if cluster {
        t += &format!("[cluster]\nnode_id = {id}\nsync_address = \"10.9.0.{id}\"\npeers = [\"10.9.0.250\"]\n");
    }
    config(&t)
}

fn client(c: u8) -> ([u8; 4], [u8; 6]) {
    ([10, 0, 1, c], [2, 0, 0, 0, 1, c])
}

/// Inject a TCP segment from client `c` to the VIP; the real server it reached (last octet of
/// the destination MAC, DR) or `None` if nothing went out.
fn send(e: &mut MemEngine, c: u8, sport: u16, dport: u16, flags: u8, now: u64) -> Option<u8> {
    let (ip, mac) = client(c);
    let out = e.inject(EXT, &with_macs(tcp4(ip, sport, VIP, dport, flags, 1000, 1, b""), mac, LB_EXT), now);
    match out.as_slice() {
        [] => None,
        [(i, f)] => {
            assert_eq!(*i, INT, "towards the real servers: {:?} {:02x?}", common::seg::drops(e), &f[..60.min(f.len())]);
            Some(f[5])
        }
        _ => panic!("one frame at most"),
    }
}

#[test]
fn every_node_makes_the_same_choice() {
    let mut nodes: Vec<MemEngine> = (1..=3).map(|id| MemEngine::new(node(id, RS_COUNT, true), 1)).collect();
    let mut per_rs = [0usize; 256];
    for c in 2..100u8 {
        let picks: Vec<_> = nodes.iter_mut().map(|e| send(e, c, 40000, 80, TCP_SYN, S).unwrap()).collect();
        assert!(picks.iter().all(|&p| p == picks[0]), "client {c}: {picks:?}");
        per_rs[picks[0] as usize] += 1;
    }
    // Maglev spreads clients over all six servers.
    let used = per_rs.iter().filter(|&&n| n > 0).count();
    assert_eq!(used, RS_COUNT as usize, "{:?}", &per_rs[10..16]);
    // Node-local history does not change the choice: node 1 has seen 98 connections, a
    // fresh node none, and both still agree.
    let mut fresh = MemEngine::new(node(7, RS_COUNT, true), 1);
    for c in 2..100u8 {
        assert_eq!(send(&mut nodes[0], c, 41000, 80, TCP_SYN, 2 * S), send(&mut fresh, c, 41000, 80, TCP_SYN, 2 * S));
    }
}

#[test]
fn mid_connection_packets_are_recreated_in_dr_only() {
    let mut a = MemEngine::new(node(1, RS_COUNT, true), 1);
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    let rs = send(&mut a, 7, 40000, 80, TCP_SYN, S).unwrap();
    // ECMP moves the connection to node b: its next ACK and data are recreated there.
    assert_eq!(send(&mut b, 7, 40000, 80, TCP_ACK, S), Some(rs));
    assert_eq!(send(&mut b, 7, 40000, 80, TCP_ACK | TCP_PSH, S), Some(rs));
    let c = b.counters();
    assert_eq!((c.flows_recreated, c.flows_created), (1, 1), "one recreation, then the connection exists");
    // A NAT connection is not recreated: its replies need state this node does not have.
    assert_eq!(send(&mut b, 8, 40000, 8080, TCP_ACK, S), None);
    assert_drops(&b, &[(DropReason::NoFlow, 1)]);
    // Outside a cluster the same ACK is a stray.
    let mut solo = MemEngine::new(node(1, RS_COUNT, false), 1);
    assert_eq!(send(&mut solo, 7, 40000, 80, TCP_ACK, S), None);
    assert_eq!(solo.counters().flows_recreated, 0);
    assert_drops(&solo, &[(DropReason::NoFlow, 1)]);
}

#[test]
fn ftp_data_follows_the_control_connection_on_every_node() {
    let mut a = MemEngine::new(node(1, RS_COUNT, true), 1);
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    for c in 2..60u8 {
        let ctl = send(&mut a, c, 40000, 21, TCP_SYN, S).unwrap();
        // Passive: the data connection's SYN reaches node b, which saw no PASV.
        assert_eq!(send(&mut b, c, 40001, 30000 + c as u16, TCP_SYN, S), Some(ctl), "client {c} passive");
        // Active (DR): the real server connected from VIP:20 straight to the client; the
        // client's SYN-ACK and ACKs reach node b.
        assert_eq!(send(&mut b, c, 50000, 20, TCP_SYN | TCP_ACK, S), Some(ctl), "client {c} active");
        assert_eq!(send(&mut b, c, 50000, 20, TCP_ACK, S), Some(ctl));
    }
    // Ports below 1024 other than 20 are no FTP data port (allow_low_data_ports is off).
    assert_eq!(send(&mut b, 3, 40002, 22, TCP_SYN, S), None);
    assert_drops(&b, &[(DropReason::NoService, 1)]);
    // Outside a cluster node b has no expectation: the passive data SYN is refused.
    let mut solo = MemEngine::new(node(2, RS_COUNT, false), 1);
    assert_eq!(send(&mut solo, 2, 40001, 30002, TCP_SYN, S), None);
}

#[test]
fn adding_a_real_server_moves_at_most_one_nth_plus_5_percent() {
    let n_old = RS_COUNT - 1;
    let mut old = MemEngine::new(node(1, n_old, true), 1);
    let mut new = MemEngine::new(node(1, RS_COUNT, true), 1);
    let (mut moved, mut total) = (0usize, 0usize);
    // 98 client addresses x 4 ports: the port does not enter the choice, the address does.
    for c in 2..100u8 {
        for k in 0..4u16 {
            let before = send(&mut old, c, 40000 + k, 80, TCP_SYN, S).unwrap();
            let after = send(&mut new, c, 40000 + k, 80, TCP_SYN, S).unwrap();
            total += 1;
            if before != after {
                // Only towards the new server.
                assert_eq!(after, 10 + n_old, "client {c} moved between old servers");
                moved += 1;
            }
        }
    }
    let share = moved as f64 / total as f64;
    let bound = 1.0 / RS_COUNT as f64 + 0.05;
    assert!(moved > 0 && share <= bound, "moved {moved}/{total} = {share:.3} > {bound:.3}");
    // Reloading a running node with the new server breaks no existing connection.
    let mut e = MemEngine::new(node(1, n_old, true), 1);
    let picks: Vec<u8> = (2..100u8).map(|c| send(&mut e, c, 40000, 80, TCP_SYN, S).unwrap()).collect();
    e.reload(node(1, RS_COUNT, true), 2 * S);
    for (i, c) in (2..100u8).enumerate() {
        assert_eq!(send(&mut e, c, 40000, 80, TCP_ACK, 2 * S), Some(picks[i]), "client {c} kept its server");
    }
}
