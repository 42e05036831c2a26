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

/// How many entries a list of `n` is sent as: the next power of two.
/// SQLite prepares each distinct statement text once and sqlx keeps the
/// prepared statements in a cache of [`STATEMENT_CACHE`] per connection;
/// lists of every length from 1 to 500 in some 40 batched statements
/// would be thousands of texts that evict one another, so a batch would
/// parse and plan most of its statements again (100 jobs: 1,957 texts in
/// one run, and the writer re-preparing; padded, 160).
pub(super) fn padded_len(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// `items` followed by its last entry repeated up to [`padded_len`]
/// entries (none for an empty slice).
pub(super) fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let pad = padded_len(items.len()) - items.len();
    items.iter().chain(
        items
            .last()
            .into_iter()
            .flat_map(move |l| std::iter::repeat_n(l, pad)),
    )
}

/// How many prepared statements a connection keeps: every padded shape of
/// the batched statements, with room.
pub(super) const STATEMENT_CACHE: usize = 1024;

/// Pushes `values` as a comma-separated list of bound parameters (the
/// inside of an `IN (...)` or `NOT IN (...)`), padded to
/// [`padded_len`] by repeating the last value, which changes neither.
pub(super) fn push_list<'q, T>(
    q: &mut sqlx::QueryBuilder<'q, Sqlite>,
    values: impl IntoIterator<Item = T>,
) where
    T: 'q + Clone + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let values: Vec<T> = values.into_iter().collect();
    let mut list = q.separated(", ");
    for v in padded(&values) {
        list.push_bind(v.clone());
    }
}

/// Pushes `VALUES` and `rows` of `width` columns each, as
/// `QueryBuilder::push_values` does, padded to [`padded_len`] rows by rows
/// of NULLs. For a `WITH v(id, ...) AS (VALUES ...)` joined on `v.id` (a
/// NULL id matches nothing) or an insert that leaves out rows whose first
/// column is NULL.
pub(super) fn push_rows<'q, I, F>(
    q: &mut sqlx::QueryBuilder<'q, Sqlite>,
    width: usize,
    rows: I,
    push_row: F,
) where
    I: IntoIterator,
    I::IntoIter: ExactSizeIterator,
    F: FnMut(sqlx::query_builder::Separated<'_, 'q, Sqlite, &'static str>, I::Item),
{
    let rows = rows.into_iter();
    let n = rows.len();
    assert!(n > 0, "VALUES needs a row");
    q.push_values(rows, push_row);
    let nulls = format!(", ({})", vec!["NULL"; width].join(", "));
    for _ in n..padded_len(n) {
        q.push(&nulls);
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection as _, SqliteConnection};

    #[test]
    fn lists_are_padded_to_powers_of_two() {
        let sizes: Vec<usize> = [0, 1, 2, 3, 5, 100, 500].map(padded_len).to_vec();
        assert_eq!(sizes, [1, 1, 2, 4, 8, 128, 512]);
    }

    #[tokio::test]
    async fn padding_changes_no_answer() {
        let mut db = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id, n) VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)")
            .execute(&mut db)
            .await
            .unwrap();
        // Three ids, sent as four: IN and NOT IN answer as for three.
        for (op, want) in [("IN", vec![1, 2, 3]), ("NOT IN", vec![4, 5])] {
            let mut q =
                sqlx::QueryBuilder::<Sqlite>::new(format!("SELECT id FROM t WHERE id {op} ("));
            push_list(&mut q, [1i64, 2, 3]);
            q.push(") ORDER BY id");
            assert_eq!(q.sql().matches('?').count(), 4);
            let got: Vec<i64> = q.build_query_scalar().fetch_all(&mut db).await.unwrap();
            assert_eq!(got, want, "{op}");
        }
        // Three rows, sent as four: the NULL row updates nothing.
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, n) AS (");
        push_rows(
            &mut q,
            2,
            [(1i64, 10i64), (3, 30), (5, 50)],
            |mut b, (id, n)| {
                b.push_bind(id).push_bind(n);
            },
        );
        q.push(") UPDATE t SET n = v.n FROM v WHERE t.id = v.id");
        assert!(q.sql().contains("(NULL, NULL)"));
        let done = q.build().execute(&mut db).await.unwrap();
        assert_eq!(done.rows_affected(), 3);
        let got: Vec<(i64, i64)> = sqlx::query_as("SELECT id, n FROM t ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(got, [(1, 10), (2, 0), (3, 30), (4, 0), (5, 50)]);
    }
}
