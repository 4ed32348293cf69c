//! Header rewrites of plain NAT and of the tunnel modes (the full-NAT ones are in
//! [`crate::pipeline::fnat`]): destination or source address and port with precomputed
//! RFC 1624 checksum deltas and the TTL / hop limit, checksums recomputed in full where a
//! rewrite is not a delta, and IPIP / IPv6-in-IPv6 encapsulation.

use crate::pipeline::counters::DropReason;
use crate::port::Packet;
use crate::wire::csum;
use crate::wire::parse::{
    addr_is_v4, addr_v4_bytes, addr_v6_bytes, Addr, Parsed, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

/// RFC 1624 delta of decrementing the IPv4 TTL by one (the TTL/protocol
/// word loses 0x0100): ~old + new = ~0x0100 = 0xfeff.
pub const TTL_DELTA: u32 = 0xfeff;

/// NAT rewrite: inbound sets destination (addr, port), outbound sets
/// source. Decrements TTL/hop limit. Fails with `TtlExceeded` if it ran out
/// (the packet is left unchanged) and with `Malformed` if `p`'s offsets do
/// not fit `d` (cannot happen for a frame `p` was parsed from; the packet
/// is dropped and counted as what it is rather than as a TTL drop, as
/// IPVS's `ip_vs_nat_xmit` sends a failed `skb_ensure_writable` to
/// `tx_error` and never to `ICMP_TIME_EXCEEDED`).
#[inline(always)]
pub fn rewrite_nat(
    d: &mut [u8],
    p: &Parsed,
    inbound: bool,
    addr: Addr,
    port: u16,
    l3d: u16,
    l4d: u16,
) -> Result<(), DropReason> {
    rewrite_ip(d, p.l3, p.v6, inbound, addr, l3d)?;
    let (sport, dport) = if inbound { (None, Some(port)) } else { (Some(port), None) };
    match rewrite_ports(d, p, sport, dport, l4d) {
        Some(r) => r,
        // Another transport with ports up front (SCTP, ...): the port word alone.
        None => {
            let poff = if inbound { p.l4 + 2 } else { p.l4 };
            let Some(w) = d.get_mut(poff..poff + 2) else {
                return Err(DropReason::Malformed);
            };
            w.copy_from_slice(&port.to_be_bytes());
            Ok(())
        }
    }
}

/// The transport part of a NAT rewrite of a TCP or UDP packet: the source and / or
/// destination port set and the checksum adjusted by `l4d`, the connection's precomputed
/// delta (RFC 1624) for every field this rewrite and [`rewrite_addrs`] change (a UDP
/// checksum of 0, "none" over IPv4, stays 0; a result of 0 is sent as 0xffff). `None`
/// for another protocol, nothing changed. One bounds check per header: the parser
/// guaranteed the TCP (20) / UDP (8) header lies inside the frame, so the slice always
/// succeeds (`Malformed` if `p` is not `d`'s parse); constant offsets into fixed-size
/// arrays need no further checks.
#[inline(always)]
pub fn rewrite_ports(
    d: &mut [u8],
    p: &Parsed,
    sport: Option<u16>,
    dport: Option<u16>,
    l4d: u16,
) -> Option<Result<(), DropReason>> {
    let l4 = p.l4;
    let set = |h: &mut [u8]| {
        if let Some(s) = sport {
            h[0..2].copy_from_slice(&s.to_be_bytes());
        }
        if let Some(t) = dport {
            h[2..4].copy_from_slice(&t.to_be_bytes());
        }
    };
    match p.proto {
        PROTO_TCP => {
            let Some(Ok::<&mut [u8; 20], _>(t)) = d.get_mut(l4..l4 + 20).map(|s| s.try_into()) else {
                return Some(Err(DropReason::Malformed));
            };
            set(&mut t[..4]);
            let c = csum::apply16(u16::from_be_bytes([t[16], t[17]]), l4d);
            t[16..18].copy_from_slice(&c.to_be_bytes());
        }
        PROTO_UDP => {
            let Some(Ok::<&mut [u8; 8], _>(u)) = d.get_mut(l4..l4 + 8).map(|s| s.try_into()) else {
                return Some(Err(DropReason::Malformed));
            };
            set(&mut u[..4]);
            let c = u16::from_be_bytes([u[6], u[7]]);
            if c != 0 || p.v6 {
                let mut n = csum::apply16(c, l4d);
                if n == 0 {
                    n = 0xffff;
                }
                u[6..8].copy_from_slice(&n.to_be_bytes());
            }
        }
        _ => return None,
    }
    Some(Ok(()))
}

/// The IP part of the NAT rewrite: inbound sets the destination, outbound the source
/// ([`rewrite_addrs`]).
#[inline(always)]
pub fn rewrite_ip(d: &mut [u8], l3: usize, v6: bool, inbound: bool, addr: Addr, l3d: u16) -> Result<(), DropReason> {
    if inbound {
        rewrite_addrs(d, l3, v6, None, Some(addr), l3d)
    } else {
        rewrite_addrs(d, l3, v6, Some(addr), None, l3d)
    }
}

/// The IP part of a NAT rewrite: the source and / or destination address of the header
/// at `l3` set, TTL / hop limit decremented (the IPv4 header checksum takes `l3d`, which
/// covers both). `TtlExceeded` (nothing changed) if the TTL runs out, `Malformed` if the
/// header does not fit `d`.
#[inline(always)]
pub fn rewrite_addrs(
    d: &mut [u8],
    l3: usize,
    v6: bool,
    src: Option<Addr>,
    dst: Option<Addr>,
    l3d: u16,
) -> Result<(), DropReason> {
    if !v6 {
        let Some(Ok::<&mut [u8; 20], _>(h)) = d.get_mut(l3..l3 + 20).map(|s| s.try_into()) else {
            return Err(DropReason::Malformed);
        };
        if h[8] <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h[8] -= 1;
        if let Some(a) = src {
            h[12..16].copy_from_slice(&addr_v4_bytes(a));
        }
        if let Some(a) = dst {
            h[16..20].copy_from_slice(&addr_v4_bytes(a));
        }
        let c = csum::apply16(u16::from_be_bytes([h[10], h[11]]), l3d);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let Some(Ok::<&mut [u8; 40], _>(h)) = d.get_mut(l3..l3 + 40).map(|s| s.try_into()) else {
            return Err(DropReason::Malformed);
        };
        if h[7] <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h[7] -= 1;
        if let Some(a) = src {
            h[8..24].copy_from_slice(&addr_v6_bytes(a));
        }
        if let Some(a) = dst {
            h[24..40].copy_from_slice(&addr_v6_bytes(a));
        }
    }
    Ok(())
}

/// Write `a` as the source (`src`) or destination address of the IP header
/// at `l3`.
pub fn set_addr(d: &mut [u8], l3: usize, v6: bool, src: bool, a: Addr) {
    if v6 {
        let off = if src { l3 + 8 } else { l3 + 24 };
        d[off..off + 16].copy_from_slice(&addr_v6_bytes(a));
    } else {
        let off = if src { l3 + 12 } else { l3 + 16 };
        d[off..off + 4].copy_from_slice(&addr_v4_bytes(a));
    }
}

/// Recompute the IPv4 header checksum at `l3`.
pub fn fix_ipv4_csum(d: &mut [u8], l3: usize) {
    let ihl = (d[l3] & 0xf) as usize * 4;
    d[l3 + 10] = 0;
    d[l3 + 11] = 0;
    let c = csum::finish(&d[l3..l3 + ihl], 0);
    d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the transport checksum (TCP, UDP, ICMP, ICMPv6) from scratch.
pub fn fix_l4_csum(d: &mut [u8], p: &Parsed) {
    let l3 = p.l3;
    let l4 = p.l4;
    let len = p.end - l4;
    let off = match p.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        PROTO_ICMP | PROTO_ICMPV6 => 2,
        _ => return,
    };
    d[l4 + off] = 0;
    d[l4 + off + 1] = 0;
    let pseudo = if p.proto == PROTO_ICMP {
        0
    } else if p.v6 {
        let s: [u8; 16] = d[l3 + 8..l3 + 24].try_into().expect("16");
        let t: [u8; 16] = d[l3 + 24..l3 + 40].try_into().expect("16");
        csum::pseudo_v6(&s, &t, p.proto, len as u32)
    } else {
        let s: [u8; 4] = d[l3 + 12..l3 + 16].try_into().expect("4");
        let t: [u8; 4] = d[l3 + 16..l3 + 20].try_into().expect("4");
        csum::pseudo_v4(s, t, p.proto, len as u16)
    };
    let mut c = csum::finish(&d[l4..p.end], pseudo);
    if p.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    d[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Encapsulate the IP packet in an outer IPv4 (IPIP) or IPv6 (IPv6-in-IPv6)
/// header from `src` to `rs`. False if it would exceed the MTU.
pub fn encap_ipip<B: Packet>(pkt: &mut B, p: &Parsed, src: Addr, rs: Addr, mtu: u16) -> bool {
    let inner_len = p.end - p.l3;
    let v4 = addr_is_v4(rs);
    let hdr = if v4 { 20 } else { 40 };
    if inner_len + hdr > mtu as usize || !pkt.set_len(p.end) || !pkt.prepend(hdr) {
        return false;
    }
    let d = pkt.data_mut();
    // Move the L2 header to the front, then write the outer header.
    d.copy_within(hdr..hdr + p.l3, 0);
    let o = p.l3;
    if v4 {
        d[o - 2..o].copy_from_slice(&[0x08, 0x00]);
        let h = &mut d[o..o + 20];
        h.fill(0);
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((inner_len + 20) as u16).to_be_bytes());
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = if p.v6 { 41 } else { 4 };
        h[12..16].copy_from_slice(&addr_v4_bytes(src));
        h[16..20].copy_from_slice(&addr_v4_bytes(rs));
        fix_ipv4_csum(d, o);
    } else {
        d[o - 2..o].copy_from_slice(&[0x86, 0xdd]);
        let h = &mut d[o..o + 40];
        h.fill(0);
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
        h[6] = if p.v6 { 41 } else { 4 };
        h[7] = 64;
        h[8..24].copy_from_slice(&addr_v6_bytes(src));
        h[24..40].copy_from_slice(&addr_v6_bytes(rs));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{set_ttl, tcp4};
    use crate::wire::parse::{self, TCP_SYN};

    #[test]
    fn ttl_exhausted_and_bounds_failures_are_told_apart() {
        let rs = parse::v4_to_addr([10, 0, 2, 2]);
        let f = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_SYN, 1, 0, b"");
        let p = parse::parse(&f).unwrap();
        let mut ok = f.clone();
        assert_eq!(rewrite_nat(&mut ok, &p, true, rs, 8080, 0, 0), Ok(()));
        let mut ttl1 = set_ttl(f.clone(), 1);
        assert_eq!(rewrite_nat(&mut ttl1, &p, true, rs, 8080, 0, 0), Err(DropReason::TtlExceeded));
        assert_eq!(ttl1, set_ttl(f.clone(), 1), "left unchanged");
        // Offsets that do not fit the buffer (a parse of another frame).
        let mut short = f[..p.l4 + 10].to_vec();
        assert_eq!(rewrite_nat(&mut short, &p, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
        let mut tiny = f[..p.l3 + 4].to_vec();
        assert_eq!(rewrite_nat(&mut tiny, &p, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
        let p6 = Parsed { v6: true, ..p };
        assert_eq!(rewrite_nat(&mut f[..p.l3 + 30].to_vec(), &p6, true, rs, 8080, 0, 0), Err(DropReason::Malformed));
    }
}
