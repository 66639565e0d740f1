//! The client's opening handshake (RFC 6455 §4.1): the upgrade request
//! (random key, subprotocols, a permessage-deflate offer) and the checks of
//! the server's 101 response.

use base64::Engine as _;

use super::deflate::{self, DeflateParams};
use super::handshake::accept_key;

/// What the client asks for.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions<'a> {
    /// `Host` header value (`host[:port]`).
    pub host: &'a str,
    /// Request target (path and query), `/` if empty.
    pub target: &'a str,
    /// Subprotocols offered, in order of preference.
    pub protocols: &'a [&'a str],
    /// Offer permessage-deflate with this compression level (0–9), asking
    /// for nothing else (the client accepts any `client_max_window_bits`
    /// from 9 to 15).
    pub deflate_level: Option<u8>,
    /// Extra request headers (e.g. `Origin`, `Cookie`).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

/// A sent upgrade request, waiting for the response.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    accept: String,
    protocols: Vec<String>,
    deflate_level: Option<u8>,
}

/// What the server's 101 settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccepted {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// permessage-deflate parameters, if the server accepted the offer.
    pub deflate: Option<DeflateParams>,
}

/// Outcome of [`ClientHandshake::parse_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStatus {
    /// The response head is not complete yet.
    Partial,
    /// Upgraded; `consumed` bytes were the response head (frames follow).
    Complete {
        /// What was negotiated.
        accepted: ClientAccepted,
        /// Bytes of the head.
        consumed: usize,
    },
    /// The server refused or answered wrongly.
    Failed(String),
}

impl ClientHandshake {
    /// Writes the upgrade request into `out` with the given 16-byte key.
    pub fn with_key(opts: &ClientOptions<'_>, key: [u8; 16], out: &mut Vec<u8>) -> ClientHandshake {
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let target = if opts.target.is_empty() {
            "/"
        } else {
            opts.target
        };
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            opts.host
        );
        if !opts.protocols.is_empty() {
            req.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                opts.protocols.join(", ")
            ));
        }
        if opts.deflate_level.is_some() {
            req.push_str(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            );
        }
        for (k, v) in opts.extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        out.extend_from_slice(req.as_bytes());
        ClientHandshake {
            accept: accept_key(key.as_bytes()),
            protocols: opts.protocols.iter().map(|p| p.to_string()).collect(),
            deflate_level: opts.deflate_level,
        }
    }

    /// Writes the upgrade request into `out` with a random key (fastrand:
    /// the key only has to differ between connections, RFC 6455 §10.3 asks
    /// unpredictability of masks, not of the key).
    pub fn new(opts: &ClientOptions<'_>, out: &mut Vec<u8>) -> ClientHandshake {
        let mut key = [0u8; 16];
        fastrand::fill(&mut key);
        ClientHandshake::with_key(opts, key, out)
    }

    /// Parses the server's response at the start of `buf`: status 101,
    /// `Upgrade: websocket`, `Connection: upgrade`, the right
    /// `Sec-WebSocket-Accept`, a subprotocol we offered (if any), and
    /// extensions we offered with parameters we can honour.
    pub fn parse_response(&self, buf: &[u8]) -> ResponseStatus {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let consumed = match resp.parse(buf) {
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {
                return ResponseStatus::Partial;
            }
            Ok(httparse::Status::Partial) => {
                return ResponseStatus::Failed("response head over 16 KiB".into());
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(e) => return ResponseStatus::Failed(format!("malformed HTTP response: {e}")),
        };
        let fail = |m: &str| ResponseStatus::Failed(m.to_string());
        if resp.code != Some(101) {
            return ResponseStatus::Failed(format!(
                "status {} {}",
                resp.code.unwrap_or(0),
                resp.reason.unwrap_or("")
            ));
        }
        let find = |name: &'static str| {
            resp.headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let has = |name: &'static str, tok: &str| {
            find(name).any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(tok.as_bytes()))
            })
        };
        if !has("upgrade", "websocket") {
            return fail("no Upgrade: websocket");
        }
        if !has("connection", "upgrade") {
            return fail("no Connection: upgrade");
        }
        if find("sec-websocket-accept").next().map(<[u8]>::trim_ascii)
            != Some(self.accept.as_bytes())
        {
            return fail("wrong or missing Sec-WebSocket-Accept");
        }
        let protocol = match find("sec-websocket-protocol").next() {
            None => None,
            Some(p) => {
                let p = String::from_utf8_lossy(p.trim_ascii()).into_owned();
                if !self.protocols.contains(&p) {
                    return fail("subprotocol not offered");
                }
                Some(p)
            }
        };
        let mut exts = Vec::new();
        for v in find("sec-websocket-extensions") {
            let parsed = std::str::from_utf8(v)
                .map_err(|_| deflate::ExtensionSyntaxError)
                .and_then(|v| deflate::parse_extensions(v, &mut exts));
            if parsed.is_err() {
                return fail("malformed Sec-WebSocket-Extensions");
            }
        }
        let mut params = None;
        for e in &exts {
            match (e.name.as_str(), self.deflate_level) {
                (deflate::EXTENSION_NAME, Some(level)) if params.is_none() => {
                    match DeflateParams::from_response(e, true, level) {
                        Ok(p) => params = Some(p),
                        Err(m) => return fail(m),
                    }
                }
                _ => return ResponseStatus::Failed(format!("extension not offered: {}", e.name)),
            }
        }
        ResponseStatus::Complete {
            accepted: ClientAccepted {
                protocol,
                deflate: params,
            },
            consumed,
        }
    }
}
