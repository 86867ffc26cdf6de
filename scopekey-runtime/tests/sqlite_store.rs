//! The SQLite store's verification connection: lookups on a cache miss run
//! on a connection of their own, apart from the main pool, and still see
//! every commit at once.
//!
//! - a miss is answered while every connection of the main pool is held
//!   (a long listing or a write cannot starve verification); (that a miss
//!   runs on the main pool while another holds the verification connection
//!   is tested beside the store, in `src/store/sqlite.rs`);
//! - a revocation or a new key is seen by the very next lookup, whether it
//!   was committed through the same store or through another one on the
//!   same file (as the CLI would), and whatever read another connection of
//!   the process holds open, even one in SQLite's shared-cache mode and a
//!   store whose URL asks for that mode;
//! - closing the store closes both pools; closing only its main pool makes
//!   lookups fail (the runtime then answers 503), never answer from the
//!   verification connection left open;
//! - an in-memory store verifies on its one pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use scopekey_runtime::store::Store;
use scopekey_runtime::store::sqlite::SqliteStore;
use scopekey_runtime::{Actor, KeyFormat, NewKey, ScopeKey};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};

/// Bound on every lookup here: they take microseconds; a lookup stuck
/// behind the main pool would wait for its 30 s acquire timeout.
const PROMPT: Duration = Duration::from_secs(5);

/// A migrated store on a fresh file, the file's URL, and its path (removed
/// by [`Cleanup`]).
async fn file_store() -> (SqliteStore, String, Cleanup) {
    file_store_with("").await
}

/// The same, with `query` (`?…` or empty) appended to the store's URL.
async fn file_store_with(query: &str) -> (SqliteStore, String, Cleanup) {
    let path = std::env::temp_dir().join(format!(
        "scopekey-sqlite-store-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::connect(&format!("{url}{query}"))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    (store, url, Cleanup(path))
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

fn runtime(store: &SqliteStore) -> ScopeKey {
    ScopeKey::builder(store.clone()).build()
}

/// Creates a key and returns its plaintext.
async fn key(keys: &ScopeKey, name: &str) -> String {
    keys.create(NewKey::new(name, ["orders:read"]), Actor::System)
        .await
        .expect("create")
        .plaintext
        .expose_secret()
        .to_owned()
}

async fn lookup(
    store: &SqliteStore,
    plaintext: &str,
) -> Result<Option<scopekey_runtime::VerifyRecord>, scopekey_runtime::StoreError> {
    let hash = KeyFormat::default().hash(plaintext);
    tokio::time::timeout(PROMPT, store.find_for_verification(&hash))
        .await
        .expect("the lookup answered promptly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_answered_while_the_main_pool_is_exhausted() {
    let (store, _url, _cleanup) = file_store().await;
    let keys = runtime(&store);
    let plaintext = key(&keys, "reader").await;

    // Hold every connection the main pool may open.
    let mut held = Vec::new();
    for _ in 0..store.pool().options().get_max_connections() {
        held.push(store.pool().acquire().await.expect("acquire"));
    }
    let found = lookup(&store, &plaintext).await.expect("lookup");
    assert!(found.is_some(), "the key is found");
    // And through the runtime, on a cache miss. (A valid key: a refusal
    // would also write an `auth.failed` event through the main pool, in a
    // task of its own.)
    keys.invalidate_cache();
    let verified = tokio::time::timeout(PROMPT, keys.verify(&plaintext))
        .await
        .expect("a valid key is verified promptly");
    assert!(verified.is_ok());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_see_every_commit_at_once() {
    let (store, url, _cleanup) = file_store().await;
    let keys = runtime(&store);
    let first = key(&keys, "first").await;
    let record = lookup(&store, &first).await.unwrap().expect("found");
    assert_eq!(record.revoked_at, None);

    // Revoked through this store: the next lookup says so.
    keys.revoke(record.id, Some("test"), Actor::System)
        .await
        .unwrap();
    let after = lookup(&store, &first).await.unwrap().expect("found");
    assert!(after.revoked_at.is_some(), "the revocation is seen at once");

    // A second store on the same file, as a CLI or another process would
    // open: its commits are seen by this store's next lookup too.
    let other = SqliteStore::connect(&url).await.expect("open again");
    let other_keys = runtime(&other);
    let second = key(&other_keys, "second").await;
    let seen = lookup(&store, &second)
        .await
        .unwrap()
        .expect("a new key is seen at once");
    other_keys
        .revoke(seen.id, None, Actor::System)
        .await
        .unwrap();
    let seen = lookup(&store, &second).await.unwrap().expect("found");
    assert!(
        seen.revoked_at.is_some(),
        "another store's revocation is seen at once"
    );
    other.close().await;
}

/// Another connection in the process holds a read open, in SQLite's
/// shared-cache mode (as an application's own pool might): connections of
/// one shared cache share one read snapshot, so a verification connection
/// in that cache would go on reading the snapshot from before a revocation.
async fn revocation_seen_past_an_open_shared_cache_read(query: &str) {
    let (store, url, _cleanup) = file_store_with(query).await;
    let keys = runtime(&store);
    let plaintext = key(&keys, "reader").await;
    let id = lookup(&store, &plaintext).await.unwrap().expect("found").id;

    let options = url
        .parse::<SqliteConnectOptions>()
        .expect("url")
        .shared_cache(true);
    let mut reader = SqliteConnection::connect_with(&options)
        .await
        .expect("open a shared-cache connection");
    reader.execute("BEGIN").await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM scopekey_keys")
        .fetch_one(&mut reader)
        .await
        .unwrap();

    tokio::time::timeout(PROMPT, keys.revoke(id, Some("test"), Actor::System))
        .await
        .expect("the revocation is not blocked by the open read")
        .unwrap();
    let seen = lookup(&store, &plaintext).await.unwrap().expect("found");
    assert!(
        seen.revoked_at.is_some(),
        "the next lookup sees the revocation despite the open read"
    );
    reader.execute("ROLLBACK").await.unwrap();
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_seen_past_another_connections_open_read() {
    revocation_seen_past_an_open_shared_cache_read("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_asking_for_shared_cache_gets_private_connections() {
    revocation_seen_past_an_open_shared_cache_read("?cache=shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_stops_verification() {
    let (store, _url, _cleanup) = file_store().await;
    let keys = runtime(&store);
    let plaintext = key(&keys, "reader").await;
    assert!(lookup(&store, &plaintext).await.unwrap().is_some());
    let verifier = store
        .verification_pool()
        .expect("a file store has one")
        .clone();
    store.close().await;
    assert!(lookup(&store, &plaintext).await.is_err(), "closed store");
    assert!(store.pool().is_closed());
    assert!(
        verifier.is_closed(),
        "the verification connection is closed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_main_pool_stops_verification() {
    let (store, _url, _cleanup) = file_store().await;
    let keys = runtime(&store);
    let plaintext = key(&keys, "reader").await;
    // Open the verification pool first: it must not keep answering.
    assert!(lookup(&store, &plaintext).await.unwrap().is_some());
    store.pool().close().await;
    assert!(
        lookup(&store, &plaintext).await.is_err(),
        "no answer from the verification pool once the store's pool is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_verifies_on_its_one_pool() {
    let store = SqliteStore::connect("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    assert!(store.verification_pool().is_none());
    let keys = ScopeKey::builder_arc(Arc::new(store.clone())).build();
    let plaintext = key(&keys, "reader").await;
    assert!(lookup(&store, &plaintext).await.unwrap().is_some());
    assert!(keys.verify(&plaintext).await.is_ok());
}

/// Several processes starting at once on a fresh file (two servers, a
/// server and the CLI) all migrate it: sqlx takes no lock for SQLite, so
/// they race for the same migrations, and each must still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_migrating_a_fresh_file_at_once_all_succeed() {
    for round in 0..10 {
        let path = std::env::temp_dir().join(format!(
            "scopekey-sqlite-migrate-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let _cleanup = Cleanup(path.clone());
        let url = format!("sqlite://{}", path.display());
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(SqliteStore::connect(&url).await.expect("open"));
        }
        let results = tokio::join!(
            stores[0].migrate(),
            stores[1].migrate(),
            stores[2].migrate(),
            stores[3].migrate(),
        );
        let results = [results.0, results.1, results.2, results.3];
        for (i, result) in results.iter().enumerate() {
            assert!(result.is_ok(), "round {round}, store {i}: {result:?}");
        }
        // One schema, usable from each.
        for store in &stores {
            let keys = runtime(store);
            key(&keys, "after the race").await;
        }
        for store in &stores {
            store.close().await;
        }
    }
}

/// A commit that returned survives a power loss, not only a crash of the
/// process: a revocation once answered stays made.
#[tokio::test]
async fn commits_are_synced_to_disk() {
    let (store, _url, _cleanup) = file_store().await;
    let mut conn = store.pool().acquire().await.expect("a connection");
    let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .expect("read the pragma");
    assert_eq!(level, 2, "synchronous = FULL");
    drop(conn);
    store.close().await;
}

/// A file the store creates is its owner's alone (`0600`), whatever the
/// umask, and so are the WAL files SQLite creates beside it: it holds key
/// hashes, webhook URLs and the audit log. A file that exists keeps its
/// mode.
#[cfg(unix)]
#[tokio::test]
async fn a_new_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let (store, _url, cleanup) = file_store().await;
    let keys = runtime(&store);
    key(&keys, "written").await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = cleanup.0.clone().into_os_string();
        path.push(suffix);
        assert_eq!(mode(path.as_ref()), 0o600, "{suffix:?}");
    }
    store.close().await;

    // An existing file: its mode is the operator's choice.
    let path = std::env::temp_dir().join(format!(
        "scopekey-sqlite-mode-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let _cleanup = Cleanup(path.clone());
    std::fs::File::create(&path).expect("create");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    assert_eq!(mode(&path), 0o640);
    store.close().await;
}

/// A URL with query options is SQLite's to read: a missing file opened
/// read-only is an error, and nothing is left behind.
#[tokio::test]
async fn a_read_only_url_creates_nothing() {
    let path = std::env::temp_dir().join(format!(
        "scopekey-sqlite-ro-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let _cleanup = Cleanup(path.clone());
    let url = format!("sqlite://{}?mode=ro", path.display());
    let opened = SqliteStore::connect(&url).await;
    assert!(opened.is_err(), "a missing file opened read-only");
    assert!(!path.exists(), "an empty file left behind");
}
