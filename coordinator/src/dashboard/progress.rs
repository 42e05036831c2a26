//! A job's progress as the dashboard lists it: its row with the leases in
//! flight (`DashboardJob`, filled by the store), and its rate and time to
//! finish (`JobView`), from samples taken as the pages are read.

use super::cache::Dashboard;
use serde::Serialize;

/// How far back job progress is sampled for the rate and time to finish.
const RATE_WINDOW_MS: i64 = 60_000;
/// The shortest span a rate is measured over.
const MIN_RATE_SPAN_MS: i64 = 2_000;

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
}

/// A job with its progress rate and estimated time to finish.
#[derive(Clone, Debug, Serialize)]
pub(super) struct JobView {
    #[serde(flatten)]
    job: DashboardJob,
    /// Units settled (accepted or failed) per second, lately.
    rate_per_s: Option<f64>,
    /// Milliseconds until every unit is settled at that rate.
    eta_ms: Option<i64>,
}

impl Dashboard {
    /// Adds each job's rate and time to finish, from samples of progress
    /// taken at most once a second over the last minute, and records this
    /// one.
    pub(super) fn with_rates(&self, jobs: Vec<DashboardJob>, now: i64) -> Vec<JobView> {
        let mut samples = self.samples.lock().expect("not poisoned");
        while samples
            .front()
            .is_some_and(|(t, _)| *t < now - RATE_WINDOW_MS || *t > now)
        {
            samples.pop_front();
        }
        let views = jobs
            .into_iter()
            .map(|job| {
                let settled = job.units_accepted + job.units_failed;
                let before = samples
                    .iter()
                    .filter(|(t, _)| now - t >= MIN_RATE_SPAN_MS)
                    .find_map(|(t, s)| Some((*t, *s.get(&job.id)?)));
                let rate = match before {
                    Some((t, then)) => {
                        Some(settled.saturating_sub(then) as f64 * 1000.0 / (now - t) as f64)
                    }
                    // No sample yet: the average since the job was created.
                    None if now - job.created_ms >= MIN_RATE_SPAN_MS && settled > 0 => {
                        Some(settled as f64 * 1000.0 / (now - job.created_ms) as f64)
                    }
                    None => None,
                };
                let running = job.state == "running";
                let remaining = job.units_total.saturating_sub(settled);
                let eta_ms = match rate {
                    _ if !running || job.units_total == 0 => None,
                    _ if remaining == 0 => Some(0),
                    Some(r) if r > 0.0 => Some((remaining as f64 / r * 1000.0).round() as i64),
                    _ => None,
                };
                JobView {
                    job,
                    rate_per_s: rate.filter(|_| running),
                    eta_ms,
                }
            })
            .collect::<Vec<_>>();
        if samples.back().is_none_or(|(t, _)| now - t >= 1000) {
            let progress = views
                .iter()
                .map(|v| (v.job.id.clone(), v.job.units_accepted + v.job.units_failed))
                .collect();
            samples.push_back((now, progress));
        }
        views
    }
}
