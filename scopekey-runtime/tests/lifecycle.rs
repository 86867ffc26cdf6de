//! The key lifecycle on both stores: each behaviour is written once, against
//! the `Store` trait, and run on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use scopekey_runtime::Clock;
use scopekey_runtime::testing::{PausingStore, TestDb, auto_rotating};
use scopekey_runtime::{
    Actor, CompromiseOptions, CompromiseStatus, Error, ListEvents, ListKeys, ManualClock, NewKey,
    RotateOptions, ScopeKey, Status, VerifyError, both_backends, event_type,
};
use time::Duration;

fn runtime(db: &TestDb) -> (ScopeKey, ManualClock) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    (keys, clock)
}

/// The newest event of a kind on a key's log.
async fn event_of(
    keys: &ScopeKey,
    id: scopekey_runtime::KeyId,
    kind: &str,
) -> scopekey_runtime::AuditEvent {
    let events = keys
        .events(&ListEvents {
            key_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    events
        .items
        .into_iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event on {id}"))
}

async fn key(keys: &ScopeKey, name: &str, scopes: &[&str]) -> scopekey_runtime::CreatedKey {
    keys.create(NewKey::new(name, scopes.iter().copied()), Actor::System)
        .await
        .expect("create")
}

async fn create_and_verify(db: &TestDb) {
    let (keys, _) = runtime(db);
    let created = key(
        &keys,
        "reporting",
        &["orders:read", "orders:read", "billing.invoices:*"],
    )
    .await;
    assert_eq!(
        created.key.scopes,
        ["orders:read", "billing.invoices:*"],
        "deduplicated"
    );
    assert_eq!(created.key.status, Status::Active);
    assert!(created.key.hint.starts_with("sk_…"));
    let p = keys
        .verify(created.plaintext.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.id, created.key.id);
    assert_eq!(&*p.name, "reporting");
    assert_eq!(p.expires_at, None);
    assert!(p.grants().covers_str("billing.invoices:void"));
    assert!(!p.grants().covers_str("orders:write"));
    // A key with an expiry: the principal carries it, as stored.
    let expiring = keys
        .create(
            NewKey::new("expiring", ["orders:read"]).expires_in(Duration::hours(1)),
            Actor::System,
        )
        .await
        .unwrap();
    let verified = keys
        .verify(expiring.plaintext.expose_secret())
        .await
        .unwrap();
    assert!(expiring.key.expires_at.is_some());
    assert_eq!(verified.expires_at, expiring.key.expires_at);

    // The stored row holds the hash, never the plaintext.
    let stored = db.store.get(created.key.id).await.unwrap().unwrap();
    assert_eq!(
        stored.key_hash,
        keys.key_format().hash(created.plaintext.expose_secret())
    );
    // As created, but for the verification above, shown before any flush.
    let mut shown = keys.get(created.key.id).await.unwrap();
    assert!(shown.last_used_at.take().is_some(), "{shown:?}");
    assert_eq!(shown, created.key);

    let events = keys
        .events(&ListEvents {
            key_id: Some(created.key.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].kind, event_type::KEY_CREATED);
}
both_backends!(create_and_verify_works, create_and_verify);

async fn verify_rejections(db: &TestDb) {
    let (keys, _) = runtime(db);
    assert!(matches!(
        keys.verify("nonsense").await,
        Err(VerifyError::Malformed(_))
    ));
    let other = scopekey_runtime::KeyFormat::default().generate().unwrap();
    assert!(matches!(
        keys.verify(other.expose_secret()).await,
        Err(VerifyError::Unknown)
    ));
    let created = key(&keys, "k", &["a:b"]).await;
    let mut flipped = created.plaintext.expose_secret().to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    assert!(matches!(
        keys.verify(&flipped).await,
        Err(VerifyError::Malformed(_))
    ));
    // Failures are audited (sampled).
    let events = keys.events(&ListEvents::default()).await.unwrap();
    let failures: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.kind == event_type::AUTH_FAILED)
        .map(|e| e.details["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(failures.contains(&"malformed".to_owned()) && failures.contains(&"unknown".to_owned()));
    assert_eq!(failures.len(), 3, "each refusal audited: {failures:?}");
    // Nothing of what was presented is kept: not the unknown key, not the
    // secret part of the mistyped one (the hint shows only the end).
    let text = serde_json::to_string(&events.items).unwrap();
    let secret = |key: &str| {
        let start = "sk_".len();
        key[start..start + scopekey_runtime::key::SECRET_LEN].to_owned()
    };
    for presented in [other.expose_secret(), flipped.as_str()] {
        assert!(presented.starts_with("sk_"), "{presented}");
        assert!(!text.contains(presented), "{text}");
        assert!(!text.contains(&secret(presented)), "{text}");
    }
    assert!(!text.contains(created.plaintext.expose_secret()));
}
both_backends!(verify_rejections_work, verify_rejections);

/// `auth.failed` events are sampled, at most the configured number a
/// second for refusals of keys the store knows and as many for the others:
/// a flood of garbage keys does not keep a revoked key's refusal out of the
/// audit log, nor does one known key refused in a loop keep out another's
/// first refusal.
async fn refusals_of_known_keys_are_sampled_apart(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .auth_failures_per_second(2)
        .build();
    let revoked = key(&keys, "revoked", &["a:b"]).await;
    keys.revoke(revoked.key.id, None, Actor::System)
        .await
        .unwrap();
    let failures = |keys: ScopeKey| async move {
        keys.events(&ListEvents {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.kind == event_type::AUTH_FAILED)
        .map(|e| (e.key_id, e.details["reason"].as_str().unwrap().to_owned()))
        .collect::<Vec<_>>()
    };
    // One second on the clock: ten garbage keys, then the revoked key.
    for _ in 0..10 {
        assert!(matches!(
            keys.verify("sk_garbage").await,
            Err(VerifyError::Malformed(_))
        ));
    }
    for _ in 0..3 {
        assert!(matches!(
            keys.verify(revoked.plaintext.expose_secret()).await,
            Err(VerifyError::Revoked)
        ));
    }
    let seen = failures(keys.clone()).await;
    let named: Vec<_> = seen.iter().filter(|(id, _)| id.is_some()).collect();
    assert_eq!(
        seen.len() - named.len(),
        2,
        "garbage: two a second {seen:?}"
    );
    assert_eq!(named.len(), 2, "the revoked key's own two: {seen:?}");
    assert!(
        named
            .iter()
            .all(|(id, reason)| { *id == Some(revoked.key.id) && reason == "revoked" })
    );
    // Another revoked key in the same second, its budget spent by the
    // first: its first refusal is written all the same, its next not.
    let other = key(&keys, "other", &["a:b"]).await;
    keys.revoke(other.key.id, None, Actor::System)
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            keys.verify(other.plaintext.expose_secret()).await,
            Err(VerifyError::Revoked)
        ));
    }
    let seen = failures(keys.clone()).await;
    let others = seen
        .iter()
        .filter(|(id, _)| *id == Some(other.key.id))
        .count();
    assert_eq!(others, 1, "{seen:?}");
    // The next second, again.
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        keys.verify("sk_garbage").await,
        Err(VerifyError::Malformed(_))
    ));
    assert_eq!(failures(keys.clone()).await.len(), 6);
}
both_backends!(
    refusals_of_known_keys_are_sampled_apart_works,
    refusals_of_known_keys_are_sampled_apart
);

async fn create_validation(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let bad = [
        NewKey::new("", ["a:b"]),
        NewKey::new("a\u{7}b", ["a:b"]),
        // Text that reads as another where it is shown.
        NewKey::new("backup\u{202E}nimda", ["a:b"]),
        NewKey::new("ad\u{200B}min", ["a:b"]),
        NewKey::new("two\u{2028}lines", ["a:b"]),
        NewKey::new("hidden\u{E0061}\u{E0062}", ["a:b"]),
        NewKey::new("soft\u{AD}hyphen", ["a:b"]),
        NewKey::new("number\u{0600}sign", ["a:b"]),
        NewKey::new("short\u{1BCA0}hand", ["a:b"]),
        NewKey::new("music\u{1D173}al", ["a:b"]),
        NewKey::new("x", Vec::<String>::new()),
        NewKey::new("x", ["Orders:read"]),
        NewKey::new("x", ["orders"]),
        NewKey::new("x", ["a:b"]).expires_in(Duration::seconds(-1)),
        NewKey::new("x", ["a:b"]).expires_at(clock.now() - Duration::seconds(1)),
        NewKey::new("x", ["a:b"])
            .expires_in(Duration::hours(1))
            .expires_at(clock.now() + Duration::hours(1)),
    ];
    for new in bad {
        let shown = format!("{new:?}");
        assert!(
            matches!(
                keys.create(new, Actor::System).await,
                Err(Error::Invalid(_))
            ),
            "{shown}"
        );
    }
    let page = keys.list(&ListKeys::default()).await.unwrap();
    assert!(page.items.is_empty(), "bad input changes nothing");
    // Joiners, which scripts and emoji need, are fine.
    for name in ["می\u{200C}خواهم", "team 👩\u{200D}💻"] {
        keys.create(NewKey::new(name, ["a:b"]), Actor::System)
            .await
            .unwrap();
    }
    let k = key(&keys, "k", &["a:b"]).await;
    let err = keys
        .revoke(k.key.id, Some("see \u{202E}txt.exe"), Actor::System)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(m) if m.contains("`reason`")));
    assert_eq!(keys.get(k.key.id).await.unwrap().status, Status::Active);

    // A catalogue restricts scopes; wildcards covering catalogued scopes pass.
    let strict = ScopeKey::builder_arc(Arc::clone(&db.store))
        .catalogue(["orders:read", "orders:write"])
        .unwrap()
        .build();
    assert!(
        strict
            .create(NewKey::new("x", ["orders:read", "orders:*"]), Actor::System)
            .await
            .is_ok()
    );
    let err = strict
        .create(NewKey::new("x", ["orders:wirte"]), Actor::System)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(m) if m.contains("catalogue")));

    // An empty catalogue is no catalogue.
    let open = ScopeKey::builder_arc(Arc::clone(&db.store))
        .catalogue(Vec::<String>::new())
        .unwrap()
        .build();
    assert!(
        open.create(NewKey::new("x", ["any.thing:goes"]), Actor::System)
            .await
            .is_ok()
    );
}
both_backends!(create_validation_works, create_validation);

/// A key revoked after its request was verified (by this process or
/// another) mints nothing: the store checks the acting key inside the
/// change's own transaction, so a compromise report that revokes it and
/// then lists what it minted misses nothing.
async fn a_revoked_actor_mints_nothing(db: &TestDb) {
    let (keys, _) = runtime(db);
    let admin = key(&keys, "admin", &["api_keys:write", "orders:*"]).await;
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();
    let target = key(&keys, "target", &["orders:read"]).await;
    let before = keys.list(&ListKeys::default()).await.unwrap().items.len();
    keys.revoke(admin.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();

    let err = keys
        .create(NewKey::new("minted", ["orders:read"]), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    let err = keys
        .rotate(target.key.id, RotateOptions::default(), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");

    // Nothing changed: no key, no rotation, no event.
    let listed = keys.list(&ListKeys::default()).await.unwrap().items;
    assert_eq!(listed.len(), before);
    assert_eq!(
        keys.get(target.key.id).await.unwrap().status,
        Status::Active
    );
    let events = keys
        .events(&ListEvents {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert!(
        events.iter().all(|e| e.actor_key_id != Some(admin.key.id)),
        "{events:?}"
    );
    // Each refused attempt is audited, as a refused verification would be.
    let mut attempts: Vec<_> = events
        .iter()
        .filter(|e| e.kind == event_type::AUTH_FAILED && e.key_id == Some(admin.key.id))
        .map(|e| (e.details["reason"].clone(), e.details["action"].clone()))
        .collect();
    attempts.sort_by_key(|(_, action)| action.to_string());
    assert_eq!(
        attempts,
        [
            (serde_json::json!("revoked"), serde_json::json!("create")),
            (serde_json::json!("revoked"), serde_json::json!("rotate")),
        ]
    );
    // Nor may it rotate itself: refused as the key is everywhere else, not
    // told (409) what became of it.
    let err = keys
        .rotate(admin.key.id, RotateOptions::default(), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    // Nor revoke itself (answered "already revoked", with the reason), nor
    // read anything.
    let err = keys
        .revoke(admin.key.id, None, Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    let err = keys.confirm_caller(&p, "list").await.unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    // Nor when the revocation commits between the check of the acting key
    // and its own (here: the check reads the row as it was before).
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    let mut before = db.store.get(admin.key.id).await.unwrap().unwrap();
    (before.revoked_at, before.revoked_reason) = (None, None);
    *store.stale.lock().unwrap() = Some(before);
    store.release.add_permits(1);
    let racing = ScopeKey::builder_arc(Arc::clone(&store) as _).build();
    let err = racing
        .revoke(admin.key.id, None, Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
}
both_backends!(
    a_revoked_actor_mints_nothing_works,
    a_revoked_actor_mints_nothing
);

/// A reporting key revoked by someone else while its compromise report
/// runs is refused at the end (its own entry would read `already_revoked`);
/// what the report revoked stays revoked.
async fn a_reporter_revoked_meanwhile_is_refused(db: &TestDb) {
    let (keys, _) = runtime(db);
    let reporter = key(&keys, "reporter", &["api_keys:revoke"]).await;
    let p = keys
        .verify(reporter.plaintext.expose_secret())
        .await
        .unwrap();
    let leaked = key(&keys, "leaked", &["orders:read"]).await;
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    let reporting_runtime = ScopeKey::builder_arc(Arc::clone(&store) as _).build();
    let report = vec![
        leaked.plaintext.expose_secret().to_owned(),
        reporter.plaintext.expose_secret().to_owned(),
    ];
    let reporting = reporting_runtime.report_compromised(&report, None, Actor::Key(&p));
    tokio::pin!(reporting);
    tokio::select! {
        biased;
        _ = &mut reporting => panic!("the revocation was not held"),
        () = store.made.notified() => {}
    }
    // The leaked key's revocation is made and held; the reporter is revoked
    // elsewhere meanwhile.
    keys.revoke(reporter.key.id, Some("rotated out"), Actor::System)
        .await
        .unwrap();
    store.release.add_permits(10);
    let err = reporting.await.unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    assert_eq!(
        keys.get(leaked.key.id).await.unwrap().status,
        Status::Revoked
    );
}
both_backends!(
    a_reporter_revoked_meanwhile_is_refused_works,
    a_reporter_revoked_meanwhile_is_refused
);

/// A key that expired after its request was verified (its body still
/// arriving, or another node's cache holding it past a rotation that ended
/// it) acts for nobody: it creates, rotates, revokes, reports and reads
/// nothing, itself included, and each refusal is audited as `expired`.
async fn an_expired_actor_acts_for_nobody(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let scopes = [
        "api_keys:read",
        "api_keys:write",
        "api_keys:revoke",
        "orders:*",
    ];
    let admin = keys
        .create(
            NewKey::new("admin", scopes).expires_in(Duration::minutes(1)),
            Actor::System,
        )
        .await
        .unwrap();
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();
    let target = key(&keys, "target", &["orders:read"]).await;
    let reported = key(&keys, "reported", &["orders:read"]).await;
    let before = keys.list(&ListKeys::default()).await.unwrap().items.len();
    clock.advance(Duration::minutes(1));

    let refused = |r: Result<(), Error>| match r {
        Err(Error::ActorRevoked) => {}
        other => panic!("not refused: {other:?}"),
    };
    refused(
        keys.create(NewKey::new("minted", ["orders:read"]), Actor::Key(&p))
            .await
            .map(|_| ()),
    );
    refused(
        keys.rotate(target.key.id, RotateOptions::default(), Actor::Key(&p))
            .await
            .map(|_| ()),
    );
    refused(
        keys.revoke(target.key.id, None, Actor::Key(&p))
            .await
            .map(|_| ()),
    );
    refused(
        keys.revoke(admin.key.id, None, Actor::Key(&p))
            .await
            .map(|_| ()),
    );
    let report = vec![reported.plaintext.expose_secret().to_owned()];
    refused(
        keys.report_compromised(&report, None, Actor::Key(&p))
            .await
            .map(|_| ()),
    );
    refused(keys.confirm_caller(&p, "list").await);
    refused(keys.get_self(&p).await.map(|_| ()));

    // Nothing changed.
    let listed = keys.list(&ListKeys::default()).await.unwrap().items;
    assert_eq!(listed.len(), before);
    for (id, status) in [
        (target.key.id, Status::Active),
        (reported.key.id, Status::Active),
        (admin.key.id, Status::Expired),
    ] {
        assert_eq!(keys.get(id).await.unwrap().status, status);
    }
    let events = keys
        .events(&ListEvents {
            key_id: Some(admin.key.id),
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let mut attempts: Vec<_> = events
        .iter()
        .filter(|e| e.kind == event_type::AUTH_FAILED)
        .map(|e| (e.details["reason"].clone(), e.details["action"].clone()))
        .collect();
    attempts.sort_by_key(|(_, action)| action.to_string());
    let expired = serde_json::json!("expired");
    let actions = [
        "create",
        "list",
        "report_compromised",
        "revoke",
        "revoke",
        "rotate",
        "self",
    ];
    let expected: Vec<_> = actions
        .iter()
        .map(|a| (expired.clone(), serde_json::json!(a)))
        .collect();
    assert_eq!(attempts, expected);
}
both_backends!(
    an_expired_actor_acts_for_nobody_works,
    an_expired_actor_acts_for_nobody
);

/// A key the store does not hold (verified by another store, or its row
/// deleted behind the runtime's back) acts for nobody.
async fn an_unknown_actor_mints_nothing(db: &TestDb) {
    let (keys, _) = runtime(db);
    let elsewhere = TestDb::new(scopekey_runtime::testing::Backend::Sqlite)
        .await
        .expect("sqlite");
    let (other, _) = runtime(&elsewhere);
    let stranger = key(&other, "admin", &["api_keys:write", "orders:*"]).await;
    let p = other
        .verify(stranger.plaintext.expose_secret())
        .await
        .unwrap();
    let target = key(&keys, "target", &["orders:read"]).await;

    let err = keys
        .create(NewKey::new("minted", ["orders:read"]), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    let err = keys
        .rotate(target.key.id, RotateOptions::default(), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorRevoked), "{err:?}");
    let listed = keys.list(&ListKeys::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        keys.get(target.key.id).await.unwrap().status,
        Status::Active
    );
    elsewhere.cleanup().await;
}
both_backends!(
    an_unknown_actor_mints_nothing_works,
    an_unknown_actor_mints_nothing
);

async fn no_escalation(db: &TestDb) {
    let (keys, _) = runtime(db);
    let admin = key(&keys, "admin", &["api_keys:write", "orders:*"]).await;
    let p = keys.verify(admin.plaintext.expose_secret()).await.unwrap();
    let ok = keys
        .create(NewKey::new("child", ["orders:read"]), Actor::Key(&p))
        .await
        .unwrap();
    let err = keys
        .create(NewKey::new("child", ["billing:read"]), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(m) if m.contains("billing:read")));
    let err = keys
        .create(NewKey::new("child", ["*"]), Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)));

    // Rotation cannot widen: not beyond the parent, not beyond the actor.
    let wider = RotateOptions {
        scopes: Some(vec!["orders:*".into()]),
        ..Default::default()
    };
    let err = keys
        .rotate(ok.key.id, wider.clone(), Actor::Key(&p))
        .await
        .unwrap_err();
    // Beyond the parent, the actor holding it all: a bad value (400), not
    // an escalation; also for the system.
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("orders:*")),
        "{err:?}"
    );
    let err = keys
        .rotate(ok.key.id, wider, Actor::System)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    // Beyond the actor and the parent both: the escalation is judged first.
    let beyond = RotateOptions {
        scopes: Some(vec!["billing:read".into()]),
        ..Default::default()
    };
    let err = keys
        .rotate(ok.key.id, beyond, Actor::Key(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(m) if m.contains("billing:read")));
    let reader = key(&keys, "reader", &["orders:read"]).await;
    let rp = keys.verify(reader.plaintext.expose_secret()).await.unwrap();
    let err = keys
        .rotate(admin.key.id, RotateOptions::default(), Actor::Key(&rp))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(m) if m.contains("api_keys:write")));
    // Judged before the options: a bad grace is still 403, not 400.
    let bad_grace = RotateOptions {
        grace: Some(Duration::seconds(-1)),
        ..Default::default()
    };
    let err = keys
        .rotate(admin.key.id, bad_grace, Actor::Key(&rp))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    // A key may rotate itself, into a subset.
    let fewer = RotateOptions {
        scopes: Some(vec!["orders:read".into()]),
        ..Default::default()
    };
    let own = keys
        .rotate(admin.key.id, fewer, Actor::Key(&p))
        .await
        .unwrap();
    assert_eq!(own.key.scopes, ["orders:read"]);
    assert_eq!(own.key.parent_key_id, Some(admin.key.id));
}
both_backends!(no_escalation_works, no_escalation);

async fn rotation_grace(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let old = key(&keys, "svc", &["orders:read"]).await;
    let grace = Duration::minutes(10);
    let new = keys
        .rotate(
            old.key.id,
            RotateOptions {
                grace: Some(grace),
                scopes: None,
            },
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(new.key.parent_key_id, Some(old.key.id));
    assert_eq!(new.key.scopes, old.key.scopes);
    assert_eq!(keys.get(old.key.id).await.unwrap().status, Status::Rotating);

    clock.advance(grace - Duration::seconds(1));
    let inside = keys
        .verify(old.plaintext.expose_secret())
        .await
        .expect("inside grace");
    // The old key's principal says when it stops: at the grace's end.
    let grace_end = keys.get(old.key.id).await.unwrap().expires_at;
    assert!(
        grace_end.is_some_and(|end| end > clock.now() && end <= clock.now() + Duration::seconds(1))
    );
    assert_eq!(inside.expires_at, grace_end);
    assert!(keys.verify(new.plaintext.expose_secret()).await.is_ok());
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        keys.verify(old.plaintext.expose_secret()).await,
        Err(VerifyError::Expired)
    ));
    assert!(keys.verify(new.plaintext.expose_secret()).await.is_ok());
    assert_eq!(keys.get(old.key.id).await.unwrap().status, Status::Expired);

    // Both keys carry the rotation in their audit log.
    for id in [old.key.id, new.key.id] {
        let ev = keys
            .events(&ListEvents {
                key_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            ev.items.iter().any(|e| e.kind == event_type::KEY_ROTATED),
            "{id}"
        );
    }
    // Lineage walks both ways.
    let line = keys.lineage(new.key.id).await.unwrap();
    assert_eq!(
        line.iter().map(|k| k.id).collect::<Vec<_>>(),
        [old.key.id, new.key.id]
    );
    let line = keys.lineage(old.key.id).await.unwrap();
    assert_eq!(line.len(), 2);
}
both_backends!(rotation_grace_works, rotation_grace);

async fn grace_never_past_expiry(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let old = keys
        .create(
            NewKey::new("short", ["a:b"]).expires_in(Duration::hours(1)),
            Actor::System,
        )
        .await
        .unwrap();
    clock.advance(Duration::minutes(30));
    let new = keys
        .rotate(
            old.key.id,
            RotateOptions {
                grace: Some(Duration::hours(24)),
                scopes: None,
            },
            Actor::System,
        )
        .await
        .unwrap();
    // The successor gets the parent's lifetime afresh.
    assert_eq!(new.key.expires_at, Some(clock.now() + Duration::hours(1)));
    clock.advance(Duration::minutes(30) - Duration::seconds(1));
    assert!(keys.verify(old.plaintext.expose_secret()).await.is_ok());
    clock.advance(Duration::seconds(1));
    assert!(
        matches!(
            keys.verify(old.plaintext.expose_secret()).await,
            Err(VerifyError::Expired)
        ),
        "own expiry wins"
    );

    // Zero grace ends the old key at once, even one this runtime has just
    // verified (a fresh cache entry), without the clock moving.
    let a = key(&keys, "a", &["a:b"]).await;
    assert!(keys.verify(a.plaintext.expose_secret()).await.is_ok());
    assert!(
        keys.verify_cached(a.plaintext.expose_secret()).is_some(),
        "cached"
    );
    let before = clock.now();
    keys.rotate(
        a.key.id,
        RotateOptions {
            grace: Some(Duration::ZERO),
            scopes: None,
        },
        Actor::System,
    )
    .await
    .unwrap();
    assert_eq!(clock.now(), before, "the clock did not move");
    assert!(keys.verify_cached(a.plaintext.expose_secret()).is_none());
    assert!(matches!(
        keys.verify(a.plaintext.expose_secret()).await,
        Err(VerifyError::Expired)
    ));
    let err = keys
        .rotate(
            a.key.id,
            RotateOptions {
                grace: Some(Duration::seconds(-1)),
                scopes: None,
            },
            Actor::System,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
}
both_backends!(grace_never_past_expiry_works, grace_never_past_expiry);

async fn rotation_conflicts(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let k = key(&keys, "k", &["a:b"]).await;
    keys.rotate(k.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    let again = keys
        .rotate(k.key.id, RotateOptions::default(), Actor::System)
        .await;
    assert!(matches!(again, Err(Error::Conflict(m)) if m.contains("successor")));

    // A successor revoked later is still the successor: no second one.
    let a = key(&keys, "a", &["a:b"]).await;
    let b = keys
        .rotate(a.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    keys.revoke(b.key.id, Some("mishandled"), Actor::System)
        .await
        .unwrap();
    let again = keys
        .rotate(a.key.id, RotateOptions::default(), Actor::System)
        .await;
    assert!(
        matches!(&again, Err(Error::Conflict(m)) if m.contains("successor")),
        "{again:?}"
    );
    let successor = db.store.successor(a.key.id).await.unwrap().expect("B");
    assert_eq!(successor.id, b.key.id, "the successor stays B");
    assert_eq!(keys.lineage(a.key.id).await.unwrap().len(), 2);

    let r = key(&keys, "r", &["a:b"]).await;
    keys.revoke(r.key.id, None, Actor::System).await.unwrap();
    assert!(matches!(
        keys.rotate(r.key.id, RotateOptions::default(), Actor::System)
            .await,
        Err(Error::Conflict(_))
    ));

    let e = keys
        .create(
            NewKey::new("e", ["a:b"]).expires_in(Duration::seconds(5)),
            Actor::System,
        )
        .await
        .unwrap();
    clock.advance(Duration::seconds(5));
    assert!(matches!(
        keys.rotate(e.key.id, RotateOptions::default(), Actor::System)
            .await,
        Err(Error::Conflict(_))
    ));

    let missing = scopekey_runtime::KeyId(uuid::Uuid::now_v7());
    assert!(matches!(
        keys.rotate(missing, RotateOptions::default(), Actor::System)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        keys.revoke(missing, None, Actor::System).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(keys.get(missing).await, Err(Error::NotFound(_))));
    assert!(matches!(
        keys.events(&ListEvents {
            key_id: Some(missing),
            ..Default::default()
        })
        .await,
        Err(Error::NotFound(_))
    ));
}
both_backends!(rotation_conflicts_work, rotation_conflicts);

/// A caller that may not rotate a key learns nothing of its state: a key
/// with `api_keys:write` that does not cover the key gets 403 whether the
/// key is live, revoked, expired or rotated. A key rotating itself after a
/// revocation its node has not heard of yet (another node made it) gets
/// the refusal every request with it gets, not a 409 telling what happened.
/// A rotation refused for what the store holds (revoked elsewhere) drops
/// this node's cached verdict of that key.
async fn rotation_refusals_tell_nothing(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let writer = key(&keys, "writer", &["api_keys:write", "orders:read"]).await;
    let writer = keys.verify(writer.plaintext.expose_secret()).await.unwrap();
    let revoked = key(&keys, "revoked", &["billing:read"]).await;
    keys.revoke(revoked.key.id, None, Actor::System)
        .await
        .unwrap();
    let rotated = key(&keys, "rotated", &["billing:read"]).await;
    keys.rotate(rotated.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    let expired = keys
        .create(
            NewKey::new("expired", ["billing:read"]).expires_in(Duration::seconds(5)),
            Actor::System,
        )
        .await
        .unwrap();
    let live = key(&keys, "live", &["billing:read"]).await;
    clock.advance(Duration::seconds(5));
    for target in [&revoked, &rotated, &expired, &live] {
        let refused = keys
            .rotate(target.key.id, RotateOptions::default(), Actor::Key(&writer))
            .await;
        assert!(
            matches!(&refused, Err(Error::Forbidden(m)) if m.contains("billing:read")),
            "{}: {refused:?}",
            target.key.name
        );
    }

    // Another node revokes a key this node still holds as valid.
    let elsewhere = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let own = key(&keys, "own", &["orders:read"]).await;
    let principal = keys.verify(own.plaintext.expose_secret()).await.unwrap();
    elsewhere
        .revoke(own.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();
    let refused = keys
        .rotate(own.key.id, RotateOptions::default(), Actor::Key(&principal))
        .await;
    assert!(matches!(refused, Err(Error::ActorRevoked)), "{refused:?}");
    assert!(db.store.successor(own.key.id).await.unwrap().is_none());

    // A rotation that finds a key changed on another node (revoked there,
    // or gone) drops what this node cached of it: the cache does not go on
    // accepting a key the runtime has just read as revoked.
    let cached = key(&keys, "cached", &["orders:read"]).await;
    let plaintext = cached.plaintext.expose_secret();
    keys.verify(plaintext).await.unwrap();
    elsewhere
        .revoke(cached.key.id, None, Actor::System)
        .await
        .unwrap();
    assert!(keys.verify(plaintext).await.is_ok(), "cached, unheard");
    let refused = keys
        .rotate(cached.key.id, RotateOptions::default(), Actor::System)
        .await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    assert!(
        matches!(keys.verify(plaintext).await, Err(VerifyError::Revoked)),
        "forgotten once read as revoked"
    );
}
both_backends!(
    rotation_refusals_tell_a_caller_nothing_it_may_not_know,
    rotation_refusals_tell_nothing
);

/// Rotations racing for one key: fewer than either store's pool holds
/// connections (8 on SQLite, 16 on PostgreSQL), so none waits for a
/// connection, and few enough that the SQLite writers queued on the write
/// lock are done far within its busy timeout; released together by a
/// barrier, so they do race.
const RACING_ROTATIONS: usize = 8;

async fn concurrent_rotations(db: &TestDb) {
    let (keys, _) = runtime(db);
    let k = key(&keys, "hot", &["a:b"]).await;
    let start = Arc::new(tokio::sync::Barrier::new(RACING_ROTATIONS));
    let tasks: Vec<_> = (0..RACING_ROTATIONS)
        .map(|_| {
            let keys = keys.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                keys.rotate(k.key.id, RotateOptions::default(), Actor::System)
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, RACING_ROTATIONS - 1));
    assert!(db.store.successor(k.key.id).await.unwrap().is_some());
    let all = keys
        .list(&ListKeys {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "exactly one child");
}
both_backends!(concurrent_rotations_have_one_winner, concurrent_rotations);

async fn rotation_races_revocation(db: &TestDb) {
    let (keys, _) = runtime(db);
    for _ in 0..10 {
        let k = key(&keys, "race", &["a:b"]).await;
        let (a, b) = (keys.clone(), keys.clone());
        let rot = tokio::spawn(async move {
            a.rotate(k.key.id, RotateOptions::default(), Actor::System)
                .await
        });
        let rev =
            tokio::spawn(async move { b.revoke(k.key.id, Some("race"), Actor::System).await });
        let rot = rot.await.unwrap();
        rev.await.unwrap().expect("revocation always succeeds");
        match rot {
            Ok(child) => assert_eq!(child.key.parent_key_id, Some(k.key.id)),
            Err(Error::Conflict(_)) => {
                assert!(db.store.successor(k.key.id).await.unwrap().is_none())
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
        assert_eq!(keys.get(k.key.id).await.unwrap().status, Status::Revoked);
    }
}
both_backends!(
    rotation_racing_revocation_is_clean,
    rotation_races_revocation
);

async fn revoke(db: &TestDb) {
    let (keys, _) = runtime(db);
    let k = key(&keys, "k", &["a:b"]).await;
    assert!(
        keys.verify(k.plaintext.expose_secret()).await.is_ok(),
        "now cached"
    );
    let revoked = keys
        .revoke(k.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();
    assert_eq!(revoked.status, Status::Revoked);
    assert_eq!(revoked.revoked_reason.as_deref(), Some("leaked"));
    assert!(
        matches!(
            keys.verify(k.plaintext.expose_secret()).await,
            Err(VerifyError::Revoked)
        ),
        "next request"
    );
    let again = keys
        .revoke(k.key.id, Some("other"), Actor::System)
        .await
        .unwrap();
    assert_eq!(
        again.revoked_reason.as_deref(),
        Some("leaked"),
        "idempotent"
    );
    // A reason is kept trimmed, and a blank one as none (stored and
    // audited), as if left out.
    for (given, kept) in [
        (" lost laptop\t", Some("lost laptop")),
        ("", None),
        ("  ", None),
    ] {
        let other = key(&keys, "other", &["a:b"]).await.key.id;
        let revoked = keys
            .revoke(other, Some(given), Actor::System)
            .await
            .unwrap();
        assert_eq!(revoked.revoked_reason.as_deref(), kept, "{given:?}");
        let stored = keys.get(other).await.unwrap();
        assert_eq!(stored.revoked_reason.as_deref(), kept, "{given:?}");
        let audited = keys
            .events(&ListEvents {
                key_id: Some(other),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.kind == event_type::KEY_REVOKED)
            .unwrap();
        assert_eq!(audited.details["reason"].as_str(), kept, "{given:?}");
    }
    let ev = keys
        .events(&ListEvents {
            key_id: Some(k.key.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ev.items
            .iter()
            .filter(|e| e.kind == event_type::KEY_REVOKED)
            .count(),
        1
    );
}
both_backends!(revoke_works, revoke);

async fn revocation_elsewhere_within_cache_lifetime(db: &TestDb) {
    // Two runtimes on one store stand for two processes, on one clock.
    let clock = ManualClock::starting_now();
    let node = || {
        ScopeKey::builder_arc(Arc::clone(&db.store))
            .clock(clock.clone())
            .cache_ttl(std::time::Duration::from_millis(200))
            .build()
    };
    let (node_a, node_b) = (node(), node());
    let k = key(&node_b, "k", &["a:b"]).await;
    assert!(node_a.verify(k.plaintext.expose_secret()).await.is_ok());
    node_b.revoke(k.key.id, None, Actor::System).await.unwrap();
    // Node A's cached answer lasts its lifetime at most: past it, A asks
    // the store again and refuses the key.
    clock.advance(Duration::milliseconds(200) + Duration::microseconds(1));
    assert!(matches!(
        node_a.verify(k.plaintext.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(
    revocation_elsewhere_is_seen_within_the_cache_lifetime,
    revocation_elsewhere_within_cache_lifetime
);

/// A key cached half a second before its expiry is refused at its expiry,
/// while the cached entry (one second's lifetime) is still fresh: expiry is
/// judged by the clock at the request, not when the entry was cached.
async fn expiry_judged_at_request_time(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let k = keys
        .create(
            NewKey::new("k", ["a:b"]).expires_in(Duration::milliseconds(500)),
            Actor::System,
        )
        .await
        .unwrap();
    assert!(
        keys.verify(k.plaintext.expose_secret()).await.is_ok(),
        "cached now"
    );
    clock.advance(Duration::milliseconds(500));
    assert!(matches!(
        keys.verify(k.plaintext.expose_secret()).await,
        Err(VerifyError::Expired)
    ));
    assert_eq!(keys.get(k.key.id).await.unwrap().status, Status::Expired);
}
both_backends!(
    expiry_is_judged_at_request_time,
    expiry_judged_at_request_time
);

/// A key that expires while its lookup waits for the store (a cache miss)
/// is refused: the verdict is judged once the store has answered, not by
/// the time the request began.
async fn expiry_judged_after_a_slow_lookup(db: &TestDb) {
    let (admin, clock) = runtime(db);
    let k = admin
        .create(
            NewKey::new("k", ["a:b"]).expires_in(Duration::seconds(1)),
            Actor::System,
        )
        .await
        .unwrap();
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    store.hold_lookups.store(true, Ordering::SeqCst);
    let keys = ScopeKey::builder_arc(Arc::clone(&store) as _)
        .clock(clock.clone())
        .build();
    let plaintext = k.plaintext.expose_secret();
    let verifying = keys.verify(plaintext);
    tokio::pin!(verifying);
    tokio::select! {
        biased;
        _ = &mut verifying => panic!("the lookup was not held"),
        () = store.made.notified() => {}
    }
    clock.advance(Duration::seconds(1));
    store.release.add_permits(1);
    assert!(matches!(verifying.await, Err(VerifyError::Expired)));
}
both_backends!(
    expiry_is_judged_after_a_slow_lookup,
    expiry_judged_after_a_slow_lookup
);

async fn list_filters_and_pages(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let mut created = Vec::new();
    for i in 0..7 {
        let name = if i % 2 == 0 {
            format!("web_{i}")
        } else {
            format!("web%{i}")
        };
        created.push(key(&keys, &name, &["a:b"]).await.key);
        clock.advance(Duration::milliseconds(1));
    }
    // Same-instant keys still page without gaps or repeats: four of them,
    // so that a page boundary falls inside the tie at either page size.
    for i in 0..4 {
        created.push(key(&keys, &format!("batch{i}"), &["a:b"]).await.key);
    }
    let ids: Vec<_> = created.iter().map(|k| k.id).collect();
    let mut newest_first: Vec<_> = created.iter().map(|k| (k.created_at, k.id)).collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    let newest_first: Vec<_> = newest_first.into_iter().map(|(_, id)| id).collect();
    for limit in [2, 3] {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = keys
                .list(&ListKeys {
                    limit: Some(limit),
                    cursor: cursor.take(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.items.len() <= limit as usize);
            cursor = page.next_cursor;
            pages.push(page.items);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(
            pages[0].last().unwrap().created_at,
            pages[1][0].created_at,
            "limit {limit}: the first boundary falls inside the tie"
        );
        let seen: Vec<_> = pages.iter().flatten().map(|k| k.id).collect();
        assert_eq!(
            seen, newest_first,
            "limit {limit}: created_at desc, then id desc, each key once"
        );
    }

    // `%` and `_` in a name prefix are literal.
    let pct = keys
        .list(&ListKeys {
            name_prefix: Some("web%".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pct.items.len(), 3);
    let us = keys
        .list(&ListKeys {
            name_prefix: Some("web_".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(us.items.len(), 4);

    keys.revoke(ids[0], None, Actor::System).await.unwrap();
    keys.rotate(ids[1], RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    keys.create(
        NewKey::new("soon", ["a:b"]).expires_in(Duration::seconds(1)),
        Actor::System,
    )
    .await
    .unwrap();
    clock.advance(Duration::seconds(1));
    let count = |status| {
        let keys = keys.clone();
        async move {
            keys.list(&ListKeys {
                status: Some(status),
                limit: Some(500),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len()
        }
    };
    assert_eq!(count(Status::Revoked).await, 1);
    assert_eq!(count(Status::Rotating).await, 1);
    assert_eq!(count(Status::Expired).await, 1);
    assert_eq!(
        count(Status::Active).await,
        10,
        "9 left of 11, plus the successor"
    );

    for limit in [0, 501] {
        let r = keys
            .list(&ListKeys {
                limit: Some(limit),
                ..Default::default()
            })
            .await;
        assert!(matches!(r, Err(Error::Invalid(_))));
    }
    let r = keys
        .list(&ListKeys {
            cursor: Some("garbage".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(Error::Invalid(_))));
    assert!("bogus".parse::<Status>().is_err());
}
both_backends!(list_filters_and_pages_work, list_filters_and_pages);

/// Status filters follow the status's precedence: revoked before expired,
/// revoked before rotating. A key revoked after its expiry, and a rotated
/// key revoked inside its grace, are listed as revoked only.
async fn status_filter_precedence(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let within_a_second = |name: &'static str| {
        let keys = keys.clone();
        async move {
            let new = NewKey::new(name, ["a:b"]).expires_in(Duration::seconds(1));
            keys.create(new, Actor::System).await.unwrap().key.id
        }
    };
    let x = within_a_second("x").await;
    let y = key(&keys, "y", &["a:b"]).await.key.id;
    // Controls, so that no filter can pass by listing nothing: one key of
    // each status besides.
    let expired = within_a_second("expired").await;
    let rotating = key(&keys, "rotating", &["a:b"]).await.key.id;
    let active = key(&keys, "active", &["a:b"]).await.key.id;

    clock.advance(Duration::seconds(1));
    keys.revoke(x, Some("after expiry"), Actor::System)
        .await
        .unwrap();
    let rotate_with_a_day = |id| {
        let keys = keys.clone();
        async move {
            let options = RotateOptions {
                grace: Some(Duration::hours(24)),
                scopes: None,
            };
            keys.rotate(id, options, Actor::System)
                .await
                .unwrap()
                .key
                .id
        }
    };
    let y_next = rotate_with_a_day(y).await;
    keys.revoke(y, Some("inside the grace"), Actor::System)
        .await
        .unwrap();
    let rotating_next = rotate_with_a_day(rotating).await;

    let listed = |status: Status| {
        let keys = keys.clone();
        async move {
            let items = keys
                .list(&ListKeys {
                    status: Some(status),
                    limit: Some(500),
                    ..Default::default()
                })
                .await
                .unwrap()
                .items;
            assert!(
                items.iter().all(|k| k.status == status),
                "{status:?}: {items:?}"
            );
            let mut ids: Vec<_> = items.into_iter().map(|k| k.id).collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<scopekey_runtime::KeyId>| {
        ids.sort();
        ids
    };
    assert_eq!(listed(Status::Revoked).await, sorted(vec![x, y]));
    assert_eq!(listed(Status::Expired).await, [expired]);
    assert_eq!(listed(Status::Rotating).await, [rotating]);
    assert_eq!(
        listed(Status::Active).await,
        sorted(vec![active, y_next, rotating_next])
    );
    // One key, one status: the get agrees with the listing.
    assert_eq!(keys.get(x).await.unwrap().status, Status::Revoked);
    assert_eq!(keys.get(y).await.unwrap().status, Status::Revoked);
}
both_backends!(
    status_filters_follow_the_precedence,
    status_filter_precedence
);

async fn events_page(db: &TestDb) {
    let (keys, clock) = runtime(db);
    for i in 0..5 {
        key(&keys, &format!("k{i}"), &["a:b"]).await;
        clock.advance(Duration::seconds(1));
    }
    let first = keys
        .events(&ListEvents {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert!(first.items[0].at > first.items[1].at, "newest first");
    let rest = keys
        .events(&ListEvents {
            limit: Some(10),
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.next_cursor.is_none());

    // A rotation writes two `key.rotated` events at one instant, the
    // parent's and the successor's: paged one at a time, each comes back
    // once, in (at desc, id desc) order.
    let parent = key(&keys, "parent", &["a:b"]).await.key.id;
    clock.advance(Duration::seconds(1));
    let child = keys
        .rotate(parent, RotateOptions::default(), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = keys
            .events(&ListEvents {
                limit: Some(1),
                cursor: cursor.take(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 1);
        cursor = page.next_cursor;
        all.extend(page.items);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all.len(), 8, "5 + 1 created, 2 rotated: {all:?}");
    let order: Vec<_> = all.iter().map(|e| (e.at, e.id)).collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(order, expected, "at desc, then id desc, each event once");
    let rotated = &all[..2];
    assert_eq!(rotated[0].at, rotated[1].at, "one instant");
    assert!(
        rotated.iter().all(|e| e.kind == event_type::KEY_ROTATED),
        "{rotated:?}"
    );
    let mut about: Vec<_> = rotated.iter().map(|e| e.key_id.unwrap()).collect();
    about.sort();
    let mut both = vec![parent, child];
    both.sort();
    assert_eq!(about, both, "the parent's and the successor's");

    // One key's log, paged one event at a time while other keys' events
    // are in between (created, then another key, then rotated, then
    // another key, then revoked): its own events only, each once, newest
    // first, on every page.
    let own = key(&keys, "own", &["a:b"]).await.key.id;
    clock.advance(Duration::seconds(1));
    key(&keys, "between-1", &["a:b"]).await;
    clock.advance(Duration::seconds(1));
    let successor = keys
        .rotate(own, RotateOptions::default(), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    clock.advance(Duration::seconds(1));
    key(&keys, "between-2", &["a:b"]).await;
    clock.advance(Duration::seconds(1));
    keys.revoke(own, None, Actor::System).await.unwrap();
    clock.advance(Duration::seconds(1));
    keys.revoke(successor, None, Actor::System).await.unwrap();
    let mut kinds = Vec::new();
    let mut cursor = None;
    loop {
        let page = keys
            .events(&ListEvents {
                key_id: Some(own),
                limit: Some(1),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 1);
        assert!(page.items.iter().all(|e| e.key_id == Some(own)), "{page:?}");
        kinds.extend(page.items.iter().map(|e| e.kind.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            event_type::KEY_REVOKED,
            event_type::KEY_ROTATED,
            event_type::KEY_CREATED
        ]
    );
}
both_backends!(events_paginate, events_page);

async fn last_used_is_batched(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let k = key(&keys, "k", &["a:b"]).await;
    let unused = key(&keys, "unused", &["a:b"]).await;
    let id = k.key.id;
    let stored = || async { db.store.get(id).await.unwrap().unwrap().last_used_at };
    let first_use = clock.now();
    for _ in 0..20 {
        keys.verify(k.plaintext.expose_secret()).await.unwrap();
    }
    assert_eq!(stored().await, None, "no write per request");
    // What the runtime shows includes the use it has not written yet.
    assert_eq!(keys.get(id).await.unwrap().last_used_at, Some(first_use));
    let listed = keys.list(&ListKeys::default()).await.unwrap().items;
    let used_at = |id| listed.iter().find(|k| k.id == id).unwrap().last_used_at;
    assert_eq!(
        (used_at(id), used_at(unused.key.id)),
        (Some(first_use), None)
    );
    assert_eq!(
        keys.lineage(id).await.unwrap()[0].last_used_at,
        Some(first_use)
    );

    clock.advance(Duration::seconds(3));
    keys.verify(k.plaintext.expose_secret()).await.unwrap();
    assert_eq!(keys.get(id).await.unwrap().last_used_at, Some(clock.now()));
    keys.flush_last_used().await.unwrap();
    assert_eq!(stored().await, Some(clock.now()));
    assert_eq!(keys.get(id).await.unwrap().last_used_at, Some(clock.now()));
    keys.flush_last_used().await.unwrap();
    assert_eq!(stored().await, Some(clock.now()));
    assert_eq!(keys.get(unused.key.id).await.unwrap().last_used_at, None);
}
both_backends!(last_used_is_batched_works, last_used_is_batched);

async fn lineage_survives_a_cycle(db: &TestDb) {
    let (keys, _) = runtime(db);
    let a = key(&keys, "a", &["a:b"]).await;
    let b = keys
        .rotate(a.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    // Corrupt the data: make `a` the child of `b`.
    let sql = match db.backend() {
        scopekey_runtime::testing::Backend::Sqlite => {
            format!(
                "UPDATE scopekey_keys SET parent_key_id = '{}' WHERE id = '{}'",
                b.key.id, a.key.id
            )
        }
        scopekey_runtime::testing::Backend::Postgres => {
            format!(
                "UPDATE scopekey_keys SET parent_key_id = '{}'::uuid WHERE id = '{}'::uuid",
                b.key.id, a.key.id
            )
        }
    };
    db.execute(&sql).await;
    let line = keys.lineage(a.key.id).await.unwrap();
    assert_eq!(line.len(), 2, "each key once, no loop");
}
both_backends!(lineage_survives_a_cycle_works, lineage_survives_a_cycle);

async fn store_failure_fails_closed(db: &TestDb) {
    let (keys, _) = runtime(db);
    let k = key(&keys, "k", &["a:b"]).await;
    db.execute("DROP TABLE scopekey_keys").await;
    let other = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    assert!(matches!(
        other.verify(k.plaintext.expose_secret()).await,
        Err(VerifyError::Unavailable(_))
    ));
}
both_backends!(store_failure_fails_closed_works, store_failure_fails_closed);

async fn compromise_report(db: &TestDb) {
    let (keys, _) = runtime(db);
    let live = key(&keys, "live", &["a:b"]).await;
    let dead = key(&keys, "dead", &["a:b"]).await;
    keys.revoke(dead.key.id, None, Actor::System).await.unwrap();
    let unknown = keys.key_format().generate().unwrap();
    let report = vec![
        live.plaintext.expose_secret().to_owned(),
        dead.plaintext.expose_secret().to_owned(),
        unknown.expose_secret().to_owned(),
        "not a key".to_owned(),
    ];
    let results = keys
        .report_compromised(&report, Some("scanner"), Actor::System)
        .await
        .unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            CompromiseStatus::Revoked,
            CompromiseStatus::AlreadyRevoked,
            CompromiseStatus::Unknown,
            CompromiseStatus::Malformed
        ]
    );
    assert_eq!(results[0].key_id, Some(live.key.id));
    assert!(matches!(
        keys.verify(live.plaintext.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    let text = serde_json::to_string(&results).unwrap();
    for k in &report[..3] {
        assert!(!text.contains(k.as_str()));
    }
    let ev = keys
        .events(&ListEvents {
            key_id: Some(live.key.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        ev.items
            .iter()
            .any(|e| e.kind == event_type::KEY_COMPROMISED)
    );
}
both_backends!(compromise_report_works, compromise_report);

/// A key another process revoked is `already_revoked` in a report, and the
/// report drops this process's cached verdict: refused at once, not when
/// the entry would have expired.
async fn a_report_of_a_key_revoked_elsewhere_refreshes_the_cache(db: &TestDb) {
    let (here, _) = runtime(db);
    let elsewhere = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let k = key(&here, "k", &["a:b"]).await;
    let plaintext = k.plaintext.expose_secret();
    here.verify(plaintext).await.unwrap();
    assert!(here.verify_cached(plaintext).is_some(), "cached here");
    elsewhere
        .revoke(k.key.id, None, Actor::System)
        .await
        .unwrap();
    let report = here
        .report_compromised(&[plaintext.to_owned()], None, Actor::System)
        .await
        .unwrap();
    assert_eq!(report[0].status, CompromiseStatus::AlreadyRevoked);
    assert!(here.verify_cached(plaintext).is_none());
    assert!(matches!(
        here.verify(plaintext).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(
    a_report_of_a_key_revoked_elsewhere_refreshes_the_cache_works,
    a_report_of_a_key_revoked_elsewhere_refreshes_the_cache
);

/// Times computed from durations finer than a microsecond are answered as
/// the store keeps them: the created key's expiry, and the end of a grace.
async fn times_are_answered_as_kept(db: &TestDb) {
    let (keys, _) = runtime(db);
    let created = keys
        .create(
            NewKey::new("fine", ["a:b"])
                .expires_in(Duration::days(1) + Duration::nanoseconds(1_500)),
            Actor::System,
        )
        .await
        .unwrap();
    let expires_at = created.key.expires_at.unwrap();
    assert_eq!(expires_at.nanosecond() % 1_000, 0, "{expires_at}");
    assert_eq!(
        keys.get(created.key.id).await.unwrap().expires_at,
        Some(expires_at)
    );

    let options = RotateOptions {
        grace: Some(Duration::hours(1) + Duration::nanoseconds(2_500)),
        ..Default::default()
    };
    keys.rotate(created.key.id, options, Actor::System)
        .await
        .unwrap();
    let parent = keys.get(created.key.id).await.unwrap();
    let rotated = event_of(&keys, created.key.id, event_type::KEY_ROTATED).await;
    let announced = time::OffsetDateTime::parse(
        rotated.details["parent_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(parent.expires_at, Some(announced));
}
both_backends!(times_are_answered_as_kept_works, times_are_answered_as_kept);

/// Whoever held a leaked key could mint others with it: rotate it (any key
/// may rotate itself), and with `api_keys:write` create keys and rotate
/// others. A report lists those keys, and the keys they minted in turn,
/// with their status; it revokes them only when asked.
async fn compromise_lists_and_revokes_minted_keys(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let as_key = |created: &scopekey_runtime::CreatedKey| {
        let keys = keys.clone();
        let plaintext = created.plaintext.expose_secret().to_owned();
        async move { keys.verify(&plaintext).await.unwrap() }
    };
    let leaked = key(&keys, "leaked", &["api_keys:write", "a:b"]).await;
    let other = key(&keys, "other", &["a:b"]).await;
    let unrelated = key(&keys, "unrelated", &["a:b"]).await;
    let me = as_key(&leaked).await;
    clock.advance(Duration::seconds(1));
    let successor = keys
        .rotate(leaked.key.id, RotateOptions::default(), Actor::Key(&me))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    let created = keys
        .create(NewKey::new("backdoor", ["a:b"]), Actor::Key(&me))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    let others_successor = keys
        .rotate(other.key.id, RotateOptions::default(), Actor::Key(&me))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    // The successor rotates itself in turn: minted by a minted key.
    let next = as_key(&successor).await;
    let second = keys
        .rotate(
            successor.key.id,
            RotateOptions::default(),
            Actor::Key(&next),
        )
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    // Made by the system: its plaintext never went to the leaked key's
    // holder.
    let by_system = keys
        .rotate(
            second.key.id,
            RotateOptions {
                grace: Some(Duration::ZERO),
                ..Default::default()
            },
            Actor::System,
        )
        .await
        .unwrap();

    let report = vec![leaked.plaintext.expose_secret().to_owned()];
    // At most `max_minted` listed: the first of them, and the cut said.
    let cut = CompromiseOptions {
        max_minted: 2,
        ..Default::default()
    };
    let results = keys
        .report_compromised_with(&report, cut, Actor::System)
        .await
        .unwrap();
    assert_eq!(results[0].status, CompromiseStatus::Revoked);
    assert!(results[0].minted_truncated);
    let listed: Vec<_> = results[0].minted.iter().map(|m| m.key_id).collect();
    assert_eq!(listed, [successor.key.id, created.key.id]);

    let results = keys
        .report_compromised(&report, Some("scanner"), Actor::System)
        .await
        .unwrap();
    assert_eq!(results[0].status, CompromiseStatus::AlreadyRevoked);
    assert!(!results[0].minted_truncated);
    let listed: Vec<_> = results[0]
        .minted
        .iter()
        .map(|m| (m.key_id, m.status))
        .collect();
    assert_eq!(
        listed,
        [
            (successor.key.id, Status::Rotating),
            (created.key.id, Status::Active),
            (others_successor.key.id, Status::Active),
            (second.key.id, Status::Expired),
        ],
        "listed, not revoked"
    );
    assert!(keys.verify(created.plaintext.expose_secret()).await.is_ok());

    // Asked to, the report revokes them: the live ones, and the expired.
    let options = CompromiseOptions {
        source: Some("scanner"),
        revoke_minted: true,
        ..Default::default()
    };
    let results = keys
        .report_compromised_with(&report, options, Actor::System)
        .await
        .unwrap();
    assert_eq!(results[0].status, CompromiseStatus::AlreadyRevoked);
    assert_eq!(results[0].minted.len(), 4);
    assert!(
        results[0]
            .minted
            .iter()
            .all(|m| m.status == Status::Revoked),
        "{:?}",
        results[0].minted
    );
    for k in [&successor, &created, &others_successor] {
        assert!(matches!(
            keys.verify(k.plaintext.expose_secret()).await,
            Err(VerifyError::Revoked)
        ));
    }
    for k in [&by_system, &unrelated] {
        assert!(keys.verify(k.plaintext.expose_secret()).await.is_ok());
    }
    assert_eq!(
        keys.get(other.key.id).await.unwrap().status,
        Status::Rotating
    );
    let revoked = keys.get(created.key.id).await.unwrap();
    assert_eq!(revoked.revoked_reason.as_deref(), Some("compromised"));
    let event = event_of(&keys, created.key.id, event_type::KEY_COMPROMISED).await;
    assert_eq!(event.details["minted_by"], leaked.key.id.to_string());
    assert_eq!(event.details["source"], "scanner");

    // A key that minted nothing lists nothing.
    let clean = keys
        .report_compromised_with(
            &[unrelated.plaintext.expose_secret().to_owned()],
            options,
            Actor::System,
        )
        .await
        .unwrap();
    assert!(clean[0].minted.is_empty());

    // The limit holds for the whole report, and a key reported twice is
    // walked once: its second entry lists nothing (the work of a report is
    // bounded whatever it repeats).
    let twice = vec![report[0].clone(), report[0].clone()];
    let results = keys
        .report_compromised_with(&twice, CompromiseOptions::default(), Actor::System)
        .await
        .unwrap();
    assert_eq!(results[0].minted.len(), 4);
    assert!(results[1].minted.is_empty() && !results[1].minted_truncated);
    assert_eq!(results[1].key_id, Some(leaked.key.id));
    let shared = CompromiseOptions {
        max_minted: 3,
        ..Default::default()
    };
    let with_successor = vec![
        report[0].clone(),
        successor.plaintext.expose_secret().to_owned(),
    ];
    let results = keys
        .report_compromised_with(&with_successor, shared, Actor::System)
        .await
        .unwrap();
    assert_eq!(results[0].minted.len(), 3);
    assert!(results[0].minted_truncated);
    // The successor rotated itself: it minted a key, which the spent limit
    // no longer lists.
    assert!(results[1].minted.is_empty() && results[1].minted_truncated);
}
both_backends!(
    compromise_lists_and_revokes_minted_keys_works,
    compromise_lists_and_revokes_minted_keys
);

async fn migrate_is_idempotent(db: &TestDb) {
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    let (keys, _) = runtime(db);
    assert!(keys.is_empty().await.unwrap());
    key(&keys, "k", &["a:b"]).await;
    assert!(!keys.is_empty().await.unwrap());
}
both_backends!(migrate_is_idempotent_works, migrate_is_idempotent);

// ---------------------------------------------------------------------------
// Rotation policy.

async fn rotation_policy(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .rotation_period(Duration::days(90))
        .unwrap()
        .build();

    // The runtime's default policy: due (and expiring) one period on.
    let by_default = keys
        .create(NewKey::new("default", ["orders:read"]), Actor::System)
        .await
        .unwrap()
        .key;
    assert_eq!(by_default.rotation_period_seconds, Some(90 * 86_400));
    assert_eq!(
        by_default.expires_at,
        Some(by_default.created_at + Duration::days(90))
    );
    assert_eq!(by_default.rotation_webhook_url, None);

    // A per-key period overrides it.
    let own = keys
        .create(
            NewKey::new("own", ["orders:read"]).rotate_every(Duration::days(30)),
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(own.key.rotation_period_seconds, Some(30 * 86_400));
    assert_eq!(
        own.key.expires_at,
        Some(own.key.created_at + Duration::days(30))
    );

    // An explicit expiry wins over the period; the policy is still shown.
    let explicit = keys
        .create(
            NewKey::new("explicit", ["orders:read"])
                .rotate_every(Duration::days(30))
                .expires_in(Duration::days(10)),
            Actor::System,
        )
        .await
        .unwrap()
        .key;
    assert_eq!(
        explicit.expires_at,
        Some(explicit.created_at + Duration::days(10))
    );
    assert_eq!(explicit.rotation_period_seconds, Some(30 * 86_400));

    // The policy is stored: a fresh read shows it, and the audit log too.
    assert_eq!(keys.get(own.key.id).await.unwrap(), own.key);
    let created = keys
        .events(&ListEvents {
            key_id: Some(own.key.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(created[0].details["rotation_period_seconds"], 30 * 86_400);

    // The key rotates itself near its due date: the successor gets a fresh
    // period and the same policy; the old key keeps its grace.
    clock.advance(Duration::days(28));
    let p = keys.verify(own.plaintext.expose_secret()).await.unwrap();
    let successor = keys
        .rotate(own.key.id, RotateOptions::default(), Actor::Key(&p))
        .await
        .unwrap()
        .key;
    assert_eq!(successor.parent_key_id, Some(own.key.id));
    assert_eq!(successor.rotation_period_seconds, Some(30 * 86_400));
    assert_eq!(successor.expires_at, Some(clock.now() + Duration::days(30)));
    let parent = keys.get(own.key.id).await.unwrap();
    assert_eq!(parent.status, Status::Rotating);
    assert_eq!(parent.expires_at, Some(clock.now() + Duration::hours(24)));
    assert_eq!(parent.rotation_period_seconds, Some(30 * 86_400));

    // Without any policy, nothing changes: no expiry, no period.
    let (plain, _) = runtime(db);
    let none = key(&plain, "none", &["orders:read"]).await.key;
    assert_eq!(
        (none.expires_at, none.rotation_period_seconds),
        (None, None)
    );
}
both_backends!(rotation_policy_works, rotation_policy);

async fn rotation_policy_validation(db: &TestDb) {
    // Without a rotation secret, automatic rotation is refused outright.
    let (plain, _) = runtime(db);
    let err = plain
        .create(
            auto_rotating("auto", "https://holder.example/k"),
            Actor::System,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");

    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .rotation_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap())
        .build();
    let bad = [
        NewKey::new("zero", ["orders:read"]).rotate_every(Duration::ZERO),
        NewKey::new("negative", ["orders:read"]).rotate_every(Duration::days(-1)),
        NewKey::new("huge", ["orders:read"]).rotate_every(Duration::days(3651)),
        // Automatic rotation needs a policy (none by default here).
        NewKey::new("no policy", ["orders:read"]).rotation_webhook("https://holder.example/k"),
        auto_rotating("ftp", "ftp://holder.example/k"),
        auto_rotating("relative", "/hooks/rotate"),
        auto_rotating("space", "https://holder.example/a b"),
        auto_rotating("userinfo", "https://user:pw@holder.example/"),
        // Plaintexts are never posted in the clear, nor to internal hosts.
        auto_rotating("http", "http://holder.example/k"),
        auto_rotating("loopback", "https://127.0.0.1:8443/k"),
        auto_rotating("metadata", "https://169.254.169.254/latest"),
        auto_rotating("private", "https://10.1.2.3/k"),
        auto_rotating("v6 loopback", "https://[::1]/k"),
        auto_rotating("short loopback", "https://127.1/k"),
        auto_rotating("hex loopback", "https://0x7f000001/k"),
        auto_rotating("mapped loopback", "https://[::ffff:127.0.0.1]/k"),
        auto_rotating("localhost", "HTTPS://LocalHost./k"),
        // Due one grace (24 h) before expiry: the period must be two graces.
        NewKey::new("short", ["orders:read"])
            .rotate_every(Duration::hours(47))
            .rotation_webhook("https://holder.example/k"),
    ];
    for new in bad {
        let name = new.name.clone();
        let err = keys.create(new, Actor::System).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{name}: {err:?}");
    }
    assert!(keys.is_empty().await.unwrap(), "nothing was created");
    assert!(matches!(
        ScopeKey::builder_arc(Arc::clone(&db.store)).rotation_period(Duration::ZERO),
        Err(Error::Invalid(_))
    ));

    let auto = keys
        .create(
            auto_rotating("auto", "https://holder.example/rotate?client=7"),
            Actor::System,
        )
        .await
        .unwrap();
    assert!(
        auto.rotation_webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().starts_with("whsec_"))
    );
    // Stored sealed, never in the clear; not part of the key object.
    let stored = db.store.get(auto.key.id).await.unwrap().unwrap();
    let whsec = auto
        .rotation_webhook_secret
        .as_ref()
        .unwrap()
        .expose_secret();
    let sealed = stored.rotation_webhook_secret.as_deref().unwrap();
    assert!(sealed.starts_with("sealed:v1:") && !sealed.contains(&whsec[6..]));
    let auto = auto.key;
    assert_eq!(
        auto.rotation_webhook_url.as_deref(),
        Some("https://holder.example/rotate?client=7")
    );
    // The insecure switch admits local http receivers (development).
    let dev = ScopeKey::builder_arc(Arc::clone(&db.store))
        .rotation_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap())
        .allow_insecure_rotation_webhooks(true)
        .build();
    let local = dev
        .create(
            NewKey::new("local", ["orders:read"])
                .rotate_every(Duration::days(2))
                .rotation_webhook("http://127.0.0.1:9000/rotate"),
            Actor::System,
        )
        .await
        .unwrap();
    assert!(local.rotation_webhook_secret.is_some());
    dev.revoke(local.key.id, None, Actor::System).await.unwrap();
    // A successor keeps the opt-in.
    let successor = keys
        .rotate(auto.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap()
        .key;
    assert_eq!(successor.rotation_webhook_url, auto.rotation_webhook_url);
}
both_backends!(rotation_policy_validation_works, rotation_policy_validation);

/// The cache-only fast path agrees with `verify`: a principal only for a
/// cached, valid key; `None` for anything else, and at once after a
/// revocation or past expiry.
async fn verify_cached_fast_path(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let created = keys
        .create(
            NewKey::new("fast", ["orders:read"]).expires_in(Duration::hours(1)),
            Actor::System,
        )
        .await
        .unwrap();
    let plaintext = created.plaintext.expose_secret();
    assert!(keys.verify_cached(plaintext).is_none(), "not cached yet");
    keys.verify(plaintext).await.unwrap();
    let p = keys.verify_cached(plaintext).expect("cached and valid");
    assert_eq!(p.id, created.key.id);
    assert!(keys.verify_cached("nonsense").is_none());
    assert!(keys.verify_cached(&"x".repeat(10_000)).is_none());
    let unknown = scopekey_runtime::KeyFormat::default().generate().unwrap();
    assert!(matches!(
        keys.verify(unknown.expose_secret()).await,
        Err(VerifyError::Unknown)
    ));
    assert!(
        keys.verify_cached(unknown.expose_secret()).is_none(),
        "a cached refusal still goes through verify"
    );
    // Its use is recorded like verify's.
    keys.flush_last_used().await.unwrap();
    assert!(
        keys.get(created.key.id)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );

    // Expiry is judged at the call, not when the entry was cached: cached
    // half a second before expiry, refused at expiry (the entry itself is
    // still fresh).
    clock.advance(Duration::hours(1) - Duration::milliseconds(500));
    keys.verify(plaintext).await.unwrap();
    assert!(keys.verify_cached(plaintext).is_some());
    clock.advance(Duration::milliseconds(500));
    assert!(keys.verify_cached(plaintext).is_none());
    clock.advance(-Duration::milliseconds(100));
    assert!(keys.verify_cached(plaintext).is_some());

    // A revocation on this node is seen at once.
    keys.revoke(created.key.id, None, Actor::System)
        .await
        .unwrap();
    assert!(keys.verify_cached(plaintext).is_none());
    assert!(matches!(
        keys.verify(plaintext).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(verify_cached_fast_path_works, verify_cached_fast_path);

/// A cached verification is served for the cache's lifetime (one second by
/// default), measured by the runtime's clock; then the store is read again.
async fn cache_lifetime_by_the_clock(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let created = key(&keys, "k", &["a:b"]).await;
    let plaintext = created.plaintext.expose_secret();
    keys.verify(plaintext).await.unwrap();
    clock.advance(Duration::milliseconds(999));
    assert!(keys.verify_cached(plaintext).is_some(), "fresh for 1 s");
    clock.advance(Duration::milliseconds(1));
    assert!(keys.verify_cached(plaintext).is_none(), "stale after 1 s");
    keys.verify(plaintext).await.unwrap();
    assert!(keys.verify_cached(plaintext).is_some(), "read again");
    // A clock moved back does not make an entry live longer.
    clock.advance(-Duration::seconds(5));
    assert!(keys.verify_cached(plaintext).is_none());
}
both_backends!(
    cache_lifetime_is_judged_by_the_clock,
    cache_lifetime_by_the_clock
);

/// The verification lookup reads exactly what `find_by_hash` would say of
/// a key's verdict: live, expiring, revoked, unknown.
async fn verification_lookup(db: &TestDb) {
    let (keys, _) = runtime(db);
    let live = key(&keys, "live", &["orders:read", "billing.invoices:*"]).await;
    let expiring = keys
        .create(
            NewKey::new("expiring", ["a:b"]).expires_in(Duration::hours(1)),
            Actor::System,
        )
        .await
        .unwrap();
    let revoked = key(&keys, "revoked", &["a:b"]).await;
    keys.revoke(revoked.key.id, Some("test"), Actor::System)
        .await
        .unwrap();
    let format = keys.key_format();
    for created in [&live, &expiring, &revoked] {
        let hash = format.hash(created.plaintext.expose_secret());
        let full = db.store.find_by_hash(&hash).await.unwrap().expect("stored");
        let narrow = db
            .store
            .find_for_verification(&hash)
            .await
            .unwrap()
            .expect("found");
        assert_eq!(narrow, scopekey_runtime::VerifyRecord::from(full));
        assert_eq!(narrow.id, created.key.id);
    }
    let unknown = scopekey_runtime::KeyFormat::default().generate().unwrap();
    let hash = format.hash(unknown.expose_secret());
    assert_eq!(db.store.find_for_verification(&hash).await.unwrap(), None);
}
both_backends!(verification_lookup_works, verification_lookup);

/// Several instances bootstrapping one fresh store at once, each through a
/// store of its own: `create_first` creates exactly one key between them
/// (one `key.created` event), and none once the store holds a key.
async fn first_key_once(db: &TestDb) {
    const INSTANCES: usize = 8;
    let start = Arc::new(tokio::sync::Barrier::new(INSTANCES));
    let mut tasks = Vec::new();
    for i in 0..INSTANCES {
        let keys = ScopeKey::builder_arc(scopekey_runtime::open(&db.url).await.unwrap()).build();
        // Each store's connection open before the race starts.
        assert!(keys.is_empty().await.unwrap());
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            keys.create_first(NewKey::new(format!("admin {i}"), ["*"]), Actor::System)
                .await
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        if let Some(key) = task.await.unwrap().unwrap() {
            created.push(key);
        }
    }
    assert_eq!(created.len(), 1, "exactly one first key");
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let all = keys.list(&ListKeys::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].id, created[0].key.id);
    let events = keys.events(&ListEvents::default()).await.unwrap();
    assert_eq!(events.items.len(), 1, "one key.created event");
    assert_eq!(events.items[0].kind, event_type::KEY_CREATED);

    let again = keys
        .create_first(NewKey::new("late", ["*"]), Actor::System)
        .await
        .unwrap();
    assert!(again.is_none(), "the store holds a key");
    assert_eq!(
        keys.list(&ListKeys::default()).await.unwrap().items.len(),
        1
    );
    // An ordinary create is unaffected.
    keys.create(NewKey::new("second", ["orders:read"]), Actor::System)
        .await
        .unwrap();
}
both_backends!(first_key_is_created_once, first_key_once);

/// A key meant never to expire, written as the calendar's last second, can
/// be rotated: its successor cannot get the parent's lifetime afresh (that
/// would pass the year 9999), so it keeps the parent's expiry.
async fn far_future_rotation(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let end = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    let parent = keys
        .create(
            NewKey::new("forever", ["orders:read"]).expires_at(end),
            Actor::System,
        )
        .await
        .unwrap();
    clock.advance(Duration::days(1));
    let child = keys
        .rotate(parent.key.id, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    assert_eq!(child.key.expires_at, Some(end));
    assert_eq!(child.key.parent_key_id, Some(parent.key.id));
    let parent = keys.get(parent.key.id).await.unwrap();
    assert_eq!(parent.expires_at, Some(clock.now() + Duration::hours(24)));
    assert!(keys.verify(child.plaintext.expose_secret()).await.is_ok());
}
both_backends!(
    a_key_expiring_at_the_calendars_end_rotates,
    far_future_rotation
);

/// Values one database could store and the other could not, or that no
/// listing ever handed out, are refused as invalid (400) on both, and
/// change nothing: an expiry past the calendar's end once in UTC, a NUL in
/// metadata, a control character in a name prefix, a cursor whose time is
/// out of range.
async fn unstorable_values(db: &TestDb) {
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store)).build();
    let beyond = time::OffsetDateTime::parse(
        "9999-12-31T23:59:59-23:59",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let nul = |v: serde_json::Value| v.as_object().unwrap().clone();
    let refused = [
        NewKey::new("beyond", ["a:b"]).expires_at(beyond),
        NewKey::new("nul value", ["a:b"]).metadata(nul(serde_json::json!({ "a": "x\u{0}y" }))),
        NewKey::new("nul key", ["a:b"]).metadata(nul(serde_json::json!({ "a\u{0}": 1 }))),
        NewKey::new("nested nul", ["a:b"])
            .metadata(nul(serde_json::json!({ "a": [{ "b": "\u{0}" }] }))),
    ];
    for new in refused {
        let name = new.name.clone();
        let err = keys.create(new, Actor::System).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{name}: {err:?}");
    }
    assert!(keys.is_empty().await.unwrap(), "nothing was created");

    let err = keys
        .list(&ListKeys {
            name_prefix: Some("a\u{0}".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    let far = format!("{:x}.{}", i64::MAX, uuid::Uuid::nil().simple());
    let err = keys
        .list(&ListKeys {
            cursor: Some(far.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    let err = keys
        .events(&ListEvents {
            cursor: Some(far),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
}
both_backends!(unstorable_values_are_invalid, unstorable_values);

/// The default grace is kept within what a rotation accepts.
#[tokio::test]
async fn default_grace_is_clamped() {
    let store = scopekey_runtime::open("sqlite::memory:").await.unwrap();
    for (asked, kept) in [
        (
            Duration::days(10_000),
            scopekey_runtime::lifecycle::MAX_GRACE,
        ),
        (Duration::MAX, scopekey_runtime::lifecycle::MAX_GRACE),
        (Duration::hours(-1), Duration::ZERO),
        (Duration::hours(2), Duration::hours(2)),
    ] {
        let keys = ScopeKey::builder_arc(Arc::clone(&store))
            .default_grace(asked)
            .build();
        assert_eq!(keys.default_grace(), kept, "{asked}");
    }
}

/// A key pasted into a name or metadata is refused, not stored nor
/// repeated back, and nothing changes; in a revocation reason or a
/// report's source it is kept as its hint, and the revocation goes ahead.
async fn keys_in_free_text(db: &TestDb) {
    let (keys, _) = runtime(db);
    let live = key(&keys, "live", &["orders:read"]).await;
    let pasted = live.plaintext.expose_secret().to_owned();
    let check = |result: Result<(), Error>, field: &str| {
        let Err(Error::Invalid(message)) = result else {
            panic!("{field}: {result:?}");
        };
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert!(message.contains("shaped like an API key"), "{message}");
        assert!(!message.contains(&pasted[3..20]), "{message}");
    };
    let before = keys.list(&ListKeys::default()).await.unwrap().items.len();
    check(
        keys.create(
            NewKey::new(format!("copy of {pasted}"), ["orders:read"]),
            Actor::System,
        )
        .await
        .map(drop),
        "name",
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("notes".into(), serde_json::json!(["fine", { "k": pasted }]));
    check(
        keys.create(
            NewKey::new("with metadata", ["orders:read"]).metadata(metadata),
            Actor::System,
        )
        .await
        .map(drop),
        "metadata",
    );
    assert_eq!(
        keys.list(&ListKeys::default()).await.unwrap().items.len(),
        before
    );
    // In a revocation's reason or a report's source, refusing would leave
    // the key live: the key is kept as its hint instead.
    let hint = keys.get(live.key.id).await.unwrap().hint;
    let other = key(&keys, "other", &["orders:read"]).await;
    let revoked = keys
        .revoke(
            other.key.id,
            Some(&format!("leaked with {pasted}.")),
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, Status::Revoked);
    let expected = format!("leaked with {hint}.");
    assert_eq!(revoked.revoked_reason.as_deref(), Some(expected.as_str()));
    let event = event_of(&keys, other.key.id, event_type::KEY_REVOKED).await;
    assert_eq!(event.details["reason"], expected);
    let source = format!("scanner found {pasted}");
    let options = CompromiseOptions {
        source: Some(&source),
        ..CompromiseOptions::default()
    };
    let report = keys
        .report_compromised_with(std::slice::from_ref(&pasted), options, Actor::System)
        .await
        .unwrap();
    assert_eq!(report[0].status, CompromiseStatus::Revoked);
    let event = event_of(&keys, live.key.id, event_type::KEY_COMPROMISED).await;
    assert_eq!(event.details["source"], format!("scanner found {hint}"));
    let stored =
        serde_json::to_string(&keys.events(&ListEvents::default()).await.unwrap().items).unwrap();
    assert!(!stored.contains(&pasted[3..20]), "{stored}");
    // A blank source is none, like a blank reason.
    let blank = key(&keys, "blank", &["orders:read"]).await;
    let options = CompromiseOptions {
        source: Some(" \t "),
        ..CompromiseOptions::default()
    };
    let report = keys
        .report_compromised_with(
            &[blank.plaintext.expose_secret().to_owned()],
            options,
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(report[0].status, CompromiseStatus::Revoked);
    let event = event_of(&keys, blank.key.id, event_type::KEY_COMPROMISED).await;
    assert_eq!(
        event.details["source"],
        serde_json::Value::Null,
        "{event:?}"
    );
}
both_backends!(keys_in_free_text_are_refused_or_hidden, keys_in_free_text);

/// A last-used flush larger than one of the SQLite store's statements
/// (1,000 keys) writes every key, and never moves a time backwards.
async fn large_last_used_flush(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let mut ids = Vec::new();
    for i in 0..1_200 {
        ids.push(key(&keys, &format!("k{i}"), &["a:b"]).await.key.id);
    }
    let first = clock.now().replace_nanosecond(0).unwrap();
    let all: Vec<_> = ids.iter().map(|id| (*id, first)).collect();
    db.store.touch_last_used(&all).await.unwrap();
    // Forward for even keys, backward for odd ones.
    let second: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let step = if i % 2 == 0 {
                Duration::SECOND
            } else {
                -Duration::SECOND
            };
            (*id, first + step)
        })
        .collect();
    db.store.touch_last_used(&second).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let stored = db.store.get(*id).await.unwrap().expect("stored");
        let expected = if i % 2 == 0 {
            first + Duration::SECOND
        } else {
            first
        };
        assert_eq!(stored.last_used_at, Some(expected), "key {i}");
    }
}
both_backends!(
    a_large_last_used_flush_writes_every_key,
    large_last_used_flush
);

/// Pruning deletes only `auth.failed` events older than asked, oldest first
/// and at most the limit a statement; everything else is kept.
async fn pruning_auth_failures(db: &TestDb) {
    use scopekey_runtime::AuditEvent;
    let (keys, clock) = runtime(db);
    let k = key(&keys, "kept", &["a:b"]).await;
    let now = clock.now();
    let event = |kind: &str, age: Duration| AuditEvent {
        id: uuid::Uuid::now_v7(),
        key_id: Some(k.key.id),
        kind: kind.to_owned(),
        actor_key_id: None,
        at: (now - age).replace_nanosecond(0).unwrap(),
        details: serde_json::json!({}),
    };
    let ages = [100, 95, 91, 89, 1].map(Duration::days);
    let mut old_failures = Vec::new();
    for age in ages {
        let failed = event("auth.failed", age);
        if age > Duration::days(90) {
            old_failures.push(failed.id);
        }
        db.store.insert_event(&failed).await.unwrap();
        db.store
            .insert_event(&event("key.rotated", age))
            .await
            .unwrap();
    }
    let count = |kind: &'static str| {
        let keys = keys.clone();
        async move {
            keys.events(&ListEvents {
                limit: Some(500),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.kind == kind)
            .count()
        }
    };

    // The store: oldest first, at most the limit.
    let before = now - Duration::days(90);
    assert_eq!(
        db.store
            .delete_events_before("auth.failed", before, 2)
            .await
            .unwrap(),
        2
    );
    let left: Vec<_> = keys
        .events(&ListEvents::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.kind == "auth.failed")
        .map(|e| e.id)
        .collect();
    assert!(!left.contains(&old_failures[0]) && !left.contains(&old_failures[1]));
    assert!(left.contains(&old_failures[2]), "the third oldest is next");

    // The runtime: everything older than asked, nothing else.
    assert_eq!(
        keys.prune_auth_failures(Duration::days(90)).await.unwrap(),
        1
    );
    assert_eq!(count("auth.failed").await, 2, "89 and 1 days old are kept");
    assert_eq!(count("key.rotated").await, 5, "other events are kept");
    assert_eq!(count("key.created").await, 1);
    assert_eq!(
        keys.prune_auth_failures(Duration::days(90)).await.unwrap(),
        0
    );
    // By the runtime's clock.
    clock.advance(Duration::days(2));
    assert_eq!(
        keys.prune_auth_failures(Duration::days(90)).await.unwrap(),
        1
    );
    assert_eq!(keys.prune_auth_failures(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(count("auth.failed").await, 0);
    assert!(matches!(
        keys.prune_auth_failures(Duration::seconds(-1)).await,
        Err(Error::Invalid(_))
    ));
}
both_backends!(auth_failures_are_pruned, pruning_auth_failures);

/// A rotation period edited by hand in the store, out of range, fails the
/// key's rotation as corrupt data (the notifier passes such a key over),
/// instead of overflowing the successor's expiry and panicking.
async fn corrupt_rotation_period(db: &TestDb) {
    let (keys, _) = runtime(db);
    let k = keys
        .create(
            NewKey::new("policy", ["a:b"]).rotate_every(Duration::days(90)),
            Actor::System,
        )
        .await
        .unwrap();
    db.execute(&format!(
        "UPDATE scopekey_keys SET rotation_period_seconds = {} WHERE id = '{}'",
        i64::MAX,
        k.key.id
    ))
    .await;
    let refused = keys
        .rotate(k.key.id, RotateOptions::default(), Actor::System)
        .await;
    assert!(
        matches!(&refused, Err(Error::Unavailable(e)) if e.is_corrupt()),
        "{refused:?}"
    );
    assert!(db.store.successor(k.key.id).await.unwrap().is_none());
    // The key can still be revoked.
    keys.revoke(k.key.id, Some("odd"), Actor::System)
        .await
        .unwrap();
}
both_backends!(
    a_corrupt_rotation_period_fails_the_rotation_only,
    corrupt_rotation_period
);

/// The calling key read back (`GET /api-keys/self`): a key this node still
/// holds as valid, revoked or rotated out by another node, is refused as
/// any request with it is, and the refusal is audited with its reason.
async fn own_key_read_back(db: &TestDb) {
    let (keys, clock) = runtime(db);
    let elsewhere = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let live = key(&keys, "live", &["a:b"]).await;
    let live_p = keys.verify(live.plaintext.expose_secret()).await.unwrap();
    assert_eq!(keys.get_self(&live_p).await.unwrap().id, live.key.id);

    let revoked = key(&keys, "revoked", &["a:b"]).await;
    let revoked_p = keys
        .verify(revoked.plaintext.expose_secret())
        .await
        .unwrap();
    elsewhere
        .revoke(revoked.key.id, None, Actor::System)
        .await
        .unwrap();
    let ended = key(&keys, "ended", &["a:b"]).await;
    let ended_p = keys.verify(ended.plaintext.expose_secret()).await.unwrap();
    let options = RotateOptions {
        grace: Some(Duration::ZERO),
        ..RotateOptions::default()
    };
    elsewhere
        .rotate(ended.key.id, options, Actor::System)
        .await
        .unwrap();
    for (p, reason) in [(&revoked_p, "revoked"), (&ended_p, "expired")] {
        let refused = keys.get_self(p).await;
        assert!(matches!(refused, Err(Error::ActorRevoked)), "{refused:?}");
        let failed = event_of(&keys, p.id, event_type::AUTH_FAILED).await;
        assert_eq!(failed.details["reason"], reason);
        assert_eq!(failed.details["action"], "self");
    }
    // The entry is dropped: the next request reads the store and refuses.
    assert!(matches!(
        keys.verify(revoked.plaintext.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
}
both_backends!(own_key_read_back_is_refused_once_invalid, own_key_read_back);
