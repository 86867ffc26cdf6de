//! The management routes under a base path with parameters of its own,
//! `{id}` among them: each route acts on the key its own segment names,
//! never on the base's.

mod common;

use actix_web::{App, test};
use common::*;
use scopekey_actix::ApiKeyAuth;
use scopekey_runtime::{Actor, ManualClock, NewKey, Status};
use serde_json::json;

async fn the_route_segment_wins(db: &Db) {
    let clock = ManualClock::starting_now();
    let keys = db.node(&clock).await;
    let app = test::init_service(
        App::new()
            .app_data(keys.clone())
            .wrap(ApiKeyAuth::new())
            .configure(scopekey_actix::routes_at("/t/{id}/keys"))
            // Even one named as the routes' own segment is not read as it.
            .configure(scopekey_actix::routes_at("/u/{scopekey_key_id}/keys")),
    )
    .await;
    let admin = keys
        .create(NewKey::new("admin", ["*"]), Actor::System)
        .await
        .unwrap();
    let admin = admin.plaintext.expose_secret();
    let create = |name: &'static str| {
        let keys = keys.clone();
        async move {
            keys.create(NewKey::new(name, ["orders:read"]), Actor::System)
                .await
                .unwrap()
                .key
                .id
        }
    };
    // The tenant position names `a`; the route's own segment another key.
    let a = create("a").await;
    let b = create("b").await;
    let c = create("c").await;
    let call = |req: test::TestRequest| {
        let req = Presenting::Bearer.present(req, admin).to_request();
        let app = &app;
        async move { Answer::read(test::call_service(app, req).await).await }
    };

    for tenants in ["t", "u"] {
        let uri = format!("/{tenants}/{a}/keys/{b}");
        let shown = call(test::TestRequest::get().uri(&uri)).await;
        assert_eq!(shown.status, 200, "{shown:?}");
        assert_eq!(shown.json()["id"], b.to_string(), "{uri}");
    }

    let revoked = call(
        test::TestRequest::post()
            .uri(&format!("/t/{a}/keys/{b}/revoke"))
            .set_json(json!({ "reason": "test" })),
    )
    .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.json()["id"], b.to_string());
    assert_eq!(keys.get(b).await.unwrap().status, Status::Revoked);
    assert_eq!(keys.get(a).await.unwrap().status, Status::Active);

    let events = call(test::TestRequest::get().uri(&format!("/t/{a}/keys/{b}/events"))).await;
    assert_eq!(events.status, 200, "{events:?}");
    let items = events.json()["items"].as_array().unwrap().clone();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|e| e["key_id"] == b.to_string()),
        "{events:?}"
    );
    assert!(items.iter().any(|e| e["type"] == "key.revoked"));

    let rotated = call(
        test::TestRequest::post()
            .uri(&format!("/t/{a}/keys/{c}/rotate"))
            .set_json(json!({ "grace_seconds": 0 })),
    )
    .await;
    assert_eq!(rotated.status, 201, "{rotated:?}");
    let successor = rotated.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated.json()["parent_key_id"], c.to_string());
    assert_eq!(
        rotated.header("location"),
        Some(format!("/t/{a}/keys/{successor}").as_str())
    );
    assert_eq!(keys.get(a).await.unwrap().status, Status::Active);
    assert_eq!(keys.get(a).await.unwrap().rotated_at, None);
}

both_backends!(base_path_with_an_id_parameter, the_route_segment_wins);
