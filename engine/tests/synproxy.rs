//! SYN proxy with SYN cookies (issue 12): packet in -> packet out + counters.

mod common;
use common::seg::*;
use common::*;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{parse, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

fn services(mode: &str) -> String {
    format!(
        r#"
[[service]]
name = "web"
vip = "10.0.1.100"
ports = [80]
forward = "nat"
syn_proxy = "{mode}"

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
forward = "nat"
ftp = true
syn_proxy = "{mode}"

[[service.real_server]]
address = "10.0.2.2"
"#
    )
}

fn engine(mode: &str, threshold: u32) -> MemEngine {
    let text = config_text(&services(mode))
        .replace("flow_table_size = 4096", &format!("flow_table_size = 4096\nsyn_proxy_threshold = {threshold}"));
    MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 1)
}

struct Client {
    sport: u16,
    isn: u32,
    cookie: u32,
    rs_isn: u32,
}

fn from_client(
    e: &mut MemEngine,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<(usize, Vec<u8>)> {
    client_tcp(e, S, sport, dport, flags, seq, ack, data)
}

fn from_rs(
    e: &mut MemEngine,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<(usize, Vec<u8>)> {
    rs_tcp(e, S, RS1, sport, dport, flags, seq, ack, data)
}

/// The whole proxied handshake for CLIENT:sport -> VIP:dport, checked step by step.
fn handshake(e: &mut MemEngine, sport: u16, dport: u16) -> Client {
    let isn = 1_000_000 + sport as u32;
    let syn = with_macs(tcp4_opts(CLIENT, sport, VIP, dport, TCP_SYN, isn, 0, &opt_mss(1400), b""), CLIENT_MAC, LB_EXT);
    let flows0 = e.counters().flows_created;
    // 1. The balancer answers the SYN itself; no state.
    let (iface, s) = one(e.inject(EXT, &syn, S));
    assert_eq!(iface, EXT);
    assert_eq!((s.src, s.sport, s.dst, s.dport, s.flags), (VIP, dport, CLIENT, sport, TCP_SYN | TCP_ACK));
    assert_eq!(s.ack, isn + 1);
    assert_eq!(s.mss, Some(1460), "our MSS for MTU 1500");
    assert_eq!(e.counters().flows_created, flows0, "no state for a SYN");
    let cookie = s.seq;
    // 2. The client's ACK proves the handshake: a SYN goes to the real server, with the
    //    client's ISN and MSS (from the cookie).
    let (iface, s) = one(from_client(e, sport, dport, TCP_ACK, isn + 1, cookie + 1, b""));
    assert_eq!(iface, INT);
    assert_eq!((s.src, s.dst, s.dport, s.flags), (CLIENT, RS1, dport, TCP_SYN));
    assert_eq!((s.seq, s.mss), (isn, Some(1400)));
    assert_eq!(e.counters().flows_created, flows0 + 1);
    // 3. The real server's SYN-ACK is answered by the balancer; the client sees nothing.
    let rs_isn = 77_000_000 + sport as u32;
    let (iface, s) = one(from_rs(e, dport, sport, TCP_SYN | TCP_ACK, rs_isn, isn + 1, b""));
    assert_eq!(iface, INT);
    assert_eq!((s.src, s.sport, s.dst, s.dport, s.flags), (CLIENT, sport, RS1, dport, TCP_ACK));
    assert_eq!((s.seq, s.ack), (isn + 1, rs_isn + 1));
    Client { sport, isn, cookie, rs_isn }
}

#[test]
fn proxied_handshake_then_translated_sequence_numbers() {
    let mut e = engine("on", 1000);
    let c = handshake(&mut e, 40000, 80);
    // Client data: its ack (our cookie space) maps into the server's space.
    let (_, s) =
        one(from_client(&mut e, c.sport, 80, TCP_ACK | TCP_PSH, c.isn + 1, c.cookie + 1, b"GET / HTTP/1.0\r\n\r\n"));
    assert_eq!((s.dst, s.seq, s.ack), (RS1, c.isn + 1, c.rs_isn + 1));
    assert_eq!(s.payload, b"GET / HTTP/1.0\r\n\r\n");
    // Server data: its sequence numbers map into the cookie space.
    let (_, s) = one(from_rs(&mut e, 80, c.sport, TCP_ACK | TCP_PSH, c.rs_isn + 1, c.isn + 19, b"HTTP/1.0 200 OK\r\n"));
    assert_eq!((s.src, s.sport, s.dst, s.seq, s.ack), (VIP, 80, CLIENT, c.cookie + 1, c.isn + 19));
    let c2 = e.counters();
    assert_eq!((c2.cookies_sent, c2.cookies_validated, c2.cookies_failed), (1, 1, 0));
    assert_eq!(drops(&e), vec![]);
}

#[test]
fn client_data_before_the_server_answers_is_held_then_sent() {
    let mut e = engine("on", 1000);
    let isn = 500u32;
    let syn = with_macs(tcp4(CLIENT, 40001, VIP, 80, TCP_SYN, isn, 0, b""), CLIENT_MAC, LB_EXT);
    let (_, s) = one(e.inject(EXT, &syn, S));
    let cookie = s.seq;
    assert_eq!(s.mss, Some(1460));
    let (_, s) = one(from_client(&mut e, 40001, 80, TCP_ACK, isn + 1, cookie + 1, b""));
    assert_eq!(s.mss, Some(536), "no MSS from the client: the RFC default");
    // Data before the server's SYN-ACK: held.
    assert!(from_client(&mut e, 40001, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, b"hello").is_empty());
    let out = from_rs(&mut e, 80, 40001, TCP_SYN | TCP_ACK, 9000, isn + 1, b"");
    assert_eq!(out.len(), 2, "our ACK to the server, then the held data");
    let a = seg(&out[0].1);
    let d = seg(&out[1].1);
    assert_eq!((a.flags, a.ack), (TCP_ACK, 9001));
    assert_eq!((d.payload.as_slice(), d.ack, d.dst), (&b"hello"[..], 9001, RS1));
    assert_eq!(drops(&e), vec![]);
    // Held, then sent: counted once, as when the server answers first.
    let mut first = engine("on", 1000);
    let (_, s) = one(first.inject(EXT, &syn, S));
    let cookie = s.seq;
    one(from_client(&mut first, 40001, 80, TCP_ACK, isn + 1, cookie + 1, b""));
    assert_eq!(from_rs(&mut first, 80, 40001, TCP_SYN | TCP_ACK, 9000, isn + 1, b"").len(), 1);
    one(from_client(&mut first, 40001, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, b"hello"));
    let packets = |e: &MemEngine| {
        let c = e.workers[0].core().list_conns();
        assert_eq!(c.len(), 1);
        (c[0].pkts_in, c[0].pkts_out, c[0].state.clone())
    };
    assert_eq!(packets(&e), packets(&first), "(packets in, out, state)");
}

#[test]
fn bad_cookies_and_floods_leave_no_state() {
    let mut e = engine("on", 1000);
    // A flood of SYNs from many sources: answered, no table entry.
    for i in 0..5000u32 {
        let src = [10, 0, 1, 2 + (i % 90) as u8]; // Not the VIP (a martian source).
        let f = with_macs(tcp4(src, 1024 + (i % 60000) as u16, VIP, 80, TCP_SYN, i, 0, b""), CLIENT_MAC, LB_EXT);
        let _ = e.inject(EXT, &f, S);
    }
    let c = e.counters();
    assert_eq!((c.cookies_sent, c.flows_created), (5000, 0));
    // ACKs with made-up cookies: dropped, counted, still no state.
    for i in 0..100u32 {
        assert!(from_client(&mut e, 41000, 80, TCP_ACK, 7, i * 7919, b"").is_empty());
    }
    let c = e.counters();
    assert_eq!((c.cookies_failed, c.flows_created), (100, 0));
    assert_eq!(drops(&e), vec![("bad_cookie", 100)]);
    // A legitimate client still gets through.
    handshake(&mut e, 42000, 80);
}

/// Segments whose IPv4 header checksum fails (corrupted on the wire: Linux drops them in
/// `ip_rcv`) are not answered nor rebuilt by the proxy: a SYN gets no SYN-ACK, a cookie ACK
/// opens nothing, the real server's SYN-ACK is not acknowledged. Each would have gone out
/// with a fresh header checksum, the corruption laundered. The good copies go on as usual.
#[test]
fn segments_with_a_bad_header_checksum_get_nothing_from_the_proxy() {
    let mut e = engine("on", 1000);
    let isn = 700u32;
    let syn = with_macs(tcp4(CLIENT, 40002, VIP, 80, TCP_SYN, isn, 0, b""), CLIENT_MAC, LB_EXT);
    assert!(e.inject(EXT, &bad_ip_csum(syn.clone()), S).is_empty(), "no SYN-ACK");
    assert_eq!(e.counters().cookies_sent, 0);
    let (_, s) = one(e.inject(EXT, &syn, S));
    let cookie = s.seq;
    let ack = with_macs(tcp4(CLIENT, 40002, VIP, 80, TCP_ACK, isn + 1, cookie + 1, b""), CLIENT_MAC, LB_EXT);
    assert!(e.inject(EXT, &bad_ip_csum(ack.clone()), S).is_empty(), "no SYN to the real server");
    assert_eq!((e.counters().cookies_validated, e.counters().flows_created), (0, 0));
    assert_eq!(one(e.inject(EXT, &ack, S)).1.flags, TCP_SYN);
    let sa = with_macs(tcp4(RS1, 80, CLIENT, 40002, TCP_SYN | TCP_ACK, 9000, isn + 1, b""), RS1_MAC, LB_INT);
    assert!(e.inject(INT, &bad_ip_csum(sa.clone()), S).is_empty(), "not acknowledged");
    assert_eq!(one(e.inject(INT, &sa, S)).1.flags, TCP_ACK);
    assert_eq!(drops(&e), vec![("ip_bad_csum", 3)]);
}

/// Segments whose TCP checksum fails (corrupted on the wire: Linux's SYNPROXY target checks
/// it before anything) are not answered nor rebuilt by the proxy: a SYN whose sequence number
/// was corrupted gets no SYN-ACK acknowledging it, a cookie ACK (its window corrupted, the
/// cookie still good) opens nothing, the real server's SYN-ACK whose ISN was corrupted does
/// not set the connection's offset. Each would have gone out with fresh checksums over the
/// corrupted fields. The good copies go on as usual.
#[test]
fn segments_with_a_bad_tcp_checksum_get_nothing_from_the_proxy() {
    let mut e = engine("on", 1000);
    let isn = 700u32;
    let (seq_lo, win_lo) = (14 + 20 + 7, 14 + 20 + 15);
    let syn = with_macs(tcp4(CLIENT, 40002, VIP, 80, TCP_SYN, isn, 0, b""), CLIENT_MAC, LB_EXT);
    assert!(e.inject(EXT, &corrupt(syn.clone(), seq_lo, 0x01), S).is_empty(), "no SYN-ACK");
    assert_eq!(e.counters().cookies_sent, 0);
    let (_, s) = one(e.inject(EXT, &syn, S));
    assert_eq!(s.ack, isn + 1);
    let cookie = s.seq;
    let ack = with_macs(tcp4(CLIENT, 40002, VIP, 80, TCP_ACK, isn + 1, cookie + 1, b""), CLIENT_MAC, LB_EXT);
    assert!(e.inject(EXT, &corrupt(ack.clone(), win_lo, 0x01), S).is_empty(), "no SYN to the real server");
    assert_eq!((e.counters().cookies_validated, e.counters().flows_created), (0, 0));
    assert_eq!(one(e.inject(EXT, &ack, S)).1.flags, TCP_SYN);
    let sa = with_macs(tcp4(RS1, 80, CLIENT, 40002, TCP_SYN | TCP_ACK, 9000, isn + 1, b""), RS1_MAC, LB_INT);
    assert!(e.inject(INT, &corrupt(sa.clone(), seq_lo, 0x01), S).is_empty(), "not acknowledged");
    let (_, a) = one(e.inject(INT, &sa, S));
    assert_eq!((a.flags, a.ack), (TCP_ACK, 9001));
    assert_eq!(drops(&e), vec![("l4_bad_csum", 3)]);
}

#[test]
fn auto_engages_above_the_half_open_threshold() {
    let mut e = engine("auto", 2);
    // Two half-open connections the ordinary way.
    for sport in [50000u16, 50001] {
        let (_, s) = one(from_client(&mut e, sport, 80, TCP_SYN, 1, 0, b""));
        assert_eq!((s.dst, s.flags), (RS1, TCP_SYN), "forwarded: below the threshold");
    }
    // The third SYN is answered with a cookie.
    let (_, s) = one(from_client(&mut e, 50002, 80, TCP_SYN, 1, 0, b""));
    assert_eq!((s.dst, s.flags), (CLIENT, TCP_SYN | TCP_ACK));
    // Once one of them is established, below the threshold again.
    let _ = from_rs(&mut e, 80, 50000, TCP_SYN | TCP_ACK, 5, 2, b"");
    let _ = from_client(&mut e, 50000, 80, TCP_ACK, 2, 6, b"");
    let (_, s) = one(from_client(&mut e, 50003, 80, TCP_SYN, 1, 0, b""));
    assert_eq!(s.dst, RS1);
}

#[test]
fn off_never_proxies_and_server_refusal_reaches_the_client() {
    let mut e = engine("off", 0);
    let (_, s) = one(from_client(&mut e, 50000, 80, TCP_SYN, 1, 0, b""));
    assert_eq!(s.dst, RS1);
    // A proxied connection the server refuses: the client gets the reset in its space.
    let mut e = engine("on", 1000);
    let (_, s) = one(from_client(&mut e, 50001, 80, TCP_SYN, 100, 0, b""));
    let cookie = s.seq;
    one(from_client(&mut e, 50001, 80, TCP_ACK, 101, cookie + 1, b""));
    let (iface, s) = one(from_rs(&mut e, 80, 50001, TCP_RST | TCP_ACK, 0, 101, b""));
    assert_eq!((iface, s.flags & TCP_RST, s.seq, s.src), (EXT, TCP_RST, cookie + 1, VIP));
}

#[test]
fn ftp_through_the_proxy_composes_with_the_gateway() {
    let mut e = engine("on", 1000);
    let c = handshake(&mut e, 40100, 21);
    let mut sseq = c.rs_isn + 1; // the server's next byte (its own space)
    let mut cseq = c.isn + 1;
    let mut reply = |e: &mut MemEngine, data: &[u8], cseq: u32| {
        let (_, s) = one(from_rs(e, 21, c.sport, TCP_ACK | TCP_PSH, sseq, cseq, data));
        sseq += data.len() as u32;
        s
    };
    let s = reply(&mut e, b"220 hi\r\n", cseq);
    assert_eq!(s.seq, c.cookie + 1);
    let (_, s) = one(from_client(&mut e, c.sport, 21, TCP_ACK | TCP_PSH, cseq, c.cookie + 9, b"PASV\r\n"));
    assert_eq!(s.ack, c.rs_isn + 9);
    cseq += 6;
    let s = reply(&mut e, b"227 Entering Passive Mode (10,0,2,2,117,48).\r\n", cseq);
    assert_eq!(s.payload, b"227 Entering Passive Mode (10,0,1,100,117,48).\r\n");
    assert_eq!(s.seq, c.cookie + 9);
    // The next server byte: +2 from the rewrite, + the proxy offset.
    let s = reply(&mut e, b"150 ok\r\n", cseq);
    assert_eq!(s.seq, c.cookie + 9 + 48);
    // The client's ack of everything maps back through both.
    let (_, s) = one(from_client(&mut e, c.sport, 21, TCP_ACK, cseq, c.cookie + 9 + 48 + 8, b""));
    assert_eq!(s.ack, sseq);
    // The data connection follows the expectation, not the proxy.
    let (_, s) = one(from_client(&mut e, 40101, 30000, TCP_SYN, 5, 0, b""));
    assert_eq!((s.dst, s.dport, s.flags), (RS1, 30000, TCP_SYN));
    assert_eq!(drops(&e), vec![]);
}

/// The real server's SYN-ACK never reaches the client (the proxy answers it), but the gateway
/// still learns the server's ISN from it: a first reply segment after a hole (the start of
/// the line lost) is not read as a line, so text inside a line cannot answer a PASV.
#[test]
fn ftp_reply_stream_starts_at_the_servers_isn() {
    let mut e = engine("on", 1000);
    let c = handshake(&mut e, 40102, 21);
    let (_, s) = one(from_client(&mut e, c.sport, 21, TCP_ACK | TCP_PSH, c.isn + 1, c.cookie + 1, b"PASV\r\n"));
    assert_eq!(s.payload, b"PASV\r\n");
    // "220 banner " (11 bytes) was lost; the rest of that line looks like a 227.
    let tail = b"227 Entering Passive Mode (10,0,2,9,117,48).\r\n";
    let (_, s) = one(from_rs(&mut e, 21, c.sport, TCP_ACK | TCP_PSH, c.rs_isn + 1 + 11, c.isn + 7, tail));
    assert_eq!(s.payload, tail, "not rewritten: the tail of a line");
    assert_eq!(s.seq, c.cookie + 1 + 11);
    // No data connection was announced: a SYN to the port named finds no expectation.
    assert!(from_client(&mut e, 40103, 30000, TCP_SYN, 5, 0, b"").is_empty());
}

#[test]
fn ipv6_proxied_handshake() {
    let text = config_text(
        r#"
[[service]]
name = "web6"
vip = "fd00:1::100"
ports = [80]
forward = "nat"
syn_proxy = "on"

[[service.real_server]]
address = "fd00:2::2"
"#,
    );
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 1);
    let c6 =
        |flags, seq, ack, data: &[u8]| with_macs(tcp6(C6, 40000, VIP6, 80, flags, seq, ack, data), CLIENT_MAC, LB_EXT);
    let r6 = |flags, seq, ack, data: &[u8]| with_macs(tcp6(RS6, 80, C6, 40000, flags, seq, ack, data), RS1_MAC, LB_INT);
    let v6 = |f: &[u8]| -> (Vec<u8>, Vec<u8>, u32, u32, u8, Option<u16>) {
        verify_checksums(f).expect("checksums");
        let p = parse(f).unwrap();
        let l4 = p.l4;
        (
            f[p.l3 + 8..p.l3 + 24].to_vec(),
            f[p.l3 + 24..p.l3 + 40].to_vec(),
            u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap()),
            u32::from_be_bytes(f[l4 + 8..l4 + 12].try_into().unwrap()),
            f[l4 + 13] & 0x3f,
            ferrovs_engine::pipeline::synproxy::mss_option(&f[l4..p.end]),
        )
    };
    let out = e.inject(EXT, &c6(TCP_SYN, 100, 0, b""), S);
    let (src, dst, cookie, ack, flags, mss) = v6(&out[0].1);
    assert_eq!(
        (src.as_slice(), dst.as_slice(), ack, flags, mss),
        (&VIP6[..], &C6[..], 101, TCP_SYN | TCP_ACK, Some(1440))
    );
    assert_eq!(e.counters().flows_created, 0);
    let out = e.inject(EXT, &c6(TCP_ACK, 101, cookie + 1, b""), S);
    let (_, dst, seq, _, flags, _) = v6(&out[0].1);
    assert_eq!((dst.as_slice(), seq, flags), (&RS6[..], 100, TCP_SYN));
    let out = e.inject(INT, &r6(TCP_SYN | TCP_ACK, 7000, 101, b""), S);
    let (_, dst, seq, ack, flags, _) = v6(&out[0].1);
    assert_eq!((dst.as_slice(), seq, ack, flags), (&RS6[..], 101, 7001, TCP_ACK));
    let out = e.inject(INT, &r6(TCP_ACK | TCP_PSH, 7001, 101, b"hi"), S);
    let (src, _, seq, _, _, _) = v6(&out[0].1);
    assert_eq!((src.as_slice(), seq), (&VIP6[..], cookie + 1));
    assert_eq!(drops(&e), vec![]);
}

/// Two workers: a SYN reaching the worker that does not own its client is answered there with
/// a cookie (stateless), not handed to the owner, so a flood's SYNs do not fill the handoff
/// rings (and drop the legitimate packets waiting in them); the owner, which may have sent no
/// cookie itself, takes the client's ACK as a cookie and opens the connection. A DR service's
/// SYNs still go to the owner, whose verified client addresses they need.
#[test]
fn a_syn_is_answered_by_the_worker_it_reaches() {
    let text = config_text(&services("on"));
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 2);
    let mut reached = [0; 2];
    for sport in 40000..40016u16 {
        let isn = 5_000 + sport as u32;
        let syn =
            with_macs(tcp4_opts(CLIENT, sport, VIP, 80, TCP_SYN, isn, 0, &opt_mss(1400), b""), CLIENT_MAC, LB_EXT);
        reached[e.rx_worker(&syn)] += 1;
        let handed = e.counters().handoff_out;
        let (iface, s) = one(e.inject(EXT, &syn, S));
        assert_eq!((iface, s.dst, s.dport, s.flags, s.ack), (EXT, CLIENT, sport, TCP_SYN | TCP_ACK, isn + 1));
        assert_eq!(e.counters().handoff_out, handed, "SYN from port {sport} handed to the owner");
        // The client's ACK (handed to the owner if it lands elsewhere) opens the connection.
        let (iface, s) = one(from_client(&mut e, sport, 80, TCP_ACK, isn + 1, s.seq + 1, b""));
        assert_eq!((iface, s.dst, s.flags, s.seq), (INT, RS1, TCP_SYN, isn));
    }
    assert!(reached[0] > 0 && reached[1] > 0, "both workers received SYNs: {reached:?}");
    let k = e.counters();
    assert_eq!((k.cookies_sent, k.cookies_validated, k.flows_created), (16, 16, 16));
    assert_eq!(drops(&e), vec![]);

    // DR: the owner answers (it keeps the verified addresses).
    let text = config_text(
        "[[service]]\nname = \"webdr\"\nvip = \"10.0.1.101\"\nports = [80]\nforward = \"dr\"\nsyn_proxy = \"on\"\n\
         [[service.real_server]]\naddress = \"10.0.2.2\"\n",
    );
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 2);
    let mut handed = 0;
    for sport in 40000..40016u16 {
        let syn = with_macs(tcp4(CLIENT, sport, VIP_DR, 80, TCP_SYN, 100, 0, b""), CLIENT_MAC, LB_EXT);
        let (iface, s) = one(e.inject(EXT, &syn, S));
        assert_eq!((iface, s.flags), (EXT, TCP_SYN | TCP_ACK));
        handed = e.counters().handoff_out;
    }
    assert!(handed > 0, "a DR SYN reaching the other worker goes to the owner");
}

#[test]
fn dr_verifies_the_client_address_then_forwards() {
    let text = config_text(
        r#"
[[service]]
name = "webdr"
vip = "10.0.1.101"
ports = [80]
forward = "dr"
syn_proxy = "on"

[[service.real_server]]
address = "10.0.2.2"
"#,
    );
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 1);
    let c = |flags, seq, ack| with_macs(tcp4(CLIENT, 40000, VIP_DR, 80, flags, seq, ack, b""), CLIENT_MAC, LB_EXT);
    // The first SYN: answered with an unacceptable acknowledgement (the cookie).
    let out = e.inject(EXT, &c(TCP_SYN, 100, 0), S);
    let (iface, s) = one(out);
    assert_eq!((iface, s.src, s.dst, s.flags), (EXT, VIP_DR, CLIENT, TCP_SYN | TCP_ACK));
    assert_ne!(s.ack, 101);
    assert_eq!(e.counters().flows_created, 0);
    // A reset with another sequence number verifies nothing.
    assert!(e.inject(EXT, &c(TCP_RST, s.ack ^ 0x55, 0), S).is_empty());
    assert!(e.inject(EXT, &c(TCP_SYN, 100, 0), S)[0].1[0..6] == CLIENT_MAC, "still unverified");
    // The client's stack resets it with the cookie: verified, consumed.
    assert!(e.inject(EXT, &c(TCP_RST, s.ack, 0), S).is_empty());
    assert_eq!(e.counters().cookies_validated, 1);
    // Its SYN retransmission goes to the real server (DR: MAC rewrite only).
    let out = e.inject(EXT, &c(TCP_SYN, 100, 0), S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[0..6], RS1_MAC);
    assert_eq!(seg(&out[0].1).dst, VIP_DR);
    assert_eq!(drops(&e), vec![("no_flow", 1), ("syn_verified", 1)]);
}

/// The DR proxy's verifying reset is taken only with both checksums good: a source address
/// or sequence number corrupted on the wire (a bad IPv4 header checksum, a bad TCP checksum)
/// verifies nothing, dropped as such; the good copy verifies the address.
#[test]
fn dr_a_verifying_reset_with_a_bad_checksum_verifies_nothing() {
    let text = config_text(
        r#"
[[service]]
name = "webdr"
vip = "10.0.1.101"
ports = [80]
forward = "dr"
syn_proxy = "on"

[[service.real_server]]
address = "10.0.2.2"
"#,
    );
    let mut e = MemEngine::new(ferrovs_cfg::Config::from_str(&text, "t.toml").unwrap(), 1);
    let c = |flags, seq, ack| with_macs(tcp4(CLIENT, 40000, VIP_DR, 80, flags, seq, ack, b""), CLIENT_MAC, LB_EXT);
    let (_, s) = one(e.inject(EXT, &c(TCP_SYN, 100, 0), S));
    let rst = c(TCP_RST, s.ack, 0);
    assert!(e.inject(EXT, &bad_ip_csum(rst.clone()), S).is_empty());
    assert!(e.inject(EXT, &corrupt(rst.clone(), 14 + 20 + 15, 0x01), S).is_empty(), "its window corrupted");
    assert_eq!(e.counters().cookies_validated, 0);
    assert!(e.inject(EXT, &c(TCP_SYN, 100, 0), S)[0].1[0..6] == CLIENT_MAC, "still unverified");
    assert_eq!(drops(&e), vec![("ip_bad_csum", 1), ("l4_bad_csum", 1)]);
    assert!(e.inject(EXT, &rst, S).is_empty());
    assert_eq!(e.counters().cookies_validated, 1);
    assert_eq!(e.inject(EXT, &c(TCP_SYN, 100, 0), S)[0].1[0..6], RS1_MAC, "verified");
}

/// ICMP errors about a proxied connection reach each end with the quoted segment in that
/// end's own sequence space: a "fragmentation needed" from the client's side quotes a server
/// segment as the client saw it (cookie space), and the real server's stack ignores an error
/// whose quoted sequence number is outside its send window (Linux `tcp_v4_err`,
/// OUTOFWINDOWICMPS): path MTU discovery would never work for a proxied connection.
#[test]
fn icmp_errors_quote_each_ends_own_sequence_numbers() {
    let mut e = engine("on", 1000);
    let c = handshake(&mut e, 40300, 80);
    // The server's first data segment, as it left the balancer towards the client.
    let quoted = tcp4(VIP, 80, CLIENT, 40300, TCP_ACK | TCP_PSH, c.cookie + 1, c.isn + 1, &[0x41; 64]);
    let err = with_macs(icmp4_error_whole(CLIENT, VIP, 3, 4, 576, &quoted), CLIENT_MAC, LB_EXT);
    let out = e.inject(EXT, &err, S);
    assert_eq!(out.len(), 1, "{:?}", drops(&e));
    let (iface, f) = &out[0];
    assert_eq!(*iface, INT);
    verify_checksums(f).unwrap();
    verify_quoted_checksum(f).unwrap();
    let q = 14 + 20 + 8; // the quoted IP header
    assert_eq!(&f[q + 12..q + 16], &RS1, "quoted source: the real server");
    let seq = u32::from_be_bytes(f[q + 24..q + 28].try_into().unwrap());
    assert_eq!(seq, c.rs_isn + 1, "quoted sequence number in the real server's own space");
    // From the server's side about a client segment: the client's sequence numbers are its
    // own throughout, unchanged.
    let quoted = tcp4(CLIENT, 40300, RS1, 80, TCP_ACK | TCP_PSH, c.isn + 1, c.rs_isn + 1, &[0x42; 64]);
    let err = with_macs(icmp4_error_whole(RS1, CLIENT, 3, 4, 576, &quoted), RS1_MAC, LB_INT);
    let (iface, f) = &e.inject(INT, &err, S)[0];
    assert_eq!(*iface, EXT);
    verify_checksums(f).unwrap();
    verify_quoted_checksum(f).unwrap();
    assert_eq!(u32::from_be_bytes(f[q + 24..q + 28].try_into().unwrap()), c.isn + 1);
    assert_eq!(drops(&e), vec![]);
}

/// Our SYN to the real server is lost (or the server is slow): the balancer is the only one
/// that can send it again (the client believes it is connected and retransmits its data).
/// A client segment a second or more after our last SYN becomes that SYN again (its data is
/// dropped: an earlier copy is held, and nobody acknowledged it); before, every client
/// retransmission was held and dropped and the connection hung until the client gave up.
#[test]
fn a_lost_syn_to_the_real_server_is_sent_again_on_the_clients_retransmission() {
    let mut e = engine("on", 1000);
    let isn = 9000u32;
    let syn = with_macs(tcp4_opts(CLIENT, 40400, VIP, 80, TCP_SYN, isn, 0, &opt_mss(1400), b""), CLIENT_MAC, LB_EXT);
    let (_, s) = one(e.inject(EXT, &syn, S));
    let cookie = s.seq;
    let (_, s) = one(from_client(&mut e, 40400, 80, TCP_ACK, isn + 1, cookie + 1, b""));
    assert_eq!((s.dst, s.flags, s.seq), (RS1, TCP_SYN, isn));
    // That SYN is lost. The client's request: held.
    let get = b"GET / HTTP/1.0\r\n\r\n";
    assert!(client_tcp(&mut e, S + S / 5, 40400, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, get).is_empty());
    // Its retransmission after its RTO, still no answer: our SYN once more.
    let (iface, s) = one(client_tcp(&mut e, S + 3 * S / 2, 40400, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, get));
    assert_eq!(iface, INT);
    assert_eq!((s.src, s.dst, s.dport, s.flags, s.seq, s.ack), (CLIENT, RS1, 80, TCP_SYN, isn, 0));
    assert_eq!((s.mss, s.payload.len()), (Some(1400), 0));
    // Not again before another second has passed.
    assert!(client_tcp(&mut e, S + 2 * S, 40400, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, get).is_empty());
    // The server answers: our ACK, then the held request (both held copies).
    let out = rs_tcp(&mut e, S + 2 * S, RS1, 80, 40400, TCP_SYN | TCP_ACK, 5000, isn + 1, b"");
    assert_eq!(out.len(), 3, "our ACK, then the held copies of the request");
    assert_eq!((seg(&out[0].1).flags, seg(&out[0].1).ack), (TCP_ACK, 5001));
    let d = seg(&out[1].1);
    assert_eq!((d.dst, d.seq, d.ack, d.payload.as_slice()), (RS1, isn + 1, 5001, &get[..]));
    assert_eq!(e.counters().proxy_syn_retries, 1);
    assert_eq!(drops(&e), vec![]);
}

/// Our SYN sent again is what the connection's state must follow, not the client segment it
/// was made from: the real server has not answered, so the connection is still half-open
/// (SYN_RECV, on its timeout, in the count that engages `auto`). Before, the client's ACK
/// was tracked instead, and the entry went to ESTABLISHED before the server ever answered.
#[test]
fn a_syn_sent_again_leaves_the_connection_half_open() {
    let mut e = engine("on", 1000);
    let (isn, cookie) = waiting(&mut e, 40800);
    let get = b"GET / HTTP/1.0\r\n\r\n";
    let (_, s) = one(client_tcp(&mut e, S + 3 * S / 2, 40800, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, get));
    assert_eq!((s.dst, s.flags, s.seq), (RS1, TCP_SYN, isn));
    assert_eq!(only_conn(&e), ("SYN_RECV".to_string(), 2, 0), "the SYN tracked, not the client's ACK");
    // The server answers that SYN: the splice completes as for the first one.
    let (_, a) = one(rs_tcp(&mut e, 2 * S, RS1, 80, 40800, TCP_SYN | TCP_ACK, 7_000, isn + 1, b""));
    assert_eq!((a.flags, a.seq, a.ack), (TCP_ACK, isn + 1, 7_001));
    let (_, d) = one(client_tcp(&mut e, 2 * S, 40800, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, get));
    assert_eq!((d.dst, d.seq, d.ack, d.payload.as_slice()), (RS1, isn + 1, 7_001, &get[..]));
    assert_eq!(only_conn(&e).0, "ESTABLISHED");
    assert_eq!(e.counters().proxy_syn_retries, 1);
    assert_eq!(drops(&e), vec![]);

    // An FTP control connection: the SYN sent again goes through the gateway as the first
    // did, its MSS clamped the same (MTU 1500 - 40 - the gateway's growth, 12).
    let mut e = engine("on", 1000);
    let syn = with_macs(tcp4_opts(CLIENT, 40801, VIP, 21, TCP_SYN, 10, 0, &opt_mss(1460), b""), CLIENT_MAC, LB_EXT);
    let (_, s) = one(e.inject(EXT, &syn, S));
    let (_, first) = one(from_client(&mut e, 40801, 21, TCP_ACK, 11, s.seq + 1, b""));
    let (_, again) = one(client_tcp(&mut e, 3 * S, 40801, 21, TCP_ACK | TCP_PSH, 11, s.seq + 1, b"USER a\r\n"));
    assert_eq!((first.flags, first.mss), (TCP_SYN, Some(1448)));
    assert_eq!((again.flags, again.seq, again.mss, again.payload.len()), (TCP_SYN, 10, Some(1448), 0));
    assert_eq!(only_conn(&e).0, "SYN_RECV");
}

/// Once the real server's SYN-ACK is answered, both handshakes are complete: the proxied
/// connection is ESTABLISHED, on that timeout and out of the half-open count (IPVS's SYN
/// proxy in DPVS marks it so on the SYN-ACK). Before, it stayed in SYN_RECV until the
/// client's next segment, counted half-open, and `auto` engaged for connections long open.
#[test]
fn the_servers_syn_ack_establishes_a_proxied_connection() {
    let mut e = engine("on", 1000);
    handshake(&mut e, 40900, 80);
    let c = e.workers[0].core().list_conns();
    assert_eq!(c[0].state, "ESTABLISHED", "{c:?}");
    assert!(c[0].expires_in_s >= 899, "on the ESTABLISHED timeout (900 s), not SYN_RECV's (60 s): {c:?}");
    assert_eq!((c[0].pkts_in, c[0].pkts_out), (1, 1));

    // In auto: A is half-open the ordinary way (forwarded at 0 < 1), B proxied (at 1).
    let mut e = engine("auto", 1);
    let (_, s) = one(from_client(&mut e, 50000, 80, TCP_SYN, 1, 0, b""));
    assert_eq!(s.dst, RS1);
    let (_, s) = one(from_client(&mut e, 50001, 80, TCP_SYN, 100, 0, b""));
    assert_eq!(s.flags, TCP_SYN | TCP_ACK, "proxied");
    one(from_client(&mut e, 50001, 80, TCP_ACK, 101, s.seq + 1, b""));
    // A completes; B's server answers: nothing half-open left, the next SYN is forwarded.
    one(from_rs(&mut e, 80, 50000, TCP_SYN | TCP_ACK, 5, 2, b""));
    one(from_client(&mut e, 50000, 80, TCP_ACK, 2, 6, b""));
    let (_, a) = one(from_rs(&mut e, 80, 50001, TCP_SYN | TCP_ACK, 9_000, 101, b""));
    assert_eq!((a.dst, a.flags), (RS1, TCP_ACK));
    let (_, s) = one(from_client(&mut e, 50002, 80, TCP_SYN, 1, 0, b""));
    assert_eq!((s.dst, s.flags), (RS1, TCP_SYN), "nothing half-open left: forwarded");
}

/// The (state, packets in, packets out) of the one connection in the table.
fn only_conn(e: &MemEngine) -> (String, u64, u64) {
    let c = e.workers[0].core().list_conns();
    assert_eq!(c.len(), 1, "{c:?}");
    (c[0].state.clone(), c[0].pkts_in, c[0].pkts_out)
}

/// A proxied connection closed both ways (TIME_WAIT), on CLIENT:`sport` -> VIP:80.
fn closed(e: &mut MemEngine, sport: u16) -> Client {
    let c = handshake(e, sport, 80);
    one(from_client(e, sport, 80, TCP_ACK | TCP_FIN, c.isn + 1, c.cookie + 1, b""));
    one(from_rs(e, 80, sport, TCP_ACK | TCP_FIN, c.rs_isn + 1, c.isn + 2, b""));
    one(from_client(e, sport, 80, TCP_ACK, c.isn + 2, c.cookie + 2, b""));
    assert_eq!(only_conn(e).0, "TIME_WAIT");
    c
}

/// A SYN on the tuple of a closing connection (the port reused) is a new connection: with
/// the SYN proxy on, it is answered with a cookie like any new SYN, and the closing entry is
/// replaced only once the client's ACK proves the handshake. Before, the reuse path scheduled
/// it straight away: the SYN reached the real server unverified (an attacker closes a
/// connection, then floods SYNs on its tuple), and so did a SYN on an expired entry.
#[test]
fn a_syn_reusing_a_closing_connections_tuple_is_answered_with_a_cookie() {
    let mut e = engine("on", 1000);
    closed(&mut e, 40500);
    let isn = 3_000_000u32;
    let (iface, s) = one(from_client(&mut e, 40500, 80, TCP_SYN, isn, 0, b""));
    assert_eq!(
        (iface, s.dst, s.flags, s.ack),
        (EXT, CLIENT, TCP_SYN | TCP_ACK, isn + 1),
        "a cookie, not a SYN to the server"
    );
    assert_eq!((e.counters().cookies_sent, e.counters().flows_reused), (2, 0));
    assert_eq!(only_conn(&e).0, "TIME_WAIT", "unverified: the closing entry stays");
    // A segment without a valid cookie is the old connection's, as before (no bad_cookie).
    let (_, o) = one(from_client(&mut e, 40500, 80, TCP_ACK, isn + 1, s.seq ^ 0x4000, b""));
    assert_eq!(o.dst, RS1);
    assert_eq!((e.counters().cookies_failed, only_conn(&e).0), (0, "TIME_WAIT".to_string()));
    // The client's ACK carries the cookie: the old entry goes, the new connection opens.
    let (iface, s2) = one(from_client(&mut e, 40500, 80, TCP_ACK, isn + 1, s.seq + 1, b""));
    assert_eq!((iface, s2.dst, s2.flags, s2.seq), (INT, RS1, TCP_SYN, isn));
    let c = e.counters();
    assert_eq!((c.cookies_validated, c.flows_reused), (2, 1));
    assert_eq!(only_conn(&e).0, "SYN_RECV");
    let (_, a) = one(from_rs(&mut e, 80, 40500, TCP_SYN | TCP_ACK, 123_456, isn + 1, b""));
    assert_eq!((a.flags, a.seq, a.ack), (TCP_ACK, isn + 1, 123_457));
    let (_, d) = one(from_client(&mut e, 40500, 80, TCP_ACK | TCP_PSH, isn + 1, s.seq + 1, b"x"));
    assert_eq!((d.dst, d.seq, d.ack), (RS1, isn + 1, 123_457));
    assert_eq!(drops(&e), vec![]);

    // A SYN on an entry that expired (not reaped yet; ESTABLISHED, not closing): a cookie too.
    let mut e = engine("on", 1000);
    let c = handshake(&mut e, 40501, 80);
    one(from_client(&mut e, 40501, 80, TCP_ACK, c.isn + 1, c.cookie + 1, b"x"));
    assert_eq!(only_conn(&e).0, "ESTABLISHED");
    let later = 2000 * S;
    let out = client_tcp(&mut e, later, 40501, 80, TCP_SYN, isn, 0, b"");
    let (iface, s) = one(out);
    assert_eq!((iface, s.dst, s.flags), (EXT, CLIENT, TCP_SYN | TCP_ACK));
    let (iface, s2) = one(client_tcp(&mut e, later, 40501, 80, TCP_ACK, isn + 1, s.seq + 1, b""));
    assert_eq!((iface, s2.dst, s2.flags, s2.seq), (INT, RS1, TCP_SYN, isn));
}

/// The client's side of a proxied handshake on CLIENT:`sport` -> VIP:80 (the cookie, then
/// the ACK that opens the connection): our SYN is out to the real server, unanswered. Returns
/// (client ISN, cookie).
fn waiting(e: &mut MemEngine, sport: u16) -> (u32, u32) {
    let isn = 2_000_000 + sport as u32;
    let (_, s) = one(from_client(e, sport, 80, TCP_SYN, isn, 0, b""));
    let cookie = s.seq;
    let (_, s) = one(from_client(e, sport, 80, TCP_ACK, isn + 1, cookie + 1, b""));
    assert_eq!((s.dst, s.flags, s.seq), (RS1, TCP_SYN, isn));
    assert_eq!(only_conn(e), ("SYN_RECV".to_string(), 1, 0));
    (isn, cookie)
}

/// While our SYN waits for the real server's answer (RFC 793 SYN-SENT), a server segment is
/// acceptable only if it acknowledges that SYN (ack = ISN + 1) and carries SYN or RST. Before,
/// any SYN-ACK completed the splice (a forged or stale one set a wrong sequence offset for the
/// whole connection), any reset reached the client, and other segments moved the state to
/// ESTABLISHED before being dropped. Now they are dropped, counted, before any account, and
/// the connection still waits for the right SYN-ACK.
#[test]
fn server_segments_not_acknowledging_our_syn_are_dropped_while_waiting() {
    let mut e = engine("on", 1000);
    let (isn, cookie) = waiting(&mut e, 40600);
    // A SYN-ACK acknowledging something else (forged, or stale from an earlier connection).
    for ack in [isn, isn + 2, 0x1234_5678] {
        assert!(from_rs(&mut e, 80, 40600, TCP_SYN | TCP_ACK, 666_000, ack, b"").is_empty());
    }
    // Resets not acknowledging our SYN: without ACK, or with a wrong one.
    assert!(from_rs(&mut e, 80, 40600, TCP_RST, 1, 0, b"").is_empty());
    assert!(from_rs(&mut e, 80, 40600, TCP_RST | TCP_ACK, 1, isn + 7, b"").is_empty());
    // Neither SYN nor RST: a bare ACK or data, even with the right acknowledgement.
    assert!(from_rs(&mut e, 80, 40600, TCP_ACK, 5, isn + 1, b"").is_empty());
    assert!(from_rs(&mut e, 80, 40600, TCP_ACK | TCP_PSH, 5, isn + 1, b"x").is_empty());
    assert_eq!(drops(&e), vec![("proxy_unacceptable", 7)]);
    assert_eq!(only_conn(&e), ("SYN_RECV".to_string(), 1, 0), "no state or account changed");
    // The real SYN-ACK: answered, and the offset is its own.
    let (_, a) = one(from_rs(&mut e, 80, 40600, TCP_SYN | TCP_ACK, 9_000, isn + 1, b""));
    assert_eq!((a.dst, a.flags, a.seq, a.ack), (RS1, TCP_ACK, isn + 1, 9_001));
    let (_, d) = one(from_client(&mut e, 40600, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, b"GET"));
    assert_eq!((d.dst, d.seq, d.ack), (RS1, isn + 1, 9_001));
    let (_, r) = one(from_rs(&mut e, 80, 40600, TCP_ACK | TCP_PSH, 9_001, isn + 4, b"OK"));
    assert_eq!((r.dst, r.seq, r.ack), (CLIENT, cookie + 1, isn + 4));
    assert_eq!(only_conn(&e), ("ESTABLISHED".to_string(), 2, 2));
    assert_eq!(drops(&e), vec![("proxy_unacceptable", 7)]);

    // A server reset acknowledging our SYN still reaches the client (refused).
    let mut e = engine("on", 1000);
    let (isn, cookie) = waiting(&mut e, 40601);
    let (iface, s) = one(from_rs(&mut e, 80, 40601, TCP_RST | TCP_ACK, 0, isn + 1, b""));
    assert_eq!((iface, s.dst, s.flags & TCP_RST, s.seq), (EXT, CLIENT, TCP_RST, cookie + 1));
    assert_eq!(drops(&e), vec![]);
}

/// The client resets a proxied connection while our SYN waits for the real server. Before,
/// the reset was tracked (CLOSE), then held like data, and on the server's SYN-ACK it was
/// tracked again and sent after the held data; the server's SYN-ACK was answered with our ACK
/// (the server opened a connection nobody uses). Now, as a TCP end would: the held client
/// data is discarded, the reset tracked once, the server gets a reset it accepts in SYN-RCVD
/// (seq = our ISN + 1, no ACK: Linux `tcp_check_req`), a SYN-ACK crossing it is answered with
/// a reset (seq = its ack), and nothing else of the connection goes anywhere.
#[test]
fn a_client_reset_while_waiting_resets_the_server_and_discards_held_data() {
    let mut e = engine("on", 1000);
    let (isn, cookie) = waiting(&mut e, 40700);
    assert!(from_client(&mut e, 40700, 80, TCP_ACK | TCP_PSH, isn + 1, cookie + 1, b"hello").is_empty());
    // A reset outside the window we offered (65535 unscaled) is not the client's: dropped.
    assert!(from_client(&mut e, 40700, 80, TCP_RST, isn + 1 + 70_000, 0, b"").is_empty());
    assert_eq!(drops(&e), vec![("proxy_unacceptable", 1)]);
    assert_eq!(only_conn(&e), ("SYN_RECV".to_string(), 1, 0));
    // The client's reset (after its 5 bytes): one reset to the server, in its terms.
    let (iface, r) = one(from_client(&mut e, 40700, 80, TCP_RST | TCP_ACK, isn + 6, cookie + 1, b""));
    assert_eq!(iface, INT);
    assert_eq!((r.src, r.sport, r.dst, r.dport), (CLIENT, 40700, RS1, 80));
    assert_eq!((r.flags, r.seq, r.ack, r.payload.len()), (TCP_RST, isn + 1, 0, 0));
    assert_eq!(drops(&e), vec![("proxy_unacceptable", 1), ("proxy_wait", 1)], "the held data discarded");
    assert_eq!(only_conn(&e), ("CLOSE".to_string(), 2, 0), "the reset tracked once");
    // The server's SYN-ACK (sent before our reset reached it): reset, not tracked.
    let (iface, r) = one(from_rs(&mut e, 80, 40700, TCP_SYN | TCP_ACK, 9_000, isn + 1, b""));
    assert_eq!(iface, INT);
    assert_eq!((r.src, r.sport, r.dst, r.dport), (CLIENT, 40700, RS1, 80));
    assert_eq!((r.flags, r.seq), (TCP_RST, isn + 1));
    assert_eq!(only_conn(&e), ("CLOSE".to_string(), 2, 0));
    // Nothing more of the client's goes: no SYN again after a second, no data. (A copy of
    // the handshake's last ACK, seq = ISN + 1 and ack = cookie + 1, would be a valid cookie
    // on a closing tuple: a new connection, as for any closed proxied connection.)
    let later = S + 2 * S;
    assert!(client_tcp(&mut e, later, 40700, 80, TCP_ACK | TCP_PSH, isn + 6, cookie + 1, b"more").is_empty());
    assert_eq!(e.counters().proxy_syn_retries, 0);
    assert_eq!(only_conn(&e), ("CLOSE".to_string(), 2, 0));
    let d = drops(&e);
    assert_eq!(d, vec![("proxy_unacceptable", 2), ("proxy_wait", 1)]);

    // Closed at both ends: no longer half-open (the count that engages the proxy in auto).
    let mut e = engine("auto", 1);
    let (_, s) = one(from_client(&mut e, 50000, 80, TCP_SYN, 1, 0, b""));
    assert_eq!(s.dst, RS1, "below the threshold: forwarded");
    let (_, s) = one(from_client(&mut e, 50001, 80, TCP_SYN, 100, 0, b""));
    assert_eq!(s.flags, TCP_SYN | TCP_ACK, "proxied");
    one(from_client(&mut e, 50001, 80, TCP_ACK, 101, s.seq + 1, b""));
    one(from_rs(&mut e, 80, 50000, TCP_SYN | TCP_ACK, 5, 2, b""));
    one(from_client(&mut e, 50000, 80, TCP_ACK, 2, 6, b""));
    one(from_client(&mut e, 50001, 80, TCP_RST, 101, 0, b""));
    let (_, s) = one(from_client(&mut e, 50002, 80, TCP_SYN, 1, 0, b""));
    assert_eq!(s.dst, RS1, "nothing half-open left: forwarded");
}
