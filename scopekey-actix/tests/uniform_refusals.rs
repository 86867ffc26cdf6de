//! A key that is not valid (malformed, unknown, revoked, expired) gets the
//! same answer wherever it is refused, byte for byte but the date (OWASP
//! API2: no observable discrepancy): by the middleware before routing, or
//! by a management route after it (a key revoked through another node
//! while this node's cache still held it), through a `#[requires_scope]`
//! handler or a management route, presented as a Bearer token or in
//! `X-API-Key`. Headers included: the middleware's own refusals carry the
//! same `Vary` as everything it passes on.

mod common;

use actix_web::{test, web};
use common::*;
use scopekey_runtime::{Actor, KeyFormat, ManualClock, NewKey};
use serde_json::json;
use time::Duration;

async fn identical(db: &Db) {
    let clock = ManualClock::starting_now();
    let here = db.node(&clock).await;
    let elsewhere = db.node(&clock).await;
    let app = management_app!(here, |cfg: &mut web::ServiceConfig| {
        cfg.route("/orders", web::get().to(orders));
    });
    let create = |name: &'static str| {
        let here = here.clone();
        async move {
            here.create(NewKey::new(name, ["*"]), Actor::System)
                .await
                .unwrap()
        }
    };

    let revoked = create("revoked").await;
    here.revoke(revoked.key.id, None, Actor::System)
        .await
        .unwrap();
    let expired = here
        .create(
            NewKey::new("expired", ["*"]).expires_in(Duration::seconds(5)),
            Actor::System,
        )
        .await
        .unwrap();
    // Verified here (so cached for the hour), then revoked on another
    // node: this node's middleware still passes it, and the management
    // routes refuse it after reading the store.
    let stale = create("stale").await;
    here.verify(stale.plaintext.expose_secret()).await.unwrap();
    elsewhere
        .revoke(stale.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();
    clock.advance(Duration::seconds(6));

    let unknown = KeyFormat::default().generate().unwrap();
    let unknown = unknown.expose_secret().to_owned();
    let mut malformed = unknown.clone();
    // One check character mistyped: the right shape, the wrong checksum.
    let last = malformed.pop().unwrap();
    malformed.push(if last == 'A' { 'B' } else { 'A' });

    let refused_before = [
        ("malformed", malformed.as_str()),
        ("unknown", unknown.as_str()),
        ("revoked", revoked.plaintext.expose_secret()),
        ("expired", expired.plaintext.expose_secret()),
    ];
    let stale = stale.plaintext.expose_secret();
    let body = json!({ "name": "new", "scopes": ["orders:read"] });
    let mut answers = Vec::new();
    for how in Presenting::BOTH {
        let get = |path: &str, key: &str| how.present(test::TestRequest::get().uri(path), key);
        let post = |path: &str, key: &str| {
            how.present(test::TestRequest::post().uri(path), key)
                .set_json(&body)
        };
        for (why, key) in refused_before {
            for (path, req) in [
                ("GET /orders", get("/orders", key)),
                ("GET /api-keys", get("/api-keys", key)),
                ("GET /api-keys/self", get("/api-keys/self", key)),
                ("POST /api-keys", post("/api-keys", key)),
            ] {
                let res = test::call_service(&app, req.to_request()).await;
                answers.push((how, why, path, Answer::read(res).await));
            }
        }
        // Refused by the management route itself (the first time round;
        // `/self` last, as it drops the key's cache entry).
        for (path, req) in [
            ("POST /api-keys", post("/api-keys", stale)),
            ("GET /api-keys/self", get("/api-keys/self", stale)),
        ] {
            let res = test::call_service(&app, req.to_request()).await;
            answers.push((how, "stale", path, Answer::read(res).await));
        }
        // Reading its record at `/self` dropped its cache entry: the key is
        // now refused everywhere on this node, not only where a route
        // reads its record.
        let res = test::call_service(&app, get("/orders", stale).to_request()).await;
        assert_eq!(res.status(), 401, "{how:?}");
    }

    let (_, _, _, first) = &answers[0];
    first.assert_invalid_token();
    for (how, why, path, answer) in &answers[1..] {
        assert_eq!(
            answer, first,
            "a {why} key in {how:?} on {path} answers differently"
        );
    }
    assert_eq!(
        first.header("vary"),
        Some("Authorization, X-API-Key"),
        "{first:?}"
    );
    assert_eq!(first.header("cache-control"), Some("no-store"));

    // The middleware's other refusal says the same about caching.
    let req = test::TestRequest::get()
        .uri("/orders")
        .insert_header(("Authorization", format!("Bearer {unknown}")))
        .insert_header(("X-API-Key", unknown.as_str()));
    let res = Answer::read(test::call_service(&app, req.to_request()).await).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("vary"), Some("Authorization, X-API-Key"));
}

both_backends!(refusals_are_identical_headers_included, identical);
