//! `--only-when-idle`: run units only while the rest of the computer is
//! quiet.
//!
//! Once a second the worker reads the whole machine's CPU time
//! (`/proc/stat`) and its own (`/proc/self/stat`). The difference is what
//! other programs used. When that goes over the threshold (a share of all
//! cores), the worker pauses at once; it resumes after other programs have
//! stayed under it for the idle period. Its own work never counts as load,
//! so it does not pause itself.

use crate::governor::Governor;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time in clock ticks: the machine's busy and total time, and this
/// process's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub busy: u64,
    pub total: u64,
    pub own: u64,
}

/// Reads `/proc/stat`'s `cpu` line: user nice system idle iowait irq
/// softirq steal (guest time is already inside user and nice).
pub fn parse_machine(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Reads utime + stime from `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in field 2 may hold spaces, so count from its `)`).
pub fn parse_process(proc_pid_stat: &str) -> Option<u64> {
    let after = &proc_pid_stat[proc_pid_stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn sample() -> Option<Sample> {
    let (busy, total) = parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let own = parse_process(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(Sample { busy, total, own })
}

/// Decides, sample by sample, whether the machine is in use.
#[derive(Debug)]
pub struct Detector {
    /// Other programs' share of all CPU time above which the machine is in
    /// use, in (0, 1].
    threshold: f64,
    /// How long it must stay under the threshold before work resumes.
    idle_for: Duration,
    last: Option<Sample>,
    busy_at: Option<Instant>,
}

impl Detector {
    pub fn new(threshold_percent: u8, idle_for: Duration) -> Detector {
        Detector {
            threshold: f64::from(threshold_percent.clamp(1, 100)) / 100.0,
            idle_for,
            last: None,
            busy_at: None,
        }
    }

    /// Other programs' share of the CPU time between the last sample and
    /// this one.
    pub fn others_share(last: Sample, now: Sample) -> f64 {
        let total = now.total.saturating_sub(last.total);
        if total == 0 {
            return 0.0;
        }
        let busy = now.busy.saturating_sub(last.busy);
        let own = now.own.saturating_sub(last.own);
        busy.saturating_sub(own) as f64 / total as f64
    }

    /// Takes a sample taken at `at`; returns whether to stay paused.
    pub fn observe(&mut self, sample: Sample, at: Instant) -> bool {
        let busy = match self.last.replace(sample) {
            // Until the machine has been seen quiet for a while, it is not
            // known to be idle.
            None => true,
            Some(last) => Self::others_share(last, sample) > self.threshold,
        };
        if busy {
            self.busy_at = Some(at);
        }
        match self.busy_at {
            Some(t) if at.duration_since(t) < self.idle_for => true,
            _ => {
                self.busy_at = None;
                false
            }
        }
    }
}

/// Samples the machine every second and pauses or resumes the governor,
/// until the worker that owns the governor is gone.
pub fn watch(governor: Arc<Governor>, mut detector: Detector) -> anyhow::Result<()> {
    if sample().is_none() {
        anyhow::bail!(
            "--only-when-idle needs /proc/stat and /proc/self/stat (Linux); they cannot be read here"
        );
    }
    std::thread::Builder::new()
        .name("idle-watch".into())
        .spawn(move || {
            // Until the worker is gone (nobody else holds the governor).
            while Arc::strong_count(&governor) > 1 {
                if let Some(s) = sample() {
                    let busy = detector.observe(s, Instant::now());
                    if governor.paused().by_load != busy {
                        tracing::info!(
                            in_use = busy,
                            "{}",
                            if busy {
                                "the computer is in use: pausing"
                            } else {
                                "the computer is idle: resuming"
                            }
                        );
                        governor.set_paused(|p| p.by_load = busy);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_files_of_this_machine_parse() {
        let s = sample().expect("/proc is readable here");
        assert!(s.total > 0 && s.busy <= s.total);
    }

    #[test]
    fn a_process_name_with_spaces_and_parentheses_parses() {
        let stat = "42 (my (odd) name) R 1 42 42 0 -1 4194304 100 0 0 0 250 70 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_process(stat), Some(320));
    }

    #[test]
    fn others_load_pauses_at_once_and_resumes_after_the_idle_period() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut d = Detector::new(25, Duration::from_secs(3));
        let mut s = Sample::default();
        let mut step = |busy: u64, own: u64, i: u32| {
            // One second on two cores: 200 ticks.
            s.total += 200;
            s.busy += busy;
            s.own += own;
            d.observe(s, t0 + sec * i)
        };
        // Not yet known to be idle.
        assert!(step(0, 0, 0));
        // Our own full use of both cores is not load.
        assert!(step(200, 200, 1));
        assert!(step(200, 200, 2));
        assert!(!step(200, 200, 3), "quiet for the idle period");
        // Someone else uses one core of two (50% > 25%): pause at once.
        assert!(step(120, 20, 4));
        assert!(step(10, 0, 5));
        assert!(step(10, 0, 6));
        assert!(!step(10, 0, 7), "three quiet seconds later");
    }
}
