//! Units accepted lately, per job and per submitter, from the per-second
//! counts that `job_accepted_seconds` keeps (migration 0009, by when the
//! accepted result came back): what the time-left estimate
//! ([`crate::time_left`]) and the dashboard's Submitters section read.
//! Each query reads ranges of its `(job_id, second)` key for the jobs it
//! asks about, never the whole table: the jobs given, or the jobs not
//! finished before the range (`jobs_by_finished`, migration 0020).

use super::sql::{IN_LIST_MAX, count, push_list};
use super::{Result, Store};
use crate::dashboard::SubmitterWork;
use crate::time_left::{self, Estimate, Progress, Recent};
use sqlx::{Row, Sqlite};
use std::collections::HashMap;

impl Store {
    /// The time-left estimate of each job at `now`, from its counts
    /// (`recent` left empty) and its units accepted in the window, read
    /// for the running ones only.
    pub(crate) async fn estimates(
        &self,
        jobs: &[(String, Progress)],
        now: i64,
    ) -> Result<HashMap<String, Estimate>> {
        let running: Vec<String> = jobs
            .iter()
            .filter(|(_, p)| p.running)
            .map(|(id, _)| id.clone())
            .collect();
        let recent = if running.is_empty() {
            HashMap::new()
        } else {
            self.recent_acceptances(&running, time_left::window(now))
                .await?
        };
        Ok(jobs
            .iter()
            .map(|(id, p)| {
                let p = Progress {
                    recent: recent.get(id).copied().unwrap_or_default(),
                    ..*p
                };
                (id.clone(), time_left::estimate(&p, now))
            })
            .collect())
    }

    /// Of each of `jobs` (ids), the units accepted in seconds `from..=to`
    /// (since the epoch) and the first of those seconds with one; jobs
    /// with none are left out.
    async fn recent_acceptances(
        &self,
        jobs: &[String],
        (from, to): (i64, i64),
    ) -> Result<HashMap<String, Recent>> {
        let mut recent = HashMap::new();
        for chunk in jobs.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT job_id, SUM(n) AS n, MIN(CASE WHEN n > 0 THEN second END) AS first
                 FROM job_accepted_seconds WHERE job_id IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            q.push(") AND second >= ")
                .push_bind(from)
                .push(" AND second <= ")
                .push_bind(to)
                .push(" GROUP BY job_id");
            for r in q.build().fetch_all(&self.read).await? {
                let accepted = count(r.try_get::<Option<i64>, _>("n")?.unwrap_or(0));
                if accepted > 0 {
                    recent.insert(
                        r.try_get("job_id")?,
                        Recent {
                            accepted,
                            first_second: r.try_get("first")?,
                        },
                    );
                }
            }
        }
        Ok(recent)
    }

    /// Each submitter's work in seconds `from..=to`: units accepted, and
    /// their fuel estimated as each job's units times its mean fuel per
    /// accepted unit (`jobs.fuel_sampled / fuel_samples`, as it is now).
    /// Every submitter not revoked is listed, with no work if it did none,
    /// the most work first (submitters are created by admins: their number
    /// is not a client's to grow); jobs of no submitter are one entry
    /// without a name.
    pub(crate) async fn work_by_submitter(
        &self,
        (from, to): (i64, i64),
    ) -> Result<Vec<SubmitterWork>> {
        // Only jobs not finished before the range can have acceptances in
        // it (backtracking that reopens a job clears its finished_ms): two
        // ranges of `jobs_by_finished`, then each one's acceptances.
        let jobs: Vec<(String, Option<i64>, String, i64, i64)> = sqlx::query_as(
            "SELECT id, submitter_id, state, fuel_sampled, fuel_samples
             FROM jobs WHERE finished_ms IS NULL
             UNION ALL
             SELECT id, submitter_id, state, fuel_sampled, fuel_samples
             FROM jobs WHERE finished_ms >= ?",
        )
        .bind(from * 1000)
        .fetch_all(&self.read)
        .await?;
        let ids: Vec<String> = jobs.iter().map(|j| j.0.clone()).collect();
        let accepted = self.recent_acceptances(&ids, (from, to)).await?;
        let mut work: HashMap<Option<i64>, (u64, f64)> = HashMap::new();
        let mut running: HashMap<Option<i64>, u64> = HashMap::new();
        for (id, submitter, state, fuel_sampled, fuel_samples) in &jobs {
            if state == "running" {
                *running.entry(*submitter).or_default() += 1;
            }
            if let Some(r) = accepted.get(id) {
                let mean = match *fuel_samples {
                    n if n > 0 => count(*fuel_sampled) as f64 / n as f64,
                    _ => 0.0,
                };
                let w = work.entry(*submitter).or_default();
                w.0 += r.accepted;
                w.1 += r.accepted as f64 * mean;
            }
        }
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT id, name, share, revoked_ms IS NOT NULL AS revoked FROM submitters
             WHERE revoked_ms IS NULL",
        );
        // Revoked submitters too while they did work in the hour or have
        // jobs running (owed a share: their jobs go on).
        let mut worked_ids: Vec<i64> = work
            .keys()
            .chain(running.keys())
            .flatten()
            .copied()
            .collect();
        worked_ids.sort_unstable();
        worked_ids.dedup();
        for chunk in worked_ids.chunks(IN_LIST_MAX) {
            q.push(" OR id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.push(")");
        }
        let mut list = Vec::new();
        for r in q.build().fetch_all(&self.read).await? {
            let id: Option<i64> = Some(r.try_get("id")?);
            let (units, fuel) = work.remove(&id).unwrap_or_default();
            list.push(SubmitterWork {
                name: Some(r.try_get("name")?),
                share: count(r.try_get("share")?),
                revoked: r.try_get("revoked")?,
                running_jobs: running.get(&id).copied().unwrap_or(0),
                units,
                fuel,
            });
        }
        // Jobs of no submitter (from before submitters, until the
        // coordinator's start gives them to its first admin).
        let unowned_running = running.get(&None).copied().unwrap_or(0);
        if let Some((units, fuel)) = work
            .remove(&None)
            .or((unowned_running > 0).then_some((0, 0.0)))
        {
            list.push(SubmitterWork {
                name: None,
                share: 1,
                revoked: false,
                running_jobs: unowned_running,
                units,
                fuel,
            });
        }
        list.sort_by(|a, b| {
            b.fuel
                .total_cmp(&a.fuel)
                .then(b.units.cmp(&a.units))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(list)
    }
}
