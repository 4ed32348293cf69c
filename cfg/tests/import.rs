//! Importers: real-world samples under tests/data/, rendered with to_toml
//! and parsed back through the validator.

use std::collections::HashMap;
use std::net::IpAddr;

use ferrovs_cfg::import::*;
use ferrovs_cfg::*;

fn data(f: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(f)).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Render, prepend a memory-backend engine, parse back: equal services.
fn roundtrip(imp: &Import) -> Config {
    let t = format!("[engine]\nbackend = \"memory\"\n\n{}", imp.to_toml());
    let c = Config::from_str(&t, "imported.toml").unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert_eq!(c.services, imp.services, "{t}");
    c
}

fn warned(imp: &Import, line: usize, part: &str) -> bool {
    imp.warnings.iter().any(|w| w.starts_with(&format!("line {line}:")) && w.contains(part))
}

#[test]
fn redhat_ftp_lvs_cf() {
    let imp = from_lvs_cf(&data("redhat-ftp-lvs.cf")).unwrap();
    roundtrip(&imp);
    assert_eq!(imp.services.len(), 2, "inactive virtual skipped");
    let ftp = &imp.services[0];
    assert_eq!(ftp.name, "ftp");
    assert_eq!(ftp.vip, ip("10.0.0.100"));
    assert_eq!(ftp.ports, vec![PortRange { lo: 21, hi: 21 }]);
    assert_eq!(ftp.fwmark, Some(21));
    assert_eq!(ftp.ftp, Some(FtpOptions::default()));
    assert_eq!(ftp.forward, Forward::Nat);
    assert_eq!(ftp.scheduler, "wlc");
    assert_eq!(ftp.persistence, Some(Persistence { timeout: 300, netmask: 32 }));
    let h = ftp.health_checks.first().unwrap();
    assert_eq!(h.kind, HealthCheckKind::SendExpect);
    assert_eq!(h.send.as_deref(), Some("quit\r\n"));
    assert_eq!(h.expect.as_deref(), Some("220"));
    // timeout = 6 (dead after 6 s) and reentry = 15 (back after 15 s): checks 3 s apart,
    // down after 2 failures, up after 5 successes.
    assert_eq!((h.interval, h.timeout, h.fall, h.rise), (3.0, 3.0, 2, 5));
    assert!(h.quiesce);
    assert_eq!(ftp.real_servers.len(), 2, "inactive server skipped");
    assert_eq!(
        ftp.real_servers[1],
        RealServer {
            address: ip("10.0.2.3"),
            port: None,
            weight: 2,
            upper: 0,
            lower: 0,
            forward: None,
            proxy_protocol: None,
            health_checks: None
        }
    );
    let http = &imp.services[1];
    assert_eq!(http.ftp, None);
    assert!(!http.health_checks.first().unwrap().quiesce);

    assert!(warned(&imp, 20, "fwmark 21 with port 21"), "{:#?}", imp.warnings);
    assert!(warned(&imp, 47, "server ftp3 is inactive"));
    assert!(warned(&imp, 74, "virtual old is inactive"));
    assert!(!imp.warnings.iter().any(|w| w.contains("reentry") || w.contains("timeout")), "{:#?}", imp.warnings);
    assert!(warned(&imp, 13, "heartbeat_port"));
    // network = nat is imported, not warned about
    assert!(!imp.warnings.iter().any(|w| w.contains("network")));
}

#[test]
fn lvs_cf_direct_routing_and_errors() {
    let t = "network = direct\nvirtual web {\n  address = 10.0.0.1 eth0:1\n  port = 80\n  frobnicate = 3\n  server a { address = 10.0.2.2 weight = 4 }\n}\n";
    let imp = from_lvs_cf(t).unwrap();
    assert_eq!(imp.services[0].forward, Forward::Dr);
    assert_eq!(imp.services[0].real_servers[0].weight, 4);
    assert!(warned(&imp, 5, "frobnicate"));
    roundtrip(&imp);

    let e = from_lvs_cf("virtual web {\n  address = 10.0.0.1\n  port = 80\n  scheduler = fifo\n}\n").unwrap_err();
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("unknown scheduler"));
    let e = from_lvs_cf("virtual web {\n  address = 10.0.0.300\n}\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    let e = from_lvs_cf("virtual web {\n  address = 10.0.0.1\n  port = 80\n").unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("not closed"));
    let e = from_lvs_cf("network = bridge\n").unwrap_err();
    assert_eq!(e.line, Some(1));
    let e = from_lvs_cf("virtual web {\n  address = 10.0.0.1\n  port = 80\n  reentry = -1\n}\n").unwrap_err();
    assert_eq!(e.line, Some(4));

    // A reentry time longer than the 1000 checks a rise may count: cut, and said.
    let imp =
        from_lvs_cf("virtual web {\n  address = 10.0.0.1\n  port = 80\n  timeout = 6\n  reentry = 86400\n}\n").unwrap();
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.interval, h.fall, h.rise), (3.0, 2, 1000));
    assert!(warned(&imp, 1, "reentry = 86400 is more than 1000 checks 3 s apart"), "{:#?}", imp.warnings);
    roundtrip(&imp);
}

#[test]
fn keepalived_ftp_fwmark() {
    let imp = from_keepalived(&data("keepalived-ftp-fwmark.conf")).unwrap();
    roundtrip(&imp);
    let s = &imp.services[0];
    assert_eq!(s.name, "fwm21");
    assert_eq!(s.fwmark, Some(21));
    assert_eq!(s.vip, ip("0.0.0.0"));
    assert!(s.ports.is_empty());
    assert_eq!(s.forward, Forward::Dr);
    assert_eq!(s.persistence, Some(Persistence { timeout: 300, netmask: 24 }));
    assert!(s.ftp.is_some());
    let h = s.health_checks.first().unwrap();
    assert_eq!((h.kind, h.port, h.timeout, h.interval, h.fall), (HealthCheckKind::Tcp, Some(21), 3.0, 6.0, 4));
    assert_eq!(h.retry_interval, Some(3.0), "retry 3 each delay_before_retry 3 after a failure");
    assert!(!h.quiesce);
    assert_eq!(s.real_servers.len(), 2);
    assert!(warned(&imp, 23, "firewall mark 21"));
    assert!(!imp.warnings.iter().any(|w| w.contains("delay_before_retry")), "{:#?}", imp.warnings);
    assert!(warned(&imp, 5, "global_defs"));
    assert!(warned(&imp, 12, "vrrp_instance"));

    // With a mark mapping the service gets its VIP and ports.
    let mut marks = HashMap::new();
    marks.insert(
        (21, false),
        (ip("10.0.0.100"), vec![PortRange { lo: 21, hi: 21 }, PortRange { lo: 10000, hi: 10100 }]),
    );
    let imp = from_keepalived_with_marks(&data("keepalived-ftp-fwmark.conf"), &marks).unwrap();
    let s = &imp.services[0];
    assert_eq!(s.vip, ip("10.0.0.100"));
    assert!(s.has_port(21) && s.has_port(10050) && !s.has_port(80));
    assert!(s.ftp.is_some());
    assert!(!warned(&imp, 23, "firewall mark 21"));
    roundtrip(&imp);
}

#[test]
fn keepalived_nat() {
    let imp = from_keepalived(&data("keepalived-ftp-nat.conf")).unwrap();
    roundtrip(&imp);
    let names: Vec<&str> = imp.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tcp-10.0.0.100-21", "tcp-10.0.0.100-80", "udp-10.0.0.100-53"]);
    let ftp = &imp.services[0];
    assert!(ftp.ftp.is_some());
    assert!(ftp.health_checks.first().unwrap().quiesce, "inhibit_on_failure");
    assert_eq!(ftp.real_servers[1].weight, 2);
    let web = &imp.services[1];
    assert_eq!(web.scheduler, "rr");
    let h = web.health_checks.first().expect("HTTP_GET imported");
    assert_eq!((h.kind, h.path.as_deref(), h.status, h.timeout), (HealthCheckKind::Http, Some("/"), Some(200), 3.0));
    assert_eq!((web.real_servers[0].upper, web.real_servers[0].lower), (1000, 800));
    assert!(!imp.warnings.iter().any(|w| w.contains("HTTP_GET")), "{:?}", imp.warnings);
    assert!(!warned(&imp, 33, "sorry_server"), "imported");
    assert_eq!(web.sorry_server, Some(SorryServer { address: "10.0.2.9".parse().unwrap(), port: Some(80) }));
    let dns = &imp.services[2];
    assert_eq!((dns.protocol, dns.forward, dns.scheduler.as_str()), (Protocol::Udp, Forward::Dr, "sh"));
}

#[test]
fn keepalived_errors() {
    let e = from_keepalived("virtual_server 10.0.0.1 80 {\n  lb_kind FULLNAT\n}\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    let e = from_keepalived("virtual_server 10.0.0.1 80 {\n  real_server 10.0.0.x 80 {\n  }\n}\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    let e = from_keepalived("virtual_server 10.0.0.1 80 {\n  lb_algo rr\n").unwrap_err();
    assert_eq!(e.line, Some(1));
    let e = from_keepalived("}\n").unwrap_err();
    assert_eq!(e.line, Some(1));
    // comments with # and !
    let imp = from_keepalived("! c\nvirtual_server 10.0.0.1 80 { # c\n  lb_algo rr ! c\n}\n").unwrap();
    assert_eq!(imp.services[0].scheduler, "rr");
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
}

#[test]
fn keepalived_persistence_timeout_as_keepalived_reads_it() {
    // keepalived's pto_handler: no value is IPVS_SVC_PERSISTENT_TIMEOUT (360 s); 0 is
    // "persistence_timeout invalid". Importing 0 as a timeout gave a service the validator refuses.
    let imp =
        from_keepalived("virtual_server 10.0.0.1 80 {\n  persistence_timeout\n  real_server 10.0.2.2 80 {\n  }\n}\n")
            .unwrap();
    assert_eq!(imp.services[0].persistence, Some(Persistence { timeout: 360, netmask: 32 }));
    roundtrip(&imp);
    let e = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  lb_algo rr\n  persistence_timeout 0\n  real_server 10.0.2.2 80 {\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(3)), "{e}");
    assert!(e.message.contains("persistence_timeout"), "{e}");
}

#[test]
fn keepalived_persistence_granularity_alone_is_persistent() {
    // keepalived's pgr_handler sets persistence_timeout to 360 s when none is set: the service
    // is persistent, not "without effect".
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  persistence_granularity 255.255.255.0\n  real_server 10.0.2.2 80 {\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(imp.services[0].persistence, Some(Persistence { timeout: 360, netmask: 24 }), "{:?}", imp.warnings);
    roundtrip(&imp);
}

#[test]
fn keepalived_duplicate_real_server() {
    // keepalived: "real server ... is duplicated - removing second rs". The importer kept both,
    // and the rendered TOML failed validation (a line of the rendered file, not of keepalived.conf).
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    weight 2\n  }\n  real_server 10.0.2.2 80 {\n    weight 5\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(imp.services[0].real_servers.len(), 1);
    assert_eq!(imp.services[0].real_servers[0].weight, 2, "the first one is kept");
    assert!(warned(&imp, 5, "10.0.2.2"), "{:?}", imp.warnings);
    roundtrip(&imp);
}

#[test]
fn importers_skip_a_byte_order_mark() {
    // A file saved by a Windows editor starts with U+FEFF. It became part of the first word:
    // lvs.cf lost `network = direct` (every service imported as NAT), keepalived.conf its first
    // virtual_server ("\u{feff}virtual_server is not supported").
    let imp = from_lvs_cf("\u{feff}network = direct\nvirtual web {\n  address = 10.0.0.1\n  port = 80\n}\n").unwrap();
    assert_eq!(imp.services[0].forward, Forward::Dr, "{:?}", imp.warnings);
    let imp = from_keepalived("\u{feff}virtual_server 10.0.0.1 80 {\n  lb_algo rr\n}\n").unwrap();
    assert_eq!(imp.services.len(), 1, "{:?}", imp.warnings);
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
}

#[test]
fn keepalived_virtual_server_without_port_is_every_port() {
    // keepalived >= 2.0.7: `virtual_server IP 0` or `virtual_server IP` is IPVS's port-zero
    // service (every port of the VIP), made persistent (360 s) when it is not already.
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 0 {\n  persistence_timeout 600\n  real_server 10.0.2.2 {\n  }\n}\n\
         virtual_server 10.0.0.2 {\n  real_server 10.0.2.3 {\n  }\n}\n",
    )
    .unwrap();
    let (a, b) = (&imp.services[0], &imp.services[1]);
    assert_eq!((a.vip, a.ports.is_empty()), (ip("10.0.0.1"), true));
    assert_eq!(a.persistence, Some(Persistence { timeout: 600, netmask: 32 }));
    assert_eq!((b.vip, b.ports.is_empty()), (ip("10.0.0.2"), true));
    assert_eq!(b.persistence, Some(Persistence { timeout: 360, netmask: 32 }));
    assert!(warned(&imp, 6, "persistent"), "{:?}", imp.warnings);
    roundtrip(&imp);
}

#[test]
fn importers_refuse_two_services_on_one_vip_port() {
    // Two services on the same VIP, protocol and port were both imported; the rendered TOML
    // then failed validation ("overlaps") at a line of the rendered file, not of the source.
    let e = from_lvs_cf(
        "virtual a {\n  address = 10.0.0.1\n  port = 80\n}\nvirtual b {\n  address = 10.0.0.1\n  port = 80\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(5)), "{e}");
    let e = from_keepalived("virtual_server 10.0.0.1 0 {\n}\nvirtual_server 10.0.0.1 80 {\n}\n")
        .map(|i| i.to_toml())
        .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(3)), "{e}");
    let mut marks = HashMap::new();
    marks.insert((1, false), (ip("10.0.0.1"), vec![PortRange { lo: 80, hi: 90 }]));
    let e = from_keepalived_with_marks("virtual_server fwmark 1 {\n}\nvirtual_server 10.0.0.1 85 {\n}\n", &marks)
        .map(|i| i.to_toml())
        .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(3)), "{e}");
    // Firewall marks without a mapping all get 0.0.0.0 and every port, to be set by hand (warned).
    let imp = from_keepalived("virtual_server fwmark 1 {\n}\nvirtual_server fwmark 2 {\n}\n").unwrap();
    assert_eq!(imp.services.len(), 2);
}

#[test]
fn lvs_cf_server_address_twice() {
    // Two `server` blocks with one address (ipvsadm -a refuses the second: "Destination already
    // exists") were both imported; the rendered TOML failed validation in the rendered file.
    let e = from_lvs_cf(
        "virtual web {\n  address = 10.0.0.1\n  port = 80\n  server a {\n    address = 10.0.2.2\n  }\n  server b {\n    address = 10.0.2.2\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(7)), "{e}");
    assert!(e.message.contains("10.0.2.2"), "{e}");
}

#[test]
fn keepalived_real_server_of_another_family() {
    // An IPv6 real server of an IPv4 virtual_server (IPVS allows it only for tunnelling, with
    // kernel support) was imported as is; the rendered TOML failed validation in the rendered
    // file ("mixed families need forward = \"fnat\"").
    let e = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  lb_kind TUN\n  real_server 10.0.2.2 80 {\n  }\n  real_server 2001:db8::2 80 {\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(5)), "{e}");
    assert!(e.message.contains("2001:db8::2"), "{e}");
}

#[test]
fn keepalived_lthreshold_above_uthreshold() {
    // Imported as is; the rendered TOML failed validation in the rendered file
    // ("lower threshold 20 is above upper threshold 10").
    let e = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    uthreshold 10\n    lthreshold 20\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(4)), "{e}");
}

#[test]
fn keepalived_tcp_check_retry_counts_after_the_first_failure() {
    // keepalived's tcp_epilog: a failed check with retry_it < retry is retried (retry_it + 1);
    // the server goes down on the failure that finds retry_it >= retry. `retry N` is N + 1
    // failures in a row (retry 0: the first failure). The importer made it fall = N (and
    // retry 0 fall = 1 by accident), taking servers down one check early.
    let conf = |r: u32| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n  real_server 10.0.2.2 80 {{\n    TCP_CHECK {{\n      retry {r}\n    }}\n  }}\n}}\n"
        )
    };
    for (retry, fall) in [(0, 1), (1, 2), (3, 4), (999, 1000)] {
        let imp = from_keepalived(&conf(retry)).unwrap();
        assert_eq!(imp.services[0].health_checks.first().unwrap().fall, fall, "retry {retry}");
        roundtrip(&imp);
    }
    // fall is at most 1000 in ferrovs: retry 1000 is refused at its line, not rendered.
    let e = from_keepalived(&conf(1000)).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(4)), "{e}");
}

#[test]
fn keepalived_inhibit_on_failure_as_keepalived_reads_it() {
    // keepalived: `inhibit_on_failure [true|false]` per real_server, and in the virtual_server as
    // the default of its real servers. The importer took `inhibit_on_failure false` for true,
    // ignored the virtual_server's ("not supported"), and quiesced every server of a service
    // when one of them had it, without a word.
    let conf = |vs: &str, rs1: &str, rs2: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n  {vs}\n  real_server 10.0.2.2 80 {{\n    {rs1}\n    TCP_CHECK {{\n    }}\n  }}\n\
             real_server 10.0.2.3 80 {{\n    {rs2}\n    TCP_CHECK {{\n    }}\n  }}\n}}\n"
        )
    };
    let quiesce = |imp: &Import| imp.services[0].health_checks.first().unwrap().quiesce;
    let imp = from_keepalived(&conf("inhibit_on_failure", "", "")).unwrap();
    assert!(quiesce(&imp), "{:?}", imp.warnings);
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    roundtrip(&imp);
    let imp = from_keepalived(&conf("", "inhibit_on_failure false", "inhibit_on_failure off")).unwrap();
    assert!(!quiesce(&imp));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let imp = from_keepalived(&conf("inhibit_on_failure", "inhibit_on_failure no", "inhibit_on_failure no")).unwrap();
    assert!(!quiesce(&imp), "the real servers' own setting wins");
    // Mixed: each server's own (it was imported as quiesce for all, with a warning): the
    // second server gets its checks with on_fail = "remove".
    let imp = from_keepalived(&conf("", "inhibit_on_failure", "")).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    let s = &c.services[0];
    let q: Vec<bool> = s.real_servers.iter().map(|r| r.quiesces(&s.health_checks)).collect();
    assert_eq!(q, [true, false]);
    assert_eq!(s.real_servers[0].health_checks, None);
    let e = from_keepalived(&conf("", "inhibit_on_failure maybe", "")).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(4)), "{e}");
}

#[test]
fn importers_hold_numbers_to_the_validator_limits() {
    // A persistence timeout above 31 days (2678400 s, ipvsadm's and the validator's limit) or a
    // keepalived u/lthreshold above INT_MAX was imported as is; the rendered TOML then failed
    // validation at a line of the rendered file, not of the source.
    let ok = from_keepalived("virtual_server 10.0.0.1 80 {\n  persistence_timeout 2678400\n}\n").unwrap();
    roundtrip(&ok);
    let e = from_keepalived("virtual_server 10.0.0.1 80 {\n  persistence_timeout 2678401\n}\n")
        .map(|i| i.to_toml())
        .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(2)), "{e}");
    assert!(e.message.contains("2678400"), "{e}");
    for key in ["uthreshold", "lthreshold"] {
        let t =
            |v: u64| format!("virtual_server 10.0.0.1 80 {{\n  real_server 10.0.2.2 80 {{\n    {key} {v}\n  }}\n}}\n");
        roundtrip(&from_keepalived(&t(i32::MAX as u64)).unwrap());
        let e = from_keepalived(&t(i32::MAX as u64 + 1)).map(|i| i.to_toml()).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(3)), "{key}: {e}");
    }
    let t = |v: u32| format!("virtual w {{\n  address = 10.0.0.1\n  port = 80\n  persistent = {v}\n}}\n");
    roundtrip(&from_lvs_cf(&t(2_678_400)).unwrap());
    let e = from_lvs_cf(&t(2_678_401)).map(|i| i.to_toml()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(4)), "{e}");
}

#[test]
fn importers_firewall_mark_zero() {
    // Mark 0 is no mark to IPVS. keepalived's `virtual_server fwmark 0` and lvs.cf's
    // `fwmark = 0` became `fwmark = 0`, which the validator refuses at a line of the rendered
    // file. keepalived's is an error at its line; in lvs.cf 0 is Piranha's "no mark": the
    // address:port service.
    let e = from_keepalived("virtual_server fwmark 0 {\n}\n").map(|i| i.to_toml()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("keepalived.conf", Some(1)), "{e}");
    assert!(e.message.contains("firewall mark"), "{e}");
    let imp = from_lvs_cf("virtual w {\n  address = 10.0.0.1\n  port = 80\n  fwmark = 0\n}\n").unwrap();
    assert_eq!(imp.services[0].fwmark, None);
    assert_eq!(imp.services[0].ports, vec![PortRange { lo: 80, hi: 80 }]);
    assert!(!imp.warnings.iter().any(|w| w.contains("fwmark")), "{:?}", imp.warnings);
    roundtrip(&imp);
    let e = from_lvs_cf("virtual w {\n  address = 10.0.0.1\n  fwmark = 0\n}\n").unwrap_err();
    assert!(e.message.contains("no port"), "{e}");
}

#[test]
fn lvs_cf_empty_expect_is_a_connect_check() {
    // `expect = ""` (nanny's empty expect matches whatever the server answers) was imported as
    // type = "send_expect" with expect = "", which the validator refuses ("needs a non-empty
    // expect") at a line of the rendered file.
    let imp = from_lvs_cf(
        "virtual w {\n  address = 10.0.0.1\n  port = 80\n  send = \"GET / HTTP/1.0\\r\\n\\r\\n\"\n  expect = \"\"\n}\n",
    )
    .unwrap();
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.kind, h.send.as_deref(), h.expect.as_deref()), (HealthCheckKind::Tcp, None, None));
    assert!(warned(&imp, 1, "expect is empty"), "{:?}", imp.warnings);
    roundtrip(&imp);
}

#[test]
fn lvs_cf_server_of_another_family() {
    // An IPv4 server of an IPv6 virtual was imported as is; the rendered TOML failed validation
    // in the rendered file ("mixed families need forward = \"fnat\"").
    let e = from_lvs_cf(
        "virtual w {\n  address = 2001:db8::1\n  port = 80\n  server a {\n    address = 2001:db8::2\n  }\n  server b {\n    address = 10.0.2.2\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(7)), "{e}");
    assert!(e.message.contains("10.0.2.2"), "{e}");
}

#[test]
fn importers_server_without_port_is_the_service_port() {
    // On a single-port service a real server without a port is that port (ipvsadm -r ADDR is
    // ADDR:service port, and ferrovsadm finds it so): `10.0.2.2` and `10.0.2.2 80` of a port-80
    // service are one destination. Both were imported (and validated) as two servers, which
    // doubled the server's share of new connections.
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    weight 2\n  }\n  real_server 10.0.2.2 {\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(imp.services[0].real_servers.len(), 1);
    assert!(warned(&imp, 5, "10.0.2.2"), "{:?}", imp.warnings);
    roundtrip(&imp);
    let e = from_lvs_cf(
        "virtual web {\n  address = 10.0.0.1\n  port = 80\n  server a {\n    address = 10.0.2.2\n  }\n  server b {\n    address = 10.0.2.2\n    port = 80\n  }\n}\n",
    )
    .map(|i| i.to_toml())
    .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(7)), "{e}");
    // On a service of every port, no port follows the client: another destination than :80.
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 0 {\n  real_server 10.0.2.2 80 {\n  }\n  real_server 10.0.2.2 {\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(imp.services[0].real_servers.len(), 2);
    roundtrip(&imp);
}

#[test]
fn lvs_cf_virtual_without_a_name() {
    // `virtual "" {` became a service named "", which the validator refuses ("service name must
    // not be empty") at a line of the rendered file.
    let e = from_lvs_cf("network = nat\nvirtual \"\" {\n  address = 10.0.0.1\n  port = 80\n}\n")
        .map(|i| i.to_toml())
        .unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("lvs.cf", Some(2)), "{e}");
}

#[test]
fn keepalived_check_on_some_real_servers_only() {
    // keepalived checks each real server with its own checkers; one without any is never taken
    // down. The imported TCP_CHECK of one server was applied to all, with a warning; now the
    // unchecked server has no check of its own (`health_check = []`).
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    TCP_CHECK {\n    }\n  }\n  real_server 10.0.2.3 80 {\n    weight 2\n  }\n}\n",
    )
    .unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    let s = &c.services[0];
    assert_eq!(s.health_checks.len(), 1);
    assert_eq!(s.real_servers[0].health_checks, None, "the service's check");
    assert_eq!(s.real_servers[1].health_checks, Some(Vec::new()), "not checked");
    assert!(c.to_toml().contains("health_check = []"), "{}", c.to_toml());
    // Every server checked alike: nothing to say.
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    TCP_CHECK {\n    }\n  }\n  real_server 10.0.2.3 80 {\n    TCP_CHECK {\n    }\n  }\n}\n",
    )
    .unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
}

#[test]
fn keepalived_virtual_server_group() {
    let imp = from_keepalived(&data("keepalived-group.conf")).unwrap();
    roundtrip(&imp);
    let names: Vec<&str> = imp.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["tcp-192.168.200.1-80", "tcp-192.168.200.2-80", "tcp-192.168.200.3-80", "tcp-10.0.0.5-443", "fwm7"]
    );
    for s in &imp.services {
        assert_eq!((s.scheduler.as_str(), s.forward, s.protocol), ("rr", Forward::Nat, Protocol::Tcp), "{}", s.name);
        assert_eq!(s.real_servers.len(), 1);
        assert_eq!((s.real_servers[0].address, s.real_servers[0].weight), (ip("10.0.2.2"), 2));
        let h = s.health_checks.first().unwrap();
        assert_eq!((h.timeout, h.interval), (3.0, 6.0));
    }
    assert_eq!(imp.services[3].ports, vec![PortRange { lo: 443, hi: 443 }]);
    assert_eq!(imp.services[4].fwmark, Some(7));
    // alpha: every service of the group starts its checked servers down, without a warning.
    assert!(imp.services.iter().all(|s| s.health_checks.first().unwrap().start_down));
    assert!(!imp.warnings.iter().any(|w| w.contains("alpha")), "{:?}", imp.warnings);
    assert!(warned(&imp, 5, "firewall mark 7"));
    assert!(warned(&imp, 23, "spare is used by no virtual_server"));

    // IPv6 ranges count the last 16 bits in hex.
    let six =
        "virtual_server_group g {\n 2001:db8::8-b 80\n}\nvirtual_server group g {\n real_server 2001:db8:1::2 80\n}\n";
    let imp = from_keepalived(six).unwrap();
    let vips: Vec<IpAddr> = imp.services.iter().map(|s| s.vip).collect();
    assert_eq!(vips, [ip("2001:db8::8"), ip("2001:db8::9"), ip("2001:db8::a"), ip("2001:db8::b")]);
    roundtrip(&imp);
}

#[test]
fn keepalived_virtual_server_group_errors() {
    let vs = "virtual_server group g {\n lb_algo rr\n}\n";
    let line = |conf: &str| from_keepalived(conf).unwrap_err().line;
    // Not defined; defined twice; empty; not a block.
    assert_eq!(line(vs), Some(1));
    let g = "virtual_server_group g {\n 10.0.0.1 80\n}\n";
    assert_eq!(line(&format!("{g}{g}{vs}")), Some(4));
    assert_eq!(line(&format!("virtual_server_group g {{\n}}\n{vs}")), Some(1));
    assert_eq!(line(&format!("virtual_server_group g\n{vs}")), Some(1));
    // Bad entries name their line.
    for bad in [
        "10.0.0.9-8 80",
        "10.0.0.1-256 80",
        "10.0.0.x 80",
        "10.0.0.1 80 81",
        "10.0.0.1 99999",
        "fwmark 0",
        "fwmark",
        "2001:db8::1-10000 80",
        "2001:db8::1-fffe 80",
        "10.0.0.1-2-3 80",
        "x { }",
    ] {
        let e = from_keepalived(&format!("virtual_server_group g {{\n 10.0.0.7 80\n {bad}\n}}\n{vs}")).unwrap_err();
        assert_eq!(e.line, Some(3), "{bad}: {e}");
    }
    // An entry listed twice, and an entry that is another virtual_server's service.
    let twice = "virtual_server_group g {\n 10.0.0.1 80\n 10.0.0.1 80\n}\n";
    assert_eq!(line(&format!("{twice}{vs}")), Some(3));
    let other = "virtual_server 10.0.0.2 80 {\n lb_algo rr\n}\nvirtual_server_group g {\n 10.0.0.1-3 80\n}\n";
    let e = from_keepalived(&format!("{other}{vs}")).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
}

/// A directory of its own under the target dir for a test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("conf.d")).unwrap();
    d
}

#[test]
fn keepalived_include() {
    let d = scratch("keepalived-include");
    let w = |f: &str, t: &str| std::fs::write(d.join(f), t).unwrap();
    w(
        "keepalived.conf",
        "global_defs { router_id lb1\n}\ninclude conf.d/*.conf\ninclude missing/none.conf\nvirtual_server 10.0.0.1 80 {\n lb_algo rr\n}\n",
    );
    // Read in name order; hidden and non-matching files left out.
    w("conf.d/b.conf", "virtual_server 10.0.0.3 80 {\n  beta 1\n}\n");
    w("conf.d/a.conf", "include ../groups.inc\nvirtual_server group g {\n}\n");
    w("conf.d/.hidden.conf", "virtual_server 10.0.0.9 80 {\n}\n");
    w("conf.d/c.conf.bak", "virtual_server 10.0.0.8 80 {\n}\n");
    w("groups.inc", "virtual_server_group g {\n 10.0.0.2 80\n}\n");
    let main = d.join("keepalived.conf");
    let imp = from_keepalived_file(&main, &HashMap::new()).unwrap();
    let names: Vec<&str> = imp.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tcp-10.0.0.2-80", "tcp-10.0.0.3-80", "tcp-10.0.0.1-80"]);
    roundtrip(&imp);
    // Warnings name the file and line they come from.
    let b = d.join("conf.d/b.conf").display().to_string();
    assert!(
        imp.warnings.iter().any(|w| w.starts_with(&format!("{b} line 2:")) && w.contains("beta")),
        "{:?}",
        imp.warnings
    );
    assert!(warned(&imp, 1, "global_defs"));
    assert!(warned(&imp, 4, "names no file"));

    // Errors too, in an included file.
    w("conf.d/b.conf", "virtual_server 10.0.0.3 80 {\n  lb_kind FULLNAT\n}\n");
    let e = from_keepalived_file(&main, &HashMap::new()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), (b.as_str(), Some(2)), "{e}");
    // An include loop ends with an error.
    w("conf.d/b.conf", "include b.conf\n");
    let e = from_keepalived_file(&main, &HashMap::new()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), (b.as_str(), Some(1)), "{e}");
    assert!(e.message.contains("nest"), "{e}");
    // Wildcards in a directory are refused; an unreadable main file names itself.
    w("conf.d/b.conf", "include ../*/x.conf\n");
    let e = from_keepalived_file(&main, &HashMap::new()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), (b.as_str(), Some(1)), "{e}");
    let e = from_keepalived_file(&d.join("nope.conf"), &HashMap::new()).unwrap_err();
    assert!(e.file.ends_with("nope.conf"), "{e}");
}

#[test]
fn keepalived_one_mark_in_both_families() {
    // IPVS keys mark services by family and mark: two services, as keepalived makes them.
    // (The family from ip_family, or from the first real server.)
    for six in ["ip_family inet6\n real_server 2001:db8::2 80", "real_server 2001:db8::2 80"] {
        let conf = format!(
            "virtual_server fwmark 5 {{\n real_server 10.0.2.2 80\n}}\nvirtual_server fwmark 5 {{\n {six}\n}}\n"
        );
        let imp = from_keepalived(&conf).unwrap();
        let got: Vec<(&str, IpAddr)> = imp.services.iter().map(|s| (s.name.as_str(), s.vip)).collect();
        assert_eq!(got, [("fwm5", ip("0.0.0.0")), ("fwm5-ipv6", ip("::"))]);
        roundtrip(&imp);
    }
    // The same mark twice in one family is still an error.
    let e = from_keepalived("virtual_server fwmark 5 {\n}\nvirtual_server fwmark 5 {\n}\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    // With the iptables and ip6tables rules, each family's service gets its own address and ports.
    let (marks, w) = marks_from_iptables(
        "*mangle\n-A PREROUTING -d 10.0.0.1/32 -p tcp --dport 80 -j MARK --set-mark 5\nCOMMIT\n\
         *mangle\n-A PREROUTING -d 2001:db8::1/128 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 5\nCOMMIT\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    let imp = from_keepalived_with_marks(
        "virtual_server fwmark 5 {\n real_server 10.0.2.2 80\n}\nvirtual_server fwmark 5 {\n real_server 2001:db8::2 80\n}\n",
        &marks,
    )
    .unwrap();
    let got: Vec<(IpAddr, Vec<PortRange>)> = imp.services.iter().map(|s| (s.vip, s.ports.clone())).collect();
    assert_eq!(
        got,
        [
            (ip("10.0.0.1"), vec![PortRange { lo: 80, hi: 80 }]),
            (ip("2001:db8::1"), vec![PortRange { lo: 80, hi: 80 }, PortRange { lo: 443, hi: 443 }])
        ]
    );
    roundtrip(&imp);
}

#[test]
fn lvs_cf_fwmark_ports_from_the_iptables_rules() {
    // The Red Hat guide's FTP recipe: lvs.cf's fwmark 21 on port 21, and the iptables rules
    // marking 21 and the passive range 10000:20000 of the VIP (as a script, as the guide has it).
    let (marks, w) = marks_from_iptables(
        "/usr/sbin/iptables -t mangle -A PREROUTING -p tcp -d 10.0.0.100/32 --dport 21 -j MARK --set-mark 21\n\
         /usr/sbin/iptables -t mangle -A PREROUTING -p tcp -d 10.0.0.100/32 --dport 10000:20000 -j MARK --set-mark 21\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    let imp = from_lvs_cf_with_marks(&data("redhat-ftp-lvs.cf"), &marks).unwrap();
    roundtrip(&imp);
    let ftp = &imp.services[0];
    assert_eq!((ftp.vip, ftp.fwmark), (ip("10.0.0.100"), Some(21)));
    assert_eq!(ftp.ports, vec![PortRange { lo: 21, hi: 21 }, PortRange { lo: 10000, hi: 20000 }]);
    assert!(ftp.ftp.is_some());
    assert!(warned(&imp, 20, "fwmark 21 selecting port 21 imported as an FTP service with the mark's ports"));
    assert!(!imp.warnings.iter().any(|w| w.contains("by hand")), "{:#?}", imp.warnings);
    // Rules for another address: the lvs.cf address is kept, and said.
    let (other, _) =
        marks_from_iptables("*mangle\n-A PREROUTING -d 10.0.0.99 -p tcp --dport 21 -j MARK --set-mark 21\n").unwrap();
    let imp = from_lvs_cf_with_marks(&data("redhat-ftp-lvs.cf"), &other).unwrap();
    assert_eq!(imp.services[0].vip, ip("10.0.0.100"));
    assert!(warned(&imp, 20, "select 10.0.0.99, not its address 10.0.0.100"), "{:#?}", imp.warnings);
}

#[test]
fn keepalived_http_get() {
    let conf = |rs: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n  virtualhost www.example.com\n  delay_loop 4\n  real_server 10.0.2.2 8080 {{\n{rs}\n  }}\n}}\n"
        )
    };
    let imp = from_keepalived(&conf(
        "    HTTP_GET {\n      url {\n        path /healthz?full=1\n        status_code 204\n        digest 9b3a0c85a887a256d6939da88aabd8cd\n      }\n      \
         url {\n        path /other\n      }\n      connect_port 8081\n      connect_timeout 2\n      retry 2\n      \
         delay_before_retry 1\n    }",
    ))
    .unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!(h.kind, HealthCheckKind::Http);
    assert_eq!(
        (h.path.as_deref(), h.status, h.host.as_deref()),
        (Some("/healthz?full=1"), Some(204), Some("www.example.com"))
    );
    assert_eq!((h.port, h.timeout, h.interval, h.fall), (Some(8081), 2.0, 4.0, 3));
    assert_eq!(h.digest.as_deref(), Some("9b3a0c85a887a256d6939da88aabd8cd"), "the url's digest");
    assert!(warned(&imp, 11, "only the first url"), "{:?}", imp.warnings);
    assert_eq!(h.retry_interval, Some(1.0), "delay_before_retry 1");
    assert!(!imp.warnings.iter().any(|w| w.contains("delay_before_retry")), "{:?}", imp.warnings);
    // The url's virtualhost wins; no status_code (or 200-299) is any 2xx.
    let imp = from_keepalived(&conf(
        "    HTTP_GET {\n      url {\n        path /\n        virtualhost a.example\n        status_code 200-299\n      }\n    }",
    ))
    .unwrap();
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.host.as_deref(), h.status), (Some("a.example"), None));
    roundtrip(&imp);
    // A path the request line could not carry is refused by the validator (here: a space).
    let imp = from_keepalived(&conf("    HTTP_GET {\n      url {\n        path \"/a b\"\n      }\n    }")).unwrap();
    let t = format!("[engine]\nbackend = \"memory\"\n\n{}", imp.to_toml());
    let e = Config::from_str(&t, "imported.toml").unwrap_err();
    assert!(e.message.contains("path"), "{e}");
    let e = from_keepalived(&conf("    HTTP_GET {\n      url {\n        status_code 999\n      }\n    }")).unwrap_err();
    assert_eq!(e.line, Some(7));
}

#[test]
fn keepalived_retry_and_delay_before_retry_by_level() {
    // keepalived >= 2.0: the check's retry / delay_before_retry, else its real_server's, else its
    // virtual_server's, else the checker's default (1 retry, 1 s; HTTP_GET 3 s). retry N is
    // N + 1 failures in a row (fall); delay_before_retry is the time to the check that
    // confirms a failure (retry_interval).
    let conf = |vs: &str, rs: &str, check: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n  delay_loop 30\n{vs}\n  real_server 10.0.2.2 80 {{\n{rs}\n    \
             {check} {{\n      connect_timeout 2\n    }}\n  }}\n}}\n"
        )
    };
    let check = |vs: &str, rs: &str, kind: &str| {
        let imp = from_keepalived(&conf(vs, rs, kind)).unwrap();
        roundtrip(&imp);
        assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
        let h = imp.services[0].health_checks[0].clone();
        (h.interval, h.fall, h.retry_interval)
    };
    assert_eq!(check("", "", "TCP_CHECK"), (30.0, 2, Some(1.0)), "defaults: one retry, 1 s later");
    assert_eq!(check("", "", "HTTP_GET"), (30.0, 2, Some(3.0)), "HTTP_GET: 3 s");
    assert_eq!(check("  retry 4\n  delay_before_retry 5", "", "TCP_CHECK"), (30.0, 5, Some(5.0)), "virtual_server's");
    assert_eq!(
        check("  retry 4\n  delay_before_retry 5", "    retry 0", "TCP_CHECK"),
        (30.0, 1, None),
        "real_server's retry 0: down at the first failure, no retry to time"
    );
    assert_eq!(check("  delay_before_retry 30", "", "TCP_CHECK"), (30.0, 2, None), "the same as delay_loop: none");
    let e = from_keepalived(&conf("  delay_before_retry x", "", "TCP_CHECK")).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn keepalived_ssl_get_as_an_https_check() {
    // SSL_GET was imported as a TCP connect check (the TLS handshake and the status left out);
    // it is an `https` check now: its url's path and status, the virtualhost (also the SNI).
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 443 {\n  delay_loop 10\n  real_server 10.0.2.2 443 {\n    SSL_GET {\n      \
         url {\n        path /health\n        status_code 204\n        digest EFF5BC1EF8EC9D03E640FC4370F5EACD\n      }\n      \
         virtualhost www.example.com\n      connect_timeout 2\n      enable_sni\n    }\n  }\n}\n",
    )
    .unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!(
        (h.kind, h.port, h.path.as_deref(), h.status, h.host.as_deref(), h.timeout, h.tls_ca.as_deref()),
        (HealthCheckKind::Https, None, Some("/health"), Some(204), Some("www.example.com"), 2.0, None)
    );
    assert_eq!(h.digest.as_deref(), Some("eff5bc1ef8ec9d03e640fc4370f5eacd"), "the url's digest, in lower case");
    assert_eq!((h.fall, h.retry_interval), (2, Some(3.0)), "keepalived's SSL_GET defaults");
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    // A digest that is not an MD5 in hex: keepalived refuses it, so does the import.
    let e = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    HTTP_GET {\n      url {\n        \
         path /\n        digest 0123\n      }\n    }\n  }\n}\n",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(6), "{e}");
}

#[test]
fn keepalived_dns_check_as_a_dns_check() {
    // DNS_CHECK was not imported (its real servers were never taken down); it is a `dns`
    // check now, with keepalived's defaults (3 retries 1 s apart; name "." and type SOA).
    let conf = |body: &str| {
        format!(
            "virtual_server 10.0.0.1 53 {{\n  protocol UDP\n  real_server 10.0.2.2 53 {{\n    DNS_CHECK {{\n{body}    }}\n  }}\n}}\n"
        )
    };
    let imp = from_keepalived(&conf("      name www.example.com\n      type aaaa\n      connect_port 5353\n")).unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!(
        (h.kind, h.port, h.query_name.as_deref(), h.query_type.as_deref()),
        (HealthCheckKind::Dns, Some(5353), Some("www.example.com"), Some("AAAA"))
    );
    assert_eq!((h.fall, h.retry_interval, h.timeout), (4, Some(1.0), 5.0), "keepalived's DNS_CHECK defaults");
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let imp = from_keepalived(&conf("      type PTR\n      retry 0\n")).unwrap();
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.query_name.as_deref(), h.query_type.as_deref(), h.fall), (None, None, 1));
    assert!(warned(&imp, 5, "DNS_CHECK type PTR"), "{:?}", imp.warnings);
    let e = from_keepalived(&conf("      name a..b\n")).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn keepalived_udp_and_ping_checks() {
    // UDP_CHECK and PING_CHECK were warned about and dropped (their real servers never taken
    // down); they are `udp` and `ping` checks now, with keepalived's defaults (1 retry, 1 s).
    let conf = |check: &str, body: &str| {
        format!(
            "virtual_server 10.0.0.1 514 {{\n  protocol UDP\n  real_server 10.0.2.2 514 {{\n    {check} {{\n{body}    }}\n  }}\n}}\n"
        )
    };
    let imp = from_keepalived(&conf(
        "UDP_CHECK",
        "      payload 0a 1b2c\n      require_reply 0a xx\n      connect_port 5514\n      connect_timeout 2\n",
    ))
    .unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!(
        (h.kind, h.port, h.payload.as_deref(), h.require_reply, h.reply.as_deref()),
        (HealthCheckKind::Udp, Some(5514), Some("0a 1b2c"), true, Some("0a xx"))
    );
    assert_eq!((h.fall, h.retry_interval, h.timeout), (2, Some(1.0), 2.0));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    // require_reply alone: any answer; keepalived holds an answer to min/max_reply_length
    // only with require_reply data, so they are ignored here, said.
    let imp = from_keepalived(&conf("UDP_CHECK", "      require_reply\n      max_reply_length 64\n")).unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.payload.as_deref(), h.require_reply, h.reply.as_deref()), (None, true, None));
    assert_eq!((h.min_reply_length, h.max_reply_length), (None, None));
    assert!(warned(&imp, 6, "reply length 64 without require_reply data"), "{:?}", imp.warnings);
    // With data they are imported; a maximum below the minimum is an error at its line.
    let lens = "      require_reply 0a\n      min_reply_length 4\n      max_reply_length 64\n";
    let imp = from_keepalived(&conf("UDP_CHECK", lens)).unwrap();
    let c = roundtrip(&imp);
    let h = c.services[0].health_checks.first().unwrap();
    assert_eq!((h.min_reply_length, h.max_reply_length, h.require_reply), (Some(4), Some(64), true));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let e =
        from_keepalived(&conf("UDP_CHECK", &lens.replace("min_reply_length 4", "min_reply_length 65"))).unwrap_err();
    assert_eq!(e.line, Some(7), "{e}");
    let e = from_keepalived(&conf("UDP_CHECK", "      payload 0x\n")).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    let imp = from_keepalived(&conf("PING_CHECK", "      retry 3\n      connect_port 7\n")).unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.kind, h.port, h.fall), (HealthCheckKind::Ping, None, 4));
    assert!(warned(&imp, 6, "PING_CHECK connect_port"), "{:?}", imp.warnings);
}

#[test]
fn keepalived_several_checkers_of_a_real_server() {
    // keepalived takes a real server down when any of its checkers fails: they became one
    // check (the first) with the others warned about as differing; now each is a check.
    let rs = |addr: &str| {
        format!(
            "  real_server {addr} 80 {{\n    HTTP_GET {{\n      url {{\n        path /health\n        status_code 200\n      }}\n    }}\n\
                 TCP_CHECK {{\n      connect_port 8080\n      connect_timeout 2\n    }}\n  }}\n"
        )
    };
    let conf = format!("virtual_server 10.0.0.1 80 {{\n  delay_loop 4\n{}{}}}\n", rs("10.0.2.2"), rs("10.0.2.3"));
    let imp = from_keepalived(&conf).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    let h = &c.services[0].health_checks;
    assert_eq!(h.iter().map(|h| h.kind).collect::<Vec<_>>(), [HealthCheckKind::Http, HealthCheckKind::Tcp]);
    assert_eq!((h[0].path.as_deref(), h[0].status, h[0].timeout), (Some("/health"), Some(200), 5.0));
    assert_eq!((h[1].port, h[1].timeout, h[1].interval), (Some(8080), 2.0, 4.0));
    // Servers with different checkers: each keeps its own (the first one's are the
    // service's), connect_port and all.
    let conf = format!(
        "virtual_server 10.0.0.1 80 {{\n{}  real_server 10.0.2.3 80 {{\n    TCP_CHECK {{\n      connect_port 81\n    }}\n  }}\n}}\n",
        rs("10.0.2.2")
    );
    let imp = from_keepalived(&conf).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    let s = &c.services[0];
    assert_eq!(s.health_checks.len(), 2);
    assert_eq!(s.real_servers[0].health_checks, None);
    let own = s.real_servers[1].health_checks.as_deref().unwrap();
    assert_eq!(own.iter().map(|h| (h.kind, h.port)).collect::<Vec<_>>(), [(HealthCheckKind::Tcp, Some(81))]);
}

#[test]
fn keepalived_connect_ip_is_a_server_s_own_check() {
    // connect_ip sends a checker to another address (a management one): it was warned about
    // and the real server's address checked instead. Now it is the check's `address`; such
    // a check is its server's own, so each server keeps its own checks.
    let rs = |addr: &str, mgmt: &str| {
        format!(
            "  real_server {addr} 80 {{\n    TCP_CHECK {{\n      connect_ip {mgmt}\n      connect_port 9100\n    }}\n  }}\n"
        )
    };
    let conf = format!(
        "virtual_server 10.0.0.1 80 {{\n{}{}  real_server 10.0.2.4 80 {{\n    weight 1\n  }}\n}}\n",
        rs("10.0.2.2", "192.168.0.2"),
        rs("10.0.2.3", "fd00::3")
    );
    let imp = from_keepalived(&conf).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    let s = &c.services[0];
    assert!(s.health_checks.is_empty());
    let own: Vec<_> = s
        .real_servers
        .iter()
        .map(|r| r.health_checks.as_deref().unwrap().iter().map(|h| (h.address, h.port)).collect::<Vec<_>>())
        .collect();
    assert_eq!(own, [vec![(Some(ip("192.168.0.2")), Some(9100))], vec![(Some(ip("fd00::3")), Some(9100))], vec![]]);
    let e =
        from_keepalived(&format!("virtual_server 10.0.0.1 80 {{\n{}}}\n", rs("10.0.2.2", "not-an-ip"))).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    // bindto: where the check leaves from (`source`).
    let conf = "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    HTTP_GET {\n      bindto 10.0.2.254\n      url {\n        path /\n      }\n    }\n  }\n}\n";
    let imp = from_keepalived(conf).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = roundtrip(&imp);
    assert_eq!(c.services[0].health_checks[0].source, Some(ip("10.0.2.254")));
    let e = from_keepalived(&conf.replace("10.0.2.254", "0.0.0.0")).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    // Of another family than the server: the config's error, at the check.
    let e = from_keepalived(&conf.replace("10.0.2.254", "fd00::1")).unwrap_err();
    assert!(e.message.contains("cannot reach 10.0.2.2"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn keepalived_smtp_check() {
    // SMTP_CHECK was warned about and dropped; it is an `smtp` check now, with its helo_name
    // and keepalived's defaults (1 retry, 1 s). Its deprecated `host` blocks are warned about.
    let conf = |body: &str| {
        format!(
            "virtual_server 10.0.0.1 25 {{\n  protocol TCP\n  real_server 10.0.2.2 25 {{\n    SMTP_CHECK {{\n{body}    }}\n  }}\n}}\n"
        )
    };
    let imp = from_keepalived(&conf("      helo_name lb1.example.net\n      connect_timeout 4\n")).unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.kind, h.port, h.helo_name.as_deref()), (HealthCheckKind::Smtp, None, Some("lb1.example.net")));
    assert_eq!((h.fall, h.retry_interval, h.timeout), (2, Some(1.0), 4.0));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let imp = from_keepalived(&conf("      host {\n        connect_ip 10.0.2.9\n      }\n")).unwrap();
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!((h.kind, h.helo_name.as_deref()), (HealthCheckKind::Smtp, None));
    assert!(warned(&imp, 5, "SMTP_CHECK host"), "{:?}", imp.warnings);
}

#[test]
fn keepalived_misc_check_as_an_exec_check() {
    // MISC_CHECK was warned about and dropped, leaving its real servers never taken down; it is
    // an exec check now, misc_path split as keepalived splits a script (quotes kept together).
    let conf = |check: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n  delay_loop 6\n  real_server 10.0.2.2 80 {{\n    MISC_CHECK {{\n{check}\n    }}\n  }}\n}}\n"
        )
    };
    let imp = from_keepalived(&conf(
        "      misc_path \"/usr/local/bin/check web 'arg two' \\\"three 3\\\" x\\\\ y\"\n      misc_timeout 4\n      \
         misc_dynamic\n      user nobody nogroup\n      warmup 5\n      retry 2\n      delay_before_retry 2",
    ))
    .unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().expect("MISC_CHECK imported");
    assert_eq!(h.kind, HealthCheckKind::Exec);
    assert_eq!(h.command, ["/usr/local/bin/check", "web", "arg two", "three 3", "x y"]);
    assert_eq!((h.user.as_deref(), h.timeout, h.interval), (Some("nobody"), 4.0, 6.0));
    assert_eq!((h.fall, h.retry_interval, h.port), (3, Some(2.0), None), "retry 2, delay_before_retry 2");
    assert!(warned(&imp, 7, "exit codes 2-255 set the weight"), "{:?}", imp.warnings);
    assert!(warned(&imp, 8, "nogroup"), "{:?}", imp.warnings);
    assert!(warned(&imp, 9, "warmup is not supported"), "{:?}", imp.warnings);
    assert_eq!(imp.warnings.len(), 3, "{:?}", imp.warnings);

    // keepalived's defaults: no retry (down at the first failure), misc_timeout the delay_loop;
    // a command unquoted on the line, with a double-quoted argument of its own.
    let imp = from_keepalived(&conf("      misc_path /bin/check \"a b\" 'c d'")).unwrap();
    roundtrip(&imp);
    let h = imp.services[0].health_checks.first().unwrap();
    assert_eq!(h.command, ["/bin/check", "a b", "c d"]);
    assert_eq!((h.user.as_deref(), h.timeout, h.fall, h.retry_interval), (None, 6.0, 1, None));
    // No user: keepalived's keepalived_script or root; the import says it runs as root.
    assert!(warned(&imp, 4, "imported to run as root"), "{:?}", imp.warnings);
    assert_eq!(imp.warnings.len(), 1, "{:?}", imp.warnings);
    // global_defs' script_user is the user of scripts that name none (a group warned about);
    // a check's own user wins; global_defs' other options are not imported (said once).
    let two = "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    MISC_CHECK {\n      misc_path /bin/a\n    }\n  }\n}\n\
               virtual_server 10.0.0.1 81 {\n  real_server 10.0.2.2 81 {\n    MISC_CHECK {\n      misc_path /bin/b\n      user www\n    }\n  }\n}\n";
    let imp = from_keepalived(&format!("global_defs {{\n  router_id lb1\n  script_user checker checkers\n}}\n{two}"))
        .unwrap();
    roundtrip(&imp);
    let users: Vec<_> = imp.services.iter().map(|s| s.health_checks.first().unwrap().user.as_deref()).collect();
    assert_eq!(users, [Some("checker"), Some("www")]);
    assert!(warned(&imp, 3, "a group is not supported"), "{:?}", imp.warnings);
    assert!(warned(&imp, 1, "global_defs is not part of load balancing"), "{:?}", imp.warnings);
    assert_eq!(imp.warnings.len(), 2, "{:?}", imp.warnings);

    // A relative script (run through PATH and a shell by keepalived) or an unclosed quote: an
    // error on its line.
    let e = from_keepalived(&conf("      misc_timeout 3\n      misc_path \"check.sh arg\"")).unwrap_err();
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("\"check.sh\"") && e.message.contains("absolute path"), "{e}");
    let e = from_keepalived(&conf("      misc_path \"/bin/check 'open\"")).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("unterminated"), "{e}");
    // No misc_path: keepalived skips the checker; the server is unchecked, as before.
    let imp = from_keepalived(&conf("      misc_timeout 3")).unwrap();
    assert!(imp.services[0].health_checks.is_empty());
    assert!(warned(&imp, 4, "without misc_path"), "{:?}", imp.warnings);

    // Real servers with a MISC_CHECK and a TCP_CHECK: the first one's is the service's, the
    // other server has its own.
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    MISC_CHECK {\n      misc_path /bin/true\n    }\n  }\n  \
         real_server 10.0.2.3 80 {\n    TCP_CHECK {\n    }\n  }\n}\n",
    )
    .unwrap();
    let s = &imp.services[0];
    assert_eq!(s.health_checks.first().unwrap().kind, HealthCheckKind::Exec);
    assert_eq!(s.real_servers[0].health_checks, None);
    let own = s.real_servers[1].health_checks.as_deref().unwrap();
    assert_eq!(own.iter().map(|h| (h.kind, h.fall)).collect::<Vec<_>>(), [(HealthCheckKind::Tcp, 2)]);
    assert!(!imp.warnings.iter().any(|w| w.contains("different")), "{:?}", imp.warnings);
    roundtrip(&imp);
}

/// keepalived's `alpha`, `quorum` and `hysteresis` become `start_down`, `quorum` and
/// `hysteresis`; `quorum_up`/`quorum_down` scripts become `[service.notify]`; a hysteresis not below the
/// quorum is set to quorum - 1 as keepalived does; alpha on a service without a check changes
/// nothing (keepalived's unchecked servers are always up), with a warning.
#[test]
fn keepalived_alpha_quorum_hysteresis() {
    let conf = |opts: &str, check: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n lb_kind DR\n sorry_server 10.0.2.9 80\n{opts}\n \
             real_server 10.0.2.2 80 {{\n  weight 2\n{check}\n }}\n}}\n"
        )
    };
    let tcp = "  TCP_CHECK {\n   connect_timeout 3\n  }";
    let imp = from_keepalived(&conf(" alpha\n quorum 3\n hysteresis 1\n quorum_up /bin/true", tcp)).unwrap();
    let c = roundtrip(&imp);
    let s = &c.services[0];
    assert!(s.health_checks.first().unwrap().start_down);
    assert_eq!((s.quorum, s.hysteresis), (3, 1));
    // quorum_up is the service's notify program now (run as root: no script_user, said).
    assert_eq!(s.notify.as_ref().map(|n| n.quorum_up.clone()), Some(vec!["/bin/true".to_string()]));
    assert!(imp.warnings.iter().any(|w| w.contains("imported to run as root")), "{:?}", imp.warnings);
    assert!(!imp.warnings.iter().any(|w| w.contains("alpha") || w.contains("option quorum ")), "{:?}", imp.warnings);

    // Defaults: no alpha, quorum 1, no hysteresis.
    let imp = from_keepalived(&conf("", tcp)).unwrap();
    let s = &imp.services[0];
    assert!(!s.health_checks.first().unwrap().start_down);
    assert_eq!((s.quorum, s.hysteresis), (1, 0));

    let imp = from_keepalived(&conf(" quorum 2\n hysteresis 5", tcp)).unwrap();
    assert_eq!((imp.services[0].quorum, imp.services[0].hysteresis), (2, 1));
    assert!(warned(&imp, 5, "hysteresis 5"), "{:?}", imp.warnings);
    roundtrip(&imp);

    let imp = from_keepalived(&conf(" alpha", "")).unwrap();
    assert!(imp.services[0].health_checks.is_empty());
    assert!(warned(&imp, 4, "alpha"), "{:?}", imp.warnings);

    for (opts, line) in [(" quorum 0", 4), (" quorum x", 4), (" quorum 4294967296", 4), (" hysteresis -1", 4)] {
        let e = from_keepalived(&conf(opts, tcp)).expect_err(opts);
        assert_eq!(e.line, Some(line), "{opts}: {e}");
    }
}

#[test]
fn keepalived_notify_scripts() {
    // notify_up / notify_down of the real servers and quorum_up / quorum_down of the
    // virtual_server were warned about and dropped; they are the service's [service.notify]
    // now, run as global_defs' script_user.
    let conf = |rs2: &str| {
        format!(
            "global_defs {{\n  script_user lvs\n}}\n\
             virtual_server 10.0.0.1 80 {{\n  quorum_up \"/usr/local/bin/q up\"\n  quorum_down /usr/local/bin/q down\n\
             \x20 real_server 10.0.2.2 80 {{\n    notify_up \"/usr/local/bin/rs 'went up'\"\n    notify_down /usr/local/bin/rs down\n  }}\n\
             \x20 real_server 10.0.2.3 80 {{\n{rs2}\n  }}\n}}\n"
        )
    };
    let same = "    notify_up \"/usr/local/bin/rs 'went up'\"\n    notify_down /usr/local/bin/rs down";
    let imp = from_keepalived(&conf(same)).unwrap();
    roundtrip(&imp);
    let n = imp.services[0].notify.as_ref().expect("notify imported");
    assert_eq!(n.up, ["/usr/local/bin/rs", "went up"]);
    assert_eq!(n.down, ["/usr/local/bin/rs", "down"]);
    assert_eq!(n.quorum_up, ["/usr/local/bin/q", "up"]);
    assert_eq!(n.quorum_down, ["/usr/local/bin/q", "down"]);
    assert_eq!((n.user.as_deref(), n.timeout), (Some("lvs"), 10.0));
    assert!(imp.warnings.iter().all(|w| !w.contains("notify") && !w.contains("quorum_")), "{:?}", imp.warnings);

    // A script only some real servers have, or a different one: not imported, said so; the
    // others are.
    let imp = from_keepalived(&conf("    notify_down /usr/local/bin/other")).unwrap();
    roundtrip(&imp);
    let n = imp.services[0].notify.as_ref().expect("quorum scripts imported");
    assert!(n.up.is_empty() && n.down.is_empty(), "{n:?}");
    assert_eq!(n.quorum_down, ["/usr/local/bin/q", "down"]);
    assert!(warned(&imp, 8, "notify_up is not the same script on every real server"), "{:?}", imp.warnings);
    assert!(warned(&imp, 9, "notify_down is not the same script"), "{:?}", imp.warnings);

    // No script_user: imported to run as root, said so.
    let imp =
        from_keepalived("virtual_server 10.0.0.1 80 {\n  real_server 10.0.2.2 80 {\n    notify_up /bin/up\n  }\n}\n")
            .unwrap();
    assert_eq!(
        imp.services[0].notify.as_ref().map(|n| (n.up.clone(), n.user.clone())),
        Some((vec!["/bin/up".to_string()], None))
    );
    assert!(imp.warnings.iter().any(|w| w.contains("imported to run as root")), "{:?}", imp.warnings);

    // A relative script: an error on its line.
    let e = from_keepalived("virtual_server 10.0.0.1 80 {\n  quorum_down q.sh\n}\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().contains("quorum_down \"q.sh\": the script must be an absolute path"), "{e}");
}

/// keepalived's `ops` (one-packet scheduling): imported on a UDP virtual_server; on a TCP one
/// (where IPVS keeps the flag without effect) warned and left out.
#[test]
fn keepalived_ops() {
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 514 {\n  protocol UDP\n  ops\n  real_server 10.0.2.2 514 {\n  }\n}\n\
         virtual_server 10.0.0.1 80 {\n  protocol TCP\n  ops\n  real_server 10.0.2.2 80 {\n  }\n}\n",
    )
    .unwrap();
    assert!(imp.services[0].one_packet);
    assert!(!imp.services[1].one_packet);
    assert!(warned(&imp, 9, "ops (one-packet scheduling) applies to UDP services"), "{:?}", imp.warnings);
    roundtrip(&imp);
}

/// keepalived's scheduler flags (`sh-port`, `mh-fallback`, `flag-1`, ... as keywords of a
/// virtual_server): imported against its scheduler wherever `lvs_sched` stands; one for
/// another scheduler, or `flag-3`, is warned about and left out (keepalived ignores it too).
#[test]
fn keepalived_sched_flags() {
    let imp = from_keepalived(
        "virtual_server 10.0.0.1 80 {\n  mh-port\n  lvs_sched mh\n  flag-1\n  real_server 10.0.2.2 80 {\n  }\n}\n\
         virtual_server 10.0.0.2 80 {\n  lvs_sched rr\n  sh-port\n  real_server 10.0.2.2 80 {\n  }\n}\n\
         virtual_server 10.0.0.3 80 {\n  lvs_sched sh\n  sh-fallback\n  flag-3\n  real_server 10.0.2.2 80 {\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(imp.services[0].sched_flags, SchedFlags { fallback: true, port: true });
    assert!(imp.services[1].sched_flags.is_empty());
    assert!(
        warned(&imp, 10, "scheduler flag \"sh-port\" applies to scheduler \"sh\", not \"rr\""),
        "{:?}",
        imp.warnings
    );
    assert_eq!(imp.services[2].sched_flags, SchedFlags { fallback: true, port: false });
    assert!(warned(&imp, 17, "\"flag-3\" is not used by any scheduler"), "{:?}", imp.warnings);
    roundtrip(&imp);
}
