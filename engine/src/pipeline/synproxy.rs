//! SYN proxy with SYN cookies: the balancer answers a client's SYN itself and keeps no state
//! until the client's ACK proves the handshake; only then is the connection created and opened
//! to the real server. A flood of spoofed SYNs therefore costs a hash per packet and no table
//! entry (IPVS has no SYN proxy: its table fills with SYN_RECV entries; DPVS has one in FNAT).
//!
//! # The cookie (32 bits, our initial sequence number)
//!
//! `t(5) | (H(key, client, vip, ports, client ISN, t) + mss_index) mod 2^27`, where `t` counts
//! periods of 2^36 ns (~69 s). A cookie is accepted for the current and the previous period
//! (69 to 137 s). The key is random per engine start and the same on every worker
//! ([`Shared`]): a SYN is answered by the worker that received it, the handshake's ACK checked
//! by the worker that owns the client (ownership follows the client's address), so a flood's
//! SYNs are not handed between workers. H is SipHash-2-4
//! ([`ferrovs_sched::hash::sip24_blocks`], the one SipHash of the product).
//!
//! # What the client's options become
//!
//! Without TCP timestamps there is nowhere to keep window scaling, SACK-permitted or the
//! timestamps themselves, so the proxied handshake negotiates none of them (the SYN-ACK offers
//! none and the SYN to the real server asks for none): both ends run with an unscaled window
//! (at most 64 KiB in flight) and no SACK, as Linux's SYN cookies without timestamps. The MSS is
//! kept to one of 8 values ([`MSS_TABLE`], the largest not above the client's). That is why the
//! proxy engages by default only above a half-open threshold (a flood), or per service when
//! configured always on.
//!
//! # After the handshake
//!
//! The real server picks its own ISN; the worker keeps `delta = cookie - rs_isn` and adds it to
//! every server sequence number and subtracts it from every client acknowledgement (and SACK
//! edge), the same translation the FTP gateway uses for its rewrites.

use crate::wire::csum;
use crate::wire::parse::{Addr, Parsed, PROTO_TCP};
use crate::wire::view::{EthAddrs, IpMut, Tcp, Truncated, IPV4_DF};
use ferrovs_sched::hash::{sip24_blocks, SipKey};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// MSS values a cookie can carry (3 bits).
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];

const PERIOD_SHIFT: u32 = 36;
const HASH_MASK: u32 = 0x07ff_ffff;

/// The cookie secret.
#[derive(Clone, Copy)]
pub struct Cookies {
    /// SipHash key (random per engine start, every worker's copy the same).
    key: SipKey,
}

/// What the workers' SYN proxies share: the cookie secret, and when any of them last sent a
/// cookie (only then can a segment without SYN carry one: the owner of a client whose SYN
/// another worker answered must take the handshake's ACK as a cookie, not a stray).
pub struct Shared {
    pub cookies: Cookies,
    last: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared { cookies: Cookies::new(), last: AtomicU64::new(0) }
    }
}

impl Shared {
    /// When a worker last sent a cookie (0: never), to about a second
    /// ([`Shared::note_sent`]).
    #[inline(always)]
    pub fn last_sent(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// A worker sent a cookie at `now`: recorded when the record is a second old or more, so
    /// a flood's workers do not write the shared line per cookie.
    #[inline(always)]
    pub fn note_sent(&self, now: u64) {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 1 << 30 {
            self.last.store(now, Ordering::Relaxed);
        }
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Self::new()
    }
}

/// The identity of a handshake: client, VIP, ports, the client's ISN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub client: Addr,
    pub vip: Addr,
    pub cport: u16,
    pub vport: u16,
    pub isn: u32,
}

impl Cookies {
    pub fn new() -> Self {
        // Two random words from the standard library's per-process random keys.
        let word = |x: u64| {
            let mut s = std::collections::hash_map::RandomState::new().build_hasher();
            s.write_u64(x);
            s.finish()
        };
        Cookies { key: SipKey(word(0), word(1)) }
    }

    /// SipHash-2-4 (Linux's cookies use SipHash too) over six fixed 64-bit words, written
    /// out rather than through `Hasher::write`: a SYN flood pays for this per SYN.
    fn hash(&self, h: &Handshake, t: u32) -> u32 {
        let words = [
            h.client as u64,
            (h.client >> 64) as u64,
            h.vip as u64,
            (h.vip >> 64) as u64,
            u64::from(h.cport) << 48 | u64::from(h.vport) << 32 | u64::from(h.isn),
            // The last 7 bytes of the 47-byte message (t and three zero bytes) and its length.
            u64::from(t) | 47 << 56,
        ];
        sip24_blocks(self.key, &words) as u32
    }

    /// The cookie (our ISN) for `h` at `now`, carrying `mss`.
    pub fn make(&self, now: u64, h: &Handshake, mss: u16) -> u32 {
        let t = (now >> PERIOD_SHIFT) as u32;
        let idx = mss_index(mss);
        (t & 0x1f) << 27 | (self.hash(h, t).wrapping_add(u32::from(idx)) & HASH_MASK)
    }

    /// The MSS a valid `cookie` for `h` carries, or `None`.
    pub fn check(&self, now: u64, h: &Handshake, cookie: u32) -> Option<u16> {
        let now_t = (now >> PERIOD_SHIFT) as u32;
        for t in [now_t, now_t.wrapping_sub(1)] {
            if cookie >> 27 != t & 0x1f {
                continue;
            }
            let d = (cookie & HASH_MASK).wrapping_sub(self.hash(h, t)) & HASH_MASK;
            if d < MSS_TABLE.len() as u32 {
                return Some(MSS_TABLE[d as usize]);
            }
        }
        None
    }
}

/// The index of the largest [`MSS_TABLE`] entry not above `mss` (0 for anything smaller).
pub fn mss_index(mss: u16) -> u8 {
    MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u8
}

/// The MSS option of a TCP header (`tcp` = the whole header with options), if any (through
/// the bounds-checked walker of [`crate::wire::tcpopt`]).
pub fn mss_option(tcp: &[u8]) -> Option<u16> {
    let hl = (*tcp.get(12)? >> 4) as usize * 4;
    crate::wire::tcpopt::mss(tcp.get(20..hl)?)
}

/// The bare TCP segment (no payload) that [`answer`] writes.
#[derive(Clone, Copy, Debug)]
pub struct Bare {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// An MSS option (the header is 24 bytes then, else 20).
    pub mss: Option<u16>,
    pub win: u16,
}

/// Rewrites, in place, the TCP segment of `frame` (parsed as `p`) into the bare segment
/// `seg`, with the same addresses and ports or, `turn`, the frame turned around to answer
/// its sender (MACs, addresses and ports exchanged); the IP header's TTL / hop limit set to
/// 64 (IPv4: DF, no fragment offset) and the checksums recomputed. Returns the new frame
/// length; [`Truncated`] if the frame does not hold the segment (it never grows past 20 + 4
/// bytes of TCP: the caller makes room).
pub fn answer(frame: &mut [u8], p: &Parsed, turn: bool, seg: Bare) -> Result<usize, Truncated> {
    let hl = if seg.mss.is_some() { 24 } else { 20 };
    let end = p.l4 + hl;
    let mut ip = IpMut::at_mut(frame, p.l3, p.v6)?;
    if turn {
        ip.swap_addrs();
    }
    ip.set_ttl(64);
    ip.set_packet_len(end.checked_sub(p.l3).ok_or(Truncated)? as u16);
    let pseudo = ip.pseudo(PROTO_TCP, hl);
    if let IpMut::V4(mut h) = ip {
        h.set_frag_word(IPV4_DF);
        csum::fill_ipv4(frame, p.l3)?;
    }
    if turn {
        EthAddrs::at_mut(frame, 0)?.swap();
    }
    let mut t = Tcp::at_mut(frame, p.l4)?;
    if turn {
        t.swap_ports();
    }
    t.set_seq(seg.seq);
    t.set_ack(seg.ack);
    t.set_header_len(hl);
    t.set_flags(seg.flags);
    t.set_window(seg.win);
    t.set_checksum(0);
    t.set_urgent(0);
    let tcp = frame.get_mut(p.l4..end).ok_or(Truncated)?;
    if let Some(m) = seg.mss {
        tcp[20..24].copy_from_slice(&[crate::wire::tcpopt::MSS, 4, (m >> 8) as u8, m as u8]);
    }
    let c = csum::finish(tcp, pseudo);
    Tcp::at_mut(frame, p.l4)?.set_checksum(c);
    Ok(end)
}

/// A proxied connection's state (in the connection's cold part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proxied {
    /// The client's initial sequence number.
    pub isn: u32,
    /// Our ISN towards the client (the cookie).
    pub cookie: u32,
    /// `cookie - rs_isn`: added to the real server's sequence numbers, subtracted from the
    /// client's acknowledgements. Valid once `established`.
    pub delta: u32,
    /// The real server's SYN-ACK was seen (and answered).
    pub established: bool,
    /// The client reset the connection before the real server answered (our reset went to
    /// the server; a late SYN-ACK of the server's is answered with another).
    pub reset: bool,
    /// The MSS our SYN to the real server carries (from the cookie).
    pub mss: u16,
    /// When our last SYN to the real server went (ns): sent again, at most once per
    /// [`SYN_RETRY_NS`], on a client segment while the server has not answered.
    pub syn_at: u64,
}

/// How long the real server has to answer our SYN before a client segment makes us send it
/// again (Linux's initial retransmission timeout, `TCP_TIMEOUT_INIT`).
pub const SYN_RETRY_NS: u64 = 1_000_000_000;

/// The receive window our SYN-ACK offers the client (unscaled): a client reset while the real
/// server's handshake is pending must fall in it, past the client's ISN.
pub const CLIENT_WINDOW: u16 = 65535;

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(isn: u32) -> Handshake {
        Handshake { client: 0x0a00_0102, vip: 0x0a00_0164, cport: 40000, vport: 80, isn }
    }

    #[test]
    fn cookies_roundtrip_and_reject() {
        let c = Cookies::new();
        let now = 5u64 << 36;
        for (mss, want) in [(1460, 1460), (1500, 1460), (1400, 1400), (1399, 1360), (100, 536)] {
            let k = c.make(now, &hs(7), mss);
            assert_eq!(c.check(now, &hs(7), k), Some(want));
            assert_eq!(c.check(now + (1 << 36), &hs(7), k), Some(want), "previous period accepted");
            assert_eq!(c.check(now + (2 << 36), &hs(7), k), None, "too old");
            assert_eq!(c.check(now, &hs(8), k), None, "other ISN");
            assert_eq!(c.check(now, &Handshake { cport: 40001, ..hs(7) }, k), None, "other port");
        }
        // Another worker's secret: rejected (with overwhelming probability).
        let other = Cookies::new();
        let k = c.make(now, &hs(7), 1460);
        assert_eq!(other.check(now, &hs(7), k), None);
        // Guessing: random cookies pass about 8 in 2^27.
        let mut pass = 0;
        for g in 0..100_000u32 {
            pass += c.check(now, &hs(7), g.wrapping_mul(2_654_435_761)).is_some() as u32;
        }
        assert!(pass <= 2, "{pass}");
    }

    #[test]
    fn mss_option_walk() {
        let mut t = vec![0u8; 20];
        t[12] = 8 << 4;
        t.extend_from_slice(&[1, 1, 3, 3, 7, 2, 4, 0x05, 0xb4, 0, 0, 0]);
        assert_eq!(mss_option(&t), Some(1460));
        t[23] = 40; // option length past the header
        assert_eq!(mss_option(&t), None);
        assert_eq!(mss_option(&[0u8; 5]), None);
        let mut short = vec![0u8; 20];
        short[12] = 15 << 4; // claims 60 bytes
        assert_eq!(mss_option(&short), None);
    }
}
