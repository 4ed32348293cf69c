//! Packet parsing: Ethernet, one optional 802.1Q tag, IPv4, IPv6, TCP, UDP,
//! ICMP/ICMPv6 and ARP.
//!
//! Two parsers produce the same [`Parsed`]:
//! - [`parse_fast`], hand-written, for the common case only: Ethernet
//!   [+ one 802.1Q tag], then ARP, or IPv4 without options or IPv6 without
//!   extension headers, carrying TCP, UDP or ICMP/ICMPv6 (so floods of
//!   ARP, neighbour discovery and ICMP errors cost no more to parse than
//!   TCP). It returns `None` for anything else (including anything
//!   malformed), never an error.
//! - [`parse_etherparse`], built on etherparse: the reference parser and
//!   the fallback for everything `parse_fast` declines (options, extension
//!   headers, fragments, errors...).
//!
//! [`parse`] tries the first and falls back to the second. A property test
//! checks that whenever `parse_fast` accepts a frame, etherparse parses it
//! to the identical `Parsed`.
//!
//! The parser validates once and returns byte offsets plus the fields the
//! pipeline needs ([`Parsed`]); after a successful parse the pipeline may
//! index the frame at those offsets without further bounds surprises.
//! Errors are a small `Copy` enum that maps onto drop counters.

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice,
    UdpHeaderSlice,
};

/// An address in the engine's internal form: IPv4 is IPv4-mapped IPv6.
pub type Addr = u128;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
pub fn v4_to_addr(a: [u8; 4]) -> Addr {
    0xffff_0000_0000u128 | u32::from_be_bytes(a) as u128
}

#[inline(always)]
pub fn v6_to_addr(a: [u8; 16]) -> Addr {
    u128::from_be_bytes(a)
}

#[inline(always)]
pub fn addr_is_v4(a: Addr) -> bool {
    (a >> 32) == 0xffff
}

/// Is this IPv6 address IPv4-mapped (::ffff:0:0/96, [`addr_is_v4`] of its [`Addr`])?
/// On the bytes, for the parser: two compares.
#[inline(always)]
pub fn v4_mapped(a: &[u8; 16]) -> bool {
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]) == 0 && a[8..12] == [0, 0, 0xff, 0xff]
}

#[inline(always)]
pub fn addr_v4_bytes(a: Addr) -> [u8; 4] {
    (a as u32).to_be_bytes()
}

#[inline(always)]
pub fn addr_v6_bytes(a: Addr) -> [u8; 16] {
    a.to_be_bytes()
}

pub fn ip_to_addr(ip: std::net::IpAddr) -> Addr {
    match ip {
        std::net::IpAddr::V4(v) => v4_to_addr(v.octets()),
        std::net::IpAddr::V6(v) => v6_to_addr(v.octets()),
    }
}

pub fn addr_to_ip(a: Addr) -> std::net::IpAddr {
    if addr_is_v4(a) {
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(addr_v4_bytes(a)))
    } else {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(addr_v6_bytes(a)))
    }
}

/// Why a frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its headers claim, bad IHL/version, bad lengths.
    Malformed,
    /// An EtherType or IP protocol the engine does not handle.
    Unsupported,
    /// An IP fragment (the engine does not reassemble).
    Fragment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    Arp,
}

/// The result of parsing one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the network header (after Ethernet and any VLAN tag).
    pub l3: usize,
    /// Offset of the transport header (ICMP for ICMP).
    pub l4: usize,
    /// Offset of the transport payload.
    pub payload: usize,
    /// End of the IP packet (frames may carry Ethernet padding after it).
    pub end: usize,
    pub v6: bool,
    pub arp: bool,
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    /// TCP/UDP ports; for ICMP echo the identifier in both; for ICMP
    /// errors 0.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code.
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl Parsed {
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.end - self.payload
    }
}

/// Parse an Ethernet frame: [`parse_fast`], else [`parse_etherparse`].
#[inline(always)]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    match parse_fast(frame) {
        Some(p) => Ok(p),
        None => parse_etherparse(frame),
    }
}

/// The hand-written parser for the common case (see the module docs).
/// `None` means "not the common case": ask [`parse_etherparse`].
#[inline(always)]
pub fn parse_fast(frame: &[u8]) -> Option<Parsed> {
    let mut p = Parsed::default();
    fast_into(frame, &mut p).map(|()| p)
}

/// [`parse`] writing into `out` in place (the worker's per-burst array):
/// no `Parsed` is built elsewhere and copied.
#[inline(always)]
pub fn parse_into(frame: &[u8], out: &mut Result<Parsed, ParseError>) {
    if out.is_err() {
        *out = Ok(Parsed::default());
    }
    if let Ok(p) = out {
        if fast_into(frame, p).is_some() {
            return;
        }
    }
    *out = parse_etherparse(frame);
}

/// [`parse_fast`] into `p`: on success every field of `p` is written (the
/// same values `parse_fast` returns); on `None`, `p` holds garbage.
#[inline(always)]
fn fast_into(frame: &[u8], p: &mut Parsed) -> Option<()> {
    // Ethernet header, then at most one 802.1Q tag.
    let eth: &[u8; 18] = frame.get(..18)?.try_into().ok()?;
    let (off, et) = match [eth[12], eth[13]] {
        [0x81, 0x00] => (18, u16::from_be_bytes([eth[16], eth[17]])),
        et => (14, u16::from_be_bytes(et)),
    };
    match et {
        0x0806 => {
            // ARP: the 28 bytes of an Ethernet/IPv4 ARP packet must be there (the worker
            // checks the hardware and protocol types).
            frame.get(off..off + 28)?;
            *p = Parsed { l3: off, l4: off, payload: off, end: off + 28, arp: true, ..Parsed::default() };
            return Some(());
        }
        0x0800 => {
            let h: &[u8; 20] = frame.get(off..off + 20)?.try_into().ok()?;
            // Version 4, IHL 5 (no options); no fragment (MF or offset).
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None;
            }
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if total < 20 || off + total > frame.len() {
                return None;
            }
            p.l3 = off;
            p.l4 = off + 20;
            p.end = off + total;
            p.v6 = false;
            p.proto = h[9];
            p.src = v4_to_addr([h[12], h[13], h[14], h[15]]);
            p.dst = v4_to_addr([h[16], h[17], h[18], h[19]]);
        }
        0x86dd => {
            let h: &[u8; 40] = frame.get(off..off + 40)?.try_into().ok()?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let end = off + 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
            if end > frame.len() {
                return None;
            }
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            if v4_mapped(&s) || v4_mapped(&d) {
                // Refused by the reference parser (`parse_ipv6`).
                return None;
            }
            p.l3 = off;
            p.l4 = off + 40;
            p.end = end;
            p.v6 = true;
            p.proto = h[6];
            p.src = v6_to_addr(s);
            p.dst = v6_to_addr(d);
        }
        _ => return None,
    };
    p.arp = false;
    p.icmp_type = 0;
    p.icmp_code = 0;
    // `end <= frame.len()` was checked above.
    let l4 = frame.get(p.l4..p.end)?;
    match p.proto {
        PROTO_TCP => {
            let t: &[u8; 20] = l4.get(..20)?.try_into().ok()?;
            let hl = (t[12] >> 4) as usize * 4;
            if hl < 20 || hl > l4.len() {
                return None;
            }
            p.sport = u16::from_be_bytes([t[0], t[1]]);
            p.dport = u16::from_be_bytes([t[2], t[3]]);
            p.tcp_flags = t[13] & 0x3f;
            p.payload = p.l4 + hl;
        }
        PROTO_UDP => {
            let u: &[u8; 8] = l4.get(..8)?.try_into().ok()?;
            let ul = u16::from_be_bytes([u[4], u[5]]) as usize;
            if ul < 8 || ul > l4.len() {
                return None;
            }
            p.sport = u16::from_be_bytes([u[0], u[1]]);
            p.dport = u16::from_be_bytes([u[2], u[3]]);
            p.tcp_flags = 0;
            p.payload = p.l4 + 8;
        }
        // ICMP over IPv4, ICMPv6 over IPv6 (the other pairings are etherparse's to refuse).
        PROTO_ICMP | PROTO_ICMPV6 if (p.proto == PROTO_ICMPV6) == p.v6 => {
            let m: &[u8; 8] = l4.get(..8)?.try_into().ok()?;
            p.icmp_type = m[0];
            p.icmp_code = m[1];
            let id = if icmp_is_echo(p.v6, m[0]) { u16::from_be_bytes([m[4], m[5]]) } else { 0 };
            p.sport = id;
            p.dport = id;
            p.tcp_flags = 0;
            p.payload = p.l4 + 8;
        }
        _ => return None,
    }
    Some(())
}

/// The etherparse-based reference parser (every frame type the engine
/// handles; the slow path and the fallback of [`parse`]).
pub fn parse_etherparse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| ParseError::Malformed)?;
    let mut off = 14;
    let mut et = eth.ether_type();
    if et == EtherType::VLAN_TAGGED_FRAME {
        let v = SingleVlanHeaderSlice::from_slice(&frame[off..]).map_err(|_| ParseError::Malformed)?;
        et = v.ether_type();
        off += 4;
    }
    match et {
        EtherType::IPV4 => parse_ipv4(frame, off),
        EtherType::IPV6 => parse_ipv6(frame, off),
        EtherType::ARP => {
            if frame.len() < off + 28 {
                return Err(ParseError::Malformed);
            }
            Ok(Parsed { l3: off, l4: off, payload: off, end: off + 28, arp: true, ..Default::default() })
        }
        _ => Err(ParseError::Unsupported),
    }
}

fn parse_ipv4(frame: &[u8], off: usize) -> Result<Parsed, ParseError> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[off..]).map_err(|_| ParseError::Malformed)?;
    let hlen = ip.ihl() as usize * 4;
    let total = ip.total_len() as usize;
    if total < hlen || off + total > frame.len() {
        return Err(ParseError::Malformed);
    }
    if ip.is_fragmenting_payload() {
        return Err(ParseError::Fragment);
    }
    let mut p = Parsed {
        l3: off,
        l4: off + hlen,
        end: off + total,
        v6: false,
        proto: ip.protocol().0,
        src: v4_to_addr(ip.source()),
        dst: v4_to_addr(ip.destination()),
        ..Default::default()
    };
    parse_l4(frame, &mut p)?;
    Ok(p)
}

fn parse_ipv6(frame: &[u8], off: usize) -> Result<Parsed, ParseError> {
    let ip = Ipv6HeaderSlice::from_slice(&frame[off..]).map_err(|_| ParseError::Malformed)?;
    let end = off + 40 + ip.payload_length() as usize;
    if end > frame.len() {
        return Err(ParseError::Malformed);
    }
    // IPv4-mapped addresses (::ffff:0:0/96) never appear in an IPv6 header on the wire (RFC
    // 6890; Linux drops such a source in `ip6_rcv_core`). The engine keeps IPv4 addresses in
    // exactly that form, so such a packet would share its flow keys with IPv4 traffic (an
    // IPv6 packet could hit an IPv4 connection): malformed.
    if addr_is_v4(v6_to_addr(ip.source())) || addr_is_v4(v6_to_addr(ip.destination())) {
        return Err(ParseError::Malformed);
    }
    let nh = ip.next_header();
    if nh == IpNumber::IPV6_FRAGMENTATION_HEADER {
        return Err(ParseError::Fragment);
    }
    let mut p = Parsed {
        l3: off,
        l4: off + 40,
        end,
        v6: true,
        proto: nh.0,
        src: v6_to_addr(ip.source()),
        dst: v6_to_addr(ip.destination()),
        ..Default::default()
    };
    parse_l4(frame, &mut p)?;
    Ok(p)
}

#[inline]
fn parse_l4(frame: &[u8], p: &mut Parsed) -> Result<(), ParseError> {
    let l4 = &frame[p.l4..p.end];
    match p.proto {
        PROTO_TCP => {
            let t = TcpHeaderSlice::from_slice(l4).map_err(|_| ParseError::Malformed)?;
            p.sport = t.source_port();
            p.dport = t.destination_port();
            p.payload = p.l4 + t.data_offset() as usize * 4;
            p.tcp_flags = l4[13] & 0x3f;
        }
        PROTO_UDP => {
            let u = UdpHeaderSlice::from_slice(l4).map_err(|_| ParseError::Malformed)?;
            if (u.length() as usize) < 8 || u.length() as usize > l4.len() {
                return Err(ParseError::Malformed);
            }
            p.sport = u.source_port();
            p.dport = u.destination_port();
            p.payload = p.l4 + 8;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if (p.proto == PROTO_ICMP) == p.v6 {
                return Err(ParseError::Unsupported);
            }
            if l4.len() < 8 {
                return Err(ParseError::Malformed);
            }
            p.icmp_type = l4[0];
            p.icmp_code = l4[1];
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            if icmp_is_echo(p.v6, p.icmp_type) {
                p.sport = id;
                p.dport = id;
            }
            p.payload = p.l4 + 8;
        }
        _ => return Err(ParseError::Unsupported),
    }
    if p.payload > p.end {
        return Err(ParseError::Malformed);
    }
    Ok(())
}

/// Echo request/reply?
#[inline]
pub fn icmp_is_echo(v6: bool, ty: u8) -> bool {
    if v6 {
        ty == 128 || ty == 129
    } else {
        ty == 8 || ty == 0
    }
}

/// ICMP error types the engine translates: destination unreachable (incl.
/// fragmentation needed / packet too big), time exceeded, parameter problem.
#[inline]
pub fn icmp_is_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 11 | 12)
    }
}

/// The packet quoted inside an ICMP error: IP header plus at least the
/// first 8 bytes of the transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// Offset of the inner IP header in the frame.
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
}

/// Parse the packet quoted in the ICMP error of `p`. `Fragment`: the quote is a later IPv4
/// fragment (no transport header in it).
pub fn parse_inner(frame: &[u8], p: &Parsed) -> Result<Inner, ParseError> {
    parse_quoted(frame, p.l4 + 8, p.end, p.v6)
}

/// The tunnel packet (IPv4 or IPv6 in IPv4 or IPv6, as `encap_ipip` builds it) quoted in an
/// ICMP error: its outer header's addresses and length, and the packet inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelQuote {
    /// The outer header's source and destination (the balancer, the real server).
    pub src: Addr,
    pub dst: Addr,
    /// The outer header's length (what the tunnel adds to a packet).
    pub hdr: usize,
    /// The quoted packet inside (the client's), IPv6 or not.
    pub inner: Inner,
    pub inner_v6: bool,
}

/// The tunnel packet quoted in the ICMP error of `p`: `Ok(None)` when the quote is not one
/// (its outer header cut short, or another protocol inside: [`parse_inner`]'s to take), an
/// error when it is one whose inner packet is not there whole (IP header and 8 bytes of a
/// TCP or UDP header) or is a later fragment.
pub fn parse_tunnel_quote(frame: &[u8], p: &Parsed) -> Result<Option<TunnelQuote>, ParseError> {
    let start = p.l4 + 8;
    let Some(q) = frame.get(start..p.end) else { return Ok(None) };
    let (hdr, proto, src, dst) = if !p.v6 {
        let Some(h) = q.get(..20) else { return Ok(None) };
        if h[0] >> 4 != 4 || (h[0] & 0xf) < 5 {
            return Ok(None);
        }
        let src = v4_to_addr([h[12], h[13], h[14], h[15]]);
        let dst = v4_to_addr([h[16], h[17], h[18], h[19]]);
        (((h[0] & 0xf) as usize) * 4, h[9], src, dst)
    } else {
        let Some(h) = q.get(..40) else { return Ok(None) };
        if h[0] >> 4 != 6 {
            return Ok(None);
        }
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        s.copy_from_slice(&h[8..24]);
        d.copy_from_slice(&h[24..40]);
        if v4_mapped(&s) || v4_mapped(&d) {
            // Never an outer header the balancer sent (as in `parse_ipv6`): it would name an
            // IPv4 real server or address.
            return Err(ParseError::Malformed);
        }
        (40, h[6], v6_to_addr(s), v6_to_addr(d))
    };
    let inner_v6 = match proto {
        4 => false,
        41 => true,
        _ => return Ok(None),
    };
    if !p.v6 && u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
        // A later fragment of a tunnel packet (the balancer sends none: DF): no inner header.
        return Err(ParseError::Fragment);
    }
    let inner = parse_quoted(frame, start + hdr, p.end, inner_v6)?;
    if inner.proto != PROTO_TCP && inner.proto != PROTO_UDP {
        // The balancer tunnels TCP and UDP connections only.
        return Err(ParseError::Unsupported);
    }
    Ok(Some(TunnelQuote { src, dst, hdr, inner, inner_v6 }))
}

/// The packet quoted from `start` to `end` of `frame`, IPv6 or IPv4 (`v6`): its IP header and
/// the first 8 bytes of its transport header.
fn parse_quoted(frame: &[u8], start: usize, end: usize, v6: bool) -> Result<Inner, ParseError> {
    let q = frame.get(start..end).ok_or(ParseError::Malformed)?;
    let (l4, proto, src, dst) = if !v6 {
        if q.len() < 20 || q[0] >> 4 != 4 {
            return Err(ParseError::Malformed);
        }
        let ihl = (q[0] & 0xf) as usize * 4;
        if ihl < 20 || q.len() < ihl + 8 {
            return Err(ParseError::Malformed);
        }
        if u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
            // A later fragment: what follows its header is payload, not ports (conntrack's
            // `ipv4_get_l4proto` refuses it too). Read as ports, the sender's data would
            // name a connection of its choosing.
            return Err(ParseError::Fragment);
        }
        let src = v4_to_addr([q[12], q[13], q[14], q[15]]);
        let dst = v4_to_addr([q[16], q[17], q[18], q[19]]);
        (start + ihl, q[9], src, dst)
    } else {
        if q.len() < 48 || q[0] >> 4 != 6 {
            return Err(ParseError::Malformed);
        }
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&q[8..24]);
        d.copy_from_slice(&q[24..40]);
        let (src, dst) = (v6_to_addr(s), v6_to_addr(d));
        if addr_is_v4(src) || addr_is_v4(dst) {
            // As in an outer header (`parse_ipv6`): it would name an IPv4 connection.
            return Err(ParseError::Malformed);
        }
        (start + 40, q[6], src, dst)
    };
    let ports = frame.get(l4..l4 + 8).ok_or(ParseError::Malformed)?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]])),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let id = u16::from_be_bytes([ports[4], ports[5]]);
            (id, id)
        }
        _ => return Err(ParseError::Unsupported),
    };
    Ok(Inner { l3: start, l4, proto, src, dst, sport, dport })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::*;

    const A4: [u8; 4] = [10, 0, 1, 2];
    const B4: [u8; 4] = [10, 0, 1, 100];

    #[test]
    fn ipv4_mapped_addresses_in_an_ipv6_header_are_malformed() {
        let v6 = |last: [u8; 6]| {
            let mut a = [0u8; 16];
            a[10..].copy_from_slice(&last);
            a
        };
        let mapped = v6([0xff, 0xff, 10, 0, 1, 2]);
        assert!(v4_mapped(&mapped) && addr_is_v4(v6_to_addr(mapped)));
        for i in 0..12 {
            let mut m = mapped;
            m[i] ^= 0x10;
            assert!(!v4_mapped(&m) && !addr_is_v4(v6_to_addr(m)), "byte {i} changed");
        }
        let other = v6([0xff, 0xfe, 10, 0, 1, 2]);
        let compatible = v6([0, 0, 10, 0, 1, 100]);
        for (src, dst) in [(mapped, other), (other, mapped), (mapped, mapped)] {
            let f = tcp6(src, 1, dst, 2, TCP_ACK, 1, 1, b"x");
            assert_eq!(parse_fast(&f), None);
            assert_eq!(parse(&f), Err(ParseError::Malformed));
        }
        // One bit off the prefix, or IPv4-compatible (::a.b.c.d): ordinary IPv6.
        let f = tcp6(other, 1, compatible, 2, TCP_ACK, 1, 1, b"x");
        assert_eq!(parse(&f).map(|p| (p.v6, p.src, p.dst)), Ok((true, v6_to_addr(other), v6_to_addr(compatible))));
        assert!(parse_fast(&f).is_some());
        // Nor in the packet an ICMPv6 error quotes.
        for (quoted, ok) in [(tcp6(mapped, 1, other, 2, TCP_ACK, 1, 1, b""), false), (f.clone(), true)] {
            let e = icmp6_error(other, compatible, 1, 0, 0, &quoted);
            let p = parse(&e).expect("the error itself is well-formed");
            assert_eq!(parse_inner(&e, &p).is_ok(), ok, "{:?}", parse_inner(&e, &p));
        }
    }

    #[test]
    fn fixture_table() {
        struct Case {
            what: &'static str,
            frame: Vec<u8>,
            want: Result<(u8, u16, u16), ParseError>,
        }
        let tcp = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_SYN, 1, 0, b"");
        let mut bad_ihl = tcp.clone();
        bad_ihl[14] = 0x44;
        let mut long_total = tcp.clone();
        long_total[16] = 0x05;
        let mut frag = tcp.clone();
        frag[20] = 0x20; // MF
        let cases = vec![
            Case { what: "tcp v4", frame: tcp.clone(), want: Ok((PROTO_TCP, 40000, 80)) },
            Case {
                what: "udp v4",
                frame: udp4([10, 0, 1, 2], 5353, [10, 0, 1, 100], 53, b"hello"),
                want: Ok((PROTO_UDP, 5353, 53)),
            },
            Case {
                what: "tcp v6",
                frame: tcp6(V6A, 1234, V6B, 21, TCP_ACK, 5, 6, b"x"),
                want: Ok((PROTO_TCP, 1234, 21)),
            },
            Case { what: "vlan", frame: vlan(&tcp, 7), want: Ok((PROTO_TCP, 40000, 80)) },
            Case { what: "truncated eth", frame: tcp[..10].to_vec(), want: Err(ParseError::Malformed) },
            Case { what: "truncated ip", frame: tcp[..30].to_vec(), want: Err(ParseError::Malformed) },
            Case { what: "truncated tcp", frame: tcp[..40].to_vec(), want: Err(ParseError::Malformed) },
            Case { what: "bad ihl", frame: bad_ihl, want: Err(ParseError::Malformed) },
            Case { what: "total len beyond frame", frame: long_total, want: Err(ParseError::Malformed) },
            Case { what: "fragment", frame: frag, want: Err(ParseError::Fragment) },
            Case { what: "echo v4: the id in both ports", frame: ping4(A4, B4, 7, 1), want: Ok((PROTO_ICMP, 7, 7)) },
            Case {
                what: "icmp error v4: no ports",
                frame: icmp4_error(A4, B4, 3, 3, 0, &tcp),
                want: Ok((PROTO_ICMP, 0, 0)),
            },
            Case {
                what: "icmp v4 shorter than its 8-byte header",
                frame: {
                    let mut f = ping4(A4, B4, 7, 1);
                    f[16..18].copy_from_slice(&27u16.to_be_bytes());
                    f
                },
                want: Err(ParseError::Malformed),
            },
            Case {
                what: "icmpv6 inside ipv4",
                frame: {
                    let mut f = ping4(A4, B4, 7, 1);
                    f[23] = PROTO_ICMPV6;
                    f
                },
                want: Err(ParseError::Unsupported),
            },
            Case {
                what: "neighbour solicitation",
                frame: neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B),
                want: Ok((PROTO_ICMPV6, 0, 0)),
            },
            Case {
                what: "neighbour advertisement",
                frame: neighbor_advert([2, 0, 0, 0, 0, 1], V6A, V6A, [2, 0, 0, 0, 0, 1]),
                want: Ok((PROTO_ICMPV6, 0, 0)),
            },
            Case {
                what: "icmp inside ipv6",
                frame: {
                    let mut f = neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B);
                    f[20] = PROTO_ICMP;
                    f
                },
                want: Err(ParseError::Unsupported),
            },
            Case {
                what: "icmpv6 cut inside its header",
                frame: {
                    let mut f = neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B);
                    f[18..20].copy_from_slice(&4u16.to_be_bytes());
                    f
                },
                want: Err(ParseError::Malformed),
            },
            Case { what: "arp", frame: arp_request([2, 0, 0, 0, 0, 1], A4, B4), want: Ok((0, 0, 0)) },
            Case { what: "arp in vlan", frame: vlan(&arp_request([2, 0, 0, 0, 0, 1], A4, B4), 5), want: Ok((0, 0, 0)) },
            Case {
                what: "truncated arp",
                frame: arp_request([2, 0, 0, 0, 0, 1], A4, B4)[..41].to_vec(),
                want: Err(ParseError::Malformed),
            },
            Case {
                what: "unknown ethertype",
                frame: {
                    let mut f = tcp.clone();
                    f[12] = 0x88;
                    f[13] = 0xcc;
                    f
                },
                want: Err(ParseError::Unsupported),
            },
        ];
        for c in cases {
            let got = parse(&c.frame).map(|p| (p.proto, p.sport, p.dport));
            assert_eq!(got, c.want, "{}", c.what);
            assert_eq!(got, parse_etherparse(&c.frame).map(|p| (p.proto, p.sport, p.dport)), "{}", c.what);
        }
    }

    #[test]
    fn icmp_and_arp_fields() {
        let ns = neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B);
        let p = parse_fast(&ns).expect("fast path");
        assert_eq!((p.v6, p.arp, p.icmp_type, p.icmp_code), (true, false, 135, 0));
        assert_eq!((p.l3, p.l4, p.payload, p.end), (14, 54, 62, ns.len()));
        let solicited = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, V6B[13], V6B[14], V6B[15]];
        assert_eq!((p.src, p.dst), (v6_to_addr(V6A), v6_to_addr(solicited)));
        let err = icmp4_error(A4, B4, 11, 0, 0, &tcp4(B4, 1, A4, 2, TCP_ACK, 0, 0, b""));
        let p = parse_fast(&err).expect("fast path");
        assert_eq!((p.v6, p.icmp_type, p.icmp_code, p.payload), (false, 11, 0, 14 + 20 + 8));
        assert_eq!(parse_inner(&err, &p).map(|i| (i.sport, i.dport)), Ok((1, 2)));
        let arp = vlan(&arp_request([2, 0, 0, 0, 0, 1], A4, B4), 5);
        let p = parse_fast(&arp).expect("fast path");
        assert_eq!((p.arp, p.l3, p.end, p.proto, p.src), (true, 18, 46, 0, 0));
    }

    #[test]
    fn padding_is_not_payload() {
        let mut f = tcp4([10, 0, 1, 2], 1, [10, 0, 1, 3], 2, TCP_ACK, 0, 0, b"");
        f.extend_from_slice(&[0u8; 6]);
        let p = parse(&f).unwrap();
        assert_eq!(p.payload_len(), 0);
        assert_eq!(p.end, f.len() - 6);
    }

    /// Frames of every kind the fast parser may see, plus ones it must decline.
    fn corpus() -> Vec<Vec<u8>> {
        let tcp = tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_SYN | TCP_ACK, 1, 2, b"hello world");
        let mut opts = tcp.clone();
        opts[14] = 0x46;
        let mut ping_opts = ping4([10, 0, 1, 2], [10, 0, 1, 100], 7, 1);
        ping_opts[14] = 0x46;
        // IPv6 with a hop-by-hop header before the ICMPv6 (next header 0).
        let mut ns_ext = neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B);
        ns_ext[20] = 0;
        vec![
            // Taken by the fast parser (the first FAST_TAKES).
            tcp.clone(),
            udp4([10, 0, 1, 2], 5353, [10, 0, 1, 100], 53, b"hello"),
            tcp6(V6A, 1234, V6B, 21, TCP_ACK, 5, 6, b"xyz"),
            udp6(V6A, 1234, V6B, 53, b"q"),
            vlan(&tcp, 7),
            vlan(&udp6(V6A, 1, V6B, 2, b""), 9),
            ping4([10, 0, 1, 2], [10, 0, 1, 100], 7, 1),
            icmp4_error([10, 0, 2, 2], [10, 0, 1, 100], 3, 4, 1400, &tcp),
            icmp6_error(V6B, V6A, 1, 4, 0, &udp6(V6A, 1234, V6B, 53, b"q")),
            arp_request([2, 0, 0, 0, 0, 1], [10, 0, 1, 2], [10, 0, 1, 100]),
            arp_reply([2, 0, 0, 0, 0, 1], [10, 0, 1, 2], [2, 0, 0, 0, 0, 2], [10, 0, 1, 100]),
            neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B),
            neighbor_advert([2, 0, 0, 0, 0, 1], V6A, V6A, [2, 0, 0, 0, 0, 1]),
            vlan(&neighbor_solicit([2, 0, 0, 0, 0, 1], V6A, V6B), 3),
            // Declined: left to etherparse.
            vlan(&vlan(&tcp, 3), 4),
            opts,
            ping_opts,
            ns_ext,
        ]
    }

    /// How many frames at the start of [`corpus`] the fast parser takes.
    const FAST_TAKES: usize = 14;

    #[test]
    fn fast_parser_takes_the_common_case() {
        let c = corpus();
        for f in &c[..FAST_TAKES] {
            assert!(parse_fast(f).is_some());
            assert_eq!(parse_fast(f).map(Ok), Some(parse_etherparse(f)));
        }
        for f in &c[FAST_TAKES..] {
            assert_eq!(parse_fast(f), None, "declined: left to etherparse");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_parser_agrees_with_etherparse(
            which in 0usize..corpus().len(),
            muts in proptest::collection::vec((0usize..128, proptest::num::u8::ANY), 0..4),
            cut in 0usize..160,
            extra in 0usize..8,
        ) {
            let mut f = corpus()[which].clone();
            for (i, b) in muts {
                let i = i % f.len();
                f[i] = b;
            }
            f.extend(std::iter::repeat_n(0u8, extra));
            f.truncate(cut.max(1));
            if let Some(p) = parse_fast(&f) {
                proptest::prop_assert_eq!(Ok(p), parse_etherparse(&f));
            }
            proptest::prop_assert_eq!(parse(&f), parse_etherparse(&f));
        }
        #[test]
        fn fast_parser_agrees_on_random_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Some(p) = parse_fast(&data) {
                proptest::prop_assert_eq!(Ok(p), parse_etherparse(&data));
            }
        }
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&data);
        }
        #[test]
        fn mutated_packets_never_panic(i in 0usize..74, b in proptest::num::u8::ANY, cut in 0usize..80) {
            let mut f = tcp4([10, 0, 1, 2], 1, [10, 0, 1, 3], 2, TCP_ACK, 0, 0, b"abcdefgh");
            let i = i % f.len();
            f[i] = b;
            f.truncate(cut.max(1).min(f.len()));
            if let Ok(p) = parse(&f) {
                if icmp_is_error(p.v6, p.icmp_type) && (p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6) {
                    let _ = parse_inner(&f, &p);
                    let _ = parse_tunnel_quote(&f, &p);
                }
            }
        }
    }
}
