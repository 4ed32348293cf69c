//! Data-plane micro-benchmarks: parse, flow lookup (1k / 1M flows, 10M
//! opt-in), NAT rewrite, FTP ALG line scanning, and the whole pipeline per
//! packet (the code of `ferrovs bench`, in bursts of 32).
//!
//! `cargo bench -p ferrovs-benches --bench engine`
//! 10M flows needs about 3.5 GiB and a minute to build the table: set
//! `FERROVS_BENCH_10M=1` to include it.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrovs_cfg::Forward;
use ferrovs_engine::flow::{new_conn, FlowKey, FlowTable};
use ferrovs_engine::tools::bench::{Prepared, Scenario};
use ferrovs_engine::tools::frame::Rng;
use ferrovs_engine::tools::testpkt;
use ferrovs_engine::wire::parse::{self, v4_to_addr, TCP_ACK};
use ferrovs_ftp_alg as alg;

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let tcp = testpkt::tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_ACK, 1, 2, b"");
    let udp = testpkt::udp4([10, 0, 1, 2], 5353, [10, 0, 1, 100], 53, b"0123456789");
    let tcp6 = testpkt::tcp6(testpkt::V6A, 1234, testpkt::V6B, 80, TCP_ACK, 1, 2, b"");
    for (name, f) in [("tcp4", &tcp), ("udp4", &udp), ("tcp6", &tcp6)] {
        g.bench_function(name, |b| b.iter(|| parse::parse(black_box(f))));
    }
    g.finish();
}

/// A table of `n` NAT connections and its inbound keys in random order.
fn table(n: usize) -> (FlowTable, Vec<FlowKey>) {
    let mut t = FlowTable::new(n);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let client = v4_to_addr((0x6440_0000 + (i >> 6)).to_be_bytes());
        let cport = 1024 + (i & 63) as u16;
        let mut c = new_conn(
            6,
            Forward::Nat,
            client,
            cport,
            v4_to_addr([10, 0, 1, 100]),
            80,
            v4_to_addr([10, 0, 2, 2 + (i % 8) as u8]),
            80,
        );
        // Clients behind one gateway (one interned next hop).
        c.nh_out = v4_to_addr([10, 0, 1, 254]);
        let k = c.key_in();
        if t.insert(c, 0).is_some() {
            keys.push(k);
        }
    }
    Rng(7).shuffle(&mut keys);
    (t, keys)
}

fn bench_lookup(c: &mut Criterion) {
    let mut sizes = vec![1_000usize, 1_000_000];
    if std::env::var_os("FERROVS_BENCH_10M").is_some() {
        sizes.push(10_000_000);
    }
    let mut g = c.benchmark_group("flow_lookup");
    for n in sizes {
        let (t, keys) = table(n);
        g.throughput(Throughput::Elements(1));
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("one_by_one", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(t.lookup(&keys[i]))
            })
        });
        // The worker's way: hash and prefetch a burst of 32, then look up.
        g.throughput(Throughput::Elements(32));
        let mut j = 0usize;
        g.bench_with_input(BenchmarkId::new("burst32_prefetch", n), &n, |b, _| {
            b.iter(|| {
                let mut hs = [0u64; 32];
                let base = j;
                for (k, h) in hs.iter_mut().enumerate() {
                    *h = t.hash(&keys[(base + k) % keys.len()]);
                    t.prefetch(*h);
                }
                let mut found = 0u32;
                for (k, h) in hs.iter().enumerate() {
                    found += t.lookup_hashed(&keys[(base + k) % keys.len()], *h).is_some() as u32;
                }
                j = (j + 32) % keys.len();
                black_box(found)
            })
        });
    }
    g.finish();
}

fn bench_nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_rewrite");
    g.throughput(Throughput::Elements(1));
    let f = testpkt::tcp4([10, 0, 1, 2], 40000, [10, 0, 1, 100], 80, TCP_ACK, 1, 2, b"");
    let p = parse::parse(&f).unwrap();
    let mut d = f.clone();
    let rs = v4_to_addr([10, 0, 2, 2]);
    g.bench_function("tcp4_inbound", |b| {
        b.iter(|| {
            d[p.l3 + 8] = 64;
            black_box(ferrovs_engine::pipeline::nat::rewrite_nat(black_box(&mut d), &p, true, rs, 8080, 0x1234, 0x5678))
        })
    });
    g.finish();
}

fn bench_alg(c: &mut Criterion) {
    let mut g = c.benchmark_group("ftp_alg");
    g.throughput(Throughput::Elements(1));
    let retr = b"RETR pub/some/file.bin\r\n".as_slice();
    let reply = b"150 Opening BINARY mode data connection for file.bin (1048576 bytes).\r\n".as_slice();
    let l227 = b"227 Entering Passive Mode (10,0,2,2,117,49).\r\n".as_slice();
    let port = b"PORT 100,64,0,1,195,80\r\n".as_slice();
    g.bench_function("classify_command", |b| b.iter(|| alg::parse::classify_command(black_box(retr))));
    g.bench_function("reply_code", |b| b.iter(|| alg::parse::reply_code(black_box(reply))));
    g.bench_function("parse_227", |b| b.iter(|| alg::parse::parse_227(black_box(l227))));
    g.bench_function("parse_port", |b| b.iter(|| alg::parse::parse_port(black_box(port))));
    let params = alg::SessionParams {
        mode: alg::Mode::Nat,
        client: SocketAddr::new(Ipv4Addr::new(100, 64, 0, 1).into(), 40000),
        vip: SocketAddr::new(Ipv4Addr::new(10, 0, 1, 102).into(), 21),
        real: SocketAddr::new(Ipv4Addr::new(10, 0, 2, 2).into(), 21),
        allow_foreign_port_address: false,
        pinhole_timeout: 60_000_000_000,
    };
    for (name, dir, line) in
        [("on_segment_client_retr", alg::Dir::Original, retr), ("on_segment_server_150", alg::Dir::Reply, reply)]
    {
        let mut s = alg::FtpSession::new(params.clone());
        s.set_isn(alg::Dir::Original, 999);
        s.set_isn(alg::Dir::Reply, 4999);
        let mut seq = 1000u32;
        let mut out = alg::Actions::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let v = s.on_segment(1, dir, seq, black_box(line), &mut out);
                seq = seq.wrapping_add(line.len() as u32);
                black_box(v)
            })
        });
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(32));
    g.sample_size(30);
    for (name, sc, flows) in [
        ("established_nat", Scenario::Established, 10_000usize),
        ("established_nat", Scenario::Established, 1_000_000),
        ("new_syn", Scenario::New, 100_000),
        ("dr", Scenario::Dr, 10_000),
        ("ftp_data_and_control", Scenario::Ftp, 30_000),
    ] {
        let mut p = Prepared::new(sc, flows, 64).expect("bench setup");
        g.bench_with_input(BenchmarkId::new(name, flows), &flows, |b, _| b.iter(|| black_box(p.run(32))));
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_lookup, bench_nat, bench_alg, bench_pipeline);
criterion_main!(benches);
