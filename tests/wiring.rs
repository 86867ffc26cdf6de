//! How an application wires scopekey, and what happens when it does so
//! wrongly: a missing runtime is a logged 500, never a pass; the runtime may
//! be registered plainly or as `web::Data`; custom base path and realm.

mod common;

use actix_web::{App, HttpResponse, test, web};
use common::*;
use scopekey::actix::{ApiKeyAuth, AuthConfig, Authenticated, MaybeAuthenticated};
use scopekey::{Actor, NewKey, ScopeKey};
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;

async fn whoami(caller: Authenticated) -> HttpResponse {
    HttpResponse::Ok().body(caller.name.to_string())
}

async fn maybe(caller: MaybeAuthenticated) -> HttpResponse {
    HttpResponse::Ok().body(
        caller
            .0
            .map_or("anonymous".to_owned(), |p| p.name.to_string()),
    )
}

async fn public() -> HttpResponse {
    HttpResponse::Ok().body("public")
}

#[actix_web::test]
async fn a_missing_runtime_is_a_500_never_a_pass() {
    // Without the middleware: the extractor refuses.
    let app = test::init_service(App::new().route("/whoami", web::get().to(whoami))).await;
    for req in [
        test::TestRequest::get().uri("/whoami"),
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(("Authorization", "Bearer sk_whatever")),
    ] {
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status(), 500);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["status"], 500);
        assert_eq!(body["code"], "internal");
    }

    // With the middleware: every request is refused, public or not.
    let app = test::init_service(
        App::new()
            .wrap(ApiKeyAuth::new())
            .route("/public", web::get().to(public)),
    )
    .await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/public").to_request()).await;
    assert_eq!(res.status(), 500);
}

async fn runtime_as_web_data(db: &TestDb) {
    let keys = ScopeKey::builder_arc(db.store.clone()).build();
    let created = keys
        .create(NewKey::new("data", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .app_data(AuthConfig::new().realm("shop \"front\""))
            .route("/whoami", web::get().to(whoami))
            .route("/maybe", web::get().to(maybe)),
    )
    .await;
    let bearer = format!("Bearer {}", created.plaintext.expose_secret());
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(("Authorization", bearer.as_str()));
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "data");

    // The realm is configurable, and sanitized for the header.
    let res = test::call_service(&app, test::TestRequest::get().uri("/whoami").to_request()).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        r#"Bearer realm="shop front""#
    );

    // MaybeAuthenticated: absent is None, but a bad key is still refused.
    let res = test::call_service(&app, test::TestRequest::get().uri("/maybe").to_request()).await;
    assert_eq!(test::read_body(res).await, "anonymous");
    let req = test::TestRequest::get()
        .uri("/maybe")
        .insert_header(("Authorization", "Bearer sk_bad"));
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        r#"Bearer error="invalid_token""#
    );
}

both_backends!(
    the_runtime_may_be_registered_as_web_data,
    runtime_as_web_data
);

async fn custom_base_path(db: &TestDb) {
    let setup = Setup {
        base: "admin/keys/",
        realm: Some("backoffice"),
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    let res = app.get("/admin/keys/self").bearer(&app.admin).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = app
        .post("/admin/keys")
        .bearer(&app.admin)
        .json(&serde_json::json!({ "name": "x", "scopes": ["orders:read"] }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (_, id) = key_and_id(&res.json());
    let res = app
        .get(&format!("/admin/keys/{id}/events"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&app.admin)
            .send()
            .await
            .status,
        404
    );
    app.get("/admin/keys/self")
        .send()
        .await
        .assert_problem(401, Some(r#"Bearer realm="backoffice""#));
    // Unmatched paths under the base path: a problem+json 404.
    app.get("/admin/keys/a/b/c")
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(404, None);
    app.stop().await;
}

both_backends!(management_routes_under_a_custom_path, custom_base_path);

async fn echo(body: web::Json<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(body.into_inner())
}

/// `json_config` for an application's own routes: JSON-labelled bodies
/// parse; no or another content type is 415 (actix's rule), bad JSON 400,
/// too large 413, all problem+json, as the management routes answer them.
///
/// One difference is intended: the management routes read a body sent
/// with no content type as JSON, while an application's own `web::Json`
/// routes keep actix's strict default and answer it 415.
#[actix_web::test]
async fn json_config_answers_problems_like_the_management_routes() {
    let app = test::init_service(
        App::new()
            .app_data(scopekey::actix::json_config())
            .route("/echo", web::post().to(echo)),
    )
    .await;
    let post = |content_type: Option<&str>, body: Vec<u8>| {
        let mut req = test::TestRequest::post().uri("/echo").set_payload(body);
        if let Some(ct) = content_type {
            req = req.insert_header(("Content-Type", ct));
        }
        req.to_request()
    };
    let json = br#"{"a": 1}"#.to_vec();
    for (content_type, body, status) in [
        (Some("application/json"), json.clone(), 200),
        // Unlike the management routes, which would read it as JSON.
        (None, json.clone(), 415),
        (Some("text/plain"), json.clone(), 415),
        (Some("application/json"), b"{not json".to_vec(), 400),
        (
            Some("application/json"),
            vec![b' '; scopekey::actix::JSON_LIMIT + 1],
            413,
        ),
    ] {
        let res = test::call_service(&app, post(content_type, body)).await;
        assert_eq!(res.status(), status, "{content_type:?}");
        if status != 200 {
            assert_eq!(
                res.headers().get("content-type").unwrap(),
                "application/problem+json"
            );
        }
    }
}

/// At the root, `/{id}` would capture the application's own paths: an
/// empty base is refused when the routes are made.
#[actix_web::test]
async fn the_management_routes_need_a_base_path() {
    for base in ["", "/", " // "] {
        let refused = std::panic::catch_unwind(|| {
            let _ = scopekey::actix::routes_at(base);
        });
        assert!(refused.is_err(), "{base:?}");
    }
    // A base without its leading `/` and with a trailing one is accepted,
    // and serves under `/admin/keys`.
    let store = scopekey::store::sqlite::SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap();
    let keys = ScopeKey::builder(store).build();
    keys.migrate().await.unwrap();
    let created = keys
        .create(NewKey::new("mounted", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .app_data(keys)
            .configure(scopekey::actix::routes_at("admin/keys/")),
    )
    .await;
    let bearer = format!("Bearer {}", created.plaintext.expose_secret());
    let get = |uri: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("Authorization", bearer.as_str()))
            .to_request()
    };
    let res = test::call_service(&app, get("/admin/keys/self")).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["name"], "mounted", "{body}");
    let res = test::call_service(&app, get("/api-keys/self")).await;
    assert_eq!(res.status(), 404);
}
