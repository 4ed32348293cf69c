//! Serde mirror of the TOML file. Values keep their spans (`Spanned`) so
//! that cross-field validation can point at the offending line. Scalar
//! syntax (addresses, MACs, CIDRs, ports) is checked by the custom
//! `Deserialize` impls here, which makes toml attach the value's span.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::model::{IpNet, PortRange};

type S<T> = Spanned<T>;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub engine: Option<S<RawEngine>>,
    #[serde(default)]
    pub interface: Vec<S<RawInterface>>,
    #[serde(default)]
    pub neighbor: Vec<S<RawNeighbor>>,
    #[serde(default)]
    pub route: Vec<S<RawRoute>>,
    #[serde(default)]
    pub service: Vec<S<RawService>>,
    pub cluster: Option<S<RawCluster>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub node_id: S<i64>,
    #[serde(default)]
    pub peers: Vec<S<IpDe>>,
    pub multicast_group: Option<S<IpDe>>,
    pub sync_address: S<IpDe>,
    pub sync_port: Option<S<i64>>,
    pub sync_refresh: Option<S<i64>>,
    pub sync_rate: Option<S<i64>>,
    pub bird_socket: Option<S<String>>,
    pub bird_protocol: Option<S<String>>,
    pub drain_timeout: Option<S<i64>>,
    pub sync_key: Option<S<String>>,
    pub sync_key_file: Option<S<String>>,
    #[serde(default)]
    pub node: Vec<S<RawClusterNode>>,
}

/// `[[cluster.node]]`: one node's own full-NAT local addresses.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClusterNode {
    pub id: S<i64>,
    pub local_addresses: S<Vec<S<String>>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngine {
    pub workers: Option<S<i64>>,
    pub backend: Option<S<String>>,
    pub cores: Option<S<Vec<S<i64>>>>,
    pub eal_args: Option<Vec<String>>,
    pub mbufs: Option<S<i64>>,
    pub flow_table_size: Option<S<i64>>,
    pub expectation_table_size: Option<S<i64>>,
    pub neighbor_table_size: Option<S<i64>>,
    pub syn_proxy_threshold: Option<S<i64>>,
    pub rp_filter: Option<S<String>>,
    pub deny_from: Option<S<Vec<S<String>>>>,
    pub local_port_range: Option<S<PortDe>>,
    pub icmp_rate: Option<S<i64>>,
    pub kernel_rate: Option<S<i64>>,
    pub health_check_threads: Option<S<i64>>,
    pub icmp_burst: Option<S<i64>>,
    pub icmp_host_rate: Option<S<i64>>,
    pub icmp_host_burst: Option<S<i64>>,
    pub control_socket: Option<S<String>>,
    pub metrics_listen: Option<S<String>>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    #[serde(alias = "tcp")]
    pub tcp_established: Option<S<i64>>,
    pub tcp_syn_sent: Option<S<i64>>,
    pub tcp_syn_recv: Option<S<i64>>,
    #[serde(alias = "tcp_fin")]
    pub tcp_fin_wait: Option<S<i64>>,
    pub tcp_time_wait: Option<S<i64>>,
    pub tcp_close: Option<S<i64>>,
    pub tcp_close_wait: Option<S<i64>>,
    pub tcp_last_ack: Option<S<i64>>,
    pub tcp_listen: Option<S<i64>>,
    pub tcp_synack: Option<S<i64>>,
    pub udp: Option<S<i64>>,
    pub icmp: Option<S<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInterface {
    pub name: S<String>,
    pub device: S<String>,
    pub mac: Option<MacDe>,
    #[serde(default)]
    pub addresses: Vec<S<NetDe>>,
    pub kernel_port: Option<S<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNeighbor {
    pub address: S<IpDe>,
    pub mac: MacDe,
    pub interface: Option<S<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub prefix: S<NetDe>,
    pub via: Option<S<IpDe>>,
    pub interface: Option<S<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: S<String>,
    pub vip: S<IpDe>,
    pub protocol: Option<S<String>>,
    pub ports: Option<S<Vec<S<PortDe>>>>,
    pub scheduler: Option<S<String>>,
    pub forward: Option<S<String>>,
    pub persistence: Option<S<RawPersistence>>,
    pub ftp: Option<S<RawFtp>>,
    pub fwmark: Option<S<i64>>,
    pub health_check: Option<S<RawChecks>>,
    pub syn_proxy: Option<S<String>>,
    pub one_packet: Option<S<bool>>,
    pub sched_flags: Option<S<Vec<S<String>>>>,
    pub allow_from: Option<S<Vec<S<String>>>>,
    pub source_conn_rate: Option<S<i64>>,
    pub source_conn_burst: Option<S<i64>>,
    pub deny_from: Option<S<Vec<S<String>>>>,
    pub local_addresses: Option<S<Vec<S<String>>>>,
    pub sorry_server: Option<S<RawSorryServer>>,
    pub quorum: Option<S<i64>>,
    pub hysteresis: Option<S<i64>>,
    pub notify: Option<S<RawNotify>>,
    #[serde(default)]
    pub real_server: Vec<S<RawRealServer>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub up: Option<S<Vec<S<String>>>>,
    pub down: Option<S<Vec<S<String>>>>,
    pub quorum_up: Option<S<Vec<S<String>>>>,
    pub quorum_down: Option<S<Vec<S<String>>>>,
    pub user: Option<S<String>>,
    pub timeout: Option<S<f64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSorryServer {
    pub address: S<IpDe>,
    pub port: Option<S<i64>>,
}

#[derive(Debug)]
pub(crate) enum RawPersistence {
    Secs(i64),
    Table(RawPersistenceTable),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistenceTable {
    pub timeout: Option<S<i64>>,
    pub netmask: Option<S<NetmaskDe>>,
}

#[derive(Debug)]
pub(crate) enum NetmaskDe {
    Prefix(i64),
    Dotted(Ipv4Addr),
}

#[derive(Debug)]
pub(crate) enum RawFtp {
    Bool(bool),
    Table(RawFtpTable),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFtpTable {
    pub control_ports: Option<S<Vec<S<i64>>>>,
    pub allow_foreign_port_address: Option<bool>,
    pub pinhole_timeout: Option<S<i64>>,
    pub max_expectations: Option<S<i64>>,
    pub allow_low_data_ports: Option<bool>,
}

/// `health_check`: one table (`[service.health_check]`, or an inline table) or an array of
/// them (`[[service.health_check]]`): a real server is up while every one of its checks is.
#[derive(Debug)]
pub(crate) enum RawChecks {
    /// One table; its span is the field's.
    One(Box<RawHealthCheck>),
    Many(Vec<S<RawHealthCheck>>),
}

impl<'de> de::Deserialize<'de> for RawChecks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawChecks;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a health check table or an array of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawChecks, A::Error> {
                // The table's own keys, with their spans and unknown-key errors.
                RawHealthCheck::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|c| RawChecks::One(Box::new(c)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawChecks, A::Error> {
                let mut v = Vec::new();
                while let Some(c) = seq.next_element()? {
                    v.push(c);
                }
                Ok(RawChecks::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub port: Option<S<i64>>,
    pub address: Option<S<IpDe>>,
    pub source: Option<S<IpDe>>,
    pub send: Option<String>,
    pub expect: Option<S<String>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    pub status: Option<S<i64>>,
    pub tls_ca: Option<S<String>>,
    pub digest: Option<S<String>>,
    pub query_name: Option<S<String>>,
    pub query_type: Option<S<String>>,
    pub payload: Option<S<String>>,
    pub require_reply: Option<S<bool>>,
    pub reply: Option<S<String>>,
    pub min_reply_length: Option<S<i64>>,
    pub max_reply_length: Option<S<i64>>,
    pub helo_name: Option<S<String>>,
    pub command: Option<S<Vec<S<String>>>>,
    pub user: Option<S<String>>,
    pub interval: Option<S<f64>>,
    pub retry_interval: Option<S<f64>>,
    pub timeout: Option<S<f64>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub on_fail: Option<S<String>>,
    pub start_down: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    pub address: S<IpDe>,
    pub port: Option<S<i64>>,
    pub weight: Option<S<i64>>,
    pub upper: Option<S<i64>>,
    pub lower: Option<S<i64>>,
    pub forward: Option<S<String>>,
    pub proxy_protocol: Option<S<String>>,
    pub health_check: Option<S<RawChecks>>,
}

// ---------------------------------------------------------------------------
// Scalar syntax, shared with the importers.

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("invalid MAC address {s:?} (expected six hex octets like 02:00:00:00:01:01)");
    let parts: Vec<&str> = if s.contains(':') { s.split(':').collect() } else { s.split('-').collect() };
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let a = s.trim().parse::<IpAddr>().map_err(|_| format!("invalid IP address {s:?}"))?;
    not_v4_mapped(a)
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is refused wherever the config names an
/// address: the engine keeps an IPv4 address in that form, so such a real server, VIP or
/// interface address would be the IPv4 one in IPv6 clothing (an IPv6 service's real server
/// `::ffff:10.0.2.2` a tunnel of IPv6 in IPv4 to 10.0.2.2), and on the wire no packet may
/// carry one (RFC 4291 2.5.5.2; the parsers drop them).
fn not_v4_mapped(a: IpAddr) -> Result<IpAddr, String> {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Err(format!("{v6} is an IPv4-mapped IPv6 address: write the IPv4 address {v4}")),
            None => Ok(a),
        },
        IpAddr::V4(_) => Ok(a),
    }
}

pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    let (a, p) =
        s.split_once('/').ok_or_else(|| format!("invalid CIDR {s:?}: expected ADDRESS/PREFIX, e.g. 10.0.1.1/24"))?;
    let addr: IpAddr = a.parse().map_err(|_| format!("invalid CIDR {s:?}: bad address {a:?}"))?;
    let addr = not_v4_mapped(addr).map_err(|m| format!("invalid CIDR {s:?}: {m}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match p.parse::<u32>() {
        Ok(v) if v <= max && !p.starts_with('+') => v as u8,
        _ => return Err(format!("invalid CIDR {s:?}: prefix length must be 0..={max}")),
    };
    Ok(IpNet { addr, prefix })
}

pub(crate) fn port_range_str(s: &str) -> Result<PortRange, String> {
    let bad = || format!("invalid port range {s:?}: expected \"LO-HI\" with ports 1..=65535");
    let one = |t: &str| -> Result<u16, String> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match t.parse::<u32>() {
            Ok(v) if (1..=65535).contains(&v) => Ok(v as u16),
            _ => Err(format!("invalid port range {s:?}: ports must be 1..=65535")),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("invalid port range {s:?}: {lo} > {hi}"));
    }
    Ok(PortRange { lo, hi })
}

pub(crate) fn port_range_int(v: i64) -> Result<PortRange, String> {
    if (1..=65535).contains(&v) {
        Ok(PortRange { lo: v as u16, hi: v as u16 })
    } else {
        Err(format!("port {v} out of range 1..=65535"))
    }
}

/// Dotted IPv4 netmask -> prefix length, if contiguous.
pub(crate) fn mask_to_prefix(m: Ipv4Addr) -> Option<u8> {
    let v = u32::from(m);
    let ones = v.leading_ones();
    if ones == 32 || v << ones == 0 {
        Some(ones as u8)
    } else {
        None
    }
}

macro_rules! str_newtype {
    ($name:ident, $ty:ty, $parse:path, $expect:literal) => {
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub $ty);
        impl<'de> de::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expect)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        $parse(s).map($name).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

str_newtype!(IpDe, IpAddr, parse_ip, "an IP address string");
str_newtype!(NetDe, IpNet, parse_net, "a CIDR string like \"10.0.1.1/24\"");
str_newtype!(MacDe, [u8; 6], parse_mac, "a MAC address string like \"02:00:00:00:01:01\"");

/// A port or a port range: `80` or `"8000-8100"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortDe(pub PortRange);

impl<'de> de::Deserialize<'de> for PortDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortDe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a \"LO-HI\" range string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortDe, E> {
                port_range_int(v).map(PortDe).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortDe, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PortDe, E> {
                port_range_str(s).map(PortDe).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> de::Deserialize<'de> for NetmaskDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NetmaskDe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prefix length or a dotted IPv4 netmask like \"255.255.255.0\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NetmaskDe, E> {
                Ok(NetmaskDe::Prefix(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NetmaskDe, E> {
                Ok(NetmaskDe::Prefix(v.min(i64::MAX as u64) as i64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NetmaskDe, E> {
                if let Ok(p) = s.parse::<u8>() {
                    return Ok(NetmaskDe::Prefix(p as i64));
                }
                let m: Ipv4Addr = s.parse().map_err(|_| E::custom(format!("invalid netmask {s:?}")))?;
                Ok(NetmaskDe::Dotted(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> de::Deserialize<'de> for RawPersistence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPersistence;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timeout in seconds or a table { timeout = 300, netmask = 24 }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPersistence, E> {
                Ok(RawPersistence::Secs(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPersistence, E> {
                Ok(RawPersistence::Secs(v.min(i64::MAX as u64) as i64))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPersistence, A::Error> {
                RawPersistenceTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawPersistence::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> de::Deserialize<'de> for RawFtp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFtp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true/false or a table { control_ports = [21], ... }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawFtp, E> {
                Ok(RawFtp::Bool(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFtp, A::Error> {
                RawFtpTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawFtp::Table)
            }
        }
        d.deserialize_any(V)
    }
}
