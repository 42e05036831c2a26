//! Who submits jobs, as policy sees them: a submitter's validated name,
//! its share, and the ownership rule. Pure; the store keeps submitters
//! (`store/submitters.rs`), `api/auth.rs` finds the caller's.
//!
//! The ownership rule: a job belongs to the submitter whose key submitted
//! it. Anyone with a key sees every job (reads are public anyway); a job
//! is cancelled only by its own submitter or by an admin.

use std::fmt;
use std::str::FromStr;

/// The admin whose key is the coordinator's `api-key` file (or
/// `--api-key`): created at start, never revoked.
pub const FILE_ADMIN: &str = "admin";

/// The longest name, in characters.
pub const NAME_MAX: usize = 64;

/// A submitter's share at most (the schema's `CHECK`); at least 1.
pub const SHARE_MAX: u32 = 1_000_000;

/// A submitter's name: 1 to [`NAME_MAX`] ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit, so it reads safely in a
/// terminal, a log line and a URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubmitterName(String);

impl SubmitterName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the name of the `api-key` file's admin.
    pub fn is_file_admin(&self) -> bool {
        self.0 == FILE_ADMIN
    }
}

impl fmt::Display for SubmitterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SubmitterName {
    type Err = String;

    fn from_str(s: &str) -> Result<SubmitterName, String> {
        let Some(first) = s.chars().next() else {
            return Err("a submitter's name cannot be empty".into());
        };
        if s.chars().count() > NAME_MAX {
            return Err(format!(
                "a submitter's name is at most {NAME_MAX} characters, not {}",
                s.chars().count()
            ));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(format!(
                "a submitter's name starts with a letter or digit, not {first:?}"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "a submitter's name may use ASCII letters, digits, '.', '_' and '-' only, not {c:?}"
            ));
        }
        Ok(SubmitterName(s.to_string()))
    }
}

/// Checks a share: between 1 and [`SHARE_MAX`].
pub fn check_share(share: u32) -> Result<u32, String> {
    if (1..=SHARE_MAX).contains(&share) {
        Ok(share)
    } else {
        Err(format!("a share is between 1 and {SHARE_MAX}, not {share}"))
    }
}

/// Whether the submitter named `caller` (an admin or not) may cancel a
/// job of the submitter named `owner` (`None`: a job nobody owns, which
/// only admins may touch). Names are unique and never change.
pub fn may_cancel(caller: &str, caller_admin: bool, owner: Option<&str>) -> bool {
    caller_admin || owner == Some(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_names_are_taken_and_others_refused_saying_why() {
        for ok in ["alice", "Lab-7", "a", "j.doe_2", &"x".repeat(NAME_MAX)] {
            assert_eq!(ok.parse::<SubmitterName>().unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(NAME_MAX + 1) as &str, "at most 64"),
            ("-alice", "starts with"),
            (".hidden", "starts with"),
            ("al ice", "' '"),
            ("alice\n", "'\\n'"),
            ("a/b", "'/'"),
            ("zoë", "'ë'"),
        ] {
            let e = bad.parse::<SubmitterName>().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!("admin".parse::<SubmitterName>().unwrap().is_file_admin());
        assert!(!"admins".parse::<SubmitterName>().unwrap().is_file_admin());
    }

    #[test]
    fn shares_are_between_one_and_a_million() {
        assert_eq!(check_share(1), Ok(1));
        assert_eq!(check_share(SHARE_MAX), Ok(SHARE_MAX));
        assert!(check_share(0).unwrap_err().contains("between 1"));
        assert!(check_share(SHARE_MAX + 1).is_err());
    }

    #[test]
    fn a_job_is_cancelled_by_its_submitter_or_an_admin_only() {
        assert!(may_cancel("ann", false, Some("ann")));
        assert!(!may_cancel("bob", false, Some("ann")));
        assert!(may_cancel("bob", true, Some("ann")));
        assert!(!may_cancel("bob", false, None));
        assert!(may_cancel("bob", true, None));
    }
}
