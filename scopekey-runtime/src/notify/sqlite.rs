//! The outbox on SQLite. Every write is a `BEGIN IMMEDIATE` transaction, so
//! writers queue on the busy timeout instead of failing to upgrade a read
//! lock; SQLite has one writer at a time, which makes a claim (an `UPDATE
//! ... WHERE id IN (SELECT ... LIMIT n) RETURNING`) exclusive without row
//! locks.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{
    Backend, Claimed, Completion, Delivery, DeliveryFilter, DeliveryState, DuePosition,
    DueRotation, ENDPOINT_DISABLED, Endpoint, GivenUp, Hopeless, KEY_NOT_LIVE, NewNotice, Notice,
    NoticeKind, body, erase_sealed, key_event_data, subscribed, uuid_at,
};
use crate::error::StoreError;
use crate::key::KeyId;
use crate::model::{AuditEvent, KeyRecord};
use crate::store::{from_micros, micros};

/// The outbox in a SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqliteOutbox {
    pool: SqlitePool,
}

impl SqliteOutbox {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::try_parse(s).map_err(|e| StoreError::new("stored id is not a UUID", e).into_corrupt())
}

/// A listing's position as bound: `after`, or one before every key
/// expiring after `start` (an empty string sorts before every id).
fn position(after: Option<DuePosition>, start: OffsetDateTime) -> (i64, String) {
    match after {
        Some((at, id)) => (micros(at), id.to_string()),
        None => (micros(start), String::new()),
    }
}

/// A listed key's position: its expiry and id.
fn due_position(row: &SqliteRow) -> Result<DuePosition, StoreError> {
    Ok((
        from_micros(row.try_get("expires_at")?)?,
        KeyId(uuid(row.try_get("id")?)?),
    ))
}

fn opt_time(v: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    v.map(from_micros).transpose()
}

fn events_of(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::new("stored event types are not JSON", e).into_corrupt())
}

const ENDPOINT_COLUMNS: &str =
    "id, url, event_types, created_at, paused_until, disabled_at, disabled_reason, key_delivery";

fn endpoint(row: &SqliteRow) -> Result<Endpoint, StoreError> {
    Ok(Endpoint {
        id: uuid(row.try_get("id")?)?,
        url: row.try_get("url")?,
        events: events_of(row.try_get("event_types")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        paused_until: opt_time(row.try_get("paused_until")?)?,
        disabled_at: opt_time(row.try_get("disabled_at")?)?,
        disabled_reason: row.try_get("disabled_reason")?,
        key_delivery: row.try_get("key_delivery")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, key_id, payload, state, \
     attempts, created_at, next_attempt_at, claimed_until, last_attempt_at, last_status, \
     last_error, finished_at";

fn delivery(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let key_id: Option<String> = row.try_get("key_id")?;
    let status: Option<i64> = row.try_get("last_status")?;
    Ok(Delivery {
        id: uuid(row.try_get("id")?)?,
        endpoint_id: uuid(row.try_get("endpoint_id")?)?,
        event_id: uuid(row.try_get("event_id")?)?,
        event_type: row.try_get("event_type")?,
        key_id: key_id.as_deref().map(uuid).transpose()?.map(KeyId),
        payload: row.try_get("payload")?,
        state: DeliveryState::parse(row.try_get("state")?)?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        created_at: from_micros(row.try_get("created_at")?)?,
        next_attempt_at: from_micros(row.try_get("next_attempt_at")?)?,
        claimed_until: opt_time(row.try_get("claimed_until")?)?,
        last_attempt_at: opt_time(row.try_get("last_attempt_at")?)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        finished_at: opt_time(row.try_get("finished_at")?)?,
    })
}

async fn insert_event(conn: &mut SqliteConnection, e: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scopekey_events (id, key_id, type, actor_key_id, at, details) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id.to_string())
    .bind(e.key_id.map(|k| k.to_string()))
    .bind(&e.kind)
    .bind(e.actor_key_id.map(|k| k.to_string()))
    .bind(micros(e.at))
    .bind(e.details.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives up the pending deliveries of sealed successors that `which`
/// names, at most `limit`, inside the caller's transaction: see
/// [`Backend::give_up_sealed`].
async fn give_up_sealed(
    conn: &mut SqliteConnection,
    which: Hopeless,
    at: OffsetDateTime,
    limit: i64,
) -> Result<u64, StoreError> {
    let (endpoint, error) = match which {
        Hopeless::Disabled(endpoint) => (endpoint, ENDPOINT_DISABLED),
        Hopeless::KeyNotLive => (None, KEY_NOT_LIVE),
    };
    let rows = sqlx::query(concat!(
        "UPDATE scopekey_deliveries SET state = 'failed', ",
        erase_sealed!(),
        ", finished_at = ?1, last_error = ?2, claimed_until = NULL, claim_token = NULL \
         WHERE id IN (SELECT d.id FROM scopekey_deliveries d \
             JOIN scopekey_webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.state = 'pending' AND substr(d.payload, 1, 7) = 'sealed:' \
             AND (d.claimed_until IS NULL OR d.claimed_until <= ?1) \
             AND CASE WHEN ?5 THEN NOT EXISTS (SELECT 1 FROM scopekey_keys k \
                     WHERE k.id = d.key_id AND k.revoked_at IS NULL \
                     AND (k.expires_at IS NULL OR k.expires_at > ?1)) \
                 ELSE e.disabled_at IS NOT NULL AND (?3 IS NULL OR d.endpoint_id = ?3) END \
             ORDER BY d.id LIMIT ?4) \
         RETURNING id, endpoint_id, event_id, event_type, key_id, attempts, last_status, \
             (SELECT e.url FROM scopekey_webhook_endpoints e WHERE e.id = endpoint_id) AS url"
    ))
    .bind(micros(at))
    .bind(error)
    .bind(endpoint.map(|e| e.to_string()))
    .bind(limit)
    .bind(matches!(which, Hopeless::KeyNotLive))
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        let key_id: Option<String> = r.try_get("key_id")?;
        let status: Option<i64> = r.try_get("last_status")?;
        let url: String = r.try_get("url")?;
        let event_type: String = r.try_get("event_type")?;
        let given_up = GivenUp {
            id: uuid(r.try_get("id")?)?,
            endpoint_id: uuid(r.try_get("endpoint_id")?)?,
            url: &url,
            event_id: uuid(r.try_get("event_id")?)?,
            event_type: &event_type,
            key_id: key_id.as_deref().map(uuid).transpose()?.map(KeyId),
            attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
            last_status: status.and_then(|s| u16::try_from(s).ok()),
        };
        insert_event(conn, &given_up.event(at, error)).await?;
    }
    Ok(rows.len() as u64)
}

/// Enqueues a delivery of `event` to every enabled endpoint subscribed to
/// its type, inside the caller's transaction (which must also write the
/// event). `data` becomes the body's `data` member. Returns how many
/// deliveries were enqueued; enqueuing an event twice adds nothing while its
/// first deliveries are kept (finished ones are deleted after the
/// notifier's `delivery_retention`).
pub async fn enqueue(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
    data: &Value,
) -> Result<usize, StoreError> {
    // An endpoint row that cannot be read is no key's data: every key's
    // change fails on it alike, which is the store failing.
    enqueue_to_endpoints(conn, event, data)
        .await
        .map_err(StoreError::not_corrupt)
}

async fn enqueue_to_endpoints(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
    data: &Value,
) -> Result<usize, StoreError> {
    if event.kind.starts_with("webhook.") {
        return Ok(0);
    }
    // Keys' own rotation webhooks subscribe to nothing: not read at all,
    // however many holders there are.
    let rows = sqlx::query(
        "SELECT id, event_types FROM scopekey_webhook_endpoints \
         WHERE disabled_at IS NULL AND NOT key_delivery",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut targets = Vec::new();
    for row in &rows {
        if subscribed(&events_of(row.try_get("event_types")?)?, &event.kind) {
            targets.push(row.try_get::<String, _>("id")?);
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let payload = body(event, data)?;
    let mut enqueued = 0;
    for endpoint_id in targets {
        let done = sqlx::query(
            "INSERT INTO scopekey_deliveries (id, endpoint_id, event_id, event_type, key_id, \
             payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (event_id, endpoint_id) DO NOTHING",
        )
        .bind(uuid_at(event.at).to_string())
        .bind(endpoint_id)
        .bind(event.id.to_string())
        .bind(&event.kind)
        .bind(event.key_id.map(|k| k.to_string()))
        .bind(&payload)
        .bind(micros(event.at))
        .bind(micros(event.at))
        .execute(&mut *conn)
        .await?;
        enqueued += usize::try_from(done.rows_affected()).unwrap_or(0);
    }
    Ok(enqueued)
}

/// Enqueues lifecycle events about keys inside the store's transaction
/// (the hook for `key.created`, `key.rotated`, `key.revoked`,
/// `key.compromised`): each event's `data` is the key it names, found in
/// `keys` and shown as at the event's time ([`key_event_data`]), plus the
/// event. Events about no key in `keys` get the event alone.
pub async fn enqueue_key_events(
    conn: &mut SqliteConnection,
    events: &[AuditEvent],
    keys: &[&KeyRecord],
) -> Result<(), StoreError> {
    for event in events {
        let data = match keys.iter().find(|k| Some(k.id) == event.key_id) {
            Some(key) => key_event_data(key, event),
            None => serde_json::json!({
                "event_id": event.id,
                "key_id": event.key_id,
                "actor_key_id": event.actor_key_id,
                "details": event.details,
            }),
        };
        enqueue(conn, event, &data).await?;
    }
    Ok(())
}

#[async_trait]
impl Backend for SqliteOutbox {
    async fn register_endpoint(
        &self,
        url: &str,
        events: &[String],
        now: OffsetDateTime,
        new_id: Uuid,
    ) -> Result<Endpoint, StoreError> {
        let events = serde_json::to_string(events)
            .map_err(|e| StoreError::new("could not serialize event types", e))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let sql = format!(
            "INSERT INTO scopekey_webhook_endpoints (id, url, event_types, created_at) \
             VALUES (?, ?, ?, ?) \
             ON CONFLICT (url) DO UPDATE SET event_types = excluded.event_types, key_delivery = 0 \
             RETURNING {ENDPOINT_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(new_id.to_string())
            .bind(url)
            .bind(events)
            .bind(micros(now))
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        endpoint(&row)
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM scopekey_webhook_endpoints ORDER BY created_at, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(endpoint).collect()
    }

    async fn register_key_endpoint(
        &self,
        url: &str,
        now: OffsetDateTime,
        new_id: Uuid,
    ) -> Result<(Uuid, bool), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // The no-op update makes RETURNING give the existing row.
        let row = sqlx::query(
            "INSERT INTO scopekey_webhook_endpoints (id, url, event_types, created_at, key_delivery) \
             VALUES (?, ?, '[]', ?, 1) \
             ON CONFLICT (url) DO UPDATE SET url = excluded.url \
             RETURNING id, disabled_at IS NOT NULL AS disabled",
        )
        .bind(new_id.to_string())
        .bind(url)
        .bind(micros(now))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((uuid(row.try_get("id")?)?, row.try_get("disabled")?))
    }

    async fn endpoint_disabled(&self, id: Uuid) -> Result<bool, StoreError> {
        let disabled: Option<bool> = sqlx::query_scalar(
            "SELECT disabled_at IS NOT NULL FROM scopekey_webhook_endpoints WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(disabled.unwrap_or(false))
    }

    async fn url_disabled(&self, url: &str) -> Result<bool, StoreError> {
        let disabled: Option<bool> = sqlx::query_scalar(
            "SELECT disabled_at IS NOT NULL FROM scopekey_webhook_endpoints WHERE url = ?",
        )
        .bind(url)
        .fetch_optional(&self.pool)
        .await?;
        Ok(disabled.unwrap_or(false))
    }

    async fn auto_rotating_keys(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        let any: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM scopekey_keys \
             WHERE rotation_webhook_url IS NOT NULL AND revoked_at IS NULL \
             AND rotated_at IS NULL AND (expires_at IS NULL OR expires_at > ?))",
        )
        .bind(micros(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(any)
    }

    async fn auto_rotation_due(
        &self,
        now: OffsetDateTime,
        due_until: OffsetDateTime,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DueRotation>, StoreError> {
        // Without a position, one before every key: no expiry is before
        // `now`.
        let (after_expiry, after_id) = position(after, now);
        // Past the middle of its lifetime: no more of it left than gone (no
        // division, so both stores compute it exactly alike).
        let rows = sqlx::query(
            "SELECT id, rotation_webhook_url, expires_at FROM scopekey_keys \
             WHERE rotation_webhook_url IS NOT NULL AND revoked_at IS NULL \
             AND rotated_at IS NULL AND expires_at > ?1 AND expires_at <= ?2 \
             AND (parent_key_id IS NULL OR expires_at - ?1 <= ?1 - created_at) \
             AND (expires_at > ?3 OR (expires_at = ?3 AND id > ?4)) \
             ORDER BY expires_at, id LIMIT ?5",
        )
        .bind(micros(now))
        .bind(micros(due_until))
        .bind(after_expiry)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueRotation {
                    id: KeyId(uuid(r.try_get("id")?)?),
                    url: r.try_get("rotation_webhook_url")?,
                    expires_at: from_micros(r.try_get("expires_at")?)?,
                })
            })
            .collect()
    }

    async fn set_endpoint_disabled(
        &self,
        url: &str,
        disable: Option<(OffsetDateTime, &str)>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let changed = match disable {
            Some((at, reason)) => {
                let disabled: Option<String> = sqlx::query_scalar(
                    "UPDATE scopekey_webhook_endpoints SET disabled_at = ?, disabled_reason = ? \
                     WHERE url = ? AND disabled_at IS NULL RETURNING id",
                )
                .bind(micros(at))
                .bind(reason)
                .bind(url)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(id) = &disabled {
                    give_up_sealed(&mut tx, Hopeless::Disabled(Some(uuid(id)?)), at, i64::MAX)
                        .await?;
                }
                disabled.is_some()
            }
            None => {
                sqlx::query(
                    "UPDATE scopekey_webhook_endpoints SET disabled_at = NULL, \
                     disabled_reason = NULL, paused_until = NULL \
                     WHERE url = ? AND disabled_at IS NOT NULL",
                )
                .bind(url)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0
            }
        };
        tx.commit().await?;
        Ok(changed)
    }

    async fn expiring_keys(
        &self,
        lower: OffsetDateTime,
        upper: OffsetDateTime,
        threshold_seconds: i64,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DuePosition>, StoreError> {
        let (after_expiry, after_id) = position(after, lower);
        let rows = sqlx::query(
            "SELECT k.id, k.expires_at FROM scopekey_keys k \
             WHERE k.revoked_at IS NULL AND k.rotated_at IS NULL AND k.expires_at IS NOT NULL \
             AND k.expires_at > ?1 AND k.expires_at <= ?2 \
             AND NOT EXISTS (SELECT 1 FROM scopekey_notices n WHERE n.key_id = k.id \
                 AND n.threshold_seconds > 0 AND n.threshold_seconds <= ?3) \
             AND (k.expires_at > ?4 OR (k.expires_at = ?4 AND k.id > ?5)) \
             ORDER BY k.expires_at, k.id LIMIT ?6",
        )
        .bind(micros(lower))
        .bind(micros(upper))
        .bind(threshold_seconds)
        .bind(after_expiry)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(due_position).collect()
    }

    async fn expired_keys(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
        after: Option<DuePosition>,
        limit: u32,
    ) -> Result<Vec<DuePosition>, StoreError> {
        let (after_expiry, after_id) = position(after, since);
        let rows = sqlx::query(
            "SELECT k.id, k.expires_at FROM scopekey_keys k \
             WHERE k.revoked_at IS NULL AND k.expires_at IS NOT NULL \
             AND k.expires_at > ?1 AND k.expires_at <= ?2 \
             AND NOT EXISTS (SELECT 1 FROM scopekey_notices n WHERE n.key_id = k.id \
                 AND n.threshold_seconds = 0) \
             AND (k.expires_at > ?3 OR (k.expires_at = ?3 AND k.id > ?4)) \
             ORDER BY k.expires_at, k.id LIMIT ?5",
        )
        .bind(micros(since))
        .bind(micros(now))
        .bind(after_expiry)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(due_position).collect()
    }

    async fn record_notice(&self, n: &NewNotice) -> Result<bool, StoreError> {
        // Within the threshold at `now`, and no notice at a closer one
        // (BEGIN IMMEDIATE: no other writer between the check and the
        // insert).
        let live = match n.kind {
            NoticeKind::Expiring => {
                "k.revoked_at IS NULL AND k.rotated_at IS NULL AND k.expires_at > ?5 \
                 AND k.expires_at <= ?6 \
                 AND NOT EXISTS (SELECT 1 FROM scopekey_notices c WHERE c.key_id = k.id \
                     AND c.threshold_seconds > 0 AND c.threshold_seconds < ?2)"
            }
            NoticeKind::Expired => "k.revoked_at IS NULL AND k.expires_at <= ?5",
        };
        let sql = format!(
            "INSERT INTO scopekey_notices (key_id, threshold_seconds, event_id, at) \
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS \
             (SELECT 1 FROM scopekey_keys k WHERE k.id = ?1 AND {live}) \
             ON CONFLICT (key_id, threshold_seconds) DO NOTHING"
        );
        let within = n
            .now
            .saturating_add(time::Duration::seconds(n.threshold_seconds));
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(n.key_id.to_string())
            .bind(n.threshold_seconds)
            .bind(n.event.id.to_string())
            .bind(micros(n.event.at))
            .bind(micros(n.now))
            .bind(micros(within))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event(&mut tx, &n.event).await?;
        enqueue(&mut tx, &n.event, &n.data).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn enqueue(&self, event: &AuditEvent, data: &Value) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_event(&mut tx, event).await?;
        let n = enqueue(&mut tx, event, data).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn claim(
        &self,
        endpoints: &[Uuid],
        key_deliveries: bool,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        token: Uuid,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        if endpoints.is_empty() && !key_deliveries {
            return Ok(Vec::new());
        }
        let ids =
            Value::from(endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>()).to_string();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "UPDATE scopekey_deliveries SET claimed_until = ?1, claim_token = ?2 \
             WHERE id IN (SELECT d.id FROM scopekey_deliveries d \
                 JOIN scopekey_webhook_endpoints e ON e.id = d.endpoint_id \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?3 \
                 AND (d.claimed_until IS NULL OR d.claimed_until <= ?3) \
                 AND e.disabled_at IS NULL AND (e.paused_until IS NULL OR e.paused_until <= ?3) \
                 AND CASE WHEN substr(d.payload, 1, 7) = 'sealed:' THEN ?6 \
                     ELSE d.endpoint_id IN (SELECT value FROM json_each(?4)) END \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?5) \
             RETURNING id, endpoint_id, event_id, event_type, key_id, payload, attempts, \
                 (SELECT e.url FROM scopekey_webhook_endpoints e WHERE e.id = endpoint_id) AS url",
        )
        .bind(micros(lease_until))
        .bind(token.to_string())
        .bind(micros(now))
        .bind(ids)
        .bind(i64::from(limit))
        .bind(key_deliveries)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let key_id: Option<String> = r.try_get("key_id")?;
                Ok(Claimed {
                    id: uuid(r.try_get("id")?)?,
                    endpoint_id: uuid(r.try_get("endpoint_id")?)?,
                    url: r.try_get("url")?,
                    event_id: uuid(r.try_get("event_id")?)?,
                    event_type: r.try_get("event_type")?,
                    key_id: key_id.as_deref().map(uuid).transpose()?.map(KeyId),
                    payload: r.try_get("payload")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn complete(
        &self,
        claimed: &Claimed,
        token: Uuid,
        outcome: &Completion,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id = claimed.id.to_string();
        let token = token.to_string();
        let changed =
            match outcome {
                // A 2xx is the truth, whoever holds the row, and even over
                // a failure recorded meanwhile (by a sender that took the
                // row when this one's lease lapsed): the receiver has it.
                Completion::Delivered { at, status } => sqlx::query(concat!(
                    "UPDATE scopekey_deliveries SET state = 'delivered', attempts = attempts + 1, ",
                    erase_sealed!(),
                    ", \
                     last_attempt_at = ?1, finished_at = ?1, last_status = ?2, last_error = NULL, \
                     claimed_until = NULL, claim_token = NULL \
                     WHERE id = ?3 AND state <> 'delivered'"
                ))
                .bind(micros(*at))
                .bind(i64::from(*status))
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0,
                Completion::Retry {
                    at,
                    next_attempt_at,
                    status,
                    error,
                    pause_until,
                } => {
                    let changed = sqlx::query(
                    "UPDATE scopekey_deliveries SET attempts = attempts + 1, last_attempt_at = ?1, \
                     next_attempt_at = ?2, last_status = ?3, last_error = ?4, \
                     claimed_until = NULL, claim_token = NULL \
                     WHERE id = ?5 AND claim_token = ?6 AND state = 'pending'",
                )
                .bind(micros(*at))
                .bind(micros(*next_attempt_at))
                .bind(status.map(i64::from))
                .bind(error)
                .bind(&id)
                .bind(&token)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                    if changed && let Some(until) = pause_until {
                        sqlx::query(
                            "UPDATE scopekey_webhook_endpoints SET paused_until = ?1 \
                         WHERE id = ?2 AND (paused_until IS NULL OR paused_until < ?1)",
                        )
                        .bind(micros(*until))
                        .bind(claimed.endpoint_id.to_string())
                        .execute(&mut *tx)
                        .await?;
                    }
                    changed
                }
                Completion::Failed {
                    at,
                    status,
                    error,
                    failed,
                    disable,
                } => {
                    let changed = sqlx::query(concat!(
                    "UPDATE scopekey_deliveries SET state = 'failed', attempts = attempts + 1, ",
                    erase_sealed!(),
                    ", \
                     last_attempt_at = ?1, finished_at = ?1, last_status = ?2, last_error = ?3, \
                     claimed_until = NULL, claim_token = NULL \
                     WHERE id = ?4 AND claim_token = ?5 AND state = 'pending'"
                ))
                .bind(micros(*at))
                .bind(status.map(i64::from))
                .bind(error)
                .bind(&id)
                .bind(&token)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                    if changed {
                        insert_event(&mut tx, failed).await?;
                        if let Some(disable) = disable {
                            let (reason, event) = &**disable;
                            let disabled = sqlx::query(
                                "UPDATE scopekey_webhook_endpoints SET disabled_at = ?1, \
                             disabled_reason = ?2 WHERE id = ?3 AND disabled_at IS NULL",
                            )
                            .bind(micros(*at))
                            .bind(reason)
                            .bind(claimed.endpoint_id.to_string())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                                > 0;
                            if disabled {
                                insert_event(&mut tx, event).await?;
                                give_up_sealed(
                                    &mut tx,
                                    Hopeless::Disabled(Some(claimed.endpoint_id)),
                                    *at,
                                    i64::MAX,
                                )
                                .await?;
                            }
                        }
                    }
                    changed
                }
            };
        tx.commit().await?;
        Ok(changed)
    }

    async fn release(&self, claims: &[(Uuid, Uuid)]) -> Result<u64, StoreError> {
        if claims.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut released = 0;
        for (id, token) in claims {
            released += sqlx::query(
                "UPDATE scopekey_deliveries SET claimed_until = NULL, claim_token = NULL \
                 WHERE id = ? AND claim_token = ? AND state = 'pending'",
            )
            .bind(id.to_string())
            .bind(token.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn give_up_sealed(
        &self,
        which: Hopeless,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = give_up_sealed(&mut tx, which, at, i64::from(limit)).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn prune(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM scopekey_deliveries WHERE id IN (SELECT id FROM scopekey_deliveries \
             WHERE state <> 'pending' AND finished_at < ? LIMIT ?)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM scopekey_deliveries WHERE id = ?");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(delivery)
            .transpose()
    }

    async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM scopekey_deliveries \
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR key_id = ?2) \
             AND (?3 IS NULL OR event_type = ?3) \
             ORDER BY created_at, id LIMIT ?4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(f.state.map(|s| s.as_str()))
            .bind(f.key_id.map(|k| k.to_string()))
            .bind(f.event_type.as_deref())
            .bind(i64::from(f.limit.unwrap_or(500)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }

    async fn notices(&self, key_id: KeyId) -> Result<Vec<Notice>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, threshold_seconds, event_id, at FROM scopekey_notices \
             WHERE key_id = ? ORDER BY threshold_seconds DESC",
        )
        .bind(key_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Notice {
                    key_id: KeyId(uuid(r.try_get("key_id")?)?),
                    threshold_seconds: r.try_get("threshold_seconds")?,
                    event_id: uuid(r.try_get("event_id")?)?,
                    at: from_micros(r.try_get("at")?)?,
                })
            })
            .collect()
    }
}
