//! A worker's results: one (`PUT /replicas/{id}/result`) or a batch
//! (`POST /results`), and how the API answers what the store made of each.
//!
//! Bodies are read only once their limit is known: a single result's
//! replica is looked up first (unknown or someone else's: refused before
//! a byte is read), and its body may be as large as *its job's* output
//! limit allows; a batch may be as large as the worker's uploader sends
//! ([`protocol::BATCH_RESULT_BYTES`], or one result alone of the largest
//! output a running job allows).

use super::auth::require_worker;
use super::{ApiResult, body, parse};
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::{Effects, Refusal, Upload};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use protocol::{
    BATCH_RESULT_BYTES, MAX_RESULTS_PER_REQUEST, ReplicaAnswer, ReplicaId, ResultBatch,
    ResultBatchResponse, ResultUpload, UploadResponse, UploadStatus,
};

/// Room in a result's body besides its output (base64, 4/3 of it): the
/// JSON around it, or a failure's message (the sandbox keeps 16 KiB of
/// stderr, which JSON escaping may swell).
const RESULT_SLACK: usize = 128 << 10;

/// The largest body of one result whose output is at most `output_bytes`.
pub fn result_body_limit(output_bytes: u64) -> usize {
    (output_bytes as usize).div_ceil(3) * 4 + RESULT_SLACK
}

/// The largest body of a batch, when running jobs allow outputs of at most
/// `largest_output` bytes: what the worker's uploader sends (results up to
/// [`BATCH_RESULT_BYTES`] together, a larger one alone), with room for
/// every result's JSON, and never beyond the coordinator-wide cap.
pub fn batch_body_limit(largest_output: u64, max_output: u64) -> usize {
    let content = largest_output
        .max(BATCH_RESULT_BYTES as u64)
        .min(max_output);
    // Twice the content: base64 (4/3) for outputs, escaping for messages.
    (content as usize) * 2 + MAX_RESULTS_PER_REQUEST * 1024 + RESULT_SLACK
}

/// Uploads the result of one replica.
#[utoipa::path(put, path = "/api/v1/replicas/{id}/result", tag = "results",
    security(("worker_token" = [])),
    params(("id" = protocol::ReplicaId, Path, description = "the replica's id")),
    request_body = protocol::ResultUpload,
    responses((status = 200, description = "recorded (or recorded before)", body = protocol::UploadResponse),
        (status = 400, description = "malformed", body = protocol::ErrorBody),
        (status = 401, description = "no worker token, or an unknown one", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`), or the replica is another worker's", body = protocol::ErrorBody),
        (status = 404, description = "no such replica", body = protocol::ErrorBody),
        (status = 409, description = "a different result came before", body = protocol::ErrorBody),
        (status = 410, description = "the lease expired", body = protocol::ErrorBody),
        (status = 413, description = "too large", body = protocol::ErrorBody),
        (status = 422, description = "beyond the job's limits", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "result", skip_all, fields(worker, replica = %id))]
pub(super) async fn put_result(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let worker = require_worker(&c, &headers).await?;
    tracing::Span::current().record("worker", tracing::field::display(worker.id));
    let replica: ReplicaId = parse(&id, "replica id")?;
    // Refused before the body is read, but logged and counted as any
    // refusal is.
    let target = match c.inner.store.upload_target(replica).await? {
        Some(target) if target.worker == worker.id => target,
        found => {
            let why = match found {
                Some(_) => Refusal::NotYours,
                None => Refusal::NoSuchReplica,
            };
            let status = answer_upload(&c, replica, Ok(Err(why)))?;
            return Ok(Json(UploadResponse { status }));
        }
    };
    let body = body::read(&c, &headers, body, result_body_limit(target.output_bytes)).await?;
    let upload: ResultUpload = body.json()?;
    drop(body);
    let upload = Upload {
        worker: worker.id,
        replica,
        outcome: upload.outcome,
        fuel_used: upload.fuel_used,
    };
    let status = answer_upload(
        &c,
        replica,
        c.inner.store.record_result(upload, c.now_ms()).await,
    )?;
    Ok(Json(UploadResponse { status }))
}

/// Several results in one request: recorded together (usually in one
/// transaction), each answered as `PUT /replicas/{id}/result` would.
#[utoipa::path(post, path = "/api/v1/results", tag = "results",
    security(("worker_token" = [])),
    request_body = protocol::ResultBatch,
    responses((status = 200, description = "each result answered", body = protocol::ResultBatchResponse),
        (status = 400, description = "malformed", body = protocol::ErrorBody),
        (status = 401, description = "no worker token, or an unknown one", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`), or the replica is another worker's", body = protocol::ErrorBody),
        (status = 413, description = "too many results or too large", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "results", skip_all, fields(worker))]
pub(super) async fn post_results(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ResultBatchResponse>> {
    let worker = require_worker(&c, &headers).await?;
    tracing::Span::current().record("worker", tracing::field::display(worker.id));
    let largest = c.inner.store.largest_live_output().await?;
    let limit = batch_body_limit(largest, c.config().max_output_bytes);
    let body = body::read(&c, &headers, body, limit).await?;
    let batch: ResultBatch = body.json()?;
    drop(body);
    if batch.results.len() > MAX_RESULTS_PER_REQUEST {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} results in one request; at most {MAX_RESULTS_PER_REQUEST}",
            batch.results.len()
        )));
    }
    let ids: Vec<ReplicaId> = batch.results.iter().map(|r| r.replica_id).collect();
    let uploads = batch
        .results
        .into_iter()
        .map(|r| Upload {
            worker: worker.id,
            replica: r.replica_id,
            outcome: r.result.outcome,
            fuel_used: r.result.fuel_used,
        })
        .collect();
    let recorded = c.inner.store.record_results(uploads, c.now_ms()).await;
    let results = ids
        .into_iter()
        .zip(recorded)
        .map(
            |(replica_id, recorded)| match answer_upload(&c, replica_id, recorded) {
                Ok(status) => ReplicaAnswer {
                    replica_id,
                    status: Some(status),
                    error: None,
                },
                Err(e) => ReplicaAnswer {
                    replica_id,
                    status: None,
                    error: Some(e.body()),
                },
            },
        )
        .collect();
    Ok(Json(ResultBatchResponse { results }))
}

/// What the store made of an upload, as the API answers it.
fn answer_upload(
    c: &Coordinator,
    replica: ReplicaId,
    recorded: Result<Result<(UploadStatus, Effects), Refusal>, crate::store::Error>,
) -> ApiResult<UploadStatus> {
    let answer = refuse_or_apply(c, replica, recorded);
    match &answer {
        Ok(status) => tracing::debug!(replica = %replica, status = ?status, "result recorded"),
        Err(e) => tracing::debug!(replica = %replica, error = e.code(), "result refused"),
    }
    c.inner.metrics.uploaded(match &answer {
        Ok(UploadStatus::Accepted) => "accepted",
        Ok(UploadStatus::AlreadyReceived) => "already_received",
        Err(e) => e.code(),
    });
    answer
}

fn refuse_or_apply(
    c: &Coordinator,
    replica: ReplicaId,
    recorded: Result<Result<(UploadStatus, Effects), Refusal>, crate::store::Error>,
) -> ApiResult<UploadStatus> {
    match recorded? {
        Ok((status, effects)) => {
            c.apply(effects);
            Ok(status)
        }
        Err(r) => Err(refusal(replica, r)),
    }
}

/// How the API answers the store's refusal of an upload for `replica`.
fn refusal(replica: ReplicaId, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NoSuchReplica => ApiError::NotFound(format!("no replica {replica}")),
        Refusal::NotYours => {
            ApiError::Forbidden(format!("replica {replica} was leased to another worker"))
        }
        Refusal::Expired => ApiError::Gone(format!(
            "the lease of replica {replica} expired and its unit went to another worker; drop it"
        )),
        Refusal::OverLimits => ApiError::Unprocessable(format!(
            "the result for replica {replica} exceeds the job's output or fuel limit"
        )),
        Refusal::Conflict => ApiError::Conflict(format!(
            "a different result for replica {replica} was received before"
        )),
    }
}
