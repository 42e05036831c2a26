//! Submitters on the store: keys kept as their hash, names unique,
//! revocation and changes, the `api-key` file's admin made sure of at
//! start (old jobs given to it), and the limits per submitter refusing a
//! submission or a split's batch with nothing stored.

use crate::fixture::{Fixture, T0, open, trust};
use coordinator::allowance::{Allowance, Exceeded};
use coordinator::store::{Duty, Error, NewJob, NewSubmitter, Revocation, SubmitterChange};
use coordinator::submitter::SubmitterName;
use protocol::{BlobHash, JobId, JobState, Limits, Validation};
use sqlx::{Connection, SqliteConnection};

fn name(s: &str) -> SubmitterName {
    s.parse().unwrap()
}

async fn submitter(f: &Fixture, who: &str, max_units: Option<u64>, max_bytes: Option<u64>) -> i64 {
    f.submitter(who, 1, max_units, max_bytes).await
}

fn new_job(module: BlobHash, input: Option<BlobHash>, submitter: Option<i64>) -> NewJob {
    NewJob {
        id: JobId::random(),
        name: "limited".into(),
        module,
        input,
        limits: Limits {
            fuel: 1_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        lease_secs: 60,
        validation: Validation::quorum(1, 2),
        submitter,
        priority: 0,
    }
}

fn units(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| i.to_string().into_bytes()).collect()
}

async fn jobs_stored(f: &Fixture) -> (i64, i64) {
    let url = format!("sqlite://{}", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_as("SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM units)")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_name_is_taken_once_and_a_second_create_changes_nothing() {
    let f = open(trust()).await;
    submitter(&f, "ann", None, None).await;
    let again = f
        .store
        .create_submitter(
            &NewSubmitter {
                name: &name("ann"),
                key_hash: "another-hash",
                admin: true,
                share: 5,
                max_units: None,
                max_stored_bytes: None,
            },
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(again, None);
    let ann = f
        .store
        .submitter_by_name(&name("ann"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ann.admin, ann.share, ann.created_ms), (false, 1, T0));
    assert!(
        f.store
            .submitter_by_key("another-hash")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.store
            .submitter_by_key("hash-of-ann")
            .await
            .unwrap()
            .unwrap()
            .name,
        "ann"
    );
}

#[tokio::test]
async fn revoking_marks_the_key_once_and_the_file_admin_is_never_revoked() {
    let f = open(trust()).await;
    submitter(&f, "ann", None, None).await;
    assert_eq!(
        f.store
            .revoke_submitter(&name("ann"), T0 + 5)
            .await
            .unwrap(),
        Revocation::Revoked
    );
    assert_eq!(
        f.store
            .revoke_submitter(&name("ann"), T0 + 9)
            .await
            .unwrap(),
        Revocation::Already(T0 + 5)
    );
    let ann = f
        .store
        .submitter_by_key("hash-of-ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.revoked_ms, Some(T0 + 5));
    assert_eq!(
        f.store.revoke_submitter(&name("nobody"), T0).await.unwrap(),
        Revocation::Unknown
    );

    f.store.ensure_admin("admin-hash", T0).await.unwrap();
    assert_eq!(
        f.store.revoke_submitter(&name("admin"), T0).await.unwrap(),
        Revocation::FileAdmin
    );
    // Whoever writes: the schema refuses it too (migration 0019).
    let url = format!("sqlite://{}", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE submitters SET revoked_ms = 1 WHERE name = 'admin'",
        "UPDATE submitters SET admin = FALSE WHERE name = 'admin'",
    ] {
        let e = sqlx::query(sql).execute(&mut db).await.unwrap_err();
        assert!(e.to_string().contains("invariant:"), "{e}");
    }
    let admin = f
        .store
        .submitter_by_key("admin-hash")
        .await
        .unwrap()
        .unwrap();
    assert!(admin.admin && admin.revoked_ms.is_none());
}

#[tokio::test]
async fn set_changes_what_it_is_given_and_default_gives_a_limit_back() {
    let f = open(trust()).await;
    submitter(&f, "ann", Some(7), Some(9)).await;
    let change = SubmitterChange {
        share: Some(3),
        max_units: Some(Some(70)),
        max_stored_bytes: None,
    };
    let ann = f
        .store
        .set_submitter(&name("ann"), &change)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ann.share, ann.max_units, ann.max_stored_bytes),
        (3, Some(70), Some(9))
    );
    let back = SubmitterChange {
        max_stored_bytes: Some(None),
        ..SubmitterChange::default()
    };
    let ann = f
        .store
        .set_submitter(&name("ann"), &back)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ann.share, ann.max_units, ann.max_stored_bytes),
        (3, Some(70), None)
    );
    assert!(
        f.store
            .set_submitter(&name("bob"), &change)
            .await
            .unwrap()
            .is_none()
    );
    // A share out of range is the schema's to refuse, with nothing changed.
    let bad = SubmitterChange {
        share: Some(0),
        ..SubmitterChange::default()
    };
    assert!(f.store.set_submitter(&name("ann"), &bad).await.is_err());
    assert_eq!(
        f.store
            .submitter_by_name(&name("ann"))
            .await
            .unwrap()
            .unwrap()
            .share,
        3
    );
}

#[tokio::test]
async fn the_file_admin_is_created_once_follows_the_file_and_takes_the_jobs_nobody_owns() {
    let f = open(trust()).await;
    let old = f.job(3, Validation::quorum(1, 2)).await;
    let first = f.store.ensure_admin("key-one", T0).await.unwrap();
    assert!(first.created && !first.key_changed);
    assert_eq!(first.adopted, 1);
    let s = f.store.job_status(old).await.unwrap().unwrap();
    assert_eq!(s.submitter.as_deref(), Some("admin"));

    let again = f.store.ensure_admin("key-one", T0 + 1).await.unwrap();
    assert_eq!(
        (again.created, again.key_changed, again.adopted),
        (false, false, 0)
    );
    let changed = f.store.ensure_admin("key-two", T0 + 2).await.unwrap();
    assert!(!changed.created && changed.key_changed);
    assert!(f.store.submitter_by_key("key-one").await.unwrap().is_none());
    let admin = f.store.submitter_by_key("key-two").await.unwrap().unwrap();
    assert_eq!((admin.name.as_str(), admin.admin), ("admin", true));
    assert_eq!(f.store.submitters().await.unwrap().len(), 1);

    // A file holding another submitter's key is refused, nothing changed.
    submitter(&f, "ann", None, None).await;
    let e = f
        .store
        .ensure_admin("hash-of-ann", T0 + 3)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("also the key of submitter ann"),
        "{e}"
    );
    assert!(f.store.submitter_by_key("key-two").await.unwrap().is_some());
}

#[tokio::test]
async fn a_submission_past_max_units_is_refused_naming_it_and_stores_nothing() {
    let f = open(trust()).await;
    let ann = submitter(&f, "ann", Some(10), None).await;
    let module = f.store.put_blob(b"\0asm limited", T0).await.unwrap();
    let defaults = Allowance::default();
    f.store
        .submit_job(
            &new_job(module, None, Some(ann)),
            Some(&units(6)),
            &defaults,
            T0,
        )
        .await
        .unwrap();
    let before = jobs_stored(&f).await;
    let e = f
        .store
        .submit_job(
            &new_job(module, None, Some(ann)),
            Some(&units(5)),
            &defaults,
            T0,
        )
        .await
        .unwrap_err();
    match &e {
        Error::OverLimit(Exceeded::Units {
            in_flight,
            adding,
            max,
            ..
        }) => assert_eq!((*in_flight, *adding, *max), (6, 5, 10)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("max_units"), "{e}");
    assert_eq!(jobs_stored(&f).await, before, "nothing stored");
    // Up to the limit fits; another submitter's room is its own.
    f.store
        .submit_job(
            &new_job(module, None, Some(ann)),
            Some(&units(4)),
            &defaults,
            T0,
        )
        .await
        .unwrap();
    let bob = submitter(&f, "bob", Some(10), None).await;
    f.store
        .submit_job(
            &new_job(module, None, Some(bob)),
            Some(&units(10)),
            &defaults,
            T0,
        )
        .await
        .unwrap();
    let usage = f.store.submitter_usage(ann).await.unwrap();
    assert_eq!(usage.units, 10);
    let mine = f.store.job_statuses_of(ann, 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|s| s.submitter.as_deref() == Some("ann")));
    // An ended job no longer counts.
    let six = mine.iter().find(|s| s.units_total == 6).unwrap();
    f.store.cancel_job(six.id, T0 + 1).await.unwrap();
    assert_eq!(f.store.submitter_usage(ann).await.unwrap().units, 4);
}

#[tokio::test]
async fn a_submission_past_max_stored_bytes_is_refused_naming_it_and_stores_nothing() {
    let f = open(trust()).await;
    let ann = submitter(&f, "ann", None, Some(100)).await;
    let module = f.store.put_blob(&[7; 40], T0).await.unwrap();
    let input = f.store.put_blob(&[8; 50], T0).await.unwrap();
    let defaults = Allowance::default();
    // 40 + 50 bytes: fits.
    f.store
        .submit_job(
            &new_job(module, Some(input), Some(ann)),
            None,
            &defaults,
            T0,
        )
        .await
        .unwrap();
    assert_eq!(f.store.submitter_usage(ann).await.unwrap().stored_bytes, 90);
    let before = jobs_stored(&f).await;
    // The module again (it counts per job) and 2 bytes of listed units.
    let e = f
        .store
        .submit_job(
            &new_job(module, None, Some(ann)),
            Some(&units(2)),
            &defaults,
            T0,
        )
        .await
        .unwrap_err();
    match &e {
        Error::OverLimit(Exceeded::StoredBytes {
            stored,
            adding,
            max,
            ..
        }) => assert_eq!((*stored, *adding, *max), (90, 42, 100)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("max_stored_bytes"), "{e}");
    assert_eq!(jobs_stored(&f).await, before, "nothing stored");
    // The coordinator's default applies to a submitter with no limit.
    let bob = submitter(&f, "bob", None, None).await;
    let tight = Allowance {
        max_units: 100,
        max_stored_bytes: 89,
    };
    let e = f
        .store
        .submit_job(&new_job(module, Some(input), Some(bob)), None, &tight, T0)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("submitter bob"), "{e}");
}

#[tokio::test]
async fn a_split_past_max_units_is_refused_at_the_batch_that_passes_it() {
    let f = open(trust()).await;
    let ann = submitter(&f, "ann", Some(5), None).await;
    let module = f.store.put_blob(b"\0asm splitter", T0).await.unwrap();
    let input = f.store.put_blob(b"split me", T0).await.unwrap();
    let defaults = Allowance::default();
    let job = new_job(module, Some(input), Some(ann));
    f.store.submit_job(&job, None, &defaults, T0).await.unwrap();
    let claim = f
        .store
        .claim(job.id, Duty::Split, "node", T0)
        .await
        .unwrap()
        .unwrap();
    f.store
        .add_units(&claim, 0, &units(3), 1, &defaults, T0)
        .await
        .unwrap();
    // While it splits, the job counts the units written so far.
    let s = f.store.job_status(job.id).await.unwrap().unwrap();
    assert_eq!((s.state, s.units_total), (JobState::Splitting, 3));
    assert_eq!(f.store.submitter_usage(ann).await.unwrap().units, 3);
    let before = jobs_stored(&f).await;
    let e = f
        .store
        .add_units(&claim, 3, &units(3), 1, &defaults, T0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OverLimit(Exceeded::Units {
                in_flight: 3,
                adding: 3,
                max: 5,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(jobs_stored(&f).await, before, "nothing added");
    // With the room already taken, a new split job is refused too.
    f.store
        .add_units(&claim, 3, &units(2), 1, &defaults, T0)
        .await
        .unwrap();
    let e = f
        .store
        .submit_job(
            &new_job(module, Some(input), Some(ann)),
            None,
            &defaults,
            T0,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_units"), "{e}");
    // A split started over counts from nothing again.
    f.store.discard_units(&claim, T0).await.unwrap();
    assert_eq!(f.store.submitter_usage(ann).await.unwrap().units, 0);
}
