//! The uploader: the task that sends results to the coordinator as they
//! come, every result waiting in one request, until the coordinator takes
//! or refuses each. A result leaves the state directory only then; when
//! the coordinator is away it waits there (and in memory) for a retry, or
//! for the next start.

use crate::backoff::{self, Backoff};
use crate::client::{Client, ClientError};
use crate::queue::{Holdings, Unanswered};
use crate::state::{PendingResult, StateDir};
use protocol::{ErrorBody, MAX_RESULTS_PER_REQUEST, Outcome, ReplicaResult, ResultBatch};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The most result bytes (outputs, messages) one upload request carries;
/// a larger result goes alone.
const UPLOAD_BATCH_BYTES: usize = protocol::BATCH_RESULT_BYTES;

/// How long a stopping worker waits between uploads that failed, while
/// units may still finish in its grace period.
const STOPPING_RETRY: Duration = Duration::from_secs(1);

/// The coordinator's answer for one result of a request: taken, or refused
/// (with the error it gave, if any).
type Answer = Result<(), Option<ErrorBody>>;

#[derive(Debug)]
pub(crate) struct Uploader {
    /// With this worker's token.
    client: Client,
    state: StateDir,
    /// Told of every answered result.
    unanswered: Arc<Unanswered>,
    /// An answered result's replica is no longer held.
    holdings: Arc<Holdings>,
    max_backoff: Duration,
    /// The state directory's lock, held while results from it are still
    /// being uploaded (also by an uploader a stop left behind).
    _lock: Arc<std::fs::File>,
}

impl Uploader {
    pub(crate) fn new(
        client: Client,
        state: StateDir,
        unanswered: Arc<Unanswered>,
        holdings: Arc<Holdings>,
        max_backoff: Duration,
        lock: Arc<std::fs::File>,
    ) -> Uploader {
        Uploader {
            client,
            state,
            unanswered,
            holdings,
            max_backoff,
            _lock: lock,
        }
    }

    /// Uploads results as they come, every result waiting in one request
    /// (up to [`MAX_RESULTS_PER_REQUEST`] and [`UPLOAD_BATCH_BYTES`]), until
    /// the coordinator takes or refuses each. When the coordinator is away,
    /// retries with backoff; when stopping, tries at once and then every
    /// [`STOPPING_RETRY`] until the last result is in, once more after
    /// it, and leaves the rest on disk. Ends when `incoming` closes and nothing waits; returns
    /// how many results were acknowledged.
    pub(crate) async fn run(
        self,
        mut incoming: mpsc::UnboundedReceiver<PendingResult>,
        mut stop: watch::Receiver<bool>,
    ) -> u64 {
        let mut uploaded = 0;
        let mut waiting: VecDeque<PendingResult> = VecDeque::new();
        let mut backoff = Backoff::new(self.max_backoff);
        loop {
            if waiting.is_empty() {
                match incoming.recv().await {
                    Some(p) => waiting.push_back(p),
                    None => return uploaded,
                }
            }
            // Closed before the drain: nothing more can come after it.
            let closed = incoming.is_closed();
            while let Ok(p) = incoming.try_recv() {
                waiting.push_back(p);
            }
            let take = batch_len(&waiting);
            match self.send(&waiting, take).await {
                Ok(answers) => {
                    backoff.reset();
                    let mut sent: std::vec::IntoIter<PendingResult> =
                        waiting.drain(..take).collect::<Vec<_>>().into_iter();
                    for answer in answers {
                        let Some(p) = sent.next() else { break };
                        match answer {
                            Ok(()) => uploaded += 1,
                            Err(error) => {
                                let (code, message) = error
                                    .map_or(("unknown".into(), String::new()), |e| {
                                        (e.error, e.message)
                                    });
                                tracing::warn!(replica = %p.replica_id, %code, %message, "result refused; dropping it");
                            }
                        }
                        self.answered(&p);
                    }
                    // A coordinator that answered fewer results than it was
                    // sent: the rest are sent again, never dropped.
                    for p in sent.rev() {
                        waiting.push_front(p);
                    }
                }
                Err(ClientError::Refused {
                    code,
                    status,
                    message,
                }) if take == 1 => {
                    let p = waiting.pop_front().expect("one was sent");
                    tracing::warn!(replica = %p.replica_id, %code, status, %message, "result refused; dropping it");
                    self.answered(&p);
                }
                Err(e) => {
                    // The coordinator is away, or refused the request as a
                    // whole: keep the results (on disk too) and retry.
                    if *stop.borrow() {
                        if closed {
                            // Stopping, every result in, the coordinator
                            // still away: they stay on disk for the next
                            // start.
                            tracing::warn!(results = waiting.len(), error = %e, "cannot upload before stopping");
                            return uploaded;
                        }
                        // Stopping while units finish in the grace period:
                        // try again shortly (the coordinator may be back),
                        // and once more after the last result. The
                        // daemon's stop bounds how long.
                        tracing::warn!(results = take, error = %e, retry_in_ms = STOPPING_RETRY.as_millis() as u64, "cannot upload yet");
                        tokio::select! {
                            _ = tokio::time::sleep(STOPPING_RETRY) => {}
                            Some(p) = incoming.recv() => waiting.push_back(p),
                        }
                        continue;
                    }
                    let d = backoff.step();
                    tracing::warn!(results = take, error = %e, retry_in_ms = d.as_millis() as u64, "cannot upload yet");
                    // A stop cuts the wait short: the next attempt is at
                    // once, as the coordinator may be back since the last.
                    backoff::wait(d, &mut stop).await;
                }
            }
        }
    }

    /// Sends the first `take` waiting results: one alone, more as a batch.
    async fn send(
        &self,
        waiting: &VecDeque<PendingResult>,
        take: usize,
    ) -> Result<Vec<Answer>, ClientError> {
        if take == 1 {
            let p = &waiting[0];
            return self
                .client
                .upload(p.replica_id, &p.result)
                .await
                .map(|_| vec![Ok(())]);
        }
        let batch = ResultBatch {
            results: waiting
                .iter()
                .take(take)
                .map(|p| ReplicaResult {
                    replica_id: p.replica_id,
                    result: p.result.clone(),
                })
                .collect(),
        };
        self.client.upload_many(&batch).await.map(|r| {
            r.results
                .into_iter()
                .map(|a| a.status.map(|_| ()).ok_or(a.error))
                .collect()
        })
    }

    /// A result the coordinator took or refused: off the disk, and no
    /// longer counted against this worker.
    fn answered(&self, p: &PendingResult) {
        self.state.remove_result(p.replica_id);
        self.holdings.let_go(p.replica_id);
        self.unanswered.answer();
    }
}

/// How many of the waiting results the next request carries: as many as
/// fit in [`MAX_RESULTS_PER_REQUEST`] and [`UPLOAD_BATCH_BYTES`], and at
/// least one (a larger result goes alone).
fn batch_len(waiting: &VecDeque<PendingResult>) -> usize {
    let mut take = 0;
    let mut bytes = 0;
    for p in waiting {
        let size = match &p.result.outcome {
            Outcome::Success { output } => output.len(),
            Outcome::Failure { message, .. } => message.len(),
        };
        if take > 0 && (take == MAX_RESULTS_PER_REQUEST || bytes + size > UPLOAD_BATCH_BYTES) {
            break;
        }
        take += 1;
        bytes += size;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FailureKind, ReplicaId, ResultUpload};

    fn success(id: i64, bytes: usize) -> PendingResult {
        PendingResult {
            replica_id: ReplicaId(id),
            deadline_ms: 0,
            result: ResultUpload {
                outcome: Outcome::Success {
                    output: vec![0; bytes].into(),
                },
                fuel_used: 1,
            },
        }
    }

    fn failure(id: i64, message: usize) -> PendingResult {
        PendingResult {
            replica_id: ReplicaId(id),
            deadline_ms: 0,
            result: ResultUpload {
                outcome: Outcome::Failure {
                    kind: FailureKind::Trap,
                    message: "x".repeat(message),
                },
                fuel_used: 1,
            },
        }
    }

    #[test]
    fn small_results_go_together_up_to_the_most_a_request_may_carry() {
        let waiting: VecDeque<_> = (0..300).map(|i| success(i, 10)).collect();
        assert_eq!(batch_len(&waiting), MAX_RESULTS_PER_REQUEST);
        let few: VecDeque<_> = (0..3).map(|i| failure(i, 10)).collect();
        assert_eq!(batch_len(&few), 3);
        assert_eq!(batch_len(&VecDeque::new()), 0);
    }

    #[test]
    fn results_go_together_up_to_the_byte_budget_and_a_larger_one_alone() {
        let half = UPLOAD_BATCH_BYTES / 2;
        let waiting: VecDeque<_> = [success(1, half), failure(2, half), success(3, 1)].into();
        assert_eq!(batch_len(&waiting), 2, "exactly the budget fits");
        let large: VecDeque<_> = [success(1, UPLOAD_BATCH_BYTES + 1), success(2, 1)].into();
        assert_eq!(batch_len(&large), 1, "a larger result goes alone");
        let after: VecDeque<_> = [success(1, 1), success(2, UPLOAD_BATCH_BYTES)].into();
        assert_eq!(batch_len(&after), 1, "and not with the ones before it");
    }
}
