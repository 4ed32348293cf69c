//! Internet checksum helpers: full computation for packets the engine builds
//! and RFC 1624 incremental updates for packets it rewrites.
//!
//! An incremental update is kept as a ones-complement *delta*: the sum of
//! `~old + new` over every 16-bit word that changes. A flow precomputes its
//! delta once, so the per-packet cost is one add and one fold
//! (`HC' = ~(~HC + delta)`, RFC 1624 eqn. 3).

use crate::wire::parse::{Parsed, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::wire::view::{Ipv4, Ipv6, Truncated};

/// RFC 1624 delta of decrementing the IPv4 TTL by one (the TTL/protocol
/// word loses 0x0100): ~old + new = ~0x0100 = 0xfeff.
pub const TTL_DELTA: u32 = 0xfeff;

/// Fold a 32-bit ones-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Ones-complement sum of `data` (big-endian 16-bit words), added to `init`;
/// the result is folded to at most 16 bits (0 only for all-zero input).
///
/// Sums 64-bit words with an end-around carry (one add and one add-with-carry per 8
/// bytes), read in the machine's byte order and swapped once at the end: the ones-complement
/// sum does not depend on byte order (RFC 1071 section 2, "byte order independence") and,
/// as 2^16 = 1 modulo 0xffff, folding the wide sum gives the 16-bit one ("deferred
/// carries"). A tail shorter than 8 bytes keeps each byte's place in its 16-bit word (the
/// words start at even offsets), so odd lengths need nothing else. The protocol checks of
/// neighbour discovery and the answers built per packet (a solicitation's verification and
/// its advertisement) pay for this sum on every flood packet.
pub fn sum(data: &[u8], init: u32) -> u32 {
    finish_wide(wide(data, 0), init)
}

/// One 64-bit word added with an end-around carry.
#[inline(always)]
fn add_carry(s: u64, w: u64) -> u64 {
    let (r, c) = s.overflowing_add(w);
    r + c as u64
}

/// The unfolded sum of [`sum`] (machine byte order), `data` added to accumulator `s`: parts
/// that each start at an even offset of the checksummed bytes (a pseudo-header's
/// addresses) are summed into one accumulator and folded once ([`finish_wide`]).
#[inline(always)]
fn wide(data: &[u8], mut s: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Cannot fail: chunks_exact(8).
        s = add_carry(s, u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])));
    }
    let mut r = chunks.remainder();
    // At most 0xffff_ffff + 0xffff + 0xffff: no overflow.
    let mut t: u64 = 0;
    if let Some((w, rest)) = r.split_first_chunk::<4>() {
        t += u32::from_ne_bytes(*w) as u64;
        r = rest;
    }
    if let Some((w, rest)) = r.split_first_chunk::<2>() {
        t += u16::from_ne_bytes(*w) as u64;
        r = rest;
    }
    if let Some(&b) = r.first() {
        // The high byte of its big-endian word: first in memory.
        t += u16::from_ne_bytes([b, 0]) as u64;
    }
    add_carry(s, t)
}

/// [`wide`]'s accumulator folded to 16 bits, in network byte order, plus `init` (any
/// 32-bit accumulator): the result of [`sum`].
#[inline(always)]
fn finish_wide(s: u64, init: u32) -> u32 {
    // 64 -> 32 -> 16 bits with end-around carries (0 stays 0, nothing else becomes 0).
    let (lo, c) = (s as u32).overflowing_add((s >> 32) as u32);
    let s32 = lo + c as u32;
    let (lo, c) = (s32 as u16).overflowing_add((s32 >> 16) as u16);
    let native = lo + c as u16;
    let be = u16::from_be_bytes(native.to_ne_bytes()) as u32;
    // `init` folded to 16 bits first, so one fold of the total suffices.
    let s = be + fold(init) as u32;
    (s & 0xffff) + (s >> 16)
}

/// Final checksum of `data` starting from accumulator `init`.
#[inline]
pub fn finish(data: &[u8], init: u32) -> u16 {
    !fold(sum(data, init))
}

/// Delta accumulator for replacing the 16-bit words of `old` by `new`
/// (equal lengths, even).
#[inline]
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    let mut d: u32 = 0;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        d += (!u16::from_be_bytes([o[0], o[1]])) as u32;
        d += u16::from_be_bytes([n[0], n[1]]) as u32;
    }
    fold(d) as u32
}

/// Delta for one 16-bit word.
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// [`delta`] for an address held as a 128-bit integer (`wire::parse::Addr`,
/// IPv4 in the low 32 bits): its last 2 words (`v4`) or all 8, without
/// going through bytes.
#[inline]
pub fn delta_addr(old: u128, new: u128, v4: bool) -> u32 {
    fold(delta_addr_unfolded(old, new, v4)) as u32
}

/// [`delta_addr`] before the fold: at most 16 * 0xffff, for summing further
/// deltas into before one fold (`fold(a + b)` equals `add(fold(a), fold(b))`:
/// both are the ones-complement sum, 0 only for an all-zero input).
#[inline]
pub fn delta_addr_unfolded(old: u128, new: u128, v4: bool) -> u32 {
    // Per 32-bit word: ~hi16 + ~lo16 of the old, hi16 + lo16 of the new
    // (the 16-bit words of `delta`, summed in another order).
    #[inline(always)]
    fn word(o: u32, n: u32) -> u32 {
        let o = !o;
        (o >> 16) + (o & 0xffff) + (n >> 16) + (n & 0xffff)
    }
    if v4 {
        word(old as u32, new as u32)
    } else {
        let (o, n) = ((old >> 64) as u64, (new >> 64) as u64);
        let (p, q) = (old as u64, new as u64);
        word((o >> 32) as u32, (n >> 32) as u32)
            + word(o as u32, n as u32)
            + word((p >> 32) as u32, (q >> 32) as u32)
            + word(p as u32, q as u32)
    }
}

/// Combine two deltas.
#[inline(always)]
pub fn add(a: u32, b: u32) -> u32 {
    fold(a + b) as u32
}

/// Apply a delta to a checksum field value (RFC 1624 eqn. 3).
#[inline(always)]
pub fn apply(check: u16, delta: u32) -> u16 {
    !fold((!check) as u32 + delta)
}

/// Apply a folded (16-bit) delta to a checksum field value: as `apply`, with one fold
/// (`~check + delta` <= 0x1fffe, whose fold fits 16 bits).
#[inline(always)]
pub fn apply16(check: u16, delta: u16) -> u16 {
    let s = (!check) as u32 + delta as u32;
    !((s & 0xffff) + (s >> 16)) as u16
}

/// Pseudo-header sum for IPv4 TCP/UDP.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let mut s = sum(&src, 0);
    s = sum(&dst, s);
    s + proto as u32 + len as u32
}

/// Pseudo-header sum for IPv6 upper layers.
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u32 {
    // Both addresses in one accumulator, one fold.
    let s = finish_wide(wide(dst, wide(src, 0)), 0);
    fold(s + (len >> 16) + (len & 0xffff) + proto as u32) as u32
}

/// The checksum of IPv6 upper-layer message `data` (its checksum field zero, or as received
/// to verify it: then 0 means right) from `src` to `dst`: [`finish`] over the message with
/// [`pseudo_v6`]'s sum, but the addresses and the message in one accumulator, folded once
/// (the pseudo-header's own fold and a second pass through [`sum`] saved). A message of the
/// usual neighbour discovery size (32 bytes: header, target, one link-layer address option)
/// is summed straight, without [`sum`]'s loop and tail: every solicitation of a flood is
/// verified and answered with it.
#[inline]
pub fn finish_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, data: &[u8]) -> u16 {
    let len = data.len() as u32;
    let s = wide(dst, wide(src, 0));
    let s = match <&[u8; 32]>::try_from(data) {
        Ok(d) => wide(d, s),
        Err(_) => wide(data, s),
    };
    !fold(finish_wide(s, (len >> 16) + (len & 0xffff) + proto as u32))
}

/// Does the IP header at `l3` of frame `d` hold a valid header checksum (IPv4: the ones-
/// complement sum over the header, options included, is all ones; IPv6 has none: true)? What
/// Linux's `ip_rcv` checks before anything else (a failure counts `InCsumErrors`).
///
/// The engine checks it only where it builds a header (or a packet) anew from a received
/// one's fields and so computes a fresh checksum ([`fill_ipv4`]): a header corrupted on the
/// wire would go out laundered, valid again with whatever its addresses and lengths became.
/// Where it only rewrites a header ([`apply`], RFC 1624) the corruption stays and the next
/// hop drops the packet, as behind any router forwarding with incremental updates: the
/// established path does not pay for the check.
pub fn ip_header_ok(d: &[u8], l3: usize, v6: bool) -> bool {
    if v6 {
        return true;
    }
    let Ok(h) = Ipv4::at(d, l3) else { return false };
    let ihl = h.header_len();
    ihl >= 20 && d.get(l3..l3 + ihl).is_some_and(|b| fold(sum(b, 0)) == 0xffff)
}

/// Recompute the IPv4 header checksum of the header at `l3` (options included).
pub fn fill_ipv4(d: &mut [u8], l3: usize) -> Result<(), Truncated> {
    let mut h = Ipv4::at_mut(d, l3)?;
    let ihl = h.header_len().max(20);
    h.set_checksum(0);
    let c = finish(d.get(l3..l3 + ihl).ok_or(Truncated)?, 0);
    Ipv4::at_mut(d, l3)?.set_checksum(c);
    Ok(())
}

/// Where the transport checksum of frame `d` parsed as `p` sits in its header (TCP, UDP, ICMP,
/// ICMPv6) and the sum its pseudo-header adds (none for ICMPv4). `None`: another protocol,
/// without a checksum the engine knows.
fn l4_layout(d: &[u8], p: &Parsed) -> Result<Option<(usize, u32)>, Truncated> {
    let off = match p.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        PROTO_ICMP | PROTO_ICMPV6 => 2,
        _ => return Ok(None),
    };
    let len = p.end.checked_sub(p.l4).ok_or(Truncated)?;
    let pseudo = if p.proto == PROTO_ICMP {
        0
    } else if p.v6 {
        let h = Ipv6::at(d, p.l3)?;
        pseudo_v6(&h.src(), &h.dst(), p.proto, len as u32)
    } else {
        let h = Ipv4::at(d, p.l3)?;
        pseudo_v4(h.src(), h.dst(), p.proto, len as u16)
    };
    Ok(Some((off, pseudo)))
}

/// Recompute the transport checksum (TCP, UDP, ICMP, ICMPv6) of frame `d` parsed as `p`
/// from scratch (a UDP result of 0 is sent as 0xffff). Another protocol: nothing to do.
pub fn fill_l4(d: &mut [u8], p: &Parsed) -> Result<(), Truncated> {
    let Some((off, pseudo)) = l4_layout(d, p)? else { return Ok(()) };
    let seg = d.get_mut(p.l4..p.end).ok_or(Truncated)?;
    let field = seg.get_mut(off..off + 2).ok_or(Truncated)?;
    field.fill(0);
    let mut c = finish(seg, pseudo);
    if p.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Does the transport checksum of frame `d` parsed as `p` verify: TCP and UDP over their
/// pseudo-header (IPv4 and IPv6), ICMPv4 over the message alone, ICMPv6 with its pseudo-header
/// (the ones-complement sum, checksum field included, is all ones)? A UDP checksum of 0 over
/// IPv4 means "none" (RFC 768) and passes; over IPv6 it is not allowed (RFC 8200 8.1) and
/// fails. Another protocol: true. What Linux checks before its connection tracking hands a
/// packet to NAT or a helper (`tcp_error`, `udp_error`, `icmp_error` with
/// `nf_conntrack_checksum`), and `icmp_reply` before it answers an echo request.
///
/// The counterpart of [`ip_header_ok`] for the transport layer, under the same rule: checked
/// only where the engine writes a segment or a message anew over received bytes and computes
/// its checksum from scratch ([`fill_l4`]; an FTP gateway rewrite, the PROXY protocol header's
/// segment, an echo reply, a translated ICMP error), where a corruption on the wire would
/// reach the peer's application as good data. Segments only rewritten ([`apply`]) keep a bad
/// checksum and the receiver drops them: the established path does not pay for a sum over
/// every payload.
pub fn l4_ok(d: &[u8], p: &Parsed) -> bool {
    let Ok(layout) = l4_layout(d, p) else { return false };
    let Some((off, pseudo)) = layout else { return true };
    let Some(seg) = d.get(p.l4..p.end) else { return false };
    let Some(field) = seg.get(off..off + 2) else { return false };
    if p.proto == PROTO_UDP && field == [0, 0] {
        return !p.v6;
    }
    fold(sum(seg, pseudo)) == 0xffff
}

/// Which of a received packet's checksums [`verify`] found failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// The IPv4 header checksum ([`ip_header_ok`]).
    IpHeader,
    /// The transport checksum ([`l4_ok`]).
    L4,
}

/// Both checks of a packet the engine writes anew, header and transport ([`fill_ipv4`] and
/// [`fill_l4`]): [`ip_header_ok`], then [`l4_ok`] (in Linux's order, `ip_rcv` before the
/// transport; a packet failing both counts as a bad header). The one gate for the paths that
/// check both; a path checking only one calls it alone.
#[inline]
pub fn verify(d: &[u8], p: &Parsed) -> Result<(), Bad> {
    if !ip_header_ok(d, p.l3, p.v6) {
        return Err(Bad::IpHeader);
    }
    if !l4_ok(d, p) {
        return Err(Bad::L4);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fold_suffices_for_a_folded_delta() {
        // Every checksum value against the deltas at the edges and a spread between.
        for check in 0..=u16::MAX {
            for delta in [0u16, 1, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xfeff, 0xfffe, 0xffff, check, !check] {
                assert_eq!(apply16(check, delta), apply(check, delta as u32), "{check:#x} {delta:#x}");
            }
        }
    }

    #[test]
    fn delta_addr_is_delta_over_the_bytes() {
        let pairs: [(u128, u128); 4] = [
            (0xffff_0a00_0164, 0xffff_0a00_0202),
            (0xffff_ffff_ffff, 0xffff_0000_0001),
            (0x2001_0db8_0000_0000_0000_0000_0000_0001, 0x2001_0db8_0000_0000_0000_0000_00ff_fe01),
            (u128::MAX, 1),
        ];
        for (a, b) in pairs {
            let (x, y) = (a.to_be_bytes(), b.to_be_bytes());
            assert_eq!(delta_addr(a, b, true), delta(&x[12..], &y[12..]), "{a:x} -> {b:x} (v4)");
            assert_eq!(delta_addr(a, b, false), delta(&x, &y), "{a:x} -> {b:x}");
            // One fold over a sum of unfolded deltas is the sum of the folded ones.
            let (u, w) = (delta_addr_unfolded(a, b, false), delta16(0x1234, 0xfedc));
            assert_eq!(fold(u + w) as u32, add(delta(&x, &y), w));
            assert_eq!(fold(u + 0xfeff) as u32, add(delta_addr(a, b, false), 0xfeff));
        }
    }

    #[test]
    fn a_header_checksum_is_verified_over_the_whole_header() {
        use crate::tools::testpkt::{tcp4, tcp6};
        let f = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, 0x02, 1, 0, b"");
        assert!(ip_header_ok(&f, 14, false));
        // Any one bit flipped in the header (checksum field included) is caught.
        for i in 14..34 {
            for b in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << b;
                assert!(!ip_header_ok(&g, 14, false), "byte {i} bit {b}");
            }
        }
        // Options are covered: a 24-byte header, its checksum over all of it.
        let mut o = f.clone();
        o.splice(34..34, [1, 1, 1, 0]);
        o[14] = 0x46;
        fill_ipv4(&mut o, 14).unwrap();
        assert!(ip_header_ok(&o, 14, false));
        o[36] ^= 0x80;
        assert!(!ip_header_ok(&o, 14, false), "an option byte");
        // A header length below 20 or past the frame, a frame too short: not valid.
        let mut s = f.clone();
        s[14] = 0x44;
        assert!(!ip_header_ok(&s, 14, false));
        let mut l = f.clone();
        l[14] = 0x4f;
        assert!(!ip_header_ok(&l, 14, false));
        assert!(!ip_header_ok(&f[..30], 14, false));
        // IPv6 has no header checksum.
        assert!(ip_header_ok(&tcp6([0xfd; 16], 1, [0xfe; 16], 2, 0x02, 1, 0, b""), 14, true));
    }

    #[test]
    fn a_transport_checksum_is_verified_over_segment_and_pseudo_header() {
        use crate::tools::testpkt::{icmp6_error, ping4, tcp4, tcp6, udp4, udp6};
        use crate::wire::parse::parse;
        let frames = [
            tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 21, 0x18, 1, 2, b"PORT 10,0,1,2,156,64\r\n"),
            tcp6([0xfd; 16], 40000, [0xfe; 16], 21, 0x18, 1, 2, b"odd"),
            udp4([10, 0, 1, 2], 5353, [10, 0, 1, 100], 53, b"query"),
            udp6([0xfd; 16], 5353, [0xfe; 16], 53, b"query"),
            ping4([10, 0, 1, 2], [10, 0, 1, 100], 7, 1),
            icmp6_error([0xfd; 16], [0xfe; 16], 1, 4, 0, &udp6([0xfe; 16], 53, [0xfd; 16], 5353, b"x")),
        ];
        for f in frames {
            let p = parse(&f).unwrap();
            assert!(l4_ok(&f, &p), "proto {}", p.proto);
            // Any one bit flipped in the segment (checksum field included) is caught...
            for i in p.l4..p.end {
                for b in 0..8 {
                    let mut g = f.clone();
                    g[i] ^= 1 << b;
                    // (Unless it left an IPv4 UDP checksum 0: none.)
                    let none = p.proto == crate::wire::parse::PROTO_UDP && !p.v6 && g[p.l4 + 6..p.l4 + 8] == [0, 0];
                    assert_eq!(l4_ok(&g, &p), none, "proto {} byte {i} bit {b}", p.proto);
                }
            }
            // ... and in the addresses of the pseudo-header, but for ICMPv4, which has none.
            let mut g = f.clone();
            g[p.l4 - 1] ^= 0x10;
            assert_eq!(l4_ok(&g, &p), p.proto == crate::wire::parse::PROTO_ICMP, "proto {}", p.proto);
            // A length past the frame is not valid.
            assert!(!l4_ok(&f[..f.len() - 1], &p));
        }
        // UDP without a checksum: "none" over IPv4, not allowed over IPv6.
        let mut u4 = udp4([10, 0, 1, 2], 5353, [10, 0, 1, 100], 53, b"query");
        u4[14 + 20 + 6..14 + 20 + 8].fill(0);
        assert!(l4_ok(&u4, &parse(&u4).unwrap()));
        let mut u6 = udp6([0xfd; 16], 5353, [0xfe; 16], 53, b"query");
        u6[14 + 40 + 6..14 + 40 + 8].fill(0);
        assert!(!l4_ok(&u6, &parse(&u6).unwrap()));
    }

    #[test]
    fn verify_checks_the_header_first_then_the_transport() {
        use crate::tools::testpkt::{bad_ip_csum, corrupt, tcp4};
        use crate::wire::parse::parse;
        let f = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, 0x18, 1, 2, b"data");
        let p = parse(&f).unwrap();
        assert_eq!(verify(&f, &p), Ok(()));
        let l4 = corrupt(f.clone(), f.len() - 1, 0x01);
        assert_eq!(verify(&l4, &p), Err(Bad::L4));
        assert_eq!(verify(&bad_ip_csum(f.clone()), &p), Err(Bad::IpHeader));
        assert_eq!(verify(&bad_ip_csum(l4), &p), Err(Bad::IpHeader), "both: the header's");
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 -> sum ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(finish(&d, 0), !0xddf2);
    }

    #[test]
    fn incremental_equals_recompute() {
        let mut data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        let check = finish(&data, 0);
        let old = data[10..14].to_vec();
        let new = [0xc0, 0xa8, 0x01, 0x02];
        data[10..14].copy_from_slice(&new);
        let inc = apply(check, delta(&old, &new));
        assert_eq!(inc, finish(&data, 0));
    }

    #[test]
    fn odd_length() {
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[0x12, 0x34, 0xab], 0)), 0x12 * 256 + 0x34 + 0xab00);
    }

    /// The 16-bit-word sum of RFC 1071, one word at a time.
    fn sum16(data: &[u8], init: u32) -> u16 {
        let mut s = init as u64;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 { (*b as u64) << 8 } else { *b as u64 };
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    proptest::proptest! {
        #[test]
        fn wide_sum_equals_word_sum_at_any_alignment(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..1600),
            skip in 0usize..16,
            init in proptest::num::u32::ANY,
        ) {
            // A slice starting at any address (odd ones included) and of any length (the
            // 8-byte words, then the 4-, 2- and 1-byte tails).
            let d = data.get(skip..).unwrap_or(&[]);
            proptest::prop_assert_eq!(sum(d, init), sum16(d, init) as u32);
            proptest::prop_assert_eq!(finish(d, init), !sum16(d, init));
        }

        #[test]
        fn pseudo_header_sum_equals_word_sum(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) {
            // RFC 8200 8.1: source, destination, 32-bit length, three zero bytes and the
            // next header, as one run of big-endian words.
            let mut ph = Vec::new();
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&len.to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, proto]);
            proptest::prop_assert_eq!(pseudo_v6(&src, &dst, proto, len), sum16(&ph, 0) as u32);
        }

        #[test]
        fn finish_v6_equals_the_pseudo_header_then_the_message(
            src: [u8; 16],
            dst: [u8; 16],
            proto: u8,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            ones in proptest::bool::ANY,
        ) {
            // Any length (32, the straight path, included), and all-ones words (a carry out
            // of every add).
            let data = if ones { vec![0xff; data.len()] } else { data };
            let want = finish(&data, pseudo_v6(&src, &dst, proto, data.len() as u32));
            proptest::prop_assert_eq!(finish_v6(&src, &dst, proto, &data), want);
            let d32: Vec<u8> = data.iter().copied().cycle().take(32).collect();
            if d32.len() == 32 {
                let want = finish(&d32, pseudo_v6(&src, &dst, proto, 32));
                proptest::prop_assert_eq!(finish_v6(&src, &dst, proto, &d32), want);
            }
        }

        #[test]
        fn wide_sum_of_all_ones_and_zeros(len in 0usize..64, ones in proptest::bool::ANY, init in 0u32..3) {
            // The edges of the end-around carry: every word 0xffff (a carry out of every
            // add), or all zero (0 only for an all-zero input and init).
            let d = vec![if ones { 0xff } else { 0 }; len];
            proptest::prop_assert_eq!(sum(&d, init), sum16(&d, init) as u32);
        }

        #[test]
        fn wide_sum_equals_word_sum(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200), init in 0u32..0x2_0000) {
            proptest::prop_assert_eq!(fold(sum(&data, init)), sum16(&data, init));
            proptest::prop_assert!(sum(&data, init) <= 0xffff);
        }
    }
}
