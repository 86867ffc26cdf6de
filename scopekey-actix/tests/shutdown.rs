//! `Background::shutdown` writes the pending last-used times even when the
//! first writes fail, as they do on a connection whose runtime stopped with
//! the server (an actix-web worker's); when every attempt fails, the times
//! stay pending and the error is returned.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use common::*;
use scopekey_actix::{Background, SHUTDOWN_FLUSH_ATTEMPTS};
use scopekey_runtime::testing::PausingStore;
use scopekey_runtime::{Actor, NewKey, ScopeKey};

/// A runtime on a store whose writes of last use can be made to fail, with
/// one key used once since it was made.
async fn used_key(db: &Db) -> (Arc<PausingStore>, ScopeKey, scopekey_runtime::KeyId) {
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    let keys = ScopeKey::builder_arc(Arc::clone(&store) as _).build();
    let made = keys
        .create(NewKey::new("used", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    keys.verify(made.plaintext.expose_secret()).await.unwrap();
    (store, keys, made.key.id)
}

/// The key's last use as the store holds it (the runtime's own answers
/// include what it has not written yet).
async fn stored_last_use(db: &Db, id: scopekey_runtime::KeyId) -> Option<time::OffsetDateTime> {
    db.store
        .get(id)
        .await
        .unwrap()
        .expect("the key")
        .last_used_at
}

async fn written_after_failures(db: &Db) {
    let (store, keys, id) = used_key(db).await;
    let background = Background::start(&keys).await.unwrap();
    let failures = usize::try_from(SHUTDOWN_FLUSH_ATTEMPTS - 1).unwrap();
    store.failing_touches.store(failures, SeqCst);
    background
        .shutdown()
        .await
        .expect("written on the last attempt");
    assert_eq!(store.touches.load(SeqCst), failures + 1);
    assert!(stored_last_use(db, id).await.is_some());
}
both_backends!(
    shutdown_writes_last_use_after_failed_attempts,
    written_after_failures
);

async fn kept_when_every_attempt_fails(db: &Db) {
    let (store, keys, id) = used_key(db).await;
    let background = Background::start(&keys).await.unwrap();
    let attempts = usize::try_from(SHUTDOWN_FLUSH_ATTEMPTS).unwrap();
    store.failing_touches.store(attempts, SeqCst);
    assert!(background.shutdown().await.is_err());
    assert_eq!(store.touches.load(SeqCst), attempts);
    assert!(stored_last_use(db, id).await.is_none());
    // Still pending: the next write has it.
    keys.flush_last_used().await.unwrap();
    assert!(stored_last_use(db, id).await.is_some());
}
both_backends!(
    shutdown_keeps_last_use_when_every_attempt_fails,
    kept_when_every_attempt_fails
);
