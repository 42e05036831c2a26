//! The operator bans a worker: from the next request on, every call with
//! its token is refused with a clear error, the job finishes without it,
//! and `coordinator workers list` shows it banned.

use coordinator::clock::Clock as _;
use coordinator::store::BanTarget;
use protocol::{Heartbeat, JobState};
use wasm_at_home_tests::*;

/// Asserts that `result` is the refusal a banned worker gets.
fn banned<T: std::fmt::Debug>(what: &str, result: Result<T, worker::client::ClientError>) {
    let e = result.expect_err(what);
    assert_eq!(e.status(), Some(403), "{what}: {e}");
    assert_eq!(e.code().map(|c| c.as_str()), Some("banned"), "{what}: {e}");
    assert!(
        e.to_string()
            .contains("banned by the coordinator's operator"),
        "{what}: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_banned_worker_is_refused_on_every_call_and_the_job_finishes_without_it() {
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"200000 4", quorum(2, 4))
        .await;
    let cheat = ManualWorker::register(&c.url, "cheat").await;
    let leases = cheat.take(4).await;
    assert_eq!(leases.len(), 4);
    // One result returned and waiting for a quorum, the rest running.
    cheat.compute_and_upload(&leases[0]).await;

    // The operator's command opens the database in a process of its own:
    // here a second store on the same file, so the running coordinator's
    // memory of the token cannot hide the ban.
    let data_dir = c.coordinator.config().data_dir.clone();
    let operator = coordinator::operator::open(&data_dir, c.coordinator.config().trust.clone())
        .await
        .unwrap();
    let said =
        coordinator::operator::ban(&operator, &BanTarget::Worker(cheat.id), c.clock.now_ms())
            .await
            .unwrap();
    assert!(said.contains("4 pending replica(s) discarded"), "{said}");

    banned("work", cheat.client.work(4, None).await);
    banned(
        "upload",
        cheat
            .client
            .upload(
                leases[1].replica_id,
                &honest_result(&primes_wasm(), &leases[1]),
            )
            .await,
    );
    banned(
        "heartbeat",
        cheat.client.heartbeat(&Heartbeat::default()).await,
    );
    banned("release", cheat.client.release(leases[2].replica_id).await);
    banned("blob", cheat.client.blob(leases[0].module).await);

    let honest: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    for w in honest {
        w.stop().await;
    }
    c.assert_aggregates_consistent(job).await;
    let record = c.worker(cheat.id).await;
    assert!(record.banned);
    assert_eq!(
        (record.valid, record.credit_fuel, record.running),
        (0, 0, 0)
    );

    let list = coordinator::operator::list(&operator, 100, c.clock.now_ms())
        .await
        .unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with(&cheat.id.to_string()))
        .unwrap();
    assert!(line.ends_with("yes"), "{list}");
    assert_eq!(
        list.lines().filter(|l| l.ends_with("no")).count(),
        2,
        "{list}"
    );

    // Lifted, the worker is served again.
    coordinator::operator::unban(&operator, &BanTarget::Worker(cheat.id))
        .await
        .unwrap();
    assert!(cheat.client.work(1, None).await.is_ok());
}
