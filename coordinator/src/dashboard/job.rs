//! One job's page (`GET /api/v1/dashboard/jobs/{id}`): its units by state,
//! replica outcomes, errors by kind, accepted units over time.

use super::ApiResult;
use super::cache::{Dashboard, Key, LARGE, live_key, shared};
use super::progress::{DashboardJob, JobView, with_time_left};
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::Store;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use protocol::JobId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

/// One (state, failure kind) group of a job's replicas.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaGroup {
    pub state: String,
    pub failure_kind: Option<String>,
    pub count: u64,
    /// One of the group's failure messages.
    pub example: Option<String>,
}

/// An answer as of now: a finished job's page is kept for long, the time
/// it is read at is not.
#[derive(Debug, Serialize)]
struct AsOf<'a, T> {
    now_ms: i64,
    #[serde(flatten)]
    answer: &'a T,
}

#[derive(Debug, Serialize)]
pub(super) struct JobDetail {
    job: JobView,
    units: UnitCounts,
    replicas: ReplicaCounts,
    /// Replicas that failed, by failure kind, the most frequent first.
    errors: Vec<ErrorGroup>,
    /// A failed unit's error, as an example.
    unit_error: Option<String>,
    /// Accepted units by when their accepted result came back.
    accepted: Series,
    /// Where to download the output, once there is one.
    output_url: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct UnitCounts {
    total: u64,
    /// Open and not leased now: waiting for a worker.
    waiting: u64,
    /// Of those, units whose agreeing votes all came from young accounts,
    /// waiting for a worker of a seasoned account (the account-age rule).
    waiting_for_seasoned: u64,
    /// Open with a replica leased now.
    in_progress: u64,
    accepted: u64,
    failed: u64,
}

#[derive(Debug, Default, Serialize)]
struct ReplicaCounts {
    total: u64,
    in_progress: u64,
    /// Returned, waiting for the other replicas of its unit.
    returned: u64,
    valid: u64,
    invalid: u64,
    errored: u64,
    timed_out: u64,
    discarded: u64,
}

#[derive(Debug, Serialize)]
struct ErrorGroup {
    kind: String,
    count: u64,
    /// Of those, replicas whose failure was the agreed result of the unit.
    agreed: u64,
    example: Option<String>,
}

#[derive(Debug, Serialize)]
struct Series {
    from_ms: i64,
    bucket_ms: i64,
    counts: Vec<u64>,
}

pub(super) async fn job(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: JobId = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("job id: {e}")))?;
    let id = id.to_string();
    let job = c
        .store()
        .dashboard_job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let slot = d.job_slot(&id);
    let key = page_key(&c, &job);
    let answer = shared(
        &slot,
        key,
        |d: &JobDetail| d.units.total >= LARGE,
        async || job_detail(&c, &id, job).await,
    )
    .await?;
    Ok(Json(AsOf {
        now_ms: c.now_ms(),
        answer: &*answer,
    })
    .into_response())
}

/// What a job's page depends on.
fn page_key(c: &Coordinator, job: &DashboardJob) -> Key {
    // A finished job's page changes only with its row (backtracking
    // reopens it): keep it while the row is the same.
    if matches!(job.state.as_str(), "done" | "failed" | "cancelled") {
        let mut h = std::hash::DefaultHasher::new();
        (
            &job.state,
            job.units_accepted,
            job.units_failed,
            job.output_version,
        )
            .hash(&mut h);
        (u64::MAX, 0, h.finish() | 1)
    } else {
        live_key(c, 0)
    }
}

/// Job `id`'s page, from its row and the aggregates kept for it.
async fn job_detail(c: &Coordinator, id: &str, job: DashboardJob) -> ApiResult<JobDetail> {
    let now = c.now_ms();
    let store = c.store();
    let groups = store.job_replica_groups(id).await?;
    let unit_error = if job.units_failed > 0 {
        store.job_unit_error(id).await?
    } else {
        None
    };
    let from = job.created_ms;
    let to = job.finished_ms.unwrap_or(now).max(from);
    let accepted = accepted_series(store, id, from, to).await?;
    let waiting_for_seasoned = store.job_units_waiting_for_seasoned(id).await?;
    let units = UnitCounts {
        total: job.units_total,
        waiting: job
            .units_total
            .saturating_sub(job.units_accepted + job.units_failed + job.units_in_progress),
        waiting_for_seasoned,
        in_progress: job.units_in_progress,
        accepted: job.units_accepted,
        failed: job.units_failed,
    };
    let (mut replicas, errors) = replica_outcomes(&groups);
    // The kept outcomes count replicas in the states they end in;
    // those in flight come from the leases' own index, and the
    // rest of those leased are back and awaiting quorum.
    replicas.in_progress = job.replicas_in_progress;
    replicas.returned = job
        .replicas_leased
        .saturating_sub(replicas.total + job.replicas_in_progress);
    // (The job row and the outcomes are read one after the other;
    // the parts always add up to the total shown.)
    replicas.total += replicas.in_progress + replicas.returned;
    let output_url = job
        .output
        .as_ref()
        .map(|_| format!("{}/jobs/{id}/output", protocol::API_PREFIX));
    let job = with_time_left(store, vec![job], now).await?.remove(0);
    Ok(JobDetail {
        job,
        units,
        replicas,
        errors,
        unit_error,
        accepted,
        output_url,
    })
}

/// Job `id`'s accepted units by when their accepted result came back,
/// from `from` to `to`.
async fn accepted_series(store: &Store, id: &str, from: i64, to: i64) -> ApiResult<Series> {
    // About 60 points, in whole seconds.
    let bucket_ms = ((to - from) / 60 / 1000 + 1) * 1000;
    let n = ((to - from) / bucket_ms + 1) as usize;
    let mut counts = vec![0u64; n];
    for (bucket, k) in store.job_accepted_per_bucket(id, from, bucket_ms).await? {
        counts[bucket.clamp(0, n as i64 - 1) as usize] += k;
    }
    Ok(Series {
        from_ms: from,
        bucket_ms,
        counts,
    })
}

/// Replica counts by state, and failures by kind.
fn replica_outcomes(groups: &[ReplicaGroup]) -> (ReplicaCounts, Vec<ErrorGroup>) {
    let mut r = ReplicaCounts::default();
    let mut errors: BTreeMap<&str, ErrorGroup> = BTreeMap::new();
    for g in groups {
        r.total += g.count;
        match g.state.as_str() {
            "in_progress" => r.in_progress += g.count,
            "returned" => r.returned += g.count,
            "valid" => r.valid += g.count,
            "invalid" => r.invalid += g.count,
            "errored" => r.errored += g.count,
            "timed_out" => r.timed_out += g.count,
            "discarded" => r.discarded += g.count,
            _ => {}
        }
        if let Some(kind) = &g.failure_kind {
            let e = errors.entry(kind).or_insert_with(|| ErrorGroup {
                kind: kind.clone(),
                count: 0,
                agreed: 0,
                example: None,
            });
            e.count += g.count;
            if g.state == "valid" {
                e.agreed += g.count;
            }
            if e.example.is_none() {
                e.example.clone_from(&g.example);
            }
        }
    }
    let mut errors: Vec<ErrorGroup> = errors.into_values().collect();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    (r, errors)
}
