//! The CLI beside a running service on the same store: a key it revokes is
//! refused by the service within one second, and both write at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{Actor, NewKey, ScopeKey, VerifyError};

async fn revoked_by_the_cli_refused_within_a_second(db: &TestDb) {
    // The "service": a runtime in this process with the default one-second
    // verification cache, listening for changes where the store has a feed.
    let service = ScopeKey::builder_arc(db.store.clone()).build();
    let listener = service.spawn_change_listener().await.expect("listener");

    let created = create(&db.url, "in use", &["orders:read"]);
    let plaintext = str_of(&created, "key").to_owned();
    let id = str_of(&created, "id").to_owned();
    // Verified, and so cached by the service.
    service.verify(&plaintext).await.expect("live key verifies");
    service.verify(&plaintext).await.expect("served from cache");

    let run = scopekey(
        &db.url,
        &["keys", "revoke", &id, "--reason", "incident", "--json"],
    );
    // The cache entry was made before the CLI started, so it lapses at the
    // latest one second after the CLI is done.
    let deadline = Instant::now() + Duration::from_secs(1);
    assert_eq!(run.json()["status"], "revoked");

    loop {
        let asked = Instant::now();
        match service.verify(&plaintext).await {
            Err(VerifyError::Revoked) => break,
            Ok(_) => assert!(
                asked < deadline,
                "still accepted {:?} after the CLI revoked it",
                asked - (deadline - Duration::from_secs(1))
            ),
            Err(other) => panic!("refused for the wrong reason: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And it stays refused.
    assert!(matches!(
        service.verify(&plaintext).await,
        Err(VerifyError::Revoked)
    ));
    if let Some(task) = listener {
        task.abort();
    }
}

scopekey_runtime::both_backends!(
    revocation_reaches_a_running_service,
    revoked_by_the_cli_refused_within_a_second
);

async fn writes_beside_a_busy_service(db: &TestDb) {
    // The service creates keys while the CLI does: the busy timeout (SQLite)
    // or the server (PostgreSQL) serialises the writers; nothing fails.
    let service = ScopeKey::builder_arc(db.store.clone()).build();
    let writer = tokio::spawn({
        let service = service.clone();
        async move {
            for i in 0..30 {
                service
                    .create(
                        NewKey::new(format!("service {i}"), ["orders:read"]),
                        Actor::System,
                    )
                    .await
                    .expect("the service's write succeeds");
            }
        }
    });
    let url = db.url.clone();
    let cli = tokio::task::spawn_blocking(move || {
        for i in 0..5 {
            let key = create(&url, &format!("cli {i}"), &["orders:read"]);
            scopekey(&url, &["keys", "revoke", str_of(&key, "id"), "--json"]).json();
            scopekey(&url, &["keys", "list", "--json"]).json();
        }
    });
    writer.await.expect("service writer");
    cli.await.expect("cli writer");

    let all = scopekey(&db.url, &["keys", "list", "--all", "--json"]).json();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(35));
    let revoked = scopekey(&db.url, &["keys", "list", "--status", "revoked", "--json"]).json();
    assert_eq!(revoked["items"].as_array().map(Vec::len), Some(5));
}

scopekey_runtime::both_backends!(concurrent_writers, writes_beside_a_busy_service);
