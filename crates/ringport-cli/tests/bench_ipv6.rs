//! The newcomer's IPv6 path: `ringport serve --addr [::1]:PORT`, then
//! `ringport bench --addr [::1]:PORT` without `--sources` (the default
//! sources follow the target's address family), on both backends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ringport");

/// A `ringport serve` child, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringport serve --addr [::1]:0` on `backend`; returns the child
/// and the port it logged.
fn serve_ipv6(backend: &str) -> (Serve, u16) {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "[::1]:0", "--shards", "1"])
        .args(["--backend", backend, "--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringport serve");
    let stderr = child.stderr.take().unwrap();
    let serve = Serve(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("serve on {backend} did not start listening:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("listening on [::1]:").nth(1) {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return (serve, port.parse().expect("a port in the log line"));
        }
    }
}

fn bench_ipv6_without_sources(backend: &str) {
    let (_serve, port) = serve_ipv6(backend);
    let dir = std::env::temp_dir().join(format!("ringport-bench-ipv6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{backend}.json"));
    let addr = format!("[::1]:{port}");
    let out = Command::new(BIN)
        .args(["bench", "--addr", &addr, "--backend", backend])
        .args(["-c", "20", "--duration", "1", "--warmup", "0.2"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ringport bench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "bench on {backend}:\n{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).unwrap();
    assert_eq!(report["connections_established"], 20, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn bench_ipv6_target_without_sources_io_uring() {
    bench_ipv6_without_sources("io-uring");
}

#[test]
fn bench_ipv6_target_without_sources_epoll() {
    bench_ipv6_without_sources("epoll");
}
