//! The wasm@home coordinator.
//!
//! A scientist submits a job (a task module and an input); the coordinator
//! splits it into units, leases replicas of each unit to volunteer workers
//! that ask for work, accepts a unit's output when a quorum of replicas
//! agree, and reduces the accepted outputs into the job's output.
//!
//! Layout, one noun per module:
//! - [`api`]: the HTTP edge (axum routes, authentication, request checks).
//! - [`error`]: the one error type of the HTTP edge.
//! - [`store`]: every SQL statement; transactions guard every transition.
//! - [`validator`]: quorum decisions, pure logic.
//! - [`time_left`]: the one estimate of a job's time left, pure;
//!   [`failure`]: what a replica's failure says (exit status, limit hit).
//! - [`jobs`]: the background work of a job's life: split, reduce, expire.
//! - [`clock`]: injected time.
//! - [`cli`]: the `coordinator` command, which the binary and the tests'
//!   `coordinator-under-test` both run.
//! - [`client`], [`manifest`]: the command-line client (`submit`, `status`, `output`);
//!   [`report`]: how `status` shows jobs to people;
//!   [`invites`]: `coordinator invites create`.
//! - [`dashboard`]: the read-only web page at `/`.
//! - [`edge`]: what the edge on the open internet is configured with;
//!   `server`: the accept loop (TLS, header-read and request timeouts);
//!   [`tls`]: loading the certificate and key.
//! - [`metrics`]: `GET /metrics`, the Prometheus view.
//! - [`operator`]: `coordinator workers list/ban/unban` on the database;
//!   [`keys`]: `coordinator keys create/list/revoke/set`.
//! - [`submitter`]: submitters' names and the ownership rule;
//!   [`allowance`]: the limits per submitter and their check.
//!
//! [`Coordinator::open`] builds the whole thing from a [`Config`];
//! [`Coordinator::serve`] runs it on a listener until a shutdown future
//! resolves. Tests do exactly what `coordinator serve` does, on `127.0.0.1:0`.

pub mod allowance;
pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod credit;
mod dashboard;
pub mod edge;
pub mod error;
pub mod failure;
pub mod fairshare;
pub mod invites;
pub mod jobs;
pub mod keys;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod placement;
pub mod report;
mod server;
pub mod settings;
pub mod store;
pub mod submitter;
pub mod time_left;
pub mod tls;
pub mod trust;
pub mod validator;

use anyhow::Context as _;
use clock::Clock;
use protocol::{BlobHash, JobId, Limits};
use sandbox::{Program, Sandbox};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use store::Store;
use tokio::sync::{Notify, watch};

/// The name of the API key file in the data directory.
pub const API_KEY_FILE: &str = "api-key";

/// How the coordinator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds the SQLite database and the API key.
    pub data_dir: PathBuf,
    /// The key of the admin submitter `admin`; by default read from (or
    /// created in) `data_dir/api-key`.
    pub api_key: Option<String>,
    /// The limits of a submitter that has none of its own.
    pub allowance: allowance::Allowance,
    /// The largest blob (module or job input) accepted, in bytes.
    pub max_blob_bytes: usize,
    /// The largest `output_bytes` a job may ask for.
    pub max_output_bytes: u64,
    /// Limits of the `split` run on the coordinator.
    pub split_limits: Limits,
    /// Limits of the `reduce` runs on the coordinator.
    pub reduce_limits: Limits,
    /// Limits of the `compare` runs: small, since they run on the thread
    /// that records results.
    pub compare_limits: Limits,
    /// How often expired leases are looked for, in milliseconds.
    pub expiry_interval_ms: i64,
    /// How long a worker that got no work should wait before asking again.
    pub idle_retry_ms: u64,
    /// Whom to trust: adaptive replication, spot checks, quotas.
    pub trust: trust::Trust,
    /// Proxies, TLS, timeouts, registration limits, large bodies.
    pub edge: edge::Edge,
}

impl Config {
    /// Defaults for a coordinator keeping its state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            api_key: None,
            allowance: allowance::Allowance::default(),
            max_blob_bytes: 256 << 20,
            max_output_bytes: 16 << 20,
            split_limits: Limits {
                fuel: 1_000_000_000_000,
                memory_bytes: 1 << 30,
                output_bytes: 4 << 30,
            },
            reduce_limits: Limits {
                fuel: 1_000_000_000_000,
                memory_bytes: 1 << 30,
                output_bytes: 256 << 20,
            },
            compare_limits: Limits {
                fuel: 1_000_000_000,
                memory_bytes: 256 << 20,
                output_bytes: 1 << 10,
            },
            expiry_interval_ms: 1000,
            idle_retry_ms: 1000,
            trust: trust::Trust::default(),
            edge: edge::Edge::default(),
        }
    }
}

/// A running coordinator: cheap to clone, shared by every request.
#[derive(Clone, Debug)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    sandbox: Sandbox,
    /// Compiled modules, for split, reduce and validation.
    programs: Mutex<HashMap<BlobHash, Program>>,
    clock: Arc<dyn Clock>,
    config: Config,
    /// Bumped after every change of state that a watcher could see.
    changes: watch::Sender<u64>,
    /// Wakes the background task: a job wants splitting or reducing.
    wake: Notify,
    /// When expired leases are next looked for.
    next_expiry_ms: AtomicI64,
    /// When the next starved-unit sweep is due (coordinator clock).
    next_starvation_ms: AtomicI64,
    /// This coordinator's node id (kept in `data_dir/node-id`): the owner
    /// prefix of its claims, so a restart takes back what it held.
    node: String,
    /// The splits and reduces this process performs now (each also claimed
    /// in the database, which is what keeps coordinators apart).
    performing: Mutex<HashSet<(JobId, store::Duty)>>,
    /// Workers by the sha256 of their token, as authenticated so far.
    known_workers: Mutex<HashMap<String, store::WorkerRow>>,
    /// Registration rates and large bodies at once.
    throttle: api::Throttle,
    /// What `/metrics` shows.
    metrics: metrics::Metrics,
}

impl Coordinator {
    /// Opens the data directory (creating it, the database and the API key
    /// on first start).
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Coordinator> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        // A bad certificate or key stops the start here, naming the setting.
        if let Some(files) = &config.edge.tls {
            tls::acceptor(files)?;
        }
        let api_key = match &config.api_key {
            Some(key) => key.clone(),
            None => load_or_create_api_key(&config.data_dir)?,
        };
        let db = config.data_dir.join(operator::DATABASE_FILE);
        let store = Store::open_sqlite(&db, config.trust.clone())
            .await
            .with_context(|| format!("cannot open database {}", db.display()))?;
        let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        store.set_comparator(comparator(sandbox.clone(), config.compare_limits));
        let node = load_or_create_node_id(&config.data_dir)?;
        // What a previous run of this coordinator claimed, nobody performs.
        store.release_claims_of(&node).await?;
        // The key file's admin, so setups from before submitters keep
        // working: its key follows the file, old jobs become its.
        let admin = store
            .ensure_admin(&api::hash_secret(&api_key), clock.now_ms())
            .await?;
        if admin.created || admin.key_changed || admin.adopted > 0 {
            tracing::info!(
                created = admin.created,
                key_changed = admin.key_changed,
                jobs_adopted = admin.adopted,
                "the API key file's admin submitter `{}` is set up",
                submitter::FILE_ADMIN
            );
        }
        let metrics = metrics::Metrics::new(store.writer_metrics());
        Ok(Coordinator {
            inner: Arc::new(Inner {
                metrics,
                store,
                sandbox,
                programs: Mutex::new(HashMap::new()),
                clock,
                changes: watch::channel(0).0,
                wake: Notify::new(),
                next_expiry_ms: AtomicI64::new(0),
                next_starvation_ms: AtomicI64::new(0),
                node,
                performing: Mutex::new(HashSet::new()),
                known_workers: Mutex::new(HashMap::new()),
                throttle: api::Throttle::new(&config.edge),
                config,
            }),
        })
    }

    /// Serves the HTTP API and the dashboard on `listener`, and runs the
    /// background work, until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let background = tokio::spawn(jobs::run_background(self.clone(), stop_rx));
        let app = api::router(self.clone());
        let result = server::serve(listener, app, &self.inner.config.edge, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = background.await;
        // Duties still running here stop at their next (fenced) write;
        // another coordinator, or this one restarted, takes them at once.
        if let Err(e) = self.inner.store.release_claims_of(&self.inner.node).await {
            tracing::warn!(error = %e, "cannot release this coordinator's claims; they run out by themselves");
        }
        result
    }

    /// A receiver that changes whenever jobs, units or replicas change:
    /// wait on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    /// The compiled module `hash`, compiling (and caching) it on first use.
    async fn program(&self, hash: BlobHash) -> anyhow::Result<Program> {
        if let Some(p) = self.inner.programs.lock().expect("not poisoned").get(&hash) {
            return Ok(p.clone());
        }
        let bytes = self
            .inner
            .store
            .blob(&hash)
            .await?
            .with_context(|| format!("module {hash} is not stored"))?;
        let program = self.compile(bytes).await?;
        Ok(program)
    }

    /// Validates and compiles a module, caching it.
    async fn compile(&self, bytes: Vec<u8>) -> Result<Program, anyhow::Error> {
        let sandbox = self.inner.sandbox.clone();
        let program = tokio::task::spawn_blocking(move || sandbox.compile(&bytes)).await??;
        self.inner
            .programs
            .lock()
            .expect("not poisoned")
            .insert(program.hash(), program.clone());
        Ok(program)
    }
}

/// The `compare` mode of job modules, run in the sandbox with `limits`:
/// exit 0 is equivalent, 1 is not; anything else (no `compare` mode, a
/// failure) tells nothing. Compiled modules are kept by hash.
fn comparator(sandbox: Sandbox, limits: protocol::Limits) -> store::Comparator {
    let programs: Mutex<HashMap<BlobHash, sandbox::Program>> = Mutex::new(HashMap::new());
    Arc::new(move |hash, wasm, a, b| {
        let cached = programs.lock().expect("not poisoned").get(hash).cloned();
        let program = match cached {
            Some(p) => p,
            None => {
                let p = sandbox.compile(wasm).ok()?;
                programs
                    .lock()
                    .expect("not poisoned")
                    .insert(*hash, p.clone());
                p
            }
        };
        let input = protocol::frame::encode([a, b]);
        let report = sandbox.run(
            &program,
            sandbox::Mode::Compare,
            &input,
            &limits,
            sandbox::Stdout::Capture,
        );
        match report.result {
            Ok(0) => Some(true),
            Ok(1) => Some(false),
            other => {
                tracing::warn!(module = %hash, result = ?other, "compare gave no answer; comparing bytes");
                None
            }
        }
    })
}

/// Reads `dir/api-key`, creating it (mode 0600) with a fresh random key if
/// it does not exist.
fn load_or_create_api_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(API_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_string()),
        Ok(_) => anyhow::bail!("the API key file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key = api::random_secret();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    Ok(key)
}

/// The node id in `dir/node-id`, created (a random UUID) on first start.
fn load_or_create_node_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => anyhow::bail!("the node id file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(id)
}

/// Reads the API key a local coordinator created in `data_dir`.
pub fn read_api_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(API_KEY_FILE);
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the API key from {} (start `coordinator serve` once to create it, or pass --api-key)",
            path.display()
        )
    })?;
    Ok(key.trim().to_string())
}
