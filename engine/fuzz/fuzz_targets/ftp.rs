//! The worker pipeline with FTP control traffic: a small op language
//! (decoded with `arbitrary`) drives client and server segments on FTP
//! control connections — NAT over IPv4 and IPv6 and DR — with chosen
//! sequence numbers, flags and payload lines from an FTP dictionary (PASV,
//! 227, EPSV, 229, PORT, EPRT, AUTH TLS, 234, multi-line 211- replies,
//! oversized and partial lines), and data-connection SYNs to the ports the
//! dialogue announced, through a two-worker in-memory engine.
//!
//! After every packet: no panic, packets conserved (`common::Ledger`:
//! transmitted, one counted drop — `alg_hold` for held FTP segments — or
//! parked), and every transmitted frame has correct checksums.
#![no_main]

mod common;

use common::{with_engine, Ledger};
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::fmt::Write as _;

/// Per-worker flow table size.
const FLOWS: usize = 256;

/// Neighbours and services after `common::topology`.
const CONFIG: &str = r#"

[[neighbor]]
address = "10.0.1.2"
mac = "02:00:00:00:01:02"

[[neighbor]]
address = "fd00:1::2"
mac = "02:00:00:00:01:02"

[[neighbor]]
address = "10.0.2.2"
mac = "02:00:00:00:02:02"

[[neighbor]]
address = "10.0.2.3"
mac = "02:00:00:00:02:03"

[[neighbor]]
address = "fd00:2::2"
mac = "02:00:00:00:02:02"

[[service]]
name = "ftp-nat"
vip = "10.0.1.100"
ports = [21]
ftp = true
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp-dr"
vip = "10.0.1.101"
ports = [21]
forward = "dr"
ftp = true
[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "ftp-nat6"
vip = "fd00:1::100"
ports = [21]
ftp = true
[[service.real_server]]
address = "fd00:2::2"
"#;

const EXT: usize = 0;
const INT: usize = 1;
const S: u64 = 1_000_000_000;
const LB_EXT: [u8; 6] = [2, 0, 0, 0, 1, 1];
const LB_INT: [u8; 6] = [2, 0, 0, 0, 2, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const CLIENT: [u8; 4] = [10, 0, 1, 2];
const C6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VIP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const RS6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The three control connections.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Ctl {
    Nat,
    Dr,
    Nat6,
}

impl Ctl {
    fn idx(self) -> usize {
        self as usize
    }
    fn vip4(self) -> [u8; 4] {
        if self == Ctl::Dr {
            [10, 0, 1, 101]
        } else {
            [10, 0, 1, 100]
        }
    }
    fn rs4(self) -> [u8; 4] {
        if self == Ctl::Dr {
            [10, 0, 2, 3]
        } else {
            [10, 0, 2, 2]
        }
    }
    fn rs_mac(self) -> [u8; 6] {
        if self == Ctl::Dr {
            [2, 0, 0, 0, 2, 3]
        } else {
            [2, 0, 0, 0, 2, 2]
        }
    }
}

/// Where a segment starts, relative to the sender's next sequence number.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum At {
    InOrder,
    /// A retransmission starting this many bytes back.
    Back(u8),
    /// After a hole of this many bytes (+1).
    Ahead(u8),
    /// Anywhere.
    Raw(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Flags {
    Data,
    DataNoPsh,
    Fin,
    Rst,
    /// No ACK flag at all.
    Bare,
    Syn,
}

impl Flags {
    fn bits(self) -> u8 {
        match self {
            Flags::Data => TCP_ACK | TCP_PSH,
            Flags::DataNoPsh => TCP_ACK,
            Flags::Fin => TCP_ACK | TCP_FIN,
            Flags::Rst => TCP_RST,
            Flags::Bare => TCP_PSH,
            Flags::Syn => TCP_SYN,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ip {
    Client,
    Real,
    Vip,
    Other([u8; 4]),
}

/// One line of the dialogue; `bare_lf` ends it with LF instead of CRLF.
#[derive(Arbitrary, Debug, Clone)]
enum Line {
    User,
    Pasv,
    Epsv,
    EpsvAll,
    Port(Ip, u16),
    Eprt(bool, Ip, u16),
    AuthTls,
    AuthSsl,
    Noop,
    Quit,
    R220,
    R227(Ip, u16, u8),
    R229(u16),
    R234,
    R211(u8),
    Code(u16),
    /// A line of `n * 16` bytes (oversized from 64 on).
    Long(u8),
    /// Raw bytes (may hold no line end at all: a partial line).
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Port {
    /// One of the ports announced so far (PASV/EPSV replies, PORT/EPRT).
    Announced(u8),
    Any(u16),
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Client {
        ctl: Ctl,
        at: At,
        flags: Flags,
        lines: Vec<Line>,
        bare_lf: bool,
    },
    Server {
        ctl: Ctl,
        at: At,
        flags: Flags,
        lines: Vec<Line>,
        bare_lf: bool,
    },
    /// An ACK-only segment from the client (acks are mapped back).
    ClientAck {
        ctl: Ctl,
        ahead: u8,
    },
    /// Passive data: the client connects to VIP:port, the server may answer.
    Passive {
        ctl: Ctl,
        port: Port,
        sport: u8,
        answer: bool,
    },
    /// Active data: NAT, the real server connects (from port 20 or another)
    /// to client:port; DR, the client's SYN-ACK to VIP:20 from port.
    Active {
        ctl: Ctl,
        port: Port,
        from20: bool,
    },
    /// Let time pass (pinholes and pending packets expire).
    Wait(u8),
}

#[derive(Default, Clone, Copy)]
struct Conn {
    open: bool,
    cseq: u32,
    sseq: u32,
}

struct Run<'a> {
    e: &'a mut MemEngine,
    l: Ledger,
    now: u64,
    conns: [Conn; 3],
    ports: Vec<u16>,
}

fn ip_of(ctl: Ctl, ip: Ip) -> [u8; 4] {
    match ip {
        Ip::Client => CLIENT,
        Ip::Real => ctl.rs4(),
        Ip::Vip => ctl.vip4(),
        Ip::Other(a) => a,
    }
}

impl Run<'_> {
    fn send(&mut self, iface: usize, f: Vec<u8>) {
        self.now += 1000;
        let out = self.l.inject(self.e, iface, &f, self.now);
        for (_, o) in &out {
            if let Err(err) = verify_checksums(o) {
                panic!("bad checksum in output ({err}): {o:02x?}\ninput: {f:02x?}");
            }
        }
    }

    fn announce(&mut self, port: u16) {
        if self.ports.len() < 16 {
            self.ports.push(port);
        }
    }

    fn port(&self, p: Port) -> u16 {
        match p {
            Port::Announced(i) if !self.ports.is_empty() => self.ports[i as usize % self.ports.len()],
            Port::Announced(i) => 1024 + u16::from(i),
            Port::Any(p) => p,
        }
    }

    /// A client -> VIP frame of control connection `ctl`.
    #[allow(clippy::too_many_arguments)]
    fn client_frame(&self, ctl: Ctl, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        let f = match ctl {
            Ctl::Nat6 => tcp6(C6, sport, VIP6, dport, flags, seq, ack, data),
            _ => tcp4(CLIENT, sport, ctl.vip4(), dport, flags, seq, ack, data),
        };
        with_macs(f, CLIENT_MAC, LB_EXT)
    }

    /// A real server -> client frame (NAT).
    #[allow(clippy::too_many_arguments)]
    fn server_frame(&self, ctl: Ctl, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        let f = match ctl {
            Ctl::Nat6 => tcp6(RS6, sport, C6, dport, flags, seq, ack, data),
            _ => tcp4(ctl.rs4(), sport, CLIENT, dport, flags, seq, ack, data),
        };
        with_macs(f, ctl.rs_mac(), LB_INT)
    }

    /// Open the control connection on first use: SYN, SYN-ACK (NAT), ACK.
    fn open(&mut self, ctl: Ctl) {
        let k = ctl.idx();
        if self.conns[k].open {
            return;
        }
        let c = Conn { open: true, cseq: 1000 + k as u32 * 7, sseq: 0xffff_ff00 - k as u32 * 13 };
        self.conns[k] = c;
        let f = self.client_frame(ctl, 40000, 21, TCP_SYN, c.cseq.wrapping_sub(1), 0, b"");
        self.send(EXT, f);
        if ctl != Ctl::Dr {
            let f = self.server_frame(ctl, 21, 40000, TCP_SYN | TCP_ACK, c.sseq.wrapping_sub(1), c.cseq, b"");
            self.send(INT, f);
        }
        let f = self.client_frame(ctl, 40000, 21, TCP_ACK, c.cseq, c.sseq, b"");
        self.send(EXT, f);
    }

    fn line(&mut self, ctl: Ctl, l: &Line, out: &mut String, raw: &mut Vec<u8>) {
        let v4 = ctl != Ctl::Nat6;
        match l {
            Line::User => out.push_str("USER anonymous"),
            Line::Pasv => out.push_str("PASV"),
            Line::Epsv => out.push_str("EPSV"),
            Line::EpsvAll => out.push_str("EPSV ALL"),
            Line::Port(ip, p) => {
                let a = ip_of(ctl, *ip);
                let _ = write!(out, "PORT {},{},{},{},{},{}", a[0], a[1], a[2], a[3], p >> 8, p & 0xff);
                self.announce(*p);
            }
            Line::Eprt(six, ip, p) => {
                if *six || !v4 {
                    let _ = write!(out, "EPRT |2|fd00:1::2|{p}|");
                } else {
                    let a = ip_of(ctl, *ip);
                    let _ = write!(out, "EPRT |1|{}.{}.{}.{}|{p}|", a[0], a[1], a[2], a[3]);
                }
                self.announce(*p);
            }
            Line::AuthTls => out.push_str("AUTH TLS"),
            Line::AuthSsl => out.push_str("AUTH SSL"),
            Line::Noop => out.push_str("NOOP"),
            Line::Quit => out.push_str("QUIT"),
            Line::R220 => out.push_str("220 (vsFTPd 3.0.3)"),
            Line::R227(ip, p, style) => {
                let a = ip_of(ctl, *ip);
                let (h, q) = (p >> 8, p & 0xff);
                let _ = match style % 4 {
                    0 => write!(out, "227 Entering Passive Mode ({},{},{},{},{h},{q}).", a[0], a[1], a[2], a[3]),
                    1 => write!(out, "227 Entering Passive Mode {},{},{},{},{h},{q}", a[0], a[1], a[2], a[3]),
                    2 => write!(out, "227 =({},{},{},{},{h},{q})", a[0], a[1], a[2], a[3]),
                    _ => write!(out, "227 Logout."),
                };
                self.announce(*p);
            }
            Line::R229(p) => {
                let _ = write!(out, "229 Entering Extended Passive Mode (|||{p}|)");
                self.announce(*p);
            }
            Line::R234 => out.push_str("234 Proceed with negotiation."),
            Line::R211(n) => {
                out.push_str("211-Features:");
                for i in 0..n % 4 {
                    out.push_str(if i % 2 == 0 { "\r\n EPSV" } else { "\r\n227 (10,0,2,2,4,1)" });
                }
                out.push_str("\r\n211 End");
            }
            Line::Code(c) => {
                let _ = write!(out, "{} ok", c % 1000);
            }
            Line::Long(n) => {
                for i in 0..usize::from(*n) * 16 {
                    out.push(if i < 4 { ['2', '2', '7', ' '][i] } else { 'x' });
                }
            }
            Line::Raw(b) => {
                // Flush the text so far, then the raw bytes, unterminated.
                raw.extend_from_slice(out.as_bytes());
                out.clear();
                raw.extend_from_slice(&b[..b.len().min(256)]);
            }
        }
    }

    fn payload(&mut self, ctl: Ctl, lines: &[Line], bare_lf: bool) -> Vec<u8> {
        let mut raw = Vec::new();
        for l in lines.iter().take(8) {
            let mut s = String::new();
            self.line(ctl, l, &mut s, &mut raw);
            if !matches!(l, Line::Raw(_)) {
                raw.extend_from_slice(s.as_bytes());
                raw.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
            }
        }
        raw.truncate(1200);
        raw
    }

    fn segment(&mut self, client: bool, ctl: Ctl, at: At, flags: Flags, lines: &[Line], bare_lf: bool) {
        self.open(ctl);
        let data = self.payload(ctl, lines, bare_lf);
        let k = ctl.idx();
        let c = self.conns[k];
        let next = if client { c.cseq } else { c.sseq };
        let seq = match at {
            At::InOrder => next,
            At::Back(n) => next.wrapping_sub(u32::from(n)),
            At::Ahead(n) => next.wrapping_add(u32::from(n) + 1),
            At::Raw(s) => s,
        };
        let end = seq.wrapping_add(data.len() as u32);
        if (end.wrapping_sub(next) as i32) > 0 && !matches!(at, At::Raw(_)) {
            if client {
                self.conns[k].cseq = end;
            } else {
                self.conns[k].sseq = end;
            }
        }
        let bits = flags.bits();
        let f = if client {
            self.client_frame(ctl, 40000, 21, bits, seq, c.sseq, &data)
        } else {
            self.server_frame(ctl, 21, 40000, bits, seq, c.cseq, &data)
        };
        self.send(if client { EXT } else { INT }, f);
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Client { ctl, at, flags, lines, bare_lf } => self.segment(true, *ctl, *at, *flags, lines, *bare_lf),
            Op::Server { ctl, at, flags, lines, bare_lf } => self.segment(false, *ctl, *at, *flags, lines, *bare_lf),
            Op::ClientAck { ctl, ahead } => {
                self.open(*ctl);
                let c = self.conns[ctl.idx()];
                let f =
                    self.client_frame(*ctl, 40000, 21, TCP_ACK, c.cseq, c.sseq.wrapping_add(u32::from(*ahead)), b"");
                self.send(EXT, f);
            }
            Op::Passive { ctl, port, sport, answer } => {
                let (port, sport) = (self.port(*port), 41000 + u16::from(*sport));
                let f = self.client_frame(*ctl, sport, port, TCP_SYN, 77, 0, b"");
                self.send(EXT, f);
                if *answer && *ctl != Ctl::Dr {
                    let f = self.server_frame(*ctl, port, sport, TCP_SYN | TCP_ACK, 99, 78, b"");
                    self.send(INT, f);
                }
            }
            Op::Active { ctl, port, from20 } => {
                let port = self.port(*port);
                if *ctl == Ctl::Dr {
                    let f = self.client_frame(*ctl, port, 20, TCP_SYN | TCP_ACK, 50, 10, b"");
                    self.send(EXT, f);
                } else {
                    let sport = if *from20 { 20 } else { 30020 };
                    let f = self.server_frame(*ctl, sport, port, TCP_SYN, 9, 0, b"");
                    self.send(INT, f);
                }
            }
            Op::Wait(n) => self.now += u64::from(*n) * S,
        }
    }
}

thread_local! {
    static ENGINE: RefCell<Option<MemEngine>> = const { RefCell::new(None) };
}

fuzz_target!(|ops: Vec<Op>| {
    with_engine(&ENGINE, FLOWS, CONFIG, 2, |e| {
        let mut r = Run { e, l: Ledger::default(), now: S, conns: [Conn::default(); 3], ports: Vec::new() };
        for op in ops.iter().take(64) {
            r.op(op);
        }
    });
});
