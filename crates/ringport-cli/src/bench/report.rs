//! Progress display, /proc sampling, and the final report (text, JSON, SVG).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::handler::{ShardResult, Shared};
use super::{BenchArgs, Interrupt};

/// A rate per second as a whole number with thousands separators:
/// `46,253` (indicatif's `{per_sec}` shows `46,252.7488/s`).
pub fn rate_text(per_sec: f64) -> String {
    let whole = if per_sec.is_finite() && per_sec > 0.0 {
        per_sec.round() as u64
    } else {
        0
    };
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A round trip in µs, in the unit that reads best: `384 us`, `3.1 ms`,
/// `1.25 s`.
pub fn latency_text(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// A progress bar on a terminal, plain periodic lines otherwise.
pub struct Progress {
    tty: bool,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            bar: None,
            last_line: Instant::now(),
        }
    }

    pub fn line(&self, text: &str) {
        eprintln!("{text}");
    }

    pub fn start_bar(&mut self, what: &str, total: u64) {
        if self.tty {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({rate})")
                    .expect("valid template")
                    .with_key(
                        "rate",
                        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{}/s", rate_text(state.per_sec()));
                        },
                    )
                    .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            self.bar = Some(bar);
        } else {
            eprintln!("{what}: 0/{total}");
        }
        self.last_line = Instant::now();
    }

    pub fn set_bar(&mut self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        } else if self.last_line.elapsed() >= Duration::from_secs(1) {
            eprintln!("  ... {pos}");
            self.last_line = Instant::now();
        }
    }

    pub fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Waits `total` while showing messages/s; false if SIGINT/SIGTERM
    /// cut it short.
    pub fn run_phase(
        &mut self,
        what: &str,
        total: Duration,
        shared: &Shared,
        interrupt: &Interrupt,
    ) -> bool {
        let started = Instant::now();
        let mut last = Shared::sum(&shared.progress_received);
        let mut last_at = Instant::now();
        self.start_bar(what, (total.as_secs_f64() * 10.0).ceil() as u64);
        while started.elapsed() < total {
            if interrupt.raised() {
                self.finish_bar();
                return false;
            }
            std::thread::sleep((total - started.elapsed()).min(Duration::from_millis(100)));
            let elapsed = last_at.elapsed();
            if elapsed >= Duration::from_secs(1) || started.elapsed() >= total {
                let now = Shared::sum(&shared.progress_received);
                let rate = (now - last) as f64 / elapsed.as_secs_f64();
                let errors = Shared::sum(&shared.progress_errors);
                let slowest = match shared.take_slowest_us() {
                    0 => String::new(),
                    us => format!(", slowest reply {}", latency_text(us)),
                };
                let msg = format!(
                    "{what}: {} msg/s{slowest}, {errors} errors",
                    rate_text(rate)
                );
                match &self.bar {
                    Some(bar) => bar.set_message(msg),
                    None => eprintln!("{msg}"),
                }
                last = now;
                last_at = Instant::now();
            }
            if let Some(bar) = &self.bar {
                bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
            }
        }
        self.finish_bar();
        !interrupt.raised()
    }

    /// Waits until no message is in flight (or the timeout, or a signal).
    pub fn drain(&mut self, shared: &Shared, timeout: Duration, interrupt: &Interrupt) {
        let deadline = Instant::now() + timeout;
        // Ticks publish in-flight counts; give every shard one after the
        // phase change.
        std::thread::sleep(Duration::from_millis(20));
        while Shared::sum(&shared.progress_in_flight) > 0 && Instant::now() < deadline {
            if interrupt.raised() && timeout > super::INTERRUPTED_DRAIN {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// CPU seconds used by this process so far.
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time and memory of another process, from /proc.
pub struct ProcSample {
    at: Instant,
    cpu_secs: f64,
    rss_bytes: u64,
}

impl ProcSample {
    pub fn take(pid: u32) -> Result<ProcSample, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
        // Fields after the command name (which may contain spaces).
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("unexpected /proc stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| "unexpected /proc stat format".to_string())
        };
        // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_secs = (ticks(11)? + ticks(12)?) / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(ProcSample {
            at: Instant::now(),
            cpu_secs,
            rss_bytes: rss_kib * 1024,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ServerUsage {
    pub cpu_percent: f64,
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    /// The server's RSS before the bench opened its first connection.
    pub rss_before_connect: Option<u64>,
}

impl ServerUsage {
    /// Usage between `a` and `b`; `idle` is the sample taken before
    /// connecting, for the marginal memory per connection.
    pub fn between(idle: Option<&ProcSample>, a: &ProcSample, b: &ProcSample) -> Self {
        let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let cpu = (b.cpu_secs - a.cpu_secs).max(0.0);
        ServerUsage {
            cpu_percent: 100.0 * cpu / wall,
            cpu_secs: cpu,
            rss_bytes: b.rss_bytes,
            rss_before_connect: idle.map(|s| s.rss_bytes),
        }
    }

    /// (RSS during − RSS before connecting) / connections: what each
    /// connection added, the empty server's memory left out.
    pub fn marginal_bytes_per_connection(&self, connections: u64) -> Option<f64> {
        let before = self.rss_before_connect?;
        Some((self.rss_bytes as f64 - before as f64) / connections.max(1) as f64)
    }
}

pub struct Inputs<'a> {
    pub args: &'a BenchArgs,
    pub threads: usize,
    pub results: Vec<ShardResult>,
    pub established: u64,
    pub connect_failed: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub connect_secs: f64,
    /// Connects finished in the slowest whole second of the connect phase.
    pub slowest_second: Option<f64>,
    /// Connects finished in each whole second of the connect phase.
    pub connect_seconds: Vec<f64>,
    pub measured_secs: f64,
    pub bench_cpu_secs: f64,
    pub server: Option<ServerUsage>,
    pub engine_stats: ringport::Stats,
    pub partial: Option<Partial>,
    /// `--ws`: connections that negotiated permessage-deflate.
    pub ws_deflate: u64,
}

/// A run cut short by SIGINT/SIGTERM.
#[derive(Debug, Clone)]
pub struct Partial {
    pub signal: &'static str,
    /// The phase it stopped: connect, warm-up, measure or drain.
    pub phase: &'static str,
    /// The measured phase's planned length.
    pub planned_secs: f64,
}

/// A fixed-rate run delivering less than this share of what it offered
/// is not ok.
pub const MIN_DELIVERED_SHARE: f64 = 0.95;

pub struct Summary {
    connections: usize,
    size: usize,
    depth: u32,
    rate: f64,
    mode: String,
    /// "tcp", "tls", "ws" or "wss".
    transport: &'static str,
    /// `--ws`: connections that negotiated permessage-deflate (`None`
    /// without --ws).
    ws_deflate: Option<u64>,
    /// `--verify`: "full" or "header".
    verify: String,
    threads: usize,
    established: u64,
    connect_failed: u64,
    connect_secs: f64,
    slowest_second: Option<f64>,
    connect_seconds: Vec<f64>,
    measured_secs: f64,
    messages: u64,
    bytes: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_errors: Vec<String>,
    late_sends: u64,
    /// Measure phase: replies to own sends, sends the rate asked for, and
    /// those of them that were late.
    measured_own: u64,
    measured_wanted: u64,
    measured_late: u64,
    bench_cpu_secs: f64,
    server: Option<ServerUsage>,
    partial: Option<Partial>,
}

const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)];

impl Summary {
    pub fn build(inputs: Inputs<'_>) -> Summary {
        let mut latency = super::handler::latency_histogram();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut first_errors = Vec::new();
        let (mut messages, mut bytes, mut late, mut unanswered) = (0, 0, 0, 0);
        let (mut own, mut wanted, mut late_measured) = (0, 0, 0);
        for r in &inputs.results {
            latency.add(&r.latency_us).expect("same histogram bounds");
            messages += r.measured_messages;
            bytes += r.measured_bytes;
            late += r.late_sends;
            own += r.measured_own;
            wanted += r.measured_wanted;
            late_measured += r.measured_late;
            unanswered += r.unanswered;
            for (k, v) in &r.errors {
                *errors.entry(k.to_string()).or_default() += v;
            }
            first_errors.extend(r.first_errors.iter().cloned());
        }
        if unanswered > 0 {
            errors.insert(
                "unanswered (lost, or slower than --drain-timeout)".into(),
                unanswered,
            );
        }
        for (e, n) in inputs.connect_errors {
            *errors.entry(format!("connect: {e}")).or_default() += n;
        }
        let _ = inputs.engine_stats;
        Summary {
            connections: inputs.args.connections,
            size: inputs.args.size,
            depth: inputs.args.depth,
            rate: inputs.args.rate,
            mode: format!("{:?}", inputs.args.mode).to_lowercase(),
            transport: match (inputs.args.ws, inputs.args.tls) {
                (false, false) => "tcp",
                (false, true) => "tls",
                (true, false) => "ws",
                (true, true) => "wss",
            },
            ws_deflate: inputs.args.ws.then_some(inputs.ws_deflate),
            verify: format!("{:?}", inputs.args.verify).to_lowercase(),
            threads: inputs.threads,
            established: inputs.established,
            connect_failed: inputs.connect_failed,
            connect_secs: inputs.connect_secs,
            slowest_second: inputs.slowest_second,
            connect_seconds: inputs.connect_seconds,
            measured_secs: inputs.measured_secs,
            messages,
            bytes,
            latency,
            errors,
            first_errors,
            late_sends: late,
            measured_own: own,
            measured_wanted: wanted,
            measured_late: late_measured,
            bench_cpu_secs: inputs.bench_cpu_secs,
            server: inputs.server,
            partial: inputs.partial,
        }
    }

    /// No verification error, no loss, every connection established, the
    /// run was not cut short, and with `--rate` at least 95 % of the
    /// offered messages were delivered.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
            && self.established == self.connections as u64
            && self.partial.is_none()
            && self
                .delivered_share()
                .is_none_or(|s| s >= MIN_DELIVERED_SHARE)
    }

    /// With `--rate` (and a measured phase): rate × established
    /// connections, in sends per second.
    fn offered_per_sec(&self) -> Option<f64> {
        (self.rate > 0.0 && self.measured_secs > 0.0).then_some(self.rate * self.established as f64)
    }

    /// With `--rate`: replies to the bench's own sends per second during
    /// the measure phase (in chat mode a sender's own broadcast coming
    /// back; deliveries to the others are in `msgs_per_sec`).
    fn delivered_per_sec(&self) -> Option<f64> {
        self.offered_per_sec()
            .map(|_| self.measured_own as f64 / self.measured_secs.max(1e-9))
    }

    /// Delivered / offered, with `--rate`.
    fn delivered_share(&self) -> Option<f64> {
        let offered = self.offered_per_sec()?;
        Some(self.delivered_per_sec()? / offered.max(1e-9))
    }

    /// Late sends / sends the rate asked for, during the measure phase.
    fn late_share(&self) -> Option<f64> {
        self.offered_per_sec()
            .map(|_| self.measured_late as f64 / self.measured_wanted.max(1) as f64)
    }

    fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.measured_secs.max(1e-9)
    }

    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.measured_secs.max(1e-9)
    }

    pub fn print(&self) {
        println!(
            "ringport bench: {} connections ({} threads), {} B, depth {}, rate {}, mode {}{}",
            self.connections,
            self.threads,
            self.size,
            self.depth,
            if self.rate > 0.0 {
                format!("{}/s/conn", self.rate)
            } else {
                "closed loop".into()
            },
            self.mode,
            match (self.transport, self.ws_deflate) {
                ("tcp", _) => String::new(),
                (t, Some(n)) if n > 0 => format!(", over {t} (permessage-deflate on {n})"),
                (t, _) => format!(", over {t}"),
            }
        );
        if let Some(p) = &self.partial {
            println!(
                "PARTIAL:     stopped by {} during the {} phase; {:.1} s of {:.1} s measured",
                p.signal, p.phase, self.measured_secs, p.planned_secs
            );
        }
        println!(
            "connections: {} established, {} failed, {:.0} connects/s{}",
            self.established,
            self.connect_failed,
            self.established as f64 / self.connect_secs.max(1e-9),
            self.slowest_second
                .map_or(String::new(), |r| format!(" (slowest second {r:.0}/s)"))
        );
        println!(
            "throughput:  {:.0} msg/s, {:.1} MB/s over {:.1} s ({} messages verified{})",
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.measured_secs,
            self.messages,
            if self.verify == "header" {
                ": length and stamp only, --verify header"
            } else {
                ""
            }
        );
        if let (Some(offered), Some(delivered), Some(share), Some(late)) = (
            self.offered_per_sec(),
            self.delivered_per_sec(),
            self.delivered_share(),
            self.late_share(),
        ) {
            println!(
                "rate:        offered {} msg/s, delivered {} msg/s ({:.1} %{}), late sends {:.2} %",
                rate_text(offered),
                rate_text(delivered),
                100.0 * share,
                if share < MIN_DELIVERED_SHARE {
                    ": below 95 %, not ok"
                } else {
                    ""
                },
                100.0 * late
            );
        }
        let l = &self.latency;
        println!(
            "latency us:  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.9),
            l.value_at_quantile(0.99),
            l.value_at_quantile(0.999),
            l.max()
        );
        println!(
            "bench cpu:   {:.2} s ({:.0}% of one core, {:.2} us/msg)",
            self.bench_cpu_secs,
            // Nothing measured (stopped while connecting): no share.
            if self.measured_secs > 0.0 {
                100.0 * self.bench_cpu_secs / self.measured_secs
            } else {
                0.0
            },
            self.bench_cpu_secs * 1e6 / self.messages.max(1) as f64
        );
        if let Some(s) = &self.server {
            let per_msg = if self.messages > 0 {
                s.cpu_secs * 1e6 / self.messages as f64
            } else {
                0.0
            };
            println!(
                "server:      {:.1}% cpu, {:.2} us cpu/msg, rss {:.1} MiB",
                s.cpu_percent,
                per_msg,
                s.rss_bytes as f64 / (1 << 20) as f64,
            );
            if let (Some(before), Some(marginal)) = (
                s.rss_before_connect,
                s.marginal_bytes_per_connection(self.established),
            ) {
                println!(
                    "server mem:  rss {:.1} MiB before connecting -> {:.1} MiB during: \
                     {marginal:.0} B per connection (marginal: (during - before) / {})",
                    before as f64 / (1 << 20) as f64,
                    s.rss_bytes as f64 / (1 << 20) as f64,
                    self.established
                );
            }
        }
        if self.late_sends > 0 {
            println!(
                "late sends:  {} (the fixed rate wanted to send while depth was in flight)",
                self.late_sends
            );
        }
        if self.errors.is_empty() {
            println!("errors:      none");
        } else {
            println!("errors:");
            for (k, v) in &self.errors {
                println!("  {k}: {v}");
            }
            for e in self.first_errors.iter().take(5) {
                println!("  e.g. {e}");
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let l = &self.latency;
        let mut latency = serde_json::Map::new();
        for (name, q) in PERCENTILES {
            latency.insert(name.into(), json!(l.value_at_percentile(q)));
        }
        latency.insert("max".into(), json!(l.max()));
        latency.insert("mean".into(), json!(l.mean()));
        let server = self.server.map(|s| {
            json!({
                "cpu_percent": s.cpu_percent,
                "cpu_seconds": s.cpu_secs,
                "rss_bytes": s.rss_bytes,
                "rss_bytes_before_connect": s.rss_before_connect,
                "rss_marginal_bytes_per_connection": s.marginal_bytes_per_connection(self.established),
                "cpu_us_per_message": if self.messages > 0 { s.cpu_secs * 1e6 / self.messages as f64 } else { 0.0 },
            })
        });
        json!({
            "connections": self.connections,
            "connections_established": self.established,
            "connect_failed": self.connect_failed,
            "connects_per_sec": self.established as f64 / self.connect_secs.max(1e-9),
            "slowest_second_connects_per_sec": self.slowest_second,
            "connects_per_second_series": self.connect_seconds.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "size": self.size,
            "depth": self.depth,
            "rate": self.rate,
            "mode": self.mode,
            "transport": self.transport,
            "ws_deflate_connections": self.ws_deflate,
            "verify": self.verify,
            "threads": self.threads,
            "duration_secs": self.measured_secs,
            "messages": self.messages,
            "messages_per_sec": self.msgs_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "latency_us": latency,
            "late_sends": self.late_sends,
            "offered_per_sec": self.offered_per_sec(),
            "delivered_per_sec": self.delivered_per_sec(),
            "delivered_share": self.delivered_share(),
            "late_send_share": self.late_share(),
            "errors": self.errors,
            "bench_cpu_seconds": self.bench_cpu_secs,
            "server": server,
            "partial": self.partial.is_some(),
            "stopped_by": self.partial.as_ref().map(|p| p.signal),
            "stopped_in": self.partial.as_ref().map(|p| p.phase),
            "ok": self.ok(),
        })
    }

    /// The latency percentile curve (x: percentile on a "nines" scale,
    /// y: microseconds) as a standalone SVG.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (720.0, 420.0, 60.0);
        let max_nines = 5.0; // up to 99.999%
        let points: Vec<(f64, u64)> = (0..=100)
            .map(|i| {
                let nines = max_nines * i as f64 / 100.0;
                let pct = 100.0 * (1.0 - 10f64.powf(-nines));
                (nines, self.latency.value_at_percentile(pct))
            })
            .collect();
        let y_max = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
        let x = |n: f64| pad + (w - 2.0 * pad) * n / max_nines;
        let y = |v: f64| h - pad - (h - 2.0 * pad) * v / y_max;
        let path: String = points
            .iter()
            .enumerate()
            .map(|(i, (n, v))| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { " L" },
                    x(*n),
                    y(*v as f64)
                )
            })
            .collect();
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{pad}\" y=\"24\" font-size=\"14\">ringport bench: {} conns, {} B, depth {} - {:.0} msg/s</text>\n\
             <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
             <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n",
            self.connections,
            self.size,
            self.depth,
            self.msgs_per_sec(),
            h - pad,
            w - pad,
            h - pad,
            h - pad
        );
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
            .iter()
            .enumerate()
        {
            svg += &format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
                x(i as f64),
                h - pad + 18.0
            );
        }
        for i in 0..=4 {
            let v = y_max * i as f64 / 4.0;
            svg += &format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0} us</text>\n",
                pad - 6.0,
                y(v) + 4.0,
                v
            );
        }
        svg += &format!(
            "<path d=\"{path}\" fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\"/>\n</svg>\n"
        );
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::{latency_text, rate_text};

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(latency_text(384), "384 us");
        assert_eq!(latency_text(999), "999 us");
        assert_eq!(latency_text(3_149), "3.1 ms");
        assert_eq!(latency_text(728_063), "728.1 ms");
        assert_eq!(latency_text(1_250_000), "1.25 s");
    }

    #[test]
    fn rates_are_whole_numbers() {
        assert_eq!(rate_text(46_252.748_8), "46,253");
        assert_eq!(rate_text(0.4), "0");
        assert_eq!(rate_text(999.6), "1,000");
        assert_eq!(rate_text(1_234_567.0), "1,234,567");
        assert_eq!(rate_text(f64::NAN), "0");
    }
}
