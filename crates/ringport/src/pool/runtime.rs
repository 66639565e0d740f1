//! The machinery behind [`Pool`](super::Pool): shared state, the worker
//! loop, the dispatcher thread (timer wheel + epoll) and shutdown.
//!
//! This file holds the types, `Shared` with its construction, submission,
//! stats and shutdown entry points, and the worker thread. The rest of
//! `Shared`'s methods live in child modules (so they keep access to its
//! private fields):
//!
//! - [`dispatcher`] (`runtime/dispatcher.rs`): the dispatcher thread;
//! - [`jobs`] (`runtime/jobs.rs`): running and discarding jobs on the
//!   workers.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::mem;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::sys;
use super::waits::{Freed, WaitKind, WaitObj, WaitState, WaitTable};
use super::wheel::Wheel;
use super::{PoolConfig, PoolError, PoolStats, ShutdownPolicy};

mod dispatcher;
mod jobs;

/// A queued work item.
pub(super) type Work<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A timer's callback.
pub(crate) enum TimerCallback<S> {
    Once(Work<S>),
    Every(Box<dyn FnMut(&mut S) + Send>),
}

/// What travels through the work queue.
pub(super) enum Job<S> {
    Work(Work<S>),
    Timer {
        index: u32,
        id: u64,
        callback: TimerCallback<S>,
    },
    Wait {
        index: u32,
        id: u64,
        obj: Box<dyn WaitObj<S>>,
    },
}

/// The timer wheel and what goes with it, under one mutex.
pub(super) struct Timers<S> {
    wheel: Wheel<TimerCallback<S>>,
    /// The tick the dispatcher will wake at (at most `MAX_SLEEP_TICKS`
    /// ahead; `u64::MAX` before it first looks), 0 while it is awake (it
    /// looks at the wheel before sleeping). Arming an earlier timer lowers
    /// it and wakes the dispatcher.
    sleep_tick: u64,
    closed: bool,
    fired: u64,
    cancelled: u64,
    skipped: u64,
}

/// One worker's counters, on their own cache line (written by that worker
/// only, read by `stats`).
#[repr(align(128))]
#[derive(Default)]
struct WorkerCounters {
    executed: AtomicU64,
    panicked: AtomicU64,
}

const STOP_NONE: u8 = 0;
const STOP_DRAIN: u8 = 1;
const STOP_CANCEL: u8 = 2;
/// epoll user data of the dispatcher's wake-up eventfd (no wait has index
/// `u32::MAX`).
const WAKE_TOKEN: u64 = u64::MAX;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under the pool's locks, so poisoning would mean a
    // bug in the pool itself; carry on with the data as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

thread_local! {
    /// Scheduled deadline of the timer callback running on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether the callback running on this thread repeats (periodic timer
    /// or `Repeat` wait), so `cancel_current` has something to cancel.
    static REPEATING: Cell<bool> = const { Cell::new(false) };
    /// Set by `cancel_current` during such a callback.
    static CANCEL_REQUESTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the callback context set; returns whether the callback
/// asked to cancel itself.
fn with_context(deadline: Option<Instant>, repeating: bool, f: impl FnOnce()) -> bool {
    DEADLINE.set(deadline);
    REPEATING.set(repeating);
    CANCEL_REQUESTED.set(false);
    f();
    DEADLINE.set(None);
    REPEATING.set(false);
    CANCEL_REQUESTED.replace(false)
}

pub(super) fn current_deadline() -> Option<Instant> {
    DEADLINE.get()
}

pub(super) fn request_cancel_current() -> bool {
    if REPEATING.get() {
        CANCEL_REQUESTED.set(true);
        true
    } else {
        false
    }
}

/// Cancels a timer by (index, id); type-erased so handles are not generic.
pub(super) trait TimerCancel: Send + Sync {
    fn cancel_timer(&self, index: u32, id: u64) -> bool;
}

/// Cancels a wait by (index, id).
pub(super) trait WaitCancel: Send + Sync {
    fn cancel_wait(&self, index: u32, id: u64) -> bool;
}

type Factory<S> = Arc<dyn Fn(usize) -> S + Send + Sync>;

/// Everything the handles, workers and dispatcher share.
pub(super) struct Shared<S: 'static> {
    /// The submitting end; `None` once shutdown begins (so `execute` fails
    /// with `Stopped`, exactly, and workers see the queue disconnect once
    /// the dispatcher has dropped its clone too).
    tx: RwLock<Option<Sender<Job<S>>>>,
    /// A receiving end for `stats().queued` and `Cancel` draining.
    rx: Receiver<Job<S>>,
    timers: Mutex<Timers<S>>,
    waits: Mutex<WaitTable<S>>,
    epoll: OwnedFd,
    /// The dispatcher's wake-up eventfd (registered with `WAKE_TOKEN`).
    wake: OwnedFd,
    origin: Instant,
    counters: Box<[WorkerCounters]>,
    rejected: AtomicU64,
    dropped: AtomicU64,
    /// `ShutdownPolicy::Cancel`: workers drop what they dequeue.
    discard_jobs: AtomicBool,
    /// Stop request for the dispatcher (`STOP_*`, only ever raised).
    stop: AtomicU8,
    shutting_down: AtomicBool,
    /// Join handles not yet joined.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Ids of every thread the pool started (never shrinks).
    thread_ids: Mutex<Vec<ThreadId>>,
}

impl<S: 'static> Shared<S> {
    /// Starts the workers (each building its state) and the dispatcher.
    pub fn start(config: PoolConfig, factory: Factory<S>) -> io::Result<Arc<Self>> {
        if config.threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "PoolConfig::threads must be at least 1",
            ));
        }
        if config.queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "PoolConfig::queue must be at least 1",
            ));
        }
        let epoll = sys::epoll_create()?;
        let wake = sys::eventfd()?;
        sys::epoll_ctl(
            epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue);
        let dispatcher_tx = tx.clone();
        let shared = Arc::new(Shared {
            tx: RwLock::new(Some(tx)),
            rx,
            timers: Mutex::new(Timers {
                wheel: Wheel::new(),
                sleep_tick: u64::MAX,
                closed: false,
                fired: 0,
                cancelled: 0,
                skipped: 0,
            }),
            waits: Mutex::new(WaitTable::new()),
            epoll,
            wake,
            origin: Instant::now(),
            counters: (0..config.threads)
                .map(|_| WorkerCounters::default())
                .collect(),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            discard_jobs: AtomicBool::new(false),
            stop: AtomicU8::new(STOP_NONE),
            shutting_down: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            thread_ids: Mutex::new(Vec::new()),
        });

        let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<Result<(), String>>();
        let mut failure = None;
        let mut spawned = 0;
        for index in 0..config.threads {
            let worker = Worker {
                shared: shared.clone(),
                rx: shared.rx.clone(),
                index,
            };
            let factory = factory.clone();
            let ready = ready_tx.clone();
            let spawn = thread::Builder::new()
                .name(format!("{}-{index}", config.name))
                .spawn(move || worker.run(factory, ready));
            match spawn {
                Ok(handle) => {
                    shared.adopt(handle);
                    spawned += 1;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop((ready_tx, factory));
        // Every worker builds its state before start returns, so a factory
        // that panics fails start instead of leaving a worker missing.
        for _ in 0..spawned {
            if failure.is_some() {
                break;
            }
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => failure = Some(io::Error::other(message)),
                Err(_) => failure = Some(io::Error::other("a pool worker exited while starting")),
            }
        }
        if failure.is_none() {
            let dispatcher = shared.clone();
            let spawn = thread::Builder::new()
                .name(format!("{}-timer", config.name))
                .spawn({
                    let tx = dispatcher_tx.clone();
                    move || dispatcher.dispatch(tx)
                });
            match spawn {
                Ok(handle) => shared.adopt(handle),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            // Without a dispatcher its sender is still here: drop it, or the
            // workers would never see the queue disconnect.
            drop(dispatcher_tx);
            shared.shutdown(ShutdownPolicy::Cancel);
            return Err(e);
        }
        Ok(shared)
    }

    fn adopt(&self, handle: JoinHandle<()>) {
        lock(&self.thread_ids).push(handle.thread().id());
        lock(&self.threads).push(handle);
    }

    fn now_ns(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn wake_dispatcher(&self) {
        let _ = sys::eventfd_add(self.wake.as_fd(), 1);
    }

    /// After arming a timer due at `tick`: if the dispatcher sleeps past
    /// it, lowers its wake-up tick and wakes it, once the lock is released
    /// (so the dispatcher does not wake into a held lock).
    fn release_timers_waking_for(&self, mut t: MutexGuard<'_, Timers<S>>, tick: u64) {
        let wake = tick < t.sleep_tick;
        if wake {
            t.sleep_tick = tick;
        }
        drop(t);
        if wake {
            self.wake_dispatcher();
        }
    }

    // ---- submitting -------------------------------------------------------

    pub fn execute(&self, work: Work<S>) -> Result<(), PoolError> {
        let result = {
            let tx = self.tx.read().unwrap_or_else(PoisonError::into_inner);
            match tx.as_ref() {
                Some(tx) => tx.try_send(Job::Work(work)),
                None => Err(TrySendError::Disconnected(Job::Work(work))),
            }
        };
        // The refused item is dropped here, after the lock is released.
        match result {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PoolError::Stopped),
        }
    }

    /// Arms a timer due `delay` from now (`period` ns > 0: periodic).
    pub fn arm(
        &self,
        delay: Duration,
        period: u64,
        callback: TimerCallback<S>,
    ) -> Result<(u32, u64), PoolError> {
        let deadline = self.now_ns().saturating_add(nanos(delay));
        let mut t = lock(&self.timers);
        if t.closed {
            drop(t);
            drop(callback);
            return Err(PoolError::Stopped);
        }
        let (index, id, tick) = t.wheel.insert(deadline, period, callback);
        self.release_timers_waking_for(t, tick);
        Ok((index, id))
    }

    /// Registers a wait on `reg` (a dup of the source's descriptor).
    pub fn register_wait(
        &self,
        reg: OwnedFd,
        obj: Box<dyn WaitObj<S>>,
        kind: WaitKind,
        repeat: bool,
    ) -> Result<(u32, u64), PoolError> {
        let mut t = lock(&self.waits);
        if t.closed {
            drop(t);
            drop((reg, obj));
            return Err(PoolError::Stopped);
        }
        let (index, id) = t.insert(reg, obj, kind, repeat);
        let added = match t.get_mut(index, id).and_then(|e| e.reg.as_ref()) {
            Some(reg) => sys::epoll_ctl(
                self.epoll.as_fd(),
                libc::EPOLL_CTL_ADD,
                reg.as_fd(),
                kind.events(),
                wait_token(index, id),
            ),
            None => Err(io::Error::other("wait entry vanished")),
        };
        if let Err(e) = added {
            let freed = t.free(index);
            drop(t);
            drop(freed);
            return Err(PoolError::Io(e));
        }
        Ok((index, id))
    }

    /// Removes a wait from epoll and frees its entry; the caller drops the
    /// result after releasing the lock.
    fn remove_wait(&self, t: &mut WaitTable<S>, index: u32, id: u64) -> Freed<S> {
        if let Some(reg) = t.get_mut(index, id).and_then(|e| e.reg.as_ref()) {
            let _ = sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_DEL, reg.as_fd(), 0, 0);
        }
        t.free(index)
    }

    pub fn stats(&self) -> PoolStats {
        let (executed, panicked) = self.counters.iter().fold((0, 0), |(e, p), c| {
            (
                e + c.executed.load(Ordering::Relaxed),
                p + c.panicked.load(Ordering::Relaxed),
            )
        });
        let mut stats = PoolStats {
            threads: self.counters.len(),
            executed,
            panicked,
            queued: self.rx.len(),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            ..PoolStats::default()
        };
        {
            let t = lock(&self.timers);
            stats.timers_armed = t.wheel.len();
            stats.timers_fired = t.fired;
            stats.timers_cancelled = t.cancelled;
            stats.timer_beats_skipped = t.skipped;
            stats.timer_memory_bytes = t.wheel.memory_bytes();
        }
        let w = lock(&self.waits);
        stats.waits_active = w.len();
        stats.waits_fired = w.fired;
        stats.waits_cancelled = w.cancelled;
        stats
    }

    // ---- shutdown ---------------------------------------------------------

    pub fn shutdown(&self, policy: ShutdownPolicy) {
        let cancel = policy == ShutdownPolicy::Cancel;
        if cancel {
            self.discard_jobs.store(true, Ordering::Release);
        }
        if !self.shutting_down.swap(true, Ordering::AcqRel) {
            let sender = self
                .tx
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(sender);
            lock(&self.timers).closed = true;
            lock(&self.waits).closed = true;
        }
        // Drain may be upgraded to Cancel by a later call, never downgraded.
        let code = if cancel { STOP_CANCEL } else { STOP_DRAIN };
        self.stop.fetch_max(code, Ordering::AcqRel);
        self.wake_dispatcher();
        if cancel {
            while let Ok(job) = self.rx.try_recv() {
                self.discard(job);
            }
        }
        self.join_threads();
    }

    /// Joins every pool thread, unless called on one of them (a thread
    /// cannot wait for itself; the threads then finish on their own, and a
    /// later `shutdown` or drop of the last handle elsewhere joins them).
    fn join_threads(&self) {
        let me = thread::current().id();
        if lock(&self.thread_ids).contains(&me) {
            return;
        }
        // Held while joining, so a concurrent caller returns only after the
        // threads are gone too.
        let mut threads = lock(&self.threads);
        for handle in mem::take(&mut *threads) {
            if handle.join().is_err() {
                tracing::error!("a pool thread panicked");
            }
        }
    }
}

impl<S: 'static> TimerCancel for Shared<S> {
    fn cancel_timer(&self, index: u32, id: u64) -> bool {
        let mut t = lock(&self.timers);
        let Some(entry) = t.wheel.get_mut(index, id) else {
            return false;
        };
        match entry.state {
            super::wheel::TimerState::Armed => {
                t.cancelled += 1;
                let freed = t.wheel.remove_armed(index);
                drop(t);
                drop(freed);
                true
            }
            _ if entry.cancelled => false,
            _ => {
                // Queued or running: the worker sees the flag.
                entry.cancelled = true;
                true
            }
        }
    }
}

impl<S: 'static> WaitCancel for Shared<S> {
    fn cancel_wait(&self, index: u32, id: u64) -> bool {
        let mut t = lock(&self.waits);
        let Some(entry) = t.get_mut(index, id) else {
            return false;
        };
        match entry.state {
            WaitState::Armed => {
                t.cancelled += 1;
                let freed = self.remove_wait(&mut t, index, id);
                drop(t);
                drop(freed);
                true
            }
            _ if entry.cancelled => false,
            _ => {
                entry.cancelled = true;
                true
            }
        }
    }
}

/// epoll user data for a wait: index in the low half, the id's low 32 bits
/// in the high half (a stale event for a reused slot does not match).
fn wait_token(index: u32, id: u64) -> u64 {
    u64::from(index) | (u64::from(id as u32) << 32)
}

/// One worker thread.
struct Worker<S: 'static> {
    shared: Arc<Shared<S>>,
    rx: Receiver<Job<S>>,
    index: usize,
}

impl<S: 'static> Worker<S> {
    fn run(self, factory: Factory<S>, ready: Sender<Result<(), String>>) {
        let Worker { shared, rx, index } = self;
        let built = panic::catch_unwind(AssertUnwindSafe(|| factory(index)));
        drop(factory);
        let mut state = match built {
            Ok(state) => state,
            Err(payload) => {
                let message = format!(
                    "pool worker {index}: state factory panicked: {}",
                    panic_message(&*payload)
                );
                tracing::error!("{message}");
                let _ = ready.send(Err(message));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        // Ends when every sender is gone (shutdown) and the queue is empty.
        while let Ok(job) = rx.recv() {
            if shared.discard_jobs.load(Ordering::Relaxed) {
                shared.discard(job);
                continue;
            }
            shared.run_job(job, &mut state, index);
        }
        if panic::catch_unwind(AssertUnwindSafe(move || drop(state))).is_err() {
            tracing::error!("pool worker {index}: dropping its state panicked");
        }
    }
}
