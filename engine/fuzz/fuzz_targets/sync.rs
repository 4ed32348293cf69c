//! The cluster sync parser (`ferrovs_engine::cluster::sync::parse`) on arbitrary datagrams, and what a
//! node does with a message that parses: no panic; a message that parses re-encodes to
//! entries that parse back equal (the encoder and the parser agree on every field); the
//! entries are installed by a two-worker cluster engine (NAT, DR and FTP services, a
//! persistence template service, a full-NAT FTP service whose local addresses belong to this
//! node and a peer, so version-3 full-NAT entries reserve ports on the worker owning them and
//! kind-5 entries resume a gateway session on a backup control connection),
//! each counted as installed or skipped, and a client packet and a real server's reply to
//! the peer's local address afterwards are still accounted for (forwarded or one counted
//! drop).
//!
//! Versions 5 and 6 add a placement block after the header and full-NAT active-mode
//! expectations (seeds `v5-*`, `v6-unsigned-*`; the engine installs them whatever the block
//! says: comparing it is the sync thread's).
//!
//! Versions 2, 4 and 6 (authenticated): the input as received by a node with a key (no panic;
//! the MAC of random bytes does not verify), and an input that starts as a version-2, -4 or -6
//! header signed by the harness (seeds `v2-unsigned-*`, `v4-unsigned-*`, `v6-unsigned-*`), so the header,
//! entries and the replay guard behind the MAC are fuzzed too: it parses or is refused,
//! re-encodes equal, and the same datagram never passes the replay guard twice.
#![no_main]

mod common;

use common::with_engine;
use ferrovs_engine::cluster::sync::{
    parse, parse_with, Batcher, ReplayGuard, SyncKey, VERSION_AUTH, VERSION_AUTH_V2, VERSION_AUTH_V4,
};
use ferrovs_engine::tools::replay::MemEngine;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

const REST: &str = r#"
[[neighbor]]
address = "10.0.2.2"
mac = "02:00:00:00:02:02"

[[neighbor]]
address = "10.0.1.2"
mac = "02:00:00:00:01:02"

[[service]]
name = "nat"
vip = "10.0.1.100"
ports = [80]
forward = "nat"
persistence = 300
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "ftp"
vip = "10.0.1.100"
ports = [21]
forward = "dr"
ftp = true
[[service.real_server]]
address = "10.0.2.2"

[[service]]
name = "fnat"
vip = "10.0.1.100"
ports = [9090]
forward = "fnat"
ftp = { control_ports = [9090] }
local_addresses = ["10.0.2.200", "10.0.2.201"]
[[service.real_server]]
address = "10.0.2.2"

[cluster]
node_id = 1
sync_address = "10.9.0.1"
peers = ["10.9.0.2"]
[[cluster.node]]
id = 1
local_addresses = ["10.0.2.200"]
[[cluster.node]]
id = 2
local_addresses = ["10.0.2.201"]
"#;

thread_local! {
    static ENGINE: RefCell<Option<MemEngine>> = const { RefCell::new(None) };
    static GUARD: RefCell<ReplayGuard> = RefCell::new(ReplayGuard::default());
}

const KEY: &[u8] = b"fuzz sync key, 32 bytes of it..!";

fn authenticated(data: &[u8]) {
    let key = SyncKey::new(KEY);
    let _ = parse_with(data, Some(&key));
    if !matches!(data.get(4), Some(&(VERSION_AUTH | VERSION_AUTH_V2 | VERSION_AUTH_V4))) {
        return;
    }
    let mut signed = data.to_vec();
    signed.extend_from_slice(&key.tag(data));
    let Ok(m) = parse_with(&signed, Some(&key)) else { return };
    assert!(parse(&signed).is_err(), "a version-2 datagram needs a key");
    GUARD.with(|g| {
        let mut g = g.borrow_mut();
        if g.check(&m, m.time).is_ok() {
            assert!(g.check(&m, m.time).is_err(), "the same datagram passed the replay guard twice");
        }
    });
    let mut b = Batcher::with_key(m.node, 1_000_000, key.clone(), m.epoch);
    let mut back = Vec::new();
    for msg in b.encode_at(&m.entries, 1, m.time) {
        back.extend(parse_with(&msg, Some(&key)).expect("re-encoded message parses").entries);
    }
    assert_eq!(back, m.entries);
}

fuzz_target!(|data: &[u8]| {
    authenticated(data);
    let Ok(m) = parse(data) else { return };
    // Round trip.
    let mut b = Batcher::new(m.node, 1_000_000);
    let mut back = Vec::new();
    for msg in b.encode(&m.entries, 1) {
        back.extend(parse(&msg).expect("re-encoded message parses").entries);
    }
    assert_eq!(back, m.entries);
    // Installation.
    with_engine(&ENGINE, 64, REST, 2, |e| {
        let n = e.deliver_sync(data, 1_000_000_000).expect("parsed once, parses again");
        let c = e.counters();
        assert_eq!(c.sync_installed + c.sync_skipped + c.sync_carried, n as u64);
        let frame = ferrovs_engine::tools::testpkt::with_macs(
            ferrovs_engine::tools::testpkt::tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, 0x10, 1, 1, b""),
            [2, 0, 0, 0, 1, 2],
            [2, 0, 0, 0, 1, 1],
        );
        let out = e.inject(0, &frame, 2_000_000_000);
        let drops: u64 = e.counters().drops.iter().map(|d| d.1).sum();
        assert!(out.len() + drops as usize + e.parked() >= 1, "the packet went somewhere");
        // A real server's reply to the peer's local address (a synced full-NAT connection's
        // port, or none).
        let reply = ferrovs_engine::tools::testpkt::with_macs(
            ferrovs_engine::tools::testpkt::tcp4([10, 0, 2, 2], 9090, [10, 0, 2, 201], 2000, 0x10, 1, 1, b""),
            [2, 0, 0, 0, 2, 2],
            [2, 0, 0, 0, 2, 1],
        );
        let out2 = e.inject(1, &reply, 2_000_000_000);
        let drops2: u64 = e.counters().drops.iter().map(|d| d.1).sum();
        assert!(out2.len() + (drops2 - drops) as usize + e.parked() >= 1, "the reply went somewhere");
    });
});
