//! Settling's bound of rounds, reached on purpose: in this crate's unit
//! tests [`super::MAX_ROUNDS`] is one, so a catch whose backtracking
//! reopens a unit leaves that unit for the expiry round.

use crate::store::{LeaseRow, NewJob, Store, Trust, Upload, WorkerRow};
use protocol::{BlobHash, JobId, JobState, Limits, Outcome, Platform, Validation, WorkerId};

const T0: i64 = 1_800_000_000_000;

async fn worker(store: &Store, name: &str) -> WorkerRow {
    let key = format!("key-{name}");
    store.create_account(name, name, &key, T0).await.unwrap();
    let platform = Platform {
        arch: "x86_64".into(),
        os: "linux".into(),
        engine: "test-engine".into(),
        protocol: protocol::PROTOCOL_VERSION,
    };
    let token = format!("token-{name}");
    store
        .register_worker(WorkerId::random(), name, &token, &platform, 1, name, T0)
        .await
        .unwrap();
    store.worker_by_token(&token).await.unwrap().unwrap()
}

async fn lease(store: &Store, worker: &WorkerRow) -> LeaseRow {
    store.lease(worker, 1, T0).await.unwrap().remove(0)
}

/// Uploads `output` for `lease`; an error of the store fails the test.
async fn upload(store: &Store, worker: &WorkerRow, lease: &LeaseRow, output: &[u8]) {
    let upload = Upload {
        worker: worker.id,
        replica: lease.replica_id,
        outcome: Outcome::Success {
            output: output.to_vec().into(),
        },
        fuel_used: 100,
    };
    let answer = store.record_result(upload, T0).await.unwrap();
    answer.expect("the upload is admitted");
}

/// A catch whose backtracking needs a second round: the upload that
/// catches is recorded, the unit the catch reopened waits (wanting no
/// replica) until the expiry round settles it, and then it is redone.
#[tokio::test]
async fn units_past_the_bound_of_rounds_are_left_for_the_expiry_round() {
    let dir = tempfile::tempdir().unwrap();
    let trust = Trust {
        seed: Some(1),
        spot_check: 0.0,
        ..Trust::default()
    };
    let store = Store::open_sqlite(&dir.path().join("store.sqlite"), trust)
        .await
        .unwrap();
    let module = store.put_blob(b"\0asm test module", T0).await.unwrap();
    let job = JobId::random();
    let new = NewJob {
        id: job,
        name: "rounds".into(),
        module,
        input: None::<BlobHash>,
        limits: Limits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        lease_secs: 60,
        validation: Validation::quorum(2, 4),
        submitter: None,
        priority: 0,
    };
    let inputs = vec![b"0".to_vec(), b"1".to_vec()];
    store.create_job(&new, Some(&inputs), T0).await.unwrap();
    let (a, b, c) = (
        worker(&store, "a").await,
        worker(&store, "b").await,
        worker(&store, "c").await,
    );
    // The first unit is accepted on a's and b's word.
    let (la, lb) = (lease(&store, &a).await, lease(&store, &b).await);
    assert_eq!(la.unit_id, lb.unit_id);
    let first = la.unit_id;
    upload(&store, &a, &la, &la.input).await;
    upload(&store, &b, &lb, &lb.input).await;
    // On the second, a lies and is caught by b and c: the first unit,
    // which no trusted worker confirmed, is reopened (round one), and
    // settling it would be round two.
    let (la, lb) = (lease(&store, &a).await, lease(&store, &b).await);
    upload(&store, &a, &la, b"a lie").await;
    upload(&store, &b, &lb, &lb.input).await;
    let lc = lease(&store, &c).await;
    assert_eq!(lc.unit_id, lb.unit_id);
    upload(&store, &c, &lc, &lc.input).await;
    let s = store.job_status(job).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_accepted), (JobState::Running, 1), "{s:?}");
    // Left for later: it wants no replica yet.
    assert!(store.lease(&c, 1, T0).await.unwrap().is_empty());
    let (expired, _) = store.expire_leases(T0).await.unwrap();
    assert_eq!(expired, 0);
    // Settled now: it wants one more replica, and c's agrees with b's.
    let lc = lease(&store, &c).await;
    assert_eq!(lc.unit_id, first);
    upload(&store, &c, &lc, &lc.input).await;
    let s = store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Reducing, "{s:?}");
    let wrong = store.verify_job_aggregates(&job.to_string()).await.unwrap();
    assert!(wrong.is_empty(), "aggregates disagree: {wrong:?}");
    let wrong = store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "worker counters disagree: {wrong:?}");
}
