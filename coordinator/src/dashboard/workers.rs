//! The workers page (`GET /api/v1/dashboard/workers`): every worker and
//! the replicas leased now.

use super::cache::{Dashboard, LARGE_FLEET, live_key, shared};
use super::{ApiResult, ONLINE_WINDOW_MS};
use crate::Coordinator;
use axum::extract::State;
use axum::{Extension, Json};
use protocol::WorkerStatus;
use serde::Serialize;
use std::sync::Arc;

/// Leases listed on the workers page.
const RUNNING_LIMIT: u32 = 5_000;
/// Workers on the workers page.
const WORKERS_LIMIT: u32 = 10_000;

/// A replica leased now, for the workers page.
#[derive(Clone, Debug, Serialize)]
pub struct RunningReplica {
    pub worker_id: String,
    pub job_id: String,
    pub job_name: String,
    pub unit_index: u64,
    pub leased_ms: i64,
    pub deadline_ms: i64,
    /// Fuel used as of the worker's last heartbeat, and when that was.
    pub fuel_used: Option<i64>,
    pub progress_ms: Option<i64>,
    /// The job's mean fuel per accepted unit: progress is fuel_used / this.
    pub fuel_estimate: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(super) struct WorkersPage {
    now_ms: i64,
    online_window_ms: i64,
    workers: Vec<WorkerStatus>,
    /// Replicas leased now, the soonest deadline first.
    running: Vec<RunningReplica>,
    /// Whether there are more leases than listed.
    running_truncated: bool,
}

impl WorkersPage {
    fn large(&self) -> bool {
        self.workers.len() as u64 >= LARGE_FLEET || self.running.len() as u64 >= LARGE_FLEET
    }
}

pub(super) async fn workers(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
) -> ApiResult<Json<Arc<WorkersPage>>> {
    let answer = shared(
        &d.workers,
        live_key(&c, 0),
        WorkersPage::large,
        async || {
            let now = c.now_ms();
            let workers = c.store().workers(WORKERS_LIMIT, now).await?;
            let mut running = c.store().running_replicas(RUNNING_LIMIT + 1).await?;
            let running_truncated = running.len() > RUNNING_LIMIT as usize;
            running.truncate(RUNNING_LIMIT as usize);
            Ok(WorkersPage {
                now_ms: now,
                online_window_ms: ONLINE_WINDOW_MS,
                workers,
                running,
                running_truncated,
            })
        },
    )
    .await?;
    Ok(Json(answer))
}
