//! What the worker keeps in its state directory: its identity, and results
//! that are computed but not yet acknowledged by the coordinator.
//!
//! ```text
//! STATE_DIR/worker.json           id and token (mode 0600)
//! STATE_DIR/results/<replica>.json results waiting for upload
//! STATE_DIR/cache/                 modules and their compiled form
//! ```
//!
//! Files are written to a temporary name, synced, then renamed, so a crash
//! leaves either the old file or the new one.

use anyhow::Context as _;
use protocol::{ReplicaId, ResultUpload, WorkerId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Who this worker is to its coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub coordinator: String,
    pub worker_id: WorkerId,
    pub token: String,
    /// The volunteer account, and its key if this worker created it (give
    /// the key to your other machines: `worker run --account KEY`).
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
}

/// A result on disk, waiting for upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingResult {
    pub replica_id: ReplicaId,
    pub deadline_ms: i64,
    pub result: ResultUpload,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one. `durable` also flushes it to the disk before the rename, so it
/// survives a power loss, not just a crash of this process.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool, durable: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

impl StateDir {
    pub fn open(root: &Path) -> anyhow::Result<StateDir> {
        for dir in [root.to_path_buf(), root.join("results"), root.join("cache")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    fn identity_path(&self) -> PathBuf {
        self.root.join("worker.json")
    }

    pub fn identity(&self) -> anyhow::Result<Option<Identity>> {
        let path = self.identity_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is damaged", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save_identity(&self, id: &Identity) -> anyhow::Result<()> {
        write_atomic(
            &self.identity_path(),
            &serde_json::to_vec_pretty(id)?,
            true,
            true,
        )
    }

    fn result_path(&self, replica: ReplicaId) -> PathBuf {
        self.root.join("results").join(format!("{replica}.json"))
    }

    /// Not flushed to the disk: a result outlives a crash of the worker
    /// (the kernel holds the write), and one lost with the machine is
    /// reissued by the coordinator after its deadline; a flush per unit
    /// would cost more than a small unit.
    pub fn save_result(&self, pending: &PendingResult) -> anyhow::Result<()> {
        write_atomic(
            &self.result_path(pending.replica_id),
            &serde_json::to_vec(pending)?,
            false,
            false,
        )
    }

    pub fn remove_result(&self, replica: ReplicaId) {
        let _ = std::fs::remove_file(self.result_path(replica));
    }

    /// Every result still waiting for upload.
    pub fn pending_results(&self) -> anyhow::Result<Vec<PendingResult>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join("results"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice(&b)?))
                {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "dropping an unreadable pending result");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(out)
    }
}
