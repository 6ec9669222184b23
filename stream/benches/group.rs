//! Stream state-machine micro-benchmarks:
//! - `group_step`: one group step (ack one message, claim one) on a group with no history, and
//!   on one that has already acked 20,000 messages: with the scan floors the two should cost
//!   the same;
//! - `stream_append`: applying a Publish of 1, 16 and 256 messages of 256 bytes (not synced; the
//!   log's fsync is measured in storage's `log_append_sync`), against the raw RocksDB puts of the
//!   same bytes in one write batch;
//! - `stream_read`: a page of 1, 16 and 256 messages from a 200,000-message topic.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use strata_storage::kv::{KvState, StateTxn};
use strata_storage::Engine;
use strata_stream::*;

struct Fixture {
    _dir: tempfile::TempDir,
    state: StreamState,
    kv: KvState,
    revision: u64,
    time_ms: u64,
    /// The message the next step acks.
    holding: u64,
}

impl Fixture {
    fn apply(&mut self, command: &StreamCommand) -> StreamResponse {
        self.revision += 1;
        self.time_ms += 1;
        let mut txn = StateTxn::new(self.revision);
        let (response, _) = self.state.apply(&mut txn, self.time_ms, command).unwrap();
        self.kv.commit(txn).unwrap();
        response
    }

    fn step(&mut self) {
        let command = StreamCommand::Group {
            namespace: "ns".into(),
            topic: "t".into(),
            group: "g".into(),
            consumer: "c".into(),
            config: GroupConfig {
                start: StartAt::Earliest,
                ack_wait_ms: 30_000,
                max_deliveries: 0,
                dead_letter_topic: "t.dlq".into(),
            },
            settle: if self.holding > 0 {
                vec![Settle::Ack(self.holding)]
            } else {
                vec![]
            },
            claim: 1,
            auto_ack: false,
        };
        match self.apply(&command) {
            StreamResponse::Group { step, .. } => {
                self.holding = step.claimed.first().map_or(0, |c| c.sequence)
            }
            other => panic!("{other:?}"),
        }
    }

    /// A topic of `messages` messages, a group that has acked `acked` of them one by one.
    fn new(messages: u64, acked: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let mut fixture = Fixture {
            state: StreamState::new(engine.clone()),
            kv: KvState::new(engine),
            _dir: dir,
            revision: 0,
            time_ms: 1_000_000,
            holding: 0,
        };
        for chunk in 0..messages.div_ceil(1_000) {
            let count = (messages - chunk * 1_000).min(1_000);
            fixture.apply(&publish(count, 64));
        }
        for _ in 0..=acked {
            fixture.step();
        }
        fixture
    }
}

fn group_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_step");
    for acked in [0u64, 20_000] {
        let mut fixture = Fixture::new(200_000, acked);
        group.bench_function(format!("after_{acked}_acked"), |b| {
            b.iter_batched(|| (), |()| fixture.step(), BatchSize::SmallInput)
        });
    }
    group.finish();
}

fn publish(count: u64, payload: usize) -> StreamCommand {
    StreamCommand::Publish {
        namespace: "ns".into(),
        topic: "t".into(),
        messages: (0..count)
            .map(|_| NewMessage {
                message_id: String::new(),
                metadata: BTreeMap::new(),
                payload: vec![b'x'; payload],
            })
            .collect(),
    }
}

fn stream_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_append");
    let mut fixture = Fixture::new(0, 0);
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = Engine::open(raw_dir.path()).unwrap();
    let mut raw_key = 0u64;
    for count in [1u64, 16, 256] {
        group.throughput(criterion::Throughput::Elements(count));
        group.bench_function(format!("baseline_raw_batch_{count}"), |b| {
            b.iter(|| {
                let mut batch = rocksdb::WriteBatch::default();
                for _ in 0..count {
                    raw_key += 1;
                    let key = format!("ns/t/{raw_key:016}");
                    batch.put_cf(raw.cf(strata_storage::engine::CF_KV), key, [b'x'; 256]);
                }
                raw.db().write(batch).unwrap();
            })
        });
        let command = publish(count, 256);
        group.bench_function(format!("publish_{count}"), |b| {
            b.iter(|| fixture.apply(&command))
        });
    }
    group.finish();
}

fn stream_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_read");
    let fixture = Fixture::new(200_000, 0);
    let mut from = 1u64;
    for limit in [1usize, 16, 256] {
        group.throughput(criterion::Throughput::Elements(limit as u64));
        group.bench_function(format!("page_{limit}"), |b| {
            b.iter(|| {
                // Walk the topic so that pages are not all served from the same blocks.
                from = if from > 199_000 { 1 } else { from + 997 };
                let page = fixture
                    .state
                    .read("ns", "t", from, limit, usize::MAX)
                    .unwrap();
                assert_eq!(page.messages.len(), limit);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_step, stream_append, stream_read);
criterion_main!(benches);
