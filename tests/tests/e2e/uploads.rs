//! Uploads: only the leaseholder, once; a replay changes nothing.

use protocol::{Outcome, ResultUpload, UploadStatus};
use wasm_at_home_tests::*;

fn result(output: &[u8], fuel: u64) -> ResultUpload {
    ResultUpload {
        outcome: Outcome::Success {
            output: output.to_vec().into(),
        },
        fuel_used: fuel,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_upload_is_answered_as_already_received_and_changes_nothing() {
    let c = TestCoordinator::start().await;
    let job = c.running_job(primes_wasm(), b"1000 2", quorum(1, 2)).await;
    let w = ManualWorker::register(&c.url, "w").await;
    let lease = w.take(1).await.remove(0);
    let r = result(b"x", 10);
    assert_eq!(
        w.client.upload(lease.replica_id, &r).await.unwrap().status,
        UploadStatus::Accepted
    );
    let before = (c.worker(w.id).await, c.status(job).await);
    for _ in 0..3 {
        assert_eq!(
            w.client.upload(lease.replica_id, &r).await.unwrap().status,
            UploadStatus::AlreadyReceived
        );
    }
    let after = (c.worker(w.id).await, c.status(job).await);
    assert_eq!(
        (before.0.valid, before.0.credit_fuel),
        (after.0.valid, after.0.credit_fuel)
    );
    assert_eq!(before.1.units_accepted, after.1.units_accepted);
    assert_eq!(
        after.0.valid, 1,
        "quorum 1: the first upload was accepted and credited once"
    );
    assert_eq!(after.0.credit_fuel, 10);
    // A different result for the same replica is a conflict.
    let err = w
        .client
        .upload(lease.replica_id, &result(b"y", 10))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_for_another_workers_replica_is_forbidden_and_changes_nothing() {
    let c = TestCoordinator::start().await;
    let job = c.running_job(primes_wasm(), b"1000 2", quorum(1, 2)).await;
    let owner = ManualWorker::register(&c.url, "owner").await;
    let thief = ManualWorker::register(&c.url, "thief").await;
    let lease = owner.take(1).await.remove(0);
    let err = thief
        .client
        .upload(lease.replica_id, &result(b"stolen", 5))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = thief
        .client
        .upload(protocol::ReplicaId(999_999), &result(b"?", 5))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let status = c.status(job).await;
    assert_eq!(status.units_accepted, 0);
    assert_eq!(c.worker(thief.id).await.valid, 0);
    // The owner's upload still goes through as the first one.
    let r = owner
        .client
        .upload(lease.replica_id, &result(b"mine", 5))
        .await
        .unwrap();
    assert_eq!(r.status, UploadStatus::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_valid_token_are_unauthorized() {
    let c = TestCoordinator::start().await;
    let job = c.running_job(primes_wasm(), b"1000 2", quorum(1, 2)).await;
    let owner = ManualWorker::register(&c.url, "owner").await;
    let lease = owner.take(1).await.remove(0);
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/replicas/{}/result", c.url, lease.replica_id);
    let body = serde_json::to_value(result(b"anon", 1)).unwrap();
    let anon = http.put(&url).json(&body).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let forged = http
        .put(&url)
        .bearer_auth("f".repeat(64))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let work = http
        .post(format!("{}/api/v1/work", c.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(work.status(), 401);
    // Submitting needs the API key; a worker token is not one.
    let blob = http
        .post(format!("{}/api/v1/blobs", c.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 401);
    let blob = http
        .post(format!("{}/api/v1/blobs", c.url))
        .bearer_auth("wrong")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 401, "a key that is no submitter's");
    let status = c.status(job).await;
    assert_eq!(status.units_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_with_another_engine_is_told_to_upgrade() {
    let c = TestCoordinator::start().await;
    let mut platform = worker::client::platform();
    platform.engine = "wasmtime-1.0/other".into();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/workers", c.url))
        .json(&protocol::RegisterRequest {
            name: "old".into(),
            platform,
            slots: 1,
            account_key: None,
            invite: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
    let body: protocol::ErrorBody = resp.json().await.unwrap();
    assert!(body.message.contains(sandbox::ENGINE), "{}", body.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_beyond_the_jobs_limits_is_refused() {
    let c = TestCoordinator::start().await;
    c.running_job(primes_wasm(), b"1000 2", quorum(1, 2)).await;
    let w = ManualWorker::register(&c.url, "w").await;
    let lease = w.take(1).await.remove(0);
    let huge = vec![7u8; lease.limits.output_bytes as usize + 1];
    let err = w
        .client
        .upload(lease.replica_id, &result(&huge, 10))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    let err = w
        .client
        .upload(lease.replica_id, &result(b"ok", lease.limits.fuel + 1))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    // Within the limits, the same replica is still accepted.
    let ok = w
        .client
        .upload(lease.replica_id, &result(b"ok", 10))
        .await
        .unwrap();
    assert_eq!(ok.status, UploadStatus::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_results_is_answered_one_by_one_and_credited_once() {
    use protocol::{ReplicaId, ReplicaResult, ResultBatch};
    let c = TestCoordinator::start().await;
    let job = c.running_job(primes_wasm(), b"1000 3", quorum(1, 2)).await;
    let w = ManualWorker::register(&c.url, "w").await;
    let other = ManualWorker::register(&c.url, "other").await;
    let mine = w.take(2).await;
    let theirs = other.take(1).await.remove(0);
    let item = |replica_id, output: &[u8], fuel| ReplicaResult {
        replica_id,
        result: result(output, fuel),
    };
    let batch = ResultBatch {
        results: vec![
            item(mine[0].replica_id, b"a", 7),
            // The same result twice in one batch: recorded once.
            item(mine[0].replica_id, b"a", 7),
            // A different result for it in the same batch: a conflict.
            item(mine[0].replica_id, b"b", 7),
            item(mine[1].replica_id, b"c", 5),
            item(theirs.replica_id, b"d", 1),
            item(ReplicaId(999_999), b"e", 1),
        ],
    };
    let answers = w.client.upload_many(&batch).await.unwrap().results;
    let got: Vec<_> = answers
        .iter()
        .map(|a| {
            (
                a.replica_id,
                a.status,
                a.error.as_ref().map(|e| e.error.as_str()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (mine[0].replica_id, Some(UploadStatus::Accepted), None),
            (
                mine[0].replica_id,
                Some(UploadStatus::AlreadyReceived),
                None
            ),
            (mine[0].replica_id, None, Some("conflict")),
            (mine[1].replica_id, Some(UploadStatus::Accepted), None),
            (theirs.replica_id, None, Some("forbidden")),
            (ReplicaId(999_999), None, Some("not_found")),
        ]
    );
    let me = c.worker(w.id).await;
    assert_eq!(
        (me.valid, me.credit_fuel),
        (2, 12),
        "each replica credited once"
    );
    assert_eq!(c.status(job).await.units_accepted, 2);

    // More results than one request may carry: refused whole.
    let too_many = ResultBatch {
        results: (0..protocol::MAX_RESULTS_PER_REQUEST as i64 + 1)
            .map(|i| item(ReplicaId(i + 1), b"x", 1))
            .collect(),
    };
    let err = w.client.upload_many(&too_many).await.unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
}
