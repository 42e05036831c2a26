//! The `worker` command: what a volunteer runs. The binary is a call of
//! [`main`]; the tests run the same function as a real process.

use crate::config::Settings;
use crate::control::{self, Reply};
use crate::progress::{Display, LogWriter};
use crate::service::systemd_unit;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "The wasm@home worker: runs units for a coordinator in a WebAssembly sandbox."
)]
#[command(
    after_help = "Settings come from flags, then environment variables, then the config file, then defaults.

Examples:
  worker run --coordinator http://127.0.0.1:8080 --state-dir worker-state
  worker run --coordinator https://science.example.org --slots 2 --account KEY
  worker run --cpu-limit 50 --only-when-idle        # half of each slot, only when idle
  WASM_AT_HOME_SLOTS=1 worker run --config /etc/wasm-at-home/worker.toml
  worker pause --state-dir worker-state             # running units wait, no CPU used
  worker status --state-dir worker-state            # progress of each running unit
  worker resume --state-dir worker-state

A config file (TOML; every key optional):
  coordinator = \"https://science.example.org\"
  state_dir = \"/var/lib/wasm-at-home\"
  slots = 2
  name = \"lab-desktop\"
  account = \"KEY\"
  cpu_limit = 50
  only_when_idle = true"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register (on first start) and run units until stopped (Ctrl-C or SIGTERM).
    Run {
        /// A TOML file with any of: coordinator, state_dir, slots, name,
        /// account, cache_mb, cpu_limit, only_when_idle, idle_threshold,
        /// idle_secs, grace_secs, start_paused. Flags and environment
        /// variables win over it.
        #[arg(long, env = "WASM_AT_HOME_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Pause the worker running on a state directory: running units wait
    /// where they are (no CPU used), no new ones start. Kept across restarts.
    Pause(Local),
    /// Resume a paused worker.
    Resume(Local),
    /// Show what the worker running on a state directory is doing.
    Status {
        #[command(flatten)]
        local: Local,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a systemd service unit for running the worker as a service
    /// (save it as /etc/systemd/system/wasm-at-home-worker.service). The
    /// service registers on its first start and waits paused until you run
    /// `worker resume --state-dir /var/lib/wasm-at-home`.
    Install {
        /// The config file the service reads (coordinator, account, ...).
        #[arg(long, default_value = "/etc/wasm-at-home/worker.toml")]
        config: PathBuf,
        /// The worker binary the service runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Which worker a local command talks to.
#[derive(clap::Args)]
struct Local {
    /// The worker's state directory [default: worker-state].
    #[arg(long, env = "WASM_AT_HOME_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The worker's config file, to find its state directory.
    #[arg(long, env = "WASM_AT_HOME_CONFIG")]
    config: Option<PathBuf>,
}

impl Local {
    fn state_dir(&self) -> anyhow::Result<PathBuf> {
        let file = match &self.config {
            Some(path) => Settings::read(path)?,
            None => Settings::default(),
        };
        Ok(Settings {
            state_dir: self.state_dir.clone(),
            ..Settings::default()
        }
        .or(file)
        .into_config()
        .state_dir)
    }
}

/// Runs the `worker` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let display = match &cli.command {
        Command::Run { .. } => Display::for_stderr(),
        _ => Display::Off,
    };
    let bars = match &display {
        Display::Bars(multi) => Some(multi.clone()),
        _ => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(LogWriter(bars))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command(cli.command, display));
    // A sandbox thread left behind (a unit still compiling at the end of a
    // stop) does not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn command(command: Command, display: Display) -> anyhow::Result<()> {
    match command {
        Command::Run { config, settings } => {
            let file = match &config {
                Some(path) => Settings::read(path)?,
                None => Settings::default(),
            };
            let mut config = settings.or(file).into_config();
            config.display = display;
            let stats = crate::run(config, shutdown_signal()).await?;
            tracing::info!(
                units = stats.units_run,
                uploaded = stats.uploaded,
                released = stats.released,
                abandoned = stats.abandoned,
                "worker stopped"
            );
        }
        Command::Pause(local) => print_reply(control::send(&local.state_dir()?, "pause").await?),
        Command::Resume(local) => print_reply(control::send(&local.state_dir()?, "resume").await?),
        Command::Status { local, json } => {
            let reply = control::send(&local.state_dir()?, "status").await?;
            match (json, &reply) {
                (true, Reply::Running(status)) => println!("{}", serde_json::to_string(status)?),
                (true, Reply::NotRunning { paused }) => {
                    println!(
                        "{}",
                        serde_json::json!({ "running": false, "paused": paused })
                    )
                }
                _ => print_reply(reply),
            }
        }
        Command::Install { config, binary } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            print!("{}", systemd_unit(&binary, Some(&config)));
            eprintln!(
                "# Save this as /etc/systemd/system/wasm-at-home-worker.service, write {} \
                 (see `worker --help`), start it with \
                 `systemctl daemon-reload && systemctl enable --now wasm-at-home-worker` \
                 (it registers, then waits paused), and opt in with \
                 `worker resume --state-dir /var/lib/wasm-at-home`",
                config.display()
            );
        }
    }
    Ok(())
}

fn print_reply(reply: Reply) {
    match reply {
        Reply::NotRunning { paused } => println!(
            "no worker is running on this state directory; it will start {}",
            if paused { "paused" } else { "running" }
        ),
        Reply::Running(s) => {
            let state = match (s.paused.by_user, s.paused.by_load) {
                (true, _) => "paused (worker resume to go on)",
                (false, true) => "paused while the computer is in use",
                (false, false) => "running",
            };
            println!(
                "{state}; {} slot(s) at up to {}% CPU each; {} unit(s) running, {} queued, {} result(s) waiting for upload",
                s.slots,
                s.cpu_limit,
                s.running.len(),
                s.queued,
                s.unanswered
            );
            for unit in &s.running {
                println!("  {}", control::describe(unit));
            }
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled, so a signal
/// that arrives while the process is still starting is not lost to the
/// default action (which would end it without a clean stop).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn recv(s: std::io::Result<Signal>) {
        match s {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    }
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        tokio::select! {
            _ = recv(term) => {}
            _ = recv(int) => {}
        }
        tracing::info!("stop requested: finishing running units");
    }
}
