//! Starved units: a unit that wants a replica no active worker can take
//! (each has held one of it, or shares an account or network with a worker
//! that has) would otherwise wait forever while workers ask for work.
//! Active: seen within two of the job's lease periods. The
//! sweep notes when each was first seen starved; starved for two of its
//! job's lease periods, it is settled again and fails with that reason
//! ([`crate::validator::Policy::starved`]). A lease of the unit, or a
//! worker able to take it, ends the starvation.
//!
//! A unit that wants a seasoned vote (the account-age rule) may be taken
//! only by a worker of a seasoned account: it starves only while such
//! workers are active and none of them may take it. While none is active
//! it waits (counted in `JobStatus::units_waiting_for_seasoned`) instead
//! of failing: accounts age, so the wait ends.

use super::settling::{Effects, Settling};
use super::sql::{IN_LIST_MAX, push_list};
use super::{Result, Store, Trust};
use sqlx::{Sqlite, Transaction};

/// At most this many starved units are looked at per sweep; the rest wait
/// for the next.
const SWEEP_MAX: i64 = 1000;

/// Pushes the condition on `u` (an alias of `units`, joined with its job
/// `j`) that it wants replicas, has had some, has none in flight, and that
/// workers are asking (some were seen within two lease periods of `now`)
/// but none of those may take it. With every worker away nothing starves:
/// the unit waits for them. Of a unit that wants a seasoned vote, only
/// workers of seasoned accounts count.
fn push_starved(q: &mut sqlx::QueryBuilder<'_, Sqlite>, now: i64, trust: &Trust) {
    q.push(
        "u.needed > 0 AND j.state = 'running'
         AND EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id)
         AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id AND r.state = 'in_progress')
         AND EXISTS (SELECT 1 FROM workers w WHERE w.last_seen_ms >= ",
    )
    .push_bind(now)
    .push(" - 2000 * j.lease_secs");
    push_may_give(q, now, trust);
    q.push(
        ")
         AND NOT EXISTS (
             SELECT 1 FROM workers w
             WHERE w.last_seen_ms >= ",
    )
    .push_bind(now)
    .push(" - 2000 * j.lease_secs");
    push_may_give(q, now, trust);
    q.push(
        "
               AND (u.arch IS NULL OR j.compare OR w.arch = u.arch)
               AND NOT EXISTS (
                   SELECT 1 FROM replicas r WHERE r.unit_id = u.id
                     AND (r.worker_id = w.id OR r.account_id = COALESCE(w.account_id, w.id)
                          OR r.net = w.net)))",
    );
}

/// Pushes the condition that worker `w` may give unit `u` the vote it
/// wants: any vote, or with the account-age rule on a unit that wants a
/// seasoned one, only a worker of a seasoned account now
/// ([`Trust::seasoned`], in SQL).
fn push_may_give(q: &mut sqlx::QueryBuilder<'_, Sqlite>, now: i64, trust: &Trust) {
    if trust.min_account_age_secs == 0 {
        return;
    }
    q.push(" AND (NOT u.wants_seasoned OR ")
        .push_bind(now)
        .push(
            " - COALESCE((SELECT a.created_ms FROM accounts a WHERE a.id = w.account_id), w.created_ms) >= ",
        )
        .push_bind((trust.min_account_age_secs as i64).saturating_mul(1000))
        .push(")");
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
        push_starved(&mut q, now, &self.policy.trust);
        q.push(" ORDER BY u.id LIMIT ").push_bind(SWEEP_MAX);
        let found: Vec<i64> = q.build_query_scalar().fetch_all(&self.read).await?;
        let mut tx = self.write.begin().await?;
        let starved = still_starved(&mut tx, &found, now, &self.policy.trust).await?;
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
    trust: &Trust,
) -> Result<Vec<i64>> {
    let mut starved = Vec::new();
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT u.id FROM units u JOIN jobs j ON j.id = u.job_id WHERE ",
        );
        push_starved(&mut q, now, trust);
        q.push(" AND u.id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
        starved.extend(rows);
    }
    Ok(starved)
}
