//! An application with more than one runtime: a `web::scope` registering a
//! runtime of its own (a per-tenant store) beside the application's. A key
//! is judged by the runtime of the route it reaches, never by another
//! store's verification recorded earlier in the request.

mod common;

use actix_web::{App, HttpResponse, test, web};
use common::*;
use scopekey_actix::{ApiKeyAuth, MaybeAuthenticated};
use scopekey_runtime::{Actor, ManualClock, NewKey};

async fn maybe(caller: MaybeAuthenticated) -> HttpResponse {
    HttpResponse::Ok().body(caller.0.map_or("anonymous".into(), |p| p.name.to_string()))
}

async fn public() -> HttpResponse {
    HttpResponse::Ok().body("public")
}

/// The tenant's routes: its own handlers and the management routes.
fn tenant_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/whoami", web::get().to(whoami))
        .route("/maybe", web::get().to(maybe))
        .route("/orders", web::get().to(orders))
        .configure(scopekey_actix::routes_at("/api-keys"));
}

/// `GET path` on `app`, presenting `key` (if any) as a Bearer token.
/// (A macro: the test service's request type has no public name.)
macro_rules! get {
    ($app:expr, $path:expr, $key:expr) => {{
        let mut req = test::TestRequest::get().uri($path);
        if let Some(key) = $key {
            req = Presenting::Bearer.present(req, key);
        }
        Answer::read(test::call_service(&$app, req.to_request()).await).await
    }};
}

async fn judged_by_the_route_runtime(db: &Db) {
    let tenant_db = Db::new(db.backend()).await.expect("a second database");
    let clock = ManualClock::starting_now();
    let app_keys = db.node(&clock).await;
    let tenant_keys = tenant_db.node(&clock).await;
    let app_key = app_keys
        .create(NewKey::new("app-admin", ["*"]), Actor::System)
        .await
        .unwrap();
    let app_key = app_key.plaintext.expose_secret();
    let tenant_key = tenant_keys
        .create(NewKey::new("tenant-admin", ["*"]), Actor::System)
        .await
        .unwrap();
    let tenant_key = tenant_key.plaintext.expose_secret();
    let tenant_paths = [
        "/tenant/whoami",
        "/tenant/maybe",
        "/tenant/orders",
        "/tenant/api-keys",
        "/tenant/api-keys/self",
    ];

    // The middleware around the whole application, verifying with the
    // application's runtime: the tenant's guards and extractors verify
    // again with the tenant's, which does not know the application's key.
    let app = test::init_service(
        App::new()
            .app_data(app_keys.clone())
            .wrap(ApiKeyAuth::new())
            .route("/whoami", web::get().to(whoami))
            .service(
                web::scope("/tenant")
                    .app_data(tenant_keys.clone())
                    .configure(tenant_routes),
            ),
    )
    .await;
    let res = get!(app, "/whoami", Some(app_key));
    assert_eq!((res.status, res.body.as_slice()), (200, &b"app-admin"[..]));
    for path in tenant_paths {
        get!(app, path, Some(app_key)).assert_invalid_token();
    }

    // A middleware on the tenant's scope too: it verifies with the
    // tenant's runtime rather than join the outer one's verification.
    let app = test::init_service(
        App::new()
            .app_data(app_keys.clone())
            .wrap(ApiKeyAuth::new())
            .service(
                web::scope("/tenant")
                    .app_data(tenant_keys.clone())
                    .wrap(ApiKeyAuth::new())
                    .route("/public", web::get().to(public))
                    .configure(tenant_routes),
            ),
    )
    .await;
    for path in tenant_paths.into_iter().chain(["/tenant/public"]) {
        get!(app, path, Some(app_key)).assert_invalid_token();
    }

    // The way to serve tenants' keys: the middleware on each tenant's
    // scope, beside its runtime.
    let app = test::init_service(
        App::new()
            .app_data(app_keys.clone())
            .route("/whoami", web::get().to(whoami))
            .service(
                web::scope("/tenant")
                    .app_data(tenant_keys.clone())
                    .wrap(ApiKeyAuth::new())
                    .configure(tenant_routes),
            ),
    )
    .await;
    let res = get!(app, "/tenant/whoami", Some(tenant_key));
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, &b"tenant-admin"[..])
    );
    let res = get!(app, "/tenant/api-keys/self", Some(tenant_key));
    assert_eq!(res.json()["name"], "tenant-admin");
    let res = get!(app, "/whoami", Some(app_key));
    assert_eq!((res.status, res.body.as_slice()), (200, &b"app-admin"[..]));
    get!(app, "/tenant/whoami", Some(app_key)).assert_invalid_token();
    get!(app, "/whoami", Some(tenant_key)).assert_invalid_token();
}

both_backends!(several_runtimes, judged_by_the_route_runtime);

/// A runtime registered only on a scope is out of the sight of a
/// middleware around the whole application: it fails closed, answering
/// every request 500, public routes without a key included.
#[actix_web::test]
async fn a_middleware_without_a_runtime_refuses_everything() {
    let db = Db::new(Backend::Sqlite).await.expect("sqlite");
    let keys = db.node(&ManualClock::starting_now()).await;
    let key = keys
        .create(NewKey::new("k", ["*"]), Actor::System)
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .wrap(ApiKeyAuth::new())
            .route("/public", web::get().to(public))
            .service(
                web::scope("/tenant")
                    .app_data(keys.clone())
                    .configure(tenant_routes),
            ),
    )
    .await;
    for (path, key) in [
        ("/public", None),
        ("/tenant/maybe", None),
        ("/tenant/whoami", Some(key.plaintext.expose_secret())),
    ] {
        let res = get!(app, path, key);
        assert_eq!(res.status, 500, "{path}: {res:?}");
        assert_eq!(res.json()["code"], "internal");
    }
}
