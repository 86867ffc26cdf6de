//! Errors as HTTP responses: RFC 9457 `application/problem+json` bodies with
//! RFC 6750 `WWW-Authenticate` challenges.
//!
//! Two error types cross the boundary: [`AuthError`] (who is calling, and may
//! they) and [`ApiError`] (what the management routes answer). Each has one
//! `ResponseError` impl, and both render through one function, so every
//! problem body has the same shape: `type`, `title`, `status` (always the HTTP
//! status), `detail`, and a machine-readable `code`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The realm named in challenges when none is configured.
pub const DEFAULT_REALM: &str = "api";

/// Why a request was refused before reaching its handler.
///
/// Carries the realm of the application's [`AuthConfig`](crate::AuthConfig),
/// so the challenge can be written without the request at hand.
#[derive(Debug, Clone)]
pub struct AuthError {
    kind: AuthErrorKind,
    realm: Arc<str>,
}

/// The kinds of [`AuthError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No key was presented (401, challenge without an error code).
    MissingCredentials,
    /// The key is malformed, unknown, revoked or expired (401
    /// `invalid_token`). Which one is deliberately not kept here: the
    /// response must not tell them apart; the runtime logs and audits it.
    InvalidToken,
    /// The key lacks what the route requires (403 `insufficient_scope`).
    /// Holds the scopes named in the challenge (empty only when none is
    /// known: the challenge then has no `scope`).
    InsufficientScope(Vec<String>),
    /// The request carried more than one credential (400 `invalid_request`).
    MultipleCredentials,
    /// The key store failed while verifying: refused, never passed (503).
    Unavailable,
    /// The application is wired wrongly (no `ScopeKey` in app data, or a
    /// guard without a registered requirement): refused (500).
    Misconfigured,
}

impl AuthError {
    /// An error of `kind` for `realm`.
    pub fn new(kind: AuthErrorKind, realm: Arc<str>) -> Self {
        Self { kind, realm }
    }

    /// What went wrong.
    pub fn kind(&self) -> &AuthErrorKind {
        &self.kind
    }

    /// The realm the challenge names.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn problem(&self) -> Problem {
        let realm = &self.realm;
        match &self.kind {
            AuthErrorKind::MissingCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            )
            .challenge(format!("Bearer realm=\"{realm}\"")),
            AuthErrorKind::InvalidToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the API key is not valid",
            )
            .challenge("Bearer error=\"invalid_token\"".to_owned()),
            AuthErrorKind::InsufficientScope(scopes) => {
                // Only RFC 6750 scope tokens: text given to `AuthError::new`
                // could otherwise end the challenge's quoted string (`"`)
                // or hold a key.
                let list = scopes
                    .iter()
                    .filter(|s| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
                            && !scopekey_runtime::key::holds_a_key(s)
                    })
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ");
                let (detail, challenge) = if list.is_empty() {
                    (
                        Cow::Borrowed("the API key does not hold the scopes this request needs"),
                        "Bearer error=\"insufficient_scope\"".to_owned(),
                    )
                } else {
                    (
                        Cow::Owned(format!(
                            "the API key does not hold the scopes this request needs: {list}"
                        )),
                        format!("Bearer error=\"insufficient_scope\", scope=\"{list}\""),
                    )
                };
                Problem::new(StatusCode::FORBIDDEN, "insufficient_scope", detail)
                    .challenge(challenge)
            }
            AuthErrorKind::MultipleCredentials => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "present exactly one API key: one `Authorization` header or one `X-API-Key` header",
            )
            .challenge("Bearer error=\"invalid_request\"".to_owned()),
            AuthErrorKind::Unavailable => Problem::unavailable(),
            AuthErrorKind::Misconfigured => Problem::internal(),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match &self.kind {
            AuthErrorKind::MissingCredentials => "no API key was presented",
            AuthErrorKind::InvalidToken => "the API key is not valid",
            AuthErrorKind::InsufficientScope(_) => "the API key lacks the required scopes",
            AuthErrorKind::MultipleCredentials => "more than one credential was presented",
            AuthErrorKind::Unavailable => "the key store is unavailable",
            AuthErrorKind::Misconfigured => "scopekey is not configured in this application",
        };
        f.write_str(text)
    }
}

impl std::error::Error for AuthError {}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        render(&self.problem())
    }
}

/// What a management route (or a JSON, query or path extractor configured by
/// this crate) answers when it cannot do what was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// Authentication or authorization refused the request.
    Auth(AuthError),
    /// The runtime refused what the caller's key asked (granting scopes it
    /// does not hold, rotating another key without `api_keys:write`): 403
    /// with an `insufficient_scope` challenge and the runtime's explanation.
    Forbidden {
        /// The challenge to send (realm, scopes missing).
        error: AuthError,
        /// Why, safe to show the caller.
        detail: String,
    },
    /// The runtime refused or failed.
    Runtime(scopekey_runtime::Error),
    /// The request is ill-formed (bad JSON, wrong field type, bad query).
    BadRequest(String),
    /// The body is larger than the route accepts.
    PayloadTooLarge {
        /// The route's limit in bytes.
        limit: usize,
    },
    /// The body was sent with a content type other than JSON (neither
    /// `application/json` nor `*/*+json`), or, on an application's own
    /// routes under [`json_config`](crate::json_config), without one (the
    /// management routes read such a body as JSON).
    UnsupportedMediaType,
    /// The body was sent compressed (`Content-Encoding` other than
    /// `identity`): the management routes read bodies as sent.
    UnsupportedEncoding,
    /// The path names nothing (e.g. an id that is not a UUID).
    NotFound(String),
    /// The path is a route, but not for this method: 405 with `Allow`.
    MethodNotAllowed {
        /// The methods the route answers, as the `Allow` header lists them.
        allow: &'static str,
    },
}

impl ApiError {
    /// A runtime error answered to `caller`, for routes of your own that
    /// act for a key (`Actor::Key`): an escalation ([`Error::Forbidden`],
    /// the runtime refusing scopes the caller's key does not cover) is a
    /// 403 whose `insufficient_scope` challenge names the scopes among
    /// `asked` that the caller does not hold (all of `asked`, should it hold
    /// them, so that the challenge always names a scope), as the prebuilt
    /// routes answer; any other error as [`ApiError::Runtime`].
    ///
    /// [`Error::Forbidden`]: scopekey_runtime::Error::Forbidden
    pub fn refused(
        caller: &crate::Authenticated,
        err: scopekey_runtime::Error,
        asked: &[String],
    ) -> ApiError {
        use scopekey_runtime::scope::Grant;
        match err {
            scopekey_runtime::Error::Forbidden(detail) => {
                let valid = || {
                    asked
                        .iter()
                        .filter_map(|s| Grant::parse(s).ok().map(|g| (s, g)))
                };
                let mut missing: Vec<String> = valid()
                    .filter(|(_, g)| !caller.grants().includes(g))
                    .map(|(s, _)| s.clone())
                    .collect();
                if missing.is_empty() {
                    missing = valid().map(|(s, _)| s.clone()).collect();
                }
                // Once each, in the order first asked.
                let mut seen = std::collections::HashSet::new();
                missing.retain(|s| seen.insert(s.clone()));
                ApiError::Forbidden {
                    error: AuthError::new(
                        AuthErrorKind::InsufficientScope(missing),
                        caller.realm(),
                    ),
                    detail,
                }
            }
            other => ApiError::Runtime(other),
        }
    }

    fn problem(&self) -> Problem {
        use scopekey_runtime::Error as E;
        match self {
            ApiError::Auth(e) => e.problem(),
            ApiError::Forbidden { error, detail } => Problem {
                detail: Cow::Owned(detail.clone()),
                ..error.problem()
            },
            ApiError::Runtime(E::Invalid(m)) | ApiError::BadRequest(m) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_request_body", m.clone())
            }
            // Revoked while its request ran: refused as any key that is
            // not valid, with nothing to tell it apart.
            ApiError::Runtime(E::ActorRevoked) => {
                AuthError::new(AuthErrorKind::InvalidToken, Arc::from("")).problem()
            }
            ApiError::Runtime(E::Forbidden(m)) => {
                Problem::new(StatusCode::FORBIDDEN, "insufficient_scope", m.clone())
                    .challenge("Bearer error=\"insufficient_scope\"".to_owned())
            }
            ApiError::Runtime(E::NotFound(_)) => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", "no key with this id")
            }
            ApiError::NotFound(m) => Problem::new(StatusCode::NOT_FOUND, "not_found", m.clone()),
            ApiError::Runtime(E::Conflict(m)) => {
                Problem::new(StatusCode::CONFLICT, "conflict", m.clone())
            }
            ApiError::Runtime(E::Unavailable(_)) => Problem::unavailable(),
            ApiError::Runtime(_) => Problem::internal(),
            ApiError::PayloadTooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than this route accepts ({limit} bytes)"),
            ),
            ApiError::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            ApiError::UnsupportedEncoding => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body uncompressed (no `Content-Encoding`)",
            ),
            ApiError::MethodNotAllowed { allow } => Problem {
                allow: Some(allow),
                ..Problem::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("this route answers {allow} only"),
                )
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Auth(e) => e.fmt(f),
            ApiError::Forbidden { detail, .. } => f.write_str(detail),
            ApiError::Runtime(e) => e.fmt(f),
            ApiError::BadRequest(m) | ApiError::NotFound(m) => f.write_str(m),
            ApiError::PayloadTooLarge { limit } => {
                write!(f, "request body larger than {limit} bytes")
            }
            ApiError::UnsupportedMediaType => f.write_str("request body is not JSON"),
            ApiError::UnsupportedEncoding => f.write_str("request body is compressed"),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed (allow: {allow})")
            }
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Auth(e) | ApiError::Forbidden { error: e, .. } => Some(e),
            ApiError::Runtime(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Auth(e)
    }
}

impl From<scopekey_runtime::Error> for ApiError {
    fn from(e: scopekey_runtime::Error) -> Self {
        ApiError::Runtime(e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        if problem.status.is_server_error() {
            // The body says nothing about the cause; the log does.
            tracing::error!(error = %self, status = problem.status.as_u16(), "request failed");
        }
        render(&problem)
    }
}

/// One problem, ready to render.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: Cow<'static, str>,
    challenge: Option<String>,
    retry_after: Option<&'static str>,
    allow: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            challenge: None,
            retry_after: None,
            allow: None,
        }
    }

    fn challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The store failed: nothing about why reaches the client.
    fn unavailable() -> Self {
        Self {
            retry_after: Some("1"),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the key store is unavailable; try again shortly",
            )
        }
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request",
        )
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

/// The one place a problem becomes a response.
fn render(problem: &Problem) -> HttpResponse {
    let detail = scrub_keys(&problem.detail);
    let body = ProblemBody {
        kind: "about:blank",
        title: problem.status.canonical_reason().unwrap_or("Error"),
        status: problem.status.as_u16(),
        detail: &detail,
        code: problem.code,
    };
    let mut response = HttpResponse::build(problem.status);
    response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    if let Some(challenge) = &problem.challenge {
        match HeaderValue::from_str(challenge) {
            Ok(value) => {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
            // Realms are sanitized by AuthConfig and scopes are validated
            // ASCII, so this is unreachable in practice; refuse loudly.
            Err(_) => {
                tracing::error!("could not write the WWW-Authenticate challenge");
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
        }
    }
    if let Some(retry_after) = problem.retry_after {
        response.insert_header((header::RETRY_AFTER, HeaderValue::from_static(retry_after)));
    }
    if let Some(allow) = problem.allow {
        response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
    }
    match serde_json::to_string(&body) {
        Ok(json) => response.body(json),
        // Serializing plain strings and numbers cannot fail.
        Err(_) => response.finish(),
    }
}

/// Replaces anything shaped like a key's secret (a run of 30 or more ASCII
/// letters and digits with an upper-case letter among them: scopes, names
/// of fields and ids never look so) with `…`. Details may quote what a
/// caller sent, e.g. a key pasted where a scope belongs; it goes no further.
pub(crate) fn scrub_keys(detail: &str) -> Cow<'_, str> {
    const MIN_RUN: usize = 30;
    let bytes = detail.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let run = &bytes[start..i];
        if run.len() >= MIN_RUN && run.iter().any(u8::is_ascii_uppercase) {
            let out = out.get_or_insert_with(|| String::with_capacity(detail.len()));
            // `start` and `i` border ASCII bytes, so they are char boundaries.
            out.push_str(&detail[copied..start]);
            out.push('…');
            copied = i;
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&detail[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_what_looks_like_a_key() {
        let key = "sk_4fTq9ZpW2mXr7LkB3nVc8HjD1sYa6GeU0tQw";
        let detail = format!("invalid scope `{key}`: missing `:`");
        assert_eq!(scrub_keys(&detail), "invalid scope `sk_…`: missing `:`");
        let plain = "scope `billing.invoices:read` is not in the scope catalogue";
        assert!(matches!(scrub_keys(plain), Cow::Borrowed(_)));
        assert_eq!(scrub_keys("é0123456789ABCDEFGHIJ0123456789ABé"), "é…é");
    }

    /// A 403 challenge names only scope tokens: text that would end its
    /// quoted string, or hold a key, is left out of it and of the detail.
    #[test]
    fn the_scope_challenge_holds_only_scope_tokens() {
        let key = scopekey_runtime::KeyFormat::default().generate().unwrap();
        let scopes = vec![
            "orders:read".to_owned(),
            "a\"b".to_owned(),
            "back\\slash".to_owned(),
            "two words".to_owned(),
            String::new(),
            key.expose_secret().to_owned(),
            "orders:write".to_owned(),
        ];
        let problem =
            AuthError::new(AuthErrorKind::InsufficientScope(scopes), Arc::from("api")).problem();
        assert_eq!(
            problem.challenge.as_deref(),
            Some("Bearer error=\"insufficient_scope\", scope=\"orders:read orders:write\"")
        );
        assert!(problem.detail.ends_with("needs: orders:read orders:write"));
        // Nothing left: the bare challenge.
        let problem = AuthError::new(
            AuthErrorKind::InsufficientScope(vec!["\"".to_owned()]),
            Arc::from("api"),
        )
        .problem();
        assert_eq!(
            problem.challenge.as_deref(),
            Some("Bearer error=\"insufficient_scope\"")
        );
    }
}
