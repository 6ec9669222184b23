//! The leader's registry leases: when it last heard from each registered node.
//!
//! Liveness is kept in the leader's memory, never in the log (like etcd's lessor): an identical
//! re-registration is a keepalive that costs a coalesced leadership check and a few reads, not a
//! log entry and an fsync on a majority. The leader proposes [`ExpireNode`]s for nodes it has not
//! heard from within their TTL, by its own monotonic clock; apply only checks that the node is
//! still the version the leader judged. A new leader (a new term) starts a fresh table in which
//! every node's lease begins when the leader first looks at it: the grace period after an
//! election, so that a failover never expires nodes whose keepalives went to the old leader.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strata_registry::{ExpireNode, LeaseRow};

#[derive(Debug)]
struct Lease {
    mod_revision: u64,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    /// The term this table was built in; another term starts afresh.
    term: u64,
    leases: HashMap<Vec<u8>, Lease>,
}

impl LeaseTable {
    fn for_term(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.leases.clear();
        }
    }

    /// Records a keepalive for these nodes (storage key, mod revision as checked).
    pub fn refresh(&mut self, term: u64, nodes: &[(Vec<u8>, u64)], now: Instant) {
        self.for_term(term);
        for (key, mod_revision) in nodes {
            self.leases.insert(
                key.clone(),
                Lease {
                    mod_revision: *mod_revision,
                    last_seen: now,
                },
            );
        }
    }

    /// The nodes whose lease ran out at `now`, given every node in the state. A node seen for
    /// the first time, or written again since last seen, starts a full lease now. Leases of
    /// nodes no longer in the state are forgotten.
    pub fn due(&mut self, term: u64, rows: &[LeaseRow], now: Instant) -> Vec<ExpireNode> {
        self.for_term(term);
        let mut due = Vec::new();
        let mut present = HashMap::with_capacity(rows.len());
        for row in rows {
            let lease = self.leases.entry(row.key.clone()).or_insert(Lease {
                mod_revision: row.mod_revision,
                last_seen: now,
            });
            if lease.mod_revision != row.mod_revision {
                *lease = Lease {
                    mod_revision: row.mod_revision,
                    last_seen: now,
                };
            }
            // A TTL of 0 never runs out (Micro's registrations without a TTL).
            if row.ttl_ms > 0
                && now.saturating_duration_since(lease.last_seen)
                    >= Duration::from_millis(row.ttl_ms)
            {
                due.push(ExpireNode {
                    key: row.key.clone(),
                    mod_revision: row.mod_revision,
                });
            }
            present.insert(row.key.as_slice(), ());
        }
        self.leases
            .retain(|key, _| present.contains_key(key.as_slice()));
        due
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, ttl_ms: u64, mod_revision: u64) -> LeaseRow {
        LeaseRow {
            key: key.as_bytes().to_vec(),
            ttl_ms,
            mod_revision,
        }
    }

    #[test]
    fn leases_run_out_unless_refreshed() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut table = LeaseTable::default();
        let rows = [row("a", 1_000, 5), row("b", 1_000, 6)];
        assert!(
            table.due(1, &rows, at(0)).is_empty(),
            "first sight starts a lease"
        );
        table.refresh(1, &[(b"a".to_vec(), 5)], at(900));
        let due = table.due(1, &rows, at(1_000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key, b"b");
        // Written again (new mod revision): a fresh lease.
        let rows = [row("a", 1_000, 5), row("b", 1_000, 7)];
        assert!(table.due(1, &rows, at(1_100)).is_empty());
        // A new term forgets everything: a grace period for every node.
        assert!(table.due(2, &rows, at(5_000)).is_empty());
        assert_eq!(table.due(2, &rows, at(6_000)).len(), 2);
        // Nodes gone from the state are forgotten.
        table.due(2, &[], at(6_000));
        assert!(table.is_empty());
        // A TTL of 0 never runs out.
        let forever = [row("c", 0, 9)];
        assert!(table.due(2, &forever, at(6_000)).is_empty());
        assert!(table.due(2, &forever, at(600_000_000)).is_empty());
    }
}
