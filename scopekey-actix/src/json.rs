//! Request bodies and query strings, with problem+json errors: the readers
//! the management routes use, and extractor configurations for the
//! application's own routes.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body limit of the management routes and of [`json_config`]: 64 KiB.
pub const JSON_LIMIT: usize = 64 * 1024;

/// The body limit of `POST /api-keys/compromised`: 1 MiB. That holds the
/// 10,000 keys a report may list when each is at most 101 bytes (a prefix
/// of up to 62 bytes; the default `sk` makes 41-byte keys), written as a
/// compact JSON array. Keys with longer prefixes (a key may be up to
/// [`MAX_KEY_LEN`](scopekey_runtime::key::MAX_KEY_LEN), 256 bytes) fit
/// fewer, about 4,000 of the longest: send a larger report in parts.
pub const COMPROMISED_LIMIT: usize = 1024 * 1024;

/// A `web::JsonConfig` whose errors are problem+json: 413 over
/// [`JSON_LIMIT`], 415 without a JSON content type (actix's rule, kept: the
/// management routes also read a body sent with no content type at all),
/// 400 for bad JSON or wrong field types (values echoed by the parser are
/// redacted).
///
/// ```
/// use actix_web::App;
/// let app = App::new()
///     .app_data(scopekey_actix::json_config())
///     .app_data(scopekey_actix::query_config())
///     .app_data(scopekey_actix::path_config());
/// ```
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(JSON_LIMIT)
        .error_handler(|err, _req| json_error(err).into())
}

/// A `web::QueryConfig` whose errors are problem+json (400).
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| query_error(err).into())
}

/// A `web::PathConfig` whose errors are problem+json: a path segment that does
/// not parse (say, a bad UUID) names no resource, so 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| path_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(describe(&e)),
        _ => ApiError::BadRequest("the request body could not be read".into()),
    }
}

pub(crate) fn query_error(err: QueryPayloadError) -> ApiError {
    match err {
        QueryPayloadError::Deserialize(e) => {
            ApiError::BadRequest(format!("bad query string: {}", redact(&e.to_string())))
        }
        _ => ApiError::BadRequest("bad query string".into()),
    }
}

fn path_error(err: PathError) -> ApiError {
    match err {
        PathError::Deserialize(_) => ApiError::NotFound("nothing at this path".into()),
        _ => ApiError::NotFound("nothing at this path".into()),
    }
}

/// Reads a JSON body of at most `limit` bytes. An empty body reads as
/// `empty` when given (routes whose every field is optional), else it is
/// a 400.
pub(crate) async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return Err(ApiError::BadRequest(
                "the request body could not be read".into(),
            ));
        }
        Err(_) => return Err(ApiError::PayloadTooLarge { limit }),
    };
    let read = judge(req, &body, empty);
    wipe(body);
    read
}

/// What a body read whole says: `empty` for white space alone (when
/// given), else its value, if it is JSON sent as such.
fn judge<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
    empty: Option<T>,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace)
        && let Some(empty) = empty
    {
        return Ok(empty);
    }
    // The body is read as sent: a compressed one would fail as "not JSON".
    // (An application's own `web::Json` routes decompress it, with
    // actix-web's `compress-*` features; these routes' bodies are small.)
    if req.headers().get_all(CONTENT_ENCODING).any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("identity"))
    }) {
        return Err(ApiError::UnsupportedEncoding);
    }
    if !json_or_unlabelled(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    parse(body).map_err(ApiError::BadRequest)
}

/// Wipes a body once read (it may hold keys: a compromise report, a name
/// or metadata refused for holding one), when nothing else holds its bytes.
/// The buffers actix-web read it through are not this crate's to wipe.
fn wipe(body: web::Bytes) {
    use zeroize::Zeroize;
    if let Ok(mut own) = body.try_into_mut() {
        own.as_mut().zeroize();
    }
}

/// Parses a body as `T`. A value of the wrong type or shape is named by
/// where it sits in the body (`` at `scopes[1]` ``), so a client need not
/// count columns.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        // An unknown field's path ends at the field itself, which the
        // message names already: the place is where it was found.
        let found_in = usize::from(inner.to_string().starts_with("unknown field"));
        let segments: Vec<_> = e.path().iter().collect();
        let at = place(&segments[..segments.len().saturating_sub(found_in)]);
        describe_at(inner, at.as_deref())
    })?;
    // Nothing but blanks after the value, as `serde_json::from_slice` asks.
    de.end().map_err(|e| describe(&e))?;
    Ok(value)
}

/// Where in the body a value sits, as `scopes[1]` or `metadata.team`;
/// `None` at the top. A name that is not a plain field name (an object's
/// own keys, such as `metadata`'s, are the caller's input and might be a
/// key) is shown as `…`.
fn place(path: &[&serde_path_to_error::Segment]) -> Option<String> {
    use serde_path_to_error::Segment;
    use std::fmt::Write;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if plain_name(key) { key } else { "…" });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('…');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A name shown as it is in messages: lower case, digits and `_`, at most
/// 32 characters, as the routes' field names are. Anything else is the
/// caller's input and might hold a key.
fn plain_name(name: &str) -> bool {
    name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether the content type is `application/json` or `*/*+json`, or
/// missing: a body sent without one (`requests.post(url, data=...)`) is read
/// as JSON. The routes authenticate by header, never by cookie, so a
/// browser form posted from another site carries no key: answering only
/// JSON-labelled bodies would guard nothing. Several `Content-Type`
/// headers must all say JSON: the answer never depends on their order.
fn json_or_unlabelled(req: &HttpRequest) -> bool {
    req.headers().get_all(CONTENT_TYPE).all(is_json)
}

fn is_json(value: &actix_web::http::header::HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

/// A parser error fit for the client: what is wrong and where, with any
/// quoted input value redacted (it might be a key).
fn describe(e: &serde_json::Error) -> String {
    describe_at(e, None)
}

/// [`describe`], naming where in the body (`at`, from [`place`]) a value
/// has the wrong type or shape.
fn describe_at(e: &serde_json::Error, at: Option<&str>) -> String {
    use serde_json::error::Category;
    let message = e.to_string();
    let what = match e.classify() {
        // Valid JSON all the same, past what the parser takes.
        Category::Syntax if message.starts_with("recursion limit exceeded") => {
            "the request body is nested too deeply (at most 128 levels)"
        }
        Category::Syntax if message.starts_with("number out of range") => {
            "the request body holds a number too large"
        }
        Category::Syntax | Category::Eof => "the request body is not valid JSON",
        Category::Data => "the request body does not have the expected fields and types",
        Category::Io => "the request body could not be read",
    };
    let hint = suggestion(&message)
        .map(|field| format!("; did you mean `{field}`?"))
        .unwrap_or_default();
    match at {
        Some(at) if e.classify() == Category::Data => {
            format!("{what}: at `{at}`: {}{hint}", redact(&message))
        }
        _ => format!("{what}: {}{hint}", redact(&message)),
    }
}

/// For an unknown field, the expected field it most likely meant: the same
/// but for case, `-` and `_` (`expiresInSeconds`, `Expires-In-Seconds`), or
/// within two edits of it (`expires_in_second`). The unknown name itself
/// is not repeated unless it is a plain field name (see [`redact`]), so
/// this is what tells a client writing camelCase what to send.
fn suggestion(message: &str) -> Option<&str> {
    // The unknown name is the caller's and may hold anything, backticks
    // and "expected" too: the list of fields is what follows the *last*
    // "`, expected " (the fields' own names hold no backtick).
    let (unknown, expected) = message.rsplit_once("`, expected ")?;
    let unknown = unknown.strip_prefix("unknown field `")?;
    // Longer names are nobody's typo of a field name, nor is one quoting.
    if unknown.len() > 64 || unknown.contains('`') {
        return None;
    }
    let normal = |name: &str| -> String {
        name.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let unknown = normal(unknown);
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|field| {
            (
                scopekey_core::edit_distance(&unknown, &normal(field)),
                field,
            )
        })
        .filter(|(distance, field)| *distance <= 2 && plain_name(field))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

/// A parser message as kept in an error: quoted values redacted, and
/// anything else shaped like a key scrubbed, so that not even the error's
/// `Debug` (which a logger may print) holds a key.
fn redact(message: &str) -> String {
    crate::error::scrub_keys(&redact_quoted(message)).into_owned()
}

/// Replaces every `"..."` in a parser message with `"…"` (input values,
/// which the parser writes escaped: a `\"` inside does not close one),
/// and every `` `...` `` that is not a plain field name (lower case, digits,
/// `_`, at most 32 characters) with `` `…` `` (an unknown field's name is
/// the caller's input too).
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        // Values are quoted escaped (`\"` inside); field names in backticks
        // are written as they are.
        let close = if quote == "\"" {
            closing(after, b'"')
        } else {
            after.find('`')
        };
        let Some(close) = close else {
            // An unterminated quote: drop the rest, it is input.
            return out;
        };
        let inner = &after[..close];
        let field_name = quote == "`" && plain_name(inner);
        out.push_str(if field_name { inner } else { "…" });
        out.push_str(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the quote `quote` closes in `text`: its first occurrence not
/// escaped by a backslash (an odd number of them before it), as in the
/// Debug form of a string the parser quotes.
fn closing(text: &str, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut backslashes = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == quote && backslashes % 2 == 0 {
            return Some(i);
        }
        backslashes = if b == b'\\' { backslashes + 1 } else { 0 };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid JSON past what the parser takes is not called invalid.
    #[test]
    fn valid_json_past_the_parsers_limits_is_named_as_such() {
        let e = serde_json::from_str::<serde_json::Value>(r#"{"x": 1e400}"#).unwrap_err();
        assert!(
            describe(&e).starts_with("the request body holds a number too large"),
            "{}",
            describe(&e)
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(
            describe(&e).starts_with("the request body is nested too deeply"),
            "{}",
            describe(&e)
        );
        let e = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(describe(&e).starts_with("the request body is not valid JSON"));
    }

    #[test]
    fn redacts_quoted_values() {
        let e = serde_json::from_str::<Vec<u32>>(r#"["sk_secret"]"#).unwrap_err();
        let shown = describe(&e);
        assert!(!shown.contains("sk_secret"), "{shown}");
        assert!(shown.contains("expected u32"), "{shown}");
        assert_eq!(redact(r#"a "b" c "d"#), "a \"…\" c \"");
        // A string holding quotes is written escaped: redacted whole.
        let key = "sk_4kQ9rT2mXbV7nL1pZ8sW3yH6jD0fG5cAe1B2c3";
        let double_encoded = format!(r#"{{"keys": "[\"{key}\", \"{key}\"]"}}"#);
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Report {
            keys: Vec<String>,
        }
        let e = serde_json::from_str::<Report>(&double_encoded).unwrap_err();
        let shown = describe(&e);
        assert!(!shown.contains(&key[3..20]), "{shown}");
        assert!(shown.contains("expected a sequence"), "{shown}");
        assert_eq!(redact(r#"x "a\"b\\" y "c""#), r#"x "…" y "…""#);
        // Field names are not escaped: a backslash in one closes nothing.
        assert_eq!(
            redact("unknown field `a\\`, expected `name`"),
            "unknown field `…`, expected `name`"
        );
        // Outside quotes too, a key's shape is scrubbed.
        assert!(!redact(&format!("near {key} here")).contains(&key[3..20]));
        assert_eq!(
            redact("unknown field `sk_ABC`, expected `name` or `scopes`"),
            "unknown field `…`, expected `name` or `scopes`"
        );
    }

    /// A mistyped value is named by where it sits; names that are the
    /// caller's input, not a field's, are not repeated.
    #[test]
    fn names_where_a_value_is_mistyped() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            scopes: Vec<String>,
            metadata: Option<std::collections::HashMap<String, Vec<u32>>>,
        }
        let at = |json: &str| parse::<Body>(json.as_bytes()).unwrap_err();
        let shown = at(r#"{"scopes": ["a:b", 1]}"#);
        assert!(shown.contains("at `scopes[1]`: invalid type"), "{shown}");
        let shown = at(r#"{"scopes": [], "metadata": {"team": [1, "x"]}}"#);
        assert!(shown.contains("at `metadata.team[1]`: "), "{shown}");
        let key = "sk_4kQ9rT2mXbV7nL1pZ8sW3yH6jD0fG5cAe1B2c3";
        let shown = at(&format!(
            r#"{{"scopes": [], "metadata": {{"{key}": "x"}}}}"#
        ));
        assert!(shown.contains("at `metadata.…`: "), "{shown}");
        assert!(!shown.contains(&key[3..12]), "{shown}");
        // Nothing to point at: a missing field, an unknown one at the top,
        // trailing text.
        let shown = at(r#"{"scopes": [], "expires_in": 1}"#);
        assert!(
            shown.contains("unknown field `expires_in`") && !shown.contains(" at `"),
            "{shown}"
        );
        // A field written another way is pointed to its name, without
        // being repeated unless it is a plain one.
        for (sent, meant) in [
            ("metaData", Some("metadata")),
            ("Scopes", Some("scopes")),
            ("meta-data", Some("metadata")),
            ("metadta", Some("metadata")),
            ("colour", None),
        ] {
            let shown = at(&format!(r#"{{"scopes": [], "{sent}": 1}}"#));
            match meant {
                Some(meant) => assert!(
                    shown.ends_with(&format!("; did you mean `{meant}`?")),
                    "{shown}"
                ),
                None => assert!(!shown.contains("did you mean"), "{shown}"),
            }
            assert!(!shown.contains(sent) || plain_name(sent), "{shown}");
        }
        // A name made to look like the list of fields suggests nothing of
        // its own.
        let key = "sk_4kQ9rT2mXbV7nL1pZ8sW3yH6jD0fG5cAe1B2c3";
        for sent in [
            format!("{key}`, expected `{key}"),
            format!("x`, expected one of `{key}`, `scopes"),
        ] {
            let body = serde_json::json!({ "scopes": [], sent: 1 }).to_string();
            let shown = at(&body);
            assert!(!shown.contains(&key[3..12]), "{shown}");
            assert!(!shown.contains("did you mean"), "{shown}");
        }
        let shown = at("{}");
        assert!(
            shown.contains("missing field `scopes`") && !shown.contains(" at `"),
            "{shown}"
        );
        let shown = at(r#"{"scopes": []} x"#);
        assert!(
            shown.starts_with("the request body is not valid JSON"),
            "{shown}"
        );
        assert!(parse::<Body>(br#" {"scopes": ["a:b"]} "#).is_ok());
    }

    /// What [`COMPROMISED_LIMIT`]'s docs promise.
    #[test]
    fn compromised_limit_holds_a_full_report_of_short_keys() {
        use scopekey_runtime::compromise::MAX_REPORT_KEYS;
        use scopekey_runtime::key::{CHECK_LEN, DEFAULT_PREFIX, MAX_KEY_LEN, SECRET_LEN};
        let report = |count: usize, len: usize| {
            let keys = vec!["k".repeat(len); count];
            serde_json::to_vec(&serde_json::json!({ "keys": keys }))
                .unwrap()
                .len()
        };
        assert!(report(MAX_REPORT_KEYS, 101) <= COMPROMISED_LIMIT);
        assert!(report(MAX_REPORT_KEYS, 102) > COMPROMISED_LIMIT);
        assert_eq!(101 - 1 - SECRET_LEN - CHECK_LEN, 62);
        assert_eq!(DEFAULT_PREFIX.len() + 1 + SECRET_LEN + CHECK_LEN, 41);
        assert!(report(4_000, MAX_KEY_LEN) <= COMPROMISED_LIMIT);
        assert!(report(4_100, MAX_KEY_LEN) > COMPROMISED_LIMIT);
    }
}
