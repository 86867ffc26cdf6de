//! Bootstrapping: a fresh SQLite file gets its schema and a first admin
//! key; `migrate` is idempotent; the key format follows the service's.

mod common;

use common::*;
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{KeyFormat, ScopeKey, VerifyError};

#[tokio::test]
async fn the_first_admin_key_on_a_fresh_file() {
    let file = TempSqlite::new();
    assert!(!file.path.exists());

    // DATABASE_URL works as well as --database-url.
    let mut cmd = command();
    cmd.env("DATABASE_URL", &file.url).args([
        "keys", "create", "--name", "admin", "--scope", "*", "--json",
    ]);
    let admin = run(cmd, "").json();
    assert_eq!(admin["scopes"], serde_json::json!(["*"]));
    assert!(file.path.exists(), "the file is created with its schema");

    // The service, opening the same file, accepts the key with every scope.
    let store = scopekey_runtime::open(&file.url).await.expect("open");
    let service = ScopeKey::builder_arc(store).build();
    let principal = service
        .verify(str_of(&admin, "key"))
        .await
        .expect("admin key verifies");
    assert!(principal.grants().covers_str("api_keys:write"));
    assert!(principal.grants().covers_str("orders:delete"));
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let file = TempSqlite::new();
    for _ in 0..2 {
        let run = scopekey(&file.url, &["migrate"]);
        assert_eq!(run.code, 0, "{run:#?}");
        assert_eq!(run.stdout, "schema is up to date\n");
    }
    // After `migrate`, --no-migrate finds the schema.
    let run = scopekey(&file.url, &["--no-migrate", "keys", "list", "--json"]);
    assert_eq!(run.json()["items"], serde_json::json!([]));
    // `migrate --no-migrate` still migrates: it is the command's whole job.
    let other = TempSqlite::new();
    let run = scopekey(&other.url, &["migrate", "--no-migrate"]);
    assert_eq!(run.code, 0, "{run:#?}");
}

async fn migrate_on_a_live_store(db: &TestDb) {
    let run = scopekey(&db.url, &["migrate"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let key = create(&db.url, "after migrate", &["orders:read"]);
    let run = scopekey(
        &db.url,
        &["--no-migrate", "keys", "show", str_of(&key, "id"), "--json"],
    );
    assert_eq!(run.json()["name"], "after migrate");
}

scopekey_runtime::both_backends!(migrate_twice, migrate_on_a_live_store);

/// A PostgreSQL database without the schema (the test database is
/// migrated when made, so its schema is dropped first): the first command
/// creates it, and `migrate` finds it up to date after; `migrate` run
/// first creates it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_postgres_database_gets_its_schema() {
    let Some(db) = TestDb::new(scopekey_runtime::testing::Backend::Postgres).await else {
        return;
    };
    db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .await;
    let run = scopekey(&db.url, &["--no-migrate", "keys", "list", "--json"]);
    assert_eq!(
        run.code, 1,
        "no schema, and not asked to make one: {run:#?}"
    );

    let key = create(&db.url, "first", &["*"]);
    assert_eq!(key["status"], "active");
    let run = scopekey(&db.url, &["migrate"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "schema is up to date\n");
    let run = scopekey(&db.url, &["--no-migrate", "keys", "list", "--json"]);
    assert_eq!(run.json()["items"][0]["name"], "first", "{run:#?}");

    // `migrate` as the first command makes the schema, and --no-migrate
    // then finds it.
    db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .await;
    let run = scopekey(&db.url, &["migrate"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "schema is up to date\n");
    let run = scopekey(&db.url, &["--no-migrate", "keys", "list", "--json"]);
    assert_eq!(run.json()["items"], serde_json::json!([]), "{run:#?}");
    db.cleanup().await;
}

#[tokio::test]
async fn key_prefix_and_pepper_follow_the_service() {
    let file = TempSqlite::new();
    let format = KeyFormat::new("acme_live")
        .expect("prefix")
        .with_pepper(b"pepper from the vault");
    let store = scopekey_runtime::open(&file.url).await.expect("open");
    store.migrate().await.expect("migrate");
    let service = ScopeKey::builder_arc(store.clone())
        .key_format(format)
        .build();

    let mut cmd = command();
    cmd.env("SCOPEKEY_KEY_PREFIX", "acme_live")
        .env("SCOPEKEY_PEPPER", "pepper from the vault")
        .args(["--database-url", &file.url])
        .args([
            "keys",
            "create",
            "--name",
            "acme",
            "--scope",
            "orders:read",
            "--json",
        ]);
    let created = run(cmd, "").json();
    let plaintext = str_of(&created, "key").to_owned();
    assert!(plaintext.starts_with("acme_live_"), "{created}");
    service
        .verify(&plaintext)
        .await
        .expect("the service accepts it");

    // Without the pepper the CLI cannot find the key; with it, it can.
    let report = |pepper: Option<&str>| {
        let mut cmd = command();
        cmd.args(["--database-url", &file.url, "--key-prefix", "acme_live"])
            .args(["keys", "compromised", "--json"]);
        if let Some(p) = pepper {
            cmd.env("SCOPEKEY_PEPPER", p);
        }
        run(cmd, &plaintext).json()
    };
    assert_eq!(report(None)["results"][0]["status"], "unknown");
    assert_eq!(
        report(Some("pepper from the vault"))["results"][0]["status"],
        "revoked"
    );
    let fresh = ScopeKey::builder_arc(store)
        .key_format(
            KeyFormat::new("acme_live")
                .expect("prefix")
                .with_pepper(b"pepper from the vault"),
        )
        .build();
    assert!(matches!(
        fresh.verify(&plaintext).await,
        Err(VerifyError::Revoked)
    ));

    // With the default prefix, an acme key reads as malformed.
    let run_default =
        scopekey_with_stdin(&file.url, &["keys", "compromised", "--json"], &plaintext);
    assert_eq!(run_default.json()["results"][0]["status"], "malformed");
}

/// A pepper or prefix the environment cannot hold as text, or an empty
/// prefix, is bad usage (exit 2), named in the message, before any store
/// is touched.
#[cfg(unix)]
#[test]
fn unreadable_key_format_settings_are_bad_usage() {
    use std::os::unix::ffi::OsStrExt;
    let file = TempSqlite::new();
    let not_utf8 = std::ffi::OsStr::from_bytes(b"pepper \xff");
    let mut cmd = command();
    cmd.env("SCOPEKEY_PEPPER", not_utf8)
        .args(["--database-url", &file.url, "keys", "list"]);
    run(cmd, "")
        .fails_with(2)
        .says("SCOPEKEY_PEPPER is not valid UTF-8");

    let mut cmd = command();
    cmd.env("SCOPEKEY_KEY_PREFIX", "")
        .args(["--database-url", &file.url, "keys", "list"]);
    run(cmd, "").fails_with(2).says("prefix");
}
