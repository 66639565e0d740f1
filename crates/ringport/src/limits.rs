//! Admission control and abuse limits beyond the global connection limit:
//! the types of the [`crate::ServerConfig`] settings that bound what one
//! source or one connection may take ([`AcceptFilter`],
//! [`MessageRateLimit`], [`RateLimitPolicy`]). The operations guide's
//! "Limits and abuse" section lists every limit with its default.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Decides, before a connection is admitted, whether to keep it: called on
/// the shard that accepted it with the peer's address and the listener's
/// local address, before any byte is read and before the connection counts
/// against any limit. `false` closes it at once (counted in
/// [`crate::Stats::refused_by_filter`]); the handler never hears of it.
///
/// A config callback rather than a [`crate::Handler`] method: it works the
/// same for every way of running a server (handler, [`crate::EventServer`],
/// the async API), needs no connection state, and one filter (for example
/// a ban list behind an `Arc`) is shared by all shards; a handler is one
/// value per shard. It runs on the shard thread: keep it short and never
/// block (look the address up in memory).
///
/// ```
/// use ringport::limits::AcceptFilter;
/// let only_loopback = AcceptFilter::new(|peer, _local| peer.ip().is_loopback());
/// # let _ = only_loopback;
/// ```
#[derive(Clone)]
pub struct AcceptFilter(Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>);

impl AcceptFilter {
    /// A filter calling `f(peer, local)`; `true` admits the connection.
    pub fn new(f: impl Fn(SocketAddr, SocketAddr) -> bool + Send + Sync + 'static) -> Self {
        AcceptFilter(Arc::new(f))
    }

    /// Whether the connection from `peer` to `local` is admitted.
    pub fn admits(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        (self.0)(peer, local)
    }
}

impl fmt::Debug for AcceptFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptFilter(..)")
    }
}

/// What happens to a connection that sends messages faster than its
/// [`MessageRateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitPolicy {
    /// Stop reading from it until its budget allows the next message
    /// (default): what it sends meanwhile waits in the kernel, then TCP
    /// flow control holds the sender back. Nothing is lost.
    #[default]
    Pause,
    /// Close it with [`crate::CloseReason::RateLimited`]; the message over
    /// the budget is not delivered.
    Close,
}

impl std::str::FromStr for RateLimitPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pause" => Ok(RateLimitPolicy::Pause),
            "close" => Ok(RateLimitPolicy::Close),
            other => Err(format!(
                "unknown rate limit policy '{other}' (expected pause or close)"
            )),
        }
    }
}

/// A per-connection bound on received messages: a token bucket of `burst`
/// messages refilled at `per_second` (the generic cell rate algorithm: one
/// 8-byte time stamp per connection, kept only while the limit is set).
/// Each whole message handed to the handler takes one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRateLimit {
    /// Sustained messages per second (at least 1).
    pub per_second: u32,
    /// Messages that may arrive back to back after a quiet spell (at
    /// least 1).
    pub burst: u32,
    /// What happens past the budget.
    pub policy: RateLimitPolicy,
}

impl MessageRateLimit {
    /// `per_second` with a burst of the same size, pausing past it.
    pub fn new(per_second: u32) -> Self {
        MessageRateLimit {
            per_second: per_second.max(1),
            burst: per_second.max(1),
            policy: RateLimitPolicy::Pause,
        }
    }

    /// Time one token takes to come back, in nanoseconds (at least 1).
    pub(crate) fn interval_ns(&self) -> u64 {
        (1_000_000_000 / u64::from(self.per_second.max(1))).max(1)
    }

    /// How far ahead of now the bucket's clock may run: `burst - 1`
    /// intervals.
    pub(crate) fn tolerance_ns(&self) -> u64 {
        self.interval_ns() * u64::from(self.burst.max(1) - 1)
    }

    /// The interval as a duration (for logs).
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns())
    }
}
