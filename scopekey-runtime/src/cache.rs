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
//! takes one lock and no allocation: a hit on an entry in use is one probe
//! (measured on the request path, with the verdict judged under the lock:
//! about 300 instructions, against about 1,100 with moka, the
//! general-purpose concurrent cache this replaced); a miss probes the four
//! generations of the two pools (below).
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
//!
//! Each shard keeps two such pairs of generations, [pools](Pool): the main
//! one, and a small one (an eighth of the capacity) for entries cheap to
//! lose. Inserts into one never evict the other's entries: the verifier
//! keeps "no such key" answers in the small pool, so a flood of made-up keys
//! (anyone can make well-formed ones) cycles only the small pool, and the
//! verdicts of the keys in use stay cached.

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
    /// Per pool, entries per generation and shard (a pool holds at most
    /// twice this in a shard).
    generation_len: [usize; 2],
    /// Microseconds.
    ttl: i64,
}

/// Which of a shard's two pairs of generations an entry goes in: inserts
/// into one never evict entries of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Seven eighths of the capacity.
    Main = 0,
    /// An eighth of the capacity, for entries cheap to lose (none while
    /// that is under two entries a shard, below a capacity of 16: nothing
    /// is put in it then).
    Small = 1,
}

/// The share of the capacity the [`Pool::Small`] takes: one part in this.
const SMALL_POOL_PARTS: u64 = 8;

struct Shard<K, V> {
    /// Per [`Pool`].
    pools: [Generations<K, V>; 2],
    /// Bumped by every invalidation in the shard; see [`Ticket`].
    epoch: u64,
}

struct Generations<K, V> {
    current: HashMap<K, Entry<V>, Hasher>,
    previous: HashMap<K, Entry<V>, Hasher>,
}

impl<K, V> Default for Generations<K, V> {
    fn default() -> Self {
        Self {
            current: HashMap::default(),
            previous: HashMap::default(),
        }
    }
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
        // Per pool, two generations of half its share of a shard each; a
        // capacity of 1 still caches (up to two entries, in the main pool).
        let per_shard = capacity / shards as u64;
        // The small pool's generations: none below two entries a shard.
        let small = per_shard / SMALL_POOL_PARTS / 2;
        let main = per_shard - small * 2;
        let len = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        pools: Default::default(),
                        epoch: 0,
                    })
                })
                .collect(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
            shift: 64 - shards.trailing_zeros(),
            generation_len: [len((main / 2).max(main.min(1))), len(small)],
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
        for (pool, generations) in shard.pools.iter_mut().enumerate() {
            match generations.current.get(key) {
                Some(entry) if self.fresh(entry, now) => return Some(read(&entry.value)),
                // Cached at a later time than this reader's: a miss for it,
                // a hit for later readers.
                Some(entry) if entry.inserted_at > now => return None,
                Some(_) => {
                    generations.current.remove(key);
                    return None;
                }
                None => {}
            }
            if let Some(entry) = generations.previous.remove(key) {
                if !self.fresh(&entry, now) {
                    return None;
                }
                let result = read(&entry.value);
                // Still in use: keep it for another generation.
                generations.put(key.clone(), entry, self.generation_len[pool]);
                return Some(result);
            }
        }
        None
    }

    /// A ticket for a later [`insert`](Self::insert) of `key`.
    pub(crate) fn ticket(&self, key: &K) -> Ticket {
        Ticket(self.shard(key).epoch)
    }

    /// Caches `value` for `key` as of `now` in `pool`, unless the shard saw
    /// an invalidation since `ticket` was taken, or the entry held for `key`
    /// (in either pool) is one `value` does not `supersede` (a newer answer
    /// than `value`'s, read by a request that began later but finished
    /// first): that entry is returned then, the answer to go by.
    pub(crate) fn insert(
        &self,
        key: K,
        value: V,
        pool: Pool,
        now: i64,
        ticket: Ticket,
        supersedes: impl FnOnce(&V) -> bool,
    ) -> Option<V>
    where
        V: Clone,
    {
        let mut shard = self.shard(&key);
        if shard.epoch != ticket.0 {
            return None;
        }
        let held = shard.pools.iter().find_map(|generations| {
            generations
                .current
                .get(&key)
                .or_else(|| generations.previous.get(&key))
        });
        if let Some(held) = held
            && !supersedes(&held.value)
        {
            return Some(held.value.clone());
        }
        for generations in &mut shard.pools {
            generations.remove(&key);
        }
        let generation_len = self.generation_len[pool as usize];
        if generation_len > 0 {
            let entry = Entry {
                value,
                inserted_at: now,
            };
            shard.pools[pool as usize].put(key, entry, generation_len);
        }
        None
    }

    /// Drops `key`'s entry, and any insert of an answer read before now.
    pub(crate) fn invalidate(&self, key: &K) {
        let mut shard = self.shard(key);
        shard.epoch += 1;
        for generations in &mut shard.pools {
            generations.remove(key);
        }
    }

    /// Drops every entry `matches` picks (a scan of the whole cache), and
    /// any insert of an answer read before now.
    pub(crate) fn invalidate_matching(&self, matches: impl Fn(&V) -> bool) {
        for shard in &*self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.epoch += 1;
            for generations in &mut shard.pools {
                generations
                    .current
                    .retain(|_, entry| !matches(&entry.value));
                generations
                    .previous
                    .retain(|_, entry| !matches(&entry.value));
            }
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
                s.pools
                    .iter()
                    .map(|g| g.current.len() + g.previous.len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn fresh(&self, entry: &Entry<V>, now: i64) -> bool {
        entry.inserted_at <= now && now.saturating_sub(entry.inserted_at) < self.ttl
    }
}

impl<K: Eq + Hash, V> Generations<K, V> {
    fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
    }

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
        c.insert(K(k), v, Pool::Main, now, c.ticket(&K(k)), |_| true);
    }

    fn put_small(c: &Cache<K, u32>, k: u64, v: u32, now: i64) {
        c.insert(K(k), v, Pool::Small, now, c.ticket(&K(k)), |_| true);
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

    /// Inserts into the small pool evict only its own entries: the main
    /// pool's stay, however many come; both pools together hold at most
    /// the capacity.
    #[test]
    fn the_small_pool_does_not_evict_the_main_one() {
        for capacity in [16u64, 100, 1_000, 100_000] {
            let c = cache(capacity);
            // Well within every shard's current generation of the main
            // pool (seven sixteenths of a shard's share).
            let main = capacity / 4;
            for k in 0..main {
                put(&c, k, 1, T0);
            }
            for k in main..main + capacity * 3 {
                put_small(&c, k, 2, T0);
                assert!(c.len() as u64 <= capacity, "capacity {capacity}");
            }
            let kept = (0..main).filter(|k| c.get(&K(*k), T0) == Some(1)).count();
            assert_eq!(kept as u64, main, "capacity {capacity}");
            let last = main + capacity * 3 - 1;
            assert_eq!(c.get(&K(last), T0), Some(2), "capacity {capacity}");
        }
        // Below two entries a shard, the small pool takes nothing.
        let c = cache(8);
        put_small(&c, 1, 2, T0);
        assert_eq!(c.get(&K(1), T0), None);
        assert_eq!(c.len(), 0);
    }

    /// A key lives in one pool at a time: an insert into one drops its
    /// entry from the other, and the answer held in either is what
    /// `supersedes` weighs.
    #[test]
    fn a_key_moves_between_pools() {
        let c = cache(1_000);
        put_small(&c, 1, 2, T0);
        put(&c, 1, 1, T0 + MS);
        assert_eq!(c.get(&K(1), T0 + MS), Some(1));
        assert_eq!(c.len(), 1);
        put_small(&c, 1, 2, T0 + 2 * MS);
        assert_eq!(c.get(&K(1), T0 + 2 * MS), Some(2));
        assert_eq!(c.len(), 1);
        let held = c.insert(K(1), 1, Pool::Main, T0, c.ticket(&K(1)), |held| *held != 2);
        assert_eq!(held, Some(2));
        c.invalidate(&K(1));
        assert_eq!(c.len(), 0);
        put_small(&c, 3, 2, T0);
        c.invalidate_all();
        assert_eq!(c.len(), 0);
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
        c.insert(K(2), 20, Pool::Main, T0, ticket, |_| true);
        assert_eq!(c.get(&K(2), T0), None);

        let ticket = c.ticket(&K(3));
        c.invalidate_all();
        c.insert(K(3), 30, Pool::Main, T0, ticket, |_| true);
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
        assert_eq!(
            c.insert(K(1), 2, Pool::Main, T0 + 500_000, second, supersedes(2)),
            None
        );
        // The held answer comes back: the one to go by.
        assert_eq!(
            c.insert(K(1), 1, Pool::Main, T0, first, supersedes(1)),
            Some(2)
        );
        assert_eq!(c.get(&K(1), T0 + 600_000), Some(2));
        // Where it supersedes, it replaces.
        c.insert(
            K(1),
            3,
            Pool::Main,
            T0 + 700_000,
            c.ticket(&K(1)),
            supersedes(3),
        );
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
