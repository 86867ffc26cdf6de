//! Handlers guarded with `#[requires_scope]`, over real HTTP: no key 401,
//! wrong scope 403 naming the scopes, right scope 200; `any`/`all`
//! combinations; wildcard grants; both orders of the route and scope
//! attributes; with and without the middleware; one verification per
//! request.

mod common;

use actix_web::{HttpResponse, delete, get, post, web};
use common::*;
use scopekey::actix::{Authenticated, MaybeAuthenticated};
use scopekey::requires_scope;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use time::Duration;

#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

// Route attribute first...
#[get("/orders")]
#[requires_scope("orders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().body("orders")
}

// ...or scope attribute first.
#[requires_scope("orders:write")]
#[post("/orders")]
async fn create_order() -> HttpResponse {
    HttpResponse::Created().body("created")
}

#[delete("/orders/{id}")]
#[requires_scope(any("orders:admin", "orders:delete"))]
async fn delete_order(id: web::Path<u32>) -> HttpResponse {
    HttpResponse::Ok().body(format!("deleted {id}"))
}

#[get("/orders/sync")]
#[requires_scope(all("orders:read", "orders:write"))]
async fn sync_orders() -> HttpResponse {
    HttpResponse::Ok().body("synced")
}

#[get("/orders/nested")]
#[requires_scope(any("orders:admin", all("orders:write", "orders:read")))]
async fn nested() -> HttpResponse {
    HttpResponse::Ok().body("nested")
}

#[get("/refunds")]
#[requires_scope("orders.refunds:write")]
async fn refunds() -> HttpResponse {
    HttpResponse::Ok().body("refunds")
}

/// A guard and both extractors on one handler: one verification.
#[get("/whoami")]
#[requires_scope("orders:read")]
async fn whoami(caller: Authenticated, maybe: MaybeAuthenticated) -> HttpResponse {
    assert_eq!(maybe.0.as_ref().map(|p| p.id), Some(caller.id));
    HttpResponse::Ok().body(caller.name.to_string())
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(health)
        .service(list_orders)
        .service(create_order)
        .service(sync_orders)
        .service(nested)
        .service(delete_order)
        .service(refunds)
        .service(whoami);
}

const ALL: &[(&str, &str)] = &[
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("DELETE", "/orders/7"),
    ("GET", "/orders/sync"),
    ("GET", "/orders/nested"),
    ("GET", "/refunds"),
];

async fn matrix(app: &TestApp) {
    let cases: Vec<(&[&str], [Option<&str>; 6])> = vec![
        (
            &["orders:read"],
            [
                None,
                Some("orders:write"),
                Some("orders:admin orders:delete"),
                Some("orders:read orders:write"),
                Some("orders:admin orders:write orders:read"),
                Some("orders.refunds:write"),
            ],
        ),
        (
            &["orders:delete"],
            [
                Some("orders:read"),
                Some("orders:write"),
                None,
                Some("orders:read orders:write"),
                Some("orders:admin orders:write orders:read"),
                Some("orders.refunds:write"),
            ],
        ),
        (
            &["orders:read", "orders:write"],
            [
                None,
                None,
                Some("orders:admin orders:delete"),
                None,
                None,
                Some("orders.refunds:write"),
            ],
        ),
        (
            &["orders:admin"],
            [
                Some("orders:read"),
                Some("orders:write"),
                None,
                Some("orders:read orders:write"),
                None,
                Some("orders.refunds:write"),
            ],
        ),
        // A resource wildcard covers every action on that resource only.
        (
            &["orders:*"],
            [None, None, None, None, None, Some("orders.refunds:write")],
        ),
        (&["*"], [None, None, None, None, None, None]),
    ];
    for (scopes, expected) in cases {
        let created = app.create_key("holder", scopes).await;
        let (key, _) = key_and_id(&created);
        // Each endpoint of ALL answers 2xx (None) or 403 naming these scopes.
        for ((method, path), challenge) in ALL.iter().zip(expected) {
            let label = format!("{path} with {scopes:?}");
            let res = app.request(method, path).bearer(&key).send().await;
            match challenge {
                None => assert!(
                    (200..300).contains(&res.status),
                    "{method} {label}: {} {}",
                    res.status,
                    res.text()
                ),
                Some(scope) => {
                    let body = res.assert_problem(403, Some(&insufficient(scope)));
                    assert_eq!(body["code"], "insufficient_scope", "{method} {label}");
                }
            }
        }
    }
    // No key: 401 with the bare challenge on every guarded route.
    for (method, path) in ALL {
        app.request(method, path)
            .send()
            .await
            .assert_problem(401, Some(NO_KEY));
    }
    assert_eq!(app.get("/health").send().await.status, 200);
}

async fn with_middleware(db: &TestDb) {
    let app = TestApp::start_with(
        db,
        Setup {
            extra: routes,
            ..Setup::default()
        },
    )
    .await;
    matrix(&app).await;
    // A bad key is refused even on the public route.
    app.get("/health")
        .bearer("sk_bad")
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    shared_caches_keep_answers_to_their_key(&app).await;
    app.stop().await;
}

both_backends!(guarded_with_middleware, with_middleware);

/// Every value of `name`, joined as one list.
fn all_values(res: &Response, name: &str) -> String {
    res.headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
        .to_ascii_lowercase()
}

/// Answers depend on the presented key (`Vary`), and an answer to a key is
/// not for a shared cache (`private`) unless the handler said otherwise: a
/// proxy must not serve it to a request without the key, nor go on serving
/// it to the key once revoked. `X-API-Key` above all, which RFC 9111 does
/// not protect as it does `Authorization`.
async fn shared_caches_keep_answers_to_their_key(app: &TestApp) {
    let created = app.create_key("cached", &["orders:read"]).await;
    let (key, _) = key_and_id(&created);
    for res in [
        app.get("/orders").header("X-API-Key", &key).send().await,
        app.get("/orders").bearer(&key).send().await,
        app.get("/health").header("x-api-key", &key).send().await,
    ] {
        assert_eq!(res.status, 200, "{}", res.text());
        let vary = all_values(&res, "vary");
        assert!(
            vary.contains("authorization") && vary.contains("x-api-key"),
            "vary: {vary:?}"
        );
        assert_eq!(res.header("cache-control"), Some("private"));
    }
    // Without a key: the same Vary, and the handler's caching untouched.
    let res = app.get("/health").send().await;
    assert_eq!(res.status, 200);
    assert!(all_values(&res, "vary").contains("x-api-key"));
    assert_eq!(res.header("cache-control"), None);
    // A handler's own Cache-Control stands (the management routes' no-store).
    let res = app
        .get("/api-keys/self")
        .header("X-API-Key", &key)
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert!(all_values(&res, "vary").contains("x-api-key"));
}

async fn without_middleware(db: &TestDb) {
    let setup = Setup {
        extra: routes,
        middleware: false,
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    matrix(&app).await;
    // Guards verify on their own; an unguarded route ignores a bad key.
    app.get("/orders")
        .bearer("sk_bad")
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(app.get("/health").bearer("sk_bad").send().await.status, 200);
    app.stop().await;
}

both_backends!(guarded_without_middleware, without_middleware);

async fn auth_failures(app: &TestApp) -> usize {
    let page = app
        .keys
        .events(&scopekey::ListEvents {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .expect("events");
    page.items
        .iter()
        .filter(|e| e.kind == "auth.failed")
        .count()
}

async fn verified_once(db: &TestDb, middleware: bool) {
    let setup = Setup {
        extra: routes,
        middleware,
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    let (key, _) = key_and_id(&app.create_key("me", &["orders:read"]).await);
    let res = app.get("/whoami").bearer(&key).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "me");

    // A refused key is audited once per verification: one event per request
    // although the guard and two extractors all ask.
    for _ in 0..3 {
        app.clock.advance(Duration::seconds(1)); // a fresh auth.failed sampling second
        let before = auth_failures(&app).await;
        let res = app.get("/whoami").bearer(&unknown_key()).send().await;
        res.assert_problem(401, Some(INVALID_TOKEN));
        assert_eq!(
            auth_failures(&app).await,
            before + 1,
            "middleware: {middleware}"
        );
    }
    app.stop().await;
}

async fn verified_once_with_middleware(db: &TestDb) {
    verified_once(db, true).await;
}

async fn verified_once_without_middleware(db: &TestDb) {
    verified_once(db, false).await;
}

both_backends!(
    one_verification_per_request_with_middleware,
    verified_once_with_middleware
);
both_backends!(
    one_verification_per_request_without_middleware,
    verified_once_without_middleware
);

#[test]
fn guarded_handlers_are_listed() {
    let listed: Vec<(String, String)> = scopekey::actix::guarded_handlers()
        .iter()
        .map(|g| (g.handler.to_owned(), g.requirement.to_string()))
        .collect();
    for (handler, requirement) in [
        ("list_orders", "orders:read"),
        ("create_order", "orders:write"),
        ("delete_order", "any(orders:admin, orders:delete)"),
        ("sync_orders", "all(orders:read, orders:write)"),
        (
            "nested",
            "any(orders:admin, all(orders:write, orders:read))",
        ),
    ] {
        assert!(
            listed.contains(&(handler.to_owned(), requirement.to_owned())),
            "{handler} {requirement} not in {listed:?}"
        );
    }
}

/// A scope decided at run time from request data.
#[get("/reports/{resource}")]
async fn report(
    caller: Authenticated,
    resource: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    caller.require(&format!("{resource}:read"))?;
    Ok(HttpResponse::Ok().finish())
}

fn report_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(report);
}

/// `Authenticated::require` with a scope built from the request: a valid
/// one is judged like any other (and named in the challenge); text that is
/// not a scope is refused to every key, `*` included, and not echoed into
/// the challenge.
async fn runtime_scopes(db: &TestDb) {
    let setup = Setup {
        extra: report_routes,
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    let (orders, _) = key_and_id(&app.create_key("orders", &["orders:*"]).await);
    assert_eq!(
        app.get("/reports/orders")
            .bearer(&orders)
            .send()
            .await
            .status,
        200
    );
    app.get("/reports/billing")
        .bearer(&orders)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("billing:read")));
    // `orders x:read` and `orders:a:read`: `orders:*` would have covered
    // them by prefix; a `"` would have broken the challenge's quoting.
    for path in ["/reports/orders%20x", "/reports/orders:a", "/reports/a%22b"] {
        for key in [&orders, &app.admin] {
            app.get(path)
                .bearer(key)
                .send()
                .await
                .assert_problem(403, Some(r#"Bearer error="insufficient_scope""#));
        }
    }
    app.stop().await;
}

both_backends!(scopes_required_at_run_time, runtime_scopes);

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    item: String,
}

/// A guarded handler with a body and a path.
#[post("/orders/{id}/notes")]
#[requires_scope("orders:write")]
async fn add_note(id: web::Path<u32>, order: web::Json<Order>) -> HttpResponse {
    let _ = (id, order);
    HttpResponse::Created().finish()
}

/// The caller as an extractor beside a path, checked at run time.
#[post("/orders/{id}/flags")]
async fn flag_order(
    caller: Authenticated,
    id: web::Path<u32>,
) -> Result<HttpResponse, scopekey::actix::AuthError> {
    caller.require("orders:write")?;
    Ok(HttpResponse::Created().body(id.to_string()))
}

fn note_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(add_note).service(flag_order);
}

/// With the middleware, the key is judged before any extractor: a bad path
/// beside `Authenticated` is still 401 for a key the store must be asked
/// about (without it, actix-web extracts them together; see the crate's
/// docs).
async fn middleware_answers_first(db: &TestDb) {
    let app = TestApp::start_with(
        db,
        Setup {
            extra: note_routes,
            ..Setup::default()
        },
    )
    .await;
    let (writer, _) = key_and_id(&app.create_key("writer", &["orders:write"]).await);
    for path in ["/orders/seven/notes", "/orders/seven/flags"] {
        app.post(path)
            .bearer(&unknown_key())
            .send()
            .await
            .assert_problem(401, Some(INVALID_TOKEN));
        app.post(path)
            .send()
            .await
            .assert_problem(401, Some(NO_KEY));
    }
    let res = app.post("/orders/seven/flags").bearer(&writer).send().await;
    assert_eq!(res.status, 404);
    let res = app.post("/orders/7/flags").bearer(&writer).send().await;
    assert_eq!((res.status, res.text()), (201, "7".to_owned()));
    app.stop().await;
}

both_backends!(
    middleware_answers_before_any_extractor,
    middleware_answers_first
);

/// Without the middleware, a guard that must wait for the store (a key
/// never seen, so a cache miss) still answers before the handler's other
/// extractors: a malformed body or path with a bad or missing key is 401,
/// not 400 or 404; with a good key the extractors judge it as usual.
async fn guard_answers_first(db: &TestDb) {
    let setup = Setup {
        extra: note_routes,
        middleware: false,
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    let (writer, _) = key_and_id(&app.create_key("writer", &["orders:write"]).await);
    let post = |path: &str, key: Option<&str>, body: &'static [u8]| {
        let mut req = app
            .post(path)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(key) = key {
            req = req.bearer(key);
        }
        req.send()
    };
    for (path, body) in [
        ("/orders/7/notes", &b"{not json"[..]),
        ("/orders/seven/notes", &b"{\"item\": \"pen\"}"[..]),
    ] {
        post(path, Some(&unknown_key()), body)
            .await
            .assert_problem(401, Some(INVALID_TOKEN));
        post(path, None, body)
            .await
            .assert_problem(401, Some(NO_KEY));
    }
    assert_eq!(
        post("/orders/7/notes", Some(&writer), b"{not json")
            .await
            .status,
        400
    );
    assert_eq!(
        post("/orders/seven/notes", Some(&writer), b"{\"item\": \"pen\"}")
            .await
            .status,
        404
    );
    assert_eq!(
        post("/orders/7/notes", Some(&writer), b"{\"item\": \"pen\"}")
            .await
            .status,
        201
    );
    app.stop().await;
}

both_backends!(guard_answers_before_other_extractors, guard_answers_first);
