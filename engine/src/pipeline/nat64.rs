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
use crate::wire::parse::{
    addr_is_v4, addr_v6_bytes, Addr, Parsed, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_SYN,
};
use crate::wire::view::{
    Icmp, Ipv4, Ipv6, Ports, Tcp, Truncated, Udp, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_DF, TCP_HEADER_LEN,
};

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
    // IPv6 has no header checksum: an IPv4 header corrupted on the wire (which Linux drops in
    // `ip_rcv`) would become a valid IPv6 one. (IPv6 -> IPv4 computes the IPv4 checksum.)
    if !csum::ip_header_ok(pkt.data(), p.l3, p.v6) {
        return Err(DropReason::IpBadChecksum);
    }
    let (l3, l4, end) = (p.l3, p.l4, p.end);
    let hl = l4 - l3;
    if pkt.len() < end || (p.v6 && hl != 40) {
        // IPv6 extension headers, a fragment header among them (RFC 7915 5.1 would translate
        // some; the engine does not).
        return Err(DropReason::XlatUnsupported);
    }
    let d = pkt.data();
    // What the old header says, before anything moves.
    let (tc, hop, frag) = if p.v6 {
        let h = Ipv6::at(d, l3).map_err(|_| DropReason::Malformed)?;
        (h.traffic_class(), h.hop_limit(), 0)
    } else {
        let h = Ipv4::at(d, l3).map_err(|_| DropReason::Malformed)?;
        (h.tos(), h.ttl(), h.frag_word() & 0x3fff)
    };
    if frag != 0 {
        // An IPv4 fragment: it would need an IPv6 fragment header (RFC 7915 4.1); not done.
        return Err(DropReason::XlatUnsupported);
    }
    let l4len = end - l4;
    let min = if p.proto == PROTO_TCP { 20 } else { 8 };
    if l4len < min {
        return Err(DropReason::Malformed);
    }
    if hop <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // Checksum delta: the pseudo-header's addresses (length and protocol are the same
    // in both families) and the two ports.
    let old_addrs = if p.v6 {
        let h = Ipv6::at(d, l3).map_err(|_| DropReason::Malformed)?;
        csum::sum(&h.dst(), csum::sum(&h.src(), 0))
    } else {
        let h = Ipv4::at(d, l3).map_err(|_| DropReason::Malformed)?;
        csum::sum(&h.dst(), csum::sum(&h.src(), 0))
    };
    let (sb, db) = (addr_v6_bytes(src), addr_v6_bytes(dst));
    let from = if to_v4 { 12 } else { 0 };
    let new_sum = csum::sum(&db[from..], csum::sum(&sb[from..], 0));
    let mut delta = csum::add((!csum::fold(old_addrs)) as u32, csum::fold(new_sum) as u32);
    let Ok(ports) = Ports::at(d, l4) else { return Err(DropReason::Malformed) };
    let (osport, odport) = (ports.src(), ports.dst());
    delta = csum::add(delta, csum::add(csum::delta16(osport, sport), csum::delta16(odport, dport)));
    let udp_zero = p.proto == PROTO_UDP && Udp::at(d, l4).is_ok_and(|u| u.checksum() == 0);
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
    let seg = Rebuilt { l3, l4: l4n, l4len, proto: p.proto, tc, hop: hop - 1, src: (sb, sport), dst: (db, dport) };
    seg.write(pkt.data_mut(), to_v4, delta, udp_zero, mtu).map_err(|_| DropReason::Malformed)
}

/// A TCP/UDP packet translated to the other family by [`translate`]: what goes into the
/// new headers (the transport's body stays where it is).
struct Rebuilt {
    l3: usize,
    l4: usize,
    l4len: usize,
    proto: u8,
    tc: u8,
    hop: u8,
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
}

impl Rebuilt {
    /// Write the new IP header (IPv4 when `to_v4`) and the transport's ports and checksum
    /// (`delta`: the checksum change of the addresses and ports; `udp_zero`: an IPv4 UDP
    /// datagram without a checksum, which IPv6 needs in full), clamping a SYN's MSS to the
    /// egress `mtu`.
    fn write(&self, d: &mut [u8], to_v4: bool, mut delta: u32, udp_zero: bool, mtu: usize) -> Result<(), Truncated> {
        let (l3, l4, l4len) = (self.l3, self.l4, self.l4len);
        let (sb, db) = (self.src.0, self.dst.0);
        let ethertype = if to_v4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
        d.get_mut(l3.checked_sub(2).ok_or(Truncated)?..l3).ok_or(Truncated)?.copy_from_slice(&ethertype.to_be_bytes());
        if to_v4 {
            let mut h = Ipv4::at_mut(d, l3)?;
            h.clear();
            h.set_version_ihl(0x45);
            h.set_tos(self.tc);
            h.set_total_len((20 + l4len) as u16);
            h.set_frag_word(IPV4_DF);
            h.set_ttl(self.hop);
            h.set_proto(self.proto);
            h.set_src(v4_of(sb));
            h.set_dst(v4_of(db));
            csum::fill_ipv4(d, l3)?;
        } else {
            let mut h = Ipv6::at_mut(d, l3)?;
            h.set_version_class(self.tc);
            h.set_payload_len(l4len as u16);
            h.set_next_header(self.proto);
            h.set_hop_limit(self.hop);
            h.set_src(sb);
            h.set_dst(db);
        }
        let mut ports = Ports::at_mut(d, l4)?;
        ports.set_src(self.src.1);
        ports.set_dst(self.dst.1);
        let new_hl = if to_v4 { 20 } else { 40 };
        if self.proto == PROTO_TCP {
            let t = Tcp::at(d, l4)?;
            if t.flags() & TCP_SYN != 0 {
                let off = t.header_len().clamp(TCP_HEADER_LEN, l4len);
                let opts = d.get_mut(l4 + TCP_HEADER_LEN..l4 + off).ok_or(Truncated)?;
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
            Tcp::at_mut(d, l4)?.adjust_checksum(delta);
        } else if udp_zero {
            // IPv4 UDP without a checksum: IPv6 needs one (RFC 7915 4.5), computed in full.
            let pseudo = csum::pseudo_v6(&sb, &db, PROTO_UDP, l4len as u32);
            let mut c = csum::finish(d.get(l4..l4 + l4len).ok_or(Truncated)?, pseudo);
            if c == 0 {
                c = 0xffff;
            }
            Udp::at_mut(d, l4)?.set_checksum(c);
        } else {
            let mut u = Udp::at_mut(d, l4)?;
            let mut c = csum::apply(u.checksum(), delta);
            if c == 0 {
                c = 0xffff;
            }
            u.set_checksum(c);
        }
        Ok(())
    }
}

/// The IPv4 address in the low 4 bytes of a 16-byte one.
fn v4_of(a: [u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
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
    let read = || -> Result<_, Truncated> {
        let m = Icmp::at(d, p.l4)?;
        // The outer hop limit / TTL, and the quoted header's traffic class, hop limit and
        // payload length.
        let (hop, quoted) = if p.v6 {
            let q = Ipv6::at(d, inner.l3)?;
            (Ipv6::at(d, p.l3)?.hop_limit(), (q.traffic_class(), q.hop_limit(), q.payload_len() as usize))
        } else {
            let q = Ipv4::at(d, inner.l3)?;
            let qlen = (q.total_len() as usize).saturating_sub(q.header_len());
            (Ipv4::at(d, p.l3)?.ttl(), (q.tos(), q.ttl(), qlen))
        };
        Ok((m.kind(), m.code(), m.rest().to_be_bytes(), hop, quoted))
    };
    let Ok((ty, code, rest, hop, (qtc, qhop, qlen))) = read() else { return Err(DropReason::Malformed) };
    let Some((nty, ncode, nrest)) = icmp_error_type(p.v6, ty, code, rest) else {
        return Err(DropReason::XlatUnsupported);
    };
    // Decremented as for any forwarded packet.
    if hop <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // Build the new L3 packet after the L2 header in a scratch copy.
    let (ohl, qhl) = if to_v6 { (40, 40) } else { (20, 20) };
    let limit = if to_v6 { 1280 } else { 576 };
    let qbody = &d[inner.l4..p.end];
    let take = qbody.len().min(limit - ohl - 8 - qhl);
    let total = ohl + 8 + qhl + take;
    let mut b = [0u8; 1280];
    let (sb, db) = (addr_v6_bytes(src), addr_v6_bytes(dst));
    let (qs, qd) = (addr_v6_bytes(qsrc), addr_v6_bytes(qdst));
    let build = |b: &mut [u8]| -> Result<(), Truncated> {
        // Quoted header, then the quote with its ports.
        let qh = ohl + 8;
        if to_v6 {
            let mut h = Ipv6::at_mut(b, qh)?;
            h.set_version_class(qtc);
            h.set_payload_len(qlen as u16);
            h.set_next_header(inner.proto);
            h.set_hop_limit(qhop);
            h.set_src(qs);
            h.set_dst(qd);
        } else {
            let mut h = Ipv4::at_mut(b, qh)?;
            h.set_version_ihl(0x45);
            h.set_tos(qtc);
            h.set_total_len((20 + qlen).min(0xffff) as u16);
            h.set_frag_word(IPV4_DF);
            h.set_ttl(qhop);
            h.set_proto(inner.proto);
            h.set_src(v4_of(qs));
            h.set_dst(v4_of(qd));
            csum::fill_ipv4(b, qh)?;
        }
        b.get_mut(qh + qhl..qh + qhl + take).ok_or(Truncated)?.copy_from_slice(&qbody[..take]);
        let mut ports = Ports::at_mut(b, qh + qhl)?;
        ports.set_src(qsport);
        ports.set_dst(qdport);
        // ICMP header.
        let mut m = Icmp::at_mut(b, ohl)?;
        m.set_kind(nty);
        m.set_code(ncode);
        m.set_rest(u32::from_be_bytes(nrest));
        let ilen = total - ohl;
        // Outer header.
        let pseudo = if to_v6 {
            let mut h = Ipv6::at_mut(b, 0)?;
            h.set_version_class(0);
            h.set_payload_len(ilen as u16);
            h.set_next_header(PROTO_ICMPV6);
            h.set_hop_limit(hop - 1);
            h.set_src(sb);
            h.set_dst(db);
            csum::pseudo_v6(&sb, &db, PROTO_ICMPV6, ilen as u32)
        } else {
            let mut h = Ipv4::at_mut(b, 0)?;
            h.set_version_ihl(0x45);
            h.set_total_len(total as u16);
            h.set_ttl(hop - 1);
            h.set_proto(PROTO_ICMP);
            h.set_src(v4_of(sb));
            h.set_dst(v4_of(db));
            csum::fill_ipv4(b, 0)?;
            0
        };
        let c = csum::finish(b.get(ohl..total).ok_or(Truncated)?, pseudo);
        Icmp::at_mut(b, ohl)?.set_checksum(c);
        Ok(())
    };
    if build(&mut b).is_err() {
        return Err(DropReason::Malformed);
    }
    // Into the frame: the L2 header stays, its EtherType changes.
    let l3 = p.l3;
    if l3 < 2 || !pkt.set_len(l3 + total) {
        return Err(DropReason::TooBig);
    }
    let d = pkt.data_mut();
    let ethertype = if to_v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    d[l3 - 2..l3].copy_from_slice(&ethertype.to_be_bytes());
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
