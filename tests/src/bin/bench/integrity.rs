//! `bench -- integrity`: the coordinator's real scheduler and validator
//! (its `Store`, on SQLite, through the same group-commit path the HTTP
//! handlers use) against simulated workers, some of them saboteurs.
//!
//! Each unit's true output names the unit and ends in 1; a wrong output
//! ends in 0 (random bytes after it, or, for colluders, bytes they agree
//! on). At the end the accepted outputs are checked against the truth.

use coordinator::store::{NewJob, Store, Trust, Upload, WRITE_BATCH, WorkerRow};
use protocol::{BlobHash, FUEL_PER_CREDIT, JobId, Limits, Outcome, Validation, WorkerId};
use std::collections::HashMap;

/// How a simulated worker behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Honest,
    /// Returns a random wrong output with this probability.
    Saboteur(f64),
    /// Honest while untrusted; always wrong (random) while trusted. It is
    /// told when it is trusted: a stronger adversary than any real worker.
    TrustThenCheat,
    /// Always returns the wrong output every colluder returns for the unit.
    Colluder,
    /// One person's accounts (one worker each), pooling what they hold:
    /// they return the output they agree on whenever every replica of the
    /// unit issued so far is theirs, and the true output otherwise.
    Sybil,
}

/// Where the bad workers ask from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Networks {
    /// Every worker on a network of its own.
    Distinct,
    /// The bad workers share one network (one person's accounts at home).
    BadShareOne,
}

#[derive(Debug)]
struct Scenario {
    name: &'static str,
    adaptive: bool,
    bad: Kind,
    networks: Networks,
    /// The bad workers' accounts are new (the good ones two days old), and
    /// the coordinator has the account-age rule on (one day).
    young_bad: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "saboteurs_quorum2",
        adaptive: false,
        bad: Kind::Saboteur(0.3),
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "saboteurs_adaptive",
        adaptive: true,
        bad: Kind::Saboteur(0.3),
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "rare_saboteurs_adaptive",
        adaptive: true,
        bad: Kind::Saboteur(0.02),
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "trust_then_cheat_adaptive",
        adaptive: true,
        bad: Kind::TrustThenCheat,
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "colluders_quorum2",
        adaptive: false,
        bad: Kind::Colluder,
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "colluders_adaptive",
        adaptive: true,
        bad: Kind::Colluder,
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "sybil_one_network_quorum2",
        adaptive: false,
        bad: Kind::Sybil,
        networks: Networks::BadShareOne,
        young_bad: false,
    },
    Scenario {
        name: "sybil_one_network_adaptive",
        adaptive: true,
        bad: Kind::Sybil,
        networks: Networks::BadShareOne,
        young_bad: false,
    },
    Scenario {
        name: "sybil_botnet_quorum2",
        adaptive: false,
        bad: Kind::Sybil,
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "sybil_botnet_adaptive",
        adaptive: true,
        bad: Kind::Sybil,
        networks: Networks::Distinct,
        young_bad: false,
    },
    Scenario {
        name: "sybil_botnet_young_quorum2",
        adaptive: false,
        bad: Kind::Sybil,
        networks: Networks::Distinct,
        young_bad: true,
    },
    Scenario {
        name: "sybil_botnet_young_adaptive",
        adaptive: true,
        bad: Kind::Sybil,
        networks: Networks::Distinct,
        young_bad: true,
    },
];

/// SplitMix64: the simulation's own reproducible randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Runs every scenario, or those `--only a,b` names.
pub fn run(smoke: bool, args: &[String]) -> serde_json::Value {
    let units: u64 = if smoke { 4_000 } else { 100_000 };
    let workers: usize = if smoke { 40 } else { 200 };
    let only: Option<Vec<&str>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|names| names.split(',').collect());
    if let Some(names) = &only {
        for name in names {
            assert!(
                SCENARIOS.iter().any(|s| s.name == *name),
                "no scenario {name:?}; there are {:?}",
                SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>()
            );
        }
    }
    // `--spot-check P`, `--trust-threshold T`: other trust settings than
    // the defaults, to explore what they buy and cost.
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let defaults = Trust::default();
    let trust = Trust {
        // `--seed S`: another run of the same scenarios (the spot checks'
        // draws and the simulation's own); 42 unless told.
        seed: Some(flag("--seed").map_or(42, |s| s.parse().expect("--seed takes a number"))),
        spot_check: flag("--spot-check").map_or(defaults.spot_check, |p| {
            p.parse().expect("--spot-check takes a probability")
        }),
        threshold: flag("--trust-threshold").map_or(defaults.threshold, |t| {
            t.parse().expect("--trust-threshold takes a count")
        }),
        ..defaults
    };
    if let Err(e) = trust.validate() {
        eprintln!("bench integrity: {e}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut results = Vec::new();
    for scenario in SCENARIOS
        .iter()
        .filter(|s| only.as_ref().is_none_or(|names| names.contains(&s.name)))
    {
        let figures = rt.block_on(simulate(scenario, units, workers, &trust));
        println!("{figures}");
        results.push(figures);
    }
    serde_json::json!({ "bench": "integrity", "units": units, "workers": workers, "scenarios": results })
}

async fn simulate(
    scenario: &Scenario,
    units: u64,
    workers: usize,
    trust: &Trust,
) -> serde_json::Value {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let trust = Trust {
        min_account_age_secs: if scenario.young_bad { 86_400 } else { 0 },
        ..trust.clone()
    };
    let store = Store::open_sqlite(&dir.path().join("sim.db"), trust.clone())
        .await
        .unwrap();
    let mut now: i64 = 1_800_000_000_000;
    let module = store.put_blob(b"\0asm simulated", now).await.unwrap();
    let job = JobId(uuid::Uuid::from_u128(0x10b));
    let inputs: Vec<Vec<u8>> = (0..units).map(|i| i.to_le_bytes().to_vec()).collect();
    let new_job = NewJob {
        id: job,
        name: scenario.name.into(),
        module,
        input: None::<BlobHash>,
        limits: Limits {
            fuel: 1 << 40,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        lease_secs: 3600,
        validation: Validation {
            adaptive: scenario.adaptive,
            ..Validation::quorum(2, 10)
        },
        submitter: None,
        priority: 0,
    };
    store
        .create_job(&new_job, Some(&inputs), now)
        .await
        .unwrap();

    // 10% of the workers are bad, spread evenly; each in its own account.
    let platform = worker::client::platform();
    let mut crowd = Vec::new();
    for i in 0..workers {
        // Ids from the index, not the OS: nothing in a run depends on
        // anything but the seed.
        let id = WorkerId(uuid::Uuid::from_u128(0x5117_0000_0000_0000 + i as u128));
        let account = format!("account-{i}");
        let bad = i % 10 == 9;
        let created = if bad && scenario.young_bad {
            now
        } else {
            now - 2 * 86_400_000
        };
        store
            .create_account(&account, &account, &format!("key-{i}"), created)
            .await
            .unwrap();
        store
            .register_worker(
                id,
                &format!("sim-{i}"),
                &format!("token-{i}"),
                &platform,
                2,
                &account,
                now,
            )
            .await
            .unwrap();
        let kind = if bad { scenario.bad } else { Kind::Honest };
        // Networks as a coordinator with distinct networks sees them: a
        // /24 each, or one for all bad workers.
        let net = if kind != Kind::Honest && scenario.networks == Networks::BadShareOne {
            "10.66.0".to_string()
        } else {
            format!("10.{}.{}", i / 256, i % 256)
        };
        crowd.push((
            WorkerRow {
                id,
                arch: platform.arch.clone(),
                account,
                net: Some(net),
            },
            kind,
        ));
    }

    // The simulation's randomness follows the seed too (7 for seed 42, as
    // in the figures before seeds could be chosen).
    let mut rng = Rng(trust.seed.expect("set above") ^ 42 ^ 7);
    // Who was given a replica of each unit, as the Sybils pool it.
    let mut holders: HashMap<u64, Vec<Kind>> = HashMap::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        now += 1_000;
        let trusted: HashMap<WorkerId, bool> = store
            .workers(10_000, now)
            .await
            .unwrap()
            .into_iter()
            .map(|w| (w.id, w.trusted))
            .collect();
        // Every worker asks at once, as over the network, in a random
        // order: who pairs with whom is chance. The requests go to the
        // store in batches of the group-commit task's size, in that order,
        // so what a batch holds is the seed's choice, not the scheduler's:
        // the same seed gives the same figures.
        for i in (1..crowd.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            crowd.swap(i, j);
        }
        let mut uploads = Vec::new();
        let mut leased = 0;
        for group in crowd.chunks(WRITE_BATCH) {
            let requests: Vec<(WorkerRow, u32)> =
                group.iter().map(|(w, _)| (w.clone(), 4)).collect();
            let answers = store.lease_together(&requests, now).await.unwrap();
            for ((_, kind), leases) in group.iter().zip(&answers) {
                for l in leases {
                    let index = u64::from_le_bytes(l.input[..8].try_into().unwrap());
                    holders.entry(index).or_default().push(*kind);
                }
            }
            for ((w, kind), leases) in group.iter().zip(answers) {
                leased += leases.len();
                for l in leases {
                    let index = u64::from_le_bytes(l.input[..8].try_into().unwrap());
                    let cheat = match *kind {
                        Kind::Honest => false,
                        Kind::Saboteur(p) => rng.chance(p),
                        Kind::TrustThenCheat => trusted.get(&w.id).copied().unwrap_or(false),
                        Kind::Colluder => true,
                        Kind::Sybil => holders[&index].iter().all(|k| *k == Kind::Sybil),
                    };
                    let mut output = index.to_le_bytes().to_vec();
                    if !cheat {
                        output.push(1);
                    } else if matches!(*kind, Kind::Colluder | Kind::Sybil) {
                        output.extend([0, 0xC0]);
                    } else {
                        output.push(0);
                        output.extend(rng.next().to_le_bytes());
                    }
                    uploads.push(Upload {
                        worker: w.id,
                        replica: l.replica_id,
                        outcome: Outcome::Success {
                            output: output.into(),
                        },
                        fuel_used: 1_000,
                    });
                }
            }
        }
        for group in uploads.chunks(WRITE_BATCH) {
            for answer in store.record_together(group, now).await.unwrap() {
                answer.unwrap();
            }
        }
        let status = store.job_status(job).await.unwrap().unwrap();
        if status.units_accepted + status.units_failed == status.units_total
            || leased == 0
            || rounds > 100_000
        {
            break;
        }
    }

    let status = store.job_status(job).await.unwrap().unwrap();
    let outputs = store.accepted_outputs(job).await.unwrap();
    let wrong = outputs.iter().filter(|o| o.get(8) != Some(&1)).count() as u64;
    let replicas = store.replicas_issued(job).await.unwrap();
    let credit: f64 = store
        .workers(10_000, now)
        .await
        .unwrap()
        .iter()
        .map(|w| w.credit)
        .sum();
    let accepted = status.units_accepted.max(1);
    eprintln!(
        "{}: {} units, {} accepted ({wrong} wrong), {} failed, {:.3} replicas/unit, {rounds} rounds, {:.1} s, credit {credit:.6}",
        scenario.name,
        units,
        status.units_accepted,
        status.units_failed,
        replicas as f64 / units as f64,
        started.elapsed().as_secs_f64()
    );
    let _ = FUEL_PER_CREDIT;
    serde_json::json!({
        "scenario": scenario.name,
        "accepted_wrong_rate": wrong as f64 / accepted as f64,
        "accepted_wrong": wrong,
        "replicas_per_unit": ((replicas as f64 / units as f64) * 1000.0).round() / 1000.0,
        "open_units": units - status.units_accepted,
        "failed_units": status.units_failed,
    })
}
