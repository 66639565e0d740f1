//! The metrics endpoint of `ringport serve --metrics-addr`: a small HTTP
//! server (the `tiny_http` crate) on its own thread.
//!
//! `GET /metrics` answers the Prometheus text of the server's counters,
//! `GET /healthz` answers `200 ok` while the server runs, or, while the
//! cluster link to NATS is down, `200 degraded: cluster link to NATS is
//! down` (`503` with the same body for `GET /healthz?strict`: local clients
//! are still served, cross-node messages are lost), `GET /connz` a JSON
//! page of the open connections (most queued first; `?limit=N&offset=M`,
//! modelled on NATS's `/connz`); all answer 503 once a graceful stop has
//! begun. Scrapes read atomic counters only, so a scrape never blocks a
//! shard; `/connz` asks each shard for a snapshot between two of its loop
//! turns and waits for it at most a second. Requests are answered one at a
//! time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response};
use tracing::{debug, warn};

/// A bound HTTP listener, not yet serving.
pub struct Listener {
    server: tiny_http::Server,
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

/// Binds the metrics address (HOST:PORT, already checked by clap).
pub fn bind(addr: &str) -> Result<Listener, String> {
    let sock = ringport_cli::resolve(addr).map_err(|e| format!("invalid --metrics-addr {e}"))?;
    let server =
        tiny_http::Server::http(sock).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--metrics-addr {addr}: not an IP listener"))?;
    Ok(Listener { server, addr })
}

/// Answers requests until `done` is set. `scrape` renders the metrics, or
/// returns `None` when the server is stopping; `health` is `None` when
/// stopping, `Some(Some(why))` when degraded (the cluster link is down).
pub fn run(
    listener: Listener,
    done: &AtomicBool,
    scrape: impl Fn() -> Option<String>,
    health: impl Fn() -> Option<Option<String>>,
    connz: impl Fn(usize, usize) -> Option<String>,
) {
    while !done.load(Ordering::Acquire) {
        match listener.server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(request)) => respond(request, &scrape, &health, &connz),
            Ok(None) => {}
            Err(e) => {
                warn!("metrics endpoint: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The value of `name` in a query string, if it is a number.
fn query_number(query: &str, name: &str) -> Option<usize> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn respond(
    request: Request,
    scrape: &impl Fn() -> Option<String>,
    health: &impl Fn() -> Option<Option<String>>,
    connz: &impl Fn(usize, usize) -> Option<String>,
) {
    let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
    let text = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (request.method(), path) {
        (Method::Get | Method::Head, "/connz") => {
            let limit = query_number(query, "limit").unwrap_or(100).clamp(1, 10_000);
            let offset = query_number(query, "offset").unwrap_or(0);
            match connz(offset, limit) {
                Some(body) => (200, "application/json", body),
                None => (503, text, "stopping\n".to_string()),
            }
        }
        (Method::Get | Method::Head, "/metrics") => match scrape() {
            Some(body) => (200, ringport_cli::metrics::CONTENT_TYPE, body),
            None => (503, text, "stopping\n".to_string()),
        },
        (Method::Get | Method::Head, "/healthz") => match health() {
            Some(None) => (200, text, "ok\n".to_string()),
            // Degraded: local clients are served, so not an error unless
            // asked (`?strict`), e.g. by a balancer that should steer new
            // clients to nodes with a working cluster link.
            Some(Some(why)) => {
                let strict = query
                    .split('&')
                    .any(|k| k == "strict" || k.starts_with("strict="));
                (
                    if strict { 503 } else { 200 },
                    text,
                    format!("degraded: {why}\n"),
                )
            }
            None => (503, text, "stopping\n".to_string()),
        },
        (Method::Get | Method::Head, _) => (
            404,
            text,
            "not found: try /metrics, /healthz or /connz\n".to_string(),
        ),
        _ => (405, text, "method not allowed\n".to_string()),
    };
    let header = Header::from_bytes("Content-Type", content_type).expect("valid header");
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    if let Err(e) = request.respond(response) {
        debug!("metrics endpoint: answering a request: {e}");
    }
}
