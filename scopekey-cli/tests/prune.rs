//! `prune`: old `auth.failed` events deleted, every other event kept; bad
//! usage exits 2 before the store is opened.

mod common;

use common::*;
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{AuditEvent, ListEvents, ScopeKey};
use time::{Duration, OffsetDateTime};

async fn prune_old_failures(db: &TestDb) {
    let url = db.url.as_str();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let event = |kind: &str, age: Duration| AuditEvent {
        id: uuid::Uuid::now_v7(),
        key_id: None,
        kind: kind.to_owned(),
        actor_key_id: None,
        at: now - age,
        details: serde_json::json!({}),
    };
    for age in [Duration::days(200), Duration::days(91), Duration::days(10)] {
        db.store
            .insert_event(&event("auth.failed", age))
            .await
            .unwrap();
        db.store
            .insert_event(&event("key.revoked", age))
            .await
            .unwrap();
    }

    let run = scopekey(
        url,
        &["prune", "--auth-failures-older-than", "90d", "--json"],
    );
    assert_eq!(run.json(), serde_json::json!({ "deleted": 2 }), "{run:#?}");
    let run = scopekey(url, &["prune", "--auth-failures-older-than", "90d"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "deleted 0 auth.failed events older than 90d\n");

    let keys = ScopeKey::builder_arc(db.store.clone()).build();
    let left = keys
        .events(&ListEvents {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let count = |kind: &str| left.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("auth.failed"), 1, "the 10-day-old one is kept");
    assert_eq!(count("key.revoked"), 3, "other events are kept");

    let run = scopekey(url, &["prune", "--auth-failures-older-than", "0"]);
    assert_eq!(
        run.stdout, "deleted 1 auth.failed event older than 0s\n",
        "{run:#?}"
    );
}

scopekey_runtime::both_backends!(prune_deletes_old_auth_failures, prune_old_failures);

#[test]
fn prune_needs_a_valid_age() {
    let db = TempSqlite::new();
    for args in [
        vec!["prune"],
        vec!["prune", "--auth-failures-older-than", "soon"],
        vec!["prune", "--auth-failures-older-than", "-1d"],
    ] {
        let run = scopekey(&db.url, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
    }
    assert!(!db.path.exists(), "the store was not opened");
    // No store at the path: an error, not an empty store.
    scopekey(&db.url, &["prune", "--auth-failures-older-than", "90d"])
        .fails_with(1)
        .says("no key store at");
}
