//! AF_PACKET backend over a veth pair in a private network namespace.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_NET_RAW + CAP_SYS_ADMIN) and `ip`;
//! otherwise every test prints why it is skipped and passes. Each test
//! creates its own namespace `fvs-t-<pid>-<tag>` holding a veth pair
//! `fvsa`/`fvsb`, runs its body on a thread that entered the namespace with
//! setns(2), and deletes the namespace in a Drop guard, even on panic.

mod common;
use common::netns::VethNs;
use ferrovs_engine::port::afpacket::{self, AfPacketConfig, AfPacketQueue, TxMode};
use ferrovs_engine::port::memory::HeapBuf;
use ferrovs_engine::port::{Packet, PortQueue, BURST};
use ferrovs_engine::tools::frame;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
/// Neither end's MAC: only seen thanks to promiscuous mode on real NICs.
const MAC_OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// IEEE local experimental ethertype: the kernel stack ignores it.
const ETH_TEST: u16 = 0x88b5;

/// A test frame: ethertype ETH_TEST (optionally behind an 802.1Q tag),
/// a 4-byte sequence number, then a pattern.
fn test_frame(dst: [u8; 6], seq: u32, len: usize, vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&MAC_A);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ETH_TEST.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32).wrapping_mul(7).wrapping_add(seq) as u8);
    }
    f
}

/// Sequence number of one of our test frames, or None for kernel noise.
fn test_seq(f: &[u8]) -> Option<u32> {
    let mut o = 12;
    if f.len() >= 16 && f[12..14] == [0x81, 0x00] {
        o = 16;
    }
    if f.len() < o + 6 || f[o..o + 2] != ETH_TEST.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes(f[o + 2..o + 6].try_into().unwrap()))
}

fn bufs(frames: &[Vec<u8>]) -> Vec<HeapBuf> {
    frames.iter().map(|f| HeapBuf::from_slice(f)).collect()
}

/// Drain `q` of test frames (copies), recycling the buffers.
fn drain(q: &mut AfPacketQueue, into: &mut Vec<Vec<u8>>) {
    let mut v = Vec::with_capacity(BURST);
    loop {
        if q.rx_burst(&mut v) == 0 {
            break;
        }
        for b in v.drain(..) {
            if test_seq(b.data()).is_some() {
                into.push(b.data().to_vec());
            }
            // Dropped here; the queue's pool refills from the shared pool
            // or allocates.
            drop(b);
        }
    }
}

/// Poll `q` until `want` test frames arrived or 5 s passed.
fn receive(q: &mut AfPacketQueue, want: usize, into: &mut Vec<Vec<u8>>) {
    let end = Instant::now() + Duration::from_secs(5);
    while into.len() < want && Instant::now() < end {
        drain(q, into);
        if into.len() < want {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn open1(dev: &str) -> AfPacketQueue {
    afpacket::open(dev, 1, None, dev).unwrap_or_else(|e| panic!("{e}")).pop().unwrap()
}

#[test]
fn frames_cross_veth_intact_with_vlan_tags() {
    let Some(ns) = VethNs::new("fvs-t", "intact", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let mut a = open1("fvsa");
        let mut b = open1("fvsb");
        assert_eq!(a.caps().mac, MAC_A);
        assert_eq!(b.caps().mac, MAC_B);
        assert_eq!((a.caps().mtu, a.caps().queues, a.caps().name.as_str()), (1500, 1, "fvsa"));
        assert_eq!(a.tx_mode(), TxMode::Ring);
        let o = afpacket::open("fvsa", 1, Some([2, 9, 9, 9, 9, 9]), "lb0").unwrap();
        assert_eq!((o[0].caps().mac, o[0].caps().name.as_str()), ([2, 9, 9, 9, 9, 9], "lb0"));
        drop(o);
        let e = afpacket::open("fvs-nope0", 1, None, "x").unwrap_err();
        assert_eq!(e.to_string(), "fvs-nope0: no such interface");

        let n = 3000u32;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = 60 + (i as usize * 37) % 1455;
                let dst = if i % 5 == 0 { MAC_OTHER } else { MAC_B };
                let vlan = (i % 7 == 3).then_some(0x2000 | (i as u16 % 4094 + 1));
                test_frame(dst, i, len, vlan)
            })
            .collect();
        let mut got = Vec::new();
        let (mut sent, mut dropped) = (0, 0);
        for chunk in frames.chunks(BURST) {
            let mut v = bufs(chunk);
            let r = a.tx_burst(&mut v);
            assert!(v.is_empty());
            sent += r.sent;
            dropped += r.dropped;
            a.flush();
            drain(&mut b, &mut got);
        }
        receive(&mut b, n as usize, &mut got);
        assert_eq!((sent, dropped), (n as usize, 0));
        assert_eq!(got.len(), n as usize, "frames received");
        for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
            assert_eq!(g, f, "frame {i} differs");
        }
        let s = b.stats();
        assert_eq!(s.rx_vlan_reinserted, frames.iter().filter(|f| f[12] == 0x81).count() as u64);
        assert_eq!(s.rx_oversize, 0);
        // PACKET_IGNORE_OUTGOING: the sender does not see its own frames.
        let mut own = Vec::new();
        drain(&mut a, &mut own);
        assert!(own.is_empty(), "sender received {} of its own frames", own.len());
        let k = b.kernel_stats().unwrap();
        assert_eq!(k.drops, 0, "{k:?}");
    });
}

/// A UDP frame of flow `flow` (source 10.1.x.y:1024+flow to 10.99.0.1:80)
/// carrying `flow` and `seq`, written by the engine's frame writer.
fn udp_frame(flow: u32, seq: u32) -> Vec<u8> {
    let f = frame::Frame4 {
        src_mac: MAC_OTHER,
        dst_mac: MAC_A,
        src: [10, 1, (flow >> 8) as u8, flow as u8],
        dst: [10, 99, 0, 1],
        sport: 1024 + flow as u16,
        dport: 80,
        proto: ferrovs_engine::wire::parse::PROTO_UDP,
        flags: 0,
        seq: 0,
        ack: 0,
        ttl: 64,
    };
    let mut b = vec![0u8; frame::MIN_FRAME + 64];
    let n = frame::write4(&mut b, &f, 0, &[flow.to_be_bytes(), seq.to_be_bytes()].concat());
    b.truncate(n);
    b
}

#[test]
fn fanout_spreads_flows_over_two_workers() {
    let Some(ns) = VethNs::new("fvs-t", "fanout", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let mut a = open1("fvsa");
        let mut bs = afpacket::open("fvsb", 2, None, "fvsb").unwrap();
        assert_eq!(bs.len(), 2);
        assert_eq!(bs[1].caps().queues, 2);
        let (flows, per) = (64u32, 20u32);
        let frames: Vec<Vec<u8>> = (0..per).flat_map(|s| (0..flows).map(move |fl| udp_frame(fl, s))).collect();
        let mut got: Vec<Vec<(u32, u32, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
        let collect = |bs: &mut Vec<AfPacketQueue>, got: &mut Vec<Vec<(u32, u32, Vec<u8>)>>| {
            let mut v = Vec::new();
            for (w, q) in bs.iter_mut().enumerate() {
                while q.rx_burst(&mut v) > 0 {
                    for p in v.drain(..) {
                        let d = p.data();
                        if d.len() >= 50 && d[12..14] == [8, 0] && d[23] == 17 {
                            let fl = u32::from_be_bytes(d[42..46].try_into().unwrap());
                            let s = u32::from_be_bytes(d[46..50].try_into().unwrap());
                            got[w].push((fl, s, d.to_vec()));
                        }
                    }
                }
            }
        };
        for chunk in frames.chunks(BURST) {
            let r = a.tx_burst(&mut bufs(chunk));
            assert_eq!(r.sent, chunk.len());
            collect(&mut bs, &mut got);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while got[0].len() + got[1].len() < frames.len() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
            collect(&mut bs, &mut got);
        }
        assert_eq!(got[0].len() + got[1].len(), frames.len());
        eprintln!("fanout: worker 0 got {}, worker 1 got {}", got[0].len(), got[1].len());
        assert!(!got[0].is_empty() && !got[1].is_empty(), "both workers receive");
        let mut owner: HashMap<u32, usize> = HashMap::new();
        for (w, g) in got.iter().enumerate() {
            let mut last: HashMap<u32, u32> = HashMap::new();
            for (fl, s, d) in g {
                assert_eq!(*owner.entry(*fl).or_insert(w), w, "flow {fl} split over workers");
                assert_eq!(d, &udp_frame(*fl, *s));
                if let Some(prev) = last.insert(*fl, *s) {
                    assert!(*s > prev, "flow {fl} reordered");
                }
            }
        }
        assert_eq!(owner.len(), flows as usize);
        // The group does not receive what its members transmit.
        let own: Vec<Vec<u8>> = (0..BURST as u32).map(|i| test_frame(MAC_A, i, 80, None)).collect();
        let r = bs[0].tx_burst(&mut bufs(&own[..16]));
        let r2 = bs[1].tx_burst(&mut bufs(&own[16..]));
        assert_eq!(r.sent + r2.sent, BURST);
        let mut back = Vec::new();
        receive(&mut a, BURST, &mut back);
        assert_eq!(back.len(), BURST);
        std::thread::sleep(Duration::from_millis(5));
        let mut echoed = Vec::new();
        for q in bs.iter_mut() {
            drain(q, &mut echoed);
        }
        assert!(echoed.is_empty(), "fanout group received {} of its own frames", echoed.len());
    });
}

#[test]
fn tx_burst_larger_than_ring_counts_drops() {
    let Some(ns) = VethNs::new("fvs-t", "overflow", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let mut a = open1("fvsa");
        let mut b = open1("fvsb");
        let ring = a.tx_ring_frames();
        assert!(ring > 0);
        let n = ring * 4;
        let frames: Vec<Vec<u8>> = (0..n as u32).map(|i| test_frame(MAC_B, i, 64, None)).collect();
        let t = Instant::now();
        let r = a.tx_burst(&mut bufs(&frames));
        assert!(t.elapsed() < Duration::from_secs(5), "tx_burst took {:?}", t.elapsed());
        eprintln!("overflow: {n} frames into a {ring}-frame ring: sent {}, dropped {}", r.sent, r.dropped);
        assert_eq!(r.sent + r.dropped, n);
        assert!(r.sent > 0 && r.sent <= ring);
        assert!(r.dropped >= n - ring);
        assert_eq!(a.stats().tx_ring_full, r.dropped as u64);
        let mut got = Vec::new();
        receive(&mut b, r.sent, &mut got);
        assert_eq!(got.len(), r.sent);
        for (g, f) in got.iter().zip(&frames) {
            assert_eq!(g, f);
        }
        // Packets over the MTU and empty ones are dropped and counted, not
        // sent; a tagged frame may be 4 bytes longer.
        let big = HeapBuf::from_slice(&test_frame(MAC_B, 7, 1515, None));
        let tagged_ok = HeapBuf::from_slice(&test_frame(MAC_B, 8, 1518, Some(5)));
        let tagged_big = HeapBuf::from_slice(&test_frame(MAC_B, 9, 1519, Some(5)));
        assert!(a.tx_max_frame() >= 1519);
        let before = a.stats().tx_oversize;
        let r = a.tx_burst(&mut vec![big, HeapBuf::new(), tagged_ok, tagged_big]);
        assert_eq!((r.sent, r.dropped), (1, 3));
        assert_eq!(a.stats().tx_oversize - before, 3);
        got.clear();
        receive(&mut b, 1, &mut got);
        assert_eq!(got, vec![test_frame(MAC_B, 8, 1518, Some(5))]);
        // The ring recovers: the next burst goes through in full.
        let more: Vec<Vec<u8>> = (0..BURST as u32).map(|i| test_frame(MAC_B, 100_000 + i, 64, None)).collect();
        let mut r2 = a.tx_burst(&mut bufs(&more));
        let end = Instant::now() + Duration::from_secs(2);
        while r2.sent < BURST && Instant::now() < end {
            // Slots can still be in flight right after the big burst.
            std::thread::sleep(Duration::from_millis(5));
            a.flush();
            got.clear();
            drain(&mut b, &mut got);
            r2 = a.tx_burst(&mut bufs(&more));
        }
        assert_eq!(r2.sent, BURST);
    });
}

#[test]
fn send_fallback_works() {
    let Some(ns) = VethNs::new("fvs-t", "sendfb", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let cfg = AfPacketConfig { tx_ring: false, ..Default::default() };
        let mut a = afpacket::open_with("fvsa", 1, None, "fvsa", &cfg).unwrap().pop().unwrap();
        let mut b = open1("fvsb");
        assert_eq!((a.tx_mode(), a.tx_ring_frames()), (TxMode::Send, 0));
        let frames: Vec<Vec<u8>> = (0..200u32).map(|i| test_frame(MAC_B, i, 60 + i as usize, None)).collect();
        let mut got = Vec::new();
        for c in frames.chunks(BURST) {
            let r = a.tx_burst(&mut bufs(c));
            assert_eq!(r.sent, c.len());
            drain(&mut b, &mut got);
        }
        receive(&mut b, frames.len(), &mut got);
        assert_eq!(got, frames);
    });
}

#[test]
fn rough_throughput() {
    let Some(ns) = VethNs::new("fvs-t", "tput", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let mut a = open1("fvsa");
        let mut b = open1("fvsb");
        let frame = test_frame(MAC_B, 0, 64, None);
        // a sends bursts of 64-byte frames, b reflects every frame back out
        // (the LB's rx -> tx path), a receives them and reuses the buffers
        // for its next burst. One thread, no pacing.
        let (mut b_rx, mut a_rx, mut drops) = (0u64, 0u64, 0u64);
        let mut txv: Vec<HeapBuf> = Vec::with_capacity(BURST);
        let mut bv: Vec<HeapBuf> = Vec::with_capacity(BURST);
        let mut av: Vec<HeapBuf> = Vec::with_capacity(BURST);
        let mut back: Vec<HeapBuf> = Vec::with_capacity(4 * BURST);
        let mut warm = true;
        let mut allocs_before = (0, 0);
        let mut t = Instant::now();
        loop {
            if warm && t.elapsed() > Duration::from_millis(200) {
                warm = false;
                (b_rx, a_rx, drops) = (0, 0, 0);
                allocs_before = (a.stats().pool_allocs, b.stats().pool_allocs);
                t = Instant::now();
            } else if !warm && t.elapsed() > Duration::from_secs(1) {
                break;
            }
            for _ in 0..64 {
                while txv.len() < BURST {
                    let mut p = back.pop().unwrap_or_else(|| a.alloc().unwrap());
                    p.reset();
                    p.set_len(frame.len());
                    p.data_mut().copy_from_slice(&frame);
                    txv.push(p);
                }
                let r = a.tx_burst(&mut txv);
                drops += r.dropped as u64;
                while b.rx_burst(&mut bv) > 0 {
                    b_rx += bv.len() as u64;
                    drops += b.tx_burst(&mut bv).dropped as u64;
                }
                while a.rx_burst(&mut av) > 0 {
                    a_rx += av.len() as u64;
                    // A V3 block can hand over hundreds of frames at once;
                    // keep a small stash and give the rest back.
                    for p in av.drain(..) {
                        if back.len() < 2 * BURST {
                            back.push(p);
                        } else {
                            a.recycle(p);
                        }
                    }
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "afpacket veth ({} build, one thread, 64-byte frames, a -> b -> a reflect): \
             b received {:.0} frames/s, a received back {:.0} frames/s, tx drops {drops}",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            b_rx as f64 / secs,
            a_rx as f64 / secs
        );
        assert!(b_rx > 0 && a_rx > 0);
        let allocs = (a.stats().pool_allocs - allocs_before.0, b.stats().pool_allocs - allocs_before.1);
        assert_eq!(allocs, (0, 0), "pool allocations in steady state");
    });
}

/// A receive ring nobody empties overflows in the kernel: those frames never reach a worker,
/// so only the queue's own counters ([`PortQueue::counters`], `ferrovsadm ports`) show them,
/// summed over the kernel's clear-on-read statistics.
#[test]
fn a_full_receive_ring_is_counted_as_the_ports_drops() {
    let Some(ns) = VethNs::new("fvs-t", "rxfull", Some((MAC_A, MAC_B))) else { return };
    ns.run(|| {
        let mut a = open1("fvsa");
        // Two 4 KiB blocks: a few dozen 64-byte frames fill the ring.
        let small = AfPacketConfig { rx_block_size: 4096, rx_block_nr: 2, ..AfPacketConfig::default() };
        let mut b = afpacket::open_with("fvsb", 1, None, "b", &small).unwrap().pop().unwrap();
        assert_eq!(b.counters(), Some(Default::default()), "a fresh queue counted nothing");
        let n = 2000u32;
        let mut sent = 0;
        for chunk in (0..n).collect::<Vec<_>>().chunks(BURST) {
            let frames: Vec<Vec<u8>> = chunk.iter().map(|&i| test_frame(MAC_B, i, 64, None)).collect();
            let mut v = bufs(&frames);
            while !v.is_empty() {
                sent += a.tx_burst(&mut v).sent;
                a.flush();
            }
            // Give the ring time to fill; `b` does not read.
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_millis(20));
        let mid = b.counters().expect("AF_PACKET keeps counters");
        assert!(mid.rx_dropped > 0, "{sent} frames into an unread two-block ring, none dropped: {mid:?}");
        assert_eq!(mid.rx_packets, 0, "nothing read yet");
        // A second read of the kernel's statistics (which clear on read) keeps the sum.
        let again = b.counters().unwrap();
        assert!(again.rx_dropped >= mid.rx_dropped, "{again:?} after {mid:?}");
        let mut got = Vec::new();
        receive(&mut b, 1, &mut got);
        drain(&mut b, &mut got);
        let end = b.counters().unwrap();
        assert!(!got.is_empty() && end.rx_packets >= got.len() as u64, "{} read, {end:?}", got.len());
        assert!(
            end.rx_packets + end.rx_dropped >= sent as u64,
            "{sent} sent: each one read or counted dropped: {end:?}"
        );
        assert_eq!(end.rx_errors, 0);
        let tx = a.counters().unwrap();
        assert_eq!((tx.tx_packets, tx.tx_dropped + tx.tx_errors), (sent as u64, a.stats().tx_ring_full));
    });
}
