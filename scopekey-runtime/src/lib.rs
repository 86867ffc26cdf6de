//! The scopekey runtime: scoped API keys with their whole lifecycle, on
//! SQLite or PostgreSQL.
//!
//! ```
//! use scopekey_runtime::{Actor, NewKey, RotateOptions, ScopeKey, store::sqlite::SqliteStore};
//! use time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = ScopeKey::builder(SqliteStore::connect("sqlite::memory:").await?).build();
//! keys.migrate().await?;
//!
//! // Create: the plaintext exists only in this result.
//! let created = keys.create(NewKey::new("billing job", ["orders:read"]), Actor::System).await?;
//! let principal = keys.verify(created.plaintext.expose_secret()).await?;
//! assert!(principal.grants().covers_str("orders:read"));
//!
//! // Rotate: both keys work during the grace period.
//! let next = keys
//!     .rotate(created.key.id, RotateOptions { grace: Some(Duration::hours(1)), ..Default::default() }, Actor::System)
//!     .await?;
//! assert_eq!(next.key.parent_key_id, Some(created.key.id));
//! assert!(keys.verify(created.plaintext.expose_secret()).await.is_ok());
//!
//! // Revoke: refused on the very next verification.
//! keys.revoke(next.key.id, Some("leaked"), Actor::System).await?;
//! assert!(keys.verify(next.plaintext.expose_secret()).await.is_err());
//! # Ok(()) }
//! ```
//!
//! # Choices where the specification is silent
//!
//! - Tables are named `scopekey_keys` and `scopekey_events`; migrations are
//!   tracked in `_scopekey_migrations`, apart from the application's own
//!   sqlx migrations.
//! - SQLite keeps times as integer microseconds since the Unix epoch (UTC);
//!   PostgreSQL as `timestamptz`. Both keep microsecond precision.
//! - A rotation shortens the old key's `expires_at` to the end of its grace
//!   window, so its status reads `rotating` during the grace and `expired`
//!   after; the successor gets the parent's lifetime afresh.
//! - A key needs at least one scope; scopes are deduplicated.
//! - `auth.failed` events are capped at 10 a second per process (configurable).

pub mod clock;
pub mod compromise;
pub mod error;
pub mod key;
pub mod lifecycle;
pub mod model;
pub mod store;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
mod verify;

/// Scope grammar and matching, from `scopekey-core`.
pub mod scope {
    pub use scopekey_core::*;
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use compromise::{CompromiseResult, CompromiseStatus};
pub use error::{Error, StoreError, VerifyError};
pub use key::{KeyFormat, KeyId, Plaintext};
pub use lifecycle::{
    Actor, ListEvents, ListKeys, NewKey, RotateOptions, SCOPE_READ, SCOPE_REVOKE, SCOPE_WRITE,
    ScopeKey, ScopeKeyBuilder,
};
pub use model::{ApiKey, AuditEvent, CreatedKey, KeyRecord, Page, Principal, Status, event_type};
pub use store::{Store, open};
pub use verify::VerifierConfig;
