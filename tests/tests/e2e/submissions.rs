//! Bad submissions get clear errors, and the coordinator keeps serving.

use protocol::{FailureKind, JobSpec, JobState, Limits};
use wasm_at_home_tests::*;

async fn submit_module(c: &TestCoordinator, module: Vec<u8>) -> anyhow::Result<protocol::JobId> {
    let module = c.client.upload_blob(module).await?;
    c.client
        .submit(&JobSpec {
            name: "bad".into(),
            module,
            input: None,
            units: Some(vec![b"x".to_vec().into()]),
            limits: default_limits(),
            lease_secs: 60,
            validation: quorum(2, 3),
            priority: 0,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_that_is_not_wasm_is_refused_with_a_clear_error() {
    let c = TestCoordinator::start().await;
    let err = submit_module(&c, b"#!/bin/sh\nrm -rf /\n".to_vec())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not a WebAssembly module") && msg.contains("422"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_importing_a_non_wasi_function_is_refused_naming_the_import() {
    let c = TestCoordinator::start().await;
    let wasm = wat::parse_str(
        r#"(module (import "env" "open_socket" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let msg = submit_module(&c, wasm).await.unwrap_err().to_string();
    assert!(
        msg.contains("env.open_socket") && msg.contains("422"),
        "{msg}"
    );
    let no_start = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let msg = submit_module(&c, no_start).await.unwrap_err().to_string();
    assert!(msg.contains("_start"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impossible_limits_and_policies_are_refused() {
    let c = TestCoordinator::start().await;
    let module = c.client.upload_blob(primes_wasm()).await.unwrap();
    let spec = |limits: Limits, q: u32, max: u32| JobSpec {
        name: String::new(),
        module,
        input: None,
        units: Some(vec![vec![0; 16].into()]),
        limits,
        lease_secs: 60,
        validation: quorum(q, max),
        priority: 0,
    };
    let cases = [
        (spec(default_limits(), 3, 2), "max_replicas"),
        (spec(default_limits(), 0, 2), "quorum"),
        (
            spec(
                Limits {
                    fuel: 0,
                    ..default_limits()
                },
                1,
                1,
            ),
            "fuel",
        ),
        (
            spec(
                Limits {
                    memory_bytes: 1 << 40,
                    ..default_limits()
                },
                1,
                1,
            ),
            "memory",
        ),
    ];
    for (s, needle) in cases {
        let msg = c.client.submit(&s).await.unwrap_err().to_string();
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    for priority in [1001, -1001, i32::MAX] {
        let s = JobSpec {
            priority,
            ..spec(default_limits(), 1, 1)
        };
        let msg = c.client.submit(&s).await.unwrap_err().to_string();
        assert!(
            msg.contains("priority must be between -1000 and 1000"),
            "{msg}"
        );
    }
    let jobs = c.client.jobs().await.unwrap();
    assert!(jobs.is_empty(), "nothing refused was stored: {jobs:?}");
    let unknown = JobSpec {
        module: protocol::BlobHash::of(b"never uploaded"),
        ..spec(default_limits(), 1, 1)
    };
    let msg = c.client.submit(&unknown).await.unwrap_err().to_string();
    assert!(msg.contains("upload it first"), "{msg}");
}

async fn units_fail_with(c: &TestCoordinator, wat_src: &str, kind: FailureKind) {
    let wasm = wat::parse_str(wat_src).unwrap();
    let limits = Limits {
        fuel: 20_000_000,
        memory_bytes: 16 << 20,
        output_bytes: 1024,
    };
    let job = c
        .submit_units(
            wasm,
            vec![b"a".to_vec(), b"b".to_vec()],
            quorum(2, 3),
            limits,
        )
        .await;
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Failed, "{status:?}");
    assert_eq!(status.units_failed, 2);
    let units = c
        .coordinator
        .store()
        .units(job, Some("failed"), 10)
        .await
        .unwrap();
    assert_eq!(units.len(), 2);
    for u in units {
        let error = u.error.unwrap();
        assert!(error.contains(kind.as_str()), "{error}");
        assert_eq!(
            u.replicas, 2,
            "two agreeing replicas settle a deterministic failure"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_modules_fail_per_unit_and_the_coordinator_keeps_serving() {
    let c = TestCoordinator::start().await;
    let workers: Vec<_> = (0..2).map(|_| TestWorker::start(&c.url, 1)).collect();
    units_fail_with(
        &c,
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
        FailureKind::OutOfFuel,
    )
    .await;
    units_fail_with(
        &c,
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#,
        FailureKind::OutOfMemory,
    )
    .await;
    units_fail_with(
        &c,
        r#"(module (memory (export "memory") 1) (func $f (call $f)) (func (export "_start") (call $f)))"#,
        FailureKind::Trap,
    )
    .await;
    // Still serving: a real job completes on the same coordinator and workers.
    let job = c
        .submit_input(primes_wasm(), b"10000 3", quorum(2, 3))
        .await;
    let status = c.wait_for_job(job).await;
    assert_eq!(status.state, JobState::Done);
    assert_eq!(String::from_utf8(c.output(job).await).unwrap(), "1229\n");
    for w in workers {
        w.stop().await;
    }
}
