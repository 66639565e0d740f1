//! permessage-deflate (RFC 7692): the `Sec-WebSocket-Extensions` grammar,
//! parameter negotiation (server and client side), and the per-connection
//! compression and decompression contexts.
//!
//! # Backend and window sizes
//!
//! flate2 runs on its `zlib-rs` backend here: miniz_oxide (flate2's default)
//! always compresses with a 32 KiB window, so it could honour neither
//! `server_max_window_bits` below 15 nor a memory-saving window of our own.
//! zlib (and zlib-rs) cannot deflate with an 8-bit window (a request for 8
//! becomes 9), so an offer whose `server_max_window_bits=8` is declined (the
//! next offer is tried, RFC 7692 §7.1.2.1). Any `client_max_window_bits`
//! (8–15) is accepted: the server inflates with a window of at least 9 bits,
//! and a larger window decodes a stream made with a smaller one.
//!
//! # Memory
//!
//! Contexts exist only when the extension was negotiated. With
//! `*_no_context_takeover`, the context of that direction is taken for a
//! message and given back after it to a small per-thread spare list (at
//! most [`SPARE_MAX`] compressors and decompressors per thread, i.e. per
//! shard), so an idle connection holds none and a message does not pay for
//! allocating one. Otherwise it
//! lives as long as the connection: [`DeflateParams::context_cost`] gives the
//! bytes (measured with a counting allocator, `fuzz/src/bin/ws_memory.rs`),
//! and [`DeflateBudget`] lets a caller bound the total per shard.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The bytes a sender strips from the end of each compressed message and
/// the receiver appends back (RFC 7692 §7.2.1–2).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One extension of a `Sec-WebSocket-Extensions` header: its name and its
/// parameters (a parameter without a value has `None`; a quoted value is
/// unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in the order given.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn token(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(is_tchar)).then_some(s)
}

/// A `Sec-WebSocket-Extensions` value that does not follow the grammar of
/// RFC 6455 §9.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionSyntaxError;

impl std::fmt::Display for ExtensionSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed Sec-WebSocket-Extensions header")
    }
}

impl std::error::Error for ExtensionSyntaxError {}

/// Parses one `Sec-WebSocket-Extensions` header value (RFC 6455 §9.1) and
/// appends its extensions to `out`. `Err` on a syntax error.
pub fn parse_extensions(
    value: &str,
    out: &mut Vec<ExtensionOffer>,
) -> Result<(), ExtensionSyntaxError> {
    for ext in value.split(',') {
        let ext = ext.trim();
        if ext.is_empty() {
            // Empty list elements are allowed by the #rule.
            continue;
        }
        let mut parts = ext.split(';');
        let name = token(parts.next().unwrap_or("").trim()).ok_or(ExtensionSyntaxError)?;
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            let (k, v) = match p.split_once('=') {
                None => (p, None),
                Some((k, v)) => {
                    let v = v.trim();
                    let v = match v.strip_prefix('"') {
                        Some(q) => q.strip_suffix('"').ok_or(ExtensionSyntaxError)?,
                        None => v,
                    };
                    (
                        k.trim(),
                        Some(token(v).ok_or(ExtensionSyntaxError)?.to_string()),
                    )
                }
            };
            params.push((
                token(k).ok_or(ExtensionSyntaxError)?.to_ascii_lowercase(),
                v,
            ));
        }
        out.push(ExtensionOffer {
            name: name.to_ascii_lowercase(),
            params,
        });
    }
    Ok(())
}

/// The server's permessage-deflate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Largest window the server compresses with (9–15). Smaller windows
    /// cost less memory per connection with context takeover and compress
    /// less well. Below 15 it is announced as `server_max_window_bits`.
    pub server_max_window_bits: u8,
    /// Largest window asked of the client (8–15), sent as
    /// `client_max_window_bits` when the client offered that parameter
    /// (a client that did not offer it may use 15).
    pub client_max_window_bits: u8,
    /// Always answer `server_no_context_takeover`: no compression context
    /// kept between messages (no idle memory; a broadcast is compressed
    /// once for all such connections).
    pub server_no_context_takeover: bool,
    /// Always answer `client_no_context_takeover`: no decompression context
    /// kept between messages.
    pub client_no_context_takeover: bool,
    /// Compression level (0–9).
    pub level: u32,
    /// Messages shorter than this are sent uncompressed (RSV1 clear).
    pub min_compress_len: usize,
}

impl Default for DeflateConfig {
    /// 15-bit windows, context takeover where the client allows it,
    /// level 1 (fastest), messages under 64 bytes uncompressed.
    fn default() -> DeflateConfig {
        DeflateConfig {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 1,
            min_compress_len: 64,
        }
    }
}

/// Negotiated permessage-deflate parameters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Window the server compresses with (9–15).
    pub server_max_window_bits: u8,
    /// Largest window the client compresses with (8–15).
    pub client_max_window_bits: u8,
    /// Compression level (0–9) of this endpoint.
    pub level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub min_compress_len: u32,
}

#[derive(Default)]
struct Offer {
    server_nct: bool,
    client_nct: bool,
    server_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_bits: Option<Option<u8>>,
}

fn window_bits(v: &str) -> Option<u8> {
    // 1*DIGIT without leading zeros, 8..=15.
    match v {
        "8" => Some(8),
        "9" => Some(9),
        "10" | "11" | "12" | "13" | "14" | "15" => v.parse().ok(),
        _ => None,
    }
}

/// Reads the parameters of one permessage-deflate element; `None` if one is
/// unknown, repeated or has a bad value (RFC 7692 §7.1).
fn parse_offer(ext: &ExtensionOffer) -> Option<Offer> {
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for (k, v) in &ext.params {
        let (i, ok) = match (k.as_str(), v) {
            ("server_no_context_takeover", None) => {
                (0, !std::mem::replace(&mut o.server_nct, true))
            }
            ("client_no_context_takeover", None) => {
                (1, !std::mem::replace(&mut o.client_nct, true))
            }
            ("server_max_window_bits", Some(v)) => {
                o.server_bits = Some(window_bits(v)?);
                (2, true)
            }
            ("client_max_window_bits", v) => {
                o.client_bits = Some(match v {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
                (3, true)
            }
            _ => return None,
        };
        if !ok || std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(o)
}

/// Server side: picks the first acceptable permessage-deflate offer among
/// `offers` (other extensions are ignored) under `cfg`. `None`: nothing
/// acceptable, the extension is not used.
pub fn negotiate(offers: &[ExtensionOffer], cfg: &DeflateConfig) -> Option<DeflateParams> {
    let server_cap = cfg.server_max_window_bits.clamp(9, 15);
    let client_cap = cfg.client_max_window_bits.clamp(8, 15);
    for ext in offers.iter().filter(|e| e.name == EXTENSION_NAME) {
        let Some(o) = parse_offer(ext) else { continue };
        let server_bits = match o.server_bits {
            // zlib cannot compress with an 8-bit window.
            Some(8) => continue,
            Some(n) => n.min(server_cap),
            None => server_cap,
        };
        let client_bits = match o.client_bits {
            Some(offered) => offered.unwrap_or(15).min(client_cap),
            None => 15,
        };
        return Some(DeflateParams {
            server_no_context_takeover: o.server_nct || cfg.server_no_context_takeover,
            client_no_context_takeover: o.client_nct || cfg.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            level: cfg.level.min(9) as u8,
            min_compress_len: u32::try_from(cfg.min_compress_len).unwrap_or(u32::MAX),
        });
    }
    None
}

impl DeflateParams {
    /// Appends the `Sec-WebSocket-Extensions` response value (without the
    /// header name) for these parameters.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EXTENSION_NAME.as_bytes());
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            out.extend_from_slice(
                format!("; server_max_window_bits={}", self.server_max_window_bits).as_bytes(),
            );
        }
        if self.client_max_window_bits < 15 {
            out.extend_from_slice(
                format!("; client_max_window_bits={}", self.client_max_window_bits).as_bytes(),
            );
        }
    }

    /// Client side: the parameters of a server's response to our offer
    /// (`Err` if the response is invalid or one we cannot honour: the
    /// client must then fail the connection, RFC 7692 §7.1.1.1).
    /// `offered_client_bits`: whether our offer had `client_max_window_bits`.
    pub fn from_response(
        ext: &ExtensionOffer,
        offered_client_bits: bool,
        level: u8,
    ) -> Result<DeflateParams, &'static str> {
        let o = parse_offer(ext).ok_or("bad permessage-deflate parameters in the response")?;
        let client_bits = match o.client_bits {
            None => 15,
            Some(_) if !offered_client_bits => return Err("client_max_window_bits not offered"),
            Some(None) => return Err("client_max_window_bits without a value"),
            Some(Some(8)) => return Err("client_max_window_bits=8 cannot be honoured"),
            Some(Some(n)) => n,
        };
        Ok(DeflateParams {
            server_no_context_takeover: o.server_nct,
            client_no_context_takeover: o.client_nct,
            server_max_window_bits: o.server_bits.unwrap_or(15),
            client_max_window_bits: client_bits,
            level: level.min(9),
            min_compress_len: 0,
        })
    }

    /// Bytes a compression context with `bits` costs: measured on flate2
    /// 1.1 / zlib-rs 0.6 at level 1 (`ws-memory` in `bench/peers/ws-sansio`):
    /// about 245 KiB fixed (a 64 Ki-entry hash head, the pending buffer)
    /// plus 4 bytes per window slot: 252 KB at 9 bits, 267 KB at 12, 382 KB
    /// at 15.
    pub fn compressor_cost(bits: u8) -> usize {
        246 * 1024 + (4usize << bits.clamp(9, 15))
    }

    /// Bytes a decompression context costs: measured 47,552 bytes whatever
    /// the window (zlib-rs allocates the full 32 KiB window).
    pub fn decompressor_cost(_bits: u8) -> usize {
        47_552
    }

    /// Upper bound of the bytes this connection's contexts hold while they
    /// exist, as seen from `role`'s side (the compressor of our direction,
    /// the decompressor of the peer's).
    pub fn context_cost(&self, server: bool) -> usize {
        let (send_bits, recv_bits) = if server {
            (self.server_max_window_bits, self.client_max_window_bits)
        } else {
            (self.client_max_window_bits, self.server_max_window_bits)
        };
        Self::compressor_cost(send_bits) + Self::decompressor_cost(recv_bits)
    }

    /// Bytes held by an idle connection (between messages): the contexts of
    /// the directions that keep their context.
    pub fn idle_cost(&self, server: bool) -> usize {
        let (send_bits, recv_bits, send_reset, recv_reset) = if server {
            (
                self.server_max_window_bits,
                self.client_max_window_bits,
                self.server_no_context_takeover,
                self.client_no_context_takeover,
            )
        } else {
            (
                self.client_max_window_bits,
                self.server_max_window_bits,
                self.client_no_context_takeover,
                self.server_no_context_takeover,
            )
        };
        let mut n = 0;
        if !send_reset {
            n += Self::compressor_cost(send_bits);
        }
        if !recv_reset {
            n += Self::decompressor_cost(recv_bits);
        }
        n
    }
}

/// A bound on the deflate memory of many connections (e.g. one shard),
/// owned by the caller and passed to the handshake: a connection whose
/// contexts would exceed it is accepted without compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateBudget {
    limit: usize,
    used: usize,
}

impl DeflateBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> DeflateBudget {
        DeflateBudget { limit, used: 0 }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `n` bytes if they fit.
    pub fn try_reserve(&mut self, n: usize) -> bool {
        match self.used.checked_add(n) {
            Some(u) if u <= self.limit => {
                self.used = u;
                true
            }
            _ => false,
        }
    }

    /// Gives back `n` bytes: when a connection ends, its
    /// [`Negotiated::deflate_reserved`](super::Negotiated::deflate_reserved)
    /// (equal to [`Session::deflate_cost`](super::Session::deflate_cost)
    /// when the handshake used this budget).
    pub fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

/// Why an inflate failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The output would exceed the limit (close with 1009).
    TooBig,
    /// The compressed data is invalid (the session closes with 1007:
    /// RFC 7692 names no code; 1007 says the data did not fit its type).
    Corrupt,
}

/// A decompressor for one direction of a connection.
pub struct Inflater {
    inner: Decompress,
}

impl Inflater {
    /// A raw-deflate decompressor with a window of `bits` (raised to 9).
    pub fn new(bits: u8) -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(false, bits.clamp(9, 15)),
        }
    }

    /// Inflates one message's payload (without its trailer) and appends it
    /// to `out`, which must not grow past `limit` bytes: the output grows in
    /// steps (doubling from about 4× the input, at most 64 KiB) and stops as
    /// soon as it passes `limit`, so a compression bomb costs at most
    /// `limit` + 1 bytes. On error `out` is left as it was.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let start = out.len();
        let r = self.inflate_inner(input, out, limit);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn inflate_inner(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let mut step = (input.len().saturating_mul(4)).clamp(256, 64 * 1024);
        for part in [input, &TRAILER[..]] {
            let mut pos = 0;
            loop {
                // One byte more than the limit tells "too big".
                let room = (limit + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                let n = step.min(room);
                let len = out.len();
                if out.capacity() < len + n {
                    // Doubling, but never past limit + 1.
                    let target = (out.capacity() * 2).clamp(len + n, (limit + 1).max(len + n));
                    out.reserve_exact(target - len);
                }
                out.resize(len + n, 0);
                let (in0, out0) = (self.inner.total_in(), self.inner.total_out());
                let status =
                    self.inner
                        .decompress(&part[pos..], &mut out[len..], FlushDecompress::Sync);
                let consumed = (self.inner.total_in() - in0) as usize;
                let produced = (self.inner.total_out() - out0) as usize;
                out.truncate(len + produced);
                let status = status.map_err(|_| InflateError::Corrupt)?;
                pos += consumed;
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // The peer ended the deflate stream (BFINAL): the next
                    // message starts a new one; what follows is ignored.
                    self.inner.reset(false);
                    return Ok(());
                }
                if produced == n {
                    // Output full: there may be more.
                    step = (step * 2).min(64 * 1024);
                    continue;
                }
                if pos >= part.len() {
                    break;
                }
                if consumed == 0 && produced == 0 {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(())
    }

    /// Starts a new stream (no context takeover).
    pub fn reset(&mut self) {
        self.inner.reset(false);
    }
}

/// A compressor for one direction of a connection.
pub struct Deflater {
    inner: Compress,
}

impl Deflater {
    /// A raw-deflate compressor with a window of `bits` (9–15) and `level`.
    pub fn new(bits: u8, level: u8) -> Deflater {
        Deflater {
            inner: Compress::new_with_window_bits(
                Compression::new(u32::from(level.min(9))),
                false,
                bits.clamp(9, 15),
            ),
        }
    }

    /// Compresses one message and appends it to `out`, the trailing
    /// `00 00 ff ff` of the sync flush removed (RFC 7692 §7.2.1).
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut pos = 0;
        loop {
            out.reserve((input.len() - pos) / 2 + 64);
            let in0 = self.inner.total_in();
            // Into spare capacity; with room left and valid parameters
            // compressing cannot fail (completion is judged by the output).
            let _ = self
                .inner
                .compress_vec(&input[pos..], out, FlushCompress::Sync);
            pos += (self.inner.total_in() - in0) as usize;
            // Done when all input is in and the flush did not fill the room.
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.len() >= start + 4 && out[out.len() - 4..] == TRAILER {
            out.truncate(out.len() - 4);
        }
        if out.len() == start {
            // zlib writes nothing for a flush right after a flush (an empty
            // message with context takeover); the receiver appends the
            // trailer, so send the empty stored block's first byte
            // (RFC 7692 §7.2.3.6).
            out.push(0x00);
        }
    }

    /// Starts a new stream (no context takeover).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Contexts kept per thread for the directions without context takeover: a
/// context is reset and parked here after a message instead of freed, so
/// the next message on any connection of this thread (one shard) skips the
/// allocation. At most [`SPARE_MAX`] of each kind per thread.
struct Spare {
    deflaters: Vec<(u8, u8, Box<Deflater>)>,
    inflaters: Vec<(u8, Box<Inflater>)>,
}

/// Most spare contexts of each kind kept per thread.
pub const SPARE_MAX: usize = 4;

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = const {
        std::cell::RefCell::new(Spare {
            deflaters: Vec::new(),
            inflaters: Vec::new(),
        })
    };
}

/// A compressor (`bits`, `level`) from this thread's spares, or a new one.
pub(crate) fn take_deflater(bits: u8, level: u8) -> Box<Deflater> {
    SPARE
        .with_borrow_mut(|s| {
            let i = s
                .deflaters
                .iter()
                .position(|(b, l, _)| (*b, *l) == (bits, level))?;
            Some(s.deflaters.swap_remove(i).2)
        })
        .unwrap_or_else(|| Box::new(Deflater::new(bits, level)))
}

/// Resets a compressor and parks it for [`take_deflater`] (or frees it).
pub(crate) fn give_deflater(bits: u8, level: u8, mut d: Box<Deflater>) {
    d.reset();
    SPARE.with_borrow_mut(|s| {
        if s.deflaters.len() < SPARE_MAX {
            s.deflaters.push((bits, level, d));
        }
    });
}

/// A decompressor (`bits`) from this thread's spares, or a new one.
pub(crate) fn take_inflater(bits: u8) -> Box<Inflater> {
    SPARE
        .with_borrow_mut(|s| {
            let i = s.inflaters.iter().position(|(b, _)| *b == bits)?;
            Some(s.inflaters.swap_remove(i).1)
        })
        .unwrap_or_else(|| Box::new(Inflater::new(bits)))
}

/// Resets a decompressor and parks it for [`take_inflater`] (or frees it).
pub(crate) fn give_inflater(bits: u8, mut i: Box<Inflater>) {
    i.reset();
    SPARE.with_borrow_mut(|s| {
        if s.inflaters.len() < SPARE_MAX {
            s.inflaters.push((bits, i));
        }
    });
}

#[cfg(test)]
mod tests;
