//! The exception path to the kernel (`interface.kernel_port`, DPDK's answer to the kernel
//! sharing an AF_PACKET port, as DPVS's KNI): what the engine does not handle goes to the
//! kernel unchanged, what the kernel sends leaves through the data port unchanged, services
//! are not affected, and the rate towards the kernel is bounded.

mod common;
use common::*;
use ferrovs_engine::pipeline::counters::DropReason;
use ferrovs_engine::tools::replay::MemEngine;
use ferrovs_engine::tools::testpkt::*;
use ferrovs_engine::wire::parse::{TCP_ACK, TCP_SYN};

const SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.0.1.100"
protocol = "tcp"
ports = [80]
scheduler = "rr"

[[service.real_server]]
address = "10.0.2.2"
port = 8080
"#;

/// The kernel port's queue: after both interfaces.
const KNI: usize = 2;

fn engine(kernel_rate: Option<u32>) -> MemEngine {
    let mut text = config_text(SERVICES).replace("device = \"mem0\"", "device = \"mem0\"\nkernel_port = \"kni0\"");
    if let Some(r) = kernel_rate {
        text = text.replace("flow_table_size = 4096", &format!("flow_table_size = 4096\nkernel_rate = {r}"));
    }
    MemEngine::new(ferrovs_cfg::Config::from_str(&text, "kernel-port.toml").unwrap(), 1)
}

fn plain() -> MemEngine {
    MemEngine::new(config(SERVICES), 1)
}

fn counters(e: &MemEngine) -> (u64, u64, u64) {
    let s = e.fabric.counters[0].snapshot();
    (s.to_kernel, s.from_kernel, s.kernel_limited)
}

/// Frames that are the kernel's: (what, frame).
fn kernels_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut ospf = ping4(CLIENT, [224, 0, 0, 5], 1, 1);
    ospf[23] = 89; // protocol OSPF (the checksum does not matter to the engine here)
    ospf[0..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 5]);
    vec![
        ("BGP to the engine's own address", tcp4(CLIENT, 40000, [10, 0, 1, 1], 179, TCP_SYN, 1, 0, b"")),
        ("BFD to the kernel's own address", udp4(CLIENT, 49152, [10, 0, 1, 50], 3784, &[0x20; 24])),
        (
            "TCP to an address no service or connection knows",
            tcp4(CLIENT, 40001, [10, 0, 1, 50], 22, TCP_SYN, 1, 0, b""),
        ),
        ("ARP request for the kernel's address", arp_request(CLIENT_MAC, CLIENT, [10, 0, 1, 50])),
        ("ARP reply", arp_reply(CLIENT_MAC, CLIENT, LB_EXT, [10, 0, 1, 50])),
        (
            "neighbour solicitation for another address",
            neighbor_solicit(CLIENT_MAC, C6, [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50]),
        ),
        ("echo request to the kernel's address", ping4(CLIENT, [10, 0, 1, 50], 7, 1)),
        ("OSPF hello (multicast, protocol 89)", ospf),
    ]
}

#[test]
fn frames_the_engine_does_not_handle_go_to_the_kernel_unchanged() {
    for (what, f) in kernels_frames() {
        let mut e = engine(None);
        let out = e.inject(EXT, &f, S);
        assert_eq!(out, vec![(KNI, f.clone())], "{what}: to the kernel port, unchanged");
        assert_eq!(counters(&e), (1, 0, 0), "{what}");
        assert_drops(&e, &[]);

        // Without an exception path the same frame is a counted drop.
        let mut e = plain();
        let out = e.inject(EXT, &f, S);
        assert!(out.is_empty(), "{what}: nothing sent without kernel_port: {out:?}");
        let dropped: u64 = DropReason::ALL.iter().map(|r| e.fabric.counters[0].drops_of(*r)).sum();
        assert_eq!(dropped, 1, "{what}: counted");
    }
}

#[test]
fn the_kernels_frames_leave_through_the_data_port_unchanged() {
    let mut e = engine(None);
    // A BGP SYN-ACK from the kernel, an ARP reply, an IPv6 advertisement.
    let frames = [
        with_macs(tcp4([10, 0, 1, 1], 179, CLIENT, 40000, TCP_SYN | TCP_ACK, 9, 2, b""), LB_EXT, CLIENT_MAC),
        arp_reply(LB_EXT, [10, 0, 1, 50], CLIENT_MAC, CLIENT),
        neighbor_advert(LB_EXT, [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50], C6, LB_EXT),
    ];
    for f in &frames {
        e.workers[0].queues_mut()[KNI].inject(f);
    }
    let out = e.run(S);
    assert_eq!(out, frames.iter().map(|f| (EXT, f.clone())).collect::<Vec<_>>());
    assert_eq!(counters(&e), (0, 3, 0));
    assert_drops(&e, &[]);
}

#[test]
fn services_and_the_engines_own_answers_are_unaffected() {
    let mut e = engine(None);
    // A connection to the VIP is balanced as always.
    let out = e.inject(EXT, &tcp4(CLIENT, 40000, VIP, 80, TCP_SYN, 1, 0, b""), S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, INT, "to the real server");
    // ARP for the VIP and the engine's address are answered by the engine, on the port.
    for target in [VIP, [10, 0, 1, 1]] {
        let out = e.inject(EXT, &arp_request(CLIENT_MAC, CLIENT, target), S);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, EXT);
        assert_eq!(u16::from_be_bytes([out[0].1[20], out[0].1[21]]), 2, "an ARP reply");
    }
    // Echo to the VIP: the engine's reply.
    let out = e.inject(EXT, &ping4(CLIENT, VIP, 1, 1), S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, EXT);
    // An unknown segment to the VIP (no connection) stays a drop: the kernel has no business there.
    let out = e.inject(EXT, &tcp4(CLIENT, 40009, VIP, 80, TCP_ACK, 1, 1, b""), S);
    assert!(out.iter().all(|(i, _)| *i != KNI), "{out:?}");
    // Frames for another host's MAC are not the kernel's either.
    let other = with_macs(tcp4(CLIENT, 40002, [10, 0, 1, 50], 22, TCP_SYN, 1, 0, b""), CLIENT_MAC, [2, 9, 9, 9, 9, 9]);
    assert!(e.inject(EXT, &other, S).is_empty());
    assert_eq!(counters(&e).0, 0, "nothing went to the kernel");
}

#[test]
fn the_rate_to_the_kernel_is_bounded() {
    // kernel_rate = 1: a burst of 64 (the smallest), then one per second.
    let mut e = engine(Some(1));
    let f = udp4(CLIENT, 49152, [10, 0, 1, 50], 3784, &[0x20; 24]);
    let mut sent = 0;
    for _ in 0..100 {
        sent += e.inject(EXT, &f, S).len();
    }
    assert_eq!(sent, 64);
    assert_eq!(counters(&e), (64, 0, 36));
    assert_drops(&e, &[(DropReason::NoFlow, 36)]);
    // Two seconds later: two more tokens.
    let got: usize = (0..5).map(|_| e.inject(EXT, &f, 3 * S).len()).sum();
    assert_eq!(got, 2);
}
