//! The burst's passes and its express lane (a child module of `worker`).
//!
//! A burst goes through three passes so that the flow table's cache misses overlap instead of
//! serialising (as VPP's graph nodes do): (1) parse each frame, hash its 5-tuple and prefetch
//! the index line; (2) take the first index word whose tag matches (the index only) and
//! prefetch its connection; (3) confirm the key against the connection, now in cache, and
//! forward.
//!
//! Most packets of a busy balancer are the established IPv4 or IPv6 TCP/UDP packets of
//! plain NAT, full NAT and DR connections. They take the *express lane*: pass 1 reads only
//! the few header words the lane needs ([`express_key4`], [`express_key6`]) and keeps a
//! 16-byte record per packet ([`Lane`]); pass 3 ([`Worker::express`]) makes every check the general path makes of
//! such a packet, all before the first write, and either forwards it or leaves it untouched.
//! Everything else (other frames, and any packet the lane declines: a miss, a SYN, FIN or
//! RST, a connection with the FTP gateway, the SYN proxy, PROXY protocol or translation, an
//! unresolved next hop, a packet too big, a TTL running out, ...) gets the full parse and
//! the general path ([`Worker::process_parsed`]), which gives the same result the lane
//! would have: a property test (`express_matches_general`) drives both on random traffic.

use super::*;
use crate::flow::tcpstate::TcpState;
use crate::wire::parse::{v4_to_addr, v6_to_addr, TCP_FIN, TCP_RST};

/// Per packet of a burst: the flow hash (0: not hashed), the candidate index word of pass 2
/// (`NONE`: none), and the network header's offset if the express parser took the frame
/// (0: it did not, and the frame's full parse is in the burst's `pre`), plus [`LANE_IS_V6`]
/// for an IPv6 one.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Lane {
    pub h: u64,
    pub hint: u32,
    pub l3: u8,
}

/// The bit of [`Lane::l3`] that marks an IPv6 frame (offsets are 14 or 18).
pub(super) const LANE_IS_V6: u8 = 0x80;

impl Lane {
    /// The network header's offset.
    #[inline(always)]
    pub fn l3(&self) -> usize {
        (self.l3 & !LANE_IS_V6) as usize
    }
}

/// Bytes the express lane reads from the network header on: IPv4 (20) or IPv6 (40) and
/// 20 of the transport header. A shorter frame takes the general path.
const LANE_V4: usize = 40;
const LANE_V6: usize = 60;

/// The express parser ([`express_key4`], else [`express_key6`]): the 5-tuple of an Ethernet [+ one 802.1Q tag] frame carrying TCP or
/// UDP straight in IPv4 without options or fragmentation, or in IPv6 without extension
/// headers (and neither address IPv4-mapped), with the network header's offset and family,
/// when the frame holds the bytes the lane reads ([`LANE_V4`], [`LANE_V6`]; shorter ones
/// take the general path). It takes exactly the frames [`parse::parse_fast`] takes as
/// TCP or UDP (minus those short ones), with the same key: a property test checks it.
#[cfg(test)]
fn lane_key(d: &[u8]) -> Option<(u8, bool, FlowKey)> {
    match express_key4(d) {
        Some((l3, k)) => Some((l3, false, k)),
        None => express_key6(d).map(|(l3, k)| (l3, true, k)),
    }
}

/// The express parser of an IPv4 frame (see `lane_key`).
#[inline(always)]
fn express_key4(d: &[u8]) -> Option<(u8, FlowKey)> {
    let eth: &[u8; 18] = d.get(..18)?.try_into().ok()?;
    let l3 = match [eth[12], eth[13]] {
        [0x08, 0x00] => 14,
        [0x81, 0x00] if eth[16] == 0x08 && eth[17] == 0x00 => 18,
        _ => return None,
    };
    let ip: &[u8; LANE_V4] = d.get(l3..l3 + LANE_V4)?.try_into().ok()?;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || l3 + total > d.len() {
        return None;
    }
    let l4len = total.checked_sub(20)?;
    if !l4_fits(ip[9], ip[20..].try_into().ok()?, l4len) {
        return None;
    }
    Some((
        l3 as u8,
        FlowKey {
            src: v4_to_addr([ip[12], ip[13], ip[14], ip[15]]),
            dst: v4_to_addr([ip[16], ip[17], ip[18], ip[19]]),
            sport: u16::from_be_bytes([ip[20], ip[21]]),
            dport: u16::from_be_bytes([ip[22], ip[23]]),
            proto: ip[9],
        },
    ))
}

/// The express parser of an IPv6 frame (see `lane_key`).
#[inline(always)]
fn express_key6(d: &[u8]) -> Option<(u8, FlowKey)> {
    let eth: &[u8; 18] = d.get(..18)?.try_into().ok()?;
    let l3 = match [eth[12], eth[13]] {
        [0x86, 0xdd] => 14,
        [0x81, 0x00] if eth[16] == 0x86 && eth[17] == 0xdd => 18,
        _ => return None,
    };
    let ip: &[u8; LANE_V6] = d.get(l3..l3 + LANE_V6)?.try_into().ok()?;
    // The next header first: ICMPv6 (neighbour discovery, errors) leaves at once.
    if ip[6] != PROTO_TCP && ip[6] != PROTO_UDP {
        return None;
    }
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[0] >> 4 != 6 || l3 + 40 + plen > d.len() || !l4_fits(ip[6], ip[40..].try_into().ok()?, plen) {
        return None;
    }
    let (src, dst) = v6_addrs(ip);
    if parse::v4_mapped(&src) || parse::v4_mapped(&dst) {
        return None;
    }
    Some((
        l3 as u8,
        FlowKey {
            src: v6_to_addr(src),
            dst: v6_to_addr(dst),
            sport: u16::from_be_bytes([ip[40], ip[41]]),
            dport: u16::from_be_bytes([ip[42], ip[43]]),
            proto: ip[6],
        },
    ))
}

/// The source and destination address of an IPv6 header.
#[inline(always)]
fn v6_addrs(ip: &[u8; LANE_V6]) -> ([u8; 16], [u8; 16]) {
    let mut s = [0u8; 16];
    let mut t = [0u8; 16];
    s.copy_from_slice(&ip[8..24]);
    t.copy_from_slice(&ip[24..40]);
    (s, t)
}

/// A TCP or UDP header `l4` (its first 20 bytes) that fits the `l4len` bytes the network
/// header gives the transport (as [`parse::parse_fast`] checks); false for another protocol.
#[inline(always)]
fn l4_fits(proto: u8, l4: &[u8; 20], l4len: usize) -> bool {
    match proto {
        PROTO_TCP => {
            let hl = (l4[12] >> 4) as usize * 4;
            hl >= 20 && hl <= l4len
        }
        PROTO_UDP => {
            let ul = u16::from_be_bytes([l4[4], l4[5]]) as usize;
            ul >= 8 && ul <= l4len
        }
        _ => false,
    }
}

/// Offset of the TCP flags byte from the network header of a frame the lane took.
#[inline(always)]
fn flags_at(v6: bool) -> usize {
    if v6 {
        40 + 13
    } else {
        20 + 13
    }
}

/// The full parse of a frame the express parser took at `l3` (so nothing is checked again):
/// the same [`Parsed`] as [`parse::parse_fast`] (a property test checks). For the lane's
/// frames that take the general path after all.
#[inline(always)]
pub(super) fn express_parsed(d: &[u8], l3: usize, v6: bool) -> Result<Parsed, parse::ParseError> {
    if v6 {
        let Some(Ok::<&[u8; LANE_V6], _>(ip)) = d.get(l3..l3 + LANE_V6).map(|s| s.try_into()) else {
            return parse::parse(d);
        };
        let proto = ip[6];
        let (hl, tcp_flags) = if proto == PROTO_TCP { ((ip[52] >> 4) as usize * 4, ip[53] & 0x3f) } else { (8, 0) };
        let (src, dst) = v6_addrs(ip);
        return Ok(Parsed {
            l3,
            l4: l3 + 40,
            payload: l3 + 40 + hl,
            end: l3 + 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize,
            v6: true,
            arp: false,
            proto,
            src: v6_to_addr(src),
            dst: v6_to_addr(dst),
            sport: u16::from_be_bytes([ip[40], ip[41]]),
            dport: u16::from_be_bytes([ip[42], ip[43]]),
            tcp_flags,
            icmp_type: 0,
            icmp_code: 0,
        });
    }
    let Some(Ok::<&[u8; LANE_V4], _>(ip)) = d.get(l3..l3 + LANE_V4).map(|s| s.try_into()) else {
        return parse::parse(d);
    };
    let proto = ip[9];
    let (hl, tcp_flags) = if proto == PROTO_TCP { ((ip[32] >> 4) as usize * 4, ip[33] & 0x3f) } else { (8, 0) };
    Ok(Parsed {
        l3,
        l4: l3 + 20,
        payload: l3 + 20 + hl,
        end: l3 + u16::from_be_bytes([ip[2], ip[3]]) as usize,
        v6: false,
        arp: false,
        proto,
        src: v4_to_addr([ip[12], ip[13], ip[14], ip[15]]),
        dst: v4_to_addr([ip[16], ip[17], ip[18], ip[19]]),
        sport: u16::from_be_bytes([ip[20], ip[21]]),
        dport: u16::from_be_bytes([ip[22], ip[23]]),
        tcp_flags,
        icmp_type: 0,
        icmp_code: 0,
    })
}

/// A MAC address as the low 48 bits of a little-endian word: the first 8 bytes of a frame
/// read as `u64::from_le_bytes`, masked to 48 bits, equal this for their destination MAC.
#[inline(always)]
pub(super) fn mac_word(m: &[u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

/// Pass 1 of a burst: the express key of each frame, else its full parse into `pre`; the
/// 5-tuple hash of every TCP/UDP packet, its index line prefetched. Returns the burst's
/// bytes. Out of line with the table and the arrays as separate arguments, so the compiler
/// may keep the table's fields in registers across the burst.
#[inline(never)]
pub(super) fn parse_pass<B: Packet>(
    flows: &FlowTable,
    rx: &[B],
    lanes: &mut [Lane],
    pre: &mut [Result<Parsed, parse::ParseError>],
) -> u64 {
    let mut bytes = 0u64;
    for ((pkt, lane), r) in rx.iter().zip(lanes.iter_mut()).zip(pre.iter_mut()) {
        let d = pkt.data();
        bytes += d.len() as u64;
        // Each family hashes its own key (an IPv4 key's high address bits are constants).
        let (l3, h) = if let Some((l3, key)) = express_key4(d) {
            lane_of::<false>(flows, d, l3, &key, r)
        } else if let Some((l3, key)) = express_key6(d) {
            lane_of::<true>(flows, d, l3, &key, r)
        } else {
            parse::parse_into(d, r);
            match &*r {
                Ok(p) if p.proto == PROTO_TCP || p.proto == PROTO_UDP => (0, flows.hash(&flow_key(p))),
                _ => {
                    *lane = Lane { h: 0, hint: NONE, l3: 0 };
                    continue;
                }
            }
        };
        flows.prefetch(h);
        *lane = Lane { h, hint: NONE, l3 };
    }
    bytes
}

/// Pass 1 of a frame the express parser took (header at `l3`, key `key`): the lane's
/// [`Lane::l3`] (the offset, with [`LANE_IS_V6`] for IPv6) and the hash, or, for a SYN, FIN
/// or RST, which changes TCP state and so is not the lane's, its full parse in `r` and
/// (0, hash): pass 3 does not look at it twice.
#[inline(always)]
fn lane_of<const V6: bool>(
    flows: &FlowTable,
    d: &[u8],
    l3: u8,
    key: &FlowKey,
    r: &mut Result<Parsed, parse::ParseError>,
) -> (u8, u64) {
    let h = flows.hash(key);
    // Cannot panic: the express parser saw the whole TCP header.
    if key.proto == PROTO_TCP && d[l3 as usize + flags_at(V6)] & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        *r = express_parsed(d, l3 as usize, V6);
        (0, h)
    } else {
        (if V6 { l3 | LANE_IS_V6 } else { l3 }, h)
    }
}

/// Pass 2 of a burst: the candidate index word of each hashed packet
/// ([`FlowTable::candidate`]), its connection's line prefetched. Returns whether the lane
/// took IPv6 frames ([`LANE_IS_V6`]).
#[inline(never)]
pub(super) fn lookup_pass(flows: &FlowTable, lanes: &mut [Lane]) -> bool {
    let mut any = 0u8;
    for lane in lanes.iter_mut() {
        any |= lane.l3;
        if lane.h != 0 {
            // Only the index (prefetched by pass 1): the connection's line is prefetched
            // here and its key compared in pass 3, so no pass waits on a cache miss.
            let v = flows.candidate(lane.h);
            if v != NONE {
                flows.prefetch_conn(v >> 1);
            }
            lane.hint = v;
        }
    }
    any & LANE_IS_V6 != 0
}

/// What [`Worker::express`] made of a packet.
pub(super) enum Express {
    /// Rewritten and waiting on this transmit queue.
    Tx(usize),
    /// Untouched, the candidate word confirmed as the packet's connection (the general path
    /// need not look it up again).
    Confirmed,
    /// Untouched, the candidate not confirmed.
    Unconfirmed,
}

impl<Q: BufAlloc> Worker<Q> {
    /// Pass 3 of an express packet whose pass 2 found candidate `lane.hint`: the transmit
    /// queue it now waits for (rewritten, the connection's state, expiry and counters
    /// updated), or, the packet and every state untouched, when it is not the lane's (see
    /// the module docs), whether the candidate is its connection: the general path takes
    /// it then, without a second key compare when it is.
    ///
    /// `V6`: the lane's family ([`LANE_IS_V6`]), a constant so that each family's instance reads
    /// its own header with no test of the other's.
    #[inline(always)]
    pub(super) fn express<const V6: bool>(&mut self, my_mac: u64, lane: Lane, pkt: &mut Q::Buf) -> Express {
        let v = lane.hint;
        let l3 = lane.l3();
        let d = pkt.data_mut();
        let len = d.len() as u64;
        // Pass 1 saw these bytes (`LANE_V4` or `LANE_V6` of them); nothing wrote the frame
        // since. The 5-tuple, the IP packet's length, its TTL / hop limit and a TCP
        // segment's sequence number (of a UDP datagram: its length and checksum, unused).
        let (key, total, ttl, seq) = if V6 {
            let Some(Ok::<&[u8; LANE_V6], _>(ip)) = d.get(l3..l3 + LANE_V6).map(|s| s.try_into()) else {
                return Express::Unconfirmed;
            };
            let (src, dst) = v6_addrs(ip);
            let key = FlowKey {
                src: v6_to_addr(src),
                dst: v6_to_addr(dst),
                sport: u16::from_be_bytes([ip[40], ip[41]]),
                dport: u16::from_be_bytes([ip[42], ip[43]]),
                proto: ip[6],
            };
            (
                key,
                40 + u16::from_be_bytes([ip[4], ip[5]]) as usize,
                ip[7],
                u32::from_be_bytes([ip[44], ip[45], ip[46], ip[47]]),
            )
        } else {
            let Some(Ok::<&[u8; LANE_V4], _>(ip)) = d.get(l3..l3 + LANE_V4).map(|s| s.try_into()) else {
                return Express::Unconfirmed;
            };
            let key = FlowKey {
                src: v4_to_addr([ip[12], ip[13], ip[14], ip[15]]),
                dst: v4_to_addr([ip[16], ip[17], ip[18], ip[19]]),
                sport: u16::from_be_bytes([ip[20], ip[21]]),
                dport: u16::from_be_bytes([ip[22], ip[23]]),
                proto: ip[9],
            };
            (
                key,
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                ip[8],
                u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]),
            )
        };
        let proto = key.proto;
        // Pass 1 gave the lane no SYN, FIN or RST (`parse_pass`).
        debug_assert!(
            proto != PROTO_TCP || d.get(l3 + flags_at(V6)).is_some_and(|f| f & (TCP_SYN | TCP_FIN | TCP_RST) == 0)
        );
        if !self.flows.word_matches(v, &key) {
            return Express::Unconfirmed;
        }
        let idx = v >> 1;
        let dir = if v & 1 == 0 { Dir::In } else { Dir::Out };
        // The destination MAC: ours if multicast/broadcast or the receiving interface's
        // (`my_mac`, see `mac_word`).
        let Some(Ok::<&[u8; 8], _>(head)) = d.get(..8).map(|s| s.try_into()) else {
            return Express::Confirmed;
        };
        let dst = u64::from_le_bytes(*head) & 0xffff_ffff_ffff;
        let ours = dst & 1 == 1 || dst == my_mac;
        let c = self.flows.get(idx);
        if !ours
            || c.expired(self.now)
            || (proto == PROTO_TCP && c.state != TcpState::Established)
            || c.flags & (F_SYNCED | F_ALG | F_SYNPROXY | F_PPROTO | F_XLAT) != 0
            || c.fwd == Forward::Tunnel
            || ttl <= 1
        {
            return Express::Confirmed;
        }
        // The next hop: its Ethernet header and its interface's MTU cached for this
        // neighbour generation (so its MAC is known), the MTU not exceeded.
        let h = if dir == Dir::In { c.hop_in } else { c.hop_out };
        let hop = self.flows.hop_mac(h);
        if hop.mac_gen != self.neigh.gen || total > hop.mtu as usize {
            return Express::Confirmed;
        }
        // Committed: what the general path does of it (`track` without a state change, that
        // is `account`; `rewrite_conn`; the Ethernet header).
        let p = Parsed {
            l3,
            l4: l3 + if V6 { 40 } else { 20 },
            end: l3 + total,
            v6: V6,
            proto,
            src: key.src,
            dst: key.dst,
            sport: key.sport,
            dport: key.dport,
            ..Parsed::default()
        };
        let la = if c.fwd == Forward::Fnat { self.flows.laddr_of(c) } else { 0 };
        let far = if dir == Dir::In { self.flows.rs_of(c) } else { self.flows.vip_of(c) };
        let c = self.flows.get_mut(idx);
        // ESTABLISHED (or UDP) with no SYN, FIN or RST: no state change, only the accounts.
        // A client segment in the window moves its connection's sequence mark (`track`).
        if proto == PROTO_TCP && dir == Dir::In && c.client_seq_ok(seq) {
            c.note_client_seq(seq);
        }
        let wrapped =
            account(c, dir, len, self.now, &self.timeouts, &mut self.acc, &self.acc_base, &mut self.acc_dirty);
        if c.fwd != Forward::Dr {
            // Cannot fail: the TTL and the headers were checked above.
            if rewrite_conn(c, la, far, dir, d, &p).is_err() {
                return Express::Confirmed;
            }
        }
        if wrapped {
            self.flows.carry_pkt(idx, dir == Dir::In);
        }
        // Cannot panic: the frame holds at least `l3 + 40` bytes (checked above).
        d[..12].copy_from_slice(&hop.hdr);
        Express::Tx(hop.iface as usize)
    }

    /// Pass 3 of an IPv6 packet the express parser took: [`Worker::express`], else (or
    /// with the lane off) its full parse into `pre` and the general path. Only in the
    /// loop of bursts with IPv6 frames for the lane (`Worker::packet_pass`).
    #[inline(always)]
    pub(super) fn lane6(
        &mut self,
        iface: usize,
        mut pkt: Q::Buf,
        lane: Lane,
        lane_on: bool,
        my_mac: u64,
        pre: &mut Result<Parsed, parse::ParseError>,
    ) {
        let mut confirmed = false;
        if lane.hint != NONE && lane_on {
            match self.express::<true>(my_mac, lane, &mut pkt) {
                Express::Tx(q) => {
                    self.tx[q].push(pkt);
                    return;
                }
                Express::Confirmed => confirmed = true,
                Express::Unconfirmed => {}
            }
        }
        *pre = express_parsed(pkt.data(), lane.l3(), true);
        self.process_parsed(iface, pkt, false, pre, lane.h, lane.hint, confirmed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{tcp4, tcp6, udp4, udp6, vlan};
    use proptest::prelude::*;

    /// What `lane_key` must say of `d`: the full fast parser's key, offset and family for
    /// a TCP/UDP frame holding the bytes the lane reads, else nothing.
    fn agrees(d: &[u8]) -> Result<(), TestCaseError> {
        let want = parse::parse_fast(d)
            .filter(|p| {
                let need = if p.v6 { LANE_V6 } else { LANE_V4 };
                !p.arp && (p.proto == PROTO_TCP || p.proto == PROTO_UDP) && p.l3 + need <= d.len()
            })
            .map(|p| (p.l3 as u8, p.v6, flow_key(&p)));
        prop_assert_eq!(lane_key(d), want);
        if let Some((l3, v6, _)) = lane_key(d) {
            prop_assert_eq!(express_parsed(d, l3 as usize, v6), Ok(parse::parse_fast(d).expect("taken")));
        }
        Ok(())
    }

    fn corpus() -> Vec<Vec<u8>> {
        let t = tcp4([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, TCP_SYN, 1, 0, b"payload");
        let u = udp4([10, 0, 0, 1], 53, [10, 0, 0, 2], 5353, b"q");
        let t6 = tcp6([0xfd; 16], 1, [0xfe; 16], 2, TCP_SYN, 1, 0, b"");
        let u6 = udp6([0xfd; 16], 53, [0xfe; 16], 5353, &[0u8; 12]);
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        vec![
            t.clone(),
            vlan(&t, 5),
            u.clone(),
            vlan(&udp4([10, 0, 0, 1], 53, [10, 0, 0, 2], 5353, &[0u8; 40]), 9),
            t6.clone(),
            vlan(&u, 9),
            vlan(&t6, 7),
            u6.clone(),
            udp6([0xfd; 16], 53, [0xfe; 16], 5353, b"q"),
            tcp6(mapped, 1, [0xfe; 16], 2, TCP_ACK, 1, 0, b""),
        ]
    }

    #[test]
    fn takes_the_common_frames() {
        let c = corpus();
        assert_eq!(lane_key(&c[0]).map(|k| (k.0, k.1)), Some((14, false)));
        assert_eq!(lane_key(&c[1]).map(|k| (k.0, k.1)), Some((18, false)));
        assert_eq!(lane_key(&c[3]).map(|k| (k.0, k.1)), Some((18, false)));
        assert_eq!(lane_key(&c[4]).map(|k| (k.0, k.1)), Some((14, true)));
        assert_eq!(lane_key(&c[5]), None, "a frame shorter than the lane reads takes the general path");
        assert_eq!(lane_key(&c[6]).map(|k| (k.0, k.1)), Some((18, true)));
        assert_eq!(lane_key(&c[7]).map(|k| (k.0, k.1)), Some((14, true)));
        assert_eq!(lane_key(&c[8]), None, "an IPv6 frame shorter than the lane reads");
        assert_eq!(lane_key(&c[9]), None, "an IPv4-mapped address takes the general path (which refuses it)");
        for d in &c {
            agrees(d).unwrap();
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_fast_parser_on_mutated_frames(
            which in 0usize..10, at in 0usize..100, b in any::<u8>(), cut in 0usize..110,
        ) {
            let mut d = corpus()[which].clone();
            if let Some(x) = d.get_mut(at) {
                *x = b;
            }
            d.truncate(cut.max(1));
            agrees(&d)?;
            agrees(&corpus()[which][..cut.min(corpus()[which].len())])?;
        }

        #[test]
        fn agrees_on_random_bytes(mut d in proptest::collection::vec(any::<u8>(), 0..120), v in 0u8..5) {
            // Steer most cases into IPv4 or IPv6 TCP/UDP so the checks past the EtherType
            // are exercised.
            if (1..3).contains(&v) && d.len() > 24 {
                d[12] = 0x08;
                d[13] = 0x00;
                d[14] = 0x45;
                d[23] = if v == 1 { PROTO_TCP } else { PROTO_UDP };
            }
            if v >= 3 && d.len() > 24 {
                d[12] = 0x86;
                d[13] = 0xdd;
                d[14] = 0x60 | (d[14] & 0x0f);
                d[20] = if v == 3 { PROTO_TCP } else { PROTO_UDP };
                // A payload length that fits the frame half of the time.
                if d[0] & 1 == 0 {
                    let plen = d.len().saturating_sub(54) as u16;
                    d[18..20].copy_from_slice(&plen.to_be_bytes());
                }
            }
            agrees(&d)?;
        }
    }
}
