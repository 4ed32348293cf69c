//! Source access lists (`allow_from`, `deny_from` on a service): a refused source's first
//! packet is a counted `source_denied` drop (the SYN proxy does not answer it either); a
//! reload that changes the lists removes the connections they now refuse.

mod common;
use common::seg::drops;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};

/// A NAT web service (TCP 80, SYN proxy `proxy`), a UDP one (53) and an IPv6 one, each
/// with `lists` (TOML lines; the IPv6 service gets `lists6`).
fn services(lists: &str, lists6: &str, proxy: &str) -> ferrovs_cfg::Config {
    config(&format!(
        r#"
[[service]]
name = "web"
vip = "10.0.1.100"
ports = [80]
scheduler = "rr"
forward = "nat"
syn_proxy = "{proxy}"
{lists}

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
scheduler = "rr"
forward = "nat"
{lists}

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web6"
vip = "fd00:1::100"
ports = [80]
scheduler = "rr"
forward = "nat"
{lists6}

[[service.real_server]]
address = "fd00:2::2"
"#
    ))
}

const OTHER: [u8; 4] = [10, 0, 1, 7];

fn syn(e: &mut MemEngine, src: [u8; 4], sport: u16, now: u64) -> Vec<(usize, Vec<u8>)> {
    let cmac = [2, 0, 0, 0, 1, src[3]];
    e.inject(EXT, &with_macs(tcp4(src, sport, VIP, 80, TCP_SYN, 1, 0, b""), cmac, LB_EXT), now)
}

/// Deny first, then the allow list: TCP and UDP alike, IPv6 by its own list; nothing
/// created for a refused source, and nothing answered.
#[test]
fn refused_sources_open_nothing() {
    let lists = "allow_from = [\"10.0.1.0/24\"]\ndeny_from = [\"10.0.1.7\"]";
    for proxy in ["off", "on"] {
        let mut e = MemEngine::new(services(lists, "deny_from = [\"fd00:1::/64\"]", proxy), 1);
        assert!(syn(&mut e, OTHER, 40000, S).is_empty(), "syn_proxy {proxy}: denied, not even a cookie");
        assert_eq!(e.counters().cookies_sent, 0);
        // Outside the allow list.
        let cmac = [2, 0, 0, 0, 1, 9];
        assert!(e
            .inject(EXT, &with_macs(tcp4([10, 0, 9, 9], 40001, VIP, 80, TCP_SYN, 1, 0, b""), cmac, LB_EXT), S)
            .is_empty());
        // Allowed: forwarded (or answered with a cookie by the SYN proxy).
        let out = syn(&mut e, CLIENT, 40002, S);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, if proxy == "on" { EXT } else { INT });
        // UDP.
        assert!(e.inject(EXT, &with_macs(udp4(OTHER, 5000, VIP, 53, b"q"), [2, 0, 0, 0, 1, 7], LB_EXT), S).is_empty());
        assert_eq!(e.inject(EXT, &from_client(udp4(CLIENT, 5000, VIP, 53, b"q")), S).len(), 1);
        // IPv6: its own list.
        assert!(e.inject(EXT, &from_client(tcp6(C6, 40003, VIP6, 80, TCP_SYN, 1, 0, b"")), S).is_empty());
        assert_eq!(drops(&e), vec![("source_denied", 4)], "syn_proxy {proxy}");
        // And per service.
        assert_eq!(e.refused(0), vec![("source_denied", 2)], "web");
        assert_eq!(e.refused(1), vec![("source_denied", 1)], "dns");
        assert_eq!(e.refused(2), vec![("source_denied", 1)], "web6");
        let c = e.counters();
        assert_eq!(c.flows_created, if proxy == "on" { 1 } else { 2 }, "only the allowed ones");
    }
}

/// A reload that changes the lists removes the connections they now refuse (counted),
/// and keeps the others; one that leaves them alone keeps every connection.
#[test]
fn a_reload_applies_changed_lists_to_open_connections() {
    let mut e = MemEngine::new(services("", "", "off"), 1);
    assert_eq!(syn(&mut e, OTHER, 40000, S).len(), 1);
    assert_eq!(syn(&mut e, CLIENT, 40001, S).len(), 1);
    assert_eq!(e.inject(EXT, &from_client(udp4(CLIENT, 5000, VIP, 53, b"q")), S).len(), 1);
    assert_eq!(e.counters().flows_active, 3);
    // Unchanged lists (another weight): nothing removed.
    let same = services("", "", "off");
    e.reload(same, 2 * S);
    assert_eq!((e.counters().flows_active, e.counters().acl_removed), (3, 0));
    e.reload(services("deny_from = [\"10.0.1.7/32\"]", "", "off"), 3 * S);
    let c = e.counters();
    assert_eq!((c.flows_active, c.acl_removed), (2, 1), "the denied client's connection goes");
    // Its next segment finds nothing; the allowed client's goes on.
    let cmac = [2, 0, 0, 0, 1, 7];
    assert!(e.inject(EXT, &with_macs(tcp4(OTHER, 40000, VIP, 80, TCP_ACK, 2, 1, b""), cmac, LB_EXT), 3 * S).is_empty());
    assert_eq!(e.inject(EXT, &from_client(tcp4(CLIENT, 40001, VIP, 80, TCP_ACK, 2, 1, b"")), 3 * S).len(), 1);
    assert_eq!(drops(&e), vec![("no_flow", 1)]);
}

/// `[engine] deny_from` holds for every service, both families, as if in each service's
/// `deny_from`; taking it away by a reload lets the source in again.
#[test]
fn the_engine_deny_list_holds_for_every_service() {
    let with = |deny: &[&str]| {
        let mut c = services("", "", "off");
        c.engine.deny_from = deny.iter().map(|n| n.parse().unwrap()).collect();
        c
    };
    let mut e = MemEngine::new(with(&["10.0.1.7", "fd00:1::/64"]), 1);
    assert!(syn(&mut e, OTHER, 40000, S).is_empty());
    assert!(e.inject(EXT, &with_macs(udp4(OTHER, 5000, VIP, 53, b"q"), [2, 0, 0, 0, 1, 7], LB_EXT), S).is_empty());
    assert!(e.inject(EXT, &from_client(tcp6(C6, 40003, VIP6, 80, TCP_SYN, 1, 0, b"")), S).is_empty());
    assert_eq!(syn(&mut e, CLIENT, 40001, S).len(), 1, "another source");
    assert_eq!(drops(&e), vec![("source_denied", 3)]);
    e.reload(with(&[]), 2 * S);
    assert_eq!(syn(&mut e, OTHER, 40002, 2 * S).len(), 1, "let in again");
    assert_eq!(e.counters().acl_removed, 0, "the allowed client's connection stayed");
}

/// `source_conn_rate` / `source_conn_burst`: a client's burst, then its rate; another
/// client keeps its own; over the workers each has its share.
#[test]
fn source_conn_rate_paces_each_client() {
    let cfg = |lines: &str| services(lines, "", "off");
    let mut e = MemEngine::new(cfg("source_conn_rate = 2\nsource_conn_burst = 3"), 1);
    let passed = (0..6).filter(|i| syn(&mut e, OTHER, 40000 + i, S).len() == 1).count();
    assert_eq!(passed, 3, "the burst");
    assert_eq!(syn(&mut e, CLIENT, 40100, S).len(), 1, "another client");
    // Half a second: one more token.
    let passed = (0..4).filter(|i| syn(&mut e, OTHER, 40010 + i, S + S / 2).len() == 1).count();
    assert_eq!(passed, 1, "the rate");
    // UDP of the same service set-up has its own limit.
    let cmac = [2, 0, 0, 0, 1, 7];
    let udp =
        (0..5).filter(|i| e.inject(EXT, &with_macs(udp4(OTHER, 5000 + i, VIP, 53, b"q"), cmac, LB_EXT), S).len() == 1);
    assert_eq!(udp.count(), 3);
    assert_eq!(drops(&e), vec![("source_rate", 3 + 3 + 2)]);
    assert_eq!((e.refused(0), e.refused(1)), (vec![("source_rate", 6)], vec![("source_rate", 2)]));
    // A reload with another rate starts over; one with the same keeps the buckets.
    e.reload(cfg("source_conn_rate = 2\nsource_conn_burst = 3"), 2 * S);
    assert_eq!((0..4).filter(|i| syn(&mut e, OTHER, 40020 + i, S + S / 2).len() == 1).count(), 0, "kept");
    assert_eq!(e.refused(0), vec![("source_rate", 10)], "the service's counts survive a reload");
    e.reload(cfg("source_conn_rate = 1"), 2 * S);
    assert_eq!((0..4).filter(|i| syn(&mut e, OTHER, 40030 + i, 2 * S).len() == 1).count(), 1, "burst = rate");
    // Two workers: a client's connections are all its owner's, which holds the whole limit
    // (whichever worker the NIC delivers them to).
    let mut e = MemEngine::new(cfg("source_conn_rate = 2\nsource_conn_burst = 3"), 2);
    let passed = (0..40).filter(|i| syn(&mut e, OTHER, 41000 + i, S).len() == 1).count();
    assert_eq!(passed, 3);
}

/// With the SYN proxy a client's tokens are spent by completed handshakes only: SYNs (as a
/// spoofer would send in its name) are answered with cookies and spend none.
#[test]
fn the_syn_proxy_spends_tokens_on_proven_clients_only() {
    let mut e = MemEngine::new(services("source_conn_rate = 1\nsource_conn_burst = 1", "", "on"), 1);
    let cmac = [2, 0, 0, 0, 1, 7];
    let mut cookies = Vec::new();
    for i in 0..10u16 {
        let out = syn(&mut e, OTHER, 42000 + i, S);
        assert_eq!(out.len(), 1, "a cookie");
        let f = &out[0].1;
        cookies.push(u32::from_be_bytes([f[38], f[39], f[40], f[41]]));
    }
    let ack = |e: &mut MemEngine, i: u16| {
        let seg = tcp4(OTHER, 42000 + i, VIP, 80, TCP_ACK, 2, cookies[i as usize].wrapping_add(1), b"");
        e.inject(EXT, &with_macs(seg, cmac, LB_EXT), S)
    };
    let out = ack(&mut e, 9);
    assert_eq!(out.len(), 1, "the proven client's connection opens: {out:?}");
    assert_eq!(out[0].0, INT);
    assert!(ack(&mut e, 8).is_empty(), "its second, in the same second, is over the rate");
    assert_eq!(drops(&e), vec![("source_rate", 1)]);
}

/// Every refusal of a new connection is counted for its service as well as for the worker:
/// here a service whose only real server is quiesced (weight 0) refuses with
/// `no_real_server`, and a service that admits the client has nothing counted.
#[test]
fn refusals_are_counted_per_service() {
    let mut cfg = services("", "", "off");
    cfg.services[0].real_servers[0].weight = 0;
    let mut e = MemEngine::new(cfg, 2);
    for i in 0..3 {
        assert!(syn(&mut e, OTHER, 40000 + i, S).is_empty());
    }
    assert_eq!(e.inject(EXT, &from_client(udp4(CLIENT, 5000, VIP, 53, b"q")), S).len(), 1);
    assert_eq!(drops(&e), vec![("no_real_server", 3)]);
    assert_eq!(e.refused(0), vec![("no_real_server", 3)]);
    assert!(e.refused(1).is_empty() && e.refused(2).is_empty());
}
