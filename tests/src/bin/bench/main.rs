//! Benchmarks that print figures: `cargo run --release --bin bench -- NAME [--smoke]`.
//!
//! Each prints progress lines, then its figures as one JSON line, last.
//! - `coordinator`: K simulated workers (default 1,000) over real HTTP on
//!   loopback against a real coordinator (SQLite) and a job of 100,000 units
//!   with quorum 2; each asks for work and uploads a trivial result.
//!   `replicas_per_sec`, `units_per_sec`, and p50/p99 latency of the work
//!   request and of the upload. Bounded: it stops after 120 s at the latest.
//!   `--jobs N [--submitters S]`: the same units as N jobs of S submitters
//!   (default 10), after a run of one job, both printed (fair share's cost).
//!   Beside them, the disk's raw SQLite commit rate (`raw_commits_per_sec`).
//!   `--pairs P` alternates P such pairs and prints the median ratio.
//! - `share`: real workers running the primes task; a 20,000-unit job of one
//!   submitter, then 5 s later a 10-unit job of another: how long the small
//!   one takes to complete, and how far the big one is then.
//! - `sandbox`: the same kernels natively and in the worker's sandbox (with
//!   its production settings), the ratio wasm/native of each and their
//!   geometric mean (`geomean_ratio`).
//! - `overhead`: the cost per unit of instantiate + run + collect output
//!   for a trivial unit with a compiled module (`per_unit_us`; paced, as
//!   the worker runs units: `paced_per_unit_us`), and end to end through a
//!   real worker and coordinator (`e2e_per_unit_ms`).
//!
//! - `bigjob`: a job of 1,000,000 units split and stored by a real
//!   coordinator (SQLite): `split_secs`, and the process's peak memory
//!   (`peak_rss_mb`).
//!
//! - `integrity`: the real scheduler and validator against simulated
//!   saboteurs, one JSON line per scenario (`accepted_wrong_rate`,
//!   `replicas_per_unit`, `open_units`), then all of them.
//!
//! - `guest`: the real worker process: its CPU use under `--cpu-limit`, and
//!   the time from a restart (warm module cache) to its first unit done.
//!
//! - `uploads`: the coordinator's resident memory, idle and at its peak,
//!   under 16 concurrent 21 MB result uploads to a job whose output limit
//!   is 1 KiB (declared, then chunked), and the CPU it ran on.
//! - `chaos`: the coordinator and worker processes killed with SIGKILL at
//!   seeded moments and restarted, then the output, acceptances, credit
//!   and acknowledged results checked; time to recover after each restart
//!   (`chaos.rs`, and `wasm_at_home_tests::chaos`).
//!
//! `--smoke` runs each in seconds, to prove it still works (CI does that).

mod chaos;
mod coordinator;
mod guest;
mod integrity;
mod share;
mod uploads;

use protocol::Limits;
use sandbox::{Mode, Sandbox, Stdout};
use std::time::{Duration, Instant};

fn main() {
    // RUST_LOG=sqlx::query=debug, say, shows each statement and its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let name = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("");
    let figures = match name {
        "sandbox" => sandbox_speed(smoke),
        "overhead" => overhead(smoke),
        "bigjob" => bigjob(smoke),
        "coordinator" => coordinator::run(smoke, &args),
        "integrity" => integrity::run(smoke, &args),
        "guest" => guest::run(smoke),
        "uploads" => uploads::run(smoke),
        "chaos" => chaos::run(smoke, &args),
        "share" => share::run(smoke),
        _ => {
            eprintln!(
                "usage: bench (coordinator [--workers K] [--jobs N [--submitters S] [--pairs P]] | share | sandbox | overhead | bigjob | integrity | guest | uploads | chaos [--units N --kills K --seed S]) [--smoke]"
            );
            std::process::exit(2);
        }
    };
    println!("{figures}");
}

const LIMITS: Limits = Limits {
    fuel: u64::MAX / 2,
    memory_bytes: 1 << 30,
    output_bytes: 1 << 20,
};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn sandbox_speed(smoke: bool) -> serde_json::Value {
    let sandbox = Sandbox::new().unwrap();
    let program = sandbox
        .compile(&wasm_at_home_tests::kernels_wasm())
        .unwrap();
    let reps = if smoke { 1 } else { 7 };
    let kernels: [(&str, usize); 3] = if smoke {
        [("sieve", 1_000_000), ("mandelbrot", 100), ("nbody", 10_000)]
    } else {
        [
            ("sieve", 50_000_000),
            ("mandelbrot", 1000),
            ("nbody", 5_000_000),
        ]
    };
    let mut figures = serde_json::Map::new();
    figures.insert("bench".into(), "sandbox".into());
    let mut log_sum = 0.0;
    for (name, size) in kernels {
        let mut native = Vec::new();
        let mut wasm = Vec::new();
        let mut expected = String::new();
        for _ in 0..reps {
            let t = Instant::now();
            expected = kernels::run(name, size).unwrap();
            native.push(t.elapsed());
            let input = format!("{name} {size}");
            let t = Instant::now();
            let report = sandbox.run(
                &program,
                Mode::Run,
                input.as_bytes(),
                &LIMITS,
                Stdout::Capture,
            );
            wasm.push(t.elapsed());
            let out = report
                .into_output()
                .expect("the kernel runs in the sandbox");
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "{name}: wasm and native disagree"
            );
        }
        let (n, w) = (median(native), median(wasm));
        let ratio = w.as_secs_f64() / n.as_secs_f64();
        log_sum += ratio.ln();
        eprintln!(
            "{name:>10} {size:>10}: native {n:>10.2?}  wasm {w:>10.2?}  ratio {ratio:.3}  ({expected})"
        );
        figures.insert(
            format!("{name}_ratio"),
            ((ratio * 1000.0).round() / 1000.0).into(),
        );
    }
    let geomean = (log_sum / 3.0).exp();
    figures.insert(
        "geomean_ratio".into(),
        ((geomean * 1000.0).round() / 1000.0).into(),
    );
    serde_json::Value::Object(figures)
}

fn overhead(smoke: bool) -> serde_json::Value {
    let sandbox = Sandbox::new().unwrap();
    let trivial =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let trivial = sandbox.compile(&trivial).unwrap();
    let rust_task = sandbox
        .compile(&wasm_at_home_tests::kernels_wasm())
        .unwrap();
    let n = if smoke { 200 } else { 20_000 };
    let per_unit = |program: &sandbox::Program, input: &[u8]| {
        for _ in 0..n / 10 {
            sandbox.run(program, Mode::Run, input, &LIMITS, Stdout::Capture);
        }
        let t = Instant::now();
        for _ in 0..n {
            let report = sandbox.run(program, Mode::Run, input, &LIMITS, Stdout::Capture);
            assert_eq!(report.result, Ok(0));
        }
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let wat_us = per_unit(&trivial, b"");
    let rust_us = per_unit(&rust_task, b"noop 0");
    eprintln!(
        "trivial WAT module: {wat_us:.1} us per unit; Rust task (std start-up, `noop`): {rust_us:.1} us per unit"
    );
    // As the worker runs units: paced (on a fiber, with a pacer).
    let t = Instant::now();
    for _ in 0..n {
        let report = sandbox.run_paced(
            &trivial,
            Mode::Run,
            b"",
            &LIMITS,
            Stdout::Capture,
            &mut |_| sandbox::Pace::Continue,
        );
        assert_eq!(report.result, Ok(0));
    }
    let paced_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    eprintln!("trivial WAT module, paced as the worker runs it: {paced_us:.1} us per unit");
    let (e2e_units, e2e_ms) = end_to_end(smoke);
    eprintln!(
        "end to end, real worker (2 slots) and local coordinator: {e2e_units} trivial units, {e2e_ms:.3} ms per unit"
    );
    serde_json::json!({
        "bench": "overhead",
        "units": n,
        "per_unit_us": (wat_us * 10.0).round() / 10.0,
        "rust_task_per_unit_us": (rust_us * 10.0).round() / 10.0,
        "paced_per_unit_us": (paced_us * 10.0).round() / 10.0,
        "e2e_units": e2e_units,
        "e2e_per_unit_ms": (e2e_ms * 1000.0).round() / 1000.0,
    })
}

/// Trivial units through the whole path: a real coordinator (SQLite) and a
/// real worker (2 slots) in this process over loopback HTTP: lease, run in
/// the sandbox, write the result to disk, upload, validate (quorum 1).
/// Timed from the worker's start (registration, module download and
/// compilation included) to the job's completion; returns (units, ms per
/// unit).
fn end_to_end(smoke: bool) -> (usize, f64) {
    use wasm_at_home_tests::{TestCoordinator, TestWorker, default_limits, quorum};
    let units = if smoke { 200 } else { 10_000 };
    let trivial =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = TestCoordinator::start().await;
        let job = c
            .submit_units(
                trivial,
                vec![Vec::new(); units],
                quorum(1, 1),
                default_limits(),
            )
            .await;
        c.wait_until(job, |s| s.state == protocol::JobState::Running)
            .await;
        let started = Instant::now();
        let worker = TestWorker::start(&c.url, 2);
        let status = c.wait_for_job(job).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0 / units as f64;
        assert_eq!(status.units_accepted, units as u64, "{status:?}");
        worker.stop().await;
        (units, ms)
    })
}

/// Peak resident memory of this process, in MiB (VmHWM).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bigjob(smoke: bool) -> serde_json::Value {
    use wasm_at_home_tests::{TestCoordinator, primes_wasm, quorum};
    let units: u64 = if smoke { 10_000 } else { 1_000_000 };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = TestCoordinator::start().await;
        let rss_before = peak_rss_mb();
        let started = Instant::now();
        let input = format!("{} {units}", units * 1000);
        let job = c.submit_input(primes_wasm(), input.as_bytes(), quorum(2, 3)).await;
        let status = c.wait_until(job, |s| s.state != protocol::JobState::Splitting).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(status.units_total, units, "{status:?}");
        let peak = peak_rss_mb();
        eprintln!(
            "{units} units split and stored in {secs:.2} s ({:.0} units/s); peak RSS {peak:.0} MiB ({rss_before:.0} MiB before the job)",
            units as f64 / secs
        );
        serde_json::json!({
            "bench": "bigjob",
            "units": units,
            "split_secs": (secs * 100.0).round() / 100.0,
            "peak_rss_mb": peak.round(),
            "rss_before_mb": rss_before.round(),
        })
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i] * 100.0).round() / 100.0
}

/// The disk's raw commit rate, as the coordinator's SQLite uses it (WAL,
/// synchronous=FULL, one small row per transaction) in a temporary
/// directory: the same-run reference for a figure bound by commits.
async fn raw_commits_per_sec(commits: u32) -> f64 {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        .execute(&mut db)
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..commits {
        sqlx::query("INSERT INTO t (id, v) VALUES (?, zeroblob(100))")
            .bind(i64::from(i))
            .execute(&mut db)
            .await
            .unwrap();
    }
    (f64::from(commits) / started.elapsed().as_secs_f64()).round()
}
