//! `[service.notify]`: the programs a service runs on its events, as keepalived's
//! `notify_up` / `notify_down` (a real server taken up or down by its health check) and
//! `quorum_up` / `quorum_down` (the live real servers' weights reaching or falling below the
//! service's quorum).
//!
//! The events come from the health checker and from every change of the served
//! configuration ([`quorum_events`]); the programs run on one thread of their own, one at a
//! time in the order of the events (a server's `down` never overtakes the `up` before it),
//! so neither the checker nor the control socket ever waits for a script. A script that hangs
//! is killed at its `timeout` ([`crate::ctl::health::run_program`]); while it runs, up to
//! [`QUEUE`] events wait, and past that an event is dropped with a warning, not the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ferrovs_cfg::{Config, Service};

/// Events that may wait while a program runs.
pub const QUEUE: usize = 256;

/// One program to run for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `up`, `down`, `quorum_up` or `quorum_down` (`FERROVS_EVENT`).
    pub event: &'static str,
    pub service: String,
    /// The real server (`FERROVS_SERVER`, `FERROVS_PORT`) of an `up` / `down` event.
    pub server: Option<(IpAddr, u16)>,
    pub command: Vec<String>,
    pub user: Option<String>,
    pub timeout: f64,
}

impl Job {
    /// The job `s` runs for `event`, if its `[service.notify]` has a program for it.
    pub fn of(s: &Service, event: &'static str, server: Option<(IpAddr, u16)>) -> Option<Job> {
        let n = s.notify.as_ref()?;
        Some(Job {
            event,
            service: s.name.clone(),
            server,
            command: n.command(event)?.to_vec(),
            user: n.user.clone(),
            timeout: n.timeout,
        })
    }

    /// Run the program now, on this thread; `Err` says why it failed.
    pub fn run(&self) -> Result<(), String> {
        let mut env = vec![("FERROVS_EVENT", self.event.to_string()), ("FERROVS_SERVICE", self.service.clone())];
        if let Some((a, p)) = self.server {
            env.push(("FERROVS_SERVER", a.to_string()));
            env.push(("FERROVS_PORT", p.to_string()));
        }
        let timeout = Duration::from_secs_f64(self.timeout.max(0.01));
        crate::ctl::health::run_program(&self.command, self.user.as_deref(), &env, timeout)
    }
}

/// The notify thread, started at the first event.
#[derive(Default)]
pub struct Notifier {
    tx: OnceLock<Mutex<Option<SyncSender<Job>>>>,
}

impl Notifier {
    /// Queue `job`; it runs after the ones queued before it.
    pub fn post(&self, job: Job) {
        let slot = self.tx.get_or_init(|| Mutex::new(Self::start()));
        let tx = slot.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            tracing::warn!(service = %job.service, event = job.event, "notify: no thread to run the program: not run");
            return;
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => {
                tracing::warn!(service = %j.service, event = j.event, "notify: {QUEUE} events wait already: not run");
            }
        }
    }

    fn start() -> Option<SyncSender<Job>> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new().name("fvs-notify".into()).spawn(move || {
            for job in rx {
                let prog = job.command.first().cloned().unwrap_or_default();
                match job.run() {
                    Ok(()) => tracing::info!(service = %job.service, event = job.event, program = %prog, "notify: ran"),
                    Err(e) => {
                        tracing::warn!(service = %job.service, event = job.event, error = %e, "notify: program failed")
                    }
                }
            }
        });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "notify: cannot start its thread");
                None
            }
        }
    }
}

/// The quorum events between two served configurations: `memory` holds each service's
/// quorum state (up or down, by name) after the configuration before, and is brought up to
/// `served`. A service new to `memory` (the daemon's start, an added service) takes its state
/// without an event, as the sorry server's quorum without a memory
/// ([`ferrovs_cfg::Config::serving`]): keepalived too runs `quorum_up` / `quorum_down` on a
/// change only. The state follows `Service::quorum_up` with the hysteresis, on the weights
/// the data plane serves (health checks' downs at weight 0 or removed, the sorry server
/// left out).
pub fn quorum_events(memory: &mut HashMap<String, bool>, served: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut now = HashMap::with_capacity(served.services.len());
    for s in &served.services {
        let was = memory.get(&s.name).copied();
        let up = match &s.sorry_server {
            // The served sorry server (the last real server) says the state: at weight 1
            // while the quorum is down.
            Some(ss) => match s.real_servers.last() {
                Some(r) if r.address == ss.address && s.server_port(r.port) == s.server_port(ss.port) => r.weight == 0,
                _ => s.quorum_up(was),
            },
            None => s.quorum_up(was),
        };
        if was.is_some_and(|w| w != up) {
            jobs.extend(Job::of(s, if up { "quorum_up" } else { "quorum_down" }, None));
        }
        now.insert(s.name.clone(), up);
    }
    *memory = now;
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(weights: &[u32], sorry: bool) -> Config {
        let mut t = String::from(
            "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"w\"\nvip = \"10.0.0.100\"\nports = [80]\n\
             quorum = 3\nhysteresis = 1\n",
        );
        if sorry {
            t += "sorry_server = { address = \"10.0.2.9\" }\n";
        }
        t += "[service.notify]\nquorum_up = [\"/bin/q\", \"up\"]\nquorum_down = [\"/bin/q\", \"down\"]\n";
        for (i, w) in weights.iter().enumerate() {
            t += &format!("[[service.real_server]]\naddress = \"10.0.2.{}\"\nweight = {w}\n", i + 2);
        }
        Config::from_str(&t, "n.toml").unwrap()
    }

    /// Quorum 3, hysteresis 1: down below 2, up again at 4; an event on each change only,
    /// the same with and without a sorry server (whose served weight says the state).
    #[test]
    fn quorum_events_on_changes_only() {
        for sorry in [false, true] {
            let mut memory = HashMap::new();
            let mut prev: Option<Config> = None;
            let mut got = Vec::new();
            for w in [&[1, 1, 1, 1][..], &[1, 1, 0, 0], &[1, 0, 0, 0], &[1, 1, 1, 0], &[1, 1, 1, 1], &[1, 1, 1, 1]] {
                let c = cfg(w, sorry);
                let served = c.serving_after(prev.as_ref()).unwrap_or(c);
                let jobs = quorum_events(&mut memory, &served);
                got.push(jobs.iter().map(|j| (j.event, j.command[1].clone())).collect::<Vec<_>>());
                prev = Some(served);
            }
            let none: Vec<(&str, String)> = Vec::new();
            assert_eq!(
                got,
                [
                    none.clone(),                              // the start: no event
                    none.clone(),                              // 2 = 3 - 1: still up
                    vec![("quorum_down", "down".to_string())], // 1: down
                    none.clone(),                              // 3: still down (needs 4)
                    vec![("quorum_up", "up".to_string())],     // 4: up
                    none,                                      // unchanged
                ],
                "sorry server: {sorry}"
            );
        }
        // A service that goes away is forgotten: back, it takes its state without an event.
        let mut memory = HashMap::new();
        quorum_events(&mut memory, &cfg(&[1, 1, 1, 1], false));
        quorum_events(&mut memory, &Config::from_str("[engine]\nbackend = \"memory\"\n", "e.toml").unwrap());
        assert!(memory.is_empty());
        assert!(quorum_events(&mut memory, &cfg(&[0, 0, 0, 0], false)).is_empty());
    }

    #[test]
    fn a_job_runs_its_program_with_the_event_in_its_environment() {
        let dir = std::env::temp_dir().join(format!("ferrovs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("env");
        let script = dir.join("n.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $FERROVS_EVENT $FERROVS_SERVICE $FERROVS_SERVER $FERROVS_PORT\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let c = Config::from_str(
            &format!(
                "[engine]\nbackend = \"memory\"\n[[service]]\nname = \"web\"\nvip = \"10.0.0.100\"\nports = [80]\n\
                 [service.notify]\ndown = [\"{}\", \"arg\"]\ntimeout = 5\n\
                 [[service.real_server]]\naddress = \"10.0.2.2\"\n",
                script.display()
            ),
            "n.toml",
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!(Job::of(s, "up", None), None, "no program for up");
        let job = Job::of(s, "down", Some(("10.0.2.2".parse().unwrap(), 80))).expect("down");
        job.run().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "arg down web 10.0.2.2 80\n");
        // A failing program says why.
        let mut bad = job.clone();
        bad.command = vec!["/bin/false".into()];
        assert!(bad.run().unwrap_err().contains("exited with status 1"));
        // Posted jobs run in order on the notify thread.
        let n = Notifier::default();
        std::fs::remove_file(&out).unwrap();
        n.post(job);
        let t0 = std::time::Instant::now();
        while !out.exists() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(out.exists(), "the posted job ran");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
