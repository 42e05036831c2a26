//! Starved units: a unit that wants a replica no active worker can take
//! (each has held one of it, or shares an account or network with a worker
//! that has) would otherwise wait forever while workers ask for work.
//! Active: seen within two of the job's lease periods. The
//! sweep notes when each was first seen starved; starved for two of its
//! job's lease periods, it is settled again and fails with that reason
//! ([`crate::validator::Policy::starved`]). A lease of the unit, or a
//! worker able to take it, ends the starvation.

use super::settling::{Effects, Settling};
use super::sql::{IN_LIST_MAX, push_list};
use super::{Result, Store};
use sqlx::{Sqlite, Transaction};

/// At most this many starved units are looked at per sweep; the rest wait
/// for the next.
const SWEEP_MAX: i64 = 1000;

/// Pushes the condition on `u` (an alias of `units`, joined with its job
/// `j`) that it wants replicas, has had some, has none in flight, and that
/// workers are asking (some were seen within two lease periods of `now`)
/// but none of those may take it. With every worker away nothing starves:
/// the unit waits for them.
fn push_starved(q: &mut sqlx::QueryBuilder<'_, Sqlite>, now: i64) {
    q.push(
        "u.needed > 0 AND j.state = 'running'
         AND EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id)
         AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id AND r.state = 'in_progress')
         AND EXISTS (SELECT 1 FROM workers w WHERE w.last_seen_ms >= ",
    )
    .push_bind(now)
    .push(
        " - 2000 * j.lease_secs)
         AND NOT EXISTS (
             SELECT 1 FROM workers w
             WHERE w.last_seen_ms >= ",
    )
    .push_bind(now)
    .push(
        " - 2000 * j.lease_secs
               AND (u.arch IS NULL OR j.compare OR w.arch = u.arch)
               AND NOT EXISTS (
                   SELECT 1 FROM replicas r WHERE r.unit_id = u.id
                     AND (r.worker_id = w.id OR r.account_id = COALESCE(w.account_id, w.id)
                          OR r.net = w.net)))",
    );
}

impl Store {
    /// Notes which units are starved now, and fails those starved for two
    /// lease periods. Returns how many failed.
    pub async fn sweep_starved(&self, now: i64) -> Result<(usize, Effects)> {
        // The search reads every unit that wants replicas: done on a
        // reader, outside the writer's transaction.
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT u.id FROM units u JOIN jobs j ON j.id = u.job_id WHERE ",
        );
        push_starved(&mut q, now);
        q.push(" ORDER BY u.id LIMIT ").push_bind(SWEEP_MAX);
        let found: Vec<i64> = q.build_query_scalar().fetch_all(&self.read).await?;
        let mut tx = self.write.begin().await?;
        let starved = still_starved(&mut tx, &found, now).await?;
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "UPDATE units SET starved_ms = NULL WHERE starved_ms IS NOT NULL AND id NOT IN (",
        );
        // An empty list would not be SQL everywhere; no unit has id 0.
        push_list(&mut q, std::iter::once(0).chain(starved.iter().copied()));
        q.push(")");
        // Past the sweep's bound a mark is cleared too: a unit starves only
        // while sweeps keep finding it, and is noted again once they do.
        q.build().execute(&mut *tx).await?;
        let mut overdue = Vec::new();
        for chunk in starved.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "UPDATE units SET starved_ms = COALESCE(starved_ms, ",
            );
            q.push_bind(now).push(") WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.push(") RETURNING id, starved_ms <= ")
                .push_bind(now)
                .push(" - 2000 * (SELECT j.lease_secs FROM jobs j WHERE j.id = units.job_id)");
            let rows: Vec<(i64, bool)> = q.build_query_as().fetch_all(&mut *tx).await?;
            overdue.extend(rows.into_iter().filter(|(_, due)| *due).map(|(u, _)| u));
        }
        let failing = overdue.len();
        let settling = Settling {
            units: overdue,
            ..Settling::default()
        };
        let effects = settling.apply(&mut tx, &self.policy, now).await?;
        tx.commit().await?;
        if failing > 0 {
            tracing::warn!(
                units = failing,
                "units failed: no active worker can take another replica of them"
            );
        }
        Ok((failing, effects))
    }
}

/// Which of `units`, found starved on a reader, still are in the writer's
/// transaction.
async fn still_starved(
    tx: &mut Transaction<'_, Sqlite>,
    units: &[i64],
    now: i64,
) -> Result<Vec<i64>> {
    let mut starved = Vec::new();
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT u.id FROM units u JOIN jobs j ON j.id = u.job_id WHERE ",
        );
        push_starved(&mut q, now);
        q.push(" AND u.id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
        starved.extend(rows);
    }
    Ok(starved)
}
