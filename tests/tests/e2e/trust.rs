//! Trust: accounts against collusion, adaptive replication, spot checks and
//! backtracking.

use protocol::{JobState, Validation};
use wasm_at_home_tests::*;

fn adaptive(quorum: u32, max_replicas: u32) -> Validation {
    Validation {
        adaptive: true,
        ..Validation::quorum(quorum, max_replicas)
    }
}

/// Runs every lease `w` gets honestly; returns how many it ran.
async fn work_honestly(w: &ManualWorker) -> usize {
    let leases = w.take(16).await;
    for lease in &leases {
        w.compute_and_upload(lease).await;
    }
    leases.len()
}

/// Runs leases as a cheat would: right fuel, wrong prime count.
async fn work_as_cheat(w: &ManualWorker, module: &[u8]) -> usize {
    let leases = w.take(16).await;
    for lease in &leases {
        w.client
            .upload(lease.replica_id, &primes_cheat_result(module, lease))
            .await
            .unwrap();
    }
    leases.len()
}

/// Honest workers take turns until `job` is done (bounded).
async fn finish_honestly(c: &TestCoordinator, job: protocol::JobId, workers: &[&ManualWorker]) {
    for _ in 0..100 {
        let mut ran = 0;
        for w in workers {
            ran += work_honestly(w).await;
        }
        if ran == 0 {
            let status = c.wait_until(job, |s| s.state != JobState::Reducing).await;
            if status.state == JobState::Done {
                return;
            }
            assert_eq!(status.state, JobState::Running, "{status:?}");
            // Nothing to lease and not done: a unit waits for a replica
            // only a fourth account could take.
            panic!("job stuck: {status:?}");
        }
    }
    panic!("the job did not finish in 100 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_of_one_account_never_hold_replicas_of_one_unit() {
    let c = TestCoordinator::start_with(declared_leases).await;
    c.running_job(primes_wasm(), b"10000 10", quorum(2, 3))
        .await;
    let a = ManualWorker::register(&c.url, "colluder-a").await;
    let key = a.account_key.clone().expect("a new account's key");
    let b = ManualWorker::register_in(&c.url, "colluder-b", Some(&key)).await;
    assert_eq!(a.account_id, b.account_id);
    assert_eq!(b.account_key, None, "joining shows no key");
    assert_eq!(a.take(16).await.len(), 10, "one replica of every unit");
    assert!(
        b.take(16).await.is_empty(),
        "its account already holds a replica of every unit"
    );
    let honest = ManualWorker::register(&c.url, "honest").await;
    assert_eq!(honest.take(16).await.len(), 10);

    let err = worker::client::Client::new(&c.url)
        .register_in("intruder", 1, Some("not-a-key"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_worker_that_starts_cheating_is_caught_and_its_units_are_redone() {
    let c = TestCoordinator::start_with(|config| {
        declared_leases(config);
        config.trust.threshold = 3;
        config.trust.spot_check = 0.3;
        config.trust.seed = Some(11);
    })
    .await;
    let module = primes_wasm();
    let job = c
        .running_job(module.clone(), b"100000 40", adaptive(2, 6))
        .await;
    let cheat = ManualWorker::register(&c.url, "cheat").await;
    let b = ManualWorker::register(&c.url, "b").await;
    let d = ManualWorker::register(&c.url, "d").await;

    // Trust is earned: the cheat and b agree on four units.
    for lease in &cheat.take(4).await {
        cheat.compute_and_upload(lease).await;
    }
    let second = b.take(4).await;
    assert_eq!(second.len(), 4);
    for lease in &second {
        b.compute_and_upload(lease).await;
    }
    assert!(c.worker(cheat.id).await.trusted);
    assert_eq!(c.status(job).await.units_accepted, 4);

    // Trusted, it gets fresh units alone, and lies about all of them.
    assert_eq!(work_as_cheat(&cheat, &module).await, 16);
    let after_lies = c.status(job).await;
    assert!(
        after_lies.units_accepted > 4,
        "some lies were accepted on the cheat's word: {after_lies:?}"
    );
    assert!(
        after_lies.units_accepted < 20,
        "some were secretly spot-checked: {after_lies:?}"
    );

    // Honest workers do the spot checks (and the rest); the first check
    // catches the cheat, which reopens every unit it vouched for alone.
    finish_honestly(&c, job, &[&d, &b]).await;
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    let record = c.worker(cheat.id).await;
    // Caught once, its other lies were discarded as votes and redone.
    assert!(record.invalid >= 1, "caught: {record:?}");
    assert_eq!(record.valid, 4, "only its honest replicas stay valid");
    assert!(!record.trusted);
    let status = c.status(job).await;
    assert_eq!(status.units_accepted, 40);
    assert_eq!(status.output_version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catching_a_cheat_reopens_a_finished_job_and_bumps_its_output_version() {
    let c = TestCoordinator::start_with(|config| {
        config.trust.threshold = 2;
        // No spot checks: the lies of the first job all stand at first.
        config.trust.spot_check = 0.0;
    })
    .await;
    let module = primes_wasm();
    let cheat = ManualWorker::register(&c.url, "cheat").await;
    let b = ManualWorker::register(&c.url, "b").await;
    let d = ManualWorker::register(&c.url, "d").await;

    // Trust, earned honestly on a plain job.
    let warmup = c.running_job(module.clone(), b"1000 2", quorum(2, 3)).await;
    let mut honest_fuel = 0;
    for lease in &cheat.take(16).await {
        honest_fuel += cheat.compute_and_upload(lease).await;
    }
    work_honestly(&b).await;
    c.wait_for_job(warmup).await;
    assert!(c.worker(cheat.id).await.trusted);

    // An adaptive job the cheat does alone, lying on all but its last unit
    // (the one the audit before the output checks): done, and wrong.
    let job = c
        .running_job(module.clone(), b"100000 4", adaptive(2, 6))
        .await;
    let mut leases = cheat.take(16).await;
    assert_eq!(leases.len(), 4);
    leases.sort_by_key(|l| l.unit_id);
    for lease in &leases[..3] {
        let lie = primes_cheat_result(&module, lease);
        cheat.client.upload(lease.replica_id, &lie).await.unwrap();
    }
    // Confirmed by a trusted worker, this one keeps its credit.
    honest_fuel += cheat.compute_and_upload(&leases[3]).await;
    assert_eq!(work_honestly(&b).await, 1, "the audit: one unit checked");
    let done = c.wait_for_job(job).await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.output_version, 1);
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "12592\n");

    // Caught lying on a plain job, the cheat's alone units are redone.
    let trap = c.running_job(module.clone(), b"1000 1", quorum(2, 3)).await;
    work_as_cheat(&cheat, &module).await;
    work_honestly(&b).await;
    work_honestly(&d).await;
    c.wait_for_job(trap).await;
    let reopened = c.status(job).await;
    assert_eq!(reopened.state, JobState::Running, "{reopened:?}");
    finish_honestly(&c, job, &[&b, &d]).await;
    let redone = c.status(job).await;
    assert_eq!(redone.output_version, 2);
    // The dashboard's kept counts followed the reopening and the redo.
    c.assert_aggregates_consistent(job).await;
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "9592\n");
    assert_eq!(
        c.worker(cheat.id).await.credit_fuel,
        honest_fuel,
        "the credit for its lies was taken back; its honest replicas keep theirs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_of_a_unit_go_to_distinct_networks_by_default_and_loopback_is_exempt() {
    // The test is a proxy at 127.0.0.1 that the coordinator trusts, so
    // each work request comes from the address it forwards for.
    let c = TestCoordinator::start_with(|config| {
        assert!(config.trust.distinct_networks, "on by default");
        config.edge.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    c.running_job(primes_wasm(), b"10000 4", quorum(2, 3)).await;
    // Two accounts on one network (192.0.2.0/24), one on another.
    let a = ManualWorker::register(&c.url, "a").await;
    let b = ManualWorker::register(&c.url, "b").await;
    let d = ManualWorker::register(&c.url, "d").await;
    assert_ne!(a.account_id, b.account_id);
    assert_eq!(a.take_via_proxy(&c.url, 16, "192.0.2.10").await.len(), 4);
    assert!(
        b.take_via_proxy(&c.url, 16, "192.0.2.20").await.is_empty(),
        "the second replicas must come from another network"
    );
    assert_eq!(d.take_via_proxy(&c.url, 16, "198.51.100.7").await.len(), 4);
    // Loopback clients have no network: a local demo's workers, all on
    // 127.0.0.1, check each other.
    let e = ManualWorker::register(&c.url, "e").await;
    let f = ManualWorker::register(&c.url, "f").await;
    c.running_job(primes_wasm(), b"10000 4", quorum(2, 3)).await;
    assert_eq!(e.take(16).await.len(), 4);
    assert_eq!(f.take(16).await.len(), 4);
    assert_eq!(
        coordinator::api::placement_network("127.0.0.1".parse().unwrap()),
        None
    );
    assert_eq!(
        coordinator::api::placement_network("::1".parse().unwrap()),
        None
    );
    assert_eq!(
        coordinator::api::placement_network("::ffff:127.0.0.1".parse().unwrap()),
        None
    );
    assert_eq!(
        coordinator::api::network_prefix("192.0.2.77".parse().unwrap()),
        "192.0.2.0/24"
    );
    assert_eq!(
        coordinator::api::network_prefix("2001:db8:1:2::9".parse().unwrap()),
        "2001:db8:1::/48"
    );
}

/// The account-age rule over HTTP: two accounts registered a moment ago
/// agree on every unit, and none is accepted (the job's status and its
/// dashboard page show them waiting) until a worker of an account a day
/// old confirms them; a job that accepts young accounts is finished by
/// the same two meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn young_accounts_agreeing_get_no_unit_accepted_until_a_seasoned_account_confirms() {
    let c = TestCoordinator::start_with(|config| {
        config.trust.min_account_age_secs = 86_400;
    })
    .await;
    let old = ManualWorker::register(&c.url, "old").await;
    c.clock.advance(86_400_000);
    let job = c.running_job(primes_wasm(), b"10000 3", quorum(2, 4)).await;
    let a = ManualWorker::register(&c.url, "young-a").await;
    let b = ManualWorker::register(&c.url, "young-b").await;
    assert_eq!(work_honestly(&a).await, 3);
    assert_eq!(work_honestly(&b).await, 3);
    let s = c.status(job).await;
    assert_eq!(s.state, JobState::Running);
    assert_eq!((s.units_accepted, s.units_waiting_for_seasoned), (0, 3));
    let page: serde_json::Value = reqwest::get(format!("{}/api/v1/dashboard/jobs/{job}", c.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["units"]["waiting_for_seasoned"], 3, "{page}");

    // A job that opts out is settled by the young accounts alone, past
    // the units that wait.
    let open_to_young = c
        .running_job(
            primes_wasm(),
            b"10000 2",
            Validation {
                young_accounts: true,
                ..quorum(2, 4)
            },
        )
        .await;
    assert!(c.status(open_to_young).await.validation.young_accounts);
    let newcomer = ManualWorker::register(&c.url, "young-c").await;
    assert_eq!(work_honestly(&a).await, 2);
    assert_eq!(
        work_honestly(&newcomer).await,
        2,
        "the opted-out job's units only"
    );
    assert_eq!(c.wait_for_job(open_to_young).await.state, JobState::Done);

    // The seasoned account's vote settles the waiting units.
    assert_eq!(work_honestly(&old).await, 3);
    let done = c.wait_for_job(job).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.units_waiting_for_seasoned, 0);
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "1229\n");
    c.assert_aggregates_consistent(job).await;
}
