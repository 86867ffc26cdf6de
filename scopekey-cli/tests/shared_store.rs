//! The CLI beside a running service on the same store: a key it revokes (or
//! rotates without grace) is refused by the service at once where the store pushes changes
//! (PostgreSQL), and otherwise once the service's cache lifetime (one
//! second, on its clock) has passed; and both write at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use scopekey_runtime::testing::{Backend, TestDb};
use scopekey_runtime::{Actor, ManualClock, NewKey, ScopeKey, VerifyError};

/// How long the change feed may take to reach the service: generous, for a
/// loaded machine. The service's clock does not move meanwhile, so its
/// cache never lapses: only the feed can explain a refusal.
const FEED_SLACK: Duration = Duration::from_secs(20);

/// What the CLI does to a key the service has cached, and why the service
/// must then refuse it.
#[derive(Clone, Copy)]
enum Change {
    /// `keys revoke`: refused as revoked.
    Revoke,
    /// `keys rotate --grace 0`: the old key refused as expired, its
    /// successor accepted.
    RotateWithoutGrace,
}

async fn revoked_by_the_cli_refused_within_the_cache_lifetime(db: &TestDb) {
    changed_by_the_cli(db, Change::Revoke).await;
}

async fn rotated_by_the_cli_refused_within_the_cache_lifetime(db: &TestDb) {
    changed_by_the_cli(db, Change::RotateWithoutGrace).await;
}

async fn changed_by_the_cli(db: &TestDb, change: Change) {
    // The "service": a runtime in this process with the default one-second
    // verification cache, on a manual clock, listening for changes where
    // the store has a feed.
    // Ten minutes ahead of the CLI's clock (the system's): a rotation
    // without grace, which ends the old key at the CLI's now, has then
    // already ended it on the service's clock, whatever the CLI took.
    let clock = ManualClock::new(time::OffsetDateTime::now_utc() + time::Duration::minutes(10));
    let service = ScopeKey::builder_arc(db.store.clone())
        .clock(clock.clone())
        .build();
    let listener = service.spawn_change_listener().await.expect("listener");

    let created = create(&db.url, "in use", &["orders:read"]);
    let plaintext = str_of(&created, "key").to_owned();
    let id = str_of(&created, "id").to_owned();
    // Verified, and so cached by the service.
    service.verify(&plaintext).await.expect("live key verifies");
    service.verify(&plaintext).await.expect("served from cache");

    let successor = match change {
        Change::Revoke => {
            let run = scopekey(
                &db.url,
                &["keys", "revoke", &id, "--reason", "incident", "--json"],
            );
            assert_eq!(run.json()["status"], "revoked");
            None
        }
        Change::RotateWithoutGrace => {
            let run = scopekey(&db.url, &["keys", "rotate", &id, "--grace", "0", "--json"]);
            let successor = run.json();
            assert_eq!(successor["parent_key_id"], id.as_str());
            Some(str_of(&successor, "key").to_owned())
        }
    };
    let refused = |outcome: &Result<_, VerifyError>| match change {
        Change::Revoke => matches!(outcome, Err(VerifyError::Revoked)),
        Change::RotateWithoutGrace => matches!(outcome, Err(VerifyError::Expired)),
    };

    match db.backend() {
        Backend::Postgres => {
            // The feed drops the entry: refused with the clock standing still.
            assert!(listener.is_some(), "PostgreSQL has a feed");
            let deadline = Instant::now() + FEED_SLACK;
            loop {
                match service.verify(&plaintext).await {
                    outcome if refused(&outcome) => break,
                    Ok(_) => assert!(
                        Instant::now() < deadline,
                        "still accepted {FEED_SLACK:?} after the CLI changed it"
                    ),
                    Err(other) => panic!("refused for the wrong reason: {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Backend::Sqlite => {
            // No feed: the entry, made before the CLI ran, is served until
            // its lifetime ends on the service's clock.
            assert!(listener.is_none(), "SQLite has no feed");
            service
                .verify(&plaintext)
                .await
                .expect("served from cache until its lifetime ends");
        }
    }
    // Once the cache lifetime has passed, refused on either store, and it
    // stays refused.
    clock.advance(time::Duration::seconds(1));
    for _ in 0..2 {
        assert!(refused(&service.verify(&plaintext).await));
    }
    if let Some(successor) = successor {
        service
            .verify(&successor)
            .await
            .expect("the successor works");
    }
    if let Some(task) = listener {
        task.abort();
    }
}

scopekey_runtime::both_backends!(
    revocation_reaches_a_running_service,
    revoked_by_the_cli_refused_within_the_cache_lifetime
);

scopekey_runtime::both_backends!(
    rotation_reaches_a_running_service,
    rotated_by_the_cli_refused_within_the_cache_lifetime
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
