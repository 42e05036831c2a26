//! Heartbeats: a worker's report of how far each running replica has got,
//! applied in the group-commit writer's batches. Progress pushes a lease's
//! deadline back (by [`extended_deadline`]); reported replicas the worker no
//! longer holds come back as gone.

use super::Result;
use super::sql::{IN_LIST_MAX, push_list};
use protocol::{
    Heartbeat, HeartbeatResponse, LeaseDeadline, MAX_LEASE_PERIODS, ReplicaId, WorkerId,
};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};

/// A running replica as a heartbeat sees it.
#[derive(sqlx::FromRow)]
struct Running {
    id: i64,
    leased_ms: i64,
    deadline_ms: i64,
    progress_fuel: Option<i64>,
    lease_secs: i64,
    fuel: i64,
}

/// The deadline of a lease whose worker reports `fuel` used at `now`:
/// progress since the last report buys a full lease period from now, but
/// never more than [`MAX_LEASE_PERIODS`] periods after the lease was
/// granted, and never an earlier deadline; no progress changes nothing.
/// `None`: the lease ran out already (not held any more), whatever the
/// report.
pub fn extended_deadline(
    deadline_ms: i64,
    leased_ms: i64,
    period_ms: i64,
    fuel_before: Option<i64>,
    fuel: i64,
    now: i64,
) -> Option<(i64, bool)> {
    if deadline_ms < now {
        return None;
    }
    if fuel <= fuel_before.unwrap_or(0) {
        return Some((deadline_ms, false));
    }
    let latest = leased_ms + MAX_LEASE_PERIODS * period_ms;
    Some((deadline_ms.max((now + period_ms).min(latest)), true))
}

/// Applies one heartbeat inside the writer's transaction.
pub(super) async fn apply(
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
        let rows: Vec<Running> = q.build_query_as().fetch_all(&mut **tx).await?;
        for r in rows {
            // No run uses more than the job's fuel limit.
            let fuel = reported[&r.id].min(r.fuel.max(0) as u64) as i64;
            let Some((deadline, progressed)) = extended_deadline(
                r.deadline_ms,
                r.leased_ms,
                r.lease_secs * 1000,
                r.progress_fuel,
                fuel,
                now,
            ) else {
                continue; // run out, though not yet swept: no longer held
            };
            held.insert(r.id);
            if progressed {
                sqlx::query(
                    "UPDATE replicas SET progress_fuel = ?, progress_ms = ?, deadline_ms = ?
                     WHERE id = ? AND state = 'in_progress'",
                )
                .bind(fuel)
                .bind(now)
                .bind(deadline)
                .bind(r.id)
                .execute(&mut **tx)
                .await?;
            }
            answer.leases.push(LeaseDeadline {
                replica_id: ReplicaId(r.id),
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

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: i64 = 1_000;

    #[test]
    fn progress_buys_a_period_from_now_up_to_the_cap() {
        // Leased at 0, deadline 1,000; progress at 500: 1,500.
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, None, 10, 500),
            Some((1_500, true))
        );
        // Near the cap: never past MAX_LEASE_PERIODS periods after leasing.
        let cap = MAX_LEASE_PERIODS * PERIOD;
        assert_eq!(
            extended_deadline(cap - 100, 0, PERIOD, Some(10), 20, cap - 200),
            Some((cap, true))
        );
    }

    #[test]
    fn no_progress_changes_nothing_and_a_lapsed_lease_is_not_revived() {
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, Some(10), 10, 500),
            Some((1_000, false))
        );
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, Some(10), 20, 1_001),
            None
        );
        // An extension never moves a deadline earlier.
        assert_eq!(
            extended_deadline(5_000, 0, PERIOD, None, 10, 500),
            Some((5_000, true))
        );
    }
}
