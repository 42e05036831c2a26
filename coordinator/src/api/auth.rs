//! Who is calling: the secrets (submitters' API keys and worker tokens,
//! kept only as their sha256), the bearer token that carries them, the
//! submitter or worker it names, and the platform check that admits a
//! worker whose results are comparable.

use super::ApiResult;
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::{SubmitterRow, WorkerRow};
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

/// What a request without a key is told.
const NO_KEY: &str = "this needs a submitter's API key as `Authorization: Bearer <key>`: \
    the coordinator's operator makes one with `coordinator keys create NAME` \
    (the coordinator's own admin key is in its data directory's api-key file)";

/// The submitter whose API key the request carries: no key, an unknown
/// one or a revoked one is 401, saying which. Read from the database on
/// every request, never remembered: a key revoked by `coordinator keys
/// revoke` (another process) is refused from the next request on.
pub(super) async fn require_submitter(
    c: &Coordinator,
    headers: &HeaderMap,
) -> ApiResult<SubmitterRow> {
    let Some(key) = bearer(headers) else {
        return Err(ApiError::Unauthorized(NO_KEY.into()));
    };
    submitter_of(c, &hash_secret(key)).await
}

/// For reads anyone may make: the submitter of the key the request
/// carries, if it carries one. A key given is checked as on every other
/// endpoint (unknown or revoked: 401), so a revoked key never passes
/// silently as no key.
pub(super) async fn optional_submitter(
    c: &Coordinator,
    headers: &HeaderMap,
) -> ApiResult<Option<SubmitterRow>> {
    match bearer(headers) {
        None => Ok(None),
        Some(key) => submitter_of(c, &hash_secret(key)).await.map(Some),
    }
}

async fn submitter_of(c: &Coordinator, key_hash: &str) -> ApiResult<SubmitterRow> {
    admit(c.inner.store.submitter_by_key(key_hash).await?)
}

/// The submitter found by a key, if it may act: unknown or revoked is 401.
fn admit(found: Option<SubmitterRow>) -> ApiResult<SubmitterRow> {
    match found {
        None => Err(ApiError::Unauthorized(
            "unknown API key: it is no submitter's key on this coordinator \
             (check --api-key, WASM_AT_HOME_API_KEY or the data directory's api-key file)"
                .into(),
        )),
        Some(s) if s.revoked_ms.is_some() => Err(ApiError::Unauthorized(format!(
            "the API key of submitter {} was revoked by the coordinator's operator; \
             ask them for a new one (`coordinator keys create`)",
            s.name
        ))),
        Some(s) => Ok(s),
    }
}

/// A blob's reader: a worker (its token) or a submitter (its key). A
/// worker already known in this process is not looked up as a submitter;
/// a revoked key is refused saying so.
pub(super) async fn require_worker_or_submitter(
    c: &Coordinator,
    headers: &HeaderMap,
) -> ApiResult<()> {
    let Some(secret) = bearer(headers) else {
        return Err(ApiError::Unauthorized(
            "this needs a worker token or a submitter's API key as `Authorization: Bearer <secret>`"
                .into(),
        ));
    };
    let hash = hash_secret(secret);
    let known = c
        .inner
        .known_workers
        .lock()
        .expect("not poisoned")
        .contains_key(&hash);
    if !known && let Some(s) = c.inner.store.submitter_by_key(&hash).await? {
        return admit(Some(s)).map(|_| ());
    }
    require_worker(c, headers).await.map(|_| ())
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
