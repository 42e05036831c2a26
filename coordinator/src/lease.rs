//! Lease policy: when a lease is live, how a heartbeat extends it, and
//! which leases a worker no longer has. One rule for every path that asks
//! (an upload, a heartbeat, a release, the expiry sweep): a lease is live
//! up to and including its deadline, and from the next millisecond on it
//! is gone, whether or not the sweep has marked it yet.
//!
//! Extensions are earned, like leases: a heartbeat's fuel is believed only
//! as far as the worker's proven speed (its fastest valid result, see
//! [`proven_speed`]) allows, with [`SPEED_SLACK`], and no lease outlives the
//! time its job's whole fuel limit would take at that speed. A worker with
//! no valid result yet has proven nothing: its reports are shown as
//! progress but buy no time past the first lease period (a fresh
//! registration is free, so whatever it may claim, a crowd of them may).

use protocol::{MAX_LEASE_PERIODS, ReplicaId};
use std::collections::HashSet;

/// Whether a lease with this deadline is still held at `now`.
pub fn is_live(deadline_ms: i64, now: i64) -> bool {
    now <= deadline_ms
}

/// How far a worker may exceed its proven speed: reported progress up to
/// twice what its fastest valid result showed (a faster unit, a quieter
/// machine), and a lease up to twice the time its job's fuel limit takes at
/// that speed (a slower unit, a busier machine). Beyond that, a report is
/// not progress.
pub const SPEED_SLACK: i64 = 2;

/// The speed, in fuel per second, that a valid result using `fuel` proves:
/// its fuel over the time from its lease to its return (at least 1 ms).
/// Time queued and on the network counts, so it never overstates what the
/// worker did. `None`: no fuel, nothing proven.
pub fn proven_speed(fuel: i64, leased_ms: i64, returned_ms: i64) -> Option<i64> {
    if fuel <= 0 {
        return None;
    }
    let ms = (returned_ms - leased_ms).max(1);
    Some(saturate(i128::from(fuel) * 1000 / i128::from(ms)))
}

/// One replica's lease, as a heartbeat sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub leased_ms: i64,
    pub deadline_ms: i64,
    pub period_ms: i64,
    /// The job's fuel limit: no run uses more.
    pub fuel_limit: i64,
    /// The progress last stored, and when (`None`: none yet, counted from
    /// the lease).
    pub progress_fuel: Option<i64>,
    pub progress_ms: Option<i64>,
}

/// What a heartbeat's report does to one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// The lease has run out (though perhaps not yet swept), whatever the
    /// report: the replica is no longer the worker's.
    Gone,
    /// Still held, until `deadline_ms`; `progress`: the fuel to store as
    /// the replica's progress (`None`: no progress, nothing stored).
    Held {
        deadline_ms: i64,
        progress: Option<i64>,
    },
    /// Still held, deadline unchanged, nothing stored: the report claims
    /// more fuel than the worker's proven speed allows since its last
    /// stored progress (`allowed` at most).
    Implausible { deadline_ms: i64, allowed: i64 },
}

/// What a report of `reported` fuel at `now` does to `lease`, from a
/// worker whose proven speed is `speed` (fuel per second; `None`: no valid
/// result yet).
///
/// - A lapsed lease is not revived; fuel no higher than the last stored
///   progress changes nothing.
/// - Unproven: the fuel is stored (shown as progress), the deadline stays.
/// - Proven: progress since the last stored report (or the lease) of more
///   than `SPEED_SLACK × speed × time` is implausible and changes nothing.
///   Plausible progress buys a lease period from now, never more than
///   [`MAX_LEASE_PERIODS`] periods after the lease was granted, nor past
///   the time the job's whole fuel limit takes at `speed / SPEED_SLACK`
///   ([`latest_deadline`]), and never an earlier deadline.
pub fn heartbeat(lease: &Held, speed: Option<i64>, reported: u64, now: i64) -> Beat {
    if !is_live(lease.deadline_ms, now) {
        return Beat::Gone;
    }
    let deadline_ms = lease.deadline_ms;
    // No run uses more than the job's fuel limit.
    let fuel = reported.min(lease.fuel_limit.max(0) as u64) as i64;
    let before = lease.progress_fuel.unwrap_or(0);
    if fuel <= before {
        return Beat::Held {
            deadline_ms,
            progress: None,
        };
    }
    let Some(speed) = speed.filter(|s| *s > 0) else {
        return Beat::Held {
            deadline_ms,
            progress: Some(fuel),
        };
    };
    let since = lease.progress_ms.unwrap_or(lease.leased_ms);
    let gain =
        i128::from(SPEED_SLACK) * i128::from(speed) * i128::from((now - since).max(0)) / 1000;
    let allowed = saturate(i128::from(before) + gain);
    if fuel > allowed {
        return Beat::Implausible {
            deadline_ms,
            allowed,
        };
    }
    let latest = latest_deadline(lease, speed);
    Beat::Held {
        deadline_ms: deadline_ms.max((now.saturating_add(lease.period_ms)).min(latest)),
        progress: Some(fuel),
    }
}

/// The latest deadline heartbeats can give a lease held by a worker of
/// proven `speed`: [`MAX_LEASE_PERIODS`] periods after it was granted, and
/// no later than the job's whole fuel limit takes at `speed` with
/// [`SPEED_SLACK`].
pub fn latest_deadline(lease: &Held, speed: i64) -> i64 {
    let cap = lease
        .leased_ms
        .saturating_add(MAX_LEASE_PERIODS.saturating_mul(lease.period_ms));
    let whole = i128::from(SPEED_SLACK) * i128::from(lease.fuel_limit.max(0)) * 1000
        / i128::from(speed.max(1));
    cap.min(saturate(i128::from(lease.leased_ms) + whole))
}

fn saturate(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The leases a worker holds at the coordinator (`in_flight`) that it no
/// longer has (`held`, its own list): lost in a crash before their answer
/// reached it, or held by its process before a restart. They are given
/// back at once, not timed out against the worker.
pub fn orphaned(in_flight: &[ReplicaId], held: &[ReplicaId]) -> Vec<ReplicaId> {
    let held: HashSet<ReplicaId> = held.iter().copied().collect();
    in_flight
        .iter()
        .copied()
        .filter(|r| !held.contains(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_the_worker_does_not_name_are_orphaned() {
        let ids = |v: &[i64]| v.iter().copied().map(ReplicaId).collect::<Vec<_>>();
        assert_eq!(orphaned(&ids(&[1, 2, 3]), &ids(&[3, 1, 9])), ids(&[2]));
        assert_eq!(orphaned(&ids(&[1, 2]), &[]), ids(&[1, 2]));
        assert!(orphaned(&[], &ids(&[5])).is_empty());
    }

    const PERIOD: i64 = 1_000;

    /// Leased at 0 for one period, nothing reported yet.
    fn held(fuel_limit: i64) -> Held {
        Held {
            leased_ms: 0,
            deadline_ms: PERIOD,
            period_ms: PERIOD,
            fuel_limit,
            progress_fuel: None,
            progress_ms: None,
        }
    }

    fn kept(deadline_ms: i64, progress: Option<i64>) -> Beat {
        Beat::Held {
            deadline_ms,
            progress,
        }
    }

    /// A fuel limit no worker of these tests' speeds gets near.
    const LOTS: i64 = 1 << 50;

    #[test]
    fn a_lease_is_live_through_its_deadline_and_gone_after() {
        assert!(is_live(1_000, 999));
        assert!(is_live(1_000, 1_000));
        assert!(!is_live(1_000, 1_001));
    }

    #[test]
    fn a_valid_result_proves_its_fuel_over_the_time_from_lease_to_return() {
        assert_eq!(proven_speed(1_000_000, 0, 10_000), Some(100_000));
        // Returned in the millisecond it was leased: counted as 1 ms.
        assert_eq!(proven_speed(5, 7, 7), Some(5_000));
        assert_eq!(proven_speed(5, 7, 3), Some(5_000));
        // No fuel proves nothing; no figure overflows.
        assert_eq!(proven_speed(0, 0, 10), None);
        assert_eq!(proven_speed(i64::MAX, 0, 0), Some(i64::MAX));
    }

    #[test]
    fn plausible_progress_buys_a_period_from_now_up_to_the_cap() {
        // 1,000 fuel/s proven: at 500 ms, up to 2 × 500 fuel is plausible.
        let beat = heartbeat(&held(LOTS), Some(1_000), 1_000, 500);
        assert_eq!(beat, kept(1_500, Some(1_000)));
        // Near the cap: never past MAX_LEASE_PERIODS periods after leasing.
        let cap = MAX_LEASE_PERIODS * PERIOD;
        let lease = Held {
            deadline_ms: cap - 100,
            progress_fuel: Some(10),
            progress_ms: Some(cap - 300),
            ..held(LOTS)
        };
        assert_eq!(
            heartbeat(&lease, Some(1_000), 20, cap - 200),
            kept(cap, Some(20))
        );
    }

    #[test]
    fn progress_faster_than_twice_the_proven_speed_changes_nothing() {
        // 1,000 fuel/s proven, 500 ms after the lease: 1,000 at most.
        assert_eq!(
            heartbeat(&held(LOTS), Some(1_000), 1_001, 500),
            Beat::Implausible {
                deadline_ms: PERIOD,
                allowed: 1_000
            }
        );
        // Counted from the last progress stored: 1,000 at 500 ms, so at
        // 700 ms up to 1,400.
        let lease = Held {
            progress_fuel: Some(1_000),
            progress_ms: Some(500),
            deadline_ms: 1_500,
            ..held(LOTS)
        };
        assert_eq!(
            heartbeat(&lease, Some(1_000), 1_400, 700),
            kept(1_700, Some(1_400))
        );
        assert_eq!(
            heartbeat(&lease, Some(1_000), 1_401, 700),
            Beat::Implausible {
                deadline_ms: 1_500,
                allowed: 1_400
            }
        );
        // In the same millisecond as the last report, no progress is
        // plausible; a report beyond the fuel limit is counted at the limit.
        assert!(matches!(
            heartbeat(&lease, Some(1_000), 1_001, 500),
            Beat::Implausible { .. }
        ));
        let small = Held {
            fuel_limit: 1_200,
            ..lease
        };
        assert_eq!(
            heartbeat(&small, Some(1_000), u64::MAX, 700),
            kept(1_700, Some(1_200))
        );
    }

    #[test]
    fn no_lease_outlives_twice_the_time_its_fuel_limit_takes_at_the_proven_speed() {
        // 1,000 fuel/s proven, a fuel limit of 2,000: 2 s at that speed,
        // so no deadline past 4 s (the cap would be 8 s).
        let limit = 2_000;
        assert_eq!(latest_deadline(&held(limit), 1_000), 4_000);
        assert_eq!(
            latest_deadline(&held(LOTS), 1_000),
            MAX_LEASE_PERIODS * PERIOD
        );
        // Creeping by one fuel each 500 ms is plausible, but buys no time
        // past 4 s: then the lease runs out.
        let mut lease = held(limit);
        let mut fuel = 0;
        let mut now = 0;
        let gone_at = loop {
            now += 500;
            fuel += 1;
            match heartbeat(&lease, Some(1_000), fuel, now) {
                Beat::Held {
                    deadline_ms,
                    progress,
                } => {
                    assert!(deadline_ms <= 4_000);
                    lease.deadline_ms = deadline_ms;
                    lease.progress_fuel = progress;
                    lease.progress_ms = Some(now);
                }
                Beat::Gone => break now,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!((lease.deadline_ms, gone_at), (4_000, 4_500));
        // A faster worker gets less time: 20,000 fuel/s, 200 ms for the
        // whole limit, so the first period is all there is.
        assert_eq!(
            heartbeat(&held(limit), Some(20_000), 10, 500),
            kept(PERIOD, Some(10))
        );
    }

    #[test]
    fn an_unproven_workers_progress_is_shown_but_buys_no_time() {
        assert_eq!(
            heartbeat(&held(LOTS), None, 1 << 40, 500),
            kept(PERIOD, Some(1 << 40))
        );
        assert_eq!(
            heartbeat(&held(LOTS), Some(0), 10, 500),
            kept(PERIOD, Some(10))
        );
    }

    #[test]
    fn no_progress_changes_nothing_and_a_lapsed_lease_is_not_revived() {
        let lease = Held {
            progress_fuel: Some(10),
            progress_ms: Some(100),
            ..held(LOTS)
        };
        assert_eq!(heartbeat(&lease, Some(1_000), 10, 500), kept(PERIOD, None));
        assert_eq!(heartbeat(&lease, Some(1_000), 5, 500), kept(PERIOD, None));
        assert_eq!(heartbeat(&lease, Some(1_000), 20, 1_001), Beat::Gone);
        assert_eq!(heartbeat(&lease, None, 20, 1_001), Beat::Gone);
        // An extension never moves a deadline earlier.
        let long = Held {
            deadline_ms: 5_000,
            ..held(LOTS)
        };
        assert_eq!(
            heartbeat(&long, Some(1_000), 10, 500),
            kept(5_000, Some(10))
        );
    }
}
