//! The machinery behind [`Pool`](super::Pool): shared state, the worker
//! loop, the dispatcher thread (timer wheel + epoll) and shutdown.

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

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use super::sys;
use super::waits::{Freed, WaitKind, WaitObj, WaitState, WaitTable};
use super::wheel::{TICK_NS, Wheel, tick_containing};
use super::{PoolConfig, PoolError, PoolStats, ShutdownPolicy};

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

/// Single-writer increment (no read-modify-write on the bus).
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

const STOP_NONE: u8 = 0;
const STOP_DRAIN: u8 = 1;
const STOP_CANCEL: u8 = 2;
/// The dispatcher wakes at least this often (ticks: 1 s), so only timers
/// due sooner than that can need a wake-up when armed.
const MAX_SLEEP_TICKS: u64 = 1000;
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
        let wake = tick < t.sleep_tick;
        if wake {
            t.sleep_tick = tick;
        }
        drop(t);
        if wake {
            self.wake_dispatcher();
        }
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

    fn run_job(&self, job: Job<S>, state: &mut S, worker: usize) {
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
                    e.state = super::wheel::TimerState::Running;
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
        let wake = tick < t.sleep_tick;
        if wake {
            t.sleep_tick = tick;
        }
        drop(t);
        if wake {
            self.wake_dispatcher();
        }
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
    fn discard(&self, job: Job<S>) {
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

    // ---- the dispatcher ---------------------------------------------------

    /// The dispatcher thread: advances the wheel, sleeps in `epoll_wait`
    /// until the next timer tick, a ready wait or a wake-up, and hands due
    /// callbacks to the work queue.
    fn dispatch(self: Arc<Self>, tx: Sender<Job<S>>) {
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

fn entry_mut<S>(t: &mut WaitTable<S>, index: u32, id: u64) -> &mut super::waits::WaitEntry<S> {
    t.get_mut(index, id)
        .expect("wait entry checked under this lock")
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
