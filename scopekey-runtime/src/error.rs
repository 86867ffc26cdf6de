//! The error types callers match on.

use crate::key::Malformed;

/// A storage failure (database unreachable, query failed). Its message may
/// name the database; it never carries a key or a hash.
#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    actor_revoked: bool,
}

impl StoreError {
    /// A store failure with a cause.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
            actor_revoked: false,
        }
    }

    /// A store failure described by a message alone (e.g. corrupt data).
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            actor_revoked: false,
        }
    }

    /// The change was refused because the key acting for it (the event's
    /// `actor_key_id`) is revoked, or is not in the store at all, as the
    /// store found inside the change's own transaction: a key revoked while
    /// its request ran mints nothing.
    /// Not a failure of the store; the runtime reports it as
    /// [`Error::ActorRevoked`].
    pub fn actor_revoked() -> Self {
        Self {
            message: "the acting key is revoked".into(),
            source: None,
            actor_revoked: true,
        }
    }

    /// Whether this is [`StoreError::actor_revoked`].
    pub fn is_actor_revoked(&self) -> bool {
        self.actor_revoked
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::new("database error", e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::new("migration failed", e)
    }
}

/// Why a lifecycle operation (create, rotate, revoke, list, get, events)
/// failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: an ill-formed or unknown scope, a negative grace, a bad
    /// cursor or filter. The message says what and is safe to show callers.
    #[error("{0}")]
    Invalid(String),
    /// The acting key may not do this (e.g. grant scopes it does not hold).
    #[error("{0}")]
    Forbidden(String),
    /// No key with that id.
    #[error("no key with id {0}")]
    NotFound(String),
    /// The key is in a state that forbids the operation (already rotated,
    /// revoked, expired), or a concurrent operation won.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Unavailable(StoreError),
    /// The key acting for the change was revoked while its request ran
    /// (after it was verified, before the change committed), or is not in
    /// the store at all: nothing was changed. Audited as `auth.failed`
    /// (reason `revoked`). Over HTTP, the same 401 as any key that is not
    /// valid.
    #[error("the acting key is revoked")]
    ActorRevoked,
    /// Something that should not happen (the system random source failed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        if e.is_actor_revoked() {
            Error::ActorRevoked
        } else {
            Error::Unavailable(e)
        }
    }
}

/// Why a presented key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a well-formed key (shape, prefix or checksum); no lookup was made.
    #[error("malformed key ({0:?})")]
    Malformed(Malformed),
    /// Well formed, but no such key.
    #[error("unknown key")]
    Unknown,
    /// The key was revoked.
    #[error("revoked key")]
    Revoked,
    /// The key expired (or its rotation grace ended).
    #[error("expired key")]
    Expired,
    /// The store failed: callers must refuse the request (fail closed).
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl VerifyError {
    /// A short reason for logs and the audit log (`malformed`, `unknown`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Unknown => "unknown",
            VerifyError::Revoked => "revoked",
            VerifyError::Expired => "expired",
            VerifyError::Unavailable(_) => "unavailable",
        }
    }
}
