//! Allocation-free IPv4 TCP/UDP frame writer shared by `ferrovs bench` and
//! `ferrovs gen`: writes Ethernet + IPv4 + TCP/UDP headers with correct
//! checksums into a caller buffer, padded (zeros) to a frame size.
//! (The etherparse builders in [`crate::tools::testpkt`] allocate; these do not.)

use crate::wire::csum;
use crate::wire::parse::{Parsed, PROTO_TCP};
use crate::wire::view::{EthAddrs, Ipv4, Tcp, Truncated, Udp, ETHERTYPE_IPV4, IPV4_DF, TCP_HEADER_LEN};

/// Ethernet + IPv4 + TCP header bytes (no options).
pub const TCP4_HDR: usize = 14 + 20 + 20;
/// Ethernet + IPv4 + UDP header bytes.
pub const UDP4_HDR: usize = 14 + 20 + 8;
/// Smallest Ethernet frame without FCS.
pub const MIN_FRAME: usize = 60;

/// What to put in a frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame4 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// `crate::wire::parse::PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// TCP flags (ignored for UDP).
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub ttl: u8,
}

/// Write `f` into `out` as a frame of `len` bytes (without FCS; at least the
/// header size, padded with zeros: for TCP the padding is Ethernet padding
/// up to 60 bytes and TCP payload beyond; for UDP it is UDP payload).
/// `payload` (copied after the L4 header, truncated to fit) lets callers
/// carry an FTP line. Returns the frame length written.
pub fn write4(out: &mut [u8], f: &Frame4, len: usize, payload: &[u8]) -> usize {
    let tcp = f.proto == PROTO_TCP;
    let hdr = if tcp { TCP4_HDR } else { UDP4_HDR };
    let l4h = if tcp { 20 } else { 8 };
    // TCP: a bare segment is padded at L2 to 60 bytes; anything longer is
    // payload. UDP: everything after the header is payload.
    let mut plen = len.saturating_sub(hdr);
    if tcp && len <= MIN_FRAME {
        plen = 0;
    }
    plen = plen.max(payload.len());
    let ip_len = 20 + l4h + plen;
    let frame_len = (14 + ip_len).max(MIN_FRAME).max(len);
    let out = &mut out[..frame_len];
    out[14 + 20 + l4h..].fill(0);
    out[14 + 20 + l4h..][..payload.len()].copy_from_slice(payload);
    write_headers(out, f, ip_len, plen).expect("a frame of at least 60 bytes holds the headers");
    frame_len
}

/// The headers of [`write4`] in front of the payload already in `out`, checksums included.
fn write_headers(out: &mut [u8], f: &Frame4, ip_len: usize, plen: usize) -> Result<(), Truncated> {
    let tcp = f.proto == PROTO_TCP;
    let mut eth = EthAddrs::at_mut(out, 0)?;
    eth.set_dst(f.dst_mac);
    eth.set_src(f.src_mac);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut ip = Ipv4::at_mut(out, 14)?;
    ip.clear();
    ip.set_version_ihl(0x45);
    ip.set_total_len(ip_len as u16);
    ip.set_frag_word(IPV4_DF);
    ip.set_ttl(f.ttl);
    ip.set_proto(f.proto);
    ip.set_src(f.src);
    ip.set_dst(f.dst);
    csum::fill_ipv4(out, 14)?;
    let l4 = 14 + 20;
    if tcp {
        let mut t = Tcp::at_mut(out, l4)?;
        t.set_src_port(f.sport);
        t.set_dst_port(f.dport);
        t.set_seq(f.seq);
        t.set_ack(f.ack);
        t.set_header_len(TCP_HEADER_LEN);
        t.set_flags(f.flags);
        t.set_window(64240);
        t.set_checksum(0);
        t.set_urgent(0);
    } else {
        let mut u = Udp::at_mut(out, l4)?;
        u.set_src_port(f.sport);
        u.set_dst_port(f.dport);
        u.set_datagram_len((8 + plen) as u16);
    }
    let p = Parsed { l3: 14, l4, end: 14 + ip_len, proto: f.proto, ..Parsed::default() };
    csum::fill_l4(out, &p)
}

/// SplitMix64: a tiny deterministic RNG for shuffles and address picks.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::{PROTO_TCP, PROTO_UDP, TCP_SYN};

    #[test]
    fn frames_verify_and_parse() {
        let mut buf = [0u8; 2048];
        for (proto, len) in [(PROTO_TCP, 60), (PROTO_TCP, 1514), (PROTO_UDP, 60), (PROTO_UDP, 1000)] {
            let f = Frame4 {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
                sport: 1234,
                dport: 80,
                proto,
                flags: TCP_SYN,
                seq: 7,
                ack: 0,
                ttl: 64,
            };
            let n = write4(&mut buf, &f, len, b"");
            assert_eq!(n, len);
            crate::tools::testpkt::verify_checksums(&buf[..n]).unwrap();
            let p = crate::wire::parse::parse(&buf[..n]).unwrap();
            assert_eq!((p.proto, p.sport, p.dport), (proto, 1234, 80));
        }
        // Matches the etherparse builder byte for byte (TCP SYN, no padding).
        let f = Frame4 {
            src_mac: crate::tools::testpkt::SRC_MAC,
            dst_mac: crate::tools::testpkt::DST_MAC,
            src: [10, 0, 1, 2],
            dst: [10, 0, 1, 100],
            sport: 40000,
            dport: 80,
            proto: PROTO_TCP,
            flags: TCP_SYN,
            seq: 1,
            ack: 0,
            ttl: 64,
        };
        let n = write4(&mut buf, &f, 54, b"");
        let want = crate::tools::testpkt::tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_SYN, 1, 0, b"");
        assert_eq!(&buf[..54], &want[..], "headers");
        assert_eq!(n, 60);
    }
}
