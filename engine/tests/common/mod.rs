//! The lab every engine test uses: a client segment (ext, 10.0.1.0/24,
//! fd00:1::/64) and a real-server segment (int, 10.0.2.0/24, fd00:2::/64),
//! MACs and static neighbours, so fixtures can spell expected frames exactly.
#![allow(dead_code)]

pub mod netns;
pub mod seg;

pub const LB_EXT: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub const LB_INT: [u8; 6] = [2, 0, 0, 0, 2, 1];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
pub const RS1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];
pub const RS2_MAC: [u8; 6] = [2, 0, 0, 0, 2, 3];
pub const CLIENT: [u8; 4] = [10, 0, 1, 2];
pub const VIP: [u8; 4] = [10, 0, 1, 100];
pub const VIP_DR: [u8; 4] = [10, 0, 1, 101];
pub const RS1: [u8; 4] = [10, 0, 2, 2];
pub const RS2: [u8; 4] = [10, 0, 2, 3];
pub const C6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const VIP6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
pub const RS6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Interface indices.
pub const EXT: usize = 0;
pub const INT: usize = 1;
/// One second in the engine's clock.
pub const S: u64 = 1_000_000_000;

/// Engine, interfaces and static neighbours; append `[[service]]` blocks.
pub const TOPOLOGY: &str = r#"
[engine]
workers = 1
backend = "memory"
flow_table_size = 4096

[[interface]]
name = "ext"
device = "mem0"
mac = "02:00:00:00:01:01"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[interface]]
name = "int"
device = "mem1"
mac = "02:00:00:00:02:01"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]

[[neighbor]]
address = "10.0.2.2"
mac = "02:00:00:00:02:02"

[[neighbor]]
address = "10.0.2.3"
mac = "02:00:00:00:02:03"

[[neighbor]]
address = "10.0.2.4"
mac = "02:00:00:00:02:04"

[[neighbor]]
address = "10.0.1.2"
mac = "02:00:00:00:01:02"

[[neighbor]]
address = "fd00:2::2"
mac = "02:00:00:00:02:02"

[[neighbor]]
address = "fd00:1::2"
mac = "02:00:00:00:01:02"
"#;

/// The topology plus `services`, as config text.
pub fn config_text(services: &str) -> String {
    format!("{TOPOLOGY}\n{services}")
}

/// The topology plus `services`, parsed.
/// The MAC each of `config`'s interfaces uses and its port's capabilities, `queues` queues
/// each (one per worker), as a port reports them to a worker.
pub fn ports_of(config: &ferrovs_cfg::Config, queues: u16) -> (Vec<[u8; 6]>, Vec<ferrovs_engine::port::PortCaps>) {
    let macs: Vec<[u8; 6]> = config
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, itf)| itf.mac.unwrap_or(ferrovs_engine::port::memory::default_mac(i)))
        .collect();
    let caps = config
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, itf)| ferrovs_engine::port::PortCaps { name: itf.name.clone(), mac: macs[i], queues, mtu: 1500 })
        .collect();
    (macs, caps)
}

pub fn config(services: &str) -> ferrovs_cfg::Config {
    ferrovs_cfg::Config::from_str(&config_text(services), "engine-test.toml").expect("test config parses")
}

/// Assert the engine's whole drop-counter vector (summed over workers):
/// exactly the reasons in `want` with these counts, every other reason zero.
#[track_caller]
pub fn assert_drops(
    e: &ferrovs_engine::tools::replay::MemEngine,
    want: &[(ferrovs_engine::pipeline::counters::DropReason, u64)],
) {
    if let Some(m) = drops_mismatch(e, want) {
        panic!("{m}");
    }
}

/// What [`assert_drops`] checks, as a message when it does not hold.
pub fn drops_mismatch(
    e: &ferrovs_engine::tools::replay::MemEngine,
    want: &[(ferrovs_engine::pipeline::counters::DropReason, u64)],
) -> Option<String> {
    use ferrovs_engine::pipeline::counters::DropReason;
    let got: Vec<(DropReason, u64)> = DropReason::ALL
        .iter()
        .map(|r| (*r, e.fabric.counters.iter().map(|w| w.drops_of(*r)).sum::<u64>()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut want: Vec<(DropReason, u64)> = want.iter().copied().filter(|(_, n)| *n > 0).collect();
    want.sort_by_key(|(r, _)| *r as u8);
    (got != want).then(|| format!("drop counters (reason, count): got {got:?}, want {want:?}"))
}

/// The topology plus `services`, with full NAT's local ports kept to 2000-2063 (64 per local
/// address, so exhaustion is reachable), as config text.
pub fn config_text_fnat(services: &str) -> String {
    config_text(services).replacen(
        "flow_table_size = 4096",
        "flow_table_size = 4096\nlocal_port_range = \"2000-2063\"",
        1,
    )
}

/// Frame `f` as the client sends it: from its MAC to the balancer's `ext`.
pub fn from_client(f: Vec<u8>) -> Vec<u8> {
    ferrovs_engine::tools::testpkt::with_macs(f, CLIENT_MAC, LB_EXT)
}

/// Frame `f` as the real server with `mac` sends it, to the balancer's `int`.
pub fn from_rs(f: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    ferrovs_engine::tools::testpkt::with_macs(f, mac, LB_INT)
}

/// Exactly one frame out, on `iface`, with valid checksums and the bytes `want`.
#[track_caller]
pub fn exactly(out: Vec<(usize, Vec<u8>)>, iface: usize, want: Vec<u8>) {
    assert_eq!(out.len(), 1, "one frame out, got {out:?}");
    ferrovs_engine::tools::testpkt::verify_checksums(&out[0].1).expect("checksums");
    assert_eq!(out[0].0, iface, "interface");
    assert_eq!(out[0].1, want, "frame bytes");
}

/// The transport payload of an output frame (its checksums verified first).
#[track_caller]
pub fn payload(frame: &[u8]) -> Vec<u8> {
    ferrovs_engine::tools::testpkt::verify_checksums(frame).unwrap();
    let p = ferrovs_engine::wire::parse::parse(frame).unwrap();
    frame[p.payload..p.end].to_vec()
}

/// (src, sport, dst, dport) of an output frame (its checksums verified first), addresses as
/// strings.
#[track_caller]
pub fn ends(frame: &[u8]) -> (String, u16, String, u16) {
    ferrovs_engine::tools::testpkt::verify_checksums(frame).unwrap();
    let p = ferrovs_engine::wire::parse::parse(frame).unwrap();
    let ip = |a| ferrovs_engine::wire::parse::addr_to_ip(a).to_string();
    (ip(p.src), p.sport, ip(p.dst), p.dport)
}

/// The states of worker 0's connections.
pub fn conn_states(e: &ferrovs_engine::tools::replay::MemEngine) -> Vec<ferrovs_engine::flow::tcpstate::TcpState> {
    let f = &e.workers[0].flows;
    (0..f.slots() as u32).filter_map(|i| f.try_get(i)).map(|c| c.state).collect()
}

/// A blind attacker's resets and FINs against the one established connection whose client
/// segments `pkt(flags, seq, data)` builds (its handshake at `isn`): each outside the
/// sequence window, forwarded (the server judges it, RFC 5961), the state left ESTABLISHED
/// and counted `tcp_out_of_window`, the connection still there after 10 s idle; then the
/// client's data moves the mark 100 units of 64 KiB ahead, a segment at a time (each within
/// the window of the last), and its reset there closes the connection.
pub fn blind_resets_leave_the_connection(
    e: &mut ferrovs_engine::tools::replay::MemEngine,
    isn: u32,
    pkt: impl Fn(u8, u32, &[u8]) -> Vec<u8>,
) {
    use ferrovs_engine::flow::tcpstate::TcpState;
    use ferrovs_engine::wire::parse::{TCP_ACK, TCP_FIN, TCP_RST};
    assert_eq!(conn_states(e), [TcpState::Established]);
    for (flags, seq) in
        [(TCP_RST, isn ^ 0x8000_0000), (TCP_FIN | TCP_ACK, isn + (200 << 16)), (TCP_RST, isn - (3 << 16))]
    {
        assert_eq!(e.inject(EXT, &pkt(flags, seq, b""), S).len(), 1, "forwarded: the server judges it");
        assert_eq!(conn_states(e), [TcpState::Established], "{flags:#x} at {seq:#x}");
    }
    assert_eq!(e.counters().tcp_out_of_window, 3);
    e.workers[0].expire_all(S + 11 * S);
    assert_eq!(conn_states(e), [TcpState::Established], "still there after 10 s idle");
    let mut seq = isn + 1;
    for _ in 0..100 {
        seq += 1 << 16;
        assert_eq!(e.inject(EXT, &pkt(TCP_ACK, seq, b"x"), S).len(), 1);
    }
    assert_eq!(e.inject(EXT, &pkt(TCP_RST, seq + 1, b""), S).len(), 1);
    assert_eq!(conn_states(e), [TcpState::Close]);
    assert_eq!(e.counters().tcp_out_of_window, 3);
}
