//! Ready-made handlers: the echo and chat servers of `ringport serve`.

use std::net::SocketAddr;

use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError};
use crate::handler::{Context, Handler};

/// Sends every message back to its sender, of the same kind (WebSocket
/// text stays text). Copies the message into the shard's send pool: no
/// heap allocation per message once warm.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    #[inline]
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        let kind = ctx.message_kind();
        match ctx.send_as(conn, kind, message) {
            Ok(()) | Err(SendError::Closed) => {}
            // The peer sends faster than it reads past every bound: drop it
            // rather than lose an echo silently.
            Err(e) => {
                tracing::debug!(%conn, error = %e, "echo refused; closing");
                let _ = ctx.close(conn);
            }
        }
    }
}

/// Sends every message to every connected client, the sender included
/// (WebSocket clients get it of the kind it was sent as; framed clients
/// get the bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Chat;

impl Handler for Chat {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        let kind = ctx.message_kind();
        if let Err(e) = ctx.broadcast_as(kind, message) {
            tracing::debug!(%conn, error = %e, "broadcast refused");
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, _: (), _: CloseReason) {}
}
