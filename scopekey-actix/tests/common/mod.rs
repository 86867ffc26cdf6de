//! What this crate's HTTP tests share: a fresh database per test on each
//! backend (`scopekey_runtime::testing::TestDb`: PostgreSQL from
//! `DATABASE_URL`, skipped with a message when unreachable, except under
//! `CI=true`, where the test fails), runtimes ("nodes") on it, and reading
//! answers.

#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderName, HeaderValue};
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
                db.cleanup().await;
            }

            #[actix_web::test]
            async fn postgres() {
                let Some(db) = $crate::common::Db::new($crate::common::Backend::Postgres).await
                else {
                    return;
                };
                super::$body(&db).await;
                db.cleanup().await;
            }
        }
    };
}

pub use scopekey_runtime::testing::{Backend, TestDb as Db};

/// Runtimes ("nodes") on a test database.
pub trait Nodes {
    /// A runtime on a store of its own (its own pool and verification
    /// cache: another node of the service), on `clock`, whose cached
    /// verifications last an hour: what one node revokes, another keeps
    /// serving from its cache (no change listener runs in these tests).
    async fn node(&self, clock: &ManualClock) -> ScopeKey;
}

impl Nodes for Db {
    async fn node(&self, clock: &ManualClock) -> ScopeKey {
        let store = scopekey_runtime::open(&self.url)
            .await
            .expect("open the store");
        ScopeKey::builder_arc(store)
            .clock(clock.clone())
            .cache_ttl(Duration::from_secs(3600))
            .build()
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
