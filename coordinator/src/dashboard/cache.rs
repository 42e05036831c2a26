//! What the dashboard remembers between requests: answers shared between
//! viewers (and how long a large one may be reused after a change), and
//! final minutes of the throughput chart.

use super::ApiResult;
use super::job::JobDetail;
use super::leaderboard::Leaderboard;
use super::overview::Overview;
use super::submitters::Submitters;
use super::workers::WorkersPage;
use crate::Coordinator;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a large answer may be reused although something changed: ten
/// times what it took to compute, within these bounds.
const MIN_REUSE: Duration = Duration::from_millis(500);
const MAX_REUSE: Duration = Duration::from_secs(2);
/// What makes an answer large (and reusable for a moment): a job of this
/// many units, this many workers or leases, this many results a minute.
pub(super) const LARGE: u64 = 10_000;
pub(super) const LARGE_FLEET: u64 = 1_000;
/// Job pages kept in the cache.
const JOB_CACHE: usize = 64;

/// What the dashboard remembers between requests: shared answers and
/// final minutes of the throughput chart.
#[derive(Debug, Default)]
pub(super) struct Dashboard {
    pub(super) overview: Slot<Overview>,
    /// The overview's Submitters section, computed apart (less often).
    pub(super) submitters: Slot<Submitters>,
    jobs: Mutex<HashMap<String, Arc<Slot<JobDetail>>>>,
    pub(super) workers: Slot<WorkersPage>,
    pub(super) leaderboard: Slot<Leaderboard>,
    /// Results returned per minute (by minute number since the epoch),
    /// for minutes that are over.
    pub(super) minutes: Mutex<BTreeMap<i64, u64>>,
}

impl Dashboard {
    /// Where job `id`'s page is kept; once JOB_CACHE pages are kept, asking
    /// for another forgets them all.
    pub(super) fn job_slot(&self, id: &str) -> Arc<Slot<JobDetail>> {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        if jobs.len() >= JOB_CACHE && !jobs.contains_key(id) {
            jobs.clear();
        }
        jobs.entry(id.to_owned()).or_default().clone()
    }
}

/// Where one answer is kept; locked while it is computed.
pub(super) type Slot<T> = tokio::sync::Mutex<Option<Cached<T>>>;

/// An answer, and what it was computed from.
#[derive(Debug)]
pub(super) struct Cached<T> {
    key: Key,
    /// Until when it may be reused although the key changed (large
    /// answers only; a small one is always recomputed after a change).
    reuse_until: Option<Instant>,
    value: Arc<T>,
}

/// What an answer depends on: the coordinator's change counter and clock
/// (both move when anything could have changed), and the request.
pub(super) type Key = (u64, i64, u64);

pub(super) fn live_key(c: &Coordinator, param: u64) -> Key {
    (*c.subscribe().borrow(), c.now_ms(), param)
}

/// The cached answer if it still holds (same key, or a large answer to the
/// same request recently enough for what it cost), else a fresh one from
/// `compute`; `large` tells whether an answer may be reused after a change.
pub(super) async fn shared<T, F>(
    slot: &Slot<T>,
    key: Key,
    large: impl Fn(&T) -> bool,
    compute: F,
) -> ApiResult<Arc<T>>
where
    F: AsyncFnOnce() -> ApiResult<T>,
{
    // Held while computing: viewers arriving meanwhile wait for this
    // answer instead of running the same queries.
    let mut slot = slot.lock().await;
    if let Some(cached) = slot.as_ref()
        && (cached.key == key
            || (cached.key.2 == key.2 && cached.reuse_until.is_some_and(|t| Instant::now() < t)))
    {
        return Ok(cached.value.clone());
    }
    let started = Instant::now();
    let value = Arc::new(compute().await?);
    let reuse = (started.elapsed() * 10).clamp(MIN_REUSE, MAX_REUSE);
    *slot = Some(Cached {
        key,
        reuse_until: large(&value).then(|| Instant::now() + reuse),
        value: value.clone(),
    });
    Ok(value)
}
