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

use actix_web::HttpResponse;
use scopekey_actix::__private::{Guard, GuardInfo, StaticRequirement};
use scopekey_actix::Authenticated;

/// The guard id of [`orders`] (any id no other handler of these tests uses).
pub const ORDERS_READ: u64 = 0x5c0e_5e4e_0001_0001;

// What `#[requires_scope("orders:read")]` makes of `orders` (the macro
// names the `scopekey` facade, which this crate's tests cannot depend on):
// the requirement registered under the guard's id, and the guard as the
// handler's extractor.
#[scopekey_actix::__private::linkme::distributed_slice(scopekey_actix::__private::GUARDS)]
#[linkme(crate = scopekey_actix::__private::linkme)]
static ORDERS_READ_GUARD: GuardInfo = GuardInfo {
    id: ORDERS_READ,
    requirement: &StaticRequirement::Scope("orders:read"),
    handler: "orders",
    module: module_path!(),
};

/// A handler guarded by `orders:read`.
pub async fn orders(_guard: Guard<ORDERS_READ>) -> HttpResponse {
    HttpResponse::Ok().json(["order-1"])
}

/// The caller's name.
pub async fn whoami(caller: Authenticated) -> HttpResponse {
    HttpResponse::Ok().body(caller.name.to_string())
}

/// The management routes served by a node behind `ApiKeyAuth`, and any
/// more routes `configure` adds: `management_app!(keys)` or
/// `management_app!(keys, |cfg| ...)`. (A macro: the service's type cannot
/// be named.)
#[allow(unused_macros)] // each test file uses a part
macro_rules! management_app {
    ($keys:expr $(, $more:expr)?) => {
        actix_web::test::init_service(
            actix_web::App::new()
                .app_data($keys.clone())
                .wrap(scopekey_actix::ApiKeyAuth::new())
                .configure(scopekey_actix::routes)
                $(.configure($more))?,
        )
        .await
    };
}
#[allow(unused_imports)]
pub(crate) use management_app;

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
