//! IP fragments through the engine (issue 12): packet(s) in -> packet(s) out + counters.
//! Outputs are reassembled the way the receiving host would and checked end to end.

mod common;
use common::seg::drops;
use common::*;
use ferrovs_engine::flow::frag;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::parse;

const SERVICES: &str = r#"
[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]
forward = "nat"

[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]
forward = "nat"

[[service.real_server]]
address = "fd00:2::2"

[[service]]
name = "dns-dr"
vip = "10.0.1.101"
protocol = "udp"
ports = [53]
forward = "dr"

[[service.real_server]]
address = "10.0.2.3"
"#;

fn engine() -> MemEngine {
    MemEngine::new(config(SERVICES), 1)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Injects `frames` on `iface` in order; returns every frame out.
fn inject_all(e: &mut MemEngine, iface: usize, frames: &[Vec<u8>], t: u64) -> Vec<Vec<u8>> {
    frames.iter().flat_map(|f| e.inject(iface, f, t)).map(|(_, f)| f).collect()
}

fn udp_of(frame: &[u8]) -> ([u8; 4], u16, [u8; 4], u16, Vec<u8>) {
    verify_checksums(frame).expect("reassembled datagram checksums");
    let p = parse(frame).unwrap();
    let a = |o: usize| -> [u8; 4] { frame[o..o + 4].try_into().unwrap() };
    (a(p.l3 + 12), p.sport, a(p.l3 + 16), p.dport, frame[p.payload..p.end].to_vec())
}

#[test]
fn nat_udp_datagrams_of_3000_and_9000_bytes_both_ways_any_order() {
    for (size, order) in [(3000, "in"), (9000, "in"), (3000, "reverse"), (9000, "shuffled")] {
        let mut e = engine();
        let data = payload(size);
        let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
        let mut frags = fragment4(&d, 1500, 0x4242);
        match order {
            "reverse" => frags.reverse(),
            "shuffled" => frags.swap(0, 3),
            _ => {}
        }
        let out = inject_all(&mut e, EXT, &frags, S);
        assert_eq!(out.len(), frags.len(), "{size} {order}: every fragment forwarded");
        assert!(out.iter().all(|f| f[0..6] == RS1_MAC));
        let whole = reassemble(&out).expect("complete datagram");
        assert_eq!(udp_of(&whole), (CLIENT, 5353, RS1, 53, data.clone()), "{size} {order}");
        // The reply, fragmented by the server.
        let r = with_macs(udp4(RS1, 53, CLIENT, 5353, &data), RS1_MAC, LB_INT);
        let mut rf = fragment4(&r, 1500, 0x77);
        rf.reverse();
        let out = inject_all(&mut e, INT, &rf, S + 1000);
        assert_eq!(out.len(), rf.len());
        let whole = reassemble(&out).expect("complete reply");
        assert_eq!(udp_of(&whole), (VIP, 53, CLIENT, 5353, data), "{size} {order} reply");
        assert_eq!(drops(&e), vec![]);
    }
}

#[test]
fn nat_ipv6_fragments_both_ways() {
    for size in [3000, 9000] {
        let mut e = engine();
        let data = payload(size);
        let d = with_macs(udp6(C6, 5353, VIP6, 53, &data), CLIENT_MAC, LB_EXT);
        let mut frags = fragment6(&d, 1500, 0xabcd_0001);
        frags.rotate_left(1); // the first fragment last
        let out = inject_all(&mut e, EXT, &frags, S);
        assert_eq!(out.len(), frags.len());
        let whole = reassemble(&out).unwrap();
        verify_checksums(&whole).unwrap();
        let p = parse(&whole).unwrap();
        assert_eq!(&whole[p.l3 + 24..p.l3 + 40], &RS6);
        assert_eq!(&whole[p.payload..p.end], &data[..]);
        let r = with_macs(udp6(RS6, 53, C6, 5353, &data), RS1_MAC, LB_INT);
        let out = inject_all(&mut e, INT, &fragment6(&r, 1500, 9), S + 1);
        let whole = reassemble(&out).unwrap();
        verify_checksums(&whole).unwrap();
        let p = parse(&whole).unwrap();
        assert_eq!(&whole[p.l3 + 8..p.l3 + 24], &VIP6);
        assert_eq!(drops(&e), vec![]);
    }
}

#[test]
fn dr_fragments_reach_the_real_server_unchanged() {
    let mut e = engine();
    let d = with_macs(udp4(CLIENT, 5353, VIP_DR, 53, &payload(4000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 5);
    let out = inject_all(&mut e, EXT, &frags, S);
    assert_eq!(out.len(), 3);
    for (o, i) in out.iter().zip(&frags) {
        assert_eq!(o[0..6], RS2_MAC);
        assert_eq!(o[12..], i[12..], "DR changes MAC addresses only");
    }
}

#[test]
fn overlapping_fragments_drop_the_datagram() {
    let mut e = engine();
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &payload(4000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 11);
    assert_eq!(inject_all(&mut e, EXT, &frags[..2], S).len(), 2);
    // A fragment overlapping the second one (offset moved back by 8 bytes).
    let mut bad = frags[2].clone();
    let fo = u16::from_be_bytes([bad[20], bad[21]]);
    bad[20..22].copy_from_slice(&(fo - 1).to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut bad, 14).unwrap();
    assert!(inject_all(&mut e, EXT, &[bad], S).is_empty());
    // The datagram is poisoned: its real last fragment goes too.
    assert!(inject_all(&mut e, EXT, &frags[2..], S).is_empty());
    assert_eq!(drops(&e), vec![("frag_overlap", 2)]);
}

#[test]
fn tiny_first_fragments_and_tcp_offset_8_are_refused() {
    let mut e = engine();
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &payload(100)), CLIENT_MAC, LB_EXT);
    // A first fragment of 0 data bytes: no UDP header in it.
    let frags = fragment4(&d, 20 + 8, 12);
    let mut tiny = frags[0].clone();
    tiny.truncate(14 + 20);
    tiny[16..18].copy_from_slice(&20u16.to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut tiny, 14).unwrap();
    assert!(e.inject(EXT, &tiny, S).is_empty());
    let t = with_macs(tcp4(CLIENT, 4000, VIP, 80, 0x10, 1, 1, &payload(64)), CLIENT_MAC, LB_EXT);
    let tf = fragment4(&t, 20 + 8, 13);
    assert!(e.inject(EXT, &tf[1], S).is_empty(), "TCP at offset 8 (RFC 1858)");
    assert_eq!(drops(&e), vec![("frag_tiny", 2)]);
}

#[test]
fn fragment_flood_costs_bounded_memory() {
    let mut e = engine();
    // Non-first fragments of datagrams whose first fragment never comes, many IDs.
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &payload(3000)), CLIENT_MAC, LB_EXT);
    let mut n = 0;
    for id in 0..500u16 {
        let f = fragment4(&d, 1500, id);
        assert!(e.inject(EXT, &f[1], S).is_empty());
        n += 1;
    }
    assert_eq!(drops(&e), vec![("frag_held_full", n - 64)]);
    // They time out; a later legitimate datagram still goes through.
    let _ = e.run(S + 2_000_000_000);
    assert_eq!(drops(&e), vec![("frag_held_full", n - 64), ("frag_timeout", 64)]);
    let f = fragment4(&d, 1500, 9999);
    assert_eq!(inject_all(&mut e, EXT, &f, S + 3_000_000_000).len(), 3);
}

#[test]
fn later_fragments_of_a_dropped_first_fragment_time_out() {
    // A later fragment arrives first and is held; then the first fragment is
    // dropped (no service on that port). The held fragment used to be taken,
    // held again and taken again by the same loop, for ever (found by the
    // pipeline fuzz target). Now it stays held and times out, counted.
    let mut e = engine();
    let big = with_macs(udp4(CLIENT, 5353, VIP, 54, &payload(3000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&big, 1500, 77);
    assert!(frags.len() >= 2);
    assert!(inject_all(&mut e, EXT, &frags[1..2], S).is_empty());
    assert_eq!(e.parked(), 1, "the later fragment waits for its first");
    assert!(inject_all(&mut e, EXT, &frags[..1], S).is_empty(), "no service on port 54");
    assert_eq!(e.parked(), 1, "still waiting");
    assert_drops(&e, &[(ferrovs_engine::pipeline::counters::DropReason::NoService, 1)]);
    e.inject(EXT, &arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 1]), 3 * S);
    assert_eq!(e.parked(), 0);
    assert_drops(
        &e,
        &[
            (ferrovs_engine::pipeline::counters::DropReason::NoService, 1),
            (ferrovs_engine::pipeline::counters::DropReason::FragTimeout, 1),
        ],
    );
}

/// IPv6 atomic fragments (a fragment header with offset 0 and M clear, RFC 6946): no
/// datagram to match later fragments to; each is processed on its own (Linux's
/// `ipv6_frag_rcv` treats it as unfragmented). Senders that emit them may repeat an ID:
/// a second one must not look like a second first fragment of a live datagram.
#[test]
fn ipv6_atomic_fragments_are_independent() {
    let mut e = engine();
    for n in 0..3u8 {
        let d = with_macs(udp6(C6, 5353, VIP6, 53, &[n; 100]), CLIENT_MAC, LB_EXT);
        let frags = fragment6(&d, 1500, 0x1234);
        assert_eq!(frags.len(), 1);
        let f = frag::parse_fragment(&frags[0]).unwrap();
        assert!(f.offset == 0 && !f.more, "atomic");
        let out = inject_all(&mut e, EXT, &frags, S + u64::from(n));
        assert_eq!(out.len(), 1, "atomic fragment {n} forwarded");
        let whole = reassemble(&out).unwrap();
        verify_checksums(&whole).unwrap();
    }
    assert_eq!(drops(&e), vec![]);
}

/// A datagram cut into more fragments than the table remembers ranges for (45 fragments of
/// 1480 bytes for a 64 KiB datagram at MTU 1500): in-order fragments make one contiguous
/// range, so an overlapping fragment late in the datagram is still caught (RFC 5722).
#[test]
fn overlap_is_caught_in_a_datagram_of_many_fragments() {
    let mut e = engine();
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &payload(40_000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 21);
    assert!(frags.len() > 20);
    assert_eq!(inject_all(&mut e, EXT, &frags[..20], S).len(), 20);
    // A 1480-byte fragment 8 bytes past fragment 15's start lies inside the bytes seen: a
    // copy of their place (Linux: inside a run of fragments, `IPFRAG_DUP`), dropped alone.
    let mut inside = frags[3].clone();
    let fo = u16::from_be_bytes([frags[15][20], frags[15][21]]);
    inside[20..22].copy_from_slice(&(fo + 1).to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut inside, 14).unwrap();
    assert!(inject_all(&mut e, EXT, &[inside], S).is_empty(), "inside fragments 15 and 16");
    // One 8 bytes past fragment 19's start reaches past the bytes seen: an overlap.
    let mut bad = frags[3].clone();
    let fo = u16::from_be_bytes([frags[19][20], frags[19][21]]);
    bad[20..22].copy_from_slice(&(fo + 1).to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut bad, 14).unwrap();
    assert!(inject_all(&mut e, EXT, &[bad], S).is_empty(), "overlap at fragment 19");
    assert!(inject_all(&mut e, EXT, &frags[20..], S).is_empty(), "the datagram is poisoned");
    assert_eq!(drops(&e), vec![("frag_duplicate", 1), ("frag_overlap", 1 + frags.len() as u64 - 20)]);
}

/// IPv4 has 16-bit IDs: a busy sender reuses one within seconds. A datagram whose
/// fragments have all been seen is complete (Linux's queue is gone once reassembled): the
/// next datagram with the same ID is a new one, not a second first fragment.
#[test]
fn a_completed_datagram_frees_its_id() {
    let mut e = engine();
    for n in 0..3u64 {
        let mut data = payload(3000);
        data[0] = n as u8;
        let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
        let mut frags = fragment4(&d, 1500, 0x99);
        if n == 1 {
            frags.reverse();
        }
        let out = inject_all(&mut e, EXT, &frags, S + n * 1000);
        assert_eq!(out.len(), frags.len(), "datagram {n}: every fragment forwarded");
        assert_eq!(udp_of(&reassemble(&out).unwrap()).4, data);
    }
    assert_eq!(drops(&e), vec![]);
}

/// A fragment reaching past 65535 bytes of datagram (the "ping of death"): no host can
/// reassemble it (Linux: `ip_frag_reasm` oversize, `ip6_frag_queue` parameter problem);
/// dropped, counted, never sent to a real server. So is one carrying no data.
#[test]
fn fragments_beyond_65535_bytes_are_dropped() {
    let mut e = engine();
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &payload(3000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 0x55);
    assert_eq!(inject_all(&mut e, EXT, &frags[..1], S).len(), 1);
    // A last fragment at offset 65528 (8191 * 8) with 100 data bytes.
    let mut big = frags[2].clone();
    big.truncate(14 + 20);
    big.extend_from_slice(&[0u8; 100]);
    big[16..18].copy_from_slice(&120u16.to_be_bytes());
    big[20..22].copy_from_slice(&8191u16.to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut big, 14).unwrap();
    assert!(inject_all(&mut e, EXT, &[big], S).is_empty());
    // IPv6: the same past 65535 bytes of fragmentable part.
    let d6 = with_macs(udp6(C6, 5353, VIP6, 53, &payload(3000)), CLIENT_MAC, LB_EXT);
    let f6 = fragment6(&d6, 1500, 0x66);
    assert_eq!(inject_all(&mut e, EXT, &f6[..1], S).len(), 1);
    let mut big6 = f6[2].clone();
    big6.truncate(14 + 48);
    big6.extend_from_slice(&[0u8; 100]);
    big6[18..20].copy_from_slice(&108u16.to_be_bytes());
    big6[14 + 42..14 + 44].copy_from_slice(&65528u16.to_be_bytes());
    assert!(inject_all(&mut e, EXT, &[big6], S).is_empty());
    // A fragment of no data bytes (Linux drops the datagram: `end == offset`).
    let mut empty = frags[1].clone();
    empty.truncate(14 + 20);
    empty[16..18].copy_from_slice(&20u16.to_be_bytes());
    ferrovs_engine::wire::csum::fill_ipv4(&mut empty, 14).unwrap();
    assert!(inject_all(&mut e, EXT, &[empty], S).is_empty());
    assert_eq!(drops(&e), vec![("malformed", 3)]);
    // The datagram's real fragments still go through.
    assert_eq!(inject_all(&mut e, EXT, &frags[1..], S).len(), 2);
}

/// The connections' (state, packets in, packets out), for comparing two engines.
fn conn_counts(e: &MemEngine) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> =
        e.workers.iter().flat_map(|w| w.core().list_conns()).map(|c| (c.state, c.pkts_in, c.pkts_out)).collect();
    v.sort();
    v
}

/// A copy of a fragment (the network duplicated it) is dropped alone, as Linux's reassembly
/// does (`IPFRAG_DUP`): its datagram still goes through, and the copy of a first fragment
/// leaves the connection as it was. A first fragment that overlaps without being a copy
/// poisons the datagram, and does not touch the connection either.
#[test]
fn duplicate_fragments_are_dropped_alone() {
    let data = payload(4000);
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 21);
    let d6 = with_macs(udp6(C6, 5353, VIP6, 53, &data), CLIENT_MAC, LB_EXT);
    let f6 = fragment6(&d6, 1500, 22);
    let mut reference = engine();
    inject_all(&mut reference, EXT, &frags, S);
    inject_all(&mut reference, EXT, &f6, S);
    let mut e = engine();
    let twice = [&frags[0], &frags[0], &frags[1], &frags[1], &frags[2]].map(|f| f.clone());
    let out = inject_all(&mut e, EXT, &twice, S);
    assert_eq!(out.len(), 3, "each fragment once");
    assert_eq!(udp_of(&reassemble(&out).unwrap()).4, data);
    assert_eq!(f6.len(), 3);
    let twice6 = [&f6[0], &f6[1], &f6[0], &f6[1], &f6[2]].map(|f| f.clone());
    let out = inject_all(&mut e, EXT, &twice6, S);
    assert_eq!(out.len(), 3);
    let whole = reassemble(&out).unwrap();
    verify_checksums(&whole).unwrap();
    let p = parse(&whole).unwrap();
    assert_eq!(&whole[p.payload..p.end], &data[..]);
    assert_eq!(drops(&e), vec![("frag_duplicate", 4)]);
    assert_eq!(conn_counts(&e), conn_counts(&reference), "copies are not counted on the connection");
    // A first fragment overlapping the first one (cut at 1976 bytes instead of 1480).
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 23);
    assert_eq!(inject_all(&mut e, EXT, &frags[..1], S + 1).len(), 1);
    let before = conn_counts(&e);
    let other = fragment4(&d, 2000, 23);
    assert!(inject_all(&mut e, EXT, &other[..1], S + 1).is_empty());
    assert_eq!(conn_counts(&e), before, "the overlapping first fragment left the connection alone");
    assert!(inject_all(&mut e, EXT, &frags[1..], S + 1).is_empty(), "the datagram is poisoned");
    assert_eq!(drops(&e), vec![("frag_duplicate", 4), ("frag_overlap", 3)]);
}

/// One source sending first fragments of datagrams it never completes, faster than they
/// expire, fills the table of datagrams in flight. It used to push out the oldest datagram
/// of anyone: a victim's datagram whose first fragment had come lost its later fragments
/// (held, then `frag_timeout`). Now a source holds a bounded share and a newcomer pushes
/// out its own source's oldest: the flooder hurts only itself.
#[test]
fn a_first_fragment_flood_does_not_push_out_other_sources_datagrams() {
    let mut e = engine();
    let data = payload(3000);
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 0x4444);
    let first = inject_all(&mut e, EXT, &frags[..1], S);
    assert_eq!(first.len(), 1);
    let d6 = with_macs(udp6(C6, 5353, VIP6, 53, &data), CLIENT_MAC, LB_EXT);
    let f6 = fragment6(&d6, 1500, 0x4444);
    assert_eq!(inject_all(&mut e, EXT, &f6[..1], S).len(), 1);
    let flooder = [10, 0, 1, 66];
    let flood = 2 * frag::MAX_FRAG_ENTRIES;
    for id in 0..flood {
        let d = with_macs(udp4(flooder, 7000, VIP, 53, &[1u8; 64]), CLIENT_MAC, LB_EXT);
        let f = fragment4(&d, 48, id as u16);
        assert_eq!(e.inject(EXT, &f[0], S + id as u64).len(), 1, "each first fragment goes out");
    }
    let t = S + flood as u64;
    let out = inject_all(&mut e, EXT, &frags[1..], t);
    assert_eq!(out.len(), 2, "the victim's later fragments follow its first");
    assert_eq!(udp_of(&reassemble(&[first, out].concat()).unwrap()).4, data);
    assert_eq!(inject_all(&mut e, EXT, &f6[1..], t).len(), 2, "so do the IPv6 victim's");
    assert_eq!(drops(&e), vec![]);
    assert_eq!(e.counters().frag_evicted, (flood - frag::MAX_FRAG_PER_SOURCE) as u64);
}

/// Later fragments that come before their first wait in a buffer of 64 per worker. One
/// source sending later fragments of datagrams whose first never comes (64 a second
/// suffice) used to fill it for everyone: another source's datagram whose fragments came
/// out of order lost them (`frag_held_full`). A full buffer now makes room from the source
/// holding the most; a source refused is one already holding as many as any other.
#[test]
fn a_later_fragment_flood_does_not_fill_the_hold_buffer_for_everyone() {
    let mut e = engine();
    let n = 3 * frag::MAX_FRAG_HELD;
    for id in 0..n {
        let d = with_macs(udp4([10, 0, 1, 66], 7000, VIP, 53, &payload(100)), CLIENT_MAC, LB_EXT);
        assert!(e.inject(EXT, &fragment4(&d, 68, id as u16)[1], S).is_empty());
        // The same from addresses all over one IPv6 /64: one source.
        let mut src = [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        src[8..12].copy_from_slice(&(id as u32).to_be_bytes());
        let d = with_macs(udp6(src, 7000, VIP6, 53, &payload(100)), CLIENT_MAC, LB_EXT);
        assert!(e.inject(EXT, &fragment6(&d, 88, id as u32)[1], S).is_empty());
    }
    assert_eq!(e.parked(), frag::MAX_FRAG_HELD);
    assert_eq!(drops(&e), vec![("frag_held_full", 2 * n as u64 - frag::MAX_FRAG_HELD as u64)]);
    // A victim's datagrams in reverse order: their later fragments are held, then follow
    // their first.
    let data = payload(3000);
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
    let mut frags = fragment4(&d, 1500, 0x4545);
    frags.reverse();
    let out = inject_all(&mut e, EXT, &frags, S + 1);
    assert_eq!(out.len(), 3, "the victim's datagram goes through");
    assert_eq!(udp_of(&reassemble(&out).unwrap()).4, data);
    let d6 = with_macs(udp6(C6, 5353, VIP6, 53, &data), CLIENT_MAC, LB_EXT);
    let mut f6 = fragment6(&d6, 1500, 0x4545);
    f6.reverse();
    assert_eq!(inject_all(&mut e, EXT, &f6, S + 1).len(), 3, "so does the IPv6 victim's");
    // The first victim's two held fragments pushed out two of the flooders' oldest; the
    // second victim's found the room the first left.
    assert_eq!(drops(&e), vec![("frag_held_full", 2 * n as u64 - frag::MAX_FRAG_HELD as u64 + 2)]);
    assert_eq!(e.parked(), frag::MAX_FRAG_HELD - 2);
}

/// A held fragment waits 1 s for its first fragment from when it came. A first fragment
/// that is dropped (here: no service on its port) takes the held ones out and holds them
/// again; they used to be held for a fresh second each time, so a sender repeating such
/// first fragments kept its fragments held (and the buffer's room taken) for ever.
#[test]
fn a_dropped_first_fragment_does_not_extend_the_hold() {
    let mut e = engine();
    let big = with_macs(udp4(CLIENT, 5353, VIP, 54, &payload(3000)), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&big, 1500, 78);
    assert!(inject_all(&mut e, EXT, &frags[1..2], S).is_empty());
    assert!(inject_all(&mut e, EXT, &frags[..1], S + 900_000_000).is_empty(), "no service on port 54");
    assert_eq!(e.parked(), 1, "still waiting");
    let _ = e.run(S + 1_500_000_000);
    assert_eq!(e.parked(), 0, "its second is over");
    assert_eq!(drops(&e), vec![("frag_timeout", 1), ("no_service", 1)]);
}

/// A fragment whose IPv4 header checksum fails (corrupted on the wire) is dropped before
/// anything looks at it, as Linux's `ip_rcv` drops it before reassembly: it neither
/// creates a connection, nor takes its place in the datagram (so that the good copy would be a
/// duplicate), nor poisons the datagram with the offset its corruption gave it, nor waits
/// in the hold buffer. The good fragments then go through as if it had never come.
#[test]
fn fragments_with_a_bad_header_checksum_are_dropped_before_the_datagram_sees_them() {
    let data = payload(4000);
    let d = with_macs(udp4(CLIENT, 5353, VIP, 53, &data), CLIENT_MAC, LB_EXT);
    let frags = fragment4(&d, 1500, 31);
    assert_eq!(frags.len(), 3);
    // A corrupted first fragment, then the datagram: the connection is created by the good one.
    let mut e = engine();
    assert!(inject_all(&mut e, EXT, &[bad_ip_csum(frags[0].clone())], S).is_empty());
    assert_eq!(e.counters().flows_created, 0, "no connection from a corrupted first fragment");
    // A corrupted later fragment before its first (not held), one whose offset was flipped
    // (would overlap: poison), and a corrupted copy of every fragment in between.
    let mut moved = frags[2].clone();
    moved[20] ^= 0x01; // the fragment offset's high bits: the checksum no longer holds
    let seq = [
        bad_ip_csum(frags[1].clone()),
        frags[0].clone(),
        moved,
        bad_ip_csum(frags[2].clone()),
        frags[1].clone(),
        bad_ip_csum(frags[1].clone()),
        frags[2].clone(),
    ];
    let out = inject_all(&mut e, EXT, &seq, S);
    assert_eq!(out.len(), 3, "the three good fragments, once each");
    assert_eq!(udp_of(&reassemble(&out).expect("complete datagram")).4, data);
    assert_eq!(drops(&e), vec![("ip_bad_csum", 5)]);
    assert_eq!(e.counters().flows_created, 1);
}

// IPv4 output fragmentation: a packet with DF clear that does not fit the egress MTU once
// rewritten or encapsulated goes out in fragments (IPVS's `ensure_mtu_is_adequate` refuses
// only DF packets; Linux's output path cuts the others). Each test runs the traffic through
// a twin engine whose interfaces keep MTU 1500: the fragments must reassemble to exactly what
// the twin sends whole.

const OUT_SERVICES: &str = r#"
[[service]]
name = "dns"
vip = "10.0.1.100"
protocol = "udp"
ports = [53]

[[service.real_server]]
address = "10.0.2.2"
port = 5353

[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]

[[service.real_server]]
address = "10.0.2.2"
port = 8080

[[service]]
name = "dns-dr"
vip = "10.0.1.101"
protocol = "udp"
ports = [53]
forward = "dr"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "dns-tun"
vip = "10.0.1.102"
protocol = "udp"
ports = [53]
forward = "tunnel"

[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "dns-full"
vip = "10.0.1.103"
protocol = "udp"
ports = [53]
forward = "fnat"
local_addresses = ["10.0.2.200"]

[[service.real_server]]
address = "10.0.2.2"
port = 5454
"#;

const VIP_TUN: [u8; 4] = [10, 0, 1, 102];
const VIP_FULL: [u8; 4] = [10, 0, 1, 103];
const LOCAL: [u8; 4] = [10, 0, 2, 200];
const LB_INT_ADDR: [u8; 4] = [10, 0, 2, 1];
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;

/// The engine for output fragmentation and its twin, whose MTUs stay 1500.
fn out_engines() -> (MemEngine, MemEngine) {
    (MemEngine::new(config(OUT_SERVICES), 1), MemEngine::new(config(OUT_SERVICES), 1))
}

fn set_mtu(e: &mut MemEngine, iface: usize, mtu: u16) {
    for w in e.workers.iter_mut() {
        w.queues_mut()[iface].set_mtu(mtu);
        w.refresh_caps();
    }
}

/// IPv4 frame `f` (no VLAN) with IP ID `id` and DF set or clear, its header checksum fixed.
fn with_df(mut f: Vec<u8>, id: u16, on: bool) -> Vec<u8> {
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20] = if on { 0x40 } else { 0 };
    ferrovs_engine::wire::csum::fill_ipv4(&mut f, 14).unwrap();
    f
}

/// (offset in bytes, IP length, MF) of each IPv4 frame (no VLAN).
fn layout(frames: &[Vec<u8>]) -> Vec<(usize, usize, bool)> {
    frames
        .iter()
        .map(|f| {
            let w = u16::from_be_bytes([f[20], f[21]]);
            ((w & 0x1fff) as usize * 8, u16::from_be_bytes([f[16], f[17]]) as usize, w & IPV4_MF != 0)
        })
        .collect()
}

/// `frame` injected on `iface` into both engines: what the engine sends (every frame on
/// `egress`, each with a valid header checksum and within `mtu`) and the twin's one frame.
fn both(
    e: &mut MemEngine,
    twin: &mut MemEngine,
    iface: usize,
    frame: &[u8],
    egress: usize,
    mtu: usize,
) -> (Vec<Vec<u8>>, Vec<u8>) {
    let w = twin.inject(iface, frame, S);
    assert_eq!(w.len(), 1, "the twin sends it whole");
    let out = e.inject(iface, frame, S);
    for (i, f) in &out {
        assert_eq!(*i, egress);
        assert!(f.len() - 14 <= mtu, "a fragment over the MTU: {}", f.len() - 14);
        assert!(ferrovs_engine::wire::csum::ip_header_ok(f, 14, false));
    }
    (out.into_iter().map(|(_, f)| f).collect(), w[0].1.clone())
}

#[test]
fn nat_udp_over_the_mtu_without_df_goes_out_in_fragments_both_ways() {
    let (mut e, mut twin) = out_engines();
    set_mtu(&mut e, INT, 1000);
    set_mtu(&mut e, EXT, 1000);
    // 1408 bytes of UDP: 976 (the most a multiple of 8 under 1000 - 20) and 432.
    let big = with_df(from_client(udp4(CLIENT, 5353, VIP, 53, &payload(1400))), 0x4242, false);
    let (out, whole) = both(&mut e, &mut twin, EXT, &big, INT, 1000);
    assert_eq!(layout(&out), [(0, 996, true), (976, 452, false)]);
    assert!(out.iter().all(|f| f[0..6] == RS1_MAC && f[18..20] == [0x42, 0x42]), "to the real server, the client's ID");
    assert_eq!(reassemble(&out).expect("complete"), whole, "the rewritten datagram");
    assert_eq!(udp_of(&whole), (CLIENT, 5353, RS1, 5353, payload(1400)));
    // The real server's reply over the client side's MTU: cut too.
    let reply = with_df(from_rs(udp4(RS1, 5353, CLIENT, 5353, &payload(1300)), RS1_MAC), 7, false);
    let (out, whole) = both(&mut e, &mut twin, INT, &reply, EXT, 1000);
    assert_eq!(layout(&out), [(0, 996, true), (976, 352, false)]);
    assert!(out.iter().all(|f| f[0..6] == CLIENT_MAC));
    assert_eq!(reassemble(&out).expect("complete"), whole);
    assert_eq!(udp_of(&whole), (VIP, 53, CLIENT, 5353, payload(1300)));
    assert_eq!(e.counters().frags_made, 4);
    assert_eq!(drops(&e), vec![]);
    // DF set: "fragmentation needed" to the client, as before; nothing to the real server.
    let out = e.inject(EXT, &with_df(big.clone(), 0x4242, true), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    assert_eq!((out[0].0, &f[26..30], &f[30..34], f[34], f[35]), (EXT, &VIP[..], &CLIENT[..], 3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 1000);
    // A header checksum that fails: dropped (fragments would get fresh checksums).
    assert!(e.inject(EXT, &bad_ip_csum(big), S).is_empty());
    assert_eq!(drops(&e), vec![("ip_bad_csum", 1)]);
    assert_eq!(e.counters().frags_made, 4);
}

/// An established TCP connection's DF-clear segment over the MTU: the express lane leaves it
/// to the general path, which cuts it, the lane on or off.
#[test]
fn an_established_tcp_segment_without_df_over_the_mtu_goes_out_in_fragments() {
    use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};
    for express in [true, false] {
        let (mut e, mut twin) = out_engines();
        for x in [&mut e, &mut twin] {
            x.workers[0].set_express(express);
            let syn = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1000, 0, b""));
            assert_eq!(x.inject(EXT, &syn, S).len(), 1);
            let sa = from_rs(tcp4(RS1, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK, 5000, 1001, b""), RS1_MAC);
            assert_eq!(x.inject(INT, &sa, S).len(), 1);
            let ack = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, b""));
            assert_eq!(x.inject(EXT, &ack, S).len(), 1);
            // Packets that fit take the lane (its next hop cached).
            let small = from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1001, 5001, &[1; 100]));
            assert_eq!(x.inject(EXT, &small, S).len(), 1);
        }
        set_mtu(&mut e, INT, 1000);
        let seg = with_df(from_client(tcp4(CLIENT, 40000, VIP, 80, TCP_ACK, 1101, 5001, &payload(1400))), 9, false);
        let (out, whole) = both(&mut e, &mut twin, EXT, &seg, INT, 1000);
        assert_eq!(layout(&out), [(0, 996, true), (976, 464, false)], "express {express}");
        assert_eq!(reassemble(&out).expect("complete"), whole, "express {express}");
        verify_checksums(&whole).unwrap();
        assert_eq!(e.counters().frags_made, 2);
        assert_eq!(drops(&e), vec![]);
    }
}

#[test]
fn dr_udp_over_the_mtu_without_df_goes_out_in_fragments() {
    let (mut e, mut twin) = out_engines();
    set_mtu(&mut e, INT, 600);
    let big = with_df(from_client(udp4(CLIENT, 5353, VIP_DR, 53, &payload(1400))), 3, false);
    let (out, whole) = both(&mut e, &mut twin, EXT, &big, INT, 600);
    assert_eq!(layout(&out), [(0, 596, true), (576, 596, true), (1152, 276, false)]);
    assert!(out.iter().all(|f| f[0..6] == RS2_MAC));
    assert_eq!(reassemble(&out).expect("complete"), whole);
    assert_eq!(whole[12..], big[12..], "DR changes MAC addresses only");
    assert_eq!(drops(&e), vec![]);
}

/// Full NAT: both addresses and ports rewritten, then cut, both ways; the fragments carry
/// the rewritten datagram (the local address and port towards the real server, the VIP
/// towards the client) and reassemble to what the twin sends whole.
#[test]
fn full_nat_udp_over_the_mtu_without_df_goes_out_in_fragments_both_ways() {
    let (mut e, mut twin) = out_engines();
    set_mtu(&mut e, INT, 700);
    set_mtu(&mut e, EXT, 900);
    let big = with_df(from_client(udp4(CLIENT, 5353, VIP_FULL, 53, &payload(1400))), 0x77, false);
    let (out, whole) = both(&mut e, &mut twin, EXT, &big, INT, 700);
    assert_eq!(layout(&out), [(0, 700, true), (680, 700, true), (1360, 68, false)]);
    assert!(out.iter().all(|f| f[0..6] == RS1_MAC && f[18..20] == [0, 0x77]));
    assert_eq!(reassemble(&out).expect("complete"), whole, "the rewritten datagram");
    let (src, lport, dst, dport, data) = udp_of(&whole);
    assert_eq!((src, dst, dport, data), (LOCAL, RS1, 5454, payload(1400)), "local address to the real server");
    // The reply to the local address and port, over the client side's MTU.
    let reply = with_df(from_rs(udp4(RS1, 5454, LOCAL, lport, &payload(1000)), RS1_MAC), 8, false);
    let (out, whole) = both(&mut e, &mut twin, INT, &reply, EXT, 900);
    assert_eq!(layout(&out), [(0, 900, true), (880, 148, false)]);
    assert!(out.iter().all(|f| f[0..6] == CLIENT_MAC));
    assert_eq!(reassemble(&out).expect("complete"), whole);
    assert_eq!(udp_of(&whole), (VIP_FULL, 53, CLIENT, 5353, payload(1000)));
    assert_eq!(e.counters().frags_made, 5);
    assert_eq!(drops(&e), vec![]);
}

/// Tunnel mode: the outer packet is cut, the client's packet inside left whole; the outer DF
/// is the client's (clear here) and the outer ID comes from the worker's counter.
#[test]
fn tunnel_udp_over_the_mtu_without_df_goes_out_as_outer_fragments() {
    let (mut e, mut twin) = out_engines();
    set_mtu(&mut e, INT, 1000);
    let big = with_df(from_client(udp4(CLIENT, 5353, VIP_TUN, 53, &payload(1400))), 0x4242, false);
    let (out, whole) = both(&mut e, &mut twin, EXT, &big, INT, 1000);
    assert_eq!(layout(&out), [(0, 996, true), (976, 472, false)], "1428 bytes inside");
    for f in &out {
        assert_eq!((f[23], &f[26..30], &f[30..34]), (4, &LB_INT_ADDR[..], &RS2[..]), "IPIP fragments");
        assert_eq!(u16::from_be_bytes([f[20], f[21]]) & IPV4_DF, 0);
    }
    assert_eq!(out[0][18..20], out[1][18..20], "one outer ID");
    let outer = reassemble(&out).expect("complete");
    assert_eq!(outer, whole);
    assert_eq!(outer[34..], big[14..], "the client's packet untouched inside");
    // DF set: "fragmentation needed" with the outer header off the MTU.
    let out = e.inject(EXT, &with_df(big, 0x4242, true), S);
    assert_eq!(out.len(), 1);
    let f = &out[0].1;
    assert_eq!((out[0].0, &f[26..30], &f[30..34], f[34], f[35]), (EXT, &VIP_TUN[..], &CLIENT[..], 3, 4));
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 980);
    assert_eq!(e.counters().frags_made, 2);
    assert_eq!(drops(&e), vec![]);
}

/// The outer IPv4 header's DF is the client's packet's (IPVS `ip_vs_tunnel_xmit`); before, it
/// was always set, so a router with a smaller MTU towards the real server dropped the packets
/// of a sender that allowed fragmentation. An outer header with DF clear takes a fresh ID for
/// each packet (the real server must not mix the fragments of two), one with DF set gets 0.
#[test]
fn the_outer_df_is_the_clients() {
    let mut e = MemEngine::new(config(OUT_SERVICES), 1);
    let mut outer = |on: bool| {
        let f = with_df(from_client(udp4(CLIENT, 5353, VIP_TUN, 53, &payload(100))), 0x4242, on);
        let out = e.inject(EXT, &f, S);
        assert_eq!(out.len(), 1);
        let o = &out[0].1;
        assert_eq!((o[23], &o[34..]), (4, &f[14..]));
        (u16::from_be_bytes([o[20], o[21]]), u16::from_be_bytes([o[18], o[19]]))
    };
    assert_eq!(outer(true), (IPV4_DF, 0));
    let (a, b) = (outer(false), outer(false));
    assert_eq!((a.0, b.0), (0, 0), "DF clear, as the client's");
    assert_ne!(a.1, b.1, "a fresh ID each");
    assert_eq!(outer(true), (IPV4_DF, 0));
}

/// A datagram that arrives in fragments of 1500 bytes, forwarded over an MTU of 1000: the
/// first fragment (the connection path) and the later ones (by datagram) are each cut again,
/// the pieces of a middle fragment keeping MF; the whole reassembles to the rewritten
/// datagram. An IPv6 one is not cut (packet too big for the first, drops for the others:
/// `icmp::packet_too_big_v6_and_fragments`).
#[test]
fn forwarded_fragments_over_the_mtu_are_cut_again() {
    let (mut e, mut twin) = out_engines();
    set_mtu(&mut e, INT, 1000);
    let d = from_client(udp4(CLIENT, 5353, VIP, 53, &payload(3000)));
    let frags = fragment4(&d, 1500, 0x99);
    assert_eq!(layout(&frags), [(0, 1500, true), (1480, 1500, true), (2960, 68, false)]);
    let out = inject_all(&mut e, EXT, &frags, S);
    let want = inject_all(&mut twin, EXT, &frags, S);
    assert_eq!(
        layout(&out),
        [(0, 996, true), (976, 524, true), (1480, 996, true), (2456, 524, true), (2960, 68, false)]
    );
    assert!(out.iter().all(|f| f.len() - 14 <= 1000 && f[0..6] == RS1_MAC));
    let whole = reassemble(&out).expect("complete");
    assert_eq!(whole, reassemble(&want).unwrap());
    assert_eq!(udp_of(&whole), (CLIENT, 5353, RS1, 5353, payload(3000)));
    assert_eq!(e.counters().frags_made, 4);
    assert_eq!(drops(&e), vec![]);
}

/// A datagram whose first fragment was answered with "fragmentation needed" / "packet too
/// big" instead of going out: its later fragments are dropped (`too_big`) even where they fit,
/// as Linux answers the reassembled datagram and forwards none of it. Before, the datagram
/// stayed registered and the later fragments went to the real server, which could never
/// reassemble them.
#[test]
fn later_fragments_of_an_answered_datagram_are_dropped() {
    // IPv6: 1400-byte fragments over an MTU of 1280, the last one small.
    let (mut e, _) = out_engines();
    set_mtu(&mut e, INT, 1280);
    let d = from_client(udp6(C6, 5353, VIP6, 53, &payload(2800)));
    let out6 = r#"
[[service]]
name = "dns6"
vip = "fd00:1::100"
protocol = "udp"
ports = [53]

[[service.real_server]]
address = "fd00:2::2"
"#;
    let mut e6 = MemEngine::new(config(out6), 1);
    set_mtu(&mut e6, INT, 1280);
    let frags = fragment6(&d, 1400, 0x51);
    assert_eq!(frags.iter().map(|f| f.len() - 14).collect::<Vec<_>>(), [1400, 1400, 152]);
    let out = e6.inject(EXT, &frags[0], S);
    assert_eq!((out.len(), out[0].0, out[0].1[54]), (1, EXT, 2), "packet too big to the client");
    assert!(e6.inject(EXT, &frags[1], S).is_empty());
    assert!(e6.inject(EXT, &frags[2], S).is_empty(), "fits, but its datagram was answered");
    assert_eq!(drops(&e6), vec![("too_big", 2)]);
    // IPv4: a first fragment with DF set answered; the later ones, DF clear, one of them small.
    let d = from_client(udp4(CLIENT, 5353, VIP, 53, &payload(3000)));
    let mut frags = fragment4(&d, 1500, 0x52);
    frags[0] = with_df(frags[0].clone(), 0x52, true);
    frags[0][20] |= 0x20; // MF kept
    ferrovs_engine::wire::csum::fill_ipv4(&mut frags[0], 14).unwrap();
    let out = e.inject(EXT, &frags[0], S);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1[34], out[0].1[35]), (EXT, 3, 4), "fragmentation needed to the client");
    assert!(inject_all(&mut e, EXT, &frags[1..], S).is_empty());
    assert_eq!(drops(&e), vec![("too_big", 2)]);
    assert_eq!(e.counters().frags_made, 0);
}
