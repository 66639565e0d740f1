//! The dispatcher thread: advances the timer wheel, sleeps in `epoll_wait`
//! until the next tick, a ready wait or a wake-up, and hands due callbacks
//! to the work queue; at shutdown it cancels what is still armed.
//!
//! Separate from [`super`] because it is its own thread with its own loop;
//! as a child module it still uses `Shared`'s private fields directly.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};

use crate::pool::sys;
use crate::pool::waits::{WaitKind, WaitState};
use crate::pool::wheel::{TICK_NS, tick_containing};

use super::{Job, STOP_CANCEL, STOP_DRAIN, STOP_NONE, Shared, WAKE_TOKEN, lock};

/// The dispatcher wakes at least this often (ticks: 1 s), so only timers
/// due sooner than that can need a wake-up when armed.
const MAX_SLEEP_TICKS: u64 = 1000;

impl<S: 'static> Shared<S> {
    // ---- the dispatcher ---------------------------------------------------

    /// The dispatcher thread: advances the wheel, sleeps in `epoll_wait`
    /// until the next timer tick, a ready wait or a wake-up, and hands due
    /// callbacks to the work queue.
    pub(super) fn dispatch(self: Arc<Self>, tx: Sender<Job<S>>) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut fired = Vec::new();
        let mut jobs = Vec::new();
        loop {
            let stop = self.stop.load(Ordering::Acquire);
            if stop != STOP_NONE {
                self.dispatcher_stop(stop, &tx);
                return;
            }
            let next_tick = {
                let mut t = lock(&self.timers);
                t.sleep_tick = 0;
                let now_tick = tick_containing(self.now_ns());
                t.wheel.advance(now_tick, &mut fired);
                // Never sleep longer than MAX_SLEEP_TICKS: then arming a
                // timer due later than that never needs a wake-up syscall.
                let next = t
                    .wheel
                    .next_tick()
                    .unwrap_or(u64::MAX)
                    .min(now_tick + MAX_SLEEP_TICKS);
                t.sleep_tick = next;
                next
            };
            for f in fired.drain(..) {
                self.deliver(
                    &tx,
                    Job::Timer {
                        index: f.index,
                        id: f.id,
                        callback: f.payload,
                    },
                );
            }
            // Sleep until the start of the next tick with work.
            let timeout = Duration::from_nanos(
                next_tick
                    .saturating_mul(TICK_NS)
                    .saturating_sub(self.now_ns()),
            );
            let n = match sys::epoll_wait_timeout(self.epoll.as_fd(), &mut events, Some(timeout)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("pool dispatcher: epoll_wait failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            for event in &events[..n] {
                let data = event.u64;
                if data == WAKE_TOKEN {
                    let _ = sys::eventfd_take(self.wake.as_fd());
                } else {
                    self.on_wait_ready(data, &mut jobs);
                }
            }
            for job in jobs.drain(..) {
                self.deliver(&tx, job);
            }
        }
    }

    /// A wait's descriptor is ready: queue its callback (or note the edge).
    fn on_wait_ready(&self, data: u64, jobs: &mut Vec<Job<S>>) {
        let (index, tag) = (data as u32, (data >> 32) as u32);
        let mut t = lock(&self.waits);
        let Some(entry) = t.get_tagged(index, tag) else {
            return; // cancelled since epoll_wait returned
        };
        match entry.state {
            WaitState::Armed => {
                if entry.kind == WaitKind::AutoEvent
                    && let Some(reg) = entry.reg.as_ref()
                    && let Err(e) = sys::eventfd_take(reg.as_fd())
                    && e.kind() == io::ErrorKind::WouldBlock
                {
                    // Another wait consumed this signal: wait for the next.
                    let _ = sys::epoll_ctl(
                        self.epoll.as_fd(),
                        libc::EPOLL_CTL_MOD,
                        reg.as_fd(),
                        entry.kind.events(),
                        data,
                    );
                    return;
                }
                if let Some(obj) = entry.obj.take() {
                    entry.state = WaitState::Queued;
                    jobs.push(Job::Wait {
                        index,
                        id: entry.id,
                        obj,
                    });
                }
            }
            // An edge while the callback runs: it may have looked already,
            // so it runs once more. (While it is only queued, it has not
            // looked yet: nothing to add.)
            WaitState::Running if entry.kind == WaitKind::Edge => entry.pending = true,
            WaitState::Queued | WaitState::Running => {}
            WaitState::Vacant => {}
        }
    }

    /// Puts a job in the queue, waiting while it is full (timers and waits
    /// are late rather than lost), unless shutdown cancels it.
    fn deliver(&self, tx: &Sender<Job<S>>, mut job: Job<S>) {
        loop {
            match tx.send_timeout(job, Duration::from_millis(10)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(j)) => {
                    if self.stop.load(Ordering::Acquire) == STOP_CANCEL {
                        self.discard(j);
                        return;
                    }
                    job = j;
                }
                Err(SendTimeoutError::Disconnected(j)) => {
                    self.discard(j);
                    return;
                }
            }
        }
    }

    /// The dispatcher's last act: under `Drain`, queue the timers already
    /// due; then cancel every armed timer and wait. Returning drops its
    /// sender, which lets the workers finish once the queue is empty.
    fn dispatcher_stop(&self, stop: u8, tx: &Sender<Job<S>>) {
        if stop == STOP_DRAIN {
            let mut fired = Vec::new();
            lock(&self.timers)
                .wheel
                .advance(tick_containing(self.now_ns()), &mut fired);
            for f in fired {
                self.deliver(
                    tx,
                    Job::Timer {
                        index: f.index,
                        id: f.id,
                        callback: f.payload,
                    },
                );
            }
        }
        let mut callbacks = Vec::new();
        {
            let mut t = lock(&self.timers);
            let before = t.wheel.len();
            t.wheel.drain_armed(&mut callbacks);
            t.cancelled += (before - t.wheel.len()) as u64;
            t.sleep_tick = u64::MAX;
        }
        let mut freed = Vec::new();
        {
            let mut w = lock(&self.waits);
            for (index, id) in w.armed() {
                w.cancelled += 1;
                freed.push(self.remove_wait(&mut w, index, id));
            }
        }
        drop((callbacks, freed));
    }
}
