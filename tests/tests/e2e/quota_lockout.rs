//! A busy honest worker's one timeout must not lock it out for the rest of
//! the day. Found by `bench -- chaos` (20,000 units stalled at 14,696
//! accepted, three of four workers with no quota left): a break halved the
//! whole daily quota, an absolute count, so a worker that had already used
//! more than half of it was left below what it had used, and only a valid
//! result (which it could no longer lease to earn) doubled it again. Now a
//! break halves what is left of today's quota (`trust::Standing::after`).

use wasm_at_home_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_timeout_does_not_lock_a_busy_worker_out_for_the_day() {
    // 8 slots (ManualWorker) at 10 leases per slot and day: a full quota
    // of 80 leases.
    let c = TestCoordinator::start_with(|config| {
        declared_leases(config);
        config.trust.daily_quota_per_slot = 10;
    })
    .await;
    c.running_job(primes_wasm(), b"100000 200", quorum(1, 2))
        .await;
    let w = ManualWorker::register(&c.url, "busy").await;

    // 48 leases taken and answered honestly: 48 valid results today.
    for _ in 0..3 {
        let leases = w.take(16).await;
        assert_eq!(leases.len(), 16);
        for lease in &leases {
            w.compute_and_upload(lease).await;
        }
    }
    // One more, never answered: it times out (its lease is 60 s).
    assert_eq!(w.take(1).await.len(), 1);
    c.clock.advance(61_000);
    let bystander = ManualWorker::register(&c.url, "bystander").await;
    bystander.take(1).await; // a work request runs the expiry
    let record = c.worker(w.id).await;
    assert_eq!((record.valid, record.timeouts), (48, 1), "{record:?}");

    // 48 valid results and one timeout: it should still get work today.
    // Today its quota went from 80 to 40, below the 49 leases it took,
    // and it gets nothing until tomorrow.
    assert!(record.quota_left > 0, "{record:?}");
    assert!(
        !w.take(16).await.is_empty(),
        "a worker with 48 valid results and one timeout gets no work for the rest of the day"
    );
}
