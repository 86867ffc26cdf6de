//! The [`Verifier`]: a bounded cache in front of the store, and last-used
//! batching.
//!
//! A verification hashes the presented key and looks the hash up in an
//! in-process cache (see [`crate::cache`]). A hit needs no I/O. A miss reads the store once
//! and caches the answer (including "unknown") for at most the configured
//! lifetime, one second by default, so a revocation made by another process
//! is seen within that bound; a revocation or rotation made through this
//! process drops the entry at once (and an answer read from the store before
//! the revocation is not cached after it). Expiry is judged against the clock at
//! every verification, never against what the cache held. A store failure on
//! a miss is an error, never a pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::cache::{Cache, Hasher, ShardKey};
use crate::clock::{from_unix_micros, unix_micros, unix_micros_ceil};
use crate::error::{StoreError, VerifyError};
use crate::key::{KeyHash, KeyId};
use crate::model::{KeyRecord, Principal};
use crate::scope::Grants;
use crate::store::Store;

/// What the cache remembers about a hash: the key's verdict-relevant fields,
/// or that no key has it.
#[derive(Debug)]
enum Cached {
    Unknown,
    Known(Known),
}

#[derive(Debug)]
struct Known {
    principal: Principal,
    revoked: bool,
    /// `principal.expires_at` in microseconds, rounded up (see
    /// [`unix_micros_ceil`]), so expiry is one integer comparison.
    expires_at: Option<i64>,
    /// The latest use not yet handed to a flush ([`NOT_USED`] if none), in
    /// microseconds since the Unix epoch.
    last_used: AtomicI64,
}

/// No use pending in [`Known::last_used`].
const NOT_USED: i64 = i64::MIN;

impl Cached {
    fn from_record(record: Option<KeyRecord>) -> Result<Self, StoreError> {
        let Some(record) = record else {
            return Ok(Self::Unknown);
        };
        let grants = Grants::parse_all(&record.scopes).map_err(|e| {
            StoreError::msg(format!(
                "key {} has an invalid stored scope: {e}",
                record.id
            ))
        })?;
        Ok(Self::Known(Known {
            revoked: record.revoked_at.is_some(),
            expires_at: record.expires_at.map(unix_micros_ceil),
            principal: Principal {
                id: record.id,
                name: record.name.into(),
                grants: Arc::new(grants),
                expires_at: record.expires_at,
            },
            last_used: AtomicI64::new(NOT_USED),
        }))
    }
}

/// Cache sizing and lifetimes.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// How long an entry read from the store may be served (default 1 s).
    pub cache_ttl: Duration,
    /// How many hashes the cache holds at most (default 100,000; 0 caches
    /// nothing).
    pub cache_capacity: u64,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(1),
            cache_capacity: 100_000,
        }
    }
}

impl ShardKey for KeyHash {
    fn spread(&self) -> u64 {
        // A BLAKE3 output: any eight bytes are well spread.
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, g, h])
    }
}

/// Cache in front of the store, plus the pending last-used times.
pub(crate) struct Verifier {
    cache: Cache<KeyHash, Arc<Cached>>,
    /// Entries whose `last_used` was set since the last flush (each once).
    used: Mutex<Vec<Arc<Cached>>>,
    /// Times whose write failed, to be retried with the next flush.
    unwritten: Mutex<HashMap<KeyId, OffsetDateTime, Hasher>>,
    failures_second: AtomicI64,
    failures_in_second: AtomicU32,
}

impl Verifier {
    pub(crate) fn new(config: &VerifierConfig) -> Self {
        Self {
            cache: Cache::new(config.cache_capacity, config.cache_ttl),
            used: Mutex::new(Vec::new()),
            unwritten: Mutex::new(HashMap::default()),
            failures_second: AtomicI64::new(0),
            failures_in_second: AtomicU32::new(0),
        }
    }

    /// The cache alone: the principal if the hash's verdict is cached and
    /// the key is valid at `now` (microseconds since the Unix epoch;
    /// recording its use); `None` on a miss or a refusal, which the full
    /// [`verify`](Self::verify) then handles.
    pub(crate) fn verify_cached(&self, hash: &KeyHash, now: i64) -> Option<Principal> {
        self.cache
            .get_with(hash, now, |entry| self.judge(entry, now).ok())
            .flatten()
    }

    /// Looks the hash up, cache first; judges revocation and expiry at `now`.
    pub(crate) async fn verify(
        &self,
        store: &dyn Store,
        hash: KeyHash,
        now: OffsetDateTime,
    ) -> Result<Principal, VerifyError> {
        let now = unix_micros(now);
        let entry = match self.cache.get(&hash, now) {
            Some(entry) => entry,
            None => {
                let ticket = self.cache.ticket(&hash);
                let entry = Arc::new(Cached::from_record(store.find_by_hash(&hash).await?)?);
                self.cache.insert(hash, entry.clone(), now, ticket);
                entry
            }
        };
        self.judge(&entry, now)
    }

    /// The verdict on a cached entry at `now`: revocation, then expiry
    /// (judged at every call, never at caching). A valid key's use is
    /// recorded. Short, and uses no cache shard: it may run under one's
    /// lock.
    fn judge(&self, entry: &Arc<Cached>, now: i64) -> Result<Principal, VerifyError> {
        let known = match &**entry {
            Cached::Unknown => return Err(VerifyError::Unknown),
            Cached::Known(known) => known,
        };
        if known.revoked {
            return Err(VerifyError::Revoked);
        }
        if known.expires_at.is_some_and(|e| e <= now) {
            return Err(VerifyError::Expired);
        }
        // The latest time wins (concurrent verifications may arrive out of
        // order); the first use since the last flush enlists the entry.
        if known.last_used.fetch_max(now, Ordering::Relaxed) == NOT_USED {
            lock(&self.used).push(Arc::clone(entry));
        }
        Ok(known.principal.clone())
    }

    /// The key id behind a cached hash, for failure reports.
    pub(crate) fn cached_id(&self, hash: &KeyHash, now: OffsetDateTime) -> Option<KeyId> {
        match self.cache.get(hash, unix_micros(now)).as_deref() {
            Some(Cached::Known(known)) => Some(known.principal.id),
            _ => None,
        }
    }

    /// Forgets a hash: the next verification reads the store.
    pub(crate) fn invalidate(&self, hash: &KeyHash) {
        self.cache.invalidate(hash);
    }

    /// Forgets every cached verdict.
    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Takes the pending last-used times: per key, the latest.
    pub(crate) fn take_last_used(&self) -> Vec<(KeyId, OffsetDateTime)> {
        let used = std::mem::take(&mut *lock(&self.used));
        let mut latest = std::mem::take(&mut *lock(&self.unwritten));
        for entry in used {
            let Cached::Known(known) = &*entry else {
                continue;
            };
            // A use after this swap enlists the entry again, for the next
            // flush.
            let at = known.last_used.swap(NOT_USED, Ordering::Relaxed);
            let Some(at) = from_unix_micros(at) else {
                continue;
            };
            latest
                .entry(known.principal.id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        latest.into_iter().collect()
    }

    /// Puts back times whose write failed, keeping any newer ones.
    pub(crate) fn restore_last_used(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        let mut unwritten = lock(&self.unwritten);
        for (id, at) in batch {
            unwritten
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
    }

    /// Whether another `auth.failed` event may be written in the current
    /// second (at most `limit` a second, so a flood of bad keys cannot flood
    /// the audit log).
    pub(crate) fn admit_failure_event(&self, now: OffsetDateTime, limit: u32) -> bool {
        let second = now.unix_timestamp();
        if self.failures_second.swap(second, Ordering::Relaxed) != second {
            self.failures_in_second.store(0, Ordering::Relaxed);
        }
        self.failures_in_second.fetch_add(1, Ordering::Relaxed) < limit
    }
}

/// The pending last-use lists hold plain values: a panic elsewhere cannot
/// leave them in a state worth refusing.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
