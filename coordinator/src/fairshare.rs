//! Fair share: how a lease batch divides its replicas among the running
//! jobs. Pure: the store reads each running job's scheduling state into a
//! [`Runnable`], calls [`plan`], reads the planned jobs' units, and writes
//! back what the replicas actually taken cost ([`Runnable::charge`]).
//!
//! The rule, as start-time fair queuing at two levels:
//! - each submitter has a *pass*: the fuel its jobs were charged, over its
//!   share. The next replica goes to the submitter with the least pass
//!   among those with a job that can take one, so while every submitter
//!   has work, the fuel each gets converges to its share of the whole;
//! - within a submitter, the job of the highest priority goes first, and
//!   jobs of equal priority share by their own pass (the fuel charged to
//!   each);
//! - a replica costs its job's mean fuel per replica as sampled so far
//!   (units differ in size); before the first sample, the mean of the
//!   other jobs' (or 1).
//!
//! A job or submitter that had nothing running starts from the least pass
//! of those running (migration 0018's trigger), so time spent idle is not
//! banked. The plan is work-conserving: a job that cannot take its share
//! leaves it to the others, and nothing is held back while any job can take
//! a replica.

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

/// How many of `total` replicas each job of `jobs` is given (in the same
/// order), one replica at a time by the rule above, and the order in which
/// jobs were first given one (the order their units are offered in).
pub fn plan(jobs: &[Runnable], total: i64) -> (Vec<i64>, Vec<usize>) {
    let mut given = vec![0i64; jobs.len()];
    let mut first = Vec::new();
    if jobs.is_empty() || total <= 0 {
        return (given, first);
    }
    // Submitters, each with its jobs; passes as the batch moves them.
    let mut subs: Vec<(Option<i64>, f64, f64, Vec<usize>)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        match subs.iter_mut().find(|s| s.0 == j.submitter) {
            Some(s) => s.3.push(i),
            None => subs.push((j.submitter, j.submitter_pass, j.share.max(1.0), vec![i])),
        }
    }
    let mut pass: Vec<f64> = jobs.iter().map(|j| j.pass).collect();
    let open = |i: usize, given: &[i64]| jobs[i].cap.is_none_or(|cap| given[i] < cap);
    for _ in 0..total {
        // The submitter of least pass with a job that can take one more.
        let Some(s) = subs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.3.iter().any(|&i| open(i, &given)))
            .min_by(|(_, a), (_, b)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(k, _)| k)
        else {
            break;
        };
        // Its job of highest priority, then least pass, then first read.
        let job = subs[s]
            .3
            .iter()
            .copied()
            .filter(|&i| open(i, &given))
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
        given[job] += 1;
        let (job_fuel, sub_pass) = jobs[job].charge(1);
        pass[job] += job_fuel;
        subs[s].1 += sub_pass;
    }
    (given, first)
}

#[cfg(test)]
mod tests;
