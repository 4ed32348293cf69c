//! ipvsadm compatibility: the command-line parser of `ferrovsadm`, the
//! edits it makes to a [`Config`], and the `-L` / `-S` / `-c` output
//! formats, byte for byte as ipvsadm prints them (so scripts that scrape
//! `ipvsadm -L -n` keep working).
//!
//! Everything here is a pure function (no I/O), unit-tested against golden
//! strings.
//!
//! ## Mapping LVS virtual services onto ferrovs services
//! - `-t|-u VIP:PORT` names the ferrovs service of that protocol and VIP
//!   whose ports contain PORT (a port-group service, e.g. ports
//!   `[21, "10000-10100"]`, is reached through any of its ports and is
//!   listed as `TCP  VIP:FIRSTPORT`, port 0 for an all-ports service).
//! - `-f MARK` names the service with `fwmark = MARK` (listed as
//!   `FWM  MARK`). A firewall mark selects addresses and ports by
//!   iptables rules, which ferrovs does not have: declare the port group
//!   in the config (`fwmark = MARK`, `vip`, `ports`) and `-A/-E -f MARK`
//!   edits it. `-A -f MARK` without such a service is an error.
//! - `-S` prints ipvsadm-save lines; a service that ipvsadm's syntax
//!   cannot fully describe (a name other than the default
//!   `tcp-VIP-PORT`, several ports, a fwmark, FTP options, a forwarding
//!   method its first `-a` line does not show, `syn_proxy`, full NAT
//!   local addresses, a sorry server, quorum, hysteresis, a health check,
//!   notify programs)
//!   is preceded by a comment `# ferrovs-service name=.. proto=.. vip=..
//!   ports=.. ...` that `-R` reads back, and a real server with a PROXY
//!   protocol header or health checks of its own by `# ferrovs-server
//!   proxy=v1|v2 check=..` (the `check*` fields as below; `check=none`: not
//!   checked), so `-S`, `-C`,
//!   `-R` restores the same services (every field of `[[service]]` and
//!   `[[service.real_server]]`; real servers in `-S` order, `ADDR` of a
//!   single-port service as `ADDR:PORT`). The fields past `ftp*`:
//!   `forward=nat|dr|tunnel|fnat`, `syn-proxy=on|off`, `local=A,B,..`,
//!   `sorry=ADDR[:PORT]`, `quorum=N`, `hysteresis=N`, and the health check
//!   as `check=TYPE check-port= check-address= check-source= check-send= check-expect= check-path=
//!   check-host= check-status= check-digest= check-tls-ca= check-query-name= check-query-type=
//!   check-payload= check-reply= check-min-reply-length= check-max-reply-length=
//!   check-require-reply check-helo-name=
//!   check-command=ARG,ARG,.. check-user=
//!   check-interval= check-retry-interval= check-timeout= check-rise=
//!   check-fall= check-remove check-start-down` (several checks: each from its
//!   own `check=` on), and the notify programs as
//!   `notify-up=ARG,ARG,.. notify-down= notify-quorum-up= notify-quorum-down=
//!   notify-user= notify-timeout=` (strings, the name too,
//!   `%XX`-escaped: `%`, quotes, `#`, `,`, `=`, spaces, control and
//!   non-ASCII bytes, so no string ends the comment's line). A
//!   bad value is an error naming the line; the restored configuration is
//!   then validated as a config file is. To feed ferrovs rules to a kernel
//!   ipvsadm, strip the comments first (`grep -v '^#'`).
//!
//! ## Deliberate differences from ipvsadm
//! - `-e` changes only the options given (ipvsadm resets an omitted
//!   weight to 1 and an omitted forwarding method to `-g`).
//! - `-E` keeps the scheduler when `-s` is omitted (ipvsadm resets it to
//!   wlc) but, like ipvsadm, drops persistence when `-p` is omitted.
//! - Addresses are always printed numerically (`-n` is accepted and
//!   implied).
//! - A new TCP service on port 21 gets the FTP gateway, as with the
//!   kernel's ip_vs_ftp module loaded (its default `ports=21`).

use ferrovs_cfg::import::{Import, MarkMap};
use ferrovs_cfg::{
    Config, ConfigError, Forward, FtpOptions, HealthCheck, HealthCheckKind, IpNet, Notify, Persistence, PortRange,
    Protocol, ProxyProtocol, RealServer, SchedFlags, Service, SorryServer, SynProxy,
};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// The IPVS version ferrovs reports (the kernel's current one).
pub const IPVS_VERSION: &str = "1.2.1";
/// The "connection table size" in ipvsadm's banner.
pub const CONN_TAB_SIZE: u32 = 4096;

// ---------------------------------------------------------------------------
// Commands.

/// How a command names a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SvcKey {
    Tcp { vip: IpAddr, port: u16 },
    Udp { vip: IpAddr, port: u16 },
    Fwmark { mark: u32, v6: bool },
}

impl SvcKey {
    fn describe(&self) -> String {
        match self {
            SvcKey::Tcp { vip, port } => format!("TCP {}", addrport(*vip, *port)),
            SvcKey::Udp { vip, port } => format!("UDP {}", addrport(*vip, *port)),
            SvcKey::Fwmark { mark, v6: false } => format!("FWM {mark}"),
            SvcKey::Fwmark { mark, v6: true } => format!("FWM {mark} IPv6"),
        }
    }
}

/// What ipvsadm cannot say about a service: carried by the
/// `# ferrovs-service` comment of `-S` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServiceExt {
    pub name: Option<String>,
    pub proto: Option<String>,
    pub vip: Option<IpAddr>,
    /// `80,8000-8100` or `*` (every port).
    pub ports: Option<String>,
    pub fwmark: Option<u32>,
    /// FTP control ports, `none` for no FTP gateway.
    pub ftp: Option<String>,
    pub ftp_pinhole: Option<u32>,
    pub ftp_foreign: bool,
    /// FTP `max_expectations` (absent: 4) and `allow_low_data_ports`.
    pub ftp_max_expectations: Option<u8>,
    pub ftp_low_ports: bool,
    /// The service's forwarding method (`nat`, `dr`, `tunnel`, `fnat`) when its first real
    /// server does not show it (no real server, or one with a method of its own).
    pub forward: Option<String>,
    /// `on` or `off` (absent: `auto`).
    pub syn_proxy: Option<String>,
    /// Full NAT local addresses.
    pub local: Vec<IpAddr>,
    pub sorry: Option<IpAddr>,
    pub sorry_port: Option<u16>,
    pub quorum: Option<u32>,
    pub hysteresis: Option<u32>,
    /// The `check*` fields, defaults filled in (on the control socket in their own form, see
    /// [`HealthCheck`]): the first check, then the others (each begun by its `check=`).
    pub check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_checks: Vec<HealthCheck>,
    /// `[service.notify]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `allow_from` and `deny_from` (addresses and CIDRs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_from: Vec<String>,
    /// `source_conn_rate` and `source_conn_burst` (absent: no limit; the burst: the rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_conn_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_conn_burst: Option<u32>,
}

/// What ipvsadm cannot say about a real server: carried by a `# ferrovs-server` comment
/// before its `-a` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServerExt {
    /// PROXY protocol version, `v1` or `v2`.
    pub proxy: Option<String>,
    /// The forwarding method the service declared (`# ferrovs-service forward=`): the first
    /// server does not set the service's method then.
    pub service_forward: Option<String>,
    /// The server's own health checks (`check*` words, as a service's), `Some` of none for
    /// `check=none` (not checked); absent: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<HealthCheck>>,
}

/// An edit of the running configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    AddService {
        key: SvcKey,
        scheduler: Option<String>,
        persistent: Option<u32>,
        netmask: Option<String>,
        /// One-packet scheduling (`-o`, `--ops`; UDP services).
        #[serde(default)]
        ops: bool,
        /// Scheduler flags (`-b`, `--sched-flags`: `sh-port`, `mh-fallback`, ...).
        #[serde(default)]
        sched_flags: Vec<String>,
        #[serde(default)]
        ext: Option<Box<ServiceExt>>,
    },
    EditService {
        key: SvcKey,
        scheduler: Option<String>,
        persistent: Option<u32>,
        netmask: Option<String>,
        #[serde(default)]
        ops: bool,
        #[serde(default)]
        sched_flags: Vec<String>,
    },
    DeleteService {
        key: SvcKey,
    },
    Clear,
    AddServer {
        key: SvcKey,
        addr: IpAddr,
        port: Option<u16>,
        forward: Option<char>,
        weight: Option<u32>,
        upper: Option<u32>,
        lower: Option<u32>,
        #[serde(default)]
        ext: Option<ServerExt>,
    },
    EditServer {
        key: SvcKey,
        addr: IpAddr,
        port: Option<u16>,
        forward: Option<char>,
        weight: Option<u32>,
        upper: Option<u32>,
        lower: Option<u32>,
    },
    DeleteServer {
        key: SvcKey,
        addr: IpAddr,
        port: Option<u16>,
    },
    /// `--set TCP TCPFIN UDP` (0 leaves a value unchanged).
    SetTimeouts {
        tcp: u32,
        tcpfin: u32,
        udp: u32,
    },
}

/// Options of `-L`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOpts {
    pub numeric: bool,
    pub conns: bool,
    pub stats: bool,
    pub rate: bool,
    pub timeout: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub exact: bool,
    pub sort: bool,
    /// List only this service.
    pub service: Option<SvcKey>,
}

/// What a `ferrovsadm` command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Edit(Command),
    List(ListOpts),
    Zero(Option<SvcKey>),
    Save,
    Restore,
    /// ferrovs-only verbs.
    Conns,
    Ftp,
    Drops,
    /// The ports' own counters (what never reached a worker).
    Ports,
    Health,
    Status,
    Metrics,
    Reload,
    /// Cluster: withdraw the VIPs, let established connections finish, exit.
    Drain,
    Top(TopOpts),
    Version,
    Help,
}

/// Options of `ferrovsadm top`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopOpts {
    /// Refresh period in milliseconds.
    pub interval_ms: u64,
    /// Stop after this many refreshes.
    pub iterations: Option<u64>,
    /// Initial sort column (one of `cli::TOP_SORT_COLUMNS`).
    pub sort_by: String,
}

impl Default for TopOpts {
    fn default() -> Self {
        TopOpts { interval_ms: 1000, iterations: None, sort_by: "conns".into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub action: Action,
    pub socket: Option<String>,
    pub json: bool,
}

pub const USAGE: &str = "\
ferrovsadm: ipvsadm-compatible control of a running ferrovs

  ferrovsadm -A|E -t|u|f service-address [-s scheduler] [-p [timeout]] [-M netmask] [-o] [-b sched-flags]
  ferrovsadm -D -t|u|f service-address
  ferrovsadm -C
  ferrovsadm -R            (ipvsadm-save lines on stdin)
  ferrovsadm -S [-n]
  ferrovsadm -a|e -t|u|f service-address -r server-address [-g|i|m] [-w weight] [-x upper] [-y lower]
  ferrovsadm -d -t|u|f service-address -r server-address
  ferrovsadm -L|l [-n] [-c] [--stats] [--rate] [--timeout] [--thresholds] [--exact] [-t|u|f service-address]
  ferrovsadm -Z [-t|u|f service-address]
  ferrovsadm --set tcp tcpfin udp
ferrovs-only:
  ferrovsadm conns | --ftp | drops | ports | health | status | metrics | --reload
  ferrovsadm top [--interval SECONDS] [--iterations N] [--sort-by name|conns|active|pps|bps|weight|health]
Global options: --socket PATH (default /run/ferrovs/ferrovs.sock, or $FERROVS_SOCKET), --json
Addresses: IPv4 ADDR:PORT, IPv6 [ADDR]:PORT; -f takes a firewall mark (a ferrovs service with fwmark = MARK).
";

/// Split `ADDR:PORT`, `[V6]:PORT`, `ADDR` or `[V6]`.
pub fn split_addr(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']')?;
        let ip: IpAddr = a.parse().ok()?;
        return match p.strip_prefix(':') {
            Some(port) => Some((ip, Some(port_num(port)?))),
            None if p.is_empty() => Some((ip, None)),
            None => None,
        };
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let (a, p) = s.rsplit_once(':')?;
    let ip: Ipv4Addr = a.parse().ok()?;
    Some((IpAddr::V4(ip), Some(port_num(p)?)))
}

/// Numbers and the service names ipvsadm prints without `-n` (shared with
/// the ipvsadm-save importer).
fn port_num(s: &str) -> Option<u16> {
    ferrovs_cfg::import::port_number(s)
}

/// ipvsadm's MAX_TIMEOUT: the longest persistence timeout `-p` takes (31 days), the
/// config's limit too.
const MAX_PERSISTENT_TIMEOUT: u64 = ferrovs_cfg::MAX_PERSISTENCE_S as u64;

/// Parse a `ferrovsadm` command line (without the program name).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Invocation, String> {
    parse_cmdline(args, false, false)
}

/// [`parse_args`]; `all_ports`: `-A/-E -t|-u VIP:0` is the every-port
/// service even without `-p` (a `# ferrovs-service ... ports=*` line says so);
/// `restore`: `-a` keeps the port `-S` printed (see below).
fn parse_cmdline<S: AsRef<str>>(args: &[S], all_ports: bool, restore: bool) -> Result<Invocation, String> {
    let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
    let mut cmd: Option<char> = None;
    let mut verb: Option<Action> = None;
    let mut key: Option<SvcKey> = None;
    let mut v6 = false;
    let mut sched = None;
    let mut persistent = None;
    let mut netmask = None;
    let mut ops = false;
    let mut sched_flags: Option<Vec<String>> = None;
    let mut real: Option<(IpAddr, Option<u16>)> = None;
    let mut fwd = None;
    let mut weight = None;
    let mut upper = None;
    let mut lower = None;
    let mut lo = ListOpts { sort: true, ..Default::default() };
    let mut socket = None;
    let mut json = false;
    let mut set: Option<(u32, u32, u32)> = None;
    let mut top = TopOpts::default();

    let set_cmd = |c: char, cmd: &mut Option<char>| -> Result<(), String> {
        match *cmd {
            Some(o) if o != c => Err(format!("multiple commands specified (-{o} and -{c})")),
            _ => {
                *cmd = Some(c);
                Ok(())
            }
        }
    };

    let mut i = 0;
    while i < args.len() {
        let raw = args[i];
        // --opt=value and -tVIP:PORT forms.
        let (t, mut inline): (String, Option<String>) = if raw.starts_with("--") {
            match raw.split_once('=') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (raw.to_string(), None),
            }
        } else if raw.starts_with('-')
            && raw.len() > 2
            && raw.as_bytes().get(1).is_some_and(|b| b"tufsrwxyMpb".contains(b))
        {
            (raw[..2].to_string(), Some(raw[2..].to_string()))
        } else {
            (raw.to_string(), None)
        };
        let t = t.as_str();
        let mut next = |what: &str| -> Result<String, String> {
            if let Some(v) = inline.take() {
                return Ok(v);
            }
            i += 1;
            args.get(i).map(|s| s.to_string()).ok_or_else(|| format!("option {what} requires an argument"))
        };
        let num = |s: &str, what: &str, max: u64| -> Result<u32, String> {
            match s.parse::<u64>() {
                Ok(v) if v <= max => Ok(v as u32),
                _ => Err(format!("illegal {what} specified: {s:?}")),
            }
        };
        match t {
            "-A" | "--add-service" => set_cmd('A', &mut cmd)?,
            "-E" | "--edit-service" => set_cmd('E', &mut cmd)?,
            "-D" | "--delete-service" => set_cmd('D', &mut cmd)?,
            "-C" | "--clear" => set_cmd('C', &mut cmd)?,
            "-R" | "--restore" => set_cmd('R', &mut cmd)?,
            "-S" | "--save" => set_cmd('S', &mut cmd)?,
            "-a" | "--add-server" => set_cmd('a', &mut cmd)?,
            "-e" | "--edit-server" => set_cmd('e', &mut cmd)?,
            "-d" | "--delete-server" => set_cmd('d', &mut cmd)?,
            "-L" | "-l" | "--list" => set_cmd('L', &mut cmd)?,
            "-Z" | "--zero" => set_cmd('Z', &mut cmd)?,
            "--set" => {
                set_cmd('s', &mut cmd)?;
                let a = next("--set")?;
                let b = next("--set")?;
                let c = next("--set")?;
                set = Some((
                    num(&a, "timeout", i32::MAX as u64)?,
                    num(&b, "timeout", i32::MAX as u64)?,
                    num(&c, "timeout", i32::MAX as u64)?,
                ));
            }
            "-h" | "--help" => verb = Some(Action::Help),
            "-v" | "--version" => verb = Some(Action::Version),
            "--reload" | "reload" => verb = Some(Action::Reload),
            "--drain" | "drain" => verb = Some(Action::Drain),
            "--ftp" | "ftp" => verb = Some(Action::Ftp),
            "--conns" | "conns" => verb = Some(Action::Conns),
            "--drops" | "drops" => verb = Some(Action::Drops),
            "--ports" | "ports" => verb = Some(Action::Ports),
            "--health" | "health" => verb = Some(Action::Health),
            "--status" | "status" => verb = Some(Action::Status),
            "--metrics" | "metrics" => verb = Some(Action::Metrics),
            "--top" | "top" => verb = Some(Action::Top(TopOpts::default())),
            "--interval" => {
                let v = next(t)?;
                top.interval_ms = match v.parse::<f64>() {
                    Ok(s) if (0.05..=3600.0).contains(&s) => (s * 1000.0) as u64,
                    _ => return Err(format!("illegal interval {v:?}: seconds between 0.05 and 3600")),
                };
            }
            "--iterations" => top.iterations = Some(num(&next(t)?, "iterations", u32::MAX as u64)? as u64),
            "--sort-by" => {
                let v = next(t)?;
                if !crate::cli::TOP_SORT_COLUMNS.contains(&v.as_str()) {
                    return Err(format!(
                        "unknown sort column {v:?}: expected one of {}",
                        crate::cli::TOP_SORT_COLUMNS.join(", ")
                    ));
                }
                top.sort_by = v;
            }
            "--socket" => socket = Some(next("--socket")?),
            "--json" => json = true,
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                let a = next(t)?;
                let (vip, port) =
                    split_addr(&a).ok_or_else(|| format!("illegal virtual server address[:port] specified: {a:?}"))?;
                let port = port.unwrap_or(0);
                key = Some(if t == "-t" || t == "--tcp-service" {
                    SvcKey::Tcp { vip, port }
                } else {
                    SvcKey::Udp { vip, port }
                });
            }
            "-f" | "--fwmark-service" => {
                let a = next(t)?;
                // As ipvsadm's parse_fwmark: 1..UINT_MAX (0 is no mark).
                let mark = match num(&a, "firewall mark", u32::MAX as u64) {
                    Ok(m) if m > 0 => m,
                    _ => return Err(format!("invalid fwmark value {a:?} specified")),
                };
                key = Some(SvcKey::Fwmark { mark, v6: false });
            }
            "-6" | "--ipv6" => v6 = true,
            "-s" | "--scheduler" => {
                let s = next(t)?;
                ferrovs_sched::check_name(&s).map_err(|e| e.to_string())?;
                sched = Some(s);
            }
            "-p" | "--persistent" => {
                let v = inline.take().or_else(|| match args.get(i + 1) {
                    Some(v) if !v.starts_with('-') && v.parse::<u64>().is_ok() => {
                        i += 1;
                        Some(v.to_string())
                    }
                    _ => None,
                });
                persistent = Some(match v {
                    // ipvsadm: 1..MAX_TIMEOUT (31 days).
                    Some(v) => match num(&v, "persistent timeout", MAX_PERSISTENT_TIMEOUT)? {
                        0 => return Err("illegal persistent timeout specified: 0".into()),
                        n => n,
                    },
                    None => 300,
                });
            }
            "-M" | "--netmask" => netmask = Some(next(t)?),
            "-o" | "--ops" => ops = true,
            "--sched-flags" => sched_flags = Some(flag_list(&next(t)?)?),
            // ipvsadm's -b FLAGS (--sched-flags) on -A/-E; DPVS's -b (full NAT) on -a/-e
            // takes no argument, so a word after it that is not an option is the flags.
            "-b" => match inline.take().or_else(|| match args.get(i + 1) {
                Some(v) if !v.starts_with('-') => {
                    i += 1;
                    Some(v.to_string())
                }
                _ => None,
            }) {
                Some(v) => sched_flags = Some(flag_list(&v)?),
                None => fwd = Some('b'),
            },
            "-r" | "--real-server" => {
                let a = next(t)?;
                real =
                    Some(split_addr(&a).ok_or_else(|| format!("illegal real server address[:port] specified: {a:?}"))?);
            }
            "-g" | "--gatewaying" => fwd = Some('g'),
            "-m" | "--masquerading" => fwd = Some('m'),
            "-i" | "--ipip" => fwd = Some('i'),
            // DPVS's ipvsadm: full NAT (the service needs local_addresses).
            "--fullnat" => fwd = Some('b'),
            "-w" | "--weight" => weight = Some(num(&next(t)?, "weight", 65535)?),
            // ipvsadm: 0..INT_MAX.
            "-x" | "--u-threshold" => {
                upper = Some(num(&next(t)?, "upper threshold", ferrovs_cfg::MAX_THRESHOLD as u64)?)
            }
            "-y" | "--l-threshold" => {
                lower = Some(num(&next(t)?, "lower threshold", ferrovs_cfg::MAX_THRESHOLD as u64)?)
            }
            "-n" | "--numeric" => lo.numeric = true,
            "-c" | "--connection" => lo.conns = true,
            "--stats" => lo.stats = true,
            "--rate" => lo.rate = true,
            "--timeout" => lo.timeout = true,
            "--thresholds" => lo.thresholds = true,
            "--persistent-conn" => lo.persistent_conn = true,
            "-X" | "--exact" => lo.exact = true,
            "--nosort" => lo.sort = false,
            "--sort" => lo.sort = true,
            other => return Err(format!("unknown option {other:?} (see ferrovsadm --help)")),
        }
        if inline.is_some() {
            return Err(format!("option {t} takes no argument"));
        }
        i += 1;
    }
    if let Some(SvcKey::Fwmark { mark, .. }) = key {
        key = Some(SvcKey::Fwmark { mark, v6 });
    }
    if matches!(cmd, Some('L')) && lo.conns && (lo.stats || lo.rate) {
        return Err("-c cannot be combined with --stats or --rate".into());
    }
    if lo.service.is_none() {
        lo.service = if matches!(cmd, Some('L')) { key.clone() } else { None };
    }
    let need_key = |k: &Option<SvcKey>| -> Result<SvcKey, String> {
        k.clone().ok_or_else(|| "no service specified: use -t, -u or -f".to_string())
    };
    // As ipvsadm: port 0 is every port, for a persistent service only.
    let need_port = |k: &SvcKey| -> Result<(), String> {
        match k {
            SvcKey::Tcp { port: 0, .. } | SvcKey::Udp { port: 0, .. } if persistent.is_none() && !all_ports => {
                Err("a TCP/UDP service needs a port (VIP:PORT); port 0 (every port) needs -p".into())
            }
            _ => Ok(()),
        }
    };
    let need_real = || -> Result<(IpAddr, Option<u16>), String> {
        real.ok_or_else(|| "no real server specified: use -r".to_string())
    };
    // As ipvsadm's option/command table: a service's options (scheduler, persistence,
    // one-packet) belong to -A/-E, a real server's to -a/-e (-d names one with -r alone), so
    // `-a ... -o` or `-A ... -w 3` is refused, not silently dropped.
    if let Some(c) = cmd {
        let svc_opts = [
            (sched.is_some(), "--scheduler"),
            (persistent.is_some(), "--persistent"),
            (netmask.is_some(), "--netmask"),
            (ops, "--ops"),
            (sched_flags.is_some(), "--sched-flags"),
        ];
        let srv_opts = [
            (real.is_some() && c != 'd', "--real-server"),
            (fwd.is_some(), "-g/-m/-i/-b (forwarding method)"),
            (weight.is_some(), "--weight"),
            (upper.is_some(), "--u-threshold"),
            (lower.is_some(), "--l-threshold"),
        ];
        let (svc_ok, srv_ok) = match c {
            'A' | 'E' => (true, false),
            'a' | 'e' => (false, true),
            _ => (false, false),
        };
        let bad = svc_opts.iter().filter(|_| !svc_ok).chain(srv_opts.iter().filter(|_| !srv_ok)).find(|o| o.0);
        if let Some((_, o)) = bad {
            return Err(format!("option {o} cannot be used with -{c}"));
        }
    }
    let action = match (verb, cmd) {
        (Some(Action::Top(_)), None) => Action::Top(top),
        (Some(v), None) => v,
        (Some(_), Some(c)) => return Err(format!("a ferrovs verb cannot be combined with -{c}")),
        (None, None) => {
            if lo.numeric || lo.conns || lo.stats || lo.rate || lo.timeout {
                Action::List(lo)
            } else if args.is_empty() {
                // ipvsadm without arguments lists.
                Action::List(lo)
            } else {
                return Err("no command specified (see ferrovsadm --help)".into());
            }
        }
        (None, Some(c)) => match c {
            'A' | 'E' => {
                let key = need_key(&key)?;
                need_port(&key)?;
                if let Some(m) = &netmask {
                    if persistent.is_none() {
                        return Err(format!("-M {m} needs -p (persistence granularity)"));
                    }
                }
                let sched_flags = sched_flags.unwrap_or_default();
                Action::Edit(if c == 'A' {
                    Command::AddService { key, scheduler: sched, persistent, netmask, ops, sched_flags, ext: None }
                } else {
                    Command::EditService { key, scheduler: sched, persistent, netmask, ops, sched_flags }
                })
            }
            'D' => Action::Edit(Command::DeleteService { key: need_key(&key)? }),
            'C' => Action::Edit(Command::Clear),
            'R' => Action::Restore,
            'S' => Action::Save,
            'a' | 'e' => {
                let key = need_key(&key)?;
                let (addr, mut port) = need_real()?;
                // As ipvsadm: with -g (the default) or -i the destination port
                // is the service port, as DR and IPIP cannot change it (a fwmark
                // service keeps the port given). `-R` keeps what `-S` printed for
                // a config file's DR server with another port.
                let dr = matches!(fwd.unwrap_or('g'), 'g' | 'i');
                if c == 'a' && dr && !restore && !matches!(key, SvcKey::Fwmark { .. }) {
                    port = None;
                }
                let (u, l) = (upper.unwrap_or(0), lower.unwrap_or(0));
                if u != 0 && l != 0 && l > u {
                    return Err(format!("lower threshold {l} is above upper threshold {u}"));
                }
                Action::Edit(if c == 'a' {
                    Command::AddServer { key, addr, port, forward: fwd, weight, upper, lower, ext: None }
                } else {
                    Command::EditServer { key, addr, port, forward: fwd, weight, upper, lower }
                })
            }
            'd' => {
                let key = need_key(&key)?;
                let (addr, port) = need_real()?;
                Action::Edit(Command::DeleteServer { key, addr, port })
            }
            'L' => Action::List(lo),
            'Z' => Action::Zero(key),
            's' => {
                let (tcp, tcpfin, udp) = set.unwrap_or_default();
                Action::Edit(Command::SetTimeouts { tcp, tcpfin, udp })
            }
            _ => unreachable!(),
        },
    };
    Ok(Invocation { action, socket, json })
}

/// Split a rule line like a shell would for ipvsadm's `-R` (whitespace,
/// simple quotes).
fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parse ipvsadm-save text (`-R` input) into edit commands. Comments and
/// blank lines are skipped, except `# ferrovs-service` lines, which
/// attach to the next `-A`.
pub fn parse_rules(text: &str) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let mut pending: Option<ServiceExt> = None;
    let mut pending_server: Option<ServerExt> = None;
    // Services whose `# ferrovs-service` declared the forwarding method.
    let mut declared: Vec<(SvcKey, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("# ferrovs-service") {
            pending = Some(parse_ext(rest).map_err(|e| format!("line {}: {e}", n + 1))?);
            continue;
        }
        if let Some(rest) = l.strip_prefix("# ferrovs-server") {
            pending_server = Some(parse_server_ext(rest).map_err(|e| format!("line {}: {e}", n + 1))?);
            continue;
        }
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut words = split_words(l);
        if words.first().map(|w| w == "ipvsadm" || w == "ferrovsadm").unwrap_or(false) {
            words.remove(0);
        }
        let all_ports = pending.as_ref().is_some_and(|e| e.ports.as_deref() == Some("*"));
        let inv = parse_cmdline(&words, all_ports, true).map_err(|e| format!("line {}: {e}", n + 1))?;
        match inv.action {
            Action::Edit(mut c) => {
                attach_ext(&mut c, &mut pending, &mut pending_server, &mut declared);
                out.push(c);
            }
            _ => {
                return Err(format!(
                    "line {}: only edit commands (-A, -a, -E, -e, -D, -d, -C, --set) can be restored",
                    n + 1
                ))
            }
        }
    }
    Ok(out)
}

/// `one_packet` of a service of `proto` given `-o` (`ops`): UDP only (the config refuses it
/// on a TCP service; IPVS would keep the flag without effect).
fn one_packet(proto: Protocol, ops: bool) -> Result<bool, String> {
    if ops && proto != Protocol::Udp {
        return Err("one-packet scheduling (-o, --ops) applies to UDP services".into());
    }
    Ok(ops)
}

/// The `allow-from=` / `deny-from=` entries of a `# ferrovs-service` line or a control
/// socket command (checked further when the edited configuration is validated).
fn nets(what: &str, v: &[String]) -> Result<Vec<IpNet>, String> {
    v.iter().map(|s| s.parse::<IpNet>().map_err(|e| format!("bad {what} entry {s:?}: {e}"))).collect()
}

/// The names of `-b` / `--sched-flags FLAGS` (comma-separated, as ipvsadm's
/// `parse_sched_flags`); whether they apply to the scheduler is checked by [`apply`].
fn flag_list(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(|f| match f.trim() {
            "" => Err(format!("invalid scheduler flag list {v:?}")),
            f => Ok(f.to_string()),
        })
        .collect()
}

/// Options ipvsadm-save may print that ferrovs does not implement, and
/// whether each takes an argument: [`import_save`] skips them with a warning
/// (`ferrovsadm` itself refuses them).
const NOT_IMPORTED: &[(&str, bool)] = &[
    ("--pe", true),
    ("--tun-type", true),
    ("--tun-port", true),
    ("--tun-nocsum", false),
    ("--tun-csum", false),
    ("--tun-remcsum", false),
];

/// `ferrovs config import --from ipvsadm`: `ipvsadm-save` (or `ipvsadm -S`)
/// output read by the same parser as `ferrovsadm -R` and the control
/// socket ([`parse_args`]) and applied with the same edits ([`apply`]) to
/// an empty configuration. What ferrovs does not implement is skipped with
/// a warning; a firewall-mark service takes its VIP and ports from `marks`
/// (the iptables/nftables rules that set marks are not part of the LVS
/// configuration), else 0.0.0.0 and every port, with a warning. The
/// `# ferrovs-service` / `# ferrovs-server` comments of `ferrovsadm -S` are
/// read as `-R` reads them (so its services import whole). Errors name the
/// line (file `ipvsadm`).
pub fn import_save(text: &str, marks: &MarkMap) -> Result<Import, ConfigError> {
    const ORIGIN: &str = "ipvsadm";
    // A scratch configuration to apply the edits to; only its services are kept.
    let mut cfg = Config::from_str("[engine]\nbackend = \"memory\"\n", ORIGIN)?;
    let mut warnings = Vec::new();
    // `# ferrovs-service` / `# ferrovs-server` lines (`ferrovsadm -S` output), as `-R` reads them.
    let mut pending: Option<ServiceExt> = None;
    let mut pending_server: Option<ServerExt> = None;
    let mut declared: Vec<(SvcKey, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let err = |message: String| ConfigError { file: ORIGIN.into(), line: Some(n), column: None, message };
        let l = raw.trim();
        if let Some(rest) = l.strip_prefix("# ferrovs-service") {
            pending = Some(parse_ext(rest).map_err(err)?);
            continue;
        }
        if let Some(rest) = l.strip_prefix("# ferrovs-server") {
            pending_server = Some(parse_server_ext(rest).map_err(err)?);
            continue;
        }
        let mut words = split_words(raw.split('#').next().unwrap_or(""));
        if words.first().is_some_and(|w| w == "ipvsadm") {
            words.remove(0);
        }
        if words.is_empty() {
            continue;
        }
        let mut kept = Vec::with_capacity(words.len());
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            match NOT_IMPORTED.iter().find(|(o, _)| *o == w) {
                Some((_, takes_arg)) => {
                    let arg = if *takes_arg { it.next().unwrap_or_default() } else { String::new() };
                    warnings.push(format!("line {n}: option {w} {arg} is not supported, ignored"));
                }
                None => kept.push(w),
            }
        }
        let all_ports = pending.as_ref().is_some_and(|e| e.ports.as_deref() == Some("*"));
        let mut cmd = match parse_cmdline(&kept, all_ports, false).map_err(err)?.action {
            Action::Edit(c) => c,
            _ => return Err(err("not an ipvsadm-save line (-A, -a, -E, -e, -D, -d, -C or --set)".into())),
        };
        attach_ext(&mut cmd, &mut pending, &mut pending_server, &mut declared);
        // A flag IPVS keeps without effect (one for another scheduler, flag-3) is left out.
        if let Command::AddService { scheduler, sched_flags, .. } = &mut cmd {
            let sched = scheduler.as_deref().unwrap_or(ferrovs_sched::DEFAULT);
            sched_flags.retain(|f| match SchedFlags::parse(sched, [f.as_str()]) {
                Ok(_) => true,
                Err(e) => {
                    warnings.push(format!("line {n}: {e}, ignored"));
                    false
                }
            });
        }
        let declared_ftp = matches!(&cmd, Command::AddService { ext: Some(e), .. } if e.ftp.is_some());
        match &mut cmd {
            Command::SetTimeouts { .. } => {
                warnings.push(format!("line {n}: --set: timeouts are [engine.timeouts] settings, not imported"));
                continue;
            }
            // `ferrovsadm -S` said where the mark points.
            Command::AddService { key: SvcKey::Fwmark { .. }, ext: Some(e), .. }
                if e.vip.is_some() && e.ports.is_some() => {}
            Command::AddService { key: SvcKey::Fwmark { mark, v6 }, ext, .. } => {
                let (vip, ports) = match marks.get(&(*mark, *v6)) {
                    Some((vip, ports)) => (*vip, ports.clone()),
                    None => {
                        let vip = if *v6 { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
                        warnings.push(format!(
                            "line {n}: firewall mark {mark}: the addresses and ports it selects are set by \
                             iptables/nftables rules, not by ipvsadm; imported with vip {vip} and all ports: set vip \
                             and ports by hand (or give the rules: --marks)"
                        ));
                        (vip, Vec::new())
                    }
                };
                warnings.push(format!(
                    "line {n}: firewall mark {mark}: a mark may select TCP and UDP; imported as protocol tcp"
                ));
                let e = ext.get_or_insert_with(Default::default);
                (e.vip, e.ports) = (Some(vip), Some(fmt_ports(&ports)));
            }
            _ => {}
        }
        apply(&mut cfg, &cmd).map_err(err)?;
        if let Command::AddService { .. } = cmd {
            let s = cfg.services.last().expect("apply added the service");
            if s.ftp.is_some() && !declared_ftp {
                warnings.push(format!(
                    "line {n}: service {:?}: TCP port 21 (ip_vs_ftp): enabled the FTP helper (ftp = true)",
                    s.name
                ));
            }
        }
    }
    Ok(Import { services: cfg.services, warnings })
}

/// Attach the pending `# ferrovs-service` / `# ferrovs-server` fields to the `-A` / `-a`
/// they precede; a server of a service that declared its forwarding method carries it.
fn attach_ext(
    c: &mut Command,
    pending: &mut Option<ServiceExt>,
    pending_server: &mut Option<ServerExt>,
    declared: &mut Vec<(SvcKey, String)>,
) {
    match c {
        Command::AddService { key, ext, .. } => {
            *ext = pending.take().map(Box::new);
            declared.retain(|(k, _)| k != key);
            if let Some(f) = ext.as_ref().and_then(|e| e.forward.clone()) {
                declared.push((key.clone(), f));
            }
        }
        Command::AddServer { key, ext, .. } => {
            let mut e = pending_server.take().unwrap_or_default();
            e.service_forward = declared.iter().find(|(k, _)| k == key).map(|(_, f)| f.clone());
            *ext = (e != ServerExt::default()).then_some(e);
        }
        _ => {}
    }
}

/// `%XX`-encode what would end a comment field or a word (and every non-ASCII byte), so any
/// string survives `-S` / `-R`.
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !b"%\"'#,=".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// The inverse of [`enc`].
fn dec(what: &str, s: &str) -> Result<String, String> {
    let bad = || format!("bad {what} {s:?} (%XX escapes of UTF-8)");
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(bad)?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn num<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad {what} {v:?}"))
}

/// Seconds of a health check: a finite, non-negative number (the validator holds it to its
/// range).
fn seconds(what: &str, v: &str) -> Result<f64, String> {
    HealthCheck::parse_secs(v).ok_or_else(|| format!("bad {what} {v:?} (seconds)"))
}

/// The `check*` words of a `# ferrovs-service` or `# ferrovs-server` comment: a server's or
/// service's health checks. A `check-*` field belongs to the last check; a `check=` gives
/// the last check its kind, or begins the next one if it has its kind: so a single check's
/// `check=` may stand anywhere among its fields. `check=none` (a server's only): no check.
#[derive(Default)]
struct CheckWords {
    /// The last check (`kind_given`: its `check=` seen), and those before it.
    check: Option<HealthCheck>,
    kind_given: bool,
    done: Vec<HealthCheck>,
    none: bool,
}

impl CheckWords {
    /// Takes `w` if it is a `check*` word (true).
    fn take(&mut self, w: &str) -> Result<bool, String> {
        if !w.starts_with("check") {
            return Ok(false);
        }
        if w == "check=none" {
            self.none = true;
            return Ok(true);
        }
        let check = self.check.get_or_insert_with(|| HealthCheck::new(HealthCheckKind::Tcp));
        match w.split_once('=') {
            Some(("check", v)) => {
                let kind = HealthCheckKind::named(v).ok_or_else(|| {
                    format!("bad check {v:?} ({})", HealthCheckKind::ALL.map(|k| k.name()).join(", "))
                })?;
                if self.kind_given {
                    if self.done.len() + 1 >= HealthCheck::MAX_PER_SERVICE {
                        return Err(format!("more than {} checks", HealthCheck::MAX_PER_SERVICE));
                    }
                    self.done.push(std::mem::replace(check, HealthCheck::new(kind)));
                } else {
                    check.kind = kind;
                    self.kind_given = true;
                }
            }
            Some(("check-port", v)) => check.port = Some(num("check-port", v)?),
            Some(("check-address", v)) => check.address = Some(num("check-address", v)?),
            Some(("check-source", v)) => check.source = Some(num("check-source", v)?),
            Some(("check-send", v)) => check.send = Some(dec("check-send", v)?),
            Some(("check-expect", v)) => check.expect = Some(dec("check-expect", v)?),
            Some(("check-path", v)) => check.path = Some(dec("check-path", v)?),
            Some(("check-host", v)) => check.host = Some(dec("check-host", v)?),
            Some(("check-status", v)) => check.status = Some(num("check-status", v)?),
            Some(("check-tls-ca", v)) => check.tls_ca = Some(dec("check-tls-ca", v)?),
            Some(("check-digest", v)) => check.digest = Some(dec("check-digest", v)?),
            Some(("check-query-name", v)) => check.query_name = Some(dec("check-query-name", v)?),
            Some(("check-query-type", v)) => check.query_type = Some(dec("check-query-type", v)?),
            Some(("check-payload", v)) => check.payload = Some(dec("check-payload", v)?),
            Some(("check-helo-name", v)) => check.helo_name = Some(dec("check-helo-name", v)?),
            Some(("check-reply", v)) => {
                check.reply = Some(dec("check-reply", v)?);
                check.require_reply = true;
            }
            Some(("check-min-reply-length", v)) => {
                check.min_reply_length = Some(num("check-min-reply-length", v)?);
                check.require_reply = true;
            }
            Some(("check-max-reply-length", v)) => {
                check.max_reply_length = Some(num("check-max-reply-length", v)?);
                check.require_reply = true;
            }
            Some(("check-command", v)) => {
                check.command = v.split(',').map(|a| dec("check-command", a)).collect::<Result<_, _>>()?;
            }
            Some(("check-user", v)) => check.user = Some(dec("check-user", v)?),
            Some(("check-interval", v)) => check.interval = seconds("check-interval", v)?,
            Some(("check-retry-interval", v)) => check.retry_interval = Some(seconds("check-retry-interval", v)?),
            Some(("check-timeout", v)) => check.timeout = seconds("check-timeout", v)?,
            Some(("check-rise", v)) => check.rise = num("check-rise", v)?,
            Some(("check-fall", v)) => check.fall = num("check-fall", v)?,
            None if w == "check-remove" => check.quiesce = false,
            None if w == "check-start-down" => check.start_down = true,
            None if w == "check-require-reply" => check.require_reply = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The checks the words gave: `None` without any `check*` word, `Some` of none for
    /// `check=none`.
    fn finish(self) -> Result<Option<Vec<HealthCheck>>, String> {
        match self.check {
            Some(_) if self.none => Err("check=none with other check fields".into()),
            None if self.none => Ok(Some(Vec::new())),
            None => Ok(None),
            Some(_) if !self.kind_given => Err("check-* fields without check=TYPE".into()),
            Some(c) => {
                let mut all = self.done;
                all.push(c);
                Ok(Some(all))
            }
        }
    }
}

/// Write `checks` as `check*` words (see [`CheckWords`]): each from its `check=` on.
fn write_checks(out: &mut String, checks: &[HealthCheck]) {
    for h in checks {
        let _ = write!(out, " check={}", h.kind.name());
        if let Some(p) = h.port {
            let _ = write!(out, " check-port={p}");
        }
        if let Some(a) = h.address {
            let _ = write!(out, " check-address={a}");
        }
        if let Some(a) = h.source {
            let _ = write!(out, " check-source={a}");
        }
        for (k, v) in [("send", &h.send), ("expect", &h.expect), ("path", &h.path), ("host", &h.host)] {
            if let Some(v) = v {
                let _ = write!(out, " check-{k}={}", enc(v));
            }
        }
        if let Some(st) = h.status {
            let _ = write!(out, " check-status={st}");
        }
        let more = [
            ("digest", &h.digest),
            ("tls-ca", &h.tls_ca),
            ("query-name", &h.query_name),
            ("query-type", &h.query_type),
            ("payload", &h.payload),
            ("reply", &h.reply),
            ("helo-name", &h.helo_name),
        ];
        for (k, v) in more {
            if let Some(v) = v {
                let _ = write!(out, " check-{k}={}", enc(v));
            }
        }
        if let Some(n) = h.min_reply_length {
            let _ = write!(out, " check-min-reply-length={n}");
        }
        if let Some(n) = h.max_reply_length {
            let _ = write!(out, " check-max-reply-length={n}");
        }
        // `reply` and the lengths imply it (and the config's validation sets it then).
        if h.require_reply && h.reply.is_none() && h.min_reply_length.is_none() && h.max_reply_length.is_none() {
            out.push_str(" check-require-reply");
        }
        if !h.command.is_empty() {
            let c: Vec<String> = h.command.iter().map(|a| enc(a)).collect();
            let _ = write!(out, " check-command={}", c.join(","));
        }
        if let Some(u) = &h.user {
            let _ = write!(out, " check-user={}", enc(u));
        }
        // f64's Display is the shortest text that parses back to the same number.
        let _ = write!(out, " check-interval={}", h.interval);
        if let Some(r) = h.retry_interval {
            let _ = write!(out, " check-retry-interval={r}");
        }
        let _ = write!(out, " check-timeout={} check-rise={} check-fall={}", h.timeout, h.rise, h.fall);
        if !h.quiesce {
            out.push_str(" check-remove");
        }
        if h.start_down {
            out.push_str(" check-start-down");
        }
    }
}

fn parse_ext(s: &str) -> Result<ServiceExt, String> {
    let mut e = ServiceExt::default();
    let mut checks = CheckWords::default();
    let mut notify: Option<Notify> = None;
    let args = |what: &str, v: &str| v.split(',').map(|a| dec(what, a)).collect::<Result<Vec<_>, _>>();
    for w in split_words(s) {
        if checks.take(&w)? {
            continue;
        }
        match w.split_once('=') {
            Some(("proto", v)) => e.proto = Some(v.to_string()),
            Some(("vip", v)) => e.vip = Some(v.parse().map_err(|_| format!("bad vip {v:?}"))?),
            Some(("ports", v)) => e.ports = Some(v.to_string()),
            Some(("fwmark", v)) => e.fwmark = Some(v.parse().map_err(|_| format!("bad fwmark {v:?}"))?),
            Some(("ftp", v)) => e.ftp = Some(v.to_string()),
            Some(("ftp-pinhole", v)) => e.ftp_pinhole = Some(v.parse().map_err(|_| format!("bad ftp-pinhole {v:?}"))?),
            Some(("ftp-max-expectations", v)) => e.ftp_max_expectations = Some(num("ftp-max-expectations", v)?),
            Some(("name", v)) => e.name = Some(dec("name", v)?),
            Some(("forward", v)) => {
                forward_named(v)?;
                e.forward = Some(v.to_string());
            }
            Some(("syn-proxy", v)) => match v {
                "on" | "off" | "auto" => e.syn_proxy = Some(v.to_string()),
                _ => return Err(format!("bad syn-proxy {v:?} (on, off or auto)")),
            },
            Some(("local", v)) => {
                e.local = v.split(',').map(|a| num("local address", a)).collect::<Result<_, _>>()?;
            }
            Some(("sorry", v)) => {
                let (a, p) = split_addr(v).ok_or_else(|| format!("bad sorry server {v:?} (ADDR, ADDR:PORT)"))?;
                e.sorry = Some(a);
                e.sorry_port = p;
            }
            Some(("quorum", v)) => e.quorum = Some(num("quorum", v)?),
            Some(("hysteresis", v)) => e.hysteresis = Some(num("hysteresis", v)?),
            Some(("allow-from", v)) => e.allow_from = v.split(',').map(str::to_string).collect(),
            Some(("deny-from", v)) => e.deny_from = v.split(',').map(str::to_string).collect(),
            // RATE or RATE/BURST.
            Some(("source-conn-rate", v)) => {
                let (r, b) = v.split_once('/').map_or((v, None), |(r, b)| (r, Some(b)));
                e.source_conn_rate = Some(num("source-conn-rate", r)?);
                e.source_conn_burst = b.map(|b| num("source-conn-rate burst", b)).transpose()?;
            }
            Some(("notify-up", v)) => notify.get_or_insert_with(Notify::new).up = args("notify-up", v)?,
            Some(("notify-down", v)) => notify.get_or_insert_with(Notify::new).down = args("notify-down", v)?,
            Some(("notify-quorum-up", v)) => {
                notify.get_or_insert_with(Notify::new).quorum_up = args("notify-quorum-up", v)?;
            }
            Some(("notify-quorum-down", v)) => {
                notify.get_or_insert_with(Notify::new).quorum_down = args("notify-quorum-down", v)?;
            }
            Some(("notify-user", v)) => notify.get_or_insert_with(Notify::new).user = Some(dec("notify-user", v)?),
            Some(("notify-timeout", v)) => {
                notify.get_or_insert_with(Notify::new).timeout = seconds("notify-timeout", v)?
            }
            None if w == "ftp-foreign" => e.ftp_foreign = true,
            None if w == "ftp-low-ports" => e.ftp_low_ports = true,
            _ => return Err(format!("unknown ferrovs-service field {w:?}")),
        }
    }
    if let Some(all) = checks.finish()? {
        let mut all = all.into_iter();
        e.check = all.next();
        e.more_checks = all.collect();
    }
    e.notify = notify;
    Ok(e)
}

fn parse_server_ext(s: &str) -> Result<ServerExt, String> {
    let mut e = ServerExt::default();
    let mut checks = CheckWords::default();
    for w in split_words(s) {
        if checks.take(&w)? {
            continue;
        }
        match w.split_once('=') {
            Some(("proxy", v @ ("v1" | "v2"))) => e.proxy = Some(v.to_string()),
            Some(("proxy", v)) => return Err(format!("bad proxy {v:?} (v1 or v2)")),
            _ => return Err(format!("unknown ferrovs-server field {w:?}")),
        }
    }
    e.checks = checks.finish()?;
    Ok(e)
}

fn forward_named(v: &str) -> Result<Forward, String> {
    match v {
        "nat" => Ok(Forward::Nat),
        "dr" => Ok(Forward::Dr),
        "tunnel" => Ok(Forward::Tunnel),
        "fnat" => Ok(Forward::Fnat),
        _ => Err(format!("bad forward {v:?} (nat, dr, tunnel or fnat)")),
    }
}

fn forward_word(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "nat",
        Forward::Dr => "dr",
        Forward::Tunnel => "tunnel",
        Forward::Fnat => "fnat",
    }
}

fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s == "*" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(lo), Ok(hi)) if lo >= 1 && lo <= hi => Ok(PortRange { lo, hi }),
                _ => Err(format!("bad port range {p:?}")),
            }
        })
        .collect()
}

fn fmt_ports(p: &[PortRange]) -> String {
    if p.is_empty() {
        return "*".into();
    }
    p.iter()
        .map(|r| if r.lo == r.hi { r.lo.to_string() } else { format!("{}-{}", r.lo, r.hi) })
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Applying edits to a config.

fn proto_of(k: &SvcKey) -> Option<Protocol> {
    match k {
        SvcKey::Tcp { .. } => Some(Protocol::Tcp),
        SvcKey::Udp { .. } => Some(Protocol::Udp),
        SvcKey::Fwmark { .. } => None,
    }
}

/// Index of the service a key names.
pub fn find_service(cfg: &Config, key: &SvcKey) -> Option<usize> {
    match key {
        // IPVS keys a mark service by family and mark: `-f 5` and `-f 5 -6` are two services.
        SvcKey::Fwmark { mark, v6 } => {
            cfg.services.iter().position(|s| s.fwmark == Some(*mark) && s.vip.is_ipv6() == *v6)
        }
        SvcKey::Tcp { vip, port } | SvcKey::Udp { vip, port } => {
            let proto = proto_of(key);
            let m = |s: &Service| Some(s.protocol) == proto && s.vip == *vip;
            // An exact single-port service first, then a port group.
            cfg.services
                .iter()
                .position(|s| m(s) && s.ports.len() == 1 && s.ports[0].lo == *port && s.ports[0].hi == *port)
                .or_else(|| cfg.services.iter().position(|s| m(s) && !s.ports.is_empty() && s.has_port(*port)))
                .or_else(|| cfg.services.iter().position(|s| m(s) && s.ports.is_empty()))
        }
    }
}

/// The port ipvsadm shows for a real server of `svc`.
pub fn shown_port(svc: &Service, rs_port: Option<u16>) -> u16 {
    rs_port.unwrap_or(match svc.ports.as_slice() {
        [r] if r.lo == r.hi => r.lo,
        _ => 0,
    })
}

/// The port ipvsadm shows for a service.
pub fn service_port(svc: &Service) -> u16 {
    svc.ports.first().map(|r| r.lo).unwrap_or(0)
}

/// The real server `-r ADDR[:PORT]` names; without a port, ipvsadm's
/// default: the service port.
fn find_server(svc: &Service, addr: IpAddr, port: Option<u16>) -> Option<usize> {
    let want = shown_port(svc, port);
    svc.real_servers.iter().position(|r| r.address == addr && shown_port(svc, r.port) == want)
}

fn forward_of(c: char) -> Forward {
    match c {
        'm' => Forward::Nat,
        'i' => Forward::Tunnel,
        'b' => Forward::Fnat,
        _ => Forward::Dr,
    }
}

fn persistence(vip: IpAddr, t: Option<u32>, mask: &Option<String>) -> Result<Option<Persistence>, String> {
    let Some(timeout) = t else { return Ok(None) };
    let max = if vip.is_ipv4() { 32 } else { 128 };
    let netmask = match mask {
        None => max,
        Some(m) => {
            if let Ok(p) = m.parse::<u8>() {
                // ipvsadm: an IPv6 prefix 1..128 (IPv4 /0, 0.0.0.0, is one template for all).
                if p == 0 && !vip.is_ipv4() {
                    return Err(format!("illegal ipv6 netmask specified: /{p} for {vip} (1..128)"));
                }
                if p > max {
                    return Err(format!("illegal netmask /{p} for {vip}"));
                }
                p
            } else {
                let d: Ipv4Addr = m.parse().map_err(|_| format!("illegal netmask {m:?}"))?;
                if !vip.is_ipv4() {
                    return Err("a dotted netmask needs an IPv4 service; give a prefix length".into());
                }
                let v = u32::from(d);
                if v.leading_ones() + v.trailing_zeros() != 32 {
                    return Err(format!("netmask {m} is not contiguous"));
                }
                v.leading_ones() as u8
            }
        }
    };
    Ok(Some(Persistence { timeout, netmask }))
}

fn default_name(p: Protocol, vip: IpAddr, port: u16) -> String {
    format!("{}-{}-{}", if p == Protocol::Tcp { "tcp" } else { "udp" }, vip, port)
}

/// Apply one edit to `cfg` (not validated: the caller validates the
/// result as a whole).
pub fn apply(cfg: &mut Config, cmd: &Command) -> Result<(), String> {
    // Mark 0 is no mark (ipvsadm's parse_fwmark): the control socket takes commands as JSON,
    // so the command-line parser's check is repeated here.
    if let Command::AddService { key, .. }
    | Command::EditService { key, .. }
    | Command::DeleteService { key }
    | Command::AddServer { key, .. }
    | Command::EditServer { key, .. }
    | Command::DeleteServer { key, .. } = cmd
    {
        if matches!(key, SvcKey::Fwmark { mark: 0, .. }) {
            return Err("invalid fwmark value \"0\" specified".into());
        }
    }
    match cmd {
        Command::Clear => cfg.services.clear(),
        Command::SetTimeouts { tcp, tcpfin, udp } => {
            let t = &mut cfg.engine.timeouts;
            if *tcp != 0 {
                t.tcp_established = *tcp;
            }
            if *tcpfin != 0 {
                t.tcp_fin_wait = *tcpfin;
            }
            if *udp != 0 {
                t.udp = *udp;
            }
        }
        Command::AddService { key, scheduler, persistent, netmask, ops, sched_flags, ext } => {
            let ext = ext.as_deref().cloned().unwrap_or_default();
            if let Some(i) = find_service(cfg, key) {
                // A port-group declared by `# ferrovs-service` may only
                // collide with itself.
                return Err(format!("service {} already exists (as {:?})", key.describe(), cfg.services[i].name));
            }
            let (proto, vip, ports, fwmark) = match key {
                SvcKey::Tcp { vip, port } | SvcKey::Udp { vip, port } => {
                    let p = proto_of(key).unwrap();
                    let ports = match &ext.ports {
                        Some(s) => parse_ports(s)?,
                        // ipvsadm's port 0: every port.
                        None if *port == 0 => Vec::new(),
                        None => vec![PortRange { lo: *port, hi: *port }],
                    };
                    (p, *vip, ports, ext.fwmark)
                }
                SvcKey::Fwmark { mark, v6 } => {
                    let (Some(vip), Some(ports)) = (ext.vip, &ext.ports) else {
                        return Err(format!(
                            "no service with fwmark {mark}: ferrovs has no iptables marks; declare the port group in \
                             the config ([[service]] with fwmark = {mark}, vip and ports), then -A/-E -f {mark} edits it"
                        ));
                    };
                    if vip.is_ipv6() != *v6 {
                        return Err(format!(
                            "fwmark {mark}: vip {vip} is not {} (-6 names an IPv6 mark service)",
                            if *v6 { "IPv6" } else { "IPv4" }
                        ));
                    }
                    let proto = match ext.proto.as_deref() {
                        Some("udp") => Protocol::Udp,
                        _ => Protocol::Tcp,
                    };
                    (proto, vip, parse_ports(ports)?, Some(*mark))
                }
            };
            let name = ext.name.clone().unwrap_or_else(|| match fwmark {
                Some(m) => ferrovs_cfg::import::fwmark_name(m, vip.is_ipv6()),
                None => default_name(proto, vip, ports.first().map(|r| r.lo).unwrap_or(0)),
            });
            if cfg.services.iter().any(|s| s.name == name) {
                return Err(format!("a service named {name:?} already exists"));
            }
            let ftp = match ext.ftp.as_deref() {
                Some("none") => None,
                Some(list) => {
                    let control_ports = list
                        .split(',')
                        .map(|p| p.parse::<u16>().map_err(|_| format!("bad ftp control port {p:?}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(FtpOptions {
                        control_ports,
                        allow_foreign_port_address: ext.ftp_foreign,
                        pinhole_timeout: ext.ftp_pinhole.unwrap_or(60),
                        max_expectations: ext.ftp_max_expectations.unwrap_or(FtpOptions::default().max_expectations),
                        allow_low_data_ports: ext.ftp_low_ports,
                    })
                }
                None => {
                    let covers21 = ports.iter().any(|r| r.contains(21));
                    (proto == Protocol::Tcp && covers21).then(FtpOptions::default)
                }
            };
            let syn_proxy = match ext.syn_proxy.as_deref() {
                None | Some("auto") => SynProxy::Auto,
                Some("on") => SynProxy::On,
                Some("off") => SynProxy::Off,
                Some(v) => return Err(format!("bad syn-proxy {v:?} (on, off or auto)")),
            };
            let scheduler = scheduler.clone().unwrap_or_else(|| ferrovs_sched::DEFAULT.into());
            let sched_flags = SchedFlags::parse(&scheduler, sched_flags.iter().map(String::as_str))?;
            cfg.services.push(Service {
                name,
                vip,
                protocol: proto,
                ports,
                scheduler,
                sched_flags,
                forward: ext.forward.as_deref().map(forward_named).transpose()?.unwrap_or(Forward::Dr),
                persistence: persistence(vip, *persistent, netmask)?,
                ftp,
                fwmark,
                real_servers: Vec::new(),
                health_checks: ext.check.iter().chain(&ext.more_checks).cloned().collect(),
                syn_proxy,
                one_packet: one_packet(proto, *ops)?,
                local_addresses: ext.local.clone(),
                allow_from: nets("allow-from", &ext.allow_from)?,
                deny_from: nets("deny-from", &ext.deny_from)?,
                source_conn_rate: ext.source_conn_rate.unwrap_or(0),
                source_conn_burst: ext.source_conn_burst.or(ext.source_conn_rate).unwrap_or(0),
                sorry_server: ext.sorry.map(|address| SorryServer { address, port: ext.sorry_port }),
                quorum: ext.quorum.unwrap_or(1),
                hysteresis: ext.hysteresis.unwrap_or(0),
                notify: ext.notify.clone(),
            });
        }
        Command::EditService { key, scheduler, persistent, netmask, ops, sched_flags } => {
            let i = find_service(cfg, key).ok_or_else(|| no_such_service(key))?;
            let s = &mut cfg.services[i];
            if let Some(x) = scheduler {
                s.scheduler = x.clone();
            }
            // As ipvsadm -E: the flags are what this command says.
            s.sched_flags = SchedFlags::parse(&s.scheduler, sched_flags.iter().map(String::as_str))?;
            s.persistence = persistence(s.vip, *persistent, netmask)?;
            // As ipvsadm -E: the flag is what this command says.
            s.one_packet = one_packet(s.protocol, *ops)?;
        }
        Command::DeleteService { key } => {
            let i = find_service(cfg, key).ok_or_else(|| no_such_service(key))?;
            cfg.services.remove(i);
        }
        Command::AddServer { key, addr, port, forward, weight, upper, lower, ext } => {
            let i = find_service(cfg, key).ok_or_else(|| no_such_service(key))?;
            let s = &mut cfg.services[i];
            let ext = ext.clone().unwrap_or_default();
            let fwd = forward_of(forward.unwrap_or('g'));
            // Full NAT: the local addresses face the real server and carry its family, which
            // may differ from the VIP's.
            let family = s.local_addresses.first().filter(|_| fwd == Forward::Fnat).copied().unwrap_or(s.vip);
            if addr.is_ipv4() != family.is_ipv4() {
                return Err(format!("real server {addr} is not in the address family of the service"));
            }
            let p = shown_port(s, port.filter(|p| *p != 0));
            if s.real_servers.iter().any(|r| r.address == *addr && shown_port(s, r.port) == p) {
                return Err(format!("destination {} already exists", addrport(*addr, p)));
            }
            let proxy_protocol = match ext.proxy.as_deref() {
                None => None,
                Some("v1") => Some(ProxyProtocol::V1),
                Some("v2") => Some(ProxyProtocol::V2),
                Some(v) => return Err(format!("bad proxy {v:?} (v1 or v2)")),
            };
            if let Some(f) = ext.service_forward.as_deref() {
                s.forward = forward_named(f)?;
            } else if s.real_servers.is_empty() {
                s.forward = fwd;
            }
            let rs_forward = (fwd != s.forward).then_some(fwd);
            s.real_servers.push(RealServer {
                address: *addr,
                port: port.filter(|p| *p != 0),
                weight: weight.unwrap_or(1),
                upper: upper.unwrap_or(0),
                lower: lower.unwrap_or(0),
                forward: rs_forward,
                proxy_protocol,
                health_checks: ext.checks.clone(),
            });
        }
        Command::EditServer { key, addr, port, forward, weight, upper, lower } => {
            let i = find_service(cfg, key).ok_or_else(|| no_such_service(key))?;
            let s = &mut cfg.services[i];
            let j = find_server(s, *addr, port.filter(|p| *p != 0))
                .ok_or_else(|| format!("no such destination {} in service {}", addr, key.describe()))?;
            let svc_fwd = s.forward;
            let only = s.real_servers.len() == 1;
            let r = &mut s.real_servers[j];
            if let Some(w) = weight {
                r.weight = *w;
            }
            if let Some(u) = upper {
                r.upper = *u;
            }
            if let Some(l) = lower {
                r.lower = *l;
            }
            if let Some(f) = forward {
                let f = forward_of(*f);
                if only {
                    r.forward = None;
                    s.forward = f;
                } else {
                    r.forward = (f != svc_fwd).then_some(f);
                }
            }
        }
        Command::DeleteServer { key, addr, port } => {
            let i = find_service(cfg, key).ok_or_else(|| no_such_service(key))?;
            let s = &mut cfg.services[i];
            let j = find_server(s, *addr, port.filter(|p| *p != 0))
                .ok_or_else(|| format!("no such destination {} in service {}", addr, key.describe()))?;
            s.real_servers.remove(j);
        }
    }
    Ok(())
}

pub(crate) fn no_such_service(k: &SvcKey) -> String {
    match k {
        SvcKey::Fwmark { mark, v6 } => {
            let fam = if *v6 { " IPv6" } else { "" };
            format!("no{fam} service with fwmark {mark} (declare the port group in the config with fwmark = {mark})")
        }
        _ => format!("no such service {}", k.describe()),
    }
}

// ---------------------------------------------------------------------------
// Listing data (what the daemon sends, what `-L` prints).

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestView {
    pub addr: IpAddr,
    /// Port as ipvsadm shows it (0: the client's port).
    pub port: u16,
    /// `Masq`, `Route` or `Tunnel`.
    pub forward: String,
    /// Weight in use (0 while a health check holds it quiescent).
    pub weight: u32,
    /// Weight in the configuration.
    pub config_weight: u32,
    pub upper: u32,
    pub lower: u32,
    pub active: u32,
    pub inactive: u32,
    /// `up`, `down` or absent (no health check).
    pub health: Option<String>,
    pub stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    /// `TCP` or `UDP`.
    pub proto: String,
    pub vip: IpAddr,
    /// First port (0: every port).
    pub port: u16,
    /// `21,10000-10100` or `*`.
    pub ports: String,
    pub fwmark: Option<u32>,
    pub scheduler: String,
    pub persistent: Option<u32>,
    pub netmask: u8,
    /// One-packet scheduling.
    #[serde(default)]
    pub ops: bool,
    /// Scheduler flags by name (`sh-fallback`, `mh-port`, ...).
    #[serde(default)]
    pub sched_flags: Vec<String>,
    pub ftp: bool,
    pub dests: Vec<DestView>,
    pub stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListData {
    pub size: u32,
    pub services: Vec<ServiceView>,
    /// tcp, tcpfin, udp.
    pub timeouts: [u32; 3],
}

fn fwd_name(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "Masq",
        Forward::Dr => "Route",
        Forward::Tunnel => "Tunnel",
        Forward::Fnat => "FullNat",
    }
}

fn fwd_switch(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "-m",
        Forward::Dr => "-g",
        Forward::Tunnel => "-i",
        // The long form: on a service line `-b` is ipvsadm's --sched-flags (with an
        // argument); DPVS's short `-b` on a server line is accepted on input.
        Forward::Fnat => "--fullnat",
    }
}

/// The listing of a config without any traffic (counters zero).
pub fn list_of_config(cfg: &Config) -> ListData {
    ListData {
        size: CONN_TAB_SIZE,
        services: cfg
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.name.clone(),
                proto: if s.protocol == Protocol::Tcp { "TCP" } else { "UDP" }.into(),
                vip: s.vip,
                port: service_port(s),
                ports: fmt_ports(&s.ports),
                fwmark: s.fwmark,
                scheduler: s.scheduler.clone(),
                persistent: s.persistence.map(|p| p.timeout),
                netmask: s.persistence.map(|p| p.netmask).unwrap_or(if s.vip.is_ipv4() { 32 } else { 128 }),
                ops: s.one_packet,
                sched_flags: s.sched_flags.names(&s.scheduler),
                ftp: s.ftp.is_some(),
                dests: s
                    .real_servers
                    .iter()
                    .map(|r| DestView {
                        addr: r.address,
                        port: shown_port(s, r.port),
                        forward: fwd_name(r.forward.unwrap_or(s.forward)).into(),
                        weight: r.weight,
                        config_weight: r.weight,
                        upper: r.upper,
                        lower: r.lower,
                        active: 0,
                        inactive: 0,
                        health: None,
                        stats: Stats::default(),
                    })
                    .collect(),
                stats: Stats::default(),
            })
            .collect(),
        timeouts: [cfg.engine.timeouts.tcp_established, cfg.engine.timeouts.tcp_fin_wait, cfg.engine.timeouts.udp],
    }
}

/// `ADDR:PORT` or `[V6]:PORT`.
pub fn addrport(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

fn mask_dotted(prefix: u8) -> String {
    let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
    Ipv4Addr::from(m).to_string()
}

fn af(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        2
    } else {
        10
    }
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// ipvsadm's order: by fwmark (none first), family, protocol, address, port.
fn sorted_services(d: &ListData) -> Vec<ServiceView> {
    let mut v = d.services.clone();
    v.sort_by(|a, b| {
        let k = |s: &ServiceView| {
            (s.fwmark.unwrap_or(0), af(&s.vip), if s.proto == "TCP" { 6 } else { 17 }, ip_bytes(&s.vip), s.port)
        };
        k(a).cmp(&k(b))
    });
    for s in &mut v {
        s.dests.sort_by_key(|d| (ip_bytes(&d.addr), d.port));
    }
    v
}

fn svc_name(s: &ServiceView) -> String {
    if let Some(m) = s.fwmark {
        return if s.vip.is_ipv4() { format!("FWM  {m}") } else { format!("FWM  {m} IPv6") };
    }
    let mut n = format!("{}  {}", s.proto, addrport(s.vip, s.port));
    if s.vip.is_ipv4() {
        n.truncate(33);
    }
    n
}

fn dest_name(s: &ServiceView, d: &DestView) -> String {
    let mut n = addrport(d.addr, d.port);
    if s.vip.is_ipv4() {
        n.truncate(28);
    }
    n
}

fn largenum(o: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(o, "{i:>w$}");
    } else if i < 100_000_000 {
        let _ = write!(o, "{i:>9}");
    } else if i < 1_000_000_000 {
        let _ = write!(o, "{:>8}K", i / 1000);
    } else if i < 100_000_000_000 {
        let _ = write!(o, "{:>8}M", i / 1_000_000);
    } else if i < 100_000_000_000_000 {
        let _ = write!(o, "{:>8}G", i / 1_000_000_000);
    } else {
        let _ = write!(o, "{:>8}T", i / 1_000_000_000_000);
    }
}

/// `ipvsadm -L` output (without `-c`, see [`format_conns`]).
pub fn format_list(d: &ListData, o: &ListOpts) -> String {
    let mut out = String::new();
    if o.timeout {
        let _ = writeln!(out, "Timeout (tcp tcpfin udp): {} {} {}", d.timeouts[0], d.timeouts[1], d.timeouts[2]);
        return out;
    }
    let _ = writeln!(out, "IP Virtual Server version {IPVS_VERSION} (size={})", d.size);
    let title = "Prot LocalAddress:Port";
    if o.stats {
        let _ = writeln!(
            out,
            "{title:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
        out.push_str("  -> RemoteAddress:Port\n");
    } else if o.rate {
        let _ = writeln!(out, "{title:<33} {:>8} {:>8} {:>8} {:>8} {:>8}", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS");
        out.push_str("  -> RemoteAddress:Port\n");
    } else if o.thresholds {
        let _ = writeln!(
            out,
            "{title:<33} {:<10} {:<10} {:<10} {:<10}",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
        out.push_str("  -> RemoteAddress:Port\n");
    } else if o.persistent_conn {
        let _ =
            writeln!(out, "{title:<33} {:<9} {:<11} {:<10} {:<10}", "Weight", "PersistConn", "ActiveConn", "InActConn");
        out.push_str("  -> RemoteAddress:Port\n");
    } else {
        out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
        out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    }
    let svcs = if o.sort { sorted_services(d) } else { d.services.clone() };
    for s in svcs.iter().filter(|s| o.service.as_ref().is_none_or(|k| view_matches(s, k))) {
        let name = svc_name(s);
        let st = &s.stats;
        if o.stats {
            let _ = write!(out, "{name:<33}");
            for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
                largenum(&mut out, v, o.exact);
            }
        } else if o.rate {
            let _ = write!(out, "{name:<33}");
            for v in [st.cps, st.inpps, st.outpps, st.inbps, st.outbps] {
                largenum(&mut out, v, o.exact);
            }
        } else {
            let _ = write!(out, "{name} {}", s.scheduler);
            if !s.sched_flags.is_empty() {
                let _ = write!(out, " ({})", s.sched_flags.join(","));
            }
            if let Some(t) = s.persistent {
                let _ = write!(out, " persistent {t}");
                if s.vip.is_ipv4() && s.netmask != 32 {
                    let _ = write!(out, " mask {}", mask_dotted(s.netmask));
                } else if !s.vip.is_ipv4() && s.netmask != 128 {
                    let _ = write!(out, " mask {}", s.netmask);
                }
            }
            if s.ops {
                out.push_str(" ops");
            }
        }
        out.push('\n');
        for dv in &s.dests {
            let dn = dest_name(s, dv);
            let ds = &dv.stats;
            if o.stats {
                let _ = write!(out, "  -> {dn:<28}");
                for v in [ds.conns, ds.inpkts, ds.outpkts, ds.inbytes, ds.outbytes] {
                    largenum(&mut out, v, o.exact);
                }
                out.push('\n');
            } else if o.rate {
                let _ = write!(out, "  -> {dn:<28} {:>8} {:>8} {:>8}", ds.cps, ds.inpps, ds.outpps);
                largenum(&mut out, ds.inbps, o.exact);
                largenum(&mut out, ds.outbps, o.exact);
                out.push('\n');
            } else if o.thresholds {
                let _ = writeln!(
                    out,
                    "  -> {dn:<28} {:<10} {:<10} {:<10} {:<10}",
                    dv.upper, dv.lower, dv.active, dv.inactive
                );
            } else if o.persistent_conn {
                let _ = writeln!(out, "  -> {dn:<28} {:<9} {:<11} {:<10} {:<10}", dv.weight, 0, dv.active, dv.inactive);
            } else {
                let _ = writeln!(
                    out,
                    "  -> {dn:<28} {:<7} {:<6} {:<10} {:<10}",
                    dv.forward, dv.weight, dv.active, dv.inactive
                );
            }
        }
    }
    out
}

/// Does `k` name the listed service `s`?
pub fn view_matches(s: &ServiceView, k: &SvcKey) -> bool {
    match k {
        SvcKey::Fwmark { mark, v6 } => s.fwmark == Some(*mark) && s.vip.is_ipv6() == *v6,
        SvcKey::Tcp { vip, port } | SvcKey::Udp { vip, port } => {
            let proto = if matches!(k, SvcKey::Tcp { .. }) { "TCP" } else { "UDP" };
            s.proto == proto
                && s.vip == *vip
                && parse_ports(&s.ports).map(|p| p.is_empty() || p.iter().any(|r| r.contains(*port))).unwrap_or(false)
        }
    }
}

pub use crate::flow::ConnRow;

/// `ipvsadm -L -c -n` output.
pub fn format_conns(conns: &[ConnRow]) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(out, "pro expire {:<11} {:<18} {:<18} destination", "state", "source", "virtual");
    for c in conns {
        let exp = format!("{:02}:{:02}", c.expires_in_s / 60, c.expires_in_s % 60);
        let _ = write!(out, "{:<3} {:<6} {:<11} {:<18} {:<18} {}", c.proto, exp, c.state, c.client, c.vip, c.real);
        // Full NAT: where the real server sees the connection come from.
        match &c.local {
            Some(l) => {
                let _ = writeln!(out, " (local {l})");
            }
            None => out.push('\n'),
        }
    }
    out
}

/// ferrovs-only connection listing with FTP control/data relations.
pub fn format_conns_ftp(conns: &[ConnRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<3} {:<6} {:<6} {:<11} {:<24} {:<24} {:<24} {:<8} {:<8} ftp",
        "pro", "worker", "id", "state", "source", "virtual", "destination", "expire", "pkts"
    );
    for c in conns {
        let ftp = if c.ftp_control {
            format!("control ({} data)", c.children)
        } else if let Some(p) = c.parent {
            format!("data of {}/{}", c.worker, p)
        } else {
            "-".into()
        };
        let exp = format!("{:02}:{:02}", c.expires_in_s / 60, c.expires_in_s % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<6} {:<11} {:<24} {:<24} {:<24} {:<8} {:<8} {}",
            c.proto,
            c.worker,
            c.id,
            c.state,
            c.client,
            c.vip,
            c.real,
            exp,
            c.pkts_in + c.pkts_out,
            ftp
        );
    }
    out
}

// ---------------------------------------------------------------------------
// -S: ipvsadm-save.

fn needs_ext(s: &Service) -> bool {
    let single = matches!(s.ports.as_slice(), [r] if r.lo == r.hi);
    let default_ftp = (s.protocol == Protocol::Tcp && s.ports.iter().any(|r| r.contains(21))).then(FtpOptions::default);
    s.fwmark.is_some()
        || !single
        || s.name != default_name(s.protocol, s.vip, service_port(s))
        || s.ftp != default_ftp
        || forward_not_shown(s)
        || s.syn_proxy != SynProxy::Auto
        || !s.local_addresses.is_empty()
        || s.sorry_server.is_some()
        || s.quorum != 1
        || s.hysteresis != 0
        || !s.health_checks.is_empty()
        || s.notify.is_some()
        || !s.allow_from.is_empty()
        || !s.deny_from.is_empty()
        || s.source_conn_rate != 0
}

/// The real servers in `-S` order.
fn saved_servers(s: &Service) -> Vec<&RealServer> {
    let mut rs: Vec<&RealServer> = s.real_servers.iter().collect();
    rs.sort_by(|a, b| {
        (ip_bytes(&a.address), shown_port(s, a.port)).cmp(&(ip_bytes(&b.address), shown_port(s, b.port)))
    });
    rs
}

/// Would `-R` get the service's forwarding method wrong from its `-a` lines (the first sets
/// it; no real server: `-g`)?
fn forward_not_shown(s: &Service) -> bool {
    let first = saved_servers(s).first().map(|r| r.forward.unwrap_or(s.forward)).unwrap_or(Forward::Dr);
    first != s.forward
}

/// The `# ferrovs-service` fields past the FTP ones.
fn write_ext_options(out: &mut String, s: &Service) {
    if forward_not_shown(s) {
        let _ = write!(out, " forward={}", forward_word(s.forward));
    }
    match s.syn_proxy {
        SynProxy::Auto => {}
        SynProxy::On => out.push_str(" syn-proxy=on"),
        SynProxy::Off => out.push_str(" syn-proxy=off"),
    }
    if !s.local_addresses.is_empty() {
        let l: Vec<String> = s.local_addresses.iter().map(|a| a.to_string()).collect();
        let _ = write!(out, " local={}", l.join(","));
    }
    for (key, list) in [("allow-from", &s.allow_from), ("deny-from", &s.deny_from)] {
        if !list.is_empty() {
            let l: Vec<String> = list.iter().map(|n| n.to_string()).collect();
            let _ = write!(out, " {key}={}", l.join(","));
        }
    }
    if s.source_conn_rate != 0 {
        let _ = write!(out, " source-conn-rate={}/{}", s.source_conn_rate, s.source_conn_burst);
    }
    if let Some(ss) = &s.sorry_server {
        let _ = match ss.port {
            Some(p) => write!(out, " sorry={}", addrport(ss.address, p)),
            None if ss.address.is_ipv6() => write!(out, " sorry=[{}]", ss.address),
            None => write!(out, " sorry={}", ss.address),
        };
    }
    if s.quorum != 1 {
        let _ = write!(out, " quorum={}", s.quorum);
    }
    if s.hysteresis != 0 {
        let _ = write!(out, " hysteresis={}", s.hysteresis);
    }
    if let Some(n) = &s.notify {
        for (k, c) in [("up", &n.up), ("down", &n.down), ("quorum-up", &n.quorum_up), ("quorum-down", &n.quorum_down)] {
            if !c.is_empty() {
                let c: Vec<String> = c.iter().map(|a| enc(a)).collect();
                let _ = write!(out, " notify-{k}={}", c.join(","));
            }
        }
        if let Some(u) = &n.user {
            let _ = write!(out, " notify-user={}", enc(u));
        }
        let _ = write!(out, " notify-timeout={}", n.timeout);
    }
    write_checks(out, &s.health_checks);
}

/// `ipvsadm -S -n` output for `cfg` (with `# ferrovs-service` comments
/// before services ipvsadm's syntax cannot fully describe).
/// `ferrovsadm ports`: the reply of the control socket's `ports` op as a table, a line per
/// port and, for a port of several queues, one per queue under it. The last columns are
/// AF_PACKET's own (0 elsewhere): checksums a local stack left to offload, those the port
/// completed, VLAN tags it put back.
pub fn ports_table(r: &serde_json::Value) -> String {
    const COLS: [(&str, &str); 12] = [
        ("rx_packets", "RxPackets"),
        ("rx_bytes", "RxBytes"),
        ("rx_dropped", "RxDropped"),
        ("rx_nobuf", "RxNoBuf"),
        ("rx_errors", "RxErrors"),
        ("tx_packets", "TxPackets"),
        ("tx_bytes", "TxBytes"),
        ("tx_dropped", "TxDropped"),
        ("tx_errors", "TxErrors"),
        ("rx_csum_partial", "RxCsumPart"),
        ("rx_csum_completed", "RxCsumDone"),
        ("rx_vlan_restored", "RxVlanRestd"),
    ];
    let mut o = String::new();
    if r["counted"].as_bool() != Some(true) {
        o.push_str("no port counters: this backend keeps none (the in-memory one)\n");
        return o;
    }
    let row = |o: &mut String, label: &str, c: &serde_json::Value| {
        let _ = write!(o, "{label:<32}");
        for (k, _) in COLS {
            let _ = write!(o, " {:>12}", c[k].as_u64().unwrap_or(0));
        }
        o.push('\n');
    };
    let _ = write!(o, "{:<32}", "Port (device, driver, link)");
    for (_, h) in COLS {
        let _ = write!(o, " {h:>12}");
    }
    o.push('\n');
    let ports = r["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    for p in ports {
        let link = match p["link_up"].as_bool() {
            Some(true) => ", up",
            Some(false) => ", DOWN",
            None => "",
        };
        let label = format!(
            "{} ({}, {}{link})",
            p["name"].as_str().unwrap_or("?"),
            p["device"].as_str().unwrap_or("?"),
            p["driver"].as_str().unwrap_or("?")
        );
        row(&mut o, &label, &p["counters"]);
        let queues = p["queues"].as_array().map(Vec::as_slice).unwrap_or_default();
        if queues.len() > 1 {
            for (i, q) in queues.iter().enumerate() {
                row(&mut o, &format!("  queue {i}"), q);
            }
        }
    }
    o
}

pub fn format_save(cfg: &Config) -> String {
    let mut out = String::new();
    let mut svcs: Vec<&Service> = cfg.services.iter().collect();
    svcs.sort_by(|a, b| {
        let k = |s: &Service| {
            (
                s.fwmark.unwrap_or(0),
                af(&s.vip),
                if s.protocol == Protocol::Tcp { 6 } else { 17 },
                ip_bytes(&s.vip),
                service_port(s),
            )
        };
        k(a).cmp(&k(b))
    });
    for s in svcs {
        if needs_ext(s) {
            let _ = write!(
                out,
                "# ferrovs-service name={} proto={} vip={} ports={}",
                // Escaped as the other strings: a config may name a service with anything,
                // a line break too, which must not end the comment and start a rule.
                enc(&s.name),
                if s.protocol == Protocol::Tcp { "tcp" } else { "udp" },
                s.vip,
                fmt_ports(&s.ports)
            );
            if let Some(m) = s.fwmark {
                let _ = write!(out, " fwmark={m}");
            }
            match &s.ftp {
                None => out.push_str(" ftp=none"),
                Some(f) => {
                    let ports: Vec<String> = f.control_ports.iter().map(|p| p.to_string()).collect();
                    let _ = write!(out, " ftp={} ftp-pinhole={}", ports.join(","), f.pinhole_timeout);
                    if f.allow_foreign_port_address {
                        out.push_str(" ftp-foreign");
                    }
                    if f.max_expectations != FtpOptions::default().max_expectations {
                        let _ = write!(out, " ftp-max-expectations={}", f.max_expectations);
                    }
                    if f.allow_low_data_ports {
                        out.push_str(" ftp-low-ports");
                    }
                }
            }
            write_ext_options(&mut out, s);
            out.push('\n');
        }
        let name = match s.fwmark {
            Some(m) if s.vip.is_ipv4() => format!("-f {m}"),
            Some(m) => format!("-f {m} -6"),
            None => format!(
                "{} {}",
                if s.protocol == Protocol::Tcp { "-t" } else { "-u" },
                addrport(s.vip, service_port(s))
            ),
        };
        let _ = write!(out, "-A {name} -s {}", s.scheduler);
        let flags = s.sched_flags.names(&s.scheduler);
        if !flags.is_empty() {
            let _ = write!(out, " -b {}", flags.join(","));
        }
        if let Some(p) = s.persistence {
            let _ = write!(out, " -p {}", p.timeout);
            if s.vip.is_ipv4() && p.netmask != 32 {
                let _ = write!(out, " -M {}", mask_dotted(p.netmask));
            } else if !s.vip.is_ipv4() && p.netmask != 128 {
                let _ = write!(out, " -M {}", p.netmask);
            }
        }
        if s.one_packet {
            out.push_str(" -o");
        }
        out.push('\n');
        for r in saved_servers(s) {
            let mut ext = String::new();
            match r.proxy_protocol {
                None => {}
                Some(ProxyProtocol::V1) => ext.push_str(" proxy=v1"),
                Some(ProxyProtocol::V2) => ext.push_str(" proxy=v2"),
            }
            match &r.health_checks {
                None => {}
                Some(c) if c.is_empty() => ext.push_str(" check=none"),
                Some(c) => write_checks(&mut ext, c),
            }
            if !ext.is_empty() {
                let _ = writeln!(out, "# ferrovs-server{ext}");
            }
            let _ = write!(
                out,
                "-a {name} -r {} {} -w {}",
                addrport(r.address, shown_port(s, r.port)),
                fwd_switch(r.forward.unwrap_or(s.forward)),
                r.weight
            );
            if r.upper != 0 {
                let _ = write!(out, " -x {}", r.upper);
            }
            if r.lower != 0 {
                let _ = write!(out, " -y {}", r.lower);
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ferrovs config import --from ipvsadm` (the samples live with the
    // other importers' in cfg/tests/data).
    const SAVE_FTP: &str = include_str!("../../../cfg/tests/data/ipvsadm-save-ftp.txt");
    const FWMARK: &str = include_str!("../../../cfg/tests/data/ipvsadm-save-fwmark.txt");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Render, prepend a memory-backend engine, parse back: equal services.
    fn roundtrip(imp: &Import) {
        let t = format!("[engine]\nbackend = \"memory\"\n\n{}", imp.to_toml());
        let c = Config::from_str(&t, "imported.toml").unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert_eq!(c.services, imp.services, "{t}");
    }

    /// ipvsadm words, a few ferrovs does not implement, and junk.
    const TOKENS: &[&str] = &[
        "-A",
        "-a",
        "-E",
        "-e",
        "-D",
        "-d",
        "-C",
        "--set",
        "-t",
        "-u",
        "-f",
        "-6",
        "-s",
        "rr",
        "nope",
        "-p",
        "300",
        "-M",
        "255.255.255.0",
        "64",
        "-r",
        "10.0.0.1:80",
        "10.0.2.2",
        "[fd00::1]:21",
        "10.0.0.1:0",
        "21",
        "-g",
        "-m",
        "-i",
        "-w",
        "70000",
        "1",
        "-x",
        "-y",
        "-b",
        "--pe",
        "-o",
        "ipvsadm",
        "#",
        "'",
        "\"",
        "-L",
        "--socket",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        #[test]
        fn import_never_panics_and_errors_name_a_line(
            lines in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(TOKENS), 0..9), 0..7)
        ) {
            let text = lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n");
            match import_save(&text, &MarkMap::new()) {
                Ok(imp) => {
                    let _ = imp.to_toml();
                }
                Err(e) => proptest::prop_assert!(e.line.is_some_and(|l| l >= 1 && l <= lines.len()), "{e}"),
            }
        }
    }

    fn warned(imp: &Import, line: usize, part: &str) -> bool {
        imp.warnings.iter().any(|w| w.starts_with(&format!("line {line}:")) && w.contains(part))
    }

    #[test]
    fn ipvsadm_save() {
        let imp = import_save(SAVE_FTP, &MarkMap::new()).unwrap();
        roundtrip(&imp);
        assert_eq!(imp.services.len(), 4);
        let ftp = &imp.services[0];
        assert_eq!(ftp.name, "tcp-10.0.0.100-21");
        assert_eq!(ftp.persistence, Some(Persistence { timeout: 300, netmask: 32 }));
        assert!(ftp.ftp.is_some());
        assert_eq!(ftp.forward, Forward::Nat);
        assert_eq!(
            ftp.real_servers[1],
            RealServer {
                address: ip("10.0.2.3"),
                port: Some(21),
                weight: 2,
                upper: 0,
                lower: 0,
                forward: None,
                proxy_protocol: None,
                health_checks: None
            }
        );
        let web = &imp.services[1];
        assert_eq!(web.ftp, None);
        assert_eq!((web.real_servers[0].upper, web.real_servers[0].lower), (1000, 800));
        let dns = &imp.services[2];
        assert_eq!((dns.protocol, dns.forward, dns.scheduler.as_str()), (Protocol::Udp, Forward::Dr, "sh"));
        let v6 = &imp.services[3];
        assert_eq!(v6.vip, ip("fd00::100"));
        assert_eq!(v6.persistence, Some(Persistence { timeout: 600, netmask: 64 }));
        assert_eq!(v6.real_servers[0].address, ip("fd00:2::2"));
    }

    #[test]
    fn ipvsadm_fwmark() {
        let imp = import_save(FWMARK, &MarkMap::new()).unwrap();
        roundtrip(&imp);
        let fw = &imp.services[0];
        assert_eq!((fw.name.as_str(), fw.fwmark, fw.vip), ("fwm21", Some(21), ip("0.0.0.0")));
        assert!(fw.ports.is_empty());
        assert_eq!(fw.forward, Forward::Dr);
        assert_eq!(fw.real_servers[0].port, None, ":0 means the client's port");
        assert!(warned(&imp, 1, "firewall mark 21"));
        let tun = &imp.services[1];
        assert_eq!(tun.persistence, Some(Persistence { timeout: 3600, netmask: 24 }));
        assert_eq!(tun.forward, Forward::Tunnel);
        assert_eq!(tun.real_servers[1].forward, Some(Forward::Dr), "per-server method kept");

        let mut marks = MarkMap::new();
        marks.insert(
            (21, false),
            (ip("10.0.0.100"), vec![PortRange { lo: 21, hi: 21 }, PortRange { lo: 10000, hi: 20000 }]),
        );
        let imp = import_save(FWMARK, &marks).unwrap();
        let fw = &imp.services[0];
        assert_eq!(fw.vip, ip("10.0.0.100"));
        assert!(fw.has_port(15000) && fw.ftp.is_some());
        roundtrip(&imp);
    }

    #[test]
    fn ipvsadm_details_and_errors() {
        // `ipvsadm` prefix, long options, -p without a value, port names,
        // options ferrovs does not implement (warned, skipped).
        let imp = import_save(
            "ipvsadm --add-service --tcp-service 10.0.0.1:http --scheduler rr --persistent\n\
             -a -t 10.0.0.1:http -r 10.0.2.2 -m\n-A -t 10.0.0.1:443 -s wlc --pe sip\n",
            &MarkMap::new(),
        )
        .unwrap();
        assert_eq!(imp.services[0].ports, vec![PortRange { lo: 80, hi: 80 }]);
        assert_eq!(imp.services[0].persistence, Some(Persistence { timeout: 300, netmask: 32 }));
        assert_eq!(imp.services[0].real_servers[0].port, None);
        assert!(warned(&imp, 3, "--pe"));

        let cases: &[(&str, usize, &str)] = &[
            ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.2:80 -r 10.0.2.2:80 -m\n", 2, "no such service"),
            ("-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n", 2, "already exists"),
            ("\n-A -t 10.0.0.1 -s rr\n", 2, "needs a port"),
            ("-A -t 10.0.0.1:80 -s nope\n", 1, "unknown scheduler"),
            ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.2.2:80 -w 70000\n", 2, "illegal weight"),
            ("-A -t 10.0.0.1:80 -s\n", 1, "requires an argument"),
            ("-A -t 10.0.0.1:80 -p 60 -M 255.0.255.0\n", 1, "not contiguous"),
            ("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80\n", 2, "no real server"),
        ];
        for (t, line, part) in cases {
            let e = import_save(t, &MarkMap::new()).expect_err(t);
            assert_eq!(e.line, Some(*line), "{t}: {e}");
            assert!(e.message.contains(part), "{t}: {e}");
            assert_eq!(e.file, "ipvsadm");
        }
    }

    fn base() -> Config {
        Config::from_str("[engine]\nbackend = \"memory\"\n", "<test>").unwrap()
    }

    /// `-S` of `c`, and what `-C` then `-R` of that text make of `c`: its `-S` is the same
    /// text (as `ipvsadm-save | ipvsadm-restore`).
    fn save_restored(c: &Config) -> (String, Config) {
        let save = format_save(c);
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap() {
            apply(&mut c2, &cmd).unwrap();
        }
        assert_eq!(format_save(&c2), save);
        (save, c2)
    }

    fn run(cfg: &mut Config, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match parse_args(&words).unwrap().action {
            Action::Edit(c) => apply(cfg, &c).unwrap(),
            a => panic!("not an edit: {a:?}"),
        }
    }

    #[test]
    fn brief_example_list() {
        let mut c = base();
        run(&mut c, "-A -t 10.0.1.100:21 -s rr -p");
        run(&mut c, "-a -t 10.0.1.100:21 -r 10.0.2.2:21 -m");
        let out = format_list(&list_of_config(&c), &ListOpts { numeric: true, sort: true, ..Default::default() });
        assert_eq!(
            out,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.1.100:21 rr persistent 300\n  \
             -> 10.0.2.2:21                  Masq    1      0          0         \n"
        );
        assert!(c.services[0].ftp.is_some(), "port 21 gets the FTP gateway");
    }

    #[test]
    fn fullnat_servers_list_as_fullnat() {
        let mut c = base();
        run(&mut c, "-A -t 10.0.1.100:80 -s rr");
        c.services[0].local_addresses = vec!["10.0.2.200".parse().unwrap()];
        run(&mut c, "-a -t 10.0.1.100:80 -r 10.0.2.2:80 -b");
        run(&mut c, "-a -t 10.0.1.100:80 -r 10.0.2.3:80 --fullnat -w 2");
        assert_eq!(c.services[0].forward, Forward::Fnat);
        let out = format_list(&list_of_config(&c), &ListOpts { numeric: true, sort: true, ..Default::default() });
        assert_eq!(
            out,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.1.100:80 rr\n  \
             -> 10.0.2.2:80                  FullNat 1      0          0         \n  \
             -> 10.0.2.3:80                  FullNat 2      0          0         \n"
        );
        assert!(format_save(&c).contains("-a -t 10.0.1.100:80 -r 10.0.2.2:80 --fullnat -w 1"), "{}", format_save(&c));
        // Without local addresses the edited config does not validate (the control socket
        // re-validates every edit).
        let mut bare = base();
        run(&mut bare, "-A -t 10.0.1.100:80 -s rr");
        run(&mut bare, "-a -t 10.0.1.100:80 -r 10.0.2.2:80 -b");
        let e = crate::ctl::control::validate(&bare).unwrap_err();
        assert!(e.contains("needs local_addresses"), "{e}");
    }

    #[test]
    fn lvs_howto_sequence() {
        // From the LVS-HOWTO / ipvsadm(8) examples.
        let mut c = base();
        for l in [
            "-A -t 207.175.44.110:80 -s rr",
            "-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m",
            "-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m",
            "-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m -w 2",
            "--add-service --udp-service 207.175.44.110:53 --scheduler wlc",
            "--add-server --udp-service 207.175.44.110:53 --real-server 192.168.10.1 --gatewaying --weight 3",
            "-A -t [2001:db8::1]:443 -s sh -p 600 -M 64",
            "-a -t [2001:db8::1]:443 -r [2001:db8:1::2]:443 -i",
        ] {
            run(&mut c, l);
        }
        let out = format_list(&list_of_config(&c), &ListOpts { numeric: true, sort: true, ..Default::default() });
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  207.175.44.110:80 rr\n\
\x20 -> 192.168.10.1:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.2:80              Masq    1      0          0         \n\
\x20 -> 192.168.10.3:80              Masq    2      0          0         \n\
UDP  207.175.44.110:53 wlc\n\
\x20 -> 192.168.10.1:53              Route   3      0          0         \n\
TCP  [2001:db8::1]:443 sh persistent 600 mask 64\n\
\x20 -> [2001:db8:1::2]:443          Tunnel  1      0          0         \n";
        assert_eq!(out, want);
        let save = format_save(&c);
        assert_eq!(
            save,
            "-A -t 207.175.44.110:80 -s rr\n\
-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m -w 1\n\
-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m -w 1\n\
-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m -w 2\n\
-A -u 207.175.44.110:53 -s wlc\n\
-a -u 207.175.44.110:53 -r 192.168.10.1:53 -g -w 3\n\
-A -t [2001:db8::1]:443 -s sh -p 600 -M 64\n\
-a -t [2001:db8::1]:443 -r [2001:db8:1::2]:443 -i -w 1\n"
        );
        // -S, -C, -R gives the same state.
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap() {
            apply(&mut c2, &cmd).unwrap();
        }
        assert_eq!(format_save(&c2), save);
    }

    #[test]
    fn stats_rate_formats() {
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:80 -s wrr");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.2 -m -w 2");
        let mut d = list_of_config(&c);
        d.services[0].stats =
            Stats { conns: 12, inpkts: 345, outpkts: 300, inbytes: 123_456_789_012, outbytes: 5, ..Default::default() };
        d.services[0].dests[0].stats =
            Stats { conns: 12, cps: 3, inpps: 40, outpps: 30, inbps: 2000, outbps: 100, ..Default::default() };
        let s = format_list(&d, &ListOpts { stats: true, sort: true, ..Default::default() });
        assert_eq!(
            s,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                        12      345      300     123G        5\n\
\x20 -> 10.0.2.2:80                        12        0        0        0        0\n"
        );
        let r = format_list(&d, &ListOpts { rate: true, sort: true, ..Default::default() });
        assert_eq!(
            r,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                         0        0        0        0        0\n\
\x20 -> 10.0.2.2:80                         3       40       30     2000      100\n"
        );
        assert_eq!(
            format_list(&d, &ListOpts { timeout: true, ..Default::default() }),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }

    #[test]
    fn conn_listing() {
        let c = ConnRow {
            worker: 0,
            id: 7,
            proto: "TCP".into(),
            client: "10.0.1.2:40000".into(),
            vip: "10.0.1.100:21".into(),
            real: "10.0.2.2:21".into(),
            state: "ESTABLISHED".into(),
            expires_in_s: 899,
            service: "ftp".into(),
            ftp_control: true,
            parent: None,
            children: 1,
            pkts_in: 3,
            pkts_out: 4,
            local: None,
        };
        let f = ConnRow { local: Some("10.0.2.200:2000".into()), ..c.clone() };
        assert_eq!(
            format_conns(&[c, f]),
            "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 10.0.1.2:40000     10.0.1.100:21      10.0.2.2:21\n\
TCP 14:59  ESTABLISHED 10.0.1.2:40000     10.0.1.100:21      10.0.2.2:21 (local 10.0.2.200:2000)\n"
        );
    }

    #[test]
    fn port_groups_and_fwmarks_roundtrip() {
        let text = r#"
[engine]
backend = "memory"

[[service]]
name = "ftp"
vip = "10.0.0.100"
ports = [21, "10000-10100"]
fwmark = 21
scheduler = "rr"
forward = "nat"
persistence = 300
ftp = true

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web"
vip = "10.0.0.100"
ports = [80, "8000-8100"]
scheduler = "rr"

[[service.real_server]]
address = "10.0.2.3"
weight = 2
upper = 100
lower = 50
"#;
        let mut c = Config::from_str(text, "<t>").unwrap();
        let l = format_list(&list_of_config(&c), &ListOpts { sort: true, ..Default::default() });
        assert_eq!(
            l,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.0.0.100:80 rr\n\
\x20 -> 10.0.2.3:0                   Masq    2      0          0         \n\
FWM  21 rr persistent 300\n\
\x20 -> 10.0.2.2:0                   Masq    1      0          0         \n"
        );
        // -A -f for an unknown mark explains.
        let e = apply(
            &mut c,
            &Command::AddService {
                key: SvcKey::Fwmark { mark: 99, v6: false },
                scheduler: None,
                persistent: None,
                netmask: None,
                ops: false,
                sched_flags: Vec::new(),
                ext: None,
            },
        )
        .unwrap_err();
        assert!(e.contains("declare the port group"), "{e}");
        // -E -f edits the existing one.
        run(&mut c, "-E -f 21 -s wlc -p 600");
        assert_eq!(c.services[0].scheduler, "wlc");
        // -a -t VIP:8050 finds the web port group.
        run(&mut c, "-a -t 10.0.0.100:8050 -r 10.0.2.4 -m");
        assert_eq!(c.services[1].real_servers.len(), 2);
        let save = format_save(&c);
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap() {
            apply(&mut c2, &cmd).unwrap();
        }
        assert_eq!(format_save(&c2), save);
        assert_eq!(c.services.len(), c2.services.len());
        for a in &c.services {
            let b = c2.services.iter().find(|b| b.name == a.name).expect("same names");
            assert_eq!(a.ports, b.ports);
            assert_eq!(a.fwmark, b.fwmark);
            assert_eq!(a.ftp, b.ftp);
        }
    }

    /// A config setting every service and real-server option ipvsadm's syntax has no word for.
    const EVERY_OPTION: &str = r#"
[engine]
backend = "memory"

[[service]]
name = "tcp-10.0.0.1-80"
vip = "10.0.0.1"
ports = [80]
scheduler = "wrr"
forward = "nat"
persistence = { timeout = 600, netmask = 24 }
syn_proxy = "on"
sorry_server = { address = "10.0.2.9", port = 8080 }
quorum = 3
hysteresis = 1

[service.health_check]
type = "http"
port = 8081
path = "/health?a=b&c=%41"
host = "www.example.com"
status = 204
digest = "eff5bc1ef8ec9d03e640fc4370f5eacd"
interval = 2.5
retry_interval = 0.75
timeout = 1.25
rise = 3
fall = 4
on_fail = "remove"
start_down = true

[service.notify]
up = ["/usr/local/bin/rs event", "up, or so", ""]
down = ["/usr/local/bin/rs", "down"]
quorum_up = ["/bin/q"]
quorum_down = ["/bin/q", "%41=x"]
user = "lvs admin"
timeout = 2.5

[[service.real_server]]
address = "10.0.2.3"
weight = 2
proxy_protocol = "v2"

[[service.real_server]]
address = "10.0.2.2"
port = 8080
upper = 10
lower = 5
proxy_protocol = "v1"

[[service]]
name = "ftp"
vip = "10.0.0.2"
ports = [21]
forward = "nat"
syn_proxy = "off"
ftp = { control_ports = [21], allow_foreign_port_address = true, pinhole_timeout = 30, max_expectations = 8, allow_low_data_ports = true }

[service.health_check]
type = "send_expect"
send = "HELP\r\n"
expect = "214 \"ok\" #1, a=b 'x' \u00fc%"

[[service.real_server]]
address = "10.0.2.4"

[[service]]
name = "fnat"
vip = "10.0.0.3"
ports = [443]
forward = "fnat"
local_addresses = ["fd00:2::200", "fd00:2::201"]

[service.health_check]
type = "exec"
command = ["/usr/local/bin/check", "--name=a b", "x,y", ""]
user = "nobody"

[[service.real_server]]
address = "fd00:2::4"
proxy_protocol = "v1"

[[service]]
name = "tcp-10.0.0.5-80"
vip = "10.0.0.5"
ports = [80]
scheduler = "rr"
forward = "nat"

[service.health_check]
type = "https"
port = 443
host = "www.example.com"
tls_ca = "/etc/ferrovs/ca, 1 %.pem"

[[service.real_server]]
address = "10.0.2.5"

[[service.real_server]]
address = "10.0.2.1"
forward = "dr"

[[service]]
name = "udp-10.0.0.4-53"
vip = "10.0.0.4"
protocol = "udp"
ports = [53]
forward = "tunnel"

[service.health_check]
type = "dns"
query_name = "www.example.com."
query_type = "AAAA"

[[service]]
name = "udp-10.0.0.4-514"
vip = "10.0.0.4"
protocol = "udp"
ports = [514]

[service.health_check]
type = "udp"
payload = "0a 1b2c"
reply = "0a xX"

[[service]]
name = "udp-10.0.0.4-123"
vip = "10.0.0.4"
protocol = "udp"
ports = [123]

[service.health_check]
type = "udp"
require_reply = true

[[service]]
name = "udp-10.0.0.4-161"
vip = "10.0.0.4"
protocol = "udp"
ports = [161]

[service.health_check]
type = "ping"

[[service]]
name = "tcp-10.0.0.4-25"
vip = "10.0.0.4"
ports = [25]

[service.health_check]
type = "smtp"
helo_name = "lb1.example.net"
"#;

    /// What of `want`'s services `got` lost or changed, field by field (services by name, real
    /// servers by address and destination port: -S lists them sorted).
    fn lost_fields(want: &[Service], got: &[Service]) -> Vec<String> {
        let mut lost = Vec::new();
        for a in want {
            let Some(b) = got.iter().find(|b| b.name == a.name) else {
                lost.push(format!("service {:?}: missing", a.name));
                continue;
            };
            macro_rules! cmp {
                ($($f:ident),*) => {$(
                    if a.$f != b.$f {
                        lost.push(format!("service {:?}: {}: {:?} became {:?}", a.name, stringify!($f), a.$f, b.$f));
                    }
                )*};
            }
            cmp!(vip, protocol, ports, scheduler, forward, persistence, ftp, fwmark, health_checks, syn_proxy);
            cmp!(local_addresses, sorry_server, quorum, hysteresis, notify);
            // `ADDR` and `ADDR:80` of a port-80 service are one destination.
            let sorted = |s: &Service| {
                let mut r: Vec<RealServer> =
                    s.real_servers.iter().map(|r| RealServer { port: s.server_port(r.port), ..r.clone() }).collect();
                r.sort_by_key(|r| (ip_bytes(&r.address), r.port));
                r
            };
            if sorted(a) != sorted(b) {
                lost.push(format!("service {:?}: real_servers: {:?} became {:?}", a.name, sorted(a), sorted(b)));
            }
        }
        lost
    }

    /// `-S`, `-C`, `-R` gives back every option of every service (before, quorum, hysteresis,
    /// the health check, the sorry server, syn_proxy, local addresses, two FTP options, the
    /// PROXY protocol and a service's method its servers do not show were lost, and the
    /// full-NAT service did not restore at all).
    #[test]
    fn save_restore_keeps_every_service_option() {
        let c = Config::from_str(EVERY_OPTION, "<t>").unwrap();
        let save = format_save(&c);
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        let mut failed = Vec::new();
        for cmd in parse_rules(&save).unwrap_or_else(|e| panic!("{e}\n{save}")) {
            if let Err(e) = apply(&mut c2, &cmd) {
                failed.push(e);
            }
        }
        let mut lost = lost_fields(&c.services, &c2.services);
        lost.extend(failed.into_iter().map(|e| format!("-R: {e}")));
        if lost.is_empty() {
            if let Err(e) = crate::ctl::control::validate(&c2) {
                lost.push(format!("restored config does not validate: {e}"));
            }
        }
        assert!(lost.is_empty(), "-S, -C, -R lost:\n{}\n-S printed:\n{save}", lost.join("\n"));
        // And again: the restored services save the same text.
        assert_eq!(format_save(&c2), save);
    }

    /// The control socket carries a restored health check (`ferrovsadm -R`'s `add_service`)
    /// in the form of the comment's `check*` fields: seconds as text, `remove` for
    /// `on_fail = "remove"`, an absent or null field its default. A daemon and a `ferrovsadm`
    /// of different versions read each other's edits.
    #[test]
    fn restored_checks_keep_the_socket_wire_format() {
        let c = Config::from_str(EVERY_OPTION, "<t>").unwrap();
        let sent: Vec<String> = parse_rules(&format_save(&c))
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Command::AddService { ext: Some(e), .. } => e.check.as_ref(),
                _ => None,
            })
            .map(|h| serde_json::to_string(h).unwrap())
            .collect();
        let check = |kind: &str, fields: &str, command: &str, secs: [&str; 3], counts: &str, flags: &str| {
            format!(
                r#"{{"kind":"{kind}",{fields},"command":{command},"interval":{},"retry_interval":{},"timeout":{},{counts},{flags}}}"#,
                secs[0], secs[1], secs[2]
            )
        };
        let nulls = r#""port":null,"send":null,"expect":null,"path":null,"host":null,"status":null"#;
        let want = [
            check(
                "http",
                r#""port":8081,"send":null,"expect":null,"path":"/health?a=b&c=%41","host":"www.example.com","status":204,"digest":"eff5bc1ef8ec9d03e640fc4370f5eacd""#,
                r#"[],"user":null"#,
                [r#""2.5""#, r#""0.75""#, r#""1.25""#],
                r#""rise":3,"fall":4"#,
                r#""remove":true,"start_down":true"#,
            ),
            check(
                "send_expect",
                r#""port":null,"send":"HELP\r\n","expect":"214 \"ok\" #1, a=b 'x' ü%","path":null,"host":null,"status":null"#,
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "exec",
                nulls,
                r#"["/usr/local/bin/check","--name=a b","x,y",""],"user":"nobody""#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "smtp",
                &format!(r#"{nulls},"helo_name":"lb1.example.net""#),
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            // `tls_ca` only where it is set.
            check(
                "https",
                r#""port":443,"send":null,"expect":null,"path":null,"host":"www.example.com","status":null,"tls_ca":"/etc/ferrovs/ca, 1 %.pem""#,
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "dns",
                &format!(r#"{nulls},"query_name":"www.example.com.","query_type":"AAAA""#),
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "udp",
                &format!(r#"{nulls},"require_reply":true"#),
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "ping",
                nulls,
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
            check(
                "udp",
                &format!(r#"{nulls},"payload":"0a 1b2c","require_reply":true,"reply":"0a xX""#),
                r#"[],"user":null"#,
                [r#""5""#, "null", r#""3""#],
                r#""rise":2,"fall":3"#,
                r#""remove":false,"start_down":false"#,
            ),
        ];
        assert_eq!(sent, want);
        // An edit of an older `ferrovsadm`: what the comment did not set is null or absent, and
        // takes its default.
        let json = format!(
            r#"{{"cmd":"add_service","key":{{"tcp":{{"vip":"10.0.0.1","port":80}}}},"scheduler":null,
               "persistent":null,"netmask":null,"ext":{{"check":{}}}}}"#,
            check(
                "ftp",
                nulls,
                r#"[],"user":null"#,
                ["null", r#""0.5""#, "null"],
                r#""rise":null,"fall":7"#,
                r#""remove":true"#
            )
        );
        let e = serde_json::from_str::<Command>(&json.replace(r#""kind":"ftp","#, "")).unwrap_err();
        assert!(e.to_string().contains("missing field `kind`"), "{e}");
        let mut c = base();
        apply(&mut c, &serde_json::from_str::<Command>(&json).unwrap()).unwrap();
        let h = c.services[0].health_checks[0].clone();
        assert_eq!(
            (h.kind, h.interval, h.retry_interval, h.timeout, h.rise, h.fall, h.quiesce, h.start_down),
            (HealthCheckKind::Ftp, 5.0, Some(0.5), 3.0, 2, 7, false, false)
        );
    }

    /// A service name is `%XX`-escaped in `-S`'s comment like the other strings: a space, `%`,
    /// `=`, `,`, a quote or `#` in it restores (before, the name was printed as it is: "web
    /// front %1" restored as "web"). A line break, which could end the comment and add a line
    /// of its own to the saved rules ("x\n-A -t ..." added that service), is refused in a name
    /// altogether, and so is every control character: in the config file, and in a name `-R`
    /// decodes from `%0A` (the control socket validates the result as a config).
    #[test]
    fn service_names_are_escaped_in_saved_rules() {
        let names = ["web front %1", "a=b,c d", "say \"hi\" 'x' #2", "\u{fc}ber", "p\u{e9}ch\u{e9} 100%"];
        // As TOML writes them.
        for bad in [r"tab\there", r"x\n-A -t 10.6.6.6:80 -s rr", r"x\r\n# ferrovs-service name=evil\r", r"esc\u001b[2J"]
        {
            let text = format!(
                "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"{bad}\"\nvip = \"10.0.0.1\"\nports = [80]\n"
            );
            let e = Config::from_str(&text, "<t>").unwrap_err().to_string();
            assert!(e.contains("<t>:4") && e.contains("holds the control character"), "{bad:?}: {e}");
        }
        let mut c = base();
        for cmd in parse_rules("# ferrovs-service name=x%0A-A\n-A -t 10.0.0.9:80 -s rr\n").unwrap() {
            apply(&mut c, &cmd).unwrap();
        }
        let e = crate::ctl::control::validate(&c).unwrap_err();
        assert!(e.contains("service name \"x\\n-A\" holds the control character '\\n'"), "{e}");
        let mut text = String::from("[engine]\nbackend = \"memory\"\n");
        for (i, n) in names.iter().enumerate() {
            let _ = write!(
                text,
                "\n[[service]]\nname = {n:?}\nvip = \"10.0.0.{}\"\nports = [80]\nforward = \"nat\"\n\n\
                 [[service.real_server]]\naddress = \"10.0.2.{}\"\n",
                i + 1,
                i + 1
            );
        }
        let c = Config::from_str(&text, "<t>").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let save = format_save(&c);
        // One comment and two rules a service, nothing else.
        assert_eq!(save.lines().count(), 3 * names.len(), "{save}");
        assert!(!save.contains("10.6.6.6:80 -s") && !save.contains("name=evil"), "{save}");
        // A name of only plain characters is printed as before.
        assert!(format_save(&base_named("web-front_1.a")).starts_with("# ferrovs-service name=web-front_1.a "));
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap_or_else(|e| panic!("{e}\n{save}")) {
            apply(&mut c2, &cmd).unwrap_or_else(|e| panic!("{e}\n{save}"));
        }
        let imported = import_save(&save, &MarkMap::new()).unwrap_or_else(|e| panic!("{e}\n{save}"));
        for got in [&c2.services, &imported.services] {
            let lost = lost_fields(&c.services, got);
            assert!(lost.is_empty(), "lost:\n{}\n-S printed:\n{save}", lost.join("\n"));
            assert_eq!(got.len(), names.len(), "{got:?}");
        }
        assert_eq!(format_save(&c2), save);
        let e = parse_rules("# ferrovs-service name=web%2\n").unwrap_err();
        assert!(e.starts_with("line 1: bad name"), "{e}");
    }

    /// One-packet scheduling: `-o` / `--ops` on -A and -E (which sets the flag to what it
    /// says, as ipvsadm -E), shown by -L as ipvsadm shows it, saved as `-o` and restored, and
    /// imported from ipvsadm-save (before, skipped with a warning). Refused on a TCP service.
    #[test]
    fn one_packet_scheduling() {
        let mut c = base();
        run(&mut c, "-A -u 10.0.0.7:514 -s rr -o");
        run(&mut c, "-a -u 10.0.0.7:514 -r 10.0.2.2:514 -m");
        let s = c.services.iter().find(|s| s.protocol == Protocol::Udp).unwrap();
        assert!(s.one_packet);
        let (save, _) = save_restored(&c);
        assert!(save.contains("-A -u 10.0.0.7:514 -s rr -o\n"), "{save}");
        assert!(format_list(&list_of_config(&c), &ListOpts { numeric: true, ..Default::default() })
            .contains("UDP  10.0.0.7:514 rr ops\n"));
        let imp = import_save(&save, &MarkMap::new()).unwrap();
        assert!(imp.services.iter().any(|s| s.one_packet), "imported");
        assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
        assert!(crate::ctl::control::validate(&c).is_ok());
        // -E without -o clears it; with -o sets it.
        run(&mut c, "-E -u 10.0.0.7:514 -s rr");
        assert!(!c.services.iter().any(|s| s.one_packet));
        run(&mut c, "-E -u 10.0.0.7:514 -s rr --ops");
        assert!(c.services.iter().any(|s| s.one_packet));
        // TCP: refused.
        let Action::Edit(cmd) = parse_args(&["-A", "-t", "10.0.0.8:80", "-o"]).unwrap().action else { panic!() };
        assert!(apply(&mut c, &cmd).unwrap_err().contains("applies to UDP services"));
        let e = import_save("-A -t 10.0.0.8:80 -s rr -o\n", &MarkMap::new()).unwrap_err();
        assert!(e.to_string().starts_with("ipvsadm:1: one-packet scheduling"), "{e}");
    }

    /// Scheduler flags: `-b FLAGS` / `--sched-flags FLAGS` on -A and -E (-E sets them to what it
    /// says, as ipvsadm -E), checked against the scheduler, shown by -L in brackets as ipvsadm
    /// shows them, saved as `-b` and restored, and imported from ipvsadm-save (before,
    /// skipped with a warning); `-b` without an argument on -a is still DPVS's full NAT.
    #[test]
    fn scheduler_flags() {
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.7:80 -s mh -b mh-port,flag-1");
        run(&mut c, "-a -t 10.0.0.7:80 -r 10.0.2.2:80 -m");
        assert_eq!(c.services[0].sched_flags, SchedFlags { fallback: true, port: true });
        let (save, _) = save_restored(&c);
        assert!(save.contains("-A -t 10.0.0.7:80 -s mh -b mh-fallback,mh-port\n"), "{save}");
        let list = format_list(&list_of_config(&c), &ListOpts { numeric: true, ..Default::default() });
        assert!(list.contains("TCP  10.0.0.7:80 mh (mh-fallback,mh-port)\n"), "{list}");
        let imp = import_save(&save, &MarkMap::new()).unwrap();
        assert_eq!(imp.services[0].sched_flags, SchedFlags { fallback: true, port: true }, "imported");
        assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
        assert!(crate::ctl::control::validate(&c).is_ok());
        // -E: the flags the command gives (none clears them); the long form and -bFLAGS.
        run(&mut c, "-E -t 10.0.0.7:80 -s mh");
        assert!(c.services[0].sched_flags.is_empty());
        run(&mut c, "-E -t 10.0.0.7:80 -s sh --sched-flags sh-port");
        assert_eq!(c.services[0].sched_flags, SchedFlags { fallback: false, port: true });
        run(&mut c, "-E -t 10.0.0.7:80 -s sh -bsh-fallback");
        assert_eq!(c.services[0].sched_flags, SchedFlags { fallback: true, port: false });
        // A flag of another scheduler, or on one without flags, is refused.
        for (line, want) in [
            ("-E -t 10.0.0.7:80 -s mh -b sh-port", "applies to scheduler \"sh\""),
            ("-E -t 10.0.0.7:80 -s rr -b flag-2", "scheduler \"rr\" has no flags"),
            ("-A -t 10.0.0.8:80 -b flag-1", "scheduler \"wlc\" has no flags"),
            ("-E -t 10.0.0.7:80 -s sh -b sh-port,nope", "unknown scheduler flag \"nope\""),
        ] {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Action::Edit(cmd) = parse_args(&words).unwrap().action else { panic!("{line}") };
            let e = apply(&mut c.clone(), &cmd).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        assert!(parse_args(&["-E", "-t", "10.0.0.7:80", "-b", "sh-port,,"]).unwrap_err().contains("invalid"));
        // On a server line: refused with an argument, full NAT without.
        let e = parse_args(&["-a", "-t", "10.0.0.7:80", "-r", "10.0.2.3", "-b", "sh-port"]).unwrap_err();
        assert!(e.contains("--sched-flags cannot be used with -a"), "{e}");
        let Action::Edit(Command::AddServer { forward, .. }) =
            parse_args(&["-a", "-t", "10.0.0.7:80", "-r", "10.0.2.3", "-b", "-w", "2"]).unwrap().action
        else {
            panic!()
        };
        assert_eq!(forward, Some('b'));
        // ipvsadm-save from a kernel: a flag IPVS keeps without effect is warned about and left out.
        let imp = import_save(
            "-A -t 10.0.0.9:80 -s rr -b flag-1\n-A -t 10.0.0.10:80 -s sh -b sh-fallback,flag-3\n",
            &MarkMap::new(),
        )
        .unwrap();
        assert!(imp.services[0].sched_flags.is_empty());
        assert_eq!(imp.services[1].sched_flags, SchedFlags { fallback: true, port: false });
        assert_eq!(imp.warnings.len(), 2, "{:?}", imp.warnings);
        assert!(imp.warnings[0].starts_with("line 1: scheduler flag \"flag-1\""), "{:?}", imp.warnings);
        assert!(imp.warnings[1].starts_with("line 2: scheduler flag \"flag-3\""), "{:?}", imp.warnings);
    }

    /// A service's `allow_from` / `deny_from` and `source_conn_rate` survive `-S` and `-R` (on
    /// the `# ferrovs-service` line) and the import of that output, and a bad entry on that
    /// line is refused.
    #[test]
    fn source_lists_survive_save_and_restore() {
        let c = Config::from_str(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"tcp-10.0.0.7-80\"\nvip = \"10.0.0.7\"\nports = [80]\n\
             scheduler = \"rr\"\nallow_from = [\"10.0.0.0/8\"]\ndeny_from = [\"10.1.0.0/16\", \"10.2.3.4\"]\n\
             source_conn_rate = 20\nsource_conn_burst = 40\n",
            "<test>",
        )
        .unwrap();
        let (save, r) = save_restored(&c);
        assert!(
            save.contains(" allow-from=10.0.0.0/8 deny-from=10.1.0.0/16,10.2.3.4/32 source-conn-rate=20/40"),
            "{save}"
        );
        let want = (c.services[0].allow_from.clone(), c.services[0].deny_from.clone());
        assert_eq!((r.services[0].allow_from.clone(), r.services[0].deny_from.clone()), want);
        assert_eq!((r.services[0].source_conn_rate, r.services[0].source_conn_burst), (20, 40));
        let imp = import_save(&save, &MarkMap::new()).unwrap();
        assert_eq!((imp.services[0].allow_from.clone(), imp.services[0].deny_from.clone()), want);
        let bad = save.replace("deny-from=10.1.0.0/16", "deny-from=10.1.0.0/99");
        let e = parse_rules(&bad).and_then(|cmds| cmds.iter().try_for_each(|cmd| apply(&mut base(), cmd)));
        assert!(e.unwrap_err().contains("bad deny-from entry \"10.1.0.0/99\""));
    }

    /// Options of another command are refused, as ipvsadm's option table does ("Illegal
    /// '--ops' option with the 'add-server' command"); before, `-a ... -o` or `-A ... -w 3`
    /// was accepted and the option silently dropped.
    #[test]
    fn options_of_another_command_are_refused() {
        for (line, opt) in [
            ("-a -u 10.0.0.7:514 -r 10.0.2.2 -o", "--ops"),
            ("-e -t 10.0.0.1:80 -r 10.0.2.2 -s rr", "--scheduler"),
            ("-a -t 10.0.0.1:80 -r 10.0.2.2 -p 60", "--persistent"),
            ("-A -t 10.0.0.1:80 -s rr -w 3", "--weight"),
            ("-E -t 10.0.0.1:80 -m", "-g/-m/-i/-b"),
            ("-A -t 10.0.0.1:80 -r 10.0.2.2", "--real-server"),
            ("-D -t 10.0.0.1:80 -s rr", "--scheduler"),
            ("-d -t 10.0.0.1:80 -r 10.0.2.2 -w 1", "--weight"),
            ("-C -x 5", "--u-threshold"),
        ] {
            let words: Vec<&str> = line.split_whitespace().collect();
            let e = parse_args(&words).unwrap_err();
            assert!(e.starts_with(&format!("option {opt}")) && e.contains("cannot be used with"), "{line}: {e}");
        }
        for ok in [
            "-A -t 10.0.0.1:80 -s rr -p 60 -M 255.255.255.0",
            "-A -u 10.0.0.1:53 -o",
            "-a -t 10.0.0.1:80 -r 10.0.2.2 -m -w 2 -x 10 -y 5",
            "-d -t 10.0.0.1:80 -r 10.0.2.2",
        ] {
            let words: Vec<&str> = ok.split_whitespace().collect();
            assert!(parse_args(&words).is_ok(), "{ok}");
        }
    }

    /// `base()` with a service named `name`.
    fn base_named(name: &str) -> Config {
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:80");
        c.services[0].name = name.into();
        c
    }

    /// Seconds of a restored check print back as the number written (`{}` of an `f64` is the
    /// shortest text that parses to it), through `-R` and the control socket alike.
    #[test]
    fn check_seconds_print_back_the_number_written() {
        for (written, printed) in [
            ("0.5", "0.5"),
            ("0.1", "0.1"),
            ("1e-3", "0.001"),
            ("0.3", "0.3"),
            ("2.675", "2.675"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.5E1", "15"),
            ("86400", "86400"),
            ("7.", "7"),
        ] {
            let rules = format!(
                "# ferrovs-service name=x proto=tcp vip=10.0.0.1 ports=80 check=tcp check-interval={written} \
                 check-retry-interval={written} check-timeout={written}\n-A -t 10.0.0.1:80 -s wlc\n"
            );
            let mut c = base();
            for cmd in parse_rules(&rules).unwrap() {
                let json = serde_json::to_string(&cmd).unwrap();
                apply(&mut c, &serde_json::from_str(&json).unwrap()).unwrap();
            }
            let h = c.services[0].health_checks.first().unwrap();
            let x: f64 = written.parse().unwrap();
            assert_eq!((h.interval, h.retry_interval, h.timeout), (x, Some(x), x), "{written}");
            let save = format_save(&c);
            let want = format!(" check-interval={printed} check-retry-interval={printed} check-timeout={printed} ");
            assert!(save.contains(&want), "{written}: {save}");
        }
    }

    /// A service's several checks: `-S` writes each from its `check=` on, `-R` reads them
    /// back in order, through the control socket's JSON too (where the first stays in
    /// `check`, the form every `ferrovsadm` and daemon reads, and the others follow in
    /// `more_checks`, absent when there are none).
    #[test]
    fn several_checks_survive_save_and_restore() {
        let text = "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.1\"\nports = [80]\n\
                    [[service.health_check]]\ntype = \"http\"\npath = \"/h\"\nrise = 1\n\
                    [[service.health_check]]\ntype = \"tcp\"\nport = 8080\ninterval = 0.5\n\
                    [[service.health_check]]\ntype = \"exec\"\ncommand = [\"/bin/true\", \"a,b\"]\n\
                    [[service.real_server]]\naddress = \"10.0.2.2\"\n\
                    [[service.real_server]]\naddress = \"10.0.2.3\"\nproxy_protocol = \"v2\"\n\
                    [[service.real_server.health_check]]\ntype = \"tcp\"\nport = 81\naddress = \"fd00::3\"\nsource = \"fd00::1\"\n\
                    [[service.real_server.health_check]]\ntype = \"ping\"\n\
                    [[service.real_server]]\naddress = \"10.0.2.4\"\nhealth_check = []\n";
        let c = Config::from_str(text, "<t>").unwrap();
        let save = format_save(&c);
        assert_eq!(save.matches(" check=").count(), 6, "{save}");
        assert!(
            save.contains(
                "# ferrovs-server proxy=v2 check=tcp check-port=81 check-address=fd00::3 check-source=fd00::1 "
            ),
            "{save}"
        );
        assert!(save.contains("# ferrovs-server check=none\n"), "{save}");
        let mut c2 = base();
        for cmd in parse_rules(&save).unwrap() {
            let json = serde_json::to_string(&cmd).unwrap();
            if let Command::AddService { ext: Some(e), .. } = &cmd {
                assert_eq!(e.more_checks.len(), 2);
                assert!(json.contains("\"more_checks\":[{\"kind\":\"tcp\""), "{json}");
            }
            apply(&mut c2, &serde_json::from_str(&json).unwrap()).unwrap();
        }
        assert_eq!(c2.services[0].health_checks, c.services[0].health_checks, "{save}");
        let own = |c: &Config| c.services[0].real_servers.iter().map(|r| r.health_checks.clone()).collect::<Vec<_>>();
        assert_eq!(own(&c2), own(&c), "{save}");
        assert_eq!(format_save(&c2), save);

        // One check: no `more_checks` on the socket (the form from before several).
        let one = parse_ext("check=tcp check-port=22").unwrap();
        assert!(!serde_json::to_string(&one).unwrap().contains("more_checks"));
        // A check's fields follow its `check=`; the first one's may also come before it.
        let e = parse_ext("check-port=1 check=tcp check-interval=2 check=http check-path=/x check=ping").unwrap();
        let all: Vec<HealthCheck> = e.check.into_iter().chain(e.more_checks).collect();
        assert_eq!(
            all.iter().map(|h| h.kind).collect::<Vec<_>>(),
            [HealthCheckKind::Tcp, HealthCheckKind::Http, HealthCheckKind::Ping]
        );
        assert_eq!((all[0].port, all[0].interval, all[0].path.as_deref()), (Some(1), 2.0, None));
        assert_eq!((all[1].port, all[1].path.as_deref()), (None, Some("/x")));
        let many = "check=tcp ".repeat(HealthCheck::MAX_PER_SERVICE);
        assert_eq!(parse_ext(&many).unwrap().more_checks.len(), HealthCheck::MAX_PER_SERVICE - 1);
        assert!(parse_ext(&format!("{many}check=ping")).unwrap_err().contains("more than 16"));
        assert!(parse_server_ext(&format!("{many}check=ping")).unwrap_err().contains("more than 16"));
        assert!(parse_server_ext("check=none check-port=1").unwrap_err().contains("check=none with"));
        assert_eq!(parse_server_ext("proxy=v1").unwrap().checks, None);
    }

    /// A bad `# ferrovs-service` / `# ferrovs-server` value is an error naming its line.
    #[test]
    fn bad_ferrovs_comment_values_name_the_line() {
        for (t, part) in [
            ("-A -t 10.0.0.9:80\n# ferrovs-service quorum=-1\n-A -t 10.0.0.1:80\n", "bad quorum"),
            ("\n# ferrovs-service hysteresis=4294967296\n", "bad hysteresis"),
            ("\n# ferrovs-service notify-timeout=soon\n", "bad notify-timeout"),
            ("\n# ferrovs-service notify-up=/bin/x%zz\n", "notify-up"),
            ("\n# ferrovs-service check=http check-interval=NaN\n", "check-interval"),
            ("\n# ferrovs-service check=http check-timeout=-1\n", "check-timeout"),
            ("\n# ferrovs-service check-rise=2\n", "without check=TYPE"),
            ("\n# ferrovs-service check=bfd\n", "bad check"),
            ("\n# ferrovs-service sorry=10.0.0.1:99999\n", "sorry server"),
            ("\n# ferrovs-service check=send_expect check-send=%G1\n", "check-send"),
            ("\n# ferrovs-service check=send_expect check-send=%FF\n", "check-send"),
            ("\n# ferrovs-service check=send_expect check-expect=ab%F\n", "check-expect"),
            ("\n# ferrovs-service check=exec check-command=/bin/x,%\u{e9}\n", "check-command"),
            ("\n# ferrovs-service local=10.0.0.1,x\n", "local address"),
            ("\n# ferrovs-service forward=masq\n", "bad forward"),
            ("\n# ferrovs-service syn-proxy=yes\n", "syn-proxy"),
            ("\n# ferrovs-service ftp-max-expectations=300\n", "ftp-max-expectations"),
            ("\n# ferrovs-server proxy=v3\n", "bad proxy"),
            ("\n# ferrovs-server weight=3\n", "unknown ferrovs-server field"),
        ] {
            let e = parse_rules(t).expect_err(t);
            assert!(e.starts_with("line 2: ") && e.contains(part), "{t:?}: {e}");
        }
        // What parses but the validator refuses is refused as a config file's would be.
        let mut c = base();
        let rules = "# ferrovs-service name=x proto=tcp vip=10.0.0.1 ports=80 quorum=2 hysteresis=2\n\
                     -A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.2.2 -m\n";
        for cmd in parse_rules(rules).unwrap() {
            apply(&mut c, &cmd).unwrap();
        }
        let e = crate::ctl::control::validate(&c).unwrap_err();
        assert!(e.contains("hysteresis"), "{e}");
    }

    /// `ferrovs config import --from ipvsadm` reads `ferrovsadm -S` output as `-R` does (before,
    /// it dropped every `# ferrovs-...` comment: names, port groups and all the options of
    /// `save_restore_keeps_every_service_option` were lost).
    #[test]
    fn import_reads_ferrovs_comments() {
        let c = Config::from_str(EVERY_OPTION, "<t>").unwrap();
        let save = format_save(&c);
        let imp = import_save(&save, &MarkMap::new()).unwrap_or_else(|e| panic!("{e}\n{save}"));
        let lost = lost_fields(&c.services, &imp.services);
        assert!(lost.is_empty(), "import lost:\n{}\n-S printed:\n{save}", lost.join("\n"));
        roundtrip(&imp);
        let e =
            import_save("-A -t 10.0.0.9:80\n# ferrovs-service check=http check-rise=x\n", &MarkMap::new()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("bad check-rise"), "{e}");
        let e = import_save("# ferrovs-server proxy=v9\n", &MarkMap::new()).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn a_mark_names_one_service_per_family() {
        let text = r#"
[engine]
backend = "memory"

[[service]]
name = "m4"
vip = "10.0.0.100"
ports = [80]
fwmark = 5

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "m6"
vip = "2001:db8::100"
ports = [80]
fwmark = 5

[[service.real_server]]
address = "2001:db8:2::2"
"#;
        let mut c = Config::from_str(text, "<t>").unwrap();
        // `-f 5` is the IPv4 service, `-f 5 -6` the IPv6 one, in edits and in listings.
        assert_eq!(find_service(&c, &SvcKey::Fwmark { mark: 5, v6: false }), Some(0));
        assert_eq!(find_service(&c, &SvcKey::Fwmark { mark: 5, v6: true }), Some(1));
        run(&mut c, "-E -f 5 -6 -s wlc");
        assert_eq!((c.services[0].scheduler.as_str(), c.services[1].scheduler.as_str()), ("wlc", "wlc"));
        run(&mut c, "-E -f 5 -s rr");
        assert_eq!((c.services[0].scheduler.as_str(), c.services[1].scheduler.as_str()), ("rr", "wlc"));
        let views = list_of_config(&c).services;
        let k6 = SvcKey::Fwmark { mark: 5, v6: true };
        assert_eq!(views.iter().filter(|v| view_matches(v, &k6)).map(|v| v.name.as_str()).collect::<Vec<_>>(), ["m6"]);
        // -D -f 5 -6 leaves the IPv4 service.
        run(&mut c, "-D -f 5 -6");
        assert_eq!(c.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["m4"]);
        assert_eq!(find_service(&c, &SvcKey::Fwmark { mark: 5, v6: true }), None);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            vec!["-A", "-t", "10.0.0.1"],
            vec!["-A", "-t", "nonsense:80"],
            vec!["-A", "-t", "10.0.0.1:80", "-s", "bogus"],
            vec!["-a", "-t", "10.0.0.1:80"],
            vec!["-A", "-a"],
            vec!["-Q"],
            vec!["-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2", "-w", "70000"],
        ] {
            assert!(parse_args(&bad).is_err(), "{bad:?} should fail");
        }
        let inv = parse_args(&["-L", "-n", "--socket", "/tmp/x.sock", "--json"]).unwrap();
        assert_eq!(inv.socket.as_deref(), Some("/tmp/x.sock"));
        assert!(inv.json);
        let inv = parse_args(&["--set", "900", "0", "300"]).unwrap();
        assert_eq!(inv.action, Action::Edit(Command::SetTimeouts { tcp: 900, tcpfin: 0, udp: 300 }));
        // ipvsadm accepts glued forms: -t10.0.0.1:80 and --weight=3
        let inv = parse_args(&["-a", "-t10.0.0.1:80", "-r", "10.0.0.2", "--weight=3"]).unwrap();
        assert!(matches!(inv.action, Action::Edit(Command::AddServer { weight: Some(3), .. })));
    }

    #[test]
    fn zero_port_persistent_service_is_every_port() {
        // ipvsadm: "Zero port specified for non-persistent service" only
        // without -p; `-A -t VIP:0 -p` is the all-ports persistent service.
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:0 -s rr -p 300");
        run(&mut c, "-a -t 10.0.0.1:0 -r 10.0.2.2 -g");
        assert!(c.services[0].ports.is_empty(), "{:?}", c.services[0].ports);
        crate::ctl::control::validate(&c).unwrap();
        assert!(parse_args(&["-A", "-t", "10.0.0.1:0", "-s", "rr"]).is_err());
        // -S, -C, -R of all-ports services (with and without persistence).
        let mut text = String::from("[engine]\nbackend = \"memory\"\n\n");
        text.push_str("[[service]]\nname = \"all\"\nvip = \"10.0.0.2\"\nscheduler = \"rr\"\nforward = \"dr\"\n\n");
        text.push_str("[[service.real_server]]\naddress = \"10.0.2.3\"\n");
        let mut c = Config::from_str(&text, "<t>").unwrap();
        run(&mut c, "-A -t 10.0.0.1:0 -s rr -p 300");
        let save = format_save(&c);
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap_or_else(|e| panic!("{e}\n{save}")) {
            apply(&mut c2, &cmd).unwrap();
        }
        assert_eq!(format_save(&c2), save);
    }

    #[test]
    fn a_non_ascii_option_is_an_error() {
        // A multi-byte character after the dash: the `-tVIP:PORT` split looked at byte 1..2,
        // inside the character, and panicked.
        for a in ["-é10.0.0.1:80", "-€", "--é", "-tß"] {
            assert!(parse_args(&["-A", a]).is_err(), "{a}");
            assert!(parse_rules(&format!("-A {a}\n")).is_err(), "{a}");
        }
    }

    #[test]
    fn server_without_port_is_the_service_port() {
        // ipvsadm copies the service port to `-r ADDR` without a port:
        // `-d -r 10.0.2.2` deletes 10.0.2.2:80, not 10.0.2.2:8080.
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:80 -s rr");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.2:8080 -m");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.2:80 -m -w 2");
        run(&mut c, "-e -t 10.0.0.1:80 -r 10.0.2.2 -w 3");
        assert_eq!(c.services[0].real_servers[0].weight, 1, "10.0.2.2:8080 untouched");
        assert_eq!(c.services[0].real_servers[1].weight, 3);
        run(&mut c, "-d -t 10.0.0.1:80 -r 10.0.2.2");
        assert_eq!(c.services[0].real_servers.len(), 1);
        assert_eq!(c.services[0].real_servers[0].port, Some(8080), "10.0.2.2:80 deleted");
    }

    #[test]
    fn dr_and_tunnel_servers_take_the_service_port() {
        // ipvsadm: with -g or -i (and -g is the default) the destination
        // port is the service port (DR and IPIP cannot change ports).
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:80 -s rr");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.2:8080 -g");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.3:8080");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.4:8080 -i");
        let out = format_list(&list_of_config(&c), &ListOpts { numeric: true, sort: true, ..Default::default() });
        assert_eq!(
            out,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.0.1:80 rr\n  \
             -> 10.0.2.2:80                  Route   1      0          0         \n  \
             -> 10.0.2.3:80                  Route   1      0          0         \n  \
             -> 10.0.2.4:80                  Tunnel  1      0          0         \n"
        );
        // The same destination again is ipvsadm's "already exists", not a second entry.
        let cmd = parse_args(&["-a", "-t", "10.0.0.1:80", "-r", "10.0.2.2:80", "-g"]).unwrap();
        let Action::Edit(cmd) = cmd.action else { panic!() };
        let e = apply(&mut c, &cmd).unwrap_err();
        assert!(e.contains("already exists"), "{e}");
        // A config file's DR server with another port still round-trips through -S, -R.
        c.services[0].real_servers[0].port = Some(8080);
        let save = format_save(&c);
        let mut c2 = c.clone();
        apply(&mut c2, &Command::Clear).unwrap();
        for cmd in parse_rules(&save).unwrap() {
            apply(&mut c2, &cmd).unwrap();
        }
        assert_eq!(format_save(&c2), save);
        assert_eq!(c2.services[0].real_servers[0].port, Some(8080));
    }

    #[test]
    fn edits() {
        let mut c = base();
        run(&mut c, "-A -t 10.0.0.1:80");
        assert!(apply(&mut c, &parse_rules("-A -t 10.0.0.1:80").unwrap()[0]).is_err());
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.2:80 -m -w 5");
        run(&mut c, "-a -t 10.0.0.1:80 -r 10.0.2.3 -m");
        run(&mut c, "-e -t 10.0.0.1:80 -r 10.0.2.2:80 -w 0");
        assert_eq!(c.services[0].real_servers[0].weight, 0);
        assert_eq!(c.services[0].forward, Forward::Nat, "-e keeps the forwarding method");
        run(&mut c, "-d -t 10.0.0.1:80 -r 10.0.2.3:80");
        assert_eq!(c.services[0].real_servers.len(), 1);
        run(&mut c, "-E -t 10.0.0.1:80 -s lc -p 60 -M 255.255.255.0");
        assert_eq!(c.services[0].persistence, Some(Persistence { timeout: 60, netmask: 24 }));
        assert!(format_save(&c).contains("-A -t 10.0.0.1:80 -s lc -p 60 -M 255.255.255.0\n"));
        run(&mut c, "--set 100 20 30");
        assert_eq!(c.engine.timeouts.tcp_established, 100);
        run(&mut c, "-D -t 10.0.0.1:80");
        assert!(c.services.is_empty());
    }

    /// ipvsadm's own limits (ipvsadm.c): -p 1..MAX_TIMEOUT (31 days), -f 1..UINT_MAX, -x/-y
    /// 0..INT_MAX, an IPv6 -M 1..128.
    #[test]
    fn limits_as_ipvsadm() {
        assert!(parse_args(&["-A", "-t", "10.0.0.1:80", "-p", "2678400"]).is_ok());
        let e = parse_args(&["-A", "-t", "10.0.0.1:80", "-p", "2678401"]).unwrap_err();
        assert!(e.contains("persistent"), "{e}");
        let e = parse_args(&["-E", "-f", "0", "-s", "rr"]).unwrap_err();
        assert!(e.contains("fwmark"), "{e}");
        assert!(parse_args(&["-E", "-f", "1", "-s", "rr"]).is_ok());
        for o in ["-x", "-y"] {
            assert!(parse_args(&["-a", "-t", "10.0.0.1:80", "-r", "10.0.2.2", o, "2147483647"]).is_ok());
            let e = parse_args(&["-a", "-t", "10.0.0.1:80", "-r", "10.0.2.2", o, "2147483648"]).unwrap_err();
            assert!(e.contains("threshold"), "{e}");
        }
        let mut c = base();
        let e = apply(&mut c, &parse_rules("-A -t [2001:db8::1]:80 -p 60 -M 0").unwrap()[0]).unwrap_err();
        assert!(e.contains("ipv6 netmask"), "{e}");
        run(&mut c, "-A -t [2001:db8::1]:80 -p 60 -M 64");
        // IPv4 /0 (every client one template) stays accepted, as ipvsadm's 0.0.0.0.
        run(&mut c, "-A -t 10.0.0.1:80 -p 60 -M 0");
    }

    /// The control socket takes edit commands as JSON, not through the command-line parser:
    /// the config validator holds them to the same limits, so -S never prints what -R refuses.
    #[test]
    fn socket_edits_are_held_to_ipvsadm_limits() {
        let edit = |json: &str| -> Result<Config, String> {
            let mut c = base();
            run(&mut c, "-A -t 10.0.0.1:80 -s rr");
            apply(&mut c, &serde_json::from_str::<Command>(json).unwrap())?;
            crate::ctl::control::validate(&c)
        };
        let svc = r#""key":{"tcp":{"vip":"10.0.0.1","port":80}}"#;
        let e =
            edit(&format!(r#"{{"cmd":"edit_service",{svc},"scheduler":null,"persistent":2678401,"netmask":null}}"#))
                .unwrap_err();
        assert!(e.contains("persistence timeout must be between 1 and 2678400"), "{e}");
        let c =
            edit(&format!(r#"{{"cmd":"edit_service",{svc},"scheduler":null,"persistent":2678400,"netmask":null}}"#))
                .unwrap();
        assert!(parse_rules(&format_save(&c)).is_ok(), "-S of the longest timeout restores");
        for (x, y) in [("2147483648", "0"), ("0", "4294967295")] {
            let e = edit(&format!(
                r#"{{"cmd":"add_server",{svc},"addr":"10.0.0.2","port":80,"forward":"m","weight":1,"upper":{x},"lower":{y}}}"#
            ))
            .unwrap_err();
            assert!(e.contains("must be between 0 and 2147483647"), "{e}");
        }
        let e = edit(r#"{"cmd":"add_service","key":{"fwmark":{"mark":0,"v6":false}},"scheduler":null,"persistent":null,"netmask":null}"#)
            .unwrap_err();
        assert!(e.contains("invalid fwmark value"), "{e}");
    }
}
