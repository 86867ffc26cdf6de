//! Test support: a fresh store per test on each backend, and fixtures the
//! workspace's tests share. Enabled by the `testing` feature; not part of
//! the stable API.
//!
//! PostgreSQL tests read `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), create a database of their own
//! and drop it when done. When the server cannot be reached they skip with a
//! loud message, except under `CI=true`, where they fail: a PostgreSQL test
//! must never silently pass in CI.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::store::Store;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;

/// A key (`orders:read`) under a 30-day rotation policy that opts in to
/// automatic rotation, its successors delivered to `url`.
pub fn auto_rotating(name: &str, url: &str) -> crate::NewKey {
    crate::NewKey::new(name, ["orders:read"])
        .rotate_every(time::Duration::days(30))
        .rotation_webhook(url)
}

/// Whether the tests run in CI: `CI` set to anything but empty, `0` or
/// `false` (in any case). There a PostgreSQL test that cannot reach its
/// server fails instead of skipping.
pub fn in_ci() -> bool {
    ci_says(std::env::var("CI").ok().as_deref())
}

fn ci_says(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

/// The server tests use when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A migrated store of its own for one test; cleans up on [`TestDb::cleanup`]
/// (PostgreSQL) or drop (the SQLite file).
pub struct TestDb {
    /// The store, migrated.
    pub store: Arc<dyn Store>,
    /// A URL another process (a CLI, a second server) can open.
    pub url: String,
    backend: Backend,
    file: Option<PathBuf>,
    pg_admin: Option<(String, String)>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("url", &self.url).finish()
    }
}

impl TestDb {
    /// A fresh database on `backend`, or `None` when PostgreSQL is
    /// unreachable outside CI (after printing why). Panics in CI.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// PostgreSQL: makes `level` (`serializable`, `repeatable read`, ...)
    /// the default isolation of this database's new connections, as an
    /// operator's `default_transaction_isolation` setting would. Panics on
    /// failure.
    pub async fn set_default_isolation(&self, level: &str) {
        assert!(
            matches!(self.backend, Backend::Postgres),
            "a PostgreSQL setting"
        );
        assert!(level.chars().all(|c| c.is_ascii_lowercase() || c == ' '));
        self.execute(&format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET \
             default_transaction_isolation = %L', current_database(), '{level}'); END $$"
        ))
        .await;
    }

    /// Runs SQL (one or more statements) on a connection of its own, behind
    /// the store's back: to corrupt or rewind a database in a test. Panics
    /// on failure.
    pub async fn execute(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let done = match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("a connection");
                c.execute(sql).await.map(drop)
            }
            Backend::Postgres => {
                let mut c = PgConnection::connect(&self.url)
                    .await
                    .expect("a connection");
                c.execute(sql).await.map(drop)
            }
        };
        done.expect("the statements run");
    }

    async fn sqlite() -> Self {
        let file = std::env::temp_dir().join(format!(
            "scopekey-test-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let url = format!("sqlite://{}", file.display());
        let store = SqliteStore::connect(&url)
            .await
            .expect("open sqlite test db");
        store.migrate().await.expect("migrate sqlite test db");
        Self {
            store: Arc::new(store),
            url,
            backend: Backend::Sqlite,
            file: Some(file),
            pg_admin: None,
        }
    }

    async fn postgres() -> Option<Self> {
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        if !admin_url.starts_with("postgres:") && !admin_url.starts_with("postgresql:") {
            // Left over from running the demo or the CLI on SQLite, say.
            let why = "DATABASE_URL is not a PostgreSQL URL";
            if in_ci() {
                panic!("{why}: the PostgreSQL tests need one in CI");
            }
            skipping(&format!(
                "{why}. Unset it (the default is {DEFAULT_DATABASE_URL}) or point it at a \
                 PostgreSQL server"
            ));
            return None;
        }
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                let shown = without_password(&admin_url);
                if in_ci() {
                    panic!("PostgreSQL at {shown} is unreachable in CI: {e}");
                }
                skipping(&format!(
                    "{shown} is unreachable ({e}). Start PostgreSQL (with a database \
                     `test`, or set DATABASE_URL to one the tests may create databases \
                     from)"
                ));
                return None;
            }
        };
        let name = format!("scopekey_test_{}", uuid::Uuid::now_v7().simple());
        if let Err(e) = admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
        {
            let shown = without_password(&admin_url);
            // Only a role without the right (insufficient_privilege) is a
            // set-up to skip; any other failure is the test's.
            let denied = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| code == "42501");
            if in_ci() || !denied {
                panic!("cannot create a test database on {shown}: {e}");
            }
            // A reachable server whose role may not create databases (an
            // application's own DATABASE_URL, say).
            skipping(&format!(
                "cannot create a test database on {shown} ({e}). The tests need a role \
                 that may (CREATEDB), such as the server's `postgres`"
            ));
            return None;
        }
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let store = PgStore::connect(&url)
            .await
            .expect("connect to test database");
        store.migrate().await.expect("migrate postgres test db");
        Some(Self {
            store: Arc::new(store),
            url,
            backend: Backend::Postgres,
            file: None,
            pg_admin: Some((admin_url, name)),
        })
    }

    /// Drops the PostgreSQL database (best effort; `.ci/run` also sweeps
    /// leftovers named `scopekey_test_*`). A test that fails before calling
    /// it still drops the database, when the `TestDb` is dropped.
    pub async fn cleanup(mut self) {
        if let Some((admin_url, name)) = self.pg_admin.take() {
            drop_database(&admin_url, &name).await;
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Not cleaned up (a failed assertion unwinding, say): drop the
        // database from a thread of its own, since this may run inside an
        // async runtime that cannot be blocked on.
        if let Some((admin_url, name)) = self.pg_admin.take() {
            let dropped = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(drop_database(&admin_url, &name));
                }
            });
            let _ = dropped.join();
        }
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
/// Says, once per test process, that PostgreSQL tests are skipped and why:
/// on standard error itself, which the test harness does not capture (it
/// captures `eprintln!` from passing tests, and a skipped test passes).
fn skipping(why: &str) {
    use std::io::Write;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPING the PostgreSQL tests of this test binary (they pass without \
             running): {why}. ***\n"
        );
    });
}

/// `url` with its password, if any (in the user information, or a
/// `password=` query parameter), replaced by `***`.
fn without_password(url: &str) -> String {
    let (url, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let url = without_user_password(url);
    match query {
        Some(q) => format!("{url}?{q}"),
        None => url,
    }
}

/// `url` (no query) with the password of its user information hidden.
fn without_user_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    // The last `@` ends the user information (a password may hold `/`).
    let authority_end = rest.rfind('@').map_or_else(
        || rest.find('/').unwrap_or(rest.len()),
        |at| at + rest[at..].find('/').unwrap_or(rest.len() - at),
    );
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***@{}",
                &url[..scheme_end],
                &rest[userinfo.len() + 1..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs an async test body on both backends: `both_backends!(name, body_fn)`
/// defines `mod name { sqlite(), postgres() }` calling `body_fn(db)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::testing::TestDb::new($crate::testing::Backend::Sqlite)
                    .await
                    .expect("sqlite");
                super::$body(&db).await;
                db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) =
                    $crate::testing::TestDb::new($crate::testing::Backend::Postgres).await
                else {
                    return;
                };
                super::$body(&db).await;
                db.cleanup().await;
            }
        }
    };
}

/// Waits (at most 10 s) until a session of `conn`'s database waits for a
/// lock: a test holding a row lock then knows the statement it races has
/// queued behind it, so the order of events is forced, not hoped for.
pub async fn someone_waits_for_a_lock(conn: &mut PgConnection) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing queued behind the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A store that holds each revocation and rotation back after the store it
/// wraps has made it (committed), until the test releases it: a caller that
/// stops waiting in that moment (a client hanging up, a timeout) is the
/// case tested. With [`hold_events`](Self::hold_events) set, each audit
/// event written on its own (`auth.failed`) is held back the same way
/// before it is written; with [`hold_lookups`](Self::hold_lookups) set,
/// each verification lookup after it has read; with a record in
/// [`stale`](Self::stale), [`Store::get`] of that key answers it (a read
/// taken just before a change committed elsewhere); with
/// [`fail_gets`](Self::fail_gets) set, [`Store::get`] fails; the next
/// [`failing_touches`](Self::failing_touches) writes of last use fail.
/// Everything else is passed through.
pub struct PausingStore {
    inner: Arc<dyn Store>,
    /// Notified (one permit a change) when a change has been made and is
    /// held back.
    pub made: Arc<tokio::sync::Notify>,
    /// One permit lets one held change return.
    pub release: Arc<tokio::sync::Semaphore>,
    /// Hold each [`Store::insert_event`] back, before writing, too.
    pub hold_events: std::sync::atomic::AtomicBool,
    /// Hold each [`Store::find_for_verification`] back, after reading, too.
    pub hold_lookups: std::sync::atomic::AtomicBool,
    /// What [`Store::get`] answers for this record's key instead of the
    /// store's current row.
    pub stale: std::sync::Mutex<Option<crate::KeyRecord>>,
    /// Report each revocation and rotation as failed once the store it
    /// wraps has made it (a commit whose acknowledgement was lost).
    pub fail_after_change: std::sync::atomic::AtomicBool,
    /// Fail each [`Store::get`], as a store that does not answer would.
    pub fail_gets: std::sync::atomic::AtomicBool,
    /// How many of the next [`Store::touch_last_used`] calls fail (as on a
    /// connection whose runtime has stopped), before they pass again.
    pub failing_touches: std::sync::atomic::AtomicUsize,
    /// How many [`Store::touch_last_used`] calls came.
    pub touches: std::sync::atomic::AtomicUsize,
}

impl PausingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            made: Arc::new(tokio::sync::Notify::new()),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
            hold_events: std::sync::atomic::AtomicBool::new(false),
            hold_lookups: std::sync::atomic::AtomicBool::new(false),
            stale: std::sync::Mutex::new(None),
            fail_after_change: std::sync::atomic::AtomicBool::new(false),
            fail_gets: std::sync::atomic::AtomicBool::new(false),
            failing_touches: std::sync::atomic::AtomicUsize::new(0),
            touches: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// `outcome`, or with [`fail_after_change`](Self::fail_after_change)
    /// an error whatever it was.
    fn lost_acknowledgement<T>(
        &self,
        outcome: Result<T, crate::StoreError>,
    ) -> Result<T, crate::StoreError> {
        if self
            .fail_after_change
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(crate::StoreError::msg("connection reset while committing"));
        }
        outcome
    }

    async fn hold(&self) {
        self.made.notify_one();
        self.release
            .acquire()
            .await
            .expect("the release semaphore is never closed")
            .forget();
    }
}

#[async_trait::async_trait]
impl Store for PausingStore {
    async fn migrate(&self) -> Result<(), crate::StoreError> {
        self.inner.migrate().await
    }
    async fn insert_key(
        &self,
        key: &crate::KeyRecord,
        event: &crate::AuditEvent,
    ) -> Result<(), crate::StoreError> {
        self.inner.insert_key(key, event).await
    }
    async fn find_by_hash(
        &self,
        hash: &crate::key::KeyHash,
    ) -> Result<Option<crate::KeyRecord>, crate::StoreError> {
        self.inner.find_by_hash(hash).await
    }
    async fn find_for_verification(
        &self,
        hash: &crate::key::KeyHash,
    ) -> Result<Option<crate::VerifyRecord>, crate::StoreError> {
        let found = self.inner.find_for_verification(hash).await;
        if self.hold_lookups.load(std::sync::atomic::Ordering::SeqCst) {
            self.hold().await;
        }
        found
    }
    async fn get(&self, id: crate::KeyId) -> Result<Option<crate::KeyRecord>, crate::StoreError> {
        if self.fail_gets.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::StoreError::msg("the store did not answer"));
        }
        let stale = self.stale.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match stale {
            Some(record) if record.id == id => Ok(Some(record)),
            _ => self.inner.get(id).await,
        }
    }
    async fn successor(
        &self,
        id: crate::KeyId,
    ) -> Result<Option<crate::KeyRecord>, crate::StoreError> {
        self.inner.successor(id).await
    }
    async fn list(
        &self,
        query: &crate::store::KeyQuery,
    ) -> Result<Vec<crate::KeyRecord>, crate::StoreError> {
        self.inner.list(query).await
    }
    async fn is_empty(&self) -> Result<bool, crate::StoreError> {
        self.inner.is_empty().await
    }
    async fn insert_first_key(
        &self,
        key: &crate::KeyRecord,
        event: &crate::AuditEvent,
    ) -> Result<bool, crate::StoreError> {
        self.inner.insert_first_key(key, event).await
    }
    async fn rotate(
        &self,
        rotation: &crate::store::Rotation,
    ) -> Result<crate::store::RotateOutcome, crate::StoreError> {
        let outcome = self.inner.rotate(rotation).await;
        self.hold().await;
        self.lost_acknowledgement(outcome)
    }
    async fn revoke(
        &self,
        id: crate::KeyId,
        at: time::OffsetDateTime,
        reason: Option<&str>,
        event: &crate::AuditEvent,
    ) -> Result<crate::store::RevokeOutcome, crate::StoreError> {
        let outcome = self.inner.revoke(id, at, reason, event).await;
        self.hold().await;
        self.lost_acknowledgement(outcome)
    }
    async fn insert_event(&self, event: &crate::AuditEvent) -> Result<(), crate::StoreError> {
        if self.hold_events.load(std::sync::atomic::Ordering::SeqCst) {
            self.hold().await;
        }
        self.inner.insert_event(event).await
    }
    async fn list_events(
        &self,
        query: &crate::store::EventQuery,
    ) -> Result<Vec<crate::AuditEvent>, crate::StoreError> {
        self.inner.list_events(query).await
    }
    async fn minted_by(&self, actor: crate::KeyId) -> Result<Vec<crate::KeyId>, crate::StoreError> {
        self.inner.minted_by(actor).await
    }
    async fn touch_last_used(
        &self,
        batch: &[(crate::KeyId, time::OffsetDateTime)],
    ) -> Result<(), crate::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.touches.fetch_add(1, SeqCst);
        let failing = self
            .failing_touches
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(crate::StoreError::msg(
                "error communicating with database: the runtime is being shut down",
            ));
        }
        self.inner.touch_last_used(batch).await
    }
    async fn changes(
        &self,
    ) -> Result<Option<Box<dyn crate::store::ChangeFeed>>, crate::StoreError> {
        self.inner.changes().await
    }
}

#[cfg(test)]
mod tests {
    /// Run only as the child process of the two tests below: opens a
    /// PostgreSQL test database as `both_backends!` does.
    #[tokio::test]
    #[ignore = "run as a child process by the tests of an unreachable PostgreSQL"]
    async fn child_opens_postgres() {
        let db = super::TestDb::new(super::Backend::Postgres).await;
        assert!(db.is_none(), "the server at port 1 answered");
    }

    /// This test binary running [`child_opens_postgres`] against a server
    /// that is not there, with `CI` set to `ci` (or unset): its exit
    /// status, and its standard output and error together.
    fn child(ci: Option<&str>) -> (bool, String) {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("this binary"));
        cmd.args([
            "testing::tests::child_opens_postgres",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/unreachable",
        );
        match ci {
            Some(ci) => cmd.env("CI", ci),
            None => cmd.env_remove("CI"),
        };
        let out = cmd.output().expect("run the child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("running 1 test"), "the child ran: {text}");
        (out.status.success(), text)
    }

    #[test]
    fn in_ci_an_unreachable_postgres_fails_the_test() {
        let (passed, text) = child(Some("true"));
        assert!(!passed, "{text}");
        assert!(text.contains("unreachable in CI"), "{text}");
    }

    #[test]
    fn outside_ci_an_unreachable_postgres_is_skipped_loudly() {
        let (passed, text) = child(None);
        assert!(passed, "{text}");
        assert!(text.contains("*** SKIPPING the PostgreSQL tests"), "{text}");
    }

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for yes in ["true", "TRUE", "1", "yes", "True"] {
            assert!(super::ci_says(Some(yes)), "{yes}");
        }
        for no in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("FALSE"),
            Some(" "),
        ] {
            assert!(!super::ci_says(no), "{no:?}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        for (url, shown) in [
            (
                "postgres://app:s3cr@t@db.example:5432/test?sslmode=require",
                "postgres://app:***@db.example:5432/test?sslmode=require",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            ("postgres://db.example/test", "postgres://db.example/test"),
            (
                "postgres://u@h/db?sslmode=require&password=p",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            ("postgres://u:a/b@h/db", "postgres://u:***@h/db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(super::without_password(url), shown, "{url}");
        }
    }
}
