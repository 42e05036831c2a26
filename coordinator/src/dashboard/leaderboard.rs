//! The leaderboard (`GET /api/v1/dashboard/leaderboard?limit=N`): accounts
//! and workers by total and by recent credit.

use super::ApiResult;
use super::cache::{Dashboard, live_key, shared};
use crate::Coordinator;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An account or a worker on the leaderboard.
#[derive(Clone, Debug, Serialize)]
pub struct Leader {
    pub id: String,
    pub name: String,
    /// Credits (10^9 fuel each).
    pub credit: f64,
    /// Credits per day, averaged with a half-life of 7 days.
    pub recent_credit: f64,
    /// Accounts: their workers. Workers: their valid replicas.
    pub count: u64,
    /// Workers: the account they belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// What the leaderboard ranks by (the store picks the ORDER BY for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    Credit,
    Recent,
}

#[derive(Debug, Serialize)]
pub(super) struct Leaderboard {
    now_ms: i64,
    accounts_by_credit: Vec<Leader>,
    accounts_by_recent: Vec<Leader>,
    workers_by_credit: Vec<Leader>,
    workers_by_recent: Vec<Leader>,
}

#[derive(Deserialize)]
pub(super) struct LeaderQuery {
    limit: Option<u32>,
}

pub(super) async fn leaderboard(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
    q: Result<Query<LeaderQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Arc<Leaderboard>>> {
    // A bad query gets the API's one JSON error shape, not axum's text.
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let answer = shared(
        &d.leaderboard,
        live_key(&c, limit.into()),
        |_| true,
        async || {
            let now = c.now_ms();
            let s = c.store();
            Ok(Leaderboard {
                now_ms: now,
                accounts_by_credit: s.leading_accounts(Rank::Credit, limit, now).await?,
                accounts_by_recent: s.leading_accounts(Rank::Recent, limit, now).await?,
                workers_by_credit: s.leading_workers(Rank::Credit, limit, now).await?,
                workers_by_recent: s.leading_workers(Rank::Recent, limit, now).await?,
            })
        },
    )
    .await?;
    Ok(Json(answer))
}
