//! Workers and volunteer accounts: registration, authentication, their
//! public records, and the one write per transaction of what settling
//! changed in their counters, standing and credit.

use super::sql::{
    IN_LIST_MAX, StandingColumns, VALUES_MAX, count, push_list, push_rows, worker_id,
};
use super::{Result, Store};
use crate::credit;
use crate::trust::{DAY_MS, Standing, Trust, WorkerDelta};
use protocol::{AccountStatus, Platform, WorkerId, WorkerStatus};
use sqlx::{Sqlite, Transaction};
use std::collections::HashMap;

/// A worker found by its token.
#[derive(Clone, Debug)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub arch: String,
    /// Its volunteer account (its own id if it has none).
    pub account: String,
    /// The network prefix of the request, when replicas of a unit must come
    /// from distinct networks ([`Trust::distinct_networks`]).
    pub net: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    name: String,
    arch: String,
    os: String,
    created_ms: i64,
    last_seen_ms: i64,
    #[sqlx(flatten)]
    standing: StandingColumns,
    error_count: i64,
    timeout_count: i64,
    credit: i64,
    recent_credit: f64,
    account_id: Option<String>,
    paused: bool,
    banned: bool,
    running: i64,
}

impl Store {
    /// The account whose key hashes to `key_hash`.
    pub async fn account_by_key(&self, key_hash: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM accounts WHERE key_hash = ?")
                .bind(key_hash)
                .fetch_optional(&self.write)
                .await?,
        )
    }

    pub async fn create_account(
        &self,
        id: &str,
        name: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO accounts (id, name, key_hash, created_ms) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one column each, all required
    pub async fn register_worker(
        &self,
        id: WorkerId,
        name: &str,
        token_hash: &str,
        platform: &Platform,
        slots: u32,
        account: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, name, token_hash, arch, os, engine, slots, created_ms,
                                  last_seen_ms, account_id, quota)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(token_hash)
        .bind(&platform.arch)
        .bind(&platform.os)
        .bind(&platform.engine)
        .bind(slots as i64)
        .bind(now)
        .bind(now)
        .bind(account)
        .bind(self.policy.trust.full_quota(i64::from(slots)))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn worker_by_token(&self, token_hash: &str) -> Result<Option<WorkerRow>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT id, arch, COALESCE(account_id, id) AS account FROM workers WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        row.map(|(id, arch, account)| {
            Ok(WorkerRow {
                id: worker_id(&id)?,
                arch,
                account,
                net: None,
            })
        })
        .transpose()
    }

    /// Workers, most recently seen first.
    pub async fn workers(&self, limit: u32, now: i64) -> Result<Vec<WorkerStatus>> {
        let rows: Vec<StatusRow> = sqlx::query_as(
            "SELECT id, name, arch, os, slots, created_ms, last_seen_ms, valid_count, invalid_count,
                    error_count, timeout_count, consecutive_valid, credit, recent_credit,
                    account_id, quota, quota_day, leased_today, paused, caught,
                    banned_ms IS NOT NULL AS banned,
                    (SELECT COUNT(*) FROM replicas r WHERE r.worker_id = w.id AND r.state = 'in_progress') AS running
             FROM workers w ORDER BY last_seen_ms DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let trust = &self.policy.trust;
        let today = now.div_euclid(DAY_MS);
        rows.into_iter()
            .map(|r| {
                let standing = r.standing.standing();
                Ok(WorkerStatus {
                    id: worker_id(&r.id)?,
                    name: r.name,
                    arch: r.arch,
                    os: r.os,
                    slots: count(standing.slots) as u32,
                    created_ms: r.created_ms,
                    last_seen_ms: r.last_seen_ms,
                    valid: count(standing.valid),
                    invalid: count(standing.invalid),
                    errors: count(r.error_count),
                    timeouts: count(r.timeout_count),
                    consecutive_valid: count(standing.consecutive_valid),
                    trusted: trust.trusted(&standing),
                    credit_fuel: count(r.credit),
                    credit: credit::credits(r.credit.max(0)),
                    recent_credit: credit::recent_per_day(r.recent_credit, now),
                    running: count(r.running),
                    account_id: r.account_id,
                    quota_left: count(standing.quota).saturating_sub(count(standing.used(today))),
                    paused: r.paused,
                    banned: r.banned,
                })
            })
            .collect()
    }

    /// Accounts by total credit, highest first.
    pub async fn accounts(&self, limit: u32, now: i64) -> Result<Vec<AccountStatus>> {
        let rows: Vec<(String, String, i64, f64, i64)> = sqlx::query_as(
            "SELECT a.id, a.name, a.credit, a.recent_credit,
                    (SELECT COUNT(*) FROM workers w WHERE w.account_id = a.id) AS workers
             FROM accounts a ORDER BY a.credit DESC, a.created_ms LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, credit, recent, workers)| AccountStatus {
                id,
                name,
                workers: count(workers),
                credit_fuel: count(credit),
                credit: credit::credits(credit.max(0)),
                recent_credit: credit::recent_per_day(recent, now),
            })
            .collect())
    }
}

/// A worker's stored standing and account, read before settling rewrites
/// them.
#[derive(sqlx::FromRow)]
struct StandingRow {
    id: String,
    account_id: Option<String>,
    #[sqlx(flatten)]
    standing: StandingColumns,
}

/// Writes what one transaction changed for each worker: counters and
/// credit added, streak and quota as the trust policy decides from the
/// stored standing (on the day of `now`), and the credit of their
/// accounts.
pub(super) async fn write_deltas(
    tx: &mut Transaction<'_, Sqlite>,
    trust: &Trust,
    deltas: HashMap<String, WorkerDelta>,
    now: i64,
) -> Result<()> {
    let today = now.div_euclid(DAY_MS);
    let mut deltas: Vec<(String, WorkerDelta)> = deltas.into_iter().collect();
    // One order for every batch: rows are written in key order.
    deltas.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Per account: credit and recent-credit increment.
    let mut accounts: Vec<(String, (i64, f64))> = Vec::new();
    for chunk in deltas.chunks(IN_LIST_MAX.min(VALUES_MAX)) {
        let standings = read_standings(tx, chunk).await?;
        let mut writes = Vec::with_capacity(chunk.len());
        for (id, d) in chunk {
            let Some(row) = standings.get(id) else {
                continue;
            };
            let before = row.standing.standing();
            writes.push((id.as_str(), d, before.after(d, trust, today)));
            if let Some(account) = &row.account_id
                && d.credit != 0
            {
                match accounts.iter_mut().find(|(a, _)| a == account) {
                    Some((_, (credit, recent))) => {
                        *credit += d.credit;
                        *recent += d.recent;
                    }
                    None => accounts.push((account.clone(), (d.credit, d.recent))),
                }
            }
        }
        write_workers(tx, &writes).await?;
    }
    for chunk in accounts.chunks(VALUES_MAX) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("WITH v(id, credit, recent) AS (");
        push_rows(&mut q, 3, chunk, |mut b, (id, (credit, recent))| {
            b.push_bind(id.clone())
                .push_bind(*credit)
                .push_bind(*recent);
        });
        q.push(
            ") UPDATE accounts SET credit = accounts.credit + v.credit,
                      recent_credit = accounts.recent_credit + v.recent
               FROM v WHERE accounts.id = v.id",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The stored standing and account of each worker of `chunk`.
async fn read_standings(
    tx: &mut Transaction<'_, Sqlite>,
    chunk: &[(String, WorkerDelta)],
) -> Result<HashMap<String, StandingRow>> {
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "SELECT id, account_id, slots, valid_count, consecutive_valid, invalid_count, caught,
                quota, quota_day, leased_today
         FROM workers WHERE id IN (",
    );
    push_list(&mut q, chunk.iter().map(|(id, _)| id.clone()));
    q.push(")");
    let rows: Vec<StandingRow> = q.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// Adds the counters and credit, sets streak and quota, and raises the
/// proven speed to the fastest just proven, of each (worker, change,
/// standing after) in one statement.
async fn write_workers(
    tx: &mut Transaction<'_, Sqlite>,
    writes: &[(&str, &WorkerDelta, Standing)],
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut q = sqlx::QueryBuilder::<Sqlite>::new(
        "WITH v(id, valid, invalid, errors, timeouts, credit, recent, streak, quota, fastest, caught) AS (",
    );
    push_rows(&mut q, 11, writes, |mut b, (id, d, after)| {
        b.push_bind(id.to_string())
            .push_bind(d.valid)
            .push_bind(d.invalid)
            .push_bind(d.errors)
            .push_bind(d.timeouts)
            .push_bind(d.credit)
            .push_bind(d.recent)
            .push_bind(after.consecutive_valid)
            .push_bind(after.quota)
            .push_bind(d.fastest)
            .push_bind(after.caught);
    });
    q.push(
        ") UPDATE workers SET valid_count = valid_count + v.valid,
                  invalid_count = invalid_count + v.invalid,
                  error_count = error_count + v.errors,
                  timeout_count = timeout_count + v.timeouts,
                  credit = workers.credit + v.credit,
                  recent_credit = workers.recent_credit + v.recent,
                  consecutive_valid = v.streak,
                  quota = v.quota,
                  caught = v.caught,
                  proven_fuel_per_s = NULLIF(MAX(COALESCE(proven_fuel_per_s, 0), v.fastest), 0)
           FROM v WHERE workers.id = v.id",
    );
    q.build().execute(&mut **tx).await?;
    Ok(())
}
