//! `ringport::pool`: work items, per-worker state, timers, waits, shutdown.
//!
//! Timing checks are one-sided or generous (seconds), and every wait for a
//! callback is bounded, so a loaded machine makes these slower, not flaky.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use ringport::pool::{
    EventMode, EventObject, Pool, PoolConfig, PoolError, ShutdownPolicy, WaitMode, cancel_current,
    pidfd, scheduled_deadline,
};

/// Upper bound for anything that should happen "soon".
const LONG: Duration = Duration::from_secs(10);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(150);

fn config(threads: usize) -> PoolConfig {
    PoolConfig {
        threads,
        name: "test-pool".into(),
        ..PoolConfig::default()
    }
}

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(LONG).expect("callback did not run in time")
}

fn assert_quiet<T: std::fmt::Debug>(rx: &Receiver<T>) {
    match rx.recv_timeout(QUIET) {
        // Disconnected: the callback (and its sender) is gone.
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        other => panic!("unexpected callback: {other:?}"),
    }
}

/// Polls `cond` until it holds (bounded).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Occupies the pool's single worker until the returned sender is used (or
/// dropped); returns once the blocker is running.
fn block_worker<S: 'static>(pool: &Pool<S>) -> Sender<()> {
    let (release_tx, release_rx) = bounded::<()>(1);
    let (started_tx, started_rx) = bounded(1);
    pool.execute(move |_| {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(LONG);
    })
    .unwrap();
    recv(&started_rx);
    release_tx
}

#[test]
fn items_start_in_fifo_order_with_one_worker() {
    struct Recorder {
        seen: Vec<usize>,
        out: Sender<Vec<usize>>,
    }
    impl Drop for Recorder {
        fn drop(&mut self) {
            let _ = self.out.send(std::mem::take(&mut self.seen));
        }
    }
    let (out_tx, out_rx) = unbounded();
    let pool = Pool::start(config(1), move |_| Recorder {
        seen: Vec::new(),
        out: out_tx.clone(),
    })
    .unwrap();
    for i in 0..10_000 {
        pool.execute(move |r| r.seen.push(i)).unwrap();
    }
    pool.shutdown(ShutdownPolicy::Drain);
    let seen = recv(&out_rx);
    assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    assert_eq!(pool.stats().executed, 10_000);
}

#[test]
fn per_worker_state_is_built_on_its_thread_before_items_and_dropped_there() {
    type Log = Arc<Mutex<Vec<(usize, ThreadId, Option<String>)>>>;
    struct State {
        index: usize,
        thread: ThreadId,
        dropped: Log,
    }
    impl Drop for State {
        fn drop(&mut self) {
            assert_eq!(thread::current().id(), self.thread);
            self.dropped
                .lock()
                .unwrap()
                .push((self.index, self.thread, None));
        }
    }
    let built: Log = Arc::default();
    let dropped: Log = Arc::default();
    let (b, d) = (built.clone(), dropped.clone());
    let pool = Pool::start(config(2), move |index| {
        let me = thread::current();
        b.lock()
            .unwrap()
            .push((index, me.id(), me.name().map(String::from)));
        State {
            index,
            thread: me.id(),
            dropped: d.clone(),
        }
    })
    .unwrap();
    // start() returns once every state exists.
    let mut built_now = built.lock().unwrap().clone();
    built_now.sort_by_key(|e| e.0);
    assert_eq!(built_now.len(), 2);
    for (i, (index, thread, name)) in built_now.iter().enumerate() {
        assert_eq!(*index, i);
        assert_ne!(*thread, thread::current().id());
        assert_eq!(name.as_deref(), Some(format!("test-pool-{i}").as_str()));
    }
    assert_ne!(built_now[0].1, built_now[1].1);

    let mismatches = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        let (m, r) = (mismatches.clone(), ran.clone());
        pool.execute(move |s: &mut State| {
            if s.thread != thread::current().id() {
                m.fetch_add(1, Ordering::Relaxed);
            }
            r.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    assert!(dropped.lock().unwrap().is_empty());
    pool.shutdown(ShutdownPolicy::Drain);
    assert_eq!(ran.load(Ordering::Relaxed), 1000);
    assert_eq!(mismatches.load(Ordering::Relaxed), 0);
    let mut dropped_now = dropped.lock().unwrap().clone();
    dropped_now.sort_by_key(|e| e.0);
    let pairs =
        |v: &[(usize, ThreadId, Option<String>)]| v.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>();
    assert_eq!(
        pairs(&dropped_now),
        pairs(&built_now),
        "each state dropped once, on its thread"
    );
    // Built exactly once per worker.
    assert_eq!(built.lock().unwrap().len(), 2);
}

#[test]
fn factory_panic_fails_start_and_drops_the_states_already_built() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let d = drops.clone();
    let err = Pool::start(config(2), move |index| {
        if index == 1 {
            panic!("no state for worker 1");
        }
        Counted(d.clone())
    })
    .unwrap_err();
    assert!(err.to_string().contains("no state for worker 1"), "{err}");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn zero_threads_or_queue_is_invalid() {
    for cfg in [
        PoolConfig {
            threads: 0,
            ..config(1)
        },
        PoolConfig {
            queue: 0,
            ..config(1)
        },
    ] {
        let err = Pool::start(cfg, |_| ()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn a_panicking_item_is_contained_and_the_worker_goes_on() {
    let pool = Pool::start(config(1), |_| 0u64).unwrap();
    pool.execute(|_| panic!("item panics on purpose")).unwrap();
    let (tx, rx) = unbounded();
    pool.execute(move |count| {
        *count += 1;
        tx.send(*count).unwrap();
    })
    .unwrap();
    // Same worker, same state: the counter continued.
    assert_eq!(recv(&rx), 1);

    // A periodic timer that panics on every beat keeps beating.
    let (beat_tx, beat_rx) = unbounded();
    let timer = pool
        .every(Duration::from_millis(5), move |_| {
            beat_tx.send(()).unwrap();
            panic!("beat panics on purpose");
        })
        .unwrap();
    for _ in 0..3 {
        recv(&beat_rx);
    }
    timer.cancel();
    eventually("panics counted", || pool.stats().panicked >= 4);
    let stats = pool.stats();
    assert_eq!(stats.executed, stats.panicked + 1);
}

#[test]
fn after_fires_not_before_its_deadline() {
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let (tx, rx) = unbounded();
    let mut expected = Vec::new();
    for ms in [0u64, 1, 5, 20, 50] {
        let delay = Duration::from_millis(ms);
        let before = Instant::now();
        let tx = tx.clone();
        pool.after(delay, move |_| {
            tx.send((ms, Instant::now(), scheduled_deadline())).unwrap();
        })
        .unwrap();
        let after = Instant::now();
        expected.push((ms, before + delay, after + delay));
    }
    for _ in 0..expected.len() {
        let (ms, ran, deadline) = recv(&rx);
        let &(_, earliest, latest) = expected.iter().find(|e| e.0 == ms).unwrap();
        let deadline = deadline.expect("scheduled_deadline inside a timer");
        assert!(
            deadline >= earliest && deadline <= latest,
            "{ms} ms: deadline off"
        );
        assert!(ran >= deadline, "{ms} ms timer ran before its deadline");
        assert!(
            ran - deadline < Duration::from_secs(2),
            "{ms} ms timer far too late"
        );
    }
    assert_eq!(scheduled_deadline(), None);
    eventually("counters settle", || pool.stats().timers_armed == 0);
    assert_eq!(pool.stats().timers_fired, 5);
}

#[test]
fn cancel_before_the_deadline_means_it_never_runs() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let timer = pool
        .after(Duration::from_millis(100), move |_| {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    assert_eq!(pool.stats().timers_armed, 1);
    assert!(timer.cancel());
    assert!(!timer.cancel(), "second cancel has nothing to cancel");
    assert_eq!(pool.stats().timers_armed, 0);
    // A later timer as a fence: timers fire in deadline order, so once it
    // ran, the cancelled one would have.
    let (fence_tx, fence) = bounded(1);
    pool.after(Duration::from_millis(150), move |_| {
        let _ = fence_tx.send(());
    })
    .unwrap();
    fence.recv_timeout(LONG).expect("the fence timer runs");
    assert!(!ran.load(Ordering::SeqCst));

    // A timer that is due and already queued behind a busy worker, but not
    // started, is cancelled too.
    let release = block_worker(&pool);
    let r = ran.clone();
    let queued = pool
        .after(Duration::from_millis(1), move |_| {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    eventually("timer queued", || pool.stats().queued == 1);
    assert!(queued.cancel());
    release.send(()).unwrap();
    eventually("queue drained", || pool.stats().timers_armed == 0);
    pool.shutdown(ShutdownPolicy::Drain);
    assert!(!ran.load(Ordering::SeqCst));
    let stats = pool.stats();
    assert_eq!(stats.timers_fired, 1, "the fence only");
    assert_eq!(stats.timers_cancelled, 2);
}

#[test]
fn every_keeps_its_phase_without_cumulative_drift() {
    const BEATS: usize = 20;
    let period = Duration::from_millis(10);
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let (tx, rx) = unbounded();
    let mut n = 0;
    let before = Instant::now();
    let timer = pool
        .every(period, move |_| {
            n += 1;
            tx.send((scheduled_deadline().unwrap(), Instant::now()))
                .unwrap();
            if n == BEATS {
                assert!(cancel_current());
            }
        })
        .unwrap();
    let after = Instant::now();
    let beats: Vec<(Instant, Instant)> = (0..BEATS).map(|_| recv(&rx)).collect();
    assert_quiet(&rx);
    assert!(!timer.cancel(), "cancel_current already stopped it");

    let first = beats[0].0;
    assert!(first >= before + period && first <= after + period);
    let mut previous = None;
    for &(deadline, ran) in &beats {
        assert!(ran >= deadline, "beat ran before its deadline");
        // Every beat is on the grid first + k * period.
        let offset = deadline - first;
        assert_eq!(
            offset.as_nanos() % period.as_nanos(),
            0,
            "beat off the grid"
        );
        if let Some(p) = previous {
            assert!(deadline > p);
        }
        previous = Some(deadline);
    }
    // Beats skipped (only on a badly loaded machine) are exactly the gaps.
    let last = beats[BEATS - 1].0;
    let steps = ((last - first).as_nanos() / period.as_nanos()) as u64;
    let stats = pool.stats();
    assert_eq!(steps, (BEATS as u64 - 1) + stats.timer_beats_skipped);
    if stats.timer_beats_skipped == 0 {
        // The 20th beat's deadline is 200 ms after start, not 200 ms plus
        // the lateness of 20 runs.
        assert!(last - before >= period * 20 && last - after <= period * 20);
    }
    assert_eq!(stats.timers_armed, 0);
}

#[test]
fn every_skips_missed_beats_and_keeps_the_phase() {
    let period = Duration::from_millis(20);
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let (tx, rx) = unbounded();
    let mut runs = 0;
    let timer = pool
        .every(period, move |_| {
            let deadline = scheduled_deadline().unwrap();
            runs += 1;
            if runs == 1 {
                thread::sleep(Duration::from_millis(70)); // 3.5 periods late
            } else {
                // Stopped from inside the second beat: no later beat is
                // filed, so no lateness of this one (a loaded machine) is
                // counted as skips beyond the gap measured below.
                assert!(cancel_current());
            }
            tx.send((deadline, Instant::now())).unwrap();
        })
        .unwrap();
    let (d0, end0) = recv(&rx);
    let (d1, _) = recv(&rx);
    assert_quiet(&rx);
    assert!(!timer.cancel(), "cancel_current already stopped it");
    let gap = d1 - d0;
    assert_eq!(gap.as_nanos() % period.as_nanos(), 0, "phase kept");
    assert!(d1 >= end0, "the next beat is not in the past");
    let skipped = (gap.as_nanos() / period.as_nanos()) as u64 - 1;
    assert!(
        skipped >= 3,
        "70 ms overrun of a 20 ms period skips at least 3 beats"
    );
    assert_eq!(pool.stats().timer_beats_skipped, skipped);
}

#[test]
fn a_hundred_thousand_timers_armed_then_cancelled_leave_nothing() {
    const N: usize = 100_000;
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            // Spread over every wheel level: 1.5 s .. ~1 day.
            let delay = Duration::from_millis(1500 + (i as u64 * 7919) % 86_400_000);
            let fired = fired.clone();
            pool.after(delay, move |_| {
                fired.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
        })
        .collect();
    let stats = pool.stats();
    assert_eq!(stats.timers_armed, N);
    assert!(stats.timer_memory_bytes >= N * 64);
    assert!(handles.iter().all(|h| h.cancel()));
    let stats = pool.stats();
    assert_eq!(stats.timers_armed, 0);
    assert_eq!(stats.timer_memory_bytes, 0, "slab released");
    assert_eq!(stats.timers_cancelled, N as u64);
    // Past the earliest deadline: nothing fires.
    let earliest = start + Duration::from_millis(1600);
    thread::sleep(earliest.saturating_duration_since(Instant::now()));
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stats().timers_fired, 0);
    // The callbacks (and their captured Arcs) are gone.
    assert_eq!(Arc::strong_count(&fired), 1);
}

#[test]
fn auto_reset_event_wait_fires_once_per_set() {
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let event = EventObject::new(EventMode::AutoReset).unwrap();
    assert!(!event.is_set());
    let (tx, rx) = unbounded();
    let wait = pool
        .wait(
            event.clone(),
            WaitMode::Repeat,
            move |_, ev: &EventObject| {
                tx.send(ev.is_set()).unwrap();
            },
        )
        .unwrap();
    for _ in 0..5 {
        event.set();
        // The wait consumed the signal before the callback ran.
        assert!(!recv(&rx));
        thread::sleep(Duration::from_millis(20));
    }
    assert_quiet(&rx);
    assert!(!event.is_set());
    assert_eq!(pool.stats().waits_fired, 5);
    assert!(wait.cancel());

    // Two waits on one auto-reset event: one set() wakes exactly one.
    let (tx, rx) = unbounded();
    for name in ["a", "b"] {
        let tx = tx.clone();
        pool.wait(event.clone(), WaitMode::Repeat, move |_, _| {
            tx.send(name).unwrap();
        })
        .unwrap();
    }
    event.set();
    recv(&rx);
    assert_quiet(&rx);
    event.set();
    recv(&rx);
    assert_quiet(&rx);
}

#[test]
fn manual_reset_event_stays_set_and_repeat_fires_per_set_edge() {
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let event = EventObject::new(EventMode::ManualReset).unwrap();
    assert_eq!(event.mode(), EventMode::ManualReset);

    let (tx, rx) = unbounded();
    let t = tx.clone();
    pool.wait(event.clone(), WaitMode::Once, move |_, ev: &EventObject| {
        t.send(("once", ev.is_set())).unwrap();
    })
    .unwrap();
    assert_quiet(&rx);
    event.set();
    assert_eq!(recv(&rx), ("once", true), "fires, and the event stays set");
    assert!(event.is_set());

    // A wait registered while it is set fires at once.
    let t = tx.clone();
    pool.wait(event.clone(), WaitMode::Once, move |_, _| {
        t.send(("late", true)).unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx).0, "late");

    // Repeat: once for the current set edge, not continuously.
    let t = tx.clone();
    let repeat = pool
        .wait(event.clone(), WaitMode::Repeat, move |_, _| {
            t.send(("repeat", true)).unwrap();
        })
        .unwrap();
    assert_eq!(recv(&rx).0, "repeat");
    assert_quiet(&rx);
    event.set(); // already set: no new edge
    assert_quiet(&rx);
    event.reset();
    assert!(!event.is_set());
    assert_quiet(&rx);
    event.set(); // a new edge
    assert_eq!(recv(&rx).0, "repeat");
    assert_quiet(&rx);
    assert!(repeat.cancel());
    eventually("waits gone", || pool.stats().waits_active == 0);
}

#[test]
fn wait_on_a_pipe_read_end() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let (tx, rx) = unbounded();
    pool.wait(
        reader,
        WaitMode::Repeat,
        move |_, r: &std::io::PipeReader| {
            let mut buf = [0u8; 64];
            let n = (&*r).read(&mut buf).unwrap();
            if n == 0 {
                assert!(cancel_current()); // EOF: stop watching
            }
            tx.send(buf[..n].to_vec()).unwrap();
        },
    )
    .unwrap();
    writer.write_all(b"hello").unwrap();
    assert_eq!(recv(&rx), b"hello");
    writer.write_all(b"again").unwrap();
    assert_eq!(recv(&rx), b"again");
    drop(writer);
    assert_eq!(recv(&rx), b"");
    assert_quiet(&rx);
    eventually("wait ended", || pool.stats().waits_active == 0);
    assert_eq!(pool.stats().waits_fired, 3);
}

#[test]
fn pidfd_wait_fires_when_the_child_exits() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let spawned = Instant::now();
    let mut child = Command::new("sleep").arg("0.1").spawn().unwrap();
    let fd = pidfd(&child).unwrap();
    let (tx, rx) = unbounded();
    pool.wait(fd, WaitMode::Once, move |_, _| {
        tx.send(Instant::now()).unwrap()
    })
    .unwrap();
    let fired = recv(&rx);
    assert!(
        fired - spawned >= Duration::from_millis(100),
        "fired before the child could exit"
    );
    // Readiness means exited: reaping returns at once.
    let status = child.try_wait().unwrap().expect("child has exited");
    assert!(status.success());
    eventually("once-wait ended", || pool.stats().waits_active == 0);
}

#[test]
fn cancel_a_wait_drops_its_source_and_it_never_fires() {
    struct Source {
        event: EventObject,
        dropped: Arc<AtomicBool>,
    }
    impl AsFd for Source {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.event.as_fd()
        }
    }
    impl Drop for Source {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let event = EventObject::new(EventMode::AutoReset).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let source = Source {
        event: event.clone(),
        dropped: dropped.clone(),
    };
    let (tx, rx) = unbounded();
    let wait = pool
        .wait(source, WaitMode::Repeat, move |_, _| tx.send(()).unwrap())
        .unwrap();
    assert_eq!(pool.stats().waits_active, 1);
    assert!(wait.cancel());
    assert!(dropped.load(Ordering::SeqCst), "source dropped on cancel");
    assert!(!wait.cancel());
    event.set();
    assert_quiet(&rx);
    let stats = pool.stats();
    assert_eq!(
        (stats.waits_active, stats.waits_fired, stats.waits_cancelled),
        (0, 0, 1)
    );

    // A wait whose readiness is already queued (worker busy) is cancelled
    // too: its callback never starts.
    let release = block_worker(&pool);
    let (tx, rx) = unbounded();
    let wait = pool
        .wait(event.clone(), WaitMode::Once, move |_, _| {
            tx.send(()).unwrap()
        })
        .unwrap();
    event.set();
    eventually("wait queued", || pool.stats().queued == 1);
    assert!(wait.cancel());
    release.send(()).unwrap();
    assert_quiet(&rx);
    assert_eq!(pool.stats().waits_active, 0);
}

#[test]
fn a_repeat_wait_never_runs_concurrently_with_itself() {
    let pool = Pool::start(config(2), |_| ()).unwrap();
    let event = EventObject::new(EventMode::AutoReset).unwrap();
    let busy = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, o, c) = (busy.clone(), overlaps.clone(), calls.clone());
    pool.wait(event.clone(), WaitMode::Repeat, move |_, _| {
        if b.swap(true, Ordering::SeqCst) {
            o.fetch_add(1, Ordering::SeqCst);
        }
        thread::sleep(Duration::from_micros(500));
        c.fetch_add(1, Ordering::SeqCst);
        b.store(false, Ordering::SeqCst);
    })
    .unwrap();
    for _ in 0..200 {
        event.set();
        thread::sleep(Duration::from_micros(100));
    }
    eventually("some callbacks", || calls.load(Ordering::SeqCst) > 0);
    pool.shutdown(ShutdownPolicy::Drain);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert!(calls.load(Ordering::SeqCst) <= 200);
}

#[test]
fn waiting_on_a_regular_file_is_an_io_error() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    match pool.wait(file, WaitMode::Once, |_, _| {}) {
        Err(PoolError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc_eperm())),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert_eq!(pool.stats().waits_active, 0);
}

fn libc_eperm() -> i32 {
    1 // EPERM: epoll does not watch regular files
}

#[test]
fn shutdown_drain_runs_queued_items_and_due_timers() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let release = block_worker(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let ran = ran.clone();
        pool.execute(move |_| {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let due = Arc::new(AtomicBool::new(false));
    let later = Arc::new(AtomicBool::new(false));
    let (d, l) = (due.clone(), later.clone());
    pool.after(Duration::ZERO, move |_| d.store(true, Ordering::SeqCst))
        .unwrap();
    pool.after(Duration::from_secs(60), move |_| {
        l.store(true, Ordering::SeqCst)
    })
    .unwrap();
    eventually("due timer queued", || pool.stats().queued == 101);

    let p = pool.clone();
    let stopper = thread::spawn(move || p.shutdown(ShutdownPolicy::Drain));
    eventually("shutdown begun", || {
        matches!(pool.execute(|_| {}), Err(PoolError::Stopped))
    });
    release.send(()).unwrap();
    stopper.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 100);
    assert!(due.load(Ordering::SeqCst));
    assert!(!later.load(Ordering::SeqCst));
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.dropped, stats.timers_armed), (0, 0, 0));
}

#[test]
fn shutdown_cancel_drops_queued_items_unrun() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let release = block_worker(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let (ran, guard) = (ran.clone(), Guard(dropped.clone()));
        pool.execute(move |_| {
            let _guard = guard;
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let event = EventObject::new(EventMode::AutoReset).unwrap();
    pool.wait(event.clone(), WaitMode::Repeat, |_, _| {})
        .unwrap();
    let p = pool.clone();
    let stopper = thread::spawn(move || p.shutdown(ShutdownPolicy::Cancel));
    eventually("items dropped", || dropped.load(Ordering::SeqCst) == 100);
    release.send(()).unwrap();
    stopper.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let stats = pool.stats();
    assert_eq!(stats.dropped, 100);
    assert_eq!(
        (stats.queued, stats.waits_active, stats.timers_armed),
        (0, 0, 0)
    );
}

#[test]
fn everything_after_shutdown_is_stopped() {
    let pool = Pool::start(config(1), |_| ()).unwrap();
    pool.shutdown(ShutdownPolicy::Drain);
    pool.shutdown(ShutdownPolicy::Cancel); // idempotent
    assert!(matches!(pool.execute(|_| {}), Err(PoolError::Stopped)));
    assert!(matches!(
        pool.after(Duration::ZERO, |_| {}),
        Err(PoolError::Stopped)
    ));
    assert!(matches!(
        pool.every(Duration::from_millis(1), |_| {}),
        Err(PoolError::Stopped)
    ));
    let event = EventObject::new(EventMode::AutoReset).unwrap();
    assert!(matches!(
        pool.wait(event, WaitMode::Once, |_, _| {}),
        Err(PoolError::Stopped)
    ));
}

#[test]
fn a_full_queue_is_reported() {
    let pool = Pool::start(
        PoolConfig {
            queue: 4,
            ..config(1)
        },
        |_| (),
    )
    .unwrap();
    let release = block_worker(&pool);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        let ran = ran.clone();
        pool.execute(move |_| {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    assert!(matches!(pool.execute(|_| {}), Err(PoolError::Full)));
    assert_eq!(pool.stats().rejected, 1);
    assert_eq!(pool.stats().queued, 4);
    release.send(()).unwrap();
    pool.shutdown(ShutdownPolicy::Drain);
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

#[test]
fn dropping_the_last_handle_drains_and_joins() {
    let states_alive = Arc::new(AtomicUsize::new(0));
    struct State(Arc<AtomicUsize>);
    impl Drop for State {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let alive = states_alive.clone();
    let pool = Pool::start(config(2), move |_| {
        alive.fetch_add(1, Ordering::SeqCst);
        State(alive.clone())
    })
    .unwrap();
    assert_eq!(states_alive.load(Ordering::SeqCst), 2);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        let ran = ran.clone();
        pool.execute(move |_| {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    // A periodic timer holding only a weak handle does not keep it alive.
    let weak = pool.downgrade();
    let timer = pool
        .every(Duration::from_millis(1), move |_| {
            let _ = weak.upgrade();
        })
        .unwrap();
    drop(pool);
    assert_eq!(ran.load(Ordering::SeqCst), 1000);
    assert_eq!(
        states_alive.load(Ordering::SeqCst),
        0,
        "states dropped, threads joined"
    );
    assert!(!timer.cancel(), "pool is gone");
}

#[test]
fn shutdown_from_inside_a_callback_does_not_deadlock() {
    let (done_tx, done_rx) = bounded(1);
    thread::spawn(move || {
        let pool = Pool::start(
            PoolConfig {
                queue: 2,
                ..config(1)
            },
            |_| (),
        )
        .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let p = pool.clone();
        pool.execute(move |_| {
            // Fills the queue, then shuts down from the only worker.
            thread::sleep(Duration::from_millis(20));
            p.shutdown(ShutdownPolicy::Drain);
        })
        .unwrap();
        let mut accepted = 0;
        for _ in 0..3 {
            let ran = ran.clone();
            if pool
                .execute(move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .is_ok()
            {
                accepted += 1;
            }
        }
        // Due at once, while the queue is full: the dispatcher waits for room.
        pool.after(Duration::ZERO, |_| {}).ok();
        pool.shutdown(ShutdownPolicy::Drain);
        done_tx
            .send((accepted, ran.load(Ordering::SeqCst)))
            .unwrap();
    });
    let (accepted, ran) = done_rx.recv_timeout(LONG).expect("shutdown deadlocked");
    assert!(accepted >= 1);
    assert_eq!(ran, accepted, "drain ran everything accepted");
}

#[test]
fn cancel_current_outside_a_repeating_callback_does_nothing() {
    assert!(!cancel_current());
    let pool = Pool::start(config(1), |_| ()).unwrap();
    let (tx, rx) = unbounded();
    pool.execute(move |_| tx.send(cancel_current()).unwrap())
        .unwrap();
    assert!(!recv(&rx));
}

#[test]
fn worker_state_need_not_be_send() {
    // An Rc never leaves its worker thread, so the pool accepts it.
    let pool = Pool::start(config(2), std::rc::Rc::new).unwrap();
    let (tx, rx) = unbounded();
    pool.execute(move |rc: &mut std::rc::Rc<usize>| tx.send(**rc < 2).unwrap())
        .unwrap();
    assert!(recv(&rx));
}
