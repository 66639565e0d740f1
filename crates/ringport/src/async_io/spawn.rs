//! Async work from handlers: [`Context::spawn`], and
//! [`ShardRemote::run_async`] behind it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::CommandSlot;
use crate::handler::{Context, SendError};
use crate::shared::{Command, ShardRemote};

impl Context<'_> {
    /// Runs `future` on the tokio runtime `handle`, then `then` back on
    /// this shard with its output (feature `tokio`): the way to await a
    /// database or HTTP call for a connection without blocking the shard,
    /// as [`Context::offload`] is for blocking work.
    ///
    /// Capture the connection's id in `then`: if the connection closed
    /// meanwhile, `ctx.send` to it fails with [`SendError::Closed`] and
    /// the output goes nowhere (never to a later connection in the same
    /// slot). Handing the output back waits for room in the shard's
    /// command queue; if the server stopped, `then` is not run. The
    /// returned handle can abort the future.
    pub fn spawn<F, T>(&mut self, handle: &Handle, future: F, then: T) -> JoinHandle<()>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
        T: FnOnce(&mut Context<'_>, F::Output) + Send + 'static,
    {
        let home = self.remote();
        handle.spawn(async move {
            let output = future.await;
            if home.run_async(move |ctx| then(ctx, output)).await.is_err() {
                tracing::debug!(
                    shard = home.shard(),
                    "spawned future's output dropped: server stopping"
                );
            }
        })
    }
}

impl ShardRemote {
    /// As [`ShardRemote::run`], waiting for room in the shard's command
    /// queue instead of failing with `Busy` (feature `tokio`). Fails only
    /// with `Stopped`; `f` is dropped without running then.
    pub fn run_async(
        &self,
        f: impl FnOnce(&mut Context<'_>) + Send + 'static,
    ) -> impl Future<Output = Result<(), SendError>> + Send + 'static {
        RunFuture {
            remote: self.clone(),
            slot: CommandSlot::new(Command::Run(Box::new(f))),
        }
    }
}

struct RunFuture {
    remote: ShardRemote,
    slot: CommandSlot,
}

impl Future for RunFuture {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.remote.server_shared();
        let shard = &shared.shards[this.remote.shard()];
        this.slot.poll(cx, shared, shard)
    }
}
