//! The HTTP API (under `/api/v1`), health checks and the dashboard routes:
//! the router and what its handlers share. Each noun has its file:
//! `auth` (secrets, bearer tokens, the platform check), `blobs`, `jobs`,
//! `partial_output` (a job's accepted outputs so far, streamed),
//! `workers` (registration, accounts), `leases` (work, heartbeat, release)
//! and `results` (uploads and their answers); `client_addr` (who the
//! client is, behind trusted proxies), `throttle` (registration rate,
//! large bodies at once) and `body` (reading a body under its limit).
//!
//! Who may call what:
//! - anyone: register a worker, read job status and outputs, the dashboard
//!   (a job read that carries an API key has it checked: unknown or
//!   revoked is 401);
//! - a worker, with its token: ask for work, upload results, fetch blobs;
//! - a submitter, with its API key (`coordinator keys create`; the
//!   `api-key` file is the admin's): store blobs, submit jobs, list its
//!   own (`GET /jobs?mine=true`), cancel its own jobs; an admin cancels
//!   any.
//!
//! Both secrets travel as `Authorization: Bearer <secret>`; the coordinator
//! keeps only their sha256.

mod auth;
mod blobs;
mod body;
pub mod client_addr;
mod jobs;
mod leases;
mod openapi;
mod partial_output;
mod results;
mod throttle;
mod workers;

pub use auth::{hash_secret, random_secret};
pub use leases::{MAX_LEASES_PER_REQUEST, network_prefix, placement_network};
pub use results::{batch_body_limit, result_body_limit};
pub use throttle::Throttle;

/// The body limit of the endpoints that take small JSON (registration,
/// work requests): far more than any honest one needs.
const SMALL_BODY: usize = 64 << 10;

/// A heartbeat's: up to 4096 running units of some 60 bytes each.
const HEARTBEAT_BODY: usize = 1 << 20;
pub use openapi::document as openapi_document;

use crate::Coordinator;
use crate::error::ApiError;
use axum::Router;
use axum::extract::State;
use axum::routing::{MethodRouter, get, post, put};
use serde::Deserialize;

type ApiResult<T> = Result<T, ApiError>;

/// The `/api/v1` routes, and the path each was given: the one list that
/// both the router and the OpenAPI test read.
struct Routes {
    router: Router<Coordinator>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    fn route(mut self, path: &'static str, method: MethodRouter<Coordinator>) -> Routes {
        self.paths.push(path);
        self.router = self.router.route(path, method);
        self
    }
}

/// Every path the router serves under `/api/v1`, in full
/// (`/api/v1/jobs/{id}`), as the OpenAPI document names them: this
/// module's table and the dashboard's JSON.
pub fn api_paths() -> Vec<String> {
    api_routes()
        .paths
        .iter()
        .map(|p| format!("{}{p}", protocol::API_PREFIX))
        .chain(crate::dashboard::API_PATHS.iter().map(|p| p.to_string()))
        .collect()
}

pub fn router(c: Coordinator) -> Router {
    Router::new()
        .nest(protocol::API_PREFIX, api_routes().router)
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .merge(crate::dashboard::routes())
        // After every route: the middleware sees the matched path.
        .route_layer(axum::middleware::from_fn_with_state(
            c.clone(),
            crate::metrics::track,
        ))
        .with_state(c)
}

fn api_routes() -> Routes {
    // Blobs, jobs and results are read by their handlers (`body`), once
    // the caller is known, with the limit of what they are: blobs and jobs
    // by `max_blob_bytes`, results by the jobs they belong to (`results`).
    Routes::new()
        .route("/blobs", post(blobs::post_blob))
        .route("/blobs/{hash}", get(blobs::get_blob))
        .route("/jobs", post(jobs::post_job).get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/output", get(jobs::job_output))
        .route("/jobs/{id}/units", get(jobs::job_units))
        .route(
            "/workers",
            body::limit(post(workers::register), SMALL_BODY).get(workers::list_workers),
        )
        .route("/accounts", get(workers::list_accounts))
        .route("/work", body::limit(post(leases::work), SMALL_BODY))
        .route("/replicas/{id}/result", put(results::put_result))
        .route(
            "/replicas/{id}/release",
            body::limit(post(leases::release_replica), SMALL_BODY),
        )
        .route(
            "/heartbeat",
            body::limit(post(leases::heartbeat), HEARTBEAT_BODY),
        )
        .route(
            "/jobs/{id}/cancel",
            body::limit(post(jobs::cancel_job), SMALL_BODY),
        )
        .route("/results", post(results::post_results))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// `?limit=N` of the lists of workers and accounts.
#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
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
