//! Criterion benchmarks of the pure userspace parts: decoding records, the victim tracker, and
//! reading a dump. `cargo bench -p oomtrace` (no root). The system-level figures are
//! `cargo xtask bench`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use oomtrace::{
    event::Event,
    lifecycle::{Tracker, TrackerConfig},
    record::{dump, synth},
};

const EPISODES: u64 = 20_000;
const THREADS: u32 = 4;

fn events() -> Vec<Event> {
    synth::episodes(EPISODES, THREADS).collect()
}

fn decode(c: &mut Criterion) {
    let raw: Vec<Vec<u8>> = events().iter().map(Event::encode).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("records", |b| {
        b.iter(|| {
            for r in &raw {
                black_box(Event::decode(black_box(r)).ok());
            }
        });
    });
    g.finish();
}

fn track(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("normal kills", |b| {
        b.iter_batched(
            || Tracker::new(TrackerConfig::default()),
            |mut t| {
                let mut out = Vec::new();
                for ev in &evs {
                    t.on_event(ev, &mut out);
                    out.clear();
                }
                t.finish(u64::MAX / 2, &mut out);
                black_box(t.summary())
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn read_dump(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("oomtrace-bench-{}.dump", std::process::id()));
    let mut w = dump::Writer::create(&path, false, &serde_json::json!({})).expect("dump");
    let evs = events();
    for ev in &evs {
        w.event(&ev.encode()).expect("write");
    }
    w.finish(0).expect("finish");
    let bytes = std::fs::read(&path).expect("read back");
    let _ = std::fs::remove_file(&path);
    let mut g = c.benchmark_group("dump");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("read records", |b| {
        b.iter_batched(
            || dump::Reader::from_bytes(bytes.clone()),
            |mut r| {
                let mut n = 0;
                while let Some(rec) = r.next_record() {
                    black_box(rec);
                    n += 1;
                }
                n
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, decode, track, read_dump);
criterion_main!(benches);
