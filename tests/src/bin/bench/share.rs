//! `bench -- share`: the scenario issue 13 opened with, on real workers
//! running the primes task. One submitter's 20,000-unit job runs; 5 s
//! later another submitter submits 10 units. Before fair share the small
//! job waited for every unit of the big one (0 of 10 done after 25 s);
//! now it takes its share from the next lease on. Prints how long the
//! small job took from submission to done, and where the big one was then.

use protocol::{JobSpec, JobState, Limits};
use std::time::{Duration, Instant};
use wasm_at_home_tests::{TestCoordinator, TestWorker, primes_wasm, quorum};

pub fn run(smoke: bool) -> serde_json::Value {
    let (big_units, head_start) = if smoke {
        (2_000u64, Duration::from_secs(1))
    } else {
        (20_000, Duration::from_secs(5))
    };
    let workers = 2;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let c = TestCoordinator::start().await;
        let big = c.submitter("big").await;
        let small = c.submitter("small").await;
        let submit = async |who: &wasm_at_home_tests::TestSubmitter, input: String| {
            let module = who.client.upload_blob(primes_wasm()).await.unwrap();
            let input = who.client.upload_blob(input.into_bytes()).await.unwrap();
            who.client
                .submit(&JobSpec {
                    name: format!("{} job", who.name),
                    module,
                    input: Some(input),
                    units: None,
                    limits: Limits {
                        fuel: 2_000_000_000,
                        memory_bytes: 16 << 20,
                        output_bytes: 1 << 10,
                    },
                    lease_secs: 300,
                    validation: quorum(2, 5),
                    priority: 0,
                })
                .await
                .unwrap()
        };
        // Units of 100,000 numbers each, as the sample job's are of 10^6.
        let big_job = submit(&big, format!("{} {big_units}", big_units * 100_000)).await;
        c.wait_until(big_job, |s| s.state == JobState::Running).await;
        let pool: Vec<TestWorker> = (0..workers).map(|_| TestWorker::start(&c.url, 1)).collect();
        tokio::time::sleep(head_start).await;
        let before = c.status(big_job).await;
        let submitted = Instant::now();
        let small_job = submit(&small, "1000000 10".into()).await;
        let done = c.wait_for_job(small_job).await;
        let secs = submitted.elapsed().as_secs_f64();
        let then = c.status(big_job).await;
        assert_eq!(done.state, JobState::Done, "{done:?}");
        assert_eq!(then.state, JobState::Running, "the big job is still running: {then:?}");
        eprintln!(
            "the 10-unit job was done {secs:.2} s after it was submitted; the big job was at {} of {} units then ({} when the small one came)",
            then.units_accepted, then.units_total, before.units_accepted
        );
        for w in pool {
            w.stop().await;
        }
        serde_json::json!({
            "bench": "share",
            "cpu": wasm_at_home_tests::cpu_name(),
            "workers": workers,
            "big_units": big_units,
            "head_start_secs": head_start.as_secs_f64(),
            "big_accepted_at_submission": before.units_accepted,
            "small_job_secs": (secs * 100.0).round() / 100.0,
            "big_accepted_when_small_done": then.units_accepted,
        })
    })
}
