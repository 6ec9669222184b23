//! The cluster's time: the leader's clock, carried by the log.
//!
//! Every command's time (`Request::time_ms`: TTLs, expiry, stream timestamps and retention,
//! token and dedup windows) is stamped by the leader that proposes it, never by the node a
//! client reached: a follower whose wall clock is wrong moves nothing. Stamps never go back,
//! within a leadership or across leader changes: a leader stamps at least the newest time it
//! has applied, plus the time elapsed since (by its monotonic clock), so a new leader whose
//! wall clock is behind its predecessor's continues from where the log left off.
//!
//! Reads that judge expiry use [`ClusterClock::now`] for the same reason: the newest applied
//! stamp plus the monotonic time since it was applied, so a skewed follower hides an expired
//! key when the leader's clock says so, not its own. A restarted node resumes from the newest
//! stamp it had applied (stored with the state), plus the time since it started: behind the
//! cluster by its downtime until the next stamp arrives (an expired key shows until the
//! leader's sweep removes it), never ahead. Only a node that never applied a stamp reads its
//! own wall clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct ClusterClock {
    /// Added to this node's wall clock: a test of skewed nodes sets it (debug builds only).
    skew_ms: AtomicI64,
    /// The newest stamp applied here, and when (by the monotonic clock).
    applied: Mutex<Option<(u64, Instant)>>,
    /// The newest stamp this node gave as leader.
    last_stamp: AtomicU64,
}

impl ClusterClock {
    pub fn new(skew_ms: i64) -> Self {
        Self {
            skew_ms: AtomicI64::new(skew_ms),
            applied: Mutex::new(None),
            last_stamp: AtomicU64::new(0),
        }
    }

    /// Sets the test skew of this node's wall clock.
    pub fn set_skew(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// This node's own wall clock (with the test skew), in ms since the Unix epoch.
    pub fn wall(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        wall.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Records a stamp that was applied here (in log order, so mostly rising).
    pub fn observe(&self, time_ms: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if applied.is_none_or(|(newest, _)| time_ms > newest) {
            *applied = Some((time_ms, Instant::now()));
        }
    }

    /// The newest stamp applied here, if any.
    pub fn newest_applied(&self) -> Option<u64> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(newest, _)| newest)
    }

    /// The cluster's time as this node knows it: the newest applied stamp plus the time since
    /// it was applied; this node's wall clock before any stamp was applied.
    pub fn now(&self) -> u64 {
        let applied = *self.applied.lock().unwrap_or_else(|p| p.into_inner());
        match applied {
            Some((newest, at)) => newest.saturating_add(at.elapsed().as_millis() as u64),
            None => self.wall(),
        }
    }

    /// A stamp for a command this node proposes as leader: its wall clock, but never behind
    /// what the log already holds ([`Self::now`]) nor behind its own previous stamp.
    pub fn stamp(&self) -> u64 {
        let candidate = self.wall().max(self.now());
        let previous = self.last_stamp.fetch_max(candidate, Ordering::SeqCst);
        candidate.max(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_go_back_across_a_leader_with_a_slow_clock() {
        // The old leader's clock was an hour ahead; the new one's is right.
        let old = ClusterClock::new(3_600_000);
        let first = old.stamp();
        let new = ClusterClock::new(0);
        new.observe(first);
        let next = new.stamp();
        assert!(next >= first, "{next} < {first}");
        assert!(new.stamp() >= next);
    }

    #[test]
    fn a_skewed_follower_reads_the_leaders_time() {
        let leader = ClusterClock::new(0);
        let follower = ClusterClock::new(-3_600_000);
        assert!(
            follower.now() + 3_000_000 < leader.wall(),
            "before any stamp: its own"
        );
        follower.observe(leader.stamp());
        let difference = leader.wall().abs_diff(follower.now());
        assert!(difference < 1_000, "{difference} ms apart");
        // Older stamps (a batch's earlier commands) never move it back.
        follower.observe(1);
        assert!(follower.now() + 1_000 > leader.wall());
    }
}
