//! Builds the sample tasks for wasm32-wasip1 before the tests compile, so
//! `cargo test` needs no manual step. The tasks are their own workspace with
//! their own target directory, so this nested cargo never waits on the lock
//! of the build that runs it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let tasks = root.join("sample-tasks");
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "primes",
        "seti-search",
        "kernels",
    ] {
        println!("cargo:rerun-if-changed={}", tasks.join(path).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(tasks.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(tasks.join("target"))
        // Flags meant for this host build must not leak into the wasm one.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cannot run cargo to build the sample tasks");
    if !status.success() {
        panic!(
            "building the sample tasks for wasm32-wasip1 failed; is the target installed? \
             (rustup target add wasm32-wasip1)"
        );
    }
    let out = tasks.join("target/wasm32-wasip1/release");
    println!(
        "cargo:rustc-env=PRIMES_WASM={}",
        out.join("primes.wasm").display()
    );
    println!(
        "cargo:rustc-env=SETI_WASM={}",
        out.join("seti-search.wasm").display()
    );
    println!(
        "cargo:rustc-env=KERNELS_WASM={}",
        out.join("kernels.wasm").display()
    );
    println!("cargo:rustc-env=SAMPLE_TASKS_DIR={}", tasks.display());
}
