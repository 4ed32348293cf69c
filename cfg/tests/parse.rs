//! TOML -> model: good configs give the expected model, bad ones an error
//! naming the line and the problem.

use std::net::IpAddr;
use std::path::PathBuf;

use ferrovs_cfg::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const GOOD: &str = r#"[engine]
workers = 2
backend = "af_packet"
cores = [0, 1]
eal_args = ["--no-huge"]
mbufs = 4096
flow_table_size = 65536
neighbor_table_size = 512
control_socket = "/tmp/fvs.sock"
metrics_listen = "127.0.0.1:9610"

[engine.timeouts]
tcp = 901
tcp_fin = 121
udp = 301
tcp_close = 11

[[interface]]
name = "ext"
device = "fvs-lb0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[interface]]
name = "int"
device = "fvs-lb1"
addresses = ["10.0.2.1/24"]

[[neighbor]]
address = "10.0.2.2"
mac = "02-00-00-00-02-0A"
interface = "int"

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"

[[route]]
prefix = "192.168.0.0/16"
interface = "int"

[[service]]
name = "ftp"
vip = "10.0.0.100"
ports = [21, "8000-8100"]
scheduler = "rr"
forward = "dr"
persistence = { timeout = 600, netmask = "255.255.255.0" }
ftp = { control_ports = [21], allow_foreign_port_address = true, pinhole_timeout = 30 }
fwmark = 21

[service.health_check]
type = "send_expect"
port = 21
send = "QUIT\r\n"
expect = "220"
interval = 2
retry_interval = 0.5
timeout = 1.5
rise = 1
fall = 2
on_fail = "remove"

[[service.real_server]]
address = "10.0.2.2"
port = 21
weight = 3
upper = 100
lower = 50
forward = "nat"

[[service.real_server]]
address = "192.168.7.7"
weight = 0

[[service]]
name = "dns"
vip = "10.0.0.100"
protocol = "udp"
ports = [53]
persistence = 120
"#;

#[test]
fn good_config_parses_into_expected_model() {
    let c = Config::from_str(GOOD, "good.toml").unwrap();
    let e = &c.engine;
    assert_eq!(e.workers, 2);
    assert_eq!(e.backend, Backend::AfPacket);
    assert_eq!(e.cores, Some(vec![0, 1]));
    assert_eq!(e.eal_args, vec!["--no-huge".to_string()]);
    assert_eq!(e.mbufs, 4096);
    assert_eq!(e.flow_table_size, 65536);
    assert_eq!(e.neighbor_table_size, 512);
    assert_eq!(e.control_socket, PathBuf::from("/tmp/fvs.sock"));
    assert_eq!(e.metrics_listen, Some("127.0.0.1:9610".parse().unwrap()));
    let t = e.timeouts;
    assert_eq!((t.tcp_established, t.tcp_fin_wait, t.udp, t.tcp_close), (901, 121, 301, 11));
    assert_eq!(t.tcp_syn_recv, Timeouts::default().tcp_syn_recv);

    assert_eq!(
        c.interfaces[0],
        Interface {
            name: "ext".into(),
            device: "fvs-lb0".into(),
            mac: Some([2, 0, 0, 0, 1, 1]),
            addresses: vec![IpNet { addr: ip("10.0.1.1"), prefix: 24 }, IpNet { addr: ip("fd00:1::1"), prefix: 64 }],
            kernel_port: None,
        }
    );
    assert_eq!(c.interfaces[1].mac, None);
    assert_eq!(
        c.neighbors,
        vec![Neighbor { address: ip("10.0.2.2"), mac: [2, 0, 0, 0, 2, 0x0a], interface: Some("int".into()) }]
    );
    assert_eq!(
        c.routes,
        vec![
            Route { prefix: IpNet { addr: ip("0.0.0.0"), prefix: 0 }, via: Some(ip("10.0.1.254")), interface: None },
            Route { prefix: IpNet { addr: ip("192.168.0.0"), prefix: 16 }, via: None, interface: Some("int".into()) },
        ]
    );

    let s = &c.services[0];
    assert_eq!(
        *s,
        Service {
            name: "ftp".into(),
            vip: ip("10.0.0.100"),
            protocol: Protocol::Tcp,
            ports: vec![PortRange { lo: 21, hi: 21 }, PortRange { lo: 8000, hi: 8100 }],
            scheduler: "rr".into(),
            forward: Forward::Dr,
            persistence: Some(Persistence { timeout: 600, netmask: 24 }),
            ftp: Some(FtpOptions {
                control_ports: vec![21],
                allow_foreign_port_address: true,
                pinhole_timeout: 30,
                ..FtpOptions::default()
            }),
            fwmark: Some(21),
            real_servers: vec![
                RealServer {
                    address: ip("10.0.2.2"),
                    port: Some(21),
                    weight: 3,
                    upper: 100,
                    lower: 50,
                    forward: Some(Forward::Nat),
                    proxy_protocol: None,
                    health_checks: None,
                },
                RealServer {
                    address: ip("192.168.7.7"),
                    port: None,
                    weight: 0,
                    upper: 0,
                    lower: 0,
                    forward: None,
                    proxy_protocol: None,
                    health_checks: None
                },
            ],
            health_checks: vec![HealthCheck {
                kind: HealthCheckKind::SendExpect,
                port: Some(21),
                send: Some("QUIT\r\n".into()),
                expect: Some("220".into()),
                interval: 2.0,
                retry_interval: Some(0.5),
                timeout: 1.5,
                rise: 1,
                fall: 2,
                quiesce: false,
                // The rest (http, dns, udp, smtp, exec fields) unset.
                ..HealthCheck::new(HealthCheckKind::SendExpect)
            }],
            syn_proxy: SynProxy::Auto,
            one_packet: false,
            sched_flags: Default::default(),
            allow_from: Vec::new(),
            deny_from: Vec::new(),
            source_conn_rate: 0,
            source_conn_burst: 0,
            local_addresses: Vec::new(),
            sorry_server: None,
            quorum: 1,
            hysteresis: 0,
            notify: None,
        }
    );
    let d = &c.services[1];
    assert_eq!(d.protocol, Protocol::Udp);
    assert_eq!(d.scheduler, "wlc");
    assert_eq!(d.forward, Forward::Nat);
    assert_eq!(d.persistence, Some(Persistence { timeout: 120, netmask: 32 }));
    assert!(d.real_servers.is_empty());
    assert_eq!(c.source, None);
}

#[test]
fn defaults() {
    let c = Config::from_str("[engine]\nbackend = \"memory\"\n", "d.toml").unwrap();
    assert_eq!(c.engine.workers, 1);
    assert_eq!(c.engine.cores, None);
    assert_eq!(c.engine.mbufs, 8192);
    assert_eq!(c.engine.flow_table_size, 1_048_576);
    assert_eq!(c.engine.neighbor_table_size, 4096);
    assert_eq!(c.engine.control_socket, PathBuf::from("/run/ferrovs/ferrovs.sock"));
    assert_eq!(c.engine.metrics_listen, None);
    assert_eq!(c.engine.timeouts, Timeouts::default());
    assert!(c.interfaces.is_empty() && c.services.is_empty());

    let c = Config::from_str(
        "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"fd00::1\"\npersistence = { timeout = 5 }\nftp = true\n[service.health_check]\ntype = \"tcp\"\n",
        "d.toml",
    )
    .unwrap();
    let s = &c.services[0];
    assert!(s.ports.is_empty() && s.has_port(1) && s.has_port(65535));
    assert_eq!(s.persistence, Some(Persistence { timeout: 5, netmask: 128 }));
    assert_eq!(s.ftp, Some(FtpOptions::default()));
    let h = s.health_checks.first().unwrap();
    assert_eq!((h.interval, h.timeout, h.rise, h.fall, h.quiesce), (5.0, 3.0, 2, 3, true));

    // `ftp = false` is the same as no ftp key.
    let c = Config::from_str(
        "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.1\"\nftp = false\n",
        "d",
    )
    .unwrap();
    assert_eq!(c.services[0].ftp, None);
}

#[test]
fn from_file_sets_source_and_reports_missing_file() {
    let dir = std::env::temp_dir().join(format!("ferrovs-cfg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("lb.toml");
    std::fs::write(&p, GOOD).unwrap();
    let c = Config::from_file(&p).unwrap();
    assert_eq!(c.source.as_deref(), Some(p.as_path()));
    std::fs::write(&p, "[engine]\nworkers = 0\n").unwrap();
    let e = Config::from_file(&p).unwrap_err();
    assert_eq!(e.file, p.display().to_string());
    assert_eq!(e.line, Some(2));
    let e = Config::from_file(&dir.join("missing.toml")).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn error_display() {
    let e = ConfigError { file: "a.toml".into(), line: Some(7), column: Some(3), message: "bad".into() };
    assert_eq!(e.to_string(), "a.toml:7:3: bad");
    let e = ConfigError { file: "a.toml".into(), line: None, column: None, message: "bad".into() };
    assert_eq!(e.to_string(), "a.toml: bad");
    let _: &dyn std::error::Error = &e;
}

/// Lines 1-9 of every bad case below are this prefix.
const PRE: &str = r#"[engine]
backend = "af_packet"

[[interface]]
name = "ext"
device = "veth0"
addresses = ["10.0.1.1/24"]

# --- case ---
"#;

/// (case text starting at line 10, expected line, expected message part)
const BAD: &[(&str, usize, &str)] = &[
    // syntax and unknown keys
    ("[[service]]\nname = \"a\"\nvip = \"10.0.0.1\"\nbogus = 1\n", 13, "unknown field `bogus`"),
    ("[engine2]\n", 10, "unknown field `engine2`"),
    ("[[service]]\nname = \"a\"\nvip = 10.0.0.1\n", 12, ""),
    ("[[service]]\nname = \"a\"\n", 10, "missing field `vip`"),
    // addresses, MACs, CIDRs
    ("[[service]]\nname = \"a\"\nvip = \"10.0.0.300\"\n", 12, "invalid IP address \"10.0.0.300\""),
    // IPv4-mapped IPv6 addresses: the IPv4 address in disguise, refused wherever named.
    ("[[service]]\nname = \"a\"\nvip = \"::ffff:10.0.0.1\"\n", 12, "::ffff:10.0.0.1 is an IPv4-mapped IPv6 address: write the IPv4 address 10.0.0.1"),
    (
        "[[service]]\nname = \"a\"\nvip = \"fd00::100\"\nforward = \"tunnel\"\n[[service.real_server]]\naddress = \"::ffff:10.0.2.2\"\n",
        15,
        "IPv4-mapped IPv6 address: write the IPv4 address 10.0.2.2",
    ),
    (
        "[[service]]\nname = \"a\"\nvip = \"fd00::100\"\nforward = \"fnat\"\nlocal_addresses = [\"::ffff:10.0.2.200\"]\n",
        14,
        "IPv4-mapped IPv6 address",
    ),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\naddresses = [\"::ffff:10.0.3.1/120\"]\n", 13, "IPv4-mapped IPv6 address"),
    ("[[neighbor]]\naddress = \"::ffff:10.0.1.9\"\nmac = \"02:00:00:00:01:09\"\n", 11, "IPv4-mapped IPv6 address"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\nmac = \"02:00:00:00:01\"\n", 13, "invalid MAC address"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\nmac = \"02:00:00:00:01:zz\"\n", 13, "invalid MAC address"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\naddresses = [\"10.0.2.1/33\"]\n", 13, "prefix length must be 0..=32"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\naddresses = [\"fd00::1/129\"]\n", 13, "0..=128"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\naddresses = [\"10.0.2.1\"]\n", 13, "invalid CIDR"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\naddresses = [\"10.0.1.1/16\"]\n", 13, "duplicate interface address 10.0.1.1"),
    ("[[interface]]\nname = \"ext\"\ndevice = \"x\"\n", 11, "duplicate interface name \"ext\""),
    ("[[interface]]\nname = \"\"\ndevice = \"x\"\n", 11, "interface name must not be empty"),
    ("[[interface]]\nname = \"b\\u001b[2J\"\ndevice = \"x\"\n", 11, "interface name \"b\\u{1b}[2J\" holds the control character '\\u{1b}'"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\\n\"\n", 12, "interface device \"x\\n\" holds the control character '\\n'"),
    ("[[service]]\nname = \"web\\nINFO forged\"\nvip = \"10.0.1.100\"\n", 11, "service name \"web\\nINFO forged\" holds the control character '\\n': names are printable text"),
    ("[[interface]]\nname = \"b\"\ndevice = \"x\"\nkernel_port = \"net_tap0,iface=k0\"\n", 13, "kernel_port is DPDK's exception path"),
    // engine
    ("[engine.timeouts]\n", 10, ""), // redefining [engine] parts after it is fine for toml; keep as smoke
    ("[[neighbor]]\naddress = \"10.0.1.9\"\nmac = \"02:00:00:00:01:09\"\ninterface = \"nope\"\n", 13, "unknown interface \"nope\""),
    ("[[neighbor]]\naddress = \"10.0.1.x\"\nmac = \"02:00:00:00:01:09\"\n", 11, "invalid IP address"),
    // routes
    ("[[route]]\nprefix = \"10.9.0.0/16\"\n", 11, "needs `via` or `interface`"),
    ("[[route]]\nprefix = \"10.9.0.0/40\"\nvia = \"10.0.1.254\"\n", 11, "invalid CIDR"),
    ("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.9.254\"\n", 12, "route gateway 10.0.9.254 is not reachable"),
    ("[[route]]\nprefix = \"10.9.0.0/16\"\ninterface = \"int\"\n", 12, "unknown interface \"int\""),
    ("[[route]]\nprefix = \"fd00::/8\"\nvia = \"10.0.1.254\"\n", 12, "address family"),
    // services
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nprotocol = \"sctp\"\n", 13, "invalid protocol \"sctp\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80]\none_packet = true\n", 14, "one_packet applies to UDP services (ipvsadm --ops): service \"a\" is tcp"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80, 0]\n", 13, "port 0 out of range"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [\"90-80\"]\n", 13, "90 > 80"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [\"80-70000\"]\n", 13, "1..=65535"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [\"8000-8100\",\n  8050]\n", 14, "overlaps 8000-8100"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80, 80]\n", 13, "overlaps 80"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [1.5]\n", 13, "expected a port number"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nscheduler = \"fifo\"\n", 13, "unknown scheduler \"fifo\": expected one of rr, wrr"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nforward = \"fullnat\"\n", 13, "invalid forward \"fullnat\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service]]\nname = \"a\"\nvip = \"10.0.1.101\"\n", 14, "duplicate service name \"a\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80]\n[[service]]\nname = \"b\"\nvip = \"10.0.1.100\"\nports = [\"1-100\"]\n", 17, "overlaps service \"a\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service]]\nname = \"b\"\nvip = \"10.0.1.100\"\nports = [443]\n", 16, "overlaps service \"a\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = { timeout = 60, netmask = 33 }\n", 13, "persistence netmask must be between 0 and 32"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = { timeout = 60, netmask = \"255.0.255.0\" }\n", 13, "not contiguous"),
    ("[[service]]\nname = \"a\"\nvip = \"fd00::1\"\npersistence = { netmask = \"255.255.0.0\" }\n", 13, "IPv4 vip"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = 0\n", 13, "persistence timeout must be between 1"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = \"long\"\n", 13, "a timeout in seconds or a table"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\nftp = true\n", 14, "ftp needs protocol = \"tcp\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80]\nftp = true\n", 14, "ftp control port 21 is not one of the ports"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [21]\nftp = { control_ports = [21, 2121] }\n", 14, "ftp control port 2121"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nftp = { pasv = true }\n", 13, "unknown field `pasv`"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nfwmark = -1\n", 13, "fwmark must be between 1"),
    // ipvsadm's limits, so that ferrovsadm -S prints what -R and ipvsadm take back
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nfwmark = 0\n", 13, "fwmark must be between 1"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = 2678401\n", 13, "persistence timeout must be between 1 and 2678400"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\npersistence = { timeout = 4294967295 }\n", 13, "persistence timeout must be between 1 and 2678400"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nupper = 2147483648\n", 15, "upper must be between 0 and 2147483647"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nlower = 4294967295\n", 15, "lower must be between 0 and 2147483647"),
    // health checks
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"icmp\"\n", 14, "invalid health check type \"icmp\""),
    // http's path, host and status: one visible ASCII word each, for type http only
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\npath = \"/\"\n", 15, "`path` is for type \"http\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"ftp\"\nstatus = 200\n", 15, "`status` is for type \"http\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\npath = \"x\"\n", 15, "starting with '/'"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\npath = \"/a\\r\\nX: y\"\n", 15, "visible ASCII"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\nhost = \"a b\"\n", 15, "visible ASCII"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\nstatus = 600\n", 15, "health check status"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\npath = \"/ok\"\nhost = \"www.example.com:8080\"\nstatus = 204\n", 0, ""),
    // https: http's fields, and tls_ca (for https only, an absolute path)
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"https\"\npath = \"/ok\"\nhost = \"www.example.com\"\nstatus = 204\ntls_ca = \"/etc/ssl/certs/ca-certificates.crt\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"https\"\npath = \"x\"\n", 15, "starting with '/'"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\ntls_ca = \"/ca.pem\"\n", 15, "`tls_ca` is for type \"https\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"https\"\ntls_ca = \"ca.pem\"\n", 15, "must be an absolute path"),
    // digest: http and https, an MD5 in hex
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\ndigest = \"EFF5BC1EF8EC9D03E640FC4370F5EACD\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\ndigest = \"eff5bc1ef8ec9d03e640fc4370f5eacd\"\n", 15, "`digest` is for type \"http\" or \"https\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"https\"\ndigest = \"eff5bc1ef8\"\n", 15, "must be an MD5 in hex"),
    // dns: query_name and query_type, for type dns only
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\n[service.health_check]\ntype = \"dns\"\nquery_name = \"www.example.com.\"\nquery_type = \"aaaa\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"dns\"\nquery_name = \".\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\nquery_name = \"a.b\"\n", 15, "`query_name` is for type \"dns\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"dns\"\nquery_name = \"a..b\"\n", 15, "must be \".\" or a DNS name"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"dns\"\nquery_name = \"a b\"\n", 15, "must be \".\" or a DNS name"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"dns\"\nquery_type = \"PTR\"\n", 15, "query_type \"PTR\" must be one of A, NS, CNAME, SOA, MX, TXT, AAAA"),
    // udp: payload and reply in hex (x digits in reply only), for type udp only; ping: no port
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\n[service.health_check]\ntype = \"udp\"\npayload = \"0a 1b2c\"\nreply = \"0a xX\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\n[service.health_check]\ntype = \"udp\"\nrequire_reply = true\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"ping\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"udp\"\npayload = \"0g\"\n", 15, "health check payload \"0g\" must be 1 to 1232 octets in hex"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"udp\"\npayload = \"0x\"\n", 15, "health check payload \"0x\" must be"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"udp\"\npayload = \" \"\n", 15, "must be 1 to 1232 octets"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"udp\"\nreply = \"zz\"\n", 15, "an x digit matching any"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\npayload = \"00\"\n", 15, "`payload` is for type \"udp\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"dns\"\nrequire_reply = true\n", 15, "`require_reply` is for type \"udp\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"ping\"\nport = 7\n", 15, "type \"ping\" has no `port`"),
    // smtp: helo_name one word, for type smtp only
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [25]\n[service.health_check]\ntype = \"smtp\"\nhelo_name = \"lb1.example.net\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"smtp\"\nhelo_name = \"lb1\\r\\nMAIL FROM:<x>\"\n", 15, "helo_name \"lb1\\r\\nMAIL FROM:<x>\" must be visible ASCII without spaces"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\nhelo_name = \"a\"\n", 15, "`helo_name` is for type \"smtp\""),
    // exec: an argv whose program is an absolute path, for type exec only
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\ncommand = [\"check.sh\", \"x\"]\n", 15, "health check command \"check.sh\" must be an absolute path"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\ncommand = [\"../bin/check\"]\n", 15, "must be an absolute path"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\n\ncommand = []\n", 16, "health check command must not be empty"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\n", 14, "type \"exec\" needs a `command`"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\ncommand = [\"/bin/true\", \"a\\u0000b\"]\n", 15, "NUL byte"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\nuser = \"\"\n", 16, "health check user \"\" must be a user name"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\ncommand = [\"/bin/true\"]\n", 15, "`command` is for type \"exec\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"http\"\nuser = \"nobody\"\n", 15, "`user` is for type \"exec\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"exec\"\ncommand = [\"/usr/lib/check\", \"a b\"]\nuser = \"nobody\"\n", 0, ""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nsyn_proxy = \"maybe\"\n", 13, "unknown syn_proxy \"maybe\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\ninterval = 0\n", 15, "interval must be > 0"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\nretry_interval = -1\n", 15, "retry_interval must be > 0"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\ntimeout = -1.0\n", 15, "timeout must be > 0"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\nrise = 0\n", 15, "rise must be between 1"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\nfall = 0\n", 15, "fall must be between 1"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"send_expect\"\nsend = \"x\"\n", 14, "needs a non-empty `expect`"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[service.health_check]\ntype = \"tcp\"\non_fail = \"panic\"\n", 15, "invalid on_fail \"panic\""),
    // real servers
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.9.9.9\"\n", 14, "real server 10.9.9.9 is not reachable through any interface or route"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"fd00::2\"\n", 14, "address family of vip"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nweight = 65536\n", 15, "weight must be between 0 and 65535"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nupper = 10\nlower = 20\n", 16, "lower threshold 20 is above upper threshold 10"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nport = 0\n", 15, "real server port must be between 1"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nforward = \"masq\"\n", 15, "invalid forward \"masq\""),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\n", 16, "duplicate real server 10.0.1.2"),
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nwieght = 1\n", 15, "unknown field `wieght`"),
    // no port on a single-port service is that port (ipvsadm -r ADDR): one destination twice
    ("[[service]]\nname = \"a\"\nvip = \"10.0.1.100\"\nports = [80]\n[[service.real_server]]\naddress = \"10.0.1.2\"\n[[service.real_server]]\naddress = \"10.0.1.2\"\nport = 80\n", 17, "duplicate real server 10.0.1.2"),
];

#[test]
fn bad_configs_report_line_and_problem() {
    let mut failures = Vec::new();
    for (i, (case, line, needle)) in BAD.iter().enumerate() {
        let text = format!("{PRE}{case}");
        match Config::from_str(&text, "bad.toml") {
            Ok(_) if needle.is_empty() => {}
            Ok(_) => failures.push(format!("case {i}: parsed but expected error {needle:?}\n{case}")),
            Err(e) => {
                if needle.is_empty() && i != 2 {
                    failures.push(format!("case {i}: unexpected error {e}"));
                    continue;
                }
                if e.file != "bad.toml" || e.line != Some(*line) || !e.message.contains(needle) || e.column.is_none() {
                    failures.push(format!("case {i}: want line {line} containing {needle:?}, got {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Engine-level errors (lines in the `[engine]` table itself).
#[test]
fn bad_engine() {
    let cases: &[(&str, usize, &str)] = &[
        ("[engine]\nworkers = 0\nbackend = \"memory\"\n", 2, "workers must be between 1 and 64, got 0"),
        ("[engine]\nworkers = 65\nbackend = \"memory\"\n", 2, "workers must be between 1 and 64"),
        ("[engine]\nworkers = 2\ncores = [0]\nbackend = \"memory\"\n", 3, "cores lists 1 cores but workers = 2"),
        ("[engine]\nworkers = 2\ncores = [1, 1]\nbackend = \"memory\"\n", 3, "core 1 listed twice"),
        ("[engine]\nbackend = \"xdp\"\n", 2, "invalid backend \"xdp\""),
        ("[engine]\nbackend = \"af_packet\"\n", 2, "at least one [[interface]] is required"),
        ("[engine]\nbackend = \"memory\"\nmetrics_listen = \"localhost\"\n", 3, "invalid metrics_listen"),
        ("[engine]\nbackend = \"memory\"\nmbufs = 0\n", 3, "mbufs must be between 1"),
        ("[engine]\nbackend = \"memory\"\nrp_filter = \"on\"\n", 3, "invalid rp_filter \"on\""),
        ("[engine]\nbackend = \"memory\"\nrp_filter = 1\n", 3, "invalid type"),
        (
            "[engine]\nbackend = \"memory\"\n\n[engine.timeouts]\ntcp = 0\n",
            5,
            "timeout tcp_established must be between 1",
        ),
        ("[engine]\nbackend = \"memory\"\n\n[engine.timeouts]\nsctp = 5\n", 5, "unknown field `sctp`"),
        ("[engine]\nbackend = \"memory\"\ncontrol_socket = \"\"\n", 3, "control_socket must not be empty"),
        ("[engine]\nbackend = \"memory\"\nworkers = \"two\"\n", 3, "invalid type"),
        ("[engine]\nbackend = \"memory\"\n[engine]\n", 3, "duplicate"),
        ("[engine\n", 1, ""),
    ];
    for (text, line, needle) in cases {
        let e = Config::from_str(text, "e.toml").expect_err(text);
        assert_eq!(e.line, Some(*line), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
    // No [engine] at all: af_packet by default, so interfaces are required,
    // and the error has no position.
    let e = Config::from_str("", "empty.toml").unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("interface"));
    // eal_args with a non-dpdk backend are allowed (ignored by the engine).
    Config::from_str("[engine]\nbackend = \"memory\"\neal_args = [\"--no-huge\"]\n", "x").unwrap();
}

#[test]
fn reachability_rules() {
    let base = "[engine]\nbackend = \"af_packet\"\n[[interface]]\nname = \"ext\"\ndevice = \"x\"\naddresses = [\"10.0.1.1/24\", \"fd00:1::1/64\"]\n";
    let rs = |a: &str, extra: &str| {
        format!(
            "{base}{extra}[[service]]\nname = \"s\"\nvip = \"{}\"\n[[service.real_server]]\naddress = \"{a}\"\n",
            if a.contains(':') { "fd00::100" } else { "10.0.0.100" }
        )
    };
    // on-link
    Config::from_str(&rs("10.0.1.7", ""), "r").unwrap();
    Config::from_str(&rs("fd00:1::7", ""), "r").unwrap();
    // through a route
    Config::from_str(&rs("10.5.0.7", "[[route]]\nprefix = \"10.5.0.0/16\"\nvia = \"10.0.1.254\"\n"), "r").unwrap();
    Config::from_str(&rs("10.5.0.7", "[[route]]\nprefix = \"0.0.0.0/0\"\ninterface = \"ext\"\n"), "r").unwrap();
    // not reachable
    let e = Config::from_str(&rs("10.6.0.7", "[[route]]\nprefix = \"10.5.0.0/16\"\nvia = \"10.0.1.254\"\n"), "r")
        .unwrap_err();
    assert!(e.message.contains("not reachable"), "{e}");
    let e = Config::from_str(&rs("fd00:9::7", ""), "r").unwrap_err();
    assert!(e.message.contains("not reachable"), "{e}");
    // a memory backend without interfaces skips the reachability check
    Config::from_str("[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.100\"\n[[service.real_server]]\naddress = \"10.9.9.9\"\n", "r").unwrap();
}

#[test]
fn schedulers_are_all_accepted() {
    assert_eq!(ferrovs_sched::NAMES.len(), 14);
    for s in ferrovs_sched::NAMES {
        let t = format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"a\"\nvip = \"10.0.0.1\"\nscheduler = \"{s}\"\n"
        );
        assert_eq!(Config::from_str(&t, "s").unwrap().services[0].scheduler, *s);
    }
}

#[test]
fn same_ports_on_different_protocol_or_vip_are_fine() {
    let t = "[engine]\nbackend = \"memory\"\n\
        [[service]]\nname = \"a\"\nvip = \"10.0.0.1\"\nports = [53]\n\
        [[service]]\nname = \"b\"\nvip = \"10.0.0.1\"\nports = [53]\nprotocol = \"udp\"\n\
        [[service]]\nname = \"c\"\nvip = \"10.0.0.2\"\nports = [53]\n\
        [[service]]\nname = \"d\"\nvip = \"10.0.0.1\"\nports = [\"54-60\"]\n";
    assert_eq!(Config::from_str(t, "p").unwrap().services.len(), 4);
}

/// Full NAT: local addresses (single, CIDR, range), the engine's port range, and the errors
/// (with their lines) for FNAT without local addresses, wrong family, a local address that is
/// a VIP, a too large entry.
#[test]
fn fnat_local_addresses() {
    let head = "[engine]\nbackend = \"memory\"\nlocal_port_range = \"2000-2999\"\n";
    let ok = format!(
        "{head}[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\n\
         local_addresses = [\"10.0.2.200\", \"10.0.2.210/31\", \"10.0.2.220-10.0.2.222\"]\n\
         [[service.real_server]]\naddress = \"10.0.2.2\"\n"
    );
    let c = Config::from_str(&ok, "f.toml").unwrap();
    assert_eq!(c.services[0].forward, Forward::Fnat);
    let want: Vec<IpAddr> = ["10.0.2.200", "10.0.2.210", "10.0.2.211", "10.0.2.220", "10.0.2.221", "10.0.2.222"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(c.services[0].local_addresses, want);
    assert_eq!(c.engine.local_port_range, PortRange { lo: 2000, hi: 2999 });
    // Round trip through the renderer.
    let again = Config::from_str(&c.to_toml(), "r.toml").unwrap();
    assert_eq!(again.services[0].local_addresses, want);
    assert_eq!(again.engine.local_port_range, c.engine.local_port_range);
    let cases: &[(&str, usize, &str)] = &[
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\n[[service.real_server]]\naddress = \"10.0.2.2\"\n",
            7,
            "forward = \"fnat\" needs local_addresses",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\n[[service.real_server]]\naddress = \"10.0.2.2\"\nforward = \"fnat\"\n",
            9,
            "needs local_addresses",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"fd00::1\"]\n\
             [[service.real_server]]\naddress = \"10.0.2.2\"\n",
            10,
            "not in the address family of local address fd00::1",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"fd00::1\", \"10.0.2.1\"]\n",
            8,
            "one family per service",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"fd00::100\"\nlocal_addresses = [\"10.0.2.200\"]\n\
             [[service.real_server]]\naddress = \"10.0.2.2\"\nforward = \"fnat\"\n\
             [[service.real_server]]\naddress = \"10.0.2.3\"\n",
            12,
            "mixed families need forward = \"fnat\"",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"10.0.0.100\"]\n",
            8,
            "is a VIP",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"10.0.0.0/16\"]\n",
            8,
            "more than 256",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"10.0.0.9-10.0.0.1\"]\n",
            8,
            "invalid local address range",
        ),
        (
            "[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"fnat\"\nlocal_addresses = [\"10.0.0.7\", \"10.0.0.7\"]\n",
            8,
            "listed twice",
        ),
    ];
    for (svc, line, needle) in cases {
        let text = format!("{head}{svc}");
        let e = Config::from_str(&text, "f.toml").expect_err(svc);
        assert_eq!(e.line, Some(*line), "{svc:?}: {e}");
        assert!(e.message.contains(needle), "{svc:?}: {e}");
    }
    let e =
        Config::from_str("[engine]\nbackend = \"memory\"\nlocal_port_range = \"2000-2010\"\n", "f.toml").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("too small"), "{e}");
}

/// Full NAT across families: an IPv6 VIP with IPv4 real servers and IPv4 local addresses,
/// and the reverse, are accepted (and survive the renderer).
#[test]
fn fnat_mixed_families() {
    let head = "[engine]\nbackend = \"memory\"\n";
    for (vip, la, rs) in [("fd00::100", "10.0.2.200", "10.0.2.2"), ("10.0.0.100", "fd00:2::200", "fd00:2::2")] {
        let t = format!(
            "{head}[[service]]\nname = \"x\"\nvip = \"{vip}\"\nforward = \"fnat\"\nlocal_addresses = [\"{la}\"]\n\
             [[service.real_server]]\naddress = \"{rs}\"\nproxy_protocol = \"v2\"\n"
        );
        let c = Config::from_str(&t, "m.toml").unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(c.services[0].real_servers[0].address, rs.parse::<IpAddr>().unwrap());
        let again = Config::from_str(&c.to_toml(), "r.toml").unwrap();
        assert_eq!(again.services[0].local_addresses, vec![la.parse::<IpAddr>().unwrap()]);
    }
}

#[test]
fn proxy_protocol_per_real_server() {
    let head = "[engine]\nbackend = \"memory\"\n";
    let svc = |fwd: &str, extra: &str, pp: &str| {
        format!(
            "{head}[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nforward = \"{fwd}\"\n{extra}\
             [[service.real_server]]\naddress = \"10.0.2.2\"\nproxy_protocol = \"{pp}\"\n"
        )
    };
    let c = Config::from_str(&svc("nat", "", "v2"), "p.toml").unwrap();
    assert_eq!(c.services[0].real_servers[0].proxy_protocol, Some(ProxyProtocol::V2));
    let again = Config::from_str(&c.to_toml(), "r.toml").unwrap();
    assert_eq!(again.services[0].real_servers[0].proxy_protocol, Some(ProxyProtocol::V2));
    let c = Config::from_str(&svc("fnat", "local_addresses = [\"10.0.2.200\"]\n", "v1"), "p.toml").unwrap();
    assert_eq!(c.services[0].real_servers[0].proxy_protocol, Some(ProxyProtocol::V1));
    for (text, line, needle) in [
        (svc("dr", "", "v1"), 9, "needs forward = \"nat\" or \"fnat\""),
        (svc("nat", "", "v3"), 9, "invalid proxy_protocol"),
        (svc("nat", "protocol = \"udp\"\n", "v1"), 10, "needs protocol = \"tcp\""),
        (svc("nat", "ftp = true\n", "v1"), 10, "cannot be used on an ftp service"),
    ] {
        let e = Config::from_str(&text, "p.toml").expect_err(&text);
        assert_eq!(e.line, Some(line), "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
}

#[test]
fn kernel_port_with_dpdk() {
    let text = "[engine]\nbackend = \"dpdk\"\n[[interface]]\nname = \"ext\"\ndevice = \"net_af_packet0,iface=v0\"\n\
                kernel_port = \"net_tap0,iface=fvs-kni0\"\naddresses = [\"10.0.1.1/24\"]\n";
    let c = Config::from_str(text, "k.toml").unwrap();
    assert_eq!(c.interfaces[0].kernel_port.as_deref(), Some("net_tap0,iface=fvs-kni0"));
    assert_eq!(c.engine.kernel_rate, 100_000);
    // Rendered and parsed again: the same.
    let again = Config::from_str(&c.to_toml(), "k2.toml").unwrap();
    assert_eq!(again.interfaces[0].kernel_port, c.interfaces[0].kernel_port);
    // The interface's own device is not an exception path.
    let same = text.replace("net_tap0,iface=fvs-kni0", "net_af_packet0,iface=v0");
    let e = Config::from_str(&same, "k.toml").unwrap_err();
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("another device"), "{e}");
}

/// A sorry server (keepalived's `sorry_server`): parsed, rendered back, added to the served
/// destinations only while no real server takes new connections; its errors name the line.
#[test]
fn sorry_server() {
    let head = "[engine]\nbackend = \"memory\"\n";
    let svc = |sorry: &str, w: u32| {
        format!(
            "{head}[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n{sorry}\n\
             [[service.real_server]]\naddress = \"10.0.2.2\"\nweight = {w}\n"
        )
    };
    let c = Config::from_str(&svc("sorry_server = { address = \"10.0.2.9\", port = 8080 }", 1), "s.toml").unwrap();
    let want = SorryServer { address: "10.0.2.9".parse().unwrap(), port: Some(8080) };
    assert_eq!(c.services[0].sorry_server, Some(want));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap().services[0].sorry_server, Some(want));
    let served = c.serving().expect("a service has a sorry server");
    let rs = &served.services[0].real_servers;
    assert_eq!((rs.len(), rs[1].address, rs[1].weight), (2, want.address, 0), "quiesced while a real server serves");
    assert!(Config::from_str(&svc("", 0), "s.toml").unwrap().serving().is_none(), "no sorry server: no copy");
    let c = Config::from_str(&svc("sorry_server = { address = \"10.0.2.9\" }", 0), "s.toml").unwrap();
    let served = c.serving().expect("every real server at weight 0");
    let rs = &served.services[0].real_servers;
    assert_eq!((rs.len(), rs[1].address, rs[1].port, rs[1].weight), (2, want.address, None, 1));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c);
    let cases: &[(&str, usize, &str)] = &[
        ("sorry_server = { address = \"fd00::9\" }", 7, "address family"),
        ("sorry_server = { address = \"10.0.2.2\", port = 80 }", 7, "also a real server"),
        ("sorry_server = { address = \"10.0.2.9\", port = 0 }", 7, "sorry server port"),
        ("sorry_server = { port = 80 }", 7, "address"),
        ("sorry_server = { address = \"10.0.2.9\", weight = 3 }", 7, "weight"),
    ];
    for (sorry, line, msg) in cases {
        let e = Config::from_str(&svc(sorry, 1), "s.toml").expect_err(sorry);
        assert_eq!((e.file.as_str(), e.line), ("s.toml", Some(*line)), "{sorry}: {e}");
        assert!(e.to_string().contains(msg), "{sorry}: {e}");
    }
}

/// A service with a sorry server, `keys` on its `[[service]]` (from line 8) and one real server of
/// each weight in `weights` (10.0.2.2, 10.0.2.3, ...).
fn quorum_svc(keys: &str, weights: &[u32]) -> String {
    let mut t = format!(
        "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n\
         sorry_server = {{ address = \"10.0.2.9\" }}\n{keys}\n"
    );
    for (i, w) in weights.iter().enumerate() {
        t += &format!("[[service.real_server]]\naddress = \"10.0.2.{}\"\nweight = {w}\n", i + 2);
    }
    t
}

/// The weights the data plane gets: the real servers', then the sorry server's.
fn served_weights(c: &Config, prev: Option<&Config>) -> Vec<u32> {
    let served = c.serving_after(prev).expect("a sorry server");
    served.services[0].real_servers.iter().map(|r| r.weight).collect()
}

/// `quorum` and `hysteresis` (keepalived's): the sorry server takes the new connections
/// while the live real servers' weights add up to less than the quorum; with a hysteresis H
/// the service goes down below quorum - H and comes back at quorum + H.
#[test]
fn quorum_and_hysteresis() {
    let parse = |keys: &str, w: &[u32]| Config::from_str(&quorum_svc(keys, w), "q.toml").unwrap();
    let c = parse("quorum = 3\nhysteresis = 1", &[1, 1]);
    assert_eq!((c.services[0].quorum, c.services[0].hysteresis), (3, 1));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    let d = parse("", &[1]);
    assert_eq!((d.services[0].quorum, d.services[0].hysteresis), (1, 0), "keepalived's defaults");
    assert!(!d.to_toml().contains("quorum"), "defaults not rendered");

    // Quorum 3, two live servers of weight 1: the sorry server takes new connections, the
    // real servers none (keepalived takes them out of the pool); weight 3 reaches it.
    assert_eq!(served_weights(&parse("quorum = 3", &[1, 1]), None), [0, 0, 1]);
    assert_eq!(served_weights(&parse("quorum = 3", &[1, 2]), None), [1, 2, 0]);
    assert_eq!(served_weights(&parse("quorum = 3", &[1, 0, 1, 1]), None), [1, 0, 1, 1, 0]);
    // Default quorum 1: as before, only when every weight is 0.
    assert_eq!(served_weights(&parse("", &[0, 0]), None), [0, 0, 1]);
    assert_eq!(served_weights(&parse("", &[0, 1]), None), [0, 1, 0]);
    assert_eq!(c.serving(), c.serving_after(None));

    // Hysteresis 1 on quorum 3: down below 2, up again at 4.
    let mut prev: Option<Config> = None;
    for (weights, want_sorry) in [
        (&[1, 1, 1, 1][..], false), // 4 >= 3 + 1: up from the start
        (&[1, 1, 1, 0], false),     // 3: still up
        (&[1, 1, 0, 0], false),     // 2 = 3 - 1: still up
        (&[1, 0, 0, 0], true),      // 1 < 2: down
        (&[1, 1, 0, 0], true),      // 2: still down
        (&[1, 1, 1, 0], true),      // 3 = quorum: still down (needs 4)
        (&[1, 1, 1, 1], false),     // 4: up again
        (&[0, 0, 0, 0], true),      // none left
    ] {
        let c = parse("quorum = 3\nhysteresis = 1", weights);
        let served = c.serving_after(prev.as_ref()).expect("a sorry server");
        let w: Vec<u32> = served.services[0].real_servers.iter().map(|r| r.weight).collect();
        let want: Vec<u32> =
            if want_sorry { vec![0, 0, 0, 0, 1] } else { weights.iter().copied().chain([0]).collect() };
        assert_eq!(w, want, "alive {weights:?} after {:?}", prev.map(|p| served_weights(&p, None)));
        assert_eq!(served.serving_after(prev.as_ref()), None, "a served config is served as it is");
        prev = Some(served);
    }
    // Without a memory (the daemon's start) the service is up only at quorum + H.
    assert_eq!(served_weights(&parse("quorum = 3\nhysteresis = 1", &[1, 1, 1]), None), [0, 0, 0, 1]);

    let cases: &[(&str, usize, &str)] = &[
        ("quorum = 0", 8, "quorum"),
        ("quorum = -3", 8, "quorum"),
        ("quorum = 4294967296", 8, "quorum"),
        ("quorum = \"3\"", 8, "expected i64"),
        ("quorum = 3\nhysteresis = 3", 9, "hysteresis 3 must be less than the quorum 3"),
        ("hysteresis = 1", 8, "less than the quorum 1"),
        ("quorum = 3\nhysteresis = -1", 9, "hysteresis"),
    ];
    for (keys, line, msg) in cases {
        let e = Config::from_str(&quorum_svc(keys, &[1]), "q.toml").expect_err(keys);
        assert_eq!((e.file.as_str(), e.line), ("q.toml", Some(*line)), "{keys}: {e}");
        assert!(e.to_string().contains(msg), "{keys}: {e}");
    }
}

/// `start_down` (keepalived's `alpha`): parsed, rendered back, false by default.
#[test]
fn health_check_start_down() {
    let t = |extra: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n\
             [service.health_check]\ntype = \"tcp\"\n{extra}\n[[service.real_server]]\naddress = \"10.0.2.2\"\n"
        )
    };
    let c = Config::from_str(&t("start_down = true"), "a.toml").unwrap();
    assert!(c.services[0].health_checks.first().unwrap().start_down);
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    let d = Config::from_str(&t(""), "a.toml").unwrap();
    assert!(!d.services[0].health_checks.first().unwrap().start_down);
    let e = Config::from_str(&t("start_down = 1"), "a.toml").unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("a.toml", Some(9)), "{e}");
}

/// `[service.notify]` (keepalived's notify_up / notify_down / quorum_up / quorum_down):
/// parsed, rendered back, and each program held to the exec check's rules.
#[test]
fn notify_programs() {
    let svc = |table: &str| quorum_svc(&format!("[service.notify]\n{table}"), &[1]);
    let c = Config::from_str(
        &svc("up = [\"/usr/local/bin/rs\", \"up\"]\ndown = [\"/usr/local/bin/rs\", \"down\"]\n\
              quorum_down = [\"/bin/logger\", \"quorum lost\"]\nuser = \"nobody\"\ntimeout = 2.5"),
        "n.toml",
    )
    .unwrap();
    let n = c.services[0].notify.as_ref().expect("notify");
    assert_eq!(n.command("up"), Some(&["/usr/local/bin/rs".to_string(), "up".into()][..]));
    assert_eq!(n.command("down").map(|c| c[1].as_str()), Some("down"));
    assert_eq!(n.command("quorum_up"), None, "not set: nothing runs");
    assert_eq!(n.command("quorum_down").map(|c| c.len()), Some(2));
    assert_eq!((n.user.as_deref(), n.timeout), (Some("nobody"), 2.5));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    let d = Config::from_str(&svc("quorum_up = [\"/bin/true\"]"), "n.toml").unwrap();
    assert_eq!(d.services[0].notify.as_ref().map(|n| (n.timeout, n.user.clone())), Some((10.0, None)));
    assert_eq!(Config::from_str(&d.to_toml(), "r.toml").unwrap(), d);
    assert_eq!(Config::from_str(&quorum_svc("", &[1]), "n.toml").unwrap().services[0].notify, None);

    let cases: &[(&str, usize, &str)] = &[
        ("up = [\"rs-up.sh\"]", 9, "notify up \"rs-up.sh\" must be an absolute path"),
        ("down = []", 9, "notify down must not be empty"),
        ("quorum_up = [\"/bin/x\", \"a\\u0000b\"]", 9, "must not contain a NUL byte"),
        ("quorum_down = \"/bin/x\"", 9, "invalid type"),
        ("user = \"\"", 9, "notify user \"\" must be a user name"),
        ("timeout = 0", 9, "notify timeout 0 must be 0.01..=3600 seconds"),
        ("timeout = 7200.0", 9, "0.01..=3600"),
        ("bogus = 1", 9, "unknown field `bogus`"),
    ];
    for (table, line, msg) in cases {
        let e = Config::from_str(&svc(table), "n.toml").expect_err(table);
        assert_eq!((e.file.as_str(), e.line), ("n.toml", Some(*line)), "{table}: {e}");
        assert!(e.to_string().contains(msg), "{table}: {e}");
    }
}

#[test]
fn rp_filter_modes() {
    let c = |v: &str| Config::from_str(&format!("[engine]\nbackend = \"memory\"\n{v}"), "e.toml").unwrap();
    assert_eq!(c("").engine.rp_filter, RpFilter::Off, "Linux's default 0");
    for (v, want) in [("off", RpFilter::Off), ("loose", RpFilter::Loose), ("strict", RpFilter::Strict)] {
        let cfg = c(&format!("rp_filter = \"{v}\"\n"));
        assert_eq!(cfg.engine.rp_filter, want);
        assert_eq!(Config::from_str(&cfg.to_toml(), "r.toml").unwrap(), cfg, "rendered back");
    }
}

/// `one_packet` (ipvsadm --ops): off by default, on for a UDP service, rendered back.
#[test]
fn one_packet_on_udp_services() {
    let svc = |extra: &str| {
        format!("[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.1\"\nprotocol = \"udp\"\nports = [514]\n{extra}")
    };
    assert!(!Config::from_str(&svc(""), "o.toml").unwrap().services[0].one_packet);
    let c = Config::from_str(&svc("one_packet = true\n"), "o.toml").unwrap();
    assert!(c.services[0].one_packet);
    assert!(c.to_toml().contains("one_packet = true\n"));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "rendered back");
    assert!(!Config::from_str(&svc("one_packet = false\n"), "o.toml").unwrap().services[0].one_packet);
}

/// Scheduler flags (ipvsadm -b): the sh and mh names, flag-1/flag-2 for either, each
/// checked against the service's scheduler with the flag's line in the error.
#[test]
fn sched_flags_of_sh_and_mh() {
    let svc = |sched: &str, flags: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.1\"\nports = [80]\n\
             scheduler = \"{sched}\"\nsched_flags = [\n{flags}\n]\n"
        )
    };
    let c = Config::from_str(&svc("sh", "\"sh-fallback\", \"sh-port\""), "f.toml").unwrap();
    assert_eq!(c.services[0].sched_flags, SchedFlags { fallback: true, port: true });
    assert!(c.to_toml().contains("sched_flags = [\"sh-fallback\", \"sh-port\"]\n"), "{}", c.to_toml());
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "rendered back");
    let c = Config::from_str(&svc("mh", "\"flag-2\""), "f.toml").unwrap();
    assert_eq!(c.services[0].sched_flags, SchedFlags { fallback: false, port: true });
    assert!(c.to_toml().contains("sched_flags = [\"mh-port\"]\n"));
    // None by default; an empty list is none.
    let none = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.1\"\nports = [80]\nscheduler = \"mh\"\n";
    assert!(Config::from_str(none, "f.toml").unwrap().services[0].sched_flags.is_empty());
    assert!(!Config::from_str(none, "f.toml").unwrap().to_toml().contains("sched_flags"));
    for (sched, flags, want) in [
        ("mh", "\"sh-port\"", "applies to scheduler \"sh\", not \"mh\""),
        ("rr", "\"flag-1\"", "scheduler \"rr\" has no flags"),
        ("sh", "\"flag-3\"", "not used by any scheduler"),
        ("sh", "\"sh-fallback\",\n\"sh-prot\"", "unknown scheduler flag \"sh-prot\""),
    ] {
        let e = Config::from_str(&svc(sched, flags), "f.toml").unwrap_err();
        assert!(e.message.contains(want), "{sched} {flags}: {e}");
        assert_eq!(e.file, "f.toml");
        assert_eq!(e.line, Some(8 + flags.lines().count()), "the flag's line: {e}");
    }
}

/// `allow_from` / `deny_from`: addresses and CIDRs of the VIP's family; a CIDR with host
/// bits, another family or a bad entry is refused on its line.
#[test]
fn source_lists() {
    let svc = |vip: &str, lists: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"{vip}\"\nports = [80]\n\
             {lists}\n"
        )
    };
    let c = Config::from_str(
        &svc("10.0.0.1", "allow_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\ndeny_from = [\"10.9.0.0/16\"]"),
        "a.toml",
    )
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.allow_from, vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.7/32".parse().unwrap()]);
    assert_eq!(s.deny_from, vec!["10.9.0.0/16".parse::<IpNet>().unwrap()]);
    assert!(c.to_toml().contains("allow_from = [\"10.0.0.0/8\", \"192.0.2.7/32\"]\n"), "{}", c.to_toml());
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "rendered back");
    let c = Config::from_str(&svc("fd00::1", "deny_from = [\"2001:db8::/32\", \"::/0\"]"), "a.toml").unwrap();
    assert_eq!(c.services[0].deny_from.len(), 2);
    for (vip, lists, want) in [
        ("10.0.0.1", "allow_from = [\"10.0.0.1/8\"]", "host bits set"),
        ("10.0.0.1", "deny_from = [\"2001:db8::/32\"]", "the service's clients are IPv4"),
        ("fd00::1", "deny_from = [\"10.0.0.0/8\"]", "the service's clients are IPv6"),
        ("10.0.0.1", "deny_from = [\"10.0.0.0/33\"]", "prefix length must be 0..=32"),
        ("10.0.0.1", "allow_from = [\"nope\"]", "invalid IP address"),
        ("fd00::1", "allow_from = [\"::ffff:10.0.0.1\"]", "IPv4-mapped"),
    ] {
        let e = Config::from_str(&svc(vip, lists), "a.toml").unwrap_err();
        assert!(e.message.contains(want), "{lists}: {e}");
        assert_eq!(e.line, Some(7), "{lists}: {e}");
    }
}

/// `[engine] deny_from`: both families; a bad entry is refused on its line.
#[test]
fn engine_deny_list() {
    let c =
        Config::from_str("[engine]\nbackend = \"memory\"\ndeny_from = [\"192.0.2.0/24\", \"2001:db8::1\"]\n", "e.toml")
            .unwrap();
    assert_eq!(c.engine.deny_from.len(), 2);
    assert!(c.to_toml().contains("deny_from = [\"192.0.2.0/24\", \"2001:db8::1/128\"]\n"), "{}", c.to_toml());
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "rendered back");
    let e =
        Config::from_str("[engine]\nbackend = \"memory\"\ndeny_from = [\n\"192.0.2.1/24\"]\n", "e.toml").unwrap_err();
    assert!(e.message.contains("[engine]: deny_from entry \"192.0.2.1/24\": host bits set"), "{e}");
    assert_eq!(e.line, Some(4));
}

/// `source_conn_rate` / `source_conn_burst`: the burst defaults to the rate and needs one.
#[test]
fn source_conn_rate() {
    let svc = |lines: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.1\"\nports = [80]\n{lines}\n"
        )
    };
    let s = |lines: &str| Config::from_str(&svc(lines), "r.toml").map(|c| c.services[0].clone());
    assert_eq!(s("").map(|s| (s.source_conn_rate, s.source_conn_burst)), Ok((0, 0)));
    assert_eq!(s("source_conn_rate = 10").map(|s| (s.source_conn_rate, s.source_conn_burst)), Ok((10, 10)));
    let c = Config::from_str(&svc("source_conn_rate = 10\nsource_conn_burst = 50"), "r.toml").unwrap();
    assert!(c.to_toml().contains("source_conn_rate = 10\nsource_conn_burst = 50\n"));
    assert_eq!(Config::from_str(&c.to_toml(), "x.toml").unwrap(), c, "rendered back");
    for (lines, want) in [
        ("source_conn_burst = 5", "source_conn_burst needs a source_conn_rate"),
        ("source_conn_rate = 10\nsource_conn_burst = 0", "source_conn_burst"),
        ("source_conn_rate = -1", "source_conn_rate"),
        ("source_conn_rate = 10000001", "source_conn_rate"),
    ] {
        let e = s(lines).unwrap_err();
        assert!(e.message.contains(want), "{lines}: {e}");
        assert_eq!(e.line, Some(6 + lines.lines().count()), "{lines}: {e}");
    }
}

#[test]
fn udp_check_hex_octets() {
    use ferrovs_cfg::HealthCheck;
    let h = |s: &str, wild: bool| HealthCheck::hex_octets(s, wild);
    // keepalived's form: pairs of digits, spaces or tabs between octets, a lone digit an octet.
    assert_eq!(h("0a1B", false), Some((vec![0x0a, 0x1b], vec![0xff, 0xff])));
    assert_eq!(h(" 0a \t1b ", false), Some((vec![0x0a, 0x1b], vec![0xff, 0xff])));
    assert_eq!(h("a b", false), Some((vec![0x0a, 0x0b], vec![0xff, 0xff])));
    assert_eq!(h("abc", false), Some((vec![0xab, 0x0c], vec![0xff, 0xff])));
    assert_eq!(h("1x X2 xx x", true), Some((vec![0x10, 0x02, 0, 0], vec![0xf0, 0x0f, 0, 0xf0])));
    for bad in ["", " ", "1x", "0g", "0a-1b", "é"] {
        assert_eq!(h(bad, false), None, "{bad:?}");
    }
    assert_eq!(h("zz", true), None);
    assert!(h(&"00".repeat(HealthCheck::MAX_UDP_OCTETS), false).is_some());
    assert!(h(&"00".repeat(HealthCheck::MAX_UDP_OCTETS + 1), false).is_none());
}

/// `udp`'s `min_reply_length` / `max_reply_length`: parsed, implying `require_reply`,
/// rendered back; out of range, the wrong way round or on another type, an error at the line.
#[test]
fn udp_reply_lengths() {
    let t = |check: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"u\"\nvip = \"10.0.0.100\"\nprotocol = \"udp\"\n\
             ports = [53]\n[service.health_check]\n{check}\n[[service.real_server]]\naddress = \"10.0.2.2\"\n"
        )
    };
    let c = Config::from_str(&t("type = \"udp\"\nmin_reply_length = 12\nmax_reply_length = 512"), "a.toml").unwrap();
    let h = &c.services[0].health_checks[0];
    assert_eq!((h.min_reply_length, h.max_reply_length, h.require_reply), (Some(12), Some(512), true));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    for (check, line, part) in [
        ("type = \"udp\"\nmin_reply_length = 13\nmax_reply_length = 12", 11, "below min_reply_length"),
        ("type = \"udp\"\nmax_reply_length = 65536", 10, "between 0 and 65535"),
        ("type = \"udp\"\nmin_reply_length = -1", 10, "between 0 and 65535"),
        ("type = \"dns\"\nmin_reply_length = 1", 10, "for type \"udp\""),
    ] {
        let e = Config::from_str(&t(check), "b.toml").unwrap_err();
        assert_eq!(e.line, Some(line), "{check}: {e}");
        assert!(e.to_string().contains(part), "{check}: {e}");
    }
}

proptest::proptest! {
    /// Any text as a `payload` or `reply`: octets or `None`, never a panic; the hex of any
    /// octets, split by spaces anywhere between octets, reads back as them, all nibbles to match.
    #[test]
    fn hex_octets_never_panic(t in "[0-9a-fA-FxX \t]{0,40}|\\PC{0,20}", wild in proptest::prelude::any::<bool>()) {
        if let Some((d, m)) = ferrovs_cfg::HealthCheck::hex_octets(&t, wild) {
            proptest::prop_assert_eq!(d.len(), m.len());
            proptest::prop_assert!(!d.is_empty() && d.len() <= ferrovs_cfg::HealthCheck::MAX_UDP_OCTETS);
        }
    }
    #[test]
    fn hex_octets_read_back(
        octets in proptest::collection::vec((proptest::prelude::any::<u8>(), proptest::prelude::any::<bool>()), 1..64),
        upper in proptest::prelude::any::<bool>(),
    ) {
        let mut t = String::new();
        for (o, space) in &octets {
            t.push_str(&if upper { format!("{o:02X}") } else { format!("{o:02x}") });
            if *space {
                t.push(' ');
            }
        }
        let want: Vec<u8> = octets.iter().map(|(o, _)| *o).collect();
        proptest::prop_assert_eq!(
            ferrovs_cfg::HealthCheck::hex_octets(&t, false),
            Some((want.clone(), vec![0xff; want.len()]))
        );
    }
}

/// Several health checks: `[[service.health_check]]` tables or an inline array; each
/// validated (errors at their line), parsed in order, rendered back; they must agree on
/// `on_fail` and `start_down`, and a service has at most `HealthCheck::MAX_PER_SERVICE`.
#[test]
fn several_health_checks() {
    let t = |checks: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n\
             {checks}\n[[service.real_server]]\naddress = \"10.0.2.2\"\n"
        )
    };
    let two = "[[service.health_check]]\ntype = \"http\"\npath = \"/health\"\nfall = 2\n\
               [[service.health_check]]\ntype = \"tcp\"\nport = 8080\non_fail = \"quiesce\"\n";
    let c = Config::from_str(&t(two), "a.toml").unwrap();
    let h = &c.services[0].health_checks;
    assert_eq!(h.iter().map(|h| h.kind).collect::<Vec<_>>(), [HealthCheckKind::Http, HealthCheckKind::Tcp]);
    assert_eq!((h[0].path.as_deref(), h[0].fall, h[1].port), (Some("/health"), 2, Some(8080)));
    let text = c.to_toml();
    assert_eq!(text.matches("[[service.health_check]]").count(), 2, "{text}");
    assert_eq!(Config::from_str(&text, "r.toml").unwrap(), c, "{text}");

    // The inline forms; one check renders as the table it always was.
    let inline = Config::from_str(
        &t("health_check = [{ type = \"http\", path = \"/health\", fall = 2 }, { type = \"tcp\", port = 8080 }]"),
        "i.toml",
    )
    .unwrap();
    assert_eq!(inline, c);
    let one = Config::from_str(&t("health_check = { type = \"tcp\" }"), "o.toml").unwrap();
    assert_eq!(one.services[0].health_checks.len(), 1);
    assert!(one.to_toml().contains("\n[service.health_check]\n"), "{}", one.to_toml());
    let none = Config::from_str(&t("health_check = []"), "n.toml").unwrap();
    assert!(none.services[0].health_checks.is_empty());

    // Errors name the line of the check at fault.
    let bad = |checks: &str| Config::from_str(&t(checks), "b.toml").unwrap_err();
    let e = bad("[[service.health_check]]\ntype = \"tcp\"\n[[service.health_check]]\ntype = \"tcp\"\nbogus = 1\n");
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = bad("[[service.health_check]]\ntype = \"tcp\"\n[[service.health_check]]\ntype = \"sctp\"\n");
    assert_eq!(e.line, Some(10), "{e}");
    let e = bad(
        "[[service.health_check]]\ntype = \"tcp\"\n[[service.health_check]]\ntype = \"tcp\"\non_fail = \"remove\"\n",
    );
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.to_string().contains("same on_fail"), "{e}");
    let e =
        bad("[[service.health_check]]\ntype = \"tcp\"\nstart_down = true\n[[service.health_check]]\ntype = \"ping\"\n");
    assert!(e.to_string().contains("same start_down"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    let many = "[[service.health_check]]\ntype = \"tcp\"\n".repeat(HealthCheck::MAX_PER_SERVICE + 1);
    let e = bad(&many);
    assert!(e.to_string().contains("at most 16"), "{e}");
    assert_eq!(
        Config::from_str(&t(&many[many.find("\n[[").unwrap() + 1..]), "m.toml").unwrap().services[0]
            .health_checks
            .len(),
        16
    );
    // Neither a table nor an array of tables.
    let e = bad("health_check = \"tcp\"");
    assert_eq!(e.line, Some(7), "{e}");
}

/// A real server's own checks (`[service.real_server.health_check]`, an array of them, or
/// `health_check = []` for none) replace its service's; they agree with the service's
/// checks on `on_fail` and `start_down`; they render back.
#[test]
fn real_server_health_checks() {
    let t = |svc: &str, rs: &str| {
        format!(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n\
             {svc}\n[[service.real_server]]\naddress = \"10.0.2.2\"\n[[service.real_server]]\naddress = \"10.0.2.3\"\n{rs}\n\
             [[service.real_server]]\naddress = \"10.0.2.4\"\nhealth_check = []\n"
        )
    };
    let c = Config::from_str(
        &t(
            "[service.health_check]\ntype = \"http\"\non_fail = \"remove\"",
            "[[service.real_server.health_check]]\ntype = \"tcp\"\nport = 8080\non_fail = \"remove\"\n\
             [[service.real_server.health_check]]\ntype = \"ping\"\non_fail = \"remove\"",
        ),
        "a.toml",
    )
    .unwrap();
    let s = &c.services[0];
    assert!(s.real_servers.iter().take(2).all(|r| !r.quiesces(&s.health_checks)));
    let kinds = |r: &RealServer| r.checks(&s.health_checks).iter().map(|h| h.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&s.real_servers[0]), [HealthCheckKind::Http]);
    assert_eq!(kinds(&s.real_servers[1]), [HealthCheckKind::Tcp, HealthCheckKind::Ping]);
    assert_eq!(kinds(&s.real_servers[2]), []);
    assert_eq!(s.real_servers[2].health_checks, Some(Vec::new()));
    let text = c.to_toml();
    assert_eq!(Config::from_str(&text, "r.toml").unwrap(), c, "{text}");
    assert!(text.contains("[[service.real_server.health_check]]") && text.contains("health_check = []"), "{text}");

    // on_fail is the server's (keepalived's inhibit_on_failure): its own checks may say
    // another than the service's; the checks of one server agree (an error at the line).
    let one = Config::from_str(
        &t(
            "[service.health_check]\ntype = \"http\"",
            "[service.real_server.health_check]\ntype = \"tcp\"\non_fail = \"remove\"",
        ),
        "o.toml",
    )
    .unwrap();
    let s = &one.services[0];
    let q: Vec<bool> = s.real_servers.iter().map(|r| r.quiesces(&s.health_checks)).collect();
    assert_eq!(q, [true, false, true]);
    assert!(one.to_toml().contains("\n[service.real_server.health_check]\n"), "{}", one.to_toml());
    let e = Config::from_str(
        &t(
            "",
            "[[service.real_server.health_check]]\ntype = \"tcp\"\n[[service.real_server.health_check]]\ntype = \"ping\"\non_fail = \"remove\"",
        ),
        "b.toml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(16), "{e}");
    assert!(e.to_string().contains("same on_fail"), "{e}");
    // start_down is the service's: every check agrees.
    let e = Config::from_str(
        &t("[service.health_check]\ntype = \"http\"", "health_check = { type = \"tcp\", start_down = true }"),
        "b.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("same start_down"), "{e}");
    // `address` (keepalived's connect_ip): a server's own check only, a host's address, not exec.
    let c =
        Config::from_str(&t("", "health_check = { type = \"tcp\", address = \"192.168.9.3\", port = 22 }"), "a.toml")
            .unwrap();
    let own = c.services[0].real_servers[1].health_checks.as_deref().unwrap();
    assert_eq!(own[0].address, Some(ip("192.168.9.3")));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    let c = Config::from_str(
        &t(
            "health_check = { type = \"tcp\", source = \"10.0.2.1\" }",
            "health_check = { type = \"ping\", address = \"fd00::3\", source = \"fd00::1\" }",
        ),
        "s.toml",
    )
    .unwrap();
    assert_eq!(c.services[0].health_checks[0].source, Some(ip("10.0.2.1")));
    assert_eq!(Config::from_str(&c.to_toml(), "r.toml").unwrap(), c, "{}", c.to_toml());
    for (svc, rs, part) in [
        ("health_check = { type = \"tcp\", address = \"192.168.9.3\" }", "", "belongs in a real server's own"),
        (
            "",
            "health_check = { type = \"exec\", command = [\"/bin/true\"], address = \"192.168.9.3\" }",
            "has no `address`",
        ),
        ("", "health_check = { type = \"tcp\", address = \"0.0.0.0\" }", "not a host's"),
        ("", "health_check = { type = \"tcp\", address = \"ff02::1\" }", "not a host's"),
        ("", "health_check = { type = \"tcp\", address = \"10.0.0.300\" }", "IP address"),
        // `source` (keepalived's bindto): a host's address of the family checked.
        ("health_check = { type = \"tcp\", source = \"fd00::1\" }", "", "cannot reach 10.0.2.2"),
        ("", "health_check = { type = \"tcp\", source = \"fd00::1\" }", "cannot reach 10.0.2.3"),
        ("", "health_check = { type = \"tcp\", address = \"fd00::9\", source = \"10.0.2.1\" }", "not in the family"),
        ("", "health_check = { type = \"exec\", command = [\"/bin/true\"], source = \"10.0.2.1\" }", "has no `source`"),
        ("", "health_check = { type = \"ping\", source = \"224.0.0.1\" }", "not a host's"),
    ] {
        let e = Config::from_str(&t(svc, rs), "b.toml").unwrap_err();
        assert!(e.to_string().contains(part), "{svc}{rs}: {e}");
        assert!(e.line.is_some(), "{e}");
    }
    let e = Config::from_str(&t("", "[service.real_server.health_check]\ntype = \"tcp\"\nbogus = 2"), "b.toml")
        .unwrap_err();
    assert_eq!(e.line, Some(14), "{e}");
}

/// `[engine] health_check_threads`: 128 by default, rendered back, bounded (the error names
/// the file and line).
#[test]
fn health_check_threads() {
    let c = Config::from_str("[engine]\nbackend = \"memory\"\n", "h.toml").unwrap();
    assert_eq!(c.engine.health_check_threads, 128);
    let c = Config::from_str("[engine]\nbackend = \"memory\"\nhealth_check_threads = 4\n", "h.toml").unwrap();
    assert_eq!(c.engine.health_check_threads, 4);
    assert_eq!(Config::from_str(&c.to_toml(), "h2.toml").unwrap().engine.health_check_threads, 4);
    for bad in ["0", "65537", "-1", "\"8\""] {
        let text = format!("[engine]\nbackend = \"memory\"\nhealth_check_threads = {bad}\n");
        let e = Config::from_str(&text, "h.toml").expect_err(&text);
        assert_eq!(e.line, Some(3), "{text}: {e}");
        assert!(e.to_string().starts_with("h.toml:3"), "{text}: {e}");
        assert!(bad.starts_with('"') || e.message.contains("health_check_threads"), "{text}: {e}");
    }
}
