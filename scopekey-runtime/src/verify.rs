//! The [`Verifier`]: a bounded cache in front of the store, and last-used
//! batching.
//!
//! A verification hashes the presented key and looks the hash up in an
//! in-process cache (see [`crate::cache`]). A hit needs no I/O. A miss reads
//! the store once and caches the answer (including "unknown", in a pool of
//! its own, an eighth of the capacity, from a capacity of 16) for at most
//! the configured lifetime, one second by default, so a revocation made by
//! another process is seen within that bound; a revocation or rotation made
//! through this process drops the entry at once (and an answer read from the
//! store before the revocation is not cached after it). Expiry is judged
//! against the clock at every verification (on a miss, once the store has
//! answered), never against what the cache held. A store failure on a miss
//! is an error, never a pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::cache::{Cache, Hasher, Pool, ShardKey};
use crate::clock::{Clock, from_unix_micros, unix_micros_ceil};
use crate::error::{StoreError, VerifyError};
use crate::key::{KeyHash, KeyId};
use crate::model::{Principal, VerifyRecord};
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
    /// microseconds since the Unix epoch. Shared with the pending list
    /// while a use is pending, so the list keeps the time alive, not the
    /// entry.
    last_used: Arc<AtomicI64>,
}

/// No use pending in [`Known::last_used`].
const NOT_USED: i64 = i64::MIN;

impl Cached {
    /// Whether this answer may replace `held`, cached for the same hash by
    /// a miss that finished first but may have begun later: never a
    /// revoked key by one not revoked, nor an expiry by a later one (a
    /// key's expiry only ever comes closer: a rotation shortens it), since
    /// then `held` is the newer read. Otherwise a revocation this node has
    /// already seen (from another process, without a notification) could
    /// be served as valid again for the cache's lifetime.
    fn supersedes(&self, held: &Cached) -> bool {
        let (Cached::Known(held), Cached::Known(new)) = (held, self) else {
            return true;
        };
        let later_expiry = match (held.expires_at, new.expires_at) {
            (Some(_), None) => true,
            (Some(held), Some(new)) => new > held,
            (None, _) => false,
        };
        (!held.revoked || new.revoked) && !later_expiry
    }

    fn from_record(record: Option<VerifyRecord>) -> Result<Self, StoreError> {
        let Some(record) = record else {
            return Ok(Self::Unknown);
        };
        let grants = Grants::parse_all(&record.scopes).map_err(|e| {
            StoreError::corrupt(format!(
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
            last_used: Arc::new(AtomicI64::new(NOT_USED)),
        }))
    }
}

/// The verifier's settings: cache sizing and lifetime, and how long it
/// waits for the store. Set them through [`ScopeKeyBuilder`](crate::ScopeKeyBuilder).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// How long an entry read from the store may be served (default 1 s).
    pub cache_ttl: Duration,
    /// How many hashes the cache holds at most (default 100,000; 0 caches
    /// nothing). An eighth of it is kept for hashes no key has, so that a
    /// flood of made-up keys cannot evict the verdicts of keys in use.
    pub cache_capacity: u64,
    /// How long a verification may wait for the store (default 2 s): for a
    /// cache miss's lookup, after which it fails closed as unavailable; for
    /// a refusal's `auth.failed` write (in a task of its own), after which
    /// that task stops waiting.
    pub store_timeout: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(1),
            cache_capacity: 100_000,
            store_timeout: Duration::from_secs(2),
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

/// Why a verification was refused, and the key concerned if one was found
/// (for the audit log).
pub(crate) type Refusal = (VerifyError, Option<KeyId>);

/// Cache in front of the store, plus the pending last-used times.
pub(crate) struct Verifier {
    cache: Cache<KeyHash, Arc<Cached>>,
    /// Per key used since the last flush, the time cell of the cache entry
    /// it was last enlisted from: one per key, however many entries the key
    /// had in the interval (a new one each time its entry expires or is
    /// evicted), so the list is bounded by the keys in use.
    used: Mutex<HashMap<KeyId, Arc<AtomicI64>, Hasher>>,
    /// Times whose write failed, to be retried with the next flush.
    unwritten: Mutex<HashMap<KeyId, OffsetDateTime, Hasher>>,
    /// Times a flush took and has not yet reported written: still shown
    /// meanwhile, and taken again by the next flush if the one that took
    /// them never reports (it was cancelled).
    in_flight: Mutex<HashMap<KeyId, OffsetDateTime, Hasher>>,
    /// `auth.failed` events written this second, for refusals of keys the
    /// store knows (revoked, expired) and for the others (malformed,
    /// unknown) apart: a flood of garbage cannot crowd out the refusals
    /// that name a key.
    named_failures: Mutex<NamedSecond>,
    anonymous_failures: SecondBudget,
    /// The `auth.failed` writes under way (see [`FailureWrites`]).
    failure_writes: Arc<FailureWrites>,
    store_timeout: Duration,
}

/// The `auth.failed` writes under way in tasks of their own: a refusal is
/// answered without waiting for its event, so that how long it takes does
/// not tell a key the store knows (revoked, expired: its first refusal in a
/// second always written) from one it does not (written only within the
/// budget the garbage shares). A reading of the audit log on this runtime
/// first waits for the writes begun before it ([`settled`](Self::settled)),
/// so what this node refused is in what it lists.
#[derive(Debug, Default)]
pub(crate) struct FailureWrites {
    /// Tickets handed out so far, and those whose write has not ended.
    tickets: Mutex<(u64, std::collections::BTreeSet<u64>)>,
    ended: tokio::sync::Notify,
}

/// One write under way: ends its ticket when dropped (written, failed,
/// timed out, or its task dropped with the runtime).
pub(crate) struct FailureWrite {
    writes: Arc<FailureWrites>,
    ticket: u64,
}

impl Drop for FailureWrite {
    fn drop(&mut self) {
        lock(&self.writes.tickets).1.remove(&self.ticket);
        self.writes.ended.notify_waiters();
    }
}

impl FailureWrites {
    /// A ticket for a write about to begin.
    pub(crate) fn begin(self: &Arc<Self>) -> FailureWrite {
        let mut tickets = lock(&self.tickets);
        let ticket = tickets.0;
        tickets.0 += 1;
        tickets.1.insert(ticket);
        FailureWrite {
            writes: Arc::clone(self),
            ticket,
        }
    }

    /// Waits until every write begun before this call has ended (each is
    /// bounded by the store timeout); writes begun meanwhile are not waited
    /// for, so a stream of refusals cannot hold a reader off.
    pub(crate) async fn settled(&self) {
        let before = lock(&self.tickets).0;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let oldest = lock(&self.tickets).1.first().copied();
            if oldest.is_none_or(|t| t >= before) {
                return;
            }
            ended.await;
        }
    }
}

/// The refusals of known keys admitted in the current second: their count,
/// and the keys (each key's first refusal in a second is admitted even past
/// the budget, so one key refused in a loop cannot hide another's, for at
/// most [`MAX_KEYS_A_SECOND`] keys a second).
#[derive(Debug, Default)]
struct NamedSecond {
    second: i64,
    used: u32,
    keys: std::collections::HashSet<KeyId>,
}

/// The most distinct keys whose first refusal in a second is written past
/// the `auth.failed` budget.
const MAX_KEYS_A_SECOND: usize = 64;

/// How far back (in seconds) an event's second may be and still count
/// against the latest second's budget: a refusal stamped when its lookup
/// began, which may take the store timeout (seconds), finishing after a
/// later one. Further back, the clock was stepped back (NTP, a resumed
/// virtual machine): the earlier second starts a count of its own, else
/// the audit log would sample next to nothing until the clock caught up.
const OUT_OF_ORDER_SECONDS: i64 = 60;

/// Whether an event at `second` starts a new count, the latest second
/// seen being `latest`.
fn starts_a_second(second: i64, latest: i64) -> bool {
    second > latest || second < latest.saturating_sub(OUT_OF_ORDER_SECONDS)
}

/// A count of events in the current second: the latest second seen, and
/// how many it admitted.
#[derive(Debug, Default)]
struct SecondBudget(Mutex<(i64, u32)>);

impl SecondBudget {
    /// Whether another event fits in `now`'s second, at most `limit` a
    /// second. The second only moves forward: an event stamped with an
    /// earlier one (a refusal whose lookup began before a later one's
    /// ended) counts against the latest, else refusals finishing out of
    /// order around each second's turn would start the count over and
    /// again.
    fn admit(&self, now: OffsetDateTime, limit: u32) -> bool {
        let second = now.unix_timestamp();
        let mut budget = lock(&self.0);
        if starts_a_second(second, budget.0) {
            *budget = (second, 0);
        }
        budget.1 = budget.1.saturating_add(1);
        budget.1 <= limit
    }
}

impl Verifier {
    pub(crate) fn new(config: &VerifierConfig) -> Self {
        Self {
            cache: Cache::new(config.cache_capacity, config.cache_ttl),
            used: Mutex::new(HashMap::default()),
            unwritten: Mutex::new(HashMap::default()),
            in_flight: Mutex::new(HashMap::default()),
            named_failures: Mutex::default(),
            anonymous_failures: SecondBudget::default(),
            failure_writes: Arc::default(),
            store_timeout: config.store_timeout,
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

    /// Looks the hash up, cache first; judges revocation and expiry by
    /// `clock`: at the start on a hit, once the store has answered on a
    /// miss (a key that expired while its lookup waited is refused).
    pub(crate) async fn verify(
        &self,
        store: &dyn Store,
        hash: KeyHash,
        clock: &dyn Clock,
    ) -> Result<Principal, Refusal> {
        let mut now = clock.now_unix_micros();
        let entry = match self.cache.get(&hash, now) {
            Some(entry) => entry,
            None => {
                let ticket = self.cache.ticket(&hash);
                let read = async {
                    // A store that does not answer (a database host gone
                    // silent, a pool waiting to reconnect) fails closed
                    // in bounded time instead of holding the request.
                    let found = tokio::time::timeout(
                        self.store_timeout,
                        store.find_for_verification(&hash),
                    )
                    .await
                    .map_err(|_| {
                        StoreError::msg(format!(
                            "the verification lookup took longer than {:?}",
                            self.store_timeout
                        ))
                    })??;
                    Cached::from_record(found)
                };
                let entry = Arc::new(read.await.map_err(|e| (e.into(), None))?);
                let read = Arc::clone(&entry);
                // "No such key" goes in the small pool: made-up keys, however
                // many, cannot evict the verdicts of keys in use.
                let pool = match *entry {
                    Cached::Unknown => Pool::Small,
                    Cached::Known(_) => Pool::Main,
                };
                // A newer answer already cached (a later request's, which
                // finished first) is the one to go by.
                let held = self
                    .cache
                    .insert(hash, entry, pool, now, ticket, |held| read.supersedes(held));
                // Stamped with the start (its lifetime counts from before
                // the read), judged at the end (never earlier than the
                // start, should the clock have gone back).
                now = now.max(clock.now_unix_micros());
                held.unwrap_or(read)
            }
        };
        self.judge(&entry, now)
    }

    /// The verdict on a cached entry at `now`: revocation, then expiry
    /// (judged at every call, never at caching). A valid key's use is
    /// recorded. Short, and uses no cache shard: it may run under one's
    /// lock.
    fn judge(&self, entry: &Arc<Cached>, now: i64) -> Result<Principal, Refusal> {
        let known = match &**entry {
            Cached::Unknown => return Err((VerifyError::Unknown, None)),
            Cached::Known(known) => known,
        };
        let id = known.principal.id;
        if known.revoked {
            return Err((VerifyError::Revoked, Some(id)));
        }
        if known.expires_at.is_some_and(|e| e <= now) {
            return Err((VerifyError::Expired, Some(id)));
        }
        // The latest time wins (concurrent verifications may arrive out of
        // order); the first use since the last flush enlists the cell. (A
        // clock saturated at the marker's value records nothing.)
        if known.last_used.fetch_max(now, Ordering::Relaxed) == NOT_USED && now != NOT_USED {
            self.enlist(id, &known.last_used);
        }
        Ok(known.principal.clone())
    }

    /// Puts a key's time cell on the pending list. Another cell of the same
    /// key already there (from an older cache entry) hands its time over,
    /// so nothing is lost and the list keeps one cell per key; should the
    /// older entry be used again, its cell enlists itself the same way.
    fn enlist(&self, id: KeyId, cell: &Arc<AtomicI64>) {
        let mut used = lock(&self.used);
        if let Some(other) = used.insert(id, Arc::clone(cell))
            && !Arc::ptr_eq(&other, cell)
        {
            let at = other.swap(NOT_USED, Ordering::Relaxed);
            if at != NOT_USED {
                cell.fetch_max(at, Ordering::Relaxed);
            }
        }
    }

    /// How long a verification may wait for the store.
    pub(crate) fn store_timeout(&self) -> Duration {
        self.store_timeout
    }

    /// The `auth.failed` writes under way.
    pub(crate) fn failure_writes(&self) -> &Arc<FailureWrites> {
        &self.failure_writes
    }

    /// Forgets a hash: the next verification reads the store.
    pub(crate) fn invalidate(&self, hash: &KeyHash) {
        self.cache.invalidate(hash);
    }

    /// Forgets the verdicts cached for the key `id` (by a scan: for a
    /// change whose outcome is unknown, its hash unread).
    pub(crate) fn invalidate_key(&self, id: KeyId) {
        self.cache.invalidate_matching(
            |entry| matches!(&**entry, Cached::Known(known) if known.principal.id == id),
        );
    }

    /// Forgets every cached verdict.
    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Takes the pending last-used times: per key, the latest, in key order
    /// (the order the stores write them in). They stay visible to
    /// [`pending_last_used`](Self::pending_last_used) until
    /// [`written`](Self::written) or
    /// [`restore_last_used`](Self::restore_last_used) reports on them.
    ///
    /// The three lists are locked in one order (in flight, used,
    /// unwritten) by every reader of more than one, and a time moves
    /// between them only under the in-flight lock, so a reader never finds
    /// it in none.
    pub(crate) fn take_last_used(&self) -> Vec<(KeyId, OffsetDateTime)> {
        let mut in_flight = lock(&self.in_flight);
        let used = std::mem::take(&mut *lock(&self.used));
        let mut latest = std::mem::take(&mut *lock(&self.unwritten));
        for (&id, &at) in in_flight.iter() {
            latest
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        for (id, cell) in used {
            // A use after this swap enlists the cell again, for the next
            // flush.
            let Some(at) = from_unix_micros(cell.swap(NOT_USED, Ordering::Relaxed)) else {
                continue;
            };
            latest
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        in_flight.clone_from(&latest);
        let mut batch: Vec<_> = latest.into_iter().collect();
        batch.sort_unstable_by_key(|&(id, _)| id);
        batch
    }

    /// A flush wrote these times: they are no longer in flight (unless a
    /// later one for the same key was taken meanwhile).
    pub(crate) fn written(&self, batch: &[(KeyId, OffsetDateTime)]) {
        written_in(&mut lock(&self.in_flight), batch);
    }

    /// The latest use of a key on this runtime that no flush has reported
    /// written yet.
    pub(crate) fn pending_last_used(&self, id: KeyId) -> Option<OffsetDateTime> {
        let in_flight = lock(&self.in_flight);
        let in_cache = lock(&self.used)
            .get(&id)
            .and_then(|cell| from_unix_micros(cell.load(Ordering::Relaxed)));
        let unwritten = lock(&self.unwritten).get(&id).copied();
        in_cache.max(unwritten).max(in_flight.get(&id).copied())
    }

    /// Whether a verdict (any) is cached for the hash at `now`.
    #[cfg(test)]
    pub(crate) fn is_cached(&self, hash: &KeyHash, now: i64) -> bool {
        self.cache.get_with(hash, now, |_| ()).is_some()
    }

    /// How many keys have a use pending (for tests of the list's bound).
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        lock(&self.used).len()
    }

    /// Puts back times whose write failed, keeping any newer ones.
    pub(crate) fn restore_last_used(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        let mut in_flight = lock(&self.in_flight);
        let mut unwritten = lock(&self.unwritten);
        for &(id, at) in &batch {
            unwritten
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        written_in(&mut in_flight, &batch);
    }

    /// Whether another `auth.failed` event may be written in the current
    /// second: at most `limit` a second for refusals that name a key
    /// (`key`: revoked, expired) and as many for the others, so that a
    /// flood of bad keys can neither flood the audit log nor hide from it
    /// the refusals of keys it knows; and past the budget, each known key's
    /// first refusal in the second (for up to [`MAX_KEYS_A_SECOND`] keys),
    /// so that one key refused in a loop cannot hide another. None with a
    /// `limit` of 0.
    pub(crate) fn admit_failure_event(
        &self,
        now: OffsetDateTime,
        limit: u32,
        key: Option<KeyId>,
    ) -> bool {
        let Some(key) = key else {
            return self.anonymous_failures.admit(now, limit);
        };
        if limit == 0 {
            return false;
        }
        let mut named = lock(&self.named_failures);
        let second = now.unix_timestamp();
        // Forward only, as for the anonymous budget.
        if starts_a_second(second, named.second) {
            *named = NamedSecond {
                second,
                ..NamedSecond::default()
            };
        }
        let within = named.used < limit;
        named.used = named.used.saturating_add(1);
        let first = named.keys.len() < MAX_KEYS_A_SECOND && named.keys.insert(key);
        within || first
    }
}

/// Drops the in-flight times a flush has reported on, unless a later one
/// for the same key was taken meanwhile.
fn written_in(
    in_flight: &mut HashMap<KeyId, OffsetDateTime, Hasher>,
    batch: &[(KeyId, OffsetDateTime)],
) {
    for (id, at) in batch {
        if in_flight.get(id).is_some_and(|t| t <= at) {
            in_flight.remove(id);
        }
    }
}

/// Locks a mutex that holds plain values (the pending last-use maps, the
/// notifier's resume position): a panic elsewhere cannot leave them in a
/// state worth refusing.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use super::*;

    /// A time moving between the lists (taken by a flush, put back after a
    /// failed write) is found in one of them by every reader meanwhile.
    #[test]
    fn a_use_moving_between_the_lists_is_always_shown() {
        let verifier = Arc::new(Verifier::new(&VerifierConfig::default()));
        let id = KeyId(uuid::Uuid::now_v7());
        let at = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        verifier.restore_last_used(vec![(id, at)]);
        // The reader reads while the time moves back and forth; the mover
        // goes on until the reader has read 100,000 times.
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = std::thread::spawn({
            let (verifier, done, reads) =
                (Arc::clone(&verifier), Arc::clone(&done), Arc::clone(&reads));
            move || {
                while !done.load(Ordering::Relaxed) {
                    let n = reads.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(verifier.pending_last_used(id), Some(at), "read {n}");
                }
            }
        });
        while reads.load(Ordering::Relaxed) < 100_000 && !reader.is_finished() {
            let batch = verifier.take_last_used();
            assert_eq!(batch, [(id, at)]);
            verifier.restore_last_used(batch);
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("the use was always shown");
    }

    /// Refusals finishing out of order around a second's turn (stamped
    /// with the second their lookup began in) do not start the count over:
    /// an earlier second's counts against the latest.
    #[test]
    fn failure_budgets_only_move_forward() {
        let verifier = Verifier::new(&VerifierConfig::default());
        let s = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let next = s + time::Duration::seconds(1);
        let anonymous = (0..1_000)
            .filter(|i| verifier.admit_failure_event(if i % 2 == 0 { s } else { next }, 1, None))
            .count();
        assert_eq!(anonymous, 2, "one in each second");

        let key = KeyId(uuid::Uuid::now_v7());
        let later = next + time::Duration::seconds(1);
        let named = (0..1_000)
            .filter(|i| {
                let at = if i % 2 == 0 { next } else { later };
                verifier.admit_failure_event(at, 1, Some(key))
            })
            .count();
        assert_eq!(named, 2, "one in each second");

        // A clock stepped back an hour starts counting again.
        let back = s - time::Duration::hours(1);
        assert!(verifier.admit_failure_event(back, 1, None));
        assert!(!verifier.admit_failure_event(back, 1, None));
        assert!(verifier.admit_failure_event(back, 1, Some(key)));
    }

    fn known(revoked: bool, expires_at: Option<i64>) -> Cached {
        Cached::Known(Known {
            principal: Principal {
                id: KeyId(uuid::Uuid::nil()),
                name: "k".into(),
                grants: Arc::new(Grants::parse_all(&["a:b".to_owned()]).unwrap()),
                expires_at: None,
            },
            revoked,
            expires_at,
            last_used: Arc::new(AtomicI64::new(NOT_USED)),
        })
    }

    /// A key's answers only move one way: revoked stays revoked, an expiry
    /// only comes closer; so an answer that would undo either is the older
    /// read, and does not replace the one held.
    #[test]
    fn older_answers_do_not_supersede_newer_ones() {
        let valid = known(false, None);
        let revoked = known(true, None);
        assert!(!valid.supersedes(&revoked));
        assert!(revoked.supersedes(&valid));
        let shortened = known(false, Some(10));
        assert!(!valid.supersedes(&shortened));
        assert!(!known(false, Some(20)).supersedes(&shortened));
        assert!(shortened.supersedes(&valid));
        assert!(known(false, Some(10)).supersedes(&shortened));
        assert!(Cached::Unknown.supersedes(&valid));
        assert!(valid.supersedes(&Cached::Unknown));
    }
}
