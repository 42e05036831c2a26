//! How large a result body may be, read from the jobs it can belong to,
//! before the body is read: a replica's own job's output limit, and the
//! largest one of the jobs still running for a batch.

use super::sql::worker_id;
use super::{Result, Store};
use protocol::{ReplicaId, WorkerId};

/// The replica a single upload names, as far as its body limit goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadTarget {
    /// The worker it was leased to.
    pub worker: WorkerId,
    /// Its job's `output_bytes`.
    pub output_bytes: u64,
}

impl Store {
    /// Whom replica `replica` was leased to and its job's output limit;
    /// `None` when there is no such replica.
    pub async fn upload_target(&self, replica: ReplicaId) -> Result<Option<UploadTarget>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT r.worker_id, j.output_bytes
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.id = ?",
        )
        .bind(replica.0)
        .fetch_optional(&self.read)
        .await?;
        row.map(|(worker, output_bytes)| {
            Ok(UploadTarget {
                worker: worker_id(&worker)?,
                output_bytes: output_bytes.max(0) as u64,
            })
        })
        .transpose()
    }

    /// The largest `output_bytes` of the jobs whose units may still take
    /// results (0 when there are none).
    pub async fn largest_live_output(&self) -> Result<u64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(output_bytes) FROM jobs WHERE state IN ('splitting', 'running', 'reducing')",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}
