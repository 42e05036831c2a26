//! The read-only web dashboard at `/`: one embedded page that polls the
//! public JSON API. Nothing on it can change state.

use crate::Coordinator;
use axum::Router;
use axum::response::Html;
use axum::routing::get;

const PAGE: &str = include_str!("dashboard.html");

pub fn routes() -> Router<Coordinator> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}
