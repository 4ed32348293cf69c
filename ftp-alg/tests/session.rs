//! State-machine tests: one scenario per test, driven with explicit sequence numbers.

use ferrovs_ftp_alg::*;
use std::net::IpAddr;

const SEC: u64 = 1_000_000_000;

fn params(mode: Mode) -> SessionParams {
    SessionParams {
        mode,
        client: "192.0.2.7:40000".parse().unwrap(),
        vip: "10.0.0.100:21".parse().unwrap(),
        real: "10.0.2.2:21".parse().unwrap(),
        allow_foreign_port_address: false,
        pinhole_timeout: 30 * SEC,
    }
}

fn params6(mode: Mode) -> SessionParams {
    SessionParams {
        mode,
        client: "[2001:db8::7]:40000".parse().unwrap(),
        vip: "[2001:db8:1::100]:21".parse().unwrap(),
        real: "[fd00::2]:21".parse().unwrap(),
        allow_foreign_port_address: false,
        pinhole_timeout: 30 * SEC,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn passive(port: u16, expires: u64) -> Expectation {
    Expectation {
        kind: ExpectKind::Passive { vip_port: Some(port), real_port: Some(port) },
        client: ip("192.0.2.7"),
        vip: ip("10.0.0.100"),
        real: ip("10.0.2.2"),
        expires,
    }
}

fn replace(seq: u32, payload: &[u8]) -> Verdict {
    Verdict::Replace { seq, payload: payload.to_vec() }
}

struct T {
    s: FtpSession,
    a: Actions,
    /// Next client-to-server sequence number (for `cmd`).
    o: u32,
    /// Next server-to-client sequence number (for `reply`).
    r: u32,
}

impl T {
    fn new(p: SessionParams) -> Self {
        T { s: FtpSession::new(p), a: Actions::default(), o: 0, r: 0 }
    }
    fn feed(&mut self, now: u64, dir: Dir, seq: u32, data: &[u8]) -> Verdict {
        self.a.clear();
        if dir == Dir::Original {
            self.o = self.o.max(seq.wrapping_add(data.len() as u32));
        }
        self.s.on_segment(now, dir, seq, data, &mut self.a)
    }
    /// The server sends `data` at the next server sequence number.
    fn reply(&mut self, data: &[u8]) -> Verdict {
        let r = self.r;
        self.r = r.wrapping_add(data.len() as u32);
        self.feed(0, Dir::Reply, r, data)
    }
    /// The client sends `line` (CRLF added) at the next client sequence number. A 227/229 is
    /// only honoured as the answer to a PASV/EPSV the client sent.
    fn cmd(&mut self, line: &str) -> Verdict {
        let l = format!("{line}\r\n");
        self.feed(0, Dir::Original, self.o, l.as_bytes())
    }
}

const R227: &[u8] = b"227 Entering Passive Mode (10,0,2,2,4,1)\r\n";
const R227_NEW: &[u8] = b"227 Entering Passive Mode (10,0,0,100,4,1)\r\n";

#[test]
fn nat_227_rewrite_and_mapping() {
    let mut t = T::new(params(Mode::Nat));
    t.s.set_isn(Dir::Reply, 999);
    t.s.set_isn(Dir::Original, 4999);
    let banner = b"220 hello\r\n";
    assert_eq!(t.feed(0, Dir::Reply, 1000, banner), Verdict::Forward);
    assert_eq!(t.feed(1, Dir::Original, 5000, b"PASV\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    let s227 = 1000 + banner.len() as u32;
    assert_eq!(t.feed(2, Dir::Reply, s227, R227), replace(s227, R227_NEW));
    assert_eq!(t.a.expectations, vec![passive(1025, 2 + 30 * SEC)]);
    assert_eq!(t.a.events, vec![Event::Rewrite]);
    // Before and at the rewritten segment: no shift. After it: +2.
    assert_eq!(t.s.map_seq(Dir::Reply, 1000), 1000);
    assert_eq!(t.s.map_seq(Dir::Reply, s227), s227);
    let after = s227 + R227.len() as u32;
    assert_eq!(t.s.map_seq(Dir::Reply, after), after + 2);
    // Client acks: the translated end maps back; earlier acks unchanged.
    assert_eq!(t.s.map_ack(Dir::Original, after + 2), after);
    assert_eq!(t.s.map_ack(Dir::Original, s227), s227);
    assert_eq!(t.s.map_ack(Dir::Original, after + 500), after + 498);
    // The other direction is never shifted.
    assert_eq!(t.s.map_seq(Dir::Original, 5006), 5006);
    assert_eq!(t.s.map_ack(Dir::Reply, 5006), 5006);
    // Next reply is forwarded unchanged (the engine shifts its seq).
    assert_eq!(t.feed(3, Dir::Reply, after, b"150 go\r\n"), Verdict::Forward);
    assert_eq!(t.s.stats().rewrites, 1);
}

#[test]
fn retransmitted_227_same_replace_no_duplicate() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    let v1 = t.feed(0, Dir::Reply, 100, R227);
    assert_eq!(t.a.expectations.len(), 1);
    let end = 100 + R227.len() as u32;
    for _ in 0..3 {
        assert_eq!(t.feed(1, Dir::Reply, 100, R227), v1);
        assert!(t.a.expectations.is_empty() && t.a.events.is_empty());
    }
    assert_eq!(t.s.map_seq(Dir::Reply, end), end + 2, "delta not doubled");
    assert_eq!(t.s.stats().rewrites, 1);
    // A coalesced retransmission: old 227 + new data.
    let mut both = R227.to_vec();
    both.extend_from_slice(b"150 ok\r\n");
    let mut want = R227_NEW.to_vec();
    want.extend_from_slice(b"150 ok\r\n");
    assert_eq!(t.feed(2, Dir::Reply, 100, &both), replace(100, &want));
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.s.map_seq(Dir::Reply, end + 8), end + 10);
}

#[test]
fn retransmission_starting_inside_rewritten_field_is_widened() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    let _ = t.feed(0, Dir::Reply, 100, R227);
    // Field "10,0,2,2,4,1" starts at offset 27. A retransmission starting 3 bytes into it.
    let field = 100 + 27;
    let v = t.feed(1, Dir::Reply, field + 3, &R227[30..]);
    assert_eq!(v, replace(field, &R227_NEW[27..]));
    assert_eq!(t.s.map_seq(Dir::Reply, field), field);
}

#[test]
fn split_227_is_held_then_replaced() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("TYPE I");
    t.cmd("PASV");
    assert_eq!(t.feed(0, Dir::Reply, 0, b"220 hi\r\n"), Verdict::Forward);
    // Segment ends with the start of a 227 line: the prefix goes, the 227 part is held.
    let v = t.feed(1, Dir::Reply, 8, b"200 ok\r\n227 Entering Pass");
    assert_eq!(v, replace(8, b"200 ok\r\n"));
    assert_eq!(t.s.held_len(Dir::Reply), 17);
    // Retransmission of that segment: same thing again, nothing duplicated.
    assert_eq!(t.feed(2, Dir::Reply, 8, b"200 ok\r\n227 Entering Pass"), replace(8, b"200 ok\r\n"));
    assert_eq!(t.s.held_len(Dir::Reply), 17);
    // Retransmission of only held bytes: hold again.
    assert_eq!(t.feed(2, Dir::Reply, 16, b"227 Ent"), Verdict::Hold);
    // More of the line, still incomplete: hold.
    assert_eq!(t.feed(3, Dir::Reply, 33, b"ive Mode (10,0,2"), Verdict::Hold);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.s.held_len(Dir::Reply), 33);
    // Completion: held bytes + new bytes, rewritten, from the held start.
    let v = t.feed(4, Dir::Reply, 49, b",2,4,1)\r\n150 x\r\n");
    let mut want = R227_NEW.to_vec();
    want.extend_from_slice(b"150 x\r\n");
    assert_eq!(v, replace(16, &want));
    assert_eq!(t.a.expectations, vec![passive(1025, 4 + 30 * SEC)]);
    assert_eq!(t.s.held_len(Dir::Reply), 0);
    assert_eq!(t.s.map_seq(Dir::Reply, 16), 16);
    assert_eq!(t.s.map_seq(Dir::Reply, 65), 67);
    // Retransmissions of the once-held segments: bytes before the field are unchanged; one
    // that ends inside the rewritten field is widened to carry the whole new field.
    assert_eq!(t.feed(5, Dir::Reply, 16, b"227 Ent"), Verdict::Forward);
    let v = t.feed(5, Dir::Reply, 33, b"ive Mode (10,0,2");
    assert_eq!(v, replace(33, b"ive Mode (10,0,0,100,4,1"));
    assert!(t.a.expectations.is_empty());
}

#[test]
fn held_line_that_is_not_227_is_released() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    assert_eq!(t.feed(0, Dir::Reply, 0, b"22"), Verdict::Hold);
    assert_eq!(t.feed(0, Dir::Reply, 2, b"6 Transfer"), replace(0, b"226 Transfer"));
    assert_eq!(t.s.held_len(Dir::Reply), 0);
    assert_eq!(t.feed(0, Dir::Reply, 12, b" complete\r\n"), Verdict::Forward);
    // Continuation lines of a multi-line 227 are not held and not rewritten.
    assert_eq!(t.feed(0, Dir::Reply, 23, b"227-Entering (10,0,2,2,4,1)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
}

#[test]
fn old_retransmission_uses_previous_delta_and_two_rewrites() {
    let mut t = T::new(params(Mode::Nat));
    for _ in 0..4 {
        t.cmd("PASV");
    }
    let l = R227.len() as u32;
    assert_eq!(t.feed(0, Dir::Reply, 0, R227), replace(0, R227_NEW));
    let r2 = b"227 =10,0,2,2,195,80\r\n"; // "10,0,2,2,195,80" -> "10,0,0,100,195,80": +2
    let v = t.feed(1, Dir::Reply, l, r2);
    assert_eq!(v, replace(l, b"227 =10,0,0,100,195,80\r\n"));
    assert_eq!(t.a.expectations, vec![passive(50000, 1 + 30 * SEC)]);
    let end = l + r2.len() as u32;
    assert_eq!(t.s.map_seq(Dir::Reply, 0), 0);
    assert_eq!(t.s.map_seq(Dir::Reply, l), l + 2, "segment of 2nd rewrite: previous delta");
    assert_eq!(t.s.map_seq(Dir::Reply, end), end + 4);
    assert_eq!(t.s.map_ack(Dir::Original, end + 4), end);
    assert_eq!(t.s.map_ack(Dir::Original, l + 2), l);
    assert_eq!(t.s.map_ack(Dir::Original, 0), 0);
    // Old retransmissions replay their own rewrite and map with their own delta.
    assert_eq!(t.feed(2, Dir::Reply, 0, R227), replace(0, R227_NEW));
    assert_eq!(t.s.map_seq(Dir::Reply, 0), 0);
    assert_eq!(t.feed(2, Dir::Reply, l, r2), replace(l, b"227 =10,0,0,100,195,80\r\n"));
    assert!(t.a.expectations.is_empty());
    // Two rewrites in one segment.
    let mut two = R227.to_vec();
    two.extend_from_slice(R227);
    let mut want = R227_NEW.to_vec();
    want.extend_from_slice(R227_NEW);
    assert_eq!(t.feed(3, Dir::Reply, end, &two), replace(end, &want));
    assert_eq!(t.a.expectations.len(), 2);
    assert_eq!(t.s.map_seq(Dir::Reply, end + l), end + l + 6);
    assert_eq!(t.s.map_seq(Dir::Reply, end + 2 * l), end + 2 * l + 8);
    assert_eq!(t.s.map_ack(Dir::Original, end + 2 * l + 8), end + 2 * l);
}

#[test]
fn shrinking_rewrite_and_sequence_wrap() {
    let mut t = T::new(SessionParams { vip: "10.0.0.1:21".parse().unwrap(), ..params(Mode::Nat) });
    t.cmd("PASV");
    let line = b"227 Entering Passive Mode (192,168,100,200,4,1)\r\n";
    let start = u32::MAX - 10; // the field straddles the wrap
    let v = t.feed(0, Dir::Reply, start, line);
    assert_eq!(v, replace(start, b"227 Entering Passive Mode (10,0,0,1,4,1)\r\n"));
    let end = start.wrapping_add(line.len() as u32);
    assert_eq!(t.s.map_seq(Dir::Reply, end), end.wrapping_sub(7));
    assert_eq!(t.s.map_ack(Dir::Original, end.wrapping_sub(7)), end);
    assert_eq!(t.feed(0, Dir::Reply, end, b"150 ok\r\n"), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Reply, start, line), v);
}

#[test]
fn pasv_address_other_than_rs_and_already_vip() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    t.cmd("PASV");
    let v = t.feed(0, Dir::Reply, 0, b"227 Entering Passive Mode (203,0,113,9,4,1)\r\n");
    assert_eq!(v, replace(0, R227_NEW));
    assert_eq!(t.a.expectations, vec![passive(1025, 30 * SEC)]);
    // Already the VIP: nothing to rewrite, still an expectation.
    let v = t.feed(0, Dir::Reply, 45, R227_NEW);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(t.a.expectations.len(), 1);
    assert!(t.a.events.is_empty());
}

#[test]
fn nat_229_and_malformed_227() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("EPSV");
    t.cmd("PASV");
    let v = t.feed(0, Dir::Reply, 0, b"229 Entering Extended Passive Mode (!!!6446!)\r\n");
    assert_eq!(v, Verdict::Forward);
    assert_eq!(t.a.expectations, vec![passive(6446, 30 * SEC)]);
    assert_eq!(t.feed(0, Dir::Reply, 47, b"227 Logout.\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::Malformed]);
}

#[test]
fn nat_port_eprt_and_bounce() {
    let mut t = T::new(params(Mode::Nat));
    let active = |c: &str, port: u16| Expectation {
        kind: ExpectKind::Active { client_port: port, rs_src_port: None },
        client: ip(c),
        vip: ip("10.0.0.100"),
        real: ip("10.0.2.2"),
        expires: 30 * SEC,
    };
    let mut seq = 0;
    let mut feed = |t: &mut T, line: &[u8]| {
        let v = t.feed(0, Dir::Original, seq, line);
        seq += line.len() as u32;
        assert_eq!(v, Verdict::Forward, "commands are never changed");
    };
    feed(&mut t, b"PORT 192,0,2,7,4,1\r\n");
    assert_eq!(t.a.expectations, vec![active("192.0.2.7", 1025)]);
    feed(&mut t, b"eprt |1|192.0.2.7|5000|\r\n");
    assert_eq!(t.a.expectations, vec![active("192.0.2.7", 5000)]);
    feed(&mut t, b"PORT 198,51,100,1,4,1\r\n");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("198.51.100.1"), port: 1025 }]);
    feed(&mut t, b"PORT 192,0,2,7,0,25\r\n");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::LowPort { port: 25 }]);
    feed(&mut t, b"EPRT |2|2001:db8::1|5000|\r\n");
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("2001:db8::1"), port: 5000 }]);
    feed(&mut t, b"PORT 192,0,2,7,4,256\r\n");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::Malformed]);

    let mut t = T::new(SessionParams { allow_foreign_port_address: true, ..params(Mode::Nat) });
    assert_eq!(t.feed(0, Dir::Original, 0, b"PORT 198,51,100,1,4,1\r\n"), Verdict::Forward);
    assert_eq!(t.a.expectations, vec![active("198.51.100.1", 1025)]);
    assert!(t.a.events.is_empty());
    // Low ports stay refused even then.
    let _ = t.feed(0, Dir::Original, 23, b"PORT 198,51,100,1,0,80\r\n");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events.len(), 1);
}

#[test]
fn commands_split_and_retransmitted_once() {
    let mut t = T::new(params(Mode::Nat));
    assert_eq!(t.feed(0, Dir::Original, 0, b"PO"), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Original, 2, b"RT 192,0,2,7,"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.feed(0, Dir::Original, 15, b"4,1\r\n"), Verdict::Forward);
    assert_eq!(t.a.expectations.len(), 1);
    assert_eq!(t.feed(0, Dir::Original, 0, b"PORT 192,0,2,7,4,1\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.s.held_len(Dir::Original), 0);
}

#[test]
fn ipv6_session() {
    let mut t = T::new(params6(Mode::Nat));
    assert_eq!(t.feed(0, Dir::Original, 0, b"EPRT |2|2001:db8::7|5282|\r\n"), Verdict::Forward);
    assert_eq!(t.a.expectations[0].kind, ExpectKind::Active { client_port: 5282, rs_src_port: None });
    assert_eq!(t.a.expectations[0].real, ip("fd00::2"));
    assert_eq!(t.feed(0, Dir::Original, 27, b"PORT 192,0,2,7,4,1\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty() && t.a.events.is_empty());
    t.cmd("PASV");
    t.cmd("EPSV");
    assert_eq!(t.feed(0, Dir::Reply, 0, b"200 EPRT ok\r\n500 no\r\n"), Verdict::Forward);
    // 227 on IPv6 is ignored and never held.
    assert_eq!(t.feed(0, Dir::Reply, 21, b"227 Ent"), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Reply, 28, b"ering (10,0,2,2,4,1)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.feed(0, Dir::Reply, 50, b"229 ok (|||6446|)\r\n"), Verdict::Forward);
    assert_eq!(t.a.expectations[0].kind, ExpectKind::Passive { vip_port: Some(6446), real_port: Some(6446) });
    assert_eq!(t.a.expectations[0].vip, ip("2001:db8:1::100"));
}

#[test]
fn auth_tls_nat_fallback_then_no_parsing() {
    let mut t = T::new(params(Mode::Nat));
    // Refused AUTH: parsing continues.
    let _ = t.feed(0, Dir::Original, 0, b"AUTH TLS\r\n");
    let _ = t.feed(0, Dir::Reply, 0, b"534 no\r\n");
    assert!(!t.s.is_tls());
    let _ = t.feed(0, Dir::Original, 10, b"auth ssl\r\n");
    assert!(!t.s.is_tls() && t.a.events.is_empty());
    let v = t.feed(0, Dir::Reply, 8, b"234 AUTH SSL ok\r\n");
    assert_eq!(v, Verdict::Forward);
    assert!(t.s.is_tls());
    assert_eq!(t.a.events, vec![Event::TlsFallback]);
    // Afterwards nothing is parsed, held or rewritten.
    assert_eq!(t.feed(0, Dir::Reply, 25, b"227 Ent"), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Reply, 32, &R227[7..]), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Reply, 100, R227), Verdict::Forward);
    assert_eq!(t.feed(0, Dir::Original, 20, b"PORT 198,51,100,1,4,1\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty() && t.a.events.is_empty());
}

#[test]
fn auth_tls_after_rewrite_keeps_mapping() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    let _ = t.feed(0, Dir::Reply, 0, R227);
    let l = R227.len() as u32;
    t.cmd("AUTH TLS");
    let _ = t.feed(0, Dir::Reply, l, b"234 go\r\n");
    assert!(t.s.is_tls());
    assert_eq!(t.feed(0, Dir::Reply, l + 8, b"\x16\x03\x01tls"), Verdict::Forward);
    assert_eq!(t.s.map_seq(Dir::Reply, l + 8), l + 10);
    // A retransmitted old 227 is still replayed rewritten.
    assert_eq!(t.feed(0, Dir::Reply, 0, R227), replace(0, R227_NEW));
}

#[test]
fn tls_handshake_while_a_reply_is_held_releases_it() {
    // Found by the session fuzz target: the client sends AUTH TLS and its first TLS record
    // while the gateway holds the start of a reply line (it could be a 227). In NAT only the
    // server's 234 begins TLS: the record is a (junk) command, and the held bytes go out
    // unchanged once their line turns out not to be a 227 address.
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    assert_eq!(t.reply(b"227 Ent"), Verdict::Hold);
    t.cmd("AUTH TLS");
    let o = t.o;
    assert_eq!(t.feed(0, Dir::Original, o, b"\x16\x03\x01"), Verdict::Forward);
    assert!(!t.s.is_tls());
    assert_eq!(t.reply(b"ering\r\n"), replace(0, b"227 Entering\r\n"));
    assert_eq!(t.s.held_len(Dir::Reply), 0);
    assert_eq!(t.s.map_seq(Dir::Reply, 14), 14);
    // Full NAT holds the client's PORT: when the 234 begins TLS while a PORT line is held,
    // the held bytes reach the server unchanged, in front of the client's next bytes.
    let mut s = FtpSession::new(params(fnat("10.0.2.200")));
    let mut a = Actions::default();
    assert_eq!(s.on_segment(0, Dir::Original, 100, b"AUTH TLS\r\nPORT 1", &mut a), replace(100, b"AUTH TLS\r\n"));
    assert_eq!(s.held_len(Dir::Original), 6);
    assert_eq!(s.on_segment(0, Dir::Reply, 500, b"234 go\r\n", &mut a), Verdict::Forward);
    assert!(s.is_tls());
    assert_eq!(s.on_segment(0, Dir::Original, 116, b"\x16\x03\x01", &mut a), replace(110, b"PORT 1\x16\x03\x01"));
    assert_eq!(s.held_len(Dir::Original), 0);
    assert_eq!(s.map_seq(Dir::Original, 119), 119);
    // Afterwards the stream is passed through.
    assert_eq!(s.on_segment(0, Dir::Original, 119, b"\x17\x03\x03", &mut a), Verdict::Forward);
}

#[test]
fn dr_mode() {
    let mut t = T::new(params(Mode::Dr));
    let any = ExpectKind::Passive { vip_port: None, real_port: None };
    let mut seq = 0u32;
    let mut cmd = |t: &mut T, l: &[u8]| {
        let v = t.feed(7, Dir::Original, seq, l);
        seq += l.len() as u32;
        assert_eq!(v, Verdict::Forward);
    };
    cmd(&mut t, b"PASV\r\n");
    assert_eq!(t.a.expectations.len(), 1);
    let e = &t.a.expectations[0];
    assert_eq!(e.kind, any);
    assert_eq!((e.client, e.vip, e.real, e.expires), (ip("192.0.2.7"), ip("10.0.0.100"), ip("10.0.2.2"), 7 + 30 * SEC));
    cmd(&mut t, b"EPSV ALL\r\n");
    assert!(t.a.expectations.is_empty());
    cmd(&mut t, b"epsv\r\n");
    assert_eq!(t.a.expectations[0].kind, any);
    cmd(&mut t, b"EPSV 1\r\n");
    assert_eq!(t.a.expectations.len(), 1);
    // DR: the real server connects to the client directly, but the client
    // answers the VIP from the named port: an Active expectation pins those
    // packets to the control connection's server.
    cmd(&mut t, b"PORT 192,0,2,7,4,1\r\n");
    assert!(t.a.events.is_empty());
    assert_eq!(t.a.expectations.len(), 1);
    assert_eq!(t.a.expectations[0].kind, ExpectKind::Active { client_port: 1025, rs_src_port: None });
    cmd(&mut t, b"PORT 198,51,100,1,4,1\r\n");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("198.51.100.1"), port: 1025 }]);
    // DR sees no replies: after AUTH TLS the client's next bytes decide. A plain command
    // means the server refused it (lftp's default then goes on in plain text).
    cmd(&mut t, b"AUTH TLS\r\n");
    assert!(!t.s.is_tls());
    cmd(&mut t, b"USER anonymous\r\n");
    assert!(!t.s.is_tls());
    assert_eq!(t.a.events, vec![Event::TlsRefused]);
    cmd(&mut t, b"EPSV\r\n");
    assert_eq!(t.a.expectations.len(), 1, "still parsed after a refused AUTH");
    // A TLS record after AUTH: TLS began, parsing stops.
    cmd(&mut t, b"AUTH TLS\r\n");
    cmd(&mut t, b"\x16\x03\x01\x00\x05hello");
    assert!(t.s.is_tls());
    assert_eq!(t.a.events, vec![Event::TlsFallback]);
    cmd(&mut t, b"PASV\r\n");
    assert!(t.a.expectations.is_empty());
}

#[test]
fn gap_resyncs_at_next_line() {
    let mut t = T::new(params(Mode::Nat));
    assert_eq!(t.feed(0, Dir::Original, 0, b"USER a\r\nPORT 192,0,2"), Verdict::Forward);
    // 10 bytes missing; this segment starts mid-line.
    assert_eq!(t.feed(0, Dir::Original, 30, b",7,4,1\r\nPORT 192,0,2,7,4,2\r\n"), Verdict::Forward);
    assert_eq!(t.a.expectations.len(), 1);
    assert_eq!(t.a.expectations[0].kind, ExpectKind::Active { client_port: 1026, rs_src_port: None });
    assert_eq!(t.s.stats().gaps, 1);
    // The late segment is old now: forwarded, not parsed.
    assert_eq!(t.feed(0, Dir::Original, 20, b",7,4,1\r\nPO"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    t.cmd("PASV");
    // Replies: a gap while holding drops the segment.
    assert_eq!(t.feed(0, Dir::Reply, 0, b"227 Ent"), Verdict::Hold);
    assert_eq!(t.feed(0, Dir::Reply, 20, b"stuff\r\n"), Verdict::Hold);
    assert_eq!(t.s.held_len(Dir::Reply), 7);
    assert_eq!(t.feed(0, Dir::Reply, 7, &R227[7..]), replace(0, R227_NEW));
}

#[test]
fn gap_then_227_after_resync_is_rewritten() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    assert_eq!(t.feed(0, Dir::Reply, 0, b"220 x\r\n"), Verdict::Forward);
    let mut seg = b"tail of something\r\n".to_vec();
    seg.extend_from_slice(R227);
    let mut want = b"tail of something\r\n".to_vec();
    want.extend_from_slice(R227_NEW);
    assert_eq!(t.feed(0, Dir::Reply, 100, &seg), replace(100, &want));
}

#[test]
fn oversized_lines_are_skipped() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    t.cmd("PASV");
    let mut long = b"227 ".to_vec();
    long.resize(1500, b'x');
    // Held until it is clearly too long, then given up and sent unchanged.
    assert_eq!(t.feed(0, Dir::Reply, 0, &long[..1000]), Verdict::Hold);
    assert_eq!(t.s.held_len(Dir::Reply), 1000);
    assert_eq!(t.feed(0, Dir::Reply, 1000, &long[1000..1100]), replace(0, &long[..1100]));
    assert_eq!(t.a.events, vec![Event::Oversized]);
    assert_eq!(t.s.held_len(Dir::Reply), 0);
    assert_eq!(t.feed(0, Dir::Reply, 1100, &long[1100..]), Verdict::Forward);
    // The end of the long line followed by a good 227 in the same segment.
    let mut seg = b"xxxx\r\n".to_vec();
    seg.extend_from_slice(R227);
    let mut want = b"xxxx\r\n".to_vec();
    want.extend_from_slice(R227_NEW);
    assert_eq!(t.feed(0, Dir::Reply, 1500, &seg), replace(1500, &want));
    assert_eq!(t.a.expectations.len(), 1);
    // An oversized command line in one piece.
    let mut cmd = b"PORT ".to_vec();
    cmd.resize(2000, b'1');
    cmd.extend_from_slice(b"\r\nPORT 192,0,2,7,4,1\r\n");
    assert_eq!(t.feed(0, Dir::Original, 0, &cmd), Verdict::Forward);
    assert_eq!(t.a.events, vec![Event::Oversized]);
    assert_eq!(t.a.expectations.len(), 1);
}

#[test]
fn bare_lf_and_empty_payload() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    assert_eq!(t.feed(0, Dir::Reply, 0, b""), Verdict::Forward);
    let v = t.feed(0, Dir::Reply, 0, b"227 Entering Passive Mode (10,0,2,2,4,1)\n");
    assert_eq!(v, replace(0, b"227 Entering Passive Mode (10,0,0,100,4,1)\n"));
}

#[test]
fn max_payload_splits_a_released_hold() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    t.s.set_max_payload(100);
    assert_eq!(t.feed(0, Dir::Reply, 0, &R227[..20]), Verdict::Hold);
    let mut seg = R227[20..].to_vec();
    let filler = [b'x'; 80];
    seg.extend_from_slice(b"150 ");
    seg.extend_from_slice(&filler);
    seg.extend_from_slice(b"\r\n");
    // Held line + the whole segment would be 42 + 2 + 86 > 100: only the line goes out.
    assert_eq!(t.feed(1, Dir::Reply, 20, &seg), replace(0, R227_NEW));
    assert_eq!(t.a.expectations.len(), 1);
    let l = R227.len() as u32;
    // The sender retransmits from the client's ack (the line end): new data, forwarded.
    assert_eq!(t.s.map_ack(Dir::Original, l + 2), l);
    assert_eq!(t.feed(2, Dir::Reply, l, &seg[22..]), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.s.map_seq(Dir::Reply, l), l + 2);
    // Same segment again in full (the Replace was lost): the old line is replayed, and the
    // already processed rest comes along because it is old too.
    let mut want = R227_NEW[20..].to_vec();
    want.extend_from_slice(&seg[22..]);
    assert_eq!(t.feed(3, Dir::Reply, 20, &seg), replace(20, &want));
}

/// A `Pinholes` that answers from a script and records what it was asked.
struct Script {
    answers: Vec<Grant>,
    asked: Vec<Expectation>,
}

impl Pinholes for Script {
    fn open(&mut self, e: &Expectation) -> Grant {
        self.asked.push(e.clone());
        if self.answers.is_empty() {
            Grant::Open
        } else {
            self.answers.remove(0)
        }
    }
}

impl T {
    fn feed_with(&mut self, dir: Dir, seq: u32, data: &[u8], pins: &mut Script) -> Verdict {
        self.a.clear();
        if dir == Dir::Original {
            self.o = self.o.max(seq.wrapping_add(data.len() as u32));
        }
        self.s.on_segment_with(0, dir, seq, data, &mut self.a, pins)
    }
}

#[test]
fn only_the_answer_to_a_pending_pasv_opens() {
    let mut t = T::new(params(Mode::Nat));
    assert_eq!(t.reply(b"220 hi\r\n"), Verdict::Forward);
    // Unsolicited: no PASV pending. Not held, not rewritten, nothing opened.
    t.cmd("NOOP");
    assert_eq!(t.reply(R227), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::Unsolicited]);
    // Pipelined TYPE + PASV: the 200 answers TYPE, the 227 answers PASV.
    t.cmd("TYPE I");
    t.cmd("PASV");
    assert_eq!(t.reply(b"200 ok\r\n"), Verdict::Forward);
    let at = t.r;
    assert_eq!(t.reply(R227), replace(at, R227_NEW));
    assert_eq!(t.a.expectations.len(), 1);
    // The PASV is answered: a second 227 is unsolicited.
    assert_eq!(t.reply(R227), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    // A 227 answering EPSV, a 229 answering PASV: not honoured.
    t.cmd("EPSV");
    assert_eq!(t.reply(R227), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    t.cmd("PASV");
    assert_eq!(t.reply(b"229 x (|||5000|)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.s.stats().unsolicited, 4);
    // Client text echoed inside a reply line never matches: not at the line start.
    t.cmd("PASV");
    assert_eq!(t.reply(b"500 Unknown command 227 Entering Passive Mode (10,0,2,2,4,1)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty() && t.a.events.is_empty());
}

#[test]
fn multi_line_replies_are_never_acted_on() {
    let mut t = T::new(params(Mode::Nat));
    let _ = t.reply(b"220 hi\r\n");
    t.cmd("PASV");
    // Even answering the PASV, a multi-line reply opens nothing; its lines are not held.
    assert_eq!(t.reply(b"227-Here\r\n227 Entering Passive Mode (10,0,2,2,4,1)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    // `227 ` ended it (same code): the PASV is answered.
    t.cmd("STAT");
    t.cmd("PASV");
    assert_eq!(t.reply(b"211-Status:\r\n"), Verdict::Forward);
    // A continuation line that looks like a final 227 of another code is text.
    assert_eq!(t.reply(b"227 Entering Pass"), Verdict::Forward, "not held inside 211-");
    assert_eq!(t.reply(b"ive Mode (10,0,2,2,4,1)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.reply(b"211 End\r\n"), Verdict::Forward);
    // Now the PASV's own answer.
    let at = t.r;
    assert_eq!(t.reply(R227), replace(at, R227_NEW));
    assert_eq!(t.a.expectations.len(), 1);
}

#[test]
fn low_ports_open_nothing_unless_allowed() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PASV");
    // Port 21: the address is still hidden, but nothing opens.
    let v = t.feed(0, Dir::Reply, 0, b"227 Entering Passive Mode (10,0,2,2,0,21)\r\n");
    assert_eq!(v, replace(0, b"227 Entering Passive Mode (10,0,0,100,0,21)\r\n"));
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::LowPort { port: 21 }, Event::Rewrite]);
    t.cmd("EPSV");
    assert_eq!(t.feed(0, Dir::Reply, 45, b"229 x (|||80|)\r\n"), Verdict::Forward);
    assert!(t.a.expectations.is_empty());
    t.cmd("PORT 192,0,2,7,0,80");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::LowPort { port: 80 }]);
    // Allowed by configuration.
    let mut t = T::new(params(Mode::Nat));
    t.s.set_allow_low_data_ports(true);
    t.cmd("PASV");
    let _ = t.feed(0, Dir::Reply, 0, b"227 Entering Passive Mode (10,0,2,2,0,21)\r\n");
    assert_eq!(t.a.expectations, vec![passive(21, 30 * SEC)]);
}

#[test]
fn engine_moves_or_refuses_expectations() {
    let mut t = T::new(params(Mode::Nat));
    let mut pins = Script { answers: vec![Grant::OpenAt(40000), Grant::OpenAt(7), Grant::Refused], asked: vec![] };
    t.cmd("PASV");
    // Moved: the 227 announces the VIP port the engine chose.
    let v = t.feed_with(Dir::Reply, 0, R227, &mut pins);
    assert_eq!(v, replace(0, b"227 Entering Passive Mode (10,0,0,100,156,64)\r\n"));
    assert_eq!(pins.asked, vec![passive(1025, 30 * SEC)]);
    let want = Expectation {
        kind: ExpectKind::Passive { vip_port: Some(40000), real_port: Some(1025) },
        ..passive(1025, 30 * SEC)
    };
    assert_eq!(t.a.expectations, vec![want]);
    assert_eq!(t.a.events, vec![Event::Moved { from: 1025, to: 40000 }, Event::Rewrite]);
    let l = R227.len() as u32;
    assert_eq!(t.s.map_seq(Dir::Reply, l), l + 5);
    // 229 moved: its port is rewritten ("6446" -> "7": 3 bytes shorter).
    t.cmd("EPSV");
    let r229 = b"229 Entering Extended Passive Mode (|||6446|)\r\n";
    let v = t.feed_with(Dir::Reply, l, r229, &mut pins);
    assert_eq!(v, replace(l, b"229 Entering Extended Passive Mode (|||7|)\r\n"));
    let l2 = l + r229.len() as u32;
    assert_eq!(t.s.map_seq(Dir::Reply, l2), l2 + 5 - 3);
    // Refused: the address is still rewritten, nothing is opened.
    t.cmd("PASV");
    let v = t.feed_with(Dir::Reply, l2, R227, &mut pins);
    assert_eq!(v, replace(l2, R227_NEW));
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::Refused, Event::Rewrite]);
    assert_eq!((t.s.stats().moved, t.s.stats().refused), (2, 1));
    // Active kinds cannot be moved: OpenAt is a refusal.
    let mut pins = Script { answers: vec![Grant::OpenAt(9999)], asked: vec![] };
    let o = t.o;
    let _ = t.feed_with(Dir::Original, o, b"PORT 192,0,2,7,4,1\r\n", &mut pins);
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::Refused]);
}

#[test]
fn split_229_is_held_when_it_may_be_moved() {
    let mut t = T::new(params6(Mode::Nat));
    let mut pins = Script { answers: vec![Grant::OpenAt(50001)], asked: vec![] };
    t.cmd("EPSV");
    assert_eq!(t.feed_with(Dir::Reply, 0, b"229 Entering (||", &mut pins), Verdict::Hold);
    let v = t.feed_with(Dir::Reply, 16, b"|6446|)\r\n", &mut pins);
    assert_eq!(v, replace(0, b"229 Entering (|||50001|)\r\n"));
}

#[test]
fn oversized_reply_still_answers_its_command() {
    let mut t = T::new(params(Mode::Nat));
    t.cmd("HELP");
    t.cmd("PASV");
    let mut long = b"214 ".to_vec();
    long.resize(1500, b'x');
    long.extend_from_slice(b"\r\n");
    assert_eq!(t.feed(0, Dir::Reply, 0, &long), Verdict::Forward);
    let at = long.len() as u32;
    assert_eq!(t.feed(0, Dir::Reply, at, R227), replace(at, R227_NEW));
    assert_eq!(t.a.expectations.len(), 1);
}

/// Full NAT: the engine reserves a port on the local address for each PORT/EPRT.
struct Reserve(u16);
impl Pinholes for Reserve {
    fn open(&mut self, e: &Expectation) -> Grant {
        match e.kind {
            ExpectKind::Active { .. } => Grant::OpenAt(self.0),
            _ => Grant::Open,
        }
    }
}

fn fnat(local: &str) -> Mode {
    Mode::Fnat { local: ip(local) }
}

#[test]
fn fnat_port_and_eprt_name_the_reserved_local_port() {
    let mut s = FtpSession::new(params(fnat("10.0.2.200")));
    let mut a = Actions::default();
    let mut pins = Reserve(2040);
    let port = b"PORT 192,0,2,7,156,64\r\n";
    let v = s.on_segment_with(0, Dir::Original, 100, port, &mut a, &mut pins);
    assert_eq!(v, replace(100, b"PORT 10,0,2,200,7,248\r\n"));
    assert_eq!(a.expectations.len(), 1, "the expectation still names the client's port");
    assert_eq!(a.expectations[0].kind, ExpectKind::Active { client_port: 40000, rs_src_port: None });
    assert_eq!(a.expectations[0].client, ip("192.0.2.7"));
    let end = 100 + port.len() as u32;
    assert_eq!(s.map_seq(Dir::Original, end), end, "as long as the client's");
    // A reply still works as in NAT (227 -> VIP).
    a.clear();
    let v = s.on_segment_with(1, Dir::Reply, 500, b"200 PORT ok\r\n", &mut a, &mut pins);
    assert_eq!(v, Verdict::Forward);
    // EPRT, lower case, split over two segments: held, then rewritten whole.
    a.clear();
    pins.0 = 2041;
    let eprt = b"eprt |1|192.0.2.7|40001|\r\n";
    assert_eq!(s.on_segment_with(2, Dir::Original, end, &eprt[..7], &mut a, &mut pins), Verdict::Hold);
    let v = s.on_segment_with(2, Dir::Original, end + 7, &eprt[7..], &mut a, &mut pins);
    assert_eq!(v, replace(end, b"eprt |1|10.0.2.200|2041|\r\n"));
    // Another command is not held.
    a.clear();
    let next = end + eprt.len() as u32;
    assert_eq!(s.on_segment_with(3, Dir::Original, next, b"RETR x\r\n", &mut a, &mut pins), Verdict::Forward);
    // A bounce attempt is refused and left as it is (the server cannot reach it anyway).
    a.clear();
    let bounce = b"PORT 10,9,9,9,156,64\r\n";
    let at = next + 8;
    assert_eq!(s.on_segment_with(4, Dir::Original, at, bounce, &mut a, &mut pins), Verdict::Forward);
    assert!(matches!(a.events[..], [Event::BounceRefused { .. }]));
}

#[test]
fn fnat_eprt_ipv6() {
    let mut s = FtpSession::new(params6(fnat("fd00:2::200")));
    let mut a = Actions::default();
    let eprt = b"EPRT |2|2001:db8::7|40002|\r\n";
    let v = s.on_segment_with(0, Dir::Original, 7, eprt, &mut a, &mut Reserve(3000));
    assert_eq!(v, replace(7, b"EPRT |2|fd00:2::200|3000|\r\n"));
    let end = 7 + eprt.len() as u32;
    assert_eq!(s.map_seq(Dir::Original, end), end - 1, "one byte shorter");
    assert_eq!(s.map_ack(Dir::Reply, end - 1), end, "the server's ack maps back");
    // Refused by the engine: left unchanged.
    struct No;
    impl Pinholes for No {
        fn open(&mut self, _: &Expectation) -> Grant {
            Grant::Refused
        }
    }
    let mut s = FtpSession::new(params6(fnat("fd00:2::200")));
    assert_eq!(s.on_segment_with(0, Dir::Original, 7, eprt, &mut a, &mut No), Verdict::Forward);
}

#[test]
fn command_arg_ranges_and_eprt_format() {
    use ferrovs_ftp_alg::parse::{command_arg_range, format_eprt_arg, parse_eprt};
    let l = b"PORT  1,2,3,4,5,6  \r\n";
    assert_eq!(&l[command_arg_range(l)], b"1,2,3,4,5,6");
    assert_eq!(command_arg_range(b"PASV\r\n"), 4..4);
    assert_eq!(command_arg_range(b""), 0..0);
    assert_eq!(command_arg_range(b"EPRT \r\n"), 4..4, "trailing spaces are not an argument");
    let mut buf = [0u8; 64];
    let a = "[fd00::1]:21".parse().unwrap();
    let n = format_eprt_arg(b'!', a, &mut buf);
    assert_eq!(&buf[..n], b"!2!fd00::1!21!");
    let line = [b"EPRT ".as_slice(), &buf[..n]].concat();
    assert_eq!(parse_eprt(&line), Some(a));
}

#[test]
fn long_229_answering_pasv_as_epsv_replays_whole() {
    // Full NAT, IPv4 client, IPv6 server: the 229 answering the EPSV sent for the client's
    // PASV is replaced whole by a 227. A server's 229 line longer than 255 bytes: its
    // retransmission must be replayed as the same 227 line, and the client's ack of the
    // translated line must map back to the end of the original one.
    let mut t = T::new(SessionParams { real: "[fd00::2]:21".parse().unwrap(), ..params(fnat("fd00:2::200")) });
    assert_eq!(t.cmd("PASV"), replace(0, b"EPSV\r\n"));
    let mut line = b"229 Entering Extended Passive Mode".to_vec();
    line.resize(300, b'.');
    line.extend_from_slice(b" (|||6446|)\r\n");
    let want = b"227 Entering Passive Mode (10,0,0,100,25,46).\r\n";
    assert_eq!(t.reply(&line), replace(0, want));
    assert_eq!(t.a.expectations.len(), 1);
    let end = line.len() as u32;
    let t_end = want.len() as u32;
    assert_eq!(t.s.map_seq(Dir::Reply, end), t_end);
    assert_eq!(t.s.map_ack(Dir::Original, t_end), end);
    // The client took only the first 10 bytes of the 227: the ack stays at the line start.
    assert_eq!(t.s.map_ack(Dir::Original, 10), 0);
    // The lost Replace: the server retransmits the line.
    assert_eq!(t.feed(1, Dir::Reply, 0, &line), replace(0, want));
}

#[test]
fn classic_bounce_to_a_low_port_is_a_bounce() {
    // CERT CA-1997-27: `PORT victim,0,25` makes the server connect to another host's SMTP
    // port. It names a foreign address: that is what the admin must see counted and logged
    // (bounce_refused), whatever the port.
    let mut t = T::new(params(Mode::Nat));
    t.cmd("PORT 198,51,100,1,0,25");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("198.51.100.1"), port: 25 }]);
    t.cmd("EPRT |1|198.51.100.1|25|");
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("198.51.100.1"), port: 25 }]);
    // The client's own low port stays a low port.
    t.cmd("PORT 192,0,2,7,0,25");
    assert_eq!(t.a.events, vec![Event::LowPort { port: 25 }]);
    // Even with low data ports allowed, a foreign one is a bounce.
    let mut t = T::new(params(Mode::Dr));
    t.s.set_allow_low_data_ports(true);
    t.cmd("PORT 198,51,100,1,0,25");
    assert!(t.a.expectations.is_empty());
    assert_eq!(t.a.events, vec![Event::BounceRefused { named: ip("198.51.100.1"), port: 25 }]);
}

#[test]
fn nat_tls_begins_only_when_the_server_accepts_auth() {
    // NAT sees the server's answer to AUTH TLS: that decides (RFC 4217: the client starts
    // the handshake after the 234). A client sending a TLS record right after AUTH, which the
    // server refuses, must not switch the gateway off: the next 227 would reach it with the
    // real server's address, and its data connection would open nothing.
    let mut t = T::new(params(Mode::Nat));
    t.cmd("AUTH TLS");
    let o = t.o;
    assert_eq!(t.feed(0, Dir::Original, o, b"\x16\x03\x01\x00\x05hello\r\n"), Verdict::Forward);
    assert!(!t.s.is_tls());
    assert!(t.a.events.is_empty());
    assert_eq!(t.reply(b"500 AUTH not understood.\r\n"), Verdict::Forward);
    assert_eq!(t.a.events, vec![Event::TlsRefused]);
    assert_eq!(t.reply(b"500 Unknown command.\r\n"), Verdict::Forward);
    t.cmd("PASV");
    let at = t.r;
    assert_eq!(t.reply(R227), replace(at, R227_NEW));
    assert_eq!(t.a.expectations.len(), 1);
    assert!(!t.s.is_tls());
}
