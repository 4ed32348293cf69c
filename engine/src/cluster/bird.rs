//! BIRD control: ferrovs tells its node's BIRD which VIPs to announce by enabling and
//! disabling one protocol per VIP (a `protocol static` with the VIP's route, exported to the
//! BGP sessions; named by `[cluster] bird_protocol`) over BIRD's control socket, the text
//! protocol `birdc` speaks. ferrovs never speaks BGP itself.
//!
//! The protocol (BIRD's `doc/reply_codes`, `sysdep/unix/main.c`): on connect BIRD sends a
//! `0001 BIRD <version> ready.` line; each command is one line; each reply line starts with
//! a 4-digit code, followed by `-` when more lines follow or a space on the last line; a line
//! starting with a space continues the previous code. Codes 0xxx are successes (0008
//! already disabled, 0009 disabled, 0010 already enabled, 0011 enabled), 1xxx data, 8xxx
//! run-time errors (8003 no protocols match), 9xxx syntax errors.
//!
//! [`Announcer`] keeps BIRD at the state ferrovs wants: a VIP is announced while the node is
//! up (not draining) and at least one real server of a service on the VIP has a weight above
//! zero in the running configuration (health checks set a failed server's weight to 0 or
//! remove it). Full-NAT local addresses (every node's, `[[cluster.node]]`) have a protocol
//! each too, under the same name pattern, enabled until the daemon exits ([`Phase`]). It sends only changes, re-asserts everything every [`REASSERT_NS`] (a BIRD
//! restart forgets runtime enables), and reconnects after errors.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Re-send the whole desired state this often (ns).
pub const REASSERT_NS: u64 = 5_000_000_000;

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// `None`: a continuation line (starts with a space).
    pub code: Option<u16>,
    /// The last line of the reply.
    pub last: bool,
    pub text: &'a str,
}

/// Parse one reply line (without its newline).
pub fn parse_line(l: &str) -> Result<Line<'_>, BirdError> {
    if let Some(rest) = l.strip_prefix(' ') {
        return Ok(Line { code: None, last: false, text: rest });
    }
    let b = l.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || !matches!(b[4], b' ' | b'-') {
        return Err(BirdError::Protocol(format!("unexpected line from BIRD: {l:?}")));
    }
    let code = l[..4].parse().map_err(|_| BirdError::Protocol(format!("bad code in {l:?}")))?;
    Ok(Line { code: Some(code), last: b[4] == b' ', text: &l[5..] })
}

/// A complete reply: the codes of its lines (in order) and all text. BIRD 2 answers
/// `enable X` with `0011-X: enabled` and a closing `0000 ` line: the meaning is in the
/// first code, the last one only ends the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub codes: Vec<u16>,
    pub text: String,
}

impl Reply {
    /// The first code that is not the closing 0000 (0 if there is none).
    pub fn code(&self) -> u16 {
        self.codes.iter().copied().find(|&c| c != 0).unwrap_or(0)
    }
    pub fn is_error(&self) -> bool {
        self.codes.iter().any(|&c| c >= 8000)
    }
}

#[derive(Debug)]
pub enum BirdError {
    Io(std::io::Error),
    /// BIRD said something this client does not understand.
    Protocol(String),
    /// BIRD refused the command (8xxx/9xxx).
    Refused(Reply),
}

impl std::fmt::Display for BirdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BirdError::Io(e) => write!(f, "BIRD control socket: {e}"),
            BirdError::Protocol(s) => f.write_str(s),
            BirdError::Refused(r) if r.code() == 8003 => {
                write!(f, "BIRD has no such protocol ({}): declare it in bird.conf (see README, Cluster)", r.text)
            }
            BirdError::Refused(r) => write!(f, "BIRD refused the command: {} {}", r.code(), r.text),
        }
    }
}

impl std::error::Error for BirdError {}

impl From<std::io::Error> for BirdError {
    fn from(e: std::io::Error) -> Self {
        BirdError::Io(e)
    }
}

/// A connection to BIRD's control socket.
pub struct BirdClient {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl BirdClient {
    /// Connect and read the greeting (code 0001).
    pub fn connect(path: &Path, timeout: Duration) -> Result<BirdClient, BirdError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut c = BirdClient { r: BufReader::new(s.try_clone()?), w: s };
        let hello = c.read_reply()?;
        if hello.code() != 1 {
            return Err(BirdError::Protocol(format!("BIRD greeting {:?} {:?}", hello.codes, hello.text)));
        }
        Ok(c)
    }

    fn read_reply(&mut self) -> Result<Reply, BirdError> {
        let mut text = String::new();
        let mut codes = Vec::new();
        let mut line = String::new();
        for _ in 0..100_000 {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(BirdError::Protocol("BIRD closed the control connection".into()));
            }
            let l = parse_line(line.trim_end_matches(['\n', '\r']))?;
            if !l.text.is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(l.text);
            }
            if let Some(c) = l.code {
                codes.push(c);
            }
            if l.last {
                return Ok(Reply { codes, text });
            }
        }
        Err(BirdError::Protocol("BIRD reply too long".into()))
    }

    /// Send one command line; the reply, or `Refused` for an error code.
    pub fn command(&mut self, cmd: &str) -> Result<Reply, BirdError> {
        if cmd.contains(['\n', '\r']) {
            return Err(BirdError::Protocol("a BIRD command is one line".into()));
        }
        self.w.write_all(format!("{cmd}\n").as_bytes())?;
        let r = self.read_reply()?;
        if r.is_error() {
            return Err(BirdError::Refused(r));
        }
        Ok(r)
    }

    /// Enable (`true`) or disable protocol `name`. Returns whether it changed.
    pub fn set_protocol(&mut self, name: &str, enabled: bool) -> Result<bool, BirdError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(BirdError::Protocol(format!("invalid BIRD protocol name {name:?}")));
        }
        let r = self.command(&format!("{} {name}", if enabled { "enable" } else { "disable" }))?;
        match r.code() {
            11 | 9 => Ok(true),
            10 | 8 => Ok(false),
            c => Err(BirdError::Protocol(format!("unexpected BIRD reply {c} {:?} to enable/disable", r.text))),
        }
    }
}

/// Where the daemon is in its life, for what BIRD announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running: VIPs with a healthy server and every full-NAT local address announced.
    Up,
    /// Draining: VIPs withdrawn (no new connections), local addresses still announced (the
    /// established full-NAT connections' replies come back to them).
    Draining,
    /// About to exit: everything withdrawn, so the routers send the replies to this node's
    /// local addresses to the peers that announce them with less preference.
    Down,
}

/// The BIRD protocols to enable (true) and disable (false) for `config` in `phase`: one per
/// VIP, enabled iff up and some service on the VIP has a real server with a weight above
/// zero; one per full-NAT local address of every node (`[[cluster.node]]`), enabled until
/// the daemon exits. The preference is BIRD's configuration, not ferrovs's: a node's own
/// local addresses are exported as they are, its peers' with a longer AS path (or a higher
/// MED), so the routers prefer the owner and fall back to the peers only when the owner's
/// route goes (README "Cluster").
pub fn desired(config: &ferrovs_cfg::Config, phase: Phase) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let Some(cl) = &config.cluster else { return out };
    for s in &config.services {
        let healthy = s.real_servers.iter().any(|r| r.weight > 0);
        let e = out.entry(cl.protocol_for(s.vip)).or_insert(false);
        *e |= phase == Phase::Up && healthy;
    }
    for s in &config.services {
        for a in &s.local_addresses {
            if cl.owner_of_local(*a).is_some() {
                out.insert(cl.protocol_for(*a), phase != Phase::Down);
            }
        }
    }
    out
}

/// Keeps BIRD's per-VIP protocols at the desired state.
pub struct Announcer {
    socket: std::path::PathBuf,
    client: Option<BirdClient>,
    /// What BIRD was last told (successfully).
    told: BTreeMap<String, bool>,
    last_full: Option<u64>,
    /// Errors, counted (the last one is logged by the caller).
    pub errors: u64,
}

impl Announcer {
    pub fn new(socket: &Path) -> Self {
        Announcer { socket: socket.to_path_buf(), client: None, told: BTreeMap::new(), last_full: None, errors: 0 }
    }

    /// What BIRD was last told, per protocol.
    pub fn state(&self) -> &BTreeMap<String, bool> {
        &self.told
    }

    /// Bring BIRD to `want` at `now` (ns): changed protocols, or all of them every
    /// [`REASSERT_NS`]. Returns the changes made (protocol, enabled) and the first error.
    pub fn update(&mut self, want: &BTreeMap<String, bool>, now: u64) -> (Vec<(String, bool)>, Option<BirdError>) {
        let full = self.last_full.is_none_or(|t| now.saturating_sub(t) >= REASSERT_NS);
        let todo: Vec<(&String, bool)> =
            want.iter().filter(|(k, v)| full || self.told.get(*k) != Some(*v)).map(|(k, v)| (k, *v)).collect();
        let mut changed = Vec::new();
        if todo.is_empty() {
            return (changed, None);
        }
        if self.client.is_none() {
            match BirdClient::connect(&self.socket, Duration::from_secs(2)) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.errors += 1;
                    return (changed, Some(e));
                }
            }
        }
        let c = self.client.as_mut().expect("connected above");
        for (name, on) in todo {
            match c.set_protocol(name, on) {
                Ok(ch) => {
                    if ch || self.told.get(name) != Some(&on) {
                        changed.push((name.clone(), on));
                    }
                    self.told.insert(name.clone(), on);
                }
                Err(e) => {
                    self.errors += 1;
                    // A refused protocol keeps the connection; anything else reconnects.
                    if !matches!(e, BirdError::Refused(_)) {
                        self.client = None;
                    }
                    self.told.remove(name);
                    return (changed, Some(e));
                }
            }
        }
        if full {
            self.last_full = Some(now);
        }
        (changed, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready.").unwrap(),
            Line { code: Some(1), last: true, text: "BIRD 2.0.12 ready." }
        );
        assert!(!parse_line("1002-fvs_10_0_0_1 Static").unwrap().last);
        assert_eq!(parse_line(" more").unwrap(), Line { code: None, last: false, text: "more" });
        for bad in ["", "001 x", "00a1 x", "0001x", "hello"] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    /// A stand-in for BIRD: greets, answers enable/disable of known protocols as BIRD does,
    /// 8003 for unknown ones, 9001 for anything else; records the commands.
    fn fake_bird(dir: &Path, known: &[&str]) -> (std::path::PathBuf, Arc<Mutex<Vec<String>>>) {
        let path = dir.join("bird.ctl");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, known): (_, Vec<String>) = (log.clone(), known.iter().map(|s| s.to_string()).collect());
        std::thread::spawn(move || {
            let mut state: BTreeMap<String, bool> = known.iter().map(|k| (k.clone(), true)).collect();
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.write_all(b"0001 BIRD 2.0.12 ready.\n");
                let r = BufReader::new(s.try_clone().unwrap());
                for line in r.lines() {
                    let Ok(line) = line else { break };
                    log2.lock().unwrap().push(line.clone());
                    let reply = match line.split_once(' ') {
                        Some((verb @ ("enable" | "disable"), p)) => match state.get_mut(p) {
                            None => "8003 No protocols match\n".to_string(),
                            Some(on) => {
                                let want = verb == "enable";
                                let code = match (*on == want, want) {
                                    (true, true) => "0010",
                                    (true, false) => "0008",
                                    (false, true) => "0011",
                                    (false, false) => "0009",
                                };
                                *on = want;
                                // As BIRD 2.0.12: the status line, then the closing 0000.
                                format!("{code}-{p}: {verb}d\n0000 \n")
                            }
                        },
                        _ => "9001 syntax error\n".to_string(),
                    };
                    if s.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        (path, log)
    }

    fn cfg(weights: &[(&str, u32)]) -> ferrovs_cfg::Config {
        let mut t = "[engine]\nbackend = \"memory\"\n[cluster]\nnode_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n".to_string();
        for (i, (vip, w)) in weights.iter().enumerate() {
            t += &format!("[[service]]\nname = \"s{i}\"\nvip = \"{vip}\"\nports = [{}]\n[[service.real_server]]\naddress = \"10.0.2.2\"\nweight = {w}\n", 80 + i);
        }
        ferrovs_cfg::Config::from_str(&t, "t").unwrap()
    }

    #[test]
    fn desired_state_per_vip() {
        // Two services on .100 (one server down), one on .101 with its only server down.
        let c = cfg(&[("10.0.0.100", 1), ("10.0.0.100", 0), ("10.0.0.101", 0)]);
        let d = desired(&c, Phase::Up);
        assert_eq!(d.get("fvs_10_0_0_100"), Some(&true));
        assert_eq!(d.get("fvs_10_0_0_101"), Some(&false));
        assert!(desired(&c, Phase::Draining).values().all(|v| !v), "draining withdraws every VIP");
        assert!(desired(&cfg(&[]), Phase::Up).is_empty());
    }

    #[test]
    fn full_nat_local_addresses_of_every_node_until_exit() {
        let t = "[engine]\nbackend = \"memory\"\n[cluster]\nnode_id = 1\nsync_address = \"10.9.0.1\"\npeers = [\"10.9.0.2\"]\n\
                 [[cluster.node]]\nid = 1\nlocal_addresses = [\"10.98.0.1\"]\n[[cluster.node]]\nid = 2\nlocal_addresses = [\"10.98.0.2\"]\n\
                 [[service]]\nname = \"f\"\nvip = \"10.0.0.100\"\nports = [80]\nforward = \"fnat\"\nlocal_addresses = [\"10.98.0.1\", \"10.98.0.2\"]\n\
                 [[service.real_server]]\naddress = \"10.0.2.2\"\n";
        let c = ferrovs_cfg::Config::from_str(t, "t").unwrap();
        let on = |p: Phase| -> Vec<(String, bool)> { desired(&c, p).into_iter().collect() };
        let row = |v: bool, l: bool| {
            vec![("fvs_10_0_0_100".to_string(), v), ("fvs_10_98_0_1".to_string(), l), ("fvs_10_98_0_2".to_string(), l)]
        };
        assert_eq!(on(Phase::Up), row(true, true), "own and the peer's local address");
        assert_eq!(on(Phase::Draining), row(false, true), "replies of draining connections still come back");
        assert_eq!(on(Phase::Down), row(false, false));
    }

    #[test]
    fn announcer_sends_changes_reasserts_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("fvs-bird-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, log) = fake_bird(&dir, &["fvs_10_0_0_100", "fvs_10_0_0_101"]);
        let mut a = Announcer::new(&path);
        let s = 1_000_000_000;
        let want = desired(&cfg(&[("10.0.0.100", 1), ("10.0.0.101", 0)]), Phase::Up);
        let (ch, err) = a.update(&want, s);
        assert!(err.is_none(), "{err:?}");
        // .100 was enabled already (BIRD's config), .101 gets disabled.
        assert_eq!(ch, vec![("fvs_10_0_0_100".to_string(), true), ("fvs_10_0_0_101".to_string(), false)]);
        assert_eq!(*log.lock().unwrap(), ["enable fvs_10_0_0_100", "disable fvs_10_0_0_101"]);
        // Nothing changed: nothing sent.
        assert!(a.update(&want, 2 * s).0.is_empty());
        assert_eq!(log.lock().unwrap().len(), 2);
        // Draining: both withdrawn, only the change is sent.
        let (ch, _) = a.update(&desired(&cfg(&[("10.0.0.100", 1), ("10.0.0.101", 0)]), Phase::Draining), 3 * s);
        assert_eq!(ch, vec![("fvs_10_0_0_100".to_string(), false)]);
        assert_eq!(log.lock().unwrap().len(), 3);
        // Re-asserted after REASSERT_NS even without a change.
        a.update(&desired(&cfg(&[("10.0.0.100", 1), ("10.0.0.101", 0)]), Phase::Draining), 3 * s + REASSERT_NS + 1);
        assert_eq!(log.lock().unwrap().len(), 5);
        // A VIP BIRD has no protocol for: a clear error, counted.
        let (_, err) = a.update(&desired(&cfg(&[("10.0.0.102", 1)]), Phase::Up), 20 * s);
        let e = err.expect("unknown protocol");
        assert!(e.to_string().contains("declare it in bird.conf"), "{e}");
        assert_eq!(a.errors, 1);
        // No BIRD at all: an I/O error, not a panic.
        let mut none = Announcer::new(&dir.join("absent.ctl"));
        assert!(matches!(none.update(&want, s).1, Some(BirdError::Io(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
