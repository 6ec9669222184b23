//! What streams store, and how. Every value starts with a format byte; the rest is bincode.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_storage::StorageError;

use crate::command::{GroupConfig, TopicConfig};

const FORMAT_V1: u8 = 1;
/// Group records with their activity ([`GroupActivity`]); format 1 ones read with none.
const FORMAT_V2: u8 = 2;
/// Group records whose activity also counts redeliveries and dead letters; format 2 ones
/// read with those at 0.
const FORMAT_V3: u8 = 3;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    bincode::serialize_into(&mut out, value).expect("serialising into a Vec cannot fail");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => Ok(bincode::deserialize(rest)?),
        Some((format, _)) => Err(StorageError::Corrupt(format!(
            "stream record of unknown format {format}"
        ))),
        None => Err(StorageError::Corrupt("empty stream record".into())),
    }
}

/// A stored message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The log entry's time, raised if needed so that timestamps never decrease along a topic.
    pub timestamp_ms: u64,
    pub message_id: String,
    pub metadata: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Message {
    /// What the message counts against a topic's byte limit.
    pub fn size(&self) -> u64 {
        counted_size(&self.payload, &self.metadata, &self.message_id)
    }
}

/// Payload, metadata and id bytes: what a message counts against a topic's byte limit.
pub(crate) fn counted_size(
    payload: &[u8],
    metadata: &BTreeMap<String, String>,
    message_id: &str,
) -> u64 {
    let metadata: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    (payload.len() + metadata + message_id.len()) as u64
}

/// A topic: its limits and where its messages are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub config: TopicConfig,
    /// Oldest retained sequence; `last_seq + 1` when the topic is empty.
    pub first_seq: u64,
    /// Last sequence assigned; 0 before the first message.
    pub last_seq: u64,
    /// Total size (see [`Message::size`]) of retained messages.
    pub bytes: u64,
    /// The topic's clock: the latest time of a message or of a retention sweep. The next
    /// message is never stamped earlier, and dedup windows are judged by it.
    pub last_timestamp_ms: u64,
    pub created_ms: u64,
    /// No remembered dedup id is older than this: scans of the dedup expiry index start here
    /// instead of walking the deletion markers of every id already forgotten.
    pub dedup_floor_ms: u64,
}

impl Topic {
    pub fn new(config: TopicConfig, created_ms: u64) -> Self {
        Self {
            config,
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            last_timestamp_ms: 0,
            created_ms,
            dedup_floor_ms: 0,
        }
    }

    pub fn messages(&self) -> u64 {
        self.last_seq + 1 - self.first_seq
    }
}

/// A durable consumer group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub config: GroupConfig,
    /// The first sequence never delivered to the group.
    pub next_seq: u64,
    /// Delivered and not yet acked.
    pub pending: u64,
    pub created_ms: u64,
    /// No pending delivery has an earlier deadline, and none a lower sequence. Scans of the
    /// group's pending and deadline keys start here, so they do not walk the deletion markers
    /// that every ack leaves behind (a scan from the front slowed with every message acked).
    pub deadline_floor_ms: u64,
    pub pending_floor: u64,
    pub activity: GroupActivity,
}

/// What a group has done lately: how an operator tells a stalled group (lag grows, nothing
/// delivered) from an idle one. Times are the entries' (ms since the Unix epoch; 0: never).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupActivity {
    pub last_delivery_ms: u64,
    pub last_ack_ms: u64,
    /// Deliveries (redeliveries included) and acks since the group was created.
    pub delivered: u64,
    pub acked: u64,
    /// Deliveries of a message delivered before (its ack wait ran out, or it was nacked), and
    /// messages moved to the dead-letter topic, since format 3 (before: 0).
    pub redelivered: u64,
    pub dead_lettered: u64,
}

/// A group record as format 2 stored it (its activity without redeliveries).
#[derive(Deserialize)]
struct GroupRecordV2 {
    config: GroupConfig,
    next_seq: u64,
    pending: u64,
    created_ms: u64,
    deadline_floor_ms: u64,
    pending_floor: u64,
    activity: GroupActivityV2,
}

#[derive(Deserialize, Default)]
struct GroupActivityV2 {
    last_delivery_ms: u64,
    last_ack_ms: u64,
    delivered: u64,
    acked: u64,
}

impl From<GroupRecordV2> for GroupRecord {
    fn from(old: GroupRecordV2) -> Self {
        Self {
            config: old.config,
            next_seq: old.next_seq,
            pending: old.pending,
            created_ms: old.created_ms,
            deadline_floor_ms: old.deadline_floor_ms,
            pending_floor: old.pending_floor,
            activity: GroupActivity {
                last_delivery_ms: old.activity.last_delivery_ms,
                last_ack_ms: old.activity.last_ack_ms,
                delivered: old.activity.delivered,
                acked: old.activity.acked,
                redelivered: 0,
                dead_lettered: 0,
            },
        }
    }
}

/// A group record as format 1 stored it (before its activity was kept).
#[derive(Deserialize)]
struct GroupRecordV1 {
    config: GroupConfig,
    next_seq: u64,
    pending: u64,
    created_ms: u64,
    deadline_floor_ms: u64,
    pending_floor: u64,
}

impl GroupRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V3];
        bincode::serialize_into(&mut out, self).expect("serialising into a Vec cannot fail");
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        match bytes.split_first() {
            Some((&FORMAT_V3, rest)) => Ok(bincode::deserialize(rest)?),
            Some((&FORMAT_V2, rest)) => Ok(bincode::deserialize::<GroupRecordV2>(rest)?.into()),
            Some((&FORMAT_V1, rest)) => {
                let old: GroupRecordV1 = bincode::deserialize(rest)?;
                Ok(GroupRecordV2 {
                    config: old.config,
                    next_seq: old.next_seq,
                    pending: old.pending,
                    created_ms: old.created_ms,
                    deadline_floor_ms: old.deadline_floor_ms,
                    pending_floor: old.pending_floor,
                    activity: GroupActivityV2::default(),
                }
                .into())
            }
            Some((format, _)) => Err(StorageError::Corrupt(format!(
                "group record of unknown format {format}"
            ))),
            None => Err(StorageError::Corrupt("empty group record".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::StartAt;

    #[test]
    fn a_format_1_group_record_reads_with_no_activity() {
        let config = GroupConfig {
            start: StartAt::Earliest,
            ack_wait_ms: 30_000,
            max_deliveries: 0,
            dead_letter_topic: "t.dlq".into(),
        };
        #[derive(Serialize)]
        struct V1<'a>(&'a GroupConfig, u64, u64, u64, u64, u64);
        let old = encode(&V1(&config, 7, 2, 1_000, 5_000, 5));
        let read = GroupRecord::decode(&old).unwrap();
        assert_eq!(read.next_seq, 7);
        assert_eq!(read.pending, 2);
        assert_eq!(read.created_ms, 1_000);
        assert_eq!((read.deadline_floor_ms, read.pending_floor), (5_000, 5));
        assert_eq!(read.activity, GroupActivity::default());
        let mut newer = read.clone();
        newer.activity.delivered = 3;
        newer.activity.last_delivery_ms = 9;
        newer.activity.redelivered = 1;
        assert_eq!(GroupRecord::decode(&newer.encode()).unwrap(), newer);
        // Format 2: the activity without redeliveries and dead letters.
        #[derive(Serialize)]
        struct V2<'a>(
            &'a GroupConfig,
            u64,
            u64,
            u64,
            u64,
            u64,
            (u64, u64, u64, u64),
        );
        let mut v2 = vec![FORMAT_V2];
        bincode::serialize_into(&mut v2, &V2(&config, 7, 2, 1_000, 5_000, 5, (9, 11, 3, 1)))
            .unwrap();
        let read = GroupRecord::decode(&v2).unwrap();
        assert_eq!(
            read.activity,
            GroupActivity {
                last_delivery_ms: 9,
                last_ack_ms: 11,
                delivered: 3,
                acked: 1,
                redelivered: 0,
                dead_lettered: 0,
            }
        );
        assert!(GroupRecord::decode(&[9, 1, 2]).is_err());
    }
}

/// One delivered, unacked message of a group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub deliveries: u32,
    /// It may be delivered again from this time on.
    pub deadline_ms: u64,
    pub consumer: String,
}

/// A remembered message id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dedup {
    pub sequence: u64,
    pub timestamp_ms: u64,
}
