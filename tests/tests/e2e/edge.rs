//! The coordinator's edge on the open internet: the client address behind
//! trusted proxies only, registration limits and invites, built-in TLS,
//! timeouts against slow clients, and bodies limited before they are read.

use protocol::{Limits, RegisterRequest};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasm_at_home_tests::*;

fn register_request(invite: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        name: "edge".into(),
        platform: worker::client::platform(),
        slots: 1,
        account_key: None,
        invite: invite.map(str::to_string),
    }
}

/// Registers with a raw request claiming `forwarded_for`; the status.
async fn register_as(url: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/api/v1/workers"))
        .json(&register_request(None));
    if let Some(addr) = forwarded_for {
        req = req.header("x-forwarded-for", addr);
    }
    req.send().await.unwrap()
}

/// One registration a minute per client address, and no burst.
fn one_registration_a_minute(config: &mut coordinator::Config) {
    config.edge.registration.per_minute = 1;
    config.edge.registration.burst = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // 127.0.0.1 is not a trusted proxy: the headers are the client's own
    // words, so both registrations count against 127.0.0.1.
    let c = TestCoordinator::start_with(|config| {
        one_registration_a_minute(config);
        config.edge.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(
        register_as(&c.url, Some("198.51.100.1")).await.status(),
        201
    );
    let second = register_as(&c.url, Some("198.51.100.2")).await;
    assert_eq!(second.status(), 429, "a new claimed address got a new rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_for_from_a_trusted_proxy_names_the_client() {
    // Here the test is the proxy (127.0.0.1, trusted): each forwarded
    // client has a rate of its own, and a client that forges hops left of
    // the proxy's entry is still the address the proxy saw.
    let c = TestCoordinator::start_with(|config| {
        one_registration_a_minute(config);
        config.edge.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(
        register_as(&c.url, Some("198.51.100.1")).await.status(),
        201
    );
    assert_eq!(
        register_as(&c.url, Some("198.51.100.2")).await.status(),
        201
    );
    let forged = register_as(&c.url, Some("203.0.113.9, 198.51.100.1")).await;
    assert_eq!(forged.status(), 429);
    // The proxy itself (no header) is a client of its own.
    assert_eq!(register_as(&c.url, None).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_past_the_rate_are_answered_429_with_retry_after_and_a_json_error() {
    let c = TestCoordinator::start_with(|config| {
        config.edge.registration.per_minute = 1;
        config.edge.registration.burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(register_as(&c.url, None).await.status(), 201);
    }
    let refused = register_as(&c.url, None).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let body: protocol::ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error, "too_many_requests");
    assert!(body.message.contains("127.0.0.1"), "{}", body.message);
    // Nothing was registered by the refused request.
    assert_eq!(c.workers().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_invites_only_a_registration_spends_an_invite_and_a_spent_one_is_refused() {
    let c = TestCoordinator::start_with(|config| {
        config.edge.registration.invites_only = true;
    })
    .await;
    let token = coordinator::invites::create(&c.coordinator.config().data_dir, 1)
        .await
        .unwrap();
    let client = worker::client::Client::new(&c.url);
    let refuse = |e: worker::client::ClientError| {
        assert_eq!(e.status(), Some(403), "{e}");
        e.to_string()
    };
    let e = refuse(client.register_in("w", 1, None).await.unwrap_err());
    assert!(e.contains("--invite"), "{e}");
    let e = refuse(
        client
            .register_invited("w", 1, None, Some("not-an-invite"))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("unknown or used up"), "{e}");
    client
        .register_invited("w", 1, None, Some(&token))
        .await
        .unwrap();
    let e = refuse(
        client
            .register_invited("w", 1, None, Some(&token))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("unknown or used up"), "{e}");
    assert_eq!(c.workers().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_worker_with_an_invite_registers_and_completes_a_job() {
    let c = TestCoordinator::start_with(|config| {
        config.edge.registration.invites_only = true;
    })
    .await;
    let token = coordinator::invites::create(&c.coordinator.config().data_dir, 1)
        .await
        .unwrap();
    let job = c.running_job(primes_wasm(), b"2000 2", quorum(1, 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let w = TestWorker::start_with(&c.url, dir.path(), 1, |config| {
        config.invite = Some(token);
    });
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, protocol::JobState::Done, "{s:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_worker_over_tls_trusting_the_projects_certificate_completes_a_job() {
    let certs = tempfile::tempdir().unwrap();
    let tls = self_signed_tls(certs.path());
    let ca = tls.cert.clone();
    let c = TestCoordinator::start_with(|config| config.edge.tls = Some(tls)).await;
    assert!(c.url.starts_with("https://localhost:"), "{}", c.url);
    let job = c.running_job(primes_wasm(), b"2000 2", quorum(1, 1)).await;
    let dir = tempfile::tempdir().unwrap();
    let w = TestWorker::start_with(&c.url, dir.path(), 1, |config| {
        config.ca_cert = Some(ca);
    });
    let s = c.wait_for_job(job).await;
    assert_eq!(s.state, protocol::JobState::Done, "{s:?}");
    assert!(
        !c.output(job).await.is_empty(),
        "the output is served over TLS"
    );
    w.stop().await;
    // Plain HTTP to the TLS port gets no answer.
    let plain = c.url.replace("https://localhost", "http://127.0.0.1");
    assert!(reqwest::get(format!("{plain}/livez")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_does_not_trust_the_certificate_stops_with_a_clear_error() {
    let certs = tempfile::tempdir().unwrap();
    let tls = self_signed_tls(certs.path());
    let c = TestCoordinator::start_with(|config| config.edge.tls = Some(tls)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = worker::Config::new(&c.url, dir.path());
    config.slots = 1;
    let run = worker::run(config, std::future::pending());
    let e = tokio::time::timeout(JOB_TIMEOUT, run)
        .await
        .expect("the worker gives up at once instead of retrying")
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("TLS certificate is not trusted") && e.contains("--ca-cert"),
        "{e}"
    );
    assert!(c.workers().await.is_empty());
}

/// Writes `bytes` one a second on `stream` (a slow client), until the
/// peer closes.
fn trickle(mut stream: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8]) {
    tokio::spawn(async move {
        for b in bytes {
            if stream.write_all(&[*b]).await.is_err() {
                return;
            }
            // The client's pace, not a synchronisation.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Reads until what the coordinator sent contains `needle` (or `bound`
/// passes, which fails the test); what it sent.
async fn read_until(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    needle: &str,
    bound: Duration,
) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            got.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&got).contains(needle) {
                return;
            }
        }
    };
    let answered = tokio::time::timeout(bound, read).await.is_ok();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(answered, "no {needle:?} within {bound:?}; got {got:?}");
    got
}

/// Reads until the coordinator closes the connection (or `bound` passes,
/// which fails the test); what it sent.
async fn read_to_close(stream: &mut tokio::net::tcp::OwnedReadHalf, bound: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut got))
        .await
        .expect("the coordinator closed the connection within the bound")
        .ok();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_sending_its_headers_a_byte_a_second_is_cut_off_and_others_are_served() {
    let c = TestCoordinator::start_with(|config| {
        config.edge.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let (mut read, write) = TcpStream::connect(&addr).await.unwrap().into_split();
    let started = Instant::now();
    trickle(
        write,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
    );
    // Served while the slow client holds its connection.
    let ok = reqwest::get(format!("{}/livez", c.url)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let got = read_to_close(&mut read, Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the slow request was never answered"
    );
    let ok = reqwest::get(format!("{}/livez", c.url)).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_body_trickles_is_answered_408_within_the_request_timeout() {
    let c = TestCoordinator::start_with(|config| {
        config.edge.request_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = c.url.trim_start_matches("http://").to_string();
    let (mut read, mut write) = TcpStream::connect(&addr).await.unwrap().into_split();
    let head = format!(
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n",
        c.api_key
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    trickle(write, &[b'x'; 100]);
    let got = read_until(&mut read, "\"error\":\"timeout\"", Duration::from_secs(20)).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"error\":\"timeout\""), "{got}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A job of one unit whose output may be at most 1 KiB.
async fn small_output_job(c: &TestCoordinator) -> protocol::JobId {
    let mut unit = [0u8; 16];
    unit[8..].copy_from_slice(&100u64.to_le_bytes());
    c.submit_units(
        primes_wasm(),
        vec![unit.to_vec()],
        quorum(1, 1),
        Limits {
            output_bytes: 1024,
            ..default_limits()
        },
    )
    .await
}

/// Sends `head` (a request without its body) and reads the answer's
/// status line; the body is never sent.
async fn status_of_head(url: &str, head: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let got = read_until(&mut read, "\r\n", Duration::from_secs(30)).await;
    got.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_larger_than_its_jobs_output_limit_is_refused_before_its_body_is_read() {
    let c = TestCoordinator::start().await;
    small_output_job(&c).await;
    let w = ManualWorker::register(&c.url, "w").await;
    let lease = w.take(1).await.remove(0);
    assert_eq!(lease.limits.output_bytes, 1024);
    let token = w.token();
    // 21 MB declared, not a byte of it sent: the answer can only come
    // from the declared length and the job's limit.
    let status = status_of_head(
        &c.url,
        &format!(
            "PUT /api/v1/replicas/{}/result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 21000000\r\n\r\n",
            lease.replica_id
        ),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // A body within what a 1 KiB output needs but over the job's limit is
    // still read, and refused by the store for what it says.
    let upload = protocol::ResultUpload {
        outcome: protocol::Outcome::Success {
            output: vec![1u8; 1025].into(),
        },
        fuel_used: 10,
    };
    let e = w
        .client
        .upload(lease.replica_id, &upload)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    // A batch beyond what the running jobs allow, and small endpoints
    // beyond their size, are refused the same way.
    let status = status_of_head(
        &c.url,
        &format!(
            "POST /api/v1/results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 21000000\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    let status = status_of_head(
        &c.url,
        &format!(
            "POST /api/v1/work HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // The honest result still goes in.
    w.compute_and_upload(&lease).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_for_an_unknown_or_foreign_replica_is_refused_before_its_body_is_read() {
    let c = TestCoordinator::start().await;
    small_output_job(&c).await;
    let owner = ManualWorker::register(&c.url, "owner").await;
    let other = ManualWorker::register(&c.url, "other").await;
    let lease = owner.take(1).await.remove(0);
    for (replica, expected) in [
        (lease.replica_id.to_string(), "HTTP/1.1 403 Forbidden"),
        ("999999".to_string(), "HTTP/1.1 404 Not Found"),
    ] {
        let status = status_of_head(
            &c.url,
            &format!(
                "PUT /api/v1/replicas/{replica}/result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Length: 500\r\n\r\n",
                other.token()
            ),
        )
        .await;
        assert_eq!(status, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_with_a_bad_certificate_or_key_does_not_start_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let good = self_signed_tls(certs.path());
    std::fs::write(certs.path().join("garbage.pem"), "not PEM").unwrap();
    for (tls, setting) in [
        (
            coordinator::edge::TlsFiles {
                cert: certs.path().join("missing.pem"),
                key: good.key.clone(),
            },
            "tls_cert",
        ),
        (
            coordinator::edge::TlsFiles {
                cert: good.cert.clone(),
                key: certs.path().join("garbage.pem"),
            },
            "tls_key",
        ),
    ] {
        let mut config = coordinator::Config::new(dir.path().join("coordinator"));
        config.edge.tls = Some(tls);
        let clock = std::sync::Arc::new(coordinator::clock::ManualClock::new());
        let e = match coordinator::Coordinator::open(config, clock).await {
            Ok(_) => panic!("started with a bad {setting}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.starts_with(setting), "{e}");
    }
}
