//! Full NAT across address families: an IPv6 client reaching IPv4 real
//! servers through an IPv6 VIP (IPv4 local addresses), and the reverse.
//!
//! The connection is an ordinary full-NAT connection whose two sides are of
//! different families (`F_XLAT`); every packet of it has its IP header
//! translated per RFC 7915 (the stateless IP/ICMP translation algorithm)
//! while its addresses and ports are replaced as for full NAT:
//!
//! - IPv6 -> IPv4: traffic class -> TOS, hop limit - 1 -> TTL, payload
//!   length + 20 -> total length, identification 0 with DF set (RFC 7915
//!   5.1), the header checksum computed. A packet with extension headers is
//!   not translated (`xlat_unsupported`).
//! - IPv4 -> IPv6: TOS -> traffic class, flow label 0, TTL - 1 -> hop limit,
//!   total length - IHL -> payload length; IPv4 options are dropped (4.1).
//!   Fragments of a translated connection are dropped and counted
//!   (`xlat_unsupported`): the engine forwards fragments unreassembled and
//!   would need an IPv6 fragment header for them.
//! - TCP / UDP checksums are adjusted incrementally for the changed
//!   pseudo-header (addresses) and ports, so a corrupt segment stays corrupt;
//!   an IPv4 UDP datagram without a checksum (0) gets one computed, IPv6
//!   requires it (4.5).
//! - A SYN that becomes IPv6 has its MSS lowered by 20 (the IPv6 header is
//!   20 bytes longer), and every translated SYN's MSS is clamped to the
//!   egress MTU, so neither end sends segments that outgrow the other side.
//!
//! The frame shrinks (IPv6 -> IPv4) or grows (IPv4 -> IPv6) by 20 bytes at
//! the front: the Ethernet header moves within the buffer's headroom
//! ([`crate::port::HEADROOM`]), the payload is not copied.

use crate::pipeline::counters::DropReason;
use crate::port::Packet;
use crate::wire::csum;
use crate::wire::parse::{addr_is_v4, addr_v4_bytes, addr_v6_bytes, Addr, Parsed, PROTO_TCP, PROTO_UDP, TCP_SYN};

/// Length of the IP packet `p` once translated to the other family.
#[inline]
pub fn translated_len(p: &Parsed) -> usize {
    (p.end - p.l4) + if p.v6 { 20 } else { 40 }
}

/// Translate the TCP/UDP packet `p` in `pkt` to the other family, with
/// source `src:sport` and destination `dst:dport` (both of the new family),
/// TTL / hop limit decremented. `mtu` is the egress MTU (for the MSS
/// clamp; the caller checked [`translated_len`] against it). On error the
/// packet is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn translate<B: Packet>(
    pkt: &mut B,
    p: &Parsed,
    src: Addr,
    sport: u16,
    dst: Addr,
    dport: u16,
    mtu: usize,
) -> Result<(), DropReason> {
    let to_v4 = addr_is_v4(dst);
    if to_v4 != p.v6 || addr_is_v4(src) != to_v4 {
        // Not a translation: same family in and out (or mixed new addresses).
        return Err(DropReason::XlatUnsupported);
    }
    if p.proto != PROTO_TCP && p.proto != PROTO_UDP {
        return Err(DropReason::XlatUnsupported);
    }
    let (l3, l4, end) = (p.l3, p.l4, p.end);
    let hl = l4 - l3;
    if pkt.len() < end || (p.v6 && hl != 40) {
        // IPv6 extension headers, a fragment header among them (RFC 7915 5.1 would translate
        // some; the engine does not).
        return Err(DropReason::XlatUnsupported);
    }
    if !p.v6 && u16::from_be_bytes([pkt.data()[l3 + 6], pkt.data()[l3 + 7]]) & 0x3fff != 0 {
        // An IPv4 fragment: it would need an IPv6 fragment header (RFC 7915 4.1); not done.
        return Err(DropReason::XlatUnsupported);
    }
    let l4len = end - l4;
    let min = if p.proto == PROTO_TCP { 20 } else { 8 };
    if l4len < min {
        return Err(DropReason::Malformed);
    }
    // What the old header says, before anything moves.
    let d = pkt.data();
    let (tc, hop) = if p.v6 { ((d[l3] & 0x0f) << 4 | d[l3 + 1] >> 4, d[l3 + 7]) } else { (d[l3 + 1], d[l3 + 8]) };
    if hop <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // Checksum delta: the pseudo-header's addresses (length and protocol are the same
    // in both families) and the two ports.
    let old_addrs = if p.v6 { &d[l3 + 8..l3 + 40] } else { &d[l3 + 12..l3 + 20] };
    let (sb, db) = (addr_v6_bytes(src), addr_v6_bytes(dst));
    let from = if to_v4 { 12 } else { 0 };
    let new_sum = csum::sum(&db[from..], csum::sum(&sb[from..], 0));
    let mut delta = csum::add((!csum::fold(csum::sum(old_addrs, 0))) as u32, csum::fold(new_sum) as u32);
    let (osport, odport) = (u16::from_be_bytes([d[l4], d[l4 + 1]]), u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]));
    delta = csum::add(delta, csum::add(csum::delta16(osport, sport), csum::delta16(odport, dport)));
    let udp_zero = p.proto == PROTO_UDP && d[l4 + 6] == 0 && d[l4 + 7] == 0;
    // Drop Ethernet padding, then move the L2 header by the size difference.
    if !pkt.set_len(end) {
        return Err(DropReason::Malformed);
    }
    let new_hl = if to_v4 { 20 } else { 40 };
    if new_hl < hl {
        let cut = hl - new_hl;
        pkt.data_mut().copy_within(0..l3, cut);
        if !pkt.adj(cut) {
            return Err(DropReason::Malformed);
        }
    } else if new_hl > hl {
        let grow = new_hl - hl;
        if !pkt.prepend(grow) {
            return Err(DropReason::TooBig);
        }
        pkt.data_mut().copy_within(grow..grow + l3, 0);
    }
    // From here the new header lives at l3..l3 + new_hl, the transport header at l4n.
    let l4n = l3 + new_hl;
    let d = pkt.data_mut();
    if to_v4 {
        d[l3 - 2..l3].copy_from_slice(&[0x08, 0x00]);
        let h = &mut d[l3..l3 + 20];
        h[0] = 0x45;
        h[1] = tc;
        h[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&[0, 0]);
        h[6..8].copy_from_slice(&[0x40, 0]); // DF
        h[8] = hop - 1;
        h[9] = p.proto;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..16].copy_from_slice(&addr_v4_bytes(src));
        h[16..20].copy_from_slice(&addr_v4_bytes(dst));
        let c = csum::finish(h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        d[l3 - 2..l3].copy_from_slice(&[0x86, 0xdd]);
        let h = &mut d[l3..l3 + 40];
        h[0] = 0x60 | tc >> 4;
        h[1] = tc << 4;
        h[2..4].copy_from_slice(&[0, 0]);
        h[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        h[6] = p.proto;
        h[7] = hop - 1;
        h[8..24].copy_from_slice(&sb);
        h[24..40].copy_from_slice(&db);
    }
    d[l4n..l4n + 2].copy_from_slice(&sport.to_be_bytes());
    d[l4n + 2..l4n + 4].copy_from_slice(&dport.to_be_bytes());
    if p.proto == PROTO_TCP {
        if d[l4n + 13] & TCP_SYN != 0 {
            let off = ((d[l4n + 12] >> 4) as usize * 4).clamp(20, l4len);
            let opts = &mut d[l4n + 20..l4n + off];
            if let Some(m) = crate::wire::tcpopt::mss(opts) {
                // The IPv6 side's header is 20 bytes longer: a segment of the IPv4 side's
                // MSS would not fit the IPv6 path (and the other way, nothing to lower).
                let fit = mtu.saturating_sub(new_hl + 20).min(u16::MAX as usize) as u16;
                let want = if to_v4 { m } else { m.saturating_sub(20) };
                let old = opts.to_vec();
                if crate::wire::tcpopt::clamp_mss(opts, want.min(fit).max(536)).is_some() {
                    delta = csum::add(delta, crate::wire::tcpopt::csum_delta(&old, opts));
                }
            }
        }
        csum::apply_at(d, l4n + 16, delta);
    } else if udp_zero {
        // IPv4 UDP without a checksum: IPv6 needs one (RFC 7915 4.5), computed in full.
        let pseudo = csum::pseudo_v6(&sb, &db, PROTO_UDP, l4len as u32);
        let mut c = csum::finish(&d[l4n..l4n + l4len], pseudo);
        if c == 0 {
            c = 0xffff;
        }
        d[l4n + 6..l4n + 8].copy_from_slice(&c.to_be_bytes());
    } else {
        let mut c = csum::apply(u16::from_be_bytes([d[l4n + 6], d[l4n + 7]]), delta);
        if c == 0 {
            c = 0xffff;
        }
        d[l4n + 6..l4n + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// The ICMP error type/code of the other family (RFC 7915 4.2 and 5.2), with the
/// translated 4-byte field after the checksum (the MTU of a "packet too big" /
/// "fragmentation needed", adjusted by the 20 bytes the header sizes differ by).
/// `None`: no translation (parameter problems, source quench, redirects, ...).
pub fn icmp_error_type(from_v6: bool, ty: u8, code: u8, rest: [u8; 4]) -> Option<(u8, u8, [u8; 4])> {
    if from_v6 {
        match (ty, code) {
            (1, 1) => Some((3, 10, [0; 4])),
            (1, 4) => Some((3, 3, [0; 4])),
            (1, 0 | 2 | 3) => Some((3, 1, [0; 4])),
            (2, _) => {
                let mtu = u32::from_be_bytes(rest).saturating_sub(20).clamp(68, 0xffff) as u16;
                let [a, b] = mtu.to_be_bytes();
                Some((3, 4, [0, 0, a, b]))
            }
            (3, c @ (0 | 1)) => Some((11, c, [0; 4])),
            _ => None,
        }
    } else {
        match (ty, code) {
            (3, 0 | 1 | 5..=8 | 11 | 12) => Some((1, 0, [0; 4])),
            (3, 3) => Some((1, 4, [0; 4])),
            (3, 9 | 10 | 13 | 15) => Some((1, 1, [0; 4])),
            (3, 4) => {
                let mtu = u16::from_be_bytes([rest[2], rest[3]]) as u32;
                if mtu == 0 {
                    // A pre-RFC 1191 router: no MTU to translate.
                    return None;
                }
                Some((2, 0, (mtu + 20).max(1280).to_be_bytes()))
            }
            (11, c @ (0 | 1)) => Some((3, c, [0; 4])),
            _ => None,
        }
    }
}

/// Translate the ICMP error `p` (quoting `inner`) of a translated connection to the other
/// family: the outer header from `src` to `dst`, the quoted packet's header rewritten as
/// `qsrc:qsport -> qdst:qdport` in the new family, the quote cut to fit the minimum MTU
/// of the new family (1280 bytes for IPv6, 576 for IPv4), checksums computed. The frame is
/// rebuilt in place. `Err(XlatUnsupported)`: an error with no translation.
#[allow(clippy::too_many_arguments)]
pub fn translate_icmp_error<B: Packet>(
    pkt: &mut B,
    p: &Parsed,
    inner: &crate::wire::parse::Inner,
    src: Addr,
    dst: Addr,
    (qsrc, qsport): (Addr, u16),
    (qdst, qdport): (Addr, u16),
) -> Result<(), DropReason> {
    let to_v6 = !p.v6;
    if addr_is_v4(dst) == to_v6 || addr_is_v4(src) == to_v6 {
        return Err(DropReason::XlatUnsupported);
    }
    if inner.proto != PROTO_TCP && inner.proto != PROTO_UDP {
        return Err(DropReason::XlatUnsupported);
    }
    let d = pkt.data();
    if p.end > d.len() || inner.l4 + 8 > p.end {
        return Err(DropReason::Malformed);
    }
    let (ty, code) = (d[p.l4], d[p.l4 + 1]);
    let rest: [u8; 4] = [d[p.l4 + 4], d[p.l4 + 5], d[p.l4 + 6], d[p.l4 + 7]];
    let Some((nty, ncode, nrest)) = icmp_error_type(p.v6, ty, code, rest) else {
        return Err(DropReason::XlatUnsupported);
    };
    // The outer hop limit / TTL, decremented as for any forwarded packet.
    let hop = if p.v6 { d[p.l3 + 7] } else { d[p.l3 + 8] };
    if hop <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // The quoted header's fields.
    let q = inner.l3;
    let (qtc, qhop, qlen) = if p.v6 {
        ((d[q] & 0x0f) << 4 | d[q + 1] >> 4, d[q + 7], u16::from_be_bytes([d[q + 4], d[q + 5]]) as usize)
    } else {
        let ihl = (d[q] & 0xf) as usize * 4;
        (d[q + 1], d[q + 8], (u16::from_be_bytes([d[q + 2], d[q + 3]]) as usize).saturating_sub(ihl))
    };
    // Build the new L3 packet after the L2 header in a scratch copy.
    let (ohl, qhl) = if to_v6 { (40, 40) } else { (20, 20) };
    let limit = if to_v6 { 1280 } else { 576 };
    let qbody = &d[inner.l4..p.end];
    let take = qbody.len().min(limit - ohl - 8 - qhl);
    let total = ohl + 8 + qhl + take;
    let mut b = [0u8; 1280];
    let (sb, db) = (addr_v6_bytes(src), addr_v6_bytes(dst));
    let (qs, qd) = (addr_v6_bytes(qsrc), addr_v6_bytes(qdst));
    // Quoted header.
    let qh = ohl + 8;
    if to_v6 {
        let h = &mut b[qh..qh + 40];
        h[0] = 0x60 | qtc >> 4;
        h[1] = qtc << 4;
        h[4..6].copy_from_slice(&(qlen as u16).to_be_bytes());
        h[6] = inner.proto;
        h[7] = qhop;
        h[8..24].copy_from_slice(&qs);
        h[24..40].copy_from_slice(&qd);
    } else {
        let h = &mut b[qh..qh + 20];
        h[0] = 0x45;
        h[1] = qtc;
        h[2..4].copy_from_slice(&((20 + qlen).min(0xffff) as u16).to_be_bytes());
        h[6] = 0x40;
        h[8] = qhop;
        h[9] = inner.proto;
        h[12..16].copy_from_slice(&qs[12..]);
        h[16..20].copy_from_slice(&qd[12..]);
        let c = csum::finish(h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    b[qh + qhl..qh + qhl + take].copy_from_slice(&qbody[..take]);
    b[qh + qhl..qh + qhl + 2].copy_from_slice(&qsport.to_be_bytes());
    b[qh + qhl + 2..qh + qhl + 4].copy_from_slice(&qdport.to_be_bytes());
    // ICMP header.
    b[ohl] = nty;
    b[ohl + 1] = ncode;
    b[ohl + 4..ohl + 8].copy_from_slice(&nrest);
    let ilen = total - ohl;
    // Outer header.
    let proto = if to_v6 {
        let h = &mut b[..40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(ilen as u16).to_be_bytes());
        h[6] = crate::wire::parse::PROTO_ICMPV6;
        h[7] = hop - 1;
        h[8..24].copy_from_slice(&sb);
        h[24..40].copy_from_slice(&db);
        crate::wire::parse::PROTO_ICMPV6
    } else {
        let h = &mut b[..20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[8] = hop - 1;
        h[9] = crate::wire::parse::PROTO_ICMP;
        h[12..16].copy_from_slice(&sb[12..]);
        h[16..20].copy_from_slice(&db[12..]);
        let c = csum::finish(h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        crate::wire::parse::PROTO_ICMP
    };
    let pseudo = if to_v6 { csum::pseudo_v6(&sb, &db, proto, ilen as u32) } else { 0 };
    let c = csum::finish(&b[ohl..total], pseudo);
    b[ohl + 2..ohl + 4].copy_from_slice(&c.to_be_bytes());
    // Into the frame: the L2 header stays, its EtherType changes.
    let l3 = p.l3;
    if !pkt.set_len(l3 + total) {
        return Err(DropReason::TooBig);
    }
    let d = pkt.data_mut();
    d[l3 - 2..l3].copy_from_slice(if to_v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    d[l3..l3 + total].copy_from_slice(&b[..total]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::HeapBuf;
    use crate::tools::testpkt::*;
    use crate::wire::parse::{parse, v4_to_addr, v6_to_addr};

    /// The incremental checksums agree with a full verification, both ways, for TCP (a SYN
    /// with MSS) and UDP (with and without an IPv4 checksum); the frame shrinks and grows by 20.
    #[test]
    fn round_trip_keeps_valid_checksums() {
        let (c6, vip6) = (V6A, V6B);
        let la = v4_to_addr([10, 0, 2, 200]);
        let rs = v4_to_addr([10, 0, 2, 2]);
        for (name, f) in [
            ("tcp", tcp6_opts(c6, 40000, vip6, 80, TCP_SYN, 7, 0, &opt_mss(1440), b"")),
            ("udp", udp6(c6, 40000, vip6, 53, b"hello world")),
        ] {
            let mut b = HeapBuf::from_slice(&f);
            let p = parse(b.data()).unwrap();
            translate(&mut b, &p, la, 5000, rs, 8080, 1500).unwrap();
            let q = parse(b.data()).expect("a valid IPv4 frame");
            assert!(!q.v6);
            assert_eq!((q.src, q.sport, q.dst, q.dport), (la, 5000, rs, 8080));
            verify_checksums(b.data()).expect(name);
            assert_eq!(b.len(), f.len() - 20);
            assert_eq!(b.data()[q.l3 + 8], 63, "TTL from the hop limit, decremented");
            assert_eq!(b.data()[q.l3 + 6], 0x40, "DF");
            if name == "udp" {
                // The same datagram without an IPv4 checksum: IPv6 needs one.
                let l4 = q.l4;
                b.data_mut()[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
            }
            // Back (as a reply would go): IPv4 -> IPv6.
            let mut r = HeapBuf::from_slice(b.data());
            let q = parse(r.data()).unwrap();
            translate(&mut r, &q, v6_to_addr(vip6), 80, v6_to_addr(c6), 40000, 1500).unwrap();
            let back = parse(r.data()).unwrap();
            assert!(back.v6);
            assert_eq!(r.len(), f.len());
            verify_checksums(r.data()).expect(name);
            assert_eq!(&r.data()[back.payload..back.end], &f[p.payload..p.end]);
            if name == "tcp" {
                // A SYN that becomes IPv6: MSS 1440 - 20.
                assert_eq!(crate::wire::tcpopt::mss(&r.data()[back.l4 + 20..back.payload]), Some(1420));
            }
        }
    }

    #[test]
    fn refuses_same_family_and_expired_hop_limit() {
        let f = udp6(V6A, 1, V6B, 2, b"x");
        let mut b = HeapBuf::from_slice(&f);
        let p = parse(b.data()).unwrap();
        let la = v4_to_addr([10, 0, 2, 200]);
        assert_eq!(
            translate(&mut b, &p, v6_to_addr(V6A), 1, v6_to_addr(V6B), 2, 1500),
            Err(DropReason::XlatUnsupported)
        );
        let f = set_ttl(f, 1);
        let mut b = HeapBuf::from_slice(&f);
        let p = parse(b.data()).unwrap();
        assert_eq!(translate(&mut b, &p, la, 1, la, 2, 1500), Err(DropReason::TtlExceeded));
        assert_eq!(b.data(), &f[..], "unchanged");
    }
}
