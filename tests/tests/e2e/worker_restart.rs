//! A worker that died with results on disk uploads them when it restarts.

use protocol::JobState;
use wasm_at_home_tests::*;
use worker::state::{Identity, PendingResult, StateDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_written_before_a_crash_are_uploaded_after_the_restart() {
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"100000 2", quorum(1, 2))
        .await;

    // The state a worker leaves when it is killed between writing its
    // results and uploading them: its identity, and one result per lease.
    let dir = tempfile::tempdir().unwrap();
    let (registered, client) = died_registered(&c, dir.path(), "crashed", 2).await;
    let state = StateDir::open(dir.path()).unwrap();
    let leases = client.work(2, None).await.unwrap().leases;
    assert_eq!(leases.len(), 2);
    for lease in &leases {
        state
            .save_result(&PendingResult {
                replica_id: lease.replica_id,
                deadline_ms: lease.deadline_ms,
                result: honest_result(&primes_wasm(), lease),
            })
            .unwrap();
    }
    assert_eq!(state.pending_results().unwrap().len(), 2);

    // Restarted on the same state directory, it uploads both; nothing else
    // is left to compute, so the job finishes on those results alone.
    let w = TestWorker::start_in(&c.url, dir.path(), 1);
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    let stats = w.stop().await;
    assert_eq!(stats.uploaded, 2);
    assert_eq!(stats.units_run, 0, "nothing was computed twice");
    assert!(state.pending_results().unwrap().is_empty());
    assert_eq!(c.worker(registered.worker_id).await.valid, 2);
}

/// A job of two Mandelbrot units of `size`² pixels (seconds each), with
/// leases of `lease_secs`.
async fn slow_job(c: &TestCoordinator, size: u32, lease_secs: u64) -> protocol::JobId {
    let spec = protocol::JobSpec {
        name: "slow".into(),
        module: c.client.upload_blob(kernels_wasm()).await.unwrap(),
        input: None,
        units: Some(vec![
            format!("mandelbrot {size}").into_bytes().into(),
            format!("mandelbrot {}", size + 1).into_bytes().into(),
        ]),
        limits: protocol::Limits {
            fuel: 1 << 40,
            ..default_limits()
        },
        lease_secs,
        validation: quorum(1, 2),
        priority: 0,
    };
    c.client.submit(&spec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_that_runs_out_while_queued_is_dropped_not_computed() {
    let c = TestCoordinator::start().await;
    // Two units of about three seconds each (a 3000×3000 Mandelbrot), and
    // leases of one second: a one-slot worker holds both, runs the first,
    // and finds the second's lease gone when the slot frees.
    let job = slow_job(&c, 3000, 1).await;
    let w = TestWorker::start(&c.url, 1);
    // The first unit is accepted (the coordinator's clock stands still, so
    // its lease never runs out there).
    c.wait_until(job, |s| s.units_accepted == 1).await;
    let stats = w.stop().await;
    assert_eq!(stats.units_run, 1, "{stats:?}");
    assert_eq!(stats.dropped, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_worker_gives_back_its_queued_leases_at_once() {
    let c = TestCoordinator::start().await;
    let job = slow_job(&c, 3500, 3600).await;
    // One slot: one unit runs (for seconds), the other waits in the
    // worker's queue.
    let w = TestWorker::start(&c.url, 1);
    c.wait_until(job, |s| s.replicas_in_progress == 2).await;
    let stats = w.stop().await;
    // Stopping starts nothing new: the queued unit (and the first, if the
    // stop came before it started) goes back.
    assert!(stats.released >= 1, "{stats:?}");
    assert_eq!(stats.units_run + stats.released, 2, "{stats:?}");
    // The coordinator's clock stands still: without the release the units
    // would wait an hour. Another worker gets them now.
    let other = ManualWorker::register(&c.url, "other").await;
    let leases = other.take(16).await;
    assert_eq!(leases.len() as u64, stats.released);
    for lease in &leases {
        other.compute_and_upload(lease).await;
    }
    assert_eq!(c.wait_for_job(job).await.units_accepted, 2);
    assert!(
        c.workers().await.iter().all(|w| w.timeouts == 0),
        "giving a lease back is not a timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_worker_loads_the_compiled_module_instead_of_compiling_it() {
    let c = TestCoordinator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let job = c
        .running_job(primes_wasm(), b"100000 4", quorum(1, 2))
        .await;
    let w = TestWorker::start_in(&c.url, dir.path(), 1);
    assert_eq!(c.wait_for_job(job).await.state, JobState::Done);
    let first = w.stop().await;
    assert_eq!(first.compilations, 1, "{first:?}");

    // Same module, new job, restarted worker: it runs units and compiles
    // nothing.
    let job = c
        .running_job(primes_wasm(), b"200000 4", quorum(1, 2))
        .await;
    let w = TestWorker::start_in(&c.url, dir.path(), 1);
    assert_eq!(c.wait_for_job(job).await.state, JobState::Done);
    let second = w.stop().await;
    assert_eq!(second.units_run, 4, "{second:?}");
    assert_eq!(second.compilations, 0, "{second:?}");
}

/// A worker killed while holding leases, restarted on its state directory:
/// its first work request names what it holds (nothing), so the leases of
/// its previous process are given back at once and its units go to the
/// other worker, instead of waiting out an hour-long lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_of_a_killed_worker_go_to_others_as_soon_as_it_asks_again() {
    let c = TestCoordinator::start().await;
    let spec = protocol::JobSpec {
        name: "held".into(),
        module: c.client.upload_blob(primes_wasm()).await.unwrap(),
        input: Some(c.client.upload_blob(b"100000 4".to_vec()).await.unwrap()),
        units: None,
        limits: default_limits(),
        lease_secs: 3600,
        validation: quorum(1, 2),
        priority: 0,
    };
    let job = c.client.submit(&spec).await.unwrap();
    c.wait_until(job, |s| s.state == JobState::Running).await;
    // The previous process: registered, took two leases, died.
    let dir = tempfile::tempdir().unwrap();
    let (registered, client) = died_registered(&c, dir.path(), "killed", 1).await;
    let held = client.work(2, None).await.unwrap().leases;
    assert_eq!(held.len(), 2);
    // Restarted, beside a second worker: the job finishes (9592 primes
    // below 100,000) long before the hour is up.
    let restarted = TestWorker::start_in(&c.url, dir.path(), 1);
    let other = TestWorker::start(&c.url, 1);
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    let me = c.worker(registered.worker_id).await;
    assert_eq!(me.timeouts, 0, "given back, not timed out");
    restarted.stop().await;
    other.stop().await;
    c.assert_aggregates_consistent(job).await;
}

/// The state a killed worker leaves in `dir`: its identity, registered as
/// `name` with `slots`; and a client with its token, to act as it did.
async fn died_registered(
    c: &TestCoordinator,
    dir: &std::path::Path,
    name: &str,
    slots: u32,
) -> (protocol::RegisterResponse, worker::client::Client) {
    let client = worker::client::Client::new(&c.url);
    let registered = client.register(name, slots).await.unwrap();
    StateDir::open(dir)
        .unwrap()
        .save_identity(&Identity {
            coordinator: c.url.clone(),
            worker_id: registered.worker_id,
            token: registered.token.clone(),
            account_id: Some(registered.account_id.clone()),
            account_key: registered.account_key.clone(),
        })
        .unwrap();
    let client = client.with_token(registered.token.clone());
    (registered, client)
}
