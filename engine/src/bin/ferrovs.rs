//! `ferrovs`: the daemon (`run`), offline `replay`, `config` tools.

use clap::{Parser, Subcommand};
use ferrovs_cfg::Config;
use ferrovs_engine::{daemon, replay};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "ferrovs", version, about = "Kernel-bypass L4 load balancer with an FTP gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
        scenario: ferrovs_engine::bench::Scenario,
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
        #[arg(long)]
        json: bool,
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
        src: ferrovs_engine::gen::Span<std::net::Ipv4Addr>,
        /// Destination addresses: A or A-B.
        #[arg(long)]
        dst: ferrovs_engine::gen::Span<std::net::Ipv4Addr>,
        #[arg(long, default_value = "1024-65535")]
        sport: ferrovs_engine::gen::Span<u16>,
        #[arg(long, default_value = "80")]
        dport: ferrovs_engine::gen::Span<u16>,
        #[arg(long, value_enum, default_value = "udp")]
        proto: ferrovs_engine::gen::GenProto,
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
enum ConfigCmd {
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
    },
}

fn split_named(s: &str) -> (Option<String>, PathBuf) {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), PathBuf::from(f)),
        _ => (None, PathBuf::from(s)),
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| format!("bad MAC {s:?}"))
}

fn load(path: &PathBuf) -> Result<Config, String> {
    Config::from_file(path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERROVS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrovs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = Arc::new(load(&config)?);
            daemon::install_signal_handlers();
            let running = daemon::open_and_start(cfg.clone())?;
            let control = match ferrovs_engine::control::spawn(Some(config.clone()), cfg.clone(), &running) {
                Ok(c) => c,
                Err(e) => {
                    running.stop();
                    return Err(format!("control socket {}: {e}", cfg.engine.control_socket.display()));
                }
            };
            tracing::info!(
                workers = cfg.engine.workers,
                interfaces = cfg.interfaces.len(),
                services = cfg.services.len(),
                "ferrovs running"
            );
            let mut hups = daemon::hup_count();
            while !daemon::stop_requested() {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if daemon::hup_count() != hups {
                    hups = daemon::hup_count();
                    match control.reload() {
                        Ok(_) => tracing::info!("configuration reloaded"),
                        Err(e) => tracing::error!("reload failed, keeping the running config: {e}"),
                    }
                }
            }
            let snapshot = control.snapshot();
            control.shutdown();
            let report = daemon::format_counters(running.view.as_ref(), &snapshot);
            running.stop();
            print!("{report}");
            Ok(())
        }
        Cmd::Replay { config, input, output, workers, json } => {
            let cfg = load(&config)?;
            let args = replay::ReplayArgs {
                config: cfg,
                inputs: input.iter().map(|s| split_named(s)).collect(),
                outputs: output.iter().map(|s| split_named(s)).collect(),
                workers,
            };
            let r = replay::replay(args).map_err(|e| e.to_string())?;
            if json {
                let c = r.engine.counters();
                println!(
                    "{}",
                    serde_json::json!({"packets_in": r.packets_in, "packets_out": r.packets_out, "counters": c})
                );
            } else {
                eprintln!("replayed {} packets, transmitted {}", r.packets_in, r.packets_out);
                eprint!("{}", daemon::format_counters(r.engine.fabric.as_ref(), &r.engine.snapshot));
            }
            Ok(())
        }
        Cmd::Config { cmd: ConfigCmd::Import { from, file } } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let r = match from.as_str() {
                "ipvsadm" => ferrovs_cfg::import::from_ipvsadm(&text),
                "lvs.cf" => ferrovs_cfg::import::from_lvs_cf(&text),
                _ => ferrovs_cfg::import::from_keepalived(&text),
            };
            let imp = r.map_err(|mut e| {
                e.file = file.display().to_string();
                e.to_string()
            })?;
            for w in &imp.warnings {
                eprintln!("{}: warning: {w}", file.display());
            }
            print!("{}", imp.to_toml());
            Ok(())
        }
        Cmd::Bench { scenario, flows, packets, workers, size, no_pin, json } => {
            let args = ferrovs_engine::bench::BenchArgs { scenario, flows, packets, workers, size, pin: !no_pin };
            let r = ferrovs_engine::bench::run(&args)?;
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                print!("{}", ferrovs_engine::bench::format(&r));
            }
            Ok(())
        }
        Cmd::Gen {
            backend,
            eal_args,
            tx,
            rx,
            rate,
            size,
            src,
            dst,
            sport,
            dport,
            proto,
            dst_mac,
            duration,
            count,
            json,
        } => {
            let mac = parse_mac(&dst_mac)?;
            let args = ferrovs_engine::gen::GenArgs {
                rate,
                size,
                src,
                dst,
                sport,
                dport,
                proto,
                dst_mac: mac,
                duration: std::time::Duration::from_secs_f64(duration.max(0.0)),
                count,
                live: true,
            };
            let r = if backend == "dpdk" {
                run_gen_dpdk(&tx, rx.as_deref(), &eal_args, &args)?
            } else {
                let _ = &eal_args;
                ferrovs_engine::gen::run_afpacket(&tx, rx.as_deref(), &args)?
            };
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                print!("{}", ferrovs_engine::gen::format(&r));
            }
            Ok(())
        }
        Cmd::Config { cmd: ConfigCmd::Check { file } } => {
            let cfg = load(&file)?;
            println!(
                "{}: OK ({} interfaces, {} services, {} real servers)",
                file.display(),
                cfg.interfaces.len(),
                cfg.services.len(),
                cfg.services.iter().map(|s| s.real_servers.len()).sum::<usize>()
            );
            Ok(())
        }
    }
}

#[cfg(feature = "dpdk")]
fn run_gen_dpdk(
    tx: &str,
    rx: Option<&str>,
    eal_args: &str,
    a: &ferrovs_engine::gen::GenArgs,
) -> Result<ferrovs_engine::gen::GenReport, String> {
    let eal: Vec<String> = eal_args.split_whitespace().map(String::from).collect();
    ferrovs_engine::gen::run_dpdk(tx, rx, &eal, a)
}

#[cfg(not(feature = "dpdk"))]
fn run_gen_dpdk(
    _tx: &str,
    _rx: Option<&str>,
    _eal_args: &str,
    _a: &ferrovs_engine::gen::GenArgs,
) -> Result<ferrovs_engine::gen::GenReport, String> {
    Err("--backend dpdk needs a ferrovs built with `--features dpdk`".into())
}
