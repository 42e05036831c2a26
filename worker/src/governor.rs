//! How hard the worker may use the computer, and how far each running unit
//! has got.
//!
//! Units run as paced sandbox runs ([`sandbox::Sandbox::run_paced`]): every
//! [`sandbox::SLICE_FUEL`] of fuel the run stops on its own thread and asks
//! the [`Governor`] whether and when to go on. That one stop is where
//! everything a guest on someone else's computer needs happens:
//! - **progress**: the fuel used so far is recorded for the terminal, the
//!   local `worker status` and the heartbeat;
//! - **CPU ceiling**: after a slice that ran for `t`, the slot rests for
//!   `t × (100 − limit) / limit`, so each slot computes `limit`% of the
//!   time (the wall time of a slice includes time the OS gave to other
//!   programs, so under contention the worker uses less, never more);
//! - **pause**: while paused (by the volunteer, or by the machine's own
//!   load with `--only-when-idle`) the run waits at its stop, its memory
//!   kept, using no CPU, and goes on from there on resume;
//! - **abandoning**: a unit the coordinator no longer wants (its lease
//!   went elsewhere, its job ended) or one still running when a stopping
//!   worker's grace period is over ends at its next stop.

use protocol::{JobId, Lease, ReplicaId};
use sandbox::Pace;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// Why the worker is paused, if it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// By the volunteer (`worker pause`); kept across restarts.
    pub by_user: bool,
    /// By other programs' load on the computer (`--only-when-idle`).
    pub by_load: bool,
}

impl Paused {
    pub fn any(self) -> bool {
        self.by_user || self.by_load
    }
}

/// A running unit, as `worker status` and the heartbeat show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningUnit {
    pub replica_id: ReplicaId,
    pub job_id: JobId,
    /// Fuel used so far (a multiple of the slice).
    pub fuel_used: u64,
    /// What a unit of this job takes on average, if known; else the job's
    /// fuel limit is the only bound.
    pub fuel_estimate: Option<u64>,
    pub fuel_limit: u64,
    /// Seconds since the unit started (paused time included).
    pub elapsed_secs: f64,
    /// Fuel per second over the unit's running time so far.
    pub fuel_per_sec: f64,
    /// The lease's deadline, on the coordinator's clock.
    pub deadline_ms: i64,
}

impl RunningUnit {
    /// Progress in 0..=1 against the estimate (capped below 1: a unit past
    /// the average is not done until it is).
    pub fn fraction(&self) -> Option<f64> {
        self.fuel_estimate
            .map(|e| (self.fuel_used as f64 / e.max(1) as f64).min(0.99))
    }

    /// Seconds left at the rate so far, if there is an estimate.
    pub fn eta_secs(&self) -> Option<f64> {
        let estimate = self.fuel_estimate?;
        if self.fuel_per_sec <= 0.0 {
            return None;
        }
        Some(estimate.saturating_sub(self.fuel_used) as f64 / self.fuel_per_sec)
    }
}

#[derive(Debug)]
struct Run {
    job_id: JobId,
    started: Instant,
    fuel_used: u64,
    fuel_estimate: Option<u64>,
    fuel_limit: u64,
    deadline_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    paused: Paused,
    runs: BTreeMap<ReplicaId, Run>,
    abandon: HashSet<ReplicaId>,
    abandon_all: bool,
}

/// Shared by the worker's tasks and its sandbox threads.
#[derive(Debug)]
pub struct Governor {
    /// The share of each slot's time spent computing, in (0, 1].
    duty: f64,
    state: Mutex<State>,
    /// Woken on every pause, resume and abandon.
    wake: Condvar,
    /// The pause state, for the async side.
    paused: watch::Sender<Paused>,
}

impl Governor {
    /// `cpu_limit`: percent of each slot's time spent computing (1..=100).
    pub fn new(cpu_limit: u8, paused: Paused) -> Governor {
        Governor {
            duty: f64::from(cpu_limit.clamp(1, 100)) / 100.0,
            state: Mutex::new(State {
                paused,
                ..State::default()
            }),
            wake: Condvar::new(),
            paused: watch::channel(paused).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn paused(&self) -> Paused {
        self.lock().paused
    }

    /// Follows pauses and resumes.
    pub fn watch_paused(&self) -> watch::Receiver<Paused> {
        self.paused.subscribe()
    }

    /// Changes one reason to pause; returns the new state.
    pub fn set_paused(&self, change: impl FnOnce(&mut Paused)) -> Paused {
        let mut s = self.lock();
        change(&mut s.paused);
        let now = s.paused;
        // Published under the lock, so that two changes at once reach the
        // watchers in the order they were made.
        self.paused.send_if_modified(|p| {
            let changed = *p != now;
            *p = now;
            changed
        });
        drop(s);
        self.wake.notify_all();
        now
    }

    /// Makes a running unit end at its next stop.
    pub fn abandon(&self, replica: ReplicaId) {
        let mut s = self.lock();
        if s.runs.contains_key(&replica) {
            s.abandon.insert(replica);
        }
        drop(s);
        self.wake.notify_all();
    }

    /// Makes every running unit (and any started from now on) end at its
    /// next stop.
    pub fn abandon_all(&self) {
        self.lock().abandon_all = true;
        self.wake.notify_all();
    }

    /// Records the new deadline of a running unit.
    pub fn set_deadline(&self, replica: ReplicaId, deadline_ms: i64) {
        if let Some(run) = self.lock().runs.get_mut(&replica) {
            run.deadline_ms = deadline_ms;
        }
    }

    /// The units running now.
    pub fn running(&self) -> Vec<RunningUnit> {
        let s = self.lock();
        s.runs
            .iter()
            .map(|(id, r)| RunningUnit {
                replica_id: *id,
                job_id: r.job_id,
                fuel_used: r.fuel_used,
                fuel_estimate: r.fuel_estimate,
                fuel_limit: r.fuel_limit,
                elapsed_secs: r.started.elapsed().as_secs_f64(),
                fuel_per_sec: r.fuel_used as f64 / r.started.elapsed().as_secs_f64().max(1e-3),
                deadline_ms: r.deadline_ms,
            })
            .collect()
    }

    /// Registers a unit about to run; the returned pacer drives it and
    /// [`Governor::finish`] ends it.
    pub fn start(self: &Arc<Self>, lease: &Lease) -> impl FnMut(u64) -> Pace + Send + 'static {
        let replica = lease.replica_id;
        self.lock().runs.insert(
            replica,
            Run {
                job_id: lease.job_id,
                started: Instant::now(),
                fuel_used: 0,
                fuel_estimate: lease.fuel_estimate,
                fuel_limit: lease.limits.fuel,
                deadline_ms: lease.deadline_ms,
            },
        );
        let me = self.clone();
        let mut slice_started = Instant::now();
        move |fuel_used| {
            let me = &*me;
            let ran = slice_started.elapsed();
            let rest = ran.mul_f64((1.0 - me.duty) / me.duty);
            let mut s = me.lock();
            if let Some(run) = s.runs.get_mut(&replica) {
                run.fuel_used = fuel_used;
            }
            // Rest for the CPU ceiling; a pause or an abandon cuts it short.
            let rest_until = Instant::now() + rest;
            loop {
                if s.abandon_all || s.abandon.contains(&replica) {
                    return Pace::Stop;
                }
                let now = Instant::now();
                if s.paused.any() {
                    s = me.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                } else if now < rest_until {
                    s = me
                        .wake
                        .wait_timeout(s, rest_until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                } else {
                    break;
                }
            }
            drop(s);
            slice_started = Instant::now();
            Pace::Continue
        }
    }

    /// Forgets a unit that ended.
    pub fn finish(&self, replica: ReplicaId) {
        let mut s = self.lock();
        s.runs.remove(&replica);
        s.abandon.remove(&replica);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{BlobHash, Limits, UnitId};
    use std::time::Duration;

    fn lease(id: i64) -> Lease {
        Lease {
            replica_id: ReplicaId(id),
            unit_id: UnitId(id),
            job_id: JobId(uuid::Uuid::nil()),
            module: BlobHash::of(b""),
            input: Vec::new().into(),
            limits: Limits {
                fuel: 1000,
                memory_bytes: 1,
                output_bytes: 1,
            },
            deadline_ms: 0,
            fuel_estimate: Some(400),
        }
    }

    #[test]
    fn a_paused_unit_waits_at_its_stop_until_resumed() {
        let g = Arc::new(Governor::new(100, Paused::default()));
        g.set_paused(|p| p.by_user = true);
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut pace = g.start(&lease(1));
                tx.send(()).unwrap();
                pace(100)
            })
        };
        rx.recv().unwrap();
        // The unit is registered and stopped at its first stop; the thread
        // can only get past it by a resume.
        assert_eq!(g.running()[0].fuel_estimate, Some(400));
        g.set_paused(|p| p.by_user = false);
        assert_eq!(runner.join().unwrap(), Pace::Continue);
        assert_eq!(g.running()[0].fuel_used, 100);
        assert_eq!(g.running()[0].fraction(), Some(0.25));
        g.finish(ReplicaId(1));
        assert!(g.running().is_empty());
    }

    #[test]
    fn an_abandoned_unit_stops_even_while_paused() {
        let g = Arc::new(Governor::new(100, Paused::default()));
        g.set_paused(|p| p.by_load = true);
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut pace = g.start(&lease(2));
                tx.send(()).unwrap();
                pace(100)
            })
        };
        rx.recv().unwrap();
        g.abandon(ReplicaId(2));
        assert_eq!(runner.join().unwrap(), Pace::Stop);
        g.finish(ReplicaId(2));
    }

    #[test]
    fn the_cpu_ceiling_rests_in_proportion_to_the_work() {
        // At 25%, a slice of 30 ms of work is followed by 90 ms of rest.
        let g = Arc::new(Governor::new(25, Paused::default()));
        let mut pace = g.start(&lease(3));
        let begun = Instant::now();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        assert_eq!(pace(100), Pace::Continue);
        let total = begun.elapsed();
        assert!(total >= Duration::from_millis(120), "{total:?}");
    }
}
