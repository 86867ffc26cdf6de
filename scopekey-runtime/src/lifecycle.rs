//! The key lifecycle — create, verify, rotate, revoke, list, audit — and its
//! rules, written once against any [`Store`].
//!
//! Rules kept here and nowhere else:
//! - a key's scopes are valid grants, and in the scope catalogue if one is
//!   configured;
//! - no escalation: a key acting through the API can only create or rotate
//!   keys whose scopes its own scopes include;
//! - a key may rotate itself; rotating another key takes `api_keys:write`;
//! - a successor never has scopes its parent did not have;
//! - the parent keeps working until `now + grace`, never past its own expiry;
//! - a successor gets the parent's lifetime afresh (a 30-day key rotates into
//!   a new 30-day key; a key without expiry into one without); a key under a
//!   rotation policy gets a fresh period instead;
//! - a key under a rotation policy (its own `rotation_period`, or the
//!   runtime's default) expires one period after creation unless given an
//!   explicit expiry; only such a key may name a `rotation_webhook_url`,
//!   the opt-in to automatic rotation by the
//!   [`Notifier`](crate::notify::Notifier).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock, truncate_micros};
use crate::error::{Error, StoreError, VerifyError};
use crate::key::{KeyFormat, KeyId, hint};
use crate::model::{
    ApiKey, AuditEvent, CreatedKey, KeyRecord, Page, Principal, SecretText, Status, event_type,
};
use crate::scope::{Grant, Grants};
use crate::store::{
    Change, Cursor, DEFAULT_PAGE_SIZE, EventQuery, KeyQuery, Listing, MAX_PAGE_SIZE, RevokeOutcome,
    RotateOutcome, Rotation, Store,
};
use crate::verify::{Verifier, VerifierConfig};

/// The scope that lets a key rotate keys other than itself, and create keys.
pub const SCOPE_WRITE: &str = "api_keys:write";
/// The scope that lets a key read other keys and the audit log.
pub const SCOPE_READ: &str = "api_keys:read";
/// The scope that lets a key revoke keys.
pub const SCOPE_REVOKE: &str = "api_keys:revoke";

/// The default grace period of a rotation: 24 hours.
pub const DEFAULT_GRACE: Duration = Duration::hours(24);
/// The longest rotation grace: 365 days.
pub const MAX_GRACE: Duration = Duration::days(365);
/// The longest key name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// The largest metadata object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The most entries a `scopes` list may have (before duplicates are
/// removed), and so the most scopes one key may hold.
pub const MAX_SCOPES: usize = 100;
/// The longest rotation period: ten years.
pub const MAX_ROTATION_PERIOD: Duration = Duration::days(3650);
/// The shortest [store timeout](ScopeKeyBuilder::store_timeout): 100 ms.
pub const MIN_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// The shortest interval of the
/// [last-used flusher](ScopeKey::spawn_last_used_flusher): 100 ms.
pub const MIN_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest `rotation_webhook_url`, in bytes.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// Who is acting: recorded in the audit log, and checked against the rules.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An operator or the service itself (CLI, bootstrap): no scope checks.
    System,
    /// A caller authenticated with a key. The runtime holds it to the
    /// rules that protect other keys: it creates, and rotates into, only
    /// keys whose scopes its own cover, and rotates another key only with
    /// [`SCOPE_WRITE`] and every scope of that key ([`may_rotate`]).
    /// Whether it may create, revoke or report keys at all
    /// ([`SCOPE_WRITE`], [`SCOPE_REVOKE`]) is the caller's to check, as the
    /// prebuilt routes do before they call the runtime: a service may let
    /// keys of its choosing mint narrower keys for their own clients. A
    /// custom route that calls [`ScopeKey::create`], [`ScopeKey::revoke`]
    /// or [`ScopeKey::report_compromised`] for a key must check the scope it
    /// asks for itself (`principal.grants().covers_str(SCOPE_REVOKE)`).
    Key(&'a Principal),
}

impl Actor<'_> {
    fn key_id(&self) -> Option<KeyId> {
        match self {
            Actor::System => None,
            Actor::Key(p) => Some(p.id),
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Human name (1 to 200 characters).
    pub name: String,
    /// Granted scopes (`orders:read`, `orders:*`, `*`).
    pub scopes: Vec<String>,
    /// Absolute expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Expiry relative to now (not together with `expires_at`).
    pub expires_in: Option<Duration>,
    /// Free-form JSON object.
    pub metadata: Option<Map<String, Value>>,
    /// Rotation policy: the key expires (and so is due for rotation) this
    /// long after creation unless an expiry is given. Default: the runtime's
    /// [`rotation_period`](ScopeKeyBuilder::rotation_period), if any.
    pub rotation_period: Option<Duration>,
    /// Opt-in to automatic rotation: the notifier rotates the key when due
    /// and delivers the successor's plaintext to this `https` URL. Needs a
    /// rotation policy of at least twice the default grace, and a runtime
    /// with a [rotation webhook secret](ScopeKeyBuilder::rotation_webhook_secret).
    pub rotation_webhook_url: Option<String>,
}

impl NewKey {
    /// A key with a name and scopes, no expiry, no metadata.
    pub fn new<I, S>(name: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Expires this long after creation.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_in = Some(ttl);
        self
    }

    /// Expires at this time.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Attaches metadata: a JSON object of at most 16 KiB
    /// ([`MAX_METADATA_BYTES`]), kept as given. Numbers are kept as 64-bit
    /// integers or doubles, so an integer beyond 64 bits (as HTTP bodies
    /// may hold) comes back as the nearest double: send such identifiers as
    /// strings.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Puts the key under a rotation policy of this period.
    pub fn rotate_every(mut self, period: Duration) -> Self {
        self.rotation_period = Some(period);
        self
    }

    /// Opts in to automatic rotation, delivering successors to this URL.
    pub fn rotation_webhook(mut self, url: impl Into<String>) -> Self {
        self.rotation_webhook_url = Some(url.into());
        self
    }
}

/// How to rotate.
#[derive(Debug, Clone, Default)]
pub struct RotateOptions {
    /// How long the old key keeps working (default 24 h; zero ends it now).
    pub grace: Option<Duration>,
    /// A subset of the parent's scopes for the successor (default: the same).
    pub scopes: Option<Vec<String>>,
}

/// A key listing request.
#[derive(Debug, Clone, Default)]
pub struct ListKeys {
    /// Only keys with this status.
    pub status: Option<Status>,
    /// Only keys whose name starts with this (literally).
    pub name_prefix: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An audit log request.
#[derive(Debug, Clone, Default)]
pub struct ListEvents {
    /// Only events about this key.
    pub key_id: Option<KeyId>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Settings of a [`ScopeKey`]; see [`ScopeKeyBuilder`].
#[derive(Debug, Clone)]
struct Config {
    format: KeyFormat,
    default_grace: Duration,
    catalogue: Option<Grants>,
    auth_failures_per_second: u32,
    rotation_period: Option<Duration>,
    /// Server secrets behind automatic rotation (current first).
    #[cfg(feature = "webhooks")]
    rotation_secrets: Vec<crate::notify::signature::Secret>,
    insecure_rotation_webhooks: bool,
    /// The ports a key's own webhook may name (unless insecure).
    rotation_webhook_ports: Vec<u16>,
}

/// The scopekey runtime: a cheap-to-clone handle on a store, a clock and a
/// verification cache. Create one per process and share it.
#[derive(Clone)]
pub struct ScopeKey {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Config,
    verifier: Verifier,
}

impl std::fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeKey")
            .field("format", &self.inner.config.format)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ScopeKey`].
pub struct ScopeKeyBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Config,
    verifier: VerifierConfig,
}

impl ScopeKeyBuilder {
    /// Uses this clock instead of the system clock (tests use
    /// [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The key format (prefix, pepper). Default: prefix `sk`, no pepper.
    pub fn key_format(mut self, format: KeyFormat) -> Self {
        self.config.format = format;
        self
    }

    /// The default rotation grace (24 h unless set). The notifier's
    /// automatic rotations use it or the time the key has left, whichever
    /// is longer: they never shorten a key's life. Kept within what a rotation accepts,
    /// 0 to 365 days ([`MAX_GRACE`]): a value outside is clamped to it, with
    /// a warning.
    pub fn default_grace(mut self, grace: Duration) -> Self {
        let clamped = grace.clamp(Duration::ZERO, MAX_GRACE);
        if clamped != grace {
            tracing::warn!(%grace, %clamped, "default rotation grace out of range; clamped");
        }
        self.config.default_grace = clamped;
        self
    }

    /// A rotation policy for every key created without one of its own (none
    /// unless set): such a key expires this long after creation unless
    /// given an explicit expiry, its successors get a fresh period, and the
    /// expiry notices tell its holder when to rotate. Between one second and
    /// [`MAX_ROTATION_PERIOD`].
    pub fn rotation_period(mut self, period: Duration) -> Result<Self, Error> {
        self.config.rotation_period = Some(check_period(period)?);
        Ok(self)
    }

    /// Enables automatic rotation (keys created with a
    /// `rotation_webhook_url`) with this server secret, kept out of the
    /// database (e.g. from `SCOPEKEY_ROTATION_SECRET`). It seals what
    /// automatic rotation keeps in the database: each key lineage's own
    /// webhook signing secret (random, handed to the holder once at creation
    /// as `rotation_webhook_secret`, so no holder can sign for another) and
    /// successor plaintexts waiting in the outbox. Call it again with the
    /// previous secret (after the current one) while changing it, so values
    /// sealed under the old one still open; each rotation seals its
    /// lineage's secret anew under the current one, so the previous one may
    /// go once every key under automatic rotation has rotated since (see
    /// [`notify`](crate::notify), "Changing the rotation secret"). Without
    /// any, creating a key with a rotation webhook is refused. The current
    /// one must be at least [`MIN_SECRET_LEN`](crate::notify::MIN_SECRET_LEN)
    /// bytes ([`Notifier::new`](crate::notify::Notifier::new) and key
    /// creation refuse a shorter one, and nothing is sealed anew under it);
    /// a shorter previous one is only warned about. A notifier on such a
    /// runtime posts successors to holders' https webhooks, so it needs
    /// the system's CA certificates: `Notifier::new` fails without them
    /// (unless insecure rotation webhooks are allowed).
    #[cfg(feature = "webhooks")]
    pub fn rotation_webhook_secret(mut self, secret: crate::notify::signature::Secret) -> Self {
        self.config.rotation_secrets.push(secret);
        self
    }

    /// Accepts `http://` rotation webhooks and IP-literal hosts in loopback,
    /// private or link-local ranges (default: refused, so a caller with
    /// `api_keys:write` cannot make the server post key material in the
    /// clear or probe internal addresses). The notifier then also skips its
    /// checks at delivery (`https` only, public addresses only, no proxy;
    /// see the `notify` module) and posts to holders as it does to the
    /// operator's endpoints, through the environment's proxy if there is
    /// one, and starts without the system's CA certificates if no
    /// endpoint needs them. For development and tests.
    pub fn allow_insecure_rotation_webhooks(mut self, allow: bool) -> Self {
        self.config.insecure_rotation_webhooks = allow;
        self
    }

    /// The ports a key's own rotation webhook may name (default: 443 only,
    /// the port of a URL without one). Whoever may create keys chooses the
    /// webhook URL, and the notifier posts to it from the server's address:
    /// other ports would let them reach any public service there (a blind
    /// request, its HTTP status then readable in `webhook.failed` events).
    /// Ignored with [`allow_insecure_rotation_webhooks`](Self::allow_insecure_rotation_webhooks).
    /// Checked when a key is created, and by the notifier at every delivery
    /// to a key's webhook (a key made before, or by a runtime that allowed
    /// more, fails its deliveries on another port).
    pub fn rotation_webhook_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.config.rotation_webhook_ports = ports.into_iter().collect();
        self
    }

    /// Restricts the scopes keys may hold to a catalogue (e.g.
    /// `scopekey::catalogue!()`); `*` and `resource:*` stay allowed where they
    /// cover a catalogued scope. The management routes' own scopes
    /// ([`SCOPE_READ`], [`SCOPE_WRITE`], [`SCOPE_REVOKE`]) belong to every
    /// catalogue, so keys that manage keys can always be made. An empty list
    /// means no catalogue (what `catalogue!()` gives in a crate that declares
    /// none). Invalid entries are an error.
    pub fn catalogue<I, S>(mut self, scopes: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let grants = Grants::parse_all(scopes)
            .map_err(|e| Error::Invalid(format!("scope catalogue: {e}")))?;
        self.config.catalogue = (!grants.as_slice().is_empty()).then(|| {
            let mut all = grants.as_slice().to_vec();
            for scope in [SCOPE_READ, SCOPE_WRITE, SCOPE_REVOKE] {
                let grant = Grant::parse(scope).expect("the management scopes are valid");
                if !all.contains(&grant) {
                    all.push(grant);
                }
            }
            Grants::new(all)
        });
        Ok(self)
    }

    /// How long a verification read from the store is served from cache
    /// (default 1 s): the bound on how late another process's revocation
    /// is seen. Judged by the runtime's [`clock`](Self::clock), from the
    /// moment the store was asked.
    pub fn cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.verifier.cache_ttl = ttl;
        self
    }

    /// How many verifications the cache holds (default 100,000; 0 caches
    /// nothing, so every verification reads the store). Entries not asked
    /// for lately are evicted first (an approximation of least recently
    /// used); memory stays bounded however many distinct keys clients
    /// present. An eighth of the capacity holds "no such key" answers
    /// apart (none are cached below a capacity of 16), so a flood of
    /// made-up keys evicts only those, never the verdicts of the keys in
    /// use.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.verifier.cache_capacity = capacity;
        self
    }

    /// How long a verification may wait for the store (default 2 s). A
    /// lookup on a cache miss that takes longer refuses the key as
    /// unavailable (503 over HTTP), as on any store failure; the task
    /// writing a refusal's sampled `auth.failed` event (the refusal does
    /// not wait for it) stops waiting after as long (and logs it; the
    /// write may still land). It bounds what a database outage
    /// costs each request: sqlx's pools otherwise wait up to their acquire
    /// timeout (30 s by default; 5 s in the pool `PgStore::connect` builds)
    /// for a connection to a server that is down, and a SQLite write waits
    /// up to its busy timeout (5 s) for another writer. At least
    /// [`MIN_STORE_TIMEOUT`]: a shorter one (zero, say, which would refuse
    /// every cache miss) is raised to it, with a warning.
    pub fn store_timeout(mut self, timeout: std::time::Duration) -> Self {
        if timeout < MIN_STORE_TIMEOUT {
            tracing::warn!(?timeout, minimum = ?MIN_STORE_TIMEOUT, "store timeout too short; raised");
        }
        self.verifier.store_timeout = timeout.max(MIN_STORE_TIMEOUT);
        self
    }

    /// At most this many `auth.failed` audit events a second (default 10)
    /// for refusals of keys the store knows (revoked, expired), and as
    /// many for the others (malformed, unknown): a flood of garbage keys
    /// cannot crowd the known keys' refusals out of the audit log. Past
    /// that, each known key's first refusal in a second is written all the
    /// same (for up to 64 keys a second), so that one key refused in a loop
    /// cannot hide another's. 0 writes none. They accumulate: delete old
    /// ones with [`ScopeKey::prune_auth_failures`]. Each is written in a
    /// task of its own: a refusal is answered without waiting for the
    /// store, so its timing does not tell whether its event was written
    /// (nor, then, a key the store knows from one it does not).
    /// [`ScopeKey::events`] on this runtime waits for the writes begun
    /// before it; another process sees an event once it is written.
    pub fn auth_failures_per_second(mut self, limit: u32) -> Self {
        self.config.auth_failures_per_second = limit;
        self
    }

    /// Finishes the runtime. Does not touch the store: call
    /// [`ScopeKey::migrate`] once at start-up.
    pub fn build(self) -> ScopeKey {
        ScopeKey {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                verifier: Verifier::new(&self.verifier),
                config: self.config,
            }),
        }
    }
}

impl ScopeKey {
    /// Starts building a runtime on a store.
    pub fn builder(store: impl Store) -> ScopeKeyBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Starts building a runtime on a shared store.
    pub fn builder_arc(store: Arc<dyn Store>) -> ScopeKeyBuilder {
        ScopeKeyBuilder {
            store,
            clock: Arc::new(SystemClock),
            config: Config {
                format: KeyFormat::default(),
                default_grace: DEFAULT_GRACE,
                catalogue: None,
                auth_failures_per_second: 10,
                rotation_period: None,
                #[cfg(feature = "webhooks")]
                rotation_secrets: Vec::new(),
                insecure_rotation_webhooks: false,
                rotation_webhook_ports: vec![443],
            },
            verifier: VerifierConfig::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Whether `other` is this runtime (a clone of it: the same cache,
    /// settings and store), not merely one built on the same store.
    pub fn same_runtime(&self, other: &ScopeKey) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A number naming this runtime among those alive (its clones share
    /// it): what [`same_runtime`](Self::same_runtime) compares, for a
    /// caller that keeps the number rather than the runtime. A runtime
    /// dropped may leave its number to a later one.
    pub fn instance_id(&self) -> usize {
        Arc::as_ptr(&self.inner).addr()
    }

    /// The current time by the runtime's clock, to the microsecond.
    pub fn now(&self) -> OffsetDateTime {
        truncate_micros(self.inner.clock.now())
    }

    /// The key format in force.
    pub fn key_format(&self) -> &KeyFormat {
        &self.inner.config.format
    }

    /// The default rotation grace.
    pub fn default_grace(&self) -> Duration {
        self.inner.config.default_grace
    }

    /// The default rotation policy, if any.
    pub fn rotation_period(&self) -> Option<Duration> {
        self.inner.config.rotation_period
    }

    /// Forgets a cached verdict: the next verification of that hash reads
    /// the store.
    pub(crate) fn forget(&self, hash: &crate::key::KeyHash) {
        self.inner.verifier.invalidate(hash);
    }

    /// Whether keys' own rotation webhooks may be `http://` or internal
    /// addresses ([`ScopeKeyBuilder::allow_insecure_rotation_webhooks`]).
    #[cfg(feature = "webhooks")]
    pub(crate) fn insecure_rotation_webhooks(&self) -> bool {
        self.inner.config.insecure_rotation_webhooks
    }

    /// The ports a key's own webhook may name
    /// ([`ScopeKeyBuilder::rotation_webhook_ports`]).
    #[cfg(feature = "webhooks")]
    pub(crate) fn rotation_webhook_ports(&self) -> &[u16] {
        &self.inner.config.rotation_webhook_ports
    }

    /// The server secrets behind automatic rotation (current first).
    #[cfg(feature = "webhooks")]
    pub(crate) fn rotation_secrets(&self) -> &[crate::notify::signature::Secret] {
        &self.inner.config.rotation_secrets
    }

    /// A key's own webhook signing secret, opened from its sealed form;
    /// `None` if it has none or no rotation secret of this runtime opens it.
    #[cfg(feature = "webhooks")]
    pub(crate) fn webhook_secret_of(
        &self,
        record: &KeyRecord,
    ) -> Option<crate::notify::signature::Secret> {
        let sealed = record.rotation_webhook_secret.as_deref()?;
        let bytes = crate::notify::seal::open(
            &self.inner.config.rotation_secrets,
            crate::notify::seal::KEY_SECRET,
            sealed,
        )?;
        crate::notify::signature::Secret::from_bytes(bytes).ok()
    }

    /// A successor's copy of its lineage's sealed webhook secret: sealed
    /// anew under the current rotation secret when this runtime can open
    /// it, so that a lineage created under a retired rotation secret moves
    /// to the current one at its next rotation, and the old secret can be
    /// dropped once every lineage has rotated since the change (a lineage
    /// rotates within its period). Copied as it is otherwise (no secret
    /// here opens it, or this runtime has none, as the CLI without
    /// `SCOPEKEY_ROTATION_SECRET`).
    fn resealed_webhook_secret(&self, parent: &KeyRecord) -> Result<Option<String>, Error> {
        #[cfg(feature = "webhooks")]
        if let (Some(current), Some(secret)) = (
            self.inner
                .config
                .rotation_secrets
                .first()
                .filter(|s| s.as_bytes().len() >= crate::notify::MIN_SECRET_LEN),
            self.webhook_secret_of(parent),
        ) {
            let sealed = crate::notify::seal::seal(
                current,
                crate::notify::seal::KEY_SECRET,
                secret.as_bytes(),
            )?;
            return Ok(Some(sealed));
        }
        Ok(parent.rotation_webhook_secret.clone())
    }

    /// Creates or upgrades the schema. On a store already up to date (every
    /// migration of this version applied, with its checksum, and no other)
    /// it only reads which were applied: no lock taken, no DDL right
    /// needed.
    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.inner.store.migrate().await?)
    }

    /// Whether the store holds no key. (To bootstrap a first key, use
    /// [`create_first`](Self::create_first): checking this and then
    /// creating is a race between instances.)
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.inner.store.is_empty().await?)
    }

    fn event(
        &self,
        now: OffsetDateTime,
        kind: &str,
        key_id: Option<KeyId>,
        actor: Option<KeyId>,
        details: Value,
    ) -> AuditEvent {
        AuditEvent {
            id: uuid_at(now),
            key_id,
            kind: kind.to_owned(),
            actor_key_id: actor,
            at: now,
            details,
        }
    }

    /// Parses, deduplicates and checks scopes against the catalogue.
    fn grants(&self, scopes: &[String]) -> Result<(Vec<String>, Grants), Error> {
        if scopes.is_empty() {
            return Err(Error::Invalid(
                "`scopes` must name at least one scope".into(),
            ));
        }
        if scopes.len() > MAX_SCOPES {
            return Err(Error::Invalid(format!(
                "`scopes` may list at most {MAX_SCOPES} entries"
            )));
        }
        let mut seen = HashSet::new();
        let mut texts = Vec::new();
        let mut grants = Vec::new();
        for (i, s) in scopes.iter().enumerate() {
            // The reason, not the input: a secret pasted into `scopes` by
            // mistake must not come back in an error message or a log.
            let grant = Grant::parse(s).map_err(|e| {
                Error::Invalid(format!(
                    "`scopes[{i}]` is not a valid scope: {}",
                    e.reason()
                ))
            })?;
            if let Some(catalogue) = &self.inner.config.catalogue
                && !in_catalogue(catalogue, &grant)
            {
                return Err(Error::Invalid(format!(
                    "scope `{grant}` is not in the scope catalogue"
                )));
            }
            if seen.insert(grant.to_string()) {
                texts.push(grant.to_string());
                grants.push(grant);
            }
        }
        Ok((texts, Grants::new(grants)))
    }

    /// Creates a key; its plaintext is in the result and nowhere else.
    pub async fn create(&self, new: NewKey, actor: Actor<'_>) -> Result<CreatedKey, Error> {
        // An unconditional insert creates or fails: never `None`.
        self.create_in(new, actor, false)
            .await?
            .ok_or_else(|| Error::Internal("a key insert reported no key".into()))
    }

    /// [`create`](Self::create), only if the store holds no key at all —
    /// checked and inserted atomically, so several instances bootstrapping
    /// one fresh store (a first admin key, say) create one key between
    /// them. `None` if the store already held a key. (A third-party
    /// [`Store`] that does not override
    /// [`Store::insert_first_key`] checks and inserts in two steps.)
    pub async fn create_first(
        &self,
        new: NewKey,
        actor: Actor<'_>,
    ) -> Result<Option<CreatedKey>, Error> {
        self.create_in(new, actor, true).await
    }

    async fn create_in(
        &self,
        new: NewKey,
        actor: Actor<'_>,
        only_first: bool,
    ) -> Result<Option<CreatedKey>, Error> {
        let now = self.now();
        let name = check_name(&new.name)?;
        let (scopes, grants) = self.grants(&new.scopes)?;
        if let Actor::Key(p) = actor
            && !p.grants().includes_all(&grants)
        {
            return Err(escalation(&grants, p.grants()));
        }
        let expires_at = match (new.expires_at, new.expires_in) {
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give `expires_at` or `expires_in_seconds`, not both".into(),
                ));
            }
            // In UTC, as stored: `9999-12-31T23:59:59-23:59` is past the
            // calendar's end there.
            (Some(at), None) => Some(truncate_micros(
                at.checked_to_offset(time::UtcOffset::UTC).ok_or_else(|| {
                    Error::Invalid("`expires_at` is too far in the future".into())
                })?,
            )),
            (None, Some(ttl)) if ttl <= Duration::ZERO => {
                return Err(Error::Invalid(
                    "`expires_in_seconds` must be positive".into(),
                ));
            }
            // Stores keep microseconds: what is answered is what is kept.
            (None, Some(ttl)) => {
                Some(truncate_micros(now.checked_add(ttl).ok_or_else(|| {
                    Error::Invalid("`expires_in_seconds` is too large".into())
                })?))
            }
            (None, None) => None,
        };
        if expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Invalid("`expires_at` must be in the future".into()));
        }
        let rotation_period = match new.rotation_period {
            Some(p) => Some(check_period(p)?),
            None => self.inner.config.rotation_period,
        };
        let insecure = self.inner.config.insecure_rotation_webhooks;
        let rotation_webhook_url = new
            .rotation_webhook_url
            .as_deref()
            .map(|url| check_webhook_url(url, insecure, &self.inner.config.rotation_webhook_ports))
            .transpose()?;
        let mut rotation_webhook_secret = None;
        if rotation_webhook_url.is_some() {
            let Some(period) = rotation_period else {
                return Err(Error::Invalid(
                    "`rotation_webhook_url` needs a rotation policy: give `rotation_period_seconds`"
                        .into(),
                ));
            };
            // Due one grace before expiry: a period of at least two graces
            // keeps each key in service for at least one.
            let two_graces: Duration = self.inner.config.default_grace * 2;
            if period < two_graces {
                return Err(Error::Invalid(format!(
                    "automatic rotation needs `rotation_period_seconds` of at least {} \
                     (twice the rotation grace)",
                    two_graces.whole_seconds()
                )));
            }
            rotation_webhook_secret = Some(self.new_webhook_secret()?);
        }
        // Under a policy, the key is due (and expires) one period from now.
        let expires_at = expires_at.or_else(|| rotation_period.map(|p| now + p));
        let metadata = check_metadata(new.metadata)?;
        let (mut record, plaintext) =
            self.new_record(now, name, scopes, metadata, expires_at, None)?;
        record.rotation_period = rotation_period;
        record.rotation_webhook_url = rotation_webhook_url;
        let rotation_webhook_secret = rotation_webhook_secret.map(|(sealed, text)| {
            record.rotation_webhook_secret = Some(sealed);
            text
        });
        let event = self.event(
            now,
            event_type::KEY_CREATED,
            Some(record.id),
            actor.key_id(),
            json!({
                "name": record.name,
                "scopes": record.scopes,
                "expires_at": rfc3339(record.expires_at),
                "rotation_period_seconds": record.rotation_period.map(|p| p.whole_seconds()),
                "automatic_rotation": record.rotation_webhook_url.is_some(),
            }),
        );
        let store = &self.inner.store;
        let inserted = if only_first {
            store.insert_first_key(&record, &event).await
        } else {
            store.insert_key(&record, &event).await.map(|()| true)
        };
        match inserted.map_err(Error::from) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(Error::ActorRevoked) => return Err(self.actor_refused(actor, "create", now).await),
            Err(e) => return Err(e),
        }
        self.inner.verifier.invalidate(&record.key_hash);
        tracing::info!(key_id = %record.id, hint = %record.hint, "api key created");
        Ok(Some(CreatedKey {
            key: record.to_api_key(now),
            plaintext,
            rotation_webhook_secret,
        }))
    }

    /// A fresh webhook signing secret for a key lineage, from the CSPRNG:
    /// sealed for the store, and in `whsec_…` form for its holder, once.
    fn new_webhook_secret(&self) -> Result<(String, SecretText), Error> {
        #[cfg(feature = "webhooks")]
        if let Some(server) = self.inner.config.rotation_secrets.first() {
            // A short one could be guessed from the sealed value; no
            // notifier starts on it either.
            if server.as_bytes().len() < crate::notify::MIN_SECRET_LEN {
                return Err(Error::Invalid(format!(
                    "automatic rotation is not available: the service's rotation secret is \
                     shorter than {} bytes",
                    crate::notify::MIN_SECRET_LEN
                )));
            }
            let secret = crate::notify::signature::Secret::generate().map_err(|e| {
                Error::Unavailable(StoreError::new("no randomness for a secret", e))
            })?;
            let sealed = crate::notify::seal::seal(
                server,
                crate::notify::seal::KEY_SECRET,
                secret.as_bytes(),
            )?;
            return Ok((sealed, SecretText::new(secret.to_whsec())));
        }
        Err(Error::Invalid(
            "automatic rotation is not enabled on this service (it has no rotation \
             webhook secret); leave out `rotation_webhook_url`"
                .into(),
        ))
    }

    fn new_record(
        &self,
        now: OffsetDateTime,
        name: String,
        scopes: Vec<String>,
        metadata: Map<String, Value>,
        expires_at: Option<OffsetDateTime>,
        parent_key_id: Option<KeyId>,
    ) -> Result<(KeyRecord, crate::key::Plaintext), Error> {
        let format = &self.inner.config.format;
        let plaintext = format.generate()?;
        let record = KeyRecord {
            id: KeyId(uuid_at(now)),
            name,
            scopes,
            metadata,
            hint: hint(plaintext.expose_secret()),
            key_hash: format.hash(plaintext.expose_secret()),
            created_at: now,
            expires_at,
            revoked_at: None,
            revoked_reason: None,
            rotated_at: None,
            parent_key_id,
            last_used_at: None,
            rotation_period: None,
            rotation_webhook_url: None,
            rotation_webhook_secret: None,
        };
        Ok((record, plaintext))
    }

    /// The fast path of [`verify`](Self::verify), for the hot path of a
    /// server: the principal if this key's verdict is in the verification
    /// cache and the key is valid now (its use is recorded as `verify`
    /// does), without I/O or a future. `None` means "call
    /// [`verify`](Self::verify)": a cache miss, or a refusal (which `verify`
    /// logs and audits). Only well-formed keys ever enter the cache, so the
    /// format check can wait for the miss.
    pub fn verify_cached(&self, presented: &str) -> Option<Principal> {
        if presented.len() > crate::key::MAX_KEY_LEN {
            return None;
        }
        let hash = self.inner.config.format.hash(presented);
        // The clock read as an integer: no calendar conversion on the hot
        // path.
        self.inner
            .verifier
            .verify_cached(&hash, self.inner.clock.now_unix_micros())
    }

    /// Verifies a presented key: format and checksum first (no I/O), then
    /// the cache, then the store. Refusals are logged and sampled into the
    /// audit log as `auth.failed`.
    pub async fn verify(&self, presented: &str) -> Result<Principal, VerifyError> {
        let format = &self.inner.config.format;
        let now = self.now();
        let result = match format.parse(presented) {
            Err(malformed) => Err((VerifyError::Malformed(malformed), None, false)),
            Ok(()) => {
                let hash = format.hash(presented);
                self.inner
                    .verifier
                    .verify(&*self.inner.store, hash, &*self.inner.clock)
                    .await
                    .map_err(|(e, key_id)| (e, key_id, true))
            }
        };
        match result {
            Ok(principal) => Ok(principal),
            Err((err, key_id, well_formed)) => {
                self.report_failure(&err, key_id, well_formed, presented, now)
                    .await;
                Err(err)
            }
        }
    }

    async fn report_failure(
        &self,
        err: &VerifyError,
        key_id: Option<KeyId>,
        well_formed: bool,
        presented: &str,
        now: OffsetDateTime,
    ) {
        if let VerifyError::Unavailable(e) = err {
            tracing::error!(error = %e, "key verification failed: store unavailable; refusing");
            return;
        }
        // The hint of a well-formed key is not secret; of anything else we
        // keep nothing.
        let shown = well_formed.then(|| hint(presented));
        tracing::info!(reason = err.reason(), key_id = ?key_id, hint = ?shown, "api key refused");
        let details = json!({ "reason": err.reason(), "hint": shown });
        self.record_auth_failure(key_id, details, now).await;
    }

    /// Refuses a key acting for a revocation, a compromise report or the
    /// rotation of another key once it is revoked, expired or gone, read
    /// from the store, not the cache: a key revoked on another node stays
    /// cached here for up to the cache's lifetime, and one whose request
    /// was verified before it expired (a slow body) must not go on revoking
    /// others meanwhile; nor may it revoke itself, which would show it what
    /// became of it. Not in the change's transaction: a revocation racing
    /// the acting key's own can still go through, as it could a moment
    /// before (creating and rotating check again inside theirs).
    pub(crate) async fn actor_still_live(
        &self,
        actor: Actor<'_>,
        action: &str,
    ) -> Result<(), Error> {
        let Actor::Key(principal) = actor else {
            return Ok(());
        };
        self.acting_record(principal, action).await.map(|_| ())
    }

    /// The acting key's record, read from the store, if it is still valid
    /// (neither revoked nor expired) now; else the refusal any request
    /// with it gets ([`Error::ActorRevoked`]; logged, and sampled into the
    /// audit log as `auth.failed` with `action`), and a revoked or expired
    /// key's cache entry is dropped (a row deleted behind the runtime's
    /// back leaves its entry to the cache's lifetime).
    async fn acting_record(&self, caller: &Principal, action: &str) -> Result<KeyRecord, Error> {
        let now = self.now();
        let record = self.inner.store.get(caller.id).await?;
        let why = match &record {
            Some(record) => match refusal(record, now) {
                None => return Ok(record.clone()),
                Some(why) => why,
            },
            None => VerifyError::Unknown,
        };
        if let Some(record) = &record {
            self.forget(&record.key_hash);
        }
        Err(self
            .actor_refused_as(Actor::Key(caller), action, now, &why)
            .await)
    }

    /// A change the store refused because the key acting for it was no
    /// longer valid at the change's time (revoked or expired while its
    /// request ran): refused as [`actor_refused_as`](Self::actor_refused_as)
    /// does, for the reason the store now shows (revoked if it cannot be
    /// read).
    async fn actor_refused(&self, actor: Actor<'_>, action: &str, now: OffsetDateTime) -> Error {
        let why = match actor.key_id() {
            Some(id) => match self.inner.store.get(id).await {
                Ok(Some(record)) => refusal(&record, now).unwrap_or(VerifyError::Revoked),
                Ok(None) => VerifyError::Unknown,
                Err(_) => VerifyError::Revoked,
            },
            None => VerifyError::Revoked,
        };
        self.actor_refused_as(actor, action, now, &why).await
    }

    /// Refuses the key acting for `action` as no longer valid, for the
    /// reason `why` (revoked, expired, or gone: unknown).
    async fn actor_refused_as(
        &self,
        actor: Actor<'_>,
        action: &str,
        now: OffsetDateTime,
        why: &VerifyError,
    ) -> Error {
        let key_id = actor.key_id();
        let reason = why.reason();
        tracing::warn!(reason, key_id = ?key_id, action, "api key refused: found no longer valid in the store while acting");
        let details = json!({ "reason": reason, "hint": null, "action": action });
        self.record_auth_failure(key_id, details, now).await;
        Error::ActorRevoked
    }

    /// Writes an `auth.failed` event, at most the configured number a
    /// second, in a task of its own (waiting for the store at most the
    /// verification timeout): the refusal is not held up by it, so its
    /// timing is the same whether its event was admitted or not (see
    /// [`FailureWrites`](crate::verify::FailureWrites)). Listing the audit
    /// log on this runtime waits for it.
    async fn record_auth_failure(
        &self,
        key_id: Option<KeyId>,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) {
        use tracing::Instrument;
        if !self.inner.verifier.admit_failure_event(
            now,
            self.inner.config.auth_failures_per_second,
            key_id,
        ) {
            return;
        }
        let event = self.event(now, event_type::AUTH_FAILED, key_id, None, details);
        let timeout = self.inner.verifier.store_timeout();
        let store = Arc::clone(&self.inner.store);
        let write = self.inner.verifier.failure_writes().begin();
        // A span of its own, following the request's: the request's span
        // (and what a subscriber measures of it) ends with the refusal, not
        // with this write.
        let span = tracing::info_span!(parent: None, "auth_failed_write");
        span.follows_from(tracing::Span::current());
        let task = async move {
            let _write = write;
            match tokio::time::timeout(timeout, store.insert_event(&event)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record auth.failed event"),
                Err(_) => tracing::warn!(
                    ?timeout,
                    "stopped waiting for the auth.failed event's write (it may still be recorded)"
                ),
            }
        };
        tokio::spawn(task.instrument(span));
    }

    /// Waits (at most twice the store timeout) for the `auth.failed` events
    /// this runtime began writing before the call: each is written in a
    /// task of its own, so that a refusal does not wait for it. Call it on
    /// shutdown, once the server has stopped answering and before the
    /// async runtime ends (which would drop the writes under way), as
    /// [`flush_last_used`](Self::flush_last_used); `scopekey::actix`'s
    /// `Background::shutdown` calls both. [`events`](Self::events) calls
    /// it first, so a listing shows the refusals this node has answered.
    pub async fn flush_auth_failures(&self) {
        let wait = self.inner.verifier.store_timeout().saturating_mul(2);
        let _ = tokio::time::timeout(wait, self.inner.verifier.failure_writes().settled()).await;
    }

    /// Rotates a key: a successor with the same (or fewer) scopes, while the
    /// old key keeps working for the grace period. A key may rotate itself;
    /// another key needs `api_keys:write` ([`may_rotate`]) and every scope
    /// of the key it rotates, and of the successor it asks for.
    /// The store's change runs in a task of its own, as a
    /// [revocation's](Self::revoke) does, so this node's cache learns of it
    /// even if the returned future is dropped (the successor's plaintext is
    /// then lost with it: revoke the successor, found in the parent's
    /// [`lineage`](Self::lineage) or the audit log).
    pub async fn rotate(
        &self,
        id: KeyId,
        options: RotateOptions,
        actor: Actor<'_>,
    ) -> Result<CreatedKey, Error> {
        self.rotate_with(id, options, actor, None).await
    }

    /// [`rotate`](Self::rotate), with `deliver` (an automatic rotation)
    /// building outbox rows from the successor and its plaintext, written in
    /// the rotation's transaction.
    pub(crate) async fn rotate_with(
        &self,
        id: KeyId,
        options: RotateOptions,
        actor: Actor<'_>,
        deliver: Option<Box<DeliverSuccessor<'_>>>,
    ) -> Result<CreatedKey, Error> {
        let now = self.now();
        // Permission first, before the options and the lookup: a key without
        // `api_keys:write` learns neither which ids exist nor how its
        // request would have been judged.
        may_rotate(actor, id)?;
        let grace = options.grace.unwrap_or(self.inner.config.default_grace);
        if grace < Duration::ZERO || grace > MAX_GRACE {
            return Err(Error::Invalid(format!(
                "`grace_seconds` must be between 0 and {}",
                MAX_GRACE.whole_seconds()
            )));
        }
        // A key rotating another is confirmed from the store before it
        // learns anything of that key (whether it exists, its scopes, its
        // state): one revoked on another node, or expired while its request
        // arrived, gets the refusal any request with it gets. (Checked
        // again inside the rotation's transaction, for a revocation racing
        // this one; a key rotating itself is judged by its own record
        // below.)
        if actor.key_id().is_some_and(|caller| caller != id) {
            self.actor_still_live(actor, "rotate").await?;
        }
        // Not found: nothing to forget (any id may be asked for; a scan of
        // the cache for it would cost the node's cache for nothing).
        let parent = self
            .inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let (parent_scopes, parent_grants) = self.grants_of(&parent)?;
        // Rotating another key ends it (after the grace, at once with none)
        // and hands its successor to the caller: only a caller whose key
        // covers every scope of it may, whatever the successor is asked to
        // hold. Else a key with `api_keys:write` could end any key sharing
        // one of its scopes (the admin's `*`), asking for that one alone.
        // Before the key's state is judged: a caller that may not rotate
        // it does not learn whether it is revoked, expired or rotated.
        if let Actor::Key(p) = actor
            && p.id != parent.id
            && !p.grants().includes_all(&parent_grants)
        {
            return Err(Error::Forbidden(format!(
                "rotating another key needs every scope it holds; the calling key lacks: {}",
                missing(&parent_grants, p.grants())
            )));
        }
        self.rotatable_by(&parent, actor, now).await?;
        let (scopes, grants) = match &options.scopes {
            None => (parent_scopes, parent_grants.clone()),
            Some(asked) => self.grants(asked)?,
        };
        // The caller's own reach first: a 403 names only scopes the caller
        // lacks. A caller holding all it asks for, asking a successor more
        // than its parent had, gets a 400 (a bad value): no key the caller
        // could get would change that answer.
        if let Actor::Key(p) = actor
            && !p.grants().includes_all(&grants)
        {
            return Err(escalation(&grants, p.grants()));
        }
        if !parent_grants.includes_all(&grants) {
            return Err(Error::Invalid(format!(
                "a successor cannot have scopes its parent did not have ({})",
                missing(&grants, &parent_grants)
            )));
        }
        let grace_end = truncate_micros(now + grace);
        let parent_expires_at = match parent.expires_at {
            Some(own) if own < grace_end => own,
            _ => grace_end,
        };
        // A fresh period under a policy; else the parent's lifetime afresh
        // (or, past the calendar's end — a parent meant to last "forever",
        // say until 9999-12-31 — the parent's own expiry).
        let child_expires_at = match parent.rotation_period {
            // Checked again: a period edited by hand in the store, out of
            // range, is the row's fault, not a reason to panic (the
            // notifier passes such a key over and goes on).
            Some(period) => Some(
                check_period(period)
                    .ok()
                    .and_then(|period| now.checked_add(period))
                    .ok_or_else(|| {
                        Error::Unavailable(StoreError::corrupt(format!(
                            "key {} has an invalid stored rotation period",
                            parent.id
                        )))
                    })?,
            ),
            None => parent
                .expires_at
                .map(|e| now.checked_add(e - parent.created_at).unwrap_or(e)),
        };
        let (mut child, plaintext) = self.new_record(
            now,
            parent.name.clone(),
            scopes,
            parent.metadata.clone(),
            child_expires_at,
            Some(parent.id),
        )?;
        child.rotation_period = parent.rotation_period;
        child.rotation_webhook_url = parent.rotation_webhook_url.clone();
        child.rotation_webhook_secret = self.resealed_webhook_secret(&parent)?;
        let mut details = json!({
            "parent_key_id": parent.id,
            "successor_key_id": child.id,
            "grace_seconds": grace.whole_seconds(),
            "parent_expires_at": rfc3339(Some(parent_expires_at)),
        });
        if deliver.is_some() {
            details["automatic"] = Value::Bool(true);
        }
        let mut rotation = Rotation {
            parent_id: parent.id,
            now,
            parent_expires_at,
            events: vec![
                self.event(
                    now,
                    event_type::KEY_ROTATED,
                    Some(parent.id),
                    actor.key_id(),
                    details.clone(),
                ),
                self.event(
                    now,
                    event_type::KEY_ROTATED,
                    Some(child.id),
                    actor.key_id(),
                    details,
                ),
            ],
            child,
            deliveries: Vec::new(),
        };
        if let Some(deliver) = deliver {
            rotation.deliveries = deliver(&rotation.child, &plaintext, &rotation.events[1])?;
        }
        // The change and the invalidation after it run to their end even
        // if the caller stops waiting (a client that hangs up): a rotation
        // committed unseen by this node's cache would leave the parent
        // cached as unrotated.
        let inner = Arc::clone(&self.inner);
        let (outcome, rotation) = to_the_end(async move {
            let outcome = inner.store.rotate(&rotation).await;
            match &outcome {
                Ok(RotateOutcome::Rotated(before)) => {
                    inner.verifier.invalidate(&before.key_hash);
                    inner.verifier.invalidate(&rotation.child.key_hash);
                }
                Ok(_) => {}
                // Committed or not, as for a revocation.
                Err(_) => inner.verifier.invalidate_key(rotation.parent_id),
            }
            (outcome, rotation)
        })
        .await?;
        let outcome = match outcome.map_err(Error::from) {
            Ok(outcome) => outcome,
            Err(Error::ActorRevoked) => return Err(self.actor_refused(actor, "rotate", now).await),
            Err(e) => return Err(e),
        };
        match outcome {
            RotateOutcome::Rotated(_) => {
                tracing::info!(key_id = %parent.id, successor = %rotation.child.id, "api key rotated");
                Ok(CreatedKey {
                    key: rotation.child.to_api_key(now),
                    plaintext,
                    rotation_webhook_secret: None,
                })
            }
            // Gone since it was read: its cached verdicts go (its hash is
            // known, so this is one entry, not a scan).
            RotateOutcome::NotFound => {
                self.forget(&parent.key_hash);
                Err(Error::NotFound(id.to_string()))
            }
            RotateOutcome::Conflict(now_record) => {
                self.rotatable_by(&now_record, actor, now).await?;
                Err(Error::Conflict(format!(
                    "key {id} was rotated concurrently"
                )))
            }
        }
    }

    /// Whether `record` may be rotated ([`rotatable`]), as `actor` is told:
    /// a key rotating itself once revoked or expired (revoked on another
    /// node, still in this one's cache) gets the refusal any request with
    /// it gets ([`Error::ActorRevoked`]: 401 over HTTP), not a 409 saying
    /// what became of it.
    async fn rotatable_by(
        &self,
        record: &KeyRecord,
        actor: Actor<'_>,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let judged = rotatable(record, now);
        // A key that can no longer be rotated was rotated, revoked or
        // expired, perhaps on another node this one has not heard from:
        // its cached verdicts go, as every other read of a changed key
        // drops them.
        if judged.is_err() {
            self.forget(&record.key_hash);
        }
        if judged.is_err()
            && actor.key_id() == Some(record.id)
            && let Some(why) = refusal(record, now)
        {
            return Err(self.actor_refused_as(actor, "rotate", now, &why).await);
        }
        judged
    }

    fn grants_of(&self, record: &KeyRecord) -> Result<(Vec<String>, Grants), Error> {
        let grants = Grants::parse_all(&record.scopes).map_err(|e| {
            Error::Unavailable(StoreError::corrupt(format!(
                "key {} has an invalid stored scope: {e}",
                record.id
            )))
        })?;
        Ok((record.scopes.clone(), grants))
    }

    /// Revokes a key at once (idempotent: revoking a revoked key changes
    /// nothing and succeeds). The `reason` is kept trimmed; a blank one is
    /// kept as none. An acting key ([`Actor::Key`]) that is
    /// revoked or expired, on this node or another (whose revocation this
    /// node's cache may not have heard of yet), is refused with
    /// [`Error::ActorRevoked`], read from the store; so is a key revoking
    /// itself once revoked (it is not shown what became of it). The revocation runs in a task of its own
    /// (spawned on the current Tokio runtime): once begun, it goes on to
    /// this node's cache even if the returned future is dropped.
    pub async fn revoke(
        &self,
        id: KeyId,
        reason: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<ApiKey, Error> {
        // Blanks around it are dropped, and a blank reason is none (null,
        // as when left out), not an empty text.
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = reason {
            check_reason(r)?;
        }
        // A key pasted into the reason ("leaked: sk_…") is kept as its hint:
        // refusing would leave the key live.
        let reason = reason.map(crate::key::redact_keys);
        let reason = reason.as_deref();
        self.actor_still_live(actor, "revoke").await?;
        let details = json!({ "reason": reason });
        let (key, revoked_now) = self
            .revoke_as(id, reason, actor, event_type::KEY_REVOKED, details)
            .await?;
        // A key revoking itself, found revoked by then (a concurrent
        // revocation committed between the check and this one): refused as
        // any request with it, not shown what became of it.
        if !revoked_now && actor.key_id() == Some(id) {
            let why = VerifyError::Revoked;
            return Err(self
                .actor_refused_as(actor, "revoke", self.now(), &why)
                .await);
        }
        Ok(key)
    }

    /// Revokes a key, audited as `kind` with `details`; also says whether
    /// this call revoked it (`false`: it was revoked already, perhaps by a
    /// concurrent call). `reason` is stored as given: a caller passing
    /// someone's text checks and redacts it first, as [`revoke`](Self::revoke)
    /// does.
    pub(crate) async fn revoke_as(
        &self,
        id: KeyId,
        reason: Option<&str>,
        actor: Actor<'_>,
        kind: &str,
        details: serde_json::Value,
    ) -> Result<(ApiKey, bool), Error> {
        let now = self.now();
        let event = self.event(now, kind, Some(id), actor.key_id(), details);
        // The revocation and the invalidation after it run to their end
        // even if the caller stops waiting (a client that hangs up, a
        // timeout around this call): one committed unseen by this node's
        // cache would leave the key working here for the cache's lifetime.
        let inner = Arc::clone(&self.inner);
        let reason = reason.map(str::to_owned);
        let outcome = to_the_end(async move {
            let outcome = inner.store.revoke(id, now, reason.as_deref(), &event).await;
            match &outcome {
                Ok(RevokeOutcome::Revoked(record) | RevokeOutcome::AlreadyRevoked(record)) => {
                    inner.verifier.invalidate(&record.key_hash);
                }
                Ok(RevokeOutcome::NotFound) => {}
                // Committed or not (a commit whose acknowledgement was
                // lost fails too): the key's cached verdicts go either way.
                Err(_) => inner.verifier.invalidate_key(id),
            }
            outcome
        })
        .await?;
        match outcome? {
            RevokeOutcome::Revoked(record) => {
                tracing::info!(key_id = %id, "api key revoked");
                Ok((self.api_key(&record, now), true))
            }
            RevokeOutcome::AlreadyRevoked(record) => Ok((self.api_key(&record, now), false)),
            RevokeOutcome::NotFound => Err(Error::NotFound(id.to_string())),
        }
    }

    /// One key.
    pub async fn get(&self, id: KeyId) -> Result<ApiKey, Error> {
        let now = self.now();
        self.inner
            .store
            .get(id)
            .await?
            .map(|r| self.api_key(&r, now))
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The calling key itself, read from the store (`GET /api-keys/self`).
    /// A key verified from this node's cache, but revoked, expired or gone
    /// in the store since (another node revoked it), is refused as any
    /// request with it is ([`Error::ActorRevoked`]; logged, and sampled
    /// into the audit log as `auth.failed` with `action: "self"`), never
    /// shown to its holder as `revoked`; a revoked or expired key's cache
    /// entry is dropped (a row deleted behind the runtime's back leaves its
    /// entry to the cache's lifetime).
    pub async fn get_self(&self, caller: &Principal) -> Result<ApiKey, Error> {
        let record = self.acting_record(caller, "self").await?;
        Ok(self.api_key(&record, self.now()))
    }

    /// Confirms, from the store, that the calling key is still valid
    /// before it is shown anything: its verification may come from this
    /// node's cache, taken up to the cache's lifetime ago, before another
    /// node revoked it (or before it expired, its request still arriving).
    /// Refused as [`get_self`](Self::get_self) refuses
    /// ([`Error::ActorRevoked`], audited as `auth.failed` with `action`).
    /// The management routes' reads (list, one key, the audit log) call it:
    /// one read of the caller's row. Creating, rotating, revoking and
    /// reporting check the acting key themselves.
    pub async fn confirm_caller(&self, caller: &Principal, action: &str) -> Result<(), Error> {
        self.acting_record(caller, action).await.map(|_| ())
    }

    /// A key as the API shows it, its `last_used_at` including a use on this
    /// runtime that the next flush will write.
    fn api_key(&self, record: &KeyRecord, now: OffsetDateTime) -> ApiKey {
        let mut key = record.to_api_key(now);
        key.last_used_at = key
            .last_used_at
            .max(self.inner.verifier.pending_last_used(record.id));
        key
    }

    /// A page of keys, newest first.
    pub async fn list(&self, request: &ListKeys) -> Result<Page<ApiKey>, Error> {
        let now = self.now();
        let limit = page_size(request.limit)?;
        let query = KeyQuery {
            status: request.status,
            name_prefix: match request.name_prefix.as_deref() {
                None | Some("") => None,
                // No name holds one (names refuse control characters), and
                // PostgreSQL's text cannot.
                Some(p) if p.chars().any(char::is_control) => {
                    return Err(Error::Invalid(
                        "`name_prefix` must not contain control characters".into(),
                    ));
                }
                Some(p) => Some(p.to_owned()),
            },
            cursor: request
                .cursor
                .as_deref()
                .map(|c| Cursor::decode(c, Listing::Keys))
                .transpose()?,
            limit: limit + 1,
            now,
        };
        let mut rows = self.inner.store.list(&query).await?;
        let next_cursor = next_page(&mut rows, limit, Listing::Keys, |r| {
            Cursor::after(r.created_at, r.id.0)
        });
        Ok(Page {
            items: rows.iter().map(|r| self.api_key(r, now)).collect(),
            next_cursor,
        })
    }

    /// Deletes the `auth.failed` events older than `older_than` (by the
    /// runtime's clock), and says how many. The audit log keeps everything
    /// else for ever: key lifecycle events are few, and the compromise walk
    /// reads who minted what from them. Refusals are the bulk (a server
    /// writes up to ten a second for keys no one holds, by default, plus
    /// those of known keys): run this from a timer or a cron job (`scopekey
    /// prune --auth-failures-older-than 90d`). It deletes
    /// [`PRUNE_BATCH`] events a statement, each its own transaction, so
    /// writers (a revocation) wait for one batch at a time. On PostgreSQL,
    /// two pruners at once share the work: each passes over the events the
    /// other is deleting, and counts only its own (a pruner whose
    /// transaction then rolls back leaves its batch for the next run). A
    /// negative `older_than` is invalid.
    pub async fn prune_auth_failures(&self, older_than: Duration) -> Result<u64, Error> {
        if older_than.is_negative() {
            return Err(Error::Invalid("`older_than` must not be negative".into()));
        }
        let before = self.now().checked_sub(older_than).ok_or_else(|| {
            Error::Invalid("`older_than` reaches before the calendar's start".into())
        })?;
        let mut deleted = 0;
        loop {
            let batch = self
                .inner
                .store
                .delete_events_before(event_type::AUTH_FAILED, before, PRUNE_BATCH)
                .await?;
            deleted += batch;
            if batch < u64::from(PRUNE_BATCH) {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, %before, "pruned auth.failed events");
        }
        Ok(deleted)
    }

    /// A page of the audit log (of one key, or all), newest first.
    pub async fn events(&self, request: &ListEvents) -> Result<Page<AuditEvent>, Error> {
        let limit = page_size(request.limit)?;
        self.flush_auth_failures().await;
        if let Some(id) = request.key_id
            && self.inner.store.get(id).await?.is_none()
        {
            return Err(Error::NotFound(id.to_string()));
        }
        let query = EventQuery {
            key_id: request.key_id,
            cursor: request
                .cursor
                .as_deref()
                .map(|c| Cursor::decode(c, Listing::Events))
                .transpose()?,
            limit: limit + 1,
        };
        let mut rows = self.inner.store.list_events(&query).await?;
        let next_cursor = next_page(&mut rows, limit, Listing::Events, |e| {
            Cursor::after(e.at, e.id)
        });
        Ok(Page {
            items: rows,
            next_cursor,
        })
    }

    /// The rotation lineage of a key, oldest first: its ancestors through
    /// `parent_key_id`, itself, and its successors. A cycle in corrupted data
    /// ends the walk instead of looping.
    pub async fn lineage(&self, id: KeyId) -> Result<Vec<ApiKey>, Error> {
        let now = self.now();
        let store = &self.inner.store;
        let me = store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let mut seen = HashSet::from([me.id]);
        let mut ancestors = Vec::new();
        let mut cursor = me.parent_key_id;
        while let Some(parent_id) = cursor {
            if !seen.insert(parent_id) {
                tracing::warn!(key_id = %id, "cycle in key lineage; stopping the walk");
                break;
            }
            let Some(parent) = store.get(parent_id).await? else {
                break;
            };
            cursor = parent.parent_key_id;
            ancestors.push(parent);
        }
        ancestors.reverse();
        let mut out: Vec<ApiKey> = ancestors.iter().map(|r| self.api_key(r, now)).collect();
        out.push(self.api_key(&me, now));
        out.extend(self.successors_after(id, seen, now).await?);
        Ok(out)
    }

    /// The keys a key was rotated into, oldest first: its successor, that
    /// one's, and so on (empty for a key never rotated or not stored). A
    /// cycle in corrupted data ends the walk.
    pub async fn successors(&self, id: KeyId) -> Result<Vec<ApiKey>, Error> {
        self.successors_after(id, HashSet::from([id]), self.now())
            .await
    }

    /// The successors of `id`, not revisiting the keys in `seen`.
    async fn successors_after(
        &self,
        id: KeyId,
        mut seen: HashSet<KeyId>,
        now: OffsetDateTime,
    ) -> Result<Vec<ApiKey>, Error> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        let mut next = store.successor(id).await?;
        while let Some(child) = next {
            if !seen.insert(child.id) {
                tracing::warn!(key_id = %id, "cycle in key lineage; stopping the walk");
                break;
            }
            next = store.successor(child.id).await?;
            out.push(self.api_key(&child, now));
        }
        Ok(out)
    }

    /// Writes the pending last-used times in one batch (on SQLite, one
    /// transaction per 1,000 keys). Call it on shutdown;
    /// [`ScopeKey::spawn_last_used_flusher`] calls it periodically.
    pub async fn flush_last_used(&self) -> Result<(), Error> {
        let batch = self.inner.verifier.take_last_used();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.inner.store.touch_last_used(&batch).await {
            self.inner.verifier.restore_last_used(batch);
            return Err(e.into());
        }
        self.inner.verifier.written(&batch);
        Ok(())
    }

    /// Flushes last-used times every `interval` until the returned task is
    /// aborted (at most one write per key per interval). An interval under
    /// [`MIN_FLUSH_INTERVAL`] (zero, say) is raised to it, with a warning.
    pub fn spawn_last_used_flusher(
        &self,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        if interval < MIN_FLUSH_INTERVAL {
            tracing::warn!(?interval, minimum = ?MIN_FLUSH_INTERVAL, "last-used flush interval too short; raised");
        }
        let interval = interval.max(MIN_FLUSH_INTERVAL);
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.flush_last_used().await {
                    tracing::warn!(error = %e, "could not flush last-used times");
                }
            }
        })
    }

    /// Listens for revocations and rotations made by other processes sharing
    /// the store and drops their cache entries at once (PostgreSQL:
    /// LISTEN/NOTIFY). When the feed's connection is lost, the whole cache
    /// is dropped once the feed listens again (notifications sent meanwhile
    /// are lost; dropping it only after reconnecting leaves no gap), and
    /// after each failed attempt while it cannot reconnect (attempts 500 ms
    /// apart, doubling to 30 s while they fail); the cache lifetime stays
    /// the backstop. The cache is dropped once too when the
    /// feed starts listening (what was cached before may have changed
    /// unheard). A connection that dies without a word is found by the
    /// feed's check of a quiet connection (PostgreSQL: within 6 s,
    /// `store::postgres::FEED_QUIET_CHECK` + `FEED_ANSWER_WITHIN`). Returns `None` on
    /// stores without a feed (SQLite), where the cache lifetime alone bounds
    /// staleness.
    pub async fn spawn_change_listener(
        &self,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
        let Some(mut feed) = self.inner.store.changes().await? else {
            return Ok(None);
        };
        // Listening now: what was cached before may have changed unheard.
        self.invalidate_cache();
        let this = self.clone();
        Ok(Some(tokio::spawn(async move {
            // Recent failures: the wait before the next attempt doubles from
            // 500 ms up to 30 s (an outage is not hammered, and each attempt
            // on a path that went silent may leave a connection behind until
            // the kernel gives up on it). A notification heard, or five
            // minutes without a failure, starts it over; listening again
            // (a resync) does not, since a path may take a LISTEN and then
            // go silent.
            let mut failures = 0u32;
            let mut last_failure: Option<std::time::Instant> = None;
            loop {
                let next = feed.next().await;
                if matches!(next, Ok(Change::Key(_)))
                    || last_failure
                        .is_some_and(|t| t.elapsed() > std::time::Duration::from_secs(300))
                {
                    failures = 0;
                }
                match next {
                    Ok(Change::Key(hash)) => this.inner.verifier.invalidate(&hash),
                    Ok(Change::Resync) => {
                        tracing::warn!(
                            "key change feed lost its connection; dropping the verification cache"
                        );
                        this.invalidate_cache();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key change feed failed; dropping the verification cache");
                        this.invalidate_cache();
                        let wait = std::time::Duration::from_millis(500)
                            .saturating_mul(1 << failures.min(6))
                            .min(std::time::Duration::from_secs(30));
                        failures = failures.saturating_add(1);
                        last_failure = Some(std::time::Instant::now());
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        })))
    }

    /// Drops every cached verification (e.g. after losing a change feed).
    pub fn invalidate_cache(&self) {
        self.inner.verifier.invalidate_all();
    }
}

/// Builds, for an automatic rotation, the outbox rows that carry the
/// successor (its record, its plaintext, its `key.rotated` event).
pub(crate) type DeliverSuccessor<'a> = dyn FnOnce(
        &KeyRecord,
        &crate::key::Plaintext,
        &AuditEvent,
    ) -> Result<Vec<crate::store::OutboxDelivery>, Error>
    + Send
    + 'a;

/// Whether `actor` may rotate the key `id` at all: the system, the key
/// itself, or a key holding `api_keys:write` ([`Error::Forbidden`]
/// otherwise). [`ScopeKey::rotate`] checks it first; a route can check it
/// before it reads a request body. The rotation itself then checks that
/// another key's caller covers every scope of the key it rotates, and of
/// the successor it asks for.
pub fn may_rotate(actor: Actor<'_>, id: KeyId) -> Result<(), Error> {
    match actor {
        Actor::Key(p) if p.id != id && !p.grants().covers_str(SCOPE_WRITE) => Err(
            Error::Forbidden(format!("rotating another key needs `{SCOPE_WRITE}`")),
        ),
        _ => Ok(()),
    }
}

fn check_period(period: Duration) -> Result<Duration, Error> {
    if period < Duration::SECOND || period > MAX_ROTATION_PERIOD {
        return Err(Error::Invalid(format!(
            "`rotation_period_seconds` must be between 1 and {}",
            MAX_ROTATION_PERIOD.whole_seconds()
        )));
    }
    Ok(Duration::seconds(period.whole_seconds()))
}

/// Events [`ScopeKey::prune_auth_failures`] deletes a statement.
pub const PRUNE_BATCH: u32 = 1_000;

/// Runs `change` (a store change and the cache invalidation after it) in a
/// task of its own and waits for it: dropping the waiting future (a client
/// that hung up, a timeout) no longer stops the change between its commit
/// and the invalidation. A panic in it resumes here.
async fn to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    use tracing::Instrument;
    match tokio::spawn(change.in_current_span()).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Internal(format!("a key change was stopped: {e}"))),
    }
}

/// An absolute `https` URL (or `http`, if `insecure`) without whitespace,
/// control characters or user information, whose host is neither
/// `localhost` nor an IP address in a loopback, private, link-local or
/// unspecified range, on one of `ports` (unless `insecure`, both). Host
/// names are not resolved here:
/// the notifier resolves them at every delivery and connects only to public
/// addresses (see the `notify` module). A URL holding a key is refused as
/// free text holding one is.
fn check_webhook_url(url: &str, insecure: bool, ports: &[u16]) -> Result<String, Error> {
    #[cfg(not(feature = "webhooks"))]
    let _ = ports;
    let bad = |why: &str| Error::Invalid(format!("`rotation_webhook_url` {why}"));
    if url.len() > MAX_WEBHOOK_URL_LEN {
        return Err(bad(&format!("is longer than {MAX_WEBHOOK_URL_LEN} bytes")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    // A key in a query string (`?api_key=sk_…`) would be stored, listed and
    // sent in notices as it is: refused, and not repeated back.
    if crate::key::holds_a_key(url) {
        return Err(holds_a_key("rotation_webhook_url"));
    }
    let lower = url.to_ascii_lowercase();
    let rest = match (
        lower.strip_prefix("https://"),
        lower.strip_prefix("http://"),
    ) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if insecure => rest,
        (None, Some(_)) => {
            return Err(bad(
                "must be https: the successor's plaintext is posted to it",
            ));
        }
        _ => return Err(bad("must be an absolute https:// URL")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("must name a host (and no user information)"));
    }
    // The host as the HTTP client will read it: `127.1`, `0x7f000001` and
    // `[::ffff:127.0.0.1]` are IP addresses too. (Without the `webhooks`
    // feature no key can opt in to automatic rotation: creating one is
    // refused further on.)
    #[cfg(feature = "webhooks")]
    {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
        let Some(host) = parsed.host_str() else {
            return Err(bad("must name a host"));
        };
        let blocked = match host_ip(&parsed) {
            Some(ip) => internal(ip),
            None => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if blocked && !insecure {
            return Err(bad(
                "must not point at localhost or an internal or reserved address (loopback, private, link-local, ...)",
            ));
        }
        let port = parsed.port_or_known_default().unwrap_or_default();
        if !insecure && !ports.contains(&port) {
            let allowed: Vec<String> = ports.iter().map(u16::to_string).collect();
            return Err(bad(&format!(
                "must use a port this service allows ({}), not {port}",
                allowed.join(", ")
            )));
        }
    }
    Ok(url.to_owned())
}

/// Addresses a key's own webhook must not target: anything but the public
/// unicast internet. IPv4: "this network" (`0.0.0.0/8`), private, shared
/// (CGNAT), loopback, link-local, IETF protocol assignments
/// (`192.0.0.0/24`), documentation, the 6to4 relay, benchmarking
/// (`198.18.0.0/15`), multicast, reserved and broadcast (`240.0.0.0/4`).
/// IPv6: unspecified, loopback, discard-only, Teredo, documentation,
/// local-use NAT64, unique-local, link-local, site-local and multicast; and
/// an IPv4 address embedded in IPv6 (mapped, compatible, translated, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) is judged as that IPv4 address. (A
/// network's own NAT64 prefix cannot be recognised here.)
#[cfg(feature = "webhooks")]
pub(crate) fn internal(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && (c == 0 || c == 2))
                || (a == 192 && b == 88 && c == 99)
                || (a == 198 && (b == 18 || b == 19))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let embedded = match s {
                // Mapped (::ffff:a.b.c.d) and compatible (::a.b.c.d).
                _ if ip.to_ipv4().is_some() => ip.to_ipv4(),
                // Translated (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d).
                [0, 0, 0, 0, 0xffff, 0, c, d] | [0x64, 0xff9b, 0, 0, 0, 0, c, d] => Some(v4(c, d)),
                // 6to4: 2002:aabb:ccdd::/48.
                [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
                _ => None,
            };
            if let Some(embedded) = embedded {
                return internal(embedded.into());
            }
            ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || s[..4] == [0x100, 0, 0, 0]
                || s[..2] == [0x2001, 0]
                || s[..2] == [0x2001, 0xdb8]
                || s[..3] == [0x64, 0xff9b, 1]
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
        }
    }
}

/// The host of `url` if it is an IP address (the URL parser normalises
/// IPv4 hosts such as `127.1` and `0x7f000001` to dotted decimal, and keeps
/// IPv6 ones in brackets); `None` for a name.
#[cfg(feature = "webhooks")]
pub(crate) fn host_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn in_catalogue(catalogue: &Grants, grant: &Grant) -> bool {
    if catalogue.includes(grant) {
        return true;
    }
    // A wildcard grant is fine if it covers at least one catalogued scope.
    catalogue
        .as_slice()
        .iter()
        .any(|entry| grant.includes(entry))
}

/// Why a request presenting this key is refused at `now` (revoked or
/// expired), if it is.
fn refusal(record: &KeyRecord, now: OffsetDateTime) -> Option<VerifyError> {
    match record.status_at(now) {
        Status::Revoked => Some(VerifyError::Revoked),
        Status::Expired => Some(VerifyError::Expired),
        Status::Active | Status::Rotating => None,
    }
}

fn rotatable(record: &KeyRecord, now: OffsetDateTime) -> Result<(), Error> {
    let why = match record.status_at(now) {
        Status::Active => return Ok(()),
        Status::Rotating => "it already has a successor",
        Status::Revoked => "it is revoked",
        Status::Expired => "it is expired",
    };
    Err(Error::Conflict(format!(
        "key {} cannot be rotated: {why}",
        record.id
    )))
}

fn missing(asked: &Grants, held: &Grants) -> String {
    asked
        .as_slice()
        .iter()
        .filter(|g| !held.includes(g))
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn escalation(asked: &Grants, held: &Grants) -> Error {
    Error::Forbidden(format!(
        "the calling key cannot grant scopes it does not hold: {}",
        missing(asked, held)
    ))
}

fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.chars().count() > 500 || reason.chars().any(unprintable) {
        return Err(Error::Invalid(
            "`reason` must be at most 500 characters, without control, invisible or \
             text-direction characters"
                .into(),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String, Error> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "`name` must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if trimmed.chars().any(unprintable) {
        return Err(Error::Invalid(
            "`name` must not contain control, invisible or text-direction characters".into(),
        ));
    }
    if crate::key::holds_a_key(trimmed) {
        return Err(holds_a_key("name"));
    }
    Ok(trimmed.to_owned())
}

/// Text a person typed that holds a well-formed key: refused, not stored
/// (keys are kept only as hashes), and not repeated back.
pub(crate) fn holds_a_key(field: &str) -> Error {
    Error::Invalid(format!(
        "`{field}` holds what is shaped like an API key; keys are never stored, so remove it \
         (and if it is a live key, treat it as leaked)"
    ))
}

/// Characters a name or reason may not hold: control characters, and those
/// that hide text or reorder it where it is shown (zero-width space,
/// direction marks, embeddings, overrides and isolates, line and paragraph
/// separators, the byte order mark, soft hyphens, invisible operators,
/// fillers, interlinear annotations, tag characters, and the other format
/// characters (Unicode's category Cf: prepended number marks, shorthand
/// and musical format controls, …)): a name like `backup\u{202E}nimda` would read as
/// another in `keys list` and the audit log. Joiners (U+200C, U+200D),
/// which scripts and emoji need, are allowed.
pub(crate) fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

fn check_metadata(metadata: Option<Map<String, Value>>) -> Result<Map<String, Value>, Error> {
    let metadata = metadata.unwrap_or_default();
    // PostgreSQL's `jsonb` cannot hold a NUL character; SQLite could, but a
    // key must mean the same on both.
    if any_text(&metadata, &|s| s.contains('\0')) {
        return Err(Error::Invalid(
            "`metadata` must not contain NUL characters (\\u0000)".into(),
        ));
    }
    // Serializing a Map of Values cannot fail.
    let size = serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(0);
    if size > MAX_METADATA_BYTES {
        return Err(Error::Invalid(format!(
            "`metadata` is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES}"
        )));
    }
    // Scanned for keys once its size is known to be bounded.
    if any_text(&metadata, &crate::key::holds_a_key) {
        return Err(holds_a_key("metadata"));
    }
    Ok(metadata)
}

/// Whether `test` holds for any member name or string of `map`, at any
/// depth.
fn any_text(map: &Map<String, Value>, test: &dyn Fn(&str) -> bool) -> bool {
    fn in_value(v: &Value, test: &dyn Fn(&str) -> bool) -> bool {
        match v {
            Value::String(s) => test(s),
            Value::Array(items) => items.iter().any(|v| in_value(v, test)),
            Value::Object(map) => any_text(map, test),
            _ => false,
        }
    }
    map.iter().any(|(k, v)| test(k) || in_value(v, test))
}

fn page_size(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n @ 1..=MAX_PAGE_SIZE) => Ok(n),
        Some(_) => Err(Error::Invalid(format!(
            "`limit` must be between 1 and {MAX_PAGE_SIZE}"
        ))),
    }
}

/// Trims the look-ahead row and makes the cursor for the next page.
fn next_page<T>(
    rows: &mut Vec<T>,
    limit: u32,
    listing: Listing,
    cursor: impl Fn(&T) -> Cursor,
) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| cursor(last).encode(listing))
    } else {
        None
    }
}

/// A UUID v7 stamped with the runtime clock's time, so ids sort with
/// `created_at` even when tests move the clock.
fn uuid_at(now: OffsetDateTime) -> Uuid {
    let nanos = now.unix_timestamp_nanos();
    let secs = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, sub))
}

fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .map_or(Value::Null, Value::String)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::sqlite::SqliteStore;

    /// A runtime on an in-memory store, on a manual clock, with one key.
    async fn one_key(cache_capacity: u64) -> (ScopeKey, ManualClock, CreatedKey) {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let clock = ManualClock::starting_now();
        let keys = ScopeKey::builder(store)
            .clock(clock.clone())
            .cache_capacity(cache_capacity)
            .build();
        keys.migrate().await.unwrap();
        let k = keys
            .create(NewKey::new("k", ["a:b"]), Actor::System)
            .await
            .unwrap();
        (keys, clock, k)
    }

    /// A key's own webhook names an allowed port (443 unless the builder
    /// allows others); insecure mode allows any.
    #[cfg(feature = "webhooks")]
    #[tokio::test]
    async fn a_webhook_port_must_be_allowed() {
        let secret: crate::notify::signature::Secret =
            "whsec_ZGVtbyB3ZWJob29rIHNlY3JldCwgZm9yIHRlc3Rz"
                .parse()
                .unwrap();
        let runtime = |ports: Option<Vec<u16>>, insecure: bool| {
            let secret = secret.clone();
            async move {
                let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
                let mut builder = ScopeKey::builder(store)
                    .rotation_webhook_secret(secret)
                    .allow_insecure_rotation_webhooks(insecure);
                if let Some(ports) = ports {
                    builder = builder.rotation_webhook_ports(ports);
                }
                let keys = builder.build();
                keys.migrate().await.unwrap();
                keys
            }
        };
        let create = |keys: ScopeKey, url: &'static str| async move {
            let new = NewKey::new("auto", ["a:b"])
                .rotate_every(Duration::days(30))
                .rotation_webhook(url);
            keys.create(new, Actor::System).await.map(|_| ())
        };
        let by_default = runtime(None, false).await;
        for url in [
            "https://hooks.example.com/rotated",
            "https://hooks.example.com:443/rotated",
        ] {
            create(by_default.clone(), url).await.unwrap();
        }
        let Err(Error::Invalid(message)) =
            create(by_default.clone(), "https://hooks.example.com:8443/rotated").await
        else {
            panic!("port 8443 accepted by default");
        };
        assert!(
            message.contains("port this service allows (443), not 8443"),
            "{message}"
        );
        let wider = runtime(Some(vec![443, 8443]), false).await;
        create(wider, "https://hooks.example.com:8443/rotated")
            .await
            .unwrap();
        let insecure = runtime(None, true).await;
        create(insecure, "https://hooks.example.com:8443/rotated")
            .await
            .unwrap();
    }

    /// A key pasted into a rotation webhook's URL (as a query parameter,
    /// say) is refused, not stored, and not repeated back; nothing is
    /// created.
    #[tokio::test]
    async fn a_webhook_url_holding_a_key_is_refused() {
        let (keys, _, k) = one_key(100).await;
        let pasted = k.plaintext.expose_secret();
        for url in [
            format!("https://hooks.example.com/rotate?api_key={pasted}"),
            format!("https://hooks.example.com/{pasted}"),
        ] {
            let mut new = NewKey::new("auto", ["a:b"]);
            new.rotation_period = Some(Duration::days(90));
            new.rotation_webhook_url = Some(url);
            let Err(Error::Invalid(message)) = keys.create(new, Actor::System).await else {
                panic!("a URL holding a key was accepted");
            };
            assert!(message.contains("`rotation_webhook_url`"), "{message}");
            assert!(message.contains("shaped like an API key"), "{message}");
            assert!(!message.contains(&pasted[3..20]), "{message}");
        }
        let listed = keys.list(&ListKeys::default()).await.unwrap().items;
        assert_eq!(listed.len(), 1, "nothing created");
    }

    /// The pending last-use list keeps one time per key, however many cache
    /// entries the key went through since the last flush (a new one each
    /// time the old one expires, or always with a cache of capacity 0), and
    /// hands over the latest.
    #[tokio::test]
    async fn pending_last_use_stays_one_per_key() {
        for capacity in [0, 100] {
            let (keys, clock, k) = one_key(capacity).await;
            let plaintext = k.plaintext.expose_secret();
            let mut last = keys.now();
            for _ in 0..50 {
                last = keys.now();
                keys.verify(plaintext).await.unwrap();
                assert!(keys.verify_cached(plaintext).is_some() || capacity == 0);
                // The entry expires: the next verification reads the store
                // and caches a new one.
                clock.advance(Duration::seconds(2));
            }
            assert_eq!(keys.inner.verifier.pending_len(), 1, "capacity {capacity}");
            assert_eq!(
                keys.inner.verifier.take_last_used(),
                vec![(k.key.id, last)],
                "capacity {capacity}"
            );
            assert_eq!(keys.inner.verifier.pending_len(), 0);
        }
    }

    /// Made-up keys (well formed, unknown to the store), many more than
    /// the cache holds, evict only each other: the verdict of a key in use
    /// stays cached, and the last made-up ones are cached too.
    #[tokio::test]
    async fn made_up_keys_do_not_evict_keys_in_use() {
        let (keys, _, k) = one_key(1_000).await;
        let plaintext = k.plaintext.expose_secret();
        keys.verify(plaintext).await.unwrap();
        let mut made_up = Vec::new();
        for _ in 0..5_000 {
            let key = keys.key_format().generate().unwrap();
            let refused = keys.verify(key.expose_secret()).await.unwrap_err();
            assert!(matches!(refused, VerifyError::Unknown), "{refused:?}");
            made_up.push(key);
        }
        assert!(keys.verify_cached(plaintext).is_some(), "evicted");
        let cached = made_up
            .iter()
            .rev()
            .take(20)
            .filter(|key| {
                keys.inner.verifier.is_cached(
                    &keys.key_format().hash(key.expose_secret()),
                    keys.inner.clock.now_unix_micros(),
                )
            })
            .count();
        assert!(cached > 0, "no made-up key cached");
    }

    /// A use a flush has taken is still shown until the flush reports it
    /// written; a flush that never reports (cancelled mid-write) leaves it
    /// to the next one.
    #[tokio::test]
    async fn a_use_being_flushed_stays_shown() {
        let (keys, _, k) = one_key(100).await;
        let id = k.key.id;
        keys.verify(k.plaintext.expose_secret()).await.unwrap();
        let used = Some(keys.now());
        let taken = keys.inner.verifier.take_last_used();
        assert_eq!(taken, vec![(id, keys.now())]);
        assert_eq!(keys.get(id).await.unwrap().last_used_at, used);
        let stored = || async {
            keys.inner
                .store
                .get(id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
        };
        assert_eq!(stored().await, None);
        // That flush is dropped; the next one writes the time.
        keys.flush_last_used().await.unwrap();
        assert_eq!(stored().await, used);
        assert_eq!(keys.get(id).await.unwrap().last_used_at, used);
        assert_eq!(keys.inner.verifier.take_last_used(), vec![]);
        assert_eq!(keys.inner.verifier.pending_last_used(id), None);
    }

    /// A flush's batch comes in key order, whatever order the keys were
    /// used in: every server writes its rows in one order.
    #[tokio::test]
    async fn last_use_batches_come_in_key_order() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let keys = ScopeKey::builder(store).build();
        keys.migrate().await.unwrap();
        let mut created = Vec::new();
        for i in 0..40 {
            let k = keys
                .create(NewKey::new(format!("k{i}"), ["a:b"]), Actor::System)
                .await
                .unwrap();
            created.push(k);
        }
        for k in created.iter().rev() {
            keys.verify(k.plaintext.expose_secret()).await.unwrap();
        }
        let ids: Vec<KeyId> = keys
            .inner
            .verifier
            .take_last_used()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids.len(), 40);
        assert_eq!(ids, sorted);
    }

    async fn builder() -> ScopeKeyBuilder {
        ScopeKey::builder(SqliteStore::connect("sqlite::memory:").await.unwrap())
    }

    /// A zero store timeout would refuse every cache miss as unavailable.
    #[tokio::test]
    async fn too_short_a_store_timeout_is_raised() {
        let zero = builder().await.store_timeout(std::time::Duration::ZERO);
        assert_eq!(zero.verifier.store_timeout, MIN_STORE_TIMEOUT);
        let three = std::time::Duration::from_secs(3);
        assert_eq!(
            builder().await.store_timeout(three).verifier.store_timeout,
            three
        );
    }

    /// A zero interval would panic inside the flusher's task (tokio's
    /// interval refuses it), leaving last-used times unwritten until
    /// shutdown.
    #[tokio::test]
    async fn a_zero_flush_interval_still_flushes() {
        let keys = builder().await.build();
        let flusher = keys.spawn_last_used_flusher(std::time::Duration::ZERO);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!flusher.is_finished(), "the flusher is still running");
        flusher.abort();
    }
}
