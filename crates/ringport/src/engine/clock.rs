//! The engine's clock: explicit time, handed in by the shard loop (the
//! real clock) or by tests (virtual time), never read here.
//!
//! Like quinn-proto's explicit `now`, every step of the engine runs at the
//! time the caller gives ([`Clock::set_now`]); the clock derives from it
//! the slots' millisecond stamps (relative to the engine's epoch, its
//! first `now`) and paces the engine's tick.

use std::time::{Duration, Instant};

/// The longest idle timeout or heartbeat period the engine honours (see
/// [`Clock::elapsed_ms`]); longer settings act as this.
pub(super) const MAX_PERIOD: Duration = Duration::from_millis(1 << 31);

/// A shard's explicit time and the pacing of its tick.
pub(super) struct Clock {
    /// Time of the current step (set by the shard before each turn and
    /// each batch of completions).
    now: Instant,
    /// `now` in milliseconds since `epoch` (the slots' time stamps).
    now_ms: u64,
    /// The engine's first `now`: time stamps count from it.
    epoch: Instant,
    /// The period of the engine's tick (`ServerConfig::tick`).
    tick: Duration,
    /// When the next tick is due.
    next_tick: Instant,
}

impl Clock {
    /// A clock starting at `now` (the epoch), first ticking one `tick`
    /// later.
    pub fn new(now: Instant, tick: Duration) -> Self {
        Clock {
            now,
            now_ms: 0,
            epoch: now,
            tick,
            next_tick: now + tick,
        }
    }

    /// Moves the clock to `now` (a time before the epoch counts as the
    /// epoch in the millisecond stamps).
    #[inline]
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
    }

    /// The time of the current step.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Milliseconds since the epoch.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Nanoseconds since the epoch (the rate limit's buckets).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// A slot's time stamp for now: the low 32 bits of [`Self::now_ms`]
    /// (read back with [`Self::elapsed_ms`]).
    #[inline]
    pub fn stamp(&self) -> u32 {
        self.now_ms as u32
    }

    /// The engine's epoch.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The period of the tick.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// When the next tick is due.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Whether a tick is due now; if so, the next one is scheduled one
    /// period from now (a late tick does not cause a burst of ticks).
    pub fn tick_due(&mut self) -> bool {
        if self.now < self.next_tick {
            return false;
        }
        self.next_tick = self.now + self.tick;
        true
    }

    /// Milliseconds from a time stamp of a slot (`last_input`,
    /// `last_output`, see [`Self::stamp`]) to now. The stamps are the low
    /// 32 bits of the milliseconds since the epoch, so this is exact while
    /// less than 2^32 ms (49.7 days) have passed: the sweep looks at every
    /// open connection at least twice per period, and the periods it
    /// checks are capped at [`MAX_PERIOD`] (24.8 days), so a connection is
    /// found idle long before its stamp could wrap.
    #[inline]
    pub fn elapsed_ms(&self, stamp: u32) -> u64 {
        u64::from((self.now_ms as u32).wrapping_sub(stamp))
    }

    /// Time from `at_ms` (milliseconds since the epoch) to now; zero for a
    /// time not yet reached.
    pub fn since_ms(&self, at_ms: u64) -> Duration {
        Duration::from_millis(self.now_ms.saturating_sub(at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::virtual_t0;
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn starts_at_the_epoch() {
        let t0 = virtual_t0();
        let c = Clock::new(t0, TICK);
        assert_eq!(c.now(), t0);
        assert_eq!(c.epoch(), t0);
        assert_eq!(c.now_ms(), 0);
        assert_eq!(c.now_ns(), 0);
        assert_eq!(c.stamp(), 0);
        assert_eq!(c.next_tick(), t0 + TICK);
        assert_eq!(c.tick(), TICK);
    }

    #[test]
    fn set_now_derives_the_stamps() {
        let t0 = virtual_t0();
        let mut c = Clock::new(t0, TICK);
        c.set_now(t0 + Duration::from_micros(2_500_700));
        assert_eq!(c.now_ms(), 2_500);
        assert_eq!(c.now_ns(), 2_500_700_000);
        assert_eq!(c.stamp(), 2_500);
        assert_eq!(c.since_ms(500), Duration::from_secs(2));
        assert_eq!(c.since_ms(9_000), Duration::ZERO);
        assert_eq!(c.elapsed_ms(2_000), 500);
    }

    #[test]
    fn time_before_the_epoch_counts_as_the_epoch() {
        let t0 = virtual_t0() + Duration::from_secs(10);
        let mut c = Clock::new(t0, TICK);
        c.set_now(t0 - Duration::from_secs(5));
        assert_eq!(c.now_ms(), 0);
        assert_eq!(c.now_ns(), 0);
    }

    #[test]
    fn elapsed_ms_is_exact_across_the_stamp_wrap() {
        let t0 = virtual_t0();
        let mut c = Clock::new(t0, TICK);
        // A stamp taken 1 s before the low 32 bits wrap, read 2 s later.
        let before = (1u64 << 32) - 1_000;
        c.set_now(t0 + Duration::from_millis(before));
        let stamp = c.stamp();
        c.set_now(t0 + Duration::from_millis(before + 2_000));
        assert!(c.stamp() < stamp, "the stamp wrapped");
        assert_eq!(c.elapsed_ms(stamp), 2_000);
        // The longest honoured period is still measured exactly.
        let stamp = c.stamp();
        c.set_now(t0 + Duration::from_millis(before + 2_000) + MAX_PERIOD);
        assert_eq!(c.elapsed_ms(stamp), MAX_PERIOD.as_millis() as u64);
    }

    #[test]
    fn a_tick_is_due_once_per_period() {
        let t0 = virtual_t0();
        let mut c = Clock::new(t0, TICK);
        assert!(!c.tick_due(), "no tick at the epoch");
        c.set_now(t0 + TICK - Duration::from_millis(1));
        assert!(!c.tick_due());
        c.set_now(t0 + TICK);
        assert!(c.tick_due());
        assert!(!c.tick_due(), "a tick is taken once");
        assert_eq!(c.next_tick(), t0 + 2 * TICK);
    }

    #[test]
    fn a_late_tick_schedules_the_next_from_now() {
        let t0 = virtual_t0();
        let mut c = Clock::new(t0, TICK);
        let late = t0 + 10 * TICK + Duration::from_millis(30);
        c.set_now(late);
        assert!(c.tick_due());
        assert!(!c.tick_due(), "no burst of missed ticks");
        assert_eq!(c.next_tick(), late + TICK);
    }
}
