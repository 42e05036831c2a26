//! Heartbeats: progress extends a lease (up to a cap) once the worker has
//! proven its speed with a valid result, fuel faster than that speed does
//! not, a paused worker's leases do not grow, and units the coordinator no
//! longer wants are abandoned by the worker running them.

use coordinator::clock::Clock as _;
use protocol::{Heartbeat, JobSpec, Limits, MAX_LEASE_PERIODS, UnitProgress};
use std::time::Duration;
use wasm_at_home_tests::*;

fn beat(replica: protocol::ReplicaId, fuel_used: u64, paused: bool) -> Heartbeat {
    Heartbeat {
        running: vec![UnitProgress {
            replica_id: replica,
            fuel_used,
        }],
        paused,
    }
}

/// A `primes` unit: count the primes in `lo..hi` (16 bytes, both LE).
fn primes_unit(lo: u64, hi: u64) -> Vec<u8> {
    [lo.to_le_bytes(), hi.to_le_bytes()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_extends_a_lease_up_to_a_cap_and_a_stalled_unit_runs_out() {
    let c = TestCoordinator::start().await;
    let module = c.client.upload_blob(primes_wasm()).await.unwrap();
    let job = c
        .client
        .submit(&JobSpec {
            name: "beats".into(),
            module,
            input: None,
            // A real unit that proves the worker's speed, then the one
            // it reports on (never run).
            units: Some(vec![
                primes_unit(0, 10_000).into(),
                b"1 1000".to_vec().into(),
            ]),
            limits: default_limits(),
            lease_secs: 10,
            validation: quorum(1, 2),
            priority: 0,
        })
        .await
        .unwrap();
    let w = ManualWorker::register(&c.url, "w").await;
    // Extensions are earned: a first unit, run for real and returned 10 s
    // after its lease, proves the worker's speed (its fuel over 10 s).
    let first = w.take(1).await.remove(0);
    c.clock.advance(10_000);
    let proving_fuel = w.compute_and_upload(&first).await;
    assert!(proving_fuel < 1_000_000_000, "{proving_fuel}: a small unit");
    let lease = w.take(1).await.remove(0);
    let t0 = c.clock.now_ms();
    assert_eq!(lease.deadline_ms, t0 + 10_000);

    // Progress after 6 s: a full period from now.
    c.clock.advance(6_000);
    let answer = w
        .client
        .heartbeat(&beat(lease.replica_id, 100, false))
        .await
        .unwrap();
    assert_eq!(answer.leases[0].deadline_ms, t0 + 16_000);
    assert!(answer.gone.is_empty());
    // The dashboard shows how far it got.
    let running = reqwest::get(format!("{}/api/v1/dashboard/workers", c.url))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["running"]
        .clone();
    assert_eq!(running[0]["fuel_used"], 100);

    // No progress (the same fuel, as from a paused worker): no extension,
    // and the worker shows as paused.
    c.clock.advance(6_000);
    let answer = w
        .client
        .heartbeat(&beat(lease.replica_id, 100, true))
        .await
        .unwrap();
    assert_eq!(answer.leases[0].deadline_ms, t0 + 16_000);
    assert!(c.worker(w.id).await.paused);

    // Fuel faster than twice the proven speed since the last progress (4e9
    // in 6 s, where the proving unit's speed allows 1.2 times its fuel):
    // not progress, no extension.
    let answer = w
        .client
        .heartbeat(&beat(lease.replica_id, 4_000_000_000, false))
        .await
        .unwrap();
    assert_eq!(answer.leases[0].deadline_ms, t0 + 16_000);

    // Past the original deadline, the extended lease still holds.
    let other = ManualWorker::register(&c.url, "other").await;
    assert!(other.take(1).await.is_empty(), "the lease is still held");

    // Progress without end buys at most MAX_LEASE_PERIODS periods (the
    // job's fuel limit at the proven speed would take far longer): then
    // the lease runs out and the worker hears its unit is gone.
    let cap = t0 + MAX_LEASE_PERIODS * 10_000;
    let mut fuel = 100;
    let mut last = 0;
    for _ in 0..30 {
        c.clock.advance(4_000);
        fuel += 1;
        let answer = w
            .client
            .heartbeat(&beat(lease.replica_id, fuel, false))
            .await
            .unwrap();
        if let Some(l) = answer.leases.first() {
            assert!(l.deadline_ms <= cap);
            last = l.deadline_ms;
        } else {
            assert_eq!(answer.gone, vec![lease.replica_id]);
            break;
        }
    }
    assert_eq!(last, cap, "extended right up to the cap");
    assert!(c.clock.now_ms() > cap);
    // Giving back a lease that ran out does not dodge the timeout.
    w.client.release(lease.replica_id).await.unwrap();
    assert_eq!(
        other.take(1).await.len(),
        1,
        "the unit goes to another worker"
    );
    assert_eq!(c.worker(w.id).await.timeouts, 1);

    // Another worker's replica is never extended by this one.
    let theirs = ManualWorker::register(&c.url, "third").await;
    let answer = theirs
        .client
        .heartbeat(&beat(lease.replica_id, 1, false))
        .await
        .unwrap();
    assert_eq!(answer.gone, vec![lease.replica_id]);
    let _ = job;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_abandons_a_unit_of_a_cancelled_job_at_its_next_heartbeat() {
    let c = TestCoordinator::start().await;
    // One unit of a minute or more.
    let job = c
        .submit_units(
            kernels_wasm(),
            vec![b"mandelbrot 20000".to_vec()],
            quorum(1, 2),
            Limits {
                fuel: 1 << 42,
                ..default_limits()
            },
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let w = TestWorker::start_with(&c.url, dir.path(), 1, |config| {
        config.heartbeat = Duration::from_millis(50);
    });
    // Wait for a heartbeat with progress (each one wakes the waiters).
    let mut changes = c.coordinator.subscribe();
    tokio::time::timeout(JOB_TIMEOUT, async {
        loop {
            changes.borrow_and_update();
            let workers = reqwest::get(format!("{}/api/v1/dashboard/workers", c.url))
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap();
            if workers["running"][0]["fuel_used"].as_u64().unwrap_or(0) > 0 {
                return;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("a heartbeat with progress");

    c.client.cancel(job).await.unwrap();
    // Stopping gives running units 30 s to finish; this one would take a
    // minute, but the next heartbeat (50 ms) says it is not wanted.
    let stats = w.stop().await;
    assert_eq!((stats.abandoned, stats.units_run), (1, 0), "{stats:?}");
}
