//! PostgreSQL sessions and transactions: a change made by a key waits for a
//! concurrent revocation of that key and is then refused; every
//! transaction runs at READ COMMITTED even where the database's default
//! isolation is stricter; a failed migration leaves no lock behind; and
//! connecting sends no startup parameter a pooler would refuse. Each test holds a row lock from a connection of
//! its own and waits (bounded) until the runtime's statement queues behind
//! it, so the order of events is forced, not hoped for.

use std::sync::Arc;

use scopekey_runtime::testing::{Backend, TestDb, someone_waits_for_a_lock};
use scopekey_runtime::{Actor, Error, NewKey, ScopeKey};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

async fn pg() -> Option<TestDb> {
    TestDb::new(Backend::Postgres).await
}

/// Opens a transaction that revokes `id` and holds its row lock.
async fn revoking(db: &TestDb, id: scopekey_runtime::KeyId) -> PgConnection {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    conn.execute(AssertSqlSafe(format!(
        "UPDATE scopekey_keys SET revoked_at = now(), revoked_reason = 'leaked' \
         WHERE id = '{id}'"
    )))
    .await
    .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_for_a_concurrent_revocation_of_its_actor() {
    let Some(db) = pg().await else { return };
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let admin = keys
        .create(
            NewKey::new("admin", ["api_keys:write", "a:b"]),
            Actor::System,
        )
        .await
        .unwrap();
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();

    let mut revocation = revoking(&db, admin.key.id).await;
    let creating = tokio::spawn({
        let keys = keys.clone();
        async move {
            keys.create(NewKey::new("minted", ["a:b"]), Actor::Key(&p))
                .await
        }
    });
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    revocation.execute("COMMIT").await.unwrap();
    let created = creating.await.unwrap();
    assert!(matches!(created, Err(Error::ActorRevoked)), "{created:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_read_committed_whatever_the_default() {
    let Some(db) = pg().await else { return };
    db.set_default_isolation("serializable").await;
    // New connections take the database's default, the store's own too:
    // it sends no startup parameter (a pooler would refuse it), so each of
    // its transactions asks for READ COMMITTED itself.
    let pg = scopekey_runtime::store::postgres::PgStore::connect(&db.url)
        .await
        .unwrap();
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    let default: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(default, "serializable");
    let store: Arc<dyn scopekey_runtime::store::Store> = Arc::new(pg);
    let keys = ScopeKey::builder_arc(store).build();
    let k = keys
        .create(NewKey::new("k", ["a:b"]), Actor::System)
        .await
        .unwrap();

    // A second revocation queued behind the first is idempotent, not a
    // serialization failure.
    let mut revocation = revoking(&db, k.key.id).await;
    let revoking_again = tokio::spawn({
        let keys = keys.clone();
        async move { keys.revoke(k.key.id, None, Actor::System).await }
    });
    someone_waits_for_a_lock(&mut watcher).await;
    revocation.execute("COMMIT").await.unwrap();
    let key = revoking_again.await.unwrap().expect("idempotent");
    assert_eq!(
        key.revoked_reason.as_deref(),
        Some("leaked"),
        "the first revocation won"
    );
    db.cleanup().await;
}

/// A key rotating an older key locks both rows in id order, as the
/// last-use flush does: a flush holding the older row and then asking for
/// the newer one waits its turn instead of deadlocking with the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_and_a_last_use_flush_cannot_deadlock() {
    let Some(db) = pg().await else { return };
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    // Two keys made in one millisecond may have their ids in either order:
    // the one with the lower id is rotated, by the other.
    let mut made = Vec::new();
    for name in ["one", "two"] {
        made.push(
            keys.create(NewKey::new(name, ["api_keys:write", "a:b"]), Actor::System)
                .await
                .unwrap(),
        );
    }
    made.sort_by_key(|k| k.key.id);
    let [older, admin] = <[_; 2]>::try_from(made).ok().unwrap();
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();

    // A flush's order: the older row first.
    let mut flush = PgConnection::connect(&db.url).await.unwrap();
    flush.execute("BEGIN").await.unwrap();
    let touch = |id| {
        AssertSqlSafe(format!(
            "UPDATE scopekey_keys SET last_used_at = now() WHERE id = '{id}'"
        ))
    };
    flush.execute(touch(older.key.id)).await.unwrap();
    let rotating = tokio::spawn({
        let keys = keys.clone();
        let id = older.key.id;
        async move {
            keys.rotate(
                id,
                scopekey_runtime::RotateOptions::default(),
                Actor::Key(&p),
            )
            .await
        }
    });
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    // Then the newer row: free, since the rotation waits for the older.
    flush
        .execute(touch(admin.key.id))
        .await
        .expect("no deadlock");
    flush.execute("COMMIT").await.unwrap();
    let rotated = rotating
        .await
        .unwrap()
        .expect("rotated once the flush is done");
    assert_eq!(rotated.key.parent_key_id, Some(older.key.id));
    db.cleanup().await;
}

/// The same for rotating another key: the rotation waits for the
/// revocation of the key acting for it, then is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_waits_for_a_concurrent_revocation_of_its_actor() {
    let Some(db) = pg().await else { return };
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let target = keys
        .create(NewKey::new("target", ["a:b"]), Actor::System)
        .await
        .unwrap();
    let admin = keys
        .create(
            NewKey::new("admin", ["api_keys:write", "a:b"]),
            Actor::System,
        )
        .await
        .unwrap();
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();

    let mut revocation = revoking(&db, admin.key.id).await;
    let rotating = tokio::spawn({
        let keys = keys.clone();
        let id = target.key.id;
        async move {
            keys.rotate(
                id,
                scopekey_runtime::RotateOptions::default(),
                Actor::Key(&p),
            )
            .await
        }
    });
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    revocation.execute("COMMIT").await.unwrap();
    let rotated = rotating.await.unwrap();
    assert!(matches!(rotated, Err(Error::ActorRevoked)), "{rotated:?}");
    assert_eq!(
        keys.get(target.key.id).await.unwrap().status,
        scopekey_runtime::Status::Active
    );
    db.cleanup().await;
}

/// A migration that fails leaves sqlx's migration lock (a session advisory
/// lock, shared by every sqlx migrator of the database, the application's
/// own too) held by no one: the next migration, of scopekey or of the
/// application, is not blocked behind a pooled connection that still holds
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_leaves_no_lock_behind() {
    let Some(db) = pg().await else { return };
    // An applied migration whose recorded checksum no longer matches: the
    // migrator takes its lock, then fails.
    db.execute("UPDATE _scopekey_migrations SET checksum = '\\x00' WHERE version = 1")
        .await;
    let advisory_locks = || async {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        n
    };
    for _ in 0..2 {
        let run = tokio::time::timeout(std::time::Duration::from_secs(30), db.store.migrate())
            .await
            .expect("the migration does not wait for a lock");
        assert!(run.is_err(), "the checksum no longer matches");
        // The server drops a closed session's locks as its process exits,
        // just after the close: waited for, bounded. A lock held by a
        // pooled connection would stay.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while advisory_locks().await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a migration lock is still held"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    db.cleanup().await;
}

/// `PgStore::connect` sends no startup parameter a transaction pooler
/// would refuse: not sqlx's `extra_float_digits` (the server's default
/// stays), nor an isolation level. (sqlx's `DateStyle`, `client_encoding`
/// and `TimeZone`, which poolers track, still go.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sends_nothing_a_pooler_refuses() {
    let Some(db) = pg().await else { return };
    let store = scopekey_runtime::store::postgres::PgStore::connect(&db.url)
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    for setting in ["extra_float_digits", "default_transaction_isolation"] {
        let (value, source): (String, String) =
            sqlx::query_as("SELECT setting, source FROM pg_settings WHERE name = $1")
                .bind(setting)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_ne!(
            source, "client",
            "{setting} = {value} was sent at connection start"
        );
    }
    drop(conn);
    store.pool().close().await;
    db.cleanup().await;
}

/// Two pruners at once (a cron job on two hosts), on a database whose
/// default isolation is repeatable read: the second neither waits for the
/// batch the first holds nor fails over it once deleted; it deletes the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruners_at_once_share_the_work() {
    let Some(db) = pg().await else { return };
    db.set_default_isolation("repeatable read").await;
    db.execute(
        "INSERT INTO scopekey_events (id, type, at, details) \
         SELECT gen_random_uuid(), 'auth.failed', \
                now() - interval '100 days' - g * interval '1 second', '{}'::jsonb \
         FROM generate_series(1, 2500) AS g",
    )
    .await;
    // A store whose connections start after the change of default.
    let pg = scopekey_runtime::store::postgres::PgStore::connect(&db.url)
        .await
        .unwrap();
    let keys = ScopeKey::builder_arc(Arc::new(pg)).build();

    // The other pruner holds the 1,000 oldest.
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute(
            "DELETE FROM scopekey_events WHERE id IN (SELECT id FROM scopekey_events \
             WHERE type = 'auth.failed' ORDER BY at, id LIMIT 1000)",
        )
        .await
        .unwrap();
    let deleted = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        keys.prune_auth_failures(time::Duration::days(90)),
    )
    .await
    .expect("waited for the rows the other pruner holds")
    .expect("pruned");
    assert_eq!(deleted, 1_500);
    other.execute("COMMIT").await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM scopekey_events")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(left, 0);
    db.cleanup().await;
}

/// A large last-use flush commits a chunk of keys at a time: a revocation
/// of one of them waits for its chunk, not for the whole flush. Shown by
/// holding a key of the second chunk: the first chunk is already written
/// while the flush waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_use_flush_commits_a_chunk_at_a_time() {
    let Some(db) = pg().await else { return };
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let mut ids = Vec::new();
    for i in 0..1_001 {
        let made = keys
            .create(NewKey::new(format!("k{i}"), ["a:b"]), Actor::System)
            .await
            .unwrap();
        ids.push(made.key.id);
    }
    ids.sort();
    let (first, last) = (ids[0], ids[1_000]);

    // Someone holds the last key, in id order, the flush's second chunk.
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute(AssertSqlSafe(format!(
            "SELECT 1 FROM scopekey_keys WHERE id = '{last}' FOR UPDATE"
        )))
        .await
        .unwrap();
    let at = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let batch: Vec<_> = ids.iter().rev().map(|id| (*id, at)).collect();
    let flushing = tokio::spawn({
        let store = Arc::clone(&db.store);
        async move { store.touch_last_used(&batch).await }
    });
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    let written: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT last_used_at FROM scopekey_keys WHERE id = $1")
            .bind(first.0)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
    assert_eq!(written, Some(at), "the first chunk is committed");
    holder.execute("COMMIT").await.unwrap();
    flushing.await.unwrap().expect("flushed");
    let stored = db.store.get(last).await.unwrap().expect("stored");
    assert_eq!(stored.last_used_at, Some(at));
    db.cleanup().await;
}

/// A role that may read and write scopekey's tables but create none (as
/// PostgreSQL 15 has it on `public` for roles that do not own the schema)
/// migrates an up-to-date store: there is nothing to do, so sqlx's
/// migrator (which creates its table if missing, and takes a lock every
/// sqlx migrator of the database shares) is not run. The CLI migrates
/// before every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_to_date_store_migrates_without_create_rights() {
    use std::str::FromStr;
    let Some(db) = pg().await else { return };
    let role = format!("scopekey_limited_{}", uuid::Uuid::now_v7().simple());
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN; \
         REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
    ))
    .await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .username(&role);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let refused = sqlx::query("CREATE TABLE scopekey_probe (id int)")
        .execute(&pool)
        .await;
    assert!(refused.is_err(), "the role may not create tables");
    let store = scopekey_runtime::store::postgres::PgStore::from_pool(pool.clone());
    scopekey_runtime::store::Store::migrate(&store)
        .await
        .expect("nothing to migrate, nothing attempted");
    let keys = ScopeKey::builder_arc(Arc::new(store)).build();
    keys.create(NewKey::new("k", ["a:b"]), Actor::System)
        .await
        .expect("the role writes keys");
    pool.close().await;
    db.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await;
    db.cleanup().await;
}
