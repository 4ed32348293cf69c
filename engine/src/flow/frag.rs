//! IP fragments of tracked connections, forwarded without reassembly (IPv4 and IPv6).
//!
//! IPVS forwards fragments after the kernel's defragmentation (nf_defrag) reassembled them;
//! DPVS lists fragments as a TODO. A balancer needs neither reassembly nor its memory: only the
//! first fragment carries the ports, so it alone decides (or creates) the connection and is
//! rewritten like any packet (the incremental L4 checksum update stays right for the whole
//! datagram: only pseudo-header and port words change). Later fragments are matched by
//! (source, destination, protocol, IP ID / fragment ID) in a bounded per-worker table with a
//! short timeout and get the same IP-level rewrite. Fragments that arrive before the first one
//! are held in a bounded buffer and released when it comes, or dropped (counted) when it does
//! not. Overlapping fragments (RFC 5722 for IPv6, RFC 1858 "tiny fragment" and overlap
//! attacks for IPv4) poison their datagram: it is dropped, counted.
//!
//! This module holds the pure parts: the fragment parser and the table. The worker drives
//! them (`Worker::fragment`).

use crate::wire::parse::{addr_is_v4, v4_to_addr, v6_to_addr, Addr, ParseError, Parsed, PROTO_TCP, PROTO_UDP};
use crate::wire::view::{
    Ipv4, Ipv6, Ipv6Frag, Tcp, Udp, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV6_FRAGMENT, TCP_HEADER_LEN,
};
use hashbrown::HashMap;

/// How long a datagram's fragments are matched after its first fragment (ns). Linux keeps
/// fragments 30 s for reassembly; a balancer forwarding on the fly needs only the spread of
/// one datagram's fragments in flight.
pub const FRAG_TIMEOUT: u64 = 5_000_000_000;
/// Datagrams tracked per worker.
pub const MAX_FRAG_ENTRIES: usize = 4096;
/// Datagrams tracked per worker for one source ([`source_of`]).
pub const MAX_FRAG_PER_SOURCE: usize = MAX_FRAG_ENTRIES / 16;
/// Fragments held per worker while waiting for their first fragment.
pub const MAX_FRAG_HELD: usize = 64;
/// How long a fragment waits for its first fragment (ns).
pub const FRAG_HOLD_NS: u64 = 1_000_000_000;
/// Byte ranges remembered per datagram for overlap detection, adjacent ones merged (so
/// only gaps of out-of-order fragments take one each); a fragment that would need one more
/// is still forwarded, its range unchecked.
const RANGES: usize = 12;

/// One fragment's IP-level facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub l3: usize,
    /// First byte of the fragment's data (after the IPv4 header / the IPv6 fragment header).
    pub data: usize,
    /// End of the IP packet in the frame.
    pub end: usize,
    pub v6: bool,
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub id: u32,
    /// Offset of `data` in the original datagram, in bytes.
    pub offset: u32,
    pub more: bool,
}

impl Fragment {
    pub fn key(&self) -> FragKey {
        FragKey { src: self.src, dst: self.dst, proto: self.proto, id: self.id }
    }

    /// The byte range of the datagram this fragment carries.
    pub fn range(&self) -> (u32, u32) {
        (self.offset, self.offset + (self.end - self.data) as u32)
    }

    /// The first fragment as an ordinary packet: ports and flags from its transport header,
    /// which must lie entirely inside it (otherwise `Err(FragTiny)`-worthy: `None`).
    pub fn first(&self, frame: &[u8]) -> Option<Parsed> {
        if self.offset != 0 {
            return None;
        }
        let l4 = frame.get(self.data..self.end)?;
        let mut p = Parsed {
            l3: self.l3,
            l4: self.data,
            end: self.end,
            v6: self.v6,
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            ..Default::default()
        };
        match self.proto {
            PROTO_TCP => {
                let t = Tcp::at(l4, 0).ok()?;
                let hl = t.header_len();
                if hl < TCP_HEADER_LEN || hl > l4.len() {
                    return None;
                }
                p.sport = t.src_port();
                p.dport = t.dst_port();
                p.tcp_flags = t.flags() & 0x3f;
                p.payload = self.data + hl;
            }
            PROTO_UDP => {
                let u = Udp::at(l4, 0).ok()?;
                p.sport = u.src_port();
                p.dport = u.dst_port();
                p.payload = self.data + Udp::<&[u8; 8]>::LEN;
            }
            _ => return None,
        }
        Some(p)
    }

    /// The fragment as a `Parsed` for IP-level work (tunnel encapsulation).
    pub fn as_parsed(&self) -> Parsed {
        Parsed {
            l3: self.l3,
            l4: self.data,
            payload: self.data,
            end: self.end,
            v6: self.v6,
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            ..Default::default()
        }
    }
}

/// Is the packet at `p.l3` of `frame` an IP fragment (IPv4: more fragments or an offset; IPv6:
/// a fragment header)? The ordinary parse refuses fragments (`ParseError::Fragment`); a first
/// fragment still comes through the connection path, parsed by [`Fragment::first`], and a
/// path that needs the whole datagram (its transport checksum covers all of it) asks here.
pub fn is_fragment(frame: &[u8], p: &Parsed) -> bool {
    if p.v6 {
        Ipv6::at(frame, p.l3).is_ok_and(|h| h.next_header() == IPV6_FRAGMENT)
    } else {
        Ipv4::at(frame, p.l3).is_ok_and(|h| h.frag_word() & 0x3fff != 0)
    }
}

/// Parses an Ethernet frame holding an IP fragment. IPv6: the fragment header must follow
/// the fixed header directly (other extension headers before it: `Unsupported`).
pub fn parse_fragment(frame: &[u8]) -> Result<Fragment, ParseError> {
    let eth = frame.get(..14).ok_or(ParseError::Malformed)?;
    let (off, et) = match [eth[12], eth[13]] {
        [0x81, 0x00] => {
            let t = frame.get(16..18).ok_or(ParseError::Malformed)?;
            (18, u16::from_be_bytes([t[0], t[1]]))
        }
        et => (14, u16::from_be_bytes(et)),
    };
    match et {
        ETHERTYPE_IPV4 => {
            let h = Ipv4::at(frame, off).map_err(|_| ParseError::Malformed)?;
            let ihl = h.header_len();
            let total = h.total_len() as usize;
            if h.version_ihl() >> 4 != 4 || ihl < 20 || total < ihl || off + total > frame.len() {
                return Err(ParseError::Malformed);
            }
            let fl = h.frag_word();
            let (offset, more) = (u32::from(fl & 0x1fff) * 8, fl & 0x2000 != 0);
            if offset == 0 && !more {
                return Err(ParseError::Malformed); // not a fragment
            }
            if more && !(total - ihl).is_multiple_of(8) {
                return Err(ParseError::Malformed);
            }
            // A later fragment without data (Linux `ip_frag_queue`: `end == offset`; a first
            // one is `frag_tiny`), or one past the 65535 bytes a datagram may have
            // (`ip_frag_reasm`: oversize, the "ping of death").
            if (offset != 0 && total == ihl) || offset as usize + total > 65535 {
                return Err(ParseError::Malformed);
            }
            Ok(Fragment {
                l3: off,
                data: off + ihl,
                end: off + total,
                v6: false,
                proto: h.proto(),
                src: v4_to_addr(h.src()),
                dst: v4_to_addr(h.dst()),
                id: u32::from(h.ident()),
                offset,
                more,
            })
        }
        ETHERTYPE_IPV6 => {
            let (Ok(h), Ok(f)) = (Ipv6::at(frame, off), Ipv6Frag::at(frame, off + 40)) else {
                return Err(ParseError::Malformed);
            };
            let end = off + 40 + h.payload_len() as usize;
            if h.version_byte() >> 4 != 6 || end > frame.len() || end < off + 48 {
                return Err(ParseError::Malformed);
            }
            if h.next_header() != IPV6_FRAGMENT {
                return Err(ParseError::Unsupported);
            }
            let (offset, more) = (f.offset(), f.more());
            if more && !(end - off - 48).is_multiple_of(8) {
                return Err(ParseError::Malformed);
            }
            // A later fragment without data, or one past the 65535 bytes of a fragmentable
            // part (Linux `ip6_frag_queue`: `end == offset`, `end > IPV6_MAXPLEN`).
            if (offset != 0 && end == off + 48) || offset as usize + (end - off - 48) > 65535 {
                return Err(ParseError::Malformed);
            }
            Ok(Fragment {
                l3: off,
                data: off + 48,
                end,
                v6: true,
                proto: f.next_header(),
                src: v6_to_addr(h.src()),
                dst: v6_to_addr(h.dst()),
                id: f.ident(),
                offset,
                more,
            })
        }
        _ => Err(ParseError::Unsupported),
    }
}

/// A datagram: the fragments sharing (source, destination, protocol, ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    pub id: u32,
}

/// What a datagram's first fragment decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragFlow {
    /// The connection (flow index, generation) and whether the datagram travels inbound.
    pub conn: u32,
    pub gen: u32,
    pub inbound: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    flow: FragFlow,
    expires: u64,
    poisoned: bool,
    /// Its first fragment was not forwarded but answered with an ICMP error ([`FragTable::refuse`]).
    refused: bool,
    /// The datagram's length once its last fragment came (0: not yet).
    total: u32,
    /// The byte ranges seen, merged where adjacent (unordered).
    ranges: [(u32, u32); RANGES],
    n: u8,
}

/// Why a fragment is not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragVerdict {
    /// Forward it on this connection.
    Forward(FragFlow),
    /// Its first fragment has not been seen (yet).
    Unknown,
    /// It overlaps another fragment of its datagram (or follows one that did).
    Overlap,
    /// Every byte it carries was seen before in its datagram (a copy the network made): it
    /// alone is dropped, the datagram goes on (Linux's `IPFRAG_DUP`).
    Duplicate,
    /// Its datagram's first fragment was answered with an ICMP error instead of going out
    /// ([`FragTable::refuse`]): the rest of the datagram is useless to its receiver.
    Refused,
}

/// The source a datagram or held fragment is accounted to, for fairness between sources: an
/// IPv4 address, an IPv6 /64 (what one host or site controls; IPv6 hosts pick addresses
/// within their /64 at will).
pub fn source_of(a: Addr) -> Addr {
    if addr_is_v4(a) {
        a
    } else {
        a & (u128::MAX << 64)
    }
}

/// The source appearing most often in `srcs` and how often (sorts `srcs`); `(0, 0)` when
/// empty.
pub fn busiest(srcs: &mut [Addr]) -> (Addr, usize) {
    srcs.sort_unstable();
    let mut best = (0, 0);
    for run in srcs.chunk_by(|a, b| a == b) {
        if run.len() > best.1 {
            best = (run[0], run.len());
        }
    }
    best
}

const NIL: u32 = u32::MAX;

/// A datagram in flight, linked in the table's order (oldest first) and in its source's.
#[derive(Clone, Copy, Debug)]
struct Node {
    key: FragKey,
    entry: Entry,
    prev: u32,
    next: u32,
    sprev: u32,
    snext: u32,
}

/// A source's datagrams in flight: how many, its oldest and newest, and where it sits in
/// [`FragTable::by_count`]`[n]`.
#[derive(Clone, Copy, Debug)]
struct Source {
    n: u32,
    head: u32,
    tail: u32,
    pos: u32,
}

/// The per-worker table of datagrams in flight.
///
/// Fair between sources ([`source_of`]): a source holds at most [`MAX_FRAG_PER_SOURCE`]
/// datagrams (a new one pushes out its own oldest), and a full table makes room from the
/// oldest datagram of the source holding the most. A source sending first fragments of
/// datagrams it never completes so pushes out only its own. Every step is O(1): the datagrams
/// live in a slab linked in two lists (the table's, for expiry, and their source's), the
/// sources in buckets by how many they hold.
pub struct FragTable {
    map: HashMap<FragKey, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    srcs: HashMap<Addr, Source>,
    /// `by_count[c]`: the sources holding `c` datagrams; `most`: the largest such `c`.
    by_count: Vec<Vec<Addr>>,
    most: usize,
    /// Datagrams forgotten before they completed or expired, to make room: the worker adds
    /// them to its `frag_evicted` counter.
    pub evicted: u64,
}

impl Default for FragTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FragTable {
    pub fn new() -> Self {
        FragTable {
            map: HashMap::with_capacity(64),
            nodes: Vec::with_capacity(64),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            srcs: HashMap::with_capacity(16),
            by_count: vec![Vec::new(); MAX_FRAG_PER_SOURCE + 1],
            most: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Datagrams in flight from `src`'s source ([`source_of`]).
    pub fn held_by(&self, src: Addr) -> usize {
        self.srcs.get(&source_of(src)).map_or(0, |s| s.n as usize)
    }

    fn entry_mut(&mut self, key: &FragKey) -> Option<(u32, &mut Entry)> {
        let i = *self.map.get(key)?;
        Some((i, &mut self.nodes[i as usize].entry))
    }

    /// Moves `src` from `by_count[from]` to `by_count[to]` (0: out of the buckets).
    fn rebucket(&mut self, src: Addr, from: usize, to: usize) {
        if from > 0 {
            let pos = self.srcs[&src].pos as usize;
            let b = &mut self.by_count[from];
            b.swap_remove(pos);
            if let Some(&moved) = b.get(pos) {
                self.srcs.get_mut(&moved).expect("bucketed source").pos = pos as u32;
            }
        }
        if to > 0 {
            let b = &mut self.by_count[to];
            b.push(src);
            let pos = b.len() as u32 - 1;
            self.srcs.get_mut(&src).expect("bucketed source").pos = pos;
        }
        if to > self.most {
            self.most = to;
        }
        while self.most > 0 && self.by_count[self.most].is_empty() {
            self.most -= 1;
        }
    }

    /// Adds a datagram at the newest end of the table and of its source.
    fn insert(&mut self, key: FragKey, entry: Entry) {
        let src = source_of(key.src);
        let s = *self.srcs.entry(src).or_insert(Source { n: 0, head: NIL, tail: NIL, pos: 0 });
        let node = Node { key, entry, prev: self.tail, next: NIL, sprev: s.tail, snext: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() as u32 - 1
            }
        };
        match self.tail {
            NIL => self.head = i,
            t => self.nodes[t as usize].next = i,
        }
        self.tail = i;
        if s.tail != NIL {
            self.nodes[s.tail as usize].snext = i;
        }
        let n = s.n as usize;
        {
            let s = self.srcs.get_mut(&src).expect("source");
            if s.head == NIL {
                s.head = i;
            }
            s.tail = i;
            s.n += 1;
        }
        self.rebucket(src, n, n + 1);
        self.map.insert(key, i);
    }

    /// Forgets datagram `i`.
    fn remove(&mut self, i: u32) {
        let Node { key, prev, next, sprev, snext, .. } = self.nodes[i as usize];
        self.map.remove(&key);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            x => self.nodes[x as usize].prev = prev,
        }
        if sprev != NIL {
            self.nodes[sprev as usize].snext = snext;
        }
        if snext != NIL {
            self.nodes[snext as usize].sprev = sprev;
        }
        let src = source_of(key.src);
        let s = self.srcs.get_mut(&src).expect("source of a datagram");
        if s.head == i {
            s.head = snext;
        }
        if s.tail == i {
            s.tail = sprev;
        }
        s.n -= 1;
        let n = s.n as usize;
        self.rebucket(src, n + 1, n);
        if n == 0 {
            self.srcs.remove(&src);
        }
        self.free.push(i);
    }

    /// What a first fragment of `key` carrying `range` would be, before anything acts on it:
    /// `None` when no live datagram has that key (it is the first), else `Duplicate` when a
    /// first fragment with its bytes was seen, else `Overlap` (the datagram is poisoned).
    pub fn check_first(&mut self, key: &FragKey, range: (u32, u32), now: u64) -> Option<FragVerdict> {
        let (_, e) = self.entry_mut(key).filter(|(_, e)| e.expires > now)?;
        if e.poisoned {
            return Some(FragVerdict::Overlap);
        }
        if e.ranges[..e.n as usize].iter().any(|&(x, y)| x <= range.0 && range.1 <= y) {
            return Some(FragVerdict::Duplicate);
        }
        e.poisoned = true;
        Some(FragVerdict::Overlap)
    }

    /// Records the first fragment of `key` (carrying `range`). A second "first" fragment of a
    /// live datagram overlaps it (the worker asks [`FragTable::check_first`] before).
    pub fn first(&mut self, key: FragKey, flow: FragFlow, range: (u32, u32), now: u64) -> FragVerdict {
        if let Some((i, e)) = self.entry_mut(&key) {
            if e.expires > now {
                e.poisoned = true;
                return FragVerdict::Overlap;
            }
            self.remove(i);
        }
        self.sweep(now, 4);
        // A source at its share makes room from its own oldest datagram; a full table from
        // the oldest datagram of the source holding the most (the newcomer's own when it
        // holds as many).
        let src = source_of(key.src);
        let held = self.srcs.get(&src).map_or(0, |s| s.n as usize);
        let victim = if held >= MAX_FRAG_PER_SOURCE || (self.map.len() >= MAX_FRAG_ENTRIES && held >= self.most) {
            Some(src)
        } else if self.map.len() >= MAX_FRAG_ENTRIES {
            self.by_count[self.most].first().copied()
        } else {
            None
        };
        if let Some(i) = victim.and_then(|v| self.srcs.get(&v)).map(|s| s.head) {
            self.remove(i);
            self.evicted += 1;
        }
        let mut ranges = [(0, 0); RANGES];
        ranges[0] = range;
        self.insert(
            key,
            Entry { flow, expires: now + FRAG_TIMEOUT, poisoned: false, refused: false, total: 0, ranges, n: 1 },
        );
        FragVerdict::Forward(flow)
    }

    /// The datagram `key`, whose first fragment was just recorded ([`FragTable::first`]), was
    /// not forwarded after all: its first fragment was answered with an ICMP error (too big for
    /// the egress MTU). Its later fragments are refused until it expires: Linux answers the
    /// reassembled datagram and forwards none of it, and a receiver could not reassemble them.
    pub fn refuse(&mut self, key: &FragKey) {
        if let Some((_, e)) = self.entry_mut(key) {
            e.refused = true;
        }
    }

    /// A later fragment of `key` carrying `range`; `more`: not the datagram's last.
    ///
    /// The ranges seen are kept merged (in-order fragments make one range), so the overlap
    /// check covers a datagram of any number of fragments that arrive mostly in order. Once
    /// its fragments cover it from 0 to the last one's end the datagram is complete and
    /// forgotten (Linux's queue ends with the reassembly): its ID is free for the next one.
    pub fn later(&mut self, key: &FragKey, range: (u32, u32), more: bool, now: u64) -> FragVerdict {
        let Some((slot, e)) = self.entry_mut(key) else { return FragVerdict::Unknown };
        if e.expires <= now {
            self.remove(slot);
            return FragVerdict::Unknown;
        }
        if e.poisoned {
            return FragVerdict::Overlap;
        }
        if e.refused {
            return FragVerdict::Refused;
        }
        let (a, b) = range;
        let n = e.n as usize;
        // Linux `ip_frag_queue`: a last fragment ending before data already seen, a second
        // last fragment elsewhere, or data past the last fragment's end corrupt the datagram.
        let inconsistent = if more {
            e.total != 0 && b > e.total
        } else {
            (e.total != 0 && b != e.total) || e.ranges[..n].iter().any(|&(_, y)| y > b)
        };
        // A copy of bytes seen (Linux: inside one run of fragments) is not an overlap.
        if !inconsistent && e.ranges[..n].iter().any(|&(x, y)| x <= a && b <= y) {
            return FragVerdict::Duplicate;
        }
        if inconsistent || e.ranges[..n].iter().any(|&(x, y)| a < y && x < b) {
            e.poisoned = true;
            return FragVerdict::Overlap;
        }
        if !more {
            e.total = b;
        }
        let flow = e.flow;
        // Merge with the range ending where this one starts and / or the one starting where
        // it ends; else a new range while there is room (beyond it, unchecked).
        match (e.ranges[..n].iter().position(|r| r.1 == a), e.ranges[..n].iter().position(|r| r.0 == b)) {
            (Some(i), Some(j)) => {
                e.ranges[i].1 = e.ranges[j].1;
                e.ranges[j] = e.ranges[n - 1];
                e.n -= 1;
            }
            (Some(i), None) => e.ranges[i].1 = b,
            (None, Some(j)) => e.ranges[j].0 = a,
            (None, None) if n < RANGES => {
                e.ranges[n] = range;
                e.n += 1;
            }
            (None, None) => {}
        }
        if e.total != 0 && e.n == 1 && e.ranges[0] == (0, e.total) {
            self.remove(slot);
        }
        FragVerdict::Forward(flow)
    }

    /// Drops up to `budget` expired datagrams from the oldest end. No allocation.
    pub fn sweep(&mut self, now: u64, mut budget: usize) {
        while budget > 0 && self.head != NIL && self.nodes[self.head as usize].entry.expires <= now {
            self.remove(self.head);
            budget -= 1;
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.srcs.clear();
        self.by_count.iter_mut().for_each(Vec::clear);
        self.most = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{fragment4, fragment6, udp4, udp6, V6A, V6B};

    #[test]
    fn is_fragment_knows_first_and_later_fragments_of_both_families() {
        use crate::wire::parse::parse;
        let d4 = udp4([10, 0, 1, 2], 5000, [10, 0, 1, 100], 53, &[7u8; 3000]);
        let d6 = udp6(V6A, 5000, V6B, 53, &[7u8; 3000]);
        assert!(!is_fragment(&d4, &parse(&d4).unwrap()));
        assert!(!is_fragment(&d6, &parse(&d6).unwrap()));
        for f in fragment4(&d4, 1500, 1).iter().chain(&fragment6(&d6, 1500, 1)) {
            let g = parse_fragment(f).unwrap();
            assert!(is_fragment(f, &g.first(f).unwrap_or_else(|| g.as_parsed())), "offset {}", g.offset);
        }
    }

    #[test]
    fn parses_ipv4_and_ipv6_fragments() {
        let d = udp4([10, 0, 1, 2], 5000, [10, 0, 1, 100], 53, &[7u8; 3000]);
        let frags = fragment4(&d, 1500, 0x1234);
        assert_eq!(frags.len(), 3);
        let f0 = parse_fragment(&frags[0]).unwrap();
        assert_eq!((f0.offset, f0.more, f0.id, f0.proto), (0, true, 0x1234, PROTO_UDP));
        let p = f0.first(&frags[0]).unwrap();
        assert_eq!((p.sport, p.dport), (5000, 53));
        let f2 = parse_fragment(&frags[2]).unwrap();
        assert!(!f2.more && f2.offset > 0 && f2.first(&frags[2]).is_none());
        let total: u32 = frags.iter().map(|f| parse_fragment(f).unwrap()).map(|f| f.range().1 - f.range().0).sum();
        assert_eq!(total, 3008);
        let d6 = udp6(V6A, 5000, V6B, 53, &[9u8; 3000]);
        let frags = fragment6(&d6, 1500, 0xdead_beef);
        let f0 = parse_fragment(&frags[0]).unwrap();
        assert_eq!((f0.offset, f0.more, f0.id, f0.v6), (0, true, 0xdead_beef, true));
        assert_eq!(f0.first(&frags[0]).unwrap().dport, 53);
        // Not fragments / garbage.
        assert!(parse_fragment(&d).is_err());
        assert!(parse_fragment(&[0u8; 10]).is_err());
        for cut in 0..frags[1].len() {
            let _ = parse_fragment(&frags[1][..cut]);
        }
    }

    /// A refused datagram (its first fragment answered with an ICMP error) refuses every later
    /// fragment until it expires, then is unknown.
    #[test]
    fn a_refused_datagram_forwards_no_later_fragment() {
        let mut t = FragTable::new();
        let k = FragKey { src: 1, dst: 2, proto: PROTO_UDP, id: 7 };
        let fl = FragFlow { conn: 3, gen: 1, inbound: true };
        assert_eq!(t.first(k, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        t.refuse(&k);
        assert_eq!(t.later(&k, (1480, 2960), true, 1), FragVerdict::Refused);
        assert_eq!(t.later(&k, (2960, 3008), false, 2), FragVerdict::Refused);
        assert_eq!(t.later(&k, (2960, 3008), false, FRAG_TIMEOUT), FragVerdict::Unknown);
        // Another datagram is not touched.
        let k2 = FragKey { id: 8, ..k };
        t.refuse(&k2);
        assert_eq!(t.first(k2, fl, (0, 8), 0), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k2, (8, 16), false, 1), FragVerdict::Forward(fl));
    }

    #[test]
    fn overlaps_poison_the_datagram_and_the_table_is_bounded() {
        let mut t = FragTable::new();
        let k = FragKey { src: 1, dst: 2, proto: PROTO_UDP, id: 7 };
        let fl = FragFlow { conn: 3, gen: 1, inbound: true };
        assert_eq!(t.first(k, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (1480, 2960), true, 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (2952, 3000), true, 2), FragVerdict::Overlap);
        assert_eq!(t.later(&k, (2960, 3008), false, 3), FragVerdict::Overlap, "poisoned");
        let k2 = FragKey { id: 8, ..k };
        assert_eq!(t.later(&k2, (8, 16), true, 0), FragVerdict::Unknown);
        assert_eq!(t.first(k2, fl, (0, 8), 0), FragVerdict::Forward(fl));
        assert_eq!(t.first(k2, fl, (0, 8), 1), FragVerdict::Overlap, "a second first fragment");
        // Expiry and bound.
        assert_eq!(t.later(&k, (5000, 5008), true, FRAG_TIMEOUT + 10), FragVerdict::Unknown);
        for id in 0..(MAX_FRAG_ENTRIES as u32 + 10) {
            t.first(FragKey { id: 100 + id, ..k }, fl, (0, 8), FRAG_TIMEOUT);
        }
        assert!(t.len() <= MAX_FRAG_ENTRIES);
        assert!(t.evicted >= 9);
    }

    #[test]
    fn a_duplicate_is_dropped_alone_and_the_datagram_goes_on() {
        let mut t = FragTable::new();
        let k = FragKey { src: 1, dst: 2, proto: PROTO_UDP, id: 7 };
        let fl = FragFlow { conn: 3, gen: 1, inbound: true };
        assert_eq!(t.check_first(&k, (0, 1480), 0), None);
        assert_eq!(t.first(k, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        assert_eq!(t.check_first(&k, (0, 1480), 0), Some(FragVerdict::Duplicate), "the first twice");
        assert_eq!(t.later(&k, (1480, 2960), true, 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (1480, 2960), true, 2), FragVerdict::Duplicate, "the second twice");
        assert_eq!(t.later(&k, (1480, 1488), true, 2), FragVerdict::Duplicate, "inside seen bytes");
        assert_eq!(t.later(&k, (2960, 3008), false, 3), FragVerdict::Forward(fl), "not poisoned");
        assert!(t.is_empty(), "complete");
        // Partial overlaps still poison, a first fragment's as a later one's.
        assert_eq!(t.first(k, fl, (0, 1480), 4), FragVerdict::Forward(fl));
        assert_eq!(t.check_first(&k, (0, 1488), 4), Some(FragVerdict::Overlap));
        assert_eq!(t.later(&k, (1480, 2960), true, 4), FragVerdict::Overlap, "poisoned");
        assert_eq!(t.check_first(&k, (0, 1480), 4), Some(FragVerdict::Overlap), "poisoned");
        let k2 = FragKey { id: 8, ..k };
        assert_eq!(t.first(k2, fl, (0, 16), 5), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k2, (8, 24), true, 5), FragVerdict::Overlap, "straddles the end of seen bytes");
        // A copy of the last fragment after its datagram expired is unknown, not a duplicate.
        let k3 = FragKey { id: 9, ..k };
        assert_eq!(t.first(k3, fl, (0, 16), 6), FragVerdict::Forward(fl));
        assert_eq!(t.check_first(&k3, (0, 16), 6 + FRAG_TIMEOUT), None);
    }

    #[test]
    fn ranges_merge_and_a_complete_datagram_is_forgotten() {
        let mut t = FragTable::new();
        let k = FragKey { src: 1, dst: 2, proto: PROTO_UDP, id: 7 };
        let fl = FragFlow { conn: 3, gen: 1, inbound: true };
        assert_eq!(t.first(k, fl, (0, 8), 0), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (16, 24), true, 0), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (32, 40), false, 0), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (8, 16), true, 0), FragVerdict::Forward(fl), "fills the first gap");
        assert_eq!(t.entry_mut(&k).unwrap().1.n, 2);
        assert_eq!(t.later(&k, (24, 32), true, 0), FragVerdict::Forward(fl));
        assert!(t.is_empty(), "complete");
        // Inconsistent ends poison: data past the last fragment, a second last fragment.
        assert_eq!(t.first(k, fl, (0, 8), 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (16, 24), false, 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k, (24, 32), true, 1), FragVerdict::Overlap);
        let k2 = FragKey { id: 8, ..k };
        assert_eq!(t.first(k2, fl, (0, 8), 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k2, (16, 24), false, 1), FragVerdict::Forward(fl));
        assert_eq!(t.later(&k2, (32, 40), false, 1), FragVerdict::Overlap);
        // One ID reused by many complete datagrams: nothing of them stays behind.
        let k3 = FragKey { id: 9, ..k };
        for i in 0..3 * MAX_FRAG_ENTRIES as u64 {
            assert_eq!(t.first(k3, fl, (0, 8), 2 + i), FragVerdict::Forward(fl));
            assert_eq!(t.later(&k3, (8, 16), false, 2 + i), FragVerdict::Forward(fl));
        }
        assert_eq!(t.len(), 2, "k and k2, poisoned, until they expire");
        assert!(t.nodes.len() <= 3);
    }

    /// One source sending first fragments of datagrams it never completes, as fast as it
    /// likes: it pushes out its own datagrams only. Other sources' datagrams in flight go on,
    /// however many it sends (the table used to drop its oldest datagram, anyone's).
    #[test]
    fn a_flooding_source_pushes_out_only_its_own_datagrams() {
        let mut t = FragTable::new();
        let fl = FragFlow { conn: 3, gen: 1, inbound: true };
        let victim = FragKey { src: v4_to_addr([10, 0, 1, 2]), dst: 2, proto: PROTO_UDP, id: 7 };
        let v6victim = FragKey { src: u128::from_be_bytes(V6A), ..victim };
        assert_eq!(t.first(victim, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        assert_eq!(t.first(v6victim, fl, (0, 1232), 0), FragVerdict::Forward(fl));
        let flood = v4_to_addr([192, 0, 2, 66]);
        for id in 0..3 * MAX_FRAG_ENTRIES as u32 {
            assert_eq!(t.first(FragKey { src: flood, id, ..victim }, fl, (0, 8), 1), FragVerdict::Forward(fl));
        }
        assert_eq!(t.held_by(flood), MAX_FRAG_PER_SOURCE);
        assert_eq!(t.evicted, 3 * MAX_FRAG_ENTRIES as u64 - MAX_FRAG_PER_SOURCE as u64);
        // The flooder's newest datagrams are the ones left.
        let last = FragKey { src: flood, id: 3 * MAX_FRAG_ENTRIES as u32 - 1, ..victim };
        assert_eq!(t.later(&last, (8, 16), true, 2), FragVerdict::Forward(fl));
        assert_eq!(t.later(&FragKey { src: flood, id: 0, ..victim }, (8, 16), true, 2), FragVerdict::Unknown);
        // An IPv6 flood from anywhere in one /64 is one source.
        let mut a = V6A;
        for id in 0..2 * MAX_FRAG_PER_SOURCE as u32 {
            a[8..12].copy_from_slice(&id.to_be_bytes());
            let k = FragKey { src: u128::from_be_bytes(a), id, ..victim };
            assert_eq!(t.first(k, fl, (0, 8), 2), FragVerdict::Forward(fl));
        }
        assert_eq!(t.held_by(u128::from_be_bytes(V6A)), MAX_FRAG_PER_SOURCE, "the victim's went");
        assert_eq!(t.later(&victim, (1480, 2960), false, 3), FragVerdict::Forward(fl), "victim goes on");
        // Many sources filling the table: the one holding the most makes room.
        let mut t = FragTable::new();
        assert_eq!(t.first(victim, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        let mut id = 0;
        for s in 0..MAX_FRAG_ENTRIES as u32 / 100 + 1 {
            let src = v4_to_addr((0xc000_0200 + s).to_be_bytes());
            for _ in 0..100 {
                t.first(FragKey { src, id, ..victim }, fl, (0, 8), 1);
                id += 1;
            }
        }
        assert_eq!(t.len(), MAX_FRAG_ENTRIES);
        assert_eq!(t.held_by(victim.src), 1);
        assert_eq!(t.later(&victim, (1480, 2960), false, 2), FragVerdict::Forward(fl), "victim goes on");
        // Datagrams completed at any rate leave nothing behind to push the victim out.
        let mut t = FragTable::new();
        assert_eq!(t.first(victim, fl, (0, 1480), 0), FragVerdict::Forward(fl));
        let k = FragKey { src: flood, ..victim };
        for i in 0..3 * MAX_FRAG_ENTRIES as u32 {
            let k = FragKey { id: i % 3, ..k };
            assert_eq!(t.first(k, fl, (0, 8), 1), FragVerdict::Forward(fl));
            assert_eq!(t.later(&k, (8, 16), false, 1), FragVerdict::Forward(fl));
        }
        assert_eq!(t.later(&victim, (1480, 2960), false, 2), FragVerdict::Forward(fl), "victim goes on");
        assert_eq!(t.evicted, 0);
        // Expiry still goes oldest first, and takes a source's account with it.
        t.sweep(FRAG_TIMEOUT + 1, 100);
        assert!(t.is_empty() && t.srcs.is_empty() && t.most == 0);
    }
}
