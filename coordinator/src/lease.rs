//! Lease policy: when a lease is live, how a heartbeat extends it, and
//! which leases a worker no longer has. One rule for every path that asks
//! (an upload, a heartbeat, a release, the expiry sweep): a lease is live
//! up to and including its deadline, and from the next millisecond on it
//! is gone, whether or not the sweep has marked it yet.

use protocol::{MAX_LEASE_PERIODS, ReplicaId};
use std::collections::HashSet;

/// Whether a lease with this deadline is still held at `now`.
pub fn is_live(deadline_ms: i64, now: i64) -> bool {
    now <= deadline_ms
}

/// The deadline of a lease whose worker reports `fuel` used at `now`:
/// progress since the last report buys a full lease period from now, but
/// never more than [`MAX_LEASE_PERIODS`] periods after the lease was
/// granted, and never an earlier deadline; no progress changes nothing.
/// `None`: the lease is no longer live, whatever the report. `Some((d,
/// true))`: progress was made.
pub fn extended_deadline(
    deadline_ms: i64,
    leased_ms: i64,
    period_ms: i64,
    fuel_before: Option<i64>,
    fuel: i64,
    now: i64,
) -> Option<(i64, bool)> {
    if !is_live(deadline_ms, now) {
        return None;
    }
    if fuel <= fuel_before.unwrap_or(0) {
        return Some((deadline_ms, false));
    }
    let latest = leased_ms + MAX_LEASE_PERIODS * period_ms;
    Some((deadline_ms.max((now + period_ms).min(latest)), true))
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

    #[test]
    fn a_lease_is_live_through_its_deadline_and_gone_after() {
        assert!(is_live(1_000, 999));
        assert!(is_live(1_000, 1_000));
        assert!(!is_live(1_000, 1_001));
    }

    #[test]
    fn progress_buys_a_period_from_now_up_to_the_cap() {
        // Leased at 0, deadline 1,000; progress at 500: 1,500.
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, None, 10, 500),
            Some((1_500, true))
        );
        // Near the cap: never past MAX_LEASE_PERIODS periods after leasing.
        let cap = MAX_LEASE_PERIODS * PERIOD;
        assert_eq!(
            extended_deadline(cap - 100, 0, PERIOD, Some(10), 20, cap - 200),
            Some((cap, true))
        );
    }

    #[test]
    fn no_progress_changes_nothing_and_a_lapsed_lease_is_not_revived() {
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, Some(10), 10, 500),
            Some((1_000, false))
        );
        assert_eq!(
            extended_deadline(1_000, 0, PERIOD, Some(10), 20, 1_001),
            None
        );
        // An extension never moves a deadline earlier.
        assert_eq!(
            extended_deadline(5_000, 0, PERIOD, None, 10, 500),
            Some((5_000, true))
        );
    }
}
