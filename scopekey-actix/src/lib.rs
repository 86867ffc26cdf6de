//! actix-web integration for scopekey: the middleware that verifies API
//! keys, extractors for the verified caller, RFC 9457 problem+json errors
//! with RFC 6750 challenges, and the prebuilt management routes.
//!
//! Users reach this crate as `scopekey::actix`. Wiring it takes four lines:
//! the runtime in app data, the middleware, the management routes, and
//! scope checks on your handlers (`#[requires_scope("orders:read")]` from
//! the `scopekey` facade, or [`Authenticated::require`]).
//!
//! ```
//! use actix_web::{App, HttpResponse, test, web};
//! use scopekey_actix::{ApiKeyAuth, Authenticated};
//! use scopekey_runtime::{Actor, NewKey, ScopeKey, store::sqlite::SqliteStore};
//!
//! async fn list_orders(caller: Authenticated) -> Result<HttpResponse, scopekey_actix::AuthError> {
//!     caller.require("orders:read")?;
//!     Ok(HttpResponse::Ok().json(["order-1"]))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let keys = ScopeKey::builder(SqliteStore::connect("sqlite::memory:").await?).build();
//! keys.migrate().await?;
//! let reader = keys.create(NewKey::new("reader", ["orders:read"]), Actor::System).await?;
//!
//! let app = test::init_service(
//!     App::new()
//!         .app_data(keys.clone())               // the runtime: a cheap-to-clone handle
//!         .wrap(ApiKeyAuth::new())              // verifies any presented key, once
//!         .configure(scopekey_actix::routes)    // POST/GET /api-keys, rotate, revoke, ...
//!         .route("/orders", web::get().to(list_orders)),
//! )
//! .await;
//!
//! let anonymous = test::TestRequest::get().uri("/orders").to_request();
//! let res = test::call_service(&app, anonymous).await;
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers().get("www-authenticate").unwrap(), r#"Bearer realm="api""#);
//!
//! let bearer = format!("Bearer {}", reader.plaintext.expose_secret());
//! let req = test::TestRequest::get().uri("/orders").insert_header(("Authorization", bearer.as_str()));
//! assert_eq!(test::call_service(&app, req.to_request()).await.status(), 200);
//!
//! // The reader may not create keys: 403 naming the scope it lacks.
//! let req = test::TestRequest::post()
//!     .uri("/api-keys")
//!     .insert_header(("Authorization", bearer.as_str()))
//!     .set_json(serde_json::json!({ "name": "x", "scopes": ["orders:read"] }));
//! let res = test::call_service(&app, req.to_request()).await;
//! assert_eq!(res.status(), 403);
//! assert_eq!(
//!     res.headers().get("www-authenticate").unwrap(),
//!     r#"Bearer error="insufficient_scope", scope="api_keys:write""#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! In a server, also start the [`Background`] work (the last-used flusher
//! and, on PostgreSQL, the change listener)
//! and shut it down after the server stops; the `orders_api` example shows
//! the whole program.
//!
//! # Design choices
//!
//! - **The runtime in app data** is a plain [`ScopeKey`](scopekey_runtime::ScopeKey) registered with
//!   `App::app_data(keys.clone())` (it is already an `Arc` handle); a
//!   `web::Data<ScopeKey>` is accepted too. Without either, every
//!   authentication is refused with a logged 500, never passed. Register it
//!   where the middleware can see it: [`ApiKeyAuth`] wrapped around the
//!   whole `App` runs before a `web::scope`'s own app data is visible, so
//!   with a runtime registered only on the scope, the middleware answers
//!   every request 500, whether it presents a key or not, on public routes
//!   too: it fails closed, since before routing it cannot tell what a
//!   request will reach. Wrap it on that scope instead
//!   (`web::scope("/v1").app_data(keys.clone()).wrap(ApiKeyAuth::new())`),
//!   where the scope's app data is visible.
//! - **The middleware is optional.** [`ApiKeyAuth`] verifies before routing;
//!   without it, `#[requires_scope]` guards and the [`Authenticated`] /
//!   [`MaybeAuthenticated`] extractors verify on their own. Either way a key
//!   is verified at most once per request (and runtime, below): the
//!   middleware records the outcome in the request's extensions, and
//!   without it the first guard or extractor shares its pending
//!   verification there. A key whose verdict is cached is decided without
//!   I/O or a future
//!   ([`ScopeKey::verify_cached`](scopekey_runtime::ScopeKey::verify_cached)).
//!   One difference: a `#[requires_scope]` guard always answers before the
//!   handler's other extractors run, while [`Authenticated`] and
//!   [`MaybeAuthenticated`] are extracted alongside them (actix-web runs a
//!   handler's extractors together and answers with the first error), so
//!   without the middleware a bad path or body can be answered (404, 400,
//!   415) before a key that needs a store lookup is refused. With
//!   [`ApiKeyAuth`] installed the key is always judged first.
//! - **Several runtimes** (a per-tenant store registered on each tenant's
//!   `web::scope`): the recorded outcome names the runtime that gave it
//!   ([`ScopeKey::same_runtime`](scopekey_runtime::ScopeKey::same_runtime):
//!   its clones are the same runtime, another built on the same store is
//!   not). Register every runtime the same way (all as `ScopeKey`, or all
//!   as `web::Data<ScopeKey>`): a scope's `web::Data<ScopeKey>` under an
//!   application's plain `ScopeKey` cannot be told nearer, and such a
//!   request is answered 500 (logged). A guard, extractor or nested [`ApiKeyAuth`] that sees another
//!   runtime in app data than the one that verified verifies the key again
//!   against its own, and keeps that answer for the rest of the request, so
//!   a key verified against the application's store never acts on a
//!   scope's. Mind that an [`ApiKeyAuth`] around the whole `App` refuses
//!   (401) any key the application-level runtime does not know, before a
//!   tenant's scope is reached: with per-tenant stores, wrap the middleware
//!   on each tenant's scope, beside its runtime.
//! - **No key on an unguarded route passes**; a presented but invalid key
//!   is refused (401 `invalid_token`) by the middleware even on unguarded
//!   routes. Without the middleware, only routes that ask for the caller
//!   refuse it.
//! - **Credentials**: `Authorization: Bearer <key>` (scheme in any case) or
//!   `X-API-Key: <key>`; an `Authorization` header with another scheme
//!   (`Basic ...`, a `Negotiate` token of any length) counts as no key (RFC
//!   6750 §3.1) when it comes alone. More than one
//!   `Authorization` or `X-API-Key` header, or one of each (whatever the
//!   `Authorization` scheme: two headers are two credentials), is 400
//!   `invalid_request`; so is a Bearer or `X-API-Key` value holding a
//!   comma, which no key does, and an `Authorization` value of another
//!   scheme with `, Bearer ...` after it: two header lines a proxy merged
//!   into one. A Bearer or `X-API-Key` value over
//!   [`MAX_CREDENTIAL_HEADER_LEN`] bytes or not UTF-8 is 401 `invalid_token`
//!   (a malformed token, RFC 6750 §3.1), refused before any hashing or
//!   store access. Any other text that is not a key's (other characters, a
//!   wrong checksum) is 401 `invalid_token` too, refused by the runtime's
//!   format check before any store access. Both are logged and sampled into
//!   the audit log as `auth.failed` (reason `malformed`, no hint).
//! - **Challenges** follow RFC 6750 §3: `Bearer realm="api"`
//!   when no key was presented (the realm is configurable, see
//!   [`AuthConfig`]), and `Bearer error="invalid_token"`,
//!   `Bearer error="insufficient_scope", scope="..."` and
//!   `Bearer error="invalid_request"` otherwise. Responses to malformed,
//!   unknown, revoked and expired keys are byte-identical (but for `Date`),
//!   also between a refusal before the handler and one by a management
//!   route after it (a key revoked or expired while its request ran, or
//!   revoked through another node while this node's cache still held it:
//!   every management route judges its caller from the store). A guard's
//!   `scope` lists every scope its requirement names, in order: for
//!   `any("orders:admin", "orders:delete")` that is
//!   `scope="orders:admin orders:delete"`, any one of which would do (RFC
//!   6750's attribute has no way to say "one of"), and for `all(...)` it
//!   includes scopes the key already holds.
//! - **Problem bodies** use `type: "about:blank"` with the status's reason
//!   phrase as `title` (RFC 9457 §4.2.1), plus a `code` member a client can
//!   match (`unauthorized`, `invalid_token`, `insufficient_scope`, `invalid_request`,
//!   `invalid_request_body`, `not_found`, `method_not_allowed`, `conflict`,
//!   `payload_too_large`, `unsupported_media_type`, `unavailable`,
//!   `internal`). 500 and 503 say
//!   nothing about their cause; 503 carries `Retry-After: 1`. A key the
//!   store cannot be asked about is refused with 503, never passed: also
//!   when the store does not answer within the runtime's
//!   [store timeout](scopekey_runtime::ScopeKeyBuilder::store_timeout)
//!   (2 s by default), so a database outage holds no verification longer
//!   (a refusal does not wait for its sampled `auth.failed` write, which
//!   runs in a task of its own).
//!   A management route's own queries wait for the pool instead: up to
//!   5 s with `PgStore::connect`, as long as your pool says with your own. Every error
//!   response carries `Cache-Control: no-store`, as do the management
//!   routes' answers. Every response [`ApiKeyAuth`] gives or passes on, its
//!   own refusals included, gets `Vary: Authorization, X-API-Key`, and
//!   `Cache-Control: private` when a key was presented and the handler set
//!   none; without the middleware (guards and extractors alone) neither is
//!   added: set them yourself if a shared cache stands in front of the
//!   service.
//! - **Every 403 carries an `insufficient_scope` challenge**, also when the
//!   runtime refuses an escalation (`scope` then names the asked scopes the
//!   caller does not hold, and for a rotation those of the key rotated; a successor asking for more than its parent had
//!   is a 400, since no key of the caller's would change that answer).
//! - **Management bodies** are JSON (`application/json`, `*/*+json`, or
//!   no content type at all; another type is 415, as is a second
//!   `Content-Type` header that is not JSON), sent uncompressed (a
//!   `Content-Encoding` other than `identity` is 415, not decoded; the
//!   application's `PayloadConfig` and `JsonConfig` do not apply), at most 64 KiB ([`JSON_LIMIT`]) or 1 MiB for
//!   `/compromised` ([`COMPROMISED_LIMIT`]; else 413). Unknown fields are
//!   refused with 400, so a misspelt `expires_in` cannot silently make a key
//!   that never expires. The rotate and revoke bodies may be empty (nothing,
//!   or only white space), and an empty one is accepted whatever its
//!   `Content-Type` or `Content-Encoding` says, since there is nothing to
//!   decode: `curl -X POST -d ''` labels it a form. Parser
//!   messages are returned with quoted input values redacted, naming where
//!   a value of the wrong type sits (`` at `scopes[1]` ``) and, for an
//!   unknown field written another way (`expiresInSeconds`), the field
//!   meant.
//! - **Ids in paths** that are not UUIDs answer 404 (they name no key), as do
//!   paths under the base path that match no route. [`path_config`] does the
//!   same for your own routes. A UUID may be written in any form the `uuid`
//!   crate reads (upper case, without hyphens, `urn:uuid:...`), all naming
//!   one key: a gateway rule about one key's routes must match the id's
//!   value, not one spelling of it. A route asked with a method it does not
//!   answer (`DELETE /api-keys/{id}`) is 405 with an `Allow` header.
//! - **Query parameters** that are empty count as absent; unknown ones are
//!   ignored; `limit` outside 1..=500, an unknown `status` or a `cursor`
//!   that is not one are 400. A cursor is a position (a time and an id)
//!   tagged with its listing, not a signed token: the key list's is a 400
//!   in the audit log and the other way round, while one written by hand is
//!   read as the position it names (the whole audit log's and one key's
//!   are one order: each resumes the other at that point).
//! - **Scope checks come first**: a management route checks the caller's
//!   scope before reading its body, so an unauthorized caller gets 401/403,
//!   never a body validation error. Rotation is open to any valid key for
//!   itself; rotating another key needs `api_keys:write`, checked before the
//!   body is read and the id looked up (so a key without it gets 403 for any
//!   well-formed id but its own, whatever the body, and cannot tell which
//!   ids exist), and then a key covering every scope of the key rotated
//!   (403 naming what it lacks of them).

mod background;
mod config;
mod credentials;
pub mod error;
pub mod extract;
pub mod guard;
mod json;
mod middleware;
pub mod routes;

pub use background::{Background, DEFAULT_FLUSH_INTERVAL, SHUTDOWN_FLUSH_ATTEMPTS};
pub use config::{AuthConfig, runtime};
pub use credentials::{MAX_CREDENTIAL_HEADER_LEN, X_API_KEY};
pub use error::{ApiError, AuthError, AuthErrorKind, DEFAULT_REALM, PROBLEM_JSON};
pub use extract::{Authenticated, MaybeAuthenticated, authenticate};
pub use guard::{GuardInfo, guarded_handlers};
pub use json::{COMPROMISED_LIMIT, JSON_LIMIT, json_config, path_config, query_config};
pub use middleware::{ApiKeyAuth, ApiKeyAuthService};
pub use routes::{DEFAULT_BASE_PATH, created, routes, routes_at};

#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{GUARDS, Guard, GuardInfo, Guarded};

    /// Checked for each of a guarded handler's parameters, at its type:
    /// one that is not an extractor is named where it is written, not
    /// only through the guard's hidden tuple.
    #[inline(always)]
    pub fn extractor<T: Extractor>() {}

    /// What every parameter of a handler is: a type actix-web builds from
    /// the request. Its own trait, for a message that says what to write.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an extractor: each parameter of a handler is built from the request",
        label = "not an extractor",
        note = "write the extractor that holds it, such as `web::Path<{Self}>` (a path segment), \
                `web::Query<T>` (the query string) or `web::Json<T>` (the body)"
    )]
    pub trait Extractor {}
    impl<T: actix_web::FromRequest> Extractor for T {}
    pub use linkme;
    pub use scopekey_core::StaticRequirement;
}
