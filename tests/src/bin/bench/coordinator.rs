//! `bench -- coordinator`: the saturation throughput of a real coordinator
//! (SQLite) with K simulated workers over HTTP on loopback. With
//! `--jobs N`, the same units as N jobs from `--submitters S` submitters
//! (their own keys, equal shares) after a run of one job on the same host,
//! both printed: fair share's cost is the difference.

use super::percentile;
use protocol::{JobId, JobState, Outcome, ReplicaResult, ResultBatch, ResultUpload};
use std::time::{Duration, Instant};
use wasm_at_home_tests::{TestCoordinator, default_limits, primes_wasm, quorum};

/// What one run is given.
#[derive(Clone, Copy, Debug)]
struct Options {
    workers: usize,
    units: u64,
    batch: u32,
    upload_batch: usize,
    rate: Option<u64>,
    limit: Duration,
}

pub fn run(smoke: bool, args: &[String]) -> serde_json::Value {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let batch = flag("--batch").unwrap_or(4) as u32;
    let options = Options {
        workers: flag("--workers").unwrap_or(if smoke { 50 } else { 1000 }) as usize,
        units: flag("--units").unwrap_or(if smoke { 2_000 } else { 100_000 }),
        batch,
        // Results per upload request: 1 uses PUT /replicas/{id}/result,
        // more POST /results.
        upload_batch: flag("--upload-batch").unwrap_or(u64::from(batch)).max(1) as usize,
        // An offered load in replicas per second: each simulated worker then
        // "computes" for workers/rate seconds per unit. Without it, workers
        // ask again at once and the figures are the saturation throughput.
        rate: flag("--rate"),
        limit: Duration::from_secs(if smoke { 30 } else { 120 }),
    };
    let jobs = flag("--jobs").unwrap_or(1).max(1) as usize;
    let submitters = flag("--submitters")
        .unwrap_or(if jobs > 1 { 10 } else { 1 })
        .clamp(1, jobs as u64) as usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let commits = if smoke { 200 } else { 2_000 };
    if jobs == 1 {
        let mut one = rt.block_on(saturate(options, 1, 1));
        one["raw_commits_per_sec"] = rt.block_on(super::raw_commits_per_sec(commits)).into();
        return one;
    }
    // Pairs of runs, one job and many, back to back, the order turned
    // every other pair: this host's disk and CPU drift by more than the
    // difference measured, so the figure is the median of the pairs'
    // ratios.
    let pairs = flag("--pairs").unwrap_or(1).clamp(1, 10) as usize;
    let mut runs = Vec::new();
    let mut ratios = Vec::new();
    for pair in 1..=pairs {
        let (one, many) = if pair % 2 == 1 {
            let one = rt.block_on(saturate(options, 1, 1));
            (one, rt.block_on(saturate(options, jobs, submitters)))
        } else {
            let many = rt.block_on(saturate(options, jobs, submitters));
            (rt.block_on(saturate(options, 1, 1)), many)
        };
        let raw = rt.block_on(super::raw_commits_per_sec(commits));
        let ratio = many["replicas_per_sec"].as_f64().unwrap_or(0.0)
            / one["replicas_per_sec"].as_f64().unwrap_or(1.0).max(1.0);
        eprintln!(
            "pair {pair}: {jobs} jobs of {submitters} submitters: {} replicas/s, against {} with one job ({:.1}%); the disk's raw SQLite commit rate: {raw} commits/s",
            many["replicas_per_sec"],
            one["replicas_per_sec"],
            ratio * 100.0
        );
        ratios.push(ratio);
        runs.push(serde_json::json!({
            "one_job": one,
            "many_jobs": many,
            "many_over_one": (ratio * 1000.0).round() / 1000.0,
            "raw_commits_per_sec": raw,
        }));
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
    eprintln!(
        "{jobs} jobs against one, median of {pairs} pairs: {:.1}%",
        median * 100.0
    );
    serde_json::json!({
        "bench": "coordinator",
        "cpu": wasm_at_home_tests::cpu_name(),
        "pairs": runs,
        "many_over_one_median": (median * 1000.0).round() / 1000.0,
    })
}

/// Submits `options.units` units as `jobs` jobs of `submitters`
/// submitters, and has the workers lease and return replicas as fast as
/// the coordinator serves them.
async fn saturate(options: Options, jobs: usize, submitters: usize) -> serde_json::Value {
    let Options {
        workers,
        units,
        batch,
        upload_batch,
        rate,
        limit,
    } = options;
    let think = rate.map(|r| Duration::from_secs_f64(workers as f64 / r.max(1) as f64));
    let c = TestCoordinator::start().await;
    let submitted = submit(&c, units, jobs, submitters).await;
    for &job in &submitted {
        c.wait_until(job, |s| s.state == JobState::Running).await;
    }
    eprintln!(
        "{units} units in {jobs} jobs of {submitters} submitters ready; registering {workers} workers"
    );
    let mut clients = Vec::new();
    for i in 0..workers {
        let client = worker::client::Client::new(&c.url);
        let r = client
            .register(&format!("sim-{i}"), batch.div_ceil(2).max(1))
            .await
            .unwrap();
        clients.push(client.with_token(r.token));
    }
    let written = bytes_written();
    let writer = writer_figures(&c.url).await;
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let (mut lease_ms, mut upload_ms, mut uploaded) = (Vec::new(), Vec::new(), 0u64);
            // Paced workers start spread over one cycle, as volunteers'
            // machines would be, instead of all in step.
            if let Some(think) = think {
                tokio::time::sleep(think * batch * i as u32 / workers as u32).await;
            }
            while Instant::now() < deadline {
                let t = Instant::now();
                let Ok(resp) = client.work(batch, None).await else {
                    break;
                };
                lease_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if resp.leases.is_empty() {
                    break; // every unit is leased or settled
                }
                if let Some(think) = think {
                    tokio::time::sleep(think * resp.leases.len() as u32).await;
                }
                // Every replica of a unit returns the same bytes:
                // agreement, so quorum 2 accepts the unit.
                let results: Vec<ReplicaResult> = resp
                    .leases
                    .iter()
                    .map(|lease| ReplicaResult {
                        replica_id: lease.replica_id,
                        result: ResultUpload {
                            outcome: Outcome::Success {
                                output: lease.unit_id.0.to_le_bytes().to_vec().into(),
                            },
                            fuel_used: 1,
                        },
                    })
                    .collect();
                for chunk in results.chunks(upload_batch) {
                    let t = Instant::now();
                    if let [one] = chunk {
                        if client.upload(one.replica_id, &one.result).await.is_ok() {
                            uploaded += 1;
                        }
                    } else if let Ok(r) = client
                        .upload_many(&ResultBatch {
                            results: chunk.to_vec(),
                        })
                        .await
                    {
                        uploaded += r.results.iter().filter(|a| a.status.is_some()).count() as u64;
                    }
                    upload_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            (lease_ms, upload_ms, uploaded)
        });
    }
    let (mut lease_ms, mut upload_ms, mut uploaded) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, u, n) = r.unwrap();
        lease_ms.extend(l);
        upload_ms.extend(u);
        uploaded += n;
    }
    let secs = started.elapsed().as_secs_f64();
    let written = bytes_written() - written;
    let (transactions, writes, commit_secs) = {
        let (t, w, s) = writer_figures(&c.url).await;
        (t - writer.0, w - writer.1, s - writer.2)
    };
    let mut accepted = 0;
    let mut done = 0;
    for &job in &submitted {
        let status = c
            .coordinator
            .store()
            .job_status(job)
            .await
            .unwrap()
            .unwrap();
        accepted += status.units_accepted;
        done += usize::from(status.units_accepted == status.units_total);
    }
    lease_ms.sort_by(f64::total_cmp);
    upload_ms.sort_by(f64::total_cmp);
    eprintln!(
        "{workers} workers, {secs:.1} s: {uploaded} replicas uploaded, {accepted} units accepted, {done} of {jobs} jobs complete"
    );
    serde_json::json!({
        "bench": "coordinator",
        "workers": workers,
        "jobs": jobs,
        "submitters": submitters,
        "batch": batch,
        "upload_batch": upload_batch,
        "offered_rate": rate,
        "secs": (secs * 100.0).round() / 100.0,
        "replicas_per_sec": (uploaded as f64 / secs).round(),
        "units_per_sec": (accepted as f64 / secs).round(),
        "jobs_complete": done,
        "lease_p50_ms": percentile(&lease_ms, 0.5),
        "lease_p99_ms": percentile(&lease_ms, 0.99),
        "upload_p50_ms": percentile(&upload_ms, 0.5),
        "upload_p99_ms": percentile(&upload_ms, 0.99),
        // Where the writer's time went: its transactions, their mean
        // size, the share of the run spent committing, and the bytes the
        // process wrote (WAL, checkpoints) per replica returned.
        "writer_transactions": transactions,
        "writes_per_transaction": (writes / transactions.max(1.0) * 10.0).round() / 10.0,
        "commit_share": (commit_secs / secs * 1000.0).round() / 1000.0,
        "bytes_written_per_replica": (written as f64 / uploaded.max(1) as f64).round(),
    })
}

/// The bytes this process has sent to storage (`write_bytes` in
/// `/proc/self/io`: the database's pages, not its sockets), 0 where
/// there is no such file or the temporary directory is in memory
/// (tmpfs).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The group-commit task's transactions, writes and commit seconds so
/// far, from the coordinator's `/metrics`.
async fn writer_figures(url: &str) -> (f64, f64, f64) {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("wasm_at_home_writer_batch_writes_count"),
        value("wasm_at_home_writer_batch_writes_sum"),
        value("wasm_at_home_writer_commit_seconds_sum"),
    )
}

/// Submits `units` primes units as `jobs` jobs, dealt round-robin to
/// `submitters` submitters of equal share, each submitting with its own key.
async fn submit(c: &TestCoordinator, units: u64, jobs: usize, submitters: usize) -> Vec<JobId> {
    if jobs == 1 {
        let job = c
            .submit_input(
                primes_wasm(),
                format!("{} {units}", units * 100).as_bytes(),
                quorum(2, 3),
            )
            .await;
        return vec![job];
    }
    let mut clients = Vec::new();
    for s in 0..submitters {
        clients.push(c.submitter(&format!("scientist-{s}")).await.client);
    }
    let per_job = units / jobs as u64;
    let mut submitted = Vec::new();
    for j in 0..jobs {
        let client = &clients[j % submitters];
        let module = client.upload_blob(primes_wasm()).await.unwrap();
        let input = client
            .upload_blob(format!("{} {per_job}", per_job * 100 * (j as u64 + 1)).into_bytes())
            .await
            .unwrap();
        let job = client
            .submit(&protocol::JobSpec {
                name: format!("job {j}"),
                module,
                input: Some(input),
                units: None,
                limits: default_limits(),
                lease_secs: 60,
                validation: quorum(2, 3),
                priority: 0,
            })
            .await
            .unwrap();
        submitted.push(job);
    }
    submitted
}
