//! The validated configuration model. Everything here has passed
//! validation: addresses parse, ports are in range, names are unique, every
//! real server and route gateway is reachable through some interface.
//! Workers receive it wrapped in an `Arc` as an immutable snapshot.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub engine: Engine,
    pub interfaces: Vec<Interface>,
    pub neighbors: Vec<Neighbor>,
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    /// `[cluster]`: this node is one of several behind ECMP routers (BGP through BIRD).
    pub cluster: Option<Cluster>,
    /// File the config was read from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    AfPacket,
    Memory,
    Dpdk,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    /// Number of poll-mode workers (default 1).
    pub workers: usize,
    pub backend: Backend,
    /// CPU cores to pin workers to, in worker order (default: the allowed
    /// cores in order, skipping core 0 when another is allowed).
    pub cores: Option<Vec<usize>>,
    /// DPDK EAL arguments (backend = "dpdk").
    pub eal_args: Vec<String>,
    /// mbufs per DPDK pool (default 8192).
    pub mbufs: u32,
    /// Flow table capacity per worker, in connections (default 1 048 576).
    pub flow_table_size: usize,
    /// FTP expectation (pinhole) table capacity per worker (default 65 536). When full, the
    /// requesting control connection's oldest expectation, or else the worker's oldest, is
    /// evicted (counted).
    pub expectation_table_size: usize,
    /// Dynamic neighbour (ARP/ND) entries per worker (default 4096). When full, the stalest is
    /// evicted (counted); static `[[neighbor]]` entries are not counted and never evicted.
    pub neighbor_table_size: usize,
    /// Half-open TCP connections per worker above which services with `syn_proxy = "auto"`
    /// answer SYNs with SYN cookies (default: 1/16 of `flow_table_size`, at least 64).
    pub syn_proxy_threshold: u32,
    /// ICMP errors the balancer originates (fragmentation needed / packet too big), per worker
    /// and second (default 1000, Linux's `net.ipv4.icmp_msgs_per_sec`); 0: none at all.
    pub icmp_rate: u32,
    /// Burst of originated ICMP errors per worker (default 50, `net.ipv4.icmp_msgs_burst`).
    pub icmp_burst: u32,
    /// Originated ICMP errors per worker, second and destination host (default 100, as
    /// Linux's per-peer `net.ipv4.icmp_ratelimit`): one host's flood cannot use up what
    /// `icmp_rate` leaves for the others. 0: no per-host limit.
    pub icmp_host_rate: u32,
    /// Burst of originated ICMP errors per worker and destination host (default 10).
    pub icmp_host_burst: u32,
    /// Frames per worker and second the exception path (`interface.kernel_port`) passes to
    /// the kernel (default 100000); beyond it they are dropped and counted (`kernel_limited`).
    pub kernel_rate: u32,
    /// Health checks in progress at once, at most (default 128): each runs on a thread of the
    /// checker's pool, so a director with many real servers and checks has a bounded number
    /// of threads; checks due beyond it wait their turn (counted when late).
    pub health_check_threads: u32,
    /// Control socket path (default /run/ferrovs/ferrovs.sock).
    pub control_socket: PathBuf,
    /// Optional Prometheus listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection timeouts in seconds (ipvsadm --set).
    pub timeouts: Timeouts,
    /// Source ports full-NAT connections use on each local address
    /// (default 1024-65535), split between the workers.
    pub local_port_range: PortRange,
    /// Reverse-path filtering of a new connection's first packet to a VIP (Linux's
    /// `rp_filter`, for both families). Default off.
    pub rp_filter: RpFilter,
    /// Sources refused by every service (`[engine] deny_from`, both families), as if in
    /// each service's `deny_from`.
    pub deny_from: Vec<IpNet>,
}

/// Protocol timeouts in seconds. Defaults are the IPVS defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32, // 900
    pub tcp_syn_sent: u32,    // 120
    pub tcp_syn_recv: u32,    // 60
    pub tcp_fin_wait: u32,    // 120
    pub tcp_time_wait: u32,   // 120
    pub tcp_close: u32,       // 10
    pub tcp_close_wait: u32,  // 60
    pub tcp_last_ack: u32,    // 30
    pub tcp_listen: u32,      // 120
    pub tcp_synack: u32,      // 120
    pub udp: u32,             // 300
    pub icmp: u32,            // 60
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 900,
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_fin_wait: 120,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_listen: 120,
            tcp_synack: 120,
            udp: 300,
            icmp: 60,
        }
    }
}

/// An address with a prefix length, e.g. `10.0.1.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Does this network contain `ip`? (Same family only.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix as u32) };
                (u32::from(a) & m) == (u32::from(b) & m)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix as u32) };
                (u128::from(a) & m) == (u128::from(b) & m)
            }
            _ => false,
        }
    }
}

/// `ADDRESS/PREFIX`, or an address alone (a host: /32, /128). Host bits are kept (the
/// validator refuses them where a network is meant).
impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        if s.contains('/') {
            return crate::raw::parse_net(s);
        }
        let a = crate::raw::parse_ip(s)?;
        Ok(IpNet { addr: a, prefix: if a.is_ipv4() { 32 } else { 128 } })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    pub name: String,
    /// Kernel interface (af_packet), vdev spec or PCI address (dpdk), or
    /// any label (memory).
    pub device: String,
    /// MAC to use; `None` means the device's own.
    pub mac: Option<[u8; 6]>,
    /// Addresses the engine owns on this interface (answers ARP/ND, and
    /// uses as source of its own packets).
    pub addresses: Vec<IpNet>,
    /// DPDK: the exception path to the kernel for this port (a vdev spec such as
    /// `net_tap0,iface=fvs-kni0` or a virtio-user port), as DPVS's KNI. Frames the engine
    /// does not handle go to the kernel through it; what the kernel sends on it goes out
    /// of this port. BGP, BFD, sync and health checks of a DPDK node run over it.
    pub kernel_port: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub mac: [u8; 6],
    /// Interface name the neighbour is on; `None`: found by route lookup.
    pub interface: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub prefix: IpNet,
    /// Gateway; `None` for an on-link route (needs `interface`).
    pub via: Option<IpAddr>,
    /// Outgoing interface; `None`: the interface whose subnet holds `via`.
    pub interface: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// Masquerading: destination rewritten to the real server, replies come
    /// back through the balancer and get the VIP as source.
    Nat,
    /// Direct routing: only the destination MAC changes.
    Dr,
    /// IPIP tunnel to the real server.
    Tunnel,
    /// Full NAT: source and destination rewritten (client -> VIP becomes
    /// local address -> real server), so replies come back to the
    /// balancer by ordinary routing (DPVS FNAT).
    Fnat,
}

impl Forward {
    /// Does the balancer see both directions (NAT, full NAT)?
    #[inline(always)]
    pub fn two_way(self) -> bool {
        matches!(self, Forward::Nat | Forward::Fnat)
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

/// The longest persistence timeout (s): ipvsadm's and keepalived's 31 days, so what
/// `ferrovsadm -S` prints is what `-R` and ipvsadm take back.
pub const MAX_PERSISTENCE_S: u32 = 31 * 86_400;
/// The largest connection threshold (`upper`/`lower`): ipvsadm's INT_MAX.
pub const MAX_THRESHOLD: u32 = i32::MAX as u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Seconds a template outlives its last connection (default 300).
    pub timeout: u32,
    /// Client netmask as a prefix length (default 32 for IPv4, 128 for IPv6).
    pub netmask: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtpOptions {
    /// Ports whose connections are FTP control channels (default [21]).
    pub control_ports: Vec<u16>,
    /// Let PORT/EPRT name an address other than the client's.
    pub allow_foreign_port_address: bool,
    /// Seconds an expected data connection waits to be opened (default 60).
    pub pinhole_timeout: u32,
    /// Expectations one control connection may hold at once (default 4, at most 16); a newer
    /// PASV/PORT replaces the session's oldest.
    pub max_expectations: u8,
    /// Let data connections use ports below 1024 (default false).
    pub allow_low_data_ports: bool,
}

impl Default for FtpOptions {
    fn default() -> Self {
        FtpOptions {
            control_ports: vec![21],
            allow_foreign_port_address: false,
            pinhole_timeout: 60,
            max_expectations: 4,
            allow_low_data_ports: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: Protocol,
    /// Ports and ranges served as ONE virtual service (like an LVS fwmark).
    /// Empty means every port (a fwmark service with no port in ipvsadm).
    pub ports: Vec<PortRange>,
    /// ipvsadm scheduler name (default `ferrovs_sched::DEFAULT`, "wlc"),
    /// one of `ferrovs_sched::NAMES` (checked when the file is validated).
    pub scheduler: String,
    pub forward: Forward,
    pub persistence: Option<Persistence>,
    pub ftp: Option<FtpOptions>,
    /// Firewall mark this service was imported from (ipvsadm -f), if any.
    pub fwmark: Option<u32>,
    pub real_servers: Vec<RealServer>,
    /// Health checks of the real servers of this service (`[service.health_check]`, or
    /// several as `[[service.health_check]]`): a server is up while every check passes
    /// (keepalived's checkers of one real server). Empty: not checked.
    pub health_checks: Vec<HealthCheck>,
    /// SYN proxy with SYN cookies (TCP NAT services).
    pub syn_proxy: SynProxy,
    /// One-packet scheduling (ipvsadm `--ops`, UDP services): each datagram is scheduled on
    /// its own and leaves no connection behind.
    pub one_packet: bool,
    /// Scheduler flags (ipvsadm `-b` / `--sched-flags`, `sh` and `mh` only).
    pub sched_flags: SchedFlags,
    /// Sources that may open connections (empty: any not denied), of the VIP's family.
    pub allow_from: Vec<IpNet>,
    /// Sources that may not (checked first), of the VIP's family.
    pub deny_from: Vec<IpNet>,
    /// New connections a client address may open per second (0: no limit; iptables'
    /// hashlimit by source in front of IPVS) and the burst it may save up (at least 1).
    pub source_conn_rate: u32,
    pub source_conn_burst: u32,
    /// Full NAT: the balancer's source addresses towards the real servers
    /// (`forward = "fnat"`), expanded from addresses, CIDRs and ranges.
    pub local_addresses: Vec<IpAddr>,
    /// Where new connections go while no real server can take them (keepalived's
    /// `sorry_server`): while the service's quorum is down, see [`Service::quorum_up`].
    pub sorry_server: Option<SorryServer>,
    /// keepalived's `quorum` (default 1): the sum of the weights of the live real servers
    /// the service needs to be up; below it the sorry server takes the new connections.
    pub quorum: u32,
    /// keepalived's `hysteresis` (default 0, less than `quorum`): an up service goes down
    /// below `quorum - hysteresis`, a down one comes up at `quorum + hysteresis`, so a weight
    /// moving around the quorum does not move the new connections back and forth.
    pub hysteresis: u32,
    /// `[service.notify]`: programs run on the service's events.
    pub notify: Option<Notify>,
}

/// `[service.notify]`: programs run when a real server of the service goes up or down by
/// its health check (keepalived's `notify_up` / `notify_down`) and when the service's quorum
/// is reached or lost (`quorum_up` / `quorum_down`). Each is an absolute program path and its
/// arguments, run without a shell, as `user`, with `FERROVS_EVENT`, `FERROVS_SERVICE` and,
/// for a server's event, `FERROVS_SERVER` and `FERROVS_PORT` in its environment; one at a
/// time in the order of the events, killed with its process group at `timeout`. An empty
/// command: nothing runs for that event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notify {
    pub up: Vec<String>,
    pub down: Vec<String>,
    pub quorum_up: Vec<String>,
    pub quorum_down: Vec<String>,
    /// The user the programs run as (with its primary group); `None`: the daemon's user.
    pub user: Option<String>,
    /// Seconds a program may run (default 10).
    pub timeout: f64,
}

impl Default for Notify {
    fn default() -> Notify {
        Notify {
            up: Vec::new(),
            down: Vec::new(),
            quorum_up: Vec::new(),
            quorum_down: Vec::new(),
            user: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl Notify {
    /// Seconds a program may run when `timeout` is not given.
    pub const DEFAULT_TIMEOUT: f64 = 10.0;

    /// No program, the defaults ([`Default`]).
    pub fn new() -> Notify {
        Notify::default()
    }

    /// The program of `event` (`up`, `down`, `quorum_up`, `quorum_down`), if one is set.
    pub fn command(&self, event: &str) -> Option<&[String]> {
        let c = match event {
            "up" => &self.up,
            "down" => &self.down,
            "quorum_up" => &self.quorum_up,
            "quorum_down" => &self.quorum_down,
            _ => return None,
        };
        (!c.is_empty()).then_some(c.as_slice())
    }
}

/// A service's sorry server: a destination of the service's forwarding method, used only
/// while no real server takes new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SorryServer {
    pub address: IpAddr,
    /// Destination port; `None`: as a real server without a port.
    pub port: Option<u16>,
}

/// Reverse-path filtering (Linux's `net.ipv4.conf.*.rp_filter`): is a new connection's source
/// one the balancer routes back, and through the interface its first packet came in on?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RpFilter {
    /// No check (Linux's 0).
    #[default]
    Off,
    /// The source has a route, through any interface (Linux's 2).
    Loose,
    /// The route to the source goes out through the interface the packet came in on
    /// (Linux's 1, RFC 3704's strict reverse path forwarding).
    Strict,
}

/// When a TCP service answers SYNs itself with SYN cookies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SynProxy {
    /// Above the worker's half-open threshold (`[engine] syn_proxy_threshold`), i.e. under a
    /// SYN flood.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// The flags of the `sh` and `mh` schedulers (ipvsadm `-b` / `--sched-flags`, IPVS's
/// `IP_VS_SVC_F_SCHED1` and `IP_VS_SVC_F_SCHED2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedFlags {
    /// `sh-fallback` / `mh-fallback` (`flag-1`): when the hashed server is down, quiesced or
    /// overloaded, the connection goes to another one instead of being refused.
    pub fallback: bool,
    /// `sh-port` / `mh-port` (`flag-2`): the client's port is hashed with its address, so one
    /// client's connections spread over the servers.
    pub port: bool,
}

impl SchedFlags {
    /// The flags a list of ipvsadm flag names gives `scheduler`: `sh-fallback`, `sh-port`
    /// (scheduler `sh`), `mh-fallback`, `mh-port` (`mh`), or `flag-1` and `flag-2` (either).
    /// A name for another scheduler, `flag-3` (which no IPVS scheduler reads) and a flag on
    /// a scheduler that has none are refused: IPVS would keep them without effect.
    pub fn parse<'a>(scheduler: &str, names: impl IntoIterator<Item = &'a str>) -> Result<SchedFlags, String> {
        let mut f = SchedFlags::default();
        for n in names {
            let (sched, fallback) = match n {
                "sh-fallback" => (Some("sh"), true),
                "sh-port" => (Some("sh"), false),
                "mh-fallback" => (Some("mh"), true),
                "mh-port" => (Some("mh"), false),
                "flag-1" => (None, true),
                "flag-2" => (None, false),
                "flag-3" => return Err("scheduler flag \"flag-3\" is not used by any scheduler".into()),
                _ => {
                    return Err(format!(
                        "unknown scheduler flag {n:?}: expected sh-fallback, sh-port, mh-fallback, mh-port, flag-1 or \
                         flag-2"
                    ))
                }
            };
            match sched {
                Some(s) if s != scheduler => {
                    return Err(format!("scheduler flag {n:?} applies to scheduler {s:?}, not {scheduler:?}"))
                }
                None if !matches!(scheduler, "sh" | "mh") => {
                    return Err(format!("scheduler flag {n:?}: scheduler {scheduler:?} has no flags (sh and mh have)"))
                }
                _ => {}
            }
            if fallback {
                f.fallback = true;
            } else {
                f.port = true;
            }
        }
        Ok(f)
    }

    /// The flags' names for `scheduler` (`sh-fallback`, `sh-port`, or the `mh-` ones), in
    /// ipvsadm's order; none for a scheduler without flags.
    pub fn names(&self, scheduler: &str) -> Vec<String> {
        if !matches!(scheduler, "sh" | "mh") {
            return Vec::new();
        }
        let mut v = Vec::new();
        if self.fallback {
            v.push(format!("{scheduler}-fallback"));
        }
        if self.port {
            v.push(format!("{scheduler}-port"));
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        !self.fallback && !self.port
    }
}

impl Service {
    pub fn has_port(&self, p: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|r| r.contains(p))
    }

    /// The destination port a real server with `port` gets: on a single-port service no
    /// port is that port (as ipvsadm's `-r ADDR` is `ADDR:service port`), so `ADDR` and
    /// `ADDR:80` of a port-80 service are one destination. `None`: the client's port.
    /// Does the service send new connections to its sorry server (it has one, and its quorum
    /// is down: [`Service::quorum_up`] without a memory)? See [`Config::serving`].
    pub fn needs_sorry(&self) -> bool {
        self.sorry_server.is_some() && !self.quorum_up(None)
    }

    /// The sum of the weights of the real servers that take new connections (keepalived's
    /// `weigh_live_realservers`: down servers are at weight 0 or gone).
    pub fn alive_weight(&self) -> u64 {
        self.real_servers.iter().map(|r| u64::from(r.weight)).sum()
    }

    /// Is the service's quorum up, given whether it was (`was_up`; `None`: no memory, as at
    /// the daemon's start)? As keepalived's `update_quorum_state`: an up service goes down
    /// when its alive weight is 0 or below `quorum - hysteresis`; a down one comes up at
    /// `quorum + hysteresis`; without a memory it is up from `quorum + hysteresis` on
    /// (keepalived's `set_quorum_states`).
    pub fn quorum_up(&self, was_up: Option<bool>) -> bool {
        let w = self.alive_weight();
        let (q, h) = (u64::from(self.quorum), u64::from(self.hysteresis));
        match was_up {
            Some(true) => w > 0 && w >= q.saturating_sub(h),
            Some(false) | None => w >= q + h,
        }
    }

    pub fn server_port(&self, port: Option<u16>) -> Option<u16> {
        dest_port_of(&self.ports, port)
    }
}

/// [`Service::server_port`] of a service with `ports` (the validator has no `Service` yet).
pub(crate) fn dest_port_of(ports: &[PortRange], port: Option<u16>) -> Option<u16> {
    port.or(match ports {
        [r] if r.lo == r.hi => Some(r.lo),
        _ => None,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealServer {
    pub address: IpAddr,
    /// Destination port; `None`: the port the client used.
    pub port: Option<u16>,
    /// 0..=65535; 0 is quiescent (no new connections).
    pub weight: u32,
    /// Connection thresholds (ipvsadm -x / -y); 0 = none.
    pub upper: u32,
    pub lower: u32,
    /// Per-server forwarding method (ipvsadm -g/-m/-i); `None`: the service's.
    pub forward: Option<Forward>,
    /// Send the client's address to this server in a PROXY protocol header at the start of
    /// each TCP connection (NAT and full NAT).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// This server's own health checks, instead of its service's (keepalived checks each
    /// real server with its own checkers): `None`, the service's; `Some` of none, not
    /// checked (always up). Their `on_fail` is this server's.
    pub health_checks: Option<Vec<HealthCheck>>,
}

impl RealServer {
    /// Whether this server, when its checks take it down, is quiesced (`on_fail =
    /// "quiesce"`, the default) rather than removed: the same for all its checks (the
    /// configuration's rule); `service`: its service's checks.
    pub fn quiesces(&self, service: &[HealthCheck]) -> bool {
        self.checks(service).first().is_none_or(|h| h.quiesce)
    }

    /// The checks this server gets: its own, else its service's `service`.
    pub fn checks<'a>(&'a self, service: &'a [HealthCheck]) -> &'a [HealthCheck] {
        self.health_checks.as_deref().unwrap_or(service)
    }
}

/// PROXY protocol version (HAProxy's spec): v1 is a text line, v2 a binary header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// A health check's type; its serde form is the config file's `type` word (the control
/// socket carries it so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// TCP connect to the real server's port (or `port`).
    Tcp,
    /// Connect, send `send`, expect a reply starting with `expect`.
    SendExpect,
    /// FTP: expect a 220 banner, send USER anonymous / QUIT.
    Ftp,
    /// HTTP: `GET path` (HTTP/1.0 with a Host header), expect the status `status` (any 2xx
    /// when unset) (keepalived's `HTTP_GET`).
    Http,
    /// HTTPS: a TLS handshake, then `http`'s request and status over it (keepalived's
    /// `SSL_GET`). The certificate is verified only with `tls_ca`.
    Https,
    /// DNS over UDP: a query for `query_name` / `query_type`, answered without an error code
    /// (keepalived's `DNS_CHECK`).
    Dns,
    /// UDP: a datagram (`payload`, else an empty one) to the port; up when no ICMP error
    /// (port unreachable) comes back within the timeout, or, with `require_reply` or
    /// `reply`, when an answer (starting with `reply`) does (keepalived's `UDP_CHECK`).
    Udp,
    /// ICMP (ICMPv6) echo: up on the echo reply (keepalived's `PING_CHECK`). No port.
    Ping,
    /// SMTP: the `220` greeting, `HELO helo_name` answered `250`, then `QUIT` (keepalived's
    /// `SMTP_CHECK`).
    Smtp,
    /// Run the program `command` (an argv, no shell); exit status 0 is up (keepalived's
    /// `MISC_CHECK`).
    Exec,
}

/// `[service.health_check]`. Its serde form is what the control socket carries for
/// `ferrovsadm -R` (an `add_service` edit), the `check*` fields of `-S`'s `# ferrovs-service`
/// comment as JSON: seconds as their text, `remove` for `on_fail = "remove"`, and a field
/// absent or null taking its default (but for `kind`), so a daemon and a `ferrovsadm` of
/// different versions read each other's edits (see [`check_wire`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub port: Option<u16>,
    /// Where the check goes instead of the real server's address (keepalived's
    /// `connect_ip`: a management address, say); in a real server's own checks only. Left
    /// out of the control socket's form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The address the check leaves from (keepalived's `bindto`), of the checked address's
    /// family; `None`: the kernel's choice. Left out of the control socket's form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    pub send: Option<String>,
    pub expect: Option<String>,
    /// `http`, `https`: the request path (default `/`), the Host header (default: the real
    /// server's address and port; `https`: also the name sent as SNI and verified with
    /// `tls_ca`), and the status expected (default: any 2xx).
    pub path: Option<String>,
    pub host: Option<String>,
    pub status: Option<u16>,
    /// `http`, `https`: the MD5 of the response's body (32 lower-case hex digits, as
    /// keepalived's `digest` and its `genhash` write it), checked besides the status. Left
    /// out of the control socket's form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `https`: a PEM file (absolute path) of the CA certificates the server's certificate
    /// must chain to, for the name `host` (or the real server's address); read at each
    /// check. `None`: the certificate is not verified (keepalived's `SSL_GET`), only the
    /// handshake must complete. Left out of the control socket's form when unset, which
    /// is then the form daemons and `ferrovsadm`s from before `https` read and write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// `dns`: the name queried (default `.`, the root, as keepalived) and its type, one of
    /// [`HealthCheck::DNS_TYPES`] (default `SOA`). Left out of the control socket's form when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// `udp`: the datagram sent, as hex octets (keepalived's `payload`: pairs of hex digits,
    /// spaces between octets allowed, a lone digit before a space being one octet); `None`:
    /// an empty datagram. Left out of the control socket's form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// `udp`: an answer is required (keepalived's `require_reply`); implied by `reply`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_reply: bool,
    /// `udp`: what the answer must start with, as hex octets as `payload`, an `x` digit
    /// matching any (keepalived's `require_reply` data). Left out when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// `udp`: the fewest and most octets the answer may have (keepalived's
    /// `min_reply_length`, `max_reply_length`); either implies `require_reply`. Left out when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reply_length: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reply_length: Option<u16>,
    /// `smtp`: the name `HELO` gives (keepalived's `helo_name`); `None`: this host's name.
    /// Left out of the control socket's form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// `exec`: the program (an absolute path) and its arguments, run without a shell; empty
    /// for the other types.
    #[serde(default)]
    pub command: Vec<String>,
    /// `exec`: the user the program runs as (with its primary group), looked up when the
    /// check runs; `None`: the daemon's user.
    pub user: Option<String>,
    /// Seconds between checks (default 5).
    #[serde(
        default = "check_wire::default_interval",
        serialize_with = "check_wire::write_secs",
        deserialize_with = "check_wire::interval"
    )]
    pub interval: f64,
    /// Seconds to the next check after a failure that has not yet taken the server down (the
    /// failure being confirmed), instead of `interval` (keepalived's `delay_before_retry`).
    /// Unset: `interval`.
    #[serde(default, serialize_with = "check_wire::write_opt_secs", deserialize_with = "check_wire::opt_secs")]
    pub retry_interval: Option<f64>,
    /// Seconds a check may take (default 3).
    #[serde(
        default = "check_wire::default_timeout",
        serialize_with = "check_wire::write_secs",
        deserialize_with = "check_wire::timeout"
    )]
    pub timeout: f64,
    /// Successes in a row to mark a server up (default 2).
    #[serde(default = "check_wire::default_rise", deserialize_with = "check_wire::rise")]
    pub rise: u32,
    /// Failures in a row to mark it down (default 3).
    #[serde(default = "check_wire::default_fall", deserialize_with = "check_wire::fall")]
    pub fall: u32,
    /// On failure set weight 0 (true, default) or remove the server (false).
    #[serde(
        rename = "remove",
        default = "check_wire::default_quiesce",
        serialize_with = "check_wire::write_not",
        deserialize_with = "check_wire::not"
    )]
    pub quiesce: bool,
    /// The real servers start down (weight 0, as a failed server) until their check has
    /// passed `rise` times: at the daemon's start and when added later (keepalived's `alpha`).
    /// Default false: they start up.
    #[serde(default)]
    pub start_down: bool,
}

impl HealthCheckKind {
    /// The config file's `type` word (and the `check=` of `ferrovsadm -S`).
    pub fn name(self) -> &'static str {
        match self {
            HealthCheckKind::Tcp => "tcp",
            HealthCheckKind::SendExpect => "send_expect",
            HealthCheckKind::Ftp => "ftp",
            HealthCheckKind::Http => "http",
            HealthCheckKind::Https => "https",
            HealthCheckKind::Dns => "dns",
            HealthCheckKind::Udp => "udp",
            HealthCheckKind::Ping => "ping",
            HealthCheckKind::Smtp => "smtp",
            HealthCheckKind::Exec => "exec",
        }
    }

    /// Every type, in the order the documentation lists them.
    pub const ALL: [HealthCheckKind; 10] = [
        HealthCheckKind::Tcp,
        HealthCheckKind::SendExpect,
        HealthCheckKind::Ftp,
        HealthCheckKind::Http,
        HealthCheckKind::Https,
        HealthCheckKind::Dns,
        HealthCheckKind::Udp,
        HealthCheckKind::Ping,
        HealthCheckKind::Smtp,
        HealthCheckKind::Exec,
    ];

    /// `http` or `https`: a GET and its status.
    /// Does a check of this type go to a port? `exec` runs a program and `ping` sends ICMP
    /// echoes: they run for a server with no port too (an all-ports service's).
    pub fn needs_port(self) -> bool {
        !matches!(self, HealthCheckKind::Exec | HealthCheckKind::Ping)
    }

    pub fn is_http(self) -> bool {
        matches!(self, HealthCheckKind::Http | HealthCheckKind::Https)
    }

    /// The type a `type` word names.
    pub fn named(word: &str) -> Option<HealthCheckKind> {
        Self::ALL.into_iter().find(|k| k.name() == word)
    }
}

impl HealthCheck {
    /// The defaults of what `[service.health_check]` (or `ferrovsadm -R`'s comment) leaves
    /// out: the only place that knows them.
    pub const DEFAULT_INTERVAL: f64 = 5.0;
    pub const DEFAULT_TIMEOUT: f64 = 3.0;
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
    pub const DEFAULT_QUIESCE: bool = true;
    /// The record types a `dns` check may ask for (keepalived's list) and their codes.
    pub const DNS_TYPES: [(&'static str, u16); 7] =
        [("A", 1), ("NS", 2), ("CNAME", 5), ("SOA", 6), ("MX", 15), ("TXT", 16), ("AAAA", 28)];
    pub const DEFAULT_QUERY_NAME: &'static str = ".";
    pub const DEFAULT_QUERY_TYPE: &'static str = "SOA";

    /// A `dns` check's query name as valid: `.` (the root) or dot-separated labels of 1 to
    /// 63 letters, digits, `-` or `_`, a final dot optional, at most 253 bytes in all.
    pub fn valid_query_name(name: &str) -> bool {
        if name == "." {
            return true;
        }
        let n = name.strip_suffix('.').unwrap_or(name);
        !n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|l| {
                (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    }

    /// The octets of a `udp` check's `payload` or `reply` (`wild`: an `x` or `X` digit is
    /// allowed, matching any nibble) and the mask of the nibbles that must match (all ones
    /// without `wild`): keepalived's hex form, pairs of hex digits with spaces or tabs
    /// between octets, a lone digit before a space or the end being one octet. `None` when
    /// it is not that form, or holds no octet or more than [`Self::MAX_UDP_OCTETS`].
    pub fn hex_octets(s: &str, wild: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some((c - b'0', 0xf)),
            b'a'..=b'f' => Some((c - b'a' + 10, 0xf)),
            b'A'..=b'F' => Some((c - b'A' + 10, 0xf)),
            b'x' | b'X' if wild => Some((0, 0)),
            _ => None,
        };
        let (mut data, mut mask) = (Vec::new(), Vec::new());
        for word in s.split([' ', '\t']).filter(|w| !w.is_empty()) {
            for pair in word.as_bytes().chunks(2) {
                // A lone digit is the octet's low nibble, its high nibble zero (and matched).
                let (mut v, mut m) = nibble(pair[0])?;
                match pair.get(1) {
                    Some(&lo) => {
                        let (lv, lm) = nibble(lo)?;
                        (v, m) = (v << 4 | lv, m << 4 | lm);
                    }
                    None => m |= 0xf0,
                }
                data.push(v);
                mask.push(m);
            }
        }
        (!data.is_empty() && data.len() <= Self::MAX_UDP_OCTETS).then_some((data, mask))
    }

    /// The most octets a `udp` check's `payload` or `reply` may hold (a datagram that fits
    /// any path's MTU).
    pub const MAX_UDP_OCTETS: usize = 1232;

    /// The most health checks a service may have (each runs for every real server).
    pub const MAX_PER_SERVICE: usize = 16;

    /// An `smtp` check's `helo_name` as valid: one word of 1 to 255 visible ASCII bytes
    /// (nothing a check could smuggle into the command line).
    pub fn valid_helo_name(name: &str) -> bool {
        (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
    }

    /// The code of a `dns` check's record type (any case), if it is one of [`Self::DNS_TYPES`].
    pub fn dns_type_code(name: &str) -> Option<u16> {
        Self::DNS_TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, c)| c)
    }

    /// A check of `kind` with every other setting at its default.
    pub fn new(kind: HealthCheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            address: None,
            source: None,
            send: None,
            expect: None,
            path: None,
            host: None,
            status: None,
            digest: None,
            tls_ca: None,
            query_name: None,
            query_type: None,
            payload: None,
            require_reply: false,
            reply: None,
            min_reply_length: None,
            max_reply_length: None,
            helo_name: None,
            command: Vec::new(),
            user: None,
            interval: Self::DEFAULT_INTERVAL,
            retry_interval: None,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
            quiesce: Self::DEFAULT_QUIESCE,
            start_down: false,
        }
    }

    /// Seconds written as text (`ferrovsadm -S`'s comment, the control socket): a finite,
    /// non-negative number; the validator holds it to its range. Written back with `{}`,
    /// the shortest text that parses to the same `f64`, so `0.1` stays `0.1`.
    pub fn parse_secs(text: &str) -> Option<f64> {
        text.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)
    }
}

/// Serde helpers of [`HealthCheck`]'s control-socket form.
mod check_wire {
    use super::HealthCheck;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn write_secs<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn write_opt_secs<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| HealthCheck::parse_secs(&t).ok_or_else(|| D::Error::custom(format!("bad seconds {t:?}"))))
            .transpose()
    }

    pub fn default_interval() -> f64 {
        HealthCheck::DEFAULT_INTERVAL
    }

    pub fn default_timeout() -> f64 {
        HealthCheck::DEFAULT_TIMEOUT
    }

    pub fn default_rise() -> u32 {
        HealthCheck::DEFAULT_RISE
    }

    pub fn default_fall() -> u32 {
        HealthCheck::DEFAULT_FALL
    }

    pub fn default_quiesce() -> bool {
        HealthCheck::DEFAULT_QUIESCE
    }

    pub fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(opt_secs(d)?.unwrap_or(HealthCheck::DEFAULT_INTERVAL))
    }

    pub fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(opt_secs(d)?.unwrap_or(HealthCheck::DEFAULT_TIMEOUT))
    }

    pub fn rise<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ok(Option::deserialize(d)?.unwrap_or(HealthCheck::DEFAULT_RISE))
    }

    pub fn fall<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ok(Option::deserialize(d)?.unwrap_or(HealthCheck::DEFAULT_FALL))
    }

    /// `quiesce` travels as its opposite, `remove`.
    pub fn write_not<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(!v)
    }

    pub fn not<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(!bool::deserialize(d)?)
    }
}

/// `[cluster]`: several ferrovs nodes with the same services behind routers that spread traffic
/// by ECMP. Every node places a new connection with the same Maglev table (scheduler `mh`,
/// client address), recreates mid-connection packets of DR/tunnel connections it does not
/// know, streams its connection state to `peers` (or `multicast_group`) and tells its BIRD,
/// through BIRD's control socket, which VIPs to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// 1..=255, unique in the cluster; carried in every sync message.
    pub node_id: u8,
    /// Unicast sync peers (their `sync_address`).
    pub peers: Vec<IpAddr>,
    /// Multicast sync group instead of (or besides) `peers`.
    pub multicast_group: Option<IpAddr>,
    /// Kernel address the sync socket binds to (and the source of sync messages).
    pub sync_address: IpAddr,
    /// UDP port of the sync protocol (default 8848, IPVS's).
    pub sync_port: u16,
    /// Seconds between refreshes of a long-lived connection to the peers (default 10).
    pub sync_refresh: u32,
    /// Sync messages per second at most (default 1000); each message carries up to
    /// [`Cluster::SYNC_MAX_ENTRIES`]-ish entries, see the engine's sync module.
    pub sync_rate: u32,
    /// BIRD control socket (default /run/bird/bird.ctl).
    pub bird_socket: PathBuf,
    /// BIRD protocol announcing a VIP: `{vip}` is replaced by the address with `.` and `:`
    /// written as `_` (default "fvs_{vip}", e.g. fvs_10_0_0_100).
    pub bird_protocol: String,
    /// Seconds a draining node (SIGTERM, `ferrovsadm --drain`) waits for established
    /// connections after withdrawing its VIPs (default 30).
    pub drain_timeout: u32,
    /// Where the sync key came from (inline `sync_key` or `sync_key_file`), if any.
    pub sync_key_source: Option<SyncKeySource>,
    /// The key every sync datagram is authenticated with (HMAC-SHA256, format version 2);
    /// none: version 1, unauthenticated.
    pub sync_key: Option<SecretKey>,
    /// `[[cluster.node]]`: which node owns which full-NAT local addresses. Every local address
    /// of a full-NAT service belongs to exactly one node: a node allocates local ports only
    /// on its own (so two nodes never pick the same address and port), answers ARP/ND only
    /// for its own, and recognises every node's as replies (a failed node's replies, routed
    /// to a survivor by BGP, are translated with the synced state).
    pub nodes: Vec<ClusterNode>,
}

/// One `[[cluster.node]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterNode {
    pub id: u8,
    pub local_addresses: Vec<IpAddr>,
}

/// Where `[cluster]`'s sync key is configured.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncKeySource {
    /// `sync_key = "..."` (inline; rendered back as is).
    Inline,
    /// `sync_key_file = "/abs/path"`: read when the configuration is loaded.
    File(PathBuf),
}

/// Key bytes that never appear in `Debug` output (logs).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(<{} bytes>)", self.0.len())
    }
}

impl Cluster {
    /// Shortest accepted sync key, in bytes.
    pub const MIN_KEY_LEN: usize = 16;

    /// The node owning local address `a`, if any.
    pub fn owner_of_local(&self, a: IpAddr) -> Option<u8> {
        self.nodes.iter().find(|n| n.local_addresses.contains(&a)).map(|n| n.id)
    }

    /// Whether `a` is a full-NAT local address of this node (or no node claims any address,
    /// which only a configuration without full-NAT services has).
    pub fn is_own_local(&self, a: IpAddr) -> bool {
        self.owner_of_local(a) == Some(self.node_id)
    }

    /// The BIRD protocol name announcing `vip` (or a full-NAT local address).
    pub fn protocol_for(&self, vip: IpAddr) -> String {
        let a: String = vip.to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        self.bird_protocol.replace("{vip}", &a)
    }
}
