//! The per-worker flow table: a slab of connections plus an
//! open-addressing index (linear probing over 8-byte `tag | slot | dir`
//! words, see [`FlowTable`]) from the 5-tuple as received to (slab index,
//! direction). A NAT connection has two keys (client side and real-server
//! side); a DR connection has one. Sized up front: the index and the slab
//! never grow past the configured capacity, so there are no rehash spikes.

use crate::flow::tcpstate::TcpState;
use crate::wire::parse::Addr;
use ferrovs_cfg::Forward;

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

/// One tracked connection: the fields the established fast path reads and
/// writes, in two cache lines (128 bytes, aligned). Everything else lives
/// in [`ConnCold`], a parallel array touched only on the slow paths.
#[repr(align(64))]
pub struct Conn {
    pub live: bool,
    pub gen: u32,
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
    /// Snapshot generation the indices above refer to.
    pub snap_gen: u32,
    pub expires: u64,
    /// Precomputed checksum deltas (RFC 1624) for each direction.
    pub l3_in: u32,
    pub l4_in: u32,
    pub l3_out: u32,
    pub l4_out: u32,
    /// Egress interface towards the real server / the client (next hops
    /// in [`ConnCold`]).
    pub if_in: u8,
    pub if_out: u8,
    /// Cached next-hop MACs, valid while `mac_gen` equals the worker's
    /// neighbour generation.
    pub mac_in: [u8; 6],
    pub mac_out: [u8; 6],
    pub mac_gen: u32,
    /// Packets per direction, low 32 bits (`ferrovsadm -L -c`); a wrap
    /// carries into [`ConnCold`] (see [`FlowTable::carry_pkt`]). Byte and
    /// per-service counts are kept by the worker (`Worker::flush_svc_counters`).
    pub pkts_in: u32,
    pub pkts_out: u32,
    /// Full NAT: the local port and the local address (an index into the
    /// table's interned local addresses, [`FlowTable::intern_laddr`]) the
    /// connection uses towards the real server. 0 otherwise.
    pub lport: u16,
    pub laddr: u16,
}

/// The rarely used part of a connection, same slot number as its [`Conn`].
pub struct ConnCold {
    /// Next hop towards the real server / the client.
    pub nh_in: Addr,
    pub nh_out: Addr,
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
    /// High 32 bits of the packet counts.
    pub pkts_in_hi: u32,
    pub pkts_out_hi: u32,
    /// Cluster: when the connection was last sent to the peers (ns).
    pub synced_at: u64,
}

impl Default for ConnCold {
    fn default() -> Self {
        ConnCold {
            nh_in: 0,
            nh_out: 0,
            parent: NONE,
            parent_gen: 0,
            children: 0,
            alg: None,
            proxy: None,
            pp: None,
            pkts_in_hi: 0,
            pkts_out_hi: 0,
            synced_at: 0,
        }
    }
}

impl Conn {
    pub fn key_in(&self) -> FlowKey {
        FlowKey { src: self.client, dst: self.vip, sport: self.cport, dport: self.vport, proto: self.proto }
    }
    pub fn key_out(&self) -> FlowKey {
        FlowKey { src: self.rs, dst: self.client, sport: self.rport, dport: self.cport, proto: self.proto }
    }
    pub fn has_out_key(&self) -> bool {
        self.fwd.two_way()
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
/// Layout (chosen for the established fast path, see `ferrovs bench`):
/// - `slab`: the connections, indexed by a `u32` slot number.
/// - `index`: an open-addressing (linear probing) array of `u64` words,
///   `hash tag (32 bits) | slot << 1 | dir`. The key itself is not stored:
///   a tag match is confirmed against the connection in the slab, which the
///   packet needs next anyway. 8 bytes per key instead of a 64-byte
///   (FlowKey, value) bucket, so 2 keys per connection cost 32 bytes at the
///   reserved load (at most 1/2), and a probe is one cache line.
/// - Deletion is backward-shift (no tombstones, probe lengths stay short).
/// - Both arrays are reserved at start and advised for transparent huge
///   pages: with millions of flows every lookup is a random access, and
///   4 KiB pages make each one a TLB miss (very costly under a hypervisor).
/// - The hash is keyed with a per-table random seed (no flooding a bucket
///   with chosen tuples). [`FlowTable::hash`] + [`FlowTable::prefetch`] let
///   the worker hash a whole burst and prefetch its index lines first.
pub struct FlowTable {
    index: Vec<u64>,
    mask: usize,
    /// 64 - log2(index slots): the home slot is the tag's top bits.
    shift: u32,
    seed: u64,
    slab: Vec<Conn>,
    /// The cold halves, indexed like `slab`.
    cold: Vec<ConnCold>,
    free: Vec<u32>,
    cap: usize,
    live: usize,
    /// Bumped by every insert and remove: index words looked up at one
    /// version stay exact while it is unchanged.
    version: u64,
    /// Full NAT local addresses seen so far, interned so that a connection
    /// names its own in two bytes (`Conn::laddr`) and stays in two cache
    /// lines. Only grows (at most `u16::MAX` distinct addresses; a config
    /// holds at most 256 per service).
    laddrs: Vec<Addr>,
}

const EMPTY: u64 = u64::MAX;

#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    (r as u64) ^ ((r >> 64) as u64)
}

/// Ask for transparent huge pages on the 2 MiB-aligned part of a fresh
/// (not yet touched) allocation. Best effort.
fn advise_huge<T>(v: &Vec<T>) {
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

#[inline(always)]
fn prefetch_ptr<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl FlowTable {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(16);
        // Two keys per connection at a load of at most 1/2.
        let slots = (cap * 4).next_power_of_two();
        let mut index = Vec::with_capacity(slots);
        advise_huge(&index);
        index.resize(slots, EMPTY);
        let slab = Vec::with_capacity(cap);
        advise_huge(&slab);
        let cold = Vec::with_capacity(cap);
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(&index as *const _ as usize);
            h.finish() | 1
        };
        FlowTable {
            index,
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            seed,
            slab,
            cold,
            free: Vec::with_capacity(cap),
            cap,
            live: 0,
            version: 0,
            laddrs: Vec::new(),
        }
    }

    /// The index of local address `a` for `Conn::laddr` (added on first use);
    /// `None` if the table of local addresses is full.
    pub fn intern_laddr(&mut self, a: Addr) -> Option<u16> {
        if let Some(i) = self.laddrs.iter().position(|&x| x == a) {
            return Some(i as u16);
        }
        if self.laddrs.len() >= u16::MAX as usize {
            return None;
        }
        self.laddrs.push(a);
        Some((self.laddrs.len() - 1) as u16)
    }

    /// The local address of full-NAT connection `c`.
    #[inline(always)]
    pub fn laddr_of(&self, c: &Conn) -> Addr {
        self.laddrs.get(c.laddr as usize).copied().unwrap_or(0)
    }

    /// The reply-direction key of `c` as it arrives: from the real server to
    /// the client (NAT) or to the local address and port (full NAT).
    #[inline(always)]
    pub fn key_out(&self, c: &Conn) -> FlowKey {
        if c.fwd == Forward::Fnat {
            FlowKey { src: c.rs, dst: self.laddr_of(c), sport: c.rport, dport: c.lport, proto: c.proto }
        } else {
            c.key_out()
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

    #[inline(always)]
    fn home(&self, tag: u32) -> usize {
        ((tag as u64) << 32 >> self.shift) as usize & self.mask
    }

    /// Prefetch the index line of a hash (first stage of a burst).
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        let i = self.home((h >> 32) as u32);
        prefetch_ptr(self.index.as_ptr().wrapping_add(i));
    }

    /// Prefetch both cache lines of connection `i`.
    #[inline(always)]
    pub fn prefetch_conn(&self, i: u32) {
        const _: () = assert!(std::mem::size_of::<Conn>() == 128, "hot Conn is two cache lines");
        let p = self.slab.as_ptr().wrapping_add(i as usize) as *const u8;
        prefetch_ptr(p);
        prefetch_ptr(p.wrapping_add(64));
    }

    #[inline(always)]
    fn matches(&self, v: u32, k: &FlowKey) -> bool {
        // Index words always refer to live slab entries.
        let c = &self.slab[(v >> 1) as usize];
        if v & 1 == 0 {
            c.client == k.src && c.vip == k.dst && c.cport == k.sport && c.vport == k.dport && c.proto == k.proto
        } else {
            c.rs == k.src
                && c.rport == k.sport
                && c.proto == k.proto
                && if c.fwd == Forward::Fnat {
                    c.lport == k.dport && self.laddr_of(c) == k.dst
                } else {
                    c.client == k.dst && c.cport == k.dport
                }
        }
    }

    /// Index position of key `k` (hash `h`).
    #[inline(always)]
    fn find(&self, k: &FlowKey, h: u64) -> Option<usize> {
        let tag = (h >> 32) as u32;
        let mut i = self.home(tag);
        loop {
            let w = self.index[i];
            if w == EMPTY {
                return None;
            }
            if (w >> 32) as u32 == tag && self.matches(w as u32, k) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
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
    /// The cold half of connection `i`.
    #[inline]
    pub fn cold(&self, i: u32) -> &ConnCold {
        &self.cold[i as usize]
    }
    #[inline]
    pub fn cold_mut(&mut self, i: u32) -> &mut ConnCold {
        &mut self.cold[i as usize]
    }
    /// Incremental expiry scan: look at up to `*budget` slots from `*pos`
    /// (wrapping), consuming budget; returns the first live connection that
    /// expired at `now`, with `*pos` just past it.
    #[inline]
    pub fn scan_expired(&self, pos: &mut usize, budget: &mut usize, now: u64) -> Option<u32> {
        let n = self.slab.len();
        while *budget > 0 {
            if *pos >= n {
                *pos = 0;
            }
            let end = n.min(*pos + *budget);
            let start = *pos;
            for (k, c) in self.slab[start..end].iter().enumerate() {
                if c.expires <= now && c.live {
                    *budget -= k + 1;
                    *pos = start + k + 1;
                    return Some((start + k) as u32);
                }
            }
            *budget -= end - start;
            *pos = end;
        }
        None
    }
    /// Both halves of connection `i`.
    #[inline(always)]
    pub fn both_mut(&mut self, i: u32) -> (&mut Conn, &mut ConnCold) {
        (&mut self.slab[i as usize], &mut self.cold[i as usize])
    }
    /// The low half of a packet count of connection `i` wrapped: carry.
    #[cold]
    pub fn carry_pkt(&mut self, i: u32, inbound: bool) {
        let k = &mut self.cold[i as usize];
        if inbound {
            k.pkts_in_hi += 1;
        } else {
            k.pkts_out_hi += 1;
        }
    }
    /// Packets (in, out) of connection `i`.
    pub fn pkts(&self, i: u32) -> (u64, u64) {
        let (c, k) = (&self.slab[i as usize], &self.cold[i as usize]);
        ((k.pkts_in_hi as u64) << 32 | c.pkts_in as u64, (k.pkts_out_hi as u64) << 32 | c.pkts_out as u64)
    }

    /// Remove index position `pos` (backward-shift deletion).
    #[inline(always)]
    fn index_remove(&mut self, pos: usize) {
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & self.mask;
            let w = self.index[j];
            if w == EMPTY {
                break;
            }
            let home = self.home((w >> 32) as u32);
            // The entry at j may move into the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.index[hole] = w;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }

    /// Where key `k` (hash `h`) would go: the first empty index position
    /// of its probe sequence, or `None` if a live connection holds it. One
    /// probe does both (no tombstones: a key is never past an empty slot).
    #[inline(always)]
    fn vacancy(&self, k: &FlowKey, h: u64) -> Option<usize> {
        let tag = (h >> 32) as u32;
        let mut i = self.home(tag);
        loop {
            let w = self.index[i];
            if w == EMPTY {
                return Some(i);
            }
            if (w >> 32) as u32 == tag && self.matches(w as u32, k) {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Insert a connection; fails when full or when one of its keys is
    /// already taken (a 5-tuple collision with a live connection).
    ///
    /// (Inlined into its one caller: the connection is built in place.)
    #[inline(always)]
    pub fn insert(&mut self, mut c: Conn) -> Result<u32, Conn> {
        if self.live >= self.cap {
            return Err(c);
        }
        let hin = self.hash(&c.key_in());
        let Some(pin) = self.vacancy(&c.key_in(), hin) else { return Err(c) };
        let out = if c.has_out_key() {
            let kout = self.key_out(&c);
            let hout = self.hash(&kout);
            let Some(pout) = self.vacancy(&kout, hout) else { return Err(c) };
            Some((pout, hout))
        } else {
            None
        };
        c.live = true;
        self.version += 1;
        let idx = match self.free.pop() {
            Some(i) => {
                c.gen = self.slab[i as usize].gen.wrapping_add(1);
                self.slab[i as usize] = c;
                // `remove` already dropped the boxes: reset the plain fields.
                let k = &mut self.cold[i as usize];
                debug_assert!(k.alg.is_none() && k.proxy.is_none() && k.pp.is_none());
                k.nh_in = 0;
                k.nh_out = 0;
                k.parent = NONE;
                k.parent_gen = 0;
                k.children = 0;
                k.pkts_in_hi = 0;
                k.pkts_out_hi = 0;
                k.synced_at = 0;
                i
            }
            None => {
                c.gen = 1;
                self.slab.push(c);
                self.cold.push(ConnCold::default());
                (self.slab.len() - 1) as u32
            }
        };
        self.index[pin] = (hin >> 32) << 32 | (idx << 1) as u64;
        if let Some((mut pout, hout)) = out {
            // Both keys may have stopped at the same empty position: the
            // reply key then takes the next empty one after it.
            while self.index[pout] != EMPTY {
                pout = (pout + 1) & self.mask;
            }
            self.index[pout] = (hout >> 32) << 32 | (idx << 1 | 1) as u64;
        }
        self.live += 1;
        Ok(idx)
    }

    /// Index position of the word `w` (tag of hash `h`, slot and direction)
    /// of a live connection.
    #[inline(always)]
    fn find_word(&self, h: u64, v: u32) -> Option<usize> {
        let w = (h >> 32) << 32 | v as u64;
        let mut i = self.home((h >> 32) as u32);
        loop {
            let x = self.index[i];
            if x == w {
                return Some(i);
            }
            if x == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Remove connection `i` (drops its FTP session).
    pub fn remove(&mut self, i: u32) {
        if !self.slab[i as usize].live {
            return;
        }
        self.cold[i as usize].alg = None;
        self.cold[i as usize].proxy = None;
        self.cold[i as usize].pp = None;
        self.version += 1;
        let c = &self.slab[i as usize];
        // Each key's index word is (its hash's tag, slot, direction): found
        // by comparing words, without reading the connection back.
        let hin = self.hash(&c.key_in());
        let hout = if c.has_out_key() { Some(self.hash(&self.key_out(c))) } else { None };
        if let Some(p) = self.find_word(hin, i << 1) {
            self.index_remove(p);
        }
        if let Some(h) = hout {
            if let Some(p) = self.find_word(h, i << 1 | 1) {
                self.index_remove(p);
            }
        }
        self.slab[i as usize].live = false;
        self.free.push(i);
        self.live -= 1;
    }

    /// Bytes reserved by the table (slab, index, free list).
    pub fn memory_bytes(&self) -> usize {
        self.index.capacity() * 8
            + self.slab.capacity() * std::mem::size_of::<Conn>()
            + self.cold.capacity() * std::mem::size_of::<ConnCold>()
            + self.free.capacity() * 4
    }

    /// Size of one connection slot (hot and cold halves).
    pub fn conn_slot_bytes() -> usize {
        std::mem::size_of::<Conn>() + std::mem::size_of::<ConnCold>()
    }

    /// Approximate bytes of memory per connection slot (slab entry plus
    /// its index words).
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
        self.cold.clear();
        self.free.clear();
        self.live = 0;
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
) -> Conn {
    Conn {
        live: false,
        gen: 0,
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
        l3_out: 0,
        l4_out: 0,
        if_in: 0,
        if_out: 0,
        mac_in: [0; 6],
        mac_out: [0; 6],
        mac_gen: u32::MAX,
        pkts_in: 0,
        pkts_out: 0,
        lport: 0,
        laddr: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::v4_to_addr;

    fn conn(c: u8, fwd: Forward) -> Conn {
        new_conn(
            6,
            fwd,
            v4_to_addr([10, 0, 1, c]),
            1000,
            v4_to_addr([10, 0, 1, 100]),
            80,
            v4_to_addr([10, 0, 2, 2]),
            80,
        )
    }

    #[test]
    fn insert_lookup_remove_both_keys() {
        let mut t = FlowTable::new(16);
        let i = t.insert(conn(2, Forward::Nat)).ok().unwrap();
        let c = t.get(i);
        assert_eq!(t.lookup(&c.key_in()), Some((i, Dir::In)));
        assert_eq!(t.lookup(&c.key_out()), Some((i, Dir::Out)));
        let (kin, kout) = (c.key_in(), c.key_out());
        t.remove(i);
        assert_eq!(t.lookup(&kin), None);
        assert_eq!(t.lookup(&kout), None);
        assert!(t.is_empty());
        let j = t.insert(conn(3, Forward::Dr)).ok().unwrap();
        assert_eq!(j, i, "slot reused");
        assert_eq!(t.get(j).gen, 2, "generation bumped");
        assert_eq!(t.lookup(&t.get(j).key_out()), None, "DR has no reply key");
    }

    #[test]
    fn fnat_reply_key_is_the_local_address_and_port() {
        let mut t = FlowTable::new(16);
        let la = v4_to_addr([10, 0, 2, 200]);
        let mut c = conn(2, Forward::Fnat);
        c.laddr = t.intern_laddr(la).unwrap();
        c.lport = 5000;
        let i = t.insert(c).ok().unwrap();
        let kout = FlowKey { src: v4_to_addr([10, 0, 2, 2]), dst: la, sport: 80, dport: 5000, proto: 6 };
        assert_eq!(t.key_out(t.get(i)), kout);
        assert_eq!(t.lookup(&kout), Some((i, Dir::Out)));
        assert_eq!(t.lookup(&t.get(i).key_in()), Some((i, Dir::In)));
        assert_eq!(t.lookup(&t.get(i).key_out()), None, "the NAT reply key (to the client) is not one");
        // Same real server, same local address, another local port: another connection.
        let mut d = conn(3, Forward::Fnat);
        d.laddr = t.intern_laddr(la).unwrap();
        d.lport = 5001;
        assert_eq!(d.laddr, 0, "interned once");
        assert!(t.insert(d).is_ok());
        // The same local address and port towards the same real server: a collision.
        let mut e = conn(4, Forward::Fnat);
        e.lport = 5000;
        assert!(t.insert(e).is_err());
        t.remove(i);
        assert_eq!(t.lookup(&kout), None);
    }

    #[test]
    fn full_and_duplicate() {
        let mut t = FlowTable::new(16);
        for c in 0..16 {
            assert!(t.insert(conn(c, Forward::Nat)).is_ok());
        }
        assert!(t.insert(conn(200, Forward::Nat)).is_err(), "full");
        let mut t = FlowTable::new(16);
        assert!(t.insert(conn(1, Forward::Nat)).is_ok());
        assert!(t.insert(conn(1, Forward::Nat)).is_err(), "same tuple");
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
                let dup =
                    live.iter().any(|&(i, a, b)| a == kin || (t.get(i).has_out_key() && b == kout && c.has_out_key()));
                let two = c.has_out_key();
                match t.insert(c) {
                    Ok(i) => {
                        assert!(!dup, "step {step}: a duplicate key went in");
                        live.push((i, kin, if two { kout } else { kin }));
                    }
                    Err(_) => assert!(dup, "step {step}: refused without a duplicate"),
                }
            } else {
                let (i, _, _) = live.swap_remove((r >> 40) as usize % live.len());
                t.remove(i);
            }
            assert_eq!(t.len(), live.len());
            for &(i, a, b) in &live {
                assert_eq!(t.lookup(&a), Some((i, Dir::In)), "step {step}");
                if t.get(i).has_out_key() {
                    assert_eq!(t.lookup(&b), Some((i, Dir::Out)), "step {step}");
                }
            }
        }
    }
}
