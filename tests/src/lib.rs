//! The test harness: a real coordinator on `127.0.0.1:0` with its own
//! database and a manual clock, real workers in the same process, and
//! hand-driven protocol clients for hostile workers.
//!
//! Nothing here sleeps to synchronise: [`TestCoordinator::wait_for_job`]
//! wakes on the coordinator's change notifications.

pub mod chaos;

/// The CPU's model name (`/proc/cpuinfo`), printed beside benchmark
/// figures: hosts differ.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into())
}

use coordinator::clock::{Clock as _, ManualClock};
use coordinator::{Config, Coordinator};
use protocol::{JobId, JobSpec, JobStatus, Limits, Validation, WorkerStatus};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The sample task modules, built by this crate's build script.
pub fn primes_wasm() -> Vec<u8> {
    std::fs::read(env!("PRIMES_WASM")).expect("primes.wasm is built by build.rs")
}

pub fn seti_wasm() -> Vec<u8> {
    std::fs::read(env!("SETI_WASM")).expect("seti-search.wasm is built by build.rs")
}

pub fn kernels_wasm() -> Vec<u8> {
    std::fs::read(env!("KERNELS_WASM")).expect("kernels.wasm is built by build.rs")
}

/// The sample-tasks directory (for the job manifests).
pub fn sample_tasks_dir() -> PathBuf {
    PathBuf::from(env!("SAMPLE_TASKS_DIR"))
}

/// How long any one test waits for a job before it calls the job stuck.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug)]
pub struct TestCoordinator {
    pub url: String,
    pub api_key: String,
    pub clock: ManualClock,
    pub coordinator: Coordinator,
    pub client: coordinator::client::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl TestCoordinator {
    pub async fn start() -> TestCoordinator {
        Self::start_with(|_| {}).await
    }

    /// Starts a coordinator whose config `tweak` may change.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestCoordinator {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    /// Starts a coordinator on an existing data directory (a restart).
    pub async fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCoordinator {
        Self::start_at(dir, "127.0.0.1:0", tweak).await
    }

    /// Starts a coordinator on an existing data directory and a given
    /// address: a restart that workers find where they left it.
    pub async fn start_at(
        dir: tempfile::TempDir,
        addr: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCoordinator {
        let mut config = Config::new(dir.path().join("coordinator"));
        config.idle_retry_ms = 20;
        // Tests register many workers from 127.0.0.1; the ones about the
        // registration rate set their own.
        config.edge.registration.per_minute = 1_000_000;
        config.edge.registration.burst = 1_000_000;
        tweak(&mut config);
        let clock = ManualClock::new();
        let coordinator = Coordinator::open(config.clone(), Arc::new(clock.clone()))
            .await
            .unwrap();
        let api_key = coordinator::read_api_key(&config.data_dir).unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // With built-in TLS, the name the test certificate is for.
        let (url, roots) = match &config.edge.tls {
            None => (format!("http://127.0.0.1:{port}"), Vec::new()),
            Some(files) => (
                format!("https://localhost:{port}"),
                worker::client::load_ca(&files.cert).unwrap(),
            ),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(coordinator.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        TestCoordinator {
            client: coordinator::client::Client::with_roots(&url, Some(api_key.clone()), &roots),
            url,
            api_key,
            clock,
            coordinator,
            stop: Some(stop),
            handle: Some(handle),
            dir,
        }
    }

    /// Stops the coordinator and gives back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Uploads `module` and submits a job of explicit `units`.
    pub async fn submit_units(
        &self,
        module: Vec<u8>,
        units: Vec<Vec<u8>>,
        validation: Validation,
        limits: Limits,
    ) -> JobId {
        let module = self.client.upload_blob(module).await.unwrap();
        self.client
            .submit(&JobSpec {
                name: "test".into(),
                module,
                input: None,
                units: Some(units.into_iter().map(Into::into).collect()),
                limits,
                lease_secs: 60,
                validation,
                priority: 0,
            })
            .await
            .unwrap()
    }

    /// Uploads `module` and `input` and submits a job split by the module.
    pub async fn submit_input(
        &self,
        module: Vec<u8>,
        input: &[u8],
        validation: Validation,
    ) -> JobId {
        let module = self.client.upload_blob(module).await.unwrap();
        let input = self.client.upload_blob(input.to_vec()).await.unwrap();
        self.client
            .submit(&JobSpec {
                name: "test".into(),
                module,
                input: Some(input),
                units: None,
                limits: default_limits(),
                lease_secs: 60,
                validation,
                priority: 0,
            })
            .await
            .unwrap()
    }

    /// Submits a job split by the module and waits until its units are
    /// ready to lease.
    pub async fn running_job(
        &self,
        module: Vec<u8>,
        input: &[u8],
        validation: Validation,
    ) -> JobId {
        let job = self.submit_input(module, input, validation).await;
        let s = self
            .wait_until(job, |s| s.state != protocol::JobState::Splitting)
            .await;
        assert_eq!(s.state, protocol::JobState::Running, "{s:?}");
        job
    }

    /// Waits until the job ends (done, failed or cancelled), waking on the
    /// coordinator's change notifications, never on a timer.
    pub async fn wait_for_job(&self, job: JobId) -> JobStatus {
        self.wait_until(job, |s| s.state.is_final()).await
    }

    /// Waits until `done(status)` holds for the job.
    pub async fn wait_until(&self, job: JobId, done: impl Fn(&JobStatus) -> bool) -> JobStatus {
        let mut changes = self.coordinator.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let s = self.status(job).await;
                if done(&s) {
                    return s;
                }
                changes.changed().await.unwrap();
            }
        };
        tokio::time::timeout(JOB_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("job {job} did not get there within {JOB_TIMEOUT:?}"))
    }

    /// Asserts that the dashboard's kept aggregates of `job` match a
    /// recount from its replicas and units.
    pub async fn assert_aggregates_consistent(&self, job: JobId) {
        let wrong = self
            .coordinator
            .store()
            .verify_job_aggregates(&job.to_string())
            .await
            .unwrap();
        assert!(wrong.is_empty(), "{wrong:?}");
    }

    /// The job's status, read straight from the store.
    pub async fn status(&self, job: JobId) -> JobStatus {
        self.coordinator
            .store()
            .job_status(job)
            .await
            .unwrap()
            .expect("a submitted job")
    }

    pub async fn output(&self, job: JobId) -> Vec<u8> {
        self.client.output(job).await.unwrap()
    }

    pub async fn workers(&self) -> Vec<WorkerStatus> {
        self.coordinator
            .store()
            .workers(1000, self.clock.now_ms())
            .await
            .unwrap()
    }

    pub async fn worker(&self, id: protocol::WorkerId) -> WorkerStatus {
        self.workers()
            .await
            .into_iter()
            .find(|w| w.id == id)
            .expect("a registered worker")
    }

    /// A submitter named `name` with a key of its own, made as `coordinator
    /// keys create` makes one (share 1, the coordinator's limits), and a
    /// client that uses the key.
    pub async fn submitter(&self, name: &str) -> TestSubmitter {
        let new = coordinator::keys::NewKey {
            name: name.parse().unwrap(),
            share: 1,
            admin: false,
            max_units: None,
            max_stored_mb: None,
        };
        let created =
            coordinator::keys::create(self.coordinator.store(), &new, self.clock.now_ms())
                .await
                .unwrap();
        TestSubmitter {
            name: name.to_string(),
            client: coordinator::client::Client::new(&self.url, Some(created.key.clone())),
            key: created.key,
        }
    }
}

/// A submitter of a [`TestCoordinator`], with its own key.
#[derive(Debug)]
pub struct TestSubmitter {
    pub name: String,
    pub key: String,
    pub client: coordinator::client::Client,
}

/// A self-signed certificate for `localhost` and its key, written as PEM
/// files into `dir`: what built-in TLS is configured with in tests, and
/// what a worker trusts with `--ca-cert`.
pub fn self_signed_tls(dir: &Path) -> coordinator::edge::TlsFiles {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let files = coordinator::edge::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, c.cert.pem()).unwrap();
    std::fs::write(&files.key, c.signing_key.serialize_pem()).unwrap();
    files
}

pub fn default_limits() -> Limits {
    Limits {
        fuel: 5_000_000_000,
        memory_bytes: 64 << 20,
        output_bytes: 64 << 10,
    }
}

pub fn quorum(quorum: u32, max_replicas: u32) -> Validation {
    Validation::quorum(quorum, max_replicas)
}

/// A real worker running in this process.
#[derive(Debug)]
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<worker::Stats>>,
    pub state_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestWorker {
    pub fn start(url: &str, slots: usize) -> TestWorker {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().to_path_buf();
        let mut w = Self::start_in(url, &state_dir, slots);
        w._dir = Some(dir);
        w
    }

    /// Starts a worker on an existing state directory (a restart).
    pub fn start_in(url: &str, state_dir: &Path, slots: usize) -> TestWorker {
        Self::start_with(url, state_dir, slots, |_| {})
    }

    /// Starts a worker whose config `tweak` may change.
    pub fn start_with(
        url: &str,
        state_dir: &Path,
        slots: usize,
        tweak: impl FnOnce(&mut worker::Config),
    ) -> TestWorker {
        let mut config = worker::Config::new(url, state_dir);
        config.slots = slots;
        config.max_backoff = Duration::from_millis(200);
        config.grace = Duration::from_secs(30);
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker::run(config, async {
            let _ = stopped.await;
        }));
        TestWorker {
            stop: Some(stop),
            handle,
            state_dir: state_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// Asks the worker to stop, as SIGTERM does, and waits for it.
    pub async fn stop(mut self) -> worker::Stats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.unwrap().unwrap()
    }

    /// Ends the worker at once, as a crash would.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// A hand-driven worker for hostile behaviour: it speaks the protocol but
/// returns whatever the test says.
#[derive(Debug)]
pub struct ManualWorker {
    pub id: protocol::WorkerId,
    pub client: worker::client::Client,
    pub account_id: String,
    /// Set when registering created the account.
    pub account_key: Option<String>,
    token: String,
}

impl ManualWorker {
    /// Registers a worker with eight slots (room for sixteen leases) in a
    /// new account.
    pub async fn register(url: &str, name: &str) -> ManualWorker {
        Self::register_in(url, name, None).await
    }

    /// Registers a worker in the account with `account_key`, or a new one.
    pub async fn register_in(url: &str, name: &str, account_key: Option<&str>) -> ManualWorker {
        let client = worker::client::Client::new(url);
        let r = client.register_in(name, 8, account_key).await.unwrap();
        ManualWorker {
            id: r.worker_id,
            client: client.with_token(r.token.clone()),
            account_id: r.account_id,
            account_key: r.account_key,
            token: r.token,
        }
    }

    /// The worker's token, for requests a test writes by hand.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The same worker, talking to a coordinator at another address (as
    /// after a coordinator restart).
    pub fn reconnect(&self, url: &str) -> ManualWorker {
        ManualWorker {
            id: self.id,
            client: worker::client::Client::new(url).with_token(self.token.clone()),
            account_id: self.account_id.clone(),
            account_key: self.account_key.clone(),
            token: self.token.clone(),
        }
    }

    /// Runs a lease honestly in a real sandbox and uploads the result;
    /// returns the fuel it used.
    pub async fn compute_and_upload(&self, lease: &protocol::Lease) -> u64 {
        let module = self.client.blob(lease.module).await.unwrap();
        let upload = honest_result(&module, lease);
        self.client.upload(lease.replica_id, &upload).await.unwrap();
        upload.fuel_used
    }

    pub async fn take(&self, n: u32) -> Vec<protocol::Lease> {
        self.client.work(n, None).await.unwrap().leases
    }

    /// [`ManualWorker::take`] through a proxy at 127.0.0.1 that forwards
    /// for `client` (`X-Forwarded-For`): for a coordinator that trusts it.
    pub async fn take_via_proxy(&self, url: &str, n: u32, client: &str) -> Vec<protocol::Lease> {
        let request = protocol::WorkRequest {
            max_units: n,
            platform: worker::client::platform(),
            held: None,
        };
        let response: protocol::WorkResponse = reqwest::Client::new()
            .post(format!("{url}/api/v1/work"))
            .bearer_auth(&self.token)
            .header("x-forwarded-for", client)
            .json(&request)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        response.leases
    }
}

/// A config tweak for tests about something other than earned leases: a
/// new worker may hold at once what its declared slots allow (two per
/// slot), instead of the handful a fresh registration gets.
pub fn declared_leases(config: &mut Config) {
    config.trust.initial_leases = 4096;
}

/// What a clever cheat returns for a `primes` lease: the fuel of an honest
/// run (so fuel gives it away not), and a prime count off by 1,000.
pub fn primes_cheat_result(module: &[u8], lease: &protocol::Lease) -> protocol::ResultUpload {
    let mut result = honest_result(module, lease);
    if let protocol::Outcome::Success { output } = &mut result.outcome {
        let count = u64::from_le_bytes(output[..8].try_into().unwrap());
        *output = (count + 1000).to_le_bytes().to_vec().into();
    }
    result
}

/// What a worker's sandbox makes of `lease`: its output, or its failure.
pub fn sandbox_result(module: &[u8], lease: &protocol::Lease) -> protocol::ResultUpload {
    let sandbox = sandbox::Sandbox::new().unwrap();
    let program = sandbox.compile(module).unwrap();
    let report = sandbox.run(
        &program,
        sandbox::Mode::Run,
        &lease.input,
        &lease.limits,
        sandbox::Stdout::Capture,
    );
    let fuel_used = report.fuel_used;
    let outcome = match report.into_output() {
        Ok(output) => protocol::Outcome::Success {
            output: output.into(),
        },
        Err(f) => protocol::Outcome::Failure {
            kind: f.kind,
            message: f.message,
        },
    };
    protocol::ResultUpload { outcome, fuel_used }
}

/// What an honest worker returns for `lease`: `module` run in a real
/// sandbox, which must succeed.
pub fn honest_result(module: &[u8], lease: &protocol::Lease) -> protocol::ResultUpload {
    let result = sandbox_result(module, lease);
    assert!(
        matches!(result.outcome, protocol::Outcome::Success { .. }),
        "the unit runs: {:?}",
        result.outcome
    );
    result
}

/// A worker process and the lines of its log.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub state_dir: PathBuf,
    binary: PathBuf,
}

impl WorkerProcess {
    /// Starts `binary run` (the `worker` command) on `url` and `state_dir`
    /// with more `args`, its log at debug level for the worker.
    pub fn start(binary: &str, url: &str, state_dir: &Path, args: &[&str]) -> WorkerProcess {
        let mut child = Command::new(binary)
            .args(["run", "--coordinator", url, "--state-dir"])
            .arg(state_dir)
            .args(args)
            .env("RUST_LOG", "info,worker=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker binary runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[worker] {line}");
                let _ = tx.send(line);
            }
        });
        WorkerProcess {
            child,
            lines,
            state_dir: state_dir.to_path_buf(),
            binary: PathBuf::from(binary),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `text`; returns it.
    pub async fn wait_for(&mut self, text: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(text) {
                    return line;
                }
            }
            panic!("the worker exited before logging {text:?}");
        };
        tokio::time::timeout(JOB_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("the worker did not log {text:?} in time"))
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_within(JOB_TIMEOUT).await
    }

    /// Sends `TERM` or `KILL`.
    pub fn signal(&self, signal: &str) {
        let signal = match signal {
            "TERM" => rustix::process::Signal::TERM,
            "KILL" => rustix::process::Signal::KILL,
            other => panic!("no signal {other} here"),
        };
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)
            .expect("the worker process is there to signal");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the worker did not exit within {limit:?}"
            );
            // Polling the exit status of a child; not a synchronisation.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time the process has used, in clock ticks (100 a second).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        worker::idle::parse_process(&stat).unwrap()
    }

    /// Runs `worker <command> --state-dir <dir>` and returns its stdout.
    pub fn control(&self, command: &str) -> String {
        let out = Command::new(&self.binary)
            .arg(command)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "worker {command}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(&self.binary)
            .args(["status", "--json", "--state-dir"])
            .arg(&self.state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "worker status: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
