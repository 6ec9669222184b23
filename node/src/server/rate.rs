//! The `requests_per_second` quota: a token bucket per namespace on each node, refilled at the
//! namespace's limit and holding at most one second's worth (a burst of the limit). It is not
//! replicated: a client that spreads its calls over N nodes gets up to N times the rate, as
//! with any per-node limiter (etcd and NATS limit per server too).
//!
//! Management calls (cluster, namespaces, auth) are not counted, so that an operator can always
//! raise a limit that locked a namespace out.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use lru::LruCache;

/// Namespaces with a bucket, at most; the least recently seen one is dropped beyond this (and
/// starts full when it calls again), so header-chosen namespaces cannot grow memory.
const BUCKETS: usize = 16_384;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    buckets: Mutex<LruCache<String, Bucket>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(LruCache::new(NonZeroUsize::new(BUCKETS).expect("non-zero"))),
        }
    }
}

/// Whether calls to `path` count against the request rate.
pub fn counted(path: &str) -> bool {
    !(path.starts_with("/strata.cluster.")
        || path.starts_with("/strata.namespace.")
        || path.starts_with("/strata.auth.")
        || path.starts_with("/grpc."))
}

impl RateLimiter {
    /// Takes one call from `namespace`'s budget of `limit` per second, at `now`; false when
    /// the budget is spent.
    pub fn admit(&self, namespace: &str, limit: u64, now: Instant) -> bool {
        let limit = limit as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(namespace) {
            Some(bucket) => bucket,
            None => {
                buckets.put(
                    namespace.to_string(),
                    Bucket {
                        tokens: limit,
                        at: now,
                    },
                );
                buckets.get_mut(namespace).expect("just put")
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit).min(limit);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_of_the_limit_then_the_rate() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let admitted = (0..25).filter(|_| limiter.admit("a", 10, start)).count();
        assert_eq!(admitted, 10);
        // Another namespace has a budget of its own.
        assert!(limiter.admit("b", 10, start));
        // A tenth of a second refills one call; a long pause refills no more than the burst.
        assert!(limiter.admit("a", 10, start + Duration::from_millis(100)));
        assert!(!limiter.admit("a", 10, start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        assert_eq!(
            (0..25).filter(|_| limiter.admit("a", 10, later)).count(),
            10
        );
    }

    #[test]
    fn a_lowered_limit_takes_effect_at_once() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert!(limiter.admit("a", 1_000, start));
        assert_eq!((0..10).filter(|_| limiter.admit("a", 2, start)).count(), 2);
    }

    #[test]
    fn management_calls_are_not_counted() {
        assert!(counted("/strata.kv.v1.Kv/Put"));
        assert!(!counted("/strata.namespace.v1.Namespaces/SetLimits"));
        assert!(!counted("/strata.cluster.v1.Cluster/Status"));
        assert!(!counted("/strata.auth.v1.Auth/Token"));
    }
}
