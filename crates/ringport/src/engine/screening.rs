//! The screening part: what the engine keeps to screen accepted clients
//! before they are read (`admission.rs` applies it): each listener's local
//! address for the accept filter, and the refusals not yet logged, so that
//! a flood of refused clients costs one log line per period, with counts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// At most one log line per this period for refused clients (per shard).
pub(super) const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(1);

/// Why a client was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its source address is at `max_connections_per_ip`.
    PerSource,
    /// The accept filter said no.
    Filter,
}

/// Refusals to log: (per source, by the filter).
pub(super) type RefusalCounts = (u64, u64);

/// A shard's screening bookkeeping (see the module docs).
#[derive(Default)]
pub(crate) struct Screening {
    /// The local address of each listener (by index).
    listeners: Vec<SocketAddr>,
    /// When the last refusal was logged.
    last_logged: Option<Instant>,
    /// Refusals since then, not logged.
    unlogged: RefusalCounts,
}

impl Screening {
    /// The listeners' local addresses, by listener index.
    pub fn set_listeners(&mut self, addrs: Vec<SocketAddr>) {
        self.listeners = addrs;
    }

    /// The local address of listener `index`, if known.
    pub fn listener(&self, index: u8) -> Option<SocketAddr> {
        self.listeners.get(usize::from(index)).copied()
    }

    /// Counts a refusal at `now`; returns the refusals to log now (this
    /// one included) if none was logged within [`REFUSAL_LOG_PERIOD`].
    pub fn refused(&mut self, why: Refusal, now: Instant) -> Option<RefusalCounts> {
        match why {
            Refusal::PerSource => self.unlogged.0 += 1,
            Refusal::Filter => self.unlogged.1 += 1,
        }
        if self
            .last_logged
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_PERIOD)
        {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::virtual_t0;
    use super::*;

    #[test]
    fn a_flood_of_refusals_is_logged_once_per_period_with_its_counts() {
        let t0 = virtual_t0();
        let mut s = Screening::default();
        assert_eq!(
            s.refused(Refusal::Filter, t0),
            Some((0, 1)),
            "the first at once"
        );
        for ms in 1..10 {
            let why = if ms % 3 == 0 {
                Refusal::Filter
            } else {
                Refusal::PerSource
            };
            assert_eq!(s.refused(why, t0 + Duration::from_millis(ms * 100)), None);
        }
        let next = t0 + REFUSAL_LOG_PERIOD;
        assert_eq!(s.refused(Refusal::PerSource, next), Some((7, 3)));
        assert_eq!(s.refused(Refusal::PerSource, next), None);
    }

    #[test]
    fn listeners_are_known_by_index() {
        let mut s = Screening::default();
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7080".parse().unwrap();
        s.set_listeners(vec![a, b]);
        assert_eq!(
            (s.listener(0), s.listener(1), s.listener(2)),
            (Some(a), Some(b), None)
        );
    }
}
