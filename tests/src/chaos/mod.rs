//! Chaos: a job of a few thousand small `primes` units, quorum 2, run by
//! real worker processes (`worker-under-test`) against a real coordinator
//! process (`coordinator-under-test`). The coordinator is killed with
//! SIGKILL at moments of a seeded schedule and restarted on the same data
//! directory and port (the workers find it again by themselves); workers are
//! killed with SIGKILL and restarted on their state directories. One kill
//! happens while the job splits, one once every unit is accepted (the
//! reduce), and one keeps the coordinator down longer than a lease, with a
//! worker killed and restarted meanwhile (results then come back too late
//! and are refused). At the end, from the coordinator's API and database
//! (never from logs):
//!
//! - the job's output, and every unit's accepted output and fuel, are
//!   byte-identical to a clean run's, computed in this process by the same
//!   sandbox (split, run every unit, reduce);
//! - no unit was accepted twice: every unit is accepted exactly once, by a
//!   valid replica of its own, the job's counts match (`units_accepted`,
//!   `output_version` 1) and its kept aggregates match a recount
//!   (`verify_job_aggregates`); each worker's `valid`/`invalid` counters
//!   equal its replicas in those states; every valid replica agrees with
//!   the clean run;
//! - credit: each worker's and each account's `credit_fuel` is the sum of
//!   the fuel of its valid replicas (`credit::granted`: the agreed fuel,
//!   which must also be the clean run's fuel for that unit);
//! - no acknowledged result was lost: every result the coordinator took
//!   from a worker is in the database as that worker's replica, returned,
//!   valid, invalid or errored.
//!
//! Which results were acknowledged comes from the workers' state
//! directories, watched with inotify: a worker writes each result to
//! `results/<replica>.json` (a rename) and removes the file only once the
//! coordinator answered for it (`worker/src/uploader.rs`), so every removal
//! is an answer. An answer is an acknowledgement unless it was a refusal,
//! which the worker logs (`result refused; dropping it replica=N`); the log
//! is read only to take those out. The kernel records a removal even when
//! the worker is killed right after, so nothing here depends on when a
//! process died.
//!
//! The schedule is a function of the seed: kill moments are thresholds of
//! accepted units (the driver polls the job's status and fires every event
//! whose threshold was crossed), victims are drawn from the same generator.
//! The same seed replays the same schedule; what the processes were doing at
//! each kill is up to the machine. Every wait has a deadline and says what
//! it waited for.
//!
//! Timing is measured, never asserted: how long the coordinator takes to be
//! ready after a kill, how long until units are accepted again, and, from
//! the database's lease times, how long until each worker is given work
//! after a coordinator restart and after its own restart, and why each
//! lease that ran out did (the worker's `unit started` and `lease ran out`
//! lines are read for that figure, never for a check).

use anyhow::{Context as _, anyhow, bail, ensure};
use protocol::{JobId, JobSpec, JobState, JobStatus, Limits, frame};
use rustix::fs::inotify;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::BufRead as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub units: u64,
    pub workers: usize,
    pub slots: usize,
    pub coordinator_kills: usize,
    pub worker_kills: usize,
    pub seed: u64,
    /// The job's lease period: a killed worker's leases come back after it.
    pub lease_secs: u64,
    /// The whole run, checks included, or it fails.
    pub time_limit: Duration,
    /// How long one of the coordinator kills (the first at a random
    /// moment) keeps it down; zero for none.
    pub outage: Duration,
    /// Adaptive replication: trusted workers take units alone, with spot
    /// checks and the audit before the output (quorum 2 otherwise).
    pub adaptive: bool,
}

impl Plan {
    /// The short run of the end-to-end tests: 2,000 units, 10 coordinator
    /// kills, 4 worker kills.
    pub fn short(seed: u64) -> Plan {
        Plan {
            units: 2_000,
            workers: 4,
            slots: 2,
            coordinator_kills: 10,
            worker_kills: 4,
            seed,
            lease_secs: 3,
            time_limit: Duration::from_secs(240),
            outage: Duration::from_secs(4),
            adaptive: false,
        }
    }
}

/// The two programs a run starts.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub coordinator: PathBuf,
    pub worker: PathBuf,
}

/// A seed from the clock, for runs not told one.
pub fn fresh_seed() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    SplitMix64(t.as_nanos() as u64).next_u64() % 1_000_000_000
}

/// SplitMix64: the schedule's generator (no dependency, same numbers on
/// every platform).
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the coordinator, restart it on the same data and port at
    /// once.
    Coordinator,
    /// SIGKILL the coordinator and keep it down for the plan's `outage`
    /// (longer than a lease) before the restart: results computed
    /// meanwhile come back after their deadlines. Halfway through, worker
    /// `i` is killed and restarted too (it starts with the coordinator
    /// away).
    LongOutage(usize),
    /// SIGKILL worker `i`, restart it on the same state directory.
    Worker(usize),
}

/// The schedule: (accepted units at which to fire, fault), in order. With
/// two or more coordinator kills, one comes right after the submission
/// (while the job is splitting) and one once every unit is accepted (the
/// reduce); the others, and every worker kill, at random thresholds.
pub fn schedule(plan: &Plan) -> Vec<(u64, Fault)> {
    let mut rng = SplitMix64(plan.seed);
    let mut events = Vec::new();
    let inner = |rng: &mut SplitMix64| 1 + rng.below(plan.units.saturating_sub(1).max(1));
    let random_from = if plan.coordinator_kills >= 2 { 2 } else { 0 };
    for k in 0..plan.coordinator_kills {
        let at = match k {
            0 if plan.coordinator_kills >= 2 => 0,
            1 if plan.coordinator_kills >= 2 => plan.units,
            _ => inner(&mut rng),
        };
        let fault = if k == random_from && !plan.outage.is_zero() {
            Fault::LongOutage(rng.below(plan.workers as u64) as usize)
        } else {
            Fault::Coordinator
        };
        events.push((at, fault));
    }
    for _ in 0..plan.worker_kills {
        let at = inner(&mut rng);
        let victim = rng.below(plan.workers as u64) as usize;
        events.push((at, Fault::Worker(victim)));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

pub(super) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The last lines of a log file, to show with a failure.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

mod answers;
mod checks;
mod figures;
mod processes;
mod reference;

use answers::*;
use checks::*;
use figures::*;
use processes::*;
pub use reference::{Reference, reference};

/// Runs the plan; `Err` names the first check that failed (with the seed).
/// Returns the figures as one JSON object.
pub fn run(plan: &Plan, bins: &Binaries) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    run_in(&rt, plan, bins).with_context(|| {
        format!(
            "chaos run with seed {} failed (replay with that seed)",
            plan.seed
        )
    })
}

fn run_in(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    bins: &Binaries,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let deadline = started + plan.time_limit;
    let events = schedule(plan);
    eprintln!(
        "chaos: seed {}, {} units, {} workers x {} slots, {} coordinator kills and {} worker kills at accepted units {:?}",
        plan.seed,
        plan.units,
        plan.workers,
        plan.slots,
        plan.coordinator_kills,
        plan.worker_kills,
        events
    );

    // The clean run.
    let module = crate::primes_wasm();
    let input = format!("{} {}", plan.units * 2_000, plan.units);
    let limits = crate::default_limits();
    let t = Instant::now();
    let reference = reference(&module, input.as_bytes(), &limits)?;
    ensure!(
        reference.outputs.len() as u64 == plan.units,
        "the clean run split into {} units",
        reference.outputs.len()
    );
    eprintln!(
        "chaos: clean run in this process: {} units in {:.1} s, output {:?}",
        plan.units,
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&reference.job_output)
    );

    // CHAOS_KEEP=1 keeps the run's directory (the coordinator's data and
    // log, the workers' state) for a look afterwards.
    let tmp = tempfile::tempdir()?;
    let (_tmp, root) = if std::env::var_os("CHAOS_KEEP").is_some() {
        let root = tmp.keep();
        eprintln!("chaos: keeping {}", root.display());
        (None, root)
    } else {
        let root = tmp.path().to_path_buf();
        (Some(tmp), root)
    };
    let data_dir = root.join("coordinator");
    let log = root.join("coordinator.log");
    let (mut coordinator, addr) =
        CoordinatorProcess::start(&bins.coordinator, &data_dir, "127.0.0.1:0", &log)?;
    let url = format!("http://{addr}");
    let api_key = coordinator::read_api_key(&data_dir)?;
    let client = coordinator::client::Client::new(&url, Some(api_key));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    let mut workers: Vec<Worker> = (0..plan.workers)
        .map(|i| Worker {
            name: format!("chaos-{i}"),
            state_dir: root.join(format!("worker-{i}")),
            log: Arc::default(),
            child: None,
            reader: None,
        })
        .collect();
    let watch = AnswerWatch::start(
        &workers
            .iter()
            .map(|w| w.state_dir.clone())
            .collect::<Vec<_>>(),
    )?;

    let job = rt.block_on(async {
        let module = client.upload_blob(module.clone()).await?;
        let input = client.upload_blob(input.clone().into_bytes()).await?;
        client
            .submit(&JobSpec {
                name: "chaos".into(),
                module,
                input: Some(input),
                units: None,
                limits,
                lease_secs: plan.lease_secs,
                validation: protocol::Validation {
                    adaptive: plan.adaptive,
                    ..crate::quorum(2, 6)
                },
                priority: 0,
            })
            .await
    })?;
    for w in &mut workers {
        w.start(&bins.worker, &url, plan.slots)?;
    }

    let mut restarts: Vec<Restart> = Vec::new();
    let mut worker_restarts: Vec<WorkerRestart> = Vec::new();
    let mut next = 0;
    let mut last: Option<JobStatus> = None;
    let fail = |what: String, coordinator_log: &Path| {
        anyhow!(
            "{what}; the coordinator's log ends:\n{}",
            tail(coordinator_log, 30)
        )
    };
    loop {
        if Instant::now() > deadline {
            return Err(fail(
                format!(
                    "the job did not finish within {:?}: {last:?}",
                    plan.time_limit
                ),
                &log,
            ));
        }
        for w in &mut workers {
            w.check_alive()?;
        }
        if let Some(status) = coordinator.child.try_wait()? {
            return Err(fail(
                format!("the coordinator exited by itself ({status})"),
                &log,
            ));
        }
        let status = match rt.block_on(client.status(job)) {
            Ok(s) => s,
            Err(e) => {
                // Up and ready, it answers; a failure here is worth a
                // look, but the deadline decides.
                eprintln!("chaos: status not read: {e:#}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let accepted = status.units_accepted;
        for r in restarts.iter_mut().filter(|r| r.resumed.is_none()) {
            if accepted > r.accepted_at_ready || status.state.is_final() {
                r.resumed = Some(r.ready_at.elapsed());
            }
        }
        let done = status.state.is_final();
        while next < events.len() && (events[next].0 <= accepted || done) {
            let (at, fault) = events[next];
            next += 1;
            match fault {
                Fault::Coordinator | Fault::LongOutage(_) => {
                    let killed = Instant::now();
                    let killed_wall_ms = wall_ms();
                    coordinator.signal(rustix::process::Signal::KILL);
                    coordinator.exit_within(Duration::from_secs(30))?;
                    drop(coordinator);
                    if let Fault::LongOutage(i) = fault {
                        // The fault itself: the coordinator stays away
                        // this long (not a wait for anything), and a
                        // worker restarts meanwhile.
                        std::thread::sleep(plan.outage / 2);
                        let killed_wall_ms = wall_ms();
                        workers[i].signal(rustix::process::Signal::KILL);
                        workers[i].reap(Duration::from_secs(30))?;
                        let spawned_wall_ms = wall_ms();
                        workers[i].start(&bins.worker, &url, plan.slots)?;
                        eprintln!(
                            "chaos: worker {i} killed and restarted while the coordinator is away"
                        );
                        worker_restarts.push(WorkerRestart {
                            worker: i,
                            at_accepted: accepted,
                            coordinator_away: true,
                            killed_wall_ms,
                            spawned_wall_ms,
                        });
                        std::thread::sleep(plan.outage / 2);
                    }
                    coordinator = restart_on(&bins.coordinator, &data_dir, &addr, &log)?;
                    wait_ready(rt, &http, &url, deadline, &mut coordinator, &log)?;
                    let ready = killed.elapsed();
                    let ready_wall_ms = wall_ms();
                    let accepted_at_ready = rt
                        .block_on(client.status(job))
                        .map(|s| s.units_accepted)
                        .unwrap_or(accepted);
                    eprintln!(
                        "chaos: coordinator killed at {accepted} accepted (threshold {at}), ready again after {:.0} ms{}",
                        ms(ready),
                        if matches!(fault, Fault::LongOutage(_)) {
                            " (kept down on purpose)"
                        } else {
                            ""
                        }
                    );
                    restarts.push(Restart {
                        at_accepted: accepted,
                        ready,
                        long: matches!(fault, Fault::LongOutage(_)),
                        killed_wall_ms,
                        ready_wall_ms,
                        ready_at: Instant::now(),
                        accepted_at_ready,
                        resumed: None,
                    });
                }
                Fault::Worker(i) => {
                    let w = &mut workers[i];
                    let killed_wall_ms = wall_ms();
                    w.signal(rustix::process::Signal::KILL);
                    w.reap(Duration::from_secs(30))?;
                    let spawned_wall_ms = wall_ms();
                    w.start(&bins.worker, &url, plan.slots)?;
                    eprintln!(
                        "chaos: worker {i} killed at {accepted} accepted (threshold {at}) and restarted"
                    );
                    worker_restarts.push(WorkerRestart {
                        worker: i,
                        at_accepted: accepted,
                        coordinator_away: false,
                        killed_wall_ms,
                        spawned_wall_ms,
                    });
                }
            }
        }
        if done && next == events.len() {
            let status = rt.block_on(client.status(job))?;
            if status.state.is_final() {
                last = Some(status);
                break;
            }
        }
        last = Some(status);
        // The interval between two polls of the job's status.
        std::thread::sleep(Duration::from_millis(20));
    }
    let chaos_secs = started.elapsed().as_secs_f64();
    let status = last.expect("polled");
    ensure!(
        status.state == JobState::Done,
        "the job ended {}: {:?}",
        status.state.as_str(),
        status.error
    );
    let output = rt.block_on(client.output(job))?;

    // Clean stops: the workers first (they upload what they hold), then
    // the coordinator, then the watch.
    for w in &mut workers {
        w.signal(rustix::process::Signal::TERM);
    }
    for w in &mut workers {
        let status = w.reap(Duration::from_secs(60))?;
        ensure!(
            status.success(),
            "{} did not stop cleanly ({status}); its log ends:\n{}",
            w.name,
            w.log_tail()
        );
    }
    coordinator.signal(rustix::process::Signal::TERM);
    coordinator.exit_within(Duration::from_secs(60))?;
    drop(coordinator);
    let answered = watch.finish()?;

    // The checks.
    ensure!(
        output == reference.job_output,
        "the job's output differs from the clean run's: {:?} against {:?}",
        String::from_utf8_lossy(&output),
        String::from_utf8_lossy(&reference.job_output)
    );
    let mut figures = rt.block_on(check_database(
        &data_dir,
        job,
        plan,
        &reference,
        &workers,
        &answered,
        &restarts,
        &worker_restarts,
    ))?;
    // The spreads are over the kills in the middle of the job, at once
    // restarted: the one while splitting, the one at the end and the long
    // outage are in `coordinator_restarts`, each on its own.
    let resumed: Vec<f64> = restarts
        .iter()
        .filter(|r| r.mid_job(plan))
        .filter_map(|r| r.resumed.map(ms))
        .collect();
    let f = figures.as_object_mut().unwrap();
    f.insert("bench".into(), "chaos".into());
    f.insert("seed".into(), plan.seed.into());
    f.insert("units".into(), plan.units.into());
    f.insert("workers".into(), plan.workers.into());
    f.insert("slots".into(), plan.slots.into());
    f.insert("lease_secs".into(), plan.lease_secs.into());
    f.insert("adaptive".into(), plan.adaptive.into());
    f.insert("coordinator_kills".into(), restarts.len().into());
    f.insert("worker_kills".into(), worker_restarts.len().into());
    f.insert(
        "worker_kills_with_the_coordinator_away".into(),
        worker_restarts
            .iter()
            .filter(|r| r.coordinator_away)
            .count()
            .into(),
    );
    f.insert(
        "coordinator_kills_at_accepted".into(),
        restarts
            .iter()
            .map(|r| r.at_accepted)
            .collect::<Vec<_>>()
            .into(),
    );
    f.insert(
        "worker_kills_at_accepted".into(),
        worker_restarts
            .iter()
            .map(|r| serde_json::json!([r.at_accepted, r.worker, r.coordinator_away]))
            .collect::<Vec<_>>()
            .into(),
    );
    f.insert(
        "chaos_secs".into(),
        ((chaos_secs * 10.0).round() / 10.0).into(),
    );
    f.insert(
        "wall_secs".into(),
        ((started.elapsed().as_secs_f64() * 10.0).round() / 10.0).into(),
    );
    f.insert(
        "coordinator_kill_to_ready_ms".into(),
        spread(
            restarts
                .iter()
                .filter(|r| !r.long)
                .map(|r| ms(r.ready))
                .collect(),
        ),
    );
    f.insert(
        "coordinator_ready_to_next_accepted_ms".into(),
        spread(resumed),
    );
    f.insert("cpu".into(), crate::cpu_name().into());
    Ok(figures)
}

/// Starts the coordinator again where the workers look for it. Should
/// another program have taken the port in the moment it was free (the
/// kernel may hand it out for an outgoing connection), tries again for a
/// few seconds before giving up.
fn restart_on(
    bin: &Path,
    data_dir: &Path,
    addr: &str,
    log: &Path,
) -> anyhow::Result<CoordinatorProcess> {
    let mut attempts = 0;
    loop {
        match CoordinatorProcess::start(bin, data_dir, addr, log) {
            Ok((c, _)) => return Ok(c),
            Err(_) if attempts < 50 && tail(log, 3).contains("cannot listen") => {
                attempts += 1;
                // Until the port is free again; bounded by the attempts.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Polls `/readyz` until the coordinator answers, or the deadline.
fn wait_ready(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    url: &str,
    deadline: Instant,
    coordinator: &mut CoordinatorProcess,
    log: &Path,
) -> anyhow::Result<()> {
    loop {
        let ok = rt.block_on(async {
            matches!(http.get(format!("{url}/readyz")).send().await, Ok(r) if r.status().is_success())
        });
        if ok {
            return Ok(());
        }
        if let Some(status) = coordinator.child.try_wait()? {
            bail!(
                "the restarted coordinator exited ({status}); its log ends:\n{}",
                tail(log, 30)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted coordinator was not ready in time"
        );
        // Polling the coordinator until it answers; not a synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A unit, and the replica it accepted (if any).
type UnitRow = (i64, i64, String, Option<i64>, Option<i64>, Option<String>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let plan = Plan::short(42);
        let events = schedule(&plan);
        assert_eq!(events, schedule(&plan));
        assert_ne!(events, schedule(&Plan::short(43)));
        let coordinator = events
            .iter()
            .filter(|(_, f)| matches!(f, Fault::Coordinator | Fault::LongOutage(_)))
            .count();
        assert_eq!(coordinator, plan.coordinator_kills);
        assert_eq!(events.len(), plan.coordinator_kills + plan.worker_kills);
        assert_eq!(events.first().map(|e| e.0), Some(0), "one while splitting");
        assert_eq!(
            events.last().map(|e| e.0),
            Some(plan.units),
            "one at the end"
        );
        assert_eq!(
            events
                .iter()
                .filter(|(_, f)| matches!(f, Fault::LongOutage(_)))
                .count(),
            1
        );
        assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn the_worker_log_gives_its_refusals_and_started_units() {
        let mut log = WorkerLog::default();
        log.take("2026-12-01T12:49:58.085678Z  WARN worker::uploader: result refused; dropping it replica=123 code=gone status=410 message=the lease ran out".into());
        log.take(
            "2026-12-01T12:49:58.1Z DEBUG worker::runner: unit started replica=7 job=abc".into(),
        );
        log.take("2026-12-01T12:49:58.1Z  INFO worker::daemon: lease ran out before the unit started; dropped replica=9".into());
        assert_eq!(log.refused.get(&123).map(String::as_str), Some("gone"));
        assert!(log.started.contains(&7) && !log.started.contains(&9));
        assert!(log.dropped.contains(&9));
        assert_eq!(log.tail.len(), 2, "per-unit lines are not kept");
    }
}
