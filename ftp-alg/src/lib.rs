//! Sans-IO FTP application-layer gateway (ALG) for ferrovs.
//!
//! The crate does no I/O and reads no clock: the engine feeds it the payload of every segment of
//! an FTP control connection together with `now` (nanoseconds, any monotonic origin), the
//! direction and the TCP sequence number, and gets back a [`Verdict`] plus [`Actions`]
//! (expectations for data connections, events for counters/logs). Only `std` is used.
//!
//! # Layers
//!
//! * [`parse`] — pure, allocation-free parsers for `PORT`, `EPRT`, `227`, `229` and the command
//!   verbs the gateway cares about, and the formatter for the rewritten `227` address.
//! * `seq` (private) — serial-number arithmetic (RFC 1982) and the per-direction history of
//!   length-changing rewrites that drives [`FtpSession::map_seq`] / [`FtpSession::map_ack`].
//! * [`FtpSession`] — the state machine of one control connection.
//!
//! # What the gateway does
//!
//! | mode | sees | on | does |
//! |------|------|----|------|
//! | NAT | both directions | `227 (h1,..,p2)` from the RS answering a `PASV` | rewrites the address to the VIP, [`ExpectKind::Passive`] `vip:p -> real:p` (or `vip:q`, see below) |
//! | NAT | | `229 (\|\|\|p\|)` answering an `EPSV` | [`ExpectKind::Passive`] `vip:p -> real:p`, rewritten only if moved to `q` |
//! | NAT | | `PORT` / `EPRT` | [`ExpectKind::Active`] `real:* -> client:p`, to be sourced from `vip:20` |
//! | DR | client -> server only | `PASV` / `EPSV` | [`ExpectKind::Passive`] with any VIP port, pinned to the RS |
//! | DR | | `PORT` / `EPRT` | [`ExpectKind::Active`]: the RS reaches the client directly, but the client's answers to the VIP from port `p` must reach the same RS |
//! | both | | `AUTH TLS`/`SSL` accepted (`234` in NAT; in DR, where replies are not seen, a TLS record as the client's next bytes) | [`Event::TlsFallback`]; parsing stops for good. Refused (`4xx`/`5xx`, or a plain command next in DR): [`Event::TlsRefused`], parsing goes on |
//!
//! # Only real replies open pinholes (NAT)
//!
//! The session keeps the client's commands in order until their final reply (a small fixed
//! queue) and follows multi-line replies (`ddd-` ... `ddd `). A `227`/`229` is honoured only as
//! a single-line final reply to a pending `PASV`/`EPSV`, at a line start; lines inside a
//! multi-line reply (where servers echo client text: `STAT`, `HELP`, `SITE`) and replies to
//! other commands are never acted on ([`Event::Unsolicited`]). The greeting (`220`) answers
//! no command. After a hole in sequence space the order may be lost; then a `227`/`229` answers
//! the oldest pending `PASV`/`EPSV` anywhere in the queue until the queue drains. Data ports
//! below 1024 open nothing ([`Event::LowPort`]) unless
//! [`FtpSession::set_allow_low_data_ports`].
//!
//! # Collisions: the engine decides
//!
//! Every data connection is asked of the engine's [`Pinholes`] before it is announced
//! ([`FtpSession::on_segment_with`]). The engine may move a NAT passive one to another VIP port
//! when another session already expects that port ([`Grant::OpenAt`]; the `227`/`229` is then
//! rewritten to announce it, as Linux's nf_nat_ftp does) or refuse it ([`Grant::Refused`]).
//!
//! A `PORT`/`EPRT` naming another address than the client's (FTP bounce, whatever the port)
//! opens nothing and yields [`Event::BounceRefused`] (unless
//! [`SessionParams::allow_foreign_port_address`]); one naming the client's own address with a
//! port below 1024 yields [`Event::LowPort`] (unless
//! [`FtpSession::set_allow_low_data_ports`]). `227`/`PORT`
//! on an IPv6 session are ignored; `EPRT |2|` and `229` work as for IPv4.
//!
//! # The state machine
//!
//! Each direction is a byte stream cut into lines (CRLF or bare LF). Per direction the session
//! keeps `next`, the original sequence number of the first byte it has not processed, and the
//! bytes of the incomplete last line (at most [`MAX_LINE`] = 1024; a longer line is skipped up
//! to its end and counted as [`Event::Oversized`]). A segment `[seq, seq+len)` is split into
//!
//! * an **old** part before `next`: a retransmission. It is never parsed again (so no duplicate
//!   expectation and no second delta); its bytes are sent with the remembered rewrites applied,
//!   so a retransmitted `227` segment yields the very same `Replace` as the first time;
//! * a **new** part from `next`: parsed line by line. Commands (client -> server) are parsed
//!   when their line is complete and are never held or changed.
//!
//! A segment that starts after `next` (a hole, out-of-order data) is forwarded; the partial line
//! is dropped and parsing resumes after the next line end. The first segment seen (or
//! [`FtpSession::set_isn`] from the SYN) fixes the initial `next`.
//!
//! # Hold and Replace
//!
//! In NAT a `227` reply line may be cut across segments, and its rewrite changes its length, so
//! the gateway cannot let the first half go out unchanged. When, at the end of a reply segment,
//! the incomplete line could still be a final `227 ` line (it is a prefix of, or starts with,
//! `"227 "`), its bytes are **held**:
//!
//! * if the line started at the beginning of the segment the verdict is [`Verdict::Hold`]: the
//!   engine drops the segment, the gateway keeps its bytes;
//! * otherwise the verdict is a [`Verdict::Replace`] carrying only the bytes *before* that line
//!   (the rest is held) — a `Replace` may thus be shorter than the segment.
//!
//! When the line completes, the verdict is `Replace { seq: <start of held line>, payload:
//! <held bytes + new bytes, rewritten> }`. A retransmission that falls inside the held bytes gets
//! `Hold` again (nothing is stored twice); a line that turns out not to be a `227` is released
//! unchanged; more than 1024 held bytes make the gateway give up and send them unchanged. A
//! hole in sequence space while holding is answered with `Hold` (the segment is dropped, the
//! sender retransmits it once the hole is filled). Lines that need no rewriting are never held.
//!
//! # The delta rule
//!
//! A rewrite of a field of `n` bytes by `m` bytes at original sequence number `s` changes the
//! direction's cumulative delta from `d` to `d + m - n`. Like IPVS (`ip_vs_app.c`), the session
//! remembers where the current delta starts and the delta before it, so a segment starting at
//! or before `s` (an old retransmission) is mapped with the previous delta and a segment after it
//! with the new one; we keep the last 8 rewrites per direction instead of one, so even an old
//! retransmission from two rewrites back maps exactly (older than that falls back to the oldest
//! known delta, the IPVS behaviour). [`FtpSession::map_seq`] maps a segment's sequence number
//! (`seq' = seq + delta(seq)`); [`FtpSession::map_ack`] maps the acknowledgement of the other
//! direction back (`ack = ack' - delta`). An ack that points inside a rewritten field is clamped
//! to the field's start. All arithmetic wraps and compares as serial numbers.
//!
//! # Engine checklist
//!
//! 1. On SYN / SYN-ACK call [`FtpSession::set_isn`] (optional but recommended).
//!    Optionally [`FtpSession::set_max_payload`] with the path MSS, so a released hold plus a
//!    full-sized segment never yields a `Replace` larger than the MTU.
//! 2. For each control segment with payload: `on_segment(now, dir, seq_on_wire, payload, &mut
//!    actions)`, then act on the verdict: `Forward` (keep payload), `Replace` (send `payload`
//!    with sequence `map_seq(dir, seq)`), `Hold` (drop the segment). Optionally ask
//!    [`FtpSession::on_segment_quick`] first: when it returns true the segment needed nothing
//!    (its verdict is `Forward`, no actions), which keeps floods of tiny segments cheap.
//! 3. For *every* segment (with or without payload): `seq = map_seq(dir, seq)`,
//!    `ack = map_ack(dir, ack)`, fix checksums; SACK edges go through `map_ack` too (the engine
//!    maps a left edge inside a rewritten field to the field's end).
//! 4. Install `actions.expectations`, count `actions.events`, clear `actions`.
//! 5. If [`FtpSession::is_tls`] turned true: pin new connections from the client IP to the VIP
//!    to this real server for the life of the control connection.
//!
//! ```
//! use ferrovs_ftp_alg::*;
//! let p = SessionParams {
//!     mode: Mode::Nat,
//!     client: "192.0.2.7:40000".parse().unwrap(),
//!     vip: "10.0.0.100:21".parse().unwrap(),
//!     real: "10.0.2.2:21".parse().unwrap(),
//!     allow_foreign_port_address: false,
//!     pinhole_timeout: 60_000_000_000,
//! };
//! let mut s = FtpSession::new(p);
//! let mut out = Actions::default();
//! // A 227 counts only as the answer to the client's PASV.
//! assert_eq!(s.on_segment(0, Dir::Original, 500, b"PASV\r\n", &mut out), Verdict::Forward);
//! let v = s.on_segment(0, Dir::Reply, 1000, b"227 Entering Passive Mode (10,0,2,2,4,1)\r\n", &mut out);
//! assert_eq!(v, Verdict::Replace { seq: 1000, payload: b"227 Entering Passive Mode (10,0,0,100,4,1)\r\n".to_vec() });
//! assert_eq!(out.expectations[0].kind, ExpectKind::Passive { vip_port: Some(1025), real_port: Some(1025) });
//! // Later reply bytes are shifted by the 2 extra bytes; client acks are shifted back.
//! assert_eq!(s.map_seq(Dir::Reply, 1044), 1046);
//! assert_eq!(s.map_ack(Dir::Original, 1046), 1044);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};

pub mod parse;
mod seq;
mod session;

pub use session::{FtpSession, Quick, Stats, MAX_LINE};

/// One direction's sequence-number translation reduced to its newest rewrite, as a cluster
/// peer needs it to carry a control connection on after the node that rewrote it failed:
/// segments starting after `at` move by `after`, the others by `before` (acks map back the
/// same way). [`FtpSession::seq_shift`] reads it, [`FtpSession::resume`] starts from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqShift {
    /// Original sequence number where the newest rewritten field starts.
    pub at: u32,
    /// Delta of segments starting at or before `at`.
    pub before: i32,
    /// Delta of segments starting after `at`.
    pub after: i32,
}

/// How the virtual service forwards packets to the real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The balancer sees both directions and rewrites addresses.
    Nat,
    /// Direct routing: the balancer sees only client -> server.
    Dr,
    /// Full NAT: as [`Mode::Nat`], and the real server sees the balancer's local address
    /// `local` instead of the client, so it could not connect to the address a `PORT`/`EPRT`
    /// names: the command is rewritten to a port the engine reserves on `local`
    /// ([`Grant::OpenAt`] answering an [`ExpectKind::Active`] request), and the engine
    /// translates the server's connection there to `vip:20 -> client:port`.
    Fnat {
        /// The control connection's local (source) address towards the real server.
        local: IpAddr,
    },
}

impl Mode {
    /// Does the balancer see the server's replies (NAT and full NAT)?
    pub fn sees_replies(self) -> bool {
        self != Mode::Dr
    }
}

/// Direction of a segment on the control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client -> server (commands).
    Original,
    /// Server -> client (replies).
    Reply,
}

impl Dir {
    /// The other direction.
    pub fn reverse(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
}

/// What the session needs to know about its control connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// NAT or DR.
    pub mode: Mode,
    /// The client's address and port of the control connection.
    pub client: SocketAddr,
    /// The virtual service address (port 21 normally).
    pub vip: SocketAddr,
    /// The real server the control connection was balanced to.
    pub real: SocketAddr,
    /// Allow `PORT`/`EPRT` to name another address than the client's (FXP); off by default in
    /// any sane configuration because it enables FTP bounce attacks.
    pub allow_foreign_port_address: bool,
    /// Lifetime of an expectation, in nanoseconds.
    pub pinhole_timeout: u64,
}

/// Output of [`FtpSession::on_segment`]. The caller clears it between calls (or not: the session
/// only appends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Data connections to expect.
    pub expectations: Vec<Expectation>,
    /// Things worth counting or logging.
    pub events: Vec<Event>,
}

impl Actions {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.expectations.clear();
        self.events.clear();
    }
}

/// What to do with the segment just fed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Send the segment with its payload unchanged (seq/ack still go through `map_seq` /
    /// `map_ack`).
    Forward,
    /// Send, instead of the received payload, `payload` at original-space sequence number `seq`
    /// (map it with [`FtpSession::map_seq`]). It may start before the segment (held bytes are
    /// released) and may cover less than the segment (the rest is held).
    Replace {
        /// Original-space sequence number of `payload[0]`.
        seq: u32,
        /// The bytes to send.
        payload: Vec<u8>,
    },
    /// Drop the segment. Its bytes are either kept inside the gateway (a `227` line waiting for
    /// its end) or were already held, or it follows a hole while bytes are held.
    Hold,
}

/// A data connection the engine should let through and translate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Expectation {
    /// Which connection.
    pub kind: ExpectKind,
    /// The client address: the data connection's source (passive) or destination (active). For
    /// an allowed foreign `PORT` this is the named address.
    pub client: IpAddr,
    /// The virtual service address.
    pub vip: IpAddr,
    /// The real server address.
    pub real: IpAddr,
    /// `now + pinhole_timeout`, in the caller's clock.
    pub expires: u64,
}

/// The two kinds of FTP data connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectKind {
    /// `client_ip:* -> vip:vip_port` (`None` = any port, DR) goes to `real:real_port` (`None` =
    /// the same port the client used).
    Passive {
        /// VIP port the client will connect to; `None` in DR.
        vip_port: Option<u16>,
        /// Real server port to send it to; `None` = the port the client used.
        real_port: Option<u16>,
    },
    /// `real:rs_src_port` (`None` = any) -> `client:client_port`, translated to come from
    /// `vip:20` (NAT). The gateway always sets `rs_src_port: None` (vsftpd uses 20, pyftpdlib
    /// only when root): match on `(real, client, client_port)`.
    Active {
        /// Port the client listens on.
        client_port: u16,
        /// Source port the real server will use, if known.
        rs_src_port: Option<u16>,
    },
}

/// The engine's answer when the session asks to open a data connection (see [`Pinholes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Opened as asked.
    Open,
    /// NAT passive only: the VIP port asked for is taken by another session's expectation (or
    /// by another service), so the engine opened `vip:port -> real:real_port` on this other VIP
    /// port instead; the session rewrites the `227`/`229` reply to announce it. This is what
    /// Linux's nf_nat_ftp does when `nf_ct_expect_related` reports a clash: it tries the next
    /// port. Full NAT active ([`Mode::Fnat`]): the engine reserved this port on the local
    /// address; the session rewrites the `PORT`/`EPRT` to name `local:port`. Any other kind
    /// answered with `OpenAt` is treated as [`Grant::Refused`].
    OpenAt(u16),
    /// Not opened (a clash that cannot be moved, or a limit). The session still rewrites the
    /// reply's address to the VIP (never leaking the real server's address) and counts it.
    Refused,
}

/// Where the session's expectations go. The engine implements it over its expectation table
/// and passes it to [`FtpSession::on_segment_with`]; the answer arrives synchronously because
/// a moved passive port has to be written into the very reply being processed.
pub trait Pinholes {
    /// Open (or refuse, or move) the data connection `e`.
    fn open(&mut self, e: &Expectation) -> Grant;
}

/// A [`Pinholes`] that opens everything as asked ([`FtpSession::on_segment`] uses it).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAll;

impl Pinholes for OpenAll {
    fn open(&mut self, _e: &Expectation) -> Grant {
        Grant::Open
    }
}

/// Things the engine may count or log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A `227` address was rewritten to the VIP.
    Rewrite,
    /// A `PORT`/`EPRT` naming another address than the client's (FTP bounce) was refused,
    /// whatever its port.
    BounceRefused {
        /// Address the command named.
        named: IpAddr,
        /// Port the command named.
        port: u16,
    },
    /// `AUTH TLS` accepted: the session is no longer parsed; pin the client to this RS.
    TlsFallback,
    /// A line longer than [`MAX_LINE`] was skipped.
    Oversized,
    /// A `PORT`/`EPRT`/`227`/`229` line that does not parse (e.g. pure-ftpd's `227 Logout.`).
    Malformed,
    /// A `227`/`229` that does not answer a pending `PASV`/`EPSV` of this session (unsolicited,
    /// inside a multi-line reply, or answering another command): nothing was opened.
    Unsolicited,
    /// A data port below 1024 was announced or named: nothing was opened (see
    /// [`FtpSession::set_allow_low_data_ports`]).
    LowPort {
        /// The port.
        port: u16,
    },
    /// The engine refused an expectation ([`Grant::Refused`]).
    Refused,
    /// The engine moved a passive expectation to another VIP port ([`Grant::OpenAt`]).
    Moved {
        /// The port the real server announced.
        from: u16,
        /// The VIP port announced to the client instead.
        to: u16,
    },
    /// `AUTH TLS` was refused: the client went on in plain text, parsing continues.
    TlsRefused,
}
