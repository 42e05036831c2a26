//! Fair share through the store's lease path: submitters' shares of the
//! replicas handed out, fuel weighting, priorities within a submitter, a
//! small job behind a big one, and no banking of idle time.

use super::fixture::{Fixture, T0, open, trust};
use coordinator::store::{LeaseRow, Trust, WorkerRow};
use protocol::{JobId, Validation};

fn roomy() -> Trust {
    Trust {
        initial_leases: 4096,
        ..trust()
    }
}

/// A submitter with `share` and the coordinator's limits.
async fn submitter(f: &Fixture, name: &str, share: u32) -> i64 {
    f.submitter(name, share, None, None).await
}

/// `n` workers, each in an account of its own.
async fn crowd(f: &Fixture, n: usize) -> Vec<WorkerRow> {
    let mut workers = Vec::new();
    for i in 0..n {
        let name = format!("w{i}");
        workers.push(f.worker(&name, &name, 64).await);
    }
    workers
}

/// One lease batch: every worker asks for `each`; each replica is then
/// returned with the fuel `fuel_of` gives its job. Returns the leases.
async fn round(
    f: &Fixture,
    workers: &[WorkerRow],
    each: u32,
    fuel_of: impl Fn(JobId) -> u64,
) -> Vec<LeaseRow> {
    let asks: Vec<(WorkerRow, u32)> = workers.iter().map(|w| (w.clone(), each)).collect();
    let answers = f.store.lease_together(&asks, T0).await.unwrap();
    let mut all = Vec::new();
    for (w, leases) in workers.iter().zip(answers) {
        for l in leases {
            let answer = f.upload(w, &l, &l.input, fuel_of(l.job_id), T0).await;
            answer.expect("admitted");
            all.push(l);
        }
    }
    all
}

/// Five batches of 40 replicas: `a` and `b` get as many, within 10.
async fn level(f: &Fixture, workers: &[WorkerRow], a: JobId, b: JobId) {
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.extend(round(f, workers, 4, |_| 100).await);
    }
    let (na, nb) = (of(&leases, a), of(&leases, b));
    assert_eq!(na + nb, 200);
    assert!(na.abs_diff(nb) <= 10, "{na} and {nb}");
}

fn of(leases: &[LeaseRow], job: JobId) -> usize {
    leases.iter().filter(|l| l.job_id == job).count()
}

async fn accepted(f: &Fixture, job: JobId) -> u64 {
    f.store
        .job_status(job)
        .await
        .unwrap()
        .unwrap()
        .units_accepted
}

#[tokio::test]
async fn two_submitters_of_equal_share_get_equal_accepted_units() {
    let f = open(roomy()).await;
    let (a, b) = (submitter(&f, "a", 1).await, submitter(&f, "b", 1).await);
    let ja = f.job_of(2000, Validation::quorum(1, 2), Some(a), 0).await;
    let jb = f.job_of(2000, Validation::quorum(1, 2), Some(b), 0).await;
    let workers = crowd(&f, 20).await;
    for _ in 0..25 {
        round(&f, &workers, 4, |_| 100).await;
    }
    let (na, nb) = (accepted(&f, ja).await, accepted(&f, jb).await);
    assert_eq!(na + nb, 2000, "every replica asked for was handed out");
    let gap = (na as f64 - nb as f64).abs() / ((na + nb) as f64 / 2.0);
    assert!(gap < 0.05, "accepted {na} and {nb}");
    f.aggregates_agree(ja).await;
    f.aggregates_agree(jb).await;
}

#[tokio::test]
async fn shares_of_three_to_one_get_replicas_three_to_one() {
    let f = open(roomy()).await;
    let (a, b) = (submitter(&f, "a", 3).await, submitter(&f, "b", 1).await);
    let ja = f.job_of(3000, Validation::quorum(2, 4), Some(a), 0).await;
    let jb = f.job_of(3000, Validation::quorum(2, 4), Some(b), 0).await;
    let workers = crowd(&f, 20).await;
    let mut leases = Vec::new();
    for _ in 0..20 {
        leases.extend(round(&f, &workers, 4, |_| 100).await);
    }
    let (na, nb) = (of(&leases, ja), of(&leases, jb));
    assert_eq!(na + nb, 1600);
    let ratio = na as f64 / nb as f64;
    assert!((ratio - 3.0).abs() / 3.0 < 0.05, "{na} to {nb}");
}

#[tokio::test]
async fn shares_are_of_fuel_so_a_job_of_smaller_units_gets_more_of_them() {
    let f = open(roomy()).await;
    let (a, b) = (submitter(&f, "a", 1).await, submitter(&f, "b", 1).await);
    let big = f.job_of(3000, Validation::quorum(1, 2), Some(a), 0).await;
    let small = f.job_of(3000, Validation::quorum(1, 2), Some(b), 0).await;
    let workers = crowd(&f, 10).await;
    let fuel = |job| if job == big { 400 } else { 100 };
    // The first batch samples each job's fuel; from then on it weighs.
    round(&f, &workers, 2, fuel).await;
    let mut leases = Vec::new();
    for _ in 0..20 {
        leases.extend(round(&f, &workers, 5, fuel).await);
    }
    let (nb, ns) = (of(&leases, big), of(&leases, small));
    let ratio = ns as f64 / nb as f64;
    assert!((ratio - 4.0).abs() / 4.0 < 0.05, "{nb} big, {ns} small");
}

#[tokio::test]
async fn a_small_job_behind_a_big_one_of_another_submitter_completes_first() {
    let f = open(roomy()).await;
    let (a, b) = (
        submitter(&f, "big", 1).await,
        submitter(&f, "small", 1).await,
    );
    let big = f
        .job_of(100_000, Validation::quorum(2, 4), Some(a), 0)
        .await;
    let small = f.job_of(10, Validation::quorum(2, 4), Some(b), 0).await;
    let workers = crowd(&f, 10).await;
    // 40 replicas a batch: half to each submitter, so the small job's 20
    // replicas are out after one batch.
    round(&f, &workers, 4, |_| 100).await;
    assert_eq!(accepted(&f, small).await, 10);
    let s = f.store.job_status(small).await.unwrap().unwrap();
    assert_ne!(s.state, protocol::JobState::Running, "{s:?}");
    let b = f.store.job_status(big).await.unwrap().unwrap();
    assert_eq!(
        (b.state, b.units_accepted),
        (protocol::JobState::Running, 10)
    );
    // From then on the big job takes everything: nothing is held back.
    let leases = round(&f, &workers, 4, |_| 100).await;
    assert_eq!(of(&leases, big), 40);
}

#[tokio::test]
async fn a_higher_priority_job_overtakes_its_submitters_earlier_one() {
    let f = open(roomy()).await;
    let a = submitter(&f, "a", 1).await;
    let first = f.job_of(500, Validation::quorum(1, 2), Some(a), 0).await;
    let workers = crowd(&f, 4).await;
    let leases = round(&f, &workers, 5, |_| 100).await;
    assert_eq!(of(&leases, first), 20);
    let urgent = f.job_of(30, Validation::quorum(1, 2), Some(a), 1).await;
    let leases = round(&f, &workers, 5, |_| 100).await;
    assert_eq!(
        of(&leases, urgent),
        20,
        "the urgent job takes every replica"
    );
    let leases = round(&f, &workers, 5, |_| 100).await;
    assert_eq!((of(&leases, urgent), of(&leases, first)), (10, 10));
    assert_eq!(accepted(&f, urgent).await, 30);
    // Equal priorities share.
    let twin = f.job_of(500, Validation::quorum(1, 2), Some(a), 0).await;
    let leases = round(&f, &workers, 5, |_| 100).await;
    assert_eq!((of(&leases, first), of(&leases, twin)), (10, 10));
}

#[tokio::test]
async fn a_submitter_back_from_idle_shares_from_then_on_instead_of_taking_all() {
    let f = open(roomy()).await;
    let (a, b) = (submitter(&f, "a", 1).await, submitter(&f, "b", 1).await);
    let ja = f.job_of(5000, Validation::quorum(1, 2), Some(a), 0).await;
    let workers = crowd(&f, 10).await;
    for _ in 0..10 {
        round(&f, &workers, 4, |_| 100).await;
    }
    // B was idle while A took 400 replicas; it does not bank that time.
    let jb = f.job_of(5000, Validation::quorum(1, 2), Some(b), 0).await;
    level(&f, &workers, ja, jb).await;
}

/// A worker on aarch64 in an account of its own.
async fn arm_worker(f: &Fixture) -> WorkerRow {
    let id = protocol::WorkerId::random();
    let platform = protocol::Platform {
        arch: "aarch64".into(),
        ..super::fixture::platform()
    };
    f.store
        .create_account("arm", "arm", "key-arm", T0)
        .await
        .unwrap();
    f.store
        .register_worker(id, "arm", "token-arm", &platform, 64, "arm", T0)
        .await
        .unwrap();
    f.store.worker_by_token("token-arm").await.unwrap().unwrap()
}

#[tokio::test]
async fn a_job_whose_units_run_on_another_architecture_leaves_its_part_to_the_others() {
    let f = open(roomy()).await;
    let p = submitter(&f, "p", 1).await;
    let pinned = f.job_of(20, Validation::quorum(2, 4), Some(p), 0).await;
    // An aarch64 worker takes a replica of each unit: they run on aarch64
    // from now on, and each still wants one.
    let arm = arm_worker(&f).await;
    let leases = f.lease(&arm, 20, T0).await;
    assert_eq!(of(&leases, pinned), 20);
    let (q, r) = (submitter(&f, "q", 1).await, submitter(&f, "r", 1).await);
    let y = f.job_of(500, Validation::quorum(1, 2), Some(q), 0).await;
    let z = f.job_of(500, Validation::quorum(1, 2), Some(r), 0).await;
    let workers = crowd(&f, 10).await;
    let mut leases = Vec::new();
    for _ in 0..8 {
        leases.extend(round(&f, &workers, 4, |_| 100).await);
    }
    // p's job, first in line and never charged, does not hold the plan:
    // the x86_64 workers share the other two as if it were not there.
    let (ny, nz) = (of(&leases, y), of(&leases, z));
    assert_eq!((of(&leases, pinned), ny + nz), (0, 320));
    assert!(ny.abs_diff(nz) <= 10, "y {ny}, z {nz}");
}

#[tokio::test]
async fn a_submitter_light_long_ago_does_not_starve_a_heavy_one_by_starting_first() {
    let f = open(roomy()).await;
    let (heavy, light) = (
        submitter(&f, "heavy", 1).await,
        submitter(&f, "light", 1).await,
    );
    let workers = crowd(&f, 10).await;
    let old = f
        .job_of(400, Validation::quorum(1, 2), Some(heavy), 0)
        .await;
    for _ in 0..10 {
        round(&f, &workers, 4, |_| 100).await;
    }
    assert_eq!(accepted(&f, old).await, 400);
    let small = f.job_of(10, Validation::quorum(1, 2), Some(light), 0).await;
    round(&f, &workers, 1, |_| 100).await;
    assert_eq!(accepted(&f, small).await, 10);
    // Both idle; the light one starts first, then the heavy one.
    let jl = f
        .job_of(5000, Validation::quorum(1, 2), Some(light), 0)
        .await;
    let jh = f
        .job_of(5000, Validation::quorum(1, 2), Some(heavy), 0)
        .await;
    level(&f, &workers, jl, jh).await;
}

#[tokio::test]
async fn a_new_job_starts_level_with_its_submitters_jobs_of_its_own_priority() {
    let f = open(roomy()).await;
    let s = submitter(&f, "s", 1).await;
    let low = f.job_of(500, Validation::quorum(1, 2), Some(s), 0).await;
    let high = f.job_of(500, Validation::quorum(1, 2), Some(s), 1).await;
    let workers = crowd(&f, 10).await;
    for _ in 0..3 {
        let leases = round(&f, &workers, 4, |_| 100).await;
        assert_eq!(of(&leases, high), 40);
    }
    // The starved low-priority job's pass is not where a new job of the
    // high priority starts: it shares with the other high one.
    let high2 = f.job_of(500, Validation::quorum(1, 2), Some(s), 1).await;
    let leases = round(&f, &workers, 4, |_| 100).await;
    assert_eq!(
        (of(&leases, low), of(&leases, high), of(&leases, high2)),
        (0, 20, 20)
    );
}

#[tokio::test]
async fn a_job_that_starts_running_at_the_end_of_its_split_starts_level() {
    let f = open(roomy()).await;
    let (a, b) = (submitter(&f, "a", 1).await, submitter(&f, "b", 1).await);
    let ja = f.job_of(5000, Validation::quorum(1, 2), Some(a), 0).await;
    let workers = crowd(&f, 10).await;
    for _ in 0..10 {
        round(&f, &workers, 4, |_| 100).await;
    }
    // B's job enters `running` by its split's end, not by its insert.
    let module = f.store.put_blob(b"\0asm splitter", T0).await.unwrap();
    let jb = protocol::JobId::random();
    let new = coordinator::store::NewJob {
        id: jb,
        name: "split".into(),
        module,
        input: None,
        limits: protocol::Limits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        lease_secs: 60,
        validation: Validation::quorum(1, 2),
        submitter: Some(b),
        priority: 0,
    };
    f.store.create_job(&new, None, T0).await.unwrap();
    let claim = f
        .store
        .claim(jb, coordinator::store::Duty::Split, "node", T0)
        .await
        .unwrap()
        .expect("free");
    let inputs: Vec<Vec<u8>> = (0..5000).map(|i: u32| i.to_le_bytes().to_vec()).collect();
    let defaults = coordinator::allowance::Allowance::default();
    f.store
        .add_units(&claim, 0, &inputs, 1, &defaults, T0)
        .await
        .unwrap();
    f.store.finish_split(&claim, 5000, T0).await.unwrap();
    level(&f, &workers, ja, jb).await;
}

#[tokio::test]
async fn workers_holding_units_across_many_jobs_are_never_given_a_second_replica_of_one() {
    let f = open(roomy()).await;
    let s = submitter(&f, "s", 1).await;
    let mut jobs = Vec::new();
    // Units wanting ten replicas each: the same units stay at the head of
    // their jobs from batch to batch, offered again to the workers that
    // already hold them.
    for _ in 0..40 {
        jobs.push(f.job_of(2, Validation::quorum(10, 10), Some(s), 0).await);
    }
    let workers = crowd(&f, 20).await;
    let asks: Vec<(WorkerRow, u32)> = workers.iter().map(|w| (w.clone(), 3)).collect();
    // Three batches without a result: each worker holds units of many
    // jobs, and what each batch reads of those jobs is known to be held
    // only by looking (a batch of many jobs and few units each reads the
    // replicas of each unit rather than a range per key).
    let mut per_worker: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for _ in 0..3 {
        let answers = f.store.lease_together(&asks, T0).await.unwrap();
        for (w, leases) in workers.iter().zip(answers) {
            assert_eq!(leases.len(), 3, "every worker is served");
            per_worker
                .entry(w.id.to_string())
                .or_default()
                .extend(leases.iter().map(|l| l.unit_id.0));
        }
    }
    // The schema's UNIQUE (unit_id, worker_id) would fail the batch (the
    // unwrap above) before a second replica reached a worker; this checks
    // what the answers say, in case a lease ever bypassed the insert.
    for units in per_worker.values() {
        let mut distinct = units.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), units.len(), "a unit twice to one worker");
    }
    // The replicas went across the jobs by fair share, not to the first:
    // runs of 7 (an eighth of a batch of 60), so 180 replicas reach at
    // least 20 jobs and no job holds more than two runs.
    let mut spread = Vec::new();
    for job in &jobs {
        let s = f.store.job_status(*job).await.unwrap().unwrap();
        spread.push(s.replicas_in_progress);
    }
    let reached = spread.iter().filter(|&&n| n > 0).count();
    assert!(reached >= 20, "{spread:?}");
    assert!(spread.iter().all(|&n| n <= 14), "{spread:?}");
}

#[tokio::test]
async fn a_submitter_whose_job_no_worker_can_run_banks_no_time_for_its_next_one() {
    let f = open(roomy()).await;
    let p = submitter(&f, "p", 1).await;
    let pinned = f.job_of(20, Validation::quorum(2, 4), Some(p), 0).await;
    // Its units run on aarch64 from now on, and no aarch64 worker asks
    // again: p has a running job with wanted units that nobody takes.
    let arm = arm_worker(&f).await;
    assert_eq!(of(&f.lease(&arm, 20, T0).await, pinned), 20);
    let q = submitter(&f, "q", 1).await;
    let busy = f.job_of(5000, Validation::quorum(1, 2), Some(q), 0).await;
    let workers = crowd(&f, 10).await;
    for _ in 0..10 {
        round(&f, &workers, 4, |_| 100).await;
    }
    // p's pass stood still while q's went on: p's new job, which the
    // x86_64 workers can run, shares with q's from here on (without the
    // clock it would take all 400 replicas p stood still for first).
    let fresh = f.job_of(5000, Validation::quorum(1, 2), Some(p), 0).await;
    let mut leases = Vec::new();
    for _ in 0..20 {
        leases.extend(round(&f, &workers, 4, |_| 100).await);
    }
    let (nf, nb) = (of(&leases, fresh), of(&leases, busy));
    assert_eq!(nf + nb, 800);
    assert!(nf.abs_diff(nb) < 40, "fresh {nf}, busy {nb}");
    // And a submitter back from idle is not lifted only to p's old pass.
    let r = submitter(&f, "r", 1).await;
    let back = f.job_of(5000, Validation::quorum(1, 2), Some(r), 0).await;
    let mut leases = Vec::new();
    for _ in 0..30 {
        leases.extend(round(&f, &workers, 4, |_| 100).await);
    }
    let (nf, nb, nr) = (of(&leases, fresh), of(&leases, busy), of(&leases, back));
    assert_eq!(nf + nb + nr, 1200);
    for n in [nf, nb, nr] {
        assert!(n.abs_diff(400) < 20, "fresh {nf}, busy {nb}, back {nr}");
    }
}
