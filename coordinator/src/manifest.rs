//! Job manifests: the TOML file a scientist writes to submit a job.
//!
//! ```toml
//! name = "primes below 10^8"
//! module = "primes.wasm"            # path, relative to this file
//! input = "100000000 100"           # the job input, split by the module...
//! # input_file = "recording.bin"    # ...or read from a file...
//! # units = ["unit 1", "unit 2"]    # ...or the unit inputs themselves
//! priority = 0                      # among your own jobs: higher first
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
//! # young_accounts = true           # opt out of the account-age rule
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
    priority: i32,
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
    young_accounts: bool,
}

impl Default for ManifestValidation {
    fn default() -> Self {
        ManifestValidation {
            quorum: 2,
            max_replicas: 5,
            adaptive: false,
            compare: false,
            young_accounts: false,
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
    pub priority: i32,
}

/// `value << shift`, or an error naming the setting if that overflows (a
/// shift would wrap silently into a small, wrong limit).
fn scaled(path: &Path, what: &str, value: u64, shift: u32) -> anyhow::Result<u64> {
    match value.checked_mul(1 << shift) {
        Some(bytes) => Ok(bytes),
        None => bail!("{}: {what} = {value} is far too large", path.display()),
    }
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
            memory_bytes: scaled(path, "limits.memory_mb", m.limits.memory_mb, 20)?,
            output_bytes: scaled(path, "limits.output_kb", m.limits.output_kb, 10)?,
        },
        lease_secs: m.limits.lease_secs,
        validation: Validation {
            quorum: m.validation.quorum,
            max_replicas: m.validation.max_replicas,
            adaptive: m.validation.adaptive,
            compare: m.validation.compare,
            young_accounts: m.validation.young_accounts,
        },
        priority: m.priority,
    })
}

#[cfg(test)]
mod tests {
    //! Property tests: random text and mutated valid manifests never panic
    //! the parser, every refusal names the manifest, and what it accepts
    //! is what the text says (no limit wraps around).

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    const VALID: &str = r#"name = "primes"
module = "task.wasm"
input = "1000 10"

[limits]
fuel = 10_000_000
memory_mb = 64
output_kb = 16
lease_secs = 60

[validation]
quorum = 2
max_replicas = 5
"#;

    #[test]
    fn the_priority_is_read_and_defaults_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_text(dir.path(), VALID).unwrap().priority, 0);
        let text = format!("priority = -7\n{VALID}");
        assert_eq!(load_text(dir.path(), &text).unwrap().priority, -7);
        let err = load_text(dir.path(), &format!("priority = \"high\"\n{VALID}")).unwrap_err();
        assert!(format!("{err:#}").contains("priority"), "{err:#}");
    }

    fn config() -> Config {
        Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(3),
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// Loads `text` as `dir/job.toml`, beside a module file.
    fn load_text(dir: &Path, text: &str) -> anyhow::Result<JobFiles> {
        std::fs::write(dir.join("task.wasm"), b"\0asm").unwrap();
        let path = dir.join("job.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    fn judged(text: &str) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        match load_text(dir.path(), text) {
            Err(e) => {
                let said = format!("{e:#}");
                prop_assert!(said.contains("job.toml"), "{}", said);
            }
            Ok(job) => {
                // The limits are the text's, scaled exactly.
                let m: Manifest = toml::from_str(text).unwrap();
                prop_assert_eq!(job.limits.memory_bytes, m.limits.memory_mb * (1 << 20));
                prop_assert_eq!(job.limits.output_bytes, m.limits.output_kb * (1 << 10));
            }
        }
        Ok(())
    }

    #[test]
    fn the_valid_manifest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let job = load_text(dir.path(), VALID).unwrap();
        assert_eq!(job.limits.memory_bytes, 64 << 20);
        assert_eq!(job.validation.quorum, 2);
    }

    #[test]
    fn a_limit_that_would_wrap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = VALID.replace("memory_mb = 64", "memory_mb = 18446744073709551615");
        let e = load_text(dir.path(), &text).unwrap_err();
        assert!(format!("{e:#}").contains("limits.memory_mb"), "{e:#}");
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_text_never_panics_the_parser(text in "\\PC{0,200}") {
            judged(&text)?;
        }

        #[test]
        fn mutated_manifests_are_loaded_or_refused_clearly(
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), prop_oneof![
                    Just(String::new()),
                    "[0-9]{1,22}",
                    "[=\\[\\]\"#._a-z \n-]{1,3}",
                ]),
                1..4,
            ),
            number in any::<u64>(),
        ) {
            // Numbers anywhere, huge ones included, and random cuts and
            // insertions.
            let mut text = VALID.replace("64", &number.to_string());
            for (at, insert) in &edits {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                let end = (i + 2).min(text.len());
                let end = if text.is_char_boundary(end) { end } else { i };
                text.replace_range(i..end, insert);
            }
            judged(&text)?;
        }
    }
}
