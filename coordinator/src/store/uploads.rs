//! Uploads: recording what workers returned for their replicas, inside the
//! writer's transaction. Each upload is admitted or refused
//! ([`admit`], pure), outputs of jobs validated with `compare` are sorted
//! into equivalence classes, the results are written with one statement,
//! and the touched units are settled.

use super::settling::{Effects, Settling};
use super::sql::{IN_LIST_MAX, VALUES_MAX, hash, push_list, push_rows, replica_state};
use super::{Policy, Result, blobs};
use crate::lease;
use crate::trust::Counter;
use crate::validator::ReplicaState;
use protocol::{BlobHash, Outcome, ReplicaId, UploadStatus, WorkerId};
use sqlx::{Sqlite, Transaction};
use std::collections::HashMap;
use std::sync::Arc;

/// One uploaded result, as the store records it.
#[derive(Clone, Debug)]
pub struct Upload {
    pub worker: WorkerId,
    pub replica: ReplicaId,
    pub outcome: Outcome,
    pub fuel_used: u64,
}

/// Why an upload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoSuchReplica,
    NotYours,
    /// The lease ran out and the unit went to another worker.
    Expired,
    /// A different result for this replica was received before.
    Conflict,
    /// More output or fuel than the job's limits allow: no sandbox made it.
    OverLimits,
}

pub type UploadAnswer = Result<(UploadStatus, Effects), Refusal>;

/// Runs a job module's `compare` mode on two outputs: `Some(equivalent)`,
/// or `None` when the module cannot tell (no `compare` mode, a failure).
pub type Comparator = Arc<dyn Fn(&BlobHash, &[u8], &[u8], &[u8]) -> Option<bool> + Send + Sync>;

/// What a replica's row says it returned, for telling a replay from a
/// conflicting upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Returned {
    pub output_hash: Option<String>,
    pub fuel_used: i64,
    pub failure_kind: Option<String>,
}

impl Returned {
    fn of(upload: &Upload) -> Returned {
        match &upload.outcome {
            Outcome::Success { output } => Returned {
                output_hash: Some(BlobHash::of(output).to_string()),
                fuel_used: upload.fuel_used as i64,
                failure_kind: None,
            },
            Outcome::Failure { kind, .. } => Returned {
                output_hash: None,
                fuel_used: upload.fuel_used as i64,
                failure_kind: Some(kind.as_str().to_string()),
            },
        }
    }
}

/// A replica an upload names, as the store found it.
#[derive(Clone, Debug)]
pub struct Found {
    pub unit_id: i64,
    pub worker_id: String,
    pub state: ReplicaState,
    /// The lease's deadline (an upload after it finds the lease gone).
    pub deadline_ms: i64,
    pub returned: Option<Returned>,
    pub output_limit: u64,
    pub fuel_limit: u64,
    /// The job's module, when it is validated with `compare`.
    pub compare_with: Option<String>,
}

/// What becomes of one upload.
#[derive(Debug, PartialEq)]
pub enum Admission {
    /// Record it: the replica's new state.
    Record(ReplicaState),
    /// The same result came before: answer as then, change nothing.
    Replay,
    Refuse(Refusal),
}

/// Admits or refuses `upload` for the replica `found` (`None`: no such
/// replica) at `now`. Only the worker a replica was leased to may upload
/// it, once; no honest sandbox returns more than the job's limits allow; a
/// lease that ran out ([`lease::is_live`], whether or not the sweep has
/// marked it yet) takes no result; a repeat of the same result is a
/// replay, a different one a conflict.
pub fn admit(found: Option<&Found>, upload: &Upload, now: i64) -> Admission {
    let Some(f) = found else {
        return Admission::Refuse(Refusal::NoSuchReplica);
    };
    if f.worker_id != upload.worker.to_string() {
        return Admission::Refuse(Refusal::NotYours);
    }
    let over = match &upload.outcome {
        Outcome::Success { output } => output.len() as u64 > f.output_limit,
        Outcome::Failure { .. } => false,
    };
    if over || upload.fuel_used > f.fuel_limit {
        return Admission::Refuse(Refusal::OverLimits);
    }
    match f.state {
        ReplicaState::InProgress if lease::is_live(f.deadline_ms, now) => {}
        ReplicaState::InProgress | ReplicaState::TimedOut => {
            return Admission::Refuse(Refusal::Expired);
        }
        _ if f.returned.as_ref() == Some(&Returned::of(upload)) => return Admission::Replay,
        _ => return Admission::Refuse(Refusal::Conflict),
    }
    match &upload.outcome {
        Outcome::Failure { kind, .. } if !kind.is_deterministic() => {
            Admission::Record(ReplicaState::Errored)
        }
        _ => Admission::Record(ReplicaState::Returned),
    }
}

/// An upload admitted in this batch, not yet written.
struct Recorded<'a> {
    upload: &'a Upload,
    now: i64,
    state: ReplicaState,
    returned: Returned,
    class: Option<String>,
    unit: i64,
}

/// Records a batch of uploads and settles their units. The effects (jobs to
/// reduce) go with the first accepted answer, so they are acted on once.
pub(super) async fn record(
    tx: &mut Transaction<'_, Sqlite>,
    policy: &Policy,
    batch: &[(&Upload, i64)],
) -> Result<Vec<UploadAnswer>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = find(tx, batch).await?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut recorded: Vec<Recorded<'_>> = Vec::new();
    let mut settling = Settling::default();
    for &(u, now) in batch {
        let f = found.get_mut(&u.replica.0);
        let state = match admit(f.as_deref(), u, now) {
            Admission::Refuse(why) => {
                answers.push(Err(why));
                continue;
            }
            Admission::Replay => {
                answers.push(Ok((UploadStatus::AlreadyReceived, Effects::default())));
                continue;
            }
            Admission::Record(state) => state,
        };
        let f = f.expect("admitted uploads name a replica");
        if state == ReplicaState::Errored {
            settling
                .worker(f.worker_id.clone())
                .broke_streak(Counter::Errors);
        }
        // Later uploads of this batch for the same replica see this one.
        f.state = state;
        f.returned = Some(Returned::of(u));
        settling.units.push(f.unit_id);
        let class = match (&f.compare_with, &u.outcome) {
            (Some(module), Outcome::Success { output }) => {
                Some(classify(tx, policy, module, f.unit_id, output, &recorded).await?)
            }
            _ => None,
        };
        recorded.push(Recorded {
            upload: u,
            now,
            state,
            returned: Returned::of(u),
            class,
            unit: f.unit_id,
        });
        answers.push(Ok((UploadStatus::Accepted, Effects::default())));
    }
    write(tx, &recorded).await?;
    let now = batch.iter().map(|(_, now)| *now).max().unwrap_or_default();
    let effects = settling.apply(tx, policy, now).await?;
    if let Some(Ok((_, first))) = answers.iter_mut().find(|a| a.is_ok()) {
        *first = effects;
    }
    Ok(answers)
}

#[derive(sqlx::FromRow)]
struct FoundRow {
    id: i64,
    unit_id: i64,
    worker_id: String,
    state: String,
    deadline_ms: i64,
    output_hash: Option<String>,
    fuel_used: Option<i64>,
    failure_kind: Option<String>,
    output_bytes: i64,
    fuel: i64,
    compare: bool,
    module: String,
}

/// The replicas a batch of uploads names, with their jobs' limits.
async fn find(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[(&Upload, i64)],
) -> Result<HashMap<i64, Found>> {
    let mut ids: Vec<i64> = batch.iter().map(|(u, _)| u.replica.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.unit_id, r.worker_id, r.state, r.deadline_ms, r.output_hash, r.fuel_used,
                    r.failure_kind, j.output_bytes, j.fuel, j.compare, j.module
             FROM replicas r JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.id IN (",
        );
        push_list(&mut q, chunk.iter().copied());
        q.push(")");
        let rows: Vec<FoundRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        for r in rows {
            found.insert(
                r.id,
                Found {
                    unit_id: r.unit_id,
                    worker_id: r.worker_id,
                    state: replica_state(&r.state)?,
                    deadline_ms: r.deadline_ms,
                    returned: r.fuel_used.map(|fuel_used| Returned {
                        output_hash: r.output_hash,
                        fuel_used,
                        failure_kind: r.failure_kind,
                    }),
                    output_limit: r.output_bytes.max(0) as u64,
                    fuel_limit: r.fuel.max(0) as u64,
                    compare_with: r.compare.then_some(r.module),
                },
            );
        }
    }
    Ok(found)
}

/// Writes the admitted results, one statement per chunk, each conditional
/// on the replica still being in progress.
async fn write(tx: &mut Transaction<'_, Sqlite>, recorded: &[Recorded<'_>]) -> Result<()> {
    for chunk in recorded.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "WITH v(id, state, returned_ms, output, output_hash, fuel_used, failure_kind, message,
                    output_class) AS (",
        );
        push_rows(&mut q, 9, chunk, |mut b, r| {
            let (output, message) = match &r.upload.outcome {
                Outcome::Success { output } => (Some(output.to_vec()), None),
                Outcome::Failure { message, .. } => (None, Some(message.clone())),
            };
            b.push_bind(r.upload.replica.0)
                .push_bind(r.state.as_str())
                .push_bind(r.now)
                .push_bind(output)
                .push_bind(r.returned.output_hash.clone())
                .push_bind(r.returned.fuel_used)
                .push_bind(r.returned.failure_kind.clone())
                .push_bind(message)
                .push_bind(r.class.clone());
        });
        q.push(
            ") UPDATE replicas SET state = v.state, returned_ms = v.returned_ms, output = v.output,
                     output_hash = v.output_hash, fuel_used = v.fuel_used,
                     failure_kind = v.failure_kind, message = v.message,
                     output_class = v.output_class
               FROM v WHERE replicas.id = v.id AND replicas.state = 'in_progress'",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The equivalence class of `output` among the unit's outputs (in the
/// database and earlier in this batch): the class of the first
/// representative the module's `compare` finds equivalent, or a class of
/// its own (its hash). Runs on the writer's thread, so two uploads of one
/// unit are never classified at once. Without a comparator, or when the
/// module cannot compare, classes are byte equality.
async fn classify(
    tx: &mut Transaction<'_, Sqlite>,
    policy: &Policy,
    module: &str,
    unit: i64,
    output: &[u8],
    recorded: &[Recorded<'_>],
) -> Result<String> {
    let own = BlobHash::of(output).to_string();
    let Some(compare) = policy.comparator.get() else {
        return Ok(own);
    };
    // One representative per class: the replicas that head their class.
    let mut reps: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT output_hash, output FROM replicas
         WHERE unit_id = ? AND output IS NOT NULL AND output_class = output_hash
         ORDER BY id",
    )
    .bind(unit)
    .fetch_all(&mut **tx)
    .await?;
    for r in recorded {
        if r.unit == unit
            && r.class.is_some()
            && r.class == r.returned.output_hash
            && let Outcome::Success { output } = &r.upload.outcome
        {
            reps.push((r.class.clone().unwrap_or_default(), output.to_vec()));
        }
    }
    if reps.iter().any(|(h, _)| *h == own) {
        return Ok(own);
    }
    let module_hash = hash(module)?;
    let Some(bytes) = blobs::get(tx, module).await? else {
        return Ok(own);
    };
    for (class, rep) in &reps {
        if compare(&module_hash, &bytes, rep, output) == Some(true) {
            return Ok(class.clone());
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::FailureKind;

    fn found(state: ReplicaState, worker: WorkerId) -> Found {
        Found {
            unit_id: 1,
            worker_id: worker.to_string(),
            state,
            deadline_ms: 1_000,
            returned: None,
            output_limit: 4,
            fuel_limit: 100,
            compare_with: None,
        }
    }

    fn upload(worker: WorkerId, output: &[u8], fuel: u64) -> Upload {
        Upload {
            worker,
            replica: ReplicaId(1),
            outcome: Outcome::Success {
                output: output.to_vec().into(),
            },
            fuel_used: fuel,
        }
    }

    #[test]
    fn only_the_leaseholder_may_upload_within_the_jobs_limits() {
        let w = WorkerId::random();
        let f = found(ReplicaState::InProgress, w);
        assert_eq!(
            admit(None, &upload(w, b"ok", 1), 0),
            Admission::Refuse(Refusal::NoSuchReplica)
        );
        let other = WorkerId::random();
        assert_eq!(
            admit(Some(&f), &upload(other, b"ok", 1), 0),
            Admission::Refuse(Refusal::NotYours)
        );
        assert_eq!(
            admit(Some(&f), &upload(w, b"12345", 1), 0),
            Admission::Refuse(Refusal::OverLimits)
        );
        assert_eq!(
            admit(Some(&f), &upload(w, b"ok", 101), 0),
            Admission::Refuse(Refusal::OverLimits)
        );
        assert_eq!(
            admit(Some(&f), &upload(w, b"ok", 1), 0),
            Admission::Record(ReplicaState::Returned)
        );
    }

    #[test]
    fn a_repeat_is_a_replay_a_different_result_a_conflict_and_a_lapsed_lease_is_gone() {
        let w = WorkerId::random();
        let u = upload(w, b"ok", 1);
        let mut f = found(ReplicaState::Valid, w);
        f.returned = Some(Returned::of(&u));
        assert_eq!(admit(Some(&f), &u, 0), Admission::Replay);
        assert_eq!(
            admit(Some(&f), &upload(w, b"no", 1), 0),
            Admission::Refuse(Refusal::Conflict)
        );
        let lapsed = found(ReplicaState::TimedOut, w);
        assert_eq!(
            admit(Some(&lapsed), &u, 0),
            Admission::Refuse(Refusal::Expired)
        );
        // Past its deadline a lease takes no result, swept or not.
        let running = found(ReplicaState::InProgress, w);
        assert_eq!(
            admit(Some(&running), &u, 1_000),
            Admission::Record(ReplicaState::Returned)
        );
        assert_eq!(
            admit(Some(&running), &u, 1_001),
            Admission::Refuse(Refusal::Expired)
        );
    }

    #[test]
    fn a_workers_own_trouble_is_recorded_as_an_error_not_a_vote() {
        let w = WorkerId::random();
        let f = found(ReplicaState::InProgress, w);
        let trouble = Upload {
            outcome: Outcome::Failure {
                kind: FailureKind::WorkerError,
                message: "disk full".into(),
            },
            ..upload(w, b"", 1)
        };
        assert_eq!(
            admit(Some(&f), &trouble, 0),
            Admission::Record(ReplicaState::Errored)
        );
    }
}
