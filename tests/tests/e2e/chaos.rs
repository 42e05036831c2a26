//! Chaos, short mode: 2,000 units, quorum 2, four real worker processes;
//! the coordinator process killed with SIGKILL 10 times and restarted on
//! the same data and port (once kept down for 4 s, longer than the 3 s
//! leases), workers killed 5 times (once while the coordinator is down);
//! then the output, the
//! acceptances, the credit and every acknowledged result are checked
//! against the database and a clean run (`wasm_at_home_tests::chaos`).
//!
//! The schedule is seeded: the seed is printed; `CHAOS_SEED=S` replays it.
//! The long mode is `cargo run --release --bin bench -- chaos`.

use wasm_at_home_tests::chaos;

#[test]
fn chaos_coordinator_and_workers_killed_at_random_lose_nothing_and_change_nothing() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("CHAOS_SEED is a number"))
        .unwrap_or_else(chaos::fresh_seed);
    eprintln!("chaos seed {seed} (replay: CHAOS_SEED={seed})");
    let bins = chaos::Binaries {
        coordinator: env!("CARGO_BIN_EXE_coordinator-under-test").into(),
        worker: env!("CARGO_BIN_EXE_worker-under-test").into(),
    };
    match chaos::run(&chaos::Plan::short(seed), &bins) {
        Ok(figures) => eprintln!("{figures}"),
        Err(e) => panic!("{e:#}"),
    }
}
