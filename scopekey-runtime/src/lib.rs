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
//! # Design choices
//!
//! - Tables are `scopekey_keys`, `scopekey_events`,
//!   `scopekey_webhook_endpoints`, `scopekey_notices` and
//!   `scopekey_deliveries` (the last three created whatever the features,
//!   used only with `webhooks`), unqualified, so in the schema the
//!   connection's `search_path` names first on PostgreSQL; migrations are
//!   tracked in `_scopekey_migrations`, apart from the application's own
//!   sqlx migrations. On PostgreSQL they run on a connection of their own,
//!   made from the store's connect options and closed afterwards: sqlx's
//!   migrator holds a session-level advisory lock (one per database,
//!   shared with the application's own sqlx migrations), and a migration
//!   that failed would otherwise leave it held on a pooled connection. So
//!   a pool given to `PgStore::from_pool` whose `after_connect` hook sets
//!   the `search_path` migrates into the connect options' schema, not the
//!   hook's: put the schema in the URL (`?options=-c search_path=...`) or
//!   the connect options instead. Each runs in a transaction. Shipped
//!   migrations never change (each file's checksum is pinned by a test;
//!   sqlx refuses a database whose applied migration differs), new ones
//!   are added. A database migrated by a newer version is refused by an
//!   older one (sqlx: a migration applied but unknown): roll back by
//!   restoring the database too, or keep the newer version. Those that add an index
//!   (0002 to 0004 on the keys, 0005 on the audit log, 0006 on the webhook
//!   outbox) read the whole table while writes to it wait (0006: creating,
//!   rotating and revoking keys, which enqueue deliveries): on a large
//!   store, migrate at a quiet time, or before the new version starts
//!   serving.
//! - Secrets in memory: a [`Plaintext`] key, a webhook or rotation secret
//!   (`notify::signature::Secret`, with `webhooks`) and the pepper are
//!   wiped (`zeroize`) when dropped, and the random bytes a key is made of
//!   once it is made. Copies taken of them (a response body, a string from
//!   `expose_secret`) are the copier's to wipe. `scopekey-actix` wipes its
//!   own: the presented key it holds while a cache miss is looked up, a
//!   compromise report's keys, and a management body once parsed; the
//!   buffers actix-web and the operating system read a request through
//!   are beyond its reach. The notifier wipes the copies of a successor's
//!   plaintext and its lineage's signing secret it makes while sealing and
//!   opening a delivery; the HTTP client's own request buffers, and those
//!   a serializer grew and left behind, are beyond its reach too. Wiping
//!   is thus a best effort that shortens how long secrets stay in memory,
//!   not a guarantee that no copy remains.
//! - sqlx 0.9, re-exported as [`sqlx`]: a pool shared with scopekey
//!   (`SqliteStore::from_pool`, `PgStore::from_pool`) is of that version.
//! - SQLite keeps times as integer microseconds since the Unix epoch (UTC);
//!   PostgreSQL as `timestamptz`. Both keep microsecond precision.
//! - PostgreSQL transactions run at READ COMMITTED whatever the database's
//!   default: a change queued behind another re-reads the row it waited
//!   for (a second revocation answers as idempotent, a losing rotation as
//!   a conflict) instead of failing with a serialization error.
//! - A key revoked or expired after its request was verified (here, or in
//!   another process whose cache still held it; or while its body was
//!   still arriving) mints nothing: creating or rotating checks the acting
//!   key, revoked or expired at the change's time, inside the change's own
//!   transaction ([`Error::ActorRevoked`]; 401 over HTTP, as for a revoked
//!   or expired key rotating itself); revoking and reporting check it just
//!   before, and the management routes' reads with
//!   [`ScopeKey::confirm_caller`]. The SQLite
//!   and PostgreSQL stores do this; a store of your own need not. So a
//!   compromise report with `revoke_minted`, which revokes each key before
//!   it lists what that key minted, leaves no minted key live within its
//!   limit (`max_minted`; `minted_truncated` says when there were more,
//!   which it neither lists nor revokes).
//! - A rotation shortens the old key's `expires_at` to the end of its grace
//!   window, so its status reads `rotating` during the grace and `expired`
//!   after; the successor gets the parent's lifetime afresh (under a
//!   rotation policy, a fresh period from the rotation).
//! - A key needs at least one scope; scopes are deduplicated.
//! - `auth.failed` events are capped at 10 a second per process
//!   (configurable) for refusals of keys the store knows (revoked,
//!   expired), and as many for the others (malformed, unknown), so that a
//!   flood of garbage keys cannot hide a revoked key's use; past that, each
//!   known key's first refusal in a second is written too (up to 64 keys a
//!   second), so that one key refused in a loop cannot hide another's.
//!   They accumulate: delete old ones with [`ScopeKey::prune_auth_failures`]
//!   (CLI: `scopekey prune --auth-failures-older-than 90d`).
//! - A key holds at most 100 scopes; names are 1 to 200 characters; metadata
//!   is a JSON object of at most 16 KiB; a grace period is at most 365 days.
//! - A name or metadata holding a well-formed key (any prefix, its check
//!   digits matching) is refused (400 over HTTP) and not repeated back: keys
//!   are stored only as hashes, and a key pasted into text would be kept in
//!   the clear. In a revocation reason or a compromise report's source such
//!   a key is kept as its hint (`sk_…Wx9a`) instead, and the revocation goes
//!   ahead.
//! - Rotating another key takes `api_keys:write` (checked before the lookup,
//!   so ids are not revealed) and a key covering every scope of the key
//!   rotated, not only those asked for its successor: a rotation ends the
//!   old key and hands the new one to the caller, so a key that could not
//!   have created it may not rotate it (else `api_keys:write` alone could
//!   end the admin's `*` key, asking for `api_keys:write` only). A key may
//!   always rotate itself.
//!
//! # Verification and caching
//!
//! [`ScopeKey::verify`] checks the key's shape and checksum (no I/O), hashes
//! it, and reads a bounded in-process cache keyed by the hash; a miss
//! reads the store once. Entries live at most one second (configurable with
//! [`ScopeKeyBuilder::cache_ttl`], judged by the runtime's clock); the cache
//! holds at most [`ScopeKeyBuilder::cache_capacity`] entries, evicting those
//! not asked for lately (an approximation of least recently used); "no such
//! key" answers are kept in an eighth of it apart, so made-up keys, however
//! many, evict only each other. A revocation or rotation through this
//! process drops its entry at once, even if the caller stops waiting (the
//! change and the drop run in a task spawned on the current Tokio runtime),
//! and a verification that read the store before it cannot cache the old
//! answer after it. On PostgreSQL [`ScopeKey::spawn_change_listener`] drops
//! entries changed by other processes within milliseconds (LISTEN/NOTIFY),
//! the whole cache when it starts listening and on every reconnection; a
//! listener connection that goes silent (no FIN, no RST) is found by a check
//! after 1 s of quiet, answered within 5 s. Expiry is judged against
//! the clock at every verification. A store failure is
//! [`VerifyError::Unavailable`], never a pass. `last_used_at` is kept in
//! memory and written in batches ([`ScopeKey::flush_last_used`]); the keys
//! a runtime shows ([`ScopeKey::get`], [`ScopeKey::list`], ...) include its
//! own uses not yet written.
//!
//! # Performance
//!
//! `cargo bench -p scopekey-runtime --bench verify`, measured 2026-11-29 on a
//! shared 2-core AMD EPYC machine (see `docs/performance.md` for the full
//! tables, the method and the load benchmark over HTTP):
//!
//! | case | 1,000 keys | 100,000 keys |
//! |---|---|---|
//! | cache hit | 0.26 µs | 0.27 µs |
//! | cache hit, [`ScopeKey::verify_cached`] | 0.18 µs | 0.18 µs |
//! | cache miss, SQLite | 39 µs | 35 µs |
//! | cache miss, PostgreSQL (local TCP) | 120 µs | 128 µs |
//! | malformed key | 0.12 µs | |

mod cache;
pub mod clock;
pub mod compromise;
pub mod error;
pub mod key;
pub mod lifecycle;
pub mod model;
#[cfg(feature = "webhooks")]
pub mod notify;
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
pub use compromise::{CompromiseOptions, CompromiseResult, CompromiseStatus, MintedKey};
pub use error::{Error, StoreError, VerifyError};
pub use key::{KeyFormat, KeyId, Plaintext};
pub use lifecycle::{
    Actor, ListEvents, ListKeys, MIN_FLUSH_INTERVAL, MIN_STORE_TIMEOUT, NewKey, RotateOptions,
    SCOPE_READ, SCOPE_REVOKE, SCOPE_WRITE, ScopeKey, ScopeKeyBuilder, may_rotate,
};
pub use model::{
    ApiKey, AuditEvent, CreatedKey, KeyRecord, Page, Principal, SecretText, Status, VerifyRecord,
    event_type,
};
#[cfg(feature = "webhooks")]
pub use notify::{Notifier, NotifierConfig, NotifierHandle, Outbox, WebhookVerifier};
/// The sqlx the stores are built on (0.9): pools shared with them are its.
pub use sqlx;
pub use store::{Store, open};
pub use verify::VerifierConfig;
