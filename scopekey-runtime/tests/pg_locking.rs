//! PostgreSQL transactions under contention: a change made by a key waits
//! for a concurrent revocation of that key and is then refused; and every
//! transaction runs at READ COMMITTED even where the database's default
//! isolation is stricter. Each test holds a row lock from a connection of
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
