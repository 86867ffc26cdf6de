//! The SQLite store: the embedded default. WAL mode, so a CLI and a server
//! can share one file.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use super::{
    EventQuery, KeyQuery, RevokeOutcome, RotateOutcome, Rotation, Store, from_micros, micros,
};
use crate::error::StoreError;
use crate::key::{KeyHash, KeyId};
use crate::model::{AuditEvent, KeyRecord, Status, VerifyRecord};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "keys and events",
        include_str!("../../migrations/sqlite/0001_keys.sql"),
    ),
    (
        2,
        "expiry notices and webhook outbox",
        include_str!("../../migrations/sqlite/0002_notify.sql"),
    ),
    (
        3,
        "status indexes",
        include_str!("../../migrations/sqlite/0003_status_indexes.sql"),
    ),
    (
        4,
        "rotation policy",
        include_str!("../../migrations/sqlite/0004_rotation_policy.sql"),
    ),
    (
        5,
        "events by actor",
        include_str!("../../migrations/sqlite/0005_events_actor.sql"),
    ),
    (
        6,
        "delivery retention",
        include_str!("../../migrations/sqlite/0006_delivery_retention.sql"),
    ),
];

const KEY_COLUMNS: &str = "id, name, scopes, metadata, hint, key_hash, created_at, expires_at, \
     revoked_at, revoked_reason, rotated_at, parent_key_id, last_used_at, \
     rotation_period_seconds, rotation_webhook_url, rotation_webhook_secret";

/// Keys on SQLite.
///
/// Two pools over one file. Everything but verification runs on the main
/// pool ([`pool`](Self::pool)): up to 8 connections, one writer at a time,
/// readers isolated from it by WAL. Verification lookups on a cache miss
/// run on one connection of their own ([`verification_pool`](Self::verification_pool)),
/// with a memory map of the whole file (up to 2 GiB): successive misses
/// find the pages the previous ones read still warm in that one connection,
/// where the main pool hands its connections out in turn, each with a cold
/// page cache and map of its own; and a miss never waits behind a long
/// listing or a write holding the main pool's connections. While that
/// connection is busy, another miss runs on the main pool instead of
/// queueing for it. Each lookup is its own read transaction: it sees every
/// commit made before it began, through either pool or by another process.
/// An in-memory database and a store made [`from_pool`](Self::from_pool)
/// verify on the one pool.
///
/// Connections to a file never use SQLite's shared-cache mode, even if the
/// URL asks for it (`?cache=shared`): shared-cache connections share one
/// read snapshot and take table locks that ignore the busy timeout.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    verifier: Option<Verifier>,
}

/// The verification connection's pool (of one), and whether a lookup holds
/// it: a lookup that finds it held runs on the main pool, so concurrent
/// misses never queue for it, while successive ones all use it (a lookup
/// that takes it waits at most for the previous one's connection to be
/// handed back, which sqlx does asynchronously).
#[derive(Debug, Clone)]
struct Verifier {
    pool: SqlitePool,
    held: Arc<AtomicBool>,
}

/// Marks the verification connection as taken until dropped (also when the
/// lookup is cancelled), holding the connection while a statement runs on
/// it. Dropped with the connection still in hand — the lookup was
/// cancelled mid-statement (a timeout, a client gone) — it keeps the
/// connection marked taken until that statement has ended, which a task
/// waits for: meanwhile misses run on the main pool instead of queueing
/// behind the statement, and the connection, warm, then serves them again.
struct Taken {
    held: Arc<AtomicBool>,
    conn: Option<PoolConnection<Sqlite>>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let held = Arc::clone(&self.held);
        let release = move || held.store(false, Ordering::Release);
        let Some(mut conn) = self.conn.take() else {
            return release();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Queued behind the cancelled statement on the
                    // connection's worker: done once that has ended.
                    let _ = sqlx::query("SELECT 1").execute(&mut *conn).await;
                    drop(conn);
                    release();
                });
            }
            // No runtime to wait on (shutting down): the pool's own check
            // of a returned connection waits for it instead.
            Err(_) => release(),
        }
    }
}

/// Creates the database file if it is missing, readable by its owner only
/// (Unix); SQLite would create it with the umask's mode, usually `0644`.
/// Whatever fails here is left to SQLite's own open, which reports it as it
/// always has (a missing folder: "unable to open database file").
fn create_private(path: &std::path::Path) {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let _ = open.open(path);
}

/// Whether a SQLite URL names an in-memory database (`sqlite::memory:`,
/// `mode=memory`): one that lives as long as a connection does, and that
/// another pool (a notifier's, another process) would find empty.
pub fn is_in_memory(url: &str) -> bool {
    url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
}

/// The verification connection's memory map: SQLite's largest by default
/// (2 GiB minus 64 KiB; a larger request is cut to it). Mapped pages are
/// the operating system's file cache, not the process's heap.
const VERIFIER_MMAP_SIZE: &str = "2147418112";

impl SqliteStore {
    /// Connects to a SQLite URL (`sqlite://path/to/keys.db`, `sqlite::memory:`),
    /// creating the file if missing (not its folder; on Unix readable and
    /// writable by its owner only, `0600`, whatever the umask: it holds key
    /// hashes, webhook URLs and the audit log, and SQLite gives its `-wal`
    /// and `-shm` files the same mode; an existing file keeps its own; a URL
    /// with query options or a `file:` URI filename is left to SQLite,
    /// which creates the file with the umask's mode), in WAL mode with a 5 s busy timeout and
    /// `synchronous = FULL` (each commit synced to disk: a revocation once
    /// answered survives a power loss; WAL's usual `NORMAL` may lose the last
    /// commits then).
    ///
    /// The main pool opens up to 8 connections; the verification connection
    /// is one more, opened at the first cache miss and kept open.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let in_memory = is_in_memory(url);
        let options = SqliteConnectOptions::from_str(url)?;
        // Only a plain path: a URI filename (`file:...`) or query options
        // (`mode=ro`, `vfs=...`) are SQLite's to read, and may not name a
        // file to create.
        let filename = options.get_filename();
        if !in_memory
            && !url.contains('?')
            && !filename.as_os_str().is_empty()
            && !filename.to_string_lossy().starts_with("file:")
        {
            create_private(filename);
        }
        let mut options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit that returned (a revocation answered 200) survives a
            // power loss too, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Reads through a memory map skip a read(2) per page.
            .pragma("mmap_size", "268435456");
        if !in_memory {
            // An in-memory database is shared between connections through
            // the shared cache; a file is shared through WAL.
            options = options.shared_cache(false);
        }
        // A local file cannot go stale the way a network connection can: no
        // ping before each use (it costs a round trip to the connection's
        // worker thread, a third of a cache miss).
        let mut pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false);
        if in_memory {
            // An in-memory database lives as long as one connection does.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options.clone()).await?;
        let verifier = (!in_memory).then(|| Verifier {
            pool: SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options.pragma("mmap_size", VERIFIER_MMAP_SIZE)),
            held: Arc::new(AtomicBool::new(false)),
        });
        Ok(Self { pool, verifier })
    }

    /// Wraps an existing pool (the application's own). Verification runs on
    /// it too.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            verifier: None,
        }
    }

    /// The main pool. Closing it stops the store: verification refuses to
    /// run once it is closed, whichever pool it would have used (the
    /// verification connection itself stays open until the store is
    /// dropped; [`close`](Self::close) closes both).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The pool of the verification connection, if the store has one (not
    /// for an in-memory database, nor a store made from a pool). For
    /// inspection: a connection taken from it is one verification lookups
    /// wait for.
    pub fn verification_pool(&self) -> Option<&SqlitePool> {
        self.verifier.as_ref().map(|v| &v.pool)
    }

    /// Closes both pools, waiting for the connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(verifier) = &self.verifier {
            verifier.pool.close().await;
        }
    }

    /// Runs a verification lookup: on the verification connection if the
    /// store has one, the main pool is open and no other lookup holds it;
    /// else on the main pool (closed: the lookup fails).
    async fn fetch_for_verification<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>,
    ) -> Result<Option<SqliteRow>, StoreError> {
        let free = self.verifier.as_ref().filter(|v| {
            !self.pool.is_closed()
                && v.held
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        });
        let Some(verifier) = free else {
            return Ok(query.fetch_optional(&self.pool).await?);
        };
        let mut taken = Taken {
            held: Arc::clone(&verifier.held),
            conn: None,
        };
        let conn = taken.conn.insert(verifier.pool.acquire().await?);
        let row = query.fetch_optional(&mut **conn).await;
        // Finished, well or not: the connection goes back to the pool.
        taken.conn = None;
        Ok(row?)
    }
}

impl SqliteStore {
    /// Inserts a key and its event (and their outbox rows) in one
    /// transaction; with `only_first`, only if no key exists yet, checked
    /// under the write lock that `BEGIN IMMEDIATE` takes first.
    async fn insert_key_if(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        only_first: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if only_first && any_key(&mut *tx).await? {
            return Ok(false);
        }
        actor_live(&mut tx, event.actor_key_id, event.at).await?;
        insert_key(&mut tx, key).await?;
        insert_event(&mut tx, event).await?;
        // Lifecycle webhooks go out through the outbox, in the same transaction.
        #[cfg(feature = "webhooks")]
        crate::notify::sqlite::enqueue_key_events(&mut tx, std::slice::from_ref(event), &[key])
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Refuses the change if the key acting for it is revoked, or expired at
/// `at` (the change's time: a key whose request was verified before it
/// expired, its body still arriving, mints nothing after), read inside the
/// change's transaction under the write lock `BEGIN IMMEDIATE` took: a
/// revocation of that key commits either before (and this sees it) or
/// after this change, so a compromise report that revokes the key and then
/// lists what it minted sees this change. A rotation of the actor itself
/// needs no check: its conditional update refuses a revoked or expired key.
async fn actor_live(
    conn: &mut sqlx::SqliteConnection,
    actor: Option<KeyId>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(actor) = actor else {
        return Ok(());
    };
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) \
         FROM scopekey_keys WHERE id = ?",
    )
    .bind(micros(at))
    .bind(actor.to_string())
    .fetch_optional(conn)
    .await?;
    // An acting key the store does not hold acts for nobody.
    match live {
        Some(true) => Ok(()),
        _ => Err(StoreError::actor_revoked()),
    }
}

/// Whether the store holds any key.
async fn any_key<'e>(db: impl sqlx::SqliteExecutor<'e>) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM scopekey_keys) AS any_key")
        .fetch_one(db)
        .await?;
    Ok(row.try_get::<bool, _>("any_key")?)
}

fn opt_micros(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(micros)
}

fn opt_time(v: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    v.map(from_micros).transpose()
}

fn parse_id(s: &str) -> Result<KeyId, StoreError> {
    uuid::Uuid::try_parse(s)
        .map(KeyId)
        .map_err(|e| StoreError::new("stored key id is not a UUID", e).into_corrupt())
}

fn record(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    let metadata: String = row.try_get("metadata")?;
    let hash: Vec<u8> = row.try_get("key_hash")?;
    let parent: Option<String> = row.try_get("parent_key_id")?;
    Ok(KeyRecord {
        id: parse_id(row.try_get::<&str, _>("id")?)?,
        name: row.try_get("name")?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::new("stored scopes are not a JSON array", e).into_corrupt())?,
        metadata: serde_json::from_str::<Map<String, Value>>(&metadata).map_err(|e| {
            StoreError::new("stored metadata is not a JSON object", e).into_corrupt()
        })?,
        hint: row.try_get("hint")?,
        key_hash: KeyHash::from_bytes(
            hash.try_into()
                .map_err(|_| StoreError::corrupt("stored key hash is not 32 bytes"))?,
        ),
        created_at: from_micros(row.try_get("created_at")?)?,
        expires_at: opt_time(row.try_get("expires_at")?)?,
        revoked_at: opt_time(row.try_get("revoked_at")?)?,
        revoked_reason: row.try_get("revoked_reason")?,
        rotated_at: opt_time(row.try_get("rotated_at")?)?,
        parent_key_id: parent.as_deref().map(parse_id).transpose()?,
        last_used_at: opt_time(row.try_get("last_used_at")?)?,
        rotation_period: row
            .try_get::<Option<i64>, _>("rotation_period_seconds")?
            .map(time::Duration::seconds),
        rotation_webhook_url: row.try_get("rotation_webhook_url")?,
        rotation_webhook_secret: row.try_get("rotation_webhook_secret")?,
    })
}

fn verify_record(row: &SqliteRow) -> Result<VerifyRecord, StoreError> {
    let scopes: &str = row.try_get("scopes")?;
    Ok(VerifyRecord {
        id: parse_id(row.try_get::<&str, _>("id")?)?,
        name: row.try_get("name")?,
        scopes: serde_json::from_str(scopes)
            .map_err(|e| StoreError::new("stored scopes are not a JSON array", e).into_corrupt())?,
        revoked_at: opt_time(row.try_get("revoked_at")?)?,
        expires_at: opt_time(row.try_get("expires_at")?)?,
    })
}

fn event(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let details: String = row.try_get("details")?;
    let key_id: Option<String> = row.try_get("key_id")?;
    let actor: Option<String> = row.try_get("actor_key_id")?;
    Ok(AuditEvent {
        id: parse_id(row.try_get::<&str, _>("id")?)?.0,
        key_id: key_id.as_deref().map(parse_id).transpose()?,
        kind: row.try_get("type")?,
        actor_key_id: actor.as_deref().map(parse_id).transpose()?,
        at: from_micros(row.try_get("at")?)?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::new("stored event details are not JSON", e).into_corrupt())?,
    })
}

async fn insert_key(conn: &mut sqlx::SqliteConnection, key: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at, \
         expires_at, revoked_at, revoked_reason, rotated_at, parent_key_id, last_used_at, \
         rotation_period_seconds, rotation_webhook_url, rotation_webhook_secret) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.to_string())
    .bind(&key.name)
    .bind(serde_json::to_string(&key.scopes).unwrap_or_else(|_| "[]".into()))
    .bind(Value::Object(key.metadata.clone()).to_string())
    .bind(&key.hint)
    .bind(&key.key_hash.as_bytes()[..])
    .bind(micros(key.created_at))
    .bind(opt_micros(key.expires_at))
    .bind(opt_micros(key.revoked_at))
    .bind(&key.revoked_reason)
    .bind(opt_micros(key.rotated_at))
    .bind(key.parent_key_id.map(|p| p.to_string()))
    .bind(opt_micros(key.last_used_at))
    .bind(key.rotation_period.map(|p| p.whole_seconds()))
    .bind(&key.rotation_webhook_url)
    .bind(&key.rotation_webhook_secret)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_event(conn: &mut sqlx::SqliteConnection, e: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scopekey_events (id, key_id, type, actor_key_id, at, details) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id.to_string())
    .bind(e.key_id.map(|k| k.to_string()))
    .bind(&e.kind)
    .bind(e.actor_key_id.map(|k| k.to_string()))
    .bind(micros(e.at))
    .bind(e.details.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

async fn get_on(
    conn: &mut sqlx::SqliteConnection,
    id: KeyId,
) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE id = ?");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

/// Whether the database was busy or locked (also a transaction whose
/// snapshot another connection's commit outdated): SQLite's primary result
/// codes 5 and 6, which their extended codes carry in the low byte.
fn busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let primary = db
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .map(|code| code & 0xff);
    matches!(primary, Some(5 | 6))
}

impl SqliteStore {
    /// Whether migration `version` is recorded as applied: after this
    /// process failed it, another one that migrated at the same time did
    /// (its changes and its record commit together). Any other failure (a
    /// full disk, a read-only file, a broken migration) leaves it
    /// unrecorded, and is not retried.
    async fn applied(&self, version: i64) -> bool {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM _scopekey_migrations WHERE version = ?1 AND success",
        )
        .bind(version)
        .fetch_one(&self.pool)
        .await
        .is_ok_and(|n| n > 0)
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Migrates, also while other processes migrate the same file: sqlx
    /// takes no lock for SQLite, so processes starting at once on a fresh
    /// file race for the same migration and all but one fail it. Each
    /// migration is one transaction, so a failed one changed nothing; one
    /// failed because the database was busy, or that another process has
    /// applied meanwhile, is tried again, and the next attempt sees what
    /// the others applied.
    async fn migrate(&self) -> Result<(), StoreError> {
        use sqlx::migrate::MigrateError;
        const ATTEMPTS: u32 = 10;
        // Up to date: nothing to lock or create (see `super::up_to_date`).
        let applied = sqlx::query_as::<_, (i64, Vec<u8>, bool)>(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await;
        if applied.is_ok_and(|applied| super::up_to_date(MIGRATIONS, &applied)) {
            return Ok(());
        }
        let migrator = super::migrator(MIGRATIONS);
        let mut attempt = 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(MigrateError::Execute(e)) if attempt < ATTEMPTS && busy(&e) => {
                    tracing::debug!(attempt, error = %e, "another process is migrating the store; trying again");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(MigrateError::ExecuteMigration(e, version))
                    if attempt < ATTEMPTS && (busy(&e) || self.applied(version).await) =>
                {
                    tracing::debug!(attempt, error = %e, "another process is migrating the store; trying again");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
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
        let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE key_hash = ?");
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
        // Only the verdict's columns: no metadata to parse, no hint, no
        // timestamps but the two judged. (A covering index for this query
        // was measured and made a miss slower on a large store: a bigger
        // index is more pages to find cold; see docs/performance.md.)
        // On the verification connection when it is free: its pages stay
        // warm.
        const SQL: &str = concat!(
            "SELECT ",
            super::verify_columns!(),
            " FROM scopekey_keys WHERE key_hash = ?"
        );
        let query = sqlx::query(SQL).bind(&hash.as_bytes()[..]);
        let row = self.fetch_for_verification(query).await?;
        row.as_ref().map(verify_record).transpose()
    }

    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_on(&mut conn, id).await
    }

    async fn successor(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE parent_key_id = ?");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list(&self, q: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError> {
        // Every fragment below is a fixed string; values are bound.
        let mut sql = format!("SELECT {KEY_COLUMNS} FROM scopekey_keys WHERE 1 = 1");
        if q.name_prefix.is_some() {
            sql.push_str(" AND substr(name, 1, length(?1)) = ?1");
        }
        sql.push_str(match q.status {
            None => "",
            Some(Status::Revoked) => " AND revoked_at IS NOT NULL",
            Some(Status::Expired) => {
                " AND revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?2"
            }
            Some(Status::Rotating) => {
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) \
                 AND rotated_at IS NOT NULL"
            }
            Some(Status::Active) => {
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) \
                 AND rotated_at IS NULL"
            }
        });
        if q.cursor.is_some() {
            sql.push_str(" AND (created_at < ?3 OR (created_at = ?3 AND id < ?4))");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?5");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(q.name_prefix.as_deref())
            .bind(micros(q.now))
            .bind(q.cursor.map(|c| c.at_micros))
            .bind(q.cursor.map(|c| c.id.hyphenated().to_string()))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(!any_key(&self.pool).await?)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        // IMMEDIATE takes the write lock first, so concurrent rotations queue
        // on the busy timeout instead of failing to upgrade a read lock.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        actor_live(&mut tx, r.actor().filter(|a| *a != r.parent_id), r.now).await?;
        let now = micros(r.now);
        let sql = format!(
            "UPDATE scopekey_keys SET rotated_at = ?1, expires_at = ?2 \
             WHERE id = ?3 AND revoked_at IS NULL AND rotated_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?1) RETURNING {KEY_COLUMNS}"
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(micros(r.parent_expires_at))
            .bind(r.parent_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(parent) = updated else {
            let current = get_on(&mut tx, r.parent_id).await?;
            tx.rollback().await?;
            return Ok(current.map_or(RotateOutcome::NotFound, RotateOutcome::Conflict));
        };
        let parent = record(&parent)?;
        insert_key(&mut tx, &r.child).await?;
        for e in &r.events {
            insert_event(&mut tx, e).await?;
        }
        for d in &r.deliveries {
            sqlx::query(
                "INSERT INTO scopekey_deliveries (id, endpoint_id, event_id, event_type, key_id, \
                 payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(d.id.to_string())
            .bind(d.endpoint_id.to_string())
            .bind(d.event_id.to_string())
            .bind(&d.event_type)
            .bind(d.key_id.to_string())
            .bind(&d.payload)
            .bind(micros(d.at))
            .bind(micros(d.at))
            .execute(&mut *tx)
            .await?;
        }
        #[cfg(feature = "webhooks")]
        crate::notify::sqlite::enqueue_key_events(&mut tx, &r.events, &[&parent, &r.child]).await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let sql = format!(
            "UPDATE scopekey_keys SET revoked_at = ?, revoked_reason = ? \
             WHERE id = ? AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(at))
            .bind(reason)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = updated else {
            let current = get_on(&mut tx, id).await?;
            tx.rollback().await?;
            return Ok(current.map_or(RevokeOutcome::NotFound, RevokeOutcome::AlreadyRevoked));
        };
        let revoked = record(&row)?;
        insert_event(&mut tx, event).await?;
        #[cfg(feature = "webhooks")]
        crate::notify::sqlite::enqueue_key_events(
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query(
            "DELETE FROM scopekey_events WHERE id IN \
             (SELECT id FROM scopekey_events WHERE type = ?1 AND at < ?2 \
              ORDER BY at, id LIMIT ?3)",
        )
        .bind(kind)
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events WHERE 1 = 1",
        );
        if q.key_id.is_some() {
            sql.push_str(" AND key_id = ?1");
        }
        if q.cursor.is_some() {
            sql.push_str(" AND (at < ?2 OR (at = ?2 AND id < ?3))");
        }
        sql.push_str(" ORDER BY at DESC, id DESC LIMIT ?4");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(q.key_id.map(|k| k.to_string()))
            .bind(q.cursor.map(|c| c.at_micros))
            .bind(q.cursor.map(|c| c.id.hyphenated().to_string()))
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
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT key_id FROM scopekey_events \
             WHERE actor_key_id = ?1 AND key_id IS NOT NULL AND (type = ?2 OR \
             (type = ?3 AND json_extract(details, '$.successor_key_id') = key_id)) \
             ORDER BY at, id",
        )
        .bind(actor.to_string())
        .bind(crate::model::event_type::KEY_CREATED)
        .bind(crate::model::event_type::KEY_ROTATED)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    /// One statement, and one transaction, per 1,000 keys: the
    /// write lock is held for a chunk at a time, so a revocation waits for
    /// one chunk (milliseconds), never for a whole large flush (a statement
    /// per key, each a round trip to the connection's worker thread, held it
    /// some 30 µs a key: seconds for a flush of 100,000 keys, past the busy
    /// timeout). Times only move forward, so a flush that fails part-way and
    /// is retried whole rewrites nothing wrongly.
    async fn touch_last_used(&self, batch: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        for chunk in batch.chunks(super::TOUCH_CHUNK) {
            let rows: Vec<(String, i64)> = chunk
                .iter()
                .map(|(id, at)| (id.to_string(), micros(*at)))
                .collect();
            let rows = serde_json::to_string(&rows)
                .map_err(|e| StoreError::new("could not encode last-used times", e))?;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "UPDATE scopekey_keys SET last_used_at = u.at \
                 FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at FROM json_each(?1)) AS u \
                 WHERE scopekey_keys.id = u.id \
                 AND (scopekey_keys.last_used_at IS NULL OR scopekey_keys.last_used_at < u.at)",
            )
            .bind(rows)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    /// The migrations as shipped: see [`super::super::assert_migrations_pinned`].
    #[test]
    fn shipped_migrations_never_change() {
        super::super::assert_migrations_pinned(
            MIGRATIONS,
            &[
                (1, "24a5c445199d93a9"),
                (2, "7b7bf376b062fb68"),
                (3, "af8a9e7355d95459"),
                (4, "d845a5162d703fb7"),
                (5, "509b50639f9eeb8a"),
                (6, "88b2f925bdafbc61"),
            ],
        );
    }

    /// Bound on a lookup that must not wait for the verification connection.
    const PROMPT: Duration = Duration::from_secs(5);

    /// A migrated store on a fresh file, and the file (removed at the end).
    async fn file_store() -> (SqliteStore, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "scopekey-sqlite-unit-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        (store, path)
    }

    fn remove(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }

    fn some_hash() -> KeyHash {
        let format = KeyFormat::default();
        format.hash(format.generate().expect("generate").expose_secret())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_runs_on_the_main_pool_while_another_holds_the_verification_connection() {
        let (store, path) = file_store().await;
        let verifier = store.verifier.clone().expect("a file store has one");

        // Successive lookups use the verification connection and leave it
        // free.
        for _ in 0..3 {
            assert_eq!(
                store.find_for_verification(&some_hash()).await.unwrap(),
                None
            );
            assert!(!verifier.held.load(Ordering::Acquire));
        }
        assert_eq!(
            verifier.pool.size(),
            1,
            "the verification connection was opened"
        );

        // Another lookup holds it, and is slow: this one does not wait.
        verifier.held.store(true, Ordering::Release);
        let conn = verifier.pool.acquire().await.expect("the connection");
        let answered = tokio::time::timeout(PROMPT, store.find_for_verification(&some_hash()))
            .await
            .expect("answered on the main pool");
        assert_eq!(answered.unwrap(), None);
        drop(conn);
        verifier.held.store(false, Ordering::Release);
        store.close().await;
        remove(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_lookup_frees_the_verification_connection() {
        let (store, path) = file_store().await;
        let verifier = store.verifier.clone().expect("a file store has one");
        // The connection is out, so the lookup that takes the verification
        // connection waits for it until cancelled.
        let conn = verifier.pool.acquire().await.expect("the connection");
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            store.find_for_verification(&some_hash()),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "it could not finish without the connection"
        );
        assert!(!verifier.held.load(Ordering::Acquire), "freed when dropped");
        drop(conn);
        assert_eq!(
            store.find_for_verification(&some_hash()).await.unwrap(),
            None
        );
        store.close().await;
        remove(&path);
    }

    /// Far more than any step below takes, however loaded the machine: a
    /// bound that only a hang reaches.
    const GENEROUS: Duration = Duration::from_secs(60);

    /// Gives the verification connection (opened already) a busy timeout
    /// of `timeout`, and waits until it is back in its pool.
    async fn verification_busy_timeout(verifier: &Verifier, timeout: Duration) {
        let mut conn = verifier.pool.acquire().await.expect("the connection");
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {}",
            timeout.as_millis()
        )))
        .execute(&mut *conn)
        .await
        .expect("set the busy timeout");
        drop(conn);
        let deadline = tokio::time::Instant::now() + GENEROUS;
        while verifier.pool.num_idle() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "never handed back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A lookup cancelled while its statement runs (a timeout) leaves the
    /// verification connection taken until that statement has ended:
    /// meanwhile misses run on the main pool instead of queueing behind it;
    /// then the same connection serves them again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_cancelled_mid_statement_keeps_the_connection_until_it_ends() {
        use std::future::Future;
        use std::task::Poll;

        let (store, path) = file_store().await;
        let verifier = store.verifier.clone().expect("a file store has one");
        // The verification connection opened already, so that the statement
        // below starts at once.
        assert_eq!(
            store.find_for_verification(&some_hash()).await.unwrap(),
            None
        );
        // Another connection holds the write lock, so a write on the
        // verification connection waits for it, up to its busy timeout: made
        // far longer than the test (instead of the store's 5 s), so that the
        // statement is still waiting whenever the assertions below run.
        verification_busy_timeout(&verifier, Duration::from_secs(600)).await;
        let mut writer = store.pool.acquire().await.expect("a main connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *writer)
            .await
            .expect("the write lock");

        // Drives the lookup until it has taken the verification connection
        // (the only one of its pool, idle until then): sqlx queues the
        // statement on it in the same poll, so it is then running, waiting
        // for the lock. Then the lookup is cancelled.
        let stalled = sqlx::query("UPDATE scopekey_keys SET name = name");
        let mut lookup = Box::pin(store.fetch_for_verification(stalled));
        let deadline = tokio::time::Instant::now() + GENEROUS;
        loop {
            let polled = std::future::poll_fn(|cx| Poll::Ready(lookup.as_mut().poll(cx))).await;
            assert!(polled.is_pending(), "the write waited for the lock");
            if verifier.pool.num_idle() == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never took the connection"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(verifier.held.load(Ordering::Acquire), "marked taken");
        drop(lookup); // the future itself (boxed): cancelled
        assert!(
            verifier.held.load(Ordering::Acquire),
            "taken while the statement runs"
        );

        // Answered on the main pool, while the stalled statement still waits
        // (for its busy timeout, far longer than this bound).
        let next = tokio::time::timeout(GENEROUS, store.find_for_verification(&some_hash()))
            .await
            .expect("answered on the main pool");
        assert_eq!(next.unwrap(), None);
        assert!(verifier.held.load(Ordering::Acquire), "still taken");

        // The statement ends once the lock is released; the connection is
        // free again, and the same one serves the next lookup.
        sqlx::query("ROLLBACK")
            .execute(&mut *writer)
            .await
            .expect("release");
        drop(writer);
        let deadline = tokio::time::Instant::now() + GENEROUS;
        while verifier.held.load(Ordering::Acquire) {
            assert!(tokio::time::Instant::now() < deadline, "never freed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.find_for_verification(&some_hash()).await.unwrap(),
            None
        );
        assert_eq!(verifier.pool.size(), 1, "the same connection");
        store.close().await;
        remove(&path);
    }
}
