//! Specification behaviours that no other HTTP test pins down, on SQLite
//! and PostgreSQL: reading one key or its events needs `api_keys:read`,
//! expired keys cannot be rotated, absolute expiry times, oversized rotate
//! and revoke bodies, grace capped by the old key's own expiry, and the
//! scope catalogue.

mod common;

use common::*;
use scopekey::actix::JSON_LIMIT;
use scopekey::{Clock, ManualClock, ScopeKey};
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

/// The key object at `/api-keys/{id}`, as the admin sees it.
async fn key_object(app: &TestApp, id: &str) -> Value {
    let res = app
        .get(&format!("/api-keys/{id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{id}: {}", res.text());
    res.json()
}

/// The status `GET /api-keys/self` answers for `key`.
async fn self_status(app: &TestApp, key: &str) -> u16 {
    app.get("/api-keys/self").bearer(key).send().await.status
}

/// Every key in the store (up to 500), as the admin lists them.
async fn all_keys(app: &TestApp) -> Vec<Value> {
    let res = app
        .get("/api-keys?limit=500")
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["items"].as_array().expect("items").clone()
}

/// A JSON body of exactly `JSON_LIMIT + 1` bytes: `valid` padded with
/// trailing whitespace, so that it would be accepted if the limit were not
/// enforced.
fn just_too_large(valid: &Value) -> Vec<u8> {
    let mut body = serde_json::to_vec(valid).expect("json");
    body.resize(JSON_LIMIT + 1, b' ');
    body
}

/// `GET /api-keys/{id}` and `GET /api-keys/{id}/events` refuse a valid key
/// without `api_keys:read` with 403 problem+json and an
/// `insufficient_scope` challenge naming `api_keys:read`, whether it asks
/// about another key or itself, and even when it holds `api_keys:write`;
/// the refusal does not reveal the key asked about.
async fn reading_one_key_needs_read(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (_, target_id) = key_and_id(&app.create_key("secret-target", &["orders:read"]).await);
    let (reader, _) = key_and_id(&app.create_key("reader", &["api_keys:read"]).await);
    let challenge = insufficient("api_keys:read");

    for scopes in [&["orders:read"][..], &["api_keys:write", "orders:read"]] {
        let (caller, caller_id) = key_and_id(&app.create_key("caller", scopes).await);
        assert_eq!(self_status(&app, &caller).await, 200, "the key is valid");
        for id in [&target_id, &caller_id] {
            for path in [format!("/api-keys/{id}"), format!("/api-keys/{id}/events")] {
                let body = app
                    .get(&path)
                    .bearer(&caller)
                    .send()
                    .await
                    .assert_problem(403, Some(&challenge));
                assert!(
                    !body.to_string().contains("secret-target"),
                    "{path}: {body}"
                );
            }
        }
    }

    // The same requests with api_keys:read succeed: the 403 is the scope.
    let res = app
        .get(&format!("/api-keys/{target_id}"))
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], "secret-target");
    let res = app
        .get(&format!("/api-keys/{target_id}/events"))
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["items"].is_array());
    app.stop().await;
}

both_backends!(
    get_one_key_and_its_events_need_read,
    reading_one_key_needs_read
);

/// An expired key cannot be rotated: 409 problem+json, and no successor
/// appears.
async fn expired_rotation(db: &TestDb) {
    let app = TestApp::start(db).await;
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "short", "scopes": ["orders:read"], "expires_in_seconds": 60 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (_, id) = key_and_id(&res.json());

    app.clock.advance(Duration::seconds(61));
    assert_eq!(key_object(&app, &id).await["status"], "expired");
    let before = all_keys(&app).await.len();
    let body = app
        .post(&format!("/api-keys/{id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": 60 }))
        .send()
        .await
        .assert_problem(409, None);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // An empty body (the default grace) is refused the same way.
    app.post(&format!("/api-keys/{id}/rotate"))
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(409, None);
    let keys = all_keys(&app).await;
    assert_eq!(keys.len(), before, "no successor was created");
    assert!(keys.iter().all(|k| k["parent_key_id"] != id.as_str()));
    assert_eq!(key_object(&app, &id).await["rotated_at"], Value::Null);
    app.stop().await;
}

both_backends!(an_expired_key_cannot_be_rotated, expired_rotation);

/// `POST /api-keys` with an absolute `expires_at` (RFC 3339, in the future
/// by the server's clock) answers 201 with that very `expires_at`, stored
/// as given; the key works until then, and afterwards it is `expired` and
/// refused with 401 `invalid_token`.
async fn absolute_expiry(db: &TestDb) {
    let app = TestApp::start(db).await;
    let now = app.clock.now();
    let expires_at = (now + Duration::hours(2))
        .replace_nanosecond(0)
        .expect("zero nanoseconds");
    let text = expires_at.format(&Rfc3339).expect("rfc 3339");

    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "until", "scopes": ["orders:read"], "expires_at": text }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json();
    let (key, id) = key_and_id(&created);
    assert_eq!(time_of(&created, "expires_at"), expires_at, "{created}");
    assert_eq!(created["status"], "active");
    let stored = key_object(&app, &id).await;
    assert_eq!(time_of(&stored, "expires_at"), expires_at, "{stored}");

    app.clock.set(expires_at - Duration::seconds(1));
    assert_eq!(self_status(&app, &key).await, 200);
    assert_eq!(key_object(&app, &id).await["status"], "active");

    app.clock.set(expires_at + Duration::seconds(1));
    assert_eq!(key_object(&app, &id).await["status"], "expired");
    app.get("/api-keys/self")
        .bearer(&key)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    app.stop().await;
}

both_backends!(an_absolute_expiry_is_kept_and_enforced, absolute_expiry);

/// Rotate and revoke bodies over the route limit (`JSON_LIMIT`, by one
/// byte), declared by `Content-Length` or streamed in chunks, answer 413
/// problem+json and change nothing: the key stays active, usable, and
/// without a successor, and no key is added.
async fn oversized_bodies(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (key, id) = key_and_id(&app.create_key("big", &["orders:read"]).await);
    let before = all_keys(&app).await.len();
    let rotate = format!("/api-keys/{id}/rotate");
    let revoke = format!("/api-keys/{id}/revoke");
    let rotate_body = just_too_large(&json!({ "grace_seconds": 60 }));
    let revoke_body = just_too_large(&json!({ "reason": "too big to read" }));
    assert_eq!(rotate_body.len(), JSON_LIMIT + 1);

    for (path, body) in [(&rotate, &rotate_body), (&revoke, &revoke_body)] {
        let request = || {
            app.post(path)
                .bearer(&app.admin)
                .header("Content-Type", "application/json")
                .body(body.clone())
        };
        request().send().await.assert_problem(413, None);
        request().chunked().send().await.assert_problem(413, None);
    }

    let after = all_keys(&app).await;
    assert_eq!(after.len(), before, "no key was created");
    assert!(after.iter().all(|k| k["parent_key_id"] != id.as_str()));
    let object = key_object(&app, &id).await;
    assert_eq!(object["status"], "active", "{object}");
    assert_eq!(object["rotated_at"], Value::Null, "{object}");
    assert_eq!(object["revoked_at"], Value::Null, "{object}");
    assert_eq!(self_status(&app, &key).await, 200);

    // The same requests within the limit do what they say.
    let small = |v: Value| serde_json::to_vec(&v).expect("json");
    let res = app
        .post(&rotate)
        .bearer(&app.admin)
        .header("Content-Type", "application/json")
        .body(small(json!({ "grace_seconds": 60 })))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = app
        .post(&revoke)
        .bearer(&app.admin)
        .header("Content-Type", "application/json")
        .body(small(json!({ "reason": "small enough" })))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["status"], "revoked");
    app.stop().await;
}

both_backends!(
    oversized_rotate_and_revoke_bodies_change_nothing,
    oversized_bodies
);

/// A rotation's grace never outlives the old key: a key expiring in one
/// hour, rotated with 24 h of grace, works until its own expiry and not a
/// moment after, while its successor (a fresh hour from the rotation) keeps
/// working; the old key's `expires_at` is not extended.
async fn grace_capped_by_expiry(db: &TestDb) {
    let app = TestApp::start(db).await;
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "hourly", "scopes": ["orders:read"], "expires_in_seconds": 3600 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json();
    let (old, old_id) = key_and_id(&created);
    let expires_at = time_of(&created, "expires_at");
    assert_eq!(expires_at, app.clock.now() + Duration::hours(1));

    // Rotate ten minutes in, so the successor outlives the old key.
    app.clock.advance(Duration::minutes(10));
    let res = app
        .post(&format!("/api-keys/{old_id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": 24 * 3600 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (new, _) = key_and_id(&res.json());
    let object = key_object(&app, &old_id).await;
    assert_eq!(object["status"], "rotating", "{object}");
    assert_eq!(time_of(&object, "expires_at"), expires_at, "{object}");

    app.clock.set(expires_at - Duration::seconds(1));
    assert_eq!(self_status(&app, &old).await, 200);
    assert_eq!(self_status(&app, &new).await, 200);

    app.clock.set(expires_at);
    app.get("/api-keys/self")
        .bearer(&old)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(self_status(&app, &new).await, 200);

    // Well inside the 24 h the grace asked for: still refused.
    app.clock.advance(Duration::hours(12));
    app.get("/api-keys/self")
        .bearer(&old)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(key_object(&app, &old_id).await["status"], "expired");
    app.stop().await;
}

both_backends!(grace_never_outlives_the_old_key, grace_capped_by_expiry);

/// With a scope catalogue on the runtime, `POST /api-keys` asking for a
/// scope outside it (or a wildcard covering none of it) answers 400
/// problem+json and creates nothing, while catalogued scopes and wildcards
/// covering them are accepted, as are the management routes' own scopes,
/// which belong to every catalogue.
async fn catalogue_enforced(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(db.store.clone())
        .clock(clock.clone())
        .catalogue(["orders:read", "orders:write"])
        .expect("a valid catalogue")
        .build();
    let app = TestApp::serve(keys, clock, Setup::default()).await;
    let before = all_keys(&app).await.len();

    for scopes in [
        json!(["billing:read"]),
        json!(["orders:read", "orders:delete"]),
        json!(["billing:*"]),
    ] {
        let body = app
            .post("/api-keys")
            .bearer(&app.admin)
            .json(&json!({ "name": "outside", "scopes": scopes }))
            .send()
            .await
            .assert_problem(400, None);
        assert!(
            body["detail"].as_str().unwrap().contains("catalogue"),
            "{scopes} -> {body}"
        );
    }
    let keys = all_keys(&app).await;
    assert_eq!(keys.len(), before, "no key was created");
    assert!(keys.iter().all(|k| k["name"] != "outside"));

    for scopes in [
        json!(["orders:read"]),
        json!(["orders:*"]),
        json!(["api_keys:read", "api_keys:write", "api_keys:revoke"]),
        json!(["api_keys:*"]),
    ] {
        let res = app
            .post("/api-keys")
            .bearer(&app.admin)
            .json(&json!({ "name": "inside", "scopes": scopes }))
            .send()
            .await;
        assert_eq!(res.status, 201, "{scopes}: {}", res.text());
    }
    assert_eq!(all_keys(&app).await.len(), before + 4);
    app.stop().await;
}

both_backends!(scopes_outside_the_catalogue_are_refused, catalogue_enforced);
