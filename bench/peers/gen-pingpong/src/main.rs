//! gen-pingpong: the smallest ping-pong load generator we could write, to
//! check whether `ringport bench` is the bottleneck of a run.
//!
//! Each connection sends one frame (a 4-byte big-endian length, then the
//! payload), reads the echo back, and sends the next: depth 1, the scenario of
//! `bench/compare.sh` rows d and e. It does the least a generator can do per
//! message: one nonblocking readiness loop per thread (mio, epoll), the same
//! prebuilt frame sent every time, echoes read into one scratch buffer and
//! only counted (with `--verify 1`, also compared with what was sent). No
//! histograms, no pacing, no framing library: whatever it reaches, a
//! generator that does more per message cannot beat on the same cores.
//!
//! `--addr` is the server, `--threads` the generator threads (connections are
//! dealt round-robin). It prints messages per second and its own CPU time per
//! message (getrusage), and exits non-zero on any error, short echo or
//! mismatch.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use peer_common::{Args, HEADER_LEN, MAX_FRAME};

/// One connection's progress through its current round trip.
struct Conn {
    stream: TcpStream,
    /// Bytes of the frame written so far.
    sent: usize,
    /// Bytes of the echo read so far.
    received: usize,
}

fn main() {
    let args = Args::parse(
        "gen-pingpong",
        "minimal depth-1 ping-pong load generator (--addr is the server to load)",
        &[
            ("connections", "connections (default 10)"),
            ("size", "payload bytes per frame (default 65536)"),
            ("seconds", "measured seconds (default 5)"),
            ("warmup", "seconds before measuring (default 1)"),
            (
                "verify",
                "1 = compare every echo with what was sent (default 0)",
            ),
        ],
    );
    let conns = args.get_usize("connections", 10);
    let size = args.get_usize("size", 65536);
    let seconds = args.get_usize("seconds", 5);
    let warmup = args.get_usize("warmup", 1);
    let verify = args.get_usize("verify", 0) != 0;
    if conns == 0 || size > MAX_FRAME || seconds == 0 {
        eprintln!("gen-pingpong: need --connections >= 1, --size <= {MAX_FRAME}, --seconds >= 1");
        process::exit(2);
    }
    let threads = args.threads.min(conns);
    let frame = build_frame(size);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(warmup as u64);
    let stop = measure_from + Duration::from_secs(seconds as u64);

    let mut handles = Vec::new();
    for t in 0..threads {
        let count = conns / threads + usize::from(t < conns % threads);
        let frame = frame.clone();
        let addr = args.addr;
        handles.push(thread::spawn(move || {
            run_thread(addr, count, &frame, verify, measure_from, stop)
        }));
    }
    // The warm-up's CPU is left out: sample it when measuring starts.
    thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let cpu_before = process_cpu_seconds();
    let mut total = 0u64;
    for h in handles {
        match h.join().expect("generator thread panicked") {
            Ok(n) => total += n,
            Err(e) => {
                eprintln!("gen-pingpong: {e}");
                process::exit(1);
            }
        }
    }
    let cpu = process_cpu_seconds() - cpu_before;
    if total == 0 {
        eprintln!("gen-pingpong: no echo completed in the measured {seconds} s");
        process::exit(1);
    }
    let rate = total as f64 / seconds as f64;
    println!(
        "gen-pingpong: {rate:.0} msg/s over {seconds} s ({total} echoes, {conns} connections x {size} B, {threads} thread(s)); generator CPU {:.2} us/msg",
        cpu * 1e6 / total as f64
    );
}

/// The frame every connection sends: header, then `size` bytes of a pattern.
fn build_frame(size: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend((0..size).map(|i| (i % 251) as u8));
    frame
}

/// Runs `count` connections until `stop`; returns the echoes completed
/// between `measure_from` and `stop`.
fn run_thread(
    addr: SocketAddr,
    count: usize,
    frame: &[u8],
    verify: bool,
    measure_from: Instant,
    stop: Instant,
) -> io::Result<u64> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let std_stream = std::net::TcpStream::connect(addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            stream,
            sent: 0,
            received: 0,
        });
    }
    let mut scratch = vec![0u8; frame.len().clamp(64 * 1024, 1 << 20)];
    let mut events = Events::with_capacity(1024);
    let mut measured = 0u64;
    loop {
        let now = Instant::now();
        if now >= stop {
            return Ok(measured);
        }
        poll.poll(&mut events, Some(stop - now))?;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            let done = drive(conn, frame, &mut scratch, verify)?;
            if Instant::now() >= measure_from {
                measured += done;
            }
        }
    }
}

/// Writes and reads as far as the socket allows (edge-triggered readiness);
/// returns the round trips completed. Reads while a large frame is still
/// going out, since a byte-stream echo sends it back as it arrives.
fn drive(conn: &mut Conn, frame: &[u8], scratch: &mut [u8], verify: bool) -> io::Result<u64> {
    let mut done = 0;
    loop {
        let mut progressed = false;
        if conn.sent < frame.len() {
            match conn.stream.write(&frame[conn.sent..]) {
                Ok(n) => {
                    conn.sent += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // No more than was sent can come back: a longer echo would be read
        // as the next round trip's and caught by `--verify`, or by the
        // server's next length.
        let want = (conn.sent - conn.received).min(scratch.len());
        if want > 0 {
            match conn.stream.read(&mut scratch[..want]) {
                Ok(0) => return Err(io::Error::other("the server closed a connection")),
                Ok(n) => {
                    if verify && scratch[..n] != frame[conn.received..conn.received + n] {
                        return Err(io::Error::other(format!(
                            "echo differs from what was sent within bytes {}..{}",
                            conn.received,
                            conn.received + n
                        )));
                    }
                    conn.received += n;
                    progressed = true;
                    if conn.received == frame.len() {
                        conn.sent = 0;
                        conn.received = 0;
                        done += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !progressed {
            return Ok(done);
        }
    }
}

/// This process's user + system CPU time so far, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed value we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
