//! What a submitter may hold on the coordinator at once (its allowance),
//! and the check of a submission against it. Pure: the store reads the
//! submitter's usage and applies [`check`] inside the transaction that
//! would store the submission, so a refused one stores nothing and two
//! racing ones cannot both pass.
//!
//! Two limits, each the submitter's own (`coordinator keys set`) or else
//! the coordinator's default (`[submitters]` in the settings):
//!
//! - `max_units`, units in flight: the units of its jobs that are
//!   splitting, running or reducing and neither accepted nor failed (a
//!   splitting job's as its split writes them). A submission adds the units
//!   it lists; a job split by its module adds one at submission (it needs
//!   room for at least one), then its split is refused, and the job
//!   failed, at the batch of units that would pass the limit.
//! - `max_stored_bytes`: for each of its jobs that is splitting, running
//!   or reducing, its module's size plus its input's size (or the total
//!   size of the unit inputs it listed), fixed at submission; a module two
//!   jobs share counts for each. A submission adds its own; a blob upload
//!   larger than the room left is refused before it is stored.

/// The default of `max_units`: ten million units in flight.
pub const DEFAULT_MAX_UNITS: u64 = 10_000_000;

/// The default of `max_stored_bytes`: 64 GiB.
pub const DEFAULT_MAX_STORED_BYTES: u64 = 64 << 30;

/// The limits of one submitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub max_units: u64,
    pub max_stored_bytes: u64,
}

impl Default for Allowance {
    fn default() -> Allowance {
        Allowance {
            max_units: DEFAULT_MAX_UNITS,
            max_stored_bytes: DEFAULT_MAX_STORED_BYTES,
        }
    }
}

impl Allowance {
    /// This allowance (the coordinator's defaults) where a submitter's own
    /// limits (`None`: not set) do not say otherwise.
    pub fn overridden_by(self, max_units: Option<u64>, max_stored_bytes: Option<u64>) -> Allowance {
        Allowance {
            max_units: max_units.unwrap_or(self.max_units),
            max_stored_bytes: max_stored_bytes.unwrap_or(self.max_stored_bytes),
        }
    }
}

/// What a submitter holds now, or what a submission adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub units: u64,
    pub stored_bytes: u64,
}

/// A submission refused by a limit, named in its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error(
        "over the limit max_units of submitter {submitter}: its jobs have {in_flight} units in flight (neither accepted nor failed) and this adds {adding}, past its most of {max}. Wait for its jobs to finish or cancel one, or ask the operator to raise the limit (`coordinator keys set {submitter} --max-units N`)"
    )]
    Units {
        submitter: String,
        in_flight: u64,
        adding: u64,
        max: u64,
    },
    #[error(
        "over the limit max_stored_bytes of submitter {submitter}: its unfinished jobs hold {stored} bytes (modules and inputs) and this adds {adding}, past its most of {max} bytes ({max_mib} MiB). Wait for its jobs to finish or cancel one, or ask the operator to raise the limit (`coordinator keys set {submitter} --max-stored-mb N`)",
        max_mib = max >> 20
    )]
    StoredBytes {
        submitter: String,
        stored: u64,
        adding: u64,
        max: u64,
    },
}

/// Whether `adding` fits in what `submitter` may hold beside its `usage`.
/// Only a limit the submission adds to is checked: a split's units are not
/// refused because the operator lowered the stored-bytes limit meanwhile.
pub fn check(
    submitter: &str,
    allowance: &Allowance,
    usage: Usage,
    adding: Usage,
) -> Result<(), Exceeded> {
    if adding.units > 0 && usage.units.saturating_add(adding.units) > allowance.max_units {
        return Err(Exceeded::Units {
            submitter: submitter.to_string(),
            in_flight: usage.units,
            adding: adding.units,
            max: allowance.max_units,
        });
    }
    if adding.stored_bytes > 0
        && usage.stored_bytes.saturating_add(adding.stored_bytes) > allowance.max_stored_bytes
    {
        return Err(Exceeded::StoredBytes {
            submitter: submitter.to_string(),
            stored: usage.stored_bytes,
            adding: adding.stored_bytes,
            max: allowance.max_stored_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Allowance = Allowance {
        max_units: 10,
        max_stored_bytes: 1000,
    };

    fn usage(units: u64, stored_bytes: u64) -> Usage {
        Usage {
            units,
            stored_bytes,
        }
    }

    #[test]
    fn a_submission_up_to_the_limit_fits_and_one_past_it_is_refused_naming_the_limit() {
        assert_eq!(check("ann", &SMALL, usage(4, 0), usage(6, 1)), Ok(()));
        let e = check("ann", &SMALL, usage(4, 0), usage(7, 1)).unwrap_err();
        assert_eq!(
            e,
            Exceeded::Units {
                submitter: "ann".into(),
                in_flight: 4,
                adding: 7,
                max: 10
            }
        );
        let m = e.to_string();
        assert!(m.contains("max_units") && m.contains("ann"), "{m}");
        assert_eq!(check("ann", &SMALL, usage(0, 400), usage(1, 600)), Ok(()));
        let m = check("ann", &SMALL, usage(0, 400), usage(1, 601))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("max_stored_bytes") && m.contains("most of 1000 bytes"),
            "{m}"
        );
        assert!(m.contains("400 bytes") && m.contains("adds 601"), "{m}");
    }

    #[test]
    fn only_the_limits_a_submission_adds_to_are_checked() {
        // Already past the stored-bytes limit (lowered since): a split's
        // units still fit, a new blob does not.
        assert_eq!(check("ann", &SMALL, usage(0, 5000), usage(3, 0)), Ok(()));
        assert!(check("ann", &SMALL, usage(0, 5000), usage(0, 1)).is_err());
        // Past the units limit: bytes alone (a blob upload) still fit.
        assert_eq!(check("ann", &SMALL, usage(50, 0), usage(0, 10)), Ok(()));
        assert!(check("ann", &SMALL, usage(50, 0), usage(1, 0)).is_err());
    }

    #[test]
    fn a_limit_of_zero_refuses_everything_and_huge_numbers_do_not_overflow() {
        let none = Allowance {
            max_units: 0,
            max_stored_bytes: 0,
        };
        assert!(check("ann", &none, Usage::default(), usage(1, 0)).is_err());
        assert!(check("ann", &none, Usage::default(), usage(0, 1)).is_err());
        assert!(check("ann", &SMALL, usage(u64::MAX, 0), usage(u64::MAX, 0)).is_err());
    }

    #[test]
    fn a_submitters_own_limits_win_over_the_defaults_where_set() {
        let a = Allowance::default().overridden_by(Some(5), None);
        assert_eq!(a.max_units, 5);
        assert_eq!(a.max_stored_bytes, DEFAULT_MAX_STORED_BYTES);
        assert_eq!(
            Allowance::default().overridden_by(None, None),
            Allowance::default()
        );
    }
}
