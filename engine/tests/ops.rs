//! Operating ferrovs: the `ferrovs` binary under a small systemd stand-in
//! (a unix datagram socket passed as $NOTIFY_SOCKET: READY=1 once the
//! control socket and metrics listener accept, RELOADING=1/READY=1 around
//! SIGHUP, STOPPING=1 on SIGTERM), the status page and /metrics over HTTP,
//! and `ferrovsadm top` with stdout piped (plain text output).

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fvs-ops-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(sock: &Path, metrics_port: u16, services: &str) -> String {
    format!(
        "[engine]\nworkers = 2\nbackend = \"memory\"\nflow_table_size = 5000\ncontrol_socket = \"{}\"\n\
         metrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[[interface]]\nname = \"ext\"\ndevice = \"m0\"\n\
         addresses = [\"10.0.1.1/24\"]\n\n[[interface]]\nname = \"int\"\ndevice = \"m1\"\naddresses = [\"10.0.2.1/24\"]\n{services}",
        sock.display()
    )
}

const SERVICES: &str = "
[[service]]
name = \"ftp<&>\"
vip = \"10.0.1.100\"
ports = [21]
scheduler = \"rr\"
ftp = true

[[service.real_server]]
address = \"10.0.2.2\"

[[service.real_server]]
address = \"10.0.2.3\"
weight = 3

[[service]]
name = \"web\"
vip = \"10.0.1.100\"
ports = [80]

[[service.real_server]]
address = \"10.0.2.4\"
";

struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    cfg: PathBuf,
    port: u16,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = tmpdir(tag);
        let sock = dir.join("run/ferrovs.sock");
        let cfg = dir.join("ferrovs.toml");
        let port = free_port();
        std::fs::write(&cfg, config(&sock, port, SERVICES)).unwrap();
        let npath = dir.join("notify");
        let notify = UnixDatagram::bind(&npath).unwrap();
        notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrovs"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &npath)
            .env("FERROVS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon { child, dir, sock, cfg, port, notify }
    }

    /// The next notification datagram.
    fn next(&mut self) -> String {
        let mut buf = [0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => {
                let _ = self.child.kill();
                let mut err = String::new();
                let _ = self.child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                panic!("no sd_notify message within 20 s ({e}); ferrovs' stderr:\n{err}");
            }
        }
    }

    fn ready(&mut self) -> String {
        let m = self.next();
        assert!(m.lines().any(|l| l == "READY=1"), "expected READY=1, got {m:?}");
        m
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    fn http(&self, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        let (h, b) = r.split_once("\r\n\r\n").unwrap();
        (h.to_string(), b.to_string())
    }

    fn stop(mut self) -> std::process::Output {
        self.signal(libc::SIGTERM);
        let m = self.next();
        assert_eq!(m, "STOPPING=1");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "ferrovs did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn sd_notify_ready_reload_stop() {
    let mut d = Daemon::start("notify");
    let m = d.ready();
    assert!(m.contains("STATUS=2 workers, 2 services"), "{m:?}");
    // READY means serving: the control socket and the metrics port accept now.
    assert!(std::os::unix::net::UnixStream::connect(&d.sock).is_ok(), "control socket not up at READY=1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", d.port)).is_ok(), "metrics not up at READY=1");

    // Reload with one service more.
    let more = format!("{SERVICES}\n[[service]]\nname = \"dns\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\nports = [53]\n\n[[service.real_server]]\naddress = \"10.0.2.5\"\n");
    std::fs::write(&d.cfg, config(&d.sock, d.port, &more)).unwrap();
    d.signal(libc::SIGHUP);
    let m = d.next();
    assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m:?}");
    let m = d.ready();
    assert!(m.contains("STATUS=2 workers, 3 services"), "{m:?}");

    // A broken file: still READY, with the failure in STATUS, still serving.
    std::fs::write(&d.cfg, "[engine]\nworkers = \"two\"\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(d.next().starts_with("RELOADING=1"));
    let m = d.ready();
    assert!(m.contains("STATUS=reload failed"), "{m:?}");
    let (_, body) = d.http("/");
    assert!(body.contains("dns"), "the previous (3-service) config still runs");

    let out = d.stop();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}'), "no ANSI escapes in a log that is not a terminal: {err:?}");
    assert!(err.contains("reload failed"), "{err}");
}

#[test]
fn status_page_and_metrics_over_http() {
    let mut d = Daemon::start("http");
    d.ready();
    let (h, body) = d.http("/");
    assert!(h.starts_with("HTTP/1.0 200"), "{h}");
    assert!(h.contains("Content-Type: text/html; charset=utf-8"), "{h}");
    assert!(body.contains("<meta name=\"viewport\""));
    assert!(body.contains("ftp&lt;&amp;&gt;") && !body.contains("ftp<&>"), "escaped service name");
    for s in ["10.0.2.2:21", "10.0.2.3:21", "10.0.2.4:80", "web", "FTP gateway", "0 / 10.0k"] {
        assert!(body.contains(s), "status page lacks {s:?}");
    }
    let (h, m) = d.http("/metrics");
    assert!(h.starts_with("HTTP/1.0 200"));
    assert!(m.contains("ferrovs_worker_flow_table_capacity{worker=\"1\"} 5000"), "{m}");
    assert!(m.contains("ferrovs_real_server_weight{service=\"ftp<&>\",server=\"10.0.2.3:21\"} 3"));
    let (h, _) = d.http("/nope");
    assert!(h.starts_with("HTTP/1.0 404"));
    d.stop();
}

#[test]
fn top_prints_plain_text_when_piped() {
    let mut d = Daemon::start("top");
    d.ready();
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovsadm"))
        .arg("--socket")
        .arg(&d.sock)
        .args(["top", "--iterations", "2", "--interval", "0.3", "--sort-by", "name"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t0.elapsed() >= Duration::from_millis(300), "waited one interval between the samples");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\u{1b}'), "no terminal escapes when piped: {text:?}");
    assert_eq!(text.matches("--- sample ").count(), 2, "{text}");
    assert!(text.contains("--- sample 2\n"));
    let first = text.split("--- sample 2").next().unwrap();
    for s in [
        "ferrovs 0.1.0",
        "2 workers",
        "flows 0 of 10000",
        "SERVICE / REAL SERVER",
        "ftp<&> (TCP 10.0.1.100:21)",
        "  -> 10.0.2.3:21",
        "web (TCP 10.0.1.100:80)",
        "drops: none",
        "ftp ftp<&>: no activity",
    ] {
        assert!(first.contains(s), "missing {s:?} in\n{first}");
    }
    assert!(first.find("ftp<&> (TCP").unwrap() < first.find("web (TCP").unwrap(), "sorted by name");
    // A daemon that is not there is an error, not an empty screen.
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovsadm"))
        .args(["--socket", "/nonexistent/fvs.sock", "top", "--iterations", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    d.stop();
}

#[test]
fn config_import_takes_mark_rules_from_iptables_save() {
    // `ferrovs config import --marks RULES`: the fwmark service of an ipvsadm-save gets the
    // address and ports its iptables MARK rules select; a bad rule fails naming its file and line.
    let dir = tmpdir("import");
    let save = dir.join("rules.ipvs");
    std::fs::write(&save, "-A -f 21 -s wlc -p 300\n-a -f 21 -r 10.0.2.2:0 -m -w 1\n").unwrap();
    let rules = dir.join("rules.v4");
    std::fs::write(
        &rules,
        "*mangle\n-A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 21 -j MARK --set-xmark 0x15/0xffffffff\n\
         -A PREROUTING -d 10.0.0.100/32 -p tcp -m tcp --dport 10000:20000 -j MARK --set-xmark 0x15/0xffffffff\nCOMMIT\n",
    )
    .unwrap();
    let run = |marks: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ferrovs"))
            .args(["config", "import", "--from", "ipvsadm"])
            .arg(&save)
            .arg("--marks")
            .arg(marks)
            .output()
            .unwrap()
    };
    let out = run(&rules);
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(toml.contains("vip = \"10.0.0.100\""), "{toml}");
    assert!(toml.contains("ports = [21, \"10000-20000\"]"), "{toml}");
    let bad = dir.join("bad.v4");
    std::fs::write(&bad, "*mangle\n\n-A PREROUTING -d 10.0.0.100/32 -j MARK --set-mark nine\n").unwrap();
    let out = run(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.v4:3") && err.contains("invalid mark"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
