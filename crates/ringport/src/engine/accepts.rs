//! The accepts a shard keeps posted (the AcceptEx pre-posting) and the
//! clients it holds unread at the global connection limit.
//!
//! The part keeps the counts and decides; the engine turns its answers
//! into ops (`Op::Accept`, `Op::WithdrawAccepts`) and log lines, and owns
//! the limit itself (`ServerShared::admitted`, see `admission`).
//!
//! - Below the limit, up to `accepts_in_flight` accepts stay posted, as
//!   far as the connection table has room.
//! - At the limit, the posted accepts are withdrawn once (new clients wait
//!   in the listen backlog) and the limit is logged once per episode.
//! - A client accepted in the moment the limit was reached is held unread
//!   (`LimitPolicy::Wait`), oldest first; while any is held, no accept is
//!   posted, which bounds them to `accepts_in_flight`.
//! - After an accept error (EMFILE, ENFILE, ENOMEM...), accepting pauses
//!   for [`ACCEPT_BACKOFF`], so a full descriptor table does not make the
//!   shard spin.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long accepting pauses after an accept error.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// What to do at the global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AtLimit {
    /// Withdraw the posted accepts (first time at the limit with accepts
    /// posted).
    pub withdraw: bool,
    /// Log that the limit was reached (first time since below it).
    pub log: bool,
}

/// A shard's accept bookkeeping.
pub(super) struct Accepts {
    /// The driver has a listener to accept from.
    listening: bool,
    /// Accepts to keep posted (`ServerConfig::accepts_in_flight`).
    depth: usize,
    /// Accepts posted and not completed.
    posted: usize,
    /// Accepting pauses until then after an accept error.
    backoff_until: Option<Instant>,
    /// The limit was logged since accepting last went on.
    at_limit_logged: bool,
    /// The posted accepts were withdrawn because of the limit.
    withdrawn: bool,
    /// Clients accepted over the limit and held (`LimitPolicy::Wait`), in
    /// arrival order, with their peer addresses.
    waiting: VecDeque<(u32, SocketAddr)>,
}

impl Accepts {
    /// The bookkeeping of a shard that accepts (`listening`) with
    /// `depth` accepts kept posted.
    pub fn new(listening: bool, depth: usize) -> Self {
        Accepts {
            listening,
            depth,
            posted: 0,
            backoff_until: None,
            at_limit_logged: false,
            withdrawn: false,
            waiting: VecDeque::new(),
        }
    }

    /// The driver has a listener.
    #[inline]
    pub fn listening(&self) -> bool {
        self.listening
    }

    /// Accepts posted and not completed (each promises a slot).
    #[inline]
    pub fn posted(&self) -> usize {
        self.posted
    }

    /// Whether new accepts may be posted at all: listening, not
    /// stopping, not backing off, and nobody held at the limit (they are
    /// first in line).
    pub fn may_post(&self, stopping: bool) -> bool {
        self.listening && !stopping && self.backoff_until.is_none() && self.waiting.is_empty()
    }

    /// At the global limit: whether to withdraw the posted accepts and
    /// whether to log, each once until [`Self::post`] runs again.
    pub fn at_limit(&mut self) -> AtLimit {
        let withdraw = self.posted > 0 && !self.withdrawn;
        if withdraw {
            self.withdrawn = true;
        }
        let log = !self.at_limit_logged;
        self.at_limit_logged = true;
        AtLimit { withdraw, log }
    }

    /// Below the limit, with `room` slots neither in use nor promised:
    /// how many accepts to post now (counted as posted).
    pub fn post(&mut self, room: usize) -> usize {
        self.at_limit_logged = false;
        self.withdrawn = false;
        let n = self.depth.saturating_sub(self.posted).min(room);
        self.posted += n;
        n
    }

    /// An accept completed (with a client or an error).
    #[inline]
    pub fn completed(&mut self) {
        self.posted = self.posted.saturating_sub(1);
    }

    /// An accept failed at `now`: accepting backs off for
    /// [`ACCEPT_BACKOFF`]. True if it was not backing off already (worth
    /// a log line).
    pub fn failed(&mut self, now: Instant) -> bool {
        let first = self.backoff_until.is_none();
        self.backoff_until = Some(now + ACCEPT_BACKOFF);
        first
    }

    /// The tick at `now`: a back-off that is over ends.
    pub fn on_tick(&mut self, now: Instant) {
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
        }
    }

    /// Holds a client accepted over the limit, after those already held.
    pub fn hold(&mut self, slot: u32, peer: SocketAddr) {
        self.waiting.push_back((slot, peer));
    }

    /// The client held longest, if any (left held until
    /// [`Self::take_first`]).
    pub fn first_waiting(&self) -> Option<(u32, SocketAddr)> {
        self.waiting.front().copied()
    }

    /// The client held longest leaves the queue (admitted, or closed
    /// because the server stops).
    pub fn take_first(&mut self) -> Option<(u32, SocketAddr)> {
        self.waiting.pop_front()
    }

    /// How many clients are held at the limit.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::virtual_t0;
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn keeps_the_depth_posted_as_far_as_the_table_has_room() {
        let mut a = Accepts::new(true, 4);
        assert!(a.may_post(false));
        assert_eq!(a.post(100), 4);
        assert_eq!(a.posted(), 4);
        assert_eq!(a.post(100), 0, "the depth is posted");
        a.completed();
        a.completed();
        assert_eq!(a.posted(), 2);
        assert_eq!(a.post(1), 1, "only one slot of room");
        assert_eq!(a.post(0), 0);
        assert_eq!(a.posted(), 3);
    }

    #[test]
    fn completions_never_count_below_zero() {
        let mut a = Accepts::new(true, 1);
        a.completed();
        assert_eq!(a.posted(), 0);
    }

    #[test]
    fn nothing_is_posted_without_a_listener_or_while_stopping() {
        assert!(!Accepts::new(false, 4).may_post(false));
        assert!(!Accepts::new(true, 4).may_post(true));
    }

    #[test]
    fn at_the_limit_withdraws_and_logs_once_per_episode() {
        let mut a = Accepts::new(true, 2);
        a.post(10);
        assert_eq!(
            a.at_limit(),
            AtLimit {
                withdraw: true,
                log: true
            }
        );
        assert_eq!(
            a.at_limit(),
            AtLimit {
                withdraw: false,
                log: false
            }
        );
        // Below the limit again, then at it again: both once more.
        a.post(10);
        assert_eq!(
            a.at_limit(),
            AtLimit {
                withdraw: true,
                log: true
            }
        );
    }

    #[test]
    fn at_the_limit_with_nothing_posted_only_logs() {
        let mut a = Accepts::new(true, 2);
        assert_eq!(
            a.at_limit(),
            AtLimit {
                withdraw: false,
                log: true
            }
        );
    }

    #[test]
    fn an_accept_error_backs_off_until_a_tick_past_it() {
        let t0 = virtual_t0();
        let mut a = Accepts::new(true, 2);
        assert!(a.failed(t0), "the first failure is logged");
        assert!(!a.may_post(false));
        let later = t0 + Duration::from_millis(50);
        assert!(!a.failed(later), "not again while backing off");
        // The back-off runs from the last failure.
        a.on_tick(t0 + ACCEPT_BACKOFF);
        assert!(!a.may_post(false));
        a.on_tick(later + ACCEPT_BACKOFF);
        assert!(a.may_post(false));
    }

    #[test]
    fn held_clients_are_admitted_oldest_first_and_block_new_accepts() {
        let mut a = Accepts::new(true, 2);
        a.hold(5, peer(1));
        a.hold(9, peer(2));
        assert_eq!(a.waiting(), 2);
        assert!(!a.may_post(false), "those held come first");
        assert_eq!(a.first_waiting(), Some((5, peer(1))));
        assert_eq!(a.first_waiting(), Some((5, peer(1))), "peeking keeps it");
        assert_eq!(a.take_first(), Some((5, peer(1))));
        assert_eq!(a.take_first(), Some((9, peer(2))));
        assert_eq!(a.take_first(), None);
        assert!(a.may_post(false));
    }
}
