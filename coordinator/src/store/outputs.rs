//! A job's accepted unit outputs so far, for `GET
//! /api/v1/jobs/{id}/output?partial=true`: counted, then read in pages by
//! unit index, all inside one read transaction. SQLite's WAL gives that
//! transaction one snapshot, so the count told up front is the number of
//! outputs the pages hold, whatever is accepted or reopened meanwhile; and
//! no more than a page of outputs is in memory at once.

use super::sql::count;
use super::{Error, Result, Store};
use protocol::JobId;
use sqlx::{Sqlite, Transaction};

/// About how many output bytes one page reads (at least one output).
const PAGE_BYTES: u64 = 4 << 20;
/// The most units one page reads.
const PAGE_UNITS: u64 = 512;

/// A job's accepted outputs as of one moment, read a page at a time.
/// Holds a read connection (and SQLite's snapshot) until dropped.
#[derive(Debug)]
pub struct AcceptedOutputs {
    tx: Transaction<'static, Sqlite>,
    job: String,
    /// The unit index of the last output read.
    after: i64,
    page: u64,
    /// How many outputs the pages hold in all: the job's accepted units.
    pub units: u64,
    /// The job's units.
    pub units_total: u64,
}

impl Store {
    /// The accepted outputs of `job` as of now, or None if there is no
    /// such job.
    pub async fn accepted_outputs_so_far(&self, job: JobId) -> Result<Option<AcceptedOutputs>> {
        let mut tx = self.read.begin().await?;
        // The first read starts the snapshot: the count and every page
        // below see the database as it was here.
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT units_accepted, units_total, output_bytes FROM jobs WHERE id = ?",
        )
        .bind(job.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((accepted, total, output_bytes)) = row else {
            return Ok(None);
        };
        Ok(Some(AcceptedOutputs {
            tx,
            job: job.to_string(),
            after: -1,
            page: (PAGE_BYTES / count(output_bytes).max(1)).clamp(1, PAGE_UNITS),
            units: count(accepted),
            units_total: count(total),
        }))
    }
}

impl AcceptedOutputs {
    /// The next page of outputs in unit order; empty after the last.
    pub async fn next_page(&mut self) -> Result<Vec<Vec<u8>>> {
        let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT u.idx, r.output FROM units u JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? AND u.state = 'accepted' AND u.idx > ?
             ORDER BY u.idx LIMIT ?",
        )
        .bind(&self.job)
        .bind(self.after)
        .bind(self.page as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut page = Vec::with_capacity(rows.len());
        for (idx, output) in rows {
            self.after = idx;
            page.push(output.ok_or_else(|| Error::corrupt("accepted output of unit", idx))?);
        }
        Ok(page)
    }
}
