//! The protocol seam with a toy protocol (not WebSocket: the engine must
//! not care which protocol it drives), deterministic: scripted
//! completions, virtual time.
//!
//! The toy protocol speaks lines: the client opens with `HELLO name`, the
//! handler decides (`WELCOME` or `NO status`); then `Ttext` and `Bbytes`
//! are text and binary messages, `PING` is answered `PONG` by the protocol,
//! `BYE` ends the connection. Outgoing messages are `T…`/`B…` lines; a
//! close says `CLOSE code`; the heartbeat is a `PING`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Engine;
use super::sim::{Sim, deref_to_sim, shard_with};
use crate::codec::LengthDelimited;
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError};
use crate::handler::{Context, Handler};
use crate::protocol::{
    ConnProtocol, Framed, ListenerProtocol, MAX_PROTOCOL_HEADER, MessageKind, Payload, Step,
    UpgradeDecision, UpgradeInfo,
};
use crate::sys::Op;

const TABLE: usize = 64;

struct Hello {
    name: String,
    none: Vec<String>,
}

impl UpgradeInfo for Hello {
    fn method(&self) -> &str {
        "HELLO"
    }
    fn path(&self) -> &str {
        &self.name
    }
    fn query(&self) -> Option<&str> {
        None
    }
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn headers(&self) -> Vec<(&str, &[u8])> {
        Vec::new()
    }
    fn subprotocols(&self) -> &[String] {
        &self.none
    }
}

enum Toy {
    Opening,
    Deciding(Hello),
    Open,
    Done,
}

impl ConnProtocol for Toy {
    fn receive(&mut self, input: &mut [u8], _: Instant, out: &mut Vec<u8>) -> (usize, Step) {
        if matches!(self, Toy::Done | Toy::Deciding(_)) {
            return (input.len(), Step::NeedMore);
        }
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return (0, Step::NeedMore);
        };
        let line = &input[..end];
        let used = end + 1;
        if let Toy::Opening = self {
            return match line.strip_prefix(b"HELLO ") {
                Some(name) => {
                    *self = Toy::Deciding(Hello {
                        name: String::from_utf8_lossy(name).into_owned(),
                        none: Vec::new(),
                    });
                    (used, Step::Upgrade)
                }
                None => {
                    out.extend_from_slice(b"NO 400\n");
                    *self = Toy::Done;
                    (
                        used,
                        Step::Close(CloseReason::InvalidFrame("no hello".into())),
                    )
                }
            };
        }
        match line {
            b"PING" => {
                out.extend_from_slice(b"PONG\n");
                (used, Step::Control)
            }
            b"BYE" => {
                out.extend_from_slice(b"BYE\n");
                *self = Toy::Done;
                (used, Step::Close(CloseReason::PeerClosed))
            }
            [b'T', ..] => (
                used,
                Step::Message(MessageKind::Text, Payload::Input(1, end)),
            ),
            [b'B', rest @ ..] => (
                used,
                Step::Message(
                    MessageKind::Binary,
                    Payload::Owned(Bytes::copy_from_slice(rest)),
                ),
            ),
            _ => (
                used,
                Step::Close(CloseReason::InvalidFrame("bad line".into())),
            ),
        }
    }

    fn upgrade_info(&self) -> Option<&dyn UpgradeInfo> {
        match self {
            Toy::Deciding(hello) => Some(hello),
            _ => None,
        }
    }

    fn decide(&mut self, decision: UpgradeDecision, out: &mut Vec<u8>) -> Result<bool, SendError> {
        match decision {
            UpgradeDecision::Accept { .. } => {
                out.extend_from_slice(b"WELCOME\n");
                *self = Toy::Open;
                Ok(true)
            }
            UpgradeDecision::Refuse { status } => {
                out.extend_from_slice(format!("NO {status}\n").as_bytes());
                *self = Toy::Done;
                Ok(false)
            }
        }
    }

    fn is_open(&self) -> bool {
        matches!(self, Toy::Open)
    }

    fn frame(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        header: &mut [u8; MAX_PROTOCOL_HEADER],
        out: &mut Vec<u8>,
    ) -> Result<Framed, SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        let tag = if kind == MessageKind::Text {
            b'T'
        } else {
            b'B'
        };
        if payload.len() < 8 {
            out.push(tag);
            out.extend_from_slice(payload);
            out.push(b'\n');
            return Ok(Framed::Written);
        }
        // Longer ones: a header, the payload by reference (no newline: the
        // toy's long messages are length-prefixed).
        header[0] = tag;
        header[1] = payload.len() as u8;
        Ok(Framed::Header(2))
    }

    fn close(&mut self, reason: &CloseReason, _: Instant, out: &mut Vec<u8>) {
        if self.is_open() {
            let code = match reason {
                CloseReason::ServerStopping => 1001,
                _ => 1000,
            };
            out.extend_from_slice(format!("CLOSE {code}\n").as_bytes());
            *self = Toy::Done;
        }
    }

    fn heartbeat(&mut self, out: &mut Vec<u8>) -> bool {
        if self.is_open() {
            out.extend_from_slice(b"PING\n");
        }
        self.is_open()
    }

    fn heap_bytes(&self) -> usize {
        0
    }
}

struct ToyListener;

impl ListenerProtocol for ToyListener {
    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(500)
    }
    fn open(&self, _: SocketAddr, _: Instant) -> Box<dyn ConnProtocol> {
        Box::new(Toy::Opening)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Upgrade(String),
    Connect(ConnId),
    Message(MessageKind, Vec<u8>),
    Close(CloseReason),
}

/// Lets in everyone but "mallory"; echoes messages with their kind.
struct Doorman(Rc<RefCell<Vec<Seen>>>);

impl Handler for Doorman {
    type ConnState = ();
    fn on_upgrade(
        &mut self,
        _: &mut Context<'_>,
        _: ConnId,
        _: SocketAddr,
        request: &dyn UpgradeInfo,
    ) -> UpgradeDecision {
        self.0
            .borrow_mut()
            .push(Seen::Upgrade(request.path().to_string()));
        if request.path() == "mallory" {
            UpgradeDecision::Refuse { status: 403 }
        } else {
            UpgradeDecision::accept()
        }
    }
    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        self.0.borrow_mut().push(Seen::Connect(conn));
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), m: &[u8]) {
        let kind = ctx.message_kind();
        self.0.borrow_mut().push(Seen::Message(kind, m.to_vec()));
        ctx.send_as(conn, kind, m).unwrap();
    }
    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, _: (), reason: CloseReason) {
        self.0.borrow_mut().push(Seen::Close(reason));
    }
}

struct Harness {
    sim: Sim<Doorman>,
    seen: Rc<RefCell<Vec<Seen>>>,
}

deref_to_sim!(Harness, Doorman);

impl Harness {
    fn new(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
        let shared = shard_with(TABLE, tweak);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let listeners: Vec<Option<Arc<dyn ListenerProtocol>>> =
            vec![None, Some(Arc::new(ToyListener))];
        let engine = Engine::new(
            0,
            shared,
            LengthDelimited::new(),
            TABLE,
            Doorman(seen.clone()),
            true,
            t0,
        )
        .with_protocols(listeners);
        Harness {
            sim: Sim::new(engine, t0),
            seen,
        }
    }

    fn seen(&mut self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.borrow_mut())
    }

    /// A toy connection accepted into `slot` (listener 1).
    fn accept(&mut self, slot: u32) -> ConnId {
        let ops = self.accepted(1, slot, "127.0.0.9:4000".parse().unwrap());
        let Some(Op::Recv { generation, .. }) = ops.first() else {
            panic!("an accepted connection starts receiving: {ops:?}");
        };
        ConnId::new(0, slot, *generation)
    }

    /// What is queued to `conn`, and the queue emptied (as if sent).
    fn output(&mut self, conn: ConnId) -> Vec<u8> {
        let core = &mut self.sim.engine.core;
        let s = &mut core.conns[conn.slot() as usize];
        let mut out = Vec::new();
        s.queue.copy_to(&mut out);
        let n = s.queue.len();
        s.queue.consume(core.sends.pool(), n);
        out
    }
}

#[test]
fn the_handler_sees_a_connection_after_its_opening_and_messages_keep_their_kind() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(3);
    // Nothing for the handler until the opening is complete, even in pieces.
    h.receive(conn, b"HEL");
    assert_eq!(h.seen(), vec![]);
    h.receive(conn, b"LO alice\nThello\nB\x01\x02\nPING\n");
    assert_eq!(
        h.seen(),
        vec![
            Seen::Upgrade("alice".into()),
            Seen::Connect(conn),
            Seen::Message(MessageKind::Text, b"hello".to_vec()),
            Seen::Message(MessageKind::Binary, vec![1, 2]),
        ]
    );
    // The protocol's own output and the handler's replies, in order.
    assert_eq!(h.output(conn), b"WELCOME\nThello\nB\x01\x02\nPONG\n");
    // A long message: the protocol's header, then the payload.
    h.receive(conn, b"Tlonger than eight\n");
    h.seen();
    assert_eq!(h.output(conn), b"T\x11longer than eight");
}

#[test]
fn a_refused_opening_never_reaches_the_handler() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(5);
    let ops = h.receive(conn, b"HELLO mallory\nThi\n");
    assert_eq!(h.seen(), vec![Seen::Upgrade("mallory".into())]);
    // Closing: reading stops, the answer is flushed first; the handler
    // hears nothing of it (no `on_connect`, no `on_close`).
    assert!(
        ops.contains(&Op::CancelRecv {
            slot: 5,
            generation: conn.generation()
        }),
        "{ops:?}"
    );
    assert_eq!(h.output(conn), b"NO 403\n");
    let slot = &h.engine.core.conns[5];
    assert_eq!(slot.state, super::conn::SlotState::Closing);
    let stats = &h.engine.core.stats;
    assert_eq!((stats.upgrades, stats.upgrades_refused), (0, 1));
}

#[test]
fn a_connection_silent_past_the_opening_deadline_is_closed() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(2);
    h.receive(conn, b"HELL");
    h.turn(400);
    assert_eq!(h.engine.core.stats.upgrade_timeouts, 0);
    let ops = h.turn(600);
    assert_eq!(h.engine.core.stats.upgrade_timeouts, 1);
    assert!(!ops.is_empty(), "the close starts");
    assert_eq!(h.seen(), vec![]);
}

#[test]
fn closes_say_goodbye_through_the_protocol_and_heartbeats_use_it() {
    let mut h = Harness::new(|c| c.heartbeat = Some(Duration::from_millis(200)));
    let conn = h.accept(1);
    h.receive(conn, b"HELLO bob\n");
    h.seen();
    assert_eq!(h.output(conn), b"WELCOME\n");
    // Idle past the heartbeat period: the protocol's keep-alive.
    h.turn(300);
    assert_eq!(h.output(conn), b"PING\n");
    assert_eq!(h.engine.core.stats.heartbeats, 1);
    // The peer says goodbye: answered, then closed as the peer's close.
    h.receive(conn, b"BYE\n");
    assert_eq!(h.output(conn), b"BYE\n");
    h.turn(301);
    let slot = conn.slot() as usize;
    assert_ne!(
        h.engine.core.conns[slot].state,
        super::conn::SlotState::Open
    );
}

#[test]
fn a_framed_listener_beside_it_is_unchanged() {
    let mut h = Harness::new(|_| {});
    let ops = h.accepted(0, 7, "127.0.0.9:4001".parse().unwrap());
    let Some(&Op::Recv { generation, .. }) = ops.first() else {
        panic!("{ops:?}")
    };
    let conn = ConnId::new(0, 7, generation);
    // The handler sees it at once, and frames are the codec's.
    assert_eq!(h.seen(), vec![Seen::Connect(conn)]);
    h.receive(conn, &[0, 0, 0, 2, b'h', b'i']);
    assert_eq!(
        h.seen(),
        vec![Seen::Message(MessageKind::Binary, b"hi".to_vec())]
    );
    assert_eq!(h.output(conn), [0, 0, 0, 2, b'h', b'i']);
}
