//! Applying stream commands and serving stream reads from RocksDB: the command dispatch and
//! the reads live here, the changes one command makes in [`apply`].
//!
//! Layout, in [`CF_STREAM_MSG`]: `seg(ns) seg(topic) seq` -> [`Message`]; in [`CF_STREAM_META`],
//! by leading kind byte:
//! - `TOPIC    seg(ns) seg(topic)` -> [`Topic`]
//! - `GROUP    seg(ns) seg(topic) seg(group)` -> [`GroupRecord`]
//! - `PENDING  seg(ns) seg(topic) seg(group) seq` -> pending delivery
//! - `DEADLINE seg(ns) seg(topic) seg(group) deadline_ms seq` -> () (redelivery order)
//! - `DEDUP    seg(ns) seg(topic) seg(message id)` -> sequence and time
//! - `DEDUP_AT seg(ns) seg(topic) time_ms seg(message id)` -> () (dedup expiry order)
//!
//! Integers are u64 big-endian, so keys sort by them. Apply reads no clock: the entry's
//! `time_ms` is the only time it knows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rocksdb::{ReadOptions, WriteBatch};
use strata_storage::engine::{CF_STREAM_META, CF_STREAM_MSG};
use strata_storage::kv::StateTxn;
use strata_storage::quota::{Quota, Usage};
use strata_storage::{keys, Engine, StorageError};

use crate::command::*;
use crate::record::{self, Dedup, GroupRecord, Message, Pending, Topic};

mod apply;

const TOPIC: u8 = 0x01;
const GROUP: u8 = 0x02;
const PENDING: u8 = 0x03;
const DEADLINE: u8 = 0x04;
const DEDUP: u8 = 0x05;
const DEDUP_AT: u8 = 0x06;

/// Most messages one entry removes for retention; the leader's sweep proposes more entries for a
/// larger backlog (after a limit was lowered), so no single entry does unbounded work.
pub const MAX_REMOVALS_PER_ENTRY: u64 = 10_000;
/// Expired dedup ids a publish forgets on the way, beyond one per message it carries (the
/// sweep forgets the rest).
const DEDUP_TRIM_PER_PUBLISH: usize = 64;

/// A topic changed at some log index: consumers attached to this node look for new work.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Notice {
    pub namespace: String,
    pub topic: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPage {
    pub messages: Vec<(u64, Message)>,
    /// The topic's bounds when read (0/0 for an unknown topic).
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub record: GroupRecord,
    /// Every message up to here is acked (or was discarded by retention).
    pub ack_floor: u64,
    /// Retained messages never delivered to the group.
    pub lag: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic: Topic,
    pub groups: Vec<GroupInfo>,
}

/// A raw RocksDB key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

#[derive(Clone)]
pub struct StreamState {
    engine: Engine,
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, StorageError> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| StorageError::Corrupt("short stream key".into()))
}

fn topic_prefix(namespace: &str, topic: &str) -> Vec<u8> {
    keys::encode(&[namespace.as_bytes(), topic.as_bytes()])
}

fn kind_key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![kind];
    for part in parts {
        keys::push_segment(&mut key, part);
    }
    key
}

fn topic_key(ns: &str, topic: &str) -> Vec<u8> {
    kind_key(TOPIC, &[ns.as_bytes(), topic.as_bytes()])
}

fn group_key(ns: &str, topic: &str, group: &str) -> Vec<u8> {
    kind_key(GROUP, &[ns.as_bytes(), topic.as_bytes(), group.as_bytes()])
}

fn message_key(ns: &str, topic: &str, seq: u64) -> Vec<u8> {
    let mut key = topic_prefix(ns, topic);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `kind seg(ns) seg(topic) seg(group)`: the prefix of a group's pending or deadline keys.
fn group_items_prefix(kind: u8, ns: &str, topic: &str, group: &str) -> Vec<u8> {
    kind_key(kind, &[ns.as_bytes(), topic.as_bytes(), group.as_bytes()])
}

fn with_u64s(mut prefix: Vec<u8>, values: &[u64]) -> Vec<u8> {
    for value in values {
        prefix.extend_from_slice(&value.to_be_bytes());
    }
    prefix
}

/// The group a pending change belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupId {
    namespace: String,
    topic: String,
    group: String,
}

/// A pending delivery as stored before this entry, and as this entry leaves it.
#[derive(Clone, Debug)]
struct PendingChange {
    before: Option<Pending>,
    after: Option<Pending>,
}

/// The changes of one command, read back by the command itself before they are written.
struct Apply<'a> {
    state: &'a StreamState,
    batch: &'a mut WriteBatch,
    time_ms: u64,
    topics: BTreeMap<(String, String), Option<Topic>>,
    /// Each topic's stored bytes before this command (`None`: absent), for quota usage.
    originals: HashMap<(String, String), Option<u64>>,
    groups: BTreeMap<GroupId, Option<GroupRecord>>,
    pending: BTreeMap<GroupId, BTreeMap<u64, PendingChange>>,
    appended: HashMap<Vec<u8>, Message>,
    dedup: HashMap<Vec<u8>, Option<Dedup>>,
    notices: BTreeSet<Notice>,
}

impl StreamState {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self
            .engine
            .db()
            .get_cf(self.engine.cf(CF_STREAM_META), key)?
        {
            Some(bytes) => Ok(Some(record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Keys and values of `cf` in `[start, end)`, ascending.
    fn scan(
        &self,
        cf: &str,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<KeyValue, StorageError>> + '_ {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(start);
        if let Some(end) = end {
            options.set_iterate_upper_bound(end);
        }
        self.engine
            .db()
            .iterator_cf_opt(self.engine.cf(cf), options, rocksdb::IteratorMode::Start)
            .map(|item| item.map_err(StorageError::from))
    }

    fn prefix_scan(
        &self,
        cf: &str,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = Result<KeyValue, StorageError>> + '_ {
        let end = keys::prefix_end(&prefix);
        self.scan(cf, prefix, end)
    }

    // ----- apply -------------------------------------------------------------------------

    /// Applies one command with the proposer's `time_ms`; changes go into `txn`'s batch.
    /// Returns the outcome and the topics whose consumers should look for new work.
    pub fn apply(
        &self,
        txn: &mut StateTxn,
        time_ms: u64,
        command: &StreamCommand,
    ) -> Result<(StreamResponse, Vec<Notice>), StorageError> {
        let revision = txn.revision();
        let mut apply = Apply {
            state: self,
            batch: txn.batch_mut(),
            time_ms,
            topics: BTreeMap::new(),
            originals: HashMap::new(),
            groups: BTreeMap::new(),
            pending: BTreeMap::new(),
            appended: HashMap::new(),
            dedup: HashMap::new(),
            notices: BTreeSet::new(),
        };
        let response = match command {
            StreamCommand::Publish {
                namespace,
                topic,
                messages,
            } => {
                let current = apply.topic(namespace, topic)?;
                if let Some(limit) = current.as_ref().map(|t| t.config.max_bytes) {
                    if limit > 0 && messages.iter().any(|m| new_size(m) > limit) {
                        return Ok((
                            StreamResponse::Failed(StreamFailure::MessageTooLarge {
                                max_bytes: limit,
                            }),
                            Vec::new(),
                        ));
                    }
                }
                let mut results = Vec::with_capacity(messages.len());
                for message in messages {
                    results.push(apply.publish(namespace, topic, message.clone())?);
                }
                // Forget at least as many expired ids as this entry may remember, so the dedup
                // index stays bounded by the window however fast batches come.
                apply.trim_dedup(namespace, topic, DEDUP_TRIM_PER_PUBLISH + messages.len())?;
                StreamResponse::Published { revision, results }
            }
            StreamCommand::PutTopic {
                namespace,
                topic,
                config,
                must_exist,
                must_not_exist,
            } => {
                let current = apply.topic(namespace, topic)?;
                match (current, must_exist, must_not_exist) {
                    (None, true, _) => {
                        return Ok((StreamResponse::Failed(StreamFailure::TopicNotFound), vec![]))
                    }
                    (Some(_), _, true) => {
                        return Ok((StreamResponse::Failed(StreamFailure::TopicExists), vec![]))
                    }
                    (None, _, _) => {
                        apply.set_topic(namespace, topic, Topic::new(config.clone(), time_ms));
                        StreamResponse::TopicPut {
                            revision,
                            created: true,
                        }
                    }
                    (Some(mut existing), _, _) => {
                        existing.config = config.clone();
                        apply.set_topic(namespace, topic, existing);
                        apply.enforce_limits(namespace, topic, MAX_REMOVALS_PER_ENTRY)?;
                        StreamResponse::TopicPut {
                            revision,
                            created: false,
                        }
                    }
                }
            }
            StreamCommand::DeleteTopic { namespace, topic } => {
                if apply.topic(namespace, topic)?.is_none() {
                    return Ok((StreamResponse::Failed(StreamFailure::TopicNotFound), vec![]));
                }
                apply.delete_topic(namespace, topic);
                StreamResponse::Deleted { revision }
            }
            StreamCommand::Group {
                namespace,
                topic,
                group,
                consumer,
                config,
                settle,
                claim,
                auto_ack,
            } => {
                let step = apply.group_step(
                    &GroupId {
                        namespace: namespace.clone(),
                        topic: topic.clone(),
                        group: group.clone(),
                    },
                    consumer,
                    config,
                    settle,
                    *claim,
                    *auto_ack,
                )?;
                StreamResponse::Group { revision, step }
            }
            StreamCommand::Retain { namespace, topic } => {
                let Some(mut current) = apply.topic(namespace, topic)? else {
                    return Ok((StreamResponse::Failed(StreamFailure::TopicNotFound), vec![]));
                };
                // The topic's clock moves on with the sweep too: the ids it forgets stay
                // forgotten for a later entry stamped by a clock that is behind.
                current.last_timestamp_ms = current.last_timestamp_ms.max(time_ms);
                apply.set_topic(namespace, topic, current);
                let removed = apply.enforce_limits(namespace, topic, MAX_REMOVALS_PER_ENTRY)?;
                apply.trim_dedup(namespace, topic, MAX_REMOVALS_PER_ENTRY as usize)?;
                StreamResponse::Retained { revision, removed }
            }
            StreamCommand::DeleteGroup {
                namespace,
                topic,
                group,
            } => {
                let id = GroupId {
                    namespace: namespace.clone(),
                    topic: topic.clone(),
                    group: group.clone(),
                };
                if apply.group(&id)?.is_none() {
                    return Ok((StreamResponse::Failed(StreamFailure::GroupNotFound), vec![]));
                }
                apply.delete_group(&id);
                StreamResponse::Deleted { revision }
            }
        };
        let (notices, usage) = apply.finish()?;
        for (namespace, quota, change) in usage {
            txn.add_usage(&namespace, quota, change);
        }
        Ok((response, notices))
    }

    // ----- reads -------------------------------------------------------------------------

    pub fn topic(&self, namespace: &str, topic: &str) -> Result<Option<Topic>, StorageError> {
        self.meta_get(&topic_key(namespace, topic))
    }

    pub fn group(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<GroupRecord>, StorageError> {
        match self.engine.db().get_cf(
            self.engine.cf(CF_STREAM_META),
            group_key(namespace, topic, group),
        )? {
            Some(bytes) => Ok(Some(GroupRecord::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn message(
        &self,
        namespace: &str,
        topic: &str,
        seq: u64,
    ) -> Result<Option<Message>, StorageError> {
        match self.engine.db().get_cf(
            self.engine.cf(CF_STREAM_MSG),
            message_key(namespace, topic, seq),
        )? {
            Some(bytes) => Ok(Some(record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Retained messages from `from_seq` on, at most `limit` of them and, past the first, at
    /// most `max_bytes` of payload.
    pub fn read(
        &self,
        namespace: &str,
        topic: &str,
        from_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ReadPage, StorageError> {
        let Some(current) = self.topic(namespace, topic)? else {
            return Ok(ReadPage::default());
        };
        let mut page = ReadPage {
            messages: Vec::new(),
            first_seq: current.first_seq,
            last_seq: current.last_seq,
        };
        let from = from_seq.max(current.first_seq);
        if from > current.last_seq || limit == 0 {
            return Ok(page);
        }
        let prefix = topic_prefix(namespace, topic);
        let start = message_key(namespace, topic, from);
        let end = keys::prefix_end(&prefix);
        let mut bytes = 0;
        for item in self.scan(CF_STREAM_MSG, start, end) {
            let (key, value) = item?;
            let seq = u64_at(&key, prefix.len())?;
            let message: Message = record::decode(&value)?;
            if !page.messages.is_empty() && bytes + message.payload.len() > max_bytes {
                break;
            }
            bytes += message.payload.len();
            page.messages.push((seq, message));
            if page.messages.len() == limit {
                break;
            }
        }
        Ok(page)
    }

    /// The first retained sequence stamped at or after `time_ms` (`last_seq + 1` if none).
    /// Timestamps never decrease along a topic, so this is a binary search.
    pub fn sequence_at_time(
        &self,
        namespace: &str,
        topic: &str,
        time_ms: u64,
    ) -> Result<u64, StorageError> {
        match self.topic(namespace, topic)? {
            Some(current) => {
                sequence_at_time(&current, time_ms, |seq| self.message(namespace, topic, seq))
            }
            None => Ok(1),
        }
    }

    /// The earliest redelivery deadline pending in `group` (whose record the caller read), if
    /// any.
    pub fn group_next_deadline(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        record: &GroupRecord,
    ) -> Result<Option<u64>, StorageError> {
        let prefix = group_items_prefix(DEADLINE, namespace, topic, group);
        let start = with_u64s(prefix.clone(), &[record.deadline_floor_ms]);
        let end = keys::prefix_end(&prefix);
        match self.scan(CF_STREAM_META, start, end).next() {
            Some(item) => Ok(Some(u64_at(&item?.0, prefix.len())?)),
            None => Ok(None),
        }
    }

    /// The consumer a pending delivery is held by, if it is pending.
    pub fn pending_holder(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        seq: u64,
    ) -> Result<Option<String>, StorageError> {
        let key = with_u64s(group_items_prefix(PENDING, namespace, topic, group), &[seq]);
        Ok(self.meta_get::<Pending>(&key)?.map(|p| p.consumer))
    }

    /// Pending deliveries of a group held by `consumer` (sequence, delivery count), at most
    /// `max`: what a consumer claimed in a step whose answer it never got.
    pub fn pending_for(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(u64, u32)>, StorageError> {
        let Some(record) = self.group(namespace, topic, group)? else {
            return Ok(Vec::new());
        };
        let prefix = group_items_prefix(PENDING, namespace, topic, group);
        let start = with_u64s(prefix.clone(), &[record.pending_floor]);
        let mut held = Vec::new();
        for item in self.scan(CF_STREAM_META, start, keys::prefix_end(&prefix)) {
            let (key, value) = item?;
            let pending: Pending = record::decode(&value)?;
            if pending.consumer == consumer {
                held.push((u64_at(&key, prefix.len())?, pending.deliveries));
                if held.len() >= max {
                    break;
                }
            }
        }
        Ok(held)
    }

    /// Counts every topic, and the bytes of every stored message, into `usage` by namespace:
    /// from the messages themselves, the recount stored usage must match.
    pub fn recount_usage(&self, usage: &mut BTreeMap<String, Usage>) -> Result<(), StorageError> {
        let topic_prefix = vec![TOPIC];
        for item in self.prefix_scan(CF_STREAM_META, topic_prefix) {
            let (key, _) = item?;
            let (ns, _) = keys::decode_segment(&key[1..])?;
            usage.entry(name_of(ns)?).or_default().add(Quota::Topics, 1);
        }
        for item in self.scan(CF_STREAM_MSG, Vec::new(), None) {
            let (key, value) = item?;
            let (ns, _) = keys::decode_segment(&key)?;
            let message: Message = record::decode(&value)?;
            usage
                .entry(name_of(ns)?)
                .or_default()
                .add(Quota::StreamBytes, message.size());
        }
        Ok(())
    }

    /// Topics of `namespace` after `after`, up to `limit`, in name order.
    pub fn topics(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Topic)>, StorageError> {
        let prefix = kind_key(TOPIC, &[namespace.as_bytes()]);
        let start = match after {
            Some(after) => {
                let mut key = topic_key(namespace, after);
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.scan(CF_STREAM_META, start, keys::prefix_end(&prefix)) {
            let (key, value) = item?;
            let (name, _) = keys::decode_segment(&key[prefix.len()..])?;
            out.push((name_of(name)?, record::decode(&value)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn info(&self, namespace: &str, topic: &str) -> Result<Option<TopicInfo>, StorageError> {
        let Some(current) = self.topic(namespace, topic)? else {
            return Ok(None);
        };
        let prefix = kind_key(GROUP, &[namespace.as_bytes(), topic.as_bytes()]);
        let mut groups = Vec::new();
        for item in self.prefix_scan(CF_STREAM_META, prefix.clone()) {
            let (key, value) = item?;
            let (name, _) = keys::decode_segment(&key[prefix.len()..])?;
            let name = name_of(name)?;
            let group = GroupRecord::decode(&value)?;
            let pending_prefix = group_items_prefix(PENDING, namespace, topic, &name);
            let lowest_pending = self
                .scan(
                    CF_STREAM_META,
                    with_u64s(pending_prefix.clone(), &[group.pending_floor]),
                    keys::prefix_end(&pending_prefix),
                )
                .next()
                .transpose()?
                .map(|(key, _)| u64_at(&key, key.len() - 8))
                .transpose()?;
            let next = group.next_seq.max(current.first_seq);
            let ack_floor = lowest_pending.map_or(next, |seq| seq.min(next)) - 1;
            let lag = (current.last_seq + 1).saturating_sub(next);
            groups.push(GroupInfo {
                name,
                record: group,
                ack_floor,
                lag,
            });
        }
        Ok(Some(TopicInfo {
            name: topic.to_string(),
            topic: current,
            groups,
        }))
    }

    /// Every group (across namespaces and topics, in key order), at most `max`: namespace,
    /// topic, group, its record and its lag (retained messages never delivered to it). For
    /// the metrics; one topic read per topic.
    pub fn groups_progress(&self, max: usize) -> Result<Vec<GroupProgress>, StorageError> {
        let mut out = Vec::new();
        let mut topic: Option<((String, String), Option<Topic>)> = None;
        for item in self.prefix_scan(CF_STREAM_META, vec![GROUP]) {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            let (ns, rest) = keys::decode_segment(&key[1..])?;
            let (name, rest) = keys::decode_segment(rest)?;
            let (group, _) = keys::decode_segment(rest)?;
            let (ns, name, group) = (name_of(ns)?, name_of(name)?, name_of(group)?);
            let record = GroupRecord::decode(&value)?;
            if topic
                .as_ref()
                .is_none_or(|(id, _)| id.0 != ns || id.1 != name)
            {
                let current = self.topic(&ns, &name)?;
                topic = Some(((ns.clone(), name.clone()), current));
            }
            let lag = match topic.as_ref().and_then(|(_, t)| t.as_ref()) {
                Some(t) => (t.last_seq + 1).saturating_sub(record.next_seq.max(t.first_seq)),
                None => 0,
            };
            out.push(GroupProgress {
                namespace: ns,
                topic: name,
                group,
                record,
                lag,
            });
        }
        Ok(out)
    }

    /// Every topic's depth across namespaces, in key order, at most `max`: (namespace, topic,
    /// retained messages, retained bytes, last sequence). For metrics.
    pub fn topics_depth(&self, max: usize) -> Result<Vec<TopicDepth>, StorageError> {
        let mut out = Vec::new();
        for item in self.prefix_scan(CF_STREAM_META, vec![TOPIC]).take(max) {
            let (key, value) = item?;
            let segments = keys::decode(&key[1..])?;
            let [namespace, topic] = segments.as_slice() else {
                return Err(StorageError::Corrupt("topic key of wrong shape".into()));
            };
            let current: Topic = record::decode(&value)?;
            out.push(TopicDepth {
                namespace: name_of(namespace.clone())?,
                topic: name_of(topic.clone())?,
                messages: current.messages(),
                bytes: current.bytes,
                last_seq: current.last_seq,
            });
        }
        Ok(out)
    }

    /// Topics (across namespaces) whose limits or dedup window call for a `Retain` at `now_ms`,
    /// as the leader sees it. At most `max` of them.
    pub fn retention_due(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let mut due = Vec::new();
        for item in self.prefix_scan(CF_STREAM_META, vec![TOPIC]) {
            let (key, value) = item?;
            let segments = keys::decode(&key[1..])?;
            let [namespace, topic] = segments.as_slice() else {
                return Err(StorageError::Corrupt("topic key of wrong shape".into()));
            };
            let (namespace, topic) = (name_of(namespace.clone())?, name_of(topic.clone())?);
            let current: Topic = record::decode(&value)?;
            if self.retention_is_due(&namespace, &topic, &current, now_ms)? {
                due.push((namespace, topic));
                if due.len() >= max {
                    break;
                }
            }
        }
        Ok(due)
    }

    fn retention_is_due(
        &self,
        namespace: &str,
        topic: &str,
        current: &Topic,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let config = &current.config;
        if current.messages() > 0 {
            if (config.max_messages > 0 && current.messages() > config.max_messages)
                || (config.max_bytes > 0 && current.bytes > config.max_bytes)
            {
                return Ok(true);
            }
            if config.max_age_ms > 0 {
                if let Some(oldest) = self.message(namespace, topic, current.first_seq)? {
                    if oldest.timestamp_ms.saturating_add(config.max_age_ms) <= now_ms {
                        return Ok(true);
                    }
                }
            }
        }
        let prefix = kind_key(DEDUP_AT, &[namespace.as_bytes(), topic.as_bytes()]);
        let start = with_u64s(prefix.clone(), &[current.dedup_floor_ms]);
        let oldest_dedup = self
            .scan(CF_STREAM_META, start, keys::prefix_end(&prefix))
            .next()
            .transpose()?;
        if let Some((key, _)) = oldest_dedup {
            let at = u64_at(&key, prefix.len())?;
            if at.saturating_add(config.dedup_window_ms) <= now_ms {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn name_of(bytes: Vec<u8>) -> Result<String, StorageError> {
    String::from_utf8(bytes).map_err(|_| StorageError::Corrupt("stream name not UTF-8".into()))
}

fn new_size(message: &NewMessage) -> u64 {
    record::counted_size(&message.payload, &message.metadata, &message.message_id)
}

/// Binary search over a topic's retained sequences for the first stamped at or after `time_ms`.
fn sequence_at_time(
    topic: &Topic,
    time_ms: u64,
    mut message: impl FnMut(u64) -> Result<Option<Message>, StorageError>,
) -> Result<u64, StorageError> {
    let (mut low, mut high) = (topic.first_seq, topic.last_seq + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        let stamped = message(mid)?
            .ok_or_else(|| StorageError::Corrupt(format!("retained message {mid} missing")))?
            .timestamp_ms;
        if stamped < time_ms {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// A namespace's usage change: (namespace, quota, amount).
type UsageChange = (String, Quota, i64);

/// A topic's depth (see [`StreamState::topics_depth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDepth {
    pub namespace: String,
    pub topic: String,
    pub messages: u64,
    pub bytes: u64,
    pub last_seq: u64,
}

/// One group's place, for the metrics ([`StreamState::groups_progress`]).
pub struct GroupProgress {
    pub namespace: String,
    pub topic: String,
    pub group: String,
    pub record: GroupRecord,
    /// Retained messages never delivered to the group.
    pub lag: u64,
}
