//! How runtimes are found and told apart, and the `Vary` line every answer
//! carries: two runtimes on one store are two runtimes (each its own
//! cache); a runtime registered one way at the application and another way
//! at a scope is refused, not guessed; a handler's own `Vary` is kept in
//! one line with the credential headers, however many middlewares the
//! answer passes through.

mod common;

use std::time::Duration;

use actix_web::{App, HttpResponse, test, web};
use common::*;
use scopekey_actix::ApiKeyAuth;
use scopekey_runtime::{Actor, ManualClock, NewKey, ScopeKey};

async fn encoded() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Vary", "Accept-Encoding"))
        .body("body")
}

/// Two runtimes built on one store, each with its own cache: a key one
/// has revoked (dropping its own entry) is not passed on the other's
/// cached verdict where the route belongs to the first.
async fn two_runtimes_on_one_store(db: &Db) {
    let clock = ManualClock::starting_now();
    let store = scopekey_runtime::open(&db.url).await.expect("open");
    let runtime = || {
        ScopeKey::builder_arc(store.clone())
            .clock(clock.clone())
            .cache_ttl(Duration::from_secs(3600))
            .build()
    };
    let (app_keys, tenant_keys) = (runtime(), runtime());
    assert!(!app_keys.same_runtime(&tenant_keys));
    assert!(app_keys.same_runtime(&app_keys.clone()));
    let created = app_keys
        .create(NewKey::new("k", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let key = created.plaintext.expose_secret();
    app_keys
        .verify(key)
        .await
        .expect("cached by the application's runtime");
    tenant_keys
        .revoke(created.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();

    let app = test::init_service(
        App::new()
            .app_data(app_keys.clone())
            .wrap(ApiKeyAuth::new())
            .route("/whoami", web::get().to(whoami))
            .service(
                web::scope("/tenant")
                    .app_data(tenant_keys.clone())
                    .route("/whoami", web::get().to(whoami)),
            ),
    )
    .await;
    let ask = |path: &'static str| {
        Presenting::Bearer
            .present(test::TestRequest::get().uri(path), key)
            .to_request()
    };
    // The application's runtime still holds its verdict (its cache's
    // lifetime); the tenant's, which revoked the key, refuses it.
    let res = Answer::read(test::call_service(&app, ask("/tenant/whoami")).await).await;
    res.assert_invalid_token();
    let res = Answer::read(test::call_service(&app, ask("/whoami")).await).await;
    assert_eq!(res.status, 200, "{res:?}");
}
both_backends!(two_runtimes_on_one_store_are_two, two_runtimes_on_one_store);

/// A runtime registered as `ScopeKey` at the application and another as
/// `web::Data<ScopeKey>` at a scope: which is nearer cannot be told, so
/// neither is used (500), rather than perhaps the application's. The same
/// runtime registered both ways is one runtime.
async fn mixed_registration(db: &Db) {
    let clock = ManualClock::starting_now();
    let (app_keys, tenant_keys) = (db.node(&clock).await, db.node(&clock).await);
    let created = tenant_keys
        .create(NewKey::new("tenant", ["*"]), Actor::System)
        .await
        .unwrap();
    let key = created.plaintext.expose_secret();
    for (scope_keys, expected) in [(tenant_keys.clone(), 500), (app_keys.clone(), 200)] {
        let app = test::init_service(
            App::new().app_data(app_keys.clone()).service(
                web::scope("/tenant")
                    .app_data(web::Data::new(scope_keys))
                    .wrap(ApiKeyAuth::new())
                    .route("/whoami", web::get().to(whoami)),
            ),
        )
        .await;
        let req = Presenting::Bearer.present(test::TestRequest::get().uri("/tenant/whoami"), key);
        let res = Answer::read(test::call_service(&app, req.to_request()).await).await;
        assert_eq!(res.status, expected, "{res:?}");
    }
}
both_backends!(a_runtime_registered_two_ways_is_refused, mixed_registration);

/// One `Vary` line: the handler's own field, then the credential headers
/// once, through two nested middlewares, with a key or without.
async fn one_vary_line(db: &Db) {
    let clock = ManualClock::starting_now();
    let keys = db.node(&clock).await;
    let created = keys
        .create(NewKey::new("k", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .app_data(keys.clone())
            .wrap(ApiKeyAuth::new())
            .service(
                web::scope("/inner")
                    .wrap(ApiKeyAuth::new())
                    .route("/encoded", web::get().to(encoded))
                    .route("/whoami", web::get().to(whoami)),
            ),
    )
    .await;
    let key = created.plaintext.expose_secret();
    for (path, key, status) in [
        ("/inner/encoded", Some(key), 200),
        ("/inner/encoded", None, 200),
        ("/inner/whoami", Some("sk_garbage"), 401),
        ("/inner/whoami", None, 401),
    ] {
        let mut req = test::TestRequest::get().uri(path);
        if let Some(key) = key {
            req = Presenting::XApiKey.present(req, key);
        }
        let res = Answer::read(test::call_service(&app, req.to_request()).await).await;
        assert_eq!(res.status, status, "{res:?}");
        let vary: Vec<_> = res
            .headers
            .iter()
            .filter(|(name, _)| name.as_str() == "vary")
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .collect();
        let expected = if path == "/inner/encoded" {
            "Accept-Encoding, Authorization, X-API-Key"
        } else {
            "Authorization, X-API-Key"
        };
        assert_eq!(vary, [expected], "{path} {key:?}");
    }
}
both_backends!(one_vary_line_for_every_answer, one_vary_line);
