//! `GET /api-keys/self` for a key revoked (or rotated out) through another
//! node, while this node's verification cache still holds it: the uniform
//! 401 `invalid_token`, never a 200 showing the key as `revoked` or
//! `expired` to its holder. The same for every other management route such
//! a key calls: none shows it anything (its own record, its events, "already
//! revoked" when it revokes itself) or acts for it.

mod common;

use actix_web::test;
use common::*;
use scopekey_runtime::{Actor, KeyFormat, ManualClock, NewKey, RotateOptions};
use time::Duration;

async fn refused_once_gone_elsewhere(db: &Db) {
    let clock = ManualClock::starting_now();
    let here = db.node(&clock).await;
    let elsewhere = db.node(&clock).await;
    let app = management_app!(here);
    let self_with = |key: &str, how: Presenting| {
        how.present(test::TestRequest::get().uri("/api-keys/self"), key)
            .to_request()
    };
    let unknown = KeyFormat::default().generate().unwrap();
    let refusal = Answer::read(
        test::call_service(&app, self_with(unknown.expose_secret(), Presenting::Bearer)).await,
    )
    .await;
    refusal.assert_invalid_token();

    let revoked = here
        .create(NewKey::new("revoked", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let rotated = here
        .create(NewKey::new("rotated", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    for created in [&revoked, &rotated] {
        // Shown while valid, and now cached here for the hour.
        let res = Answer::read(
            test::call_service(
                &app,
                self_with(created.plaintext.expose_secret(), Presenting::Bearer),
            )
            .await,
        )
        .await;
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(res.json()["status"], "active");
    }
    elsewhere
        .revoke(revoked.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();
    let grace_zero = RotateOptions {
        grace: Some(Duration::ZERO),
        ..RotateOptions::default()
    };
    elsewhere
        .rotate(rotated.key.id, grace_zero, Actor::System)
        .await
        .unwrap();
    // Now `revoked` and `expired` in the store; still cached here.
    for created in [&revoked, &rotated] {
        let key = created.plaintext.expose_secret();
        assert!(
            here.verify_cached(key).is_some(),
            "the test needs it cached"
        );
        for how in Presenting::BOTH {
            let res = Answer::read(test::call_service(&app, self_with(key, how)).await).await;
            assert_eq!(res, refusal, "{} in {how:?}", created.key.name);
        }
    }
}

both_backends!(self_of_a_key_gone_elsewhere, refused_once_gone_elsewhere);

/// Each management route, called with a key revoked through another node
/// but still cached here (a fresh key for each: the first refusal drops the
/// cache entry), answers the uniform 401, and changes nothing.
async fn every_route_refuses_once_gone_elsewhere(db: &Db) {
    let clock = ManualClock::starting_now();
    let here = db.node(&clock).await;
    let elsewhere = db.node(&clock).await;
    let app = management_app!(here);
    let other = here
        .create(NewKey::new("other", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    // Rotating these would be a 404 and a 409 for a valid caller: nothing
    // of them is told to this one.
    let gone = uuid::Uuid::now_v7();
    let revoked = here
        .create(NewKey::new("revoked", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    here.revoke(revoked.key.id, None, Actor::System)
        .await
        .unwrap();
    let routes = [
        ("GET", "/api-keys".to_owned(), None),
        ("GET", "/api-keys/{own}".to_owned(), None),
        ("GET", format!("/api-keys/{}", other.key.id), None),
        ("GET", "/api-keys/{own}/events".to_owned(), None),
        ("GET", "/api-keys/events".to_owned(), None),
        ("POST", "/api-keys/{own}/revoke".to_owned(), Some("{}")),
        (
            "POST",
            format!("/api-keys/{}/revoke", other.key.id),
            Some("{}"),
        ),
        ("POST", "/api-keys/{own}/rotate".to_owned(), Some("{}")),
        (
            "POST",
            format!("/api-keys/{}/rotate", other.key.id),
            Some("{}"),
        ),
        ("POST", format!("/api-keys/{gone}/rotate"), Some("{}")),
        (
            "POST",
            format!("/api-keys/{}/rotate", revoked.key.id),
            Some("{}"),
        ),
        (
            "POST",
            "/api-keys".to_owned(),
            Some(r#"{"name":"minted","scopes":["orders:read"]}"#),
        ),
    ];
    let scopes = [
        "api_keys:read",
        "api_keys:write",
        "api_keys:revoke",
        "orders:read",
    ];
    for (method, path, body) in routes {
        let caller = here
            .create(NewKey::new("caller", scopes), Actor::System)
            .await
            .unwrap();
        let key = caller.plaintext.expose_secret();
        assert!(here.verify(key).await.is_ok());
        elsewhere
            .revoke(caller.key.id, Some("leaked"), Actor::System)
            .await
            .unwrap();
        assert!(
            here.verify_cached(key).is_some(),
            "the test needs it cached"
        );
        let path = path.replace("{own}", &caller.key.id.to_string());
        let req = match method {
            "GET" => test::TestRequest::get(),
            _ => test::TestRequest::post(),
        }
        .uri(&path);
        let req = match body {
            Some(body) => req
                .insert_header(("content-type", "application/json"))
                .set_payload(body),
            None => req,
        };
        let res = Answer::read(
            test::call_service(&app, Presenting::Bearer.present(req, key).to_request()).await,
        )
        .await;
        res.assert_invalid_token();
        assert!(
            !String::from_utf8_lossy(&res.body).contains("leaked"),
            "{method} {path}: {res:?}"
        );
    }
    // Nothing was changed for them.
    let listed = here
        .list(&scopekey_runtime::ListKeys::default())
        .await
        .unwrap()
        .items;
    assert!(listed.iter().all(|k| k.name != "minted"), "{listed:?}");
    assert_eq!(
        here.get(other.key.id).await.unwrap().status,
        scopekey_runtime::Status::Active
    );
}

both_backends!(
    every_route_of_a_key_gone_elsewhere,
    every_route_refuses_once_gone_elsewhere
);
