//! Cluster placement (issue 14): every node with the same configuration makes the same choice
//! (Maglev over the client address, the same table everywhere), a node that gets a
//! mid-connection packet of a DR/tunnel connection it does not know recreates it by that
//! choice (`flows_recreated`), FTP data connections follow their control connection's server
//! on every node, and adding a real server moves at most about 1/N of the choices.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

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

// ---------------------------------------------------------------------------------------------
// Connection sync between two nodes (the datagrams pass from one engine to the other).

use common::seg::one;
use ferrovs_engine::cluster::sync::Batcher;

/// Client 10.0.1.2 (a static neighbour, so NAT replies go out at once).
const C: u8 = 2;

fn rs_reply(e: &mut MemEngine, rs: u8, sport: u16, cport: u16, flags: u8, now: u64) -> Vec<(usize, Vec<u8>)> {
    let rs_ip = [10, 0, 2, rs];
    let rs_mac = [2, 0, 0, 0, 3, rs];
    e.inject(INT, &with_macs(tcp4(rs_ip, sport, CLIENT, cport, flags, 5000, 1001, b""), rs_mac, LB_INT), now)
}

/// NAT: the rs a SYN went to (destination address, last octet).
fn nat_syn(e: &mut MemEngine, sport: u16, flags: u8, now: u64) -> u8 {
    let (ip, mac) = client(C);
    let out = e.inject(EXT, &with_macs(tcp4(ip, sport, VIP, 8080, flags, 1000, 1, b""), mac, LB_EXT), now);
    let (i, s) = one(out);
    assert_eq!(i, INT);
    s.dst[3]
}

/// A DR FTP data connection placed by the Maglev choice (the node saw no PASV, so no
/// expectation, no `data` flag) is synced like any other: its peers install it as backup
/// state under the VIP's FTP service (it was refused, "no service of that VIP and port"),
/// and a peer that gets its next packet adopts it instead of recreating it.
#[test]
fn maglev_placed_ftp_data_connections_are_installed_by_peers() {
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    let mut c = MemEngine::new(node(3, RS_COUNT, true), 1);
    let mut bb = Batcher::new(2, 1000);
    let rs = send(&mut b, 7, 40001, 30007, TCP_SYN, S).unwrap();
    let msgs = b.take_sync(&mut bb, S);
    assert_eq!(msgs.len(), 1);
    let m = ferrovs_engine::cluster::sync::parse(&msgs[0]).unwrap();
    assert!(
        matches!(m.entries[..], [ferrovs_engine::cluster::sync::SyncEntry::Conn(x)] if !x.data && x.vport == 30007)
    );
    assert_eq!(c.deliver_sync(&msgs[0], S), Ok(1));
    let k = c.counters();
    assert_eq!((k.sync_installed, k.sync_skipped), (1, 0));
    // Node b dies; the client's next segment reaches node c: the same real server, adopted.
    assert_eq!(send(&mut c, 7, 40001, 30007, TCP_ACK, 2 * S), Some(rs));
    let k = c.counters();
    assert_eq!((k.flows_created, k.flows_recreated), (1, 0), "adopted, not recreated");
}

/// Node 1 opens a NAT connection (client port 40000) and syncs it to node 2 as backup state:
/// nodes 1 and 2 and the real server it went to.
fn nat_connection_synced() -> (MemEngine, MemEngine, u8) {
    let mut a = MemEngine::new(node(1, RS_COUNT, true), 1);
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    let mut ba = Batcher::new(1, 1000);
    let rs = nat_syn(&mut a, 40000, TCP_SYN, S);
    assert_eq!(rs_reply(&mut a, rs, 8080, 40000, TCP_SYN | TCP_ACK, S).len(), 1);
    nat_syn(&mut a, 40000, TCP_ACK, S);
    // Creation (SYN_RECV) and ESTABLISHED: two entries, one datagram.
    let msgs = a.take_sync(&mut ba, S);
    assert_eq!(msgs.len(), 1);
    assert_eq!(b.deliver_sync(&msgs[0], S), Ok(2));
    (a, b, rs)
}

#[test]
fn synced_nat_connection_carries_replies_on_the_peer_and_counts_only_then() {
    let (_a, mut b, rs) = nat_connection_synced();
    let c = b.counters();
    assert_eq!((c.sync_installed, c.flows_created, c.sync_skipped), (2, 0, 0), "backup state is not a created flow");
    assert_eq!(c.flows_active, 0, "nor an active one (a drain does not wait for it)");
    // Node a dies; the real server's reply reaches node b, which NATs it back as a would.
    let out = rs_reply(&mut b, rs, 8080, 40000, TCP_ACK | TCP_PSH, 2 * S);
    let (i, s) = one(out);
    assert_eq!((i, s.src, s.sport, s.dst, s.dport), (EXT, VIP, 8080, CLIENT, 40000));
    // The client's next segment too, to the same real server.
    assert_eq!(nat_syn(&mut b, 40000, TCP_ACK | TCP_PSH, 2 * S), rs);
    assert_eq!((b.counters().flows_created, b.counters().flows_active), (1, 1), "adopted on its first packet");
    // Now node b's own connection: announced once to the peers (its timeout now runs on node
    // b), then only on changes and refreshes.
    let mut bb = Batcher::new(2, 1000);
    assert_eq!(b.take_sync(&mut bb, 2 * S).len(), 1);
    nat_syn(&mut b, 40000, TCP_ACK, 2 * S);
    assert!(b.take_sync(&mut bb, 2 * S).is_empty(), "no change, no message");
}

#[test]
fn deletions_remove_backup_state_and_refresh_resends() {
    let mut a = MemEngine::new(node(1, RS_COUNT, true), 1);
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    let mut ba = Batcher::new(1, 1000);
    let rs = nat_syn(&mut a, 40000, TCP_SYN, S);
    rs_reply(&mut a, rs, 8080, 40000, TCP_SYN | TCP_ACK, S);
    nat_syn(&mut a, 40000, TCP_ACK, S);
    for m in a.take_sync(&mut ba, S) {
        b.deliver_sync(&m, S).unwrap();
    }
    // Idle past sync_refresh (10 s), within the established timeout: a refresh goes out.
    a.run(12 * S);
    let msgs = a.take_sync(&mut ba, 12 * S);
    assert_eq!(msgs.len(), 1, "refresh of the live connection");
    let m = ferrovs_engine::cluster::sync::parse(&msgs[0]).unwrap();
    assert!(
        matches!(m.entries[..], [ferrovs_engine::cluster::sync::SyncEntry::Conn(c)] if c.state == 1 && c.timeout_s > 880)
    );
    // The connection expires on node a: the deletion removes node b's copy.
    a.run(1000 * S);
    let msgs = a.take_sync(&mut ba, 1000 * S);
    assert_eq!(msgs.len(), 1);
    b.deliver_sync(&msgs[0], 20 * S).unwrap();
    // The reply finds nothing on node b now.
    assert!(rs_reply(&mut b, rs, 8080, 40000, TCP_ACK, 21 * S).is_empty());
    assert_drops(&b, &[(DropReason::NoFlow, 1)]);
}

#[test]
fn templates_install_and_bad_messages_are_refused() {
    let persist = |id| {
        let mut c = node(id, RS_COUNT, true);
        c.services[0].persistence = Some(ferrovs_cfg::Persistence { timeout: 300, netmask: 24 });
        c
    };
    let mut a = MemEngine::new(persist(1), 1);
    let mut b = MemEngine::new(persist(2), 1);
    let rs = send(&mut a, 9, 40000, 80, TCP_SYN, S).unwrap();
    let msgs = a.take_sync(&mut Batcher::new(1, 1000), S);
    let m = ferrovs_engine::cluster::sync::parse(&msgs[0]).unwrap();
    assert!(m.entries.iter().any(|e| matches!(e, ferrovs_engine::cluster::sync::SyncEntry::Template(_))), "{m:?}");
    assert_eq!(b.deliver_sync(&msgs[0], S), Ok(m.entries.len()));
    assert_eq!(b.counters().sync_installed, m.entries.len() as u64);
    // A client of the same /24 follows the template on node b.
    assert_eq!(send(&mut b, 10, 40000, 80, TCP_SYN, S), Some(rs));
    // Garbage and another version are refused whole, nothing installed.
    let before = b.counters().sync_installed;
    assert!(b.deliver_sync(b"not sync", S).is_err());
    let mut v7 = msgs[0].clone();
    v7[4] = 7;
    assert_eq!(b.deliver_sync(&v7, S), Err(ferrovs_engine::cluster::sync::SyncError::Version(7)));
    // Versions 2, 4 and 6 (authenticated) cannot be verified by a node without a key.
    for v in [2, 4, 6] {
        v7[4] = v;
        assert_eq!(b.deliver_sync(&v7, S), Err(ferrovs_engine::cluster::sync::SyncError::Auth));
    }
    assert_eq!(b.counters().sync_installed, before);
}

// ---------------------------------------------------------------------------------------------
// Full NAT in a cluster: each node its own local address ([[cluster.node]]), the FNAT mapping
// synced (format version 3), a peer translates the replies to a failed node's local address.

const LA1: [u8; 4] = [10, 0, 2, 200];
const LA2: [u8; 4] = [10, 0, 2, 201];

/// Node `id` of a two-node cluster with a full-NAT web service (port 80) on the VIP over real
/// servers 10.0.2.10-12 (and a full-NAT FTP service, port 21); node 1 owns local address
/// .200, node 2 .201; ports 2000-2255.
fn fnat_node(id: u8) -> ferrovs_cfg::Config {
    ferrovs_cfg::Config::from_str(&fnat_node_text(id), "fnat-cluster.toml").expect("config parses")
}

/// [`fnat_node`]'s configuration text.
fn fnat_node_text(id: u8) -> String {
    let mut t = String::new();
    for i in 0..3u8 {
        t += &format!("[[neighbor]]\naddress = \"10.0.2.{}\"\nmac = \"02:00:00:00:03:{:02x}\"\n\n", 10 + i, 10 + i);
    }
    for (name, port, ftp) in [("fweb", 80, ""), ("fftp", 21, "ftp = true\n")] {
        t += &format!(
            "[[service]]\nname = \"{name}\"\nvip = \"10.0.1.100\"\nports = [{port}]\nforward = \"fnat\"\nsyn_proxy = \"off\"\n\
             {ftp}local_addresses = [\"10.0.2.200\", \"10.0.2.201\"]\n"
        );
        for i in 0..3u8 {
            t += &format!("[[service.real_server]]\naddress = \"10.0.2.{}\"\n", 10 + i);
        }
    }
    t += &format!(
        "\n[cluster]\nnode_id = {id}\nsync_address = \"10.9.0.{id}\"\npeers = [\"10.9.0.250\"]\n\
         [[cluster.node]]\nid = 1\nlocal_addresses = [\"10.0.2.200\"]\n[[cluster.node]]\nid = 2\nlocal_addresses = [\"10.0.2.201\"]\n"
    );
    common::config_text(&t).replacen(
        "flow_table_size = 4096",
        "flow_table_size = 4096\nlocal_port_range = \"2000-2255\"",
        1,
    )
}

/// A client segment to VIP:80 through a full-NAT node: (real server, local address, local port).
fn fnat_in(e: &mut MemEngine, sport: u16, flags: u8, seq: u32, ack: u32, now: u64) -> ([u8; 4], [u8; 4], u16) {
    let (ip, mac) = client(C);
    let out = e.inject(EXT, &with_macs(tcp4(ip, sport, VIP, 80, flags, seq, ack, b""), mac, LB_EXT), now);
    let (i, s) = one(out);
    assert_eq!((i, s.sport != sport || s.src != ip), (INT, true), "source rewritten towards the real server");
    (s.dst, s.src, s.sport)
}

/// The real server's segment to local address `la`:`lport`.
fn fnat_reply(e: &mut MemEngine, rs: [u8; 4], la: [u8; 4], lport: u16, flags: u8, now: u64) -> Vec<(usize, Vec<u8>)> {
    let rs_mac = [2, 0, 0, 0, 3, rs[3]];
    e.inject(INT, &with_macs(tcp4(rs, 80, la, lport, flags, 5000, 1001, b""), rs_mac, LB_INT), now)
}

/// Datagram `m` (version 5) as a node of an older release sends it (version 1 or 3: no
/// placement block).
fn downgrade(m: &[u8], v: u8) -> Vec<u8> {
    let h = ferrovs_engine::cluster::sync::HEADER_LEN;
    let mut d = [&m[..h], &m[h + ferrovs_engine::cluster::sync::Placement::LEN..]].concat();
    d[4] = v;
    d
}

fn entries(msgs: &[Vec<u8>]) -> Vec<ferrovs_engine::cluster::sync::SyncEntry> {
    msgs.iter().flat_map(|m| ferrovs_engine::cluster::sync::parse(m).unwrap().entries).collect()
}

#[test]
fn full_nat_mapping_is_synced_and_the_survivor_translates_replies() {
    let mut a = MemEngine::new(fnat_node(1), 1);
    let mut b = MemEngine::new(fnat_node(2), 1);
    // Node 1 allocates on its own local address only.
    let (rs, la, lport) = fnat_in(&mut a, 40000, TCP_SYN, 1000, 0, S);
    assert_eq!((la, lport), (LA1, 2000));
    let (i, s) = one(fnat_reply(&mut a, rs, la, lport, TCP_SYN | TCP_ACK, S));
    assert_eq!((i, s.src, s.sport, s.dst, s.dport), (EXT, VIP, 80, CLIENT, 40000));
    fnat_in(&mut a, 40000, TCP_ACK, 1001, 5001, S);
    let msgs = a.take_sync(&mut Batcher::new(1, 1000), S);
    assert_eq!(msgs[0][4], ferrovs_engine::cluster::sync::VERSION, "full-NAT entries need format version 3+");
    let es = entries(&msgs);
    assert!(
        es.iter().all(|e| matches!(e, ferrovs_engine::cluster::sync::SyncEntry::Conn(c)
            if c.fwd == 3 && c.fnat == Some((ferrovs_engine::wire::parse::v4_to_addr(LA1), 2000)))),
        "{es:?}"
    );
    assert_eq!(b.deliver_sync(&msgs[0], S), Ok(es.len()));
    assert_eq!((b.counters().sync_installed, b.counters().flows_created), (es.len() as u64, 0));
    // Node 1 dies; BGP moves its local address to node 2: the real server's reply to
    // LA1:2000 arrives there and goes back to the client as node 1 would have sent it.
    let (i, s) = one(fnat_reply(&mut b, rs, LA1, 2000, TCP_ACK | TCP_PSH, 2 * S));
    assert_eq!((i, s.src, s.sport, s.dst, s.dport, s.seq, s.ack), (EXT, VIP, 80, CLIENT, 40000, 5000, 1001));
    // The client's next segment (ECMP now sends it to node 2) leaves from the same mapping.
    assert_eq!(fnat_in(&mut b, 40000, TCP_ACK, 1001, 5001, 2 * S), (rs, LA1, 2000));
    assert_eq!(b.counters().flows_created, 1, "adopted on its first packet");
    // Node 2's own new connections use its own local address, not the adopted one's.
    let (_, la2, _) = fnat_in(&mut b, 40001, TCP_SYN, 7, 0, 2 * S);
    assert_eq!(la2, LA2);
    // Node 2 does not answer ARP for node 1's local address (the routers reach it by BGP),
    // but does for its own.
    let arp = |target: [u8; 4]| arp_request([2, 0, 0, 0, 3, 10], [10, 0, 2, 10], target);
    assert!(b.inject(INT, &arp(LA1), 2 * S).is_empty());
    assert_eq!(b.inject(INT, &arp(LA2), 2 * S).len(), 1);
}

#[test]
fn synced_local_port_is_reserved_on_the_owning_worker_and_freed_by_the_deletion() {
    let mut a = MemEngine::new(fnat_node(1), 1);
    // Node 2 runs two workers: the connection belongs to the one owning the local port
    // (2000-2127 worker 0, 2128-2255 worker 1), whatever worker owns the client.
    let mut b = MemEngine::new(fnat_node(2), 2);
    let la1 = ferrovs_engine::wire::parse::v4_to_addr(LA1);
    let mut ba = Batcher::new(1, 1000);
    // 130 connections on node 1: local ports 2000-2129, the last two in worker 1's share.
    let mut picks = Vec::new();
    for k in 0..130u16 {
        picks.push(fnat_in(&mut a, 30000 + k, TCP_SYN, 1, 0, S));
    }
    assert_eq!(picks[129].2, 2129);
    for m in a.take_sync(&mut ba, S) {
        b.deliver_sync(&m, S).unwrap();
    }
    assert_eq!(b.counters().sync_installed, 130, "{:?}", b.counters());
    let free = |b: &mut MemEngine, w: usize| b.workers[w].fnat_free_ports(la1, 6);
    assert_eq!((free(&mut b, 0), free(&mut b, 1)), (0, 126), "128 + 2 reserved on the port owners");
    // Replies to either share are translated (handed to the owning worker).
    for k in [0usize, 127, 128, 129] {
        let (rs, la, lport) = picks[k];
        let (i, s) = one(fnat_reply(&mut b, rs, la, lport, TCP_SYN | TCP_ACK, 2 * S));
        assert_eq!((i, s.dst, s.dport), (EXT, CLIENT, 30000 + k as u16), "connection {k}");
    }
    // A synced mapping that collides with a port in use on this node is refused, counted.
    let (_, la2, lport2) = fnat_in(&mut b, 50000, TCP_SYN, 1, 0, 2 * S);
    let clash = ferrovs_engine::cluster::sync::SyncEntry::Conn(ferrovs_engine::cluster::sync::ConnSync {
        proto: 6,
        state: 3,
        fwd: 3,
        data: false,
        client: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 1, 3]),
        cport: 1234,
        vip: ferrovs_engine::wire::parse::v4_to_addr(VIP),
        vport: 80,
        rs: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 2, 10]),
        rport: 80,
        timeout_s: 100,
        proxy_delta: None,
        fnat: Some((ferrovs_engine::wire::parse::v4_to_addr(la2), lport2)),
    });
    let skipped = b.counters().sync_skipped;
    b.deliver_sync(&Batcher::new(1, 1000).encode(&[clash], 2 * S)[0], 2 * S).unwrap();
    assert_eq!(b.counters().sync_skipped, skipped + 1);
    // A NAT-only (version 1) peer's mapping-less entry for a full-NAT service: refused too.
    let mut plain = clash;
    if let ferrovs_engine::cluster::sync::SyncEntry::Conn(c) = &mut plain {
        (c.fwd, c.fnat, c.cport) = (0, None, 1235);
    }
    let v1 = downgrade(&Batcher::new(1, 1000).encode(&[plain], 2 * S).remove(0), 1);
    assert_eq!(b.deliver_sync(&v1, 2 * S), Ok(1));
    assert_eq!(b.counters().sync_skipped, skipped + 2);
    // The connections end on node 1 (expiry): the deletions carry the local port, reach the
    // owning workers, remove the backups and give the reserved ports back.
    let mut msgs = Vec::new();
    for k in 0..20 {
        a.run(1000 * S + k);
        msgs.extend(a.take_sync(&mut ba, 1000 * S + k));
    }
    let dels = entries(&msgs);
    assert_eq!(dels.len(), 130);
    assert!(dels.iter().all(|e| e.lport().is_some()), "{:?}", dels[0]);
    for m in msgs {
        b.deliver_sync(&m, 3 * S).unwrap();
    }
    // Except the four connections node 2 carried traffic for above: adopted, they are node
    // 2's own now (its own expiry ends them), so each worker keeps two ports.
    assert_eq!((free(&mut b, 0), free(&mut b, 1)), (126, 126));
    assert!(fnat_reply(&mut b, picks[1].0, LA1, 2001, TCP_ACK, 4 * S).is_empty(), "backup gone");
    assert_eq!(one(fnat_reply(&mut b, picks[0].0, LA1, 2000, TCP_ACK, 4 * S)).1.dport, 30000, "adopted stays");
}

#[test]
fn older_nodes_version_1_datagrams_still_install() {
    let mut a = MemEngine::new(node(1, RS_COUNT, true), 1);
    let mut b = MemEngine::new(node(2, RS_COUNT, true), 1);
    let rs = nat_syn(&mut a, 40000, TCP_SYN, S);
    let msgs = a.take_sync(&mut Batcher::new(1, 1000), S);
    assert_eq!(msgs[0][4], 5);
    // The same entries as an older node sends them (version 1: no placement block, no
    // full-NAT flag, the same entry layout).
    assert_eq!(b.deliver_sync(&downgrade(&msgs[0], 1), S), Ok(1));
    let out = rs_reply(&mut b, rs, 8080, 40000, TCP_SYN | TCP_ACK, S);
    let (i, s) = one(out);
    assert_eq!((i, s.src, s.dst), (EXT, VIP, CLIENT));
}

/// A payload segment on the FTP control connection from the client's port `cport`: from the
/// client (to VIP:21) or from real server `rs` (to `la`:`lport`); the one frame out, parsed.
// The direction, addresses, ports, sequence numbers and payload of a segment, one argument each, as in `tcp4`.
#[allow(clippy::too_many_arguments)]
fn ftp_seg(
    e: &mut MemEngine,
    cport: u16,
    from_client: bool,
    rs: [u8; 4],
    la: [u8; 4],
    lport: u16,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> common::seg::Seg {
    let flags = TCP_ACK | if data.is_empty() { 0 } else { TCP_PSH };
    let out = if from_client {
        let (ip, mac) = client(C);
        e.inject(EXT, &with_macs(tcp4(ip, cport, VIP, 21, flags, seq, ack, data), mac, LB_EXT), 2 * S)
    } else {
        let rs_mac = [2, 0, 0, 0, 3, rs[3]];
        e.inject(INT, &with_macs(tcp4(rs, 21, la, lport, flags, seq, ack, data), rs_mac, LB_INT), 2 * S)
    };
    one(out).1
}

#[test]
fn ftp_gateway_translation_is_synced_and_a_peer_carries_the_control_connection_on() {
    let mut a = MemEngine::new(fnat_node(1), 1);
    // Handshake and greeting through node 1 (client ISN 1000, server ISN 5000).
    let (ip, mac) = client(C);
    let out = a.inject(EXT, &with_macs(tcp4(ip, 40000, VIP, 21, TCP_SYN, 1000, 0, b""), mac, LB_EXT), S);
    let syn = one(out).1;
    let (rs, la, lport) = (syn.dst, syn.src, syn.sport);
    assert_eq!(la, LA1);
    let rs_mac = [2, 0, 0, 0, 3, rs[3]];
    a.inject(INT, &with_macs(tcp4(rs, 21, la, lport, TCP_SYN | TCP_ACK, 5000, 1001, b""), rs_mac, LB_INT), S);
    ftp_seg(&mut a, 40000, true, rs, la, lport, 1001, 5001, b"");
    ftp_seg(&mut a, 40000, false, rs, la, lport, 5001, 1001, b"220 hi\r\n");
    // PORT names the client; the server is told node 1's local address: a longer line.
    let port = b"PORT 10,0,1,2,156,65\r\n";
    let got = ftp_seg(&mut a, 40000, true, rs, la, lport, 1001, 5009, port);
    assert!(got.payload.starts_with(b"PORT 10,0,2,200,"), "{:?}", String::from_utf8_lossy(&got.payload));
    let delta = got.payload.len() as i32 - port.len() as i32;
    assert_ne!(delta, 0);
    let msgs = a.take_sync(&mut Batcher::new(1, 1000), 2 * S);
    let es = entries(&msgs);
    let seq = es.iter().find_map(|e| match e {
        ferrovs_engine::cluster::sync::SyncEntry::Seq(q) => Some(*q),
        _ => None,
    });
    let q = seq.expect("the rewrite is synced (kind 5)");
    // The active expectation: the server was told node 1's local address and a port reserved
    // there; synced with them and the client's data port (format version 5).
    let told = String::from_utf8_lossy(&got.payload).to_string();
    let f: Vec<u16> = told.trim_end().trim_start_matches("PORT ").split(',').map(|x| x.parse().unwrap()).collect();
    let reserved = f[4] * 256 + f[5];
    let x = es
        .iter()
        .find_map(|e| match e {
            ferrovs_engine::cluster::sync::SyncEntry::Expect(x) => Some(*x),
            _ => None,
        })
        .expect("the full-NAT active expectation is synced");
    assert_eq!(
        (x.port, x.fnat, x.ctl_cport),
        (reserved, Some((ferrovs_engine::wire::parse::v4_to_addr(LA1), 40001)), 40000)
    );
    assert_eq!((q.orig.at, q.orig.before, q.orig.after, q.lport), (1006, 0, delta, Some(lport)));
    assert_eq!((q.reply.before, q.reply.after), (0, 0));
    // Node 1 dies. Node 2 got everything; node 3 (for contrast) only the connection entries.
    let mut b = MemEngine::new(fnat_node(2), 1);
    for m in &msgs {
        b.deliver_sync(m, 2 * S).unwrap();
    }
    assert_eq!(b.counters().sync_skipped, 0);
    let conns: Vec<_> =
        es.iter().filter(|e| !matches!(e, ferrovs_engine::cluster::sync::SyncEntry::Seq(_))).copied().collect();
    let mut c = MemEngine::new(fnat_node(2), 1);
    c.deliver_sync(&Batcher::new(1, 1000).encode(&conns, 2 * S)[0], 2 * S).unwrap();
    // The server's "200" acknowledges the rewritten PORT line (its space): node 2 maps the
    // ack back to the client's space, as node 1 would have.
    let ack_rs = (1023i64 + delta as i64) as u32;
    let r = ftp_seg(&mut b, 40000, false, rs, la, lport, 5009, ack_rs, b"200 PORT ok\r\n");
    assert_eq!((r.dst, r.dport, r.seq, r.ack), (CLIENT, 40000, 5009, 1023));
    let wrong = ftp_seg(&mut c, 40000, false, rs, la, lport, 5009, ack_rs, b"200 PORT ok\r\n");
    assert_eq!(wrong.ack, ack_rs, "without the synced translation the ack is not mapped");
    // The server opens the active data connection to node 1's local address at the reserved
    // port; BGP now routes it to node 2, which expects it (reserved there too): the client
    // sees it come from VIP:20 to the port its PORT named.
    assert_eq!(b.workers[0].fnat_reserved(), 1);
    let data = b.inject(INT, &with_macs(tcp4(rs, 20, LA1, reserved, TCP_SYN, 9000, 0, b""), rs_mac, LB_INT), 2 * S);
    let (i, d) = one(data);
    assert_eq!((i, d.src, d.sport, d.dst, d.dport), (EXT, VIP, 20, CLIENT, 40001));
    assert_eq!(b.workers[0].fnat_reserved(), 0, "the data connection owns the port now");
    // The client's next command leaves in the server's space, and node 2's gateway, which
    // goes on with the session, rewrites the reply to it (the VIP announced, not the server).
    let pasv = ftp_seg(&mut b, 40000, true, rs, la, lport, 1023, 5022, b"PASV\r\n");
    assert_eq!((pasv.src, pasv.sport, pasv.dst, pasv.seq, pasv.ack), (LA1, lport, rs, ack_rs, 5022));
    assert_eq!(pasv.payload, b"PASV\r\n");
    let r = ftp_seg(
        &mut b,
        40000,
        false,
        rs,
        la,
        lport,
        5022,
        ack_rs + 6,
        b"227 Entering Passive Mode (10,0,2,10,117,49)\r\n",
    );
    assert_eq!(r.ack, 1029);
    assert!(
        String::from_utf8_lossy(&r.payload).contains("(10,0,1,100,"),
        "the VIP announced: {:?}",
        String::from_utf8_lossy(&r.payload)
    );
}

/// The FTP gateway keeps back a FIN it cannot send yet (the start of a 227 line it must
/// rewrite: held whole, or cut off a reply it sends without it) and puts the state back; the
/// peers get the state that stands, not the FIN's (FIN_WAIT: a backup that takes over would
/// expire a live control connection on the FIN_WAIT timeout). Before, the connection was synced
/// on the FIN's transition, before the gateway had decided.
#[test]
fn a_fin_the_ftp_gateway_keeps_back_is_not_synced() {
    let (mut a, mut b, mut ba) = fnat_pair();
    let (rs, la, lport) = fnat_ftp_open(&mut a, 40000);
    let rs_mac = [2, 0, 0, 0, 3, rs[3]];
    let mut synced = Vec::new();
    // The last state node 1 synced for the control connection, the state node 1 has and
    // the one node 2's backup has, after delivering what node 1 sent.
    let mut states = |a: &mut MemEngine, b: &mut MemEngine| {
        for m in a.take_sync(&mut ba, 2 * S) {
            b.deliver_sync(&m, 2 * S).unwrap();
            synced.extend(entries(&[m]));
        }
        let last = synced.iter().rev().find_map(|e| match e {
            ferrovs_engine::cluster::sync::SyncEntry::Conn(c) if c.cport == 40000 && c.vport == 21 => Some(c.state),
            _ => None,
        });
        let name = |s: u8| ferrovs_engine::flow::tcpstate::TcpState::from_u8(s).map(|s| s.name());
        let state =
            |e: &MemEngine| e.workers[0].core().list_conns().iter().map(|c| c.state.clone()).collect::<Vec<_>>();
        (last.and_then(name).map(str::to_string), state(a), state(b))
    };
    let est = || (Some("ESTABLISHED".to_string()), vec!["ESTABLISHED".to_string()], vec!["ESTABLISHED".to_string()]);
    assert_eq!(states(&mut a, &mut b), est(), "the handshake");
    ftp_seg(&mut a, 40000, true, rs, la, lport, 1001, 5001, b"NOOP\r\nPASV\r\n");
    // The server's FIN comes with "200 OK" and the start of the 227: the 200 goes, without it.
    let fin = TCP_ACK | TCP_PSH | TCP_FIN;
    let reply = |seq: u32, data: &[u8]| with_macs(tcp4(rs, 21, la, lport, fin, seq, 1013, data), rs_mac, LB_INT);
    let (_, s) = one(a.inject(INT, &reply(5001, b"200 OK\r\n227 Entering Pass"), 2 * S));
    assert_eq!((s.payload.as_slice(), s.flags & TCP_FIN), (&b"200 OK\r\n"[..], 0));
    assert_eq!(states(&mut a, &mut b), est(), "a FIN kept back from a reply that went");
    // Its retransmission from the 227 on, still incomplete: held whole, FIN and all.
    assert!(a.inject(INT, &reply(5009, b"227 Entering Pass"), 2 * S).is_empty());
    assert_eq!(states(&mut a, &mut b), est(), "a FIN held with its whole segment");
    // The complete line with the FIN: it goes, and the peers learn the FIN's state.
    let line = format!("227 Entering Passive Mode (10,0,2,{},117,49)\r\n", rs[3]);
    let (_, s) = one(a.inject(INT, &reply(5009, line.as_bytes()), 2 * S));
    assert_eq!(s.flags & TCP_FIN, TCP_FIN);
    let fw = || (Some("FIN_WAIT".to_string()), vec!["FIN_WAIT".to_string()], vec!["FIN_WAIT".to_string()]);
    assert_eq!(states(&mut a, &mut b), fw(), "a FIN that went");
}

#[test]
fn full_nat_passive_data_on_a_peer_leaves_from_the_control_connections_local_address() {
    let (mut a, mut b, mut ba) = fnat_pair();
    let (ip, mac) = client(C);
    let ctl = fnat_ftp_open(&mut a, 40000);
    let rs = ctl.0;
    for m in a.take_sync(&mut ba, S) {
        b.deliver_sync(&m, S).unwrap();
    }
    // ECMP sends the client's data SYN to node 2 before the expectation reached it: dropped
    // (a connection from node 2's own address would be refused by the server), counted.
    let data_syn = |e: &mut MemEngine| {
        e.inject(EXT, &with_macs(tcp4(ip, 40001, VIP, 30001, TCP_SYN, 7000, 0, b""), mac, LB_EXT), 2 * S)
    };
    assert!(data_syn(&mut b).is_empty());
    assert_drops(&b, &[(DropReason::NoService, 1)]);
    // PASV on node 1; its expectation is synced; the retransmitted SYN leaves node 2 from
    // node 1's local address (the control connection's), as the server requires.
    assert_eq!(fnat_ftp_pasv(&mut a, 40000, ctl, 30001), 30001);
    for m in a.take_sync(&mut ba, 2 * S) {
        b.deliver_sync(&m, 2 * S).unwrap();
    }
    let (i, s) = one(data_syn(&mut b));
    assert_eq!((i, s.src, s.dst, s.dport), (INT, LA1, rs, 30001));
    // Its port comes from node 2's slot of node 1's ports (2000-2255: half way plus 2/256 of
    // the other half), not from where node 1 allocates next (2001): no clash before the syncs
    // cross.
    assert_eq!(s.sport, 2129);
}

/// Nodes 1 and 2 of the full-NAT cluster, and the batcher node 1's sync goes out through.
fn fnat_pair() -> (MemEngine, MemEngine, Batcher) {
    (MemEngine::new(fnat_node(1), 1), MemEngine::new(fnat_node(2), 1), Batcher::new(1, 1000))
}

/// An FTP control connection from the client's port `cport` through full-NAT node `e`,
/// handshake done: (real server, local address, local port).
fn fnat_ftp_open(e: &mut MemEngine, cport: u16) -> ([u8; 4], [u8; 4], u16) {
    let (ip, mac) = client(C);
    let out = e.inject(EXT, &with_macs(tcp4(ip, cport, VIP, 21, TCP_SYN, 1000, 0, b""), mac, LB_EXT), S);
    let syn = one(out).1;
    let (rs, la, lport) = (syn.dst, syn.src, syn.sport);
    let rs_mac = [2, 0, 0, 0, 3, rs[3]];
    e.inject(INT, &with_macs(tcp4(rs, 21, la, lport, TCP_SYN | TCP_ACK, 5000, 1001, b""), rs_mac, LB_INT), S);
    ftp_seg(e, cport, true, rs, la, lport, 1001, 5001, b"");
    (rs, la, lport)
}

/// PASV on that control connection, answered by its real server with port `port`; the port
/// the client is told at the VIP.
fn fnat_ftp_pasv(e: &mut MemEngine, cport: u16, (rs, la, lport): ([u8; 4], [u8; 4], u16), port: u16) -> u16 {
    ftp_seg(e, cport, true, rs, la, lport, 1001, 5001, b"PASV\r\n");
    let reply = format!("227 Entering Passive Mode (10,0,2,{},{},{})\r\n", rs[3], port >> 8, port & 0xff);
    let r = ftp_seg(e, cport, false, rs, la, lport, 5001, 1007, reply.as_bytes());
    let text = String::from_utf8_lossy(&r.payload).to_string();
    let f: Vec<u16> =
        text.split(['(', ')']).nth(1).expect("227 (h,h,h,h,p,p)").split(',').map(|x| x.parse().unwrap()).collect();
    assert_eq!(&f[..4], &[10, 0, 1, 100], "the VIP announced: {text:?}");
    f[4] * 256 + f[5]
}

#[test]
fn a_used_passive_expectation_leaves_the_peers_and_never_takes_a_later_sessions_data() {
    // One client address (so one real server: the cluster places by Maglev over it), FTP
    // sessions through node 1. Node 2, where BGP/ECMP may send any data connection, must send
    // a later session's data connection where that session's server listens, not where an
    // earlier session's did: the earlier session's synced expectation, used on node 1, must
    // not linger on node 2 first in line under the same key. Two ways it goes: the used data
    // connection's sync removes it, and (that datagram lost) the newer announcement of the
    // key supersedes it.
    for lose_data_sync in [false, true] {
        let (mut a, mut b, mut ba) = fnat_pair();
        let (ip, mac) = client(C);
        let data_syn = |e: &mut MemEngine, sport: u16, port: u16| {
            e.inject(EXT, &with_macs(tcp4(ip, sport, VIP, port, TCP_SYN, 7000, 0, b""), mac, LB_EXT), 2 * S)
        };
        // Session 0 holds VIP port 30001 (its data connection not yet come); session 1's
        // server also says 30001, which node 1 moves to VIP port 30002.
        let s0 = fnat_ftp_open(&mut a, 40000);
        assert_eq!(fnat_ftp_pasv(&mut a, 40000, s0, 30001), 30001);
        let s1 = fnat_ftp_open(&mut a, 40002);
        assert_eq!(fnat_ftp_pasv(&mut a, 40002, s1, 30001), 30002);
        for m in a.take_sync(&mut ba, 2 * S) {
            b.deliver_sync(&m, 2 * S).unwrap();
        }
        // Session 1's data connection reaches node 1 and uses the expectation there.
        let (i, d) = one(data_syn(&mut a, 50001, 30002));
        assert_eq!((i, d.dst, d.dport), (INT, s1.0, 30001));
        let synced = a.take_sync(&mut ba, 2 * S);
        if !lose_data_sync {
            for m in &synced {
                b.deliver_sync(m, 2 * S).unwrap();
            }
            // Node 2's copy went with it: a SYN to VIP port 30002 finds nothing there now.
            assert!(data_syn(&mut b, 50009, 30002).is_empty());
        }
        // Session 2's server says 30002: free again on node 1, announced as it is.
        let s2 = fnat_ftp_open(&mut a, 40004);
        assert_eq!(fnat_ftp_pasv(&mut a, 40004, s2, 30002), 30002);
        for m in a.take_sync(&mut ba, 3 * S) {
            b.deliver_sync(&m, 3 * S).unwrap();
        }
        // Its data connection reaches node 2: to port 30002, where the server listens for it
        // (session 1's copy would send it to 30001: refused, or another session's socket).
        let (i, d) = one(data_syn(&mut b, 50003, 30002));
        assert_eq!((i, d.dst, d.dport), (INT, s2.0, 30002), "lose_data_sync={lose_data_sync}");
        // Nothing of session 1 is left on node 2 to take another one; session 0's still waits.
        assert!(data_syn(&mut b, 50005, 30002).is_empty());
        let (i, d) = one(data_syn(&mut b, 50007, 30001));
        assert_eq!((i, d.dst, d.dport), (INT, s0.0, 30001));
    }
}

#[test]
fn a_peers_expectation_never_displaces_one_of_a_session_this_node_carries() {
    // Sessions of one client through node 1 and through node 2 at once, both servers saying
    // port 30001 (neither node saw the other's): node 2 keeps its own session's expectation
    // and refuses node 1's (counted); a data connection reaching node 2 is its own session's,
    // from its own local address.
    let (mut a, mut b, mut ba) = fnat_pair();
    let (ip, mac) = client(C);
    let mine = fnat_ftp_open(&mut b, 40000);
    assert_eq!(fnat_ftp_pasv(&mut b, 40000, mine, 30001), 30001);
    let theirs = fnat_ftp_open(&mut a, 40002);
    assert_eq!(fnat_ftp_pasv(&mut a, 40002, theirs, 30001), 30001);
    let skipped = b.counters().sync_skipped;
    for m in a.take_sync(&mut ba, 2 * S) {
        b.deliver_sync(&m, 2 * S).unwrap();
    }
    assert_eq!(b.counters().sync_skipped, skipped + 1, "the peer's expectation refused");
    let out = b.inject(EXT, &with_macs(tcp4(ip, 50001, VIP, 30001, TCP_SYN, 7000, 0, b""), mac, LB_EXT), 2 * S);
    let (i, d) = one(out);
    assert_eq!((i, d.src, d.dst, d.dport), (INT, LA2, mine.0, 30001));
}

#[test]
fn full_nat_active_reservation_follows_the_data_connection_or_expires() {
    let (mut a, mut b, mut ba) = fnat_pair();
    let la1 = ferrovs_engine::wire::parse::v4_to_addr(LA1);
    let (ip, mac) = client(C);
    let syn = one(a.inject(EXT, &with_macs(tcp4(ip, 40000, VIP, 21, TCP_SYN, 1000, 0, b""), mac, LB_EXT), S)).1;
    let (rs, la, lport) = (syn.dst, syn.src, syn.sport);
    let rs_mac = [2, 0, 0, 0, 3, rs[3]];
    a.inject(INT, &with_macs(tcp4(rs, 21, la, lport, TCP_SYN | TCP_ACK, 5000, 1001, b""), rs_mac, LB_INT), S);
    ftp_seg(&mut a, 40000, true, rs, la, lport, 1001, 5001, b"");
    let port_line = |p: u16| format!("PORT 10,0,1,2,{},{}\r\n", p >> 8, p & 0xff).into_bytes();
    let told = |seg: &common::seg::Seg| {
        let t = String::from_utf8_lossy(&seg.payload).to_string();
        let f: Vec<u16> = t.trim_end().trim_start_matches("PORT ").split(',').map(|x| x.parse().unwrap()).collect();
        f[4] * 256 + f[5]
    };
    let l1 = port_line(40001);
    let r1 = told(&ftp_seg(&mut a, 40000, true, rs, la, lport, 1001, 5001, &l1));
    for m in a.take_sync(&mut ba, 2 * S) {
        b.deliver_sync(&m, 2 * S).unwrap();
    }
    let free = |b: &mut MemEngine| b.workers[0].fnat_free_ports(la1, 6);
    let free0 = free(&mut b);
    assert_eq!(b.workers[0].fnat_reserved(), 1);
    // Node 1 lives: the server's data connection reaches it and is synced; node 2's backup
    // of it takes the reservation over (not refused as a port in use).
    let out = a.inject(INT, &with_macs(tcp4(rs, 20, LA1, r1, TCP_SYN, 9000, 0, b""), rs_mac, LB_INT), 2 * S);
    assert_eq!(one(out).1.dport, 40001);
    let skipped = b.counters().sync_skipped;
    for m in a.take_sync(&mut ba, 2 * S) {
        b.deliver_sync(&m, 2 * S).unwrap();
    }
    assert_eq!(b.counters().sync_skipped, skipped, "{:?}", b.counters());
    assert_eq!((b.workers[0].fnat_reserved(), free(&mut b)), (0, free0), "the port moved to the backup connection");
    // A second PORT whose data connection never comes: node 2's reservation ends with the
    // expectation's timeout and the port is free again.
    let l2 = port_line(40002);
    let r2 = told(&ftp_seg(&mut a, 40000, true, rs, la, lport, 1001 + l1.len() as u32, 5001, &l2));
    assert_ne!(r2, r1);
    for m in a.take_sync(&mut ba, 3 * S) {
        b.deliver_sync(&m, 3 * S).unwrap();
    }
    assert_eq!((b.workers[0].fnat_reserved(), free(&mut b)), (1, free0 - 1));
    b.run(400 * S);
    // Both ports free again (the first data connection's backup, a SYN that never went on,
    // timed out too): only the control connection's port is held.
    assert_eq!((b.workers[0].fnat_reserved(), free(&mut b)), (0, free0 + 1));
    // A real server's SYN to it now finds nothing: dropped, counted.
    let out = b.inject(INT, &with_macs(tcp4(rs, 20, LA1, r2, TCP_SYN, 9100, 0, b""), rs_mac, LB_INT), 400 * S);
    assert!(out.is_empty());
}

#[test]
fn the_sync_fuzz_targets_seeds_parse() {
    // The committed seeds of engine/fuzz's `sync` target: every unsigned one parses as is, the
    // `*-unsigned-*` ones once signed by the target's key (as the target signs them).
    use ferrovs_engine::cluster::sync::{parse, parse_with, SyncEntry, SyncKey};
    let key = SyncKey::new(b"fuzz sync key, 32 bytes of it..!");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/sync");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&path).unwrap();
        let m = if name.contains("-unsigned-") {
            let mut signed = data.clone();
            signed.extend_from_slice(&key.tag(&data));
            parse_with(&signed, Some(&key))
        } else {
            parse(&data)
        };
        let m = m.unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert!(!m.entries.is_empty(), "seed {name}");
        if name.contains("fnat-active") {
            assert!(
                m.entries.iter().any(|e| matches!(e, SyncEntry::Expect(x) if x.fnat.is_some())),
                "seed {name}: {m:?}"
            );
            assert!(m.placement.is_some());
        }
        n += 1;
    }
    assert!(n >= 12, "{n} seeds in {}", dir.display());
}

#[test]
fn placement_is_the_same_on_every_node_and_follows_reloads() {
    use ferrovs_engine::cluster::sync::Placement;
    let a = MemEngine::new(fnat_node(1), 2);
    let mut b = MemEngine::new(fnat_node(2), 2);
    // Node ids differ, placement does not.
    assert_eq!(a.sync_placement(), b.sync_placement());
    assert_eq!(a.sync_placement().workers, 2);
    assert_eq!((a.sync_placement().port_lo, a.sync_placement().port_hi), (2000, 2255));
    // Another worker count is another placement.
    let c = MemEngine::new(fnat_node(1), 4);
    let d = a.sync_placement().differences(&c.sync_placement()).unwrap();
    assert_eq!(d, "workers 2 here, 4 there");
    // A reload that gives node 1 a second local address: the placement follows (a node
    // started with the new tables agrees with it), and a node not reloaded disagrees.
    let grown = |id: u8| {
        let t = fnat_node_text(id)
            .replace("local_addresses = [\"10.0.2.200\"]", "local_addresses = [\"10.0.2.200\", \"10.0.2.202\"]")
            .replace("[\"10.0.2.200\", \"10.0.2.201\"]", "[\"10.0.2.200\", \"10.0.2.201\", \"10.0.2.202\"]");
        ferrovs_cfg::Config::from_str(&t, "grown.toml").expect("config parses")
    };
    let before = b.sync_placement();
    b.reload(grown(2), S);
    let after = b.sync_placement();
    assert_ne!(after, before);
    assert_eq!(after, MemEngine::new(grown(1), 2).sync_placement());
    assert!(before.differences(&after).unwrap().contains("[[cluster.node]] tables differ"));
    assert_eq!(Placement { nodes: before.nodes, ..after }, before);
}

/// One-packet scheduling (`one_packet`): a datagram's connection lives for that datagram and
/// is never synced, neither its creation nor its removal (IPVS's `ip_vs_sync_conn` skips
/// one-packet connections); a plain UDP service's connection is.
#[test]
fn one_packet_connections_are_not_synced() {
    let mut t = String::from("[[neighbor]]\naddress = \"10.0.2.10\"\nmac = \"02:00:00:00:03:0a\"\n\n");
    for (name, port, ops) in [("ops", 514, "one_packet = true\n"), ("plain", 53, "")] {
        t += &format!(
            "[[service]]\nname = \"{name}\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\nports = [{port}]\nforward = \"nat\"\n{ops}\
             [[service.real_server]]\naddress = \"10.0.2.10\"\n\n"
        );
    }
    t += "[cluster]\nnode_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.250\"]\n";
    let mut a = MemEngine::new(config(&t), 1);
    let mut ba = Batcher::new(1, 1000);
    for k in 0..3 {
        let d = from_client(udp4(CLIENT, 5140, VIP, 514, b"<13>x"));
        assert_eq!(a.inject(EXT, &d, S + k).len(), 1);
    }
    a.run(2 * S);
    assert!(entries(&a.take_sync(&mut ba, 2 * S)).is_empty(), "nothing synced for one-packet connections");
    assert_eq!((a.counters().flows_created, a.counters().flows_active), (3, 0));
    assert_eq!(a.inject(EXT, &from_client(udp4(CLIENT, 5353, VIP, 53, b"q")), 3 * S).len(), 1);
    assert_eq!(entries(&a.take_sync(&mut ba, 3 * S)).len(), 1, "the plain service's connection");
}

/// A peer's backup connection is invisible to the schedulers until adopted, across a reload
/// that remaps every connection too: before, the remap counted it, and its adoption counted
/// it again (two connections for one, and the second never taken off).
#[test]
fn a_backup_connection_is_counted_once_across_a_remapping_reload() {
    use ferrovs_sched::ConnStats;
    let (_a, mut b, rs) = nat_connection_synced();
    // Services reordered: every connection's service index changes (a remap).
    let mut cfg = node(2, RS_COUNT, true);
    cfg.services.swap(0, 1);
    b.reload(cfg, S + 1);
    assert_eq!(b.counters().snapshots_remapped, 1);
    let nat = b.snapshot.services.iter().position(|s| s.name == "nat").unwrap();
    let d = (rs - 10) as usize;
    let count = |b: &MemEngine| {
        let c = &b.snapshot.conn_counts[nat];
        c.active(d) + c.inactive(d)
    };
    assert_eq!(count(&b), 0, "backup state counts nothing");
    assert_eq!(rs_reply(&mut b, rs, 8080, 40000, TCP_ACK | TCP_PSH, 2 * S).len(), 1);
    assert_eq!(count(&b), 1, "adopted: one connection");
    assert_eq!(b.snapshot.conn_counts[nat].active(d), 1);
}
