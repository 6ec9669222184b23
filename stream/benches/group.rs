//! One group step (ack one message, claim one) on a group with no history, and on one that has
//! already acked 20,000 messages: with the scan floors the two should cost the same.

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
            let publish = StreamCommand::Publish {
                namespace: "ns".into(),
                topic: "t".into(),
                messages: (0..count)
                    .map(|_| NewMessage {
                        message_id: String::new(),
                        metadata: BTreeMap::new(),
                        payload: vec![b'x'; 64],
                    })
                    .collect(),
            };
            fixture.apply(&publish);
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

criterion_group!(benches, group_step);
criterion_main!(benches);
