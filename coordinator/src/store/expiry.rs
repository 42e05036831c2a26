//! Leases that end without a result: timed out at their deadline, or given
//! back by their worker. Either way the unit is settled again, which
//! usually asks for a replacement replica.

use super::settling::{Effects, Settling};
use super::uploads::Refusal;
use super::{Result, Store};
use crate::lease;
use crate::trust::Counter;
use crate::validator::ReplicaState;
use protocol::{ReplicaId, WorkerId};

#[derive(sqlx::FromRow)]
struct Lease {
    unit_id: i64,
    worker_id: String,
    state: String,
    deadline_ms: i64,
}

impl Store {
    /// Times out every lease whose deadline has passed and settles its unit
    /// again, with the units a settling left for later (it reached its
    /// bound of rounds). Returns how many timed out.
    pub async fn expire_leases(&self, now: i64) -> Result<(usize, Effects)> {
        let mut tx = self.write.begin().await?;
        let expired: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE replicas SET state = 'timed_out'
             WHERE state = 'in_progress' AND deadline_ms < ? RETURNING unit_id, worker_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut settling = Settling::default();
        for (unit, worker) in &expired {
            settling
                .worker(worker.clone())
                .broke_streak(Counter::Timeouts);
            settling.units.push(*unit);
        }
        let left: Vec<i64> =
            sqlx::query_scalar("UPDATE units SET unsettled = FALSE WHERE unsettled RETURNING id")
                .fetch_all(&mut *tx)
                .await?;
        settling.units.extend(left);
        let effects = settling.apply(&mut tx, &self.policy, now).await?;
        tx.commit().await?;
        Ok((expired.len(), effects))
    }

    /// Gives back a lease `worker` holds and has not run: the unit wants a
    /// replica again at once, and the worker is not counted a timeout.
    pub async fn release(
        &self,
        worker: WorkerId,
        replica: ReplicaId,
        now: i64,
    ) -> Result<Result<Effects, Refusal>> {
        let mut tx = self.write.begin().await?;
        let lease: Option<Lease> = sqlx::query_as(
            "SELECT unit_id, worker_id, state, deadline_ms FROM replicas WHERE id = ?",
        )
        .bind(replica.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(lease) = lease else {
            return Ok(Err(Refusal::NoSuchReplica));
        };
        if lease.worker_id != worker.to_string() {
            return Ok(Err(Refusal::NotYours));
        }
        if lease.state != ReplicaState::InProgress.as_str()
            || !lease::is_live(lease.deadline_ms, now)
        {
            // Returned, timed out or released before: nothing to give back.
            // A lease that ran out is a timeout, not a release, even if
            // the sweep has not marked it yet.
            return Ok(Ok(Effects::default()));
        }
        sqlx::query(
            "UPDATE replicas SET state = 'released' WHERE id = ? AND state = 'in_progress'",
        )
        .bind(replica.0)
        .execute(&mut *tx)
        .await?;
        let settling = Settling {
            units: vec![lease.unit_id],
            ..Settling::default()
        };
        let effects = settling.apply(&mut tx, &self.policy, now).await?;
        tx.commit().await?;
        Ok(Ok(effects))
    }
}
