//! `pick()` cost per scheduler with 2, 16 and 256 real servers, with varied connection counts
//! (so least-connection schedulers do real comparisons) and a new client per call; and
//! `update()` cost (what every worker pays with each configuration snapshot) for a health-check
//! flap (a server quiesced to weight 0 and back) and for a weight edit.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrovs_sched::{new_scheduler, Dest, FlowKey, StaticCounts, NAMES};

fn setup(n: usize) -> (Vec<Dest>, StaticCounts) {
    let dests = (0..n)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8));
            Dest::new(addr, 80, 1 + (i as u32 * 7) % 10)
        })
        .collect();
    let mut st = StaticCounts::new(n);
    for i in 0..n {
        st.active[i] = ((i * 37) % 100) as u32;
        st.inactive[i] = ((i * 11) % 50) as u32;
    }
    (dests, st)
}

fn sched(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched_pick");
    g.throughput(Throughput::Elements(1));
    for &n in &[2usize, 16, 256] {
        let (dests, st) = setup(n);
        for &name in NAMES {
            let mut s = new_scheduler(name, &dests, 1).unwrap();
            let mut client = 0x0a00_0001u32;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    client = client.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let key = FlowKey {
                        client: IpAddr::V4(Ipv4Addr::from(client)),
                        client_port: client as u16,
                        vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                        vport: 80,
                        proto: 6,
                    };
                    black_box(s.pick(black_box(&key), &dests, &st))
                })
            });
        }
    }
    g.finish();
}

fn update(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched_update");
    g.throughput(Throughput::Elements(1));
    for &n in &[16usize, 256] {
        let (dests, _) = setup(n);
        for &name in NAMES {
            for (what, w) in [("quiesce", 0u32), ("weight", dests[0].weight + 1)] {
                let mut s = new_scheduler(name, &dests, 1).unwrap();
                let (mut a, mut b) = (dests.clone(), dests.clone());
                a[0].weight = w;
                b[0].weight = dests[0].weight;
                let mut flip = false;
                g.bench_with_input(BenchmarkId::new(format!("{name}/{what}"), n), &n, |bn, _| {
                    bn.iter(|| {
                        flip = !flip;
                        s.update(black_box(if flip { &a } else { &b }));
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, sched, update);
criterion_main!(benches);
