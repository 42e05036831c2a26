//! Quorum validation: given what a unit's replicas returned, decide whether
//! the unit is accepted, failed, or needs more replicas.
//!
//! Pure logic over [`Replica`] views, with no I/O: the store calls it inside
//! the transaction that records a result or a timeout, and applies the
//! [`Decision`] in that same transaction.
//!
//! Two returned replicas agree when their [`Verdict`]s are equal: the same
//! output hash and the same fuel, or the same deterministic failure kind and
//! the same fuel. Fuel is part of the verdict because an honest run of the
//! same module on the same input burns exactly the same fuel: a worker that
//! skips the work and guesses the output is caught by it.
//!
//! Under the account-age rule ([`Policy::age_rule`]) a quorum settles a
//! unit only if one of its votes is *seasoned*: it came from an account at
//! least `trust.min_account_age_secs` old when it returned. A quorum of
//! young votes alone leaves the unit open, wanting a replica from a
//! seasoned account.

use protocol::{BlobHash, FailureKind, ReplicaId};

/// What a returned replica claims, reduced to what must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Output { hash: BlobHash, fuel: u64 },
    Failure { kind: FailureKind, fuel: u64 },
}

/// A replica's state, as the validator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    InProgress,
    /// Returned and not yet judged.
    Returned,
    Valid,
    Invalid,
    /// The worker could not run it (a non-deterministic failure).
    Errored,
    TimedOut,
    /// Its worker was caught cheating on another unit; not a vote any more
    /// (backtracking), but it counts against `max_replicas`.
    Discarded,
    /// Its worker gave the lease back unstarted (stopping, or a lease it no
    /// longer held). It never ran, so it does not count against
    /// `max_replicas`; a worker releases a unit at most once (it never
    /// holds two replicas of one), so releases cannot keep a unit open.
    Released,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::InProgress => "in_progress",
            ReplicaState::Returned => "returned",
            ReplicaState::Valid => "valid",
            ReplicaState::Invalid => "invalid",
            ReplicaState::Errored => "errored",
            ReplicaState::TimedOut => "timed_out",
            ReplicaState::Discarded => "discarded",
            ReplicaState::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ReplicaState::InProgress,
            ReplicaState::Returned,
            ReplicaState::Valid,
            ReplicaState::Invalid,
            ReplicaState::Errored,
            ReplicaState::TimedOut,
            ReplicaState::Discarded,
            ReplicaState::Released,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One replica of the unit being decided.
#[derive(Clone, Copy, Debug)]
pub struct Replica {
    pub id: ReplicaId,
    pub state: ReplicaState,
    /// Set for returned, valid and invalid replicas.
    pub verdict: Option<Verdict>,
    /// Its account was seasoned ([`crate::trust::Trust::seasoned`]) when
    /// it returned; for a replica in flight, is now, so it will be when it
    /// returns. Read only under [`Policy::age_rule`].
    pub seasoned: bool,
}

/// The unit's policy and history.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub quorum: u32,
    /// Replicas issued for the unit that ran or may yet run, votes or not
    /// (every one but those given back unstarted).
    pub max_replicas: u32,
    /// No active worker has been able to take the unit for long enough
    /// (each has held a replica of it, or shares an account or network
    /// with one that has): waiting on would wait forever.
    pub starved: bool,
    /// The account-age rule applies: agreeing votes settle the unit only
    /// if one of them is seasoned.
    pub age_rule: bool,
}

/// What becomes of the unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitOutcome {
    /// Still open; hand out this many more replicas now. `seasoned_only`:
    /// a quorum agrees on young accounts' votes alone (the account-age
    /// rule), so the replica it wants must go to a seasoned account.
    Open { needed: u32, seasoned_only: bool },
    /// `quorum` replicas agree on an output; `winner` holds it.
    Accepted { winner: ReplicaId },
    /// The unit will never be accepted; `reason` says why, for people.
    Failed { reason: String },
}

/// The decision for a unit, and the judgement of each returned replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: UnitOutcome,
    pub valid: Vec<ReplicaId>,
    pub invalid: Vec<ReplicaId>,
}

/// Decides an open unit from all its replicas, every one ever issued:
/// discarded ones count against `max_replicas` though they are no votes;
/// released ones (never run) do not.
pub fn decide(policy: Policy, replicas: &[Replica]) -> Decision {
    let issued = replicas
        .iter()
        .filter(|r| r.state != ReplicaState::Released)
        .count() as u32;
    let in_flight = replicas
        .iter()
        .filter(|r| r.state == ReplicaState::InProgress)
        .count() as u32;
    let votes: Vec<(ReplicaId, Verdict)> = replicas
        .iter()
        .filter(|r| is_vote(r.state))
        .filter_map(|r| r.verdict.map(|v| (r.id, v)))
        .collect();

    // Under the account-age rule a group of agreeing votes may settle the
    // unit only with a seasoned vote among them.
    let may_settle = |v: &Verdict| {
        !policy.age_rule
            || replicas
                .iter()
                .any(|r| r.seasoned && r.verdict == Some(*v) && is_vote(r.state))
    };

    // The largest group of agreeing votes; ties go to a group that may
    // settle the unit, then to the earliest replica.
    let mut best: Option<(Verdict, u32, bool)> = None;
    for (_, v) in &votes {
        let count = votes.iter().filter(|(_, w)| w == v).count() as u32;
        let may = may_settle(v);
        if best.is_none_or(|(_, c, m)| count > c || (count == c && may && !m)) {
            best = Some((*v, count, may));
        }
    }

    if let Some((verdict, count, true)) = best
        && count >= policy.quorum
    {
        let (valid, invalid) = judge(&votes, verdict);
        let outcome = match verdict {
            Verdict::Output { .. } => UnitOutcome::Accepted { winner: valid[0] },
            Verdict::Failure { kind, .. } => UnitOutcome::Failed {
                reason: format!(
                    "{count} replicas agree that the unit fails: {}",
                    kind.as_str()
                ),
            },
        };
        return Decision {
            outcome,
            valid,
            invalid,
        };
    }

    // A quorum of young votes alone: the unit wants one replica from a
    // seasoned account, unless one is in flight already.
    let young_quorum = best
        .filter(|&(_, count, may)| count >= policy.quorum && !may)
        .map(|(_, count, _)| count);
    let wanted = match young_quorum {
        Some(_) => u32::from(
            !replicas
                .iter()
                .any(|r| r.state == ReplicaState::InProgress && r.seasoned),
        ),
        None => {
            let agreeing = best.map_or(0, |(_, c, _)| c);
            policy.quorum.saturating_sub(agreeing + in_flight)
        }
    };
    let needed = wanted.min(policy.max_replicas.saturating_sub(issued));
    if in_flight == 0 && (needed == 0 || policy.starved) {
        let why = if needed == 0 {
            format!(
                "after {issued} replicas (max_replicas {})",
                policy.max_replicas
            )
        } else {
            let whom = if young_quorum.is_some() {
                "active worker of a seasoned account"
            } else {
                "active worker"
            };
            format!(
                "after {issued} replicas: no {whom} can take another (each has held one, or shares an account or network with one that has)"
            )
        };
        let reason = match young_quorum {
            Some(count) => format!(
                "no seasoned vote {why}: {count} replicas agree, but every one came from an account younger than trust.min_account_age_secs when it returned (the account-age rule)"
            ),
            None => {
                let mut distinct: Vec<Verdict> = Vec::new();
                for (_, v) in &votes {
                    if !distinct.contains(v) {
                        distinct.push(*v);
                    }
                }
                let lost = issued - votes.len() as u32;
                format!(
                    "no quorum of {} {why}; {} returned {} different results, {lost} errored, timed out or were discarded",
                    policy.quorum,
                    votes.len(),
                    distinct.len(),
                )
            }
        };
        return Decision {
            outcome: UnitOutcome::Failed { reason },
            valid: Vec::new(),
            invalid: Vec::new(),
        };
    }
    Decision {
        outcome: UnitOutcome::Open {
            needed,
            seasoned_only: young_quorum.is_some(),
        },
        valid: Vec::new(),
        invalid: Vec::new(),
    }
}

/// Whether a replica in `state` is a vote.
fn is_vote(state: ReplicaState) -> bool {
    matches!(
        state,
        ReplicaState::Returned | ReplicaState::Valid | ReplicaState::Invalid
    )
}

/// Judges the replicas that came back after their unit was settled, against
/// the accepted one's verdict: agreeing ones are valid, others invalid. A
/// unit that failed (no accepted replica) judges nothing.
pub fn judge_late(accepted: Option<ReplicaId>, replicas: &[Replica]) -> Decision {
    let reference = accepted
        .and_then(|a| replicas.iter().find(|r| r.id == a))
        .and_then(|r| r.verdict);
    let mut decision = Decision {
        outcome: UnitOutcome::Open {
            needed: 0,
            seasoned_only: false,
        },
        valid: vec![],
        invalid: vec![],
    };
    for r in replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Returned)
    {
        match r.verdict.and_then(|v| reference.map(|a| a == v)) {
            Some(true) => decision.valid.push(r.id),
            Some(false) => decision.invalid.push(r.id),
            None => {}
        }
    }
    decision
}

fn judge(votes: &[(ReplicaId, Verdict)], winner: Verdict) -> (Vec<ReplicaId>, Vec<ReplicaId>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for (id, v) in votes {
        if *v == winner {
            valid.push(*id);
        } else {
            invalid.push(*id);
        }
    }
    (valid, invalid)
}

#[cfg(test)]
mod tests;
