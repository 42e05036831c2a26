//! The totals `/metrics` reads at scrape time, exact because they are the
//! database's own: replicas by final state and failure kind (the
//! trigger-kept `job_outcomes`), units accepted and failed, jobs by state,
//! leases running, workers seen lately and banned. Each is a small
//! aggregate over kept counters or an index.

use super::{Result, Store};

/// What the database holds now.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// (state, failure kind or "", replicas): valid, invalid, errored,
    /// timed out, discarded, released.
    pub replicas: Vec<(String, String, i64)>,
    /// Replicas leased and not yet returned.
    pub in_progress: i64,
    pub units_accepted: i64,
    pub units_failed: i64,
    pub units_total: i64,
    /// (state, jobs)
    pub jobs: Vec<(String, i64)>,
    /// Workers that asked for work or sent a heartbeat since the `since`
    /// given to [`Store::totals`].
    pub workers_online: i64,
    pub workers_banned: i64,
    pub workers: i64,
}

impl Store {
    /// The totals as of now; workers are online if seen at or after `since`.
    pub async fn totals(&self, since: i64) -> Result<Totals> {
        let replicas: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT state, kind, SUM(n) FROM job_outcomes GROUP BY state, kind HAVING SUM(n) <> 0
             ORDER BY state, kind",
        )
        .fetch_all(&self.read)
        .await?;
        let in_progress: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE state = 'in_progress'")
                .fetch_one(&self.read)
                .await?;
        let (units_accepted, units_failed, units_total): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(units_accepted), 0), COALESCE(SUM(units_failed), 0),
                    COALESCE(SUM(units_total), 0) FROM jobs",
        )
        .fetch_one(&self.read)
        .await?;
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.read)
                .await?;
        let workers_online: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workers WHERE last_seen_ms >= ?")
                .bind(since)
                .fetch_one(&self.read)
                .await?;
        let (workers, workers_banned): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(banned_ms IS NOT NULL), 0) FROM workers")
                .fetch_one(&self.read)
                .await?;
        Ok(Totals {
            replicas,
            in_progress,
            units_accepted,
            units_failed,
            units_total,
            jobs,
            workers_online,
            workers_banned,
            workers,
        })
    }
}
