//! Connection sync between the nodes of a cluster: the wire format (versions 1 to 6), its
//! parser and encoder, datagram authentication and the replay guard, and the rate-bounded
//! batcher. Sans-IO: the daemon's sync thread owns the UDP
//! socket (`crate::cluster::syncd`), the workers produce and consume [`SyncEntry`] values.
//!
//! As the IPVS sync daemon (`ip_vs_sync.c`, protocol version 1) a node sends what changed
//! (connection created, TCP state changed, removed; persistence templates; FTP expectations;
//! SYN-proxy sequence offsets) batched into datagrams, best effort over UDP, and re-sends
//! every live connection every `sync_refresh` seconds so a lost datagram only delays a peer.
//! A received connection is backup state: the peer installs it without counting it in its
//! schedulers; the first packet that reaches the peer for it makes it an ordinary connection.
//!
//! # Wire format, version 1 (all integers big-endian)
//!
//! ```text
//! message  = header entry*
//! header   = "FVSY" version:u8(=1|3) node:u8 count:u16 seq:u32        (12 bytes)
//! entry    = kind:u8 len:u8 body                  len counts kind and len themselves
//! flags    = bit 0: IPv6 addresses (16 bytes, else 4)
//!            bit 1: FTP data connection          (kind 1)
//!            bit 2: SYN proxy established, `delta` valid (kind 1)
//!            bit 3: full NAT, version 3 and 4 only (kinds 1 and 2, below)
//! kind 1 conn      flags proto:u8 state:u8 fwd:u8 cport:u16 vport:u16 rport:u16
//!                  timeout_s:u32 delta:u32 client vip rs         (32 bytes IPv4, 68 IPv6)
//! kind 2 delete    flags proto:u8 cport:u16 vport:u16 client vip (16 / 40)
//! kind 3 template  flags proto:u8 vport:u16 rport:u16 timeout_s:u32 client vip rs (24 / 60)
//! kind 4 expect    flags ekind:u8 port:u16 rport:u16 ctl_cport:u16 ctl_vport:u16
//!                  timeout_s:u32 client vip rs                   (28 / 64)
//! ```
//!
//! `state` is the engine's TCP state number (`tcpstate::TcpState`, UDP = 11), `fwd` 0 NAT,
//! 1 DR, 2 tunnel, 3 full NAT (version 3+). `timeout_s` is what remains of the entry's life at the sender. `rport` 0 in
//! an expectation means "the port the client uses". An expectation's `ekind` is 1 NAT
//! passive (client -> vip:port), 2 DR passive (client -> vip:any), 3 NAT active
//! (rs -> client:port), 4 DR active (client:port -> vip); `ctl_*` name its control
//! connection (client:ctl_cport -> vip:ctl_vport), which the receiver must know (synced).
//! A receiver skips entries of kinds it does not know (by `len`) and drops a message of
//! another version or with a malformed entry whole (counted).
//!
//! # Version 3: full-NAT mappings (what this node sends without a key)
//!
//! The header and entries of version 1, plus flag bit 3 (8), "full NAT", on kinds 1 and 2:
//!
//! ```text
//! kind 1 conn      (fwd = 3) ... client vip rs lport:u16 laddr     (38 bytes IPv4, 86 IPv6)
//! kind 2 delete    ... client vip lport:u16                         (18 / 42)
//! kind 5 seq       flags cport:u16 vport:u16 at:u32 before:i32 after:i32   (client -> server)
//!                  at:u32 before:i32 after:i32 (server -> client) client vip [lport:u16]
//!                                                                   (39 / 63, +2 full NAT)
//! ```
//!
//! Kind 5 carries the FTP gateway's sequence-number translation of a NAT or full-NAT control
//! connection (TCP, client:cport -> vip:vport) per direction, reduced to its newest
//! length-changing rewrite ([`ferrovs_ftp_alg::SeqShift`]): segments starting after `at` move
//! by `after`, the others by `before`. The sender sends it when a rewrite changes a delta and
//! with every refresh of the connection; the receiver gives its backup copy of the control
//! connection a gateway session resumed from it (`FtpSession::resume`), so the translation
//! goes on where the failed node left it. Versions 1 and 2 skip kind 5 as unknown.
//!
//! A full-NAT connection client:cport -> vip:vport left the sender as laddr:lport -> rs:rport.
//! `fwd` 3 goes with the flag and only with it. A receiver installs the connection on the
//! worker that owns `lport` under its own partition of `local_port_range` (where the real
//! server's replies to laddr:lport arrive, [`route`]), reserves laddr:lport in that worker's
//! port pool (never handed out while the connection lives there; a port already in use is
//! refused, counted as `sync_skipped`), and translates replies to laddr:lport once the
//! routers send them there (a failed node's local addresses are announced by its peers,
//! README "Cluster"). A deletion's `lport` routes it to the same worker. The flag in a
//! version 1 or 2 datagram is malformed. Versions 1 and 2 from older nodes are still
//! accepted (their entries never carry the flag); older nodes refuse version 3 and 4
//! (`messages_version`): upgrade every node before relying on full-NAT failover.
//!
//! # Versions 5 and 6: placement fingerprint, full-NAT active-mode expectations
//!
//! What this node sends: version 3 (5) or version 4 (6) with a placement block after the
//! header, and flag bit 3 (8) allowed on kind 4 too:
//!
//! ```text
//! header    = version 3's (12 bytes) or version 4's (24 bytes) header, version 5 or 6, then
//!             workers:u16 port_lo:u16 port_hi:u16 nodes:u32                 (+10 bytes)
//! kind 4 expect (flag 8, ekind 3 only) ... client vip rs cport:u16 laddr   (34 / 82 bytes)
//! ```
//!
//! The placement block is what decides where a node keeps a connection and must be equal on
//! every node ([`Placement`]): `engine.workers`, `engine.local_port_range` and `nodes`, the
//! first 4 bytes of SHA-256 over the `[[cluster.node]]` tables (by id; each id, the number of
//! its addresses and the addresses in order, 4 or 16 bytes after a byte 4 or 6). A full-NAT
//! connection lives on the worker that owns its local port under the partition of
//! `local_port_range` over the workers, on the sender and on every receiver, and the client
//! side must reach that worker too: with other values a peer would install connections where
//! no packet of theirs arrives and reserve ports its own partition hands out. A receiver
//! refuses a datagram whose block differs from its own whole (counted as
//! `messages_placement`, logged at most once a second naming what differs). Versions 1 to 4
//! carry no block and are accepted as before (a node of an older release).
//!
//! A kind-4 entry with flag 8 is a full-NAT active-mode expectation: the client's PORT/EPRT
//! named client:`cport`, the real server `rs` was told to connect to `laddr`:`port`, a port
//! the sender reserved on the control connection's local address, and the data connection
//! becomes vip:20 -> client:cport. A receiver installs it on the worker owning `port` (as a
//! full-NAT connection's local port, [`route`]) and reserves laddr:port there until it is
//! used or its timeout ends (a port in use there: refused, `sync_skipped`); so the real
//! server's SYN, routed to a survivor after the sender failed, is expected there too. The
//! flag on another `ekind`, or in a version 3 or 4 datagram, is malformed.
//!
//! # Versions 2 and 4: authenticated (`[cluster] sync_key` / `sync_key_file`)
//!
//! ```text
//! message  = header entry* mac
//! header   = "FVSY" version:u8(=2|4) node:u8 count:u16 seq:u32 epoch:u64 time:u32   (24 bytes)
//! mac      = HMAC-SHA256(key, header entry*) truncated to its first 16 bytes
//! ```
//!
//! Entries are those of version 1 (version 2) or version 3 (version 4). `epoch` names the sender's incarnation (its start time in
//! microseconds since 1970, bumped when `seq` wraps), `seq` counts its datagrams from 1,
//! `time` is its clock (seconds since 1970, low 32 bits) when it sent the datagram. A node with
//! a key sends version 4 and accepts only version 2 and 4 datagrams whose MAC verifies (in
//! constant time); a node without a key sends version 3 and accepts versions 1 and 3 only (an
//! authenticated datagram cannot be verified there). After the MAC, [`ReplayGuard`] bounds replay: per
//! sender the newest epoch wins (older epochs are refused), within it a 64-datagram window
//! of `seq` as IPsec's anti-replay window (RFC 4303 3.4.3) refuses duplicates and anything
//! older than the window, and `time` must lie within [`MAX_SKEW_S`] of the receiver's clock
//! (nodes run NTP), so a datagram captured earlier is refused even by a receiver that just
//! restarted and has no window yet. Failures are counted (`messages_auth_failed`,
//! `messages_replayed`) and the datagram is dropped whole.

use crate::wire::parse::{addr_is_v4, addr_v4_bytes, addr_v6_bytes, v4_to_addr, v6_to_addr, Addr};

pub const MAGIC: &[u8; 4] = b"FVSY";
/// The unauthenticated format this node sends (version 5: version 3 plus the placement
/// fingerprint and full-NAT active-mode expectations).
pub const VERSION: u8 = 5;
pub const HEADER_LEN: usize = 12;
/// The authenticated format this node sends (version 6: version 4 plus what version 5 adds).
pub const VERSION_AUTH: u8 = 6;
pub const HEADER_LEN_AUTH: usize = 24;
/// Older formats still accepted: version 1 (unauthenticated) and 2 (authenticated), whose
/// entries carry no full-NAT mapping; versions 3 and 4, with full-NAT mappings but neither
/// the placement fingerprint nor full-NAT active-mode expectations.
pub const VERSION_V1: u8 = 1;
pub const VERSION_AUTH_V2: u8 = 2;
pub const VERSION_V3: u8 = 3;
pub const VERSION_AUTH_V4: u8 = 4;
/// Bytes of the truncated HMAC-SHA256 ending an authenticated datagram.
pub const MAC_LEN: usize = 16;
/// Largest difference between an authenticated datagram's `time` and the receiver's clock.
pub const MAX_SKEW_S: u32 = 30;
/// Largest datagram the encoder builds (fits a 1500-byte MTU with IPv6 and UDP headers).
pub const MAX_MESSAGE: usize = 1400;

const F_V6: u8 = 1;
const F_DATA: u8 = 2;
const F_PROXY: u8 = 4;
/// Version 3+: a full-NAT connection (kind 1: `lport` and `laddr` follow; kinds 2 and 5:
/// `lport`).
const F_FNAT: u8 = 8;

/// A connection as synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnSync {
    pub proto: u8,
    pub state: u8,
    pub fwd: u8,
    pub data: bool,
    pub client: Addr,
    pub cport: u16,
    pub vip: Addr,
    pub vport: u16,
    pub rs: Addr,
    pub rport: u16,
    pub timeout_s: u32,
    /// SYN proxy: the sequence offset of an established proxied connection.
    pub proxy_delta: Option<u32>,
    /// Full NAT (`fwd` 3): the local address and port the sender rewrote the client to.
    pub fnat: Option<(Addr, u16)>,
}

/// A persistence template: `client` (masked) of the service at vip:vport goes to rs:rport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateSync {
    pub proto: u8,
    pub client: Addr,
    pub vip: Addr,
    pub vport: u16,
    pub rs: Addr,
    pub rport: u16,
    pub timeout_s: u32,
}

/// Kinds of FTP expectations (see [`crate::flow::expect::ExpKey`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectKind {
    Passive = 1,
    PassiveAny = 2,
    Active = 3,
    DrActive = 4,
}

/// An FTP expectation of the control connection client:ctl_cport -> vip:ctl_vport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectSync {
    pub kind: ExpectKind,
    /// The expected port (meaning per kind; 0 for PassiveAny).
    pub port: u16,
    /// Real-server port, 0: the port the client uses.
    pub rport: u16,
    pub ctl_cport: u16,
    pub ctl_vport: u16,
    pub client: Addr,
    pub vip: Addr,
    pub rs: Addr,
    pub timeout_s: u32,
    /// Full NAT active (version 5+, `kind` Active): the sender's local address the real
    /// server connects to (at `port`, reserved there) and the client's data port.
    pub fnat: Option<(Addr, u16)>,
}

/// The FTP gateway's sequence-number translation of a NAT / full-NAT control connection
/// (kind 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSync {
    pub client: Addr,
    pub cport: u16,
    pub vip: Addr,
    pub vport: u16,
    /// Full NAT: the connection's local port (it decides the receiving worker).
    pub lport: Option<u16>,
    /// Client -> server.
    pub orig: ferrovs_ftp_alg::SeqShift,
    /// Server -> client.
    pub reply: ferrovs_ftp_alg::SeqShift,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEntry {
    Conn(ConnSync),
    /// `lport`: a full-NAT connection's local port (it decides the receiving worker).
    Delete {
        proto: u8,
        client: Addr,
        cport: u16,
        vip: Addr,
        vport: u16,
        lport: Option<u16>,
    },
    Template(TemplateSync),
    Expect(ExpectSync),
    Seq(SeqSync),
}

impl SyncEntry {
    /// The client address: it decides the worker that owns the entry.
    pub fn client(&self) -> Addr {
        match self {
            SyncEntry::Conn(c) => c.client,
            SyncEntry::Delete { client, .. } => *client,
            SyncEntry::Template(t) => t.client,
            SyncEntry::Expect(e) => e.client,
            SyncEntry::Seq(q) => q.client,
        }
    }

    /// A full-NAT connection's local port: it decides the receiving worker instead of the
    /// client ([`route`]).
    pub fn lport(&self) -> Option<u16> {
        match self {
            SyncEntry::Conn(c) => c.fnat.map(|f| f.1),
            SyncEntry::Delete { lport, .. } => *lport,
            SyncEntry::Seq(q) => q.lport,
            SyncEntry::Expect(e) => e.fnat.map(|_| e.port),
            _ => None,
        }
    }

    fn v6(&self) -> bool {
        !addr_is_v4(self.client())
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        let a = if self.v6() { 16 } else { 4 };
        match self {
            SyncEntry::Conn(c) => 20 + 3 * a + if c.fnat.is_some() { 2 + a } else { 0 },
            SyncEntry::Delete { lport, .. } => 8 + 2 * a + if lport.is_some() { 2 } else { 0 },
            SyncEntry::Template(_) => 12 + 3 * a,
            SyncEntry::Expect(e) => 16 + 3 * a + if e.fnat.is_some() { 2 + a } else { 0 },
            SyncEntry::Seq(q) => 31 + 2 * a + if q.lport.is_some() { 2 } else { 0 },
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Append the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let v6 = self.v6();
        let fl = if v6 { F_V6 } else { 0 };
        let addr = |out: &mut Vec<u8>, a: Addr| {
            if v6 {
                out.extend_from_slice(&addr_v6_bytes(a));
            } else {
                out.extend_from_slice(&addr_v4_bytes(a));
            }
        };
        let start = out.len();
        match *self {
            SyncEntry::Conn(c) => {
                let f = fl
                    | if c.data { F_DATA } else { 0 }
                    | if c.proxy_delta.is_some() { F_PROXY } else { 0 }
                    | if c.fnat.is_some() { F_FNAT } else { 0 };
                out.extend_from_slice(&[1, 0, f, c.proto, c.state, c.fwd]);
                for p in [c.cport, c.vport, c.rport] {
                    out.extend_from_slice(&p.to_be_bytes());
                }
                out.extend_from_slice(&c.timeout_s.to_be_bytes());
                out.extend_from_slice(&c.proxy_delta.unwrap_or(0).to_be_bytes());
                for a in [c.client, c.vip, c.rs] {
                    addr(out, a);
                }
                if let Some((la, lport)) = c.fnat {
                    out.extend_from_slice(&lport.to_be_bytes());
                    addr(out, la);
                }
            }
            SyncEntry::Delete { proto, client, cport, vip, vport, lport } => {
                out.extend_from_slice(&[2, 0, fl | if lport.is_some() { F_FNAT } else { 0 }, proto]);
                out.extend_from_slice(&cport.to_be_bytes());
                out.extend_from_slice(&vport.to_be_bytes());
                addr(out, client);
                addr(out, vip);
                if let Some(p) = lport {
                    out.extend_from_slice(&p.to_be_bytes());
                }
            }
            SyncEntry::Template(t) => {
                out.extend_from_slice(&[3, 0, fl, t.proto]);
                out.extend_from_slice(&t.vport.to_be_bytes());
                out.extend_from_slice(&t.rport.to_be_bytes());
                out.extend_from_slice(&t.timeout_s.to_be_bytes());
                for a in [t.client, t.vip, t.rs] {
                    addr(out, a);
                }
            }
            SyncEntry::Expect(e) => {
                out.extend_from_slice(&[4, 0, fl | if e.fnat.is_some() { F_FNAT } else { 0 }, e.kind as u8]);
                for p in [e.port, e.rport, e.ctl_cport, e.ctl_vport] {
                    out.extend_from_slice(&p.to_be_bytes());
                }
                out.extend_from_slice(&e.timeout_s.to_be_bytes());
                for a in [e.client, e.vip, e.rs] {
                    addr(out, a);
                }
                if let Some((la, cport)) = e.fnat {
                    out.extend_from_slice(&cport.to_be_bytes());
                    addr(out, la);
                }
            }
            SyncEntry::Seq(q) => {
                out.extend_from_slice(&[5, 0, fl | if q.lport.is_some() { F_FNAT } else { 0 }]);
                out.extend_from_slice(&q.cport.to_be_bytes());
                out.extend_from_slice(&q.vport.to_be_bytes());
                for sh in [q.orig, q.reply] {
                    out.extend_from_slice(&sh.at.to_be_bytes());
                    out.extend_from_slice(&sh.before.to_be_bytes());
                    out.extend_from_slice(&sh.after.to_be_bytes());
                }
                addr(out, q.client);
                addr(out, q.vip);
                if let Some(p) = q.lport {
                    out.extend_from_slice(&p.to_be_bytes());
                }
            }
        }
        out[start + 1] = (out.len() - start) as u8;
        debug_assert_eq!(out.len() - start, self.len());
    }
}

/// The shared key of a cluster's sync datagrams: HMAC-SHA256 keyed once, cloned per datagram.
#[derive(Clone)]
pub struct SyncKey(hmac::Hmac<sha2::Sha256>);

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncKey(..)")
    }
}

impl SyncKey {
    pub fn new(key: &[u8]) -> Self {
        use hmac::Mac;
        SyncKey(hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    /// The MAC of `b`: HMAC-SHA256 truncated to [`MAC_LEN`] bytes.
    pub fn tag(&self, b: &[u8]) -> [u8; MAC_LEN] {
        use hmac::Mac;
        let mut m = self.0.clone();
        m.update(b);
        let full = m.finalize().into_bytes();
        full[..MAC_LEN].try_into().expect("32-byte digest")
    }

    /// Whether `tag` is the MAC of `b` (constant-time comparison).
    pub fn verify(&self, b: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let mut m = self.0.clone();
        m.update(b);
        tag.len() == MAC_LEN && m.verify_truncated_left(tag).is_ok()
    }
}

/// Why a message was refused (counted by the receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// Shorter than the header, wrong magic.
    NotSync,
    /// Another protocol version.
    Version(u8),
    /// An entry runs past the end, has a length that does not fit its kind, or the count
    /// does not match.
    Malformed,
    /// An authenticated version (2, 4, 6) with a MAC that does not verify or on a node without
    /// a key, or an unauthenticated one (1, 3, 5) on a node with one.
    Auth,
    /// Authentic but replayed: a duplicate or too old `seq`, an old epoch, a stale `time`.
    Replay,
    /// From a node whose placement-relevant configuration differs from this node's
    /// ([`Placement::differences`] says how).
    Placement,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::NotSync => f.write_str("not a ferrovs sync message"),
            SyncError::Version(v) => write!(f, "sync protocol version {v}, this node speaks 1 to {VERSION_AUTH}"),
            SyncError::Malformed => f.write_str("malformed sync message"),
            SyncError::Auth => {
                f.write_str("sync message not authenticated by this node's sync_key (or this node has none)")
            }
            SyncError::Replay => f.write_str("replayed or stale sync message"),
            SyncError::Placement => f.write_str(
                "sync message from a node whose workers, local_port_range or [[cluster.node]] tables differ",
            ),
        }
    }
}

/// A parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub node: u8,
    pub seq: u32,
    /// Versions 2, 4 and 6: the sender's incarnation and clock (0 otherwise).
    pub epoch: u64,
    pub time: u32,
    pub entries: Vec<SyncEntry>,
    /// Entries of kinds this version does not know, skipped.
    pub unknown: usize,
    /// Version 5 and 6: the sender's placement-relevant configuration.
    pub placement: Option<Placement>,
}

/// The configuration that decides where a node keeps a connection, carried by every
/// version 5 and 6 datagram and compared by the receiver (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `engine.workers`.
    pub workers: u16,
    /// `engine.local_port_range`.
    pub port_lo: u16,
    pub port_hi: u16,
    /// The first 4 bytes of SHA-256 over the `[[cluster.node]]` tables.
    pub nodes: u32,
}

impl Placement {
    /// Encoded length.
    pub const LEN: usize = 10;

    /// This node's: `workers` workers, `range` their local ports, `nodes` the
    /// `[[cluster.node]]` tables (in any order: sorted by id here).
    pub fn of(workers: usize, range: ferrovs_cfg::PortRange, nodes: &[ferrovs_cfg::ClusterNode]) -> Self {
        use sha2::Digest;
        let mut sorted: Vec<&ferrovs_cfg::ClusterNode> = nodes.iter().collect();
        sorted.sort_by_key(|n| n.id);
        let mut h = sha2::Sha256::new();
        for n in sorted {
            h.update([n.id, n.local_addresses.len().min(255) as u8]);
            for a in &n.local_addresses {
                match a {
                    std::net::IpAddr::V4(v) => {
                        h.update([4]);
                        h.update(v.octets());
                    }
                    std::net::IpAddr::V6(v) => {
                        h.update([6]);
                        h.update(v.octets());
                    }
                }
            }
        }
        let d = h.finalize();
        Placement {
            workers: workers.min(u16::MAX as usize) as u16,
            port_lo: range.lo,
            port_hi: range.hi,
            nodes: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.workers, self.port_lo, self.port_hi] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.nodes.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Placement {
            workers: u16_at(0),
            port_lo: u16_at(2),
            port_hi: u16_at(4),
            nodes: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        }
    }

    /// `None` if a peer with `peer` places connections as this node does; otherwise what
    /// differs, in words for the log (ours first).
    pub fn differences(&self, peer: &Placement) -> Option<String> {
        let mut d = Vec::new();
        if self.workers != peer.workers {
            d.push(format!("workers {} here, {} there", self.workers, peer.workers));
        }
        if (self.port_lo, self.port_hi) != (peer.port_lo, peer.port_hi) {
            d.push(format!(
                "local_port_range {}-{} here, {}-{} there",
                self.port_lo, self.port_hi, peer.port_lo, peer.port_hi
            ));
        }
        if self.nodes != peer.nodes {
            d.push(format!(
                "[[cluster.node]] tables differ (digest {:08x} here, {:08x} there)",
                self.nodes, peer.nodes
            ));
        }
        (!d.is_empty()).then(|| d.join("; "))
    }
}

struct Rd<'a> {
    b: &'a [u8],
    o: usize,
}

impl Rd<'_> {
    fn u8(&mut self) -> Result<u8, SyncError> {
        let v = *self.b.get(self.o).ok_or(SyncError::Malformed)?;
        self.o += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, SyncError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, SyncError> {
        Ok(((self.u16()? as u32) << 16) | self.u16()? as u32)
    }
    fn addr(&mut self, v6: bool) -> Result<Addr, SyncError> {
        let n = if v6 { 16 } else { 4 };
        let s = self.b.get(self.o..self.o + n).ok_or(SyncError::Malformed)?;
        self.o += n;
        Ok(if v6 { v6_to_addr(s.try_into().expect("16 bytes")) } else { v4_to_addr(s.try_into().expect("4 bytes")) })
    }
}

fn is_proto(p: u8) -> bool {
    p == crate::wire::parse::PROTO_TCP || p == crate::wire::parse::PROTO_UDP
}

/// Parse an unauthenticated (version 1, 3 or 5) datagram: [`parse_with`] without a key.
pub fn parse(b: &[u8]) -> Result<Message, SyncError> {
    parse_with(b, None)
}

/// Parse a datagram; with `key`, only an authentic version 2, 4 or 6 datagram is accepted,
/// without, only version 1, 3 or 5. Never panics; any inconsistency refuses the whole
/// message. Replay is checked by the caller ([`ReplayGuard`]) on the parsed header, the
/// placement too ([`Placement::differences`]).
pub fn parse_with(b: &[u8], key: Option<&SyncKey>) -> Result<Message, SyncError> {
    if b.len() < HEADER_LEN || &b[0..4] != MAGIC {
        return Err(SyncError::NotSync);
    }
    let version = b[4];
    // The entry format: 1 (versions 1, 2), 3 (3, 4: full-NAT mappings), 5 (5, 6: and full-NAT
    // active expectations, after a placement block).
    let level = match version {
        VERSION_V1 | VERSION_AUTH_V2 => 1,
        VERSION_V3 | VERSION_AUTH_V4 => 3,
        VERSION | VERSION_AUTH => 5,
        v => return Err(SyncError::Version(v)),
    };
    let authenticated = matches!(version, VERSION_AUTH_V2 | VERSION_AUTH_V4 | VERSION_AUTH);
    let base = if authenticated { HEADER_LEN_AUTH } else { HEADER_LEN };
    let start = base + if level == 5 { Placement::LEN } else { 0 };
    let (body, epoch, time) = match (authenticated, key) {
        (false, None) => {
            if b.len() < start {
                return Err(SyncError::Malformed);
            }
            (b, 0, 0)
        }
        (false, Some(_)) | (true, None) => return Err(SyncError::Auth),
        (true, Some(k)) => {
            if b.len() < start + MAC_LEN {
                return Err(SyncError::Malformed);
            }
            let (signed, tag) = b.split_at(b.len() - MAC_LEN);
            if !k.verify(signed, tag) {
                return Err(SyncError::Auth);
            }
            let epoch = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"));
            let time = u32::from_be_bytes(b[20..24].try_into().expect("4 bytes"));
            (signed, epoch, time)
        }
    };
    let node = b[5];
    let count = u16::from_be_bytes([b[6], b[7]]) as usize;
    let seq = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let placement = (level == 5).then(|| Placement::decode(&body[base..start]));
    let (entries, unknown) = parse_entries(body, start, count, level)?;
    Ok(Message { node, seq, epoch, time, entries, unknown, placement })
}

/// The entries of `b[start..]`, `count` of them; `level`: the entry format, 1 (versions 1
/// and 2), 3 (3 and 4: full-NAT mappings, flag 8 on kinds 1, 2 and 5) or 5 (5 and 6: flag 8
/// on kind 4 too).
fn parse_entries(b: &[u8], start: usize, count: usize, level: u8) -> Result<(Vec<SyncEntry>, usize), SyncError> {
    let fnat = level >= 3;
    let mut entries = Vec::with_capacity(count.min(b.len() / 16));
    let mut unknown = 0;
    let mut o = start;
    let mut n = 0;
    while o < b.len() {
        if b.len() - o < 2 {
            return Err(SyncError::Malformed);
        }
        let (kind, len) = (b[o], b[o + 1] as usize);
        if len < 3 || o + len > b.len() {
            return Err(SyncError::Malformed);
        }
        let body = &b[o..o + len];
        n += 1;
        o += len;
        let v6 = body[2] & F_V6 != 0;
        let a = if v6 { 16 } else { 4 };
        let mut r = Rd { b: body, o: 3 };
        let f_fnat = body[2] & F_FNAT != 0;
        if kind == 5 && !fnat {
            // Kind 5 is version 3's: an older format does not know it.
            unknown += 1;
            continue;
        }
        if f_fnat && (!fnat || !(matches!(kind, 1 | 2 | 5) || (kind == 4 && level >= 5))) {
            return Err(SyncError::Malformed);
        }
        let want = match kind {
            1 => 20 + 3 * a + if f_fnat { 2 + a } else { 0 },
            2 => 8 + 2 * a + if f_fnat { 2 } else { 0 },
            5 => 31 + 2 * a + if f_fnat { 2 } else { 0 },
            3 => 12 + 3 * a,
            4 => 16 + 3 * a + if f_fnat { 2 + a } else { 0 },
            _ => {
                unknown += 1;
                continue;
            }
        };
        if len != want {
            return Err(SyncError::Malformed);
        }
        let flags = body[2];
        let e = match kind {
            1 => {
                let proto = r.u8()?;
                let state = r.u8()?;
                let fwd = r.u8()?;
                let (cport, vport, rport) = (r.u16()?, r.u16()?, r.u16()?);
                let timeout_s = r.u32()?;
                let delta = r.u32()?;
                let (client, vip, rs) = (r.addr(v6)?, r.addr(v6)?, r.addr(v6)?);
                let fnat = if f_fnat {
                    let lport = r.u16()?;
                    Some((r.addr(v6)?, lport))
                } else {
                    None
                };
                // Forwarding 3 (full NAT) exactly when the mapping is there.
                // The SYN proxy's sequence offset only for TCP (a UDP connection's replies would
                // have their header and payload "shifted").
                if !is_proto(proto)
                    || fwd > 3
                    || (fwd == 3) != f_fnat
                    || state as usize >= crate::flow::tcpstate::N_STATES
                    || (flags & F_PROXY != 0 && proto != crate::wire::parse::PROTO_TCP)
                {
                    return Err(SyncError::Malformed);
                }
                SyncEntry::Conn(ConnSync {
                    proto,
                    state,
                    fwd,
                    data: flags & F_DATA != 0,
                    client,
                    cport,
                    vip,
                    vport,
                    rs,
                    rport,
                    timeout_s,
                    proxy_delta: (flags & F_PROXY != 0).then_some(delta),
                    fnat,
                })
            }
            2 => {
                let proto = r.u8()?;
                let (cport, vport) = (r.u16()?, r.u16()?);
                let (client, vip) = (r.addr(v6)?, r.addr(v6)?);
                let lport = if f_fnat { Some(r.u16()?) } else { None };
                if !is_proto(proto) {
                    return Err(SyncError::Malformed);
                }
                SyncEntry::Delete { proto, client, cport, vip, vport, lport }
            }
            3 => {
                let proto = r.u8()?;
                let (vport, rport) = (r.u16()?, r.u16()?);
                let timeout_s = r.u32()?;
                let (client, vip, rs) = (r.addr(v6)?, r.addr(v6)?, r.addr(v6)?);
                if !is_proto(proto) {
                    return Err(SyncError::Malformed);
                }
                SyncEntry::Template(TemplateSync { proto, client, vip, vport, rs, rport, timeout_s })
            }
            5 => {
                let (cport, vport) = (r.u16()?, r.u16()?);
                let mut sh = [ferrovs_ftp_alg::SeqShift::default(); 2];
                for x in sh.iter_mut() {
                    *x = ferrovs_ftp_alg::SeqShift { at: r.u32()?, before: r.u32()? as i32, after: r.u32()? as i32 };
                }
                let (client, vip) = (r.addr(v6)?, r.addr(v6)?);
                let lport = if f_fnat { Some(r.u16()?) } else { None };
                SyncEntry::Seq(SeqSync { client, cport, vip, vport, lport, orig: sh[0], reply: sh[1] })
            }
            _ => {
                let kind = match r.u8()? {
                    1 => ExpectKind::Passive,
                    2 => ExpectKind::PassiveAny,
                    3 => ExpectKind::Active,
                    4 => ExpectKind::DrActive,
                    _ => return Err(SyncError::Malformed),
                };
                let (port, rport, ctl_cport, ctl_vport) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
                let timeout_s = r.u32()?;
                let (client, vip, rs) = (r.addr(v6)?, r.addr(v6)?, r.addr(v6)?);
                let fnat = if f_fnat {
                    let cport = r.u16()?;
                    Some((r.addr(v6)?, cport))
                } else {
                    None
                };
                // Only an active-mode expectation has a full-NAT form.
                if fnat.is_some() && kind != ExpectKind::Active {
                    return Err(SyncError::Malformed);
                }
                SyncEntry::Expect(ExpectSync {
                    kind,
                    port,
                    rport,
                    ctl_cport,
                    ctl_vport,
                    client,
                    vip,
                    rs,
                    timeout_s,
                    fnat,
                })
            }
        };
        debug_assert_eq!(r.o, len);
        entries.push(e);
    }
    if n != count {
        return Err(SyncError::Malformed);
    }
    Ok((entries, unknown))
}

/// Bounds the replay of authentic version-2 datagrams, per sending node: the newest epoch
/// wins, a 64-datagram window of sequence numbers within it, and the sender's clock within
/// [`MAX_SKEW_S`] of ours.
#[derive(Debug)]
pub struct ReplayGuard {
    nodes: Vec<Option<Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    epoch: u64,
    top: u32,
    /// Bit i: `top - i` was seen.
    seen: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard { nodes: vec![None; 256] }
    }
}

impl ReplayGuard {
    /// Accept `m` (and remember it) or refuse it as replayed, at our clock `now_s` (seconds
    /// since 1970, low 32 bits). Call only for a datagram whose MAC verified.
    pub fn check(&mut self, m: &Message, now_s: u32) -> Result<(), SyncError> {
        let skew = now_s.wrapping_sub(m.time).min(m.time.wrapping_sub(now_s));
        if skew > MAX_SKEW_S {
            return Err(SyncError::Replay);
        }
        let slot = &mut self.nodes[m.node as usize];
        match slot {
            Some(w) if m.epoch < w.epoch => Err(SyncError::Replay),
            Some(w) if m.epoch == w.epoch => {
                if m.seq > w.top {
                    let shift = m.seq - w.top;
                    w.seen = if shift >= 64 { 0 } else { w.seen << shift } | 1;
                    w.top = m.seq;
                    Ok(())
                } else {
                    let d = w.top - m.seq;
                    if d >= 64 || w.seen & (1 << d) != 0 {
                        return Err(SyncError::Replay);
                    }
                    w.seen |= 1 << d;
                    Ok(())
                }
            }
            _ => {
                *slot = Some(Window { epoch: m.epoch, top: m.seq, seen: 1 });
                Ok(())
            }
        }
    }
}

/// Split received entries by the worker that owns them: the one that owns their client, as
/// for packets ([`crate::pipeline::snapshot::owner_of`]); a full-NAT connection's the one that owns its
/// local port under this node's partition of `port_range` ([`crate::pipeline::snapshot::lport_owner`]),
/// where the real server's replies to that port arrive.
pub fn route(entries: Vec<SyncEntry>, workers: usize, port_range: ferrovs_cfg::PortRange) -> Vec<Vec<SyncEntry>> {
    let mut out: Vec<Vec<SyncEntry>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for e in entries {
        let w = match e.lport() {
            Some(p) => crate::pipeline::snapshot::lport_owner(port_range, p, workers),
            None => crate::pipeline::snapshot::owner_of(e.client(), workers),
        };
        out[w].push(e);
    }
    out
}

/// Batches entries into datagrams of at most [`MAX_MESSAGE`] bytes, at most `rate` datagrams
/// per second (a token bucket with one second of burst). Entries beyond the budget are
/// dropped and counted: the periodic refresh sends live connections again.
#[derive(Debug)]
pub struct Batcher {
    node: u8,
    seq: u32,
    /// Version 2: the key and this sender's epoch.
    auth: Option<(SyncKey, u64)>,
    /// This node's placement-relevant configuration, in every datagram's header.
    placement: Placement,
    rate: u32,
    tokens: f64,
    last: u64,
    /// Entries dropped for the rate bound.
    pub dropped: u64,
    /// Datagrams built.
    pub messages: u64,
    /// Entries sent.
    pub entries: u64,
}

impl Batcher {
    pub fn new(node: u8, rate: u32) -> Self {
        Batcher {
            node,
            seq: 0,
            auth: None,
            placement: Placement::default(),
            rate: rate.max(1),
            tokens: rate.max(1) as f64,
            last: 0,
            dropped: 0,
            messages: 0,
            entries: 0,
        }
    }

    /// A batcher of authenticated (version 4) datagrams; `epoch` must grow from one start of
    /// the sender to the next (the daemon uses its start time in microseconds).
    pub fn with_key(node: u8, rate: u32, key: SyncKey, epoch: u64) -> Self {
        Batcher { auth: Some((key, epoch)), ..Self::new(node, rate) }
    }

    /// This batcher with this node's placement-relevant configuration (the default, all
    /// zeros, is refused by any real node: the daemon always sets it).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Change the placement block of the next datagrams.
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// Encode `entries` at time `now` (ns) into datagrams, within the rate (authenticated:
    /// stamped with time 0, see [`Batcher::encode_at`]).
    pub fn encode(&mut self, entries: &[SyncEntry], now: u64) -> Vec<Vec<u8>> {
        self.encode_at(entries, now, 0)
    }

    /// [`Batcher::encode`] with the wall clock `unix_s` (seconds since 1970, low 32 bits)
    /// that authenticated datagrams carry.
    pub fn encode_at(&mut self, entries: &[SyncEntry], now: u64, unix_s: u32) -> Vec<Vec<u8>> {
        let max = MAX_MESSAGE - if self.auth.is_some() { MAC_LEN } else { 0 };
        let dt = now.saturating_sub(self.last) as f64 / 1e9;
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
        let mut out = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        let mut n = 0u16;
        let mut i = 0;
        while i < entries.len() {
            if cur.is_empty() {
                if self.tokens < 1.0 {
                    self.dropped += (entries.len() - i) as u64;
                    break;
                }
                self.tokens -= 1.0;
                self.open(&mut cur, unix_s);
            }
            let e = &entries[i];
            if cur.len() + e.len() > max || n == u16::MAX {
                self.close(&mut cur, n, &mut out);
                n = 0;
                continue;
            }
            e.encode(&mut cur);
            n += 1;
            i += 1;
            self.entries += 1;
        }
        if !cur.is_empty() {
            self.close(&mut cur, n, &mut out);
        }
        self.messages += out.len() as u64;
        out
    }

    /// An empty datagram (no entries) that tells the peers this node lives: sent when nothing
    /// else went out for a while (`Liveness`), within the same rate bound (`None` past it).
    pub fn heartbeat_at(&mut self, now: u64, unix_s: u32) -> Option<Vec<u8>> {
        let dt = now.saturating_sub(self.last) as f64 / 1e9;
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        let mut cur = Vec::new();
        self.open(&mut cur, unix_s);
        let mut out = Vec::new();
        self.close(&mut cur, 0, &mut out);
        self.messages += 1;
        out.pop()
    }

    /// Start a datagram: header (next sequence number), authentication fields, placement.
    fn open(&mut self, cur: &mut Vec<u8>, unix_s: u32) {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            // Receivers' windows only move forward: a new epoch after a wrap.
            self.seq = 1;
            if let Some((_, epoch)) = &mut self.auth {
                *epoch += 1;
            }
        }
        cur.extend_from_slice(MAGIC);
        let v = if self.auth.is_some() { VERSION_AUTH } else { VERSION };
        cur.extend_from_slice(&[v, self.node, 0, 0]);
        cur.extend_from_slice(&self.seq.to_be_bytes());
        if let Some((_, epoch)) = &self.auth {
            cur.extend_from_slice(&epoch.to_be_bytes());
            cur.extend_from_slice(&unix_s.to_be_bytes());
        }
        self.placement.encode(cur);
    }

    fn close(&self, cur: &mut Vec<u8>, n: u16, out: &mut Vec<Vec<u8>>) {
        cur[6..8].copy_from_slice(&n.to_be_bytes());
        if let Some((k, _)) = &self.auth {
            let tag = k.tag(cur);
            cur.extend_from_slice(&tag);
        }
        out.push(std::mem::take(cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a4(x: u8) -> Addr {
        v4_to_addr([10, 0, 0, x])
    }
    fn a6(x: u8) -> Addr {
        v6_to_addr([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, x])
    }

    /// Where the entries of an unauthenticated datagram this node sends start.
    const E: usize = HEADER_LEN + Placement::LEN;

    /// The datagram `m` (version 5) as a node of version `v` (1 or 3) sends it: no placement
    /// block.
    fn downgrade(m: &[u8], v: u8) -> Vec<u8> {
        let mut d = [&m[..HEADER_LEN], &m[E..]].concat();
        d[4] = v;
        d
    }

    #[test]
    fn a_heartbeat_is_an_empty_datagram_of_the_sender_within_the_rate() {
        let mut b = Batcher::new(7, 2);
        let m = b.heartbeat_at(1_000_000_000, 0).expect("a token");
        let got = parse_with(&m, None).unwrap();
        assert_eq!((got.node, got.entries.len()), (7, 0));
        let m2 = b.heartbeat_at(1_000_000_001, 0).expect("a second token");
        assert!(parse_with(&m2, None).unwrap().seq > got.seq);
        // The bucket (2/s) is empty now: nothing until it refills.
        assert!(b.heartbeat_at(1_000_000_002, 0).is_none());
        assert!(b.heartbeat_at(1_600_000_000, 0).is_some());
    }

    /// The authenticated datagram `m` (version 6) as a node of version `v` (2 or 4) sends it.
    fn downgrade_auth(m: &[u8], v: u8, key: &SyncKey) -> Vec<u8> {
        let mut d = [&m[..HEADER_LEN_AUTH], &m[HEADER_LEN_AUTH + Placement::LEN..m.len() - MAC_LEN]].concat();
        d[4] = v;
        let tag = key.tag(&d);
        d.extend_from_slice(&tag);
        d
    }

    fn samples() -> Vec<SyncEntry> {
        let mut v = Vec::new();
        for a in [a4 as fn(u8) -> Addr, a6] {
            v.push(SyncEntry::Conn(ConnSync {
                proto: 6,
                state: 1,
                fwd: 1,
                data: true,
                client: a(2),
                cport: 40000,
                vip: a(100),
                vport: 80,
                rs: a(10),
                rport: 8080,
                timeout_s: 900,
                proxy_delta: Some(0xdead_beef),
                fnat: None,
            }));
            v.push(SyncEntry::Delete { proto: 17, client: a(3), cport: 53, vip: a(100), vport: 53, lport: None });
            v.push(SyncEntry::Template(TemplateSync {
                proto: 6,
                client: a(0),
                vip: a(100),
                vport: 0,
                rs: a(11),
                rport: 0,
                timeout_s: 300,
            }));
            v.push(SyncEntry::Expect(ExpectSync {
                kind: ExpectKind::Passive,
                port: 30001,
                rport: 0,
                ctl_cport: 40001,
                ctl_vport: 21,
                client: a(2),
                vip: a(100),
                rs: a(10),
                timeout_s: 60,
                fnat: None,
            }));
        }
        v
    }

    #[test]
    fn round_trip_and_sizes() {
        let es = samples();
        let lens: Vec<usize> = es.iter().map(|e| e.len()).collect();
        assert_eq!(lens, [32, 16, 24, 28, 68, 40, 60, 64]);
        let mut b = Batcher::new(3, 100);
        let msgs = b.encode(&es, 1);
        assert_eq!(msgs.len(), 1);
        assert_eq!(&msgs[0][..12], &[b'F', b'V', b'S', b'Y', 5, 3, 0, 8, 0, 0, 0, 1]);
        assert_eq!(&msgs[0][12..E], &[0; 10], "the default placement block");
        let m = parse(&msgs[0]).unwrap();
        assert_eq!((m.node, m.seq, m.unknown, m.placement), (3, 1, 0, Some(Placement::default())));
        assert_eq!(m.entries, es);
        // Without full-NAT entries the entries are version 1's: an older node's datagram
        // (no placement block) parses, and so does version 3's.
        for v in [VERSION_V1, VERSION_V3] {
            let old = parse(&downgrade(&msgs[0], v)).unwrap();
            assert_eq!((old.entries, old.placement), (es.clone(), None));
        }
    }

    fn fnat_samples() -> Vec<SyncEntry> {
        let mut v = Vec::new();
        for a in [a4 as fn(u8) -> Addr, a6] {
            v.push(SyncEntry::Conn(ConnSync {
                proto: 6,
                state: 3,
                fwd: 3,
                data: false,
                client: a(2),
                cport: 40000,
                vip: a(100),
                vport: 21,
                rs: a(10),
                rport: 21,
                timeout_s: 900,
                proxy_delta: None,
                fnat: Some((a(200), 0xabcd)),
            }));
            v.push(SyncEntry::Delete {
                proto: 6,
                client: a(2),
                cport: 40000,
                vip: a(100),
                vport: 21,
                lport: Some(0xabcd),
            });
        }
        v
    }

    #[test]
    fn full_nat_entries_layout_and_versions() {
        let es = fnat_samples();
        let lens: Vec<usize> = es.iter().map(|e| e.len()).collect();
        assert_eq!(lens, [38, 18, 86, 42]);
        let mut out = Vec::new();
        es[0].encode(&mut out);
        #[rustfmt::skip]
        let want = [1, 38, 8, 6, 3, 3, 0x9c, 0x40, 0, 21, 0, 21, 0, 0, 3, 0x84, 0, 0, 0, 0,
                    10, 0, 0, 2, 10, 0, 0, 100, 10, 0, 0, 10, 0xab, 0xcd, 10, 0, 0, 200];
        assert_eq!(out, want);
        let mut out = Vec::new();
        es[1].encode(&mut out);
        assert_eq!(out, [2, 18, 8, 6, 0x9c, 0x40, 0, 21, 10, 0, 0, 2, 10, 0, 0, 100, 0xab, 0xcd]);
        // Round trip, unauthenticated (version 3) and authenticated (version 4).
        let m = Batcher::new(1, 100).encode(&es, 1).remove(0);
        assert_eq!(m[4], VERSION);
        assert_eq!(parse(&m).unwrap().entries, es);
        let key = k(b"0123456789abcdef");
        let m4 = Batcher::with_key(1, 100, key.clone(), 9).encode_at(&es, 1, 100).remove(0);
        assert_eq!(m4[4], VERSION_AUTH);
        assert_eq!(parse_with(&m4, Some(&key)).unwrap().entries, es);
        // Routing: by the local port's owner (here 4 workers over 1024-65535), not the client.
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        let routed = route(es.clone(), 4, range);
        let w = crate::pipeline::snapshot::lport_owner(range, 0xabcd, 4);
        assert_eq!(routed[w].len(), 4);
        // The flag has no meaning in versions 1 and 2: malformed there.
        assert_eq!(parse(&downgrade(&m, VERSION_V1)), Err(SyncError::Malformed));
        assert_eq!(parse_with(&downgrade_auth(&m4, VERSION_AUTH_V2, &key), Some(&key)), Err(SyncError::Malformed));
        // Versions 3 and 4 have it.
        assert_eq!(parse(&downgrade(&m, VERSION_V3)).unwrap().entries, es);
        assert_eq!(parse_with(&downgrade_auth(&m4, VERSION_AUTH_V4, &key), Some(&key)).unwrap().entries, es);
        // fwd 3 without the flag, the flag with another fwd, the flag on a template: malformed.
        let mut bad = m.clone();
        bad[E + 5] = 1;
        assert_eq!(parse(&bad), Err(SyncError::Malformed));
        let plain = Batcher::new(1, 100).encode(&samples()[..1], 1).remove(0);
        let mut bad = plain.clone();
        bad[E + 5] = 3;
        assert_eq!(parse(&bad), Err(SyncError::Malformed));
        let tpl = Batcher::new(1, 100).encode(&samples()[2..3], 1).remove(0);
        let mut bad = tpl.clone();
        bad[E + 2] |= F_FNAT;
        assert_eq!(parse(&bad), Err(SyncError::Malformed));
    }

    #[test]
    fn gateway_translation_entries() {
        let sh = |at, before, after| ferrovs_ftp_alg::SeqShift { at, before, after };
        let mut es = Vec::new();
        for a in [a4 as fn(u8) -> Addr, a6] {
            for lport in [None, Some(2000)] {
                es.push(SyncEntry::Seq(SeqSync {
                    client: a(2),
                    cport: 40000,
                    vip: a(100),
                    vport: 21,
                    lport,
                    orig: sh(0xffff_fff0, 0, -3),
                    reply: sh(7, 2, 2),
                }));
            }
        }
        let lens: Vec<usize> = es.iter().map(|e| e.len()).collect();
        assert_eq!(lens, [39, 41, 63, 65]);
        let mut out = Vec::new();
        es[1].encode(&mut out);
        #[rustfmt::skip]
        let want = [5, 41, 8, 0x9c, 0x40, 0, 21,
                    0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfd,
                    0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2,
                    10, 0, 0, 2, 10, 0, 0, 100, 0x07, 0xd0];
        assert_eq!(out, want);
        let m = Batcher::new(1, 100).encode(&es, 1).remove(0);
        assert_eq!(parse(&m).unwrap().entries, es);
        // Routing: the full-NAT one by its local port.
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        let w = crate::pipeline::snapshot::lport_owner(range, 2000, 8);
        assert!(route(es.clone(), 8, range)[w].contains(&es[1]));
        // An older format does not know kind 5: skipped, the rest parses.
        let p1 = parse(&downgrade(&m, VERSION_V1)).unwrap();
        assert_eq!((p1.entries.len(), p1.unknown), (0, 4));
        // A wrong length is malformed.
        let mut bad = m.clone();
        bad[E + 1] = 40;
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn authenticated_version_2_from_older_nodes_is_accepted() {
        let key = k(b"0123456789abcdef");
        let es = samples();
        let m6 = Batcher::with_key(1, 100, key.clone(), 9).encode_at(&es, 1, 100).remove(0);
        let v2 = downgrade_auth(&m6, VERSION_AUTH_V2, &key);
        let m = parse_with(&v2, Some(&key)).unwrap();
        assert_eq!((m.epoch, m.time, m.entries, m.placement), (9, 100, es, None));
        assert_eq!(parse(&v2), Err(SyncError::Auth));
    }

    #[test]
    fn byte_exact_conn_entry() {
        let e = SyncEntry::Conn(ConnSync {
            proto: 6,
            state: 1,
            fwd: 0,
            data: false,
            client: a4(2),
            cport: 0x1234,
            vip: a4(100),
            vport: 80,
            rs: a4(10),
            rport: 80,
            timeout_s: 900,
            proxy_delta: None,
            fnat: None,
        });
        let mut out = Vec::new();
        e.encode(&mut out);
        #[rustfmt::skip]
        let want = [1, 32, 0, 6, 1, 0, 0x12, 0x34, 0, 80, 0, 80, 0, 0, 3, 0x84, 0, 0, 0, 0,
                    10, 0, 0, 2, 10, 0, 0, 100, 10, 0, 0, 10];
        assert_eq!(out, want);
    }

    #[test]
    fn batches_split_at_the_mtu_and_respect_the_rate() {
        let es: Vec<SyncEntry> = (0..200)
            .map(|i| SyncEntry::Delete {
                proto: 6,
                client: a4(i as u8),
                cport: i,
                vip: a4(100),
                vport: 80,
                lport: None,
            })
            .collect();
        let mut b = Batcher::new(1, 2);
        let msgs = b.encode(&es, 1_000_000_000);
        // 16-byte entries: (1400 - 12) / 16 = 86 per datagram; 2 datagrams within the rate.
        assert_eq!(msgs.len(), 2);
        assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        let got: usize = msgs.iter().map(|m| parse(m).unwrap().entries.len()).sum();
        assert_eq!(got, 172);
        assert_eq!(b.dropped, 28);
        // Half a second later one token came back.
        assert_eq!(b.encode(&es[..1], 1_500_000_000).len(), 1);
        assert!(b.encode(&es[..1], 1_500_000_001).is_empty());
    }

    #[test]
    fn refuses_bad_messages() {
        let mut b = Batcher::new(1, 100);
        let good = b.encode(&samples(), 1).remove(0);
        assert_eq!(parse(&good[..11]), Err(SyncError::NotSync));
        let mut v = good.clone();
        v[4] = 7;
        assert_eq!(parse(&v), Err(SyncError::Version(7)));
        // Versions 2, 4 and 6 cannot be verified without a key.
        for x in [2, 4, 6] {
            v[4] = x;
            assert_eq!(parse(&v), Err(SyncError::Auth));
        }
        // Truncated in the middle of an entry, wrong count, entry length too short / wrong.
        assert_eq!(parse(&good[..good.len() - 1]), Err(SyncError::Malformed));
        let mut v = good.clone();
        v[7] = 9;
        assert_eq!(parse(&v), Err(SyncError::Malformed));
        let mut v = good.clone();
        v[E + 1] = 2;
        assert_eq!(parse(&v), Err(SyncError::Malformed));
        let mut v = good.clone();
        v[E + 3] = 99; // protocol of the first conn entry
        assert_eq!(parse(&v), Err(SyncError::Malformed));
        // The SYN-proxy offset (flag 4, set on the first conn entry) on a UDP connection.
        let mut v = good.clone();
        assert_eq!(v[E + 2] & F_PROXY, F_PROXY);
        v[E + 3] = 17;
        assert_eq!(parse(&v), Err(SyncError::Malformed));
        // Shorter than the placement block.
        assert_eq!(parse(&good[..E - 1]), Err(SyncError::Malformed));
        // An unknown kind is skipped by its length.
        let mut v = good[..E].to_vec();
        v[7] = 2;
        v.extend_from_slice(&[9, 5, 0, 0, 0]);
        v.extend_from_slice(&good[E..E + 32]);
        let m = parse(&v).unwrap();
        assert_eq!((m.unknown, m.entries.len()), (1, 1));
        // Every prefix and every single-byte change: an error or a message, never a panic.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            for x in [0u8, 1, 0x7f, 0xff] {
                let mut v = good.clone();
                v[n] = x;
                let _ = parse(&v);
            }
        }
    }

    fn k(b: &[u8]) -> SyncKey {
        SyncKey::new(b)
    }

    #[test]
    fn hmac_sha256_matches_rfc4231() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let t = k(b"Jefe").tag(b"what do ya want for nothing?");
        assert_eq!(t, [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7]);
        assert!(k(b"Jefe").verify(b"what do ya want for nothing?", &t));
        assert!(!k(b"Jefe").verify(b"what do ya want for nothing!", &t));
        assert!(!k(b"Jefe").verify(b"what do ya want for nothing?", &t[..15]));
    }

    #[test]
    fn authenticated_round_trip_and_layout() {
        let key = b"0123456789abcdef0123456789abcdef";
        let es = samples();
        let mut b = Batcher::with_key(3, 100, k(key), 0x0102_0304_0506_0708);
        let msgs = b.encode_at(&es, 1, 1_800_000_000);
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        let body: usize = es.iter().map(|e| e.len()).sum();
        assert_eq!(m.len(), HEADER_LEN_AUTH + Placement::LEN + body + MAC_LEN);
        assert_eq!(&m[..12], &[b'F', b'V', b'S', b'Y', 6, 3, 0, 8, 0, 0, 0, 1]);
        assert_eq!(&m[12..20], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&m[20..24], &1_800_000_000u32.to_be_bytes());
        assert_eq!(&m[m.len() - MAC_LEN..], &k(key).tag(&m[..m.len() - MAC_LEN]));
        let p = parse_with(m, Some(&k(key))).unwrap();
        assert_eq!((p.node, p.seq, p.epoch, p.time), (3, 1, 0x0102_0304_0506_0708, 1_800_000_000));
        assert_eq!(p.entries, es);
        // Another key, no key, any flipped bit: refused as unauthenticated.
        assert_eq!(parse_with(m, Some(&k(b"another key of 16+ bytes"))), Err(SyncError::Auth));
        assert_eq!(parse(m), Err(SyncError::Auth));
        for i in 0..m.len() {
            let mut v = m.clone();
            v[i] ^= 0x40;
            assert!(parse_with(&v, Some(&k(key))).is_err(), "bit flip at {i} accepted");
        }
        // An unauthenticated datagram (version 3, or 1) on a node with a key: refused.
        let mut v1 = Batcher::new(3, 100).encode(&es, 1).remove(0);
        assert_eq!(parse_with(&v1, Some(&k(key))), Err(SyncError::Auth));
        v1[4] = VERSION_V1;
        assert_eq!(parse_with(&v1, Some(&k(key))), Err(SyncError::Auth));
        // Too short for header and MAC.
        assert_eq!(parse_with(&m[..HEADER_LEN_AUTH + 3], Some(&k(key))), Err(SyncError::Malformed));
        // Datagrams still fit the MTU with the MAC.
        let many: Vec<SyncEntry> = (0..300).map(|_| es[4]).collect();
        let msgs = b.encode_at(&many, 2, 1_800_000_000);
        assert!(msgs.len() > 1 && msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        let got: usize = msgs.iter().map(|m| parse_with(m, Some(&k(key))).unwrap().entries.len()).sum();
        assert_eq!(got, 300);
    }

    fn msg(node: u8, seq: u32, epoch: u64, time: u32) -> Message {
        Message { node, seq, epoch, time, entries: Vec::new(), unknown: 0, placement: None }
    }

    #[test]
    fn replay_guard_window_epochs_and_clock() {
        let now = 1_800_000_000;
        let mut g = ReplayGuard::default();
        let ok = |g: &mut ReplayGuard, s, e| g.check(&msg(1, s, e, now), now);
        assert_eq!(ok(&mut g, 10, 5), Ok(()));
        assert_eq!(ok(&mut g, 10, 5), Err(SyncError::Replay), "duplicate");
        assert_eq!(ok(&mut g, 12, 5), Ok(()));
        assert_eq!(ok(&mut g, 11, 5), Ok(()), "late but inside the window");
        assert_eq!(ok(&mut g, 11, 5), Err(SyncError::Replay));
        assert_eq!(ok(&mut g, 100, 5), Ok(()));
        assert_eq!(ok(&mut g, 37, 5), Ok(()), "100 - 37 = 63: the window's last slot");
        assert_eq!(ok(&mut g, 36, 5), Err(SyncError::Replay), "older than the window");
        assert_eq!(ok(&mut g, 12, 5), Err(SyncError::Replay));
        // Another node has its own window.
        assert_eq!(g.check(&msg(2, 10, 5, now), now), Ok(()));
        // The sender restarted: a newer epoch restarts the window; the old epoch is dead.
        assert_eq!(ok(&mut g, 1, 6), Ok(()));
        assert_eq!(ok(&mut g, 101, 5), Err(SyncError::Replay));
        assert_eq!(ok(&mut g, 1, 6), Err(SyncError::Replay));
        assert_eq!(ok(&mut g, 2, 6), Ok(()));
        // The sender's clock: at most MAX_SKEW_S either way (also across the u32 wrap).
        assert_eq!(g.check(&msg(3, 1, 1, now - MAX_SKEW_S), now), Ok(()));
        assert_eq!(g.check(&msg(3, 2, 1, now - MAX_SKEW_S - 1), now), Err(SyncError::Replay));
        assert_eq!(g.check(&msg(3, 3, 1, now + MAX_SKEW_S + 1), now), Err(SyncError::Replay));
        assert_eq!(g.check(&msg(4, 1, 1, 5), u32::MAX - 5), Ok(()));
    }

    #[test]
    fn sequence_wrap_starts_a_new_epoch() {
        let mut b = Batcher::with_key(1, 1000, k(b"0123456789abcdef"), 7);
        b.seq = u32::MAX - 1;
        let es = &samples()[..1];
        let m1 = parse_with(&b.encode_at(es, 1, 100).remove(0), Some(&k(b"0123456789abcdef"))).unwrap();
        let m2 = parse_with(&b.encode_at(es, 2, 100).remove(0), Some(&k(b"0123456789abcdef"))).unwrap();
        assert_eq!((m1.seq, m1.epoch, m2.seq, m2.epoch), (u32::MAX, 7, 1, 8));
        let mut g = ReplayGuard::default();
        assert_eq!(g.check(&m1, 100), Ok(()));
        assert_eq!(g.check(&m2, 100), Ok(()));
    }

    #[test]
    fn full_nat_active_expectations_layout_and_versions() {
        let mut es = Vec::new();
        for a in [a4 as fn(u8) -> Addr, a6] {
            es.push(SyncEntry::Expect(ExpectSync {
                kind: ExpectKind::Active,
                port: 0x1234,
                rport: 0,
                ctl_cport: 40000,
                ctl_vport: 21,
                client: a(2),
                vip: a(100),
                rs: a(10),
                timeout_s: 60,
                fnat: Some((a(200), 0x9c41)),
            }));
        }
        let lens: Vec<usize> = es.iter().map(|e| e.len()).collect();
        assert_eq!(lens, [34, 82]);
        let mut out = Vec::new();
        es[0].encode(&mut out);
        #[rustfmt::skip]
        let want = [4, 34, 8, 3, 0x12, 0x34, 0, 0, 0x9c, 0x40, 0, 21, 0, 0, 0, 60,
                    10, 0, 0, 2, 10, 0, 0, 100, 10, 0, 0, 10, 0x9c, 0x41, 10, 0, 0, 200];
        assert_eq!(out, want);
        let m = Batcher::new(1, 100).encode(&es, 1).remove(0);
        assert_eq!(parse(&m).unwrap().entries, es);
        let key = k(b"0123456789abcdef");
        let m6 = Batcher::with_key(1, 100, key.clone(), 9).encode_at(&es, 1, 100).remove(0);
        assert_eq!(parse_with(&m6, Some(&key)).unwrap().entries, es);
        // Routed by the reserved port, as the real server's connection to it will be.
        assert_eq!(es[0].lport(), Some(0x1234));
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        let w = crate::pipeline::snapshot::lport_owner(range, 0x1234, 4);
        assert_eq!(route(es.clone(), 4, range)[w].len(), 2);
        // Versions 3 and 4 do not have the flag on kind 4: malformed there.
        assert_eq!(parse(&downgrade(&m, VERSION_V3)), Err(SyncError::Malformed));
        assert_eq!(parse_with(&downgrade_auth(&m6, VERSION_AUTH_V4, &key), Some(&key)), Err(SyncError::Malformed));
        // The flag on a passive expectation is malformed.
        let mut bad = m.clone();
        bad[E + 3] = ExpectKind::Passive as u8;
        assert_eq!(parse(&bad), Err(SyncError::Malformed));
        // Without the flag kind 4 stays 28 bytes.
        let mut plain = es[0];
        if let SyncEntry::Expect(x) = &mut plain {
            x.fnat = None;
        }
        assert_eq!((plain.len(), plain.lport()), (28, None));
    }

    fn cn(id: u8, addrs: &[&str]) -> ferrovs_cfg::ClusterNode {
        ferrovs_cfg::ClusterNode { id, local_addresses: addrs.iter().map(|a| a.parse().unwrap()).collect() }
    }

    #[test]
    fn placement_block_names_what_differs() {
        let range = ferrovs_cfg::PortRange { lo: 1024, hi: 65535 };
        let nodes = [cn(1, &["10.98.0.1"]), cn(2, &["10.98.0.2", "fd00::2"])];
        let p = Placement::of(2, range, &nodes);
        assert_eq!((p.workers, p.port_lo, p.port_hi), (2, 1024, 65535));
        // The order of the tables does not matter; their content does.
        assert_eq!(Placement::of(2, range, &[nodes[1].clone(), nodes[0].clone()]), p);
        let moved = [cn(1, &["10.98.0.1"]), cn(2, &["10.98.0.3", "fd00::2"])];
        let swapped = [cn(1, &["10.98.0.2"]), cn(2, &["10.98.0.1", "fd00::2"])];
        assert_ne!(Placement::of(2, range, &moved).nodes, p.nodes);
        assert_ne!(Placement::of(2, range, &swapped).nodes, p.nodes);
        assert_ne!(Placement::of(2, range, &[]).nodes, p.nodes);
        assert_eq!(p.differences(&p), None);
        let other = Placement::of(4, ferrovs_cfg::PortRange { lo: 2000, hi: 60000 }, &moved);
        let d = p.differences(&other).unwrap();
        assert!(d.starts_with("workers 2 here, 4 there; local_port_range 1024-65535 here, 2000-60000 there; "), "{d}");
        assert!(d.contains("[[cluster.node]] tables differ"), "{d}");
        assert_eq!(p.differences(&Placement { workers: 3, ..p }).as_deref(), Some("workers 2 here, 3 there"));
        // In every datagram after the header (and before the entries), covered by the MAC.
        let m = Batcher::new(1, 100).with_placement(p).encode(&samples(), 1).remove(0);
        let mut want = vec![0, 2, 4, 0, 0xff, 0xff];
        want.extend_from_slice(&p.nodes.to_be_bytes());
        assert_eq!(&m[HEADER_LEN..E], &want[..]);
        assert_eq!(parse(&m).unwrap().placement, Some(p));
        let key = k(b"0123456789abcdef");
        let m6 = Batcher::with_key(1, 100, key.clone(), 9).with_placement(p).encode_at(&samples(), 1, 100).remove(0);
        assert_eq!(&m6[HEADER_LEN_AUTH..HEADER_LEN_AUTH + Placement::LEN], &want[..]);
        assert_eq!(parse_with(&m6, Some(&key)).unwrap().placement, Some(p));
    }
}
