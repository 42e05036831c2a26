//! The one estimate of a job's time left: the dashboard's overview, its
//! job page and `GET /api/v1/jobs/{id}` (so `coordinator status`) all show
//! this one. Pure: from the job's counts and its units accepted lately,
//! which the database keeps per second (`job_accepted_seconds`, by when
//! the accepted result came back), so every reader at one moment gets the
//! same answer, whoever looked before and whichever page they look at.
//!
//! The rate is the units accepted in the last [`WINDOW_MS`] over that
//! time; for a job whose first acceptance came within the window, over
//! the time since the start of that acceptance's second instead (time
//! spent splitting or waiting for workers is not counted). The time left
//! is the units not yet settled (accepted or failed) at that rate. Failed
//! units are not part of the rate: a job whose units mostly fail is
//! estimated as if they took as long as accepted ones.

/// How far back the rate looks.
pub const WINDOW_MS: i64 = 120_000;
/// The shortest span a rate is measured over: before, no estimate.
pub const MIN_SPAN_MS: i64 = 2_000;

/// A job's units accepted in the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recent {
    /// Units whose accepted result came back in the window.
    pub accepted: u64,
    /// The first second (since the epoch) in the window with one.
    pub first_second: Option<i64>,
}

/// What the estimate of one job is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Whether the job is running (only a running job has a rate).
    pub running: bool,
    pub units_total: u64,
    pub units_accepted: u64,
    pub units_failed: u64,
    pub recent: Recent,
}

impl From<&protocol::JobStatus> for Progress {
    /// A job's counts, with no acceptances read yet.
    fn from(s: &protocol::JobStatus) -> Progress {
        Progress {
            running: s.state == protocol::JobState::Running,
            units_total: s.units_total,
            units_accepted: s.units_accepted,
            units_failed: s.units_failed,
            recent: Recent::default(),
        }
    }
}

/// The estimate: both None when there is none (the job is not running,
/// or nothing was accepted long enough to measure).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Units accepted per second lately.
    pub rate_per_s: Option<f64>,
    /// Milliseconds until every unit is settled at that rate.
    pub time_left_ms: Option<i64>,
}

/// The seconds (since the epoch, both ends included) whose acceptances
/// count at `now`.
pub fn window(now: i64) -> (i64, i64) {
    ((now - WINDOW_MS).div_euclid(1000) + 1, now.div_euclid(1000))
}

/// The estimate for a job at `now`.
pub fn estimate(p: &Progress, now: i64) -> Estimate {
    if !p.running {
        return Estimate::default();
    }
    // Units accepted before the window: the job was at work all through
    // it. Otherwise it started within it, at its first acceptance.
    let span = if p.units_accepted > p.recent.accepted {
        WINDOW_MS
    } else {
        match p.recent.first_second {
            Some(s) => now - s * 1000,
            None => return Estimate::default(),
        }
    };
    if span < MIN_SPAN_MS {
        return Estimate::default();
    }
    let rate = p.recent.accepted as f64 * 1000.0 / span as f64;
    let remaining = p
        .units_total
        .saturating_sub(p.units_accepted + p.units_failed);
    let time_left_ms = match remaining {
        _ if p.units_total == 0 => None,
        0 => Some(0),
        _ if rate > 0.0 => Some((remaining as f64 / rate * 1000.0).round() as i64),
        _ => None,
    };
    Estimate {
        rate_per_s: Some(rate),
        time_left_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn running(total: u64, accepted: u64, failed: u64, recent: Recent) -> Progress {
        Progress {
            running: true,
            units_total: total,
            units_accepted: accepted,
            units_failed: failed,
            recent,
        }
    }

    fn recent(accepted: u64, first_ms_ago: i64) -> Recent {
        Recent {
            accepted,
            first_second: Some((NOW - first_ms_ago) / 1000),
        }
    }

    #[test]
    fn a_young_job_is_measured_from_its_first_acceptance() {
        // Two units accepted, the first 50 s ago (no acceptance before):
        // 2 in 50 s, so the 8 left take 200 s.
        let e = estimate(&running(10, 2, 0, recent(2, 50_000)), NOW);
        assert_eq!(e.rate_per_s, Some(2.0 / 50.0));
        assert_eq!(e.time_left_ms, Some(200_000));
    }

    #[test]
    fn a_job_at_work_before_the_window_is_measured_over_the_whole_window() {
        // 60 in the last 120 s, 1,000 accepted before: 0.5/s.
        let e = estimate(&running(2_000, 1_060, 40, recent(60, 10_000)), NOW);
        assert_eq!(e.rate_per_s, Some(0.5));
        assert_eq!(e.time_left_ms, Some(900 * 2_000), "900 left");
    }

    #[test]
    fn failed_units_are_settled_but_not_part_of_the_rate() {
        let e = estimate(&running(10, 2, 6, recent(2, 50_000)), NOW);
        assert_eq!(e.rate_per_s, Some(0.04));
        assert_eq!(e.time_left_ms, Some(50_000), "2 left at 0.04/s");
    }

    #[test]
    fn there_is_no_estimate_before_anything_was_accepted_or_too_soon_after() {
        assert_eq!(
            estimate(&running(10, 0, 0, Recent::default()), NOW),
            Estimate::default()
        );
        assert_eq!(
            estimate(&running(10, 3, 0, recent(3, 1_000)), NOW),
            Estimate::default(),
            "1 s is too short to measure"
        );
    }

    #[test]
    fn a_job_that_stopped_making_progress_has_a_rate_of_zero_and_no_time_left() {
        let e = estimate(&running(10, 4, 0, Recent::default()), NOW);
        assert_eq!(e.rate_per_s, Some(0.0));
        assert_eq!(e.time_left_ms, None);
    }

    #[test]
    fn a_job_with_every_unit_settled_has_no_time_left_and_one_not_running_no_estimate() {
        let e = estimate(&running(4, 3, 1, recent(4, 10_000)), NOW);
        assert_eq!(e.time_left_ms, Some(0));
        let done = Progress {
            running: false,
            ..running(4, 4, 0, recent(4, 10_000))
        };
        assert_eq!(estimate(&done, NOW), Estimate::default());
    }

    #[test]
    fn the_window_holds_the_seconds_of_the_last_two_minutes() {
        let (from, to) = window(NOW + 400);
        assert_eq!(to, NOW / 1000);
        assert_eq!(from, (NOW + 400 - WINDOW_MS) / 1000 + 1);
        assert_eq!(to - from + 1, WINDOW_MS / 1000, "120 seconds");
    }
}
