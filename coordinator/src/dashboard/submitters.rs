//! The overview's Submitters section: each submitter's share of the last
//! hour's work beside the share it is owed. Work is accepted units
//! weighted by fuel: each job's units accepted in the hour times its mean
//! fuel per accepted unit (`jobs.fuel_sampled / fuel_samples`), read from
//! the per-second acceptances the database keeps
//! (`store/acceptances.rs`): one unit's fuel, not its replicas'. Owed is
//! the submitter's configured share over the shares of the submitters
//! with jobs running, what fair share steers towards.
//!
//! It is the dearest read of the overview (an hour of acceptances of every
//! job active in it), and an hour's shares move slowly: it is computed
//! once per [`REFRESH_MS`] of the coordinator's clock and shared.

use super::ApiResult;
use super::cache::{Dashboard, Key, shared};
use crate::Coordinator;
use serde::Serialize;
use std::sync::Arc;

/// How far back the section looks.
const HOUR_MS: i64 = 3_600_000;
/// How often it is computed anew.
pub(super) const REFRESH_MS: i64 = 10_000;
/// The most submitters listed (the most work first).
const LISTED: usize = 50;

/// One submitter's work over the hour, as the store reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubmitterWork {
    /// None for jobs that belong to no submitter.
    pub name: Option<String>,
    /// Its configured share.
    pub share: u64,
    pub revoked: bool,
    pub running_jobs: u64,
    /// Units accepted in the hour.
    pub units: u64,
    /// Their fuel, estimated (units times their job's mean fuel per unit).
    pub fuel: f64,
}

/// One submitter's row of the section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct SubmitterShare {
    #[serde(flatten)]
    work: SubmitterWork,
    /// Its part of the hour's work, 0 to 1 (by fuel; by units when no job
    /// has a fuel estimate).
    part_of_work: f64,
    /// Its share over the shares of those with jobs running, 0 to 1; 0
    /// with none running.
    owed: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct Submitters {
    /// The hour: acceptances whose result came back in `from_ms..=to_ms`.
    from_ms: i64,
    to_ms: i64,
    /// What the work is weighed by.
    weighted_by: &'static str,
    units: u64,
    fuel: f64,
    submitters: Vec<SubmitterShare>,
}

/// The section at `now` (as of the last [`REFRESH_MS`] boundary's answer).
pub(super) async fn submitters(
    c: &Coordinator,
    d: &Dashboard,
    now: i64,
) -> ApiResult<Arc<Submitters>> {
    let key: Key = (0, now.div_euclid(REFRESH_MS), 0);
    shared(
        &d.submitters,
        key,
        |_| false,
        async || {
            let from = (now - HOUR_MS).div_euclid(1000) + 1;
            let to = now.div_euclid(1000);
            let work = c.store().work_by_submitter((from, to)).await?;
            Ok(section(work, LISTED, from * 1000, to * 1000 + 999))
        },
    )
    .await
}

/// The section from each submitter's work (the most work first): the
/// parts and the owed shares, of all of them, for the first `listed`.
fn section(mut work: Vec<SubmitterWork>, listed: usize, from_ms: i64, to_ms: i64) -> Submitters {
    let units: u64 = work.iter().map(|w| w.units).sum();
    let fuel: f64 = work.iter().map(|w| w.fuel).sum();
    let by_fuel = fuel > 0.0;
    let owed_total: u64 = work
        .iter()
        .filter(|w| w.running_jobs > 0)
        .map(|w| w.share)
        .sum();
    work.truncate(listed);
    let submitters = work
        .into_iter()
        .map(|w| {
            let part_of_work = match (by_fuel, units) {
                (true, _) => w.fuel / fuel,
                (false, 0) => 0.0,
                (false, _) => w.units as f64 / units as f64,
            };
            let owed = if w.running_jobs > 0 && owed_total > 0 {
                w.share as f64 / owed_total as f64
            } else {
                0.0
            };
            SubmitterShare {
                work: w,
                part_of_work,
                owed,
            }
        })
        .collect();
    Submitters {
        from_ms,
        to_ms,
        weighted_by: if by_fuel { "fuel" } else { "units" },
        units,
        fuel,
        submitters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(name: &str, share: u64, running: u64, units: u64, fuel: f64) -> SubmitterWork {
        SubmitterWork {
            name: Some(name.into()),
            share,
            revoked: false,
            running_jobs: running,
            units,
            fuel,
        }
    }

    #[test]
    fn parts_are_by_fuel_and_owed_shares_are_among_those_with_jobs_running() {
        let s = section(
            vec![
                work("ada", 3, 1, 10, 300.0),
                work("bob", 1, 2, 90, 100.0),
                work("cy", 4, 0, 0, 0.0),
            ],
            10,
            0,
            999,
        );
        assert_eq!(s.weighted_by, "fuel");
        assert_eq!((s.units, s.fuel), (100, 400.0));
        let parts: Vec<(f64, f64)> = s
            .submitters
            .iter()
            .map(|r| (r.part_of_work, r.owed))
            .collect();
        // ada did fewer units but three quarters of the fuel; cy runs
        // nothing, so is owed nothing now.
        assert_eq!(parts, vec![(0.75, 0.75), (0.25, 0.25), (0.0, 0.0)]);
    }

    #[test]
    fn without_fuel_estimates_parts_are_by_units_and_an_idle_hour_has_none() {
        let s = section(
            vec![work("ada", 1, 1, 1, 0.0), work("bob", 1, 1, 3, 0.0)],
            10,
            0,
            999,
        );
        assert_eq!(s.weighted_by, "units");
        assert_eq!(s.submitters[1].part_of_work, 0.75);
        let idle = section(vec![work("ada", 1, 0, 0, 0.0)], 10, 0, 999);
        assert_eq!(idle.submitters[0].part_of_work, 0.0);
        assert_eq!(idle.submitters[0].owed, 0.0);
    }

    #[test]
    fn totals_and_owed_shares_count_the_submitters_not_listed() {
        let s = section(
            vec![
                work("ada", 1, 1, 30, 300.0),
                work("bob", 1, 1, 10, 100.0),
                work("cy", 2, 1, 0, 0.0),
            ],
            2,
            0,
            999,
        );
        assert_eq!(s.submitters.len(), 2);
        assert_eq!((s.units, s.fuel), (40, 400.0));
        // cy, not listed, still runs a job and is owed half.
        assert_eq!(s.submitters[0].owed, 0.25);
    }
}
