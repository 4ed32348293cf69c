//! The per-worker flow table: a slab of 64-byte connections plus an
//! open-addressing index (linear probing, runs sorted by tag, over 8-byte `tag | slot | dir`
//! words, see [`FlowTable`]) from the 5-tuple as received to (slab index,
//! direction). A NAT connection has two keys (client side and real-server
//! side); a DR connection has one. Sized up front: the index and the slab
//! never grow past the configured capacity, so there are no rehash spikes.
//!
//! Memory per connection (see [`FlowTable::memory_bytes`]):
//! - the hot entry, [`Conn`]: one cache line (64 bytes, a compile-time
//!   assert). What does not fit is shared or moved out:
//!   - the VIP with its port, the real server with its port, the full-NAT
//!     local address and the next hops are interned per table
//!     ([`Interned`], 2-byte ids, reference counted: an id whose last
//!     connection went is reused, so reloads cannot make them grow without
//!     bound). A next hop also caches its Ethernet header and MTU ([`HopMac`]): all connections
//!     through one gateway or to one real server share one resolution;
//!   - the reply direction's L4 checksum delta is the ones' complement of
//!     the request direction's (RFC 1624), so only one is kept;
//!   - expiry is in coarse ticks of 2^20 ns (~1 ms, rounded down, compared
//!     wrapping: at most [`MAX_SPAN_NS`] ahead);
//!   - packet counts keep their low 16 bits here, the rest in the cold part.
//! - the index: `2 * capacity / 0.8` words of 8 bytes (20 bytes per
//!   connection; the slot count need not be a power of two, the hash is
//!   range-reduced by a multiply-shift), plus 1024 tail words.
//! - the free list: threaded through the free slab entries (no memory).
//! - the cold part ([`ConnCold`]: FTP session and data-connection links,
//!   SYN proxy, PROXY protocol, high halves of the packet counts, cluster
//!   sync time) only for connections that use one: its own slab, named by
//!   `Conn::cold` (or [`NONE`]), allocated on first use
//!   ([`FlowTable::cold_mut`]) and freed with the connection.

use crate::flow::tcpstate::TcpState;
use crate::wire::csum::TTL_DELTA;
use crate::wire::parse::{self, Addr};
use ferrovs_cfg::Forward;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// A 5-tuple exactly as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Which way a packet travels relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to real server (through the VIP).
    In,
    /// Real server to client.
    Out,
}

pub const NONE: u32 = u32::MAX;

/// Connection flags.
pub const F_DATA: u8 = 1; // an FTP data connection (created from an expectation)
pub const F_ACTIVE_COUNTED: u8 = 2; // counted as active in the scheduler counts
pub const F_COUNTED: u8 = 4; // counted at all (active or inactive)
pub const F_ALG: u8 = 8; // an FTP control connection: `ConnCold::alg` is set
pub const F_SYNPROXY: u8 = 16; // opened by the SYN proxy: `ConnCold::proxy` is set
pub const F_SYNCED: u8 = 32; // cluster backup state from a peer: not counted until traffic arrives
pub const F_PPROTO: u8 = 64; // PROXY protocol header towards the server: `ConnCold::pp` is set
pub const F_XLAT: u8 = 128; // full NAT across families: every packet is translated (`crate::pipeline::nat64`)

/// Expiry tick: 2^20 ns (about 1 ms).
const TICK_SHIFT: u32 = 20;
/// The furthest ahead an expiry may lie (longer timeouts are cut to it):
/// 2^30 ticks, about 13 days (ticks are compared wrapping, see
/// [`Conn::expired`]).
pub const MAX_SPAN_NS: u64 = 1 << (30 + TICK_SHIFT);

/// The hop id of "no next hop" (a DR connection's reply direction).
pub const NO_HOP: u16 = 0;

/// One tracked connection: the fields the established fast path reads and
/// writes, in one cache line (64 bytes, aligned). Interned parts are
/// resolved through the table ([`FlowTable::vip_of`], [`FlowTable::rs_of`],
/// [`FlowTable::laddr_of`], [`FlowTable::hop`]); the rest of a connection
/// lives in [`ConnCold`], allocated only for connections that need it.
/// An IPv4 connection (client, VIP and real server all IPv4: [`Conn::v4`])
/// also holds its VIP and real server with their ports in this line, so its
/// key and rewrite need no interned look-up.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Conn {
    /// The client's address ([`Conn::client`]); for an IPv4 connection, the
    /// four IPv4 parts of [`pack_v4`] instead.
    addr: u128,
    pub cport: u16,
    /// Full NAT: the local port towards the real server ([`Conn::lport`]; 0 otherwise).
    lport: u16,
    /// Interned (VIP, port) and (real server, port): [`FlowTable::vip_of`],
    /// [`FlowTable::rs_of`].
    pub vipi: u16,
    pub rsi: u16,
    /// Full NAT: the interned local address ([`FlowTable::laddr_of`]).
    pub laddr: u16,
    pub svc: u16,
    pub dest: u16,
    /// Snapshot generation (low 16 bits) the indices above refer to. A
    /// reload re-stamps every live connection, so a wrap cannot alias.
    pub snap_gen: u16,
    pub gen: u32,
    /// Expiry tick (see [`Conn::expired`]).
    exp: u32,
    /// The cold part's index in the table's cold slab, or [`NONE`]; for a
    /// free slot, the next free slot.
    cold: u32,
    /// Precomputed checksum deltas (RFC 1624): IPv4 header towards the real server (the
    /// reply direction's is derived from it: [`Conn::l3_out`]); L4 towards the real server
    /// (the reply direction's is its complement).
    pub l3_in: u16,
    /// TCP: the client's sequence mark, the high 16 bits of the sequence number of the last
    /// client segment accepted, 0 while not known ([`Conn::client_seq_ok`]).
    seq_mark: u16,
    l4: u16,
    /// Interned next hops (egress interface, neighbour address, cached MAC)
    /// towards the real server / the client ([`FlowTable::hop`]).
    pub hop_in: u16,
    pub hop_out: u16,
    /// Packets per direction, low 16 bits (`ferrovsadm -L -c`); a wrap
    /// carries into [`ConnCold`] (see [`FlowTable::carry_pkt`]). Byte and
    /// per-service counts are kept by the worker (`Worker::flush_svc_counters`).
    pub pkts_in: u16,
    pub pkts_out: u16,
    pub flags: u8,
    pub proto: u8,
    pub fwd: Forward,
    pub state: TcpState,
    pub live: bool,
    /// Client, VIP and real server are all IPv4: `addr` holds them and the two
    /// ports ([`pack_v4`]).
    pub v4: bool,
}

const _: () = assert!(std::mem::size_of::<Conn>() == 64, "the hot Conn is one cache line");

/// The client sequence window of an established TCP connection ([`Conn::client_seq_ok`]),
/// in units of 64 KiB behind and ahead of the sequence mark: a segment sent again from
/// up to 128 KiB back, and up to 8 MiB ahead (a receive window's worth of segments lost
/// before the balancer). A mark stuck behind a larger jump only leaves resets without
/// effect on the state (forwarded all the same, the server judges them): the connection
/// then ends on its timeout, as one without its reset.
pub const SEQ_BEHIND: u16 = 2;
pub const SEQ_AHEAD: u16 = 128;

/// Home slot of a tag in an index of `n` home slots: the tag scaled to the slot count
/// ([`FlowTable::home`]).
#[inline(always)]
fn home_of(tag: u32, n: u64) -> usize {
    ((tag as u64 * n) >> 32) as usize
}

/// An IPv4 connection's client, VIP and real server (each as the low 32 bits of its
/// [`Addr`]) and the VIP's and real server's ports in one word: bits 0-31, 32-63, 64-95,
/// 96-111 and 112-127.
#[inline(always)]
pub fn pack_v4(client: Addr, vip: Addr, vport: u16, rs: Addr, rport: u16) -> u128 {
    (client as u32 as u128)
        | (vip as u32 as u128) << 32
        | (rs as u32 as u128) << 64
        | (vport as u128) << 96
        | (rport as u128) << 112
}

/// The [`Addr`] of an IPv4 address's 32 bits ([`parse::v4_to_addr`] of their bytes).
#[inline(always)]
fn v4_addr(a: u32) -> Addr {
    parse::v4_to_addr(a.to_be_bytes())
}

impl Conn {
    /// The client's address.
    #[inline(always)]
    pub fn client(&self) -> Addr {
        if self.v4 {
            v4_addr(self.addr as u32)
        } else {
            self.addr
        }
    }
    /// An IPv4 connection's (client, VIP, real server) as 32-bit words and its (VIP port,
    /// real server port): see [`pack_v4`]. Meaningless unless [`Conn::v4`].
    #[inline(always)]
    fn v4_parts(&self) -> ([u32; 3], u16, u16) {
        let a = self.addr;
        ([a as u32, (a >> 32) as u32, (a >> 64) as u32], (a >> 96) as u16, (a >> 112) as u16)
    }
    /// Has the connection expired at `now` (ns)? Expiry is kept in ticks
    /// (rounded down), so this turns true at the expiry time or up to one
    /// tick (~1 ms) before it: never after (timer wheels of IPVS and
    /// conntrack are as coarse).
    #[inline(always)]
    pub fn expired(&self, now: u64) -> bool {
        ((now >> TICK_SHIFT) as u32).wrapping_sub(self.exp) as i32 >= 0
    }
    /// Expire at `at` (ns), seen at `now` (at most [`MAX_SPAN_NS`] ahead).
    #[inline(always)]
    pub fn set_expires(&mut self, now: u64, at: u64) {
        let at = at.min(now.saturating_add(MAX_SPAN_NS));
        self.exp = (at >> TICK_SHIFT) as u32;
    }
    /// Expire `t` ns after `now`, `t` at most [`MAX_SPAN_NS`] (the worker clamps its
    /// timeouts once): as `set_expires(now, now + t)`, without the clamp.
    #[inline(always)]
    pub fn expire_after(&mut self, now: u64, t: u64) {
        debug_assert!(t <= MAX_SPAN_NS);
        self.exp = (now.saturating_add(t) >> TICK_SHIFT) as u32;
    }
    /// Time left until expiry at `now` (ns; 0 once expired).
    pub fn expires_in(&self, now: u64) -> u64 {
        let d = self.exp.wrapping_sub((now >> TICK_SHIFT) as u32) as i32;
        if d <= 0 {
            0
        } else {
            ((d as u64) << TICK_SHIFT).saturating_sub(now & ((1 << TICK_SHIFT) - 1))
        }
    }
    #[inline(always)]
    pub fn l4_in(&self) -> u16 {
        self.l4
    }
    /// Full NAT: the local port towards the real server. 0 otherwise.
    #[inline(always)]
    pub fn lport(&self) -> u16 {
        self.lport
    }
    /// The reply direction's IPv4 header delta (0 for a connection without one). Every
    /// address the request direction rewrites, the reply direction rewrites back (NAT: the
    /// VIP and the real server; full NAT: also the client and the local address), so its
    /// address delta is the request's negated, and both carry the TTL decrement
    /// ([`TTL_DELTA`]): `l3_in` = a + T, so the reply's -a + T = !l3_in + 2T. Both are folded
    /// sums of something non-zero, so in 1..=0xffff, where a one's complement value has one
    /// form: this is exactly the delta computed from the addresses (a test checks), and the
    /// 2 bytes it took in the hot entry hold the client's sequence mark.
    #[inline(always)]
    pub fn l3_out(&self) -> u16 {
        // 2T folded once (0xfdff): the sum then needs one fold (at most 0xffff + 0xfdff).
        const TWO_T: u32 = ((2 * TTL_DELTA) & 0xffff) + ((2 * TTL_DELTA) >> 16);
        let s = (!self.l3_in) as u32 + TWO_T;
        if self.l3_in == 0 {
            0
        } else {
            ((s & 0xffff) + (s >> 16)) as u16
        }
    }
    /// May a client segment with sequence number `seq` (and SYN, FIN or RST) change this
    /// connection's TCP state? A blind attacker who knows a client's address and a VIP can
    /// send resets or FINs for each of the 65,536 client ports: IPVS closes the connection
    /// on any of them (an idle one then expires in seconds, a live one is counted
    /// inactive), while conntrack takes only a segment within the TCP window. The
    /// connection keeps the client's sequence mark (`seq_mark`), and once established (ESTABLISHED,
    /// FIN_WAIT, CLOSE_WAIT, LAST_ACK) a client segment's sequence number must lie from
    /// [`SEQ_BEHIND`] to [`SEQ_AHEAD`] units of 64 KiB of it: a blind guess succeeds about
    /// once in 500, as against conntrack with an 8 MiB window. True while the mark is not
    /// known (0: from the connection's first client segment, a peer's sync entry) and
    /// before the connection is established. Every mode, full NAT included (IPVS checks
    /// none).
    #[inline(always)]
    pub fn client_seq_ok(&self, seq: u32) -> bool {
        let m = self.seq_mark;
        m == 0
            || !matches!(
                self.state,
                TcpState::Established | TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck
            )
            || ((seq >> 16) as u16).wrapping_sub(m).wrapping_add(SEQ_BEHIND) <= SEQ_BEHIND + SEQ_AHEAD
    }
    /// The client sequence mark (0: not known), to put back with
    /// [`Conn::set_client_seq_mark`] when the segment that moved it did not go out.
    #[inline(always)]
    pub fn client_seq_mark(&self) -> u16 {
        self.seq_mark
    }
    /// Put back a mark [`Conn::client_seq_mark`] read.
    #[inline(always)]
    pub fn set_client_seq_mark(&mut self, m: u16) {
        self.seq_mark = m;
    }
    /// A client segment with sequence number `seq` that [`Conn::client_seq_ok`] took:
    /// the sequence mark follows it.
    #[inline(always)]
    pub fn note_client_seq(&mut self, seq: u32) {
        self.seq_mark = (seq >> 16) as u16;
    }
    /// The reply direction's L4 delta: the complement of the request
    /// direction's (every rewritten word is swapped back).
    #[inline(always)]
    pub fn l4_out(&self) -> u16 {
        if self.l4 == 0 {
            0
        } else {
            !self.l4
        }
    }
    pub fn has_out_key(&self) -> bool {
        self.fwd.two_way()
    }
    /// Is a cold part allocated?
    pub fn has_cold(&self) -> bool {
        self.cold != NONE
    }
}

/// A connection about to be inserted ([`new_conn`], [`FlowTable::insert`]):
/// every part spelled out; the table interns what the hot entry names by id.
#[derive(Clone, Copy, Debug)]
pub struct NewConn {
    pub proto: u8,
    pub fwd: Forward,
    pub flags: u8,
    pub state: TcpState,
    pub client: Addr,
    pub cport: u16,
    pub vip: Addr,
    pub vport: u16,
    pub rs: Addr,
    pub rport: u16,
    pub svc: u16,
    pub dest: u16,
    pub snap_gen: u16,
    /// Absolute expiry (ns).
    pub expires: u64,
    /// The IPv4 header delta towards the real server (the reply one is derived:
    /// [`Conn::l3_out`]).
    pub l3_in: u32,
    /// The L4 delta towards the real server (the reply one is derived).
    pub l4_in: u32,
    /// Egress interface and next hop towards the real server / the client
    /// (the client side only for NAT and full NAT).
    pub if_in: u8,
    pub nh_in: Addr,
    pub if_out: u8,
    pub nh_out: Addr,
    /// Full NAT: the local address and port towards the real server.
    pub laddr: Addr,
    pub lport: u16,
    /// Interned ids the caller expects for (VIP, real server, next hop in, next hop out),
    /// e.g. those of the last connection to the same real server ([`FlowTable::ids_of`]);
    /// [`NO_HINT`] for none. Only a hint: each is checked against the value it names, a
    /// wrong one costs the usual lookup.
    pub hint: [u16; 4],
    /// The caller vouches that the first three ids of `hint` (VIP, real server, next hop
    /// in) name exactly this connection's values now: e.g. the last connection to the same
    /// real server, with the same VIP, ports and route, took them at a
    /// [`FlowTable::ids_epoch`] that is still the table's. Those three are then taken
    /// without comparing values (the reply direction's next hop still is compared).
    pub hint_sure: bool,
}

/// "No epoch" (a [`FlowTable::ids_epoch`] never reached: nothing seen yet).
pub const NO_EPOCH: u64 = u64::MAX;

/// "No interned id expected" ([`NewConn::hint`]).
pub const NO_HINT: [u16; 4] = [u16::MAX; 4];

impl NewConn {
    pub fn key_in(&self) -> FlowKey {
        FlowKey { src: self.client, dst: self.vip, sport: self.cport, dport: self.vport, proto: self.proto }
    }
    /// The reply-direction key as it arrives: from the real server to the
    /// client (NAT) or to the local address and port (full NAT).
    pub fn key_out(&self) -> FlowKey {
        if self.fwd == Forward::Fnat {
            FlowKey { src: self.rs, dst: self.laddr, sport: self.rport, dport: self.lport, proto: self.proto }
        } else {
            FlowKey { src: self.rs, dst: self.client, sport: self.rport, dport: self.cport, proto: self.proto }
        }
    }
}

/// The rarely used part of a connection ([`FlowTable::cold`]).
pub struct ConnCold {
    /// FTP: the control connection of a data connection.
    pub parent: u32,
    pub parent_gen: u32,
    /// FTP: live data connections of a control connection.
    pub children: u32,
    pub alg: Option<Box<ferrovs_ftp_alg::FtpSession>>,
    /// SYN proxy: the handshake with the real server and the sequence offset.
    pub proxy: Option<Box<crate::pipeline::synproxy::Proxied>>,
    /// PROXY protocol: the header and the client's stream start.
    pub pp: Option<Box<crate::pipeline::proxyproto::Pp>>,
    /// Packet counts above the low 16 bits kept in [`Conn`].
    pub pkts_in_hi: u64,
    pub pkts_out_hi: u64,
    /// Cluster: when the connection was last sent to the peers (ns).
    pub synced_at: u64,
}

impl ConnCold {
    /// A connection without a cold part reads as this.
    pub const EMPTY: ConnCold = ConnCold {
        parent: NONE,
        parent_gen: 0,
        children: 0,
        alg: None,
        proxy: None,
        pp: None,
        pkts_in_hi: 0,
        pkts_out_hi: 0,
        synced_at: 0,
    };
}

impl Default for ConnCold {
    fn default() -> Self {
        ConnCold::EMPTY
    }
}

static COLD_EMPTY: ConnCold = ConnCold::EMPTY;

/// An interned next hop: where a connection's packets leave and the MAC
/// they go to, cached while `mac_gen` equals the worker's neighbour
/// generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub iface: u8,
    pub nh: Addr,
    pub mac: [u8; 6],
    pub mac_gen: u32,
}

/// FxHash-style hasher for the small interned tables (keyed with the
/// table's seed; only the slow path hashes).
#[derive(Clone, Copy)]
struct SeededFx(u64);
struct Fx(u64);
impl BuildHasher for SeededFx {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(self.0)
    }
}
impl Fx {
    #[inline(always)]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}
impl Hasher for Fx {
    fn write(&mut self, b: &[u8]) {
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Values interned under 2-byte ids with reference counts. An id whose
/// count drops to 0 keeps its value (the next connection to the same one
/// finds it again) until a new value needs an id and none is unused: then
/// the oldest unreferenced one is reused. So at most `limit` ids, whatever
/// the reloads.
pub struct Interned<K> {
    vals: Vec<K>,
    refs: Vec<u32>,
    map: HashMap<K, u16, SeededFx>,
    /// Ids whose count reached 0 (each at most once: `queued`).
    zero: std::collections::VecDeque<u16>,
    queued: Vec<bool>,
    limit: usize,
    /// Direct-mapped cache in front of `map` (ids of recently taken
    /// values; a hit is checked against `vals`, which mirrors `map`).
    memo: [u16; MEMO],
    seed: u64,
    /// Times an id was given another value (reused for a new one, or all of them cleared):
    /// unchanged means every id still names the value it named ([`FlowTable::ids_epoch`]).
    reassigned: u64,
}

const MEMO: usize = 256;

impl<K: Copy + Eq + Hash> Interned<K> {
    fn new(limit: usize, seed: u64) -> Self {
        Interned {
            vals: Vec::new(),
            refs: Vec::new(),
            map: HashMap::with_hasher(SeededFx(seed)),
            zero: Default::default(),
            queued: Vec::new(),
            limit: limit.min(u16::MAX as usize + 1),
            memo: [u16::MAX; MEMO],
            seed,
            reassigned: 0,
        }
    }

    #[inline(always)]
    fn memo_slot(&self, k: &K) -> usize {
        let mut h = Fx(self.seed);
        k.hash(&mut h);
        (h.finish() >> 56) as usize % MEMO
    }

    /// [`Interned::take`], trying id `hint` first (no hashing when it holds `k`: values are
    /// unique among ids, so `vals[hint] == k` means `hint` is `k`'s id).
    #[inline(always)]
    fn take_hinted(&mut self, k: K, hint: u16) -> Option<(u16, bool)> {
        if self.vals.get(hint as usize) == Some(&k) {
            self.refs[hint as usize] += 1;
            return Some((hint, false));
        }
        self.take(k)
    }

    /// Take one more reference to id `i` if it holds `k` (values are unique among ids, so
    /// then `i` is `k`'s id), or without comparing if the caller is `sure` it does
    /// ([`NewConn::hint_sure`]); `false`, nothing taken, otherwise.
    #[inline(always)]
    fn retake_if(&mut self, i: u16, k: &K, sure: bool) -> bool {
        if !sure && self.vals.get(i as usize) != Some(k) {
            return false;
        }
        let Some(r) = self.refs.get_mut(i as usize) else { return false };
        *r += 1;
        true
    }

    /// Take a reference to `k`: its id and whether the id is new for it;
    /// `None` if every id is referenced.
    fn take(&mut self, k: K) -> Option<(u16, bool)> {
        let m = self.memo_slot(&k);
        let i = self.memo[m];
        if self.vals.get(i as usize) == Some(&k) {
            self.refs[i as usize] += 1;
            return Some((i, false));
        }
        if let Some(&i) = self.map.get(&k) {
            self.refs[i as usize] += 1;
            self.memo[m] = i;
            return Some((i, false));
        }
        let i = if self.vals.len() < self.limit {
            self.vals.push(k);
            self.refs.push(0);
            self.queued.push(false);
            (self.vals.len() - 1) as u16
        } else {
            loop {
                let i = self.zero.pop_front()?;
                self.queued[i as usize] = false;
                if self.refs[i as usize] == 0 {
                    let old = self.vals[i as usize];
                    self.map.remove(&old);
                    self.vals[i as usize] = k;
                    self.reassigned += 1;
                    break i;
                }
            }
        };
        self.map.insert(k, i);
        self.refs[i as usize] = 1;
        self.memo[m] = i;
        Some((i, true))
    }

    /// Drop a reference taken by [`Interned::take`].
    #[inline(always)]
    fn release(&mut self, i: u16) {
        let r = &mut self.refs[i as usize];
        // The common case: other references remain (nothing to queue).
        if *r > 1 {
            *r -= 1;
            return;
        }
        self.release_last(i);
    }

    /// [`Interned::release`] of an id's last reference (or of one with none left: it stays
    /// at 0): it is queued for reuse.
    #[cold]
    #[inline(never)]
    fn release_last(&mut self, i: u16) {
        let r = &mut self.refs[i as usize];
        debug_assert!(*r > 0);
        *r = r.saturating_sub(1);
        if *r == 0 && !self.queued[i as usize] {
            self.queued[i as usize] = true;
            self.zero.push_back(i);
        }
    }

    #[inline(always)]
    fn get(&self, i: u16) -> K {
        self.vals[i as usize]
    }

    /// Ids in use (referenced or kept for reuse).
    pub fn len(&self) -> usize {
        self.vals.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }
    /// References to id `i`.
    pub fn refs(&self, i: u16) -> u32 {
        self.refs.get(i as usize).copied().unwrap_or(0)
    }

    fn memory_bytes(&self) -> usize {
        self.vals.capacity() * std::mem::size_of::<K>()
            + self.refs.capacity() * 4
            + self.queued.capacity()
            + self.zero.capacity() * 2
            + self.map.capacity() * (std::mem::size_of::<(K, u16)>() + 1)
    }

    fn clear(&mut self) {
        self.vals.clear();
        self.refs.clear();
        self.map.clear();
        self.zero.clear();
        self.queued.clear();
        self.memo = [u16::MAX; MEMO];
        self.reassigned += 1;
    }
}

/// A connection as a worker lists it (`ferrovsadm -L -c`, `conns`): built
/// by the worker, sent over the control socket as JSON, read back by ferrovsadm.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnRow {
    pub worker: usize,
    pub id: u32,
    pub proto: String,
    pub client: String,
    pub vip: String,
    pub real: String,
    pub state: String,
    pub expires_in_s: u64,
    pub service: String,
    pub ftp_control: bool,
    /// For an FTP data connection: the id of its control connection.
    pub parent: Option<u32>,
    pub children: u32,
    pub pkts_in: u64,
    pub pkts_out: u64,
    /// Full NAT: the local address and port towards the real server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
}

/// The per-worker connection table.
///
/// Layout (chosen for the established fast path, see `ferrovs bench` and
/// the module docs for the bytes):
/// - `slab`: the 64-byte connections, indexed by a `u32` slot number; free
///   slots are chained through `Conn::cold` from `free`.
/// - `index`: an open-addressing (linear probing) array of `u64` words, each run kept
///   sorted by tag ("Robin Hood" by tag: a walk stops at the first greater tag, and a key's
///   walk does not depend on when it went in), not wrapping around (runs go on into
///   `INDEX_TAIL` slots past the last home slot),
///   `hash tag (32 bits) | slot << 1 | dir`. The key itself is not stored:
///   a tag match is confirmed against the connection in the slab, which the
///   packet needs next anyway. Sized for two keys per connection at a load
///   of at most 0.8; the home slot is the tag times the slot count, shifted
///   (any slot count, not only powers of two).
/// - Deletion is backward-shift (no tombstones, probe lengths stay short).
/// - Both arrays are reserved at start and advised for transparent huge
///   pages: with millions of flows every lookup is a random access, and
///   4 KiB pages make each one a TLB miss (very costly under a hypervisor).
/// - The hash is keyed with a per-table random seed (no flooding a bucket
///   with chosen tuples). [`FlowTable::hash`] + [`FlowTable::prefetch`] let
///   the worker hash a whole burst and prefetch its index lines first.
pub struct FlowTable {
    index: Vec<u64>,
    /// Home slots: `index.len()` is `n + INDEX_TAIL`.
    n: usize,
    seed: u64,
    slab: Vec<Conn>,
    /// First free slab slot below `slab.len()` (chained), or [`NONE`].
    free: u32,
    cold: Vec<ConnCold>,
    cold_free: Vec<u32>,
    cap: usize,
    live: usize,
    /// Bumped by every insert and remove: index words looked up at one
    /// version stay exact while it is unchanged.
    version: u64,
    vips: Interned<(Addr, u16)>,
    reals: Interned<(Addr, u16)>,
    laddrs: Interned<Addr>,
    /// Next hops, with the MAC cache beside them; id 0 is [`NO_HOP`].
    hops: Interned<(Addr, u8)>,
    /// Per hop id: (cached Ethernet header, egress interface and its MTU, generation they are
    /// valid for).
    macs: Vec<HopMac>,
    /// The last key [`FlowTable::lookup_for_insert`] missed, its hash, the version it missed at
    /// and the first empty index slot of its walk: where [`FlowTable::insert`] puts that
    /// key while the version is unchanged (no second walk).
    miss: Option<(FlowKey, u64, u64, usize)>,
    /// Bloom filter of the hashes of every key inserted since [`FlowTable::mark_misses`]
    /// (at version `ins_mark`): a key that missed at that version and whose hash is not in
    /// it is still absent ([`FlowTable::still_missing`]), whatever was inserted or removed.
    ins_filter: [u64; INS_FILTER_WORDS],
    ins_mark: Option<u64>,
    /// [`FlowTable::ids_epoch`]: the reassignments of VIP, real-server and next-hop ids so far
    /// (summed after anything that can reassign one: [`FlowTable::intern_slow`], a clear).
    epoch: u64,
}

/// Words of [`FlowTable::ins_filter`] (512 bits: a burst of 32 new connections sets at
/// most 64, so a miss is wrongly taken for a possible hit about 6 % of the time at worst).
const INS_FILTER_WORDS: usize = 8;

/// Bit of [`FlowTable::ins_filter`] for hash `h` (bits the home slot and tag do not start at).
#[inline(always)]
fn ins_bit(h: u64) -> (usize, u64) {
    let b = (h >> 8) as usize % (INS_FILTER_WORDS * 64);
    (b / 64, 1 << (b % 64))
}

/// [`FlowTable::miss`] position meaning "absent, first empty slot not looked for yet".
const POS_UNKNOWN: usize = usize::MAX;

/// What the fast path reads of a next hop (20 bytes): the Ethernet header its frames get
/// (the neighbour's MAC, then the egress interface's), the egress interface and that
/// interface's MTU. `hdr` and `mtu` are valid while `mac_gen` equals the worker's neighbour
/// generation, which changes whenever a neighbour or a port's MAC or MTU does
/// ([`FlowTable::set_hop_l2`] writes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopMac {
    pub hdr: [u8; 12],
    pub iface: u8,
    pub mtu: u16,
    pub mac_gen: u32,
}

impl HopMac {
    /// The cached MAC of the neighbour (zero while unresolved).
    #[inline(always)]
    pub fn mac(&self) -> [u8; 6] {
        let [a, b, c, d, e, f, ..] = self.hdr;
        [a, b, c, d, e, f]
    }
    /// A next hop on `iface` not resolved yet: generation 0, which a neighbour cache never
    /// has.
    fn unresolved(iface: u8) -> HopMac {
        HopMac { hdr: [0; 12], iface, mtu: 0, mac_gen: 0 }
    }
}

const EMPTY: u64 = u64::MAX;

#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    (r as u64) ^ ((r >> 64) as u64)
}

/// Ask for transparent huge pages on the 2 MiB-aligned part of a fresh
/// (not yet touched) allocation. Best effort.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HP: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < 2 * HP {
            return;
        }
        let start = v.as_ptr() as usize;
        let a = (start + HP - 1) & !(HP - 1);
        let e = (start + bytes) & !(HP - 1);
        if e > a {
            // SAFETY: the range lies inside an allocation this Vec owns;
            // MADV_HUGEPAGE only changes how the kernel backs it.
            unsafe {
                libc::madvise(a as *mut libc::c_void, e - a, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Prefetch the cache line at `p` (a hint: any address, never a fault).
#[inline(always)]
pub(crate) fn prefetch_ptr<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Expired connections one [`FlowTable::scan_expired`] call returns at most.
pub const EXPIRED_BATCH: usize = 16;

/// Index slots for `cap` connections: two keys each at a load of at most 0.8.
/// Index slots past the last home slot: runs do not wrap around, they go on into this tail.
/// The last slot stays empty for good (every walk stops there at the latest): an insert that
/// would fill it is refused, nothing changed. A run of 1024 at a load of at most 0.8 does
/// not happen by chance (and the keyed hash keeps it from being chosen).
const INDEX_TAIL: usize = 1024;

fn index_slots(cap: usize) -> usize {
    (cap * 2 * 5).div_ceil(4).max(16)
}

/// Interned values per kind (ids are 2 bytes).
const INTERN_LIMIT: usize = u16::MAX as usize + 1;

/// Hash seed of every table built from now on in this process (0: a random seed per table,
/// the default). Only `ferrovs bench` sets it, so that its instruction counts (callgrind)
/// compare between builds: the probe lengths, and with them the cost per packet, vary by
/// about ±1.5 % from one random seed to the next. A daemon keeps random seeds (an attacker
/// must not be able to aim a flood at one probe sequence).
static FIXED_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`FIXED_SEED`]: tables built after this call hash with `seed` (0: random again).
pub fn fix_seed(seed: u64) {
    FIXED_SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
}

/// A nonzero seed: the fixed one ([`fix_seed`]), else a random one.
pub fn seed() -> u64 {
    let fixed = FIXED_SEED.load(std::sync::atomic::Ordering::Relaxed);
    if fixed != 0 {
        return fixed | 1;
    }
    std::collections::hash_map::RandomState::new().build_hasher().finish() | 1
}

impl FlowTable {
    pub fn new(cap: usize) -> Self {
        Self::with_intern_limit(cap, INTERN_LIMIT)
    }

    /// [`FlowTable::new`] with at most `limit` ids per interned kind (tests).
    pub fn with_intern_limit(cap: usize, limit: usize) -> Self {
        let cap = cap.clamp(16, (u32::MAX >> 1) as usize - 1);
        let n = index_slots(cap);
        let mut index = Vec::with_capacity(n + INDEX_TAIL);
        advise_huge(&index);
        index.resize(n + INDEX_TAIL, EMPTY);
        let slab = Vec::with_capacity(cap);
        advise_huge(&slab);
        let seed = seed();
        let mut t = FlowTable {
            index,
            n,
            seed,
            slab,
            free: NONE,
            cold: Vec::new(),
            cold_free: Vec::new(),
            cap,
            live: 0,
            version: 0,
            vips: Interned::new(limit, seed ^ 1),
            reals: Interned::new(limit, seed ^ 2),
            laddrs: Interned::new(limit, seed ^ 3),
            hops: Interned::new(limit.max(2), seed ^ 4),
            macs: Vec::new(),
            miss: None,
            ins_filter: [0; INS_FILTER_WORDS],
            ins_mark: None,
            epoch: 0,
        };
        t.reset_hops();
        t
    }

    fn reset_hops(&mut self) {
        self.hops.clear();
        self.macs.clear();
        // NO_HOP: referenced for good, never resolved to a MAC.
        let (h, _) = self.hops.take((0, u8::MAX)).expect("an empty table has ids");
        debug_assert_eq!(h, NO_HOP);
        self.macs.push(HopMac::unresolved(0));
        self.sync_epoch();
    }

    /// Bring `epoch` up to date after ids may have been reassigned.
    fn sync_epoch(&mut self) {
        // Each count only grows (by one per reassignment: never near 2^62), so the sum
        // changes whenever one of them does.
        self.epoch = self.vips.reassigned + self.reals.reassigned + self.hops.reassigned;
    }

    /// The (VIP, port) of connection `c`.
    #[inline(always)]
    pub fn vip_of(&self, c: &Conn) -> (Addr, u16) {
        if c.v4 {
            let ([_, vip, _], vport, _) = c.v4_parts();
            return (v4_addr(vip), vport);
        }
        self.vips.get(c.vipi)
    }
    /// The (real server, port) of connection `c`.
    #[inline(always)]
    pub fn rs_of(&self, c: &Conn) -> (Addr, u16) {
        if c.v4 {
            let ([_, _, rs], _, rport) = c.v4_parts();
            return (v4_addr(rs), rport);
        }
        self.reals.get(c.rsi)
    }
    /// The local address of full-NAT connection `c` (0 for other connections).
    #[inline(always)]
    pub fn laddr_of(&self, c: &Conn) -> Addr {
        if c.fwd == Forward::Fnat {
            self.laddrs.get(c.laddr)
        } else {
            0
        }
    }
    /// Next hop `h` (a connection's `hop_in` / `hop_out`).
    pub fn hop(&self, h: u16) -> Hop {
        let m = self.hop_mac(h);
        Hop { iface: m.iface, nh: self.hop_nh(h), mac: m.mac(), mac_gen: m.mac_gen }
    }
    /// The egress interface and cached Ethernet header of next hop `h`.
    #[inline(always)]
    pub fn hop_mac(&self, h: u16) -> HopMac {
        self.macs[h as usize]
    }
    /// The neighbour address of next hop `h` (0 for [`NO_HOP`]).
    #[inline(always)]
    pub fn hop_nh(&self, h: u16) -> Addr {
        self.hops.get(h).0
    }
    /// Connections whose next hop (either direction) is neighbour `nh` on interface `iface`
    /// (a map lookup: for timers, not the packet path).
    pub fn hop_refs(&self, nh: Addr, iface: u8) -> u32 {
        self.hops.map.get(&(nh, iface)).map_or(0, |&h| self.hops.refs(h))
    }
    /// Cache the Ethernet header of next hop `h` (its MAC, then its interface's) and its
    /// interface's MTU as valid for neighbour generation `gen`.
    #[inline(always)]
    pub fn set_hop_l2(&mut self, h: u16, hdr: [u8; 12], mtu: u16, gen: u32) {
        if h != NO_HOP {
            let m = &mut self.macs[h as usize];
            m.hdr = hdr;
            m.mtu = mtu;
            m.mac_gen = gen;
        }
    }
    /// Egress interface towards the real server.
    #[inline(always)]
    pub fn if_in(&self, c: &Conn) -> u8 {
        self.macs[c.hop_in as usize].iface
    }
    /// Egress interface towards the client (0 for DR and tunnel).
    #[inline(always)]
    pub fn if_out(&self, c: &Conn) -> u8 {
        self.macs[c.hop_out as usize].iface
    }
    /// Changes whenever an interned VIP, real server or next hop id is given another value
    /// (reused for a new value, or the table cleared): ids seen at one epoch still name the
    /// same values while it is unchanged ([`NewConn::hint_sure`]). Never [`NO_EPOCH`].
    #[inline(always)]
    pub fn ids_epoch(&self) -> u64 {
        self.epoch
    }

    /// Interned values: (VIPs, real servers, local addresses, next hops).
    pub fn interned(&self) -> (usize, usize, usize, usize) {
        (self.vips.len(), self.reals.len(), self.laddrs.len(), self.hops.len())
    }
    /// Cold parts allocated (live connections that use one).
    pub fn cold_in_use(&self) -> usize {
        self.cold.len() - self.cold_free.len()
    }

    /// The request-direction key of `c` as it arrives (client to VIP).
    #[inline(always)]
    pub fn key_in(&self, c: &Conn) -> FlowKey {
        let (vip, vport) = self.vip_of(c);
        FlowKey { src: c.client(), dst: vip, sport: c.cport, dport: vport, proto: c.proto }
    }

    /// The reply-direction key of `c` as it arrives: from the real server to
    /// the client (NAT) or to the local address and port (full NAT).
    #[inline(always)]
    pub fn key_out(&self, c: &Conn) -> FlowKey {
        let (rs, rport) = self.rs_of(c);
        if c.fwd == Forward::Fnat {
            FlowKey { src: rs, dst: self.laddr_of(c), sport: rport, dport: c.lport, proto: c.proto }
        } else {
            FlowKey { src: rs, dst: c.client(), sport: rport, dport: c.cport, proto: c.proto }
        }
    }

    /// See the `version` field: unchanged means no connection was
    /// inserted or removed since.
    #[inline(always)]
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Slots in the slab (live or free); indices are below this.
    pub fn slots(&self) -> usize {
        self.slab.len()
    }

    /// Keyed hash of a 5-tuple.
    #[inline(always)]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let s = self.seed;
        let a = (k.src as u64) ^ ((k.src >> 64) as u64).rotate_left(23);
        let b = (k.dst as u64) ^ ((k.dst >> 64) as u64).rotate_left(41);
        let p = ((k.sport as u64) << 32) | ((k.dport as u64) << 16) | k.proto as u64;
        // Never 0: the worker uses 0 for "not hashed".
        mum(mum(a ^ s, b ^ 0x9e37_79b9_7f4a_7c15) ^ p, s ^ 0xd6e8_feb8_6659_fd93) | 1
    }

    /// Home slot of a tag: the tag scaled to the slot count.
    #[inline(always)]
    fn home(&self, tag: u32) -> usize {
        home_of(tag, self.n as u64)
    }

    /// The slot after `i`: runs never wrap (the index's last slot is always empty).
    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        i + 1
    }

    /// Where a word with `tag` goes: the first slot from its home that is empty or holds a
    /// greater tag (after any equal ones).
    #[inline(always)]
    fn rh_pos(&self, tag: u32) -> usize {
        let mut i = self.home(tag);
        loop {
            let w = self.index[i];
            if w == EMPTY || (w >> 32) as u32 > tag {
                return i;
            }
            i = self.next(i);
        }
    }

    /// Put word `w` at index position `pos` (its [`FlowTable::rh_pos`]), shifting the rest
    /// of the run one slot on. `false`, nothing changed, if that would fill the last slot.
    #[inline(always)]
    fn place(&mut self, pos: usize, w: u64) -> bool {
        let last = self.index.len() - 1;
        // One pass over the run from `pos` (short: 2-4 words at the usual load), each word
        // taking the next slot's place until one lands in an empty slot. Iterated as a
        // slice, so there is one bounds check, not one per slot.
        let mut cur = w;
        if let Some(run) = self.index.get_mut(pos..last) {
            for slot in run {
                cur = std::mem::replace(slot, cur);
                if cur == EMPTY {
                    return true;
                }
            }
        }
        // `cur` would take the last slot: everything shifted goes back.
        if let Some(run) = self.index.get_mut(pos..last).filter(|r| !r.is_empty()) {
            run.rotate_left(1);
            if let Some(x) = run.last_mut() {
                *x = cur;
            }
        }
        false
    }

    /// Prefetch the index line of a hash (first stage of a burst).
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        let i = self.home((h >> 32) as u32);
        prefetch_ptr(self.index.as_ptr().wrapping_add(i));
        // A lookup reads 2.2 words on average (at the bench's load): when its home is near
        // the end of a line, the run goes on in the next one, fetched with it (one
        // instruction; 5-10 % faster at 1 M flows in alternating `ferrovs bench` runs).
        prefetch_ptr(self.index.as_ptr().wrapping_add(i + 3));
    }

    /// Prefetch the cache line of connection `i`.
    #[inline(always)]
    pub fn prefetch_conn(&self, i: u32) {
        prefetch_ptr(self.slab.as_ptr().wrapping_add(i as usize));
    }

    #[inline(always)]
    fn matches(&self, v: u32, k: &FlowKey) -> bool {
        // Index words always refer to live slab entries.
        let c = &self.slab[(v >> 1) as usize];
        if c.v4 {
            // The whole key in this line, compared as 32-bit words (in the express lane `k`
            // is built from IPv4 headers, so the IPv4 tests fold away). Through `vip_of` and
            // `rs_of` as 128-bit addresses, like the branch below, it measured 18 instructions
            // per established packet more (callgrind, 100 k flows: 528.8 against 510.5).
            let ([client, vip, rs], vport, rport) = c.v4_parts();
            let (src, dst) = (k.src as u32, k.dst as u32);
            return parse::addr_is_v4(k.src)
                && parse::addr_is_v4(k.dst)
                && c.proto == k.proto
                && if v & 1 == 0 {
                    src == client && k.sport == c.cport && dst == vip && k.dport == vport
                } else {
                    src == rs
                        && k.sport == rport
                        && if c.fwd == Forward::Fnat {
                            c.lport == k.dport && self.laddrs.get(c.laddr) == k.dst
                        } else {
                            dst == client && k.dport == c.cport
                        }
                };
        }
        if v & 1 == 0 {
            let (vip, vport) = self.vip_of(c);
            c.client() == k.src && c.cport == k.sport && c.proto == k.proto && vip == k.dst && vport == k.dport
        } else {
            let (rs, rport) = self.rs_of(c);
            rs == k.src
                && rport == k.sport
                && c.proto == k.proto
                && if c.fwd == Forward::Fnat {
                    c.lport == k.dport && self.laddrs.get(c.laddr) == k.dst
                } else {
                    c.client() == k.dst && c.cport == k.dport
                }
        }
    }

    /// [`FlowTable::matches`] as a call: in a walk that compares keys only on a tag match,
    /// so that the compare's set-up is not hoisted before the loop and paid on every walk.
    #[inline(never)]
    fn matches_out_of_line(&self, v: u32, k: &FlowKey) -> bool {
        self.matches(v, k)
    }

    /// Index position of key `k` (hash `h`): `Ok` where it is, or `Err` with where it
    /// would go ([`FlowTable::rh_pos`]). Runs are sorted by tag: the walk stops at the first
    /// greater tag (or an empty slot, whose tag bits are all ones).
    fn probe(&self, k: &FlowKey, h: u64) -> Result<usize, usize> {
        let tag = (h >> 32) as u32;
        let mut i = self.home(tag);
        loop {
            let w = self.index[i];
            let t = (w >> 32) as u32;
            if t > tag || w == EMPTY {
                return Err(i);
            }
            if t == tag && self.matches_out_of_line(w as u32, k) {
                return Ok(i);
            }
            i = self.next(i);
        }
    }

    /// [`FlowTable::lookup_hashed`] for a packet that may create a connection: a miss
    /// notes where the key would go, so that an [`FlowTable::insert`] of it right after
    /// (nothing inserted or removed in between) skips its walk.
    #[inline]
    pub fn lookup_for_insert(&mut self, k: &FlowKey, h: u64) -> Option<(u32, Dir)> {
        debug_assert_eq!(h, self.hash(k), "the key's hash");
        match self.probe(k, h) {
            Ok(i) => {
                let v = self.index[i] as u32;
                Some((v >> 1, if v & 1 == 0 { Dir::In } else { Dir::Out }))
            }
            Err(pos) => {
                self.miss = Some((*k, h, self.version, pos));
                None
            }
        }
    }

    /// Start tracking inserts for a burst whose lookups ran at the current version (which it
    /// returns): see [`FlowTable::still_missing`].
    #[inline(always)]
    pub fn mark_misses(&mut self) -> u64 {
        // Unchanged since the last mark (established traffic): nothing went in since, so
        // the filter is still empty.
        if self.ins_mark != Some(self.version) {
            self.ins_filter = [0; INS_FILTER_WORDS];
            self.ins_mark = Some(self.version);
        }
        self.version
    }

    /// Is a key of hash `h` that was absent at version `ver` still absent? `true` when
    /// nothing was inserted or removed since, or when `ver` is the last
    /// [`FlowTable::mark_misses`] and no key inserted since shares the hash's filter bit
    /// (removals never make a key present; an insert makes only its own keys present).
    /// `false` means "maybe present": look it up.
    #[inline(always)]
    pub fn still_missing(&self, h: u64, ver: u64) -> bool {
        if ver == self.version {
            return true;
        }
        if self.ins_mark != Some(ver) {
            return false;
        }
        let (w, b) = ins_bit(h);
        self.ins_filter[w] & b == 0
    }

    /// Key `k` (hash `h`) is known to be absent ([`FlowTable::still_missing`]): an
    /// [`FlowTable::insert`] of it right after (nothing inserted or removed in between)
    /// skips the duplicate check of its request key and only looks for the first empty slot.
    #[inline(always)]
    pub fn note_miss(&mut self, k: &FlowKey, h: u64) {
        debug_assert!(self.probe(k, h).is_err(), "a noted miss is absent");
        self.miss = Some((*k, h, self.version, POS_UNKNOWN));
    }

    /// Index position of key `k` (hash `h`).
    #[inline(always)]
    fn find(&self, k: &FlowKey, h: u64) -> Option<usize> {
        self.probe(k, h).ok()
    }

    /// Look up a 5-tuple as received.
    #[inline(always)]
    pub fn lookup(&self, k: &FlowKey) -> Option<(u32, Dir)> {
        self.lookup_hashed(k, self.hash(k))
    }

    /// Look up with a hash from [`FlowTable::hash`].
    #[inline(always)]
    pub fn lookup_hashed(&self, k: &FlowKey, h: u64) -> Option<(u32, Dir)> {
        self.find(k, h).map(|i| {
            let v = self.index[i] as u32;
            (v >> 1, if v & 1 == 0 { Dir::In } else { Dir::Out })
        })
    }

    /// Like [`FlowTable::lookup_hashed`], but returns the raw index word
    /// `slot << 1 | dir` (dir 1: reply direction).
    #[inline(always)]
    pub fn lookup_word(&self, k: &FlowKey, h: u64) -> Option<u32> {
        self.find(k, h).map(|i| self.index[i] as u32)
    }

    /// The burst's second pass: the first index word on the probe sequence of hash `h` whose
    /// tag matches, or [`NONE`] if the sequence ends first (then no live key has this hash).
    /// Reads only the index (the line [`FlowTable::prefetch`] asked for), never the
    /// connection: its line is what the caller prefetches next, and the caller confirms the
    /// key with [`FlowTable::word_matches`] once it has arrived (a tag match of another key
    /// is rare: 32-bit tags; then a full [`FlowTable::lookup_word`]).
    #[inline(always)]
    pub fn candidate(&self, h: u64) -> u32 {
        let tag = (h >> 32) as u32;
        let mut i = self.home(tag);
        loop {
            let Some(&w) = self.index.get(i) else { return NONE };
            // Sorted runs: the first tag not below ours decides. An empty slot's tag bits are
            // all ones and its low word is NONE, so it answers NONE either way.
            let t = (w >> 32) as u32;
            if t >= tag {
                return if t == tag { w as u32 } else { NONE };
            }
            i = self.next(i);
        }
    }

    /// Does index word `v` (from [`FlowTable::lookup_word`]) still denote a
    /// live connection with key `k`? Keys are unique among live
    /// connections, so a match is exactly what a fresh lookup would return.
    #[inline(always)]
    pub fn word_matches(&self, v: u32, k: &FlowKey) -> bool {
        self.slab.get((v >> 1) as usize).is_some_and(|c| c.live) && self.matches(v, k)
    }

    #[inline(always)]
    pub fn get(&self, i: u32) -> &Conn {
        &self.slab[i as usize]
    }
    #[inline(always)]
    pub fn get_mut(&mut self, i: u32) -> &mut Conn {
        &mut self.slab[i as usize]
    }
    pub fn try_get(&self, i: u32) -> Option<&Conn> {
        self.slab.get(i as usize).filter(|c| c.live)
    }
    /// The cold part of connection `i` ([`ConnCold::EMPTY`] if it has none).
    #[inline]
    pub fn cold(&self, i: u32) -> &ConnCold {
        match self.slab[i as usize].cold {
            NONE => &COLD_EMPTY,
            k => &self.cold[k as usize],
        }
    }
    /// The cold part of connection `c` (an entry of this table; [`ConnCold::EMPTY`] if it
    /// has none): [`FlowTable::cold`] for a caller that holds the entry already.
    #[inline(always)]
    pub fn cold_of(&self, c: &Conn) -> &ConnCold {
        match c.cold {
            NONE => &COLD_EMPTY,
            k => &self.cold[k as usize],
        }
    }
    /// The cold part of live connection `i`, allocated on first use.
    #[inline(always)]
    pub fn cold_mut(&mut self, i: u32) -> &mut ConnCold {
        let k = match self.slab[i as usize].cold {
            NONE => self.alloc_cold(i),
            k => k,
        };
        &mut self.cold[k as usize]
    }
    /// Give live connection `i` a cold part (from the free list, else a new one).
    #[cold]
    #[inline(never)]
    fn alloc_cold(&mut self, i: u32) -> u32 {
        debug_assert!(self.slab[i as usize].live);
        let k = match self.cold_free.pop() {
            Some(k) => {
                self.cold[k as usize] = ConnCold::EMPTY;
                k
            }
            None => {
                self.cold.push(ConnCold::EMPTY);
                (self.cold.len() - 1) as u32
            }
        };
        self.slab[i as usize].cold = k;
        k
    }
    /// Incremental expiry scan: look at up to `*budget` slots from `*pos`
    /// (wrapping), consuming budget, and put the live connections that
    /// expired at `now` into `out`, in slot order; returns how many. A full
    /// `out` ends the scan with `*pos` just past its last connection (budget
    /// may be left: scan again once they are dealt with); fewer means the
    /// budget ran out. A batch, not one connection a call: the scan resumes
    /// once per batch rather than once per expired connection (the `new`
    /// bench's sweep expires one connection per packet).
    #[inline]
    pub fn scan_expired(&self, pos: &mut usize, budget: &mut usize, now: u64, out: &mut [u32; EXPIRED_BATCH]) -> usize {
        let n = self.slab.len();
        let mut found = 0;
        while *budget > 0 {
            if *pos >= n {
                *pos = 0;
            }
            let end = n.min(*pos + *budget);
            let start = *pos;
            for (k, c) in self.slab[start..end].iter().enumerate() {
                if c.expired(now) && c.live {
                    if let Some(o) = out.get_mut(found) {
                        *o = (start + k) as u32;
                    }
                    found += 1;
                    if found == EXPIRED_BATCH {
                        *budget -= k + 1;
                        *pos = start + k + 1;
                        return found;
                    }
                }
            }
            *budget -= end - start;
            *pos = end;
            if n == 0 {
                break;
            }
        }
        found
    }
    /// The low 16 bits of a packet count of connection `i` wrapped: carry.
    #[cold]
    pub fn carry_pkt(&mut self, i: u32, inbound: bool) {
        let k = self.cold_mut(i);
        if inbound {
            k.pkts_in_hi += 1;
        } else {
            k.pkts_out_hi += 1;
        }
    }
    /// Packets (in, out) of connection `i`.
    pub fn pkts(&self, i: u32) -> (u64, u64) {
        let (c, k) = (&self.slab[i as usize], self.cold(i));
        (k.pkts_in_hi << 16 | c.pkts_in as u64, k.pkts_out_hi << 16 | c.pkts_out as u64)
    }

    /// Remove index position `pos` (backward-shift deletion): the words after it move one
    /// slot back until an empty slot or a word at its home. Runs stay sorted.
    #[inline(always)]
    fn index_remove(&mut self, pos: usize) {
        let n = self.n as u64;
        // (`home_of`, not `home`: the cells below borrow the index.)
        // Pairs (hole, next) along the run, as cells so each step both reads and writes
        // without a bounds check per slot. The index's last slot is always empty, so the
        // walk stops at the latest there.
        let Some(run) = self.index.get_mut(pos..) else { return };
        let run = std::cell::Cell::from_mut(run).as_slice_of_cells();
        for (k, pair) in run.windows(2).enumerate() {
            let w = pair[1].get();
            if w == EMPTY || home_of((w >> 32) as u32, n) == pos + k + 1 {
                pair[0].set(EMPTY);
                return;
            }
            pair[0].set(w);
        }
        if let Some(x) = run.last() {
            x.set(EMPTY);
        }
    }

    /// Take the interned ids of `c`; `None` (nothing taken) if a kind is full.
    #[inline(always)]
    fn intern_all(&mut self, c: &NewConn) -> Option<[u16; 5]> {
        let two = c.fwd.two_way();
        let fnat = c.fwd == Forward::Fnat;
        // The common case: every hint holds its value (a connection like the last one to
        // the same real server), so each id just gains a reference: nothing to hash
        // (`retake_hints`, one copy with the first three vouched for, one without: each
        // with its checks known). Else `intern_slow`.
        if !fnat {
            let hit = if c.hint_sure { self.retake_hints::<true>(c, two) } else { self.retake_hints::<false>(c, two) };
            if hit.is_some() {
                return hit;
            }
        }
        self.intern_slow(c, two, fnat)
    }

    /// The hint fast path of [`FlowTable::intern_all`] (not full NAT): each id of `c.hint`
    /// that holds its value gains a reference, checked and taken id by id; a hint that does
    /// not hold gives back what was taken (a count back where it was: no change to the ids
    /// queued for reuse) and answers `None`. `SURE`: the caller vouches for the first three
    /// ([`NewConn::hint_sure`]); the reply direction's next hop, which depends on the
    /// client, is compared either way.
    #[inline(always)]
    fn retake_hints<const SURE: bool>(&mut self, c: &NewConn, two: bool) -> Option<[u16; 5]> {
        let [hv, hr, hi, ho] = c.hint;
        debug_assert!(
            !SURE
                || (self.vips.vals.get(hv as usize) == Some(&(c.vip, c.vport))
                    && self.reals.vals.get(hr as usize) == Some(&(c.rs, c.rport))
                    && self.hops.vals.get(hi as usize) == Some(&(c.nh_in, c.if_in))),
            "a vouched hint names its value"
        );
        if self.vips.retake_if(hv, &(c.vip, c.vport), SURE) {
            if self.reals.retake_if(hr, &(c.rs, c.rport), SURE) {
                if self.hops.retake_if(hi, &(c.nh_in, c.if_in), SURE) {
                    if !two {
                        return Some([hv, hr, 0, hi, NO_HOP]);
                    }
                    if self.hops.retake_if(ho, &(c.nh_out, c.if_out), false) {
                        return Some([hv, hr, 0, hi, ho]);
                    }
                    self.hops.release(hi);
                }
                self.reals.release(hr);
            }
            self.vips.release(hv);
        }
        None
    }

    /// [`FlowTable::intern_all`] id by id, with the hints tried first.
    #[inline(never)]
    fn intern_slow(&mut self, c: &NewConn, two: bool, fnat: bool) -> Option<[u16; 5]> {
        // Taken in this order: VIP, real server, local address (full NAT; else 0), next
        // hop in, next hop out (two-way; else NO_HOP). `got`: how many were taken.
        let mut ids = [0, 0, 0, NO_HOP, NO_HOP];
        let mut got = 0;
        let done = 'take: {
            let Some((v, _)) = self.vips.take_hinted((c.vip, c.vport), c.hint[0]) else { break 'take false };
            (ids[0], got) = (v, 1);
            let Some((r, _)) = self.reals.take_hinted((c.rs, c.rport), c.hint[1]) else { break 'take false };
            (ids[1], got) = (r, 2);
            if fnat {
                let Some((l, _)) = self.laddrs.take(c.laddr) else { break 'take false };
                ids[2] = l;
            }
            got = 3;
            let Some(h) = self.take_hop(c.nh_in, c.if_in, c.hint[2]) else { break 'take false };
            (ids[3], got) = (h, 4);
            if two {
                let Some(h) = self.take_hop(c.nh_out, c.if_out, c.hint[3]) else { break 'take false };
                ids[4] = h;
            }
            true
        };
        // A take may have given an unreferenced id a new value.
        self.sync_epoch();
        if done {
            return Some(ids);
        }
        // One kind was full: give back what was taken.
        if got > 0 {
            self.vips.release(ids[0]);
        }
        if got > 1 {
            self.reals.release(ids[1]);
        }
        if got > 2 && fnat {
            self.laddrs.release(ids[2]);
        }
        if got > 3 {
            self.hops.release(ids[3]);
        }
        None
    }

    #[inline(always)]
    fn take_hop(&mut self, nh: Addr, iface: u8, hint: u16) -> Option<u16> {
        let (h, fresh) = self.hops.take_hinted((nh, iface), hint)?;
        if fresh {
            // Not resolved yet (a generation the worker's neighbour cache never has).
            let unresolved = HopMac::unresolved(iface);
            match self.macs.get_mut(h as usize) {
                Some(m) => *m = unresolved,
                None => self.macs.push(unresolved),
            }
        }
        Some(h)
    }

    fn release_ids(&mut self, c: &Conn) {
        self.vips.release(c.vipi);
        self.reals.release(c.rsi);
        if c.fwd == Forward::Fnat {
            self.laddrs.release(c.laddr);
        }
        self.hops.release(c.hop_in);
        if c.hop_out != NO_HOP {
            self.hops.release(c.hop_out);
        }
    }

    /// Insert a connection seen at `now` (ns); fails when full, when one of
    /// its keys is already taken (a 5-tuple collision with a live
    /// connection) or when an interned kind has no id left.
    pub fn insert(&mut self, c: NewConn, now: u64) -> Option<u32> {
        self.insert_ref(&c, now).map(|(i, _)| i)
    }

    /// [`FlowTable::insert`] by reference: the new connection's slot and the connection
    /// itself (no second look-up for what the caller sets next), `None` on failure.
    #[inline]
    pub fn insert_ref(&mut self, c: &NewConn, now: u64) -> Option<(u32, &mut Conn)> {
        if self.live >= self.cap {
            return None;
        }
        let kin = c.key_in();
        let two = c.fwd.two_way();
        // One walk per key: a duplicate is refused, else where the key goes (the request
        // key's hash and walk are known if a lookup just missed it, see `miss`; a noted
        // miss only needs the first empty slot).
        let (hin, pin) = match self.miss.take() {
            Some((k, h, v, pos)) if v == self.version && k == kin => {
                (h, if pos == POS_UNKNOWN { self.rh_pos((h >> 32) as u32) } else { pos })
            }
            _ => {
                let h = self.hash(&kin);
                match self.probe(&kin, h) {
                    Err(pos) => (h, pos),
                    Ok(_) => return None,
                }
            }
        };
        let hout = if two {
            let kout = c.key_out();
            let h = self.hash(&kout);
            if self.probe(&kout, h).is_ok() {
                return None;
            }
            h
        } else {
            0
        };
        let [vipi, rsi, laddr, hop_in, hop_out] = self.intern_all(c)?;
        let v4 = parse::addr_is_v4(c.client) && parse::addr_is_v4(c.vip) && parse::addr_is_v4(c.rs);
        let mut e = Conn {
            addr: if v4 { pack_v4(c.client, c.vip, c.vport, c.rs, c.rport) } else { c.client },
            cport: c.cport,
            lport: if c.fwd == Forward::Fnat { c.lport } else { 0 },
            seq_mark: 0,
            vipi,
            rsi,
            laddr,
            svc: c.svc,
            dest: c.dest,
            snap_gen: c.snap_gen,
            gen: 1,
            exp: 0,
            cold: NONE,
            l3_in: c.l3_in as u16,
            l4: c.l4_in as u16,
            hop_in,
            hop_out,
            pkts_in: 0,
            pkts_out: 0,
            flags: c.flags,
            proto: c.proto,
            fwd: c.fwd,
            state: c.state,
            live: true,
            v4,
        };
        e.set_expires(now, c.expires);
        // The index words first (they name the slot the connection will take): a run that
        // would reach the index's end refuses the insert with nothing changed.
        let idx = if self.free == NONE { self.slab.len() as u32 } else { self.free };
        if !self.place(pin, (hin >> 32) << 32 | (idx << 1) as u64) {
            self.release_ids(&e);
            return None;
        }
        if two {
            // Where the reply key goes now that the request key is in (its walk is cached).
            let pout = self.rh_pos((hout >> 32) as u32);
            if !self.place(pout, (hout >> 32) << 32 | (idx << 1 | 1) as u64) {
                self.unlink(hin, idx << 1);
                self.release_ids(&e);
                return None;
            }
        }
        self.version += 1;
        if self.free == NONE {
            self.slab.push(e);
        } else {
            let old = &self.slab[idx as usize];
            self.free = old.cold;
            e.gen = old.gen.wrapping_add(1);
            self.slab[idx as usize] = e;
        }
        let (w, b) = ins_bit(hin);
        self.ins_filter[w] |= b;
        if two {
            let (w, b) = ins_bit(hout);
            self.ins_filter[w] |= b;
        }
        self.live += 1;
        Some((idx, &mut self.slab[idx as usize]))
    }

    /// Take the index word of `v` (slot and direction), whose key has hash `h`, out of the
    /// index in one walk: along the probe sequence to the word, then backward-shift
    /// deletion from there (no tombstones). Nothing happens if the word is not there.
    #[inline(always)]
    fn unlink(&mut self, h: u64, v: u32) {
        let w = (h >> 32) << 32 | v as u64;
        let mut i = self.home((h >> 32) as u32);
        loop {
            let x = self.index[i];
            if x == w {
                break;
            }
            if x == EMPTY || x >> 32 > h >> 32 {
                debug_assert!(false, "a live connection's key is indexed");
                return;
            }
            i = self.next(i);
        }
        self.index_remove(i);
    }

    /// Remove connection `i` (drops its cold part: FTP session, SYN proxy
    /// and PROXY protocol state). A free or out-of-range slot is left alone.
    #[inline]
    pub fn remove(&mut self, i: u32) {
        let Some(&c) = self.slab.get(i as usize).filter(|c| c.live) else { return };
        self.remove_entry(i, &c);
    }

    /// [`FlowTable::remove`] of live connection `i` whose entry the caller has read already:
    /// `c` is a copy of it as it is now. The worker's one caller (`remove_conn`) reads the
    /// entry once for everything it does, so the removal neither looks the slot up again
    /// nor copies the 64 bytes a second time. Inline for the same reason: the worker
    /// removes through that one caller, which saves a call per connection.
    #[inline]
    pub fn remove_entry(&mut self, i: u32, c: &Conn) {
        debug_assert!(
            self.slab.get(i as usize).is_some_and(|e| e.live && e.gen == c.gen && e.cold == c.cold),
            "`c` is live connection `i` as it is now"
        );
        self.version += 1;
        // Each key's index word is (its hash's tag, slot, direction): found by comparing
        // words, without reading the connection back.
        let hin = self.hash(&self.key_in(c));
        self.unlink(hin, i << 1);
        if c.has_out_key() {
            let hout = self.hash(&self.key_out(c));
            self.unlink(hout, i << 1 | 1);
        }
        if c.cold != NONE {
            self.cold[c.cold as usize] = ConnCold::EMPTY;
            self.cold_free.push(c.cold);
        }
        self.release_ids(c);
        let free = self.free;
        if let Some(e) = self.slab.get_mut(i as usize) {
            e.live = false;
            e.cold = free;
        }
        self.free = i;
        self.live -= 1;
    }

    /// Bytes held by the table: slab, index, cold slab and its free list,
    /// interned values (capacities, so reserved but unused memory counts).
    pub fn memory_bytes(&self) -> usize {
        self.index.capacity() * 8
            + self.slab.capacity() * std::mem::size_of::<Conn>()
            + self.cold.capacity() * std::mem::size_of::<ConnCold>()
            + self.cold_free.capacity() * 4
            + self.vips.memory_bytes()
            + self.reals.memory_bytes()
            + self.laddrs.memory_bytes()
            + self.hops.memory_bytes()
            + self.macs.capacity() * std::mem::size_of::<HopMac>()
    }

    /// Size of one connection slot (the hot entry; a cold part, when one
    /// is allocated, adds `size_of::<ConnCold>()`).
    pub fn conn_slot_bytes() -> usize {
        std::mem::size_of::<Conn>()
    }

    /// Bytes per connection slot at capacity: the slab entry plus its index
    /// words (cold parts and interned values not included: see
    /// [`FlowTable::memory_bytes`]).
    pub fn bytes_per_flow(&self) -> usize {
        Self::conn_slot_bytes() + 8 * self.index.len() / self.cap.max(1)
    }

    /// Remove every connection at once (FTP sessions included), keeping
    /// the allocations: the table is as after `new` (same hash seed).
    pub fn clear(&mut self) {
        if self.slab.is_empty() {
            return;
        }
        self.index.fill(EMPTY);
        self.slab.clear();
        self.free = NONE;
        self.cold.clear();
        self.cold_free.clear();
        self.vips.clear();
        self.reals.clear();
        self.laddrs.clear();
        self.reset_hops();
        self.live = 0;
        self.miss = None;
        self.version += 1;
    }
}

#[allow(clippy::too_many_arguments)]
pub fn new_conn(
    proto: u8,
    fwd: Forward,
    client: Addr,
    cport: u16,
    vip: Addr,
    vport: u16,
    rs: Addr,
    rport: u16,
) -> NewConn {
    NewConn {
        proto,
        fwd,
        flags: 0,
        state: if proto == crate::wire::parse::PROTO_TCP { TcpState::None } else { TcpState::Udp },
        client,
        cport,
        vip,
        vport,
        rs,
        rport,
        svc: 0,
        dest: 0,
        snap_gen: 0,
        expires: 0,
        l3_in: 0,
        l4_in: 0,
        if_in: 0,
        nh_in: rs,
        if_out: 0,
        nh_out: client,
        laddr: 0,
        lport: 0,
        hint: NO_HINT,
        hint_sure: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::csum;
    use crate::wire::parse::v4_to_addr;

    fn conn(c: u8, fwd: Forward) -> NewConn {
        let mut n = new_conn(
            6,
            fwd,
            v4_to_addr([10, 0, 1, c]),
            1000,
            v4_to_addr([10, 0, 1, 100]),
            80,
            v4_to_addr([10, 0, 2, 2]),
            80,
        );
        n.if_in = 1;
        n.nh_out = v4_to_addr([10, 0, 1, 254]);
        n.expires = 1_000_000_000;
        n
    }

    #[test]
    fn ipv4_connections_carry_their_whole_key() {
        let mut t = FlowTable::new(16);
        let n = conn(2, Forward::Nat);
        let mut f = conn(3, Forward::Fnat);
        (f.laddr, f.lport) = (v4_to_addr([10, 0, 2, 200]), 40000);
        // An IPv4 client of an IPv6 real server (translated): its key stays in the tables.
        let mut x = conn(4, Forward::Fnat);
        (x.rs, x.laddr, x.lport) = (0xfd00 << 112 | 2, 0xfd00 << 112 | 200, 40001);
        let mut six = conn(5, Forward::Nat);
        (six.client, six.vip, six.rs) = (0xfd01 << 112 | 5, 0xfd01 << 112 | 100, 0xfd00 << 112 | 3);
        let compat = |a: Addr| if parse::addr_is_v4(a) { a as u32 as u128 } else { a };
        for (n, packed) in [(n, true), (f, true), (x, false), (six, false)] {
            let i = t.insert(n, 0).unwrap();
            let c = t.get(i);
            assert_eq!(c.v4, packed);
            assert_eq!(c.client(), n.client);
            assert_eq!(t.vip_of(c), (n.vip, n.vport));
            assert_eq!(t.rs_of(c), (n.rs, n.rport));
            assert_eq!((t.key_in(c), t.key_out(c)), (n.key_in(), n.key_out()));
            assert_eq!(t.lookup(&n.key_in()), Some((i, Dir::In)));
            assert_eq!(t.lookup(&n.key_out()), Some((i, Dir::Out)));
            for (w, k, other) in [(i << 1, n.key_in(), n.key_out()), (i << 1 | 1, n.key_out(), n.key_in())] {
                assert!(t.word_matches(w, &k));
                assert!(!t.word_matches(w, &other), "a word of the other direction");
                // Any field changed is another key, and so are the same 32 bits as an
                // IPv4-compatible (not IPv4-mapped) IPv6 address.
                let changed = [
                    FlowKey { src: k.src ^ 1, ..k },
                    FlowKey { dst: k.dst ^ 1, ..k },
                    FlowKey { sport: k.sport ^ 1, ..k },
                    FlowKey { dport: k.dport ^ 1, ..k },
                    FlowKey { proto: 17, ..k },
                    FlowKey { src: compat(k.src), ..k },
                    FlowKey { dst: compat(k.dst), ..k },
                ];
                for o in changed.iter().filter(|o| **o != k) {
                    assert!(!t.word_matches(w, o), "{o:?} is not {k:?}");
                }
            }
        }
    }

    /// The client sequence window of `Conn::client_seq_ok`: from the mark 2 units of 64 KiB
    /// back to 128 ahead, across the sequence space's wrap; everything while the mark is not
    /// known, before the connection is established and for full NAT (whose local port it
    /// leaves alone).
    #[test]
    fn client_segments_outside_the_sequence_window_are_refused() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(2, Forward::Nat), 0).unwrap();
        let c = t.get_mut(i);
        c.state = TcpState::Established;
        let unit = 1u32 << 16;
        assert!(c.client_seq_ok(0x8000_0000), "the mark not known yet");
        c.note_client_seq(0x1234_5678);
        for (seq, ok) in [
            (0x1234_5678, true),
            (0x1234_0000 - 2 * unit, true),
            (0x1234_0000 - 2 * unit - 1, false),
            (0x1234_ffff + 128 * unit, true),
            (0x1234_ffff + 128 * unit + 1, false),
            (0x9234_5678, false),
        ] {
            assert_eq!(c.client_seq_ok(seq), ok, "{seq:#x}");
        }
        for st in [TcpState::FinWait, TcpState::CloseWait, TcpState::LastAck] {
            c.state = st;
            assert!(!c.client_seq_ok(0x9234_5678), "{st:?}");
        }
        for st in [TcpState::None, TcpState::SynRecv, TcpState::Close, TcpState::TimeWait] {
            c.state = st;
            assert!(c.client_seq_ok(0x9234_5678), "{st:?}: a new handshake may reuse the tuple");
        }
        c.state = TcpState::Established;
        c.note_client_seq(0xffff_0000);
        assert!(c.client_seq_ok(0x0010_0000), "across the wrap");
        assert!(!c.client_seq_ok(0xfffc_ffff));
        assert_eq!(c.lport(), 0, "not full NAT: no local port");
        let mut f = conn(3, Forward::Fnat);
        (f.laddr, f.lport) = (v4_to_addr([10, 0, 2, 200]), 40000);
        let j = t.insert(f, 0).unwrap();
        let c = t.get_mut(j);
        c.state = TcpState::Established;
        assert!(c.client_seq_ok(0x1234_5678), "the mark not known yet");
        c.note_client_seq(0x9234_5678);
        assert!(!c.client_seq_ok(0x1234_5678), "full NAT: checked too");
        assert!(c.client_seq_ok(0x9235_0000));
        assert_eq!(c.lport(), 40000, "and its local port kept");
    }

    /// `Conn::l3_out`, derived from `l3_in`, is exactly the reply direction's IPv4 header
    /// delta computed from its addresses (as the worker computed and stored it before), for
    /// plain and full NAT over random addresses, and 0 without an IPv4 delta.
    #[test]
    fn the_reply_header_delta_is_derived_exactly() {
        let mut t = FlowTable::new(16);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v4_to_addr((x as u32).to_be_bytes())
        };
        for i in 0..20_000 {
            let (client, vip, rs, la) = (rnd(), rnd(), rnd(), rnd());
            // A few cases where the addresses' sums cancel, so the delta is one's complement 0.
            let (rs, la) = if i % 1000 == 0 { (vip, client) } else { (rs, la) };
            let fnat = i % 2 == 1;
            let mut a_in = csum::delta_addr_unfolded(vip, rs, true);
            let mut a_out = csum::delta_addr_unfolded(rs, vip, true);
            if fnat {
                a_in += csum::delta_addr_unfolded(client, la, true);
                a_out += csum::delta_addr_unfolded(la, client, true);
            }
            let mut n = conn(1, if fnat { Forward::Fnat } else { Forward::Nat });
            n.l3_in = csum::fold(a_in + TTL_DELTA) as u32;
            let j = t.insert(n, 0).unwrap();
            assert_eq!(t.get(j).l3_out(), csum::fold(a_out + TTL_DELTA), "{client:x} {vip:x} {rs:x} {la:x} {fnat}");
            t.remove(j);
        }
        let j = t.insert(conn(1, Forward::Nat), 0).unwrap();
        assert_eq!(t.get(j).l3_out(), 0, "no IPv4 header delta");
    }

    #[test]
    fn insert_lookup_remove_both_keys() {
        let mut t = FlowTable::new(16);
        let n = conn(2, Forward::Nat);
        let i = t.insert(n, 0).unwrap();
        let c = t.get(i);
        assert_eq!(t.key_in(c), n.key_in());
        assert_eq!(t.key_out(c), n.key_out());
        assert_eq!(t.lookup(&n.key_in()), Some((i, Dir::In)));
        assert_eq!(t.lookup(&n.key_out()), Some((i, Dir::Out)));
        assert_eq!(t.vip_of(c), (n.vip, 80));
        assert_eq!(t.rs_of(c), (n.rs, 80));
        assert_eq!((t.if_in(c), t.hop(c.hop_in).nh), (1, n.rs));
        t.remove(i);
        assert_eq!(t.lookup(&n.key_in()), None);
        assert_eq!(t.lookup(&n.key_out()), None);
        assert!(t.is_empty());
        let d = conn(3, Forward::Dr);
        let j = t.insert(d, 0).unwrap();
        assert_eq!(j, i, "slot reused");
        assert_eq!(t.get(j).gen, 2, "generation bumped");
        assert_eq!(t.get(j).hop_out, NO_HOP);
        assert_eq!(t.lookup(&d.key_out()), None, "DR has no reply key");
    }

    #[test]
    fn fnat_reply_key_is_the_local_address_and_port() {
        let mut t = FlowTable::new(16);
        let la = v4_to_addr([10, 0, 2, 200]);
        let mut c = conn(2, Forward::Fnat);
        c.laddr = la;
        c.lport = 5000;
        let i = t.insert(c, 0).unwrap();
        let kout = FlowKey { src: v4_to_addr([10, 0, 2, 2]), dst: la, sport: 80, dport: 5000, proto: 6 };
        assert_eq!(t.key_out(t.get(i)), kout);
        assert_eq!(t.lookup(&kout), Some((i, Dir::Out)));
        assert_eq!(t.lookup(&c.key_in()), Some((i, Dir::In)));
        let nat_out = FlowKey { dst: c.client, dport: c.cport, ..kout };
        assert_eq!(t.lookup(&nat_out), None, "the NAT reply key (to the client) is not one");
        // Same real server, same local address, another local port: another connection.
        let mut d = conn(3, Forward::Fnat);
        d.laddr = la;
        d.lport = 5001;
        let j = t.insert(d, 0).unwrap();
        assert_eq!(t.get(j).laddr, t.get(i).laddr, "interned once");
        assert_eq!(t.laddr_of(t.get(j)), la);
        // The same local address and port towards the same real server: a collision.
        let mut e = conn(4, Forward::Fnat);
        e.laddr = la;
        e.lport = 5000;
        assert!(t.insert(e, 0).is_none());
        t.remove(i);
        assert_eq!(t.lookup(&kout), None);
    }

    /// What the worker does with the burst's second pass: the candidate word confirmed
    /// against the connection, else a full lookup; a missing candidate is a miss.
    fn via_candidate(t: &FlowTable, k: &FlowKey) -> Option<u32> {
        let h = t.hash(k);
        let v = t.candidate(h);
        if v == NONE {
            return None;
        }
        if t.word_matches(v, k) {
            Some(v)
        } else {
            t.lookup_word(k, h)
        }
    }

    #[test]
    fn candidate_then_confirm_agrees_with_lookup() {
        let mut t = FlowTable::new(4096);
        let mut keys = Vec::new();
        for i in 0..3000u32 {
            let mut n = conn((i % 250) as u8, Forward::Nat);
            n.cport = 1000 + (i / 250) as u16;
            t.insert(n, 0).unwrap();
            keys.push(n.key_in());
            keys.push(n.key_out());
        }
        for k in &keys {
            let v = via_candidate(&t, k);
            assert!(v.is_some());
            assert_eq!(v, t.lookup_word(k, t.hash(k)));
        }
        // Absent keys: never a false hit; a missing candidate means a miss.
        for i in 0..3000u16 {
            let k = FlowKey { sport: 20000 + i, ..keys[0] };
            assert_eq!(via_candidate(&t, &k), None);
            let v = t.candidate(t.hash(&k));
            assert!(v == NONE || !t.word_matches(v, &k));
        }
    }

    #[test]
    fn a_candidate_of_another_key_falls_back_to_the_full_lookup() {
        // Two live keys whose hashes share the tag: the first on the probe sequence is
        // the other key's; the confirmation fails and the full lookup goes on to the right one.
        let mut t = FlowTable::new(1024);
        let a = conn(1, Forward::Dr);
        let ia = t.insert(a, 0).unwrap();
        // A second connection whose home and the next two slots hold nothing but itself
        // (the hash seed is random: the first of a few that fit).
        let (b, ib, hb, pos) = (2..50)
            .find_map(|c| {
                let b = conn(c, Forward::Dr);
                let ib = t.insert(b, 0).unwrap();
                let hb = t.hash(&b.key_in());
                let pos = t.probe(&b.key_in(), hb).ok().unwrap();
                let home = t.home((hb >> 32) as u32);
                let room = [home, t.next(home), t.next(t.next(home))].iter().all(|&i| i == pos || t.index[i] == EMPTY);
                if room {
                    Some((b, ib, hb, pos))
                } else {
                    t.remove(ib);
                    None
                }
            })
            .expect("a connection with room around its home slot");
        let tag = (hb >> 32) as u32;
        let home = t.home(tag);
        let n1 = t.next(home);
        t.index[pos] = EMPTY;
        t.index[home] = (tag as u64) << 32 | (ia << 1) as u64;
        t.index[n1] = (tag as u64) << 32 | (ib << 1) as u64;
        assert_eq!(t.candidate(hb), ia << 1);
        assert!(!t.word_matches(ia << 1, &b.key_in()));
        assert_eq!(via_candidate(&t, &b.key_in()), Some(ib << 1));
        assert_eq!(t.lookup(&b.key_in()), Some((ib, Dir::In)));
    }

    #[test]
    fn full_and_duplicate() {
        let mut t = FlowTable::new(16);
        for c in 0..16 {
            assert!(t.insert(conn(c, Forward::Nat), 0).is_some());
        }
        assert!(t.insert(conn(200, Forward::Nat), 0).is_none(), "full");
        assert_eq!(t.len(), 16);
        // A removal makes room again, in the same slot.
        let k = conn(5, Forward::Nat).key_in();
        let (i, _) = t.lookup(&k).unwrap();
        t.remove(i);
        assert_eq!(t.insert(conn(200, Forward::Nat), 0), Some(i));
        let mut t = FlowTable::new(16);
        assert!(t.insert(conn(1, Forward::Nat), 0).is_some());
        assert!(t.insert(conn(1, Forward::Nat), 0).is_none(), "same tuple");
        assert_eq!(t.interned(), (1, 1, 0, 3), "a failed insert keeps no ids");
        assert_eq!(t.vips.refs(0), 1);
    }

    #[test]
    fn memory_is_under_96_bytes_per_flow_and_reserved_up_front() {
        let t = FlowTable::new(1 << 20);
        let per = t.memory_bytes() as f64 / (1 << 20) as f64;
        assert!(per <= 85.0, "{per} bytes per flow");
        assert_eq!(t.bytes_per_flow(), 64 + 20);
        // The index grows linearly with the capacity (no rounding up to a power of two), so
        // 4 M and 10 M flows cost the same per flow (the issue's sizes; not allocated here).
        for cap in [4 << 20, 10_000_000] {
            let index = (index_slots(cap) + INDEX_TAIL) * 8;
            let per = (cap * std::mem::size_of::<Conn>() + index) as f64 / cap as f64;
            assert!(per <= 84.01, "{cap} flows: {per} bytes per flow");
        }
        // No growth while filling: the slab and the index are reserved.
        let mut t = FlowTable::new(1000);
        let before = (t.slab.capacity(), t.index.len());
        for c in 0..1000u32 {
            let mut n = conn(0, Forward::Nat);
            n.client = v4_to_addr([100, 64, (c >> 8) as u8, c as u8]);
            assert!(t.insert(n, 0).is_some());
        }
        assert_eq!((t.slab.capacity(), t.index.len()), before);
        assert_eq!(t.cold.capacity(), 0, "no cold part without a use for one");
    }

    #[test]
    fn cold_part_allocated_on_use_and_freed_with_the_connection() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(1, Forward::Nat), 0).unwrap();
        let j = t.insert(conn(2, Forward::Nat), 0).unwrap();
        assert!(!t.get(i).has_cold());
        assert_eq!(t.cold(i).parent, NONE, "reads as empty");
        assert_eq!(t.cold_in_use(), 0);
        t.cold_mut(i).children = 3;
        assert!(t.get(i).has_cold());
        assert_eq!(t.cold(i).children, 3);
        assert_eq!(t.cold(j).children, 0);
        assert_eq!(t.cold_in_use(), 1);
        t.remove(i);
        assert_eq!(t.cold_in_use(), 0);
        // The slot and the cold entry come back clean.
        let k = t.insert(conn(3, Forward::Nat), 0).unwrap();
        assert_eq!(k, i);
        assert!(!t.get(k).has_cold());
        t.cold_mut(k).synced_at = 7;
        assert_eq!(t.cold(k).children, 0);
        assert_eq!(t.cold.len(), 1, "the freed cold entry is reused");
    }

    #[test]
    fn packet_counts_carry_into_the_cold_part() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(1, Forward::Nat), 0).unwrap();
        for _ in 0..3 {
            let c = t.get_mut(i);
            c.pkts_in = c.pkts_in.wrapping_add(u16::MAX);
            t.carry_pkt(i, true);
        }
        t.get_mut(i).pkts_out = 5;
        assert_eq!(t.pkts(i), (3 << 16 | (3 * u16::MAX as u64) & 0xffff, 5));
        assert!(t.get(i).has_cold());
    }

    #[test]
    fn interned_ids_are_counted_and_reused() {
        let mut t = FlowTable::with_intern_limit(64, 3);
        let mut n = conn(1, Forward::Nat);
        let a = t.insert(n, 0).unwrap();
        n.client = v4_to_addr([10, 0, 1, 2]);
        let b = t.insert(n, 0).unwrap();
        assert_eq!(t.get(a).vipi, t.get(b).vipi);
        assert_eq!(t.vips.refs(t.get(a).vipi), 2);
        // A second VIP fits the limit, a third does not (a counted drop for the caller).
        let mut w = conn(3, Forward::Nat);
        w.vip = v4_to_addr([10, 0, 1, 99]);
        assert!(t.insert(w, 0).is_some());
        let mut m = conn(4, Forward::Nat);
        m.vip = v4_to_addr([10, 0, 1, 101]);
        let c = t.insert(m, 0).unwrap();
        let mut x = conn(5, Forward::Nat);
        x.vip = v4_to_addr([10, 0, 1, 102]);
        assert!(t.insert(x, 0).is_none());
        assert_eq!(t.len(), 4);
        // Once its last connection goes, an id is reused for a new value.
        let old = t.get(c).vipi;
        t.remove(c);
        let d = t.insert(x, 0).unwrap();
        assert_eq!(t.get(d).vipi, old);
        assert_eq!(t.vip_of(t.get(d)), (x.vip, 80));
        assert_eq!(t.lookup(&x.key_in()), Some((d, Dir::In)));
        assert_eq!(t.lookup(&m.key_in()), None);
        assert_eq!(t.interned().0, 3, "bounded by the limit");
        // The first VIP still resolves for its connections.
        assert_eq!(t.lookup(&n.key_in()), Some((b, Dir::In)));
    }

    #[test]
    fn vouched_hints_are_taken_and_the_epoch_follows_reassignments() {
        // Four ids per kind: next hops none, in, out and another out.
        let mut t = FlowTable::with_intern_limit(64, 4);
        let e0 = t.ids_epoch();
        assert_ne!(e0, NO_EPOCH);
        let mut n = conn(1, Forward::Nat);
        let a = t.insert(n, 0).unwrap();
        let ids = |t: &FlowTable, i: u32| {
            let c = t.get(i);
            [c.vipi, c.rsi, c.hop_in, c.hop_out]
        };
        let h = ids(&t, a);
        assert_eq!(t.ids_epoch(), e0, "new ids are no reassignment");
        // Vouched: the same ids, one more reference each.
        n.client = v4_to_addr([10, 0, 1, 2]);
        (n.hint, n.hint_sure) = (h, true);
        let b = t.insert(n, 0).unwrap();
        assert_eq!(ids(&t, b), h);
        assert_eq!((t.vips.refs(h[0]), t.reals.refs(h[1]), t.hops.refs(h[2]), t.hops.refs(h[3])), (2, 2, 2, 2));
        // The reply direction's next hop is still compared: another one is looked up, and
        // nothing taken for the vouched three is left over.
        n.client = v4_to_addr([10, 0, 1, 3]);
        n.nh_out = v4_to_addr([10, 0, 1, 253]);
        let c = t.insert(n, 0).unwrap();
        let hc = ids(&t, c);
        assert_eq!(hc[..3], h[..3]);
        assert_ne!(hc[3], h[3]);
        assert_eq!(t.hop(hc[3]).nh, n.nh_out);
        assert_eq!((t.vips.refs(h[0]), t.reals.refs(h[1]), t.hops.refs(h[2])), (3, 3, 3));
        for i in [a, b, c] {
            t.remove(i);
        }
        assert_eq!((t.vips.refs(h[0]), t.reals.refs(h[1]), t.hops.refs(h[2])), (0, 0, 0));
        // Unreferenced ids keep their values (the epoch stays) until one is reused for
        // another value: then it moves.
        assert_eq!(t.ids_epoch(), e0);
        for k in [2, 3, 4] {
            let mut m = conn(10 + k, Forward::Dr);
            m.vip = v4_to_addr([10, 0, 1, 100 + k]);
            t.insert(m, 0).unwrap();
        }
        assert_eq!(t.ids_epoch(), e0, "the limit is not reached yet");
        let mut m = conn(20, Forward::Dr);
        m.vip = v4_to_addr([10, 0, 1, 120]);
        let d = t.insert(m, 0).unwrap();
        assert_eq!(t.get(d).vipi, h[0], "the id is reused");
        let e1 = t.ids_epoch();
        assert_ne!(e1, e0);
        // The old VIP's id no longer names it: a vouched hint is wrong now (the caller
        // checks the epoch first, as `Worker::create_conn` does).
        assert_eq!(t.vip_of(t.get(d)), (m.vip, 80));
        t.clear();
        assert_ne!(t.ids_epoch(), e1, "a clear reassigns every id");
    }

    #[test]
    fn next_hops_are_shared_with_their_mac() {
        let mut t = FlowTable::new(16);
        let gw = v4_to_addr([10, 0, 1, 254]);
        let mut ids = Vec::new();
        for c in 1..4 {
            let mut n = conn(c, Forward::Nat);
            n.if_out = 0;
            n.nh_out = gw;
            ids.push(t.insert(n, 0).unwrap());
        }
        let h = t.get(ids[0]).hop_out;
        assert!(ids.iter().all(|&i| t.get(i).hop_out == h));
        assert_eq!(t.hop(h).mac_gen, 0, "not resolved yet");
        t.set_hop_l2(h, [2, 0, 0, 0, 1, 0xfe, 2, 0, 0, 0, 0, 1], 1500, 5);
        assert_eq!(t.hop(t.get(ids[2]).hop_out).mac, [2, 0, 0, 0, 1, 0xfe]);
        assert_eq!(t.hops.refs(h), 3);
        for i in ids {
            t.remove(i);
        }
        assert_eq!(t.hops.refs(h), 0);
    }

    #[test]
    fn index_wraps_around_its_end() {
        let mut t = FlowTable::new(16);
        let n = t.n;
        // Clients whose request key lands in the last two index slots.
        let mut picked = Vec::new();
        for c in 0..=u16::MAX {
            let mut x = new_conn(17, Forward::Dr, v4_to_addr([100, 64, (c >> 8) as u8, c as u8]), 9, 1, 53, 2, 53);
            x.expires = 1;
            if t.home((t.hash(&x.key_in()) >> 32) as u32) >= n - 2 {
                picked.push(x);
                if picked.len() == 5 {
                    break;
                }
            }
        }
        assert_eq!(picked.len(), 5);
        let ids: Vec<u32> = picked.iter().map(|x| t.insert(*x, 0).unwrap()).collect();
        // Runs do not wrap: they go on past the last home slot into the tail.
        assert!(t.index[n..].iter().any(|&w| w != EMPTY), "the run went on into the tail");
        assert!(t.index[0] == EMPTY || t.home((t.index[0] >> 32) as u32) == 0, "nothing wrapped to slot 0");
        assert_sorted_runs(&t, 0);
        for (x, &i) in picked.iter().zip(&ids) {
            assert_eq!(t.lookup(&x.key_in()), Some((i, Dir::In)));
        }
        // Backward-shift deletion in the tail keeps the others findable.
        t.remove(ids[1]);
        for (k, (x, &i)) in picked.iter().zip(&ids).enumerate() {
            assert_eq!(t.lookup(&x.key_in()), if k == 1 { None } else { Some((i, Dir::In)) });
        }
        for &i in &ids {
            t.remove(i);
        }
        assert!(t.index.iter().all(|&w| w == EMPTY));
    }

    #[test]
    fn expiry_ticks_round_up_cap_and_wrap() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(1, Forward::Nat), 0).unwrap();
        let c = t.get_mut(i);
        let now = 5_000_000_000u64;
        c.set_expires(now, now + 1_000_000_000);
        assert!(!c.expired(now + 1_000_000_000 - (1 << TICK_SHIFT)));
        assert!(c.expired(now + 1_000_000_000), "never late");
        assert!((c.expires_in(now) as i64 - 1_000_000_000).abs() <= 1 << TICK_SHIFT);
        // Far beyond 32 bits of ticks: still exact (wrapping compare).
        let late = (1u64 << 60) + 12345;
        c.set_expires(late, late + 300_000_000_000);
        assert!(!c.expired(late));
        assert!(!c.expired(late + 299_000_000_000));
        assert!(c.expired(late + 301_000_000_000));
        // Timeouts past the span are cut to it, not turned into "expired".
        c.set_expires(late, u64::MAX);
        assert!(!c.expired(late + MAX_SPAN_NS - (2 << TICK_SHIFT)));
        assert_eq!(c.expires_in(late + MAX_SPAN_NS + (2 << TICK_SHIFT)), 0);
    }

    #[test]
    fn reply_l4_delta_is_the_complement() {
        use crate::wire::csum;
        let (a, b) = (v4_to_addr([10, 0, 1, 100]), v4_to_addr([10, 0, 2, 7]));
        let (ab, bb) = ((a as u32).to_be_bytes(), (b as u32).to_be_bytes());
        for (p, q) in [(80u16, 8080u16), (80, 80), (443, 1), (0xffff, 0)] {
            let l4_in = csum::add(csum::delta(&ab, &bb), csum::delta16(p, q));
            let l4_out = csum::add(csum::delta(&bb, &ab), csum::delta16(q, p));
            let mut n = conn(1, Forward::Nat);
            n.l4_in = l4_in;
            let mut t = FlowTable::new(16);
            let i = t.insert(n, 0).unwrap();
            // Both apply the same change to any checksum.
            for check in [0x1234u16, 0, 0xfffe, 0x8000] {
                assert_eq!(csum::apply16(check, t.get(i).l4_out()), csum::apply(check, l4_out), "{p} {q} {check:x}");
            }
            assert_eq!(t.get(i).l4_in() as u32, l4_in);
        }
    }

    /// Every live (connection, in key, out key) is found, and nothing else is in the table.
    /// The index's shape: every word at or after its home with no empty slot in between,
    /// runs sorted by tag, the last slot empty.
    fn assert_sorted_runs(t: &FlowTable, step: usize) {
        assert_eq!(t.index.len(), t.n + INDEX_TAIL);
        assert_eq!(*t.index.last().unwrap(), EMPTY, "step {step}: the last slot is taken");
        let mut run_start = 0;
        for (i, &w) in t.index.iter().enumerate() {
            if w == EMPTY {
                run_start = i + 1;
                continue;
            }
            let home = t.home((w >> 32) as u32);
            assert!(home >= run_start && home <= i, "step {step}: slot {i} holds a word of home {home}");
            if i > run_start {
                assert!(t.index[i - 1] >> 32 <= w >> 32, "step {step}: run not sorted at slot {i}");
            }
        }
    }

    fn assert_live(t: &FlowTable, live: &[(u32, FlowKey, FlowKey)], step: usize) {
        assert_sorted_runs(t, step);
        assert_eq!(t.len(), live.len());
        for &(i, a, b) in live {
            assert_eq!(t.lookup(&a), Some((i, Dir::In)), "step {step}");
            if t.get(i).has_out_key() {
                assert_eq!(t.lookup(&b), Some((i, Dir::Out)), "step {step}");
            }
        }
    }

    #[test]
    fn a_run_reaching_the_index_end_refuses_the_insert_and_changes_nothing() {
        let mut t = FlowTable::new(64);
        let a = conn(1, Forward::Nat);
        let ia = t.insert(a, 0).unwrap();
        // One run over the whole index but its last slot, in a valid shape: slot i < n holds
        // the smallest tag whose home is i (so each sits at its home), the tail the greatest.
        let (n, len) = (t.n, t.index.len());
        t.index.fill(EMPTY);
        for i in 0..len - 1 {
            let tag = if i < n { ((i as u64) << 32).div_ceil(n as u64) as u32 } else { u32::MAX - 1 };
            t.index[i] = (tag as u64) << 32 | (ia << 1) as u64;
        }
        assert_sorted_runs(&t, 0);
        let before = (t.index.clone(), t.len(), t.interned(), t.version());
        // The table's seed is random: the test connection is the first whose two keys land
        // apart, before the last slot (one of the first few, whatever the seed).
        let apart = |t: &FlowTable, b: &NewConn| {
            let pin = t.rh_pos((t.hash(&b.key_in()) >> 32) as u32);
            let pout = t.rh_pos((t.hash(&b.key_out()) >> 32) as u32);
            pin < n - 1 && pin != pout
        };
        let b = (2..=u8::MAX).map(|c| conn(c, Forward::Nat)).find(|b| apart(&t, b)).expect("keys apart");
        assert!(t.insert(b, 0).is_none(), "refused: the run would reach the index end");
        assert_eq!((t.index.clone(), t.len(), t.interned(), t.version()), before, "nothing changed");
        // A connection whose request key finds a free slot and whose reply key then finds
        // none: the request key's word is taken back, nothing else moves.
        let pin = t.rh_pos((t.hash(&b.key_in()) >> 32) as u32);
        t.index[pin] = EMPTY;
        assert_sorted_runs(&t, 1);
        let before = (t.index.clone(), t.len(), t.interned(), t.version());
        assert!(t.insert(b, 0).is_none(), "refused: no room for the reply key");
        assert_eq!((t.index.clone(), t.len(), t.interned(), t.version()), before, "the first word taken back");
        // A word whose place is the last slot itself (a tag above the whole run) is refused
        // with nothing moved (this once overwrote the slot before the last).
        let before = t.index.clone();
        assert!(!t.place(len - 1, (u32::MAX as u64) << 32 | 2));
        assert_eq!(t.index, before, "nothing changed");
    }

    #[test]
    fn late_keys_walk_no_further_than_early_ones() {
        // Sorted runs: a key's walk depends on the tags around its home, not on when it went
        // in. Half the keys first, then the other half (FTP data connections come after their
        // control connections): both halves walk as far on average.
        let mut t = FlowTable::new(20_000);
        let keys: Vec<NewConn> = (0..16_000u32)
            .map(|c| {
                let mut x = new_conn(
                    6,
                    Forward::Nat,
                    v4_to_addr([100, 64, (c >> 8) as u8, c as u8]),
                    1024 + (c % 50_000) as u16,
                    v4_to_addr([10, 0, 1, 100]),
                    80,
                    v4_to_addr([10, 0, 2, 2]),
                    80,
                );
                x.expires = 1;
                x
            })
            .collect();
        for k in &keys {
            t.insert(*k, 0).unwrap();
        }
        assert_sorted_runs(&t, 0);
        let walk = |t: &FlowTable, k: &FlowKey| {
            let h = t.hash(k);
            t.probe(k, h).ok().unwrap() - t.home((h >> 32) as u32)
        };
        let avg = |ks: &[NewConn]| ks.iter().map(|k| walk(&t, &k.key_in()) as f64).sum::<f64>() / ks.len() as f64;
        let (early, late) = (avg(&keys[..8000]), avg(&keys[8000..]));
        assert!(late < early * 1.15 + 0.05, "late keys walk {late:.3} slots, early ones {early:.3}");
    }

    #[test]
    fn random_inserts_and_removes_keep_every_key_findable() {
        // A crowded index (small table, two keys per connection): probe
        // sequences overlap and both keys of one connection often stop at
        // the same empty position; backward-shift deletion moves words.
        let mut t = FlowTable::new(64);
        let mut live: Vec<(u32, FlowKey, FlowKey)> = Vec::new();
        let mut x: u64 = 0x1234_5678;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000 {
            let r = rnd();
            if live.len() < 60 && (r & 3 != 0 || live.is_empty()) {
                let c = new_conn(
                    6,
                    if r & 16 == 0 { Forward::Nat } else { Forward::Dr },
                    v4_to_addr([10, 0, (r >> 8) as u8 & 3, (r >> 16) as u8]),
                    (r >> 24) as u16 & 7,
                    v4_to_addr([10, 0, 1, 100]),
                    80,
                    v4_to_addr([10, 0, 2, (r >> 32) as u8 & 3]),
                    80,
                );
                let (kin, kout) = (c.key_in(), c.key_out());
                let two = c.fwd.two_way();
                let dup = live.iter().any(|&(i, a, b)| a == kin || (t.get(i).has_out_key() && b == kout && two));
                match t.insert(c, 0) {
                    Some(i) => {
                        assert!(!dup, "step {step}: a duplicate key went in");
                        live.push((i, kin, if two { kout } else { kin }));
                    }
                    None => assert!(dup, "step {step}: refused without a duplicate"),
                }
            } else {
                let (i, _, _) = live.swap_remove((r >> 40) as usize % live.len());
                t.remove(i);
            }
            assert_live(&t, &live, step);
        }
    }

    #[test]
    fn lookup_for_insert_and_hints_keep_every_key_findable() {
        // As above, but inserts follow a `lookup_for_insert` miss (sometimes of another key,
        // sometimes with a connection inserted or removed in between: the noted walk must
        // not be used then) and carry hints: right ones, stale ones and garbage.
        let mut t = FlowTable::new(64);
        let mut live: Vec<(u32, FlowKey, FlowKey)> = Vec::new();
        let mut last_ids = NO_HINT;
        let mut x: u64 = 0x9e37_79b9;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mk = |r: u64| {
            let mut c = new_conn(
                6,
                if r & 16 == 0 { Forward::Nat } else { Forward::Dr },
                v4_to_addr([10, 0, (r >> 8) as u8 & 3, (r >> 16) as u8]),
                (r >> 24) as u16 & 7,
                v4_to_addr([10, 0, 1, 100 + (r >> 44) as u8 % 2]),
                80,
                v4_to_addr([10, 0, 2, (r >> 32) as u8 & 3]),
                80,
            );
            c.nh_out = v4_to_addr([10, 0, 9, (r >> 48) as u8 % 3]);
            c
        };
        for step in 0..20_000 {
            let r = rnd();
            if live.len() < 60 && (r & 3 != 0 || live.is_empty()) {
                let mut c = mk(r);
                c.hint = match (r >> 56) % 3 {
                    0 => last_ids,
                    1 => NO_HINT,
                    _ => [(r >> 8) as u16 % 5, (r >> 12) as u16 % 5, (r >> 20) as u16 % 5, (r >> 28) as u16 % 5],
                };
                let (kin, kout) = (c.key_in(), c.key_out());
                match (r >> 52) % 4 {
                    // The usual order: a miss, then the insert.
                    0 | 1 => {
                        let found = t.lookup_for_insert(&kin, t.hash(&kin));
                        assert_eq!(found, t.lookup(&kin), "step {step}");
                    }
                    // A miss noted, then something else changes the index.
                    2 if !live.is_empty() => {
                        let _ = t.lookup_for_insert(&kin, t.hash(&kin));
                        let (i, _, _) = live.swap_remove((r >> 40) as usize % live.len());
                        t.remove(i);
                    }
                    // Another key's miss noted.
                    _ => {
                        let other = mk(r.rotate_left(17)).key_in();
                        let _ = t.lookup_for_insert(&other, t.hash(&other));
                    }
                }
                let two = c.fwd.two_way();
                let dup = live.iter().any(|&(i, a, b)| a == kin || (t.get(i).has_out_key() && b == kout && two));
                match t.insert(c, 0) {
                    Some(i) => {
                        assert!(!dup, "step {step}: a duplicate key went in");
                        live.push((i, kin, if two { kout } else { kin }));
                        let e = t.get(i);
                        assert_eq!(t.vip_of(e), (c.vip, c.vport), "step {step}");
                        assert_eq!(t.rs_of(e), (c.rs, c.rport), "step {step}");
                        assert_eq!(t.hop(e.hop_in).nh, c.nh_in, "step {step}");
                        if two {
                            assert_eq!(t.hop(e.hop_out).nh, c.nh_out, "step {step}");
                        }
                        last_ids = [e.vipi, e.rsi, e.hop_in, e.hop_out];
                    }
                    None => assert!(dup, "step {step}: refused without a duplicate"),
                }
            } else if !live.is_empty() {
                let (i, _, _) = live.swap_remove((r >> 40) as usize % live.len());
                t.remove(i);
            }
            assert_live(&t, &live, step);
        }
        // Every reference went back with its connection.
        for (i, _, _) in live.drain(..) {
            t.remove(i);
        }
        for id in 0..t.interned().0 as u16 {
            assert_eq!(t.vips.refs(id), 0);
        }
        for id in 0..t.interned().1 as u16 {
            assert_eq!(t.reals.refs(id), 0);
        }
        for id in 1..t.interned().3 as u16 {
            assert_eq!(t.hops.refs(id), 0, "hop {id}");
        }
    }

    #[test]
    fn remove_without_lookups_keeps_the_index_exact() {
        // Random inserts (some after a noted miss: `note_miss`, the burst's known-miss path)
        // and removals (of live, free and out-of-range slots) on a crowded table, checked
        // after every step against a model: each live key is found at its slot and
        // direction, the index holds exactly the live keys' words, removed keys are gone,
        // and a key `still_missing` calls absent is absent.
        let mut t = FlowTable::new(64);
        let mut live: Vec<(u32, FlowKey, FlowKey)> = Vec::new();
        let mut gone: Vec<FlowKey> = Vec::new();
        let mut x: u64 = 0x51_7cc1_b727;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mk = |r: u64| {
            new_conn(
                if r & 32 == 0 { 6 } else { 17 },
                match (r >> 4) % 3 {
                    0 => Forward::Nat,
                    1 => Forward::Dr,
                    _ => Forward::Tunnel,
                },
                v4_to_addr([10, 0, (r >> 8) as u8 & 3, (r >> 16) as u8]),
                (r >> 24) as u16 & 7,
                v4_to_addr([10, 0, 1, 100]),
                80,
                v4_to_addr([10, 0, 2, (r >> 32) as u8 & 3]),
                80,
            )
        };
        // Keys absent at the last mark (their hashes) and the version of that mark.
        let mut mark = (t.mark_misses(), Vec::<(FlowKey, u64, u64)>::new());
        let (mut kept, mut lost) = (0usize, 0usize);
        for step in 0..30_000 {
            let r = rnd();
            let version = t.version();
            match (r >> 56) % 8 {
                // A new burst: mark, and note a few keys absent now.
                0 => {
                    mark = (t.mark_misses(), Vec::new());
                    for _ in 0..4 {
                        let seed = rnd();
                        let key = mk(seed).key_in();
                        if t.lookup(&key).is_none() {
                            mark.1.push((key, t.hash(&key), seed));
                        }
                    }
                }
                // A free slot, an out-of-range one: left alone.
                1 => {
                    let free = (0..t.slots() as u32).find(|&i| !t.get(i).live);
                    for i in free.into_iter().chain([t.slots() as u32, t.slots() as u32 + 7, u32::MAX]) {
                        t.remove(i);
                        assert_eq!((t.len(), t.version()), (live.len(), version), "step {step}: remove({i})");
                    }
                }
                2 | 3 if !live.is_empty() => {
                    let (i, a, b) = live.swap_remove((r >> 40) as usize % live.len());
                    t.remove(i);
                    assert!(!t.get(i).live, "step {step}");
                    gone.push(a);
                    gone.push(b);
                }
                _ if live.len() < 60 => {
                    // Half the time one of the keys noted absent at the mark goes in.
                    let c = match mark.1.get((r >> 8) as usize % 8) {
                        Some(&(_, _, seed)) => mk(seed),
                        None => mk(r),
                    };
                    let (kin, kout) = (c.key_in(), c.key_out());
                    let two = c.fwd.two_way();
                    let taken =
                        |k: &FlowKey| live.iter().any(|&(i, a, b)| a == *k || (t.get(i).has_out_key() && b == *k));
                    let dup = taken(&kin) || (two && taken(&kout));
                    if !taken(&kin) && r & 64 != 0 {
                        t.note_miss(&kin, t.hash(&kin));
                    }
                    match t.insert(c, 0) {
                        Some(i) => {
                            assert!(!dup, "step {step}: a duplicate key went in");
                            live.push((i, kin, if two { kout } else { kin }));
                            gone.retain(|k| *k != kin && *k != kout);
                        }
                        None => assert!(dup, "step {step}: refused without a duplicate"),
                    }
                }
                _ => {}
            }
            assert_live(&t, &live, step);
            let words = live.iter().map(|&(i, _, _)| if t.get(i).has_out_key() { 2 } else { 1 }).sum::<usize>();
            assert_eq!(t.index.iter().filter(|&&w| w != EMPTY).count(), words, "step {step}: stray words");
            for w in t.index.iter().filter(|&&w| w != EMPTY) {
                assert!(t.get((*w as u32) >> 1).live, "step {step}: a word of a free slot");
            }
            gone.truncate(64);
            for k in &gone {
                assert_eq!(t.lookup(k), None, "step {step}: a removed key is found");
            }
            for (k, h, _) in &mark.1 {
                if t.still_missing(*h, mark.0) {
                    assert_eq!(t.lookup(k), None, "step {step}: still_missing of a present key");
                    if t.version() != mark.0 {
                        kept += 1;
                    }
                } else if t.lookup(k).is_none() {
                    // Absent, but its filter bit was set by another key's insert.
                    lost += 1;
                }
            }
        }
        // The filter keeps most misses across inserts (else it would be useless, if safe).
        assert!(kept > 10 * lost, "misses kept {kept}, lost {lost}");
    }

    #[test]
    fn a_full_interned_kind_gives_back_what_was_taken() {
        // Three ids per kind: the first connection's two next hops and NO_HOP fill the hops.
        let mut t = FlowTable::with_intern_limit(64, 3);
        let a = t.insert(conn(1, Forward::Nat), 0).unwrap();
        let (vipi, rsi, hop_in) = (t.get(a).vipi, t.get(a).rsi, t.get(a).hop_in);
        assert_eq!((t.vips.refs(vipi), t.reals.refs(rsi)), (1, 1));
        // Same VIP and real server, another client-side next hop: no hop id left.
        let mut n = conn(2, Forward::Nat);
        n.nh_out = v4_to_addr([10, 0, 1, 253]);
        assert!(t.insert(n, 0).is_none());
        assert_eq!((t.vips.refs(vipi), t.reals.refs(rsi), t.hops.refs(hop_in)), (1, 1, 1), "released on failure");
        // Another real server and its own next hop towards it: fails at the first hop.
        let mut m = conn(3, Forward::Nat);
        m.rs = v4_to_addr([10, 0, 2, 3]);
        m.nh_in = v4_to_addr([10, 0, 2, 3]);
        m.nh_out = n.nh_out;
        assert!(t.insert(m, 0).is_none());
        assert_eq!(t.vips.refs(vipi), 1);
        assert_eq!(t.reals.refs(rsi), 1);
        let new_rs = t.reals.map.get(&(m.rs, m.rport)).copied().expect("interned, kept for reuse");
        assert_eq!(t.reals.refs(new_rs), 0, "released on failure");
        t.remove(a);
        assert_eq!((t.vips.refs(vipi), t.reals.refs(rsi)), (0, 0));
        assert!(t.insert(n, 0).is_some(), "the hop id is free again");
    }
}
