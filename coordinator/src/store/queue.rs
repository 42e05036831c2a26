//! The head of the queue, as a lease batch reads it: the running jobs and
//! their fair-share state, the [`fairshare::plan`] of how many replicas
//! each is given, and the planned jobs' wanted units, read per job (one
//! short range of the `units_wanted_by_job` index each: a batch's cost
//! does not grow with the units, or the jobs, waiting behind them), with
//! the placement keys the batch's workers already hold on them.

use super::Result;
use super::leasing::LeaseRequest;
use super::sql::IN_LIST_MAX;
use super::workers::WorkerRow;
use crate::fairshare::{self, Runnable};
use crate::placement::{Candidate, Held, Key};
use sqlx::{Sqlite, Transaction};
use std::collections::HashMap;

/// How many rounds of planning a batch takes at most: a round plans again
/// when a job turned out to have fewer units than it was given.
const PLAN_ROUNDS: usize = 4;

/// How many jobs' reads one statement carries (SQLite allows 500 terms in
/// a compound SELECT).
const JOBS_PER_READ: usize = 100;

/// A running job, with what this batch read of it.
#[derive(Debug)]
pub(super) struct JobHead {
    pub id: String,
    adaptive: bool,
    compare: bool,
    pub runnable: Runnable,
    /// Its wanted units read so far, in unit order.
    read: Vec<Candidate>,
    /// All of its wanted units are read.
    exhausted: bool,
}

/// What a batch offers its workers.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub jobs: Vec<JobHead>,
    /// The units offered, planned ones first (in the order their jobs were
    /// first given a replica), then the rest of what was read.
    pub pool: Vec<Candidate>,
    /// The job (index into `jobs`) of each unit of `pool`.
    pub job_of: HashMap<i64, usize>,
    /// Units that want replicas may wait beyond `pool`.
    pub partial: bool,
}

#[derive(sqlx::FromRow)]
struct RunningRow {
    id: String,
    submitter_id: Option<i64>,
    share: i64,
    submitter_pass: f64,
    priority: i64,
    pass: f64,
    fuel_estimate: Option<f64>,
    adaptive: bool,
    compare: bool,
}

#[derive(sqlx::FromRow)]
struct UnitRow {
    job: i64,
    id: i64,
    needed: i64,
    arch: Option<String>,
    wants_seasoned: bool,
    fresh: bool,
}

/// Plans a batch of `total` replicas and reads the units it offers. Without
/// `seasoned`, units that want a seasoned vote are left out.
pub(super) async fn read(
    tx: &mut Transaction<'_, Sqlite>,
    total: i64,
    seasoned: bool,
) -> Result<Queue> {
    let mut jobs = running(tx).await?;
    let mut given = Vec::new();
    let mut first = Vec::new();
    for _ in 0..PLAN_ROUNDS {
        let runnable: Vec<Runnable> = jobs.iter().map(|j| j.runnable.clone()).collect();
        (given, first) = fairshare::plan(&runnable, total);
        // Enough units for each job's share even if the batch's workers
        // already hold some of them.
        let wants: Vec<(usize, i64)> = given
            .iter()
            .enumerate()
            .filter(|&(i, &g)| g > 0 && !jobs[i].exhausted)
            .map(|(i, &g)| (i, 2 * g + 8 - jobs[i].read.len() as i64))
            .filter(|&(_, more)| more > 0)
            .collect();
        if wants.is_empty() {
            break;
        }
        for chunk in wants.chunks(JOBS_PER_READ) {
            read_units(tx, &mut jobs, chunk, seasoned).await?;
        }
        // A job that read fewer units than it was given is capped; plan
        // again, so that others take what it cannot.
        let short = given
            .iter()
            .enumerate()
            .any(|(i, &g)| jobs[i].runnable.cap.is_some_and(|cap| cap < g));
        if !short {
            break;
        }
    }
    Ok(offer(jobs, &given, &first))
}

/// The running jobs with their submitters' fair-share state.
async fn running(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<JobHead>> {
    let rows: Vec<RunningRow> = sqlx::query_as(
        "SELECT j.id, j.submitter_id, COALESCE(s.share, 1) AS share,
                COALESCE(s.pass, 0.0) AS submitter_pass, j.priority, j.pass,
                CAST(j.fuel_sampled AS REAL) / NULLIF(j.fuel_samples, 0) AS fuel_estimate,
                j.adaptive, j.compare
         FROM jobs j LEFT JOIN submitters s ON s.id = j.submitter_id
         WHERE j.state = 'running' ORDER BY j.created_ms, j.rowid",
    )
    .fetch_all(&mut **tx)
    .await?;
    let costs = fairshare::costs(&rows.iter().map(|r| r.fuel_estimate).collect::<Vec<_>>());
    Ok(rows
        .into_iter()
        .zip(costs)
        .map(|(r, cost)| JobHead {
            runnable: Runnable {
                submitter: r.submitter_id,
                share: r.share.max(1) as f64,
                submitter_pass: r.submitter_pass,
                priority: r.priority.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                pass: r.pass,
                cost,
                cap: None,
            },
            id: r.id,
            adaptive: r.adaptive,
            compare: r.compare,
            read: Vec::new(),
            exhausted: false,
        })
        .collect())
}

/// Reads up to `more` further wanted units of each job of `wants`, in one
/// statement; a job that has no more is marked exhausted and capped at
/// the replicas its units want.
async fn read_units(
    tx: &mut Transaction<'_, Sqlite>,
    jobs: &mut [JobHead],
    wants: &[(usize, i64)],
    seasoned: bool,
) -> Result<()> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new("");
    for (n, &(i, more)) in wants.iter().enumerate() {
        if n > 0 {
            q.push(" UNION ALL ");
        }
        let after = jobs[i].read.last().map_or(i64::MIN, |c| c.unit);
        q.push("SELECT * FROM (SELECT ")
            .push_bind(i as i64)
            .push(" AS job, u.id, u.needed, u.arch, u.wants_seasoned, ");
        if jobs[i].adaptive {
            q.push(
                "NOT EXISTS (SELECT 1 FROM replicas f
                             WHERE f.unit_id = u.id AND f.state <> 'discarded') AS fresh",
            );
        } else {
            q.push("FALSE AS fresh");
        }
        q.push(" FROM units u WHERE u.job_id = ")
            .push_bind(jobs[i].id.clone())
            .push(" AND u.needed > 0 AND u.id > ")
            .push_bind(after);
        if !seasoned {
            q.push(" AND NOT u.wants_seasoned");
        }
        q.push(" ORDER BY u.id LIMIT ").push_bind(more).push(")");
    }
    let mut rows: Vec<UnitRow> = q.build_query_as().fetch_all(&mut **tx).await?;
    rows.sort_unstable_by_key(|r| (r.job, r.id));
    let mut got: HashMap<usize, i64> = HashMap::new();
    for r in rows {
        let i = r.job as usize;
        *got.entry(i).or_default() += 1;
        let job = &mut jobs[i];
        job.read.push(Candidate {
            seasoned_only: r.wants_seasoned,
            ..Candidate::new(r.id, r.needed, r.arch, job.adaptive, job.compare, r.fresh)
        });
    }
    for &(i, more) in wants {
        if got.get(&i).copied().unwrap_or(0) < more {
            let job = &mut jobs[i];
            job.exhausted = true;
            job.runnable.cap = Some(job.read.iter().map(|c| c.needed).sum());
        }
    }
    Ok(())
}

/// The pool: each job's units up to the replicas it was given, jobs in the
/// order they were first given one; then every other unit read, in the
/// same job order (taken only by workers that could take none of the
/// planned ones: nothing is held back while a worker can take a unit).
fn offer(mut jobs: Vec<JobHead>, given: &[i64], first: &[usize]) -> Queue {
    let mut order: Vec<usize> = first.to_vec();
    order.extend((0..jobs.len()).filter(|i| !first.contains(i)));
    let mut planned = Vec::new();
    let mut rest = Vec::new();
    let mut job_of = HashMap::new();
    for &i in &order {
        let mut wanted = 0;
        for c in std::mem::take(&mut jobs[i].read) {
            job_of.insert(c.unit, i);
            if wanted < given[i] {
                wanted += c.needed;
                planned.push(c);
            } else {
                rest.push(c);
            }
        }
    }
    planned.extend(rest);
    let partial = jobs.iter().any(|j| !j.exhausted);
    Queue {
        jobs,
        pool: planned,
        job_of,
        partial,
    }
}

/// Which placement keys of the requesting workers are already on the units
/// of `pool`: one short index range per key and job read.
pub(super) async fn held_keys(
    tx: &mut Transaction<'_, Sqlite>,
    queue: &Queue,
    requests: &[&LeaseRequest],
) -> Result<Held> {
    let mut held = Held::default();
    // The range of unit ids read of each job.
    let mut ranges: HashMap<usize, (i64, i64)> = HashMap::new();
    for c in &queue.pool {
        let Some(&job) = queue.job_of.get(&c.unit) else {
            continue;
        };
        let r = ranges.entry(job).or_insert((c.unit, c.unit));
        r.0 = r.0.min(c.unit);
        r.1 = r.1.max(c.unit);
    }
    let mut ranges: Vec<(i64, i64)> = ranges.into_values().collect();
    ranges.sort_unstable();
    if ranges.is_empty() {
        return Ok(held);
    }
    let mut keys: Vec<Key> = requests.iter().flat_map(|r| r.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let accounts: Vec<&str> = keys
        .iter()
        .filter_map(|k| match k {
            Key::Account(a) => Some(a.as_str()),
            Key::Net(_) => None,
        })
        .collect();
    let nets: Vec<&str> = keys
        .iter()
        .filter_map(|k| match k {
            Key::Net(n) => Some(n.as_str()),
            Key::Account(_) => None,
        })
        .collect();
    for (column, wanted) in [("account_id", accounts), ("net", nets)] {
        if wanted.is_empty() {
            continue;
        }
        for chunk in ranges.chunks(JOBS_PER_READ) {
            // One list carries every key of a batch (2 * WRITE_BATCH <= IN_LIST_MAX).
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH k(key) AS (VALUES ");
            let mut list = q.separated(", ");
            for k in &wanted {
                list.push("(")
                    .push_bind_unseparated(k.to_string())
                    .push_unseparated(")");
            }
            q.push(") ");
            for (n, (lo, hi)) in chunk.iter().enumerate() {
                if n > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format!("SELECT unit_id, {column} AS k FROM replicas WHERE {column} IN k AND unit_id BETWEEN "))
                    .push_bind(*lo)
                    .push(" AND ")
                    .push_bind(*hi);
            }
            let rows: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut **tx).await?;
            for (unit, k) in rows {
                let key = if column == "net" {
                    Key::Net(k)
                } else {
                    Key::Account(k)
                };
                held.insert(unit, key);
            }
        }
    }
    Ok(held)
}
const _: () = assert!(2 * super::WRITE_BATCH <= IN_LIST_MAX);

#[derive(sqlx::FromRow)]
struct PastRow {
    job_id: String,
    id: i64,
    needed: i64,
    arch: Option<String>,
    adaptive: bool,
    compare: bool,
    fresh: bool,
    wants_seasoned: bool,
}

/// Wanted units past unit `after`, in unit order across jobs, that
/// `worker` may take (its architecture, none of its keys); with their
/// jobs' ids. Without `seasoned`, none that wants a seasoned vote. What a
/// worker falls back on when the planned units are all held by its keys.
pub(super) async fn past(
    tx: &mut Transaction<'_, Sqlite>,
    after: Option<i64>,
    worker: &WorkerRow,
    seasoned: bool,
    limit: i64,
) -> Result<Vec<(String, Candidate)>> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "SELECT u.job_id, u.id, u.needed, u.arch, j.adaptive, j.compare, u.wants_seasoned,
                CASE WHEN j.adaptive THEN NOT EXISTS (SELECT 1 FROM replicas f
                                                      WHERE f.unit_id = u.id AND f.state <> 'discarded')
                     ELSE FALSE END AS fresh
         FROM units u JOIN jobs j ON j.id = u.job_id
         WHERE u.needed > 0 AND j.state = 'running' AND u.id > ",
    );
    q.push_bind(after.unwrap_or(i64::MIN));
    if !seasoned {
        q.push(" AND NOT u.wants_seasoned");
    }
    q.push(" AND (u.arch IS NULL OR j.compare OR u.arch = ")
        .push_bind(worker.arch.clone())
        .push(") AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.unit_id = u.id AND (r.account_id = ")
        .push_bind(worker.account.clone())
        .push(" OR r.net = ")
        .push_bind(worker.net.clone())
        .push("))");
    q.push(" ORDER BY u.id LIMIT ").push_bind(limit);
    let rows: Vec<PastRow> = q.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let c = Candidate {
                seasoned_only: r.wants_seasoned,
                ..Candidate::new(r.id, r.needed, r.arch, r.adaptive, r.compare, r.fresh)
            };
            (r.job_id, c)
        })
        .collect())
}
