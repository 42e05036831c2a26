//! The sandbox against hand-written modules: each limit, each refusal.

use super::*;

const LIMITS: Limits = Limits {
    fuel: 10_000_000,
    memory_bytes: 4 << 20,
    output_bytes: 1024,
};

fn compile(wat: &str) -> Result<Program, ModuleError> {
    let sandbox = Sandbox::new().unwrap();
    sandbox.compile(&wat::parse_str(wat).unwrap())
}

fn run(wat: &str, input: &[u8]) -> Report {
    let sandbox = Sandbox::new().unwrap();
    let program = sandbox.compile(&wat::parse_str(wat).unwrap()).unwrap();
    sandbox.run(&program, Mode::Run, input, &LIMITS, Stdout::Capture)
}

/// Copies stdin to stdout, 64 bytes at a time.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (i32.store (i32.const 0) (i32.const 100))
      (i32.store (i32.const 4) (i32.const 64))
      (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8))) (then return))
      (i32.store (i32.const 4) (i32.load (i32.const 8)))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
      (br $again))))"#;

#[test]
fn a_module_reads_stdin_and_writes_stdout() {
    let input: Vec<u8> = (0..200u8).collect();
    let report = run(ECHO, &input);
    assert_eq!(report.result, Ok(0));
    assert_eq!(report.stdout, input);
    assert!(report.fuel_used > 0);
}

#[test]
fn fuel_used_is_the_same_on_every_run() {
    let a = run(ECHO, b"same input");
    let b = run(ECHO, b"same input");
    assert_eq!(a.fuel_used, b.fuel_used);
    assert_ne!(a.fuel_used, run(ECHO, &[7u8; 300]).fuel_used);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let report = run(
        r#"(module (memory (export "memory") 1)
        (func (export "_start") (loop $l (br $l))))"#,
        b"",
    );
    assert_eq!(report.result.unwrap_err().kind, FailureKind::OutOfFuel);
    assert_eq!(report.fuel_used, LIMITS.fuel);
}

#[test]
fn growing_memory_past_the_limit_fails_as_out_of_memory() {
    let report = run(
        r#"(module (memory (export "memory") 1)
        (func (export "_start") (drop (memory.grow (i32.const 100)))))"#,
        b"",
    );
    let failure = report.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::OutOfMemory);
    assert!(
        failure.message.contains("limit is 4.0 MiB"),
        "{}",
        failure.message
    );
}

#[test]
fn an_initial_memory_over_the_limit_fails_as_out_of_memory() {
    let report = run(
        r#"(module (memory (export "memory") 1000)
        (func (export "_start")))"#,
        b"",
    );
    assert_eq!(report.result.unwrap_err().kind, FailureKind::OutOfMemory);
}

#[test]
fn output_over_the_cap_is_reported_as_such() {
    let report = run(ECHO, &[1u8; 2000]);
    assert_eq!(report.result.unwrap_err().kind, FailureKind::OutputTooLarge);
}

#[test]
fn proc_exit_status_is_reported() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 3))))"#;
    let report = run(wat, b"");
    assert_eq!(report.result, Ok(3));
    let failure = report.into_output().unwrap_err();
    assert_eq!(failure.kind, FailureKind::ExitCode);
    assert_eq!(crate::exit_status_in(&failure.message), Some(3));
}

#[test]
fn an_exit_status_is_read_back_from_its_message_and_only_from_one() {
    use crate::exit_status_in;
    assert_eq!(
        exit_status_in("the module exited with status 1: input is not 16 bytes"),
        Some(1)
    );
    assert_eq!(exit_status_in("the module exited with status -7"), Some(-7));
    assert_eq!(exit_status_in("the module exited with status "), None);
    assert_eq!(exit_status_in("the module trapped: unreachable"), None);
    assert_eq!(
        exit_status_in("the module exited with status 99999999999"),
        None,
        "beyond an i32"
    );
}

#[test]
fn a_trap_is_reported_as_a_trap() {
    let report = run(
        r#"(module (memory (export "memory") 1)
        (func (export "_start") unreachable))"#,
        b"",
    );
    let failure = report.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Trap);
    assert!(
        failure.message.contains("unreachable"),
        "{}",
        failure.message
    );
}

#[test]
fn sleeping_returns_at_once_and_advances_the_virtual_clock() {
    // Sleep for an hour with poll_oneoff, then write the monotonic clock's
    // reading (8 bytes) to stdout.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        ;; subscription at 0: clock, monotonic, relative 3600 s
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (drop (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))
        (drop (call $now (i32.const 1) (i64.const 1) (i32.const 300)))
        (i32.store (i32.const 400) (i32.const 300))
        (i32.store (i32.const 404) (i32.const 8))
        (drop (call $write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 408)))))"#;
    let started = std::time::Instant::now();
    let a = run(wat, b"");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(a.result, Ok(0));
    let now = u64::from_le_bytes(a.stdout[..8].try_into().unwrap());
    assert!(now >= 3_600_000_000_000, "clock read {now}");
    assert_eq!(
        a.stdout,
        run(wat, b"").stdout,
        "the clock reads the same in every replica"
    );
}

#[test]
fn random_bytes_are_the_same_in_every_run() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $rand (i32.const 100) (i32.const 13)))
        (i32.store (i32.const 0) (i32.const 100))
        (i32.store (i32.const 4) (i32.const 13))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let a = run(wat, b"");
    assert_eq!(a.stdout.len(), 13);
    assert_ne!(a.stdout, vec![0; 13]);
    assert_eq!(a.stdout, run(wat, b"").stdout);
}

#[test]
fn files_cannot_be_opened() {
    // path_open on fd 3 (which would be the first preopen) answers EBADF (8).
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "/etc/passwd")
      (func (export "_start")
        (call $exit (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 11)
          (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 100)))))"#;
    assert_eq!(run(wat, b"").result, Ok(8));
}

#[test]
fn refuses_bytes_that_are_not_wasm() {
    let sandbox = Sandbox::new().unwrap();
    assert!(matches!(
        sandbox.compile(b"#!/bin/sh\necho hi\n"),
        Err(ModuleError::NotWasm)
    ));
    assert!(matches!(
        sandbox.compile(b"\0asm\x01\0\0\0garbage"),
        Err(ModuleError::Invalid(_))
    ));
}

#[test]
fn refuses_imports_outside_wasi() {
    let err = compile(
        r#"(module (import "env" "launch_missiles" (func))
        (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("env.launch_missiles"), "{err}");
    let err = compile(
        r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func))
        (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap_err();
    assert!(matches!(err, ModuleError::ForbiddenImport { .. }));
}

#[test]
fn refuses_a_wasi_import_of_the_wrong_type() {
    let err = compile(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64)))
        (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap_err();
    assert!(matches!(err, ModuleError::BadImport { .. }), "{err}");
}

#[test]
fn refuses_a_module_without_start_or_memory() {
    assert!(matches!(
        compile(r#"(module (memory (export "memory") 1))"#),
        Err(ModuleError::NoStart)
    ));
    assert!(matches!(
        compile(r#"(module (func (export "_start")))"#),
        Err(ModuleError::NoMemory)
    ));
}

#[test]
fn refuses_shared_memory() {
    assert!(matches!(
        compile(r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#),
        Err(ModuleError::Invalid(_))
    ));
}

#[test]
fn compiled_code_round_trips_through_the_cache_form() {
    let sandbox = Sandbox::new().unwrap();
    let program = sandbox.compile(&wat::parse_str(ECHO).unwrap()).unwrap();
    let loaded = sandbox
        .load_compiled(&program.serialize().unwrap(), program.hash())
        .unwrap();
    let report = sandbox.run(&loaded, Mode::Run, b"cached", &LIMITS, Stdout::Capture);
    assert_eq!(report.stdout, b"cached");
}

#[test]
fn streamed_stdout_reaches_the_sink_and_can_stop_the_run() {
    let sandbox = Sandbox::new().unwrap();
    let program = sandbox.compile(&wat::parse_str(ECHO).unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Stdout::Stream(Box::new(move |b: &[u8]| tx.send(b.to_vec()).is_ok()));
    let report = sandbox.run(&program, Mode::Split, &[5u8; 100], &LIMITS, sink);
    assert_eq!(report.result, Ok(0));
    assert!(report.stdout.is_empty());
    assert_eq!(rx.iter().flatten().count(), 100);

    let sink = Stdout::Stream(Box::new(|_: &[u8]| false));
    let report = sandbox.run(&program, Mode::Split, &[5u8; 100], &LIMITS, sink);
    assert_eq!(report.result.unwrap_err().kind, FailureKind::WorkerError);
}

/// Counts down from the number on stdin's first byte times a million, then
/// writes one byte: a loop of a known, input-controlled length.
const COUNTDOWN: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.mul (i32.load8_u (i32.const 100)) (i32.const 1000000)))
    (loop $l
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))"#;

fn countdown() -> (Sandbox, Program) {
    let sandbox = Sandbox::new().unwrap();
    let program = sandbox
        .compile(&wat::parse_str(COUNTDOWN).unwrap())
        .unwrap();
    (sandbox, program)
}

#[test]
fn a_paced_run_uses_the_same_fuel_and_gives_the_same_output() {
    let (sandbox, program) = countdown();
    let limits = Limits {
        fuel: 1 << 40,
        ..LIMITS
    };
    let plain = sandbox.run(&program, Mode::Run, &[20], &limits, Stdout::Capture);
    let mut told = Vec::new();
    let paced = sandbox.run_paced(
        &program,
        Mode::Run,
        &[20],
        &limits,
        Stdout::Capture,
        &mut |fuel| {
            told.push(fuel);
            Pace::Continue
        },
    );
    assert_eq!(plain.result, Ok(0));
    assert_eq!(paced.result, Ok(0));
    assert_eq!(paced.stdout, plain.stdout);
    assert_eq!(paced.fuel_used, plain.fuel_used);
    // One call per slice, each telling the fuel so far.
    assert_eq!(told.len() as u64, plain.fuel_used / SLICE_FUEL);
    assert!(told.windows(2).all(|w| w[1] == w[0] + SLICE_FUEL));
}

#[test]
fn a_paced_run_runs_out_of_fuel_exactly_where_a_plain_one_does() {
    let (sandbox, program) = countdown();
    for fuel in [SLICE_FUEL - 1, SLICE_FUEL, 3 * SLICE_FUEL + 7] {
        let limits = Limits { fuel, ..LIMITS };
        let plain = sandbox.run(&program, Mode::Run, &[200], &limits, Stdout::Capture);
        let paced = sandbox.run_paced(
            &program,
            Mode::Run,
            &[200],
            &limits,
            Stdout::Capture,
            &mut |_| Pace::Continue,
        );
        assert_eq!(plain.result.unwrap_err().kind, FailureKind::OutOfFuel);
        assert_eq!(paced.result.unwrap_err().kind, FailureKind::OutOfFuel);
        assert_eq!(paced.fuel_used, plain.fuel_used);
    }
}

#[test]
fn a_pacer_can_stop_a_run() {
    let (sandbox, program) = countdown();
    let limits = Limits {
        fuel: 1 << 40,
        ..LIMITS
    };
    let mut calls = 0;
    let report = sandbox.run_paced(
        &program,
        Mode::Run,
        &[200],
        &limits,
        Stdout::Capture,
        &mut |_| {
            calls += 1;
            if calls == 3 {
                Pace::Stop
            } else {
                Pace::Continue
            }
        },
    );
    assert_eq!(calls, 3);
    assert_eq!(report.result.unwrap_err().kind, FailureKind::WorkerError);
    assert!(report.stdout.is_empty());
    assert!(report.fuel_used >= 3 * SLICE_FUEL && report.fuel_used < 4 * SLICE_FUEL);
}
