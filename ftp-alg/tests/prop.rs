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
