//! Behaviour at scale, asserted without timing (the figures live in
//! `docs/performance.md` and come from the benchmarks):
//!
//! - the verification cache holds at most its configured number of entries,
//!   however many distinct keys clients present, so memory stays bounded;
//! - last use is written at most once per key per flush, however many
//!   verifications happen in between, and the time written is the last
//!   verification's (both stores); a failed write is retried with the next
//!   flush;
//! - an answer read from the store before a revocation is not cached after
//!   it (both stores).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use scopekey_runtime::key::KeyHash;
use scopekey_runtime::store::{
    ChangeFeed, EventQuery, KeyQuery, RevokeOutcome, RotateOutcome, Rotation, Store,
};
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{
    Actor, AuditEvent, Clock, KeyFormat, KeyId, KeyRecord, ManualClock, NewKey, ScopeKey,
    StoreError, both_backends,
};
use time::{Duration, OffsetDateTime};

// ------------------------------------------------------------ bounded memory

/// A store with no rows that answers every lookup by hash itself: with
/// `known` set, as a key with a long name and many scopes (the largest
/// thing the cache holds); otherwise as no key. Verification then costs no
/// I/O, so a test can present tens of thousands of distinct keys quickly.
/// Counts the lookups: each one is a verification the cache did not answer.
#[derive(Default)]
struct Synthetic {
    known: AtomicBool,
    lookups: AtomicU64,
}

impl Synthetic {
    fn record(hash: &KeyHash) -> KeyRecord {
        let id = KeyId(uuid::Uuid::from_slice(&hash.as_bytes()[..16]).expect("16 bytes"));
        KeyRecord {
            id,
            // The longest name the lifecycle allows, and sixteen scopes.
            name: format!("{id:x<200}"),
            scopes: (0..16)
                .map(|i| format!("service{i}.resource:action{i}"))
                .collect(),
            metadata: serde_json::Map::new(),
            hint: "sk_…synt".into(),
            key_hash: *hash,
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
            rotated_at: None,
            parent_key_id: None,
            last_used_at: None,
            rotation_period: None,
            rotation_webhook_url: None,
            rotation_webhook_secret: None,
        }
    }
}

#[async_trait]
impl Store for Synthetic {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn insert_key(&self, _: &KeyRecord, _: &AuditEvent) -> Result<(), StoreError> {
        Err(StoreError::msg("the synthetic store takes no keys"))
    }
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .known
            .load(Ordering::Relaxed)
            .then(|| Self::record(hash)))
    }
    async fn get(&self, _: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(None)
    }
    async fn successor(&self, _: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(None)
    }
    async fn list(&self, _: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn rotate(&self, _: &Rotation) -> Result<RotateOutcome, StoreError> {
        Ok(RotateOutcome::NotFound)
    }
    async fn revoke(
        &self,
        _: KeyId,
        _: OffsetDateTime,
        _: Option<&str>,
        _: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        Ok(RevokeOutcome::NotFound)
    }
    async fn insert_event(&self, _: &AuditEvent) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list_events(&self, _: &EventQuery) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(Vec::new())
    }
    async fn touch_last_used(&self, _: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The process's resident anonymous memory (heap and stacks, not mapped
/// files) in KiB (Linux, where it must be readable; `None` elsewhere).
fn rss_kib() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .expect("RssAnon in /proc/self/status")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("RssAnon in KiB");
    Some(kib)
}

fn fresh_keys(n: usize) -> Vec<String> {
    let format = KeyFormat::default();
    (0..n)
        .map(|_| {
            format
                .generate()
                .expect("random")
                .expose_secret()
                .to_owned()
        })
        .collect()
}

async fn verify_all(keys: &ScopeKey, plaintexts: &[String], known: bool) {
    for p in plaintexts {
        assert_eq!(keys.verify(p).await.is_ok(), known);
    }
}

const CAPACITY: u64 = 1_000;
const DISTINCT: usize = 20_000;

/// Set in the child process that measures memory (see below).
const MEASURING: &str = "SCOPEKEY_SCALE_MEASURING";
const MEMORY_TEST: &str = "distinct_keys_beyond_the_cache_capacity_keep_memory_bounded";

/// Runs the measurement in a child process of this test binary, running
/// that test alone: the other tests of this binary, running beside it here,
/// allocate (stores, pools, runtimes) and would count as growth.
#[test]
fn distinct_keys_beyond_the_cache_capacity_keep_memory_bounded() {
    if std::env::var_os(MEASURING).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(memory_stays_bounded());
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([MEMORY_TEST, "--exact", "--test-threads=1", "--nocapture"])
        .env(MEASURING, "1")
        .output()
        .expect("the measuring child runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    eprintln!("{stderr}");
    assert!(
        child.status.success(),
        "the measuring child failed ({}):\n{stdout}\n{stderr}",
        child.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the measurement alone: {stdout}"
    );
}

async fn memory_stays_bounded() {
    let store = Arc::new(Synthetic::default());
    let keys = ScopeKey::builder_arc(store.clone())
        .cache_capacity(CAPACITY)
        // Entries outlive the test: only the capacity can evict them.
        .cache_ttl(StdDuration::from_secs(3600))
        .auth_failures_per_second(0)
        .build();
    // All plaintexts up front, so that their own memory is not counted.
    let (first, second, unknown) = (
        fresh_keys(DISTINCT),
        fresh_keys(DISTINCT),
        fresh_keys(DISTINCT),
    );

    // Fill the cache far past its capacity with valid keys.
    store.known.store(true, Ordering::Relaxed);
    verify_all(&keys, &first, true).await;
    keys.flush_last_used().await.unwrap();
    let rss_filled = rss_kib();

    // As many new valid keys again, and as many unknown ones.
    verify_all(&keys, &second, true).await;
    store.known.store(false, Ordering::Relaxed);
    verify_all(&keys, &unknown, false).await;
    keys.flush_last_used().await.unwrap();
    let rss_after = rss_kib();

    // The cache kept at most CAPACITY of the first keys: presenting them
    // again reads the store for all the others. (An unbounded cache would
    // read it for none.)
    store.known.store(true, Ordering::Relaxed);
    let before = store.lookups.load(Ordering::Relaxed);
    verify_all(&keys, &first, true).await;
    let reread = store.lookups.load(Ordering::Relaxed) - before;
    assert!(
        reread >= (DISTINCT as u64) - CAPACITY,
        "only {reread} of {DISTINCT} evicted keys were read again: the cache holds more than \
         its capacity of {CAPACITY}"
    );

    // Resident memory: 40,000 more distinct keys (half of them with a
    // 200-character name and 16 scopes) must not grow the process by
    // anything like what caching them all would take (tens of MiB). The
    // bound is generous: the allocator and the runtime's own threads move
    // the figure by a few MiB.
    if let (Some(filled), Some(after)) = (rss_filled, rss_after) {
        let grown = after.saturating_sub(filled);
        eprintln!(
            "RssAnon {} KiB after {DISTINCT} keys, {after} KiB after {} more ({grown} KiB grown)",
            filled,
            2 * DISTINCT
        );
        assert!(
            grown < 16 * 1024,
            "resident memory grew by {grown} KiB over {} distinct keys with a cache of {CAPACITY}",
            2 * DISTINCT
        );
    }
}

// ------------------------------------------------------------ last used

/// Delegates to a real store and records every batch of last-used times it
/// is asked to write. It can also refuse writes of last use (`fail_touch`),
/// and hold a lookup by hash after reading the row until released
/// (`hold_lookup`), to stand for a slow read racing a revocation.
struct Counting {
    inner: Arc<dyn Store>,
    batches: Mutex<Vec<Vec<(KeyId, OffsetDateTime)>>>,
    fail_touch: AtomicBool,
    hold_lookup: AtomicBool,
    looked_up: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Counting {
    fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            batches: Mutex::new(Vec::new()),
            fail_touch: AtomicBool::new(false),
            hold_lookup: AtomicBool::new(false),
            looked_up: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        }
    }

    fn batches(&self) -> Vec<Vec<(KeyId, OffsetDateTime)>> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for Counting {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn insert_key(&self, key: &KeyRecord, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.insert_key(key, event).await
    }
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let found = self.inner.find_by_hash(hash).await;
        if self.hold_lookup.swap(false, Ordering::SeqCst) {
            self.looked_up.notify_one();
            self.release.notified().await;
        }
        found
    }
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn successor(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.successor(id).await
    }
    async fn list(&self, query: &KeyQuery) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(query).await
    }
    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.is_empty().await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        self.inner.revoke(id, at, reason, event).await
    }
    async fn insert_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.insert_event(event).await
    }
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_events(query).await
    }
    async fn touch_last_used(&self, batch: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        if self.fail_touch.load(Ordering::SeqCst) {
            return Err(StoreError::msg("refused for the test"));
        }
        self.batches.lock().unwrap().push(batch.to_vec());
        self.inner.touch_last_used(batch).await
    }
    async fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        self.inner.changes().await
    }
}

/// A runtime on the test's store wrapped in [`Counting`], with a manual
/// clock.
fn counted(db: &TestDb) -> (Arc<Counting>, ManualClock, ScopeKey) {
    let store = Arc::new(Counting::new(Arc::clone(&db.store)));
    let clock = ManualClock::starting_now();
    let keys = ScopeKey::builder_arc(store.clone())
        .clock(clock.clone())
        .build();
    (store, clock, keys)
}

/// Creates an `orders:read` key for each name: its id and plaintext.
async fn clients(keys: &ScopeKey, names: &[&str]) -> Vec<(KeyId, String)> {
    let mut out = Vec::new();
    for name in names {
        let created = keys
            .create(NewKey::new(*name, ["orders:read"]), Actor::System)
            .await
            .unwrap();
        out.push((created.key.id, created.plaintext.expose_secret().to_owned()));
    }
    out
}

async fn stored_last_used(db: &TestDb, id: KeyId) -> Option<OffsetDateTime> {
    db.store.get(id).await.unwrap().unwrap().last_used_at
}

async fn last_used_is_written_once_per_key_per_flush(db: &TestDb) {
    let (store, clock, keys) = counted(db);
    let clients = clients(&keys, &["client 0", "client 1", "client 2"]).await;

    // One flush interval: 500 verifications of each key, the clock moving a
    // millisecond before each.
    let mut last = HashMap::new();
    for _ in 0..500 {
        for (id, plaintext) in &clients {
            clock.advance(Duration::milliseconds(1));
            keys.verify(plaintext).await.unwrap();
            last.insert(*id, keys.now());
        }
    }
    assert!(store.batches().is_empty(), "verification wrote last use");
    for (id, _) in &clients {
        assert_eq!(stored_last_used(db, *id).await, None);
    }

    keys.flush_last_used().await.unwrap();
    let batches = store.batches();
    assert_eq!(batches.len(), 1, "one write for the interval");
    let mut written: Vec<KeyId> = batches[0].iter().map(|(id, _)| *id).collect();
    written.sort();
    let mut expected: Vec<KeyId> = clients.iter().map(|(id, _)| *id).collect();
    expected.sort();
    assert_eq!(written, expected, "each key exactly once");
    for (id, at) in &batches[0] {
        assert_eq!(*at, last[id], "the last verification's time");
        assert_eq!(stored_last_used(db, *id).await, Some(last[id]));
        assert_eq!(keys.get(*id).await.unwrap().last_used_at, Some(last[id]));
    }

    // The next interval: one key, verified from eight tasks at once.
    clock.advance(Duration::seconds(10));
    let at = keys.now();
    let (busy, plaintext) = clients[0].clone();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (keys, plaintext) = (keys.clone(), plaintext.clone());
        tasks.spawn(async move {
            for _ in 0..100 {
                keys.verify(&plaintext).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    keys.flush_last_used().await.unwrap();
    let batches = store.batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1], vec![(busy, at)], "800 verifications, one write");
    assert_eq!(stored_last_used(db, busy).await, Some(at));
    let (idle, _) = clients[1];
    assert_eq!(stored_last_used(db, idle).await, Some(last[&idle]));

    // An interval without verifications writes nothing.
    keys.flush_last_used().await.unwrap();
    assert_eq!(store.batches().len(), 2);
}
both_backends!(
    last_used_batches,
    last_used_is_written_once_per_key_per_flush
);

/// A flush whose write fails keeps its times for the next flush, where a
/// newer use of the same key wins and each key is still written once.
async fn last_used_write_failure_is_retried(db: &TestDb) {
    let (store, clock, keys) = counted(db);
    let created = clients(&keys, &["a", "b"]).await;
    let [(a, a_key), (b, b_key)] = &created[..] else {
        unreachable!()
    };

    keys.verify(a_key).await.unwrap();
    keys.verify(b_key).await.unwrap();
    let first = keys.now();
    store.fail_touch.store(true, Ordering::SeqCst);
    assert!(keys.flush_last_used().await.is_err());
    assert_eq!(stored_last_used(db, *a).await, None);

    // A later use of `a` only; `b`'s time waits from the failed flush.
    clock.advance(Duration::milliseconds(5));
    keys.verify(a_key).await.unwrap();
    let later = keys.now();
    store.fail_touch.store(false, Ordering::SeqCst);
    keys.flush_last_used().await.unwrap();
    let mut batch = store.batches().concat();
    batch.sort();
    let mut expected = vec![(*a, later), (*b, first)];
    expected.sort();
    assert_eq!(batch, expected);
    assert_eq!(stored_last_used(db, *a).await, Some(later));
    assert_eq!(stored_last_used(db, *b).await, Some(first));
}
both_backends!(
    last_used_failed_write_retried,
    last_used_write_failure_is_retried
);

/// A verification that read the key before it was revoked may answer with
/// what it read, but must not leave that answer in the cache: the revoking
/// node refuses the very next request.
async fn read_before_revocation_is_not_cached(db: &TestDb) {
    let (store, _, keys) = counted(db);
    let (id, plaintext) = clients(&keys, &["k"]).await.remove(0);

    store.hold_lookup.store(true, Ordering::SeqCst);
    let slow = tokio::spawn({
        let (keys, plaintext) = (keys.clone(), plaintext.clone());
        async move { keys.verify(&plaintext).await }
    });
    // The slow verification has read the row (not revoked yet).
    store.looked_up.notified().await;
    keys.revoke(id, None, Actor::System).await.unwrap();
    store.release.notify_one();
    assert!(
        slow.await.unwrap().is_ok(),
        "it read the key before the revocation"
    );

    assert!(keys.verify_cached(&plaintext).is_none());
    assert!(matches!(
        keys.verify(&plaintext).await,
        Err(scopekey_runtime::VerifyError::Revoked)
    ));
}
both_backends!(
    an_answer_read_before_a_revocation_is_not_cached_after_it,
    read_before_revocation_is_not_cached
);

// ----------------------------------------------------- minted keys, by actor

/// A store without its own `minted_by` (here [`Counting`]) finds the keys
/// another key minted by reading the whole audit log, page after page: the
/// same keys, in the same order, as the stores' indexed query, past a page's
/// worth of other events.
async fn minted_by_default_matches_the_stores(db: &TestDb) {
    let (store, clock, keys) = counted(db);
    let admin = keys
        .create(
            NewKey::new("admin", ["api_keys:write", "a:b"]),
            Actor::System,
        )
        .await
        .unwrap();
    let me = keys.verify(admin.plaintext.expose_secret()).await.unwrap();
    let mut minted = Vec::new();
    for i in 0..3 {
        clock.advance(Duration::seconds(1));
        let k = keys
            .create(NewKey::new(format!("made {i}"), ["a:b"]), Actor::Key(&me))
            .await
            .unwrap();
        minted.push(k.key.id);
        // Events by others in between, more than a page of them.
        for _ in 0..400 {
            clock.advance(Duration::milliseconds(1));
            let at = clock.now();
            let event = AuditEvent {
                id: uuid::Uuid::now_v7(),
                key_id: Some(k.key.id),
                kind: "auth.failed".into(),
                actor_key_id: None,
                at,
                details: serde_json::json!({ "reason": "revoked" }),
            };
            store.insert_event(&event).await.unwrap();
        }
    }
    let by_index = db.store.minted_by(admin.key.id).await.unwrap();
    assert_eq!(by_index, minted);
    assert_eq!(store.minted_by(admin.key.id).await.unwrap(), minted);
    assert!(store.minted_by(minted[0]).await.unwrap().is_empty());
}
both_backends!(
    minted_by_default_reads_the_log,
    minted_by_default_matches_the_stores
);
