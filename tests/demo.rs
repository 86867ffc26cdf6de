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
//!   the CLI reads them: keys made elsewhere with the same format work;
//! - `SCOPEKEY_WEBHOOK_URL`, `SCOPEKEY_WEBHOOK_SECRET` and
//!   `SCOPEKEY_NOTIFIER_INTERVAL_SECONDS` send signed expiry notices.
//!
//! `cargo test` builds the examples before running any test; the binary is
//! taken from beside this test's own (`target/<profile>/examples`). Unix
//! only: it stops the demo with SIGTERM.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write as _};
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

/// The lines of a child's output, as they come (echoed to this test's
/// standard error when `echo`, so a failure shows the demo's logs).
fn lines(
    output: impl std::io::Read + Send + 'static,
    echo: bool,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if echo {
                eprintln!("demo: {line}");
            }
            if tx.send(line).is_err() && !echo {
                break;
            }
        }
    });
    rx
}

/// The address the demo logs once it listens; fails at once if it exits
/// first. (A first start migrates the store, which on a cold build machine
/// may take a while: readiness, not timing.)
fn listening_addr(child: &mut Child, stderr: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some((_, addr)) = line.split_once("listening on http://") {
                    return addr.trim().parse().expect("the logged address");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the demo closed its standard error before listening")
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the demo exited with {status} before listening");
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not listen within 60 s"
        );
    }
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
        let mut child = Self::command(dir, database_url, env)
            .spawn()
            .expect("start the demo");
        let stdout = lines(child.stdout.take().expect("stdout"), false);
        let stderr = lines(child.stderr.take().expect("stderr"), true);
        let addr = listening_addr(&mut child, &stderr);
        Self {
            child,
            addr,
            stdout,
        }
    }

    /// The demo's command line: run in `dir`, on port 0 unless `env` sets
    /// `BIND`, with none of this process's scopekey settings, its output
    /// piped.
    fn command(dir: &Path, database_url: Option<&str>, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(demo_binary());
        // Port 0: the system picks a free port when the demo binds, and the
        // demo logs it (`listening on http://...`), so no other process can
        // take it in between.
        cmd.current_dir(dir)
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn,orders_api=info")
            .env_remove("DATABASE_URL")
            .env_remove("SCOPEKEY_WEBHOOK_URL")
            .env_remove("SCOPEKEY_WEBHOOK_SECRET")
            .env_remove("SCOPEKEY_ROTATION_SECRET")
            .env_remove("SCOPEKEY_ROTATION_WEBHOOK_PORTS")
            .env_remove("SCOPEKEY_NOTIFIER_INTERVAL_SECONDS")
            .env_remove("SCOPEKEY_WEBHOOK_EVENTS")
            .env_remove("SCOPEKEY_NOTICE_THRESHOLDS")
            .env_remove("SCOPEKEY_KEY_PREFIX")
            .env_remove("SCOPEKEY_PEPPER")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        cmd
    }

    /// The next line on standard output (waiting for it a while).
    fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("a line on standard output")
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>) -> Response {
        let req = request_to(self.addr, method, path);
        let req = match key {
            Some(key) => req.bearer(key),
            None => req,
        };
        answered(method, path, req).await
    }

    async fn post_json(&self, path: &str, key: &str, body: serde_json::Value) -> Response {
        let req = request_to(self.addr, "POST", path).bearer(key).json(&body);
        answered("POST", path, req).await
    }

    /// Uses `key` (its id, and the time just before the request): the
    /// last use a stop must write.
    async fn use_key(&self, key: &str) -> (String, time::OffsetDateTime) {
        let before = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
        let me = self.send("GET", "/api-keys/self", Some(key)).await;
        assert_eq!(me.status, 200, "{}", me.text());
        let id = me.json()["id"].as_str().expect("an id").to_owned();
        (id, before)
    }

    /// The last use recorded by [`use_key`](Self::use_key) before the
    /// previous run stopped is in the store: read with the admin key, which
    /// this run has not seen use the key (so no pending use of its own
    /// answers for it).
    async fn assert_last_use_written(
        &self,
        admin: &str,
        (id, before): &(String, time::OffsetDateTime),
    ) {
        let key = self
            .send("GET", &format!("/api-keys/{id}"), Some(admin))
            .await;
        assert_eq!(key.status, 200, "{}", key.text());
        let at = key.json()["last_used_at"].as_str().map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .expect("an RFC 3339 time")
        });
        assert!(
            at.is_some_and(|at| at >= *before),
            "the last use, written when the demo stopped: {}",
            key.text()
        );
    }

    /// Creates a key with one scope through the mounted routes; its
    /// plaintext.
    async fn create_key(&self, admin: &str, name: &str, scope: &str) -> String {
        let created = self
            .post_json("/api-keys", admin, json!({"name": name, "scopes": [scope]}))
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        key_and_id(&created.json()).0
    }

    /// SIGTERM, then waits for a clean exit; returns what it printed on
    /// standard output that was not read yet.
    fn terminate(self) -> Vec<String> {
        self.stop_with("-TERM")
    }

    /// The same with another signal (`kill`'s option, e.g. `-INT`).
    fn stop_with(mut self, signal: &str) -> Vec<String> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
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
                "the demo did not stop within 30 s of {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The process is gone: the reader sees the end of its output.
        self.stdout.iter().collect()
    }
}

/// A child process killed and reaped when dropped, so that a failed
/// assertion leaves no server running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed assertion must not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer to a request, or a failure after 30 s: a demo that accepts a
/// connection and never answers must not hang the test run.
async fn answered(method: &str, path: &str, req: common::Request) -> Response {
    tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
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

    // The admin key holds exactly `*`, and it is the store's only key.
    let me = demo.send("GET", "/api-keys/self", Some(&admin)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["scopes"], json!(["*"]), "{}", me.text());
    let listed = demo.send("GET", "/api-keys?limit=500", Some(&admin)).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one key on first start: {listed}");
    assert_eq!(items[0]["id"], me.json()["id"], "{listed}");

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
    let reader = demo.create_key(&admin, "reader", "orders:read").await;
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
    let janitor = demo.create_key(&admin, "janitor", "orders:delete").await;
    let deleted = demo
        .send("DELETE", &format!("/orders/{order_id}"), Some(&janitor))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    // ...and `orders:admin` the other.
    let order = demo
        .post_json("/orders", &admin, json!({"item": "jam", "quantity": 1}))
        .await;
    let order_id = order.json()["id"].as_u64().expect("order id");
    let manager = demo.create_key(&admin, "manager", "orders:admin").await;
    let deleted = demo
        .send("DELETE", &format!("/orders/{order_id}"), Some(&manager))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());

    // A load balancer's HEAD check is answered as GET is, without a body.
    let head = demo.send("HEAD", "/health", None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // SIGTERM: a clean exit that writes the pending last-used times. The
    // admin key line was the only line printed.
    let last_use = demo.use_key(&reader).await;
    assert_eq!(demo.terminate(), Vec::<String>::new());

    // A second start on the same store prints nothing and keeps the keys.
    let demo = Demo::start(dir, database_url);
    demo.assert_last_use_written(&admin, &last_use).await;
    assert_eq!(demo.send("GET", "/orders", Some(&admin)).await.status, 200);
    assert_eq!(
        demo.terminate(),
        Vec::<String>::new(),
        "a start with keys in the store prints nothing"
    );
}

/// The admin key line comes once the demo listens: a harness that takes
/// the line for "ready" can use the key at once. Standard output and error
/// share one pipe here, so their lines arrive in the order written.
#[test]
fn the_admin_key_is_printed_once_the_demo_listens() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut cmd = Demo::command(&dir, None, &[]);
    cmd.stdout(writer.try_clone().expect("a second writer"))
        .stderr(writer);
    let child = Reaped(cmd.spawn().expect("start the demo"));
    // The command holds the writing ends too: without it, the reader sees
    // the end of the output when the demo exits.
    drop(cmd);
    let output = lines(reader, true);
    let mut listening = None;
    let connected = loop {
        let line = output
            .recv_timeout(Duration::from_secs(60))
            .expect("the admin key line within 60 s");
        if let Some((_, addr)) = line.split_once("listening on http://") {
            listening = Some(addr.trim().parse::<SocketAddr>().expect("an address"));
        }
        if line.starts_with("admin key: ") {
            admin_key(&line);
            let addr = listening.expect("the demo listened before it printed the admin key");
            break std::net::TcpStream::connect(addr);
        }
    };
    drop(child);
    std::fs::remove_dir_all(&dir).ok();
    connected.expect("the demo accepts connections once it printed the admin key");
}

/// An admin key that cannot be printed (standard output closed, as under
/// some supervisors) is reported on standard error with what to do, and
/// the demo serves on.
#[test]
fn an_admin_key_that_cannot_be_printed_is_reported() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // Nobody reads: the demo's write fails (EPIPE).
    drop(reader);
    let mut cmd = Demo::command(&dir, None, &[]);
    cmd.stdout(writer);
    let mut child = Reaped(cmd.spawn().expect("start the demo"));
    drop(cmd);
    let stderr = lines(child.0.stderr.take().expect("stderr"), true);
    let addr = listening_addr(&mut child.0, &stderr);
    let mut logged = Vec::new();
    let reported = loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(60))
            .expect("the failure reported within 60 s");
        logged.push(line.clone());
        if line.contains("could not print the admin key") {
            break line;
        }
    };
    // Still serving: a request is answered, and the demo has not exited.
    let health = (|| {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        std::io::Result::Ok(answer)
    })();
    let running = child.0.try_wait().expect("the demo's state").is_none();
    drop(child);
    logged.extend(stderr.try_iter());
    std::fs::remove_dir_all(&dir).ok();
    // What to run, from this workspace, against the demo's store.
    for command in [
        "cargo run -p scopekey-cli -- --database-url 'sqlite://scopekey-demo.db' keys revoke ",
        "cargo run -p scopekey-cli -- --database-url 'sqlite://scopekey-demo.db' keys create \
         --name admin",
    ] {
        assert!(reported.contains(command), "{reported}");
    }
    let health = health.expect("the demo answers");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(running, "the demo serves on");
    // A hint (`sk_…abcd`) may be logged, a key (`sk_` and its body) not.
    let plaintext = |line: &str| {
        line.match_indices("sk_")
            .any(|(i, _)| line[i + 3..].chars().next().is_some_and(|c| c != '…'))
    };
    assert!(
        !logged.iter().any(|line| plaintext(line)),
        "no plaintext in the logs: {logged:?}"
    );
}

/// SIGINT (Ctrl-C) stops the demo at once, as cleanly: exit status 0, the
/// pending last-used times written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_demo_cleanly() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let demo = Demo::start(&dir, None);
    let admin = admin_key(&demo.next_line());
    let reader = demo.create_key(&admin, "reader", "orders:read").await;
    let last_use = demo.use_key(&reader).await;
    demo.stop_with("-INT");
    let demo = Demo::start(&dir, None);
    demo.assert_last_use_written(&admin, &last_use).await;
    demo.terminate();
    std::fs::remove_dir_all(&dir).ok();
}

/// A first start that fails (its address is taken) makes no admin key, so
/// the next start still prints one.
#[test]
fn a_failed_first_start_keeps_the_admin_key_for_the_next() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let mut cmd = Demo::command(&dir, None, &[("BIND", addr.as_str())]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = Reaped(cmd.spawn().expect("run the demo"));
    // It gives up at once; a demo that hangs instead fails the test, not
    // the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().expect("the demo's state").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.0.wait().expect("its status");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().expect("its output"), &mut stdout)
        .expect("read its output");
    assert!(!status.success(), "the address was taken");
    assert!(!stdout.contains("admin key"), "{stdout}");
    drop(taken);
    let demo = Demo::start(&dir, None);
    admin_key(&demo.next_line());
    demo.terminate();
    std::fs::remove_dir_all(&dir).ok();
}

/// An in-memory SQLite URL is refused at start with a message saying why
/// (the notifier would open another, empty database), before any key is
/// made.
#[test]
fn an_in_memory_store_is_refused() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for url in ["sqlite::memory:", "sqlite://demo?mode=memory"] {
        let out = Demo::command(&dir, Some(url), &[])
            .output()
            .expect("run the demo");
        assert!(!out.status.success(), "{url}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stdout.contains("admin key"), "{stdout}");
        assert!(stderr.contains("not an in-memory"), "{url}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A setting that does not work is named in the error; an empty one is
/// no setting (the default).
#[test]
fn bad_settings_are_named_and_empty_ones_unset() {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = Demo::command(&dir, None, &[("BIND", "8080")])
        .output()
        .expect("run the demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BIND=8080"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    let out = Demo::command(&dir, Some("mysql://db.example/keys"), &[])
        .output()
        .expect("run the demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    // `DATABASE_URL=` (set, empty): the SQLite file in the working folder;
    // `BIND=` (set, empty): the default address, 127.0.0.1:8080, if this
    // machine has it free (else left out, said so).
    // In CI the port must be free: the default is checked there, always.
    let default_bind: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let free = std::net::TcpListener::bind(default_bind).is_ok();
    let mut env = vec![("DATABASE_URL", "")];
    if free {
        env.push(("BIND", ""));
    } else {
        assert!(
            !scopekey_runtime::testing::in_ci(),
            "port 8080 is taken: the demo's default BIND cannot be checked"
        );
        // Not captured by the test harness, so that it is seen.
        let _ = writeln!(
            std::io::stderr(),
            "*** port 8080 is taken on this machine: the demo's default BIND is not checked ***"
        );
    }
    let demo = Demo::start_with(&dir, None, &env);
    if free {
        assert_eq!(demo.addr, default_bind);
    }
    assert!(demo.next_line().starts_with("admin key: "));
    assert!(dir.join("scopekey-demo.db").exists());
    assert_eq!(demo.terminate(), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
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
    // The test database comes migrated: drop its schema (the migrations'
    // own bookkeeping with it), so the demo's first start must create it.
    db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .await;
    let tables = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .expect("a connection");
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count the tables")
    };
    assert_eq!(tables().await, 0, "an empty database");
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    tour(&dir, Some(&db.url)).await;
    // DATABASE_URL was used: no SQLite file appeared, and the first start
    // created the schema in that database.
    assert!(!dir.join("scopekey-demo.db").exists());
    assert!(tables().await > 0, "the demo created its tables");
    std::fs::remove_dir_all(&dir).ok();
    db.cleanup().await;
}

/// The key format comes from the environment the CLI reads
/// (`SCOPEKEY_KEY_PREFIX`, `SCOPEKEY_PEPPER`): a key made elsewhere with the
/// same prefix and pepper works in the demo; one made without the pepper
/// does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reads_the_key_format_from_the_environment() {
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

/// Automatic rotation as the environment sets it: a rotation secret, and
/// the ports keys' webhooks may name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reads_the_rotation_settings_from_the_environment() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let demo = Demo::start_with(
        &dir,
        Some(&db.url),
        &[
            (
                "SCOPEKEY_ROTATION_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("SCOPEKEY_ROTATION_WEBHOOK_PORTS", "443,8443"),
        ],
    );
    let admin = admin_key(&demo.next_line());
    let bot = |port: u16| {
        json!({
            "name": "sync bot",
            "scopes": ["orders:read"],
            "rotation_period_seconds": 7_776_000,
            "rotation_webhook_url": format!("https://bot.example:{port}/rotated"),
        })
    };
    let created = demo.post_json("/api-keys", &admin, bot(8443)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(
        created.json()["rotation_webhook_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{}",
        created.text()
    );
    let refused = demo.post_json("/api-keys", &admin, bot(9443)).await;
    assert_eq!(refused.status, 400, "{}", refused.text());

    assert_eq!(demo.terminate(), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
    db.cleanup().await;
}

/// One webhook request as received: its headers (names lower case) and body.
struct Hook {
    headers: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

/// A receiver on a free local port that answers 204 to every request and
/// hands each one over; its URL.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Hook>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).ok(); // the request line
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).ok();
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            );
            if tx.send(Hook { headers, body }).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// `SCOPEKEY_WEBHOOK_URL`, `SCOPEKEY_WEBHOOK_SECRET` and
/// `SCOPEKEY_NOTIFIER_INTERVAL_SECONDS` (SPEC §6): the demo's notifier
/// posts a signed `key.expiring` notice for a key that expires within the
/// notice period, on its next pass, and announces a compromise report
/// (SPEC §4) with no other setting; on both databases.
async fn demo_webhooks(db: &TestDb) {
    let dir = std::env::temp_dir().join(format!("scopekey-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (url, hooks) = webhook_receiver();
    let secret = "whsec_ZGVtbyB3ZWJob29rIHNlY3JldCwgZm9yIHRlc3Rz";
    let demo = Demo::start_with(
        &dir,
        Some(&db.url),
        &[
            ("SCOPEKEY_WEBHOOK_URL", url.as_str()),
            ("SCOPEKEY_WEBHOOK_SECRET", secret),
            ("SCOPEKEY_NOTIFIER_INTERVAL_SECONDS", "1"),
        ],
    );
    let admin = admin_key(&demo.next_line());
    let created = demo
        .post_json(
            "/api-keys",
            &admin,
            json!({ "name": "short-lived", "scopes": ["orders:read"], "expires_in_seconds": 86_400 }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let plaintext = created.json()["key"].as_str().expect("key").to_owned();

    // The next pass (a second apart) sends it; generous for a loaded machine.
    let next_hook = || {
        let hook = hooks
            .recv_timeout(Duration::from_secs(30))
            .expect("a webhook within 30 s");
        let header = |name: &str| {
            hook.headers
                .get(name)
                .map(String::as_str)
                .unwrap_or_default()
        };
        scopekey::WebhookVerifier::new(secret)
            .expect("secret")
            .verify(
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                &hook.body,
            )
            .expect("signed with SCOPEKEY_WEBHOOK_SECRET");
        let text = String::from_utf8_lossy(&hook.body).into_owned();
        assert!(!text.contains(&admin) && !text.contains(&plaintext));
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
    };
    let body = next_hook();
    assert_eq!(body["type"], "key.expiring", "{body}");
    assert_eq!(body["data"]["id"], id.as_str(), "{body}");
    assert_eq!(body["data"]["action"], "rotate", "{body}");

    // The key leaks: the report revokes it and the webhook announces it.
    let report = demo
        .post_json(
            "/api-keys/compromised",
            &admin,
            json!({ "keys": [plaintext] }),
        )
        .await;
    assert_eq!(report.status, 200, "{}", report.text());
    let body = next_hook();
    assert_eq!(body["type"], "key.compromised", "{body}");
    assert_eq!(body["data"]["id"], id.as_str(), "{body}");

    demo.terminate();
    std::fs::remove_dir_all(&dir).ok();
}

scopekey_runtime::both_backends!(
    demo_sends_expiry_notices_to_the_configured_webhook,
    demo_webhooks
);
