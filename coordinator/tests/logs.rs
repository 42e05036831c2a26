//! Structured logs: a request's log lines carry its route and the worker
//! and replica ids as span fields, not only in the message. Its own test
//! binary, since it installs the process-wide subscriber.

use coordinator::clock::ManualClock;
use coordinator::{Config, Coordinator};
use protocol::{Outcome, Platform, RegisterRequest, RegisterResponse, ResultUpload};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every log line, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_carry_the_route_worker_and_replica_as_span_fields() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("coordinator=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::open(Config::new(dir.path()), Arc::new(ManualClock::new()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(c.serve(listener, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let registered: RegisterResponse = http
        .post(format!("{url}/api/v1/workers"))
        .json(&RegisterRequest {
            name: "logged".into(),
            platform: Platform {
                arch: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
                engine: sandbox::ENGINE.into(),
                protocol: protocol::PROTOCOL_VERSION,
            },
            slots: 1,
            account_key: None,
            invite: None,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = ResultUpload {
        outcome: Outcome::Success {
            output: b"42".to_vec().into(),
        },
        fuel_used: 7,
    };
    let r = http
        .put(format!("{url}/api/v1/replicas/5/result"))
        .bearer_auth(&registered.token)
        .json(&upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("result refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    // The span context precedes the message: request{...}:result{...}.
    let (spans, _) = line.split_once("result refused").unwrap();
    assert!(
        spans.contains("request{method=PUT route=/api/v1/replicas/{id}/result}"),
        "{line}"
    );
    assert!(
        spans.contains(&format!(
            "result{{replica=5 worker={}}}",
            registered.worker_id
        )),
        "{line}"
    );
    assert!(
        line.contains("error=\"not_found\"") || line.contains("error=not_found"),
        "{line}"
    );
}
