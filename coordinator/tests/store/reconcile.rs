//! Leases reconciled: a work request names every replica its worker holds,
//! and the worker's other leases (lost in a crash before their answer
//! reached it, or held by its process before a restart) are given back at
//! once, for other workers to take, instead of waiting out their deadline.

use crate::fixture::{T0, open, trust};
use coordinator::store::LeaseRequest;
use protocol::{JobState, Validation};

#[tokio::test]
async fn leases_a_worker_does_not_name_go_to_other_workers_at_once() {
    let f = open(trust()).await;
    let job = f.job(3, Validation::quorum(1, 2)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 2).await;
    // Two leases whose answer a never saw (the coordinator crashed before
    // sending it, or a's process restarted).
    let lost = f.lease(&a, 2, T0).await;
    assert_eq!(lost.len(), 2);
    // b asks and gets the third unit only: the other two are held.
    let third = f.lease(&b, 2, T0).await;
    assert_eq!(third.len(), 1);
    // a asks again, naming what it holds: nothing. Its two leases are
    // given back (not timed out) and a gets no unit it gave back.
    let request = LeaseRequest {
        worker: a.clone(),
        max: 2,
        now: T0 + 1,
        held: Some(Vec::new()),
    };
    let answer = f.store.lease_request(request).await.unwrap();
    assert_eq!((answer.leases.len(), answer.released), (0, 2));
    let status = f.status_of(&a).await;
    assert_eq!((status.timeouts, status.running), (0, 0));
    // b, naming the lease it holds, keeps it and gets the two units.
    let request = LeaseRequest {
        worker: b.clone(),
        max: 2,
        now: T0 + 2,
        held: Some(vec![third[0].replica_id]),
    };
    let answer = f.store.lease_request(request).await.unwrap();
    assert_eq!(answer.released, 0, "b holds the lease it named");
    let given = answer.leases;
    let mut units: Vec<_> = given.iter().map(|l| l.unit_id).collect();
    units.sort();
    let mut lost_units: Vec<_> = lost.iter().map(|l| l.unit_id).collect();
    lost_units.sort();
    assert_eq!(units, lost_units);
    for l in third.iter().chain(&given) {
        f.honest(&b, l, T0 + 3).await;
    }
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Reducing, "{s:?}");
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn naming_another_workers_replica_changes_nothing_for_either() {
    let f = open(trust()).await;
    f.job(2, Validation::quorum(1, 2)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    let mine = f.lease(&a, 1, T0).await.remove(0);
    let theirs = f.lease(&b, 1, T0).await.remove(0);
    // a names b's replica as its own, and not its own: its own is given
    // back, b's is untouched (a holds no claim on it).
    let request = LeaseRequest {
        worker: a.clone(),
        max: 0,
        now: T0 + 1,
        held: Some(vec![theirs.replica_id]),
    };
    assert_eq!(f.store.lease_request(request).await.unwrap().released, 1);
    assert_eq!(f.status_of(&a).await.running, 0);
    assert_eq!(f.status_of(&b).await.running, 1);
    assert_eq!(
        f.honest(&b, &theirs, T0 + 2).await,
        protocol::UploadStatus::Accepted
    );
    let refused = f.upload(&a, &mine, &mine.input, 100, T0 + 2).await;
    assert!(refused.is_err(), "a lease given back takes no result");
}
