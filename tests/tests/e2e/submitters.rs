//! Submitters with keys of their own, over real HTTP: jobs belong to their
//! submitter (cancelled by it or an admin only), a revoked key is refused
//! at once everywhere, keys are kept hashed, the `api-key` file stays the
//! admin's key (old jobs become its), the limits per submitter refuse a
//! submission naming the limit with nothing stored, and the `coordinator
//! keys` commands work on a data directory as a real process.

use coordinator::clock::Clock as _;
use coordinator::keys::{KeyChange, Limit};
use protocol::{BlobHash, JobId, JobSpec, JobState};
use sqlx::{Connection, SqliteConnection};
use std::process::{Command, Output};
use wasm_at_home_tests::*;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_coordinator-under-test");

/// An answer to a request written by hand.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: String,
    message: String,
}

enum Body {
    None,
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

async fn call(
    c: &TestCoordinator,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Body,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, format!("{}/api/v1{path}", c.url));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req = match body {
        Body::None => req,
        Body::Bytes(b) => req.body(b),
        Body::Json(v) => req.json(&v),
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let (code, message) = match serde_json::from_str::<protocol::ErrorBody>(&text) {
        Ok(e) => (e.error, e.message),
        Err(_) => (String::new(), text),
    };
    Answer {
        status,
        code,
        message,
    }
}

/// A job of `n` listed units of the primes module (nobody runs them here).
fn spec(module: BlobHash, n: usize) -> JobSpec {
    JobSpec {
        name: "mine".into(),
        module,
        input: None,
        units: Some((0..n).map(|_| vec![0u8; 16].into()).collect()),
        limits: default_limits(),
        lease_secs: 60,
        validation: quorum(1, 2),
        priority: 0,
    }
}

async fn jobs_of(c: &TestCoordinator, name: &str) -> Vec<protocol::JobStatus> {
    let all = c.coordinator.store().job_statuses(1000).await.unwrap();
    all.into_iter()
        .filter(|s| s.submitter.as_deref() == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submitter_cannot_cancel_another_submitters_job_and_an_admin_can() {
    let c = TestCoordinator::start().await;
    let ann = c.submitter("ann").await;
    let bob = c.submitter("bob").await;
    let module = ann.client.upload_blob(primes_wasm()).await.unwrap();
    let job = ann.client.submit(&spec(module, 3)).await.unwrap();
    let before = c.status(job).await;
    assert_eq!(before.submitter.as_deref(), Some("ann"));

    let refused = call(
        &c,
        "POST",
        &format!("/jobs/{job}/cancel"),
        Some(&bob.key),
        Body::None,
    )
    .await;
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (403, "forbidden"),
        "{refused:?}"
    );
    assert!(
        refused.message.contains("belongs to submitter ann"),
        "{refused:?}"
    );
    let after = c.status(job).await;
    assert_eq!(after.state, JobState::Running, "nothing changed: {after:?}");
    assert_eq!(after.finished_ms, None);
    // Its units are still wanted: a worker gets them.
    let w = ManualWorker::register(&c.url, "w").await;
    assert_eq!(w.take(3).await.len(), 3);

    // Everyone with a key sees it; `mine` is one's own.
    let bobs_view = bob.client.job_list(false, 100).await.unwrap();
    assert!(bobs_view.iter().any(|s| s.id == job));
    assert!(bob.client.job_list(true, 100).await.unwrap().is_empty());
    let mine: Vec<JobId> = ann
        .client
        .job_list(true, 100)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(mine, vec![job]);

    // Its owner cancels its own; the admin (the api-key file) anyone's.
    let own = ann.client.submit(&spec(module, 1)).await.unwrap();
    assert_eq!(
        ann.client.cancel(own).await.unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        c.client.cancel(job).await.unwrap().state,
        JobState::Cancelled
    );
    let mine_without_a_key = call(&c, "GET", "/jobs?mine=true", None, Body::None).await;
    assert_eq!(mine_without_a_key.status, 401, "{mine_without_a_key:?}");
    assert!(
        mine_without_a_key.message.contains("API key"),
        "{mine_without_a_key:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_at_once_on_every_endpoint_that_takes_a_key() {
    let c = TestCoordinator::start().await;
    let ann = c.submitter("ann").await;
    let module = ann.client.upload_blob(primes_wasm()).await.unwrap();
    let job = ann.client.submit(&spec(module, 2)).await.unwrap();
    let spare = ann.client.submit(&spec(module, 1)).await.unwrap();
    let job_spec = serde_json::to_value(spec(module, 1)).unwrap();
    let endpoints = |cancel: JobId| {
        vec![
            ("POST", "/blobs".to_string(), Body::Bytes(b"bytes".to_vec())),
            ("GET", format!("/blobs/{module}"), Body::None),
            ("POST", "/jobs".to_string(), Body::Json(job_spec.clone())),
            ("GET", "/jobs?mine=true".to_string(), Body::None),
            ("GET", "/jobs".to_string(), Body::None),
            ("GET", format!("/jobs/{job}"), Body::None),
            ("GET", format!("/jobs/{job}/units"), Body::None),
            ("GET", format!("/jobs/{job}/output"), Body::None),
            ("POST", format!("/jobs/{cancel}/cancel"), Body::None),
        ]
    };
    // The key works on each before (the output is not there yet: 409).
    for (method, path, body) in endpoints(spare) {
        let a = call(&c, method, &path, Some(&ann.key), body).await;
        assert!(a.status < 400 || a.status == 409, "{method} {path}: {a:?}");
    }
    let jobs_before = jobs_of(&c, "ann").await.len();

    // Revoked by the operator's command: another store on the same
    // database, as another process would be, so nothing in the running
    // coordinator's memory can hide it.
    let data_dir = c.coordinator.config().data_dir.clone();
    let operator = coordinator::operator::open(&data_dir, c.coordinator.config().trust.clone())
        .await
        .unwrap();
    let said = coordinator::keys::revoke(&operator, &"ann".parse().unwrap(), c.clock.now_ms())
        .await
        .unwrap();
    assert!(said.contains("revoked the key of ann"), "{said}");

    for (method, path, body) in endpoints(job) {
        let a = call(&c, method, &path, Some(&ann.key), body).await;
        assert_eq!(
            (a.status, a.code.as_str()),
            (401, "unauthorized"),
            "{method} {path}: {a:?}"
        );
        assert!(a.message.contains("revoked"), "{method} {path}: {a:?}");
    }
    assert_eq!(
        c.status(job).await.state,
        JobState::Running,
        "not cancelled"
    );
    assert_eq!(jobs_of(&c, "ann").await.len(), jobs_before, "no job stored");
    // Nobody else is affected, and reads without a key stay public.
    assert!(c.client.job_list(true, 10).await.is_ok());
    assert_eq!(
        call(&c, "GET", &format!("/jobs/{job}"), None, Body::None)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_stored_as_their_sha256_and_never_in_plain_text() {
    let c = TestCoordinator::start().await;
    let ann = c.submitter("ann").await;
    // Used once, so the database has been written since.
    ann.client.upload_blob(primes_wasm()).await.unwrap();
    let db = c
        .coordinator
        .config()
        .data_dir
        .join(coordinator::operator::DATABASE_FILE);
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, key_hash FROM submitters ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let sha256 = |key: &str| BlobHash::of(key.as_bytes()).to_string();
    assert_eq!(
        rows,
        vec![
            ("admin".to_string(), sha256(&c.api_key)),
            ("ann".to_string(), sha256(&ann.key)),
        ]
    );
    drop(conn);
    // Not in any table, nor in the write-ahead log.
    for file in [db.clone(), db.with_extension("sqlite-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for key in [&ann.key, &c.api_key] {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{} holds a key in plain text",
                file.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_key_file_stays_the_admins_key_and_jobs_from_before_keys_become_its() {
    let c = TestCoordinator::start().await;
    let module = c.client.upload_blob(primes_wasm()).await.unwrap();
    let job = c.client.submit(&spec(module, 2)).await.unwrap();
    assert_eq!(c.status(job).await.submitter.as_deref(), Some("admin"));
    let old_key = c.api_key.clone();
    let dir = c.stop().await;
    let data_dir = dir.path().join("coordinator");
    // As a database from before submitters: a job nobody owns.
    let db = data_dir.join(coordinator::operator::DATABASE_FILE);
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET submitter_id = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    // And the operator changed the key in the file.
    let new_key = "a-new-key-in-the-file";
    std::fs::write(
        data_dir.join(coordinator::API_KEY_FILE),
        format!("{new_key}\n"),
    )
    .unwrap();

    let c = TestCoordinator::start_in(dir, |_| {}).await;
    assert_eq!(c.api_key, new_key);
    assert_eq!(c.status(job).await.submitter.as_deref(), Some("admin"));
    let old = call(&c, "GET", "/jobs?mine=true", Some(&old_key), Body::None).await;
    assert_eq!(old.status, 401, "{old:?}");
    assert!(old.message.contains("unknown API key"), "{old:?}");
    let mine: Vec<JobId> = c
        .client
        .job_list(true, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(mine, vec![job]);
    assert_eq!(
        c.client.cancel(job).await.unwrap().state,
        JobState::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_limit_refuses_a_submission_past_it_naming_it_and_stores_nothing() {
    let c = TestCoordinator::start_with(|config| {
        config.allowance.max_stored_bytes = 4 << 20;
    })
    .await;
    let ann = c.submitter("ann").await;
    let store = c.coordinator.store();
    let defaults = c.coordinator.config().allowance;
    let five = KeyChange {
        max_units: Some(Limit::Of(5)),
        ..KeyChange::default()
    };
    coordinator::keys::set(store, &"ann".parse().unwrap(), &five, &defaults)
        .await
        .unwrap();
    let module = ann.client.upload_blob(primes_wasm()).await.unwrap();
    ann.client.submit(&spec(module, 3)).await.unwrap();

    // Units in flight: 3 + 3 > 5.
    let jobs_before = jobs_of(&c, "ann").await;
    let body = serde_json::to_value(spec(module, 3)).unwrap();
    let a = call(&c, "POST", "/jobs", Some(&ann.key), Body::Json(body)).await;
    assert_eq!((a.status, a.code.as_str()), (422, "over_limit"), "{a:?}");
    assert!(
        a.message.contains("max_units") && a.message.contains("ann"),
        "{a:?}"
    );
    assert_eq!(
        jobs_of(&c, "ann").await.len(),
        jobs_before.len(),
        "nothing stored"
    );
    // The client says it too.
    let e = ann
        .client
        .submit(&spec(module, 3))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_units") && e.contains("422"), "{e}");

    // Stored bytes (the default, 4 MiB): a blob larger than the room left
    // is not kept; a job whose module and input pass it is not stored.
    let held = store
        .submitter_usage(
            store
                .submitter_by_name(&"ann".parse().unwrap())
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap()
        .stored_bytes;
    let room = (4u64 << 20) - held;
    let too_big = vec![1u8; room as usize + 1];
    let a = call(
        &c,
        "POST",
        "/blobs",
        Some(&ann.key),
        Body::Bytes(too_big.clone()),
    )
    .await;
    assert_eq!((a.status, a.code.as_str()), (422, "over_limit"), "{a:?}");
    assert!(a.message.contains("max_stored_bytes"), "{a:?}");
    assert!(
        !store.blob_exists(&BlobHash::of(&too_big)).await.unwrap(),
        "not kept"
    );
    let module_size = primes_wasm().len() as u64;
    let input = ann
        .client
        .upload_blob(vec![2u8; (room - module_size + 1) as usize])
        .await
        .unwrap();
    let split = JobSpec {
        input: Some(input),
        units: None,
        ..spec(module, 0)
    };
    let a = call(
        &c,
        "POST",
        "/jobs",
        Some(&ann.key),
        Body::Json(serde_json::to_value(&split).unwrap()),
    )
    .await;
    assert_eq!((a.status, a.code.as_str()), (422, "over_limit"), "{a:?}");
    assert!(a.message.contains("max_stored_bytes"), "{a:?}");
    assert_eq!(
        jobs_of(&c, "ann").await.len(),
        jobs_before.len(),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_past_max_units_fails_its_job_naming_the_limit() {
    let c = TestCoordinator::start().await;
    let ann = c.submitter("ann").await;
    let three = KeyChange {
        max_units: Some(Limit::Of(3)),
        ..KeyChange::default()
    };
    coordinator::keys::set(
        c.coordinator.store(),
        &"ann".parse().unwrap(),
        &three,
        &c.coordinator.config().allowance,
    )
    .await
    .unwrap();
    let module = ann.client.upload_blob(primes_wasm()).await.unwrap();
    let input = ann.client.upload_blob(b"100000 10".to_vec()).await.unwrap();
    let job = ann
        .client
        .submit(&JobSpec {
            input: Some(input),
            units: None,
            ..spec(module, 0)
        })
        .await
        .unwrap();
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, JobState::Failed, "{s:?}");
    let error = s.error.unwrap();
    assert!(
        error.contains("max_units") && error.contains("split stopped"),
        "{error}"
    );
    assert_eq!(s.units_total, 0, "none of the split's units were kept");
    // Its room is free again: a job that fits is taken.
    ann.client.submit(&spec(module, 3)).await.unwrap();
}

fn keys(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(COORDINATOR)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("keys")
        .args(args)
        .env_remove("WASM_AT_HOME_CONFIG")
        .output()
        .expect("the coordinator binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_keys_commands_create_list_set_and_revoke_beside_a_running_coordinator() {
    let c = TestCoordinator::start().await;
    let dir = c.coordinator.config().data_dir.clone();

    let out = keys(
        &dir,
        &["create", "alice", "--share", "3", "--max-units", "50"],
    );
    assert!(out.status.success(), "{out:?}");
    let key = text(&out.stdout).trim().to_string();
    assert_eq!(key.len(), 64, "{key}");
    assert!(text(&out.stderr).contains("shown only now"), "{out:?}");
    // The key works at once, and the job is alice's.
    let alice = coordinator::client::Client::new(&c.url, Some(key.clone()));
    let module = alice.upload_blob(primes_wasm()).await.unwrap();
    let job = alice.submit(&spec(module, 2)).await.unwrap();
    assert_eq!(c.status(job).await.submitter.as_deref(), Some("alice"));
    let jobs = Command::new(COORDINATOR)
        .args(["jobs", "--mine", "--coordinator", &c.url, "--api-key", &key])
        .output()
        .unwrap();
    assert!(jobs.status.success(), "{jobs:?}");
    let lines = text(&jobs.stdout);
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(
        lines.contains(&job.to_string()) && lines.contains("alice"),
        "{lines}"
    );

    for (args, why) in [
        (
            &["create", "alice"][..],
            "there is a submitter named alice already",
        ),
        (&["create", "al ice"][..], "ASCII letters"),
        (&["create", "admin"][..], "the coordinator's own admin"),
        (&["create", "bob", "--share", "0"][..], "between 1"),
        (
            &["set", "nobody", "--share", "2"][..],
            "no submitter named nobody",
        ),
        (&["set", "alice"][..], "nothing to set"),
        (&["revoke", "admin"][..], "api-key"),
    ] {
        let out = keys(&dir, args);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let out = keys(
        &dir,
        &["set", "alice", "--share", "5", "--max-units", "default"],
    );
    assert!(out.status.success(), "{out:?}");
    let said = text(&out.stdout);
    assert!(
        said.contains("share 5") && said.contains("(default)"),
        "{said}"
    );

    let out = keys(&dir, &["list"]);
    assert!(out.status.success(), "{out:?}");
    let list = text(&out.stdout);
    assert!(
        !list.contains(&key) && !list.contains(&c.api_key),
        "a key listed: {list}"
    );
    let alice_line = list.lines().find(|l| l.starts_with("alice")).unwrap();
    let fields: Vec<&str> = alice_line.split_whitespace().collect();
    assert_eq!(&fields[..4], ["alice", "no", "5", "2"], "{alice_line}");
    assert!(alice_line.ends_with(" -"), "not revoked: {alice_line}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("admin ") && l.contains(" yes ")),
        "{list}"
    );

    // An admin made with --admin cancels anybody's job.
    let out = keys(&dir, &["create", "carol", "--admin"]);
    assert!(out.status.success(), "{out:?}");
    let carol = coordinator::client::Client::new(&c.url, Some(text(&out.stdout).trim().into()));
    assert_eq!(carol.cancel(job).await.unwrap().state, JobState::Cancelled);
    let list = text(&keys(&dir, &["list"]).stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol ") && l.contains(" yes ")),
        "{list}"
    );

    let out = keys(&dir, &["revoke", "alice"]);
    assert!(out.status.success(), "{out:?}");
    let e = alice
        .submit(&spec(module, 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("revoked") && e.contains("401"), "{e}");
    let out = keys(&dir, &["revoke", "alice"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("already"),
        "{out:?}"
    );
    let list = text(&keys(&dir, &["list"]).stdout);
    let alice_line = list.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(alice_line.ends_with('Z'), "a revocation time: {alice_line}");
    let now = coordinator::clock::SystemClock.now_ms();
    assert!(
        alice_line.contains(&coordinator::keys::utc(now)[..10]),
        "{alice_line}"
    );
}

/// Sends `head` (a request's line and headers, without the blank line)
/// and then `body` as raw bytes to the coordinator; the status line's code.
async fn raw_status(c: &TestCoordinator, head: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = c.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The coordinator may answer, and close, before the body is sent.
    let _ = s.write_all(body).await;
    // The status line only: a refused body may still be read (and
    // dropped) after the answer, so the connection need not close.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_past_its_submitters_room_is_refused_before_it_is_read_declared_or_chunked() {
    let c = TestCoordinator::start_with(|config| {
        config.allowance.max_stored_bytes = 1 << 20;
    })
    .await;
    let ann = c.submitter("ann").await;
    let auth = format!("Authorization: Bearer {}", ann.key);
    // Declared past the room: 422 on the headers alone. No body is sent:
    // a coordinator that read it first would wait for it, and the bound
    // here would fail the test.
    let head = format!(
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: {}",
        (1 << 20) + 1
    );
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        raw_status(&c, &head, b""),
    );
    assert_eq!(answer.await.expect("answered before the body"), 422);
    // Chunked, no length declared: refused once past the room, not kept.
    // The body never ends (no last chunk): only a coordinator that stops
    // reading at the room answers.
    let chunk = vec![7u8; 256 << 10];
    let mut body = Vec::new();
    for _ in 0..5 {
        body.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend(&chunk);
        body.extend(b"\r\n");
    }
    let head =
        format!("POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked");
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        raw_status(&c, &head, &body),
    );
    assert_eq!(answer.await.expect("answered at the room"), 422);
    let whole = chunk.repeat(5);
    let store = c.coordinator.store();
    assert!(!store.blob_exists(&BlobHash::of(&whole)).await.unwrap());
    // Within the room, the same way in: stored.
    let mut body = Vec::new();
    body.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
    body.extend(&chunk);
    body.extend(b"\r\n0\r\n\r\n");
    assert_eq!(raw_status(&c, &head, &body).await, 201);
    assert!(store.blob_exists(&BlobHash::of(&chunk)).await.unwrap());
}
