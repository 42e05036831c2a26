//! A worker's leases: asking for work (`POST /work`), keeping them alive
//! (`POST /heartbeat`) and giving one back (`POST /replicas/{id}/release`).

use super::auth::{check_platform, require_worker};
use super::client_addr::ClientAddr;
use super::{ApiResult, parse};
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::Refusal;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use protocol::{Heartbeat, HeartbeatResponse, Lease, ReplicaId, WorkRequest, WorkResponse};

/// The most leases one work request gets.
pub const MAX_LEASES_PER_REQUEST: u32 = 64;

/// The most running units one heartbeat may report, and the most held
/// replicas a work request may name: far more than any worker holds (two
/// per slot).
const MAX_HEARTBEAT_UNITS: usize = 4096;
const MAX_HELD: usize = MAX_HEARTBEAT_UNITS;

/// The network a client address ([`super::client_addr`]) belongs to, for
/// placement: its /24 (IPv4) or /48 (IPv6).
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

/// The network a worker asking from `ip` is placed by: its prefix, or
/// none for a loopback client (a local demo, tests: every worker of one
/// machine would otherwise share one network and never check each other).
pub fn placement_network(ip: std::net::IpAddr) -> Option<String> {
    let loopback = match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    (!loopback).then(|| network_prefix(ip))
}

/// Asks for up to `max_units` leases.
#[utoipa::path(post, path = "/api/v1/work", tag = "leases",
    security(("worker_token" = [])),
    request_body = protocol::WorkRequest,
    responses((status = 200, description = "leases, maybe none", body = protocol::WorkResponse),
        (status = 400, description = "malformed", body = protocol::ErrorBody),
        (status = 401, description = "no worker token, or an unknown one", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`), or the replica is another worker's", body = protocol::ErrorBody),
        (status = 409, description = "another architecture than registered", body = protocol::ErrorBody),
        (status = 426, description = "another protocol or engine", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "work", skip_all, fields(worker))]
pub(super) async fn work(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    body: Result<Json<WorkRequest>, JsonRejection>,
) -> ApiResult<Json<WorkResponse>> {
    let mut worker = require_worker(&c, &headers).await?;
    tracing::Span::current().record("worker", tracing::field::display(worker.id));
    if c.config().trust.distinct_networks {
        worker.net = placement_network(client);
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
    // Asking for none gets none (a worker that only wants its answers).
    let max = req.max_units.min(MAX_LEASES_PER_REQUEST);
    let now = c.now_ms();
    if let Some(held) = &req.held
        && held.len() > MAX_HELD
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} held replicas in one work request; at most {MAX_HELD}",
            held.len()
        )));
    }
    let request = crate::store::LeaseRequest {
        worker,
        max,
        now,
        held: req.held,
    };
    let leased = c.inner.store.lease_request(request).await?;
    let rows = leased.leases;
    c.inner.metrics.leased(rows.len());
    for r in &rows {
        tracing::debug!(job = %r.job_id, unit = %r.unit_id, replica = %r.replica_id, "leased");
    }
    // Leases given back change the units as leases taken do.
    if !rows.is_empty() || leased.released > 0 {
        c.apply(leased.effects);
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

/// A worker's heartbeat: progress of its running units, which extends
/// their leases; the answer names the units it no longer holds.
#[utoipa::path(post, path = "/api/v1/heartbeat", tag = "leases",
    security(("worker_token" = [])),
    request_body = protocol::Heartbeat,
    responses((status = 200, description = "the leases extended, and the units given up", body = protocol::HeartbeatResponse),
        (status = 400, description = "malformed", body = protocol::ErrorBody),
        (status = 401, description = "no worker token, or an unknown one", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`), or the replica is another worker's", body = protocol::ErrorBody),
        (status = 413, description = "too many units", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "heartbeat", skip_all, fields(worker))]
pub(super) async fn heartbeat(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let worker = require_worker(&c, &headers).await?;
    tracing::Span::current().record("worker", tracing::field::display(worker.id));
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

/// A worker gives back a lease it will not run (it is stopping): the unit
/// goes to another worker at once. Releasing twice, or after the result,
/// changes nothing.
#[utoipa::path(post, path = "/api/v1/replicas/{id}/release", tag = "leases",
    security(("worker_token" = [])),
    params(("id" = protocol::ReplicaId, Path, description = "the replica's id")),
    responses((status = 204, description = "given back, or nothing to give back"),
        (status = 400, description = "not a replica id", body = protocol::ErrorBody),
        (status = 401, description = "no worker token, or an unknown one", body = protocol::ErrorBody),
        (status = 403, description = "the worker is banned (code `banned`), or the replica is another worker's", body = protocol::ErrorBody),
        (status = 404, description = "no such replica", body = protocol::ErrorBody)))]
#[tracing::instrument(name = "release", skip_all, fields(worker, replica = %id))]
pub(super) async fn release_replica(
    State(c): State<Coordinator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let worker = require_worker(&c, &headers).await?;
    tracing::Span::current().record("worker", tracing::field::display(worker.id));
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
