//! The coordinator's settings as an operator gives them: flags and
//! environment variables (`WASM_AT_HOME_*`) over a TOML file (`--config`)
//! over the defaults, merged into a [`Config`] and validated at start, each
//! refusal naming the setting.
//!
//! ```toml
//! max_blob_mb = 256
//! [trust]
//! threshold = 10          # valid results in a row before a worker is trusted (doubled per invalid result)
//! spot_check = 0.18       # chance a unit returned alone is checked anyway
//! daily_quota_per_slot = 10000
//! leases_per_slot = 2
//! initial_leases = 4      # a new worker's room; each valid result adds one
//! distinct_networks = true  # one replica of a unit per /24 (IPv4), /48 (IPv6)
//! min_account_age_secs = 0 # a quorum needs a vote of an account this old (0: off; 86400 for a public project)
//! [submitters]            # limits of a submitter without its own (`coordinator keys set`)
//! max_units = 10000000    # units in flight
//! max_stored_mb = 65536   # modules and inputs of its unfinished jobs
//! ```
//!
//! The edge's sections (`[edge]`, `[registration]`) are in [`crate::edge`].

use crate::Config;
use anyhow::Context as _;
use std::path::Path;

/// The trust policy's knobs ([`crate::trust::Trust`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrustSettings {
    /// Valid results in a row after which a worker is trusted (adaptive
    /// replication gives it units alone).
    #[arg(long = "trust-threshold", env = "WASM_AT_HOME_TRUST_THRESHOLD")]
    pub threshold: Option<u64>,
    /// The probability (0 to 1) that a unit returned by a trusted worker
    /// alone is secretly given a second replica.
    #[arg(long = "spot-check", env = "WASM_AT_HOME_SPOT_CHECK")]
    pub spot_check: Option<f64>,
    /// A worker's daily lease quota at most, per slot.
    #[arg(
        long = "daily-quota-per-slot",
        env = "WASM_AT_HOME_DAILY_QUOTA_PER_SLOT"
    )]
    pub daily_quota_per_slot: Option<u64>,
    /// Leases a worker may hold at once, per slot it declared.
    #[arg(long = "leases-per-slot", env = "WASM_AT_HOME_LEASES_PER_SLOT")]
    pub leases_per_slot: Option<u32>,
    /// Leases a new worker may hold at once; each valid result earns one
    /// more, up to what its slots allow.
    #[arg(long = "initial-leases", env = "WASM_AT_HOME_INITIAL_LEASES")]
    pub initial_leases: Option<u32>,
    /// Replicas of a unit go to distinct networks (/24, /48) too (the
    /// default; loopback clients are exempt). Off for a project whose
    /// volunteers share one address (a campus behind one NAT).
    #[arg(
        long = "distinct-networks",
        env = "WASM_AT_HOME_DISTINCT_NETWORKS",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub distinct_networks: Option<bool>,
    /// Seed of the spot-check draws (for reproducible experiments only:
    /// a known seed lets anyone predict which units are checked).
    #[arg(long = "spot-check-seed", env = "WASM_AT_HOME_SPOT_CHECK_SEED")]
    pub seed: Option<u64>,
    /// The account-age rule: a unit is settled by a quorum only if one of
    /// the agreeing replicas came from an account at least this many
    /// seconds old when it returned it, unless the job opts out
    /// (`young_accounts`). 0 (the default) turns the rule off; at most
    /// 31536000 (365 days).
    #[arg(
        long = "min-account-age-secs",
        env = "WASM_AT_HOME_MIN_ACCOUNT_AGE_SECS"
    )]
    pub min_account_age_secs: Option<u64>,
}

/// The limits of a submitter that has none of its own
/// ([`crate::allowance`]; `coordinator keys set` gives one its own).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SubmitterSettings {
    /// Units in flight a submitter may have at most: the units of its
    /// unfinished jobs neither accepted nor failed, the new job's included.
    #[arg(
        long = "max-units-per-submitter",
        env = "WASM_AT_HOME_MAX_UNITS_PER_SUBMITTER"
    )]
    pub max_units: Option<u64>,
    /// MiB a submitter's unfinished jobs may hold at most: each one's
    /// module and input (or listed units), the new job's included.
    #[arg(
        long = "max-stored-mb-per-submitter",
        env = "WASM_AT_HOME_MAX_STORED_MB_PER_SUBMITTER"
    )]
    pub max_stored_mb: Option<u64>,
}

/// The most `[submitters] max_units` may be.
pub const MAX_UNITS_LIMIT: u64 = 1_000_000_000_000;

/// The most `[submitters] max_stored_mb` may be (1 PiB).
pub const MAX_STORED_MB_LIMIT: u64 = 1 << 30;

impl SubmitterSettings {
    fn or(self, other: SubmitterSettings) -> SubmitterSettings {
        SubmitterSettings {
            max_units: self.max_units.or(other.max_units),
            max_stored_mb: self.max_stored_mb.or(other.max_stored_mb),
        }
    }

    fn apply(self, allowance: &mut crate::allowance::Allowance) -> anyhow::Result<()> {
        if let Some(n) = self.max_units {
            anyhow::ensure!(
                (1..=MAX_UNITS_LIMIT).contains(&n),
                "submitters.max_units must be between 1 and {MAX_UNITS_LIMIT}, not {n}"
            );
            allowance.max_units = n;
        }
        if let Some(mb) = self.max_stored_mb {
            anyhow::ensure!(
                (1..=MAX_STORED_MB_LIMIT).contains(&mb),
                "submitters.max_stored_mb must be between 1 and {MAX_STORED_MB_LIMIT}, not {mb}"
            );
            allowance.max_stored_bytes = mb << 20;
        }
        Ok(())
    }
}

/// Everything `coordinator serve` can be told besides where it listens.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The largest module or job input accepted, in MiB.
    #[arg(long, env = "WASM_AT_HOME_MAX_BLOB_MB")]
    pub max_blob_mb: Option<u64>,
    /// The largest output per unit a job may ask for, in MiB.
    #[arg(long, env = "WASM_AT_HOME_MAX_OUTPUT_MB")]
    pub max_output_mb: Option<u64>,
    /// How often leases past their deadline are looked for, in ms.
    #[arg(long, env = "WASM_AT_HOME_EXPIRY_INTERVAL_MS")]
    pub expiry_interval_ms: Option<i64>,
    /// How long a worker that got no work waits before asking again, in ms.
    #[arg(long, env = "WASM_AT_HOME_IDLE_RETRY_MS")]
    pub idle_retry_ms: Option<u64>,
    #[command(flatten)]
    #[serde(default)]
    pub trust: TrustSettings,
    #[command(flatten)]
    #[serde(default)]
    pub edge: crate::edge::EdgeSettings,
    #[command(flatten)]
    #[serde(default)]
    pub registration: crate::edge::RegistrationSettings,
    #[command(flatten)]
    #[serde(default)]
    pub submitters: SubmitterSettings,
}

impl Settings {
    /// Reads a TOML settings file; unknown keys are refused by name.
    pub fn read(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    /// These settings where given, `other` where not.
    pub fn or(self, other: Settings) -> Settings {
        let (t, o) = (self.trust, other.trust);
        Settings {
            max_blob_mb: self.max_blob_mb.or(other.max_blob_mb),
            max_output_mb: self.max_output_mb.or(other.max_output_mb),
            expiry_interval_ms: self.expiry_interval_ms.or(other.expiry_interval_ms),
            idle_retry_ms: self.idle_retry_ms.or(other.idle_retry_ms),
            edge: self.edge.or(other.edge),
            registration: self.registration.or(other.registration),
            submitters: self.submitters.or(other.submitters),
            trust: TrustSettings {
                threshold: t.threshold.or(o.threshold),
                spot_check: t.spot_check.or(o.spot_check),
                daily_quota_per_slot: t.daily_quota_per_slot.or(o.daily_quota_per_slot),
                leases_per_slot: t.leases_per_slot.or(o.leases_per_slot),
                initial_leases: t.initial_leases.or(o.initial_leases),
                distinct_networks: t.distinct_networks.or(o.distinct_networks),
                seed: t.seed.or(o.seed),
                min_account_age_secs: t.min_account_age_secs.or(o.min_account_age_secs),
            },
        }
    }

    /// Applies these settings to `config`, refusing values out of range
    /// with the setting's name.
    pub fn apply(self, mut config: Config) -> anyhow::Result<Config> {
        if let Some(mb) = self.max_blob_mb {
            anyhow::ensure!(
                (1..=4096).contains(&mb),
                "max_blob_mb must be between 1 and 4096, not {mb}"
            );
            config.max_blob_bytes = (mb << 20) as usize;
        }
        if let Some(mb) = self.max_output_mb {
            anyhow::ensure!(
                (1..=1024).contains(&mb),
                "max_output_mb must be between 1 and 1024, not {mb}"
            );
            config.max_output_bytes = mb << 20;
        }
        if let Some(ms) = self.expiry_interval_ms {
            anyhow::ensure!(
                (10..=3_600_000).contains(&ms),
                "expiry_interval_ms must be between 10 and 3600000, not {ms}"
            );
            config.expiry_interval_ms = ms;
        }
        if let Some(ms) = self.idle_retry_ms {
            anyhow::ensure!(
                (10..=600_000).contains(&ms),
                "idle_retry_ms must be between 10 and 600000, not {ms}"
            );
            config.idle_retry_ms = ms;
        }
        self.edge.apply(&mut config.edge)?;
        self.registration.apply(&mut config.edge.registration)?;
        self.submitters.apply(&mut config.allowance)?;
        let t = self.trust;
        let trust = &mut config.trust;
        trust.threshold = t.threshold.unwrap_or(trust.threshold);
        trust.spot_check = t.spot_check.unwrap_or(trust.spot_check);
        trust.daily_quota_per_slot = t.daily_quota_per_slot.unwrap_or(trust.daily_quota_per_slot);
        trust.leases_per_slot = t.leases_per_slot.unwrap_or(trust.leases_per_slot);
        trust.initial_leases = t.initial_leases.unwrap_or(trust.initial_leases);
        trust.distinct_networks = t.distinct_networks.unwrap_or(trust.distinct_networks);
        trust.seed = t.seed.or(trust.seed);
        trust.min_account_age_secs = t.min_account_age_secs.unwrap_or(trust.min_account_age_secs);
        trust.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            "max_blob_mb = 8\n[trust]\nthreshold = 4\nspot_check = 0.5\ndistinct_networks = false\nmin_account_age_secs = 86400\n",
        )
        .unwrap();
        let flags = Settings {
            trust: TrustSettings {
                threshold: Some(7),
                ..TrustSettings::default()
            },
            ..Settings::default()
        };
        let config = flags.or(file).apply(Config::new("/tmp/x")).unwrap();
        assert_eq!(config.trust.threshold, 7);
        assert_eq!(config.trust.spot_check, 0.5);
        assert!(!config.trust.distinct_networks);
        assert_eq!(config.trust.min_account_age_secs, 86_400);
        assert_eq!(config.max_blob_bytes, 8 << 20);
        assert_eq!(config.trust.daily_quota_per_slot, 10_000, "default kept");
    }

    #[test]
    fn values_out_of_range_and_unknown_keys_are_refused_by_name() {
        let bad = Settings {
            trust: TrustSettings {
                spot_check: Some(2.0),
                ..TrustSettings::default()
            },
            ..Settings::default()
        };
        let e = bad.apply(Config::new("/tmp/x")).unwrap_err().to_string();
        assert!(e.contains("trust.spot_check"), "{e}");
        let e = toml::from_str::<Settings>("[trust]\nthreshhold = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threshhold"), "{e}");
        let e = Settings {
            expiry_interval_ms: Some(0),
            ..Settings::default()
        }
        .apply(Config::new("/tmp/x"))
        .unwrap_err()
        .to_string();
        assert!(e.contains("expiry_interval_ms"), "{e}");
        let e = Settings {
            trust: TrustSettings {
                min_account_age_secs: Some(400 * 86_400),
                ..TrustSettings::default()
            },
            ..Settings::default()
        }
        .apply(Config::new("/tmp/x"))
        .unwrap_err()
        .to_string();
        assert!(e.contains("trust.min_account_age_secs"), "{e}");
        for bad in [
            SubmitterSettings {
                max_units: Some(0),
                ..SubmitterSettings::default()
            },
            SubmitterSettings {
                max_stored_mb: Some(MAX_STORED_MB_LIMIT + 1),
                ..SubmitterSettings::default()
            },
        ] {
            let name = if bad.max_units.is_some() {
                "submitters.max_units"
            } else {
                "submitters.max_stored_mb"
            };
            let e = Settings {
                submitters: bad,
                ..Settings::default()
            }
            .apply(Config::new("/tmp/x"))
            .unwrap_err()
            .to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn submitter_limits_come_from_the_file_and_flags_and_default_generously() {
        let defaults = Settings::default().apply(Config::new("/tmp/x")).unwrap();
        assert_eq!(defaults.allowance, crate::allowance::Allowance::default());
        let file: Settings =
            toml::from_str("[submitters]\nmax_units = 5000\nmax_stored_mb = 100\n").unwrap();
        let flags = Settings {
            submitters: SubmitterSettings {
                max_units: Some(7000),
                ..SubmitterSettings::default()
            },
            ..Settings::default()
        };
        let config = flags.or(file).apply(Config::new("/tmp/x")).unwrap();
        assert_eq!(config.allowance.max_units, 7000);
        assert_eq!(config.allowance.max_stored_bytes, 100 << 20);
        let e = toml::from_str::<Settings>("[submitters]\nmax_unit = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_unit"), "{e}");
    }
}
