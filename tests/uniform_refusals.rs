//! Malformed, unknown, revoked and expired keys get byte-identical answers
//! (OWASP API2: no observable discrepancy); the reason goes to the audit
//! log only.

mod common;

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;
use time::Duration;

async fn identical(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (revoked, revoked_id) = key_and_id(&app.create_key("revoked", &["orders:read"]).await);
    app.post(&format!("/api-keys/{revoked_id}/revoke"))
        .bearer(&app.admin)
        .send()
        .await;
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "expiring", "scopes": ["orders:read"], "expires_in_seconds": 5 }))
        .send()
        .await;
    let (expired, _) = key_and_id(&res.json());
    app.clock.advance(Duration::seconds(6));

    let mut malformed = unknown_key();
    // One check character mistyped: the right shape, the wrong checksum.
    let last = malformed.pop().unwrap();
    malformed.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        ("malformed", malformed),
        ("unknown", unknown_key()),
        ("revoked", revoked),
        ("expired", expired),
    ];
    let mut answers = Vec::new();
    for (why, key) in &cases {
        for path in ["/api-keys/self", "/api-keys"] {
            let res = app.get(path).bearer(key).send().await;
            res.assert_problem(401, Some(INVALID_TOKEN));
            let mut headers: Vec<_> = res
                .headers
                .iter()
                .filter(|(n, _)| n != "date")
                .cloned()
                .collect();
            headers.sort();
            answers.push((why, path, res.status, headers, res.body.clone()));
        }
    }
    let (_, _, status, headers, body) = &answers[0];
    for (why, path, s, h, b) in &answers[1..] {
        assert_eq!(
            (s, h, b),
            (status, headers, body),
            "{why} key on {path} answers differently"
        );
    }

    // The audit log knows why each was refused.
    let events = app
        .get("/api-keys/events?limit=500")
        .bearer(&app.admin)
        .send()
        .await
        .json();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "auth.failed")
        .filter_map(|e| e["details"]["reason"].as_str())
        .collect();
    for why in ["malformed", "unknown", "revoked", "expired"] {
        assert!(reasons.contains(&why), "{why} not audited: {reasons:?}");
    }
    app.stop().await;
}

both_backends!(refusals_are_byte_identical, identical);

/// A credential too long or not UTF-8 is refused before it is read, and
/// still audited, as a malformed key is: `auth.failed`, reason `malformed`,
/// nothing of the header kept.
async fn unreadable_credentials_are_audited(db: &TestDb) {
    let app = TestApp::start(db).await;
    let long = format!("sk_{}", "A".repeat(600));
    app.get("/api-keys/self")
        .header("X-API-Key", long.as_bytes())
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    let events = app.get("/api-keys/events").bearer(&app.admin).send().await;
    let failed: Vec<serde_json::Value> = events.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "auth.failed")
        .cloned()
        .collect();
    assert_eq!(failed.len(), 1, "{}", events.text());
    assert_eq!(failed[0]["details"]["reason"], "malformed");
    assert_eq!(failed[0]["details"]["hint"], serde_json::Value::Null);
    assert!(!events.text().contains("AAAAAAAA"));
    app.stop().await;
}

both_backends!(
    unreadable_credentials_audited,
    unreadable_credentials_are_audited
);
