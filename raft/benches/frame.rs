//! Peer frame encode/decode (length, crc32) beside a plain copy of the same bytes, and the
//! bincode encoding of a typical append-entries request.
//!
//! `cargo bench --workspace --bench frame --profile dev` (reuses the test build). Figures go to
//! bench/RESULTS.md as ratios to the copy baseline measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata_raft::network::frame;

fn frames(c: &mut Criterion) {
    for size in [64usize, 4 * 1024, 1024 * 1024] {
        let payload = vec![0x5Au8; size];
        let encoded = frame::encode(&payload).unwrap();
        let mut group = c.benchmark_group(format!("frame_{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("baseline_copy", |b| {
            b.iter(|| black_box(black_box(&payload[..]).to_vec()))
        });
        group.bench_function("encode", |b| {
            b.iter(|| black_box(frame::encode(black_box(&payload)).unwrap()))
        });
        group.bench_function("decode", |b| {
            b.iter(|| black_box(frame::decode(black_box(&encoded)).unwrap().len()))
        });
        group.finish();
    }
}

criterion_group!(benches, frames);
criterion_main!(benches);
