//! A coordinator restart loses nothing it acknowledged.

use protocol::JobState;
use wasm_at_home_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_restart_loses_no_acknowledged_result_and_the_job_completes() {
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"100000 4", quorum(1, 2))
        .await;
    let w = ManualWorker::register(&c.url, "w").await;
    let leases = w.take(4).await;
    assert_eq!(leases.len(), 4);
    let mut fuel = 0;
    for lease in &leases[..2] {
        fuel += w.compute_and_upload(lease).await;
    }

    let dir = c.stop().await;
    let c = TestCoordinator::start_in(dir, |_| {}).await;
    let status = c.status(job).await;
    assert_eq!(
        (status.state, status.units_accepted),
        (JobState::Running, 2)
    );

    // The worker's token and its two outstanding leases survived too.
    let w = w.reconnect(&c.url);
    for lease in &leases[2..] {
        fuel += w.compute_and_upload(lease).await;
    }
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    let record = c.worker(w.id).await;
    assert_eq!(record.valid, 4);
    assert_eq!(
        record.credit_fuel, fuel,
        "each valid replica credited exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_uploads_across_a_restart_credit_each_replica_once() {
    use protocol::{ReplicaId, ReplicaResult, ResultBatch, ResultUpload};
    use worker::client::Client;

    /// Every result five times at once, single and batched.
    fn send_all(
        clients: [Client; 2],
        results: &[(usize, ReplicaId, ResultUpload)],
    ) -> tokio::task::JoinSet<Result<(), worker::client::ClientError>> {
        let mut sends = tokio::task::JoinSet::new();
        for (w, replica, result) in results.iter().cloned() {
            for copy in 0..5 {
                let (client, result) = (clients[w].clone(), result.clone());
                sends.spawn(async move {
                    if copy % 2 == 0 {
                        client.upload(replica, &result).await.map(|_| ())
                    } else {
                        let batch = ResultBatch {
                            results: vec![ReplicaResult {
                                replica_id: replica,
                                result,
                            }],
                        };
                        client.upload_many(&batch).await.map(|_| ())
                    }
                });
            }
        }
        sends
    }

    let c = TestCoordinator::start_with(declared_leases).await;
    let module = primes_wasm();
    let job = c
        .running_job(module.clone(), b"100000 12", quorum(2, 3))
        .await;
    let workers = [
        ManualWorker::register(&c.url, "a").await,
        ManualWorker::register(&c.url, "b").await,
    ];
    let mut results = Vec::new();
    let mut fuel = [0, 0];
    for (i, w) in workers.iter().enumerate() {
        let leases = w.take(16).await;
        assert_eq!(leases.len(), 12);
        for lease in &leases {
            let r = honest_result(&module, lease);
            fuel[i] += r.fuel_used;
            results.push((i, lease.replica_id, r));
        }
    }

    // The coordinator stops underneath the first storm, once a result is
    // in: some uploads are answered, some are not.
    let mut changes = c.coordinator.subscribe();
    changes.borrow_and_update();
    let mut first = send_all(
        [workers[0].client.clone(), workers[1].client.clone()],
        &results,
    );
    changes.changed().await.unwrap();
    let dir = c.stop().await;
    while first.join_next().await.is_some() {}

    // Back up: everything again, five times, all at once.
    let c = TestCoordinator::start_in(dir, |_| {}).await;
    let workers = [workers[0].reconnect(&c.url), workers[1].reconnect(&c.url)];
    let mut second = send_all(
        [workers[0].client.clone(), workers[1].client.clone()],
        &results,
    );
    while let Some(done) = second.join_next().await {
        done.unwrap().unwrap();
    }
    let status = c.wait_for_job(job).await;
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    assert_eq!(status.units_accepted, 12);
    for (i, w) in workers.iter().enumerate() {
        let record = c.worker(w.id).await;
        assert_eq!(record.valid, 12, "{record:?}");
        assert_eq!(
            record.credit_fuel, fuel[i],
            "each valid replica credited once"
        );
    }
}
