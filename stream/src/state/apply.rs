//! The changes one stream command makes ([`Apply`]), read back by the command itself before
//! they are written: topics, groups, pending deliveries, dedup records and the notices and
//! quota usage they leave.

use std::collections::BTreeMap;

use strata_storage::engine::{CF_STREAM_META, CF_STREAM_MSG};
use strata_storage::quota::Quota;
use strata_storage::{keys, StorageError};

use super::{
    group_items_prefix, group_key, kind_key, message_key, name_of, sequence_at_time, topic_key,
    topic_prefix, u64_at, with_u64s, Apply, GroupId, Notice, PendingChange, UsageChange, DEADLINE,
    DEDUP, DEDUP_AT, GROUP, MAX_REMOVALS_PER_ENTRY, PENDING,
};
use crate::command::*;
use crate::record::{self, Dedup, GroupRecord, Message, Pending, Topic};

impl Apply<'_> {
    pub(super) fn topic(&mut self, ns: &str, topic: &str) -> Result<Option<Topic>, StorageError> {
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

    pub(super) fn set_topic(&mut self, ns: &str, topic: &str, value: Topic) {
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

    pub(super) fn group(&mut self, id: &GroupId) -> Result<Option<GroupRecord>, StorageError> {
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

    pub(super) fn publish(
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
    pub(super) fn enforce_limits(
        &mut self,
        ns: &str,
        topic: &str,
        budget: u64,
    ) -> Result<u64, StorageError> {
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
    pub(super) fn trim_dedup(
        &mut self,
        ns: &str,
        topic: &str,
        budget: usize,
    ) -> Result<(), StorageError> {
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

    pub(super) fn delete_topic(&mut self, ns: &str, topic: &str) {
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

    pub(super) fn delete_group(&mut self, id: &GroupId) {
        let cf = self.state.engine.cf(CF_STREAM_META);
        for kind in [PENDING, DEADLINE] {
            let start = group_items_prefix(kind, &id.namespace, &id.topic, &id.group);
            let end = keys::prefix_end(&start).expect("a key prefix ends in 0x01");
            self.batch.delete_range_cf(cf, start, end);
        }
        self.groups.insert(id.clone(), None);
    }

    pub(super) fn group_step(
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
    pub(super) fn finish(self) -> Result<(Vec<Notice>, Vec<UsageChange>), StorageError> {
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

fn dedup_at_key(ns: &str, topic: &str, at: u64, id: &str) -> Vec<u8> {
    let mut key = with_u64s(
        kind_key(DEDUP_AT, &[ns.as_bytes(), topic.as_bytes()]),
        &[at],
    );
    keys::push_segment(&mut key, id.as_bytes());
    key
}
