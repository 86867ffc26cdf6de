//! The [`Store`] trait: what persistence must offer, nothing more. The rules
//! (who may rotate what, grace bounds, no escalation) live in
//! [`lifecycle`](crate::lifecycle); a store only stores, atomically.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::{Error, StoreError};
use crate::key::{KeyHash, KeyId};
use crate::model::{AuditEvent, KeyRecord, Status, VerifyRecord};

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Keys written by one transaction of a last-used flush (both stores): a
/// revocation of one of them waits for a chunk, never for a whole large
/// flush.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const TOUCH_CHUNK: usize = 1_000;

/// Which listing a [`Cursor`] belongs to: its text form names it, so that
/// one listing's cursor given to the other is refused, not read as a point
/// in an unrelated order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `GET /api-keys`, [`ScopeKey::list`](crate::ScopeKey::list).
    Keys,
    /// The audit log, all of it or one key's
    /// ([`ScopeKey::events`](crate::ScopeKey::events)): both are ordered by
    /// `(at, id)`, so one's cursor resumes the other at the same point.
    Events,
}

impl Listing {
    /// The tag that starts a cursor's text.
    fn tag(self) -> &'static str {
        match self {
            Listing::Keys => "k",
            Listing::Events => "e",
        }
    }

    fn named(self) -> &'static str {
        match self {
            Listing::Keys => "the key list",
            Listing::Events => "the audit log",
        }
    }
}

/// Where a listing resumes: the last item of the previous page. Listings are
/// ordered newest first by `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` (or `at`) of the last item, in microseconds since the epoch.
    pub at_micros: i64,
    /// Id of the last item.
    pub id: uuid::Uuid,
}

impl Cursor {
    /// The cursor after `id` created at `at`.
    pub fn after(at: OffsetDateTime, id: uuid::Uuid) -> Self {
        Self {
            at_micros: micros(at),
            id,
        }
    }

    /// The opaque text form handed to callers of `listing`.
    pub fn encode(&self, listing: Listing) -> String {
        format!(
            "{}.{:x}.{}",
            listing.tag(),
            self.at_micros,
            self.id.simple()
        )
    }

    /// Reads a cursor [`Cursor::encode`] handed out for `listing`. One
    /// handed out for the other listing is refused, saying so; one from
    /// before cursors named their listing (no tag) is read for either.
    pub fn decode(s: &str, listing: Listing) -> Result<Self, Error> {
        let (cursor, of) = Self::decode_any(s)?;
        match of {
            Some(of) if of != listing => Err(Error::Invalid(format!(
                "`cursor` is a cursor of {}, not of {}: leave it out to start from the \
                 first page",
                of.named(),
                listing.named()
            ))),
            _ => Ok(cursor),
        }
    }

    /// Reads a cursor handed out for either listing, and says which (`None`
    /// for one without a tag).
    pub fn decode_any(s: &str) -> Result<(Self, Option<Listing>), Error> {
        let tagged = match s.split_once('.') {
            Some(("k", rest)) => Some((Listing::Keys, rest)),
            Some(("e", rest)) => Some((Listing::Events, rest)),
            _ => None,
        };
        if let Some((listing, rest)) = tagged
            && let Some(cursor) = Self::decode_untagged(rest)
        {
            return Ok((cursor, Some(listing)));
        }
        // `e` is a hex digit too: an untagged cursor may start with `e.`.
        Self::decode_untagged(s)
            .map(|cursor| (cursor, None))
            .ok_or_else(|| {
                Error::Invalid("`cursor` is not a cursor this service handed out".into())
            })
    }

    /// `<hex time>.<uuid>`, as [`encode`](Self::encode) writes it after
    /// the tag.
    fn decode_untagged(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('.')?;
        // Hex digits only, as `encode` writes them: no sign, so no time
        // before 1970, which PostgreSQL's range might not hold either.
        if at.is_empty() || !at.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let at_micros = i64::from_str_radix(at, 16).ok()?;
        // A time this service could have handed out (stores convert it).
        from_micros(at_micros).ok()?;
        Some(Self {
            at_micros,
            id: uuid::Uuid::try_parse(id).ok()?,
        })
    }
}

/// A key listing request, as a store receives it (already validated).
#[derive(Debug, Clone)]
pub struct KeyQuery {
    /// Only keys with this status at `now`.
    pub status: Option<Status>,
    /// Only keys whose name starts with this text (taken literally: `%` and
    /// `_` are not wildcards).
    pub name_prefix: Option<String>,
    /// Resume after this item.
    pub cursor: Option<Cursor>,
    /// At most this many items.
    pub limit: u32,
    /// The time statuses are judged at.
    pub now: OffsetDateTime,
}

/// An audit log request.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Only events about this key.
    pub key_id: Option<KeyId>,
    /// Resume after this item.
    pub cursor: Option<Cursor>,
    /// At most this many items.
    pub limit: u32,
}

/// A rotation, computed by the lifecycle and applied atomically by a store.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key being replaced.
    pub parent_id: KeyId,
    /// When.
    pub now: OffsetDateTime,
    /// The parent's new `expires_at`: the end of its grace window.
    pub parent_expires_at: OffsetDateTime,
    /// The successor, ready to insert.
    pub child: KeyRecord,
    /// Audit events to write in the same transaction.
    pub events: Vec<AuditEvent>,
    /// Outbox rows to write in the same transaction (an automatic rotation's
    /// sealed delivery of the successor to its holder): committed with the
    /// successor or not at all.
    pub deliveries: Vec<OutboxDelivery>,
}

impl Rotation {
    /// The key acting for the rotation (its events' actor), if a key.
    pub fn actor(&self) -> Option<KeyId> {
        self.events.first().and_then(|e| e.actor_key_id)
    }
}

/// A webhook delivery written by a store inside a key change's transaction.
/// The payload is stored as given (sealed when it carries a secret).
#[derive(Debug, Clone)]
pub struct OutboxDelivery {
    /// The delivery id (the `webhook-id` on every attempt).
    pub id: uuid::Uuid,
    /// The endpoint row it goes to.
    pub endpoint_id: uuid::Uuid,
    /// The audit event it carries.
    pub event_id: uuid::Uuid,
    /// That event's type.
    pub event_type: String,
    /// The key it is about.
    pub key_id: KeyId,
    /// The stored body.
    pub payload: String,
    /// Enqueue time (and first attempt time).
    pub at: OffsetDateTime,
}

/// What a [`Store::rotate`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    /// The parent was live and had no successor: both rows written. Carries
    /// the parent as written: `rotated_at` set, `expires_at` the end of its
    /// grace.
    Rotated(KeyRecord),
    /// No such parent.
    NotFound,
    /// The parent was revoked, expired or already rotated (possibly by a
    /// concurrent call): nothing written. Carries the parent as it is now.
    Conflict(KeyRecord),
}

/// What a [`Store::revoke`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RevokeOutcome {
    /// Revoked now (the event was written). The record as revoked.
    Revoked(KeyRecord),
    /// It already was: nothing written.
    AlreadyRevoked(KeyRecord),
    /// No such key.
    NotFound,
}

/// The columns [`Store::find_for_verification`] reads, as a literal for
/// `concat!` (the stores' verification statements are static strings).
macro_rules! verify_columns {
    () => {
        "id, name, scopes, revoked_at, expires_at"
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use verify_columns;

/// The columns [`Store::find_for_verification`] reads: what a verdict needs.
pub const VERIFY_COLUMNS: &str = verify_columns!();

/// Persistence for keys and their audit log. Implementations: SQLite
/// ([`sqlite::SqliteStore`]) and PostgreSQL ([`postgres::PgStore`]).
///
/// Every method that changes a key writes its audit events in the same
/// transaction. A row that cannot be decoded is reported with
/// [`StoreError::corrupt`] (or [`StoreError::into_corrupt`]): the notifier
/// passes that one key over, while any other error ends its step as the
/// store failing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the schema (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Inserts a new key and its `key.created` event. The SQLite and
    /// PostgreSQL stores refuse ([`StoreError::actor_revoked`]) when the
    /// event's actor key is revoked, or expired at the event's time
    /// ([`AuditEvent::at`]), checked inside the same transaction.
    async fn insert_key(&self, key: &KeyRecord, event: &AuditEvent) -> Result<(), StoreError>;

    /// One indexed lookup by hash.
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;

    /// The lookup behind a verification that missed the cache (the columns
    /// [`VERIFY_COLUMNS`]): what
    /// verifying needs, by hash. The default narrows
    /// [`find_by_hash`](Self::find_by_hash); the SQLite and PostgreSQL
    /// stores read only these columns (no metadata to parse: 1–3 µs less a
    /// miss on SQLite).
    async fn find_for_verification(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<VerifyRecord>, StoreError> {
        Ok(self.find_by_hash(hash).await?.map(VerifyRecord::from))
    }

    /// A key by id.
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// The key whose `parent_key_id` is `id` (its successor), if any.
    async fn successor(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// A page of keys, newest first.
    async fn list(&self, query: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError>;

    /// Whether the store holds no key at all.
    async fn is_empty(&self) -> Result<bool, StoreError>;

    /// Inserts a new key and its `key.created` event only if the store
    /// holds no key at all, the check and the insert atomic together (so
    /// several instances bootstrapping one fresh store insert one key);
    /// `false` if it held one. The default checks, then inserts, in two
    /// steps: stores that can do better override it (the SQLite and
    /// PostgreSQL stores do).
    async fn insert_first_key(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        if !self.is_empty().await? {
            return Ok(false);
        }
        self.insert_key(key, event).await?;
        Ok(true)
    }

    /// Marks the parent rotated, shortens its expiry to the grace end and
    /// inserts the child, only if the parent is unrevoked, unexpired at
    /// `now` and not yet rotated: a conditional update in one transaction,
    /// so concurrent rotations of one key produce exactly one successor.
    /// Like [`insert_key`](Self::insert_key), the SQLite and PostgreSQL
    /// stores refuse when the acting key ([`Rotation::actor`], if not the
    /// parent itself) is revoked, or expired at `now`.
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;

    /// Revokes a key unless already revoked, writing `event` only then.
    async fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Appends an event not tied to a key change (e.g. `auth.failed`).
    async fn insert_event(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// A page of audit events, newest first.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Deletes up to `limit` events of type `kind` dated before `before`,
    /// oldest first, and says how many (fewer than `limit`: none is left,
    /// or what is left is being deleted by another pruner at the same time).
    /// Used to prune `auth.failed` events. The default deletes nothing (a
    /// store that keeps its whole log); the SQLite and PostgreSQL stores
    /// delete.
    async fn delete_events_before(
        &self,
        kind: &str,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let _ = (kind, before, limit);
        Ok(0)
    }

    /// The keys `actor` minted with its own authority, oldest first: those
    /// it created (`key.created` events whose actor it is) and the
    /// successors of the rotations it made (the successor's `key.rotated`
    /// event). For a compromise report. The default reads the whole audit
    /// log; the SQLite and PostgreSQL stores use an index on the actor.
    async fn minted_by(&self, actor: KeyId) -> Result<Vec<KeyId>, StoreError> {
        let mut query = EventQuery {
            key_id: None,
            cursor: None,
            limit: 1000,
        };
        let mut out = Vec::new();
        loop {
            let page = self.list_events(&query).await?;
            out.extend(
                page.iter()
                    .filter(|e| e.actor_key_id == Some(actor))
                    .filter_map(minted_key),
            );
            match page.last() {
                Some(last) if page.len() == query.limit as usize => {
                    query.cursor = Some(Cursor::after(last.at, last.id));
                }
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Records last use for a batch of keys (a later time never goes back).
    async fn touch_last_used(&self, batch: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError>;

    /// A feed of revocations and rotations committed by any process sharing
    /// the store, where the backend has one (PostgreSQL: LISTEN/NOTIFY).
    /// `None`: the verification cache's lifetime alone bounds staleness.
    async fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(None)
    }
}

/// The key an event shows minted: the key of a `key.created` event, the
/// successor of a `key.rotated` one (that event is written on both keys of
/// the rotation; the successor's names itself as `successor_key_id`).
pub(crate) fn minted_key(e: &AuditEvent) -> Option<KeyId> {
    let key = e.key_id?;
    match e.kind.as_str() {
        crate::model::event_type::KEY_CREATED => Some(key),
        crate::model::event_type::KEY_ROTATED
            if e.details["successor_key_id"] == serde_json::json!(key) =>
        {
            Some(key)
        }
        _ => None,
    }
}

/// One item of a [`ChangeFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key with this hash was revoked or rotated: drop its cache entry.
    Key(KeyHash),
    /// Changes may have been missed (the feed's connection was lost): drop
    /// every cache entry.
    Resync,
}

/// Changes to keys, as another process commits them. A hint to drop cache
/// entries, never the truth: the store is.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits for the next change.
    async fn next(&mut self) -> Result<Change, StoreError>;
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    // i64 microseconds cover ±292,000 years: the cast cannot truncate for any
    // OffsetDateTime the time crate can represent by default (±9999 years).
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// The inverse of [`micros`].
pub(crate) fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| StoreError::new("stored time out of range", e).into_corrupt())
}

/// Fails unless each embedded migration is the one pinned (version and
/// the first 16 hex digits of its BLAKE3 hash): a shipped migration must
/// never change, since sqlx refuses a database where an applied
/// migration's checksum differs. Add a migration instead.
#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
pub(crate) fn assert_migrations_pinned(
    files: &[(i64, &'static str, &'static str)],
    pinned: &[(i64, &str)],
) {
    let actual: Vec<(i64, String)> = files
        .iter()
        .map(|&(version, _, sql)| {
            (
                version,
                blake3::hash(sql.as_bytes()).to_hex()[..16].to_owned(),
            )
        })
        .collect();
    let expected: Vec<(i64, String)> = pinned.iter().map(|&(v, h)| (v, h.to_owned())).collect();
    assert_eq!(
        actual[..expected.len().min(actual.len())],
        expected[..],
        "a shipped migration changed: databases that applied it would refuse to start; \
         add a new migration instead"
    );
    assert_eq!(
        actual.len(),
        expected.len(),
        "a migration was added: pin it here once it ships ({actual:?})"
    );
}

/// Whether a store whose `_scopekey_migrations` rows are `applied`
/// (version, checksum, success) is up to date with `files`: exactly those
/// versions, each applied successfully with its checksum. Then migrating
/// has nothing to do, and the stores skip sqlx's migrator, which takes a
/// lock (on PostgreSQL one all sqlx migrators of the database share: a
/// command would wait behind an application's long migration) and creates
/// its table if missing (a statement a role without `CREATE` rights is
/// refused). Anything else (a version missing, failed, changed, or one
/// this version does not know) goes to the migrator, which applies or
/// refuses it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn up_to_date(
    files: &[(i64, &'static str, &'static str)],
    applied: &[(i64, Vec<u8>, bool)],
) -> bool {
    let migrator = migrator(files);
    applied.len() == files.len()
        && migrator.iter().all(|m| {
            applied.iter().any(|(version, checksum, ok)| {
                *version == m.version && *ok && **checksum == *m.checksum
            })
        })
}

/// The query reading what [`up_to_date`] compares.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const APPLIED_MIGRATIONS: &str =
    "SELECT version, checksum, success FROM _scopekey_migrations";

/// Builds the migrator for one backend's embedded SQL files. Migrations are
/// tracked in `_scopekey_migrations`, apart from the application's own.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let mut migrator = Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.dangerous_set_table_name("_scopekey_migrations");
    migrator
}

/// Opens the store a URL names: `sqlite:` (e.g. `sqlite://keys.db`,
/// `sqlite::memory:`; the file is created if missing, on Unix readable by
/// its owner only, `0600`, while an existing file keeps its mode) or
/// `postgres://`.
/// Does not migrate.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(postgres::PgStore::connect(url).await?));
    }
    #[cfg(feature = "sqlite")]
    if url.starts_with("sqlite:") {
        return Ok(std::sync::Arc::new(
            sqlite::SqliteStore::connect(url).await?,
        ));
    }
    Err(StoreError::msg(format!(
        "unsupported database URL scheme in `{}`: expected sqlite: or postgres://",
        url.split(':').next().unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_name_their_listing() {
        let id = uuid::Uuid::now_v7();
        let at = OffsetDateTime::now_utc();
        let cursor = Cursor::after(at, id);
        for listing in [Listing::Keys, Listing::Events] {
            let text = cursor.encode(listing);
            assert_eq!(Cursor::decode(&text, listing).unwrap(), cursor);
            assert_eq!(Cursor::decode_any(&text).unwrap(), (cursor, Some(listing)));
        }
        for (of, given_to, says) in [
            (
                Listing::Keys,
                Listing::Events,
                "a cursor of the key list, not of the audit log",
            ),
            (
                Listing::Events,
                Listing::Keys,
                "a cursor of the audit log, not of the key list",
            ),
        ] {
            let refused = Cursor::decode(&cursor.encode(of), given_to)
                .unwrap_err()
                .to_string();
            assert!(refused.contains(says), "{refused}");
        }
        // Untagged, as handed out before: read by either, also one whose
        // time is written `e` (a hex digit, like the tag).
        let untagged = format!("{:x}.{}", cursor.at_micros, id.simple());
        for listing in [Listing::Keys, Listing::Events] {
            assert_eq!(Cursor::decode(&untagged, listing).unwrap(), cursor);
        }
        let early = format!("e.{}", id.simple());
        assert_eq!(
            Cursor::decode_any(&early).unwrap(),
            (Cursor { at_micros: 14, id }, None)
        );
        for bad in [
            "",
            "k.",
            "e.x",
            "k.1",
            "x.1.2",
            "k.k.1",
            &format!("k.-1.{}", id.simple()),
        ] {
            assert!(Cursor::decode_any(bad).is_err(), "{bad}");
        }
    }
}
