//! Trust through the store: a worker trusted after a streak takes units
//! alone; caught lying, the units accepted on its word are reopened and
//! their credit taken back; an audit catches one that lied while trusted.

use crate::fixture::{T0, open};
use coordinator::store::Trust;
use protocol::{JobState, UploadStatus, Validation};

fn trust() -> Trust {
    Trust {
        threshold: 2,
        spot_check: 0.0,
        seed: Some(3),
        ..Trust::default()
    }
}

fn adaptive(quorum: u32, max: u32) -> Validation {
    Validation {
        adaptive: true,
        ..Validation::quorum(quorum, max)
    }
}

#[tokio::test]
async fn a_caught_worker_has_the_units_it_alone_vouched_for_reopened_and_their_credit_taken_back() {
    let f = open(trust()).await;
    // The catch: a plain job whose unit is first in the queue.
    let trap = f.job(1, Validation::quorum(2, 4)).await;
    let job = f.job(4, adaptive(2, 4)).await;
    let cheat = f.worker("cheat", "mallory", 2).await;
    let h1 = f.worker("h1", "alice", 2).await;
    let h2 = f.worker("h2", "bob", 2).await;
    let cheat_trap = f.lease(&cheat, 1, T0).await.remove(0);
    let h2_trap = f.lease(&h2, 1, T0).await.remove(0);
    assert_eq!((cheat_trap.job_id, h2_trap.job_id), (trap, trap));
    // Trust, earned honestly on two units confirmed by h1.
    for _ in 0..2 {
        let lc = f.lease(&cheat, 1, T0).await.remove(0);
        let lh = f.lease(&h1, 1, T0).await.remove(0);
        assert_eq!(lc.unit_id, lh.unit_id);
        f.honest(&cheat, &lc, T0).await;
        f.honest(&h1, &lh, T0).await;
    }
    assert!(f.status_of(&cheat).await.trusted);
    // Trusted, it takes a fresh unit alone and lies: accepted on its word.
    let alone = f.lease(&cheat, 1, T0).await.remove(0);
    assert_eq!(alone.job_id, job);
    f.upload(&cheat, &alone, b"lie", 100, T0).await.unwrap();
    assert_eq!(
        f.store
            .job_status(job)
            .await
            .unwrap()
            .unwrap()
            .units_accepted,
        3
    );
    assert_eq!(f.credit_of(&cheat).await, 300);
    // Caught on the trap: h2 and then h1 outvote it.
    f.upload(&cheat, &cheat_trap, b"lie", 100, T0)
        .await
        .unwrap();
    f.honest(&h2, &h2_trap, T0).await;
    let h1_trap = f.lease(&h1, 1, T0).await.remove(0);
    assert_eq!(h1_trap.unit_id, cheat_trap.unit_id);
    let (status, effects) = f
        .upload(&h1, &h1_trap, &h1_trap.input, 100, T0)
        .await
        .unwrap();
    assert_eq!(status, UploadStatus::Accepted);
    assert_eq!(
        effects.reopened, 1,
        "the unit it alone vouched for; the confirmed ones stay"
    );
    let s = f.status_of(&cheat).await;
    assert_eq!(
        (s.invalid, s.valid, s.credit_fuel, s.trusted),
        (1, 2, 200, false)
    );
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.units_accepted, 2);
    f.aggregates_agree(job).await;
    f.aggregates_agree(trap).await;
}

#[tokio::test]
async fn an_audit_before_the_output_catches_a_worker_that_lied_while_trusted() {
    let f = open(trust()).await;
    let job = f.job(3, adaptive(2, 4)).await;
    let cheat = f.worker("cheat", "mallory", 2).await;
    let h1 = f.worker("h1", "alice", 2).await;
    let h2 = f.worker("h2", "bob", 2).await;
    for _ in 0..2 {
        let lc = f.lease(&cheat, 1, T0).await.remove(0);
        let lh = f.lease(&h1, 1, T0).await.remove(0);
        f.honest(&cheat, &lc, T0).await;
        f.honest(&h1, &lh, T0).await;
    }
    let alone = f.lease(&cheat, 1, T0).await.remove(0);
    let (_, effects) = f.upload(&cheat, &alone, b"lie", 100, T0).await.unwrap();
    assert!(effects.jobs_to_reduce.is_empty(), "the audit comes first");
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(
        (s.state, s.units_accepted),
        (JobState::Running, 2),
        "its last unit alone is checked again"
    );
    // Two honest replicas outvote it; the unit and the job complete.
    let l1 = f.lease(&h1, 1, T0).await.remove(0);
    assert_eq!(l1.unit_id, alone.unit_id);
    f.honest(&h1, &l1, T0).await;
    let l2 = f.lease(&h2, 1, T0).await.remove(0);
    let (_, effects) = f.upload(&h2, &l2, &l2.input, 100, T0).await.unwrap();
    assert_eq!(effects.jobs_to_reduce, vec![job]);
    let s = f.status_of(&cheat).await;
    assert_eq!((s.invalid, s.credit_fuel), (1, 200));
    assert_eq!(f.store.accepted_outputs(job).await.unwrap()[2], alone.input);
    f.aggregates_agree(job).await;
}

/// A job whose one unit cheat and h1 accepted together (h1 not trusted
/// yet), and a trap unit on which cheat lied and h2 answered; `catch` has
/// h3 outvote cheat there, which reopens the job's unit.
struct Trap {
    f: crate::fixture::Fixture,
    trap: protocol::JobId,
    job: protocol::JobId,
    cheat: coordinator::store::WorkerRow,
    h3: coordinator::store::WorkerRow,
}

impl Trap {
    async fn set(compare: bool) -> Trap {
        let f = open(Trust {
            threshold: 10,
            ..trust()
        })
        .await;
        let trap = f.job(1, Validation::quorum(2, 4)).await;
        let job = f
            .job(
                1,
                Validation {
                    compare,
                    ..Validation::quorum(2, 4)
                },
            )
            .await;
        let cheat = f.worker("cheat", "mallory", 2).await;
        let h1 = f.worker("h1", "alice", 2).await;
        let h2 = f.worker("h2", "bob", 2).await;
        let h3 = f.worker("h3", "carol", 2).await;
        let cheat_trap = f.lease(&cheat, 1, T0).await.remove(0);
        let h2_trap = f.lease(&h2, 1, T0).await.remove(0);
        let lc = f.lease(&cheat, 1, T0).await.remove(0);
        let lh = f.lease(&h1, 1, T0).await.remove(0);
        assert_eq!((lc.job_id, lh.job_id), (job, job));
        f.honest(&cheat, &lc, T0).await;
        let (_, effects) = f.upload(&h1, &lh, &lh.input, 100, T0).await.unwrap();
        assert_eq!(effects.jobs_to_reduce, vec![job]);
        f.upload(&cheat, &cheat_trap, b"lie", 100, T0)
            .await
            .unwrap();
        f.honest(&h2, &h2_trap, T0).await;
        Trap {
            f,
            trap,
            job,
            cheat,
            h3,
        }
    }

    /// h3 outvotes cheat on the trap: cheat is caught.
    async fn catch(&self) -> coordinator::store::Effects {
        let l = self.f.lease(&self.h3, 1, T0).await.remove(0);
        assert_eq!(l.job_id, self.trap);
        let (_, effects) = self
            .f
            .upload(&self.h3, &l, &l.input, 100, T0)
            .await
            .unwrap();
        effects
    }
}

#[tokio::test]
async fn a_caught_worker_reopens_the_job_it_and_an_untrusted_worker_accepted() {
    let t = Trap::set(false).await;
    assert_eq!(t.catch().await.reopened, 1);
    let s = t.f.store.job_status(t.job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_accepted), (JobState::Running, 0));
    t.f.aggregates_agree(t.job).await;
}

#[tokio::test]
async fn a_reduce_claimed_before_backtracking_cannot_publish_its_output() {
    use coordinator::store::{Duty, Error};
    let t = Trap::set(false).await;
    // A coordinator starts reducing the job; meanwhile cheat is caught.
    let claim =
        t.f.store
            .claim(t.job, Duty::Reduce, "node-a", T0)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(t.catch().await.reopened, 1);
    let refused = t.f.store.finish_job(&claim, b"stale", T0).await;
    assert!(
        matches!(refused, Err(Error::ClaimLost { .. })),
        "{refused:?}"
    );
    let s = t.f.store.job_status(t.job).await.unwrap().unwrap();
    assert_eq!((s.state, s.output), (JobState::Running, None));
}

#[tokio::test]
async fn backtracking_a_compare_job_takes_back_exactly_the_credit_it_granted() {
    // Replicas of `compare` jobs are credited nothing (their fuel need not
    // agree); backtracking used to take back their fuel anyway.
    let t = Trap::set(true).await;
    assert_eq!(t.catch().await.reopened, 1);
    let s = t.f.status_of(&t.cheat).await;
    assert_eq!((s.credit_fuel, s.valid, s.invalid), (0, 0, 1));
    let all = t.f.store.workers(10, T0).await.unwrap();
    let h1 = all.iter().find(|w| w.name == "h1").unwrap();
    assert_eq!(
        (h1.credit_fuel, h1.valid),
        (0, 0),
        "its judgement is taken back too"
    );
    let accounts = t.f.store.accounts(10, T0).await.unwrap();
    assert!(
        accounts.iter().all(|a| a.recent_credit >= 0.0),
        "{accounts:?}"
    );
    t.f.aggregates_agree(t.job).await;
}

/// A trusted worker takes a fresh unit alone (quorum 1) and gives the lease
/// back (it stopped, or restarted and did not name it): the unit needs the
/// job's quorum again, so whoever takes it next, trusted or not, does not
/// settle it alone. The job has a unit more, still open: were the given-back
/// unit the last to settle, the job's audit would reopen it anyway and hide
/// a unit accepted alone.
#[tokio::test]
async fn a_unit_given_back_by_a_trusted_worker_that_took_it_alone_needs_the_jobs_quorum() {
    let f = open(trust()).await;
    let job = f.job(4, adaptive(2, 4)).await;
    let t = f.worker("t", "trusted", 2).await;
    let h = f.worker("h", "helper", 2).await;
    for _ in 0..2 {
        let lt = f.lease(&t, 1, T0).await.remove(0);
        let lh = f.lease(&h, 1, T0).await.remove(0);
        assert_eq!(lt.unit_id, lh.unit_id);
        f.honest(&t, &lt, T0).await;
        f.honest(&h, &lh, T0).await;
    }
    assert!(f.status_of(&t).await.trusted);
    let alone = f.lease(&t, 1, T0).await.remove(0);
    f.store
        .release(t.id, alone.replica_id, T0)
        .await
        .unwrap()
        .unwrap();
    let stranger = f.worker("u", "stranger", 2).await;
    let lu = f.lease(&stranger, 1, T0).await.remove(0);
    assert_eq!(lu.unit_id, alone.unit_id);
    f.honest(&stranger, &lu, T0).await;
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(
        s.units_accepted, 2,
        "a stranger's one result is not accepted alone"
    );
    let open_units = f.store.units(job, Some("open"), 10).await.unwrap();
    assert!(open_units.iter().any(|u| u.id == alone.unit_id));
    f.aggregates_agree(job).await;
}
