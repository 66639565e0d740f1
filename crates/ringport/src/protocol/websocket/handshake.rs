//! The server's opening handshake (RFC 6455 §4.2): the HTTP/1.1 upgrade
//! request parsed incrementally with `httparse`, what an upgrade hook needs
//! to decide, and the 101 or refusal response written to a caller buffer.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::deflate::{self, DeflateBudget, DeflateConfig, DeflateParams, ExtensionOffer};

/// The GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key +
/// GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Limits on the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest request head (request line and headers), in bytes; larger
    /// ones are refused with 431.
    pub max_head_bytes: usize,
    /// Most header lines; more are refused with 431.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    /// 8 KiB and 64 headers.
    fn default() -> HandshakeLimits {
        HandshakeLimits {
            max_head_bytes: 8 * 1024,
            max_headers: 64,
        }
    }
}

/// A refused handshake: the HTTP status to answer with and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (400, 405, 426, 431, or the hook's choice).
    pub status: u16,
    /// Why (for logs; not sent).
    pub reason: &'static str,
}

impl Refusal {
    /// Writes the HTTP response for this refusal into `out` (426 carries
    /// `Sec-WebSocket-Version: 13`, RFC 6455 §4.4).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = if self.status == 426 {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        };
        write_refusal(self.status, extra, out);
    }
}

/// Writes an HTTP/1.1 refusal (`status`, empty body, `Connection: close`,
/// the `extra` headers) into `out`, e.g. the upgrade hook's 401 or 403.
pub fn write_refusal(status: u16, extra: &[(&str, &str)], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

/// Outcome of [`parse_request`].
#[derive(Debug)]
pub enum RequestStatus {
    /// The request head is not complete: call again with more bytes.
    Partial,
    /// A valid upgrade request; `consumed` bytes of the buffer were its
    /// head (what follows belongs to the WebSocket stream).
    Complete {
        /// The request.
        request: UpgradeRequest,
        /// Bytes the head took.
        consumed: usize,
    },
    /// Not an acceptable upgrade request: answer with
    /// [`Refusal::write_response`] and close.
    Refused(Refusal),
}

/// A parsed, validated upgrade request: what an upgrade hook sees.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
}

const fn refuse(status: u16, reason: &'static str) -> RequestStatus {
    RequestStatus::Refused(Refusal { status, reason })
}

/// True if the comma-separated header value contains `token`
/// (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses the upgrade request at the start of `buf` (everything received so
/// far). Checks: GET, HTTP/1.1, `Host`, `Upgrade: websocket`, `Connection:
/// upgrade` (token lists, case-insensitive), `Sec-WebSocket-Version: 13`
/// (otherwise 426), a `Sec-WebSocket-Key` of 16 base64-encoded bytes, and
/// the size limits (431).
pub fn parse_request(buf: &[u8], limits: &HandshakeLimits) -> RequestStatus {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head_bytes {
                return refuse(431, "request head too large");
            }
            return RequestStatus::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "too many headers"),
        Err(_) => return refuse(400, "malformed HTTP request"),
    };
    if consumed > limits.max_head_bytes {
        return refuse(431, "request head too large");
    }
    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return refuse(405, "method is not GET");
    }
    if req.version != Some(1) {
        return refuse(400, "not HTTP/1.1");
    }
    let find = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if find("host").next().is_none() {
        return refuse(400, "no Host header");
    }
    if !find("upgrade").any(|v| has_token(v, "websocket")) {
        return refuse(400, "no Upgrade: websocket");
    }
    if !find("connection").any(|v| has_token(v, "upgrade")) {
        return refuse(400, "no Connection: upgrade");
    }
    match find("sec-websocket-version").next() {
        None => return refuse(400, "no Sec-WebSocket-Version"),
        Some(v) if v.trim_ascii() == b"13" => {}
        Some(_) => return refuse(426, "unsupported Sec-WebSocket-Version"),
    }
    let mut keys = find("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.trim_ascii(),
        _ => return refuse(400, "missing or repeated Sec-WebSocket-Key"),
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return refuse(400, "Sec-WebSocket-Key is not 16 bytes in base64"),
    }
    let mut protocols = Vec::new();
    for v in find("sec-websocket-protocol") {
        let Ok(v) = std::str::from_utf8(v) else {
            return refuse(400, "bad Sec-WebSocket-Protocol");
        };
        protocols.extend(
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from),
        );
    }
    let mut extensions = Vec::new();
    for v in find("sec-websocket-extensions") {
        // A header we cannot parse is ignored: the extensions are declined,
        // the connection still works.
        let parsed = std::str::from_utf8(v)
            .map_err(|_| deflate::ExtensionSyntaxError)
            .and_then(|v| deflate::parse_extensions(v, &mut extensions));
        if parsed.is_err() {
            extensions.clear();
            break;
        }
    }
    let request = UpgradeRequest {
        method: method.to_string(),
        target: req.path.unwrap_or("/").to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        key: String::from_utf8_lossy(key).into_owned(),
        protocols,
        extensions,
    };
    RequestStatus::Complete { request, consumed }
}

/// How to accept a request.
#[derive(Debug, Clone, Default)]
pub struct AcceptOptions<'a> {
    /// The subprotocol chosen among [`UpgradeRequest::protocols`].
    pub protocol: Option<&'a str>,
    /// permessage-deflate policy; `None`: never negotiated.
    pub deflate: Option<DeflateConfig>,
    /// Extra response headers (e.g. `Set-Cookie`).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

/// What the 101 response settled, for [`Session::server`](super::Session::server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// permessage-deflate parameters, if negotiated.
    pub deflate: Option<DeflateParams>,
    /// Bytes reserved in the [`DeflateBudget`] for this connection (give
    /// them back with [`DeflateBudget::release`] when it ends).
    pub deflate_reserved: usize,
}

/// Why [`UpgradeRequest::accept`] could not write a 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// The chosen subprotocol was not among those the client offered.
    ProtocolNotOffered,
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the chosen subprotocol was not offered by the client")
    }
}

impl std::error::Error for AcceptError {}

impl UpgradeRequest {
    /// The method (always `GET` once validated).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path (the target before `?`).
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Every header in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The `Sec-WebSocket-Key`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Subprotocols offered (`Sec-WebSocket-Protocol`), in order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Extensions offered (`Sec-WebSocket-Extensions`), in order.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Writes the 101 response into `out`: `Sec-WebSocket-Accept`, the
    /// chosen subprotocol, and permessage-deflate if `opts.deflate` allows
    /// it, an offer is acceptable and `budget` (if given) has room for the
    /// connection's contexts.
    pub fn accept(
        &self,
        opts: &AcceptOptions<'_>,
        budget: Option<&mut DeflateBudget>,
        out: &mut Vec<u8>,
    ) -> Result<Negotiated, AcceptError> {
        if let Some(p) = opts.protocol
            && !self.protocols.iter().any(|o| o == p)
        {
            return Err(AcceptError::ProtocolNotOffered);
        }
        let mut negotiated = Negotiated::default();
        if let Some(cfg) = &opts.deflate
            && let Some(params) = deflate::negotiate(&self.extensions, cfg)
        {
            let cost = params.context_cost(true);
            match budget {
                Some(b) => {
                    if b.try_reserve(cost) {
                        negotiated = Negotiated {
                            deflate: Some(params),
                            deflate_reserved: cost,
                        }
                    }
                }
                None => negotiated.deflate = Some(params),
            }
        }
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(accept_key(self.key.as_bytes()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(p) = opts.protocol {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(params) = &negotiated.deflate {
            out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            params.write_response(out);
            out.extend_from_slice(b"\r\n");
        }
        for (k, v) in opts.extra_headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        Ok(negotiated)
    }
}

#[cfg(test)]
mod tests;
