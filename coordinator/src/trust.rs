//! Trust policy: when a worker is trusted, the secret spot-check draws, the
//! quorum of a unit given to a worker alone, and how a worker's streak and
//! daily quota follow its results. Pure functions over plain values: the
//! store reads rows, calls these and writes what they decide
//! (ARCHITECTURE.md, "Trust").

use crate::credit;
use crate::validator::{Replica, ReplicaState, Verdict};
use std::sync::Mutex;

/// How the coordinator learns whom to trust.
#[derive(Clone, Debug, PartialEq)]
pub struct Trust {
    /// Valid results in a row after which a worker may get a unit of an
    /// adaptive job alone.
    pub threshold: u64,
    /// The probability that a unit returned by a worker alone is secretly
    /// given a second replica.
    pub spot_check: f64,
    /// A worker's daily lease quota at most, per slot; each error, invalid
    /// result or timeout halves its quota, each valid result doubles it.
    pub daily_quota_per_slot: u64,
    /// Leases a worker may hold at once, per slot it declared (one running,
    /// one queued).
    pub leases_per_slot: u32,
    /// Leases a new worker may hold at once, whatever it declares; each
    /// valid result it returns allows one more, up to `leases_per_slot` ×
    /// slots. Leases are earned: a registration that takes work and never
    /// answers holds this many units, and an honest many-core volunteer
    /// doubles its room with every round of results.
    pub initial_leases: u32,
    /// Seed of the spot-check draws, for reproducible simulations; `None`
    /// draws the seed from the OS.
    pub seed: Option<u64>,
    /// Replicas of a unit also go to distinct networks (/24 for IPv4, /48
    /// for IPv6), against one person's many accounts on one network.
    pub distinct_networks: bool,
    /// The account-age rule, against a crowd of fresh accounts: a unit is
    /// settled by a quorum only if one of its votes came from an account
    /// at least this old when it returned the result (a *seasoned* vote),
    /// unless its job opts out (`Validation::young_accounts`). 0: off.
    pub min_account_age_secs: u64,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            threshold: 10,
            spot_check: 0.18,
            daily_quota_per_slot: 10_000,
            leases_per_slot: 2,
            initial_leases: 4,
            seed: None,
            distinct_networks: true,
            min_account_age_secs: 0,
        }
    }
}

impl Trust {
    /// Refuses settings that would make the policy meaningless, naming the
    /// setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.threshold == 0 {
            return Err(
                "trust.threshold must be at least 1 (0 would trust every new worker)".into(),
            );
        }
        if self.threshold > 1 << 20 {
            return Err(format!(
                "trust.threshold must be at most {} (it doubles per invalid result), not {}",
                1u64 << 20,
                self.threshold
            ));
        }
        if !(0.0..=1.0).contains(&self.spot_check) {
            return Err(format!(
                "trust.spot_check is a probability: between 0 and 1, not {}",
                self.spot_check
            ));
        }
        if self.daily_quota_per_slot == 0 || self.daily_quota_per_slot > 1 << 32 {
            return Err(format!(
                "trust.daily_quota_per_slot must be between 1 and {}, not {}",
                1u64 << 32,
                self.daily_quota_per_slot
            ));
        }
        if !(1..=4096).contains(&self.initial_leases) {
            return Err(format!(
                "trust.initial_leases must be between 1 and 4096, not {}",
                self.initial_leases
            ));
        }
        if !(1..=64).contains(&self.leases_per_slot) {
            return Err(format!(
                "trust.leases_per_slot must be between 1 and 64, not {}",
                self.leases_per_slot
            ));
        }
        if self.min_account_age_secs > MIN_ACCOUNT_AGE_SECS_MAX {
            return Err(format!(
                "trust.min_account_age_secs must be at most {MIN_ACCOUNT_AGE_SECS_MAX} (365 days), not {}",
                self.min_account_age_secs
            ));
        }
        Ok(())
    }

    /// The valid results in a row a worker needs to be trusted: the
    /// threshold, doubled for each result of it judged invalid (at most
    /// [`TRUST_DOUBLINGS_MAX`] times). A worker caught lying earns trust
    /// back slowly: one that lies now and then, or only while trusted,
    /// spends ever longer under quorum, where its lies are caught at once,
    /// and takes ever fewer units alone.
    pub fn streak_needed(&self, invalid: i64) -> i64 {
        (self.threshold as i64) << invalid.clamp(0, i64::from(TRUST_DOUBLINGS_MAX))
    }

    /// Whether a worker of this standing is trusted.
    pub fn trusted(&self, standing: &Standing) -> bool {
        standing.consecutive_valid >= self.streak_needed(standing.invalid)
    }

    /// The largest daily quota of a worker with `slots` slots.
    pub fn full_quota(&self, slots: i64) -> i64 {
        slots.saturating_mul(self.daily_quota_per_slot as i64)
    }

    /// The most leases a worker may hold at once: what its valid results
    /// earned ([`Trust::initial_leases`] plus one per valid result), never
    /// more than its declared slots allow; one while it is caught (judged
    /// invalid and not trusted again since). A worker caught lying does
    /// little of the work until it has earned trust back, which the others,
    /// trusted, do for fewer replicas.
    pub fn lease_cap(&self, standing: &Standing) -> i64 {
        if standing.caught {
            return 1;
        }
        let declared = standing
            .slots
            .saturating_mul(i64::from(self.leases_per_slot));
        let earned = i64::from(self.initial_leases).saturating_add(standing.valid.max(0));
        declared.min(earned)
    }

    /// How many more replicas a worker may lease now: its lease cap less
    /// the leases it holds, and at most what is left of its daily quota.
    pub fn room(&self, standing: &Standing, in_flight: i64, today: i64) -> i64 {
        (self.lease_cap(standing) - in_flight).min(standing.quota_left(self, today))
    }

    /// Whether the account-age rule applies to a job that does or does not
    /// accept young accounts' votes alone.
    pub fn age_rule(&self, young_accounts: bool) -> bool {
        self.min_account_age_secs > 0 && !young_accounts
    }

    /// Whether an account created at `created_ms` is seasoned at `at_ms`:
    /// at least [`Trust::min_account_age_secs`] old (always, with the rule
    /// off). A vote's age is taken when it returned, so a vote cast while
    /// its account was young stays young.
    pub fn seasoned(&self, created_ms: i64, at_ms: i64) -> bool {
        let min_ms = (self.min_account_age_secs as i64).saturating_mul(1000);
        self.min_account_age_secs == 0 || at_ms.saturating_sub(created_ms) >= min_ms
    }
}

/// The largest `trust.min_account_age_secs`: 365 days.
pub const MIN_ACCOUNT_AGE_SECS_MAX: u64 = 365 * 86_400;

/// A worker's stored standing: what the trust policy reads and rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub slots: i64,
    /// Valid results ever returned (what earns lease room).
    pub valid: i64,
    pub consecutive_valid: i64,
    /// Its results judged invalid (less those backtracking took back).
    pub invalid: i64,
    /// Judged invalid and not trusted again since: it holds one lease.
    pub caught: bool,
    /// Its daily quota; 0 for a worker registered before quotas existed,
    /// which has the full quota.
    pub quota: i64,
    /// The day (`now / DAY_MS`) that `leased_today` counts.
    pub quota_day: i64,
    pub leased_today: i64,
}

/// How many times at most the trust threshold doubles for a worker's
/// invalid results ([`Trust::streak_needed`]).
pub const TRUST_DOUBLINGS_MAX: u32 = 6;

/// One day in milliseconds: quotas are per day.
pub const DAY_MS: i64 = 86_400_000;

impl Standing {
    fn quota_or_full(&self, trust: &Trust) -> i64 {
        if self.quota <= 0 {
            trust.full_quota(self.slots)
        } else {
            self.quota
        }
    }

    /// Leases used today.
    pub fn used(&self, today: i64) -> i64 {
        if self.quota_day == today {
            self.leased_today
        } else {
            0
        }
    }

    /// What is left of today's quota.
    pub fn quota_left(&self, trust: &Trust, today: i64) -> i64 {
        self.quota_or_full(trust) - self.used(today)
    }

    /// The standing after the changes of one transaction on day `today`:
    /// the streak either extended or restarted; what is left of today's
    /// quota halved per break (not the whole quota: a busy worker's one
    /// timeout must not leave it less than it already used, locked out for
    /// the day), and the quota doubled per valid result, between the
    /// worker's slots and its full quota.
    pub fn after(&self, delta: &WorkerDelta, trust: &Trust, today: i64) -> Standing {
        let consecutive_valid = if delta.broken {
            delta.streak
        } else {
            self.consecutive_valid + delta.streak
        };
        let full = trust.full_quota(self.slots);
        let quota = self.quota_or_full(trust);
        let halved = if delta.breaks == 0 {
            quota
        } else {
            let used = self.used(today).min(quota);
            used + ((quota - used) >> delta.breaks.min(62))
        };
        let quota = halved
            .saturating_mul(1i64 << delta.gains.min(62))
            .clamp(self.slots.min(full), full);
        let mut after = Standing {
            consecutive_valid,
            invalid: self.invalid + delta.invalid,
            quota,
            ..*self
        };
        // Caught by an invalid judgement, free again once trusted; errors
        // and timeouts neither catch nor free.
        after.caught = (self.caught || delta.invalid > 0) && !trust.trusted(&after);
        after
    }
}

/// The counters of a worker that a broken streak raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Errors,
    Timeouts,
    Invalid,
}

/// What one transaction changes in one worker's row, written once at the
/// end: `+=` on the counters and credit, and the streak and quota changes
/// that [`Standing::after`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkerDelta {
    pub valid: i64,
    pub invalid: i64,
    pub errors: i64,
    pub timeouts: i64,
    /// Fuel credited (negative where backtracking took credit back).
    pub credit: i64,
    /// What that adds to the stored recent-credit sum: each grant and each
    /// refund weighted by the time of the grant ([`credit::recent_increment`]).
    pub recent: f64,
    /// The streak was broken in this transaction: it restarts at `streak`.
    pub broken: bool,
    /// Valid results since the last break (or since the start).
    pub streak: i64,
    pub breaks: u32,
    /// Valid results granted (not counting refunds), for the quota.
    pub gains: u32,
    /// The fastest speed a valid result of this transaction proved, in
    /// fuel per second ([`crate::lease::proven_speed`]; 0: none): the
    /// worker's proven speed becomes at least this.
    pub fastest: i64,
}

impl WorkerDelta {
    /// A valid result worth `credit` fuel, granted at `now`.
    pub fn valid(&mut self, credit: i64, now: i64) {
        self.valid += 1;
        self.credit += credit;
        self.recent += credit::recent_increment(credit, now);
        self.streak += 1;
        self.gains += 1;
    }

    /// A valid result that proved `speed` fuel per second.
    pub fn proved(&mut self, speed: i64) {
        self.fastest = self.fastest.max(speed);
    }

    /// Takes back a valid judgement that backtracking reopened: `credit`
    /// fuel, granted at `granted_ms`.
    pub fn refund(&mut self, credit: i64, granted_ms: i64) {
        self.valid -= 1;
        self.credit -= credit;
        self.recent -= credit::recent_increment(credit, granted_ms);
    }

    /// Takes back an invalid judgement that backtracking reopened. The
    /// streak it broke stays broken: it restarts with the next valid
    /// result (this one's, if it is judged valid after all).
    pub fn unjudge_invalid(&mut self) {
        self.invalid -= 1;
    }

    pub fn broke_streak(&mut self, counter: Counter) {
        match counter {
            Counter::Errors => self.errors += 1,
            Counter::Timeouts => self.timeouts += 1,
            Counter::Invalid => self.invalid += 1,
        }
        self.broken = true;
        self.streak = 0;
        self.breaks += 1;
    }
}

/// The secret spot-check draws: SplitMix64 from a seed the workers never
/// see, so nothing in a request, an answer or its timing tells a worker
/// which of its units are checked.
#[derive(Debug)]
pub struct SpotChecks {
    state: Mutex<u64>,
    rate: f64,
}

impl SpotChecks {
    pub fn new(seed: Option<u64>, rate: f64) -> SpotChecks {
        let seed = seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS random source works");
            u64::from_le_bytes(b)
        });
        SpotChecks {
            state: Mutex::new(seed),
            rate,
        }
    }

    /// Whether the next unit returned alone gets a second replica.
    pub fn draw(&self) -> bool {
        let mut state = self.state.lock().expect("not poisoned");
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.rate
    }
}

/// The quorum a unit needs now, given its stored quorum and its job's:
/// a unit given to a trusted worker alone (`unit_quorum` 1 in a job of a
/// larger quorum) is accepted on that worker's word once its output is
/// back, unless `draw` (the secret spot check, drawn only then) says
/// otherwise; anything else back (a failure, an error, a timeout) sends it
/// to the job's quorum (at least 2). `Some(q)`: the unit's quorum changes
/// to `q`.
pub fn quorum_now(
    unit_quorum: u32,
    job_quorum: u32,
    replicas: &[Replica],
    draw: impl FnOnce() -> bool,
) -> (u32, Option<u32>) {
    if unit_quorum != 1 || job_quorum <= 1 {
        return (unit_quorum, None);
    }
    // A discarded output is no result to settle alone on; but a replica
    // given back or discarded ends the lone taker's turn all the same: the
    // unit then needs the job's quorum (else whoever takes it next, trusted
    // or not, would settle it alone).
    let output_back = replicas.iter().any(|r| {
        r.state != ReplicaState::Discarded && matches!(r.verdict, Some(Verdict::Output { .. }))
    });
    let settled_alone = output_back && !draw();
    if !settled_alone
        && (output_back || replicas.iter().any(|r| r.state != ReplicaState::InProgress))
    {
        let q = job_quorum.max(2);
        return (q, Some(q));
    }
    (unit_quorum, None)
}

#[cfg(test)]
mod tests;
