//! Workers that lie are outvoted.

use protocol::{JobState, Outcome, ResultUpload};
use wasm_at_home_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dishonest_worker_is_outvoted_and_its_replicas_are_marked_invalid() {
    let c = TestCoordinator::start_with(declared_leases).await;
    let job = c
        .running_job(primes_wasm(), b"1000000 20", quorum(2, 5))
        .await;

    // The liar grabs units first and claims a wrong count for each, with a
    // plausible-looking fuel figure.
    let liar = ManualWorker::register(&c.url, "liar").await;
    let leases = liar.take(10).await;
    assert_eq!(leases.len(), 10);
    for lease in &leases {
        let wrong = ResultUpload {
            outcome: Outcome::Success {
                output: 4242u64.to_le_bytes().to_vec().into(),
            },
            fuel_used: 1_000_000,
        };
        liar.client.upload(lease.replica_id, &wrong).await.unwrap();
    }

    let honest: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(status.units_failed, 0);
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "78498\n");
    for w in honest {
        w.stop().await;
    }

    let liar_record = c.worker(liar.id).await;
    assert_eq!(liar_record.valid, 0);
    assert_eq!(liar_record.invalid, 10);
    assert_eq!(liar_record.credit_fuel, 0);
    for w in c.workers().await.into_iter().filter(|w| w.id != liar.id) {
        assert_eq!(w.invalid, 0, "{w:?}");
        assert!(w.credit_fuel > 0, "{w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_copies_the_output_but_skips_the_work_is_caught_by_fuel() {
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"100000 4", quorum(2, 4))
        .await;
    // The right count for the first range, but claiming no work was done.
    let cheat = ManualWorker::register(&c.url, "cheat").await;
    let lease = cheat.take(1).await.remove(0);
    let honest = TestWorker::start(&c.url, 1);
    let peer = TestWorker::start(&c.url, 1);
    let first_range_count = 2762u64; // primes below 25,000
    let guess = ResultUpload {
        outcome: Outcome::Success {
            output: first_range_count.to_le_bytes().to_vec().into(),
        },
        fuel_used: 1,
    };
    cheat.client.upload(lease.replica_id, &guess).await.unwrap();
    let status = c.wait_for_job(job).await;
    assert_eq!(
        String::from_utf8(c.output(job).await).unwrap(),
        "9592\n",
        "{status:?}"
    );
    assert_eq!(c.worker(cheat.id).await.invalid, 1);
    honest.stop().await;
    peer.stop().await;
}
