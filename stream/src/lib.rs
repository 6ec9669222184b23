//! Event streams: one totally ordered log of messages per (namespace, topic), durable consumer
//! groups with at-least-once delivery, dead-lettering, deduplication by message id, and
//! retention by age, count and bytes.
//!
//! Owns: how a [`StreamCommand`] changes stream state (deterministically, from the state, the
//! log index and the entry's time) and how that state is read.
//!
//! Must not: know about Raft, the network, gRPC or a clock. Every time it uses comes from the
//! command's log entry, which the leader stamped.
//!
//! Delivery model: a consumer group's state is its delivery cursor (`next_seq`: the first
//! message never delivered) and its pending deliveries (delivered, not acked, each with a
//! delivery count and a redelivery deadline). Every message below the cursor that is not
//! pending is acked, so the acked floor is the lowest pending sequence (or the cursor) minus
//! one. Consumers claim messages through the log ([`StreamCommand::Group`]), so two members of a
//! group never hold the same message at once, whichever nodes they are attached to.

mod command;
mod record;
mod state;

pub use command::*;
pub use record::{GroupActivity, GroupRecord, Message, Topic};
pub use state::{
    GroupProgress, Notice, ReadPage, StreamState, TopicDepth, TopicInfo, MAX_REMOVALS_PER_ENTRY,
};
