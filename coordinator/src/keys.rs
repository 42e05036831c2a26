//! `coordinator keys create/list/revoke/set`: the operator's commands on
//! the submitters in the coordinator's own database, beside a running
//! coordinator or without one (a revocation holds from its next request
//! on). Each returns the text it prints, so tests call what the command
//! calls. A key is shown once, by `create`; only its sha256 is kept.

use crate::allowance::Allowance;
use crate::settings::{MAX_STORED_MB_LIMIT, MAX_UNITS_LIMIT};
use crate::store::{NewSubmitter, Revocation, Store, SubmitterChange, SubmitterRow};
use crate::submitter::{FILE_ADMIN, SubmitterName, check_share};
use std::fmt::Write as _;

/// A limit given to `keys set`: a number, or `default` (the coordinator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Default,
    Of(u64),
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Limit, String> {
        if s == "default" {
            return Ok(Limit::Default);
        }
        s.parse().map(Limit::Of).map_err(|_| {
            format!("a limit is a whole number or `default` (the coordinator's), not {s:?}")
        })
    }
}

/// What `keys create` is given.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: SubmitterName,
    pub share: u32,
    pub admin: bool,
    pub max_units: Option<u64>,
    pub max_stored_mb: Option<u64>,
}

/// What `keys create` made: the key (shown once) and a note for the
/// operator on how it is used.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: String,
    pub note: String,
}

fn check_units(n: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(
        n <= MAX_UNITS_LIMIT,
        "--max-units is at most {MAX_UNITS_LIMIT}, not {n}"
    );
    Ok(n)
}

fn check_stored_mb(mb: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(
        mb <= MAX_STORED_MB_LIMIT,
        "--max-stored-mb is at most {MAX_STORED_MB_LIMIT}, not {mb}"
    );
    Ok(mb << 20)
}

/// `keys create`: a new submitter with a fresh key; refused, with nothing
/// changed, for a name taken or the name of the `api-key` file's admin.
pub async fn create(store: &Store, new: &NewKey, now: i64) -> anyhow::Result<CreatedKey> {
    anyhow::ensure!(
        !new.name.is_file_admin(),
        "the name {FILE_ADMIN} is the coordinator's own admin (its key is the api-key file): choose another name"
    );
    let share = check_share(new.share).map_err(anyhow::Error::msg)?;
    let max_units = new.max_units.map(check_units).transpose()?;
    let max_stored_bytes = new.max_stored_mb.map(check_stored_mb).transpose()?;
    let key = crate::api::random_secret();
    let key_hash = crate::api::hash_secret(&key);
    let created = store
        .create_submitter(
            &NewSubmitter {
                name: &new.name,
                key_hash: &key_hash,
                admin: new.admin,
                share,
                max_units,
                max_stored_bytes,
            },
            now,
        )
        .await?;
    anyhow::ensure!(
        created.is_some(),
        "there is a submitter named {} already: choose another name (`coordinator keys list` shows them)",
        new.name
    );
    let role = if new.admin { "an admin" } else { "a submitter" };
    let note = format!(
        "{} is {role} with share {share}. Its API key is above, shown only now (the coordinator keeps its sha256): \
         give it to {} to use as `coordinator submit JOB.toml --coordinator URL --api-key KEY` \
         (or WASM_AT_HOME_API_KEY=KEY), or as `Authorization: Bearer KEY` over HTTP",
        new.name, new.name
    );
    Ok(CreatedKey { key, note })
}

/// A limit as `keys list` shows it: its own, or the default's.
fn limit(own: Option<u64>, default: u64, unit: u64) -> String {
    match own {
        Some(n) => (n / unit).to_string(),
        None => format!("{} (default)", default / unit),
    }
}

/// `keys list`: every submitter (never a key), with its limits over
/// `defaults` and what its unfinished jobs hold against them.
pub async fn list(store: &Store, defaults: &Allowance) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{:20}  {:5}  {:>7}  {:>9}  {:>20}  {:>8}  {:>20}  {:>11}  {:17}  revoked",
        "name",
        "admin",
        "share",
        "in flight",
        "max units",
        "MiB held",
        "max stored MiB",
        "jobs (open)",
        "created"
    )?;
    for l in store.submitters().await? {
        let s = &l.submitter;
        writeln!(
            out,
            "{:20}  {:5}  {:>7}  {:>9}  {:>20}  {:>8}  {:>20}  {:>11}  {:17}  {}",
            s.name,
            if s.admin { "yes" } else { "no" },
            s.share,
            l.usage.units,
            limit(s.max_units, defaults.max_units, 1),
            l.usage.stored_bytes >> 20,
            limit(s.max_stored_bytes, defaults.max_stored_bytes, 1 << 20),
            format!("{} ({})", l.jobs, l.unfinished_jobs),
            utc(s.created_ms),
            s.revoked_ms.map_or_else(|| "-".to_string(), utc)
        )?;
    }
    Ok(out)
}

/// `keys revoke`: the submitter's key is refused from the next request
/// on; its jobs stay (an admin may cancel them).
pub async fn revoke(store: &Store, name: &SubmitterName, now: i64) -> anyhow::Result<String> {
    match store.revoke_submitter(name, now).await? {
        Revocation::Revoked => Ok(format!(
            "revoked the key of {name}: it is refused from its next request on; its jobs go on (an admin may cancel them)\n"
        )),
        Revocation::Already(ms) => Ok(format!(
            "the key of {name} was revoked already, at {}: nothing changed\n",
            utc(ms)
        )),
        Revocation::Unknown => {
            anyhow::bail!("there is no submitter named {name} (`coordinator keys list` shows them)")
        }
        Revocation::FileAdmin => anyhow::bail!(
            "{FILE_ADMIN} is the coordinator's own admin and cannot be revoked: its key is the data directory's api-key file \
             (or --api-key). To change it, write a new key into that file (or pass another --api-key) and restart \
             `coordinator serve`: the old key is refused from then on"
        ),
    }
}

/// What `keys set` is given: each field set is changed.
#[derive(Clone, Debug, Default)]
pub struct KeyChange {
    pub share: Option<u32>,
    pub max_units: Option<Limit>,
    pub max_stored_mb: Option<Limit>,
}

/// `keys set`: changes a submitter's share or limits (`default` gives a
/// limit back to the coordinator's).
pub async fn set(
    store: &Store,
    name: &SubmitterName,
    change: &KeyChange,
    defaults: &Allowance,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        change.share.is_some() || change.max_units.is_some() || change.max_stored_mb.is_some(),
        "nothing to set: give --share, --max-units or --max-stored-mb"
    );
    let share = change
        .share
        .map(check_share)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let units = |l: Limit| -> anyhow::Result<Option<u64>> {
        match l {
            Limit::Default => Ok(None),
            Limit::Of(n) => check_units(n).map(Some),
        }
    };
    let bytes = |l: Limit| -> anyhow::Result<Option<u64>> {
        match l {
            Limit::Default => Ok(None),
            Limit::Of(mb) => check_stored_mb(mb).map(Some),
        }
    };
    let store_change = SubmitterChange {
        share,
        max_units: change.max_units.map(units).transpose()?,
        max_stored_bytes: change.max_stored_mb.map(bytes).transpose()?,
    };
    let Some(s) = store.set_submitter(name, &store_change).await? else {
        anyhow::bail!("there is no submitter named {name} (`coordinator keys list` shows them)");
    };
    Ok(describe(&s, defaults))
}

fn describe(s: &SubmitterRow, defaults: &Allowance) -> String {
    format!(
        "{}: share {}, max units {}, max stored MiB {}\n",
        s.name,
        s.share,
        limit(s.max_units, defaults.max_units, 1),
        limit(s.max_stored_bytes, defaults.max_stored_bytes, 1 << 20)
    )
}

/// `ms` since the epoch as a UTC date and time to the minute
/// (`2026-05-01 14:03Z`).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00Z");
        assert_eq!(utc(1_800_000_000_000), "2027-01-15 08:00Z");
        assert_eq!(utc(-60_000), "1969-12-31 23:59Z");
    }

    #[test]
    fn limits_are_numbers_or_default() {
        assert_eq!("12".parse::<Limit>(), Ok(Limit::Of(12)));
        assert_eq!("default".parse::<Limit>(), Ok(Limit::Default));
        assert!("-1".parse::<Limit>().unwrap_err().contains("whole number"));
        assert!("lots".parse::<Limit>().is_err());
    }
}
