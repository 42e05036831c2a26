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

use crate::validator::{self, Decision, Policy, Replica, ReplicaState, UnitOutcome, Verdict};
use protocol::{
    BlobHash, FailureKind, JobId, JobState, JobStatus, Limits, Outcome, Platform, ReplicaId,
    UnitId, UnitStatus, UploadStatus, Validation, WorkerId, WorkerStatus,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

pub type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

/// How many unit rows one INSERT statement carries.
const UNIT_BATCH: usize = 500;

#[derive(Clone, Debug)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
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
}

/// A worker found by its token.
#[derive(Clone, Debug)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub arch: String,
}

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
    let fuel = fuel as u64;
    let output_hash: Option<String> = row.try_get("output_hash")?;
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
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every acknowledged result is on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Store { write, read })
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

    pub async fn register_worker(
        &self,
        id: WorkerId,
        name: &str,
        token_hash: &str,
        platform: &Platform,
        slots: u32,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, name, token_hash, arch, os, engine, slots, created_ms, last_seen_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn worker_by_token(&self, token_hash: &str) -> Result<Option<WorkerRow>> {
        let row = sqlx::query("SELECT id, arch FROM workers WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            Ok(WorkerRow {
                id: WorkerId(id.parse().map_err(|_| decode_err("worker id", &id))?),
                arch: r.try_get("arch")?,
            })
        })
        .transpose()
    }

    /// Workers, most recently seen first.
    pub async fn workers(&self, limit: u32) -> Result<Vec<WorkerStatus>> {
        let rows = sqlx::query(
            "SELECT id, name, arch, os, slots, created_ms, last_seen_ms, valid_count, invalid_count,
                    error_count, timeout_count, consecutive_valid, credit,
                    (SELECT COUNT(*) FROM replicas r WHERE r.worker_id = w.id AND r.state = 'in_progress') AS running
             FROM workers w ORDER BY last_seen_ms DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let count = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)? as u64) };
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
                    credit: count("credit")?,
                    running: count("running")?,
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
                               lease_secs, quorum, max_replicas, units_total, created_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("UPDATE jobs SET state = 'done', output = ?, finished_ms = ? WHERE id = ? AND state = 'reducing'")
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
    /// units whose replicas run on the worker's architecture.
    pub async fn lease(&self, worker: &WorkerRow, max: u32, now: i64) -> Result<Vec<LeaseRow>> {
        let mut tx = self.write.begin().await?;
        // A worker holds at most two leases per slot it declared: one
        // running and one queued. A host that takes work and never answers
        // cannot drain the queue beyond that before its leases expire.
        let held: i64 = sqlx::query_scalar(
            "UPDATE workers SET last_seen_ms = ? WHERE id = ?
             RETURNING 2 * slots - (SELECT COUNT(*) FROM replicas r
                                    WHERE r.worker_id = workers.id AND r.state = 'in_progress')",
        )
        .bind(now)
        .bind(worker.id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let max = max.min(held.max(0) as u32);
        if max == 0 {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT u.id, u.job_id, u.input, j.module, j.fuel, j.memory_bytes, j.output_bytes, j.lease_secs
             FROM units u JOIN jobs j ON j.id = u.job_id
             WHERE u.needed > 0 AND j.state = 'running'
               AND (u.arch IS NULL OR u.arch = ?)
               AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id AND r.worker_id = ?)
             ORDER BY u.id LIMIT ?",
        )
        .bind(&worker.arch)
        .bind(worker.id.to_string())
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // One INSERT and one UPDATE for the whole batch: each statement is
        // a hand-off to the database thread, the dominant cost here.
        let worker_id = worker.id.to_string();
        let mut leases = Vec::with_capacity(rows.len());
        for r in &rows {
            leases.push(LeaseRow {
                replica_id: ReplicaId(0),
                unit_id: UnitId(r.try_get("id")?),
                job_id: job_id(r.try_get("job_id")?)?,
                module: hash(r.try_get("module")?)?,
                input: r.try_get("input")?,
                limits: Limits {
                    fuel: r.try_get::<i64, _>("fuel")? as u64,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
                    output_bytes: r.try_get::<i64, _>("output_bytes")? as u64,
                },
                deadline_ms: now + r.try_get::<i64, _>("lease_secs")? * 1000,
            });
        }
        let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO replicas (unit_id, worker_id, state, leased_ms, deadline_ms) ",
        );
        insert.push_values(&leases, |mut b, l| {
            b.push_bind(l.unit_id.0)
                .push_bind(worker_id.clone())
                .push_bind("in_progress")
                .push_bind(now)
                .push_bind(l.deadline_ms);
        });
        insert.push(" RETURNING id, unit_id");
        for row in insert.build().fetch_all(&mut *tx).await? {
            let unit: i64 = row.try_get("unit_id")?;
            // (unit, worker) is unique, so the unit names the lease.
            if let Some(l) = leases.iter_mut().find(|l| l.unit_id.0 == unit) {
                l.replica_id = ReplicaId(row.try_get("id")?);
            }
        }
        if leases.iter().any(|l| l.replica_id.0 == 0) {
            return Err(decode_err("lease insert", "a replica id was not returned"));
        }
        let mut update = sqlx::QueryBuilder::<Sqlite>::new(
            "UPDATE units SET needed = needed - 1, arch = COALESCE(arch, ",
        );
        update.push_bind(&worker.arch).push(") WHERE id IN (");
        let mut ids = update.separated(", ");
        for l in &leases {
            ids.push_bind(l.unit_id.0);
        }
        update.push(")");
        update.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(leases)
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
        let mut effects = Effects::default();
        let mut units = Vec::new();
        for r in &expired {
            let worker: String = r.try_get("worker_id")?;
            sqlx::query("UPDATE workers SET timeout_count = timeout_count + 1, consecutive_valid = 0 WHERE id = ?")
                .bind(worker)
                .execute(&mut *tx)
                .await?;
            let unit: i64 = r.try_get("unit_id")?;
            if !units.contains(&unit) {
                units.push(unit);
            }
        }
        for unit in units {
            settle(&mut tx, unit, now, &mut effects).await?;
        }
        tx.commit().await?;
        Ok((expired.len(), effects))
    }

    /// Records what `worker` returned for `replica` and settles the unit.
    pub async fn record_result(
        &self,
        worker: WorkerId,
        replica: ReplicaId,
        outcome: &Outcome,
        fuel_used: u64,
        now: i64,
    ) -> Result<Result<(UploadStatus, Effects), Refusal>> {
        let (output, output_hash, kind, message) = match outcome {
            Outcome::Success { output } => (
                Some(&output[..]),
                Some(BlobHash::of(output).to_string()),
                None,
                None,
            ),
            Outcome::Failure { kind, message } => {
                (None, None, Some(kind.as_str()), Some(message.as_str()))
            }
        };
        let mut tx = self.write.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT r.unit_id, r.worker_id, r.state, r.output_hash, r.fuel_used, r.failure_kind,
                    j.output_bytes, j.fuel
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.id = ?",
        )
        .bind(replica.0)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(Refusal::NoSuchReplica));
        };
        if row.try_get::<String, _>("worker_id")? != worker.to_string() {
            return Ok(Err(Refusal::NotYours));
        }
        let unit_id: i64 = row.try_get("unit_id")?;
        // No honest sandbox returns more than the job's limits allow.
        let output_limit = row.try_get::<i64, _>("output_bytes")? as u64;
        let fuel_limit = row.try_get::<i64, _>("fuel")? as u64;
        if output.is_some_and(|o| o.len() as u64 > output_limit) || fuel_used > fuel_limit {
            return Ok(Err(Refusal::OverLimits));
        }
        match replica_state(row.try_get("state")?)? {
            ReplicaState::InProgress => {}
            ReplicaState::TimedOut => return Ok(Err(Refusal::Expired)),
            _ => {
                let same = row.try_get::<Option<String>, _>("output_hash")? == output_hash
                    && row.try_get::<Option<i64>, _>("fuel_used")? == Some(fuel_used as i64)
                    && row.try_get::<Option<String>, _>("failure_kind")?.as_deref() == kind;
                return Ok(if same {
                    Ok((UploadStatus::AlreadyReceived, Effects::default()))
                } else {
                    Err(Refusal::Conflict)
                });
            }
        }
        let nondeterministic =
            matches!(outcome, Outcome::Failure { kind, .. } if !kind.is_deterministic());
        let state = if nondeterministic {
            ReplicaState::Errored
        } else {
            ReplicaState::Returned
        };
        sqlx::query(
            "UPDATE replicas SET state = ?, returned_ms = ?, output = ?, output_hash = ?,
                    fuel_used = ?, failure_kind = ?, message = ?
             WHERE id = ? AND state = 'in_progress'",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(output)
        .bind(&output_hash)
        .bind(fuel_used as i64)
        .bind(kind)
        .bind(message)
        .bind(replica.0)
        .execute(&mut *tx)
        .await?;
        if nondeterministic {
            sqlx::query("UPDATE workers SET error_count = error_count + 1, consecutive_valid = 0 WHERE id = ?")
                .bind(worker.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let mut effects = Effects::default();
        settle(&mut tx, unit_id, now, &mut effects).await?;
        tx.commit().await?;
        Ok(Ok((UploadStatus::Accepted, effects)))
    }
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

/// Decides a unit from its replicas (see [`validator`]) and applies the
/// decision: replica judgements, worker counters and credit, unit state, job
/// counters. Each change is conditional on the state it leaves, so applying
/// a decision twice changes nothing the second time.
async fn settle(
    tx: &mut Transaction<'_, Sqlite>,
    unit_id: i64,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    // The unit, its job's policy and every replica, in one statement.
    let rows = sqlx::query(
        "SELECT r.id, r.worker_id, r.state, r.output_hash, r.fuel_used, r.failure_kind,
                u.state AS unit_state, u.job_id, u.accepted_replica, j.quorum, j.max_replicas
         FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
         WHERE r.unit_id = ? ORDER BY r.id",
    )
    .bind(unit_id)
    .fetch_all(&mut **tx)
    .await?;
    // Settling follows a change to one of the unit's replicas: there is one.
    let Some(unit) = rows.first() else {
        return Ok(());
    };
    let job = job_id(unit.try_get("job_id")?)?;
    let mut replicas = Vec::with_capacity(rows.len());
    let mut workers = Vec::with_capacity(rows.len());
    for r in &rows {
        replicas.push(Replica {
            id: ReplicaId(r.try_get("id")?),
            state: replica_state(r.try_get("state")?)?,
            verdict: verdict(r)?,
        });
        workers.push(r.try_get::<String, _>("worker_id")?);
    }

    let unit_state: String = unit.try_get("unit_state")?;
    if unit_state != "open" {
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
        judge_replicas(tx, &decision, &replicas, &workers).await?;
        return Ok(());
    }

    let policy = Policy {
        quorum: unit.try_get::<i64, _>("quorum")? as u32,
        max_replicas: unit.try_get::<i64, _>("max_replicas")? as u32,
    };
    let decision = validator::decide(policy, &replicas);
    judge_replicas(tx, &decision, &replicas, &workers).await?;
    match &decision.outcome {
        UnitOutcome::Open { needed } => {
            sqlx::query("UPDATE units SET needed = ? WHERE id = ? AND state = 'open'")
                .bind(*needed as i64)
                .bind(unit_id)
                .execute(&mut **tx)
                .await?;
        }
        UnitOutcome::Accepted { winner } => {
            close_unit(tx, unit_id, job, Some(winner.0), None, now, effects).await?
        }
        UnitOutcome::Failed { reason } => {
            close_unit(tx, unit_id, job, None, Some(reason), now, effects).await?
        }
    }
    Ok(())
}

/// Settles an open unit: accepted with `winner`, or failed with `error`.
/// Counts it in its job once, and moves the job on if it was the last.
async fn close_unit(
    tx: &mut Transaction<'_, Sqlite>,
    unit_id: i64,
    job: JobId,
    winner: Option<i64>,
    error: Option<&str>,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    let accepted = winner.is_some();
    let changed = sqlx::query(
        "UPDATE units SET state = ?, needed = 0, accepted_replica = ?, error = ?
         WHERE id = ? AND state = 'open'",
    )
    .bind(if accepted { "accepted" } else { "failed" })
    .bind(winner)
    .bind(error)
    .bind(unit_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        sqlx::query(
            "UPDATE jobs SET units_accepted = units_accepted + ?, units_failed = units_failed + ?
             WHERE id = ?",
        )
        .bind(i64::from(accepted))
        .bind(i64::from(!accepted))
        .bind(job.to_string())
        .execute(&mut **tx)
        .await?;
        complete_if_settled(tx, job, now, effects).await?;
    }
    Ok(())
}

/// Marks judged replicas valid or invalid and updates their workers: a
/// valid replica earns its fuel as credit, exactly once (the state change
/// and the credit are one conditional step).
async fn judge_replicas(
    tx: &mut Transaction<'_, Sqlite>,
    decision: &Decision,
    replicas: &[Replica],
    workers: &[String],
) -> Result<()> {
    for (ids, valid) in [(&decision.valid, true), (&decision.invalid, false)] {
        for id in ids {
            let Some(pos) = replicas.iter().position(|r| r.id == *id) else {
                continue;
            };
            if replicas[pos].state != ReplicaState::Returned {
                continue;
            }
            let new_state = if valid {
                ReplicaState::Valid
            } else {
                ReplicaState::Invalid
            };
            let changed =
                sqlx::query("UPDATE replicas SET state = ? WHERE id = ? AND state = 'returned'")
                    .bind(new_state.as_str())
                    .bind(id.0)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
            if changed != 1 {
                continue;
            }
            let fuel = match replicas[pos].verdict {
                Some(Verdict::Output { fuel, .. }) => fuel as i64,
                _ => 0,
            };
            let query = if valid {
                sqlx::query(
                    "UPDATE workers SET valid_count = valid_count + 1,
                            consecutive_valid = consecutive_valid + 1, credit = credit + ? WHERE id = ?",
                )
                .bind(fuel)
            } else {
                sqlx::query(
                    "UPDATE workers SET invalid_count = invalid_count + 1, consecutive_valid = 0 WHERE id = ?",
                )
            };
            query.bind(&workers[pos]).execute(&mut **tx).await?;
        }
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
           j.quorum, j.max_replicas, j.fuel, j.memory_bytes, j.output_bytes, j.created_ms,
           j.finished_ms, j.output, j.error,
           (SELECT COUNT(*) FROM replicas r JOIN units u ON u.id = r.unit_id
             WHERE u.job_id = j.id AND r.state = 'in_progress') AS in_progress,
           (SELECT u.error FROM units u WHERE u.job_id = j.id AND u.state = 'failed' LIMIT 1) AS unit_error
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
    })
}
