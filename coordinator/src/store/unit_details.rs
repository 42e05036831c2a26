//! The units of `GET /api/v1/jobs/{id}/units` with their replicas' detail:
//! for each failed or open unit, its replicas (the first
//! [`UNIT_REPLICAS_SHOWN`] by id) with their states, failure kinds,
//! messages (at most [`FAILURE_MESSAGE_SHOWN`] characters), fuel, and what
//! [`crate::failure`] reads from them: the exit status, the limit hit.
//! One statement per page of units, through the `(unit_id, worker_id)`
//! index.

use super::sql::{IN_LIST_MAX, count, push_list, worker_id};
use super::{Error, Result, Store};
use crate::failure;
use protocol::{
    FAILURE_MESSAGE_SHOWN, FailureKind, JobId, Limits, ReplicaDetail, ReplicaId,
    UNIT_REPLICAS_SHOWN, UnitStatus,
};
use sqlx::{Row, Sqlite};
use std::collections::HashMap;

impl Store {
    /// Up to `limit` units of `job` (in `state`, if given) in index order,
    /// each failed or open one with its replicas' detail.
    pub async fn units_with_detail(
        &self,
        job: JobId,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UnitStatus>> {
        let mut units = self.units(job, state, limit).await?;
        let wanted: Vec<i64> = units
            .iter()
            .filter(|u| u.state != "accepted")
            .map(|u| u.id.0)
            .collect();
        if wanted.is_empty() {
            return Ok(units);
        }
        let limits: Option<(i64, i64, i64)> =
            sqlx::query_as("SELECT fuel, memory_bytes, output_bytes FROM jobs WHERE id = ?")
                .bind(job.to_string())
                .fetch_optional(&self.read)
                .await?;
        let Some((fuel, memory_bytes, output_bytes)) = limits else {
            return Ok(units);
        };
        let limits = Limits {
            fuel: count(fuel),
            memory_bytes: count(memory_bytes),
            output_bytes: count(output_bytes),
        };
        let mut detail: HashMap<i64, Vec<ReplicaDetail>> = HashMap::new();
        for chunk in wanted.chunks(IN_LIST_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT unit_id, id, worker_id, state, failure_kind, message, fuel_used, returned_ms
                 FROM (SELECT unit_id, id, worker_id, state, failure_kind,
                              substr(message, 1, ",
            );
            q.push_bind(FAILURE_MESSAGE_SHOWN as i64).push(
                ") AS message, fuel_used, returned_ms,
                       ROW_NUMBER() OVER (PARTITION BY unit_id ORDER BY id) AS k
                       FROM replicas WHERE unit_id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(")) WHERE k <= ")
                .push_bind(UNIT_REPLICAS_SHOWN as i64)
                .push(" ORDER BY unit_id, id");
            for r in q.build().fetch_all(&self.read).await? {
                let kind = r
                    .try_get::<Option<String>, _>("failure_kind")?
                    .map(|k| {
                        FailureKind::parse(&k).ok_or_else(|| Error::corrupt("failure kind", &k))
                    })
                    .transpose()?;
                let message: Option<String> = r.try_get("message")?;
                let worker: String = r.try_get("worker_id")?;
                detail
                    .entry(r.try_get("unit_id")?)
                    .or_default()
                    .push(ReplicaDetail {
                        id: ReplicaId(r.try_get("id")?),
                        worker_id: worker_id(&worker)?,
                        state: r.try_get("state")?,
                        failure_kind: kind,
                        exit_status: failure::exit_status(kind, message.as_deref()),
                        limit: failure::limit_hit(kind, &limits),
                        message,
                        fuel_used: r.try_get::<Option<i64>, _>("fuel_used")?.map(count),
                        returned_ms: r.try_get("returned_ms")?,
                    });
            }
        }
        for u in &mut units {
            if let Some(d) = detail.remove(&u.id.0) {
                u.replica_detail = d;
            }
        }
        Ok(units)
    }
}
