//! PostgreSQL transactions under contention: a change made by a key waits
//! for a concurrent revocation of that key and is then refused; and every
//! transaction runs at READ COMMITTED even where the database's default
//! isolation is stricter. Each test holds a row lock from a connection of
//! its own and waits (bounded) until the runtime's statement queues behind
//! it, so the order of events is forced, not hoped for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scopekey_runtime::testing::{Backend, TestDb};
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

/// Waits (at most 10 s) until another session of this database waits for a
/// lock.
async fn someone_waits_for_a_lock(conn: &mut PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "nothing queued behind the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    db.execute(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'serializable'"
    ))
    .await;
    // New connections take the database's default.
    let store = scopekey_runtime::open(&db.url).await.unwrap();
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    let default: String = sqlx::query_scalar("SHOW default_transaction_isolation")
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert_eq!(default, "serializable");
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
