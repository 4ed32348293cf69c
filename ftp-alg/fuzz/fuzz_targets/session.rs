//! The session state machine on an arbitrary sequence of segments, checked
//! against a model of both byte streams.
//!
//! Input: byte 0 = flags (bit 0 NAT, bit 1 IPv6, bit 2 allow foreign, bit 3
//! `set_isn` first, bit 4 a small `set_max_payload` (64 or, with bit 5, 128),
//! bits 6-7 what the engine's `Pinholes` answers: open / move to another port
//! / refuse / a mix), then records of
//! `[op, len, data[len]]`: op bit 0 = reply direction, bits 1..3 pick the
//! sequence number (0-3 in order / 4 a retransmission `small * 7` bytes back /
//! 5 after a hole of `small + 1` bytes / 6 a retransmission of the last `len`
//! bytes / 7 anywhere), bits 4..7 `small`.
//!
//! Every other segment goes to `on_segment_quick` first, as the engine does
//! (what it takes is forwarded as is), the others straight to
//! `on_segment_with`.
//!
//! Like a real TCP sender, a segment covering bytes already sent carries
//! the same bytes again (the harness keeps each direction's original stream
//! and overwrites the input with the known bytes). After every segment:
//!
//! * nothing is held past the bound (`held_len <= MAX_LINE`; commands never);
//! * only NAT replies can be changed (`Replace`/`Hold`);
//! * the translated stream is consistent: whatever `Forward`/`Replace`
//!   emits lands at `map_seq` of its sequence number, and a byte emitted
//!   twice (retransmissions) is the same byte at the same translated place;
//! * the sequence map is invertible on the emitted segments' boundaries
//!   (never inside a rewritten field): `map_ack(rev, map_seq(dir, s)) == s`.
//!
//! At the end, the original and translated streams, line by line from the
//! start, are equal except for `227` replies whose address field became the
//! VIP (same port, or the one the engine moved it to) and `229` replies whose
//! port the engine moved. A segment at an arbitrary sequence number (mode 7)
//! leaves the model's window: after one, only the bounds are checked. A
//! retransmission from before the 8th-newest rewrite of a direction is
//! mapped with the oldest remembered delta (documented IPVS behaviour), so
//! such segments are not checked.
#![no_main]

use ferrovs_ftp_alg::parse::{format_227_addr, format_port, parse_227, parse_229_field, MAX_227_ADDR_LEN};
use ferrovs_ftp_alg::*;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

/// Rewrites remembered per direction (`seq::HISTORY` in the crate).
const HISTORY: usize = 8;
/// The model's window in sequence space (bytes from the first).
const WINDOW: usize = 1 << 20;

/// One direction: the original stream, the translated stream as emitted,
/// and where the rewrites happened.
struct Side {
    /// A segment with payload was given to the session in this direction.
    seen: bool,
    /// Original sequence number of the model's byte 0.
    base: u32,
    /// Next in-order sequence number the sender would use.
    front: u32,
    orig: Vec<Option<u8>>,
    /// Translated stream, indexed by translated sequence number - `base`.
    emitted: Vec<Option<u8>>,
    /// `front` after each segment that produced a rewrite.
    rewrite_fronts: Vec<u32>,
}

impl Side {
    fn new(base: u32) -> Side {
        Side { seen: false, base, front: base, orig: Vec::new(), emitted: Vec::new(), rewrite_fronts: Vec::new() }
    }

    /// Where segment `op` (payload `n` bytes) starts, relative to what was sent so far.
    fn seq_for(&self, op: u8, len: u8, n: usize, small: u32) -> u32 {
        let (front, base) = (self.front, self.base);
        // Never before the stream's first byte.
        let back = |d: u32| if front.wrapping_sub(base) >= d { front.wrapping_sub(d) } else { base };
        match (op >> 1) & 7 {
            0..=3 => front,
            4 => back(small * 7),
            5 => front.wrapping_add(small + 1),
            6 => back(n as u32),
            _ => u32::from_le_bytes([small as u8, op, len, 0x5a]),
        }
    }

    fn off(&self, seq: u32) -> Option<usize> {
        let o = seq.wrapping_sub(self.base) as usize;
        (o < WINDOW).then_some(o)
    }

    /// Makes `data` at `seq` consistent with what was sent before and
    /// records it.
    fn fill(&mut self, seq: u32, data: &mut [u8]) {
        let o = self.off(seq).expect("in window");
        if self.orig.len() < o + data.len() {
            self.orig.resize(o + data.len(), None);
        }
        for (i, b) in data.iter_mut().enumerate() {
            match self.orig[o + i] {
                Some(k) => *b = k,
                None => self.orig[o + i] = Some(*b),
            }
        }
    }

    /// Segments starting before this original sequence number may be
    /// mapped with an evicted delta: not checked.
    fn unsafe_before(&self) -> Option<u32> {
        let n = self.rewrite_fronts.len();
        (n > HISTORY).then(|| self.rewrite_fronts[n - HISTORY - 1])
    }

    fn checked(&self, seq: u32) -> bool {
        self.unsafe_before().is_none_or(|b| (seq.wrapping_sub(b) as i32) >= 0)
    }

    fn emit(&mut self, tseq: u32, bytes: &[u8]) {
        let Some(o) = self.off(tseq) else {
            panic!("translated seq {tseq:#x} outside the stream (base {:#x})", self.base);
        };
        if self.emitted.len() < o + bytes.len() {
            self.emitted.resize(o + bytes.len(), None);
        }
        for (i, b) in bytes.iter().enumerate() {
            match self.emitted[o + i] {
                Some(k) if k != *b => panic!(
                    "translated stream inconsistent at {:#x}: {:?} then {:?}",
                    tseq.wrapping_add(i as u32),
                    k as char,
                    *b as char
                ),
                _ => self.emitted[o + i] = Some(*b),
            }
        }
    }
}

/// The engine's side: grants by `mode` (0 open, 1 move, 2 refuse, 3 a mix),
/// remembering the ports it moved expectations to.
struct Pins {
    mode: u8,
    n: u32,
    moved: Vec<u16>,
}

impl Pinholes for Pins {
    fn open(&mut self, e: &Expectation) -> Grant {
        self.n += 1;
        let m = if self.mode == 3 { (self.n % 3) as u8 } else { self.mode };
        match (m, e.kind) {
            (1, ExpectKind::Passive { vip_port: Some(p), .. }) => {
                let to = p.wrapping_add(1 + (self.n % 7) as u16).max(1024);
                self.moved.push(to);
                Grant::OpenAt(to)
            }
            (2, _) => Grant::Refused,
            _ => Grant::Open,
        }
    }
}

fn prefix(v: &[Option<u8>]) -> Vec<u8> {
    v.iter().map_while(|b| *b).collect()
}

fn lines(v: &[u8]) -> Vec<&[u8]> {
    v.split_inclusive(|b| *b == b'\n').filter(|l| l.ends_with(b"\n")).collect()
}

/// Original and translated streams agree line by line but for 227 address
/// and 229 port rewrites (NAT replies: `nat`; `vip` on IPv4).
fn compare(side: &Side, nat: bool, vip: Option<std::net::Ipv4Addr>, moved: &[u16]) {
    let (o, t) = (prefix(&side.orig), prefix(&side.emitted));
    for (i, (a, b)) in lines(&o).into_iter().zip(lines(&t)).enumerate() {
        if a == b {
            continue;
        }
        let why = || {
            format!(
                "line {i} differs:\n  orig {:?}\n  sent {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            )
        };
        assert!(nat, "{} (no rewrite allowed here)", why());
        let replaced = |range: std::ops::Range<usize>, text: &[u8]| [&a[..range.start], text, &a[range.end..]].concat();
        let mut text = [0u8; MAX_227_ADDR_LEN];
        let ok = if let Some((addr, range)) = parse_227(a) {
            let vip = vip.unwrap_or_else(|| panic!("{} (227 rewritten on IPv6)", why()));
            std::iter::once(addr.port()).chain(moved.iter().copied()).any(|p| {
                let n = format_227_addr(vip, p, &mut text);
                b == replaced(range.clone(), &text[..n])
            })
        } else if let Some((_, range)) = parse_229_field(a) {
            moved.iter().any(|&p| {
                let n = format_port(p, &mut text);
                b == replaced(range.clone(), &text[..n])
            })
        } else {
            false
        };
        assert!(ok, "{} (not a 227/229 rewrite; moved ports {moved:?})", why());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let v6 = flags & 2 != 0;
    let (c, v, r) = if v6 {
        ("[2001:db8::7]:40000", "[2001:db8::100]:21", "[fd00::2]:21")
    } else {
        ("192.0.2.7:40000", "10.0.0.100:21", "10.0.2.2:21")
    };
    let nat = flags & 1 != 0;
    let p = SessionParams {
        mode: if nat { Mode::Nat } else { Mode::Dr },
        client: c.parse().unwrap(),
        vip: v.parse().unwrap(),
        real: r.parse().unwrap(),
        allow_foreign_port_address: flags & 4 != 0,
        pinhole_timeout: 10,
    };
    let vip4 = match p.vip.ip() {
        IpAddr::V4(a) if nat => Some(a),
        _ => None,
    };
    let mut s = FtpSession::new(p);
    let mut sides = [Side::new(0xFFFF_FF00), Side::new(7)];
    if flags & 8 != 0 {
        s.set_isn(Dir::Original, sides[0].base.wrapping_sub(1));
        s.set_isn(Dir::Reply, sides[1].base.wrapping_sub(1));
    }
    if flags & 16 != 0 {
        s.set_max_payload(64 + usize::from(flags >> 5 & 1) * 64);
    }
    let mut pins = Pins { mode: flags >> 6, n: 0, moved: Vec::new() };
    let mut model = true;
    let mut a = Actions::default();
    let mut now = 0u64;
    let mut buf = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (seg, more) = tail.split_at(n);
        rest = more;
        now += 1;
        let (dir, k) = if op & 1 != 0 { (Dir::Reply, 1) } else { (Dir::Original, 0) };
        let small = u32::from(op >> 4);
        let side = &mut sides[k];
        // Without an ISN the session cannot know where a direction's stream begins: the
        // first segment it is given starts it (the engine always has the ISNs of a new
        // control connection, from its SYN and SYN-ACK). The model's stream starts there too.
        let seq = side.seq_for(*op, *len, n, small);
        if flags & 8 == 0 && !side.seen && !seg.is_empty() {
            (side.base, side.front) = (seq, seq);
        }
        side.seen |= !seg.is_empty();
        buf.clear();
        buf.extend_from_slice(seg);
        let in_model = model && side.off(seq).is_some_and(|o| o + n < WINDOW);
        model = in_model;
        if model {
            side.fill(seq, &mut buf);
            let end = seq.wrapping_add(n as u32);
            if (end.wrapping_sub(side.front) as i32) > 0 {
                side.front = end;
            }
        }
        a.clear();
        // Every other segment as the engine feeds it: the quick path first (a segment it
        // takes is forwarded unchanged), the full parser for the rest.
        let v = if now % 2 == 0 && s.on_segment_quick(dir, seq, &buf) {
            Verdict::Forward
        } else {
            s.on_segment_with(now, dir, seq, &buf, &mut a, &mut pins)
        };

        assert!(s.held_len(Dir::Reply) <= MAX_LINE);
        assert_eq!(s.held_len(Dir::Original), 0, "commands are never held");
        if !matches!(v, Verdict::Forward) {
            assert!(nat && dir == Dir::Reply, "{v:?}");
        }
        let rev = dir.reverse();
        let _ = s.map_ack(dir, seq);
        if !model {
            let _ = s.map_seq(dir, seq);
            continue;
        }
        let side = &mut sides[k];
        if a.events.contains(&Event::Rewrite) {
            side.rewrite_fronts.push(side.front);
        }
        if !side.checked(seq) {
            continue;
        }
        let inv = |x: u32| {
            let t = s.map_seq(dir, x);
            assert_eq!(s.map_ack(rev, t), x, "map_ack(map_seq({x:#x}) = {t:#x}) does not map back");
        };
        match &v {
            Verdict::Forward if !buf.is_empty() => {
                side.emit(s.map_seq(dir, seq), &buf);
                inv(seq);
                inv(seq.wrapping_add(buf.len() as u32));
            }
            Verdict::Replace { seq: rs, payload } if side.checked(*rs) => {
                side.emit(s.map_seq(dir, *rs), payload);
                inv(*rs);
            }
            _ => {}
        }
    }
    if model {
        compare(&sides[0], false, None, &[]);
        compare(&sides[1], nat, vip4, &pins.moved);
    }
});
