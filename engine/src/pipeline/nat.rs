//! Header rewrites of plain NAT and of the tunnel modes (the full-NAT ones are in
//! [`crate::pipeline::fnat`]): destination or source address and port with precomputed
//! RFC 1624 checksum deltas and the TTL / hop limit, checksums recomputed in full where a
//! rewrite is not a delta, and IPIP / IPv6-in-IPv6 encapsulation.

use crate::pipeline::counters::DropReason;
use crate::port::Packet;
use crate::wire::csum;
use crate::wire::parse::{addr_is_v4, addr_v4_bytes, addr_v6_bytes, Addr, Parsed, PROTO_TCP, PROTO_UDP};
use crate::wire::view::{Ipv4, Ipv6, Ports, Tcp, Udp, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_DF, PROTO_IPIP, PROTO_IPV6};

pub use crate::wire::csum::TTL_DELTA;

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
            let mut w = Ports::at_mut(d, p.l4).map_err(|_| DropReason::Malformed)?;
            if inbound {
                w.set_dst(port);
            } else {
                w.set_src(port);
            }
            Ok(())
        }
    }
}

/// The transport part of a NAT rewrite of a TCP or UDP packet: the source and / or
/// destination port set and the checksum adjusted by `l4d`, the connection's precomputed
/// delta (RFC 1624) for every field this rewrite and [`rewrite_addrs`] change (a UDP
/// checksum of 0, "none" over IPv4, stays 0; a result of 0 is sent as 0xffff). `None`
/// for another protocol, nothing changed. One bounds check per header (the view's): the
/// parser guaranteed the TCP (20) / UDP (8) header lies inside the frame, so it always
/// succeeds (`Malformed` if `p` is not `d`'s parse).
#[inline(always)]
pub fn rewrite_ports(
    d: &mut [u8],
    p: &Parsed,
    sport: Option<u16>,
    dport: Option<u16>,
    l4d: u16,
) -> Option<Result<(), DropReason>> {
    match p.proto {
        PROTO_TCP => {
            let Ok(mut t) = Tcp::at_mut(d, p.l4) else {
                return Some(Err(DropReason::Malformed));
            };
            if let Some(s) = sport {
                t.set_src_port(s);
            }
            if let Some(s) = dport {
                t.set_dst_port(s);
            }
            t.adjust_checksum16(l4d);
        }
        PROTO_UDP => {
            let Ok(mut u) = Udp::at_mut(d, p.l4) else {
                return Some(Err(DropReason::Malformed));
            };
            if let Some(s) = sport {
                u.set_src_port(s);
            }
            if let Some(s) = dport {
                u.set_dst_port(s);
            }
            let c = u.checksum();
            if c != 0 || p.v6 {
                let mut n = csum::apply16(c, l4d);
                if n == 0 {
                    n = 0xffff;
                }
                u.set_checksum(n);
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
        let mut h = Ipv4::at_mut(d, l3).map_err(|_| DropReason::Malformed)?;
        let ttl = h.ttl();
        if ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h.set_ttl(ttl - 1);
        if let Some(a) = src {
            h.set_src(addr_v4_bytes(a));
        }
        if let Some(a) = dst {
            h.set_dst(addr_v4_bytes(a));
        }
        h.adjust_checksum16(l3d);
    } else {
        let mut h = Ipv6::at_mut(d, l3).map_err(|_| DropReason::Malformed)?;
        let hops = h.hop_limit();
        if hops <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        h.set_hop_limit(hops - 1);
        if let Some(a) = src {
            h.set_src(addr_v6_bytes(a));
        }
        if let Some(a) = dst {
            h.set_dst(addr_v6_bytes(a));
        }
    }
    Ok(())
}

/// Encapsulate the IP packet in an outer IPv4 (IPIP) or IPv6 (IPv6-in-IPv6)
/// header from `src` to `rs`.
///
/// The outer IPv4 header's DF is the inner IPv4 packet's, and clear over an IPv6 packet, as
/// IPVS's `ip_vs_tunnel_xmit` sets it: a sender that allowed fragmentation lets routers
/// towards the real server fragment the outer packet (or the balancer itself, below), and one
/// doing path MTU discovery still hears of a smaller MTU. An outer header with DF clear takes
/// its ID from `ident` (then advanced): its fragments, wherever they are made, must not mix
/// with another datagram's at the real server (Linux's `ip_select_ident`); one with DF set
/// is never fragmented and gets 0 (RFC 6864).
///
/// False if the outer packet would exceed `mtu`, unless `split` and its DF is clear: it is
/// then built whole (up to 65535 bytes) for the caller to cut into fragments
/// ([`crate::wire::ipfrag`]).
///
/// The inner header is not checked (`csum::ip_header_ok`): it goes as received, so a
/// corrupted one keeps its bad checksum and the real server drops it once decapsulated; the
/// outer header's checksum covers only what the balancer wrote.
pub fn encap_ipip<B: Packet>(
    pkt: &mut B,
    p: &Parsed,
    src: Addr,
    rs: Addr,
    mtu: u16,
    split: bool,
    ident: &mut u16,
) -> bool {
    let inner_len = p.end - p.l3;
    let v4 = addr_is_v4(rs);
    let hdr = if v4 { 20 } else { 40 };
    // The outer DF: the inner IPv4 packet's; none over IPv6.
    let df = if p.v6 { 0 } else { Ipv4::at(pkt.data(), p.l3).map_or(IPV4_DF, |h| h.frag_word() & IPV4_DF) };
    let limit = if split && v4 && df == 0 { u16::MAX } else { mtu } as usize;
    if inner_len + hdr > limit || p.l3 < 14 || !pkt.set_len(p.end) || !pkt.prepend(hdr) {
        return false;
    }
    let d = pkt.data_mut();
    // Move the L2 header to the front, then write the outer header after it (its
    // EtherType, the last two bytes of the L2 header, says which).
    d.copy_within(hdr..hdr + p.l3, 0);
    let o = p.l3;
    let inner = if p.v6 { PROTO_IPV6 } else { PROTO_IPIP };
    if v4 {
        d[o - 2..o].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let Ok(mut h) = Ipv4::at_mut(d, o) else { return false };
        h.clear();
        h.set_version_ihl(0x45);
        h.set_total_len((inner_len + 20) as u16);
        h.set_frag_word(df);
        if df == 0 {
            h.set_ident(*ident);
            *ident = ident.wrapping_add(1);
        }
        h.set_ttl(64);
        h.set_proto(inner);
        h.set_src(addr_v4_bytes(src));
        h.set_dst(addr_v4_bytes(rs));
        csum::fill_ipv4(d, o).is_ok()
    } else {
        d[o - 2..o].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let Ok(mut h) = Ipv6::at_mut(d, o) else { return false };
        h.clear();
        h.set_version_byte(0x60);
        h.set_payload_len(inner_len as u16);
        h.set_next_header(inner);
        h.set_hop_limit(64);
        h.set_src(addr_v6_bytes(src));
        h.set_dst(addr_v6_bytes(rs));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory::HeapBuf;
    use crate::tools::testpkt::{set_ttl, tcp4, udp4, udp6};
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

    /// `f` (IPv4, no VLAN) with DF set or clear and IP ID `id`, its header checksum fixed.
    fn df(mut f: Vec<u8>, on: bool, id: u16) -> Vec<u8> {
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[20] = if on { 0x40 } else { 0 };
        csum::fill_ipv4(&mut f, 14).unwrap();
        f
    }

    /// The outer IPv4 header's DF is the inner IPv4 packet's and clear over IPv6 (IPVS
    /// `ip_vs_tunnel_xmit`); one with DF clear takes its ID from the counter, which moves on,
    /// one with DF set gets 0. Before, the outer DF was always set.
    #[test]
    fn the_outer_df_follows_the_inner_packet() {
        let (src, rs) = (parse::v4_to_addr([10, 0, 2, 1]), parse::v4_to_addr([10, 0, 2, 3]));
        let outer = |frame: &[u8], ident: &mut u16| {
            let p = parse::parse(frame).unwrap();
            let mut b = HeapBuf::from_slice(frame);
            assert!(encap_ipip(&mut b, &p, src, rs, 1500, false, ident));
            let d = b.data().to_vec();
            assert!(csum::ip_header_ok(&d, 14, false));
            let h = Ipv4::at(&d, 14).unwrap();
            (h.frag_word(), h.ident(), h.proto(), d[34..] == frame[14..])
        };
        let mut ident = 7;
        let v4 = |on| df(udp4([10, 0, 1, 2], 4000, [10, 0, 1, 102], 53, &[1; 100]), on, 0x5555);
        assert_eq!(outer(&v4(true), &mut ident), (IPV4_DF, 0, PROTO_IPIP, true), "DF set: copied, ID 0");
        assert_eq!(ident, 7);
        assert_eq!(outer(&v4(false), &mut ident), (0, 7, PROTO_IPIP, true), "DF clear: copied, ID from the counter");
        assert_eq!(outer(&v4(false), &mut ident), (0, 8, PROTO_IPIP, true));
        let v6 = udp6([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 4000, [0xfd; 16], 53, &[1; 100]);
        assert_eq!(outer(&v6, &mut ident), (0, 9, PROTO_IPV6, true), "IPv6 inside: DF clear");
        assert_eq!(ident, 10);
    }

    /// Over the MTU: refused, unless the caller cuts it (`split`) and the outer DF is clear;
    /// then built whole. An IPv6 outer header is never cut.
    #[test]
    fn an_outer_packet_over_the_mtu_is_built_whole_only_to_be_cut() {
        let (src, rs) = (parse::v4_to_addr([10, 0, 2, 1]), parse::v4_to_addr([10, 0, 2, 3]));
        let v4 = |on| df(udp4([10, 0, 1, 2], 4000, [10, 0, 1, 102], 53, &[1; 1400]), on, 1);
        let mut ident = 0;
        let run = |f: &[u8], rs, split, ident: &mut u16| {
            let p = parse::parse(f).unwrap();
            let mut b = HeapBuf::from_slice(f);
            encap_ipip(&mut b, &p, src, rs, 1000, split, ident).then(|| b.data().len())
        };
        assert_eq!(run(&v4(false), rs, false, &mut ident), None);
        assert_eq!(run(&v4(true), rs, true, &mut ident), None, "DF set: the sender gets an error instead");
        assert_eq!(run(&v4(false), rs, true, &mut ident), Some(14 + 20 + 1428));
        let rs6 = parse::v6_to_addr([0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        let src6 = parse::v6_to_addr([0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let p = parse::parse(&v4(false)).unwrap();
        let mut b = HeapBuf::from_slice(&v4(false));
        assert!(!encap_ipip(&mut b, &p, src6, rs6, 1000, true, &mut ident), "IPv6 outer: never cut");
    }
}
