//! Per-client limits kept in memory by each instance: the token bucket of anonymous session
//! minting, and the client key (an IPv4 address, or the /64 network of an IPv6 address) that
//! it and the live-stream cap of [`crate::events`] count by.
//!
//! Nothing here is shared between instances: N instances behind a load balancer let a client
//! through up to N times the limit, which is enough to stop one client from flooding the
//! `sessions` table or holding every stream, and costs no database round trip.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Idle buckets are dropped at most this often (each purge walks every bucket once).
const PURGE_INTERVAL: Duration = Duration::from_secs(10);

/// The client a per-client limit counts: an IPv4 address as is, an IPv6 address by its /64
/// network (one subscriber usually holds a whole /64), an IPv4-mapped IPv6 address as its
/// IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A wait in whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

/// A token bucket per client: `per_minute` requests a minute on average, at most `burst` at
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per minute (one every `60 / per_minute` seconds).
    pub per_minute: NonZeroU32,
    /// Bucket size: requests allowed back to back by a client that was idle.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// The default limit of `POST /auth/anonymous`: 30 a minute, bursts of 10.
    pub const ANONYMOUS: Self = Self {
        per_minute: nonzero(30),
        burst: nonzero(10),
    };
}

/// A [`RateLimit`] per client ([`client_key`]), in memory. Cheap to clone; clones share the
/// buckets. Idle buckets are dropped as it goes, so its memory is bounded by the clients seen
/// within one refill period of the bucket.
#[derive(Clone)]
pub struct ClientRateLimiter {
    inner: Arc<LimiterInner>,
}

struct LimiterInner {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    limit: RateLimit,
    started: Instant,
    /// Milliseconds after `started` when the next purge is due.
    next_purge_ms: AtomicU64,
}

impl std::fmt::Debug for ClientRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimiter")
            .field("limit", &self.inner.limit)
            .field("clients", &self.tracked_clients())
            .finish()
    }
}

impl ClientRateLimiter {
    /// Buckets of `limit`, all full.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Self {
            inner: Arc::new(LimiterInner {
                limiter: DefaultKeyedRateLimiter::keyed(quota),
                limit,
                started: Instant::now(),
                next_purge_ms: AtomicU64::new(millis(PURGE_INTERVAL)),
            }),
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> RateLimit {
        self.inner.limit
    }

    /// Takes one token from the bucket of `ip`'s client.
    ///
    /// # Errors
    /// The wait until the bucket has a token again, when it is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.purge_if_due();
        let limiter = &self.inner.limiter;
        limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Clients with a bucket in memory (idle ones may linger until the next purge).
    pub fn tracked_clients(&self) -> usize {
        self.inner.limiter.len()
    }

    /// Drops the buckets that are full again (indistinguishable from a client never seen).
    pub fn purge(&self) {
        self.inner.limiter.retain_recent();
        self.inner.limiter.shrink_to_fit();
    }

    /// Purges when the interval has passed; one caller does it, the others go on.
    fn purge_if_due(&self) {
        let now = millis(self.inner.started.elapsed());
        let due = self.inner.next_purge_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .inner
                .next_purge_ms
                .compare_exchange(
                    due,
                    now + millis(PURGE_INTERVAL),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.purge();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_network_and_a_mapped_ipv4_is_its_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_keep_theirs() {
        let limiter = ClientRateLimiter::new(RateLimit {
            per_minute: nonzero(1),
            burst: nonzero(3),
        });
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check(one).is_ok());
        }
        let wait = limiter.check(one).expect_err("empty bucket");
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(limiter.check(two).is_ok());
    }

    #[test]
    fn buckets_that_refilled_are_purged_so_memory_stays_bounded() {
        // One token every millisecond: a bucket is full again 2 ms after its last use.
        let limiter = ClientRateLimiter::new(RateLimit {
            per_minute: nonzero(60_000),
            burst: nonzero(2),
        });
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(limiter.check(ip).is_ok());
        }
        assert_eq!(limiter.tracked_clients(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        limiter.purge();
        assert_eq!(limiter.tracked_clients(), 0);
    }
}
