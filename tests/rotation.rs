//! Rotation over HTTP: grace windows judged by the clock, self-rotation,
//! who may rotate what, no escalation, conflicts.

mod common;

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;
use time::Duration;

async fn grace_window(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (old, old_id) = key_and_id(&app.create_key("worker", &["orders:read"]).await);

    let res = app
        .post(&format!("/api-keys/{old_id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": 30 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let body = res.json();
    let (new, new_id) = key_and_id(&body);
    assert_eq!(body["parent_key_id"], old_id.as_str());
    assert_eq!(body["scopes"], json!(["orders:read"]));
    assert_eq!(body["status"], "active");
    assert_ne!(new_id, old_id);

    app.clock.advance(Duration::seconds(29));
    assert_eq!(
        app.get("/api-keys/self").bearer(&old).send().await.status,
        200
    );
    assert_eq!(
        app.get("/api-keys/self").bearer(&new).send().await.status,
        200
    );

    app.clock.advance(Duration::seconds(1));
    app.get("/api-keys/self")
        .bearer(&old)
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(
        app.get("/api-keys/self").bearer(&new).send().await.status,
        200
    );

    let status = app
        .get(&format!("/api-keys/{old_id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(status.json()["status"], "expired");
    assert!(status.json()["rotated_at"].is_string());
    app.stop().await;
}

both_backends!(old_key_works_inside_the_grace_and_not_after, grace_window);

async fn zero_grace_and_default_grace(db: &TestDb) {
    let app = TestApp::start(db).await;
    let self_status = |key: &str| {
        let req = app.get("/api-keys/self").bearer(key);
        async move { req.send().await }
    };
    // Rotated by the admin, and by itself (the rotating request is then
    // what cached it): zero grace ends the old key at once all the same,
    // the clock not moved, though this node holds a fresh cached
    // verification of it.
    for by_itself in [false, true] {
        let (old, id) = key_and_id(&app.create_key("a", &["orders:read"]).await);
        assert_eq!(self_status(&old).await.status, 200);
        assert!(
            app.keys.verify_cached(&old).is_some(),
            "cached on this node"
        );
        let rotator = if by_itself { &old } else { &app.admin };
        let res = app
            .post(&format!("/api-keys/{id}/rotate"))
            .bearer(rotator)
            .json(&json!({ "grace_seconds": 0 }))
            .send()
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let (next, _) = key_and_id(&res.json());
        self_status(&old)
            .await
            .assert_problem(401, Some(INVALID_TOKEN));
        if by_itself {
            app.post(&format!("/api-keys/{id}/rotate"))
                .bearer(&old)
                .send()
                .await
                .assert_problem(401, Some(INVALID_TOKEN));
        }
        assert_eq!(self_status(&next).await.status, 200);
    }

    // An empty body is allowed: the default grace (24 h).
    let (b, b_id) = key_and_id(&app.create_key("b", &["orders:read"]).await);
    let res = app
        .post(&format!("/api-keys/{b_id}/rotate"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    app.clock.advance(Duration::hours(23));
    assert_eq!(
        app.get("/api-keys/self").bearer(&b).send().await.status,
        200
    );
    app.clock.advance(Duration::hours(1));
    assert_eq!(
        app.get("/api-keys/self").bearer(&b).send().await.status,
        401
    );
    app.stop().await;
}

both_backends!(
    zero_grace_ends_at_once_and_empty_body_means_default,
    zero_grace_and_default_grace
);

async fn self_rotation(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (me, me_id) = key_and_id(
        &app.create_key("self", &["orders:read", "orders:write"])
            .await,
    );
    let (_, other_id) = key_and_id(&app.create_key("other", &["orders:read"]).await);

    // A key without api_keys:write may rotate itself, to fewer scopes...
    let res = app
        .post(&format!("/api-keys/{me_id}/rotate"))
        .bearer(&me)
        .json(&json!({ "grace_seconds": 10, "scopes": ["orders:read"] }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (next, next_id) = key_and_id(&res.json());
    assert_eq!(res.json()["scopes"], json!(["orders:read"]));

    // ...but not another key, whatever the body: who may rotate is judged
    // before the body is read.
    app.post(&format!("/api-keys/{other_id}/rotate"))
        .bearer(&next)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:write")));
    for body in [
        json!({ "grace_seconds": -1 }),
        json!({ "unknown": true }),
        json!({ "scopes": ["Not A Scope"] }),
    ] {
        app.post(&format!("/api-keys/{other_id}/rotate"))
            .bearer(&next)
            .json(&body)
            .send()
            .await
            .assert_problem(403, Some(&insufficient("api_keys:write")));
    }
    app.post(&format!("/api-keys/{other_id}/rotate"))
        .bearer(&next)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:write")));

    // A successor never has more than its parent: a key holding only
    // orders:read cannot rotate into orders:write.
    let res = app
        .post(&format!("/api-keys/{next_id}/rotate"))
        .bearer(&next)
        .json(&json!({ "scopes": ["orders:write"] }))
        .send()
        .await;
    res.assert_problem(403, Some(&insufficient("orders:write")));

    // Nor can an admin widen a key through rotation.
    let res = app
        .post(&format!("/api-keys/{next_id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({ "scopes": ["orders:read", "orders:write"] }))
        .send()
        .await;
    // A bad value whoever asks (400, no challenge): the admin holds it all,
    // so no other key would change the answer.
    let body = res.assert_problem(400, None);
    assert_eq!(body["code"], "invalid_request_body", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("orders:write"),
        "{body}"
    );
    // Wildcards are judged as grants: the parent's `orders:*` covers an
    // asked `orders:*`, so only `billing:read` is named.
    let (_, wide_id) = key_and_id(&app.create_key("wide", &["orders:*"]).await);
    let res = app
        .post(&format!("/api-keys/{wide_id}/rotate"))
        .bearer(&app.admin)
        .json(&json!({ "scopes": ["orders:*", "billing:read"] }))
        .send()
        .await;
    let body = res.assert_problem(400, None);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("billing:read") && !detail.contains("orders:*"),
        "{body}"
    );
    // Both wrong: the caller lacks a scope of the key it rotates (and asks
    // for it), and the key lacks another it asks for. The 403 comes first
    // and names only what the caller lacks of the key.
    let (narrow, _) = key_and_id(
        &app.create_key(
            "narrow writer",
            &["api_keys:write", "orders:read", "refunds:write"],
        )
        .await,
    );
    let (_, both_id) = key_and_id(
        &app.create_key("both", &["orders:read", "billing:read"])
            .await,
    );
    let res = app
        .post(&format!("/api-keys/{both_id}/rotate"))
        .bearer(&narrow)
        .json(&json!({ "scopes": ["billing:read", "refunds:write"] }))
        .send()
        .await;
    res.assert_problem(403, Some(&insufficient("billing:read")));
    // A caller holding `api_keys:write` but not a scope it asks for, which
    // the parent has: the challenge names the caller's missing scope.
    let (writer, _) = key_and_id(&app.create_key("writer", &["api_keys:write"]).await);
    let res = app
        .post(&format!("/api-keys/{next_id}/rotate"))
        .bearer(&writer)
        .json(&json!({ "scopes": ["orders:read"] }))
        .send()
        .await;
    res.assert_problem(403, Some(&insufficient("orders:read")));
    app.stop().await;
}

both_backends!(a_key_rotates_itself_but_not_others, self_rotation);

async fn escalation(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (writer, writer_id) = key_and_id(
        &app.create_key("key admin", &["api_keys:write", "orders:read"])
            .await,
    );

    // It may create keys with scopes it holds...
    let res = app
        .post("/api-keys")
        .bearer(&writer)
        .json(&json!({ "name": "sub", "scopes": ["orders:read"] }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());

    // ...not with scopes it lacks, even via a wildcard.
    for (asked, missing) in [
        (json!(["orders:write"]), "orders:write"),
        (json!(["orders:read", "orders:*"]), "orders:*"),
        (json!(["*"]), "*"),
        (json!(["api_keys:read"]), "api_keys:read"),
    ] {
        let res = app
            .post("/api-keys")
            .bearer(&writer)
            .json(&json!({ "name": "escalated", "scopes": asked }))
            .send()
            .await;
        res.assert_problem(403, Some(&insufficient(missing)));
    }

    // Rotating an admin key it may rotate (api_keys:write) would hand it `*`.
    let admin_id = app
        .get("/api-keys/self")
        .bearer(&app.admin)
        .send()
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post(&format!("/api-keys/{admin_id}/rotate"))
        .bearer(&writer)
        .send()
        .await;
    // The challenge names what the successor would hold and the caller
    // does not: the admin key's `*`.
    res.assert_problem(403, Some(&insufficient("*")));
    // Nor by asking the successor for a scope it holds: that would end
    // the admin key (at once, with no grace) and hand its lineage over.
    for body in [
        json!({ "scopes": ["api_keys:write"], "grace_seconds": 0 }),
        json!({ "scopes": ["orders:read"] }),
    ] {
        let res = app
            .post(&format!("/api-keys/{admin_id}/rotate"))
            .bearer(&writer)
            .json(&body)
            .send()
            .await;
        res.assert_problem(403, Some(&insufficient("*")));
        assert!(
            res.text().contains("needs every scope it holds"),
            "{}",
            res.text()
        );
    }
    // The challenge names what the caller lacks of the key it rotates, not
    // the asked scope the key itself lacks (with the key's all, that would
    // be a 400 whoever asked).
    let (_, wider_id) = key_and_id(
        &app.create_key("wider", &["orders:read", "orders:write"])
            .await,
    );
    let res = app
        .post(&format!("/api-keys/{wider_id}/rotate"))
        .bearer(&writer)
        .json(&json!({ "scopes": ["refunds:write"] }))
        .send()
        .await;
    res.assert_problem(403, Some(&insufficient("orders:write")));
    // A key whose every scope it holds, it may rotate, to fewer scopes too.
    let (_, covered_id) = key_and_id(
        &app.create_key("covered", &["orders:read", "api_keys:write"])
            .await,
    );
    let res = app
        .post(&format!("/api-keys/{covered_id}/rotate"))
        .bearer(&writer)
        .json(&json!({ "scopes": ["orders:read"] }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["scopes"], json!(["orders:read"]));
    // The admin key is untouched.
    assert_eq!(
        app.get("/api-keys/self")
            .bearer(&app.admin)
            .send()
            .await
            .status,
        200
    );
    let me = app
        .get(&format!("/api-keys/{writer_id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(me.json()["status"], "active");
    app.stop().await;
}

both_backends!(no_privilege_escalation, escalation);

async fn conflicts_and_bad_rotations(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (_, id) = key_and_id(&app.create_key("c", &["orders:read"]).await);
    let path = format!("/api-keys/{id}/rotate");

    for grace in [json!(-1), json!(400 * 24 * 3600)] {
        app.post(&path)
            .bearer(&app.admin)
            .json(&json!({ "grace_seconds": grace }))
            .send()
            .await
            .assert_problem(400, None);
    }
    app.post(&path)
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": "soon" }))
        .send()
        .await
        .assert_problem(400, None);

    // An empty list of scopes is a bad value, not "the parent's scopes":
    // 400, and nothing is created or marked rotated.
    let before = app.key_count().await;
    let body = app
        .post(&path)
        .bearer(&app.admin)
        .json(&json!({ "scopes": [] }))
        .send()
        .await
        .assert_problem(400, None);
    assert!(
        body["detail"].as_str().unwrap().contains("at least one"),
        "{body}"
    );
    assert_eq!(app.key_count().await, before, "no successor was created");
    let parent = app
        .get(&format!("/api-keys/{id}"))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert_eq!(parent["status"], "active", "{parent}");
    assert_eq!(parent["rotated_at"], serde_json::Value::Null, "{parent}");

    assert_eq!(app.post(&path).bearer(&app.admin).send().await.status, 201);
    let body = app
        .post(&path)
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(409, None);
    assert!(
        body["detail"].as_str().unwrap().contains("successor"),
        "{body}"
    );

    let (_, revoked) = key_and_id(&app.create_key("r", &["orders:read"]).await);
    app.post(&format!("/api-keys/{revoked}/revoke"))
        .bearer(&app.admin)
        .send()
        .await;
    app.post(&format!("/api-keys/{revoked}/rotate"))
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(409, None);

    let unknown = uuid::Uuid::now_v7();
    app.post(&format!("/api-keys/{unknown}/rotate"))
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(404, None);
    app.post("/api-keys/not-a-uuid/rotate")
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(404, None);
    app.stop().await;
}

both_backends!(
    conflicts_and_bad_rotations_are_refused,
    conflicts_and_bad_rotations
);

/// A key whose successor was revoked still has that successor: rotating
/// it again is a conflict (409), inside its grace and after, and the
/// lineage keeps the one successor it had.
async fn revoked_successor(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (_, a_id) = key_and_id(&app.create_key("a", &["orders:read"]).await);
    let path = format!("/api-keys/{a_id}/rotate");
    let res = app
        .post(&path)
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": 3600 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let (_, b_id) = key_and_id(&res.json());
    let res = app
        .post(&format!("/api-keys/{b_id}/revoke"))
        .bearer(&app.admin)
        .json(&json!({ "reason": "mishandled" }))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let before = app.key_count().await;

    let body = app
        .post(&path)
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(409, None);
    assert!(
        body["detail"].as_str().unwrap().contains("successor"),
        "{body}"
    );
    // Past the grace the parent is expired: still a conflict.
    app.clock.advance(Duration::hours(1));
    app.post(&path)
        .bearer(&app.admin)
        .send()
        .await
        .assert_problem(409, None);

    assert_eq!(app.key_count().await, before, "no second successor");
    let listed = app
        .get("/api-keys?limit=500")
        .bearer(&app.admin)
        .send()
        .await
        .json();
    let children: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["parent_key_id"] == a_id.as_str())
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(children, [b_id.as_str()], "the successor stays B");
    app.stop().await;
}

both_backends!(
    a_key_whose_successor_was_revoked_cannot_rotate_again,
    revoked_successor
);

/// Four rotations of one key at once over HTTP: one successor (201), three
/// conflicts (409). Each request's connection is made first, and all four
/// are written together.
async fn concurrent(db: &TestDb) {
    const RACING: usize = 4;
    let app = TestApp::start(db).await;
    let (_, id) = key_and_id(&app.create_key("raced", &["orders:read"]).await);
    let path = format!("/api-keys/{id}/rotate");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(RACING));
    let handles: Vec<_> = (0..RACING)
        .map(|_| {
            let request = app.post(&path).bearer(&app.admin);
            let start = std::sync::Arc::clone(&start);
            tokio::spawn(async move { request.send_after(Some(&start)).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("request task"));
    }
    let won = statuses.iter().filter(|&&s| s == 201).count();
    let lost = statuses.iter().filter(|&&s| s == 409).count();
    assert_eq!((won, lost), (1, RACING - 1), "{statuses:?}");
    assert_eq!(
        app.key_count().await,
        3,
        "the admin key, the rotated key and one successor"
    );
    app.stop().await;
}

both_backends!(concurrent_rotations_produce_one_successor, concurrent);

/// Rotation on a schedule over HTTP: `rotation_period_seconds` sets the
/// expiry and shows in the key object; the self-rotated successor gets a
/// fresh period; bad values are 400 and create nothing.
async fn rotation_policy(db: &TestDb) {
    let clock = scopekey::ManualClock::starting_now();
    let keys = scopekey::ScopeKey::builder_arc(db.store.clone())
        .clock(clock.clone())
        .rotation_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap())
        .build();
    let app = TestApp::serve(keys, clock, Setup::default()).await;
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({
            "name": "quarterly",
            "scopes": ["orders:read"],
            "rotation_period_seconds": 90 * 86_400
        }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let body = res.json();
    let (key, id) = key_and_id(&body);
    assert_eq!(body["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(body["rotation_webhook_url"], serde_json::Value::Null);
    assert_eq!(
        time_of(&body, "expires_at") - time_of(&body, "created_at"),
        Duration::days(90)
    );
    let shown = app
        .get(&format!("/api-keys/{id}"))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert_eq!(shown["rotation_period_seconds"], 90 * 86_400);

    // Near its due date the key rotates itself into a fresh period.
    app.clock.advance(Duration::days(80));
    let res = app
        .post(&format!("/api-keys/{id}/rotate"))
        .bearer(&key)
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let successor = res.json();
    assert_eq!(successor["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(
        time_of(&successor, "expires_at") - time_of(&successor, "created_at"),
        Duration::days(90)
    );

    // An automatic-rotation opt-in is shown on the key.
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({
            "name": "machine",
            "scopes": ["orders:read"],
            "rotation_period_seconds": 30 * 86_400,
            "rotation_webhook_url": "https://holder.example/scopekey"
        }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let machine = res.json();
    assert_eq!(
        machine["rotation_webhook_url"],
        "https://holder.example/scopekey"
    );
    // The holder's signing secret, once: random, the key lineage's own.
    let secret = machine["rotation_webhook_secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{machine}");
    let shown = app
        .get(&format!("/api-keys/{}", machine["id"].as_str().unwrap()))
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert!(shown.get("rotation_webhook_secret").is_none(), "{shown}");
    assert!(
        body.get("rotation_webhook_secret").is_none(),
        "only keys with a rotation webhook get one"
    );

    let before = app.key_count().await;
    for bad in [
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 0 }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": -5 }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": "90d" }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 1e12 }),
        json!({ "name": "x", "scopes": ["orders:read"],
                "rotation_webhook_url": "https://holder.example/" }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 864000,
                "rotation_webhook_url": "javascript:alert(1)" }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 864000,
                "rotation_webhook_url": "http://holder.example/" }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 864000,
                "rotation_webhook_url": "https://192.168.1.1/" }),
        json!({ "name": "x", "scopes": ["orders:read"], "rotation_period_seconds": 3600,
                "rotation_webhook_url": "https://holder.example/" }),
    ] {
        app.post("/api-keys")
            .bearer(&app.admin)
            .json(&bad)
            .send()
            .await
            .assert_problem(400, None);
    }
    let after = app.key_count().await;
    assert_eq!(before, after, "no key was created by a bad request");
    app.stop().await;
}

both_backends!(rotation_policy_over_http, rotation_policy);
