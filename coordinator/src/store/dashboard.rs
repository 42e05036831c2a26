//! Read-only queries behind the web dashboard (`crate::dashboard`): each an
//! aggregate or a page, never a full scan per refresh.
//!
//! What each one reads, so that it stays fast with 100,000-unit jobs and
//! 1,000 workers:
//! - jobs: the `jobs` table (one row per job, a page of them); leases in
//!   flight through the partial index `replicas_leases`, which holds only
//!   replicas in progress (at most two per worker slot);
//! - workers and accounts: their own small tables;
//! - throughput: one range of `replicas_returned` (migration 0004);
//! - the time left and the submitters' work: `acceptances.rs`;
//! - one job's replica outcomes and accepted units over time: the rows of
//!   `job_outcomes` and `job_accepted_seconds` (migration 0009), which
//!   triggers keep current as replicas and units change state.

use super::{Result, Store};
use crate::credit::recent_per_day as recent_credit_per_day;
use crate::dashboard::{DashboardJob, Fleet, Leader, Rank, ReplicaGroup, RunningReplica};
use protocol::FUEL_PER_CREDIT;
use sqlx::Row;
use std::collections::HashMap;

const JOB_SELECT: &str = "SELECT id, name, state, units_total, units_accepted, units_failed,
        replicas_leased, quorum, max_replicas, adaptive, created_ms, finished_ms, output, output_version, error,
        priority, (SELECT s.name FROM submitters s WHERE s.id = jobs.submitter_id) AS submitter
 FROM jobs";

fn count(r: &sqlx::sqlite::SqliteRow, c: &str) -> Result<u64> {
    Ok(r.try_get::<Option<i64>, _>(c)?.unwrap_or(0).max(0) as u64)
}

fn dashboard_job(r: &sqlx::sqlite::SqliteRow) -> Result<DashboardJob> {
    Ok(DashboardJob {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        state: r.try_get("state")?,
        units_total: count(r, "units_total")?,
        units_accepted: count(r, "units_accepted")?,
        units_failed: count(r, "units_failed")?,
        units_in_progress: 0,
        replicas_in_progress: 0,
        replicas_leased: count(r, "replicas_leased")?,
        quorum: count(r, "quorum")? as u32,
        max_replicas: count(r, "max_replicas")? as u32,
        adaptive: r.try_get("adaptive")?,
        created_ms: r.try_get("created_ms")?,
        finished_ms: r.try_get("finished_ms")?,
        output: r.try_get("output")?,
        output_version: count(r, "output_version")?,
        error: r.try_get("error")?,
        submitter: r.try_get("submitter")?,
        priority: r
            .try_get::<i64, _>("priority")?
            .clamp(i32::MIN.into(), i32::MAX.into()) as i32,
    })
}

/// The ORDER BY terms that rank the rows of table alias `t` by `rank`.
fn rank_order(rank: Rank, t: &str) -> String {
    match rank {
        // The stored recent_credit sorts like the decayed value: every
        // row is scaled back by the same factor when read.
        Rank::Credit => format!("{t}.credit DESC, {t}.recent_credit DESC"),
        Rank::Recent => format!("{t}.recent_credit DESC, {t}.credit DESC"),
    }
}

impl Store {
    /// The newest `limit` jobs, with their leases in flight.
    pub(crate) async fn dashboard_jobs(&self, limit: u32) -> Result<Vec<DashboardJob>> {
        let rows = sqlx::query(&format!("{JOB_SELECT} ORDER BY created_ms DESC LIMIT ?"))
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        let mut jobs = rows.iter().map(dashboard_job).collect::<Result<Vec<_>>>()?;
        let in_flight = self.in_flight_by_job(None).await?;
        for j in &mut jobs {
            if let Some(&(replicas, units)) = in_flight.get(&j.id) {
                j.replicas_in_progress = replicas;
                j.units_in_progress = units;
            }
        }
        Ok(jobs)
    }

    /// One job, with its leases in flight.
    pub(crate) async fn dashboard_job(&self, job: &str) -> Result<Option<DashboardJob>> {
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE id = ?"))
            .bind(job)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut j = dashboard_job(&row)?;
        if let Some(&(replicas, units)) = self.in_flight_by_job(Some(job)).await?.get(job) {
            j.replicas_in_progress = replicas;
            j.units_in_progress = units;
        }
        Ok(Some(j))
    }

    /// Replicas and units in flight per job (of one job, or of all): read
    /// from the leases in flight, never from a job's units. The CROSS JOIN
    /// keeps that order (SQLite does not reorder it; elsewhere it is a
    /// plain join).
    async fn in_flight_by_job(&self, job: Option<&str>) -> Result<HashMap<String, (u64, u64)>> {
        let rows = sqlx::query(
            "SELECT u.job_id, COUNT(*) AS replicas, COUNT(DISTINCT r.unit_id) AS units
             FROM replicas r CROSS JOIN units u
             WHERE r.state = 'in_progress' AND u.id = r.unit_id AND (? IS NULL OR u.job_id = ?)
             GROUP BY u.job_id",
        )
        .bind(job)
        .bind(job)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("job_id")?,
                    (count(r, "replicas")?, count(r, "units")?),
                ))
            })
            .collect()
    }

    /// Workers, the online ones (seen at or after `online_since`, or
    /// holding a lease) and their slots, and replicas in flight.
    pub(crate) async fn fleet(&self, online_since: i64) -> Result<Fleet> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS workers,
                    SUM(CASE WHEN online THEN 1 ELSE 0 END) AS online,
                    SUM(CASE WHEN online THEN slots ELSE 0 END) AS slots
             FROM (SELECT w.slots, (w.last_seen_ms >= ? OR EXISTS (
                        SELECT 1 FROM replicas r WHERE r.worker_id = w.id AND r.state = 'in_progress'
                   )) AS online
                   FROM workers w) AS w",
        )
        .bind(online_since)
        .fetch_one(&self.read)
        .await?;
        let in_flight: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE state = 'in_progress'")
                .fetch_one(&self.read)
                .await?;
        Ok(Fleet {
            workers: count(&r, "workers")?,
            workers_online: count(&r, "online")?,
            slots_online: count(&r, "slots")?,
            replicas_in_progress: in_flight.max(0) as u64,
        })
    }

    /// Results returned in `[from, to)`: a count over one range of
    /// `replicas_returned` (no grouping, which would sort the range).
    pub(crate) async fn returned_between(&self, from: i64, to: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM replicas WHERE returned_ms >= ? AND returned_ms < ?",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// A job's replicas by state and failure kind, with an example message
    /// per group.
    pub(crate) async fn job_replica_groups(&self, job: &str) -> Result<Vec<ReplicaGroup>> {
        let rows = sqlx::query(
            "SELECT state, NULLIF(kind, '') AS failure_kind, n, example
             FROM job_outcomes WHERE job_id = ? AND n > 0",
        )
        .bind(job)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaGroup {
                    state: r.try_get("state")?,
                    failure_kind: r.try_get("failure_kind")?,
                    count: count(r, "n")?,
                    example: r.try_get("example")?,
                })
            })
            .collect()
    }

    /// Recounts a job's dashboard aggregates from its replicas and units
    /// and lists every group where the kept counts differ (none, unless a
    /// trigger missed a change): a consistency check for tests and for
    /// operators who doubt a page.
    pub async fn verify_job_aggregates(&self, job: &str) -> Result<Vec<String>> {
        let mut wrong = Vec::new();
        let outcomes = sqlx::query(
            "SELECT state, kind, SUM(kept) AS kept, SUM(real) AS real FROM (
                 SELECT state, kind, n AS kept, 0 AS real FROM job_outcomes WHERE job_id = ?
                 UNION ALL
                 SELECT r.state, COALESCE(r.failure_kind, ''), 0, COUNT(*)
                 FROM units u JOIN replicas r ON r.unit_id = u.id
                 WHERE u.job_id = ? AND r.state NOT IN ('in_progress', 'returned')
                 GROUP BY r.state, COALESCE(r.failure_kind, ''))
             GROUP BY state, kind HAVING SUM(kept) <> SUM(real)",
        )
        .bind(job)
        .bind(job)
        .fetch_all(&self.read)
        .await?;
        for r in &outcomes {
            wrong.push(format!(
                "replicas {}/{}: kept {}, counted {}",
                r.try_get::<String, _>("state")?,
                r.try_get::<String, _>("kind")?,
                count(r, "kept")?,
                count(r, "real")?
            ));
        }
        let (kept, real): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT replicas_leased FROM jobs WHERE id = ?),
                    (SELECT COUNT(*) FROM units u JOIN replicas r ON r.unit_id = u.id
                     WHERE u.job_id = ?)",
        )
        .bind(job)
        .bind(job)
        .fetch_one(&self.read)
        .await?;
        if kept != real {
            wrong.push(format!("replicas leased: kept {kept}, counted {real}"));
        }
        // The progress estimate: the fuel of the accepted units' results.
        let (kept_fuel, kept_n, real_fuel, real_n): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT j.fuel_sampled, j.fuel_samples,
                    (SELECT COALESCE(SUM(r.fuel_used), 0) FROM units u
                     JOIN replicas r ON r.id = u.accepted_replica
                     WHERE u.job_id = j.id AND u.state = 'accepted'),
                    (SELECT COUNT(*) FROM units u WHERE u.job_id = j.id AND u.state = 'accepted')
             FROM jobs j WHERE j.id = ?",
        )
        .bind(job)
        .fetch_one(&self.read)
        .await?;
        if (kept_fuel, kept_n) != (real_fuel, real_n) {
            wrong.push(format!(
                "fuel estimate: kept {kept_fuel} over {kept_n} units, counted {real_fuel} over {real_n}"
            ));
        }
        let accepted = sqlx::query(
            "SELECT second, SUM(kept) AS kept, SUM(real) AS real FROM (
                 SELECT second, n AS kept, 0 AS real FROM job_accepted_seconds WHERE job_id = ?
                 UNION ALL
                 SELECT COALESCE(r.returned_ms, 0) / 1000, 0, COUNT(*)
                 FROM units u JOIN replicas r ON r.id = u.accepted_replica
                 WHERE u.job_id = ? AND u.state = 'accepted'
                 GROUP BY COALESCE(r.returned_ms, 0) / 1000)
             GROUP BY second HAVING SUM(kept) <> SUM(real)",
        )
        .bind(job)
        .bind(job)
        .fetch_all(&self.read)
        .await?;
        for r in &accepted {
            wrong.push(format!(
                "accepted in second {}: kept {}, counted {}",
                r.try_get::<i64, _>("second")?,
                count(r, "kept")?,
                count(r, "real")?
            ));
        }
        Ok(wrong)
    }

    /// Compares every worker's kept counters and credit with a recount of
    /// its replicas: valid, invalid, errored and timed-out ones, and the
    /// credit its valid ones are worth ([`crate::credit::granted`]).
    /// Returns what disagrees.
    pub async fn verify_worker_counters(&self) -> Result<Vec<String>> {
        let kept: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, valid_count, invalid_count, error_count, timeout_count, credit FROM workers",
        )
        .fetch_all(&self.read)
        .await?;
        let replicas: Vec<(String, String, bool, bool, Option<i64>)> = sqlx::query_as(
            "SELECT r.worker_id, r.state, j.compare, r.output_hash IS NOT NULL, r.fuel_used
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id",
        )
        .fetch_all(&self.read)
        .await?;
        let mut real: std::collections::HashMap<&str, [i64; 5]> = Default::default();
        for (worker, state, compare, output, fuel) in &replicas {
            let c = real.entry(worker.as_str()).or_default();
            match state.as_str() {
                "valid" => {
                    c[0] += 1;
                    c[4] += crate::credit::granted(*compare, *output, fuel.unwrap_or(0));
                }
                "invalid" => c[1] += 1,
                "errored" => c[2] += 1,
                "timed_out" => c[3] += 1,
                _ => {}
            }
        }
        let mut wrong = Vec::new();
        for (id, valid, invalid, errors, timeouts, credit) in kept {
            let counted = real.get(id.as_str()).copied().unwrap_or_default();
            let kept = [valid, invalid, errors, timeouts, credit];
            if kept != counted {
                wrong.push(format!(
                    "worker {id}: kept [valid, invalid, errors, timeouts, credit] {kept:?}, counted {counted:?}"
                ));
            }
        }
        Ok(wrong)
    }

    /// A job's open units waiting for a worker of a seasoned account (the
    /// account-age rule): one range of the partial index
    /// `units_wanting_seasoned`.
    pub(crate) async fn job_units_waiting_for_seasoned(&self, job: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM units WHERE job_id = ? AND wants_seasoned AND needed > 0",
        )
        .bind(job)
        .fetch_one(&self.read)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// One failed unit's error, as an example.
    pub(crate) async fn job_unit_error(&self, job: &str) -> Result<Option<String>> {
        let e: Option<Option<String>> = sqlx::query_scalar(
            "SELECT error FROM units WHERE job_id = ? AND state = 'failed' LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&self.read)
        .await?;
        Ok(e.flatten())
    }

    /// A job's accepted units by when their accepted result came back, per
    /// bucket of `bucket_ms` counted from `from`: (bucket number, units).
    pub(crate) async fn job_accepted_per_bucket(
        &self,
        job: &str,
        from: i64,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, u64)>> {
        let rows = sqlx::query(
            "SELECT (second * 1000 - ?) / ? AS bucket, SUM(n) AS n
             FROM job_accepted_seconds WHERE job_id = ? AND n > 0
             GROUP BY (second * 1000 - ?) / ?",
        )
        .bind(from)
        .bind(bucket_ms.max(1))
        .bind(job)
        .bind(from)
        .bind(bucket_ms.max(1))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("bucket")?, count(r, "n")?)))
            .collect()
    }

    /// Replicas leased now, the soonest deadline first.
    pub(crate) async fn running_replicas(&self, limit: u32) -> Result<Vec<RunningReplica>> {
        let rows = sqlx::query(
            "SELECT r.worker_id, u.job_id, j.name, u.idx, r.leased_ms, r.deadline_ms,
                    r.progress_fuel, r.progress_ms,
                    j.fuel_sampled / NULLIF(j.fuel_samples, 0) AS fuel_estimate
             FROM replicas r CROSS JOIN units u CROSS JOIN jobs j
             WHERE r.state = 'in_progress' AND u.id = r.unit_id AND j.id = u.job_id
             ORDER BY r.deadline_ms LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningReplica {
                    worker_id: r.try_get("worker_id")?,
                    job_id: r.try_get("job_id")?,
                    job_name: r.try_get("name")?,
                    unit_index: count(r, "idx")?,
                    leased_ms: r.try_get("leased_ms")?,
                    deadline_ms: r.try_get("deadline_ms")?,
                    fuel_used: r.try_get("progress_fuel")?,
                    progress_ms: r.try_get("progress_ms")?,
                    fuel_estimate: r.try_get("fuel_estimate")?,
                })
            })
            .collect()
    }

    /// The top `limit` accounts by `rank`.
    pub(crate) async fn leading_accounts(
        &self,
        rank: Rank,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Leader>> {
        self.leaders(
            &format!(
                "SELECT a.id, a.name, a.credit, a.recent_credit, NULL AS account,
                        (SELECT COUNT(*) FROM workers w WHERE w.account_id = a.id) AS n
                 FROM accounts a ORDER BY {}, a.created_ms LIMIT ?",
                rank_order(rank, "a")
            ),
            limit,
            now,
        )
        .await
    }

    /// The top `limit` workers by `rank`, with their accounts' names.
    pub(crate) async fn leading_workers(
        &self,
        rank: Rank,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Leader>> {
        self.leaders(
            &format!(
                "SELECT w.id, w.name, w.credit, w.recent_credit, w.valid_count AS n, a.name AS account
                 FROM workers w LEFT JOIN accounts a ON a.id = w.account_id
                 ORDER BY {}, w.created_ms LIMIT ?",
                rank_order(rank, "w")
            ),
            limit,
            now,
        )
        .await
    }

    /// Runs a leaderboard query (columns id, name, credit, recent_credit, n,
    /// account) with `limit`.
    async fn leaders(&self, sql: &str, limit: u32, now: i64) -> Result<Vec<Leader>> {
        let rows = sqlx::query(sql)
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Leader {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    credit: count(r, "credit")? as f64 / FUEL_PER_CREDIT,
                    recent_credit: recent_credit_per_day(r.try_get("recent_credit")?, now),
                    count: count(r, "n")?,
                    account: r.try_get("account")?,
                })
            })
            .collect()
    }
}
