//! The local lease queue: leased units waiting for a free slot, how many
//! more leases to ask for, the results not yet answered that still count
//! against this worker, and every replica it holds (which each work
//! request names, so the coordinator gives back the rest at once).
//!
//! The coordinator lets a worker hold two leases per slot, so the next unit
//! is at hand when one finishes, without a round trip in between. Every
//! lease held counts: running, queued, or done with its result not yet
//! answered. A queued lease whose deadline passes is dropped unstarted: the
//! coordinator has given it to someone else by then.

use protocol::{Lease, ReplicaId};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Leases waiting for a slot, each with the moment it runs out.
#[derive(Debug)]
pub(crate) struct LeaseQueue {
    waiting: VecDeque<(Lease, Instant)>,
    /// The most leases this worker holds at once: two per slot.
    held: usize,
}

/// What the queue hands out next.
#[derive(Debug)]
pub(crate) enum Next {
    /// A lease to start.
    Start(Lease),
    /// A lease that ran out while it waited: dropped.
    RanOut(ReplicaId),
}

impl LeaseQueue {
    pub(crate) fn new(slots: usize) -> LeaseQueue {
        LeaseQueue {
            waiting: VecDeque::new(),
            held: 2 * slots,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many leases to ask for: what this worker may hold, less what it
    /// holds (`running` units, the queue, `unanswered` results). None while
    /// paused: queued units would only run out.
    pub(crate) fn wanted(&self, running: usize, unanswered: usize, paused: bool) -> u32 {
        if paused {
            0
        } else {
            self.held
                .saturating_sub(running + self.waiting.len() + unanswered) as u32
        }
    }

    /// Queues the leases of a work answer that arrived at `received`. What
    /// is left of each is measured on the coordinator's clock (`now_ms`, its
    /// time when it answered) and counted from `received` on this one, so
    /// the two clocks need not agree.
    pub(crate) fn push(&mut self, leases: Vec<Lease>, now_ms: i64, received: Instant) {
        self.waiting.extend(leases.into_iter().map(|lease| {
            let left = (lease.deadline_ms - now_ms).max(0) as u64;
            (lease, received + Duration::from_millis(left))
        }));
    }

    /// The next lease in the order received, or the next that ran out by
    /// `now`; `None` when the queue is empty.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<Next> {
        let (lease, deadline) = self.waiting.pop_front()?;
        Some(if now >= deadline {
            Next::RanOut(lease.replica_id)
        } else {
            Next::Start(lease)
        })
    }

    /// Empties the queue (pausing or stopping): the leases to give back.
    pub(crate) fn drain(&mut self) -> Vec<ReplicaId> {
        self.waiting
            .drain(..)
            .map(|(lease, _)| lease.replica_id)
            .collect()
    }
}

/// Results the uploader holds that the coordinator has not answered yet,
/// and a wake-up for the main loop when one is answered (its lease no
/// longer counts against this worker).
#[derive(Debug)]
pub(crate) struct Unanswered {
    /// Shared with `worker status`.
    count: Arc<AtomicUsize>,
    answered: Notify,
}

impl Unanswered {
    pub(crate) fn new(count: Arc<AtomicUsize>) -> Unanswered {
        Unanswered {
            count,
            answered: Notify::new(),
        }
    }

    /// A result handed to the uploader.
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// A result the coordinator answered (took or refused).
    pub(crate) fn answer(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.answered.notify_one();
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves when a result is answered (at once if one was answered
    /// since the last call).
    pub(crate) async fn answered(&self) {
        self.answered.notified().await
    }
}

/// Every replica this worker holds at the coordinator: leased and queued,
/// running, or with a result not yet answered (one from before a restart
/// too). A replica is let go when its result is answered, when it is given
/// back, or when its lease runs out unstarted.
#[derive(Debug, Default)]
pub(crate) struct Holdings(Mutex<BTreeSet<ReplicaId>>);

impl Holdings {
    pub(crate) fn hold(&self, replicas: impl IntoIterator<Item = ReplicaId>) {
        self.set().extend(replicas);
    }

    pub(crate) fn let_go(&self, replica: ReplicaId) {
        self.set().remove(&replica);
    }

    /// What a work request names.
    pub(crate) fn list(&self) -> Vec<ReplicaId> {
        self.set().iter().copied().collect()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<ReplicaId>> {
        // A panic elsewhere cannot leave the set half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{BlobHash, JobId, Limits, UnitId};

    fn lease(id: i64, deadline_ms: i64) -> Lease {
        Lease {
            replica_id: ReplicaId(id),
            unit_id: UnitId(id),
            job_id: JobId(uuid::Uuid::nil()),
            module: BlobHash::of(b""),
            input: Vec::new().into(),
            limits: Limits {
                fuel: 1000,
                memory_bytes: 1,
                output_bytes: 1,
            },
            deadline_ms,
            fuel_estimate: None,
        }
    }

    fn started(next: Option<Next>) -> i64 {
        match next {
            Some(Next::Start(lease)) => lease.replica_id.0,
            other => panic!("expected a lease to start, got {other:?}"),
        }
    }

    #[test]
    fn a_worker_asks_for_two_leases_per_slot_less_those_it_holds() {
        let mut q = LeaseQueue::new(3);
        assert_eq!(q.wanted(0, 0, false), 6);
        q.push(vec![lease(1, 1000), lease(2, 1000)], 0, Instant::now());
        assert_eq!(q.wanted(1, 0, false), 3, "one running, two queued");
        assert_eq!(q.wanted(1, 2, false), 1, "and two results unanswered");
        assert_eq!(q.wanted(4, 3, false), 0, "never below none");
        assert_eq!(q.wanted(0, 0, true), 0, "none while paused");
    }

    #[test]
    fn leases_start_in_the_order_received_and_those_run_out_are_dropped() {
        let mut q = LeaseQueue::new(1);
        let received = Instant::now();
        // The coordinator's clock says 10_000: the leases have 1 s, 5 s and
        // (already past) nothing left, whatever this machine's clock says.
        q.push(
            vec![lease(1, 11_000), lease(2, 15_000), lease(3, 9_000)],
            10_000,
            received,
        );
        let later = received + Duration::from_secs(2);
        assert!(matches!(q.pop(later), Some(Next::RanOut(ReplicaId(1)))));
        assert_eq!(started(q.pop(later)), 2);
        assert!(matches!(q.pop(received), Some(Next::RanOut(ReplicaId(3)))));
        assert!(q.pop(received).is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn a_lease_is_startable_until_its_deadline() {
        let mut q = LeaseQueue::new(1);
        let received = Instant::now();
        q.push(vec![lease(1, 1_500), lease(2, 1_500)], 1_000, received);
        let deadline = received + Duration::from_millis(500);
        assert_eq!(started(q.pop(deadline - Duration::from_millis(1))), 1);
        assert!(matches!(q.pop(deadline), Some(Next::RanOut(ReplicaId(2)))));
    }

    #[test]
    fn draining_hands_back_every_queued_lease() {
        let mut q = LeaseQueue::new(2);
        q.push(vec![lease(7, 1), lease(8, 1)], 0, Instant::now());
        assert_eq!(q.drain(), [ReplicaId(7), ReplicaId(8)]);
        assert_eq!(q.len(), 0);
        assert_eq!(q.wanted(0, 0, false), 4);
    }

    #[tokio::test]
    async fn an_answered_result_no_longer_counts_and_wakes_the_loop() {
        let shown = Arc::new(AtomicUsize::new(0));
        let unanswered = Unanswered::new(shown.clone());
        unanswered.add();
        unanswered.add();
        assert_eq!((unanswered.count(), shown.load(Ordering::SeqCst)), (2, 2));
        unanswered.answer();
        assert_eq!(unanswered.count(), 1);
        // Answered before anyone waited: the wake-up is kept.
        tokio::time::timeout(Duration::from_secs(5), unanswered.answered())
            .await
            .expect("woken");
    }
}
