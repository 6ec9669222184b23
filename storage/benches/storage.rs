//! Storage write path: batched log append with fsync, state-machine apply per command kind, and
//! key encoding.
//!
//! `cargo bench --workspace --bench storage`. Figures go to bench/RESULTS.md with the machine.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_storage::kv::*;
use strata_storage::{Engine, LogStore};

fn log_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::new(Engine::open(dir.path()).unwrap());
    let payload = vec![0xA5u8; 300]; // a 256-byte put plus its envelope
    let mut next = 1u64;
    let mut group = c.benchmark_group("log_append_sync");
    for batch in [1usize, 16, 128, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                log.append((next..next + batch as u64).map(|i| (i, payload.as_slice())))
                    .unwrap();
                log.sync().unwrap();
                next += batch as u64;
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let state = KvState::new(Engine::open(dir.path()).unwrap());
    let scope = Scope::new("bench", "db", "t");
    let mut revision = 0u64;
    let mut run = |state: &KvState, command: &KvCommand| {
        revision += 1;
        let mut txn = StateTxn::new(revision);
        state.apply(&mut txn, 1_000, command).unwrap();
        txn.put_meta(b"last_applied", &revision.to_be_bytes());
        state.commit(txn).unwrap();
    };
    let put = |i: u64, expiry: Expiry| KvCommand::Put {
        scope: scope.clone(),
        put: Put {
            key: format!("key-{i:08}").into_bytes(),
            value: vec![7; 256],
            metadata: BTreeMap::new(),
            expiry,
        },
        precondition: Precondition::None,
    };
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    // Baseline for the ratios: the same bytes written straight to RocksDB, no model logic.
    let engine = Engine::open(&dir.path().join("raw")).unwrap();
    let mut raw = 0u64;
    group.bench_function("baseline_raw_rocksdb_put", |b| {
        b.iter(|| {
            raw += 1;
            let key = format!("key-{raw:08}");
            engine
                .db()
                .put_cf(engine.cf(strata_storage::engine::CF_KV), key, [7u8; 262])
                .unwrap();
        })
    });
    let mut i = 0u64;
    group.bench_function("put_new_key", |b| {
        b.iter(|| {
            i += 1;
            run(&state, &put(i, Expiry::Never))
        })
    });
    group.bench_function("put_overwrite", |b| {
        b.iter(|| run(&state, &put(1, Expiry::Never)))
    });
    group.bench_function("put_with_ttl", |b| {
        b.iter(|| run(&state, &put(2, Expiry::TtlMs(60_000))))
    });
    group.bench_function("txn_cas", |b| {
        b.iter(|| {
            let command = KvCommand::Txn {
                scope: scope.clone(),
                compares: vec![Compare {
                    key: b"key-00000001".to_vec(),
                    op: CompareOp::Greater,
                    target: CompareTarget::ModRevision(0),
                }],
                success: vec![TxnOp::Put(Put {
                    key: b"key-00000001".to_vec(),
                    value: vec![1; 256],
                    metadata: BTreeMap::new(),
                    expiry: Expiry::Never,
                })],
                failure: vec![],
            };
            run(&state, &command)
        })
    });
    group.bench_function("delete_then_put", |b| {
        b.iter_batched(
            || (),
            |_| {
                run(
                    &state,
                    &KvCommand::Delete {
                        scope: scope.clone(),
                        key: b"key-00000003".to_vec(),
                        prefix: false,
                        precondition: Precondition::None,
                    },
                );
                run(&state, &put(3, Expiry::Never));
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Tuple key encoding (escaped, order-preserving segments) beside plain concatenation of the same
/// parts, and decoding.
fn key_encoding(c: &mut Criterion) {
    use strata_storage::keys;
    let parts: [&[u8]; 4] = [b"acme", b"app", b"users", b"user/0001234/profile"];
    let encoded = keys::encode(&parts);
    let mut group = c.benchmark_group("key_encoding");
    group.bench_function("baseline_concat", |b| {
        b.iter(|| criterion::black_box(criterion::black_box(&parts).concat()))
    });
    group.bench_function("encode", |b| {
        b.iter(|| criterion::black_box(keys::encode(criterion::black_box(&parts))))
    });
    group.bench_function("decode", |b| {
        b.iter(|| criterion::black_box(keys::decode(criterion::black_box(&encoded)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, log_append, apply, key_encoding);
criterion_main!(benches);
