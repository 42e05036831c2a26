//! The local control of a running worker: `worker pause`, `worker resume`
//! and `worker status` talk to it over a Unix socket in its state
//! directory (`STATE_DIR/control.sock`, reachable only by whoever may read
//! that directory). One line in (`pause`, `resume` or `status`), one JSON
//! line out ([`LocalStatus`]).
//!
//! A pause by the volunteer is also kept as the file `STATE_DIR/paused`, so
//! a restarted worker (or a service started at boot) stays paused; when no
//! worker is running the commands change only that file.

use crate::governor::{Governor, Paused, RunningUnit};
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// What `worker status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalStatus {
    pub paused: Paused,
    /// The most CPU each slot uses, in percent.
    pub cpu_limit: u8,
    pub slots: usize,
    pub running: Vec<RunningUnit>,
    /// Leased units waiting for a slot.
    pub queued: usize,
    /// Results computed and not yet acknowledged by the coordinator.
    pub unanswered: usize,
}

/// What the control socket reads from the running worker.
#[derive(Debug)]
pub struct Shared {
    pub governor: Arc<Governor>,
    pub cpu_limit: u8,
    pub slots: usize,
    pub queued: AtomicUsize,
    pub unanswered: Arc<AtomicUsize>,
    pub state_dir: PathBuf,
}

impl Shared {
    fn status(&self) -> LocalStatus {
        LocalStatus {
            paused: self.governor.paused(),
            cpu_limit: self.cpu_limit,
            slots: self.slots,
            running: self.governor.running(),
            queued: self.queued.load(Ordering::SeqCst),
            unanswered: self.unanswered.load(Ordering::SeqCst),
        }
    }

    /// Pauses or resumes for the volunteer, remembering it on disk.
    pub fn set_user_pause(&self, paused: bool) -> anyhow::Result<Paused> {
        remember_pause(&self.state_dir, paused)?;
        Ok(self.governor.set_paused(|p| p.by_user = paused))
    }
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

fn pause_file(state_dir: &Path) -> PathBuf {
    state_dir.join("paused")
}

/// Whether the volunteer left this worker paused.
pub fn remembered_pause(state_dir: &Path) -> bool {
    pause_file(state_dir).exists()
}

pub fn remember_pause(state_dir: &Path, paused: bool) -> anyhow::Result<()> {
    let file = pause_file(state_dir);
    if paused {
        std::fs::write(&file, b"paused by the volunteer (worker resume to go on)\n")
    } else {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    .with_context(|| format!("cannot change {}", file.display()))
}

/// The control socket, and the lock that makes this worker the only one on
/// its state directory (held as long as the value lives).
#[derive(Debug)]
pub struct Control {
    pub listener: UnixListener,
    pub lock: std::fs::File,
}

/// Locks the state directory (`STATE_DIR/lock`) and opens the control
/// socket. Fails if another worker holds the lock: two workers must never
/// share a state directory.
pub fn listen(state_dir: &Path) -> anyhow::Result<Control> {
    let lock_path = state_dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another worker is running on the state directory {}: give each worker its own --state-dir",
            state_dir.display()
        );
    }
    let path = socket_path(state_dir);
    // A socket file left by a worker that died.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot open the control socket {}", path.display()))?;
    Ok(Control { listener, lock })
}

/// Answers control commands until the listener is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &shared).await {
                tracing::debug!(error = %e, "control connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(64)).read_line(&mut line).await?;
    let reply = match line.trim() {
        "pause" => {
            let p = shared.set_user_pause(true)?;
            tracing::info!(
                ?p,
                "paused by the volunteer: running units wait where they are"
            );
            serde_json::to_string(&shared.status())?
        }
        "resume" => {
            let p = shared.set_user_pause(false)?;
            tracing::info!(?p, "resumed by the volunteer");
            serde_json::to_string(&shared.status())?
        }
        "status" => serde_json::to_string(&shared.status())?,
        other => serde_json::json!({ "error": format!("unknown command {other:?}") }).to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// What a control command found.
#[derive(Debug)]
pub enum Reply {
    /// The running worker's answer.
    Running(LocalStatus),
    /// No worker runs on this state directory.
    NotRunning { paused: bool },
}

/// Sends `command` (`pause`, `resume` or `status`) to the worker running on
/// `state_dir`. With no worker running, `pause` and `resume` change the
/// remembered state that the next start reads.
pub async fn send(state_dir: &Path, command: &str) -> anyhow::Result<Reply> {
    let path = socket_path(state_dir);
    match UnixStream::connect(&path).await {
        Ok(stream) => {
            let talk = async {
                let (read, mut write) = stream.into_split();
                write.write_all(format!("{command}\n").as_bytes()).await?;
                let mut line = String::new();
                BufReader::new(read).read_line(&mut line).await?;
                anyhow::Ok(line)
            };
            let line = tokio::time::timeout(std::time::Duration::from_secs(10), talk)
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the worker did not answer (is it still registering?)")
                })??;
            if let Ok(status) = serde_json::from_str::<LocalStatus>(&line) {
                return Ok(Reply::Running(status));
            }
            bail!("the worker answered: {}", line.trim());
        }
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Err(e).with_context(|| {
                format!(
                    "cannot reach the worker's control socket {} (run this as the worker's user, or with sudo)",
                    path.display()
                )
            })
        }
        Err(_) => {
            if !state_dir.join("worker.json").exists() && command != "status" {
                bail!(
                    "{} is not a worker's state directory (no worker.json): give the --state-dir the worker runs with",
                    state_dir.display()
                );
            }
            match command {
                "pause" => remember_pause(state_dir, true)?,
                "resume" => remember_pause(state_dir, false)?,
                _ => {}
            }
            Ok(Reply::NotRunning {
                paused: remembered_pause(state_dir),
            })
        }
    }
}

/// One line per running unit, for `worker status` and the log.
pub fn describe(unit: &RunningUnit) -> String {
    let progress = match unit.fraction() {
        Some(f) => format!("{:>3.0}%", f * 100.0),
        None => format!("{:.2e} fuel", unit.fuel_used as f64),
    };
    let eta = unit
        .eta_secs()
        .map(|s| format!(", about {} left", human_secs(s)))
        .unwrap_or_default();
    let job = unit.job_id.to_string();
    format!(
        "unit {} of job {}: {progress} after {}{eta}",
        unit.replica_id,
        &job[..8.min(job.len())],
        human_secs(unit.elapsed_secs)
    )
}

pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
