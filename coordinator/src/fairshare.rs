//! Fair share: how a lease batch divides its replicas among the running
//! jobs. Pure: the store reads each running job's scheduling state into a
//! [`Runnable`], calls [`plan`], reads the planned jobs' units, and writes
//! back what the replicas actually taken cost ([`Runnable::charge`]).
//!
//! The rule, as start-time fair queuing at two levels:
//! - each submitter has a *pass*: the fuel its jobs were charged, over its
//!   share. The next run of replicas ([`quantum`]) goes to the submitter
//!   with the least pass among those with a job that can take one, so
//!   while every submitter has work, the fuel each gets converges to its
//!   share of the whole;
//! - within a submitter, the job of the highest priority goes first, and
//!   jobs of equal priority share by their own pass (the fuel charged to
//!   each);
//! - a replica costs its job's mean fuel per replica as sampled so far
//!   (units differ in size); before the first sample, the mean of the
//!   other jobs' (or 1).
//!
//! Time a submitter could not be served is not banked: the batch reads a
//! *clock*, the least pass, after the last batch, of the submitters that
//! batch could serve, and a submitter's pass below it counts as the clock
//! ([`lifted`]) and is stored so when it is charged. A job that starts
//! running starts from the least pass of its submitter's jobs at work of
//! its priority (migration 0022's triggers). The plan is work-conserving:
//! a job that cannot take its share
//! leaves it to the others, and nothing is held back while any job can take
//! a replica.

use std::collections::HashMap;

/// A running job as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Runnable {
    /// The submitter it belongs to (`None`: jobs from before submitters,
    /// which share as one submitter of share 1).
    pub submitter: Option<i64>,
    /// The submitter's share: at least 1.
    pub share: f64,
    /// The submitter's pass before this batch.
    pub submitter_pass: f64,
    pub priority: i32,
    /// The job's own pass before this batch.
    pub pass: f64,
    /// The fuel one replica of it is charged.
    pub cost: f64,
    /// The most replicas it can take in this batch, once its units are
    /// read; `None`: not known yet, as many as it is given.
    pub cap: Option<i64>,
}

impl Runnable {
    /// What `taken` replicas add to the job's pass and to its submitter's.
    pub fn charge(&self, taken: i64) -> (f64, f64) {
        let fuel = taken as f64 * self.cost;
        (fuel, fuel / self.share.max(1.0))
    }
}

/// What `taken` replicas of each job add to its submitter's pass, summed
/// per submitter (`None`: the jobs from before submitters).
pub fn submitter_charges<'a>(
    taken: impl IntoIterator<Item = (&'a Runnable, i64)>,
) -> HashMap<Option<i64>, f64> {
    let mut sums: HashMap<Option<i64>, f64> = HashMap::new();
    for (job, n) in taken {
        *sums.entry(job.submitter).or_default() += job.charge(n).1;
    }
    sums
}

/// The fuel a replica of each job is charged: its own sampled mean, or,
/// for jobs not sampled yet, the mean of the sampled ones (1 if none is).
pub fn costs(sampled: &[Option<f64>]) -> Vec<f64> {
    let known: Vec<f64> = sampled
        .iter()
        .flatten()
        .copied()
        .filter(|c| c.is_finite() && *c > 0.0)
        .collect();
    let fallback = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    sampled
        .iter()
        .map(|c| match c {
            Some(c) if c.is_finite() && *c > 0.0 => *c,
            _ => fallback,
        })
        .collect()
}

/// The pass a submitter is served from: its own, or the clock if that is
/// further. A submitter that had nothing it could run (no job, or only
/// units no worker could take) was not charged while the others were, so
/// without this it would take every volunteer until level with them.
pub fn lifted(pass: f64, clock: f64) -> f64 {
    // `f64::max` keeps `pass` when the clock is NaN.
    pass.max(clock)
}

/// The clock after a batch: the least pass of the submitters it could
/// serve (`servable`: those it served, and those it did not reach),
/// never going back. Every submitter that could take work is at or past
/// it, so lifting to it takes nothing from them.
pub fn clock_after(clock: f64, servable: impl IntoIterator<Item = f64>) -> f64 {
    servable
        .into_iter()
        .filter(|p| p.is_finite())
        .min_by(f64::total_cmp)
        .map_or(clock, |least| clock.max(least))
}

/// A submitter's jobs, as [`plan`] moves its pass.
struct Group {
    submitter: Option<i64>,
    pass: f64,
    jobs: Vec<usize>,
    /// Its jobs that can take one more replica.
    open: usize,
}

/// How many replicas a job is given at a time in a batch of `total`: an
/// eighth of the batch, at least 1 and at most 128. The units of one job
/// are neighbours in the database, so a batch that gives a few jobs a run
/// of units each writes far fewer pages than one that gives every job one
/// or two (100 jobs: 65% of one job's throughput one at a time, about 89%
/// by runs; BENCHMARKS.md). Passes still account for every replica, so the
/// shares converge the same: of what a plan hands out, a submitter is
/// ahead by at most one run, and a small batch is still shared among
/// several jobs.
pub fn quantum(total: i64) -> i64 {
    (total / 8).clamp(1, 128)
}

/// How many of `total` replicas each job of `jobs` is given (in the same
/// order), `quantum` replicas at a time (fewer where a job's cap or the
/// total runs out) by the rule above, and the order in which jobs were
/// first given one (the order their units are offered in). Each pick costs
/// the number of submitters plus the picked one's jobs.
pub fn plan(jobs: &[Runnable], total: i64, quantum: i64) -> (Vec<i64>, Vec<usize>) {
    let mut given = vec![0i64; jobs.len()];
    let mut first = Vec::new();
    let is_open = |i: usize, given: &[i64]| jobs[i].cap.is_none_or(|cap| given[i] < cap);
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<Option<i64>, usize> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        let open = usize::from(is_open(i, &given));
        let g = *group_of.entry(j.submitter).or_insert_with(|| {
            groups.push(Group {
                submitter: j.submitter,
                pass: j.submitter_pass,
                jobs: Vec::new(),
                open: 0,
            });
            groups.len() - 1
        });
        groups[g].jobs.push(i);
        groups[g].open += open;
    }
    let mut pass: Vec<f64> = jobs.iter().map(|j| j.pass).collect();
    let mut left = total.max(0);
    while left > 0 {
        // The submitter of least pass with a job that can take one more.
        let Some(g) = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.open > 0)
            .min_by(|(_, a), (_, b)| {
                // Ties: submitters by id, the jobs of none last.
                a.pass
                    .total_cmp(&b.pass)
                    .then(a.submitter.is_none().cmp(&b.submitter.is_none()))
                    .then(a.submitter.cmp(&b.submitter))
            })
            .map(|(k, _)| k)
        else {
            break;
        };
        // Its job of highest priority, then least pass, then first read.
        let job = groups[g]
            .jobs
            .iter()
            .copied()
            .filter(|&i| is_open(i, &given))
            .min_by(|&a, &b| {
                jobs[b]
                    .priority
                    .cmp(&jobs[a].priority)
                    .then(pass[a].total_cmp(&pass[b]))
            })
            .expect("the submitter has an open job");
        if given[job] == 0 {
            first.push(job);
        }
        let room = jobs[job].cap.map_or(i64::MAX, |cap| cap - given[job]);
        let n = quantum.max(1).min(left).min(room);
        given[job] += n;
        left -= n;
        if !is_open(job, &given) {
            groups[g].open -= 1;
        }
        let (job_fuel, sub_pass) = jobs[job].charge(n);
        pass[job] += job_fuel;
        groups[g].pass += sub_pass;
    }
    (given, first)
}

#[cfg(test)]
mod tests;
