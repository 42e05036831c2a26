//! Jobs: submission and its checks (the spec, then its submitter's
//! limits), status (with the time-left estimate), output (whole, or
//! partial: `partial_output`), units (with their replicas' failure
//! detail) and cancellation (by its submitter or an admin).

use super::auth::{optional_submitter, require_submitter};
use super::{ApiResult, body, parse, partial_output};
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::NewJob;
use crate::submitter::may_cancel;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::{JobCreated, JobId, JobSpec, JobStatus, UnitStatus};
use serde::Deserialize;

/// Checks a job spec's numbers, each with a sentence that says what to fix.
/// The largest job priority, either way.
pub const PRIORITY_MAX: i32 = 1000;

fn check_spec(c: &Coordinator, spec: &JobSpec) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::Unprocessable(m));
    let l = &spec.limits;
    if spec.name.chars().count() > 200 {
        return bad("name: at most 200 characters".into());
    }
    if l.fuel == 0 || l.fuel > 100_000_000_000_000 {
        return bad(format!(
            "limits.fuel must be between 1 and 10^14, got {}",
            l.fuel
        ));
    }
    if l.memory_bytes < 64 << 10 || l.memory_bytes > 4 << 30 {
        return bad(format!(
            "limits.memory must be between 64 KiB and 4 GiB, got {} bytes",
            l.memory_bytes
        ));
    }
    let max_out = c.config().max_output_bytes;
    if l.output_bytes == 0 || l.output_bytes > max_out {
        return bad(format!(
            "limits.output must be between 1 byte and {max_out} bytes on this coordinator, got {}",
            l.output_bytes
        ));
    }
    if !(-PRIORITY_MAX..=PRIORITY_MAX).contains(&spec.priority) {
        return bad(format!(
            "priority must be between -{PRIORITY_MAX} and {PRIORITY_MAX}, got {}",
            spec.priority
        ));
    }
    if spec.lease_secs == 0 || spec.lease_secs > 7 * 24 * 3600 {
        return bad(format!(
            "lease_secs must be between 1 and 604800 (a week), got {}",
            spec.lease_secs
        ));
    }
    let v = &spec.validation;
    if v.quorum == 0 || v.quorum > 16 {
        return bad(format!(
            "validation.quorum must be between 1 and 16, got {}",
            v.quorum
        ));
    }
    if v.max_replicas < v.quorum || v.max_replicas > 64 {
        return bad(format!(
            "validation.max_replicas must be between the quorum ({}) and 64, got {}",
            v.quorum, v.max_replicas
        ));
    }
    match (&spec.input, &spec.units) {
        (Some(_), Some(_)) => {
            bad("give either `input` (split by the module) or `units`, not both".into())
        }
        (None, None) => bad("give the job's `input` (split by the module) or its `units`".into()),
        (None, Some(units)) if units.is_empty() => {
            bad("`units` is empty: a job needs at least one unit".into())
        }
        _ => Ok(()),
    }
}

/// Submits a job: a stored module, and a stored input to split or the units.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs",
    security(("api_key" = [])),
    request_body = protocol::JobSpec,
    responses((status = 201, description = "submitted", body = protocol::JobCreated),
        (status = 400, description = "the request is malformed", body = protocol::ErrorBody),
        (status = 401, description = "no API key, an unknown one, or a revoked one", body = protocol::ErrorBody),
        (status = 413, description = "larger than max_blob_mb", body = protocol::ErrorBody),
        (status = 422, description = "the spec or the module was refused (code `invalid`), or the job would pass a limit of its submitter, named in the message (code `over_limit`; nothing is stored)", body = protocol::ErrorBody)))]
pub(super) async fn post_job(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<JobCreated>)> {
    // The key first: nobody else's body is read at all.
    let submitter = require_submitter(&c, &headers).await?;
    let spec: JobSpec = body::read(&c, &headers, body, c.config().max_blob_bytes)
        .await?
        .json()?;
    check_spec(&c, &spec)?;
    let module = c.inner.store.blob(&spec.module).await?.ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "module {} is not stored: upload it first with POST /api/v1/blobs",
            spec.module
        ))
    })?;
    if let Some(input) = &spec.input
        && !c.inner.store.blob_exists(input).await?
    {
        return Err(ApiError::Unprocessable(format!(
            "job input {input} is not stored: upload it first with POST /api/v1/blobs"
        )));
    }
    c.compile(module)
        .await
        .map_err(|e| match e.downcast::<sandbox::ModuleError>() {
            Ok(e) => ApiError::Unprocessable(format!("the module was refused: {e}")),
            Err(e) => ApiError::Internal(e),
        })?;
    let job = NewJob {
        id: JobId::random(),
        name: spec.name.clone(),
        module: spec.module,
        input: spec.input,
        limits: spec.limits,
        lease_secs: spec.lease_secs,
        validation: spec.validation,
        submitter: Some(submitter.id),
        priority: spec.priority,
    };
    let units: Option<Vec<Vec<u8>>> = spec
        .units
        .map(|u| u.into_iter().map(|b| b.into_inner()).collect());
    // Its submitter's limits are checked in the transaction that stores it.
    c.inner
        .store
        .submit_job(&job, units.as_deref(), &c.config().allowance, c.now_ms())
        .await?;
    tracing::info!(job = %job.id, name = %job.name, module = %job.module.short(), submitter = %submitter.name, "job submitted");
    c.inner.wake.notify_one();
    c.changed();
    Ok((StatusCode::CREATED, Json(JobCreated { job_id: job.id })))
}

/// `?limit=N&mine=true` of the job list.
#[derive(Deserialize)]
pub(super) struct JobsQuery {
    limit: Option<u32>,
    mine: Option<bool>,
}

/// Jobs, newest first: everybody's, or with `mine=true` the caller's own.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    security((), ("api_key" = [])),
    params(("limit" = Option<u32>, Query, description = "at most this many (default 100, at most 1000)"),
        ("mine" = Option<bool>, Query, description = "true: only the jobs of the submitter whose API key the request carries (the key is then needed)")),
    responses((status = 200, description = "the jobs", body = Vec<protocol::JobStatus>),
        (status = 400, description = "a bad query", body = protocol::ErrorBody),
        (status = 401, description = "mine=true without an API key, or an unknown or revoked key", body = protocol::ErrorBody)))]
pub(super) async fn list_jobs(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<JobStatus>>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let caller = if q.mine == Some(true) {
        Some(require_submitter(&c, &headers).await?)
    } else {
        optional_submitter(&c, &headers).await?;
        None
    };
    let statuses = match caller {
        Some(s) => c.inner.store.job_statuses_of(s.id, limit).await?,
        None => c.inner.store.job_statuses(limit).await?,
    };
    Ok(Json(estimated(&c, statuses).await?))
}

/// The statuses with their rate and time left now ([`crate::time_left`]).
async fn estimated(c: &Coordinator, mut statuses: Vec<JobStatus>) -> ApiResult<Vec<JobStatus>> {
    let progress: Vec<_> = statuses
        .iter()
        .map(|s| (s.id.to_string(), s.into()))
        .collect();
    let mut estimates = c.inner.store.estimates(&progress, c.now_ms()).await?;
    for s in &mut statuses {
        if let Some(e) = estimates.remove(&s.id.to_string()) {
            s.rate_per_s = e.rate_per_s;
            s.time_left_ms = e.time_left_ms;
        }
    }
    Ok(statuses)
}

async fn job_status(c: &Coordinator, id: &str) -> ApiResult<JobStatus> {
    let id: JobId = parse(id, "job id")?;
    c.inner
        .store
        .job_status(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// One job's status, with its rate and estimated time left while it runs.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    security((), ("api_key" = [])),
    params(("id" = protocol::JobId, Path, description = "the job's id")),
    responses((status = 200, description = "its status", body = protocol::JobStatus),
        (status = 400, description = "not a job id", body = protocol::ErrorBody),
        (status = 401, description = "an unknown or revoked API key (none is needed)", body = protocol::ErrorBody),
        (status = 404, description = "no such job", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "get_job", skip_all, fields(job = %id))]
pub(super) async fn get_job(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    optional_submitter(&c, &headers).await?;
    let status = job_status(&c, &id).await?;
    Ok(Json(estimated(&c, vec![status]).await?.remove(0)))
}

#[derive(Deserialize)]
pub(super) struct OutputQuery {
    partial: Option<bool>,
}

/// A finished job's output; or, with `partial=true`, the accepted unit
/// outputs so far, framed, at any time.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/output", tag = "jobs",
    security((), ("api_key" = [])),
    params(("id" = protocol::JobId, Path, description = "the job's id"),
        ("partial" = Option<bool>, Query, description = "true: instead of the job's output, stream the accepted unit outputs so far, in unit order, framed as the module's `reduce` mode receives them (each a u32 little-endian length, then its bytes), whatever the job's state; the `units-streamed` header says how many outputs the stream holds, `units-total` how many units the job has. At most two such streams at once (beyond: 503); one not read to its end within the request timeout is cut off")),
    responses((status = 200, description = "the output, or with `partial=true` the framed accepted outputs so far",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("units-streamed" = u64, description = "with `partial=true`: how many outputs (frames) the stream holds"),
                ("units-total" = u64, description = "with `partial=true`: the job's units"))),
        (status = 400, description = "not a job id, or a bad query", body = protocol::ErrorBody),
        (status = 401, description = "an unknown or revoked API key (none is needed)", body = protocol::ErrorBody),
        (status = 404, description = "no such job", body = protocol::ErrorBody),
        (status = 409, description = "the job has no output yet (without `partial=true`)", body = protocol::ErrorBody),
        (status = 503, description = "as many partial outputs are streaming as the coordinator allows", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "job_output", skip_all, fields(job = %id))]
pub(super) async fn job_output(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<OutputQuery>, QueryRejection>,
) -> ApiResult<Response> {
    optional_submitter(&c, &headers).await?;
    let Query(q) = q?;
    if q.partial == Some(true) {
        return partial_output::stream(&c, parse(&id, "job id")?).await;
    }
    let status = job_status(&c, &id).await?;
    let Some(hash) = status.output else {
        return Err(ApiError::Conflict(format!(
            "job {} is {}: it has no output yet",
            status.id,
            status.state.as_str()
        )));
    };
    let bytes = c.inner.store.blob(&hash).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "output blob {hash} of job {} is missing",
            status.id
        ))
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
pub(super) struct UnitsQuery {
    state: Option<String>,
    limit: Option<u32>,
}

/// The most units one answer lists with their replicas' detail, and
/// without (`state=accepted`, whose units carry none).
const UNITS_WITH_DETAIL_MAX: u32 = 1_000;
const UNITS_MAX: u32 = 10_000;

/// A job's units in index order, optionally in one state; each failed or
/// open unit with its replicas' detail (state, failure kind, message, exit
/// status, the limit hit, fuel).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/units", tag = "jobs",
    security((), ("api_key" = [])),
    params(("id" = protocol::JobId, Path, description = "the job's id"),
        ("state" = Option<String>, Query, description = "open, accepted or failed"),
        ("limit" = Option<u32>, Query, description = "at most this many (default 100; at most 1000, or 10000 with state=accepted, whose units carry no replica detail)")),
    responses((status = 200, description = "the units", body = Vec<protocol::UnitStatus>),
        (status = 400, description = "not a job id, a bad state, or a limit above the most", body = protocol::ErrorBody),
        (status = 401, description = "an unknown or revoked API key (none is needed)", body = protocol::ErrorBody),
        (status = 404, description = "no such job", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "job_units", skip_all, fields(job = %id))]
pub(super) async fn job_units(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<UnitsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<UnitStatus>>> {
    let Query(q) = q?;
    optional_submitter(&c, &headers).await?;
    let status = job_status(&c, &id).await?;
    if let Some(s) = &q.state
        && !["open", "accepted", "failed"].contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "state must be open, accepted or failed, not {s:?}"
        )));
    }
    let most = match q.state.as_deref() {
        Some("accepted") => UNITS_MAX,
        _ => UNITS_WITH_DETAIL_MAX,
    };
    let limit = q.limit.unwrap_or(100);
    if limit > most {
        return Err(ApiError::BadRequest(format!(
            "limit must be at most {most} here (units listed with their replicas' detail: at most {UNITS_WITH_DETAIL_MAX}; with state=accepted: {UNITS_MAX}), got {limit}"
        )));
    }
    Ok(Json(
        c.inner
            .store
            .units_with_detail(status.id, q.state.as_deref(), limit)
            .await?,
    ))
}

/// Cancels a job that has not ended: its own submitter's, or any job for
/// an admin.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    security(("api_key" = [])),
    params(("id" = protocol::JobId, Path, description = "the job's id")),
    responses((status = 200, description = "cancelled", body = protocol::JobStatus),
        (status = 400, description = "the request is malformed", body = protocol::ErrorBody),
        (status = 401, description = "no API key, an unknown one, or a revoked one", body = protocol::ErrorBody),
        (status = 403, description = "the job is another submitter's and the caller is no admin (nothing changed)", body = protocol::ErrorBody),
        (status = 404, description = "no such job", body = protocol::ErrorBody),
        (status = 409, description = "the job has ended already", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "cancel_job", skip_all, fields(job = %id))]
pub(super) async fn cancel_job(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    let caller = require_submitter(&c, &headers).await?;
    let status = job_status(&c, &id).await?;
    let owner = status.submitter.as_deref();
    if !may_cancel(&caller.name, caller.admin, owner) {
        return Err(ApiError::Forbidden(format!(
            "job {} belongs to submitter {}: only its submitter or an admin may cancel it",
            status.id,
            owner.unwrap_or("(none)")
        )));
    }
    if !c.inner.store.cancel_job(status.id, c.now_ms()).await? {
        return Err(ApiError::Conflict(format!(
            "job {} is already {}",
            status.id,
            status.state.as_str()
        )));
    }
    tracing::info!(job = %status.id, by = %caller.name, "job cancelled");
    c.changed();
    Ok(Json(job_status(&c, &id).await?))
}
