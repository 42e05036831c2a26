//! Credit policy: a valid replica earns its agreed fuel (1 credit = 10^9
//! fuel, [`FUEL_PER_CREDIT`]), kept as a total and as a recent average with
//! a half-life of 7 days. Pure arithmetic: the store adds what these return.
//!
//! The recent average is stored as one growing number per row, so adding
//! credit needs no read: credit granted at time t is stored as
//! `credit × 2^((t − EPOCH) / H)`, and the sum is scaled back by
//! `2^(−(now − EPOCH) / H)` when read.

use protocol::FUEL_PER_CREDIT;

const RECENT_HALF_LIFE_MS: f64 = 7.0 * 86_400_000.0;
/// 2026-01-01T00:00:00Z.
const RECENT_EPOCH_MS: f64 = 1_767_225_600_000.0;

fn growth(now: i64) -> f64 {
    ((now as f64 - RECENT_EPOCH_MS) / RECENT_HALF_LIFE_MS).exp2()
}

/// The fuel a valid replica is credited: its agreed fuel when it returned
/// an output. A valid failure (the unit fails) earns nothing, and neither
/// does a replica of a job validated with `compare`, whose equivalent
/// outputs may take different fuel (so no fuel was agreed). Backtracking
/// takes back exactly this.
pub fn granted(compare: bool, output: bool, fuel_used: i64) -> i64 {
    if output && !compare {
        fuel_used.max(0)
    } else {
        0
    }
}

/// Credits for `fuel`.
pub fn credits(fuel: i64) -> f64 {
    fuel as f64 / FUEL_PER_CREDIT
}

/// What to add to the stored recent-credit sum for `fuel` granted at `now`
/// (negative fuel takes credit back).
pub fn recent_increment(fuel: i64, now: i64) -> f64 {
    credits(fuel) * growth(now)
}

/// Credits per day, from the stored recent-credit sum, as of `now`.
pub fn recent_per_day(stored: f64, now: i64) -> f64 {
    // The decayed sum of credits, divided by the mean age weight of an
    // exponential average with half-life H: ln 2 / H per day.
    stored / growth(now) * std::f64::consts::LN_2 / 7.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn recent_credit_halves_in_seven_days() {
        let stored = recent_increment(7 * FUEL_PER_CREDIT as i64, NOW);
        let today = recent_per_day(stored, NOW);
        let in_a_week = recent_per_day(stored, NOW + 7 * DAY);
        assert!(
            (today / in_a_week - 2.0).abs() < 1e-9,
            "{today} {in_a_week}"
        );
    }

    #[test]
    fn a_steady_rate_reads_back_as_that_rate() {
        // One credit a day for a year: the average is about one a day.
        let stored: f64 = (0..365)
            .map(|d| recent_increment(FUEL_PER_CREDIT as i64, NOW + d * DAY))
            .sum();
        let rate = recent_per_day(stored, NOW + 364 * DAY);
        assert!((rate - 1.0).abs() < 0.06, "{rate}");
    }

    #[test]
    fn only_agreed_output_fuel_is_credited() {
        assert_eq!(granted(false, true, 500), 500);
        assert_eq!(granted(true, true, 500), 0, "compare: no agreed fuel");
        assert_eq!(granted(false, false, 500), 0, "a valid failure");
    }

    #[test]
    fn taking_credit_back_at_the_time_it_was_granted_cancels_it() {
        let granted = recent_increment(5_000, NOW);
        let refund = recent_increment(-5_000, NOW);
        assert_eq!(granted + refund, 0.0);
        assert_eq!(credits(2 * FUEL_PER_CREDIT as i64), 2.0);
    }
}
