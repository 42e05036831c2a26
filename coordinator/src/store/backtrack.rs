//! Backtracking and audits: repairing the past when a worker is caught.
//! A worker judged invalid has every accepted unit it voted for without a
//! currently trusted worker confirming it reopened, its votes there
//! discarded; once per adaptive job, before its output exists, the last
//! unit each worker vouched for alone is checked again (the audit). A
//! worker judged invalid only because colluders outvoted it is judged
//! valid once their units are redone: then the votes its catch discarded
//! count again (restoring). All run inside settling's transaction.

use super::Result;
use super::claims;
use super::settling::{Caught, Settling};
use super::sql::{IN_LIST_MAX, padded, push_list, tally};
use crate::credit;
use crate::trust::Trust;
use sqlx::{Sqlite, Transaction};
use std::collections::HashSet;

impl Settling {
    /// Once per adaptive job, when its last unit settles and before its
    /// output is produced: the last unit each worker vouched for alone gets
    /// a second replica. A worker that cheats whenever it is trusted is
    /// caught by it before the output exists, and backtracking redoes its
    /// other units; it costs at most one replica per worker and job.
    pub(super) async fn audit(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        job: &str,
    ) -> Result<Vec<i64>> {
        let due = sqlx::query(
            "UPDATE jobs SET audited = TRUE
             WHERE id = ? AND adaptive AND NOT audited
               AND state = 'running' AND units_accepted + units_failed = units_total",
        )
        .bind(job)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if due == 0 {
            return Ok(Vec::new());
        }
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
    pub(super) async fn backtrack(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        caught: &[Caught],
        trust: &Trust,
    ) -> Result<Vec<i64>> {
        // Any number of workers may be caught at once (a batch's uploads,
        // an account's ban), so no statement names them all: first the
        // accepted units they voted for, then which of those a trusted
        // worker not caught confirmed.
        let mut voted = Vec::new();
        for chunk in caught.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT DISTINCT r.unit_id FROM replicas r JOIN units u ON u.id = r.unit_id
                 WHERE r.state = 'valid' AND u.state = 'accepted' AND r.worker_id IN (",
            );
            push_list(&mut q, chunk.iter().map(|(w, _)| w.clone()));
            q.push(")");
            let units: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            voted.extend(units);
        }
        voted.sort_unstable();
        voted.dedup();
        let caught_ids: HashSet<&str> = caught.iter().map(|(w, _)| w.as_str()).collect();
        let mut units = Vec::new();
        for chunk in voted.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT o.unit_id, o.worker_id FROM replicas o JOIN workers w ON w.id = o.worker_id
                 WHERE o.state = 'valid' AND w.consecutive_valid >= (",
            );
            // Trust::streak_needed, in SQL.
            q.push_bind(trust.threshold as i64)
                .push(" << MAX(0, MIN(w.invalid_count, ")
                .push_bind(i64::from(crate::trust::TRUST_DOUBLINGS_MAX))
                .push(")))");
            q.push(" AND o.unit_id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.push(")");
            let trusted: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut **tx).await?;
            let confirmed: HashSet<i64> = trusted
                .into_iter()
                .filter(|(_, worker)| !caught_ids.contains(worker.as_str()))
                .map(|(unit, _)| unit)
                .collect();
            units.extend(chunk.iter().filter(|u| !confirmed.contains(u)));
        }
        self.reopen(tx, &units, caught).await
    }

    /// Reopens accepted `units`: the replicas of `discard` (caught workers)
    /// stop being votes, every other judged replica is judged again (an
    /// honest one outvoted by colluders included), credit granted and
    /// invalid judgements made are taken back, and each unit needs a quorum
    /// of at least two. A job already
    /// reducing or done runs again; its output version goes up when it is
    /// reduced anew. Returns the units reopened.
    async fn reopen(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        units: &[i64],
        discard: &[Caught],
    ) -> Result<Vec<i64>> {
        let mut reopened = Vec::new();
        for chunk in units.chunks(IN_LIST_MAX) {
            self.unjudge(tx, chunk, discard).await?;
            take_out_of_estimates(tx, chunk).await?;
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE units SET state = 'open', needed = 0, accepted_replica = NULL, alone = FALSE,
                        quorum = (SELECT CASE WHEN j.quorum < 2 THEN 2 ELSE j.quorum END
                                  FROM jobs j WHERE j.id = units.job_id)
                 WHERE state = 'accepted' AND id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(") RETURNING id, job_id");
            let rows: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut **tx).await?;
            reopened.extend(rows);
        }
        let mut jobs: Vec<(String, i64)> = Vec::new();
        for (_, job) in &reopened {
            tally(&mut jobs, job.clone(), 1);
        }
        for (job, n) in &jobs {
            sqlx::query(
                "UPDATE jobs SET units_accepted = units_accepted - ?,
                        state = CASE WHEN state IN ('reducing', 'done') THEN 'running' ELSE state END,
                        finished_ms = CASE WHEN state IN ('reducing', 'done') THEN NULL ELSE finished_ms END,
                        audited = CASE WHEN ? THEN FALSE ELSE audited END
                 WHERE id = ?",
            )
            .bind(n)
            // Reopened by a catch, units may be redone alone: the job is
            // audited again before its output (the audit's own reopening
            // does not start another).
            .bind(!discard.is_empty())
            .bind(job)
            .execute(&mut **tx)
            .await?;
        }
        // A reduce under way read outputs that just changed.
        let jobs: Vec<String> = jobs.into_iter().map(|(j, _)| j).collect();
        claims::end_reduces(tx, &jobs).await?;
        Ok(reopened.into_iter().map(|(u, _)| u).collect())
    }

    /// The judged replicas of `units` go back to `returned` (those of
    /// `discard` to `discarded`, naming the judgement that caught their
    /// worker), and what judging them changed is taken back: the credit of
    /// the valid ones, the invalid count of the others.
    async fn unjudge(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        units: &[i64],
        discard: &[Caught],
    ) -> Result<()> {
        const RETURNING: &str = ") RETURNING worker_id, fuel_used, COALESCE(returned_ms, 0),
                output_hash IS NOT NULL AS output,
                (SELECT j.compare FROM units u JOIN jobs j ON j.id = u.job_id
                 WHERE u.id = replicas.unit_id) AS compare";
        for judged_as in ["valid", "invalid"] {
            let mut rows: Vec<(String, Option<i64>, i64, bool, bool)> = Vec::new();
            // The caught workers' replicas first, a bounded list of workers
            // at a time (any number may be caught at once).
            for chunk in discard.chunks(IN_LIST_MAX) {
                let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                    "UPDATE replicas SET state = 'discarded', discarded_by = CASE worker_id",
                );
                // Padded by repeating the last pair, which never matches
                // (`sql::padded_len`).
                for (worker, by) in padded(chunk) {
                    q.push(" WHEN ")
                        .push_bind(worker.clone())
                        .push(" THEN ")
                        .push_bind(*by);
                }
                q.push(" END WHERE state = ")
                    .push_bind(judged_as)
                    .push(" AND worker_id IN (");
                push_list(&mut q, chunk.iter().map(|(w, _)| w.clone()));
                q.push(") AND unit_id IN (");
                push_list(&mut q, units.iter().copied());
                q.push(RETURNING);
                rows.extend(q.build_query_as().fetch_all(&mut **tx).await?);
            }
            // Then the others, to be judged again; but a banned worker's
            // votes never count again, whoever reopens.
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE replicas SET discarded_by = NULL,
                    state = CASE WHEN worker_id IN (SELECT id FROM workers WHERE banned_ms IS NOT NULL)
                                 THEN 'discarded' ELSE 'returned' END
                 WHERE state = ",
            );
            q.push_bind(judged_as).push(" AND unit_id IN (");
            push_list(&mut q, units.iter().copied());
            q.push(RETURNING);
            rows.extend(q.build_query_as().fetch_all(&mut **tx).await?);
            for (worker, fuel, returned_ms, output, compare) in rows {
                if judged_as == "valid" {
                    // Exactly what the valid judgement credited, weighted
                    // in the recent average as of about when it was (its
                    // result's return).
                    let credit = credit::granted(compare, output, fuel.unwrap_or(0));
                    self.worker(worker).refund(credit, returned_ms);
                } else {
                    self.worker(worker).unjudge_invalid();
                }
            }
        }
        Ok(())
    }

    /// The replicas just judged valid among `valid` may have been judged
    /// invalid before and their worker caught: the votes that catch
    /// discarded count again, unless the worker stands caught by another
    /// invalid judgement (they are then that one's to give back). Returns
    /// the units of the votes given back, to settle again.
    pub(super) async fn restore(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        valid: &[i64],
    ) -> Result<Vec<i64>> {
        let mut units = Vec::new();
        for chunk in valid.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE replicas SET
                    discarded_by = (SELECT MIN(o.id) FROM replicas o
                                    WHERE o.worker_id = replicas.worker_id AND o.state = 'invalid'),
                    state = CASE WHEN EXISTS (SELECT 1 FROM replicas o
                                              WHERE o.worker_id = replicas.worker_id AND o.state = 'invalid')
                                 THEN 'discarded' ELSE 'returned' END
                 WHERE state = 'discarded'
                   AND worker_id NOT IN (SELECT id FROM workers WHERE banned_ms IS NOT NULL)
                   AND discarded_by IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(") RETURNING unit_id, state");
            let rows: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut **tx).await?;
            units.extend(
                rows.into_iter()
                    .filter(|(_, state)| state == "returned")
                    .map(|(unit, _)| unit),
            );
        }
        // A vote given back to a unit a trusted worker has since taken
        // alone is not that worker's result: the unit needs its job's
        // quorum again, or it would settle on the restored vote alone.
        for chunk in units.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE units SET quorum = (SELECT CASE WHEN j.quorum < 2 THEN 2 ELSE j.quorum END
                                            FROM jobs j WHERE j.id = units.job_id)
                 WHERE state = 'open' AND quorum = 1 AND id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(")");
            q.build().execute(&mut **tx).await?;
        }
        if !units.is_empty() {
            tracing::info!(
                units = units.len(),
                "a worker outvoted by colluders was judged valid after all: its discarded votes count again"
            );
        }
        Ok(units)
    }
}

/// The accepted fuel of `units` leaves their jobs' progress estimate.
async fn take_out_of_estimates(tx: &mut Transaction<'_, Sqlite>, units: &[i64]) -> Result<()> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "SELECT u.job_id, SUM(r.fuel_used) AS fuel, COUNT(*) AS n
         FROM units u JOIN replicas r ON r.id = u.accepted_replica
         WHERE u.state = 'accepted' AND u.id IN (",
    );
    push_list(&mut q, units.iter().copied());
    q.push(") GROUP BY u.job_id");
    let rows: Vec<(String, Option<i64>, i64)> = q.build_query_as().fetch_all(&mut **tx).await?;
    for (job, fuel, n) in rows {
        let fuel = fuel.unwrap_or(0);
        // Only accepted units with a judged winner were sampled: never
        // below zero.
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
        .bind(job)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
