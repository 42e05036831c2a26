//! Honest workers complete real jobs with the right answers.

use protocol::JobState;
use wasm_at_home_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_count_the_primes_below_10_to_the_8() {
    let c = TestCoordinator::start().await;
    let workers: Vec<_> = (0..3).map(|_| TestWorker::start(&c.url, 1)).collect();
    let manifest = sample_tasks_dir().join("primes/job.toml");
    let job = c.client.submit_manifest(&manifest).await.unwrap();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(status.units_accepted, 100);
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "5761455\n");
    for w in workers {
        w.stop().await;
    }
    // Every worker took part and none was ever judged wrong.
    let listed = c.workers().await;
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|w| w.invalid == 0 && w.errors == 0),
        "{listed:?}"
    );
    assert_eq!(
        listed.iter().map(|w| w.valid).sum::<u64>(),
        200,
        "quorum 2: two valid replicas per unit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_find_the_signals_injected_into_the_seti_recording() {
    let c = TestCoordinator::start().await;
    let workers: Vec<_> = (0..3).map(|_| TestWorker::start(&c.url, 1)).collect();
    let manifest = sample_tasks_dir().join("seti-search/job.toml");
    let job = c.client.submit_manifest(&manifest).await.unwrap();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    let output = String::from_utf8(c.output(job).await).unwrap();
    let found: Vec<f64> = output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        found.len(),
        3,
        "exactly the injected signals, no false alarms:\n{output}"
    );
    for injected in [1420.40, 2718.28, 3141.59] {
        assert!(
            found.iter().any(|f| (f - injected).abs() < 0.5),
            "signal at {injected} Hz not found:\n{output}"
        );
    }
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_of_one_class_agree_bit_for_bit_on_float_output_and_fuel() {
    // The seti task is float-heavy (FFT, logs, sines); quorum 2 accepts a
    // unit only when both replicas return identical bytes and fuel.
    let c = TestCoordinator::start().await;
    let input = b"seed 5\nsample_rate 4096\nseconds 8\nchunk 1024\nsignal 700 0.5 0 8\n";
    let job = c.submit_input(seti_wasm(), input, quorum(2, 2)).await;
    let workers: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(
        status.units_failed, 0,
        "max_replicas = quorum: any disagreement would fail a unit"
    );
    for w in workers {
        w.stop().await;
    }
}
