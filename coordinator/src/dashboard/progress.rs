//! A job's progress as the dashboard lists it: its row with the leases in
//! flight, its submitter and priority (`DashboardJob`, filled by the
//! store), and with its rate and time left (`JobView`): the one estimate
//! of [`crate::time_left`], the same on the overview, the job page and
//! `GET /api/v1/jobs/{id}`.

use super::ApiResult;
use crate::store::Store;
use crate::time_left::{Estimate, Progress};
use serde::Serialize;

/// A job as the dashboard lists it: the `jobs` row and its leases in flight.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardJob {
    pub id: String,
    pub name: String,
    pub state: String,
    pub units_total: u64,
    pub units_accepted: u64,
    pub units_failed: u64,
    /// Units with at least one replica leased now.
    pub units_in_progress: u64,
    /// Replicas leased and not yet returned.
    pub replicas_in_progress: u64,
    /// Replicas ever leased.
    pub replicas_leased: u64,
    pub quorum: u32,
    pub max_replicas: u32,
    pub adaptive: bool,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The output's blob hash, once done.
    pub output: Option<String>,
    pub output_version: u64,
    pub error: Option<String>,
    /// Who submitted it (the name of its key), if anyone.
    pub submitter: Option<String>,
    /// Its priority among its submitter's jobs.
    pub priority: i32,
}

impl DashboardJob {
    /// What its time-left estimate is made from (with no acceptances yet:
    /// the store reads those).
    fn progress(&self) -> Progress {
        Progress {
            running: self.state == "running",
            units_total: self.units_total,
            units_accepted: self.units_accepted,
            units_failed: self.units_failed,
            recent: Default::default(),
        }
    }
}

/// A job with its progress rate and estimated time left.
#[derive(Clone, Debug, Serialize)]
pub(super) struct JobView {
    #[serde(flatten)]
    job: DashboardJob,
    /// Units accepted per second lately, while it runs.
    rate_per_s: Option<f64>,
    /// Milliseconds until every unit is settled at that rate.
    time_left_ms: Option<i64>,
}

/// Each job with its rate and time left at `now`.
pub(super) async fn with_time_left(
    store: &Store,
    jobs: Vec<DashboardJob>,
    now: i64,
) -> ApiResult<Vec<JobView>> {
    let progress: Vec<_> = jobs.iter().map(|j| (j.id.clone(), j.progress())).collect();
    let mut estimates = store.estimates(&progress, now).await?;
    Ok(jobs
        .into_iter()
        .map(|job| {
            let e: Estimate = estimates.remove(&job.id).unwrap_or_default();
            JobView {
                job,
                rate_per_s: e.rate_per_s,
                time_left_ms: e.time_left_ms,
            }
        })
        .collect())
}
