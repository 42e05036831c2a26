//! Heartbeats: a worker's report of how far each running replica has got,
//! applied in the group-commit writer's batches. Progress that the worker's
//! proven speed makes plausible pushes a lease's deadline back, up to the
//! bounds of [`crate::lease::heartbeat`]; reported replicas the worker no
//! longer holds come back as gone.

use super::Result;
use super::sql::{IN_LIST_MAX, push_list};
use crate::lease::{Beat, Held, heartbeat};
use protocol::{Heartbeat, HeartbeatResponse, LeaseDeadline, ReplicaId, WorkerId};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};

/// A running replica as a heartbeat sees it.
#[derive(sqlx::FromRow)]
struct Running {
    id: i64,
    leased_ms: i64,
    deadline_ms: i64,
    progress_fuel: Option<i64>,
    progress_ms: Option<i64>,
    lease_secs: i64,
    fuel: i64,
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
    // Its proven speed (fuel per second; `None`: no valid result yet).
    let speed: Option<i64> = sqlx::query_scalar(
        "UPDATE workers SET last_seen_ms = ?, paused = ? WHERE id = ?
         RETURNING proven_fuel_per_s",
    )
    .bind(now)
    .bind(beat.paused)
    .bind(worker.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .flatten();
    let reported: HashMap<i64, u64> = beat
        .running
        .iter()
        .map(|p| (p.replica_id.0, p.fuel_used))
        .collect();
    let mut held = HashSet::new();
    let ids: Vec<i64> = reported.keys().copied().collect();
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.leased_ms, r.deadline_ms, r.progress_fuel, r.progress_ms, j.lease_secs,
                    j.fuel
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.state = 'in_progress' AND j.state IN ('running', 'reducing', 'done')
               AND r.worker_id = ",
        );
        q.push_bind(worker.to_string()).push(" AND r.id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<Running> = q.build_query_as().fetch_all(&mut **tx).await?;
        for r in rows {
            let lease = Held {
                leased_ms: r.leased_ms,
                deadline_ms: r.deadline_ms,
                period_ms: r.lease_secs * 1000,
                fuel_limit: r.fuel,
                progress_fuel: r.progress_fuel,
                progress_ms: r.progress_ms,
            };
            let (deadline, progress) = match heartbeat(&lease, speed, reported[&r.id], now) {
                Beat::Gone => continue, // run out, though not yet swept: no longer held
                Beat::Held {
                    deadline_ms,
                    progress,
                } => (deadline_ms, progress),
                Beat::Implausible {
                    deadline_ms,
                    allowed,
                } => {
                    tracing::warn!(
                        %worker,
                        replica = r.id,
                        reported = reported[&r.id],
                        allowed,
                        proven_fuel_per_s = speed,
                        "heartbeat claims more fuel than the worker's proven speed allows: \
                         not progress, the lease is not extended"
                    );
                    (deadline_ms, None)
                }
            };
            held.insert(r.id);
            if let Some(fuel) = progress {
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
