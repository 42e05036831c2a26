//! How `coordinator status` shows jobs to people: one job with its
//! progress, time left and each failed unit's replicas and how they
//! failed; a line per job for the list. Pure formatting of what the API
//! answers ([`JobStatus`], [`UnitStatus`]).

use protocol::{JobStatus, ReplicaDetail, UnitStatus};
use std::fmt::Write as _;

/// One job, and the failed units given (the first of them), for a reader.
pub fn job(s: &JobStatus, failed: &[UnitStatus]) -> String {
    let mut out = String::new();
    let name = if s.name.is_empty() {
        "(no name)"
    } else {
        &s.name
    };
    let _ = writeln!(out, "job {}  {name}", s.id);
    let row = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "  {key:<10} {value}");
    };
    row(&mut out, "state", s.state.as_str());
    let by = s.submitter.as_deref().unwrap_or("(nobody)");
    row(
        &mut out,
        "submitter",
        &format!("{by}, priority {}", s.priority),
    );
    let settled = s.units_accepted + s.units_failed;
    row(
        &mut out,
        "units",
        &format!(
            "{} of {} settled: {} accepted, {} failed; {} replicas in flight",
            int(settled),
            int(s.units_total),
            int(s.units_accepted),
            int(s.units_failed),
            int(s.replicas_in_progress)
        ),
    );
    if s.units_waiting_for_seasoned > 0 {
        row(
            &mut out,
            "waiting",
            &format!(
                "{} units for a worker of a seasoned account (the account-age rule)",
                int(s.units_waiting_for_seasoned)
            ),
        );
    }
    if let Some(rate) = s.rate_per_s {
        row(
            &mut out,
            "rate",
            &format!("{rate:.2} units accepted/s lately"),
        );
    }
    match (s.state, s.time_left_ms, s.finished_ms) {
        (protocol::JobState::Running, Some(ms), _) => {
            row(&mut out, "time left", &format!("about {}", duration(ms)))
        }
        (protocol::JobState::Running, None, _) => row(
            &mut out,
            "time left",
            "not known yet (no units accepted lately)",
        ),
        (_, _, Some(end)) => row(&mut out, "took", &duration(end - s.created_ms)),
        _ => {}
    }
    if let Some(output) = &s.output {
        let version = match s.output_version {
            v if v > 1 => format!(" (version {v}: backtracking redid units)"),
            _ => String::new(),
        };
        row(&mut out, "output", &format!("blob {output}{version}"));
    }
    if let Some(e) = &s.error {
        row(&mut out, "error", e);
    }
    if s.units_failed > 0 {
        let shown = failed.len() as u64;
        let _ = writeln!(
            out,
            "\nfailed units ({}):",
            if shown < s.units_failed {
                format!("the first {} of {}", int(shown), int(s.units_failed))
            } else {
                int(s.units_failed)
            }
        );
        for u in failed {
            unit(&mut out, u);
        }
        if shown < s.units_failed {
            let _ = writeln!(
                out,
                "  ({} more: coordinator status {} --failed {})",
                int(s.units_failed - shown),
                s.id,
                s.units_failed.min(1000)
            );
        }
    }
    out
}

/// A failed unit and its replicas.
fn unit(out: &mut String, u: &UnitStatus) {
    let why = u.error.as_deref().unwrap_or("no reason recorded");
    let _ = writeln!(out, "  unit {} ({} replicas): {why}", u.index, u.replicas);
    for r in &u.replica_detail {
        replica(out, r);
    }
    let listed = u.replica_detail.len() as u32;
    if listed < u.replicas {
        let _ = writeln!(
            out,
            "    ({} more replicas not listed)",
            u.replicas - listed
        );
    }
}

/// One replica: its state and how it failed, then its message.
fn replica(out: &mut String, r: &ReplicaDetail) {
    let mut line = format!("    replica {:<8} {:<11}", r.id.0, r.state);
    if let Some(kind) = r.failure_kind {
        let _ = write!(line, " {}", kind.as_str());
    } else if r.state == "timed_out" {
        line.push_str(" no answer before the lease ran out");
    }
    if let Some(status) = r.exit_status {
        let _ = write!(line, ", exit status {status}");
    }
    if let Some(hit) = r.limit {
        let _ = write!(
            line,
            ", hit the {} limit of {}",
            hit.limit.as_str(),
            int(hit.value)
        );
    }
    if let Some(fuel) = r.fuel_used {
        let _ = write!(line, ", fuel {}", int(fuel));
    }
    let worker = r.worker_id.to_string();
    let _ = write!(line, ", worker {}", &worker[..8.min(worker.len())]);
    let _ = writeln!(out, "{line}");
    if let Some(m) = &r.message {
        // A message may hold newlines (stderr): one indented line each.
        for l in m.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(out, "        {l}");
        }
    }
}

/// One line of `coordinator status` (every job).
pub fn line(s: &JobStatus) -> String {
    let mut line = format!(
        "{}  {:9}  {:>7}/{:<7} units  {}",
        s.id,
        s.state.as_str(),
        s.units_accepted + s.units_failed,
        s.units_total,
        s.name
    );
    if let Some(by) = &s.submitter {
        let _ = write!(line, "  (by {by}, priority {})", s.priority);
    }
    if let Some(ms) = s.time_left_ms {
        let _ = write!(line, "  about {} left", duration(ms));
    }
    line
}

/// A span of time as the dashboard writes it: `45 s`, `8 min 33 s`,
/// `5 h 2 min`, `3 d 4 h`.
pub fn duration(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    if s < 60 {
        return format!("{s} s");
    }
    let m = s / 60;
    if m < 60 {
        return match s % 60 {
            0 => format!("{m} min"),
            r => format!("{m} min {r} s"),
        };
    }
    let h = m / 60;
    if h < 48 {
        return match m % 60 {
            0 => format!("{h} h"),
            r => format!("{h} h {r} min"),
        };
    }
    format!("{} d {} h", h / 24, h % 24)
}

/// A count with thousands separated: `20,000`.
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{
        BlobHash, FailureKind, JobId, JobState, LimitHit, LimitKind, Limits, ReplicaId, UnitId,
        Validation, WorkerId,
    };

    fn status() -> JobStatus {
        JobStatus {
            id: JobId::random(),
            name: "primes".into(),
            state: JobState::Running,
            module: BlobHash::of(b"m"),
            units_total: 20_000,
            units_accepted: 1_100,
            units_failed: 3,
            replicas_in_progress: 8,
            validation: Validation::quorum(2, 3),
            limits: Limits {
                fuel: 1,
                memory_bytes: 1,
                output_bytes: 1,
            },
            created_ms: 0,
            finished_ms: None,
            output: None,
            error: Some("some units failed; for example: no quorum".into()),
            output_version: 0,
            units_waiting_for_seasoned: 0,
            submitter: Some("ada".into()),
            priority: 1,
            rate_per_s: Some(12.5),
            time_left_ms: Some(513_000),
        }
    }

    fn failed_unit() -> UnitStatus {
        let detail = |id, state: &str, kind, message: Option<&str>| ReplicaDetail {
            id: ReplicaId(id),
            worker_id: WorkerId::random(),
            state: state.into(),
            failure_kind: kind,
            message: message.map(Into::into),
            exit_status: None,
            limit: None,
            fuel_used: Some(20_000_000),
            returned_ms: Some(1),
        };
        UnitStatus {
            id: UnitId(7),
            index: 4,
            state: "failed".into(),
            replicas: 3,
            error: Some("2 replicas agree that the unit fails: out_of_fuel".into()),
            replica_detail: vec![
                ReplicaDetail {
                    limit: Some(LimitHit {
                        limit: LimitKind::Fuel,
                        value: 20_000_000,
                    }),
                    ..detail(
                        11,
                        "valid",
                        Some(FailureKind::OutOfFuel),
                        Some("the module used all its fuel (the job's CPU limit)"),
                    )
                },
                ReplicaDetail {
                    exit_status: Some(3),
                    ..detail(
                        12,
                        "invalid",
                        Some(FailureKind::ExitCode),
                        Some("the module exited with status 3: bad\nsecond line"),
                    )
                },
            ],
        }
    }

    #[test]
    fn a_running_job_shows_its_progress_submitter_and_time_left() {
        let r = job(&status(), &[]);
        assert!(r.contains("running"), "{r}");
        assert!(r.contains("ada, priority 1"), "{r}");
        assert!(
            r.contains("1,103 of 20,000 settled: 1,100 accepted, 3 failed; 8 replicas in flight"),
            "{r}"
        );
        assert!(r.contains("12.50 units accepted/s"), "{r}");
        assert!(r.contains("time left  about 8 min 33 s"), "{r}");
    }

    #[test]
    fn failed_units_show_each_replica_with_its_failure_and_what_is_not_listed() {
        let r = job(&status(), &[failed_unit()]);
        assert!(r.contains("failed units (the first 1 of 3):"), "{r}");
        assert!(r.contains("unit 4 (3 replicas): 2 replicas agree"), "{r}");
        assert!(
            r.contains("out_of_fuel, hit the fuel limit of 20,000,000, fuel 20,000,000"),
            "{r}"
        );
        assert!(r.contains("exit_code, exit status 3"), "{r}");
        assert!(
            r.contains("        second line"),
            "stderr lines indented: {r}"
        );
        assert!(r.contains("(1 more replicas not listed)"), "{r}");
        assert!(r.contains("(2 more: coordinator status"), "{r}");
    }

    #[test]
    fn a_finished_job_shows_how_long_it_took_and_its_output() {
        let s = JobStatus {
            state: JobState::Done,
            finished_ms: Some(90_000),
            output: Some(BlobHash::of(b"out")),
            output_version: 2,
            units_failed: 0,
            error: None,
            rate_per_s: None,
            time_left_ms: None,
            ..status()
        };
        let r = job(&s, &[]);
        assert!(r.contains("took       1 min 30 s"), "{r}");
        assert!(r.contains("version 2"), "{r}");
        assert!(!r.contains("failed units"), "{r}");
        assert!(!r.contains("time left"), "{r}");
    }

    #[test]
    fn a_line_of_the_list_names_the_submitter_and_the_time_left_when_there_are() {
        let s = status();
        let l = line(&s);
        assert!(l.starts_with(&s.id.to_string()), "{l}");
        assert!(
            l.contains("running       1103/20000   units  primes"),
            "{l}"
        );
        assert!(
            l.ends_with("(by ada, priority 1)  about 8 min 33 s left"),
            "{l}"
        );
        let bare = line(&JobStatus {
            submitter: None,
            time_left_ms: None,
            ..status()
        });
        assert!(bare.ends_with("units  primes"), "{bare}");
    }

    #[test]
    fn durations_and_counts_read_as_the_dashboard_writes_them() {
        assert_eq!(duration(44_600), "45 s");
        assert_eq!(duration(513_000), "8 min 33 s");
        assert_eq!(duration(1_364_000), "22 min 44 s");
        assert_eq!(duration(3_600_000 * 5 + 120_000), "5 h 2 min");
        assert_eq!(duration(3_600_000 * 76), "3 d 4 h");
        assert_eq!(duration(-5), "0 s");
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
    }
}
