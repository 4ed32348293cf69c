//! Property tests: arbitrary input never panics, held bytes stay bounded, commands are never
//! changed, and for in-order delivery the output stream does not depend on segmentation.

use ferrovs_ftp_alg::*;
use proptest::prelude::*;

fn params(mode: Mode, v6: bool) -> SessionParams {
    let (c, v, r) = if v6 {
        ("[2001:db8::7]:40000", "[2001:db8::100]:21", "[fd00::2]:21")
    } else {
        ("192.0.2.7:40000", "10.0.0.100:21", "10.0.2.2:21")
    };
    SessionParams {
        mode,
        client: c.parse().unwrap(),
        vip: v.parse().unwrap(),
        real: r.parse().unwrap(),
        allow_foreign_port_address: false,
        pinhole_timeout: 5,
    }
}

/// Bytes that look like FTP often enough to reach the interesting paths.
fn ftpish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"227 Entering Passive Mode (10,0,2,2,4,1)\r\n".to_vec()),
        Just(b"227 =192,168,100,200,195,80\n".to_vec()),
        Just(b"227 Logout.\r\n".to_vec()),
        Just(b"227-x\r\n".to_vec()),
        Just(b"229 ok (|||6446|)\r\n".to_vec()),
        Just(b"234 go\r\n".to_vec()),
        Just(b"AUTH TLS\r\n".to_vec()),
        Just(b"PORT 192,0,2,7,4,1\r\n".to_vec()),
        Just(b"EPRT |1|192.0.2.7|5000|\r\n".to_vec()),
        Just(b"PASV\r\n".to_vec()),
        Just(b"227 ".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(vec![b'7'; 1100]),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
struct Op {
    reply: bool,
    /// Offset relative to the direction's current frontier (negative = retransmission/old).
    rel: i32,
    data: Vec<u8>,
}

fn op() -> impl Strategy<Value = Op> {
    (any::<bool>(), prop_oneof![Just(0i32), -200i32..50, any::<i32>()], ftpish()).prop_map(|(reply, rel, data)| Op {
        reply,
        rel,
        data,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_segments_never_panic(
        nat in any::<bool>(),
        v6 in any::<bool>(),
        isn in any::<u32>(),
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let mode = if nat { Mode::Nat } else { Mode::Dr };
        let mut s = FtpSession::new(params(mode, v6));
        let mut a = Actions::default();
        let mut front = [isn, isn ^ 0x5555_5555];
        for (now, op) in ops.iter().enumerate() {
            let dir = if op.reply { Dir::Reply } else { Dir::Original };
            let f = &mut front[op.reply as usize];
            let seq = f.wrapping_add(op.rel as u32);
            a.clear();
            let v = s.on_segment(now as u64, dir, seq, &op.data, &mut a);
            if op.rel == 0 {
                *f = f.wrapping_add(op.data.len() as u32);
            }
            prop_assert!(s.held_len(Dir::Reply) <= MAX_LINE);
            prop_assert_eq!(s.held_len(Dir::Original), 0);
            match &v {
                Verdict::Replace { payload, .. } => {
                    prop_assert!(dir == Dir::Reply && nat && !v6);
                    prop_assert!(payload.len() <= op.data.len() + MAX_LINE + 64);
                }
                Verdict::Hold => prop_assert!(dir == Dir::Reply && nat && !v6),
                Verdict::Forward => {}
            }
            let _ = s.map_seq(dir, seq);
            let _ = s.map_ack(dir, seq);
            // `unshifted` promises the identity (the engine then translates nothing).
            if s.unshifted() {
                for d in [Dir::Original, Dir::Reply] {
                    for x in [seq, seq.wrapping_add(7), isn, isn.wrapping_sub(3)] {
                        prop_assert_eq!(s.map_seq(d, x), x);
                        prop_assert_eq!(s.map_ack(d, x), x);
                    }
                }
            }
            for e in &a.expectations {
                prop_assert_eq!(e.expires, now as u64 + 5);
            }
        }
    }

    #[test]
    fn in_order_output_independent_of_cuts(
        text in ftpish(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        isn in any::<u32>(),
    ) {
        let stream = |cuts: &[usize]| {
            let mut s = FtpSession::new(params(Mode::Nat, false));
            let mut a = Actions::default();
            let mut exps = 0;
            let mut pts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
            pts.push(text.len());
            pts.sort_unstable();
            let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
            let mut from = 0;
            for p in pts {
                if p == from { continue; }
                let seq = isn.wrapping_add(from as u32);
                a.clear();
                let v = s.on_segment(0, Dir::Reply, seq, &text[from..p], &mut a);
                exps += a.expectations.len();
                match v {
                    Verdict::Forward => out.push((s.map_seq(Dir::Reply, seq), text[from..p].to_vec())),
                    Verdict::Replace { seq, payload } => out.push((s.map_seq(Dir::Reply, seq), payload)),
                    Verdict::Hold => {}
                }
                from = p;
            }
            // Contiguous in translated space, in order.
            let mut bytes = Vec::new();
            let mut next = isn;
            for (seq, p) in out {
                assert_eq!(seq, next, "output not contiguous");
                next = next.wrapping_add(p.len() as u32);
                bytes.extend_from_slice(&p);
            }
            (bytes, exps, s.held_len(Dir::Reply))
        };
        let whole = stream(&[]);
        let (bytes, exps, held) = stream(&cuts);
        // Bytes still held at the end (an unfinished 227 line) are not part of either output.
        prop_assert_eq!(held, whole.2);
        prop_assert_eq!(bytes, whole.0);
        prop_assert_eq!(exps, whole.1);
    }
}

/// Segments of one byte (a line that grows, its end, a byte of an overlong line), new or
/// retransmitted: the flood the quick path is for.
fn tiny_op() -> impl Strategy<Value = Op> {
    (any::<bool>(), prop_oneof![Just(0i32), -8i32..0], prop_oneof![Just(b'N'), Just(b'\n'), Just(b'7')])
        .prop_map(|(reply, rel, b)| Op { reply, rel, data: vec![b] })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `on_segment_quick` agrees with `on_segment`: when it takes a segment, `on_segment`
    /// forwards it unchanged with no expectation or event, and both sessions end in the same
    /// state (stats, frontiers, held bytes, sequence mapping).
    #[test]
    fn quick_path_agrees_with_on_segment(
        nat in any::<bool>(),
        v6 in any::<bool>(),
        isn in any::<u32>(),
        ops in proptest::collection::vec(prop_oneof![op(), tiny_op(), tiny_op()], 0..80),
    ) {
        let mode = if nat { Mode::Nat } else { Mode::Dr };
        let (mut full, mut quick) = (FtpSession::new(params(mode, v6)), FtpSession::new(params(mode, v6)));
        let (mut af, mut aq) = (Actions::default(), Actions::default());
        let mut front = [isn, isn ^ 0x5555_5555];
        for (now, op) in ops.iter().enumerate() {
            let dir = if op.reply { Dir::Reply } else { Dir::Original };
            let f = &mut front[op.reply as usize];
            let seq = f.wrapping_add(op.rel as u32);
            af.clear();
            aq.clear();
            let vf = full.on_segment(now as u64, dir, seq, &op.data, &mut af);
            let took = quick.on_segment_quick(dir, seq, &op.data);
            let vq = if took { Verdict::Forward } else { quick.on_segment(now as u64, dir, seq, &op.data, &mut aq) };
            if took {
                prop_assert!(af.expectations.is_empty() && af.events.is_empty(), "{:?}", af);
            }
            prop_assert_eq!(&vf, &vq);
            prop_assert_eq!(&af, &aq);
            if op.rel == 0 {
                *f = f.wrapping_add(op.data.len() as u32);
            }
            for d in [Dir::Original, Dir::Reply] {
                prop_assert_eq!(full.next_seq(d), quick.next_seq(d));
                prop_assert_eq!(full.held_len(d), quick.held_len(d));
                prop_assert_eq!(full.map_seq(d, seq), quick.map_seq(d, seq));
            }
            prop_assert_eq!(full.stats(), quick.stats());
        }
    }
}

/// The flood of `ferrovs bench --scenario flood-ftp-tiny`: one-byte segments of a line that
/// never ends. Past MAX_LINE (counted once as oversized) they take the quick path, and so do
/// their retransmissions; a line end goes back to the full parser, which reads the next line.
#[test]
fn tiny_segments_of_an_endless_line_take_the_quick_path() {
    let mut s = FtpSession::new(params(Mode::Nat, false));
    let mut a = Actions::default();
    s.set_isn(Dir::Original, 999);
    let mut quick = 0;
    for k in 0..2 * MAX_LINE as u32 {
        if s.on_segment_quick(Dir::Original, 1000 + k, b"N") {
            quick += 1;
        } else {
            assert_eq!(s.on_segment(0, Dir::Original, 1000 + k, b"N", &mut a), Verdict::Forward);
        }
    }
    assert_eq!(quick, MAX_LINE as u32 - 1, "every byte after the first MAX_LINE + 1");
    assert_eq!(s.stats().oversized, 1);
    assert!(s.on_segment_quick(Dir::Original, 1000, b"N"), "a retransmission");
    assert_eq!(s.stats().retransmits, 1);
    let end = 1000 + 2 * MAX_LINE as u32;
    assert!(!s.on_segment_quick(Dir::Original, end, b"\n"), "the line end is parsed");
    assert_eq!(s.on_segment(0, Dir::Original, end, b"\n", &mut a), Verdict::Forward);
    assert!(!s.on_segment_quick(Dir::Original, end + 1, b"P"), "a new line is read again");
    assert!(!s.on_segment_quick(Dir::Original, end + 9, b"P"), "after a gap: the full parser");
    // Far ahead of the window: told apart, nothing changed; an empty segment is never.
    let window = 65_535 << 14;
    let stats = s.stats();
    let next = end + 1; // past the line end
    for ahead in [window + 1, 0x7fff_ffff] {
        assert_eq!(s.on_segment_quick_in(Dir::Original, next + ahead, b"X", window), Quick::OutOfWindow);
        assert_eq!(s.on_segment_quick_in(Dir::Original, next + ahead, b"", window), Quick::Forward);
    }
    assert_eq!(s.on_segment_quick_in(Dir::Original, next + window, b"X", window), Quick::Full, "in the window: a gap");
    assert_eq!(s.on_segment_quick_in(Dir::Original, 1000, b"N", window), Quick::Forward, "a retransmission");
    assert_eq!(s.next_seq(Dir::Original), Some(next));
    assert_eq!(s.stats().retransmits, stats.retransmits + 1);
    assert_eq!(s.stats().gaps, stats.gaps);
}

/// `unshifted` holds until a rewrite is recorded, and on a session resumed from a peer only if
/// the peer's translation moved nothing.
#[test]
fn unshifted_until_a_rewrite() {
    let mut s = FtpSession::new(params(Mode::Nat, false));
    let mut a = Actions::default();
    assert!(s.unshifted());
    assert_eq!(s.on_segment(0, Dir::Original, 1000, b"PASV\r\n", &mut a), Verdict::Forward);
    assert!(s.unshifted(), "a command passed unchanged moves nothing");
    let v = s.on_segment(0, Dir::Reply, 5000, b"227 Entering Passive Mode (10,0,2,2,4,1)\r\n", &mut a);
    assert!(matches!(v, Verdict::Replace { .. }), "{v:?}");
    assert!(!s.unshifted(), "the 227 was rewritten (10,0,2,2 -> 10,0,0,100: two bytes longer)");
    assert_eq!(s.map_seq(Dir::Reply, 5100), 5102);
    let zero = SeqShift { at: 0, before: 0, after: 0 };
    let r = FtpSession::resume(params(Mode::Nat, false), zero, zero);
    assert!(r.unshifted());
    let moved = SeqShift { at: 7000, before: 0, after: 3 };
    assert!(!FtpSession::resume(params(Mode::Nat, false), zero, moved).unshifted());
    assert!(!FtpSession::resume(params(Mode::Nat, false), SeqShift { at: 0, before: -2, after: -2 }, zero).unshifted());
}
