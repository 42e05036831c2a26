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

/// The clean run, in this process: the module split, run and reduced by
/// the same sandbox the worker and the coordinator use.
#[derive(Debug)]
pub struct Reference {
    pub outputs: Vec<Vec<u8>>,
    pub fuel: Vec<u64>,
    pub job_output: Vec<u8>,
}

pub fn reference(module: &[u8], input: &[u8], limits: &Limits) -> anyhow::Result<Reference> {
    use sandbox::{Mode, Sandbox, Stdout};
    let config = coordinator::Config::new("unused");
    let sandbox = Sandbox::new().map_err(|e| anyhow!("sandbox: {e:?}"))?;
    let program = sandbox
        .compile(module)
        .map_err(|e| anyhow!("compile: {e:?}"))?;
    let split = sandbox
        .run(
            &program,
            Mode::Split,
            input,
            &config.split_limits,
            Stdout::Capture,
        )
        .into_output()
        .map_err(|e| anyhow!("split: {e:?}"))?;
    let inputs = frame::decode(&split).map_err(|e| anyhow!("split output: {e:?}"))?;
    let (mut outputs, mut fuel) = (Vec::new(), Vec::new());
    for unit in inputs {
        let report = sandbox.run(&program, Mode::Run, unit, limits, Stdout::Capture);
        fuel.push(report.fuel_used);
        outputs.push(report.into_output().map_err(|e| anyhow!("run: {e:?}"))?);
    }
    let framed = frame::encode(outputs.iter().map(|o| &o[..]));
    let report = sandbox.run(
        &program,
        Mode::Reduce,
        &framed,
        &config.reduce_limits,
        Stdout::Capture,
    );
    let job_output = match report.result {
        // The SDK's answer for a mode a task does not implement.
        Ok(64) => framed,
        _ => report.into_output().map_err(|e| anyhow!("reduce: {e:?}"))?,
    };
    Ok(Reference {
        outputs,
        fuel,
        job_output,
    })
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The last lines of a log file, to show with a failure.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The coordinator process.
#[derive(Debug)]
struct CoordinatorProcess {
    child: Child,
}

impl CoordinatorProcess {
    /// Starts `coordinator-under-test` on `data_dir` and `listen`, and
    /// waits until it listens; returns it and its address.
    fn start(
        bin: &Path,
        data_dir: &Path,
        listen: &str,
        log: &Path,
    ) -> anyhow::Result<(CoordinatorProcess, String)> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--expiry-interval-ms", "500"])
            // Every worker registers from 127.0.0.1, and restarts register
            // again while the coordinator comes and goes: far above the
            // per-address default (6 a minute, burst 3).
            .args(["--registrations-per-minute", "100000"])
            .args(["--registration-burst", "10000"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut process = CoordinatorProcess { child };
        let limit = Duration::from_secs(60);
        let line = rx.recv_timeout(limit).map_err(|_| {
            let exited = process.child.try_wait().ok().flatten();
            anyhow!(
                "the coordinator did not say it listens on {listen} within {limit:?} (exit: {exited:?}); its log ends:\n{}",
                tail(log, 30)
            )
        })?;
        let addr = line
            .strip_prefix("listening on http://")
            .ok_or_else(|| anyhow!("unexpected first line from the coordinator: {line}"))?
            .to_string();
        Ok((process, addr))
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let _ =
            rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal);
    }

    fn exit_within(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit, "the coordinator")
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> anyhow::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        ensure!(
            started.elapsed() < limit,
            "{what} did not exit within {limit:?}"
        );
        // Polling a child's exit status; not a synchronisation.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a worker's log tells: its refusals (the only thing read from it
/// for the checks) and its last lines (for failure messages).
#[derive(Debug, Default)]
struct WorkerLog {
    refused: HashMap<i64, String>,
    /// Leases the worker dropped unstarted, their deadline passed (for the
    /// figures only).
    dropped: HashSet<i64>,
    /// Leases the worker started (`unit started`, for the figures only).
    started: HashSet<i64>,
    tail: VecDeque<String>,
}

impl WorkerLog {
    fn take(&mut self, line: String) {
        if line.contains("result refused") {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(str::to_string)
            };
            if let Some(id) = field("replica=").and_then(|r| r.parse().ok()) {
                self.refused
                    .insert(id, field("code=").unwrap_or_else(|| "?".into()));
            }
        }
        if line.contains("unit started")
            && !line.contains("lease ran out")
            && let Some(id) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("replica="))
                .and_then(|r| r.parse().ok())
        {
            self.started.insert(id);
            return;
        }
        if line.contains("lease ran out before the unit started")
            && let Some(id) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("replica="))
                .and_then(|r| r.parse().ok())
        {
            self.dropped.insert(id);
        }
        if self.tail.len() == 40 {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// One worker: its state directory, its log, its process of the moment.
#[derive(Debug)]
struct Worker {
    name: String,
    state_dir: PathBuf,
    log: Arc<Mutex<WorkerLog>>,
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(&mut self, bin: &Path, url: &str, slots: usize) -> anyhow::Result<()> {
        let mut child = Command::new(bin)
            .args(["run", "--coordinator", url, "--state-dir"])
            .arg(&self.state_dir)
            .args([
                "--slots",
                &slots.to_string(),
                "--grace-secs",
                "1",
                "--name",
                &self.name,
            ])
            // `unit started` is the runner's debug line.
            .env("RUST_LOG", "info,worker::runner=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        self.reader = Some(std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                log.lock().unwrap().take(line);
            }
        }));
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), signal);
        }
    }

    /// Waits for the process to end and for its log to be read to the end.
    fn reap(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        let status = wait_exit(&mut child, limit, &self.name)?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited by itself ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The results the workers' uploaders answered for: every
/// `results/<replica>.json` removed, per worker, seen by inotify.
#[derive(Debug)]
struct AnswerWatch {
    fd: Arc<OwnedFd>,
    wds: Vec<i32>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Answered>>>,
}

#[derive(Clone, Debug, Default)]
struct Answered {
    /// Results written (renamed into `results/`).
    saved: HashSet<i64>,
    /// Results removed: answered by the coordinator.
    removed: HashSet<i64>,
}

impl AnswerWatch {
    fn start(dirs: &[PathBuf]) -> anyhow::Result<AnswerWatch> {
        let fd = Arc::new(inotify::init(inotify::CreateFlags::CLOEXEC)?);
        let mut wds = Vec::new();
        for dir in dirs {
            let results = dir.join("results");
            std::fs::create_dir_all(&results)?;
            wds.push(inotify::add_watch(
                &*fd,
                &results,
                inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::DELETE,
            )?);
        }
        let (reader_fd, reader_wds) = (fd.clone(), wds.clone());
        let thread = std::thread::spawn(move || {
            let mut answered = vec![Answered::default(); reader_wds.len()];
            let mut open: HashSet<i32> = reader_wds.iter().copied().collect();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut reader = inotify::Reader::new(&*reader_fd, &mut buf);
            while !open.is_empty() {
                let event = reader.next()?;
                let flags = event.events();
                if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                    bail!("the inotify queue overflowed: results answered were not all seen");
                }
                if flags.contains(inotify::ReadFlags::IGNORED) {
                    open.remove(&event.wd());
                    continue;
                }
                let Some(i) = reader_wds.iter().position(|w| *w == event.wd()) else {
                    continue;
                };
                let Some(replica) = event
                    .file_name()
                    .and_then(|n| n.to_str().ok())
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    continue;
                };
                if flags.contains(inotify::ReadFlags::MOVED_TO) {
                    answered[i].saved.insert(replica);
                }
                if flags.contains(inotify::ReadFlags::DELETE) {
                    answered[i].removed.insert(replica);
                }
            }
            Ok(answered)
        });
        Ok(AnswerWatch { fd, wds, thread })
    }

    /// Ends the watch (after every worker has exited) and returns what it
    /// saw: removing a watch queues its IN_IGNORED after its last event.
    fn finish(self) -> anyhow::Result<Vec<Answered>> {
        for wd in &self.wds {
            inotify::remove_watch(&*self.fd, *wd)?;
        }
        self.thread
            .join()
            .map_err(|_| anyhow!("the inotify reader panicked"))?
    }
}

/// A coordinator restart, as the driver saw it.
#[derive(Debug)]
struct Restart {
    at_accepted: u64,
    /// From SIGKILL to `/readyz` answering.
    ready: Duration,
    /// Kept down for the plan's outage before the restart.
    long: bool,
    killed_wall_ms: i64,
    ready_wall_ms: i64,
    ready_at: Instant,
    accepted_at_ready: u64,
    /// From ready to the next unit accepted.
    resumed: Option<Duration>,
}

impl Restart {
    /// Killed in the middle of the job (not while it split, nor once every
    /// unit was in) and restarted at once.
    fn mid_job(&self, plan: &Plan) -> bool {
        !self.long && self.at_accepted > 0 && self.at_accepted < plan.units
    }
}

/// A worker restart.
#[derive(Debug)]
struct WorkerRestart {
    worker: usize,
    at_accepted: u64,
    /// Killed and restarted while the coordinator was down.
    coordinator_away: bool,
    killed_wall_ms: i64,
    spawned_wall_ms: i64,
}

/// Median and maximum, in ms.
fn spread(mut xs: Vec<f64>) -> serde_json::Value {
    if xs.is_empty() {
        return serde_json::Value::Null;
    }
    xs.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    serde_json::json!({
        "n": xs.len(),
        "median": round(xs[xs.len() / 2]),
        "max": round(xs[xs.len() - 1]),
    })
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into())
}

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
    f.insert("cpu".into(), cpu_name().into());
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

/// A replica of the job, as the checks read it.
#[derive(Debug, sqlx::FromRow)]
struct ReplicaRow {
    id: i64,
    idx: i64,
    worker: String,
    state: String,
    output: Option<Vec<u8>>,
    fuel: Option<i64>,
    leased_ms: i64,
    deadline_ms: i64,
}

#[allow(clippy::too_many_arguments)]
async fn check_database(
    data_dir: &Path,
    job: JobId,
    plan: &Plan,
    reference: &Reference,
    workers: &[Worker],
    answered: &[Answered],
    restarts: &[Restart],
    worker_restarts: &[WorkerRestart],
) -> anyhow::Result<serde_json::Value> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = data_dir.join("coordinator.sqlite");
    let store =
        coordinator::store::Store::open_sqlite(&db, coordinator::trust::Trust::default()).await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&db).read_only(true))
        .await?;
    let job_id = job.to_string();

    // The job: done once, every unit accepted, aggregates as recounted.
    let status = store
        .job_status(job)
        .await?
        .ok_or_else(|| anyhow!("no job"))?;
    ensure!(
        (
            status.state,
            status.units_total,
            status.units_accepted,
            status.units_failed
        ) == (JobState::Done, plan.units, plan.units, 0),
        "job counts: {status:?}"
    );
    ensure!(
        status.output_version == 1,
        "the job's output was produced {} times",
        status.output_version
    );
    let wrong = store.verify_job_aggregates(&job_id).await?;
    ensure!(
        wrong.is_empty(),
        "the job's kept aggregates differ from a recount: {wrong:?}"
    );

    // Every unit accepted exactly once, by a valid replica of its own
    // whose output and fuel are the clean run's.
    let units: Vec<UnitRow> = sqlx::query_as(
        "SELECT u.idx, u.id, u.state, u.accepted_replica, r.unit_id, r.state
             FROM units u LEFT JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? ORDER BY u.idx",
    )
    .bind(&job_id)
    .fetch_all(&pool)
    .await?;
    ensure!(units.len() as u64 == plan.units, "{} units", units.len());
    for (idx, id, state, accepted, of_unit, replica_state) in &units {
        ensure!(
            state == "accepted"
                && accepted.is_some()
                && *of_unit == Some(*id)
                && replica_state.as_deref() == Some("valid"),
            "unit {idx}: {state}, accepted replica {accepted:?} of unit {of_unit:?} in state {replica_state:?}"
        );
    }
    let accepted_outputs = store.accepted_outputs(job).await?;
    ensure!(
        accepted_outputs == reference.outputs,
        "the accepted outputs differ from the clean run's"
    );

    // Every replica, for the remaining checks.
    let replicas: Vec<ReplicaRow> =
        sqlx::query_as(
            "SELECT r.id, u.idx, r.worker_id AS worker, r.state, r.output, r.fuel_used AS fuel, r.leased_ms, r.deadline_ms
             FROM replicas r JOIN units u ON u.id = r.unit_id WHERE u.job_id = ?",
        )
        .bind(&job_id)
        .fetch_all(&pool)
        .await?;
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut valid_per_unit: HashMap<i64, u32> = HashMap::new();
    let mut by_worker: HashMap<String, (u64, u64, u64)> = HashMap::new(); // valid, invalid, fuel
    let mut by_id: HashMap<i64, (String, String)> = HashMap::new();
    for ReplicaRow {
        id,
        idx,
        worker,
        state,
        output,
        fuel,
        ..
    } in &replicas
    {
        *states.entry(state.clone()).or_default() += 1;
        by_id.insert(*id, (worker.clone(), state.clone()));
        let tally = by_worker.entry(worker.clone()).or_default();
        match state.as_str() {
            "valid" => {
                let i = *idx as usize;
                ensure!(
                    output.as_deref() == Some(&reference.outputs[i][..])
                        && *fuel == Some(reference.fuel[i] as i64),
                    "replica {id} of unit {idx} is valid with output {output:?} and fuel {fuel:?}; the clean run gives {:?} and {}",
                    reference.outputs[i],
                    reference.fuel[i]
                );
                *valid_per_unit.entry(*idx).or_default() += 1;
                tally.0 += 1;
                tally.2 += reference.fuel[i];
            }
            "invalid" => tally.1 += 1,
            _ => {}
        }
    }
    for idx in 0..plan.units as i64 {
        let n = valid_per_unit.get(&idx).copied().unwrap_or(0);
        // Adaptive: a unit a trusted worker took alone may stand on one.
        let quorum = if plan.adaptive { 1 } else { 2 };
        ensure!(
            n >= quorum,
            "unit {idx} has {n} valid replicas, below quorum {quorum}"
        );
    }

    // Counters and credit of every worker and account.
    let now = wall_ms();
    let records = store.workers(1000, now).await?;
    let mut account_fuel: HashMap<String, u64> = HashMap::new();
    for record in &records {
        let (valid, invalid, fuel) = by_worker
            .get(&record.id.to_string())
            .copied()
            .unwrap_or_default();
        ensure!(
            (record.valid, record.invalid) == (valid, invalid),
            "worker {}: counters valid {} invalid {}, its replicas say {valid} and {invalid}",
            record.name,
            record.valid,
            record.invalid
        );
        ensure!(
            record.credit_fuel == fuel,
            "worker {}: credit {} fuel, its valid replicas' fuel is {fuel}",
            record.name,
            record.credit_fuel
        );
        if let Some(account) = &record.account_id {
            *account_fuel.entry(account.clone()).or_default() += fuel;
        }
    }
    for account in store.accounts(1000, now).await? {
        let fuel = account_fuel.get(&account.id).copied().unwrap_or(0);
        ensure!(
            account.credit_fuel == fuel,
            "account {}: credit {} fuel, its workers' valid replicas' fuel is {fuel}",
            account.id,
            account.credit_fuel
        );
    }

    // No acknowledged result lost.
    let mut acknowledged = 0;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut removed_total = 0;
    for (w, seen) in workers.iter().zip(answered) {
        let identity = worker::state::StateDir::open(&w.state_dir)?
            .identity()?
            .ok_or_else(|| anyhow!("{} has no identity", w.name))?;
        let me = identity.worker_id.to_string();
        let log = w.log.lock().unwrap();
        let left = worker::state::StateDir::open(&w.state_dir)?.pending_results()?;
        ensure!(
            left.is_empty(),
            "{} stopped with {} results not uploaded, the coordinator being up",
            w.name,
            left.len()
        );
        ensure!(
            seen.saved.is_superset(&seen.removed),
            "{}: results removed that were never written",
            w.name
        );
        removed_total += seen.removed.len();
        for replica in &seen.removed {
            if let Some(code) = log.refused.get(replica) {
                *refused.entry(code.clone()).or_default() += 1;
                continue;
            }
            acknowledged += 1;
            let (owner, state) = by_id.get(replica).cloned().ok_or_else(|| {
                anyhow!(
                    "{}: the coordinator acknowledged replica {replica}, which is not in its database",
                    w.name
                )
            })?;
            ensure!(
                owner == me
                    && ["returned", "valid", "invalid", "errored"].contains(&state.as_str()),
                "{}: the coordinator acknowledged replica {replica}, which is now {state} (of worker {owner}, this one is {me})",
                w.name
            );
        }
    }
    ensure!(acknowledged > 0, "no acknowledgement seen at all");

    // Figures from the leases' times: how long until each worker was given
    // work after a coordinator restart, and after its own restart.
    let worker_ids: Vec<String> = workers
        .iter()
        .map(|w| {
            worker::state::StateDir::open(&w.state_dir)
                .ok()
                .and_then(|s| s.identity().ok().flatten())
                .map(|i| i.worker_id.to_string())
                .unwrap_or_default()
        })
        .collect();
    let first_lease_after = |worker: &str, after: i64| {
        replicas
            .iter()
            .filter(|r| r.worker == worker && r.leased_ms >= after)
            .map(|r| r.leased_ms)
            .min()
            .map(|t| (t - after) as f64)
    };
    let per_restart: Vec<Vec<Option<f64>>> = restarts
        .iter()
        .map(|r| {
            worker_ids
                .iter()
                .map(|w| first_lease_after(w, r.ready_wall_ms))
                .collect()
        })
        .collect();
    let after_coordinator: Vec<f64> = restarts
        .iter()
        .zip(&per_restart)
        .filter(|(r, _)| r.mid_job(plan))
        .flat_map(|(_, gaps)| gaps.iter().flatten().copied())
        .collect();
    let restart_details: Vec<serde_json::Value> = restarts
        .iter()
        .zip(&per_restart)
        .map(|(r, gaps)| {
            serde_json::json!({
                "at_accepted": r.at_accepted,
                "kill_to_ready_ms": ms(r.ready),
                "kept_down": r.long,
                "ready_to_next_accepted_ms": r.resumed.map(ms),
                "first_lease_per_worker_ms": gaps,
            })
        })
        .collect();
    let after_worker: Vec<f64> = worker_restarts
        .iter()
        .filter(|r| !r.coordinator_away)
        .filter_map(|r| first_lease_after(&worker_ids[r.worker], r.spawned_wall_ms))
        .collect();
    // The leases a killed worker's process held and nobody answered
    // (timed out later): they count against the restarted worker's room
    // until their deadlines.
    let refused_ids: HashSet<i64> = workers
        .iter()
        .flat_map(|w| {
            let log = w.log.lock().unwrap();
            log.refused.keys().copied().collect::<Vec<_>>()
        })
        .collect();
    let mut orphaned = Vec::new();
    let mut blocked = Vec::new();
    for (n, r) in worker_restarts.iter().enumerate() {
        let since = worker_restarts[..n]
            .iter()
            .filter(|e| e.worker == r.worker)
            .map(|e| e.spawned_wall_ms)
            .max()
            .unwrap_or(0);
        let held: Vec<&ReplicaRow> = replicas
            .iter()
            .filter(|x| {
                x.worker == worker_ids[r.worker]
                    && x.state == "timed_out"
                    && !refused_ids.contains(&x.id)
                    && x.leased_ms >= since
                    && x.leased_ms <= r.killed_wall_ms
            })
            .collect();
        orphaned.push(held.len() as f64);
        if let Some(last) = held.iter().map(|x| x.deadline_ms).max() {
            blocked.push((last - r.spawned_wall_ms).max(0) as f64);
        }
    }
    // A restarted worker may get a lease at once, if its old process held
    // fewer than it may hold; a full queue (two leases per slot) waits
    // until its old leases are timed out.
    let full = 2 * plan.slots;
    let full_after_worker: Vec<f64> = worker_restarts
        .iter()
        .filter(|r| !r.coordinator_away)
        .filter_map(|r| {
            let mut times: Vec<i64> = replicas
                .iter()
                .filter(|x| x.worker == worker_ids[r.worker] && x.leased_ms >= r.spawned_wall_ms)
                .map(|x| x.leased_ms)
                .collect();
            times.sort_unstable();
            times.get(full - 1).map(|t| (t - r.spawned_wall_ms) as f64)
        })
        .collect();
    // Why leases ran out: the result came back after the deadline (the
    // coordinator was away) and was refused; lost with a killed worker
    // (its process held them); or granted in a transaction that committed
    // less than a second before the coordinator was killed and never
    // started by the worker: the answer carrying it never reached the
    // worker, which is charged a timeout for a lease it never had.
    let lease_ms = plan.lease_secs as i64 * 1000;
    let dropped: HashSet<i64> = workers
        .iter()
        .flat_map(|w| w.log.lock().unwrap().dropped.clone())
        .collect();
    let started: HashSet<i64> = workers
        .iter()
        .flat_map(|w| w.log.lock().unwrap().started.clone())
        .collect();
    let came_back_late: HashSet<i64> = workers
        .iter()
        .flat_map(|w| {
            w.log
                .lock()
                .unwrap()
                .refused
                .keys()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut timeouts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in replicas.iter().filter(|r| r.state == "timed_out") {
        let owner = worker_ids.iter().position(|w| *w == r.worker);
        let with_worker = worker_restarts.iter().any(|k| {
            Some(k.worker) == owner
                && k.killed_wall_ms >= r.leased_ms
                && k.killed_wall_ms < r.leased_ms + lease_ms
        });
        let with_coordinator = restarts
            .iter()
            .any(|k| k.killed_wall_ms >= r.leased_ms && k.killed_wall_ms < r.leased_ms + 1000);
        let cause = if came_back_late.contains(&r.id) {
            "result_refused_as_too_late"
        } else if dropped.contains(&r.id) {
            "dropped_unstarted_by_the_worker"
        } else if with_worker {
            "worker_killed_holding_it"
        } else if with_coordinator && !started.contains(&r.id) {
            "answer_lost_with_the_coordinator"
        } else {
            "other"
        };
        *timeouts.entry(cause).or_default() += 1;
    }
    let charged: u64 = records.iter().map(|w| w.timeouts).sum();

    Ok(serde_json::json!({
        "timeouts": timeouts,
        "timeouts_charged_to_workers": charged,
        "replicas": replicas.len(),
        "replicas_per_unit": ((replicas.len() as f64 / plan.units as f64) * 1000.0).round() / 1000.0,
        "valid_per_unit": ((valid_per_unit.values().map(|n| u64::from(*n)).sum::<u64>() as f64 / plan.units as f64) * 1000.0).round() / 1000.0,
        "replica_states": states,
        "results_answered": removed_total,
        "acknowledged_checked": acknowledged,
        "refused": refused,
        "first_lease_after_coordinator_ready_ms": spread(after_coordinator),
        "coordinator_restarts": restart_details,
        "first_lease_after_worker_restart_ms": spread(after_worker),
        "full_leases_after_worker_restart_ms": spread(full_after_worker),
        "orphaned_leases_per_worker_kill": spread(orphaned),
        "orphaned_leases_count_until_ms_after_worker_restart": spread(blocked),
    }))
}

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
