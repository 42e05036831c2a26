//! Submitters (table `submitters`): created with a key kept only as its
//! sha256, listed, revoked, their share and limits set; found by key on
//! every authenticated request (never remembered in the process, so a
//! revocation made by another process holds from the next request on);
//! the `api-key` file's admin made sure of at start; and the usage their
//! allowance is checked against, inside the caller's transaction.

use super::sql::count;
use super::{Error, Result, Store};
use crate::allowance::{self, Allowance, Usage};
use crate::submitter::{FILE_ADMIN, SubmitterName};
use sqlx::SqliteConnection;

/// A submitter as the API and the operator's commands see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitterRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub share: u32,
    /// Its own limits; `None`: the coordinator's default.
    pub max_units: Option<u64>,
    pub max_stored_bytes: Option<u64>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A row of `coordinator keys list`.
#[derive(Clone, Debug)]
pub struct SubmitterListing {
    pub submitter: SubmitterRow,
    /// All its jobs, and those still splitting, running or reducing.
    pub jobs: u64,
    pub unfinished_jobs: u64,
    /// What its unfinished jobs hold against its limits.
    pub usage: Usage,
}

/// A new submitter; its key is given as its hash only.
#[derive(Clone, Debug)]
pub struct NewSubmitter<'a> {
    pub name: &'a SubmitterName,
    pub key_hash: &'a str,
    pub admin: bool,
    pub share: u32,
    pub max_units: Option<u64>,
    pub max_stored_bytes: Option<u64>,
}

/// A change of `coordinator keys set`: each field given is set; a limit
/// given as `Some(None)` goes back to the coordinator's default.
#[derive(Clone, Debug, Default)]
pub struct SubmitterChange {
    pub share: Option<u32>,
    pub max_units: Option<Option<u64>>,
    pub max_stored_bytes: Option<Option<u64>>,
}

/// What [`Store::revoke_submitter`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked now.
    Revoked,
    /// Revoked already, at this time: nothing changed.
    Already(i64),
    /// No submitter of that name.
    Unknown,
    /// The `api-key` file's admin, which cannot be revoked.
    FileAdmin,
}

/// What [`Store::ensure_admin`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSetup {
    /// The admin was created now.
    pub created: bool,
    /// Its key changed (the file did).
    pub key_changed: bool,
    /// Jobs from before submitters, given to it now.
    pub adopted: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    name: String,
    admin: bool,
    share: i64,
    max_units: Option<i64>,
    max_stored_bytes: Option<i64>,
    created_ms: i64,
    revoked_ms: Option<i64>,
}

impl From<Row> for SubmitterRow {
    fn from(r: Row) -> SubmitterRow {
        SubmitterRow {
            id: r.id,
            name: r.name,
            admin: r.admin,
            share: count(r.share).min(u64::from(u32::MAX)) as u32,
            max_units: r.max_units.map(count),
            max_stored_bytes: r.max_stored_bytes.map(count),
            created_ms: r.created_ms,
            revoked_ms: r.revoked_ms,
        }
    }
}

const COLUMNS: &str = "id, name, admin, share, max_units, max_stored_bytes, created_ms, revoked_ms";

/// A limit as stored: beyond `i64::MAX` is as good as no limit.
fn stored_limit(limit: Option<u64>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl Store {
    /// Creates a submitter; `None` when the name is taken (nothing changed:
    /// the insert is conditional on the unique name).
    pub async fn create_submitter(&self, new: &NewSubmitter<'_>, now: i64) -> Result<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO submitters (name, key_hash, admin, share, max_units, max_stored_bytes, created_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING
             RETURNING id",
        )
        .bind(new.name.as_str())
        .bind(new.key_hash)
        .bind(new.admin)
        .bind(i64::from(new.share))
        .bind(stored_limit(new.max_units))
        .bind(stored_limit(new.max_stored_bytes))
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        Ok(id)
    }

    /// The submitter whose key has this sha256, revoked or not. Read from
    /// the database every time.
    pub async fn submitter_by_key(&self, key_hash: &str) -> Result<Option<SubmitterRow>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM submitters WHERE key_hash = ?"
        ))
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Into::into))
    }

    pub async fn submitter_by_name(&self, name: &SubmitterName) -> Result<Option<SubmitterRow>> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM submitters WHERE name = ?"))
                .bind(name.as_str())
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(Into::into))
    }

    /// Every submitter, by name, with its jobs and what they hold.
    pub async fn submitters(&self) -> Result<Vec<SubmitterListing>> {
        let rows: Vec<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM submitters ORDER BY name"))
                .fetch_all(&self.read)
                .await?;
        let mut conn = self.read.acquire().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (jobs, unfinished): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*),
                        COALESCE(SUM(state IN ('splitting', 'running', 'reducing')), 0)
                 FROM jobs WHERE submitter_id = ?",
            )
            .bind(row.id)
            .fetch_one(&mut *conn)
            .await?;
            let usage = usage(&mut conn, row.id).await?;
            out.push(SubmitterListing {
                submitter: row.into(),
                jobs: count(jobs),
                unfinished_jobs: count(unfinished),
                usage,
            });
        }
        Ok(out)
    }

    /// Revokes the submitter `name`: its key is refused from the next
    /// request on; its jobs stay. The condition is in the `UPDATE`, and the
    /// schema refuses revoking the `api-key` file's admin (migration 0019).
    pub async fn revoke_submitter(&self, name: &SubmitterName, now: i64) -> Result<Revocation> {
        if name.is_file_admin() {
            return Ok(Revocation::FileAdmin);
        }
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE submitters SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        let outcome = if done.rows_affected() == 1 {
            Revocation::Revoked
        } else {
            let revoked: Option<Option<i64>> =
                sqlx::query_scalar("SELECT revoked_ms FROM submitters WHERE name = ?")
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            match revoked {
                None => Revocation::Unknown,
                Some(Some(ms)) => Revocation::Already(ms),
                Some(None) => unreachable!("the update above revokes a submitter not revoked"),
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Sets the share or limits of `name`; `None` when there is no such
    /// submitter (nothing changed).
    pub async fn set_submitter(
        &self,
        name: &SubmitterName,
        change: &SubmitterChange,
    ) -> Result<Option<SubmitterRow>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "UPDATE submitters SET
                 share = COALESCE(?, share),
                 max_units = CASE WHEN ? THEN ? ELSE max_units END,
                 max_stored_bytes = CASE WHEN ? THEN ? ELSE max_stored_bytes END
             WHERE name = ?
             RETURNING {COLUMNS}"
        ))
        .bind(change.share.map(i64::from))
        .bind(change.max_units.is_some())
        .bind(stored_limit(change.max_units.flatten()))
        .bind(change.max_stored_bytes.is_some())
        .bind(stored_limit(change.max_stored_bytes.flatten()))
        .bind(name.as_str())
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Makes sure the admin named [`FILE_ADMIN`] exists with the key whose
    /// sha256 is `key_hash` (the `api-key` file's, or `--api-key`), and
    /// gives it the jobs that have no submitter (those from before
    /// submitters): a coordinator set up before keys keeps working as it
    /// did. One transaction; a key that is another submitter's is refused.
    pub async fn ensure_admin(&self, key_hash: &str, now: i64) -> Result<AdminSetup> {
        let mut tx = self.write.begin().await?;
        let other: Option<String> =
            sqlx::query_scalar("SELECT name FROM submitters WHERE key_hash = ? AND name <> ?")
                .bind(key_hash)
                .bind(FILE_ADMIN)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(other) = other {
            return Err(Error::Settings(format!(
                "the coordinator's API key (the api-key file, or --api-key) is also the key of submitter {other}: \
                 give the coordinator a key of its own (a new api-key file), or revoke {other}"
            )));
        }
        let old: Option<(i64, String)> =
            sqlx::query_as("SELECT id, key_hash FROM submitters WHERE name = ?")
                .bind(FILE_ADMIN)
                .fetch_optional(&mut *tx)
                .await?;
        let (id, created, key_changed) = match old {
            Some((id, old_hash)) => {
                let changed = old_hash != key_hash;
                if changed {
                    sqlx::query("UPDATE submitters SET key_hash = ? WHERE id = ?")
                        .bind(key_hash)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                (id, false, changed)
            }
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO submitters (name, key_hash, admin, created_ms)
                     VALUES (?, ?, TRUE, ?) RETURNING id",
                )
                .bind(FILE_ADMIN)
                .bind(key_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                (id, true, false)
            }
        };
        let adopted = sqlx::query("UPDATE jobs SET submitter_id = ? WHERE submitter_id IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(AdminSetup {
            created,
            key_changed,
            adopted,
        })
    }

    /// What the unfinished jobs of `submitter` hold against its limits.
    pub async fn submitter_usage(&self, submitter: i64) -> Result<Usage> {
        let mut conn = self.read.acquire().await?;
        usage(&mut conn, submitter).await
    }
}

/// Units in flight and stored bytes of the jobs of `submitter` that are
/// splitting, running or reducing (`allowance`'s definitions): one range of
/// the index `jobs_by_submitter`.
async fn usage(conn: &mut SqliteConnection, submitter: i64) -> Result<Usage> {
    let (units, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(units_total - units_accepted - units_failed), 0),
                COALESCE(SUM(stored_bytes), 0)
         FROM jobs
         WHERE submitter_id = ? AND state IN ('splitting', 'running', 'reducing')",
    )
    .bind(submitter)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Usage {
        units: count(units),
        stored_bytes: count(bytes),
    })
}

/// Refuses (`Error::OverLimit`) what `adding` would put past the allowance
/// of `submitter` (its own limits over `defaults`), inside the caller's
/// write transaction, before the caller stores anything: the check and the
/// write commit together, so two racing submissions cannot both pass.
pub(super) async fn within_allowance(
    conn: &mut SqliteConnection,
    submitter: i64,
    adding: Usage,
    defaults: &Allowance,
) -> Result<()> {
    let row: Option<(String, Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT name, max_units, max_stored_bytes FROM submitters WHERE id = ?")
            .bind(submitter)
            .fetch_optional(&mut *conn)
            .await?;
    let (name, max_units, max_stored_bytes) =
        row.ok_or_else(|| Error::corrupt("submitter id", submitter))?;
    let allowance = defaults.overridden_by(max_units.map(count), max_stored_bytes.map(count));
    let usage = usage(conn, submitter).await?;
    allowance::check(&name, &allowance, usage, adding).map_err(Error::OverLimit)
}
