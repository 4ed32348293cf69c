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

use crate::wire::parse::{v4_to_addr, v6_to_addr, Addr, ParseError, Parsed, PROTO_TCP, PROTO_UDP};
use crate::wire::view::{
    Ipv4, Ipv6, Ipv6Frag, Tcp, Udp, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV6_FRAGMENT, TCP_HEADER_LEN,
};
use hashbrown::HashMap;
use std::collections::VecDeque;

/// How long a datagram's fragments are matched after its first fragment (ns). Linux keeps
/// fragments 30 s for reassembly; a balancer forwarding on the fly needs only the spread of
/// one datagram's fragments in flight.
pub const FRAG_TIMEOUT: u64 = 5_000_000_000;
/// Datagrams tracked per worker.
pub const MAX_FRAG_ENTRIES: usize = 4096;
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
}

/// The per-worker table of datagrams in flight.
pub struct FragTable {
    map: HashMap<FragKey, Entry>,
    order: VecDeque<(FragKey, u64)>,
    /// Entries evicted because the table was full.
    pub evicted: u64,
}

impl Default for FragTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FragTable {
    pub fn new() -> Self {
        FragTable { map: HashMap::with_capacity(64), order: VecDeque::with_capacity(64), evicted: 0 }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What a first fragment of `key` carrying `range` would be, before anything acts on it:
    /// `None` when no live datagram has that key (it is the first), else `Duplicate` when a
    /// first fragment with its bytes was seen, else `Overlap` (the datagram is poisoned).
    pub fn check_first(&mut self, key: &FragKey, range: (u32, u32), now: u64) -> Option<FragVerdict> {
        let e = self.map.get_mut(key).filter(|e| e.expires > now)?;
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
        if let Some(e) = self.map.get_mut(&key) {
            if e.expires > now {
                e.poisoned = true;
                return FragVerdict::Overlap;
            }
        }
        self.sweep(now, 4);
        // Full: the oldest datagram goes. The order queue is bounded too: datagrams
        // completed (or IDs reused) before they expire leave stale entries in it.
        while self.map.len() >= MAX_FRAG_ENTRIES || self.order.len() >= 2 * MAX_FRAG_ENTRIES {
            let Some((k, exp)) = self.order.pop_front() else { break };
            if self.map.get(&k).is_some_and(|e| e.expires == exp) {
                self.map.remove(&k);
                self.evicted += 1;
            }
        }
        let expires = now + FRAG_TIMEOUT;
        let mut ranges = [(0, 0); RANGES];
        ranges[0] = range;
        self.map.insert(key, Entry { flow, expires, poisoned: false, total: 0, ranges, n: 1 });
        self.order.push_back((key, expires));
        FragVerdict::Forward(flow)
    }

    /// A later fragment of `key` carrying `range`; `more`: not the datagram's last.
    ///
    /// The ranges seen are kept merged (in-order fragments make one range), so the overlap
    /// check covers a datagram of any number of fragments that arrive mostly in order. Once
    /// its fragments cover it from 0 to the last one's end the datagram is complete and
    /// forgotten (Linux's queue ends with the reassembly): its ID is free for the next one.
    pub fn later(&mut self, key: &FragKey, range: (u32, u32), more: bool, now: u64) -> FragVerdict {
        let Some(e) = self.map.get_mut(key) else { return FragVerdict::Unknown };
        if e.expires <= now {
            self.map.remove(key);
            return FragVerdict::Unknown;
        }
        if e.poisoned {
            return FragVerdict::Overlap;
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
            self.map.remove(key);
        }
        FragVerdict::Forward(flow)
    }

    /// Drops up to `budget` expired datagrams from the oldest end. No allocation.
    pub fn sweep(&mut self, now: u64, mut budget: usize) {
        while budget > 0 {
            let Some(&(k, exp)) = self.order.front() else { break };
            if exp > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|e| e.expires == exp) {
                self.map.remove(&k);
            }
            budget -= 1;
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{fragment4, fragment6, udp4, udp6, V6A, V6B};

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
        assert_eq!(t.map[&k].n, 2);
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
        // One ID reused by many complete datagrams: the order queue stays bounded.
        let k3 = FragKey { id: 9, ..k };
        for i in 0..3 * MAX_FRAG_ENTRIES as u64 {
            assert_eq!(t.first(k3, fl, (0, 8), 2 + i), FragVerdict::Forward(fl));
            assert_eq!(t.later(&k3, (8, 16), false, 2 + i), FragVerdict::Forward(fl));
        }
        assert!(t.order.len() <= 2 * MAX_FRAG_ENTRIES);
    }
}
