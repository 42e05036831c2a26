//! The wasm@home worker: what volunteers run.
//!
//! It registers with a coordinator once (keeping its token in the state
//! directory), then loops: ask for as many units as it has free slots, run
//! each in the [`sandbox`], write the result to disk, upload it. Results on
//! disk survive a crash or a lost network and are uploaded on the next
//! start; when the coordinator is away the worker backs off with jitter.
//!
//! Modules:
//! - [`client`]: the HTTP protocol.
//! - [`cache`]: modules downloaded once (hash-checked) and compiled once.
//! - [`state`]: identity and pending results on disk.

pub mod cache;
pub mod client;
pub mod state;

use anyhow::{Context as _, bail};
use cache::ModuleCache;
use client::{Client, ClientError};
use protocol::{FailureKind, Lease, Outcome, ResultUpload};
use sandbox::{Mode, Sandbox, Stdout};
use state::{Identity, PendingResult, StateDir};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The coordinator's base URL, e.g. `http://127.0.0.1:8080`.
    pub coordinator: String,
    /// Where the identity, pending results and caches live.
    pub state_dir: PathBuf,
    /// Units run at once.
    pub slots: usize,
    /// The name shown on the dashboard.
    pub name: String,
    /// The longest wait between attempts to reach an absent coordinator.
    pub max_backoff: Duration,
    /// How long a stopping worker lets running units finish and uploads
    /// drain before it exits (what is left is on disk for the next start).
    pub grace: Duration,
}

impl Config {
    pub fn new(coordinator: &str, state_dir: impl Into<PathBuf>) -> Config {
        Config {
            coordinator: coordinator.trim_end_matches('/').to_string(),
            state_dir: state_dir.into(),
            slots: std::thread::available_parallelism().map_or(1, |n| n.get()),
            name: host_name(),
            max_backoff: Duration::from_secs(30),
            grace: Duration::from_secs(30),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".to_string())
}

/// What a worker did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Units run in the sandbox.
    pub units_run: u64,
    /// Results the coordinator acknowledged.
    pub uploaded: u64,
    /// Modules compiled from wasm (not loaded from the compiled cache).
    pub compilations: u64,
}

/// Exponential backoff with jitter: 0.5 to 1 times a doubling delay.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Backoff {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos());
        let fraction = 0.5 + (nanos % 1000) as f64 / 2000.0;
        d.mul_f64(fraction)
    }
}

/// Sleeps for `d`, or less if `stop` turns true. Returns whether stopping.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Runs a worker until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Stats> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let w = Arc::new(Worker::start(config, stop.clone()).await?);
    w.main_loop(stop).await
}

#[derive(Debug)]
struct Worker {
    config: Config,
    client: Client,
    state: StateDir,
    sandbox: Sandbox,
    cache: ModuleCache,
}

impl Worker {
    async fn start(config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<Worker> {
        if config.slots == 0 {
            bail!("slots must be at least 1");
        }
        let state = StateDir::open(&config.state_dir)?;
        let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        let cache = ModuleCache::new(sandbox.clone(), state.cache_dir())
            .context("cannot create the module cache")?;
        let identity = match state.identity()? {
            Some(id) if id.coordinator == config.coordinator => id,
            Some(id) => bail!(
                "the state directory {} belongs to a worker of {}, not {}: use another --state-dir",
                config.state_dir.display(),
                id.coordinator,
                config.coordinator
            ),
            None => {
                let client = Client::new(&config.coordinator);
                let mut backoff = Backoff::new(config.max_backoff);
                let registered = loop {
                    match client.register(&config.name, config.slots as u32).await {
                        Ok(r) => break r,
                        Err(ClientError::Unavailable(e)) => {
                            tracing::warn!(error = %e, "cannot register yet; retrying");
                            if pause(backoff.step(), &mut stop).await {
                                bail!("stopped before registering");
                            }
                        }
                        Err(e) => return Err(e).context("registration refused"),
                    }
                };
                let id = Identity {
                    coordinator: config.coordinator.clone(),
                    worker_id: registered.worker_id,
                    token: registered.token,
                };
                state.save_identity(&id)?;
                tracing::info!(worker = %id.worker_id, coordinator = %config.coordinator, "registered");
                id
            }
        };
        let client = Client::new(&config.coordinator).with_token(identity.token);
        tracing::info!(worker = %identity.worker_id, slots = config.slots, "worker started");
        Ok(Worker {
            config,
            client,
            state,
            sandbox,
            cache,
        })
    }

    async fn main_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> anyhow::Result<Stats> {
        let mut stats = Stats::default();
        let mut runs: JoinSet<PendingResult> = JoinSet::new();
        let mut uploads: JoinSet<bool> = JoinSet::new();
        for pending in self.state.pending_results()? {
            tracing::info!(replica = %pending.replica_id, "uploading a result from before the restart");
            uploads.spawn(self.clone().deliver(pending, stop.clone()));
        }
        let mut backoff = Backoff::new(self.config.max_backoff);
        let fatal = loop {
            // Collect what finished.
            while let Some(done) = runs.try_join_next() {
                stats.units_run += 1;
                uploads.spawn(
                    self.clone()
                        .deliver(done.context("a unit task panicked")?, stop.clone()),
                );
            }
            while let Some(done) = uploads.try_join_next() {
                stats.uploaded += u64::from(done.unwrap_or(false));
            }
            if *stop.borrow() {
                break None;
            }
            if runs.len() >= self.config.slots {
                tokio::select! {
                    Some(done) = runs.join_next() => {
                        stats.units_run += 1;
                        uploads.spawn(self.clone().deliver(done.context("a unit task panicked")?, stop.clone()));
                    }
                    _ = stop.changed() => {}
                }
                continue;
            }
            let free = (self.config.slots - runs.len()) as u32;
            let wait = match self.client.work(free).await {
                Ok(resp) => {
                    backoff.reset();
                    let got = resp.leases.len();
                    for lease in resp.leases {
                        runs.spawn(self.clone().compute(lease));
                    }
                    if got > 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(resp.retry_after_ms.max(10))
                    }
                }
                Err(ClientError::Refused {
                    status: 426,
                    message,
                }) => {
                    break Some(anyhow::anyhow!(
                        "the coordinator needs another worker version: {message}"
                    ));
                }
                Err(ClientError::Refused {
                    status: 401,
                    message,
                }) => {
                    break Some(anyhow::anyhow!(
                        "the coordinator does not know this worker ({message}); remove {} to register anew",
                        self.config.state_dir.join("worker.json").display()
                    ));
                }
                Err(e) => {
                    let d = backoff.step();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot get work");
                    d
                }
            };
            if !wait.is_zero() {
                // Wait, but wake for a finished unit: its slot is free.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    Some(done) = runs.join_next() => {
                        stats.units_run += 1;
                        uploads.spawn(self.clone().deliver(done.context("a unit task panicked")?, stop.clone()));
                    }
                    _ = stop.changed() => {}
                }
            }
        };

        // Stopping: let running units finish and uploads drain, within the
        // grace period. Whatever is left stays on disk for the next start.
        tracing::info!(running = runs.len(), uploading = uploads.len(), "stopping");
        let drained = tokio::time::timeout(self.config.grace, async {
            while let Some(done) = runs.join_next().await {
                stats.units_run += 1;
                if let Ok(pending) = done {
                    // The stop flag is set: one attempt each.
                    uploads.spawn(self.clone().deliver(pending, stop.clone()));
                }
            }
            while let Some(done) = uploads.join_next().await {
                stats.uploaded += u64::from(done.unwrap_or(false));
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "grace period over; unfinished units will be reissued by the coordinator"
            );
        }
        stats.compilations = self.cache.compilations();
        match fatal {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Runs one leased unit and saves its result to disk.
    async fn compute(self: Arc<Self>, lease: Lease) -> PendingResult {
        let replica = lease.replica_id;
        let (outcome, fuel_used) = match self.cache.get(&self.client, lease.module).await {
            Ok(program) => {
                let sandbox = self.sandbox.clone();
                let limits = lease.limits;
                let input = lease.input;
                let report = tokio::task::spawn_blocking(move || {
                    sandbox.run(&program, Mode::Run, &input, &limits, Stdout::Capture)
                })
                .await;
                match report {
                    Ok(report) => {
                        let fuel = report.fuel_used;
                        match report.into_output() {
                            Ok(output) => (
                                Outcome::Success {
                                    output: output.into(),
                                },
                                fuel,
                            ),
                            Err(f) => (
                                Outcome::Failure {
                                    kind: f.kind,
                                    message: f.message,
                                },
                                fuel,
                            ),
                        }
                    }
                    Err(e) => worker_error(format!("the sandbox thread failed: {e}")),
                }
            }
            Err(e) => worker_error(e.to_string()),
        };
        match &outcome {
            Outcome::Success { output } => {
                tracing::debug!(%replica, bytes = output.len(), fuel = fuel_used, "unit done")
            }
            Outcome::Failure { kind, message } => {
                tracing::info!(%replica, kind = kind.as_str(), %message, "unit failed")
            }
        }
        let pending = PendingResult {
            replica_id: replica,
            deadline_ms: lease.deadline_ms,
            result: ResultUpload { outcome, fuel_used },
        };
        if let Err(e) = self.state.save_result(&pending) {
            tracing::warn!(%replica, error = %e, "cannot save the result to disk; uploading it anyway");
        }
        pending
    }

    /// Uploads a result until the coordinator takes or refuses it. Returns
    /// whether it was acknowledged. When stopping, tries once.
    async fn deliver(
        self: Arc<Self>,
        pending: PendingResult,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        let replica = pending.replica_id;
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            match self.client.upload(replica, &pending.result).await {
                Ok(_) => {
                    self.state.remove_result(replica);
                    return true;
                }
                Err(ClientError::Refused { status, message }) => {
                    tracing::warn!(%replica, status, %message, "result refused; dropping it");
                    self.state.remove_result(replica);
                    return false;
                }
                Err(ClientError::Unavailable(e)) => {
                    let d = backoff.step();
                    tracing::warn!(%replica, error = %e, retry_in_ms = d.as_millis() as u64, "cannot upload yet");
                    if pause(d, &mut stop).await {
                        return false;
                    }
                }
            }
        }
    }
}

fn worker_error(message: String) -> (Outcome, u64) {
    (
        Outcome::Failure {
            kind: FailureKind::WorkerError,
            message,
        },
        0,
    )
}
