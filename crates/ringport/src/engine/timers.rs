//! Time-driven work: the tick (flush deadlines of closing connections,
//! accept back-off), idle timeouts and heartbeats, and stopping.

use std::sync::atomic::Ordering;

use super::Core;
use super::conn::SlotState;
use super::sweeps::{Stamps, Verdict};
use crate::codec::Codec;
use crate::error::CloseReason;
use crate::sys::Op;

impl<C: Codec> Core<C> {
    pub(super) fn on_tick(&mut self) {
        let now = self.clock.now();
        self.sends.trim();
        self.inputs.trim_pool();
        self.sweep_idle();
        self.expire_handshakes();
        self.expire_upgrades();
        self.accepts.on_tick(now);
        for slot in self.closes.overdue(now) {
            let slot = slot as usize;
            let s = &mut self.conns[slot];
            if s.state == SlotState::Closing && !s.discard() {
                // The peer did not take its queued data in time: a slow
                // consumer (unless the server is stopping, which stays the
                // reason).
                s.set_discard(true);
                self.stats.slow_consumers += 1;
                self.closes.timed_out(slot as u32);
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
    }

    /// Closes connections idle past `idle_timeout`, finds those whose
    /// frame is late (`frame_timeout`) and sends heartbeats (an empty
    /// message) to those with no output for `heartbeat`, on the share of
    /// the open connections [`super::sweeps::Sweeps`] paces for this tick.
    fn sweep_idle(&mut self) {
        let visits = self
            .sweeps
            .begin_tick(self.conns.open_count(), self.clock.tick());
        for _ in 0..visits {
            let Some(pos) = self.sweeps.next_position(self.conns.open_count()) else {
                break;
            };
            let slot = self.conns.open_at(pos);
            let s = &self.conns[slot];
            let frame_deadline = self.inputs.get(slot).and_then(|i| i.frame_deadline);
            let stamps = Stamps {
                since_input_ms: self.clock.elapsed_ms(s.last_input),
                since_output_ms: self.clock.elapsed_ms(s.last_output),
                queue_empty: s.queue.is_empty(),
                frame_late: frame_deadline.is_some_and(|d| self.clock.now() >= d),
            };
            let verdict = self.sweeps.verdict(&stamps);
            // An idle close removes the connection from `open`.
            self.sweeps.visited(verdict == Verdict::IdleClose);
            match verdict {
                Verdict::IdleClose => {
                    self.stats.idle_timeouts += 1;
                    self.begin_close(slot, CloseReason::IdleTimeout, true);
                }
                // Closed by the engine, which knows the frame's size.
                Verdict::Stalled => self.sweeps.stall(slot as u32),
                Verdict::Heartbeat => {
                    // A protocol's own keep-alive (a WebSocket ping), else
                    // an empty message.
                    if !(s.has_protocol() && self.protocol_heartbeat(slot)) {
                        let _ = self.enqueue_copy(slot, &[]);
                    }
                    self.stats.heartbeats += 1;
                }
                Verdict::Nothing => {}
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
        if self.accepts.listening() {
            self.ops.push(Op::WithdrawAccepts);
            self.ops.push(Op::StopListening);
        }
        self.drop_waiting();
        // Connects in flight are abandoned: their completion (ECANCELED)
        // closes the socket and reports the failure to the handler.
        for slot in self.connects.slots() {
            let s = &self.conns[slot as usize];
            if s.state == SlotState::Connecting {
                let generation = s.generation;
                self.ops.push(Op::CancelConnect { slot, generation });
            }
        }
        let open: Vec<u32> = self.conns.open_slots().to_vec();
        for slot in open {
            self.begin_close(slot as usize, CloseReason::ServerStopping, true);
            self.closes.cap_deadline(slot, stop_deadline);
        }
    }
}
