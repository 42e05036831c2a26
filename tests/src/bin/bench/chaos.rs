//! `chaos`: the chaos run of `wasm_at_home_tests::chaos` at a larger size,
//! with its figures: the coordinator process killed with SIGKILL and
//! restarted, worker processes killed and restarted, then every check of
//! the end-to-end test (output, acceptances, credit, acknowledged results).
//!
//! `cargo build --release -p wasm-at-home-tests --bins && cargo run
//! --release --bin bench -- chaos [--units N] [--kills K] [--worker-kills W]
//! [--workers N] [--slots S] [--lease-secs L] [--outage-secs O] [--adaptive] [--seed S]`; `--smoke` is a
//! small run of seconds. Runs `coordinator-under-test` and
//! `worker-under-test`, built next to this binary.

use std::path::PathBuf;
use std::time::Duration;
use wasm_at_home_tests::chaos::{Binaries, Plan, fresh_seed};

fn binary(name: &str) -> PathBuf {
    let path = std::env::current_exe().unwrap().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build [--release] -p wasm-at-home-tests --bins`",
        path.display()
    );
    path
}

pub fn run(smoke: bool, args: &[String]) -> serde_json::Value {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number, not {v}"))
            })
    };
    let units = flag("--units").unwrap_or(if smoke { 300 } else { 20_000 });
    let plan = Plan {
        units,
        workers: flag("--workers").unwrap_or(4) as usize,
        slots: flag("--slots").unwrap_or(2) as usize,
        coordinator_kills: flag("--kills").unwrap_or(if smoke { 3 } else { 30 }) as usize,
        worker_kills: flag("--worker-kills").unwrap_or(if smoke { 1 } else { 10 }) as usize,
        seed: flag("--seed").unwrap_or_else(fresh_seed),
        lease_secs: flag("--lease-secs").unwrap_or(3),
        // About 100 units a second at the least, and room for the kills.
        time_limit: Duration::from_secs(120 + units / 20),
        outage: Duration::from_secs(flag("--outage-secs").unwrap_or(4)),
        adaptive: args.iter().any(|a| a == "--adaptive"),
    };
    eprintln!("chaos seed {} (replay: --seed {})", plan.seed, plan.seed);
    let bins = Binaries {
        coordinator: binary("coordinator-under-test"),
        worker: binary("worker-under-test"),
    };
    match wasm_at_home_tests::chaos::run(&plan, &bins) {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}
