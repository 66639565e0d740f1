//! Async work from handlers: [`Context::spawn`], and
//! [`ShardRemote::run_async`] behind it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::SendError;
use crate::handler::{Context, RunFn, ShardRemote};

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
            f: Some(Box::new(f)),
            registered: false,
        }
    }
}

struct RunFuture {
    remote: ShardRemote,
    f: Option<RunFn>,
    registered: bool,
}

impl Future for RunFuture {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let Some(f) = this.f.take() else {
                return Poll::Ready(Ok(()));
            };
            let shard = this.remote.shard();
            match this.remote.remote().try_run(shard, f) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err((f, SendError::Busy)) => {
                    this.f = Some(f);
                    if this.registered {
                        this.registered = false;
                        return Poll::Pending;
                    }
                    // Announce, then look once more.
                    this.remote.remote().wait_for_room(shard, cx.waker());
                    this.registered = true;
                }
                Err((_, e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}
