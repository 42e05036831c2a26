//! The web dashboard: its JSON endpoints against real jobs and workers, and
//! the page itself in headless Chromium (`browser.rs`).

use crate::browser::Browser;
use coordinator::clock::Clock as _;
use protocol::{JobId, JobState};
use serde_json::{Value, json};
use wasm_at_home_tests::*;

const MINUTE_MS: i64 = 60_000;

async fn get(url: &str) -> Value {
    let res = reqwest::get(url).await.unwrap();
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json().await.unwrap()
}

async fn overview(c: &TestCoordinator) -> Value {
    get(&format!("{}/api/v1/dashboard/overview", c.url)).await
}

async fn job_page(c: &TestCoordinator, job: JobId) -> Value {
    get(&format!("{}/api/v1/dashboard/jobs/{job}", c.url)).await
}

/// A primes unit input: count the primes in [lo, hi).
fn primes_unit(lo: u64, hi: u64) -> Vec<u8> {
    let mut unit = lo.to_le_bytes().to_vec();
    unit.extend_from_slice(&hi.to_le_bytes());
    unit
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Gives `job` to the submitter `name` (made with `share` if new) at
/// `priority`, in the coordinator's database, as submitting with that
/// submitter's key records it (the keys are another part of issue 13).
async fn own(c: &TestCoordinator, job: JobId, name: &str, share: i64, priority: i64) {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = c.dir.path().join("coordinator").join("coordinator.sqlite");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&db))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO submitters (name, key_hash, share, created_ms) VALUES (?, ?, ?, 0)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(format!("not a key: {name}"))
    .bind(share)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE jobs SET submitter_id = (SELECT id FROM submitters WHERE name = ?), priority = ?
         WHERE id = ?",
    )
    .bind(name)
    .bind(priority)
    .bind(job.to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The overview's Submitters row of `name`.
fn submitter<'a>(o: &'a Value, name: &str) -> &'a Value {
    o["submitters"]["submitters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no submitter {name}: {o}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_api_reports_a_finished_job_its_workers_and_their_credit() {
    let c = TestCoordinator::start().await;
    let workers: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    let job = c
        .running_job(primes_wasm(), b"1000000 20", quorum(2, 3))
        .await;
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    for w in workers {
        w.stop().await;
    }

    let o = overview(&c).await;
    let jobs = o["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{o}");
    let j = &jobs[0];
    assert_eq!(j["id"], job.to_string());
    assert_eq!(j["state"], "done");
    assert_eq!(n(&j["units_total"]), 20);
    assert_eq!(n(&j["units_accepted"]), 20);
    assert_eq!(n(&j["units_failed"]), 0);
    assert_eq!(n(&j["replicas_in_progress"]), 0);
    assert_eq!(
        j["time_left_ms"],
        Value::Null,
        "a finished job has no time left"
    );
    assert_eq!(n(&o["workers"]), 2);
    assert_eq!(n(&o["workers_online"]), 2);
    assert_eq!(n(&o["slots_online"]), 2);
    assert_eq!(n(&o["replicas_in_progress"]), 0);
    // Every replica came back within this (manual) minute: two per unit.
    let t = &o["throughput"];
    let buckets: Vec<u64> = t["buckets"].as_array().unwrap().iter().map(n).collect();
    assert_eq!(buckets.len(), 60);
    assert_eq!(n(&t["bucket_ms"]), MINUTE_MS as u64);
    assert_eq!(n(&t["last_hour"]), 40);
    assert_eq!(buckets.iter().sum::<u64>(), 40);
    assert_eq!(buckets[59], 40, "the minute under way is last: {buckets:?}");
    assert!((t["per_s_now"].as_f64().unwrap() - 40.0 / 60.0).abs() < 1e-9);

    let d = job_page(&c, job).await;
    assert_eq!(d["job"]["state"], "done");
    let u = &d["units"];
    assert_eq!(
        (
            n(&u["total"]),
            n(&u["waiting"]),
            n(&u["in_progress"]),
            n(&u["accepted"]),
            n(&u["failed"])
        ),
        (20, 0, 0, 20, 0),
        "{d}"
    );
    let r = &d["replicas"];
    assert_eq!((n(&r["total"]), n(&r["valid"])), (40, 40), "{d}");
    for k in [
        "invalid",
        "errored",
        "timed_out",
        "discarded",
        "returned",
        "in_progress",
    ] {
        assert_eq!(n(&r[k]), 0, "{k}: {d}");
    }
    assert_eq!(d["errors"], json!([]));
    let accepted: u64 = d["accepted"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(n)
        .sum();
    assert_eq!(accepted, 20, "{d}");
    assert_eq!(n(&d["job"]["output_version"]), 1);
    let url = d["output_url"].as_str().unwrap();
    assert_eq!(url, format!("/api/v1/jobs/{job}/output"));
    let output = reqwest::get(format!("{}{url}", c.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&output[..], b"78498\n", "primes below 10^6");

    let w = get(&format!("{}/api/v1/dashboard/workers", c.url)).await;
    let listed = w["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|w| n(&w["valid"]) == 20), "{w}");
    assert_eq!(w["running"], json!([]));

    let l = get(&format!("{}/api/v1/dashboard/leaderboard?limit=5", c.url)).await;
    for board in [
        "accounts_by_credit",
        "accounts_by_recent",
        "workers_by_credit",
        "workers_by_recent",
    ] {
        let list = l[board].as_array().unwrap();
        assert_eq!(list.len(), 2, "{board}: {l}");
        assert!(
            list.iter().all(|e| e["credit"].as_f64().unwrap() > 0.0
                && e["recent_credit"].as_f64().unwrap() > 0.0),
            "{board}: {l}"
        );
    }
    // Both workers did the same work, so both rank equal; each account
    // has its one worker.
    assert!(
        l["accounts_by_credit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| n(&a["count"]) == 1)
    );
    assert!(
        l["workers_by_credit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| n(&w["count"]) == 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_api_follows_a_job_through_time_with_its_rate_and_time_left() {
    let c = TestCoordinator::start().await;
    let units = (0..3)
        .map(|i| primes_unit(i * 1000, (i + 1) * 1000))
        .collect();
    let job = c
        .submit_units(primes_wasm(), units, quorum(1, 1), default_limits())
        .await;
    let w = ManualWorker::register(&c.url, "manual").await;
    let minute = |t: i64| t.div_euclid(MINUTE_MS);
    // The bucket of time `t` on the overview fetched at `now`.
    let bucket = |t: i64, now: i64| (minute(t) - (minute(now) - 59)) as usize;
    let buckets = |o: &Value| -> Vec<u64> {
        o["throughput"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(n)
            .collect()
    };

    // Nothing done for 100 s (no worker yet): no rate.
    c.clock.advance(100_000);
    let o = overview(&c).await;
    assert_eq!(o["jobs"][0]["time_left_ms"], Value::Null, "{o}");
    assert_eq!(n(&o["throughput"]["last_hour"]), 0);

    // One unit leased: in progress on the job page, the overview and the
    // workers page.
    let lease = w.take(1).await.remove(0);
    let d = job_page(&c, job).await;
    assert_eq!(
        (
            n(&d["units"]["waiting"]),
            n(&d["units"]["in_progress"]),
            n(&d["replicas"]["in_progress"])
        ),
        (2, 1, 1),
        "{d}"
    );
    assert_eq!(n(&overview(&c).await["replicas_in_progress"]), 1);
    let running = get(&format!("{}/api/v1/dashboard/workers", c.url)).await["running"].clone();
    assert_eq!(running.as_array().unwrap().len(), 1, "{running}");
    assert_eq!(running[0]["worker_id"], w.id.to_string());
    assert_eq!(running[0]["job_id"], job.to_string());
    assert!(n(&running[0]["unit_index"]) < 3, "{running}");

    let t0 = c.clock.now_ms();
    w.compute_and_upload(&lease).await;
    c.clock.advance(50_000);
    let t1 = c.clock.now_ms();
    let lease = w.take(1).await.remove(0);
    w.compute_and_upload(&lease).await;

    // Two of three units accepted in the 50 s since the first acceptance
    // (from the start of its second; not the 150 s since the job was
    // submitted): one left, at that rate about 25 s.
    let o = overview(&c).await;
    let j = &o["jobs"][0];
    let rate = j["rate_per_s"].as_f64().unwrap();
    let span_ms = t1 - t0.div_euclid(1000) * 1000;
    assert!((rate - 2000.0 / span_ms as f64).abs() < 1e-9, "{j}");
    // Within a millisecond: the estimate divides by the rate, and half an
    // odd span of milliseconds may round either way.
    let left = j["time_left_ms"].as_i64().unwrap();
    assert!((left as f64 - span_ms as f64 / 2.0).abs() <= 1.0, "{j}");
    assert_eq!(
        job_page(&c, job).await["job"]["time_left_ms"],
        j["time_left_ms"],
        "the job page shows the same estimate"
    );
    let b = buckets(&o);
    let mut want = vec![0u64; 60];
    want[bucket(t0, t1)] += 1;
    want[bucket(t1, t1)] += 1;
    assert_eq!(b, want);
    assert_eq!(n(&o["throughput"]["last_hour"]), 2);
    // Both within the last minute.
    assert!((o["throughput"]["per_s_now"].as_f64().unwrap() - 2.0 / 60.0).abs() < 1e-9);

    // Ten minutes on, those minutes are final (and kept); a third result
    // lands in the minute under way.
    c.clock.advance(10 * MINUTE_MS);
    assert_eq!(n(&overview(&c).await["throughput"]["last_hour"]), 2);
    let lease = w.take(1).await.remove(0);
    w.compute_and_upload(&lease).await;
    let t2 = c.clock.now_ms();
    let done = c.wait_for_job(job).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    let o = overview(&c).await;
    let mut want = vec![0u64; 60];
    for t in [t0, t1, t2] {
        want[bucket(t, t2)] += 1;
    }
    assert_eq!(buckets(&o), want);
    assert_eq!(o["jobs"][0]["time_left_ms"], Value::Null);

    // Seventy minutes later, the last hour is empty.
    c.clock.advance(70 * MINUTE_MS);
    let o = overview(&c).await;
    assert_eq!(buckets(&o), vec![0u64; 60]);
    assert_eq!(n(&o["throughput"]["last_hour"]), 0);
    assert_eq!(n(&o["workers_online"]), 0, "not seen for 70 minutes");
    assert_eq!(n(&o["workers"]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_api_shows_each_submitters_share_of_the_last_hours_work_and_each_jobs_owner() {
    let c = TestCoordinator::start_with(declared_leases).await;
    let units = |k: u64| (0..k).map(|i| primes_unit(i * 10, i * 10 + 10)).collect();
    let a = c
        .submit_units(primes_wasm(), units(4), quorum(1, 1), default_limits())
        .await;
    let b = c
        .submit_units(primes_wasm(), units(2), quorum(1, 1), default_limits())
        .await;
    own(&c, a, "ada", 3, 2).await;
    own(&c, b, "bob", 1, 0).await;
    let w = ManualWorker::register(&c.url, "scripted").await;
    let leases = w.take(6).await;
    let of = |job: JobId| leases.iter().filter(move |l| l.job_id == job);
    let result = |fuel: u64| protocol::ResultUpload {
        outcome: protocol::Outcome::Success {
            output: 7u64.to_le_bytes().to_vec().into(),
        },
        fuel_used: fuel,
    };
    // ada: three units of 1,000 fuel; bob: one of 3,000. Both jobs run on.
    for l in of(a).take(3) {
        w.client.upload(l.replica_id, &result(1_000)).await.unwrap();
    }
    for l in of(b).take(1) {
        w.client.upload(l.replica_id, &result(3_000)).await.unwrap();
    }

    let o = overview(&c).await;
    assert_eq!(o["submitters"]["weighted_by"], "fuel", "{o}");
    assert_eq!(n(&o["submitters"]["units"]), 4);
    let (ada, bob) = (submitter(&o, "ada"), submitter(&o, "bob"));
    assert_eq!((n(&ada["units"]), n(&bob["units"])), (3, 1));
    assert_eq!(
        (ada["fuel"].as_f64(), bob["fuel"].as_f64()),
        (Some(3e3), Some(3e3))
    );
    assert_eq!(
        ada["part_of_work"].as_f64(),
        Some(0.5),
        "equal fuel, unequal units"
    );
    assert_eq!(
        (ada["owed"].as_f64(), bob["owed"].as_f64()),
        (Some(0.75), Some(0.25))
    );
    assert_eq!((n(&ada["share"]), n(&ada["running_jobs"])), (3, 1));
    // Each job's submitter and priority, on the overview and its page.
    let row = |id: JobId| {
        o["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(
        (row(a)["submitter"].clone(), row(a)["priority"].clone()),
        (json!("ada"), json!(2))
    );
    assert_eq!(
        (row(b)["submitter"].clone(), row(b)["priority"].clone()),
        (json!("bob"), json!(0))
    );
    let d = job_page(&c, a).await;
    assert_eq!(
        (d["job"]["submitter"].clone(), d["job"]["priority"].clone()),
        (json!("ada"), json!(2))
    );

    // An hour on, that work is out of the window; both are still owed.
    c.clock.advance(61 * MINUTE_MS);
    let o = overview(&c).await;
    assert_eq!(n(&o["submitters"]["units"]), 0, "{o}");
    assert_eq!(submitter(&o, "ada")["part_of_work"].as_f64(), Some(0.0));
    assert_eq!(submitter(&o, "ada")["owed"].as_f64(), Some(0.75));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_api_groups_a_jobs_errors_by_kind_with_an_example() {
    let c = TestCoordinator::start().await;
    let workers: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    // Three good units and two the module refuses (not 16 bytes).
    let units = vec![
        primes_unit(0, 1000),
        b"not a range".to_vec(),
        primes_unit(1000, 2000),
        b"nor this".to_vec(),
        primes_unit(2000, 3000),
    ];
    let job = c
        .submit_units(primes_wasm(), units, quorum(2, 3), default_limits())
        .await;
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!((status.units_accepted, status.units_failed), (3, 2));
    for w in workers {
        w.stop().await;
    }
    let d = job_page(&c, job).await;
    assert_eq!(
        (n(&d["units"]["accepted"]), n(&d["units"]["failed"])),
        (3, 2),
        "{d}"
    );
    // Two agreeing replicas settle each failed unit.
    let errors = d["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{d}");
    assert_eq!(errors[0]["kind"], "exit_code");
    assert_eq!(n(&errors[0]["count"]), 4);
    assert_eq!(n(&errors[0]["agreed"]), 4);
    let example = errors[0]["example"].as_str().unwrap();
    assert!(example.contains("16 bytes"), "{example}");
    assert!(
        d["unit_error"].as_str().unwrap().contains("exit_code"),
        "{d}"
    );
    assert_eq!(n(&d["replicas"]["valid"]), 10);
    c.assert_aggregates_consistent(job).await;

    // Bad ids are refused; unknown jobs are not found.
    let bad = reqwest::get(format!("{}/api/v1/dashboard/jobs/nope", c.url))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = reqwest::get(format!(
        "{}/api/v1/dashboard/jobs/{}",
        c.url,
        JobId::random()
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    // The page and its assets are served from the binary.
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let res = reqwest::get(format!("{}{path}", c.url)).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_shows_a_real_job_reach_100_percent_live_then_the_workers_and_their_credit() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let c = TestCoordinator::start().await;
    let job = c
        .running_job(primes_wasm(), b"20000000 60", quorum(2, 3))
        .await;
    own(&c, job, "ada", 1, 5).await;

    // The page lists the job at 0% before any worker exists.
    browser.goto(&format!("{}/", c.url)).await;
    let row = format!("document.querySelector('tr[data-job=\"{job}\"]')");
    let shown = browser
        .wait_for(
            "the job at 0%",
            &format!("const r = {row}; return r && r.querySelector('.pct').dataset.pct;"),
        )
        .await;
    assert_eq!(shown, "0");
    browser.js("window.loadedOnce = 'yes'; return true;").await;

    // Workers start; the same page (no reload) follows the job to 100%.
    let workers: Vec<_> = (0..3).map(|_| TestWorker::start(&c.url, 1)).collect();
    browser
        .wait_for(
            "the job done at 100%",
            &format!(
                "const r = {row}; return r && r.dataset.state === 'done' && r.querySelector('.pct').dataset.pct === '100';"
            ),
        )
        .await;
    assert_eq!(
        browser.js("return window.loadedOnce || null;").await,
        "yes",
        "the page was not reloaded"
    );
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done);
    assert_eq!(status.units_accepted, 60);
    // The job's submitter and priority in its row.
    let owner = browser
        .wait_for(
            "the job's submitter and priority",
            &format!(
                "const r = {row}; const s = r && r.querySelector('[data-submitter]'); \
                 const p = r && r.querySelector('[data-priority]'); \
                 return s && p && [s.dataset.submitter, p.dataset.priority];"
            ),
        )
        .await;
    assert_eq!(owner, json!(["ada", "5"]));
    // The Submitters section (computed every 10 s of the coordinator's
    // clock): ada did all of the last hour's work, as a chart and a row;
    // the admin of the api-key file has a bar too, empty.
    c.clock.advance(10_000);
    let part = browser
        .wait_for(
            "ada's share of the hour's work",
            "const r = document.querySelector('#submitters tr[data-submitter=\"ada\"]'); \
             const bars = document.querySelectorAll('#submitters-chart .bar-rect').length; \
             return r && bars === 2 && r.dataset.part === '1' && [r.dataset.part, r.dataset.owed];",
        )
        .await;
    assert_eq!(
        part,
        json!(["1", "0"]),
        "done: nothing running, owed nothing"
    );
    browser
        .js("document.querySelector('#submitters').scrollIntoView(); return true;")
        .await;
    browser.screenshot("submitters").await;
    browser.js("window.scrollTo(0, 0); return true;").await;
    browser.screenshot("overview").await;

    // The job page: every unit accepted and the output to download.
    browser
        .js(&format!("location.hash = '#/job/{job}'; return true;"))
        .await;
    let href = browser
        .wait_for(
            "the job page with its output",
            "const a = document.querySelector('#download'); \
             const n = document.querySelector('[data-units=accepted]'); \
             return a && n && n.textContent === '60' && a.getAttribute('href');",
        )
        .await;
    assert_eq!(href, format!("/api/v1/jobs/{job}/output"));
    let owner = browser
        .js(
            "const s = document.querySelector('#job-submitter [data-submitter]'); \
             const p = document.querySelector('#job-submitter [data-priority]'); \
             return s && p && [s.dataset.submitter, p.dataset.priority];",
        )
        .await;
    assert_eq!(owner, json!(["ada", "5"]), "on the job page");
    browser.screenshot("job").await;

    // The workers page lists the three workers.
    browser
        .js("location.hash = '#/workers'; return true;")
        .await;
    let listed = browser
        .wait_for(
            "the three workers",
            "const ids = [...document.querySelectorAll('tr[data-worker]')].map(r => r.dataset.worker); \
             return ids.length === 3 && ids;",
        )
        .await;
    let mut listed: Vec<String> = serde_json::from_value(listed).unwrap();
    listed.sort();
    let mut registered: Vec<String> = c.workers().await.iter().map(|w| w.id.to_string()).collect();
    registered.sort();
    assert_eq!(listed, registered);
    browser.screenshot("workers").await;

    // The leaderboard shows credit earned.
    browser
        .js("location.hash = '#/leaderboard'; return true;")
        .await;
    let top = browser
        .wait_for(
            "credit on the leaderboard",
            "const c = [...document.querySelectorAll('#leaderboard [data-credit]')].map(e => Number(e.dataset.credit)); \
             return c.length > 0 && Math.max(...c) > 0 && Math.max(...c);",
        )
        .await;
    assert!(top.as_f64().unwrap() > 0.0);
    browser.screenshot("leaderboard").await;

    assert_eq!(
        browser.js("return window.loadedOnce || null;").await,
        "yes",
        "moving between pages never reloads"
    );
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_job_page_counts_replicas_in_flight_awaiting_quorum_and_judged() {
    let c = TestCoordinator::start().await;
    let job = c
        .submit_units(
            primes_wasm(),
            vec![primes_unit(0, 1000)],
            quorum(2, 3),
            default_limits(),
        )
        .await;
    let a = ManualWorker::register(&c.url, "a").await;
    let b = ManualWorker::register(&c.url, "b").await;
    let (la, lb) = (a.take(1).await.remove(0), b.take(1).await.remove(0));
    let counts = |d: &Value| {
        let r = &d["replicas"];
        (
            n(&r["total"]),
            n(&r["in_progress"]),
            n(&r["returned"]),
            n(&r["valid"]),
        )
    };
    assert_eq!(counts(&job_page(&c, job).await), (2, 2, 0, 0));
    a.compute_and_upload(&la).await;
    assert_eq!(
        counts(&job_page(&c, job).await),
        (2, 1, 1, 0),
        "one awaits quorum"
    );
    b.compute_and_upload(&lb).await;
    assert_eq!(counts(&job_page(&c, job).await), (2, 0, 0, 2));
    c.assert_aggregates_consistent(job).await;
}

/// Leases a work request gives back (its worker no longer names them)
/// show on the dashboard at once, as leases taken do: the page is not a
/// cached answer from before them (the clock has not moved, so only the
/// coordinator's change counter tells).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_job_page_shows_leases_a_work_request_gave_back_at_once() {
    let c = TestCoordinator::start().await;
    let job = c
        .submit_units(
            primes_wasm(),
            vec![primes_unit(0, 1000), primes_unit(1000, 2000)],
            quorum(1, 2),
            default_limits(),
        )
        .await;
    let a = ManualWorker::register(&c.url, "a").await;
    assert_eq!(a.take(2).await.len(), 2);
    let in_flight = |d: &Value| n(&d["replicas"]["in_progress"]);
    assert_eq!(in_flight(&job_page(&c, job).await), 2);
    // a restarted: it asks for nothing and names nothing it holds.
    let answer = a.client.work(0, Some(Vec::new())).await.unwrap();
    assert!(answer.leases.is_empty());
    assert_eq!(in_flight(&job_page(&c, job).await), 0, "given back");
    c.assert_aggregates_consistent(job).await;
}
