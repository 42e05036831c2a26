//! The read-only web dashboard at `/`: one embedded page (HTML, CSS and
//! plain JavaScript, no build step, no library) that polls the JSON below
//! every 1.5 s. Nothing here can change state.
//!
//! - `GET /api/v1/dashboard/overview`: jobs with progress, rate and time to
//!   finish; workers online; replicas in flight; results returned per
//!   minute over the last hour.
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

use crate::Coordinator;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use protocol::{JobId, WorkerStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// A worker counts as online when it was seen this recently (or holds a
/// lease: a worker busy with long units asks for work seldom).
pub const ONLINE_WINDOW_MS: i64 = 120_000;
/// The throughput chart: one bar per minute over the last hour.
const MINUTE_MS: i64 = 60_000;
const HOUR_MINUTES: i64 = 60;
/// A minute's count is final (cached for good) this long after it ended:
/// a result is stamped when its write is queued, and commits a little later.
const MINUTE_SETTLE_MS: i64 = 30_000;
/// How far back job progress is sampled for the rate and time to finish.
const RATE_WINDOW_MS: i64 = 60_000;
/// The shortest span a rate is measured over.
const MIN_RATE_SPAN_MS: i64 = 2_000;
/// How long a large answer may be reused although something changed: ten
/// times what it took to compute, within these bounds.
const MIN_REUSE: Duration = Duration::from_millis(500);
const MAX_REUSE: Duration = Duration::from_secs(2);
/// What makes an answer large (and reusable for a moment): a job of this
/// many units, this many workers or leases, this many results a minute.
const LARGE: u64 = 10_000;
const LARGE_FLEET: u64 = 1_000;
/// Jobs on the overview.
const OVERVIEW_JOBS: u32 = 100;
/// Leases listed on the workers page.
const RUNNING_LIMIT: u32 = 5_000;
/// Workers on the workers page.
const WORKERS_LIMIT: u32 = 10_000;
/// Job pages kept in the cache.
const JOB_CACHE: usize = 64;

type ApiResult<T> = Result<T, ApiError>;

// ---- the answers (the store fills the parts it reads) ----

/// A job as the dashboard lists it: the `jobs` row and its leases in flight.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardJob {
    pub id: String,
    pub name: String,
    pub state: String,
    pub units_total: u64,
    pub units_accepted: u64,
    pub units_failed: u64,
    /// Units with at least one replica leased now.
    pub units_in_progress: u64,
    /// Replicas leased and not yet returned.
    pub replicas_in_progress: u64,
    /// Replicas ever leased.
    pub replicas_leased: u64,
    pub quorum: u32,
    pub max_replicas: u32,
    pub adaptive: bool,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The output's blob hash, once done.
    pub output: Option<String>,
    pub output_version: u64,
    pub error: Option<String>,
}

/// Workers and leases, counted.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Fleet {
    pub workers: u64,
    /// Seen since the given time, or holding a lease now.
    pub workers_online: u64,
    pub slots_online: u64,
    pub replicas_in_progress: u64,
}

/// One (state, failure kind) group of a job's replicas.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaGroup {
    pub state: String,
    pub failure_kind: Option<String>,
    pub count: u64,
    /// One of the group's failure messages.
    pub example: Option<String>,
}

/// A replica leased now, for the workers page.
#[derive(Clone, Debug, Serialize)]
pub struct RunningReplica {
    pub worker_id: String,
    pub job_id: String,
    pub job_name: String,
    pub unit_index: u64,
    pub leased_ms: i64,
    pub deadline_ms: i64,
    /// Fuel used as of the worker's last heartbeat, and when that was.
    pub fuel_used: Option<i64>,
    pub progress_ms: Option<i64>,
    /// The job's mean fuel per accepted unit: progress is fuel_used / this.
    pub fuel_estimate: Option<i64>,
}

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
        .route("/api/v1/dashboard/overview", get(overview))
        .route("/api/v1/dashboard/jobs/{id}", get(job))
        .route("/api/v1/dashboard/workers", get(workers))
        .route("/api/v1/dashboard/leaderboard", get(leaderboard))
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

/// What the dashboard remembers between requests: shared answers, final
/// minutes of the throughput chart, and samples of job progress.
#[derive(Debug, Default)]
struct Dashboard {
    overview: Slot<Overview>,
    jobs: Mutex<HashMap<String, Arc<Slot<JobDetail>>>>,
    workers: Slot<WorkersPage>,
    leaderboard: Slot<Leaderboard>,
    /// Results returned per minute (by minute number since the epoch),
    /// for minutes that are over.
    minutes: Mutex<BTreeMap<i64, u64>>,
    /// (time, units settled per job), oldest first, over RATE_WINDOW_MS.
    samples: Mutex<VecDeque<(i64, HashMap<String, u64>)>>,
}

/// Where one answer is kept; locked while it is computed.
type Slot<T> = tokio::sync::Mutex<Option<Cached<T>>>;

/// An answer, and what it was computed from.
#[derive(Debug)]
struct Cached<T> {
    key: Key,
    /// Until when it may be reused although the key changed (large
    /// answers only; a small one is always recomputed after a change).
    reuse_until: Option<Instant>,
    value: Arc<T>,
}

/// What an answer depends on: the coordinator's change counter and clock
/// (both move when anything could have changed), and the request.
type Key = (u64, i64, u64);

fn live_key(c: &Coordinator, param: u64) -> Key {
    (*c.subscribe().borrow(), c.now_ms(), param)
}

/// The cached answer if it still holds (same key, or a large answer to the
/// same request recently enough for what it cost), else a fresh one from
/// `compute`; `large` tells whether an answer may be reused after a change.
async fn shared<T, F>(
    slot: &Slot<T>,
    key: Key,
    large: impl Fn(&T) -> bool,
    compute: F,
) -> ApiResult<Arc<T>>
where
    F: AsyncFnOnce() -> ApiResult<T>,
{
    // Held while computing: viewers arriving meanwhile wait for this
    // answer instead of running the same queries.
    let mut slot = slot.lock().await;
    if let Some(cached) = slot.as_ref()
        && (cached.key == key
            || (cached.key.2 == key.2 && cached.reuse_until.is_some_and(|t| Instant::now() < t)))
    {
        return Ok(cached.value.clone());
    }
    let started = Instant::now();
    let value = Arc::new(compute().await?);
    let reuse = (started.elapsed() * 10).clamp(MIN_REUSE, MAX_REUSE);
    *slot = Some(Cached {
        key,
        reuse_until: large(&value).then(|| Instant::now() + reuse),
        value: value.clone(),
    });
    Ok(value)
}

/// A job with its progress rate and estimated time to finish.
#[derive(Clone, Debug, Serialize)]
struct JobView {
    #[serde(flatten)]
    job: DashboardJob,
    /// Units settled (accepted or failed) per second, lately.
    rate_per_s: Option<f64>,
    /// Milliseconds until every unit is settled at that rate.
    eta_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Overview {
    now_ms: i64,
    online_window_ms: i64,
    #[serde(flatten)]
    fleet: Fleet,
    throughput: Throughput,
    jobs: Vec<JobView>,
}

/// Results returned (replicas, whatever their verdict).
#[derive(Debug, Serialize)]
struct Throughput {
    /// Over the last minute.
    per_s_now: f64,
    /// Over the last hour.
    last_hour: u64,
    /// The first bucket's start; buckets are whole minutes, oldest first,
    /// the last one the minute now under way.
    from_ms: i64,
    bucket_ms: i64,
    buckets: Vec<u64>,
}

/// An answer as of now: a finished job's page is kept for long, the time
/// it is read at is not.
#[derive(Debug, Serialize)]
struct AsOf<'a, T> {
    now_ms: i64,
    #[serde(flatten)]
    answer: &'a T,
}

#[derive(Debug, Serialize)]
struct JobDetail {
    job: JobView,
    units: UnitCounts,
    replicas: ReplicaCounts,
    /// Replicas that failed, by failure kind, the most frequent first.
    errors: Vec<ErrorGroup>,
    /// A failed unit's error, as an example.
    unit_error: Option<String>,
    /// Accepted units by when their accepted result came back.
    accepted: Series,
    /// Where to download the output, once there is one.
    output_url: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct UnitCounts {
    total: u64,
    /// Open and not leased now: waiting for a worker.
    waiting: u64,
    /// Open with a replica leased now.
    in_progress: u64,
    accepted: u64,
    failed: u64,
}

#[derive(Debug, Default, Serialize)]
struct ReplicaCounts {
    total: u64,
    in_progress: u64,
    /// Returned, waiting for the other replicas of its unit.
    returned: u64,
    valid: u64,
    invalid: u64,
    errored: u64,
    timed_out: u64,
    discarded: u64,
}

#[derive(Debug, Serialize)]
struct ErrorGroup {
    kind: String,
    count: u64,
    /// Of those, replicas whose failure was the agreed result of the unit.
    agreed: u64,
    example: Option<String>,
}

#[derive(Debug, Serialize)]
struct Series {
    from_ms: i64,
    bucket_ms: i64,
    counts: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct WorkersPage {
    now_ms: i64,
    online_window_ms: i64,
    workers: Vec<WorkerStatus>,
    /// Replicas leased now, the soonest deadline first.
    running: Vec<RunningReplica>,
    /// Whether there are more leases than listed.
    running_truncated: bool,
}

#[derive(Debug, Serialize)]
struct Leaderboard {
    now_ms: i64,
    accounts_by_credit: Vec<Leader>,
    accounts_by_recent: Vec<Leader>,
    workers_by_credit: Vec<Leader>,
    workers_by_recent: Vec<Leader>,
}

impl Overview {
    fn large(&self) -> bool {
        self.fleet.workers >= LARGE_FLEET
            || self.fleet.replicas_in_progress >= LARGE_FLEET
            || self.throughput.buckets.iter().any(|&n| n >= LARGE)
    }
}

impl WorkersPage {
    fn large(&self) -> bool {
        self.workers.len() as u64 >= LARGE_FLEET || self.running.len() as u64 >= LARGE_FLEET
    }
}

async fn overview(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
) -> ApiResult<Json<Arc<Overview>>> {
    let answer = shared(&d.overview, live_key(&c, 0), Overview::large, async || {
        let now = c.now_ms();
        let store = c.store();
        let jobs = store.dashboard_jobs(OVERVIEW_JOBS).await?;
        let fleet = store.fleet(now - ONLINE_WINDOW_MS).await?;
        let throughput = throughput(&c, &d, now).await?;
        let jobs = d.with_rates(jobs, now);
        Ok(Overview {
            now_ms: now,
            online_window_ms: ONLINE_WINDOW_MS,
            fleet,
            throughput,
            jobs,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// Results per minute over the last hour: minutes that are over come from
/// memory once counted; only the rest is read, a count per minute over one
/// index range each.
async fn throughput(c: &Coordinator, d: &Dashboard, now: i64) -> ApiResult<Throughput> {
    let this_minute = now.div_euclid(MINUTE_MS);
    let first = this_minute - (HOUR_MINUTES - 1);
    let is_final = |m: i64| (m + 1) * MINUTE_MS + MINUTE_SETTLE_MS <= now;
    let known: BTreeMap<i64, u64> = {
        let mut known = d.minutes.lock().expect("not poisoned");
        known.retain(|&m, _| m >= first);
        known.clone()
    };
    let mut buckets = Vec::with_capacity(HOUR_MINUTES as usize);
    for m in first..=this_minute {
        let n = match known.get(&m) {
            Some(&n) => n,
            None => {
                let n = c
                    .store()
                    .returned_between(m * MINUTE_MS, (m + 1) * MINUTE_MS)
                    .await?;
                if is_final(m) {
                    d.minutes.lock().expect("not poisoned").insert(m, n);
                }
                n
            }
        };
        buckets.push(n);
    }
    let last_minute = c.store().returned_between(now - MINUTE_MS, now + 1).await?;
    Ok(Throughput {
        per_s_now: last_minute as f64 / (MINUTE_MS as f64 / 1000.0),
        last_hour: buckets.iter().sum(),
        from_ms: first * MINUTE_MS,
        bucket_ms: MINUTE_MS,
        buckets,
    })
}

impl Dashboard {
    /// Adds each job's rate and time to finish, from samples of progress
    /// taken at most once a second over the last minute, and records this
    /// one.
    fn with_rates(&self, jobs: Vec<DashboardJob>, now: i64) -> Vec<JobView> {
        let mut samples = self.samples.lock().expect("not poisoned");
        while samples
            .front()
            .is_some_and(|(t, _)| *t < now - RATE_WINDOW_MS || *t > now)
        {
            samples.pop_front();
        }
        let views = jobs
            .into_iter()
            .map(|job| {
                let settled = job.units_accepted + job.units_failed;
                let before = samples
                    .iter()
                    .filter(|(t, _)| now - t >= MIN_RATE_SPAN_MS)
                    .find_map(|(t, s)| Some((*t, *s.get(&job.id)?)));
                let rate = match before {
                    Some((t, then)) => {
                        Some(settled.saturating_sub(then) as f64 * 1000.0 / (now - t) as f64)
                    }
                    // No sample yet: the average since the job was created.
                    None if now - job.created_ms >= MIN_RATE_SPAN_MS && settled > 0 => {
                        Some(settled as f64 * 1000.0 / (now - job.created_ms) as f64)
                    }
                    None => None,
                };
                let running = job.state == "running";
                let remaining = job.units_total.saturating_sub(settled);
                let eta_ms = match rate {
                    _ if !running || job.units_total == 0 => None,
                    _ if remaining == 0 => Some(0),
                    Some(r) if r > 0.0 => Some((remaining as f64 / r * 1000.0).round() as i64),
                    _ => None,
                };
                JobView {
                    job,
                    rate_per_s: rate.filter(|_| running),
                    eta_ms,
                }
            })
            .collect::<Vec<_>>();
        if samples.back().is_none_or(|(t, _)| now - t >= 1000) {
            let progress = views
                .iter()
                .map(|v| (v.job.id.clone(), v.job.units_accepted + v.job.units_failed))
                .collect();
            samples.push_back((now, progress));
        }
        views
    }
}

async fn job(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: JobId = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("job id: {e}")))?;
    let id = id.to_string();
    let job = c
        .store()
        .dashboard_job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let slot = {
        let mut jobs = d.jobs.lock().expect("not poisoned");
        if jobs.len() >= JOB_CACHE && !jobs.contains_key(&id) {
            jobs.clear();
        }
        jobs.entry(id.clone()).or_default().clone()
    };
    // A finished job's page changes only with its row (backtracking
    // reopens it): keep it while the row is the same.
    let key = if matches!(job.state.as_str(), "done" | "failed" | "cancelled") {
        let mut h = std::hash::DefaultHasher::new();
        (
            &job.state,
            job.units_accepted,
            job.units_failed,
            job.output_version,
        )
            .hash(&mut h);
        (u64::MAX, 0, h.finish() | 1)
    } else {
        live_key(&c, 0)
    };
    let answer = shared(
        &slot,
        key,
        |d: &JobDetail| d.units.total >= LARGE,
        async || {
            let now = c.now_ms();
            let store = c.store();
            let groups = store.job_replica_groups(&id).await?;
            let unit_error = if job.units_failed > 0 {
                store.job_unit_error(&id).await?
            } else {
                None
            };
            let from = job.created_ms;
            let to = job.finished_ms.unwrap_or(now).max(from);
            // About 60 points, in whole seconds.
            let bucket_ms = ((to - from) / 60 / 1000 + 1) * 1000;
            let n = ((to - from) / bucket_ms + 1) as usize;
            let mut counts = vec![0u64; n];
            for (bucket, k) in store.job_accepted_per_bucket(&id, from, bucket_ms).await? {
                counts[bucket.clamp(0, n as i64 - 1) as usize] += k;
            }
            let units = UnitCounts {
                total: job.units_total,
                waiting: job
                    .units_total
                    .saturating_sub(job.units_accepted + job.units_failed + job.units_in_progress),
                in_progress: job.units_in_progress,
                accepted: job.units_accepted,
                failed: job.units_failed,
            };
            let (mut replicas, errors) = replica_outcomes(&groups);
            // The kept outcomes count replicas in the states they end in;
            // those in flight come from the leases' own index, and the
            // rest of those leased are back and awaiting quorum.
            replicas.in_progress = job.replicas_in_progress;
            replicas.returned = job
                .replicas_leased
                .saturating_sub(replicas.total + job.replicas_in_progress);
            // (The job row and the outcomes are read one after the other;
            // the parts always add up to the total shown.)
            replicas.total += replicas.in_progress + replicas.returned;
            let output_url = job
                .output
                .as_ref()
                .map(|_| format!("{}/jobs/{id}/output", protocol::API_PREFIX));
            let job = d.with_rates(vec![job], now).remove(0);
            Ok(JobDetail {
                job,
                units,
                replicas,
                errors,
                unit_error,
                accepted: Series {
                    from_ms: from,
                    bucket_ms,
                    counts,
                },
                output_url,
            })
        },
    )
    .await?;
    Ok(Json(AsOf {
        now_ms: c.now_ms(),
        answer: &*answer,
    })
    .into_response())
}

/// Replica counts by state, and failures by kind.
fn replica_outcomes(groups: &[ReplicaGroup]) -> (ReplicaCounts, Vec<ErrorGroup>) {
    let mut r = ReplicaCounts::default();
    let mut errors: BTreeMap<&str, ErrorGroup> = BTreeMap::new();
    for g in groups {
        r.total += g.count;
        match g.state.as_str() {
            "in_progress" => r.in_progress += g.count,
            "returned" => r.returned += g.count,
            "valid" => r.valid += g.count,
            "invalid" => r.invalid += g.count,
            "errored" => r.errored += g.count,
            "timed_out" => r.timed_out += g.count,
            "discarded" => r.discarded += g.count,
            _ => {}
        }
        if let Some(kind) = &g.failure_kind {
            let e = errors.entry(kind).or_insert_with(|| ErrorGroup {
                kind: kind.clone(),
                count: 0,
                agreed: 0,
                example: None,
            });
            e.count += g.count;
            if g.state == "valid" {
                e.agreed += g.count;
            }
            if e.example.is_none() {
                e.example.clone_from(&g.example);
            }
        }
    }
    let mut errors: Vec<ErrorGroup> = errors.into_values().collect();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    (r, errors)
}

async fn workers(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
) -> ApiResult<Json<Arc<WorkersPage>>> {
    let answer = shared(
        &d.workers,
        live_key(&c, 0),
        WorkersPage::large,
        async || {
            let now = c.now_ms();
            let workers = c.store().workers(WORKERS_LIMIT, now).await?;
            let mut running = c.store().running_replicas(RUNNING_LIMIT + 1).await?;
            let running_truncated = running.len() > RUNNING_LIMIT as usize;
            running.truncate(RUNNING_LIMIT as usize);
            Ok(WorkersPage {
                now_ms: now,
                online_window_ms: ONLINE_WINDOW_MS,
                workers,
                running,
                running_truncated,
            })
        },
    )
    .await?;
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct LeaderQuery {
    limit: Option<u32>,
}

async fn leaderboard(
    State(c): State<Coordinator>,
    Extension(d): Extension<Arc<Dashboard>>,
    Query(q): Query<LeaderQuery>,
) -> ApiResult<Json<Arc<Leaderboard>>> {
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
