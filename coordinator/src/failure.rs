//! What a replica's failure tells a scientist beyond its kind: the exit
//! status its message names and the job limit its kind means. Pure: from
//! the stored failure kind and message and the job's limits.

use protocol::{FailureKind, LimitHit, LimitKind, Limits};

/// The exit status of a module that exited non-zero, as its message says
/// (`sandbox::exit_status_in`); None for every other kind of failure.
pub fn exit_status(kind: Option<FailureKind>, message: Option<&str>) -> Option<i32> {
    match kind {
        Some(FailureKind::ExitCode) => message.and_then(sandbox::exit_status_in),
        _ => None,
    }
}

/// The limit of the job a failure of `kind` ran into, with its value.
pub fn limit_hit(kind: Option<FailureKind>, limits: &Limits) -> Option<LimitHit> {
    let (limit, value) = match kind? {
        FailureKind::OutOfFuel => (LimitKind::Fuel, limits.fuel),
        FailureKind::OutOfMemory => (LimitKind::MemoryBytes, limits.memory_bytes),
        FailureKind::OutputTooLarge => (LimitKind::OutputBytes, limits.output_bytes),
        FailureKind::Trap | FailureKind::ExitCode | FailureKind::WorkerError => return None,
    };
    Some(LimitHit { limit, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        fuel: 1_000,
        memory_bytes: 2_000,
        output_bytes: 3_000,
    };

    #[test]
    fn each_limit_kind_names_its_limit_and_its_value() {
        let hit = |k| limit_hit(Some(k), &LIMITS).map(|h| (h.limit, h.value));
        assert_eq!(hit(FailureKind::OutOfFuel), Some((LimitKind::Fuel, 1_000)));
        assert_eq!(
            hit(FailureKind::OutOfMemory),
            Some((LimitKind::MemoryBytes, 2_000))
        );
        assert_eq!(
            hit(FailureKind::OutputTooLarge),
            Some((LimitKind::OutputBytes, 3_000))
        );
        for k in [
            FailureKind::Trap,
            FailureKind::ExitCode,
            FailureKind::WorkerError,
        ] {
            assert_eq!(hit(k), None, "{k:?}");
        }
        assert_eq!(limit_hit(None, &LIMITS), None);
    }

    #[test]
    fn an_exit_status_is_read_only_from_an_exit_code_failure() {
        let m = Some("the module exited with status 2: bad input");
        assert_eq!(exit_status(Some(FailureKind::ExitCode), m), Some(2));
        assert_eq!(exit_status(Some(FailureKind::WorkerError), m), None);
        assert_eq!(exit_status(Some(FailureKind::ExitCode), None), None);
        assert_eq!(
            exit_status(Some(FailureKind::ExitCode), Some("exit 2")),
            None,
            "a message the sandbox did not write names no status"
        );
    }
}
