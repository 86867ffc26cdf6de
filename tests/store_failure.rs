//! A store that fails while verifying fails closed: 503, never a pass, never
//! a 401, and nothing about the cause in the body.

mod common;

use std::sync::Arc;

use common::*;
use scopekey::store::postgres::PgStore;
use scopekey::store::sqlite::SqliteStore;
use scopekey::{ManualClock, ScopeKey, Store};
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::{Backend, TestDb};

/// A runtime on its own pool over the test database, and a way to close
/// that pool (the database becomes unreachable for this runtime only).
async fn closable(db: &TestDb) -> (Arc<dyn Store>, Box<dyn FnOnce() -> futures::BoxFuture>) {
    match db.backend() {
        Backend::Sqlite => {
            let store = SqliteStore::connect(&db.url).await.expect("sqlite");
            let pool = store.pool().clone();
            (
                Arc::new(store),
                Box::new(move || futures::boxed(async move { pool.close().await })),
            )
        }
        Backend::Postgres => {
            let store = PgStore::connect(&db.url).await.expect("postgres");
            let pool = store.pool().clone();
            (
                Arc::new(store),
                Box::new(move || futures::boxed(async move { pool.close().await })),
            )
        }
    }
}

mod futures {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    pub fn boxed(f: impl std::future::Future<Output = ()> + Send + 'static) -> BoxFuture {
        Box::pin(f)
    }
}

async fn fails_closed(db: &TestDb) {
    let (store, close) = closable(db).await;
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(store).clock(clock.clone()).build();
    let app = TestApp::serve(keys, clock, Setup::default()).await;
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);

    close().await;

    // Never verified before: the store must answer, and cannot.
    for key in [reader.clone(), unknown_key()] {
        let res = app.get("/api-keys/self").bearer(&key).send().await;
        let body = res.assert_problem(503, None);
        assert_eq!(res.header("retry-after"), Some("1"));
        let text = res.text().to_lowercase();
        for leak in ["pool", "sqlx", "sqlite", "postgres", "database", "closed"] {
            assert!(
                !text.contains(leak),
                "503 body names the cause ({leak}): {body}"
            );
        }
    }
    // Management calls whose store access fails are 503 too, whatever the
    // state of the caller's cached verification.
    let res = app.get("/api-keys").bearer(&app.admin).send().await;
    res.assert_problem(503, None);
    // A malformed key needs no store: still 401.
    app.get("/api-keys/self")
        .bearer("sk_malformed")
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    app.stop().await;
}

both_backends!(store_failure_is_503, fails_closed);
