//! Settling: deciding units from their replicas and applying the decisions
//! inside the caller's transaction. The store reads each unit and its
//! replicas into plain views, the [`validator`] and [`trust`] policies
//! decide, and a few set-wise statements apply every decision, each
//! conditional on the state it leaves, so applying a decision twice
//! changes nothing the second time and credit is granted exactly once.
//!
//! [`trust`]: crate::trust

use super::sql::{IN_LIST_MAX, VALUES_MAX, hash, job_id, push_list, push_rows, replica_state};
use super::{Error, Policy, Result, workers};
use crate::credit;
use crate::lease;
use crate::trust::{Counter, Trust, WorkerDelta, quorum_now};
use crate::validator::{self, Decision, Replica, ReplicaState, UnitOutcome, Verdict};
use protocol::{FailureKind, JobId, ReplicaId};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};

/// What recording a result changed, for the caller to act on.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// Jobs whose every unit is now settled: ready to reduce.
    pub jobs_to_reduce: Vec<JobId>,
    /// Accepted units reopened by backtracking.
    pub reopened: u64,
}

/// The units to settle and the worker counters to change in one
/// transaction.
#[derive(Debug, Default)]
pub(super) struct Settling {
    pub units: Vec<i64>,
    pub workers: HashMap<String, WorkerDelta>,
}

/// A worker caught with an invalid result: the replica judged invalid, so
/// that the votes backtracking discards can be given back if that
/// judgement is overturned (`None`: nothing can overturn it, as a ban).
pub(super) type Caught = (String, Option<i64>);

/// Rounds of settling one transaction takes at most: each round reopens
/// or restores only what the one before judged, so real chains are a few
/// rounds long. A longer one stops there, and the units it had yet to
/// settle are marked (`units.unsettled`) for the lease expiry round to
/// settle ([`Store::expire_leases`]), instead of failing the whole batch.
/// One round in this crate's unit tests, so that a chain of two reaches it.
///
/// [`Store::expire_leases`]: super::Store::expire_leases
const MAX_ROUNDS: usize = if cfg!(test) { 1 } else { 1000 };

/// One replica of a unit being settled, with its unit's and job's columns.
#[derive(sqlx::FromRow)]
struct ReplicaRow {
    id: i64,
    unit_id: i64,
    worker_id: String,
    state: String,
    output_hash: Option<String>,
    fuel_used: Option<i64>,
    failure_kind: Option<String>,
    output_class: Option<String>,
    compare: bool,
    unit_state: String,
    accepted_replica: Option<i64>,
    quorum: i64,
    job_quorum: i64,
    max_replicas: i64,
    starved_ms: Option<i64>,
    lease_secs: i64,
    leased_ms: i64,
    returned_ms: Option<i64>,
    young_accounts: bool,
    wants_seasoned: bool,
    /// When its account was created (NULL with the account-age rule off).
    account_created_ms: Option<i64>,
}

impl ReplicaRow {
    /// What it returned, reduced to what replicas must agree on.
    fn verdict(&self) -> Result<Option<Verdict>> {
        let Some(fuel) = self.fuel_used else {
            return Ok(None);
        };
        let (output_hash, fuel) = if self.compare {
            // Equivalent outputs are one vote, and equivalent outputs may
            // take different paths: the class alone must agree.
            (self.output_class.as_ref().or(self.output_hash.as_ref()), 0)
        } else {
            (self.output_hash.as_ref(), fuel as u64)
        };
        Ok(match (output_hash, &self.failure_kind) {
            (Some(h), _) => Some(Verdict::Output {
                hash: hash(h)?,
                fuel,
            }),
            (None, Some(k)) => {
                let kind =
                    FailureKind::parse(k).ok_or_else(|| Error::corrupt("failure kind", k))?;
                kind.is_deterministic()
                    .then_some(Verdict::Failure { kind, fuel })
            }
            (None, None) => None,
        })
    }
}

/// A unit as the policies see it: its state and quorums, and every replica
/// ever issued for it, with their workers.
struct UnitView {
    id: i64,
    open: bool,
    accepted: Option<ReplicaId>,
    quorum: u32,
    job_quorum: u32,
    max_replicas: u32,
    /// Its job compares outputs with `compare`.
    compare: bool,
    /// No active worker has been able to take it for two lease periods.
    starved: bool,
    /// The account-age rule applies to it; it wants a seasoned vote now.
    age_rule: bool,
    wants_seasoned: bool,
    replicas: Vec<Replica>,
    /// Per replica: its worker, and the fuel it reported.
    workers: Vec<String>,
    fuel_used: Vec<i64>,
    /// Per replica: the speed it proves if judged valid (none where fuel
    /// is not voted on, as with `compare`).
    speeds: Vec<Option<i64>>,
}

impl UnitView {
    fn from_rows(rows: &[ReplicaRow], now: i64, trust: &Trust) -> Result<Option<UnitView>> {
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut view = UnitView {
            id: first.unit_id,
            open: first.unit_state == "open",
            accepted: first.accepted_replica.map(ReplicaId),
            quorum: first.quorum as u32,
            job_quorum: first.job_quorum as u32,
            max_replicas: first.max_replicas as u32,
            compare: first.compare,
            starved: first
                .starved_ms
                .is_some_and(|since| now - since >= 2 * first.lease_secs * 1000),
            age_rule: trust.age_rule(first.young_accounts),
            wants_seasoned: first.wants_seasoned,
            replicas: Vec::with_capacity(rows.len()),
            workers: Vec::with_capacity(rows.len()),
            fuel_used: Vec::with_capacity(rows.len()),
            speeds: Vec::with_capacity(rows.len()),
        };
        for r in rows {
            let state = replica_state(&r.state)?;
            view.replicas.push(Replica {
                id: ReplicaId(r.id),
                state,
                verdict: r.verdict()?,
                // Aged when it returned; one in flight, as of now. With the
                // rule on, a vote whose age is unknown is young.
                seasoned: match (r.account_created_ms, r.returned_ms) {
                    _ if trust.min_account_age_secs == 0 => true,
                    (Some(created), Some(returned)) => trust.seasoned(created, returned),
                    (Some(created), None) if state == ReplicaState::InProgress => {
                        trust.seasoned(created, now)
                    }
                    _ => false,
                },
            });
            view.workers.push(r.worker_id.clone());
            view.fuel_used.push(r.fuel_used.unwrap_or(0));
            view.speeds
                .push(match (r.compare, r.fuel_used, r.returned_ms) {
                    (false, Some(fuel), Some(returned)) => {
                        lease::proven_speed(fuel, r.leased_ms, returned)
                    }
                    _ => None,
                });
        }
        Ok(Some(view))
    }
}

/// A valid or invalid judgement of a returned replica.
#[derive(Debug)]
struct Judged {
    replica: i64,
    valid: bool,
    worker: String,
    /// What a valid judgement credits ([`credit::granted`]).
    credit: i64,
    /// The fuel it reported: what the job's progress estimate samples.
    fuel_used: i64,
    /// The speed a valid judgement proves ([`lease::proven_speed`]).
    speed: Option<i64>,
}

/// A unit closed by a decision.
#[derive(Debug)]
struct Closed {
    unit: i64,
    winner: Option<i64>,
    error: Option<String>,
    alone: bool,
}

/// What deciding a batch of units changes.
#[derive(Debug, Default)]
struct Decisions {
    judged: Vec<Judged>,
    /// (unit, replicas it wants now)
    needed: Vec<(i64, i64)>,
    /// (unit, whether it wants a seasoned vote now), where that changed
    wants_seasoned: Vec<(i64, i64)>,
    closed: Vec<Closed>,
    /// (unit, quorum it needs from now on)
    quorum: Vec<(i64, i64)>,
}

impl Decisions {
    /// Notes the judgements of `decision` on the replicas still returned.
    fn judge(&mut self, unit: &UnitView, decision: &Decision) {
        for (ids, valid) in [(&decision.valid, true), (&decision.invalid, false)] {
            for id in ids {
                let Some(pos) = unit.replicas.iter().position(|r| r.id == *id) else {
                    continue;
                };
                let r = &unit.replicas[pos];
                if r.state != ReplicaState::Returned {
                    continue;
                }
                let output = matches!(r.verdict, Some(Verdict::Output { .. }));
                let fuel_used = unit.fuel_used[pos];
                self.judged.push(Judged {
                    replica: id.0,
                    valid,
                    worker: unit.workers[pos].clone(),
                    credit: credit::granted(unit.compare, output, fuel_used),
                    fuel_used,
                    speed: unit.speeds[pos],
                });
            }
        }
    }

    /// Decides one unit: a settled one judges its late replicas against
    /// the accepted result; an open one is decided by quorum, at the quorum
    /// the trust policy says it needs now.
    fn decide(&mut self, unit: &UnitView, policy: &Policy) {
        if !unit.open {
            self.judge(unit, &validator::judge_late(unit.accepted, &unit.replicas));
            return;
        }
        let (quorum, changed) = quorum_now(unit.quorum, unit.job_quorum, &unit.replicas, || {
            policy.spot_checks.draw()
        });
        if let Some(q) = changed {
            self.quorum.push((unit.id, i64::from(q)));
        }
        let rule = validator::Policy {
            quorum,
            max_replicas: unit.max_replicas,
            starved: unit.starved,
            age_rule: unit.age_rule,
        };
        let decision = validator::decide(rule, &unit.replicas);
        self.judge(unit, &decision);
        let (winner, error) = match decision.outcome {
            UnitOutcome::Open {
                needed,
                seasoned_only,
            } => {
                self.needed.push((unit.id, i64::from(needed)));
                if seasoned_only != unit.wants_seasoned {
                    self.wants_seasoned
                        .push((unit.id, i64::from(seasoned_only)));
                }
                return;
            }
            UnitOutcome::Accepted { winner } => (Some(winner.0), None),
            UnitOutcome::Failed { reason } => (None, Some(reason)),
        };
        self.closed.push(Closed {
            unit: unit.id,
            alone: winner.is_some() && quorum == 1,
            winner,
            error,
        });
    }
}

/// What one round of settling found.
struct Round {
    /// Workers just caught with an invalid result.
    caught: Vec<Caught>,
    /// Replicas just judged valid: any votes their judgement as invalid
    /// had discarded are votes again.
    valid: Vec<i64>,
    /// Units reopened by an audit.
    audited: Vec<i64>,
}

/// What settling a batch changed for one job.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct JobCounts {
    accepted: i64,
    failed: i64,
    /// The fuel of the newly accepted units' winners, and how many.
    fuel: i64,
    samples: i64,
}

impl Settling {
    pub fn worker(&mut self, id: String) -> &mut WorkerDelta {
        self.workers.entry(id).or_default()
    }

    /// Settles every unit queued, then every unit that settling reopened
    /// (backtracking, audits), and writes the workers' changes once.
    pub async fn apply(
        mut self,
        tx: &mut Transaction<'_, Sqlite>,
        policy: &Policy,
        now: i64,
    ) -> Result<Effects> {
        let mut effects = Effects::default();
        // Backtracking reopens units, and overturned judgements give votes
        // back, and those units are then settled again.
        let mut rounds = 0;
        while !self.units.is_empty() {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                leave_unsettled(tx, &mut self.units).await?;
                break;
            }
            let mut units = std::mem::take(&mut self.units);
            units.sort_unstable();
            units.dedup();
            let round = self
                .settle_round(tx, &units, policy, now, &mut effects)
                .await?;
            self.units = round.audited;
            if !round.caught.is_empty() {
                let reopened = self.backtrack(tx, &round.caught, &policy.trust).await?;
                if !reopened.is_empty() {
                    let workers: Vec<&str> = round.caught.iter().map(|(w, _)| w.as_str()).collect();
                    tracing::warn!(
                        ?workers,
                        units = reopened.len(),
                        "caught returning a wrong result: reopening the units accepted on their word"
                    );
                    effects.reopened += reopened.len() as u64;
                }
                self.units.extend(reopened);
            }
            if !round.valid.is_empty() {
                let restored = self.restore(tx, &round.valid).await?;
                self.units.extend(restored);
            }
        }
        workers::write_deltas(tx, &policy.trust, self.workers, now).await?;
        Ok(effects)
    }

    /// Decides `units` and applies the decisions.
    async fn settle_round(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        units: &[i64],
        policy: &Policy,
        now: i64,
        effects: &mut Effects,
    ) -> Result<Round> {
        let mut d = Decisions::default();
        for chunk in units.chunks(IN_LIST_MAX) {
            let rows = read_units(tx, chunk, &policy.trust).await?;
            for unit_rows in rows.chunk_by(|a, b| a.unit_id == b.unit_id) {
                if let Some(view) = UnitView::from_rows(unit_rows, now, &policy.trust)? {
                    d.decide(&view, policy);
                }
            }
        }
        let (caught, valid) = self.write_judgements(tx, &d.judged, now).await?;
        set_on_open_units(tx, "quorum", &d.quorum).await?;
        set_on_open_units(tx, "needed", &d.needed).await?;
        set_on_open_units(tx, "wants_seasoned", &d.wants_seasoned).await?;
        let counts = close_units(tx, &d).await?;
        let mut audited = Vec::new();
        // One statement for every job's counts; only a job that has every
        // unit settled now is audited and completed (a batch touches many
        // jobs when fair share spreads the volunteers over them).
        let mut settled: HashSet<String> = HashSet::new();
        for chunk in counts.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "WITH v(id, accepted, failed, fuel, samples) AS (",
            );
            push_rows(&mut q, 5, chunk, |mut b, (job, c)| {
                b.push_bind(job.clone())
                    .push_bind(c.accepted)
                    .push_bind(c.failed)
                    .push_bind(c.fuel)
                    .push_bind(c.samples);
            });
            q.push(
                ") UPDATE jobs SET units_accepted = units_accepted + v.accepted,
                                  units_failed = units_failed + v.failed,
                                  fuel_sampled = fuel_sampled + v.fuel,
                                  fuel_samples = fuel_samples + v.samples
                   FROM v WHERE jobs.id = v.id
                   RETURNING jobs.id, jobs.state = 'running'
                             AND jobs.units_accepted + jobs.units_failed = jobs.units_total",
            );
            let rows: Vec<(String, bool)> = q.build_query_as().fetch_all(&mut **tx).await?;
            settled.extend(rows.into_iter().filter(|r| r.1).map(|r| r.0));
        }
        for (job, _) in counts {
            if !settled.contains(&job) {
                continue;
            }
            let reopened = self.audit(tx, &job).await?;
            if reopened.is_empty() {
                complete_if_settled(tx, job_id(&job)?, now, effects).await?;
            }
            audited.extend(reopened);
        }
        Ok(Round {
            caught,
            valid,
            audited,
        })
    }

    /// Writes valid and invalid judgements, crediting only the replicas
    /// this statement moved out of `returned` (exactly once). Returns the
    /// workers caught with an invalid result, and the replicas judged valid.
    async fn write_judgements(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        judged: &[Judged],
        now: i64,
    ) -> Result<(Vec<Caught>, Vec<i64>)> {
        let mut caught: Vec<Caught> = Vec::new();
        let mut valid = Vec::new();
        for chunk in judged.chunks(VALUES_MAX) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, state) AS (");
            push_rows(&mut q, 2, chunk, |mut b, j| {
                let state = if j.valid {
                    ReplicaState::Valid
                } else {
                    ReplicaState::Invalid
                };
                b.push_bind(j.replica).push_bind(state.as_str());
            });
            q.push(
                ") UPDATE replicas SET state = v.state FROM v
                   WHERE replicas.id = v.id AND replicas.state = 'returned'
                   RETURNING replicas.id",
            );
            let changed: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            for j in chunk.iter().filter(|j| changed.contains(&j.replica)) {
                let w = self.worker(j.worker.clone());
                if j.valid {
                    w.valid(j.credit, now);
                    if let Some(speed) = j.speed {
                        w.proved(speed);
                    }
                    valid.push(j.replica);
                } else {
                    w.broke_streak(Counter::Invalid);
                    if !caught.iter().any(|(c, _)| *c == j.worker) {
                        caught.push((j.worker.clone(), Some(j.replica)));
                    }
                }
            }
        }
        Ok((caught, valid))
    }
}

/// The units, their jobs' policies and every replica, in one statement.
/// With the account-age rule on, each replica's account's creation time
/// too (a worker with no account is its own: its registration's).
async fn read_units(
    tx: &mut Transaction<'_, Sqlite>,
    units: &[i64],
    trust: &Trust,
) -> Result<Vec<ReplicaRow>> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "SELECT r.id, r.unit_id, r.worker_id, r.state, r.output_hash, r.fuel_used,
                r.failure_kind, r.output_class, j.compare,
                u.state AS unit_state, u.accepted_replica,
                COALESCE(u.quorum, j.quorum) AS quorum, j.quorum AS job_quorum,
                j.max_replicas, u.starved_ms, j.lease_secs, r.leased_ms, r.returned_ms,
                j.young_accounts, u.wants_seasoned, ",
    );
    q.push(if trust.min_account_age_secs > 0 {
        "COALESCE((SELECT a.created_ms FROM accounts a WHERE a.id = r.account_id),
                  (SELECT w.created_ms FROM workers w WHERE w.id = r.worker_id))"
    } else {
        "NULL"
    });
    q.push(
        " AS account_created_ms
         FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
         WHERE r.unit_id IN (",
    );
    push_list(&mut q, units.iter().copied());
    q.push(") ORDER BY r.unit_id, r.id");
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Marks `units` (what a settling stopped at [`MAX_ROUNDS`] had yet to
/// settle) for the lease expiry round to settle. Their state is
/// consistent meanwhile: a unit reopened and not yet decided wants no
/// replica (`needed` 0) until then, and a vote given back waits to be
/// judged.
async fn leave_unsettled(tx: &mut Transaction<'_, Sqlite>, units: &mut Vec<i64>) -> Result<()> {
    units.sort_unstable();
    units.dedup();
    tracing::warn!(
        units = units.len(),
        rounds = MAX_ROUNDS,
        "backtracking did not settle within its bound of rounds: the units left go to the next expiry round"
    );
    for chunk in units.chunks(IN_LIST_MAX) {
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("UPDATE units SET unsettled = TRUE WHERE id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Closes the decided units still open, and counts per job the units
/// accepted and failed and the agreed fuel of the accepted ones (the
/// estimate a running unit's progress is told in).
async fn close_units(
    tx: &mut Transaction<'_, Sqlite>,
    d: &Decisions,
) -> Result<Vec<(String, JobCounts)>> {
    let winner_fuel: HashMap<i64, i64> =
        d.judged.iter().map(|j| (j.replica, j.fuel_used)).collect();
    let mut counts: Vec<(String, JobCounts)> = Vec::new();
    for chunk in d.closed.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "WITH v(id, state, accepted_replica, error, alone) AS (",
        );
        push_rows(&mut q, 5, chunk, |mut b, c| {
            b.push_bind(c.unit)
                .push_bind(if c.winner.is_some() {
                    "accepted"
                } else {
                    "failed"
                })
                .push_bind(c.winner)
                .push_bind(c.error.clone())
                .push_bind(c.alone);
        });
        q.push(
            ") UPDATE units SET state = v.state, needed = 0, wants_seasoned = FALSE,
                      accepted_replica = v.accepted_replica, error = v.error, alone = v.alone
               FROM v WHERE units.id = v.id AND units.state = 'open'
               RETURNING units.job_id, units.state, units.accepted_replica",
        );
        let rows: Vec<(String, String, Option<i64>)> =
            q.build_query_as().fetch_all(&mut **tx).await?;
        for (job, state, winner) in rows {
            let i = match counts.iter().position(|(j, _)| *j == job) {
                Some(i) => i,
                None => {
                    counts.push((job, JobCounts::default()));
                    counts.len() - 1
                }
            };
            let c = &mut counts[i].1;
            if state == "accepted" {
                c.accepted += 1;
                if let Some(fuel) = winner.and_then(|w| winner_fuel.get(&w)) {
                    c.fuel += fuel;
                    c.samples += 1;
                }
            } else {
                c.failed += 1;
            }
        }
    }
    Ok(counts)
}

/// Sets `column` (a name from this module, never from input) of the open
/// units among `values` (unit, value), with one statement per chunk.
async fn set_on_open_units(
    tx: &mut Transaction<'_, Sqlite>,
    column: &'static str,
    values: &[(i64, i64)],
) -> Result<()> {
    for chunk in values.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, value) AS (");
        push_rows(&mut q, 2, chunk, |mut b, (unit, value)| {
            b.push_bind(*unit).push_bind(*value);
        });
        q.push(format!(
            ") UPDATE units SET {column} = v.value FROM v
               WHERE units.id = v.id AND units.state = 'open'"
        ));
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Moves a running job whose units are all settled to `reducing`, or to
/// `failed` if not one unit was accepted (there is nothing to reduce).
pub(super) async fn complete_if_settled(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE jobs SET state = 'reducing'
         WHERE id = ? AND state = 'running' AND units_accepted + units_failed = units_total
           AND (units_accepted > 0 OR units_total = 0)",
    )
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        effects.jobs_to_reduce.push(job);
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_ms = ?,
                error = 'every unit failed; for example: ' ||
                        (SELECT u.error FROM units u WHERE u.job_id = jobs.id AND u.state = 'failed' LIMIT 1)
         WHERE id = ? AND state = 'running' AND units_failed = units_total AND units_total > 0",
    )
    .bind(now)
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
