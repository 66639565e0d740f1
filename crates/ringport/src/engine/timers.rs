//! Time-driven work: the tick (flush deadlines of closing connections,
//! accept back-off), idle timeouts and heartbeats, and stopping.

use std::sync::atomic::Ordering;

use super::Core;
use super::conn::SlotState;
use crate::codec::Codec;
use crate::error::CloseReason;
use crate::sys::Op;

impl<C: Codec> Core<C> {
    pub(super) fn on_tick(&mut self) {
        let now = self.clock.now();
        self.pool.trim();
        self.trim_input_pool();
        self.sweep_idle();
        self.expire_handshakes();
        self.expire_upgrades();
        if self.accept_backoff_until.is_some_and(|t| t <= now) {
            self.accept_backoff_until = None;
        }
        let mut overdue = std::mem::take(&mut self.overdue);
        overdue.extend(
            self.closing
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(&slot, _)| slot),
        );
        for slot in overdue.drain(..) {
            let slot = slot as usize;
            let s = &mut self.slots[slot];
            if s.state == SlotState::Closing && !s.discard() {
                // The peer did not take its queued data in time: a slow
                // consumer (unless the server is stopping, which stays the
                // reason).
                s.set_discard(true);
                self.stats.slow_consumers += 1;
                if let Some(c) = self.closing.get_mut(&(slot as u32))
                    && c.reason != CloseReason::ServerStopping
                {
                    c.reason = CloseReason::SlowConsumer;
                }
                if s.send_in_flight() {
                    let generation = s.generation;
                    self.ops.push(Op::CancelSend {
                        slot: slot as u32,
                        generation,
                    });
                }
                self.try_release(slot);
            }
        }
        self.overdue = overdue;
    }

    /// Closes connections idle past `idle_timeout`, finds those whose
    /// frame is late (`frame_timeout`) and sends heartbeats (an empty
    /// message) to those with no output for `heartbeat`. Each tick
    /// looks at a share of the open connections so that every one is seen
    /// at least twice per period, without a full scan per tick.
    fn sweep_idle(&mut self) {
        let Some(period) = [self.idle_timeout, self.heartbeat, self.frame_timeout]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        let n = self.open.len();
        if n == 0 {
            return;
        }
        // A round visits the connections open when it began; its pace is
        // set then, so closes during the round (which shrink the list) do
        // not slow it down.
        if self.sweep_done >= self.sweep_round {
            self.sweep_round = n;
            self.sweep_done = 0;
        }
        let round = self.sweep_round;
        let per_tick = (round as f64 * 2.0 * self.clock.tick().as_secs_f64()
            / period.as_secs_f64().max(1e-3))
        .ceil()
        .clamp(1.0, round as f64) as usize;
        let idle_ms = self.idle_timeout.map(|t| t.as_millis() as u64);
        let heartbeat_ms = self.heartbeat.map(|t| t.as_millis() as u64);
        for _ in 0..per_tick {
            if self.open.is_empty() {
                break;
            }
            self.sweep_done += 1;
            self.sweep_cursor %= self.open.len();
            let slot = self.open[self.sweep_cursor] as usize;
            let s = &self.slots[slot];
            if idle_ms.is_some_and(|t| self.clock.elapsed_ms(s.last_input) >= t) {
                self.stats.idle_timeouts += 1;
                // The close moves the last open connection into this
                // position: the cursor stays, so that one is seen next.
                self.begin_close(slot, CloseReason::IdleTimeout, true);
                continue;
            }
            self.sweep_cursor += 1;
            let frame_deadline = self.inputs[slot].as_ref().and_then(|i| i.frame_deadline);
            if frame_deadline.is_some_and(|d| self.clock.now() >= d) {
                // Closed by the engine, which knows the frame's size.
                self.stalled.push(slot as u32);
                continue;
            }
            if heartbeat_ms.is_some_and(|t| self.clock.elapsed_ms(s.last_output) >= t)
                && s.queue.is_empty()
            {
                let has_protocol = s.has_protocol();
                // A protocol's own keep-alive (a WebSocket ping), else an
                // empty message.
                if !(has_protocol && self.protocol_heartbeat(slot)) {
                    let _ = self.enqueue_copy(slot, &[]);
                }
                self.stats.heartbeats += 1;
            }
        }
    }

    /// Once the server is told to stop: withdraw the accepts, close the
    /// listener, and close every connection after a flush bounded by
    /// `stop_timeout`.
    pub(super) fn observe_stop(&mut self) {
        if self.stopping || !self.shared.stopping.load(Ordering::Acquire) {
            return;
        }
        self.stopping = true;
        let stop_deadline = self.clock.now() + self.shared.config.stop_timeout;
        if self.listening {
            self.ops.push(Op::WithdrawAccepts);
            self.ops.push(Op::StopListening);
        }
        self.drop_waiting();
        // Connects in flight are abandoned: their completion (ECANCELED)
        // closes the socket and reports the failure to the handler.
        for &slot in self.connecting.keys() {
            let s = &self.slots[slot as usize];
            if s.state == SlotState::Connecting {
                let generation = s.generation;
                self.ops.push(Op::CancelConnect { slot, generation });
            }
        }
        let open: Vec<u32> = self.open.clone();
        for slot in open {
            self.begin_close(slot as usize, CloseReason::ServerStopping, true);
            if let Some(c) = self.closing.get_mut(&slot) {
                c.deadline = c.deadline.min(stop_deadline);
            }
        }
    }
}
