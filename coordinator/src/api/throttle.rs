//! What the edge lets through at once: registrations per client address
//! (a GCRA rate limiter, `[registration] per_minute` and `burst`), large
//! bodies being read at once (a semaphore, `[edge] large_bodies`), and
//! partial outputs streamed at once (a semaphore of
//! `partial_output::PARTIAL_OUTPUTS`). Beyond any, the answer is an error
//! with `Retry-After`.

use super::ApiResult;
use super::partial_output::PARTIAL_OUTPUTS;
use crate::edge::Edge;
use crate::error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Above this many remembered addresses, the ones whose limit has fully
/// recovered are forgotten (they would start afresh anyway).
const REMEMBERED_ADDRESSES: usize = 10_000;

#[derive(Debug)]
pub struct Throttle {
    registrations: DefaultKeyedRateLimiter<IpAddr>,
    large_bodies: Arc<Semaphore>,
    partial_outputs: Arc<Semaphore>,
}

impl Throttle {
    pub fn new(edge: &Edge) -> Throttle {
        let r = &edge.registration;
        let per_minute = NonZeroU32::new(r.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(r.burst).unwrap_or(NonZeroU32::MIN);
        Throttle {
            registrations: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
            large_bodies: Arc::new(Semaphore::new(edge.large_bodies)),
            partial_outputs: Arc::new(Semaphore::new(PARTIAL_OUTPUTS)),
        }
    }

    /// Counts a registration from `client`, or refuses it (429) when that
    /// address has used up its rate.
    pub(super) fn registration(&self, client: IpAddr) -> ApiResult<()> {
        if self.registrations.len() > REMEMBERED_ADDRESSES {
            self.registrations.retain_recent();
        }
        match self.registrations.check_key(&rate_key(client)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::TooManyRequests {
                    message: format!(
                        "too many registrations from {client}; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                    retry_after_secs: wait.as_secs_f64().ceil() as u64,
                })
            }
        }
    }

    /// A permit to read one large body, held while it is in memory; none
    /// left is a 503 with `Retry-After`.
    pub(super) fn large_body(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.large_bodies.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy {
                message: "the coordinator is reading as many large bodies as it allows; try again shortly".into(),
                retry_after_secs: 1,
            }
        })
    }

    /// A permit to stream one partial output, held while it streams; none
    /// left is a 503 with `Retry-After`.
    pub(super) fn partial_output(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.partial_outputs.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy {
                message: format!(
                    "the coordinator is streaming as many partial outputs as it allows ({PARTIAL_OUTPUTS}); try again shortly"
                ),
                retry_after_secs: 1,
            }
        })
    }
}

/// Whose rate a registration counts against: an IPv4 address, or an IPv6
/// address's /64 (one host commonly holds a whole /64).
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_minute: u32, burst: u32, large_bodies: usize) -> Throttle {
        let mut edge = Edge::default();
        edge.registration.per_minute = per_minute;
        edge.registration.burst = burst;
        edge.large_bodies = large_bodies;
        Throttle::new(&edge)
    }

    #[test]
    fn an_address_past_its_burst_is_refused_with_a_wait_and_others_are_not() {
        let t = throttle(1, 2, 1);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        t.registration(a).unwrap();
        t.registration(a).unwrap();
        match t.registration(a) {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}"),
            other => panic!("{other:?}"),
        }
        t.registration("198.51.100.8".parse().unwrap()).unwrap();
    }

    #[test]
    fn one_ipv6_64_shares_one_rate() {
        let t = throttle(1, 1, 1);
        t.registration("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            t.registration("2001:db8:1:2::ffff".parse().unwrap())
                .is_err()
        );
        t.registration("2001:db8:1:3::1".parse().unwrap()).unwrap();
    }

    #[test]
    fn large_bodies_beyond_the_cap_are_refused_until_one_ends() {
        let t = throttle(1, 1, 2);
        let a = t.large_body().unwrap();
        let _b = t.large_body().unwrap();
        assert!(matches!(t.large_body(), Err(ApiError::Busy { .. })));
        drop(a);
        let _c = t.large_body().unwrap();
    }

    #[test]
    fn partial_outputs_beyond_the_cap_are_refused_until_one_ends() {
        let t = throttle(1, 1, 1);
        let held: Vec<_> = (0..PARTIAL_OUTPUTS)
            .map(|_| t.partial_output().unwrap())
            .collect();
        match t.partial_output() {
            Err(ApiError::Busy { message, .. }) => {
                assert!(message.contains("partial"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        let _again = t.partial_output().unwrap();
    }
}
