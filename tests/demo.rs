//! The demo service (`examples/orders_api.rs`), run as a newcomer runs it:
//! the real binary, its environment variables, its standard output. On
//! SQLite with no `DATABASE_URL` (the default file in the working folder)
//! and on PostgreSQL:
//!
//! - the first start creates one admin key (`*`) and prints it as the line
//!   `admin key: <key>` on standard output; later starts print nothing;
//! - `BIND` sets the address; `/health` is public; `/orders` needs
//!   `orders:read`, `POST /orders` `orders:write`, `DELETE /orders/{id}`
//!   `any("orders:admin", "orders:delete")`; the management routes are
//!   mounted under `/api-keys`;
//! - SIGTERM stops it cleanly, writing the pending last-used times;
//! - `SCOPEKEY_KEY_PREFIX` and `SCOPEKEY_PEPPER` set the key format, as
//!   the CLI reads them: keys made elsewhere with the same format work.
//!
//! `cargo test` builds the examples before running any test; the binary is
//! taken from beside this test's own (`target/<profile>/examples`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{NO_KEY, Response, insufficient, key_and_id, request_to};
use scopekey::{Actor, KeyFormat, NewKey, ScopeKey};
use scopekey_runtime::testing::{Backend, TestDb};
use serde_json::json;

/// The demo binary `cargo test` built beside this test.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/demo-<hash> -> target/<profile>/examples/orders_api
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir
        .join("examples")
        .join(format!("orders_api{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it (a filtered run such as \
         `cargo test --test demo` does not: run `cargo build --example orders_api` first)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound, then released for the demo to take).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// One run of the demo.
struct Demo {
    child: Child,
    addr: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    /// Starts the demo in `dir`, with `DATABASE_URL` set or not, and waits
    /// until `/health` answers.
    fn start(dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_with(dir, database_url, &[])
    }

    /// The same, with more environment variables.
    fn start_with(dir: &Path, database_url: Option<&str>, env: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let mut cmd = Command::new(demo_binary());
        cmd.current_dir(dir)
            .env("BIND", addr.to_string())
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("SCOPEKEY_WEBHOOK_URL")
            .env_remove("SCOPEKEY_WEBHOOK_SECRET")
            .env_remove("SCOPEKEY_ROTATION_SECRET")
            .env_remove("SCOPEKEY_NOTIFIER_INTERVAL_SECONDS")
            .env_remove("SCOPEKEY_KEY_PREFIX")
            .env_remove("SCOPEKEY_PEPPER")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let mut child = cmd.spawn().expect("start the demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let demo = Self {
            child,
            addr,
            stdout: rx,
        };
        demo.wait_ready();
        demo
    }

    fn wait_ready(&self) {
        // Readiness, not timing: poll until the port answers (a first
        // start migrates the store and, on a cold build machine, may take
        // a while).
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the demo did not listen on {} within 60 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next line on standard output (waiting for it a while).
    fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("a line on standard output")
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>) -> Response {
        let req = request_to(self.addr, method, path);
        match key {
            Some(key) => req.bearer(key).send().await,
            None => req.send().await,
        }
    }

    async fn post_json(&self, path: &str, key: &str, body: serde_json::Value) -> Response {
        request_to(self.addr, "POST", path)
            .bearer(key)
            .json(&body)
            .send()
            .await
    }

    /// SIGTERM, then waits for a clean exit; returns what it printed on
    /// standard output that was not read yet.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "the demo exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The process is gone: the reader sees the end of its output.
        self.stdout.iter().collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin key from an `admin key: <key>` line.
fn admin_key(line: &str) -> String {
    let key = line
        .strip_prefix("admin key: ")
        .unwrap_or_else(|| panic!("not an admin key line: {line:?}"));
    assert!(key.starts_with("sk_"), "{key}");
    key.to_owned()
}

/// What a newcomer does with the demo: the first start's admin key, the
/// guarded orders routes, a least-privilege key made through the mounted
/// routes, a restart that prints nothing and keeps the keys.
async fn tour(dir: &Path, database_url: Option<&str>) {
    let demo = Demo::start(dir, database_url);
    let admin = admin_key(&demo.next_line());

    assert_eq!(demo.send("GET", "/health", None).await.status, 200);
    demo.send("GET", "/orders", None)
        .await
        .assert_problem(401, Some(NO_KEY));
    assert_eq!(demo.send("GET", "/orders", Some(&admin)).await.status, 200);
    let order = demo
        .post_json("/orders", &admin, json!({"item": "tea", "quantity": 2}))
        .await;
    assert_eq!(order.status, 201, "{}", order.text());
    let order_id = order.json()["id"].as_u64().expect("order id");

    // A reader may read, not write or delete.
    let created = demo
        .post_json(
            "/api-keys",
            &admin,
            json!({"name": "reader", "scopes": ["orders:read"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let (reader, _) = key_and_id(&created.json());
    let listed = demo.send("GET", "/orders", Some(&reader)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["items"][0]["item"], "tea");
    demo.post_json("/orders", &reader, json!({"item": "x", "quantity": 1}))
        .await
        .assert_problem(403, Some(&insufficient("orders:write")));
    demo.send("DELETE", &format!("/orders/{order_id}"), Some(&reader))
        .await
        .assert_problem(403, Some(&insufficient("orders:admin orders:delete")));

    // `orders:delete` is one of the two that DELETE accepts.
    let created = demo
        .post_json(
            "/api-keys",
            &admin,
            json!({"name": "janitor", "scopes": ["orders:delete"]}),
        )
        .await;
    let (janitor, _) = key_and_id(&created.json());
    let deleted = demo
        .send("DELETE", &format!("/orders/{order_id}"), Some(&janitor))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());

    // SIGTERM: a clean exit that writes the pending last-used times. The
    // admin key line was the only line printed.
    assert_eq!(demo.terminate(), Vec::<String>::new());

    // A second start on the same store prints nothing and keeps the keys.
    let demo = Demo::start(dir, database_url);
    let me = demo.send("GET", "/api-keys/self", Some(&reader)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert!(
        me.json()["last_used_at"].is_string(),
        "last use written at shutdown: {}",
        me.text()
    );
    assert_eq!(demo.send("GET", "/orders", Some(&admin)).await.status, 200);
    assert_eq!(
        demo.terminate(),
        Vec::<String>::new(),
        "a start with keys in the store prints nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_sqlite_by_default() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    tour(&dir, None).await;
    // No DATABASE_URL: the store is a SQLite file in the working folder.
    assert!(dir.join("scopekey-demo.db").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    tour(&dir, Some(&db.url)).await;
    // DATABASE_URL was used: no SQLite file appeared.
    assert!(!dir.join("scopekey-demo.db").exists());
    std::fs::remove_dir_all(&dir).ok();
    db.cleanup().await;
}

/// The key format comes from the environment the CLI reads: a key made
/// with the same prefix and pepper (as `scopekey keys create` makes it)
/// works in the demo; one made without the pepper does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reads_the_key_format_like_the_cli() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pepper = "pepper from the vault";
    let demo = Demo::start_with(
        &dir,
        Some(&db.url),
        &[
            ("SCOPEKEY_KEY_PREFIX", "acme_live"),
            ("SCOPEKEY_PEPPER", pepper),
        ],
    );
    let admin = demo.next_line();
    assert!(admin.starts_with("admin key: acme_live_"), "{admin}");

    let elsewhere = |format: KeyFormat| {
        ScopeKey::builder_arc(db.store.clone())
            .key_format(format)
            .build()
    };
    let format = KeyFormat::new("acme_live").expect("prefix");
    let same = elsewhere(format.clone().with_pepper(pepper.as_bytes()))
        .create(NewKey::new("tool", ["orders:read"]), Actor::System)
        .await
        .expect("create");
    let unpeppered = elsewhere(format)
        .create(NewKey::new("stray", ["orders:read"]), Actor::System)
        .await
        .expect("create");
    let same = same.plaintext.expose_secret();
    let unpeppered = unpeppered.plaintext.expose_secret();
    assert_eq!(demo.send("GET", "/orders", Some(same)).await.status, 200);
    demo.send("GET", "/orders", Some(unpeppered))
        .await
        .assert_problem(401, Some(common::INVALID_TOKEN));

    assert_eq!(demo.terminate(), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
    db.cleanup().await;
}
