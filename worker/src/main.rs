//! The `worker` command: what a volunteer runs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "The wasm@home worker: runs units for a coordinator in a WebAssembly sandbox."
)]
#[command(
    after_help = "Settings come from flags, then environment variables, then the config file, then defaults.

Examples:
  worker run --coordinator http://127.0.0.1:8080 --state-dir worker-state
  worker run --coordinator https://science.example.org --slots 2 --account KEY
  WASM_AT_HOME_SLOTS=1 worker run --config /etc/wasm-at-home/worker.toml

A config file (TOML; every key optional):
  coordinator = \"https://science.example.org\"
  state_dir = \"/var/lib/wasm-at-home\"
  slots = 2
  name = \"lab-desktop\"
  account = \"KEY\""
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
        /// account, cache_mb. Flags and environment variables win over it.
        #[arg(long, env = "WASM_AT_HOME_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: worker::Settings,
    },
    /// Print a systemd service unit for running the worker as a service
    /// (save it as /etc/systemd/system/wasm-at-home-worker.service; it stays
    /// off until you run `systemctl enable --now wasm-at-home-worker`).
    Install {
        /// The config file the service reads (coordinator, account, ...).
        #[arg(long, default_value = "/etc/wasm-at-home/worker.toml")]
        config: PathBuf,
        /// The worker binary the service runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run { config, settings } => {
            let file = match &config {
                Some(path) => worker::Settings::read(path)?,
                None => worker::Settings::default(),
            };
            let config = settings.or(file).into_config();
            let stats = worker::run(config, shutdown_signal()).await?;
            tracing::info!(
                units = stats.units_run,
                uploaded = stats.uploaded,
                "worker stopped"
            );
        }
        Command::Install { config, binary } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            print!("{}", worker::systemd_unit(&binary, Some(&config)));
            eprintln!(
                "# Save this as /etc/systemd/system/wasm-at-home-worker.service, write {} \
                 (see `worker --help`), then opt in with: \
                 systemctl daemon-reload && systemctl enable --now wasm-at-home-worker",
                config.display()
            );
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("stop requested: finishing running units");
}
