//! `guest`: the worker as a guest, measured on the real `worker` process
//! (`worker-under-test`, built next to this binary).
//!
//! - CPU use with `--cpu-limit` 25, 50, 75 and 100 on one slot running a
//!   long unit: the process's CPU time (`/proc/PID/stat`) over a window,
//!   as a share of one core (`cpu_use_at_limit`).
//! - Restart to first unit: a worker runs a job of tiny units, stops, and
//!   starts again on the same state directory (compiled module cached):
//!   from spawning the process to its first unit done, and the worker's own
//!   figure from its start (`restart_to_first_unit_ms`), against the cold
//!   first start (`cold_start_to_first_unit_ms`).

use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasm_at_home_tests::{TestCoordinator, WorkerProcess, default_limits, kernels_wasm, quorum};

fn worker_binary() -> String {
    let exe = std::env::current_exe().unwrap();
    let path: PathBuf = exe.with_file_name("worker-under-test");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p wasm-at-home-tests --bins`",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

pub fn run(smoke: bool) -> serde_json::Value {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let window = Duration::from_secs(if smoke { 1 } else { 5 });
    let mut cpu = serde_json::Map::new();
    for limit in [25u32, 50, 75, 100] {
        let c = rt.block_on(TestCoordinator::start());
        rt.block_on(c.submit_units(
            kernels_wasm(),
            vec![b"mandelbrot 30000".to_vec()],
            quorum(1, 1),
            protocol::Limits {
                fuel: 1 << 44,
                ..default_limits()
            },
        ));
        let dir = tempfile::tempdir().unwrap();
        let limit_arg = limit.to_string();
        let mut w = WorkerProcess::start(
            &worker_binary(),
            &c.url,
            dir.path(),
            &[
                "--slots",
                "1",
                "--grace-secs",
                "0",
                "--cpu-limit",
                &limit_arg,
            ],
        );
        rt.block_on(w.wait_for("unit started"));
        // Let the first slices pass, then measure.
        std::thread::sleep(Duration::from_millis(300));
        let (t0, at) = (w.cpu_ticks(), Instant::now());
        std::thread::sleep(window);
        let share = (w.cpu_ticks() - t0) as f64 / 100.0 / at.elapsed().as_secs_f64();
        eprintln!(
            "--cpu-limit {limit}: {:.1}% of a core over {window:?}",
            share * 100.0
        );
        cpu.insert(
            limit.to_string(),
            serde_json::json!((share * 1000.0).round() / 10.0),
        );
        rt.block_on(w.stop());
        drop(rt.block_on(c.stop()));
    }

    // Restart to first unit.
    let c = rt.block_on(TestCoordinator::start());
    rt.block_on(c.submit_units(
        kernels_wasm(),
        vec![b"sieve 1000".to_vec(); 100_000],
        quorum(1, 1),
        default_limits(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let run_once = |label: &str| -> (f64, f64, bool) {
        let spawned = Instant::now();
        let mut w = WorkerProcess::start(&worker_binary(), &c.url, dir.path(), &["--slots", "1"]);
        let mut compiled = false;
        let line = loop {
            let line = rt.block_on(w.wait_for(""));
            if line.contains(": compiled module") {
                compiled = true;
            }
            if line.contains("first unit done since start") {
                break line;
            }
        };
        let total = spawned.elapsed().as_secs_f64() * 1000.0;
        let own: f64 = line
            .split("after_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        eprintln!(
            "{label}: first unit done {total:.0} ms after spawning the process ({own:.0} ms after the worker's start){}",
            if compiled {
                ", module compiled"
            } else {
                ", compiled module from the cache"
            }
        );
        rt.block_on(w.stop());
        (total, own, compiled)
    };
    let (cold, _, cold_compiled) = run_once("cold start (registers, downloads, compiles)");
    let mut warm = Vec::new();
    let mut recompiled = false;
    for _ in 0..if smoke { 1 } else { 5 } {
        let (total, own, compiled) = run_once("restart with a warm cache");
        warm.push((total, own));
        recompiled |= compiled;
    }
    warm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (warm_total, warm_own) = warm[warm.len() / 2];
    drop(rt.block_on(c.stop()));
    serde_json::json!({
        "bench": "guest",
        "cpu_use_at_limit": cpu,
        "cpu_window_secs": window.as_secs(),
        "cold_start_to_first_unit_ms": cold.round(),
        "cold_start_compiled": cold_compiled,
        "restart_to_first_unit_ms": warm_total.round(),
        "restart_to_first_unit_in_worker_ms": warm_own.round(),
        "restart_recompiled": recompiled,
    })
}
