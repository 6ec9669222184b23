//! Group commit for quorum checks: every caller that waits while a round is in flight shares the
//! next round, so a burst of N linearizable reads costs one read-index round, not N.
//!
//! The ordering rule that makes sharing safe: a round starts only after every caller it answers
//! has asked. A caller that arrives while a round is running is not answered by it (that round
//! may have fixed its read index before the caller's request existed); it waits for the next.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Callers waiting for the next round, at most; more wait to be queued (backpressure).
pub(crate) const ROUND_QUEUE: usize = 65_536;

type Waiter<C, T> = (C, oneshot::Sender<T>);

/// A task that runs one round at a time for everyone waiting. `C` is what a round needs (the
/// first waiter's is used, so the task holds nothing between rounds and ends once every handle
/// is dropped); `T` is the round's answer, cloned to each waiter.
pub(crate) struct Rounds<C, T> {
    requests: mpsc::Sender<Waiter<C, T>>,
    counts: Arc<Counts>,
}

impl<C, T> Clone for Rounds<C, T> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            counts: self.counts.clone(),
        }
    }
}

#[derive(Default)]
struct Counts {
    rounds: AtomicU64,
    waiters: AtomicU64,
}

/// How much sharing happened: `waiters` callers were answered by `rounds` rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundCounts {
    pub rounds: u64,
    pub waiters: u64,
}

impl<C, T> Rounds<C, T>
where
    C: Send + 'static,
    T: Clone + Send + 'static,
{
    /// Starts the task. `round` runs once per round with the first waiter's context.
    pub(crate) fn spawn<F, Fut>(queue: usize, mut round: F) -> Self
    where
        F: FnMut(C) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (requests, mut receiver) = mpsc::channel::<Waiter<C, T>>(queue);
        let counts = Arc::new(Counts::default());
        let task_counts = counts.clone();
        tokio::spawn(async move {
            while let Some((context, first)) = receiver.recv().await {
                // Everyone who has asked by now; later callers wait for the next round.
                let mut waiting = vec![first];
                while let Ok((_, more)) = receiver.try_recv() {
                    waiting.push(more);
                }
                // Callers that gave up (timed out, disconnected) need no round.
                waiting.retain(|waiter| !waiter.is_closed());
                if waiting.is_empty() {
                    continue;
                }
                let answer = round(context).await;
                task_counts.rounds.fetch_add(1, Ordering::Relaxed);
                task_counts
                    .waiters
                    .fetch_add(waiting.len() as u64, Ordering::Relaxed);
                for waiter in waiting {
                    let _ = waiter.send(answer.clone());
                }
            }
        });
        Self { requests, counts }
    }

    /// Waits for the next round to start and finish, and returns its answer; `None` if the
    /// task has stopped.
    pub(crate) async fn join(&self, context: C) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        self.requests.send((context, answer)).await.ok()?;
        answered.await.ok()
    }

    pub(crate) fn counts(&self) -> RoundCounts {
        RoundCounts {
            rounds: self.counts.rounds.load(Ordering::Relaxed),
            waiters: self.counts.waiters.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::until;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A round that reports how many rounds had started before it, and waits for a permit, so
    /// the test decides when each round ends.
    fn gated() -> (Rounds<(), u64>, Arc<Semaphore>, Arc<AtomicU64>) {
        let gate = Arc::new(Semaphore::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let (task_gate, task_started) = (gate.clone(), started.clone());
        let rounds = Rounds::spawn(16, move |()| {
            let (gate, started) = (task_gate.clone(), task_started.clone());
            async move {
                let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                gate.acquire().await.expect("gate open").forget();
                number
            }
        });
        (rounds, gate, started)
    }

    #[tokio::test]
    async fn a_caller_that_arrives_during_a_round_waits_for_the_next() {
        let (rounds, gate, started) = gated();
        let first = tokio::spawn({
            let rounds = rounds.clone();
            async move { rounds.join(()).await }
        });
        until(|| started.load(Ordering::SeqCst) == 1).await;
        // Round 1 is in flight: these three arrive during it.
        let late: Vec<_> = (0..3)
            .map(|_| {
                let rounds = rounds.clone();
                tokio::spawn(async move { rounds.join(()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "no second round while one runs"
        );
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(1));
        until(|| started.load(Ordering::SeqCst) == 2).await;
        gate.add_permits(1);
        for caller in late {
            assert_eq!(
                caller.await.unwrap(),
                Some(2),
                "answered by the round after they asked"
            );
        }
        assert_eq!(
            rounds.counts(),
            RoundCounts {
                rounds: 2,
                waiters: 4
            }
        );
    }

    #[tokio::test]
    async fn callers_that_gave_up_cost_no_round() {
        let (rounds, gate, started) = gated();
        let first = tokio::spawn({
            let rounds = rounds.clone();
            async move { rounds.join(()).await }
        });
        until(|| started.load(Ordering::SeqCst) == 1).await;
        // Asks during round 1, then gives up before round 2 could start.
        let impatient = tokio::time::timeout(Duration::from_millis(10), rounds.join(())).await;
        assert!(impatient.is_err());
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "nobody was waiting for a second round"
        );
        gate.add_permits(1);
        assert_eq!(rounds.join(()).await, Some(2));
    }

    #[tokio::test]
    async fn a_round_keeps_no_context_afterwards() {
        let dropped = Arc::new(());
        let held = dropped.clone();
        let rounds: Rounds<Arc<()>, ()> = Rounds::spawn(4, |_context| async {});
        rounds.join(held).await.expect("a round");
        // The round's context was released with the round: the task holds no node between
        // rounds, so a node's handles (and its storage) can all be dropped.
        until(|| Arc::strong_count(&dropped) == 1).await;
    }
}
