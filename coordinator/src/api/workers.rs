//! Workers and their volunteer accounts: registration (a new account, or
//! joining one by its key; rate-limited per client address, and spending
//! an invite where the project is closed) and the public lists.

use super::auth::{check_platform, hash_secret, random_secret};
use super::client_addr::ClientAddr;
use super::{ApiResult, ListQuery};
use crate::Coordinator;
use crate::error::ApiError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use protocol::{AccountStatus, RegisterRequest, RegisterResponse, WorkerId, WorkerStatus};

/// Registers a worker, in a new account or in the one whose key it gives.
#[utoipa::path(post, path = "/api/v1/workers", tag = "workers",
    request_body = protocol::RegisterRequest,
    responses((status = 201, description = "registered: keep the token", body = protocol::RegisterResponse),
        (status = 400, description = "malformed, or slots out of range", body = protocol::ErrorBody),
        (status = 403, description = "no account has this key, or (with --invites-only) no valid invite", body = protocol::ErrorBody),
        (status = 413, description = "the body is too large", body = protocol::ErrorBody),
        (status = 426, description = "another protocol or engine", body = protocol::ErrorBody),
        (status = 429, description = "too many registrations from this address: retry after the Retry-After header's seconds", body = protocol::ErrorBody)))]
pub(super) async fn register(
    State(c): State<Coordinator>,
    ClientAddr(client): ClientAddr,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    // Counted before anything else is looked at: a flood of bad requests
    // spends the rate as good ones do.
    c.inner.throttle.registration(client)?;
    let Json(req) = body?;
    check_platform(&req.platform)?;
    if req.slots == 0 || req.slots > 1024 {
        return Err(ApiError::BadRequest(
            "slots must be between 1 and 1024".into(),
        ));
    }
    let name: String = req.name.chars().take(100).collect();
    let invite = match (&req.invite, c.config().edge.registration.invites_only) {
        (_, false) => None,
        (None, true) => {
            return Err(ApiError::Forbidden(
                "this coordinator registers invited workers only: run the worker with --invite TOKEN (the project's operator makes tokens with `coordinator invites create`)".into(),
            ));
        }
        (Some(token), true) => Some(hash_secret(token)),
    };
    // The account key is checked before the invite is spent, so that a
    // refusal for it leaves the invite as it was.
    let joined = match &req.account_key {
        Some(key) => match c.inner.store.account_by_key(&hash_secret(key)).await? {
            Some(account) => Some(account),
            None => {
                return Err(ApiError::Forbidden(
                    "no account has this key: check the --account value, or leave it out to create a new account".into(),
                ));
            }
        },
        None => None,
    };
    if let Some(invite) = &invite
        && !c.inner.store.spend_invite(invite).await?
    {
        return Err(ApiError::Forbidden(
            "this invite is unknown or used up: ask the project for another".into(),
        ));
    }
    let registered = create(&c, &req, &name, joined).await;
    if registered.is_err()
        && let Some(invite) = &invite
        && let Err(e) = c.inner.store.refund_invite(invite).await
    {
        tracing::warn!(error = %e, "cannot give back the invite use of a failed registration");
    }
    let (id, token, account_id, account_key) = registered?;
    tracing::info!(worker = %id, name = %name, arch = %req.platform.arch, account = %account_id, %client, invited = invite.is_some(), "worker registered");
    c.changed();
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            worker_id: id,
            token,
            account_id,
            account_key,
        }),
    ))
}

/// Creates the worker, in the account `joined` or a new one: its id,
/// token, account and (for a new account) the account's key.
async fn create(
    c: &Coordinator,
    req: &RegisterRequest,
    name: &str,
    joined: Option<String>,
) -> ApiResult<(WorkerId, String, String, Option<String>)> {
    let id = WorkerId::random();
    let token = random_secret();
    let now = c.now_ms();
    let (account_id, account_key) = match joined {
        Some(account) => (account, None),
        None => {
            let account = uuid::Uuid::new_v4().to_string();
            let key = random_secret();
            c.inner
                .store
                .create_account(&account, name, &hash_secret(&key), now)
                .await?;
            (account, Some(key))
        }
    };
    c.inner
        .store
        .register_worker(
            id,
            name,
            &hash_secret(&token),
            &req.platform,
            req.slots,
            &account_id,
            now,
        )
        .await?;
    Ok((id, token, account_id, account_key))
}

/// Workers, most recently seen first.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    params(("limit" = Option<u32>, Query, description = "at most this many (default 100, at most 10000)")),
    responses((status = 200, description = "the workers", body = Vec<protocol::WorkerStatus>),
        (status = 400, description = "a bad query", body = protocol::ErrorBody)))]
pub(super) async fn list_workers(
    State(c): State<Coordinator>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<WorkerStatus>>> {
    let Query(q) = q?;
    Ok(Json(
        c.inner
            .store
            .workers(q.limit.unwrap_or(100).min(10_000), c.now_ms())
            .await?,
    ))
}

/// Volunteer accounts by credit, highest first.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "workers",
    params(("limit" = Option<u32>, Query, description = "at most this many (default 100, at most 10000)")),
    responses((status = 200, description = "the accounts", body = Vec<protocol::AccountStatus>),
        (status = 400, description = "a bad query", body = protocol::ErrorBody)))]
pub(super) async fn list_accounts(
    State(c): State<Coordinator>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<AccountStatus>>> {
    let Query(q) = q?;
    Ok(Json(
        c.inner
            .store
            .accounts(q.limit.unwrap_or(100).min(10_000), c.now_ms())
            .await?,
    ))
}
