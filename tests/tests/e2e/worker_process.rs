//! The real `worker` command as a process: signals, its CPU use, the local
//! pause and resume, and a coordinator that goes away and comes back.
//!
//! Nothing here sleeps to synchronise: the tests wait for the worker's own
//! log lines (read from its stderr as they come) or the coordinator's
//! change notifications. The CPU and pause tests do wait a fixed window,
//! but to measure over it.

use protocol::{JobId, JobState, Limits};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wasm_at_home_tests::*;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// A worker on `c` holding both units of a two-unit job, whose coordinator
/// then goes away: it computes both and cannot upload them. Returns the
/// worker, the job, the coordinator's data and its address (to bring it
/// back where the worker looks for it).
async fn computed_while_away(dir: &Path) -> (WorkerProcess, JobId, tempfile::TempDir, String) {
    let c = TestCoordinator::start().await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let job = mandelbrot_job(&c, &[1500, 1501]).await;
    let mut w = WorkerProcess::start(WORKER, &c.url, dir, &["--slots", "1"]);
    // It holds both units (two leases per slot) once the first starts.
    w.wait_for("unit started").await;
    let data = c.stop().await;
    // Both are computed and kept; uploads fail and back off.
    w.wait_for("unit done").await;
    w.wait_for("unit done").await;
    w.wait_for("cannot upload yet results=2").await;
    (w, job, data, addr)
}

/// A job of Mandelbrot units of `size`² pixels each (about a second per
/// 1500 on this machine's cores), with leases of an hour.
async fn mandelbrot_job(c: &TestCoordinator, sizes: &[u32]) -> JobId {
    c.submit_units(
        kernels_wasm(),
        sizes
            .iter()
            .map(|s| format!("mandelbrot {s}").into_bytes())
            .collect(),
        quorum(1, 2),
        Limits {
            fuel: 1 << 42,
            ..default_limits()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_unit_exits_cleanly_in_the_grace_period_and_gives_the_units_back() {
    let c = TestCoordinator::start().await;
    // Units of a minute or more: neither can finish in the grace period.
    let job = mandelbrot_job(&c, &[20000, 20001]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = WorkerProcess::start(
        WORKER,
        &c.url,
        dir.path(),
        &["--slots", "1", "--grace-secs", "1"],
    );
    w.wait_for("unit started").await;
    let asked = Instant::now();
    w.signal("TERM");
    let status = w.exit_within(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    // Grace (1 s) plus giving the leases back, not the unit's minute.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    w.wait_for("worker stopped").await;

    // Both leases (the running unit's and the queued one's) are back at
    // the coordinator, whose clock stands still: another worker gets them
    // now, and nobody is charged a timeout.
    let s = c.status(job).await;
    assert_eq!(s.replicas_in_progress, 0, "{s:?}");
    let other = ManualWorker::register(&c.url, "other").await;
    assert_eq!(other.take(16).await.len(), 2);
    assert!(c.workers().await.iter().all(|w| w.timeouts == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_computed_while_the_coordinator_is_away_arrive_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, job, data, addr) = computed_while_away(dir.path()).await;
    let c = TestCoordinator::start_at(data, &addr, |_| {}).await;
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!(s.units_accepted, 2);
    assert!(w.stop().await.success());
    let stopped = w.wait_for("worker stopped").await;
    assert!(
        stopped.contains("units=2"),
        "each unit computed once: {stopped}"
    );
    let me = &c.workers().await[0];
    assert_eq!((me.valid, me.timeouts), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_during_an_upload_backoff_tries_once_more_and_uploads_to_a_coordinator_back_meanwhile()
 {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, job, data, addr) = computed_while_away(dir.path()).await;
    // Wait until the uploader waits seconds between tries, so that the
    // stop below comes while it waits, not as it tries.
    loop {
        let line = w.wait_for("cannot upload yet").await;
        let wait_ms: u64 = line
            .split("retry_in_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no retry_in_ms in {line:?}"));
        if wait_ms >= 2000 {
            break;
        }
    }
    let c = TestCoordinator::start_at(data, &addr, |_| {}).await;
    w.signal("TERM");
    assert!(w.exit_within(JOB_TIMEOUT).await.success());
    let stopped = w.wait_for("worker stopped").await;
    assert!(stopped.contains("uploaded=2"), "{stopped}");
    assert!(
        worker::state::StateDir::open(dir.path())
            .unwrap()
            .pending_results()
            .unwrap()
            .is_empty()
    );
    let s = c.wait_for_job(job).await;
    assert_eq!((s.state, s.units_accepted), (JobState::Done, 2), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_with_results_on_disk_uploads_them_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, job, data, addr) = computed_while_away(dir.path()).await;
    // Both results written, neither uploaded: then SIGKILL.
    let pending = worker::state::StateDir::open(dir.path())
        .unwrap()
        .pending_results()
        .unwrap();
    assert_eq!(pending.len(), 2);
    w.signal("KILL");
    assert!(!w.exit_within(JOB_TIMEOUT).await.success());
    drop(w);

    let c = TestCoordinator::start_at(data, &addr, |_| {}).await;
    let mut w = WorkerProcess::start(WORKER, &c.url, dir.path(), &["--slots", "1"]);
    w.wait_for("uploading a result from before the restart")
        .await;
    let s = c.wait_for_job(job).await;
    assert_eq!((s.state, s.units_accepted), (JobState::Done, 2), "{s:?}");
    assert!(w.stop().await.success());
    let stopped = w.wait_for("worker stopped").await;
    assert!(
        stopped.contains("units=0"),
        "nothing computed twice: {stopped}"
    );
    assert!(stopped.contains("uploaded=2"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_cpu_limit_of_50_the_worker_uses_about_half_a_core() {
    let c = TestCoordinator::start().await;
    mandelbrot_job(&c, &[20000]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = WorkerProcess::start(
        WORKER,
        &c.url,
        dir.path(),
        &["--slots", "1", "--cpu-limit", "50", "--grace-secs", "0"],
    );
    w.wait_for("unit started").await;
    // Measured over a window of 3 s. Other tests share the machine, which
    // can only lower the figure; the ceiling must hold whatever they do.
    let window = Duration::from_secs(3);
    let (t0, at) = (w.cpu_ticks(), Instant::now());
    tokio::time::sleep(window).await;
    let used = (w.cpu_ticks() - t0) as f64 / 100.0 / at.elapsed().as_secs_f64();
    eprintln!("CPU use with --cpu-limit 50: {:.0}%", used * 100.0);
    assert!(used < 0.65, "{:.0}% of a core", used * 100.0);
    assert!(used > 0.15, "it still computes: {:.0}%", used * 100.0);
    assert!(w.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_worker_makes_no_progress_and_finishes_after_resume() {
    let c = TestCoordinator::start().await;
    let job = mandelbrot_job(&c, &[2500]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = WorkerProcess::start(WORKER, &c.url, dir.path(), &["--slots", "1"]);
    w.wait_for("unit started").await;
    let answer = w.control("pause");
    assert!(answer.starts_with("paused"), "{answer}");
    assert!(dir.path().join("paused").exists(), "kept across restarts");
    w.wait_for("paused by the volunteer").await;

    // Over a window: no fuel burnt, (almost) no CPU used. The first status
    // may still see the last slice finishing.
    let before = w.status();
    let (t0, fuel0) = (
        w.cpu_ticks(),
        before["running"][0]["fuel_used"].as_u64().unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = w.status();
    assert_eq!(after["paused"]["by_user"], true);
    let fuel1 = after["running"][0]["fuel_used"].as_u64().unwrap();
    assert!(fuel1 - fuel0 <= sandbox::SLICE_FUEL, "{fuel0} -> {fuel1}");
    let ticks = w.cpu_ticks() - t0;
    assert!(ticks <= 10, "{ticks} ticks of CPU while paused");
    assert_eq!(
        w.status()["running"][0]["fuel_used"].as_u64().unwrap(),
        fuel1,
        "not a slice more"
    );

    let answer = w.control("resume");
    assert!(answer.starts_with("running"), "{answer}");
    assert!(!dir.path().join("paused").exists());
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert!(w.stop().await.success());
    let stopped = w.wait_for("worker stopped").await;
    assert!(stopped.contains("units=1"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_worker_on_the_same_state_directory_is_refused() {
    let c = TestCoordinator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = WorkerProcess::start(WORKER, &c.url, dir.path(), &["--slots", "1"]);
    first.wait_for("worker started").await;
    let second = Command::new(WORKER)
        .args(["run", "--coordinator", &c.url, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another worker is running"), "{err}");
    assert!(first.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_worker_started_paused_registers_and_runs_nothing_until_resumed() {
    let c = TestCoordinator::start().await;
    let job = mandelbrot_job(&c, &[300]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = WorkerProcess::start(
        WORKER,
        &c.url,
        dir.path(),
        &["--slots", "1", "--start-paused"],
    );
    w.wait_for("worker started paused").await;
    // Registered (the service's first start), holding nothing.
    assert_eq!(c.workers().await.len(), 1);
    assert_eq!(w.status()["paused"]["by_user"], true);
    assert_eq!(c.status(job).await.replicas_in_progress, 0);
    let answer = w.control("resume");
    assert!(answer.starts_with("running"), "{answer}");
    assert_eq!(c.wait_for_job(job).await.state, JobState::Done);
    assert!(w.stop().await.success());

    // --start-paused is for a new worker only: resumed once, a restart
    // (a reboot of the service) goes on working.
    let mut w = WorkerProcess::start(
        WORKER,
        &c.url,
        dir.path(),
        &["--slots", "1", "--start-paused"],
    );
    let started = w.wait_for("worker started").await;
    assert!(!started.contains("paused (worker resume"), "{started}");
    assert!(w.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_the_coordinator_does_not_know_exits_with_a_clear_error() {
    let c = TestCoordinator::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An identity the coordinator never issued (its database was reset,
    // say).
    worker::state::StateDir::open(dir.path())
        .unwrap()
        .save_identity(&worker::state::Identity {
            coordinator: c.url.clone(),
            worker_id: protocol::WorkerId(uuid::Uuid::new_v4()),
            token: "not-a-token".into(),
            account_id: None,
            account_key: None,
        })
        .unwrap();
    // Its log is not a terminal (log lines, not bars), as under systemd.
    let mut w = WorkerProcess::start(WORKER, &c.url, dir.path(), &["--slots", "1"]);
    let status = w.exit_within(JOB_TIMEOUT).await;
    assert!(!status.success(), "{status:?}");
    w.wait_for("does not know this worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_when_idle_starts_paused_by_load_and_runs_once_the_machine_was_quiet() {
    let c = TestCoordinator::start().await;
    let job = mandelbrot_job(&c, &[300]).await;
    let dir = tempfile::tempdir().unwrap();
    // A threshold of 100% of all cores: other programs can never exceed
    // it, so the machine counts as idle once it has been watched for the
    // idle period (the detector's reaction to load is unit-tested with
    // recorded samples in worker/src/idle.rs).
    let mut w = WorkerProcess::start(
        WORKER,
        &c.url,
        dir.path(),
        &[
            "--slots",
            "1",
            "--only-when-idle",
            "--idle-threshold",
            "100",
            "--idle-secs",
            "1",
        ],
    );
    w.wait_for("worker started").await;
    // Not known to be idle yet: paused by load, nothing leased.
    let status = w.status();
    assert_eq!(status["paused"]["by_load"], true, "{status}");
    assert_eq!(c.status(job).await.replicas_in_progress, 0);
    w.wait_for("the computer is idle: resuming").await;
    assert_eq!(c.wait_for_job(job).await.state, JobState::Done);
    assert!(w.stop().await.success());
}
