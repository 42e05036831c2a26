//! Modules, downloaded once and compiled once.
//!
//! A module is looked up in memory, then as compiled code in
//! `cache/compiled/<engine key>/`, then as wasm in `cache/modules/`, and
//! only then downloaded (and its hash checked). Compiled code is only ever
//! produced on this machine by this engine: the directory is keyed by the
//! engine's compatibility key, and nothing compiled comes from the network.

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
    loaded: Mutex<HashMap<BlobHash, Program>>,
    /// How many modules this process compiled from wasm (not from the cache).
    compilations: AtomicU64,
}

impl ModuleCache {
    pub fn new(sandbox: Sandbox, dir: PathBuf) -> std::io::Result<ModuleCache> {
        let modules_dir = dir.join("modules");
        let compiled_dir = dir.join("compiled").join(sandbox.compatibility_key());
        std::fs::create_dir_all(&modules_dir)?;
        std::fs::create_dir_all(&compiled_dir)?;
        Ok(ModuleCache {
            sandbox,
            modules_dir,
            compiled_dir,
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
        loaded.insert(hash, program.clone());
        Ok(program)
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
