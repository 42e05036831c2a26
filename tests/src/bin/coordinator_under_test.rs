//! `coordinator serve`, built by this crate so the chaos tests can run the
//! coordinator as a real process and end it with a real SIGKILL. The
//! coordinator's command line lives in its `main.rs`, not in its library,
//! so this is `serve` rebuilt from the same library parts, in the same
//! order: settings (flags over environment over `--config`) applied to
//! `Config::new(data_dir)`, `Coordinator::open` with the system clock, the
//! listener, then `serve` until SIGTERM or Ctrl-C.
//!
//! One addition: once listening, it prints `listening on http://ADDR` on
//! stdout, so a test that asked for port 0 learns the port.

use anyhow::Context as _;
use clap::Parser;
use coordinator::settings::Settings;
use coordinator::{Config, Coordinator, clock::SystemClock};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() {
    // One line per cause, as `coordinator` prints it.
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = shutdown_signal();
    let file = match &cli.config {
        Some(path) => Settings::read(path)?,
        None => Settings::default(),
    };
    let config = cli.settings.or(file).apply(Config::new(&cli.data_dir))?;
    let c = Coordinator::open(config, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    c.serve(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (installed before the coordinator opens,
/// as `coordinator serve` does).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
