//! Who is calling: the secrets (API key and worker tokens, kept only as
//! their sha256), the bearer token that carries them, and the platform
//! check that admits a worker whose results are comparable.

use super::ApiResult;
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::WorkerRow;
use axum::http::{HeaderMap, header};
use protocol::{BlobHash, PROTOCOL_VERSION, Platform};

/// The sha256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> String {
    BlobHash::of(secret.as_bytes()).to_string()
}

/// 32 random bytes as hex: a worker token or an API key.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(super) fn is_api_key(c: &Coordinator, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|key| hash_secret(key) == c.inner.api_key_hash)
}

pub(super) fn require_api_key(c: &Coordinator, headers: &HeaderMap) -> ApiResult<()> {
    match bearer(headers) {
        None => Err(ApiError::Unauthorized(
            "this needs the coordinator's API key as `Authorization: Bearer <key>`".into(),
        )),
        Some(_) if is_api_key(c, headers) => Ok(()),
        Some(_) => Err(ApiError::Forbidden("the API key is wrong".into())),
    }
}

/// The worker whose token the request carries; a banned one is refused
/// (403 `banned`) whatever it asks.
pub(super) async fn require_worker(c: &Coordinator, headers: &HeaderMap) -> ApiResult<WorkerRow> {
    let worker = known_worker(c, headers).await?;
    // Read every time, not remembered: a ban made by another process
    // (`coordinator workers ban`) holds from the next request on.
    if c.inner.store.is_banned(worker.id).await? {
        return Err(ApiError::Banned(crate::error::BANNED.into()));
    }
    Ok(worker)
}

async fn known_worker(c: &Coordinator, headers: &HeaderMap) -> ApiResult<WorkerRow> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthorized(
            "this needs a worker token as `Authorization: Bearer <token>`; register with POST /api/v1/workers".into(),
        ));
    };
    let token_hash = hash_secret(token);
    // Tokens never change and workers are never deleted, so a worker once
    // found is remembered: the hot path skips a database round trip.
    if let Some(w) = c
        .inner
        .known_workers
        .lock()
        .expect("not poisoned")
        .get(&token_hash)
    {
        return Ok(w.clone());
    }
    let worker = c
        .inner
        .store
        .worker_by_token(&token_hash)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown worker token; register again".into()))?;
    c.inner
        .known_workers
        .lock()
        .expect("not poisoned")
        .insert(token_hash, worker.clone());
    Ok(worker)
}

pub(super) fn check_platform(p: &Platform) -> ApiResult<()> {
    if p.protocol != PROTOCOL_VERSION || p.engine != sandbox::ENGINE {
        return Err(ApiError::UpgradeRequired(format!(
            "this coordinator speaks protocol {PROTOCOL_VERSION} with engine {}, the worker protocol {} with engine {}: \
             results would not be comparable. Install the worker version that matches the coordinator.",
            sandbox::ENGINE,
            p.protocol,
            p.engine
        )));
    }
    if p.arch.is_empty() || p.arch.len() > 32 {
        return Err(ApiError::BadRequest(
            "platform.arch must name the CPU architecture".into(),
        ));
    }
    Ok(())
}
