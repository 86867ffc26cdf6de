//! A refusal is answered without waiting for its `auth.failed` event: a
//! key the store knows (revoked, expired; its first refusal in a second is
//! always written) must not take longer to refuse than one it does not
//! (written only within the budget garbage shares), or the timing tells
//! them apart. The audit log read on the same runtime still holds the
//! event. Both stores.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use scopekey_runtime::testing::{PausingStore, TestDb};
use scopekey_runtime::{Actor, ListEvents, ManualClock, NewKey, ScopeKey, both_backends};

async fn refusals_do_not_wait_for_their_event(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let admin = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let created = admin
        .create(NewKey::new("revoked", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    admin
        .revoke(created.key.id, Some("gone"), Actor::System)
        .await
        .unwrap();

    // A runtime whose event writes hang until let go, with a budget of one
    // event a second: the garbage key spends it, the revoked key's first
    // refusal is written all the same.
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    store.hold_events.store(true, Ordering::SeqCst);
    let keys = ScopeKey::builder_arc(Arc::clone(&store) as _)
        .clock(clock.clone())
        .auth_failures_per_second(1)
        // Longer than the waits below: a refusal that waited for its write
        // would not be let go by the timeout first.
        .store_timeout(StdDuration::from_secs(60))
        .build();
    let made = Arc::clone(&store.made);
    let garbage = tokio::time::timeout(StdDuration::from_secs(10), keys.verify("sk_not-a-key"))
        .await
        .expect("the refusal waited for its event's write")
        .unwrap_err();
    assert_eq!(garbage.reason(), "malformed");
    tokio::time::timeout(StdDuration::from_secs(10), made.notified())
        .await
        .expect("the refusal's event was admitted and is being written");
    let refused = tokio::time::timeout(
        StdDuration::from_secs(10),
        keys.verify(created.plaintext.expose_secret()),
    )
    .await
    .expect("the refusal waited for its event's write");
    assert_eq!(refused.unwrap_err().reason(), "revoked");
    tokio::time::timeout(StdDuration::from_secs(10), made.notified())
        .await
        .expect("the refusal's event was admitted and is being written");

    // Listing the log on this runtime waits for both writes, and shows
    // them.
    let request = ListEvents {
        key_id: None,
        limit: None,
        cursor: None,
    };
    let listing = keys.events(&request);
    tokio::pin!(listing);
    // (It cannot end while the writes are held; without the wait it would
    // end at once, the events missing.)
    if tokio::time::timeout(StdDuration::from_millis(200), &mut listing)
        .await
        .is_ok()
    {
        panic!("listed before the refusals' events were written");
    }
    store.release.add_permits(2);
    let page = tokio::time::timeout(StdDuration::from_secs(10), listing)
        .await
        .expect("the listing waited past the writes")
        .unwrap();
    let failures: Vec<_> = page
        .items
        .iter()
        .filter(|e| e.kind == "auth.failed")
        .map(|e| (e.key_id, e.details["reason"].clone()))
        .collect();
    assert_eq!(failures.len(), 2, "{:?}", page.items);
    assert!(failures.contains(&(Some(created.key.id), "revoked".into())));
    assert!(failures.contains(&(None, "malformed".into())));

    // On shutdown, the writes under way are waited for.
    clock.advance(time::Duration::seconds(1));
    tokio::time::timeout(
        StdDuration::from_secs(10),
        keys.verify("sk_not-a-key-either"),
    )
    .await
    .expect("the refusal waited for its event's write")
    .unwrap_err();
    tokio::time::timeout(StdDuration::from_secs(10), made.notified())
        .await
        .expect("the refusal's event was admitted and is being written");
    let flushing = keys.flush_auth_failures();
    tokio::pin!(flushing);
    if tokio::time::timeout(StdDuration::from_millis(200), &mut flushing)
        .await
        .is_ok()
    {
        panic!("the flush ended before the write under way");
    }
    store.release.add_permits(1);
    tokio::time::timeout(StdDuration::from_secs(10), flushing)
        .await
        .expect("the flush ended once the write was done");
}

both_backends!(
    a_refusal_does_not_wait_for_its_audit_event,
    refusals_do_not_wait_for_their_event
);
