//! TCP-level behaviour of FTP control connections, as fixture tables
//! (frames in, exact frames out, counters): SACK edges mapped with the
//! seq/ack deltas, the handshake MSS clamped by the gateway's growth, a
//! Replace that outgrows the egress MTU split in two, the FIN kept on the
//! last byte, and SYN data (TCP Fast Open) fed to the gateway at isn + 1.

mod common;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

const FTP: &str = r#"
[[service]]
name = "ftp"
vip = "10.0.1.100"
protocol = "tcp"
ports = [21]
scheduler = "rr"
forward = "nat"
ftp = true

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp6"
vip = "fd00:1::100"
protocol = "tcp"
ports = [21]
scheduler = "rr"
forward = "nat"
ftp = true

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"
"#;

const PASV_RS: &[u8] = b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n";
const PASV_VIP: &[u8] = b"227 Entering Passive Mode (10,0,1,100,117,48).\r\n";

/// Client -> VIP:21 (seq space starts at 999 for the SYN).
fn c(flags: u8, seq: u32, ack: u32, opts: &[u8], data: &[u8]) -> (usize, Vec<u8>) {
    (EXT, with_macs(tcp4_opts(CLIENT, 40000, VIP, 21, flags, seq, ack, opts, data), CLIENT_MAC, LB_EXT))
}
/// rs1:21 -> client (seq space starts at 4999 for the SYN-ACK).
fn r(flags: u8, seq: u32, ack: u32, opts: &[u8], data: &[u8]) -> (usize, Vec<u8>) {
    (INT, with_macs(tcp4_opts(RS1, 21, CLIENT, 40000, flags, seq, ack, opts, data), RS1_MAC, LB_INT))
}
/// What rs1 should receive.
fn to_rs(flags: u8, seq: u32, ack: u32, opts: &[u8], data: &[u8]) -> (usize, Vec<u8>) {
    let f = tcp4_opts(CLIENT, 40000, RS1, 21, flags, seq, ack, opts, data);
    (INT, set_ttl(with_macs(f, LB_INT, RS1_MAC), 63))
}
/// What the client should receive.
fn to_client(flags: u8, seq: u32, ack: u32, opts: &[u8], data: &[u8]) -> (usize, Vec<u8>) {
    let f = tcp4_opts(VIP, 21, CLIENT, 40000, flags, seq, ack, opts, data);
    (EXT, set_ttl(with_macs(f, LB_EXT, CLIENT_MAC), 63))
}

/// Handshake (with MSS options) and the 227 rewrite (+2 bytes) at server seq 5000.
fn handshake() -> Vec<(usize, Vec<u8>)> {
    vec![
        c(TCP_SYN, 999, 0, &opt_mss(1460), b""),
        r(TCP_SYN | TCP_ACK, 4999, 1000, &opt_mss(1460), b""),
        c(TCP_ACK, 1000, 5000, &[], b""),
    ]
}
fn with_227() -> Vec<(usize, Vec<u8>)> {
    let mut v = handshake();
    v.push(c(TCP_ACK | TCP_PSH, 1000, 5000, &[], b"PASV\r\n"));
    v.push(r(TCP_ACK | TCP_PSH, 5000, 1006, &[], PASV_RS));
    v
}

fn ftp_counter(e: &MemEngine, f: impl Fn(&ferrovs_engine::pipeline::counters::FtpCounters) -> u64) -> u64 {
    e.workers.iter().map(|w| f(&w.service_counters()[0].ftp)).sum()
}
fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

struct Case {
    what: &'static str,
    /// MTU of the client-side port (ext), 1500 unless set.
    ext_mtu: Option<u16>,
    input: Vec<(usize, Vec<u8>)>,
    /// Exactly what the last input makes the engine send.
    want: Vec<(usize, Vec<u8>)>,
    check: fn(&MemEngine),
}

fn nothing(_: &MemEngine) {}

fn run(cases: Vec<Case>) {
    for c in cases {
        let mut e = MemEngine::new(config(FTP), 1);
        if let Some(m) = c.ext_mtu {
            e.workers[0].queues_mut()[EXT].set_mtu(m);
            e.workers[0].refresh_caps();
        }
        let mut last = Vec::new();
        for (k, (i, f)) in c.input.iter().enumerate() {
            last = e.inject(*i, f, S + k as u64 * 1000);
        }
        for (_, f) in &last {
            verify_checksums(f).unwrap_or_else(|err| panic!("{}: bad checksum: {err}", c.what));
        }
        assert_eq!(last.len(), c.want.len(), "{}: number of frames out", c.what);
        for (k, (got, want)) in last.iter().zip(c.want.iter()).enumerate() {
            assert_eq!(got.0, want.0, "{}: frame {k} interface", c.what);
            assert_eq!(got.1, want.1, "{}: frame {k} bytes", c.what);
        }
        (c.check)(&e);
    }
}

#[test]
fn mss_is_clamped_at_the_handshake() {
    run(vec![
        Case {
            what: "client SYN: MSS 1460 -> 1500 - 20 - 20 - 12 = 1448 towards the real server",
            ext_mtu: None,
            input: vec![c(TCP_SYN, 999, 0, &opt_mss(1460), b"")],
            want: vec![to_rs(TCP_SYN, 999, 0, &opt_mss(1448), b"")],
            check: nothing,
        },
        Case {
            what: "server SYN-ACK: MSS 1460 -> 1448 towards the client",
            ext_mtu: None,
            input: handshake()[..2].to_vec(),
            want: vec![to_client(TCP_SYN | TCP_ACK, 4999, 1000, &opt_mss(1448), b"")],
            check: nothing,
        },
        Case {
            what: "the smaller MTU of the two sides counts: ext 1000 -> MSS 948",
            ext_mtu: Some(1000),
            input: vec![c(TCP_SYN, 999, 0, &opt_mss(1460), b"")],
            want: vec![to_rs(TCP_SYN, 999, 0, &opt_mss(948), b"")],
            check: nothing,
        },
        Case {
            what: "an MSS already small enough is left alone",
            ext_mtu: None,
            input: vec![c(TCP_SYN, 999, 0, &opt_mss(536), b"")],
            want: vec![to_rs(TCP_SYN, 999, 0, &opt_mss(536), b"")],
            check: nothing,
        },
        Case {
            what: "not an FTP control connection: MSS untouched",
            ext_mtu: None,
            input: vec![(
                EXT,
                with_macs(tcp4_opts(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, &opt_mss(1460), b""), CLIENT_MAC, LB_EXT),
            )],
            want: vec![(
                INT,
                set_ttl(
                    with_macs(tcp4_opts(CLIENT, 40000, RS1, 80, TCP_SYN, 1, 0, &opt_mss(1460), b""), LB_INT, RS1_MAC),
                    63,
                ),
            )],
            check: nothing,
        },
        Case {
            what: "IPv6: 1500 - 40 - 20 - 12 = 1428",
            ext_mtu: None,
            input: vec![(
                EXT,
                with_macs(tcp6_opts(C6, 40000, VIP6_FTP, 21, TCP_SYN, 1, 0, &opt_mss(1440), b""), CLIENT_MAC, LB_EXT),
            )],
            want: vec![(
                INT,
                set_ttl(
                    with_macs(tcp6_opts(C6, 40000, RS6, 21, TCP_SYN, 1, 0, &opt_mss(1428), b""), LB_INT, RS1_MAC),
                    63,
                ),
            )],
            check: nothing,
        },
    ]);
}

const VIP6_FTP: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

#[test]
fn sack_blocks_follow_the_rewrite_delta() {
    // The 227 line is [5000, 5046) at the server, [5000, 5048) at the client;
    // its address field starts at 5027.
    let mut input = with_227();
    // The client acks the 227 and SACKs a later range; its first block is a
    // D-SACK (RFC 2883) below the ack, before the rewritten field.
    input.push(c(TCP_ACK, 1006, 5048, &opt_sack(&[(5010, 5020), (5100, 5200)]), b""));
    let mut input2 = with_227();
    input2.push(c(TCP_ACK, 1006, 5048, &opt_sack(&[(5060, 5070)]), b""));
    run(vec![
        Case {
            what: "SACK edges after the field shift back by 2, the D-SACK before it stays",
            ext_mtu: None,
            input,
            want: vec![to_rs(TCP_ACK, 1006, 5046, &opt_sack(&[(5010, 5020), (5098, 5198)]), b"")],
            check: nothing,
        },
        Case {
            what: "a left edge inside the rewritten field moves to the field's end, not its start",
            ext_mtu: None,
            input: {
                // The translated field is [5027, 5044), the original [5027, 5042).
                let mut v = with_227();
                v.push(c(TCP_ACK, 1006, 5000, &opt_sack(&[(5030, 5100)]), b""));
                v
            },
            want: vec![to_rs(TCP_ACK, 1006, 5000, &opt_sack(&[(5042, 5098)]), b"")],
            check: nothing,
        },
        Case {
            what: "a block entirely inside the field becomes empty (ignored by the receiver)",
            ext_mtu: None,
            input: {
                let mut v = with_227();
                v.push(c(TCP_ACK, 1006, 5000, &opt_sack(&[(5030, 5040)]), b""));
                v
            },
            want: vec![to_rs(TCP_ACK, 1006, 5000, &opt_sack(&[(5027, 5027)]), b"")],
            check: nothing,
        },
        Case {
            what: "a single SACK block",
            ext_mtu: None,
            input: input2,
            want: vec![to_rs(TCP_ACK, 1006, 5046, &opt_sack(&[(5058, 5068)]), b"")],
            check: nothing,
        },
        Case {
            what: "before any rewrite SACK blocks pass unchanged",
            ext_mtu: None,
            input: {
                let mut v = handshake();
                v.push(c(TCP_ACK, 1000, 5000, &opt_sack(&[(5100, 5200)]), b""));
                v
            },
            want: vec![to_rs(TCP_ACK, 1000, 5000, &opt_sack(&[(5100, 5200)]), b"")],
            check: nothing,
        },
    ]);
}

#[test]
fn replace_uses_the_egress_mtu_and_splits() {
    // 544 bytes of a multi-line reply, then the 227 line: 590 bytes from the
    // server, 592 after the rewrite; the client side's MTU is 600, so at most
    // 560 bytes of payload fit a segment towards the client.
    // The lead is a multi-line reply to a NOOP (the gateway acts only on a
    // single-line 227 answering a pending PASV).
    let mut reply = Vec::new();
    while reply.len() < 500 {
        reply.extend_from_slice(b"200-padding padding padding padding\r\n");
    }
    let end = b"200 end\r\n";
    reply.resize(544 - end.len() - 2, b'.');
    reply.extend_from_slice(b"\r\n");
    reply.extend_from_slice(end);
    assert_eq!(reply.len(), 544);
    let lead = reply.clone();
    reply.extend_from_slice(PASV_RS);
    let mut out = lead.clone();
    out.extend_from_slice(PASV_VIP);
    assert_eq!(out.len(), 592);
    let mut input = handshake();
    input.push(c(TCP_ACK | TCP_PSH, 1000, 5000, &[], b"NOOP\r\nPASV\r\n"));
    input.push(r(TCP_ACK | TCP_PSH | TCP_FIN, 5000, 1012, &[], &reply));
    run(vec![Case {
        what: "592 bytes to an MTU-600 side: 560 + 32, PSH/FIN only on the second",
        ext_mtu: Some(600),
        input,
        want: vec![
            to_client(TCP_ACK, 5000, 1012, &[], &out[..560]),
            to_client(TCP_ACK | TCP_PSH | TCP_FIN, 5560, 1012, &[], &out[560..]),
        ],
        check: |e| {
            assert_eq!(ftp_counter(e, |c| load(&c.rewrites)), 1);
            assert_eq!(e.counters().drops.iter().find(|d| d.0 == "too_big").map(|d| d.1), Some(0));
        },
    }]);
}

#[test]
fn fin_stays_on_the_last_byte() {
    let mut held = handshake();
    held.push(c(TCP_ACK | TCP_PSH, 1000, 5000, &[], b"NOOP\r\nPASV\r\n"));
    held.push(r(TCP_ACK | TCP_PSH | TCP_FIN, 5000, 1012, &[], b"200 OK\r\n227 Entering Pass"));
    let mut whole = held.clone();
    let mut full = b"200 OK\r\n".to_vec();
    full.extend_from_slice(PASV_RS);
    whole.push(r(TCP_ACK | TCP_PSH | TCP_FIN, 5000, 1012, &[], &full));
    let mut full_out = b"200 OK\r\n".to_vec();
    full_out.extend_from_slice(PASV_VIP);
    let mut all_held = handshake();
    all_held.push(c(TCP_ACK | TCP_PSH, 1000, 5000, &[], b"PASV\r\n"));
    all_held.push(r(TCP_ACK | TCP_PSH | TCP_FIN, 5000, 1006, &[], b"227 Entering Pass"));
    run(vec![
        Case {
            what: "a segment held whole (the start of a 227): nothing out, its FIN did not count",
            ext_mtu: None,
            input: all_held,
            want: vec![],
            check: |e| {
                assert_eq!(ftp_counter(e, |c| load(&c.held_segments)), 1);
                assert_eq!(state(e), "ESTABLISHED");
            },
        },
        Case {
            what: "Replace shorter than the segment (the 227 start is held): no FIN",
            ext_mtu: None,
            input: held,
            want: vec![to_client(TCP_ACK | TCP_PSH, 5000, 1012, &[], b"200 OK\r\n")],
            check: |e| {
                assert_eq!(ftp_counter(e, |c| load(&c.held_segments)), 0);
                assert_eq!(state(e), "ESTABLISHED", "the FIN kept back did not move the state");
            },
        },
        Case {
            what: "the retransmission completes the line and ends where the original ended: FIN kept",
            ext_mtu: None,
            input: whole,
            want: vec![to_client(TCP_ACK | TCP_PSH | TCP_FIN, 5000, 1012, &[], &full_out)],
            check: |e| {
                assert_eq!(ftp_counter(e, |c| load(&c.rewrites)), 2);
                assert_eq!(state(e), "FIN_WAIT", "the FIN that went out did (IPVS: a server FIN moves to FIN_WAIT)");
            },
        },
    ]);
}

#[test]
fn a_segment_the_gateway_drops_leaves_the_state() {
    // A RST or FIN carrying data far beyond the window (a blind attacker's, or garbage) is
    // dropped by the gateway (`out_of_window`) and never reaches the server: as conntrack with
    // an invalid segment, the connection's state must not move (to CLOSE / CLOSE_WAIT and their
    // short timeouts, closing a live control connection early).
    use ferrovs_engine::wire::parse::TCP_RST;
    let far = 1000u32.wrapping_add(1 << 30);
    let mut rst = handshake();
    rst.push(c(TCP_RST | TCP_ACK, far, 5000, &[], b"x"));
    let mut fin = handshake();
    fin.push(c(TCP_FIN | TCP_ACK, far, 5000, &[], b"QUIT\r\n"));
    let mut good = handshake();
    good.push(c(TCP_FIN | TCP_ACK, far, 5000, &[], b"QUIT\r\n"));
    good.push(c(TCP_FIN | TCP_ACK, 1000, 5000, &[], b"QUIT\r\n"));
    run(vec![
        Case {
            what: "a RST with data far ahead: dropped, the state stays",
            ext_mtu: None,
            input: rst,
            want: vec![],
            check: |e| {
                assert_eq!(common::seg::drops(e), vec![("out_of_window", 1)]);
                assert_eq!(state(e), "ESTABLISHED");
            },
        },
        Case {
            what: "a FIN with data far ahead: dropped, the state stays",
            ext_mtu: None,
            input: fin,
            want: vec![],
            check: |e| assert_eq!(state(e), "ESTABLISHED"),
        },
        Case {
            what: "the FIN in sequence after it moves the state as ever",
            ext_mtu: None,
            input: good,
            want: vec![to_rs(TCP_FIN | TCP_ACK, 1000, 5000, &[], b"QUIT\r\n")],
            check: |e| assert_eq!(state(e), "CLOSE_WAIT"),
        },
    ]);
}

#[test]
fn syn_data_is_fed_at_isn_plus_one() {
    let port = b"PORT 10,0,1,2,156,64\r\n";
    // The client's SYN carries the PASV, the server's SYN-ACK its answer.
    let mut synack_227 = vec![c(TCP_SYN, 999, 0, &[], b"PASV\r\n")];
    synack_227.push(r(TCP_SYN | TCP_ACK, 4999, 1006, &[], PASV_RS));
    let mut later = synack_227.clone();
    later.push(r(TCP_ACK | TCP_PSH, 5046, 1006, &[], b"150 ok\r\n"));
    run(vec![
        Case {
            what: "TFO: a PORT in the client's SYN opens the active data expectation",
            ext_mtu: None,
            input: vec![c(TCP_SYN, 999, 0, &[], port)],
            want: vec![to_rs(TCP_SYN, 999, 0, &[], port)],
            check: |e| assert_eq!(ftp_counter(e, |c| load(&c.expectations_created)), 1),
        },
        Case {
            what: "TFO with options (MSS, a TFO cookie): payload found past them, MSS still clamped",
            ext_mtu: None,
            input: vec![c(TCP_SYN, 999, 0, &tfo_opts(1460), port)],
            want: vec![to_rs(TCP_SYN, 999, 0, &tfo_opts(1448), port)],
            check: |e| assert_eq!(ftp_counter(e, |c| load(&c.expectations_created)), 1),
        },
        Case {
            what: "a 227 in the server's SYN-ACK data is rewritten; the SYN keeps the ISN",
            ext_mtu: None,
            input: synack_227,
            want: vec![to_client(TCP_SYN | TCP_ACK, 4999, 1006, &[], PASV_VIP)],
            check: |e| assert_eq!(ftp_counter(e, |c| load(&c.rewrites)), 1),
        },
        Case {
            what: "and the server's next segment shifts by the +2",
            ext_mtu: None,
            input: later,
            want: vec![to_client(TCP_ACK | TCP_PSH, 5048, 1006, &[], b"150 ok\r\n")],
            check: nothing,
        },
    ]);
}

/// MSS, a TCP Fast Open cookie option (kind 34, RFC 7413), two NOPs: 16 bytes.
fn tfo_opts(mss: u16) -> Vec<u8> {
    let mut v = opt_mss(mss);
    v.extend_from_slice(&[34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1]);
    v
}

/// The TCP state of the (only) control connection.
fn state(e: &MemEngine) -> &'static str {
    let f = &e.workers[0].flows;
    (0..f.slots() as u32).find_map(|i| f.try_get(i).filter(|c| c.live)).map_or("none", |c| c.state.name())
}
