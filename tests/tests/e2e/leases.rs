//! Leases: one replica per worker per unit, and expiry without sleeping.

use protocol::{JobState, Outcome, ResultUpload};
use wasm_at_home_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_never_gets_two_replicas_of_one_unit() {
    let c = TestCoordinator::start().await;
    c.running_job(primes_wasm(), b"1000 3", quorum(2, 3)).await;
    let w = ManualWorker::register(&c.url, "greedy").await;
    let first = w.take(10).await;
    assert_eq!(first.len(), 3, "one replica of each of the 3 units");
    assert!(
        w.take(10).await.is_empty(),
        "the second replicas must go to someone else"
    );
    let other = ManualWorker::register(&c.url, "other").await;
    let second = other.take(10).await;
    assert_eq!(second.len(), 3);
    let units = |ls: &[protocol::Lease]| {
        let mut u: Vec<_> = ls.iter().map(|l| l.unit_id).collect();
        u.sort();
        u
    };
    assert_eq!(units(&first), units(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_of_a_worker_that_never_answers_are_reissued_after_the_deadline() {
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"100000 4", quorum(1, 3))
        .await;

    let ghost = ManualWorker::register(&c.url, "ghost").await;
    let held = ghost.take(10).await;
    assert_eq!(held.len(), 4, "the ghost holds every unit");
    let bystander = ManualWorker::register(&c.url, "bystander").await;
    assert!(
        bystander.take(10).await.is_empty(),
        "held units are not handed out again before the deadline"
    );

    // The lease is 60 s: move the coordinator's clock past it.
    c.clock.advance(61_000);
    let honest = TestWorker::start(&c.url, 2);
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    honest.stop().await;

    let record = c.worker(ghost.id).await;
    assert_eq!(record.timeouts, 4);
    // A result that arrives after its lease was given away is refused.
    let late = ResultUpload {
        outcome: Outcome::Success {
            output: vec![0; 8].into(),
        },
        fuel_used: 1,
    };
    let err = ghost
        .client
        .upload(held[0].replica_id, &late)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(410), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_holds_at_most_two_leases_per_slot() {
    let c = TestCoordinator::start_with(declared_leases).await;
    c.running_job(primes_wasm(), b"100000 40", quorum(1, 2))
        .await;
    let hoarder = ManualWorker::register(&c.url, "hoarder").await; // 8 slots
    assert_eq!(hoarder.take(64).await.len(), 16);
    assert!(
        hoarder.take(64).await.is_empty(),
        "no more until it returns some"
    );
    let other = ManualWorker::register(&c.url, "other").await;
    assert_eq!(
        other.take(64).await.len(),
        16,
        "the rest of the queue is still there for others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_worker_holds_a_handful_of_leases_until_valid_results_earn_more() {
    // Issue 12, fault 3: one registration declaring many slots leased a
    // whole job and never answered. Leases are earned: a fresh worker gets
    // `initial_leases` (4) whatever it declares, and each valid result
    // earns one more, up to two per declared slot.
    let c = TestCoordinator::start().await;
    c.running_job(primes_wasm(), b"100000 64", quorum(1, 2))
        .await;
    let w = ManualWorker::register(&c.url, "eager").await; // 8 slots
    let mut held = w.take(64).await;
    assert_eq!(held.len(), 4, "a handful, not the 16 its slots declare");
    assert!(w.take(64).await.is_empty(), "no more until it returns some");
    for expected in [8, 16] {
        for lease in held.drain(..) {
            w.compute_and_upload(&lease).await;
        }
        held = w.take(64).await;
        assert_eq!(
            held.len(),
            expected,
            "room doubles with each round of valid results"
        );
    }
    for lease in held.drain(..) {
        w.compute_and_upload(&lease).await;
    }
    assert_eq!(
        w.take(64).await.len(),
        16,
        "never past two per declared slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_is_served_past_the_units_it_already_returned() {
    // Quorum 2 and one fast worker: every unit it returns stays at the head
    // of the queue (it wants a second replica), but never for this worker.
    // After a few rounds the head holds more of its units than the lease
    // batch reads at once, and it must still get fresh units every time.
    let c = TestCoordinator::start_with(declared_leases).await;
    c.running_job(primes_wasm(), b"300000 300", quorum(2, 3))
        .await;
    let fast = ManualWorker::register(&c.url, "fast").await;
    let mut seen = std::collections::HashSet::new();
    for round in 0..12 {
        let leases = fast.take(16).await;
        assert_eq!(
            leases.len(),
            16,
            "round {round}: a full batch of fresh units"
        );
        for lease in &leases {
            assert!(
                seen.insert(lease.unit_id),
                "round {round}: {} again",
                lease.unit_id
            );
            let upload = ResultUpload {
                outcome: Outcome::Success {
                    output: b"x".to_vec().into(),
                },
                fuel_used: 1,
            };
            fast.client.upload(lease.replica_id, &upload).await.unwrap();
        }
    }
    // Another worker gets the oldest units first: the fast worker's.
    let other = ManualWorker::register(&c.url, "other").await;
    let leases = other.take(16).await;
    assert_eq!(leases.len(), 16);
    let mut oldest: Vec<_> = seen.iter().copied().collect();
    oldest.sort();
    let mut got: Vec<_> = leases.iter().map(|l| l.unit_id).collect();
    got.sort();
    assert_eq!(got, oldest[..16]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_lease_goes_to_another_worker_at_once_and_is_no_timeout() {
    let c = TestCoordinator::start().await;
    let job = c.running_job(primes_wasm(), b"1000 2", quorum(1, 2)).await;
    let quitter = ManualWorker::register(&c.url, "quitter").await;
    let leases = quitter.take(16).await;
    assert_eq!(leases.len(), 2);
    quitter.client.release(leases[0].replica_id).await.unwrap();
    // Twice is fine; someone else's is not.
    quitter.client.release(leases[0].replica_id).await.unwrap();
    let other = ManualWorker::register(&c.url, "other").await;
    let err = other
        .client
        .release(leases[1].replica_id)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // The clock stands still, yet the released unit is leased again now.
    let again = other.take(16).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].unit_id, leases[0].unit_id);
    other.compute_and_upload(&again[0]).await;
    quitter.compute_and_upload(&leases[1]).await;
    assert_eq!(c.wait_for_job(job).await.units_accepted, 2);
    assert_eq!(c.worker(quitter.id).await.timeouts, 0);
}
