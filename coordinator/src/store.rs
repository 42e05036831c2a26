//! The store: every SQL statement of the coordinator lives here.
//!
//! State transitions are conditional updates inside transactions (`WHERE
//! state = ...`, unique constraints), so a repeated upload, a crash between
//! two statements or a race between requests can never accept a unit twice
//! or credit a replica twice. On SQLite all writes go through one connection
//! (SQLite has one writer anyway; this way writers queue in the pool instead
//! of failing with SQLITE_BUSY), and reads use a pool of their own.
//!
//! The SQL is kept to what SQLite and PostgreSQL share, so a PostgreSQL
//! backend changes this module only.

mod dashboard;

use crate::validator::{self, Decision, Policy, Replica, ReplicaState, UnitOutcome, Verdict};
use protocol::{
    AccountStatus, BlobHash, FUEL_PER_CREDIT, FailureKind, Heartbeat, HeartbeatResponse, JobId,
    JobState, JobStatus, LeaseDeadline, Limits, MAX_LEASE_PERIODS, Outcome, Platform, ReplicaId,
    UnitId, UnitStatus, UploadStatus, Validation, WorkerId, WorkerStatus,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

/// How many unit rows one INSERT statement carries.
const UNIT_BATCH: usize = 500;

/// The most writes (uploads, work requests) applied in one transaction.
pub const WRITE_BATCH: usize = 256;

/// The most batches the group-commit task applies before it lets other
/// writers have the write connection.
const HOLD_BATCHES: usize = 8;

#[derive(Clone, Debug)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    trust: Arc<TrustState>,
    /// The queue of the group-commit task that applies uploads and leases.
    writes: mpsc::Sender<Pending>,
}

/// A job as the coordinator's background tasks need it.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: JobId,
    pub state: JobState,
    pub module: BlobHash,
    pub input: Option<BlobHash>,
    pub limits: Limits,
    pub quorum: u32,
}

/// A new job, before it has units.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub name: String,
    pub module: BlobHash,
    pub input: Option<BlobHash>,
    pub limits: Limits,
    pub lease_secs: u64,
    pub validation: Validation,
}

/// A replica just leased, with what the worker needs to run it.
#[derive(Clone, Debug)]
pub struct LeaseRow {
    pub replica_id: ReplicaId,
    pub unit_id: UnitId,
    pub job_id: JobId,
    pub module: BlobHash,
    pub input: Vec<u8>,
    pub limits: Limits,
    pub deadline_ms: i64,
    pub fuel_estimate: Option<u64>,
}

/// A worker found by its token.
#[derive(Clone, Debug)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub arch: String,
    /// Its volunteer account (its own id if it has none).
    pub account: String,
    /// The network prefix of the request, when replicas of a unit must come
    /// from distinct networks ([`Trust::distinct_networks`]).
    pub net: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// Why an upload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSuchReplica,
    NotYours,
    /// The lease ran out and the unit went to another worker.
    Expired,
    /// A different result for this replica was received before.
    Conflict,
    /// More output or fuel than the job's limits allow: no sandbox made it.
    OverLimits,
}

/// What recording a result changed, for the caller to act on.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// Jobs whose every unit is now settled: ready to reduce.
    pub jobs_to_reduce: Vec<JobId>,
    /// Accepted units reopened by backtracking.
    pub reopened: u64,
}

/// How the coordinator learns whom to trust (ARCHITECTURE.md, "Trust").
#[derive(Clone, Debug)]
pub struct Trust {
    /// Valid results in a row after which a worker may get a unit of an
    /// adaptive job alone.
    pub threshold: u64,
    /// The probability that a unit returned by a worker alone is secretly
    /// given a second replica.
    pub spot_check: f64,
    /// A worker's daily lease quota at most, per slot; each error, invalid
    /// result or timeout halves its quota, each valid result doubles it.
    pub daily_quota_per_slot: u64,
    /// Seed of the spot-check draws, for reproducible simulations; `None`
    /// draws the seed from the OS.
    pub seed: Option<u64>,
    /// Replicas of a unit also go to distinct networks (/24 for IPv4, /48
    /// for IPv6), against one person's many accounts on one network.
    pub distinct_networks: bool,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            threshold: 10,
            spot_check: 0.1,
            daily_quota_per_slot: 10_000,
            seed: None,
            distinct_networks: false,
        }
    }
}

/// [`Trust`] and the random source of its spot checks.
struct TrustState {
    config: Trust,
    rng: std::sync::Mutex<u64>,
    /// Set by the coordinator, which owns the sandbox.
    comparator: std::sync::OnceLock<Comparator>,
}

impl std::fmt::Debug for TrustState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustState")
            .field("config", &self.config)
            .field("comparator", &self.comparator.get().is_some())
            .finish()
    }
}

impl TrustState {
    fn new(config: Trust) -> TrustState {
        let seed = config.seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS random source works");
            u64::from_le_bytes(b)
        });
        TrustState {
            config,
            rng: std::sync::Mutex::new(seed),
            comparator: std::sync::OnceLock::new(),
        }
    }

    /// Whether this unit gets a spot check: SplitMix64, never visible to
    /// workers.
    fn spot_check(&self) -> bool {
        let mut state = self.rng.lock().expect("not poisoned");
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.config.spot_check
    }

    fn trusted(&self, consecutive_valid: i64) -> bool {
        consecutive_valid >= self.config.threshold as i64
    }
}

fn decode_err(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("bad {what} in the database: {value:?}").into())
}

fn job_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|_| decode_err("job id", s))
}

fn hash(s: &str) -> Result<BlobHash> {
    s.parse().map_err(|_| decode_err("hash", s))
}

fn job_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| decode_err("job state", s))
}

fn replica_state(s: &str) -> Result<ReplicaState> {
    ReplicaState::parse(s).ok_or_else(|| decode_err("replica state", s))
}

/// The verdict stored with a returned replica.
fn verdict(row: &sqlx::sqlite::SqliteRow) -> Result<Option<Verdict>> {
    let fuel: Option<i64> = row.try_get("fuel_used")?;
    let Some(fuel) = fuel else { return Ok(None) };
    let mut fuel = fuel as u64;
    let mut output_hash: Option<String> = row.try_get("output_hash")?;
    if row.try_get::<bool, _>("compare")? {
        // Equivalent outputs are one vote, and equivalent outputs may take
        // different paths: the class alone must agree.
        let class: Option<String> = row.try_get("output_class")?;
        output_hash = class.or(output_hash);
        fuel = 0;
    }
    let kind: Option<String> = row.try_get("failure_kind")?;
    Ok(match (output_hash, kind) {
        (Some(h), _) => Some(Verdict::Output {
            hash: hash(&h)?,
            fuel,
        }),
        (None, Some(k)) => {
            let kind = FailureKind::parse(&k).ok_or_else(|| decode_err("failure kind", &k))?;
            kind.is_deterministic()
                .then_some(Verdict::Failure { kind, fuel })
        }
        (None, None) => None,
    })
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings
    /// its schema up to date.
    pub async fn open_sqlite(path: &Path, trust: Trust) -> Result<Store> {
        let trust = Arc::new(TrustState::new(trust));
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every acknowledged result is on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Batched statements differ in their number of rows, so each
            // size is its own prepared statement: keep many.
            .statement_cache_capacity(1024)
            // Statement journals in memory.
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A ping before every transaction costs a round trip to the
            // database thread; a broken local file shows at the next
            // statement anyway.
            .test_before_acquire(false)
            // The writer's page cache: 16 MiB (negative: KiB) instead of
            // SQLite's 2 MiB; readers keep the default.
            .connect_with(options.clone().pragma("cache_size", "-16384"))
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (writes, queue) = mpsc::channel(4 * WRITE_BATCH);
        // The group-commit task runs on a thread of its own: on the shared
        // runtime, every statement's completion waits behind the ready
        // request tasks before the next statement goes out (measured:
        // milliseconds per statement under load).
        let pool = write.clone();
        let writer_trust = trust.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer(pool, writer_trust, queue)),
                    Err(e) => tracing::error!(error = %e, "cannot start the store's writer"),
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Store {
            write,
            read,
            trust,
            writes,
        })
    }

    // ---- blobs ----

    pub async fn put_blob(&self, bytes: &[u8], now: i64) -> Result<BlobHash> {
        let h = BlobHash::of(bytes);
        sqlx::query(
            "INSERT INTO blobs (hash, size, bytes, created_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(h.to_string())
        .bind(bytes.len() as i64)
        .bind(bytes)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(h)
    }

    pub async fn blob(&self, h: &BlobHash) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT bytes FROM blobs WHERE hash = ?")
            .bind(h.to_string())
            .fetch_optional(&self.read)
            .await
    }

    pub async fn blob_exists(&self, h: &BlobHash) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE hash = ?")
            .bind(h.to_string())
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    // ---- workers ----

    /// How outputs of jobs validated with `compare` are compared; set once.
    pub fn set_comparator(&self, comparator: Comparator) {
        let _ = self.trust.comparator.set(comparator);
    }

    /// The account whose key hashes to `key_hash`.
    pub async fn account_by_key(&self, key_hash: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT id FROM accounts WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.write)
            .await
    }

    pub async fn create_account(
        &self,
        id: &str,
        name: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO accounts (id, name, key_hash, created_ms) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn register_worker(
        &self,
        id: WorkerId,
        name: &str,
        token_hash: &str,
        platform: &Platform,
        slots: u32,
        account: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, name, token_hash, arch, os, engine, slots, created_ms,
                                  last_seen_ms, account_id, quota)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(token_hash)
        .bind(&platform.arch)
        .bind(&platform.os)
        .bind(&platform.engine)
        .bind(slots as i64)
        .bind(now)
        .bind(now)
        .bind(account)
        .bind(i64::from(slots) * self.trust.config.daily_quota_per_slot as i64)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn worker_by_token(&self, token_hash: &str) -> Result<Option<WorkerRow>> {
        let row = sqlx::query(
            "SELECT id, arch, COALESCE(account_id, id) AS account FROM workers WHERE token_hash = ?",
        )
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            Ok(WorkerRow {
                id: WorkerId(id.parse().map_err(|_| decode_err("worker id", &id))?),
                arch: r.try_get("arch")?,
                account: r.try_get("account")?,
                net: None,
            })
        })
        .transpose()
    }

    /// Workers, most recently seen first.
    pub async fn workers(&self, limit: u32, now: i64) -> Result<Vec<WorkerStatus>> {
        let rows = sqlx::query(
            "SELECT id, name, arch, os, slots, created_ms, last_seen_ms, valid_count, invalid_count,
                    error_count, timeout_count, consecutive_valid, credit, recent_credit,
                    account_id, quota, quota_day, leased_today, paused,
                    (SELECT COUNT(*) FROM replicas r WHERE r.worker_id = w.id AND r.state = 'in_progress') AS running
             FROM workers w ORDER BY last_seen_ms DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let today = now.div_euclid(DAY_MS);
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let count = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
                let credit = count("credit")?;
                let used = if r.try_get::<i64, _>("quota_day")? == today {
                    count("leased_today")?
                } else {
                    0
                };
                Ok(WorkerStatus {
                    id: WorkerId(id.parse().map_err(|_| decode_err("worker id", &id))?),
                    name: r.try_get("name")?,
                    arch: r.try_get("arch")?,
                    os: r.try_get("os")?,
                    slots: count("slots")? as u32,
                    created_ms: r.try_get("created_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    valid: count("valid_count")?,
                    invalid: count("invalid_count")?,
                    errors: count("error_count")?,
                    timeouts: count("timeout_count")?,
                    consecutive_valid: count("consecutive_valid")?,
                    trusted: self.trust.trusted(r.try_get("consecutive_valid")?),
                    credit_fuel: credit,
                    credit: credit as f64 / FUEL_PER_CREDIT,
                    recent_credit: recent_credit_per_day(r.try_get("recent_credit")?, now),
                    running: count("running")?,
                    account_id: r.try_get("account_id")?,
                    quota_left: count("quota")?.saturating_sub(used),
                    paused: r.try_get("paused")?,
                })
            })
            .collect()
    }

    /// Accounts by total credit, highest first.
    pub async fn accounts(&self, limit: u32, now: i64) -> Result<Vec<AccountStatus>> {
        let rows = sqlx::query(
            "SELECT a.id, a.name, a.credit, a.recent_credit,
                    (SELECT COUNT(*) FROM workers w WHERE w.account_id = a.id) AS workers
             FROM accounts a ORDER BY a.credit DESC, a.created_ms LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let credit = r.try_get::<i64, _>("credit")?.max(0) as u64;
                Ok(AccountStatus {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    workers: r.try_get::<i64, _>("workers")? as u64,
                    credit_fuel: credit,
                    credit: credit as f64 / FUEL_PER_CREDIT,
                    recent_credit: recent_credit_per_day(r.try_get("recent_credit")?, now),
                })
            })
            .collect()
    }

    // ---- jobs ----

    /// Creates a job. With `units`, the job starts running at once; without,
    /// it waits in `splitting` for the splitter.
    pub async fn create_job(
        &self,
        job: &NewJob,
        units: Option<&[Vec<u8>]>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let state = if units.is_some() {
            JobState::Running
        } else {
            JobState::Splitting
        };
        sqlx::query(
            "INSERT INTO jobs (id, name, module, input, state, fuel, memory_bytes, output_bytes,
                               lease_secs, quorum, max_replicas, adaptive, compare, units_total,
                               created_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job.id.to_string())
        .bind(&job.name)
        .bind(job.module.to_string())
        .bind(job.input.map(|h| h.to_string()))
        .bind(state.as_str())
        .bind(job.limits.fuel as i64)
        .bind(job.limits.memory_bytes as i64)
        .bind(job.limits.output_bytes as i64)
        .bind(job.lease_secs as i64)
        .bind(job.validation.quorum as i64)
        .bind(job.validation.max_replicas as i64)
        .bind(job.validation.adaptive)
        .bind(job.validation.compare)
        .bind(units.map_or(0, |u| u.len() as i64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(units) = units {
            for (n, batch) in units.chunks(UNIT_BATCH).enumerate() {
                insert_units(
                    &mut tx,
                    job.id,
                    (n * UNIT_BATCH) as u64,
                    batch,
                    job.validation.quorum,
                )
                .await?;
            }
        }
        tx.commit().await
    }

    /// Adds split units `first_index..` to a job that is splitting.
    pub async fn add_units(
        &self,
        job: JobId,
        first_index: u64,
        units: &[Vec<u8>],
        quorum: u32,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for (n, batch) in units.chunks(UNIT_BATCH).enumerate() {
            insert_units(
                &mut tx,
                job,
                first_index + (n * UNIT_BATCH) as u64,
                batch,
                quorum,
            )
            .await?;
        }
        tx.commit().await
    }

    /// Forgets a half-done split, so that it can start over.
    pub async fn discard_units(&self, job: JobId) -> Result<()> {
        sqlx::query("DELETE FROM units WHERE job_id = ? AND (SELECT state FROM jobs WHERE id = ?) = 'splitting'")
            .bind(job.to_string())
            .bind(job.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Ends a split: the job runs, with `total` units.
    pub async fn finish_split(&self, job: JobId, total: u64, now: i64) -> Result<Effects> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE jobs SET state = 'running', units_total = ? WHERE id = ? AND state = 'splitting'")
            .bind(total as i64)
            .bind(job.to_string())
            .execute(&mut *tx)
            .await?;
        let mut effects = Effects::default();
        complete_if_settled(&mut tx, job, now, &mut effects).await?;
        tx.commit().await?;
        Ok(effects)
    }

    /// Fails a job that cannot go on (bad split, bad reduce).
    pub async fn fail_job(&self, job: JobId, error: &str, now: i64) -> Result<()> {
        self.end_job(job, JobState::Failed, Some(error), now).await
    }

    /// Cancels a job: no more replicas are handed out for it. Returns false
    /// if it had already ended.
    pub async fn cancel_job(&self, job: JobId, now: i64) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_ms = ?
             WHERE id = ? AND state NOT IN ('done', 'failed', 'cancelled')",
        )
        .bind(now)
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE units SET needed = 0 WHERE job_id = ? AND needed > 0")
            .bind(job.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn end_job(
        &self,
        job: JobId,
        state: JobState,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = ?, error = ?, finished_ms = ?
             WHERE id = ? AND state NOT IN ('done', 'failed', 'cancelled')",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now)
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE units SET needed = 0 WHERE job_id = ? AND needed > 0")
            .bind(job.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Stores a reduced job's output and marks it done.
    pub async fn finish_job(&self, job: JobId, output: &[u8], now: i64) -> Result<()> {
        let h = BlobHash::of(output);
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO blobs (hash, size, bytes, created_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(h.to_string())
        .bind(output.len() as i64)
        .bind(output)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', output = ?, finished_ms = ?,
                    output_version = output_version + 1
             WHERE id = ? AND state = 'reducing'",
        )
        .bind(h.to_string())
        .bind(now)
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn jobs_in_state(&self, state: JobState) -> Result<Vec<JobId>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE state = ? ORDER BY created_ms")
                .bind(state.as_str())
                .fetch_all(&self.read)
                .await?;
        ids.iter().map(|s| job_id(s)).collect()
    }

    pub async fn job_row(&self, job: JobId) -> Result<Option<JobRow>> {
        let row = sqlx::query(
            "SELECT id, state, module, input, fuel, memory_bytes, output_bytes, quorum FROM jobs WHERE id = ?",
        )
        .bind(job.to_string())
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| {
            let input: Option<String> = r.try_get("input")?;
            Ok(JobRow {
                id: job_id(r.try_get("id")?)?,
                state: job_state(r.try_get("state")?)?,
                module: hash(r.try_get("module")?)?,
                input: input.as_deref().map(hash).transpose()?,
                limits: Limits {
                    fuel: r.try_get::<i64, _>("fuel")? as u64,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
                    output_bytes: r.try_get::<i64, _>("output_bytes")? as u64,
                },
                quorum: r.try_get::<i64, _>("quorum")? as u32,
            })
        })
        .transpose()
    }

    /// How many replicas were ever issued for a job's units.
    pub async fn replicas_issued(&self, job: JobId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM replicas r JOIN units u ON u.id = r.unit_id WHERE u.job_id = ?",
        )
        .bind(job.to_string())
        .fetch_one(&self.read)
        .await?;
        Ok(n as u64)
    }

    /// The accepted outputs of a job's units, in unit order.
    pub async fn accepted_outputs(&self, job: JobId) -> Result<Vec<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT r.output FROM units u JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? AND u.state = 'accepted' ORDER BY u.idx",
        )
        .bind(job.to_string())
        .fetch_all(&self.write)
        .await
    }

    pub async fn job_status(&self, job: JobId) -> Result<Option<JobStatus>> {
        let row = sqlx::query(&format!("{JOB_STATUS_SELECT} WHERE j.id = ?"))
            .bind(job.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(job_status).transpose()
    }

    pub async fn job_statuses(&self, limit: u32) -> Result<Vec<JobStatus>> {
        let rows = sqlx::query(&format!(
            "{JOB_STATUS_SELECT} ORDER BY j.created_ms DESC LIMIT ?"
        ))
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_status).collect()
    }

    pub async fn units(
        &self,
        job: JobId,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UnitStatus>> {
        let rows = sqlx::query(
            "SELECT u.id, u.idx, u.state, u.error,
                    (SELECT COUNT(*) FROM replicas r WHERE r.unit_id = u.id) AS replicas
             FROM units u WHERE u.job_id = ? AND (? IS NULL OR u.state = ?)
             ORDER BY u.idx LIMIT ?",
        )
        .bind(job.to_string())
        .bind(state)
        .bind(state)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnitStatus {
                    id: UnitId(r.try_get("id")?),
                    index: r.try_get::<i64, _>("idx")? as u64,
                    state: r.try_get("state")?,
                    replicas: r.try_get::<i64, _>("replicas")? as u32,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    // ---- scheduling ----

    /// Leases up to `max` replicas to `worker`: units that want replicas,
    /// oldest first, never a unit the worker already holds or held, and only
    /// units whose replicas run on the worker's architecture. Group-committed
    /// with other writes (see [`Store::record_result`]).
    pub async fn lease(&self, worker: &WorkerRow, max: u32, now: i64) -> Result<Vec<LeaseRow>> {
        let (reply, answer) = oneshot::channel();
        let request = LeaseRequest {
            worker: worker.clone(),
            max,
            now,
        };
        self.writes
            .send(Pending::Lease { request, reply })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Serves `requests` in this order in one transaction, as one batch of
    /// the group-commit task would, but without waiting for other writes:
    /// what a batch holds is then chosen by the caller, not by timing, so a
    /// simulation driving the store is deterministic. At most
    /// [`WRITE_BATCH`] requests.
    pub async fn lease_together(
        &self,
        requests: &[(WorkerRow, u32)],
        now: i64,
    ) -> Result<Vec<Vec<LeaseRow>>> {
        assert!(requests.len() <= WRITE_BATCH, "at most WRITE_BATCH requests");
        let requests: Vec<LeaseRequest> = requests
            .iter()
            .map(|(worker, max)| LeaseRequest {
                worker: worker.clone(),
                max: *max,
                now,
            })
            .collect();
        let refs: Vec<&LeaseRequest> = requests.iter().collect();
        let mut tx = self.write.begin().await?;
        let answers = lease_batch(&mut tx, &self.trust, &refs).await?;
        tx.commit().await?;
        Ok(answers)
    }

    /// Records `uploads` in this order in one transaction, as one batch of
    /// the group-commit task would (see [`Store::lease_together`]).
    pub async fn record_together(&self, uploads: &[Upload], now: i64) -> Result<Vec<UploadAnswer>> {
        assert!(uploads.len() <= WRITE_BATCH, "at most WRITE_BATCH uploads");
        let batch: Vec<(&Upload, i64)> = uploads.iter().map(|u| (u, now)).collect();
        let mut tx = self.write.begin().await?;
        let answers = record_uploads(&mut tx, &self.trust, &batch).await?;
        tx.commit().await?;
        Ok(answers)
    }

    /// Times out every lease whose deadline has passed and settles its unit
    /// again (which usually asks for a replacement replica).
    pub async fn expire_leases(&self, now: i64) -> Result<(usize, Effects)> {
        let mut tx = self.write.begin().await?;
        let expired = sqlx::query(
            "UPDATE replicas SET state = 'timed_out'
             WHERE state = 'in_progress' AND deadline_ms < ? RETURNING unit_id, worker_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut settling = Settling::default();
        for r in &expired {
            settling
                .worker(r.try_get("worker_id")?)
                .broke_streak(Counter::Timeouts);
            settling.units.push(r.try_get("unit_id")?);
        }
        let effects = settling.apply(&mut tx, &self.trust, now).await?;
        tx.commit().await?;
        Ok((expired.len(), effects))
    }

    /// Gives back a lease `worker` holds and has not run: the unit wants a
    /// replica again at once, and the worker is not counted a timeout.
    pub async fn release(
        &self,
        worker: WorkerId,
        replica: ReplicaId,
        now: i64,
    ) -> Result<Result<Effects, Refusal>> {
        let mut tx = self.write.begin().await?;
        let row: Option<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT unit_id, worker_id, state, deadline_ms FROM replicas WHERE id = ?",
        )
        .bind(replica.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((unit, owner, state, deadline)) = row else {
            return Ok(Err(Refusal::NoSuchReplica));
        };
        if owner != worker.to_string() {
            return Ok(Err(Refusal::NotYours));
        }
        if state != ReplicaState::InProgress.as_str() || deadline < now {
            // Returned, timed out or released before: nothing to give back.
            // A lease that ran out is a timeout, not a release, even if
            // the sweep has not marked it yet.
            return Ok(Ok(Effects::default()));
        }
        sqlx::query(
            "UPDATE replicas SET state = 'released' WHERE id = ? AND state = 'in_progress'",
        )
        .bind(replica.0)
        .execute(&mut *tx)
        .await?;
        let settling = Settling {
            units: vec![unit],
            ..Settling::default()
        };
        let effects = settling.apply(&mut tx, &self.trust, now).await?;
        tx.commit().await?;
        Ok(Ok(effects))
    }

    /// A worker's heartbeat: records how far each of its running replicas
    /// has got, and pushes back the deadline of each that made progress
    /// since the last beat to a full lease period from now (at most
    /// [`MAX_LEASE_PERIODS`] periods after it was leased: progress buys
    /// time, not a unit forever). A paused worker's units make no progress,
    /// so their leases run out as they would have. Replicas reported that
    /// the worker no longer holds, or whose job ended, come back as gone.
    pub async fn heartbeat(
        &self,
        worker: WorkerId,
        beat: Heartbeat,
        now: i64,
    ) -> Result<HeartbeatResponse> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Pending::Heartbeat {
                worker,
                beat,
                now,
                reply,
            })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Records what a worker returned for one of its replicas and settles
    /// the unit, acknowledging only after the commit.
    ///
    /// Uploads and work requests are group-committed: a single task takes
    /// every such write that is waiting and applies them all in one
    /// transaction with a handful of set-wise statements, so the
    /// per-transaction and per-statement costs are shared by the batch
    /// instead of paid by each request.
    pub async fn record_result(
        &self,
        upload: Upload,
        now: i64,
    ) -> Result<Result<(UploadStatus, Effects), Refusal>> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Pending::Upload { upload, now, reply })
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Records several results, answering each as [`Store::record_result`]
    /// would; queued together, they usually share one transaction.
    pub async fn record_results(
        &self,
        uploads: Vec<Upload>,
        now: i64,
    ) -> Vec<Result<UploadAnswer>> {
        let mut answers = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let (reply, answer) = oneshot::channel();
            let queued = self
                .writes
                .send(Pending::Upload { upload, now, reply })
                .await;
            answers.push(queued.map(|()| answer));
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or(Err(sqlx::Error::WorkerCrashed)),
                Err(_) => Err(sqlx::Error::WorkerCrashed),
            });
        }
        results
    }
}

/// One uploaded result, as the store records it.
#[derive(Clone, Debug)]
pub struct Upload {
    pub worker: WorkerId,
    pub replica: ReplicaId,
    pub outcome: Outcome,
    pub fuel_used: u64,
}

pub type UploadAnswer = Result<(UploadStatus, Effects), Refusal>;

/// A work request, as the store serves it.
#[derive(Debug)]
struct LeaseRequest {
    worker: WorkerRow,
    max: u32,
    now: i64,
}

/// A write waiting for the group-commit task, with where its answer goes.
#[derive(Debug)]
enum Pending {
    Upload {
        upload: Upload,
        now: i64,
        reply: oneshot::Sender<Result<UploadAnswer>>,
    },
    Lease {
        request: LeaseRequest,
        reply: oneshot::Sender<Result<Vec<LeaseRow>>>,
    },
    Heartbeat {
        worker: WorkerId,
        beat: Heartbeat,
        now: i64,
        reply: oneshot::Sender<Result<HeartbeatResponse>>,
    },
}

#[derive(Debug)]
enum Answer {
    Upload(UploadAnswer),
    Lease(Vec<LeaseRow>),
    Heartbeat(HeartbeatResponse),
}

impl Pending {
    fn answer(self, answer: Result<Answer>) {
        // A receiver that is gone (the client hung up) needs no answer.
        match (self, answer) {
            (Pending::Upload { reply, .. }, Ok(Answer::Upload(a))) => _ = reply.send(Ok(a)),
            (Pending::Lease { reply, .. }, Ok(Answer::Lease(a))) => _ = reply.send(Ok(a)),
            (Pending::Heartbeat { reply, .. }, Ok(Answer::Heartbeat(a))) => _ = reply.send(Ok(a)),
            (Pending::Upload { reply, .. }, Err(e)) => _ = reply.send(Err(e)),
            (Pending::Lease { reply, .. }, Err(e)) => _ = reply.send(Err(e)),
            (Pending::Heartbeat { reply, .. }, Err(e)) => _ = reply.send(Err(e)),
            (_, Ok(_)) => unreachable!("write_batch answers each write in kind"),
        }
    }
}

/// The group-commit loop: takes every write waiting (up to `WRITE_BATCH`),
/// applies them in one transaction, answers each after the commit. Ends
/// when every `Store` handle is gone.
async fn writer(write: SqlitePool, trust: Arc<TrustState>, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        // A batch taken but not applied in the last turn goes first.
        if batch.is_empty() && queue.recv_many(&mut batch, WRITE_BATCH).await == 0 {
            return;
        }
        let mut conn = match write.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let e = e.to_string();
                for pending in batch.drain(..) {
                    pending.answer(Err(sqlx::Error::Protocol(e.clone())));
                }
                continue;
            }
        };
        // Keep the connection while writes keep coming: giving it back to
        // the pool costs a task hand-off (measured: 3.7 ms per batch on a
        // busy runtime). Give it back at least every HOLD_BATCHES batches
        // so splits, expiry and the other writers get their turn.
        for _ in 0..HOLD_BATCHES {
            apply_batch(&mut conn, &trust, &mut batch).await;
            while batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
        }
    }
}

/// Applies `batch` and answers every write in it, leaving it empty.
async fn apply_batch(conn: &mut SqliteConnection, trust: &TrustState, batch: &mut Vec<Pending>) {
    match write_batch(conn, trust, batch).await {
        Ok(answers) => {
            for (pending, answer) in batch.drain(..).zip(answers) {
                pending.answer(Ok(answer));
            }
        }
        // A database error fails the whole transaction. Apply the writes
        // one by one, so only the one at fault gets the error.
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, writes = batch.len(), "batch failed; applying its writes one at a time");
            for pending in batch.drain(..) {
                let answer = write_batch(conn, trust, std::slice::from_ref(&pending))
                    .await
                    .map(|mut a| a.remove(0));
                pending.answer(answer);
            }
        }
        Err(e) => {
            if let Some(pending) = batch.pop() {
                pending.answer(Err(e));
            }
        }
    }
}

/// Applies a batch of writes in one transaction: uploads first (they free
/// capacity and settle units), then work requests in arrival order.
async fn write_batch(
    conn: &mut SqliteConnection,
    trust: &TrustState,
    batch: &[Pending],
) -> Result<Vec<Answer>> {
    let mut uploads = Vec::new();
    let mut requests = Vec::new();
    let mut beats = Vec::new();
    for p in batch {
        match p {
            Pending::Upload { upload, now, .. } => uploads.push((upload, *now)),
            Pending::Lease { request, .. } => requests.push(request),
            Pending::Heartbeat {
                worker, beat, now, ..
            } => beats.push((*worker, beat, *now)),
        }
    }
    let mut tx = conn.begin().await?;
    let mut upload_answers = record_uploads(&mut tx, trust, &uploads).await?.into_iter();
    let mut beat_answers = Vec::with_capacity(beats.len());
    for (worker, beat, now) in beats {
        beat_answers.push(apply_heartbeat(&mut tx, worker, beat, now).await?);
    }
    let mut beat_answers = beat_answers.into_iter();
    let mut lease_answers = lease_batch(&mut tx, trust, &requests).await?.into_iter();
    tx.commit().await?;
    Ok(batch
        .iter()
        .map(|p| match p {
            Pending::Upload { .. } => {
                Answer::Upload(upload_answers.next().expect("one per upload"))
            }
            Pending::Lease { .. } => Answer::Lease(lease_answers.next().expect("one per request")),
            Pending::Heartbeat { .. } => {
                Answer::Heartbeat(beat_answers.next().expect("one per heartbeat"))
            }
        })
        .collect())
}

/// A heartbeat, applied in the writer's batch (see [`Store::heartbeat`]).
async fn apply_heartbeat(
    tx: &mut Transaction<'_, Sqlite>,
    worker: WorkerId,
    beat: &Heartbeat,
    now: i64,
) -> Result<HeartbeatResponse> {
    let mut answer = HeartbeatResponse {
        now_ms: now,
        ..HeartbeatResponse::default()
    };
    sqlx::query("UPDATE workers SET last_seen_ms = ?, paused = ? WHERE id = ?")
        .bind(now)
        .bind(beat.paused)
        .bind(worker.to_string())
        .execute(&mut **tx)
        .await?;
    let reported: HashMap<i64, u64> = beat
        .running
        .iter()
        .map(|p| (p.replica_id.0, p.fuel_used))
        .collect();
    let mut held = HashSet::new();
    let ids: Vec<i64> = reported.keys().copied().collect();
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.leased_ms, r.deadline_ms, r.progress_fuel, j.lease_secs, j.fuel
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.state = 'in_progress' AND j.state IN ('running', 'reducing', 'done')
               AND r.worker_id = ",
        );
        q.push_bind(worker.to_string()).push(" AND r.id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            let id: i64 = row.try_get("id")?;
            let mut deadline: i64 = row.try_get("deadline_ms")?;
            if deadline < now {
                // Run out, though not yet swept: it is no longer held.
                continue;
            }
            held.insert(id);
            // No run uses more than the job's fuel limit.
            let fuel = reported[&id].min(row.try_get::<i64, _>("fuel")?.max(0) as u64) as i64;
            let before: Option<i64> = row.try_get("progress_fuel")?;
            if fuel > before.unwrap_or(0) {
                let period = row.try_get::<i64, _>("lease_secs")? * 1000;
                let latest = row.try_get::<i64, _>("leased_ms")? + MAX_LEASE_PERIODS * period;
                deadline = deadline.max((now + period).min(latest));
                sqlx::query(
                    "UPDATE replicas SET progress_fuel = ?, progress_ms = ?, deadline_ms = ?
                     WHERE id = ?",
                )
                .bind(fuel)
                .bind(now)
                .bind(deadline)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            }
            answer.leases.push(LeaseDeadline {
                replica_id: ReplicaId(id),
                deadline_ms: deadline,
            });
        }
    }
    answer.gone = beat
        .running
        .iter()
        .map(|p| p.replica_id)
        .filter(|r| !held.contains(&r.0))
        .collect();
    Ok(answer)
}

/// A unit at the head of the queue, as a batch of work requests sees it.
#[derive(Debug)]
struct Candidate {
    unit: i64,
    /// Replicas it still wants, less those this batch has taken.
    needed: i64,
    arch: Option<String>,
    /// Its job uses adaptive replication.
    adaptive: bool,
    /// Its job compares outputs with `compare`, so replicas may run on any
    /// architecture.
    any_arch: bool,
    /// No replica of it was ever issued.
    fresh: bool,
    taken: i64,
    /// Given to a trusted worker alone.
    alone: bool,
    /// `None`: read with the batch's pool, whose replicas held by any
    /// requesting worker are known. `Some(w)`: read for worker `w` alone,
    /// so only `w` is known not to hold it.
    read_for: Option<String>,
}

/// Serves a batch of work requests: per request, the oldest units that
/// still want replicas, never a unit the worker already holds or held, and
/// only units whose replicas run on the worker's architecture. The head of
/// the queue is read once for the batch, and the replicas of the whole batch
/// are inserted, and their units updated, with one statement each.
async fn lease_batch(
    tx: &mut Transaction<'_, Sqlite>,
    trust: &TrustState,
    requests: &[&LeaseRequest],
) -> Result<Vec<Vec<LeaseRow>>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    // A worker holds at most two leases per slot it declared: one running
    // and one queued. A host that takes work and never answers cannot drain
    // the queue beyond that before its leases expire. It also takes at most
    // its daily quota.
    let mut room: HashMap<String, i64> = HashMap::new();
    let mut trusted: HashSet<String> = HashSet::new();
    let mut workers: Vec<String> = requests.iter().map(|r| r.worker.id.to_string()).collect();
    workers.sort_unstable();
    workers.dedup();
    let now = requests.iter().map(|r| r.now).max().unwrap_or_default();
    let today = now.div_euclid(DAY_MS);
    for chunk in workers.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("UPDATE workers SET last_seen_ms = ");
        q.push_bind(now).push(" WHERE id IN (");
        push_list(&mut q, chunk.iter().cloned());
        q.push(
            ") RETURNING id, slots, quota, quota_day, leased_today, consecutive_valid,
                 2 * slots - (SELECT COUNT(*) FROM replicas r
                     WHERE r.worker_id = workers.id AND r.state = 'in_progress') AS room",
        );
        for row in q.build().fetch_all(&mut **tx).await? {
            let id: String = row.try_get("id")?;
            let mut quota: i64 = row.try_get("quota")?;
            if quota <= 0 {
                // Registered before quotas: the full quota.
                quota = row.try_get::<i64, _>("slots")? * trust.config.daily_quota_per_slot as i64;
            }
            let used = if row.try_get::<i64, _>("quota_day")? == today {
                row.try_get::<i64, _>("leased_today")?
            } else {
                0
            };
            let slot_room: i64 = row.try_get("room")?;
            room.insert(id.clone(), slot_room.min(quota - used));
            if trust.trusted(row.try_get("consecutive_valid")?) {
                trusted.insert(id);
            }
        }
    }
    let mut wants = Vec::with_capacity(requests.len());
    for r in requests {
        let room = room.entry(r.worker.id.to_string()).or_default();
        let want = i64::from(r.max).min(*room).max(0);
        *room -= want;
        wants.push(want);
    }
    let total: i64 = wants.iter().sum();
    if total == 0 {
        return Ok(requests.iter().map(|_| Vec::new()).collect());
    }

    // The pool: enough units for every request even if each worker already
    // holds some of them, and which of them the requesting workers'
    // accounts hold (no two replicas of a unit go to one account).
    let limit = 2 * total + 64;
    let mut pool = head_of_queue(tx, None, None, limit).await?;
    let pool_is_full = pool.len() as i64 == limit;
    let mut held: HashSet<(i64, String)> = HashSet::new();
    // Placement keys: every account, and every network prefix when those
    // must differ too.
    let mut keys: Vec<String> = requests
        .iter()
        .flat_map(|r| {
            std::iter::once(account_key(&r.worker.account))
                .chain(r.worker.net.as_deref().map(net_key))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if let (Some(first), Some(last)) = (pool.first(), pool.last()) {
        for (column, prefix) in [("account_id", "a:"), ("net", "n:")] {
            let wanted: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(prefix)).collect();
            if wanted.is_empty() {
                continue;
            }
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(format!(
                "SELECT unit_id, {column} AS k FROM replicas WHERE unit_id BETWEEN "
            ));
            q.push_bind(first.unit)
                .push(" AND ")
                .push_bind(last.unit)
                .push(format!(" AND {column} IN ("));
            // One list carries every key of a batch (2 * WRITE_BATCH <= IN_LIST_MAX).
            push_list(&mut q, wanted.iter().map(|k| k.to_string()));
            q.push(")");
            for row in q.build().fetch_all(&mut **tx).await? {
                let k: String = row.try_get("k")?;
                held.insert((row.try_get("unit_id")?, format!("{prefix}{k}")));
            }
        }
    }

    let mut chosen: Vec<Vec<i64>> = Vec::with_capacity(requests.len());
    for (req, &want) in requests.iter().zip(&wants) {
        let worker = req.worker.id.to_string();
        let taker = Taker {
            keys: std::iter::once(account_key(&req.worker.account))
                .chain(req.worker.net.as_deref().map(net_key))
                .collect(),
            arch: &req.worker.arch,
            trusted: trusted.contains(&worker),
        };
        let mut mine = Vec::new();
        for c in pool.iter_mut() {
            if mine.len() as i64 == want {
                break;
            }
            if c.read_for.as_ref().is_none_or(|w| *w == worker) && take(c, &taker, &mut held) {
                mine.push(c.unit);
            }
        }
        // Rare: this worker's account holds most of the pool. Look past it,
        // for this worker alone.
        if (mine.len() as i64) < want && pool_is_full {
            let after = pool.iter().map(|c| c.unit).max();
            let more =
                head_of_queue(tx, after, Some(&req.worker), want - mine.len() as i64).await?;
            for mut fresh in more {
                if mine.len() as i64 == want {
                    break;
                }
                // An earlier request of this batch may have read it already.
                let c = match pool.iter().position(|c| c.unit == fresh.unit) {
                    Some(i) => &mut pool[i],
                    None => {
                        fresh.read_for = Some(worker.clone());
                        pool.push(fresh);
                        pool.last_mut().expect("just pushed")
                    }
                };
                if take(c, &taker, &mut held) {
                    mine.push(c.unit);
                }
            }
        }
        chosen.push(mine);
    }

    // What the workers need to run their units.
    let mut units: Vec<i64> = chosen.iter().flatten().copied().collect();
    units.sort_unstable();
    units.dedup();
    let mut details: HashMap<i64, sqlx::sqlite::SqliteRow> = HashMap::new();
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT u.id, u.job_id, u.input, j.module, j.fuel, j.memory_bytes, j.output_bytes,
                    j.lease_secs, j.fuel_sampled / NULLIF(j.fuel_samples, 0) AS fuel_estimate
             FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.id IN (",
        );
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            details.insert(row.try_get("id")?, row);
        }
    }
    let mut answers = Vec::with_capacity(requests.len());
    for (req, mine) in requests.iter().zip(&chosen) {
        let mut leases = Vec::with_capacity(mine.len());
        for unit in mine {
            let r = details
                .get(unit)
                .ok_or_else(|| decode_err("lease", "a leased unit vanished"))?;
            leases.push(LeaseRow {
                replica_id: ReplicaId(0),
                unit_id: UnitId(*unit),
                job_id: job_id(r.try_get("job_id")?)?,
                module: hash(r.try_get("module")?)?,
                input: r.try_get("input")?,
                limits: Limits {
                    fuel: r.try_get::<i64, _>("fuel")? as u64,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
                    output_bytes: r.try_get::<i64, _>("output_bytes")? as u64,
                },
                deadline_ms: req.now + r.try_get::<i64, _>("lease_secs")? * 1000,
                fuel_estimate: r
                    .try_get::<Option<i64>, _>("fuel_estimate")?
                    .map(|f| f.max(1) as u64),
            });
        }
        answers.push(leases);
    }

    // (unit, worker) is unique, so the pair names the replica.
    let mut replica_ids: HashMap<(i64, String), i64> = HashMap::new();
    let all: Vec<(&LeaseRow, &LeaseRequest)> = answers
        .iter()
        .zip(requests)
        .flat_map(|(leases, req)| leases.iter().map(move |l| (l, *req)))
        .collect();
    for chunk in all.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO replicas (unit_id, worker_id, account_id, net, state, leased_ms, deadline_ms) ",
        );
        q.push_values(chunk, |mut b, (l, req)| {
            b.push_bind(l.unit_id.0)
                .push_bind(req.worker.id.to_string())
                .push_bind(req.worker.account.clone())
                .push_bind(req.worker.net.clone())
                .push_bind("in_progress")
                .push_bind(req.now)
                .push_bind(l.deadline_ms);
        });
        q.push(" RETURNING id, unit_id, worker_id");
        for row in q.build().fetch_all(&mut **tx).await? {
            replica_ids.insert(
                (row.try_get("unit_id")?, row.try_get("worker_id")?),
                row.try_get("id")?,
            );
        }
    }
    // Replicas leased per job, for the dashboard (a statement per job in
    // the batch, not a trigger per replica).
    let mut per_job: Vec<(String, i64)> = Vec::new();
    for (l, _) in &all {
        let job = l.job_id.to_string();
        match per_job.iter_mut().find(|(j, _)| *j == job) {
            Some((_, n)) => *n += 1,
            None => per_job.push((job, 1)),
        }
    }
    for (job, n) in per_job {
        sqlx::query("UPDATE jobs SET replicas_leased = replicas_leased + ? WHERE id = ?")
            .bind(n)
            .bind(job)
            .execute(&mut **tx)
            .await?;
    }
    let touched: Vec<&Candidate> = pool.iter().filter(|c| c.taken > 0).collect();
    for chunk in touched.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, taken, arch, alone) AS (");
        q.push_values(chunk, |mut b, c| {
            b.push_bind(c.unit)
                .push_bind(c.taken)
                .push_bind(c.arch.clone())
                .push_bind(c.alone);
        });
        q.push(
            ") UPDATE units SET needed = CASE WHEN v.alone THEN 0 ELSE units.needed - v.taken END,
                                quorum = CASE WHEN v.alone THEN 1 ELSE units.quorum END,
                                arch = COALESCE(units.arch, v.arch)
               FROM v WHERE units.id = v.id",
        );
        q.build().execute(&mut **tx).await?;
    }
    // Count the leases against the workers' daily quotas.
    let mut leased: Vec<(String, i64)> = Vec::new();
    for (req, mine) in requests.iter().zip(&chosen) {
        if mine.is_empty() {
            continue;
        }
        let id = req.worker.id.to_string();
        match leased.iter_mut().find(|(w, _)| *w == id) {
            Some((_, n)) => *n += mine.len() as i64,
            None => leased.push((id, mine.len() as i64)),
        }
    }
    for chunk in leased.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, n) AS (");
        q.push_values(chunk, |mut b, (id, n)| {
            b.push_bind(id.clone()).push_bind(*n);
        });
        q.push(") UPDATE workers SET leased_today = CASE WHEN quota_day = ");
        q.push_bind(today)
            .push(" THEN leased_today + v.n ELSE v.n END, quota_day = ")
            .push_bind(today)
            .push(" FROM v WHERE workers.id = v.id");
        q.build().execute(&mut **tx).await?;
    }
    for (leases, req) in answers.iter_mut().zip(requests) {
        let worker = req.worker.id.to_string();
        for l in leases {
            l.replica_id = ReplicaId(
                *replica_ids
                    .get(&(l.unit_id.0, worker.clone()))
                    .ok_or_else(|| decode_err("lease insert", "a replica id was not returned"))?,
            );
        }
    }
    Ok(answers)
}

/// Who is taking units from the pool.
#[derive(Debug)]
struct Taker<'a> {
    /// Its placement keys: a unit has at most one replica per key.
    keys: Vec<String>,
    arch: &'a str,
    trusted: bool,
}

fn account_key(account: &str) -> String {
    format!("a:{account}")
}

fn net_key(net: &str) -> String {
    format!("n:{net}")
}

/// Gives one replica of `c` to a worker if the unit still wants one, runs
/// on the worker's architecture and has no replica in the worker's account.
/// A trusted worker taking a fresh unit of an adaptive job takes it alone.
fn take(c: &mut Candidate, taker: &Taker<'_>, held: &mut HashSet<(i64, String)>) -> bool {
    if c.needed <= 0
        || (!c.any_arch && c.arch.as_deref().is_some_and(|a| a != taker.arch))
        || taker
            .keys
            .iter()
            .any(|k| held.contains(&(c.unit, k.clone())))
    {
        return false;
    }
    for k in &taker.keys {
        held.insert((c.unit, k.clone()));
    }
    if taker.trusted && c.adaptive && c.fresh && c.taken == 0 {
        c.needed = 0;
        c.alone = true;
    } else {
        c.needed -= 1;
    }
    c.taken += 1;
    c.arch.get_or_insert_with(|| taker.arch.to_string());
    true
}

/// Units that want replicas, oldest first, after unit `after`; with
/// `worker`, only those it may take (its architecture, not held by it).
async fn head_of_queue(
    tx: &mut Transaction<'_, Sqlite>,
    after: Option<i64>,
    worker: Option<&WorkerRow>,
    limit: i64,
) -> Result<Vec<Candidate>> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "SELECT u.id, u.needed, u.arch, j.adaptive, j.compare,
                CASE WHEN j.adaptive THEN NOT EXISTS (SELECT 1 FROM replicas f WHERE f.unit_id = u.id)
                     ELSE FALSE END AS fresh
         FROM units u JOIN jobs j ON j.id = u.job_id
         WHERE u.needed > 0 AND j.state = 'running' AND u.id > ",
    );
    q.push_bind(after.unwrap_or(i64::MIN));
    if let Some(w) = worker {
        q.push(" AND (u.arch IS NULL OR j.compare OR u.arch = ")
            .push_bind(w.arch.clone())
            .push(") AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id AND (r.account_id = ")
            .push_bind(w.account.clone())
            .push(" OR r.net = ")
            .push_bind(w.net.clone())
            .push("))");
    }
    q.push(" ORDER BY u.id LIMIT ").push_bind(limit);
    q.build()
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| {
            Ok(Candidate {
                unit: r.try_get("id")?,
                needed: r.try_get("needed")?,
                arch: r.try_get("arch")?,
                adaptive: r.try_get("adaptive")?,
                any_arch: r.try_get("compare")?,
                fresh: r.try_get("fresh")?,
                taken: 0,
                alone: false,
                read_for: None,
            })
        })
        .collect()
}

/// Recorded uploads of a batch, not yet written: (upload, time, state,
/// what it returned, its output class, its unit).
type Recorded<'a> = Vec<(&'a Upload, i64, ReplicaState, Returned, Option<String>, i64)>;

/// Runs a job module's `compare` mode on two outputs: `Some(equivalent)`,
/// or `None` when the module cannot tell (no `compare` mode, a failure).
pub type Comparator = Arc<dyn Fn(&BlobHash, &[u8], &[u8], &[u8]) -> Option<bool> + Send + Sync>;

/// The equivalence class of `output` among the unit's outputs (in the
/// database and earlier in this batch): the class of the first
/// representative the module's `compare` finds equivalent, or a class of
/// its own (its hash). Runs on the writer's thread, so two uploads of one
/// unit are never classified at once. Without a comparator, or when the
/// module cannot compare, classes are byte equality.
async fn classify(
    tx: &mut Transaction<'_, Sqlite>,
    trust: &TrustState,
    module: &str,
    unit: i64,
    output: &[u8],
    recorded: &Recorded<'_>,
) -> Result<String> {
    let own = BlobHash::of(output).to_string();
    let Some(compare) = trust.comparator.get() else {
        return Ok(own);
    };
    // One representative per class: the replicas that head their class.
    let mut reps: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT output_hash, output FROM replicas
         WHERE unit_id = ? AND output IS NOT NULL AND output_class = output_hash
         ORDER BY id",
    )
    .bind(unit)
    .fetch_all(&mut **tx)
    .await?;
    for (u, _, _, returned, class, of_unit) in recorded {
        if *of_unit == unit
            && class.is_some()
            && *class == returned.output_hash
            && let Outcome::Success { output } = &u.outcome
        {
            reps.push((class.clone().unwrap_or_default(), output.to_vec()));
        }
    }
    if reps.iter().any(|(h, _)| *h == own) {
        return Ok(own);
    }
    let module_hash = hash(module)?;
    let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT bytes FROM blobs WHERE hash = ?")
        .bind(module)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(bytes) = bytes else {
        return Ok(own);
    };
    for (class, rep) in &reps {
        if compare(&module_hash, &bytes, rep, output) == Some(true) {
            return Ok(class.clone());
        }
    }
    Ok(own)
}

/// What a replica's row says it returned, for telling a replay from a
/// conflicting upload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Returned {
    output_hash: Option<String>,
    fuel_used: i64,
    failure_kind: Option<String>,
}

/// Records a batch of uploads and settles their units. The effects (jobs to
/// reduce) go with the first accepted answer, so they are acted on once.
async fn record_uploads(
    tx: &mut Transaction<'_, Sqlite>,
    trust: &TrustState,
    batch: &[(&Upload, i64)],
) -> Result<Vec<UploadAnswer>> {
    struct Found {
        unit_id: i64,
        worker_id: String,
        state: ReplicaState,
        returned: Option<Returned>,
        output_limit: u64,
        fuel_limit: u64,
        /// The job's module, when it is validated with `compare`.
        compare_with: Option<String>,
    }
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut found: HashMap<i64, Found> = HashMap::with_capacity(batch.len());
    let mut ids: Vec<i64> = batch.iter().map(|(u, _)| u.replica.0).collect();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.unit_id, r.worker_id, r.state, r.output_hash, r.fuel_used,
                    r.failure_kind, j.output_bytes, j.fuel, j.compare, j.module
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.id IN (",
        );
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            let fuel_used: Option<i64> = row.try_get("fuel_used")?;
            found.insert(
                row.try_get("id")?,
                Found {
                    unit_id: row.try_get("unit_id")?,
                    worker_id: row.try_get("worker_id")?,
                    state: replica_state(row.try_get("state")?)?,
                    returned: fuel_used
                        .map(|fuel_used| -> Result<Returned> {
                            Ok(Returned {
                                output_hash: row.try_get("output_hash")?,
                                fuel_used,
                                failure_kind: row.try_get("failure_kind")?,
                            })
                        })
                        .transpose()?,
                    output_limit: row.try_get::<i64, _>("output_bytes")? as u64,
                    fuel_limit: row.try_get::<i64, _>("fuel")? as u64,
                    compare_with: if row.try_get("compare")? {
                        Some(row.try_get("module")?)
                    } else {
                        None
                    },
                },
            );
        }
    }

    let mut answers = Vec::with_capacity(batch.len());
    let mut recorded = Vec::new();
    let mut settling = Settling::default();
    for &(u, now) in batch {
        let Some(f) = found.get_mut(&u.replica.0) else {
            answers.push(Err(Refusal::NoSuchReplica));
            continue;
        };
        if f.worker_id != u.worker.to_string() {
            answers.push(Err(Refusal::NotYours));
            continue;
        }
        let (output, kind) = match &u.outcome {
            Outcome::Success { output } => (Some(&output[..]), None),
            Outcome::Failure { kind, .. } => (None, Some(*kind)),
        };
        // No honest sandbox returns more than the job's limits allow.
        if output.is_some_and(|o| o.len() as u64 > f.output_limit) || u.fuel_used > f.fuel_limit {
            answers.push(Err(Refusal::OverLimits));
            continue;
        }
        let returned = Returned {
            output_hash: output.map(|o| BlobHash::of(o).to_string()),
            fuel_used: u.fuel_used as i64,
            failure_kind: kind.map(|k| k.as_str().to_string()),
        };
        match f.state {
            ReplicaState::InProgress => {}
            ReplicaState::TimedOut => {
                answers.push(Err(Refusal::Expired));
                continue;
            }
            _ => {
                answers.push(if f.returned.as_ref() == Some(&returned) {
                    Ok((UploadStatus::AlreadyReceived, Effects::default()))
                } else {
                    Err(Refusal::Conflict)
                });
                continue;
            }
        }
        let nondeterministic = kind.is_some_and(|k| !k.is_deterministic());
        f.state = if nondeterministic {
            settling
                .worker(f.worker_id.clone())
                .broke_streak(Counter::Errors);
            ReplicaState::Errored
        } else {
            ReplicaState::Returned
        };
        f.returned = Some(returned.clone());
        settling.units.push(f.unit_id);
        let class = match (&f.compare_with, &u.outcome) {
            (Some(module), Outcome::Success { output }) => {
                Some(classify(tx, trust, module, f.unit_id, output, &recorded).await?)
            }
            _ => None,
        };
        recorded.push((u, now, f.state, returned, class, f.unit_id));
        answers.push(Ok((UploadStatus::Accepted, Effects::default())));
    }

    for chunk in recorded.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "WITH v(id, state, returned_ms, output, output_hash, fuel_used, failure_kind, message,
                    output_class) AS (",
        );
        q.push_values(chunk, |mut b, (u, now, state, returned, class, _)| {
            let (output, message) = match &u.outcome {
                Outcome::Success { output } => (Some(output.to_vec()), None),
                Outcome::Failure { message, .. } => (None, Some(message.clone())),
            };
            b.push_bind(u.replica.0)
                .push_bind(state.as_str())
                .push_bind(*now)
                .push_bind(output)
                .push_bind(returned.output_hash.clone())
                .push_bind(returned.fuel_used)
                .push_bind(returned.failure_kind.clone())
                .push_bind(message)
                .push_bind(class.clone());
        });
        q.push(
            ") UPDATE replicas SET state = v.state, returned_ms = v.returned_ms, output = v.output,
                     output_hash = v.output_hash, fuel_used = v.fuel_used,
                     failure_kind = v.failure_kind, message = v.message,
                     output_class = v.output_class
               FROM v WHERE replicas.id = v.id AND replicas.state = 'in_progress'",
        );
        q.build().execute(&mut **tx).await?;
    }
    let now = batch.iter().map(|(_, now)| *now).max().unwrap_or_default();
    let effects = settling.apply(tx, trust, now).await?;
    if let Some(Ok((_, first))) = answers.iter_mut().find(|a| a.is_ok()) {
        *first = effects;
    }
    Ok(answers)
}

async fn insert_units(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    first_index: u64,
    units: &[Vec<u8>],
    quorum: u32,
) -> Result<()> {
    if units.is_empty() {
        return Ok(());
    }
    let mut builder =
        sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO units (job_id, idx, input, needed) ");
    let job = job.to_string();
    builder.push_values(units.iter().enumerate(), |mut b, (i, input)| {
        b.push_bind(job.clone())
            .push_bind((first_index + i as u64) as i64)
            .push_bind(input.clone())
            .push_bind(quorum as i64);
    });
    builder.build().execute(&mut **tx).await?;
    Ok(())
}

/// Pushes `values` as a comma-separated list of bound parameters (the
/// inside of an `IN (...)`).
fn push_list<'q, T>(q: &mut sqlx::QueryBuilder<'q, Sqlite>, values: impl IntoIterator<Item = T>)
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v);
    }
}

/// How many ids one `IN (...)` list carries, and rows one `VALUES` list:
/// well under SQLite's limit of 32,766 bound parameters per statement.
const IN_LIST_MAX: usize = 512;
const VALUES_MAX: usize = 500;
const _: () = assert!(2 * WRITE_BATCH <= IN_LIST_MAX);

/// The counters of `workers` a settlement changes.
#[derive(Clone, Copy, Debug)]
enum Counter {
    Errors,
    Timeouts,
    Invalid,
}

/// What one transaction changes in one worker's row, written once at the
/// end: `+=` on the counters, the streak of consecutive valid results
/// either extended or restarted, and the daily quota halved per break and
/// doubled per valid result.
#[derive(Clone, Copy, Debug, Default)]
struct WorkerDelta {
    valid: i64,
    invalid: i64,
    errors: i64,
    timeouts: i64,
    credit: i64,
    /// The streak was broken in this transaction: it restarts at `streak`.
    broken: bool,
    /// Valid results since the last break (or since the start).
    streak: i64,
    breaks: u32,
    /// Valid results granted (not counting refunds), for the quota.
    gains: u32,
}

impl WorkerDelta {
    fn valid(&mut self, credit: i64) {
        self.valid += 1;
        self.credit += credit;
        self.streak += 1;
        self.gains += 1;
    }

    /// Takes back a valid judgement that backtracking reopened.
    fn refund(&mut self, credit: i64) {
        self.valid -= 1;
        self.credit -= credit;
    }

    fn broke_streak(&mut self, counter: Counter) {
        match counter {
            Counter::Errors => self.errors += 1,
            Counter::Timeouts => self.timeouts += 1,
            Counter::Invalid => self.invalid += 1,
        }
        self.broken = true;
        self.streak = 0;
        self.breaks += 1;
    }
}

/// The units to settle and the worker counters to change in one
/// transaction. Settling decides every unit from its replicas (see
/// [`validator`]) and applies all decisions with a few set-wise statements,
/// each conditional on the state it leaves, so applying a decision twice
/// changes nothing the second time.
#[derive(Debug, Default)]
struct Settling {
    units: Vec<i64>,
    workers: HashMap<String, WorkerDelta>,
}

/// What settling a batch changed for one job.
#[derive(Debug, Default)]
struct JobCounts {
    job: String,
    accepted: i64,
    failed: i64,
    /// The agreed fuel of the newly accepted units, and how many.
    fuel: i64,
    samples: i64,
}

/// A valid or invalid judgement of a returned replica.
#[derive(Debug)]
struct Judged {
    replica: i64,
    valid: bool,
    worker: String,
    fuel: i64,
}

/// What deciding a batch of units changes.
#[derive(Debug, Default)]
struct Decisions {
    judged: Vec<Judged>,
    needed: Vec<(i64, i64)>,
    /// (unit, winner, error, accepted alone)
    closed: Vec<(i64, Option<i64>, Option<String>, bool)>,
    /// (unit, quorum it needs from now on)
    quorum: Vec<(i64, i64)>,
}

impl Settling {
    fn worker(&mut self, id: String) -> &mut WorkerDelta {
        self.workers.entry(id).or_default()
    }

    async fn apply(
        mut self,
        tx: &mut Transaction<'_, Sqlite>,
        trust: &TrustState,
        now: i64,
    ) -> Result<Effects> {
        let mut effects = Effects::default();
        // Backtracking reopens units, which are then settled again: a loop,
        // bounded because each round only reopens accepted units.
        while !self.units.is_empty() {
            let mut units = std::mem::take(&mut self.units);
            units.sort_unstable();
            units.dedup();
            let (caught, audited) = self
                .settle_round(tx, &units, trust, now, &mut effects)
                .await?;
            self.units = audited;
            if !caught.is_empty() {
                let reopened = self.backtrack(tx, &caught, trust).await?;
                if !reopened.is_empty() {
                    tracing::warn!(workers = ?caught, units = reopened.len(), "caught returning a wrong result: reopening the units accepted on their word");
                    effects.reopened += reopened.len() as u64;
                }
                self.units.extend(reopened);
            }
        }
        self.write_workers(tx, trust, now).await?;
        Ok(effects)
    }

    /// Decides `units` and applies the decisions. Returns the workers just
    /// caught with an invalid result, and units reopened by an audit.
    async fn settle_round(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        units: &[i64],
        trust: &TrustState,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(Vec<String>, Vec<i64>)> {
        let mut d = Decisions::default();
        for chunk in units.chunks(IN_LIST_MAX) {
            // The units, their jobs' policies and every replica, in one
            // statement.
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT r.id, r.unit_id, r.worker_id, r.state, r.output_hash, r.fuel_used,
                        r.failure_kind, r.output_class, j.compare,
                        u.state AS unit_state, u.accepted_replica,
                        COALESCE(u.quorum, j.quorum) AS quorum, j.quorum AS job_quorum,
                        j.max_replicas
                 FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
                 WHERE r.unit_id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(") ORDER BY r.unit_id, r.id");
            let rows = q.build().fetch_all(&mut **tx).await?;
            for unit_rows in rows.chunk_by(|a, b| {
                a.try_get::<i64, _>("unit_id").ok() == b.try_get::<i64, _>("unit_id").ok()
            }) {
                decide_unit(unit_rows, trust, &mut d)?;
            }
        }

        let mut caught = Vec::new();
        for chunk in d.judged.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, state) AS (");
            q.push_values(chunk, |mut b, j| {
                b.push_bind(j.replica).push_bind(if j.valid {
                    ReplicaState::Valid.as_str()
                } else {
                    ReplicaState::Invalid.as_str()
                });
            });
            q.push(
                ") UPDATE replicas SET state = v.state FROM v
                   WHERE replicas.id = v.id AND replicas.state = 'returned'
                   RETURNING replicas.id",
            );
            // Only replicas this statement moved out of `returned` count:
            // credit is granted exactly once.
            let changed: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            for j in chunk.iter().filter(|j| changed.contains(&j.replica)) {
                let w = self.worker(j.worker.clone());
                if j.valid {
                    w.valid(j.fuel);
                } else {
                    w.broke_streak(Counter::Invalid);
                    if !caught.contains(&j.worker) {
                        caught.push(j.worker.clone());
                    }
                }
            }
        }

        set_on_open_units(tx, "quorum", &d.quorum).await?;
        set_on_open_units(tx, "needed", &d.needed).await?;

        // Per job: units newly accepted and failed, and the fuel of the
        // accepted ones (the estimate a running unit's progress is told in).
        let winner_fuel: HashMap<i64, i64> = d.judged.iter().map(|j| (j.replica, j.fuel)).collect();
        let mut counts: Vec<JobCounts> = Vec::new();
        let mut audited = Vec::new();
        for chunk in d.closed.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "WITH v(id, state, accepted_replica, error, alone) AS (",
            );
            q.push_values(chunk, |mut b, (unit, winner, error, alone)| {
                b.push_bind(*unit)
                    .push_bind(if winner.is_some() {
                        "accepted"
                    } else {
                        "failed"
                    })
                    .push_bind(*winner)
                    .push_bind(error.clone())
                    .push_bind(*alone);
            });
            q.push(
                ") UPDATE units SET state = v.state, needed = 0,
                          accepted_replica = v.accepted_replica, error = v.error, alone = v.alone
                   FROM v WHERE units.id = v.id AND units.state = 'open'
                   RETURNING units.job_id, units.state, units.accepted_replica",
            );
            for row in q.build().fetch_all(&mut **tx).await? {
                let job: String = row.try_get("job_id")?;
                let i = match counts.iter().position(|c| c.job == job) {
                    Some(i) => i,
                    None => {
                        counts.push(JobCounts {
                            job,
                            ..JobCounts::default()
                        });
                        counts.len() - 1
                    }
                };
                let c = &mut counts[i];
                if row.try_get::<String, _>("state")? == "accepted" {
                    c.accepted += 1;
                    let winner: Option<i64> = row.try_get("accepted_replica")?;
                    if let Some(fuel) = winner.and_then(|w| winner_fuel.get(&w)) {
                        c.fuel += fuel;
                        c.samples += 1;
                    }
                } else {
                    c.failed += 1;
                }
            }
        }
        for JobCounts {
            job,
            accepted,
            failed,
            fuel,
            samples,
        } in counts
        {
            sqlx::query(
                "UPDATE jobs SET units_accepted = units_accepted + ?, units_failed = units_failed + ?,
                        fuel_sampled = fuel_sampled + ?, fuel_samples = fuel_samples + ?
                 WHERE id = ?",
            )
            .bind(accepted)
            .bind(failed)
            .bind(fuel)
            .bind(samples)
            .bind(&job)
            .execute(&mut **tx)
            .await?;
            let reopened = self.audit(tx, &job).await?;
            if reopened.is_empty() {
                complete_if_settled(tx, job_id(&job)?, now, effects).await?;
            }
            audited.extend(reopened);
        }
        Ok((caught, audited))
    }

    /// Once per adaptive job, when its last unit settles and before its
    /// output is produced: the last unit each worker vouched for alone gets
    /// a second replica. A worker that cheats whenever it is trusted is
    /// caught by it before the output exists, and backtracking redoes its
    /// other units; it costs at most one replica per worker and job.
    async fn audit(&mut self, tx: &mut Transaction<'_, Sqlite>, job: &str) -> Result<Vec<i64>> {
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE id = ? AND adaptive AND NOT audited
               AND state = 'running' AND units_accepted + units_failed = units_total",
        )
        .bind(job)
        .fetch_one(&mut **tx)
        .await?;
        if due == 0 {
            return Ok(Vec::new());
        }
        sqlx::query("UPDATE jobs SET audited = TRUE WHERE id = ?")
            .bind(job)
            .execute(&mut **tx)
            .await?;
        let units: Vec<i64> = sqlx::query_scalar(
            "SELECT MAX(u.id) FROM units u JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? AND u.state = 'accepted' AND u.alone GROUP BY r.worker_id",
        )
        .bind(job)
        .fetch_all(&mut **tx)
        .await?;
        self.reopen(tx, &units, &[]).await
    }

    /// Reopens every accepted unit that one of `caught` voted for without a
    /// trusted worker confirming it (see [`Settling::reopen`]).
    async fn backtrack(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        caught: &[String],
        trust: &TrustState,
    ) -> Result<Vec<i64>> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT DISTINCT r.unit_id FROM replicas r JOIN units u ON u.id = r.unit_id
             WHERE r.state = 'valid' AND u.state = 'accepted' AND r.worker_id IN (",
        );
        push_list(&mut q, caught.iter().cloned());
        q.push(
            ") AND NOT EXISTS (
                 SELECT 1 FROM replicas o JOIN workers w ON w.id = o.worker_id
                 WHERE o.unit_id = r.unit_id AND o.state = 'valid'
                   AND o.worker_id <> r.worker_id AND w.consecutive_valid >= ",
        );
        q.push_bind(trust.config.threshold as i64);
        q.push(" AND o.worker_id NOT IN (");
        push_list(&mut q, caught.iter().cloned());
        q.push("))");
        let units: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
        self.reopen(tx, &units, caught).await
    }

    /// Reopens accepted `units`: the replicas of `discard` (caught workers)
    /// stop being votes, every other judged replica is judged again (an
    /// honest one outvoted by colluders included), credit granted is taken
    /// back, and each unit needs a quorum of at least two. A job already
    /// reducing or done runs again; its output version goes up when it is
    /// reduced anew. Returns the units reopened.
    async fn reopen(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        units: &[i64],
        discard: &[String],
    ) -> Result<Vec<i64>> {
        let mut reopened = Vec::new();
        for chunk in units.chunks(IN_LIST_MAX) {
            for judged_as in ["valid", "invalid"] {
                let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                    "UPDATE replicas SET state = CASE WHEN worker_id IN (",
                );
                // An empty list would not be SQL everywhere; '' is no worker.
                push_list(
                    &mut q,
                    std::iter::once(String::new()).chain(discard.iter().cloned()),
                );
                q.push(") THEN 'discarded' ELSE 'returned' END WHERE state = ")
                    .push_bind(judged_as)
                    .push(" AND unit_id IN (");
                push_list(&mut q, chunk.iter().copied());
                q.push(") RETURNING worker_id, fuel_used");
                for row in q.build().fetch_all(&mut **tx).await? {
                    if judged_as == "valid" {
                        let fuel: Option<i64> = row.try_get("fuel_used")?;
                        self.worker(row.try_get("worker_id")?)
                            .refund(fuel.unwrap_or(0));
                    }
                }
            }
            // The accepted fuel of these units leaves their jobs' estimate.
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT u.job_id, SUM(r.fuel_used) AS fuel, COUNT(*) AS n
                 FROM units u JOIN replicas r ON r.id = u.accepted_replica
                 WHERE u.state = 'accepted' AND u.id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(") GROUP BY u.job_id");
            for row in q.build().fetch_all(&mut **tx).await? {
                let fuel = row.try_get::<Option<i64>, _>("fuel")?.unwrap_or(0);
                let n = row.try_get::<i64, _>("n")?;
                // Only accepted units with a judged winner were sampled:
                // never below zero.
                sqlx::query(
                    "UPDATE jobs SET
                        fuel_sampled = CASE WHEN fuel_sampled > ? THEN fuel_sampled - ? ELSE 0 END,
                        fuel_samples = CASE WHEN fuel_samples > ? THEN fuel_samples - ? ELSE 0 END
                     WHERE id = ?",
                )
                .bind(fuel)
                .bind(fuel)
                .bind(n)
                .bind(n)
                .bind(row.try_get::<String, _>("job_id")?)
                .execute(&mut **tx)
                .await?;
            }
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE units SET state = 'open', needed = 0, accepted_replica = NULL, alone = FALSE,
                        quorum = (SELECT CASE WHEN j.quorum < 2 THEN 2 ELSE j.quorum END
                                  FROM jobs j WHERE j.id = units.job_id)
                 WHERE state = 'accepted' AND id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(") RETURNING id, job_id");
            for row in q.build().fetch_all(&mut **tx).await? {
                reopened.push((
                    row.try_get::<i64, _>("id")?,
                    row.try_get::<String, _>("job_id")?,
                ));
            }
        }
        let mut jobs: Vec<(String, i64)> = Vec::new();
        for (_, job) in &reopened {
            match jobs.iter_mut().find(|(j, _)| j == job) {
                Some((_, n)) => *n += 1,
                None => jobs.push((job.clone(), 1)),
            }
        }
        for (job, n) in jobs {
            sqlx::query(
                "UPDATE jobs SET units_accepted = units_accepted - ?,
                        state = CASE WHEN state IN ('reducing', 'done') THEN 'running' ELSE state END,
                        finished_ms = CASE WHEN state IN ('reducing', 'done') THEN NULL ELSE finished_ms END
                 WHERE id = ?",
            )
            .bind(n)
            .bind(&job)
            .execute(&mut **tx)
            .await?;
        }
        Ok(reopened.into_iter().map(|(u, _)| u).collect())
    }

    /// Writes the worker counters, quotas and credit, and the credit of
    /// their accounts.
    async fn write_workers(
        self,
        tx: &mut Transaction<'_, Sqlite>,
        trust: &TrustState,
        now: i64,
    ) -> Result<()> {
        let growth = recent_credit_growth(now);
        let per_slot = trust.config.daily_quota_per_slot as i64;
        let workers: Vec<(String, WorkerDelta)> = self.workers.into_iter().collect();
        let mut accounts: HashMap<String, (i64, f64)> = HashMap::new();
        for chunk in workers.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "WITH v(id, valid, invalid, errors, timeouts, credit, recent, broken, streak, div, mul) AS (",
            );
            q.push_values(chunk, |mut b, (id, d)| {
                b.push_bind(id.clone())
                    .push_bind(d.valid)
                    .push_bind(d.invalid)
                    .push_bind(d.errors)
                    .push_bind(d.timeouts)
                    .push_bind(d.credit)
                    .push_bind(d.credit as f64 / FUEL_PER_CREDIT * growth)
                    .push_bind(d.broken)
                    .push_bind(d.streak)
                    .push_bind(1i64 << d.breaks.min(30))
                    .push_bind(1i64 << d.gains.min(30));
            });
            q.push(
                ") UPDATE workers SET valid_count = valid_count + v.valid,
                          invalid_count = invalid_count + v.invalid,
                          error_count = error_count + v.errors,
                          timeout_count = timeout_count + v.timeouts,
                          credit = workers.credit + v.credit,
                          recent_credit = workers.recent_credit + v.recent,
                          consecutive_valid = CASE WHEN v.broken THEN v.streak
                                                   ELSE consecutive_valid + v.streak END,
                          quota = CASE
                              WHEN quota / v.div * v.mul > slots * ",
            );
            q.push_bind(per_slot)
                .push(" THEN slots * ")
                .push_bind(per_slot)
                .push(
                    " WHEN quota / v.div * v.mul < slots THEN slots
                      ELSE quota / v.div * v.mul END
                   FROM v WHERE workers.id = v.id
                   RETURNING workers.id, workers.account_id",
                );
            for row in q.build().fetch_all(&mut **tx).await? {
                let Some(account) = row.try_get::<Option<String>, _>("account_id")? else {
                    continue;
                };
                let id: String = row.try_get("id")?;
                if let Some((_, d)) = chunk.iter().find(|(w, _)| *w == id) {
                    let e = accounts.entry(account).or_default();
                    e.0 += d.credit;
                    e.1 += d.credit as f64 / FUEL_PER_CREDIT * growth;
                }
            }
        }
        let accounts: Vec<(String, (i64, f64))> =
            accounts.into_iter().filter(|(_, (c, _))| *c != 0).collect();
        for chunk in accounts.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, credit, recent) AS (");
            q.push_values(chunk, |mut b, (id, (credit, recent))| {
                b.push_bind(id.clone())
                    .push_bind(*credit)
                    .push_bind(*recent);
            });
            q.push(
                ") UPDATE accounts SET credit = accounts.credit + v.credit,
                          recent_credit = accounts.recent_credit + v.recent
                   FROM v WHERE accounts.id = v.id",
            );
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Recent-average credit with a half-life of 7 days, kept as one growing
/// number per row so that adding credit needs no read: a credit granted at
/// time t is stored as `credit × 2^((t − EPOCH) / H)`, and the sum is
/// scaled back by `2^(−(now − EPOCH) / H)` when read.
const RECENT_HALF_LIFE_MS: f64 = 7.0 * 86_400_000.0;
/// 2026-01-01T00:00:00Z.
const RECENT_EPOCH_MS: f64 = 1_767_225_600_000.0;

fn recent_credit_growth(now: i64) -> f64 {
    ((now as f64 - RECENT_EPOCH_MS) / RECENT_HALF_LIFE_MS).exp2()
}

/// Credits per day, from the stored recent-credit sum, as of `now`.
pub fn recent_credit_per_day(stored: f64, now: i64) -> f64 {
    // The decayed sum of credits, divided by the mean age weight of an
    // exponential average with half-life H: ln 2 / H per day.
    stored / recent_credit_growth(now) * std::f64::consts::LN_2 / 7.0
}

/// Sets `column` (a name from this module, never from input) of the open
/// units among `values` (unit, value), with one statement per chunk.
async fn set_on_open_units(
    tx: &mut Transaction<'_, Sqlite>,
    column: &'static str,
    values: &[(i64, i64)],
) -> Result<()> {
    for chunk in values.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, value) AS (");
        q.push_values(chunk, |mut b, (unit, value)| {
            b.push_bind(*unit).push_bind(*value);
        });
        q.push(format!(
            ") UPDATE units SET {column} = v.value FROM v
               WHERE units.id = v.id AND units.state = 'open'"
        ));
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Decides one unit from its rows (one per replica, with the unit's and
/// job's columns) and notes what to change.
fn decide_unit(
    rows: &[sqlx::sqlite::SqliteRow],
    trust: &TrustState,
    d: &mut Decisions,
) -> Result<()> {
    let Some(unit) = rows.first() else {
        return Ok(());
    };
    let unit_id: i64 = unit.try_get("unit_id")?;
    let mut replicas = Vec::with_capacity(rows.len());
    let mut workers = Vec::with_capacity(rows.len());
    for r in rows {
        let state = replica_state(r.try_get("state")?)?;
        if matches!(state, ReplicaState::Discarded | ReplicaState::Released) {
            // Not a vote, and not counted against max_replicas: its worker
            // was caught cheating elsewhere, or gave the lease back.
            continue;
        }
        replicas.push(Replica {
            id: ReplicaId(r.try_get("id")?),
            state,
            verdict: verdict(r)?,
        });
        workers.push(r.try_get::<String, _>("worker_id")?);
    }
    let judged = &mut d.judged;
    let mut judge = |decision: &Decision| {
        for (ids, valid) in [(&decision.valid, true), (&decision.invalid, false)] {
            for id in ids {
                let Some(pos) = replicas.iter().position(|r| r.id == *id) else {
                    continue;
                };
                if replicas[pos].state != ReplicaState::Returned {
                    continue;
                }
                let fuel = match replicas[pos].verdict {
                    Some(Verdict::Output { fuel, .. }) => fuel as i64,
                    _ => 0,
                };
                judged.push(Judged {
                    replica: id.0,
                    valid,
                    worker: workers[pos].clone(),
                    fuel,
                });
            }
        }
    };

    if unit.try_get::<String, _>("unit_state")? != "open" {
        // A replica came back after the unit was settled: judge it against
        // the accepted result, if there is one.
        let accepted: Option<i64> = unit.try_get("accepted_replica")?;
        let reference = accepted
            .and_then(|a| replicas.iter().find(|r| r.id.0 == a))
            .and_then(|r| r.verdict);
        let mut decision = Decision {
            outcome: UnitOutcome::Open { needed: 0 },
            valid: vec![],
            invalid: vec![],
        };
        for r in replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Returned)
        {
            match r.verdict.and_then(|v| reference.map(|a| a == v)) {
                Some(true) => decision.valid.push(r.id),
                Some(false) => decision.invalid.push(r.id),
                None => {}
            }
        }
        judge(&decision);
        return Ok(());
    }

    let mut quorum = unit.try_get::<i64, _>("quorum")? as u32;
    let job_quorum = (unit.try_get::<i64, _>("job_quorum")? as u32).max(2);
    if quorum == 1 && unit.try_get::<i64, _>("job_quorum")? > 1 {
        // Given to a trusted worker alone. Its output is accepted on its
        // word, unless this is one of the secret spot checks; anything else
        // (a failure, an error, a timeout) goes back to the job's quorum.
        let output_back = replicas
            .iter()
            .any(|r| matches!(r.verdict, Some(Verdict::Output { .. })));
        let settled_alone = output_back && !trust.spot_check();
        if !settled_alone
            && (output_back || replicas.iter().any(|r| r.state != ReplicaState::InProgress))
        {
            quorum = job_quorum;
            d.quorum.push((unit_id, quorum as i64));
        }
    }
    let policy = Policy {
        quorum,
        max_replicas: unit.try_get::<i64, _>("max_replicas")? as u32,
    };
    let decision = validator::decide(policy, &replicas);
    judge(&decision);
    match decision.outcome {
        UnitOutcome::Open { needed: n } => d.needed.push((unit_id, n as i64)),
        UnitOutcome::Accepted { winner } => {
            d.closed.push((unit_id, Some(winner.0), None, quorum == 1))
        }
        UnitOutcome::Failed { reason } => d.closed.push((unit_id, None, Some(reason), false)),
    }
    Ok(())
}

/// Moves a running job whose units are all settled to `reducing`, or to
/// `failed` if not one unit was accepted (there is nothing to reduce).
async fn complete_if_settled(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE jobs SET state = 'reducing'
         WHERE id = ? AND state = 'running' AND units_accepted + units_failed = units_total
           AND (units_accepted > 0 OR units_total = 0)",
    )
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        effects.jobs_to_reduce.push(job);
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_ms = ?,
                error = 'every unit failed; for example: ' ||
                        (SELECT u.error FROM units u WHERE u.job_id = jobs.id AND u.state = 'failed' LIMIT 1)
         WHERE id = ? AND state = 'running' AND units_failed = units_total AND units_total > 0",
    )
    .bind(now)
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const JOB_STATUS_SELECT: &str = "
    SELECT j.id, j.name, j.state, j.module, j.units_total, j.units_accepted, j.units_failed,
           j.quorum, j.max_replicas, j.adaptive, j.compare, j.fuel, j.memory_bytes,
           j.output_bytes, j.created_ms, j.finished_ms, j.output, j.error, j.output_version,
           -- From the leases in flight (a partial index), never from all of
           -- a job's units; CROSS JOIN keeps SQLite's planner in that order.
           (SELECT COUNT(*) FROM replicas r CROSS JOIN units u
             WHERE r.state = 'in_progress' AND u.id = r.unit_id AND u.job_id = j.id) AS in_progress,
           CASE WHEN j.units_failed > 0 THEN
               (SELECT u.error FROM units u WHERE u.job_id = j.id AND u.state = 'failed' LIMIT 1)
           END AS unit_error
    FROM jobs j";

fn job_status(r: &sqlx::sqlite::SqliteRow) -> Result<JobStatus> {
    let output: Option<String> = r.try_get("output")?;
    let error: Option<String> = r.try_get("error")?;
    let unit_error: Option<String> = r.try_get("unit_error")?;
    Ok(JobStatus {
        id: job_id(r.try_get("id")?)?,
        name: r.try_get("name")?,
        state: job_state(r.try_get("state")?)?,
        module: hash(r.try_get("module")?)?,
        units_total: r.try_get::<i64, _>("units_total")? as u64,
        units_accepted: r.try_get::<i64, _>("units_accepted")? as u64,
        units_failed: r.try_get::<i64, _>("units_failed")? as u64,
        replicas_in_progress: r.try_get::<i64, _>("in_progress")? as u64,
        validation: Validation {
            quorum: r.try_get::<i64, _>("quorum")? as u32,
            max_replicas: r.try_get::<i64, _>("max_replicas")? as u32,
            adaptive: r.try_get("adaptive")?,
            compare: r.try_get("compare")?,
        },
        limits: Limits {
            fuel: r.try_get::<i64, _>("fuel")? as u64,
            memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
            output_bytes: r.try_get::<i64, _>("output_bytes")? as u64,
        },
        created_ms: r.try_get("created_ms")?,
        finished_ms: r.try_get("finished_ms")?,
        output: output.as_deref().map(hash).transpose()?,
        error: error.or(unit_error.map(|e| format!("some units failed; for example: {e}"))),
        output_version: r.try_get::<i64, _>("output_version")? as u64,
    })
}
