//! `GET /metrics` after a real small job: the figures are what happened.

use protocol::JobState;
use wasm_at_home_tests::*;

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_after_a_small_job_count_what_happened() {
    let c = TestCoordinator::start().await;
    let units = 6u64;
    let job = c
        .running_job(
            primes_wasm(),
            format!("60000 {units}").as_bytes(),
            quorum(2, 4),
        )
        .await;
    let workers: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    for w in workers {
        w.stop().await;
    }
    // A third worker that finds nothing left, and a status read by id.
    let spare = ManualWorker::register(&c.url, "spare").await;
    assert!(spare.take(1).await.is_empty(), "nothing is left to lease");
    let http = reqwest::Client::new();
    let s = http
        .get(format!("{}/api/v1/jobs/{job}", c.url))
        .send()
        .await
        .unwrap();
    assert!(s.status().is_success());

    let r = http.get(format!("{}/metrics", c.url)).send().await.unwrap();
    assert!(r.status().is_success());
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let replicas = 2.0 * units as f64;
    assert_eq!(sample(&text, "wasm_at_home_leases_issued_total"), replicas);
    assert_eq!(
        sample(&text, r#"wasm_at_home_uploads_total{answer="accepted"}"#),
        replicas
    );
    assert_eq!(
        sample(&text, r#"wasm_at_home_replicas{state="valid",kind=""}"#),
        replicas
    );
    assert!(!text.contains(r#"state="invalid""#), "{text}");
    assert_eq!(
        sample(&text, r#"wasm_at_home_units{state="accepted"}"#),
        units as f64
    );
    assert_eq!(sample(&text, r#"wasm_at_home_units{state="failed"}"#), 0.0);
    assert_eq!(sample(&text, r#"wasm_at_home_jobs{state="done"}"#), 1.0);
    assert_eq!(sample(&text, "wasm_at_home_units_reopened_total"), 0.0);
    assert_eq!(sample(&text, "wasm_at_home_replicas_in_progress"), 0.0);
    assert_eq!(sample(&text, "wasm_at_home_workers"), 3.0);
    assert_eq!(sample(&text, "wasm_at_home_workers_online"), 3.0);
    assert_eq!(sample(&text, "wasm_at_home_workers_banned"), 0.0);
    // Every upload went through the writer: at least that many writes in
    // its batches, and one commit timed per batch.
    let batches = sample(&text, "wasm_at_home_writer_batch_writes_count");
    assert!(sample(&text, "wasm_at_home_writer_batch_writes_sum") >= replicas);
    assert_eq!(
        sample(&text, "wasm_at_home_writer_commit_seconds_count"),
        batches
    );
    // Latency by matched route, never by raw URI.
    assert_eq!(
        sample(
            &text,
            r#"wasm_at_home_request_duration_seconds_count{method="GET",route="/api/v1/jobs/{id}"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            r#"wasm_at_home_request_duration_seconds_count{method="POST",route="/api/v1/work"}"#
        ) >= 1.0
    );
    assert!(!text.contains(&job.to_string()), "a raw id made a series");
    assert_eq!(
        sample(
            &text,
            r#"wasm_at_home_responses_total{method="POST",route="/api/v1/workers",status="201"}"#
        ),
        3.0
    );
}
