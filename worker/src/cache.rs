//! Modules, downloaded once and compiled once.
//!
//! A module is looked up in memory, then as compiled code in
//! `cache/compiled/<engine key>/`, then as wasm in `cache/modules/`, and
//! only then downloaded (and its hash checked). Compiled code is only ever
//! produced on this machine by this engine: the directory is keyed by the
//! engine's compatibility key, and nothing compiled comes from the network.
//!
//! The files are capped in size: after each new file the least recently
//! used ones go until the cache fits; compiled code of other engine
//! versions (unloadable by this one) goes at start.

use crate::client::{Client, ClientError};
use crate::state::write_atomic;
use protocol::BlobHash;
use sandbox::{Program, Sandbox};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Mutex;

#[derive(Debug)]
pub struct ModuleCache {
    sandbox: Sandbox,
    modules_dir: PathBuf,
    compiled_dir: PathBuf,
    /// The most bytes of files the cache keeps.
    limit: u64,
    loaded: Mutex<HashMap<BlobHash, Program>>,
    /// How many modules this process compiled from wasm (not from the cache).
    compilations: AtomicU64,
}

impl ModuleCache {
    pub fn new(sandbox: Sandbox, dir: PathBuf, limit: u64) -> std::io::Result<ModuleCache> {
        let modules_dir = dir.join("modules");
        let key = sandbox.compatibility_key();
        let compiled_dir = dir.join("compiled").join(&key);
        std::fs::create_dir_all(&modules_dir)?;
        std::fs::create_dir_all(&compiled_dir)?;
        for entry in std::fs::read_dir(dir.join("compiled"))? {
            let entry = entry?;
            if entry.file_name() != key.as_str() {
                tracing::info!(dir = %entry.path().display(), "removing code compiled by another engine version");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(ModuleCache {
            sandbox,
            modules_dir,
            compiled_dir,
            limit,
            loaded: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        })
    }

    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The compiled module `hash`, from the fastest place that has it.
    pub async fn get(&self, client: &Client, hash: BlobHash) -> Result<Program, CacheError> {
        // One module at a time: two slots wanting the same new module wait
        // for one download and one compilation.
        let mut loaded = self.loaded.lock().await;
        if let Some(p) = loaded.get(&hash) {
            return Ok(p.clone());
        }
        let compiled_path = self.compiled_dir.join(format!("{hash}.cwasm"));
        if let Ok(bytes) = tokio::fs::read(&compiled_path).await {
            match self.sandbox.load_compiled(&bytes, hash) {
                Ok(p) => {
                    tracing::debug!(module = %hash.short(), "loaded compiled module from the cache");
                    touch(&compiled_path);
                    loaded.insert(hash, p.clone());
                    return Ok(p);
                }
                Err(e) => {
                    tracing::warn!(module = %hash.short(), error = %e, "ignoring a bad compiled cache entry")
                }
            }
        }
        let wasm_path = self.modules_dir.join(format!("{hash}.wasm"));
        let wasm = match tokio::fs::read(&wasm_path).await {
            Ok(bytes) if BlobHash::of(&bytes) == hash => bytes,
            _ => {
                let bytes = client.blob(hash).await.map_err(CacheError::Download)?;
                write_atomic(&wasm_path, &bytes, false, true)
                    .map_err(|e| CacheError::Local(e.to_string()))?;
                bytes
            }
        };
        let sandbox = self.sandbox.clone();
        let program = tokio::task::spawn_blocking(move || sandbox.compile(&wasm))
            .await
            .map_err(|e| CacheError::Local(e.to_string()))?
            .map_err(|e| CacheError::Module(e.to_string()))?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %hash.short(), "compiled module");
        match program.serialize() {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&compiled_path, &bytes, false, true) {
                    tracing::warn!(error = %e, "cannot cache compiled module");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled module"),
        }
        let keep = [wasm_path, compiled_path];
        match evict(&[&self.modules_dir, &self.compiled_dir], self.limit, &keep) {
            Ok(0) => {}
            Ok(freed) => tracing::info!(
                freed_bytes = freed,
                "module cache over its limit: least recently used files removed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot trim the module cache"),
        }
        loaded.insert(hash, program.clone());
        Ok(program)
    }
}

/// Marks a cache file as used now (eviction goes by modification time).
fn touch(path: &std::path::Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently modified files in `dirs` until their total
/// size is at most `limit`, never one of `keep`. Returns the bytes freed.
pub fn evict(dirs: &[&std::path::Path], limit: u64, keep: &[PathBuf]) -> std::io::Result<u64> {
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                files.push((meta.modified()?, meta.len(), entry.path()));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    let mut freed = 0;
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if keep.contains(&path) {
            continue;
        }
        std::fs::remove_file(&path)?;
        total -= len;
        freed += len;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_the_least_recently_used_files_first_and_keeps_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        let mut paths = Vec::new();
        for (i, d) in [&a, &b, &a, &b].iter().enumerate() {
            let p = d.join(format!("f{i}"));
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(i as u64))
                .unwrap();
            paths.push(p);
        }
        // The oldest file is the one just written: kept anyway.
        let freed = evict(&[&a, &b], 250, &[paths[0].clone()]).unwrap();
        assert_eq!(freed, 200);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [true, false, false, true]);
        assert_eq!(evict(&[&a, &b], 250, &[]).unwrap(), 0, "already fits");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot download the module: {0}")]
    Download(ClientError),
    #[error("the module does not load: {0}")]
    Module(String),
    #[error("local cache error: {0}")]
    Local(String),
}
