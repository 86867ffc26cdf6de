//! Listing keys and the audit log over HTTP: cursor pagination (newest
//! first), status and name filters, limits.

mod common;

use std::collections::HashSet;

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::{Value, json};
use time::Duration;

/// Follows `next_cursor` from `first` to the end; returns every item.
async fn all_pages(app: &TestApp, first: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut url = first.to_owned();
    loop {
        let res = app.get(&url).bearer(&app.admin).send().await;
        assert_eq!(res.status, 200, "{url}: {}", res.text());
        let page = res.json();
        pages += 1;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                url = format!("{}{sep}cursor={cursor}", first);
            }
            None => return (items, pages),
        }
        assert!(pages < 50, "pagination does not end");
    }
}

async fn pagination_and_filters(db: &TestDb) {
    let app = TestApp::start(db).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        app.clock.advance(Duration::seconds(1));
        let (_, id) = key_and_id(&app.create_key(&format!("svc-{i}"), &["orders:read"]).await);
        ids.push(id);
    }
    app.clock.advance(Duration::seconds(1));
    let (_, other) = key_and_id(&app.create_key("batch", &["orders:read"]).await);

    // Pages of two, newest first, each key once; no key ever carries a plaintext.
    let (items, pages) = all_pages(&app, "/api-keys?limit=2").await;
    assert_eq!(items.len(), 7, "5 + batch + admin");
    assert_eq!(pages, 4);
    let listed: Vec<&str> = items.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 7);
    assert_eq!(listed[0], other);
    assert_eq!(
        &listed[1..6],
        ids.iter().rev().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        items
            .iter()
            .all(|k| k.get("key").is_none() && k.get("key_hash").is_none())
    );

    // Name prefix.
    let (svc, _) = all_pages(&app, "/api-keys?name_prefix=svc-&limit=2").await;
    assert_eq!(svc.len(), 5);

    // Statuses: revoke one, rotate one, expire one.
    app.post(&format!("/api-keys/{}/revoke", ids[0]))
        .bearer(&app.admin)
        .send()
        .await;
    let res = app
        .post(&format!("/api-keys/{}/rotate", ids[1]))
        .bearer(&app.admin)
        .json(&json!({ "grace_seconds": 3600 }))
        .send()
        .await;
    assert_eq!(res.status, 201);
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "brief", "scopes": ["orders:read"], "expires_in_seconds": 1 }))
        .send()
        .await;
    let (_, brief) = key_and_id(&res.json());
    app.clock.advance(Duration::seconds(2));

    for (status, expected) in [
        ("revoked", vec![ids[0].as_str()]),
        ("rotating", vec![ids[1].as_str()]),
        ("expired", vec![brief.as_str()]),
    ] {
        let (items, _) = all_pages(&app, &format!("/api-keys?status={status}")).await;
        let got: Vec<&str> = items.iter().map(|k| k["id"].as_str().unwrap()).collect();
        assert_eq!(got, expected, "{status}");
        assert!(items.iter().all(|k| k["status"] == status));
    }
    let (active, _) = all_pages(&app, "/api-keys?status=active&limit=500").await;
    assert!(active.iter().all(|k| k["status"] == "active"));
    // svc-2..4, batch, admin, and the successor of svc-1.
    assert_eq!(active.len(), 6);

    // The status filter holds across cursor pages: pages of two give every
    // active key once, newest first (created_at, then id, descending),
    // none of the others.
    let (paged, pages) = all_pages(&app, "/api-keys?status=active&limit=2").await;
    assert!(pages >= 3, "{pages} pages of at most two");
    assert!(paged.iter().all(|k| k["status"] == "active"), "{paged:?}");
    let paged_ids: Vec<&str> = paged.iter().map(|k| k["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = ids[2..].iter().map(String::as_str).collect();
    expected.push(other.as_str());
    let admin_id = app
        .get("/api-keys/self")
        .bearer(&app.admin)
        .send()
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expected.push(admin_id.as_str());
    let successor = app
        .get("/api-keys?name_prefix=svc-1&status=active")
        .bearer(&app.admin)
        .send()
        .await
        .json();
    let successor = successor["items"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(successor, ids[1]);
    expected.push(successor.as_str());
    let mut sorted_paged = paged_ids.clone();
    sorted_paged.sort();
    expected.sort();
    assert_eq!(sorted_paged, expected, "each active key once");
    let order: Vec<(time::OffsetDateTime, uuid::Uuid)> = paged
        .iter()
        .map(|k| {
            (
                time_of(k, "created_at"),
                k["id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "newest first: {order:?}"
    );
    let single: Vec<&str> = active.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(paged_ids, single, "the same order as one page");

    // Bounds.
    let page = app
        .get("/api-keys?limit=1")
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let page = app
        .get("/api-keys?limit=500")
        .bearer(&app.admin)
        .send()
        .await
        .json();
    assert_eq!(page["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=501", "status=paused", "cursor=abc"] {
        app.get(&format!("/api-keys?{bad}"))
            .bearer(&app.admin)
            .send()
            .await
            .assert_problem(400, None);
    }

    // Listing needs api_keys:read.
    let (reader, _) = key_and_id(&app.create_key("plain", &["orders:read"]).await);
    app.get("/api-keys")
        .bearer(&reader)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:read")));
    app.get("/api-keys/events")
        .bearer(&reader)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:read")));
    app.stop().await;
}

both_backends!(list_pages_and_filters, pagination_and_filters);

/// `name_prefix` matches the start of a name, not any part of it, and
/// case-sensitively.
async fn name_prefix_is_a_prefix(db: &TestDb) {
    let app = TestApp::start(db).await;
    let mut ids = std::collections::HashMap::new();
    for name in ["pre-svc-1", "svc", "svc-a"] {
        let (_, id) = key_and_id(&app.create_key(name, &["orders:read"]).await);
        ids.insert(name, id);
    }
    let names = |prefix: &'static str| {
        let app = &app;
        async move {
            let (items, _) = all_pages(app, &format!("/api-keys?name_prefix={prefix}")).await;
            let mut names: Vec<String> = items
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("svc-").await, ["svc-a"]);
    assert_eq!(names("svc").await, ["svc", "svc-a"]);
    assert_eq!(names("Svc-").await, Vec::<String>::new());
    assert_eq!(names("SVC").await, Vec::<String>::new());
    assert_eq!(names("pre-").await, ["pre-svc-1"]);
    // And the id is the one created under that name.
    let (items, _) = all_pages(&app, "/api-keys?name_prefix=svc-").await;
    assert_eq!(items[0]["id"], ids["svc-a"].as_str());
    app.stop().await;
}

both_backends!(
    name_prefix_matches_the_start_case_sensitively,
    name_prefix_is_a_prefix
);

async fn audit_pages(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (key, id) = key_and_id(&app.create_key("audited", &["orders:read"]).await);
    app.clock.advance(Duration::seconds(1));
    let res = app
        .post(&format!("/api-keys/{id}/rotate"))
        .bearer(&key)
        .json(&json!({ "grace_seconds": 0 }))
        .send()
        .await;
    let (_, successor) = key_and_id(&res.json());
    app.clock.advance(Duration::seconds(1));
    app.post(&format!("/api-keys/{successor}/revoke"))
        .bearer(&app.admin)
        .send()
        .await;
    app.clock.advance(Duration::seconds(1));
    app.get("/api-keys/self").bearer(&key).send().await; // refused: auth.failed

    let (events, pages) = all_pages(&app, "/api-keys/events?limit=1").await;
    assert!(pages >= 5);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in ["key.created", "key.rotated", "key.revoked", "auth.failed"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // Newest first.
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let parsed: Vec<time::OffsetDateTime> = times
        .iter()
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        })
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(types[0], "auth.failed");

    // One key's log: its creation and rotation; the self-rotation names
    // the key itself as the actor.
    let (mine, _) = all_pages(&app, &format!("/api-keys/{id}/events")).await;
    let rotated = mine
        .iter()
        .find(|e| e["type"] == "key.rotated")
        .expect("rotated");
    assert_eq!(rotated["actor_key_id"], id.as_str());
    assert_eq!(rotated["details"]["successor_key_id"], successor.as_str());
    assert!(mine.iter().all(|e| e["key_id"] == id.as_str()));

    // A cursor names its listing: the key list's is refused by the audit
    // log and the other way round, saying so, and nothing is listed.
    let cursor_of = |path: &'static str| {
        let app = &app;
        async move {
            let page = app.get(path).bearer(&app.admin).send().await.json();
            page["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned()
        }
    };
    let keys_cursor = cursor_of("/api-keys?limit=1").await;
    let events_cursor = cursor_of("/api-keys/events?limit=1").await;
    for (path, cursor, says) in [
        (
            "/api-keys/events",
            &keys_cursor,
            "a cursor of the key list, not of the audit log",
        ),
        (
            &*format!("/api-keys/{id}/events"),
            &keys_cursor,
            "a cursor of the key list",
        ),
        (
            "/api-keys",
            &events_cursor,
            "a cursor of the audit log, not of the key list",
        ),
    ] {
        let problem = app
            .get(&format!("{path}?cursor={cursor}"))
            .bearer(&app.admin)
            .send()
            .await
            .assert_problem(400, None);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{path}: {detail}");
    }
    // The whole log's cursor resumes one key's log at the same point (both
    // are ordered by time), and a cursor from before cursors named their
    // listing (no tag) is still read, as the same point.
    let next = |path: String| {
        let app = &app;
        async move {
            let res = app.get(&path).bearer(&app.admin).send().await;
            assert_eq!(res.status, 200, "{path}: {}", res.text());
            res.json()["items"].clone()
        }
    };
    let newest = next("/api-keys/events?limit=1".to_owned()).await[0].clone();
    let resumed = next(format!("/api-keys/{id}/events?cursor={events_cursor}")).await;
    let expected: Vec<&Value> = mine.iter().filter(|e| e["id"] != newest["id"]).collect();
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(
        resumed.as_array().unwrap().iter().collect::<Vec<_>>(),
        expected,
        "one key's log resumed after the whole log's newest event"
    );
    for (path, cursor) in [
        ("/api-keys", &keys_cursor),
        ("/api-keys/events", &events_cursor),
    ] {
        let (tag, untagged) = cursor.split_once('.').unwrap();
        assert!(tag == "k" || tag == "e", "{cursor}");
        assert_eq!(
            next(format!("{path}?limit=1&cursor={untagged}")).await,
            next(format!("{path}?limit=1&cursor={cursor}")).await,
            "{path}"
        );
    }
    app.stop().await;
}

both_backends!(audit_log_pages_newest_first, audit_pages);
