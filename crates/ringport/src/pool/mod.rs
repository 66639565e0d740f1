//! A worker pool with timers and waits on kernel objects: the modern, safe
//! form of the classic "scalable server on the system thread pool".
//!
//! | Win32 thread pool | here |
//! | --- | --- |
//! | `QueueUserWorkItem` / `SubmitThreadpoolWork` | [`Pool::execute`] |
//! | `CreateTimerQueueTimer` / `SetThreadpoolTimer` | [`Pool::after`], [`Pool::every`] |
//! | `RegisterWaitForSingleObject` / `SetThreadpoolWait` | [`Pool::wait`] on any [`AsFd`] |
//! | event objects (`CreateEvent`) | [`EventObject`] (an eventfd) |
//! | process handles | [`pidfd`] |
//! | TLS slots initialised on first use | per-worker state `S` built by a factory |
//!
//! ```
//! use std::time::Duration;
//! use ringport::pool::{EventObject, EventMode, Pool, PoolConfig, ShutdownPolicy, WaitMode};
//!
//! // Each worker owns a scratch buffer: no locks, no thread-locals.
//! let pool = Pool::start(PoolConfig::default(), |_worker| Vec::<u8>::with_capacity(4096))?;
//! pool.execute(|buf| buf.extend_from_slice(b"work"))?;
//! let beat = pool.every(Duration::from_millis(50), |_buf| { /* housekeeping */ })?;
//! let event = EventObject::new(EventMode::AutoReset)?;
//! pool.wait(event.clone(), WaitMode::Repeat, |_buf, _ev| { /* one call per set() */ })?;
//! event.set();
//! beat.cancel();
//! pool.shutdown(ShutdownPolicy::Drain);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Per-worker state instead of thread-locals
//!
//! Each worker owns an `S`, built by your factory **on that worker's thread
//! before it runs any item** ([`Pool::start`] returns only once every state
//! exists) and dropped **on that thread** when the worker exits at shutdown.
//! Every callback gets `&mut S`. This replaces the old habit of lazily
//! initialised thread-local storage on pool threads, which goes wrong in
//! two ways: pool threads outlive the code that expected to initialise them
//! (a thread that ran one library's items later runs another's, with the
//! first one's TLS still there, or torn down by the time it is touched),
//! and a lazily initialised slot is set up by whichever code happens to
//! touch it first, in whatever context, or never, so its destructor may
//! never run either. Here the state's lifetime is the worker's, explicitly.
//! `S` need not be `Send` or `Sync`: it never leaves its thread.
//!
//! # Design
//!
//! - **Work queue**: one bounded MPMC queue (crossbeam, array based,
//!   [`PoolConfig::queue`] slots allocated up front, about 48 bytes each);
//!   `execute` never blocks: a full queue is [`PoolError::Full`]. Workers
//!   block in the queue's receive. Timer and wait callbacks go through the
//!   same queue.
//! - **Dispatcher**: one extra thread (`<name>-timer`) owns a hierarchical
//!   timing wheel (1 ms ticks, 6 levels × 64 slots, reaching 2^36 ms ahead)
//!   and one epoll instance. It sleeps in `epoll_pwait2` (nanosecond
//!   timeout, Linux 5.11; millisecond `epoll_wait` before that) until the
//!   next tick that has work, a ready wait, or a wake-up through an eventfd
//!   (sent only when a timer is armed earlier than the tick it sleeps
//!   until), then moves due callbacks into the work queue. When the queue is
//!   full it waits for room: timers and waits are then late, never lost.
//! - **Timers** cost O(1) to arm and O(1) to cancel (append to / unlink
//!   from an intrusive list in a slab, under one mutex; no allocation for a
//!   capture-less closure). Measured with `examples/pool_bench.rs` on an
//!   idle 2-core VM: an arm and a cancel together take about 90 ns in
//!   steady state (30 ns of it reading the monotonic clock), and about
//!   155 ns per timer when a million are armed from cold and then cancelled
//!   (slab growth and page faults included; 2× that on a busy machine).
//!   Memory: **64 bytes per armed timer** in the pool (plus the closure's
//!   captures), 32 bytes for the [`TimerHandle`]; a million armed timers
//!   raise RSS by about 98 MB, handles and `Vec` growth slack included.
//!   The slab is freed when the last timer goes.
//!   Arming wakes the dispatcher (one eventfd write) only if the timer is
//!   due before the dispatcher's next wake-up, which is never more than
//!   1 s away.
//! - A fired timer's callback runs on a worker; its deadline is checked
//!   against the monotonic clock and rounded up to the next tick, so it
//!   **never runs early**; it is typically 0.5–1 ms late (the 1 ms tick
//!   plus two thread wake-ups), more when the queue is full or the workers
//!   busy.
//! - **Waits** register a `dup` of the source's descriptor with epoll as
//!   `EPOLLIN | EPOLLONESHOT`; a `Repeat` wait is re-armed with
//!   `EPOLL_CTL_MOD` after its callback returns. A manual-reset [`EventObject`]
//!   with `Repeat` is registered edge-triggered instead (see
//!   [`EventMode::ManualReset`]). A callback starts after two thread
//!   wake-ups (dispatcher, then worker): about 70 µs median from
//!   `EventObject::set` on an idle 2-core VM, the same as two hand-offs over
//!   plain channels there. epoll and eventfd have been in Linux since 2.6;
//!   `pidfd_open` needs Linux 5.3.
//! - `unsafe` is confined to the libc calls in the private `sys` module,
//!   each with a `SAFETY` comment.
//!
//! # Guarantees
//!
//! - Items submitted from one thread **start in submission order** (one
//!   FIFO queue). With one worker they also run one at a time in that order;
//!   with more, later items may start before earlier ones finish and run
//!   concurrently. Nothing orders items submitted from different threads
//!   beyond what those threads' own synchronisation establishes.
//!   `execute` returning `Ok` happens-before the item runs.
//! - A timer **never runs before its deadline**. Timers due in the same
//!   millisecond have no defined order.
//! - A periodic timer's beats are at `start + k × period` (the next beat is
//!   the previous *deadline* plus the period, so lateness never
//!   accumulates); if a beat runs more than a period late, the missed beats
//!   are skipped (counted in [`PoolStats::timer_beats_skipped`]) and the
//!   phase is kept. [`scheduled_deadline`] tells a callback which beat it
//!   is serving.
//! - A periodic timer's or a `Repeat` wait's callback **never runs
//!   concurrently with itself**: the next beat is filed, and the wait
//!   re-armed, only after the callback returns.
//! - `cancel()` on a [`TimerHandle`] or [`WaitHandle`] prevents every run
//!   that has not *started*, even one already in the queue. It does not
//!   wait for a run in progress (call it from inside the callback, or use
//!   [`cancel_current`], to stop a repeating callback from within).
//! - A panic in any callback is caught, logged with `tracing::error!`,
//!   counted in [`PoolStats::panicked`], and the worker goes on with the
//!   same state (which the panic may have left half-updated). A periodic
//!   timer or `Repeat` wait that panicked stays armed.
//!
//! # Shutdown
//!
//! [`Pool::shutdown`] takes an explicit [`ShutdownPolicy`]: `Drain` runs
//! every queued item and the timers already due, `Cancel` drops queued
//! items unrun; either way timers not yet due and all waits are cancelled
//! (their closures and sources dropped), every thread is joined and every
//! worker's state is dropped on its own thread. After shutdown every call
//! that would queue work returns [`PoolError::Stopped`].
//!
//! **Dropping the last [`Pool`] handle is `shutdown(Drain)`**: nothing that
//! `execute` accepted is silently lost, and the threads are joined (so the
//! drop blocks while items are still running). Timer and wait handles do not
//! keep the pool alive. A closure that captures a `Pool` does, until it is
//! dropped: a periodic timer holding a `Pool` keeps the pool running
//! forever, so capture a [`WeakPool`] there. Shutdown called on a pool
//! thread (from a callback, or by dropping the last handle there) starts the
//! shutdown but cannot join its own thread; the threads then finish on
//! their own, and a later `shutdown` from outside joins them.

mod event;
mod runtime;
mod sys;
mod waits;
mod wheel;

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use event::{EventMode, EventObject, pidfd};

pub(crate) use runtime::TimerCallback;
use runtime::{Shared, TimerCancel, WaitCancel};
use waits::{WaitItem, WaitKind};

/// Settings for [`Pool::start`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Worker threads (default: the available cores). The pool also starts
    /// one dispatcher thread for timers and waits.
    pub threads: usize,
    /// Capacity of the bounded work queue (default 65,536). `execute` on a
    /// full queue returns [`PoolError::Full`]; due timers and ready waits
    /// wait for room instead.
    pub queue: usize,
    /// Thread name prefix (default `"ringport-pool"`): workers are
    /// `<name>-<index>`, the dispatcher `<name>-timer` (Linux keeps the
    /// first 15 bytes).
    pub name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 65_536,
            name: "ringport-pool".to_string(),
        }
    }
}

/// Why the pool refused a callback. The refused closure (and, for a wait,
/// its source) is dropped before the call returns.
#[derive(Debug)]
pub enum PoolError {
    /// The work queue is full (back-pressure: retry later or shed load).
    Full,
    /// The pool is shutting down or shut down.
    Stopped,
    /// The kernel refused to watch a wait's source (e.g. `EPERM`: a regular
    /// file cannot be polled; `EMFILE`: out of descriptors for the `dup`).
    Io(io::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Full => f.write_str("pool work queue is full"),
            PoolError::Stopped => f.write_str("pool is shut down"),
            PoolError::Io(e) => write!(f, "pool wait registration failed: {e}"),
        }
    }
}

impl Error for PoolError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PoolError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// What [`Pool::shutdown`] does with work that is queued but not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownPolicy {
    /// Run every queued item, and the timers already due, then stop.
    Drain,
    /// Drop queued items (and due timers and ready waits) unrun; items
    /// already running finish.
    Cancel,
}

/// Whether a wait fires once or keeps firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// Fire once, then drop the source and callback. The usual mode for a
    /// pidfd or a manual-reset event (both stay readable).
    Once,
    /// Fire, and after each callback returns, wait again. On a source that
    /// stays readable (a pipe the callback did not drain, an exited pidfd)
    /// this fires again at once, as level-triggered readiness does: drain
    /// the source in the callback, or cancel. Auto-reset events are drained
    /// by the pool; manual-reset events fire once per set edge.
    Repeat,
}

/// A snapshot of a pool's counters ([`Pool::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads.
    pub threads: usize,
    /// Callbacks run (items, timer and wait callbacks), panicked ones included.
    pub executed: u64,
    /// Callbacks that panicked (caught and logged).
    pub panicked: u64,
    /// Jobs in the work queue now.
    pub queued: usize,
    /// `execute` calls refused with [`PoolError::Full`].
    pub rejected: u64,
    /// Queued jobs dropped unrun by [`ShutdownPolicy::Cancel`].
    pub dropped: u64,
    /// Timers alive: armed, queued or running (periodic).
    pub timers_armed: usize,
    /// Timer callbacks started.
    pub timers_fired: u64,
    /// Timers cancelled (by handle, by [`cancel_current`] or by shutdown).
    pub timers_cancelled: u64,
    /// Periodic beats skipped because a run was more than a period late.
    pub timer_beats_skipped: u64,
    /// Bytes held by the timer slab (0 when no timer is alive after a
    /// burst; excludes closures' captures).
    pub timer_memory_bytes: usize,
    /// Waits alive: armed, queued or running.
    pub waits_active: usize,
    /// Wait callbacks started.
    pub waits_fired: u64,
    /// Waits cancelled (by handle, by [`cancel_current`] or by shutdown).
    pub waits_cancelled: u64,
}

/// A pool of worker threads, each with its own state `S`, plus timers and
/// waits. A cheap, cloneable handle (an `Arc` inside), `Send + Sync` for
/// every `S`. Dropping the last handle shuts the pool down with
/// [`ShutdownPolicy::Drain`] (see the [module docs](self#shutdown)).
pub struct Pool<S: 'static> {
    handle: Arc<Handle<S>>,
}

/// The owner of the running pool: its drop is the last handle's drop.
struct Handle<S: 'static> {
    shared: Arc<Shared<S>>,
}

impl<S: 'static> Drop for Handle<S> {
    fn drop(&mut self) {
        self.shared.shutdown(ShutdownPolicy::Drain);
    }
}

impl<S: 'static> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Pool {
            handle: self.handle.clone(),
        }
    }
}

impl<S: 'static> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: 'static> Pool<S> {
    /// Starts `config.threads` workers and the dispatcher thread.
    /// `factory(worker_index)` builds each worker's state on that worker's
    /// thread before it runs any callback; `start` returns once every state
    /// is built.
    ///
    /// Fails with `InvalidInput` for zero threads or a zero-sized queue, with
    /// the OS error if a thread, the epoll instance or the eventfd cannot be
    /// created, and with an error naming the worker if the factory panics
    /// (the workers already started are stopped and their states dropped).
    pub fn start(
        config: PoolConfig,
        factory: impl Fn(usize) -> S + Send + Sync + 'static,
    ) -> io::Result<Pool<S>> {
        let shared = Shared::start(config, Arc::new(factory))?;
        Ok(Pool {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared<S>> {
        &self.handle.shared
    }

    /// Queues a work item; it runs on some worker with that worker's state.
    /// Never blocks. A panic in it is caught, logged, counted, and the
    /// worker goes on.
    ///
    /// Errors: [`PoolError::Full`] if the bounded queue is full,
    /// [`PoolError::Stopped`] once shutdown has begun.
    pub fn execute(&self, work: impl FnOnce(&mut S) + Send + 'static) -> Result<(), PoolError> {
        self.shared().execute(Box::new(work))
    }

    /// A one-shot timer: `f` runs on a worker no earlier than `delay` from
    /// now. The handle's [`cancel`](TimerHandle::cancel) prevents the run
    /// if it has not started; dropping the handle does not cancel.
    ///
    /// Errors: [`PoolError::Stopped`] once shutdown has begun (timers are
    /// not limited by the queue size).
    pub fn after(
        &self,
        delay: Duration,
        f: impl FnOnce(&mut S) + Send + 'static,
    ) -> Result<TimerHandle, PoolError> {
        let (index, id) = self
            .shared()
            .arm(delay, 0, TimerCallback::Once(Box::new(f)))?;
        Ok(self.timer_handle(index, id))
    }

    /// A periodic timer: `f` runs at `t0 + period`, `t0 + 2 × period`, …
    /// where `t0` is now (each deadline is the previous deadline plus the
    /// period, so there is no drift; if a run is more than a period late,
    /// the missed beats are skipped and the phase kept). Runs never overlap.
    /// Stop it with the handle's [`cancel`](TimerHandle::cancel) or
    /// [`cancel_current`] inside `f`.
    ///
    /// # Panics
    ///
    /// If `period` is zero.
    pub fn every(
        &self,
        period: Duration,
        f: impl FnMut(&mut S) + Send + 'static,
    ) -> Result<TimerHandle, PoolError> {
        assert!(!period.is_zero(), "Pool::every: period must be non-zero");
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let (index, id) =
            self.shared()
                .arm(period, period_ns, TimerCallback::Every(Box::new(f)))?;
        Ok(self.timer_handle(index, id))
    }

    fn timer_handle(&self, index: u32, id: u64) -> TimerHandle {
        let weak: Weak<dyn TimerCancel> = Arc::downgrade(self.shared()) as Weak<dyn TimerCancel>;
        TimerHandle {
            pool: weak,
            index,
            id,
        }
    }

    /// Waits for `source` to become readable, then runs `f` on a worker with
    /// the worker's state and the source. The wait owns `source` and drops
    /// it when the wait ends (after a `Once` callback, on cancel, at
    /// shutdown).
    ///
    /// - [`WaitMode::Once`]: one callback.
    /// - [`WaitMode::Repeat`]: re-armed after each callback returns, so one
    ///   readiness gives one callback and callbacks never overlap.
    ///
    /// An [`EventObject`] source (`F` = `EventObject` itself, not a wrapper) is
    /// recognised: an auto-reset event is consumed (reset) by the wait that
    /// fires, so each `set()` wakes one callback; a manual-reset event with
    /// `Repeat` fires once per set edge (plus once more if an edge arrives
    /// while its callback runs). Any other source is watched as it is
    /// (level-triggered): the callback should consume what made it
    /// readable.
    ///
    /// Errors: [`PoolError::Stopped`] once shutdown has begun,
    /// [`PoolError::Io`] if the descriptor cannot be duplicated or watched
    /// (regular files and directories cannot).
    pub fn wait<F: AsFd + Send + 'static>(
        &self,
        source: F,
        mode: WaitMode,
        f: impl FnMut(&mut S, &F) + Send + 'static,
    ) -> Result<WaitHandle, PoolError> {
        let repeat = mode == WaitMode::Repeat;
        let kind = match (&source as &dyn Any)
            .downcast_ref::<EventObject>()
            .map(EventObject::mode)
        {
            Some(EventMode::AutoReset) => WaitKind::AutoEvent,
            Some(EventMode::ManualReset) if repeat => WaitKind::Edge,
            _ => WaitKind::Level,
        };
        let reg = source.as_fd().try_clone_to_owned().map_err(PoolError::Io)?;
        let obj = Box::new(WaitItem {
            source,
            callback: f,
        });
        let (index, id) = self.shared().register_wait(reg, obj, kind, repeat)?;
        let weak: Weak<dyn WaitCancel> = Arc::downgrade(self.shared()) as Weak<dyn WaitCancel>;
        Ok(WaitHandle {
            pool: weak,
            index,
            id,
        })
    }

    /// A snapshot of the pool's counters (takes the timer and wait locks
    /// briefly).
    pub fn stats(&self) -> PoolStats {
        self.shared().stats()
    }

    /// Shuts the pool down with `policy` (see the
    /// [module docs](self#shutdown)) and joins its threads; every worker's
    /// state is dropped on its own thread. Idempotent; a later `Cancel`
    /// upgrades an earlier `Drain` still in progress. Called on a pool
    /// thread, it starts the shutdown and returns without joining.
    pub fn shutdown(&self, policy: ShutdownPolicy) {
        self.shared().shutdown(policy);
    }

    /// A handle that does not keep the pool running (for closures the pool
    /// itself holds, such as a periodic timer's).
    pub fn downgrade(&self) -> WeakPool<S> {
        WeakPool {
            handle: Arc::downgrade(&self.handle),
        }
    }
}

/// A non-owning [`Pool`] handle ([`Pool::downgrade`]).
pub struct WeakPool<S: 'static> {
    handle: Weak<Handle<S>>,
}

impl<S: 'static> WeakPool<S> {
    /// The pool, unless every `Pool` handle is gone.
    pub fn upgrade(&self) -> Option<Pool<S>> {
        self.handle.upgrade().map(|handle| Pool { handle })
    }
}

impl<S: 'static> Clone for WeakPool<S> {
    fn clone(&self) -> Self {
        WeakPool {
            handle: self.handle.clone(),
        }
    }
}

impl<S: 'static> fmt::Debug for WeakPool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakPool")
    }
}

/// A timer armed by [`Pool::after`] or [`Pool::every`]. Dropping it does
/// not cancel the timer. It does not keep the pool alive.
#[derive(Clone)]
pub struct TimerHandle {
    pool: Weak<dyn TimerCancel>,
    index: u32,
    id: u64,
}

impl TimerHandle {
    /// Cancels the timer: a one-shot timer that has not started will not
    /// run (even if it is already queued); a periodic timer runs no further
    /// beats (a beat in progress finishes). Returns `true` if this call
    /// cancelled something, `false` if the timer had already run, been
    /// cancelled, or the pool is gone.
    pub fn cancel(&self) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|p| p.cancel_timer(self.index, self.id))
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle").field("id", &self.id).finish()
    }
}

/// A wait registered by [`Pool::wait`]. Dropping it does not cancel the
/// wait. It does not keep the pool alive.
#[derive(Clone)]
pub struct WaitHandle {
    pool: Weak<dyn WaitCancel>,
    index: u32,
    id: u64,
}

impl WaitHandle {
    /// Cancels the wait: no callback that has not started will run, and the
    /// source is dropped (now if the wait is idle, else when the queued or
    /// running callback is done with it). Returns `true` if this call
    /// cancelled it, `false` if it had already ended (a `Once` wait whose
    /// callback started), been cancelled, or the pool is gone. (If an
    /// auto-reset event had already fired this wait, the signal it consumed
    /// is not handed back.)
    pub fn cancel(&self) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|p| p.cancel_wait(self.index, self.id))
    }
}

impl fmt::Debug for WaitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitHandle").field("id", &self.id).finish()
    }
}

/// Inside a timer callback: the deadline it was scheduled for (for a
/// periodic timer, `t0 + k × period` for beat `k`); `None` elsewhere.
/// Compare with `Instant::now()` to see how late the callback runs.
pub fn scheduled_deadline() -> Option<Instant> {
    runtime::current_deadline()
}

/// Inside a periodic timer's or a `Repeat` wait's callback: stop it after
/// this run (like calling its handle's `cancel`). Returns `false`, doing
/// nothing, anywhere else.
pub fn cancel_current() -> bool {
    runtime::request_cancel_current()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_sync_even_for_non_send_state() {
        assert_send_sync::<Pool<std::rc::Rc<()>>>();
        assert_send_sync::<WeakPool<std::rc::Rc<()>>>();
        assert_send_sync::<TimerHandle>();
        assert_send_sync::<WaitHandle>();
        assert_send_sync::<EventObject>();
    }
}
