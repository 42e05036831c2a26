//! `GET /metrics`: the coordinator in the Prometheus text format. Events
//! are counted where their answers reach the coordinator (leases handed
//! out, uploads answered, units reopened by backtracking, requests by
//! route); totals that the database keeps exactly (replicas by outcome,
//! units accepted and failed, jobs by state, workers online) are read from
//! it at scrape time ([`crate::store::Totals`]); the store's writer times
//! its own batches ([`crate::store::WriterMetrics`]). Every metric is
//! listed in docs/metrics.md.

use crate::Coordinator;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;
use tracing::Instrument as _;

/// A worker is online if it asked for work or sent a heartbeat within
/// this long (an idle worker asks every second or so, a busy one beats
/// every 15 s).
pub const WORKER_ONLINE_MS: i64 = 120_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    /// `accepted`, `already_received`, or the error code of a refusal.
    answer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaOutcome {
    state: String,
    /// The failure kind ('' for none).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The coordinator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leases: Counter,
    uploads: Family<Answer, Counter>,
    reopened: Counter,
    request_seconds: Histograms<Route>,
    responses: Family<Status, Counter>,
    replicas: Family<ReplicaOutcome, Gauge>,
    leases_running: Gauge,
    units: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    workers_online: Gauge,
    workers_banned: Gauge,
    workers: Gauge,
    /// One scrape at a time: the gauges are set from the database, then
    /// encoded.
    scrape: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// Registers every metric, the store's writer's among them.
    pub fn new(writer: &crate::store::WriterMetrics) -> Metrics {
        let mut registry = Registry::with_prefix("wasm_at_home");
        let m = Metrics {
            leases: Counter::default(),
            uploads: Family::default(),
            reopened: Counter::default(),
            request_seconds: Family::new_with_constructor(latency),
            responses: Family::default(),
            replicas: Family::default(),
            leases_running: Gauge::default(),
            units: Family::default(),
            jobs: Family::default(),
            workers_online: Gauge::default(),
            workers_banned: Gauge::default(),
            workers: Gauge::default(),
            scrape: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "leases_issued",
            "Replicas leased to workers",
            m.leases.clone(),
        );
        r.register(
            "uploads",
            "Results uploaded, by how each was answered (accepted, already_received, or the refusal's error code)",
            m.uploads.clone(),
        );
        r.register(
            "units_reopened",
            "Accepted units reopened by backtracking (a caught cheat, an audit, an operator's ban)",
            m.reopened.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer an HTTP request, by method and matched route",
            m.request_seconds.clone(),
        );
        r.register(
            "responses",
            "HTTP answers by method, matched route and status",
            m.responses.clone(),
        );
        r.register(
            "replicas",
            "Replicas in each final state (valid, invalid, errored, timed_out, discarded, released) and failure kind, from the database",
            m.replicas.clone(),
        );
        r.register(
            "replicas_in_progress",
            "Replicas leased and not yet returned, from the database",
            m.leases_running.clone(),
        );
        r.register(
            "units",
            "Units of all jobs by state (accepted, failed, total), from the database",
            m.units.clone(),
        );
        r.register("jobs", "Jobs by state, from the database", m.jobs.clone());
        r.register(
            "workers_online",
            "Workers seen (work request or heartbeat) in the last 120 s",
            m.workers_online.clone(),
        );
        r.register(
            "workers_banned",
            "Workers banned by the operator",
            m.workers_banned.clone(),
        );
        r.register("workers", "Workers registered", m.workers.clone());
        r.register(
            "writer_batch_writes",
            "Writes (uploads, work requests, heartbeats) per group-commit transaction",
            writer.batch_writes.clone(),
        );
        r.register(
            "writer_commit_seconds",
            "Time to commit one group-commit transaction",
            writer.commit_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(crate) fn leased(&self, n: usize) {
        self.leases.inc_by(n as u64);
    }

    /// An upload answered `answer` (its status, or its error's code).
    pub(crate) fn uploaded(&self, answer: &str) {
        self.uploads
            .get_or_create(&Answer {
                answer: answer.to_string(),
            })
            .inc();
    }

    pub(crate) fn reopened(&self, units: u64) {
        self.reopened.inc_by(units);
    }

    /// The text of a scrape: the database's totals as of `now`, then
    /// everything.
    async fn encode(&self, c: &Coordinator, now: i64) -> Result<String, ApiError> {
        let _one = self.scrape.lock().await;
        let t = c.store().totals(now - WORKER_ONLINE_MS).await?;
        self.replicas.clear();
        for (state, kind, n) in t.replicas {
            self.replicas
                .get_or_create(&ReplicaOutcome { state, kind })
                .set(n);
        }
        self.leases_running.set(t.in_progress);
        for (state, n) in [
            ("accepted", t.units_accepted),
            ("failed", t.units_failed),
            ("total", t.units_total),
        ] {
            self.units
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n);
        }
        self.jobs.clear();
        for (state, n) in t.jobs {
            self.jobs.get_or_create(&StateLabel { state }).set(n);
        }
        self.workers_online.set(t.workers_online);
        self.workers_banned.set(t.workers_banned);
        self.workers.set(t.workers);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot encode metrics: {e}")))?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub(crate) async fn serve(State(c): State<Coordinator>) -> Result<Response, ApiError> {
    let text = c.inner.metrics.encode(&c, c.now_ms()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Middleware of every route: times the request under its matched path
/// (`/api/v1/jobs/{id}`, never the raw URI, so ids make no new series),
/// and runs it in a `request` span naming the route.
pub(crate) async fn track(State(c): State<Coordinator>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    // Every log line of a request carries its route; the handlers' own
    // spans add the worker, job and replica.
    let span = tracing::info_span!("request", method = %method, route = %route);
    let response = next.run(req).instrument(span).await;
    let m = &c.inner.metrics;
    m.request_seconds
        .get_or_create(&Route {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.responses
        .get_or_create(&Status {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
