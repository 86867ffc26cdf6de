//! What this crate's HTTP tests share: a fresh database per test on each
//! backend, runtimes ("nodes") on it, and reading answers.
//!
//! PostgreSQL tests read `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), create a database of their
//! own and drop it when done; when the server cannot be reached they skip,
//! except under `CI=true`, where they fail.

#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderName, HeaderValue};
use scopekey_runtime::sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use scopekey_runtime::{ManualClock, ScopeKey};

/// Runs `$body(&Db)` on a fresh SQLite file and a fresh PostgreSQL
/// database: `both_backends!(name, body)` defines `mod name { sqlite,
/// postgres }`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                let db = $crate::common::Db::new($crate::common::Backend::Sqlite)
                    .await
                    .expect("sqlite");
                super::$body(&db).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let Some(db) = $crate::common::Db::new($crate::common::Backend::Postgres).await
                else {
                    return;
                };
                super::$body(&db).await;
            }
        }
    };
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated database of its own for one test, removed when dropped.
#[derive(Debug)]
pub struct Db {
    pub url: String,
    backend: Backend,
    file: Option<PathBuf>,
    pg_admin: Option<(String, String)>,
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

impl Db {
    /// A fresh, migrated database, or `None` when PostgreSQL cannot be
    /// reached outside CI.
    pub async fn new(backend: Backend) -> Option<Self> {
        let db = match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!(
                    "scopekey-actix-test-{}.db",
                    uuid::Uuid::now_v7().simple()
                ));
                Self {
                    url: format!("sqlite://{}", file.display()),
                    backend,
                    file: Some(file),
                    pg_admin: None,
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|u| u.starts_with("postgres:") || u.starts_with("postgresql:"))
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
                let mut admin = match PgConnection::connect(&admin_url).await {
                    Ok(c) => c,
                    Err(e) if !in_ci() => {
                        eprintln!("*** SKIPPING PostgreSQL test: {admin_url}: {e} ***");
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL at {admin_url} is unreachable in CI: {e}"),
                };
                let name = format!("scopekey_test_{}", uuid::Uuid::now_v7().simple());
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create the test database");
                let _ = admin.close().await;
                let base = admin_url.split('?').next().unwrap_or_default();
                let scheme_end = base.find("://").map_or(0, |i| i + 3);
                let server = match base[scheme_end..].find('/') {
                    Some(slash) => &base[..scheme_end + slash],
                    None => base,
                };
                Self {
                    url: format!("{server}/{name}"),
                    backend,
                    file: None,
                    pg_admin: Some((admin_url, name)),
                }
            }
        };
        db.node(&ManualClock::starting_now())
            .await
            .migrate()
            .await
            .expect("migrate the test database");
        Some(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A runtime on a store of its own (its own pool and verification
    /// cache: another node of the service), on `clock`, whose cached
    /// verifications last an hour: what one node revokes, another keeps
    /// serving from its cache (no change listener runs in these tests).
    pub async fn node(&self, clock: &ManualClock) -> ScopeKey {
        let store = scopekey_runtime::open(&self.url)
            .await
            .expect("open the store");
        ScopeKey::builder_arc(store)
            .clock(clock.clone())
            .cache_ttl(Duration::from_secs(3600))
            .build()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_admin.take() {
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                            let _ = admin
                                .execute(AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                        }
                    });
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

/// An answer, read whole: status, headers (sorted, `date` left out) and
/// body bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Answer {
    pub async fn read<B: MessageBody>(res: ServiceResponse<B>) -> Self {
        let status = res.status().as_u16();
        let mut headers: Vec<_> = res
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str() != "date")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        headers.sort_by(|a, b| (a.0.as_str(), a.1.as_bytes()).cmp(&(b.0.as_str(), b.1.as_bytes())));
        let body = actix_web::test::read_body(res).await.to_vec();
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// Asserts a 401 `invalid_token` problem.
    #[track_caller]
    pub fn assert_invalid_token(&self) {
        assert_eq!(self.status, 401, "{self:?}");
        assert_eq!(
            self.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{self:?}"
        );
        assert_eq!(self.json()["code"], "invalid_token");
    }
}

/// How a request presents its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presenting {
    Bearer,
    XApiKey,
}

impl Presenting {
    pub const BOTH: [Presenting; 2] = [Presenting::Bearer, Presenting::XApiKey];

    /// The request with `key` presented this way.
    pub fn present(
        self,
        req: actix_web::test::TestRequest,
        key: &str,
    ) -> actix_web::test::TestRequest {
        match self {
            Presenting::Bearer => req.insert_header(("Authorization", format!("Bearer {key}"))),
            Presenting::XApiKey => req.insert_header(("X-API-Key", key.to_owned())),
        }
    }
}
