//! Unit tests of the trust policy (`super`), without a database.

use super::*;
use protocol::{BlobHash, ReplicaId};

fn standing(quota: i64) -> Standing {
    Standing {
        slots: 2,
        valid: 0,
        consecutive_valid: 5,
        invalid: 0,
        caught: false,
        quota,
        quota_day: 0,
        leased_today: 0,
    }
}

#[test]
fn a_break_halves_the_quota_and_a_valid_result_doubles_it_within_bounds() {
    let trust = Trust::default();
    let full = trust.full_quota(2);
    let mut d = WorkerDelta::default();
    d.broke_streak(Counter::Errors);
    assert_eq!(standing(full).after(&d, &trust, 0).quota, full / 2);
    d.broke_streak(Counter::Timeouts);
    assert_eq!(standing(full).after(&d, &trust, 0).quota, full / 4);
    // Never below the worker's slots, never above its full quota.
    let mut many = WorkerDelta::default();
    for _ in 0..40 {
        many.broke_streak(Counter::Invalid);
    }
    assert_eq!(standing(full).after(&many, &trust, 0).quota, 2);
    let mut good = WorkerDelta::default();
    for _ in 0..40 {
        good.valid(1, 0);
    }
    assert_eq!(standing(3).after(&good, &trust, 0).quota, full);
    // A worker from before quotas has the full quota.
    assert_eq!(
        standing(0).after(&WorkerDelta::default(), &trust, 0).quota,
        full
    );
}

#[test]
fn a_break_halves_what_is_left_of_today_so_a_busy_worker_is_not_locked_out() {
    let trust = Trust::default();
    let full = trust.full_quota(2);
    let mut busy = standing(full);
    busy.quota_day = 7;
    busy.leased_today = full * 3 / 4;
    let mut d = WorkerDelta::default();
    d.broke_streak(Counter::Timeouts);
    // Three quarters used today: one timeout leaves half of the last
    // quarter, not a quota below what it already used.
    let after = busy.after(&d, &trust, 7);
    assert_eq!(after.quota, full * 3 / 4 + full / 8);
    assert!(after.quota_left(&trust, 7) > 0);
    // Leases of another day do not count: the whole quota halves.
    assert_eq!(busy.after(&d, &trust, 8).quota, full / 2);
    // A worker that fails everything is still cut off within the day.
    let mut failing = busy;
    for _ in 0..40 {
        failing = failing.after(&d, &trust, 7);
    }
    assert_eq!(failing.quota_left(&trust, 7), 0);
}

#[test]
fn the_streak_restarts_at_a_break_and_grows_otherwise() {
    let trust = Trust::default();
    let mut d = WorkerDelta::default();
    d.valid(10, 0);
    d.valid(10, 0);
    assert_eq!(standing(100).after(&d, &trust, 0).consecutive_valid, 7);
    d.broke_streak(Counter::Invalid);
    d.valid(10, 0);
    assert_eq!(standing(100).after(&d, &trust, 0).consecutive_valid, 1);
    assert_eq!((d.valid, d.invalid, d.credit), (3, 1, 30));
    d.refund(10, 0);
    assert_eq!((d.valid, d.credit), (2, 20));
}

#[test]
fn room_is_the_lease_cap_less_leases_held_and_at_most_the_quota_left() {
    let trust = Trust::default();
    let s = Standing {
        slots: 3,
        valid: 100,
        consecutive_valid: 0,
        invalid: 0,
        caught: false,
        quota: 10,
        quota_day: 7,
        leased_today: 8,
    };
    assert_eq!(trust.room(&s, 1, 7), 2, "quota left: 10 - 8");
    assert_eq!(trust.room(&s, 1, 8), 5, "a new day: the cap, 6 - 1");
    assert_eq!(trust.room(&s, 6, 8), 0);
}

#[test]
fn leases_are_earned_by_valid_results_up_to_what_the_slots_declare() {
    let trust = Trust::default();
    let mut s = Standing {
        slots: 64,
        valid: 0,
        consecutive_valid: 0,
        invalid: 0,
        caught: false,
        quota: 0,
        quota_day: 0,
        leased_today: 0,
    };
    assert_eq!(trust.lease_cap(&s), 4, "a new registration: a handful");
    s.valid = 60;
    assert_eq!(trust.lease_cap(&s), 64);
    s.valid = 1_000;
    assert_eq!(trust.lease_cap(&s), 128, "never past two per declared slot");
    s.slots = 1;
    assert_eq!(trust.lease_cap(&s), 2);
    // Rounds of results: 4, 8, 16, ... a 64-core host is at full speed
    // after five rounds.
    let mut s = Standing {
        slots: 64,
        valid: 0,
        ..s
    };
    let mut rounds = 0;
    while trust.lease_cap(&s) < 128 {
        s.valid += trust.lease_cap(&s);
        rounds += 1;
    }
    assert_eq!(rounds, 5);
}

#[test]
fn a_caught_worker_holds_one_lease_until_it_is_trusted_again() {
    let trust = Trust::default();
    let seasoned = Standing {
        slots: 8,
        valid: 1_000,
        consecutive_valid: 0,
        invalid: 0,
        caught: false,
        quota: 0,
        quota_day: 0,
        leased_today: 0,
    };
    assert_eq!(trust.lease_cap(&seasoned), 16);
    let mut judged = WorkerDelta::default();
    judged.broke_streak(Counter::Invalid);
    let caught = seasoned.after(&judged, &trust, 0);
    assert!(caught.caught);
    assert_eq!(trust.lease_cap(&caught), 1);
    // 19 valid in a row: still caught; the 20th (the threshold,
    // doubled once) frees it.
    let mut good = WorkerDelta::default();
    for _ in 0..19 {
        good.valid(1, 0);
    }
    let still = caught.after(&good, &trust, 0);
    assert_eq!(trust.lease_cap(&still), 1);
    let mut one = WorkerDelta::default();
    one.valid(1, 0);
    let free = still.after(&one, &trust, 0);
    assert!(!free.caught);
    assert_eq!(trust.lease_cap(&free), 16);
    // A timeout later breaks its streak but catches it no more.
    let mut timeout = WorkerDelta::default();
    timeout.broke_streak(Counter::Timeouts);
    let after_timeout = free.after(&timeout, &trust, 0);
    assert_eq!(after_timeout.consecutive_valid, 0);
    assert!(!after_timeout.caught);
    assert_eq!(trust.lease_cap(&after_timeout), 16);
}

#[test]
fn trust_starts_at_the_threshold_which_doubles_per_invalid_result() {
    let trust = Trust::default();
    let with = |consecutive_valid, invalid| Standing {
        consecutive_valid,
        invalid,
        ..standing(0)
    };
    assert!(!trust.trusted(&with(9, 0)));
    assert!(trust.trusted(&with(10, 0)));
    // Caught once: 20 in a row; twice: 40; never more than 640.
    assert!(!trust.trusted(&with(19, 1)));
    assert!(trust.trusted(&with(20, 1)));
    assert!(!trust.trusted(&with(39, 2)));
    assert_eq!(trust.streak_needed(2), 40);
    assert_eq!(trust.streak_needed(1_000), 640);
    assert_eq!(trust.streak_needed(-1), 10);
}

#[test]
fn spot_checks_follow_their_seed_and_rate() {
    let a = SpotChecks::new(Some(5), 0.1);
    let b = SpotChecks::new(Some(5), 0.1);
    let xs: Vec<bool> = (0..1000).map(|_| a.draw()).collect();
    let ys: Vec<bool> = (0..1000).map(|_| b.draw()).collect();
    assert_eq!(xs, ys);
    let hits = xs.iter().filter(|x| **x).count();
    assert!((60..140).contains(&hits), "{hits} of 1000 at 10%");
    assert!(!(0..100).any(|_| SpotChecks::new(Some(1), 0.0).draw()));
}

fn replica(id: i64, state: ReplicaState, verdict: Option<Verdict>) -> Replica {
    Replica {
        id: ReplicaId(id),
        state,
        verdict,
        seasoned: true,
    }
}

#[test]
fn a_unit_given_alone_is_accepted_on_its_output_unless_drawn_for_a_check() {
    let output = Some(Verdict::Output {
        hash: BlobHash::of(b"x"),
        fuel: 1,
    });
    let back = [replica(1, ReplicaState::Returned, output)];
    assert_eq!(quorum_now(1, 2, &back, || false), (1, None));
    assert_eq!(quorum_now(1, 2, &back, || true), (2, Some(2)));
    // Still running: nothing changes, and nothing is drawn.
    let running = [replica(1, ReplicaState::InProgress, None)];
    assert_eq!(quorum_now(1, 3, &running, || unreachable!()), (1, None));
    // A timeout or an error goes back to the job's quorum.
    let lost = [replica(1, ReplicaState::TimedOut, None)];
    assert_eq!(quorum_now(1, 3, &lost, || unreachable!()), (3, Some(3)));
    // A job of quorum 1 has nothing to go back to.
    assert_eq!(quorum_now(1, 1, &lost, || unreachable!()), (1, None));
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let bad = Trust {
        spot_check: 1.5,
        ..Trust::default()
    };
    assert!(bad.validate().unwrap_err().contains("trust.spot_check"));
    let bad = Trust {
        threshold: 0,
        ..Trust::default()
    };
    assert!(bad.validate().unwrap_err().contains("trust.threshold"));
    assert!(Trust::default().validate().is_ok());
    let bad = Trust {
        min_account_age_secs: MIN_ACCOUNT_AGE_SECS_MAX + 1,
        ..Trust::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("trust.min_account_age_secs")
    );
}

#[test]
fn an_account_is_seasoned_once_it_is_old_enough_and_always_with_the_rule_off() {
    let day = Trust {
        min_account_age_secs: 86_400,
        ..Trust::default()
    };
    assert!(!day.seasoned(0, DAY_MS - 1));
    assert!(day.seasoned(0, DAY_MS));
    assert!(day.age_rule(false));
    assert!(!day.age_rule(true), "the job opts out");
    let off = Trust::default();
    assert!(off.seasoned(0, 0));
    assert!(off.seasoned(10, 0), "even a clock that went back");
    assert!(!off.age_rule(false));
}
