//! `ferrovs replay` end to end: a whole FTP session (control + passive and
//! active data connections, both directions) written to a pcap, replayed by
//! the binary with 1 and 2 workers; the output is checked for the 227
//! rewrite, checksums, and seq/ack continuity; two runs give identical bytes.

mod common;
use common::*;
use ferrovs_engine::port::pcap::{PcapReader, PcapWriter};
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{parse, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use std::path::{Path, PathBuf};
use std::process::Command;

const SERVICES: &str = r#"
[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
scheduler = "rr"
forward = "nat"
ftp = true

[[service.real_server]]
address = "10.0.2.2"
"#;

/// A test's directory under the system temp dir, removed with everything in it when the test
/// ends, passed or failed.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("fvs-replay-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scripted session: (from client?, frame).
fn session() -> Vec<(bool, Vec<u8>)> {
    let c = |flags, seq, ack, data: &[u8]| {
        (true, with_macs(tcp4(CLIENT, 40000, VIP, 21, flags, seq, ack, data), CLIENT_MAC, LB_EXT))
    };
    let s = |flags, seq, ack, data: &[u8]| {
        (false, with_macs(tcp4(RS1, 21, CLIENT, 40000, flags, seq, ack, data), RS1_MAC, LB_INT))
    };
    let mut v = Vec::new();
    let (mut cs, mut ss) = (1000u32, 5000u32);
    v.push(c(TCP_SYN, cs - 1, 0, b""));
    v.push(s(TCP_SYN | TCP_ACK, ss - 1, cs, b""));
    v.push(c(TCP_ACK, cs, ss, b""));
    let mut talk = |client: bool, line: &[u8], v: &mut Vec<(bool, Vec<u8>)>| {
        if client {
            v.push(c(TCP_ACK | TCP_PSH, cs, ss, line));
            cs += line.len() as u32;
        } else {
            v.push(s(TCP_ACK | TCP_PSH, ss, cs, line));
            ss += line.len() as u32;
        }
    };
    talk(false, b"220 ready\r\n", &mut v);
    talk(true, b"USER anonymous\r\n", &mut v);
    talk(false, b"230 Login successful.\r\n", &mut v);
    talk(true, b"PASV\r\n", &mut v);
    talk(false, b"227 Entering Passive Mode (10,0,2,2,117,50).\r\n", &mut v);
    // Passive data connection client -> VIP:30002.
    v.push((true, with_macs(tcp4(CLIENT, 40100, VIP, 30002, TCP_SYN, 1, 0, b""), CLIENT_MAC, LB_EXT)));
    v.push((false, with_macs(tcp4(RS1, 30002, CLIENT, 40100, TCP_SYN | TCP_ACK, 9, 2, b""), RS1_MAC, LB_INT)));
    talk(true, b"RETR f\r\n", &mut v);
    v.push((
        false,
        with_macs(tcp4(RS1, 30002, CLIENT, 40100, TCP_ACK | TCP_PSH, 10, 2, b"file data"), RS1_MAC, LB_INT),
    ));
    talk(false, b"226 Transfer complete.\r\n", &mut v);
    talk(true, b"PORT 10,0,1,2,157,0\r\n", &mut v);
    talk(false, b"200 PORT command successful.\r\n", &mut v);
    // Active data connection rs1:20 -> client:40192.
    v.push((false, with_macs(tcp4(RS1, 20, CLIENT, 40192, TCP_SYN, 77, 0, b""), RS1_MAC, LB_INT)));
    v.push((true, with_macs(tcp4(CLIENT, 40192, VIP, 20, TCP_SYN | TCP_ACK, 500, 78, b""), CLIENT_MAC, LB_EXT)));
    talk(true, b"QUIT\r\n", &mut v);
    talk(false, b"221 Goodbye.\r\n", &mut v);
    v.push(c(TCP_FIN | TCP_ACK, cs, ss + 2, b""));
    v
}

fn write_inputs(ext: &Path, int: &Path) {
    let mut we = PcapWriter::create(ext).unwrap();
    let mut wi = PcapWriter::create(int).unwrap();
    for (i, (from_client, f)) in session().into_iter().enumerate() {
        let ts = 1_000_000_000 + i as u64 * 1_000_000;
        if from_client {
            we.write_packet(ts, &f).unwrap();
        } else {
            wi.write_packet(ts, &f).unwrap();
        }
    }
    we.flush().unwrap();
    wi.flush().unwrap();
}

fn read_all(p: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::open(p).unwrap();
    let mut v = Vec::new();
    while let Some((_, f)) = r.next_packet().unwrap() {
        v.push(f);
    }
    v
}

fn replay(dir: &TmpDir, workers: usize, out: &Path) -> Vec<Vec<u8>> {
    let cfg = dir.file("lb.toml");
    std::fs::write(&cfg, config_text(SERVICES)).unwrap();
    let (ext, int) = (dir.file("ext.pcap"), dir.file("int.pcap"));
    write_inputs(&ext, &int);
    let st = Command::new(env!("CARGO_BIN_EXE_ferrovs"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(format!("ext={}", ext.display()))
        .arg("--input")
        .arg(format!("int={}", int.display()))
        .arg("--output")
        .arg(out)
        .args(["--workers", &workers.to_string()])
        .output()
        .expect("run ferrovs replay");
    assert!(st.status.success(), "replay failed: {}", String::from_utf8_lossy(&st.stderr));
    read_all(out)
}

#[test]
fn ftp_session_replays_with_rewrites_and_continuity() {
    let dir = TmpDir::new("ftp");
    for workers in [1, 2] {
        let out = replay(&dir, workers, &dir.file(&format!("out{workers}.pcap")));
        let n_in = session().len();
        assert_eq!(out.len(), n_in, "{workers} workers: every packet forwarded");
        let mut saw_227 = false;
        let mut server_seq_next: Option<u32> = None;
        for f in &out {
            verify_checksums(f).unwrap();
            let p = parse(f).unwrap();
            let l4 = p.l4;
            let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
            let payload = &f[p.payload..p.end];
            let src: [u8; 4] = f[p.l3 + 12..p.l3 + 16].try_into().unwrap();
            let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
            // Everything sent to the client comes from the VIP.
            if f[0..6] == CLIENT_MAC {
                assert_eq!(src, VIP, "client sees only the VIP");
            }
            if src == VIP && sport == 21 && !payload.is_empty() {
                if let Some(n) = server_seq_next {
                    assert_eq!(seq, n, "server->client control stream is continuous after the rewrite");
                }
                server_seq_next = Some(seq.wrapping_add(payload.len() as u32));
                if payload.starts_with(b"227") {
                    assert_eq!(payload, b"227 Entering Passive Mode (10,0,1,100,117,50).\r\n");
                    saw_227 = true;
                }
            }
            if src == VIP && sport == 20 {
                assert_eq!(&f[p.l3 + 16..p.l3 + 20], &CLIENT, "active data from VIP:20");
            }
        }
        assert!(saw_227, "the 227 went through rewritten");
        // The client's FIN acks ss+2 (the client saw 2 more bytes); the
        // real server must see its own sequence space.
        let fin = out.iter().find(|f| f[0..6] == RS1_MAC && parse(f).unwrap().tcp_flags & TCP_FIN != 0).unwrap();
        let l4 = parse(fin).unwrap().l4;
        let ack = u32::from_be_bytes(fin[l4 + 8..l4 + 12].try_into().unwrap());
        let server_bytes: u32 = [
            &b"220 ready\r\n"[..],
            b"230 Login successful.\r\n",
            b"227 Entering Passive Mode (10,0,2,2,117,50).\r\n",
            b"226 Transfer complete.\r\n",
            b"200 PORT command successful.\r\n",
            b"221 Goodbye.\r\n",
        ]
        .iter()
        .map(|l| l.len() as u32)
        .sum();
        assert_eq!(ack, 5000 + server_bytes, "ack mapped back");
    }
    // Deterministic: the same input gives the same bytes.
    let a = replay(&dir, 2, &dir.file("det-a.pcap"));
    let b = replay(&dir, 2, &dir.file("det-b.pcap"));
    assert_eq!(a, b);
}

#[test]
fn bad_config_names_file_and_line() {
    let dir = TmpDir::new("bad");
    let cfg = dir.file("bad.toml");
    std::fs::write(&cfg, "[engine]\nbackend = \"memory\"\n\n[[service]]\nname = \"x\"\nvip = \"10.0.0.300\"\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovs")).args(["config", "check"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6"), "error names file and line: {err}");
}
