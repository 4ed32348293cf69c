//! Whole FTP sessions through the engine (NAT and DR): 227/229 rewrites,
//! expectations for passive and active data connections, seq/ack
//! continuity after a length-changing rewrite, checksums, bounce refusal.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{parse, TCP_ACK, TCP_PSH, TCP_SYN};

fn ftp_config(forward: &str) -> ferrovs_cfg::Config {
    config(&format!(
        r#"
[[service]]
name = "ftp"
vip = "10.0.1.100"
protocol = "tcp"
ports = [21]
scheduler = "rr"
forward = "{forward}"
ftp = true

[[service.real_server]]
address = "10.0.2.2"
"#
    ))
}

struct Tcp {
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
}

fn tcp_of(f: &[u8]) -> Tcp {
    verify_checksums(f).expect("checksums of an output frame");
    let p = parse(f).expect("parse output");
    let l4 = p.l4;
    Tcp {
        seq: u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap()),
        ack: u32::from_be_bytes(f[l4 + 8..l4 + 12].try_into().unwrap()),
        flags: f[l4 + 13],
        payload: f[p.payload..p.end].to_vec(),
        src: f[p.l3 + 12..p.l3 + 16].try_into().unwrap(),
        dst: f[p.l3 + 16..p.l3 + 20].try_into().unwrap(),
        sport: u16::from_be_bytes([f[l4], f[l4 + 1]]),
        dport: u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
    }
}

/// A control connection with the handshake done. Client seq starts at
/// 1000, server at 5000.
struct Session {
    e: MemEngine,
    cseq: u32,
    sseq: u32,
    t: u64,
}

impl Session {
    fn new(forward: &str) -> Session {
        let mut e = MemEngine::new(ftp_config(forward), 1);
        let out = e.inject(EXT, &with_macs(tcp4(CLIENT, 40000, VIP, 21, TCP_SYN, 999, 0, b""), CLIENT_MAC, LB_EXT), S);
        assert_eq!(out.len(), 1);
        let mut s = Session { e, cseq: 1000, sseq: 5000, t: S };
        if forward == "nat" {
            let out = s.server(TCP_SYN | TCP_ACK, b"", 4999);
            assert_eq!(out.len(), 1);
        }
        s.client(b"");
        s
    }
    /// Client sends `data`; returns frames out.
    fn client(&mut self, data: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let f =
            with_macs(tcp4(CLIENT, 40000, VIP, 21, TCP_ACK | TCP_PSH, self.cseq, self.sseq, data), CLIENT_MAC, LB_EXT);
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
        self.t += 1000;
        self.e.inject(EXT, &f, self.t)
    }
    fn server(&mut self, flags: u8, data: &[u8], seq: u32) -> Vec<(usize, Vec<u8>)> {
        let f = with_macs(tcp4(RS1, 21, CLIENT, 40000, flags, seq, self.cseq, data), RS1_MAC, LB_INT);
        self.t += 1000;
        self.e.inject(INT, &f, self.t)
    }
    fn reply(&mut self, data: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let seq = self.sseq;
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
        self.server(TCP_ACK | TCP_PSH, data, seq)
    }
    fn ftp_counter(&self, f: impl Fn(&ferrovs_engine::pipeline::counters::FtpCounters) -> u64) -> u64 {
        self.e.workers.iter().map(|w| f(&w.service_counters()[0].ftp)).sum()
    }
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn nat_passive_227_rewrite_and_data_connection() {
    let mut s = Session::new("nat");
    let out = s.reply(b"220 (vsFTPd 3.0.3)\r\n");
    assert_eq!(tcp_of(&out[0].1).payload, b"220 (vsFTPd 3.0.3)\r\n");
    s.client(b"PASV\r\n");
    // The real server names its own address; the client must see the VIP.
    let out = s.reply(b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n");
    assert_eq!(out.len(), 1);
    let t = tcp_of(&out[0].1);
    assert_eq!(t.payload, b"227 Entering Passive Mode (10,0,1,100,117,48).\r\n");
    assert_eq!(t.src, VIP);
    assert_eq!(t.seq, 5000 + 20, "seq of the rewritten segment is unchanged");
    assert_eq!(s.ftp_counter(|c| load(&c.rewrites)), 1);
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    // The rewrite grew the payload by 2: later server segments shift by +2
    // and the client's acks shift back by -2 on their way to the server.
    let out = s.reply(b"150 Here comes the directory listing.\r\n");
    let t = tcp_of(&out[0].1);
    assert_eq!(t.seq, 5000 + 20 + 46 + 2);
    let acked = s.sseq.wrapping_add(2); // what the client acknowledges
    let f = with_macs(tcp4(CLIENT, 40000, VIP, 21, TCP_ACK, s.cseq, acked, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 1);
    let t = tcp_of(&out[0].1);
    assert_eq!(t.ack, s.sseq, "ack mapped back into the server's sequence space");
    // The passive data connection to VIP:30000 reaches rs1:30000.
    let f = with_macs(tcp4(CLIENT, 40001, VIP, 30000, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 2);
    assert_eq!(out.len(), 1, "data SYN forwarded");
    let t = tcp_of(&out[0].1);
    assert_eq!((t.dst, t.dport), (RS1, 30000));
    assert_eq!(t.flags & 0x12, 0x02, "still a SYN");
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_used)), 1);
    // Reply from rs1:30000 goes back as VIP:30000.
    let f = with_macs(tcp4(RS1, 30000, CLIENT, 40001, TCP_SYN | TCP_ACK, 1, 78, b""), RS1_MAC, LB_INT);
    let out = s.e.inject(INT, &f, s.t + 3);
    let t = tcp_of(&out[0].1);
    assert_eq!((t.src, t.sport), (VIP, 30000));
    // A second SYN to the same port is not an expectation any more.
    let f = with_macs(tcp4(CLIENT, 40002, VIP, 30000, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    assert!(s.e.inject(EXT, &f, s.t + 4).is_empty(), "pinholes are single use");
    assert_drops(&s.e, &[(DropReason::NoService, 1)]);
}

#[test]
fn nat_epsv_229_needs_no_rewrite() {
    let mut s = Session::new("nat");
    s.client(b"EPSV\r\n");
    let out = s.reply(b"229 Entering Extended Passive Mode (|||30042|)\r\n");
    assert_eq!(tcp_of(&out[0].1).payload, b"229 Entering Extended Passive Mode (|||30042|)\r\n");
    let f = with_macs(tcp4(CLIENT, 40001, VIP, 30042, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 1);
    let t = tcp_of(&out[0].1);
    assert_eq!((t.dst, t.dport), (RS1, 30042));
    assert_drops(&s.e, &[]);
}

#[test]
fn nat_active_port_data_connection_comes_from_vip_20() {
    let mut s = Session::new("nat");
    s.client(b"PORT 10,0,1,2,156,64\r\n"); // 156 * 256 + 64 = 40000
    let out = s.reply(b"200 PORT command successful.\r\n");
    assert_eq!(out.len(), 1);
    // rs1:20 opens to the port the client named.
    let f = with_macs(tcp4(RS1, 20, CLIENT, 40000, TCP_SYN, 9, 0, b""), RS1_MAC, LB_INT);
    // (The control connection also uses client port 40000 towards VIP:21,
    // a different tuple from rs1:20 -> client:40000.)
    let out = s.e.inject(INT, &f, s.t + 1);
    assert_eq!(out.len(), 1, "active data SYN forwarded to the client");
    let t = tcp_of(&out[0].1);
    assert_eq!((t.src, t.sport, t.dst, t.dport), (VIP, 20, CLIENT, 40000));
    // Client answers VIP:20, reaching rs1:20.
    let f = with_macs(tcp4(CLIENT, 40000, VIP, 20, TCP_SYN | TCP_ACK, 50, 10, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 2);
    let t = tcp_of(&out[0].1);
    assert_eq!((t.dst, t.dport), (RS1, 20));
    assert_drops(&s.e, &[]);
}

#[test]
fn eprt_and_bounce_refusal() {
    let mut s = Session::new("nat");
    s.client(b"EPRT |1|10.0.1.2|41000|\r\n");
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    // A PORT naming a third party opens nothing and is counted.
    s.client(b"PORT 192,168,7,7,4,1\r\n");
    assert_eq!(s.ftp_counter(|c| load(&c.bounce_refused)), 1);
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    let f = with_macs(tcp4(RS1, 20, [192, 168, 7, 7], 1025, TCP_SYN, 9, 0, b""), RS1_MAC, LB_INT);
    assert!(s.e.inject(INT, &f, s.t + 1).is_empty());
    // The client's own address but a privileged port: refused too, counted apart.
    s.client(b"PORT 10,0,1,2,0,25\r\n");
    assert_eq!(s.ftp_counter(|c| load(&c.low_ports_refused)), 1);
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    assert_drops(&s.e, &[(DropReason::NoFlow, 1)]);
}

#[test]
fn dr_passive_pins_data_to_the_session_server() {
    let mut s = Session::new("dr");
    s.client(b"PASV\r\n");
    // DR sees no reply; the next connection from this client to any VIP
    // port goes to the control connection's real server.
    let f = with_macs(tcp4(CLIENT, 40001, VIP, 30077, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 1);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    assert_eq!(&f[0..6], &RS1_MAC, "DR: only the MAC changes");
    let t = tcp_of(f);
    assert_eq!((t.dst, t.dport), (VIP, 30077));
    // Without a PASV first, a random port on the VIP is no service.
    let f = with_macs(tcp4(CLIENT, 40002, VIP, 30078, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    assert!(s.e.inject(EXT, &f, s.t + 2).is_empty());
    assert_drops(&s.e, &[(DropReason::NoService, 1)]);
}

#[test]
fn pinholes_expire() {
    let mut s = Session::new("nat");
    s.client(b"PASV\r\n");
    s.reply(b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n");
    let f = with_macs(tcp4(CLIENT, 40001, VIP, 30000, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    assert!(s.e.inject(EXT, &f, s.t + 61 * S).is_empty(), "60 s pinhole timeout");
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_expired)), 1);
    assert_drops(&s.e, &[(DropReason::NoService, 1)]);
}

#[test]
fn control_connection_lives_while_data_flows() {
    let mut s = Session::new("nat");
    s.client(b"PASV\r\n");
    s.reply(b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n");
    let f = with_macs(tcp4(CLIENT, 40001, VIP, 30000, TCP_SYN, 77, 0, b""), CLIENT_MAC, LB_EXT);
    s.e.inject(EXT, &f, s.t);
    let data_ack = with_macs(tcp4(CLIENT, 40001, VIP, 30000, TCP_ACK, 78, 1, b""), CLIENT_MAC, LB_EXT);
    s.e.inject(EXT, &data_ack, s.t);
    // Keep the data connection busy past the control connection's 900 s.
    let mut t = s.t;
    for _ in 0..4 {
        t += 400 * S;
        assert_eq!(s.e.inject(EXT, &data_ack, t).len(), 1);
        s.e.workers[0].expire_all(t);
    }
    assert_eq!(s.e.workers[0].flows.len(), 2, "control connection kept while its data connection lives");
    let out = s.client(b"NOOP\r\n");
    assert_eq!(out.len(), 1);
    let _ = out;
    let _ = TCP_PSH;
    assert_drops(&s.e, &[]);
}

#[test]
fn dr_active_client_answers_reach_the_session_server() {
    let mut s = Session::new("dr");
    s.client(b"PORT 10,0,1,2,156,100\r\n"); // port 40036
                                            // The real server connects straight to the client (not seen here); the
                                            // client's SYN-ACK to VIP:20 comes to the balancer.
    let f = with_macs(tcp4(CLIENT, 40036, VIP, 20, TCP_SYN | TCP_ACK, 50, 10, b""), CLIENT_MAC, LB_EXT);
    let out = s.e.inject(EXT, &f, s.t + 1);
    assert_eq!(out.len(), 1, "forwarded to the control connection's server");
    assert_eq!(&out[0].1[0..6], &RS1_MAC);
    // And the rest of that data connection follows.
    let f = with_macs(tcp4(CLIENT, 40036, VIP, 20, TCP_ACK, 51, 11, b""), CLIENT_MAC, LB_EXT);
    assert_eq!(s.e.inject(EXT, &f, s.t + 2).len(), 1);
    // Another port the client did not name: dropped.
    let f = with_macs(tcp4(CLIENT, 40037, VIP, 20, TCP_SYN | TCP_ACK, 50, 10, b""), CLIENT_MAC, LB_EXT);
    assert!(s.e.inject(EXT, &f, s.t + 3).is_empty());
    assert_drops(&s.e, &[(DropReason::NoFlow, 1)]);
}

/// A control segment corrupted on the wire (its TCP checksum then fails) is dropped before the
/// gateway reads it, as Linux's connection tracking marks it INVALID before its FTP helper
/// sees it: a 227 reply rewritten from scratch would go out with a fresh valid checksum and
/// the corrupted port would reach the client as good data (and open a pinhole for it), a PORT
/// would open a pinhole for a port the client never named. The good retransmissions go
/// through as if the corrupted copies had never come.
#[test]
fn control_segments_with_a_bad_tcp_checksum_are_not_read_nor_rewritten() {
    let mut s = Session::new("nat");
    s.client(b"PASV\r\n");
    let reply = with_macs(
        tcp4(
            RS1,
            21,
            CLIENT,
            40000,
            TCP_ACK | TCP_PSH,
            s.sseq,
            s.cseq,
            b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n",
        ),
        RS1_MAC,
        LB_INT,
    );
    // "...,117,48)." -> "...,117,49).": port 30001 instead of 30000.
    let bad = corrupt(reply.clone(), reply.len() - 6, 0x01);
    assert!(s.e.inject(INT, &bad, s.t + 1).is_empty(), "not rewritten into a valid segment");
    assert_eq!(s.ftp_counter(|c| load(&c.rewrites)), 0);
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 0);
    let out = s.e.inject(INT, &reply, s.t + 2);
    assert_eq!(out.len(), 1, "the retransmission is rewritten");
    let t = tcp_of(&out[0].1);
    assert_eq!(t.payload, b"227 Entering Passive Mode (10,0,1,100,117,48).\r\n");
    assert_eq!(t.seq, s.sseq);
    assert_eq!(s.ftp_counter(|c| load(&c.rewrites)), 1);
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    // A PORT whose port was corrupted on the wire (156,64 -> 156,65) opens nothing.
    let port = with_macs(
        tcp4(CLIENT, 40000, VIP, 21, TCP_ACK | TCP_PSH, s.cseq, s.sseq + 48, b"PORT 10,0,1,2,156,64\r\n"),
        CLIENT_MAC,
        LB_EXT,
    );
    assert!(s.e.inject(EXT, &corrupt(port.clone(), port.len() - 3, 0x01), s.t + 3).is_empty());
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 1);
    assert_eq!(s.e.inject(EXT, &port, s.t + 4).len(), 1, "the retransmission goes");
    assert_eq!(s.ftp_counter(|c| load(&c.expectations_created)), 2);
    assert_drops(&s.e, &[(DropReason::L4BadChecksum, 2)]);
}
