//! The operator's commands on the coordinator's own database, beside a
//! running coordinator or without one: `coordinator workers list`, `ban`
//! and `unban`. Each returns the text it prints, so tests call the same
//! functions the command does.

use crate::store::{BanTarget, Store};
use crate::{Config, trust::Trust};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::Path;

/// The database file in a coordinator's data directory.
pub const DATABASE_FILE: &str = "coordinator.sqlite";

/// Opens the database of the coordinator whose data directory is
/// `data_dir`, with the trust policy it serves with (backtracking after a
/// ban applies it); it must exist already.
pub async fn open(data_dir: &Path, trust: Trust) -> anyhow::Result<Store> {
    let db = data_dir.join(DATABASE_FILE);
    anyhow::ensure!(
        db.exists(),
        "no coordinator database at {} (give the --data-dir that `coordinator serve` uses)",
        db.display()
    );
    Store::open_sqlite(&db, trust)
        .await
        .with_context(|| format!("cannot open database {}", db.display()))
}

/// The trust policy of `config` (for [`open`]).
pub fn trust_of(config: &Config) -> Trust {
    config.trust.clone()
}

/// `workers list`: one line per worker, most recently seen first.
pub async fn list(store: &Store, limit: u32, now: i64) -> anyhow::Result<String> {
    let workers = store.workers(limit, now).await?;
    let mut out = String::new();
    writeln!(
        out,
        "{:36}  {:36}  {:>5}  {:>7}  {:>7}  {:7}  {:>13}  banned",
        "worker", "account", "slots", "valid", "invalid", "trust", "last seen (s)"
    )?;
    for w in workers {
        writeln!(
            out,
            "{:36}  {:36}  {:>5}  {:>7}  {:>7}  {:7}  {:>13}  {}",
            w.id.to_string(),
            w.account_id.as_deref().unwrap_or("-"),
            w.slots,
            w.valid,
            w.invalid,
            if w.trusted { "trusted" } else { "-" },
            (now - w.last_seen_ms).max(0) / 1000,
            if w.banned { "yes" } else { "no" }
        )?;
    }
    Ok(out)
}

/// `workers ban`: bans `target` at `now` and says what it did.
pub async fn ban(store: &Store, target: &BanTarget, now: i64) -> anyhow::Result<String> {
    let report = store
        .ban(target, now)
        .await?
        .with_context(|| format!("there is no {target}"))?;
    if report.banned.is_empty() {
        return Ok(format!("{target} was banned already: nothing changed\n"));
    }
    tracing::warn!(target = %target, workers = report.banned.len(), discarded = report.discarded, reopened = report.reopened, "banned");
    Ok(format!(
        "banned {} worker(s) of {target}: {} pending replica(s) discarded, {} accepted unit(s) reopened to be verified again\n",
        report.banned.len(),
        report.discarded,
        report.reopened
    ))
}

/// `workers unban`: lifts the ban of `target`.
pub async fn unban(store: &Store, target: &BanTarget) -> anyhow::Result<String> {
    let lifted = store
        .unban(target)
        .await?
        .with_context(|| format!("there is no {target}"))?;
    Ok(format!(
        "lifted the ban of {lifted} worker(s) of {target}\n"
    ))
}
