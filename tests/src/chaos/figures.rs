//! What a chaos run measures: each restart's recovery, and the spreads
//! (median, max) the report prints.

use super::*;

/// A coordinator restart, as the driver saw it.
#[derive(Debug)]
pub(super) struct Restart {
    pub(super) at_accepted: u64,
    /// From SIGKILL to `/readyz` answering.
    pub(super) ready: Duration,
    /// Kept down for the plan's outage before the restart.
    pub(super) long: bool,
    pub(super) killed_wall_ms: i64,
    pub(super) ready_wall_ms: i64,
    pub(super) ready_at: Instant,
    pub(super) accepted_at_ready: u64,
    /// From ready to the next unit accepted.
    pub(super) resumed: Option<Duration>,
}

impl Restart {
    /// Killed in the middle of the job (not while it split, nor once every
    /// unit was in) and restarted at once.
    pub(super) fn mid_job(&self, plan: &Plan) -> bool {
        !self.long && self.at_accepted > 0 && self.at_accepted < plan.units
    }
}

/// A worker restart.
#[derive(Debug)]
pub(super) struct WorkerRestart {
    pub(super) worker: usize,
    pub(super) at_accepted: u64,
    /// Killed and restarted while the coordinator was down.
    pub(super) coordinator_away: bool,
    pub(super) killed_wall_ms: i64,
    pub(super) spawned_wall_ms: i64,
}

/// Median and maximum, in ms.
pub(super) fn spread(mut xs: Vec<f64>) -> serde_json::Value {
    if xs.is_empty() {
        return serde_json::Value::Null;
    }
    xs.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    serde_json::json!({
        "n": xs.len(),
        "median": round(xs[xs.len() / 2]),
        "max": round(xs[xs.len() - 1]),
    })
}
