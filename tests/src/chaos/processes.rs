//! The chaos run's processes: the coordinator (started, SIGKILLed,
//! restarted on its data directory) and the workers, with their logs.

use super::*;

/// The coordinator process.
#[derive(Debug)]
pub(super) struct CoordinatorProcess {
    pub(super) child: Child,
}

impl CoordinatorProcess {
    /// Starts `coordinator-under-test` on `data_dir` and `listen`, and
    /// waits until it listens; returns it and its address.
    pub(super) fn start(
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
            .arg("serve")
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

    pub(super) fn signal(&self, signal: rustix::process::Signal) {
        let _ =
            rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal);
    }

    pub(super) fn exit_within(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit, "the coordinator")
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn wait_exit(
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
pub(super) struct WorkerLog {
    pub(super) refused: HashMap<i64, String>,
    /// Leases the worker dropped unstarted, their deadline passed (for the
    /// figures only).
    pub(super) dropped: HashSet<i64>,
    /// Leases the worker started (`unit started`, for the figures only).
    pub(super) started: HashSet<i64>,
    pub(super) tail: VecDeque<String>,
}

impl WorkerLog {
    pub(super) fn take(&mut self, line: String) {
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
pub(super) struct Worker {
    pub(super) name: String,
    pub(super) state_dir: PathBuf,
    pub(super) log: Arc<Mutex<WorkerLog>>,
    pub(super) child: Option<Child>,
    pub(super) reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    pub(super) fn start(&mut self, bin: &Path, url: &str, slots: usize) -> anyhow::Result<()> {
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

    pub(super) fn signal(&self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), signal);
        }
    }

    /// Waits for the process to end and for its log to be read to the end.
    pub(super) fn reap(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        let status = wait_exit(&mut child, limit, &self.name)?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
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

    pub(super) fn log_tail(&self) -> String {
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
