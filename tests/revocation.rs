//! Revocation over HTTP: effective on the very next request, idempotent,
//! audited, scope-checked; and the compromise report.

mod common;

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;

async fn revoke_then_refused(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (key, id) = key_and_id(&app.create_key("doomed", &["orders:read"]).await);
    // Verified once, so a cached verification exists when the revocation lands.
    assert_eq!(
        app.get("/api-keys/self").bearer(&key).send().await.status,
        200
    );

    let res = app
        .post(&format!("/api-keys/{id}/revoke"))
        .bearer(&app.admin)
        .json(&json!({ "reason": "laptop stolen" }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["id"], id.as_str());
    assert!(body.get("key").is_none());

    app.get("/api-keys/self")
        .bearer(&key)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));

    // Idempotent: again is 200, and the first reason stays.
    let again = app
        .post(&format!("/api-keys/{id}/revoke"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["revoked_at"], body["revoked_at"]);

    // Audited once, with the actor and reason.
    let events = app
        .get(&format!("/api-keys/{id}/events"))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    let revoked: Vec<_> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "key.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{events}");
    assert_eq!(revoked[0]["details"]["reason"], "laptop stolen");
    assert!(revoked[0]["actor_key_id"].is_string());
    app.stop().await;
}

both_backends!(
    revoked_key_is_refused_on_the_next_request,
    revoke_then_refused
);

async fn who_may_revoke(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (reader, reader_id) = key_and_id(&app.create_key("reader", &["api_keys:read"]).await);
    let (revoker, _) = key_and_id(&app.create_key("revoker", &["api_keys:revoke"]).await);

    app.post(&format!("/api-keys/{reader_id}/revoke"))
        .bearer(&reader)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:revoke")));
    app.post(&format!("/api-keys/{reader_id}/revoke"))
        .send()
        .await
        .assert_problem(401, Some(NO_KEY));
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&reader)
            .send()
            .await
            .status,
        200
    );

    let res = app
        .post(&format!("/api-keys/{reader_id}/revoke"))
        .bearer(&revoker)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&reader)
            .send()
            .await
            .status,
        401
    );

    let unknown = uuid::Uuid::now_v7();
    app.post(&format!("/api-keys/{unknown}/revoke"))
        .bearer(&revoker)
        .send()
        .await
        .assert_problem(404, None);
    app.post(&format!("/api-keys/{unknown}/revoke"))
        .bearer(&revoker)
        .json(&json!({ "reason": "bad\u{0}reason" }))
        .send()
        .await
        .assert_problem(400, None);
    app.stop().await;
}

both_backends!(revocation_needs_api_keys_revoke, who_may_revoke);

async fn compromise_report(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (live, live_id) = key_and_id(&app.create_key("leaked", &["orders:read"]).await);
    let (dead, dead_id) = key_and_id(&app.create_key("old leak", &["orders:read"]).await);
    app.post(&format!("/api-keys/{dead_id}/revoke"))
        .bearer(&app.admin)
        .send()
        .await;
    let unknown = unknown_key();

    let (reader, _) = key_and_id(&app.create_key("reader", &["api_keys:read"]).await);
    app.post("/api-keys/compromised")
        .bearer(&reader)
        .json(&json!({ "keys": [live] }))
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:revoke")));
    assert_eq!(
        app.get("/api-keys/self").bearer(&live).send().await.status,
        200
    );

    // Whoever holds the leaked key rotates it, to outlive the leak.
    let successor = app
        .post(&format!("/api-keys/{live_id}/rotate"))
        .bearer(&live)
        .send()
        .await
        .json();
    let successor_key = successor["key"].as_str().unwrap().to_owned();

    let res = app
        .post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": [live, dead, unknown, "not a key"], "source": "github scanner" }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let results = res.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["revoked", "already_revoked", "unknown", "malformed"]
    );
    assert_eq!(results[0]["key_id"], live_id.as_str());
    // The key it minted is listed, not revoked...
    assert_eq!(
        results[0]["minted"],
        json!([{ "key_id": successor["id"], "status": "active" }])
    );
    assert_eq!(results[1]["minted"], json!([]));
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&successor_key)
            .send()
            .await
            .status,
        200
    );
    for secret in [&live, &dead, &unknown, &successor_key] {
        assert!(!res.text().contains(secret.as_str()), "report echoes a key");
    }

    app.get("/api-keys/self")
        .bearer(&live)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    // ...until asked: the same report, revoking what the leaked key minted.
    let res = app
        .post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": [live], "revoke_minted": true }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json()["results"][0],
        json!({
            "index": 0,
            "status": "already_revoked",
            "key_id": live_id,
            "hint": results[0]["hint"],
            "minted": [{ "key_id": successor["id"], "status": "revoked" }],
            "minted_truncated": false,
        })
    );
    app.get("/api-keys/self")
        .bearer(&successor_key)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    app.post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": [live], "revoke_minted": "yes" }))
        .send()
        .await
        .assert_problem(400, None);
    // The reason is the specification's word alone; the report's source
    // is in the audit event.
    let key = app
        .get(&format!("/api-keys/{live_id}"))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert_eq!(key["revoked_reason"], "compromised", "{key}");
    let events = app
        .get(&format!("/api-keys/{live_id}/events"))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    let compromised = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "key.compromised")
        .unwrap_or_else(|| panic!("no key.compromised event: {events}"));
    assert_eq!(
        compromised["details"],
        json!({ "reason": "compromised", "source": "github scanner" })
    );
    app.stop().await;
}

both_backends!(compromised_keys_are_revoked_and_reported, compromise_report);

/// A key revoked by another process while this one still holds its
/// verification cached mints nothing: the store refuses the change inside
/// its own transaction, and the answer is the 401 of any key that is not
/// valid.
/// A key holding `scopes`, verified (so cached) by `app`, then revoked
/// through another runtime on the same store, unheard by `app`.
async fn cached_here_revoked_elsewhere(
    db: &TestDb,
    app: &TestApp,
    name: &str,
    scopes: &[&str],
) -> String {
    let (key, id) = key_and_id(&app.create_key(name, scopes).await);
    assert_eq!(
        app.get("/api-keys/self").bearer(&key).send().await.status,
        200,
        "verified, so cached here"
    );
    let elsewhere = scopekey::ScopeKey::builder_arc(db.store.clone()).build();
    let id = scopekey::KeyId(id.parse().expect("a key id"));
    elsewhere
        .revoke(id, Some("leaked"), scopekey::Actor::System)
        .await
        .expect("revoked elsewhere");
    key
}

async fn revoked_elsewhere_mints_nothing(db: &TestDb) {
    let app = TestApp::start(db).await;
    let writer =
        cached_here_revoked_elsewhere(db, &app, "writer", &["api_keys:write", "orders:read"]).await;
    let before = app.key_count().await;
    app.post("/api-keys")
        .bearer(&writer)
        .json(&json!({ "name": "minted", "scopes": ["orders:read"] }))
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(app.key_count().await, before);
    app.stop().await;
}

both_backends!(
    a_key_revoked_elsewhere_mints_nothing,
    revoked_elsewhere_mints_nothing
);

/// Nor does it revoke anything, or report keys compromised: the runtime
/// reads the acting key from the store before a revocation, not from this
/// node's cache (a key revoking itself too: see
/// `scopekey-actix/tests/self_after_revocation.rs`).
async fn revoked_elsewhere_revokes_nothing(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (target, target_id) = key_and_id(&app.create_key("target", &["orders:read"]).await);
    let revoker = cached_here_revoked_elsewhere(db, &app, "revoker", &["api_keys:revoke"]).await;

    app.post(&format!("/api-keys/{target_id}/revoke"))
        .bearer(&revoker)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    app.post("/api-keys/compromised")
        .bearer(&revoker)
        .json(&json!({ "keys": [target] }))
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    let me = app.get("/api-keys/self").bearer(&target).send().await;
    assert_eq!(me.status, 200, "the target is still live: {}", me.text());
    app.stop().await;
}

both_backends!(
    a_key_revoked_elsewhere_revokes_nothing,
    revoked_elsewhere_revokes_nothing
);

/// A report that names the reporting key itself revokes it and goes on with
/// the rest of the report.
async fn reporting_oneself(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (reporter, _) = key_and_id(&app.create_key("reporter", &["api_keys:revoke"]).await);
    let (other, _) = key_and_id(&app.create_key("other", &["orders:read"]).await);
    let res = app
        .post("/api-keys/compromised")
        .bearer(&reporter)
        .json(&json!({ "keys": [reporter, other] }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let results = res.json()["results"].clone();
    assert_eq!(results[0]["status"], "revoked", "{results}");
    assert_eq!(results[1]["status"], "revoked", "{results}");
    app.stop().await;
}

both_backends!(a_report_may_name_its_reporter, reporting_oneself);
