//! The error types callers match on.

use crate::key::Malformed;

/// A storage failure (database unreachable, query failed). Its message may
/// name the database; it never carries a key or a hash. Its `Debug` shows
/// its cause as displayed, not the driver's own `Debug` (PostgreSQL's
/// error detail may quote a row's values).
#[derive(thiserror::Error)]
#[error("key store unavailable: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    actor_revoked: bool,
    corrupt: bool,
}

impl std::fmt::Debug for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreError")
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .field("actor_revoked", &self.actor_revoked)
            .field("corrupt", &self.corrupt)
            .finish()
    }
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
            corrupt: false,
        }
    }

    /// A store failure described by a message alone.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            actor_revoked: false,
            corrupt: false,
        }
    }

    /// A stored row that cannot be used (a value that does not decode, a
    /// scope that no longer parses): [`is_corrupt`](Self::is_corrupt). A
    /// verification still fails closed on it (503). The notifier passes
    /// over the one key whose row it is and goes on with the others; any
    /// other failure (a store that does not answer) ends its step. A
    /// custom [`Store`](crate::store::Store) reports a row it cannot decode
    /// with this, or with [`into_corrupt`](Self::into_corrupt).
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::msg(message).into_corrupt()
    }

    /// This error, marked as corrupt data ([`is_corrupt`](Self::is_corrupt)).
    pub fn into_corrupt(mut self) -> Self {
        self.corrupt = true;
        self
    }

    /// Whether the failure is one row's data rather than the store's: made
    /// with [`corrupt`](Self::corrupt) or [`into_corrupt`](Self::into_corrupt),
    /// or a column sqlx could not decode. Everything else (unreachable,
    /// timed out, a query refused) is the store failing.
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    /// This error, not marked as corrupt data: a write that failed (on an
    /// unreadable row of another table, say) is the store's failure, not
    /// the data of the key it was about.
    #[cfg(feature = "webhooks")]
    pub(crate) fn not_corrupt(mut self) -> Self {
        self.corrupt = false;
        self
    }

    /// The change was refused because the key acting for it (the event's
    /// `actor_key_id`) is revoked, expired at the change's time, or not in
    /// the store at all, as the store found inside the change's own
    /// transaction: a key revoked or expired while its request ran mints
    /// nothing.
    /// Not a failure of the store; the runtime reports it as
    /// [`Error::ActorRevoked`].
    pub fn actor_revoked() -> Self {
        Self {
            message: "the acting key is revoked, expired or unknown".into(),
            source: None,
            actor_revoked: true,
            corrupt: false,
        }
    }

    /// Whether this is [`StoreError::actor_revoked`].
    pub fn is_actor_revoked(&self) -> bool {
        self.actor_revoked
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let corrupt = matches!(e, sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_));
        let error = Self::new("database error", e);
        if corrupt { error.into_corrupt() } else { error }
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
    /// The key acting for the change was revoked or expired while its
    /// request ran (after it was verified, before the change committed), or
    /// is not in the store at all: nothing was changed. Audited as
    /// `auth.failed` (reason `revoked`, `expired` or `unknown`). Over HTTP,
    /// the same 401 as any key that is not valid.
    #[error("the acting key is revoked, expired or unknown")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause is shown as displayed, never by its own `Debug` (a driver's
    /// may carry a row's values).
    #[test]
    fn debug_shows_the_cause_as_displayed() {
        #[derive(Debug)]
        struct Driver {
            #[allow(dead_code)]
            detail: &'static str,
        }
        impl std::fmt::Display for Driver {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("duplicate key value")
            }
        }
        impl std::error::Error for Driver {}
        let e = StoreError::new(
            "insert failed",
            Driver {
                detail: "Key (key_hash)=(\\xabab)",
            },
        );
        let shown = format!("{e:?}");
        assert!(shown.contains("duplicate key value"), "{shown}");
        assert!(
            !shown.contains("key_hash") && !shown.contains("abab"),
            "{shown}"
        );
    }

    /// Only a row's data is corrupt; the store failing in any other way
    /// (the notifier then ends its pass) is not.
    #[test]
    fn corrupt_is_a_rows_data_only() {
        let decode = sqlx::Error::Decode("bad".into());
        assert!(StoreError::from(decode).is_corrupt());
        let column = sqlx::Error::ColumnDecode {
            index: "scopes".into(),
            source: "bad".into(),
        };
        assert!(StoreError::from(column).is_corrupt());
        assert!(StoreError::corrupt("a stored scope no longer parses").is_corrupt());
        assert!(StoreError::msg("x").into_corrupt().is_corrupt());

        assert!(!StoreError::from(sqlx::Error::PoolTimedOut).is_corrupt());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_corrupt());
        assert!(!StoreError::msg("the store took longer than 2s").is_corrupt());
        let io = std::io::Error::other("connection reset");
        assert!(!StoreError::new("redis", io).is_corrupt());
        assert!(!StoreError::actor_revoked().is_corrupt());
    }
}
