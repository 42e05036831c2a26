//! The HTTP API (under `/api/v1`), health checks and the dashboard routes:
//! the router and what its handlers share. Each noun has its file:
//! `auth` (secrets, bearer tokens, the platform check), `blobs`, `jobs`,
//! `workers` (registration, accounts), `leases` (work, heartbeat, release)
//! and `results` (uploads and their answers).
//!
//! Who may call what:
//! - anyone: register a worker, read job status and outputs, the dashboard;
//! - a worker, with its token: ask for work, upload results, fetch blobs;
//! - a submitter, with the API key: store blobs, submit and cancel jobs.
//!
//! Both secrets travel as `Authorization: Bearer <secret>`; the coordinator
//! keeps only their sha256.

mod auth;
mod blobs;
mod jobs;
mod leases;
mod openapi;
mod results;
mod workers;

pub use auth::{hash_secret, random_secret};
pub use leases::{MAX_LEASES_PER_REQUEST, network_prefix};
pub use openapi::document as openapi_document;

use crate::Coordinator;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
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
pub fn api_paths(c: &Coordinator) -> Vec<String> {
    api_routes(c)
        .paths
        .iter()
        .map(|p| format!("{}{p}", protocol::API_PREFIX))
        .chain(crate::dashboard::API_PATHS.iter().map(|p| p.to_string()))
        .collect()
}

pub fn router(c: Coordinator) -> Router {
    Router::new()
        .nest(protocol::API_PREFIX, api_routes(&c).router)
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

fn api_routes(c: &Coordinator) -> Routes {
    let max_blob = c.config().max_blob_bytes;
    // A result is base64 in JSON: 4/3 of the output, plus room for the rest.
    let max_result = (c.config().max_output_bytes as usize) * 4 / 3 + (64 << 10);
    Routes::new()
        .route(
            "/blobs",
            post(blobs::post_blob).layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/blobs/{hash}", get(blobs::get_blob))
        .route(
            "/jobs",
            post(jobs::post_job)
                .get(jobs::list_jobs)
                .layer(DefaultBodyLimit::max(max_blob)),
        )
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/output", get(jobs::job_output))
        .route("/jobs/{id}/units", get(jobs::job_units))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route(
            "/workers",
            post(workers::register).get(workers::list_workers),
        )
        .route("/accounts", get(workers::list_accounts))
        .route("/work", post(leases::work))
        .route(
            "/replicas/{id}/result",
            put(results::put_result).layer(DefaultBodyLimit::max(max_result)),
        )
        .route("/replicas/{id}/release", post(leases::release_replica))
        .route("/heartbeat", post(leases::heartbeat))
        // A batch carries at most as much as the largest single result.
        .route(
            "/results",
            post(results::post_results).layer(DefaultBodyLimit::max(max_result)),
        )
        .route("/openapi.json", get(openapi::openapi_json))
}

/// `?limit=N` of the lists (jobs, workers, accounts).
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
