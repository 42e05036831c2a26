//! The runner: one leased unit from lease to result. It gets the module
//! from the cache, runs the unit on a thread of its own paced by the
//! [`Governor`] (progress, CPU ceiling, pause, abandoning), and saves the
//! result to the state directory before it goes to the uploader.

use crate::cache::ModuleCache;
use crate::client::Client;
use crate::governor::Governor;
use crate::state::{PendingResult, StateDir};
use protocol::{FailureKind, Lease, Outcome, ReplicaId, ResultUpload};
use sandbox::{Mode, Program, Report, Sandbox, Stdout};
use std::sync::Arc;

/// What a unit needs to run: shared by every slot.
#[derive(Debug)]
pub(crate) struct Runner {
    /// Downloads modules (with this worker's token).
    client: Client,
    sandbox: Sandbox,
    cache: ModuleCache,
    governor: Arc<Governor>,
    state: StateDir,
}

/// How a unit's run ended.
#[derive(Debug)]
pub(crate) enum Finished {
    /// With a result (saved to disk), to upload.
    Result(PendingResult),
    /// Abandoned midway: the coordinator no longer wanted it, or the worker
    /// is stopping and its grace period is over.
    Abandoned(ReplicaId),
}

impl Runner {
    pub(crate) fn new(
        client: Client,
        sandbox: Sandbox,
        cache: ModuleCache,
        governor: Arc<Governor>,
        state: StateDir,
    ) -> Runner {
        Runner {
            client,
            sandbox,
            cache,
            governor,
            state,
        }
    }

    /// Modules compiled from wasm so far (not loaded from the cache).
    pub(crate) fn compilations(&self) -> u64 {
        self.cache.compilations()
    }

    /// Runs one leased unit and saves its result to disk.
    pub(crate) async fn run(self: Arc<Self>, lease: Lease) -> Finished {
        let replica = lease.replica_id;
        let deadline_ms = lease.deadline_ms;
        let program = match self.cache.get(&self.client, lease.module).await {
            Ok(program) => program,
            Err(e) => {
                return Finished::Result(
                    self.finish(replica, deadline_ms, worker_error(e.to_string()))
                        .await,
                );
            }
        };
        tracing::debug!(%replica, job = %lease.job_id, "unit started");
        let sandbox = self.sandbox.clone();
        let governor = self.governor.clone();
        let report =
            tokio::task::spawn_blocking(move || run_paced(&sandbox, &governor, &program, &lease))
                .await;
        let result = match report {
            Ok((_, true)) => return Finished::Abandoned(replica),
            Ok((report, false)) => outcome(report),
            Err(e) => worker_error(format!("the sandbox thread failed: {e}")),
        };
        Finished::Result(self.finish(replica, deadline_ms, result).await)
    }

    /// Logs a unit's result and writes it to the state directory (off the
    /// async threads), so it survives until the coordinator acknowledges it.
    async fn finish(
        self: Arc<Self>,
        replica: ReplicaId,
        deadline_ms: i64,
        (outcome, fuel_used): (Outcome, u64),
    ) -> PendingResult {
        match &outcome {
            Outcome::Success { output } => {
                tracing::debug!(%replica, bytes = output.len(), fuel = fuel_used, "unit done")
            }
            Outcome::Failure { kind, message } => {
                tracing::info!(%replica, kind = kind.as_str(), %message, "unit failed")
            }
        }
        let pending = PendingResult {
            replica_id: replica,
            deadline_ms,
            result: ResultUpload { outcome, fuel_used },
        };
        let me = self.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let saved = me.state.save_result(&pending);
            (pending, saved)
        })
        .await;
        match saved {
            Ok((pending, saved)) => {
                if let Err(e) = saved {
                    tracing::warn!(%replica, error = %e, "cannot save the result to disk; uploading it anyway");
                }
                pending
            }
            Err(e) => panic!("saving a result panicked: {e}"),
        }
    }
}

/// Runs a unit on this (blocking) thread, paced by the governor. Returns
/// the report and whether the run was abandoned: stopped midway (a unit
/// that finished just as it was abandoned keeps its result).
fn run_paced(
    sandbox: &Sandbox,
    governor: &Arc<Governor>,
    program: &Program,
    lease: &Lease,
) -> (Report, bool) {
    let mut pace = governor.start(lease);
    let mut stopped = false;
    let report = sandbox.run_paced(
        program,
        Mode::Run,
        &lease.input,
        &lease.limits,
        Stdout::Capture,
        &mut |fuel| {
            let pace = pace(fuel);
            stopped |= pace == sandbox::Pace::Stop;
            pace
        },
    );
    governor.finish(lease.replica_id);
    (report, stopped)
}

/// What a finished run uploads: its output or its failure, and its fuel.
fn outcome(report: Report) -> (Outcome, u64) {
    let fuel = report.fuel_used;
    match report.into_output() {
        Ok(output) => (
            Outcome::Success {
                output: output.into(),
            },
            fuel,
        ),
        Err(f) => (
            Outcome::Failure {
                kind: f.kind,
                message: f.message,
            },
            fuel,
        ),
    }
}

/// The result of a unit this worker could not run (no vote at the
/// coordinator).
fn worker_error(message: String) -> (Outcome, u64) {
    (
        Outcome::Failure {
            kind: FailureKind::WorkerError,
            message,
        },
        0,
    )
}
