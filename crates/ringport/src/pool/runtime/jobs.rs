//! Job execution on the workers: running work items, timer and wait
//! callbacks (with the callback context and panic containment), re-arming
//! periodic timers and repeating waits, and discarding jobs at shutdown.
//!
//! Separate from [`super`] so the worker side of the pool reads on its own;
//! as a child module it still uses `Shared`'s private fields directly.

use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::sys;
use crate::pool::waits::{WaitEntry, WaitKind, WaitObj, WaitState, WaitTable};
use crate::pool::wheel::TimerState;

use super::{Job, Shared, TimerCallback, lock, panic_message, wait_token, with_context};

/// Single-writer increment (no read-modify-write on the bus).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl<S: 'static> Shared<S> {
    // ---- running ----------------------------------------------------------

    /// Runs a callback, containing and counting a panic.
    fn call(&self, worker: usize, what: &'static str, f: impl FnOnce()) {
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        let counters = &self.counters[worker];
        bump(&counters.executed);
        if let Err(payload) = result {
            bump(&counters.panicked);
            tracing::error!(
                worker,
                kind = what,
                "pool callback panicked (contained): {}",
                panic_message(&*payload)
            );
            // A payload whose Drop panics must not take the worker down.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        }
    }

    pub(super) fn run_job(&self, job: Job<S>, state: &mut S, worker: usize) {
        match job {
            Job::Work(work) => self.call(worker, "work item", || work(state)),
            Job::Timer {
                index,
                id,
                callback,
            } => self.run_timer(state, worker, index, id, callback),
            Job::Wait { index, id, obj } => self.run_wait(state, worker, index, id, obj),
        }
    }

    fn run_timer(
        &self,
        state: &mut S,
        worker: usize,
        index: u32,
        id: u64,
        callback: TimerCallback<S>,
    ) {
        let mut t = lock(&self.timers);
        let Some(entry) = t.wheel.get_mut(index, id) else {
            drop(t);
            drop(callback);
            return;
        };
        let (deadline, cancelled) = (entry.deadline, entry.cancelled);
        if cancelled {
            t.cancelled += 1;
            let freed = t.wheel.free(index);
            drop(t);
            drop((freed, callback));
            return;
        }
        t.fired += 1;
        match callback {
            TimerCallback::Once(work) => {
                t.wheel.free(index);
                drop(t);
                let at = self.origin + Duration::from_nanos(deadline);
                with_context(Some(at), false, || {
                    self.call(worker, "timer", || work(state))
                });
            }
            TimerCallback::Every(mut work) => {
                if let Some(e) = t.wheel.get_mut(index, id) {
                    e.state = TimerState::Running;
                }
                drop(t);
                let at = self.origin + Duration::from_nanos(deadline);
                let stop = with_context(Some(at), true, || {
                    self.call(worker, "timer", || work(state))
                });
                self.rearm_periodic(index, id, work, stop);
            }
        }
    }

    /// Files a periodic timer's next beat: the previous deadline plus one
    /// period, or, if that has passed, the first beat of the same phase
    /// that has not (skipped beats are counted).
    fn rearm_periodic(&self, index: u32, id: u64, work: Box<dyn FnMut(&mut S) + Send>, stop: bool) {
        let now = self.now_ns();
        let mut t = lock(&self.timers);
        let closed = t.closed;
        let Some(entry) = t.wheel.get_mut(index, id) else {
            drop(t);
            drop(work);
            return;
        };
        if entry.cancelled || closed || stop {
            t.cancelled += 1;
            let freed = t.wheel.free(index);
            drop(t);
            drop((freed, work));
            return;
        }
        let (deadline, period) = (entry.deadline, entry.period.max(1));
        let beats = if now > deadline {
            (now - deadline).div_ceil(period).max(1)
        } else {
            1
        };
        let next = deadline.saturating_add(beats.saturating_mul(period));
        t.skipped += beats - 1;
        let tick = t.wheel.rearm(index, next, TimerCallback::Every(work));
        self.release_timers_waking_for(t, tick);
    }

    fn run_wait(
        &self,
        state: &mut S,
        worker: usize,
        index: u32,
        id: u64,
        mut obj: Box<dyn WaitObj<S>>,
    ) {
        let mut t = lock(&self.waits);
        let Some(entry) = t.get_mut(index, id) else {
            drop(t);
            drop(obj);
            return;
        };
        let (repeat, cancelled) = (entry.repeat, entry.cancelled);
        if cancelled {
            t.cancelled += 1;
            let freed = self.remove_wait(&mut t, index, id);
            drop(t);
            drop((freed, obj));
            return;
        }
        t.fired += 1;
        if !repeat {
            // A one-shot wait is over once its callback starts: remove it
            // first (so cancel() reports false), drop the source after.
            let freed = self.remove_wait(&mut t, index, id);
            drop(t);
            with_context(None, false, || {
                self.call(worker, "wait", || obj.fire(state))
            });
            drop((freed, obj));
            return;
        }
        entry_mut(&mut t, index, id).state = WaitState::Running;
        drop(t);
        loop {
            let stop = with_context(None, true, || self.call(worker, "wait", || obj.fire(state)));
            let mut t = lock(&self.waits);
            let closed = t.closed;
            let Some(entry) = t.get_mut(index, id) else {
                drop(t);
                drop(obj);
                return;
            };
            if entry.cancelled || closed || stop {
                t.cancelled += 1;
                let freed = self.remove_wait(&mut t, index, id);
                drop(t);
                drop((freed, obj));
                return;
            }
            if entry.kind == WaitKind::Edge && entry.pending {
                // An edge arrived while this callback was queued or running.
                entry.pending = false;
                t.fired += 1;
                continue;
            }
            entry.state = WaitState::Armed;
            let kind = entry.kind;
            let rearmed = match entry.reg.as_ref() {
                // Re-arm the one-shot registration under the lock, so a
                // concurrent cancel cannot close the descriptor in between.
                Some(reg) if kind != WaitKind::Edge => sys::epoll_ctl(
                    self.epoll.as_fd(),
                    libc::EPOLL_CTL_MOD,
                    reg.as_fd(),
                    kind.events(),
                    wait_token(index, id),
                ),
                _ => Ok(()),
            };
            match rearmed {
                Ok(()) => entry.obj = Some(obj),
                Err(e) => {
                    tracing::error!("pool wait: re-arming failed, wait dropped: {e}");
                    entry.state = WaitState::Running;
                    let freed = self.remove_wait(&mut t, index, id);
                    drop(t);
                    drop((freed, obj));
                }
            }
            return;
        }
    }

    /// Drops a job without running it (shutdown with `Cancel`, or a queue
    /// that is gone), releasing its timer or wait entry.
    pub(super) fn discard(&self, job: Job<S>) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        match job {
            Job::Work(work) => drop(work),
            Job::Timer {
                index,
                id,
                callback,
            } => {
                let mut t = lock(&self.timers);
                let freed = if t.wheel.get_mut(index, id).is_some() {
                    t.cancelled += 1;
                    t.wheel.free(index)
                } else {
                    None
                };
                drop(t);
                drop((freed, callback));
            }
            Job::Wait { index, id, obj } => {
                let mut t = lock(&self.waits);
                let freed = if t.get_mut(index, id).is_some() {
                    t.cancelled += 1;
                    Some(self.remove_wait(&mut t, index, id))
                } else {
                    None
                };
                drop(t);
                drop((freed, obj));
            }
        }
    }
}

fn entry_mut<S>(t: &mut WaitTable<S>, index: u32, id: u64) -> &mut WaitEntry<S> {
    t.get_mut(index, id)
        .expect("wait entry checked under this lock")
}
