//! Raw serde structs -> validated model, with positioned errors.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::error::{ConfigError, Ctx};
use crate::model::*;
use crate::raw::*;

type R<T> = Result<T, ConfigError>;

/// The largest `source_conn_rate` / `source_conn_burst`.
const MAX_SOURCE_CONN_RATE: i64 = 10_000_000;

pub(crate) fn parse(text: &str, origin: &str) -> R<Config> {
    let cx = Ctx { text, origin };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml(e))?;
    Validator { cx }.config(raw)
}

struct Validator<'a> {
    cx: Ctx<'a>,
}

fn span_of<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        self.cx.at(span, msg)
    }

    fn int(&self, v: &Spanned<i64>, lo: i64, hi: i64, what: &str) -> R<i64> {
        let x = *v.get_ref();
        if x < lo || x > hi {
            return Err(self.err(span_of(v), format!("{what} must be between {lo} and {hi}, got {x}")));
        }
        Ok(x)
    }

    fn opt_int(&self, v: &Option<Spanned<i64>>, lo: i64, hi: i64, what: &str, default: i64) -> R<i64> {
        match v {
            Some(v) => self.int(v, lo, hi, what),
            None => Ok(default),
        }
    }

    fn choice<T: Copy>(&self, v: &Spanned<String>, what: &str, opts: &[(&str, T)]) -> R<T> {
        let s = v.get_ref().as_str();
        opts.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
            let names: Vec<String> = opts.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            self.err(span_of(v), format!("invalid {what} {s:?}: expected one of {}", names.join(", ")))
        })
    }

    fn non_empty(&self, v: &Spanned<String>, what: &str) -> R<String> {
        if v.get_ref().trim().is_empty() {
            return Err(self.err(span_of(v), format!("{what} must not be empty")));
        }
        Ok(v.get_ref().clone())
    }

    /// A name (of a service, an interface, a device): not empty and without control
    /// characters, which would reach admins' terminals (`ferrovsadm -L`), logs and the
    /// metrics as they are (a newline forges a log line, an escape sequence rewrites the
    /// screen).
    fn name(&self, v: &Spanned<String>, what: &str) -> R<String> {
        let s = self.non_empty(v, what)?;
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(self.err(
                span_of(v),
                format!("{what} {s:?} holds the control character {:?}: names are printable text", c),
            ));
        }
        Ok(s)
    }

    fn config(&self, raw: RawConfig) -> R<Config> {
        let (engine, backend_span) = self.engine(raw.engine)?;
        let cluster = raw.cluster.as_ref().map(|c| self.cluster(c)).transpose()?;

        // Interfaces.
        let mut interfaces = Vec::new();
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let mut addrs: HashMap<IpAddr, ()> = HashMap::new();
        for ri in &raw.interface {
            let ri = ri.get_ref();
            let name = self.name(&ri.name, "interface name")?;
            if names.insert(name.clone(), span_of(&ri.name)).is_some() {
                return Err(self.err(span_of(&ri.name), format!("duplicate interface name {name:?}")));
            }
            let device = self.name(&ri.device, "interface device")?;
            let mut addresses = Vec::new();
            for a in &ri.addresses {
                let net = a.get_ref().0;
                if addrs.insert(net.addr, ()).is_some() {
                    return Err(self.err(span_of(a), format!("duplicate interface address {}", net.addr)));
                }
                addresses.push(net);
            }
            let kernel_port = match &ri.kernel_port {
                None => None,
                Some(k) => {
                    let dev = self.non_empty(k, "kernel_port")?;
                    if engine.backend == Backend::AfPacket {
                        return Err(self.err(
                            span_of(k),
                            "kernel_port is DPDK's exception path to the kernel; with backend \"af_packet\" \
                             the kernel already shares the interface (give it an address of its own there)",
                        ));
                    }
                    if dev.trim() == device.trim() {
                        return Err(self.err(span_of(k), "kernel_port must be another device than the interface's own"));
                    }
                    Some(dev)
                }
            };
            interfaces.push(Interface { name, device, mac: ri.mac.map(|m| m.0), addresses, kernel_port });
        }
        if interfaces.is_empty() && engine.backend != Backend::Memory {
            let msg = "at least one [[interface]] is required unless backend = \"memory\"";
            return Err(match backend_span {
                Some(s) => self.err(s, msg),
                None => self.cx.nowhere(msg),
            });
        }
        let iface_exists = |n: &Spanned<String>| -> R<String> {
            if names.contains_key(n.get_ref()) {
                Ok(n.get_ref().clone())
            } else {
                Err(self.err(span_of(n), format!("unknown interface {:?}", n.get_ref())))
            }
        };
        let on_link = |ip: IpAddr| interfaces.iter().any(|i| i.addresses.iter().any(|n| n.contains(ip)));

        // Neighbours.
        let mut neighbors = Vec::new();
        for rn in &raw.neighbor {
            let rn = rn.get_ref();
            let interface = rn.interface.as_ref().map(iface_exists).transpose()?;
            neighbors.push(Neighbor { address: rn.address.get_ref().0, mac: rn.mac.0, interface });
        }

        // Routes.
        let mut routes = Vec::new();
        for rr in &raw.route {
            let rr_ref = rr.get_ref();
            let prefix = rr_ref.prefix.get_ref().0;
            let interface = rr_ref.interface.as_ref().map(iface_exists).transpose()?;
            let via = rr_ref.via.as_ref().map(|v| v.get_ref().0);
            if let Some(v) = &rr_ref.via {
                if v.get_ref().0.is_ipv4() != prefix.addr.is_ipv4() {
                    return Err(self.err(
                        span_of(v),
                        format!("route gateway {} is not in the address family of {prefix}", v.get_ref().0),
                    ));
                }
            }
            match (&rr_ref.via, &interface) {
                (None, None) => {
                    return Err(self.err(span_of(&rr_ref.prefix), format!("route {prefix} needs `via` or `interface`")));
                }
                (Some(v), None) if !on_link(v.get_ref().0) => {
                    return Err(self.err(
                        span_of(v),
                        format!("route gateway {} is not reachable through any interface subnet", v.get_ref().0),
                    ));
                }
                _ => {}
            }
            routes.push(Route { prefix, via, interface });
        }

        let check_reach = !(interfaces.is_empty() && engine.backend == Backend::Memory);
        let reachable = |ip: IpAddr| on_link(ip) || routes.iter().any(|r| r.prefix.contains(ip));

        // Services.
        let mut services: Vec<Service> = Vec::new();
        let mut svc_names: HashSet<String> = HashSet::new();
        let mut port_spans: Vec<Option<Range<usize>>> = Vec::new();
        for rs in &raw.service {
            let rs_ref = rs.get_ref();
            let name = self.name(&rs_ref.name, "service name")?;
            if !svc_names.insert(name.clone()) {
                return Err(self.err(span_of(&rs_ref.name), format!("duplicate service name {name:?}")));
            }
            let svc = self.service(rs_ref, name, &reachable, check_reach, cluster.is_some())?;
            // Overlap with earlier services on the same vip + protocol.
            for (i, other) in services.iter().enumerate() {
                if other.vip == svc.vip && other.protocol == svc.protocol {
                    if let Some(p) = ports_overlap(&other.ports, &svc.ports) {
                        let where_ = rs_ref
                            .ports
                            .as_ref()
                            .map(span_of)
                            .or(port_spans[i].clone())
                            .unwrap_or(span_of(&rs_ref.vip));
                        return Err(self.err(
                            where_,
                            format!(
                                "service {:?} overlaps service {:?} on {} {} port {}",
                                svc.name,
                                other.name,
                                proto_name(svc.protocol),
                                svc.vip,
                                p
                            ),
                        ));
                    }
                }
            }
            port_spans.push(rs_ref.ports.as_ref().map(span_of));
            services.push(svc);
        }

        // A local address is where replies come back: it cannot also be a VIP.
        for (svc, raw_svc) in services.iter().zip(&raw.service) {
            if let Some(a) = svc.local_addresses.iter().find(|a| services.iter().any(|o| o.vip == **a)) {
                let sp = raw_svc.get_ref().local_addresses.as_ref().map(span_of).unwrap_or(span_of(raw_svc));
                return Err(self.err(sp, format!("local address {a} of service {:?} is a VIP", svc.name)));
            }
        }

        // Full NAT in a cluster: every local address has one owning node, and this node owns
        // some of each full-NAT service's.
        if let (Some(cl), Some(raw_cl)) = (&cluster, &raw.cluster) {
            for (svc, raw_svc) in services.iter().zip(&raw.service) {
                let fnat =
                    svc.forward == Forward::Fnat || svc.real_servers.iter().any(|r| r.forward == Some(Forward::Fnat));
                if !fnat {
                    continue;
                }
                let sp = raw_svc.get_ref().local_addresses.as_ref().map(span_of).unwrap_or(span_of(raw_svc));
                if cl.nodes.is_empty() {
                    return Err(self.err(
                        span_of(raw_cl),
                        format!(
                            "full-NAT service {:?} in a [cluster] needs [[cluster.node]] tables (id, local_addresses): \
                             each node's own local addresses, so two nodes never use the same local port",
                            svc.name
                        ),
                    ));
                }
                if let Some(a) = svc.local_addresses.iter().find(|a| cl.owner_of_local(**a).is_none()) {
                    return Err(self.err(
                        sp,
                        format!(
                            "local address {a} of service {:?} belongs to no [[cluster.node]]: list it under the node that owns it",
                            svc.name
                        ),
                    ));
                }
                if !svc.local_addresses.iter().any(|a| cl.is_own_local(*a)) {
                    return Err(self.err(
                        sp,
                        format!(
                            "service {:?} has no local address of this node (node_id {}): add one of [[cluster.node]] {}'s",
                            svc.name, cl.node_id, cl.node_id
                        ),
                    ));
                }
            }
        }

        Ok(Config { engine, interfaces, neighbors, routes, services, cluster, source: None })
    }

    fn cluster(&self, c: &Spanned<RawCluster>) -> R<Cluster> {
        let r = c.get_ref();
        let node_id = self.int(&r.node_id, 1, 255, "cluster node_id")? as u8;
        let sync_address = r.sync_address.get_ref().0;
        if sync_address.is_unspecified() || sync_address.is_multicast() {
            return Err(self.err(
                span_of(&r.sync_address),
                format!("cluster sync_address {sync_address} must be a unicast address of this node"),
            ));
        }
        let mut peers = Vec::new();
        for p in &r.peers {
            let a = p.get_ref().0;
            if a.is_ipv4() != sync_address.is_ipv4() {
                return Err(self.err(
                    span_of(p),
                    format!("cluster peer {a} is not in the address family of sync_address {sync_address}"),
                ));
            }
            if a == sync_address {
                return Err(self.err(span_of(p), format!("cluster peer {a} is this node's own sync_address")));
            }
            if a.is_multicast() || a.is_unspecified() {
                return Err(self.err(span_of(p), format!("cluster peer {a} must be a unicast address")));
            }
            if peers.contains(&a) {
                return Err(self.err(span_of(p), format!("cluster peer {a} listed twice")));
            }
            peers.push(a);
        }
        let multicast_group = match &r.multicast_group {
            None => None,
            Some(g) => {
                let a = g.get_ref().0;
                if !a.is_multicast() || a.is_ipv4() != sync_address.is_ipv4() {
                    return Err(self.err(
                        span_of(g),
                        format!(
                            "cluster multicast_group {a} must be a multicast address of the family of sync_address"
                        ),
                    ));
                }
                Some(a)
            }
        };
        if peers.is_empty() && multicast_group.is_none() {
            return Err(self.err(span_of(c), "[cluster] needs peers = [...] or multicast_group"));
        }
        let sync_port = self.opt_int(&r.sync_port, 1, 65535, "cluster sync_port", 8848)? as u16;
        let sync_refresh = self.opt_int(&r.sync_refresh, 1, 3600, "cluster sync_refresh", 10)? as u32;
        let sync_rate = self.opt_int(&r.sync_rate, 10, 1_000_000, "cluster sync_rate", 1000)? as u32;
        let bird_socket = match &r.bird_socket {
            Some(s) => PathBuf::from(self.non_empty(s, "cluster bird_socket")?),
            None => PathBuf::from("/run/bird/bird.ctl"),
        };
        let bird_protocol = match &r.bird_protocol {
            None => "fvs_{vip}".to_string(),
            Some(t) => {
                let v = t.get_ref();
                let rest = v.replace("{vip}", "");
                let ok_chars = rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                let starts = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                if !v.contains("{vip}") || !ok_chars || !starts {
                    return Err(self.err(
                        span_of(t),
                        format!(
                            "cluster bird_protocol {v:?} must contain {{vip}}, start with a letter or `_` and \
                             otherwise hold only letters, digits and `_` (a BIRD protocol name)"
                        ),
                    ));
                }
                v.clone()
            }
        };
        let drain_timeout = self.opt_int(&r.drain_timeout, 0, 86_400, "cluster drain_timeout", 30)? as u32;
        let min = Cluster::MIN_KEY_LEN;
        let (sync_key_source, sync_key) = match (&r.sync_key, &r.sync_key_file) {
            (Some(_), Some(f)) => {
                return Err(self.err(span_of(f), "cluster sync_key and sync_key_file are exclusive: set one"));
            }
            (Some(k), None) => {
                let v = k.get_ref().trim();
                if v.len() < min {
                    return Err(self.err(
                        span_of(k),
                        format!("cluster sync_key must be at least {min} bytes (e.g. `openssl rand -hex 32`)"),
                    ));
                }
                (Some(SyncKeySource::Inline), Some(SecretKey(v.as_bytes().to_vec())))
            }
            (None, Some(f)) => {
                let p = PathBuf::from(f.get_ref());
                if !p.is_absolute() {
                    return Err(self.err(span_of(f), format!("cluster sync_key_file {p:?} must be an absolute path")));
                }
                let bytes = std::fs::read(&p)
                    .map_err(|e| self.err(span_of(f), format!("cluster sync_key_file {}: {e}", p.display())))?;
                let text = bytes.trim_ascii();
                if text.len() < min {
                    return Err(self.err(
                        span_of(f),
                        format!(
                            "cluster sync_key_file {}: the key must be at least {min} bytes (e.g. `openssl rand -hex 32`)",
                            p.display()
                        ),
                    ));
                }
                (Some(SyncKeySource::File(p)), Some(SecretKey(text.to_vec())))
            }
            (None, None) => (None, None),
        };
        let mut nodes: Vec<ClusterNode> = Vec::new();
        for n in &r.node {
            let rn = n.get_ref();
            let id = self.int(&rn.id, 1, 255, "cluster node id")? as u8;
            if nodes.iter().any(|o| o.id == id) {
                return Err(self.err(span_of(&rn.id), format!("[[cluster.node]] id {id} listed twice")));
            }
            let mut local_addresses = Vec::new();
            for a in rn.local_addresses.get_ref() {
                for x in expand_addresses(a.get_ref()).map_err(|m| self.err(span_of(a), m))? {
                    if let Some(o) = nodes.iter().find(|o| o.local_addresses.contains(&x)) {
                        return Err(self.err(
                            span_of(a),
                            format!(
                                "local address {x} belongs to [[cluster.node]] {} already: every node needs \
                                 its own (two nodes would hand out the same local ports)",
                                o.id
                            ),
                        ));
                    }
                    if local_addresses.contains(&x) {
                        return Err(self.err(span_of(a), format!("local address {x} listed twice")));
                    }
                    local_addresses.push(x);
                }
            }
            if local_addresses.is_empty() {
                return Err(
                    self.err(span_of(&rn.local_addresses), format!("[[cluster.node]] {id} has no local_addresses"))
                );
            }
            nodes.push(ClusterNode { id, local_addresses });
        }
        Ok(Cluster {
            node_id,
            peers,
            multicast_group,
            sync_address,
            sync_port,
            sync_refresh,
            sync_rate,
            bird_socket,
            bird_protocol,
            drain_timeout,
            sync_key_source,
            sync_key,
            nodes,
        })
    }

    fn engine(&self, raw: Option<Spanned<RawEngine>>) -> R<(Engine, Option<Range<usize>>)> {
        let Some(raw) = raw else {
            return Ok((default_engine(), None));
        };
        let e = raw.into_inner();
        let workers = self.opt_int(&e.workers, 1, 64, "workers", 1)? as usize;
        let backend = match &e.backend {
            Some(b) => self.choice(
                b,
                "backend",
                &[("af_packet", Backend::AfPacket), ("memory", Backend::Memory), ("dpdk", Backend::Dpdk)],
            )?,
            None => Backend::AfPacket,
        };
        let cores = match &e.cores {
            None => None,
            Some(c) => {
                let mut v = Vec::new();
                let mut seen = HashSet::new();
                for x in c.get_ref() {
                    let n = self.int(x, 0, 4095, "core number")? as usize;
                    if !seen.insert(n) {
                        return Err(self.err(span_of(x), format!("core {n} listed twice")));
                    }
                    v.push(n);
                }
                if v.len() != workers {
                    return Err(self.err(span_of(c), format!("cores lists {} cores but workers = {workers}", v.len())));
                }
                Some(v)
            }
        };
        let mbufs = self.opt_int(&e.mbufs, 1, u32::MAX as i64, "mbufs", 8192)? as u32;
        let flow_table_size = self.opt_int(&e.flow_table_size, 1, 1 << 32, "flow_table_size", 1_048_576)? as usize;
        let expectation_table_size =
            self.opt_int(&e.expectation_table_size, 16, 1 << 24, "expectation_table_size", 65_536)? as usize;
        let neighbor_table_size =
            self.opt_int(&e.neighbor_table_size, 16, 1 << 24, "neighbor_table_size", 4096)? as usize;
        let syn_proxy_threshold = self.opt_int(
            &e.syn_proxy_threshold,
            0,
            u32::MAX as i64,
            "syn_proxy_threshold",
            default_syn_threshold(flow_table_size),
        )? as u32;
        let icmp_rate = self.opt_int(&e.icmp_rate, 0, 1_000_000_000, "icmp_rate", 1000)? as u32;
        let icmp_burst = self.opt_int(&e.icmp_burst, 1, 1_000_000, "icmp_burst", 50)? as u32;
        let icmp_host_rate = self.opt_int(&e.icmp_host_rate, 0, 1_000_000_000, "icmp_host_rate", 100)? as u32;
        let icmp_host_burst = self.opt_int(&e.icmp_host_burst, 1, 1_000_000, "icmp_host_burst", 10)? as u32;
        let kernel_rate = self.opt_int(&e.kernel_rate, 1, 1_000_000_000, "kernel_rate", 100_000)? as u32;
        let health_check_threads =
            self.opt_int(&e.health_check_threads, 1, 65_536, "health_check_threads", 128)? as u32;
        let control_socket = match &e.control_socket {
            Some(s) => PathBuf::from(self.non_empty(s, "control_socket")?),
            None => PathBuf::from(DEFAULT_SOCKET),
        };
        let metrics_listen = match &e.metrics_listen {
            None => None,
            Some(s) => Some(s.get_ref().parse().map_err(|_| {
                self.err(span_of(s), format!("invalid metrics_listen {:?}: expected ADDRESS:PORT", s.get_ref()))
            })?),
        };
        let timeouts = self.timeouts(e.timeouts.unwrap_or_default())?;
        let local_port_range = match &e.local_port_range {
            None => PortRange { lo: 1024, hi: 65535 },
            Some(r) => {
                let r0 = r.get_ref().0;
                // Each worker needs a share of its own (at most 64 workers).
                if r0.hi - r0.lo < 63 {
                    return Err(self.err(
                        span_of(r),
                        format!("local_port_range {} is too small: at least 64 ports", fmt_range(r0)),
                    ));
                }
                r0
            }
        };
        let rp_filter = match &e.rp_filter {
            None => RpFilter::Off,
            Some(v) => self.choice(
                v,
                "rp_filter",
                &[("off", RpFilter::Off), ("loose", RpFilter::Loose), ("strict", RpFilter::Strict)],
            )?,
        };
        let deny_from = self.source_list(&e.deny_from, "deny_from", "[engine]", None)?;
        let backend_span = e.backend.as_ref().map(span_of);
        Ok((
            Engine {
                workers,
                backend,
                cores,
                eal_args: e.eal_args.unwrap_or_default(),
                mbufs,
                flow_table_size,
                expectation_table_size,
                neighbor_table_size,
                syn_proxy_threshold,
                icmp_rate,
                kernel_rate,
                health_check_threads,
                icmp_burst,
                icmp_host_rate,
                icmp_host_burst,
                control_socket,
                metrics_listen,
                timeouts,
                local_port_range,
                rp_filter,
                deny_from,
            },
            backend_span,
        ))
    }

    fn timeouts(&self, t: RawTimeouts) -> R<Timeouts> {
        let d = Timeouts::default();
        let f = |v: &Option<Spanned<i64>>, name: &str, def: u32| -> R<u32> {
            Ok(self.opt_int(v, 1, u32::MAX as i64, &format!("timeout {name}"), def as i64)? as u32)
        };
        Ok(Timeouts {
            tcp_established: f(&t.tcp_established, "tcp_established", d.tcp_established)?,
            tcp_syn_sent: f(&t.tcp_syn_sent, "tcp_syn_sent", d.tcp_syn_sent)?,
            tcp_syn_recv: f(&t.tcp_syn_recv, "tcp_syn_recv", d.tcp_syn_recv)?,
            tcp_fin_wait: f(&t.tcp_fin_wait, "tcp_fin_wait", d.tcp_fin_wait)?,
            tcp_time_wait: f(&t.tcp_time_wait, "tcp_time_wait", d.tcp_time_wait)?,
            tcp_close: f(&t.tcp_close, "tcp_close", d.tcp_close)?,
            tcp_close_wait: f(&t.tcp_close_wait, "tcp_close_wait", d.tcp_close_wait)?,
            tcp_last_ack: f(&t.tcp_last_ack, "tcp_last_ack", d.tcp_last_ack)?,
            tcp_listen: f(&t.tcp_listen, "tcp_listen", d.tcp_listen)?,
            tcp_synack: f(&t.tcp_synack, "tcp_synack", d.tcp_synack)?,
            udp: f(&t.udp, "udp", d.udp)?,
            icmp: f(&t.icmp, "icmp", d.icmp)?,
        })
    }

    /// A service's `allow_from` / `deny_from`: addresses (a host each) and CIDRs without host
    /// bits (`10.0.0.1/8` is refused: 10.0.0.0/8 or 10.0.0.1?), of the VIP's family (its
    /// clients' family; another could never match).
    fn source_list(
        &self,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
        key: &str,
        owner: &str,
        vip: Option<IpAddr>,
    ) -> R<Vec<IpNet>> {
        let mut out = Vec::new();
        for e in v.iter().flat_map(|l| l.get_ref()) {
            let t = e.get_ref().trim();
            let bad = |m: String| self.err(span_of(e), format!("{owner}: {key} entry {t:?}: {m}"));
            let n = if t.contains('/') {
                let n = parse_net(t).map_err(bad)?;
                let bits = if n.addr.is_ipv4() { 32 } else { 128 };
                let host = bits - u32::from(n.prefix);
                let hostpart = match n.addr {
                    IpAddr::V4(a) => u128::from(u32::from(a)) & ((1u128 << host) - 1),
                    IpAddr::V6(a) => u128::from(a) & if host == 128 { u128::MAX } else { (1u128 << host) - 1 },
                };
                if hostpart != 0 {
                    return Err(bad("host bits set (write the network's first address, or the address alone)".into()));
                }
                n
            } else {
                let a = parse_ip(t).map_err(bad)?;
                IpNet { addr: a, prefix: if a.is_ipv4() { 32 } else { 128 } }
            };
            if let Some(vip) = vip.filter(|v| v.is_ipv4() != n.addr.is_ipv4()) {
                return Err(bad(format!(
                    "the service's clients are {} (its VIP is {vip})",
                    if vip.is_ipv4() { "IPv4" } else { "IPv6" }
                )));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn forward(&self, v: &Spanned<String>) -> R<Forward> {
        self.choice(
            v,
            "forward",
            &[("nat", Forward::Nat), ("dr", Forward::Dr), ("tunnel", Forward::Tunnel), ("fnat", Forward::Fnat)],
        )
    }

    fn service(
        &self,
        rs: &RawService,
        name: String,
        reachable: &dyn Fn(IpAddr) -> bool,
        check_reach: bool,
        cluster: bool,
    ) -> R<Service> {
        let vip = rs.vip.get_ref().0;
        let protocol = match &rs.protocol {
            Some(p) => self.choice(p, "protocol", &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)])?,
            None => Protocol::Tcp,
        };

        // Ports: no duplicates or overlaps within the service.
        let mut ports: Vec<PortRange> = Vec::new();
        if let Some(ps) = &rs.ports {
            for p in ps.get_ref() {
                let r = p.get_ref().0;
                if let Some(q) = ports.iter().find(|q| q.lo <= r.hi && r.lo <= q.hi) {
                    return Err(self.err(
                        span_of(p),
                        format!("port {} overlaps {} already listed in service {name:?}", fmt_range(r), fmt_range(*q)),
                    ));
                }
                ports.push(r);
            }
        }

        let scheduler = match &rs.scheduler {
            Some(s) => {
                ferrovs_sched::check_name(s.get_ref()).map_err(|e| self.err(span_of(s), e.to_string()))?;
                if cluster && s.get_ref() != "mh" {
                    return Err(self.err(
                        span_of(s),
                        format!(
                            "scheduler {:?} in a [cluster]: every node must choose the same real server \
                             for a connection, which needs scheduler \"mh\" (the default in a cluster)",
                            s.get_ref()
                        ),
                    ));
                }
                s.get_ref().clone()
            }
            None if cluster => "mh".to_string(),
            None => ferrovs_sched::DEFAULT.to_string(),
        };
        let forward = match &rs.forward {
            Some(f) => self.forward(f)?,
            None => Forward::Nat,
        };

        let max_prefix: i64 = if vip.is_ipv4() { 32 } else { 128 };
        let persistence = match &rs.persistence {
            None => None,
            Some(p) => {
                let (timeout, netmask) = match p.get_ref() {
                    RawPersistence::Secs(s) => (
                        self.int(&Spanned::new(span_of(p), *s), 1, MAX_PERSISTENCE_S as i64, "persistence timeout")?,
                        None,
                    ),
                    RawPersistence::Table(t) => (
                        self.opt_int(&t.timeout, 1, MAX_PERSISTENCE_S as i64, "persistence timeout", 300)?,
                        t.netmask.as_ref(),
                    ),
                };
                let netmask = match netmask {
                    None => max_prefix as u8,
                    Some(m) => match m.get_ref() {
                        NetmaskDe::Prefix(n) => {
                            self.int(&Spanned::new(span_of(m), *n), 0, max_prefix, "persistence netmask")? as u8
                        }
                        NetmaskDe::Dotted(d) => {
                            if !vip.is_ipv4() {
                                return Err(self.err(
                                    span_of(m),
                                    "a dotted persistence netmask needs an IPv4 vip; use a prefix length",
                                ));
                            }
                            mask_to_prefix(*d).ok_or_else(|| {
                                self.err(span_of(m), format!("persistence netmask {d} is not contiguous"))
                            })?
                        }
                    },
                };
                Some(Persistence { timeout: timeout as u32, netmask })
            }
        };

        let ftp = match &rs.ftp {
            None => None,
            Some(f) if matches!(f.get_ref(), RawFtp::Bool(false)) => None,
            Some(f) => {
                if protocol != Protocol::Tcp {
                    return Err(self.err(span_of(f), "ftp needs protocol = \"tcp\""));
                }
                let mut o = FtpOptions::default();
                let mut cp_spans = vec![span_of(f); 1];
                if let RawFtp::Table(t) = f.get_ref() {
                    if let Some(cp) = &t.control_ports {
                        o.control_ports.clear();
                        cp_spans.clear();
                        for p in cp.get_ref() {
                            let v = self.int(p, 1, 65535, "ftp control port")? as u16;
                            if o.control_ports.contains(&v) {
                                return Err(self.err(span_of(p), format!("ftp control port {v} listed twice")));
                            }
                            o.control_ports.push(v);
                            cp_spans.push(span_of(p));
                        }
                        if o.control_ports.is_empty() {
                            return Err(self.err(span_of(cp), "ftp control_ports must not be empty"));
                        }
                    }
                    if let Some(a) = t.allow_foreign_port_address {
                        o.allow_foreign_port_address = a;
                    }
                    o.pinhole_timeout =
                        self.opt_int(&t.pinhole_timeout, 1, u32::MAX as i64, "ftp pinhole_timeout", 60)? as u32;
                    o.max_expectations = self.opt_int(&t.max_expectations, 1, 16, "ftp max_expectations", 4)? as u8;
                    if let Some(a) = t.allow_low_data_ports {
                        o.allow_low_data_ports = a;
                    }
                }
                if !ports.is_empty() {
                    for (p, sp) in o.control_ports.iter().zip(cp_spans.iter().cycle()) {
                        if !ports.iter().any(|r| r.contains(*p)) {
                            return Err(self.err(
                                sp.clone(),
                                format!("ftp control port {p} is not one of the ports of service {name:?}"),
                            ));
                        }
                    }
                }
                Some(o)
            }
        };

        let fwmark = match &rs.fwmark {
            Some(m) => Some(self.int(m, 1, u32::MAX as i64, "fwmark")? as u32),
            None => None,
        };
        let syn_proxy = match &rs.syn_proxy {
            None => SynProxy::Auto,
            Some(v) => match v.get_ref().as_str() {
                "auto" => SynProxy::Auto,
                "on" => SynProxy::On,
                "off" => SynProxy::Off,
                other => {
                    return Err(self.err(span_of(v), format!("unknown syn_proxy {other:?}: expected auto, on or off")))
                }
            },
        };

        let one_packet = match &rs.one_packet {
            Some(v) if *v.get_ref() && protocol != Protocol::Udp => {
                return Err(self.err(
                    span_of(v),
                    format!(
                        "one_packet applies to UDP services (ipvsadm --ops): service {name:?} is {}",
                        proto_name(protocol)
                    ),
                ))
            }
            Some(v) => *v.get_ref(),
            None => false,
        };

        // Each flag checked on its own, so an error points at it.
        let mut sched_flags = SchedFlags::default();
        for f in rs.sched_flags.iter().flat_map(|v| v.get_ref()) {
            let one = SchedFlags::parse(&scheduler, [f.get_ref().as_str()])
                .map_err(|e| self.err(span_of(f), format!("service {name:?}: {e}")))?;
            sched_flags.fallback |= one.fallback;
            sched_flags.port |= one.port;
        }

        let owner = format!("service {name:?}");
        let allow_from = self.source_list(&rs.allow_from, "allow_from", &owner, Some(vip))?;
        let deny_from = self.source_list(&rs.deny_from, "deny_from", &owner, Some(vip))?;

        // The service's `start_down`, from its first check (see `health_checks`).
        let mut shared = None;
        let health_checks = match &rs.health_check {
            None => Vec::new(),
            Some(h) => self.health_checks(h, false, &mut shared)?,
        };

        let mut local_addresses: Vec<IpAddr> = Vec::new();
        if let Some(la) = &rs.local_addresses {
            for a in la.get_ref() {
                let v = expand_addresses(a.get_ref()).map_err(|m| self.err(span_of(a), m))?;
                for x in v {
                    // One family per service: the real servers' (which may differ from the VIP's:
                    // full NAT then translates between IPv6 and IPv4).
                    if let Some(f) = local_addresses.first().filter(|f| f.is_ipv4() != x.is_ipv4()) {
                        return Err(self.err(
                            span_of(a),
                            format!("local address {x} is not in the address family of local address {f} (one family per service)"),
                        ));
                    }
                    if local_addresses.contains(&x) {
                        return Err(self.err(span_of(a), format!("local address {x} listed twice")));
                    }
                    local_addresses.push(x);
                    if local_addresses.len() > MAX_LOCAL_ADDRESSES {
                        return Err(self.err(
                            span_of(a),
                            format!("more than {MAX_LOCAL_ADDRESSES} local addresses in service {name:?}"),
                        ));
                    }
                }
            }
        }
        let fnat_span = rs.forward.as_ref().filter(|f| f.get_ref() == "fnat").map(span_of).or_else(|| {
            rs.real_server
                .iter()
                .find_map(|r| r.get_ref().forward.as_ref().filter(|f| f.get_ref() == "fnat").map(span_of))
        });
        if let Some(sp) = fnat_span {
            if local_addresses.is_empty() {
                return Err(self.err(
                    sp,
                    format!(
                        "forward = \"fnat\" needs local_addresses in service {name:?} (the balancer's source addresses towards the real servers)"
                    ),
                ));
            }
        }

        let mut real_servers = Vec::new();
        let mut seen_rs: HashSet<(IpAddr, Option<u16>)> = HashSet::new();
        for rr in &rs.real_server {
            let r = rr.get_ref();
            let address = r.address.get_ref().0;
            let rforward = match &r.forward {
                Some(f) => Some(self.forward(f)?),
                None => None,
            };
            if rforward.unwrap_or(forward) == Forward::Fnat {
                // Full NAT: the local addresses face the real server, so they carry its family;
                // the VIP's family may differ (IPv6 <-> IPv4 translation, RFC 7915).
                if let Some(l) = local_addresses.first().filter(|l| l.is_ipv4() != address.is_ipv4()) {
                    return Err(self.err(
                        span_of(&r.address),
                        format!(
                            "real server {address} is not in the address family of local address {l} \
                             (full NAT needs local addresses of the real servers' family)"
                        ),
                    ));
                }
            } else if address.is_ipv4() != vip.is_ipv4() {
                return Err(self.err(
                    span_of(&r.address),
                    format!(
                        "real server {address} is not in the address family of vip {vip} \
                         (mixed families need forward = \"fnat\")"
                    ),
                ));
            }
            let port = match &r.port {
                Some(p) => Some(self.int(p, 1, 65535, "real server port")? as u16),
                None => None,
            };
            // On a single-port service, no port and that port are one destination.
            let dest_port = dest_port_of(&ports, port);
            if !seen_rs.insert((address, dest_port)) {
                return Err(
                    self.err(span_of(&r.address), format!("duplicate real server {address} in service {name:?}"))
                );
            }
            let weight = self.opt_int(&r.weight, 0, 65535, "weight", 1)? as u32;
            let upper = self.opt_int(&r.upper, 0, MAX_THRESHOLD as i64, "upper", 0)? as u32;
            let lower = self.opt_int(&r.lower, 0, MAX_THRESHOLD as i64, "lower", 0)? as u32;
            if cluster && (upper != 0 || lower != 0) {
                let sp = r.upper.as_ref().or(r.lower.as_ref()).map(span_of).unwrap_or(span_of(&r.address));
                return Err(self.err(
                    sp,
                    "connection thresholds (upper/lower) count one node's connections: not allowed in a [cluster], \
                     where every node must make the same choice",
                ));
            }
            if upper != 0 && lower != 0 && upper < lower {
                let sp = r.lower.as_ref().map(span_of).unwrap_or(span_of(&r.address));
                return Err(self.err(sp, format!("lower threshold {lower} is above upper threshold {upper}")));
            }
            if check_reach && !reachable(address) {
                return Err(self.err(
                    span_of(&r.address),
                    format!("real server {address} is not reachable through any interface or route"),
                ));
            }
            let proxy_protocol = match &r.proxy_protocol {
                None => None,
                Some(v) => {
                    let pp =
                        self.choice(v, "proxy_protocol", &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)])?;
                    if protocol != Protocol::Tcp {
                        return Err(self.err(span_of(v), "proxy_protocol needs protocol = \"tcp\""));
                    }
                    if !rforward.unwrap_or(forward).two_way() {
                        return Err(self.err(
                            span_of(v),
                            "proxy_protocol needs forward = \"nat\" or \"fnat\" (the balancer must see both directions)",
                        ));
                    }
                    if ftp.is_some() {
                        return Err(self.err(span_of(v), "proxy_protocol cannot be used on an ftp service"));
                    }
                    Some(pp)
                }
            };
            let health_checks = match &r.health_check {
                None => None,
                Some(h) => {
                    let c = self.health_checks(h, true, &mut shared)?;
                    self.check_sources(&c, address, span_of(h))?;
                    Some(c)
                }
            };
            real_servers.push(RealServer {
                address,
                port,
                weight,
                upper,
                lower,
                forward: rforward,
                proxy_protocol,
                health_checks,
            });
        }

        let sorry_server = match &rs.sorry_server {
            None => None,
            Some(ss) => {
                let r = ss.get_ref();
                let address = r.address.get_ref().0;
                let family_of = if forward == Forward::Fnat { local_addresses.first().copied() } else { Some(vip) };
                if let Some(f) = family_of.filter(|f| f.is_ipv4() != address.is_ipv4()) {
                    return Err(self.err(
                        span_of(&r.address),
                        format!("sorry server {address} is not in the address family of {f}"),
                    ));
                }
                let port = match &r.port {
                    Some(p) => Some(self.int(p, 1, 65535, "sorry server port")? as u16),
                    None => None,
                };
                let dest_port = dest_port_of(&ports, port);
                if seen_rs.contains(&(address, dest_port)) {
                    return Err(self.err(
                        span_of(&r.address),
                        format!("sorry server {address} is also a real server of service {name:?}"),
                    ));
                }
                if check_reach && !reachable(address) {
                    return Err(self.err(
                        span_of(&r.address),
                        format!("sorry server {address} is not reachable through any interface or route"),
                    ));
                }
                Some(SorryServer { address, port })
            }
        };

        let quorum = self.opt_int(&rs.quorum, 1, u32::MAX as i64, "quorum", 1)? as u32;
        let hysteresis = match &rs.hysteresis {
            None => 0,
            Some(h) => {
                let v = self.int(h, 0, u32::MAX as i64, "hysteresis")? as u32;
                // Below quorum - hysteresis must be a weight a live service can have.
                if v >= quorum {
                    return Err(self.err(span_of(h), format!("hysteresis {v} must be less than the quorum {quorum}")));
                }
                v
            }
        };

        let notify = match &rs.notify {
            None => None,
            Some(n) => Some(self.notify(n)?),
        };

        let source_conn_rate =
            self.opt_int(&rs.source_conn_rate, 0, MAX_SOURCE_CONN_RATE, "source_conn_rate", 0)? as u32;
        let source_conn_burst = match &rs.source_conn_burst {
            Some(b) if source_conn_rate == 0 => {
                return Err(self.err(span_of(b), "source_conn_burst needs a source_conn_rate".to_string()))
            }
            Some(b) => self.int(b, 1, MAX_SOURCE_CONN_RATE, "source_conn_burst")? as u32,
            None => source_conn_rate,
        };
        if let Some(h) = &rs.health_check {
            for r in real_servers.iter().filter(|r| r.health_checks.is_none()) {
                self.check_sources(&health_checks, r.address, span_of(h))?;
            }
        }

        Ok(Service {
            name,
            vip,
            protocol,
            ports,
            scheduler,
            forward,
            persistence,
            ftp,
            fwmark,
            real_servers,
            health_checks,
            syn_proxy,
            one_packet,
            sched_flags,
            allow_from,
            deny_from,
            source_conn_rate,
            source_conn_burst,
            local_addresses,
            sorry_server,
            quorum,
            hysteresis,
            notify,
        })
    }

    fn notify(&self, n: &Spanned<RawNotify>) -> R<Notify> {
        let r = n.get_ref();
        let cmd = |c: &Option<Spanned<Vec<Spanned<String>>>>, what: &str| -> R<Vec<String>> {
            c.as_ref().map_or(Ok(Vec::new()), |c| self.program(c, &format!("notify {what}")))
        };
        let timeout = match &r.timeout {
            None => Notify::DEFAULT_TIMEOUT,
            Some(t) => {
                let v = *t.get_ref();
                if !(0.01..=3600.0).contains(&v) {
                    return Err(self.err(span_of(t), format!("notify timeout {v} must be 0.01..=3600 seconds")));
                }
                v
            }
        };
        Ok(Notify {
            up: cmd(&r.up, "up")?,
            down: cmd(&r.down, "down")?,
            quorum_up: cmd(&r.quorum_up, "quorum_up")?,
            quorum_down: cmd(&r.quorum_down, "quorum_down")?,
            user: r.user.as_ref().map(|u| self.user_name(u, "notify user")).transpose()?,
            timeout,
        })
    }

    /// A program to run (`what`: what names it in errors): its absolute path, then its
    /// arguments, none with a NUL byte.
    fn program(&self, c: &Spanned<Vec<Spanned<String>>>, what: &str) -> R<Vec<String>> {
        let args = c.get_ref();
        let Some(prog) = args.first() else {
            return Err(self.err(
                span_of(c),
                format!("{what} must not be empty: the program's absolute path, then its arguments"),
            ));
        };
        if !prog.get_ref().starts_with('/') {
            return Err(self.err(
                span_of(prog),
                format!("{what} {:?} must be an absolute path (no shell, no PATH look-up)", prog.get_ref()),
            ));
        }
        if let Some(a) = args.iter().find(|a| a.get_ref().contains('\0')) {
            return Err(self.err(span_of(a), format!("{what} arguments must not contain a NUL byte")));
        }
        Ok(args.iter().map(|a| a.get_ref().clone()).collect())
    }

    /// A user name a program runs as (`what` names it in errors).
    fn user_name(&self, u: &Spanned<String>, what: &str) -> R<String> {
        let name = u.get_ref();
        if name.is_empty() || name.len() > 256 || name.contains('\0') {
            return Err(
                self.err(span_of(u), format!("{what} {name:?} must be a user name of 1 to 256 bytes without NUL"))
            );
        }
        Ok(name.clone())
    }

    /// A `health_check` of a service or of a real server: one table or an array of them.
    /// What becomes of a failed server (`on_fail`) belongs to the server: the checks of one
    /// list (the service's, or a server's own) agree on it (keepalived's
    /// `inhibit_on_failure` is per real server). Whether servers start down (`start_down`)
    /// belongs to the service: every check of it, its own and its servers', agrees with the
    /// first (`shared`).
    ///
    /// `server`: a real server's own checks, the only ones that may name an `address`.
    fn health_checks(&self, h: &Spanned<RawChecks>, server: bool, shared: &mut Option<bool>) -> R<Vec<HealthCheck>> {
        let raw: Vec<(&RawHealthCheck, Range<usize>)> = match h.get_ref() {
            RawChecks::One(r) => vec![(r, span_of(h))],
            RawChecks::Many(v) => v.iter().map(|c| (c.get_ref(), span_of(c))).collect(),
        };
        if raw.len() > HealthCheck::MAX_PER_SERVICE {
            return Err(self.err(
                span_of(h),
                format!("a service has at most {} health checks, got {}", HealthCheck::MAX_PER_SERVICE, raw.len()),
            ));
        }
        let mut out: Vec<HealthCheck> = Vec::with_capacity(raw.len());
        for (r, span) in raw {
            let c = self.health_check(r)?;
            if let (Some(a), false) = (&r.address, server) {
                return Err(self.err(
                    span_of(a),
                    "health check `address` belongs in a real server's own health_check (it replaces that server's address)",
                ));
            }
            if let Some(first) = out.first().filter(|f| f.quiesce != c.quiesce) {
                let what = if first.quiesce { "quiesce" } else { "remove" };
                return Err(self.err(
                    r.on_fail.as_ref().map_or(span.clone(), span_of),
                    format!(
                        "the checks of one server have the same on_fail (it says what becomes of the server): \
                         the first says {what:?}"
                    ),
                ));
            }
            if shared.is_some_and(|s| s != c.start_down) {
                return Err(self.err(span, "every health check of a service has the same start_down"));
            }
            *shared = Some(c.start_down);
            out.push(c);
        }
        Ok(out)
    }

    /// A check's `source` is of the family of the address it checks (its `address`, else the
    /// real server's, `server`); an error at `span` (the checks) otherwise.
    fn check_sources(&self, checks: &[HealthCheck], server: IpAddr, span: Range<usize>) -> R<()> {
        for c in checks {
            if let Some(s) = c.source {
                let to = c.address.unwrap_or(server);
                if s.is_ipv4() != to.is_ipv4() {
                    return Err(
                        self.err(span, format!("health check source {s} cannot reach {to}: not of its address family"))
                    );
                }
            }
        }
        Ok(())
    }

    fn health_check(&self, r: &RawHealthCheck) -> R<HealthCheck> {
        let kind = self.choice(&r.kind, "health check type", &HealthCheckKind::ALL.map(|k| (k.name(), k)))?;
        let port = match &r.port {
            Some(p) if kind == HealthCheckKind::Ping => {
                return Err(self.err(span_of(p), "health check type \"ping\" has no `port` (ICMP echo)"))
            }
            Some(p) => Some(self.int(p, 1, 65535, "health check port")? as u16),
            None => None,
        };
        // `address` and `source`: a host's address, for a check that connects somewhere.
        let host = |v: &Option<Spanned<IpDe>>, what: &str| -> R<Option<IpAddr>> {
            let Some(a) = v else { return Ok(None) };
            let ip = a.get_ref().0;
            if kind == HealthCheckKind::Exec {
                return Err(
                    self.err(span_of(a), format!("health check type \"exec\" has no `{what}` (it connects nowhere)"))
                );
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(self.err(span_of(a), format!("health check {what} {ip} is not a host's")));
            }
            Ok(Some(ip))
        };
        let address = host(&r.address, "address")?;
        let source = host(&r.source, "source")?;
        if let (Some(s), Some(a), Some(sp)) = (source, address, &r.source) {
            if s.is_ipv4() != a.is_ipv4() {
                return Err(
                    self.err(span_of(sp), format!("health check source {s} is not in the family of address {a}"))
                );
            }
        }
        let secs = |v: &Option<Spanned<f64>>, what: &str, def: f64| -> R<f64> {
            match v {
                None => Ok(def),
                Some(x) => {
                    let f = *x.get_ref();
                    if !(f.is_finite() && f > 0.0 && f <= 86400.0) {
                        return Err(self.err(
                            span_of(x),
                            format!("health check {what} must be > 0 and <= 86400 seconds, got {f}"),
                        ));
                    }
                    Ok(f)
                }
            }
        };
        let interval = secs(&r.interval, "interval", HealthCheck::DEFAULT_INTERVAL)?;
        let retry_interval = match &r.retry_interval {
            Some(_) => Some(secs(&r.retry_interval, "retry_interval", interval)?),
            None => None,
        };
        let timeout = secs(&r.timeout, "timeout", HealthCheck::DEFAULT_TIMEOUT)?;
        let rise = self.opt_int(&r.rise, 1, 1000, "health check rise", HealthCheck::DEFAULT_RISE.into())? as u32;
        let fall = self.opt_int(&r.fall, 1, 1000, "health check fall", HealthCheck::DEFAULT_FALL.into())? as u32;
        let quiesce = match &r.on_fail {
            Some(s) => self.choice(s, "on_fail", &[("quiesce", true), ("remove", false)])?,
            None => HealthCheck::DEFAULT_QUIESCE,
        };
        let expect = r.expect.as_ref().map(|e| e.get_ref().clone());
        if kind == HealthCheckKind::SendExpect && !matches!(expect.as_deref(), Some(e) if !e.is_empty()) {
            let sp = r.expect.as_ref().map(span_of).unwrap_or(span_of(&r.kind));
            return Err(self.err(sp, "health check type \"send_expect\" needs a non-empty `expect`"));
        }
        // `http` and `https` only: what goes into the request line and the Host header is one
        // visible ASCII word each (no space, CR or LF: nothing a check could smuggle into the
        // request).
        let http = kind.is_http();
        let word = |v: &Option<Spanned<String>>, what: &str, first: Option<char>| -> R<Option<String>> {
            let Some(x) = v else { return Ok(None) };
            let s = x.get_ref();
            if !http {
                return Err(self.err(span_of(x), format!("health check `{what}` is for type \"http\" or \"https\"")));
            }
            let ok = !s.is_empty()
                && s.len() <= 1024
                && s.bytes().all(|b| b.is_ascii_graphic())
                && first.is_none_or(|c| s.starts_with(c));
            if !ok {
                let start = first.map_or(String::new(), |c| format!(", starting with {c:?}"));
                return Err(self.err(
                    span_of(x),
                    format!("health check {what} {s:?} must be visible ASCII without spaces, 1 to 1024 bytes{start}"),
                ));
            }
            Ok(Some(s.clone()))
        };
        let path = word(&r.path, "path", Some('/'))?;
        let host = word(&r.host, "host", None)?;
        let status = match &r.status {
            Some(x) if !http => {
                return Err(self.err(span_of(x), "health check `status` is for type \"http\" or \"https\""))
            }
            Some(x) => Some(self.int(x, 100, 599, "health check status")? as u16),
            None => None,
        };
        // `http` and `https`: an MD5 in hex, kept in lower case.
        let digest = match &r.digest {
            Some(x) if !http => {
                return Err(self.err(span_of(x), "health check `digest` is for type \"http\" or \"https\""))
            }
            Some(x) if x.get_ref().len() != 32 || !x.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(self.err(
                    span_of(x),
                    format!("health check digest {:?} must be an MD5 in hex (32 hex digits)", x.get_ref()),
                ))
            }
            Some(x) => Some(x.get_ref().to_ascii_lowercase()),
            None => None,
        };
        // `https` only: an absolute path (a relative one would depend on the daemon's working
        // directory), read when the check runs.
        let tls_ca = match &r.tls_ca {
            Some(x) if kind != HealthCheckKind::Https => {
                return Err(self.err(span_of(x), "health check `tls_ca` is for type \"https\""))
            }
            Some(x) if !x.get_ref().starts_with('/') || x.get_ref().contains('\0') => {
                return Err(self.err(
                    span_of(x),
                    format!(
                        "health check tls_ca {:?} must be an absolute path (a PEM file of CA certificates)",
                        x.get_ref()
                    ),
                ))
            }
            Some(x) => Some(x.get_ref().clone()),
            None => None,
        };
        let (query_name, query_type) = self.dns_fields(r, kind)?;
        let (payload, require_reply, reply) = self.udp_fields(r, kind)?;
        let (min_reply_length, max_reply_length) = self.reply_lengths(r, kind)?;
        // `reply` and the lengths say what an answer must be: they imply one is required.
        let require_reply =
            require_reply || reply.is_some() || min_reply_length.is_some() || max_reply_length.is_some();
        // `smtp` only: one visible ASCII word (nothing a check could smuggle into the
        // command line), as a host name.
        let helo_name = match &r.helo_name {
            Some(x) if kind != HealthCheckKind::Smtp => {
                return Err(self.err(span_of(x), "health check `helo_name` is for type \"smtp\""))
            }
            Some(x) if !HealthCheck::valid_helo_name(x.get_ref()) => {
                return Err(self.err(
                    span_of(x),
                    format!(
                        "health check helo_name {:?} must be visible ASCII without spaces, 1 to 255 bytes",
                        x.get_ref()
                    ),
                ))
            }
            Some(x) => Some(x.get_ref().clone()),
            None => None,
        };
        let (command, user) = self.exec_fields(r, kind)?;
        Ok(HealthCheck {
            kind,
            port,
            address,
            source,
            send: r.send.clone(),
            expect,
            path,
            host,
            status,
            digest,
            tls_ca,
            query_name,
            query_type,
            payload,
            require_reply,
            reply,
            min_reply_length,
            max_reply_length,
            helo_name,
            command,
            user,
            interval,
            retry_interval,
            timeout,
            rise,
            fall,
            quiesce,
            start_down: r.start_down.unwrap_or(false),
        })
    }
}

impl Validator<'_> {
    /// `udp`'s `payload`, `require_reply` and `reply` (for type `udp` only): hex octets
    /// ([`HealthCheck::hex_octets`], `x` digits in `reply` only), kept as written.
    fn udp_fields(&self, r: &RawHealthCheck, kind: HealthCheckKind) -> R<(Option<String>, bool, Option<String>)> {
        let udp = kind == HealthCheckKind::Udp;
        let only = |sp: Range<usize>, what: &str| self.err(sp, format!("health check `{what}` is for type \"udp\""));
        let hex = |v: &Option<Spanned<String>>, what: &str, wild: bool| -> R<Option<String>> {
            let Some(x) = v else { return Ok(None) };
            if !udp {
                return Err(only(span_of(x), what));
            }
            if HealthCheck::hex_octets(x.get_ref(), wild).is_none() {
                let w = if wild { ", an x digit matching any" } else { "" };
                return Err(self.err(
                    span_of(x),
                    format!(
                        "health check {what} {:?} must be 1 to {} octets in hex (pairs of hex digits, spaces between \
                         octets allowed{w})",
                        x.get_ref(),
                        HealthCheck::MAX_UDP_OCTETS
                    ),
                ));
            }
            Ok(Some(x.get_ref().clone()))
        };
        let payload = hex(&r.payload, "payload", false)?;
        let reply = hex(&r.reply, "reply", true)?;
        let require = match &r.require_reply {
            Some(x) if !udp => return Err(only(span_of(x), "require_reply")),
            Some(x) => *x.get_ref(),
            None => false,
        };
        Ok((payload, require, reply))
    }

    /// `udp`'s `min_reply_length` and `max_reply_length` (for type `udp` only): 0 to 65535
    /// octets, the least no more than the most.
    fn reply_lengths(&self, r: &RawHealthCheck, kind: HealthCheckKind) -> R<(Option<u16>, Option<u16>)> {
        let len = |v: &Option<Spanned<i64>>, what: &str| -> R<Option<u16>> {
            let Some(x) = v else { return Ok(None) };
            if kind != HealthCheckKind::Udp {
                return Err(self.err(span_of(x), format!("health check `{what}` is for type \"udp\"")));
            }
            Ok(Some(self.int(x, 0, 65535, &format!("health check {what}"))? as u16))
        };
        let min = len(&r.min_reply_length, "min_reply_length")?;
        let max = len(&r.max_reply_length, "max_reply_length")?;
        if let (Some(lo), Some(hi), Some(x)) = (min, max, &r.max_reply_length) {
            if lo > hi {
                return Err(self.err(
                    span_of(x),
                    format!(
                        "health check max_reply_length {hi} is below min_reply_length {lo}: every answer would fail"
                    ),
                ));
            }
        }
        Ok((min, max))
    }

    /// `dns`'s `query_name` and `query_type` (for type `dns` only): a valid name, a known
    /// type (kept in upper case).
    fn dns_fields(&self, r: &RawHealthCheck, kind: HealthCheckKind) -> R<(Option<String>, Option<String>)> {
        let dns = kind == HealthCheckKind::Dns;
        let only = |sp: Range<usize>, what: &str| self.err(sp, format!("health check `{what}` is for type \"dns\""));
        let name = match &r.query_name {
            Some(x) if !dns => return Err(only(span_of(x), "query_name")),
            Some(x) if !HealthCheck::valid_query_name(x.get_ref()) => {
                return Err(self.err(
                    span_of(x),
                    format!(
                        "health check query_name {:?} must be \".\" or a DNS name (labels of 1 to 63 letters, digits, \
                         '-' or '_', at most 253 bytes)",
                        x.get_ref()
                    ),
                ))
            }
            Some(x) => Some(x.get_ref().clone()),
            None => None,
        };
        let ty = match &r.query_type {
            Some(x) if !dns => return Err(only(span_of(x), "query_type")),
            Some(x) if HealthCheck::dns_type_code(x.get_ref()).is_none() => {
                let names: Vec<&str> = HealthCheck::DNS_TYPES.iter().map(|(n, _)| *n).collect();
                return Err(self.err(
                    span_of(x),
                    format!("health check query_type {:?} must be one of {}", x.get_ref(), names.join(", ")),
                ));
            }
            Some(x) => Some(x.get_ref().to_ascii_uppercase()),
            None => None,
        };
        Ok((name, ty))
    }

    /// `exec`'s `command` and `user`: for type `exec` only, `command` required there. The
    /// program is an absolute path (a relative one would be looked up in the daemon's `PATH`
    /// and working directory, which the config does not show); no string holds a NUL byte,
    /// which no argv or user name can carry.
    fn exec_fields(&self, r: &RawHealthCheck, kind: HealthCheckKind) -> R<(Vec<String>, Option<String>)> {
        let exec = kind == HealthCheckKind::Exec;
        let only = |sp: Range<usize>, what: &str| self.err(sp, format!("health check `{what}` is for type \"exec\""));
        let command = match &r.command {
            None if exec => {
                return Err(self.err(span_of(&r.kind), "health check type \"exec\" needs a `command`"));
            }
            None => Vec::new(),
            Some(c) if !exec => return Err(only(span_of(c), "command")),
            Some(c) => self.program(c, "health check command")?,
        };
        let user = match &r.user {
            None => None,
            Some(u) if !exec => return Err(only(span_of(u), "user")),
            Some(u) => Some(self.user_name(u, "health check user")?),
        };
        Ok((command, user))
    }
}

/// Local addresses one service may list (after expanding CIDRs and ranges).
pub const MAX_LOCAL_ADDRESSES: usize = 256;

/// One `local_addresses` entry: an address, a CIDR (every address of it) or
/// a range `A-B` of one family.
pub(crate) fn expand_addresses(s: &str) -> Result<Vec<IpAddr>, String> {
    let too_many = || format!("local address entry {s:?} names more than {MAX_LOCAL_ADDRESSES} addresses");
    let span = |a: IpAddr, b: IpAddr| -> Result<Vec<IpAddr>, String> {
        match (a, b) {
            (IpAddr::V4(x), IpAddr::V4(y)) if u32::from(x) <= u32::from(y) => {
                let (x, y) = (u32::from(x), u32::from(y));
                if y - x >= MAX_LOCAL_ADDRESSES as u32 {
                    return Err(too_many());
                }
                Ok((x..=y).map(|v| IpAddr::V4(v.into())).collect())
            }
            (IpAddr::V6(x), IpAddr::V6(y)) if u128::from(x) <= u128::from(y) => {
                let (x, y) = (u128::from(x), u128::from(y));
                if y - x >= MAX_LOCAL_ADDRESSES as u128 {
                    return Err(too_many());
                }
                Ok((x..=y).map(|v| IpAddr::V6(v.into())).collect())
            }
            _ => Err(format!("invalid local address range {s:?}: first address above the last, or mixed families")),
        }
    };
    if s.contains('/') {
        let n = parse_net(s)?;
        let bits = if n.addr.is_ipv4() { 32 } else { 128 };
        let host = bits - n.prefix as u32;
        if host > 8 {
            return Err(too_many());
        }
        let (a, b) = match n.addr {
            IpAddr::V4(x) => {
                let m = if host == 32 { 0 } else { u32::MAX << host };
                let lo = u32::from(x) & m;
                (IpAddr::V4(lo.into()), IpAddr::V4((lo | !m).into()))
            }
            IpAddr::V6(x) => {
                let m = if host == 128 { 0 } else { u128::MAX << host };
                let lo = u128::from(x) & m;
                (IpAddr::V6(lo.into()), IpAddr::V6((lo | !m).into()))
            }
        };
        return span(a, b);
    }
    if let Some((a, b)) = s.split_once('-') {
        return span(parse_ip(a)?, parse_ip(b)?);
    }
    Ok(vec![parse_ip(s)?])
}

pub(crate) const DEFAULT_SOCKET: &str = "/run/ferrovs/ferrovs.sock";

/// Default half-open threshold of the SYN proxy: 1/16 of the flow table (at least 64), so a
/// flood can never fill more than that before cookies take over.
pub fn default_syn_threshold(flow_table_size: usize) -> i64 {
    (flow_table_size as i64 / 16).max(64)
}

pub(crate) fn default_engine() -> Engine {
    Engine {
        workers: 1,
        backend: Backend::AfPacket,
        cores: None,
        eal_args: Vec::new(),
        mbufs: 8192,
        flow_table_size: 1_048_576,
        expectation_table_size: 65_536,
        neighbor_table_size: 4096,
        syn_proxy_threshold: 65_536,
        icmp_rate: 1000,
        kernel_rate: 100_000,
        health_check_threads: 128,
        icmp_burst: 50,
        icmp_host_rate: 100,
        icmp_host_burst: 10,
        control_socket: PathBuf::from(DEFAULT_SOCKET),
        metrics_listen: None,
        timeouts: Timeouts::default(),
        local_port_range: PortRange { lo: 1024, hi: 65535 },
        rp_filter: RpFilter::Off,
        deny_from: Vec::new(),
    }
}

pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

pub(crate) fn fmt_range(r: PortRange) -> String {
    if r.lo == r.hi {
        r.lo.to_string()
    } else {
        format!("{}-{}", r.lo, r.hi)
    }
}

/// First port two port sets share (empty = all ports), if any.
pub(crate) fn ports_overlap(a: &[PortRange], b: &[PortRange]) -> Option<String> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Some("(all ports)".into()),
        (true, false) => Some(fmt_range(b[0])),
        (false, true) => Some(fmt_range(a[0])),
        (false, false) => {
            for x in a {
                for y in b {
                    if x.lo <= y.hi && y.lo <= x.hi {
                        return Some(x.lo.max(y.lo).to_string());
                    }
                }
            }
            None
        }
    }
}
