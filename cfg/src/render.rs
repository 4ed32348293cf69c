//! `Config` -> canonical TOML.

use std::fmt::Write;

use crate::model::*;
use crate::validate::{fmt_range, proto_name};

/// TOML basic string with escapes.
pub(crate) fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        // `{:?}` is the shortest round-tripping form and always has a `.` or `e`.
        format!("{f:?}")
    }
}

fn mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

fn forward(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "nat",
        Forward::Dr => "dr",
        Forward::Tunnel => "tunnel",
        Forward::Fnat => "fnat",
    }
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let v: Vec<String> = items.iter().map(f).collect();
    format!("[{}]", v.join(", "))
}

/// Render a port list the way the TOML format spells it.
pub(crate) fn ports(p: &[PortRange]) -> String {
    list(p, |r| if r.lo == r.hi { r.lo.to_string() } else { q(&fmt_range(*r)) })
}

pub(crate) fn config(c: &Config) -> String {
    let mut o = String::new();
    let e = &c.engine;
    o.push_str("[engine]\n");
    let _ = writeln!(o, "workers = {}", e.workers);
    let backend = match e.backend {
        Backend::AfPacket => "af_packet",
        Backend::Memory => "memory",
        Backend::Dpdk => "dpdk",
    };
    let _ = writeln!(o, "backend = {}", q(backend));
    if let Some(cores) = &e.cores {
        let _ = writeln!(o, "cores = {}", list(cores, |c| c.to_string()));
    }
    let _ = writeln!(o, "eal_args = {}", list(&e.eal_args, |s| q(s)));
    let _ = writeln!(o, "mbufs = {}", e.mbufs);
    let _ = writeln!(o, "flow_table_size = {}", e.flow_table_size);
    let _ = writeln!(o, "expectation_table_size = {}", e.expectation_table_size);
    let _ = writeln!(o, "neighbor_table_size = {}", e.neighbor_table_size);
    let _ = writeln!(o, "syn_proxy_threshold = {}", e.syn_proxy_threshold);
    if e.local_port_range != (PortRange { lo: 1024, hi: 65535 }) {
        let _ = writeln!(o, "local_port_range = \"{}-{}\"", e.local_port_range.lo, e.local_port_range.hi);
    }
    match e.rp_filter {
        RpFilter::Off => {}
        RpFilter::Loose => o.push_str("rp_filter = \"loose\"\n"),
        RpFilter::Strict => o.push_str("rp_filter = \"strict\"\n"),
    }
    if !e.deny_from.is_empty() {
        let items: Vec<String> = e.deny_from.iter().map(|n| q(&n.to_string())).collect();
        let _ = writeln!(o, "deny_from = [{}]", items.join(", "));
    }
    let _ = writeln!(o, "icmp_rate = {}", e.icmp_rate);
    let _ = writeln!(o, "kernel_rate = {}", e.kernel_rate);
    let _ = writeln!(o, "health_check_threads = {}", e.health_check_threads);
    let _ = writeln!(o, "icmp_burst = {}", e.icmp_burst);
    let _ = writeln!(o, "icmp_host_rate = {}", e.icmp_host_rate);
    let _ = writeln!(o, "icmp_host_burst = {}", e.icmp_host_burst);
    let _ = writeln!(o, "control_socket = {}", q(&e.control_socket.to_string_lossy()));
    if let Some(m) = e.metrics_listen {
        let _ = writeln!(o, "metrics_listen = {}", q(&m.to_string()));
    }
    let t = &e.timeouts;
    o.push_str("\n[engine.timeouts]\n");
    for (k, v) in [
        ("tcp_established", t.tcp_established),
        ("tcp_syn_sent", t.tcp_syn_sent),
        ("tcp_syn_recv", t.tcp_syn_recv),
        ("tcp_fin_wait", t.tcp_fin_wait),
        ("tcp_time_wait", t.tcp_time_wait),
        ("tcp_close", t.tcp_close),
        ("tcp_close_wait", t.tcp_close_wait),
        ("tcp_last_ack", t.tcp_last_ack),
        ("tcp_listen", t.tcp_listen),
        ("tcp_synack", t.tcp_synack),
        ("udp", t.udp),
        ("icmp", t.icmp),
    ] {
        let _ = writeln!(o, "{k} = {v}");
    }

    for i in &c.interfaces {
        o.push_str("\n[[interface]]\n");
        let _ = writeln!(o, "name = {}", q(&i.name));
        let _ = writeln!(o, "device = {}", q(&i.device));
        if let Some(m) = &i.mac {
            let _ = writeln!(o, "mac = {}", q(&mac(m)));
        }
        let _ = writeln!(o, "addresses = {}", list(&i.addresses, |a| q(&a.to_string())));
        if let Some(k) = &i.kernel_port {
            let _ = writeln!(o, "kernel_port = {}", q(k));
        }
    }
    for n in &c.neighbors {
        o.push_str("\n[[neighbor]]\n");
        let _ = writeln!(o, "address = {}", q(&n.address.to_string()));
        let _ = writeln!(o, "mac = {}", q(&mac(&n.mac)));
        if let Some(i) = &n.interface {
            let _ = writeln!(o, "interface = {}", q(i));
        }
    }
    for r in &c.routes {
        o.push_str("\n[[route]]\n");
        let _ = writeln!(o, "prefix = {}", q(&r.prefix.to_string()));
        if let Some(v) = r.via {
            let _ = writeln!(o, "via = {}", q(&v.to_string()));
        }
        if let Some(i) = &r.interface {
            let _ = writeln!(o, "interface = {}", q(i));
        }
    }
    for s in &c.services {
        o.push('\n');
        o.push_str(&service(s));
    }
    if let Some(k) = &c.cluster {
        o.push_str("\n[cluster]\n");
        let _ = writeln!(o, "node_id = {}", k.node_id);
        let _ = writeln!(o, "peers = {}", list(&k.peers, |a| q(&a.to_string())));
        if let Some(g) = k.multicast_group {
            let _ = writeln!(o, "multicast_group = {}", q(&g.to_string()));
        }
        let _ = writeln!(o, "sync_address = {}", q(&k.sync_address.to_string()));
        let _ = writeln!(o, "sync_port = {}", k.sync_port);
        let _ = writeln!(o, "sync_refresh = {}", k.sync_refresh);
        let _ = writeln!(o, "sync_rate = {}", k.sync_rate);
        let _ = writeln!(o, "bird_socket = {}", q(&k.bird_socket.to_string_lossy()));
        let _ = writeln!(o, "bird_protocol = {}", q(&k.bird_protocol));
        let _ = writeln!(o, "drain_timeout = {}", k.drain_timeout);
        match (&k.sync_key_source, &k.sync_key) {
            (Some(crate::model::SyncKeySource::File(p)), _) => {
                let _ = writeln!(o, "sync_key_file = {}", q(&p.to_string_lossy()));
            }
            (Some(crate::model::SyncKeySource::Inline), Some(key)) => {
                let _ = writeln!(o, "sync_key = {}", q(&String::from_utf8_lossy(&key.0)));
            }
            _ => {}
        }
        for n in &k.nodes {
            let _ = writeln!(o, "\n[[cluster.node]]\nid = {}", n.id);
            let _ = writeln!(o, "local_addresses = {}", list(&n.local_addresses, |a| q(&a.to_string())));
        }
    }
    o
}

/// One `[[service]]` block, with its health check and real servers.
pub(crate) fn service(s: &Service) -> String {
    let mut o = String::new();
    o.push_str("[[service]]\n");
    let _ = writeln!(o, "name = {}", q(&s.name));
    let _ = writeln!(o, "vip = {}", q(&s.vip.to_string()));
    let _ = writeln!(o, "protocol = {}", q(proto_name(s.protocol)));
    if !s.ports.is_empty() {
        let _ = writeln!(o, "ports = {}", ports(&s.ports));
    }
    let _ = writeln!(o, "scheduler = {}", q(&s.scheduler));
    let _ = writeln!(o, "forward = {}", q(forward(s.forward)));
    if let Some(p) = &s.persistence {
        let _ = writeln!(o, "persistence = {{ timeout = {}, netmask = {} }}", p.timeout, p.netmask);
    }
    if let Some(f) = &s.ftp {
        let _ = writeln!(
            o,
            "ftp = {{ control_ports = {}, allow_foreign_port_address = {}, pinhole_timeout = {}, \
             max_expectations = {}, allow_low_data_ports = {} }}",
            list(&f.control_ports, |p| p.to_string()),
            f.allow_foreign_port_address,
            f.pinhole_timeout,
            f.max_expectations,
            f.allow_low_data_ports
        );
    }
    if let Some(m) = s.fwmark {
        let _ = writeln!(o, "fwmark = {m}");
    }
    if !s.local_addresses.is_empty() {
        let _ = writeln!(o, "local_addresses = {}", list(&s.local_addresses, |a| q(&a.to_string())));
    }
    match s.syn_proxy {
        SynProxy::Auto => {}
        SynProxy::On => o.push_str("syn_proxy = \"on\"\n"),
        SynProxy::Off => o.push_str("syn_proxy = \"off\"\n"),
    }
    if s.one_packet {
        o.push_str("one_packet = true\n");
    }
    for (key, list) in [("allow_from", &s.allow_from), ("deny_from", &s.deny_from)] {
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|n| q(&n.to_string())).collect();
            let _ = writeln!(o, "{key} = [{}]", items.join(", "));
        }
    }
    let flags = s.sched_flags.names(&s.scheduler);
    if !flags.is_empty() {
        let _ = writeln!(o, "sched_flags = [{}]", flags.iter().map(|f| q(f)).collect::<Vec<_>>().join(", "));
    }
    if let Some(ss) = &s.sorry_server {
        let _ = match ss.port {
            Some(p) => writeln!(o, "sorry_server = {{ address = {}, port = {p} }}", q(&ss.address.to_string())),
            None => writeln!(o, "sorry_server = {{ address = {} }}", q(&ss.address.to_string())),
        };
    }
    if s.source_conn_rate != 0 {
        let _ = writeln!(o, "source_conn_rate = {}", s.source_conn_rate);
        if s.source_conn_burst != s.source_conn_rate {
            let _ = writeln!(o, "source_conn_burst = {}", s.source_conn_burst);
        }
    }
    if s.quorum != 1 {
        let _ = writeln!(o, "quorum = {}", s.quorum);
    }
    if s.hysteresis != 0 {
        let _ = writeln!(o, "hysteresis = {}", s.hysteresis);
    }
    checks(&mut o, "service", &s.health_checks);
    if let Some(n) = &s.notify {
        o.push_str("\n[service.notify]\n");
        for (key, c) in [("up", &n.up), ("down", &n.down), ("quorum_up", &n.quorum_up), ("quorum_down", &n.quorum_down)]
        {
            if !c.is_empty() {
                let args: Vec<String> = c.iter().map(|a| q(a)).collect();
                let _ = writeln!(o, "{key} = [{}]", args.join(", "));
            }
        }
        if let Some(u) = &n.user {
            let _ = writeln!(o, "user = {}", q(u));
        }
        let _ = writeln!(o, "timeout = {}", float(n.timeout));
    }
    for r in &s.real_servers {
        o.push_str("\n[[service.real_server]]\n");
        let _ = writeln!(o, "address = {}", q(&r.address.to_string()));
        if let Some(p) = r.port {
            let _ = writeln!(o, "port = {p}");
        }
        let _ = writeln!(o, "weight = {}", r.weight);
        if r.upper != 0 {
            let _ = writeln!(o, "upper = {}", r.upper);
        }
        if r.lower != 0 {
            let _ = writeln!(o, "lower = {}", r.lower);
        }
        if let Some(f) = r.forward {
            let _ = writeln!(o, "forward = {}", q(forward(f)));
        }
        match r.proxy_protocol {
            Some(ProxyProtocol::V1) => o.push_str("proxy_protocol = \"v1\"\n"),
            Some(ProxyProtocol::V2) => o.push_str("proxy_protocol = \"v2\"\n"),
            None => {}
        }
        match &r.health_checks {
            None => {}
            // Not checked: an empty array (the tables below would say nothing).
            Some(c) if c.is_empty() => o.push_str("health_check = []\n"),
            Some(c) => checks(&mut o, "service.real_server", c),
        }
    }
    o
}

/// The health checks of `[[owner]]`: one as the `[owner.health_check]` table, several as
/// `[[owner.health_check]]` tables.
fn checks(o: &mut String, owner: &str, list: &[HealthCheck]) {
    for h in list {
        if list.len() == 1 {
            let _ = write!(o, "\n[{owner}.health_check]\n");
        } else {
            let _ = write!(o, "\n[[{owner}.health_check]]\n");
        }
        let _ = writeln!(o, "type = {}", q(h.kind.name()));
        if let Some(p) = h.port {
            let _ = writeln!(o, "port = {p}");
        }
        if let Some(a) = h.address {
            let _ = writeln!(o, "address = {}", q(&a.to_string()));
        }
        if let Some(a) = h.source {
            let _ = writeln!(o, "source = {}", q(&a.to_string()));
        }
        for (k, v) in [("send", &h.send), ("expect", &h.expect), ("path", &h.path), ("host", &h.host)] {
            if let Some(v) = v {
                let _ = writeln!(o, "{k} = {}", q(v));
            }
        }
        if let Some(s) = h.status {
            let _ = writeln!(o, "status = {s}");
        }
        let more = [
            ("digest", &h.digest),
            ("tls_ca", &h.tls_ca),
            ("query_name", &h.query_name),
            ("query_type", &h.query_type),
            ("payload", &h.payload),
            ("helo_name", &h.helo_name),
        ];
        for (k, v) in more {
            if let Some(v) = v {
                let _ = writeln!(o, "{k} = {}", q(v));
            }
        }
        if h.require_reply {
            let _ = writeln!(o, "require_reply = true");
        }
        if let Some(v) = &h.reply {
            let _ = writeln!(o, "reply = {}", q(v));
        }
        if let Some(n) = h.min_reply_length {
            let _ = writeln!(o, "min_reply_length = {n}");
        }
        if let Some(n) = h.max_reply_length {
            let _ = writeln!(o, "max_reply_length = {n}");
        }
        if !h.command.is_empty() {
            let args: Vec<String> = h.command.iter().map(|a| q(a)).collect();
            let _ = writeln!(o, "command = [{}]", args.join(", "));
        }
        if let Some(u) = &h.user {
            let _ = writeln!(o, "user = {}", q(u));
        }
        let _ = writeln!(o, "interval = {}", float(h.interval));
        if let Some(r) = h.retry_interval {
            let _ = writeln!(o, "retry_interval = {}", float(r));
        }
        let _ = writeln!(o, "timeout = {}", float(h.timeout));
        let _ = writeln!(o, "rise = {}", h.rise);
        let _ = writeln!(o, "fall = {}", h.fall);
        let _ = writeln!(o, "on_fail = {}", q(if h.quiesce { "quiesce" } else { "remove" }));
        if h.start_down {
            o.push_str("start_down = true\n");
        }
    }
}
