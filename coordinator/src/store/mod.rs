//! The store: the coordinator's only holder of SQL, one module per noun.
//!
//! - [`writer`]: group commit: the hot path's writes, batched per transaction.
//! - [`leasing`]: serving work requests (the [`placement`] policy applied).
//! - [`uploads`]: recording results; [`settling`]: deciding units (the
//!   [`validator`] and [`trust`] policies applied); [`backtrack`]: repairing
//!   the past when a worker is caught.
//! - [`heartbeats`], [`expiry`]: leases that make progress, and leases that
//!   end without a result.
//! - [`jobs`]: jobs and units; [`claims`]: one coordinator at a time per
//!   split or reduce; [`blobs`]: content-addressed bytes.
//! - [`workers`]: workers, accounts, and their counters and credit;
//!   [`invites`]: invite tokens, spent one use per registration.
//! - [`submitters`]: who submits jobs, their keys (hashed), shares and
//!   limits, and the usage their allowance is checked against.
//! - [`body_limits`]: how large a result body may be, from its job.
//! - [`workers`]: workers, accounts, and their counters and credit.
//! - [`bans`]: operator bans, and what they discard and re-verify.
//! - [`dashboard`]: the web dashboard's read-only queries;
//!   [`acceptances`]: units accepted lately, per job (the time-left
//!   estimate) and per submitter (the dashboard's Submitters section).
//! - [`unit_details`]: units with their replicas' failure detail;
//!   [`outputs`]: a job's accepted outputs so far, in pages of one snapshot.
//! - [`totals`]: what `/metrics` reads from the database at scrape time.
//! - [`sql`]: shared helpers; [`error`]: the store's errors.
//!
//! Policy is decided above, in pure functions; this module reads rows into
//! their plain views, calls them, and writes their decisions. Guarantees
//! live in the schema (unique indexes, guard triggers, conditional
//! updates `WHERE state = ...`), so a repeated upload, a crash between two
//! statements or a second writer can never accept a unit twice, credit a
//! replica twice, or give two replicas of a unit to one account.
//!
//! On SQLite all writes go through one connection (SQLite has one writer
//! anyway; this way writers queue in the pool instead of failing with
//! SQLITE_BUSY), and reads use a pool of their own. ARCHITECTURE.md,
//! "Storage", has the plan for a PostgreSQL backend beside it.
//!
//! [`placement`]: crate::placement
//! [`validator`]: crate::validator
//! [`trust`]: crate::trust

mod acceptances;
mod backtrack;
mod bans;
mod blobs;
mod body_limits;
mod claims;
mod dashboard;
mod error;
mod expiry;
mod heartbeats;
mod invites;
mod jobs;
mod leasing;
mod outputs;
mod queue;
mod settling;
mod sql;
mod starvation;
mod submitters;
mod totals;
mod unit_details;
mod uploads;
mod workers;
mod writer;

pub use crate::trust::Trust;
pub use bans::{BanReport, BanTarget};
pub use body_limits::UploadTarget;
pub use claims::{CLAIM_TTL_MS, Claim, Duty};
pub use error::{Error, Result};
pub use jobs::{JobRow, NewJob};
pub use leasing::{LeaseRequest, LeaseRow, Leased};
pub use outputs::AcceptedOutputs;
pub use settling::Effects;
pub use submitters::{
    AdminSetup, NewSubmitter, Revocation, SubmitterChange, SubmitterListing, SubmitterRow,
};
pub use totals::Totals;
pub use uploads::{Comparator, Refusal, Upload, UploadAnswer};
pub use workers::WorkerRow;
pub use writer::{Answer, WRITE_BATCH, Write, WriterMetrics};

use crate::trust::SpotChecks;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    policy: Arc<Policy>,
    /// The queue of the group-commit task.
    writes: mpsc::Sender<writer::Pending>,
    path: PathBuf,
}

/// The policies the store's transactions apply, shared with the writer's
/// thread.
struct Policy {
    trust: Trust,
    spot_checks: SpotChecks,
    /// Set by the coordinator, which owns the sandbox.
    comparator: OnceLock<Comparator>,
    /// The group-commit task's batch sizes and commit times.
    writer: WriterMetrics,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("trust", &self.trust)
            .field("comparator", &self.comparator.get().is_some())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings
    /// its schema up to date.
    pub async fn open_sqlite(path: &Path, trust: Trust) -> Result<Store> {
        trust.validate().map_err(Error::Settings)?;
        let policy = Arc::new(Policy {
            spot_checks: SpotChecks::new(trust.seed, trust.spot_check),
            trust,
            comparator: OnceLock::new(),
            writer: WriterMetrics::default(),
        });
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every acknowledged result is on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Batched statements differ in their number of rows: lists
            // are padded to a few sizes (`sql::padded_len`), each its own
            // prepared statement.
            .statement_cache_capacity(sql::STATEMENT_CACHE)
            // Statement journals in memory.
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A ping before every transaction costs a round trip to the
            // database thread; a broken local file shows at the next
            // statement anyway.
            .test_before_acquire(false)
            // The writer's page cache: 16 MiB (negative: KiB) instead of
            // SQLite's 2 MiB; readers keep the default. A checkpoint every
            // 8,192 WAL pages (32 MiB of 4 KiB pages) instead of 1,000: a batch writes more
            // than 1,000, so each commit was followed by a checkpoint that
            // copied its pages again; now a page written by several
            // batches is copied once (bytes written per replica, one job:
            // 26 KB to 19 KB, BENCHMARKS.md).
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", "-16384")
                    .pragma("wal_autocheckpoint", "8192"),
            )
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        // Units waiting for a seasoned vote waited under the account-age
        // rule of the last start, which may have changed: the expiry round
        // settles them again under this one's.
        sqlx::query("UPDATE units SET unsettled = TRUE WHERE wants_seasoned AND state = 'open'")
            .execute(&write)
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let writes = writer::start(write.clone(), policy.clone())?;
        Ok(Store {
            write,
            read,
            policy,
            writes,
            path: path.to_path_buf(),
        })
    }

    /// Where the database lives (for tools and tests that open it too).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The group-commit task's batch sizes and commit times, for `/metrics`.
    pub fn writer_metrics(&self) -> &WriterMetrics {
        &self.policy.writer
    }

    /// How outputs of jobs validated with `compare` are compared; set once.
    pub fn set_comparator(&self, comparator: Comparator) {
        let _ = self.policy.comparator.set(comparator);
    }
}
