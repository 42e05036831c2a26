//! Liveness through the store: whoever the workers are and whatever they
//! return, every unit ends accepted or failed while workers keep asking,
//! and the workers' counters and credit always equal a recount of their
//! replicas (an honest worker outvoted by colluders keeps no invalid mark
//! once the colluders are caught, and the votes its catch discarded count
//! again).

use crate::fixture::{Fixture, T0, open, trust};
use coordinator::store::{LeaseRow, Trust, WorkerRow};
use proptest::prelude::*;
use protocol::{JobId, JobState, Validation};
use sqlx::{Connection, SqliteConnection};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What a simulated worker returns.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// The input, echoed: the right answer.
    Honest,
    /// A wrong answer of its own, different for every unit.
    Liar,
    /// The wrong answer every colluder agrees on.
    Colluder,
    /// Takes leases and never answers.
    Silent,
}

struct Sim {
    f: Fixture,
    workers: Vec<(Kind, WorkerRow)>,
    /// Leases taken and not yet answered: (worker index, lease).
    held: Vec<(usize, LeaseRow)>,
    now: i64,
    rng: u64,
}

impl Sim {
    async fn new(trust: Trust, kinds: &[Kind], seed: u64) -> Sim {
        let f = open(trust).await;
        let mut workers = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            // One account each: colluders are distinct people to the
            // coordinator, as Sybil accounts would be.
            let name = format!("w{i}");
            workers.push((*kind, f.worker(&name, &name, 1).await));
        }
        Sim {
            f,
            workers,
            held: Vec::new(),
            now: T0,
            rng: seed | 1,
        }
    }

    fn next(&mut self, n: u64) -> u64 {
        // xorshift64*: enough for picking.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    /// One step: a random worker asks for work, or answers one of its
    /// leases, or the clock moves on and the sweeps run. Returns whether
    /// anything was leased or answered.
    async fn step(&mut self) -> bool {
        match self.next(4) {
            0 | 1 => {
                let w = self.next(self.workers.len() as u64) as usize;
                let leases = self.f.lease(&self.workers[w].1, 2, self.now).await;
                let any = !leases.is_empty();
                self.held.extend(leases.into_iter().map(|l| (w, l)));
                any
            }
            2 if !self.held.is_empty() => {
                let i = self.next(self.held.len() as u64) as usize;
                let (w, lease) = self.held.swap_remove(i);
                let (kind, worker) = &self.workers[w];
                let output: Vec<u8> = match kind {
                    Kind::Honest => lease.input.clone(),
                    Kind::Liar => format!("lie {} {}", w, lease.unit_id.0).into_bytes(),
                    Kind::Colluder => b"agreed lie".to_vec(),
                    Kind::Silent => return false,
                };
                self.f
                    .upload(worker, &lease, &output, 100, self.now)
                    .await
                    .is_ok()
            }
            _ => {
                self.now += 1_000 * (1 + self.next(30) as i64);
                self.sweep().await;
                false
            }
        }
    }

    async fn sweep(&self) {
        self.f.store.expire_leases(self.now).await.unwrap();
        self.f.store.sweep_starved(self.now).await.unwrap();
    }

    /// Steps until nothing was leased or answered for a long stretch,
    /// then lets every lease run out, the starvation sweep act and the
    /// day (and with it every daily quota) turn, until the job settles.
    async fn run(&mut self, job: JobId) {
        for _ in 0..60 {
            let mut idle = 0;
            while idle < 120 {
                if self.step().await {
                    idle = 0;
                } else {
                    idle += 1;
                }
            }
            if self.settled(job).await {
                return;
            }
            // Everyone has stopped: leases run out (60 s) and starvation
            // is acted on, if workers keep asking, two lease periods later.
            for _ in 0..3 {
                self.now += 70_000;
                for w in 0..self.workers.len() {
                    let leases = self.f.lease(&self.workers[w].1, 2, self.now).await;
                    self.held.extend(leases.into_iter().map(|l| (w, l)));
                }
                self.sweep().await;
            }
            if self.settled(job).await {
                return;
            }
            // Quotas shrunk by wrong results last until the next day.
            self.now += DAY_MS;
            self.held.clear();
            self.sweep().await;
        }
    }

    async fn settled(&self, job: JobId) -> bool {
        let s = self.f.store.job_status(job).await.unwrap().unwrap();
        s.units_accepted + s.units_failed == s.units_total
    }

    /// The job ended (every unit accepted or failed: reducing, or failed
    /// outright), and every kept count agrees with a recount.
    async fn assert_ended_consistently(&self, job: JobId) {
        let s = self.f.store.job_status(job).await.unwrap().unwrap();
        assert!(
            matches!(s.state, JobState::Reducing | JobState::Failed),
            "the job did not end: {s:?}"
        );
        assert_eq!(s.units_accepted + s.units_failed, s.units_total, "{s:?}");
        self.f.aggregates_agree(job).await;
        let wrong = self.f.store.verify_worker_counters().await.unwrap();
        assert!(wrong.is_empty(), "worker counters disagree: {wrong:?}");
    }
}

fn kinds(honest: usize, liars: usize, colluders: usize, silent: usize) -> Vec<Kind> {
    [
        (Kind::Honest, honest),
        (Kind::Liar, liars),
        (Kind::Colluder, colluders),
        (Kind::Silent, silent),
    ]
    .into_iter()
    .flat_map(|(k, n)| std::iter::repeat_n(k, n))
    .collect()
}

/// The attack that left units open forever: two colluding accounts and
/// three honest workers, quorum 2, at most 5 replicas. Honest replicas
/// outvoted by the colluders were discarded when the colluders were caught
/// elsewhere and did not count against `max_replicas`, while every worker
/// had already held one: the unit could neither finish nor fail.
#[tokio::test]
async fn colluders_outvoting_honest_workers_cannot_leave_a_unit_open_forever() {
    for seed in 1..=8 {
        let mut sim = Sim::new(trust(), &kinds(3, 0, 2, 0), seed).await;
        let job = sim.f.job(40, Validation::quorum(2, 5)).await;
        sim.run(job).await;
        sim.assert_ended_consistently(job).await;
    }
}

/// A unit every active worker has held fails with the reason once two
/// lease periods pass, instead of waiting: quorum 3 with only two workers.
#[tokio::test]
async fn a_unit_no_active_worker_can_take_fails_after_two_lease_periods() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(3, 5)).await;
    let a = f.worker("a", "alice", 1).await;
    let b = f.worker("b", "bob", 1).await;
    for w in [&a, &b] {
        let lease = f.lease(w, 1, T0).await.remove(0);
        f.honest(w, &lease, T0).await;
    }
    // The workers keep asking, and get nothing.
    let ask = |t: i64| {
        let (f, a, b) = (&f, &a, &b);
        async move {
            assert!(f.lease(a, 1, t).await.is_empty());
            assert!(f.lease(b, 1, t).await.is_empty());
        }
    };
    // Noted starved; one lease period (60 s) later it still waits.
    ask(T0).await;
    f.store.sweep_starved(T0).await.unwrap();
    ask(T0 + 60_000).await;
    let (failed, _) = f.store.sweep_starved(T0 + 60_000).await.unwrap();
    assert_eq!(failed, 0);
    // A third worker arrives and could take it: not starved any more.
    let c = f.worker("c", "carol", 1).await;
    f.store.sweep_starved(T0 + 61_000).await.unwrap();
    // It takes it and stops answering; the lease runs out, and nobody is
    // left who may take the unit: two lease periods later it fails.
    let t = T0 + 100_000;
    ask(t).await;
    let _silent = f.lease(&c, 1, t).await.remove(0);
    let t = t + 61_000;
    f.store.expire_leases(t).await.unwrap();
    ask(t).await;
    f.store.sweep_starved(t).await.unwrap();
    ask(t + 119_000).await;
    let (failed, _) = f.store.sweep_starved(t + 119_000).await.unwrap();
    assert_eq!(failed, 0, "not yet two lease periods");
    ask(t + 120_000).await;
    let (failed, _) = f.store.sweep_starved(t + 120_000).await.unwrap();
    assert_eq!(failed, 1);
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Failed);
    let error = s.error.unwrap_or_default();
    assert!(
        error.contains("no active worker can take another"),
        "{error}"
    );
    f.aggregates_agree(job).await;
}

/// With every worker away, nothing starves: the unit waits for them.
#[tokio::test]
async fn a_unit_waits_while_no_worker_asks() {
    let f = open(trust()).await;
    let job = f.job(1, Validation::quorum(3, 5)).await;
    for name in ["a", "b"] {
        let w = f.worker(name, name, 1).await;
        let lease = f.lease(&w, 1, T0).await.remove(0);
        f.honest(&w, &lease, T0).await;
    }
    for minutes in [5, 10, 60] {
        let (failed, _) = f.store.sweep_starved(T0 + minutes * 60_000).await.unwrap();
        assert_eq!(failed, 0);
    }
    let s = f.store.job_status(job).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Running);
}

/// An honest worker outvoted by two colluders is judged invalid; once a
/// colluder is caught and the unit redone, it is judged valid after all:
/// its invalid mark is gone and its votes elsewhere count again.
#[tokio::test]
async fn an_outvoted_honest_worker_is_judged_valid_again_and_keeps_no_invalid_mark() {
    let f = open(trust()).await;
    let first = f.job(1, Validation::quorum(2, 5)).await;
    let honest = f.worker("h", "honest", 1).await;
    let c1 = f.worker("c1", "sybil1", 1).await;
    let c2 = f.worker("c2", "sybil2", 1).await;
    let h2 = f.worker("h2", "helper", 1).await;
    let h3 = f.worker("h3", "helper3", 1).await;
    // The colluders outvote the honest worker.
    let lh = f.lease(&honest, 1, T0).await.remove(0);
    let l1 = f.lease(&c1, 1, T0).await.remove(0);
    f.honest(&honest, &lh, T0).await;
    f.upload(&c1, &l1, b"agreed lie", 100, T0).await.unwrap();
    let l2 = f.lease(&c2, 1, T0).await.remove(0);
    f.upload(&c2, &l2, b"agreed lie", 100, T0).await.unwrap();
    assert_eq!(f.status_of(&honest).await.invalid, 1);
    // On a second job a colluder is caught by two honest workers...
    let second = f.job(1, Validation::quorum(2, 5)).await;
    let l1 = f.lease(&c1, 1, T0).await.remove(0);
    assert_eq!(l1.job_id, second);
    f.upload(&c1, &l1, b"agreed lie", 100, T0).await.unwrap();
    for w in [&h2, &h3] {
        let l = f.lease(w, 1, T0).await.remove(0);
        assert_eq!(l.job_id, second);
        f.honest(w, &l, T0).await;
    }
    // ... which reopens the first job's unit: a new honest replica agrees
    // with the worker that was outvoted.
    let l = f.lease(&h2, 1, T0).await.remove(0);
    assert_eq!(l.job_id, first);
    f.honest(&h2, &l, T0).await;
    let status = f.status_of(&honest).await;
    assert_eq!((status.valid, status.invalid), (1, 0));
    assert_eq!(f.credit_of(&honest).await, 100);
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
    f.aggregates_agree(first).await;
}

/// What the database says of a replica: its state, and whether its unit
/// is accepted with it.
async fn replica_in_db(f: &Fixture, lease: &LeaseRow) -> (String, bool) {
    let url = format!("sqlite://{}", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_as(
        "SELECT r.state, u.accepted_replica IS r.id FROM replicas r JOIN units u ON u.id = r.unit_id
         WHERE r.id = ?",
    )
    .bind(lease.replica_id.0)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

/// An honest worker outvoted by colluders on unit A is caught, which
/// discards its accepted vote on unit B and reopens B; once the colluders
/// are caught and A is redone, it is judged valid on A, and the vote on B
/// counts again (`Settling::restore`): B is accepted on it, and its
/// counters and credit are what a recount gives.
#[tokio::test]
async fn votes_discarded_by_a_catch_that_is_overturned_count_again() {
    let f = open(trust()).await;
    let job_a = f.job(1, Validation::quorum(2, 5)).await;
    let job_b = f.job(1, Validation::quorum(2, 5)).await;
    let w = f.worker("w", "honest", 1).await;
    let c1 = f.worker("c1", "sybil1", 1).await;
    let c2 = f.worker("c2", "sybil2", 1).await;
    let h1 = f.worker("h1", "helper1", 1).await;
    let h2 = f.worker("h2", "helper2", 1).await;
    let h3 = f.worker("h3", "helper3", 1).await;
    let take = async |worker: &WorkerRow, job: JobId| {
        let lease = f.lease(worker, 1, T0).await.remove(0);
        assert_eq!(lease.job_id, job);
        lease
    };
    let wa = take(&w, job_a).await;
    let c1a = take(&c1, job_a).await;
    let wb = take(&w, job_b).await;
    let h1b = take(&h1, job_b).await;
    // B is accepted on w's and h1's word.
    f.honest(&w, &wb, T0).await;
    f.honest(&h1, &h1b, T0).await;
    assert_eq!(f.status_of(&w).await.valid, 1);
    // On A the colluders outvote w: w is caught, and B, which no trusted
    // worker confirmed, is reopened without w's vote.
    f.honest(&w, &wa, T0).await;
    f.upload(&c1, &c1a, b"agreed lie", 100, T0).await.unwrap();
    let c2a = take(&c2, job_a).await;
    f.upload(&c2, &c2a, b"agreed lie", 100, T0).await.unwrap();
    let status = f.status_of(&w).await;
    assert_eq!((status.valid, status.invalid), (0, 1));
    assert_eq!(f.credit_of(&w).await, 0);
    assert_eq!(replica_in_db(&f, &wb).await, ("discarded".into(), false));
    let b = f.store.job_status(job_b).await.unwrap().unwrap();
    assert_eq!((b.state, b.units_accepted), (JobState::Running, 0));
    // B wants a replica in w's place: h2 takes it, and holds it unanswered.
    let h2b = take(&h2, job_b).await;
    // A colluder is caught on a third job by h2 and h3.
    let job_c = f.job(1, Validation::quorum(2, 5)).await;
    let c1c = take(&c1, job_c).await;
    f.upload(&c1, &c1c, b"agreed lie", 100, T0).await.unwrap();
    let h2c = take(&h2, job_c).await;
    f.honest(&h2, &h2c, T0).await;
    let h3c = take(&h3, job_c).await;
    f.honest(&h3, &h3c, T0).await;
    // That reopens A, where a new honest replica agrees with w.
    let a = f.store.job_status(job_a).await.unwrap().unwrap();
    assert_eq!(a.units_accepted, 0, "{a:?}");
    let h3a = take(&h3, job_a).await;
    f.honest(&h3, &h3a, T0).await;
    // w is valid on A after all, and its vote on B counts again: with
    // h1's it is B's quorum, B is accepted on it (the earliest replica),
    // while h2's replica is still running.
    assert_eq!(replica_in_db(&f, &wa).await, ("valid".into(), true));
    assert_eq!(replica_in_db(&f, &wb).await, ("valid".into(), true));
    assert_eq!(replica_in_db(&f, &h1b).await, ("valid".into(), false));
    assert_eq!(replica_in_db(&f, &h2b).await, ("in_progress".into(), false));
    let b = f.store.job_status(job_b).await.unwrap().unwrap();
    assert_eq!((b.state, b.units_accepted), (JobState::Reducing, 1));
    let status = f.status_of(&w).await;
    assert_eq!((status.valid, status.invalid), (2, 0));
    assert_eq!(f.credit_of(&w).await, 200);
    assert_eq!(f.credit_of(&h1).await, 100);
    // h2's late result agrees, and is judged valid too.
    f.honest(&h2, &h2b, T0).await;
    assert_eq!(replica_in_db(&f, &h2b).await, ("valid".into(), false));
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
    for job in [job_a, job_b, job_c] {
        f.aggregates_agree(job).await;
    }
}

/// What the database says of a unit: its state and the quorum it needs.
async fn unit_in_db(f: &Fixture, lease: &LeaseRow) -> (String, i64) {
    let url = format!("sqlite://{}?mode=ro", f.store.path().display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_as(
        "SELECT u.state, COALESCE(u.quorum, j.quorum) FROM units u JOIN jobs j ON j.id = u.job_id
         WHERE u.id = ?",
    )
    .bind(lease.unit_id.0)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

/// As above, but the unit w's catch reopened had no vote left, so a
/// trusted worker took it alone (quorum 1) before w's vote was given back.
/// That vote is not the lone taker's result: the unit needs the job's
/// quorum again (`Settling::restore`), or it would be accepted on w's
/// restored vote alone, unconfirmed, while the trusted worker's replica is
/// still running. It is accepted once that replica agrees.
#[tokio::test]
async fn a_vote_restored_to_a_unit_taken_alone_sends_it_back_to_the_jobs_quorum() {
    let f = open(Trust {
        threshold: 2,
        ..trust()
    })
    .await;
    let w = f.worker("w", "honest", 1).await;
    let t = f.worker("t", "trusted", 1).await;
    let c1 = f.worker("c1", "sybil1", 1).await;
    let c2 = f.worker("c2", "sybil2", 1).await;
    let h2 = f.worker("h2", "helper2", 1).await;
    let h3 = f.worker("h3", "helper3", 1).await;
    let take = async |worker: &WorkerRow, job: JobId| {
        let lease = f.lease(worker, 1, T0).await.remove(0);
        assert_eq!(lease.job_id, job);
        lease
    };
    // w and t earn trust on two units they confirm for each other.
    let proving = f.job(2, Validation::quorum(2, 5)).await;
    for _ in 0..2 {
        let lw = take(&w, proving).await;
        let lt = take(&t, proving).await;
        assert_eq!(lw.unit_id, lt.unit_id);
        f.honest(&w, &lw, T0).await;
        f.honest(&t, &lt, T0).await;
    }
    assert!(f.status_of(&w).await.trusted);
    assert!(f.status_of(&t).await.trusted);
    // Trusted, w takes both units of an adaptive job alone; B is accepted
    // on its word, the other stays running (the job is not audited yet).
    let job_b = f
        .job(
            2,
            Validation {
                adaptive: true,
                ..Validation::quorum(2, 5)
            },
        )
        .await;
    let leases = f.lease(&w, 2, T0).await;
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.job_id == job_b), "{leases:?}");
    let wb = &leases[0];
    f.honest(&w, wb, T0).await;
    assert_eq!(replica_in_db(&f, wb).await, ("valid".into(), true));
    // On A the colluders outvote w: w is caught, and B, which no trusted
    // worker confirmed, is reopened with no vote left.
    let job_a = f.job(1, Validation::quorum(2, 5)).await;
    let wa = take(&w, job_a).await;
    let c1a = take(&c1, job_a).await;
    f.honest(&w, &wa, T0).await;
    f.upload(&c1, &c1a, b"agreed lie", 100, T0).await.unwrap();
    let c2a = take(&c2, job_a).await;
    f.upload(&c2, &c2a, b"agreed lie", 100, T0).await.unwrap();
    assert_eq!(f.status_of(&w).await.invalid, 1);
    assert_eq!(replica_in_db(&f, wb).await, ("discarded".into(), false));
    assert_eq!(unit_in_db(&f, wb).await, ("open".into(), 2));
    // As good as new, B goes to t alone, which holds it unanswered.
    let tb = take(&t, job_b).await;
    assert_eq!(tb.unit_id, wb.unit_id);
    assert_eq!(unit_in_db(&f, wb).await, ("open".into(), 1), "taken alone");
    // A colluder is caught on a third job by h2 and h3, which reopens A,
    // where a new honest replica agrees with w.
    let job_c = f.job(1, Validation::quorum(2, 5)).await;
    let c1c = take(&c1, job_c).await;
    f.upload(&c1, &c1c, b"agreed lie", 100, T0).await.unwrap();
    let h2c = take(&h2, job_c).await;
    f.honest(&h2, &h2c, T0).await;
    let h3c = take(&h3, job_c).await;
    f.honest(&h3, &h3c, T0).await;
    let h3a = take(&h3, job_a).await;
    f.honest(&h3, &h3a, T0).await;
    assert_eq!(replica_in_db(&f, &wa).await, ("valid".into(), true));
    // w's vote on B counts again, but alone it is no quorum: B waits, at
    // the job's quorum, for t's replica still running.
    assert_eq!(
        unit_in_db(&f, wb).await,
        ("open".into(), 2),
        "B is not accepted on the restored vote alone while t's replica runs"
    );
    assert_eq!(replica_in_db(&f, wb).await, ("returned".into(), false));
    assert_eq!(replica_in_db(&f, &tb).await, ("in_progress".into(), false));
    let b = f.store.job_status(job_b).await.unwrap().unwrap();
    assert_eq!(b.units_accepted, 0, "{b:?}");
    // t agrees: B is accepted on both votes, w's the earliest.
    f.honest(&t, &tb, T0).await;
    assert_eq!(unit_in_db(&f, wb).await, ("accepted".into(), 2));
    assert_eq!(replica_in_db(&f, wb).await, ("valid".into(), true));
    assert_eq!(replica_in_db(&f, &tb).await, ("valid".into(), false));
    let b = f.store.job_status(job_b).await.unwrap().unwrap();
    assert_eq!(b.units_accepted, 1, "{b:?}");
    let status = f.status_of(&w).await;
    assert_eq!((status.valid, status.invalid), (4, 0));
    let wrong = f.store.verify_worker_counters().await.unwrap();
    assert!(wrong.is_empty(), "{wrong:?}");
    for job in [proving, job_a, job_b, job_c] {
        f.aggregates_agree(job).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random populations (honest, lying, colluding and silent workers),
    /// random policies and a random order of requests, answers and clock
    /// moves: the job always ends, and counters always recount.
    #[test]
    fn every_job_ends_and_counters_recount(
        honest in 1usize..5,
        liars in 0usize..3,
        colluders in 0usize..4,
        silent in 0usize..2,
        quorum in 1u32..4,
        extra in 0u32..4,
        adaptive in any::<bool>(),
        units in 1usize..25,
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let trust = Trust { threshold: 3, spot_check: 0.2, seed: Some(seed), ..Trust::default() };
            let mut sim = Sim::new(trust, &kinds(honest, liars, colluders, silent), seed).await;
            let validation = Validation {
                adaptive,
                ..Validation::quorum(quorum, quorum + extra)
            };
            let job = sim.f.job(units, validation).await;
            sim.run(job).await;
            sim.assert_ended_consistently(job).await;
        });
    }
}
