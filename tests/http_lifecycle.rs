//! The whole story over real HTTP, on SQLite and PostgreSQL: bootstrap,
//! create with scopes, use, be refused, rotate, revoke, expire, and read it
//! all back from the audit log.

mod common;

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;
use time::Duration;
use time::format_description::well_known::Rfc3339;

async fn full_story(db: &TestDb) {
    let app = TestApp::start(db).await;

    // The bootstrapped admin key works, and describes itself without secrets.
    let me = app.get("/api-keys/self").bearer(&app.admin).send().await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.header("content-type"), Some("application/json"));
    let me = me.json();
    assert_eq!(me["name"], "admin");
    assert_eq!(me["scopes"], json!(["*"]));
    assert_eq!(me["status"], "active");
    assert!(
        me.get("key").is_none() && me.get("key_hash").is_none(),
        "{me}"
    );
    for field in [
        "id",
        "name",
        "scopes",
        "metadata",
        "hint",
        "status",
        "created_at",
        "expires_at",
        "revoked_at",
        "rotated_at",
        "parent_key_id",
        "last_used_at",
    ] {
        assert!(me.get(field).is_some(), "key object lacks {field}: {me}");
    }
    // This very request used the key: its last use shows at once, before
    // the batched write.
    let used_at = me["last_used_at"].as_str().expect("last_used_at is set");
    assert!(
        time::OffsetDateTime::parse(used_at, &Rfc3339).is_ok(),
        "{me}"
    );

    // No key: 401 with a bare challenge.
    app.get("/api-keys/self")
        .send()
        .await
        .assert_problem(401, Some(NO_KEY));

    // Create a reader that expires in an hour.
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({
            "name": "billing job",
            "scopes": ["orders:read", "api_keys:read"],
            "expires_in_seconds": 3600,
            "metadata": { "team": "billing" }
        }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let created = res.json();
    let (reader, reader_id) = key_and_id(&created);
    assert_eq!(
        res.header("location"),
        Some(format!("/api-keys/{reader_id}").as_str())
    );
    assert!(reader.starts_with("sk_"));
    assert_eq!(created["scopes"], json!(["orders:read", "api_keys:read"]));
    assert_eq!(created["metadata"], json!({ "team": "billing" }));
    assert_eq!(created["status"], "active");
    assert_eq!(created["parent_key_id"], serde_json::Value::Null);
    assert!(created["expires_at"].is_string());
    let hint = created["hint"].as_str().unwrap();
    assert!(hint.ends_with(&reader[reader.len() - 4..]), "{hint}");

    // The reader reads, but may not write.
    let res = app
        .get(&format!("/api-keys/{reader_id}"))
        .bearer(&reader)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], "billing job");
    assert!(res.json().get("key").is_none());
    app.post("/api-keys")
        .bearer(&reader)
        .json(&json!({ "name": "x", "scopes": ["orders:read"] }))
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:write")));
    app.post(&format!("/api-keys/{reader_id}/revoke"))
        .bearer(&reader)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:revoke")));

    // The reader rotates itself with a minute of grace.
    let res = app
        .post(&format!("/api-keys/{reader_id}/rotate"))
        .bearer(&reader)
        .json(&json!({ "grace_seconds": 60 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let rotated = res.json();
    let (successor, successor_id) = key_and_id(&rotated);
    assert_eq!(
        res.header("location"),
        Some(format!("/api-keys/{successor_id}").as_str())
    );
    assert_eq!(rotated["parent_key_id"], reader_id.as_str());
    assert_eq!(rotated["scopes"], created["scopes"]);
    assert_ne!(successor, reader);

    // Inside the grace both work; after it, only the successor.
    app.clock.advance(Duration::seconds(59));
    for key in [&reader, &successor] {
        assert_eq!(
            app.get("/api-keys/self").bearer(key).send().await.status,
            200
        );
    }
    let old = app
        .get(&format!("/api-keys/{reader_id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(old.json()["status"], "rotating");
    app.clock.advance(Duration::seconds(2));
    app.get("/api-keys/self")
        .bearer(&reader)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&successor)
            .send()
            .await
            .status,
        200
    );

    // Revoke the successor: refused on the very next request.
    let res = app
        .post(&format!("/api-keys/{successor_id}/revoke"))
        .bearer(&app.admin)
        .json(&json!({ "reason": "job retired" }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["status"], "revoked");
    assert!(res.json()["revoked_at"].is_string());
    app.get("/api-keys/self")
        .bearer(&successor)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));

    // A key past its expiry is refused, judged by the clock at request time,
    // even while its cached verification is still fresh.
    let short = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "short", "scopes": ["orders:read"], "expires_in_seconds": 10 }))
        .send()
        .await;
    assert_eq!(short.status, 201);
    let (short, short_id) = key_and_id(&short.json());
    assert_eq!(
        app.get("/api-keys/self").bearer(&short).send().await.status,
        200
    );
    // Half a second before expiry: served, and cached (the entry from the
    // first request has gone stale, so this one read the store).
    app.clock.advance(Duration::milliseconds(9500));
    assert_eq!(
        app.get("/api-keys/self").bearer(&short).send().await.status,
        200
    );
    // At expiry, the cached entry half a second old: refused all the same.
    app.clock.advance(Duration::milliseconds(500));
    app.get("/api-keys/self")
        .bearer(&short)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    let res = app
        .get(&format!("/api-keys/{short_id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.json()["status"], "expired");

    // The audit log tells the story of the reader's lineage.
    let res = app
        .get(&format!("/api-keys/{reader_id}/events"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let types: Vec<String> = res.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.contains(&"key.created".into()), "{types:?}");
    assert!(types.contains(&"key.rotated".into()), "{types:?}");
    let res = app
        .get(&format!("/api-keys/{successor_id}/events"))
        .bearer(&app.admin)
        .send()
        .await;
    let revoked: Vec<_> = res.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "key.revoked")
        .cloned()
        .collect();
    assert_eq!(revoked.len(), 1, "{}", res.text());
    let admin_id = me["id"].as_str().unwrap();
    assert_eq!(revoked[0]["actor_key_id"], admin_id);
    assert_eq!(revoked[0]["details"]["reason"], "job retired");
    for field in ["id", "key_id", "type", "actor_key_id", "at", "details"] {
        assert!(revoked[0].get(field).is_some(), "event lacks {field}");
    }

    // Refused keys show up as auth.failed in the whole log.
    let res = app
        .get("/api-keys/events?limit=500")
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 200);
    let all = res.json();
    let mut failed: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "auth.failed")
        .map(|e| {
            (
                e["key_id"].as_str().unwrap_or("none"),
                e["details"]["reason"].as_str().unwrap_or("none"),
            )
        })
        .collect();
    failed.sort_unstable();
    let mut expected = vec![
        (reader_id.as_str(), "expired"),
        (successor_id.as_str(), "revoked"),
        (short_id.as_str(), "expired"),
    ];
    expected.sort_unstable();
    assert_eq!(failed, expected, "each refusal audited, with its reason");

    app.stop().await;
}

both_backends!(full_story_over_http, full_story);

async fn x_api_key_and_any_case_scheme(db: &TestDb) {
    let app = TestApp::start(db).await;
    for (name, value) in [
        ("X-API-Key", app.admin.clone()),
        ("x-api-key", app.admin.clone()),
        ("Authorization", format!("bearer {}", app.admin)),
        ("Authorization", format!("BEARER {}", app.admin)),
        ("authorization", format!("Bearer {}", app.admin)),
    ] {
        let res = app.get("/api-keys/self").header(name, &value).send().await;
        assert_eq!(res.status, 200, "{name}: {}", res.text());
    }
    app.stop().await;
}

both_backends!(
    x_api_key_and_any_case_scheme_work,
    x_api_key_and_any_case_scheme
);

/// `Location` on the two 201s names the new key under the base the routes
/// are mounted at, and that path serves it.
async fn location_under_another_base(db: &TestDb) {
    let app = TestApp::start_with(
        db,
        Setup {
            base: "/v1/admin/keys/",
            ..Setup::default()
        },
    )
    .await;
    let res = app
        .post("/v1/admin/keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "located", "scopes": ["orders:read"] }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (_, id) = key_and_id(&res.json());
    assert_eq!(
        res.header("location"),
        Some(format!("/v1/admin/keys/{id}").as_str())
    );
    let res = app
        .post(&format!("/v1/admin/keys/{id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (_, successor) = key_and_id(&res.json());
    let location = res.header("location").expect("a Location").to_owned();
    assert_eq!(location, format!("/v1/admin/keys/{successor}"));
    let res = app.get(&location).bearer(&app.admin).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["parent_key_id"], id.as_str());
    app.stop().await;
}

both_backends!(location_names_the_new_key, location_under_another_base);
