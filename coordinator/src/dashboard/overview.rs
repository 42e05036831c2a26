//! The overview (`GET /api/v1/dashboard/overview`): jobs with progress,
//! rate and time left, submitter and priority; workers online; replicas in
//! flight; results returned per minute over the last hour; the submitters'
//! shares of the last hour's work (`submitters.rs`).

use super::cache::{Dashboard, LARGE, LARGE_FLEET, live_key, shared};
use super::progress::{JobView, with_time_left};
use super::submitters::{Submitters, submitters};
use super::{ApiResult, ONLINE_WINDOW_MS};
use crate::Coordinator;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The throughput chart: one bar per minute over the last hour.
const MINUTE_MS: i64 = 60_000;
const HOUR_MINUTES: i64 = 60;
/// A minute's count is final (cached for good) this long after it ended:
/// a result is stamped when its write is queued, and commits a little later.
const MINUTE_SETTLE_MS: i64 = 30_000;
/// Jobs on the overview.
const OVERVIEW_JOBS: u32 = 100;

/// Workers and leases, counted.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Fleet {
    pub workers: u64,
    /// Seen since the given time, or holding a lease now.
    pub workers_online: u64,
    pub slots_online: u64,
    pub replicas_in_progress: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Overview {
    now_ms: i64,
    online_window_ms: i64,
    #[serde(flatten)]
    fleet: Fleet,
    throughput: Throughput,
    jobs: Vec<JobView>,
    submitters: Arc<Submitters>,
}

/// Results returned (replicas, whatever their verdict).
#[derive(Debug, Serialize)]
struct Throughput {
    /// Over the last minute.
    per_s_now: f64,
    /// Over the last hour.
    last_hour: u64,
    /// The first bucket's start; buckets are whole minutes, oldest first,
    /// the last one the minute now under way.
    from_ms: i64,
    bucket_ms: i64,
    buckets: Vec<u64>,
}

impl Overview {
    fn large(&self) -> bool {
        self.fleet.workers >= LARGE_FLEET
            || self.fleet.replicas_in_progress >= LARGE_FLEET
            || self.throughput.buckets.iter().any(|&n| n >= LARGE)
    }
}

pub(super) async fn overview(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
) -> ApiResult<Json<Arc<Overview>>> {
    let answer = shared(&d.overview, live_key(&c, 0), Overview::large, async || {
        let now = c.now_ms();
        let store = c.store();
        let jobs = store.dashboard_jobs(OVERVIEW_JOBS).await?;
        let fleet = store.fleet(now - ONLINE_WINDOW_MS).await?;
        let throughput = throughput(&c, &d, now).await?;
        let jobs = with_time_left(store, jobs, now).await?;
        let submitters = submitters(&c, &d, now).await?;
        Ok(Overview {
            now_ms: now,
            online_window_ms: ONLINE_WINDOW_MS,
            fleet,
            throughput,
            jobs,
            submitters,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// Results per minute over the last hour: minutes that are over come from
/// memory once counted; only the rest is read, a count per minute over one
/// index range each.
async fn throughput(c: &Coordinator, d: &Dashboard, now: i64) -> ApiResult<Throughput> {
    let this_minute = now.div_euclid(MINUTE_MS);
    let first = this_minute - (HOUR_MINUTES - 1);
    let is_final = |m: i64| (m + 1) * MINUTE_MS + MINUTE_SETTLE_MS <= now;
    let known: BTreeMap<i64, u64> = {
        let mut known = d.minutes.lock().expect("not poisoned");
        known.retain(|&m, _| m >= first);
        known.clone()
    };
    let mut buckets = Vec::with_capacity(HOUR_MINUTES as usize);
    for m in first..=this_minute {
        let n = match known.get(&m) {
            Some(&n) => n,
            None => {
                let n = c
                    .store()
                    .returned_between(m * MINUTE_MS, (m + 1) * MINUTE_MS)
                    .await?;
                if is_final(m) {
                    d.minutes.lock().expect("not poisoned").insert(m, n);
                }
                n
            }
        };
        buckets.push(n);
    }
    let last_minute = c.store().returned_between(now - MINUTE_MS, now + 1).await?;
    Ok(Throughput {
        per_s_now: last_minute as f64 / (MINUTE_MS as f64 / 1000.0),
        last_hour: buckets.iter().sum(),
        from_ms: first * MINUTE_MS,
        bucket_ms: MINUTE_MS,
        buckets,
    })
}
