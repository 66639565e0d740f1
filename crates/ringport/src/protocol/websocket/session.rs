//! The per-connection state machine after the handshake: frames in,
//! messages out; control frames answered; the close handshake; messages
//! framed (and compressed) for sending.

use std::time::{Duration, Instant};

use super::close::{self, CloseCode};
use super::deflate::{self, DeflateParams, Deflater, InflateError, Inflater};
use super::frame::{self, FrameHeader, MAX_HEADER_LEN, OpCode};
use super::types::{Event, Message, MessageKind, Read, Role, SessionClosed, SessionConfig, State};

/// A data frame whose payload is still arriving.
#[derive(Debug)]
struct PartialFrame {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes already taken (the masking key's phase).
    taken: usize,
    fin: bool,
}

/// A message being reassembled, allocated while one is in progress.
#[derive(Debug)]
struct Assembly {
    /// Kind and compression of the message in progress (`None`: between
    /// messages, `frame` is then `None` too).
    msg: Option<(MessageKind, bool)>,
    /// The payload so far (compressed, if it is).
    data: Vec<u8>,
    /// `data[..utf8_ok]` is valid UTF-8 (uncompressed text).
    utf8_ok: usize,
    frame: Option<PartialFrame>,
    /// The last inflated message.
    inflated: Vec<u8>,
}

/// permessage-deflate state of a connection.
struct DeflateState {
    params: DeflateParams,
    // Boxed: a flate2 stream is ~300 bytes inline; `None` while idle with
    // no context takeover.
    tx: Option<Box<Deflater>>,
    rx: Option<Box<Inflater>>,
}

impl DeflateState {
    /// (send bits, receive bits, send resets, receive resets)
    fn sides(&self, role: Role) -> (u8, u8, bool, bool) {
        let p = &self.params;
        match role {
            Role::Server => (
                p.server_max_window_bits,
                p.client_max_window_bits,
                p.server_no_context_takeover,
                p.client_no_context_takeover,
            ),
            Role::Client => (
                p.client_max_window_bits,
                p.server_max_window_bits,
                p.client_no_context_takeover,
                p.server_no_context_takeover,
            ),
        }
    }
}

/// One WebSocket connection after the handshake, sans I/O: the caller
/// passes received bytes to [`read`](Session::read) and sends what the
/// session writes to its output buffer. No clock is read: time comes in as
/// `now` ([`close`](Session::close), [`handle_timeout`](Session::handle_timeout)).
///
/// Idle (between messages, no deflate context kept) it is 48 bytes and owns
/// no heap memory: the reassembly buffer exists only while a fragmented or
/// partially received message is in progress, deflate state only when
/// negotiated.
pub struct Session {
    asm: Option<Box<Assembly>>,
    deflate: Option<Box<DeflateState>>,
    close_deadline: Option<Instant>,
    max_frame: u32,
    max_message: u32,
    close_timeout_ms: u32,
    role: Role,
    state: State,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("deflate", &self.deflate.as_ref().map(|d| d.params))
            .field(
                "in_progress",
                &self.asm.as_ref().is_some_and(|a| a.msg.is_some()),
            )
            .finish()
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Session {
    /// A server-side session (after [`accept`](super::UpgradeRequest::accept)).
    pub fn server(cfg: &SessionConfig, deflate: Option<DeflateParams>) -> Session {
        Session::new(Role::Server, cfg, deflate)
    }

    /// A client-side session (after the 101 was validated). Each frame it
    /// sends gets a fresh masking key from `fastrand` (fast, not
    /// cryptographic: RFC 6455 §10.3 wants keys a hostile script cannot
    /// predict, which matters for browsers behind proxies, not for
    /// ringport's own benchmark and test clients).
    pub fn client(cfg: &SessionConfig, deflate: Option<DeflateParams>) -> Session {
        Session::new(Role::Client, cfg, deflate)
    }

    fn new(role: Role, cfg: &SessionConfig, deflate: Option<DeflateParams>) -> Session {
        Session {
            asm: None,
            deflate: deflate.map(|params| {
                Box::new(DeflateState {
                    params,
                    tx: None,
                    rx: None,
                })
            }),
            close_deadline: None,
            max_frame: clamp_u32(cfg.max_frame),
            max_message: clamp_u32(cfg.max_message),
            close_timeout_ms: clamp_u32(
                cfg.close_timeout.as_millis().min(u128::from(u32::MAX)) as usize
            ),
            role,
            state: State::Open,
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a message is partly received (frames or frame bytes
    /// absorbed, its end still to come): an end of stream now cuts it.
    pub fn is_receiving(&self) -> bool {
        self.asm.as_ref().is_some_and(|a| a.msg.is_some())
    }

    /// The negotiated permessage-deflate parameters.
    pub fn deflate_params(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|d| &d.params)
    }

    /// Upper bound of this session's deflate context memory
    /// ([`DeflateParams::context_cost`]), 0 without deflate: what the
    /// handshake reserved in a [`DeflateBudget`](super::DeflateBudget).
    pub fn deflate_cost(&self) -> usize {
        self.deflate
            .as_ref()
            .map_or(0, |d| d.params.context_cost(self.role == Role::Server))
    }

    /// The message being received, if any of it arrived: its payload bytes
    /// so far (compressed, if it is) and, while its final frame is being
    /// received, the payload bytes still missing.
    pub fn receiving(&self) -> Option<(u64, Option<u64>)> {
        let asm = self.asm.as_ref()?;
        asm.msg?;
        let missing = asm.frame.as_ref().filter(|f| f.fin).map(|f| f.remaining);
        Some((asm.data.len() as u64, missing))
    }

    /// Heap bytes held now (reassembly buffers; deflate contexts counted at
    /// their measured cost).
    pub fn heap_bytes(&self) -> usize {
        let asm = self.asm.as_ref().map_or(0, |a| {
            std::mem::size_of::<Assembly>() + a.data.capacity() + a.inflated.capacity()
        });
        let def = self.deflate.as_ref().map_or(0, |d| {
            let (sb, rb, _, _) = d.sides(self.role);
            std::mem::size_of::<DeflateState>()
                + d.tx
                    .as_ref()
                    .map_or(0, |_| DeflateParams::compressor_cost(sb))
                + d.rx
                    .as_ref()
                    .map_or(0, |_| DeflateParams::decompressor_cost(rb))
        });
        asm + def
    }

    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(|| fastrand::u32(..).to_ne_bytes())
    }

    /// Fails the connection: a close frame with `code` (if ours was not sent
    /// yet), and the session is finished.
    fn fail(&mut self, code: CloseCode, reason: &'static str, out: &mut Vec<u8>) -> Event<'static> {
        if self.state == State::Open {
            self.write_close(code, reason, out);
        }
        self.state = State::Closed;
        self.asm = None;
        Event::Failed { code, reason }
    }

    fn write_close(&self, code: CloseCode, reason: &str, out: &mut Vec<u8>) {
        let mut payload = [0u8; 125];
        let n = close::close_payload(code, reason, &mut payload);
        frame::write_frame(out, true, false, OpCode::Close, &payload[..n], self.mask());
    }

    /// Reads frames from `input` (received bytes; unmasked in place) until
    /// a message, a pong, the end of the close handshake, a protocol error,
    /// or the end of the input. Pings are answered, and close frames
    /// replied to, by writing to `out`. (No time is needed here: the close
    /// timeout is applied by [`handle_timeout`](Session::handle_timeout).)
    ///
    /// Call in a loop, advancing by `consumed`, until `NeedMore` (then keep
    /// the unconsumed tail and append the next bytes to it), `Closed` or
    /// `Failed`. After the session finished, input is ignored.
    pub fn read<'a>(&'a mut self, input: &'a mut [u8], out: &mut Vec<u8>) -> Read<'a> {
        let mut pos = 0;
        if self.state == State::Closed {
            return Read {
                consumed: input.len(),
                event: Event::NeedMore,
            };
        }
        // The previous message (if any) was handed out: drop its buffers.
        if self.asm.as_ref().is_some_and(|a| a.msg.is_none()) {
            self.asm = None;
        }
        loop {
            // A data frame whose payload is still arriving.
            if let Some(asm) = self.asm.as_deref_mut()
                && let Some(pf) = &mut asm.frame
            {
                let n =
                    (input.len() - pos).min(usize::try_from(pf.remaining).unwrap_or(usize::MAX));
                let chunk = &mut input[pos..pos + n];
                if let Some(m) = pf.mask {
                    frame::apply_mask(chunk, m, pf.taken);
                }
                asm.data.extend_from_slice(chunk);
                pf.taken += n;
                pf.remaining -= n as u64;
                pos += n;
                let fin = pf.fin;
                let done = pf.remaining == 0;
                if matches!(asm.msg, Some((MessageKind::Text, false)))
                    && !utf8_prefix_ok(&asm.data, &mut asm.utf8_ok)
                {
                    let ev = self.fail(
                        CloseCode::INVALID_DATA,
                        "invalid UTF-8 in a text message",
                        out,
                    );
                    return Read {
                        consumed: input.len(),
                        event: ev,
                    };
                }
                if !done {
                    return Read {
                        consumed: pos,
                        event: Event::NeedMore,
                    };
                }
                asm.frame = None;
                if fin {
                    let Some((kind, compressed)) = asm.msg.take() else {
                        // Unreachable: a partial frame always has a message.
                        continue;
                    };
                    if self.state == State::CloseSent {
                        continue;
                    }
                    return match self.finish_message(kind, compressed, out) {
                        Ok(m) => Read {
                            consumed: pos,
                            event: Event::Message(m),
                        },
                        Err(ev) => Read {
                            consumed: input.len(),
                            event: ev,
                        },
                    };
                }
                continue;
            }

            let rsv1_allowed = self.deflate.is_some();
            let h = match frame::decode_header(&input[pos..], rsv1_allowed) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    return Read {
                        consumed: pos,
                        event: Event::NeedMore,
                    };
                }
                Err(e) => {
                    let ev = self.fail(e.code, e.reason, out);
                    return Read {
                        consumed: input.len(),
                        event: ev,
                    };
                }
            };
            match (self.role, h.mask.is_some()) {
                (Role::Server, false) => {
                    let ev = self.fail(CloseCode::PROTOCOL, "unmasked client frame", out);
                    return Read {
                        consumed: input.len(),
                        event: ev,
                    };
                }
                (Role::Client, true) => {
                    let ev = self.fail(CloseCode::PROTOCOL, "masked server frame", out);
                    return Read {
                        consumed: input.len(),
                        event: ev,
                    };
                }
                _ => {}
            }
            if h.opcode.is_control() {
                let total = h.header_len + h.payload_len as usize;
                if input.len() - pos < total {
                    return Read {
                        consumed: pos,
                        event: Event::NeedMore,
                    };
                }
                let payload = &mut input[pos + h.header_len..pos + total];
                if let Some(m) = h.mask {
                    frame::apply_mask(payload, m, 0);
                }
                pos += total;
                match h.opcode {
                    OpCode::Ping => {
                        if self.state == State::Open {
                            frame::write_frame(
                                out,
                                true,
                                false,
                                OpCode::Pong,
                                payload,
                                self.mask(),
                            );
                        }
                    }
                    OpCode::Pong => {
                        let payload = &input[pos - h.payload_len as usize..pos];
                        return Read {
                            consumed: pos,
                            event: Event::Pong(payload),
                        };
                    }
                    _ => return self.on_close(pos, h, input, out),
                }
                continue;
            }
            if let Err(ev) = self.check_data_header(&h, out) {
                return Read {
                    consumed: input.len(),
                    event: ev,
                };
            }
            let total = h.header_len as u64 + h.payload_len;
            let in_progress = self.asm.as_ref().is_some_and(|a| a.msg.is_some());
            if !in_progress && h.fin && (input.len() - pos) as u64 >= total {
                // The fast path: a whole message in one frame, in the input.
                let total = total as usize;
                let payload = &mut input[pos + h.header_len..pos + total];
                if let Some(m) = h.mask {
                    frame::apply_mask(payload, m, 0);
                }
                pos += total;
                if self.state == State::CloseSent {
                    continue;
                }
                let kind = if h.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                if h.rsv1 {
                    let asm = self.asm.get_or_insert_with(new_assembly);
                    asm.data.clear();
                    asm.data.extend_from_slice(payload);
                    return match self.finish_message(kind, true, out) {
                        Ok(m) => Read {
                            consumed: pos,
                            event: Event::Message(m),
                        },
                        Err(ev) => Read {
                            consumed: input.len(),
                            event: ev,
                        },
                    };
                }
                let payload = &input[pos - h.payload_len as usize..pos];
                let msg = match kind {
                    MessageKind::Binary => Message::Binary(payload),
                    MessageKind::Text => match simdutf8::basic::from_utf8(payload) {
                        Ok(s) => Message::Text(s),
                        Err(_) => {
                            let ev = self.fail(
                                CloseCode::INVALID_DATA,
                                "invalid UTF-8 in a text message",
                                out,
                            );
                            return Read {
                                consumed: input.len(),
                                event: ev,
                            };
                        }
                    },
                };
                return Read {
                    consumed: pos,
                    event: Event::Message(msg),
                };
            }
            // Fragmented, or not all here yet: reassemble.
            let asm = self.asm.get_or_insert_with(new_assembly);
            if asm.msg.is_none() {
                let kind = if h.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                asm.msg = Some((kind, h.rsv1));
                asm.data.clear();
                asm.utf8_ok = 0;
            }
            asm.frame = Some(PartialFrame {
                remaining: h.payload_len,
                mask: h.mask,
                taken: 0,
                fin: h.fin,
            });
            pos += h.header_len;
        }
    }

    /// Continuation rules, RSV1 on the first frame only, size limits.
    fn check_data_header(
        &mut self,
        h: &FrameHeader,
        out: &mut Vec<u8>,
    ) -> Result<(), Event<'static>> {
        let in_progress = self.asm.as_ref().and_then(|a| a.msg.map(|_| a.data.len()));
        let so_far = match (h.opcode, in_progress) {
            (OpCode::Continuation, None) => {
                return Err(self.fail(
                    CloseCode::PROTOCOL,
                    "continuation frame without a message",
                    out,
                ));
            }
            (OpCode::Continuation, Some(n)) => {
                if h.rsv1 {
                    return Err(self.fail(
                        CloseCode::PROTOCOL,
                        "RSV1 on a continuation frame",
                        out,
                    ));
                }
                n as u64
            }
            (_, Some(_)) => {
                return Err(self.fail(
                    CloseCode::PROTOCOL,
                    "new message inside a fragmented one",
                    out,
                ));
            }
            (_, None) => 0,
        };
        if h.payload_len > u64::from(self.max_frame) {
            return Err(self.fail(CloseCode::TOO_BIG, "frame too big", out));
        }
        if so_far + h.payload_len > u64::from(self.max_message) {
            return Err(self.fail(CloseCode::TOO_BIG, "message too big", out));
        }
        Ok(())
    }

    /// A complete message from the reassembly buffer (inflated if
    /// compressed, UTF-8 checked if text).
    fn finish_message(
        &mut self,
        kind: MessageKind,
        compressed: bool,
        out: &mut Vec<u8>,
    ) -> Result<Message<'_>, Event<'static>> {
        let role = self.role;
        let limit = self.max_message as usize;
        let Some(asm) = self.asm.as_deref_mut() else {
            return Err(self.fail(CloseCode::INTERNAL, "no message buffer", out));
        };
        asm.msg = None;
        if compressed {
            let Some(d) = self.deflate.as_deref_mut() else {
                return Err(self.fail(
                    CloseCode::PROTOCOL,
                    "compressed message without deflate",
                    out,
                ));
            };
            let (_, rbits, _, rreset) = d.sides(role);
            let mut inflater = match d.rx.take() {
                Some(i) => i,
                None if rreset => deflate::take_inflater(rbits),
                None => Box::new(Inflater::new(rbits)),
            };
            asm.inflated.clear();
            let r = inflater.inflate(&asm.data, &mut asm.inflated, limit);
            if rreset {
                deflate::give_inflater(rbits, inflater);
            } else {
                d.rx = Some(inflater);
            }
            asm.data = Vec::new();
            match r {
                Ok(()) => {}
                Err(InflateError::TooBig) => {
                    return Err(self.fail(
                        CloseCode::TOO_BIG,
                        "message too big after decompression",
                        out,
                    ));
                }
                Err(InflateError::Corrupt) => {
                    return Err(self.fail(CloseCode::INVALID_DATA, "invalid compressed data", out));
                }
            }
        }
        // Re-borrow to hand out.
        let valid = {
            let asm = self.asm.as_deref().expect("assembly present");
            let data = if compressed { &asm.inflated } else { &asm.data };
            kind == MessageKind::Binary || simdutf8::basic::from_utf8(data).is_ok()
        };
        if !valid {
            return Err(self.fail(
                CloseCode::INVALID_DATA,
                "invalid UTF-8 in a text message",
                out,
            ));
        }
        let asm = self.asm.as_deref().expect("assembly present");
        let data = if compressed {
            &asm.inflated[..]
        } else {
            &asm.data[..]
        };
        Ok(match kind {
            MessageKind::Binary => Message::Binary(data),
            // Validated just above.
            MessageKind::Text => {
                Message::Text(simdutf8::basic::from_utf8(data).unwrap_or_default())
            }
        })
    }

    fn on_close<'a>(
        &mut self,
        pos: usize,
        h: FrameHeader,
        input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Read<'a> {
        let payload = &input[pos - h.payload_len as usize..pos];
        match close::parse_close_payload(payload) {
            Err((code, reason)) => {
                let ev = self.fail(code, reason, out);
                Read {
                    consumed: input.len(),
                    event: ev,
                }
            }
            Ok(cp) => {
                if self.state == State::Open {
                    // Echo the code (RFC 6455 §5.5.1); none if none came.
                    self.write_close(cp.code, "", out);
                }
                self.state = State::Closed;
                self.asm = None;
                Read {
                    consumed: input.len(),
                    event: Event::Closed {
                        code: cp.code,
                        reason: cp.reason,
                    },
                }
            }
        }
    }

    /// Starts the close handshake (e.g. 1001 going away when the server
    /// stops): writes a close frame to `out` and waits for the peer's close
    /// until `now` + the close timeout. `false` if a close was already sent.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &str,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.write_close(code, reason, out);
        self.state = State::CloseSent;
        self.close_deadline = Some(now + Duration::from_millis(u64::from(self.close_timeout_ms)));
        true
    }

    /// When [`handle_timeout`](Session::handle_timeout) should be called
    /// next (the close timeout), if at all.
    pub fn deadline(&self) -> Option<Instant> {
        if self.state == State::CloseSent {
            self.close_deadline
        } else {
            None
        }
    }

    /// Applies timeouts at `now`: `true` if the session just finished
    /// (the peer did not answer our close in time: close the transport).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match (self.state, self.close_deadline) {
            (State::CloseSent, Some(d)) if now >= d => {
                self.state = State::Closed;
                self.asm = None;
                true
            }
            _ => false,
        }
    }

    /// Frames a whole message into `out`: compressed when deflate was
    /// negotiated and the message is at least `min_compress_len` long,
    /// masked on the client side.
    pub fn send(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SessionClosed> {
        if self.state != State::Open {
            return Err(SessionClosed);
        }
        let mask = self.mask();
        if let Some(d) = self.deflate.as_deref_mut()
            && payload.len() >= d.params.min_compress_len as usize
        {
            let (sbits, _, sreset, _) = d.sides(self.role);
            let level = d.params.level;
            let mut deflater = match d.tx.take() {
                Some(c) => c,
                None if sreset => deflate::take_deflater(sbits, level),
                None => Box::new(Deflater::new(sbits, level)),
            };
            write_compressed(&mut deflater, kind, payload, mask, out);
            if sreset {
                deflate::give_deflater(sbits, level, deflater);
            } else {
                d.tx = Some(deflater);
            }
            return Ok(());
        }
        frame::write_frame(out, true, false, kind.opcode(), payload, mask);
        Ok(())
    }

    /// Sends a ping (payload cut to 125 bytes).
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), SessionClosed> {
        if self.state != State::Open {
            return Err(SessionClosed);
        }
        let payload = &payload[..payload.len().min(frame::MAX_CONTROL_PAYLOAD)];
        frame::write_frame(out, true, false, OpCode::Ping, payload, self.mask());
        Ok(())
    }

    /// Whether [`send`](Session::send) of a message of `len` bytes would
    /// compress it (then it needs the session, not a shared frame).
    pub fn would_compress(&self, len: usize) -> bool {
        self.deflate
            .as_ref()
            .is_some_and(|d| len >= d.params.min_compress_len as usize)
    }

    /// The compression a [`PreparedMessage`](super::PreparedMessage) can
    /// share for this session: `Some(bits)` when the server resets its
    /// compressor after each message (any message compressed with that
    /// window and level fits), `None` when it must compress itself.
    pub(crate) fn shared_compression(&self) -> Option<(u8, u8)> {
        let d = self.deflate.as_deref()?;
        let (sbits, _, sreset, _) = d.sides(self.role);
        (sreset && self.role == Role::Server).then_some((sbits, d.params.level))
    }
}

fn new_assembly() -> Box<Assembly> {
    Box::new(Assembly {
        msg: None,
        data: Vec::new(),
        utf8_ok: 0,
        frame: None,
        inflated: Vec::new(),
    })
}

/// Compresses `payload` into one RSV1 frame appended to `out`.
pub(crate) fn write_compressed(
    deflater: &mut Deflater,
    kind: MessageKind,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; MAX_HEADER_LEN]);
    deflater.compress(payload, out);
    let clen = out.len() - start - MAX_HEADER_LEN;
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = frame::encode_header(&mut hdr, true, true, kind.opcode(), clen as u64, mask);
    out[start + MAX_HEADER_LEN - n..start + MAX_HEADER_LEN].copy_from_slice(&hdr[..n]);
    out.copy_within(start + MAX_HEADER_LEN - n.., start);
    out.truncate(start + n + clen);
    if let Some(m) = mask {
        frame::apply_mask(&mut out[start + n..], m, 0);
    }
}

/// Extends the validated UTF-8 prefix of `data` from `*ok`; `false` as soon
/// as an invalid sequence is seen (a sequence cut at the end is not one).
fn utf8_prefix_ok(data: &[u8], ok: &mut usize) -> bool {
    match simdutf8::compat::from_utf8(&data[*ok..]) {
        Ok(_) => {
            *ok = data.len();
            true
        }
        Err(e) if e.error_len().is_none() => {
            *ok += e.valid_up_to();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
