//! The account-age rule through the store (`trust.min_account_age_secs`):
//! young accounts agreeing do not get a unit accepted, a seasoned vote
//! does; such a unit goes to seasoned workers only and holds up nobody
//! else; it waits, rather than starving, while no seasoned worker is
//! active; a job may opt out, and the rule off changes nothing.

use crate::fixture::{Fixture, T0, open, trust};
use coordinator::store::{Trust, WorkerRow};
use protocol::{JobId, JobState, JobStatus, Validation};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The rule on: a quorum needs a vote of an account a day old.
fn aged() -> Trust {
    Trust {
        min_account_age_secs: 86_400,
        ..trust()
    }
}

/// A worker of a seasoned account: created a day before `T0`.
async fn seasoned(f: &Fixture, name: &str) -> WorkerRow {
    f.worker_since(name, name, 1, T0 - DAY_MS).await
}

/// A worker of an account created at `T0`.
async fn young(f: &Fixture, name: &str) -> WorkerRow {
    f.worker(name, name, 1).await
}

async fn status(f: &Fixture, job: JobId) -> JobStatus {
    f.store.job_status(job).await.unwrap().unwrap()
}

/// Two young workers lease the job's one unit and return the honest
/// answer at `T0`.
async fn two_young_votes(f: &Fixture) {
    for name in ["young-a", "young-b"] {
        let w = young(f, name).await;
        let lease = f.lease(&w, 1, T0).await.remove(0);
        f.honest(&w, &lease, T0).await;
    }
}

#[tokio::test]
async fn two_young_accounts_agreeing_do_not_get_a_unit_accepted_and_a_seasoned_vote_does() {
    let f = open(aged()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    let old = seasoned(&f, "old").await;
    two_young_votes(&f).await;
    let s = status(&f, job).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (0, 1));
    // Another young account cannot give the vote it waits for.
    let newcomer = young(&f, "young-c").await;
    assert!(f.lease(&newcomer, 1, T0).await.is_empty());
    // A seasoned one can, and its agreeing vote accepts the unit.
    let lease = f.lease(&old, 1, T0).await.remove(0);
    f.honest(&old, &lease, T0).await;
    let s = status(&f, job).await;
    assert_eq!(s.state, JobState::Reducing, "{s:?}");
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (1, 0));
    f.aggregates_agree(job).await;
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[tokio::test]
async fn a_job_that_accepts_young_accounts_is_settled_by_two_young_votes() {
    let f = open(aged()).await;
    let job = f
        .job(
            1,
            Validation {
                young_accounts: true,
                ..Validation::quorum(2, 4)
            },
        )
        .await;
    two_young_votes(&f).await;
    let s = status(&f, job).await;
    assert_eq!(s.units_accepted, 1, "{s:?}");
    assert!(s.validation.young_accounts, "the opt-out is stored");
}

#[tokio::test]
async fn with_the_rule_off_two_young_votes_settle_a_unit_as_before() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    two_young_votes(&f).await;
    let s = status(&f, job).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (1, 0));
}

/// Seventy units wait for a seasoned vote at the head of the queue, more
/// than a batch reads at once: young workers get the units behind them,
/// alone or in a batch with a seasoned worker, who gets one of them.
#[tokio::test]
async fn a_young_worker_is_not_given_a_unit_waiting_for_a_seasoned_vote_nor_held_up_by_it() {
    let f = open(Trust {
        initial_leases: 4096,
        ..aged()
    })
    .await;
    let waiting = f.job(70, Validation::quorum(2, 4)).await;
    for name in ["young-a", "young-b"] {
        let w = f.worker(name, name, 64).await;
        let leases = f.lease(&w, 70, T0).await;
        assert_eq!(leases.len(), 70);
        for lease in &leases {
            f.honest(&w, lease, T0).await;
        }
    }
    assert_eq!(status(&f, waiting).await.units_waiting_for_seasoned, 70);
    let behind = f.job(3, Validation::quorum(2, 4)).await;
    // Alone: a batch of young workers does not read them at all.
    let d = young(&f, "young-d").await;
    let leases = f.lease(&d, 2, T0).await;
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.job_id == behind), "{leases:?}");
    // With a seasoned worker in the batch they are read, and a young
    // worker looks past them.
    let old = seasoned(&f, "old").await;
    let e = young(&f, "young-e").await;
    let answers = f
        .store
        .lease_together(&[(old.clone(), 1), (e.clone(), 1)], T0)
        .await
        .unwrap();
    assert_eq!(answers[0].len(), 1);
    assert_eq!(answers[0][0].job_id, waiting, "the seasoned worker");
    assert_eq!(answers[1].len(), 1);
    assert_eq!(answers[1][0].job_id, behind, "the young worker");
    f.honest(&old, &answers[0][0], T0).await;
    let s = status(&f, waiting).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (1, 69));
}

/// The votes' age is taken when they came back: two accounts that voted
/// while young and have aged since still have young votes, so a seasoned
/// vote that disagrees does not let theirs settle the unit.
#[tokio::test]
async fn votes_cast_while_young_stay_young_after_their_accounts_age() {
    let f = open(aged()).await;
    let job = f.job(1, Validation::quorum(2, 5)).await;
    two_young_votes(&f).await;
    let later = T0 + 2 * DAY_MS;
    let liar = seasoned(&f, "liar").await;
    let lease = f.lease(&liar, 1, later).await.remove(0);
    f.upload(&liar, &lease, b"a seasoned lie", 100, later)
        .await
        .unwrap();
    let s = status(&f, job).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (0, 1));
    // A seasoned vote for the majority settles it; the liar is invalid.
    let old = seasoned(&f, "old").await;
    let lease = f.lease(&old, 1, later).await.remove(0);
    f.honest(&old, &lease, later).await;
    assert_eq!(status(&f, job).await.units_accepted, 1);
    assert_eq!(f.status_of(&liar).await.invalid, 1);
    f.aggregates_agree(job).await;
}

/// Young workers keep asking and no seasoned worker is active: the unit
/// waits (with its reason in the job's status) for lease period after
/// lease period instead of failing as starved; a seasoned worker that
/// comes back takes it.
#[tokio::test]
async fn a_unit_waiting_for_a_seasoned_vote_does_not_starve_while_no_seasoned_worker_is_active() {
    let f = open(aged()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    // Registered a day ago and not seen since: not active.
    let old = seasoned(&f, "old").await;
    let a = young(&f, "young-a").await;
    let b = young(&f, "young-b").await;
    for w in [&a, &b] {
        let lease = f.lease(w, 1, T0).await.remove(0);
        f.honest(w, &lease, T0).await;
    }
    for minute in 1..=10 {
        let t = T0 + minute * 60_000;
        assert!(f.lease(&a, 1, t).await.is_empty());
        assert!(f.lease(&b, 1, t).await.is_empty());
        let (failed, _) = f.store.sweep_starved(t).await.unwrap();
        assert_eq!(failed, 0, "minute {minute}");
    }
    let s = status(&f, job).await;
    assert_eq!(s.state, JobState::Running);
    assert_eq!(s.units_waiting_for_seasoned, 1);
    let t = T0 + 11 * 60_000;
    let lease = f.lease(&old, 1, t).await.remove(0);
    f.honest(&old, &lease, t).await;
    assert_eq!(status(&f, job).await.units_accepted, 1);
}

/// A seasoned worker is active but holds a replica of the unit already:
/// nobody may give the vote it waits for, so it starves as usual and
/// fails two lease periods later, naming the rule.
#[tokio::test]
async fn a_unit_no_active_seasoned_worker_may_take_fails_as_starved_naming_the_rule() {
    let f = open(aged()).await;
    let job = f.job(1, Validation::quorum(2, 5)).await;
    let a = young(&f, "young-a").await;
    let b = young(&f, "young-b").await;
    let liar = seasoned(&f, "liar").await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    let ll = f.lease(&liar, 1, T0).await.remove(0);
    f.honest(&a, &la, T0).await;
    f.upload(&liar, &ll, b"a seasoned lie", 100, T0)
        .await
        .unwrap();
    let lb = f.lease(&b, 1, T0).await.remove(0);
    f.honest(&b, &lb, T0).await;
    assert_eq!(status(&f, job).await.units_waiting_for_seasoned, 1);
    let ask = |t: i64| {
        let (f, a, b, liar) = (&f, &a, &b, &liar);
        async move {
            for w in [a, b, liar] {
                assert!(f.lease(w, 1, t).await.is_empty());
            }
            f.store.sweep_starved(t).await.unwrap().0
        }
    };
    assert_eq!(ask(T0).await, 0, "noted starved");
    assert_eq!(ask(T0 + 119_000).await, 0, "not yet two lease periods");
    assert_eq!(ask(T0 + 120_000).await, 1);
    let s = status(&f, job).await;
    assert_eq!(s.state, JobState::Failed);
    let error = s.error.unwrap_or_default();
    assert!(
        error.contains("no active worker of a seasoned account can take another")
            && error.contains("trust.min_account_age_secs"),
        "{error}"
    );
    f.aggregates_agree(job).await;
}

/// The rule is a setting of each start: a unit that waited for a seasoned
/// vote under the last start's rule is settled again under this one's
/// (`Store::open_sqlite` marks it for the expiry round). Restarted with
/// the rule off, its two young votes accept it at the next expiry round,
/// though no lease expires and no result comes back to settle it;
/// otherwise it would wait for a seasoned vote nobody asks for any more.
#[tokio::test]
async fn a_unit_waiting_for_a_seasoned_vote_is_settled_again_when_the_store_reopens_with_the_rule_off()
 {
    let f = open(aged()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    two_young_votes(&f).await;
    let s = status(&f, job).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (0, 1));
    let f = f.reopen(trust()).await;
    // Opening settles nothing itself: the expiry round does.
    let s = status(&f, job).await;
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (0, 1));
    let (expired, effects) = f.store.expire_leases(T0 + 1_000).await.unwrap();
    assert_eq!(expired, 0, "no lease expires");
    let s = status(&f, job).await;
    assert_eq!(
        (s.units_accepted, s.units_waiting_for_seasoned),
        (1, 0),
        "settled again under the rule of this start (off): {s:?}"
    );
    assert_eq!(s.state, JobState::Reducing, "{s:?}");
    assert_eq!(effects.jobs_to_reduce, vec![job]);
    f.aggregates_agree(job).await;
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
}
