//! Leasing: serving a batch of work requests inside the writer's
//! transaction. The head of the queue is read once for the batch, who
//! holds what on it once, the [`placement`] policy assigns units in
//! memory, and the replicas of the whole batch are inserted, and their
//! units, jobs and workers updated, with one statement each.
//!
//! The schema backs the policy: `UNIQUE (unit_id, worker_id)`, a unique
//! index on (account, unit) and on (network, unit), and a guard that keeps
//! `units.needed` from going below zero, so no writer, however many there
//! are, can place two replicas of a unit with one account.

use super::queue::{self, JobHead, Queue};
use super::settling::{Effects, Settling};
use super::sql::{
    IN_LIST_MAX, StandingColumns, VALUES_MAX, count, hash, job_id, push_list, push_rows, tally,
};
use super::workers::WorkerRow;
use super::{Error, Policy, Result};
use crate::fairshare;
use crate::placement::{self, Candidate, Held, Key, Taker};
use crate::trust::DAY_MS;
use protocol::{BlobHash, JobId, Limits, ReplicaId, UnitId};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};

/// A work request, as the store serves it.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub worker: WorkerRow,
    pub max: u32,
    pub now: i64,
    /// The replicas the worker says it holds: its other leases are given
    /// back first ([`crate::lease::orphaned`]). `None`: none are.
    pub held: Option<Vec<ReplicaId>>,
}

/// A replica just leased, with what the worker needs to run it.
#[derive(Clone, Debug)]
pub struct LeaseRow {
    pub replica_id: ReplicaId,
    pub unit_id: UnitId,
    pub job_id: JobId,
    pub module: BlobHash,
    pub input: Vec<u8>,
    pub limits: Limits,
    pub deadline_ms: i64,
    pub fuel_estimate: Option<u64>,
}

/// What a work request is answered with.
#[derive(Clone, Debug, Default)]
pub struct Leased {
    /// The replicas just leased to the worker.
    pub leases: Vec<LeaseRow>,
    /// How many of its other leases were given back first.
    pub released: usize,
    /// What giving back the batch's leases changed, for the caller to act
    /// on: with the first request of the batch that gave any back, so
    /// that they are acted on once.
    pub effects: Effects,
}

impl LeaseRequest {
    pub(super) fn keys(&self) -> Vec<Key> {
        std::iter::once(Key::Account(self.worker.account.clone()))
            .chain(self.worker.net.clone().map(Key::Net))
            .collect()
    }
}

/// Serves a batch of work requests: per request, units of the jobs the
/// fair-share plan gives replicas to ([`Queue`]) that the placement policy
/// lets its worker take.
pub(super) async fn lease_batch(
    tx: &mut Transaction<'_, Sqlite>,
    policy: &Policy,
    requests: &[&LeaseRequest],
) -> Result<Vec<Leased>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let now = requests.iter().map(|r| r.now).max().unwrap_or_default();
    let (released, effects) = give_back_orphans(tx, policy, requests, now).await?;
    let (mut room, trusted, seasoned) = standings(tx, policy, requests, now).await?;
    let asks: Vec<(String, i64)> = requests
        .iter()
        .map(|r| (r.worker.id.to_string(), i64::from(r.max)))
        .collect();
    let wants = placement::share_room(&asks, &mut room);
    let total: i64 = wants.iter().sum();
    if total == 0 {
        let none = requests.iter().map(|_| Vec::new()).collect();
        return Ok(answered(none, &released, effects));
    }
    // Units that want a seasoned vote are read only for a batch that can
    // give one: a crowd of young workers is not held up behind them.
    let any_seasoned = requests
        .iter()
        .any(|r| seasoned.contains(&r.worker.id.to_string()));
    let takers: Vec<Taker> = requests
        .iter()
        .map(|req| Taker {
            worker: req.worker.id.to_string(),
            keys: req.keys(),
            arch: req.worker.arch.clone(),
            trusted: trusted.contains(&req.worker.id.to_string()),
            seasoned: seasoned.contains(&req.worker.id.to_string()),
        })
        .collect();
    let mut queue = Queue::open(tx, any_seasoned).await?;
    let mut held = Held::default();
    let mut chosen: Vec<Vec<i64>> = vec![Vec::new(); requests.len()];
    let short = |chosen: &[Vec<i64>]| -> i64 {
        wants
            .iter()
            .zip(chosen)
            .map(|(&w, c)| w - c.len() as i64)
            .sum()
    };
    // Rounds: plan what the workers are short of, read it, let them take
    // within each job's part; a job whose units they could not take
    // leaves its part to the next round's plan. Once no round is left or
    // would plan differently, the workers still short take any unit read
    // (a part spilled earlier would go to whoever read most, not by share).
    for round in 1..=queue::ROUNDS {
        let missing = short(&chosen);
        if missing == 0 {
            break;
        }
        let before = queue.taken();
        let ranges = queue.offer(tx, missing).await?;
        queue::held_keys(tx, &ranges, requests, &mut held).await?;
        let mut take = |spill: bool, queue: &mut Queue| {
            for ((taker, &want), mine) in takers.iter().zip(&wants).zip(&mut chosen) {
                let more = want as usize - mine.len();
                if more > 0 {
                    mine.extend(queue.take(taker, &mut held, more, spill));
                }
            }
        };
        take(false, &mut queue);
        if queue.settle_round(&before) && round < queue::ROUNDS {
            continue;
        }
        take(true, &mut queue);
        break;
    }
    // Rare: a worker whose keys hold what the jobs offered, or whose
    // architecture runs none of it. Look past it, for this worker alone.
    if short(&chosen) > 0 && queue.partial() {
        for (((req, taker), &want), mine) in
            requests.iter().zip(&takers).zip(&wants).zip(&mut chosen)
        {
            let more = want - mine.len() as i64;
            if more > 0 {
                look_past(tx, &mut queue, req, taker, &mut held, more, mine).await?;
            }
        }
    }
    let mut answers = lease_rows(tx, requests, &chosen).await?;
    insert_replicas(tx, requests, &mut answers).await?;
    count_leases(tx, requests, &answers, &queue, now).await?;
    Ok(answered(answers, &released, effects))
}

/// Each request's leases, with how many it gave back; the batch's
/// `effects` go with the first that gave any back.
fn answered(leases: Vec<Vec<LeaseRow>>, released: &[usize], mut effects: Effects) -> Vec<Leased> {
    leases
        .into_iter()
        .zip(released)
        .map(|(leases, &released)| Leased {
            leases,
            released,
            effects: if released > 0 {
                std::mem::take(&mut effects)
            } else {
                Effects::default()
            },
        })
        .collect()
}

/// Gives back the leases each reconciling request's worker holds at the
/// coordinator but no longer has, and settles their units again: they
/// want a replica from another worker at once. Returns how many each
/// request gave back, and what settling changed.
async fn give_back_orphans(
    tx: &mut Transaction<'_, Sqlite>,
    policy: &Policy,
    requests: &[&LeaseRequest],
    now: i64,
) -> Result<(Vec<usize>, Effects)> {
    let mut released = Vec::new();
    let mut per_request = Vec::with_capacity(requests.len());
    for req in requests {
        let Some(held) = &req.held else {
            per_request.push(0);
            continue;
        };
        // Only leases still live (one that ran out is a timeout, not a
        // release), and granted before this request came (a stale request
        // cannot give back what a later one got).
        let in_flight: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM replicas WHERE worker_id = ? AND state = 'in_progress'
               AND deadline_ms >= ? AND leased_ms <= ?",
        )
        .bind(req.worker.id.to_string())
        .bind(req.now)
        .bind(req.now)
        .fetch_all(&mut **tx)
        .await?;
        let in_flight: Vec<ReplicaId> = in_flight.into_iter().map(ReplicaId).collect();
        let orphaned = crate::lease::orphaned(&in_flight, held);
        per_request.push(orphaned.len());
        released.extend(orphaned);
    }
    if released.is_empty() {
        return Ok((per_request, Effects::default()));
    }
    let mut settling = Settling::default();
    for chunk in released.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "UPDATE replicas SET state = 'released' WHERE state = 'in_progress' AND id IN (",
        );
        push_list(&mut q, chunk.iter().map(|r| r.0));
        q.push(") RETURNING unit_id");
        let units: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
        settling.units.extend(units);
    }
    tracing::info!(
        leases = released.len(),
        "leases their workers no longer hold given back"
    );
    let effects = settling.apply(tx, policy, now).await?;
    Ok((per_request, effects))
}

#[derive(sqlx::FromRow)]
struct StandingRow {
    id: String,
    #[sqlx(flatten)]
    standing: StandingColumns,
    in_flight: i64,
    /// When its account was created (its own registration, without one).
    account_created_ms: i64,
}

/// Marks the requesting workers seen (and from which network), and reads
/// how many more leases each may take ([`crate::trust::Trust::room`]),
/// which are trusted, and which are of a seasoned account now
/// ([`crate::trust::Trust::seasoned`]).
async fn standings(
    tx: &mut Transaction<'_, Sqlite>,
    policy: &Policy,
    requests: &[&LeaseRequest],
    now: i64,
) -> Result<(HashMap<String, i64>, HashSet<String>, HashSet<String>)> {
    let mut workers: Vec<(String, Option<String>)> = requests
        .iter()
        .map(|r| (r.worker.id.to_string(), r.worker.net.clone()))
        .collect();
    workers.sort_unstable();
    workers.dedup_by(|a, b| a.0 == b.0);
    let today = now.div_euclid(DAY_MS);
    let mut room = HashMap::new();
    let mut trusted = HashSet::new();
    let mut seasoned = HashSet::new();
    for chunk in workers.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, net) AS (");
        push_rows(&mut q, 2, chunk, |mut b, (id, net)| {
            b.push_bind(id.clone()).push_bind(net.clone());
        });
        q.push(") UPDATE workers SET net = v.net, last_seen_ms = ")
            .push_bind(now);
        q.push(
            " FROM v WHERE workers.id = v.id RETURNING workers.id AS id, slots, valid_count, quota, quota_day, leased_today, consecutive_valid, invalid_count, caught,
                 (SELECT COUNT(*) FROM replicas r
                     WHERE r.worker_id = workers.id AND r.state = 'in_progress') AS in_flight,
                 COALESCE((SELECT a.created_ms FROM accounts a WHERE a.id = workers.account_id),
                          workers.created_ms) AS account_created_ms",
        );
        let rows: Vec<StandingRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        for r in rows {
            let standing = r.standing.standing();
            room.insert(
                r.id.clone(),
                policy.trust.room(&standing, r.in_flight, today),
            );
            if policy.trust.seasoned(r.account_created_ms, now) {
                seasoned.insert(r.id.clone());
            }
            if policy.trust.trusted(&standing) {
                trusted.insert(r.id);
            }
        }
    }
    Ok((room, trusted, seasoned))
}

/// Reads units past the shared pool that `req`'s worker may take, in unit
/// order across jobs, and takes up to `more` of them for it.
async fn look_past(
    tx: &mut Transaction<'_, Sqlite>,
    queue: &mut Queue,
    req: &LeaseRequest,
    taker: &Taker,
    held: &mut Held,
    more: i64,
    mine: &mut Vec<i64>,
) -> Result<()> {
    let want = mine.len() as i64 + more;
    // Units of the pool come back too (their replicas taken in this batch
    // are not written yet): read past them.
    let limit = more + queue.pool.len() as i64;
    let found = queue::past(tx, &req.worker, taker.seasoned, limit).await?;
    let jobs: HashMap<String, usize> = queue
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.clone(), i))
        .collect();
    let mut at: HashMap<i64, usize> = queue
        .pool
        .iter()
        .enumerate()
        .map(|(i, c)| (c.unit, i))
        .collect();
    for (job, mut fresh) in found {
        if mine.len() as i64 == want {
            break;
        }
        // An earlier request of this batch may have read it already.
        let c = match at.get(&fresh.unit) {
            Some(&i) => &mut queue.pool[i],
            None => {
                let Some(&j) = jobs.get(&job) else {
                    continue;
                };
                at.insert(fresh.unit, queue.pool.len());
                queue.job_of.insert(fresh.unit, j);
                fresh.read_for = Some(taker.worker.clone());
                queue.pool.push(fresh);
                queue.pool.last_mut().expect("just pushed")
            }
        };
        if placement::take(c, taker, held) {
            mine.push(c.unit);
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct DetailRow {
    id: i64,
    job_id: String,
    input: Vec<u8>,
    module: String,
    fuel: i64,
    memory_bytes: i64,
    output_bytes: i64,
    lease_secs: i64,
    fuel_estimate: Option<i64>,
}

/// What the workers need to run the units chosen for them (replica ids
/// still to be filled in).
async fn lease_rows(
    tx: &mut Transaction<'_, Sqlite>,
    requests: &[&LeaseRequest],
    chosen: &[Vec<i64>],
) -> Result<Vec<Vec<LeaseRow>>> {
    let mut units: Vec<i64> = chosen.iter().flatten().copied().collect();
    units.sort_unstable();
    units.dedup();
    let mut details: HashMap<i64, DetailRow> = HashMap::new();
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT u.id, u.job_id, u.input, j.module, j.fuel, j.memory_bytes, j.output_bytes,
                    j.lease_secs, j.fuel_sampled / NULLIF(j.fuel_samples, 0) AS fuel_estimate
             FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.id IN (",
        );
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<DetailRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        details.extend(rows.into_iter().map(|r| (r.id, r)));
    }
    let mut answers = Vec::with_capacity(requests.len());
    for (req, mine) in requests.iter().zip(chosen) {
        let mut leases = Vec::with_capacity(mine.len());
        for unit in mine {
            let r = details
                .get(unit)
                .ok_or_else(|| Error::corrupt("lease", format!("unit {unit} vanished")))?;
            leases.push(LeaseRow {
                replica_id: ReplicaId(0),
                unit_id: UnitId(*unit),
                job_id: job_id(&r.job_id)?,
                module: hash(&r.module)?,
                input: r.input.clone(),
                limits: Limits {
                    fuel: count(r.fuel),
                    memory_bytes: count(r.memory_bytes),
                    output_bytes: count(r.output_bytes),
                },
                deadline_ms: req.now + r.lease_secs * 1000,
                fuel_estimate: r.fuel_estimate.map(|f| f.max(1) as u64),
            });
        }
        answers.push(leases);
    }
    Ok(answers)
}

/// Inserts a replica per lease, one statement per chunk, and fills in the
/// replica ids.
async fn insert_replicas(
    tx: &mut Transaction<'_, Sqlite>,
    requests: &[&LeaseRequest],
    answers: &mut [Vec<LeaseRow>],
) -> Result<()> {
    // (unit, worker) is unique, so the pair names the replica.
    let mut ids: HashMap<(i64, String), i64> = HashMap::new();
    let all: Vec<(&LeaseRow, &LeaseRequest)> = answers
        .iter()
        .zip(requests)
        .flat_map(|(leases, req)| leases.iter().map(move |l| (l, *req)))
        .collect();
    for chunk in all.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO replicas (unit_id, worker_id, account_id, net, state, leased_ms, deadline_ms)
             SELECT * FROM (",
        );
        push_rows(&mut q, 7, chunk, |mut b, (l, req)| {
            b.push_bind(l.unit_id.0)
                .push_bind(req.worker.id.to_string())
                .push_bind(req.worker.account.clone())
                .push_bind(req.worker.net.clone())
                .push_bind("in_progress")
                .push_bind(req.now)
                .push_bind(l.deadline_ms);
        });
        // The padding rows are left out.
        q.push(") WHERE column1 IS NOT NULL RETURNING id, unit_id, worker_id");
        let rows: Vec<(i64, i64, String)> = q.build_query_as().fetch_all(&mut **tx).await?;
        ids.extend(
            rows.into_iter()
                .map(|(id, unit, worker)| ((unit, worker), id)),
        );
    }
    for (leases, req) in answers.iter_mut().zip(requests) {
        let worker = req.worker.id.to_string();
        for l in leases {
            l.replica_id =
                ReplicaId(*ids.get(&(l.unit_id.0, worker.clone())).ok_or_else(|| {
                    Error::corrupt("lease insert", "a replica id was not returned")
                })?);
        }
    }
    Ok(())
}

/// Counts the batch's leases: replicas leased per job (for the dashboard)
/// and their fuel charged to each job and submitter (fair share), what
/// each touched unit still wants (guarded: never below zero), and the
/// leases against each worker's daily quota (guarded: never past it).
async fn count_leases(
    tx: &mut Transaction<'_, Sqlite>,
    requests: &[&LeaseRequest],
    answers: &[Vec<LeaseRow>],
    queue: &Queue,
    now: i64,
) -> Result<()> {
    let mut per_job: Vec<(JobId, i64)> = Vec::new();
    for l in answers.iter().flatten() {
        tally(&mut per_job, l.job_id, 1);
    }
    let heads: HashMap<&str, &JobHead> = queue.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut charged: Vec<(&JobHead, i64)> = Vec::with_capacity(per_job.len());
    for (job, n) in per_job {
        let id = job.to_string();
        let head = heads.get(id.as_str()).ok_or_else(|| {
            Error::corrupt(
                "lease",
                format!("a unit of job {id} leased, which was not read"),
            )
        })?;
        charged.push((head, n));
    }
    let charges: Vec<(String, i64, f64)> = charged
        .iter()
        .map(|(head, n)| (head.id.clone(), *n, head.runnable.charge(*n).0))
        .collect();
    let mut per_submitter: Vec<(i64, f64)> =
        fairshare::submitter_charges(charged.iter().map(|(head, n)| (&head.runnable, *n)))
            .into_iter()
            .filter_map(|(s, pass)| Some((s?, pass)))
            .collect();
    // In one order: deterministic statements, and, on a database that
    // locks rows (PostgreSQL, issue 14), coordinators that lock alike.
    per_submitter.sort_by_key(|&(s, _)| s);
    for chunk in charges.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, n, fuel) AS (");
        push_rows(&mut q, 3, chunk, |mut b, (id, n, fuel)| {
            b.push_bind(id.clone()).push_bind(*n).push_bind(*fuel);
        });
        q.push(
            ") UPDATE jobs SET replicas_leased = replicas_leased + v.n, pass = pass + v.fuel
               FROM v WHERE jobs.id = v.id",
        );
        q.build().execute(&mut **tx).await?;
    }
    for chunk in per_submitter.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, pass) AS (");
        push_rows(&mut q, 2, chunk, |mut b, (id, pass)| {
            b.push_bind(*id).push_bind(*pass);
        });
        // A pass left behind the clock is served from the clock, and so
        // stored (`fairshare::lifted`).
        q.push(") UPDATE submitters SET pass = MAX(submitters.pass, ")
            .push_bind(queue.clock)
            .push(") + v.pass FROM v WHERE submitters.id = v.id");
        q.build().execute(&mut **tx).await?;
    }
    let clock = fairshare::clock_after(queue.clock, queue.servable_passes());
    if clock > queue.clock {
        sqlx::query("UPDATE fair_clock SET pass = MAX(pass, ?) WHERE id = 1")
            .bind(clock)
            .execute(&mut **tx)
            .await?;
    }
    let touched: Vec<&Candidate> = queue.pool.iter().filter(|c| c.taken > 0).collect();
    for chunk in touched.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, taken, arch, alone) AS (");
        push_rows(&mut q, 4, chunk, |mut b, c| {
            b.push_bind(c.unit)
                .push_bind(c.taken)
                .push_bind(c.arch.clone())
                .push_bind(c.alone);
        });
        q.push(
            ") UPDATE units SET needed = CASE WHEN v.alone THEN 0 ELSE units.needed - v.taken END,
                                starved_ms = NULL,
                                quorum = CASE WHEN v.alone THEN 1 ELSE units.quorum END,
                                arch = COALESCE(units.arch, v.arch)
               FROM v WHERE units.id = v.id",
        );
        q.build().execute(&mut **tx).await?;
    }
    let today = now.div_euclid(DAY_MS);
    let mut leased: Vec<(String, i64)> = Vec::new();
    for (req, leases) in requests.iter().zip(answers) {
        if !leases.is_empty() {
            tally(&mut leased, req.worker.id.to_string(), leases.len() as i64);
        }
    }
    for chunk in leased.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, n) AS (");
        push_rows(&mut q, 2, chunk, |mut b, (id, n)| {
            b.push_bind(id.clone()).push_bind(*n);
        });
        q.push(") UPDATE workers SET leased_today = CASE WHEN quota_day = ");
        q.push_bind(today)
            .push(" THEN leased_today + v.n ELSE v.n END, quota_day = ")
            .push_bind(today)
            .push(" FROM v WHERE workers.id = v.id");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
