//! Placement policy: which worker may take a replica of which unit. A unit
//! has at most one replica per placement key (the worker's account, and
//! its network where replicas must come from distinct networks), its
//! replicas run on one architecture unless its job compares outputs with
//! `compare`, a trusted worker taking a fresh unit of an adaptive job
//! takes it alone, and a unit whose agreeing votes all came from young
//! accounts goes only to a worker of a seasoned account (the account-age
//! rule). Pure: the store reads the head of the queue and who holds
//! what into these values, calls [`take`], and writes the leases.

use std::collections::HashSet;

/// What a unit may have at most one replica per: one account's workers
/// never confirm each other, nor (optionally) one network's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Account(String),
    Net(String),
}

/// A unit at the head of the queue, as a batch of work requests sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub unit: i64,
    /// Replicas it still wants, less those this batch has taken.
    pub needed: i64,
    /// The architecture its replicas run on, once the first is leased.
    pub arch: Option<String>,
    /// Its job uses adaptive replication.
    pub adaptive: bool,
    /// Its job compares outputs with `compare`, so replicas may run on any
    /// architecture.
    pub any_arch: bool,
    /// No replica of it was ever issued, or only replicas whose votes were
    /// discarded: a unit reopened because its worker was caught, with no
    /// vote left, is as good as new (a trusted worker redoes it alone,
    /// for one replica instead of a quorum).
    pub fresh: bool,
    /// Replicas this batch gave out.
    pub taken: i64,
    /// Given to a trusted worker alone.
    pub alone: bool,
    /// `None`: read for the whole batch, whose placement keys on it are
    /// known. `Some(w)`: read for worker `w` alone (past the shared head),
    /// so only `w` is known to be allowed to take it.
    pub read_for: Option<String>,
    /// A quorum of its replicas agree on young accounts' votes alone: it
    /// goes only to a worker of a seasoned account (`units.wants_seasoned`).
    pub seasoned_only: bool,
}

impl Candidate {
    /// A unit as read from the queue, before this batch took anything.
    pub fn new(
        unit: i64,
        needed: i64,
        arch: Option<String>,
        adaptive: bool,
        any_arch: bool,
        fresh: bool,
    ) -> Self {
        Candidate {
            unit,
            needed,
            arch,
            adaptive,
            any_arch,
            fresh,
            taken: 0,
            alone: false,
            read_for: None,
            seasoned_only: false,
        }
    }
}

/// Who is taking units.
#[derive(Clone, Debug)]
pub struct Taker {
    pub worker: String,
    /// Its placement keys: a unit has at most one replica per key.
    pub keys: Vec<Key>,
    pub arch: String,
    pub trusted: bool,
    /// Its account is seasoned now ([`crate::trust::Trust::seasoned`]),
    /// so the vote it returns will be.
    pub seasoned: bool,
}

/// The placement keys already on each unit: (unit, key).
#[derive(Clone, Debug, Default)]
pub struct Held(HashSet<(i64, Key)>);

impl Held {
    pub fn insert(&mut self, unit: i64, key: Key) {
        self.0.insert((unit, key));
    }

    fn any(&self, unit: i64, keys: &[Key]) -> bool {
        // Keys are few (one or two per taker): build the pair per probe.
        keys.iter().any(|k| self.0.contains(&(unit, k.clone())))
    }
}

/// Gives one replica of `c` to `taker` if the unit still wants one, runs on
/// its architecture, has no replica under any of its keys, and wants no
/// seasoned vote that `taker` cannot give. A trusted
/// worker taking a fresh unit of an adaptive job takes it alone (the unit
/// then wants no other replica).
pub fn take(c: &mut Candidate, taker: &Taker, held: &mut Held) -> bool {
    if c.needed <= 0
        || (c.seasoned_only && !taker.seasoned)
        || (!c.any_arch && c.arch.as_deref().is_some_and(|a| a != taker.arch))
        || held.any(c.unit, &taker.keys)
    {
        return false;
    }
    for k in &taker.keys {
        held.insert(c.unit, k.clone());
    }
    // A young account's worker, trusted or not, never takes a unit alone:
    // its lone vote could not settle it under the account-age rule, and a
    // seasoned stranger's differing vote would then outvote it alone.
    if taker.trusted && taker.seasoned && c.adaptive && c.fresh && c.taken == 0 {
        c.needed = 0;
        c.alone = true;
    } else {
        c.needed -= 1;
    }
    c.taken += 1;
    c.arch.get_or_insert_with(|| taker.arch.clone());
    true
}

/// Takes up to `want` units of `pool` for `taker`, in pool order, among
/// those read for the whole batch or for this taker.
pub fn take_from(pool: &mut [Candidate], taker: &Taker, held: &mut Held, want: usize) -> Vec<i64> {
    let mut mine = Vec::new();
    for c in pool.iter_mut() {
        if mine.len() == want {
            break;
        }
        if c.read_for.as_ref().is_none_or(|w| *w == taker.worker) && take(c, taker, held) {
            mine.push(c.unit);
        }
    }
    mine
}

/// [`take_from`] within each job's budget: takes only units whose job
/// (`jobs[i]` for `pool[i]`) has budget left, spending one per replica,
/// so that a batch hands out what the fair-share plan gave each job even
/// when one unit could absorb many replicas. With `spill`, a second pass,
/// if `taker` still wants more, takes any unit (nothing is held back while
/// a unit can be taken); the lease batch spills only once no new plan can
/// give the rest more fairly.
pub fn take_within(
    pool: &mut [Candidate],
    jobs: &[usize],
    budget: &mut [i64],
    taker: &Taker,
    held: &mut Held,
    (want, spill): (usize, bool),
) -> Vec<i64> {
    let mut mine = Vec::new();
    let passes: &[bool] = if spill { &[true, false] } else { &[true] };
    for &within in passes {
        for (c, &job) in pool.iter_mut().zip(jobs) {
            if mine.len() == want {
                return mine;
            }
            if within && budget.get(job).is_none_or(|&b| b <= 0) {
                continue;
            }
            if c.read_for.as_ref().is_none_or(|w| *w == taker.worker) && take(c, taker, held) {
                if let Some(b) = budget.get_mut(job) {
                    *b -= 1;
                }
                mine.push(c.unit);
            }
        }
    }
    mine
}

/// Splits each worker's room among its requests of one batch, in order:
/// (worker, asked) in, granted per request out.
pub fn share_room(
    requests: &[(String, i64)],
    room: &mut std::collections::HashMap<String, i64>,
) -> Vec<i64> {
    requests
        .iter()
        .map(|(worker, asked)| {
            let room = room.entry(worker.clone()).or_default();
            let want = (*asked).min(*room).max(0);
            *room -= want;
            want
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: i64, needed: i64) -> Candidate {
        Candidate::new(id, needed, None, false, false, true)
    }

    fn taker(worker: &str, account: &str, arch: &str) -> Taker {
        Taker {
            worker: worker.into(),
            keys: vec![Key::Account(account.into())],
            arch: arch.into(),
            trusted: false,
            seasoned: true,
        }
    }

    fn young(t: Taker) -> Taker {
        Taker {
            seasoned: false,
            ..t
        }
    }

    #[test]
    fn no_two_replicas_of_a_unit_go_to_one_account() {
        let mut held = Held::default();
        let mut c = unit(1, 2);
        assert!(take(&mut c, &taker("w1", "alice", "x86_64"), &mut held));
        assert!(!take(&mut c, &taker("w2", "alice", "x86_64"), &mut held));
        assert!(take(&mut c, &taker("w3", "bob", "x86_64"), &mut held));
        assert_eq!((c.needed, c.taken), (0, 2));
        assert!(
            !take(&mut c, &taker("w4", "carol", "x86_64"), &mut held),
            "wants no more"
        );
    }

    #[test]
    fn keys_held_before_the_batch_count_too() {
        let mut held = Held::default();
        held.insert(1, Key::Account("alice".into()));
        let mut c = unit(1, 1);
        assert!(!take(&mut c, &taker("w1", "alice", "x86_64"), &mut held));
    }

    #[test]
    fn with_networks_as_keys_one_network_gets_one_replica() {
        let mut held = Held::default();
        let mut c = unit(1, 2);
        let on_net = |w: &str, a: &str| Taker {
            keys: vec![Key::Account(a.into()), Key::Net("10.0.0".into())],
            ..taker(w, a, "x86_64")
        };
        assert!(take(&mut c, &on_net("w1", "alice"), &mut held));
        assert!(!take(&mut c, &on_net("w2", "bob"), &mut held));
        // An account's key and a network's never collide.
        let mut d = unit(2, 2);
        held.insert(2, Key::Net("alice".into()));
        assert!(take(&mut d, &taker("w1", "alice", "x86_64"), &mut held));
    }

    #[test]
    fn replicas_of_a_unit_stay_on_the_first_architecture_unless_compared() {
        let mut held = Held::default();
        let mut c = unit(1, 2);
        assert!(take(&mut c, &taker("w1", "a", "x86_64"), &mut held));
        assert!(!take(&mut c, &taker("w2", "b", "aarch64"), &mut held));
        let mut any = Candidate {
            any_arch: true,
            ..unit(2, 2)
        };
        assert!(take(&mut any, &taker("w1", "a", "x86_64"), &mut held));
        assert!(take(&mut any, &taker("w2", "b", "aarch64"), &mut held));
    }

    #[test]
    fn a_trusted_worker_takes_a_fresh_adaptive_unit_alone() {
        let mut held = Held::default();
        let trusted = Taker {
            trusted: true,
            ..taker("w1", "a", "x86_64")
        };
        let mut c = Candidate {
            adaptive: true,
            ..unit(1, 2)
        };
        assert!(take(&mut c, &trusted, &mut held));
        assert!(c.alone);
        assert_eq!(c.needed, 0);
        // Not fresh (a replica was issued before): no unit alone.
        let mut old = Candidate {
            adaptive: true,
            fresh: false,
            ..unit(2, 2)
        };
        assert!(take(&mut old, &trusted, &mut held));
        assert!(!old.alone);
        assert_eq!(old.needed, 1);
    }

    #[test]
    fn a_unit_read_for_one_worker_goes_to_no_other() {
        let mut held = Held::default();
        let mut pool = vec![Candidate {
            read_for: Some("w1".into()),
            ..unit(1, 2)
        }];
        assert!(take_from(&mut pool, &taker("w2", "b", "x86_64"), &mut held, 1).is_empty());
        assert_eq!(
            take_from(&mut pool, &taker("w1", "a", "x86_64"), &mut held, 1),
            vec![1]
        );
    }

    #[test]
    fn room_is_shared_among_one_workers_requests_in_order() {
        let mut room = std::collections::HashMap::from([("w1".to_string(), 3)]);
        let asks = [
            ("w1".to_string(), 2),
            ("w1".to_string(), 2),
            ("w2".to_string(), 5),
        ];
        assert_eq!(share_room(&asks, &mut room), vec![2, 1, 0]);
    }

    #[test]
    fn take_from_stops_at_want_oldest_first() {
        let mut held = Held::default();
        let mut pool = vec![unit(1, 1), unit(2, 1), unit(3, 1)];
        let got = take_from(&mut pool, &taker("w1", "a", "x86_64"), &mut held, 2);
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn a_unit_wanting_a_seasoned_vote_goes_to_a_seasoned_worker_only() {
        let mut held = Held::default();
        let seasoned = taker("w2", "old", "x86_64");
        let mut pool = vec![
            Candidate {
                seasoned_only: true,
                fresh: false,
                ..unit(1, 1)
            },
            unit(2, 1),
        ];
        // The young worker passes it by and takes the next unit.
        assert_eq!(
            take_from(
                &mut pool,
                &young(taker("w1", "young", "x86_64")),
                &mut held,
                2
            ),
            vec![2]
        );
        assert_eq!(take_from(&mut pool, &seasoned, &mut held, 2), vec![1]);
        assert_eq!(pool[0].needed, 0);
    }

    #[test]
    fn a_young_trusted_worker_takes_no_unit_alone() {
        let mut held = Held::default();
        let trusted_young = young(Taker {
            trusted: true,
            ..taker("w1", "a", "x86_64")
        });
        let mut c = Candidate {
            adaptive: true,
            ..unit(1, 2)
        };
        assert!(take(&mut c, &trusted_young, &mut held));
        assert!(!c.alone);
        assert_eq!(c.needed, 1, "the job's quorum: a seasoned vote can join");
    }
}
