//! Typed views over the headers of a frame: Ethernet addresses, IPv4, IPv6, TCP, UDP,
//! ICMP / ICMPv6, and the port word of any transport with ports up front.
//!
//! A view borrows a header's fixed part as a fixed-size array (`&[u8; 20]` for IPv4, ...),
//! taken from the frame by a checked constructor (`at` / `at_mut`: [`Truncated`] if the
//! frame does not hold it), so the pipeline names fields (`ttl`, `set_dst`, `checksum`)
//! instead of adding offsets to `l3` / `l4`, and, the length being part of the type, the
//! field accessors compile to plain loads and stores with no bounds check.
//!
//! Getters work on shared and mutable views; setters on mutable ones. Checksums are left
//! to the caller: [`crate::wire::csum`] has the RFC 1624 deltas and full sums, and a view
//! applies a delta to its own checksum field (`adjust_checksum`).

use crate::wire::csum;
use crate::wire::parse::{addr_v4_bytes, addr_v6_bytes, Addr};
use std::borrow::{Borrow, BorrowMut};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv4 flags and fragment offset word with only "don't fragment" set.
pub const IPV4_DF: u16 = 0x4000;
/// Protocol number of IPv4 in IP (IPIP).
pub const PROTO_IPIP: u8 = 4;
/// Protocol number of IPv6 in IP.
pub const PROTO_IPV6: u8 = 41;

/// Bytes of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// ICMP echo request and reply types.
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP "destination unreachable" and its code "fragmentation needed" (RFC 792 / 1191).
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 "packet too big" (RFC 4443).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 echo request and reply types.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// The frame does not hold the header a view was asked for (a parse of another frame, or a
/// truncated one): the pipeline drops it as `Malformed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("header truncated")
    }
}

impl std::error::Error for Truncated {}

/// `N` bytes of `d` from `at`.
#[inline(always)]
fn fixed<const N: usize>(d: &[u8], at: usize) -> Result<&[u8; N], Truncated> {
    match d.get(at..at.wrapping_add(N)).map(<&[u8; N]>::try_from) {
        Some(Ok(h)) => Ok(h),
        _ => Err(Truncated),
    }
}

/// `N` bytes of `d` from `at`, mutable.
#[inline(always)]
fn fixed_mut<const N: usize>(d: &mut [u8], at: usize) -> Result<&mut [u8; N], Truncated> {
    match d.get_mut(at..at.wrapping_add(N)).map(<&mut [u8; N]>::try_from) {
        Some(Ok(h)) => Ok(h),
        _ => Err(Truncated),
    }
}

/// A header field's type, read from and written to its big-endian bytes at a constant
/// offset of a fixed-size header (so the accessors compile to plain loads and stores).
trait Field: Sized {
    fn read<const N: usize>(h: &[u8; N], at: usize) -> Self;
    fn write<const N: usize>(self, h: &mut [u8; N], at: usize);
}

impl Field for u8 {
    #[inline(always)]
    fn read<const N: usize>(h: &[u8; N], at: usize) -> u8 {
        h[at]
    }
    #[inline(always)]
    fn write<const N: usize>(self, h: &mut [u8; N], at: usize) {
        h[at] = self;
    }
}

impl Field for u16 {
    #[inline(always)]
    fn read<const N: usize>(h: &[u8; N], at: usize) -> u16 {
        u16::from_be_bytes(<[u8; 2]>::read(h, at))
    }
    #[inline(always)]
    fn write<const N: usize>(self, h: &mut [u8; N], at: usize) {
        self.to_be_bytes().write(h, at);
    }
}

impl Field for u32 {
    #[inline(always)]
    fn read<const N: usize>(h: &[u8; N], at: usize) -> u32 {
        u32::from_be_bytes(<[u8; 4]>::read(h, at))
    }
    #[inline(always)]
    fn write<const N: usize>(self, h: &mut [u8; N], at: usize) {
        self.to_be_bytes().write(h, at);
    }
}

/// Addresses (MAC, IPv4, IPv6): their bytes as they are.
impl<const M: usize> Field for [u8; M] {
    #[inline(always)]
    fn read<const N: usize>(h: &[u8; N], at: usize) -> [u8; M] {
        let mut a = [0u8; M];
        a.copy_from_slice(&h[at..at + M]);
        a
    }
    #[inline(always)]
    fn write<const N: usize>(self, h: &mut [u8; N], at: usize) {
        h[at..at + M].copy_from_slice(&self);
    }
}

/// Swap the `n`-byte fields at `a` and `a + n`.
#[inline(always)]
fn swap_fields<const N: usize>(h: &mut [u8; N], a: usize, n: usize) {
    let (x, y) = h[a..a + 2 * n].split_at_mut(n);
    x.swap_with_slice(y);
}

/// Defines a view type over a fixed `$len`-byte header: its two checked constructors and,
/// for each field (`getter, setter: type = offset`), its accessors.
macro_rules! view {
    (
        $(#[$m:meta])* $name:ident, $len:expr;
        $( $(#[$fm:meta])* $get:ident, $set:ident: $t:ty = $at:expr; )*
    ) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $name<B>(B);

        impl<'a> $name<&'a [u8; $len]> {
            /// The header at offset `at` of frame `d`.
            #[inline(always)]
            pub fn at(d: &'a [u8], at: usize) -> Result<Self, Truncated> {
                fixed::<$len>(d, at).map($name)
            }
        }

        impl<'a> $name<&'a mut [u8; $len]> {
            /// The header at offset `at` of frame `d`, to be written.
            #[inline(always)]
            pub fn at_mut(d: &'a mut [u8], at: usize) -> Result<Self, Truncated> {
                fixed_mut::<$len>(d, at).map($name)
            }
        }

        impl<B: Borrow<[u8; $len]>> $name<B> {
            /// Bytes of the header's fixed part (what the view covers).
            pub const LEN: usize = $len;

            #[inline(always)]
            fn h(&self) -> &[u8; $len] {
                self.0.borrow()
            }

            $(
                $(#[$fm])*
                #[inline(always)]
                pub fn $get(&self) -> $t {
                    <$t as Field>::read(self.h(), $at)
                }
            )*
        }

        impl<B: BorrowMut<[u8; $len]>> $name<B> {
            #[inline(always)]
            fn h_mut(&mut self) -> &mut [u8; $len] {
                self.0.borrow_mut()
            }

            $(
                $(#[$fm])*
                #[inline(always)]
                pub fn $set(&mut self, v: $t) {
                    Field::write(v, self.h_mut(), $at)
                }
            )*
        }
    };
}

view! {
    /// The two MAC addresses that open an Ethernet frame (destination, source); the
    /// EtherType's place depends on an 802.1Q tag, which [`crate::wire::parse`] handles.
    EthAddrs, 12;
    dst, set_dst: [u8; 6] = 0;
    src, set_src: [u8; 6] = 6;
}

impl<B: BorrowMut<[u8; 12]>> EthAddrs<B> {
    /// Destination and source exchanged (to answer the frame).
    #[inline(always)]
    pub fn swap(&mut self) {
        swap_fields(self.h_mut(), 0, 6);
    }
}

view! {
    /// An IPv4 header's fixed 20 bytes (options, if any, follow them).
    Ipv4, 20;
    /// Version (4) and header length (in 32-bit words).
    version_ihl, set_version_ihl: u8 = 0;
    /// Type of service / DSCP and ECN.
    tos, set_tos: u8 = 1;
    /// The IP packet's length (header and payload).
    total_len, set_total_len: u16 = 2;
    /// Identification (of a datagram's fragments).
    ident, set_ident: u16 = 4;
    /// Flags and fragment offset.
    frag_word, set_frag_word: u16 = 6;
    ttl, set_ttl: u8 = 8;
    proto, set_proto: u8 = 9;
    checksum, set_checksum: u16 = 10;
    src, set_src: [u8; 4] = 12;
    dst, set_dst: [u8; 4] = 16;
}

impl<B: Borrow<[u8; 20]>> Ipv4<B> {
    /// The header's length in bytes, options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.version_ihl() & 0xf) as usize * 4
    }
}

impl<B: BorrowMut<[u8; 20]>> Ipv4<B> {
    /// The header checksum adjusted by an RFC 1624 delta.
    #[inline(always)]
    pub fn adjust_checksum(&mut self, delta: u32) {
        let c = csum::apply(self.checksum(), delta);
        self.set_checksum(c);
    }
    /// [`Ipv4::adjust_checksum`] by a folded (16-bit) delta: one fold fewer.
    #[inline(always)]
    pub fn adjust_checksum16(&mut self, delta: u16) {
        let c = csum::apply16(self.checksum(), delta);
        self.set_checksum(c);
    }
    /// Source and destination exchanged (the header checksum does not change).
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        swap_fields(self.h_mut(), 12, 4);
    }
    /// The whole fixed part zeroed (a header about to be written field by field).
    #[inline(always)]
    pub fn clear(&mut self) {
        *self.h_mut() = [0; 20];
    }
}

view! {
    /// An IPv6 header (40 bytes; extension headers, if any, follow it).
    Ipv6, 40;
    /// Version (6) and the traffic class's high nibble.
    version_byte, set_version_byte: u8 = 0;
    /// Bytes after this header.
    payload_len, set_payload_len: u16 = 4;
    next_header, set_next_header: u8 = 6;
    hop_limit, set_hop_limit: u8 = 7;
    src, set_src: [u8; 16] = 8;
    dst, set_dst: [u8; 16] = 24;
}

impl<B: Borrow<[u8; 40]>> Ipv6<B> {
    /// Traffic class (DSCP and ECN).
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (self.h()[0] & 0x0f) << 4 | self.h()[1] >> 4
    }
}

impl<B: BorrowMut<[u8; 40]>> Ipv6<B> {
    /// Version 6, traffic class `tc`, flow label 0.
    #[inline(always)]
    pub fn set_version_class(&mut self, tc: u8) {
        [0x60 | tc >> 4, tc << 4, 0, 0].write(self.h_mut(), 0);
    }
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        swap_fields(self.h_mut(), 8, 16);
    }
    /// The whole header zeroed (a header about to be written field by field).
    #[inline(always)]
    pub fn clear(&mut self) {
        *self.h_mut() = [0; 40];
    }
}

/// The IP header of either family, to be written: what the pipeline's family-independent
/// rewrites (answers, rebuilt segments) need.
#[derive(Debug)]
pub enum IpMut<'a> {
    V4(Ipv4<&'a mut [u8; 20]>),
    V6(Ipv6<&'a mut [u8; 40]>),
}

impl<'a> IpMut<'a> {
    /// The IPv4 (`v6` false) or IPv6 header at `l3` of frame `d`.
    #[inline(always)]
    pub fn at_mut(d: &'a mut [u8], l3: usize, v6: bool) -> Result<Self, Truncated> {
        Ok(if v6 { IpMut::V6(Ipv6::at_mut(d, l3)?) } else { IpMut::V4(Ipv4::at_mut(d, l3)?) })
    }

    /// Source and destination exchanged.
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        match self {
            IpMut::V4(h) => h.swap_addrs(),
            IpMut::V6(h) => h.swap_addrs(),
        }
    }

    /// TTL / hop limit.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        match self {
            IpMut::V4(h) => h.ttl(),
            IpMut::V6(h) => h.hop_limit(),
        }
    }

    /// Set the TTL / hop limit (the IPv4 header checksum is the caller's).
    #[inline(always)]
    pub fn set_ttl(&mut self, t: u8) {
        match self {
            IpMut::V4(h) => h.set_ttl(t),
            IpMut::V6(h) => h.set_hop_limit(t),
        }
    }

    /// Set the length field to `len`, the IP packet's length from this header's start
    /// (IPv4: total length; IPv6: the payload length, `len - 40`).
    #[inline(always)]
    pub fn set_packet_len(&mut self, len: u16) {
        match self {
            IpMut::V4(h) => h.set_total_len(len),
            IpMut::V6(h) => h.set_payload_len(len.wrapping_sub(40)),
        }
    }

    /// The length field as the IP packet's length from this header's start.
    #[inline(always)]
    pub fn packet_len(&self) -> u16 {
        match self {
            IpMut::V4(h) => h.total_len(),
            IpMut::V6(h) => h.payload_len().wrapping_add(40),
        }
    }

    /// Set the source (`src`) or destination address to `a` (of this header's family).
    #[inline(always)]
    pub fn set_addr(&mut self, src: bool, a: Addr) {
        match (self, src) {
            (IpMut::V4(h), true) => h.set_src(addr_v4_bytes(a)),
            (IpMut::V4(h), false) => h.set_dst(addr_v4_bytes(a)),
            (IpMut::V6(h), true) => h.set_src(addr_v6_bytes(a)),
            (IpMut::V6(h), false) => h.set_dst(addr_v6_bytes(a)),
        }
    }

    /// The pseudo-header sum of a `len`-byte transport segment `proto` between this
    /// header's addresses (RFC 793 / RFC 8200).
    #[inline(always)]
    pub fn pseudo(&self, proto: u8, len: usize) -> u32 {
        match self {
            IpMut::V4(h) => csum::pseudo_v4(h.src(), h.dst(), proto, len as u16),
            IpMut::V6(h) => csum::pseudo_v6(&h.src(), &h.dst(), proto, len as u32),
        }
    }
}

view! {
    /// A TCP header's fixed 20 bytes (options, if any, follow them).
    Tcp, 20;
    src_port, set_src_port: u16 = 0;
    dst_port, set_dst_port: u16 = 2;
    seq, set_seq: u32 = 4;
    ack, set_ack: u32 = 8;
    /// The flag bits (FIN 0x01 ... URG 0x20, ECE 0x40, CWR 0x80).
    flags, set_flags: u8 = 13;
    window, set_window: u16 = 14;
    checksum, set_checksum: u16 = 16;
    urgent, set_urgent: u16 = 18;
}

impl<B: Borrow<[u8; 20]>> Tcp<B> {
    /// The header's length in bytes, options included (data offset).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.h()[12] >> 4) as usize * 4
    }
}

impl<B: BorrowMut<[u8; 20]>> Tcp<B> {
    /// Set the header length (a multiple of 4, at most 60) in the data offset nibble (the
    /// reserved bits cleared).
    #[inline(always)]
    pub fn set_header_len(&mut self, len: usize) {
        self.h_mut()[12] = ((len / 4) as u8) << 4;
    }
    #[inline(always)]
    pub fn swap_ports(&mut self) {
        swap_fields(self.h_mut(), 0, 2);
    }
    /// The checksum adjusted by an RFC 1624 delta.
    #[inline(always)]
    pub fn adjust_checksum(&mut self, delta: u32) {
        let c = csum::apply(self.checksum(), delta);
        self.set_checksum(c);
    }
    /// [`Tcp::adjust_checksum`] by a folded (16-bit) delta: one fold fewer.
    #[inline(always)]
    pub fn adjust_checksum16(&mut self, delta: u16) {
        let c = csum::apply16(self.checksum(), delta);
        self.set_checksum(c);
    }
    /// Set the sequence number: the RFC 1624 delta of the change.
    #[inline(always)]
    pub fn rewrite_seq(&mut self, s: u32) -> u32 {
        let old = self.seq();
        self.set_seq(s);
        csum::delta(&old.to_be_bytes(), &s.to_be_bytes())
    }
    /// Set the acknowledgement number: the RFC 1624 delta of the change.
    #[inline(always)]
    pub fn rewrite_ack(&mut self, a: u32) -> u32 {
        let old = self.ack();
        self.set_ack(a);
        csum::delta(&old.to_be_bytes(), &a.to_be_bytes())
    }
    /// Add `by` to the sequence number (mod 2^32): the RFC 1624 delta of the change.
    #[inline(always)]
    pub fn shift_seq(&mut self, by: u32) -> u32 {
        self.rewrite_seq(self.seq().wrapping_add(by))
    }
    /// Add `by` to the acknowledgement number (mod 2^32): the RFC 1624 delta of the change.
    #[inline(always)]
    pub fn shift_ack(&mut self, by: u32) -> u32 {
        self.rewrite_ack(self.ack().wrapping_add(by))
    }
}

view! {
    /// A UDP header.
    Udp, 8;
    src_port, set_src_port: u16 = 0;
    dst_port, set_dst_port: u16 = 2;
    /// The datagram's length, header included.
    datagram_len, set_datagram_len: u16 = 4;
    /// 0 over IPv4: no checksum.
    checksum, set_checksum: u16 = 6;
}

view! {
    /// The port word of a transport with ports up front (TCP, UDP, SCTP, DCCP, ...).
    Ports, 4;
    src, set_src: u16 = 0;
    dst, set_dst: u16 = 2;
}

view! {
    /// An ICMP or ICMPv6 header: type, code, checksum and the 4 bytes after them (echo:
    /// identifier and sequence; too big: the MTU; ...).
    Icmp, 8;
    kind, set_kind: u8 = 0;
    code, set_code: u8 = 1;
    checksum, set_checksum: u16 = 2;
    /// The 32-bit word after the checksum.
    rest, set_rest: u32 = 4;
}

view! {
    /// An IPv6 fragment header (RFC 8200 4.5).
    Ipv6Frag, 8;
    /// The header after this one (the fragmentable part's).
    next_header, set_next_header: u8 = 0;
    /// Offset (13 bits, in 8-byte units, shifted left by 3), two reserved bits, and M.
    offset_word, set_offset_word: u16 = 2;
    ident, set_ident: u32 = 4;
}

impl<B: Borrow<[u8; 8]>> Ipv6Frag<B> {
    /// The fragment's offset in bytes (a multiple of 8).
    #[inline(always)]
    pub fn offset(&self) -> u32 {
        u32::from(self.offset_word() & 0xfff8)
    }
    /// More fragments follow.
    #[inline(always)]
    pub fn more(&self) -> bool {
        self.offset_word() & 1 != 0
    }
}

/// The IPv6 next-header value of a fragment header.
pub const IPV6_FRAGMENT: u8 = 44;

view! {
    /// An ARP packet for IPv4 over Ethernet (RFC 826): 28 bytes.
    Arp, 28;
    op, set_op: u16 = 6;
    sender_mac, set_sender_mac: [u8; 6] = 8;
    sender_ip, set_sender_ip: [u8; 4] = 14;
    target_mac, set_target_mac: [u8; 6] = 18;
    target_ip, set_target_ip: [u8; 4] = 24;
}

/// ARP's request and reply operations.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// The fixed start of an ARP packet for IPv4 over Ethernet: hardware type 1, protocol
/// 0x0800, address lengths 6 and 4.
const ARP_ETH_IPV4: [u8; 6] = [0, 1, 0x08, 0, 6, 4];

impl<B: Borrow<[u8; 28]>> Arp<B> {
    /// Ethernet hardware and IPv4 protocol addresses (the only kind this view reads right).
    #[inline(always)]
    pub fn is_ethernet_ipv4(&self) -> bool {
        <[u8; 6]>::read(self.h(), 0) == ARP_ETH_IPV4
    }
}

impl<B: BorrowMut<[u8; 28]>> Arp<B> {
    /// Write a whole packet: Ethernet / IPv4, operation `op`, sender and target.
    #[inline(always)]
    pub fn write(&mut self, op: u16, sender: ([u8; 6], [u8; 4]), target: ([u8; 6], [u8; 4])) {
        ARP_ETH_IPV4.write(self.h_mut(), 0);
        self.set_op(op);
        self.set_sender_mac(sender.0);
        self.set_sender_ip(sender.1);
        self.set_target_mac(target.0);
        self.set_target_ip(target.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testpkt::{tcp4, tcp6, udp4, verify_checksums};
    use crate::wire::parse::{self, TCP_ACK, TCP_SYN};

    #[test]
    fn views_read_what_the_parser_reads() {
        let f = tcp4([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, TCP_ACK, 7, 9, b"xy");
        let p = parse::parse(&f).unwrap();
        let ip = Ipv4::at(&f, p.l3).unwrap();
        assert_eq!((ip.src(), ip.dst(), ip.proto(), ip.header_len()), ([10, 0, 0, 1], [10, 0, 0, 2], 6, 20));
        assert_eq!(ip.total_len() as usize, p.end - p.l3);
        let t = Tcp::at(&f, p.l4).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags()), (1234, 80, 7, 9, TCP_ACK));
        assert_eq!(t.header_len(), p.payload - p.l4);
        let u = udp4([10, 0, 0, 1], 53, [10, 0, 0, 2], 5353, b"q");
        let pu = parse::parse(&u).unwrap();
        let v = Udp::at(&u, pu.l4).unwrap();
        assert_eq!((v.src_port(), v.dst_port(), v.datagram_len() as usize), (53, 5353, pu.end - pu.l4));
        let f6 = tcp6([0xfd; 16], 1, [0xfe; 16], 2, TCP_ACK, 1, 0, b"");
        let p6 = parse::parse(&f6).unwrap();
        let h6 = Ipv6::at(&f6, p6.l3).unwrap();
        assert_eq!((h6.src(), h6.dst(), h6.next_header()), ([0xfd; 16], [0xfe; 16], 6));
        assert_eq!(h6.payload_len() as usize, p6.end - p6.l4);
    }

    #[test]
    fn constructors_refuse_a_short_frame() {
        let f = tcp4([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, TCP_SYN, 7, 9, b"");
        assert!(Tcp::at(&f, f.len() - 20).is_ok());
        assert_eq!(Tcp::at(&f, f.len() - 19).err(), Some(Truncated));
        assert_eq!(Ipv4::at(&f[..33], 14).err(), Some(Truncated));
        assert_eq!(Ipv6::at(&f, 30).err(), Some(Truncated));
        assert_eq!(Icmp::at(&f, usize::MAX).err(), Some(Truncated), "an offset past any frame");
        let mut g = f.clone();
        assert_eq!(IpMut::at_mut(&mut g[..50], 14, true).err(), Some(Truncated));
        assert!(IpMut::at_mut(&mut g[..50], 14, false).is_ok());
        assert_eq!(csum::fill_ipv4(&mut g[..20], 14), Err(Truncated));
    }

    #[test]
    fn writes_keep_the_checksums_true() {
        let mut f = tcp4([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, TCP_ACK, 7, 9, b"data");
        let p = parse::parse(&f).unwrap();
        // Destination rewritten with RFC 1624 deltas: both checksums still verify.
        let old = [10, 0, 0, 2];
        let new = [192, 168, 7, 9];
        let d_addr = csum::delta(&old, &new);
        let d_port = csum::delta16(80, 8080);
        let mut ip = Ipv4::at_mut(&mut f, p.l3).unwrap();
        ip.set_dst(new);
        ip.adjust_checksum(d_addr);
        let mut t = Tcp::at_mut(&mut f, p.l4).unwrap();
        t.set_dst_port(8080);
        t.adjust_checksum16(csum::fold(d_addr + d_port));
        let d_seq = t.shift_seq(1000);
        t.adjust_checksum(d_seq);
        assert_eq!(Tcp::at(&f, p.l4).unwrap().seq(), 1007);
        verify_checksums(&f).expect("IPv4 and TCP checksums verify");
        // Answering: addresses, ports and MACs exchanged leave the sums valid.
        let mut ip = IpMut::at_mut(&mut f, p.l3, false).unwrap();
        ip.swap_addrs();
        Tcp::at_mut(&mut f, p.l4).unwrap().swap_ports();
        EthAddrs::at_mut(&mut f, 0).unwrap().swap();
        let q = parse::parse(&f).unwrap();
        assert_eq!((q.src, q.dst, q.sport, q.dport), (parse::v4_to_addr(new), p.src, 8080, 1234));
        verify_checksums(&f).expect("still verify");
        // A full recomputation after a TTL change.
        Ipv4::at_mut(&mut f, p.l3).unwrap().set_ttl(3);
        csum::fill_ipv4(&mut f, p.l3).unwrap();
        verify_checksums(&f).expect("recomputed");
    }
}
