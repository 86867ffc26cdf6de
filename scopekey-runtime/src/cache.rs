//! The verification cache: a bounded map from key hashes to verdicts, each
//! served for at most a fixed lifetime.
//!
//! Sharded mutex-guarded hash maps, with two generations per shard for
//! eviction: inserts go to the current generation; when it is full, it
//! becomes the previous one and the old previous one is dropped, and a hit
//! in the previous generation moves the entry back to the current one. A
//! shard therefore holds at most its capacity (a capacity of 1 holds up to
//! 2), an entry in use survives, and an entry nobody asks for within a
//! generation's worth of inserts is gone after two: an approximation of
//! "least recently used". Every operation is O(1) (amortised), and a lookup
//! takes one lock, one or two probes and no allocation (measured on the
//! request path, with the verdict judged under the lock: about 300
//! instructions, against about 1,100 with moka, the general-purpose
//! concurrent cache this replaced).
//!
//! The shard of a key is chosen with a per-process random multiplier, so a
//! client cannot aim many keys at one shard to flush it.
//!
//! Times are microseconds since the Unix epoch. Lifetimes are judged against
//! the runtime's clock (the time the verification is judged at), so tests
//! can move them with the clock. An entry whose insertion time lies in the
//! future (the clock went back, or two requests read it out of order) is not
//! served; in the current generation it is kept for later readers, in the
//! previous one it is dropped (costing one more store read at most).
//!
//! An insert that raced an invalidation of its shard is dropped: a
//! verification that read the store before a revocation committed cannot
//! put the old verdict back after the revocation dropped it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

/// The maps' hasher: foldhash, seeded at random per process.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// Shards at most: enough that worker threads rarely meet on one lock.
const MAX_SHARDS: usize = 64;
/// Entries per shard at least before the cache is split further.
const MIN_SHARD_CAPACITY: u64 = 256;

/// A bounded, lifetime-limited map, safe to share between threads.
pub(crate) struct Cache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    /// Odd, random per process: multiplies a key's spread to pick a shard.
    seed: u64,
    /// 64 minus the number of bits a shard index takes.
    shift: u32,
    /// Entries per generation and shard (a shard holds at most twice this).
    generation_len: usize,
    /// Microseconds.
    ttl: i64,
}

struct Shard<K, V> {
    current: HashMap<K, Entry<V>, Hasher>,
    previous: HashMap<K, Entry<V>, Hasher>,
    /// Bumped by every invalidation in the shard; see [`Ticket`].
    epoch: u64,
}

struct Entry<V> {
    value: V,
    /// Microseconds since the Unix epoch.
    inserted_at: i64,
}

/// Taken before reading the store on a miss and handed back with the
/// answer: the insert happens only if nothing in the shard was invalidated
/// in between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// What a key is hashed into: which shard holds it.
pub(crate) trait ShardKey: Eq + Hash + Clone {
    /// A number derived from the key, spread over all 64 bits.
    fn spread(&self) -> u64;
}

impl<K: ShardKey, V: Clone> Cache<K, V> {
    /// A cache holding at most `capacity` entries (none if 0), each served
    /// for at most `ttl`.
    pub(crate) fn new(capacity: u64, ttl: std::time::Duration) -> Self {
        let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS as u64) as usize;
        // A power of two, so that a shard is picked with a mask.
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        // Two generations of half a shard each; a capacity of 1 still
        // caches (up to two entries).
        let per_shard = capacity / shards as u64;
        let generation_len =
            usize::try_from((per_shard / 2).max(per_shard.min(1))).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        current: HashMap::default(),
                        previous: HashMap::default(),
                        epoch: 0,
                    })
                })
                .collect(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
            shift: 64 - shards.trailing_zeros(),
            generation_len,
            ttl: i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        // The product's top bits depend on every bit of the spread and on
        // the secret multiplier (one shard: a shift by 64, so index 0).
        let i = key
            .spread()
            .wrapping_mul(self.seed)
            .checked_shr(self.shift)
            .unwrap_or(0) as usize;
        // A shard holds plain values: a panic elsewhere while it was locked
        // cannot leave it in a state worth refusing.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value cached for `key`, if it is fresh at `now`.
    pub(crate) fn get(&self, key: &K, now: i64) -> Option<V> {
        self.get_with(key, now, V::clone)
    }

    /// `read` applied to the value cached for `key`, if it is fresh at
    /// `now`: no copy of the value is taken (the shard stays locked while
    /// `read` runs, so it must be short and must not use this cache).
    pub(crate) fn get_with<R>(&self, key: &K, now: i64, read: impl FnOnce(&V) -> R) -> Option<R> {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        match shard.current.get(key) {
            Some(entry) if self.fresh(entry, now) => return Some(read(&entry.value)),
            // Cached at a later time than this reader's: a miss for it, a
            // hit for later readers.
            Some(entry) if entry.inserted_at > now => return None,
            Some(_) => {
                shard.current.remove(key);
                return None;
            }
            None => {}
        }
        let entry = shard.previous.remove(key)?;
        if !self.fresh(&entry, now) {
            return None;
        }
        let result = read(&entry.value);
        // Still in use: keep it for another generation.
        shard.put(key.clone(), entry, self.generation_len);
        Some(result)
    }

    /// A ticket for a later [`insert`](Self::insert) of `key`.
    pub(crate) fn ticket(&self, key: &K) -> Ticket {
        Ticket(self.shard(key).epoch)
    }

    /// Caches `value` for `key` as of `now`, unless the shard saw an
    /// invalidation since `ticket` was taken, or the entry held for `key`
    /// is one `value` does not `supersede` (a newer answer than `value`'s,
    /// read by a request that began later but finished first): that entry
    /// is returned then, the answer to go by.
    pub(crate) fn insert(
        &self,
        key: K,
        value: V,
        now: i64,
        ticket: Ticket,
        supersedes: impl FnOnce(&V) -> bool,
    ) -> Option<V>
    where
        V: Clone,
    {
        if self.generation_len == 0 {
            return None;
        }
        let mut shard = self.shard(&key);
        if shard.epoch != ticket.0 {
            return None;
        }
        let held = shard.current.get(&key).or_else(|| shard.previous.get(&key));
        if let Some(held) = held
            && !supersedes(&held.value)
        {
            return Some(held.value.clone());
        }
        shard.previous.remove(&key);
        let entry = Entry {
            value,
            inserted_at: now,
        };
        shard.put(key, entry, self.generation_len);
        None
    }

    /// Drops `key`'s entry, and any insert of an answer read before now.
    pub(crate) fn invalidate(&self, key: &K) {
        let mut shard = self.shard(key);
        shard.epoch += 1;
        shard.current.remove(key);
        shard.previous.remove(key);
    }

    /// Drops every entry `matches` picks (a scan of the whole cache), and
    /// any insert of an answer read before now.
    pub(crate) fn invalidate_matching(&self, matches: impl Fn(&V) -> bool) {
        for shard in &*self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.epoch += 1;
            shard.current.retain(|_, entry| !matches(&entry.value));
            shard.previous.retain(|_, entry| !matches(&entry.value));
        }
    }

    /// Drops every entry, and any insert of an answer read before now.
    pub(crate) fn invalidate_all(&self) {
        self.invalidate_matching(|_| true);
    }

    /// How many entries the cache holds, fresh or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    fn fresh(&self, entry: &Entry<V>, now: i64) -> bool {
        entry.inserted_at <= now && now.saturating_sub(entry.inserted_at) < self.ttl
    }
}

impl<K: Eq + Hash, V> Shard<K, V> {
    /// Puts an entry in the current generation, starting a new generation
    /// first if the current one is full.
    fn put(&mut self, key: K, entry: Entry<V>, generation_len: usize) {
        if self.current.len() >= generation_len && !self.current.contains_key(&key) {
            // The old previous generation's table is reused for the new
            // current one.
            let mut recycled = std::mem::take(&mut self.previous);
            recycled.clear();
            self.previous = std::mem::replace(&mut self.current, recycled);
        }
        self.current.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct K(u64);

    impl ShardKey for K {
        fn spread(&self) -> u64 {
            self.0
        }
    }

    const T0: i64 = 1_767_225_600_000_000;
    const MS: i64 = 1_000;

    fn cache(capacity: u64) -> Cache<K, u32> {
        Cache::new(capacity, std::time::Duration::from_secs(1))
    }

    fn put(c: &Cache<K, u32>, k: u64, v: u32, now: i64) {
        c.insert(K(k), v, now, c.ticket(&K(k)), |_| true);
    }

    #[test]
    fn serves_entries_for_their_lifetime_only() {
        let c = cache(100);
        put(&c, 1, 10, T0);
        assert_eq!(c.get(&K(1), T0), Some(10));
        assert_eq!(c.get(&K(1), T0 + 999 * MS), Some(10));
        assert_eq!(c.get(&K(1), T0 + 1_000 * MS), None);
        // An expired entry is gone, not just hidden.
        assert_eq!(c.get(&K(1), T0), None);
        // A clock that went back does not make an entry live longer; a
        // reader behind the entry's time misses it, later readers do not.
        put(&c, 2, 20, T0);
        assert_eq!(c.get(&K(2), T0 - MS), None);
        assert_eq!(c.get(&K(2), T0), Some(20));
    }

    #[test]
    fn holds_at_most_its_capacity_and_keeps_what_is_used() {
        for capacity in [2u64, 3, 10, 1_000, 100_000] {
            let c = cache(capacity);
            for k in 0..capacity * 3 {
                put(&c, k, 0, T0);
                // Entry 0 is asked for after every insert: it stays.
                assert_eq!(c.get(&K(0), T0), Some(0), "capacity {capacity}, after {k}");
                assert!(
                    c.len() as u64 <= capacity,
                    "capacity {capacity}: {}",
                    c.len()
                );
            }
        }
    }

    #[test]
    fn evicts_what_is_not_used() {
        let c = cache(1_000);
        for k in 0..10_000 {
            put(&c, k, 0, T0);
        }
        let kept = (0..1_000).filter(|k| c.get(&K(*k), T0).is_some()).count();
        assert_eq!(kept, 0);
        assert!(c.len() >= 250, "a shard keeps its last generation");
    }

    #[test]
    fn zero_capacity_caches_nothing_and_one_caches() {
        let c = cache(0);
        put(&c, 1, 10, T0);
        assert_eq!(c.get(&K(1), T0), None);
        let c = cache(1);
        put(&c, 1, 10, T0);
        assert_eq!(c.get(&K(1), T0), Some(10));
        put(&c, 2, 20, T0);
        assert!(c.len() <= 2);
    }

    #[test]
    fn invalidation_drops_entries_and_racing_inserts() {
        let c = cache(100);
        put(&c, 1, 10, T0);
        c.invalidate(&K(1));
        assert_eq!(c.get(&K(1), T0), None);

        // A miss read the store, then the key was revoked: its answer is
        // not cached.
        let ticket = c.ticket(&K(2));
        c.invalidate(&K(2));
        c.insert(K(2), 20, T0, ticket, |_| true);
        assert_eq!(c.get(&K(2), T0), None);

        let ticket = c.ticket(&K(3));
        c.invalidate_all();
        c.insert(K(3), 30, T0, ticket, |_| true);
        assert_eq!(c.get(&K(3), T0), None);

        put(&c, 4, 40, T0);
        put(&c, 5, 50, T0);
        c.invalidate_all();
        assert_eq!(c.len(), 0);
    }

    /// Two misses of one key, the later one finishing first: the earlier
    /// one's answer does not replace the later one's where it does not
    /// supersede it (a valid verdict over a revoked one).
    #[test]
    fn an_older_answer_does_not_replace_a_newer_one() {
        let c = cache(100);
        let (first, second) = (c.ticket(&K(1)), c.ticket(&K(1)));
        // Values: 1 valid, 2 revoked; revoked is never superseded by valid.
        let supersedes = |new: u32| move |held: &u32| !(*held == 2 && new == 1);
        assert_eq!(c.insert(K(1), 2, T0 + 500_000, second, supersedes(2)), None);
        // The held answer comes back: the one to go by.
        assert_eq!(c.insert(K(1), 1, T0, first, supersedes(1)), Some(2));
        assert_eq!(c.get(&K(1), T0 + 600_000), Some(2));
        // Where it supersedes, it replaces.
        c.insert(K(1), 3, T0 + 700_000, c.ticket(&K(1)), supersedes(3));
        assert_eq!(c.get(&K(1), T0 + 700_000), Some(3));
    }

    #[test]
    fn an_entry_moved_back_keeps_its_insertion_time() {
        // Capacity 2, one shard: generations of one entry.
        let c = cache(2);
        put(&c, 1, 10, T0);
        put(&c, 2, 20, T0 + 500 * MS);
        // 1 is in the previous generation; a hit moves it back, with its
        // original time.
        assert_eq!(c.get(&K(1), T0 + 600 * MS), Some(10));
        assert_eq!(c.get(&K(1), T0 + 1_000 * MS), None);
    }
}
