//! What a server runs beside its handlers: the last-used flusher.

use std::time::Duration;

use scopekey_runtime::ScopeKey;
use tokio::task::JoinHandle;

/// How often [`Background::start`] writes pending last-used times.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The runtime's background work in a server: today the last-used flusher
/// (verification records last use in memory; this writes it in batches).
/// Start it once, after the runtime, inside the async runtime; call
/// [`Background::shutdown`] after the server stops, so the last batch is
/// written.
///
/// ```no_run
/// # async fn run(keys: scopekey_runtime::ScopeKey, server: actix_web::dev::Server) -> std::io::Result<()> {
/// let background = scopekey_actix::Background::start(&keys);
/// server.await?; // returns after SIGINT/SIGTERM, once in-flight requests finish
/// if let Err(e) = background.shutdown().await {
///     eprintln!("could not write last-used times: {e}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Background {
    keys: ScopeKey,
    flusher: JoinHandle<()>,
}

impl Background {
    /// Starts the background work with the default interval.
    pub fn start(keys: &ScopeKey) -> Self {
        Self::start_with_interval(keys, DEFAULT_FLUSH_INTERVAL)
    }

    /// Starts the background work, flushing last-used times every `interval`.
    pub fn start_with_interval(keys: &ScopeKey, interval: Duration) -> Self {
        Self {
            keys: keys.clone(),
            flusher: keys.spawn_last_used_flusher(interval),
        }
    }

    /// Stops the background work and writes what is pending.
    pub async fn shutdown(self) -> Result<(), scopekey_runtime::Error> {
        self.flusher.abort();
        // The aborted task's result says only that it was aborted.
        let _ = self.flusher.await;
        self.keys.flush_last_used().await
    }
}
