//! Operator bans on the store: what a ban discards and reopens, and the
//! schema guards that keep a banned worker from leasing or returning a
//! result whoever writes.

use crate::fixture::{T0, open, trust};
use coordinator::store::{BanTarget, Error};
use protocol::Validation;
use sqlx::{Connection, SqliteConnection};

#[tokio::test]
async fn a_ban_discards_pending_results_reopens_what_the_worker_vouched_for_and_stops_its_leases() {
    let f = open(trust()).await;
    let job = f.job(3, Validation::quorum(2, 4)).await;
    let a = f.worker("a", "alice", 2).await;
    let b = f.worker("b", "bob", 2).await;
    let la = f.lease(&a, 3, T0).await;
    let lb = f.lease(&b, 3, T0).await;
    assert_eq!((la.len(), lb.len()), (3, 3));
    // Unit 0: accepted on a's and b's word; unit 1: a's result waits for a
    // quorum; unit 2: a's lease is still running.
    let by_unit = |ls: &[coordinator::store::LeaseRow], u: usize| {
        ls.iter()
            .find(|l| l.unit_id == la[u].unit_id)
            .unwrap()
            .clone()
    };
    f.honest(&a, &la[0], T0 + 1).await;
    f.honest(&b, &by_unit(&lb, 0), T0 + 1).await;
    f.honest(&a, &la[1], T0 + 1).await;
    let before = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(before.units_accepted, 1);

    let report = f
        .store
        .ban(&BanTarget::Worker(a.id), T0 + 2)
        .await
        .unwrap()
        .expect("a exists");
    assert_eq!(report.banned, vec![a.id]);
    assert_eq!(report.discarded, 2, "a's returned and a's running replica");
    assert_eq!(
        report.reopened, 1,
        "unit 0, accepted without a trusted confirmer"
    );
    let after = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(after.units_accepted, 0);
    assert!(f.status_of(&a).await.banned);
    assert!(!f.status_of(&b).await.banned);
    assert_eq!(
        f.credit_of(&a).await,
        0,
        "what a was credited is taken back"
    );
    f.aggregates_agree(job).await;

    // Past the edge too: the schema refuses a banned worker new replicas
    // (of another job: it has had one of each unit of this one).
    f.job(1, Validation::quorum(2, 3)).await;
    match f.store.lease(&a, 3, T0 + 3).await {
        Err(Error::Invariant(m)) => assert!(m.contains("banned"), "{m}"),
        other => panic!("a banned worker leased: {other:?}"),
    }
    // Banning again changes nothing.
    let again = f
        .store
        .ban(&BanTarget::Worker(a.id), T0 + 4)
        .await
        .unwrap()
        .unwrap();
    assert!(again.banned.is_empty());

    // The others finish the job without a.
    let c = f.worker("c", "carol", 2).await;
    f.honest(&b, &by_unit(&lb, 1), T0 + 5).await;
    f.honest(&b, &by_unit(&lb, 2), T0 + 5).await;
    for lease in f.lease(&c, 4, T0 + 6).await {
        if lease.job_id == job {
            f.honest(&c, &lease, T0 + 7).await;
        }
    }
    let done = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(done.units_accepted, 3, "{done:?}");
    f.aggregates_agree(job).await;

    // Unbanned, a takes work again.
    assert_eq!(
        f.store.unban(&BanTarget::Worker(a.id)).await.unwrap(),
        Some(1)
    );
    assert_eq!(f.lease(&a, 1, T0 + 8).await.len(), 1);
}

#[tokio::test]
async fn an_account_ban_covers_its_workers_and_those_that_join_it_later() {
    let f = open(trust()).await;
    f.job(4, Validation::quorum(1, 2)).await;
    let a1 = f.worker("a1", "alice", 1).await;
    let report = f
        .store
        .ban(&BanTarget::Account("alice".into()), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.banned, vec![a1.id]);
    let a2 = f.worker("a2", "alice", 1).await;
    assert!(f.status_of(&a2).await.banned, "joined a banned account");
    assert!(f.store.is_banned(a2.id).await.unwrap());
    assert!(matches!(
        f.store.lease(&a2, 1, T0).await,
        Err(Error::Invariant(_))
    ));
    assert_eq!(
        f.store
            .ban(&BanTarget::Account("nobody".into()), T0)
            .await
            .unwrap()
            .map(|r| r.banned),
        None
    );
    assert_eq!(
        f.store
            .unban(&BanTarget::Account("alice".into()))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(f.lease(&a2, 1, T0).await.len(), 1);
}

/// More workers in an account than SQLite lets one statement bind (32,766
/// parameters): the ban names them a bounded list at a time, in its own
/// statements and in the backtracking it starts.
#[tokio::test]
async fn an_account_of_more_workers_than_one_statement_can_name_is_banned_whole() {
    const MORE: i64 = 33_000;
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(2, 4)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    // The unit is accepted on a's and b's word (b is not trusted).
    for w in [&a, &b] {
        let lease = f.lease(w, 1, T0).await.remove(0);
        f.honest(w, &lease, T0).await;
    }
    assert_eq!(
        f.store
            .job_status(job)
            .await
            .unwrap()
            .unwrap()
            .units_accepted,
        1
    );
    let url = format!("sqlite://{}", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO workers (id, name, token_hash, arch, os, engine, slots, created_ms,
                              last_seen_ms, account_id, quota)
         SELECT printf('00000000-0000-4000-8000-%012d', i), 'many', 'token-many-' || i,
                'x86_64', 'linux', 'test-engine', 1, ?, ?, ?, 8
         FROM n",
    )
    .bind(MORE)
    .bind(T0)
    .bind(T0)
    .bind(&a.account)
    .execute(&mut db)
    .await
    .unwrap();
    let report = f
        .store
        .ban(&BanTarget::Account(a.account.clone()), T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.banned.len() as i64, MORE + 1);
    assert!(report.banned.contains(&a.id));
    assert_eq!(report.reopened, 1, "a vouched for the unit");
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.units_accepted, 0, "{s:?}");
    let banned: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM workers WHERE account_id = ? AND banned_ms IS NOT NULL",
    )
    .bind(&a.account)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(banned, MORE + 1);
    f.aggregates_agree(job).await;
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[tokio::test]
async fn the_schema_refuses_a_banned_workers_replica_and_result_whoever_writes() {
    let f = open(trust()).await;
    f.job(2, Validation::quorum(1, 2)).await;
    let w = f.worker("w", "alice", 1).await;
    let lease = f.lease(&w, 1, T0).await.remove(0);
    let url = format!("sqlite://{}", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    // A ban written straight into the row, with nothing discarded: the
    // guards alone must hold.
    sqlx::query("UPDATE workers SET banned_ms = 1 WHERE id = ?")
        .bind(w.id.to_string())
        .execute(&mut db)
        .await
        .unwrap();
    let e = sqlx::query("UPDATE replicas SET state = 'returned' WHERE id = ?")
        .bind(lease.replica_id.0)
        .execute(&mut db)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("a banned worker returns no results"),
        "{e}"
    );
    let e = sqlx::query(
        "INSERT INTO replicas (unit_id, worker_id, account_id, state, leased_ms, deadline_ms)
         SELECT id, ?, 'alice', 'in_progress', 0, 0 FROM units WHERE id <> ? LIMIT 1",
    )
    .bind(w.id.to_string())
    .bind(lease.unit_id.0)
    .execute(&mut db)
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("a banned worker takes no replicas"),
        "{e}"
    );
}
