//! `[cluster]`: parsing, defaults, validation errors with their line, round trip.

use ferrovs_cfg::Config;

const BASE: &str = "[engine]\nbackend = \"memory\"\n";

fn cluster(body: &str) -> String {
    format!("{BASE}[cluster]\n{body}")
}

#[test]
fn defaults_and_protocol_names() {
    let c = Config::from_str(
        &cluster("node_id = 2\nsync_address = \"10.9.0.2\"\npeers = [\"10.9.0.1\", \"10.9.0.3\"]\n"),
        "c",
    )
    .unwrap();
    let k = c.cluster.as_ref().unwrap();
    assert_eq!(k.node_id, 2);
    assert_eq!(k.peers.len(), 2);
    assert_eq!(k.sync_port, 8848);
    assert_eq!(k.sync_refresh, 10);
    assert_eq!(k.sync_rate, 1000);
    assert_eq!(k.drain_timeout, 30);
    assert_eq!(k.bird_socket.to_str(), Some("/run/bird/bird.ctl"));
    assert_eq!(k.protocol_for("10.0.0.100".parse().unwrap()), "fvs_10_0_0_100");
    assert_eq!(k.protocol_for("fd00::1:100".parse().unwrap()), "fvs_fd00__1_100");
    // Round trip through the canonical text.
    assert_eq!(Config::from_str(&c.to_toml(), "rt").unwrap(), c);
    // Without [cluster]: none, and services keep wlc as default.
    assert!(Config::from_str(BASE, "x").unwrap().cluster.is_none());
}

#[test]
fn services_of_a_cluster_default_to_mh() {
    let text = format!(
        "{}\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\nforward = \"dr\"\n",
        cluster("node_id = 1\nsync_address = \"10.9.0.1\"\nmulticast_group = \"239.1.1.1\"\n")
    );
    let c = Config::from_str(&text, "c").unwrap();
    assert_eq!(c.services[0].scheduler, "mh");
    assert_eq!(Config::from_str(&c.to_toml(), "rt").unwrap(), c);
}

#[test]
fn errors_name_the_line() {
    let ok = "node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n";
    let svc = |extra: &str| format!("{}[[service]]\nname = \"s\"\nvip = \"10.0.0.100\"\n{extra}", cluster(ok));
    let cases: Vec<(String, usize, &str)> = vec![
        (
            cluster("node_id = 0\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n"),
            4,
            "node_id must be between 1 and 255",
        ),
        (cluster("node_id = 256\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n"), 4, "node_id"),
        (cluster("sync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n"), 3, "missing field `node_id`"),
        (cluster("node_id = 1\npeers = [\"10.9.0.2\"]\n"), 3, "missing field `sync_address`"),
        (cluster("node_id = 1\nsync_address = \"10.9.0.1\"\n"), 3, "needs peers"),
        (cluster("node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.1\"]\n"), 6, "own sync_address"),
        (cluster("node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"fd00::2\"]\n"), 6, "address family"),
        (
            cluster("node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\", \"10.9.0.2\"]\n"),
            6,
            "listed twice",
        ),
        (
            cluster("node_id = 1\nsync_address = \"10.9.0.1\"\nmulticast_group = \"10.9.0.9\"\n"),
            6,
            "must be a multicast",
        ),
        (
            cluster("node_id = 1\nsync_address = \"239.0.0.1\"\npeers = [\"10.9.0.2\"]\n"),
            5,
            "unicast address of this node",
        ),
        (cluster(&format!("{ok}sync_port = 0\n")), 7, "sync_port must be between 1 and 65535"),
        (cluster(&format!("{ok}sync_rate = 1\n")), 7, "sync_rate"),
        (cluster(&format!("{ok}bird_protocol = \"vip\"\n")), 7, "must contain {vip}"),
        (cluster(&format!("{ok}bird_protocol = \"fvs-{{vip}}\"\n")), 7, "BIRD protocol name"),
        (cluster(&format!("{ok}bird_protocol = \"1_{{vip}}\"\n")), 7, "start with a letter"),
        (cluster(&format!("{ok}bird_socket = \"\"\n")), 7, "bird_socket must not be empty"),
        (cluster(&format!("{ok}drain_timeout = -1\n")), 7, "drain_timeout"),
        (cluster(&format!("{ok}gossip = true\n")), 7, "unknown field `gossip`"),
        (svc("scheduler = \"wlc\"\n"), 10, "needs scheduler \"mh\""),
        (svc("[[service.real_server]]\naddress = \"10.0.2.2\"\nupper = 10\n"), 12, "not allowed in a [cluster]"),
    ];
    for (text, line, needle) in &cases {
        let e = Config::from_str(text, "c.toml").expect_err(text);
        assert_eq!(e.line, Some(*line), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
        assert!(e.to_string().contains("c.toml"), "{e}");
    }
}

#[test]
fn sync_key_inline_and_file() {
    let ok = "node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n";
    let c = Config::from_str(&cluster(&format!("{ok}sync_key = \"0123456789abcdef0123\"\n")), "c").unwrap();
    let k = c.cluster.as_ref().unwrap();
    assert_eq!(k.sync_key.as_ref().unwrap().0, b"0123456789abcdef0123");
    assert!(!format!("{k:?}").contains("0123456789abcdef"), "the key stays out of Debug output");
    assert_eq!(Config::from_str(&c.to_toml(), "rt").unwrap(), c);

    let dir = std::env::temp_dir().join(format!("fvs-cfg-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("sync.key");
    std::fs::write(&f, "  fedcba9876543210fedcba\n").unwrap();
    let c = Config::from_str(&cluster(&format!("{ok}sync_key_file = \"{}\"\n", f.display())), "c").unwrap();
    let k = c.cluster.as_ref().unwrap();
    assert_eq!(k.sync_key.as_ref().unwrap().0, b"fedcba9876543210fedcba");
    assert!(c.to_toml().contains(&format!("sync_key_file = \"{}\"", f.display())));
    assert!(!c.to_toml().contains("fedcba"), "a key file's key is not rendered");
    assert_eq!(Config::from_str(&c.to_toml(), "rt").unwrap(), c);

    // Errors name the line of the key.
    let short = dir.join("short.key");
    std::fs::write(&short, "tooshort\n").unwrap();
    let cases = [
        (format!("{ok}sync_key = \"short\"\n"), "at least 16 bytes"),
        (format!("{ok}sync_key_file = \"relative/key\"\n"), "absolute path"),
        (format!("{ok}sync_key_file = \"{}\"\n", dir.join("missing").display()), "No such file"),
        (format!("{ok}sync_key_file = \"{}\"\n", short.display()), "at least 16 bytes"),
        (format!("{ok}sync_key = \"0123456789abcdef0123\"\nsync_key_file = \"{}\"\n", f.display()), "exclusive"),
    ];
    for (body, want) in cases {
        let e = Config::from_str(&cluster(&body), "k.toml").unwrap_err();
        let line = body.lines().count() + 3;
        assert_eq!((e.file.as_str(), e.line), ("k.toml", Some(line)), "{body}: {e:?}");
        assert!(e.message.contains(want), "{body}: {}", e.message);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full-NAT service in a cluster of `nodes` (the `[[cluster.node]]` tables), as node 1.
fn fnat_cluster(nodes: &str, locals: &str) -> String {
    format!(
        "{}{nodes}[[service]]\nname = \"f\"\nvip = \"10.0.0.100\"\nports = [80]\nforward = \"fnat\"\nlocal_addresses = {locals}\n[[service.real_server]]\naddress = \"10.0.2.2\"\n",
        cluster("node_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n")
    )
}

#[test]
fn full_nat_local_addresses_per_node() {
    let nodes = "[[cluster.node]]\nid = 1\nlocal_addresses = [\"10.98.0.1\"]\n[[cluster.node]]\nid = 2\nlocal_addresses = [\"10.98.0.2-10.98.0.3\"]\n";
    let c = Config::from_str(&fnat_cluster(nodes, "[\"10.98.0.1\", \"10.98.0.2\"]"), "c").unwrap();
    let k = c.cluster.as_ref().unwrap();
    assert_eq!(k.nodes.len(), 2);
    assert_eq!(k.nodes[1].local_addresses.len(), 2, "a range expands");
    assert_eq!(k.owner_of_local("10.98.0.2".parse().unwrap()), Some(2));
    assert!(k.is_own_local("10.98.0.1".parse().unwrap()));
    assert!(!k.is_own_local("10.98.0.2".parse().unwrap()));
    assert_eq!(k.owner_of_local("10.98.0.9".parse().unwrap()), None);
    assert_eq!(Config::from_str(&c.to_toml(), "rt").unwrap(), c, "round trip");

    // Mistakes, with the line they are on.
    let cases: Vec<(String, usize, &str)> = vec![
        // No [[cluster.node]] at all: named at [cluster].
        (fnat_cluster("", "[\"10.98.0.1\"]"), 3, "needs [[cluster.node]]"),
        // A service's local address no node owns: the service's local_addresses line.
        (fnat_cluster(nodes, "[\"10.98.0.1\", \"10.98.0.7\"]"), 18, "belongs to no [[cluster.node]]"),
        // Only peers' addresses: this node could not allocate a port.
        (fnat_cluster(nodes, "[\"10.98.0.2\"]"), 18, "no local address of this node"),
        // Two nodes claim one address.
        (
            fnat_cluster(
                "[[cluster.node]]\nid = 1\nlocal_addresses = [\"10.98.0.1\"]\n[[cluster.node]]\nid = 2\nlocal_addresses = [\"10.98.0.0/30\"]\n",
                "[\"10.98.0.1\"]",
            ),
            12,
            "belongs to [[cluster.node]] 1 already",
        ),
        (
            fnat_cluster(
                "[[cluster.node]]\nid = 1\nlocal_addresses = [\"10.98.0.1\"]\n[[cluster.node]]\nid = 1\nlocal_addresses = [\"10.98.0.2\"]\n",
                "[\"10.98.0.1\"]",
            ),
            11,
            "listed twice",
        ),
        (fnat_cluster("[[cluster.node]]\nid = 0\nlocal_addresses = [\"10.98.0.1\"]\n", "[\"10.98.0.1\"]"), 8, "between 1 and 255"),
        (fnat_cluster("[[cluster.node]]\nid = 1\nlocal_addresses = []\n", "[\"10.98.0.1\"]"), 9, "has no local_addresses"),
        (fnat_cluster("[[cluster.node]]\nid = 1\nlocal_addresses = [\"nope\"]\n", "[\"10.98.0.1\"]"), 9, "nope"),
        (fnat_cluster("[[cluster.node]]\nid = 1\nladdr = 1\n", "[\"10.98.0.1\"]"), 9, "unknown field `laddr`"),
    ];
    for (text, line, needle) in &cases {
        let e = Config::from_str(text, "n.toml").expect_err(text);
        assert_eq!(e.line, Some(*line), "{text}\n{e}");
        assert!(e.message.contains(needle), "{text}\n{e}");
        assert!(e.to_string().contains("n.toml"), "{e}");
    }
}
