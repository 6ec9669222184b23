//! Group commit for writes: the commands that wait while earlier proposals are in flight go
//! into the next proposal together, so a burst of N concurrent writes costs about one Raft
//! entry (and one fsync on each node), not N.
//!
//! An idle batcher proposes at once: a lone writer waits for nothing but its own commit. Under
//! load, at most `in_flight` proposals are outstanding; the rest of the callers queue, and each
//! free slot takes everything queued (up to `max_commands` and `max_bytes`). Callers that gave
//! up before their turn are not proposed (they reported an unknown outcome already, and an
//! unproposed command is certainly not applied).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// How a batcher packs and pipelines.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most commands in one proposal.
    pub max_commands: usize,
    /// A proposal stops growing at this many bytes (by the caller's measure); a single
    /// command over it goes alone.
    pub max_bytes: usize,
    /// Proposals outstanding at once.
    pub in_flight: usize,
    /// Callers queued at most; further callers wait to be queued (backpressure).
    pub queue: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_commands: 1_024,
            max_bytes: 512 << 10,
            in_flight: 4,
            queue: 65_536,
        }
    }
}

struct Waiting<C, R> {
    command: C,
    bytes: usize,
    reply: oneshot::Sender<R>,
}

/// Counts since start: `commands` were proposed in `proposals`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub proposals: u64,
    pub commands: u64,
}

#[derive(Default)]
struct Counts {
    proposals: AtomicU64,
    commands: AtomicU64,
}

/// A handle to the batching task; cloning shares it.
pub struct Batcher<C, R> {
    queue: mpsc::Sender<Waiting<C, R>>,
    counts: Arc<Counts>,
}

impl<C, R> Clone for Batcher<C, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            counts: self.counts.clone(),
        }
    }
}

impl<C, R> Batcher<C, R>
where
    C: Send + 'static,
    R: Send + 'static,
{
    /// Starts the task. `propose` commits one batch and answers each command in order (one
    /// answer per command). The task ends when every handle is dropped.
    pub fn spawn<F, Fut>(limits: BatchLimits, propose: F) -> Self
    where
        F: Fn(Vec<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        assert!(limits.max_commands > 0 && limits.in_flight > 0 && limits.queue > 0);
        let (queue, receiver) = mpsc::channel(limits.queue);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(receiver, limits, Arc::new(propose), counts.clone()));
        Self { queue, counts }
    }

    /// Proposes `command` (`bytes`: its size, for the batch bound) with whatever else is
    /// waiting, and returns its answer; `None` if the task stopped or the proposal was dropped
    /// without an answer (its outcome is unknown).
    pub async fn submit(&self, command: C, bytes: usize) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting {
                command,
                bytes,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    pub fn counts(&self) -> BatchCounts {
        BatchCounts {
            proposals: self.counts.proposals.load(Ordering::Relaxed),
            commands: self.counts.commands.load(Ordering::Relaxed),
        }
    }
}

async fn run<C, R, F, Fut>(
    mut receiver: mpsc::Receiver<Waiting<C, R>>,
    limits: BatchLimits,
    propose: Arc<F>,
    counts: Arc<Counts>,
) where
    C: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    // A command that did not fit the previous batch starts the next one.
    let mut carried: Option<Waiting<C, R>> = None;
    loop {
        let first = match carried.take() {
            Some(waiting) => waiting,
            None => match receiver.recv().await {
                Some(waiting) => waiting,
                None => return,
            },
        };
        // Wait for a free slot before packing: whoever arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < limits.max_commands {
            match receiver.try_recv() {
                Ok(waiting) if bytes.saturating_add(waiting.bytes) > limits.max_bytes => {
                    carried = Some(waiting);
                    break;
                }
                Ok(waiting) => {
                    bytes += waiting.bytes;
                    batch.push(waiting);
                }
                Err(_) => break,
            }
        }
        batch.retain(|waiting| !waiting.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        counts.proposals.fetch_add(1, Ordering::Relaxed);
        counts
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (commands, replies): (Vec<C>, Vec<oneshot::Sender<R>>) = batch
            .into_iter()
            .map(|waiting| (waiting.command, waiting.reply))
            .unzip();
        let proposal = propose(commands);
        tokio::spawn(async move {
            let answers = proposal.await;
            drop(slot);
            // A proposer that answers fewer commands leaves the rest unanswered: their callers
            // see an unknown outcome, never another command's answer.
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::until;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Each proposal's commands, in order.
    type Proposals = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A batcher whose proposals record their commands and end when the test says so.
    fn recording(limits: BatchLimits) -> (Batcher<u32, u32>, Proposals, Arc<Semaphore>) {
        let proposals = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (seen, task_gate) = (proposals.clone(), gate.clone());
        let batcher = Batcher::spawn(limits, move |commands: Vec<u32>| {
            seen.lock().unwrap().push(commands.clone());
            let gate = task_gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                commands.iter().map(|c| c * 10).collect()
            }
        });
        (batcher, proposals, gate)
    }

    fn limits(in_flight: usize) -> BatchLimits {
        BatchLimits {
            max_commands: 3,
            max_bytes: 100,
            in_flight,
            queue: 64,
        }
    }

    #[tokio::test]
    async fn an_idle_batcher_proposes_at_once_and_a_busy_one_packs_what_waits() {
        let (batcher, proposals, gate) = recording(limits(1));
        let submit = |n: u32, bytes: usize| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(n, bytes).await })
        };
        let lone = submit(1, 10);
        until(|| proposals.lock().unwrap().len() == 1).await;
        // The only slot is busy: these wait, then go together, at most 3 and 100 bytes a batch.
        let waiting: Vec<_> = [(2, 10), (3, 10), (4, 10), (5, 10), (6, 95), (7, 10)]
            .into_iter()
            .map(|(n, bytes)| submit(n, bytes))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(proposals.lock().unwrap().len(), 1, "one slot, one proposal");
        gate.add_permits(10);
        assert_eq!(lone.await.unwrap(), Some(10));
        let answers: Vec<_> = futures::future::join_all(waiting)
            .await
            .into_iter()
            .map(|a| a.unwrap())
            .collect();
        assert_eq!(
            answers,
            [2, 3, 4, 5, 6, 7].map(|n| Some(n * 10)).to_vec(),
            "each caller gets its own command's answer"
        );
        assert_eq!(
            *proposals.lock().unwrap(),
            vec![vec![1], vec![2, 3, 4], vec![5], vec![6], vec![7]],
            "batches keep arrival order and their bounds (3 commands; 100 bytes)"
        );
        assert_eq!(
            batcher.counts(),
            BatchCounts {
                proposals: 5,
                commands: 7
            }
        );
    }

    #[tokio::test]
    async fn proposals_pipeline_up_to_the_in_flight_bound() {
        let (batcher, proposals, gate) = recording(limits(2));
        let mut tasks = Vec::new();
        for n in 0..3 {
            let task = {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(n, 1).await })
            };
            tasks.push(task);
            if n < 2 {
                until(|| proposals.lock().unwrap().len() == n as usize + 1).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            proposals.lock().unwrap().len(),
            2,
            "two slots: the third waits"
        );
        gate.add_permits(3);
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        assert_eq!(*proposals.lock().unwrap(), vec![vec![0], vec![1], vec![2]]);
    }

    #[tokio::test]
    async fn callers_that_gave_up_are_not_proposed() {
        let (batcher, proposals, gate) = recording(limits(1));
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1, 1).await }
        });
        until(|| proposals.lock().unwrap().len() == 1).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), batcher.submit(2, 1)).await;
        assert!(gave_up.is_err());
        gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Some(10));
        assert_eq!(batcher.submit(3, 1).await, Some(30));
        assert_eq!(*proposals.lock().unwrap(), vec![vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_unknown() {
        let batcher = Batcher::spawn(limits(1), |commands: Vec<u32>| async move {
            commands.into_iter().take(1).collect::<Vec<u32>>()
        });
        let (a, b) = tokio::join!(batcher.submit(1, 1), batcher.submit(2, 1));
        // Either both went in one proposal (one answered) or in two (both answered); a caller
        // never gets another's answer.
        assert_eq!(a, Some(1));
        assert!(b.is_none() || b == Some(2), "{b:?}");
    }
}
