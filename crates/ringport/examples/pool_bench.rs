//! Measures `ringport::pool`: work items per second, the cost and memory of
//! armed timers, and wait / timer latency.
//!
//! Run: `cargo run --release -p ringport --example pool_bench [SECTION...]`
//! (sections: `items`, `execute`, `timers`, `waits`, `lateness`; default all)

use std::hint::spin_loop;
use std::mem::size_of;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use ringport::pool::{
    EventMode, EventObject, Pool, PoolConfig, ShutdownPolicy, TimerHandle, WaitMode,
    scheduled_deadline,
};

const ITEMS: usize = 1_000_000;
const TIMERS: usize = 1_000_000;
const SAMPLES: usize = 1_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fmt_us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// 1M no-op items from `submitters` threads; returns items/s and how many
/// `execute` calls met a full queue (and were retried).
fn throughput(submitters: usize) -> (f64, u64) {
    let pool = Pool::start(PoolConfig::default(), |_| ()).unwrap();
    let per = ITEMS / submitters;
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..submitters {
            let pool = pool.clone();
            s.spawn(move || {
                for _ in 0..per {
                    while pool.execute(|_| {}).is_err() {
                        spin_loop();
                    }
                }
            });
        }
    });
    while pool.stats().executed < (per * submitters) as u64 {
        thread::yield_now();
    }
    let elapsed = start.elapsed();
    let rejected = pool.stats().rejected;
    pool.shutdown(ShutdownPolicy::Drain);
    ((per * submitters) as f64 / elapsed.as_secs_f64(), rejected)
}

fn main() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("ringport::pool bench: {cores} cores, {cores} workers, queue 65,536");
    let only: Vec<String> = std::env::args().skip(1).collect();
    let run = |section: &str| only.is_empty() || only.iter().any(|s| s == section);

    for submitters in [1, 2] {
        if !run("items") {
            break;
        }
        let (rate, rejected) = throughput(submitters);
        println!(
            "work items: {:>5.2} M items/s  (1M no-op items from {submitters} submitting thread{}, {rejected} Full retries)",
            rate / 1e6,
            if submitters == 1 { "" } else { "s" },
        );
    }

    // Submit -> start latency with an idle pool.
    if run("execute") {
        let pool = Pool::start(PoolConfig::default(), |_| ()).unwrap();
        let (tx, rx) = bounded(1);
        let mut lat = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let tx = tx.clone();
            let t = Instant::now();
            pool.execute(move |_| tx.send(Instant::now()).unwrap())
                .unwrap();
            lat.push(rx.recv().unwrap() - t);
            thread::sleep(Duration::from_micros(200));
        }
        lat.sort();
        println!(
            "execute -> start latency (idle pool): median {}, p99 {}",
            fmt_us(percentile(&lat, 0.5)),
            fmt_us(percentile(&lat, 0.99))
        );
    }

    // 1M timers: arm, then cancel.
    if run("timers") {
        let pool = Pool::start(PoolConfig::default(), |_| ()).unwrap();
        let mut handles: Vec<TimerHandle> = Vec::with_capacity(TIMERS);
        let rss0 = rss_bytes();
        let start = Instant::now();
        for i in 0..TIMERS {
            // 1 h .. 1 day: spread over the wheel's levels, none fires here.
            let delay = Duration::from_millis(3_600_000 + (i as u64 * 7919) % 82_800_000);
            handles.push(pool.after(delay, |_| {}).unwrap());
        }
        let arm = start.elapsed();
        let rss1 = rss_bytes();
        let stats = pool.stats();
        let start = Instant::now();
        let cancelled = handles.iter().filter(|h| h.cancel()).count();
        let cancel = start.elapsed();
        assert_eq!(cancelled, TIMERS);
        let after = pool.stats();
        let per = |d: Duration| d.as_nanos() as f64 / TIMERS as f64;
        println!(
            "timers: arm {:.0} ns + cancel {:.0} ns = {:.0} ns per timer (1M timers, 1 thread)",
            per(arm),
            per(cancel),
            per(arm + cancel)
        );
        println!(
            "timers: RSS +{:.1} MB for 1M armed = {:.0} B per timer (handle {} B included; \
             pool slab {:.0} B/timer incl. Vec growth slack, entry 64 B); after cancel: \
             timers_armed {}, timer_memory_bytes {}",
            (rss1.saturating_sub(rss0)) as f64 / 1e6,
            rss1.saturating_sub(rss0) as f64 / TIMERS as f64,
            size_of::<TimerHandle>(),
            stats.timer_memory_bytes as f64 / TIMERS as f64,
            after.timers_armed,
            after.timer_memory_bytes
        );
        drop(handles);
        // Steady state: arm one, cancel it, 1M times (slab and caches warm).
        let start = Instant::now();
        for i in 0..TIMERS {
            let delay = Duration::from_millis(3_600_000 + (i as u64 * 7919) % 82_800_000);
            let h = pool.after(delay, |_| {}).unwrap();
            h.cancel();
        }
        println!(
            "timers: arm+cancel pair {:.0} ns (1M pairs, 1 thread, warm); Instant::now() alone {:.0} ns",
            per(start.elapsed()),
            {
                let t = Instant::now();
                let mut x = t;
                for _ in 0..TIMERS {
                    x = std::hint::black_box(Instant::now());
                }
                per(x - t)
            }
        );
        pool.shutdown(ShutdownPolicy::Drain);
    }

    // Wait latency: set() -> callback start, auto-reset event, Repeat wait.
    if run("waits") {
        let pool = Pool::start(PoolConfig::default(), |_| ()).unwrap();
        let event = EventObject::new(EventMode::AutoReset).unwrap();
        let (tx, rx) = bounded(1);
        pool.wait(event.clone(), WaitMode::Repeat, move |_, _| {
            tx.send(Instant::now()).unwrap();
        })
        .unwrap();
        let mut lat = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let t = Instant::now();
            event.set();
            lat.push(rx.recv().unwrap() - t);
            thread::sleep(Duration::from_micros(200));
        }
        lat.sort();
        println!(
            "wait latency (EventObject::set -> callback, {SAMPLES} samples): median {}, p99 {}, max {}",
            fmt_us(percentile(&lat, 0.5)),
            fmt_us(percentile(&lat, 0.99)),
            fmt_us(lat[lat.len() - 1])
        );
        pool.shutdown(ShutdownPolicy::Drain);

        // For scale: the same two thread wake-ups (dispatcher, then worker)
        // done with plain channels, same pacing.
        let (ab_tx, ab_rx) = bounded::<Instant>(1);
        let (bc_tx, bc_rx) = bounded::<Instant>(1);
        let (ca_tx, ca_rx) = bounded::<Instant>(1);
        let hop1 = thread::spawn(move || {
            for t in ab_rx {
                bc_tx.send(t).unwrap();
            }
        });
        let hop2 = thread::spawn(move || {
            for _ in bc_rx {
                ca_tx.send(Instant::now()).unwrap();
            }
        });
        let mut base = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let t = Instant::now();
            ab_tx.send(t).unwrap();
            base.push(ca_rx.recv().unwrap() - t);
            thread::sleep(Duration::from_micros(200));
        }
        drop(ab_tx);
        hop1.join().unwrap();
        hop2.join().unwrap();
        base.sort();
        println!(
            "  baseline: two thread hand-offs over plain channels, same pacing: median {}",
            fmt_us(percentile(&base, 0.5))
        );
    }

    // Timer lateness: deadline -> callback start for 2 ms one-shot timers
    // (armed at a random phase within the millisecond).
    if run("lateness") {
        let pool = Pool::start(PoolConfig::default(), |_| ()).unwrap();
        let (tx, rx) = bounded(1);
        let mut late = Vec::with_capacity(200);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            thread::sleep(Duration::from_micros(seed % 1000));
            let tx = tx.clone();
            pool.after(Duration::from_millis(2), move |_| {
                tx.send(Instant::now() - scheduled_deadline().unwrap())
                    .unwrap();
            })
            .unwrap();
            late.push(rx.recv().unwrap());
        }
        late.sort();
        println!(
            "timer lateness (after(2 ms), 200 samples): median {}, p99 {}, max {}",
            fmt_us(percentile(&late, 0.5)),
            fmt_us(percentile(&late, 0.99)),
            fmt_us(late[late.len() - 1])
        );
        pool.shutdown(ShutdownPolicy::Drain);
    }
}
