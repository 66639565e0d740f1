//! Helpers of the cluster tests that run real nats-servers (single, or a
//! cluster of three with routes, optionally with JetStream) and real
//! `ringport serve` nodes on loopback. nats-server must be installed
//! (Debian package `nats-server`): without it these tests fail, they are
//! not skipped.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use ringport_cli::pubsub::{Frame, decode, encode};

/// One nats-server on loopback ports, killed on drop.
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub route: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        // Its log goes to a file, shown if it does not start.
        let log = std::env::temp_dir().join(format!(
            "ringport-nats-{}-{}-{}.log",
            std::process::id(),
            self.name,
            self.port
        ));
        let child = Command::new("nats-server")
            .args(&self.args)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("nats-server is not installed (apt-get install nats-server)")
            }
            other => other.expect("start nats-server"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while http_get_opt(self.monitor, "/varz").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not start; its log:\n{}",
                self.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL: as if its machine died).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports (and store directory).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The monitoring endpoint's JSON at `path` (e.g. `/connz`).
    pub fn monitor_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = http_get_opt(self.monitor, path)
            .unwrap_or_else(|| panic!("nats-server {} monitor not answering", self.name));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The client connection named `name` (e.g. `ringport-n1`), if it is
    /// attached to this server.
    pub fn client(&self, name: &str) -> Option<serde_json::Value> {
        let connz = self.monitor_json("/connz?limit=1000");
        connz["connections"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several nats-servers, routed into one NATS cluster when more than one.
pub struct Nats {
    pub servers: Vec<NatsServer>,
    /// JetStream store directory (removed on drop).
    dir: Option<PathBuf>,
}

impl Nats {
    /// `n` servers (routes between all of them when n > 1), with
    /// JetStream when `jetstream`.
    pub fn start(n: usize, jetstream: bool) -> Nats {
        let dir = jetstream.then(|| {
            let d = std::env::temp_dir().join(format!(
                "ringport-js-{}-{}",
                std::process::id(),
                free_port()
            ));
            std::fs::create_dir_all(&d).expect("create JetStream dir");
            d
        });
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut servers = Vec::new();
        for (i, &(port, monitor, route)) in ports.iter().enumerate() {
            let name = format!("nats{}", i + 1);
            let mut args: Vec<String> = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-m".into(),
                monitor.to_string(),
                "-n".into(),
                name.clone(),
            ];
            if n > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{}", p.2))
                    .collect();
                args.extend([
                    "--cluster_name".into(),
                    "ringport-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    routes.join(","),
                ]);
            }
            if let Some(d) = &dir {
                args.extend([
                    "-js".into(),
                    "-sd".into(),
                    d.join(&name).display().to_string(),
                ]);
            }
            let mut server = NatsServer {
                name,
                port,
                monitor,
                route,
                args,
                child: None,
            };
            server.spawn();
            servers.push(server);
        }
        let nats = Nats { servers, dir };
        if n > 1 {
            nats.wait_for_routes();
        }
        nats
    }

    /// Waits until every running server has a route to every other running
    /// one.
    pub fn wait_for_routes(&self) {
        let running = self.servers.iter().filter(|s| s.running()).count();
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        for s in self.servers.iter().filter(|s| s.running()) {
            loop {
                let routez = s.monitor_json("/routez");
                if routez["num_routes"].as_u64() == Some(running as u64 - 1) {
                    break;
                }
                assert!(Instant::now() < deadline, "routes not up: {routez}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills server `i`, deletes its JetStream store and starts it again:
    /// its streams are gone (a history reset).
    pub fn restart_empty(&mut self, i: usize) {
        let server = &mut self.servers[i];
        server.kill();
        let dir = self.dir.as_ref().expect("JetStream servers");
        std::fs::remove_dir_all(dir.join(&server.name)).expect("remove the store");
        server.spawn();
    }

    /// Every server's URL, comma-separated (the `--cluster` value).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server client `name` is attached to now.
    pub fn attached(&self, name: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.running() && s.client(name).is_some())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body); None if nothing
/// listens.
pub fn http_get_opt(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A ringport node in pubsub mode, with its metrics endpoint.
pub struct Node {
    pub served: Served,
    pub metrics: u16,
}

impl Node {
    /// Starts node `name` on the NATS `urls`, with `extra` options.
    pub fn start(urls: &str, name: &str, extra: &[&str]) -> Node {
        let metrics = free_port();
        let maddr = format!("127.0.0.1:{metrics}");
        let mut args = vec![
            "--mode",
            "pubsub",
            "--cluster",
            urls,
            "--node-id",
            name,
            "--shards",
            "2",
            "--stats-interval",
            "0",
            "--metrics-addr",
            maddr.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut served = serve(&args);
        served
            .proc
            .wait_for_stderr("cluster: joined over NATS", PROCESS_TIMEOUT);
        Node { served, metrics }
    }

    /// Waits until this node has heard from each of `peers`.
    pub fn wait_for_peers(&mut self, peers: &[&str]) {
        for p in peers {
            self.served
                .proc
                .wait_for_stderr(&format!("peer={p}"), PROCESS_TIMEOUT);
        }
    }

    pub fn connect(&self) -> TcpStream {
        self.served.connect()
    }

    /// GET on the metrics endpoint.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get_opt(self.metrics, path).unwrap_or_else(|| {
            panic!(
                "metrics endpoint not answering\n{}",
                self.served.proc.output()
            )
        })
    }

    /// The value of sample `series` in /metrics.
    pub fn sample(&self, series: &str) -> u64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{series}: {e}"))
    }

    /// Polls `cond` on /metrics samples until it holds (bounded).
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\n{}\n{}",
                self.get("/metrics").1,
                self.served.proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn send(stream: &mut TcpStream, frame: &Frame<'_>) {
    write_frame(stream, &encode(frame));
}

/// Subscribes and waits for the `K` (the subscription then holds on every
/// node).
pub fn subscribe(stream: &mut TcpStream, topic: &[u8]) {
    send(stream, &Frame::Subscribe(topic));
    let answer = read_frame(stream);
    assert_eq!(
        decode(&answer),
        Some(Frame::Ok { op: b'S', topic }),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

pub fn publish(stream: &mut TcpStream, topic: &[u8], data: &[u8]) {
    send(stream, &Frame::Publish { topic, data });
}

/// Runs `promtool check metrics` on `text` (promtool must be installed:
/// Debian package `prometheus`).
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
