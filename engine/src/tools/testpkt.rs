//! Small packet builders for fixture tables, benches and fuzz seeds.
//! Frames carry correct checksums; MACs default to [`SRC_MAC`]/[`DST_MAC`]
//! and can be changed with [`with_macs`].

use etherparse::PacketBuilder;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x01];
pub const V6A: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const V6B: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

#[allow(clippy::too_many_arguments)]
pub fn tcp4(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    tcp(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, 64), sport, dport, flags, seq, ack, payload)
}

#[allow(clippy::too_many_arguments)]
pub fn tcp6(
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    tcp(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64), sport, dport, flags, seq, ack, payload)
}

/// A TCP segment on an Ethernet + IP builder (either family).
fn tcp(ip: IpStep, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let t = tcp_flags(ip.tcp(sport, dport, seq, 64240), flags, ack);
    let mut v = Vec::with_capacity(t.size(payload.len()));
    t.write(&mut v, payload).expect("build tcp");
    v
}

/// A UDP datagram on an Ethernet + IP builder (either family).
fn udp(ip: IpStep, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = ip.udp(sport, dport);
    let mut v = Vec::with_capacity(u.size(payload.len()));
    u.write(&mut v, payload).expect("build udp");
    v
}

type IpStep = etherparse::PacketBuilderStep<etherparse::IpHeaders>;

fn tcp_flags(
    mut t: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    flags: u8,
    ack: u32,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    if flags & crate::wire::parse::TCP_SYN != 0 {
        t = t.syn();
    }
    if flags & crate::wire::parse::TCP_FIN != 0 {
        t = t.fin();
    }
    if flags & crate::wire::parse::TCP_RST != 0 {
        t = t.rst();
    }
    if flags & crate::wire::parse::TCP_PSH != 0 {
        t = t.psh();
    }
    if flags & crate::wire::parse::TCP_ACK != 0 {
        t = t.ack(ack);
    }
    t
}

pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    udp(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, 64), sport, dport, payload)
}

pub fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
    udp(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64), sport, dport, payload)
}

/// An ICMPv4 error (`ty`/`code`) from `src` to `dst` quoting `quoted` (an
/// Ethernet frame whose IP packet is quoted: header + first 8 bytes of L4).
pub fn icmp4_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let ihl = (quoted[14] & 0xf) as usize * 4;
    let q = &quoted[14..(14 + ihl + 8).min(quoted.len())];
    let t = match ty {
        3 => etherparse::Icmpv4Type::Unknown { type_u8: 3, code_u8: code, bytes5to8: rest.to_be_bytes() },
        _ => etherparse::Icmpv4Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest.to_be_bytes() },
    };
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, 64).icmpv4(t);
    let mut v = Vec::new();
    b.write(&mut v, q).expect("build icmp4");
    v
}

/// An ICMPv6 error quoting the IPv6 packet of `quoted` (header + 8 bytes).
pub fn icmp6_error(src: [u8; 16], dst: [u8; 16], ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let q = &quoted[14..(14 + 48).min(quoted.len())];
    let t = etherparse::Icmpv6Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest.to_be_bytes() };
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, q).expect("build icmp6");
    v
}

/// An ICMPv4 error quoting the whole IPv4 packet of `quoted` (routers and Linux hosts quote
/// as much as fits in 576 bytes, RFC 1812 4.3.2.3), so the quoted transport header is whole.
pub fn icmp4_error_whole(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let t = etherparse::Icmpv4Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest.to_be_bytes() };
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, 64).icmpv4(t);
    let mut v = Vec::new();
    b.write(&mut v, &quoted[14..]).expect("build icmp4");
    v
}

/// An ICMPv6 error quoting the whole IPv6 packet of `quoted` (RFC 4443: as much as fits).
pub fn icmp6_error_whole(src: [u8; 16], dst: [u8; 16], ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let t = etherparse::Icmpv6Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest.to_be_bytes() };
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &quoted[14..]).expect("build icmp6");
    v
}

/// Does the transport checksum of the packet quoted in ICMP error `frame` verify over the
/// quoted addresses (the quote must hold the whole transport segment)? `Err` says why not.
pub fn verify_quoted_checksum(frame: &[u8]) -> Result<(), String> {
    use crate::wire::csum;
    let p = crate::wire::parse::parse(frame).map_err(|e| format!("parse: {e:?}"))?;
    let i = crate::wire::parse::parse_inner(frame, &p).map_err(|e| format!("quote: {e:?}"))?;
    let seg = &frame[i.l4..p.end];
    let pseudo = if p.v6 {
        let (s, d) = (crate::wire::parse::addr_v6_bytes(i.src), crate::wire::parse::addr_v6_bytes(i.dst));
        csum::pseudo_v6(&s, &d, i.proto, seg.len() as u32)
    } else {
        let (s, d) = (crate::wire::parse::addr_v4_bytes(i.src), crate::wire::parse::addr_v4_bytes(i.dst));
        csum::pseudo_v4(s, d, i.proto, seg.len() as u16)
    };
    match csum::finish(seg, pseudo) {
        0 => Ok(()),
        x => Err(format!("quoted transport checksum off by {x:#06x}")),
    }
}

/// An ICMPv4 echo request.
pub fn ping4(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, 64).icmpv4_echo_request(id, seq);
    let mut v = Vec::new();
    b.write(&mut v, b"ping").expect("build ping");
    v
}

/// An ICMPv6 echo request.
pub fn ping6(src: [u8; 16], dst: [u8; 16], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64).icmpv6_echo_request(id, seq);
    let mut v = Vec::new();
    b.write(&mut v, b"ping").expect("build ping");
    v
}

/// An ARP request "who has `target`? tell `sender`".
pub fn arp_request(sender_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(42);
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&sender);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&target);
    v
}

/// An ARP reply from `sender` to `target`.
pub fn arp_reply(sender_mac: [u8; 6], sender: [u8; 4], target_mac: [u8; 6], target: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(42);
    v.extend_from_slice(&target_mac);
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&sender);
    v.extend_from_slice(&target_mac);
    v.extend_from_slice(&target);
    v
}

/// An IPv6 neighbour solicitation for `target` from `src` (with a source
/// link-layer address option).
pub fn neighbor_solicit(src_mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut dst = [0xffu8, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    dst[13..16].copy_from_slice(&target[13..16]);
    let mut body = Vec::new();
    body.extend_from_slice(&target);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src_mac);
    let t = etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] };
    let dmac = [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]];
    let b = PacketBuilder::ethernet2(src_mac, dmac).ipv6(src, dst, 255).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &body).expect("build ns");
    v
}

/// Add an 802.1Q tag to a frame.
pub fn vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(frame.len() + 4);
    v.extend_from_slice(&frame[..12]);
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&(vid & 0xfff).to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

/// Replace the MAC addresses of a frame.
pub fn with_macs(mut frame: Vec<u8>, src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

/// An ARP request or IPv6 neighbour solicitation (untagged): the only
/// frames the engine builds itself, to resolve a next hop, rather than
/// forwarding or answering a received frame in its own buffer.
pub fn is_solicitation(f: &[u8]) -> bool {
    (f.len() >= 22 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1])
        || (f.len() >= 55 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 135)
}

/// Verify every checksum of a frame (IPv4 header, TCP/UDP/ICMP). Returns a
/// description of the first wrong one.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    use crate::wire::csum;
    let p = crate::wire::parse::parse(frame).map_err(|e| format!("parse: {e:?}"))?;
    if p.arp {
        return Ok(());
    }
    if !p.v6 {
        let ihl = (frame[p.l3] & 0xf) as usize * 4;
        if csum::finish(&frame[p.l3..p.l3 + ihl], 0) != 0 {
            return Err("ipv4 header checksum".into());
        }
    }
    let l4 = &frame[p.l4..p.end];
    let len = l4.len();
    let pseudo = if p.v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&frame[p.l3 + 8..p.l3 + 24]);
        d.copy_from_slice(&frame[p.l3 + 24..p.l3 + 40]);
        csum::pseudo_v6(&s, &d, p.proto, len as u32)
    } else {
        let s = [frame[p.l3 + 12], frame[p.l3 + 13], frame[p.l3 + 14], frame[p.l3 + 15]];
        let d = [frame[p.l3 + 16], frame[p.l3 + 17], frame[p.l3 + 18], frame[p.l3 + 19]];
        csum::pseudo_v4(s, d, p.proto, len as u16)
    };
    let ok = match p.proto {
        crate::wire::parse::PROTO_TCP => csum::finish(l4, pseudo) == 0,
        crate::wire::parse::PROTO_UDP => (!p.v6 && l4[6] == 0 && l4[7] == 0) || csum::finish(l4, pseudo) == 0,
        crate::wire::parse::PROTO_ICMP => csum::finish(l4, 0) == 0,
        crate::wire::parse::PROTO_ICMPV6 => csum::finish(l4, pseudo) == 0,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("L4 checksum of protocol {}", p.proto))
    }
}

/// Set the IPv4 TTL (or IPv6 hop limit) of a frame without VLAN tag,
/// fixing the IPv4 header checksum.
pub fn set_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    if frame[12..14] == [0x08, 0x00] {
        frame[22] = ttl;
        crate::wire::csum::fill_ipv4(&mut frame, 14).expect("an IPv4 header");
    } else if frame[12..14] == [0x86, 0xdd] {
        frame[21] = ttl;
    }
    frame
}

/// An IPv4 frame (no VLAN tag) as corrupted on the wire: one bit of its header checksum
/// flipped, so the header no longer verifies (a receiver following RFC 1122 3.2.1.2, as Linux's
/// `ip_rcv`, drops it).
pub fn bad_ip_csum(mut frame: Vec<u8>) -> Vec<u8> {
    assert_eq!(frame[12..14], [0x08, 0x00], "an IPv4 frame without VLAN tag");
    frame[14 + 11] ^= 0x01;
    frame
}

/// A frame as corrupted on the wire past its IP header: byte `at` (an offset in the frame)
/// XORed with `mask`, every checksum left as it was, so the transport checksum no longer
/// verifies (a receiver drops the segment; Linux's connection tracking marks it INVALID).
pub fn corrupt(mut frame: Vec<u8>, at: usize, mask: u8) -> Vec<u8> {
    assert!(mask != 0 && at < frame.len(), "a byte of the frame, changed");
    frame[at] ^= mask;
    frame
}

/// Cuts an IPv4 frame (Ethernet, no VLAN, IHL 5) into fragments whose IP packets fit `mtu`,
/// with IP ID `id`, as a host's stack does.
pub fn fragment4(frame: &[u8], mtu: usize, id: u16) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let (hdr, data) = ip.split_at(20);
    let chunk = (mtu - 20) / 8 * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = chunk.min(data.len() - off);
        let more = off + n < data.len();
        let mut h = hdr.to_vec();
        h[2..4].copy_from_slice(&((20 + n) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        let fl = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&fl.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let mut f = eth.to_vec();
        f.extend_from_slice(&h);
        f.extend_from_slice(&data[off..off + n]);
        crate::wire::csum::fill_ipv4(&mut f, 14).expect("an IPv4 header");
        out.push(f);
        off += n;
    }
    out
}

/// Cuts an IPv6 frame (Ethernet, no extension headers) into fragments whose IP packets fit
/// `mtu`, with fragment ID `id`.
pub fn fragment6(frame: &[u8], mtu: usize, id: u32) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let (hdr, data) = ip.split_at(40);
    let nh = hdr[6];
    let chunk = (mtu - 48) / 8 * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = chunk.min(data.len() - off);
        let more = off + n < data.len();
        let mut h = hdr.to_vec();
        h[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
        h[6] = 44;
        let mut f = eth.to_vec();
        f.extend_from_slice(&h);
        let fo = (off as u16) | u16::from(more);
        f.extend_from_slice(&[nh, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&data[off..off + n]);
        out.push(f);
        off += n;
    }
    out
}

/// Reassembles fragments (any order) into one unfragmented frame, the way the receiving host
/// does, so tests can verify the datagram's checksums end to end. `None` if incomplete.
pub fn reassemble(frags: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut parts: Vec<(crate::flow::frag::Fragment, &Vec<u8>)> =
        frags.iter().map(|f| crate::flow::frag::parse_fragment(f).map(|p| (p, f))).collect::<Result<_, _>>().ok()?;
    parts.sort_by_key(|(p, _)| p.offset);
    let (first, ff) = parts.first()?;
    let mut data = Vec::new();
    for (p, f) in &parts {
        if p.offset as usize != data.len() {
            return None;
        }
        data.extend_from_slice(&f[p.data..p.end]);
    }
    if parts.last()?.0.more {
        return None;
    }
    let mut out = ff[..first.l3].to_vec();
    if first.v6 {
        let mut h = ff[first.l3..first.l3 + 40].to_vec();
        h[4..6].copy_from_slice(&(data.len() as u16).to_be_bytes());
        h[6] = first.proto;
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
    } else {
        let mut h = ff[first.l3..first.l3 + 20].to_vec();
        h[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        h[6..8].copy_from_slice(&[0, 0]);
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        crate::wire::csum::fill_ipv4(&mut out, first.l3).expect("an IPv4 header");
    }
    Some(out)
}

/// [`tcp4`] with TCP options `opts` (raw bytes, a multiple of 4, at most 40).
#[allow(clippy::too_many_arguments)]
pub fn tcp4_opts(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let body = [opts, payload].concat();
    with_options_len(tcp4(src, sport, dst, dport, flags, seq, ack, &body), opts.len())
}

/// [`tcp6`] with TCP options `opts` (raw bytes, a multiple of 4, at most 40).
#[allow(clippy::too_many_arguments)]
pub fn tcp6_opts(
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let body = [opts, payload].concat();
    with_options_len(tcp6(src, sport, dst, dport, flags, seq, ack, &body), opts.len())
}

/// Turn the first `n` payload bytes of a TCP frame into options (data
/// offset grows by `n / 4` words) and fix the checksum.
fn with_options_len(mut f: Vec<u8>, n: usize) -> Vec<u8> {
    assert!(n.is_multiple_of(4) && n <= 40, "TCP options: a multiple of 4 bytes, at most 40");
    let p = crate::wire::parse::parse(&f).expect("parse built frame");
    f[p.l4 + 12] = (((20 + n) / 4) as u8) << 4 | (f[p.l4 + 12] & 0x0f);
    let p = crate::wire::parse::parse(&f).expect("parse built frame");
    crate::wire::csum::fill_l4(&mut f, &p).expect("a whole segment");
    f
}

/// An MSS option (4 bytes).
pub fn opt_mss(mss: u16) -> Vec<u8> {
    let [a, b] = mss.to_be_bytes();
    vec![2, 4, a, b]
}

/// NOP, NOP, then a SACK option with `blocks` (left, right) edges.
pub fn opt_sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut v = vec![1, 1, 5, (2 + 8 * blocks.len()) as u8];
    for (l, r) in blocks {
        v.extend_from_slice(&l.to_be_bytes());
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

/// A solicited IPv6 neighbour advertisement (Solicited and Override flags: the answer to a
/// solicitation) from `src` for its own address, to `dst` at `dst_mac`, with a target
/// link-layer address option `src_mac`.
pub fn solicited_advert(src_mac: [u8; 6], src: [u8; 16], dst_mac: [u8; 6], dst: [u8; 16]) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&src_mac);
    let t = etherparse::Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [0x60, 0, 0, 0] };
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src, dst, 255).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &body).expect("build na");
    v
}

/// An unsolicited IPv6 neighbour advertisement from `src` for `target`
/// with a target link-layer address option `target_mac`, to all nodes.
pub fn neighbor_advert(src_mac: [u8; 6], src: [u8; 16], target: [u8; 16], target_mac: [u8; 6]) -> Vec<u8> {
    let dst = [0xffu8, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut body = Vec::new();
    body.extend_from_slice(&target);
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&target_mac);
    let t = etherparse::Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [0x20, 0, 0, 0] };
    let b = PacketBuilder::ethernet2(src_mac, [0x33, 0x33, 0, 0, 0, 1]).ipv6(src, dst, 255).icmpv6(t);
    let mut v = Vec::new();
    b.write(&mut v, &body).expect("build na");
    v
}
