//! A revocation or rotation whose caller stops waiting once the store has
//! made it (a client hanging up, a timeout around the call) still reaches
//! this node's cache: the key is refused at the next request, not served
//! from the cache for its lifetime. Both stores.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use scopekey_runtime::testing::{PausingStore, TestDb};
use scopekey_runtime::{Actor, ManualClock, NewKey, RotateOptions, ScopeKey, both_backends};
use time::Duration;

/// A runtime on `db` whose revocations and rotations pause once made, on
/// a clock that stands still (a cached verification never lapses by
/// itself), and its pausing store.
fn runtime(db: &TestDb) -> (ScopeKey, Arc<PausingStore>) {
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    let keys = ScopeKey::builder_arc(Arc::clone(&store) as _)
        .clock(ManualClock::starting_now())
        .cache_ttl(StdDuration::from_secs(3600))
        .build();
    (keys, store)
}

/// Waits, at most 10 s, until `key` is refused for `expected` (a
/// [`reason`](scopekey_runtime::VerifyError::reason)): the
/// invalidation runs in a task of its own once the change is let go.
async fn refused(keys: &ScopeKey, key: &str, expected: &str) {
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        match keys.verify(key).await {
            Err(e) if e.reason() == expected => return,
            Err(e) => panic!("refused for another reason: {e:?}"),
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still served from the cache after the change was made"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn revoke_abandoned(db: &TestDb) {
    let (keys, store) = runtime(db);
    let created = keys
        .create(NewKey::new("abandoned", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let plaintext = created.plaintext.expose_secret();
    keys.verify(plaintext).await.expect("valid, and now cached");

    // The caller gives up once the store has revoked the key.
    let made = Arc::clone(&store.made);
    tokio::select! {
        _ = keys.revoke(created.key.id, Some("gone"), Actor::System) => {
            panic!("the revocation returned while held")
        }
        () = made.notified() => {}
    }
    store.release.add_permits(1);
    refused(&keys, plaintext, "revoked").await;
}

both_backends!(an_abandoned_revocation_reaches_the_cache, revoke_abandoned);

async fn rotate_abandoned(db: &TestDb) {
    let (keys, store) = runtime(db);
    let created = keys
        .create(NewKey::new("abandoned", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let plaintext = created.plaintext.expose_secret();
    keys.verify(plaintext).await.expect("valid, and now cached");

    // A rotation without grace, given up once made: the old key ends now.
    let made = Arc::clone(&store.made);
    let options = RotateOptions {
        grace: Some(Duration::ZERO),
        ..RotateOptions::default()
    };
    tokio::select! {
        _ = keys.rotate(created.key.id, options, Actor::System) => {
            panic!("the rotation returned while held")
        }
        () = made.notified() => {}
    }
    store.release.add_permits(1);
    refused(&keys, plaintext, "expired").await;
}

both_backends!(an_abandoned_rotation_reaches_the_cache, rotate_abandoned);

/// A revocation or rotation the store made but reported as failed (a
/// commit whose acknowledgement was lost on the way): the caller gets the
/// error, and this node's cached verdicts of the key go all the same, so
/// the next request reads the store.
async fn failed_after_commit(db: &TestDb) {
    let (keys, store) = runtime(db);
    store.release.add_permits(100);
    store
        .fail_after_change
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let revoked = keys
        .create(NewKey::new("revoked", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let rotated = keys
        .create(NewKey::new("rotated", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    for k in [&revoked, &rotated] {
        keys.verify(k.plaintext.expose_secret())
            .await
            .expect("valid, and now cached");
    }
    assert!(
        keys.revoke(revoked.key.id, Some("gone"), Actor::System)
            .await
            .is_err()
    );
    let options = RotateOptions {
        grace: Some(Duration::ZERO),
        ..RotateOptions::default()
    };
    assert!(
        keys.rotate(rotated.key.id, options, Actor::System)
            .await
            .is_err()
    );
    let refused = keys.verify(revoked.plaintext.expose_secret()).await;
    assert_eq!(refused.map_err(|e| e.reason()).err(), Some("revoked"));
    let refused = keys.verify(rotated.plaintext.expose_secret()).await;
    assert_eq!(refused.map_err(|e| e.reason()).err(), Some("expired"));
}

both_backends!(
    a_change_reported_failed_after_its_commit_reaches_the_cache,
    failed_after_commit
);
