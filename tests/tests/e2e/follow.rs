//! Following a job as its scientist does: each failed unit's replicas and
//! how they failed (`GET /jobs/{id}/units`, `coordinator status JOB`), the
//! accepted outputs so far before the job is done (`GET
//! /jobs/{id}/output?partial=true`, `coordinator output --partial`), and
//! one time left, the same on the overview, the job page and the status.
//! Workers are scripted clients over loopback; the commands run as real
//! processes (`coordinator-under-test`).

use coordinator::clock::Clock as _;
use protocol::{
    FailureKind, JobId, JobState, LimitKind, Limits, Outcome, PARTIAL_TOTAL_HEADER,
    PARTIAL_UNITS_HEADER, ResultUpload, UnitStatus, frame,
};
use serde_json::Value;
use wasm_at_home_tests::*;

/// Runs the `coordinator` command (as the tests build it) against `c`;
/// returns its stdout and stderr, and asserts it succeeded.
async fn command(c: &TestCoordinator, args: &[&str]) -> (String, String) {
    let mut all = vec!["--coordinator", &c.url, "--api-key", &c.api_key];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(String::from).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_coordinator-under-test"))
            .args(&all)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    (stdout, stderr)
}

/// A module that writes "bad input" to stderr and exits with status 3.
const EXITS_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\10\00\00\00\09\00\00\00")
  (data (i32.const 16) "bad input")
  (func (export "_start")
    (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const 3))))"#;

/// A module that loops until its fuel runs out.
const LOOPS: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

/// A module with no mode at all (exit status 64 for each): its job's
/// output is the framed accepted outputs, as `reduce` would receive them.
const NO_MODES: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 64))))"#;

const FUEL: u64 = 20_000_000;

fn small_limits() -> Limits {
    Limits {
        fuel: FUEL,
        memory_bytes: 16 << 20,
        output_bytes: 1024,
    }
}

async fn failed_units(c: &TestCoordinator, job: JobId, query: &str) -> reqwest::Response {
    reqwest::get(format!("{}/api/v1/jobs/{job}/units?{query}", c.url))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_units_show_each_replicas_failure_its_exit_status_and_the_limit_it_hit() {
    let c = TestCoordinator::start().await;
    let exits = wat::parse_str(EXITS_3).unwrap();
    let loops = wat::parse_str(LOOPS).unwrap();
    let exit_job = c
        .submit_units(
            exits.clone(),
            vec![b"a".to_vec()],
            quorum(2, 3),
            small_limits(),
        )
        .await;
    let [a, b, d] = [
        ManualWorker::register(&c.url, "a").await,
        ManualWorker::register(&c.url, "b").await,
        ManualWorker::register(&c.url, "d").await,
    ];
    // a cannot run it (its own trouble, not a vote); b and d agree that
    // the module exits with status 3.
    let la = a.take(1).await.remove(0);
    let lb = b.take(1).await.remove(0);
    a.client
        .upload(
            la.replica_id,
            &ResultUpload {
                outcome: Outcome::Failure {
                    kind: FailureKind::WorkerError,
                    message: "cannot download the module: connection reset".into(),
                },
                fuel_used: 0,
            },
        )
        .await
        .unwrap();
    let ld = d.take(1).await.remove(0);
    for (w, l) in [(&b, &lb), (&d, &ld)] {
        w.client
            .upload(l.replica_id, &sandbox_result(&exits, l))
            .await
            .unwrap();
    }
    let s = c.wait_for_job(exit_job).await;
    assert_eq!((s.state, s.units_failed), (JobState::Failed, 1), "{s:?}");

    let res = failed_units(&c, exit_job, "state=failed").await;
    assert_eq!(res.status(), 200);
    let units: Vec<UnitStatus> = res.json().await.unwrap();
    assert_eq!(units.len(), 1);
    let u = &units[0];
    assert_eq!(u.replicas, 3);
    let detail: Vec<_> = u
        .replica_detail
        .iter()
        .map(|r| (r.id, r.state.as_str(), r.failure_kind, r.exit_status))
        .collect();
    assert_eq!(
        detail,
        vec![
            (
                la.replica_id,
                "errored",
                Some(FailureKind::WorkerError),
                None
            ),
            (lb.replica_id, "valid", Some(FailureKind::ExitCode), Some(3)),
            (ld.replica_id, "valid", Some(FailureKind::ExitCode), Some(3)),
        ],
        "{u:?}"
    );
    assert_eq!(u.replica_detail[0].worker_id, a.id);
    assert!(
        u.replica_detail[0]
            .message
            .as_deref()
            .unwrap()
            .contains("connection reset")
    );
    let m = u.replica_detail[1].message.as_deref().unwrap();
    assert_eq!(m, "the module exited with status 3: bad input");
    assert!(u.replica_detail.iter().all(|r| r.limit.is_none()));

    // Out of fuel: the limit it hit, with the job's value.
    let fuel_job = c
        .submit_units(
            loops.clone(),
            vec![b"x".to_vec()],
            quorum(2, 2),
            small_limits(),
        )
        .await;
    for w in [&b, &d] {
        let l = w.take(1).await.remove(0);
        w.client
            .upload(l.replica_id, &sandbox_result(&loops, &l))
            .await
            .unwrap();
    }
    assert_eq!(c.wait_for_job(fuel_job).await.state, JobState::Failed);
    let units: Vec<UnitStatus> = failed_units(&c, fuel_job, "state=failed")
        .await
        .json()
        .await
        .unwrap();
    for r in &units[0].replica_detail {
        assert_eq!(r.failure_kind, Some(FailureKind::OutOfFuel), "{r:?}");
        let hit = r.limit.expect("the fuel limit");
        assert_eq!((hit.limit, hit.value), (LimitKind::Fuel, FUEL));
        assert_eq!(r.fuel_used, Some(FUEL));
    }

    // The command shows the same, readably.
    let (out, _) = command(&c, &["status", &exit_job.to_string()]).await;
    assert!(out.contains("failed units (1):"), "{out}");
    assert!(out.contains("errored     worker_error"), "{out}");
    assert!(
        out.contains("valid       exit_code, exit status 3"),
        "{out}"
    );
    assert!(
        out.contains("        the module exited with status 3: bad input"),
        "{out}"
    );
    let (out, _) = command(&c, &["status", &fuel_job.to_string()]).await;
    assert!(
        out.contains("out_of_fuel, hit the fuel limit of 20,000,000"),
        "{out}"
    );
    let (json, _) = command(&c, &["status", "--json", &fuel_job.to_string()]).await;
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], "failed");

    // The answer stays bounded: a limit above the most is refused by name
    // (accepted units, listed without detail, may be listed in more).
    let too_many = failed_units(&c, exit_job, "state=failed&limit=1001").await;
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("at most 1000"),
        "{body}"
    );
    assert_eq!(
        failed_units(&c, exit_job, "state=accepted&limit=10000")
            .await
            .status(),
        200
    );
}

/// The index of a unit whose input is `unit N`.
fn index_of(lease: &protocol::Lease) -> usize {
    std::str::from_utf8(&lease.input)
        .unwrap()
        .strip_prefix("unit ")
        .unwrap()
        .parse()
        .unwrap()
}

async fn partial(c: &TestCoordinator, job: JobId) -> (u64, u64, Vec<u8>) {
    let res = reqwest::get(format!("{}/api/v1/jobs/{job}/output?partial=true", c.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let header = |name: &str| -> u64 { res.headers()[name].to_str().unwrap().parse().unwrap() };
    let (units, total) = (header(PARTIAL_UNITS_HEADER), header(PARTIAL_TOTAL_HEADER));
    (units, total, res.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_output_holds_exactly_the_accepted_outputs_so_far_in_unit_order() {
    let c = TestCoordinator::start_with(declared_leases).await;
    let units: Vec<Vec<u8>> = (0..6).map(|i| format!("unit {i}").into_bytes()).collect();
    let module = wat::parse_str(NO_MODES).unwrap();
    let job = c
        .submit_units(module, units, quorum(1, 2), default_limits())
        .await;
    // Each unit's output, of different lengths (unit 2's is empty).
    let output = |i: usize| "x".repeat(i * 3).into_bytes();
    let w = ManualWorker::register(&c.url, "scripted").await;
    let mut leases = w.take(6).await;
    assert_eq!(leases.len(), 6);
    leases.sort_by_key(index_of);
    let upload = async |i: usize| {
        let result = ResultUpload {
            outcome: Outcome::Success {
                output: output(i).into(),
            },
            fuel_used: 1_000,
        };
        w.client
            .upload(leases[i].replica_id, &result)
            .await
            .unwrap();
    };

    // Nothing accepted yet: an empty stream that says so.
    assert_eq!(partial(&c, job).await, (0, 6, Vec::new()));

    // Units 4, 0 and 2 come back (out of order); 1, 3 and 5 are still out.
    for i in [4, 0, 2] {
        upload(i).await;
    }
    let s = c.status(job).await;
    assert_eq!((s.state, s.units_accepted), (JobState::Running, 3), "{s:?}");
    let (n, total, body) = partial(&c, job).await;
    assert_eq!((n, total), (3, 6));
    let want = frame::encode([&output(0)[..], &output(2)[..], &output(4)[..]]);
    assert_eq!(body, want, "units 0, 2 and 4, in unit order, framed");
    assert_eq!(frame::decode(&body).unwrap().len(), 3);

    // The command writes the same bytes and tells how many of how many.
    let file = c.dir.path().join("so-far.framed");
    let (stdout, stderr) = command(
        &c,
        &[
            "output",
            &job.to_string(),
            "--partial",
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(stdout, "");
    assert!(stderr.contains("3 of its 6 units"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), want);
    let (stdout, _) = command(&c, &["output", &job.to_string(), "--partial"]).await;
    assert_eq!(stdout.as_bytes(), want, "to stdout");

    // Once every unit is in, the stream holds them all, in order: what
    // the reduce received (this module has none, so it is the output).
    for i in [5, 1, 3] {
        upload(i).await;
    }
    assert_eq!(c.wait_for_job(job).await.state, JobState::Done);
    let (n, total, body) = partial(&c, job).await;
    assert_eq!((n, total), (6, 6));
    let all: Vec<Vec<u8>> = (0..6).map(output).collect();
    assert_eq!(body, frame::encode(all.iter().map(|o| &o[..])));
    assert_eq!(body, c.output(job).await);

    // Bad requests change nothing and say why.
    let bad = reqwest::get(format!("{}/api/v1/jobs/{job}/output?partial=yes", c.url))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = reqwest::get(format!(
        "{}/api/v1/jobs/{}/output?partial=true",
        c.url,
        JobId::random()
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overview_the_job_page_and_the_status_show_one_time_left() {
    let c = TestCoordinator::start_with(declared_leases).await;
    let units: Vec<Vec<u8>> = (0..10).map(|i| format!("unit {i}").into_bytes()).collect();
    let module = wat::parse_str(NO_MODES).unwrap();
    let job = c
        .submit_units(module, units, quorum(1, 1), default_limits())
        .await;
    let done = ResultUpload {
        outcome: Outcome::Success {
            output: b"1".to_vec().into(),
        },
        fuel_used: 1_000,
    };
    // Nobody worked for five minutes (not counted); then two units, and
    // 50 s later two more.
    c.clock.advance(300_000);
    let w = ManualWorker::register(&c.url, "scripted").await;
    let leases = w.take(10).await;
    assert_eq!(leases.len(), 10);
    let first = c.clock.now_ms();
    for l in &leases[..2] {
        w.client.upload(l.replica_id, &done).await.unwrap();
    }
    c.clock.advance(50_000);
    for l in &leases[2..4] {
        w.client.upload(l.replica_id, &done).await.unwrap();
    }
    let now = c.clock.now_ms();
    // Four in the time since the first acceptance's second; six left.
    let span = now - first.div_euclid(1000) * 1000;
    let rate = 4.0 * 1000.0 / span as f64;
    let left = (6.0 / rate * 1000.0).round() as i64;

    let get = async |path: String| -> Value {
        reqwest::get(format!("{}{path}", c.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let overview = get("/api/v1/dashboard/overview".into()).await;
    let page = get(format!("/api/v1/dashboard/jobs/{job}")).await;
    let status = get(format!("/api/v1/jobs/{job}")).await;
    let listed = get("/api/v1/jobs".into()).await;
    for (what, j) in [
        ("overview", &overview["jobs"][0]),
        ("job page", &page["job"]),
        ("status", &status),
        ("jobs", &listed[0]),
    ] {
        assert_eq!(j["time_left_ms"].as_i64(), Some(left), "{what}: {j}");
        let r = j["rate_per_s"].as_f64().unwrap();
        assert!((r - rate).abs() < 1e-12, "{what}: {r} vs {rate}");
    }
    let (out, _) = command(&c, &["status", &job.to_string()]).await;
    let shown = coordinator::report::duration(left);
    assert!(out.contains(&format!("time left  about {shown}")), "{out}");

    // Everything in: running until reduced, then no time left at all.
    for l in &leases[4..] {
        w.client.upload(l.replica_id, &done).await.unwrap();
    }
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, JobState::Done, "{s:?}");
    let status = get(format!("/api/v1/jobs/{job}")).await;
    assert_eq!(status["time_left_ms"], Value::Null);
    assert_eq!(status["rate_per_s"], Value::Null);
}
