//! Blobs (modules, job inputs, outputs): submitters store them (within
//! their `max_stored_bytes`), workers and submitters fetch them by hash.

use super::auth::{require_submitter, require_worker_or_submitter};
use super::{ApiResult, body, parse};
use crate::Coordinator;
use crate::allowance::{self, Usage};
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use protocol::{BlobHash, BlobRef};

/// Stores a blob (a module or a job input); answers its sha256.
#[utoipa::path(post, path = "/api/v1/blobs", tag = "blobs",
    security(("api_key" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "stored", body = protocol::BlobRef),
        (status = 400, description = "the request is malformed", body = protocol::ErrorBody),
        (status = 401, description = "no API key, an unknown one, or a revoked one", body = protocol::ErrorBody),
        (status = 413, description = "larger than max_blob_mb", body = protocol::ErrorBody),
        (status = 422, description = "larger than the room its submitter's max_stored_bytes leaves (code `over_limit`)", body = protocol::ErrorBody)))]
pub(super) async fn post_blob(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<BlobRef>)> {
    // The key first: nobody else's body is read at all.
    let submitter = require_submitter(&c, &headers).await?;
    // A blob its submitter could not submit is not kept: no job of its
    // would fit. (Blobs belong to no job until one names them, so they
    // do not count until then.) Checked before the body is read: a
    // declared length at once, an undeclared one as it arrives.
    let allowance = c
        .config()
        .allowance
        .overridden_by(submitter.max_units, submitter.max_stored_bytes);
    let usage = c.inner.store.submitter_usage(submitter.id).await?;
    let over = |bytes: u64| {
        let adding = Usage {
            units: 0,
            stored_bytes: bytes,
        };
        allowance::check(&submitter.name, &allowance, usage, adding)
            .map_err(|e| ApiError::OverLimit(e.to_string()))
    };
    let max_blob = c.config().max_blob_bytes;
    if let Some(declared) = body::declared(&headers)?
        && let Err(e) = over(declared)
    {
        // Answered now; the body is read and dropped meanwhile so the
        // client sees the answer, not a reset connection.
        body::drain(body, declared, max_blob);
        return Err(e);
    }
    let room = allowance
        .max_stored_bytes
        .saturating_sub(usage.stored_bytes);
    let limit = usize::try_from(room).map_or(max_blob, |room| room.min(max_blob));
    // Read up to the room: a body cut off there is over the limit (a
    // declared one was refused above), not over `max_blob`.
    let body = body::read(&c, &headers, body, limit)
        .await
        .map_err(|e| match e {
            ApiError::PayloadTooLarge(_) if limit < max_blob => {
                over(room.saturating_add(1)).err().unwrap_or(e)
            }
            e => e,
        })?;
    over(body.bytes.len() as u64)?;
    let hash = c.inner.store.put_blob(&body.bytes, c.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(BlobRef {
            hash,
            size: body.bytes.len() as u64,
        }),
    ))
}

/// A blob by its sha256 (for workers and submitters).
#[utoipa::path(get, path = "/api/v1/blobs/{hash}", tag = "blobs",
    security(("worker_token" = []), ("api_key" = [])),
    params(("hash" = protocol::BlobHash, Path, description = "the blob's sha256")),
    responses((status = 200, description = "the bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "not a sha256", body = protocol::ErrorBody),
        (status = 401, description = "no worker token or API key, an unknown one, or a revoked key", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`)", body = protocol::ErrorBody),
        (status = 404, description = "no such blob", body = protocol::ErrorBody)))]
pub(super) async fn get_blob(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(hash): Path<String>,
) -> ApiResult<impl IntoResponse> {
    require_worker_or_submitter(&c, &headers).await?;
    let hash: BlobHash = parse(&hash, "blob hash")?;
    let bytes = c
        .inner
        .store
        .blob(&hash)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}
