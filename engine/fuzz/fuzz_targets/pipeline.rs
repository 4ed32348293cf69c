//! Parse + forward: arbitrary frames (and a few well-formed ones first, so
//! connections and FTP sessions exist) through the sans-IO cores of two
//! workers (no ports: `common::Cores` drives them) with NAT, DR, tunnel and FTP
//! services (a tunnel connection opened first, so ICMP errors quoting its IPIP packets,
//! relayed to its client, have one to name). Any panic is a bug, and after
//! every frame packets are conserved (see `common::Ledger`): each one is
//! transmitted, counted under exactly one drop reason, or parked.
//!
//! The cores are built once per process and reset between inputs
//! (`Worker::reset`), so an input costs only its own packets.
//!
//! Every frame is also parsed by both parsers: whatever the hand-written
//! fast parser accepts, etherparse must parse to the same result.
#![no_main]

mod common;

use common::{with_cores, Cores, Ledger};
use ferrovs_engine::wire::parse;
use ferrovs_engine::tools::testpkt::*;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

/// Per-worker flow table size.
const FLOWS: usize = 1024;

/// Neighbours and services after `common::topology`.
const CONFIG: &str = r#"

[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21, 80]
scheduler = "rr"
ftp = true
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "dr"
vip = "10.0.1.101"
ports = [21]
forward = "dr"
ftp = true
[[service.real_server]]
address = "10.0.2.3"

[[service]]
name = "tun"
vip = "10.0.1.102"
ports = [80]
forward = "tunnel"
[[service.real_server]]
address = "10.0.2.4"

[[service]]
name = "v6"
vip = "fd00:1::100"
protocol = "udp"
[[service.real_server]]
address = "fd00:2::2"
"#;

fuzz_target!(|data: &[u8]| {
    with_cores(&ENGINE, FLOWS, CONFIG, 2, |e| run(e, data));
});

thread_local! {
    static ENGINE: RefCell<Option<Cores>> = const { RefCell::new(None) };
    /// The client's ARP request (so replies to it need no resolution) and a
    /// SYN opening an FTP control connection, and one opening a tunnel connection, built once.
    static PREFIX: [Vec<u8>; 3] = {
        let (lb, c) = ([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]);
        [
            arp_request(c, [10, 0, 1, 2], [10, 0, 1, 1]),
            with_macs(tcp4([10, 0, 1, 2], 4000, [10, 0, 1, 100], 21, 0x02, 1, 0, b""), c, lb),
            with_macs(tcp4([10, 0, 1, 2], 4001, [10, 0, 1, 102], 80, 0x02, 1, 0, b""), c, lb),
        ]
    };
}

fn run(e: &mut Cores, data: &[u8]) {
    let mut l = Ledger::default();
    let lb = [2, 0, 0, 0, 1, 1];
    PREFIX.with(|p| {
        for f in p {
            l.inject(e, 0, f, 1);
        }
    });
    // The input: chunks separated by 0xfe, first byte of a chunk picks
    // the interface (bit 0); bit 1 forces the destination MAC to ours.
    for (n, chunk) in data.split(|b| *b == 0xfe).enumerate() {
        if chunk.is_empty() {
            continue;
        }
        let iface = (chunk[0] & 1) as usize;
        let mut f = chunk[1..].to_vec();
        if chunk[0] & 2 != 0 && f.len() >= 6 {
            f[0..6].copy_from_slice(if iface == 0 { &lb } else { &[2, 0, 0, 0, 2, 1] });
        }
        if let Some(p) = parse::parse_fast(&f) {
            assert_eq!(Ok(p), parse::parse_etherparse(&f), "the fast parser and etherparse disagree");
        }
        l.inject(e, iface, &f, 2 + n as u64 * 1_000_000_000);
    }
}
