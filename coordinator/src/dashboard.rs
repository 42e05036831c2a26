//! The read-only web dashboard at `/`: one embedded page (HTML, CSS and
//! plain JavaScript, no build step, no library) that polls the JSON below
//! every 1.5 s. Nothing here can change state.
//!
//! - `GET /api/v1/dashboard/overview`: jobs with progress, rate and time
//!   left, submitter and priority; workers online; replicas in flight;
//!   results returned per minute over the last hour; each submitter's
//!   share of the last hour's work.
//! - `GET /api/v1/dashboard/jobs/{id}`: one job's units by state, replica
//!   outcomes, errors by kind, accepted units over time.
//! - `GET /api/v1/dashboard/workers`: every worker and the units it runs.
//! - `GET /api/v1/dashboard/leaderboard?limit=N`: accounts and workers by
//!   total and by recent credit.
//!
//! Every query is an aggregate over an index or a page (see
//! `store/dashboard.rs`). Answers are shared between viewers: one is reused
//! while nothing changed (the coordinator's change counter and clock). A
//! small answer is recomputed after any change, so it is always current; a
//! large one (a job of 10,000 units or more, 1,000 workers or leases) may
//! be reused for ten times what it took to compute (0.5 to 2 s), so however
//! many people watch, the dashboard keeps at most about a tenth of one
//! reader connection busy per page.
//!
//! Layout, one noun per file under `dashboard/`: `cache` (what is
//! remembered between requests, and the sharing above), `progress` (a
//! job's row, with the time left of [`crate::time_left`]), `submitters`
//! (the overview's Submitters section), and one file per page:
//! `overview`, `job`, `workers`, `leaderboard`. The rows the store fills
//! are re-exported here.

mod cache;
mod job;
mod leaderboard;
mod overview;
mod progress;
mod submitters;
mod workers;

pub use job::ReplicaGroup;
pub use leaderboard::{Leader, Rank};
pub use overview::Fleet;
pub use progress::DashboardJob;
pub use submitters::SubmitterWork;
pub use workers::RunningReplica;

use crate::Coordinator;
use crate::error::ApiError;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use cache::Dashboard;
use std::sync::Arc;

const PAGE: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// A worker counts as online when it was seen this recently (or holds a
/// lease: a worker busy with long units asks for work seldom).
pub const ONLINE_WINDOW_MS: i64 = 120_000;

type ApiResult<T> = Result<T, ApiError>;

/// The dashboard's JSON routes (under `/api/v1`, so the OpenAPI document
/// lists them too, as the page's own, unstable shapes).
pub const OVERVIEW: &str = "/api/v1/dashboard/overview";
pub const JOB: &str = "/api/v1/dashboard/jobs/{id}";
pub const WORKERS: &str = "/api/v1/dashboard/workers";
pub const LEADERBOARD: &str = "/api/v1/dashboard/leaderboard";
pub const API_PATHS: [&str; 4] = [OVERVIEW, JOB, WORKERS, LEADERBOARD];

pub fn routes() -> Router<Coordinator> {
    let state = Arc::new(Dashboard::default());
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(OVERVIEW, get(overview::overview))
        .route(JOB, get(job::job))
        .route(WORKERS, get(workers::workers))
        .route(LEADERBOARD, get(leaderboard::leaderboard))
        .layer(Extension(state))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Embedded in the binary: a new coordinator serves new assets.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
