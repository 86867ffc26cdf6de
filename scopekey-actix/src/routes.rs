//! The management API, mounted by one call: [`routes`] (under `/api-keys`)
//! or [`routes_at`] (under a base path of your choosing).
//!
//! | method and path | needs |
//! |---|---|
//! | `POST /api-keys` | `api_keys:write` |
//! | `GET /api-keys` | `api_keys:read` |
//! | `GET /api-keys/self` | any valid key (one revoked or expired in the store, though this node's cache still held it, is refused: 401 `invalid_token`) |
//! | `GET /api-keys/{id}` | `api_keys:read` |
//! | `POST /api-keys/{id}/rotate` | `api_keys:write` and every scope of the key rotated, or the key itself |
//! | `POST /api-keys/{id}/revoke` | `api_keys:revoke` |
//! | `GET /api-keys/{id}/events` | `api_keys:read` |
//! | `GET /api-keys/events` | `api_keys:read` |
//! | `POST /api-keys/compromised` | `api_keys:revoke` |
//!
//! # Bodies
//!
//! - `POST /api-keys`: `{name, scopes, expires_in_seconds?, expires_at?,
//!   metadata?, rotation_period_seconds?, rotation_webhook_url?}`.
//!   `rotation_period_seconds` puts the key under a rotation policy (1 s to
//!   ten years; default: the runtime's
//!   [`rotation_period`](scopekey_runtime::ScopeKeyBuilder::rotation_period),
//!   if any): it then expires one period after creation unless
//!   `expires_in_seconds` or `expires_at` says otherwise, and each successor
//!   gets a fresh period. `rotation_webhook_url` (an `https` URL, not to an
//!   internal address; needs a policy of at least two graces and a runtime
//!   with a rotation webhook secret, `ScopeKeyBuilder::rotation_webhook_secret`)
//!   opts in to automatic rotation: when due, the notifier rotates the key
//!   (the old key keeping its own expiry) and posts the successor (the key object plus
//!   `key`, its plaintext) to that URL as a `key.rotated` webhook signed with
//!   the key's own random secret, which the 201 answer carries once as
//!   `rotation_webhook_secret` (`whsec_…`). Both fields show in the key
//!   object.
//! - `POST /api-keys/{id}/rotate`: `{grace_seconds?, scopes?}` (or empty).
//! - `POST /api-keys/{id}/revoke`: `{reason?}` (or empty).
//! - `POST /api-keys/compromised`: `{keys: [plaintext, ...], source?,
//!   revoke_minted?}`, up to 10,000 keys (as many as fit in
//!   [`COMPROMISED_LIMIT`]: all 10,000 with the default key format); 200
//!   with `{results: [{index, status, key_id, hint, minted,
//!   minted_truncated}, ...]}` in the order
//!   given, each `status` one of `revoked`, `already_revoked`, `unknown`,
//!   `malformed` (`key_id` when known, `hint` when well formed). Keys not
//!   yet revoked (expired ones too) are revoked with reason
//!   `compromised` and audited (and announced by webhook) as
//!   `key.compromised`; no plaintext is echoed. `minted` lists, as
//!   `{key_id, status}`, the keys a reported key created or rotated into
//!   being (itself included: any key may rotate itself), theirs in turn,
//!   and every successor of a key they created, however rotated
//!   (at most 10,000 for the whole report, listed at a key's first entry;
//!   `minted_truncated` says when there were more); with
//!   `"revoke_minted": true` those not revoked yet are revoked too (see
//!   [`report_compromised_with`](scopekey_runtime::ScopeKey::report_compromised_with)).
//!   A 503 may come after some keys were revoked: send the same report
//!   again (they then read `already_revoked`).
//!
//! # Responses
//!
//! Success bodies are JSON, with `Cache-Control: no-store`; failures are
//! problem+json (see the [crate docs](crate#design-choices)). The two 201s
//! carry `Location`: the new key's path under the base the routes are
//! mounted at (`/api-keys/{new id}` by default).
//!
//! | route | success | body |
//! |---|---|---|
//! | `POST /api-keys` | 201 | the key object, plus `key` (the plaintext, this once) and, with a `rotation_webhook_url`, `rotation_webhook_secret` |
//! | `GET /api-keys` | 200 | `{items: [key object, ...], next_cursor}` |
//! | `GET /api-keys/self`, `GET /api-keys/{id}` | 200 | the key object |
//! | `POST /api-keys/{id}/rotate` | 201 | the successor's key object (its `parent_key_id` is `id`), plus `key` |
//! | `POST /api-keys/{id}/revoke` | 200 | the key object, `status` `revoked` (also when it already was; but a key revoking itself once revoked gets the uniform 401) |
//! | `GET /api-keys/events`, `GET /api-keys/{id}/events` | 200 | `{items: [audit event, ...], next_cursor}` |
//! | `POST /api-keys/compromised` | 200 | `{results: [...]}` (above) |
//!
//! A **key object** is `{id, name, scopes, metadata, hint, status,
//! created_at, expires_at, revoked_at, revoked_reason, rotated_at,
//! parent_key_id, last_used_at, rotation_period_seconds,
//! rotation_webhook_url}` (RFC 3339 times, `null` where unset; never a hash,
//! never the plaintext but in the two 201s). An **audit event** is `{id,
//! key_id, type, actor_key_id, at, details}`, `type` one of `key.created`,
//! `key.rotated`, `key.revoked`, `key.expired`, `key.expiring`,
//! `key.compromised`, `auth.failed` (and, with the notifier,
//! `webhook.failed` and `webhook.endpoint_disabled`).
//!
//! Lists are newest first. Their query parameters: `limit` (1 to 500, 50
//! by default), `cursor` (the previous page's `next_cursor`, `null` on the
//! last page; opaque, and it names its listing: the key list's is a 400 in
//! the audit log and the other way round, while the whole log's and one
//! key's are one order, and resume each other at the same point) and, for
//! `GET /api-keys`, `status` (`active`, `rotating`,
//! `revoked` or `expired`) and `name_prefix` (names starting with it, case
//! sensitive).
//!
//! Failures particular to these routes: 404 for an id that names no key (or
//! is not a UUID), on `/{id}/events` too; 409 for a rotation of a key already rotated, revoked or
//! expired (two concurrent rotations of one key: one 201, one 409); 400 for a
//! bad body or query value (a body's `detail` names where a value of the
//! wrong type sits, `` at `scopes[1]` ``, and an unknown field's likely
//! meaning, `` did you mean `expires_in_seconds`? ``: field names are
//! snake_case); 413 for a body over the limit; 415 for a body
//! of another content type, or compressed (any `Content-Encoding` but
//! `identity`: it is not decoded). A rotation or revocation whose client
//! hangs up still completes: a rotation retried then answers 409 (find the
//! successor in the key's lineage or events, and revoke it if its
//! plaintext was lost).
//!
//! Every route judges the caller from the store before it shows or changes
//! anything of a key ([`ScopeKey::confirm_caller`](scopekey_runtime::ScopeKey::confirm_caller)
//! for the reads; rotating another key, revoking and reporting check the
//! acting key first; creating and rotating check it again inside their
//! transaction): a verification may come from this node's cache, taken
//! before another node revoked the key, or before the key expired with its
//! request still arriving. Such a key gets the uniform 401, audited as
//! `auth.failed` with an `action` (`list`, `show`, `events`, `self` for a
//! key reading itself, `create`, `rotate`, `revoke`, `report_compromised`);
//! it is never shown what became of it (its own record, its events,
//! "already revoked" when it revokes itself) nor anything of another key.
//! (A check on the body, a 400 or a 403 for scopes it does not hold, may
//! come first: those tell it nothing of any key. A reporting key revoked
//! elsewhere while its compromise report runs gets the 401 at the end, what
//! the report revoked staying revoked.)
//!
//! Each handler checks the caller's scope *before* reading its body, so a
//! caller without the scope learns nothing about what the body would have
//! been judged to be. (The rotate route takes any valid key for its own id;
//! for another id it needs `api_keys:write`, checked before the body is
//! read: [`may_rotate`](scopekey_runtime::may_rotate).) The
//! rules beyond the route's scope (no escalation, who may rotate what) are
//! the runtime's; a 403 for escalation names, in its challenge, the scopes
//! asked for that the caller's key does not hold (for a rotation, also
//! those of the key rotated, which the caller must cover). A caller holding all it asks for, asking a
//! successor more than its parent had, gets a 400 (a bad value: no key of
//! the caller's would change that answer).
//!
//! The reading routes (`GET`) also answer `HEAD`, without the body; a route
//! asked with a method it does not answer is 405 with `Allow`.
//!
//! A route of your own that makes keys for its caller answers the same way
//! with [`ApiError::refused`] (an escalation as a 403 naming what the
//! caller lacks) and [`created`] (the 201 body). It checks whatever scope
//! it asks of its caller itself (see `Actor::Key`).

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue, LOCATION};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use scopekey_runtime::compromise::{CompromiseOptions, CompromiseResult};
use scopekey_runtime::scope::Grant;
use scopekey_runtime::{
    Actor, ApiKey, CreatedKey, Error, KeyId, ListEvents, ListKeys, NewKey, RotateOptions,
    SCOPE_READ, SCOPE_REVOKE, SCOPE_WRITE, ScopeKey, Status,
};

use crate::config::runtime;
use crate::error::ApiError;
use crate::extract::Authenticated;
use crate::json::{COMPROMISED_LIMIT, JSON_LIMIT, read_json};

/// The base path of [`routes`].
pub const DEFAULT_BASE_PATH: &str = "/api-keys";

/// Mounts the management routes under `/api-keys`:
/// `App::new().configure(scopekey_actix::routes)`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    routes_at(DEFAULT_BASE_PATH)(cfg);
}

/// Mounts the management routes under `base` (e.g. `/admin/keys`; a missing
/// leading `/` is added, a trailing one dropped):
/// `App::new().configure(scopekey_actix::routes_at("/admin/keys"))`.
///
/// Unmatched paths under the base answer a problem+json 404; a route asked
/// with a method it does not answer, 405 with `Allow` (the reading routes
/// answer `HEAD` as `GET`, without the body).
///
/// The base may have path parameters, e.g. `/tenants/{id}/keys` (a
/// middleware or guard of yours may read them; these routes ignore them),
/// under any name but `scopekey_key_id`: the routes' own `{id}` segment is
/// named so. A parameter of that name in the base is never read as the
/// key's id (the route's own segment, matched last, wins), but your code
/// reading it by name would find the base's.
///
/// # Panics
///
/// If `base` is empty or `/`: at the root, the routes (`/{id}` above all)
/// would capture the application's own paths.
pub fn routes_at(base: impl Into<String>) -> impl FnOnce(&mut web::ServiceConfig) {
    let base = normalize(base.into());
    assert!(
        !base.is_empty(),
        "scopekey: the management routes need a base path such as \"/api-keys\"; at the \
         root they would capture the application's own paths"
    );
    move |cfg| {
        // `/self`, `/events` and `/compromised` come before `/{id}` so the
        // latter does not capture them. The id's segment has a name of its
        // own (`ID_PARAM`): the base path may have parameters, `{id}` among
        // them (`/tenants/{id}/keys`).
        let resource = |path: &str, allow: &'static str| {
            web::resource(path).default_service(web::to(move || async move {
                Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
            }))
        };
        let read = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
        let scope = web::scope(&base)
            .service(
                resource("", "GET, HEAD, POST")
                    .route(web::post().to(create))
                    .route(read().to(list)),
            )
            .service(resource("/self", "GET, HEAD").route(read().to(show_self)))
            .service(resource("/events", "GET, HEAD").route(read().to(all_events)))
            .service(resource("/compromised", "POST").route(web::post().to(compromised)))
            .service(resource(&id_path(""), "GET, HEAD").route(read().to(show)))
            .service(resource(&id_path("/rotate"), "POST").route(web::post().to(rotate)))
            .service(resource(&id_path("/revoke"), "POST").route(web::post().to(revoke)))
            .service(resource(&id_path("/events"), "GET, HEAD").route(read().to(key_events)))
            .default_service(web::to(no_route));
        cfg.service(scope);
    }
}

fn normalize(base: String) -> String {
    let trimmed = base.trim().trim_end_matches('/');
    if trimmed.is_empty() || trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

fn keys(req: &HttpRequest) -> Result<&ScopeKey, ApiError> {
    runtime(req).ok_or_else(|| ApiError::Runtime(Error::Internal("no ScopeKey in app data".into())))
}

/// The name of the key id's path segment in the routes (`/{id}` in the
/// docs). A base path may have parameters of any other name.
const ID_PARAM: &str = "scopekey_key_id";

/// `/{ID_PARAM}` followed by `rest`.
fn id_path(rest: &str) -> String {
    format!("/{{{ID_PARAM}}}{rest}")
}

/// The key id the route's own segment names. The last segment of that
/// name: the route's is matched after any of the base path's.
fn path_id(req: &HttpRequest) -> Result<KeyId, ApiError> {
    req.match_info()
        .iter()
        .filter(|(name, _)| *name == ID_PARAM)
        .last()
        .and_then(|(_, id)| id.parse::<KeyId>().ok())
        .ok_or_else(|| ApiError::NotFound("no key with this id".into()))
}

fn ok_json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(body)
}

/// A key with its plaintext: the body of the two 201 responses.
#[derive(Serialize)]
struct WithPlaintext<'a> {
    #[serde(flatten)]
    key: &'a ApiKey,
    #[serde(rename = "key")]
    plaintext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_webhook_secret: Option<&'a str>,
}

/// The 201 answer the prebuilt routes give for a key just made (created or
/// rotated): the key object, plus `key` (its plaintext, this once) and,
/// when it has one, `rotation_webhook_secret`, with `Cache-Control:
/// no-store`. For routes of your own that create keys. It has no
/// `Location` (the prebuilt routes add the new key's path under their
/// base): insert one if your service has a route that shows the key.
pub fn created(created: &CreatedKey) -> HttpResponse {
    ok_json(
        StatusCode::CREATED,
        &WithPlaintext {
            key: &created.key,
            plaintext: created.plaintext.expose_secret(),
            rotation_webhook_secret: created
                .rotation_webhook_secret
                .as_ref()
                .map(|s| s.expose_secret()),
        },
    )
}

/// [`created`], with `Location`: the new key at `base/{id}`, `base` the
/// path the routes are mounted at, as the client wrote it.
fn created_under(base: &str, key: &CreatedKey) -> HttpResponse {
    let mut res = created(key);
    let location = format!("{}/{}", base.trim_end_matches('/'), key.key.id);
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(LOCATION, value);
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    rotation_period_seconds: Option<i64>,
    #[serde(default)]
    rotation_webhook_url: Option<String>,
}

async fn create(
    caller: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_WRITE)?;
    let body: CreateBody = read_json(&req, payload, JSON_LIMIT, None).await?;
    let new = NewKey {
        name: body.name,
        scopes: body.scopes.clone(),
        expires_at: body.expires_at,
        expires_in: body.expires_in_seconds.map(Duration::seconds),
        metadata: body.metadata,
        rotation_period: body.rotation_period_seconds.map(Duration::seconds),
        rotation_webhook_url: body.rotation_webhook_url,
    };
    let key = keys(&req)?
        .create(new, Actor::Key(&caller))
        .await
        .map_err(|e| ApiError::refused(&caller, e, &body.scopes))?;
    Ok(created_under(req.path(), &key))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    name_prefix: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parses the query string; empty parameters count as absent.
fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    // The parser would read bytes that are not UTF-8 as U+FFFD, silently:
    // a filter the client never sent.
    if !decodes_to_utf8(req.query_string()) {
        return Err(ApiError::BadRequest(
            "bad query string: it is not UTF-8 once percent-decoded".into(),
        ));
    }
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(crate::json::query_error)
}

/// Whether a query string's bytes, percent-escapes decoded, are UTF-8.
fn decodes_to_utf8(query: &str) -> bool {
    let bytes = query.as_bytes();
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|b| char::from(*b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push(high * 16 + low);
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn limit(v: Option<String>) -> Result<Option<u32>, ApiError> {
    non_empty(v)
        .map(|s| {
            s.parse::<u32>().map_err(|_| {
                ApiError::BadRequest("`limit` must be a whole number between 1 and 500".into())
            })
        })
        .transpose()
}

async fn list(caller: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_READ)?;
    let q: ListQuery = query(&req)?;
    let request = ListKeys {
        status: non_empty(q.status)
            .map(|s| s.parse::<Status>())
            .transpose()?,
        name_prefix: non_empty(q.name_prefix),
        limit: limit(q.limit)?,
        cursor: non_empty(q.cursor),
    };
    let keys = keys(&req)?;
    keys.confirm_caller(caller.principal(), "list").await?;
    let page = keys.list(&request).await?;
    Ok(ok_json(StatusCode::OK, &page))
}

async fn show_self(caller: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // The caller's verification may come from this node's cache, taken
    // before its key was revoked (or rotated out) through another node:
    // the record read here says so, and the key is refused as any key that
    // is not valid, never shown as `revoked` to its own holder.
    // (`ScopeKey::get_self`: `Error::ActorRevoked`, the uniform 401.)
    let key = keys(&req)?.get_self(caller.principal()).await?;
    Ok(ok_json(StatusCode::OK, &key))
}

async fn show(caller: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_READ)?;
    let id = path_id(&req)?;
    let keys = keys(&req)?;
    // As for every read, the caller is confirmed from the store first (see
    // `show_self`); a key reading itself is that very read.
    let key = if id == caller.principal().id {
        keys.get_self(caller.principal()).await?
    } else {
        keys.confirm_caller(caller.principal(), "show").await?;
        keys.get(id).await?
    };
    Ok(ok_json(StatusCode::OK, &key))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<i64>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn rotate(
    caller: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Any valid key may ask for itself; another key needs
    // `api_keys:write`, checked before the body is read (as the scopes of
    // every other route are).
    let id = path_id(&req)?;
    if let Err(e) = scopekey_runtime::may_rotate(Actor::Key(&caller), id) {
        return Err(ApiError::refused(&caller, e, &[SCOPE_WRITE.to_owned()]));
    }
    let body: RotateBody =
        read_json(&req, payload, JSON_LIMIT, Some(RotateBody::default())).await?;
    let options = RotateOptions {
        grace: body.grace_seconds.map(Duration::seconds),
        scopes: body.scopes.clone(),
    };
    let keys = keys(&req)?;
    let rotated = keys.rotate(id, options, Actor::Key(&caller)).await;
    let key = match rotated {
        Ok(key) => key,
        Err(e) => {
            // A 403 is an escalation: the challenge names the scopes the
            // caller lacks, of the key it rotates or of those it asks for.
            // Covering the key rotated comes first: a caller that does
            // not is told what of it it lacks, and nothing of the asked
            // scopes (with the key's all, any successor it may ask is
            // covered).
            let asked = match e {
                Error::Forbidden(_) => {
                    let rotated = keys.get(id).await.map(|k| k.scopes).unwrap_or_default();
                    let covers = rotated
                        .iter()
                        .all(|s| Grant::parse(s).is_ok_and(|g| caller.grants().includes(&g)));
                    if covers {
                        body.scopes.unwrap_or_default()
                    } else {
                        rotated
                    }
                }
                _ => Vec::new(),
            };
            return Err(ApiError::refused(&caller, e, &asked));
        }
    };
    // `{base}/{id}/rotate`: the successor is at `{base}/{new id}`.
    let base = req
        .path()
        .trim_end_matches('/')
        .rsplitn(3, '/')
        .nth(2)
        .unwrap_or_default();
    Ok(created_under(base, &key))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke(
    caller: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_REVOKE)?;
    let id = path_id(&req)?;
    let body: RevokeBody =
        read_json(&req, payload, JSON_LIMIT, Some(RevokeBody::default())).await?;
    let key = keys(&req)?
        .revoke(id, body.reason.as_deref(), Actor::Key(&caller))
        .await?;
    Ok(ok_json(StatusCode::OK, &key))
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn events(
    caller: &Authenticated,
    req: &HttpRequest,
    key_id: Option<KeyId>,
) -> Result<HttpResponse, ApiError> {
    let q: EventsQuery = query(req)?;
    let request = ListEvents {
        key_id,
        limit: limit(q.limit)?,
        cursor: non_empty(q.cursor),
    };
    let keys = keys(req)?;
    keys.confirm_caller(caller.principal(), "events").await?;
    let page = keys.events(&request).await?;
    Ok(ok_json(StatusCode::OK, &page))
}

async fn all_events(caller: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_READ)?;
    events(&caller, &req, None).await
}

async fn key_events(caller: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_READ)?;
    let id = path_id(&req)?;
    events(&caller, &req, Some(id)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompromisedBody {
    keys: Vec<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    revoke_minted: Option<bool>,
}

#[derive(Serialize)]
struct CompromisedReport {
    results: Vec<CompromiseResult>,
}

async fn compromised(
    caller: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(SCOPE_REVOKE)?;
    let body: CompromisedBody = read_json(&req, payload, COMPROMISED_LIMIT, None).await?;
    // The reported plaintexts are wiped when the report ends, however it
    // ends.
    let reported = zeroize::Zeroizing::new(body.keys);
    let options = CompromiseOptions {
        source: body.source.as_deref(),
        revoke_minted: body.revoke_minted.unwrap_or(false),
        ..CompromiseOptions::default()
    };
    let results = keys(&req)?
        .report_compromised_with(&reported, options, Actor::Key(&caller))
        .await?;
    Ok(ok_json(StatusCode::OK, &CompromisedReport { results }))
}
