//! Counting primes with a segmented sieve of Eratosthenes.
//!
//! Job input: text `N [UNITS]`: count the primes below N, in UNITS ranges
//! (default 100). A unit input is a range `[lo, hi)` as two u64 LE; a unit
//! output is the count in it as a u64 LE; the job output is the total as
//! text. Primes below 10^8: 5,761,455.

/// Parses the job input `N [UNITS]`.
pub fn parse_job(input: &[u8]) -> Result<(u64, u64), String> {
    let text = std::str::from_utf8(input).map_err(|_| "the job input is not text".to_string())?;
    let mut words = text.split_whitespace();
    let limit = words
        .next()
        .ok_or("the job input is empty: expected `N [UNITS]`")?
        .replace('_', "")
        .parse::<u64>()
        .map_err(|e| format!("N: {e}"))?;
    let units = match words.next() {
        Some(w) => w.parse::<u64>().map_err(|e| format!("UNITS: {e}"))?,
        None => 100,
    };
    if units == 0 || units > limit.max(1) {
        return Err(format!("UNITS must be between 1 and N, got {units}"));
    }
    Ok((limit, units))
}

/// The ranges `[lo, hi)` that together cover `[0, limit)`.
pub fn ranges(limit: u64, units: u64) -> impl Iterator<Item = (u64, u64)> {
    let step = limit.div_ceil(units);
    (0..units)
        .map(move |i| (i * step, ((i + 1) * step).min(limit)))
        .filter(|(lo, hi)| lo < hi)
}

/// How many primes lie in `[lo, hi)`.
pub fn count_primes(lo: u64, hi: u64) -> u64 {
    if hi <= 2 || lo >= hi {
        return 0;
    }
    let lo = lo.max(2);
    let root = isqrt(hi - 1);
    let base = small_primes(root);
    const SEGMENT: u64 = 1 << 16;
    let mut composite = vec![false; SEGMENT as usize];
    let mut count = 0;
    let mut start = lo;
    while start < hi {
        let end = (start + SEGMENT).min(hi);
        composite[..(end - start) as usize].fill(false);
        for &p in &base {
            let p = p as u64;
            let first = (p * p).max(start.div_ceil(p) * p);
            let mut m = first;
            while m < end {
                composite[(m - start) as usize] = true;
                m += p;
            }
        }
        count += composite[..(end - start) as usize]
            .iter()
            .filter(|c| !**c)
            .count() as u64;
        start = end;
    }
    count
}

/// Every prime up to and including `n`.
fn small_primes(n: u64) -> Vec<u32> {
    let n = n as usize;
    let mut composite = vec![false; n + 1];
    let mut primes = Vec::new();
    for i in 2..=n {
        if !composite[i] {
            primes.push(i as u32);
            let mut m = i * i;
            while m <= n {
                composite[m] = true;
                m += i;
            }
        }
    }
    primes
}

fn isqrt(n: u64) -> u64 {
    let mut r = (n as f64).sqrt() as u64;
    while r * r > n {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= n {
        r += 1;
    }
    r
}

pub struct Primes;

impl task_sdk::Task for Primes {
    fn split(&self, input: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let (limit, units) = parse_job(input)?;
        for (lo, hi) in ranges(limit, units) {
            let mut unit = [0u8; 16];
            unit[..8].copy_from_slice(&lo.to_le_bytes());
            unit[8..].copy_from_slice(&hi.to_le_bytes());
            emit(&unit);
        }
        Ok(())
    }

    fn run(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let range: [u8; 16] = input
            .try_into()
            .map_err(|_| "a unit input is 16 bytes: lo and hi as u64 LE".to_string())?;
        let lo = u64::from_le_bytes(range[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(range[8..].try_into().expect("8 bytes"));
        Ok(count_primes(lo, hi).to_le_bytes().to_vec())
    }

    fn reduce(&self, outputs: Vec<&[u8]>) -> Result<Vec<u8>, String> {
        let mut total = 0u64;
        for out in outputs {
            let count: [u8; 8] = out
                .try_into()
                .map_err(|_| "a unit output is a u64 LE".to_string())?;
            total += u64::from_le_bytes(count);
        }
        Ok(format!("{total}\n").into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_known_values() {
        assert_eq!(count_primes(0, 10), 4);
        assert_eq!(count_primes(0, 1_000_000), 78_498);
        let split: u64 = ranges(1_000_000, 7)
            .map(|(lo, hi)| count_primes(lo, hi))
            .sum();
        assert_eq!(split, 78_498);
    }
}
