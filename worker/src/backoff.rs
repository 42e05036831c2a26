//! Backoff: how long to wait before trying an absent coordinator again
//! (registering, asking for work, uploading), and the wait itself, which a
//! stop cuts short.

use std::time::Duration;
use tokio::sync::watch;

/// Exponential backoff with jitter: 0.5 to 1 times a doubling delay.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    pub(crate) fn new(max: Duration) -> Backoff {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    /// Back to the first, shortest delay (the coordinator answered).
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next delay: jittered so that workers cut off together do not
    /// come back together.
    pub(crate) fn step(&mut self) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos());
        self.step_with(nanos)
    }

    /// [`Backoff::step`] with the jitter drawn from `entropy` (its last
    /// three decimal digits).
    fn step_with(&mut self, entropy: u32) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let fraction = 0.5 + (entropy % 1000) as f64 / 2000.0;
        d.mul_f64(fraction)
    }
}

/// Sleeps for `d`, or less if `stop` turns true. Returns whether stopping.
pub(crate) async fn wait(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_maximum_and_start_over_after_a_reset() {
        let mut b = Backoff::new(3 * Duration::from_secs(1));
        // Entropy 999: the longest jitter, 0.9995 of the delay.
        let full: Vec<Duration> = (0..6).map(|_| b.step_with(999)).collect();
        let expected = [250, 500, 1000, 2000, 3000, 3000].map(|ms| (ms * MS).mul_f64(0.9995));
        assert_eq!(full, expected);
        b.reset();
        assert_eq!(b.step_with(999), (250 * MS).mul_f64(0.9995));
    }

    #[test]
    fn jitter_is_between_half_and_all_of_the_delay() {
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!(b.step_with(0), 125 * MS, "half of the first delay");
        assert_eq!(
            b.step_with(1000),
            250 * MS,
            "half of the second: only the last three digits count"
        );
        for _ in 0..100 {
            let mut b = Backoff::new(Duration::from_secs(30));
            let d = b.step();
            assert!(d >= 125 * MS && d < 250 * MS, "{d:?}");
        }
    }

    #[tokio::test]
    async fn a_stop_cuts_the_wait_short() {
        let (tx, mut stop) = watch::channel(false);
        assert!(!wait(MS, &mut stop).await, "not stopping");
        let waiting = tokio::spawn(async move { wait(Duration::from_secs(3600), &mut stop).await });
        tx.send(true).unwrap();
        assert!(waiting.await.unwrap(), "stopping");
        let (_tx, mut stopped) = watch::channel(true);
        assert!(
            wait(Duration::from_secs(3600), &mut stopped).await,
            "already stopping"
        );
    }
}
