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
//! - [`governor`]: pause, CPU ceiling and progress of running units.
//! - [`control`]: `worker pause`, `resume` and `status` over a local socket.
//! - [`idle`]: `--only-when-idle`, from the machine's CPU load.
//! - [`progress`]: progress bars or log lines.
//! - [`cli`]: the `worker` command.

mod backoff;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod governor;
pub mod idle;
pub mod progress;
pub mod service;
pub mod state;

use backoff::Backoff;
pub use config::Config;

use anyhow::{Context as _, bail};
use cache::ModuleCache;
use client::{Client, ClientError, ErrorCode};
use protocol::{
    FailureKind, Lease, MAX_RESULTS_PER_REQUEST, Outcome, ReplicaResult, ResultBatch, ResultUpload,
};
use sandbox::{Mode, Sandbox, Stdout};
use state::{Identity, PendingResult, StateDir};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// The most result bytes (outputs, messages) one upload request carries;
/// a larger result goes alone.
const UPLOAD_BATCH_BYTES: usize = 4 << 20;

/// What a worker did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Units run in the sandbox.
    pub units_run: u64,
    /// Results the coordinator acknowledged.
    pub uploaded: u64,
    /// Modules compiled from wasm (not loaded from the compiled cache).
    pub compilations: u64,
    /// Leases dropped unstarted because their deadline had passed.
    pub dropped: u64,
    /// Leases given back unstarted (when stopping or pausing).
    pub released: u64,
    /// Units abandoned midway and given back: the coordinator no longer
    /// wanted them, or the grace period of a stop ran out.
    pub abandoned: u64,
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
    governor: Arc<governor::Governor>,
    /// What `worker status` reads.
    shared: Arc<control::Shared>,
    /// Answers `worker pause/resume/status`.
    control_task: tokio::task::JoinHandle<()>,
    /// Holds the state directory's lock while the worker lives.
    _lock: std::fs::File,
    started: std::time::Instant,
}

/// How a unit's run ended.
#[derive(Debug)]
enum Finished {
    /// With a result (saved to disk), to upload.
    Result(PendingResult),
    /// Abandoned midway: the coordinator no longer wanted it, or the worker
    /// is stopping and its grace period is over.
    Abandoned(protocol::ReplicaId),
}

impl Worker {
    async fn start(config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<Worker> {
        let started = std::time::Instant::now();
        if config.slots == 0 {
            bail!("slots must be at least 1");
        }
        if !(1..=100).contains(&config.cpu_limit) {
            bail!(
                "the CPU limit is a percentage from 1 to 100, not {}",
                config.cpu_limit
            );
        }
        let state = StateDir::open(&config.state_dir)?;
        // First, so that a second worker on this state directory stops here.
        let control = control::listen(&config.state_dir)?;
        let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        let cache = ModuleCache::new(sandbox.clone(), state.cache_dir(), config.cache_bytes)
            .context("cannot create the module cache")?;
        let fresh = state.identity()?.is_none();
        if config.start_paused && fresh {
            control::remember_pause(&config.state_dir, true)?;
        }
        let paused = governor::Paused {
            by_user: control::remembered_pause(&config.state_dir),
            // With --only-when-idle, idle is shown before work starts.
            by_load: config.only_when_idle,
        };
        let governor = Arc::new(governor::Governor::new(config.cpu_limit, paused));
        if config.only_when_idle {
            idle::watch(
                governor.clone(),
                idle::Detector::new(config.idle_threshold, config.idle_after),
            )?;
        }
        let shared = Arc::new(control::Shared {
            governor: governor.clone(),
            cpu_limit: config.cpu_limit,
            slots: config.slots,
            queued: AtomicUsize::new(0),
            unanswered: Arc::new(AtomicUsize::new(0)),
            state_dir: config.state_dir.clone(),
        });
        // Answered from now on, registration included.
        let control_task = tokio::spawn(control::serve(control.listener, shared.clone()));
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
                    match client
                        .register_in(&config.name, config.slots as u32, config.account.as_deref())
                        .await
                    {
                        Ok(r) => break r,
                        Err(ClientError::Unavailable(e)) => {
                            tracing::warn!(error = %e, "cannot register yet; retrying");
                            if backoff::wait(backoff.step(), &mut stop).await {
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
                    account_id: Some(registered.account_id),
                    account_key: registered.account_key,
                };
                state.save_identity(&id)?;
                tracing::info!(worker = %id.worker_id, coordinator = %config.coordinator, account = ?id.account_id, "registered");
                if let Some(key) = &id.account_key {
                    tracing::info!(
                        "a new volunteer account was created; to add your other machines to it, run them with --account {key} (also kept in {})",
                        config.state_dir.join("worker.json").display()
                    );
                }
                id
            }
        };
        let client = Client::new(&config.coordinator).with_token(identity.token);
        tracing::info!(
            worker = %identity.worker_id,
            slots = config.slots,
            cpu_limit = config.cpu_limit,
            only_when_idle = config.only_when_idle,
            paused = paused.by_user,
            "worker started{}",
            if paused.by_user { " paused (worker resume to go on)" } else { "" }
        );
        Ok(Worker {
            config,
            client,
            state,
            sandbox,
            cache,
            governor,
            shared,
            control_task,
            _lock: control.lock,
            started,
        })
    }

    async fn main_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> anyhow::Result<Stats> {
        let mut stats = Stats::default();
        // Leased units wait here for a free slot: the coordinator lets a
        // worker hold two per slot, so the next unit is at hand when one
        // finishes, without a round trip in between.
        let mut queue: VecDeque<(Lease, tokio::time::Instant)> = VecDeque::new();
        let mut runs: JoinSet<Finished> = JoinSet::new();
        let (results, to_upload) = mpsc::unbounded_channel();
        // Results handed to the uploader and not yet answered: their
        // leases still count against this worker at the coordinator.
        let unanswered = Arc::new(Unanswered {
            count: self.shared.unanswered.clone(),
            answered: tokio::sync::Notify::new(),
        });
        let uploader = tokio::spawn(self.clone().uploader(
            to_upload,
            unanswered.clone(),
            stop.clone(),
        ));
        let heartbeats = tokio::spawn(self.clone().heartbeats());
        // Whatever way this function ends (even an early error), paused
        // or running units must not keep their threads waiting.
        let _abandon_on_exit = AbandonOnDrop(self.governor.clone());
        let (shown, show_until) = watch::channel(false);
        let display = tokio::spawn(progress::show(
            self.config.display.clone(),
            self.governor.clone(),
            show_until,
        ));
        let mut paused = self.governor.watch_paused();
        let send = |results: &mpsc::UnboundedSender<PendingResult>, pending| {
            unanswered.count.fetch_add(1, Ordering::SeqCst);
            let _ = results.send(pending);
        };
        for pending in self.state.pending_results()? {
            tracing::info!(replica = %pending.replica_id, "uploading a result from before the restart");
            send(&results, pending);
        }
        // Abandoned units go back to the coordinator, so another worker
        // gets them at once (one attempt; otherwise they run out).
        let give_back = |replica: protocol::ReplicaId| {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.client.release(replica).await {
                    tracing::debug!(%replica, error = %e, "cannot give the lease back; it runs out by itself");
                }
            });
        };
        // Takes a finished run: a result goes to the uploader; an
        // abandoned unit's replica comes back to be given back.
        let collect = |done: Result<Finished, tokio::task::JoinError>,
                       stats: &mut Stats|
         -> anyhow::Result<Option<protocol::ReplicaId>> {
            match done.context("a unit task panicked")? {
                Finished::Result(pending) => {
                    stats.units_run += 1;
                    if stats.units_run == 1 {
                        tracing::info!(
                            after_ms = self.started.elapsed().as_millis() as u64,
                            "first unit done since start"
                        );
                    }
                    send(&results, pending);
                    Ok(None)
                }
                Finished::Abandoned(replica) => {
                    stats.abandoned += 1;
                    Ok(Some(replica))
                }
            }
        };
        let mut backoff = Backoff::new(self.config.max_backoff);
        // When to ask for work again after the coordinator had none.
        let mut idle_until: Option<tokio::time::Instant> = None;
        let held = 2 * self.config.slots;
        let fatal = loop {
            // Collect what finished; start what waits.
            while let Some(done) = runs.try_join_next() {
                if let Some(replica) = collect(done, &mut stats)? {
                    give_back(replica);
                }
            }
            if *stop.borrow() {
                break None;
            }
            let is_paused = paused.borrow_and_update().any();
            if is_paused && !queue.is_empty() {
                // Paused: running units wait where they are; queued ones
                // go back to the coordinator (they would run out here).
                for (lease, _) in queue.drain(..) {
                    stats.released += 1;
                    give_back(lease.replica_id);
                }
            }
            while !is_paused && runs.len() < self.config.slots {
                let Some((lease, deadline)) = queue.pop_front() else {
                    break;
                };
                if tokio::time::Instant::now() >= deadline {
                    // The coordinator has given it to someone else by now.
                    tracing::info!(replica = %lease.replica_id, "lease ran out before the unit started; dropped");
                    stats.dropped += 1;
                    continue;
                }
                runs.spawn(self.clone().compute(lease));
            }
            self.shared.queued.store(queue.len(), Ordering::SeqCst);
            let want = if is_paused {
                0
            } else {
                held.saturating_sub(
                    runs.len() + queue.len() + unanswered.count.load(Ordering::SeqCst),
                ) as u32
            };
            let may_ask = idle_until.is_none_or(|t| tokio::time::Instant::now() >= t);
            if want == 0 || !may_ask {
                // Wait for a finished unit (its slot is free), the end of
                // the idle wait, a pause or resume, or the stop.
                let idle = idle_until
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    Some(done) = runs.join_next() => {
                        if let Some(replica) = collect(done, &mut stats)? {
                            give_back(replica);
                        }
                    }
                    _ = unanswered.answered.notified() => {}
                    _ = tokio::time::sleep_until(idle), if want > 0 => {}
                    _ = paused.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            idle_until = None;
            match self.client.work(want).await {
                Ok(resp) => {
                    backoff.reset();
                    if resp.leases.is_empty() {
                        idle_until = Some(
                            tokio::time::Instant::now()
                                + Duration::from_millis(resp.retry_after_ms.max(10)),
                        );
                    }
                    let received = tokio::time::Instant::now();
                    queue.extend(resp.leases.into_iter().map(|lease| {
                        let left = (lease.deadline_ms - resp.now_ms).max(0) as u64;
                        (lease, received + Duration::from_millis(left))
                    }));
                }
                Err(ClientError::Refused {
                    code: ErrorCode::UpgradeRequired,
                    message,
                    ..
                }) => {
                    break Some(anyhow::anyhow!(
                        "the coordinator needs another worker version: {message}"
                    ));
                }
                Err(ClientError::Refused {
                    code: ErrorCode::Unauthorized,
                    message,
                    ..
                }) => {
                    break Some(anyhow::anyhow!(
                        "the coordinator does not know this worker ({message}); remove {} to register anew",
                        self.config.state_dir.join("worker.json").display()
                    ));
                }
                Err(e) => {
                    let d = backoff.step();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot get work");
                    idle_until = Some(tokio::time::Instant::now() + d);
                }
            }
        };

        // Stopping: queued units go back to the coordinator at once;
        // running units get the grace period to finish (none if paused:
        // they would not move), then are abandoned and given back too.
        // Uploads drain meanwhile; what is left stays on disk for the next
        // start.
        let grace_ends = tokio::time::Instant::now() + self.config.grace;
        tracing::info!(running = runs.len(), queued = queue.len(), "stopping");
        let queued: Vec<_> = queue.drain(..).map(|(lease, _)| lease.replica_id).collect();
        stats.released += self.give_back(queued).await;
        let mut abandoned = Vec::new();
        let frozen = self.governor.paused().any();
        while !frozen && !runs.is_empty() {
            match tokio::time::timeout_at(grace_ends, runs.join_next()).await {
                Ok(Some(done)) => abandoned.extend(collect(done, &mut stats)?),
                _ => break,
            }
        }
        if !runs.is_empty() {
            tracing::warn!(
                running = runs.len(),
                "{}: giving the running units back",
                if frozen {
                    "paused"
                } else {
                    "grace period over"
                }
            );
            self.governor.abandon_all();
            // A paced run ends at its next slice; one still downloading or
            // compiling its module is left behind after a few seconds.
            let ends = tokio::time::Instant::now() + GIVE_BACK_WAIT;
            while let Ok(Some(done)) = tokio::time::timeout_at(ends, runs.join_next()).await {
                abandoned.extend(collect(done, &mut stats)?);
            }
            runs.abort_all();
        }
        self.give_back(abandoned).await;
        drop(results);
        // The uploader gets what is left of the grace period, and at least
        // a few seconds for one last attempt.
        let upload_until = grace_ends.max(tokio::time::Instant::now() + Duration::from_secs(5));
        match tokio::time::timeout_at(upload_until, uploader).await {
            Ok(uploaded) => stats.uploaded = uploaded.unwrap_or_default(),
            Err(_) => tracing::warn!("results not uploaded yet stay on disk for the next start"),
        }
        heartbeats.abort();
        let _ = shown.send(true);
        let _ = display.await;
        self.control_task.abort();
        let _ = std::fs::remove_file(control::socket_path(&self.config.state_dir));
        stats.compilations = self.cache.compilations();
        match fatal {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Gives leases back to the coordinator, all at once and for at most
    /// [`GIVE_BACK_WAIT`] (one not given back runs out by itself); returns
    /// how many were taken back.
    async fn give_back(self: &Arc<Self>, replicas: Vec<protocol::ReplicaId>) -> u64 {
        let mut calls = JoinSet::new();
        for replica in replicas {
            let me = self.clone();
            calls.spawn(async move { (replica, me.client.release(replica).await) });
        }
        let mut taken = 0;
        let ends = tokio::time::Instant::now() + GIVE_BACK_WAIT;
        while let Ok(Some(done)) = tokio::time::timeout_at(ends, calls.join_next()).await {
            match done {
                Ok((_, Ok(()))) => taken += 1,
                Ok((replica, Err(e))) => {
                    tracing::warn!(%replica, error = %e, "cannot give the lease back; it runs out by itself")
                }
                Err(_) => {}
            }
        }
        taken
    }

    /// Sends a heartbeat every [`Config::heartbeat`] while units run (and at
    /// once on a pause or resume): their progress extends their leases, and
    /// the answer names units the coordinator no longer wants, which are
    /// abandoned.
    async fn heartbeats(self: Arc<Self>) {
        let mut paused = self.governor.watch_paused();
        let mut told_paused = false;
        loop {
            // Beats go on while a stopping worker drains (its units' leases
            // still need them); the main loop ends this task last.
            tokio::select! {
                _ = tokio::time::sleep(self.config.heartbeat) => {}
                _ = paused.changed() => {}
            }
            let running = self.governor.running();
            let is_paused = self.governor.paused().any();
            if running.is_empty() && is_paused == told_paused {
                continue;
            }
            let beat = protocol::Heartbeat {
                running: running
                    .iter()
                    .map(|u| protocol::UnitProgress {
                        replica_id: u.replica_id,
                        fuel_used: u.fuel_used,
                    })
                    .collect(),
                paused: is_paused,
            };
            match self.client.heartbeat(&beat).await {
                Ok(answer) => {
                    told_paused = is_paused;
                    for lease in answer.leases {
                        self.governor
                            .set_deadline(lease.replica_id, lease.deadline_ms);
                    }
                    for replica in answer.gone {
                        tracing::info!(%replica, "the coordinator no longer wants this unit; abandoning it");
                        self.governor.abandon(replica);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
            }
        }
    }

    /// Runs one leased unit and saves its result to disk.
    async fn compute(self: Arc<Self>, lease: Lease) -> Finished {
        let replica = lease.replica_id;
        let deadline_ms = lease.deadline_ms;
        let program = match self.cache.get(&self.client, lease.module).await {
            Ok(program) => program,
            Err(e) => {
                return Finished::Result(
                    self.finish(replica, deadline_ms, worker_error(e.to_string()))
                        .await,
                );
            }
        };
        tracing::debug!(%replica, job = %lease.job_id, "unit started");
        let sandbox = self.sandbox.clone();
        let governor = self.governor.clone();
        let report = tokio::task::spawn_blocking(move || {
            let mut pace = governor.start(&lease);
            // Abandoned means stopped midway: a unit that finished just as
            // it was abandoned keeps its result.
            let mut stopped = false;
            let report = sandbox.run_paced(
                &program,
                Mode::Run,
                &lease.input,
                &lease.limits,
                Stdout::Capture,
                &mut |fuel| {
                    let pace = pace(fuel);
                    stopped |= pace == sandbox::Pace::Stop;
                    pace
                },
            );
            governor.finish(lease.replica_id);
            (report, stopped)
        })
        .await;
        let result = match report {
            Ok((_, true)) => return Finished::Abandoned(replica),
            Ok((report, false)) => {
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
        };
        Finished::Result(self.finish(replica, deadline_ms, result).await)
    }

    /// Logs a unit's result and writes it to the state directory (off the
    /// async threads), so it survives until the coordinator acknowledges it.
    async fn finish(
        self: Arc<Self>,
        replica: protocol::ReplicaId,
        deadline_ms: i64,
        (outcome, fuel_used): (Outcome, u64),
    ) -> PendingResult {
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
            deadline_ms,
            result: ResultUpload { outcome, fuel_used },
        };
        let me = self.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let saved = me.state.save_result(&pending);
            (pending, saved)
        })
        .await;
        match saved {
            Ok((pending, saved)) => {
                if let Err(e) = saved {
                    tracing::warn!(%replica, error = %e, "cannot save the result to disk; uploading it anyway");
                }
                pending
            }
            Err(e) => panic!("saving a result panicked: {e}"),
        }
    }

    /// Uploads results as they come, every result waiting in one request
    /// (up to [`MAX_RESULTS_PER_REQUEST`] and [`UPLOAD_BATCH_BYTES`]), until
    /// the coordinator takes or refuses each. When the coordinator is away,
    /// retries with backoff; when stopping, tries once more and leaves the
    /// rest on disk. Returns how many results were acknowledged.
    async fn uploader(
        self: Arc<Self>,
        mut incoming: mpsc::UnboundedReceiver<PendingResult>,
        unanswered: Arc<Unanswered>,
        mut stop: watch::Receiver<bool>,
    ) -> u64 {
        let mut uploaded = 0;
        let mut waiting: VecDeque<PendingResult> = VecDeque::new();
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            if waiting.is_empty() {
                match incoming.recv().await {
                    Some(p) => waiting.push_back(p),
                    None => return uploaded,
                }
            }
            while let Ok(p) = incoming.try_recv() {
                waiting.push_back(p);
            }
            // The next request: as many results as fit.
            let mut take = 0;
            let mut bytes = 0;
            for p in &waiting {
                let size = match &p.result.outcome {
                    Outcome::Success { output } => output.len(),
                    Outcome::Failure { message, .. } => message.len(),
                };
                if take > 0
                    && (take == MAX_RESULTS_PER_REQUEST || bytes + size > UPLOAD_BATCH_BYTES)
                {
                    break;
                }
                take += 1;
                bytes += size;
            }
            let sent = if take == 1 {
                let p = &waiting[0];
                self.client
                    .upload(p.replica_id, &p.result)
                    .await
                    .map(|r| vec![Ok(r.status)])
            } else {
                let batch = ResultBatch {
                    results: waiting
                        .iter()
                        .take(take)
                        .map(|p| ReplicaResult {
                            replica_id: p.replica_id,
                            result: p.result.clone(),
                        })
                        .collect(),
                };
                self.client.upload_many(&batch).await.map(|r| {
                    r.results
                        .into_iter()
                        .map(|a| a.status.ok_or(a.error))
                        .collect()
                })
            };
            match sent {
                Ok(answers) => {
                    backoff.reset();
                    for (p, answer) in waiting.drain(..take).zip(answers) {
                        match answer {
                            Ok(_) => uploaded += 1,
                            Err(error) => {
                                let (code, message) = error
                                    .map_or(("unknown".into(), String::new()), |e| {
                                        (e.error, e.message)
                                    });
                                tracing::warn!(replica = %p.replica_id, %code, %message, "result refused; dropping it");
                            }
                        }
                        self.state.remove_result(p.replica_id);
                        unanswered.answer();
                    }
                }
                Err(ClientError::Refused {
                    code,
                    status,
                    message,
                }) if take == 1 => {
                    let p = waiting.pop_front().expect("one was sent");
                    tracing::warn!(replica = %p.replica_id, %code, status, %message, "result refused; dropping it");
                    self.state.remove_result(p.replica_id);
                    unanswered.answer();
                }
                Err(e) => {
                    // The coordinator is away, or refused the request as a
                    // whole: keep the results (on disk too) and retry.
                    let d = backoff.step();
                    tracing::warn!(results = take, error = %e, retry_in_ms = d.as_millis() as u64, "cannot upload yet");
                    if backoff::wait(d, &mut stop).await {
                        // Stopping with the coordinator away: what waits
                        // stays on disk for the next start.
                        return uploaded;
                    }
                }
            }
        }
    }
}

/// How long a stopping worker waits for leases to be given back, and for
/// abandoned units to end.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

/// Abandons every unit when dropped: no run stays blocked in its pacer
/// (paused) after the main loop is gone.
#[derive(Debug)]
struct AbandonOnDrop(Arc<governor::Governor>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon_all();
    }
}

/// Results the uploader holds that the coordinator has not answered yet,
/// and a wake-up for the main loop when one is answered (its lease no
/// longer counts against this worker).
#[derive(Debug)]
struct Unanswered {
    count: Arc<AtomicUsize>,
    answered: tokio::sync::Notify,
}

impl Unanswered {
    fn answer(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.answered.notify_one();
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
