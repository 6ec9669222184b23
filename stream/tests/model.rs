//! The stream state machine against a plain in-memory model: random publishes (with repeated
//! ids), limit changes, group steps (acks, nacks, claims, auto-ack, dead letters), retention
//! sweeps and deletions, at times that may even step back (a new leader's clock). After every
//! command the responses, every topic's bounds and messages, and every group agree.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use strata_storage::kv::{KvState, StateTxn};
use strata_storage::Engine;
use strata_stream::*;

const NS: &str = "ns";
const TOPICS: [&str; 2] = ["a", "b"];
const GROUPS: [&str; 2] = ["g1", "g2"];
const DEDUP_WINDOW_MS: u64 = 1_000;

#[derive(Clone, Debug)]
enum Op {
    Publish {
        topic: usize,
        messages: Vec<(Option<u8>, usize)>,
    },
    Limits {
        topic: usize,
        max_age_ms: u64,
        max_messages: u64,
        max_bytes: u64,
    },
    Step {
        topic: usize,
        group: usize,
        settle: Vec<(u64, Option<u64>)>,
        claim: u32,
        auto_ack: bool,
        start: u8,
    },
    Retain {
        topic: usize,
    },
    DeleteTopic {
        topic: usize,
    },
    DeleteGroup {
        topic: usize,
        group: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, prop::collection::vec((prop::option::of(0..6u8), 0..40usize), 1..4))
            .prop_map(|(topic, messages)| Op::Publish { topic, messages }),
        1 => (0..2usize, prop_oneof![Just(0u64), 200..2_000u64], 0..6u64, prop_oneof![Just(0u64), 60..300u64])
            .prop_map(|(topic, max_age_ms, max_messages, max_bytes)| Op::Limits { topic, max_age_ms, max_messages, max_bytes }),
        6 => (0..2usize, 0..2usize,
              prop::collection::vec((0..14u64, prop::option::of(prop_oneof![Just(0u64), 1..400u64])), 0..3),
              0..4u32, prop::bool::weighted(0.2), 0..4u8)
            .prop_map(|(topic, group, settle, claim, auto_ack, start)| Op::Step { topic, group, settle, claim, auto_ack, start }),
        1 => (0..2usize).prop_map(|topic| Op::Retain { topic }),
        1 => (0..2usize).prop_map(|topic| Op::DeleteTopic { topic }),
        1 => (0..2usize, 0..2usize).prop_map(|(topic, group)| Op::DeleteGroup { topic, group }),
    ]
}

// ----- the model ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MTopic {
    config: TopicConfig,
    messages: BTreeMap<u64, Message>,
    first_seq: u64,
    last_seq: u64,
    last_ts: u64,
    created_ms: u64,
    dedup: HashMap<String, (u64, u64)>,
}

#[derive(Clone, Debug)]
struct MGroup {
    config: GroupConfig,
    next_seq: u64,
    /// seq -> (deliveries, deadline)
    pending: BTreeMap<u64, (u32, u64)>,
    created_ms: u64,
}

#[derive(Default)]
struct Model {
    topics: BTreeMap<String, MTopic>,
    groups: BTreeMap<(String, String), MGroup>,
}

fn size(message: &Message) -> u64 {
    message.size()
}

impl Model {
    fn topic_or_create(&mut self, topic: &str, time: u64) -> &mut MTopic {
        self.topics.entry(topic.to_string()).or_insert(MTopic {
            config: TopicConfig::default(),
            messages: BTreeMap::new(),
            first_seq: 1,
            last_seq: 0,
            last_ts: 0,
            created_ms: time,
            dedup: HashMap::new(),
        })
    }

    fn publish(&mut self, topic: &str, message: NewMessage, time: u64) -> Published {
        let t = self.topic_or_create(topic, time);
        if !message.message_id.is_empty() && t.config.dedup_window_ms > 0 {
            if let Some((seq, at)) = t.dedup.get(&message.message_id) {
                if at + t.config.dedup_window_ms > time.max(t.last_ts) {
                    return Published {
                        sequence: *seq,
                        timestamp_ms: *at,
                        duplicate: true,
                    };
                }
            }
        }
        let ts = time.max(t.last_ts);
        let seq = t.last_seq + 1;
        t.last_seq = seq;
        t.last_ts = ts;
        if !message.message_id.is_empty() && t.config.dedup_window_ms > 0 {
            t.dedup.insert(message.message_id.clone(), (seq, ts));
        }
        t.messages.insert(
            seq,
            Message {
                timestamp_ms: ts,
                message_id: message.message_id,
                metadata: message.metadata,
                payload: message.payload,
            },
        );
        self.enforce(topic, time);
        Published {
            sequence: seq,
            timestamp_ms: ts,
            duplicate: false,
        }
    }

    fn enforce(&mut self, topic: &str, time: u64) -> u64 {
        let Some(t) = self.topics.get_mut(topic) else {
            return 0;
        };
        let mut removed = 0;
        while let Some((&first, oldest)) = t.messages.iter().next() {
            let bytes: u64 = t.messages.values().map(size).sum();
            let c = &t.config;
            let over = (c.max_messages > 0 && t.messages.len() as u64 > c.max_messages)
                || (c.max_bytes > 0 && bytes > c.max_bytes)
                || (c.max_age_ms > 0 && oldest.timestamp_ms + c.max_age_ms <= time);
            if !over {
                break;
            }
            t.messages.remove(&first);
            t.first_seq = first + 1;
            removed += 1;
        }
        let first_seq = t.first_seq;
        for ((name, _), group) in self.groups.iter_mut() {
            if name == topic {
                group.pending.retain(|seq, _| *seq >= first_seq);
            }
        }
        removed
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        topic: &str,
        group: &str,
        config: &GroupConfig,
        settle: &[Settle],
        claim: u32,
        auto_ack: bool,
        time: u64,
    ) -> GroupStep {
        let t = self.topic_or_create(topic, time).clone();
        let key = (topic.to_string(), group.to_string());
        let g = self.groups.entry(key.clone()).or_insert_with(|| {
            let next_seq = match config.start {
                StartAt::Earliest => t.first_seq,
                StartAt::Latest => t.last_seq + 1,
                StartAt::Sequence(seq) => seq.max(t.first_seq),
                StartAt::TimeMs(at) => t
                    .messages
                    .iter()
                    .find(|(_, m)| m.timestamp_ms >= at)
                    .map_or(t.last_seq + 1, |(seq, _)| *seq),
            };
            MGroup {
                config: config.clone(),
                next_seq,
                pending: BTreeMap::new(),
                created_ms: time,
            }
        });
        g.next_seq = g.next_seq.max(t.first_seq);
        let mut step = GroupStep {
            settled: Vec::new(),
            claimed: Vec::new(),
            dead_lettered: Vec::new(),
            next_deadline_ms: None,
        };
        for item in settle {
            let (seq, outcome) = match *item {
                Settle::Ack(seq) => (
                    seq,
                    if g.pending.remove(&seq).is_some() {
                        SettleOutcome::Done
                    } else if seq >= g.next_seq || seq == 0 {
                        SettleOutcome::NotDelivered
                    } else {
                        SettleOutcome::AlreadySettled
                    },
                ),
                Settle::Nack { sequence, delay_ms } => (
                    sequence,
                    match g.pending.get_mut(&sequence) {
                        Some(p) => {
                            p.1 = time + delay_ms;
                            SettleOutcome::Done
                        }
                        None if sequence >= g.next_seq => SettleOutcome::NotDelivered,
                        None => SettleOutcome::NotPending,
                    },
                ),
            };
            step.settled.push((seq, outcome));
        }
        let want = claim as usize;
        let mut dead = Vec::new();
        if want > 0 {
            let mut due: Vec<(u64, u64)> = g
                .pending
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= time)
                .map(|(seq, (_, deadline))| (*deadline, *seq))
                .collect();
            due.sort_unstable();
            for (_, seq) in due {
                if step.claimed.len() >= want {
                    break;
                }
                let (deliveries, _) = g.pending[&seq];
                if g.config.max_deliveries > 0 && deliveries >= g.config.max_deliveries {
                    g.pending.remove(&seq);
                    step.dead_lettered.push(seq);
                    dead.push((seq, deliveries, t.messages[&seq].clone()));
                    continue;
                }
                step.claimed.push(Claimed {
                    sequence: seq,
                    deliveries: deliveries + 1,
                });
                if auto_ack {
                    g.pending.remove(&seq);
                } else {
                    g.pending
                        .insert(seq, (deliveries + 1, time + g.config.ack_wait_ms));
                }
            }
            while step.claimed.len() < want && g.next_seq <= t.last_seq {
                let seq = g.next_seq;
                g.next_seq += 1;
                step.claimed.push(Claimed {
                    sequence: seq,
                    deliveries: 1,
                });
                if !auto_ack {
                    g.pending.insert(seq, (1, time + g.config.ack_wait_ms));
                }
            }
        }
        step.next_deadline_ms = g.pending.values().map(|(_, d)| *d).min();
        let dead_letter_topic = g.config.dead_letter_topic.clone();
        for (seq, deliveries, message) in dead {
            let mut metadata = message.metadata;
            metadata.insert("strata-dlq-topic".into(), topic.to_string());
            metadata.insert("strata-dlq-sequence".into(), seq.to_string());
            metadata.insert("strata-dlq-group".into(), group.to_string());
            metadata.insert("strata-dlq-deliveries".into(), deliveries.to_string());
            metadata.insert(
                "strata-dlq-timestamp-ms".into(),
                message.timestamp_ms.to_string(),
            );
            self.publish(
                &dead_letter_topic,
                NewMessage {
                    message_id: String::new(),
                    metadata,
                    payload: message.payload,
                },
                time,
            );
        }
        step
    }

    fn apply(&mut self, revision: u64, time: u64, command: &StreamCommand) -> StreamResponse {
        match command {
            StreamCommand::Publish {
                topic, messages, ..
            } => {
                if let Some(t) = self.topics.get(topic) {
                    let limit = t.config.max_bytes;
                    let too_big = messages.iter().any(|m| {
                        let meta: usize = m.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
                        (m.payload.len() + meta + m.message_id.len()) as u64 > limit
                    });
                    if limit > 0 && too_big {
                        return StreamResponse::Failed(StreamFailure::MessageTooLarge {
                            max_bytes: limit,
                        });
                    }
                }
                let results = messages
                    .iter()
                    .map(|m| self.publish(topic, m.clone(), time))
                    .collect();
                StreamResponse::Published { revision, results }
            }
            StreamCommand::PutTopic { topic, config, .. } => {
                let created = !self.topics.contains_key(topic);
                self.topic_or_create(topic, time).config = config.clone();
                if !created {
                    self.enforce(topic, time);
                }
                StreamResponse::TopicPut { revision, created }
            }
            StreamCommand::DeleteTopic { topic, .. } => {
                if self.topics.remove(topic).is_none() {
                    return StreamResponse::Failed(StreamFailure::TopicNotFound);
                }
                self.groups.retain(|(t, _), _| t != topic);
                StreamResponse::Deleted { revision }
            }
            StreamCommand::Group {
                topic,
                group,
                config,
                settle,
                claim,
                auto_ack,
                ..
            } => {
                let step = self.step(topic, group, config, settle, *claim, *auto_ack, time);
                StreamResponse::Group { revision, step }
            }
            StreamCommand::Retain { topic, .. } => {
                let Some(t) = self.topics.get_mut(topic) else {
                    return StreamResponse::Failed(StreamFailure::TopicNotFound);
                };
                t.last_ts = t.last_ts.max(time);
                let removed = self.enforce(topic, time);
                StreamResponse::Retained { revision, removed }
            }
            StreamCommand::DeleteGroup { topic, group, .. } => {
                if self
                    .groups
                    .remove(&(topic.clone(), group.clone()))
                    .is_none()
                {
                    return StreamResponse::Failed(StreamFailure::GroupNotFound);
                }
                StreamResponse::Deleted { revision }
            }
        }
    }
}

fn command_of(op: &Op) -> StreamCommand {
    match op {
        Op::Publish { topic, messages } => StreamCommand::Publish {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
            messages: messages
                .iter()
                .enumerate()
                .map(|(i, (id, len))| NewMessage {
                    message_id: id.map_or(String::new(), |id| format!("id{id}")),
                    metadata: [("i".to_string(), i.to_string())].into(),
                    payload: vec![b'p'; *len],
                })
                .collect(),
        },
        Op::Limits {
            topic,
            max_age_ms,
            max_messages,
            max_bytes,
        } => StreamCommand::PutTopic {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
            config: TopicConfig {
                max_age_ms: *max_age_ms,
                max_messages: *max_messages,
                max_bytes: *max_bytes,
                dedup_window_ms: DEDUP_WINDOW_MS,
            },
            must_exist: false,
            must_not_exist: false,
        },
        Op::Step {
            topic,
            group,
            settle,
            claim,
            auto_ack,
            start,
        } => StreamCommand::Group {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
            group: GROUPS[*group].into(),
            consumer: "c".into(),
            config: GroupConfig {
                start: match start {
                    0 => StartAt::Earliest,
                    1 => StartAt::Latest,
                    2 => StartAt::Sequence(3),
                    _ => StartAt::TimeMs(1_000_300),
                },
                ack_wait_ms: 250,
                max_deliveries: 3,
                dead_letter_topic: format!("{}.dlq", TOPICS[*topic]),
            },
            settle: settle
                .iter()
                .map(|(seq, nack)| match nack {
                    None => Settle::Ack(*seq),
                    Some(delay_ms) => Settle::Nack {
                        sequence: *seq,
                        delay_ms: *delay_ms,
                    },
                })
                .collect(),
            claim: *claim,
            auto_ack: *auto_ack,
        },
        Op::Retain { topic } => StreamCommand::Retain {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
        },
        Op::DeleteTopic { topic } => StreamCommand::DeleteTopic {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
        },
        Op::DeleteGroup { topic, group } => StreamCommand::DeleteGroup {
            namespace: NS.into(),
            topic: TOPICS[*topic].into(),
            group: GROUPS[*group].into(),
        },
    }
}

fn check_state(state: &StreamState, model: &Model) -> Result<(), TestCaseError> {
    let names: Vec<String> = state
        .topics(NS, None, 100)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    prop_assert_eq!(names, model.topics.keys().cloned().collect::<Vec<_>>());
    for (name, mt) in &model.topics {
        let stored = state.topic(NS, name).unwrap().expect("topic stored");
        prop_assert_eq!(stored.first_seq, mt.first_seq, "first_seq of {}", name);
        prop_assert_eq!(stored.last_seq, mt.last_seq, "last_seq of {}", name);
        prop_assert_eq!(stored.bytes, mt.messages.values().map(size).sum::<u64>());
        prop_assert_eq!(stored.created_ms, mt.created_ms);
        let page = state.read(NS, name, 1, 1_000, usize::MAX).unwrap();
        let expected: Vec<(u64, Message)> =
            mt.messages.iter().map(|(s, m)| (*s, m.clone())).collect();
        prop_assert_eq!(page.messages, expected, "messages of {}", name);
        let info = state.info(NS, name).unwrap().unwrap();
        let model_groups: Vec<(String, u64, u64)> = model
            .groups
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|((_, g), mg)| (g.clone(), mg.next_seq, mg.pending.len() as u64))
            .collect();
        let stored_groups: Vec<(String, u64, u64)> = info
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.record.next_seq, g.record.pending))
            .collect();
        prop_assert_eq!(stored_groups, model_groups, "groups of {}", name);
        for group in &info.groups {
            let mg = &model.groups[&(name.clone(), group.name.clone())];
            prop_assert_eq!(group.record.created_ms, mg.created_ms);
            let next = mg.next_seq.max(mt.first_seq);
            let floor = mg.pending.keys().next().map_or(next, |s| (*s).min(next)) - 1;
            prop_assert_eq!(group.ack_floor, floor);
            prop_assert_eq!(
                state
                    .group_next_deadline(NS, name, &group.name, &group.record)
                    .unwrap(),
                mg.pending.values().map(|(_, d)| *d).min()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn stream_state_machine_matches_model(
        ops in prop::collection::vec((op(), -50i64..300), 1..60)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let state = StreamState::new(engine.clone());
        let kv = KvState::new(engine);
        let mut model = Model::default();
        let mut time: i64 = 1_000_000;
        for (revision, (op, step)) in ops.iter().enumerate() {
            time += step;
            let revision = revision as u64 + 1;
            let command = command_of(op);
            let mut txn = StateTxn::new(revision);
            let (response, _) = state.apply(&mut txn, time as u64, &command).unwrap();
            kv.commit(txn).unwrap();
            let expected = model.apply(revision, time as u64, &command);
            prop_assert_eq!(&response, &expected, "op {:?} at {}", op, time);
            check_state(&state, &model)?;
        }
    }
}

/// Batches of new ids arriving faster than one per entry: the dedup index still holds no more
/// than the window's worth (each entry forgets at least as many expired ids as it adds).
#[test]
fn the_dedup_index_stays_bounded_by_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let state = StreamState::new(engine.clone());
    let kv = KvState::new(engine.clone());
    let window_ms = 1_000;
    let mut txn = StateTxn::new(1);
    let config = TopicConfig {
        dedup_window_ms: window_ms,
        ..TopicConfig::default()
    };
    let put = StreamCommand::PutTopic {
        namespace: NS.into(),
        topic: "t".into(),
        config,
        must_exist: false,
        must_not_exist: true,
    };
    state.apply(&mut txn, 0, &put).unwrap();
    kv.commit(txn).unwrap();
    // 200 entries of 500 new ids, 100 ms apart: 5,000 ids per second of window.
    for entry in 0..200u64 {
        let messages = (0..500)
            .map(|i| NewMessage {
                message_id: format!("{entry}-{i}"),
                metadata: Default::default(),
                payload: vec![],
            })
            .collect();
        let publish = StreamCommand::Publish {
            namespace: NS.into(),
            topic: "t".into(),
            messages,
        };
        let mut txn = StateTxn::new(entry + 2);
        state
            .apply(&mut txn, 10_000 + entry * 100, &publish)
            .unwrap();
        kv.commit(txn).unwrap();
    }
    let cf = engine.cf(strata_storage::engine::CF_STREAM_META);
    let ids = engine
        .db()
        .prefix_iterator_cf(cf, [0x05])
        .map(|item| item.unwrap())
        .take_while(|(key, _)| key[0] == 0x05)
        .count();
    // The window holds the last 10 entries' 5,000 ids (plus the entry at its edge).
    assert!(ids <= 5_500, "{ids} dedup ids remembered");
    assert!(ids >= 5_000, "{ids}: ids inside the window must stay");
}
