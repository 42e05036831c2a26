//! Group commit: the task that applies every waiting work request, upload
//! and heartbeat in one transaction and answers each only after the
//! commit, so the per-transaction and per-statement costs are shared by
//! the batch instead of paid by each request. Durability is unchanged: the
//! commit is shared, never skipped.

use super::leasing::{self, LeaseRequest, LeaseRow, Leased};
use super::uploads::{self, Upload, UploadAnswer};
use super::workers::WorkerRow;
use super::{Error, Policy, Result, Store, heartbeats};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use protocol::{Heartbeat, HeartbeatResponse, WorkerId};
use sqlx::{Connection as _, SqliteConnection, SqlitePool};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The most writes (uploads, work requests, heartbeats) applied in one
/// transaction.
pub const WRITE_BATCH: usize = 256;

/// The most batches the group-commit task applies before it lets other
/// writers have the write connection.
const HOLD_BATCHES: usize = 8;

/// What `/metrics` shows of the group-commit task: each transaction's
/// writes and how long its commit took (cheap to clone: the histograms
/// are shared).
#[derive(Clone, Debug)]
pub struct WriterMetrics {
    /// Writes (uploads, work requests, heartbeats) per transaction.
    pub batch_writes: Histogram,
    /// Seconds from COMMIT sent to COMMIT done (the fsync, mostly).
    pub commit_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            // 1, 2, 4, ... 256 (WRITE_BATCH).
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            // 0.1 ms to about 3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

/// One write of the hot path.
#[derive(Debug)]
pub enum Write {
    Lease(LeaseRequest),
    Upload {
        upload: Upload,
        now: i64,
    },
    Heartbeat {
        worker: WorkerId,
        beat: Heartbeat,
        now: i64,
    },
}

/// What a write is answered with.
#[derive(Debug)]
pub enum Answer {
    Lease(Leased),
    Upload(UploadAnswer),
    Heartbeat(HeartbeatResponse),
}

impl Answer {
    fn into_leases(self) -> Leased {
        match self {
            Answer::Lease(leased) => leased,
            other => unreachable!("a work request is answered with leases, not {other:?}"),
        }
    }

    fn into_upload(self) -> UploadAnswer {
        match self {
            Answer::Upload(answer) => answer,
            other => unreachable!("an upload is answered in kind, not {other:?}"),
        }
    }

    fn into_heartbeat(self) -> HeartbeatResponse {
        match self {
            Answer::Heartbeat(answer) => answer,
            other => unreachable!("a heartbeat is answered in kind, not {other:?}"),
        }
    }
}

/// A write waiting for the group-commit task, with where its answer goes.
#[derive(Debug)]
pub(super) struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Answer>>,
}

impl Store {
    /// Queues `write` for the group-commit task and waits for its answer.
    async fn submit(&self, write: Write) -> Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Pending { write, reply })
            .await
            .map_err(|_| Error::WriterGone)?;
        answer.await.map_err(|_| Error::WriterGone)?
    }

    /// Leases up to `max` replicas to `worker` (see [`leasing`]).
    pub async fn lease(&self, worker: &WorkerRow, max: u32, now: i64) -> Result<Vec<LeaseRow>> {
        let request = LeaseRequest {
            worker: worker.clone(),
            max,
            now,
            held: None,
        };
        Ok(self
            .submit(Write::Lease(request))
            .await?
            .into_leases()
            .leases)
    }

    /// Serves a work request as it came (see [`leasing`]): with what its
    /// worker says it holds, its other leases are given back first, and
    /// the answer tells what that changed.
    pub async fn lease_request(&self, request: LeaseRequest) -> Result<Leased> {
        Ok(self.submit(Write::Lease(request)).await?.into_leases())
    }

    /// A worker's heartbeat (see [`heartbeats`]).
    pub async fn heartbeat(
        &self,
        worker: WorkerId,
        beat: Heartbeat,
        now: i64,
    ) -> Result<HeartbeatResponse> {
        let write = Write::Heartbeat { worker, beat, now };
        Ok(self.submit(write).await?.into_heartbeat())
    }

    /// Records what a worker returned for one of its replicas and settles
    /// the unit, acknowledging only after the commit.
    pub async fn record_result(&self, upload: Upload, now: i64) -> Result<UploadAnswer> {
        Ok(self
            .submit(Write::Upload { upload, now })
            .await?
            .into_upload())
    }

    /// Records several results, answering each as [`Store::record_result`]
    /// would; queued together, they usually share one transaction.
    pub async fn record_results(
        &self,
        uploads: Vec<Upload>,
        now: i64,
    ) -> Vec<Result<UploadAnswer>> {
        let mut answers = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let (reply, answer) = oneshot::channel();
            let write = Write::Upload { upload, now };
            let queued = self.writes.send(Pending { write, reply }).await;
            answers.push(queued.map(|()| answer));
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => match answer.await {
                    Ok(answer) => answer.map(Answer::into_upload),
                    Err(_) => Err(Error::WriterGone),
                },
                Err(_) => Err(Error::WriterGone),
            });
        }
        results
    }

    /// Applies `writes` in this order in one transaction, as one batch of
    /// the group-commit task would, but without waiting for other writes:
    /// what a batch holds is then chosen by the caller, not by timing, so a
    /// simulation or a test driving the store is deterministic. At most
    /// [`WRITE_BATCH`] writes.
    pub async fn apply_together(&self, writes: Vec<Write>) -> Result<Vec<Answer>> {
        assert!(writes.len() <= WRITE_BATCH, "at most WRITE_BATCH writes");
        let mut conn = self.write.acquire().await?;
        let refs: Vec<&Write> = writes.iter().collect();
        write_batch(&mut conn, &self.policy, &refs).await
    }

    /// [`Store::apply_together`] for work requests alone.
    pub async fn lease_together(
        &self,
        requests: &[(WorkerRow, u32)],
        now: i64,
    ) -> Result<Vec<Vec<LeaseRow>>> {
        let writes = requests
            .iter()
            .map(|(worker, max)| {
                Write::Lease(LeaseRequest {
                    worker: worker.clone(),
                    max: *max,
                    now,
                    held: None,
                })
            })
            .collect();
        let answers = self.apply_together(writes).await?;
        Ok(answers
            .into_iter()
            .map(|a| a.into_leases().leases)
            .collect())
    }

    /// [`Store::apply_together`] for uploads alone.
    pub async fn record_together(&self, uploads: &[Upload], now: i64) -> Result<Vec<UploadAnswer>> {
        let writes = uploads
            .iter()
            .map(|u| Write::Upload {
                upload: u.clone(),
                now,
            })
            .collect();
        let answers = self.apply_together(writes).await?;
        Ok(answers.into_iter().map(Answer::into_upload).collect())
    }
}

/// Starts the group-commit task on a thread of its own: on the shared
/// runtime, every statement's completion waits behind the ready request
/// tasks before the next statement goes out (measured: milliseconds per
/// statement under load). It ends when every `Store` handle is gone.
pub(super) fn start(pool: SqlitePool, policy: Arc<Policy>) -> Result<mpsc::Sender<Pending>> {
    let (writes, queue) = mpsc::channel(4 * WRITE_BATCH);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(pool, policy, queue)),
                Err(e) => tracing::error!(error = %e, "cannot start the store's writer"),
            }
        })
        .map_err(Error::WriterStart)?;
    Ok(writes)
}

/// The group-commit loop: takes every write waiting (up to `WRITE_BATCH`),
/// applies them in one transaction, answers each after the commit.
async fn run(write: SqlitePool, policy: Arc<Policy>, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        // A batch taken but not applied in the last turn goes first.
        if batch.is_empty() && queue.recv_many(&mut batch, WRITE_BATCH).await == 0 {
            return;
        }
        let mut conn = match write.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let e = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(sqlx::Error::Protocol(e.clone()).into()));
                }
                continue;
            }
        };
        // Keep the connection while writes keep coming: giving it back to
        // the pool costs a task hand-off (measured: 3.7 ms per batch on a
        // busy runtime). Give it back at least every HOLD_BATCHES batches
        // so splits, expiry and the other writers get their turn.
        for _ in 0..HOLD_BATCHES {
            apply(&mut conn, &policy, &mut batch).await;
            while batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
        }
    }
}

/// Applies `batch` and answers every write in it, leaving it empty. A
/// database error fails the whole transaction: the writes are then applied
/// one by one, so only the one at fault gets the error.
async fn apply(conn: &mut SqliteConnection, policy: &Policy, batch: &mut Vec<Pending>) {
    let writes: Vec<&Write> = batch.iter().map(|p| &p.write).collect();
    match write_batch(conn, policy, &writes).await {
        Ok(answers) => {
            for (pending, answer) in batch.drain(..).zip(answers) {
                // A receiver that is gone (the client hung up) needs no answer.
                let _ = pending.reply.send(Ok(answer));
            }
        }
        Err(e) if batch.len() > 1 => {
            if matches!(e, Error::Invariant(_)) {
                tracing::error!(error = %e, "a batch broke a schema invariant (a bug): applying its writes one at a time");
            } else {
                tracing::warn!(error = %e, writes = batch.len(), "batch failed; applying its writes one at a time");
            }
            for pending in batch.drain(..) {
                let answer = write_batch(conn, policy, &[&pending.write])
                    .await
                    .map(|mut a| a.remove(0));
                let _ = pending.reply.send(answer);
            }
        }
        Err(e) => {
            if let Some(pending) = batch.pop() {
                let _ = pending.reply.send(Err(e));
            }
        }
    }
}

/// Applies a batch of writes in one transaction: uploads first (they free
/// capacity and settle units), then heartbeats, then work requests in
/// arrival order. Answers in the order of `batch`.
async fn write_batch(
    conn: &mut SqliteConnection,
    policy: &Policy,
    batch: &[&Write],
) -> Result<Vec<Answer>> {
    let mut uploads = Vec::new();
    let mut requests = Vec::new();
    for w in batch {
        match w {
            Write::Upload { upload, now } => uploads.push((upload, *now)),
            Write::Lease(request) => requests.push(request),
            Write::Heartbeat { .. } => {}
        }
    }
    let mut tx = conn.begin().await?;
    let mut upload_answers = uploads::record(&mut tx, policy, &uploads)
        .await?
        .into_iter();
    let mut beat_answers = Vec::new();
    for w in batch {
        if let Write::Heartbeat { worker, beat, now } = w {
            beat_answers.push(heartbeats::apply(&mut tx, *worker, beat, *now).await?);
        }
    }
    let mut beat_answers = beat_answers.into_iter();
    let mut lease_answers = leasing::lease_batch(&mut tx, policy, &requests)
        .await?
        .into_iter();
    let commit = Instant::now();
    tx.commit().await?;
    policy
        .writer
        .commit_seconds
        .observe(commit.elapsed().as_secs_f64());
    policy.writer.batch_writes.observe(batch.len() as f64);
    Ok(batch
        .iter()
        .map(|w| match w {
            Write::Upload { .. } => Answer::Upload(upload_answers.next().expect("one per upload")),
            Write::Lease(_) => Answer::Lease(lease_answers.next().expect("one per request")),
            Write::Heartbeat { .. } => {
                Answer::Heartbeat(beat_answers.next().expect("one per heartbeat"))
            }
        })
        .collect())
}
