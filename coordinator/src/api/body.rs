//! Reading a request body under a limit the handler chose once it knew
//! what the body is for: refused at once (413) when its declared
//! `Content-Length` is over the limit, cut off (413) as soon as more
//! arrives than the limit allows, and counted against the large-body cap
//! while a large one is in memory.

use super::ApiResult;
use crate::Coordinator;
use crate::edge::LARGE_BODY;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::MethodRouter;
use http_body_util::BodyExt as _;
use tokio::sync::OwnedSemaphorePermit;

/// A body read whole, with the permit that counts it if it is large.
#[derive(Debug)]
pub(super) struct Read {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Read {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> ApiResult<T> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not the JSON expected: {e}")))
    }
}

/// A route whose handler takes its body through an extractor (`Json`):
/// refused at once when the declared length is over `limit`, cut off at
/// `limit` when it is not declared.
pub(super) fn limit(route: MethodRouter<Coordinator>, limit: usize) -> MethodRouter<Coordinator> {
    route
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(limit, refuse_declared))
}

/// Answers 413 at once for a request whose declared length is over the
/// route's limit (axum's own limit only notices once it has read that
/// far).
async fn refuse_declared(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match declared_length(req.headers(), limit) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The declared `Content-Length`, if any (400 when it is not a number).
pub(super) fn declared(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    declared_length(headers, usize::MAX)
}

/// The declared `Content-Length`, refused when over `limit`.
fn declared_length(headers: &HeaderMap, limit: usize) -> ApiResult<Option<u64>> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".into()))?,
        ),
    };
    match declared {
        Some(n) if n > limit as u64 => Err(too_large(limit)),
        _ => Ok(declared),
    }
}

/// How long a refused body is read and dropped for ([`drain`]).
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads and drops, in the background, the body of a request answered
/// before it was read, when its declared length is at most `bound` (what
/// the endpoint would accept of anyone): the client finishes sending and
/// reads the answer. A connection closed on unread data is reset, and the
/// client sees a broken pipe instead of the refusal and its reason.
/// Nothing is kept; a body over `bound`, or still arriving after
/// [`DRAIN_TIME`], is dropped with its connection.
pub(super) fn drain(mut body: Body, declared: u64, bound: usize) {
    if declared > bound as u64 {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    });
}

/// Reads `body`, at most `limit` bytes of it.
pub(super) async fn read(
    c: &Coordinator,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<Read> {
    let declared = declared_length(headers, limit)?;
    // Undeclared (chunked) bodies may grow to the limit: count those too.
    let permit = if declared.map_or(limit, |n| n as usize) >= LARGE_BODY {
        Some(c.inner.throttle.large_body()?)
    } else {
        None
    };
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large(limit)
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok(Read {
        bytes,
        _permit: permit,
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the request body is larger than this endpoint accepts here ({limit} bytes)"
    ))
}
