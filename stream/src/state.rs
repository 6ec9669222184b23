//! Applying stream commands and serving stream reads from RocksDB.
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

impl Apply<'_> {
    fn topic(&mut self, ns: &str, topic: &str) -> Result<Option<Topic>, StorageError> {
        let id = (ns.to_string(), topic.to_string());
        if let Some(cached) = self.topics.get(&id) {
            return Ok(cached.clone());
        }
        let stored = self.state.topic(ns, topic)?;
        self.originals
            .insert(id.clone(), stored.as_ref().map(|t| t.bytes));
        self.topics.insert(id, stored.clone());
        Ok(stored)
    }

    fn set_topic(&mut self, ns: &str, topic: &str, value: Topic) {
        self.topics
            .insert((ns.to_string(), topic.to_string()), Some(value));
    }

    fn topic_or_create(&mut self, ns: &str, topic: &str) -> Result<Topic, StorageError> {
        Ok(match self.topic(ns, topic)? {
            Some(existing) => existing,
            None => {
                let created = Topic::new(TopicConfig::default(), self.time_ms);
                self.set_topic(ns, topic, created.clone());
                created
            }
        })
    }

    fn group(&mut self, id: &GroupId) -> Result<Option<GroupRecord>, StorageError> {
        if let Some(cached) = self.groups.get(id) {
            return Ok(cached.clone());
        }
        let stored = self.state.group(&id.namespace, &id.topic, &id.group)?;
        self.groups.insert(id.clone(), stored.clone());
        Ok(stored)
    }

    fn message(&self, ns: &str, topic: &str, seq: u64) -> Result<Option<Message>, StorageError> {
        let key = message_key(ns, topic, seq);
        if let Some(appended) = self.appended.get(&key) {
            return Ok(Some(appended.clone()));
        }
        self.state.message(ns, topic, seq)
    }

    /// A retained message's timestamp and counted size, without copying its payload.
    fn stamp_and_size(&self, ns: &str, topic: &str, seq: u64) -> Result<(u64, u64), StorageError> {
        let key = message_key(ns, topic, seq);
        if let Some(appended) = self.appended.get(&key) {
            return Ok((appended.timestamp_ms, appended.size()));
        }
        let stored = self
            .state
            .message(ns, topic, seq)?
            .ok_or_else(|| StorageError::Corrupt(format!("retained message {seq} missing")))?;
        Ok((stored.timestamp_ms, stored.size()))
    }

    fn pending(&mut self, id: &GroupId, seq: u64) -> Result<Option<Pending>, StorageError> {
        if let Some(change) = self.pending.get(id).and_then(|changes| changes.get(&seq)) {
            return Ok(change.after.clone());
        }
        let key = with_u64s(
            group_items_prefix(PENDING, &id.namespace, &id.topic, &id.group),
            &[seq],
        );
        let stored: Option<Pending> = self.state.meta_get(&key)?;
        self.pending.entry(id.clone()).or_default().insert(
            seq,
            PendingChange {
                before: stored.clone(),
                after: stored.clone(),
            },
        );
        Ok(stored)
    }

    fn set_pending(&mut self, id: &GroupId, seq: u64, value: Option<Pending>) {
        let change = self
            .pending
            .get_mut(id)
            .and_then(|changes| changes.get_mut(&seq))
            .expect("pending is read before it is written");
        change.after = value;
    }

    fn publish(
        &mut self,
        ns: &str,
        topic: &str,
        message: NewMessage,
    ) -> Result<Published, StorageError> {
        let mut current = self.topic_or_create(ns, topic)?;
        let dedup_key = (!message.message_id.is_empty() && current.config.dedup_window_ms > 0)
            .then(|| {
                kind_key(
                    DEDUP,
                    &[
                        ns.as_bytes(),
                        topic.as_bytes(),
                        message.message_id.as_bytes(),
                    ],
                )
            });
        if let Some(key) = &dedup_key {
            let seen = match self.dedup.get(key) {
                Some(cached) => cached.clone(),
                None => self.state.meta_get::<Dedup>(key)?,
            };
            if let Some(seen) = seen {
                // Judged by the topic's clock, which never steps back (a new leader's may be
                // behind), so an id once forgotten is never remembered again.
                let now = self.time_ms.max(current.last_timestamp_ms);
                if seen
                    .timestamp_ms
                    .saturating_add(current.config.dedup_window_ms)
                    > now
                {
                    return Ok(Published {
                        sequence: seen.sequence,
                        timestamp_ms: seen.timestamp_ms,
                        duplicate: true,
                    });
                }
                // Expired but not yet forgotten: forget it now, then remember the new one.
                let at_key = dedup_at_key(ns, topic, seen.timestamp_ms, &message.message_id);
                let state = self.state;
                self.batch
                    .delete_cf(state.engine.cf(CF_STREAM_META), at_key);
            }
        }
        let timestamp_ms = self.time_ms.max(current.last_timestamp_ms);
        let sequence = current.last_seq + 1;
        let stored = Message {
            timestamp_ms,
            message_id: message.message_id,
            metadata: message.metadata,
            payload: message.payload,
        };
        current.last_seq = sequence;
        current.bytes += stored.size();
        current.last_timestamp_ms = timestamp_ms;
        if let Some(key) = dedup_key {
            let at_key = dedup_at_key(ns, topic, timestamp_ms, &stored.message_id);
            let entry = Dedup {
                sequence,
                timestamp_ms,
            };
            let cf = self.state.engine.cf(CF_STREAM_META);
            self.batch.put_cf(cf, &key, record::encode(&entry));
            self.batch.put_cf(cf, at_key, []);
            self.dedup.insert(key, Some(entry));
        }
        let key = message_key(ns, topic, sequence);
        self.batch.put_cf(
            self.state.engine.cf(CF_STREAM_MSG),
            &key,
            record::encode(&stored),
        );
        self.appended.insert(key, stored);
        self.set_topic(ns, topic, current);
        self.enforce_limits(ns, topic, MAX_REMOVALS_PER_ENTRY)?;
        self.notices.insert(Notice {
            namespace: ns.to_string(),
            topic: topic.to_string(),
        });
        Ok(Published {
            sequence,
            timestamp_ms,
            duplicate: false,
        })
    }

    /// Removes the oldest messages while a limit is exceeded (age judged by this entry's time),
    /// up to `budget` of them. Groups lose pending deliveries of removed messages.
    fn enforce_limits(&mut self, ns: &str, topic: &str, budget: u64) -> Result<u64, StorageError> {
        let Some(mut current) = self.topic(ns, topic)? else {
            return Ok(0);
        };
        let config = current.config.clone();
        if config.max_messages == 0 && config.max_bytes == 0 && config.max_age_ms == 0 {
            return Ok(0); // the default: no limits, nothing to read
        }
        let mut removed = 0;
        while removed < budget && current.messages() > 0 {
            let over_count = config.max_messages > 0 && current.messages() > config.max_messages;
            let over_bytes = config.max_bytes > 0 && current.bytes > config.max_bytes;
            if !(over_count || over_bytes || config.max_age_ms > 0) {
                break;
            }
            let (stamped, size) = self.stamp_and_size(ns, topic, current.first_seq)?;
            let too_old =
                config.max_age_ms > 0 && stamped.saturating_add(config.max_age_ms) <= self.time_ms;
            if !(over_count || over_bytes || too_old) {
                break;
            }
            self.batch.delete_cf(
                self.state.engine.cf(CF_STREAM_MSG),
                message_key(ns, topic, current.first_seq),
            );
            current.bytes -= size;
            current.first_seq += 1;
            removed += 1;
        }
        if removed > 0 {
            let first_seq = current.first_seq;
            self.set_topic(ns, topic, current);
            self.drop_discarded_pending(ns, topic, first_seq)?;
        }
        Ok(removed)
    }

    /// Forgets pending deliveries of messages below `first_seq` in every group of the topic.
    fn drop_discarded_pending(
        &mut self,
        ns: &str,
        topic: &str,
        first_seq: u64,
    ) -> Result<(), StorageError> {
        let prefix = kind_key(GROUP, &[ns.as_bytes(), topic.as_bytes()]);
        let mut names = Vec::new();
        for item in self.state.prefix_scan(CF_STREAM_META, prefix.clone()) {
            let (key, _) = item?;
            names.push(name_of(keys::decode_segment(&key[prefix.len()..])?.0)?);
        }
        for group in names {
            let id = GroupId {
                namespace: ns.to_string(),
                topic: topic.to_string(),
                group,
            };
            let floor = self.group(&id)?.map_or(0, |g| g.pending_floor);
            let items = group_items_prefix(PENDING, ns, topic, &id.group);
            if floor >= first_seq {
                continue;
            }
            let start = with_u64s(items.clone(), &[floor]);
            let end = with_u64s(items.clone(), &[first_seq]);
            let mut stale = Vec::new();
            for item in self.state.scan(CF_STREAM_META, start, Some(end)) {
                stale.push(u64_at(&item?.0, items.len())?);
            }
            // Pending added in this entry is never below the first retained message.
            for seq in stale {
                if self.pending(&id, seq)?.is_some() {
                    self.remove_pending(&id, seq)?;
                }
            }
        }
        Ok(())
    }

    fn remove_pending(&mut self, id: &GroupId, seq: u64) -> Result<(), StorageError> {
        self.set_pending(id, seq, None);
        if let Some(mut group) = self.group(id)? {
            group.pending -= 1;
            self.groups.insert(id.clone(), Some(group));
        }
        Ok(())
    }

    /// Forgets up to `budget` dedup ids older than the topic's window.
    fn trim_dedup(&mut self, ns: &str, topic: &str, budget: usize) -> Result<(), StorageError> {
        let Some(mut current) = self.topic(ns, topic)? else {
            return Ok(());
        };
        let prefix = kind_key(DEDUP_AT, &[ns.as_bytes(), topic.as_bytes()]);
        let horizon = self
            .time_ms
            .max(current.last_timestamp_ms)
            .saturating_sub(current.config.dedup_window_ms)
            .saturating_add(1);
        if current.dedup_floor_ms >= horizon {
            return Ok(());
        }
        let start = with_u64s(prefix.clone(), &[current.dedup_floor_ms]);
        let end = with_u64s(prefix.clone(), &[horizon]);
        let mut expired = Vec::new();
        for item in self.state.scan(CF_STREAM_META, start, Some(end)) {
            let (key, _) = item?;
            let at = u64_at(&key, prefix.len())?;
            let (id, _) = keys::decode_segment(&key[prefix.len() + 8..])?;
            expired.push((key.to_vec(), at, id));
            if expired.len() >= budget {
                break;
            }
        }
        // Everything below the horizon is gone once the scan ran to its end; otherwise
        // everything below the last time it reached (ids of that same time may remain).
        current.dedup_floor_ms = if expired.len() < budget {
            horizon
        } else {
            expired
                .last()
                .map_or(current.dedup_floor_ms, |(_, at, _)| *at)
        };
        self.set_topic(ns, topic, current);
        let cf = self.state.engine.cf(CF_STREAM_META);
        for (at_key, at, id) in expired {
            self.batch.delete_cf(cf, at_key);
            let key = kind_key(DEDUP, &[ns.as_bytes(), topic.as_bytes(), &id]);
            // Only if the id was not remembered again since (then its time differs).
            let current = match self.dedup.get(&key) {
                Some(cached) => cached.clone(),
                None => self.state.meta_get::<Dedup>(&key)?,
            };
            if current.is_some_and(|d| d.timestamp_ms == at) {
                self.batch.delete_cf(cf, &key);
                self.dedup.insert(key, None);
            }
        }
        Ok(())
    }

    fn delete_topic(&mut self, ns: &str, topic: &str) {
        let engine = &self.state.engine;
        let prefix = topic_prefix(ns, topic);
        let end = keys::prefix_end(&prefix).expect("a topic prefix ends in 0x01");
        self.batch
            .delete_range_cf(engine.cf(CF_STREAM_MSG), &prefix, &end);
        for kind in [GROUP, PENDING, DEADLINE, DEDUP, DEDUP_AT] {
            let start = kind_key(kind, &[ns.as_bytes(), topic.as_bytes()]);
            let end = keys::prefix_end(&start).expect("a key prefix ends in 0x01");
            self.batch
                .delete_range_cf(engine.cf(CF_STREAM_META), start, end);
        }
        self.topics
            .insert((ns.to_string(), topic.to_string()), None);
        self.notices.insert(Notice {
            namespace: ns.to_string(),
            topic: topic.to_string(),
        });
    }

    fn delete_group(&mut self, id: &GroupId) {
        let cf = self.state.engine.cf(CF_STREAM_META);
        for kind in [PENDING, DEADLINE] {
            let start = group_items_prefix(kind, &id.namespace, &id.topic, &id.group);
            let end = keys::prefix_end(&start).expect("a key prefix ends in 0x01");
            self.batch.delete_range_cf(cf, start, end);
        }
        self.groups.insert(id.clone(), None);
    }

    fn group_step(
        &mut self,
        id: &GroupId,
        consumer: &str,
        config: &GroupConfig,
        settle: &[Settle],
        claim: u32,
        auto_ack: bool,
    ) -> Result<GroupStep, StorageError> {
        let topic = self.topic_or_create(&id.namespace, &id.topic)?;
        let mut group = match self.group(id)? {
            Some(existing) => existing,
            None => {
                let next_seq = match config.start {
                    StartAt::Earliest => topic.first_seq,
                    StartAt::Latest => topic.last_seq + 1,
                    StartAt::Sequence(seq) => seq.max(topic.first_seq),
                    StartAt::TimeMs(at) => sequence_at_time(&topic, at, |seq| {
                        self.message(&id.namespace, &id.topic, seq)
                    })?,
                };
                GroupRecord {
                    config: config.clone(),
                    next_seq,
                    pending: 0,
                    created_ms: self.time_ms,
                    deadline_floor_ms: 0,
                    pending_floor: 0,
                    activity: Default::default(),
                }
            }
        };
        // Messages discarded by retention before the group got to them are skipped.
        group.next_seq = group.next_seq.max(topic.first_seq);
        self.groups.insert(id.clone(), Some(group.clone()));

        let mut step = GroupStep {
            settled: Vec::with_capacity(settle.len()),
            claimed: Vec::new(),
            dead_lettered: Vec::new(),
            next_deadline_ms: None,
        };
        let mut acked = 0;
        for item in settle {
            let (seq, outcome) = match *item {
                Settle::Ack(seq) => {
                    let outcome = self.ack(id, seq, group.next_seq)?;
                    acked += u64::from(outcome == SettleOutcome::Done);
                    (seq, outcome)
                }
                Settle::Nack { sequence, delay_ms } => {
                    let outcome = match self.pending(id, sequence)? {
                        Some(mut pending) => {
                            pending.deadline_ms = self.time_ms.saturating_add(delay_ms);
                            self.set_pending(id, sequence, Some(pending));
                            SettleOutcome::Done
                        }
                        None if sequence >= group.next_seq => SettleOutcome::NotDelivered,
                        None => SettleOutcome::NotPending,
                    };
                    (sequence, outcome)
                }
            };
            step.settled.push((seq, outcome));
        }

        let GroupConfig {
            ack_wait_ms,
            max_deliveries,
            dead_letter_topic: dead_letter,
            ..
        } = self.group(id)?.expect("created above").config;
        let want = claim as usize;
        let (mut redelivered, mut dead_lettered) = (0u64, 0u64);
        if want > 0 {
            for seq in self.redeliverable(id, want)? {
                if step.claimed.len() >= want {
                    break;
                }
                let Some(mut pending) = self.pending(id, seq)? else {
                    continue;
                };
                let Some(message) = self.message(&id.namespace, &id.topic, seq)? else {
                    // Discarded by retention.
                    self.remove_pending(id, seq)?;
                    continue;
                };
                if max_deliveries > 0 && pending.deliveries >= max_deliveries {
                    self.dead_letter(id, seq, pending.deliveries, message, &dead_letter)?;
                    self.remove_pending(id, seq)?;
                    step.dead_lettered.push(seq);
                    dead_lettered += 1;
                    continue;
                }
                pending.deliveries += 1;
                redelivered += 1;
                step.claimed.push(Claimed {
                    sequence: seq,
                    deliveries: pending.deliveries,
                });
                if auto_ack {
                    self.remove_pending(id, seq)?;
                } else {
                    pending.deadline_ms = self.time_ms.saturating_add(ack_wait_ms);
                    pending.consumer = consumer.to_string();
                    self.set_pending(id, seq, Some(pending));
                }
            }
            let mut group = self.group(id)?.expect("created above");
            let topic = self
                .topic(&id.namespace, &id.topic)?
                .expect("created above");
            while step.claimed.len() < want && group.next_seq <= topic.last_seq {
                let seq = group.next_seq;
                group.next_seq += 1;
                step.claimed.push(Claimed {
                    sequence: seq,
                    deliveries: 1,
                });
                if !auto_ack {
                    // Never delivered before, so nothing is stored for it.
                    self.pending.entry(id.clone()).or_default().insert(
                        seq,
                        PendingChange {
                            before: None,
                            after: Some(Pending {
                                deliveries: 1,
                                deadline_ms: self.time_ms.saturating_add(ack_wait_ms),
                                consumer: consumer.to_string(),
                            }),
                        },
                    );
                    group.pending += 1;
                }
            }
            self.groups.insert(id.clone(), Some(group));
        }
        step.next_deadline_ms = self.next_deadline(id)?;
        // Tighten the scan floors to the exact minimums now; `finish` lowers them again for
        // anything written below them.
        let lowest = self.lowest_pending(id)?;
        let mut group = self.group(id)?.expect("created above");
        group.deadline_floor_ms = step.next_deadline_ms.unwrap_or(u64::MAX);
        group.pending_floor = lowest.unwrap_or(group.next_seq);
        if !step.claimed.is_empty() {
            group.activity.delivered += step.claimed.len() as u64;
            group.activity.last_delivery_ms = self.time_ms;
        }
        if acked > 0 {
            group.activity.acked += acked;
            group.activity.last_ack_ms = self.time_ms;
        }
        group.activity.redelivered += redelivered;
        group.activity.dead_lettered += dead_lettered;
        self.groups.insert(id.clone(), Some(group));
        Ok(step)
    }

    fn ack(
        &mut self,
        id: &GroupId,
        seq: u64,
        next_seq: u64,
    ) -> Result<SettleOutcome, StorageError> {
        Ok(match self.pending(id, seq)? {
            Some(_) => {
                self.remove_pending(id, seq)?;
                SettleOutcome::Done
            }
            None if seq >= next_seq || seq == 0 => SettleOutcome::NotDelivered,
            None => SettleOutcome::AlreadySettled,
        })
    }

    /// Pending sequences whose deadline has passed by this entry's time, earliest deadline
    /// first, at most `want` plus those this entry already changed.
    fn redeliverable(&mut self, id: &GroupId, want: usize) -> Result<Vec<u64>, StorageError> {
        let floor = self.group(id)?.map_or(0, |g| g.deadline_floor_ms);
        let empty = BTreeMap::new();
        let changed = self.pending.get(id).unwrap_or(&empty);
        let mut due: Vec<(u64, u64)> = changed
            .iter()
            .filter_map(|(seq, change)| change.after.as_ref().map(|p| (p.deadline_ms, *seq)))
            .filter(|(deadline, _)| *deadline <= self.time_ms)
            .collect();
        let prefix = group_items_prefix(DEADLINE, &id.namespace, &id.topic, &id.group);
        let start = with_u64s(prefix.clone(), &[floor]);
        let end = with_u64s(prefix.clone(), &[self.time_ms.saturating_add(1)]);
        let mut stored = 0;
        for item in self.state.scan(CF_STREAM_META, start, Some(end)) {
            let (key, _) = item?;
            let deadline = u64_at(&key, prefix.len())?;
            let seq = u64_at(&key, prefix.len() + 8)?;
            if changed.contains_key(&seq) {
                continue; // its current state is in `changed`
            }
            due.push((deadline, seq));
            stored += 1;
            if stored >= want.saturating_mul(2) + 64 {
                break;
            }
        }
        due.sort_unstable();
        Ok(due.into_iter().map(|(_, seq)| seq).collect())
    }

    /// The earliest redelivery deadline of the group after this entry's changes.
    fn next_deadline(&mut self, id: &GroupId) -> Result<Option<u64>, StorageError> {
        let floor = self.group(id)?.map_or(0, |g| g.deadline_floor_ms);
        let empty = BTreeMap::new();
        let changed = self.pending.get(id).unwrap_or(&empty);
        let mut earliest = changed
            .values()
            .filter_map(|c| c.after.as_ref().map(|p| p.deadline_ms))
            .min();
        let prefix = group_items_prefix(DEADLINE, &id.namespace, &id.topic, &id.group);
        let start = with_u64s(prefix.clone(), &[floor]);
        for item in self
            .state
            .scan(CF_STREAM_META, start, keys::prefix_end(&prefix))
        {
            let (key, _) = item?;
            let seq = u64_at(&key, prefix.len() + 8)?;
            if changed.contains_key(&seq) {
                continue;
            }
            let deadline = u64_at(&key, prefix.len())?;
            earliest = Some(earliest.map_or(deadline, |e: u64| e.min(deadline)));
            break;
        }
        Ok(earliest)
    }

    /// The lowest pending sequence of the group after this entry's changes.
    fn lowest_pending(&mut self, id: &GroupId) -> Result<Option<u64>, StorageError> {
        let floor = self.group(id)?.map_or(0, |g| g.pending_floor);
        let empty = BTreeMap::new();
        let changed = self.pending.get(id).unwrap_or(&empty);
        let mut lowest = changed
            .iter()
            .filter(|(_, c)| c.after.is_some())
            .map(|(seq, _)| *seq)
            .min();
        let prefix = group_items_prefix(PENDING, &id.namespace, &id.topic, &id.group);
        let start = with_u64s(prefix.clone(), &[floor]);
        for item in self
            .state
            .scan(CF_STREAM_META, start, keys::prefix_end(&prefix))
        {
            let seq = u64_at(&item?.0, prefix.len())?;
            if changed.contains_key(&seq) {
                continue;
            }
            lowest = Some(lowest.map_or(seq, |l: u64| l.min(seq)));
            break;
        }
        Ok(lowest)
    }

    fn dead_letter(
        &mut self,
        id: &GroupId,
        seq: u64,
        deliveries: u32,
        message: Message,
        dead_letter_topic: &str,
    ) -> Result<(), StorageError> {
        let mut metadata = message.metadata;
        metadata.insert("strata-dlq-topic".into(), id.topic.clone());
        metadata.insert("strata-dlq-sequence".into(), seq.to_string());
        metadata.insert("strata-dlq-group".into(), id.group.clone());
        metadata.insert("strata-dlq-deliveries".into(), deliveries.to_string());
        metadata.insert(
            "strata-dlq-timestamp-ms".into(),
            message.timestamp_ms.to_string(),
        );
        self.publish(
            &id.namespace,
            dead_letter_topic,
            NewMessage {
                message_id: String::new(),
                metadata,
                payload: message.payload,
            },
        )?;
        Ok(())
    }

    /// Writes what the command changed; returns the notices and the usage changes.
    fn finish(self) -> Result<(Vec<Notice>, Vec<UsageChange>), StorageError> {
        let cf = self.state.engine.cf(CF_STREAM_META);
        let mut usage = Vec::new();
        for ((ns, topic), value) in &self.topics {
            let key = topic_key(ns, topic);
            match value {
                Some(value) => self.batch.put_cf(cf, key, record::encode(value)),
                None => self.batch.delete_cf(cf, key),
            }
            let before = match self.originals.get(&(ns.clone(), topic.clone())) {
                Some(before) => *before,
                None => self.state.topic(ns, topic)?.map(|t| t.bytes),
            };
            let after = value.as_ref().map(|t| t.bytes);
            let count = |bytes: Option<u64>| i64::from(bytes.is_some());
            usage.push((ns.clone(), Quota::Topics, count(after) - count(before)));
            let bytes = after.unwrap_or(0) as i64 - before.unwrap_or(0) as i64;
            usage.push((ns.clone(), Quota::StreamBytes, bytes));
        }
        let mut notices = self.notices;
        let mut groups = self.groups;
        // Keep the scan floors below everything this entry writes.
        for (id, changes) in &self.pending {
            if let Some(Some(group)) = groups.get_mut(id) {
                for (seq, change) in changes {
                    if let Some(after) = &change.after {
                        group.deadline_floor_ms = group.deadline_floor_ms.min(after.deadline_ms);
                        group.pending_floor = group.pending_floor.min(*seq);
                    }
                }
            }
        }
        for (id, value) in &groups {
            let key = group_key(&id.namespace, &id.topic, &id.group);
            match value {
                Some(value) => self.batch.put_cf(cf, key, value.encode()),
                None => self.batch.delete_cf(cf, key),
            }
        }
        for (id, changes) in &self.pending {
            let pending_prefix = group_items_prefix(PENDING, &id.namespace, &id.topic, &id.group);
            let deadline_prefix = group_items_prefix(DEADLINE, &id.namespace, &id.topic, &id.group);
            let mut touched = false;
            for (seq, change) in changes {
                if change.before == change.after {
                    continue;
                }
                touched = true;
                if let Some(before) = &change.before {
                    self.batch.delete_cf(
                        cf,
                        with_u64s(deadline_prefix.clone(), &[before.deadline_ms, *seq]),
                    );
                }
                let key = with_u64s(pending_prefix.clone(), &[*seq]);
                match &change.after {
                    Some(after) => {
                        self.batch.put_cf(cf, key, record::encode(after));
                        self.batch.put_cf(
                            cf,
                            with_u64s(deadline_prefix.clone(), &[after.deadline_ms, *seq]),
                            [],
                        );
                    }
                    None => self.batch.delete_cf(cf, key),
                }
            }
            if touched {
                notices.insert(Notice {
                    namespace: id.namespace.clone(),
                    topic: id.topic.clone(),
                });
            }
        }
        Ok((notices.into_iter().collect(), usage))
    }
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

fn dedup_at_key(ns: &str, topic: &str, at: u64, id: &str) -> Vec<u8> {
    let mut key = with_u64s(
        kind_key(DEDUP_AT, &[ns.as_bytes(), topic.as_bytes()]),
        &[at],
    );
    keys::push_segment(&mut key, id.as_bytes());
    key
}
