//! The outbox's guarantees at the level of its backends, on both
//! databases: what a claim token protects, and when a notice may be
//! recorded. These calls are the crate's own, so the tests live here; time
//! is the runtime's manual clock, moved by hand.

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::notice_event;
use super::outbox::{Claimed, Completion, DeliveryFilter, DeliveryState, NewNotice, NoticeKind};
use super::{Outbox, event_type as webhook_event, uuid_at};
use crate::testing::{Backend, TestDb, someone_waits_for_a_lock};
use crate::{
    Actor, AuditEvent, Clock, KeyId, ListEvents, ManualClock, NewKey, ScopeKey, both_backends,
};

const DAY: i64 = 86_400;
const LEASE: Duration = Duration::minutes(5);

struct Env {
    keys: ScopeKey,
    clock: ManualClock,
    outbox: Outbox,
    endpoint: Uuid,
}

/// A runtime on the test database and its outbox, with one endpoint
/// subscribed to `key.expiring`.
async fn env(db: &TestDb) -> Env {
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .clock(clock.clone())
        .build();
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let now = clock.now();
    let endpoint = outbox
        .backend
        .register_endpoint(
            "http://127.0.0.1:9/hooks",
            &["key.expiring".to_owned()],
            now,
            uuid_at(now),
        )
        .await
        .unwrap()
        .id;
    Env {
        keys,
        clock,
        outbox,
        endpoint,
    }
}

impl Env {
    /// Claims every due delivery under `token`, as a sender would.
    async fn claim(&self, token: Uuid) -> Vec<Claimed> {
        let now = self.clock.now();
        let mut claimed = self
            .outbox
            .backend
            .claim(&[self.endpoint], false, now, now + LEASE, token, 100)
            .await
            .unwrap();
        claimed.sort_by_key(|c| c.id);
        claimed
    }

    async fn complete(&self, c: &Claimed, token: Uuid, outcome: &Completion) -> bool {
        self.outbox
            .backend
            .complete(c, token, outcome)
            .await
            .unwrap()
    }

    async fn events(&self, key_id: Option<KeyId>, kind: &str) -> Vec<AuditEvent> {
        self.keys
            .events(&ListEvents {
                key_id,
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
}

fn retry(at: OffsetDateTime, error: &str) -> Completion {
    Completion::Retry {
        at,
        next_attempt_at: at + Duration::seconds(10),
        status: Some(500),
        error: error.to_owned(),
        pause_until: None,
    }
}

fn give_up(c: &Claimed, at: OffsetDateTime) -> Completion {
    Completion::Failed {
        at,
        status: Some(500),
        error: "HTTP 500; gave up".to_owned(),
        failed: Box::new(AuditEvent {
            id: uuid_at(at),
            key_id: None,
            kind: webhook_event::WEBHOOK_FAILED.to_owned(),
            actor_key_id: None,
            at,
            details: json!({ "delivery_id": c.id }),
        }),
        disable: None,
    }
}

/// A sender whose lease ran out cannot overwrite its successor's result:
/// its late failure (retry or give-up) is dropped, counting no attempt;
/// its late 2xx is recorded, whoever holds the row.
async fn a_late_sender(db: &TestDb) {
    let e = env(db).await;
    for _ in 0..2 {
        let now = e.clock.now();
        let event = AuditEvent {
            id: uuid_at(now),
            key_id: None,
            kind: "key.expiring".to_owned(),
            actor_key_id: None,
            at: now,
            details: json!({}),
        };
        assert_eq!(e.outbox.enqueue(&event, json!({})).await.unwrap(), 1);
    }
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let by_a = e.claim(a).await;
    assert_eq!(by_a.len(), 2);
    assert!(e.claim(b).await.is_empty(), "A holds them");
    e.clock.advance(LEASE + Duration::seconds(1));
    let by_b = e.claim(b).await;
    assert_eq!(
        by_b.iter().map(|c| c.id).collect::<Vec<_>>(),
        by_a.iter().map(|c| c.id).collect::<Vec<_>>(),
        "A's lease ran out: B takes them"
    );
    let delivery = |id| {
        let outbox = e.outbox.clone();
        async move { outbox.delivery(id).await.unwrap().unwrap() }
    };

    // The first: B fails and records it; A's late failures are dropped.
    let (a1, b1) = (&by_a[0], &by_b[0]);
    let at = e.clock.now();
    assert!(e.complete(b1, b, &retry(at, "B: HTTP 500")).await);
    assert!(!e.complete(a1, a, &retry(at, "A: HTTP 500")).await);
    assert!(!e.complete(a1, a, &give_up(a1, at)).await);
    let d = delivery(a1.id).await;
    assert_eq!(
        (d.state, d.attempts, d.last_error.as_deref()),
        (DeliveryState::Pending, 1, Some("B: HTTP 500")),
        "A's failures changed nothing: {d:?}"
    );
    assert!(
        e.events(None, webhook_event::WEBHOOK_FAILED)
            .await
            .is_empty()
    );
    // A's late 2xx is the truth, recorded all the same.
    e.clock.advance(Duration::seconds(1));
    let at = e.clock.now();
    assert!(
        e.complete(a1, a, &Completion::Delivered { at, status: 200 })
            .await
    );
    let d = delivery(a1.id).await;
    assert_eq!(
        (d.state, d.attempts, d.last_status, d.claimed_until),
        (DeliveryState::Delivered, 2, Some(200), None),
        "{d:?}"
    );

    // The second: A's late 2xx while B still holds it, then B's failure
    // (its claim gone with the delivery's end) is dropped.
    let (a2, b2) = (&by_a[1], &by_b[1]);
    assert!(
        e.complete(a2, a, &Completion::Delivered { at, status: 204 })
            .await
    );
    assert!(!e.complete(b2, b, &retry(at, "B: HTTP 500")).await);
    assert!(!e.complete(b2, b, &give_up(b2, at)).await);
    let d = delivery(a2.id).await;
    assert_eq!(
        (d.state, d.attempts, d.last_status, d.last_error.as_deref()),
        (DeliveryState::Delivered, 1, Some(204), None),
        "{d:?}"
    );
    assert!(
        e.events(None, webhook_event::WEBHOOK_FAILED)
            .await
            .is_empty()
    );
}
both_backends!(a_late_sender_cannot_overwrite_its_successor, a_late_sender);

/// A late 2xx is recorded even after the sender that took the row over
/// gave the delivery up: the receiver has it. The `webhook.failed` audited
/// then stays in the log.
async fn a_late_success(db: &TestDb) {
    let e = env(db).await;
    let now = e.clock.now();
    let event = AuditEvent {
        id: uuid_at(now),
        key_id: None,
        kind: "key.expiring".to_owned(),
        actor_key_id: None,
        at: now,
        details: json!({}),
    };
    assert_eq!(e.outbox.enqueue(&event, json!({})).await.unwrap(), 1);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let by_a = e.claim(a).await;
    e.clock.advance(LEASE + Duration::seconds(1));
    let by_b = e.claim(b).await;
    assert_eq!(by_b.len(), 1, "A's lease ran out: B takes it");
    let at = e.clock.now();
    assert!(e.complete(&by_b[0], b, &give_up(&by_b[0], at)).await);
    let id = by_a[0].id;
    let d = e.outbox.delivery(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Failed);

    e.clock.advance(Duration::seconds(1));
    let at = e.clock.now();
    let delivered = Completion::Delivered { at, status: 200 };
    assert!(e.complete(&by_a[0], a, &delivered).await);
    let d = e.outbox.delivery(id).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts, d.last_status, d.last_error.as_deref()),
        (DeliveryState::Delivered, 2, Some(200), None),
        "{d:?}"
    );
    assert_eq!(d.finished_at, Some(at));
    assert_eq!(e.events(None, webhook_event::WEBHOOK_FAILED).await.len(), 1);
    // Recorded once: a second 2xx changes nothing.
    assert!(!e.complete(&by_a[0], a, &delivered).await);
}
both_backends!(a_late_success_is_recorded_over_a_give_up, a_late_success);

impl Env {
    async fn key_expiring_in(&self, name: &str, ttl: Duration) -> KeyId {
        self.keys
            .create(
                NewKey::new(name, ["orders:read"]).expires_in(ttl),
                Actor::System,
            )
            .await
            .unwrap()
            .key
            .id
    }

    /// What a notifier listing `id` for `threshold` days would record now.
    async fn new_notice(&self, id: KeyId, threshold: i64) -> NewNotice {
        let now = self.clock.now();
        let record = self.keys.store().get(id).await.unwrap().unwrap();
        let (event, data) =
            notice_event(&record, NoticeKind::Expiring, threshold * DAY, false, now);
        NewNotice {
            kind: NoticeKind::Expiring,
            key_id: id,
            threshold_seconds: threshold * DAY,
            now,
            event,
            data,
        }
    }

    async fn record(&self, id: KeyId, threshold: i64) -> bool {
        let notice = self.new_notice(id, threshold).await;
        self.outbox.backend.record_notice(&notice).await.unwrap()
    }

    /// The key's notices (thresholds in days), deliveries and
    /// `key.expiring` events.
    async fn recorded(&self, id: KeyId) -> (Vec<i64>, usize, usize) {
        let notices = self.outbox.notices(id).await.unwrap();
        let deliveries = self
            .outbox
            .deliveries(&DeliveryFilter {
                key_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap();
        let events = self.events(Some(id), "key.expiring").await;
        (
            notices.iter().map(|n| n.threshold_seconds / DAY).collect(),
            deliveries.len(),
            events.len(),
        )
    }
}

/// Recording a notice checks the key as it stands: a notice farther than
/// one already recorded, or for a threshold the key is not within yet, is
/// not recorded, and writes no event and no delivery.
async fn notices_come_closer_only(db: &TestDb) {
    let e = env(db).await;
    let soon = e.key_expiring_in("soon", Duration::hours(12)).await;
    assert!(e.record(soon, 1).await);
    assert!(
        !e.record(soon, 14).await,
        "a 14-day notice after the 1-day one"
    );
    assert_eq!(e.recorded(soon).await, (vec![1], 1, 1));

    let later = e.key_expiring_in("later", Duration::days(20)).await;
    assert!(!e.record(later, 14).await, "not within 14 days yet");
    assert_eq!(e.recorded(later).await, (vec![], 0, 0));
    // Within it, it is; and a closer one after it too.
    e.clock.advance(Duration::days(7));
    assert!(e.record(later, 14).await);
    e.clock.advance(Duration::days(12));
    assert!(e.record(later, 1).await);
    assert_eq!(e.recorded(later).await, (vec![14, 1], 2, 2));
}
both_backends!(notices_come_closer_only_works, notices_come_closer_only);

/// PostgreSQL: a notifier recording a farther notice while another's
/// closer one is not yet committed waits for it (the key row's lock), then
/// records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farther_notice_waits_for_a_closer_one_in_flight() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let e = env(&db).await;
    let key = e.key_expiring_in("soon", Duration::hours(12)).await;
    let farther = e.new_notice(key, 14).await;
    // Another notifier's transaction, recording the 1-day notice.
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM scopekey_keys WHERE id = $1 FOR NO KEY UPDATE")
        .bind(key.0)
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO scopekey_notices (key_id, threshold_seconds, event_id, at) \
         VALUES ($1, $2, $3, now())",
    )
    .bind(key.0)
    .bind(DAY)
    .bind(Uuid::now_v7())
    .execute(&mut other)
    .await
    .unwrap();
    let backend = Arc::clone(&e.outbox.backend);
    let racing = tokio::spawn(async move { backend.record_notice(&farther).await.unwrap() });
    let mut watcher = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    someone_waits_for_a_lock(&mut watcher).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    assert!(
        !racing.await.unwrap(),
        "the 14-day notice after the 1-day one"
    );
    assert_eq!(e.recorded(key).await, (vec![1], 0, 0));
    drop((other, watcher));
    db.cleanup().await;
}
