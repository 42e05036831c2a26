//! The background work of a job's life, off the request path: splitting a
//! job input into units, reducing accepted outputs into the job output, and
//! timing out leases nobody answered.
//!
//! All of it is restartable from the database alone: a job found in
//! `splitting` is split again from scratch (its half-written units are
//! discarded), a job found in `reducing` is reduced again. A split or a
//! reduce runs under a [`Claim`] held in the database, so with several
//! coordinators on one database each job's duty runs on one of them at a
//! time, and moves to another if its coordinator dies (the claim expires).

use crate::Coordinator;
use crate::store::{self, CLAIM_TTL_MS, Claim, Duty, Effects};
use protocol::{JobId, JobState, frame};
use sandbox::{Mode, Stdout};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// A module that does not implement an optional mode exits with this.
pub const UNSUPPORTED_MODE: i32 = 64;

/// How many split units are written per transaction.
const SPLIT_BATCH: usize = 2000;

/// The largest unit input a split may produce.
const MAX_UNIT_INPUT: usize = 16 << 20;

/// Runs until `stop` turns true: starts splits and reduces, expires leases.
pub async fn run_background(c: Coordinator, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = c.start_pending_jobs().await {
            tracing::error!(error = %e, "cannot look for jobs to split or reduce");
        }
        if let Err(e) = c.expire_leases_if_due().await {
            tracing::error!(error = %e, "cannot expire leases");
        }
        tokio::select! {
            _ = c.inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(c.inner.config.expiry_interval_ms as u64)) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Coordinator {
    /// Acts on what a store call changed.
    pub(crate) fn apply(&self, effects: Effects) {
        self.inner.metrics.reopened(effects.reopened);
        if !effects.jobs_to_reduce.is_empty() {
            self.inner.wake.notify_one();
        }
        self.changed();
    }

    /// Times out expired leases, at most once per `expiry_interval_ms` of
    /// the coordinator's clock. Called by the background task and before
    /// handing out work, so a test that moves a manual clock sees leases
    /// expire on the next work request.
    pub(crate) async fn expire_leases_if_due(&self) -> Result<(), store::Error> {
        let now = self.now_ms();
        let due = self.inner.next_expiry_ms.load(Ordering::SeqCst);
        if now < due
            || self
                .inner
                .next_expiry_ms
                .compare_exchange(
                    due,
                    now + self.inner.config.expiry_interval_ms,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_err()
        {
            return Ok(());
        }
        let (expired, effects) = self.inner.store.expire_leases(now).await?;
        if expired > 0 {
            tracing::info!(expired, "leases timed out; their units go to other workers");
        }
        // Units a settling left for this round may also have changed.
        if expired > 0 || effects.reopened > 0 || !effects.jobs_to_reduce.is_empty() {
            self.apply(effects);
        }
        // Starvation is a matter of lease periods: a sweep every ten
        // expiries is soon enough, and it reads every unit that wants work.
        let due = self.inner.next_starvation_ms.load(Ordering::SeqCst);
        if now >= due
            && self
                .inner
                .next_starvation_ms
                .compare_exchange(
                    due,
                    now + 10 * self.inner.config.expiry_interval_ms,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            let (failed, effects) = self.inner.store.sweep_starved(now).await?;
            if failed > 0 {
                self.apply(effects);
            }
        }
        Ok(())
    }

    /// Claims every split and reduce that nobody performs, and starts each.
    async fn start_pending_jobs(&self) -> Result<(), store::Error> {
        for (state, duty) in [
            (JobState::Splitting, Duty::Split),
            (JobState::Reducing, Duty::Reduce),
        ] {
            for job in self.inner.store.jobs_in_state(state).await? {
                if self.performing().contains(&(job, duty)) {
                    continue; // here, already: no need to ask the database
                }
                let now = self.now_ms();
                let Some(claim) = self
                    .inner
                    .store
                    .claim(job, duty, &self.inner.node, now)
                    .await?
                else {
                    continue; // performed by another coordinator
                };
                let guard = Performing::start(self, claim);
                tokio::spawn(async move { guard.c.clone().perform(guard).await });
            }
        }
        Ok(())
    }

    fn performing(&self) -> std::sync::MutexGuard<'_, HashSet<(JobId, Duty)>> {
        self.inner.performing.lock().expect("not poisoned")
    }

    /// Performs a claimed duty, renewing the claim while it runs; records
    /// a failure unless the claim was lost (then its new holder goes on).
    async fn perform(self, guard: Performing) {
        let claim = &guard.claim;
        let job = claim.job;
        let result = match claim.duty {
            Duty::Split => self.split(claim).await,
            Duty::Reduce => self.reduce(claim).await,
        };
        match result {
            Ok(()) => {}
            Err(e) if matches!(e.downcast_ref(), Some(store::Error::ClaimLost { .. })) => {
                tracing::warn!(%job, duty = claim.duty.as_str(), "this job step's claim was lost (it ran out, or backtracking changed the outputs): its new holder goes on");
            }
            Err(e) => {
                tracing::error!(%job, error = %format!("{e:#}"), "job step failed");
                let failed = self
                    .inner
                    .store
                    .fail_duty(claim, &format!("{e:#}"), self.now_ms())
                    .await;
                if let Err(e) = failed {
                    tracing::error!(%job, error = %e, "cannot record the job's failure");
                }
            }
        }
        if let Err(e) = self.inner.store.release_claim(claim).await {
            tracing::warn!(%job, error = %e, "cannot release a claim; it runs out by itself");
        }
        drop(guard);
        self.changed();
        self.inner.wake.notify_one();
    }
    /// Runs the module's `split` mode over the job input and streams the
    /// unit inputs into the database in batches: the units of a large job
    /// are never all in memory.
    async fn split(&self, claim: &Claim) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let job = claim.job;
        let Some(row) = store.job_row(job).await? else {
            return Ok(());
        };
        if row.state != JobState::Splitting {
            return Ok(());
        }
        store.discard_units(claim, self.now_ms()).await?;
        let program = self.program(row.module).await?;
        let input = match row.input {
            Some(h) => store
                .blob(&h)
                .await?
                .ok_or_else(|| anyhow::anyhow!("job input {h} is not stored"))?,
            None => Vec::new(),
        };
        tracing::info!(%job, "splitting");
        let started = std::time::Instant::now();
        let total = self
            .split_into_units(claim, program, input, row.quorum)
            .await?;
        let effects = store.finish_split(claim, total, self.now_ms()).await?;
        tracing::info!(%job, units = total, secs = started.elapsed().as_secs_f64(), "split done");
        self.apply(effects);
        Ok(())
    }

    /// Runs `split` and streams its unit inputs into the database in
    /// batches of [`SPLIT_BATCH`], under `claim`; returns how many.
    async fn split_into_units(
        &self,
        claim: &Claim,
        program: sandbox::Program,
        input: Vec<u8>,
        quorum: u32,
    ) -> anyhow::Result<u64> {
        let store = &self.inner.store;
        let allowance = &self.inner.config.allowance;

        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let sandbox = self.inner.sandbox.clone();
        let limits = self.inner.config.split_limits;
        let run = tokio::task::spawn_blocking(move || {
            let sink = Stdout::Stream(Box::new(move |bytes: &[u8]| {
                tx.blocking_send(bytes.to_vec()).is_ok()
            }));
            sandbox.run(&program, Mode::Split, &input, &limits, sink)
        });

        let mut decoder = frame::Decoder::new();
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(SPLIT_BATCH);
        let mut total = 0u64;
        let mut too_large = None;
        while let Some(chunk) = rx.recv().await {
            decoder.feed(&chunk, |unit| {
                if unit.len() > MAX_UNIT_INPUT {
                    too_large.get_or_insert(unit.len());
                }
                batch.push(unit.to_vec());
            });
            if let Some(len) = too_large {
                drop(rx);
                let _ = run.await;
                anyhow::bail!(
                    "split produced a unit input of {len} bytes; the most is {MAX_UNIT_INPUT}"
                );
            }
            if batch.len() >= SPLIT_BATCH {
                store
                    .add_units(claim, total, &batch, quorum, allowance, self.now_ms())
                    .await
                    .map_err(|e| split_stopped(e, total))?;
                total += batch.len() as u64;
                batch.clear();
            }
        }
        let report = run.await?;
        match report.result {
            Ok(0) => {}
            Ok(UNSUPPORTED_MODE) => anyhow::bail!(
                "the module has no `split` mode: give the job's unit inputs with `units` instead of `input`"
            ),
            _ => {
                let failure = report.into_output().expect_err("a failed run");
                anyhow::bail!(
                    "split failed ({}): {}",
                    failure.kind.as_str(),
                    failure.message
                );
            }
        }
        decoder
            .finish()
            .map_err(|e| anyhow::anyhow!("split output is not framed as the task ABI says: {e}"))?;
        store
            .add_units(claim, total, &batch, quorum, allowance, self.now_ms())
            .await
            .map_err(|e| split_stopped(e, total))?;
        total += batch.len() as u64;
        Ok(total)
    }

    /// Runs the module's `reduce` mode over the accepted outputs in unit
    /// order; a module without one gets the framed outputs as job output.
    async fn reduce(&self, claim: &Claim) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let job = claim.job;
        let Some(row) = store.job_row(job).await? else {
            return Ok(());
        };
        if row.state != JobState::Reducing {
            return Ok(());
        }
        let program = self.program(row.module).await?;
        let outputs = store.accepted_outputs(job).await?;
        let framed = frame::encode(outputs.iter().map(|o| &o[..]));
        drop(outputs);
        tracing::info!(%job, bytes = framed.len(), "reducing");
        let sandbox = self.inner.sandbox.clone();
        let limits = self.inner.config.reduce_limits;
        let (report, framed) = tokio::task::spawn_blocking(move || {
            let report = sandbox.run(&program, Mode::Reduce, &framed, &limits, Stdout::Capture);
            (report, framed)
        })
        .await?;
        let output = match report.result {
            Ok(UNSUPPORTED_MODE) => framed,
            _ => report.into_output().map_err(|f| {
                anyhow::anyhow!("reduce failed ({}): {}", f.kind.as_str(), f.message)
            })?,
        };
        store.finish_job(claim, &output, self.now_ms()).await?;
        tracing::info!(%job, bytes = output.len(), "job done");
        Ok(())
    }
}

/// A split's write refused by its submitter's `max_units` says where the
/// split stopped; any other error is passed on as it is (a lost claim must
/// stay recognisable).
fn split_stopped(e: store::Error, written: u64) -> anyhow::Error {
    match e {
        store::Error::OverLimit(_) => {
            anyhow::Error::new(e).context(format!("the split stopped after {written} units"))
        }
        e => e.into(),
    }
}

/// A duty this coordinator performs: while it lives, the claim is renewed
/// and the duty counts as performed here; dropped (at the end, or by a
/// panic), the renewal stops and the duty may be claimed again.
struct Performing {
    c: Coordinator,
    claim: Claim,
    renewer: tokio::task::JoinHandle<()>,
}

impl Performing {
    fn start(c: &Coordinator, claim: Claim) -> Performing {
        c.performing().insert((claim.job, claim.duty));
        let renewer = tokio::spawn(renew(c.clone(), claim.clone()));
        Performing {
            c: c.clone(),
            claim,
            renewer,
        }
    }
}

impl Drop for Performing {
    fn drop(&mut self) {
        self.renewer.abort();
        self.c
            .performing()
            .remove(&(self.claim.job, self.claim.duty));
    }
}

/// Renews `claim` every quarter of its lifetime until it is lost; a passing
/// failure (a busy database) is retried at the next turn.
async fn renew(c: Coordinator, claim: Claim) {
    let every = Duration::from_millis((CLAIM_TTL_MS / 4) as u64);
    loop {
        tokio::time::sleep(every).await;
        match c.inner.store.renew(&claim, c.now_ms()).await {
            Ok(()) => {}
            Err(store::Error::ClaimLost { .. }) => return, // its next write stops the duty
            Err(e) => {
                tracing::warn!(job = %claim.job, error = %e, "cannot renew a claim; retrying")
            }
        }
    }
}
