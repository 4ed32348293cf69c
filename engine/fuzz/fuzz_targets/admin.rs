//! The administration path of `ferrovsadm` on arbitrary input. Each line is a command line
//! (split into words as a shell would without quotes) for the ipvsadm-compatible parser
//! (`ctl::ipvsadm::parse_args`); an edit it accepts is applied to the running configuration
//! the way the control socket applies it (`ipvsadm::apply`, then the config validator), and
//! the snapshot workers would run is built from the result. The whole input is also read as
//! `-R` (ipvsadm-save) text (`parse_rules`) and applied to an empty configuration. A line
//! that starts with `{` is an edit command as the control socket receives it (JSON: any
//! value a client sends, not only those the command-line parser produces).
//!
//! Properties: no panic anywhere on that path; and after every accepted edit, `-S`
//! (`format_save`) of the configuration restores (`parse_rules` + `apply` on a cleared
//! configuration) to a configuration whose `-S` is the same text, as `ipvsadm-save |
//! ipvsadm-restore` does.
#![no_main]

use ferrovs_cfg::Config;
use ferrovs_engine::ctl::control::validate;
use ferrovs_engine::ctl::ipvsadm::{apply, format_save, parse_args, parse_rules, Action, Command};
use ferrovs_engine::pipeline::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const BASE: &str = include_str!("../../../cfg/examples/nat-ftp.toml");
const MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn base() -> Config {
    Config::from_str(BASE, "nat-ftp.toml").expect("the example config is valid")
}

/// Apply `cmds` to `cfg` as the control socket does: all or nothing, then validated.
fn edit(cfg: &Config, cmds: &[Command]) -> Option<Config> {
    let mut next = cfg.clone();
    for c in cmds {
        apply(&mut next, c).ok()?;
    }
    validate(&next).ok()
}

/// `-S` then `-C` and `-R` of what it printed: the same `-S` text.
fn check_round_trip(cfg: &Config) {
    let saved = format_save(cfg);
    let cmds = parse_rules(&saved).unwrap_or_else(|e| panic!("-S output does not restore: {e}\n{saved}"));
    let mut restored = cfg.clone();
    apply(&mut restored, &Command::Clear).expect("clear");
    for c in &cmds {
        apply(&mut restored, c).unwrap_or_else(|e| panic!("-S output {c:?} does not apply: {e}\n{saved}"));
    }
    let restored = validate(&restored).unwrap_or_else(|e| panic!("-S output restores invalid: {e}\n{saved}"));
    assert_eq!(saved, format_save(&restored), "-S | -R changed the configuration");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let mut cfg = base();
    let mut edits = 0;
    for line in text.lines() {
        let cmd = if line.starts_with('{') {
            let Ok(cmd) = serde_json::from_str::<Command>(line) else { continue };
            cmd
        } else {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Ok(inv) = parse_args(&words) else { continue };
            let Action::Edit(cmd) = inv.action else { continue };
            cmd
        };
        if let Some(next) = edit(&cfg, std::slice::from_ref(&cmd)) {
            cfg = next;
            edits += 1;
            if edits > 16 {
                break;
            }
        }
    }
    let _ = Snapshot::build(Arc::new(cfg.clone()), &[MAC, MAC]);
    check_round_trip(&cfg);
    if let Ok(cmds) = parse_rules(&text) {
        let mut empty = base();
        if apply(&mut empty, &Command::Clear).is_ok() {
            if let Some(next) = edit(&empty, &cmds) {
                let _ = Snapshot::build(Arc::new(next.clone()), &[MAC, MAC]);
                check_round_trip(&next);
            }
        }
    }
});
