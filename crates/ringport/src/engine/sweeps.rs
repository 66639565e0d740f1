//! The idle/heartbeat/frame-timeout sweep: which open connections to look
//! at on a tick, and what is due for each.
//!
//! Each tick looks at a share of the open connections, so that every one
//! is seen at least twice per period (the shortest of `idle_timeout`,
//! `heartbeat` and `frame_timeout`) without a full scan per tick. A round
//! visits the connections open when it began; its pace is set then, so
//! closes during the round (which shrink the list) do not slow it down.
//!
//! The part is pure bookkeeping: it yields positions in the engine's list
//! of open connections and a [`Verdict`] per connection from its time
//! stamps; the engine applies the verdicts (closes, heartbeats) and tells
//! the part whether the connection left the list.

use std::time::{Duration, Instant};

use super::clock::MAX_PERIOD;
use crate::config::ServerConfig;

/// What one connection's time stamps say, as the sweep sees them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamps {
    /// Milliseconds since its last input.
    pub since_input_ms: u64,
    /// Milliseconds since its last queued output.
    pub since_output_ms: u64,
    /// Its send queue is empty.
    pub queue_empty: bool,
    /// The frame it is receiving is past its deadline.
    pub frame_late: bool,
}

/// What is due for a connection the sweep looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Idle past `idle_timeout`: close it (it leaves the open list).
    IdleClose,
    /// Its frame is late: the engine closes it after the sweep (it knows
    /// the frame's size).
    Stalled,
    /// No output for `heartbeat`: send a heartbeat.
    Heartbeat,
    /// Nothing.
    Nothing,
}

/// A shard's sweep: its settings, the pacing of its rounds and the
/// connections it found stalled.
pub(super) struct Sweeps {
    /// `idle_timeout` and `heartbeat` in milliseconds, capped at
    /// [`MAX_PERIOD`] (the slots' stamps wrap past it).
    idle_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    frame_timeout: Option<Duration>,
    /// Bytes per second a large frame is given on top of `frame_timeout`.
    min_receive_rate: Option<u64>,
    /// The shortest of the three periods (None: no sweep).
    period: Option<Duration>,
    /// Where the sweep goes on in the open list.
    cursor: usize,
    /// Connections the current round visits, and how many it has.
    round: usize,
    done: usize,
    /// Connections whose frame is late, found by the sweep.
    stalled: Vec<u32>,
}

impl Sweeps {
    /// The sweep `config` asks for.
    pub fn new(config: &ServerConfig) -> Self {
        Self::with(
            config.idle_timeout,
            config.heartbeat,
            config.frame_timeout,
            config.min_receive_rate,
        )
    }

    fn with(
        idle_timeout: Option<Duration>,
        heartbeat: Option<Duration>,
        frame_timeout: Option<Duration>,
        min_receive_rate: Option<u64>,
    ) -> Self {
        let idle_timeout = idle_timeout.map(|t| t.min(MAX_PERIOD));
        let heartbeat = heartbeat.map(|t| t.min(MAX_PERIOD));
        Sweeps {
            idle_ms: idle_timeout.map(|t| t.as_millis() as u64),
            heartbeat_ms: heartbeat.map(|t| t.as_millis() as u64),
            frame_timeout,
            min_receive_rate,
            period: [idle_timeout, heartbeat, frame_timeout]
                .into_iter()
                .flatten()
                .min(),
            cursor: 0,
            round: 0,
            done: 0,
            stalled: Vec::new(),
        }
    }

    /// How many connections to look at this tick, with `open` open and
    /// ticks `tick` apart; starts a new round when the last one is done.
    pub fn begin_tick(&mut self, open: usize, tick: Duration) -> usize {
        let Some(period) = self.period else {
            return 0;
        };
        if open == 0 {
            return 0;
        }
        if self.done >= self.round {
            self.round = open;
            self.done = 0;
        }
        let round = self.round;
        (round as f64 * 2.0 * tick.as_secs_f64() / period.as_secs_f64().max(1e-3))
            .ceil()
            .clamp(1.0, round as f64) as usize
    }

    /// The position in the open list (now `open` long) of the next
    /// connection to look at; None when the list is empty. Follow it with
    /// [`Self::visited`].
    pub fn next_position(&mut self, open: usize) -> Option<usize> {
        if open == 0 {
            return None;
        }
        self.done += 1;
        self.cursor %= open;
        Some(self.cursor)
    }

    /// The connection at the position just given was looked at. If it
    /// left the open list (`removed`), the last one moved into its place:
    /// the cursor stays, so that one is seen next.
    pub fn visited(&mut self, removed: bool) {
        if !removed {
            self.cursor += 1;
        }
    }

    /// What is due for a connection with these stamps: an idle close
    /// before a late frame before a heartbeat (which only an empty queue
    /// gets).
    pub fn verdict(&self, conn: &Stamps) -> Verdict {
        if self.idle_ms.is_some_and(|t| conn.since_input_ms >= t) {
            Verdict::IdleClose
        } else if conn.frame_late {
            Verdict::Stalled
        } else if self.heartbeat_ms.is_some_and(|t| conn.since_output_ms >= t) && conn.queue_empty {
            Verdict::Heartbeat
        } else {
            Verdict::Nothing
        }
    }

    /// Notes a connection found with a late frame.
    pub fn stall(&mut self, slot: u32) {
        self.stalled.push(slot);
    }

    /// The next connection found with a late frame, to close.
    pub fn pop_stalled(&mut self) -> Option<u32> {
        self.stalled.pop()
    }

    /// Whether frames have a deadline (`frame_timeout`).
    #[inline]
    pub fn frame_timeout_on(&self) -> bool {
        self.frame_timeout.is_some()
    }

    /// The deadline of a frame of `size` bytes begun at `started`:
    /// `frame_timeout`, plus the time `min_receive_rate` gives its bytes.
    /// None without a frame timeout.
    #[inline]
    pub fn frame_deadline(&self, started: Instant, size: u64) -> Option<Instant> {
        let timeout = self.frame_timeout?;
        let extra = self.min_receive_rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(size as f64 / r as f64)
        });
        Some(started + timeout + extra)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::virtual_t0;
    use super::*;

    const TICK: Duration = Duration::from_millis(100);
    const SEC: Option<Duration> = Some(Duration::from_secs(1));

    fn quiet() -> Stamps {
        Stamps {
            since_input_ms: 0,
            since_output_ms: 0,
            queue_empty: true,
            frame_late: false,
        }
    }

    /// Runs `ticks` ticks over `open` (an open list the test keeps as the
    /// engine does: a removal moves the last entry into its place);
    /// `close(id)` says whether a visit closes the connection. Returns
    /// the ids visited per tick.
    fn run(
        sweeps: &mut Sweeps,
        open: &mut Vec<u32>,
        ticks: usize,
        mut close: impl FnMut(u32) -> bool,
    ) -> Vec<Vec<u32>> {
        let mut seen = Vec::new();
        for _ in 0..ticks {
            let mut this = Vec::new();
            for _ in 0..sweeps.begin_tick(open.len(), TICK) {
                let Some(pos) = sweeps.next_position(open.len()) else {
                    break;
                };
                let id = open[pos];
                this.push(id);
                let removed = close(id);
                if removed {
                    open.swap_remove(pos);
                }
                sweeps.visited(removed);
            }
            seen.push(this);
        }
        seen
    }

    #[test]
    fn no_period_no_sweep() {
        let mut s = Sweeps::with(None, None, None, Some(1000));
        assert_eq!(s.begin_tick(100, TICK), 0);
    }

    #[test]
    fn no_connection_no_visit() {
        let mut s = Sweeps::with(SEC, None, None, None);
        assert_eq!(s.begin_tick(0, TICK), 0);
        assert_eq!(s.next_position(0), None);
    }

    #[test]
    fn every_connection_is_seen_at_least_twice_per_period() {
        // Periods of 1 s, 3.3 s and 50 ms (shorter than the tick).
        for (period, n) in [(1000, 100), (3300, 37), (1000, 7), (50, 10), (1000, 1)] {
            let mut s = Sweeps::with(Some(Duration::from_millis(period)), None, None, None);
            let mut open: Vec<u32> = (0..n).collect();
            let ticks_per_period = (period / 100).max(1) as usize;
            let seen = run(&mut s, &mut open, 10 * ticks_per_period, |_| false);
            // Any window of one period's ticks sees each connection twice
            // (a period shorter than the tick: each tick sees all).
            for window in seen.windows(ticks_per_period) {
                for id in 0..n {
                    let times = window.iter().flatten().filter(|&&x| x == id).count();
                    let want = if ticks_per_period == 1 { 1 } else { 2 };
                    assert!(
                        times >= want,
                        "period {period}, {n} open: {id} seen {times}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tick_looks_at_a_share_not_all() {
        let mut s = Sweeps::with(Some(Duration::from_secs(10)), None, None, None);
        // 1000 connections, 2 looks per 100 ticks: 20 a tick.
        assert_eq!(s.begin_tick(1000, TICK), 20);
    }

    #[test]
    fn closes_during_a_round_do_not_slow_it() {
        // Every connection is idle: each visit closes one. The round's
        // pace (a fifth of 100 a tick) holds although the list shrinks, so
        // all are closed within 5 ticks.
        let mut s = Sweeps::with(SEC, None, None, None);
        let mut open: Vec<u32> = (0..100).collect();
        let seen = run(&mut s, &mut open, 5, |_| true);
        assert!(open.is_empty(), "{} left", open.len());
        let mut all: Vec<u32> = seen.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..100).collect::<Vec<_>>(),
            "each closed exactly once"
        );
    }

    #[test]
    fn a_close_skips_no_connection() {
        // Every other connection closes when looked at: the one moved into
        // a closed one's place is seen next, so one round sees them all.
        let mut s = Sweeps::with(SEC, None, None, None);
        let mut open: Vec<u32> = (0..50).collect();
        let seen = run(&mut s, &mut open, 5, |id| id % 2 == 0);
        let mut all: Vec<u32> = seen.into_iter().flatten().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 50);
        assert!(open.iter().all(|id| id % 2 == 1));
        assert_eq!(open.len(), 25);
    }

    #[test]
    fn verdicts() {
        let s = Sweeps::with(SEC, Some(Duration::from_millis(500)), SEC, None);
        assert_eq!(s.verdict(&quiet()), Verdict::Nothing);
        let idle = Stamps {
            since_input_ms: 1000,
            since_output_ms: 1000,
            frame_late: true,
            ..quiet()
        };
        assert_eq!(s.verdict(&idle), Verdict::IdleClose, "idle comes first");
        let late = Stamps {
            since_input_ms: 999,
            since_output_ms: 600,
            frame_late: true,
            ..quiet()
        };
        assert_eq!(s.verdict(&late), Verdict::Stalled, "a late frame next");
        let silent = Stamps {
            since_output_ms: 500,
            ..quiet()
        };
        assert_eq!(s.verdict(&silent), Verdict::Heartbeat);
        let busy = Stamps {
            queue_empty: false,
            ..silent
        };
        assert_eq!(s.verdict(&busy), Verdict::Nothing, "output is queued");
        let none = Sweeps::with(None, None, None, None);
        assert_eq!(none.verdict(&idle), Verdict::Stalled, "no idle timeout");
        assert_eq!(none.verdict(&silent), Verdict::Nothing, "no heartbeat");
    }

    #[test]
    fn long_periods_are_capped() {
        let year = Some(Duration::from_secs(365 * 86_400));
        let s = Sweeps::with(year, year, None, None);
        let max = MAX_PERIOD.as_millis() as u64;
        let just_under = Stamps {
            since_input_ms: max - 1,
            since_output_ms: max - 1,
            ..quiet()
        };
        assert_eq!(s.verdict(&just_under), Verdict::Nothing);
        let at = Stamps {
            since_output_ms: max,
            ..just_under
        };
        assert_eq!(s.verdict(&at), Verdict::Heartbeat);
        let at = Stamps {
            since_input_ms: max,
            ..at
        };
        assert_eq!(s.verdict(&at), Verdict::IdleClose);
    }

    #[test]
    fn stalled_connections_are_kept_for_the_engine() {
        let mut s = Sweeps::with(None, None, SEC, None);
        s.stall(3);
        s.stall(7);
        let mut got = [s.pop_stalled(), s.pop_stalled()];
        got.sort();
        assert_eq!(got, [Some(3), Some(7)]);
        assert_eq!(s.pop_stalled(), None);
    }

    #[test]
    fn frame_deadlines() {
        let t0 = virtual_t0();
        assert_eq!(
            Sweeps::with(None, None, None, Some(1)).frame_deadline(t0, 9),
            None
        );
        let s = Sweeps::with(None, None, SEC, None);
        assert!(s.frame_timeout_on());
        assert_eq!(
            s.frame_deadline(t0, 1 << 20),
            Some(t0 + Duration::from_secs(1))
        );
        // 1000 B/s: a 2500-byte frame gets 2.5 s more.
        let s = Sweeps::with(None, None, SEC, Some(1000));
        assert_eq!(
            s.frame_deadline(t0, 2500),
            Some(t0 + Duration::from_millis(3500))
        );
    }
}
