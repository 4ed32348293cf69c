//! `ferrovs`: the daemon (`run`), offline `replay`, `config` tools.

use clap::Parser;
use ferrovs_cfg::Config;
use ferrovs_engine::cli::{Cli, Cmd, ConfigCmd};
use ferrovs_engine::{daemon, sdnotify, tools::replay};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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

fn load(path: &Path) -> Result<Config, String> {
    Config::from_file(path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferrovs_engine::logging::init(cli.log_format);
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
            let control = match ferrovs_engine::ctl::control::spawn(Some(config.clone()), cfg.clone(), &running) {
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
            // Ports are open, workers run, the control socket (and the
            // metrics listener) accept: tell systemd (Type=notify).
            // Take the SIGHUP baseline before READY=1: a reload requested as
            // soon as systemd sees the service ready must not be lost.
            let mut hups = daemon::hup_count();
            let status = |n: usize| format!("{} workers, {n} services", cfg.engine.workers);
            sdnotify::ready(&status(cfg.services.len()));
            // Cluster: BIRD announces the VIPs this node can serve.
            let mut bird = cfg.cluster.as_ref().map(|c| ferrovs_engine::cluster::bird::Announcer::new(&c.bird_socket));
            let clock = daemon::clock();
            use ferrovs_engine::cluster::bird::Phase;
            let mut bird_update = |phase: Phase, snap: &ferrovs_engine::pipeline::snapshot::Snapshot| {
                let Some(a) = bird.as_mut() else { return };
                let want = ferrovs_engine::cluster::bird::desired(&snap.config, phase);
                let (changed, err) = a.update(&want, clock());
                for (p, on) in changed {
                    tracing::info!(protocol = %p, "BIRD: {}", if on { "announcing" } else { "withdrawn" });
                }
                if let Some(e) = err {
                    if a.errors.is_power_of_two() {
                        tracing::error!(errors = a.errors, "BIRD: {e}");
                    }
                }
            };
            while !daemon::stop_requested() {
                bird_update(Phase::Up, &control.snapshot());
                std::thread::sleep(std::time::Duration::from_millis(100));
                if daemon::hup_count() != hups {
                    hups = daemon::hup_count();
                    sdnotify::reloading();
                    match control.reload() {
                        Ok(n) => {
                            tracing::info!("configuration reloaded");
                            sdnotify::ready(&status(n));
                        }
                        Err(e) => {
                            tracing::error!("reload failed, keeping the running config: {e}");
                            sdnotify::ready(&format!("reload failed, running the previous config: {e}"));
                        }
                    }
                }
            }
            sdnotify::stopping();
            if let Some(c) = &cfg.cluster {
                // Drain: withdraw first, so the routers stop sending new connections here;
                // established ones finish (or move to a peer) up to the timeout.
                bird_update(Phase::Draining, &control.snapshot());
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(c.drain_timeout as u64);
                let mut left = daemon::established(&control.snapshot());
                tracing::info!(established = left, timeout_s = c.drain_timeout, "draining");
                // Done when no established connection is left, or no service packet moved for
                // QUIET (the routers now send the rest to the peers), or at the timeout.
                const QUIET: std::time::Duration = std::time::Duration::from_secs(3);
                let (mut pkts, mut moved) = (daemon::service_packets(running.view.as_ref()), std::time::Instant::now());
                while left > 0 && std::time::Instant::now() < deadline && moved.elapsed() < QUIET {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    bird_update(Phase::Draining, &control.snapshot());
                    left = daemon::established(&control.snapshot());
                    let p = daemon::service_packets(running.view.as_ref());
                    if p != pkts {
                        (pkts, moved) = (p, std::time::Instant::now());
                    }
                }
                tracing::info!(established = left, "drained");
                // Full-NAT local addresses last: the peers' less preferred routes take over.
                bird_update(Phase::Down, &control.snapshot());
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
        Cmd::Config { cmd: ConfigCmd::Import { from, file, marks: rule_files } } => {
            let mut marks = ferrovs_cfg::import::MarkMap::new();
            for f in &rule_files {
                let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
                let (m, warnings) = ferrovs_cfg::import::marks_from_iptables(&text).map_err(|mut e| {
                    e.file = f.display().to_string();
                    e.to_string()
                })?;
                for w in &warnings {
                    eprintln!("{}: warning: {w}", f.display());
                }
                for (k, v) in m {
                    if marks.insert(k, v).is_some() {
                        eprintln!(
                            "{}: warning: mark {} ({}) also given by an earlier file: this file's rules taken",
                            f.display(),
                            k.0,
                            if k.1 { "IPv6" } else { "IPv4" }
                        );
                    }
                }
            }
            let imp = if from == "keepalived" {
                // With the files its `include` lines name: errors name the file they are in.
                ferrovs_cfg::import::from_keepalived_file(&file, &marks).map_err(|e| e.to_string())?
            } else {
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let r = match from.as_str() {
                    "ipvsadm" => ferrovs_engine::ctl::ipvsadm::import_save(&text, &marks),
                    _ => ferrovs_cfg::import::from_lvs_cf_with_marks(&text, &marks),
                };
                r.map_err(|mut e| {
                    e.file = file.display().to_string();
                    e.to_string()
                })?
            };
            for w in &imp.warnings {
                eprintln!("{}: warning: {w}", file.display());
            }
            print!("{}", imp.to_toml());
            Ok(())
        }
        Cmd::Bench {
            scenario,
            flows,
            packets,
            workers,
            size,
            no_pin,
            flood_only,
            frames,
            json,
            sweep,
            sweep_flows,
            sweep_workers,
            sweep_scenarios,
            out,
            machine,
        } => {
            if sweep {
                let a = ferrovs_engine::tools::sweep::SweepArgs {
                    flows: sweep_flows,
                    workers: sweep_workers,
                    scenarios: sweep_scenarios,
                    packets,
                    size,
                    pin: !no_pin,
                    out,
                    machine: machine.unwrap_or_else(ferrovs_engine::tools::sweep::machine_name),
                };
                return ferrovs_engine::tools::sweep::run(&a);
            }
            let args = ferrovs_engine::tools::bench::BenchArgs {
                scenario,
                flows,
                packets,
                workers,
                size,
                pin: !no_pin,
                flood_only,
                frames,
            };
            let r = ferrovs_engine::tools::bench::run(&args)?;
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                print!("{}", ferrovs_engine::tools::bench::format(&r));
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
            let args = ferrovs_engine::tools::gen::GenArgs {
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
                ferrovs_engine::tools::gen::run_afpacket(&tx, rx.as_deref(), &args)?
            };
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                print!("{}", ferrovs_engine::tools::gen::format(&r));
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
    a: &ferrovs_engine::tools::gen::GenArgs,
) -> Result<ferrovs_engine::tools::gen::GenReport, String> {
    let eal: Vec<String> = eal_args.split_whitespace().map(String::from).collect();
    ferrovs_engine::tools::gen::run_dpdk(tx, rx, &eal, a)
}

#[cfg(not(feature = "dpdk"))]
fn run_gen_dpdk(
    _tx: &str,
    _rx: Option<&str>,
    _eal_args: &str,
    _a: &ferrovs_engine::tools::gen::GenArgs,
) -> Result<ferrovs_engine::tools::gen::GenReport, String> {
    Err("--backend dpdk needs a ferrovs built with `--features dpdk`".into())
}
