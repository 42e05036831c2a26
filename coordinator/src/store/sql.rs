//! Helpers every store module shares: bound lists, batch sizes, decoding
//! stored text into checked types, and per-key tallies.

use super::{Error, Result};
use crate::trust::Standing;
use crate::validator::ReplicaState;
use protocol::{BlobHash, JobId, JobState, WorkerId};
use sqlx::Sqlite;

/// How many ids one `IN (...)` list carries, and rows one `VALUES` list:
/// well under SQLite's limit of 32,766 bound parameters per statement.
pub(super) const IN_LIST_MAX: usize = 512;
pub(super) const VALUES_MAX: usize = 500;

/// Pushes `values` as a comma-separated list of bound parameters (the
/// inside of an `IN (...)`).
pub(super) fn push_list<'q, T>(
    q: &mut sqlx::QueryBuilder<'q, Sqlite>,
    values: impl IntoIterator<Item = T>,
) where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v);
    }
}

pub(super) fn job_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|_| Error::corrupt("job id", s))
}

pub(super) fn worker_id(s: &str) -> Result<WorkerId> {
    s.parse().map_err(|_| Error::corrupt("worker id", s))
}

pub(super) fn hash(s: &str) -> Result<BlobHash> {
    s.parse().map_err(|_| Error::corrupt("hash", s))
}

pub(super) fn job_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| Error::corrupt("job state", s))
}

pub(super) fn replica_state(s: &str) -> Result<ReplicaState> {
    ReplicaState::parse(s).ok_or_else(|| Error::corrupt("replica state", s))
}

/// A stored count as u64 (counts are never negative; the schema guards
/// the ones that could be driven below zero).
pub(super) fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Adds `n` to `key`'s entry, keeping first-seen order: the batches'
/// per-job and per-worker sums, written one statement per entry.
pub(super) fn tally<K: PartialEq>(tallies: &mut Vec<(K, i64)>, key: K, n: i64) {
    match tallies.iter_mut().find(|(k, _)| *k == key) {
        Some((_, total)) => *total += n,
        None => tallies.push((key, n)),
    }
}

/// The columns of `workers` that make a worker's [`Standing`], flattened
/// into each row struct that reads them.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StandingColumns {
    pub slots: i64,
    pub valid_count: i64,
    pub consecutive_valid: i64,
    pub invalid_count: i64,
    pub caught: bool,
    pub quota: i64,
    pub quota_day: i64,
    pub leased_today: i64,
}

impl StandingColumns {
    pub fn standing(&self) -> Standing {
        Standing {
            slots: self.slots,
            valid: self.valid_count,
            consecutive_valid: self.consecutive_valid,
            invalid: self.invalid_count,
            caught: self.caught,
            quota: self.quota,
            quota_day: self.quota_day,
            leased_today: self.leased_today,
        }
    }
}
