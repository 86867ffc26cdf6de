//! A compromise report with `revoke_minted` revokes each minted key before
//! it reads what that key minted, so a key minted meanwhile (by a thief
//! still holding the minted key) is refused by the store rather than missed
//! by the walk. Both stores.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use scopekey_runtime::key::KeyHash;
use scopekey_runtime::store::{
    ChangeFeed, EventQuery, KeyQuery, RevokeOutcome, RotateOutcome, Rotation, Store,
};
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{
    Actor, AuditEvent, CompromiseOptions, CreatedKey, Error, KeyId, KeyRecord, ListKeys,
    ManualClock, NewKey, Principal, RotateOptions, ScopeKey, Status, StoreError, VerifyError,
    VerifyRecord, both_backends,
};
use time::OffsetDateTime;

/// A store that, when asked what `minter` minted, first has `minter` mint
/// one more key (through a runtime on the inner store, as a request racing
/// the report would), recording how that went.
struct Racing {
    inner: Arc<dyn Store>,
    race: Mutex<Option<(KeyId, ScopeKey, Principal)>>,
    raced: Mutex<Option<Result<CreatedKey, Error>>>,
}

#[async_trait]
impl Store for Racing {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn insert_key(&self, key: &KeyRecord, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.insert_key(key, event).await
    }
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.find_by_hash(hash).await
    }
    async fn find_for_verification(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<VerifyRecord>, StoreError> {
        self.inner.find_for_verification(hash).await
    }
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn successor(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.successor(id).await
    }
    async fn list(&self, query: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(query).await
    }
    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.is_empty().await
    }
    async fn insert_first_key(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.inner.insert_first_key(key, event).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        self.inner.revoke(id, at, reason, event).await
    }
    async fn insert_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.insert_event(event).await
    }
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_events(query).await
    }
    async fn minted_by(&self, actor: KeyId) -> Result<Vec<KeyId>, StoreError> {
        let race = {
            let mut race = self.race.lock().unwrap();
            if race.as_ref().is_some_and(|(minter, ..)| *minter == actor) {
                race.take()
            } else {
                None
            }
        };
        if let Some((_, keys, principal)) = race {
            let made = keys
                .create(NewKey::new("raced", ["a:b"]), Actor::Key(&principal))
                .await;
            *self.raced.lock().unwrap() = Some(made);
        }
        self.inner.minted_by(actor).await
    }
    async fn touch_last_used(&self, batch: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.touch_last_used(batch).await
    }
    async fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        self.inner.changes().await
    }
}

/// A key holding `api_keys:write` (and `a:b`) made by `actor`, and the
/// principal it verifies as.
async fn writer(keys: &ScopeKey, name: &str, actor: Actor<'_>) -> (CreatedKey, Principal) {
    let created = keys
        .create(NewKey::new(name, ["api_keys:write", "a:b"]), actor)
        .await
        .unwrap();
    let principal = keys
        .verify(created.plaintext.expose_secret())
        .await
        .unwrap();
    (created, principal)
}

/// Reports `leaked` as compromised: the keys it minted, with their status.
async fn report(
    keys: &ScopeKey,
    leaked: &CreatedKey,
    revoke_minted: bool,
) -> Result<Vec<(KeyId, Status)>, Error> {
    let options = CompromiseOptions {
        revoke_minted,
        ..CompromiseOptions::default()
    };
    let results = keys
        .report_compromised_with(
            &[leaked.plaintext.expose_secret().to_owned()],
            options,
            Actor::System,
        )
        .await?;
    Ok(results[0]
        .minted
        .iter()
        .map(|m| (m.key_id, m.status))
        .collect())
}

async fn a_key_minted_during_the_walk_is_refused(db: &TestDb) {
    let store = Arc::new(Racing {
        inner: Arc::clone(&db.store),
        race: Mutex::new(None),
        raced: Mutex::new(None),
    });
    let keys = ScopeKey::builder_arc(store.clone()).build();
    let (leaked, by_leaked) = writer(&keys, "leaked", Actor::System).await;
    // The leaked key minted `child`, which the thief also holds.
    let (child, by_child) = writer(&keys, "child", Actor::Key(&by_leaked)).await;
    let side = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    *store.race.lock().unwrap() = Some((child.key.id, side, by_child));

    let minted = report(&keys, &leaked, true).await.unwrap();
    assert_eq!(minted, [(child.key.id, Status::Revoked)]);

    // `child` was revoked before its mints were read: the store refused the
    // one made meanwhile.
    let raced = store.raced.lock().unwrap().take().expect("the race ran");
    assert!(matches!(raced, Err(Error::ActorRevoked)), "{raced:?}");
    let live = keys
        .list(&ListKeys {
            status: Some(Status::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(live.items.is_empty(), "{:?}", live.items);
}
both_backends!(
    a_key_minted_during_the_walk_is_refused_works,
    a_key_minted_during_the_walk_is_refused
);

/// A minted key another process revoked is dropped from this process's
/// cache by the walk that finds it revoked, as a reported key is.
async fn a_minted_key_revoked_elsewhere_is_forgotten(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let here = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let elsewhere = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let leaked = here
        .create(
            NewKey::new("leaked", ["api_keys:write", "a:b"]),
            Actor::System,
        )
        .await
        .unwrap();
    let by_leaked = here.verify(leaked.plaintext.expose_secret()).await.unwrap();
    let child = here
        .create(NewKey::new("child", ["a:b"]), Actor::Key(&by_leaked))
        .await
        .unwrap();
    let child_key = child.plaintext.expose_secret();
    here.verify(child_key).await.expect("cached as valid");
    elsewhere
        .revoke(child.key.id, Some("rotated out"), Actor::System)
        .await
        .unwrap();
    // The clock stands still: only an invalidation ends the cached answer.
    here.verify(child_key).await.expect("still cached");

    let results = here
        .report_compromised(
            &[leaked.plaintext.expose_secret().to_owned()],
            None,
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(results[0].minted.len(), 1);
    assert_eq!(results[0].minted[0].status, Status::Revoked);
    assert!(matches!(
        here.verify(child_key).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(
    a_minted_key_revoked_elsewhere_is_forgotten_works,
    a_minted_key_revoked_elsewhere_is_forgotten
);

/// A minted key whose row was deleted behind the runtime's back is skipped,
/// not an error: the report goes on, and what that key minted is still
/// found.
async fn a_deleted_minted_key_is_skipped(db: &TestDb) {
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let (leaked, by_leaked) = writer(&keys, "leaked", Actor::System).await;
    let (gone, by_gone) = writer(&keys, "gone", Actor::Key(&by_leaked)).await;
    let grandchild = keys
        .create(NewKey::new("grandchild", ["a:b"]), Actor::Key(&by_gone))
        .await
        .unwrap();
    db.execute(&format!(
        "DELETE FROM scopekey_keys WHERE id = '{}'",
        gone.key.id
    ))
    .await;

    let minted = report(&keys, &leaked, true)
        .await
        .expect("a missing row is no failure");
    assert_eq!(minted, [(grandchild.key.id, Status::Revoked)]);
}
both_backends!(
    a_deleted_minted_key_is_skipped_works,
    a_deleted_minted_key_is_skipped
);

/// A minted key's successors are the minter's too, however they were made:
/// a successor the notifier made (delivered to the URL the minter chose)
/// is listed and revoked with it.
async fn a_minted_keys_successors_are_found(db: &TestDb) {
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let (leaked, by_leaked) = writer(&keys, "leaked", Actor::System).await;
    let minted = keys
        .create(NewKey::new("minted", ["a:b"]), Actor::Key(&by_leaked))
        .await
        .unwrap();
    // Rotated by the system, as an automatic rotation is, twice.
    let next = keys
        .rotate(minted.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    let last = keys
        .rotate(next.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();

    assert_eq!(
        report(&keys, &leaked, true).await.unwrap(),
        [
            (minted.key.id, Status::Revoked),
            (next.key.id, Status::Revoked),
            (last.key.id, Status::Revoked),
        ]
    );
    assert!(matches!(
        keys.verify(last.plaintext.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(
    a_minted_keys_successors_are_found_works,
    a_minted_keys_successors_are_found
);

/// Whose lineage a key is in does not depend on the order the walk finds
/// keys: a successor found (through a rotation the leaked key made) before
/// its parent is known to be minted still has its own successors
/// followed. A rotation the leaked key made of a key it did not mint
/// lists that successor, but not that lineage's later rotations.
async fn lineages_do_not_depend_on_the_order_found(db: &TestDb) {
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let (leaked, by_leaked) = writer(&keys, "leaked", Actor::System).await;
    let outside = keys
        .create(NewKey::new("outside", ["a:b"]), Actor::System)
        .await
        .unwrap();
    // The leaked key creates A, A creates P; the leaked key rotates P
    // into X, the system X into Y.
    let (a, by_a) = writer(&keys, "a", Actor::Key(&by_leaked)).await;
    let p = keys
        .create(NewKey::new("p", ["a:b"]), Actor::Key(&by_a))
        .await
        .unwrap();
    let x = keys
        .rotate(p.key.id, RotateOptions::default(), Actor::Key(&by_leaked))
        .await
        .unwrap();
    let y = keys
        .rotate(x.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    // The leaked key rotates a key it did not mint; the system rotates the
    // successor on.
    let o1 = keys
        .rotate(
            outside.key.id,
            RotateOptions::default(),
            Actor::Key(&by_leaked),
        )
        .await
        .unwrap();
    let o2 = keys
        .rotate(o1.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();

    let mut found: Vec<_> = report(&keys, &leaked, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    found.sort();
    let mut expected = vec![a.key.id, p.key.id, x.key.id, y.key.id, o1.key.id];
    expected.sort();
    assert_eq!(found, expected, "not {}", o2.key.id);
}
both_backends!(
    lineages_do_not_depend_on_the_order_found_works,
    lineages_do_not_depend_on_the_order_found
);
