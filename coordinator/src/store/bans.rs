//! Operator bans: a worker, or every worker of an account, shut out at
//! once. Banning marks the rows (migration 0012, whose guards then refuse
//! the worker new replicas and results whoever writes), discards what it
//! holds that is not judged yet, and re-verifies what it vouched for the
//! way catching a cheat does (`Settling::backtrack`), in one transaction.

use super::settling::{Effects, Settling};
use super::sql::{IN_LIST_MAX, push_list, worker_id};
use super::{Result, Store};
use protocol::{BlobHash, WorkerId};

/// How an account key is stored (as `api::hash_secret` keeps it).
fn hash_secret(key: &str) -> String {
    BlobHash::of(key.as_bytes()).to_string()
}

/// Whom a ban (or an unban) is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    Worker(WorkerId),
    /// An account, by its id or its key.
    Account(String),
}

impl std::fmt::Display for BanTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanTarget::Worker(id) => write!(f, "worker {id}"),
            BanTarget::Account(a) => write!(f, "account {a}"),
        }
    }
}

/// What a ban did.
#[derive(Debug, Default)]
pub struct BanReport {
    /// Workers banned by this call (none if all already were).
    pub banned: Vec<WorkerId>,
    /// Their replicas that were leased or returned but not judged, now
    /// discarded.
    pub discarded: u64,
    /// Accepted units they vouched for without a trusted confirmer,
    /// reopened to be verified again.
    pub reopened: u64,
    pub effects: Effects,
}

impl Store {
    /// Bans `target` as of `now`; `None` if there is no such worker or
    /// account. Banning again changes nothing.
    pub async fn ban(&self, target: &BanTarget, now: i64) -> Result<Option<BanReport>> {
        let mut tx = self.write.begin().await?;
        let ids: Vec<String> = match target {
            BanTarget::Worker(id) => {
                let id = id.to_string();
                let exists: Option<bool> =
                    sqlx::query_scalar("SELECT banned_ms IS NOT NULL FROM workers WHERE id = ?")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                sqlx::query_scalar(
                    "UPDATE workers SET banned_ms = ? WHERE id = ? AND banned_ms IS NULL RETURNING id",
                )
                .bind(now)
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?
            }
            BanTarget::Account(account) => {
                let found: Option<String> = sqlx::query_scalar(
                    "UPDATE accounts SET banned_ms = COALESCE(banned_ms, ?)
                     WHERE id = ? OR key_hash = ? RETURNING id",
                )
                .bind(now)
                .bind(account)
                .bind(hash_secret(account))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(account) = found else {
                    return Ok(None);
                };
                sqlx::query_scalar(
                    "UPDATE workers SET banned_ms = ? WHERE account_id = ? AND banned_ms IS NULL
                     RETURNING id",
                )
                .bind(now)
                .bind(&account)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut report = BanReport::default();
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Some(report));
        }
        // Not yet judged: returned and waiting for a quorum (discarded: no
        // votes, though they count against max_replicas), or still leased
        // (given back: they never ran, so their units are simply leased
        // again).
        let mut units = Vec::new();
        for (from, to) in [("returned", "discarded"), ("in_progress", "released")] {
            // An account may have any number of workers.
            for chunk in ids.chunks(IN_LIST_MAX) {
                let mut q = sqlx::QueryBuilder::new("UPDATE replicas SET state = ");
                q.push_bind(to)
                    .push(" WHERE state = ")
                    .push_bind(from)
                    .push(" AND worker_id IN (");
                push_list(&mut q, chunk.iter().cloned());
                q.push(") RETURNING unit_id");
                let changed: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                units.extend(changed);
            }
        }
        report.discarded = units.len() as u64;
        let mut settling = Settling {
            units,
            ..Settling::default()
        };
        // Nothing can overturn a ban: the votes it discards stay discarded.
        let caught: Vec<_> = ids.iter().map(|id| (id.clone(), None)).collect();
        let reopened = settling
            .backtrack(&mut tx, &caught, &self.policy.trust)
            .await?;
        report.reopened = reopened.len() as u64;
        settling.units.extend(reopened);
        report.effects = settling.apply(&mut tx, &self.policy, now).await?;
        report.effects.reopened += report.reopened;
        tx.commit().await?;
        report.banned = ids.iter().map(|id| worker_id(id)).collect::<Result<_>>()?;
        Ok(Some(report))
    }

    /// Lifts a ban: the workers take work again from now on (what the ban
    /// discarded stays discarded). Returns how many workers it lifted, or
    /// `None` if there is no such worker or account.
    pub async fn unban(&self, target: &BanTarget) -> Result<Option<u64>> {
        let mut tx = self.write.begin().await?;
        let lifted = match target {
            BanTarget::Worker(id) => {
                let id = id.to_string();
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM workers WHERE id = ?")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                sqlx::query(
                    "UPDATE workers SET banned_ms = NULL WHERE id = ? AND banned_ms IS NOT NULL",
                )
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
            BanTarget::Account(account) => {
                let found: Option<String> = sqlx::query_scalar(
                    "UPDATE accounts SET banned_ms = NULL WHERE id = ? OR key_hash = ? RETURNING id",
                )
                .bind(account)
                .bind(hash_secret(account))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(account) = found else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE workers SET banned_ms = NULL
                     WHERE account_id = ? AND banned_ms IS NOT NULL",
                )
                .bind(&account)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
        };
        tx.commit().await?;
        Ok(Some(lifted))
    }

    /// Whether `worker` is banned now. Read on every authenticated call
    /// (one primary-key lookup), so a ban made by another process, such as
    /// `coordinator workers ban`, holds at the next request.
    pub async fn is_banned(&self, worker: WorkerId) -> Result<bool> {
        let banned: Option<bool> =
            sqlx::query_scalar("SELECT banned_ms IS NOT NULL FROM workers WHERE id = ?")
                .bind(worker.to_string())
                .fetch_optional(&self.read)
                .await?;
        Ok(banned.unwrap_or(false))
    }
}
