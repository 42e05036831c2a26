//! A unit's life through the store: leased, returned, judged, accepted or
//! failed; leases given back, timed out, kept alive by heartbeats; jobs
//! cancelled. Each scenario ends with the dashboard's aggregates recounted.

use crate::fixture::{T0, open, trust};
use coordinator::store::Refusal;
use protocol::{Heartbeat, JobState, Outcome, ReplicaId, UnitProgress, UploadStatus, Validation};

#[tokio::test]
async fn leasing_hands_each_unit_out_quorum_times_and_never_twice_to_one_account() {
    let f = open(trust()).await;
    let job = f.job(3, Validation::quorum(2, 4)).await;
    let a1 = f.worker("a1", "alice", 4).await;
    let a2 = f.worker("a2", "alice", 4).await;
    let b = f.worker("b", "bob", 4).await;
    let c = f.worker("c", "carol", 4).await;
    let first = f.lease(&a1, 8, T0).await;
    assert_eq!(first.len(), 3, "every unit once");
    assert!(
        f.lease(&a2, 8, T0).await.is_empty(),
        "alice's other machine confirms nothing of hers"
    );
    let second = f.lease(&b, 8, T0).await;
    assert_eq!(second.len(), 3);
    assert!(
        f.lease(&c, 8, T0).await.is_empty(),
        "each unit has its quorum in flight"
    );
    let mut units: Vec<_> = first.iter().chain(&second).map(|l| l.unit_id).collect();
    units.sort();
    units.dedup();
    assert_eq!(units.len(), 3);
    assert!(
        first
            .iter()
            .all(|l| l.job_id == job && l.deadline_ms == T0 + 60_000)
    );
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn the_lease_cap_is_two_per_slot_whatever_the_worker_asks() {
    let f = open(trust()).await;
    f.job(10, Validation::quorum(1, 2)).await;
    let w = f.worker("w", "alice", 2).await;
    assert_eq!(f.lease(&w, 100, T0).await.len(), 4);
    assert!(f.lease(&w, 100, T0).await.is_empty(), "four held: no room");
}

#[tokio::test]
async fn two_agreeing_results_accept_the_unit_and_credit_each_worker_once() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    let lb = f.lease(&b, 1, T0).await.remove(0);
    assert_eq!(f.honest(&a, &la, T0 + 1).await, UploadStatus::Accepted);
    let (status, effects) = f.upload(&b, &lb, &lb.input, 100, T0 + 2).await.unwrap();
    assert_eq!(status, UploadStatus::Accepted);
    assert_eq!(effects.jobs_to_reduce, vec![job], "its last unit settled");
    // A repeat changes nothing, and credits nothing again.
    assert_eq!(
        f.honest(&b, &lb, T0 + 3).await,
        UploadStatus::AlreadyReceived
    );
    assert_eq!(f.credit_of(&a).await, 100);
    assert_eq!(f.credit_of(&b).await, 100);
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_accepted), (JobState::Reducing, 1));
    assert_eq!(
        f.store.accepted_outputs(job).await.unwrap(),
        vec![b"0".to_vec()]
    );
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn uploads_not_leased_to_the_uploader_over_the_limits_or_conflicting_are_refused() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    assert_eq!(
        f.upload(&b, &la, b"0", 100, T0).await.unwrap_err(),
        Refusal::NotYours
    );
    let mut ghost = la.clone();
    ghost.replica_id = ReplicaId(9_999_999);
    assert_eq!(
        f.upload(&a, &ghost, b"0", 100, T0).await.unwrap_err(),
        Refusal::NoSuchReplica
    );
    let huge = vec![0u8; 2 << 10];
    assert_eq!(
        f.upload(&a, &la, &huge, 100, T0).await.unwrap_err(),
        Refusal::OverLimits
    );
    assert_eq!(
        f.upload(&a, &la, b"0", 1_000_001, T0).await.unwrap_err(),
        Refusal::OverLimits
    );
    // None of those changed the replica: the real upload is the first.
    assert_eq!(f.honest(&a, &la, T0).await, UploadStatus::Accepted);
    assert_eq!(
        f.upload(&a, &la, b"1", 100, T0).await.unwrap_err(),
        Refusal::Conflict
    );
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_released_lease_goes_back_to_the_queue_without_a_timeout() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let c = f.worker("c", "carol", 1).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    f.lease(&b, 1, T0).await.remove(0);
    assert!(
        f.lease(&c, 1, T0).await.is_empty(),
        "quorum 2: two in flight are enough"
    );
    assert_eq!(
        f.store
            .release(b.id, la.replica_id, T0)
            .await
            .unwrap()
            .unwrap_err(),
        Refusal::NotYours
    );
    f.store
        .release(a.id, la.replica_id, T0)
        .await
        .unwrap()
        .unwrap();
    f.store
        .release(a.id, la.replica_id, T0)
        .await
        .unwrap()
        .unwrap(); // a repeat changes nothing
    assert_eq!(f.status_of(&a).await.timeouts, 0);
    assert_eq!(
        f.lease(&c, 1, T0).await.len(),
        1,
        "the unit is wanted again at once"
    );
    // The unit wants a replica, but never a second one from a's worker.
    f.store.expire_leases(T0 + 60_001).await.unwrap();
    assert!(
        f.lease(&a, 1, T0 + 60_001).await.is_empty(),
        "a worker never holds one unit twice"
    );
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn an_expired_lease_times_out_counts_against_its_worker_and_is_replaced() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(1, 3)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    let (n, _) = f.store.expire_leases(T0 + 60_000).await.unwrap();
    assert_eq!(n, 0, "not before the deadline");
    let (n, _) = f.store.expire_leases(T0 + 60_001).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(f.status_of(&a).await.timeouts, 1);
    assert_eq!(
        f.upload(&a, &la, b"0", 100, T0 + 60_002).await.unwrap_err(),
        Refusal::Expired
    );
    assert_eq!(f.lease(&b, 1, T0 + 60_002).await.len(), 1);
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_lease_past_its_deadline_takes_no_result_before_the_sweep_marks_it() {
    // Issue 12: uploads 100-600 ms after the deadline were accepted until
    // the expiry sweep ran; heartbeats already treated the lease as gone.
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(1, 3)).await;
    let a = f.worker("a", "alice", 1).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    let late = la.deadline_ms + 1;
    assert_eq!(
        f.upload(&a, &la, b"0", 100, late).await.unwrap_err(),
        Refusal::Expired
    );
    let beat = Heartbeat {
        running: vec![UnitProgress {
            replica_id: la.replica_id,
            fuel_used: 10,
        }],
        paused: false,
    };
    let answer = f.store.heartbeat(a.id, beat, late).await.unwrap();
    assert_eq!(
        answer.gone,
        vec![la.replica_id],
        "one rule for uploads and heartbeats"
    );
    f.store
        .release(a.id, la.replica_id, late)
        .await
        .unwrap()
        .unwrap();
    let (n, _) = f.store.expire_leases(late).await.unwrap();
    assert_eq!(
        n, 1,
        "still a timeout: neither the late upload nor the release counted"
    );
    assert_eq!(f.status_of(&a).await.timeouts, 1);
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn heartbeat_progress_extends_a_lease_and_names_replicas_no_longer_held() {
    let f = open(trust()).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    // Extensions are earned: a has a valid result (1,000 fuel/s).
    f.prove(&a, 10_000, 10_000, T0 - 20_000).await;
    let job = f.job(2, Validation::quorum(1, 3)).await;
    let la = f.lease(&a, 1, T0).await.remove(0);
    let lb = f.lease(&b, 1, T0).await.remove(0);
    let beat = |replica_id, fuel_used| Heartbeat {
        running: vec![UnitProgress {
            replica_id,
            fuel_used,
        }],
        paused: false,
    };
    let answer = f
        .store
        .heartbeat(a.id, beat(la.replica_id, 10), T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(answer.leases.len(), 1);
    assert_eq!(answer.leases[0].deadline_ms, T0 + 90_000);
    // Another worker's replica is not a's to extend.
    let answer = f
        .store
        .heartbeat(a.id, beat(lb.replica_id, 10), T0 + 30_000)
        .await
        .unwrap();
    assert_eq!(answer.gone, vec![lb.replica_id]);
    let (n, _) = f.store.expire_leases(T0 + 61_000).await.unwrap();
    assert_eq!(n, 1, "b's lapsed; a's was extended");
    assert_eq!(f.honest(&a, &la, T0 + 62_000).await, UploadStatus::Accepted);
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn disagreement_asks_for_more_replicas_until_max_then_fails_the_unit() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 3)).await;
    let mut workers = Vec::new();
    for name in ["a", "b", "c", "d"] {
        workers.push(f.worker(name, name, 1).await);
    }
    for (i, w) in workers.iter().take(3).enumerate() {
        let l = f.lease(w, 1, T0).await;
        assert_eq!(l.len(), 1, "replica {i} is wanted");
        f.upload(w, &l[0], format!("answer {i}").as_bytes(), 100, T0)
            .await
            .unwrap();
    }
    assert!(
        f.lease(&workers[3], 1, T0).await.is_empty(),
        "max_replicas spent"
    );
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_failed), (JobState::Failed, 1));
    assert!(s.error.unwrap().contains("no quorum of 2 after 3 replicas"));
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn an_agreed_deterministic_failure_fails_the_unit_at_once() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 5)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    for w in [&a, &b] {
        let l = f.lease(w, 1, T0).await.remove(0);
        let upload = coordinator::store::Upload {
            worker: w.id,
            replica: l.replica_id,
            outcome: Outcome::Failure {
                kind: protocol::FailureKind::OutOfFuel,
                message: "out of fuel".into(),
            },
            fuel_used: 1_000_000,
        };
        f.store.record_result(upload, T0).await.unwrap().unwrap();
    }
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_failed), (JobState::Failed, 1));
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_cancelled_job_hands_out_nothing_more_and_cancels_once() {
    let f = open(trust()).await;
    let job = f.job(3, Validation::quorum(1, 2)).await;
    let a = f.worker("a", "alice", 4).await;
    assert!(f.store.cancel_job(job, T0).await.unwrap());
    assert!(!f.store.cancel_job(job, T0).await.unwrap(), "already ended");
    assert!(f.lease(&a, 4, T0).await.is_empty());
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Cancelled);
    f.aggregates_agree(job).await;
}
