//! Reading output frames in fixture tests: a TCP segment's fields, and the drop counters.

use super::{CLIENT, CLIENT_MAC, EXT, INT, LB_EXT, LB_INT, VIP};
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::{tcp4, verify_checksums, with_macs};
use ferrovs_engine::wire::parse::parse;

/// An IPv4 TCP segment out of the engine.
#[derive(Debug)]
pub struct Seg {
    pub src: [u8; 4],
    pub sport: u16,
    pub dst: [u8; 4],
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
}

/// Parses an output frame, checking its checksums first.
pub fn seg(f: &[u8]) -> Seg {
    verify_checksums(f).expect("checksums of an output frame");
    let p = parse(f).expect("output frame parses");
    let l4 = p.l4;
    let a = |o: usize| -> [u8; 4] { f[o..o + 4].try_into().unwrap() };
    Seg {
        src: a(p.l3 + 12),
        sport: u16::from_be_bytes([f[l4], f[l4 + 1]]),
        dst: a(p.l3 + 16),
        dport: u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
        seq: u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap()),
        ack: u32::from_be_bytes(f[l4 + 8..l4 + 12].try_into().unwrap()),
        flags: f[l4 + 13] & 0x3f,
        mss: ferrovs_engine::pipeline::synproxy::mss_option(&f[l4..p.end]),
        payload: f[p.payload..p.end].to_vec(),
    }
}

/// The one frame out (interface, segment).
pub fn one(out: Vec<(usize, Vec<u8>)>) -> (usize, Seg) {
    assert_eq!(out.len(), 1, "exactly one frame out");
    (out[0].0, seg(&out[0].1))
}

/// The non-zero drop counters of all workers, sorted by name.
pub fn drops(e: &MemEngine) -> Vec<(&'static str, u64)> {
    let mut v: Vec<_> = e.counters().drops.into_iter().filter(|d| d.1 > 0).collect();
    v.sort();
    v
}

/// A TCP segment from CLIENT:`sport` to VIP:`dport`, received on `ext` at `now`.
#[allow(clippy::too_many_arguments)]
pub fn client_tcp(
    e: &mut MemEngine,
    now: u64,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<(usize, Vec<u8>)> {
    let f = with_macs(tcp4(CLIENT, sport, VIP, dport, flags, seq, ack, data), CLIENT_MAC, LB_EXT);
    e.inject(EXT, &f, now)
}

/// A TCP segment from real server `rs` (10.0.2.x, MAC 02:00:00:00:02:x) port `sport` to
/// CLIENT:`dport`, received on `int` at `now`.
#[allow(clippy::too_many_arguments)]
pub fn rs_tcp(
    e: &mut MemEngine,
    now: u64,
    rs: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<(usize, Vec<u8>)> {
    let f = with_macs(tcp4(rs, sport, CLIENT, dport, flags, seq, ack, data), [2, 0, 0, 0, 2, rs[3]], LB_INT);
    e.inject(INT, &f, now)
}

/// The acknowledgement number of an IPv6 TCP frame out of the engine (checksums checked).
pub fn seg6_ack(f: &[u8]) -> u32 {
    verify_checksums(f).expect("checksums of an output frame");
    let p = parse(f).expect("output frame parses");
    u32::from_be_bytes(f[p.l4 + 8..p.l4 + 12].try_into().unwrap())
}
