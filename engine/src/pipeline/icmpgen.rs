//! ICMP errors the balancer originates: IPv4 "fragmentation needed" (type 3
//! code 4, RFC 792 / RFC 1191) and ICMPv6 "packet too big" (type 2, RFC 4443),
//! for a packet that does not fit the egress MTU (IPVS does the same in
//! `ensure_mtu_is_adequate`, ip_vs_xmit.c).
//!
//! The error is built in place of the offending packet (no allocation): the
//! quoted part is the start of the packet as its sender sent it, as much as
//! fits in 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280 bytes (IPv6, RFC 4443
//! 2.4(c)); the IP and ICMP headers are prepended in front of it.
//!
//! [`may_answer`] holds the rules of RFC 1122 3.2.2 / RFC 4443 2.4(e) (and
//! Linux's `icmp_send`): no error about an ICMP error, about a fragment other
//! than the first, about a packet whose source is unspecified, multicast or
//! broadcast, or (IPv4) about a packet sent to a multicast/broadcast address.
//! IPv4 packets without DF are not answered either: the sender allowed
//! fragmentation, and the worker sends them in fragments ([`crate::wire::ipfrag`]).

use crate::port::Packet;
use crate::wire::csum;
use crate::wire::parse::{
    addr_is_v4, addr_v4_bytes, addr_v6_bytes, icmp_is_error, Addr, Parsed, PROTO_ICMP, PROTO_ICMPV6,
};
use crate::wire::view::{
    EthAddrs, Icmp, Ipv4, Ipv6, Truncated, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ICMPV6_PACKET_TOO_BIG,
    ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, IPV4_DF,
};

/// Largest IPv4 datagram carrying an originated error (RFC 1812 4.3.2.3).
pub const MAX_V4: usize = 576;
/// Largest IPv6 packet carrying an originated error (RFC 4443 2.4(c)).
pub const MAX_V6: usize = 1280;

/// May the balancer send an error about this packet (`frame` is its Ethernet
/// frame, `p` its parse)?
pub fn may_answer(frame: &[u8], p: &Parsed) -> bool {
    may_report(frame, p, true)
}

/// [`may_answer`] for an error of any type (`too_big`: "fragmentation needed" / "packet too
/// big", which an IPv4 packet without DF does not get: its sender allows fragmentation).
pub fn may_report(frame: &[u8], p: &Parsed, too_big: bool) -> bool {
    if p.arp || p.end > frame.len() || p.l3 < 14 {
        return false;
    }
    let is_icmp = p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6;
    if is_icmp && icmp_is_error(p.v6, p.icmp_type) {
        return false;
    }
    if p.v6 {
        let s = addr_v6_bytes(p.src);
        // Unspecified (::) or multicast (ff00::/8). A multicast destination is allowed for
        // Packet Too Big (RFC 4443 2.4(e.3)).
        s != [0; 16] && s[0] != 0xff
    } else {
        // Sent to an Ethernet broadcast/multicast address.
        if frame[0] & 1 == 1 {
            return false;
        }
        let Ok(h) = Ipv4::at(frame, p.l3) else { return false };
        // DF clear: the sender allows fragmentation. A fragment other than the first:
        // offset != 0.
        if (too_big && h.frag_word() & IPV4_DF == 0) || h.frag_word() & 0x1fff != 0 {
            return false;
        }
        let s = addr_v4_bytes(p.src);
        let d = addr_v4_bytes(p.dst);
        let bad = |a: [u8; 4]| a == [0; 4] || a == [255; 4] || a[0] >= 224;
        !bad(s) && !bad(d) && s[0] != 127
    }
}

/// Turn `pkt` (parsed as `p`) into the error to its sender, from `src`, with
/// next-hop MTU `mtu`, Ethernet source `smac` and destination `dmac` (the L2
/// header, VLAN tag included, is kept). False (and `pkt` unusable) when the
/// buffer cannot hold it.
pub fn build<B: Packet>(pkt: &mut B, p: &Parsed, src: Addr, mtu: u32, smac: [u8; 6], dmac: [u8; 6]) -> bool {
    let kind = if p.v6 {
        (ICMPV6_PACKET_TOO_BIG, 0, mtu)
    } else {
        // Unused (16 bits), then the next-hop MTU (RFC 1191).
        (ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, mtu.min(u16::MAX as u32))
    };
    build_error(pkt, p, src, kind, smac, dmac)
}

/// [`build`] for an error of any type: `kind` is its type, code and the 4 bytes after its
/// checksum, in `p`'s family (the errors about tunnel packets relayed to their client, IPVS
/// `ip_vs_in_icmp`).
pub fn build_error<B: Packet>(
    pkt: &mut B,
    p: &Parsed,
    src: Addr,
    kind: (u8, u8, u32),
    smac: [u8; 6],
    dmac: [u8; 6],
) -> bool {
    let v6 = p.v6;
    if addr_is_v4(src) == v6 {
        return false;
    }
    let hdr = if v6 { 40 + 8 } else { 20 + 8 };
    let quote = (p.end - p.l3).min(if v6 { MAX_V6 } else { MAX_V4 } - hdr);
    let l3 = p.l3;
    let sender = p.src;
    // Cut the frame to L2 header + quote, then make room for the new headers: in the
    // headroom if there is some, else by moving the quote back.
    if !pkt.set_len(l3 + quote) {
        return false;
    }
    if pkt.prepend(hdr) {
        pkt.data_mut().copy_within(hdr..hdr + l3, 0);
    } else {
        if !pkt.set_len(l3 + hdr + quote) {
            return false;
        }
        pkt.data_mut().copy_within(l3..l3 + quote, l3 + hdr);
    }
    write_error(pkt.data_mut(), l3, v6, (src, sender), quote, kind, (smac, dmac)).is_ok()
}

/// The error's headers in front of the `quote` bytes at `l3 + hdr` of frame `d`: Ethernet
/// addresses (`macs`: source, destination), the IP header from `addrs.0` to `addrs.1`, and
/// the ICMP / ICMPv6 header of `kind` (type, code, the 4 bytes after the checksum), its
/// checksum over the quote.
fn write_error(
    d: &mut [u8],
    l3: usize,
    v6: bool,
    (src, sender): (Addr, Addr),
    quote: usize,
    (ty, code, rest): (u8, u8, u32),
    (smac, dmac): ([u8; 6], [u8; 6]),
) -> Result<(), Truncated> {
    let mut eth = EthAddrs::at_mut(d, 0)?;
    eth.set_dst(dmac);
    eth.set_src(smac);
    let ip_len = if v6 { 40 } else { 20 };
    let icmp = l3 + ip_len;
    let end = icmp + 8 + quote;
    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    d.get_mut(l3.checked_sub(2).ok_or(Truncated)?..l3).ok_or(Truncated)?.copy_from_slice(&ethertype.to_be_bytes());
    let pseudo = if v6 {
        let mut h = Ipv6::at_mut(d, l3)?;
        h.clear();
        h.set_version_byte(0x60);
        h.set_payload_len((8 + quote) as u16);
        h.set_next_header(PROTO_ICMPV6);
        h.set_hop_limit(64);
        h.set_src(addr_v6_bytes(src));
        h.set_dst(addr_v6_bytes(sender));
        let mut m = Icmp::at_mut(d, icmp)?;
        m.set_kind(ty);
        m.set_code(code);
        m.set_checksum(0);
        m.set_rest(rest);
        csum::pseudo_v6(&addr_v6_bytes(src), &addr_v6_bytes(sender), PROTO_ICMPV6, (8 + quote) as u32)
    } else {
        let mut h = Ipv4::at_mut(d, l3)?;
        h.clear();
        h.set_version_ihl(0x45);
        // Precedence "internetwork control", as Linux's icmp_send.
        h.set_tos(0xc0);
        h.set_total_len((ip_len + 8 + quote) as u16);
        h.set_ttl(64);
        h.set_proto(PROTO_ICMP);
        h.set_src(addr_v4_bytes(src));
        h.set_dst(addr_v4_bytes(sender));
        csum::fill_ipv4(d, l3)?;
        let mut m = Icmp::at_mut(d, icmp)?;
        m.set_kind(ty);
        m.set_code(code);
        m.set_checksum(0);
        m.set_rest(rest);
        0
    };
    let c = csum::finish(d.get(icmp..end).ok_or(Truncated)?, pseudo);
    Icmp::at_mut(d, icmp)?.set_checksum(c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::HeapBuf;
    use crate::tools::testpkt::{tcp4, tcp6, udp4, verify_checksums};
    use crate::wire::parse::{parse, v4_to_addr, v6_to_addr, PROTO_TCP};

    const C: [u8; 4] = [10, 0, 1, 2];
    const V: [u8; 4] = [10, 0, 1, 100];

    fn big4(df: bool) -> Vec<u8> {
        let mut f = tcp4(C, 4000, V, 80, 0x10, 1, 1, &[7u8; 1400]);
        if df {
            f[20] |= 0x40;
        } else {
            f[20] &= !0x40;
        }
        crate::wire::csum::fill_ipv4(&mut f, 14).unwrap();
        f
    }

    #[test]
    fn frag_needed_quotes_576_bytes() {
        let f = big4(true);
        let p = parse(&f).unwrap();
        assert!(may_answer(&f, &p));
        let mut b = HeapBuf::from_slice(&f);
        assert!(build(&mut b, &p, v4_to_addr(V), 1280, [2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]));
        let o = b.data();
        assert_eq!(o.len(), 14 + 576);
        verify_checksums(o).unwrap();
        assert_eq!(&o[0..6], &[2, 0, 0, 0, 1, 2]);
        assert_eq!(&o[26..30], &V, "from the VIP");
        assert_eq!(&o[30..34], &C, "to the sender");
        assert_eq!((o[34], o[35]), (3, 4));
        assert_eq!(u16::from_be_bytes([o[40], o[41]]), 1280);
        assert_eq!(&o[42..42 + 548], &f[14..14 + 548], "the packet as sent, cut at 576 bytes");
        let q = parse(o).unwrap();
        assert_eq!(q.proto, PROTO_ICMP);
    }

    #[test]
    fn packet_too_big_quotes_1280_bytes() {
        let s6 = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let v6 = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let f = tcp6(s6, 4000, v6, 80, 0x10, 1, 1, &[9u8; 1400]);
        let p = parse(&f).unwrap();
        assert!(may_answer(&f, &p));
        let mut b = HeapBuf::from_slice(&f);
        assert!(build(&mut b, &p, v6_to_addr(v6), 1400, [2; 6], [4; 6]));
        let o = b.data();
        assert_eq!(o.len(), 14 + 1280);
        verify_checksums(o).unwrap();
        assert_eq!(&o[22..38], &v6);
        assert_eq!(&o[38..54], &s6);
        assert_eq!((o[54], o[55]), (2, 0));
        assert_eq!(u32::from_be_bytes([o[58], o[59], o[60], o[61]]), 1400);
        assert_eq!(&o[62..], &f[14..14 + 1232]);
    }

    #[test]
    fn never_about_errors_fragments_broadcasts_or_df_clear() {
        let f = big4(false);
        assert!(!may_answer(&f, &parse(&f).unwrap()), "DF clear");
        let mut f = big4(true);
        f[0] = 0xff;
        assert!(!may_answer(&f, &parse(&f).unwrap()), "L2 broadcast");
        for src in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1]] {
            let mut f = big4(true);
            f[26..30].copy_from_slice(&src);
            crate::wire::csum::fill_ipv4(&mut f, 14).unwrap();
            if let Ok(p) = parse(&f) {
                assert!(!may_answer(&f, &p), "{src:?}");
            }
        }
        let quoted = udp4(V, 80, C, 4000, b"");
        let e = crate::tools::testpkt::icmp4_error(C, V, 3, 3, 0, &quoted);
        let mut e = e;
        e[20] |= 0x40;
        crate::wire::csum::fill_ipv4(&mut e, 14).unwrap();
        let p = parse(&e).unwrap();
        assert!(!may_answer(&e, &p), "an ICMP error");
        let p = parse(&big4(true)).unwrap();
        assert_eq!(p.proto, PROTO_TCP);
    }
}
