//! The outbox: deliveries waiting for their receiver, kept in the database
//! next to the keys, and what a backend must do with them.
//!
//! Every write here is one transaction; the backends (SQLite, PostgreSQL)
//! only store, the decisions (when to retry, when to give up) are the
//! [`Notifier`](super::Notifier)'s.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::key::KeyId;
use crate::model::{AuditEvent, KeyRecord};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Given up: attempts exhausted, or the endpoint answered 410 Gone.
    Failed,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::corrupt(format!(
                "unknown delivery state `{other}`"
            ))),
        }
    }
}

/// A webhook receiver as recorded in the database. Identified by its URL:
/// several notifier instances configured with one URL share one endpoint,
/// so each event is delivered to it once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// Identifier.
    pub id: Uuid,
    /// Where deliveries are posted.
    pub url: String,
    /// Event types fanned out to it.
    pub events: Vec<String>,
    /// When it was first registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// No delivery is attempted before this time (it asked to slow down:
    /// 429, 502, 503, 504 or `Retry-After`).
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_until: Option<OffsetDateTime>,
    /// Set when it answered 410 Gone (or an operator disabled it): nothing
    /// is enqueued for it or sent to it until it is enabled again.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Made for keys' own rotation webhooks (not a configured receiver):
    /// receives only successor deliveries. (A sealed successor goes out
    /// from any notifier holding a rotation secret, whatever endpoint it
    /// is for; a URL that is also a configured receiver has this unset.)
    pub key_delivery: bool,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The delivery's id: the `webhook-id` header, the same on every retry.
    pub id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The audit event delivered.
    pub event_id: Uuid,
    /// Its type (`key.expiring`, ...).
    pub event_type: String,
    /// The key it is about.
    pub key_id: Option<KeyId>,
    /// The exact request body; for a successor's plaintext sent to its
    /// key's holder, the body sealed (`sealed:v1:...`) while pending, and
    /// empty once the delivery is delivered or failed.
    pub payload: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the next attempt is due (while pending).
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// Until when a sender holds it, if claimed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub claimed_until: Option<OffsetDateTime>,
    /// The last attempt's time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The last attempt's HTTP status, if a response came.
    pub last_status: Option<u16>,
    /// What went wrong last (status text or transport error).
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// Which deliveries [`Outbox::deliveries`] lists.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only in this state.
    pub state: Option<DeliveryState>,
    /// Only about this key.
    pub key_id: Option<KeyId>,
    /// Only of this event type.
    pub event_type: Option<String>,
    /// At most this many (default 500).
    pub limit: Option<u32>,
}

/// An expiry notice recorded for a key: one per key and threshold, ever
/// (threshold 0 records the `key.expired` event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// The key.
    pub key_id: KeyId,
    /// The threshold, in seconds before expiry; 0 for "expired".
    pub threshold_seconds: i64,
    /// The audit event written with it.
    pub event_id: Uuid,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Which live keys a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// Unrevoked, not rotated, `expires_at > now`.
    Expiring,
    /// Unrevoked, `expires_at <= now`.
    Expired,
}

/// A notice to record, with its audit event and payload.
#[derive(Debug, Clone)]
pub(crate) struct NewNotice {
    pub kind: NoticeKind,
    pub key_id: KeyId,
    pub threshold_seconds: i64,
    pub now: OffsetDateTime,
    pub event: AuditEvent,
    pub data: Value,
}

/// A delivery claimed by a sender.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The endpoint's URL.
    pub url: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub key_id: Option<KeyId>,
    pub payload: String,
    pub attempts: u32,
}

/// What became of one attempt, to store.
#[derive(Debug, Clone)]
pub(crate) enum Completion {
    /// 2xx. Applied even if the claim was lost meanwhile, over a failure
    /// another sender recorded since: a 2xx is the truth.
    Delivered { at: OffsetDateTime, status: u16 },
    /// Try again at `next_attempt_at`; pause the whole endpoint until
    /// `pause_until` when it asked to slow down.
    Retry {
        at: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
        status: Option<u16>,
        error: String,
        pause_until: Option<OffsetDateTime>,
    },
    /// Give up, audit `failed`; on 410 also disable the endpoint, auditing
    /// `disabled` if this call disabled it.
    Failed {
        at: OffsetDateTime,
        status: Option<u16>,
        error: String,
        failed: Box<AuditEvent>,
        disable: Option<Box<(String, AuditEvent)>>,
    },
}

/// The last error of a delivery given up without another attempt because
/// its endpoint was disabled (a sealed successor's).
pub(crate) const ENDPOINT_DISABLED: &str =
    "given up without another attempt: the endpoint was disabled";

/// The last error of a sealed successor given up without another attempt
/// because its key (the successor) was revoked or expired, or is gone: its
/// plaintext is of no use to anyone then.
pub(crate) const KEY_NOT_LIVE: &str =
    "given up without another attempt: its key was revoked or expired, or is gone";

/// Which pending sealed successors to give up (see
/// [`Backend::give_up_sealed`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hopeless {
    /// Those to a disabled endpoint (to this one alone, if given), with
    /// [`ENDPOINT_DISABLED`].
    Disabled(Option<Uuid>),
    /// Those whose key is revoked, expired at the time given, or gone, with
    /// [`KEY_NOT_LIVE`].
    KeyNotLive,
}

/// A delivery given up, as its `webhook.failed` audit event describes it.
#[derive(Debug, Clone)]
pub(crate) struct GivenUp<'a> {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The endpoint's URL; the event shows its scheme, host and port only.
    pub url: &'a str,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub key_id: Option<KeyId>,
    /// Attempts made.
    pub attempts: u32,
    pub last_status: Option<u16>,
}

impl GivenUp<'_> {
    /// Its `webhook.failed` event, on the log of the key it is about.
    pub(crate) fn event(&self, at: OffsetDateTime, error: &str) -> AuditEvent {
        AuditEvent {
            id: uuid_at(at),
            key_id: self.key_id,
            kind: super::event_type::WEBHOOK_FAILED.to_owned(),
            actor_key_id: None,
            at,
            details: serde_json::json!({
                "delivery_id": self.id,
                "event_id": self.event_id,
                "event_type": self.event_type,
                "url": super::deliver::shown_url(self.url),
                "endpoint_id": self.endpoint_id,
                "attempts": self.attempts,
                "last_status": self.last_status,
                "error": error,
            }),
        }
    }
}

/// A key due an automatic rotation: its id, rotation webhook and expiry.
#[derive(Debug, Clone)]
pub(crate) struct DueRotation {
    pub(crate) id: KeyId,
    pub(crate) url: String,
    pub(crate) expires_at: OffsetDateTime,
}

/// A key's place in a listing by expiry (`(expires_at, id)`): where a page
/// of [`Backend::auto_rotation_due`] or [`Backend::expiring_keys`] ended.
pub(crate) type DuePosition = (OffsetDateTime, KeyId);

impl DueRotation {
    pub(crate) fn position(&self) -> DuePosition {
        (self.expires_at, self.id)
    }
}

/// The SQL assignment, for `concat!` and the same on both databases, that
/// empties a sealed payload (a successor's plaintext for its key's holder)
/// when its delivery finishes: once delivered or given up, nothing will send
/// it again, so the outbox stops holding it. Sealed means starting
/// `sealed:`, in any version, here as in every query and in
/// `seal::is_sealed`.
macro_rules! erase_sealed {
    () => {
        "payload = CASE WHEN substr(payload, 1, 7) = 'sealed:' THEN '' ELSE payload END"
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use erase_sealed;

/// Persistence for notices and deliveries; one implementation per database.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Inserts the endpoint, or updates its event types (never its disabled
    /// state: a 410 sticks until [`Outbox::enable_endpoint`]).
    async fn register_endpoint(
        &self,
        url: &str,
        events: &[String],
        now: OffsetDateTime,
        new_id: Uuid,
    ) -> Result<Endpoint, StoreError>;

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;

    /// The endpoint row for a key's rotation webhook, created (with
    /// `key_delivery` set and no event subscriptions) if the URL is new:
    /// its id, and whether it is disabled.
    async fn register_key_endpoint(
        &self,
        url: &str,
        now: OffsetDateTime,
        new_id: Uuid,
    ) -> Result<(Uuid, bool), StoreError>;

    /// Whether the endpoint with this id is disabled now (`false` if there
    /// is no such endpoint).
    async fn endpoint_disabled(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Whether the endpoint with this URL is disabled now (`false` if there
    /// is no such endpoint: a key's own webhook is registered at its first
    /// rotation).
    async fn url_disabled(&self, url: &str) -> Result<bool, StoreError>;

    /// Whether any key opted in to automatic rotation is live (unrevoked,
    /// not rotated, not expired at `now`): one read of the index the due
    /// scan uses.
    async fn auto_rotating_keys(&self, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Keys opted in to automatic rotation that are due: live, not rotated,
    /// `now < expires_at <= due_until`, and either the first of their
    /// lineage or past the middle of their lifetime (`created_at` to
    /// `expires_at`), so a successor made this pass is never due at once,
    /// however short its period, and one whose period is no longer than
    /// twice the lead is rotated at its middle rather than never; in
    /// `(expires_at, id)` order after `after` (a page's last). With their
    /// rotation webhooks.
    async fn auto_rotation_due(
        &self,
        now: OffsetDateTime,
        due_until: OffsetDateTime,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DueRotation>, StoreError>;

    /// Enables (`disable = None`) or disables an endpoint; whether it changed.
    /// Disabling an endpoint also gives up its pending deliveries of sealed
    /// successors in the same transaction, as
    /// [`give_up_sealed`](Self::give_up_sealed) does.
    async fn set_endpoint_disabled(
        &self,
        url: &str,
        disable: Option<(OffsetDateTime, &str)>,
    ) -> Result<bool, StoreError>;

    /// Keys with `lower < expires_at <= upper`, live, without a notice at
    /// `threshold_seconds` or closer, after `after` in `(expires_at, id)`
    /// order (from the start of the window without it), with their
    /// positions.
    async fn expiring_keys(
        &self,
        lower: OffsetDateTime,
        upper: OffsetDateTime,
        threshold_seconds: i64,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DuePosition>, StoreError>;

    /// Unrevoked keys with `since < expires_at <= now` and no `expired`
    /// notice, after `after` as for [`expiring_keys`](Self::expiring_keys).
    async fn expired_keys(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DuePosition>, StoreError>;

    /// In one transaction: the notice row, its audit event, and a delivery
    /// per subscribed endpoint. Whether it was recorded: only if the key
    /// still qualifies at `now` (an `Expiring` notice: live, not rotated,
    /// `now < expires_at <= now + threshold`; an `Expired` one: unrevoked,
    /// `expires_at <= now`), no notice exists for this key and threshold,
    /// and (an `Expiring` notice) none at a closer threshold either: a
    /// notifier that listed the key before another recorded a closer notice
    /// records nothing farther. Checked inside the insert, race-free
    /// (SQLite: one writer at a time; PostgreSQL: under the key row's lock).
    async fn record_notice(&self, notice: &NewNotice) -> Result<bool, StoreError>;

    /// In one transaction: the audit event and a delivery per subscribed
    /// endpoint. How many deliveries.
    async fn enqueue(&self, event: &AuditEvent, data: &Value) -> Result<usize, StoreError>;

    /// Claims up to `limit` due deliveries, to enabled endpoints that are
    /// not paused, unclaimed or with an expired claim, until `lease_until`:
    /// a sealed successor (to whatever endpoint) only with `key_deliveries`
    /// (this sender can open it), any other delivery only to one of
    /// `endpoints`.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        endpoints: &[Uuid],
        key_deliveries: bool,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        token: Uuid,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Stores an attempt's outcome, if the claim still holds (a success
    /// whatever became of the claim, unless the delivery is delivered
    /// already). Whether anything changed. A delivery that finishes
    /// (delivered or failed) loses a sealed payload (`erase_sealed!`). A
    /// 410 that disables an endpoint also gives up its other pending
    /// deliveries of sealed successors, as [`give_up_sealed`](Self::give_up_sealed)
    /// does.
    async fn complete(
        &self,
        claimed: &Claimed,
        token: Uuid,
        outcome: &Completion,
    ) -> Result<bool, StoreError>;

    /// Releases claims (`(delivery id, claim token)`) without an attempt:
    /// clears the lease of each delivery still pending under that token, so
    /// another sender may claim it at once. How many.
    async fn release(&self, claims: &[(Uuid, Uuid)]) -> Result<u64, StoreError>;

    /// Gives up the pending deliveries of sealed successors (a key's own
    /// rotation webhook's; at most `limit`) that `which` names, except
    /// those a sender holds a lease on at `at` (their sender records them):
    /// each is marked failed at `at` with the error `which` gives, loses
    /// its sealed payload (`erase_sealed!`) and gets its `webhook.failed`
    /// event, in one transaction. How many.
    ///
    /// - [`Hopeless::Disabled`]: to a disabled endpoint. Disabling an
    ///   endpoint does this for its own deliveries; this catches the ones
    ///   left (a successor enqueued by a rotation that raced the
    ///   disabling).
    /// - [`Hopeless::KeyNotLive`]: whose successor is revoked or expired at
    ///   `at`, or gone. A sender gives up such a delivery it cannot open
    ///   when it claims it; this also reaches those no sender claims (no
    ///   instance holds a rotation secret any more), which would otherwise
    ///   keep their sealed plaintext for ever.
    async fn give_up_sealed(
        &self,
        which: Hopeless,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` finished deliveries (delivered or failed) that
    /// finished before `before`; how many.
    async fn prune(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;

    async fn delivery(&self, id: Uuid) -> Result<Option<Delivery>, StoreError>;

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError>;

    async fn notices(&self, key_id: KeyId) -> Result<Vec<Notice>, StoreError>;
}

/// The webhook outbox on one database: the notifier's view of it, and the
/// way to enqueue events of one's own.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// The outbox in a SQLite database (share the store's pool:
    /// `Outbox::sqlite(store.pool().clone())`).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self {
            backend: Arc::new(super::sqlite::SqliteOutbox::new(pool)),
        }
    }

    /// The outbox in a PostgreSQL database (share the store's pool:
    /// `Outbox::postgres(store.pool().clone())`).
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self {
            backend: Arc::new(super::postgres::PgOutbox::new(pool)),
        }
    }

    /// Opens the outbox in the database a URL names, as
    /// [`store::open`](crate::store::open) does (a pool of its own; for
    /// `sqlite::memory:` use [`Outbox::sqlite`] with the store's pool, since
    /// another pool would see another database). Does not migrate: the
    /// store's migrations create the outbox tables.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = crate::store::postgres::PgStore::connect(url).await?;
            return Ok(Self::postgres(store.pool().clone()));
        }
        #[cfg(feature = "sqlite")]
        if url.starts_with("sqlite:") {
            let store = crate::store::sqlite::SqliteStore::connect(url).await?;
            return Ok(Self::sqlite(store.pool().clone()));
        }
        Err(StoreError::msg(format!(
            "unsupported database URL scheme in `{}`: expected sqlite: or postgres://",
            url.split(':').next().unwrap_or_default()
        )))
    }

    /// Writes an audit event and, in the same transaction, a delivery of it
    /// to every enabled endpoint subscribed to its type. `data` becomes the
    /// body's `data` member. Returns how many deliveries were enqueued.
    ///
    /// To enqueue inside a transaction of one's own, use
    /// [`sqlite::enqueue`](super::sqlite::enqueue) or
    /// [`postgres::enqueue`](super::postgres::enqueue).
    pub async fn enqueue(&self, event: &AuditEvent, data: Value) -> Result<usize, StoreError> {
        self.backend.enqueue(event, &data).await
    }

    /// The endpoints on record.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.backend.endpoints().await
    }

    /// Enables an endpoint again (after a 410, once its owner fixed it).
    /// Deliveries that were pending resume (a configured endpoint's: a key's
    /// own rotation webhook had its given up when it was disabled). Whether
    /// it was disabled.
    pub async fn enable_endpoint(&self, url: &str) -> Result<bool, StoreError> {
        self.backend.set_endpoint_disabled(url, None).await
    }

    /// Disables an endpoint: nothing is enqueued for it or claimed for it
    /// until it is enabled again (a delivery a sender already claimed may
    /// still go). A configured endpoint's pending deliveries wait for that;
    /// pending deliveries holding a sealed successor (a key's own rotation
    /// webhook) are given up at once, for good (failed, erased, each
    /// audited as `webhook.failed`; see the [module docs](super) on
    /// disabled endpoints). Whether it was enabled.
    pub async fn disable_endpoint(
        &self,
        url: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.backend
            .set_endpoint_disabled(url, Some((at, reason)))
            .await
    }

    /// One delivery.
    pub async fn delivery(&self, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        self.backend.delivery(id).await
    }

    /// Deliveries, oldest first.
    pub async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        self.backend.deliveries(filter).await
    }

    /// The notices recorded for a key, by threshold.
    pub async fn notices(&self, key_id: KeyId) -> Result<Vec<Notice>, StoreError> {
        self.backend.notices(key_id).await
    }
}

/// The request body: `{"type", "timestamp", "data"}`.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: &'a Value,
}

/// The exact body of every delivery of `event`.
pub(crate) fn body(event: &AuditEvent, data: &Value) -> Result<String, StoreError> {
    serde_json::to_string(&Body {
        kind: &event.kind,
        timestamp: event.at,
        data,
    })
    .map_err(|e| StoreError::new("could not serialize a webhook body", e))
}

/// Whether an endpoint subscribed to `events` receives `kind`. `webhook.*`
/// events are never delivered.
pub(crate) fn subscribed(events: &[String], kind: &str) -> bool {
    !kind.starts_with("webhook.") && events.iter().any(|e| e == kind)
}

/// A `data` member for an event about a key: the key object (as the API
/// shows it at the event's time, never a secret), then `event_id`,
/// `actor_key_id` and the event's details.
pub fn key_event_data(key: &KeyRecord, event: &AuditEvent) -> Value {
    let mut data = match serde_json::to_value(key.to_api_key(event.at)) {
        Ok(Value::Object(map)) => map,
        // An ApiKey always serializes to an object.
        _ => Map::new(),
    };
    data.insert("event_id".into(), Value::String(event.id.to_string()));
    data.insert(
        "actor_key_id".into(),
        event
            .actor_key_id
            .map_or(Value::Null, |a| Value::String(a.to_string())),
    );
    data.insert("details".into(), event.details.clone());
    Value::Object(data)
}

/// A UUID v7 stamped with the runtime clock's time, so ids sort with times
/// even when tests move the clock.
pub(crate) fn uuid_at(now: OffsetDateTime) -> Uuid {
    let nanos = now.unix_timestamp_nanos();
    let secs = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, sub))
}
