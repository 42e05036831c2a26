//! The `coordinator` command: `serve` runs a coordinator; `submit`,
//! `status`, `jobs`, `output` and `cancel` talk to one over HTTP; `workers`,
//! `keys` and `invites` work on its database. The binary is a call of [`main`]; the tests'
//! `coordinator-under-test` runs the same command through
//! [`main_reporting`], as a real process.

use crate::client::Client;
use crate::settings::Settings;
use crate::{Config, Coordinator, clock::SystemClock};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use protocol::JobId;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The target of the command's own log lines: the binary's, as they were
/// logged before the command moved into the library, so filters and
/// readers of the log see no change.
const LOG_TARGET: &str = "coordinator";

#[derive(Parser)]
#[command(
    version,
    about = "The wasm@home coordinator: jobs in, verified results out."
)]
#[command(after_help = "Examples:
  coordinator serve --listen 127.0.0.1:8080 --data-dir data
  coordinator serve --config coordinator.toml --spot-check 0.2
  coordinator submit sample-tasks/primes/job.toml --wait
  coordinator status
  coordinator status JOB_ID --failed 20
  coordinator jobs --mine
  coordinator output JOB_ID
  coordinator output JOB_ID --partial --out so-far.framed
  coordinator keys create alice --share 2
  coordinator keys revoke alice
  coordinator invites create --uses 5
  coordinator workers list
  coordinator workers ban WORKER_ID
  coordinator workers ban --account ACCOUNT_ID")]
struct Cli {
    /// The coordinator's data directory: `serve` keeps its database and API
    /// key there; the other commands read the API key from it.
    #[arg(
        long,
        global = true,
        env = "WASM_AT_HOME_DATA_DIR",
        default_value = "coordinator-data"
    )]
    data_dir: PathBuf,
    /// The coordinator to talk to.
    #[arg(
        long,
        global = true,
        env = "WASM_AT_HOME_COORDINATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    coordinator: String,
    /// Your API key (`coordinator keys create` makes one; default: the
    /// admin key in the data directory's api-key file).
    #[arg(
        long,
        global = true,
        env = "WASM_AT_HOME_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
enum Command {
    /// Run a coordinator.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// A TOML file of settings (see `crate::settings`); flags and
        /// environment variables win over it.
        #[arg(long, env = "WASM_AT_HOME_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Submit the job described by a manifest (TOML); prints its id.
    Submit {
        manifest: PathBuf,
        /// Show progress and wait until the job ends.
        #[arg(long)]
        wait: bool,
    },
    /// Show one job (progress, time left, each failed unit's replicas and
    /// how they failed), or all jobs.
    Status {
        job: Option<JobId>,
        /// Print the job's status as JSON instead.
        #[arg(long)]
        json: bool,
        /// How many failed units to show, with their replicas.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
        failed: u32,
    },
    /// Write a finished job's output to stdout (or a file).
    Output {
        job: JobId,
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Instead, the accepted unit outputs so far (the job need not be
        /// done), in unit order, framed as the module's `reduce` mode
        /// receives them: each a u32 little-endian length, then its bytes.
        #[arg(long)]
        partial: bool,
    },
    /// List jobs, newest first; `--mine`: only those of your API key.
    Jobs {
        #[arg(long)]
        mine: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Cancel a job (your own; an admin's key cancels any).
    Cancel { job: JobId },
    /// Submitters and their API keys, in this coordinator's database
    /// (`--data-dir`): create, list, revoke, set. A revocation holds from
    /// the key's next request on, also for a running coordinator.
    Keys {
        /// The TOML settings `serve` uses (its `[submitters]` defaults are
        /// shown by `list`); the same flags and environment variables as
        /// `serve` win over it.
        #[arg(long, env = "WASM_AT_HOME_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Invite tokens, for a project that registers invited workers only
    /// (`--invites-only`). Works on the data directory's database.
    Invites {
        #[command(subcommand)]
        command: InvitesCommand,
    },
    /// The workers in this coordinator's database (`--data-dir`): list,
    /// ban, unban. A ban holds at once, also for a coordinator running on
    /// the same database.
    Workers {
        /// The TOML settings `serve` uses (its `[trust]` decides what
        /// backtracking after a ban reopens); the same flags and
        /// environment variables as `serve` win over it.
        #[arg(long, env = "WASM_AT_HOME_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
        #[command(subcommand)]
        action: WorkersAction,
    },
}

#[derive(Subcommand)]
enum InvitesCommand {
    /// Make an invite token and print it (only its hash is kept).
    Create {
        /// How many workers may register with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        uses: u32,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a submitter and its API key; prints the key (shown only now).
    Create {
        /// Its name: letters, digits, '.', '_' and '-', at most 64.
        name: crate::submitter::SubmitterName,
        /// Its share of the volunteers' work while others have work too.
        #[arg(long, default_value_t = 1)]
        share: u32,
        /// An admin may cancel anybody's job.
        #[arg(long)]
        admin: bool,
        /// Its own most units in flight (default: the coordinator's).
        #[arg(long)]
        max_units: Option<u64>,
        /// Its own most MiB held by its unfinished jobs (default: the
        /// coordinator's).
        #[arg(long)]
        max_stored_mb: Option<u64>,
    },
    /// Every submitter: admin, share, limits and use, jobs, created,
    /// revoked (never a key).
    List,
    /// Revoke a submitter's key: refused from its next request on.
    Revoke {
        name: crate::submitter::SubmitterName,
    },
    /// Change a submitter's share or limits (`default`: the
    /// coordinator's).
    Set {
        name: crate::submitter::SubmitterName,
        #[arg(long)]
        share: Option<u32>,
        /// A number, or `default`.
        #[arg(long)]
        max_units: Option<crate::keys::Limit>,
        /// A number of MiB, or `default`.
        #[arg(long)]
        max_stored_mb: Option<crate::keys::Limit>,
    },
}

#[derive(clap::Subcommand)]
enum WorkersAction {
    /// Id, account, slots, valid and invalid results, trust, last seen,
    /// banned.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Ban a worker (or every worker of an account): its token is refused,
    /// its pending results discarded, the units it vouched for verified
    /// again.
    Ban(BanArgs),
    /// Lift a ban.
    Unban(BanArgs),
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct BanArgs {
    /// The worker's id.
    worker: Option<protocol::WorkerId>,
    /// An account, by its id or its key: all its workers.
    #[arg(long)]
    account: Option<String>,
}

impl BanArgs {
    fn target(&self) -> crate::store::BanTarget {
        use crate::store::BanTarget;
        match (&self.worker, &self.account) {
            (Some(id), _) => BanTarget::Worker(*id),
            (None, Some(account)) => BanTarget::Account(account.clone()),
            (None, None) => unreachable!("clap requires one of them"),
        }
    }
}

/// Runs the `coordinator` command with the process's arguments.
pub fn main() -> ExitCode {
    main_reporting(|_| Ok(()))
}

/// [`main`], calling `listening` with the address once `serve` listens and
/// before it serves. The tests' `coordinator-under-test` prints it, so a
/// test that asked for port 0 learns the port; an error from it ends the
/// command like any other.
pub fn main_reporting(listening: impl FnOnce(SocketAddr) -> std::io::Result<()>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colour only on a terminal: a log file keeps plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command(&cli, listening));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // A failure ends the process without waiting for the runtime's
        // blocking tasks (a split or reduce under way), as an exit from
        // within it would.
        Ok(false) => {
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
        // One line per cause, never a backtrace: these are messages for people.
        Err(e) => {
            eprintln!("error: {e:#}");
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command; false for a command that ran but did not
/// succeed (`submit --wait` on a job that did not end done).
async fn command(
    cli: &Cli,
    listening: impl FnOnce(SocketAddr) -> std::io::Result<()>,
) -> anyhow::Result<bool> {
    let client = || {
        let key = cli
            .api_key
            .clone()
            .or_else(|| crate::read_api_key(&cli.data_dir).ok());
        Client::new(&cli.coordinator, key)
    };
    match &cli.command {
        Command::Serve {
            listen,
            config,
            settings,
        } => serve(cli, listen, config.as_deref(), settings, listening).await?,
        Command::Submit { manifest, wait } => return submit(&client(), manifest, *wait).await,
        Command::Status {
            job: Some(job),
            json,
            failed,
        } => {
            let client = client();
            let s = client.status(*job).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let units = match s.units_failed {
                    0 => Vec::new(),
                    _ => client.units(*job, Some("failed"), *failed).await?,
                };
                print!("{}", crate::report::job(&s, &units));
            }
        }
        Command::Jobs { mine, limit } => {
            for s in client().job_list(*mine, *limit).await? {
                println!(
                    "{}  {:9}  {:>7}/{:<7} units  {:20}  {:>4}  {}",
                    s.id,
                    s.state.as_str(),
                    s.units_accepted + s.units_failed,
                    s.units_total,
                    s.submitter.as_deref().unwrap_or("-"),
                    s.priority,
                    s.name
                );
            }
        }
        Command::Status { job: None, .. } => {
            for s in client().jobs().await? {
                println!("{}", crate::report::line(&s));
            }
        }
        Command::Output {
            job,
            out,
            partial: true,
        } => partial_output(&client(), *job, out.as_deref()).await?,
        Command::Output { job, out, .. } => {
            let bytes = client().output(*job).await?;
            match out {
                Some(path) => std::fs::write(path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        Command::Cancel { job } => {
            let s = client().cancel(*job).await?;
            println!("job {} {}", s.id, s.state.as_str());
        }
        Command::Invites {
            command: InvitesCommand::Create { uses },
        } => {
            let token = crate::invites::create(&cli.data_dir, *uses).await?;
            println!("{token}");
            eprintln!(
                "an invite for {uses} registration(s); give it to the volunteer: worker run --invite {token}"
            );
        }
        Command::Workers {
            config,
            settings,
            action,
        } => workers(cli, config.as_deref(), settings, action).await?,
        Command::Keys {
            config,
            settings,
            action,
        } => keys(cli, config.as_deref(), settings, action).await?,
    }
    Ok(true)
}

/// `coordinator serve`: settings from the file, flags and environment, then
/// the coordinator on `listen` until Ctrl-C or SIGTERM; `listening` is
/// called with the address bound.
async fn serve(
    cli: &Cli,
    listen: &str,
    config: Option<&std::path::Path>,
    settings: &Settings,
    listening: impl FnOnce(SocketAddr) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    // First, so that a stop asked for while starting is a clean stop.
    let shutdown = shutdown_signal();
    let mut config = config_of(cli, config, settings)?;
    config.api_key = cli.api_key.clone();
    let c = Coordinator::open(config, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if c.config().edge.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        target: LOG_TARGET,
        "listening on {scheme}://{addr} (dashboard at {scheme}://{addr}/, the admin's API key in {})",
        cli.data_dir.join(crate::API_KEY_FILE).display()
    );
    listening(addr)?;
    c.serve(listener, shutdown).await?;
    tracing::info!(target: LOG_TARGET, "stopped");
    Ok(())
}

/// The settings of flags and environment, over those of the file, over
/// the defaults: `serve` and `workers` decide alike.
fn config_of(
    cli: &Cli,
    file: Option<&std::path::Path>,
    settings: &Settings,
) -> anyhow::Result<Config> {
    let file = match file {
        Some(path) => Settings::read(path)?,
        None => Settings::default(),
    };
    settings.clone().or(file).apply(Config::new(&cli.data_dir))
}

/// `coordinator workers ...`, on the database in the data directory.
async fn workers(
    cli: &Cli,
    config: Option<&std::path::Path>,
    settings: &Settings,
    action: &WorkersAction,
) -> anyhow::Result<()> {
    use crate::clock::Clock as _;
    let config = config_of(cli, config, settings)?;
    let store = crate::operator::open(&cli.data_dir, crate::operator::trust_of(&config)).await?;
    let now = SystemClock.now_ms();
    let out = match action {
        WorkersAction::List { limit } => crate::operator::list(&store, *limit, now).await?,
        WorkersAction::Ban(args) => crate::operator::ban(&store, &args.target(), now).await?,
        WorkersAction::Unban(args) => crate::operator::unban(&store, &args.target()).await?,
    };
    print!("{out}");
    Ok(())
}

/// `coordinator keys ...`, on the database in the data directory.
async fn keys(
    cli: &Cli,
    config: Option<&std::path::Path>,
    settings: &Settings,
    action: &KeysAction,
) -> anyhow::Result<()> {
    use crate::clock::Clock as _;
    let config = config_of(cli, config, settings)?;
    let store = crate::operator::open(&cli.data_dir, crate::operator::trust_of(&config)).await?;
    let now = SystemClock.now_ms();
    let defaults = &config.allowance;
    let out = match action {
        KeysAction::Create {
            name,
            share,
            admin,
            max_units,
            max_stored_mb,
        } => {
            let new = crate::keys::NewKey {
                name: name.clone(),
                share: *share,
                admin: *admin,
                max_units: *max_units,
                max_stored_mb: *max_stored_mb,
            };
            let created = crate::keys::create(&store, &new, now).await?;
            // The key alone on stdout, for scripts; the note for people.
            println!("{}", created.key);
            eprintln!("{}", created.note);
            return Ok(());
        }
        KeysAction::List => crate::keys::list(&store, defaults).await?,
        KeysAction::Revoke { name } => crate::keys::revoke(&store, name, now).await?,
        KeysAction::Set {
            name,
            share,
            max_units,
            max_stored_mb,
        } => {
            let change = crate::keys::KeyChange {
                share: *share,
                max_units: *max_units,
                max_stored_mb: *max_stored_mb,
            };
            crate::keys::set(&store, name, &change, defaults).await?
        }
    };
    print!("{out}");
    Ok(())
}

/// `coordinator output --partial`: the accepted outputs so far, streamed
/// to `out` or stdout; how many of how many units on stderr.
async fn partial_output(
    client: &Client,
    job: JobId,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (units, total) = match out {
        // Into a file beside it, renamed once whole: a stream cut off
        // leaves `out` as it was.
        Some(path) => {
            let mut part = path.as_os_str().to_owned();
            part.push(".part");
            let part = PathBuf::from(part);
            let file = std::fs::File::create(&part)
                .with_context(|| format!("cannot write {}", part.display()))?;
            let mut file = std::io::BufWriter::new(file);
            let got = client.partial_output(job, &mut file).await;
            drop(file);
            match got {
                Ok(got) => {
                    std::fs::rename(&part, path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    got
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            }
        }
        None => {
            client
                .partial_output(job, &mut std::io::stdout().lock())
                .await?
        }
    };
    eprintln!(
        "partial output of job {job}: the accepted outputs of {units} of its {total} units, in unit order, framed (u32 little-endian length, then the bytes)"
    );
    Ok(())
}

/// `coordinator submit`: prints the job's id; with `wait`, its progress
/// and end, false unless it is done.
async fn submit(client: &Client, manifest: &std::path::Path, wait: bool) -> anyhow::Result<bool> {
    let job = client.submit_manifest(manifest).await?;
    println!("{job}");
    if !wait {
        return Ok(true);
    }
    let s = client.wait(job, std::io::stderr().is_terminal()).await?;
    let secs = s
        .finished_ms
        .map_or(0.0, |f| (f - s.created_ms) as f64 / 1000.0);
    let settled = s.units_accepted + s.units_failed;
    eprintln!(
        "job {job} {} in {secs:.1} s: {} units accepted, {} failed ({:.0} units/s)",
        s.state.as_str(),
        s.units_accepted,
        s.units_failed,
        settled as f64 / secs.max(0.001)
    );
    if let Some(e) = &s.error {
        eprintln!("{e}");
    }
    Ok(s.state == protocol::JobState::Done)
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
        tracing::info!(target: LOG_TARGET, "shutting down");
    }
}
