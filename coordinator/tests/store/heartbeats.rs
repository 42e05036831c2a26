//! Heartbeats extend a lease only with progress the worker's proven speed
//! makes plausible, and never past the time its job's fuel limit takes at
//! that speed (issue 12, fault 3: invented, growing fuel kept a lease
//! alive for eight lease periods). Time is passed explicitly: no sleeps.

use crate::fixture::{Fixture, T0, open, trust};
use coordinator::store::{LeaseRow, WorkerRow};
use protocol::{Heartbeat, MAX_LEASE_PERIODS, UnitProgress, UploadStatus, Validation};

fn beat(lease: &LeaseRow, fuel_used: u64) -> Heartbeat {
    Heartbeat {
        running: vec![UnitProgress {
            replica_id: lease.replica_id,
            fuel_used,
        }],
        paused: false,
    }
}

/// The deadline a heartbeat gives back, or `None`: the lease is gone.
async fn report(f: &Fixture, w: &WorkerRow, lease: &LeaseRow, fuel: u64, now: i64) -> Option<i64> {
    let answer = f
        .store
        .heartbeat(w.id, beat(lease, fuel), now)
        .await
        .unwrap();
    match answer.leases.first() {
        Some(l) => Some(l.deadline_ms),
        None => {
            assert_eq!(answer.gone, vec![lease.replica_id]);
            None
        }
    }
}

/// The fixture's jobs: a fuel limit of 1,000,000 and a lease of 60 s.
const PERIOD: i64 = 60_000;
const FUEL_LIMIT: i64 = 1_000_000;
/// Every 15 s, as the worker sends them.
const EVERY: i64 = 15_000;

#[tokio::test]
async fn invented_fuel_keeps_no_lease_past_the_bound_while_plausible_progress_keeps_extending() {
    let f = open(trust()).await;
    let honest = f.worker("honest", "alice", 1).await;
    let fast = f.worker("fast", "mallory", 1).await;
    let creep = f.worker("creep", "trudy", 1).await;
    // The honest and the creeping one prove 10,000 fuel/s (100,000 fuel
    // returned 10 s after its lease), the fast one 1,000 fuel/s.
    f.prove(&honest, 100_000, 10_000, T0).await;
    f.prove(&creep, 100_000, 10_000, T0).await;
    f.prove(&fast, 10_000, 10_000, T0).await;
    let t1 = T0 + 20_000;
    let job = f.job(3, Validation::quorum(1, 3)).await;
    let lh = f.lease(&honest, 1, t1).await.remove(0);
    let lf = f.lease(&fast, 1, t1).await.remove(0);
    let lc = f.lease(&creep, 1, t1).await.remove(0);
    assert_eq!(lh.deadline_ms, t1 + PERIOD);

    // Every 15 s for 90 s: the honest worker reports 11,000 fuel/s (a bit
    // faster than proven, within 2x) and is extended a period from each
    // report; the fast one claims 5,000 fuel/s (5x its proven speed) and
    // is not.
    for k in 1..=6 {
        let now = t1 + k * EVERY;
        assert_eq!(
            report(&f, &honest, &lh, (11 * k * EVERY) as u64, now).await,
            Some(now + PERIOD),
            "plausible progress extends"
        );
        if now <= t1 + PERIOD {
            assert_eq!(
                report(&f, &fast, &lf, (5 * k * EVERY) as u64, now).await,
                Some(t1 + PERIOD),
                "fuel faster than proven extends nothing"
            );
        } else {
            assert_eq!(
                report(&f, &fast, &lf, (5 * k * EVERY) as u64, now).await,
                None
            );
        }
        // The creeping one adds 1 fuel a report: plausible, extended.
        assert!(report(&f, &creep, &lc, k as u64, now).await.is_some());
    }
    let (n, _) = f.store.expire_leases(t1 + 6 * EVERY).await.unwrap();
    assert_eq!(n, 1, "the fast one's lease ran out at its first deadline");
    assert_eq!(f.status_of(&fast).await.timeouts, 1);
    // The honest one finishes after its first deadline: accepted.
    let answer = f
        .upload(&honest, &lh, &lh.input, 995_000, t1 + 95_000)
        .await;
    assert_eq!(answer.expect("admitted").0, UploadStatus::Accepted);

    // Creeping on: 2 x 1,000,000 fuel at 10,000 fuel/s is 200 s, short of
    // the cap of eight periods (480 s). Extended up to 200 s after the
    // lease, then gone.
    let bound = t1 + 2 * FUEL_LIMIT * 1000 / 10_000;
    assert!(bound < t1 + MAX_LEASE_PERIODS * PERIOD);
    let mut last = 0;
    let mut k = 6;
    loop {
        k += 1;
        let now = t1 + k * EVERY;
        match report(&f, &creep, &lc, k as u64, now).await {
            Some(d) => {
                assert!(d <= bound, "{d} past the bound {bound}");
                last = d;
            }
            None => break,
        }
    }
    assert_eq!(last, bound, "extended right up to the bound");
    let (n, _) = f.store.expire_leases(bound + 1).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(f.status_of(&creep).await.timeouts, 1);
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_worker_with_no_valid_result_gets_no_extension_whatever_it_reports() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(1, 3)).await;
    let new = f.worker("new", "nobody", 1).await;
    let l = f.lease(&new, 1, T0).await.remove(0);
    for k in 1..=4 {
        assert_eq!(
            report(&f, &new, &l, (1_000 * k) as u64, T0 + k * EVERY).await,
            Some(T0 + PERIOD),
            "nothing proven, no time bought"
        );
    }
    let (n, _) = f.store.expire_leases(T0 + PERIOD + 1).await.unwrap();
    assert_eq!(n, 1, "it runs out at its first deadline");
    f.aggregates_agree(job).await;
}

#[tokio::test]
async fn a_workers_proven_speed_is_its_fastest_valid_result() {
    let f = open(trust()).await;
    let w = f.worker("w", "alice", 1).await;
    // 1,000 fuel/s, then 10,000, then 1,000 again.
    f.prove(&w, 10_000, 10_000, T0).await;
    f.prove(&w, 100_000, 10_000, T0 + 10_000).await;
    f.prove(&w, 10_000, 10_000, T0 + 20_000).await;
    let t1 = T0 + 40_000;
    let job = f.job(1, Validation::quorum(1, 3)).await;
    let l = f.lease(&w, 1, t1).await.remove(0);
    // 15,000 fuel/s: within twice the fastest (20,000), far beyond twice
    // the last (2,000).
    assert_eq!(
        report(&f, &w, &l, (15 * EVERY) as u64, t1 + EVERY).await,
        Some(t1 + EVERY + PERIOD)
    );
    // 25,000 fuel/s since then: beyond twice the fastest.
    assert_eq!(
        report(&f, &w, &l, (15 * EVERY + 25 * EVERY) as u64, t1 + 2 * EVERY).await,
        Some(t1 + EVERY + PERIOD)
    );
    f.aggregates_agree(job).await;
}
