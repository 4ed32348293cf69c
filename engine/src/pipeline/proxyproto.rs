//! PROXY protocol (HAProxy's spec, v1 text and v2 binary) towards a real server
//! (`proxy_protocol = "v1" | "v2"`): the header naming the client and the VIP
//! is inserted at the start of the client's byte stream, and every later
//! client sequence number (and every server acknowledgement, SACK edges
//! included) is translated by its length, for the whole connection: the same
//! delta mechanism as the FTP gateway's.
//!
//! The header rides on the first segment at the stream's start (ISN + 1): the
//! handshake's ACK, or the first data. A client segment starting there again
//! (a retransmission, or a pure ACK before the server acknowledged the header)
//! carries the same header again, so a lost first segment is repaired by the
//! client's own retransmission; the server's TCP discards the duplicate. The
//! server's SYN-ACK has its MSS lowered by the header's length so the first
//! full-sized segment still fits the MTU with the header in front.

use crate::wire::parse::Addr;
use std::net::IpAddr;

/// Longest header: v1 with two IPv6 addresses (104 bytes; the spec's bound is 107).
pub const MAX_HDR: usize = 108;

/// v2 signature.
const SIG: [u8; 12] = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/// The header of one connection and where the client's stream starts.
#[derive(Clone, Copy, Debug)]
pub struct Pp {
    hdr: [u8; MAX_HDR],
    len: u8,
    /// Client ISN (from its SYN) is known.
    pub known: bool,
    pub isn: u32,
    /// The server acknowledged the whole header: pure ACKs at the stream start need no
    /// header any more.
    pub acked: bool,
}

impl Pp {
    /// The header for a connection from `client:cport` to `vip:vport`.
    pub fn new(v2: bool, client: IpAddr, cport: u16, vip: IpAddr, vport: u16) -> Pp {
        let mut hdr = [0u8; MAX_HDR];
        let len = if v2 {
            v2_header(client, cport, vip, vport, &mut hdr)
        } else {
            v1_header(client, cport, vip, vport, &mut hdr)
        };
        Pp { hdr, len: len as u8, known: false, isn: 0, acked: false }
    }

    pub fn header(&self) -> &[u8] {
        &self.hdr[..self.len as usize]
    }

    /// Length of the header: the sequence delta.
    pub fn delta(&self) -> u32 {
        self.len as u32
    }

    /// First sequence number of the client's data.
    pub fn start(&self) -> u32 {
        self.isn.wrapping_add(1)
    }

    /// A server acknowledgement `ack` (server space) in the client's space.
    pub fn map_ack(&self, ack: u32) -> u32 {
        let start = self.start();
        let off = ack.wrapping_sub(start);
        if (off as i32) <= 0 {
            ack
        } else if off < self.delta() {
            start
        } else {
            ack.wrapping_sub(self.delta())
        }
    }

    /// A client sequence number after the stream start, in the server's space.
    pub fn map_seq(&self, seq: u32) -> u32 {
        if (seq.wrapping_sub(self.start()) as i32) > 0 {
            seq.wrapping_add(self.delta())
        } else {
            seq
        }
    }
}

/// `PROXY TCP4 client vip cport vport\r\n` (TCP6 for IPv6).
pub fn v1_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16, out: &mut [u8; MAX_HDR]) -> usize {
    use std::io::Write;
    let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    let mut w = &mut out[..];
    let _ = write!(w, "PROXY {fam} {client} {vip} {cport} {vport}\r\n");
    MAX_HDR - w.len()
}

/// The v2 binary header: signature, PROXY command, TCP over IPv4/IPv6, addresses and ports.
pub fn v2_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16, out: &mut [u8; MAX_HDR]) -> usize {
    out[..12].copy_from_slice(&SIG);
    out[12] = 0x21; // version 2, PROXY
    let (fam, alen) = match (client, vip) {
        (IpAddr::V4(c), IpAddr::V4(v)) => {
            out[16..20].copy_from_slice(&c.octets());
            out[20..24].copy_from_slice(&v.octets());
            (0x11, 12)
        }
        (c, v) => {
            let six = |a: IpAddr| match a {
                IpAddr::V4(x) => x.to_ipv6_mapped().octets(),
                IpAddr::V6(x) => x.octets(),
            };
            out[16..32].copy_from_slice(&six(c));
            out[32..48].copy_from_slice(&six(v));
            (0x21, 36)
        }
    };
    out[13] = fam;
    out[14..16].copy_from_slice(&(alen as u16).to_be_bytes());
    let p = 16 + alen - 4;
    out[p..p + 2].copy_from_slice(&cport.to_be_bytes());
    out[p + 2..p + 4].copy_from_slice(&vport.to_be_bytes());
    16 + alen
}

/// [`Pp::new`] from engine addresses.
pub fn for_conn(v2: bool, client: Addr, cport: u16, vip: Addr, vport: u16) -> Pp {
    Pp::new(v2, crate::wire::parse::addr_to_ip(client), cport, crate::wire::parse::addr_to_ip(vip), vport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let p = Pp::new(false, "10.0.1.2".parse().unwrap(), 40000, "10.0.1.100".parse().unwrap(), 80);
        assert_eq!(p.header(), b"PROXY TCP4 10.0.1.2 10.0.1.100 40000 80\r\n");
        let c: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        let p = Pp::new(false, c, 65535, c, 65535);
        assert_eq!(p.header().len(), 104, "the longest line fits");
        assert!(p.header().starts_with(b"PROXY TCP6 ffff:"));
    }

    #[test]
    fn v2_binary() {
        let p = Pp::new(true, "10.0.1.2".parse().unwrap(), 40000, "10.0.1.100".parse().unwrap(), 80);
        let mut want = SIG.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 10, 0, 1, 2, 10, 0, 1, 100, 0x9c, 0x40, 0, 80]);
        assert_eq!(p.header(), &want[..]);
        let p = Pp::new(true, "fd00:1::2".parse().unwrap(), 1, "fd00:1::100".parse().unwrap(), 443);
        assert_eq!(p.header().len(), 52);
        assert_eq!(&p.header()[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(&p.header()[48..52], &[0, 1, 1, 187]);
    }

    #[test]
    fn sequence_mapping() {
        let mut p = Pp::new(false, "10.0.1.2".parse().unwrap(), 1, "10.0.1.100".parse().unwrap(), 80);
        p.isn = u32::MAX - 3; // the stream start wraps
        p.known = true;
        let d = p.delta();
        let start = p.start();
        assert_eq!(p.map_seq(start), start, "the header goes in front of the first byte");
        assert_eq!(p.map_seq(start.wrapping_add(10)), start.wrapping_add(10 + d));
        assert_eq!(p.map_seq(p.isn), p.isn, "the SYN is not moved");
        assert_eq!(p.map_ack(start), start);
        assert_eq!(p.map_ack(start.wrapping_add(d - 1)), start, "inside the header");
        assert_eq!(p.map_ack(start.wrapping_add(d + 5)), start.wrapping_add(5));
        assert_eq!(p.map_ack(p.isn), p.isn);
    }
}
