//! The fair-share rule on plain values: shares, fuel weighting,
//! priorities, caps, and convergence over many batches.

use super::*;

fn job(submitter: i64, share: f64, priority: i32, cost: f64) -> Runnable {
    Runnable {
        submitter: Some(submitter),
        share,
        submitter_pass: 0.0,
        priority,
        pass: 0.0,
        cost,
        cap: None,
    }
}

/// Runs `batches` batches of `total` replicas, charging what each plan
/// gives as the store does; returns the replicas each job got.
fn run(jobs: &mut [Runnable], batches: usize, total: i64) -> Vec<i64> {
    run_by(jobs, batches, total, 1)
}

/// [`run`], giving `quantum` replicas at a time.
fn run_by(jobs: &mut [Runnable], batches: usize, total: i64, quantum: i64) -> Vec<i64> {
    let mut got = vec![0; jobs.len()];
    for _ in 0..batches {
        let (given, _) = plan(jobs, total, quantum);
        let moved = submitter_charges(jobs.iter().zip(given.iter().copied()));
        for (i, j) in jobs.iter_mut().enumerate() {
            got[i] += given[i];
            j.pass += j.charge(given[i]).0;
            j.submitter_pass += moved.get(&j.submitter).copied().unwrap_or(0.0);
        }
    }
    got
}

#[test]
fn equal_shares_get_equal_replicas_within_one() {
    let jobs = [job(1, 1.0, 0, 10.0), job(2, 1.0, 0, 10.0)];
    for total in [1, 2, 7, 100, 1001] {
        let (given, _) = plan(&jobs, total, 1);
        assert_eq!(given.iter().sum::<i64>(), total);
        assert!((given[0] - given[1]).abs() <= 1, "{total}: {given:?}");
    }
}

#[test]
fn a_quantum_gives_runs_of_replicas_and_the_shares_still_converge() {
    // Ten submitters of ten jobs each, batches much smaller than jobs x
    // quantum: each batch gives few jobs a run, and over many batches
    // every submitter and every job gets its part within 5%.
    let mut jobs: Vec<Runnable> = (0..100).map(|j| job(j % 10, 1.0, 0, 10.0)).collect();
    assert_eq!(
        (quantum(3), quantum(40), quantum(200), quantum(5000)),
        (1, 5, 25, 128)
    );
    let (given, _) = plan(&jobs, 200, quantum(200));
    assert!(given.iter().all(|&g| g == 0 || g == 25), "{given:?}");
    assert_eq!(given.iter().filter(|&&g| g > 0).count(), 8);
    let got = run_by(&mut jobs, 1000, 200, quantum(200));
    let mean = 200.0 * 1000.0 / 100.0;
    for (j, &g) in got.iter().enumerate() {
        assert!(
            (g as f64 - mean).abs() / mean < 0.05,
            "job {j}: {g} of {mean}"
        );
    }
    // Shares 3:1 by quanta.
    let mut jobs = [job(1, 3.0, 0, 10.0), job(2, 1.0, 0, 10.0)];
    let got = run_by(&mut jobs, 100, 50, quantum(50));
    let ratio = got[0] as f64 / got[1] as f64;
    assert!((ratio - 3.0).abs() < 0.15, "{got:?}");
    // A cap is never exceeded by a run.
    let mut capped = [job(1, 1.0, 0, 1.0), job(2, 1.0, 0, 1.0)];
    capped[0].cap = Some(5);
    let (given, _) = plan(&capped, 100, quantum(100));
    assert_eq!(given, vec![5, 95]);
}

#[test]
fn shares_three_to_one_converge_to_three_to_one() {
    let mut jobs = [job(1, 3.0, 0, 10.0), job(2, 1.0, 0, 10.0)];
    let got = run(&mut jobs, 50, 37);
    let ratio = got[0] as f64 / got[1] as f64;
    assert!((ratio - 3.0).abs() < 0.03, "{got:?}");
}

#[test]
fn shares_are_of_fuel_not_of_replicas() {
    // Equal shares; A's units cost four times B's: B gets four times the
    // replicas, and both the same fuel.
    let mut jobs = [job(1, 1.0, 0, 40.0), job(2, 1.0, 0, 10.0)];
    let got = run(&mut jobs, 20, 50);
    let (fa, fb) = (got[0] as f64 * 40.0, got[1] as f64 * 10.0);
    assert!((fa / fb - 1.0).abs() < 0.05, "{got:?}");
}

#[test]
fn a_submitters_higher_priority_job_takes_all_of_its_share() {
    let jobs = [
        job(1, 1.0, 0, 10.0),
        job(1, 1.0, 1, 10.0),
        job(2, 1.0, 0, 10.0),
    ];
    let (given, first) = plan(&jobs, 100, 1);
    assert_eq!(given, vec![0, 50, 50]);
    assert_eq!(first, vec![1, 2]);
}

#[test]
fn equal_priorities_of_one_submitter_share() {
    let jobs = [job(1, 1.0, 2, 10.0), job(1, 1.0, 2, 10.0)];
    let (given, _) = plan(&jobs, 9, 1);
    assert!((given[0] - given[1]).abs() <= 1, "{given:?}");
}

#[test]
fn a_job_that_cannot_take_its_share_leaves_it_to_the_others() {
    let mut small = job(2, 100.0, 0, 10.0);
    small.cap = Some(3);
    let jobs = [job(1, 1.0, 0, 10.0), small];
    let (given, _) = plan(&jobs, 40, 1);
    assert_eq!(given, vec![37, 3]);
    // A higher priority that is capped leaves the rest to the same
    // submitter's lower priorities first.
    let mut urgent = job(1, 1.0, 5, 10.0);
    urgent.cap = Some(2);
    let jobs = [urgent, job(1, 1.0, 0, 10.0), job(2, 1.0, 0, 10.0)];
    let (given, _) = plan(&jobs, 10, 1);
    assert_eq!(given, vec![2, 3, 5]);
}

#[test]
fn nothing_is_held_back_while_any_job_can_take_a_replica() {
    let mut a = job(1, 1.0, 0, 10.0);
    a.cap = Some(4);
    let mut b = job(2, 1.0, 0, 10.0);
    b.cap = Some(1);
    let (given, _) = plan(&[a.clone(), b.clone()], 100, 1);
    assert_eq!(given, vec![4, 1]);
    let (given, _) = plan(&[], 10, 1);
    assert!(given.is_empty());
    let (given, _) = plan(&[a, b], 0, 1);
    assert_eq!(given, vec![0, 0]);
}

#[test]
fn a_submitter_behind_catches_up_then_shares() {
    // B starts 100 replicas' worth of fuel behind A: it gets every replica
    // until level, then they alternate.
    let mut a = job(1, 1.0, 0, 10.0);
    a.submitter_pass = 1000.0;
    let jobs = [a, job(2, 1.0, 0, 10.0)];
    let (given, _) = plan(&jobs, 100, 1);
    assert_eq!(given, vec![0, 100]);
    let (given, _) = plan(&jobs, 110, 1);
    assert_eq!(given, vec![5, 105]);
}

#[test]
fn costs_fall_back_to_the_mean_of_the_sampled_jobs() {
    assert_eq!(
        costs(&[Some(10.0), None, Some(30.0)]),
        vec![10.0, 20.0, 30.0]
    );
    assert_eq!(costs(&[None, None]), vec![1.0, 1.0]);
    assert_eq!(
        costs(&[Some(0.0), Some(f64::NAN), Some(4.0)]),
        vec![4.0, 4.0, 4.0]
    );
}

#[test]
fn ties_go_to_the_job_read_first() {
    let jobs = [job(1, 1.0, 0, 10.0), job(1, 1.0, 0, 10.0)];
    let (given, first) = plan(&jobs, 1, 1);
    assert_eq!((given, first), (vec![1, 0], vec![0]));
}

#[test]
fn the_clock_lifts_a_pass_left_behind_and_never_goes_back() {
    assert_eq!(lifted(10.0, 50.0), 50.0);
    assert_eq!(lifted(70.0, 50.0), 70.0);
    assert_eq!(lifted(70.0, f64::NAN), 70.0);
    assert_eq!(clock_after(50.0, [80.0, 60.0]), 60.0);
    assert_eq!(clock_after(50.0, [40.0]), 50.0, "never back");
    assert_eq!(clock_after(50.0, []), 50.0, "nobody served");
}
