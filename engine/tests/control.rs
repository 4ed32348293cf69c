//! Control plane end to end: a memory-backend engine with its control
//! socket, driven by the `ferrovsadm` binary with command sequences from
//! real ipvsadm usage (LVS-HOWTO, ipvsadm(8)), `-L -n` compared with
//! golden files under tests/golden/, `-S` | `-C` | `-R` round trips, and
//! bad requests on the socket.

use ferrovs_cfg::Config;
use ferrovs_engine::{ctl::control, daemon};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test's directory under the system temp dir, removed with everything in it when the test
/// ends (declared before the engine, so dropped after it), passed or failed.
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(tag: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("fvs-ctl-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn config_text(sock: &Path, extra: &str) -> String {
    format!("[engine]\nworkers = 2\nbackend = \"memory\"\ncontrol_socket = \"{}\"\n{extra}", sock.display())
}

struct Engine {
    running: Option<daemon::Running>,
    control: Option<control::ControlHandle>,
    sock: PathBuf,
}

impl Engine {
    fn start(dir: &Path, extra_engine: &str, services: &str) -> Engine {
        let sock = dir.join("run/ferrovs.sock");
        let path = dir.join("ferrovs.toml");
        std::fs::write(&path, format!("{}\n{services}", config_text(&sock, extra_engine))).unwrap();
        let cfg = Arc::new(Config::from_file(&path).unwrap());
        let running = daemon::open_and_start(cfg.clone()).unwrap();
        let control = control::spawn(Some(path), cfg, &running).unwrap();
        Engine { running: Some(running), control: Some(control), sock }
    }
    fn adm(&self, args: &[&str]) -> (bool, String, String) {
        adm_stdin(&self.sock, args, None)
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.adm(args);
        assert!(ok, "ferrovsadm {args:?} failed: {err}");
        out
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(c) = self.control.take() {
            c.shutdown();
        }
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

fn adm_stdin(sock: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovsadm"));
    c.arg("--socket").arg(sock).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn golden(name: &str, got: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("FERROVS_BLESS").is_some() {
        std::fs::write(&p, got).unwrap();
    }
    let want =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (FERROVS_BLESS=1 writes it)", p.display()));
    assert_eq!(got, want, "output differs from {}", p.display());
}

/// The LVS-HOWTO LVS-NAT example, then an FTP service as the brief's.
const HOWTO: &[&str] = &[
    "-A -t 192.168.1.110:80 -s rr",
    "-a -t 192.168.1.110:80 -r 10.1.1.2:80 -m -w 1",
    "-a -t 192.168.1.110:80 -r 10.1.1.3:80 -m -w 1",
    "-a -t 192.168.1.110:80 -r 10.1.1.4:80 -m -w 2",
    "-A -t 10.0.1.100:21 -s rr -p",
    "-a -t 10.0.1.100:21 -r 10.0.2.2:21 -m",
    "-A -u 192.168.1.110:53 -s wlc",
    "-a -u 192.168.1.110:53 -r 10.1.1.2 -g -w 3",
    "-A -t [2001:db8::80]:443 -s sh -p 1800 -M 64",
    "-a -t [2001:db8::80]:443 -r [2001:db8:1::2]:443 -i -w 5",
    "-E -t 192.168.1.110:80 -s wlc",
    "-e -t 192.168.1.110:80 -r 10.1.1.4:80 -w 3",
    "-d -t 192.168.1.110:80 -r 10.1.1.3:80",
];

#[test]
fn howto_sequence_list_save_restore() {
    let dir = tmpdir("howto");
    let e = Engine::start(&dir, "", "");
    for l in HOWTO {
        let args: Vec<&str> = l.split_whitespace().collect();
        e.ok(&args);
    }
    golden("howto-list-n.txt", &e.ok(&["-L", "-n"]));
    golden("howto-stats.txt", &e.ok(&["-L", "-n", "--stats"]));
    golden("howto-rate.txt", &e.ok(&["-L", "-n", "--rate"]));
    assert_eq!(e.ok(&["-L", "--timeout"]), "Timeout (tcp tcpfin udp): 900 120 300\n");
    e.ok(&["--set", "600", "60", "0"]);
    assert_eq!(e.ok(&["-l", "--timeout"]), "Timeout (tcp tcpfin udp): 600 60 300\n");
    let save = e.ok(&["-S", "-n"]);
    golden("howto-save.txt", &save);
    let list = e.ok(&["-L", "-n"]);
    e.ok(&["-C"]);
    assert_eq!(e.ok(&["-S"]), "");
    let (ok, _, err) = adm_stdin(&e.sock, &["-R"], Some(&save));
    assert!(ok, "{err}");
    assert_eq!(e.ok(&["-S", "-n"]), save);
    assert_eq!(e.ok(&["-L", "-n"]), list);
    // The snapshot workers run follows.
    let snap = e.control.as_ref().unwrap().snapshot();
    assert_eq!(snap.services.len(), 4);
    // Connection listing (no traffic: header only), ferrovs-only verbs.
    assert_eq!(
        e.ok(&["-L", "-n", "-c"]),
        "IPVS connection entries\npro expire state       source             virtual            destination\n"
    );
    assert!(e.ok(&["conns"]).starts_with("pro "));
    assert!(e.ok(&["drops"]).contains("no_service"));
    assert!(e.ok(&["--ftp"]).contains("service tcp-10.0.1.100-21"));
    assert!(e
        .ok(&["metrics"])
        .contains("ferrovs_real_server_weight{service=\"tcp-192.168.1.110-80\",server=\"10.1.1.4:80\"} 3"));
    assert!(e.ok(&["-Z"]).is_empty());
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["-L", "-n", "--json"])).unwrap();
    assert_eq!(v["list"]["services"].as_array().unwrap().len(), 4);
}

#[test]
fn errors_leave_state_unchanged() {
    let dir = tmpdir("errors");
    let e = Engine::start(&dir, "", "");
    e.ok(&["-A", "-t", "10.0.0.1:80", "-s", "rr"]);
    let before = e.ok(&["-S"]);
    for (args, msg) in [
        (vec!["-A", "-t", "10.0.0.1:80"], "already exists"),
        (vec!["-a", "-t", "10.9.9.9:80", "-r", "10.0.2.2"], "no such service"),
        (vec!["-a", "-t", "10.0.0.1:80", "-r", "[2001:db8::1]:80"], "address family"),
        (vec!["-A", "-f", "21"], "declare the port group"),
        (vec!["-d", "-t", "10.0.0.1:80", "-r", "10.0.2.9"], "no such destination"),
        (vec!["-A", "-t", "10.0.0.2:80", "-s", "nope"], "unknown scheduler"),
        (vec!["-Z", "-t", "10.9.9.9:80"], "no such service TCP 10.9.9.9:80"),
    ] {
        let (ok, _, err) = e.adm(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // -R is atomic: a bad line rejects the whole input.
    let (ok, _, err) = adm_stdin(&e.sock, &["-R"], Some("-A -t 10.0.0.3:80 -s rr\n-a -t 10.0.0.4:80 -r 10.0.2.2\n"));
    assert!(!ok && err.contains("command 2"), "{err}");
    assert_eq!(e.ok(&["-S"]), before);
}

#[test]
fn port_group_services_from_config() {
    let dir = tmpdir("pg");
    let e = Engine::start(
        &dir,
        "",
        r#"
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
port = 21

[[service]]
name = "web"
vip = "10.0.0.100"
ports = [80, "8000-8100"]
scheduler = "rr"

[[service.real_server]]
address = "10.0.2.3"
"#,
    );
    golden("portgroup-list-n.txt", &e.ok(&["-L", "-n"]));
    e.ok(&["-E", "-f", "21", "-s", "wlc", "-p", "600"]);
    e.ok(&["-a", "-t", "10.0.0.100:8080", "-r", "10.0.2.4", "-m", "-w", "2"]);
    let save = e.ok(&["-S"]);
    assert!(
        save.contains("# ferrovs-service name=ftp proto=tcp vip=10.0.0.100 ports=21,10000-10100 fwmark=21"),
        "{save}"
    );
    e.ok(&["-C"]);
    let (ok, _, err) = adm_stdin(&e.sock, &["-R"], Some(&save));
    assert!(ok, "{err}");
    assert_eq!(e.ok(&["-S"]), save);
    let st = e.ok(&["status"]);
    assert!(st.contains("service web: TCP 10.0.0.100 ports 80,8000-8100"), "{st}");
    // --reload re-reads the file: back to the configured state.
    e.ok(&["--reload"]);
    golden("portgroup-list-n.txt", &e.ok(&["-L", "-n"]));
}

fn raw(sock: &Path, bytes: &[u8], shutdown: bool) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if shutdown {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

#[test]
fn bad_requests_get_errors() {
    let dir = tmpdir("bad");
    let e = Engine::start(&dir, "", "");
    let err = |r: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(r).unwrap_or_else(|_| panic!("not JSON: {r:?}"));
        assert_eq!(v["ok"], false, "{r}");
        assert_eq!(v["v"], 1);
        v["error"].as_str().unwrap().to_string()
    };
    assert!(err(&raw(&e.sock, b"garbage\n", false)).contains("invalid JSON"));
    assert!(err(&raw(&e.sock, b"{\"v\":1,\"op\":\"li", true)).contains("truncated"));
    assert!(err(&raw(&e.sock, b"{\"v\":2,\"op\":\"list\"}\n", false)).contains("version"));
    assert!(err(&raw(&e.sock, b"{\"v\":1,\"op\":\"frobnicate\"}\n", false)).contains("unknown op"));
    assert!(err(&raw(&e.sock, b"[1,2]\n", false)).contains("object"));
    assert!(err(&raw(&e.sock, b"{\"v\":1,\"op\":\"edit\",\"cmds\":[{\"cmd\":\"nope\"}]}\n", false)).contains("cmds"));
    let huge = vec![b'x'; (1 << 20) + 4096];
    assert!(err(&raw(&e.sock, &huge, false)).contains("too large"));
    // A silent client does not block others.
    let _idle = UnixStream::connect(&e.sock).unwrap();
    let t = Instant::now();
    let ok = raw(&e.sock, b"{\"v\":1,\"op\":\"status\"}\n", false);
    assert!(ok.contains("\"ok\":true"), "{ok}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Several requests on one connection.
    let two = {
        let mut s = UnixStream::connect(&e.sock).unwrap();
        s.write_all(b"{\"v\":1,\"op\":\"status\"}\n{\"v\":1,\"op\":\"save\"}\n").unwrap();
        let mut r = BufReader::new(s);
        let (mut a, mut b) = (String::new(), String::new());
        r.read_line(&mut a).unwrap();
        r.read_line(&mut b).unwrap();
        (a, b)
    };
    assert!(two.1.contains("rules"));
    // Socket mode 0660.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&e.sock).unwrap().permissions().mode() & 0o777, 0o660);
    e.ok(&["-L", "-n"]);
}

#[test]
fn health_check_quiesces_and_restores() {
    use std::net::TcpListener;
    let dir = tmpdir("health");
    // A "real server" on loopback that we can stop and restart.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let e = Engine::start(
        &dir,
        "",
        &format!(
            r#"
[[service]]
name = "web"
vip = "10.0.0.1"
ports = [{port}]
scheduler = "rr"

[service.health_check]
type = "tcp"
interval = 0.1
timeout = 0.5
rise = 2
fall = 2

[[service.real_server]]
address = "127.0.0.1"
weight = 7

[[service.real_server]]
address = "127.0.0.2"
port = 9
weight = 3
"#
        ),
    );
    let wait = |pred: &dyn Fn(&str) -> bool| -> String {
        let t = Instant::now();
        loop {
            let out = e.ok(&["-L", "-n"]);
            if pred(&out) {
                return out;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "timed out; last listing:\n{out}\n{}", e.ok(&["health"]));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // 127.0.0.2:9 has nothing listening: quiesced to weight 0; 127.0.0.1 stays.
    let rs1 = |w: u32| format!("  -> {:<28} Masq    {w:<6}", format!("127.0.0.1:{port}"));
    let rs2 = |w: u32| format!("  -> {:<28} Masq    {w:<6}", "127.0.0.2:9");
    let out = wait(&|o| o.contains(&rs2(0)));
    assert!(out.contains(&rs1(7)), "{out}");
    // -S keeps the configured weight.
    assert!(e.ok(&["-S"]).contains("-r 127.0.0.2:9 -m -w 3"));
    drop(l);
    wait(&|o| o.contains(&rs1(0)));
    let _l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait(&|o| o.contains(&rs1(7)));
    let h = e.ok(&["health"]);
    assert!(h.contains("127.0.0.2:9") && h.contains("down"), "{h}");
}

#[test]
fn metrics_over_http() {
    use std::io::Read;
    let dir = tmpdir("metrics");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Engine::start(&dir, &format!("metrics_listen = \"127.0.0.1:{port}\"\n"), "");
    e.ok(&["-A", "-t", "10.0.0.1:80"]);
    e.ok(&["-a", "-t", "10.0.0.1:80", "-r", "10.0.2.2", "-m"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(body.contains("# TYPE ferrovs_service_connections_total counter"));
    assert!(
        body.contains("ferrovs_real_server_active_connections{service=\"tcp-10.0.0.1-80\",server=\"10.0.2.2:80\"} 0")
    );
    assert!(body.contains("ferrovs_worker_drops_total{worker=\"1\",reason=\"no_service\"} 0"));
}

/// `ferrovs run` starts the control server on the configured socket.
#[test]
fn ferrovs_run_serves_the_control_socket() {
    let dir = tmpdir("run");
    let sock = dir.join("sub/dir/ctl.sock");
    let path = dir.join("ferrovs.toml");
    std::fs::write(&path, config_text(&sock, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovs"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let t = Instant::now();
    while !sock.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("ferrovs run exited early: {st}");
        }
        assert!(t.elapsed() < Duration::from_secs(15), "ferrovs run did not create {}", sock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _k = Kill(child);
    for l in HOWTO {
        let args: Vec<&str> = l.split_whitespace().collect();
        let (ok, _, err) = adm_stdin(&sock, &args, None);
        assert!(ok, "{l}: {err}");
    }
    golden("howto-list-n.txt", &adm_stdin(&sock, &["-L", "-n"], None).1);
    // Garbage does not kill the daemon.
    let r = raw(&sock, b"\xff\xfe garbage\n", false);
    assert!(r.contains("\"ok\":false"));
    // --reload re-reads the file (no services in it).
    let (ok, _, err) = adm_stdin(&sock, &["--reload"], None);
    assert!(ok, "{err}");
    assert_eq!(adm_stdin(&sock, &["-S"], None).1, "");
}

/// The placement block of the test daemons' sync thread: 2 workers, the default
/// local_port_range, no `[[cluster.node]]` tables.
fn test_placement() -> ferrovs_engine::cluster::sync::Placement {
    ferrovs_engine::cluster::sync::Placement::of(2, ferrovs_cfg::PortRange { lo: 1024, hi: 65535 }, &[])
}

/// Cluster: the sync thread's counters in `ferrovsadm drops` (text and --json) and in the
/// metrics, after datagrams of each kind reach the sync port.
#[test]
fn sync_counters_in_drops_and_metrics() {
    use ferrovs_engine::cluster::sync::{Batcher, SyncEntry};
    use std::io::Read;
    let dir = tmpdir("syncstats");
    let free_udp = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sync_port = free_udp();
    let mport = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cluster = format!(
        "[cluster]\nnode_id = 1\nsync_address = \"127.0.0.1\"\nsync_port = {sync_port}\npeers = [\"127.0.0.2\"]\n\
         bird_socket = \"{}\"\n",
        dir.join("no-bird.ctl").display()
    );
    let e = Engine::start(&dir, &format!("metrics_listen = \"127.0.0.1:{mport}\"\n"), &cluster);
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", sync_port);
    let del = SyncEntry::Delete {
        proto: 6,
        client: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 0, 2]),
        cport: 1234,
        vip: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 0, 100]),
        vport: 80,
        lport: None,
    };
    let good = Batcher::new(2, 100).with_placement(test_placement()).encode(&[del, del], 1).remove(0);
    tx.send_to(&good, to).unwrap();
    tx.send_to(b"hello", to).unwrap();
    let mut v = good.clone();
    v[4] = 9;
    tx.send_to(&v, to).unwrap();
    tx.send_to(&good[..good.len() - 1], to).unwrap();
    // A node running 4 workers: refused, counted (and nothing installed from it).
    let four = ferrovs_engine::cluster::sync::Placement { workers: 4, ..test_placement() };
    tx.send_to(&Batcher::new(3, 100).with_placement(four).encode(&[del], 1).remove(0), to).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let js = loop {
        let out = e.ok(&["drops", "--json"]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let skipped: u64 = j["workers"].as_array().unwrap().iter().map(|w| w["sync_skipped"].as_u64().unwrap()).sum();
        let done = j["sync"]["messages_malformed"] == 1 && j["sync"]["messages_placement"] == 1 && skipped == 2;
        if done || Instant::now() > deadline {
            break j;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let s = &js["sync"];
    assert_eq!(
        (
            &s["messages_received"],
            &s["entries_received"],
            &s["messages_not_sync"],
            &s["messages_version"],
            &s["messages_malformed"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{js}"
    );
    let text = e.ok(&["drops"]);
    assert!(text.contains("cluster sync:") && text.contains("messages_version       1"), "{text}");
    let mut h = std::net::TcpStream::connect(("127.0.0.1", mport)).unwrap();
    h.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    h.read_to_string(&mut body).unwrap();
    assert!(body.contains("# TYPE ferrovs_sync_messages_received_total counter"), "{body}");
    assert!(body.contains("\nferrovs_sync_entries_received_total 2\n"), "{body}");
    assert!(body.contains("\nferrovs_sync_messages_not_sync_total 1\n"), "{body}");
    assert!(body.contains("\nferrovs_sync_messages_placement_total 1\n"), "{body}");
    // The workers' side: the two deletions of connections nobody has, skipped.
    let worker_sum = |name: &str| -> u64 {
        body.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert!(body.contains("# TYPE ferrovs_worker_sync_capped_total counter"), "{body}");
    assert_eq!(worker_sum("ferrovs_worker_sync_skipped_total"), 2, "{body}");
    assert_eq!(worker_sum("ferrovs_worker_sync_installed_total"), 0, "{body}");
    assert_eq!(s["messages_placement"], 1, "{js}");
}

/// A single node has no sync section in `drops` and no sync metrics.
#[test]
fn no_sync_counters_without_a_cluster() {
    let dir = tmpdir("nosync");
    let e = Engine::start(&dir, "", "");
    let j: serde_json::Value = serde_json::from_str(&e.ok(&["drops", "--json"])).unwrap();
    assert!(j.get("sync").is_none(), "{j}");
    assert!(!e.ok(&["drops"]).contains("cluster sync"));
}

/// Cluster with `sync_key_file`: only authentic, fresh, first-seen datagrams are accepted;
/// the others are counted as auth failures or replays.
#[test]
fn authenticated_sync_counts_forgeries_and_replays() {
    use ferrovs_engine::cluster::sync::{Batcher, SyncEntry, SyncKey};
    let dir = tmpdir("syncauth");
    let key = "3f1c0a9e5b7d2468ace0135798642fdb";
    let kf = dir.join("sync.key");
    std::fs::write(&kf, format!("{key}\n")).unwrap();
    let sync_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cluster = format!(
        "[cluster]\nnode_id = 1\nsync_address = \"127.0.0.1\"\nsync_port = {sync_port}\npeers = [\"127.0.0.2\"]\n\
         bird_socket = \"{}\"\nsync_key_file = \"{}\"\n",
        dir.join("no-bird.ctl").display(),
        kf.display()
    );
    let e = Engine::start(&dir, "", &cluster);
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", sync_port);
    let del = SyncEntry::Delete {
        proto: 6,
        client: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 0, 2]),
        cport: 1234,
        vip: ferrovs_engine::wire::parse::v4_to_addr([10, 0, 0, 100]),
        vport: 80,
        lport: None,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    let mut good = Batcher::with_key(2, 100, SyncKey::new(key.as_bytes()), 1).with_placement(test_placement());
    let m1 = good.encode_at(&[del], 1, now).remove(0);
    let m2 = good.encode_at(&[del, del], 2, now).remove(0);
    let forged = Batcher::with_key(2, 100, SyncKey::new(b"not the cluster's key at all"), 1).encode_at(&[del], 1, now);
    let stale = Batcher::with_key(3, 100, SyncKey::new(key.as_bytes()), 1).encode_at(&[del], 1, now - 3600);
    let v1 = Batcher::new(2, 100).encode(&[del], 1);
    for d in [&m1, &m2, &m1, &forged[0], &stale[0], &v1[0]] {
        tx.send_to(d, to).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let j: serde_json::Value = serde_json::from_str(&e.ok(&["drops", "--json"])).unwrap();
        if j["sync"]["messages_auth_failed"] == 2 || Instant::now() > deadline {
            break j["sync"].clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s["messages_received"], 2, "{s}");
    assert_eq!(s["entries_received"], 3, "{s}");
    assert_eq!(s["messages_replayed"], 2, "m1 again and the stale one: {s}");
    assert_eq!(s["messages_auth_failed"], 2, "wrong key and version 1: {s}");
}

/// `ferrovsadm ports`: the in-memory backend keeps no port counters and says so; a backend
/// that has them (set here as AF_PACKET's and DPDK's are, through `Running::ports`) shows a
/// line per port and per queue, in JSON, and in the metrics.
#[test]
fn ports_show_what_the_ports_counted() {
    use ferrovs_engine::port::{PortCounters, PortReport};
    let dir = tmpdir("ports");
    let e = Engine::start(&dir, "", "");
    let j: serde_json::Value = serde_json::from_str(&e.ok(&["ports", "--json"])).unwrap();
    assert_eq!((&j["counted"], &j["ports"]), (&serde_json::json!(false), &serde_json::json!([])), "{j}");
    assert!(e.ok(&["ports"]).starts_with("no port counters"));
    assert!(!e.ok(&["metrics"]).contains("ferrovs_port_"), "no port series without port counters");
    // AF_PACKET's own: checksums completed, VLAN tags put back (the other backends' 0).
    let q = |rx, dropped| PortCounters {
        rx_packets: rx,
        rx_bytes: 64 * rx,
        rx_dropped: dropped,
        rx_csum_partial: rx / 5,
        rx_csum_completed: rx / 5 - 1,
        rx_vlan_restored: rx - 1,
        ..Default::default()
    };
    let (q0, q1) = (q(10, 3), q(5, 4));
    let mut all = q0;
    all.add(&q1);
    let report = PortReport {
        name: "ext".into(),
        device: "fvs-lb0".into(),
        driver: "af_packet".into(),
        link_up: None,
        counters: all,
        queues: vec![q0, q1],
    };
    let state = &e.control.as_ref().unwrap().state;
    assert!(state.ports.set(Arc::new(move || vec![report.clone()])).is_ok());
    let j: serde_json::Value = serde_json::from_str(&e.ok(&["ports", "--json"])).unwrap();
    assert_eq!(j["counted"], true, "{j}");
    assert_eq!((&j["ports"][0]["name"], &j["ports"][0]["counters"]["rx_dropped"]), (&"ext".into(), &7.into()), "{j}");
    assert_eq!(j["ports"][0]["queues"].as_array().map(Vec::len), Some(2), "{j}");
    let c = &j["ports"][0]["counters"];
    assert_eq!(
        (&c["rx_csum_partial"], &c["rx_csum_completed"], &c["rx_vlan_restored"]),
        (&3.into(), &1.into(), &13.into()),
        "{j}"
    );
    let text = e.ok(&["ports"]);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 4, "header, the port, its two queues:\n{text}");
    assert_eq!(lines[0][..3], ["Port", "(device,", "driver,"], "{text}");
    assert_eq!(lines[1][..3], ["ext", "(fvs-lb0,", "af_packet)"], "{text}");
    assert_eq!(lines[1][3..6], ["15", "960", "7"], "rx packets, bytes, dropped:\n{text}");
    assert_eq!(lines[3][..5], ["queue", "1", "5", "320", "4"], "{text}");
    let heads = &lines[0][lines[0].len() - 3..];
    assert_eq!(heads, ["RxCsumPart", "RxCsumDone", "RxVlanRestd"], "the last columns:\n{text}");
    assert_eq!(lines[1][lines[1].len() - 3..], ["3", "1", "13"], "checksums partial, completed, VLAN tags:\n{text}");
    assert_eq!(lines[3][lines[3].len() - 3..], ["1", "0", "4"], "{text}");
    let m = e.ok(&["metrics"]);
    assert!(m.contains("# TYPE ferrovs_port_rx_dropped_total counter"), "{m}");
    assert!(m.contains("\nferrovs_port_rx_dropped_total{port=\"ext\",device=\"fvs-lb0\"} 7\n"), "{m}");
    assert!(m.contains("\nferrovs_port_rx_packets_total{port=\"ext\",device=\"fvs-lb0\"} 15\n"), "{m}");
    for (name, v) in [("rx_csum_partial", 3), ("rx_csum_completed", 1), ("rx_vlan_restored", 13)] {
        assert!(m.contains(&format!("# HELP ferrovs_port_{name}_total ")), "{name}:\n{m}");
        assert!(m.contains(&format!("# TYPE ferrovs_port_{name}_total counter\n")), "{name}:\n{m}");
        assert!(
            m.contains(&format!("\nferrovs_port_{name}_total{{port=\"ext\",device=\"fvs-lb0\"}} {v}\n")),
            "{name}:\n{m}"
        );
    }
}
