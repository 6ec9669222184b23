//! Linearizability of a history of register operations, per key: the Wing–Gong search with
//! Lowe's memoisation (as in Porcupine and Knossos' `wgl`).
//!
//! Operations whose outcome is unknown ("indeterminate": the client timed out or lost the
//! connection) are given a return time of infinity, so the search may place them anywhere after
//! their invocation, including after every other operation, where they have no visible effect.
//! Operations that certainly failed (the server said nothing was done) are left out.

use std::collections::HashSet;

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Read the value (`None`: the key was absent).
    Read(Option<u64>),
    /// Wrote the value.
    Write(u64),
    /// Compare-and-set: if the value is `from`, make it `to`. `succeeded` is `None` when the
    /// outcome is unknown.
    Cas {
        from: u64,
        to: u64,
        succeeded: Option<bool>,
    },
}

/// One operation on one register: invoked at `call`, answered at `ret` (`None`: never, the
/// outcome is unknown), times in any monotonic unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub call: u64,
    pub ret: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations explains what the clients saw.
    NotLinearizable,
    /// The search gave up after its step budget.
    Unknown,
}

/// Applies `op` to `state`: `None` if the op's observed result is impossible from `state`.
fn step(state: Option<u64>, kind: &Kind) -> Option<Option<u64>> {
    match kind {
        Kind::Read(seen) => (state == *seen).then_some(state),
        Kind::Write(value) => Some(Some(*value)),
        Kind::Cas {
            from,
            to,
            succeeded,
        } => match (state == Some(*from), succeeded) {
            (true, Some(true) | None) => Some(Some(*to)),
            (false, Some(false) | None) => Some(state),
            _ => None,
        },
    }
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return entry.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// Where the search got furthest in a history that is not linearizable: the longest
/// explanation it found, and the operation that nothing could put next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Operations the longest explanation linearized.
    pub linearized: usize,
    /// The register's value after them.
    pub state: Option<u64>,
    /// An operation that had returned by then but could not be linearized (`None`: the
    /// history's end was reached with unplaced operations).
    pub op: Option<usize>,
}

/// Checks one register's history, starting from `initial`, within `max_steps` search steps.
#[cfg(test)]
pub fn check(ops: &[Op], initial: Option<u64>, max_steps: u64) -> Verdict {
    check_explained(ops, initial, max_steps).0
}

/// `check`, and for a history that is not linearizable, where the search got stuck: the
/// counterexample to show a person.
pub fn check_explained(
    ops: &[Op],
    initial: Option<u64>,
    max_steps: u64,
) -> (Verdict, Option<Stuck>) {
    if ops.is_empty() {
        return (Verdict::Linearizable, None);
    }
    // Entries sorted by time; at equal times calls come first (the permissive choice: two
    // operations that touch at an instant are taken as concurrent).
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        order.push((op.call, 0, index));
        order.push((op.ret.unwrap_or(u64::MAX), 1, index));
    }
    order.sort();
    // Entry 0 is the head sentinel.
    let mut entries = vec![Entry {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: 1,
    }];
    let mut call_entry = vec![NIL; ops.len()];
    for (position, (_, kind, op)) in order.iter().enumerate() {
        let index = position + 1;
        entries.push(Entry {
            op: *op,
            is_call: *kind == 0,
            partner: NIL,
            prev: index - 1,
            next: if position + 1 < order.len() {
                index + 1
            } else {
                NIL
            },
        });
        if *kind == 0 {
            call_entry[*op] = index;
        } else {
            entries[call_entry[*op]].partner = index;
        }
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state = initial;
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut calls: Vec<(usize, Option<u64>)> = Vec::new();
    let mut cursor = entries[0].next;
    let mut steps = 0u64;
    let mut stuck: Option<Stuck> = None;

    fn lift(entries: &mut [Entry], call: usize) {
        let partner = entries[call].partner;
        for index in [call, partner] {
            let Entry { prev, next, .. } = entries[index];
            entries[prev].next = next;
            if next != NIL {
                entries[next].prev = prev;
            }
        }
    }
    fn unlift(entries: &mut [Entry], call: usize) {
        let partner = entries[call].partner;
        for index in [partner, call] {
            let Entry { prev, next, .. } = entries[index];
            entries[prev].next = index;
            if next != NIL {
                entries[next].prev = index;
            }
        }
    }

    while entries[0].next != NIL {
        steps += 1;
        if steps > max_steps {
            return (Verdict::Unknown, None);
        }
        match (cursor != NIL).then(|| entries[cursor]) {
            Some(entry) if entry.is_call => {
                if let Some(next_state) = step(state, &ops[entry.op].kind) {
                    let mut candidate = linearized.clone();
                    candidate[entry.op / 64] |= 1 << (entry.op % 64);
                    if cache.insert((candidate.clone(), next_state)) {
                        calls.push((cursor, state));
                        state = next_state;
                        linearized = candidate;
                        lift(&mut entries, cursor);
                        cursor = entries[0].next;
                        continue;
                    }
                }
                cursor = entry.next;
            }
            // A return (the operation it ends had to be linearized before this point), or every
            // remaining call was tried from here: undo the latest choice and try the next one.
            _ => {
                if stuck.as_ref().is_none_or(|s| calls.len() > s.linearized) {
                    stuck = Some(Stuck {
                        linearized: calls.len(),
                        state,
                        op: (cursor != NIL).then(|| entries[cursor].op),
                    });
                }
                let Some((call, previous)) = calls.pop() else {
                    return (Verdict::NotLinearizable, stuck);
                };
                state = previous;
                let op = entries[call].op;
                linearized[op / 64] &= !(1 << (op % 64));
                unlift(&mut entries, call);
                cursor = entries[call].next;
            }
        }
    }
    (Verdict::Linearizable, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, kind: Kind) -> Op {
        Op {
            call,
            ret: Some(ret),
            kind,
        }
    }

    const BUDGET: u64 = 1_000_000;

    #[test]
    fn sequential_histories() {
        let ok = [
            op(0, 1, Kind::Write(1)),
            op(2, 3, Kind::Read(Some(1))),
            op(
                4,
                5,
                Kind::Cas {
                    from: 1,
                    to: 2,
                    succeeded: Some(true),
                },
            ),
            op(
                6,
                7,
                Kind::Cas {
                    from: 1,
                    to: 3,
                    succeeded: Some(false),
                },
            ),
            op(8, 9, Kind::Read(Some(2))),
        ];
        assert_eq!(check(&ok, None, BUDGET), Verdict::Linearizable);
        let stale = [
            op(0, 1, Kind::Write(1)),
            op(2, 3, Kind::Write(2)),
            op(4, 5, Kind::Read(Some(1))),
        ];
        assert_eq!(check(&stale, None, BUDGET), Verdict::NotLinearizable);
        // The counterexample: both writes explained, then the read of 1 cannot follow.
        assert_eq!(
            check_explained(&stale, None, BUDGET).1,
            Some(Stuck {
                linearized: 2,
                state: Some(2),
                op: Some(2)
            })
        );
        let absent = [op(0, 1, Kind::Read(Some(7)))];
        assert_eq!(check(&absent, None, BUDGET), Verdict::NotLinearizable);
        assert_eq!(
            check(&[op(0, 1, Kind::Read(None))], None, BUDGET),
            Verdict::Linearizable
        );
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two overlapping writes, then reads that agree on the later one: fine either way.
        let history = [
            op(0, 10, Kind::Write(1)),
            op(1, 9, Kind::Write(2)),
            op(11, 12, Kind::Read(Some(1))),
            op(13, 14, Kind::Read(Some(1))),
        ];
        assert_eq!(check(&history, None, BUDGET), Verdict::Linearizable);
        // But once a read has seen 1 after both writes, a later read cannot see 2.
        let flip = [
            op(0, 10, Kind::Write(1)),
            op(1, 9, Kind::Write(2)),
            op(11, 12, Kind::Read(Some(1))),
            op(13, 14, Kind::Read(Some(2))),
        ];
        assert_eq!(check(&flip, None, BUDGET), Verdict::NotLinearizable);
    }

    #[test]
    fn the_classic_examples() {
        // Herlihy & Wing's figure: a read concurrent with a write may return old or new, but two
        // sequential reads that both overlap the write cannot see new and then old.
        let new_then_old = [
            op(0, 100, Kind::Write(1)),
            op(10, 20, Kind::Read(Some(1))),
            op(30, 40, Kind::Read(None)),
        ];
        assert_eq!(check(&new_then_old, None, BUDGET), Verdict::NotLinearizable);
        let old_then_new = [
            op(0, 100, Kind::Write(1)),
            op(10, 20, Kind::Read(None)),
            op(30, 40, Kind::Read(Some(1))),
        ];
        assert_eq!(check(&old_then_new, None, BUDGET), Verdict::Linearizable);
        // Two successful CAS from the same value cannot both win (a lost update).
        let double_cas = [
            op(0, 1, Kind::Write(0)),
            op(
                2,
                10,
                Kind::Cas {
                    from: 0,
                    to: 1,
                    succeeded: Some(true),
                },
            ),
            op(
                3,
                11,
                Kind::Cas {
                    from: 0,
                    to: 2,
                    succeeded: Some(true),
                },
            ),
        ];
        assert_eq!(check(&double_cas, None, BUDGET), Verdict::NotLinearizable);
    }

    #[test]
    fn indeterminate_operations_may_or_may_not_have_happened() {
        let lost = Op {
            call: 0,
            ret: None,
            kind: Kind::Write(5),
        };
        // Seen: it happened.
        assert_eq!(
            check(
                &[lost.clone(), op(10, 11, Kind::Read(Some(5)))],
                None,
                BUDGET
            ),
            Verdict::Linearizable
        );
        // Not seen: it did not (yet).
        assert_eq!(
            check(&[lost.clone(), op(10, 11, Kind::Read(None))], None, BUDGET),
            Verdict::Linearizable
        );
        // But it cannot take effect before it was invoked.
        let early = [
            op(0, 1, Kind::Read(Some(5))),
            Op {
                call: 2,
                ret: None,
                kind: Kind::Write(5),
            },
        ];
        assert_eq!(check(&early, None, BUDGET), Verdict::NotLinearizable);
        // Nor un-happen once seen.
        assert_eq!(
            check(
                &[
                    lost,
                    op(10, 11, Kind::Read(Some(5))),
                    op(12, 13, Kind::Read(None))
                ],
                None,
                BUDGET
            ),
            Verdict::NotLinearizable
        );
    }

    #[test]
    fn gives_up_within_its_budget() {
        let mut history = Vec::new();
        for i in 0..40 {
            history.push(op(0, 1_000, Kind::Write(i)));
        }
        history.push(op(2_000, 2_001, Kind::Read(Some(999))));
        assert_eq!(check(&history, None, 1_000), Verdict::Unknown);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any history produced by a real register, with random overlap added around each
            /// operation's true instant, is linearizable.
            #[test]
            fn histories_of_a_real_register_are_linearizable(
                ops in proptest::collection::vec((0u8..3, 0u64..4, 0u64..4, 0u64..5, 0u64..5), 1..40)
            ) {
                let mut state: Option<u64> = None;
                let mut history = Vec::new();
                for (i, (kind, a, b, before, after)) in ops.into_iter().enumerate() {
                    let at = (i as u64 + 1) * 10;
                    let kind = match kind {
                        0 => Kind::Read(state),
                        1 => { state = Some(a); Kind::Write(a) }
                        _ => {
                            let succeeded = state == Some(a);
                            if succeeded { state = Some(b); }
                            Kind::Cas { from: a, to: b, succeeded: Some(succeeded) }
                        }
                    };
                    history.push(op(at - before, at + after, kind));
                }
                prop_assert_eq!(check(&history, None, 10_000_000), Verdict::Linearizable);
            }
        }
    }
}
