//! The head of the queue, as a lease batch reads it: the running jobs and
//! their fair-share state, the [`fairshare::plan`] of how many replicas
//! each is given, and the planned jobs' wanted units, read per job (one
//! short range of the `units_wanted_by_job` index each: a batch's cost
//! does not grow with the units, or the jobs, waiting behind them), with
//! the placement keys the batch's workers already hold on them.

use super::Result;
use super::leasing::LeaseRequest;
use super::sql::{IN_LIST_MAX, padded, push_list};
use super::workers::WorkerRow;
use crate::fairshare::{self, Runnable};
use crate::placement::{self, Candidate, Held, Key, Taker};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};

/// How many rounds a batch takes at most: a round plans, reads and lets
/// the workers take; the next plans again what they are still short of,
/// without the jobs that could give no more to this batch.
pub(super) const ROUNDS: usize = 4;

/// How many jobs' reads one statement carries (SQLite allows 500 terms in
/// a compound SELECT).
const JOBS_PER_READ: usize = 128;

/// A running job with units that want replicas, with what this batch did
/// with it.
#[derive(Debug)]
pub(super) struct JobHead {
    pub id: String,
    adaptive: bool,
    compare: bool,
    /// Its fair-share state, its passes moved by what it gave in earlier
    /// rounds of this batch.
    pub runnable: Runnable,
    /// The last unit read of it.
    last_read: Option<i64>,
    /// All of its wanted units are read.
    exhausted: bool,
    /// It gave fewer replicas than it was planned in a round: the batch's
    /// workers may take no more of what was read of it.
    stuck: bool,
    /// Replicas planned in the current round.
    given: i64,
}

/// What a batch offers its workers.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub jobs: Vec<JobHead>,
    /// The units read, each round's planned ones first (in the order their
    /// jobs were first given a replica), then the rest.
    pub pool: Vec<Candidate>,
    /// The job (index into `jobs`) of each unit of `pool`.
    pub job_of: HashMap<i64, usize>,
    /// The job of `pool[i]`, as `arrange` ordered it.
    pool_jobs: Vec<usize>,
    /// Replicas each job may still give in this round before the others
    /// have given theirs.
    budget: Vec<i64>,
    /// Units that want a seasoned vote are read.
    seasoned: bool,
    /// Fair share's clock as the batch read it ([`fairshare::lifted`]).
    pub clock: f64,
}

/// The units a round read anew: their ids, and each job's range of them.
#[derive(Debug, Default)]
pub(super) struct Fresh {
    units: Vec<i64>,
    ranges: HashMap<usize, (i64, i64)>,
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
    clock: f64,
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

impl Queue {
    /// The running jobs that have units wanting replicas (without
    /// `seasoned`, other than units wanting a seasoned vote), with their
    /// submitters' fair-share state; nothing read of them yet.
    pub(super) async fn open(tx: &mut Transaction<'_, Sqlite>, seasoned: bool) -> Result<Queue> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT j.id, j.submitter_id, COALESCE(s.share, 1) AS share,
                    COALESCE(s.pass, 0.0) AS submitter_pass, j.priority, j.pass,
                    CAST(j.fuel_sampled AS REAL) / NULLIF(j.fuel_samples, 0) AS fuel_estimate,
                    j.adaptive, j.compare, COALESCE((SELECT pass FROM fair_clock WHERE id = 1), 0.0) AS clock
             FROM jobs j LEFT JOIN submitters s ON s.id = j.submitter_id
             WHERE j.state = 'running'
               AND EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.needed > 0",
        );
        if !seasoned {
            q.push(" AND NOT u.wants_seasoned");
        }
        q.push(") ORDER BY j.created_ms, j.rowid");
        let rows: Vec<RunningRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        let rows_clock = rows.first().map_or(0.0, |r| r.clock);
        let costs = fairshare::costs(&rows.iter().map(|r| r.fuel_estimate).collect::<Vec<_>>());
        let jobs = rows
            .into_iter()
            .zip(costs)
            .map(|(r, cost)| JobHead {
                runnable: Runnable {
                    submitter: r.submitter_id,
                    share: r.share.max(1) as f64,
                    submitter_pass: fairshare::lifted(r.submitter_pass, r.clock),
                    priority: r.priority.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                    pass: r.pass,
                    cost,
                    cap: None,
                },
                id: r.id,
                adaptive: r.adaptive,
                compare: r.compare,
                last_read: None,
                exhausted: false,
                stuck: false,
                given: 0,
            })
            .collect();
        Ok(Queue {
            clock: rows_clock,
            jobs,
            seasoned,
            ..Queue::default()
        })
    }

    /// The passes, as the rounds moved them, of the submitters the batch
    /// could serve: each one with a job read that gave replicas, or not
    /// stuck; not one whose every job read was planned and gave none
    /// (units no requesting worker could take). Replicas of the final
    /// spill and of `look_past` are not in these passes, so the clock they
    /// move ([`fairshare::clock_after`]) lags, never leads.
    pub(super) fn servable_passes(&self) -> Vec<f64> {
        let taken = self.taken();
        let mut by_submitter: HashMap<i64, (f64, bool, bool)> = HashMap::new();
        for (j, &t) in self.jobs.iter().zip(&taken) {
            let Some(s) = j.runnable.submitter else {
                continue;
            };
            let e = by_submitter
                .entry(s)
                .or_insert((j.runnable.submitter_pass, false, true));
            e.1 |= t > 0;
            e.2 &= j.stuck;
        }
        by_submitter
            .into_values()
            .filter(|&(_, gave, stuck)| gave || !stuck)
            .map(|(pass, _, _)| pass)
            .collect()
    }

    /// Units that want replicas may wait beyond the pool.
    pub(super) fn partial(&self) -> bool {
        self.jobs.iter().any(|j| !j.exhausted)
    }

    /// Replicas taken of each job's units so far in this batch.
    pub(super) fn taken(&self) -> Vec<i64> {
        let mut taken = vec![0; self.jobs.len()];
        for c in &self.pool {
            if let Some(&j) = self.job_of.get(&c.unit) {
                taken[j] += c.taken;
            }
        }
        taken
    }

    /// What each job's units read so far still want.
    fn available(&self) -> Vec<i64> {
        let mut available = vec![0; self.jobs.len()];
        for c in &self.pool {
            if let Some(&j) = self.job_of.get(&c.unit) {
                available[j] += c.needed.max(0);
            }
        }
        available
    }

    /// Plans `total` more replicas among the jobs that can still give
    /// some, reads what the plan needs, and orders the pool: the planned
    /// units first. Returns the units read anew (whose held keys the batch
    /// must read).
    pub(super) async fn offer(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        total: i64,
    ) -> Result<Fresh> {
        let mut fresh = Fresh::default();
        let mut given = Vec::new();
        let mut first = Vec::new();
        // Plan; a job that turns out to have fewer units than it was given
        // is capped, and the plan made again.
        for _ in 0..ROUNDS {
            let available = self.available();
            let runnable: Vec<Runnable> = self
                .jobs
                .iter()
                .zip(&available)
                .map(|(j, &a)| Runnable {
                    cap: if j.stuck {
                        Some(0)
                    } else if j.exhausted {
                        Some(a)
                    } else {
                        None
                    },
                    ..j.runnable.clone()
                })
                .collect();
            (given, first) = fairshare::plan(&runnable, total, fairshare::quantum(total));
            // Enough units for each job's part even if the batch's workers
            // already hold some of them.
            let wants: Vec<(usize, i64)> = given
                .iter()
                .enumerate()
                .filter(|&(i, &g)| g > 0 && !self.jobs[i].exhausted)
                .map(|(i, &g)| (i, 2 * g + 2 - available[i]))
                .filter(|&(_, more)| more > 0)
                .collect();
            if wants.is_empty() {
                break;
            }
            for chunk in wants.chunks(JOBS_PER_READ) {
                self.read_units(tx, chunk, &mut fresh).await?;
            }
        }
        for (j, &g) in self.jobs.iter_mut().zip(&given) {
            j.given = g;
        }
        self.arrange(&given, &first);
        Ok(fresh)
    }

    /// Reads up to `more` further wanted units of each job of `wants`, in
    /// one statement; a job that has no more is marked exhausted. Adds the
    /// units read to `fresh`.
    async fn read_units(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        wants: &[(usize, i64)],
        fresh: &mut Fresh,
    ) -> Result<()> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("");
        // One text per padded count of jobs (`sql::padded_len`): the
        // padding repeats the last job's read with LIMIT 0.
        for (n, &(i, more)) in padded(wants).enumerate() {
            // A repeated last arm reads nothing.
            let more = if n < wants.len() { more } else { 0 };
            if n > 0 {
                q.push(" UNION ALL ");
            }
            let job = &self.jobs[i];
            q.push("SELECT * FROM (SELECT ")
                .push_bind(i as i64)
                .push(" AS job, u.id, u.needed, u.arch, u.wants_seasoned, CASE WHEN ")
                .push_bind(job.adaptive)
                .push(
                    " THEN NOT EXISTS (SELECT 1 FROM replicas f
                                       WHERE f.unit_id = u.id AND f.state <> 'discarded')
                     ELSE FALSE END AS fresh",
                );
            q.push(" FROM units u WHERE u.job_id = ")
                .push_bind(job.id.clone())
                .push(" AND u.needed > 0 AND u.id > ")
                .push_bind(job.last_read.unwrap_or(i64::MIN));
            if !self.seasoned {
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
            let job = &mut self.jobs[i];
            job.last_read = Some(r.id);
            let range = fresh.ranges.entry(i).or_insert((r.id, r.id));
            range.0 = range.0.min(r.id);
            range.1 = range.1.max(r.id);
            fresh.units.push(r.id);
            self.job_of.insert(r.id, i);
            self.pool.push(Candidate {
                seasoned_only: r.wants_seasoned,
                ..Candidate::new(r.id, r.needed, r.arch, job.adaptive, job.compare, r.fresh)
            });
        }
        for &(i, more) in wants {
            if got.get(&i).copied().unwrap_or(0) < more {
                self.jobs[i].exhausted = true;
            }
        }
        Ok(())
    }

    /// Orders the pool: each job's units up to the replicas it was given
    /// in this round, jobs in the order they were first given one; then
    /// every other unit, jobs in the same order (taken only by workers
    /// that could take none of the planned ones: nothing is held back
    /// while a worker can take a unit).
    fn arrange(&mut self, given: &[i64], first: &[usize]) {
        let mut order: Vec<usize> = vec![usize::MAX; self.jobs.len()];
        for (n, &i) in first.iter().enumerate() {
            order[i] = n;
        }
        for (next, o) in (first.len()..).zip(order.iter_mut().filter(|o| **o == usize::MAX)) {
            *o = next;
        }
        self.pool.sort_by_key(|c| {
            (
                self.job_of.get(&c.unit).map_or(usize::MAX, |&j| order[j]),
                c.unit,
            )
        });
        let mut planned = vec![0i64; self.jobs.len()];
        let mut tier: HashMap<i64, u8> = HashMap::new();
        for c in &self.pool {
            let Some(&j) = self.job_of.get(&c.unit) else {
                continue;
            };
            if c.needed > 0 && planned[j] < given[j] {
                planned[j] += c.needed;
                tier.insert(c.unit, 0);
            }
        }
        // A stable sort keeps the job order within each tier.
        self.pool
            .sort_by_key(|c| tier.get(&c.unit).copied().unwrap_or(1));
        self.pool_jobs = self
            .pool
            .iter()
            .map(|c| self.job_of.get(&c.unit).copied().unwrap_or(usize::MAX))
            .collect();
        self.budget = given.to_vec();
    }

    /// Takes up to `want` units for `taker`: within each job's part of
    /// this round, and with `spill` any unit read after that
    /// ([`placement::take_within`]).
    pub(super) fn take(
        &mut self,
        taker: &Taker,
        held: &mut Held,
        want: usize,
        spill: bool,
    ) -> Vec<i64> {
        placement::take_within(
            &mut self.pool,
            &self.pool_jobs,
            &mut self.budget,
            taker,
            held,
            (want, spill),
        )
    }

    /// After the batch's workers took from the pool, given what each job
    /// had given before the round: moves the passes by what each gave, and
    /// marks stuck each job that gave fewer than it was planned. Whether
    /// any did (another round can then give its part to others).
    pub(super) fn settle_round(&mut self, before: &[i64]) -> bool {
        let now = self.taken();
        let gave: Vec<i64> = now.iter().zip(before).map(|(n, b)| n - b).collect();
        let moved = fairshare::submitter_charges(
            self.jobs.iter().zip(&gave).map(|(j, &g)| (&j.runnable, g)),
        );
        let mut any = false;
        for (j, &gave) in self.jobs.iter_mut().zip(&gave) {
            if gave < j.given && !j.stuck {
                j.stuck = true;
                any = true;
            }
            j.runnable.pass += j.runnable.charge(gave).0;
            j.runnable.submitter_pass += moved.get(&j.runnable.submitter).copied().unwrap_or(0.0);
        }
        any
    }
}

/// Adds to `held` which placement keys of the requesting workers are
/// already on the units read anew: either one short index range per key
/// and job read (`replicas_one_per_account`, `replicas_one_per_net`), or,
/// when that is more seeks (many jobs, each read a little), the replicas
/// of each unit (`UNIQUE (unit_id, worker_id)`) matched here.
pub(super) async fn held_keys(
    tx: &mut Transaction<'_, Sqlite>,
    fresh: &Fresh,
    requests: &[&LeaseRequest],
    held: &mut Held,
) -> Result<()> {
    let mut ranges: Vec<(i64, i64)> = fresh.ranges.values().copied().collect();
    ranges.sort_unstable();
    if ranges.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<Key> = requests.iter().flat_map(|r| r.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    if fresh.units.len() < keys.len() * ranges.len() {
        return held_by_unit(tx, &fresh.units, &keys, held).await;
    }
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
            // Both lists padded (`sql::padded_len`): keys by repeating the
            // last, ranges by arms that read nothing.
            let mut list = q.separated(", ");
            for k in padded(&wanted) {
                list.push("(")
                    .push_bind_unseparated(k.to_string())
                    .push_unseparated(")");
            }
            q.push(") ");
            for (n, (lo, hi)) in padded(chunk).enumerate() {
                if n > 0 {
                    q.push(" UNION ALL ");
                }
                // A padding arm is switched off by its first term, which
                // SQLite tests before it reads anything.
                q.push(format!(
                    "SELECT unit_id, {column} AS k FROM replicas WHERE "
                ))
                .push_bind(n < chunk.len())
                .push(format!(" AND {column} IN k AND unit_id BETWEEN "))
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
    Ok(())
}

/// [`held_keys`] by the replicas of each unit: `keys` matched in memory.
async fn held_by_unit(
    tx: &mut Transaction<'_, Sqlite>,
    units: &[i64],
    keys: &[Key],
    held: &mut Held,
) -> Result<()> {
    let keys: HashSet<&Key> = keys.iter().collect();
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT unit_id, account_id, net FROM replicas WHERE unit_id IN (",
        );
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<(i64, String, Option<String>)> =
            q.build_query_as().fetch_all(&mut **tx).await?;
        for (unit, account, net) in rows {
            let mut found = vec![Key::Account(account)];
            found.extend(net.map(Key::Net));
            for k in found {
                if keys.contains(&k) {
                    held.insert(unit, k);
                }
            }
        }
    }
    Ok(())
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

/// Wanted units in unit order across jobs that
/// `worker` may take (its architecture, none of its keys); with their
/// jobs' ids. Without `seasoned`, none that wants a seasoned vote. What a
/// worker falls back on when the planned units are all held by its keys.
pub(super) async fn past(
    tx: &mut Transaction<'_, Sqlite>,
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
         WHERE u.needed > 0 AND j.state = 'running'",
    );
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
