//! The session state machine on an arbitrary sequence of segments.
//!
//! Input: byte 0 = flags (bit 0 NAT, bit 1 IPv6, bit 2 allow foreign), then records of
//! `[op, len, data[len]]`: op bit 0 = reply direction, bits 1..3 pick the sequence number
//! (in order / retransmission / future / random), bits 4..7 a small offset.
#![no_main]

use ferrovs_ftp_alg::*;
use libfuzzer_sys::fuzz_target;

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
    let mut s = FtpSession::new(SessionParams {
        mode: if nat { Mode::Nat } else { Mode::Dr },
        client: c.parse().unwrap(),
        vip: v.parse().unwrap(),
        real: r.parse().unwrap(),
        allow_foreign_port_address: flags & 4 != 0,
        pinhole_timeout: 10,
    });
    let mut a = Actions::default();
    let mut front = [0xFFFF_FF00u32, 7u32];
    let mut now = 0u64;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (seg, more) = tail.split_at(n);
        rest = more;
        now += 1;
        let dir = if op & 1 != 0 {
            Dir::Reply
        } else {
            Dir::Original
        };
        let f = &mut front[usize::from(op & 1)];
        let small = u32::from(op >> 4);
        let seq = match (op >> 1) & 7 {
            0..=3 => *f,
            4 => f.wrapping_sub(small * 7),
            5 => f.wrapping_add(small + 1),
            _ => u32::from_le_bytes([small as u8, *op, *len, 0x5a]),
        };
        a.clear();
        let v = s.on_segment(now, dir, seq, seg, &mut a);
        if seq == *f {
            *f = f.wrapping_add(n as u32);
        }
        assert!(s.held_len(Dir::Reply) <= MAX_LINE);
        assert_eq!(s.held_len(Dir::Original), 0);
        if !matches!(v, Verdict::Forward) {
            assert!(nat && !v6 && dir == Dir::Reply, "{v:?}");
        }
        let _ = s.map_seq(dir, seq);
        let _ = s.map_ack(dir, seq);
    }
});
