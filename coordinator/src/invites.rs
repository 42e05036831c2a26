//! `coordinator invites create`: a fresh invite token, kept in the data
//! directory's database as its sha256 with its number of uses; the token
//! itself is shown once, to the operator.

use anyhow::Context as _;
use std::path::Path;

/// Creates an invite good for `uses` registrations in the database of the
/// coordinator whose data directory is `data_dir`; returns the token.
pub async fn create(data_dir: &Path, uses: u32) -> anyhow::Result<String> {
    anyhow::ensure!(uses >= 1, "--uses must be at least 1");
    let db = data_dir.join("coordinator.sqlite");
    anyhow::ensure!(
        db.exists(),
        "no coordinator database in {} (start `coordinator serve --data-dir {}` once, or pass the right --data-dir)",
        data_dir.display(),
        data_dir.display()
    );
    let store = crate::store::Store::open_sqlite(&db, crate::trust::Trust::default())
        .await
        .with_context(|| format!("cannot open database {}", db.display()))?;
    let token = crate::api::random_secret();
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    store
        .create_invite(&crate::api::hash_secret(&token), uses, now)
        .await?;
    Ok(token)
}
