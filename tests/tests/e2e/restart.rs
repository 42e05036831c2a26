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
