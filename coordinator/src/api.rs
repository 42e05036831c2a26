//! The HTTP API (under `/api/v1`), health checks and the dashboard routes.
//!
//! Who may call what:
//! - anyone: register a worker, read job status and outputs, the dashboard;
//! - a worker, with its token: ask for work, upload results, fetch blobs;
//! - a submitter, with the API key: store blobs, submit and cancel jobs.
//!
//! Both secrets travel as `Authorization: Bearer <secret>`; the coordinator
//! keeps only their sha256.

use crate::Coordinator;
use crate::error::ApiError;
use crate::store::{Effects, NewJob, Refusal, Upload, WorkerRow};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use protocol::{
    AccountStatus, BlobHash, BlobRef, Heartbeat, HeartbeatResponse, JobCreated, JobId, JobSpec,
    JobStatus, Lease, MAX_RESULTS_PER_REQUEST, PROTOCOL_VERSION, Platform, RegisterRequest,
    RegisterResponse, ReplicaAnswer, ReplicaId, ResultBatch, ResultBatchResponse, ResultUpload,
    UnitStatus, UploadResponse, UploadStatus, WorkRequest, WorkResponse, WorkerId, WorkerStatus,
};
use serde::Deserialize;

/// The most leases one work request gets.
pub const MAX_LEASES_PER_REQUEST: u32 = 64;

type ApiResult<T> = Result<T, ApiError>;

pub fn router(c: Coordinator) -> Router {
    let max_blob = c.config().max_blob_bytes;
    // A result is base64 in JSON: 4/3 of the output, plus room for the rest.
    let max_result = (c.config().max_output_bytes as usize) * 4 / 3 + (64 << 10);
    let api = Router::new()
        .route(
            "/blobs",
            post(post_blob).layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/blobs/{hash}", get(get_blob))
        .route(
            "/jobs",
            post(post_job)
                .get(list_jobs)
                .layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/output", get(job_output))
        .route("/jobs/{id}/units", get(job_units))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/workers", post(register).get(list_workers))
        .route("/accounts", get(list_accounts))
        .route("/work", post(work))
        .route(
            "/replicas/{id}/result",
            put(put_result).layer(DefaultBodyLimit::max(max_result)),
        )
        .route("/replicas/{id}/release", post(release_replica))
        .route("/heartbeat", post(heartbeat))
        // A batch carries at most as much as the largest single result.
        .route(
            "/results",
            post(post_results).layer(DefaultBodyLimit::max(max_result)),
        );
    Router::new()
        .nest(protocol::API_PREFIX, api)
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::dashboard::routes())
        .with_state(c)
}

/// The network a peer address belongs to, for placement: its /24 (IPv4)
/// or /48 (IPv6).
pub fn network_prefix(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_prefix(std::net::IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

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

fn is_api_key(c: &Coordinator, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|key| hash_secret(key) == c.inner.api_key_hash)
}

fn require_api_key(c: &Coordinator, headers: &HeaderMap) -> ApiResult<()> {
    match bearer(headers) {
        None => Err(ApiError::Unauthorized(
            "this needs the coordinator's API key as `Authorization: Bearer <key>`".into(),
        )),
        Some(_) if is_api_key(c, headers) => Ok(()),
        Some(_) => Err(ApiError::Forbidden("the API key is wrong".into())),
    }
}

async fn require_worker(c: &Coordinator, headers: &HeaderMap) -> ApiResult<WorkerRow> {
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

fn check_platform(p: &Platform) -> ApiResult<()> {
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

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

async fn readyz(State(c): State<Coordinator>) -> ApiResult<&'static str> {
    c.inner.store.job_statuses(1).await?;
    Ok("ready")
}

// ---- blobs ----

async fn post_blob(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<BlobRef>)> {
    require_api_key(&c, &headers)?;
    let body = body?;
    let hash = c.inner.store.put_blob(&body, c.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(BlobRef {
            hash,
            size: body.len() as u64,
        }),
    ))
}

async fn get_blob(
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

// ---- jobs ----

/// Checks a job spec's numbers, each with a sentence that says what to fix.
fn check_spec(c: &Coordinator, spec: &JobSpec) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::Unprocessable(m));
    let l = &spec.limits;
    if spec.name.len() > 200 {
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

async fn post_job(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<JobCreated>)> {
    require_api_key(&c, &headers)?;
    let Json(spec) = body?;
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
    };
    let units: Option<Vec<Vec<u8>>> = spec
        .units
        .map(|u| u.into_iter().map(|b| b.into_inner()).collect());
    c.inner
        .store
        .create_job(&job, units.as_deref(), c.now_ms())
        .await?;
    tracing::info!(job = %job.id, name = %job.name, module = %job.module.short(), "job submitted");
    c.inner.wake.notify_one();
    c.changed();
    Ok((StatusCode::CREATED, Json(JobCreated { job_id: job.id })))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list_jobs(
    State(c): State<Coordinator>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<JobStatus>>> {
    Ok(Json(
        c.inner
            .store
            .job_statuses(q.limit.unwrap_or(100).min(1000))
            .await?,
    ))
}

async fn job_status(c: &Coordinator, id: &str) -> ApiResult<JobStatus> {
    let id: JobId = parse(id, "job id")?;
    c.inner
        .store
        .job_status(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

async fn get_job(
    State(c): State<Coordinator>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    Ok(Json(job_status(&c, &id).await?))
}

async fn job_output(
    State(c): State<Coordinator>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
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
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

#[derive(Deserialize)]
struct UnitsQuery {
    state: Option<String>,
    limit: Option<u32>,
}

async fn job_units(
    State(c): State<Coordinator>,
    Path(id): Path<String>,
    Query(q): Query<UnitsQuery>,
) -> ApiResult<Json<Vec<UnitStatus>>> {
    let status = job_status(&c, &id).await?;
    if let Some(s) = &q.state
        && !["open", "accepted", "failed"].contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "state must be open, accepted or failed, not {s:?}"
        )));
    }
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(Json(
        c.inner
            .store
            .units(status.id, q.state.as_deref(), limit)
            .await?,
    ))
}

async fn cancel_job(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    require_api_key(&c, &headers)?;
    let status = job_status(&c, &id).await?;
    if !c.inner.store.cancel_job(status.id, c.now_ms()).await? {
        return Err(ApiError::Conflict(format!(
            "job {} is already {}",
            status.id,
            status.state.as_str()
        )));
    }
    tracing::info!(job = %status.id, "job cancelled");
    c.changed();
    Ok(Json(job_status(&c, &id).await?))
}

// ---- workers ----

async fn register(
    State(c): State<Coordinator>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let Json(req) = body?;
    check_platform(&req.platform)?;
    if req.slots == 0 || req.slots > 1024 {
        return Err(ApiError::BadRequest(
            "slots must be between 1 and 1024".into(),
        ));
    }
    let name: String = req.name.chars().take(100).collect();
    let id = WorkerId::random();
    let token = random_secret();
    let now = c.now_ms();
    let (account_id, account_key) = match &req.account_key {
        Some(key) => match c.inner.store.account_by_key(&hash_secret(key)).await? {
            Some(account) => (account, None),
            None => {
                return Err(ApiError::Forbidden(
                    "no account has this key: check the --account value, or leave it out to create a new account".into(),
                ));
            }
        },
        None => {
            let account = uuid::Uuid::new_v4().to_string();
            let key = random_secret();
            c.inner
                .store
                .create_account(&account, &name, &hash_secret(&key), now)
                .await?;
            (account, Some(key))
        }
    };
    c.inner
        .store
        .register_worker(
            id,
            &name,
            &hash_secret(&token),
            &req.platform,
            req.slots,
            &account_id,
            now,
        )
        .await?;
    tracing::info!(worker = %id, name = %name, arch = %req.platform.arch, account = %account_id, "worker registered");
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

async fn list_workers(
    State(c): State<Coordinator>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<WorkerStatus>>> {
    Ok(Json(
        c.inner
            .store
            .workers(q.limit.unwrap_or(100).min(10_000), c.now_ms())
            .await?,
    ))
}

async fn list_accounts(
    State(c): State<Coordinator>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<AccountStatus>>> {
    Ok(Json(
        c.inner
            .store
            .accounts(q.limit.unwrap_or(100).min(10_000), c.now_ms())
            .await?,
    ))
}

async fn work(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Result<Json<WorkRequest>, JsonRejection>,
) -> ApiResult<Json<WorkResponse>> {
    let mut worker = require_worker(&c, &headers).await?;
    if c.config().trust.distinct_networks {
        let peer = extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        worker.net = peer.map(network_prefix);
    }
    let Json(req) = body?;
    check_platform(&req.platform)?;
    if req.platform.arch != worker.arch {
        return Err(ApiError::Conflict(format!(
            "this worker registered as {} and now reports {}: register a new worker on this machine",
            worker.arch, req.platform.arch
        )));
    }
    c.expire_leases_if_due().await?;
    let max = req.max_units.clamp(1, MAX_LEASES_PER_REQUEST);
    let now = c.now_ms();
    let rows = c.inner.store.lease(&worker, max, now).await?;
    if !rows.is_empty() {
        tracing::debug!(worker = %worker.id, leases = rows.len(), "leased");
        c.changed();
    }
    let leases = rows
        .into_iter()
        .map(|r| Lease {
            replica_id: r.replica_id,
            unit_id: r.unit_id,
            job_id: r.job_id,
            module: r.module,
            input: r.input.into(),
            limits: r.limits,
            deadline_ms: r.deadline_ms,
            fuel_estimate: r.fuel_estimate,
        })
        .collect::<Vec<_>>();
    let retry_after_ms = if leases.is_empty() {
        c.config().idle_retry_ms
    } else {
        0
    };
    Ok(Json(WorkResponse {
        leases,
        retry_after_ms,
        now_ms: now,
    }))
}

async fn put_result(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ResultUpload>, JsonRejection>,
) -> ApiResult<Json<UploadResponse>> {
    let worker = require_worker(&c, &headers).await?;
    let replica: ReplicaId = parse(&id, "replica id")?;
    let Json(upload) = body?;
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

/// A worker gives back a lease it will not run (it is stopping): the unit
/// goes to another worker at once. Releasing twice, or after the result,
/// changes nothing.
async fn release_replica(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let worker = require_worker(&c, &headers).await?;
    let replica: ReplicaId = parse(&id, "replica id")?;
    match c
        .inner
        .store
        .release(worker.id, replica, c.now_ms())
        .await?
    {
        Ok(effects) => {
            c.apply(effects);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(Refusal::NotYours) => Err(ApiError::Forbidden(format!(
            "replica {replica} was leased to another worker"
        ))),
        Err(_) => Err(ApiError::NotFound(format!("no replica {replica}"))),
    }
}

/// The most running units one heartbeat may report: far more than any
/// worker holds (two per slot).
const MAX_HEARTBEAT_UNITS: usize = 4096;

/// A worker's heartbeat: progress of its running units, which extends
/// their leases; the answer names the units it no longer holds.
async fn heartbeat(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let worker = require_worker(&c, &headers).await?;
    let Json(beat) = body?;
    if beat.running.len() > MAX_HEARTBEAT_UNITS {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} running units in one heartbeat; at most {MAX_HEARTBEAT_UNITS}",
            beat.running.len()
        )));
    }
    let answer = c.inner.store.heartbeat(worker.id, beat, c.now_ms()).await?;
    c.changed();
    Ok(Json(answer))
}

/// Several results in one request: recorded together (usually in one
/// transaction), each answered as `PUT /replicas/{id}/result` would.
async fn post_results(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Result<Json<ResultBatch>, JsonRejection>,
) -> ApiResult<Json<ResultBatchResponse>> {
    let worker = require_worker(&c, &headers).await?;
    let Json(batch) = body?;
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
    match recorded? {
        Ok((status, effects)) => {
            c.apply(effects);
            Ok(status)
        }
        Err(Refusal::NoSuchReplica) => Err(ApiError::NotFound(format!("no replica {replica}"))),
        Err(Refusal::NotYours) => Err(ApiError::Forbidden(format!(
            "replica {replica} was leased to another worker"
        ))),
        Err(Refusal::Expired) => Err(ApiError::Gone(format!(
            "the lease of replica {replica} expired and its unit went to another worker; drop it"
        ))),
        Err(Refusal::OverLimits) => Err(ApiError::Unprocessable(format!(
            "the result for replica {replica} exceeds the job's output or fuel limit"
        ))),
        Err(Refusal::Conflict) => Err(ApiError::Conflict(format!(
            "a different result for replica {replica} was received before"
        ))),
    }
}
