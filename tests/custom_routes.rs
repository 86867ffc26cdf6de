//! A route of the application's own that mints keys for its caller
//! (`Actor::Key`) answers as the prebuilt routes do, with
//! `ApiError::refused` and `scopekey::actix::created`: 201 with the
//! plaintext once, and for an escalation a 403 whose challenge names the
//! scopes the caller lacks. Both stores.

mod common;

use actix_web::{HttpResponse, post, web};
use common::*;
use scopekey::actix::{ApiError, Authenticated, created, runtime};
use scopekey::{Actor, NewKey};
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;

/// Mints a key with the scopes asked for, for any caller whose key covers
/// them (no `api_keys:write` asked: the service's own rule).
#[post("/tenant-keys")]
async fn mint(
    caller: Authenticated,
    req: actix_web::HttpRequest,
    body: web::Json<Vec<String>>,
) -> Result<HttpResponse, ApiError> {
    let keys = runtime(&req).expect("a runtime");
    let scopes = body.into_inner();
    let made = keys
        .create(NewKey::new("tenant", scopes.clone()), Actor::Key(&caller))
        .await
        .map_err(|e| ApiError::refused(&caller, e, &scopes))?;
    Ok(created(&made))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(mint);
}

async fn minting(db: &TestDb) {
    let app = TestApp::start_with(
        db,
        Setup {
            extra: routes,
            ..Setup::default()
        },
    )
    .await;
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);

    let res = app
        .post("/tenant-keys")
        .bearer(&reader)
        .json(&json!(["orders:read"]))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let made = res.json();
    assert!(
        made["key"].as_str().is_some_and(|k| k.starts_with("sk_")),
        "{made}"
    );
    assert_eq!(made["scopes"], json!(["orders:read"]));

    // Asking for more than the caller holds: 403 naming what it lacks.
    let res = app
        .post("/tenant-keys")
        .bearer(&reader)
        .json(&json!(["orders:read", "orders:write", "orders:write"]))
        .send()
        .await;
    res.assert_problem(403, Some(&insufficient("orders:write")));
    app.stop().await;
}
both_backends!(minting_works, minting);
