//! Plain data: keys, statuses, principals, audit events, pages.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;
use crate::key::{KeyHash, KeyId, Plaintext};
use crate::scope::Grants;

/// A key's status, derived from its row at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Usable, not rotated.
    Active,
    /// Rotated, still inside its grace window.
    Rotating,
    /// Revoked.
    Revoked,
    /// Past its expiry (or past the end of its grace window).
    Expired,
}

impl Status {
    /// Every status, in the order the filters document them.
    pub const ALL: [Status; 4] = [
        Status::Active,
        Status::Rotating,
        Status::Revoked,
        Status::Expired,
    ];

    /// The status name as used in JSON and filters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Rotating => "rotating",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                // Repeated only when too short to be a key pasted there.
                let shown = if s.len() <= 32 {
                    format!("`status` `{}`", s.escape_debug())
                } else {
                    "`status`".to_owned()
                };
                Error::Invalid(format!(
                    "{shown} must be one of active, rotating, revoked, expired (lower case)"
                ))
            })
    }
}

/// What verifying a key needs of its row, and all that the verification
/// lookup ([`Store::find_for_verification`](crate::Store::find_for_verification))
/// reads.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyRecord {
    /// The key's id.
    pub id: KeyId,
    /// The key's name.
    pub name: String,
    /// The granted scopes, as stored.
    pub scopes: Vec<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
}

impl From<KeyRecord> for VerifyRecord {
    fn from(r: KeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            scopes: r.scopes,
            revoked_at: r.revoked_at,
            expires_at: r.expires_at,
        }
    }
}

/// A stored key, as a [`Store`](crate::Store) reads and writes it. Carries
/// the hash: only stores and the verifier see this type. Its `Debug` shows
/// neither the hash nor the webhook's sealed secret, and of the webhook's
/// URL only its scheme, host and port (a path or query may hold a token).
#[derive(Clone, PartialEq)]
pub struct KeyRecord {
    /// Identifier.
    pub id: KeyId,
    /// Human name.
    pub name: String,
    /// Granted scopes, as validated strings.
    pub scopes: Vec<String>,
    /// Free-form JSON object.
    pub metadata: Map<String, Value>,
    /// Display hint (`sk_…Wx9a`).
    pub hint: String,
    /// Lookup hash.
    pub key_hash: KeyHash,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Expiry; after a rotation, the end of the grace window.
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// When it was rotated (it has a successor).
    pub rotated_at: Option<OffsetDateTime>,
    /// The key this one replaced.
    pub parent_key_id: Option<KeyId>,
    /// Last successful verification, as last flushed.
    pub last_used_at: Option<OffsetDateTime>,
    /// The rotation policy: the key expires (and so is due for rotation)
    /// this long after creation unless given another expiry; successors get
    /// a fresh period.
    pub rotation_period: Option<time::Duration>,
    /// Where the notifier delivers this key's successor when it rotates the
    /// key automatically; `None`: never rotated behind its holder's back.
    pub rotation_webhook_url: Option<String>,
    /// That webhook's signing secret, sealed under the runtime's rotation
    /// secret (`sealed:v1:…`); inherited by successors. Never shown.
    pub rotation_webhook_secret: Option<String>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("metadata", &self.metadata)
            .field("hint", &self.hint)
            .field("key_hash", &self.key_hash)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("revoked_reason", &self.revoked_reason)
            .field("rotated_at", &self.rotated_at)
            .field("parent_key_id", &self.parent_key_id)
            .field("last_used_at", &self.last_used_at)
            .field("rotation_period", &self.rotation_period)
            .field(
                "rotation_webhook_url",
                &self.rotation_webhook_url.as_deref().map(origin),
            )
            .field(
                "rotation_webhook_secret",
                &self.rotation_webhook_secret.as_ref().map(|_| ".."),
            )
            .finish()
    }
}

/// A URL's scheme, host and port alone (no user information, path, query
/// or fragment), for `Debug`.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

impl KeyRecord {
    /// The status at `now`: revoked, else expired, else rotating, else active.
    pub fn status_at(&self, now: OffsetDateTime) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Status::Expired
        } else if self.rotated_at.is_some() {
            Status::Rotating
        } else {
            Status::Active
        }
    }

    /// The public view at `now`: no hash.
    pub fn to_api_key(&self, now: OffsetDateTime) -> ApiKey {
        ApiKey {
            id: self.id,
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            metadata: self.metadata.clone(),
            hint: self.hint.clone(),
            status: self.status_at(now),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            revoked_reason: self.revoked_reason.clone(),
            rotated_at: self.rotated_at,
            parent_key_id: self.parent_key_id,
            last_used_at: self.last_used_at,
            rotation_period_seconds: self.rotation_period.map(|p| p.whole_seconds()),
            rotation_webhook_url: self.rotation_webhook_url.clone(),
        }
    }
}

/// A key as the API shows it: never a hash, never a plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Identifier.
    pub id: KeyId,
    /// Human name.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Free-form JSON object.
    pub metadata: Map<String, Value>,
    /// Display hint (`sk_…Wx9a`).
    pub hint: String,
    /// Status when this view was made.
    pub status: Status,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry (after a rotation, the end of the grace window).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    #[serde(default)]
    pub revoked_reason: Option<String>,
    /// When it was rotated.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// The key this one replaced.
    pub parent_key_id: Option<KeyId>,
    /// Last successful use. Written to the store in batches; the runtime
    /// that answers adds its own uses not yet written, so a key's use shows
    /// at once on the node that verified it, and on others after the next
    /// flush.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The rotation policy, in seconds: the key expires (and should be
    /// rotated) this long after creation, and each successor gets a fresh
    /// period. `null`: no policy.
    #[serde(default)]
    pub rotation_period_seconds: Option<i64>,
    /// The key's own delivery webhook: when set, the notifier rotates the
    /// key when due and posts the successor's plaintext there. `null`: the
    /// key is never rotated behind its holder's back.
    #[serde(default)]
    pub rotation_webhook_url: Option<String>,
}

/// A key just created or rotated, with its plaintext: the only time the
/// plaintext exists.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The plaintext, to hand over once.
    pub plaintext: Plaintext,
    /// For a key created with a `rotation_webhook_url`: the secret that
    /// signs the deliveries of its successors (random, the key lineage's
    /// own), so its holder can verify them. Handed over once, like the
    /// plaintext; `None` otherwise.
    pub rotation_webhook_secret: Option<SecretText>,
}

/// A secret in text form (`whsec_…`) to hand over once. `Debug` never shows
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    #[cfg(feature = "webhooks")]
    pub(crate) fn new(text: String) -> Self {
        Self(text)
    }

    /// The secret text: hand it to its holder, once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(\"…\")")
    }
}

/// A verified caller: who it is and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id.
    pub id: KeyId,
    /// The key's name.
    pub name: Arc<str>,
    /// What the key holds.
    pub grants: Arc<Grants>,
    /// When the key stops working.
    pub expires_at: Option<OffsetDateTime>,
}

impl Principal {
    /// The granted scopes.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }
}

/// An audit event type name (`key.created`, …). Kept as text so later
/// additions need no migration.
pub mod event_type {
    /// A key was created.
    pub const KEY_CREATED: &str = "key.created";
    /// A key was rotated (recorded on the old and the new key).
    pub const KEY_ROTATED: &str = "key.rotated";
    /// A key was revoked.
    pub const KEY_REVOKED: &str = "key.revoked";
    /// A key expired.
    pub const KEY_EXPIRED: &str = "key.expired";
    /// An expiry notice was sent.
    pub const KEY_EXPIRING: &str = "key.expiring";
    /// A key was reported compromised and revoked.
    pub const KEY_COMPROMISED: &str = "key.compromised";
    /// A presented key was refused.
    pub const AUTH_FAILED: &str = "auth.failed";
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Identifier (UUID v7).
    pub id: Uuid,
    /// The key the event is about, if any.
    pub key_id: Option<KeyId>,
    /// The event type, see [`event_type`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The key that acted, if the action came through a key.
    pub actor_key_id: Option<KeyId>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Event-specific details (never a secret).
    pub details: Value,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this back as `cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's `Debug` shows neither its hash nor its webhook's sealed
    /// secret, and of the webhook's URL its origin alone.
    #[test]
    fn debug_hides_the_hash_and_the_webhook() {
        let record = KeyRecord {
            id: KeyId(Uuid::now_v7()),
            name: "billing".into(),
            scopes: vec!["orders:read".into()],
            metadata: Map::new(),
            hint: "sk_…Wx9a".into(),
            key_hash: KeyHash::from_bytes([0xab; 32]),
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
            rotated_at: None,
            parent_key_id: None,
            last_used_at: None,
            rotation_period: None,
            rotation_webhook_url: Some(
                "https://user:pw@hooks.example.com:8443/rotate?token=t0ken#x".into(),
            ),
            rotation_webhook_secret: Some("sealed:v1:c2VhbGVk".into()),
        };
        let shown = format!("{record:?}");
        assert!(
            shown.contains("billing") && shown.contains("sk_…Wx9a"),
            "{shown}"
        );
        assert!(shown.contains("https://hooks.example.com:8443"), "{shown}");
        for hidden in ["abab", "user:pw", "/rotate", "t0ken", "sealed:", "c2VhbGVk"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert_eq!(origin("not a url"), "(not a URL)");
    }
}
