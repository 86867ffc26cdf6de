//! The PostgreSQL store.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Change, ChangeFeed, EventQuery, KeyQuery, RevokeOutcome, RotateOutcome, Rotation, Store,
};
use crate::error::StoreError;
use crate::key::{KeyHash, KeyId};
use crate::model::{AuditEvent, KeyRecord, Status, VerifyRecord};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "keys and events",
        include_str!("../../migrations/postgres/0001_keys.sql"),
    ),
    (
        2,
        "expiry notices and webhook outbox",
        include_str!("../../migrations/postgres/0002_notify.sql"),
    ),
    (
        3,
        "status indexes",
        include_str!("../../migrations/postgres/0003_status_indexes.sql"),
    ),
    (
        4,
        "rotation policy",
        include_str!("../../migrations/postgres/0004_rotation_policy.sql"),
    ),
    (
        5,
        "events by actor",
        include_str!("../../migrations/postgres/0005_events_actor.sql"),
    ),
    (
        6,
        "delivery retention",
        include_str!("../../migrations/postgres/0006_delivery_retention.sql"),
    ),
];

const KEY_COLUMNS: &str = "id, name, scopes, metadata, hint, key_hash, created_at, expires_at, \
     revoked_at, revoked_reason, rotated_at, parent_key_id, last_used_at, \
     rotation_period_seconds, rotation_webhook_url, rotation_webhook_secret";

/// How long the pool [`PgStore::connect`] builds waits for a connection.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keys on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://` URL, with a pool of up to 16 connections
    /// that waits at most [`ACQUIRE_TIMEOUT`] (5 s) for one.
    ///
    /// sqlx's own default is 30 s, and a pool goes on retrying a refused
    /// connection for all of it: with the server down, each management
    /// request (and this call) would hang that long before its 503. A pool
    /// of your own, with its own timeouts, goes through
    /// [`from_pool`](Self::from_pool). Verification is bounded apart from
    /// this, by the [store timeout](crate::ScopeKeyBuilder::store_timeout).
    /// Every write of the store (and of the outbox) that reads what it
    /// changes (conditional updates, locking reads, claims, pruning) runs in
    /// a transaction that asks for READ COMMITTED itself, whatever the
    /// database's `default_transaction_isolation` (a lone insert, such as an
    /// `auth.failed` event, needs none), so no isolation is sent at
    /// connection start, nor sqlx's `extra_float_digits` (scopekey reads no
    /// floats): a transaction pooler such as PgBouncer refuses startup
    /// parameters it does not know.
    ///
    /// Behind a transaction pooler, two more things need a direct (or
    /// session-pooled) connection: `migrate` (sqlx's migration lock is held
    /// by a session) and the change listener of
    /// [`spawn_change_listener`](crate::ScopeKey::spawn_change_listener)
    /// (LISTEN is a session's; through a transaction pooler it hears
    /// nothing, and revocations elsewhere then take the cache's lifetime to
    /// be seen). Migrate with a store on a direct URL, and give the
    /// runtime that serves a session-pooled or direct pool if revocations
    /// must be pushed; prepared statements need PgBouncer 1.21 or later
    /// with `max_prepared_statements` set.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = url.parse::<PgConnectOptions>()?.extra_float_digits(None);
        Ok(Self {
            pool: PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?,
        })
    }

    /// Wraps an existing pool (the application's own), whatever its
    /// connections' default isolation (see [`connect`](Self::connect)).
    /// The change feed's listener connects on its own with the pool's
    /// connect options (a pool of one connection with a 5 s acquire
    /// timeout, so that a listener connection that went silent never holds
    /// one of yours; your pool's `after_connect` hooks, limits and timeouts
    /// do not apply to it, and closing your pool does not stop it).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl PgStore {
    /// Inserts a key and its event (and their outbox rows) in one
    /// transaction; with `only_first`, only if no key exists yet, checked
    /// under a table lock that conflicts with itself (concurrent first
    /// inserts take turns; reads go on).
    async fn insert_key_if(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        only_first: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = begin(&self.pool).await?;
        if only_first {
            sqlx::query("LOCK TABLE scopekey_keys IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            if any_key(&mut *tx).await? {
                return Ok(false);
            }
        }
        actor_live(&mut tx, event.actor_key_id, event.at).await?;
        insert_key(&mut tx, key).await?;
        insert_event(&mut tx, event).await?;
        // Lifecycle webhooks go out through the outbox, in the same transaction.
        #[cfg(feature = "webhooks")]
        crate::notify::postgres::enqueue_key_events(&mut tx, std::slice::from_ref(event), &[key])
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A transaction at READ COMMITTED, whatever the server's or database's
/// default (`default_transaction_isolation`): the conditional updates,
/// locking reads and `SKIP LOCKED` claims of both stores rely on a blocked
/// statement re-reading the row another transaction committed, where a
/// stricter level fails with a serialization error instead (a second
/// revocation would be a 503, not an idempotent 200).
pub(crate) async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    Ok(pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?)
}

/// Refuses the change if the key acting for it is revoked, or expired at
/// `at` (the change's time: a key whose request was verified before it
/// expired, its body still arriving, mints nothing after), read with a
/// share lock inside the change's transaction: a concurrent revocation of
/// that key either commits first (and this sees it) or waits for this
/// transaction, so a compromise report that revokes the key and then lists
/// what it minted sees this change. A rotation of the actor itself needs no
/// check: its conditional update refuses a revoked or expired key.
async fn actor_live(
    conn: &mut PgConnection,
    actor: Option<KeyId>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(actor) = actor else {
        return Ok(());
    };
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
         FROM scopekey_keys WHERE id = $1 FOR SHARE",
    )
    .bind(actor.0)
    .bind(at)
    .fetch_optional(conn)
    .await?;
    // An acting key the store does not hold acts for nobody.
    match live {
        Some(true) => Ok(()),
        _ => Err(StoreError::actor_revoked()),
    }
}

/// Whether the store holds any key.
async fn any_key<'e>(db: impl sqlx::PgExecutor<'e>) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM scopekey_keys) AS any_key")
        .fetch_one(db)
        .await?;
    Ok(row.try_get::<bool, _>("any_key")?)
}

fn verify_record(row: &PgRow) -> Result<VerifyRecord, StoreError> {
    let Json(scopes): Json<Vec<String>> = row.try_get("scopes")?;
    Ok(VerifyRecord {
        id: KeyId(row.try_get("id")?),
        name: row.try_get("name")?,
        scopes,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn record(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let Json(scopes): Json<Vec<String>> = row.try_get("scopes")?;
    let Json(metadata): Json<Map<String, Value>> = row.try_get("metadata")?;
    let hash: Vec<u8> = row.try_get("key_hash")?;
    Ok(KeyRecord {
        id: KeyId(row.try_get("id")?),
        name: row.try_get("name")?,
        scopes,
        metadata,
        hint: row.try_get("hint")?,
        key_hash: KeyHash::from_bytes(
            hash.try_into()
                .map_err(|_| StoreError::corrupt("stored key hash is not 32 bytes"))?,
        ),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
        rotated_at: row.try_get("rotated_at")?,
        parent_key_id: row.try_get::<Option<Uuid>, _>("parent_key_id")?.map(KeyId),
        last_used_at: row.try_get("last_used_at")?,
        rotation_period: row
            .try_get::<Option<i64>, _>("rotation_period_seconds")?
            .map(time::Duration::seconds),
        rotation_webhook_url: row.try_get("rotation_webhook_url")?,
        rotation_webhook_secret: row.try_get("rotation_webhook_secret")?,
    })
}

fn event(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let Json(details): Json<Value> = row.try_get("details")?;
    Ok(AuditEvent {
        id: row.try_get("id")?,
        key_id: row.try_get::<Option<Uuid>, _>("key_id")?.map(KeyId),
        kind: row.try_get("type")?,
        actor_key_id: row.try_get::<Option<Uuid>, _>("actor_key_id")?.map(KeyId),
        at: row.try_get("at")?,
        details,
    })
}

async fn insert_key(conn: &mut PgConnection, key: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at, \
         expires_at, revoked_at, revoked_reason, rotated_at, parent_key_id, last_used_at, \
         rotation_period_seconds, rotation_webhook_url, rotation_webhook_secret) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(key.id.0)
    .bind(&key.name)
    .bind(Json(&key.scopes))
    .bind(Json(&key.metadata))
    .bind(&key.hint)
    .bind(&key.key_hash.as_bytes()[..])
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.revoked_at)
    .bind(&key.revoked_reason)
    .bind(key.rotated_at)
    .bind(key.parent_key_id.map(|p| p.0))
    .bind(key.last_used_at)
    .bind(key.rotation_period.map(|p| p.whole_seconds()))
    .bind(&key.rotation_webhook_url)
    .bind(&key.rotation_webhook_secret)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_event(conn: &mut PgConnection, e: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scopekey_events (id, key_id, type, actor_key_id, at, details) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.id)
    .bind(e.key_id.map(|k| k.0))
    .bind(&e.kind)
    .bind(e.actor_key_id.map(|k| k.0))
    .bind(e.at)
    .bind(Json(&e.details))
    .execute(conn)
    .await?;
    Ok(())
}

/// The channel revocations and rotations are announced on.
pub const CHANNEL: &str = "scopekey_keys";

/// Announces a changed key to every listener, at commit (a rolled-back
/// transaction notifies nobody). The payload is the 64-character hex hash:
/// far under PostgreSQL's 8000-byte limit.
async fn notify(conn: &mut PgConnection, hash: &KeyHash) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(to_hex(hash.as_bytes()))
        .execute(conn)
        .await?;
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

fn from_hex(text: &str) -> Option<KeyHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(KeyHash::from_bytes(out))
}

/// How long the change feed's connection may stay quiet before the feed
/// asks it for an answer.
pub const FEED_QUIET_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long that answer may take before the connection counts as lost.
pub const FEED_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The statement the change feed sends on a quiet connection, to see that
/// someone is there (and so that the listener's session can be told apart
/// in `pg_stat_activity`).
pub const FEED_CHECK_QUERY: &str = "SELECT 'scopekey change feed check'";

/// Revocations and rotations from every process, through LISTEN/NOTIFY.
///
/// Whatever is sent while the listener's connection is down is lost, so
/// each time it listens again it asks for the whole cache to be dropped
/// ([`Change::Resync`]) — only then, so that no key read in between can be
/// revoked unheard. A lost connection is replaced by a fresh listener,
/// which listens before the feed asks for the flush.
///
/// A connection can also die without a word (a firewall or NAT that forgets
/// it, a failover whose old server just disappears: no FIN, no RST), and a
/// listener on it would wait for ever. So after [`FEED_QUIET_CHECK`] of
/// quiet the feed sends [`FEED_CHECK_QUERY`] on it: no answer within
/// [`FEED_ANSWER_WITHIN`] is a lost connection (an error, then a fresh
/// listener and a flush). A quiet feed thus costs one trivial query a
/// second.
///
/// The listener has a pool of its own (one connection, the store pool's
/// connect options, a 5 s acquire timeout): a connection that went silent
/// may take its holder a long time to let go (sqlx unlistens before giving
/// it back, and nothing answers), and must not hold one of the store's
/// connections meanwhile. So the feed adds one connection to the store
/// pool's count, plus, while a path stays silent, one for each attempt to
/// listen again until the kernel gives up on it (some 15 minutes on Linux;
/// the runtime spaces its attempts out to 30 s); and closing the store's
/// pool does not stop it: abort the listener's task (as
/// `Background::shutdown` does).
struct PgChangeFeed {
    /// The store's pool: where the listener's connect options come from.
    pool: PgPool,
    listener: PgListener,
    /// The last receive failed: listen anew before anything else.
    lost: bool,
}

impl PgChangeFeed {
    /// A feed listening on a connection of its own, made with `pool`'s
    /// connect options.
    async fn listen(pool: &PgPool) -> Result<Self, StoreError> {
        // Bounded as a whole: a path that goes silent after the login but
        // before `LISTEN` is answered must end in an error (and another
        // attempt), not a wait for the kernel to give up on the socket.
        let bound = ACQUIRE_TIMEOUT + FEED_ANSWER_WITHIN;
        tokio::time::timeout(bound, Self::listen_unbounded(pool))
            .await
            .map_err(|_| {
                StoreError::msg(format!(
                    "the key change feed could not listen within {bound:?}"
                ))
            })?
    }

    async fn listen_unbounded(pool: &PgPool) -> Result<Self, StoreError> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        // A lost connection ends the receive at once (`None`), without
        // reconnecting inside it: the feed makes a fresh listener, outside
        // the quiet check's timeout, so that no reconnection is ever cut
        // short half-way.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok(Self {
            pool: pool.clone(),
            listener,
            lost: false,
        })
    }

    /// Sees that the listener's connection answers, or marks it lost.
    async fn check(&mut self) -> Result<(), StoreError> {
        let asked = sqlx::query(FEED_CHECK_QUERY).execute(&mut self.listener);
        match tokio::time::timeout(FEED_ANSWER_WITHIN, asked).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.lost = true;
                Err(e.into())
            }
            Err(_) => {
                self.lost = true;
                Err(StoreError::msg(format!(
                    "the key change feed's connection did not answer within {FEED_ANSWER_WITHIN:?}"
                )))
            }
        }
    }
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn next(&mut self) -> Result<Change, StoreError> {
        if self.lost {
            // A fresh listener: the failed one's state is unknown.
            *self = Self::listen(&self.pool).await?;
            return Ok(Change::Resync);
        }
        loop {
            // Waiting for a message is safe to interrupt (sqlx consumes a
            // message only once it is whole).
            let received =
                match tokio::time::timeout(FEED_QUIET_CHECK, self.listener.try_recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.check().await?;
                        continue;
                    }
                };
            match received {
                // The connection was lost: listen again on a fresh one,
                // then ask for the flush.
                Ok(None) => {
                    self.lost = true;
                    *self = Self::listen(&self.pool).await?;
                    return Ok(Change::Resync);
                }
                Ok(Some(n)) => {
                    if let Some(hash) = from_hex(n.payload()) {
                        return Ok(Change::Key(hash));
                    }
                    tracing::warn!(channel = CHANNEL, "ignoring a malformed key notification");
                }
                // Another error: the connection's state is unknown.
                Err(e) => {
                    self.lost = true;
                    return Err(e.into());
                }
            }
        }
    }
}

async fn get_on(conn: &mut PgConnection, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // Up to date: nothing to lock or create (see `super::up_to_date`).
        let applied = sqlx::query_as::<_, (i64, Vec<u8>, bool)>(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await;
        if applied.is_ok_and(|applied| super::up_to_date(MIGRATIONS, &applied)) {
            return Ok(());
        }
        // On a connection of its own, in a pool of one closed after,
        // however it went: sqlx's migrator takes a session advisory lock
        // (the same for every sqlx migrator of this database, the
        // application's too) and does not release it when a migration
        // fails; closing ends the session, and the lock with it.
        let options = PgConnectOptions::clone(&self.pool.connect_options());
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let result = super::migrator(MIGRATIONS).run(&own).await;
        own.close().await;
        result?;
        Ok(())
    }

    async fn insert_key(&self, key: &KeyRecord, event: &AuditEvent) -> Result<(), StoreError> {
        self.insert_key_if(key, event, false).await.map(|_| ())
    }

    async fn insert_first_key(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.insert_key_if(key, event, true).await
    }

    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE key_hash = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn find_for_verification(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<VerifyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            super::verify_columns!(),
            " FROM scopekey_keys WHERE key_hash = $1"
        );
        let row = sqlx::query(SQL)
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(verify_record).transpose()
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_on(&mut conn, id).await
    }

    async fn successor(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE parent_key_id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list(&self, q: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError> {
        // Every fragment below is a fixed string; values are bound. Unused
        // parameters are still typed by the casts.
        let mut sql = format!(
            "SELECT {KEY_COLUMNS} FROM scopekey_keys \
             WHERE ($1::text IS NULL OR starts_with(name, $1::text)) \
             AND ($2::timestamptz IS NOT NULL)"
        );
        sql.push_str(match q.status {
            None => "",
            Some(Status::Revoked) => " AND revoked_at IS NOT NULL",
            Some(Status::Expired) => {
                " AND revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $2"
            }
            Some(Status::Rotating) => {
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
                 AND rotated_at IS NOT NULL"
            }
            Some(Status::Active) => {
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
                 AND rotated_at IS NULL"
            }
        });
        if q.cursor.is_some() {
            sql.push_str(" AND (created_at, id) < ($3::timestamptz, $4::uuid)");
        } else {
            sql.push_str(" AND ($3::timestamptz IS NULL AND $4::uuid IS NULL)");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT $5");
        let cursor_at = q
            .cursor
            .map(|c| super::from_micros(c.at_micros))
            .transpose()?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(q.name_prefix.as_deref())
            .bind(q.now)
            .bind(cursor_at)
            .bind(q.cursor.map(|c| c.id))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(!any_key(&self.pool).await?)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        // The conditional update takes the row lock; a concurrent rotation
        // waits, re-checks `rotated_at IS NULL` after the winner commits, and
        // updates nothing.
        let mut tx = begin(&self.pool).await?;
        // Rotating another key: lock both rows in id order (as the last-use
        // flush does) before anything else, so that a flush, or two keys
        // rotating each other, cannot deadlock with this; then refuse if the
        // acting key is revoked or expired at `now` (a concurrent revocation
        // of it commits first or waits for this).
        if let Some(actor) = r.actor().filter(|a| *a != r.parent_id) {
            let rows = sqlx::query(
                "SELECT id, revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
                 AS live FROM scopekey_keys WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )
            .bind([actor.0, r.parent_id.0])
            .bind(r.now)
            .fetch_all(&mut *tx)
            .await?;
            // An acting key the store does not hold acts for nobody.
            let mut live = false;
            for row in &rows {
                if row.try_get::<uuid::Uuid, _>("id")? == actor.0 {
                    live = row.try_get::<bool, _>("live")?;
                }
            }
            if !live {
                return Err(StoreError::actor_revoked());
            }
        }
        let sql = format!(
            "UPDATE scopekey_keys SET rotated_at = $1, expires_at = $2 \
             WHERE id = $3 AND revoked_at IS NULL AND rotated_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1) RETURNING {KEY_COLUMNS}"
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(r.now)
            .bind(r.parent_expires_at)
            .bind(r.parent_id.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(parent) = updated else {
            let current = get_on(&mut tx, r.parent_id).await?;
            tx.rollback().await?;
            return Ok(current.map_or(RotateOutcome::NotFound, RotateOutcome::Conflict));
        };
        let parent = record(&parent)?;
        notify(&mut tx, &parent.key_hash).await?;
        insert_key(&mut tx, &r.child).await?;
        for e in &r.events {
            insert_event(&mut tx, e).await?;
        }
        for d in &r.deliveries {
            sqlx::query(
                "INSERT INTO scopekey_deliveries (id, endpoint_id, event_id, event_type, key_id, \
                 payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(d.id)
            .bind(d.endpoint_id)
            .bind(d.event_id)
            .bind(&d.event_type)
            .bind(d.key_id.0)
            .bind(&d.payload)
            .bind(d.at)
            .execute(&mut *tx)
            .await?;
        }
        #[cfg(feature = "webhooks")]
        crate::notify::postgres::enqueue_key_events(&mut tx, &r.events, &[&parent, &r.child])
            .await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated(parent))
    }

    async fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = begin(&self.pool).await?;
        let sql = format!(
            "UPDATE scopekey_keys SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(reason)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = updated else {
            let current = get_on(&mut tx, id).await?;
            tx.rollback().await?;
            return Ok(current.map_or(RevokeOutcome::NotFound, RevokeOutcome::AlreadyRevoked));
        };
        let revoked = record(&row)?;
        notify(&mut tx, &revoked.key_hash).await?;
        insert_event(&mut tx, event).await?;
        #[cfg(feature = "webhooks")]
        crate::notify::postgres::enqueue_key_events(
            &mut tx,
            std::slice::from_ref(event),
            &[&revoked],
        )
        .await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked(revoked))
    }

    async fn insert_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_event(&mut conn, event).await
    }

    async fn delete_events_before(
        &self,
        kind: &str,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // At read committed whatever the database's default (a repeatable
        // read pruner would fail on rows another pruner deleted first), and
        // skipping rows another pruner holds: two pruners at once (a cron
        // job on two hosts) share the work instead of waiting on, or
        // failing over, the same batch.
        let mut tx = begin(&self.pool).await?;
        let deleted = sqlx::query(
            "DELETE FROM scopekey_events WHERE id IN \
             (SELECT id FROM scopekey_events WHERE type = $1 AND at < $2 \
              ORDER BY at, id LIMIT $3 FOR UPDATE SKIP LOCKED)",
        )
        .bind(kind)
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // One statement text per shape: `$1 IS NULL OR key_id = $1` in a
        // shared statement would let PostgreSQL's generic plan (from the
        // sixth execution on) read the whole log by time for one key's
        // events instead of using `scopekey_events_key`. Unused parameters
        // are still bound, and typed, so every shape binds the same four.
        let mut sql = String::from(
            "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events WHERE ",
        );
        if q.key_id.is_some() {
            sql.push_str("key_id = $1::uuid");
        } else {
            sql.push_str("$1::uuid IS NULL");
        }
        if q.cursor.is_some() {
            sql.push_str(" AND (at, id) < ($2::timestamptz, $3::uuid)");
        } else {
            sql.push_str(" AND ($2::timestamptz IS NULL AND $3::uuid IS NULL)");
        }
        sql.push_str(" ORDER BY at DESC, id DESC LIMIT $4");
        let cursor_at = q
            .cursor
            .map(|c| super::from_micros(c.at_micros))
            .transpose()?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(q.key_id.map(|k| k.0))
            .bind(cursor_at)
            .bind(q.cursor.map(|c| c.id))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event).collect()
    }

    /// The minted keys' ids alone, chosen in the query (as
    /// the default chooses them from events): an automation key
    /// that created a million keys is read as a million ids, not as its
    /// events with their details.
    async fn minted_by(&self, actor: KeyId) -> Result<Vec<KeyId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT key_id FROM scopekey_events \
             WHERE actor_key_id = $1 AND key_id IS NOT NULL AND (type = $2 OR \
             (type = $3 AND details->>'successor_key_id' = key_id::text)) \
             ORDER BY at, id",
        )
        .bind(actor.0)
        .bind(crate::model::event_type::KEY_CREATED)
        .bind(crate::model::event_type::KEY_ROTATED)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(KeyId).collect())
    }

    /// One transaction per 1,000 keys, taken in id order: the rows a
    /// transaction updates stay locked until it commits, so a revocation of
    /// one of them waits for a chunk, never for a whole large flush. Times
    /// only move forward, so a flush that fails part-way and is retried
    /// whole rewrites nothing wrongly.
    async fn touch_last_used(&self, batch: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut batch = batch.to_vec();
        batch.sort_unstable_by_key(|(id, _)| id.0);
        for chunk in batch.chunks(super::TOUCH_CHUNK) {
            let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| id.0).collect();
            let times: Vec<OffsetDateTime> = chunk.iter().map(|(_, at)| *at).collect();
            // The rows are locked first, in id order: an UPDATE locks them
            // in whatever order its plan reads them, and two servers
            // flushing the same keys in different orders would deadlock
            // (one flush aborted after a second's wait, revocations of those
            // keys waiting too).
            let mut tx = begin(&self.pool).await?;
            sqlx::query(
                "SELECT 1 FROM scopekey_keys WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE scopekey_keys AS k SET last_used_at = v.at \
                 FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at) \
                 WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
            )
            .bind(&ids)
            .bind(&times)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(Some(Box::new(PgChangeFeed::listen(&self.pool).await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = KeyHash::from_bytes(std::array::from_fn(|i| (i * 37) as u8));
        assert_eq!(from_hex(&to_hex(hash.as_bytes())), Some(hash));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    /// The migrations as shipped: see [`super::super::assert_migrations_pinned`].
    #[test]
    fn shipped_migrations_never_change() {
        super::super::assert_migrations_pinned(
            MIGRATIONS,
            &[
                (1, "72820df47461dc6c"),
                (2, "7e2e6e718ff8ac07"),
                (3, "af8a9e7355d95459"),
                (4, "8a03ca5330f7ab51"),
                (5, "509b50639f9eeb8a"),
                (6, "88b2f925bdafbc61"),
            ],
        );
    }

    /// With nothing listening on the port, sqlx retries the refused
    /// connection until the pool's acquire timeout (5 s, not sqlx's 30 s),
    /// which bounds the call: it then fails with a pool timeout, not with
    /// the first refusal.
    #[tokio::test]
    async fn a_server_that_is_down_fails_within_the_acquire_timeout() {
        // Bound but never listening: connections to it are refused, and no
        // other test can take the port while this one runs.
        let down = tokio::net::TcpSocket::new_v4().unwrap();
        down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = down.local_addr().unwrap().port();
        let outcome = PgStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/down")).await;
        let err = outcome.expect_err("nothing to connect to");
        let cause = std::error::Error::source(&err).and_then(|e| e.downcast_ref::<sqlx::Error>());
        assert!(matches!(cause, Some(sqlx::Error::PoolTimedOut)), "{err:?}");
        drop(down);
    }
}
