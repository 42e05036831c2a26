//! The daemon: [`run`], a worker from start to stop. It starts the parts
//! (state directory and its lock, control socket, sandbox and module cache,
//! governor, idle watch, registration), then runs the main loop that wires
//! them: leases from the coordinator into the [`LeaseQueue`], from there
//! onto free slots (the [`Runner`]), results to the [`Uploader`], with
//! [`heartbeat`]s alongside. A pause gives queued leases back. A stop
//! drains: queued leases are given back at once, running units get the
//! grace period and are then abandoned and given back, uploads get what is
//! left of it.

use crate::backoff::Backoff;
use crate::cache::ModuleCache;
use crate::client::{Client, ClientError, ErrorCode};
use crate::governor::{self, Governor};
use crate::queue::{Holdings, LeaseQueue, Next, Unanswered};
use crate::runner::{Finished, Runner};
use crate::state::{PendingResult, StateDir};
use crate::uploader::Uploader;
use crate::{Config, control, heartbeat, idle, progress, registration};
use anyhow::{Context as _, bail};
use protocol::ReplicaId;
use sandbox::Sandbox;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a stopping worker waits for leases to be given back, and for
/// abandoned units to end.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

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

/// A started worker: its parts, for the main loop.
#[derive(Debug)]
struct Worker {
    config: Config,
    /// With this worker's token.
    client: Client,
    state: StateDir,
    runner: Arc<Runner>,
    governor: Arc<Governor>,
    /// What `worker status` reads.
    shared: Arc<control::Shared>,
    /// Answers `worker pause/resume/status`.
    control_task: JoinHandle<()>,
    /// Holds the state directory's lock while the worker lives (and its
    /// uploader).
    lock: Arc<std::fs::File>,
    started: std::time::Instant,
}

impl Worker {
    /// Starts the parts, in an order that matters: the lock first, the
    /// control socket before registration (a new worker waiting for its
    /// coordinator can be paused).
    async fn start(config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<Worker> {
        let started = std::time::Instant::now();
        check(&config)?;
        let state = StateDir::open(&config.state_dir)?;
        // First, so that a second worker on this state directory stops here.
        let control = control::listen(&config.state_dir)?;
        let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        let cache = ModuleCache::new(sandbox.clone(), state.cache_dir(), config.cache_bytes)
            .context("cannot create the module cache")?;
        let (governor, paused) = pacing(&config, &state)?;
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
        let identity = registration::identity(&config, &state, &mut stop).await?;
        let client = Client::for_config(&config)?.with_token(identity.token);
        tracing::info!(
            worker = %identity.worker_id,
            slots = config.slots,
            cpu_limit = config.cpu_limit,
            only_when_idle = config.only_when_idle,
            paused = paused.by_user,
            "worker started{}",
            if paused.by_user { " paused (worker resume to go on)" } else { "" }
        );
        let runner = Runner::new(
            client.clone(),
            sandbox,
            cache,
            governor.clone(),
            state.clone(),
        );
        Ok(Worker {
            config,
            client,
            state,
            runner: Arc::new(runner),
            governor,
            shared,
            control_task,
            lock: Arc::new(control.lock),
            started,
        })
    }

    /// Runs until stopped, then drains; the parts end with it.
    async fn main_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> anyhow::Result<Stats> {
        let (results, to_upload) = mpsc::unbounded_channel();
        // Results handed to the uploader and not yet answered: their
        // leases still count against this worker at the coordinator.
        let unanswered = Arc::new(Unanswered::new(self.shared.unanswered.clone()));
        let holdings = Arc::new(Holdings::default());
        let mut l = Loop::new(self.clone(), results, unanswered.clone(), holdings.clone());
        let uploader = Uploader::new(
            self.client.clone(),
            self.state.clone(),
            unanswered,
            holdings,
            self.config.max_backoff,
            self.lock.clone(),
        );
        let uploader = tokio::spawn(uploader.run(to_upload, stop.clone()));
        let heartbeats = tokio::spawn(heartbeat::run(
            self.client.clone(),
            self.governor.clone(),
            self.config.heartbeat,
        ));
        // Whatever way this function ends (even an early error), paused
        // or running units must not keep their threads waiting.
        let _abandon_on_exit = AbandonOnDrop(self.governor.clone());
        let (shown, show_until) = watch::channel(false);
        let display = tokio::spawn(progress::show(
            self.config.display.clone(),
            self.governor.clone(),
            show_until,
        ));
        for pending in self.state.pending_results()? {
            tracing::info!(replica = %pending.replica_id, "uploading a result from before the restart");
            l.send(pending);
        }
        let fatal = l.until_stopped(&mut stop).await?;
        let mut stats = l.drain(uploader).await?;
        heartbeats.abort();
        let _ = shown.send(true);
        let _ = display.await;
        self.control_task.abort();
        let _ = std::fs::remove_file(control::socket_path(&self.config.state_dir));
        stats.compilations = self.runner.compilations();
        match fatal {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

/// Refuses a configuration the worker cannot run with.
fn check(config: &Config) -> anyhow::Result<()> {
    if config.slots == 0 {
        bail!("slots must be at least 1");
    }
    if !(1..=100).contains(&config.cpu_limit) {
        bail!(
            "the CPU limit is a percentage from 1 to 100, not {}",
            config.cpu_limit
        );
    }
    Ok(())
}

/// The governor of every run, paused as the volunteer left it (a new
/// worker with `start_paused` starts paused) and, with `only_when_idle`,
/// until the computer is idle, which the idle watch then follows.
fn pacing(config: &Config, state: &StateDir) -> anyhow::Result<(Arc<Governor>, governor::Paused)> {
    let fresh = state.identity()?.is_none();
    if config.start_paused && fresh {
        control::remember_pause(&config.state_dir, true)?;
    }
    let paused = governor::Paused {
        by_user: control::remembered_pause(&config.state_dir),
        // With --only-when-idle, idle is shown before work starts.
        by_load: config.only_when_idle,
    };
    let governor = Arc::new(Governor::new(config.cpu_limit, paused));
    if config.only_when_idle {
        idle::watch(
            governor.clone(),
            idle::Detector::new(config.idle_threshold, config.idle_after),
        )?;
    }
    Ok((governor, paused))
}

/// The main loop's state, from the first work request to the end of the
/// drain.
#[derive(Debug)]
struct Loop {
    worker: Arc<Worker>,
    stats: Stats,
    queue: LeaseQueue,
    runs: JoinSet<Finished>,
    /// To the uploader.
    results: mpsc::UnboundedSender<PendingResult>,
    unanswered: Arc<Unanswered>,
    /// Every replica held, named in each work request.
    holdings: Arc<Holdings>,
    paused: watch::Receiver<governor::Paused>,
    backoff: Backoff,
    /// When to ask for work again after the coordinator had none (or was
    /// away).
    idle_until: Option<Instant>,
}

impl Loop {
    fn new(
        worker: Arc<Worker>,
        results: mpsc::UnboundedSender<PendingResult>,
        unanswered: Arc<Unanswered>,
        holdings: Arc<Holdings>,
    ) -> Loop {
        Loop {
            stats: Stats::default(),
            queue: LeaseQueue::new(worker.config.slots),
            runs: JoinSet::new(),
            results,
            unanswered,
            holdings,
            paused: worker.governor.watch_paused(),
            backoff: Backoff::new(worker.config.max_backoff),
            idle_until: None,
            worker,
        }
    }

    /// Hands a result to the uploader; its replica stays held until the
    /// result is answered.
    fn send(&self, pending: PendingResult) {
        self.holdings.hold([pending.replica_id]);
        self.unanswered.add();
        let _ = self.results.send(pending);
    }

    /// Asks for work, runs it and collects it until the stop. Returns the
    /// error that ends the worker, if the coordinator refused it for good.
    async fn until_stopped(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<anyhow::Error>> {
        loop {
            // Collect what finished; start what waits.
            while let Some(done) = self.runs.try_join_next() {
                self.collect_and_give_back(done)?;
            }
            if *stop.borrow() {
                return Ok(None);
            }
            let is_paused = self.paused.borrow_and_update().any();
            self.start_queued(is_paused);
            let want = self
                .queue
                .wanted(self.runs.len(), self.unanswered.count(), is_paused);
            let may_ask = self.idle_until.is_none_or(|t| Instant::now() >= t);
            if want == 0 || !may_ask {
                self.wait(want, stop).await?;
                continue;
            }
            self.idle_until = None;
            if let Some(fatal) = self.ask_for_work(want).await {
                return Ok(Some(fatal));
            }
        }
    }

    /// Fills the free slots from the queue; paused, gives the queue back
    /// instead (running units wait where they are; queued ones would run
    /// out here).
    fn start_queued(&mut self, is_paused: bool) {
        if is_paused && !self.queue.is_empty() {
            for replica in self.queue.drain() {
                self.stats.released += 1;
                self.give_back_later(replica);
            }
        }
        while !is_paused && self.runs.len() < self.worker.config.slots {
            match self.queue.pop(Instant::now()) {
                None => break,
                Some(Next::RanOut(replica)) => {
                    self.holdings.let_go(replica);
                    tracing::info!(%replica, "lease ran out before the unit started; dropped");
                    self.stats.dropped += 1;
                }
                Some(Next::Start(lease)) => {
                    self.runs.spawn(self.worker.runner.clone().run(lease));
                }
            }
        }
        self.worker
            .shared
            .queued
            .store(self.queue.len(), Ordering::SeqCst);
    }

    /// Waits for a finished unit (its slot is free), an answered result,
    /// the end of the idle wait, a pause or resume, or the stop.
    async fn wait(&mut self, want: u32, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let idle = self
            .idle_until
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(done) = self.runs.join_next() => self.collect_and_give_back(done)?,
            // An answered result frees room at the coordinator: ask again
            // now, not after a retry-after given while it was unanswered.
            _ = self.unanswered.answered() => self.idle_until = None,
            _ = tokio::time::sleep_until(idle), if want > 0 => {}
            _ = self.paused.changed() => {}
            _ = stop.changed() => {}
        }
        Ok(())
    }

    /// Asks the coordinator for `want` leases and queues them. Returns the
    /// error that ends the worker if the coordinator will never give it
    /// work; backs off if it is away.
    async fn ask_for_work(&mut self, want: u32) -> Option<anyhow::Error> {
        match self
            .worker
            .client
            .work(want, Some(self.holdings.list()))
            .await
        {
            Ok(resp) => {
                self.backoff.reset();
                self.holdings.hold(resp.leases.iter().map(|l| l.replica_id));
                if resp.leases.is_empty() {
                    self.idle_until =
                        Some(Instant::now() + Duration::from_millis(resp.retry_after_ms.max(10)));
                }
                self.queue.push(resp.leases, resp.now_ms, Instant::now());
                None
            }
            Err(ClientError::Refused {
                code: ErrorCode::UpgradeRequired,
                message,
                ..
            }) => Some(anyhow::anyhow!(
                "the coordinator needs another worker version: {message}"
            )),
            Err(ClientError::Refused {
                code: ErrorCode::Unauthorized,
                message,
                ..
            }) => Some(anyhow::anyhow!(
                "the coordinator does not know this worker ({message}); remove {} to register anew",
                self.worker.config.state_dir.join("worker.json").display()
            )),
            Err(e) => {
                let d = self.backoff.step();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot get work");
                self.idle_until = Some(Instant::now() + d);
                None
            }
        }
    }

    /// Takes a finished run: a result goes to the uploader; an abandoned
    /// unit's replica comes back, to be given back.
    fn collect(&mut self, done: Result<Finished, JoinError>) -> anyhow::Result<Option<ReplicaId>> {
        match done.context("a unit task panicked")? {
            Finished::Result(pending) => {
                self.stats.units_run += 1;
                if self.stats.units_run == 1 {
                    tracing::info!(
                        after_ms = self.worker.started.elapsed().as_millis() as u64,
                        "first unit done since start"
                    );
                }
                self.send(pending);
                Ok(None)
            }
            Finished::Abandoned(replica) => {
                self.stats.abandoned += 1;
                Ok(Some(replica))
            }
        }
    }

    /// [`Loop::collect`], giving an abandoned unit back at once, so that
    /// another worker gets it.
    fn collect_and_give_back(&mut self, done: Result<Finished, JoinError>) -> anyhow::Result<()> {
        if let Some(replica) = self.collect(done)? {
            self.give_back_later(replica);
        }
        Ok(())
    }

    /// Gives one lease back in the background (see [`give_back_later`]);
    /// it is no longer held either way.
    fn give_back_later(&self, replica: ReplicaId) {
        self.holdings.let_go(replica);
        give_back_later(&self.worker.client, replica);
    }

    /// Stopping: queued units go back to the coordinator at once; running
    /// units get the grace period to finish (none if paused: they would
    /// not move), then are abandoned and given back too. Uploads drain
    /// meanwhile; what is left stays on disk for the next start.
    async fn drain(mut self, uploader: JoinHandle<u64>) -> anyhow::Result<Stats> {
        let grace_ends = Instant::now() + self.worker.config.grace;
        tracing::info!(
            running = self.runs.len(),
            queued = self.queue.len(),
            "stopping"
        );
        let queued = self.queue.drain();
        self.stats.released += give_back(&self.worker.client, queued).await;
        let abandoned = self.finish_running(grace_ends).await?;
        give_back(&self.worker.client, abandoned).await;
        // The uploader ends once it has what was sent before.
        drop(self.results);
        // It gets what is left of the grace period, and at least a few
        // seconds for one last attempt.
        let upload_until = grace_ends.max(Instant::now() + Duration::from_secs(5));
        match tokio::time::timeout_at(upload_until, uploader).await {
            Ok(uploaded) => self.stats.uploaded = uploaded.unwrap_or_default(),
            Err(_) => tracing::warn!("results not uploaded yet stay on disk for the next start"),
        }
        Ok(self.stats)
    }

    /// Lets running units finish until `grace_ends` (not at all while
    /// paused), then abandons the rest. Returns the abandoned units.
    async fn finish_running(&mut self, grace_ends: Instant) -> anyhow::Result<Vec<ReplicaId>> {
        let mut abandoned = Vec::new();
        let frozen = self.worker.governor.paused().any();
        while !frozen && !self.runs.is_empty() {
            match tokio::time::timeout_at(grace_ends, self.runs.join_next()).await {
                Ok(Some(done)) => abandoned.extend(self.collect(done)?),
                _ => break,
            }
        }
        if !self.runs.is_empty() {
            tracing::warn!(
                running = self.runs.len(),
                "{}: giving the running units back",
                if frozen {
                    "paused"
                } else {
                    "grace period over"
                }
            );
            self.worker.governor.abandon_all();
            // A paced run ends at its next slice; one still downloading or
            // compiling its module is left behind after a few seconds.
            let ends = Instant::now() + GIVE_BACK_WAIT;
            while let Ok(Some(done)) = tokio::time::timeout_at(ends, self.runs.join_next()).await {
                abandoned.extend(self.collect(done)?);
            }
            self.runs.abort_all();
        }
        Ok(abandoned)
    }
}

/// Gives one lease back in the background (one attempt; otherwise it runs
/// out by itself), so that another worker gets it at once.
fn give_back_later(client: &Client, replica: ReplicaId) {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = client.release(replica).await {
            tracing::debug!(%replica, error = %e, "cannot give the lease back; it runs out by itself");
        }
    });
}

/// Gives leases back to the coordinator, all at once and for at most
/// [`GIVE_BACK_WAIT`] (one not given back runs out by itself); returns
/// how many were taken back.
async fn give_back(client: &Client, replicas: Vec<ReplicaId>) -> u64 {
    let mut calls = JoinSet::new();
    for replica in replicas {
        let client = client.clone();
        calls.spawn(async move { (replica, client.release(replica).await) });
    }
    let mut taken = 0;
    let ends = Instant::now() + GIVE_BACK_WAIT;
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

/// Abandons every unit when dropped: no run stays blocked in its pacer
/// (paused) after the main loop is gone.
#[derive(Debug)]
struct AbandonOnDrop(Arc<Governor>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon_all();
    }
}
