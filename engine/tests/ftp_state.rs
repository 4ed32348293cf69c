//! FTP gateway state that holds up (issue 10): several control sessions at once through one
//! engine, packet in -> packet out + counters. Sessions must never cross (expectation clashes),
//! expectations are bounded, a reused tuple starts a new session, only real replies open
//! pinholes, DR copes with a refused AUTH TLS, TLS pins keep to the FTP service, reloads keep
//! the state.

mod common;
use common::seg::*;
use common::*;
use ferrovs_engine::pipeline::counters::FtpCounters;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

fn services(forward: &str, ftp_opts: &str, reals: &[&str]) -> String {
    let mut s = format!(
        r#"
[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
scheduler = "rr"
forward = "{forward}"
ftp = {ftp_opts}
"#
    );
    for r in reals {
        s.push_str(&format!("\n[[service.real_server]]\naddress = \"{r}\"\n"));
    }
    s.push_str(
        r#"
[[service]]
name = "web"
vip = "10.0.1.100"
ports = [80]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.4"
"#,
    );
    s
}

fn engine(forward: &str, ftp_opts: &str, reals: &[&str]) -> MemEngine {
    MemEngine::new(config(&services(forward, ftp_opts, reals)), 1)
}

/// An FTP counter of the service named "ftp", summed over workers.
fn ftp(e: &MemEngine, f: impl Fn(&FtpCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
    let i = e.snapshot.services.iter().position(|s| s.name == "ftp").expect("ftp service");
    e.workers.iter().map(|w| f(&w.service_counters()[i].ftp).load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// One control connection from CLIENT:cport to VIP:21, with its handshake done.
struct Ctl {
    cport: u16,
    rs: [u8; 4],
    cseq: u32,
    sseq: u32,
    /// What the client has seen of the server's stream (translated).
    seen: Vec<u8>,
    nat: bool,
}

struct Lab {
    e: MemEngine,
    t: u64,
}

impl Lab {
    fn new(e: MemEngine) -> Lab {
        Lab { e, t: S }
    }
    fn tick(&mut self) -> u64 {
        self.t += 1_000_000;
        self.t
    }
    fn client_sends(
        &mut self,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<(usize, Vec<u8>)> {
        let t = self.tick();
        client_tcp(&mut self.e, t, sport, dport, flags, seq, ack, data)
    }
    #[allow(clippy::too_many_arguments)]
    fn rs_sends(
        &mut self,
        rs: [u8; 4],
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<(usize, Vec<u8>)> {
        let t = self.tick();
        rs_tcp(&mut self.e, t, rs, sport, dport, flags, seq, ack, data)
    }
    /// Opens a control connection; NAT sees the server's SYN-ACK, DR does not.
    fn open(&mut self, cport: u16, nat: bool) -> Ctl {
        let out = self.client_sends(cport, 21, TCP_SYN, 999, 0, b"");
        let mac = out.first().map(|(_, f)| f[5]).expect("SYN forwarded");
        let s = one_seg(out);
        assert_eq!(s.dport, 21);
        // NAT: the real server is the destination; DR (MAC rewrite only): its MAC says it.
        let rs = if nat { s.dst } else { [10, 0, 2, mac] };
        let mut c = Ctl { cport, rs, cseq: 1000, sseq: 5000, seen: Vec::new(), nat };
        if nat {
            let s = one_seg(self.rs_sends(rs, 21, cport, TCP_SYN | TCP_ACK, 4999, 1000, b""));
            assert_eq!((s.src, s.sport), (VIP, 21));
        }
        one_seg(self.client_sends(cport, 21, TCP_ACK, 1000, 5000, b""));
        if nat {
            self.reply(&mut c, b"220 ready\r\n");
        }
        c
    }
    fn cmd(&mut self, c: &mut Ctl, line: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let out = self.client_sends(c.cport, 21, TCP_ACK | TCP_PSH, c.cseq, c.sseq, line);
        c.cseq += line.len() as u32;
        out
    }
    /// The server sends `data`; returns the payload the client receives.
    fn reply(&mut self, c: &mut Ctl, data: &[u8]) -> Vec<u8> {
        assert!(c.nat);
        let s = one_seg(self.rs_sends(c.rs, 21, c.cport, TCP_ACK | TCP_PSH, c.sseq, c.cseq, data));
        c.sseq += data.len() as u32;
        assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 21, CLIENT, c.cport));
        c.seen.extend_from_slice(&s.payload);
        s.payload
    }
    /// A passive data connection CLIENT:sport -> VIP:vport: where does its SYN go?
    fn data_syn(&mut self, sport: u16, vport: u16) -> Option<([u8; 4], u16)> {
        let out = self.client_sends(sport, vport, TCP_SYN, 1, 0, b"");
        out.first().map(|(_, f)| {
            let s = seg(f);
            (s.dst, s.dport)
        })
    }
}

/// The VIP port a 227 payload announces.
fn port_227(payload: &[u8]) -> u16 {
    let text = std::str::from_utf8(payload).unwrap();
    let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
    let n: Vec<u16> = inner.split(',').map(|x| x.parse().unwrap()).collect();
    assert_eq!(&n[..4], &[10, 0, 1, 100], "the client is told the VIP: {text}");
    n[4] * 256 + n[5]
}

fn port_229(payload: &[u8]) -> u16 {
    let text = std::str::from_utf8(payload).unwrap();
    text[text.find("(|||").unwrap() + 4..text.find("|)").unwrap()].parse().unwrap()
}

#[test]
fn two_sessions_same_passive_port_never_cross() {
    // Two real servers announce the same passive port (vsftpd with pasv_min_port =
    // pasv_max_port); two sessions from one client address.
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, true);
    let mut b = lab.open(40001, true);
    assert_eq!((a.rs, b.rs), (RS1, RS2), "rr spreads the sessions");
    lab.cmd(&mut a, b"PASV\r\n");
    lab.cmd(&mut b, b"PASV\r\n");
    let pa = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n"));
    let pb = port_227(&lab.reply(&mut b, b"227 Entering Passive Mode (10,0,2,3,117,48).\r\n"));
    assert_eq!(pa, 30000);
    assert_ne!(pb, 30000, "the second session is moved to another VIP port");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_moved), 1);
    // Each data connection reaches its own session's server, on the port it announced.
    assert_eq!(lab.data_syn(50001, pb), Some((RS2, 30000)));
    assert_eq!(lab.data_syn(50000, pa), Some((RS1, 30000)));
    // EPSV: the 229's port is rewritten the same way.
    lab.cmd(&mut a, b"EPSV\r\n");
    lab.cmd(&mut b, b"EPSV\r\n");
    let qa = port_229(&lab.reply(&mut a, b"229 Entering Extended Passive Mode (|||30010|)\r\n"));
    let qb = port_229(&lab.reply(&mut b, b"229 Entering Extended Passive Mode (|||30010|)\r\n"));
    assert_eq!(qa, 30010);
    assert_ne!(qb, 30010);
    assert_eq!(lab.data_syn(50003, qb), Some((RS2, 30010)));
    assert_eq!(lab.data_syn(50002, qa), Some((RS1, 30010)));
    // Sequence numbers stay consistent after the length changes: the client's ack of
    // everything it saw maps back to the server's stream.
    for c in [&a, &b] {
        let acked = 5000 + c.seen.len() as u32;
        let s = one_seg(lab.client_sends(c.cport, 21, TCP_ACK, c.cseq, acked, b""));
        assert_eq!(s.ack, c.sseq, "ack of session {}", c.cport);
    }
    assert_eq!(drops(&lab.e), vec![]);
}

#[test]
fn a_moved_port_avoids_other_services() {
    // The server announces port 80, which the VIP's web service owns: even the first session
    // is moved (the pinhole would take this client's web connections otherwise).
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    lab.cmd(&mut a, b"EPSV\r\n");
    let q = port_229(&lab.reply(&mut a, b"229 Entering Extended Passive Mode (|||80|)\r\n"));
    // Port 80 < 1024 is refused outright unless allowed; nothing opened.
    assert_eq!(q, 80);
    assert_eq!(ftp(&lab.e, |c| &c.low_ports_refused), 1);
    let mut lab = Lab::new(engine("nat", "{ allow_low_data_ports = true }", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    lab.cmd(&mut a, b"EPSV\r\n");
    let q = port_229(&lab.reply(&mut a, b"229 Entering Extended Passive Mode (|||80|)\r\n"));
    assert_eq!(q, 81);
    assert_eq!(lab.data_syn(50000, 80), Some(([10, 0, 2, 4], 80)), "web keeps its port");
    assert_eq!(lab.data_syn(50001, 81), Some((RS1, 80)));
}

#[test]
fn active_clash_is_refused_not_stolen() {
    // Both sessions on one real server name the same client port: the first keeps it.
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    let mut b = lab.open(40001, true);
    lab.cmd(&mut a, b"PORT 10,0,1,2,195,80\r\n");
    lab.cmd(&mut b, b"PORT 10,0,1,2,195,80\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_created), 1);
    assert_eq!(ftp(&lab.e, |c| &c.expectations_refused), 1);
    // The server's connection to the client is session A's.
    let s = one_seg(lab.rs_sends(RS1, 20, 50000, TCP_SYN, 7, 0, b""));
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 20, CLIENT, 50000));
    let conns = lab.e.workers[0].flows.len();
    assert_eq!(conns, 3, "two control connections and one data connection");
    // Same session re-issuing the same PORT replaces its own expectation.
    lab.cmd(&mut a, b"PORT 10,0,1,2,195,81\r\n");
    lab.cmd(&mut a, b"PORT 10,0,1,2,195,81\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_refused), 1);
}

#[test]
fn active_data_reuses_a_client_port_still_held_in_time_wait() {
    // proftpd connects from an ephemeral port; the client (curl) takes its PORT ports from the
    // ephemeral range and reuses one while the balancer still holds the last data connection
    // to it in TIME_WAIT (seen in the lab: every SYN dropped until curl timed out).
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, true);
    let mut b = lab.open(40001, true);
    assert_eq!((a.rs, b.rs), (RS1, RS2));
    lab.cmd(&mut a, &port_line(50000));
    let s = one_seg(lab.rs_sends(RS1, 44001, 50000, TCP_SYN, 7, 0, b""));
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 20, CLIENT, 50000));
    one_seg(lab.client_sends(50000, 20, TCP_SYN | TCP_ACK, 99, 8, b""));
    one_seg(lab.rs_sends(RS1, 44001, 50000, TCP_ACK, 8, 100, b""));
    // The server closes the data connection first: the balancer's entry ends in TIME_WAIT.
    one_seg(lab.rs_sends(RS1, 44001, 50000, TCP_FIN | TCP_ACK, 8, 100, b""));
    one_seg(lab.client_sends(50000, 20, TCP_FIN | TCP_ACK, 100, 9, b""));
    one_seg(lab.rs_sends(RS1, 44001, 50000, TCP_ACK, 9, 101, b""));
    // The other session, on the other server, names the same client port: it gets it.
    lab.cmd(&mut b, &port_line(50000));
    let s = one_seg(lab.rs_sends(RS2, 44002, 50000, TCP_SYN, 70, 0, b""));
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 20, CLIENT, 50000));
    assert_eq!(lab.e.counters().flows_reused, 1);
    let back = one_seg(lab.client_sends(50000, 20, TCP_SYN | TCP_ACK, 199, 71, b""));
    assert_eq!((back.dst, back.dport), (RS2, 44002), "the client's answer reaches the new connection");
    // While that one is open, a stale PORT for the same port (the balancer cannot tell a
    // client that lost its connection): VIP:20 stays with the open connection, the new one
    // comes from the server's own port. A server on port 20 has nowhere else: counted drop.
    lab.cmd(&mut a, &port_line(50000));
    let s = one_seg(lab.rs_sends(RS1, 44003, 50000, TCP_SYN, 700, 0, b""));
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 44003, CLIENT, 50000));
    let back = one_seg(lab.client_sends(50000, 44003, TCP_SYN | TCP_ACK, 299, 701, b""));
    assert_eq!((back.dst, back.dport), (RS1, 44003));
    lab.cmd(&mut b, &port_line(50000));
    assert!(lab.rs_sends(RS2, 20, 50000, TCP_SYN, 7000, 0, b"").is_empty());
    assert_eq!(drops(&lab.e), vec![("tuple_in_use", 1)]);
    // The open connections are untouched.
    let s = one_seg(lab.rs_sends(RS2, 44002, 50000, TCP_ACK | TCP_PSH, 71, 200, b"data"));
    assert_eq!((s.src, s.sport, s.payload.as_slice()), (VIP, 20, &b"data"[..]));
}

#[test]
fn expectations_are_bounded_per_session_and_per_worker() {
    let text = services("nat", "{ max_expectations = 2 }", &["10.0.2.2"]);
    let cfg =
        config_text(&text).replace("flow_table_size = 4096", "flow_table_size = 4096\nexpectation_table_size = 16");
    let cfg = ferrovs_cfg::Config::from_str(&cfg, "t.toml").unwrap();
    let mut lab = Lab::new(MemEngine::new(cfg, 1));
    let mut a = lab.open(40000, true);
    for p in 1..=3 {
        lab.cmd(&mut a, b"PASV\r\n");
        let line = format!("227 Entering Passive Mode (10,0,2,2,150,{p})\r\n");
        lab.reply(&mut a, line.as_bytes());
    }
    // Newest replaces oldest: ports 150*256+2 and +3 open, +1 gone.
    assert_eq!(ftp(&lab.e, |c| &c.expectations_replaced), 1);
    assert_eq!(lab.data_syn(50000, 150 * 256 + 1), None);
    assert_eq!(lab.data_syn(50001, 150 * 256 + 3), Some((RS1, 150 * 256 + 3)));
    // The worker's table: 16 entries. 20 sessions with one each: the oldest are evicted,
    // the newest always get theirs.
    let mut ctls = Vec::new();
    for i in 0..20u16 {
        let mut c = lab.open(41000 + i, true);
        lab.cmd(&mut c, &port_line(200 * 256 + 1 + i));
        ctls.push(c);
    }
    assert!(ftp(&lab.e, |c| &c.expectations_evicted) >= 4);
    let last = 200 * 256 + 1 + 19;
    let s = one_seg(lab.rs_sends(RS1, 20, last, TCP_SYN, 7, 0, b""));
    assert_eq!((s.src, s.dport), (VIP, last));
    assert!(lab.rs_sends(RS1, 20, 200 * 256 + 1, TCP_SYN, 7, 0, b"").is_empty(), "the oldest was evicted");
}

fn port_line(p: u16) -> Vec<u8> {
    format!("PORT 10,0,1,2,{},{}\r\n", p >> 8, p & 0xff).into_bytes()
}

#[test]
fn port_reuse_starts_a_new_session() {
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, true);
    assert_eq!(a.rs, RS1);
    lab.cmd(&mut a, b"QUIT\r\n");
    lab.reply(&mut a, b"221 Goodbye.\r\n");
    // Server closes first, client acks and closes: the balancer's entry goes to TIME_WAIT/CLOSE.
    one_seg(lab.rs_sends(RS1, 21, 40000, TCP_FIN | TCP_ACK, a.sseq, a.cseq, b""));
    one_seg(lab.client_sends(40000, 21, TCP_FIN | TCP_ACK, a.cseq, a.sseq + 1, b""));
    one_seg(lab.rs_sends(RS1, 21, 40000, TCP_ACK, a.sseq + 1, a.cseq + 1, b""));
    // The same tuple, a new SYN: a new scheduling decision (rr: RS2), a new gateway session.
    let mut b = lab.open(40000, true);
    assert_eq!(b.rs, RS2, "rescheduled");
    assert_eq!(lab.e.counters().flows_reused, 1);
    assert_eq!(ftp(&lab.e, |c| &c.control_reused), 1);
    lab.cmd(&mut b, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut b, b"227 Entering Passive Mode (10,0,2,3,117,48).\r\n"));
    assert_eq!(lab.data_syn(50000, p), Some((RS2, 30000)));
    assert_eq!(drops(&lab.e), vec![]);
}

#[test]
fn dr_port_reuse_after_the_client_closed_starts_a_new_session() {
    // Direct routing sees the client's side only: after the client's FIN and its ACK of the
    // server's FIN the entry stays in FIN_WAIT. The client may take the port again at once
    // (the server closed first and holds TIME_WAIT): the new SYN is scheduled afresh, so a
    // real server that went down meanwhile is not picked again.
    let mut lab = Lab::new(engine("dr", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, false);
    assert_eq!(a.rs, RS1);
    lab.cmd(&mut a, b"QUIT\r\n");
    one_seg(lab.client_sends(40000, 21, TCP_FIN | TCP_ACK, a.cseq, a.sseq + 14, b""));
    one_seg(lab.client_sends(40000, 21, TCP_ACK, a.cseq + 1, a.sseq + 15, b""));
    let b = lab.open(40000, false);
    assert_eq!(b.rs, RS2, "rescheduled");
    assert_eq!(lab.e.counters().flows_reused, 1);
    assert_eq!(ftp(&lab.e, |c| &c.control_reused), 1);
    // A SYN on a connection still open is not a reuse: it stays with its real server.
    let c = lab.open(40001, false);
    assert_eq!(c.rs, RS1);
    let out = lab.client_sends(40001, 21, TCP_SYN, 999, 0, b"");
    assert_eq!(out.first().map(|(_, f)| [10, 0, 2, f[5]]), Some(RS1), "kept");
    assert_eq!(lab.e.counters().flows_reused, 1);
    // Nor is a bare SYN on a NAT connection in FIN_WAIT (the server's FIN only): the client
    // has not closed its side (see port_reuse_starts_a_new_session for the full close).
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let a = lab.open(40000, true);
    one_seg(lab.rs_sends(RS1, 21, 40000, TCP_FIN | TCP_ACK, a.sseq, a.cseq, b""));
    let s = one_seg(lab.client_sends(40000, 21, TCP_SYN, 999, 0, b""));
    assert_eq!(s.dst, RS1, "kept");
    assert_eq!(lab.e.counters().flows_reused, 0);
}

#[test]
fn a_closed_session_leaves_no_pinholes() {
    // DR: a session asks for a passive port and ends (the client's FIN) without using it, as
    // lftp does when it asked ahead of time. The pinhole goes with the session: the same
    // client's next session, on the other real server, is not refused as ambiguous, and its
    // data connection reaches its own server, not the first one.
    let mut lab = Lab::new(engine("dr", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, false);
    assert_eq!(a.rs, RS1);
    lab.cmd(&mut a, b"PASV\r\n");
    one_seg(lab.client_sends(40000, 21, TCP_FIN | TCP_ACK, a.cseq, a.sseq, b""));
    let mut b = lab.open(40001, false);
    assert_eq!(b.rs, RS2);
    lab.cmd(&mut b, b"PASV\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_ambiguous), 0);
    let out = lab.client_sends(50000, 30000, TCP_SYN, 1, 0, b"");
    assert_eq!(out.first().map(|(_, f)| [10, 0, 2, f[5]]), Some(RS2), "to the session's own server");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_used), 1);
    // A reset ends the session too (NAT: the pinhole has a port), but only in sequence: a
    // blind one (an attacker who knows the ports, not the sequence numbers) ends nothing.
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n"));
    lab.client_sends(40000, 21, TCP_RST | TCP_ACK, a.cseq.wrapping_add(7919), a.sseq, b"");
    lab.rs_sends(RS1, 21, 40000, TCP_RST, a.sseq.wrapping_sub(1 << 20), 0, b"");
    one_seg(lab.client_sends(40000, 21, TCP_FIN | TCP_ACK, a.cseq.wrapping_sub(1), a.sseq, b""));
    assert_eq!(lab.data_syn(50002, p), Some((RS1, 30000)), "still open");
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n"));
    one_seg(lab.client_sends(40000, 21, TCP_RST | TCP_ACK, a.cseq, a.sseq, b""));
    assert_eq!(lab.data_syn(50000, p), None, "closed with the session");
    // The server's FIN alone ends nothing (the client may still connect: it has not closed).
    let mut a = lab.open(40001, true);
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,49).\r\n"));
    one_seg(lab.rs_sends(RS1, 21, 40001, TCP_FIN | TCP_ACK, a.sseq, a.cseq, b""));
    assert_eq!(lab.data_syn(50001, p), Some((RS1, 30001)));
}

/// A reset or FIN without data, exactly in sequence, whose TCP checksum fails (corrupted on the
/// wire: the server drops it, and Linux's `tcp_error` marks it INVALID before conntrack's state
/// moves) ends nothing: dropped as such, the session's pinholes and the connection's state
/// stay. Its good copy ends the session as ever.
#[test]
fn a_corrupted_reset_or_fin_ends_no_session() {
    use ferrovs_engine::tools::testpkt::{corrupt, tcp4, with_macs};
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n"));
    let window = 14 + 20 + 15;
    for flags in [TCP_RST | TCP_ACK, TCP_FIN | TCP_ACK] {
        let f = with_macs(tcp4(CLIENT, 40000, VIP, 21, flags, a.cseq, a.sseq, b""), CLIENT_MAC, LB_EXT);
        let t = lab.tick();
        assert!(lab.e.inject(EXT, &corrupt(f, window, 0x01), t).is_empty(), "flags {flags:#x}");
    }
    assert_eq!(drops(&lab.e), vec![("l4_bad_csum", 2)]);
    let f = &lab.e.workers[0].flows;
    let state = (0..f.slots() as u32).find_map(|i| f.try_get(i).filter(|c| c.live && c.cport == 40000));
    assert_eq!(state.map(|c| c.state.name()), Some("ESTABLISHED"));
    assert_eq!(lab.data_syn(50000, p), Some((RS1, 30000)), "the pinhole stays");
    // The good copy ends the session: the next pinhole goes with it.
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,49).\r\n"));
    one_seg(lab.client_sends(40000, 21, TCP_RST | TCP_ACK, a.cseq, a.sseq, b""));
    assert_eq!(lab.data_syn(50001, p), None, "closed with the session");
}

#[test]
fn only_real_replies_open_pinholes() {
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    // No PASV pending: forwarded as sent, nothing opened.
    lab.cmd(&mut a, b"NOOP\r\n");
    let out = lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n");
    assert_eq!(out, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n");
    assert_eq!(lab.data_syn(50000, 30000), None);
    // Client text echoed in a multi-line reply, with a PASV pending: nothing opened.
    lab.cmd(&mut a, b"STAT\r\n");
    lab.cmd(&mut a, b"PASV\r\n");
    lab.reply(&mut a, b"211-Status\r\n227 Entering Passive Mode (10,0,2,2,117,49)\r\n211 End\r\n");
    assert_eq!(lab.data_syn(50001, 30001), None);
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,50).\r\n"));
    assert_eq!(lab.data_syn(50002, p), Some((RS1, 30002)));
    assert_eq!(ftp(&lab.e, |c| &c.unsolicited_replies), 2);
    assert_eq!(ftp(&lab.e, |c| &c.expectations_created), 1);
    assert_eq!(drops(&lab.e), vec![("no_service", 2)]);
}

#[test]
fn dr_refused_auth_tls_then_active_works() {
    // lftp's default: AUTH TLS first; the server refuses (530), lftp goes on in plain text.
    let mut lab = Lab::new(engine("dr", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, false);
    lab.cmd(&mut a, b"AUTH TLS\r\n");
    lab.cmd(&mut a, b"USER anonymous\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.tls_refused), 1);
    assert_eq!(ftp(&lab.e, |c| &c.tls_fallbacks), 0);
    lab.cmd(&mut a, b"PORT 10,0,1,2,195,80\r\n");
    // The server connects to the client directly; the client's SYN-ACK to VIP:20 reaches it.
    let s = one_seg(lab.client_sends(50000, 20, TCP_SYN | TCP_ACK, 1, 8, b""));
    assert_eq!((s.dst, s.dport), (VIP, 20));
    assert_eq!(ftp(&lab.e, |c| &c.expectations_used), 1);
    // A client that does start TLS: the session is pinned.
    let mut b = lab.open(40001, false);
    lab.cmd(&mut b, b"AUTH TLS\r\n");
    lab.cmd(&mut b, b"\x16\x03\x01\x00\x05hello");
    assert_eq!(ftp(&lab.e, |c| &c.tls_fallbacks), 1);
}

#[test]
fn tls_pin_covers_the_ftp_service_only() {
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, true);
    assert_eq!(a.rs, RS1);
    lab.cmd(&mut a, b"AUTH TLS\r\n");
    lab.reply(&mut a, b"234 Proceed with negotiation.\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.tls_fallbacks), 1);
    // Data connections (ports no service owns) follow the pin.
    assert_eq!(lab.data_syn(50000, 30000), Some((RS1, 30000)));
    assert_eq!(lab.data_syn(50001, 30001), Some((RS1, 30001)));
    // Another service on the VIP is untouched.
    assert_eq!(lab.data_syn(50002, 80), Some(([10, 0, 2, 4], 80)));
    // A second control connection follows the pin (rr alone would pick RS2) with a gateway.
    let b = lab.open(40002, true);
    assert_eq!(b.rs, RS1);
    assert_eq!(ftp(&lab.e, |c| &c.control_sessions), 2);
}

#[test]
fn reload_keeps_expectations_and_pins() {
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, true);
    lab.cmd(&mut a, b"NOOP\r\n");
    lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,47).\r\n");
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n"));
    assert_eq!(ftp(&lab.e, |c| &c.unsolicited_replies), 1);
    // A reload that adds a service in front and drops the second real server.
    let text = format!(
        "[[service]]\nname = \"dns\"\nvip = \"10.0.1.100\"\nprotocol = \"udp\"\nports = [53]\n\n\
         [[service.real_server]]\naddress = \"10.0.2.2\"\n{}",
        services("nat", "true", &["10.0.2.2"])
    );
    let t = lab.tick();
    lab.e.reload(config(&text), t);
    assert_eq!(lab.data_syn(50000, p), Some((RS1, 30000)), "expectation kept across the reload");
    assert_eq!(ftp(&lab.e, |c| &c.unsolicited_replies), 1, "every FTP counter carried");
    // The control connection still works and still opens pinholes.
    lab.cmd(&mut a, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut a, b"227 Entering Passive Mode (10,0,2,2,117,49).\r\n"));
    assert_eq!(lab.data_syn(50001, p), Some((RS1, 30001)));
    // An expectation of a real server that the reload removes goes with it.
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2", "10.0.2.3"]));
    let _a = lab.open(40000, true);
    let mut b = lab.open(40001, true);
    assert_eq!(b.rs, RS2);
    lab.cmd(&mut b, b"PASV\r\n");
    let p = port_227(&lab.reply(&mut b, b"227 Entering Passive Mode (10,0,2,3,117,48).\r\n"));
    let t = lab.tick();
    lab.e.reload(config(&services("nat", "true", &["10.0.2.2"])), t);
    assert_eq!(lab.data_syn(50000, p), None);
}

#[test]
fn dr_passive_sessions_of_one_client_never_cross() {
    let mut lab = Lab::new(engine("dr", "true", &["10.0.2.2", "10.0.2.3"]));
    let mut a = lab.open(40000, false);
    let mut b = lab.open(40001, false);
    let mut c = lab.open(40002, false);
    assert_eq!((a.rs, b.rs, c.rs), (RS1, RS2, RS1));
    // A waits for its data connection; B (another server) cannot be told apart: refused.
    lab.cmd(&mut a, b"PASV\r\n");
    lab.cmd(&mut b, b"PASV\r\n");
    assert_eq!(ftp(&lab.e, |c| &c.expectations_ambiguous), 1);
    // C is on A's server: queued behind A, either order is right.
    lab.cmd(&mut c, b"EPSV\r\n");
    // DR only rewrites MAC addresses: the real server shows in the destination MAC.
    let mut dr_syn = |sport: u16, vport: u16| {
        let out = lab.client_sends(sport, vport, TCP_SYN, 1, 0, b"");
        out.first().map(|(_, f)| <[u8; 6]>::try_from(&f[0..6]).unwrap())
    };
    assert_eq!(dr_syn(50000, 30000), Some(RS1_MAC));
    assert_eq!(dr_syn(50001, 30001), Some(RS1_MAC));
    // Nothing is left for B's data connection.
    assert_eq!(dr_syn(50002, 30002), None);
    assert_eq!(ftp(&lab.e, |c| &c.expectations_used), 2);
}

/// The one frame out, parsed.
fn one_seg(out: Vec<(usize, Vec<u8>)>) -> Seg {
    one(out).1
}

#[test]
fn tiny_segment_flood_on_the_control_connection_is_bounded() {
    // A client trickles a never-ending command one byte per segment: every byte is forwarded
    // (commands are never held), the gateway keeps at most one line (1024 bytes) and counts it.
    let mut lab = Lab::new(engine("nat", "true", &["10.0.2.2"]));
    let mut a = lab.open(40000, true);
    for _ in 0..5000 {
        let out = lab.cmd(&mut a, b"A");
        assert_eq!(out.len(), 1, "forwarded at once");
    }
    assert_eq!(ftp(&lab.e, |c| &c.oversized_lines), 1);
    // The server's replies trickled byte by byte after a PASV: held until the line ends (at
    // most one line), then rewritten.
    lab.cmd(&mut a, b"\r\nPASV\r\n");
    lab.reply(&mut a, b"500 Command too long.\r\n");
    let line = b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n";
    let mut got = Vec::new();
    for (i, b) in line.iter().enumerate() {
        let out = lab.rs_sends(a.rs, 21, a.cport, TCP_ACK | TCP_PSH, a.sseq + i as u32, a.cseq, &[*b]);
        got.extend(out.into_iter().flat_map(|(_, f)| seg(&f).payload));
    }
    assert_eq!(got, b"227 Entering Passive Mode (10,0,1,100,117,48).\r\n");
    assert_eq!(drops(&lab.e), vec![("alg_hold", line.len() as u64 - 1)]);
}
