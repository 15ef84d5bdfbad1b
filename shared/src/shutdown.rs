//! The one shutdown path (STYLE practice 3): SIGTERM or SIGINT cancels a [`Shutdown`] token;
//! every loop that accepts work watches it and stops accepting; in-flight work is drained under
//! [`Shutdown::drain`] within `SHUTDOWN_GRACE_MS`; then pools close and `main` returns.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cancellation for the whole process, plus the tracker of in-flight work to drain.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that fires on SIGTERM or SIGINT. `binary` names the process in the log
    /// line that says so (several binaries often log to one terminal or collector).
    pub fn on_signals(binary: &'static str) -> Self {
        let shutdown = Self::new();
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            wait_for_signal(binary).await;
            tracing::info!(binary, "shutdown requested");
            token.cancel();
        });
        shutdown
    }

    /// Starts the shutdown (tests, or a fatal error in one component).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// The underlying token, for APIs that take one (axum's graceful shutdown, child tokens).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns a piece of in-flight work that shutdown waits for (a delivery being handled, a
    /// consumer loop). Work spawned here must itself watch [`Shutdown::triggered`] if it can
    /// run for long.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(future)
    }

    /// Waits for tracked work to finish, at most `grace`. Returns false when time ran out,
    /// which callers log: whatever was still running is dropped, and its unacknowledged
    /// deliveries go back to the broker when the connection closes.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

async fn wait_for_signal(binary: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, binary, "cannot listen for signals; only the process manager can stop this process");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
