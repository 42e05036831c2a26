//! The one error type of the HTTP edge.
//!
//! Policy: every handler returns `Result<_, ApiError>`. A client's mistake
//! maps to a 4xx status with a sentence that says what to change; anything
//! else is logged with its cause and answered with a generic 500, so
//! internals never leak. Every error body has one shape:
//! `{"error": "<stable code>", "message": "<for people>"}`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::ErrorBody;

/// What a banned worker is told, on every call.
pub const BANNED: &str = "this worker is banned by the coordinator's operator: its token is refused and its pending results were discarded";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A worker its operator banned (403, code `banned`).
    #[error("{0}")]
    Banned(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A submission past one of its submitter's limits (422, code
    /// `over_limit`; the message names the limit).
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests of this kind from this client: try again after
    /// `retry_after_secs` (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// Busy with other work of this kind: try again after
    /// `retry_after_secs` (503 with `Retry-After`).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    /// The request took longer than the coordinator allows.
    #[error("{0}")]
    Timeout(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The stable code of the body (`not_found`, `banned`, ...).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Banned(_) => (StatusCode::FORBIDDEN, "banned"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::OverLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "over_limit"),
            ApiError::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            // Going down: a client should come back (workers retry on 5xx).
            crate::store::Error::WriterGone => {
                ApiError::Unavailable("the coordinator is stopping; try again shortly".into())
            }
            // A ban committed while this worker's request was already
            // past the edge: the schema refused it (migration 0012).
            crate::store::Error::Invariant(m) if m.contains("a banned worker") => {
                ApiError::Banned(BANNED.into())
            }
            crate::store::Error::OverLimit(e) => ApiError::OverLimit(e.to_string()),
            e => ApiError::Internal(e.into()),
        }
    }
}

/// A body axum could not take: too large, or not what the route expects.
fn rejected(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body is larger than this endpoint accepts".into())
    } else {
        ApiError::BadRequest(text)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejected(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        rejected(r.status(), r.body_text())
    }
}

impl ApiError {
    /// The body this error is answered with (an internal error is logged
    /// here, and its cause kept out of the body).
    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "the coordinator hit an internal error; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        ErrorBody {
            error: code.to_string(),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            }
            | ApiError::Busy {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = (status, Json(self.body())).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}
