//! A store that fails while verifying fails closed: 503, never a pass, never
//! a 401, and nothing about the cause in the body; with the middleware or
//! with the guards and extractors alone, and also for a key whose cached
//! verification has gone stale.

mod common;

use std::sync::Arc;

use actix_web::{HttpResponse, get, web};
use common::*;
use scopekey::actix::{Authenticated, MaybeAuthenticated};
use scopekey::requires_scope;
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

/// A route guarded by `#[requires_scope]`.
#[get("/orders")]
#[requires_scope("orders:read")]
async fn guarded() -> HttpResponse {
    HttpResponse::Ok().body("orders")
}

/// A route that takes the caller as `Authenticated`, unguarded.
#[get("/me")]
async fn authenticated(caller: Authenticated) -> HttpResponse {
    HttpResponse::Ok().body(caller.name.to_string())
}

/// A route open to anyone, that takes the caller if there is one.
#[get("/maybe")]
async fn maybe(caller: MaybeAuthenticated) -> HttpResponse {
    match caller.0 {
        Some(p) => HttpResponse::Ok().body(p.name.to_string()),
        None => HttpResponse::Ok().body("anonymous"),
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(guarded).service(authenticated).service(maybe);
}

/// Where a key is verified: a management route, a guarded route, and the
/// two extractors. With the middleware off, each verifies on its own.
const VERIFYING: [&str; 4] = ["/api-keys/self", "/orders", "/me", "/maybe"];

fn setup(middleware: bool) -> Setup {
    Setup {
        middleware,
        extra: routes,
        ..Setup::default()
    }
}

/// A 503 that fails closed: no challenge (the key was not judged), a
/// `Retry-After`, and nothing about the cause in the body.
#[track_caller]
fn assert_unavailable(res: &Response, path: &str) {
    let body = res.assert_problem(503, None);
    assert_eq!(res.header("retry-after"), Some("1"), "{path}: {res:?}");
    let text = res.text().to_lowercase();
    for leak in ["pool", "sqlx", "sqlite", "postgres", "database", "closed"] {
        assert!(
            !text.contains(leak),
            "{path}: 503 body names the cause ({leak}): {body}"
        );
    }
}

async fn fails_closed(db: &TestDb, middleware: bool) {
    let (store, close) = closable(db).await;
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(store).clock(clock.clone()).build();
    let app = TestApp::serve(keys, clock, setup(middleware)).await;
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);

    close().await;

    // Never verified before: the store must answer, and cannot. Not a pass,
    // and on `MaybeAuthenticated` not an anonymous pass either.
    for path in VERIFYING {
        for key in [reader.clone(), unknown_key()] {
            let res = app.get(path).bearer(&key).send().await;
            assert_unavailable(&res, path);
        }
    }
    // No key needs no store: the open route still answers, anonymously.
    let res = app.get("/maybe").send().await;
    assert_eq!((res.status, res.text()), (200, "anonymous".to_owned()));
    // Management calls whose store access fails are 503 too, whatever the
    // state of the caller's cached verification.
    let res = app.get("/api-keys").bearer(&app.admin).send().await;
    res.assert_problem(503, None);
    // A malformed key needs no store: still 401; so does a mistyped one
    // (the right shape, one check character wrong), refused by its checksum.
    let mut mistyped = reader.clone();
    let last = mistyped.pop().unwrap();
    mistyped.push(if last == 'A' { 'B' } else { 'A' });
    for key in ["sk_malformed", mistyped.as_str()] {
        app.get("/api-keys/self")
            .bearer(key)
            .send()
            .await
            .assert_problem(401, Some(INVALID_TOKEN));
    }
    app.stop().await;
}

async fn fails_closed_with_middleware(db: &TestDb) {
    fails_closed(db, true).await;
}

async fn fails_closed_without_middleware(db: &TestDb) {
    fails_closed(db, false).await;
}

both_backends!(store_failure_is_503, fails_closed_with_middleware);
both_backends!(
    store_failure_is_503_without_middleware,
    fails_closed_without_middleware
);

/// A cached verification past its lifetime is not served when the store
/// fails: the key verified a moment ago is 503 now, never its stale 200.
async fn stale_fails_closed(db: &TestDb, middleware: bool) {
    let (store, close) = closable(db).await;
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(store).clock(clock.clone()).build();
    let app = TestApp::serve(keys, clock, setup(middleware)).await;
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);
    for path in VERIFYING {
        let res = app.get(path).bearer(&reader).send().await;
        assert_eq!(res.status, 200, "{path}: {}", res.text());
    }
    // Past the cache's lifetime (one second): the entry is stale.
    app.clock.advance(time::Duration::seconds(2));
    close().await;
    for path in VERIFYING {
        let res = app.get(path).bearer(&reader).send().await;
        assert_unavailable(&res, path);
    }
    app.stop().await;
}

async fn stale_fails_closed_with_middleware(db: &TestDb) {
    stale_fails_closed(db, true).await;
}

async fn stale_fails_closed_without_middleware(db: &TestDb) {
    stale_fails_closed(db, false).await;
}

both_backends!(
    stale_cache_is_not_served_on_store_failure,
    stale_fails_closed_with_middleware
);
both_backends!(
    stale_cache_is_not_served_on_store_failure_without_middleware,
    stale_fails_closed_without_middleware
);

/// What makes every verification read wait: on SQLite, a store on a pool of
/// one connection (an application's own pool, `from_pool`) whose connection
/// is then held elsewhere (a long job); on PostgreSQL, an `ACCESS EXCLUSIVE`
/// lock on the keys table (a migration altering it), taken from a
/// connection of its own. Dropping what [`Blocker::block`] returns releases
/// it.
enum Blocker {
    Pool(sqlx::SqlitePool),
    Lock(String),
}

impl Blocker {
    async fn new(db: &TestDb) -> (Arc<dyn Store>, Self) {
        match db.backend() {
            Backend::Sqlite => {
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(60))
                    .connect(&db.url)
                    .await
                    .expect("sqlite");
                (
                    Arc::new(SqliteStore::from_pool(pool.clone())),
                    Self::Pool(pool),
                )
            }
            Backend::Postgres => (Arc::clone(&db.store), Self::Lock(db.url.clone())),
        }
    }

    async fn block(&self) -> Held {
        use sqlx::Connection;
        match self {
            Self::Pool(pool) => Held::Pooled(pool.acquire().await.unwrap()),
            Self::Lock(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                for sql in [
                    "BEGIN",
                    "LOCK TABLE scopekey_keys, scopekey_events IN ACCESS EXCLUSIVE MODE",
                ] {
                    sqlx::query(sql).execute(&mut conn).await.unwrap();
                }
                Held::Lock(conn)
            }
        }
    }
}

/// What [`Blocker::block`] holds.
enum Held {
    Pooled(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Lock(sqlx::PgConnection),
}

impl Held {
    /// Lets the store answer again, at once: the connection goes back to
    /// its pool, or the lock is rolled back (not left for the server to
    /// notice a dropped socket).
    async fn release(self) {
        use sqlx::Connection;
        match self {
            Self::Pooled(conn) => drop(conn),
            Self::Lock(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// A store that does not answer fails closed within the store timeout:
/// 503 while the reads wait (for a pooled connection, up to the pool's
/// acquire timeout; for the lock, until it is released), a refusal that
/// needs no lookup is not held by its audit write, and the same key verifies
/// once the store answers again (nothing was cached from the failure).
async fn hangs_closed(db: &TestDb, middleware: bool) {
    let (store, blocker) = Blocker::new(db).await;
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(store)
        .clock(clock.clone())
        .store_timeout(std::time::Duration::from_secs(1))
        .build();
    let app = TestApp::serve(keys, clock, setup(middleware)).await;
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);

    let blocked = blocker.block().await;
    // Generous slack over the second: without the timeout, an answer would
    // take the pool's 60 s, or as long as the lock is held.
    let within_bound = |path: &str, key: String| {
        let req = app.get(path).bearer(&key).send();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), req)
                .await
                .expect("an answer within the store timeout")
        }
    };
    for path in VERIFYING {
        for key in [reader.clone(), unknown_key()] {
            let res = within_bound(path, key).await;
            assert_unavailable(&res, path);
        }
    }
    // A malformed key needs no lookup: refused within the store timeout,
    // though its sampled `auth.failed` write cannot get through.
    within_bound("/api-keys/self", "sk_malformed".to_owned())
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    // Nor do credentials refused as unreadable (empty, two tokens,
    // oversized, not ASCII): 401, never the 503 a lookup would get.
    for (name, value) in unreadable_credentials(&reader) {
        let req = app.get("/api-keys/self").header(name, &value).send();
        tokio::time::timeout(std::time::Duration::from_secs(10), req)
            .await
            .expect("an answer within the store timeout")
            .assert_problem(401, Some(INVALID_TOKEN));
    }
    blocked.release().await;

    // The pool may still be giving back the connections of the cancelled
    // reads: a 503 meanwhile is the store not answering yet. Once it
    // answers, the same key verifies (no failure was cached).
    let served = &app;
    let answered = |key: String| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let res = served.get("/api-keys/self").bearer(&key).send().await;
            if res.status != 503 || std::time::Instant::now() > deadline {
                return res;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let res = answered(reader).await;
    assert_eq!(res.status, 200, "{}", res.text());
    answered(unknown_key())
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    app.stop().await;
}

async fn hangs_closed_with_middleware(db: &TestDb) {
    hangs_closed(db, true).await;
}

async fn hangs_closed_without_middleware(db: &TestDb) {
    hangs_closed(db, false).await;
}

both_backends!(hung_store_is_503, hangs_closed_with_middleware);
both_backends!(
    hung_store_is_503_without_middleware,
    hangs_closed_without_middleware
);

/// A PostgreSQL server that is down (nothing listens on its port): sqlx's
/// pool keeps trying to connect until its acquire timeout (30 s by
/// default), and verification answers "unavailable" after the store
/// timeout instead: the lookup's own timeout, not the pool's, is the
/// error. A malformed key needs no lookup; its refusal waits for its audit
/// write no longer than the store timeout either (only time can tell: the
/// bound below is ten times that timeout, and a third of the pool's).
#[tokio::test]
async fn postgres_down_is_unavailable_within_the_store_timeout() {
    // Bound but never listening: connections to it are refused, and no
    // other test can take the port while this one runs.
    let down = tokio::net::TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = down.local_addr().unwrap().port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/down"))
        .unwrap();
    let keys = ScopeKey::builder_arc(Arc::new(PgStore::from_pool(pool)))
        .store_timeout(std::time::Duration::from_secs(1))
        .build();
    let verdict = keys.verify(&unknown_key()).await;
    let Err(scopekey::VerifyError::Unavailable(e)) = &verdict else {
        panic!("unavailable: {verdict:?}");
    };
    assert!(
        e.to_string().contains("took longer than"),
        "the store timeout ended the lookup, not the pool's: {e:?}"
    );
    let bound = std::time::Duration::from_secs(10);
    let verdict = tokio::time::timeout(bound, keys.verify("sk_malformed"))
        .await
        .expect("an answer within the store timeout");
    assert!(
        matches!(verdict, Err(scopekey::VerifyError::Malformed(_))),
        "{verdict:?}"
    );
    drop(down);
}
