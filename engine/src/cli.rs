//! The command-line surfaces of `ferrovs` (clap derive) and `ferrovsadm`
//! (a clap description of its ipvsadm-style command line, used for the man
//! page and shell completions; the real parser is [`crate::ctl::ipvsadm::parse_args`],
//! and a test keeps the two in step).

use clap::{Arg, ArgAction, Command, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferrovs",
    version,
    about = "Kernel-bypass L4 load balancer with an FTP gateway",
    long_about = "ferrovs is a kernel-bypass L4 load balancer in the LVS tradition (NAT, direct routing and IPIP \
tunnelling, every IPVS scheduler) with an FTP application-layer gateway for active and passive FTP over IPv4 and \
IPv6. `ferrovs run` is the daemon: it opens the configured ports (AF_PACKET or DPDK), starts one poll-mode worker per \
queue, serves the control socket used by ferrovsadm(8) and, if configured, Prometheus metrics and a status page. \
SIGINT/SIGTERM stop it; SIGHUP re-reads the configuration (a file that does not validate is refused and the running \
configuration kept). Started by systemd with Type=notify it reports READY=1 once the ports are up, RELOADING=1 \
during a reload and STOPPING=1 on shutdown. See ferrovs.toml(5) for the configuration file and ferrovs-SUBCOMMAND(8) \
for each subcommand. The log level is set with FERROVS_LOG (e.g. info, debug); --log-format json writes one JSON \
object per log line."
)]
pub struct Cli {
    /// Log lines as text (colours only on a terminal) or one JSON object
    /// per line (timestamp, level, target, fields) for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the data plane in the foreground until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Replay pcap files through the engine offline (deterministic).
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// IN.pcap (first interface) or NAME=IN.pcap; repeatable.
        #[arg(long, required = true)]
        input: Vec<String>,
        /// OUT.pcap (everything) or NAME=OUT.pcap; repeatable.
        #[arg(long, required = true)]
        output: Vec<String>,
        #[arg(long)]
        workers: Option<usize>,
        /// Print counters as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the pipeline on in-memory ports with synthetic traffic.
    Bench {
        #[arg(long, value_enum, default_value = "established")]
        scenario: crate::tools::bench::Scenario,
        /// Connections in the tables (total over workers).
        #[arg(long, default_value_t = 100_000)]
        flows: usize,
        /// Measured packets (total over workers).
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Frame size including FCS (64..=1518).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Do not pin workers to cores.
        #[arg(long)]
        no_pin: bool,
        /// Flood scenarios: measure only the flood's packets (instructions per flood packet
        /// with scripts/callgrind-pps).
        #[arg(long)]
        flood_only: bool,
        /// Frames the established traffic cycles through (total over workers; default one
        /// per flow and direction): with more, each flow's frames repeat in a shuffled array
        /// of this many, so few flows read as much frame memory per packet as many do.
        #[arg(long, default_value_t = 0)]
        frames: usize,
        #[arg(long)]
        json: bool,
        /// Run every scenario over a grid of flow counts and worker counts
        /// and write a CSV and an SVG plot (see --out).
        #[arg(long)]
        sweep: bool,
        /// Flow counts of the sweep, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000,10000000")]
        sweep_flows: Vec<usize>,
        /// Worker counts of the sweep, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        sweep_workers: Vec<usize>,
        /// Scenarios of the sweep, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "established,new,dr,ftp")]
        sweep_scenarios: Vec<crate::tools::bench::Scenario>,
        /// Output path prefix of the sweep: writes PREFIX.csv and PREFIX.svg.
        #[arg(long, default_value = "bench-sweep")]
        out: std::path::PathBuf,
        /// Machine name written into the plot's title (default: the CPU model from /proc/cpuinfo).
        #[arg(long)]
        machine: Option<String>,
    },
    /// Traffic generator (pktgen-style) on AF_PACKET: send on --tx, count
    /// what comes back on --rx.
    Gen {
        /// Port backend: af_packet, or dpdk (a build with --features dpdk).
        #[arg(long, default_value = "af_packet", value_parser = ["af_packet", "dpdk"])]
        backend: String,
        /// EAL arguments for --backend dpdk, space-separated.
        #[arg(long, default_value = "--no-huge -m 512 --no-pci --no-shconf --file-prefix fvs-gen")]
        eal_args: String,
        /// Device to send on (kernel interface, or DPDK vdev spec / PCI address).
        #[arg(long)]
        tx: String,
        /// Device to count returning packets on.
        #[arg(long)]
        rx: Option<String>,
        /// Packets per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Frame size including FCS (64..=1518).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Source addresses: A or A-B.
        #[arg(long, default_value = "100.64.0.1-100.64.0.254")]
        src: crate::tools::gen::Span<std::net::Ipv4Addr>,
        /// Destination addresses: A or A-B.
        #[arg(long)]
        dst: crate::tools::gen::Span<std::net::Ipv4Addr>,
        #[arg(long, default_value = "1024-65535")]
        sport: crate::tools::gen::Span<u16>,
        #[arg(long, default_value = "80")]
        dport: crate::tools::gen::Span<u16>,
        #[arg(long, value_enum, default_value = "udp")]
        proto: crate::tools::gen::GenProto,
        /// Destination MAC (the balancer's port), aa:bb:cc:dd:ee:ff.
        #[arg(long)]
        dst_mac: String,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many packets (0: no limit).
        #[arg(long, default_value_t = 0)]
        count: u64,
        #[arg(long)]
        json: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file; errors name the file and line.
    Check { file: PathBuf },
    /// Translate an ipvsadm-save file, a Piranha lvs.cf or a keepalived.conf
    /// into ferrovs TOML services (printed on stdout; unsupported keys are
    /// reported as comments and on stderr).
    Import {
        /// Source format.
        #[arg(long, value_parser = ["ipvsadm", "lvs.cf", "keepalived"])]
        from: String,
        file: PathBuf,
        /// iptables-save / ip6tables-save output (or an iptables script) whose mangle-table MARK
        /// rules give firewall-mark services their address and ports. Repeatable.
        #[arg(long, value_name = "RULES")]
        marks: Vec<PathBuf>,
    },
}

/// Parse a comma-free clap value list helper for `ferrovsadm` options.
fn opt(
    id: &'static str,
    short: Option<char>,
    long: &'static str,
    value: Option<&'static str>,
    help: &'static str,
) -> Arg {
    let mut a = Arg::new(id).long(long).help(help);
    if let Some(c) = short {
        a = a.short(c);
    }
    match value {
        Some(v) => a.value_name(v).action(ArgAction::Set),
        None => a.action(ArgAction::SetTrue),
    }
}

/// Sort columns of `ferrovsadm top` (also the keys that select them).
pub const TOP_SORT_COLUMNS: &[&str] = &["name", "conns", "active", "pps", "bps", "weight", "health"];

/// A clap description of `ferrovsadm`'s command line (ipvsadm's surface plus
/// the ferrovs verbs), for the man page and shell completions. `ferrovsadm`
/// itself parses with [`crate::ctl::ipvsadm::parse_args`]; the tests in this
/// module check that both accept the same options.
pub fn ferrovsadm_command() -> Command {
    let svc = "SERVICE-ADDRESS";
    Command::new("ferrovsadm")
        .version(env!("CARGO_PKG_VERSION"))
        .about("ipvsadm-compatible administration of a running ferrovs over its control socket")
        .long_about(
            "ferrovsadm takes ipvsadm command lines unchanged (-A/-E/-D/-C, -a/-e/-d, -L, -Z, --set, -S, -R) and \
             sends them to the ferrovs daemon over its unix control socket, plus ferrovs-only verbs (conns, ftp, \
             drops, ports, health, status, metrics, reload, top). Addresses are IPv4 ADDR:PORT or IPv6 [ADDR]:PORT; -f \
             takes a firewall mark (a ferrovs service with fwmark = MARK).",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_conflicts_with_subcommands(true)
        .arg(opt("add-service", Some('A'), "add-service", None, "Add a virtual service."))
        .arg(opt("edit-service", Some('E'), "edit-service", None, "Edit a virtual service."))
        .arg(opt("delete-service", Some('D'), "delete-service", None, "Delete a virtual service."))
        .arg(opt("clear", Some('C'), "clear", None, "Clear the whole table."))
        .arg(opt("restore", Some('R'), "restore", None, "Restore rules (ipvsadm-save lines) from stdin."))
        .arg(opt("save", Some('S'), "save", None, "Save rules to stdout."))
        .arg(opt("add-server", Some('a'), "add-server", None, "Add a real server to a service."))
        .arg(opt("edit-server", Some('e'), "edit-server", None, "Edit a real server."))
        .arg(opt("delete-server", Some('d'), "delete-server", None, "Delete a real server."))
        .arg(opt("list", Some('L'), "list", None, "List the table (also -l).").short_alias('l'))
        .arg(opt("zero", Some('Z'), "zero", None, "Zero the counters of a service or all services."))
        .arg(
            Arg::new("set")
                .long("set")
                .num_args(3)
                .value_names(["TCP", "TCPFIN", "UDP"])
                .help("Set connection timeouts in seconds (0 keeps the current value)."),
        )
        .arg(opt("tcp-service", Some('t'), "tcp-service", Some(svc), "TCP service VIP:PORT."))
        .arg(opt("udp-service", Some('u'), "udp-service", Some(svc), "UDP service VIP:PORT."))
        .arg(opt("fwmark-service", Some('f'), "fwmark-service", Some("MARK"), "Service by firewall mark."))
        .arg(opt("ipv6", Some('6'), "ipv6", None, "The -f service is IPv6."))
        .arg(
            opt("scheduler", Some('s'), "scheduler", Some("SCHEDULER"), "Scheduling method.")
                .value_parser(clap::builder::PossibleValuesParser::new(ferrovs_sched::NAMES)),
        )
        .arg(
            Arg::new("persistent")
                .short('p')
                .long("persistent")
                .value_name("TIMEOUT")
                .num_args(0..=1)
                .help("Persistent service (timeout in seconds, default 300)."),
        )
        .arg(opt("netmask", Some('M'), "netmask", Some("NETMASK"), "Persistence granularity mask."))
        .arg(opt(
            "ops",
            Some('o'),
            "ops",
            None,
            "One-packet scheduling (UDP services): each datagram scheduled on its own, no connection kept.",
        ))
        .arg(opt("real-server", Some('r'), "real-server", Some("SERVER-ADDRESS"), "Real server ADDR[:PORT]."))
        .arg(opt("gatewaying", Some('g'), "gatewaying", None, "Direct routing (DR)."))
        .arg(opt("masquerading", Some('m'), "masquerading", None, "NAT (masquerading)."))
        .arg(opt("ipip", Some('i'), "ipip", None, "IPIP tunnelling."))
        .arg(
            opt(
                "fullnat",
                Some('b'),
                "fullnat",
                None,
                "With -a/-e: full NAT (DPVS ipvsadm -b), source and destination rewritten; the service needs \
                 local_addresses. With -A/-E, -b FLAGS is --sched-flags.",
            )
            .value_name("FLAGS")
            .num_args(0..=1),
        )
        .arg(opt(
            "sched-flags",
            None,
            "sched-flags",
            Some("FLAGS"),
            "Scheduler flags, comma-separated: sh-fallback, sh-port (sh), mh-fallback, mh-port (mh), flag-1, flag-2.",
        ))
        .arg(opt("weight", Some('w'), "weight", Some("WEIGHT"), "Weight of the real server (0..65535)."))
        .arg(opt("u-threshold", Some('x'), "u-threshold", Some("UTHRESHOLD"), "Upper connection threshold."))
        .arg(opt("l-threshold", Some('y'), "l-threshold", Some("LTHRESHOLD"), "Lower connection threshold."))
        .arg(opt("numeric", Some('n'), "numeric", None, "Numeric addresses and ports."))
        .arg(opt("connection", Some('c'), "connection", None, "List connections."))
        .arg(opt("stats", None, "stats", None, "List with counters."))
        .arg(opt("rate", None, "rate", None, "List with rates."))
        .arg(opt("timeout", None, "timeout", None, "Show the timeouts."))
        .arg(opt("thresholds", None, "thresholds", None, "List with thresholds."))
        .arg(opt("persistent-conn", None, "persistent-conn", None, "List with persistent connections."))
        .arg(opt("exact", Some('X'), "exact", None, "Exact numbers."))
        .arg(opt("nosort", None, "nosort", None, "Do not sort the list."))
        .arg(opt("sort", None, "sort", None, "Sort the list (default)."))
        .arg(
            opt(
                "socket",
                None,
                "socket",
                Some("PATH"),
                "Control socket (default /run/ferrovs/ferrovs.sock, or $FERROVS_SOCKET).",
            )
            .global(true)
            .value_hint(clap::ValueHint::FilePath),
        )
        .arg(opt("json", None, "json", None, "Print the daemon's JSON replies.").global(true))
        .arg(opt("help", Some('h'), "help", None, "Print help."))
        .arg(opt("version", Some('v'), "version", None, "Print the version."))
        .arg(opt("conns-flag", None, "conns", None, "Same as the conns verb."))
        .arg(opt("ftp-flag", None, "ftp", None, "Same as the ftp verb."))
        .arg(opt("drops-flag", None, "drops", None, "Same as the drops verb."))
        .arg(opt("ports-flag", None, "ports", None, "Same as the ports verb."))
        .arg(opt("health-flag", None, "health", None, "Same as the health verb."))
        .arg(opt("status-flag", None, "status", None, "Same as the status verb."))
        .arg(opt("metrics-flag", None, "metrics", None, "Same as the metrics verb."))
        .arg(opt("reload-flag", None, "reload", None, "Same as the reload verb."))
        .arg(opt("drain-flag", None, "drain", None, "Same as the drain verb."))
        .arg(opt("top-flag", None, "top", None, "Same as the top verb."))
        .subcommand(Command::new("conns").about("Connections with their FTP control/data relations."))
        .subcommand(Command::new("ftp").about("FTP gateway counters per service."))
        .subcommand(Command::new("drops").about("Per-worker packet counters and drops by reason."))
        .subcommand(Command::new("ports").about(
            "What each port counted itself: frames and bytes each way, and the frames it dropped \
             (a full receive ring: no worker saw them), per port and queue.",
        ))
        .subcommand(Command::new("health").about("Health-check state of every real server."))
        .subcommand(Command::new("status").about("Daemon version, workers, uptime and services."))
        .subcommand(Command::new("metrics").about("The Prometheus exposition text."))
        .subcommand(Command::new("reload").about("Re-read the configuration file (as SIGHUP)."))
        .subcommand(Command::new("drain").about(
            "Cluster: withdraw this node's VIPs from BIRD, let established connections finish (up to \
             [cluster] drain_timeout), then stop the daemon (as SIGTERM).",
        ))
        .subcommand(
            Command::new("top")
                .about("Live view of services and real servers (plain text when stdout is not a terminal).")
                .long_about(
                    "A terminal view refreshed every --interval seconds: services and real servers with \
                     connections, packets/s, bytes/s, weights and health, drops by reason and FTP gateway \
                     counters. Keys: q or Esc quits, the first letter of a column (n c a p b w h) or Tab/left/right \
                     selects the sort column, r reverses. When stdout is not a terminal it prints the same tables \
                     as plain text every interval.",
                )
                .arg(opt("interval", None, "interval", Some("SECONDS"), "Refresh period (default 1)."))
                .arg(opt("iterations", None, "iterations", Some("N"), "Stop after N refreshes (default: run until q)."))
                .arg(
                    opt("sort-by", None, "sort-by", Some("COLUMN"), "Initial sort column (default conns).")
                        .value_parser(clap::builder::PossibleValuesParser::new(TOP_SORT_COLUMNS)),
                ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::ipvsadm::parse_args;

    fn sample_value(id: &str) -> Vec<&'static str> {
        match id {
            "tcp-service" | "udp-service" => vec!["10.0.0.1:80"],
            "fwmark-service" => vec!["7"],
            "scheduler" => vec!["rr"],
            "netmask" => vec!["255.255.255.0"],
            "real-server" => vec!["10.0.0.2:80"],
            "weight" | "u-threshold" | "l-threshold" | "iterations" | "interval" => vec!["1"],
            "socket" => vec!["/tmp/x.sock"],
            "set" => vec!["1", "2", "3"],
            "sort-by" => vec!["conns"],
            "persistent" => vec!["300"],
            "sched-flags" => vec!["sh-port"],
            _ => vec![],
        }
    }

    fn names(a: &Arg) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(s) = a.get_short() {
            v.push(format!("-{s}"));
        }
        for s in a.get_short_and_visible_aliases().unwrap_or_default() {
            v.push(format!("-{s}"));
        }
        for s in a.get_all_short_aliases().unwrap_or_default() {
            v.push(format!("-{s}"));
        }
        if let Some(l) = a.get_long() {
            v.push(format!("--{l}"));
        }
        v.sort();
        v.dedup();
        v
    }

    /// Every option and verb of the clap description is one the real parser knows.
    #[test]
    fn every_described_option_is_parsed() {
        let cmd = ferrovsadm_command();
        cmd.clone().debug_assert();
        let mut checked = 0;
        let mut check = |prefix: &[&str], a: &Arg| {
            for n in names(a) {
                let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
                argv.push(n.clone());
                argv.extend(sample_value(a.get_id().as_str()).iter().map(|s| s.to_string()));
                if let Err(e) = parse_args(&argv) {
                    assert!(
                        !e.contains("unknown option") && !e.contains("requires an argument") && !e.contains("takes no"),
                        "{argv:?}: the clap description and ipvsadm::parse_args disagree: {e}"
                    );
                }
                checked += 1;
            }
        };
        for a in cmd.get_arguments() {
            check(&[], a);
        }
        for sc in cmd.get_subcommands() {
            parse_args(&[sc.get_name()]).unwrap_or_else(|e| panic!("verb {}: {e}", sc.get_name()));
            for a in sc.get_arguments() {
                check(&[sc.get_name()], a);
            }
        }
        assert!(checked > 50, "only {checked} options checked");
    }

    /// Every option literal the real parser matches on is in the clap description.
    #[test]
    fn every_parsed_option_is_described() {
        let src = include_str!("ctl/ipvsadm.rs");
        // `parse_args` is `parse_cmdline` for a command line (`-R` calls it per line).
        let body = &src[src.find("fn parse_cmdline").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let cmd = ferrovsadm_command();
        let mut known: Vec<String> = cmd.get_arguments().flat_map(names).collect();
        for sc in cmd.get_subcommands() {
            known.push(sc.get_name().to_string());
            known.extend(sc.get_arguments().flat_map(names));
        }
        let mut found = 0;
        for line in body.lines().filter(|l| l.trim_start().starts_with('"') && l.contains("=>")) {
            let pat = &line[..line.find("=>").unwrap()];
            for lit in pat.split('|').map(|s| s.trim().trim_matches('"')) {
                found += 1;
                assert!(known.iter().any(|k| k == lit), "parse_args accepts {lit:?} but the clap description lacks it");
            }
        }
        assert!(found > 50, "only {found} option literals found in parse_cmdline");
    }
}
