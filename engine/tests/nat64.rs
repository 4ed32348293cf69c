//! Full NAT across address families (RFC 7915 header translation): an IPv6
//! client to IPv4 real servers through an IPv6 VIP (IPv4 local addresses),
//! and an IPv4 client to IPv6 real servers. Every rewrite byte for byte:
//! TCP handshake, data and FIN both ways, the MSS of a SYN that becomes
//! IPv6, UDP (an IPv4 datagram without checksum gets one), the egress MTU
//! (an IPv4 packet that outgrows it once IPv6 is answered with
//! "fragmentation needed"), ICMP errors translated both ways, what cannot be
//! translated (counted `xlat_unsupported`), PROXY protocol naming the IPv6
//! client to an IPv4 server, and a reload that removes a local address.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

const LADDR: [u8; 4] = [10, 0, 2, 200];
const LADDR6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];

const SERVICES: &str = r#"
[[service]]
name = "web64"
vip = "fd00:1::100"
protocol = "tcp"
ports = [80]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service]]
name = "dns64"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "web46"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
forward = "fnat"
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"
"#;

fn engine(services: &str, workers: usize) -> MemEngine {
    MemEngine::new(
        ferrovs_cfg::Config::from_str(&config_text_fnat(services), "nat64-test.toml").expect("parses"),
        workers,
    )
}

/// Frame `f` as real server 1 sends it (`from_rs` with its MAC).
fn from_rs1(f: Vec<u8>) -> Vec<u8> {
    with_macs(f, RS1_MAC, LB_INT)
}
/// What the engine sends towards the real server / the client: the translated packet as the
/// builders make it, with TTL / hop limit 63 (64 decremented), and for IPv4 what RFC 7915
/// 5.1 gives: identification 0, DF set.
fn to_rs(f: Vec<u8>) -> Vec<u8> {
    with_macs(translated(f), LB_INT, RS1_MAC)
}
fn to_client(f: Vec<u8>) -> Vec<u8> {
    with_macs(translated(f), LB_EXT, CLIENT_MAC)
}
fn translated(mut f: Vec<u8>) -> Vec<u8> {
    if f[12..14] == [0x86, 0xdd] {
        f[14 + 7] = 63;
        f
    } else {
        f[14 + 4..14 + 8].copy_from_slice(&[0, 0, 0x40, 0]);
        set_ttl(f, 63)
    }
}

/// IPv6 client -> IPv6 VIP -> IPv4 real server: handshake (the server's MSS lowered by 20
/// for the IPv6 client), data both ways, FIN, and the frame sizes (-20 / +20 bytes).
#[test]
fn tcp_ipv6_client_to_ipv4_server() {
    let mut e = engine(SERVICES, 1);
    let syn = from_client(tcp6_opts(C6, 40000, VIP6, 80, TCP_SYN, 1000, 0, &opt_mss(1440), b""));
    let out = e.inject(EXT, &syn, S);
    assert_eq!(out[0].1.len(), syn.len() - 20);
    exactly(out, INT, to_rs(tcp4_opts(LADDR, 2000, RS1, 8080, TCP_SYN, 1000, 0, &opt_mss(1440), b"")));
    let synack = from_rs1(tcp4_opts(RS1, 8080, LADDR, 2000, TCP_SYN | TCP_ACK, 5000, 1001, &opt_mss(1460), b""));
    let out = e.inject(INT, &synack, S);
    assert_eq!(out[0].1.len(), synack.len() + 20);
    exactly(out, EXT, to_client(tcp6_opts(VIP6, 80, C6, 40000, TCP_SYN | TCP_ACK, 5000, 1001, &opt_mss(1440), b"")));
    let data = b"GET / HTTP/1.0\r\n\r\n";
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_ACK | TCP_PSH, 1001, 5001, data)), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_ACK | TCP_PSH, 1001, 5001, data)));
    let body = vec![b'x'; 1400];
    let out = e.inject(INT, &from_rs1(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK, 5001, 1019, &body)), S);
    exactly(out, EXT, to_client(tcp6(VIP6, 80, C6, 40000, TCP_ACK, 5001, 1019, &body)));
    let out = e.inject(INT, &from_rs1(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK | TCP_FIN, 6401, 1019, b"")), S);
    exactly(out, EXT, to_client(tcp6(VIP6, 80, C6, 40000, TCP_ACK | TCP_FIN, 6401, 1019, b"")));
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_ACK | TCP_FIN, 1019, 6402, b"")), S);
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_ACK | TCP_FIN, 1019, 6402, b"")));
    assert_drops(&e, &[]);
    assert_eq!(e.counters().flows_active, 1);
}

/// IPv4 client -> IPv4 VIP -> IPv6 real server: the client's SYN becomes IPv6 (its MSS
/// lowered by 20), the server's replies become IPv4.
#[test]
fn tcp_ipv4_client_to_ipv6_server() {
    let mut e = engine(SERVICES, 1);
    let out = e.inject(EXT, &from_client(tcp4_opts(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, &opt_mss(1460), b"")), S);
    exactly(out, INT, to_rs(tcp6_opts(LADDR6, 2000, RS6, 80, TCP_SYN, 1, 0, &opt_mss(1440), b"")));
    let out =
        e.inject(INT, &from_rs1(tcp6_opts(RS6, 80, LADDR6, 2000, TCP_SYN | TCP_ACK, 9, 2, &opt_mss(1440), b"")), S);
    exactly(out, EXT, to_client(tcp4_opts(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, 9, 2, &opt_mss(1440), b"")));
    let out = e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 2, 10, b"hello")), S);
    exactly(out, INT, to_rs(tcp6(LADDR6, 2000, RS6, 80, TCP_ACK, 2, 10, b"hello")));
    let out = e.inject(INT, &from_rs1(tcp6(RS6, 80, LADDR6, 2000, TCP_ACK, 10, 7, b"world")), S);
    exactly(out, EXT, to_client(tcp4(VIP, 80, CLIENT, 40000, TCP_ACK, 10, 7, b"world")));
    assert_drops(&e, &[]);
}

/// UDP both ways; an IPv4 reply without a checksum gets one for IPv6.
#[test]
fn udp_both_ways_and_zero_checksum() {
    let mut e = engine(SERVICES, 1);
    let out = e.inject(EXT, &from_client(udp6(C6, 5353, VIP6, 53, b"query")), S);
    exactly(out, INT, to_rs(udp4(LADDR, 2000, RS1, 53, b"query")));
    let out = e.inject(INT, &from_rs1(udp4(RS1, 53, LADDR, 2000, b"answer")), S);
    exactly(out, EXT, to_client(udp6(VIP6, 53, C6, 5353, b"answer")));
    let mut nocsum = from_rs1(udp4(RS1, 53, LADDR, 2000, b"answer two"));
    nocsum[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let out = e.inject(INT, &nocsum, S);
    exactly(out, EXT, to_client(udp6(VIP6, 53, C6, 5353, b"answer two")));
    assert_drops(&e, &[]);
}

/// An IPv4 reply that fits the IPv4 side but not the client's link once IPv6 (+20 bytes):
/// "fragmentation needed" back to the real server with the MTU its packets may have (1480).
#[test]
fn reply_outgrowing_the_mtu_gets_fragmentation_needed() {
    let mut e = engine(SERVICES, 1);
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 1000, 0, b"")), S);
    let big = vec![7u8; 1460];
    let reply = from_rs1(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK, 5001, 1001, &big));
    assert_eq!(reply.len() - 14, 1500);
    let out = e.inject(INT, &reply, S);
    assert_eq!(out.len(), 1, "an ICMP error, got {out:?}");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(out[0].0, INT);
    assert_eq!(&f[14 + 16..14 + 20], &RS1, "to the real server");
    assert_eq!((f[14 + 20], f[14 + 21]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([f[14 + 26], f[14 + 27]]), 1480);
    assert_eq!(e.counters().icmp_sent, 1);
}

/// ICMP errors translated: the real server's "fragmentation needed" (MTU 1400) reaches the
/// IPv6 client as "packet too big" (MTU 1420) quoting its own packet; the client's "packet
/// too big" (MTU 1400) reaches the real server as "fragmentation needed" (MTU 1380) quoting
/// LADDR -> RS; a parameter problem has no translation and is counted.
#[test]
fn icmp_errors_translated_both_ways() {
    let mut e = engine(SERVICES, 1);
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 1000, 0, b"")), S);
    let quoted = tcp4(LADDR, 2000, RS1, 8080, TCP_ACK, 1001, 5001, &[0u8; 40]);
    let out = e.inject(INT, &from_rs1(icmp4_error(RS1, LADDR, 3, 4, 1400, &quoted)), S);
    assert_eq!(out.len(), 1, "to the client: {out:?}");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(out[0].0, EXT);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    assert_eq!(&f[14 + 8..14 + 24], &VIP6, "reported by the VIP");
    assert_eq!(&f[14 + 24..14 + 40], &C6);
    let icmp = 14 + 40;
    assert_eq!((f[icmp], f[icmp + 1]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes(f[icmp + 4..icmp + 8].try_into().unwrap()), 1420);
    let q = icmp + 8;
    assert_eq!(f[q] >> 4, 6, "quoted IPv6 header");
    assert_eq!(&f[q + 8..q + 24], &C6, "quoted source: the client");
    assert_eq!(&f[q + 24..q + 40], &VIP6, "quoted destination: the VIP");
    assert_eq!(&f[q + 40..q + 44], &[0x9c, 0x40, 0, 80], "quoted ports 40000 -> 80");
    assert_eq!(f[14 + 7], 63, "hop limit");

    let quoted = tcp6(VIP6, 80, C6, 40000, TCP_ACK, 5001, 1001, b"");
    let out = e.inject(EXT, &from_client(icmp6_error(C6, VIP6, 2, 0, 1400, &quoted)), S);
    assert_eq!(out.len(), 1, "to the real server: {out:?}");
    let f = &out[0].1;
    verify_checksums(f).unwrap();
    assert_eq!(out[0].0, INT);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    assert_eq!(&f[14 + 12..14 + 16], &LADDR, "reported by the local address");
    assert_eq!(&f[14 + 16..14 + 20], &RS1);
    assert_eq!((f[34], f[35]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1380);
    let q = 14 + 28;
    assert_eq!(ferrovs_engine::wire::csum::finish(&f[q..q + 20], 0), 0, "quoted IPv4 header checksum");
    assert_eq!(&f[q + 12..q + 16], &RS1, "quoted source: the real server");
    assert_eq!(&f[q + 16..q + 20], &LADDR, "quoted destination: the local address");
    assert_eq!(&f[q + 20..q + 24], &[0x1f, 0x90, 0x07, 0xd0], "quoted ports 8080 -> 2000");
    assert_drops(&e, &[]);
    assert_eq!(e.counters().icmp_translated, 2);

    // Parameter problem (IPv4 type 12): no translation.
    let quoted = tcp4(LADDR, 2000, RS1, 8080, TCP_ACK, 1001, 5001, b"");
    let out = e.inject(INT, &from_rs1(icmp4_error(RS1, LADDR, 12, 0, 0, &quoted)), S);
    assert!(out.is_empty());
    assert_drops(&e, &[(DropReason::XlatUnsupported, 1)]);
}

/// An IPv4 fragment of a translated connection: not translated (it would need an IPv6
/// fragment header), counted.
#[test]
fn fragments_are_a_counted_drop() {
    let mut e = engine(SERVICES, 1);
    e.inject(EXT, &from_client(udp6(C6, 5353, VIP6, 53, b"query")), S);
    let big = from_rs1(udp4(RS1, 53, LADDR, 2000, &[1u8; 1000]));
    let frags = fragment4(&big, 600, 77);
    assert!(frags.len() > 1);
    let out = e.inject(INT, &frags[0], S);
    assert!(out.is_empty());
    assert_drops(&e, &[(DropReason::XlatUnsupported, 1)]);
}

/// PROXY protocol v1 towards an IPv4 server names the IPv6 client and VIP (TCP6), and the
/// segment carrying it is translated like any other.
#[test]
fn proxy_protocol_names_the_ipv6_client() {
    let svc = SERVICES.replacen("port = 8080\n", "port = 8080\nproxy_protocol = \"v1\"\n", 1);
    let mut e = engine(&svc, 1);
    e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_SYN, 1000, 0, b"")), S);
    e.inject(INT, &from_rs1(tcp4(RS1, 8080, LADDR, 2000, TCP_SYN | TCP_ACK, 5000, 1001, b"")), S);
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 80, TCP_ACK | TCP_PSH, 1001, 5001, b"GET /\r\n")), S);
    let hdr = b"PROXY TCP6 fd00:1::2 fd00:1::100 40000 80\r\n";
    let want = [&hdr[..], b"GET /\r\n"].concat();
    exactly(out, INT, to_rs(tcp4(LADDR, 2000, RS1, 8080, TCP_ACK | TCP_PSH, 1001, 5001, &want)));
    // The server's acknowledgement of it comes back shifted by the header's length.
    let ack = 1001 + want.len() as u32;
    let out = e.inject(INT, &from_rs1(tcp4(RS1, 8080, LADDR, 2000, TCP_ACK, 5001, ack, b"")), S);
    exactly(out, EXT, to_client(tcp6(VIP6, 80, C6, 40000, TCP_ACK, 5001, 1008, b"")));
    assert_drops(&e, &[]);
}

/// `ferrovs config check` semantics at engine level: a mixed-family service needs full NAT
/// (checked by the config crate); here, that the same-family services next to a translated
/// one are untouched (exact bytes with the ordinary TTL-only rewrite).
#[test]
fn same_family_fnat_beside_translated_service() {
    let svc = format!(
        "{SERVICES}\n[[service]]\nname = \"web6\"\nvip = \"fd00:1::100\"\nports = [81]\nforward = \"fnat\"\n\
         local_addresses = [\"fd00:2::200\"]\n[[service.real_server]]\naddress = \"fd00:2::2\"\n"
    );
    let mut e = engine(&svc, 1);
    let out = e.inject(EXT, &from_client(tcp6(C6, 40000, VIP6, 81, TCP_SYN, 1, 0, b"")), S);
    exactly(out, INT, to_rs(tcp6(LADDR6, 2000, RS6, 81, TCP_SYN, 1, 0, b"")));
    assert_drops(&e, &[]);
}

const FTP: &str = r#"
[[service]]
name = "ftp64"
vip = "fd00:1::100"
protocol = "tcp"
ports = [21]
forward = "fnat"
ftp = true
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp46"
vip = "10.0.1.100"
protocol = "tcp"
ports = [21]
forward = "fnat"
ftp = true
local_addresses = ["fd00:2::200"]

[[service.real_server]]
address = "fd00:2::2"
"#;

/// An FTP control connection across families: `v6_client` true is an IPv6 client to the
/// IPv4 server, false an IPv4 client to the IPv6 server.
struct Ftp {
    e: MemEngine,
    v6_client: bool,
    c: u32,
    s: u32,
    lport: u16,
}

impl Ftp {
    fn open(v6_client: bool) -> Ftp {
        let e = engine(FTP, 1);
        let mut f = Ftp { e, v6_client, c: 1000, s: 5000, lport: 0 };
        let syn = f.client_frame(40000, 21, TCP_SYN, f.c, 0, b"");
        let out = f.e.inject(EXT, &syn, S);
        assert_eq!(out.len(), 1);
        f.lport = ferrovs_engine::wire::parse::parse(&out[0].1).unwrap().sport;
        let out = f.e.inject(INT, &f.rs_frame(21, f.lport, TCP_SYN | TCP_ACK, f.s, f.c + 1, b""), S);
        assert_eq!(out.len(), 1);
        f.c += 1;
        f.s += 1;
        f
    }
    fn client_frame(&self, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        if self.v6_client {
            from_client(tcp6(C6, sport, VIP6, dport, flags, seq, ack, data))
        } else {
            from_client(tcp4(CLIENT, sport, VIP, dport, flags, seq, ack, data))
        }
    }
    /// The server is of the other family.
    fn rs_frame(&self, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        if self.v6_client {
            from_rs1(tcp4(RS1, sport, LADDR, dport, flags, seq, ack, data))
        } else {
            from_rs1(tcp6(RS6, sport, LADDR6, dport, flags, seq, ack, data))
        }
    }
    fn command(&mut self, line: &str) -> Vec<u8> {
        let f = self.client_frame(40000, 21, TCP_ACK | TCP_PSH, self.c, self.s, line.as_bytes());
        self.c += line.len() as u32;
        let out = self.e.inject(EXT, &f, S);
        assert_eq!(out.len(), 1, "{line:?} forwarded");
        payload(&out[0].1)
    }
    fn reply(&mut self, line: &str) -> Vec<u8> {
        let f = self.rs_frame(21, self.lport, TCP_ACK | TCP_PSH, self.s, self.c, line.as_bytes());
        self.s += line.len() as u32;
        let out = self.e.inject(INT, &f, S);
        assert_eq!(out.len(), 1, "{line:?} forwarded");
        payload(&out[0].1)
    }
}

/// IPv6 client, IPv4 server, passive: EPSV goes through (an IPv4 vsftpd answers it), the
/// 229 needs no change, the data connection [C6]:40001 -> [VIP6]:30001 becomes
/// LADDR:lp' -> RS1:30001, and its replies come back as IPv6.
#[test]
fn ftp_ipv6_client_epsv_to_ipv4_server() {
    let mut f = Ftp::open(true);
    assert_eq!(f.command("EPSV\r\n"), b"EPSV\r\n");
    let got = f.reply("229 Entering Extended Passive Mode (|||30001|)\r\n");
    assert_eq!(got, b"229 Entering Extended Passive Mode (|||30001|)\r\n");
    let out = f.e.inject(EXT, &f.client_frame(40001, 30001, TCP_SYN, 77, 0, b""), S);
    assert_eq!(out.len(), 1);
    let (src, sport, dst, dport) = ends(&out[0].1);
    assert_eq!((src.as_str(), dst.as_str(), dport), ("10.0.2.200", "10.0.2.2", 30001));
    let out = f.e.inject(INT, &from_rs1(tcp4(RS1, 30001, LADDR, sport, TCP_SYN | TCP_ACK, 9, 78, b"")), S);
    assert_eq!(ends(&out[0].1), ("fd00:1::100".into(), 30001, "fd00:1::2".into(), 40001));
    let out = f.e.inject(INT, &from_rs1(tcp4(RS1, 30001, LADDR, sport, TCP_ACK, 10, 78, b"file data")), S);
    assert_eq!(payload(&out[0].1), b"file data");
    assert_drops(&f.e, &[]);
}

/// IPv6 client, IPv4 server, active: `EPRT |2|client|port|` becomes `EPRT |1|LADDR|reserved|`;
/// the server's connection from RS1:20 reaches the client as [VIP6]:20 -> [C6]:port, and the
/// client's answers go back as IPv4. The rewrite's length change is mapped in the
/// acknowledgements.
#[test]
fn ftp_ipv6_client_eprt_to_ipv4_server() {
    let mut f = Ftp::open(true);
    let got = f.command("EPRT |2|fd00:1::2|40002|\r\n");
    assert_eq!(got, b"EPRT |1|10.0.2.200|2001|\r\n", "{}", String::from_utf8_lossy(&got));
    f.reply("200 EPRT command successful.\r\n");
    let syn = from_rs1(tcp4(RS1, 20, LADDR, 2001, TCP_SYN, 9000, 0, b""));
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, EXT);
    assert_eq!(ends(&out[0].1), ("fd00:1::100".into(), 20, "fd00:1::2".into(), 40002));
    let out = f.e.inject(EXT, &f.client_frame(40002, 20, TCP_SYN | TCP_ACK, 300, 9001, b""), S);
    assert_eq!(ends(&out[0].1), ("10.0.2.200".into(), 2001, "10.0.2.2".into(), 20));
    // The server acknowledges the whole EPRT (the same length here): the client sees its own count.
    let ack = f.rs_frame(21, f.lport, TCP_ACK, f.s, f.c, b"");
    let out = f.e.inject(INT, &ack, S);
    let p = ferrovs_engine::wire::parse::parse(&out[0].1).unwrap();
    let d = &out[0].1;
    assert_eq!(u32::from_be_bytes(d[p.l4 + 8..p.l4 + 12].try_into().unwrap()), f.c);
    assert_drops(&f.e, &[]);
}

/// IPv4 client, IPv6 server: `PORT` becomes `EPRT |2|LADDR6|reserved|`, `PASV` is sent as
/// `EPSV` and the server's 229 comes back as a 227 naming the VIP; both data connections are
/// translated.
#[test]
fn ftp_ipv4_client_port_and_pasv_to_ipv6_server() {
    let mut f = Ftp::open(false);
    let got = f.command("PORT 10,0,1,2,156,66\r\n");
    assert_eq!(got, b"EPRT |2|fd00:2::200|2001|\r\n", "{}", String::from_utf8_lossy(&got));
    f.reply("200 EPRT command successful.\r\n");
    let syn = from_rs1(tcp6(RS6, 20, LADDR6, 2001, TCP_SYN, 9000, 0, b""));
    let out = f.e.inject(INT, &syn, S);
    assert_eq!(ends(&out[0].1), ("10.0.1.100".into(), 20, "10.0.1.2".into(), 40002));
    assert_eq!(f.command("PASV\r\n"), b"EPSV\r\n");
    let got = f.reply("229 Entering Extended Passive Mode (|||30003|)\r\n");
    assert_eq!(got, b"227 Entering Passive Mode (10,0,1,100,117,51).\r\n", "{}", String::from_utf8_lossy(&got));
    let out = f.e.inject(EXT, &f.client_frame(40003, 30003, TCP_SYN, 1, 0, b""), S);
    let (src, _, dst, dport) = ends(&out[0].1);
    assert_eq!((src.as_str(), dst.as_str(), dport), ("fd00:2::200", "fd00:2::2", 30003));
    // A client EPSV is passed on as is.
    assert_eq!(f.command("EPSV\r\n"), b"EPSV\r\n");
    assert_eq!(
        f.reply("229 Entering Extended Passive Mode (|||30004|)\r\n"),
        b"229 Entering Extended Passive Mode (|||30004|)\r\n"
    );
    assert_drops(&f.e, &[]);
}

/// The reverse family: the IPv6 real server's "packet too big" (MTU 1400) about
/// [LADDR6] -> [RS6] reaches the IPv4 client as "fragmentation needed" (MTU 1380) quoting
/// its own client -> VIP packet, reported by the VIP; port unreachable maps to port
/// unreachable.
#[test]
fn icmp_errors_translated_for_ipv4_client_of_ipv6_server() {
    let mut e = engine(SERVICES, 1);
    e.inject(EXT, &from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, b"")), S);
    let quoted = tcp6(LADDR6, 2000, RS6, 80, TCP_ACK, 2, 10, &[0u8; 40]);
    for (ty, code, rest, want) in [(2u8, 0u8, 1400u32, (3u8, 4u8, 1380u16)), (1, 4, 0, (3, 3, 0))] {
        let out = e.inject(INT, &from_rs1(icmp6_error(RS6, LADDR6, ty, code, rest, &quoted)), S);
        assert_eq!(out.len(), 1, "to the client: {out:?}");
        let f = &out[0].1;
        verify_checksums(f).unwrap();
        assert_eq!(out[0].0, EXT);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14 + 12..14 + 16], &VIP, "reported by the VIP");
        assert_eq!(&f[14 + 16..14 + 20], &CLIENT);
        assert_eq!((f[34], f[35]), (want.0, want.1));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), want.2);
        let q = 14 + 28;
        assert_eq!(ferrovs_engine::wire::csum::finish(&f[q..q + 20], 0), 0, "quoted IPv4 header checksum");
        assert_eq!(&f[q + 12..q + 16], &CLIENT, "quoted source: the client");
        assert_eq!(&f[q + 16..q + 20], &VIP, "quoted destination: the VIP");
        assert_eq!(&f[q + 20..q + 24], &[0x9c, 0x40, 0, 80], "quoted ports 40000 -> 80");
    }
    assert_drops(&e, &[]);
    assert_eq!(e.counters().icmp_translated, 2);
}

/// An IPv4 packet whose header checksum fails (corrupted on the wire: Linux drops it in
/// `ip_rcv`) is not translated: IPv6 has no header checksum, so its corrupted fields
/// (addresses aside, which found the connection: length, TTL, TOS) would go on unnoticed.
/// IPv6 -> IPv4 has nothing to check (the IPv4 header is computed from an IPv6 one).
#[test]
fn an_ipv4_packet_with_a_bad_header_checksum_is_not_translated() {
    let mut e = engine(SERVICES, 1);
    let syn = from_client(tcp4_opts(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, &opt_mss(1460), b""));
    assert_eq!(e.inject(EXT, &syn, S).len(), 1);
    let data = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK | TCP_PSH, 2, 1, b"x"));
    assert!(e.inject(EXT, &bad_ip_csum(data.clone()), S).is_empty());
    assert_drops(&e, &[(DropReason::IpBadChecksum, 1)]);
    exactly(e.inject(EXT, &data, S), INT, to_rs(tcp6(LADDR6, 2000, RS6, 80, TCP_ACK | TCP_PSH, 2, 1, b"x")));
}
