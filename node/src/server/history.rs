//! The one watch pump, for every watcher (key-value, registry, config, Micro's registry): it
//! feeds one watcher history from a revision first, then live events, falling back to history
//! whenever the live buffer overflowed or a snapshot was installed. Each revision is examined
//! once, in order; where the events come from is its [`Feed`]'s business, what a watcher sees
//! of them its [`Follower`]'s. Progress goes out after a whole interval in which the watcher
//! was sent nothing, however busy the cluster is with events it filters out, and only from a
//! node that proved it is current.

use std::sync::Arc;
use std::time::Duration;

use strata_raft::RaftNode;
use strata_registry::RegistryEvent;
use strata_storage::kv::{Event, RevisionEvents};
use strata_storage::StorageError;
use tokio::sync::broadcast;
use tonic::Status;

use super::status;

/// Revisions read from history per step while a watcher catches up.
const HISTORY_BATCH: usize = 256;
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Up to a batch of stored revisions with their events, and the oldest revision still stored.
pub type HistoryPage<E> = (Vec<(u64, Vec<E>)>, u64);

/// Where a subsystem's events come from: its live broadcast and its stored history.
pub trait Feed: Send + 'static {
    type Event: Send + Sync + 'static;
    /// What the live broadcast carries: one revision's events. Empty events mean a snapshot
    /// was installed: look in history.
    type Item: Send + Sync + 'static;
    fn parts(item: &Self::Item) -> (u64, &[Self::Event]);
    /// Up to `batch` stored revisions from `next`.
    fn history(
        node: &RaftNode,
        next: u64,
        batch: usize,
    ) -> Result<HistoryPage<Self::Event>, StorageError>;
}

/// Registry and config events (`registry_history`).
pub struct RegistryFeed;

impl Feed for RegistryFeed {
    type Event = RegistryEvent;
    type Item = (u64, Vec<RegistryEvent>);
    fn parts(item: &Self::Item) -> (u64, &[RegistryEvent]) {
        (item.0, &item.1)
    }
    fn history(
        node: &RaftNode,
        next: u64,
        batch: usize,
    ) -> Result<HistoryPage<RegistryEvent>, StorageError> {
        let page = node.registry().history(next, batch)?;
        Ok((page.revisions, page.floor))
    }
}

/// Key-value events (`kv_history`).
pub struct KvFeed;

impl Feed for KvFeed {
    type Event = Event;
    type Item = RevisionEvents;
    fn parts(item: &Self::Item) -> (u64, &[Event]) {
        (item.revision, &item.events)
    }
    fn history(
        node: &RaftNode,
        next: u64,
        batch: usize,
    ) -> Result<HistoryPage<Event>, StorageError> {
        let page = node.kv().history(next, batch)?;
        let revisions = page
            .revisions
            .into_iter()
            .map(|revision| (revision.revision, revision.events))
            .collect();
        Ok((revisions, page.floor))
    }
}

pub type Live<F> = broadcast::Receiver<Arc<<<F as Follower>::Feed as Feed>::Item>>;

/// What one watcher makes of the events.
pub trait Follower: Send + 'static {
    type Feed: Feed;
    type Response: Send + 'static;
    /// Responses for one revision's events (none when nothing concerns this watcher).
    fn render(
        &mut self,
        revision: u64,
        events: &[<Self::Feed as Feed>::Event],
    ) -> Result<Vec<Self::Response>, Status>;
    /// A message saying everything up to `revision` was examined; `None` for watchers whose
    /// protocol has no such message (Micro's), which are still ended when their node turns
    /// out stale.
    fn progress(&self, revision: u64) -> Option<Self::Response>;
}

/// Before a long-lived stream (a watch's progress, a consume stream's heartbeat) tells its
/// client "nothing happened up to here", its node proves that it is still current: a member
/// whose applied state reaches a read index a leader confirmed with a quorum, within `bound`
/// (at least 1 s). Returns the applied revision; a node that cannot (removed from the cluster
/// and never told, cut off, left behind) gets UNAVAILABLE `stale_node`, which ends the stream
/// so that its client goes to another node instead of waiting on this one in silence.
pub async fn confirm_current(node: &RaftNode, bound: Duration) -> Result<u64, Status> {
    node.confirm_serving(bound.max(Duration::from_secs(1)))
        .await
        .map_err(|error| {
            tracing::info!(%error, "ending a stream this node can no longer serve");
            status::unavailable(
                "stale_node",
                format!(
                    "this node can no longer serve the stream ({error}); open it again through \
                     another node (a watch from its last revision; a group resumes from its \
                     acked floor)"
                ),
            )
        })
}

pub fn progress_interval(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_PROGRESS_INTERVAL,
        ms => Duration::from_millis(ms.into()).max(MIN_PROGRESS_INTERVAL),
    }
}

/// The first revision to deliver: `start`, or after what is applied now (0). Fails when
/// history before it was trimmed.
pub fn start_revision(node: &RaftNode, start: u64) -> Result<u64, Status> {
    let start = match start {
        0 => node.applied_revision() + 1,
        revision => revision,
    };
    let floor = node.registry().history_floor().map_err(status::storage)?;
    if start < floor {
        return Err(status::compacted(start, floor));
    }
    Ok(start)
}

pub struct Pump<F: Follower> {
    pub node: RaftNode,
    pub follower: F,
    /// The first revision not yet examined.
    pub next: u64,
    pub sender: super::outbox::Outbox<F::Response>,
    pub progress: Duration,
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl<F: Follower> Pump<F> {
    /// `live` must have been subscribed before the start revision was chosen.
    pub async fn run(mut self, mut live: Live<F>) {
        if !self.catch_up().await {
            return;
        }
        let mut stopping = self.stopping.clone();
        let client_side = self.sender.client_gone();
        // Progress goes out when this watcher was sent nothing for a whole interval, however
        // busy the registry is with events it filters out.
        let mut ticks = tokio::time::interval(self.progress);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        let mut sent_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    // An empty list: a snapshot was installed; history has what happened.
                    Ok(item) if F::Feed::parts(&item).1.is_empty() => {
                        if !self.catch_up().await {
                            return;
                        }
                    }
                    Ok(item) => {
                        let (revision, events) = F::Feed::parts(&item);
                        if revision >= self.next {
                            match self.deliver(revision, events).await {
                                Delivered::Closed => return,
                                Delivered::Some => sent_at = tokio::time::Instant::now(),
                                Delivered::Nothing => {}
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !self.catch_up().await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticks.tick() => {
                    if sent_at.elapsed() < self.progress {
                        continue;
                    }
                    let applied = match confirm_current(&self.node, self.progress).await {
                        Ok(applied) => applied,
                        Err(status) => {
                            let _ = self.sender.send(Err(status)).await;
                            return;
                        }
                    };
                    sent_at = tokio::time::Instant::now();
                    let seen = (self.next - 1).min(applied);
                    if let Some(progress) = self.follower.progress(seen) {
                        if self.sender.send(Ok(progress)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = client_side.wait() => return,
                _ = stopped(&mut stopping) => {
                    let status = Status::unavailable(
                        "the server is shutting down; resume the watch from the last revision seen",
                    );
                    let _ = self.sender.send(Err(status)).await;
                    return;
                }
            }
        }
    }

    /// Delivers history from `next` to the newest stored revision (read in pages on a
    /// blocking thread). False when the watch ends.
    async fn catch_up(&mut self) -> bool {
        loop {
            let (node, next) = (self.node.clone(), self.next);
            let page = status::blocking(move || F::Feed::history(&node, next, HISTORY_BATCH)).await;
            let (revisions, floor) = match page {
                Ok(page) => page,
                Err(status) => {
                    let _ = self.sender.send(Err(status)).await;
                    return false;
                }
            };
            if self.next < floor {
                let _ = self
                    .sender
                    .send(Err(status::compacted(self.next, floor)))
                    .await;
                return false;
            }
            let done = revisions.len() < HISTORY_BATCH;
            for (revision, events) in &revisions {
                if let Delivered::Closed = self.deliver(*revision, events).await {
                    return false;
                }
            }
            if done {
                return true;
            }
        }
    }

    async fn deliver(&mut self, revision: u64, events: &[<F::Feed as Feed>::Event]) -> Delivered {
        self.next = revision + 1;
        match self.follower.render(revision, events) {
            Ok(responses) if responses.is_empty() => Delivered::Nothing,
            Ok(responses) => {
                for response in responses {
                    if self.sender.send(Ok(response)).await.is_err() {
                        return Delivered::Closed;
                    }
                }
                Delivered::Some
            }
            Err(status) => {
                let _ = self.sender.send(Err(status)).await;
                Delivered::Closed
            }
        }
    }
}

/// What delivering one revision did.
enum Delivered {
    /// Nothing concerned this watcher.
    Nothing,
    Some,
    /// The watch ended (the client went away, or an error was sent).
    Closed,
}

/// Completes once the server is stopping (the guard `wait_for` returns is not `Send`).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}
