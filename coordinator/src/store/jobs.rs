//! Jobs and their units: creation, the split's batches, ending a job
//! (failed, cancelled, done with its output), and what people and the
//! background tasks read about them. Writes of a split or a reduce are
//! fenced by their [`Claim`].

use super::claims::{Claim, fence};
use super::settling::{Effects, complete_if_settled};
use super::sql::{count, hash, job_id, job_state, push_rows};
use super::submitters::within_allowance;
use super::{Result, Store, blobs};
use crate::allowance::{Allowance, Usage};
use protocol::{BlobHash, JobId, JobState, JobStatus, Limits, UnitId, UnitStatus, Validation};
use sqlx::{Sqlite, Transaction};

/// How many unit rows one INSERT statement carries.
const UNIT_BATCH: usize = 500;

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
    /// The submitter it belongs to (`submitters.id`); `None` only in tests
    /// of the store that need no owner.
    pub submitter: Option<i64>,
    /// Its priority among its submitter's jobs.
    pub priority: i32,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    state: String,
    module: String,
    input: Option<String>,
    fuel: i64,
    memory_bytes: i64,
    output_bytes: i64,
    quorum: i64,
}

fn limits(fuel: i64, memory_bytes: i64, output_bytes: i64) -> Limits {
    Limits {
        fuel: count(fuel),
        memory_bytes: count(memory_bytes),
        output_bytes: count(output_bytes),
    }
}

impl Store {
    /// Creates a job. With `units`, the job starts running at once; without,
    /// it waits in `splitting` for a splitter to claim it. No limit is
    /// checked (see [`Store::submit_job`]).
    pub async fn create_job(
        &self,
        job: &NewJob,
        units: Option<&[Vec<u8>]>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let stored = stored_bytes(&mut tx, job, units).await?;
        insert_job(&mut tx, job, units, stored, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a job as [`Store::create_job`] does, if it fits in its
    /// submitter's allowance (its own limits over `defaults`); else refuses
    /// it with [`super::Error::OverLimit`], naming the limit, and stores
    /// nothing. The check and the insert are one transaction. A job split
    /// by its module counts one unit here (it needs room for at least one);
    /// its split's units are checked as they are written
    /// ([`Store::add_units`]).
    pub async fn submit_job(
        &self,
        job: &NewJob,
        units: Option<&[Vec<u8>]>,
        defaults: &Allowance,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let stored = stored_bytes(&mut tx, job, units).await?;
        if let Some(submitter) = job.submitter {
            let adding = Usage {
                units: units.map_or(1, |u| u.len() as u64),
                stored_bytes: stored,
            };
            within_allowance(&mut tx, submitter, adding, defaults).await?;
        }
        insert_job(&mut tx, job, units, stored, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds split units `first_index..` to the job of `claim`, if they fit
    /// in its submitter's `max_units` (its own over `defaults`); else
    /// refuses them with [`super::Error::OverLimit`] and adds nothing (the
    /// split then fails the job, naming the limit). While the job splits,
    /// its `units_total` counts the units written so far, which is what
    /// counts against the limit.
    pub async fn add_units(
        &self,
        claim: &Claim,
        first_index: u64,
        units: &[Vec<u8>],
        quorum: u32,
        defaults: &Allowance,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        fence(&mut tx, claim, now).await?;
        let job = claim.job.to_string();
        let submitter: Option<i64> =
            sqlx::query_scalar("SELECT submitter_id FROM jobs WHERE id = ?")
                .bind(&job)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        if let Some(submitter) = submitter {
            let adding = Usage {
                units: units.len() as u64,
                stored_bytes: 0,
            };
            within_allowance(&mut tx, submitter, adding, defaults).await?;
        }
        insert_units(&mut tx, claim.job, first_index, units, quorum).await?;
        sqlx::query("UPDATE jobs SET units_total = ? WHERE id = ? AND state = 'splitting'")
            .bind((first_index + units.len() as u64) as i64)
            .bind(&job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a half-done split of the job of `claim`, so that it can start
    /// over.
    pub async fn discard_units(&self, claim: &Claim, now: i64) -> Result<()> {
        let mut tx = self.write.begin().await?;
        fence(&mut tx, claim, now).await?;
        let job = claim.job.to_string();
        sqlx::query(
            "DELETE FROM units WHERE job_id = ? AND (SELECT state FROM jobs WHERE id = ?) = 'splitting'",
        )
        .bind(&job)
        .bind(&job)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET units_total = 0 WHERE id = ? AND state = 'splitting'")
            .bind(&job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the split of `claim`: the job runs, with `total` units.
    pub async fn finish_split(&self, claim: &Claim, total: u64, now: i64) -> Result<Effects> {
        let mut tx = self.write.begin().await?;
        fence(&mut tx, claim, now).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'running', units_total = ? WHERE id = ? AND state = 'splitting'",
        )
        .bind(total as i64)
        .bind(claim.job.to_string())
        .execute(&mut *tx)
        .await?;
        let mut effects = Effects::default();
        complete_if_settled(&mut tx, claim.job, now, &mut effects).await?;
        tx.commit().await?;
        Ok(effects)
    }

    /// Stores the reduced output of the job of `claim` and marks it done.
    pub async fn finish_job(&self, claim: &Claim, output: &[u8], now: i64) -> Result<()> {
        let mut tx = self.write.begin().await?;
        fence(&mut tx, claim, now).await?;
        let h = blobs::put(&mut tx, output, now).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', output = ?, finished_ms = ?,
                    output_version = output_version + 1
             WHERE id = ? AND state = 'reducing'",
        )
        .bind(h.to_string())
        .bind(now)
        .bind(claim.job.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails the job of `claim`, whose split or reduce cannot go on (a bad
    /// split, a bad reduce): fenced, so a coordinator that lost the claim
    /// cannot fail a job its successor is performing.
    pub async fn fail_duty(&self, claim: &Claim, error: &str, now: i64) -> Result<()> {
        let mut tx = self.write.begin().await?;
        fence(&mut tx, claim, now).await?;
        end_job(&mut tx, claim.job, JobState::Failed, Some(error), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a job: no more replicas are handed out for it. Returns false
    /// if it had already ended.
    pub async fn cancel_job(&self, job: JobId, now: i64) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let ended = end_job(&mut tx, job, JobState::Cancelled, None, now).await?;
        tx.commit().await?;
        Ok(ended)
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
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, state, module, input, fuel, memory_bytes, output_bytes, quorum FROM jobs WHERE id = ?",
        )
        .bind(job.to_string())
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| {
            Ok(JobRow {
                id: job_id(&r.id)?,
                state: job_state(&r.state)?,
                module: hash(&r.module)?,
                input: r.input.as_deref().map(hash).transpose()?,
                limits: limits(r.fuel, r.memory_bytes, r.output_bytes),
                quorum: count(r.quorum) as u32,
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
        Ok(count(n))
    }

    /// The accepted outputs of a job's units, in unit order.
    pub async fn accepted_outputs(&self, job: JobId) -> Result<Vec<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT r.output FROM units u JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? AND u.state = 'accepted' ORDER BY u.idx",
        )
        .bind(job.to_string())
        .fetch_all(&self.write)
        .await?)
    }

    pub async fn job_status(&self, job: JobId) -> Result<Option<JobStatus>> {
        let row: Option<StatusRow> = sqlx::query_as(&format!("{JOB_STATUS_SELECT} WHERE j.id = ?"))
            .bind(job.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.map(StatusRow::into_status).transpose()
    }

    pub async fn job_statuses(&self, limit: u32) -> Result<Vec<JobStatus>> {
        let rows: Vec<StatusRow> = sqlx::query_as(&format!(
            "{JOB_STATUS_SELECT} ORDER BY j.created_ms DESC LIMIT ?"
        ))
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(StatusRow::into_status).collect()
    }

    /// The jobs of `submitter`, newest first.
    pub async fn job_statuses_of(&self, submitter: i64, limit: u32) -> Result<Vec<JobStatus>> {
        let rows: Vec<StatusRow> = sqlx::query_as(&format!(
            "{JOB_STATUS_SELECT} WHERE j.submitter_id = ? ORDER BY j.created_ms DESC LIMIT ?"
        ))
        .bind(submitter)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(StatusRow::into_status).collect()
    }

    pub async fn units(
        &self,
        job: JobId,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UnitStatus>> {
        let rows: Vec<(i64, i64, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT u.id, u.idx, u.state,
                    (SELECT COUNT(*) FROM replicas r WHERE r.unit_id = u.id) AS replicas, u.error
             FROM units u WHERE u.job_id = ? AND (? IS NULL OR u.state = ?)
             ORDER BY u.idx LIMIT ?",
        )
        .bind(job.to_string())
        .bind(state)
        .bind(state)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, index, state, replicas, error)| UnitStatus {
                id: UnitId(id),
                index: count(index),
                state,
                replicas: count(replicas) as u32,
                error,
                // Read apart, for the units that want it (`unit_details`).
                replica_detail: Vec::new(),
            })
            .collect())
    }
}

/// The bytes `job` holds for its submitter's `max_stored_bytes`
/// (migration 0019): its module's size plus its input's, or the total size
/// of the unit inputs it lists.
async fn stored_bytes(
    tx: &mut Transaction<'_, Sqlite>,
    job: &NewJob,
    units: Option<&[Vec<u8>]>,
) -> Result<u64> {
    let blobs: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT size FROM blobs WHERE hash = ?), 0)
              + COALESCE((SELECT size FROM blobs WHERE hash = ?), 0)",
    )
    .bind(job.module.to_string())
    .bind(job.input.map(|h| h.to_string()))
    .fetch_one(&mut **tx)
    .await?;
    let listed: u64 = units.map_or(0, |u| u.iter().map(|i| i.len() as u64).sum());
    Ok(count(blobs) + listed)
}

/// Inserts `job` (and its listed `units`) inside the caller's transaction.
async fn insert_job(
    tx: &mut Transaction<'_, Sqlite>,
    job: &NewJob,
    units: Option<&[Vec<u8>]>,
    stored_bytes: u64,
    now: i64,
) -> Result<()> {
    let state = if units.is_some() {
        JobState::Running
    } else {
        JobState::Splitting
    };
    sqlx::query(
        "INSERT INTO jobs (id, name, module, input, state, fuel, memory_bytes, output_bytes,
                           lease_secs, quorum, max_replicas, adaptive, compare, units_total,
                           created_ms, young_accounts, submitter_id, priority, stored_bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(job.validation.young_accounts)
    .bind(job.submitter)
    .bind(i64::from(job.priority))
    .bind(i64::try_from(stored_bytes).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    if let Some(units) = units {
        insert_units(tx, job.id, 0, units, job.validation.quorum).await?;
    }
    Ok(())
}

/// Ends a job that has not ended yet, inside the caller's transaction; true
/// if this call ended it.
async fn end_job(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    state: JobState,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let ended = sqlx::query(
        "UPDATE jobs SET state = ?, error = COALESCE(?, error), finished_ms = ?
             WHERE id = ? AND state NOT IN ('done', 'failed', 'cancelled')",
    )
    .bind(state.as_str())
    .bind(error)
    .bind(now)
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE units SET needed = 0 WHERE job_id = ? AND needed > 0")
        .bind(job.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(ended == 1)
}

/// Inserts unit inputs `first_index..` of `job`, [`UNIT_BATCH`] rows a
/// statement.
async fn insert_units(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    first_index: u64,
    units: &[Vec<u8>],
    quorum: u32,
) -> Result<()> {
    let job = job.to_string();
    for (n, batch) in units.chunks(UNIT_BATCH).enumerate() {
        let first = first_index + (n * UNIT_BATCH) as u64;
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO units (job_id, idx, input, needed) SELECT * FROM (",
        );
        push_rows(&mut q, 4, batch.iter().enumerate(), |mut b, (i, input)| {
            b.push_bind(job.clone())
                .push_bind((first + i as u64) as i64)
                .push_bind(input.clone())
                .push_bind(quorum as i64);
        });
        // The padding rows are left out.
        q.push(") WHERE column1 IS NOT NULL");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

const JOB_STATUS_SELECT: &str = "
    SELECT j.id, j.name, j.state, j.module, j.units_total, j.units_accepted, j.units_failed,
           j.quorum, j.max_replicas, j.adaptive, j.compare, j.fuel, j.memory_bytes,
           j.output_bytes, j.created_ms, j.finished_ms, j.output, j.error, j.output_version,
           j.young_accounts, j.priority,
           (SELECT s.name FROM submitters s WHERE s.id = j.submitter_id) AS submitter,
           -- One range of the partial index units_wanting_seasoned.
           (SELECT COUNT(*) FROM units u
             WHERE u.job_id = j.id AND u.wants_seasoned AND u.needed > 0) AS waiting_for_seasoned,
           -- From the leases in flight (a partial index), never from all of
           -- a job's units; CROSS JOIN keeps SQLite's planner in that order.
           (SELECT COUNT(*) FROM replicas r CROSS JOIN units u
             WHERE r.state = 'in_progress' AND u.id = r.unit_id AND u.job_id = j.id) AS in_progress,
           CASE WHEN j.units_failed > 0 THEN
               (SELECT u.error FROM units u WHERE u.job_id = j.id AND u.state = 'failed' LIMIT 1)
           END AS unit_error
    FROM jobs j";

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    name: String,
    state: String,
    module: String,
    units_total: i64,
    units_accepted: i64,
    units_failed: i64,
    quorum: i64,
    max_replicas: i64,
    adaptive: bool,
    compare: bool,
    fuel: i64,
    memory_bytes: i64,
    output_bytes: i64,
    created_ms: i64,
    finished_ms: Option<i64>,
    output: Option<String>,
    error: Option<String>,
    output_version: i64,
    young_accounts: bool,
    priority: i64,
    submitter: Option<String>,
    waiting_for_seasoned: i64,
    in_progress: i64,
    unit_error: Option<String>,
}

impl StatusRow {
    fn into_status(self) -> Result<JobStatus> {
        Ok(JobStatus {
            id: job_id(&self.id)?,
            name: self.name,
            state: job_state(&self.state)?,
            module: hash(&self.module)?,
            units_total: count(self.units_total),
            units_accepted: count(self.units_accepted),
            units_failed: count(self.units_failed),
            replicas_in_progress: count(self.in_progress),
            validation: Validation {
                quorum: count(self.quorum) as u32,
                max_replicas: count(self.max_replicas) as u32,
                adaptive: self.adaptive,
                compare: self.compare,
                young_accounts: self.young_accounts,
            },
            limits: limits(self.fuel, self.memory_bytes, self.output_bytes),
            created_ms: self.created_ms,
            finished_ms: self.finished_ms,
            output: self.output.as_deref().map(hash).transpose()?,
            error: self.error.or(self
                .unit_error
                .map(|e| format!("some units failed; for example: {e}"))),
            output_version: count(self.output_version),
            units_waiting_for_seasoned: count(self.waiting_for_seasoned),
            submitter: self.submitter,
            priority: self.priority.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
            // Estimated at a moment, by the caller (`Store::estimates`).
            rate_per_s: None,
            time_left_ms: None,
        })
    }
}
