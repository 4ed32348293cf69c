//! A config compiled for the fast path. Workers hold an `Arc<Snapshot>`;
//! a config change builds a new snapshot and sends it to every worker
//! through its control ring, so the fast path never takes a lock.

use crate::wire::parse::{addr_is_v4, ip_to_addr, Addr};
use ferrovs_cfg::{Config, Forward, FtpOptions, PortRange, Protocol};
use hashbrown::{HashMap, HashSet};
use std::sync::Arc;

/// One real server of a compiled service.
#[derive(Clone, Debug)]
pub struct Dest {
    pub addr: Addr,
    /// Destination port; `None`: the client's.
    pub port: Option<u16>,
    pub weight: u32,
    pub upper: u32,
    pub lower: u32,
    pub forward: Forward,
    /// PROXY protocol header towards this server (`Some(true)`: v2).
    pub proxy_v2: Option<bool>,
    /// [`Snapshot::route`] of `addr`, looked up once per snapshot.
    pub route: Option<(usize, Addr)>,
}

/// A compiled virtual service.
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: String,
    pub vip: Addr,
    pub proto: u8,
    pub ports: Vec<PortRange>,
    pub forward: Forward,
    pub dests: Vec<Dest>,
    pub scheduler: String,
    /// The scheduler's flags (`sh`/`mh`: fallback, client port hashed).
    pub sched_opts: ferrovs_sched::SchedOptions,
    pub ftp: Option<FtpOptions>,
    /// Persistence timeout (ns) and client prefix (in the 128-bit space).
    pub persistence: Option<(u64, u8)>,
    pub syn_proxy: ferrovs_cfg::SynProxy,
    /// One-packet scheduling (UDP): each datagram's connection is removed once it is sent.
    pub one_packet: bool,
    /// The sources that may open connections (`allow_from`, `deny_from`); `None`: any.
    pub acl: Option<Box<crate::pipeline::acl::SourceAcl>>,
    /// New connections per second and burst per client address (`source_conn_rate`,
    /// `source_conn_burst`); rate 0: no limit.
    pub source_conn: (u32, u32),
    /// Either of the two above: a new connection's source is checked.
    pub source_policy: bool,
    /// Full NAT: the local (source) addresses towards the real servers.
    pub local: Vec<Addr>,
}

impl Svc {
    /// Is `port` an FTP control port of this service? Inline: every new connection asks, and
    /// for a service without FTP it is one test.
    #[inline]
    pub fn is_ftp_control(&self, port: u16) -> bool {
        self.ftp.as_ref().is_some_and(|f| f.control_ports.contains(&port))
    }

    /// May `src` open a connection to this service (`allow_from`, `deny_from`)? Inline: for a
    /// service without lists it is one test.
    #[inline]
    pub fn admits(&self, src: Addr) -> bool {
        self.acl.as_ref().is_none_or(|a| a.admits(src))
    }
}

/// A route in the 128-bit address space (IPv4 prefixes are offset by 96).
#[derive(Clone, Copy, Debug)]
pub struct RouteEntry {
    pub net: Addr,
    pub prefix: u8,
    pub iface: usize,
    /// Gateway; `None`: on-link (the destination is the next hop).
    pub via: Option<Addr>,
    /// The netmask of `prefix`, computed once.
    pub mask: Addr,
    /// An IPv4 route: it matches IPv4 destinations only, and an IPv6 route IPv6 ones only
    /// (the two families' tables are apart, as in Linux). IPv4 is kept as ::ffff:a.b.c.d,
    /// so an IPv6 route short enough to cover that range (`::/0`) would otherwise take
    /// IPv4 destinations no IPv4 route covers.
    pub v4: bool,
}

/// An IPv4 route of [`Snapshot::routes`] in 32 bits (the low word of its [`Addr`]s):
/// [`Snapshot::route`] scans these for an IPv4 destination (every new connection asks, for
/// its client), one compare of a word each, and no family test.
#[derive(Clone, Copy, Debug)]
struct Route4 {
    net: u32,
    mask: u32,
    iface: usize,
    via: Option<Addr>,
}

#[derive(Clone, Debug)]
pub struct IfaceInfo {
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<(Addr, u8)>,
    /// `addrs` as (network, netmask, IPv4), for [`Snapshot::on_link`] (asked per ARP/ND
    /// packet). The family is kept, as for routes: an IPv6 prefix short enough to cover
    /// ::ffff:0:0/96 (IPv4's range here) must not make IPv4 addresses on-link.
    nets: Vec<(Addr, Addr, bool)>,
}

impl IfaceInfo {
    /// The interface's first address of the family of `like`.
    pub fn source_for(&self, like: Addr) -> Option<Addr> {
        let v4 = crate::wire::parse::addr_is_v4(like);
        self.addrs.iter().map(|a| a.0).find(|a| crate::wire::parse::addr_is_v4(*a) == v4)
    }
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub ifaces: Vec<IfaceInfo>,
    pub services: Vec<Svc>,
    pub vips: HashSet<Addr>,
    pub local: HashSet<Addr>,
    /// Full NAT local addresses of every service: replies to them are
    /// translated. This node's are also in `local` (ARP/ND and echo requests
    /// are answered for them); in a cluster the peers' are not (the routers
    /// reach them by BGP, see README "Cluster").
    pub laddrs: HashSet<Addr>,
    /// Full NAT source ports on each local address (`[engine] local_port_range`).
    pub port_range: PortRange,
    pub routes: Vec<RouteEntry>,
    /// The IPv4 entries of `routes`, in its order ([`Route4`]).
    routes4: Vec<Route4>,
    pub static_neighbors: Vec<(Addr, [u8; 6])>,
    pub timeouts: [u64; crate::flow::tcpstate::N_STATES],
    pub workers: usize,
    /// Active/inactive connection counts per service, per worker row
    /// (see ferrovs_sched::SharedCounts).
    pub conn_counts: Vec<ferrovs_sched::SharedCounts>,
    /// `vips`, `local` and `laddrs` in one map ([`Snapshot::addr_kind`]): a packet's
    /// destination is classified with one lookup.
    /// With each address's services: `(port range, service)` runs of `svc_ports`.
    kinds: HashMap<Addr, AddrInfo>,
    svc_ports: Vec<(PortRange, usize)>,
    /// A Bloom filter of `vips`, `local` and `bcast4` ([`Snapshot::is_own`],
    /// [`Snapshot::martian_source`]): every ARP and neighbour packet and every new connection
    /// asks whether an address is one of these, nearly always not, and most of them are
    /// answered here, without a look-up.
    own_bloom: [u64; 4],
    /// The directed broadcast addresses of the interfaces' IPv4 subnets (prefixes up to /30):
    /// martian sources ([`Snapshot::martian_source`]).
    bcast4: Vec<Addr>,
}

/// What a destination address is ([`Snapshot::addr_info`]): `ADDR_*` bits and, for a VIP,
/// where its TCP and UDP services' port ranges lie in the snapshot's list (start, count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrInfo {
    pub kind: u8,
    tcp: (u32, u32),
    udp: (u32, u32),
}

/// [`Snapshot::addr_kind`] bits: a VIP, one of this node's addresses (`local`), a full-NAT
/// local address of any node (`laddrs`).
pub const ADDR_VIP: u8 = 1;
pub const ADDR_LOCAL: u8 = 2;
pub const ADDR_LADDR: u8 = 4;
/// An address of the host's kernel on one of the engine's ports (AF_PACKET shares the port
/// with it: BGP, BFD, sync and health checks run there): its frames are not the engine's.
pub const ADDR_HOST: u8 = 8;

/// The word and bit of `a` in [`Snapshot::is_own`]'s filter: a multiplicative hash of the
/// address's two halves (an IPv4 address is all in the low one), its top 8 bits.
#[inline]
fn own_bloom_bit(a: Addr) -> (usize, u64) {
    let h = ((a as u64) ^ ((a >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 62) as usize, 1 << ((h >> 56) & 63))
}

#[inline]
fn mask(a: Addr, prefix: u8) -> Addr {
    a & netmask(prefix)
}

#[inline]
fn netmask(prefix: u8) -> Addr {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix.min(128) as u32)
    }
}

fn prefix128(ip: std::net::IpAddr, p: u8) -> u8 {
    if ip.is_ipv4() {
        96 + p
    } else {
        p
    }
}

/// Every port a backend opens, in queue order, as (name, index of its interface): the
/// interfaces, then the kernel port (`kernel_port`, named `IFACE.kernel`) of each interface
/// that has one, in interface order.
pub fn port_list(config: &Config) -> Vec<(String, usize)> {
    let kernel = config.interfaces.iter().enumerate().filter(|(_, itf)| itf.kernel_port.is_some());
    config
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, itf)| (itf.name.clone(), i))
        .chain(kernel.map(|(i, itf)| (format!("{}.kernel", itf.name), i)))
        .collect()
}

/// The exception path: for each interface, the queue index of its `kernel_port` (see
/// [`port_list`]: the j-th interface with a kernel port has queue `interfaces.len() + j`).
pub fn kernel_queues(config: &Config) -> Vec<Option<usize>> {
    let n = config.interfaces.len();
    let mut next = n;
    config
        .interfaces
        .iter()
        .map(|i| {
            i.kernel_port.as_ref().map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

impl Snapshot {
    /// Compile `config`; `macs[i]` is the MAC interface `i` really uses.
    pub fn build(config: Arc<Config>, macs: &[[u8; 6]]) -> Snapshot {
        Self::build_with_host(config, macs, &[])
    }

    /// [`Snapshot::build`], knowing the addresses the host's kernel has on the engine's ports
    /// ([`ADDR_HOST`], see [`crate::port::afpacket::kernel_addresses`]).
    pub fn build_with_host(config: Arc<Config>, macs: &[[u8; 6]], host: &[Addr]) -> Snapshot {
        // Sorry servers in for the services whose real servers take no new connections.
        let config = config.serving().map_or(config, Arc::new);
        let ifaces: Vec<IfaceInfo> = config
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, itf)| {
                let addrs: Vec<(Addr, u8)> =
                    itf.addresses.iter().map(|n| (ip_to_addr(n.addr), prefix128(n.addr, n.prefix))).collect();
                IfaceInfo {
                    name: itf.name.clone(),
                    mac: macs.get(i).copied().or(itf.mac).unwrap_or([0; 6]),
                    nets: addrs.iter().map(|&(a, p)| (mask(a, p), netmask(p), addr_is_v4(a))).collect(),
                    addrs,
                }
            })
            .collect();
        let mut local = HashSet::new();
        let mut routes = Vec::new();
        let mut bcast4 = Vec::new();
        for (i, itf) in ifaces.iter().enumerate() {
            for &(a, p) in &itf.addrs {
                local.insert(a);
                if addr_is_v4(a) && p <= 96 + 30 {
                    bcast4.push(a | !netmask(p) & 0xffff_ffff);
                }
                let v4 = addr_is_v4(a);
                routes.push(RouteEntry { net: mask(a, p), prefix: p, iface: i, via: None, mask: netmask(p), v4 });
            }
        }
        let iface_index = |name: &str| ifaces.iter().position(|i| i.name == name);
        for r in &config.routes {
            let net = ip_to_addr(r.prefix.addr);
            let p = prefix128(r.prefix.addr, r.prefix.prefix);
            let via = r.via.map(ip_to_addr);
            let iface = match &r.interface {
                Some(n) => iface_index(n),
                None => via.and_then(|v| {
                    routes
                        .iter()
                        .filter(|c| c.via.is_none() && c.v4 == addr_is_v4(v) && mask(v, c.prefix) == c.net)
                        .map(|c| c.iface)
                        .next()
                }),
            };
            if let Some(iface) = iface {
                let v4 = r.prefix.addr.is_ipv4();
                routes.push(RouteEntry { net: mask(net, p), prefix: p, iface, via, mask: netmask(p), v4 });
            }
        }
        // Longest prefix first; connected before gateway routes on ties.
        routes.sort_by(|a, b| b.prefix.cmp(&a.prefix).then(a.via.is_some().cmp(&b.via.is_some())));
        let routes4 = routes
            .iter()
            .filter(|r| r.v4)
            .map(|r| Route4 { net: r.net as u32, mask: r.mask as u32, iface: r.iface, via: r.via })
            .collect();

        let mut services = Vec::new();
        let mut by_vip: HashMap<(Addr, u8), Vec<(PortRange, usize)>> = HashMap::new();
        let mut vips = HashSet::new();
        for s in &config.services {
            let vip = ip_to_addr(s.vip);
            let proto = match s.protocol {
                Protocol::Tcp => crate::wire::parse::PROTO_TCP,
                Protocol::Udp => crate::wire::parse::PROTO_UDP,
            };
            let idx = services.len();
            let ports = if s.ports.is_empty() { vec![PortRange { lo: 1, hi: 65535 }] } else { s.ports.clone() };
            for r in &ports {
                by_vip.entry((vip, proto)).or_default().push((*r, idx));
            }
            vips.insert(vip);
            services.push(Svc {
                name: s.name.clone(),
                vip,
                proto,
                ports,
                forward: s.forward,
                dests: s
                    .real_servers
                    .iter()
                    .map(|r| Dest {
                        addr: ip_to_addr(r.address),
                        port: r.port,
                        weight: r.weight,
                        upper: r.upper,
                        lower: r.lower,
                        forward: r.forward.unwrap_or(s.forward),
                        proxy_v2: r.proxy_protocol.map(|v| v == ferrovs_cfg::ProxyProtocol::V2),
                        route: route_in(&routes, ip_to_addr(r.address)),
                    })
                    .collect(),
                scheduler: s.scheduler.clone(),
                sched_opts: ferrovs_sched::SchedOptions {
                    fallback: s.sched_flags.fallback,
                    port: s.sched_flags.port,
                    ..Default::default()
                },
                ftp: s.ftp.clone(),
                persistence: s.persistence.map(|p| (p.timeout as u64 * 1_000_000_000, prefix128(s.vip, p.netmask))),
                syn_proxy: s.syn_proxy,
                one_packet: s.one_packet,
                source_conn: (s.source_conn_rate, s.source_conn_burst),
                source_policy: s.source_conn_rate != 0
                    || !s.allow_from.is_empty()
                    || !s.deny_from.is_empty()
                    || !config.engine.deny_from.is_empty(),
                // `[engine] deny_from` holds for every service.
                acl: crate::pipeline::acl::SourceAcl::new(
                    &s.allow_from,
                    &[&s.deny_from[..], &config.engine.deny_from[..]].concat(),
                )
                .map(Box::new),
                // In a cluster a node allocates on its own local addresses only.
                local: s
                    .local_addresses
                    .iter()
                    .filter(|a| config.cluster.as_ref().is_none_or(|c| c.nodes.is_empty() || c.is_own_local(**a)))
                    .map(|a| ip_to_addr(*a))
                    .collect(),
            });
        }
        // ARP/ND are answered for this node's local addresses; replies to every node's are
        // translated (a failed peer's, with the connections it synced).
        local.extend(services.iter().flat_map(|s| s.local.iter().copied()));
        let laddrs: HashSet<Addr> =
            config.services.iter().flat_map(|s| s.local_addresses.iter().map(|a| ip_to_addr(*a))).collect();
        let static_neighbors = config.neighbors.iter().map(|n| (ip_to_addr(n.address), n.mac)).collect();
        let workers = config.engine.workers.max(1);
        let port_range = config.engine.local_port_range;
        let conn_counts = services.iter().map(|s| ferrovs_sched::SharedCounts::new(workers, s.dests.len())).collect();
        let mut kinds: HashMap<Addr, AddrInfo> = HashMap::new();
        let host: HashSet<Addr> = host.iter().copied().collect();
        for (set, bit) in [(&vips, ADDR_VIP), (&local, ADDR_LOCAL), (&laddrs, ADDR_LADDR), (&host, ADDR_HOST)] {
            for &a in set.iter() {
                kinds.entry(a).or_default().kind |= bit;
            }
        }
        let mut svc_ports = Vec::new();
        for ((vip, proto), v) in &by_vip {
            let run = (svc_ports.len() as u32, v.len() as u32);
            svc_ports.extend_from_slice(v);
            let e = kinds.entry(*vip).or_default();
            if *proto == crate::wire::parse::PROTO_TCP {
                e.tcp = run;
            } else {
                e.udp = run;
            }
        }
        let mut own_bloom = [0u64; 4];
        for &a in vips.iter().chain(local.iter()).chain(bcast4.iter()) {
            let (w, bit) = own_bloom_bit(a);
            own_bloom[w] |= bit;
        }
        Snapshot {
            kinds,
            svc_ports,
            own_bloom,
            bcast4,
            conn_counts,
            timeouts: crate::flow::tcpstate::timeouts_ns(&config.engine.timeouts),
            workers,
            config,
            ifaces,
            services,
            vips,
            local,
            laddrs,
            port_range,
            routes,
            routes4,
            static_neighbors,
        }
    }

    /// Which of `vips`, `local` and `laddrs` hold `a` (`ADDR_*` bits in `kind`), and its
    /// services ([`Snapshot::service_at`]).
    #[inline]
    pub fn addr_info(&self, a: Addr) -> AddrInfo {
        self.kinds.get(&a).copied().unwrap_or_default()
    }

    /// Is `a` a source address no packet from the network may carry, so that nothing is
    /// created for it (Linux's martian sources: `ip_route_input_slow`, `fib_validate_source`,
    /// `ip6_rcv_core`)? IPv4: 0.0.0.0/8, loopback 127/8, multicast 224/4, the limited
    /// broadcast and our subnets' directed broadcasts; IPv6: unspecified, loopback,
    /// multicast; either: a VIP or one of our own addresses (a LAND attack's SYN, or one
    /// that would make a real server answer the balancer itself). A connection from one
    /// would send the real server's replies to ourselves, a broadcast or multicast group,
    /// and the SYN proxy's SYN-ACK (a reflection) there.
    #[inline(always)]
    pub fn martian_source(&self, a: Addr) -> bool {
        let reserved = if addr_is_v4(a) {
            let (v, top) = (a as u32, (a as u32) >> 24);
            top == 0 || top == 127 || v >> 28 == 0xe || v == u32::MAX
        } else {
            a <= 1 || a >> 120 == 0xff
        };
        let (w, bit) = own_bloom_bit(a);
        reserved
            || self.own_bloom[w] & bit != 0
                && (self.bcast4.contains(&a) || self.addr_info(a).kind & (ADDR_VIP | ADDR_LOCAL) != 0)
    }

    /// May a new connection's first packet come from `src` on interface `iface`
    /// (`[engine] rp_filter`, Linux's `fib_validate_source`)? Loose: there is a route back to
    /// `src`; strict: it leaves through `iface`. Looked at for new connections only (their
    /// packets after it go by the connection), so an established packet pays nothing; off, a
    /// new one pays a compare.
    #[inline(always)]
    pub fn reverse_path_ok(&self, iface: usize, src: Addr) -> bool {
        self.config.engine.rp_filter == ferrovs_cfg::RpFilter::Off || self.reverse_path_routed(iface, src)
    }

    #[inline(never)]
    fn reverse_path_routed(&self, iface: usize, src: Addr) -> bool {
        match self.config.engine.rp_filter {
            ferrovs_cfg::RpFilter::Off => true,
            ferrovs_cfg::RpFilter::Loose => self.route(src).is_some(),
            ferrovs_cfg::RpFilter::Strict => self.route(src).is_some_and(|(i, _)| i == iface),
        }
    }

    /// Is `a` a VIP or one of this node's own addresses (`local`: interface addresses, its
    /// full NAT local addresses)? One lookup, none for most addresses that are not.
    #[inline]
    pub fn is_own(&self, a: Addr) -> bool {
        let (w, bit) = own_bloom_bit(a);
        self.own_bloom[w] & bit != 0 && self.addr_info(a).kind & (ADDR_VIP | ADDR_LOCAL) != 0
    }

    /// The service for (vip, proto, port).
    #[inline]
    pub fn service(&self, vip: Addr, proto: u8, port: u16) -> Option<usize> {
        self.service_at(self.kinds.get(&vip)?, proto, port)
    }

    /// [`Snapshot::service`] of the VIP `info` describes.
    #[inline]
    pub fn service_at(&self, info: &AddrInfo, proto: u8, port: u16) -> Option<usize> {
        let (start, n) = match proto {
            crate::wire::parse::PROTO_TCP => info.tcp,
            crate::wire::parse::PROTO_UDP => info.udp,
            _ => return None,
        };
        let v = self.svc_ports.get(start as usize..(start + n) as usize)?;
        v.iter().find(|(r, _)| r.contains(port)).map(|(_, i)| *i)
    }

    /// Longest-prefix match: (interface, next hop).
    #[inline]
    pub fn route(&self, dst: Addr) -> Option<(usize, Addr)> {
        if addr_is_v4(dst) {
            // The same entries as `route_in` would take (an IPv4 route's mask covers the
            // ::ffff:0:0/96 prefix, which every IPv4 destination has): compared in 32 bits.
            let a = dst as u32;
            return self.routes4.iter().find(|r| a & r.mask == r.net).map(|r| (r.iface, r.via.unwrap_or(dst)));
        }
        route_in(&self.routes, dst)
    }

    /// Is `a` on a subnet of interface `iface` (of `a`'s family)?
    pub fn on_link(&self, iface: usize, a: Addr) -> bool {
        let v4 = addr_is_v4(a);
        self.ifaces.get(iface).is_some_and(|i| i.nets.iter().any(|&(n, m, f)| f == v4 && a & m == n))
    }
}

/// Longest-prefix match in `routes` (sorted longest prefix first) among the routes of
/// `dst`'s family.
#[inline]
fn route_in(routes: &[RouteEntry], dst: Addr) -> Option<(usize, Addr)> {
    let v4 = addr_is_v4(dst);
    routes.iter().find(|r| r.v4 == v4 && dst & r.mask == r.net).map(|r| (r.iface, r.via.unwrap_or(dst)))
}

/// The worker that owns every flow of `client`: all connections of one
/// client (FTP control and data, both directions of NAT) hash to one worker.
#[inline(always)]
pub fn owner_of(client: Addr, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let x = (client as u64) ^ ((client >> 64) as u64);
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 32) % workers as u64) as usize
}

/// Full NAT: the local ports worker `w` of `workers` owns on every local
/// address: an equal contiguous share of `range` (the last worker takes the
/// remainder). A reply to (local address, port) belongs to the worker whose
/// share holds the port ([`lport_owner`]), the worker that opened it.
pub fn lport_share(range: PortRange, w: usize, workers: usize) -> PortRange {
    let workers = workers.max(1) as u32;
    let n = range.hi as u32 - range.lo as u32 + 1;
    let per = n / workers;
    let lo = range.lo as u32 + per * w as u32;
    let hi = if w as u32 + 1 == workers { range.hi as u32 } else { lo + per - 1 };
    PortRange { lo: lo as u16, hi: hi as u16 }
}

/// The worker owning local port `port` ([`lport_share`]); ports outside the
/// range belong to no connection, worker 0 takes (and drops) them.
#[inline]
pub fn lport_owner(range: PortRange, port: u16, workers: usize) -> usize {
    if workers <= 1 || !range.contains(port) {
        return 0;
    }
    let n = range.hi as u32 - range.lo as u32 + 1;
    let per = n / workers as u32;
    (((port - range.lo) as u32 / per) as usize).min(workers - 1)
}

#[cfg(test)]
mod lport_tests {
    use super::*;

    #[test]
    fn shares_are_disjoint_cover_the_range_and_match_the_owner() {
        for workers in [1usize, 2, 3, 7, 64] {
            let range = PortRange { lo: 1024, hi: 65535 };
            let mut next = range.lo as u32;
            for w in 0..workers {
                let s = lport_share(range, w, workers);
                assert_eq!(s.lo as u32, next, "contiguous");
                next = s.hi as u32 + 1;
                for p in [s.lo, s.hi, s.lo + (s.hi - s.lo) / 2] {
                    assert_eq!(lport_owner(range, p, workers), w, "port {p} of {workers}");
                }
            }
            assert_eq!(next, 65536, "covers the range");
        }
        let small = PortRange { lo: 2000, hi: 2063 };
        assert_eq!(lport_share(small, 1, 2), PortRange { lo: 2032, hi: 2063 });
        assert_eq!(lport_owner(small, 80, 2), 0, "outside the range");
    }
}

/// The snapshot of a one-worker, in-memory configuration with one interface ("ext", MAC
/// 02:00:00:00:00:01) holding `addresses` (TOML strings, e.g. `"10.0.1.1/24"`), then `rest`
/// (services, routes: TOML tables) (tests).
#[cfg(test)]
pub(crate) fn test_snapshot(addresses: &str, rest: &str) -> Snapshot {
    let text = format!(
        "[engine]\nworkers = 1\nbackend = \"memory\"\n\n[[interface]]\nname = \"ext\"\ndevice = \"m\"\n\
         addresses = [{addresses}]\n{rest}"
    );
    let cfg = ferrovs_cfg::Config::from_str(&text, "t.toml").expect("config");
    Snapshot::build(Arc::new(cfg), &[[2, 0, 0, 0, 0, 1]])
}

#[cfg(test)]
mod own_tests {
    use super::*;

    fn a(s: &str) -> Addr {
        ip_to_addr(s.parse().expect("address"))
    }

    #[test]
    fn own_addresses_are_the_vips_and_local_ones_only() {
        let s = test_snapshot(
            "\"10.0.1.1/24\", \"fd00:1::1/64\"",
            "[[service]]\nname = \"a\"\nvip = \"10.0.9.9\"\nports = [80]\nforward = \"fnat\"\n\
             local_addresses = [\"10.0.1.50\"]\n[[service.real_server]]\naddress = \"10.0.1.7\"\n\
             [[service]]\nname = \"b\"\nvip = \"2001:db8::80\"\nports = [80]\n[[service.real_server]]\naddress = \"fd00:1::7\"\n",
        );
        for own in ["10.0.1.1", "fd00:1::1", "10.0.9.9", "2001:db8::80", "10.0.1.50"] {
            assert!(s.is_own(a(own)), "{own}");
        }
        for other in ["10.0.1.7", "fd00:1::7", "10.0.9.8", "0.0.0.0", "::", "10.0.1.51"] {
            assert!(!s.is_own(a(other)), "{other}");
        }
        // The filter answers: the same as the lookup for any address.
        let mut x = 0x1234_5678_9abc_def0_u64;
        for i in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v4 = ip_to_addr(std::net::Ipv4Addr::from(x as u32).into());
            let v6 = (x as u128) << 64 | i as u128;
            for b in [v4, v6] {
                assert_eq!(s.is_own(b), s.addr_info(b).kind & (ADDR_VIP | ADDR_LOCAL) != 0, "{b:x}");
            }
        }
    }
}

#[cfg(test)]
mod martian_tests {
    use super::*;

    #[test]
    fn martian_sources_are_linuxs() {
        let s = test_snapshot(
            "\"10.0.1.1/24\", \"10.0.3.1/31\", \"fd00:1::1/64\"",
            "[[service]]\nname = \"a\"\nvip = \"10.0.9.9\"\nports = [80]\n[[service.real_server]]\naddress = \"10.0.1.7\"\n",
        );
        let a = |t: &str| ip_to_addr(t.parse().expect("address"));
        for m in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "224.0.0.1",
            "239.1.2.3",
            "255.255.255.255",
            "10.0.1.255",
            "10.0.1.1",
            "10.0.9.9",
            "10.0.3.1",
            "::",
            "::1",
            "ff02::1",
            "ff05::2",
            "fd00:1::1",
        ] {
            assert!(s.martian_source(a(m)), "{m}");
        }
        // Hosts, the /31's other end (RFC 3021: no broadcast), class E, the subnet's own
        // network address (a host on some networks), other subnets' broadcasts.
        for ok in [
            "10.0.1.7",
            "10.0.1.0",
            "10.0.3.0",
            "240.0.0.1",
            "192.168.1.255",
            "1.2.3.4",
            "fd00:1::7",
            "2001:db8::1",
            "fe80::1",
        ] {
            assert!(!s.martian_source(a(ok)), "{ok}");
        }
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn snap(routes: &str) -> Snapshot {
        test_snapshot("\"10.0.1.1/24\", \"fd00:1::1/64\"", routes)
    }

    fn a(s: &str) -> Addr {
        ip_to_addr(s.parse().expect("address"))
    }

    #[test]
    fn an_ipv6_default_route_takes_no_ipv4_destination() {
        let s = snap("[[route]]\nprefix = \"::/0\"\nvia = \"fd00:1::fe\"\n");
        assert_eq!(s.route(a("2001:db8::7")), Some((0, a("fd00:1::fe"))));
        assert_eq!(s.route(a("10.0.1.9")), Some((0, a("10.0.1.9"))), "connected");
        assert_eq!(s.route(a("192.0.2.7")), None, "no IPv4 route: not the IPv6 gateway");
        let s = snap(
            "[[route]]\nprefix = \"::/0\"\nvia = \"fd00:1::fe\"\n\n\
             [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"10.0.1.254\"\n",
        );
        assert_eq!(s.route(a("192.0.2.7")), Some((0, a("10.0.1.254"))));
        assert_eq!(s.route(a("2001:db8::7")), Some((0, a("fd00:1::fe"))));
    }

    #[test]
    fn ipv4_routes_in_32_bits_match_the_full_table() {
        // Host, subnet, overlapping and default routes of both families, connected and via
        // (`::/64` covers ::ffff:0:0/96, where IPv4 addresses are kept; the config refuses
        // an IPv4-mapped prefix itself).
        let s = snap(
            "[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"10.0.1.254\"\n\n\
             [[route]]\nprefix = \"192.0.2.0/24\"\nvia = \"10.0.1.253\"\n\n\
             [[route]]\nprefix = \"192.0.2.128/25\"\nvia = \"10.0.1.252\"\n\n\
             [[route]]\nprefix = \"198.51.100.7/32\"\nvia = \"10.0.1.251\"\n\n\
             [[route]]\nprefix = \"::/0\"\nvia = \"fd00:1::fe\"\n\n\
             [[route]]\nprefix = \"::/64\"\nvia = \"fd00:1::fd\"\n",
        );
        for d in [
            "10.0.1.9",
            "10.0.2.9",
            "192.0.2.1",
            "192.0.2.200",
            "198.51.100.7",
            "198.51.100.8",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::7",
            "fd00:1::9",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(s.route(a(d)), route_in(&s.routes, a(d)), "{d}");
        }
        assert_eq!(s.route(a("192.0.2.200")), Some((0, a("10.0.1.252"))), "the longest prefix");
        assert_eq!(s.route(a("198.51.100.7")), Some((0, a("10.0.1.251"))));
        assert_eq!(s.route(a("198.51.100.8")), Some((0, a("10.0.1.254"))));
        let s = snap("");
        assert_eq!(s.route(a("192.0.2.7")), None, "no IPv4 default route");
        assert_eq!(s.route(a("10.0.1.7")), Some((0, a("10.0.1.7"))));
    }

    #[test]
    fn an_ipv6_subnet_puts_no_ipv4_address_on_link() {
        // ::/64 covers ::ffff:0:0/96, where IPv4 addresses are kept.
        let s = test_snapshot("\"10.0.1.1/24\", \"::5/64\"", "");
        assert!(s.on_link(0, a("10.0.1.9")));
        assert!(!s.on_link(0, a("192.0.2.7")), "IPv4, off the IPv4 subnet");
        assert!(s.on_link(0, a("::7")));
        assert!(!s.on_link(0, a("fd00:1::7")));
        assert!(!s.on_link(1, a("10.0.1.9")), "no such interface");
    }
}
