//! The worker's configuration: [`Config`], what [`crate::run`] takes, and
//! [`Settings`], what a volunteer gives as flags, environment variables or
//! a TOML file, merged (flags and environment over the file over the
//! defaults) into a `Config`.

use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The coordinator's base URL, e.g. `http://127.0.0.1:8080`.
    pub coordinator: String,
    /// Where the identity, pending results and caches live.
    pub state_dir: PathBuf,
    /// Units run at once.
    pub slots: usize,
    /// The name shown on the dashboard.
    pub name: String,
    /// The key of the volunteer account to join on registration; without
    /// it a new account is created.
    pub account: Option<String>,
    /// The longest wait between attempts to reach an absent coordinator.
    pub max_backoff: Duration,
    /// How long a stopping worker lets running units finish and uploads
    /// drain before it exits (what is left is on disk for the next start).
    pub grace: Duration,
    /// The most bytes the module cache (downloaded and compiled modules)
    /// keeps on disk.
    pub cache_bytes: u64,
    /// The share of each slot's time spent computing, in percent (100: no
    /// ceiling). See [`crate::governor`].
    pub cpu_limit: u8,
    /// Run only while other programs leave the computer idle.
    pub only_when_idle: bool,
    /// Other programs' CPU use (percent of all cores) above which the
    /// computer counts as in use.
    pub idle_threshold: u8,
    /// How long the computer must be idle before work resumes.
    pub idle_after: Duration,
    /// How often a heartbeat reports progress while units run.
    pub heartbeat: Duration,
    /// A new worker (first start on an empty state directory) starts
    /// paused, until `worker resume`.
    pub start_paused: bool,
    /// How progress is shown.
    pub display: crate::progress::Display,
    /// A PEM file of CA certificates to trust besides the public ones: for
    /// a coordinator whose TLS certificate a private CA signed.
    pub ca_cert: Option<PathBuf>,
    /// The invite token to register with, for a closed project.
    pub invite: Option<String>,
}

impl Config {
    pub fn new(coordinator: &str, state_dir: impl Into<PathBuf>) -> Config {
        Config {
            coordinator: coordinator.trim_end_matches('/').to_string(),
            state_dir: state_dir.into(),
            slots: std::thread::available_parallelism().map_or(1, |n| n.get()),
            name: host_name(),
            account: None,
            max_backoff: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            cache_bytes: 2 << 30,
            cpu_limit: 100,
            only_when_idle: false,
            idle_threshold: 25,
            idle_after: Duration::from_secs(60),
            heartbeat: Duration::from_millis(protocol::HEARTBEAT_INTERVAL_MS),
            start_paused: false,
            display: crate::progress::Display::Off,
            ca_cert: None,
            invite: None,
        }
    }
}

/// Settings as a volunteer gives them: flags and environment variables
/// (`worker run`'s arguments) or a TOML file. Every one is optional.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The coordinator's URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "WASM_AT_HOME_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Where the worker keeps its identity, pending results and caches
    /// [default: worker-state].
    #[arg(long, env = "WASM_AT_HOME_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Units to run at once (default: the number of cores).
    #[arg(long, env = "WASM_AT_HOME_SLOTS")]
    pub slots: Option<usize>,
    /// The name shown on the coordinator's dashboard (default: host name).
    #[arg(long, env = "WASM_AT_HOME_NAME")]
    pub name: Option<String>,
    /// The key of your volunteer account, to add this machine to it (a
    /// first machine registered without it creates the account and prints
    /// the key).
    #[arg(long, env = "WASM_AT_HOME_ACCOUNT")]
    pub account: Option<String>,
    /// The most disk space the module cache (downloaded and compiled
    /// modules) uses, in MiB [default: 2048].
    #[arg(long, env = "WASM_AT_HOME_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// The most CPU time each slot uses, in percent: units are run in
    /// short slices with rests between them, so that over any second or
    /// two a slot computes at most this share of the time [default: 100].
    #[arg(long, env = "WASM_AT_HOME_CPU_LIMIT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub cpu_limit: Option<u8>,
    /// Run units only while the computer is otherwise idle: pause at once
    /// when other programs use more than --idle-threshold of the CPU,
    /// resume after --idle-secs of quiet.
    #[arg(long, env = "WASM_AT_HOME_ONLY_WHEN_IDLE", num_args = 0..=1, default_missing_value = "true")]
    pub only_when_idle: Option<bool>,
    /// Other programs' CPU use, in percent of all cores, that counts as the
    /// computer being in use [default: 25].
    #[arg(long, env = "WASM_AT_HOME_IDLE_THRESHOLD", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub idle_threshold: Option<u8>,
    /// Seconds the computer must stay idle before units resume [default: 60].
    #[arg(long, env = "WASM_AT_HOME_IDLE_SECS")]
    pub idle_secs: Option<u64>,
    /// Seconds a stopping worker lets running units finish before it gives
    /// them back [default: 30].
    #[arg(long, env = "WASM_AT_HOME_GRACE_SECS")]
    pub grace_secs: Option<u64>,
    /// A new worker (first start on an empty state directory) registers and
    /// then waits paused until `worker resume`: how the service starts, so
    /// that nothing runs before the volunteer opts in.
    #[arg(long, env = "WASM_AT_HOME_START_PAUSED", num_args = 0..=1, default_missing_value = "true")]
    pub start_paused: Option<bool>,
    /// A PEM file of CA certificates to trust for the coordinator's TLS
    /// (a project that signs its own), besides the public CAs.
    #[arg(long, env = "WASM_AT_HOME_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The invite token a closed project gave you; spent on the first
    /// registration.
    #[arg(long, env = "WASM_AT_HOME_INVITE", hide_env_values = true)]
    pub invite: Option<String>,
}

impl Settings {
    /// Reads a TOML settings file; unknown keys are an error (a typo
    /// should not be ignored).
    pub fn read(path: &std::path::Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    /// These settings, with `other`'s where these have none.
    pub fn or(self, other: Settings) -> Settings {
        Settings {
            coordinator: self.coordinator.or(other.coordinator),
            state_dir: self.state_dir.or(other.state_dir),
            slots: self.slots.or(other.slots),
            name: self.name.or(other.name),
            account: self.account.or(other.account),
            cache_mb: self.cache_mb.or(other.cache_mb),
            cpu_limit: self.cpu_limit.or(other.cpu_limit),
            only_when_idle: self.only_when_idle.or(other.only_when_idle),
            idle_threshold: self.idle_threshold.or(other.idle_threshold),
            idle_secs: self.idle_secs.or(other.idle_secs),
            grace_secs: self.grace_secs.or(other.grace_secs),
            start_paused: self.start_paused.or(other.start_paused),
            ca_cert: self.ca_cert.or(other.ca_cert),
            invite: self.invite.or(other.invite),
        }
    }

    /// The worker's configuration: these settings over the defaults.
    pub fn into_config(self) -> Config {
        let mut config = Config::new(
            self.coordinator
                .as_deref()
                .unwrap_or("http://127.0.0.1:8080"),
            self.state_dir
                .unwrap_or_else(|| PathBuf::from("worker-state")),
        );
        if let Some(slots) = self.slots {
            config.slots = slots;
        }
        if let Some(name) = self.name {
            config.name = name;
        }
        config.account = self.account;
        if let Some(mb) = self.cache_mb {
            config.cache_bytes = mb << 20;
        }
        if let Some(limit) = self.cpu_limit {
            config.cpu_limit = limit;
        }
        config.only_when_idle = self.only_when_idle.unwrap_or(false);
        if let Some(t) = self.idle_threshold {
            config.idle_threshold = t;
        }
        if let Some(secs) = self.idle_secs {
            config.idle_after = Duration::from_secs(secs);
        }
        if let Some(secs) = self.grace_secs {
            config.grace = Duration::from_secs(secs);
        }
        config.start_paused = self.start_paused.unwrap_or(false);
        config.ca_cert = self.ca_cert;
        config.invite = self.invite;
        config
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_environment_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            "coordinator = \"https://file.example\"\nslots = 3\nname = \"from-file\"",
        )
        .unwrap();
        let given = Settings {
            slots: Some(1),
            ..Settings::default()
        };
        let config = given.or(file).into_config();
        assert_eq!(config.coordinator, "https://file.example");
        assert_eq!(config.slots, 1);
        assert_eq!(config.name, "from-file");
        assert_eq!(config.state_dir, PathBuf::from("worker-state"));
        assert!(
            toml::from_str::<Settings>("slot = 2").is_err(),
            "a typo is an error"
        );
    }
}
