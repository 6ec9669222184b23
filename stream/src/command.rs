//! Commands that change stream state, and their outcomes. They travel inside Raft log entries,
//! so their encoding is part of the on-disk format: add variants and fields at the end only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default window in which a repeated message id is recognised: two minutes.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 120_000;

/// A topic's limits. Zero means "no limit". When a limit is exceeded the oldest messages are
/// discarded, whether or not every group has acked them: limits win over consumers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub max_age_ms: u64,
    pub max_messages: u64,
    pub max_bytes: u64,
    /// How long a message id is remembered for deduplication; 0 turns deduplication off.
    pub dedup_window_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            max_age_ms: 0,
            max_messages: 0,
            max_bytes: 0,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

/// Where a new group starts. Resolved once, when the group is created, against the state at
/// that log index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the group is created.
    Latest,
    /// This sequence (or the oldest retained, if it is gone).
    Sequence(u64),
    /// The first message stamped at or after this time (ms since the Unix epoch).
    TimeMs(u64),
}

/// A group's settings, given by the consumer that creates it. Later members join the group as it
/// is; their settings do not change it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub start: StartAt,
    pub ack_wait_ms: u64,
    /// Deliveries after which an unacked message goes to the dead-letter topic; 0: unlimited.
    pub max_deliveries: u32,
    /// Topic (same namespace) that receives messages past `max_deliveries`.
    pub dead_letter_topic: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Publisher-chosen id for deduplication; empty: none.
    pub message_id: String,
    pub metadata: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// An ack or a nack of one delivered message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack(u64),
    /// Redeliver no sooner than `delay_ms` after this entry's time.
    Nack {
        sequence: u64,
        delay_ms: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StreamCommand {
    /// Appends messages to a topic (created with default limits if absent), in order.
    Publish {
        namespace: String,
        topic: String,
        messages: Vec<NewMessage>,
    },
    /// Creates a topic, or changes its limits. `must_exist`/`must_not_exist` make it an update
    /// or a create only.
    PutTopic {
        namespace: String,
        topic: String,
        config: TopicConfig,
        must_exist: bool,
        must_not_exist: bool,
    },
    /// Removes a topic with its messages and groups.
    DeleteTopic { namespace: String, topic: String },
    /// One consumer's step in a group: settle earlier deliveries, then claim up to `claim`
    /// messages (redeliveries first, then new ones). Creates the group (and topic) if absent.
    Group {
        namespace: String,
        topic: String,
        group: String,
        /// Who claims, for `info` and logs.
        consumer: String,
        config: GroupConfig,
        settle: Vec<Settle>,
        claim: u32,
        /// Claimed messages are acked at once (at most once after hand-off).
        auto_ack: bool,
    },
    /// Applies a topic's limits at this entry's time (age, and any backlog left after a limit
    /// was lowered), and forgets expired dedup ids. Proposed by the leader's retention sweep.
    Retain { namespace: String, topic: String },
    /// Removes a consumer group.
    DeleteGroup {
        namespace: String,
        topic: String,
        group: String,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub timestamp_ms: u64,
    /// The message id was seen within the dedup window: nothing new was stored and `sequence`
    /// is the original's.
    pub duplicate: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    Done,
    /// Acked before (or discarded by retention or dead-lettered): nothing to do.
    AlreadySettled,
    /// The group never delivered this sequence.
    NotDelivered,
    /// A nack for a message that is not pending.
    NotPending,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub sequence: u64,
    /// 1 on first delivery.
    pub deliveries: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupStep {
    pub settled: Vec<(u64, SettleOutcome)>,
    pub claimed: Vec<Claimed>,
    /// Messages moved to the dead-letter topic by this step.
    pub dead_lettered: Vec<u64>,
    /// The earliest redelivery deadline still pending in the group, if any.
    pub next_deadline_ms: Option<u64>,
}

/// Why a command changed nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    TopicNotFound,
    TopicExists,
    GroupNotFound,
    /// A message is larger than the topic's byte limit; nothing was published.
    MessageTooLarge {
        max_bytes: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StreamResponse {
    Published {
        revision: u64,
        results: Vec<Published>,
    },
    TopicPut {
        revision: u64,
        created: bool,
    },
    Deleted {
        revision: u64,
    },
    Group {
        revision: u64,
        step: GroupStep,
    },
    Retained {
        revision: u64,
        removed: u64,
    },
    Failed(StreamFailure),
}

impl StreamCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            StreamCommand::Publish { .. } => "publish",
            StreamCommand::PutTopic { .. } => "put_topic",
            StreamCommand::DeleteTopic { .. } => "delete_topic",
            StreamCommand::Group { .. } => "group",
            StreamCommand::Retain { .. } => "retain",
            StreamCommand::DeleteGroup { .. } => "delete_group",
        }
    }
}
