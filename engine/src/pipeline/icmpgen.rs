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
//! fragmentation, which the balancer does not do (they are `too_big` drops).

use crate::port::Packet;
use crate::wire::parse::{
    addr_is_v4, addr_v4_bytes, addr_v6_bytes, icmp_is_error, Addr, Parsed, PROTO_ICMP, PROTO_ICMPV6,
};

/// Largest IPv4 datagram carrying an originated error (RFC 1812 4.3.2.3).
pub const MAX_V4: usize = 576;
/// Largest IPv6 packet carrying an originated error (RFC 4443 2.4(c)).
pub const MAX_V6: usize = 1280;

/// May the balancer send an error about this packet (`frame` is its Ethernet
/// frame, `p` its parse)?
pub fn may_answer(frame: &[u8], p: &Parsed) -> bool {
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
        let Some(h) = frame.get(p.l3..p.l3 + 20) else { return false };
        // DF clear: the sender allows fragmentation. A fragment other than the first:
        // offset != 0.
        if h[6] & 0x40 == 0 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
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
    let d = pkt.data_mut();
    d[0..6].copy_from_slice(&dmac);
    d[6..12].copy_from_slice(&smac);
    let icmp = l3 + hdr - 8;
    let end = l3 + hdr + quote;
    if v6 {
        d[l3 - 2..l3].copy_from_slice(&[0x86, 0xdd]);
        let h = &mut d[l3..l3 + 40];
        h.fill(0);
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((8 + quote) as u16).to_be_bytes());
        h[6] = PROTO_ICMPV6;
        h[7] = 64;
        h[8..24].copy_from_slice(&addr_v6_bytes(src));
        h[24..40].copy_from_slice(&addr_v6_bytes(sender));
        let m = &mut d[icmp..icmp + 8];
        m[0] = 2;
        m[1] = 0;
        m[2..4].fill(0);
        m[4..8].copy_from_slice(&mtu.to_be_bytes());
        let pseudo =
            crate::wire::csum::pseudo_v6(&addr_v6_bytes(src), &addr_v6_bytes(sender), PROTO_ICMPV6, (8 + quote) as u32);
        let c = crate::wire::csum::finish(&d[icmp..end], pseudo);
        d[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    } else {
        d[l3 - 2..l3].copy_from_slice(&[0x08, 0x00]);
        let h = &mut d[l3..l3 + 20];
        h.fill(0);
        h[0] = 0x45;
        // Precedence "internetwork control", as Linux's icmp_send.
        h[1] = 0xc0;
        h[2..4].copy_from_slice(&((hdr + quote) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = PROTO_ICMP;
        h[12..16].copy_from_slice(&addr_v4_bytes(src));
        h[16..20].copy_from_slice(&addr_v4_bytes(sender));
        crate::pipeline::nat::fix_ipv4_csum(d, l3);
        let m = &mut d[icmp..icmp + 8];
        m[0] = 3;
        m[1] = 4;
        m[2..6].fill(0);
        m[6..8].copy_from_slice(&(mtu.min(u16::MAX as u32) as u16).to_be_bytes());
        let c = crate::wire::csum::finish(&d[icmp..end], 0);
        d[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    }
    true
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
        crate::pipeline::nat::fix_ipv4_csum(&mut f, 14);
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
            crate::pipeline::nat::fix_ipv4_csum(&mut f, 14);
            if let Ok(p) = parse(&f) {
                assert!(!may_answer(&f, &p), "{src:?}");
            }
        }
        let quoted = udp4(V, 80, C, 4000, b"");
        let e = crate::tools::testpkt::icmp4_error(C, V, 3, 3, 0, &quoted);
        let mut e = e;
        e[20] |= 0x40;
        crate::pipeline::nat::fix_ipv4_csum(&mut e, 14);
        let p = parse(&e).unwrap();
        assert!(!may_answer(&e, &p), "an ICMP error");
        let p = parse(&big4(true)).unwrap();
        assert_eq!(p.proto, PROTO_TCP);
    }
}
