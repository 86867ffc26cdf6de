//! The [`Verifier`]: a bounded cache in front of the store, and last-used
//! batching.
//!
//! A verification hashes the presented key and looks the hash up in an
//! in-process cache (moka). A hit needs no I/O. A miss reads the store once
//! and caches the answer (including "unknown") for at most the configured
//! lifetime, one second by default, so a revocation made by another process
//! is seen within that bound; a revocation or rotation made through this
//! process drops the entry at once. Expiry is judged against the clock at
//! every verification, never against what the cache held. A store failure on
//! a miss is an error, never a pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use time::OffsetDateTime;

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
    Known { principal: Principal, revoked: bool },
}

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
        Ok(Self::Known {
            revoked: record.revoked_at.is_some(),
            principal: Principal {
                id: record.id,
                name: record.name.into(),
                grants: Arc::new(grants),
                expires_at: record.expires_at,
            },
        })
    }
}

/// Cache sizing and lifetimes.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// How long an entry read from the store may be served (default 1 s).
    pub cache_ttl: Duration,
    /// How many hashes the cache holds at most (default 100,000).
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

/// The maps' hasher: foldhash, seeded at random per process.
type Hasher = foldhash::fast::RandomState;

/// Cache in front of the store, plus the pending last-used times.
pub(crate) struct Verifier {
    cache: Cache<KeyHash, Arc<Cached>, Hasher>,
    last_used: Mutex<HashMap<KeyId, OffsetDateTime, Hasher>>,
    failures_second: AtomicI64,
    failures_in_second: AtomicU32,
}

impl Verifier {
    pub(crate) fn new(config: &VerifierConfig) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(config.cache_ttl)
                .build_with_hasher(Hasher::default()),
            last_used: Mutex::new(HashMap::default()),
            failures_second: AtomicI64::new(0),
            failures_in_second: AtomicU32::new(0),
        }
    }

    /// The cache alone: the principal if the hash's verdict is cached and
    /// the key is valid at `now` (recording its use); `None` on a miss or a
    /// refusal, which the full [`verify`](Self::verify) then handles.
    pub(crate) fn verify_cached(&self, hash: &KeyHash, now: OffsetDateTime) -> Option<Principal> {
        let entry = self.cache.get(hash)?;
        self.judge(&entry, now).ok()
    }

    /// Looks the hash up, cache first; judges revocation and expiry at `now`.
    pub(crate) async fn verify(
        &self,
        store: &dyn Store,
        hash: KeyHash,
        now: OffsetDateTime,
    ) -> Result<Principal, VerifyError> {
        let entry = match self.cache.get(&hash) {
            Some(entry) => entry,
            None => {
                let entry = Arc::new(Cached::from_record(store.find_by_hash(&hash).await?)?);
                self.cache.insert(hash, entry.clone());
                entry
            }
        };
        self.judge(&entry, now)
    }

    /// The verdict on a cached entry at `now`: revocation, then expiry
    /// (judged at every call, never at caching). A valid key's use is
    /// recorded.
    fn judge(&self, entry: &Cached, now: OffsetDateTime) -> Result<Principal, VerifyError> {
        match entry {
            Cached::Unknown => Err(VerifyError::Unknown),
            Cached::Known { revoked: true, .. } => Err(VerifyError::Revoked),
            Cached::Known { principal, .. } if principal.expires_at.is_some_and(|e| e <= now) => {
                Err(VerifyError::Expired)
            }
            Cached::Known { principal, .. } => {
                // Keep the latest time: concurrent verifications may arrive
                // out of order.
                self.lock_last_used()
                    .entry(principal.id)
                    .and_modify(|t| *t = (*t).max(now))
                    .or_insert(now);
                Ok(principal.clone())
            }
        }
    }

    /// The key id behind a cached hash, for failure reports.
    pub(crate) fn cached_id(&self, hash: &KeyHash) -> Option<KeyId> {
        match self.cache.get(hash).as_deref() {
            Some(Cached::Known { principal, .. }) => Some(principal.id),
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

    /// Takes the pending last-used times.
    pub(crate) fn take_last_used(&self) -> Vec<(KeyId, OffsetDateTime)> {
        std::mem::take(&mut *self.lock_last_used())
            .into_iter()
            .collect()
    }

    /// Puts back times whose write failed, keeping any newer ones.
    pub(crate) fn restore_last_used(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        let mut pending = self.lock_last_used();
        for (id, at) in batch {
            pending.entry(id).or_insert(at);
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

    fn lock_last_used(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, OffsetDateTime, Hasher>> {
        // The map holds plain timestamps: a panic elsewhere cannot leave it
        // in a state worth refusing.
        self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }
}
