//! Deterministic simulation: a realistic session is cut into segments in every possible way,
//! with and without retransmissions, and the translated byte streams and the expectations must
//! not depend on the cutting.

use ferrovs_ftp_alg::*;

/// xorshift64*: small, seeded, good enough to pick retransmissions.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

use Dir::{Original as O, Reply as R};

/// The modes simulated: NAT, DR and full NAT (whose PORT/EPRT are rewritten).
fn modes() -> [Mode; 3] {
    [Mode::Nat, Mode::Dr, Mode::Fnat { local: "10.0.2.200".parse().unwrap() }]
}

/// Full NAT's engine: reserves a local port derived from the client's (deterministic, so the
/// outcome does not depend on the cutting).
struct Reserve;
impl Pinholes for Reserve {
    fn open(&mut self, e: &Expectation) -> Grant {
        match e.kind {
            ExpectKind::Active { client_port, .. } => Grant::OpenAt(client_port.wrapping_add(7)),
            _ => Grant::Open,
        }
    }
}

const SCRIPT: &[(Dir, &str)] = &[
    (R, "220 (vsFTPd 3.0.3)\r\n"),
    (O, "USER anonymous\r\n"),
    (R, "331 Please specify the password.\r\n"),
    (O, "PASS guest@example.org\r\n"),
    (R, "230 Login successful.\r\n"),
    (O, "PWD\r\n"),
    (R, "257 \"/\" is the current directory\r\n"),
    (O, "TYPE I\r\n"),
    (R, "200 Switching to Binary mode.\r\n"),
    (O, "PASV\r\n"),
    (R, "227 Entering Passive Mode (10,0,2,2,195,80).\r\n"),
    (O, "RETR file.bin\r\n"),
    (R, "150 Opening BINARY mode data connection for file.bin (1234 bytes).\r\n"),
    (R, "226 Transfer complete.\r\n"),
    (O, "PORT 192,0,2,7,4,1\r\n"),
    (R, "200 PORT command successful. Consider using PASV.\r\n"),
    (O, "LIST\r\n"),
    (R, "150 Here comes the directory listing.\r\n226 Directory send OK.\r\n"),
    (O, "EPRT |1|192.0.2.7|50001|\r\n"),
    (R, "200 EPRT command successful.\r\n"),
    (O, "epsv\r\n"),
    (R, "229 Entering Extended Passive Mode (|||50002|)\r\n"),
    // A multi-line reply whose text holds a 227 line (a server echoing client input): tracked,
    // never acted on.
    (O, "STAT\r\n"),
    (R, "211-Status\r\n227 Entering Passive Mode (10,0,2,2,195,81)\r\n211 End\r\n"),
    (O, "PORT 198,51,100,1,4,1\r\n"),
    (R, "500 Illegal PORT command.\r\n"),
    (O, "PASV\r\n"),
    (R, "227 =192,168,200,201,195,82\r\n"),
    (O, "QUIT\r\n"),
    (R, "221 Goodbye.\r\n"),
];

/// Initial sequence numbers: the reply one wraps during the session.
fn isn(dir: Dir) -> u32 {
    match dir {
        O => 0x1234_5678,
        R => u32::MAX - 300,
    }
}

fn params(mode: Mode) -> SessionParams {
    SessionParams {
        mode,
        client: "192.0.2.7:40000".parse().unwrap(),
        vip: "10.0.0.100:21".parse().unwrap(),
        real: "10.0.2.2:21".parse().unwrap(),
        allow_foreign_port_address: false,
        pinhole_timeout: 1_000,
    }
}

#[derive(Clone)]
struct Seg {
    dir: Dir,
    seq: u32,
    data: Vec<u8>,
}

/// Cuts message `i` at the offsets `cuts(i, len)` and gives every piece its sequence number.
fn segments(mode: Mode, cuts: impl Fn(usize, usize) -> Vec<usize>) -> Vec<Seg> {
    let mut next = [isn(O), isn(R)];
    let mut out = Vec::new();
    for (i, (dir, text)) in SCRIPT.iter().enumerate() {
        if mode == Mode::Dr && *dir == R {
            continue; // DR: replies bypass the balancer
        }
        let b = text.as_bytes();
        let n = &mut next[*dir as usize];
        let mut points = cuts(i, b.len());
        points.retain(|&p| p > 0 && p < b.len());
        points.sort_unstable();
        points.dedup();
        let mut from = 0;
        for p in points.into_iter().chain([b.len()]) {
            out.push(Seg { dir: *dir, seq: *n, data: b[from..p].to_vec() });
            *n = n.wrapping_add((p - from) as u32);
            from = p;
        }
    }
    out
}

/// Per-direction stream of the whole session cut into two segments at `k`; the directions are
/// interleaved by putting a direction's segments at the position of its first/last message.
fn two_segment_streams(mode: Mode, dir_cut: Dir, k: usize) -> Vec<Seg> {
    let mut out = Vec::new();
    for d in [O, R] {
        if mode == Mode::Dr && d == R {
            continue;
        }
        let all: Vec<u8> = SCRIPT.iter().filter(|m| m.0 == d).flat_map(|m| m.1.bytes()).collect();
        let k = if d == dir_cut { k.min(all.len()) } else { all.len() };
        for (from, to) in [(0, k), (k, all.len())] {
            if from < to {
                out.push(Seg { dir: d, seq: isn(d).wrapping_add(from as u32), data: all[from..to].to_vec() });
            }
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    streams: [Vec<u8>; 2],
    expectations: Vec<String>,
    events: Vec<String>,
}

/// Feeds `segs` in order, re-feeding random earlier segments (single, or two adjacent ones
/// coalesced) when `retrans` is set, and reassembles what would reach the peers.
fn run(mode: Mode, segs: &[Seg], retrans: Option<u64>) -> Outcome {
    let mut s = FtpSession::new(params(mode));
    let mut a = Actions::default();
    let mut rng = Rng::new(retrans.unwrap_or(0));
    let cap = 4096;
    let mut wire: [Vec<Option<u8>>; 2] = [vec![None; cap], vec![None; cap]];
    let mut exps = Vec::new();
    let mut events = Vec::new();
    let mut now = 0u64;

    let mut feed = |seg: &Seg, s: &mut FtpSession, a: &mut Actions, now: u64| {
        a.clear();
        let v = if matches!(mode, Mode::Fnat { .. }) {
            s.on_segment_with(now, seg.dir, seg.seq, &seg.data, a, &mut Reserve)
        } else {
            s.on_segment(now, seg.dir, seg.seq, &seg.data, a)
        };
        let (seq, payload): (u32, &[u8]) = match &v {
            Verdict::Forward => (seg.seq, &seg.data),
            Verdict::Replace { seq, payload } => (*seq, payload),
            Verdict::Hold => return,
        };
        let d = seg.dir as usize;
        let off = s.map_seq(seg.dir, seq).wrapping_sub(isn(seg.dir)) as usize;
        for (j, &b) in payload.iter().enumerate() {
            let slot = &mut wire[d][off + j];
            if let Some(old) = *slot {
                assert_eq!(old, b, "byte {} of {:?} changed on resend", off + j, seg.dir);
            }
            *slot = Some(b);
        }
        if matches!(v, Verdict::Forward) {
            // The peer's ack of this segment maps back to its original end.
            let t_end = s.map_seq(seg.dir, seg.seq).wrapping_add(seg.data.len() as u32);
            assert_eq!(s.map_ack(seg.dir.reverse(), t_end), seg.seq.wrapping_add(seg.data.len() as u32));
        }
    };

    for (k, seg) in segs.iter().enumerate() {
        now += 1;
        feed(seg, &mut s, &mut a, now);
        exps.extend(a.expectations.drain(..).map(|mut e| {
            e.expires = 0;
            format!("{e:?}")
        }));
        events.extend(a.events.iter().map(|e| format!("{e:?}")));
        if retrans.is_some() {
            while rng.below(3) == 0 {
                let j = rng.below(k + 1);
                let mut r = segs[j].clone();
                // Sometimes coalesce with the next segment of the same direction (if already fed).
                if let Some(n) = segs[j + 1..=k].iter().find(|n| n.dir == r.dir) {
                    if rng.below(2) == 0 && n.seq == r.seq.wrapping_add(r.data.len() as u32) {
                        r.data.extend_from_slice(&n.data);
                    }
                }
                feed(&r, &mut s, &mut a, now);
                assert!(a.expectations.is_empty(), "retransmission opened an expectation");
                assert!(a.events.is_empty(), "retransmission raised {:?}", a.events);
            }
        }
        let fnat = matches!(mode, Mode::Fnat { .. });
        assert!((s.held_len(O) == 0 || fnat) && s.held_len(O) <= MAX_LINE && s.held_len(R) <= MAX_LINE);
    }
    assert_eq!(s.held_len(R), 0, "everything released at the end");
    assert_eq!(s.held_len(O), 0, "everything released at the end");
    let streams = [0, 1].map(|d| {
        let w = &wire[d];
        let len = w.iter().position(Option::is_none).unwrap();
        assert!(w[len..].iter().all(Option::is_none), "hole in reassembled stream");
        w[..len].iter().map(|b| b.unwrap()).collect::<Vec<u8>>()
    });
    // Acks for the complete translated streams map back to the complete original streams.
    for d in [O, R] {
        let orig_len: usize =
            SCRIPT.iter().filter(|m| m.0 == d && !(mode == Mode::Dr && d == R)).map(|m| m.1.len()).sum();
        let t_end = isn(d).wrapping_add(streams[d as usize].len() as u32);
        assert_eq!(s.map_ack(d.reverse(), t_end), isn(d).wrapping_add(orig_len as u32));
    }
    exps.sort();
    events.sort();
    Outcome { streams, expectations: exps, events }
}

fn reference(mode: Mode) -> Outcome {
    let out = run(mode, &segments(mode, |_, _| vec![]), None);
    let reply = String::from_utf8(out.streams[1].clone()).unwrap();
    match mode {
        Mode::Nat => {
            assert!(reply.contains("(10,0,0,100,195,80)."));
            assert!(reply.contains("211-Status\r\n227 Entering Passive Mode (10,0,2,2,195,81)\r\n211 End"));
            assert!(reply.contains("227 =10,0,0,100,195,82\r\n"));
            assert_eq!(reply.matches("10,0,2,2").count(), 1, "only the STAT text");
            assert!(!reply.contains("192,168"));
            // 195,80 + 50002 + 195,82 passive, 2 active; nothing from the STAT text.
            assert_eq!(out.expectations.len(), 5, "{:#?}", out.expectations);
            assert_eq!(out.events.iter().filter(|e| *e == "Unsolicited").count(), 1);
        }
        Mode::Dr => {
            assert!(reply.is_empty());
            // 3 passive (any port) + 2 active (the client's answers to the VIP).
            assert_eq!(out.expectations.len(), 5, "{:#?}", out.expectations);
        }
        Mode::Fnat { .. } => {
            assert!(reply.contains("(10,0,0,100,195,80)."));
            assert!(reply.contains("227 =10,0,0,100,195,82\r\n"));
            assert_eq!(out.expectations.len(), 5, "{:#?}", out.expectations);
            let cmds = String::from_utf8(out.streams[0].clone()).unwrap();
            assert!(cmds.contains("\r\nPORT 10,0,2,200,4,8\r\n"), "{cmds}");
            assert!(cmds.contains("\r\nEPRT |1|10.0.2.200|50008|\r\n"), "{cmds}");
            assert!(cmds.contains("\r\nPORT 198,51,100,1,4,1\r\n"), "a refused bounce is left alone");
            assert!(!cmds.contains("192,0,2,7") && !cmds.contains("192.0.2.7"), "{cmds}");
            assert_eq!(out.events.iter().filter(|e| e.starts_with("Bounce")).count(), 1);
            return out;
        }
    }
    assert_eq!(out.events.iter().filter(|e| e.starts_with("Bounce")).count(), 1);
    let orig: String = SCRIPT.iter().filter(|m| m.0 == O).map(|m| m.1).collect();
    assert_eq!(out.streams[0], orig.as_bytes(), "commands are never changed");
    out
}

#[test]
fn every_two_segment_split_of_every_message() {
    for mode in modes() {
        let want = reference(mode);
        for (i, (_, text)) in SCRIPT.iter().enumerate() {
            for k in 1..text.len() {
                let segs = segments(mode, |m, _| if m == i { vec![k] } else { vec![] });
                assert_eq!(run(mode, &segs, None), want, "{mode:?} msg {i} cut at {k}");
                let seed = (i * 1000 + k) as u64;
                assert_eq!(run(mode, &segs, Some(seed)), want, "{mode:?} msg {i} cut at {k} retrans");
            }
        }
    }
}

#[test]
fn one_byte_segments() {
    for mode in modes() {
        let want = reference(mode);
        let segs = segments(mode, |_, len| (1..len).collect());
        assert_eq!(run(mode, &segs, None), want, "{mode:?}");
        for seed in 1..=20 {
            assert_eq!(run(mode, &segs, Some(seed)), want, "{mode:?} seed {seed}");
        }
    }
}

#[test]
fn whole_streams_in_two_segments_at_every_offset() {
    for mode in modes() {
        let want = reference(mode);
        for d in [O, R] {
            let len: usize = SCRIPT.iter().filter(|m| m.0 == d).map(|m| m.1.len()).sum();
            for k in 0..=len {
                let segs = two_segment_streams(mode, d, k);
                assert_eq!(run(mode, &segs, None), want, "{mode:?} {d:?} k={k}");
                assert_eq!(run(mode, &segs, Some(k as u64)), want, "{mode:?} {d:?} k={k} retrans");
            }
        }
    }
}

#[test]
fn random_cuts_with_retransmissions() {
    for mode in modes() {
        let want = reference(mode);
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed + 77);
            let cuts: Vec<Vec<usize>> =
                SCRIPT.iter().map(|(_, t)| (0..rng.below(4)).map(|_| rng.below(t.len())).collect()).collect();
            let segs = segments(mode, |i, _| cuts[i].clone());
            assert_eq!(run(mode, &segs, Some(seed)), want, "{mode:?} seed {seed}");
        }
    }
}
