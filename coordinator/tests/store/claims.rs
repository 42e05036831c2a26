//! Split and reduce claims: one holder per job and duty, taken over only
//! after it expires, and every write of the duty fenced by it.

use crate::fixture::{T0, open, trust};
use coordinator::allowance::Allowance;
use coordinator::store::{CLAIM_TTL_MS, Duty, Error, NewJob};
use protocol::{BlobHash, JobId, JobState, Limits, Validation};

async fn splitting_job(f: &crate::fixture::Fixture) -> JobId {
    let module = f.store.put_blob(b"\0asm splitter", T0).await.unwrap();
    let job = JobId::random();
    let new = NewJob {
        id: job,
        name: "split me".into(),
        module,
        input: None::<BlobHash>,
        limits: Limits {
            fuel: 1_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        lease_secs: 60,
        validation: Validation::quorum(1, 2),
        submitter: None,
        priority: 0,
    };
    f.store.create_job(&new, None, T0).await.unwrap();
    job
}

#[tokio::test]
async fn a_split_is_claimed_once_and_its_writes_run_under_the_claim() {
    let f = open(trust()).await;
    let job = splitting_job(&f).await;
    let claim = f
        .store
        .claim(job, Duty::Split, "node-a", T0)
        .await
        .unwrap()
        .expect("free");
    assert!(
        f.store
            .claim(job, Duty::Split, "node-a", T0 + 1)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    // Another duty of the same job is another claim.
    assert!(
        f.store
            .claim(job, Duty::Reduce, "node-a", T0)
            .await
            .unwrap()
            .is_some()
    );
    f.store.discard_units(&claim, T0).await.unwrap();
    f.store
        .add_units(
            &claim,
            0,
            &[b"a".to_vec(), b"b".to_vec()],
            1,
            &Allowance::default(),
            T0,
        )
        .await
        .unwrap();
    f.store.finish_split(&claim, 2, T0).await.unwrap();
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_total), (JobState::Running, 2));
    f.store.release_claim(&claim).await.unwrap();
    assert!(
        f.store
            .claim(job, Duty::Split, "node-a", T0)
            .await
            .unwrap()
            .is_some(),
        "released"
    );
}

#[tokio::test]
async fn a_claim_that_ran_out_is_taken_over_and_its_old_holder_can_write_nothing() {
    let f = open(trust()).await;
    let job = splitting_job(&f).await;
    let old = f
        .store
        .claim(job, Duty::Split, "node-a", T0)
        .await
        .unwrap()
        .unwrap();
    // A write of the duty renews the claim: written at T0 + 1000, it holds
    // until T0 + 1000 + TTL, past the first expiry at T0 + TTL.
    f.store
        .add_units(
            &old,
            0,
            &[b"a".to_vec()],
            1,
            &Allowance::default(),
            T0 + 1_000,
        )
        .await
        .unwrap();
    let renewed_until = T0 + 1_000 + CLAIM_TTL_MS;
    for at in [T0 + CLAIM_TTL_MS + 1, renewed_until] {
        let taken = f.store.claim(job, Duty::Split, "node-b", at).await.unwrap();
        assert!(taken.is_none(), "still held at {at}");
    }
    let later = renewed_until + 1;
    let new = f
        .store
        .claim(job, Duty::Split, "node-b", later)
        .await
        .unwrap()
        .expect("expired");
    for refused in [
        f.store
            .add_units(&old, 1, &[b"b".to_vec()], 1, &Allowance::default(), later)
            .await,
        f.store.finish_split(&old, 2, later).await.map(|_| ()),
        f.store.discard_units(&old, later).await,
        f.store.renew(&old, later).await,
        f.store.fail_duty(&old, "a stale failure", later).await,
    ] {
        assert!(
            matches!(refused, Err(Error::ClaimLost { .. })),
            "{refused:?}"
        );
    }
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(
        s.state,
        JobState::Splitting,
        "the old holder finished nothing"
    );
    // The new holder starts over and finishes.
    f.store.discard_units(&new, later).await.unwrap();
    f.store
        .add_units(&new, 0, &[b"x".to_vec()], 1, &Allowance::default(), later)
        .await
        .unwrap();
    f.store.finish_split(&new, 1, later).await.unwrap();
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_total), (JobState::Running, 1));
}

#[tokio::test]
async fn a_reduce_finishes_the_job_only_under_its_claim() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(1, 2)).await;
    let w = f.worker("w", "alice", 1).await;
    let l = f.lease(&w, 1, T0).await.remove(0);
    f.honest(&w, &l, T0).await;
    let claim = f
        .store
        .claim(job, Duty::Reduce, "node-a", T0)
        .await
        .unwrap()
        .unwrap();
    let stolen = f
        .store
        .claim(job, Duty::Reduce, "node-a", T0 + 2 * CLAIM_TTL_MS)
        .await
        .unwrap()
        .unwrap();
    let refused = f
        .store
        .finish_job(&claim, b"output", T0 + 2 * CLAIM_TTL_MS)
        .await;
    assert!(
        matches!(refused, Err(Error::ClaimLost { .. })),
        "{refused:?}"
    );
    assert_eq!(
        f.store.job_status(job).await.unwrap().unwrap().state,
        JobState::Reducing
    );
    f.store
        .finish_job(&stolen, b"output", T0 + 2 * CLAIM_TTL_MS)
        .await
        .unwrap();
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Done);
    assert_eq!(s.output, Some(BlobHash::of(b"output")));
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_restarted_coordinator_takes_back_what_its_node_held_and_only_that() {
    let f = open(trust()).await;
    let a = splitting_job(&f).await;
    let b = splitting_job(&f).await;
    f.store
        .claim(a, Duty::Split, "node-a", T0)
        .await
        .unwrap()
        .unwrap();
    f.store
        .claim(b, Duty::Split, "node-b", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.store.release_claims_of("node-a").await.unwrap(), 1);
    assert!(
        f.store
            .claim(a, Duty::Split, "node-a", T0)
            .await
            .unwrap()
            .is_some(),
        "free at once"
    );
    assert!(
        f.store
            .claim(b, Duty::Split, "node-a", T0)
            .await
            .unwrap()
            .is_none(),
        "node-b's stays"
    );
    // A node whose name is a prefix of another's releases only its own.
    assert_eq!(f.store.release_claims_of("node").await.unwrap(), 0);
}
