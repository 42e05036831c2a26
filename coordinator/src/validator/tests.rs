//! Unit tests of the validator policy (`super`), without a database.

use super::*;

const POLICY: Policy = Policy {
    quorum: 2,
    max_replicas: 4,
    starved: false,
    age_rule: false,
};

/// The account-age rule on.
const AGED: Policy = Policy {
    age_rule: true,
    ..POLICY
};

fn open(needed: u32) -> UnitOutcome {
    UnitOutcome::Open {
        needed,
        seasoned_only: false,
    }
}

fn wants_seasoned(needed: u32) -> UnitOutcome {
    UnitOutcome::Open {
        needed,
        seasoned_only: true,
    }
}

fn out(n: u8) -> Option<Verdict> {
    Some(Verdict::Output {
        hash: BlobHash::of(&[n]),
        fuel: 100,
    })
}

fn r(id: i64, state: ReplicaState, verdict: Option<Verdict>) -> Replica {
    Replica {
        id: ReplicaId(id),
        state,
        verdict,
        seasoned: false,
    }
}

/// A replica of a seasoned account.
fn s(id: i64, state: ReplicaState, verdict: Option<Verdict>) -> Replica {
    Replica {
        seasoned: true,
        ..r(id, state, verdict)
    }
}

use ReplicaState::*;

#[test]
fn two_agreeing_replicas_accept_the_unit() {
    let d = decide(POLICY, &[r(1, Returned, out(1)), r(2, Returned, out(1))]);
    assert_eq!(
        d.outcome,
        UnitOutcome::Accepted {
            winner: ReplicaId(1)
        }
    );
    assert_eq!(d.valid, vec![ReplicaId(1), ReplicaId(2)]);
}

#[test]
fn one_result_waits_for_the_replica_in_flight() {
    let d = decide(POLICY, &[r(1, Returned, out(1)), r(2, InProgress, None)]);
    assert_eq!(d.outcome, open(0));
}

#[test]
fn disagreement_asks_for_one_more_replica() {
    let d = decide(POLICY, &[r(1, Returned, out(1)), r(2, Returned, out(2))]);
    assert_eq!(d.outcome, open(1));
    let d = decide(
        POLICY,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(2)),
            r(3, Returned, out(1)),
        ],
    );
    assert_eq!(
        d.outcome,
        UnitOutcome::Accepted {
            winner: ReplicaId(1)
        }
    );
    assert_eq!(d.invalid, vec![ReplicaId(2)]);
}

#[test]
fn same_output_with_different_fuel_is_a_disagreement() {
    let cheat = Some(Verdict::Output {
        hash: BlobHash::of(&[1]),
        fuel: 7,
    });
    let d = decide(POLICY, &[r(1, Returned, out(1)), r(2, Returned, cheat)]);
    assert_eq!(d.outcome, open(1));
}

#[test]
fn the_unit_fails_when_max_replicas_are_spent_without_quorum() {
    let d = decide(
        POLICY,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(2)),
            r(3, TimedOut, None),
            r(4, Errored, None),
        ],
    );
    assert!(matches!(d.outcome, UnitOutcome::Failed { .. }), "{d:?}");
}

#[test]
fn never_asks_past_max_replicas() {
    let d = decide(
        POLICY,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(2)),
            r(3, Returned, out(3)),
        ],
    );
    assert_eq!(d.outcome, open(1));
}

#[test]
fn agreed_deterministic_failure_fails_the_unit_at_once() {
    let oof = Some(Verdict::Failure {
        kind: FailureKind::OutOfFuel,
        fuel: 1000,
    });
    let d = decide(POLICY, &[r(1, Returned, oof), r(2, Returned, oof)]);
    assert!(matches!(d.outcome, UnitOutcome::Failed { .. }));
    assert_eq!(d.valid.len(), 2);
}

#[test]
fn a_late_replica_is_judged_against_the_accepted_one() {
    let replicas = [
        r(1, Valid, out(1)),
        r(2, Valid, out(1)),
        r(3, Returned, out(1)),
        r(4, Returned, out(2)),
        r(5, Returned, None),
    ];
    let d = judge_late(Some(ReplicaId(1)), &replicas);
    assert_eq!(d.valid, vec![ReplicaId(3)]);
    assert_eq!(d.invalid, vec![ReplicaId(4)]);
    // A failed unit has nothing to judge against.
    let d = judge_late(None, &replicas);
    assert!(d.valid.is_empty() && d.invalid.is_empty());
}

#[test]
fn timeouts_are_replaced() {
    let d = decide(POLICY, &[r(1, TimedOut, None), r(2, InProgress, None)]);
    assert_eq!(d.outcome, open(1));
}

#[test]
fn discarded_replicas_count_against_max_replicas_and_released_ones_do_not() {
    // Two votes that disagree, and two replicas that are no votes: the
    // budget of four is spent, so the unit fails instead of waiting
    // for a fifth replica forever.
    let d = decide(
        POLICY,
        &[
            r(1, Returned, out(1)),
            r(2, Discarded, out(2)),
            r(3, TimedOut, None),
            r(4, Returned, out(3)),
        ],
    );
    let UnitOutcome::Failed { reason } = d.outcome else {
        panic!("{d:?}");
    };
    assert!(
        reason.contains("after 4 replicas (max_replicas 4)"),
        "{reason}"
    );
    assert!(
        reason.contains("2 errored, timed out or were discarded"),
        "{reason}"
    );
    // One given back unstarted leaves room for another.
    let d = decide(
        POLICY,
        &[
            r(1, Returned, out(1)),
            r(2, Discarded, out(2)),
            r(3, Released, None),
            r(4, Returned, out(3)),
        ],
    );
    assert_eq!(d.outcome, open(1));
    // A discarded replica is no vote: it does not make a quorum.
    let d = decide(POLICY, &[r(1, Returned, out(1)), r(2, Discarded, out(1))]);
    assert_eq!(d.outcome, open(1));
}

#[test]
fn a_starved_unit_fails_once_nothing_is_in_flight() {
    let starved = Policy {
        starved: true,
        ..POLICY
    };
    let d = decide(starved, &[r(1, Returned, out(1)), r(2, Returned, out(2))]);
    let UnitOutcome::Failed { reason } = d.outcome else {
        panic!("{d:?}");
    };
    assert!(
        reason.contains("no active worker can take another"),
        "{reason}"
    );
    // A replica still running may yet make the quorum.
    let d = decide(
        starved,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(2)),
            r(3, InProgress, None),
        ],
    );
    assert_eq!(d.outcome, open(0));
    // And a quorum already there is accepted, starved or not.
    let d = decide(starved, &[r(1, Returned, out(1)), r(2, Returned, out(1))]);
    assert!(matches!(d.outcome, UnitOutcome::Accepted { .. }));
}

#[test]
fn young_votes_alone_do_not_settle_a_unit_under_the_age_rule() {
    let young = [r(1, Returned, out(1)), r(2, Returned, out(1))];
    // Off (the default, or the job opts out): the quorum accepts.
    assert!(matches!(
        decide(POLICY, &young).outcome,
        UnitOutcome::Accepted { .. }
    ));
    // On: the unit wants one replica of a seasoned account.
    let d = decide(AGED, &young);
    assert_eq!(d.outcome, wants_seasoned(1));
    assert!(d.valid.is_empty() && d.invalid.is_empty(), "nothing judged");
    // A third young vote that agrees changes nothing...
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            r(3, Returned, out(1)),
        ],
    );
    assert_eq!(d.outcome, wants_seasoned(1));
    // ... a seasoned one accepts, and judges every vote.
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            s(3, Returned, out(1)),
        ],
    );
    assert_eq!(
        d.outcome,
        UnitOutcome::Accepted {
            winner: ReplicaId(1)
        }
    );
    assert_eq!(d.valid.len(), 3);
    // One seasoned vote in a quorum is enough.
    let d = decide(AGED, &[s(1, Returned, out(1)), r(2, Returned, out(1))]);
    assert!(matches!(d.outcome, UnitOutcome::Accepted { .. }));
}

#[test]
fn a_seasoned_replica_in_flight_is_waited_for_and_a_young_one_is_not_enough() {
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            s(3, InProgress, None),
        ],
    );
    assert_eq!(d.outcome, wants_seasoned(0));
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            r(3, InProgress, None),
        ],
    );
    assert_eq!(d.outcome, wants_seasoned(1));
    // A seasoned vote that disagrees is no seasoned vote of the quorum.
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            s(3, Returned, out(2)),
        ],
    );
    assert_eq!(d.outcome, wants_seasoned(1));
    // Nor is a discarded one.
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            s(3, Discarded, out(1)),
        ],
    );
    assert_eq!(d.outcome, wants_seasoned(1));
}

#[test]
fn a_tie_goes_to_the_group_with_a_seasoned_vote() {
    let d = decide(
        AGED,
        &[
            r(1, Returned, out(1)),
            r(2, Returned, out(1)),
            r(3, Returned, out(2)),
            s(4, Returned, out(2)),
        ],
    );
    assert_eq!(
        d.outcome,
        UnitOutcome::Accepted {
            winner: ReplicaId(3)
        }
    );
    assert_eq!(d.invalid, vec![ReplicaId(1), ReplicaId(2)]);
}

#[test]
fn young_votes_alone_do_not_fail_a_unit_either() {
    let oof = Some(Verdict::Failure {
        kind: FailureKind::OutOfFuel,
        fuel: 1000,
    });
    let d = decide(AGED, &[r(1, Returned, oof), r(2, Returned, oof)]);
    assert_eq!(d.outcome, wants_seasoned(1));
    let d = decide(AGED, &[r(1, Returned, oof), s(2, Returned, oof)]);
    assert!(matches!(d.outcome, UnitOutcome::Failed { .. }));
}

#[test]
fn without_a_seasoned_vote_the_unit_fails_at_max_replicas_or_starved_naming_the_rule() {
    let spent = [
        r(1, Returned, out(1)),
        r(2, Returned, out(1)),
        r(3, Returned, out(1)),
        r(4, TimedOut, None),
    ];
    let UnitOutcome::Failed { reason } = decide(AGED, &spent).outcome else {
        panic!("the budget is spent");
    };
    assert!(
        reason.contains("after 4 replicas (max_replicas 4)")
            && reason.contains("trust.min_account_age_secs"),
        "{reason}"
    );
    let starved = Policy {
        starved: true,
        ..AGED
    };
    let UnitOutcome::Failed { reason } =
        decide(starved, &[r(1, Returned, out(1)), r(2, Returned, out(1))]).outcome
    else {
        panic!("starved with nothing in flight");
    };
    assert!(
        reason.contains("no active worker of a seasoned account can take another")
            && reason.contains("account-age rule"),
        "{reason}"
    );
}
