//! Each schema invariant, tried directly against the database the store
//! keeps, and seen refused with nothing changed: the guarantees hold
//! whoever writes (a second coordinator, a bug), not only because this
//! process's code is careful.

use crate::fixture::{Fixture, T0, open, trust};
use coordinator::store::{Duty, Error, Store};
use protocol::Validation;
use sqlx::{Connection, SqliteConnection};
use std::path::Path;

async fn raw(f: &Fixture) -> SqliteConnection {
    let url = format!("sqlite://{}", f.store.path().display());
    SqliteConnection::connect(&url).await.unwrap()
}

/// Runs `sql` and asserts the database refused it.
async fn refused(conn: &mut SqliteConnection, sql: &str) -> String {
    match sqlx::query(sql).execute(&mut *conn).await {
        Ok(done) => panic!("accepted ({} rows): {sql}", done.rows_affected()),
        Err(e) => e.to_string(),
    }
}

async fn scalar(conn: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap()
}

#[tokio::test]
async fn a_second_replica_of_a_unit_for_one_account_or_worker_is_refused() {
    let f = open(trust()).await;
    f.job(1, Validation::quorum(3, 5)).await;
    let a1 = f.worker("a1", "alice", 1).await;
    let a2 = f.worker("a2", "alice", 1).await;
    let l = f.lease(&a1, 1, T0).await.remove(0);
    let mut db = raw(&f).await;
    let insert = |worker: &str, account: &str| {
        format!(
            "INSERT INTO replicas (unit_id, worker_id, account_id, state, leased_ms, deadline_ms)
             VALUES ({}, '{worker}', '{account}', 'in_progress', 0, 0)",
            l.unit_id.0
        )
    };
    let e = refused(&mut db, &insert(&a2.id.to_string(), "alice")).await;
    assert!(e.contains("UNIQUE"), "{e}");
    let e = refused(&mut db, &insert(&a1.id.to_string(), "someone-else")).await;
    assert!(e.contains("UNIQUE"), "{e}");
    assert_eq!(
        scalar(&mut db, "SELECT COUNT(*) FROM replicas").await,
        1,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_second_replica_of_a_unit_from_one_network_is_refused() {
    let f = open(trust()).await;
    f.job(1, Validation::quorum(3, 5)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let mut db = raw(&f).await;
    let unit = scalar(&mut db, "SELECT id FROM units").await;
    let insert = |worker: &str, account: &str| {
        format!(
            "INSERT INTO replicas (unit_id, worker_id, account_id, net, state, leased_ms, deadline_ms)
             VALUES ({unit}, '{worker}', '{account}', '192.0.2', 'in_progress', 0, 0)"
        )
    };
    sqlx::query(&insert(&a.id.to_string(), "alice"))
        .execute(&mut db)
        .await
        .unwrap();
    let e = refused(&mut db, &insert(&b.id.to_string(), "bob")).await;
    assert!(e.contains("UNIQUE"), "{e}");
}

#[tokio::test]
async fn a_units_wanted_replicas_never_go_below_zero() {
    let f = open(trust()).await;
    f.job(1, Validation::quorum(2, 4)).await;
    let mut db = raw(&f).await;
    let e = refused(&mut db, "UPDATE units SET needed = needed - 3").await;
    assert!(e.contains("invariant: units.needed"), "{e}");
    // The store tells a guard's refusal from other failures.
    let raw = sqlx::query("UPDATE units SET needed = -1")
        .execute(&mut db)
        .await
        .unwrap_err();
    assert!(matches!(Error::from(raw), Error::Invariant(_)));
    assert_eq!(
        scalar(&mut db, "SELECT needed FROM units").await,
        2,
        "nothing changed"
    );
    let e = refused(
        &mut db,
        "INSERT INTO units (job_id, idx, input, needed) SELECT job_id, 99, x'00', -1 FROM units",
    )
    .await;
    assert!(e.contains("invariant"), "{e}");
}

#[tokio::test]
async fn a_job_never_counts_more_units_settled_than_it_has_nor_fewer_than_none() {
    let f = open(trust()).await;
    f.job(2, Validation::quorum(1, 2)).await;
    let mut db = raw(&f).await;
    for sql in [
        "UPDATE jobs SET units_accepted = 3",
        "UPDATE jobs SET units_accepted = 1, units_failed = 2",
        "UPDATE jobs SET units_failed = -1",
        "UPDATE jobs SET replicas_leased = replicas_leased - 1",
    ] {
        let e = refused(&mut db, sql).await;
        assert!(e.contains("invariant: a job counts"), "{sql}: {e}");
    }
    assert_eq!(
        scalar(
            &mut db,
            "SELECT units_accepted + units_failed + replicas_leased FROM jobs"
        )
        .await,
        0,
        "nothing changed"
    );
    sqlx::query("UPDATE jobs SET units_accepted = 2")
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_never_leases_past_its_daily_quota() {
    let f = open(trust()).await;
    let w = f.worker("w", "alice", 1).await;
    let mut db = raw(&f).await;
    let id = w.id.to_string();
    let set = |what: &str| format!("UPDATE workers SET {what} WHERE id = '{id}'");
    sqlx::query(&set("quota = 5, quota_day = 7, leased_today = 4"))
        .execute(&mut db)
        .await
        .unwrap();
    let e = refused(&mut db, &set("leased_today = leased_today + 2")).await;
    assert!(e.contains("invariant: a worker leases at most"), "{e}");
    let e = refused(&mut db, &set("quota_day = 8, leased_today = 6")).await;
    assert!(
        e.contains("invariant"),
        "a new day starts within the quota too: {e}"
    );
    // A quota halved below today's leases stops more leases; it undoes none.
    sqlx::query(&set("quota = 2"))
        .execute(&mut db)
        .await
        .unwrap();
    refused(&mut db, &set("leased_today = 5")).await;
    assert_eq!(
        scalar(
            &mut db,
            &format!("SELECT leased_today FROM workers WHERE id = '{id}'")
        )
        .await,
        4
    );
}

#[tokio::test]
async fn counters_and_credit_never_go_below_zero() {
    let f = open(trust()).await;
    f.worker("w", "alice", 1).await;
    let mut db = raw(&f).await;
    for sql in [
        "UPDATE workers SET credit = credit - 1",
        "UPDATE workers SET valid_count = -1",
        "UPDATE workers SET timeout_count = -1",
    ] {
        let e = refused(&mut db, sql).await;
        assert!(e.contains("invariant: worker counters"), "{sql}: {e}");
    }
    let e = refused(&mut db, "UPDATE accounts SET credit = -5").await;
    assert!(e.contains("invariant: account credit"), "{e}");
}

#[tokio::test]
async fn a_job_duty_has_one_claim_and_only_known_duties() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(1, 2)).await;
    f.store
        .claim(job, Duty::Reduce, "node-a", T0)
        .await
        .unwrap()
        .unwrap();
    let mut db = raw(&f).await;
    let e = refused(
        &mut db,
        &format!("INSERT INTO claims (job_id, duty, owner, expires_ms) VALUES ('{job}', 'reduce', 'me', 0)"),
    )
    .await;
    assert!(e.contains("UNIQUE"), "{e}");
    let e = refused(
        &mut db,
        &format!("INSERT INTO claims (job_id, duty, owner, expires_ms) VALUES ('{job}', 'audit', 'me', 0)"),
    )
    .await;
    assert!(e.contains("CHECK"), "{e}");
}

#[tokio::test]
async fn a_database_from_before_the_guards_is_repaired_when_it_is_opened() {
    // Backtracking on `compare` jobs used to refund credit never granted,
    // leaving negative credit that the guards would refuse forever.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&all).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().as_ref() < "0010" {
            std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
        }
    }
    let path = dir.path().join("old.sqlite");
    let mut db = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&mut db)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO accounts (id, name, key_hash, created_ms, credit) VALUES ('a', 'a', 'k', 0, -7)",
        "INSERT INTO workers (id, name, token_hash, arch, os, engine, slots, created_ms,
                              last_seen_ms, account_id, credit)
         VALUES ('00000000-0000-0000-0000-000000000001', 'w', 't', 'x86_64', 'linux', 'e', 1,
                 0, 0, 'a', -100)",
    ] {
        sqlx::query(sql).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
    let store = Store::open_sqlite(&path, trust()).await.unwrap();
    let workers = store.workers(10, T0).await.unwrap();
    assert_eq!(workers[0].credit_fuel, 0);
    let mut db = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(
        scalar(&mut db, "SELECT credit FROM workers").await,
        0,
        "repaired"
    );
    assert_eq!(
        scalar(&mut db, "SELECT credit FROM accounts").await,
        0,
        "repaired"
    );
    // And credit flows again.
    sqlx::query("UPDATE workers SET credit = credit + 5")
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invites_last_use_is_spent_once_whoever_races_for_it() {
    let f = open(trust()).await;
    f.store.create_invite("invite-hash", 1, T0).await.unwrap();
    // Two registrations at once, on two clones of the store (as two
    // requests, or two coordinators, would be).
    let other = f.store.clone();
    let (a, b) = tokio::join!(
        f.store.spend_invite("invite-hash"),
        other.spend_invite("invite-hash")
    );
    let spent = [a.unwrap(), b.unwrap()];
    assert_eq!(spent.iter().filter(|s| **s).count(), 1, "{spent:?}");
    assert_eq!(
        f.store.invite_uses_left("invite-hash").await.unwrap(),
        Some(0)
    );
    // Tried directly: the spending update finds nothing to change, and a
    // write that would take the uses below zero is refused.
    let mut db = raw(&f).await;
    let done = sqlx::query(
        "UPDATE invites SET uses_left = uses_left - 1 WHERE hash = 'invite-hash' AND uses_left > 0",
    )
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 0);
    let e = refused(
        &mut db,
        "UPDATE invites SET uses_left = uses_left - 1 WHERE hash = 'invite-hash'",
    )
    .await;
    assert!(e.contains("CHECK"), "{e}");
    assert_eq!(
        scalar(
            &mut db,
            "SELECT uses_left FROM invites WHERE hash = 'invite-hash'"
        )
        .await,
        0
    );
    // An unknown invite spends nothing.
    assert!(!f.store.spend_invite("no-such-hash").await.unwrap());
}

#[tokio::test]
async fn the_fair_share_clock_is_one_row_and_never_goes_back() {
    let f = open(trust()).await;
    let mut db = raw(&f).await;
    sqlx::query("UPDATE fair_clock SET pass = 500")
        .execute(&mut db)
        .await
        .unwrap();
    let e = refused(&mut db, "UPDATE fair_clock SET pass = 499").await;
    assert!(e.contains("invariant: the fair-share clock"), "{e}");
    let e = refused(&mut db, "INSERT INTO fair_clock (id, pass) VALUES (2, 0)").await;
    assert!(e.contains("CHECK"), "{e}");
    let e = refused(&mut db, "DELETE FROM fair_clock").await;
    assert!(e.contains("invariant: the fair-share clock row"), "{e}");
    assert_eq!(scalar(&mut db, "SELECT COUNT(*) FROM fair_clock").await, 1);
}
