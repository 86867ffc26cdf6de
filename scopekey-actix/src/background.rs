//! What a server runs beside its handlers: the last-used flusher and, on
//! stores that have one, the change listener.

use std::time::Duration;

use scopekey_runtime::ScopeKey;
use tokio::task::JoinHandle;

/// How often [`Background::start`] writes pending last-used times.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How many times [`Background::shutdown`] tries to write the last-used
/// times.
pub const SHUTDOWN_FLUSH_ATTEMPTS: u32 = 3;

/// The runtime's background work in a server:
///
/// - the last-used flusher (verification records last use in memory; this
///   writes it in batches, [`ScopeKey::spawn_last_used_flusher`]);
/// - the change listener, on stores with a change feed (PostgreSQL): other
///   processes' revocations and rotations drop this process's cached
///   verifications at once ([`ScopeKey::spawn_change_listener`]).
///
/// Start it once, after the runtime, inside the async runtime; call
/// [`Background::shutdown`] after the server stops, so the last batch of
/// last-used times is written.
///
/// ```no_run
/// # async fn run(keys: scopekey_runtime::ScopeKey, server: actix_web::dev::Server) -> Result<(), Box<dyn std::error::Error>> {
/// let background = scopekey_actix::Background::start(&keys).await?;
/// server.await?; // returns once the server stops (actix: at SIGTERM, after in-flight requests)
/// if let Err(e) = background.shutdown().await {
///     eprintln!("could not write last-used times: {e}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Background {
    keys: ScopeKey,
    flusher: JoinHandle<()>,
    listener: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts the background work, flushing last-used times every
    /// [`DEFAULT_FLUSH_INTERVAL`]. Fails if the change feed cannot be opened.
    pub async fn start(keys: &ScopeKey) -> Result<Self, scopekey_runtime::Error> {
        Self::start_with_interval(keys, DEFAULT_FLUSH_INTERVAL).await
    }

    /// Starts the background work, flushing last-used times every `interval`.
    pub async fn start_with_interval(
        keys: &ScopeKey,
        interval: Duration,
    ) -> Result<Self, scopekey_runtime::Error> {
        let listener = keys.spawn_change_listener().await?;
        Ok(Self {
            keys: keys.clone(),
            flusher: keys.spawn_last_used_flusher(interval),
            listener,
        })
    }

    /// Stops the background work, writes the pending last-used times, and
    /// waits for the `auth.failed` events being written
    /// ([`ScopeKey::flush_auth_failures`]). Call it once the server has
    /// stopped answering.
    ///
    /// A write of last use that fails is tried again, up to
    /// [`SHUTDOWN_FLUSH_ATTEMPTS`] times in all, 100 ms then 200 ms apart:
    /// the pool's connections that actix-web's workers opened belong to
    /// their workers' runtimes, which stop with the server, and such a
    /// connection fails its next query; the pool then opens another. The
    /// last error is returned if every attempt failed (the times are kept
    /// in memory; nothing was written).
    pub async fn shutdown(self) -> Result<(), scopekey_runtime::Error> {
        for task in std::iter::once(self.flusher).chain(self.listener) {
            task.abort();
            // An aborted task's result says only that it was aborted.
            let _ = task.await;
        }
        let mut flushed = self.keys.flush_last_used().await;
        for attempt in 1..SHUTDOWN_FLUSH_ATTEMPTS {
            let Err(e) = &flushed else { break };
            tracing::info!(error = %e, attempt, "could not write the last-used times; trying again");
            tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
            flushed = self.keys.flush_last_used().await;
        }
        self.keys.flush_auth_failures().await;
        flushed
    }
}
