//! `ferrovsadm`: ipvsadm-compatible administration of a running ferrovs
//! over its control socket. Accepts ipvsadm command lines verbatim
//! (`ferrovsadm -A -t 10.0.0.1:80 -s rr`, `ferrovsadm -L -n`, `-S`/`-R`,
//! ...) plus ferrovs-only verbs (`conns`, `--ftp`, `drops`, `health`,
//! `status`, `metrics`, `--reload`). See `ferrovsadm --help`.

use ferrovs_engine::ctl::control;
use ferrovs_engine::ctl::ipvsadm::{self, Action, ConnRow, ListData};
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_SOCKET: &str = "/run/ferrovs/ferrovs.sock";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match ipvsadm::parse_args(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ferrovsadm: {e}");
            return ExitCode::from(2);
        }
    };
    match run(inv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrovsadm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn call(socket: &std::path::Path, op: &str, extra: Value) -> Result<Value, String> {
    let mut req = json!({"v": control::PROTOCOL_VERSION, "op": op});
    if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
        r.extend(e);
    }
    let reply = control::request(socket, &req)?;
    if reply.get("ok").and_then(|v| v.as_bool()) != Some(true) {
        return Err(reply.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error from daemon").to_string());
    }
    Ok(reply)
}

fn field<T: serde::de::DeserializeOwned>(v: &Value, k: &str) -> Result<T, String> {
    serde_json::from_value(v.get(k).cloned().unwrap_or(Value::Null)).map_err(|e| format!("bad reply field {k:?}: {e}"))
}

fn run(inv: ipvsadm::Invocation) -> Result<(), String> {
    let socket = PathBuf::from(
        inv.socket.clone().or_else(|| std::env::var("FERROVS_SOCKET").ok()).unwrap_or_else(|| DEFAULT_SOCKET.into()),
    );
    let json_out = inv.json;
    let print_json = |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match inv.action {
        Action::Help => print!("{}", ipvsadm::USAGE),
        Action::Version => {
            println!("ferrovsadm {} (ipvsadm-compatible, IPVS v{})", env!("CARGO_PKG_VERSION"), ipvsadm::IPVS_VERSION)
        }
        Action::Edit(cmd) => {
            let r = call(&socket, "edit", json!({"cmds": [cmd]}))?;
            if json_out {
                print_json(&r);
            }
        }
        Action::Restore => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
            let cmds = ipvsadm::parse_rules(&text)?;
            let r = call(&socket, "edit", json!({"cmds": cmds}))?;
            if json_out {
                print_json(&r);
            }
        }
        Action::Save => {
            let r = call(&socket, "save", json!({}))?;
            if json_out {
                print_json(&r);
            } else {
                print!("{}", r.get("rules").and_then(|v| v.as_str()).unwrap_or(""));
            }
        }
        Action::List(lo) => {
            if lo.conns {
                let r = call(&socket, "conns", json!({}))?;
                if json_out {
                    {
                        print_json(&r);
                        return Ok(());
                    }
                }
                let conns: Vec<ConnRow> = field(&r, "conns")?;
                print!("{}", ipvsadm::format_conns(&conns));
            } else {
                let r = call(&socket, "list", json!({}))?;
                if json_out {
                    {
                        print_json(&r);
                        return Ok(());
                    }
                }
                let l: ListData = field(&r, "list")?;
                if let Some(k) = &lo.service {
                    if !l.services.iter().any(|s| ipvsadm::view_matches(s, k)) {
                        return Err("No such service".into());
                    }
                }
                print!("{}", ipvsadm::format_list(&l, &lo));
            }
        }
        Action::Zero(key) => {
            call(&socket, "zero", json!({"service": key}))?;
        }
        Action::Conns => {
            let r = call(&socket, "conns", json!({}))?;
            if json_out {
                {
                    print_json(&r);
                    return Ok(());
                }
            }
            let conns: Vec<ConnRow> = field(&r, "conns")?;
            print!("{}", ipvsadm::format_conns_ftp(&conns));
            let missing: Vec<usize> = field(&r, "missing_workers").unwrap_or_default();
            if !missing.is_empty() {
                eprintln!("ferrovsadm: workers {missing:?} did not answer");
            }
        }
        Action::Ftp => {
            let r = call(&socket, "ftp", json!({}))?;
            if json_out {
                {
                    print_json(&r);
                    return Ok(());
                }
            }
            let svcs = r.get("services").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            if svcs.is_empty() {
                println!("no service with the FTP gateway");
            }
            for s in svcs {
                println!("service {}:", s["service"].as_str().unwrap_or("?"));
                if let Some(m) = s.as_object() {
                    for (k, v) in m.iter().filter(|(k, _)| *k != "service") {
                        println!("  {k:<22} {v}");
                    }
                }
            }
        }
        Action::Drops => {
            let r = call(&socket, "drops", json!({}))?;
            if json_out {
                {
                    print_json(&r);
                    return Ok(());
                }
            }
            for w in r.get("workers").and_then(|v| v.as_array()).cloned().unwrap_or_default() {
                println!(
                    "worker {}: rx {} tx {} flows {} handoff out {} in {}",
                    w["worker"], w["rx_packets"], w["tx_packets"], w["flows_active"], w["handoff_out"], w["handoff_in"]
                );
                println!(
                    "  syn cookies sent {} validated {} failed {}, syns to real servers resent {}",
                    w["cookies_sent"], w["cookies_validated"], w["cookies_failed"], w["proxy_syn_retries"]
                );
                let cluster =
                    ["flows_recreated", "sync_installed", "sync_skipped", "sync_carried", "sync_capped", "redirected"];
                if cluster.iter().any(|k| w[*k].as_u64().unwrap_or(0) > 0) {
                    println!(
                        "  cluster: flows recreated {} sync installed {} skipped {} carried {} capped {} redirected {} \
                         redirect loops {}",
                        w["flows_recreated"],
                        w["sync_installed"],
                        w["sync_skipped"],
                        w["sync_carried"],
                        w["sync_capped"],
                        w["redirected"],
                        w["redirect_loop"]
                    );
                }
                if let Some(d) = w["drops"].as_object() {
                    for (k, v) in d {
                        println!("  {k:<16} {v}");
                    }
                }
            }
            // New connections refused, per service (only those that refused any).
            for sv in r.get("services").and_then(|v| v.as_array()).cloned().unwrap_or_default() {
                let by: Vec<String> = sv["refused"]
                    .as_object()
                    .map(|m| {
                        m.iter().filter(|(_, v)| v.as_u64().unwrap_or(0) > 0).map(|(k, v)| format!("{k} {v}")).collect()
                    })
                    .unwrap_or_default();
                if !by.is_empty() {
                    println!("service {}: refused {}", sv["service"].as_str().unwrap_or("?"), by.join(", "));
                }
            }
            if let Some(s) = r.get("sync").and_then(|v| v.as_object()) {
                println!("cluster sync:");
                for (k, v) in s {
                    println!("  {k:<22} {v}");
                }
            }
        }
        Action::Ports => {
            let r = call(&socket, "ports", json!({}))?;
            if json_out {
                print_json(&r);
                return Ok(());
            }
            print!("{}", ipvsadm::ports_table(&r));
        }
        Action::Health => {
            let r = call(&socket, "health", json!({}))?;
            if json_out {
                {
                    print_json(&r);
                    return Ok(());
                }
            }
            println!("{:<24} {:<28} {:<5} {:>8} {:>8}  last error", "service", "server", "state", "checks", "failures");
            for h in r.get("servers").and_then(|v| v.as_array()).cloned().unwrap_or_default() {
                println!(
                    "{:<24} {:<28} {:<5} {:>8} {:>8}  {}",
                    h["service"].as_str().unwrap_or(""),
                    h["server"].as_str().unwrap_or(""),
                    if h["up"].as_bool() == Some(true) { "up" } else { "down" },
                    h["checks"],
                    h["failures"],
                    h["last_error"].as_str().unwrap_or("-")
                );
            }
        }
        Action::Status => {
            let r = call(&socket, "status", json!({}))?;
            let l = call(&socket, "list", json!({}))?;
            if json_out {
                {
                    print_json(&json!({"status": r, "list": l["list"]}));
                    return Ok(());
                }
            }
            println!(
                "ferrovs {} (protocol {}), {} workers, up {} s, config {}",
                r["version"].as_str().unwrap_or("?"),
                r["protocol"],
                r["workers"],
                r["uptime_s"],
                r["config"].as_str().unwrap_or("-")
            );
            let l: ListData = field(&l, "list")?;
            for s in &l.services {
                let listed = match s.fwmark {
                    Some(m) => format!("FWM  {m}"),
                    None => format!("{}  {}", s.proto, ipvsadm::addrport(s.vip, s.port)),
                };
                println!(
                    "service {}: {} {} ports {}{} (ipvsadm lists it as \"{listed}\"), {} real servers",
                    s.name,
                    s.proto,
                    s.vip,
                    s.ports,
                    if s.ftp { ", FTP gateway" } else { "" },
                    s.dests.len()
                );
            }
        }
        Action::Metrics => {
            let r = call(&socket, "metrics", json!({}))?;
            print!("{}", r.get("text").and_then(|v| v.as_str()).unwrap_or(""));
        }
        Action::Top(opts) => ferrovs_engine::ctl::top::run(&socket, &opts)?,
        Action::Reload => {
            let r = call(&socket, "reload", json!({}))?;
            if json_out {
                print_json(&r);
            } else {
                println!("configuration reloaded ({} services)", r["services"]);
            }
        }
        Action::Drain => {
            let r = call(&socket, "drain", json!({}))?;
            if json_out {
                print_json(&r);
            } else {
                println!("draining: VIPs withdrawn, established connections get up to {} s", r["timeout_s"]);
            }
        }
    }
    Ok(())
}
