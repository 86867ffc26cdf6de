//! Expiry notices and lifecycle webhooks that are never lost and never
//! doubled: thresholds, a transactional outbox, delivery with Standard
//! Webhooks signatures. Behind the `webhooks` feature.
//!
//! ```no_run
//! use std::sync::Arc;
//! use scopekey_runtime::ScopeKey;
//! use scopekey_runtime::notify::{Notifier, NotifierConfig, Outbox};
//! use scopekey_runtime::store::sqlite::SqliteStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite://keys.db").await?;
//! let outbox = Outbox::sqlite(store.pool().clone());
//! let keys = ScopeKey::builder(store).build();
//! keys.migrate().await?;
//!
//! // SCOPEKEY_WEBHOOK_URL, SCOPEKEY_WEBHOOK_SECRET,
//! // SCOPEKEY_NOTIFIER_INTERVAL_SECONDS, ...
//! let notifier = Notifier::new(keys.clone(), outbox, NotifierConfig::from_env()?)?;
//! notifier.register().await?;
//! let handle = notifier.spawn();
//! // ... serve ...
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! **Notices, exactly once.** A pass looks, for each configured threshold
//! (default 14 days; e.g. `[14 d, 1 d]`), for live keys (not revoked, not
//! rotated, not yet expired) whose expiry falls within it and that have no
//! notice at that threshold or a closer one. A key that enters several
//! thresholds at once (created 12 hours before expiry) gets only the
//! closest one's notice. Recording a notice inserts a row into
//! `scopekey_notices`, whose primary key is `(key_id, threshold_seconds)`,
//! with `ON CONFLICT DO NOTHING`: two notifiers racing on one key, or a
//! notifier restarted half-way, cannot record it twice, and only the
//! transaction that inserted the row writes the `key.expiring` audit event
//! and its deliveries. The insert checks the key again as it stands then:
//! still live and within the threshold, and without a notice at a closer
//! threshold (on PostgreSQL under the key row's lock, on SQLite with the
//! one writer), so a notifier that listed a key just before another
//! recorded its closer notice (or one configured with fewer thresholds,
//! during a rolling deploy) records no farther notice after it. Time is
//! the runtime's clock ([`ScopeKey::now`]), never the system clock, so
//! tests move it. Optionally (on by default) a pass also
//! records `key.expired` once per key that passed its expiry unrevoked, as a
//! notice at threshold 0.
//!
//! A notice's body is `{type, timestamp, data}`, `data` the key object
//! (never a secret) with `event_id`, `actor_key_id` and `details`, plus, for
//! `key.expiring`, `threshold_seconds` and `action`: `"rotate"` (the
//! holder is to rotate the key before it expires; the key may rotate
//! itself, `POST /api-keys/{id}/rotate`, and a key under a rotation policy,
//! `rotation_period_seconds` not null, gets a fresh period with its
//! successor) or `"automatic_rotation"` (nothing to do: the notifier rotates
//! it when due and delivers the successor to the key's own webhook). The
//! action is the recording notifier's judgement, as the notice is
//! recorded: `"automatic_rotation"` only for a key that opted in (a
//! rotation webhook) and that this notifier would rotate — its runtime has
//! a rotation secret, which opens the key's own signing secret; the
//! webhook URL is not refused on sight (below); its endpoint is not
//! disabled. Any other key's holder is told to rotate, opted in or not. A
//! rotation refused for what the notice does not check (a stored scope
//! that no longer parses), or a successor that never reaches its holder
//! (a host name that resolves only to internal addresses, retries run
//! out), shows in the audit log (`webhook.failed`) and the server's log;
//! the key's later notices still say `"automatic_rotation"`. A notifier
//! without a rotation secret warns once, at start, when live keys opted
//! in to automatic rotation.
//!
//! **The outbox.** A delivery is a row of `scopekey_deliveries`, one per
//! event and endpoint (unique), written in the same transaction as the audit
//! event it carries — the notice's, or a lifecycle event's (see
//! [`sqlite::enqueue`] and [`postgres::enqueue`] for enqueuing inside a
//! transaction of one's own, and [`Outbox::enqueue`] for an event plus its
//! deliveries). If the transaction rolls back, nothing is sent; if it
//! commits, the delivery exists until it is acknowledged or given up.
//! A finished delivery (delivered, or given up) stays for inspection
//! ([`Outbox::deliveries`]) for [`NotifierConfig::delivery_retention`]
//! (30 days by default), then a pass deletes it; the audit log keeps the
//! event, and `webhook.failed` for a delivery given up. A successor's
//! sealed plaintext (below) is erased from its delivery as soon as it
//! finishes, its endpoint is disabled, or the successor is revoked or
//! expires (below).
//!
//! **Claims and leases.** A sender claims due rows by stamping them with a
//! lease (`claimed_until = now + lease`) and a claim token: on PostgreSQL
//! with `FOR UPDATE SKIP LOCKED`, on SQLite in a `BEGIN IMMEDIATE`
//! transaction (one writer at a time). Other senders skip claimed rows until
//! the lease runs out, so a sender that dies mid-batch delays its rows by
//! one lease and loses none. Results are written only under the same token,
//! so a sender whose lease ran out cannot overwrite its successor's work —
//! except a 2xx, which is recorded whoever holds the row, even over a
//! failure recorded meanwhile (the receiver has it; the `webhook.failed`
//! audited then stays in the log). Delivery is at
//! least once: a receiver may see a `webhook-id` twice if a sender dies
//! between the receiver's answer and recording it, and should deduplicate
//! on it.
//!
//! **Retries.** Only 2xx is success. Redirects are not followed (a failure).
//! Anything else is retried with exponential backoff and jitter
//! (`initial_backoff` doubled per failure, at most `max_backoff`) until
//! `max_attempts`, then the delivery is marked failed and audited as
//! `webhook.failed` on the key's log. 429, 502, 503 and 504 also pause the
//! whole endpoint: for as long as `Retry-After` asks (at most
//! `max_backoff`), or, without one, for a first backoff only (at most
//! `initial_backoff`), so that one delivery far into its retries does not
//! hold up the endpoint's others (a `key.compromised` announcement) for
//! hours; that delivery itself waits its own backoff, or the `Retry-After`
//! if longer. 410 Gone fails the delivery and disables the endpoint
//! (`webhook.endpoint_disabled`): nothing more is enqueued for it or sent to
//! it until [`Outbox::enable_endpoint`]. Every request has a timeout.
//! Audit events and logs name an endpoint by its id and its scheme, host
//! and port only (`https://hooks.example.com`): receivers often take a token
//! in the path or query, and the audit log is open to any key with
//! `api_keys:read`. Delivery errors kept in the outbox name no URL; for a
//! key's own webhook, a transport failure is kept as its kind alone
//! (`could not connect`, `timed out`), its detail logged by the server:
//! otherwise a URL chosen by a key's creator could probe which internal
//! names resolve and which ports answer.
//!
//! **Not kept forever.** A delivery is not kept in the outbox until a 2xx
//! acknowledges it, however long that takes.
//! A delivery is given up after [`NotifierConfig::max_attempts`] attempts
//! (12 by default: about 7 to 15 hours of retries with the default
//! backoff, the waits being jittered), or at once on 410 Gone. This is a
//! choice: a receiver gone for days would otherwise come back to a growing
//! backlog, and a sealed successor would keep its plaintext in the outbox
//! long after its holder stopped listening. The audit log keeps the event
//! and its `webhook.failed`; nothing sends the delivery again by itself.
//! To retry far longer, raise `max_attempts`: the backoff stops growing at
//! `max_backoff` (6 hours by default), so each further attempt adds half
//! to all of that (`max_attempts: 60` retries for about 6 to 12 days).
//!
//! **Disabled endpoints.** A configured endpoint that is disabled (a 410, or
//! [`Outbox::disable_endpoint`]) keeps its pending deliveries, which hold
//! no secret: they are sent once it is enabled again, and are not pruned
//! meanwhile (they have not finished). A key's own rotation webhook does
//! not: its pending deliveries are sealed plaintexts of live successors,
//! for a holder that said it is gone (410) or that the operator stopped
//! trusting (a lapsed domain, say), so none is ever sent there later.
//! Disabling an endpoint gives up its pending sealed deliveries (whatever
//! else the endpoint is: a URL both configured and a holder's loses only
//! those) in the same transaction, as if their attempts ran out: failed, the sealed payload
//! erased, each audited as `webhook.failed` on its key's log. A delivery a
//! sender holds a lease on is left to that sender (one already claimed
//! when the endpoint is disabled may still be sent); each pass gives up
//! whatever is left (a successor enqueued by a rotation that checked the
//! endpoint just before it was disabled). As after attempts run out, the
//! successor given up stays live and unheld (revoke it if you like), and
//! the holder keeps its parent only until the parent's grace ends: the
//! lineage rotates again (to an enabled endpoint) when that successor
//! comes due, a full period later. Disable a holder's endpoint for good,
//! not for maintenance.
//!
//! **Successors of dead keys.** Each pass also gives up the pending sealed
//! deliveries whose successor was revoked or has expired (or is gone):
//! failed with that reason, the sealed payload erased, audited as
//! `webhook.failed`, whichever notifier runs the pass (one with no
//! rotation secret too, so that turning automatic rotation off while
//! successors were still pending leaves no sealed plaintext behind for
//! ever). This step runs before the pass delivers, so a successor revoked
//! since its last attempt is not sent again. A delivery a sender holds a
//! lease on is left to that sender, which reads the successor's state
//! again just before sending: one revoked in between (or while
//! [`Notifier::deliver_due`] runs alone) is given up the same way, not
//! sent.
//!
//! **One bad key stops nothing.** A pass rotates, records notices, then
//! gives up, delivers and prunes, each whatever the earlier steps
//! returned: a rotation or notice that fails does not hold up the
//! deliveries. A failure that belongs to the one key being rotated or
//! noticed (its row does not decode, a stored scope no longer parses, its
//! rotation is refused) is logged and that key is passed over, and the
//! keys after it are still reached (the listings page on by expiry and id,
//! so keys passed over do not fill every page). Which failures are a key's
//! own is [`StoreError::is_corrupt`](crate::StoreError::is_corrupt); any
//! other failure is the store's (unreachable, timed out, a query refused):
//! it ends that step, and the pass reports the first such error once every
//! step has run.
//!
//! **Shutting down** ([`NotifierHandle::shutdown`]) cuts the pass in
//! progress short between rounds: the batch of deliveries in flight is
//! sent and its results recorded, then no new batch is claimed and no new
//! round of rotations, notices or housekeeping starts. What is left stays
//! pending and unclaimed, for the next pass of any notifier, so a
//! shutdown waits for one batch (each request within `request_timeout`),
//! not a whole pass.
//!
//! **Signatures** follow Standard Webhooks: see [`signature`].
//!
//! **Endpoints** are rows identified by URL, registered (upserted) by each
//! notifier from its configuration, so instances configured alike share
//! them. Secrets are never stored: deliveries are signed when sent, so a
//! secret rotation applies to deliveries already waiting. A notifier sends
//! only to the endpoints it is configured with, and to keys' own rotation
//! webhooks (below) when it holds a delivery secret. An endpoint stays
//! registered when it leaves the configuration (another instance may still
//! send to it, say during a rolling deploy), and deliveries go on being
//! enqueued for it: when no instance sends to it any more, disable it with
//! [`Outbox::disable_endpoint`]. A notifier that starts logs a warning for
//! each enabled endpoint it is not configured with.
//!
//! **Automatic rotation.** A key under a rotation policy may name its own
//! `rotation_webhook_url` (https; at creation, its holder receives the
//! signing secret of that key and its successors, once). When the runtime has a
//! [rotation webhook secret](crate::ScopeKeyBuilder::rotation_webhook_secret),
//! the notifier rotates such a key once it is due — when its expiry falls within the runtime's default grace
//! (or within two pass intervals, if that is longer: a pass that comes late
//! still finds the key before it expires), but a successor never
//! before the middle of its lifetime (so a key whose period is no more
//! than twice that lead, a grace raised after it was created, say, rotates
//! at its middle) — and posts the
//! successor to that URL as a `key.rotated` webhook whose `data` is the
//! successor's key object plus `key`, its plaintext. The rotation and the
//! delivery row are written in one transaction, and the store's conditional
//! rotation lets exactly one of several racing notifiers win, so a key is
//! rotated once and its successor is enqueued with it or not at all. The
//! plaintext never rests in the clear: the body is sealed (AES-256-GCM)
//! under a key derived from the rotation secret, bound to its delivery id,
//! and opened only to be sent; every retry sends the same successor under
//! the same `webhook-id`. The request is signed like every other webhook
//! (Standard Webhooks), with the key lineage's own random secret — stored
//! sealed, so no holder can sign for another and none learns the
//! operator's webhook secret. Like every delivery it is retried with backoff
//! and given up after `max_attempts` (audited as `webhook.failed`). An
//! automatic rotation never shortens the old key's life: its grace is the
//! runtime's default grace or the time the key has left, whichever is
//! longer, so the old key keeps working until its own expiry (with a grace
//! shorter than two pass intervals, 0 included, it is rotated up to two
//! intervals before that), and that time is the holder's window to receive
//! the successor. A rotation period shorter than about four pass intervals
//! leaves a successor a window (the second half of its life, from its
//! middle) that a pass may not fall in: keep periods well above the
//! interval. Keys' own webhooks being `https`, a notifier whose
//! runtime has a rotation secret (and does not allow insecure rotation
//! webhooks) needs the system's CA certificates: without them
//! [`Notifier::new`] fails, as with an `https` endpoint configured, rather
//! than rotate keys whose successors could never be delivered. A notifier none of
//! whose rotation secrets opens a sealed delivery leaves it to one that
//! can, counting no attempt, until its key is no longer live (revoked or
//! expired): then it gives it up, erased, audited as `webhook.failed`. It
//! releases its claim on such a delivery when its round of deliveries ends
//! (not at once, or it would claim it again in the same pass), so a
//! notifier that can open it need not wait out the lease. A payload
//! sealed in a version this runtime does not know (any `sealed:` prefix
//! counts as sealed) is one it cannot open.
//!
//! **Changing the rotation secret** takes three configurations, each
//! rolled out to every instance (and the CLI) before the next:
//! `[old, new]` (the new one opens, the old one still seals), then
//! `[new, old]` (the new one seals: each rotation seals its lineage's
//! secret anew under it), then `[new]`, once every lineage under automatic
//! rotation has rotated since the second step — within the longest
//! rotation period, for rotations made by a runtime holding the new secret
//! (one without any, the CLI without `SCOPEKEY_ROTATION_SECRET`, copies a
//! lineage's secret as it is). Rolling back a step is safe; going back to
//! a configuration without the new secret once it seals is not: lineages
//! and successors sealed under it would no longer open. The current secret
//! must be at least [`MIN_SECRET_LEN`] bytes: away from a shorter one, go
//! straight to `[new, old]` (the first step would leave it sealing). A key whose endpoint
//! answered 410 Gone (disabled) is not rotated; a key without a rotation
//! webhook is never rotated behind its holder's back (its notices tell the
//! holder to rotate it); a key whose notifiers were down past its expiry is
//! not rotated (it expired).
//!
//! **Where a holder's webhook may point.** Whoever holds `api_keys:write`
//! sets a key's webhook URL, so the server must not become their way into
//! its own network. Unless the runtime
//! [allows insecure rotation webhooks](crate::ScopeKeyBuilder::allow_insecure_rotation_webhooks)
//! (development and tests), a holder's delivery is attempted only to an
//! `https` URL, never to an IP-literal host that is internal or reserved
//! (loopback, private, shared, link-local, unique-local, documentation,
//! multicast, ...; also as IPv4 embedded in IPv6), and a host name is
//! resolved by the notifier itself, which connects only to the public
//! addresses among the answers: a name that resolves only to internal
//! addresses (or is re-pointed there after the URL was accepted) fails to
//! connect, which counts as a failed attempt and is retried like any other.
//! These requests go direct, never through a proxy from `HTTPS_PROXY`,
//! whose own resolution the notifier could not check; a deployment whose
//! egress must go through a proxy can only allow insecure rotation
//! webhooks, which turns every one of these checks off (plain `http` too).
//! The operator's configured endpoints are trusted: they may be anywhere
//! and use the environment's proxy.

pub mod config;
mod deliver;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod seal;
pub mod signature;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(all(test, feature = "testing"))]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tokio::sync::{OnceCell, watch};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

pub use config::{
    DEFAULT_EVENTS, EndpointConfig, MIN_SECRET_LEN, NotifierConfig, parse_ports,
    rotation_secrets_from_env, rotation_webhook_ports_from_env,
};
pub use outbox::{Delivery, DeliveryFilter, DeliveryState, Endpoint, Notice, Outbox};
pub use signature::{SignatureError, WebhookVerifier, sign, verify};

use crate::error::{Error, StoreError};
use crate::key::KeyId;
use crate::lifecycle::{Actor, MAX_GRACE, RotateOptions, ScopeKey};
use crate::model::{AuditEvent, KeyRecord, Status};
use crate::store::OutboxDelivery;
use deliver::Outcome;
use outbox::{Claimed, Completion, GivenUp, NewNotice, NoticeKind, key_event_data, uuid_at};
use signature::Secret;

/// Audit event types written by the notifier (besides `key.expiring` and
/// `key.expired`). They are never delivered as webhooks themselves.
pub mod event_type {
    /// A delivery was given up: attempts exhausted, 410 Gone, or (a sealed
    /// successor) its endpoint disabled or its key revoked, expired or gone.
    pub const WEBHOOK_FAILED: &str = "webhook.failed";
    /// An endpoint answered 410 Gone and was disabled.
    pub const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook.endpoint_disabled";
}

/// Why the notifier could not start or finish a pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The settings are wrong (a bad URL, a bad secret, a zero interval).
    #[error("notifier configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Keys rotated automatically (their successors enqueued for delivery).
    pub rotated: usize,
    /// `key.expiring` notices recorded.
    pub notices: usize,
    /// `key.expired` events recorded.
    pub expired: usize,
    /// Delivery attempts.
    pub deliveries: DeliveryReport,
    /// Sealed successors given up because their endpoint is disabled or
    /// their key (the successor) was revoked or expired (audited as
    /// `webhook.failed`; not counted in `deliveries`).
    pub given_up: usize,
    /// Finished deliveries deleted, past their retention.
    pub pruned: usize,
}

/// What one round of delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Acknowledged with 2xx.
    pub delivered: usize,
    /// Failed this time, to be retried.
    pub retried: usize,
    /// Given up.
    pub failed: usize,
}

/// An endpoint this notifier sends to.
#[derive(Debug, Clone)]
struct Registered {
    id: Uuid,
    url: String,
    secrets: Vec<Secret>,
}

/// The background notifier: records expiry notices and delivers the outbox.
/// Cheap to clone. Run it with [`Notifier::spawn`], or drive it with
/// [`Notifier::run_once`] (tests, cron-like jobs).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: ScopeKey,
    outbox: Outbox,
    config: NotifierConfig,
    /// Thresholds in seconds, ascending, deduplicated.
    thresholds: Vec<i64>,
    clients: deliver::Clients,
    registered: OnceCell<Vec<Registered>>,
    /// Where the last pass's automatic rotations stopped, when it ran out
    /// of rounds before the end of the due keys: the next pass goes on
    /// from there.
    rotation_resume: std::sync::Mutex<Option<outbox::DuePosition>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("thresholds", &self.inner.thresholds)
            .field(
                "endpoints",
                &self
                    .inner
                    .config
                    .endpoints
                    .iter()
                    .map(|e| deliver::shown_url(&e.url))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why a notifier needs the system's TLS trust roots, if it does: an
/// `https` endpoint is configured, or it would rotate keys automatically
/// (the runtime has a rotation secret) and keys' own webhooks must be
/// `https` (insecure rotation webhooks not allowed), the holders' client
/// using the same TLS set-up. Without roots such a notifier does not start:
/// it would deliver nothing to the first, and it would rotate keys whose
/// successors no holder could ever receive while the old keys run out.
fn tls_needed_for(config: &NotifierConfig, keys: &ScopeKey) -> Option<&'static str> {
    if config
        .endpoints
        .iter()
        .any(|e| e.url.to_ascii_lowercase().starts_with("https:"))
    {
        return Some("an https webhook URL is configured");
    }
    (!keys.rotation_secrets().is_empty() && !keys.insecure_rotation_webhooks()).then_some(
        "the runtime has a rotation secret, and keys' own rotation webhooks are https (unless \
         insecure rotation webhooks are allowed)",
    )
}

/// Upper bound on claim or scan rounds in one call, so a pass ends (and a
/// shutdown is noticed) even under a flood.
const MAX_ROUNDS: usize = 100;

impl Notifier {
    /// A notifier for this runtime's keys, on the outbox of the same
    /// database. Checks the settings; touches nothing yet. Fails
    /// ([`NotifyError::Config`]) on a machine without CA certificates when
    /// it would need TLS: an `https` endpoint is configured, or the runtime
    /// has a rotation secret and does not allow insecure rotation webhooks
    /// (keys' own webhooks are `https`).
    pub fn new(
        keys: ScopeKey,
        outbox: Outbox,
        config: NotifierConfig,
    ) -> Result<Self, NotifyError> {
        config.validate()?;
        config::check_secrets("the runtime's rotation secret", keys.rotation_secrets())?;
        let mut thresholds: Vec<i64> = config
            .thresholds
            .iter()
            .map(|t| t.whole_seconds())
            .collect();
        thresholds.sort_unstable();
        thresholds.dedup();
        let clients = deliver::clients(
            config.request_timeout,
            tls_needed_for(&config, &keys),
            keys.insecure_rotation_webhooks(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                outbox,
                config,
                thresholds,
                clients,
                registered: OnceCell::new(),
                rotation_resume: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Records the configured endpoints in the database (once per notifier;
    /// later calls do nothing). Call it at start-up before serving, so that
    /// lifecycle events of the first requests are enqueued for them;
    /// [`run_once`](Self::run_once) and [`spawn`](Self::spawn) call it too.
    pub async fn register(&self) -> Result<(), NotifyError> {
        self.registered().await.map(|_| ())
    }

    async fn registered(&self) -> Result<&[Registered], NotifyError> {
        let list = self
            .inner
            .registered
            .get_or_try_init(|| async {
                let now = self.inner.keys.now();
                let mut out = Vec::new();
                for ep in &self.inner.config.endpoints {
                    let row = self
                        .inner
                        .outbox
                        .backend
                        .register_endpoint(&ep.url, &ep.events, now, uuid_at(now))
                        .await?;
                    if let Some(at) = row.disabled_at {
                        tracing::warn!(
                            url = %deliver::shown_url(&row.url),
                            endpoint_id = %row.id,
                            disabled_at = %at,
                            reason = ?row.disabled_reason,
                            "webhook endpoint is disabled; nothing is sent to it until it is enabled again"
                        );
                    }
                    out.push(Registered {
                        id: row.id,
                        url: row.url,
                        secrets: ep.secrets.clone(),
                    });
                }
                // An endpoint dropped from the configuration still collects
                // deliveries, which wait for a notifier configured with it.
                for row in self.inner.outbox.backend.endpoints().await? {
                    let configured = out.iter().any(|r| r.id == row.id);
                    if !configured && !row.key_delivery && row.disabled_at.is_none() {
                        tracing::warn!(
                            url = %deliver::shown_url(&row.url),
                            endpoint_id = %row.id,
                            "webhook endpoint is not configured in this notifier; its deliveries wait for one that is. \
                             If none is any more, disable it (Outbox::disable_endpoint). Sealed successors \
                             for keys naming this URL still go out"
                        );
                    }
                }
                // Keys that opted in to automatic rotation, served by a
                // runtime that cannot rotate them: their notices tell their
                // holders to rotate (`action: "rotate"`), and the operator
                // hears of it once.
                if self.inner.keys.rotation_secrets().is_empty()
                    && self.inner.outbox.backend.auto_rotating_keys(now).await?
                {
                    tracing::warn!(
                        "some live keys opted in to automatic rotation (a rotation webhook), but this \
                         runtime has no rotation secret (ScopeKeyBuilder::rotation_webhook_secret, \
                         SCOPEKEY_ROTATION_SECRET): this notifier does not rotate them, and their \
                         expiry notices tell their holders to rotate them"
                    );
                }
                Ok::<_, NotifyError>(out)
            })
            .await?;
        Ok(list)
    }

    /// One pass: rotates the keys due an automatic rotation, records due
    /// notices (and `key.expired` events), gives up the sealed successors
    /// still pending to disabled endpoints or of keys revoked or expired,
    /// delivers what is due, then deletes finished deliveries past their
    /// retention. Each step runs
    /// whatever the ones before it returned; the first error (in that
    /// order) is the pass's.
    pub async fn run_once(&self) -> Result<PassReport, NotifyError> {
        self.pass(&Stop::default()).await
    }

    /// [`run_once`](Self::run_once), cut short once `stop` is requested:
    /// the round in flight (a batch of deliveries, of due keys) finishes and
    /// is recorded, and no new one starts.
    async fn pass(&self, stop: &Stop) -> Result<PassReport, NotifyError> {
        self.register().await?;
        // A failed rotation or notice holds up no delivery, and
        // housekeeping runs even when recording a delivery failed.
        let rotated = self.rotate_due_or_stop(stop).await;
        let notices = self.record_notices_or_stop(stop).await;
        // Before delivering: a successor revoked since its last attempt is
        // not sent again.
        let given_up = self.give_up_hopeless(stop).await;
        let deliveries = self.deliver_due_or_stop(stop).await;
        let pruned = self.prune_deliveries_or_stop(stop).await;
        let (rotated, (notices, expired), given_up, deliveries, pruned) =
            (rotated?, notices?, given_up?, deliveries?, pruned?);
        Ok(PassReport {
            rotated,
            notices,
            expired,
            deliveries,
            given_up,
            pruned,
        })
    }

    /// Gives up the sealed successors still pending that can no longer be
    /// of use, a batch of 1,000 at a time (at most 100 a pass each):
    ///
    /// - those to a key's own rotation webhook that is disabled. Disabling
    ///   such an endpoint gives up its deliveries at once; this catches a
    ///   successor enqueued by a rotation that checked the endpoint just
    ///   before another instance disabled it;
    /// - those whose successor is revoked, expired or gone. A sender that
    ///   cannot open such a delivery gives it up when it claims it, but
    ///   with no rotation secret on any instance (automatic rotation turned
    ///   off while successors were still pending) nothing claims it: it
    ///   would keep its sealed plaintext for ever.
    ///
    /// How many.
    async fn give_up_hopeless(&self, stop: &Stop) -> Result<usize, NotifyError> {
        const BATCH: u32 = 1_000;
        let mut given_up = 0;
        for (which, what) in [
            (
                outbox::Hopeless::Disabled(None),
                "gave up sealed successors pending to disabled endpoints",
            ),
            (
                outbox::Hopeless::KeyNotLive,
                "gave up sealed successors of keys revoked, expired or gone",
            ),
        ] {
            let mut these = 0;
            for _ in 0..MAX_ROUNDS {
                if stop.requested() {
                    break;
                }
                let now = self.inner.keys.now();
                let n = self
                    .inner
                    .outbox
                    .backend
                    .give_up_sealed(which, now, BATCH)
                    .await?;
                these += usize::try_from(n).unwrap_or(usize::MAX);
                if n < u64::from(BATCH) {
                    break;
                }
            }
            if these > 0 {
                tracing::warn!(given_up = these, "{what}");
            }
            given_up += these;
        }
        Ok(given_up)
    }

    /// Deletes the deliveries that finished (delivered or failed) longer
    /// than [`NotifierConfig::delivery_retention`] ago, by the runtime's
    /// clock: a batch of 1,000 at a time, at most 100 batches a pass (the
    /// next pass goes on). How many. Does nothing when the retention is
    /// `None`. Pending deliveries are never deleted, however old.
    pub async fn prune_deliveries(&self) -> Result<usize, NotifyError> {
        self.prune_deliveries_or_stop(&Stop::default()).await
    }

    async fn prune_deliveries_or_stop(&self, stop: &Stop) -> Result<usize, NotifyError> {
        const BATCH: u32 = 1_000;
        let Some(retention) = self.inner.config.delivery_retention else {
            return Ok(0);
        };
        let before = self.inner.keys.now() - retention;
        let mut pruned = 0;
        for _ in 0..MAX_ROUNDS {
            if stop.requested() {
                break;
            }
            let deleted = self.inner.outbox.backend.prune(before, BATCH).await?;
            pruned += usize::try_from(deleted).unwrap_or(usize::MAX);
            if deleted < u64::from(BATCH) {
                break;
            }
        }
        Ok(pruned)
    }

    /// Records the notices due now: `(key.expiring notices, key.expired
    /// events)`. A key whose notice fails for a reason of its own (its row
    /// does not decode) is logged and passed over; a store failure ends
    /// the call.
    pub async fn record_notices(&self) -> Result<(usize, usize), NotifyError> {
        self.record_notices_or_stop(&Stop::default()).await
    }

    async fn record_notices_or_stop(&self, stop: &Stop) -> Result<(usize, usize), NotifyError> {
        self.register().await?;
        let now = self.inner.keys.now();
        let batch = self.inner.config.batch_size;
        let mut notices = 0;
        let mut lower = now;
        for &t in &self.inner.thresholds {
            let upper = now + Duration::seconds(t);
            // Page by position, not from the window's start each time: a
            // key passed over (or not due after all) has no notice and
            // would come back at the head of every page.
            let mut after = None;
            for _ in 0..MAX_ROUNDS {
                if stop.requested() {
                    return Ok((notices, 0));
                }
                let page = self
                    .inner
                    .outbox
                    .backend
                    .expiring_keys(lower, upper, t, after, batch)
                    .await?;
                for &(_, id) in &page {
                    if self.notice(id, NoticeKind::Expiring, t, now).await? {
                        notices += 1;
                    }
                }
                after = page.last().copied();
                if page.len() < batch as usize {
                    break;
                }
            }
            lower = upper;
        }
        let mut expired = 0;
        if self.inner.config.record_expired {
            let since = now - self.inner.config.expired_lookback;
            let mut after = None;
            for _ in 0..MAX_ROUNDS {
                if stop.requested() {
                    break;
                }
                let page = self
                    .inner
                    .outbox
                    .backend
                    .expired_keys(since, now, after, batch)
                    .await?;
                for &(_, id) in &page {
                    if self.notice(id, NoticeKind::Expired, 0, now).await? {
                        expired += 1;
                    }
                }
                after = page.last().copied();
                if page.len() < batch as usize {
                    break;
                }
            }
        }
        Ok((notices, expired))
    }

    /// Rotates the keys that opted in to automatic rotation (a
    /// `rotation_webhook_url`) and are due: those whose expiry is within the
    /// runtime's default grace (or two pass intervals, if longer); a
    /// successor not before the middle of its lifetime. The old key keeps
    /// working until its own expiry: the grace of an automatic rotation is
    /// the default grace or the time the key has left, whichever is longer.
    /// Each successor's plaintext is sealed into the outbox, for that key's
    /// own webhook, in the rotation's transaction: committed together or not
    /// at all. Several notifiers may race: the store's conditional rotation
    /// lets exactly one win. A key whose webhook endpoint is disabled (it
    /// answered 410 Gone) is left alone, as is one whose rotation is refused
    /// (its webhook secret sealed by another service's rotation secret, say)
    /// or fails for a reason of its own (a stored scope that no longer
    /// parses), logged; a store failure ends the call;
    /// keys are taken in order of expiry, a batch at a time, and those left
    /// alone do not hold up the ones after them (after 100 batches, the
    /// next pass goes on where this one stopped).
    /// Does nothing unless the runtime has
    /// a [rotation webhook secret](crate::ScopeKeyBuilder::rotation_webhook_secret).
    /// How many were rotated.
    pub async fn rotate_due(&self) -> Result<usize, NotifyError> {
        self.rotate_due_or_stop(&Stop::default()).await
    }

    async fn rotate_due_or_stop(&self, stop: &Stop) -> Result<usize, NotifyError> {
        let keys = &self.inner.keys;
        let Some(secret) = keys.rotation_secrets().first() else {
            return Ok(0);
        };
        let grace = keys.default_grace();
        // Due within the grace, or within two pass intervals if the grace
        // is shorter (with no grace a key would otherwise never be due
        // before it expired; with one interval, a key due just after this
        // pass's reach would be expired by a next pass that came late,
        // behind a slow delivery step, and never rotated); never earlier
        // than the longest grace a rotation takes, so the old key keeps its
        // whole life (an interval of more than half a year would otherwise
        // make a key due with more time left).
        let interval = Duration::try_from(self.inner.config.interval).unwrap_or(Duration::MAX);
        let lead = grace.max(interval.saturating_mul(2)).min(MAX_GRACE);
        let batch = self.inner.config.batch_size;
        let mut rotated = 0;
        // Pages in expiry order; a key left alone (its endpoint disabled, a
        // lost race) is passed over, never in the way of the keys after it.
        let mut after = crate::verify::lock(&self.inner.rotation_resume).take();
        let mut endpoints: HashMap<String, Uuid> = HashMap::new();
        for round in 0..MAX_ROUNDS {
            if stop.requested() {
                // The next pass, if any, goes on from here.
                *crate::verify::lock(&self.inner.rotation_resume) = after;
                break;
            }
            let now = keys.now();
            let due = self
                .inner
                .outbox
                .backend
                .auto_rotation_due(now, now.saturating_add(lead), after, batch)
                .await?;
            for key in &due {
                // A URL this service would refuse to post to (a port it
                // does not allow, made before the rule or by a runtime that
                // allowed more): a successor sent there would be given up,
                // held by nobody. The key is left as it is; its expiry
                // notices go on.
                if let Some(why) = self.holder_url_refused(&key.url) {
                    tracing::warn!(key_id = %key.id, url = %deliver::shown_url(&key.url), reason = %why, "key is due an automatic rotation but its webhook is refused; not rotating it");
                    continue;
                }
                // One registration (a write) per URL and pass, however many
                // keys share it; whether it is disabled is read afresh for
                // each key (another instance may have had a 410 meanwhile).
                let backend = &self.inner.outbox.backend;
                let (endpoint_id, disabled) = match endpoints.get(&key.url) {
                    Some(&id) => (id, backend.endpoint_disabled(id).await?),
                    None => {
                        let (id, disabled) = backend
                            .register_key_endpoint(&key.url, now, uuid_at(now))
                            .await?;
                        endpoints.insert(key.url.clone(), id);
                        (id, disabled)
                    }
                };
                if disabled {
                    tracing::warn!(key_id = %key.id, url = %deliver::shown_url(&key.url), "key is due an automatic rotation but its webhook endpoint is disabled; not rotating it");
                    continue;
                }
                // Never shorter than the time the key has left: with a grace
                // shorter than the interval (0, say), a key due up to an
                // interval before it expires would otherwise end at once,
                // before its holder has the successor. (At most `MAX_GRACE`,
                // beyond which a rotation is refused.)
                let grace = grace.max(key.expires_at - now).min(MAX_GRACE);
                if self.rotate_one(key.id, endpoint_id, grace, secret).await? {
                    rotated += 1;
                }
            }
            match due.last() {
                Some(last) if due.len() == batch as usize => {
                    after = Some(last.position());
                    if round + 1 == MAX_ROUNDS {
                        // Out of rounds: the next pass goes on from here,
                        // then starts over once it reaches the end.
                        *crate::verify::lock(&self.inner.rotation_resume) = after;
                    }
                }
                _ => break,
            }
        }
        Ok(rotated)
    }

    async fn rotate_one(
        &self,
        id: KeyId,
        endpoint_id: Uuid,
        grace: Duration,
        secret: &Secret,
    ) -> Result<bool, NotifyError> {
        let keys = &self.inner.keys;
        let deliver = Box::new(
            move |child: &KeyRecord, plaintext: &crate::key::Plaintext, event: &AuditEvent| {
                // The lineage's own signing secret goes in the sealed
                // delivery with the body: sending needs nothing else.
                let signing = keys.webhook_secret_of(child).ok_or_else(|| {
                    Error::Invalid(
                        "the key's webhook secret does not open with this runtime's rotation \
                         secrets"
                            .into(),
                    )
                })?;
                let mut data = key_event_data(child, event);
                if let Value::Object(map) = &mut data {
                    map.insert(
                        "key".into(),
                        Value::String(plaintext.expose_secret().into()),
                    );
                }
                let delivery_id = uuid_at(event.at);
                // The copies of the plaintext and the signing secret made
                // here are wiped once sealed (or on the way out on an
                // error); serde_json's buffer may have grown while writing
                // the body, leaving earlier copies of it unwiped.
                let body = outbox::body(event, &data);
                if let Value::Object(map) = &mut data
                    && let Some(Value::String(key)) = map.get_mut("key")
                {
                    key.zeroize();
                }
                let body = Zeroizing::new(body?);
                let whsec = Zeroizing::new(signing.to_whsec());
                // Written into a buffer of its final size: one that grew
                // would leave its earlier copies behind, unwiped.
                let mut sealed =
                    Zeroizing::new(String::with_capacity(whsec.len() + 1 + body.len()));
                sealed.push_str(&whsec);
                sealed.push('\n');
                sealed.push_str(&body);
                Ok(vec![OutboxDelivery {
                    id: delivery_id,
                    endpoint_id,
                    event_id: event.id,
                    event_type: event.kind.clone(),
                    key_id: child.id,
                    payload: seal::seal(secret, delivery_id.as_bytes(), sealed.as_bytes())?,
                    at: event.at,
                }])
            },
        );
        let options = RotateOptions {
            grace: Some(grace),
            scopes: None,
        };
        match self
            .inner
            .keys
            .rotate_with(id, options, Actor::System, Some(deliver))
            .await
        {
            Ok(created) => {
                tracing::info!(key_id = %id, successor = %created.key.id, "api key rotated automatically; successor enqueued for its holder");
                Ok(true)
            }
            // Rotated, revoked or deleted meanwhile (another notifier won).
            Err(Error::Conflict(_) | Error::NotFound(_)) => Ok(false),
            // The store failing is every key's problem: the pass's error.
            Err(Error::Unavailable(e)) if !e.is_corrupt() => Err(NotifyError::Unavailable(e)),
            // This key's own (its row does not decode, a stored scope no
            // longer parses, its secret does not open): pass it over.
            Err(e) => {
                tracing::warn!(key_id = %id, error = %e, "automatic rotation refused");
                Ok(false)
            }
        }
    }

    /// Records one notice: whether it was recorded (not if it was not due
    /// after all). A failure that is this key's own (not the store's) is
    /// logged and the key passed over.
    async fn notice(
        &self,
        id: KeyId,
        kind: NoticeKind,
        threshold_seconds: i64,
        now: OffsetDateTime,
    ) -> Result<bool, NotifyError> {
        match self.try_notice(id, kind, threshold_seconds, now).await {
            Ok(recorded) => Ok(recorded),
            Err(e) if !e.is_corrupt() => Err(e.into()),
            Err(e) => {
                tracing::warn!(key_id = %id, threshold_seconds, error = %e, "cannot record an expiry notice for this key; passing it over");
                Ok(false)
            }
        }
    }

    async fn try_notice(
        &self,
        id: KeyId,
        kind: NoticeKind,
        threshold_seconds: i64,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some(record) = self.inner.keys.store().get(id).await? else {
            return Ok(false);
        };
        let automatic = match kind {
            NoticeKind::Expiring => self.rotates_automatically(&record).await?,
            NoticeKind::Expired => false,
        };
        let (event, data) = notice_event(&record, kind, threshold_seconds, automatic, now);
        let recorded = self
            .inner
            .outbox
            .backend
            .record_notice(&NewNotice {
                kind,
                key_id: id,
                threshold_seconds,
                now,
                event,
                data,
            })
            .await?;
        if recorded {
            tracing::info!(key_id = %id, threshold_seconds, kind = ?kind, "expiry notice recorded");
        }
        Ok(recorded)
    }

    /// Whether this notifier would rotate the key automatically once it is
    /// due, as [`rotate_due`](Self::rotate_due) decides: the key opted in
    /// (a rotation webhook), the runtime has a rotation secret and one of
    /// its secrets opens the key's own signing secret, the webhook URL is
    /// not refused on sight (`https`, a port allowed, no internal IP
    /// literal; unless insecure rotation webhooks are allowed), and its
    /// endpoint is not disabled (410 Gone). A rotation can still be
    /// refused for what is not checked here (a stored scope that no longer
    /// parses), or the successor fail to reach a host name that resolves
    /// only to internal addresses: those show in the audit log
    /// (`webhook.failed`) and the server's log.
    /// Why a key's own webhook URL would be refused on sight by this
    /// notifier (`https` only, a port allowed, no internal IP literal),
    /// if it would; never when insecure rotation webhooks are allowed.
    fn holder_url_refused(&self, url: &str) -> Option<String> {
        self.inner.clients.holders.as_ref()?;
        deliver::refused_holder_url(url, self.inner.keys.rotation_webhook_ports())
    }

    async fn rotates_automatically(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let Some(url) = record.rotation_webhook_url.as_deref() else {
            return Ok(false);
        };
        let keys = &self.inner.keys;
        if keys.rotation_secrets().is_empty() || keys.webhook_secret_of(record).is_none() {
            return Ok(false);
        }
        if self.holder_url_refused(url).is_some() {
            return Ok(false);
        }
        Ok(!self.inner.outbox.backend.url_disabled(url).await?)
    }

    /// Claims and sends the deliveries due now (batches sent concurrently),
    /// until none is due.
    pub async fn deliver_due(&self) -> Result<DeliveryReport, NotifyError> {
        self.deliver_due_or_stop(&Stop::default()).await
    }

    async fn deliver_due_or_stop(&self, stop: &Stop) -> Result<DeliveryReport, NotifyError> {
        let endpoints = self.registered().await?;
        let mut report = DeliveryReport::default();
        let ids: Vec<Uuid> = endpoints.iter().map(|e| e.id).collect();
        let config = &self.inner.config;
        // Keys' own rotation webhooks are claimed by any notifier with a
        // rotation secret; one that cannot open a delivery leaves it.
        let key_deliveries = !self.inner.keys.rotation_secrets().is_empty();
        if endpoints.is_empty() && !key_deliveries {
            return Ok(report);
        }
        let mut first_error = None;
        // Sealed deliveries this notifier cannot open, released once the
        // rounds are over (released at once, the next round would claim
        // them again).
        let mut left = Vec::new();
        for _ in 0..MAX_ROUNDS {
            // Stopping: the batch before this one is sent and recorded; the
            // deliveries after it stay unclaimed, for whichever sender
            // comes next, not leased to one going away.
            if stop.requested() {
                break;
            }
            let now = self.inner.keys.now();
            let token = Uuid::now_v7();
            let claimed = match self
                .inner
                .outbox
                .backend
                .claim(
                    &ids,
                    key_deliveries,
                    now,
                    now + config.lease,
                    token,
                    config.batch_size,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    first_error.get_or_insert(e.into());
                    break;
                }
            };
            let results = futures_util::future::join_all(
                claimed.iter().map(|c| self.attempt(endpoints, c, token)),
            )
            .await;
            for (c, result) in claimed.iter().zip(results) {
                match result {
                    Ok(Some(Tally::Delivered)) => report.delivered += 1,
                    Ok(Some(Tally::Retried)) => report.retried += 1,
                    Ok(Some(Tally::Failed)) => report.failed += 1,
                    Ok(Some(Tally::Left)) => left.push((c.id, token)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record a webhook attempt; its lease will expire and it will be sent again");
                        first_error.get_or_insert(e);
                    }
                }
            }
            if claimed.len() < config.batch_size as usize {
                break;
            }
        }
        if let Err(e) = self.inner.outbox.backend.release(&left).await {
            tracing::warn!(error = %e, "could not release sealed deliveries this notifier cannot open; they wait for their lease to expire");
            first_error.get_or_insert(e.into());
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn attempt(
        &self,
        endpoints: &[Registered],
        c: &Claimed,
        token: Uuid,
    ) -> Result<Option<Tally>, NotifyError> {
        let config = &self.inner.config;
        let sent_at = self.inner.keys.now();
        // A successor for a key's holder is sealed: opened with the
        // runtime's rotation secrets, it holds the lineage's own signing
        // secret and the body. Anything else goes to a configured endpoint.
        let opened;
        // A sealed delivery none of this runtime's rotation secrets opens:
        // sealed by an instance a secret change has reached before this
        // one, or under a secret since retired, or by another service. Left
        // to a notifier that can open it, counting no attempt (instances
        // still without a new secret must not use up the attempts of those
        // with it), until its key is no longer live: its plaintext is of no
        // use then, and it is given up, erased. One this notifier opens is
        // given up too, not sent, once its key is no longer live: the pass
        // gives those up before it delivers, but a revocation can land
        // between the two (or `deliver_due` runs alone).
        let mut not_sent = None;
        let (url, secrets, body, holder) = if seal::is_sealed(&c.payload) {
            let live = match c.key_id {
                Some(id) => match self.inner.keys.store().get(id).await {
                    Ok(key) => key.is_some_and(|key| {
                        matches!(key.status_at(sent_at), Status::Active | Status::Rotating)
                    }),
                    // Unknown: not sent, not given up; released for a later
                    // pass, counting no attempt.
                    Err(e) => {
                        tracing::warn!(delivery_id = %c.id, error = %e, "could not read the key of a sealed delivery; leaving it for a later pass");
                        return Ok(Some(Tally::Left));
                    }
                },
                None => false,
            };
            let server = self.inner.keys.rotation_secrets();
            // The opened text and its body are wiped when dropped.
            let pair = seal::open(server, c.id.as_bytes(), &c.payload)
                .map(Zeroizing::new)
                .and_then(|bytes| std::str::from_utf8(&bytes).ok().map(str::to_owned))
                .map(Zeroizing::new)
                .and_then(|text| {
                    let (whsec, body) = text.split_once('\n')?;
                    Some((
                        whsec.parse::<Secret>().ok()?,
                        Zeroizing::new(body.to_owned()),
                    ))
                });
            match (pair, live) {
                (Some(pair), true) => {
                    opened = pair;
                    (
                        c.url.as_str(),
                        std::slice::from_ref(&opened.0),
                        opened.1.as_str(),
                        true,
                    )
                }
                (None, true) => {
                    tracing::warn!(delivery_id = %c.id, "cannot open a sealed delivery with this runtime's rotation secrets; leaving it to a notifier that can");
                    return Ok(Some(Tally::Left));
                }
                (pair, false) => {
                    not_sent = Some(if pair.is_some() {
                        "not sent: its key is no longer live (revoked, expired or gone)"
                    } else {
                        "sealed under a rotation secret this notifier does not hold, and its key \
                         is no longer live"
                    });
                    (c.url.as_str(), &[][..], "", true)
                }
            }
        } else {
            let Some(ep) = endpoints.iter().find(|e| e.id == c.endpoint_id) else {
                return Ok(None);
            };
            (
                ep.url.as_str(),
                ep.secrets.as_slice(),
                c.payload.as_str(),
                false,
            )
        };
        let clients = &self.inner.clients;
        let (client, refused) = match (holder, &clients.holders) {
            (true, Some(strict)) => (
                strict,
                deliver::refused_holder_url(url, self.inner.keys.rotation_webhook_ports()),
            ),
            _ => (&clients.endpoints, None),
        };
        let outcome = match not_sent.map(str::to_owned).or(refused) {
            Some(error) => Outcome::Failed {
                status: None,
                error,
            },
            None => {
                match deliver::attempt(client, url, secrets, &c.id.to_string(), sent_at, body).await
                {
                    // A key's own webhook that could not be reached: the
                    // transport's detail (a name with no public address, a
                    // refused port) goes to this server's log only. The
                    // outbox and the audit log, which any key with
                    // `api_keys:read` reads, get its kind, so that a URL a
                    // key's creator chose cannot map the service's network.
                    Outcome::Failed {
                        status: None,
                        error,
                    } if holder => {
                        tracing::warn!(
                            url = %deliver::shown_url(url),
                            delivery_id = %c.id,
                            error = %error,
                            "a key's own webhook could not be reached"
                        );
                        let kind = error.split(':').next().unwrap_or_default().to_owned();
                        Outcome::Failed {
                            status: None,
                            error: kind,
                        }
                    }
                    outcome => outcome,
                }
            }
        };
        let at = self.inner.keys.now();
        let failures = c.attempts.saturating_add(1);
        let exhausted = not_sent.is_some() || failures >= config.max_attempts;
        let backoff = || deliver::backoff(failures, config.initial_backoff, config.max_backoff);
        let (completion, tally) = match outcome {
            Outcome::Delivered(status) => (Completion::Delivered { at, status }, Tally::Delivered),
            Outcome::Gone => {
                let error = "410 Gone: the endpoint was disabled".to_owned();
                let failed = self.failed_event(url, c, at, failures, Some(410), &error);
                let disabled = AuditEvent {
                    id: uuid_at(at),
                    key_id: c.key_id,
                    kind: event_type::WEBHOOK_ENDPOINT_DISABLED.to_owned(),
                    actor_key_id: None,
                    at,
                    details: json!({
                        "url": deliver::shown_url(url),
                        "endpoint_id": c.endpoint_id,
                        "delivery_id": c.id,
                        "status": 410,
                    }),
                };
                tracing::warn!(url = %deliver::shown_url(url), endpoint_id = %c.endpoint_id, "webhook endpoint answered 410 Gone; disabling it");
                let disable = Some(Box::new(("410 Gone".to_owned(), disabled)));
                (
                    Completion::Failed {
                        at,
                        status: Some(410),
                        error,
                        failed,
                        disable,
                    },
                    Tally::Failed,
                )
            }
            Outcome::Throttled { status, .. }
            | Outcome::Failed {
                status: Some(status),
                ..
            } if exhausted => {
                let error = format!("HTTP {status}; gave up after {failures} attempts");
                let failed = self.failed_event(url, c, at, failures, Some(status), &error);
                (
                    Completion::Failed {
                        at,
                        status: Some(status),
                        error,
                        failed,
                        disable: None,
                    },
                    Tally::Failed,
                )
            }
            Outcome::Failed { status, error } if exhausted => {
                let error = format!("{error}; gave up after {failures} attempts");
                let failed = self.failed_event(url, c, at, failures, status, &error);
                (
                    Completion::Failed {
                        at,
                        status,
                        error,
                        failed,
                        disable: None,
                    },
                    Tally::Failed,
                )
            }
            Outcome::Throttled {
                status,
                retry_after,
            } => {
                let asked = retry_after.map(|r| r.min(config.max_backoff));
                let wait = backoff().max(asked.unwrap_or(Duration::ZERO));
                // The endpoint as a whole waits as long as it asked, or, not
                // asked, a first backoff only: this delivery's own wait grows
                // with its failures (to hours), and the endpoint's other
                // deliveries (a `key.compromised` among them) are not to
                // queue behind it.
                // (At least a second: `Retry-After: 0`, or a date already
                // past by the receiver's clock, is no reason to come back
                // within the same pass.)
                let pause = asked.map_or_else(
                    || deliver::backoff(1, config.initial_backoff, config.max_backoff),
                    |asked| asked.max(Duration::SECOND.min(config.max_backoff)),
                );
                (
                    Completion::Retry {
                        at,
                        next_attempt_at: at + wait,
                        status: Some(status),
                        error: format!("HTTP {status}: slowing down for {wait}"),
                        pause_until: Some(at + pause),
                    },
                    Tally::Retried,
                )
            }
            Outcome::Failed { status, error } => (
                Completion::Retry {
                    at,
                    next_attempt_at: at + backoff(),
                    status,
                    error,
                    pause_until: None,
                },
                Tally::Retried,
            ),
        };
        if let Completion::Retry {
            error,
            next_attempt_at,
            ..
        } = &completion
        {
            tracing::info!(delivery_id = %c.id, url = %deliver::shown_url(url), attempt = failures, %error, next_attempt_at = %next_attempt_at, "webhook delivery failed; will retry");
        }
        let stored = self
            .inner
            .outbox
            .backend
            .complete(c, token, &completion)
            .await?;
        if !stored {
            tracing::info!(delivery_id = %c.id, "webhook claim was taken over meanwhile; result dropped");
            return Ok(None);
        }
        if let Completion::Failed { error, .. } = &completion {
            tracing::warn!(delivery_id = %c.id, url = %deliver::shown_url(url), %error, "webhook delivery failed for good");
        }
        Ok(Some(tally))
    }

    fn failed_event(
        &self,
        url: &str,
        c: &Claimed,
        at: OffsetDateTime,
        attempts: u32,
        status: Option<u16>,
        error: &str,
    ) -> Box<AuditEvent> {
        let given_up = GivenUp {
            id: c.id,
            endpoint_id: c.endpoint_id,
            url,
            event_id: c.event_id,
            event_type: &c.event_type,
            key_id: c.key_id,
            attempts,
            last_status: status,
        };
        Box::new(given_up.event(at, error))
    }

    /// Starts the background task: a pass every `interval` (the first at
    /// once), until [`NotifierHandle::shutdown`]. Dropping the handle leaves
    /// the task running.
    pub fn spawn(self) -> NotifierHandle {
        let (stop, mut stopped) = watch::channel(false);
        let signal = Stop(Some(stopped.clone()));
        let interval = self.inner.config.interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    changed = stopped.changed() => match changed {
                        Ok(()) if *stopped.borrow() => break,
                        Ok(()) => continue,
                        // The handle was dropped: run on, detached.
                        Err(_) => { tick.tick().await; }
                    },
                    _ = tick.tick() => {}
                }
                // A pass is not cancelled by a shutdown, but cut short:
                // the round in flight finishes (its requests each within
                // the request timeout) and is recorded; no new one starts.
                match self.pass(&signal).await {
                    Ok(r) if r != PassReport::default() => {
                        tracing::debug!(report = ?r, "notifier pass")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "notifier pass failed; retrying next interval")
                    }
                }
                if *stopped.borrow() {
                    break;
                }
            }
        });
        NotifierHandle { stop, task }
    }
}

/// A request to cut a pass short, from [`NotifierHandle`]: checked between
/// rounds (a batch of deliveries, a page of due keys), never inside one.
/// The default is never requested ([`Notifier::run_once`]).
#[derive(Debug, Clone, Default)]
struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|stop| *stop.borrow())
    }
}

enum Tally {
    Delivered,
    Retried,
    Failed,
    /// Not attempted: a sealed delivery this notifier cannot open, whose
    /// claim is to be released.
    Left,
}

/// The `key.expiring` (or `key.expired`) event and its webhook `data`: the
/// key object plus, for `key.expiring`, `threshold_seconds` and `action`
/// (`"automatic_rotation"` when `automatic`: the notifier will rotate the
/// key, see [`Notifier::rotates_automatically`]).
fn notice_event(
    record: &KeyRecord,
    kind: NoticeKind,
    threshold_seconds: i64,
    automatic: bool,
    now: OffsetDateTime,
) -> (AuditEvent, Value) {
    let expires_at = record.expires_at.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    let (event_kind, details) = match kind {
        NoticeKind::Expiring => (
            crate::model::event_type::KEY_EXPIRING,
            json!({ "threshold_seconds": threshold_seconds, "expires_at": expires_at }),
        ),
        NoticeKind::Expired => (
            crate::model::event_type::KEY_EXPIRED,
            json!({ "expires_at": expires_at }),
        ),
    };
    let event = AuditEvent {
        id: uuid_at(now),
        key_id: Some(record.id),
        kind: event_kind.to_owned(),
        actor_key_id: None,
        at: now,
        details,
    };
    let mut data = key_event_data(record, &event);
    if let (Value::Object(map), NoticeKind::Expiring) = (&mut data, kind) {
        map.insert("threshold_seconds".into(), json!(threshold_seconds));
        // What the holder is to do: rotate (the key may rotate itself,
        // `POST /api-keys/{id}/rotate`), or nothing when the notifier
        // rotates the key and delivers its successor to the key's own
        // webhook.
        let action = if automatic {
            "automatic_rotation"
        } else {
            "rotate"
        };
        map.insert("action".into(), json!(action));
    }
    (event, data)
}

/// The running notifier. [`shutdown`](Self::shutdown) stops it gracefully.
#[derive(Debug)]
pub struct NotifierHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifierHandle {
    /// Stops the task. A pass in progress stops at its next round: the
    /// batch of deliveries in flight finishes (its requests complete or
    /// time out, each within the request timeout, and their results are
    /// recorded), and no new batch is claimed, no further keys are rotated
    /// or noticed, no housekeeping round starts; what is left waits,
    /// unclaimed, for the next notifier's pass. No new pass starts.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the notifier task panicked");
        }
    }

    /// Like [`shutdown`](Self::shutdown), but aborts the pass if its round
    /// in flight has not finished within `limit`. Nothing is lost:
    /// deliveries claimed by the aborted pass are taken up again when their
    /// lease expires. Whether it stopped gracefully.
    pub async fn shutdown_within(mut self, limit: std::time::Duration) -> bool {
        let _ = self.stop.send(true);
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(_) => true,
            Err(_) => {
                self.task.abort();
                false
            }
        }
    }
}
