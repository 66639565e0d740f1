//! The binary layout of node-addressed messages (sends and stale-id
//! answers) and of topic publishes on the NATS subjects.

use bytes::{BufMut, Bytes, BytesMut};

use super::valid_node_name;
use crate::conn_id::ConnId;
use crate::error::SendError;

pub(super) const SEND: u8 = 1;
pub(super) const STALE: u8 = 2;

/// A topic publish's body: topic length (u16, big-endian), topic, payload.
pub(super) fn publish_body(topic: &[u8], payload: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(2 + topic.len() + payload.len());
    body.put_u16(topic.len() as u16);
    body.put_slice(topic);
    body.put_slice(payload);
    body.freeze()
}

/// Reads [`publish_body`]: (topic, payload), None if malformed.
pub(super) fn read_publish(body: &Bytes) -> Option<(Bytes, Bytes)> {
    if body.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([body[0], body[1]]) as usize;
    if body.len() < 2 + len {
        return None;
    }
    Some((body.slice(2..2 + len), body.slice(2 + len..)))
}

/// The subject token naming a topic: its bytes in lower-case hex (topic
/// names are any bytes; subjects allow few).
pub(super) fn topic_token(topic: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(topic.len() * 2);
    for &b in topic {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

pub(super) fn error_code(e: SendError) -> u8 {
    match e {
        SendError::Closed => 1,
        SendError::QueueFull => 2,
        SendError::Busy => 3,
        SendError::TooLarge => 4,
        SendError::Stopped => 5,
        SendError::Unreachable => 6,
    }
}

pub(super) fn error_from_code(code: u8) -> SendError {
    match code {
        2 => SendError::QueueFull,
        3 => SendError::Busy,
        4 => SendError::TooLarge,
        5 => SendError::Stopped,
        6 => SendError::Unreachable,
        _ => SendError::Closed,
    }
}

pub(super) fn put_node(b: &mut BytesMut, node: &str) {
    b.put_u8(node.len() as u8);
    b.put_slice(node.as_bytes());
}

pub(super) fn put_conn(b: &mut BytesMut, c: ConnId) {
    b.put_u16(c.shard() as u16);
    b.put_u32(c.slot());
    b.put_u32(c.generation());
}

/// A missing connection is written with generation 0 (never a live one).
pub(super) fn put_opt_conn(b: &mut BytesMut, c: Option<ConnId>) {
    match c {
        Some(c) => put_conn(b, c),
        None => b.put_slice(&[0; 10]),
    }
}

/// Reads the fields of a node-addressed message; None on a short or bad
/// body (which is then ignored: at most once).
pub(super) struct Reader(pub(super) Bytes);

impl Reader {
    pub(super) fn take(&mut self, n: usize) -> Option<Bytes> {
        (self.0.len() >= n).then(|| self.0.split_to(n))
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(super) fn node(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        let name = String::from_utf8(self.take(n)?.to_vec()).ok()?;
        valid_node_name(&name).then_some(name)
    }

    pub(super) fn opt_conn(&mut self) -> Option<Option<ConnId>> {
        let b = self.take(10)?;
        let shard = u16::from_be_bytes([b[0], b[1]]);
        let slot = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let generation = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        Some((generation != 0).then(|| ConnId::new(shard, slot, generation)))
    }

    pub(super) fn conn(&mut self) -> Option<ConnId> {
        self.opt_conn()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies_read_back() {
        let body = publish_body(b"room.1", b"hi");
        let (topic, payload) = read_publish(&body).expect("valid body");
        assert_eq!((&topic[..], &payload[..]), (&b"room.1"[..], &b"hi"[..]));
        assert_eq!(read_publish(&Bytes::from_static(b"\x00\x05ab")), None);
        assert_eq!(read_publish(&Bytes::from_static(b"\x00")), None);
    }

    #[test]
    fn topic_tokens_are_hex() {
        assert_eq!(topic_token(b"a.b *>"), "612e62202a3e");
        assert_eq!(topic_token(b""), "");
    }

    #[test]
    fn node_messages_read_back() {
        let mut b = BytesMut::new();
        put_node(&mut b, "n1");
        put_opt_conn(&mut b, None);
        put_conn(&mut b, ConnId::new(1, 2, 3));
        let mut r = Reader(b.freeze());
        assert_eq!(r.node().as_deref(), Some("n1"));
        assert_eq!(r.opt_conn(), Some(None));
        assert_eq!(r.conn(), Some(ConnId::new(1, 2, 3)));
        assert_eq!(r.u8(), None);
        for e in [
            SendError::Closed,
            SendError::QueueFull,
            SendError::Unreachable,
        ] {
            assert_eq!(error_from_code(error_code(e)), e);
        }
    }
}
