//! Property tests of the module validator (`Sandbox::compile`): random
//! bytes and mutated valid modules never panic it, every refusal is a
//! `ModuleError` that says what is wrong, and a mutated module that is
//! still accepted runs to a clear end within its limits. A fixed seed keeps
//! runs repeatable.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sandbox::{Mode, ModuleError, Sandbox, Stdout};
use std::sync::OnceLock;

/// Copies stdin to stdout: imports, memory, a loop, stores and loads.
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

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new().unwrap())
}

fn echo() -> &'static [u8] {
    static W: OnceLock<Vec<u8>> = OnceLock::new();
    W.get_or_init(|| wat::parse_str(ECHO).unwrap())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(7),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Compiles `wasm`: a refusal must be the one its header calls for, and
/// say something; an accepted module must run to a clear end.
fn judged(wasm: &[u8]) -> Result<(), TestCaseError> {
    match sandbox().compile(wasm) {
        Err(e) => {
            let magic = wasm.len() >= 8 && wasm[..4] == *b"\0asm";
            match &e {
                ModuleError::NotWasm => prop_assert!(!magic),
                ModuleError::Component => prop_assert!(magic && wasm[6..8] != [0, 0]),
                _ => prop_assert!(magic),
            }
            let said = e.to_string();
            prop_assert!(said.len() > 20, "an unclear refusal: {:?}", said);
        }
        Ok(program) => {
            let limits = protocol::Limits {
                fuel: 1_000_000,
                memory_bytes: 1 << 20,
                output_bytes: 1 << 10,
            };
            // Any end will do (exit code or a classified failure); a panic
            // or a hang would not.
            let _ = sandbox().run(&program, Mode::Run, b"abc", &limits, Stdout::Capture);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn random_bytes_are_refused_as_not_wasm_or_invalid(
        header in prop_oneof![Just(b"\0asm\x01\0\0\0".to_vec()), Just(Vec::new())],
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut wasm = header;
        wasm.extend(body);
        judged(&wasm)?;
    }

    #[test]
    fn mutated_valid_modules_never_panic_the_validator(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut wasm = echo().to_vec();
        for (at, byte) in &flips {
            let i = at.index(wasm.len());
            wasm[i] = *byte;
        }
        if let Some(cut) = cut {
            wasm.truncate(cut.index(wasm.len()));
        }
        judged(&wasm)?;
    }
}

#[test]
fn the_unmutated_module_is_accepted() {
    assert!(sandbox().compile(echo()).is_ok());
}
