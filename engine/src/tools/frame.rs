//! Allocation-free IPv4 TCP/UDP frame writer shared by `ferrovs bench` and
//! `ferrovs gen`: writes Ethernet + IPv4 + TCP/UDP headers with correct
//! checksums into a caller buffer, padded (zeros) to a frame size.
//! (The etherparse builders in [`crate::tools::testpkt`] allocate; these do not.)

use crate::wire::csum;

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
    let tcp = f.proto == crate::wire::parse::PROTO_TCP;
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
    out[0..6].copy_from_slice(&f.dst_mac);
    out[6..12].copy_from_slice(&f.src_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&[0x40, 0]);
    ip[8] = f.ttl;
    ip[9] = f.proto;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&f.src);
    ip[16..20].copy_from_slice(&f.dst);
    let c = csum::finish(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let l4 = 34;
    out[l4..l4 + 2].copy_from_slice(&f.sport.to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&f.dport.to_be_bytes());
    let pay = l4 + l4h;
    out[pay..pay + plen].fill(0);
    out[pay..pay + payload.len()].copy_from_slice(payload);
    out[14 + ip_len..].fill(0);
    let ck_off;
    if tcp {
        let t = &mut out[l4..l4 + 20];
        t[4..8].copy_from_slice(&f.seq.to_be_bytes());
        t[8..12].copy_from_slice(&f.ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = f.flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[16..20].fill(0);
        ck_off = l4 + 16;
    } else {
        out[l4 + 4..l4 + 6].copy_from_slice(&((8 + plen) as u16).to_be_bytes());
        out[l4 + 6..l4 + 8].fill(0);
        ck_off = l4 + 6;
    }
    let l4len = l4h + plen;
    let pseudo = csum::pseudo_v4(f.src, f.dst, f.proto, l4len as u16);
    let mut c = csum::finish(&out[l4..l4 + l4len], pseudo);
    if !tcp && c == 0 {
        c = 0xffff;
    }
    out[ck_off..ck_off + 2].copy_from_slice(&c.to_be_bytes());
    frame_len
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
