//! The client protocol of `ringport serve --mode pubsub`, and its handler.
//!
//! Every message is one frame of the server's codec (by default a 4-byte
//! big-endian length, then the payload). The payload's first byte says
//! what it is; `len8` is one byte giving the length of the field after it.
//!
//! Client to server:
//! - `S` topic: subscribe (answered by `K` `S` topic, or an `E` frame). In
//!   a cluster, `K` comes once publishes from other nodes reach the
//!   subscription too (this node's interest in the topic is registered
//!   with NATS).
//! - `R` len8 topic epoch seq: subscribe since a position (epoch and seq,
//!   u64 big-endian each, as an `N` frame gave them; both 0: no position).
//!   For a topic with a history (`--cluster-history`): the messages after
//!   the position still in the history come first (as `N` frames), then
//!   `Y`, then live `N` frames, with no gap and no duplicate. For other
//!   topics: `Y` with status 4, then live `M` frames.
//! - `U` topic: unsubscribe (answered by `K` `U` topic).
//! - `P` len8 topic data: publish `data` to `topic` on every node (no
//!   answer: at most once).
//! - `I`: ask for this connection's cluster-wide id (answered by `I` id).
//! - `D` len8 id data: send `data` to the connection `id` (as `I` gave it,
//!   `NODE/SHARD.SLOT.GEN`), on any node.
//!
//! Server to client:
//! - `M` len8 topic data: a message published to a subscribed topic.
//! - `N` len8 topic epoch seq data: a message of a topic with a history,
//!   with its position (what `R` resumes from).
//! - `Y` len8 topic status epoch seq: a subscription since a position is
//!   live; status 1 recovered (every message after the position was
//!   delivered), 2 reset (the history no longer holds the position, or its
//!   epoch changed: messages were missed), 3 fresh (no position given), 4
//!   no history for this topic; epoch and seq: the position it stands at.
//! - `D` len8 from-id data: a direct message from connection `from-id`.
//! - `K` op topic: a subscribe or unsubscribe took effect.
//! - `I` id: this connection's id.
//! - `E` code detail: an error. Codes: 1 stale id (the connection is
//!   closed; detail: the id), 2 unreachable node (detail: the id), 3 queue
//!   full or busy, 4 too large, 5 bad topic or too many topics (detail:
//!   why), 6 malformed frame.
//!
//! Topic names are 1 to 255 bytes; a connection holds at most 256
//! subscriptions; a slow subscriber is handled by the server's
//! slow-consumer policy (by default it is disconnected when its send queue
//! is full), the others are not held back.

use std::net::SocketAddr;

use ringport::cluster::{Position, Recovery};
use ringport::{ClusterConnId, ConnId, Context, Handler, SendError, TopicError};

/// Error codes of `E` frames.
pub mod code {
    pub const STALE: u8 = 1;
    pub const UNREACHABLE: u8 = 2;
    pub const BUSY: u8 = 3;
    pub const TOO_LARGE: u8 = 4;
    pub const BAD_TOPIC: u8 = 5;
    pub const MALFORMED: u8 = 6;
}

/// Status byte of `Y` frames.
pub mod status {
    pub const RECOVERED: u8 = 1;
    pub const RESET: u8 = 2;
    pub const FRESH: u8 = 3;
    pub const NO_HISTORY: u8 = 4;
}

/// A decoded frame (either direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Subscribe(&'a [u8]),
    Unsubscribe(&'a [u8]),
    Publish {
        topic: &'a [u8],
        data: &'a [u8],
    },
    WhoAmI,
    Id(&'a str),
    Direct {
        id: &'a str,
        data: &'a [u8],
    },
    Message {
        topic: &'a [u8],
        data: &'a [u8],
    },
    Ok {
        op: u8,
        topic: &'a [u8],
    },
    Error {
        code: u8,
        detail: &'a [u8],
    },
    Resume {
        topic: &'a [u8],
        since: Position,
    },
    Positioned {
        topic: &'a [u8],
        at: Position,
        data: &'a [u8],
    },
    Resumed {
        topic: &'a [u8],
        status: u8,
        at: Position,
    },
}

fn position(b: &[u8]) -> Option<(Position, &[u8])> {
    if b.len() < 16 {
        return None;
    }
    let (p, rest) = b.split_at(16);
    let epoch = u64::from_be_bytes(p[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(p[8..].try_into().ok()?);
    Some((Position { epoch, seq }, rest))
}

fn put_position(out: &mut Vec<u8>, p: Position) {
    out.extend_from_slice(&p.epoch.to_be_bytes());
    out.extend_from_slice(&p.seq.to_be_bytes());
}

/// The `N` frame of a message of a topic with a history (the cluster's
/// [`ringport::cluster::HistoryConfig::encode`] in pubsub mode).
pub fn history_frame(topic: &[u8], at: Position, data: &[u8]) -> Vec<u8> {
    encode(&Frame::Positioned { topic, at, data })
}

fn len8_field(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = rest.split_first()?;
    (rest.len() >= n as usize).then(|| rest.split_at(n as usize))
}

/// Reads a frame's payload; None if it is malformed. `I` is read as
/// [`Frame::WhoAmI`] when empty, [`Frame::Id`] otherwise.
pub fn decode(payload: &[u8]) -> Option<Frame<'_>> {
    let (&op, rest) = payload.split_first()?;
    Some(match op {
        b'S' => Frame::Subscribe(rest),
        b'U' => Frame::Unsubscribe(rest),
        b'P' | b'M' => {
            let (topic, data) = len8_field(rest)?;
            if op == b'P' {
                Frame::Publish { topic, data }
            } else {
                Frame::Message { topic, data }
            }
        }
        b'I' if rest.is_empty() => Frame::WhoAmI,
        b'I' => Frame::Id(std::str::from_utf8(rest).ok()?),
        b'D' => {
            let (id, data) = len8_field(rest)?;
            Frame::Direct {
                id: std::str::from_utf8(id).ok()?,
                data,
            }
        }
        b'K' => {
            let (&op, topic) = rest.split_first()?;
            Frame::Ok { op, topic }
        }
        b'E' => {
            let (&code, detail) = rest.split_first()?;
            Frame::Error { code, detail }
        }
        b'R' => {
            let (topic, rest) = len8_field(rest)?;
            let (since, rest) = position(rest)?;
            if !rest.is_empty() {
                return None;
            }
            Frame::Resume { topic, since }
        }
        b'N' => {
            let (topic, rest) = len8_field(rest)?;
            let (at, data) = position(rest)?;
            Frame::Positioned { topic, at, data }
        }
        b'Y' => {
            let (topic, rest) = len8_field(rest)?;
            let (&status, rest) = rest.split_first()?;
            let (at, rest) = position(rest)?;
            if !rest.is_empty() {
                return None;
            }
            Frame::Resumed { topic, status, at }
        }
        _ => return None,
    })
}

/// Encodes a frame's payload (without the codec's length header).
pub fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let len8 = |out: &mut Vec<u8>, field: &[u8]| {
        out.push(field.len().min(255) as u8);
        out.extend_from_slice(&field[..field.len().min(255)]);
    };
    match frame {
        Frame::Subscribe(t) => {
            out.push(b'S');
            out.extend_from_slice(t);
        }
        Frame::Unsubscribe(t) => {
            out.push(b'U');
            out.extend_from_slice(t);
        }
        Frame::Publish { topic, data } | Frame::Message { topic, data } => {
            out.push(if matches!(frame, Frame::Publish { .. }) {
                b'P'
            } else {
                b'M'
            });
            len8(&mut out, topic);
            out.extend_from_slice(data);
        }
        Frame::WhoAmI => out.push(b'I'),
        Frame::Id(id) => {
            out.push(b'I');
            out.extend_from_slice(id.as_bytes());
        }
        Frame::Direct { id, data } => {
            out.push(b'D');
            len8(&mut out, id.as_bytes());
            out.extend_from_slice(data);
        }
        Frame::Ok { op, topic } => {
            out.extend_from_slice(&[b'K', *op]);
            out.extend_from_slice(topic);
        }
        Frame::Error { code, detail } => {
            out.extend_from_slice(&[b'E', *code]);
            out.extend_from_slice(detail);
        }
        Frame::Resume { topic, since } => {
            out.push(b'R');
            len8(&mut out, topic);
            put_position(&mut out, *since);
        }
        Frame::Positioned { topic, at, data } => {
            out.push(b'N');
            len8(&mut out, topic);
            put_position(&mut out, *at);
            out.extend_from_slice(data);
        }
        Frame::Resumed { topic, status, at } => {
            out.push(b'Y');
            len8(&mut out, topic);
            out.push(*status);
            put_position(&mut out, *at);
        }
    }
    out
}

fn send_error_code(e: SendError) -> u8 {
    match e {
        SendError::Closed => code::STALE,
        SendError::Unreachable => code::UNREACHABLE,
        SendError::TooLarge => code::TOO_LARGE,
        _ => code::BUSY,
    }
}

/// The pubsub mode's handler (stateless; one per shard).
#[derive(Debug, Default, Clone, Copy)]
pub struct PubSub;

impl PubSub {
    fn reply(ctx: &mut Context<'_>, conn: ConnId, frame: &Frame<'_>) {
        let _ = ctx.send(conn, &encode(frame));
    }

    fn error(ctx: &mut Context<'_>, conn: ConnId, code: u8, detail: &[u8]) {
        Self::reply(ctx, conn, &Frame::Error { code, detail });
    }

    /// This connection's id as clients see it: the cluster id, or
    /// `local/...` on a node outside any cluster.
    fn id_of(ctx: &Context<'_>, conn: ConnId) -> String {
        match ctx.cluster_id(conn) {
            Some(id) => id.to_string(),
            None => ClusterConnId::new("local", conn).to_string(),
        }
    }
}

impl Handler for PubSub {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        match decode(message) {
            Some(Frame::Subscribe(topic)) => match ctx.subscribe(conn, topic) {
                // Confirmed once publishes from other nodes reach it too.
                Ok(_) => {
                    let ok = encode(&Frame::Ok { op: b'S', topic });
                    ctx.after_cluster_interest(move |ctx| {
                        let _ = ctx.send(conn, &ok);
                    });
                }
                Err(e @ (TopicError::BadName | TopicError::TooManyTopics)) => {
                    Self::error(ctx, conn, code::BAD_TOPIC, e.to_string().as_bytes())
                }
                Err(_) => {}
            },
            Some(Frame::Resume { topic, since }) => {
                let since = (since != Position::default()).then_some(since);
                let name = topic.to_vec();
                ctx.subscribe_since(conn, topic, since, move |ctx, resumed| match resumed {
                    Ok(r) => {
                        let status = match r.recovery {
                            Recovery::Recovered => status::RECOVERED,
                            Recovery::Reset => status::RESET,
                            Recovery::Fresh => status::FRESH,
                            Recovery::NoHistory => status::NO_HISTORY,
                        };
                        let frame = Frame::Resumed {
                            topic: &name,
                            status,
                            at: r.position,
                        };
                        Self::reply(ctx, conn, &frame);
                    }
                    Err(e @ (TopicError::BadName | TopicError::TooManyTopics)) => {
                        Self::error(ctx, conn, code::BAD_TOPIC, e.to_string().as_bytes())
                    }
                    Err(_) => {}
                });
            }
            Some(Frame::Unsubscribe(topic)) => {
                ctx.unsubscribe(conn, topic);
                Self::reply(ctx, conn, &Frame::Ok { op: b'U', topic });
            }
            Some(Frame::Publish { topic, data }) => {
                if topic.is_empty() {
                    return Self::error(ctx, conn, code::BAD_TOPIC, b"empty topic");
                }
                // A topic with a history: the data goes to the history, and
                // each node frames it (`N`, with its position) for its
                // subscribers.
                if ctx.has_history(topic) {
                    if let Err(e) = ctx.publish(topic, data) {
                        Self::error(ctx, conn, send_error_code(e), e.to_string().as_bytes());
                    }
                    return;
                }
                // Subscribers get the `M` frame; it is built once and
                // shared by all of them.
                let out = encode(&Frame::Message { topic, data });
                if let Err(e) = ctx.publish(topic, &out) {
                    Self::error(ctx, conn, send_error_code(e), e.to_string().as_bytes());
                }
            }
            Some(Frame::WhoAmI) => {
                let id = Self::id_of(ctx, conn);
                Self::reply(ctx, conn, &Frame::Id(&id));
            }
            Some(Frame::Direct { id, data }) => {
                let Ok(to) = id.parse::<ClusterConnId>() else {
                    return Self::error(ctx, conn, code::MALFORMED, b"bad connection id");
                };
                let from = Self::id_of(ctx, conn);
                let out = encode(&Frame::Direct { id: &from, data });
                let sent = if ctx.cluster_id(conn).is_none() && to.node() == "local" {
                    ctx.send(to.conn(), &out)
                } else {
                    ctx.send_to(Some(conn), &to, &out)
                };
                if let Err(e) = sent {
                    Self::error(ctx, conn, send_error_code(e), id.as_bytes());
                }
            }
            _ => Self::error(ctx, conn, code::MALFORMED, b"unknown or malformed frame"),
        }
    }

    fn on_undeliverable(
        &mut self,
        ctx: &mut Context<'_>,
        from: ConnId,
        to: ClusterConnId,
        error: SendError,
    ) {
        let id = to.to_string();
        Self::error(ctx, from, send_error_code(error), id.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_what_was_written() {
        let frames = [
            Frame::Subscribe(b"news"),
            Frame::Unsubscribe(b"news"),
            Frame::Publish {
                topic: b"t",
                data: b"hello",
            },
            Frame::Message {
                topic: b"t",
                data: b"",
            },
            Frame::WhoAmI,
            Frame::Id("n1/0.1.2"),
            Frame::Direct {
                id: "n2/1.2.3",
                data: b"x",
            },
            Frame::Ok {
                op: b'S',
                topic: b"t",
            },
            Frame::Error {
                code: code::STALE,
                detail: b"n2/1.2.3",
            },
            Frame::Resume {
                topic: b"chat.1",
                since: Position { epoch: 7, seq: 42 },
            },
            Frame::Positioned {
                topic: b"chat.1",
                at: Position { epoch: 7, seq: 43 },
                data: b"hi",
            },
            Frame::Resumed {
                topic: b"chat.1",
                status: status::RECOVERED,
                at: Position { epoch: 7, seq: 43 },
            },
        ];
        for f in frames {
            assert_eq!(decode(&encode(&f)), Some(f.clone()), "{f:?}");
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"P\x05ab"), None, "topic longer than the frame");
        assert_eq!(decode(b"Z"), None);
        assert_eq!(decode(b"R\x01t\x00"), None, "short position");
        assert_eq!(
            decode(&history_frame(b"t", Position { epoch: 1, seq: 2 }, b"x")),
            Some(Frame::Positioned {
                topic: b"t",
                at: Position { epoch: 1, seq: 2 },
                data: b"x"
            })
        );
    }
}
