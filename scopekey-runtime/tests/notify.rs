//! Expiry notices and webhook delivery on both stores, against a local
//! receiver on 127.0.0.1. Time is the runtime's manual clock: retries are
//! driven by moving it and calling `run_once`/`deliver_due`, never by
//! sleeping; the only waits are bounded ones for the local receiver.

#![cfg(feature = "webhooks")]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use scopekey_runtime::notify::config::MAX_SETTING;
use scopekey_runtime::notify::outbox::key_event_data;
use scopekey_runtime::notify::signature::Secret;
use scopekey_runtime::notify::{
    DeliveryFilter, DeliveryState, EndpointConfig, Notifier, NotifierConfig, Outbox,
    WebhookVerifier, event_type as webhook_event,
};
use scopekey_runtime::testing::{
    Backend, PausingStore, TestDb, auto_rotating, someone_waits_for_a_lock,
};
use scopekey_runtime::{
    Actor, AuditEvent, Clock, KeyId, ListEvents, ManualClock, NewKey, RotateOptions, ScopeKey,
    Status, VerifyError, both_backends, event_type,
};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 receiver: records each request, answers from a script.

#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    /// Never answers (a receiver that hangs).
    Hang,
    /// Answers 200 after this long (a slow receiver).
    Slow(StdDuration),
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/scopekey", listener.local_addr().unwrap());
        let this = Self {
            url,
            received: Arc::default(),
            script: Arc::default(),
        };
        let server = this.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(conn).await });
            }
        });
        this
    }

    /// Answers the next requests with these replies, then 200.
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits (at most 10 s of real time) until `n` requests have arrived.
    async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
        while self.count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        self.received.lock().unwrap().push(Received {
            path,
            headers,
            body,
        });
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Status(200));
        let (status, extra) = match reply {
            Reply::Status(s) => (s, String::new()),
            Reply::WithHeader(s, k, v) => (s, format!("{k}: {v}\r\n")),
            Reply::Hang => {
                tokio::time::sleep(StdDuration::from_secs(3600)).await;
                return;
            }
            Reply::Slow(wait) => {
                tokio::time::sleep(wait).await;
                (200, String::new())
            }
        };
        let response = format!(
            "HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n"
        );
        let _ = conn.write_all(response.as_bytes()).await;
        let _ = conn.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Set-up.

fn config(receiver: &Receiver) -> NotifierConfig {
    NotifierConfig {
        endpoints: vec![EndpointConfig::new(&receiver.url, SECRET.parse().unwrap())],
        request_timeout: StdDuration::from_secs(5),
        initial_backoff: Duration::seconds(10),
        max_backoff: Duration::hours(1),
        max_attempts: 5,
        lease: Duration::minutes(5),
        ..NotifierConfig::default()
    }
}

struct Env {
    keys: ScopeKey,
    clock: ManualClock,
    notifier: Notifier,
    receiver: Receiver,
}

async fn env_with(db: &TestDb, tweak: impl FnOnce(&mut NotifierConfig)) -> Env {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let receiver = Receiver::start().await;
    let mut cfg = config(&receiver);
    tweak(&mut cfg);
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, cfg).unwrap();
    notifier.register().await.unwrap();
    Env {
        keys,
        clock,
        notifier,
        receiver,
    }
}

async fn env(db: &TestDb) -> Env {
    env_with(db, |_| {}).await
}

async fn key_expiring_in(keys: &ScopeKey, name: &str, ttl: Duration) -> KeyId {
    keys.create(
        NewKey::new(name, ["orders:read"]).expires_in(ttl),
        Actor::System,
    )
    .await
    .unwrap()
    .key
    .id
}

async fn events_of(keys: &ScopeKey, id: KeyId, kind: &str) -> Vec<AuditEvent> {
    keys.events(&ListEvents {
        key_id: Some(id),
        limit: Some(500),
        ..Default::default()
    })
    .await
    .unwrap()
    .items
    .into_iter()
    .filter(|e| e.kind == kind)
    .collect()
}

async fn all_events(keys: &ScopeKey, kind: &str) -> Vec<AuditEvent> {
    keys.events(&ListEvents {
        limit: Some(500),
        ..Default::default()
    })
    .await
    .unwrap()
    .items
    .into_iter()
    .filter(|e| e.kind == kind)
    .collect()
}

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(SECRET).unwrap()
}

/// The request verifies with the Standard Webhooks algorithm, as of the
/// runtime's clock.
fn assert_signed(r: &Received, clock: &ManualClock) {
    assert!(
        signed_with(&verifier(), r, clock),
        "a valid Standard Webhooks signature"
    );
}

/// Whether the request verifies with this verifier, as of the runtime's
/// clock.
fn signed_with(verifier: &WebhookVerifier, r: &Received, clock: &ManualClock) -> bool {
    verifier
        .verify_at(
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            r.body.as_bytes(),
            clock.now(),
        )
        .is_ok()
}

// ---------------------------------------------------------------------------
// Notices.

async fn one_notice_per_key_and_threshold(db: &TestDb) {
    let e = env(db).await;
    let soon = key_expiring_in(&e.keys, "soon", Duration::days(10)).await;
    let later = key_expiring_in(&e.keys, "later", Duration::days(20)).await;
    let revoked = key_expiring_in(&e.keys, "revoked", Duration::days(3)).await;
    e.keys
        .revoke(revoked, Some("gone"), Actor::System)
        .await
        .unwrap();
    // Rotated: the old key now ends with its grace (a day), the successor
    // gets 20 days afresh; neither is due a notice.
    let rotated = key_expiring_in(&e.keys, "rotated", Duration::days(20)).await;
    let successor = e
        .keys
        .rotate(rotated, RotateOptions::default(), Actor::System)
        .await
        .unwrap();
    let forever = e
        .keys
        .create(NewKey::new("forever", ["a:b"]), Actor::System)
        .await
        .unwrap()
        .key
        .id;

    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(
        (pass.notices, pass.deliveries.delivered),
        (1, 1),
        "{pass:?}"
    );
    e.receiver.wait_for(1).await;
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/hooks/scopekey");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("webhook-timestamp"),
        e.clock.now().unix_timestamp().to_string()
    );
    assert_signed(r, &e.clock);
    let body = r.json();
    assert_eq!(body["type"], "key.expiring");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["id"], soon.to_string());
    assert_eq!(body["data"]["name"], "soon");
    assert_eq!(body["data"]["status"], "active");
    assert_eq!(body["data"]["threshold_seconds"], 14 * DAY);
    assert!(body["data"].get("key_hash").is_none() && body["data"].get("key").is_none());

    // One event; the delivery is the one received and is delivered.
    let notices = events_of(&e.keys, soon, event_type::KEY_EXPIRING).await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].details["threshold_seconds"], 14 * DAY);
    let deliveries = e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].id.to_string(), r.header("webhook-id"));
    assert_eq!(deliveries[0].event_id, notices[0].id);
    assert_eq!(deliveries[0].state, DeliveryState::Delivered);
    assert_eq!(deliveries[0].attempts, 1);
    for quiet in [later, revoked, rotated, successor.key.id, forever] {
        assert!(
            events_of(&e.keys, quiet, event_type::KEY_EXPIRING)
                .await
                .is_empty()
        );
    }

    // A second pass sends nothing new.
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(pass, Default::default());
    assert_eq!(e.receiver.count(), 1);

    // Six days and a second later, the 20-day key is 14 days out.
    e.clock.advance(Duration::days(6) - Duration::seconds(1));
    assert_eq!(e.notifier.run_once().await.unwrap().notices, 0, "not yet");
    e.clock.advance(Duration::seconds(2));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(
        (pass.notices, pass.deliveries.delivered),
        (2, 2),
        "the 20-day key and the successor"
    );
    let noticed: HashSet<String> = e.receiver.requests()[1..]
        .iter()
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        noticed,
        HashSet::from([later.to_string(), successor.key.id.to_string()])
    );
    assert_eq!(e.notifier.run_once().await.unwrap(), Default::default());
    assert_eq!(e.receiver.count(), 3);
    assert_eq!(all_events(&e.keys, event_type::KEY_EXPIRING).await.len(), 3);
    assert!(
        events_of(&e.keys, rotated, event_type::KEY_EXPIRING)
            .await
            .is_empty()
    );
}
both_backends!(
    one_notice_per_key_and_threshold_works,
    one_notice_per_key_and_threshold
);

async fn several_thresholds(db: &TestDb) {
    let e = env_with(db, |c| {
        c.thresholds = vec![Duration::days(1), Duration::days(14)]
    })
    .await;
    let ten_days = key_expiring_in(&e.keys, "ten days", Duration::days(10)).await;
    let half_day = key_expiring_in(&e.keys, "half a day", Duration::hours(12)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().notices, 2);
    // The half-day key gets only the closest threshold's notice.
    let outbox = e.notifier.outbox().clone();
    let thresholds = |id| {
        let outbox = outbox.clone();
        async move {
            outbox
                .notices(id)
                .await
                .unwrap()
                .iter()
                .map(|n| n.threshold_seconds)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(thresholds(ten_days).await, [14 * DAY]);
    assert_eq!(thresholds(half_day).await, [DAY]);
    assert_eq!(e.notifier.run_once().await.unwrap().notices, 0);

    e.clock.advance(Duration::hours(13));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(
        (pass.notices, pass.expired),
        (0, 1),
        "the half-day key expired"
    );
    e.clock
        .advance(Duration::days(9) - Duration::hours(13) + Duration::seconds(1));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.expired), (1, 0));
    assert_eq!(thresholds(ten_days).await, [14 * DAY, DAY]);
    assert_eq!(e.receiver.count(), 3, "key.expired is not subscribed");
    let bodies: Vec<Value> = e.receiver.requests().iter().map(Received::json).collect();
    assert_eq!(bodies[2]["data"]["threshold_seconds"], DAY);
    assert_eq!(
        events_of(&e.keys, half_day, event_type::KEY_EXPIRED)
            .await
            .len(),
        1
    );
    assert_eq!(e.notifier.run_once().await.unwrap(), Default::default());
}
both_backends!(several_thresholds_work, several_thresholds);

async fn expired_events(db: &TestDb) {
    let e = env_with(db, |c| {
        c.endpoints[0].events = vec!["key.expiring".into(), "key.expired".into()];
    })
    .await;
    let k = key_expiring_in(&e.keys, "short", Duration::hours(1)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().notices, 1);
    e.clock.advance(Duration::hours(2));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.expired, pass.deliveries.delivered), (1, 1));
    assert_eq!(e.notifier.run_once().await.unwrap(), Default::default());
    let last = e.receiver.requests().pop().unwrap();
    assert_eq!(last.json()["type"], "key.expired");
    assert_eq!(last.json()["data"]["status"], "expired");
    assert_eq!(
        events_of(&e.keys, k, event_type::KEY_EXPIRED).await.len(),
        1
    );

    // Keys long expired before the notifier first ran are left alone.
    let old = key_expiring_in(&e.keys, "old", Duration::hours(1)).await;
    e.clock.advance(Duration::days(30));
    assert_eq!(e.notifier.run_once().await.unwrap().expired, 0);
    assert!(
        events_of(&e.keys, old, event_type::KEY_EXPIRED)
            .await
            .is_empty()
    );
}
both_backends!(expired_events_work, expired_events);

/// Keys whose rows cannot be read (corrupt metadata) are passed over one
/// by one, and a whole page of them holds up none of the keys after them:
/// the listing goes on from where the page ended, for notices and for
/// `key.expired` events alike.
async fn unreadable_keys_hold_up_no_notice(db: &TestDb) {
    let e = env_with(db, |c| c.batch_size = 2).await;
    let mut bad = Vec::new();
    for hours in [1, 2, 3] {
        bad.push(key_expiring_in(&e.keys, &format!("bad {hours}"), Duration::hours(hours)).await);
    }
    let good = key_expiring_in(&e.keys, "good", Duration::hours(4)).await;
    for id in &bad {
        db.execute(&match db.backend() {
            // Not JSON; on PostgreSQL, JSON but not an object.
            Backend::Sqlite => format!("UPDATE scopekey_keys SET metadata = 'x' WHERE id = '{id}'"),
            Backend::Postgres => {
                format!("UPDATE scopekey_keys SET metadata = '[1]' WHERE id = '{id}'")
            }
        })
        .await;
    }
    assert!(e.keys.get(bad[0]).await.is_err(), "the row is unreadable");

    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(pass.notices, 1, "{pass:?}");
    assert_eq!(
        events_of(&e.keys, good, event_type::KEY_EXPIRING)
            .await
            .len(),
        1
    );

    // Expired, the same: the good key's event comes after two pages of bad
    // ones.
    e.clock.advance(Duration::hours(5));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(pass.expired, 1, "{pass:?}");
    assert_eq!(
        events_of(&e.keys, good, event_type::KEY_EXPIRED)
            .await
            .len(),
        1
    );
}
both_backends!(
    unreadable_keys_hold_up_no_notice_works,
    unreadable_keys_hold_up_no_notice
);

/// An endpoint row that cannot be read is not any key's data: recording a
/// notice (which enqueues for every endpoint) fails for every key alike,
/// and the pass says so instead of passing each key over and reporting
/// success.
async fn an_unreadable_endpoint_is_the_stores_failure(db: &TestDb) {
    let e = env(db).await;
    let k = key_expiring_in(&e.keys, "k", Duration::hours(1)).await;
    db.execute(match db.backend() {
        Backend::Sqlite => "UPDATE scopekey_webhook_endpoints SET event_types = 'x'",
        Backend::Postgres => r#"UPDATE scopekey_webhook_endpoints SET event_types = '{"a": 1}'"#,
    })
    .await;
    let error = e.notifier.run_once().await.unwrap_err();
    assert!(
        matches!(error, scopekey_runtime::notify::NotifyError::Unavailable(_)),
        "{error:?}"
    );
    assert!(
        events_of(&e.keys, k, event_type::KEY_EXPIRING)
            .await
            .is_empty()
    );
    // A rotation, which enqueues its events too: the store's failure, not
    // the key's corrupt data (which the notifier's automatic rotation
    // would pass over).
    match e
        .keys
        .rotate(k, RotateOptions::default(), Actor::System)
        .await
    {
        Err(scopekey_runtime::Error::Unavailable(store)) => {
            assert!(!store.is_corrupt(), "{store:?}")
        }
        other => panic!("{other:?}"),
    }
}
both_backends!(
    an_unreadable_endpoint_is_the_stores_failure_works,
    an_unreadable_endpoint_is_the_stores_failure
);

async fn concurrent_notifiers(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let receiver = Receiver::start().await;
    let mut notifiers = Vec::new();
    for _ in 0..2 {
        // Each instance: its own runtime, its own pool, the same database.
        let store = scopekey_runtime::open(&db.url).await.unwrap();
        let keys = ScopeKey::builder_arc(store).clock(clock.clone()).build();
        let outbox = Outbox::connect(&db.url).await.unwrap();
        let mut cfg = config(&receiver);
        cfg.batch_size = 3;
        notifiers.push((keys.clone(), Notifier::new(keys, outbox, cfg).unwrap()));
    }
    let keys = &notifiers[0].0;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(key_expiring_in(keys, &format!("k{i}"), Duration::days(10)).await);
    }
    for _ in 0..3 {
        let (a, b) = tokio::join!(notifiers[0].1.run_once(), notifiers[1].1.run_once());
        let (a, b) = (a.unwrap(), b.unwrap());
        eprintln!("instance a: {a:?}\ninstance b: {b:?}");
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 12, "each notice sent once");
    let delivery_ids: HashSet<_> = requests
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(delivery_ids.len(), 12);
    let noticed: HashSet<_> = requests
        .iter()
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(noticed, ids.iter().map(|i| i.to_string()).collect());
    for id in &ids {
        assert_eq!(
            events_of(keys, *id, event_type::KEY_EXPIRING).await.len(),
            1
        );
    }
    let endpoints = notifiers[0].1.outbox().endpoints().await.unwrap();
    assert_eq!(endpoints.len(), 1, "one endpoint row for one URL");
}
both_backends!(concurrent_notifiers_send_once, concurrent_notifiers);

// ---------------------------------------------------------------------------
// Delivery.

async fn retries_until_delivered(db: &TestDb) {
    let e = env(db).await;
    e.receiver
        .script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    let k = key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.deliveries.retried), (1, 1));
    // Not due again before its backoff.
    assert_eq!(e.notifier.deliver_due().await.unwrap(), Default::default());
    let mut timestamps = vec![e.clock.now().unix_timestamp()];
    for (wait, expect_delivered) in [(10, false), (20, false), (40, true)] {
        e.clock.advance(Duration::seconds(wait));
        timestamps.push(e.clock.now().unix_timestamp());
        let report = e.notifier.deliver_due().await.unwrap();
        assert_eq!(report.delivered == 1, expect_delivered, "{report:?}");
    }
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 4);
    let id = requests[0].header("webhook-id");
    assert!(
        requests.iter().all(|r| r.header("webhook-id") == id),
        "same webhook-id on every attempt"
    );
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "same body on every attempt"
    );
    let sent: Vec<i64> = requests
        .iter()
        .map(|r| r.header("webhook-timestamp").parse().unwrap())
        .collect();
    assert_eq!(
        sent, timestamps,
        "each attempt is stamped (and signed) at its own time"
    );
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter {
            key_id: Some(k),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Delivered, 4, Some(200))
    );
    assert!(d.claimed_until.is_none());
    assert_eq!(e.notifier.run_once().await.unwrap(), Default::default());
}
both_backends!(retries_until_delivered_works, retries_until_delivered);

async fn restart_between_attempts(db: &TestDb) {
    let e = env(db).await;
    e.receiver.script([Reply::Status(503)]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.retried, 1);
    drop(e.notifier);

    // A new process: a new runtime, outbox and notifier on the same database.
    let store = scopekey_runtime::open(&db.url).await.unwrap();
    let keys = ScopeKey::builder_arc(store).clock(e.clock.clone()).build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys, outbox, config(&e.receiver)).unwrap();
    assert_eq!(
        notifier.run_once().await.unwrap(),
        Default::default(),
        "not due yet"
    );
    e.clock.advance(Duration::minutes(5));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.deliveries.delivered), (0, 1));
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
}
both_backends!(
    restart_between_attempts_loses_nothing,
    restart_between_attempts
);

async fn expired_lease_is_reclaimed(db: &TestDb) {
    let e = env_with(db, |c| c.request_timeout = StdDuration::from_secs(30)).await;
    e.receiver.script([Reply::Hang]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.record_notices().await.unwrap(), (1, 0));
    // The sender dies mid-request (dropped once the receiver holds its
    // request): its claim stays until the lease expires.
    tokio::select! {
        sent = e.notifier.deliver_due() => panic!("the hanging receiver holds the sender: {sent:?}"),
        () = e.receiver.wait_for(1) => {}
    }
    let pending = e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(pending[0].state, DeliveryState::Pending);
    assert_eq!(
        pending[0].claimed_until,
        Some(e.clock.now() + Duration::minutes(5))
    );

    // Another sender leaves the claimed row alone until the lease runs out.
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let other = Notifier::new(e.keys.clone(), outbox, config(&e.receiver)).unwrap();
    assert_eq!(other.deliver_due().await.unwrap(), Default::default());
    e.clock.advance(Duration::minutes(4));
    assert_eq!(other.deliver_due().await.unwrap(), Default::default());
    e.clock.advance(Duration::minutes(1));
    assert_eq!(other.deliver_due().await.unwrap().delivered, 1);
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
}
both_backends!(expired_lease_is_reclaimed_works, expired_lease_is_reclaimed);

async fn gone_disables_endpoint(db: &TestDb) {
    let e = env(db).await;
    e.receiver.script([Reply::Status(410)]);
    let k = key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.failed, 1);
    let endpoint = &e.notifier.outbox().endpoints().await.unwrap()[0];
    assert!(endpoint.disabled_at.is_some());
    assert_eq!(endpoint.disabled_reason.as_deref(), Some("410 Gone"));
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()[0];
    assert_eq!((d.state, d.last_status), (DeliveryState::Failed, Some(410)));
    assert_eq!(
        events_of(&e.keys, k, webhook_event::WEBHOOK_FAILED)
            .await
            .len(),
        1
    );
    let disabled = events_of(&e.keys, k, webhook_event::WEBHOOK_ENDPOINT_DISABLED).await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(
        disabled[0].details["url"],
        e.receiver.url.trim_end_matches("/hooks/scopekey")
    );
    assert_eq!(
        disabled[0].details["endpoint_id"],
        d.endpoint_id.to_string()
    );

    // Nothing more is enqueued for it or sent to it.
    key_expiring_in(&e.keys, "k2", Duration::days(10)).await;
    e.clock.advance(Duration::days(1));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.deliveries), (1, Default::default()));
    assert_eq!(e.receiver.count(), 1);
    assert_eq!(
        e.notifier
            .outbox()
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // A restart keeps it disabled; an operator can enable it again.
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let again = Notifier::new(e.keys.clone(), outbox.clone(), config(&e.receiver)).unwrap();
    again.register().await.unwrap();
    assert!(outbox.endpoints().await.unwrap()[0].disabled_at.is_some());
    assert!(outbox.enable_endpoint(&e.receiver.url).await.unwrap());
    assert!(
        !outbox.enable_endpoint(&e.receiver.url).await.unwrap(),
        "already enabled"
    );
    key_expiring_in(&e.keys, "k3", Duration::days(10)).await;
    assert_eq!(again.run_once().await.unwrap().deliveries.delivered, 1);
}
both_backends!(gone_disables_endpoint_works, gone_disables_endpoint);

async fn redirect_is_a_failure(db: &TestDb) {
    let e = env(db).await;
    e.receiver
        .script([Reply::WithHeader(302, "location", "/elsewhere")]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.retried, 1);
    assert_eq!(e.receiver.count(), 1, "the redirect was not followed");
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Pending, 1, Some(302))
    );
    assert!(d.last_error.as_deref().unwrap().contains("redirect"));
    e.clock.advance(Duration::seconds(10));
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.delivered, 1);
    assert!(
        e.receiver
            .requests()
            .iter()
            .all(|r| r.path == "/hooks/scopekey")
    );
}
both_backends!(redirect_is_a_failure_works, redirect_is_a_failure);

async fn attempts_exhausted(db: &TestDb) {
    let e = env_with(db, |c| c.max_attempts = 3).await;
    e.receiver.script([
        Reply::Status(500),
        Reply::Status(400),
        Reply::Status(500),
        Reply::Status(200),
    ]);
    let k = key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    let mut failed = 0;
    for _ in 0..5 {
        failed += e.notifier.run_once().await.unwrap().deliveries.failed;
        e.clock.advance(Duration::hours(1));
    }
    assert_eq!(failed, 1);
    assert_eq!(e.receiver.count(), 3, "no attempt after the last");
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Failed, 3, Some(500))
    );
    let audit = events_of(&e.keys, k, webhook_event::WEBHOOK_FAILED).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].details["attempts"], 3);
    assert_eq!(audit[0].details["delivery_id"], d.id.to_string());
    // Scheme, host and port only: a receiver's path may hold a token.
    let origin = e.receiver.url.trim_end_matches("/hooks/scopekey");
    assert_eq!(audit[0].details["url"], origin);
    assert_eq!(audit[0].details["endpoint_id"], d.endpoint_id.to_string());
    assert!(
        !serde_json::to_string(&audit[0])
            .unwrap()
            .contains("/hooks/scopekey")
    );
    assert_eq!(audit[0].details["event_type"], "key.expiring");
}
both_backends!(attempts_exhausted_fail_and_audit, attempts_exhausted);

/// Finished deliveries (delivered or failed) are deleted once they finished
/// longer than the retention ago; pending ones never are, and the audit log
/// keeps everything.
async fn finished_deliveries_are_pruned(db: &TestDb) {
    let e = env_with(db, |c| {
        c.max_attempts = 2;
        c.delivery_retention = Some(Duration::days(10));
    })
    .await;
    let outbox = e.notifier.outbox();
    let listed = || async {
        let mut states: Vec<_> = outbox
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.state.as_str(), d.finished_at))
            .collect();
        states.sort();
        states
    };
    let start = e.clock.now();
    for name in ["a", "b", "c"] {
        key_expiring_in(&e.keys, name, Duration::days(10)).await;
    }
    // At `start`: one delivered, two to retry; an hour later, one of those
    // delivered and one given up.
    e.receiver
        .script([Reply::Status(200), Reply::Status(500), Reply::Status(500)]);
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.deliveries.delivered, pass.pruned), (1, 0), "{pass:?}");
    e.clock.advance(Duration::hours(1));
    e.receiver.script([Reply::Status(500), Reply::Status(200)]);
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(
        (pass.deliveries.delivered, pass.deliveries.failed),
        (1, 1),
        "{pass:?}"
    );
    // A fourth, still pending (its retry is due in 10 s).
    key_expiring_in(&e.keys, "d", Duration::days(10)).await;
    e.receiver.script([Reply::Status(500)]);
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.retried, 1);
    let hour = start + Duration::hours(1);
    let before = listed().await;
    assert_eq!(
        before,
        [
            ("delivered", Some(start)),
            ("delivered", Some(hour)),
            ("failed", Some(hour)),
            ("pending", None),
        ]
    );
    let delivered_body = outbox.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(
        delivered_body
            .iter()
            .all(|d| d.payload.starts_with('{') && d.payload.contains("key.expiring")),
        "an operator's payload is kept until the delivery is pruned"
    );

    // Just short of ten days after the first finished: nothing goes.
    e.clock
        .advance(Duration::days(10) - Duration::hours(1) - Duration::SECOND);
    assert_eq!(e.notifier.prune_deliveries().await.unwrap(), 0);
    assert_eq!(listed().await, before);
    // Exactly ten days: still kept (only what finished before the cutoff
    // goes).
    e.clock.advance(Duration::SECOND);
    assert_eq!(e.notifier.prune_deliveries().await.unwrap(), 0);
    assert_eq!(listed().await, before);
    // Past it: only that one.
    e.clock.advance(Duration::SECOND);
    assert_eq!(e.notifier.prune_deliveries().await.unwrap(), 1);
    assert_eq!(listed().await, before[1..]);
    // A notifier without a retention keeps them.
    let keeper = Notifier::new(
        e.keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        NotifierConfig {
            delivery_retention: None,
            ..config(&e.receiver)
        },
    )
    .unwrap();
    e.clock.advance(Duration::days(365));
    assert_eq!(keeper.prune_deliveries().await.unwrap(), 0);
    assert_eq!(listed().await.len(), 3);
    // The pending one, enqueued a year ago, is kept however old; the other
    // two finished ones go.
    assert_eq!(e.notifier.prune_deliveries().await.unwrap(), 2);
    assert_eq!(listed().await, [("pending", None)]);
    // A pass sends it; just finished, it is kept.
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.deliveries.delivered, pass.pruned), (1, 0), "{pass:?}");
    let after = listed().await;
    assert_eq!(after, [("delivered", Some(e.clock.now()))]);
    // The audit log keeps every event.
    assert_eq!(all_events(&e.keys, event_type::KEY_EXPIRING).await.len(), 4);
    assert_eq!(
        all_events(&e.keys, webhook_event::WEBHOOK_FAILED)
            .await
            .len(),
        1
    );
}
both_backends!(
    finished_deliveries_are_pruned_works,
    finished_deliveries_are_pruned
);

/// Pruning goes on a batch at a time until nothing finished is left past
/// the retention.
async fn pruning_runs_in_batches(db: &TestDb) {
    let e = env(db).await;
    let outbox = e.notifier.outbox();
    for _ in 0..2_500 {
        let event = AuditEvent {
            id: uuid::Uuid::now_v7(),
            key_id: None,
            kind: event_type::KEY_EXPIRING.into(),
            actor_key_id: None,
            at: e.clock.now(),
            details: json!({}),
        };
        assert_eq!(outbox.enqueue(&event, json!({})).await.unwrap(), 1);
    }
    db.execute("UPDATE scopekey_deliveries SET state = 'delivered', finished_at = created_at")
        .await;
    e.clock.advance(Duration::days(31));
    assert_eq!(e.notifier.prune_deliveries().await.unwrap(), 2_500);
    let left = outbox.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(left.is_empty(), "{} left", left.len());
}
both_backends!(pruning_runs_in_batches_works, pruning_runs_in_batches);

/// A `key.expiring` event at `at`, about no key.
fn expiring_event(at: time::OffsetDateTime) -> AuditEvent {
    AuditEvent {
        id: uuid::Uuid::now_v7(),
        key_id: None,
        kind: event_type::KEY_EXPIRING.into(),
        actor_key_id: None,
        at,
        details: json!({}),
    }
}

/// A pass whose delivery cannot be recorded (the database refuses to
/// change any delivery's state) fails, and still deletes the finished
/// deliveries past their retention.
async fn pruning_runs_when_recording_a_delivery_fails(db: &TestDb) {
    let e = env(db).await;
    let outbox = e.notifier.outbox();
    for _ in 0..3 {
        outbox
            .enqueue(&expiring_event(e.clock.now()), json!({}))
            .await
            .unwrap();
    }
    db.execute("UPDATE scopekey_deliveries SET state = 'delivered', finished_at = created_at")
        .await;
    db.execute(match db.backend() {
        Backend::Sqlite => {
            "CREATE TRIGGER no_outcomes BEFORE UPDATE OF state ON scopekey_deliveries \
             BEGIN SELECT RAISE(ABORT, 'outcomes refused'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION no_outcomes() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'outcomes refused'; END $$; \
             CREATE TRIGGER no_outcomes BEFORE UPDATE OF state ON scopekey_deliveries \
             FOR EACH ROW EXECUTE FUNCTION no_outcomes();"
        }
    })
    .await;
    e.clock.advance(Duration::days(31));
    let k = key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    let error = e.notifier.run_once().await.unwrap_err();
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    assert!(chain.contains("outcomes refused"), "{chain}");
    assert_eq!(e.receiver.count(), 1, "the delivery was sent");
    let left = outbox.deliveries(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(left.len(), 1, "the old finished ones are gone: {left:?}");
    assert_eq!(
        (left[0].key_id, left[0].state),
        (Some(k), DeliveryState::Pending)
    );
}
both_backends!(
    pruning_runs_when_recording_a_delivery_fails_works,
    pruning_runs_when_recording_a_delivery_fails
);

/// Migration 0006 erases the sealed payloads of deliveries that finished
/// before it; a pending one, and plain payloads, are kept.
async fn the_migration_erases_finished_sealed_payloads(db: &TestDb) {
    let e = env(db).await;
    for name in ["a", "b", "c"] {
        key_expiring_in(&e.keys, name, Duration::days(10)).await;
    }
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.delivered, 3);
    let payloads = || async {
        let mut all: Vec<_> = e
            .notifier
            .outbox()
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.payload))
            .collect();
        all.sort();
        all
    };
    let before = payloads().await;
    let (finished, pending) = (before[0].0, before[1].0);
    // Back to the schema before 0006, with sealed payloads left in place.
    db.execute(&format!(
        "UPDATE scopekey_deliveries SET payload = 'sealed:v1:AAAA' WHERE id = '{finished}';
         UPDATE scopekey_deliveries SET payload = 'sealed:v1:BBBB', state = 'pending',
             finished_at = NULL WHERE id = '{pending}';
         DROP INDEX scopekey_deliveries_finished;
         DROP INDEX scopekey_deliveries_created;
         DELETE FROM _scopekey_migrations WHERE version = 6;"
    ))
    .await;
    db.store.migrate().await.unwrap();
    let after = payloads().await;
    assert_eq!(after[0], (finished, String::new()));
    assert_eq!(after[1], (pending, "sealed:v1:BBBB".to_owned()));
    assert_eq!(after[2], before[2]);
    assert!(after[2].1.starts_with('{'));
}
both_backends!(
    the_migration_erases_finished_sealed_payloads_works,
    the_migration_erases_finished_sealed_payloads
);

async fn throttling_honours_retry_after(db: &TestDb) {
    let e = env(db).await;
    e.receiver
        .script([Reply::WithHeader(429, "retry-after", "1800")]);
    key_expiring_in(&e.keys, "a", Duration::days(10)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.retried, 1);
    let endpoint = &e.notifier.outbox().endpoints().await.unwrap()[0];
    assert_eq!(
        endpoint.paused_until,
        Some(e.clock.now() + Duration::seconds(1800))
    );

    // The endpoint is paused: a fresh notice waits too.
    e.clock.advance(Duration::minutes(20));
    key_expiring_in(&e.keys, "b", Duration::days(10)).await;
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.deliveries), (1, Default::default()));
    assert_eq!(e.receiver.count(), 1);

    e.clock.advance(Duration::minutes(10));
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.delivered, 2);
    assert_eq!(e.receiver.count(), 3);
}
both_backends!(
    throttling_honours_retry_after_works,
    throttling_honours_retry_after
);

/// A delivery far into its retries that is answered 503 without
/// `Retry-After` waits its own backoff (hours), but pauses its endpoint for
/// a first backoff only: a later delivery to the same endpoint goes out
/// within `initial_backoff`, not behind it.
async fn one_throttled_delivery_holds_up_no_other(db: &TestDb) {
    let e = env_with(db, |c| {
        c.max_attempts = 20;
        c.max_backoff = Duration::hours(6);
    })
    .await;
    e.receiver.script([Reply::Status(503)]);
    let first = key_expiring_in(&e.keys, "first", Duration::days(10)).await;
    assert_eq!(e.notifier.record_notices().await.unwrap(), (1, 0));
    db.execute("UPDATE scopekey_deliveries SET attempts = 11")
        .await;
    assert_eq!(e.notifier.deliver_due().await.unwrap().retried, 1);
    let outbox = e.notifier.outbox();
    let of = |id| DeliveryFilter {
        key_id: Some(id),
        ..DeliveryFilter::default()
    };
    let d = &outbox.deliveries(&of(first)).await.unwrap()[0];
    assert_eq!((d.attempts, d.last_status), (12, Some(503)));
    assert!(
        // Half to all of 10 s doubled 11 times: 2.8 to 5.7 hours.
        d.next_attempt_at - e.clock.now() >= Duration::hours(2),
        "its own backoff: {d:?}"
    );
    let endpoint = &outbox.endpoints().await.unwrap()[0];
    let paused = endpoint.paused_until.expect("paused");
    assert!(
        paused <= e.clock.now() + Duration::seconds(10),
        "briefly: {paused}"
    );

    // A `key.compromised` announcement, say: here another notice.
    let second = key_expiring_in(&e.keys, "second", Duration::days(10)).await;
    assert_eq!(e.notifier.record_notices().await.unwrap(), (1, 0));
    e.clock.advance(Duration::seconds(10));
    assert_eq!(e.notifier.deliver_due().await.unwrap().delivered, 1);
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].json()["data"]["id"], second.to_string());
    let d = &outbox.deliveries(&of(first)).await.unwrap()[0];
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 12));
}
both_backends!(
    one_throttled_delivery_holds_up_no_other_works,
    one_throttled_delivery_holds_up_no_other
);

/// `Retry-After: 0` (or a date already past by the receiver's clock) still
/// pauses the endpoint a second: not claimed again within the same pass.
async fn retry_after_zero(db: &TestDb) {
    let e = env(db).await;
    e.receiver
        .script([Reply::WithHeader(503, "Retry-After", "0")]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.record_notices().await.unwrap(), (1, 0));
    assert_eq!(e.notifier.deliver_due().await.unwrap().retried, 1);
    let endpoint = &e.notifier.outbox().endpoints().await.unwrap()[0];
    let paused = endpoint.paused_until.expect("paused");
    assert!(
        paused >= e.clock.now() + Duration::SECOND,
        "paused a second at least: {paused}"
    );
}
both_backends!(retry_after_zero_still_pauses, retry_after_zero);

async fn request_timeout(db: &TestDb) {
    // Short, so that the hang below fails soon; the hang outlasts it
    // whatever its length. The retry, which must succeed, runs under a
    // generous one (a notifier of its own, below).
    let e = env_with(db, |c| c.request_timeout = StdDuration::from_secs(2)).await;
    e.receiver.script([Reply::Hang]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.retried, 1);
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()[0];
    assert!(
        d.last_error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        d.last_error
    );
    // The client's error names no URL: it may carry a credential.
    assert!(
        !d.last_error.as_deref().unwrap().contains("/hooks/scopekey"),
        "{:?}",
        d.last_error
    );
    assert_eq!(d.last_status, None);
    e.clock.advance(Duration::seconds(10));
    let patient = Notifier::new(
        e.keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        NotifierConfig {
            request_timeout: StdDuration::from_secs(60),
            ..config(&e.receiver)
        },
    )
    .unwrap();
    assert_eq!(patient.run_once().await.unwrap().deliveries.delivered, 1);
    assert_eq!(e.receiver.count(), 2);
}
both_backends!(request_timeout_is_a_failure, request_timeout);

async fn rotating_secrets(db: &TestDb) {
    let next = Secret::generate().unwrap();
    let e = env_with(db, |c| c.endpoints[0].secrets.insert(0, next.clone())).await;
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    e.notifier.run_once().await.unwrap();
    let r = &e.receiver.requests()[0];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    // A receiver that knows either secret accepts it.
    assert_signed(r, &e.clock);
    assert!(signed_with(
        &WebhookVerifier::from_secrets([next]),
        r,
        &e.clock
    ));
}
both_backends!(rotating_secrets_sign_twice, rotating_secrets);

// ---------------------------------------------------------------------------
// The background task.

async fn spawned_and_shut_down(db: &TestDb) {
    let e = env_with(db, |c| c.interval = StdDuration::from_millis(50)).await;
    e.receiver.script([Reply::Status(500)]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    let handle = e.notifier.clone().spawn();
    e.receiver.wait_for(1).await;
    // The failed attempt must be recorded before the clock moves, or its
    // backoff would start from the moved clock.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        let d = e
            .notifier
            .outbox()
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap();
        if d.first().is_some_and(|d| d.attempts == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attempt not recorded"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    e.clock.advance(Duration::seconds(10));
    e.receiver.wait_for(2).await;
    handle.shutdown().await;
    let d = &e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()[0];
    assert_eq!((d.state, d.attempts), (DeliveryState::Delivered, 2));
    // Stopped (its task has ended once `shutdown` returns): a key due a
    // notice gets none, however far the clock moves. (A deliberate wait of
    // ten intervals: a task still running would have ticked meanwhile.)
    let k2 = key_expiring_in(&e.keys, "k2", Duration::days(10)).await;
    e.clock.advance(Duration::minutes(10));
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert!(e.notifier.outbox().notices(k2).await.unwrap().is_empty());
    assert!(
        events_of(&e.keys, k2, event_type::KEY_EXPIRING)
            .await
            .is_empty()
    );
    let of_k2 = DeliveryFilter {
        key_id: Some(k2),
        ..DeliveryFilter::default()
    };
    let outbox = e.notifier.outbox();
    assert!(outbox.deliveries(&of_k2).await.unwrap().is_empty());
    assert_eq!(e.receiver.count(), 2);
    // It was due one: a pass records and delivers it.
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.notices, pass.deliveries.delivered), (1, 1));
    assert_eq!(outbox.deliveries(&of_k2).await.unwrap().len(), 1);
    assert_eq!(e.receiver.count(), 3);
}
both_backends!(spawned_and_shut_down_works, spawned_and_shut_down);

async fn shutdown_mid_batch_loses_nothing(db: &TestDb) {
    let e = env_with(db, |c| {
        c.interval = StdDuration::from_millis(50);
        c.request_timeout = StdDuration::from_secs(30);
    })
    .await;
    e.receiver.script([Reply::Hang]);
    key_expiring_in(&e.keys, "k", Duration::days(10)).await;
    let handle = e.notifier.clone().spawn();
    e.receiver.wait_for(1).await;
    assert!(
        !handle.shutdown_within(StdDuration::from_millis(200)).await,
        "aborted mid-request"
    );
    // Another instance takes it up once the lease has run out.
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let other = Notifier::new(e.keys.clone(), outbox, config(&e.receiver)).unwrap();
    assert_eq!(other.run_once().await.unwrap(), Default::default());
    e.clock.advance(Duration::minutes(5));
    assert_eq!(other.run_once().await.unwrap().deliveries.delivered, 1);
    assert_eq!(e.receiver.count(), 2);
}
both_backends!(
    shutdown_mid_batch_loses_nothing_works,
    shutdown_mid_batch_loses_nothing
);

/// A shutdown waits for the batch in flight, not the whole pass: with a
/// slow receiver and one delivery a batch, the first is sent and recorded,
/// and the others are left pending and unclaimed (not leased to a notifier
/// going away) for the next pass.
async fn shutdown_between_batches(db: &TestDb) {
    const SLOW: StdDuration = StdDuration::from_secs(3);
    let e = env_with(db, |c| {
        c.interval = StdDuration::from_millis(50);
        c.request_timeout = StdDuration::from_secs(30);
        c.batch_size = 1;
    })
    .await;
    e.receiver.script(std::iter::repeat_n(Reply::Slow(SLOW), 5));
    for i in 0..5 {
        key_expiring_in(&e.keys, &format!("k{i}"), Duration::days(10)).await;
    }
    assert_eq!(e.notifier.record_notices().await.unwrap(), (5, 0));
    let handle = e.notifier.clone().spawn();
    e.receiver.wait_for(1).await;
    handle.shutdown().await;
    // One batch, not five (the count says so; no time is measured).
    assert_eq!(e.receiver.count(), 1, "no batch claimed after the stop");
    let all = e
        .notifier
        .outbox()
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    let (sent, left): (Vec<_>, Vec<_>) = all
        .iter()
        .partition(|d| d.state == DeliveryState::Delivered);
    assert_eq!(sent.len(), 1, "the batch in flight was recorded: {all:?}");
    assert_eq!(sent[0].attempts, 1);
    for d in &left {
        assert_eq!(
            (d.state, d.attempts, d.claimed_until),
            (DeliveryState::Pending, 0, None),
            "{d:?}"
        );
    }
    // The next pass (of any notifier) sends them at once.
    e.receiver.script.lock().unwrap().clear();
    assert_eq!(e.notifier.run_once().await.unwrap().deliveries.delivered, 4);
}
both_backends!(shutdown_between_batches_works, shutdown_between_batches);

// ---------------------------------------------------------------------------
// Enqueuing events of one's own, transactionally.

async fn enqueue_arbitrary_events(db: &TestDb) {
    let e = env_with(db, |c| c.endpoints[0] = c.endpoints[0].clone().all_events()).await;
    let created = e
        .keys
        .create(NewKey::new("k", ["a:b"]), Actor::System)
        .await
        .unwrap();
    let record = e.keys.store().get(created.key.id).await.unwrap().unwrap();
    // The lifecycle itself enqueued `key.created` in the creating transaction.
    let automatic = e.notifier.deliver_due().await.unwrap();
    assert_eq!(automatic.delivered, 1, "key.created from the lifecycle");
    let first = e.receiver.requests()[0].json();
    assert_eq!(first["type"], "key.created");
    assert_eq!(first["data"]["id"], record.id.to_string());
    let now = e.clock.now();
    let event = AuditEvent {
        id: uuid::Uuid::now_v7(),
        key_id: Some(record.id),
        kind: event_type::KEY_REVOKED.into(),
        actor_key_id: None,
        at: now,
        details: json!({ "reason": "test" }),
    };
    let outbox = e.notifier.outbox();
    assert_eq!(
        outbox
            .enqueue(&event, key_event_data(&record, &event))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        events_of(&e.keys, record.id, event_type::KEY_REVOKED).await,
        std::slice::from_ref(&event)
    );
    // Events nobody subscribes to, and webhook.* events, are not enqueued.
    let mut auth = event.clone();
    auth.id = uuid::Uuid::now_v7();
    auth.kind = event_type::AUTH_FAILED.into();
    assert_eq!(outbox.enqueue(&auth, json!({})).await.unwrap(), 0);

    // Inside a transaction of one's own: a rollback leaves nothing to send.
    let mut rolled_back = event.clone();
    rolled_back.id = uuid::Uuid::now_v7();
    // The store hook: lifecycle events enqueued in the store's transaction,
    // each with the key it names.
    let created_event = AuditEvent {
        id: uuid::Uuid::now_v7(),
        kind: event_type::KEY_CREATED.into(),
        details: json!({ "name": "k" }),
        ..event.clone()
    };
    let keys_involved = [&record];
    match db.backend() {
        Backend::Sqlite => {
            use scopekey_runtime::notify::sqlite;
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            let n = sqlite::enqueue(&mut tx, &rolled_back, &json!({}))
                .await
                .unwrap();
            assert_eq!(n, 1);
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlite::enqueue_key_events(
                &mut tx,
                std::slice::from_ref(&created_event),
                &keys_involved,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        Backend::Postgres => {
            use scopekey_runtime::notify::postgres;
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            let n = postgres::enqueue(&mut tx, &rolled_back, &json!({}))
                .await
                .unwrap();
            assert_eq!(n, 1);
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            postgres::enqueue_key_events(
                &mut tx,
                std::slice::from_ref(&created_event),
                &keys_involved,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    }

    let report = e.notifier.deliver_due().await.unwrap();
    assert_eq!(
        report.delivered, 2,
        "the revocation and the creation; not the rolled-back one"
    );
    let mut bodies: Vec<Value> = e.receiver.requests()[1..]
        .iter()
        .map(Received::json)
        .collect();
    bodies.sort_by_key(|b| b["type"].as_str().unwrap().to_owned());
    let (created, revoked) = (&bodies[0], &bodies[1]);
    assert_eq!(revoked["type"], "key.revoked");
    assert_eq!(revoked["data"]["id"], record.id.to_string());
    assert_eq!(revoked["data"]["event_id"], event.id.to_string());
    assert_eq!(revoked["data"]["details"]["reason"], "test");
    assert_eq!(created["type"], "key.created");
    assert_eq!(created["data"]["name"], "k");
    assert_eq!(created["data"]["scopes"], json!(["a:b"]));
    assert_eq!(created["data"]["event_id"], created_event.id.to_string());
}
both_backends!(enqueue_arbitrary_events_works, enqueue_arbitrary_events);

/// Lifecycle calls themselves enqueue their webhooks: a revocation one
/// `key.revoked` (its reason in `data.details.reason` and
/// `data.revoked_reason`), a rotation one `key.rotated` for each key (the
/// parent and the successor, as it audits both). A refused second rotation,
/// and a revocation repeated, enqueue nothing more.
async fn lifecycle_calls_are_announced(db: &TestDb) {
    let e = env_with(db, |c| {
        c.endpoints[0] = c.endpoints[0]
            .clone()
            .events([event_type::KEY_REVOKED, event_type::KEY_ROTATED]);
    })
    .await;
    let revoked = e
        .keys
        .create(NewKey::new("revoked", ["a:b"]), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    let rotated = e
        .keys
        .create(NewKey::new("rotated", ["a:b"]), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    // `key.created` is not subscribed: nothing yet.
    let pass = e.notifier.deliver_due().await.unwrap();
    assert_eq!(pass.delivered, 0, "{pass:?}");

    e.keys
        .revoke(revoked, Some("left in a log"), Actor::System)
        .await
        .unwrap();
    let successor = e
        .keys
        .rotate(rotated, RotateOptions::default(), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    let pass = e.notifier.deliver_due().await.unwrap();
    assert_eq!(pass.delivered, 3, "{pass:?}");
    let requests = e.receiver.requests();
    assert_eq!(requests.len(), 3);
    let mut bodies: Vec<Value> = requests
        .iter()
        .map(|r| {
            assert_signed(r, &e.clock);
            r.json()
        })
        .collect();
    bodies.sort_by_key(|b| {
        (
            b["type"].as_str().unwrap().to_owned(),
            b["data"]["id"].as_str().unwrap().to_owned(),
        )
    });
    let revoked_body = bodies.remove(0);
    assert_eq!(revoked_body["type"], "key.revoked", "{revoked_body}");
    assert_eq!(revoked_body["data"]["id"], revoked.to_string());
    assert_eq!(revoked_body["data"]["status"], "revoked");
    assert_eq!(revoked_body["data"]["details"]["reason"], "left in a log");
    assert_eq!(revoked_body["data"]["revoked_reason"], "left in a log");
    let event = events_of(&e.keys, revoked, event_type::KEY_REVOKED).await;
    assert_eq!(revoked_body["data"]["event_id"], event[0].id.to_string());

    let mut announced: Vec<String> = bodies
        .iter()
        .map(|b| {
            assert_eq!(b["type"], "key.rotated", "{b}");
            assert_eq!(b["data"]["details"]["parent_key_id"], rotated.to_string());
            assert_eq!(
                b["data"]["details"]["successor_key_id"],
                successor.to_string()
            );
            b["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    announced.sort();
    let mut expected = vec![rotated.to_string(), successor.to_string()];
    expected.sort();
    assert_eq!(announced, expected, "one for each key of the rotation");

    // A conflicting rotation, and a repeated revocation, announce nothing.
    let again = e
        .keys
        .rotate(rotated, RotateOptions::default(), Actor::System)
        .await;
    assert!(
        matches!(again, Err(scopekey_runtime::Error::Conflict(_))),
        "{again:?}"
    );
    e.keys
        .revoke(revoked, Some("again"), Actor::System)
        .await
        .unwrap();
    e.clock.advance(Duration::minutes(1));
    let pass = e.notifier.deliver_due().await.unwrap();
    assert_eq!(pass, Default::default(), "nothing more enqueued");
    assert_eq!(e.receiver.count(), 3);
}
both_backends!(
    lifecycle_calls_are_announced_works,
    lifecycle_calls_are_announced
);

/// A compromise report is announced by webhook: `key.compromised`, signed,
/// for the reported key and for each minted key it revokes.
async fn compromise_is_announced(db: &TestDb) {
    let e = env_with(db, |c| {
        c.endpoints[0] = c.endpoints[0].clone().events([event_type::KEY_COMPROMISED]);
    })
    .await;
    let leaked = e
        .keys
        .create(NewKey::new("leaked", ["a:b"]), Actor::System)
        .await
        .unwrap();
    let me = e
        .keys
        .verify(leaked.plaintext.expose_secret())
        .await
        .unwrap();
    let successor = e
        .keys
        .rotate(leaked.key.id, Default::default(), Actor::Key(&me))
        .await
        .unwrap();
    let options = scopekey_runtime::CompromiseOptions {
        source: Some("scanner"),
        revoke_minted: true,
        ..Default::default()
    };
    e.keys
        .report_compromised_with(
            &[leaked.plaintext.expose_secret().to_owned()],
            options,
            Actor::System,
        )
        .await
        .unwrap();
    let pass = e.notifier.deliver_due().await.unwrap();
    assert_eq!(pass.delivered, 2, "{pass:?}");
    let requests = e.receiver.requests();
    let mut announced: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            assert_signed(r, &e.clock);
            let body = r.json();
            assert_eq!(body["type"], "key.compromised");
            assert_eq!(body["data"]["status"], "revoked");
            (
                body["data"]["id"].as_str().unwrap().to_owned(),
                body["data"]["revoked_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    announced.sort();
    let mut expected = vec![
        (leaked.key.id.to_string(), "compromised".to_owned()),
        (successor.key.id.to_string(), "compromised".to_owned()),
    ];
    expected.sort();
    assert_eq!(announced, expected);
    for r in &requests {
        assert!(!r.body.contains(leaked.plaintext.expose_secret()));
        assert!(!r.body.contains(successor.plaintext.expose_secret()));
    }
}
both_backends!(compromise_is_announced_works, compromise_is_announced);

#[test]
fn configuration_is_checked() {
    let ok = || NotifierConfig {
        endpoints: vec![EndpointConfig::new(
            "https://hooks.example.invalid/x",
            SECRET.parse().unwrap(),
        )],
        ..NotifierConfig::default()
    };
    assert!(ok().validate().is_ok());
    let mut bad = ok();
    bad.endpoints[0].url = "ftp://x".into();
    assert!(bad.validate().is_err());
    let mut bad = ok();
    bad.endpoints[0].events = vec!["webhook.failed".into()];
    assert!(bad.validate().is_err());
    let mut bad = ok();
    bad.thresholds = vec![Duration::ZERO];
    assert!(bad.validate().is_err());
    // Secrets too short to withstand guessing offline: refused, from code
    // and from the environment alike.
    let mut bad = ok();
    bad.endpoints[0].secrets = vec!["whsec_dGVzdA==".parse().unwrap()];
    let error = bad.validate().unwrap_err().to_string();
    assert!(error.contains("at least 24 bytes"), "{error}");
    // A short previous secret, kept while changing away from it, is allowed.
    let mut changing = ok();
    changing.endpoints[0]
        .secrets
        .push("whsec_dGVzdA==".parse().unwrap());
    assert!(changing.validate().is_ok());
    for value in ["whsec_Y2hhbmdlbWU=", "changeme"] {
        let error = NotifierConfig::from_lookup(|n| match n {
            "SCOPEKEY_WEBHOOK_URL" => Some("https://hooks.example.invalid/x".into()),
            "SCOPEKEY_WEBHOOK_SECRET" => Some(value.into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("SCOPEKEY_WEBHOOK_SECRET"), "{error}");
        assert!(error.contains("at least 24 bytes"), "{error}");
    }
    // A webhook URL's path and query may hold a token: errors and `Debug`
    // name its origin only.
    let mut bad = ok();
    bad.endpoints[0].url = "ftp://hooks.example.invalid/T0/B0/SECRETTOKEN".into();
    let error = bad.validate().unwrap_err().to_string();
    assert!(!error.contains("SECRETTOKEN"), "{error}");
    assert!(error.contains("`ftp://hooks.example.invalid`"), "{error}");
    bad.endpoints[0].url = "localhost:8080/SECRETTOKEN".into();
    let error = bad.validate().unwrap_err().to_string();
    assert!(
        error.contains("`localhost:` must be http or https"),
        "{error}"
    );
    let mut shown = ok();
    shown.endpoints[0].url = "https://hooks.example.invalid/T0/B0/SECRETTOKEN?t=1".into();
    let debug = format!("{shown:?}");
    assert!(!debug.contains("SECRETTOKEN"), "{debug}");
    assert!(debug.contains("https://hooks.example.invalid"), "{debug}");
    // Notices are recorded per whole second of threshold: a fraction would
    // be cut off, and half a second read as the expiry itself.
    for fraction in [Duration::milliseconds(500), Duration::milliseconds(1_500)] {
        let mut bad = ok();
        bad.thresholds = vec![Duration::days(1), fraction];
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("whole seconds"), "{error}");
    }
    let mut bad = ok();
    bad.endpoints[0].secrets.clear();
    assert!(bad.validate().is_err());
    // Past the calendar a time can reach, a spinning retry, a claim that
    // lapses mid-request: refused before a notifier starts.
    let refused = |tweak: &dyn Fn(&mut NotifierConfig), why: &str| {
        let mut c = ok();
        tweak(&mut c);
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains(why), "{error}");
    };
    refused(
        &|c| c.thresholds = vec![Duration::days(3_000_000)],
        "at most 10 years",
    );
    refused(
        &|c| c.expired_lookback = Duration::days(3_651),
        "at most 10 years",
    );
    refused(
        &|c| c.max_backoff = Duration::days(3_651),
        "at most 10 years",
    );
    refused(&|c| c.lease = Duration::days(3_651), "at most 10 years");
    refused(
        &|c| c.delivery_retention = Some(Duration::days(3_651)),
        "at most 10 years",
    );
    // Past it, the background task's timer would overflow and panic.
    refused(
        &|c| c.interval = StdDuration::from_secs(10_000_000_000_000_000_000),
        "at most 365 days",
    );
    let huge = NotifierConfig::from_lookup(|name| {
        (name == "SCOPEKEY_NOTIFIER_INTERVAL_SECONDS").then(|| "10000000000000000000".to_owned())
    });
    assert!(
        huge.unwrap_err().to_string().contains("at most 365 days"),
        "refused when read from the environment too"
    );
    refused(
        &|c| c.delivery_retention = Some(-Duration::SECOND),
        "must not be negative",
    );
    refused(
        &|c| c.initial_backoff = Duration::microseconds(100),
        "at least a second",
    );
    refused(
        &|c| c.lease = Duration::seconds(15),
        "longer than the request timeout",
    );
    refused(
        &|c| c.interval = StdDuration::from_secs(366 * DAY as u64),
        "at most 365 days",
    );
    let mut edge = ok();
    edge.thresholds = vec![Duration::days(3650)];
    edge.initial_backoff = Duration::SECOND;
    edge.lease = Duration::seconds(16);
    assert!(edge.validate().is_ok());
    // Ten years exactly is allowed; for the interval, a year.
    let mut longest = ok();
    longest.interval = StdDuration::from_secs(365 * DAY as u64);
    longest.delivery_retention = Some(MAX_SETTING);
    assert_eq!(MAX_SETTING, Duration::days(3650));
    longest.validate().unwrap();
}

// ---------------------------------------------------------------------------
// PostgreSQL: the outbox's writes run at READ COMMITTED, whatever the
// default isolation of the connections they are given.

/// Runs `op` behind a transaction of the test's own that holds `table`
/// locked and makes `change` in it, committed once `op` queues behind the
/// lock: `op`'s statement began before the change was committed, and meets
/// it.
async fn behind_a_commit<T: Send + 'static>(
    db: &TestDb,
    table: &str,
    change: &str,
    op: impl Future<Output = T> + Send + 'static,
) -> T {
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    other
        .execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    other
        .execute(AssertSqlSafe(format!(
            "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
        )))
        .await
        .unwrap();
    other
        .execute(AssertSqlSafe(change.to_owned()))
        .await
        .unwrap();
    let running = tokio::spawn(op);
    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    other.execute("COMMIT").await.unwrap();
    running.await.unwrap()
}

/// On a pool of the application's own whose connections default to a
/// stricter isolation, the outbox still claims, prunes, registers and
/// disables: meeting a row another sender changed since its statement
/// began, each takes the change into account (two claimers take disjoint
/// rows) instead of failing with a serialization error (40001). Notifiers
/// pruning at once skip each other's rows instead of waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_read_committed_whatever_the_default() {
    for isolation in ["repeatable read", "serializable"] {
        let Some(db) = TestDb::new(Backend::Postgres).await else {
            return;
        };
        outbox_under(&db, isolation).await;
        db.cleanup().await;
    }
}

async fn outbox_under(db: &TestDb, isolation: &str) {
    db.set_default_isolation(isolation).await;
    // The outbox's own pool, of one connection whose statements are
    // prepared before they race (a first use parses the statement in a
    // transaction of its own): each then takes its snapshot before it
    // queues for the lock, and a statement left to a stricter default would
    // fail. The runtime has a pool of its own.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let default: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(default, isolation);
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let receiver = Receiver::start().await;
    let notifier = Notifier::new(
        keys.clone(),
        Outbox::postgres(pool.clone()),
        config(&receiver),
    )
    .unwrap();
    notifier.register().await.unwrap();
    let outbox = notifier.outbox().clone();
    notifier.deliver_due().await.unwrap();
    notifier.prune_deliveries().await.unwrap();
    let nowhere = "http://nowhere.invalid/";
    assert!(
        !outbox
            .disable_endpoint(nowhere, "-", clock.now())
            .await
            .unwrap()
    );
    let enqueue = |n: usize| {
        let outbox = outbox.clone();
        let at = clock.now();
        async move {
            let mut ids = Vec::new();
            for _ in 0..n {
                outbox
                    .enqueue(&expiring_event(at), json!({}))
                    .await
                    .unwrap();
            }
            for d in outbox.deliveries(&DeliveryFilter::default()).await.unwrap() {
                ids.push(d.id);
            }
            ids.sort();
            ids
        }
    };
    let finish_all = "UPDATE scopekey_deliveries SET state = 'delivered', \
                      finished_at = created_at, claimed_until = NULL, claim_token = NULL";

    // Another sender claims the first of two due deliveries once this
    // notifier's claim has begun: the notifier takes the other.
    let ids = enqueue(2).await;
    let lease = clock.now() + Duration::minutes(5);
    let claim_first = format!(
        "UPDATE scopekey_deliveries SET claimed_until = '{}', claim_token = '{}' \
         WHERE id = '{}'",
        lease
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        uuid::Uuid::now_v7(),
        ids[0]
    );
    let sending = notifier.clone();
    let report = behind_a_commit(db, "scopekey_deliveries", &claim_first, async move {
        sending.deliver_due().await
    })
    .await
    .expect("no serialization failure");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(receiver.count(), 1);
    assert_eq!(
        receiver.requests()[0].header("webhook-id"),
        ids[1].to_string()
    );
    let first = outbox.delivery(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (first.state, first.claimed_until),
        (DeliveryState::Pending, Some(lease))
    );

    // Another notifier prunes the first of two old finished deliveries once
    // this one's prune has begun: this one prunes the other.
    db.execute(finish_all).await;
    clock.advance(Duration::days(31));
    let pruning = notifier.clone();
    let delete_first = format!("DELETE FROM scopekey_deliveries WHERE id = '{}'", ids[0]);
    let pruned = behind_a_commit(db, "scopekey_deliveries", &delete_first, async move {
        pruning.prune_deliveries().await
    })
    .await
    .expect("no serialization failure");
    assert_eq!(pruned, 1);
    assert!(enqueue(0).await.is_empty());

    // A row another notifier is pruning (locked, not yet committed) is
    // skipped, not waited for.
    let ids = enqueue(3).await;
    db.execute(finish_all).await;
    clock.advance(Duration::days(31));
    let mut other = PgConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute(AssertSqlSafe(format!(
            "DELETE FROM scopekey_deliveries WHERE id = '{}'",
            ids[0]
        )))
        .await
        .unwrap();
    let pruned = tokio::time::timeout(StdDuration::from_secs(10), notifier.prune_deliveries())
        .await
        .expect("the locked row is skipped")
        .unwrap();
    assert_eq!(pruned, 2);
    other.execute("ROLLBACK").await.unwrap();
    assert_eq!(enqueue(0).await, ids[..1]);
    assert_eq!(notifier.prune_deliveries().await.unwrap(), 1);

    // A second notifier registers the endpoint, and an operator disables
    // it, each after another change to its row was committed.
    let touch = "UPDATE scopekey_webhook_endpoints SET paused_until = NULL";
    let again = Notifier::new(
        keys.clone(),
        Outbox::postgres(pool.clone()),
        config(&receiver),
    )
    .unwrap();
    behind_a_commit(db, "scopekey_webhook_endpoints", touch, async move {
        again.register().await
    })
    .await
    .expect("no serialization failure");
    let (disabling, url, now) = (outbox.clone(), receiver.url.clone(), clock.now());
    let disabled = behind_a_commit(db, "scopekey_webhook_endpoints", touch, async move {
        disabling.disable_endpoint(&url, "retired", now).await
    })
    .await
    .expect("no serialization failure");
    assert!(disabled);
    pool.close().await;
}

// ---------------------------------------------------------------------------
// Rotation on a schedule: notices for policy keys, automatic rotation.

/// A policy key (no explicit expiry) gets its notice before its due date and
/// rotates itself into a fresh period.
async fn policy_key_notice_and_self_rotation(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .rotation_period(Duration::days(90))
        .unwrap()
        .build();
    let receiver = Receiver::start().await;
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, config(&receiver)).unwrap();
    let created = keys
        .create(NewKey::new("policy", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let id = created.key.id;
    assert_eq!(notifier.run_once().await.unwrap().notices, 0);
    clock.advance(Duration::days(77));
    assert_eq!(notifier.run_once().await.unwrap().notices, 1);
    let data = receiver.requests()[0].json()["data"].clone();
    assert_eq!(data["id"], id.to_string());
    assert_eq!(data["rotation_period_seconds"], 90 * DAY);
    assert_eq!(
        events_of(&keys, id, event_type::KEY_EXPIRING).await.len(),
        1
    );

    // Told to rotate, the holder rotates its own key.
    let p = keys
        .verify(created.plaintext.expose_secret())
        .await
        .unwrap();
    let successor = keys
        .rotate(id, RotateOptions::default(), Actor::Key(&p))
        .await
        .unwrap()
        .key;
    assert_eq!(successor.expires_at, Some(clock.now() + Duration::days(90)));
    // A fresh period: no notice for the successor until it nears its own end.
    assert_eq!(notifier.run_once().await.unwrap().notices, 0);
    clock.advance(Duration::days(77));
    assert_eq!(notifier.run_once().await.unwrap().notices, 1);
    assert_eq!(
        events_of(&keys, successor.id, event_type::KEY_EXPIRING)
            .await
            .len(),
        1
    );
}
both_backends!(
    policy_key_notice_and_self_rotation_works,
    policy_key_notice_and_self_rotation
);

/// The operator's rotation secret (never the webhook secret).
const ROTATION_SECRET: &str = "whsec_cm90YXRpb24gc2VjcmV0IGZvciB0ZXN0cyBvbmx5IQ==";

/// A runtime with automatic rotation enabled (local http receivers allowed).
fn auto_runtime(store: Arc<dyn scopekey_runtime::Store>, clock: &ManualClock) -> ScopeKey {
    ScopeKey::builder_arc(store)
        .clock(clock.clone())
        .default_grace(Duration::hours(24))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .allow_insecure_rotation_webhooks(true)
        .build()
}

/// Two notifiers with the rotation secret, on one database.
async fn auto_notifiers(db: &TestDb, clock: &ManualClock, receiver: &Receiver) -> Vec<Notifier> {
    let mut out = Vec::new();
    for _ in 0..2 {
        let keys = auto_runtime(scopekey_runtime::open(&db.url).await.unwrap(), clock);
        let outbox = Outbox::connect(&db.url).await.unwrap();
        out.push(Notifier::new(keys, outbox, config(receiver)).unwrap());
    }
    out
}

async fn automatic_rotation(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let notifiers = auto_notifiers(db, &clock, &operator).await;
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    let created = keys
        .create(auto_rotating("machine", &holder.url), Actor::System)
        .await
        .unwrap();
    let old = created.key.id;
    let old_plaintext = created.plaintext.expose_secret().to_owned();
    // The holder's own signing secret, handed over once at creation: derived
    // for its URL, neither the operator's webhook secret nor another holder's.
    let holder_secret = created
        .rotation_webhook_secret
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    assert!(
        !format!("{created:?}").contains(&holder_secret),
        "Debug never shows it"
    );
    assert!(holder_secret.starts_with("whsec_"));
    assert_ne!(holder_secret, SECRET);
    assert_ne!(holder_secret, ROTATION_SECRET);
    let other = keys
        .create(auto_rotating("other machine", &holder.url), Actor::System)
        .await
        .unwrap();
    // Another key naming the same URL gets a secret of its own: it cannot
    // sign for the first key's holder.
    assert_ne!(
        other
            .rotation_webhook_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        holder_secret
    );
    keys.revoke(other.key.id, None, Actor::System)
        .await
        .unwrap();
    let manual = keys
        .create(
            NewKey::new("manual", ["orders:read"]).rotate_every(Duration::days(30)),
            Actor::System,
        )
        .await
        .unwrap()
        .key
        .id;

    // Not due yet: a day before the grace window opens.
    clock.advance(Duration::days(28));
    for n in &notifiers {
        assert_eq!(n.run_once().await.unwrap().rotated, 0);
    }
    // Due (expiry within the 24 h grace): the holder's webhook answers 500
    // first. Both notifiers run at once; exactly one rotates.
    clock.advance(Duration::days(1) + Duration::seconds(1));
    holder.script([Reply::Status(500)]);
    let (a, b) = tokio::join!(notifiers[0].run_once(), notifiers[1].run_once());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.rotated + b.rotated, 1, "{a:?} {b:?}");
    let lineage = keys.lineage(old).await.unwrap();
    assert_eq!(lineage.len(), 2, "exactly one successor");
    let successor = lineage[1].clone();
    assert_eq!(successor.parent_key_id, Some(old));
    assert_eq!(successor.expires_at, Some(clock.now() + Duration::days(30)));
    assert_eq!(
        successor.rotation_webhook_url.as_deref(),
        Some(&*holder.url)
    );
    // The key without a delivery webhook is left alone: only its holder
    // rotates it.
    assert_eq!(keys.get(manual).await.unwrap().status, Status::Active);
    let rotated = events_of(&keys, old, event_type::KEY_ROTATED).await;
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].details["automatic"], true);
    assert_eq!(rotated[0].actor_key_id, None);

    // The outbox holds the successor sealed, never in the clear.
    let sealed = notifiers[0]
        .outbox()
        .deliveries(&DeliveryFilter {
            key_id: Some(successor.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let to_holder: Vec<_> = sealed
        .iter()
        .filter(|d| d.payload.starts_with("sealed:v1:"))
        .collect();
    assert_eq!(to_holder.len(), 1);

    // The first attempt failed; the retry re-sends the same successor.
    holder.wait_for(1).await;
    clock.advance(Duration::seconds(10));
    let (a, b) = tokio::join!(notifiers[0].run_once(), notifiers[1].run_once());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.rotated + b.rotated, 0);
    let requests = holder.requests();
    assert_eq!(requests.len(), 2, "one failed attempt, one delivery");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body, "the same successor");
    let holder_verifier = WebhookVerifier::new(&holder_secret).unwrap();
    for r in &requests {
        assert!(
            signed_with(&holder_verifier, r, &clock),
            "signed with the holder's own secret"
        );
        assert!(
            !signed_with(&verifier(), r, &clock),
            "not with the operator's webhook secret"
        );
        assert!(!r.body.contains(&old_plaintext));
    }
    let body = requests[1].json();
    assert_eq!(body["type"], "key.rotated");
    assert_eq!(body["data"]["id"], successor.id.to_string());
    assert_eq!(body["data"]["parent_key_id"], old.to_string());
    let new_plaintext = body["data"]["key"].as_str().unwrap().to_owned();
    assert_eq!(keys.verify(&new_plaintext).await.unwrap().id, successor.id);
    for d in &to_holder {
        assert!(!d.payload.contains(&new_plaintext));
    }
    let d = notifiers[0]
        .outbox()
        .delivery(to_holder[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(
        d.payload, "",
        "the sealed successor is erased once delivered"
    );
    // The operator's endpoint (not subscribed to `key.rotated`) never saw
    // the plaintext.
    assert!(
        operator
            .requests()
            .iter()
            .all(|r| !r.body.contains(&new_plaintext))
    );

    // The old key keeps its grace, then stops.
    assert_eq!(keys.verify(&old_plaintext).await.unwrap().id, old);
    clock.advance(Duration::hours(23) + Duration::minutes(59));
    keys.invalidate_cache();
    assert_eq!(keys.verify(&old_plaintext).await.unwrap().id, old);
    clock.advance(Duration::minutes(2));
    keys.invalidate_cache();
    assert!(matches!(
        keys.verify(&old_plaintext).await,
        Err(VerifyError::Expired)
    ));

    // The successor rotates in its turn, inside its own grace window (it
    // expires 30 days after the first rotation, about 29 days from here).
    clock.advance(Duration::days(28) + Duration::hours(1));
    let pass = notifiers[1].run_once().await.unwrap();
    assert_eq!(pass.rotated, 1);
    assert_eq!(keys.lineage(old).await.unwrap().len(), 3);
    holder.wait_for(3).await;
    // Successors keep the lineage's secret.
    assert!(
        signed_with(&holder_verifier, &holder.requests()[2], &clock),
        "the successor's successor is signed with the same secret"
    );
}
both_backends!(automatic_rotation_works, automatic_rotation);

/// A runtime whose current rotation secret is too short: no notifier starts
/// on it.
async fn a_short_rotation_secret(db: &TestDb) {
    let operator = Receiver::start().await;
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .rotation_webhook_secret("whsec_Y2hhbmdlbWU=".parse().unwrap())
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let error = Notifier::new(keys, outbox, config(&operator))
        .unwrap_err()
        .to_string();
    assert!(error.contains("rotation secret"), "{error}");
    assert!(error.contains("at least 24 bytes"), "{error}");
    // Kept after a new one, while changing away from it: allowed.
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .rotation_webhook_secret("whsec_Y2hhbmdlbWU=".parse().unwrap())
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    assert!(Notifier::new(keys, outbox, config(&operator)).is_ok());
}
both_backends!(a_short_rotation_secret_is_refused, a_short_rotation_secret);

/// The rotation secret before a change.
const OLD_ROTATION_SECRET: &str = "whsec_YW4gb2xkIHJvdGF0aW9uIHNlY3JldCwgcmV0aXJlZA==";

/// A runtime and a notifier (sending to `operator`) whose rotation secrets
/// are `secrets`, current first.
async fn notifier_with_secrets(
    db: &TestDb,
    clock: &ManualClock,
    operator: &Receiver,
    secrets: &[&str],
) -> (ScopeKey, Notifier) {
    let mut builder = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .default_grace(Duration::hours(24))
        .allow_insecure_rotation_webhooks(true);
    for secret in secrets {
        builder = builder.rotation_webhook_secret(secret.parse().unwrap());
    }
    let keys = builder.build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, config(operator)).unwrap();
    (keys, notifier)
}

/// The one delivery of a successor (`key`) to its holder.
async fn successor_delivery(notifier: &Notifier, key: KeyId) -> scopekey_runtime::notify::Delivery {
    let mut found = notifier
        .outbox()
        .deliveries(&DeliveryFilter {
            key_id: Some(key),
            event_type: Some(event_type::KEY_ROTATED.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// Changing the rotation secret: with the new one first and the old one
/// after it, a lineage created under the old one rotates and its secret is
/// sealed anew under the new one, so once the old one is dropped the
/// lineage goes on rotating, its holder's signing secret unchanged. A
/// successor still sealed under the dropped secret waits, using up no
/// attempt, until its key is no longer live, then is given up, erased.
async fn changing_the_rotation_secret(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let stranded_holder = Receiver::start().await;
    let (before, before_notifier) =
        notifier_with_secrets(db, &clock, &operator, &[OLD_ROTATION_SECRET]).await;
    let created = before
        .create(auto_rotating("machine", &holder.url), Actor::System)
        .await
        .unwrap();
    let holder_verifier = WebhookVerifier::new(
        created
            .rotation_webhook_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
    )
    .unwrap();
    // Another lineage, due at once: its successor is sealed under the old
    // secret and its holder fails the first attempt, so it waits.
    let stranded = before
        .create(
            auto_rotating("stranded", &stranded_holder.url)
                .expires_at(clock.now() + Duration::hours(12)),
            Actor::System,
        )
        .await
        .unwrap()
        .key
        .id;
    stranded_holder.script([Reply::Status(500)]);
    let pass = before_notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 1, "{pass:?}");
    stranded_holder.wait_for(1).await;
    let stranded_successor = before.lineage(stranded).await.unwrap()[1].id;
    let pending = successor_delivery(&before_notifier, stranded_successor).await;
    assert_eq!(
        (pending.state, pending.attempts),
        (DeliveryState::Pending, 1),
        "{pending:?}"
    );
    assert!(pending.payload.starts_with("sealed:"), "{pending:?}");

    // The old secret dropped: the waiting successor, sealed under it, is
    // left for a notifier that can open it, using up no attempt (another
    // instance may still hold the secret), and nothing is sent...
    let (after, after_notifier) =
        notifier_with_secrets(db, &clock, &operator, &[ROTATION_SECRET]).await;
    for _ in 0..6 {
        clock.advance(Duration::hours(2));
        after_notifier.run_once().await.unwrap();
    }
    let left = successor_delivery(&after_notifier, stranded_successor).await;
    assert_eq!(
        (left.state, left.attempts, left.claimed_until),
        (DeliveryState::Pending, 1, None),
        "left unclaimed, for a notifier that can open it: {left:?}"
    );
    assert!(left.payload.starts_with("sealed:"), "{left:?}");
    // ...until its key is no longer live: then it is given up, erased, by
    // the next delivery round, the clock unmoved (no lease of its to wait
    // out). (A pass gives it up before delivering, see
    // `sealed_successors_of_dead_keys`; a sender that claims it all the
    // same, its key revoked in between, gives it up as here.)
    after
        .revoke(stranded_successor, None, Actor::System)
        .await
        .unwrap();
    after_notifier.deliver_due().await.unwrap();
    let given_up = successor_delivery(&after_notifier, stranded_successor).await;
    assert_eq!(
        (given_up.state, given_up.payload.as_str(), given_up.attempts),
        (DeliveryState::Failed, "", 2),
        "{given_up:?}"
    );
    assert!(
        given_up
            .last_error
            .as_deref()
            .unwrap()
            .contains("rotation secret this notifier does not hold, and its key is no longer live"),
        "{given_up:?}"
    );
    let failed = events_of(&after, stranded_successor, webhook_event::WEBHOOK_FAILED).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        stranded_holder.requests().len(),
        1,
        "only the attempt before the change"
    );

    // During a change done right (the new secret first, the old one
    // after it), the first lineage rotates: its secret is sealed anew.
    let (_, during_notifier) = notifier_with_secrets(
        db,
        &clock,
        &operator,
        &[ROTATION_SECRET, OLD_ROTATION_SECRET],
    )
    .await;
    clock.advance(Duration::days(29));
    during_notifier.run_once().await.unwrap();
    assert_eq!(after.lineage(created.key.id).await.unwrap().len(), 2);
    holder.wait_for(1).await;

    // Then with the old secret gone, it goes on rotating, its successor
    // signed with the secret the holder got at the start.
    clock.advance(Duration::days(29) + Duration::hours(1));
    let pass = after_notifier.run_once().await.unwrap();
    let lineage = after.lineage(created.key.id).await.unwrap();
    assert_eq!(
        lineage.len(),
        3,
        "rotated with the old secret gone: {pass:?}"
    );
    holder.wait_for(2).await;
    let requests = holder.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.json()["data"]["id"], lineage[2].id.to_string());
    assert!(signed_with(&holder_verifier, last, &clock));
}
both_backends!(
    changing_the_rotation_secret_keeps_lineages_rotating,
    changing_the_rotation_secret
);

/// A runtime without a rotation secret refuses the opt-in, and its notifier
/// rotates nothing, due or not; a key whose webhook endpoint was disabled
/// (410 Gone) is not rotated either.
async fn no_secret_no_rotation(db: &TestDb) {
    let e = env(db).await;
    let holder = Receiver::start().await;
    let refused = e
        .keys
        .create(
            auto_rotating("machine", "https://holder.example/rotate"),
            Actor::System,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not enabled"), "{refused}");

    // Created through a runtime that has the secret; served by one that
    // has not.
    let with_secret = auto_runtime(Arc::clone(&db.store), &e.clock);
    let id = with_secret
        .create(auto_rotating("machine", &holder.url), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    e.clock.advance(Duration::days(29) + Duration::hours(1));
    assert_eq!(e.notifier.run_once().await.unwrap().rotated, 0);
    assert_eq!(e.keys.get(id).await.unwrap().status, Status::Active);
    assert_eq!(holder.count(), 0);

    // With the secret it rotates; the holder answers 410 Gone, which
    // disables its endpoint: its keys are not rotated again.
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(with_secret.clone(), outbox, config(&e.receiver)).unwrap();
    holder.script([Reply::Status(410)]);
    let later = with_secret
        .create(auto_rotating("later", &holder.url), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    let pass = notifier.run_once().await.unwrap();
    assert_eq!((pass.rotated, pass.deliveries.failed), (1, 1), "{pass:?}");
    holder.wait_for(1).await;
    // Another key of the same holder, due in the same pass: left alone too.
    let sibling = with_secret
        .create(auto_rotating("sibling", &holder.url), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    e.clock.advance(Duration::days(29) + Duration::hours(1));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 0, "{pass:?}");
    assert_eq!(with_secret.get(later).await.unwrap().status, Status::Active);
    assert_eq!(
        with_secret.get(sibling).await.unwrap().status,
        Status::Active
    );
    assert_eq!(holder.count(), 1);
}
both_backends!(no_secret_no_rotation_works, no_secret_no_rotation);

/// With no rotation secret on any instance (automatic rotation turned off
/// while successors were still pending), no sender claims a sealed
/// successor: each pass leaves it while its key (the successor) is live,
/// and gives it up once that key is revoked or expired, the payload erased
/// and `webhook.failed` audited on the successor's log, counting no
/// attempt and sending nothing. A notifier with the secret gives it up
/// too, before its pass delivers.
async fn sealed_successors_of_dead_keys(db: &TestDb) {
    let e = env(db).await;
    let holder = Receiver::start().await;
    let with_secret = auto_runtime(Arc::clone(&db.store), &e.clock);
    let rotator = Notifier::new(
        with_secret.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        config(&e.receiver),
    )
    .unwrap();
    let mut parents = Vec::new();
    for name in ["to revoke", "to expire"] {
        let created = with_secret
            .create(
                auto_rotating(name, &holder.url).expires_at(e.clock.now() + Duration::hours(12)),
                Actor::System,
            )
            .await
            .unwrap();
        parents.push(created.key.id);
    }
    holder.script([Reply::Status(500), Reply::Status(500)]);
    let pass = rotator.run_once().await.unwrap();
    assert_eq!((pass.rotated, pass.deliveries.retried), (2, 2), "{pass:?}");
    holder.wait_for(2).await;
    let mut successors = Vec::new();
    for parent in &parents {
        successors.push(with_secret.lineage(*parent).await.unwrap()[1].clone());
    }
    let (revoked, expiring) = (&successors[0], &successors[1]);
    let delivery = |key: KeyId| successor_delivery(&e.notifier, key);
    let pending = |d: &scopekey_runtime::notify::Delivery| {
        assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1), "{d:?}");
        assert!(d.payload.starts_with("sealed:"), "{d:?}");
    };
    let given_up = |d: &scopekey_runtime::notify::Delivery| {
        assert_eq!(
            (d.state, d.payload.as_str(), d.attempts),
            (DeliveryState::Failed, "", 1),
            "{d:?}"
        );
        assert!(
            d.last_error
                .as_deref()
                .unwrap()
                .contains("revoked or expired"),
            "{d:?}"
        );
    };

    // From now on only notifiers without a secret run: while the
    // successors are live their deliveries wait, untouched.
    for _ in 0..3 {
        e.clock.advance(Duration::hours(2));
        let pass = e.notifier.run_once().await.unwrap();
        assert_eq!(pass.given_up, 0, "{pass:?}");
    }
    pending(&delivery(revoked.id).await);
    pending(&delivery(expiring.id).await);

    // One successor revoked: its delivery is given up by the next pass.
    e.keys
        .revoke(revoked.id, None, Actor::System)
        .await
        .unwrap();
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!(pass.given_up, 1, "{pass:?}");
    given_up(&delivery(revoked.id).await);
    pending(&delivery(expiring.id).await);

    // The other once its expiry has passed (not before), also by a
    // notifier that could open it and whose pass would send it: the pass
    // gives it up before it delivers.
    let expires_at = expiring.expires_at.expect("an automatic successor expires");
    e.clock.set(expires_at - Duration::seconds(1));
    assert_eq!(e.notifier.run_once().await.unwrap().given_up, 0);
    pending(&delivery(expiring.id).await);
    e.clock.set(expires_at);
    let pass = rotator.run_once().await.unwrap();
    assert_eq!(
        (pass.given_up, pass.deliveries.delivered),
        (1, 0),
        "{pass:?}"
    );
    given_up(&delivery(expiring.id).await);

    for successor in [revoked, expiring] {
        let failed = events_of(&e.keys, successor.id, webhook_event::WEBHOOK_FAILED).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        let details = &failed[0].details;
        assert_eq!(
            details["delivery_id"],
            delivery(successor.id).await.id.to_string()
        );
        assert!(
            details["error"]
                .as_str()
                .unwrap()
                .contains("revoked or expired"),
            "{details}"
        );
    }
    assert_eq!(holder.count(), 2, "nothing sent after the first attempts");
}
both_backends!(
    sealed_successors_of_dead_keys_are_given_up_without_a_secret,
    sealed_successors_of_dead_keys
);

/// A notifier with the rotation secret on `store`, and one key it has
/// rotated automatically whose successor's first delivery to `holder`
/// failed (500): that delivery is pending, due again in two hours. The
/// notifier and the successor.
async fn successor_pending(
    e: &Env,
    db: &TestDb,
    store: Arc<dyn scopekey_runtime::Store>,
    holder: &Receiver,
) -> (Notifier, scopekey_runtime::ApiKey) {
    let with_secret = auto_runtime(store, &e.clock);
    let rotator = Notifier::new(
        with_secret.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        config(&e.receiver),
    )
    .unwrap();
    let parent = with_secret
        .create(
            auto_rotating("rotated", &holder.url).expires_at(e.clock.now() + Duration::hours(12)),
            Actor::System,
        )
        .await
        .unwrap();
    holder.script([Reply::Status(500)]);
    let pass = rotator.run_once().await.unwrap();
    assert_eq!((pass.rotated, pass.deliveries.retried), (1, 1), "{pass:?}");
    holder.wait_for(1).await;
    let successor = with_secret.lineage(parent.key.id).await.unwrap()[1].clone();
    (rotator, successor)
}

/// A sealed successor whose key is revoked after the pass's give-up step
/// (here: no pass at all, only `deliver_due`) is still not sent: the sender
/// reads its key before sending, and gives the delivery up, erased.
async fn dead_successor_at_send(db: &TestDb) {
    let e = env(db).await;
    let holder = Receiver::start().await;
    let (rotator, successor) = successor_pending(&e, db, Arc::clone(&db.store), &holder).await;
    e.keys
        .revoke(successor.id, None, Actor::System)
        .await
        .unwrap();
    e.clock.advance(Duration::hours(2));
    let sent = rotator.deliver_due().await.unwrap();
    assert_eq!((sent.delivered, sent.failed), (0, 1), "{sent:?}");
    let d = successor_delivery(&e.notifier, successor.id).await;
    assert_eq!(
        (d.state, d.payload.as_str()),
        (DeliveryState::Failed, ""),
        "{d:?}"
    );
    assert!(
        d.last_error.as_deref().unwrap().contains("no longer live"),
        "{d:?}"
    );
    let failed = events_of(&e.keys, successor.id, webhook_event::WEBHOOK_FAILED).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(holder.count(), 1, "nothing sent after the first attempt");
}
both_backends!(
    a_successor_revoked_after_the_give_up_step_is_not_sent,
    dead_successor_at_send
);

/// A sealed successor whose key cannot be read just before sending (the
/// store failing) is neither sent nor given up: released at once, with no
/// attempt counted, and sent by the next round once the store answers.
async fn unread_successor_at_send(db: &TestDb) {
    let e = env(db).await;
    let holder = Receiver::start().await;
    let store = Arc::new(PausingStore::new(Arc::clone(&db.store)));
    // Its changes are not held back here: only its reads fail, when told.
    store.release.add_permits(1_000);
    let (rotator, successor) = successor_pending(&e, db, Arc::clone(&store) as _, &holder).await;
    e.clock.advance(Duration::hours(2));

    store.fail_gets.store(true, Ordering::SeqCst);
    let sent = rotator.deliver_due().await.unwrap();
    assert_eq!(
        (sent.delivered, sent.retried, sent.failed),
        (0, 0, 0),
        "{sent:?}"
    );
    let d = successor_delivery(&e.notifier, successor.id).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1), "{d:?}");
    assert!(d.claimed_until.is_none(), "released: {d:?}");
    assert_eq!(holder.count(), 1, "nothing sent while the key is unread");

    store.fail_gets.store(false, Ordering::SeqCst);
    let sent = rotator.deliver_due().await.unwrap();
    assert_eq!(sent.delivered, 1, "{sent:?}");
    holder.wait_for(2).await;
}
both_backends!(
    a_successor_whose_key_cannot_be_read_waits,
    unread_successor_at_send
);

/// The `action` of the one `key.expiring` notice `receiver` got for `id`.
fn notice_action(receiver: &Receiver, id: KeyId) -> String {
    let notices: Vec<Value> = receiver
        .requests()
        .iter()
        .map(Received::json)
        .filter(|b| b["type"] == "key.expiring" && b["data"]["id"] == id.to_string())
        .collect();
    assert_eq!(notices.len(), 1, "one notice for {id}");
    notices[0]["data"]["action"]
        .as_str()
        .expect("an action")
        .to_owned()
}

/// A notifier without a rotation secret rotates nothing: the notices of
/// keys that opted in to automatic rotation tell their holders to rotate.
async fn without_a_secret_notices_say_rotate(db: &TestDb) {
    let e = env(db).await;
    let with_secret = auto_runtime(Arc::clone(&db.store), &e.clock);
    let id = with_secret
        .create(
            auto_rotating("machine", "https://holder.example/hooks"),
            Actor::System,
        )
        .await
        .unwrap()
        .key
        .id;
    e.clock.advance(Duration::days(16));
    let pass = e.notifier.run_once().await.unwrap();
    assert_eq!((pass.rotated, pass.notices), (0, 1), "{pass:?}");
    assert_eq!(notice_action(&e.receiver, id), "rotate");
}
both_backends!(
    without_a_secret_notices_say_rotate_works,
    without_a_secret_notices_say_rotate
);

/// A notice says `"automatic_rotation"` (nothing to do) only for a key its
/// notifier would rotate; an opted-in key it would leave alone has its
/// holder told to rotate: one whose webhook is refused on sight (a port
/// this service does not allow), one whose endpoint is disabled (as after
/// a 410 Gone).
async fn notices_promise_only_rotations_that_happen(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let permissive = auto_runtime(Arc::clone(&db.store), &clock);
    let create = |name: &'static str, url: &'static str| {
        let keys = permissive.clone();
        async move {
            keys.create(auto_rotating(name, url), Actor::System)
                .await
                .unwrap()
                .key
                .id
        }
    };
    let fine = create("fine", "https://holder.example/hooks").await;
    let refused = create("refused", "https://holder.example:6379/hooks").await;
    let gone = create("gone", "https://gone.example/hooks").await;
    let gone_endpoint = Notifier::new(
        permissive.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        NotifierConfig {
            endpoints: vec![EndpointConfig::new(
                "https://gone.example/hooks",
                SECRET.parse().unwrap(),
            )],
            ..NotifierConfig::default()
        },
    )
    .unwrap();
    gone_endpoint.register().await.unwrap();
    assert!(
        gone_endpoint
            .outbox()
            .disable_endpoint("https://gone.example/hooks", "410 Gone", clock.now())
            .await
            .unwrap()
    );
    // A service that allows port 443 alone.
    let strict = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .default_grace(Duration::hours(24))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(strict, outbox, config(&operator)).unwrap();
    clock.advance(Duration::days(16));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!((pass.rotated, pass.notices), (0, 3), "{pass:?}");
    assert_eq!(notice_action(&operator, fine), "automatic_rotation");
    assert_eq!(notice_action(&operator, refused), "rotate");
    assert_eq!(notice_action(&operator, gone), "rotate");
}
both_backends!(
    notices_promise_only_rotations_that_happen_works,
    notices_promise_only_rotations_that_happen
);

/// A default grace shorter than the pass interval (here 0) does not cut the
/// old key short: rotated up to an interval before it expires, it keeps
/// working until then, its holder's window to receive the successor.
async fn automatic_rotation_never_shortens_a_key(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .default_grace(Duration::ZERO)
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .allow_insecure_rotation_webhooks(true)
        .build();
    let created = keys
        .create(
            auto_rotating("machine", &holder.url).expires_at(clock.now() + Duration::seconds(30)),
            Actor::System,
        )
        .await
        .unwrap();
    let old = created.key.id;
    let expires_at = created.key.expires_at.unwrap();
    let plaintext = created.plaintext.expose_secret().to_owned();
    let notifier = Notifier::new(
        keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        NotifierConfig {
            interval: StdDuration::from_secs(60),
            ..config(&operator)
        },
    )
    .unwrap();
    // Due: it expires within the interval.
    assert_eq!(notifier.run_once().await.unwrap().rotated, 1);
    // One that expires past the next pass, but before the one after, is due
    // now too: a next pass coming late (behind a slow delivery step) would
    // find it expired, never rotated.
    let later = keys
        .create(
            auto_rotating("later", &holder.url).expires_at(clock.now() + Duration::seconds(100)),
            Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(notifier.run_once().await.unwrap().rotated, 1);
    assert_eq!(
        keys.get(later.key.id).await.unwrap().status,
        Status::Rotating
    );
    holder.wait_for(2).await;
    holder.wait_for(1).await;
    let parent = keys.get(old).await.unwrap();
    assert_eq!(
        (parent.status, parent.expires_at),
        (Status::Rotating, Some(expires_at))
    );
    assert_eq!(keys.verify(&plaintext).await.unwrap().id, old);
    clock.advance(expires_at - Duration::seconds(1) - clock.now());
    keys.invalidate_cache();
    assert_eq!(keys.verify(&plaintext).await.unwrap().id, old);
    clock.advance(Duration::seconds(1));
    keys.invalidate_cache();
    assert!(matches!(
        keys.verify(&plaintext).await,
        Err(VerifyError::Expired)
    ));
}
both_backends!(
    automatic_rotation_never_shortens_a_key_works,
    automatic_rotation_never_shortens_a_key
);

/// A holder URL that is also (or once was) one of the operator's configured
/// endpoints still gets its sealed successors, from a notifier that does
/// not configure it: a sealed delivery needs the rotation secret to be
/// sent, not the endpoint to be of one kind.
async fn a_holder_url_once_configured_still_gets_its_successors(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let shared = Receiver::start().await;
    let operator = Receiver::start().await;
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    // The URL is an operator's endpoint first (registered by a notifier
    // configured with it), then a key's rotation webhook.
    let configuring = Notifier::new(
        keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        config(&shared),
    )
    .unwrap();
    configuring.register().await.unwrap();
    let created = keys
        .create(auto_rotating("machine", &shared.url), Actor::System)
        .await
        .unwrap();
    // The URL dropped from the configuration: another notifier rotates.
    let notifier = Notifier::new(
        keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        config(&operator),
    )
    .unwrap();
    clock.advance(Duration::days(29) + Duration::hours(1));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 1, "{pass:?}");
    shared.wait_for(1).await;
    let body = shared.requests()[0].json();
    assert_eq!(body["type"], "key.rotated");
    assert_eq!(body["data"]["parent_key_id"], created.key.id.to_string());
    let successor = body["data"]["key"].as_str().expect("the successor");
    assert!(keys.verify(successor).await.is_ok());
}
both_backends!(
    a_holder_url_once_configured_still_gets_its_successors_works,
    a_holder_url_once_configured_still_gets_its_successors
);

/// A key's own rotation webhook that is disabled gives up its pending
/// deliveries, so no sealed successor waits in the outbox for it: at once
/// when it answers 410 Gone or an operator disables it, and at the next
/// pass for one that was disabled behind the notifier's back (once its
/// lease, if any, has run out). Each is failed, its payload erased and
/// `webhook.failed` audited. A configured endpoint keeps its queue while
/// disabled, and it resumes when the endpoint is enabled again.
async fn disabled_key_webhooks_give_up_their_deliveries(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    let notifier = Notifier::new(
        keys.clone(),
        Outbox::connect(&db.url).await.unwrap(),
        NotifierConfig {
            batch_size: 1,
            ..config(&operator)
        },
    )
    .unwrap();
    notifier.register().await.unwrap();
    let outbox = notifier.outbox();
    // Three holders' URLs on one receiver: `gone` will answer 410,
    // `retired` is disabled by the operator, `behind` in the database.
    let (gone, retired, behind) = (
        holder.url.clone(),
        format!("{}/retired", holder.url),
        format!("{}/behind", holder.url),
    );
    for (name, url) in [
        ("one", &gone),
        ("two", &gone),
        ("three", &retired),
        ("four", &behind),
    ] {
        keys.create(auto_rotating(name, url), Actor::System)
            .await
            .unwrap();
    }
    outbox
        .enqueue(&expiring_event(clock.now()), json!({}))
        .await
        .unwrap();
    clock.advance(Duration::days(29) + Duration::hours(1));
    assert_eq!(notifier.rotate_due().await.unwrap(), 4);
    let rotated = || async {
        outbox
            .deliveries(&DeliveryFilter {
                event_type: Some(event_type::KEY_ROTATED.into()),
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let endpoint_of = |url: &str| {
        let url = url.to_owned();
        async move {
            outbox
                .endpoints()
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.url == url)
                .unwrap()
                .id
        }
    };
    let (gone_id, retired_id, behind_id) = (
        endpoint_of(&gone).await,
        endpoint_of(&retired).await,
        endpoint_of(&behind).await,
    );
    let given_up = |d: &scopekey_runtime::notify::Delivery, at| {
        assert_eq!(
            (d.state, d.payload.as_str(), d.finished_at, d.attempts),
            (DeliveryState::Failed, "", Some(at), 0),
            "{d:?}"
        );
        assert!(
            d.last_error
                .as_deref()
                .unwrap()
                .contains("endpoint was disabled"),
            "{d:?}"
        );
    };
    /// Its `webhook.failed` event, on its successor's log.
    async fn audited(keys: &ScopeKey, d: &scopekey_runtime::notify::Delivery, origin: &str) {
        let failed = events_of(keys, d.key_id.unwrap(), webhook_event::WEBHOOK_FAILED).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        let details = &failed[0].details;
        assert_eq!(details["delivery_id"], d.id.to_string());
        assert_eq!(details["endpoint_id"], d.endpoint_id.to_string());
        assert_eq!(details["event_type"], "key.rotated");
        assert_eq!(details["attempts"], d.attempts);
        assert_eq!(details["url"], origin);
        let error = details["error"].as_str().unwrap();
        assert!(error.contains("endpoint was disabled"), "{details}");
    }
    let origin = gone.trim_end_matches("/hooks/scopekey").to_owned();

    // An operator disables a holder's endpoint: its delivery is given up
    // in the same call.
    let now = clock.now();
    assert!(
        outbox
            .disable_endpoint(&retired, "retired", now)
            .await
            .unwrap()
    );
    let d = rotated()
        .await
        .into_iter()
        .find(|d| d.endpoint_id == retired_id)
        .unwrap();
    given_up(&d, now);
    audited(&keys, &d, &origin).await;
    // A configured endpoint disabled keeps its delivery, pending.
    assert!(
        outbox
            .disable_endpoint(&operator.url, "maintenance", now)
            .await
            .unwrap()
    );
    let waiting = outbox
        .deliveries(&DeliveryFilter {
            event_type: Some(event_type::KEY_EXPIRING.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].state, DeliveryState::Pending);
    assert!(waiting[0].payload.starts_with('{'));
    // `behind` is disabled in the database, its delivery leased for a day.
    let lease = match db.backend() {
        Backend::Sqlite => "next_attempt_at + 86400000000",
        Backend::Postgres => "next_attempt_at + interval '1 day'",
    };
    db.execute(&format!(
        "UPDATE scopekey_webhook_endpoints SET disabled_at = created_at, \
             disabled_reason = 'gone' WHERE id = '{behind_id}';
         UPDATE scopekey_deliveries SET claimed_until = {lease} \
             WHERE endpoint_id = '{behind_id}';"
    ))
    .await;

    // One of `gone`'s two deliveries is claimed (a batch of one) and
    // answered 410: the other is given up with it, never sent.
    clock.advance(Duration::seconds(1));
    holder.script([Reply::Status(410)]);
    let report = notifier.deliver_due().await.unwrap();
    assert_eq!((report.failed, report.delivered), (1, 0), "{report:?}");
    assert_eq!(holder.count(), 1);
    let to_gone: Vec<_> = rotated()
        .await
        .into_iter()
        .filter(|d| d.endpoint_id == gone_id)
        .collect();
    assert_eq!(to_gone.len(), 2);
    let (sent, unsent): (Vec<_>, Vec<_>) = to_gone.into_iter().partition(|d| d.attempts == 1);
    assert_eq!((sent.len(), unsent.len()), (1, 1));
    assert_eq!(
        holder.requests()[0].header("webhook-id"),
        sent[0].id.to_string()
    );
    assert_eq!(sent[0].last_status, Some(410));
    given_up(&unsent[0], clock.now());
    audited(&keys, &unsent[0], &origin).await;

    // The delivery disabled behind the notifier's back waits for its
    // lease, then a pass gives it up.
    let behind_now = || async {
        rotated()
            .await
            .into_iter()
            .find(|d| d.endpoint_id == behind_id)
            .unwrap()
    };
    assert_eq!(notifier.run_once().await.unwrap().given_up, 0);
    assert_eq!(behind_now().await.state, DeliveryState::Pending);
    clock.advance(Duration::days(2));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!(pass.given_up, 1, "{pass:?}");
    assert_eq!(pass.deliveries.failed, 0, "not counted as a delivery");
    let d = behind_now().await;
    given_up(&d, clock.now());
    audited(&keys, &d, &origin).await;
    assert_eq!(holder.count(), 1);

    // The configured endpoint, enabled again, gets its delivery.
    assert_eq!(operator.count(), 0);
    assert!(outbox.enable_endpoint(&operator.url).await.unwrap());
    assert_eq!(notifier.deliver_due().await.unwrap().delivered, 1);
    assert_eq!(operator.count(), 1);
}
both_backends!(
    disabled_key_webhooks_give_up_their_deliveries_works,
    disabled_key_webhooks_give_up_their_deliveries
);

/// Keys the notifier cannot rotate, then one it can, all due in a day:
/// `stuck` keys whose webhook secrets another service sealed (with its own
/// rotation secret), and an hour later ours; a notifier claiming `batch`
/// due keys at a time. The clock is left where they are all due.
struct StuckAhead {
    holder: Receiver,
    keys: ScopeKey,
    stuck: Vec<KeyId>,
    ours: KeyId,
    notifier: Notifier,
}

async fn stuck_ahead(db: &TestDb, stuck: usize, batch: u32) -> StuckAhead {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let elsewhere = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .rotation_webhook_secret(
            "whsec_YW5vdGhlciBzZXJ2aWNlJ3Mgcm90YXRpb24gc2VjcmV0"
                .parse()
                .unwrap(),
        )
        .allow_insecure_rotation_webhooks(true)
        .build();
    let mut ids = Vec::new();
    for i in 0..stuck {
        let created = elsewhere
            .create(
                auto_rotating(&format!("elsewhere {i}"), &holder.url),
                Actor::System,
            )
            .await
            .unwrap();
        ids.push(created.key.id);
    }
    clock.advance(Duration::hours(1));
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    let ours = keys
        .create(auto_rotating("ours", &holder.url), Actor::System)
        .await
        .unwrap()
        .key
        .id;
    let mut cfg = config(&operator);
    cfg.batch_size = batch;
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, cfg).unwrap();
    // All are due (expiring within the day's grace); ours expires last.
    clock.advance(Duration::days(29) + Duration::hours(1));
    StuckAhead {
        holder,
        keys,
        stuck: ids,
        ours,
        notifier,
    }
}

/// Keys the notifier cannot rotate are passed over, page after page: a key
/// due after a full batch of them is rotated in the same pass.
async fn unrotatable_keys_are_passed_over(db: &TestDb) {
    let t = stuck_ahead(db, 5, 2).await;
    let pass = t.notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 1, "{pass:?}");
    assert_eq!(t.keys.get(t.ours).await.unwrap().status, Status::Rotating);
    assert_eq!(t.keys.lineage(t.ours).await.unwrap().len(), 2);
    for id in &t.stuck {
        assert_eq!(t.keys.get(*id).await.unwrap().status, Status::Active);
    }
    t.holder.wait_for(1).await;
}
both_backends!(
    unrotatable_keys_are_passed_over_works,
    unrotatable_keys_are_passed_over
);

/// A pass reads at most 100 batches of due keys; when more are due than
/// that, none of them rotatable, the next pass goes on where it stopped
/// instead of reading the same ones again.
async fn rotation_resumes_where_the_last_pass_stopped(db: &TestDb) {
    let t = stuck_ahead(db, 101, 1).await;
    assert_eq!(
        t.notifier.run_once().await.unwrap().rotated,
        0,
        "100 batches, all stuck"
    );
    assert_eq!(
        t.notifier.run_once().await.unwrap().rotated,
        1,
        "went on from there"
    );
    assert_eq!(t.keys.get(t.ours).await.unwrap().status, Status::Rotating);
    t.holder.wait_for(1).await;
}
both_backends!(
    rotation_resumes_where_the_last_pass_stopped_works,
    rotation_resumes_where_the_last_pass_stopped
);

/// One bad key stops nothing: a key due an automatic rotation whose stored
/// scope no longer parses is passed over (the keys after it rotate, the
/// notices and deliveries go on); a store that refuses rotations fails the
/// pass, but only once its notices have been recorded and delivered.
async fn one_bad_key_stops_nothing(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    let due = |name: &'static str, hours: i64| {
        let (keys, url, at) = (keys.clone(), holder.url.clone(), clock.now());
        async move {
            keys.create(
                auto_rotating(name, &url).expires_at(at + Duration::hours(hours)),
                Actor::System,
            )
            .await
            .unwrap()
            .key
            .id
        }
    };
    let bad = due("bad", 11).await;
    let good = due("good", 12).await;
    db.execute(&format!(
        r#"UPDATE scopekey_keys SET scopes = '["NOT A SCOPE"]' WHERE id = '{bad}'"#
    ))
    .await;
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, config(&operator)).unwrap();
    let noticed = |id: KeyId| {
        operator
            .requests()
            .iter()
            .filter(|r| {
                r.json()["type"] == "key.expiring" && r.json()["data"]["id"] == id.to_string()
            })
            .count()
    };

    let pass = notifier.run_once().await.unwrap();
    // The bad key's notice goes out; the good one, rotated, needs none.
    assert_eq!((pass.rotated, pass.notices), (1, 1), "{pass:?}");
    assert_eq!(keys.lineage(good).await.unwrap().len(), 2);
    assert_eq!(db.store.get(bad).await.unwrap().unwrap().rotated_at, None);
    holder.wait_for(1).await;
    assert_eq!((noticed(bad), noticed(good)), (1, 0));

    // The store refusing rotations is the pass's error, after the rest.
    db.execute(match db.backend() {
        Backend::Sqlite => {
            "CREATE TRIGGER no_rotations BEFORE UPDATE OF rotated_at ON scopekey_keys \
             BEGIN SELECT RAISE(ABORT, 'rotations refused'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION no_rotations() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'rotations refused'; END $$; \
             CREATE TRIGGER no_rotations BEFORE UPDATE OF rotated_at ON scopekey_keys \
             FOR EACH ROW EXECUTE FUNCTION no_rotations();"
        }
    })
    .await;
    let refused = due("refused", 12).await;
    let error = notifier.run_once().await.unwrap_err();
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    assert!(chain.contains("rotations refused"), "{chain}");
    assert_eq!(keys.lineage(refused).await.unwrap().len(), 1);
    assert_eq!(noticed(refused), 1, "noticed and delivered all the same");
}
both_backends!(one_bad_key_stops_nothing_works, one_bad_key_stops_nothing);

/// A key created already inside its rotation window (an explicit expiry
/// sooner than the grace) is rotated on the next pass, not left to expire;
/// its successor, due only a period later, is not rotated again at once.
async fn a_key_due_from_the_start_is_rotated(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let keys = auto_runtime(Arc::clone(&db.store), &clock);
    let soon = keys
        .create(
            auto_rotating("soon", &holder.url).expires_at(clock.now() + Duration::hours(12)),
            Actor::System,
        )
        .await
        .unwrap()
        .key
        .id;
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, config(&operator)).unwrap();
    assert_eq!(notifier.run_once().await.unwrap().rotated, 1);
    assert_eq!(keys.get(soon).await.unwrap().status, Status::Rotating);
    assert_eq!(notifier.run_once().await.unwrap().rotated, 0);
    assert_eq!(keys.lineage(soon).await.unwrap().len(), 2);
    holder.wait_for(1).await;
}
both_backends!(
    a_key_due_from_the_start_is_rotated_works,
    a_key_due_from_the_start_is_rotated
);

/// A grace raised after keys were created, to as long as their period:
/// a successor can no longer keep its full grace, and is rotated at the
/// middle of its lifetime instead of never (it would expire, locking its
/// holder out); not before, so never again at once.
async fn a_period_no_longer_than_the_grace(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    // Created under a day's grace, with a period of two.
    let created_under = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .default_grace(Duration::hours(24))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .allow_insecure_rotation_webhooks(true)
        .build();
    let first = created_under
        .create(
            NewKey::new("machine", ["orders:read"])
                .rotate_every(Duration::days(2))
                .rotation_webhook(&holder.url),
            Actor::System,
        )
        .await
        .unwrap()
        .key
        .id;
    // The service now runs with a grace of two days.
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .default_grace(Duration::days(2))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        .allow_insecure_rotation_webhooks(true)
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(keys.clone(), outbox, config(&operator)).unwrap();
    // The first of its lineage is due at once (it expires within the grace).
    clock.advance(Duration::seconds(1));
    assert_eq!(notifier.run_once().await.unwrap().rotated, 1);
    let successor = keys.lineage(first).await.unwrap()[1].clone();
    assert_eq!(successor.expires_at, Some(clock.now() + Duration::days(2)));
    // Its successor: not before the middle of its two days...
    clock.advance(Duration::days(1) - Duration::seconds(1));
    assert_eq!(notifier.run_once().await.unwrap().rotated, 0);
    // ...then rotated, a day before it expires.
    clock.advance(Duration::seconds(1));
    assert_eq!(notifier.run_once().await.unwrap().rotated, 1);
    let lineage = keys.lineage(first).await.unwrap();
    assert_eq!(lineage.len(), 3);
    assert_eq!(
        keys.get(successor.id).await.unwrap().status,
        Status::Rotating
    );
    holder.wait_for(2).await;
}
both_backends!(
    a_period_no_longer_than_the_grace_rotates_at_its_middle,
    a_period_no_longer_than_the_grace
);

/// A holder's webhook is posted to only if it is https on a public address,
/// checked again by a notifier whose runtime does not allow insecure
/// rotation webhooks, for URLs a permissive runtime accepted. A URL refused
/// on its face (`http`, an internal IP literal) leaves its key unrotated (a
/// successor sent nowhere would be held by nobody, and the old key's grace
/// would run out); a host name, which the notifier resolves itself and which
/// here resolves only to loopback, is refused at delivery: that key is
/// rotated (the old one keeps its grace), its successor retried like any
/// failed delivery. Nothing reaches the receiver.
async fn holder_webhooks_stay_public(db: &TestDb) {
    let clock = ManualClock::starting_now();
    let operator = Receiver::start().await;
    let holder = Receiver::start().await;
    let port = holder
        .url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let permissive = auto_runtime(Arc::clone(&db.store), &clock);
    let urls = [
        // Refused when the name is resolved: the outbox says only that it
        // could not connect (the reason goes to the server's log), so that
        // a key's creator cannot probe names through it.
        (
            format!("https://localhost:{port}/hooks"),
            "could not connect",
        ),
        (
            format!("https://127.0.0.1:{port}/hooks"),
            "internal or reserved address",
        ),
        (
            format!("https://[::ffff:7f00:1]:{port}/hooks"),
            "internal or reserved address",
        ),
        (holder.url.clone(), "must be https"),
        // A port the strict runtime does not allow.
        (
            "https://holder.example:6379/hooks".to_owned(),
            "not one this service allows",
        ),
    ];
    for (i, (url, _)) in urls.iter().enumerate() {
        permissive
            .create(auto_rotating(&format!("holder {i}"), url), Actor::System)
            .await
            .unwrap();
    }
    let strict = ScopeKey::builder_arc(scopekey_runtime::open(&db.url).await.unwrap())
        .clock(clock.clone())
        .default_grace(Duration::hours(24))
        .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
        // The receiver's port: each URL is refused for its own reason.
        .rotation_webhook_ports([port.parse::<u16>().unwrap()])
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(strict, outbox.clone(), config(&operator)).unwrap();

    clock.advance(Duration::days(29) + Duration::hours(1));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 1, "only the host name's key: {pass:?}");
    assert_eq!(pass.deliveries.retried, 1, "{pass:?}");
    assert_eq!(holder.count(), 0, "nothing reached the holder's receiver");
    let (resolved, refused_on_sight) = urls.split_at(1);
    for (url, _) in refused_on_sight {
        let listed = keys_listed(db, &clock).await;
        let key = listed
            .iter()
            .find(|k| k.rotation_webhook_url.as_deref() == Some(url.as_str()))
            .unwrap_or_else(|| panic!("the key of {url}"));
        assert_eq!(key.status, Status::Active, "{url}: not rotated");
    }

    let endpoints: HashMap<_, _> = outbox
        .endpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.url))
        .collect();
    let deliveries = outbox
        .deliveries(&DeliveryFilter {
            event_type: Some(event_type::KEY_ROTATED.to_owned()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    for (url, why) in resolved {
        let delivery = deliveries
            .iter()
            .find(|d| &endpoints[&d.endpoint_id] == url)
            .unwrap_or_else(|| panic!("a successor delivery for {url}"));
        assert_eq!(delivery.state, DeliveryState::Pending, "retried later");
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.last_status, None);
        let error = delivery.last_error.as_deref().unwrap_or_default();
        assert!(error.contains(why), "{url}: {error}");
        assert!(!error.contains("public address"), "{url}: {error}");
        assert!(delivery.payload.starts_with("sealed:v1:"));
    }

    // Given up after the last attempt: the sealed successors are erased.
    for _ in 0..4 {
        clock.advance(Duration::hours(1));
        notifier.run_once().await.unwrap();
    }
    let given_up = outbox
        .deliveries(&DeliveryFilter {
            event_type: Some(event_type::KEY_ROTATED.to_owned()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(given_up.len(), resolved.len());
    for d in &given_up {
        assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 5));
        assert_eq!(d.payload, "", "erased once given up");
    }
}
both_backends!(
    holder_webhooks_stay_public_works,
    holder_webhooks_stay_public
);

/// Every key on `db`, as the API shows them at `clock`'s time.
async fn keys_listed(db: &TestDb, clock: &ManualClock) -> Vec<scopekey_runtime::ApiKey> {
    ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build()
        .list(&scopekey_runtime::ListKeys {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
}
