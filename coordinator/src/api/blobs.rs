//! Blobs (modules, job inputs, outputs): submitters store them, workers
//! and submitters fetch them by hash.

use super::auth::{is_api_key, require_api_key, require_worker};
use super::{ApiResult, body, parse};
use crate::Coordinator;
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use protocol::{BlobHash, BlobRef};

pub(super) async fn post_blob(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<BlobRef>)> {
    // The key first: nobody else's body is read at all.
    require_api_key(&c, &headers)?;
    let body = body::read(&c, &headers, body, c.config().max_blob_bytes).await?;
    let hash = c.inner.store.put_blob(&body.bytes, c.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(BlobRef {
            hash,
            size: body.bytes.len() as u64,
        }),
    ))
}

pub(super) async fn get_blob(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(hash): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !is_api_key(&c, &headers) {
        require_worker(&c, &headers).await?;
    }
    let hash: BlobHash = parse(&hash, "blob hash")?;
    let bytes = c
        .inner
        .store
        .blob(&hash)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}
