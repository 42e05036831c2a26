//! Job manifests: the TOML file a scientist writes to submit a job.
//!
//! ```toml
//! name = "primes below 10^8"
//! module = "primes.wasm"            # path, relative to this file
//! input = "100000000 100"           # the job input, split by the module...
//! # input_file = "recording.bin"    # ...or read from a file...
//! # units = ["unit 1", "unit 2"]    # ...or the unit inputs themselves
//!
//! [limits]                          # every field optional
//! fuel = 10_000_000_000             # per unit: the deterministic CPU budget
//! memory_mb = 256                   # per unit
//! output_kb = 1024                  # per unit
//! lease_secs = 600                  # how long a worker may hold a unit
//!
//! [validation]
//! quorum = 2                        # agreeing replicas needed
//! max_replicas = 5                  # replicas a unit may use before it fails
//! ```

use anyhow::{Context as _, bail};
use protocol::{Limits, Validation};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    name: String,
    module: PathBuf,
    input: Option<String>,
    input_file: Option<PathBuf>,
    units: Option<Vec<String>>,
    #[serde(default)]
    limits: ManifestLimits,
    #[serde(default)]
    validation: ManifestValidation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ManifestLimits {
    fuel: u64,
    memory_mb: u64,
    output_kb: u64,
    lease_secs: u64,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            fuel: 10_000_000_000,
            memory_mb: 256,
            output_kb: 1024,
            lease_secs: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ManifestValidation {
    quorum: u32,
    max_replicas: u32,
    adaptive: bool,
    compare: bool,
}

impl Default for ManifestValidation {
    fn default() -> Self {
        ManifestValidation {
            quorum: 2,
            max_replicas: 5,
            adaptive: false,
            compare: false,
        }
    }
}

/// A manifest with its files read.
#[derive(Debug)]
pub struct JobFiles {
    pub name: String,
    pub module: Vec<u8>,
    pub input: Option<Vec<u8>>,
    pub units: Option<Vec<Vec<u8>>>,
    pub limits: Limits,
    pub lease_secs: u64,
    pub validation: Validation,
}

/// Reads the manifest at `path` and the files it names.
pub fn load(path: &Path) -> anyhow::Result<JobFiles> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let m: Manifest = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid job manifest", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let module_path = dir.join(&m.module);
    let module = std::fs::read(&module_path).with_context(|| {
        format!(
            "cannot read the module {} named in {} (build the sample tasks first?)",
            module_path.display(),
            path.display()
        )
    })?;
    let input = match (m.input, m.input_file) {
        (Some(_), Some(_)) => bail!("{}: give `input` or `input_file`, not both", path.display()),
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(file)) => {
            let file = dir.join(file);
            Some(
                std::fs::read(&file)
                    .with_context(|| format!("cannot read the input {}", file.display()))?,
            )
        }
        (None, None) => None,
    };
    let units = m
        .units
        .map(|u| u.into_iter().map(String::into_bytes).collect());
    Ok(JobFiles {
        name: if m.name.is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            m.name
        },
        module,
        input,
        units,
        limits: Limits {
            fuel: m.limits.fuel,
            memory_bytes: m.limits.memory_mb << 20,
            output_bytes: m.limits.output_kb << 10,
        },
        lease_secs: m.limits.lease_secs,
        validation: Validation {
            quorum: m.validation.quorum,
            max_replicas: m.validation.max_replicas,
            adaptive: m.validation.adaptive,
            compare: m.validation.compare,
        },
    })
}
