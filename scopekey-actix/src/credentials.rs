//! Reading the presented key from the request headers: the first step of a
//! request's way (header → runtime verification → principal → scope check).
//!
//! Only two places are read: `Authorization: Bearer <key>` (scheme name in
//! any case) and `X-API-Key: <key>`. Never the query string, never a cookie.
//! Nothing here allocates, hashes, or touches the store, and nothing can
//! panic.

use actix_web::http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// The header that carries a key without a scheme.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The longest header value read as a credential, in bytes. Longer values
/// are refused as invalid tokens before any hashing (a key is 41 bytes with
/// the default prefix and at most
/// [`MAX_KEY_LEN`](scopekey_runtime::key::MAX_KEY_LEN), 256, with the
/// longest; the runtime refuses anything longer anyway).
pub const MAX_CREDENTIAL_HEADER_LEN: usize = 512;

/// What the request presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No credential this crate understands (no header, or an
    /// `Authorization` scheme other than Bearer: RFC 6750 §3.1 treats an
    /// unsupported method like no authentication).
    Nothing,
    /// A candidate key, to be verified by the runtime (which checks its
    /// format before any lookup).
    Key(&'a str),
    /// A credential refused while reading the header (oversized, not
    /// UTF-8); the reason is for logs only.
    Unreadable(&'static str),
    /// More than one credential header.
    Multiple,
}

/// Reads the credential headers.
pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut authorization = headers.get_all(AUTHORIZATION);
    let mut api_key = headers.get_all(X_API_KEY);
    let (first_auth, first_key) = (authorization.next(), api_key.next());
    let extra = authorization.next().is_some() || api_key.next().is_some();
    match (first_auth, first_key) {
        (None, None) => Presented::Nothing,
        (Some(_), Some(_)) => Presented::Multiple,
        _ if extra => Presented::Multiple,
        (Some(value), None) => from_authorization(value),
        (None, Some(value)) => match readable(value) {
            Ok(text) => one_key(trim(text)),
            Err(why) => Presented::Unreadable(why),
        },
    }
}

/// A candidate key, unless it holds a comma: no key does (base62 and `_`),
/// so it is two header lines a proxy merged into one (RFC 9110 §5.3), two
/// credentials.
fn one_key(text: &str) -> Presented<'_> {
    if text.contains(',') {
        Presented::Multiple
    } else {
        Presented::Key(text)
    }
}

/// An `Authorization` value: its scheme first, so that another scheme's
/// credentials (a Kerberos `Negotiate` token of a few kilobytes, say) are
/// no credential whatever their length or bytes (RFC 6750 §3.1); a scheme
/// name that is not ASCII is a garbled credential, refused.
fn from_authorization(value: &HeaderValue) -> Presented<'_> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = value.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let scheme = bytes[start..].split(blank).next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return if !scheme.is_ascii() {
            Presented::Unreadable("authorization scheme is not ASCII")
        } else if bytes.split(|b| *b == b',').skip(1).any(starts_bearer) {
            // Another scheme's line and a Bearer line merged into one by a
            // proxy: two credentials, whichever came first.
            Presented::Multiple
        } else {
            Presented::Nothing
        };
    }
    match readable(value) {
        Ok(text) => bearer(text),
        Err(why) => Presented::Unreadable(why),
    }
}

/// Whether a comma-separated part of an `Authorization` value starts a
/// Bearer credential (`Bearer` then a space, a tab or nothing, after
/// optional blanks).
fn starts_bearer(part: &[u8]) -> bool {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = part.iter().position(|b| !blank(b)).unwrap_or(part.len());
    let part = &part[start..];
    part.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"))
        && matches!(part.get(6), None | Some(b' ' | b'\t'))
}

fn readable(value: &HeaderValue) -> Result<&str, &'static str> {
    if value.len() > MAX_CREDENTIAL_HEADER_LEN {
        return Err("credential header too long");
    }
    // Text is all a key can be; whether its characters are a key's is the
    // runtime's format check, on a cache miss (a cache hit is an exact
    // match of a key that passed it), so no byte-by-byte check runs here on
    // every request.
    std::str::from_utf8(value.as_bytes()).map_err(|_| "credential header is not UTF-8")
}

/// Leading and trailing spaces and tabs removed (byte-wise: both are single
/// ASCII bytes, so the cuts fall on character boundaries).
fn trim(text: &str) -> &str {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    // Both ends are at ASCII bytes, so at character boundaries.
    text.get(start..end).unwrap_or_default()
}

/// `Bearer <token>`, scheme name in any case.
fn bearer(value: &str) -> Presented<'_> {
    const SCHEME: &str = "bearer";
    let value = trim(value);
    // The scheme is everything before the first space or tab: "Bearer"
    // exactly when the value starts with it and ends or breaks right after.
    let is_bearer = value
        .get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
        && matches!(
            value.as_bytes().get(SCHEME.len()),
            None | Some(b' ' | b'\t')
        );
    if !is_bearer {
        // Another scheme is no credential (RFC 6750 §3.1); text no scheme
        // could be (not ASCII) is a garbled credential, refused.
        return if value.is_ascii() {
            Presented::Nothing
        } else {
            Presented::Unreadable("authorization header is not ASCII")
        };
    }
    // An empty or space-containing token is malformed: the runtime refuses
    // it without a lookup, and records why.
    one_key(trim(&value[SCHEME.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_bearer_and_x_api_key() {
        let cases: &[(&HeaderName, &[u8], Presented<'_>)] = &[
            (&AUTHORIZATION, b"Bearer sk_abc", Presented::Key("sk_abc")),
            (&AUTHORIZATION, b"bearer sk_abc", Presented::Key("sk_abc")),
            (
                &AUTHORIZATION,
                b"BEARER   sk_abc  ",
                Presented::Key("sk_abc"),
            ),
            (&AUTHORIZATION, b"Bearer", Presented::Key("")),
            (&AUTHORIZATION, b"Bearer a b", Presented::Key("a b")),
            (&AUTHORIZATION, b"Basic dXNlcjpwYXNz", Presented::Nothing),
            (&AUTHORIZATION, b"Bearersk_abc", Presented::Nothing),
            (&AUTHORIZATION, b"Bearer-x sk_abc", Presented::Nothing),
            (&AUTHORIZATION, b"Bear sk_abc", Presented::Nothing),
            (&AUTHORIZATION, b"bEaReR\tsk_abc", Presented::Key("sk_abc")),
            (&AUTHORIZATION, b"Negotiate abc", Presented::Nothing),
            (&X_API_KEY, b" sk_abc ", Presented::Key("sk_abc")),
            (&X_API_KEY, b"", Presented::Key("")),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                &presented(&headers(&[(name, value)])),
                expected,
                "{value:?}"
            );
        }
        assert_eq!(presented(&HeaderMap::new()), Presented::Nothing);
    }

    #[test]
    fn refuses_two_credentials() {
        let two_auth = headers(&[(&AUTHORIZATION, b"Bearer a"), (&AUTHORIZATION, b"Bearer a")]);
        let both = headers(&[(&AUTHORIZATION, b"Bearer a"), (&X_API_KEY, b"a")]);
        let two_keys = headers(&[(&X_API_KEY, b"a"), (&X_API_KEY, b"b")]);
        for h in [two_auth, both, two_keys] {
            assert_eq!(presented(&h), Presented::Multiple);
        }
    }

    #[test]
    fn refuses_unreadable_headers_before_anything_else() {
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_HEADER_LEN));
        assert!(matches!(
            presented(&headers(&[(&AUTHORIZATION, long.as_bytes())])),
            Presented::Unreadable(_)
        ));
        // (Control bytes never make a header value.)
        for value in [&b"sk_\xff\xfe"[..], b"Bearer sk_\x80"] {
            assert!(
                matches!(
                    presented(&headers(&[(&X_API_KEY, value)])),
                    Presented::Unreadable(_)
                ),
                "{value:?}"
            );
        }
        assert!(matches!(
            presented(&headers(&[(&AUTHORIZATION, "Négotiate x".as_bytes())])),
            Presented::Unreadable(_)
        ));
        // Another scheme is no credential, however long or whatever its
        // bytes.
        let negotiate = format!("Negotiate {}", "YII".repeat(600));
        assert_eq!(
            presented(&headers(&[(&AUTHORIZATION, negotiate.as_bytes())])),
            Presented::Nothing
        );
        assert_eq!(
            presented(&headers(&[(&AUTHORIZATION, b"Basic \xff\xfe")])),
            Presented::Nothing
        );
        // A Bearer value is still bounded.
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_HEADER_LEN));
        assert!(matches!(
            presented(&headers(&[(&AUTHORIZATION, long.as_bytes())])),
            Presented::Unreadable(_)
        ));
        // Text that is not a key's is left to the runtime's format check.
        assert_eq!(
            presented(&headers(&[(&X_API_KEY, "\tsk_é ~".as_bytes())])),
            Presented::Key("sk_é ~")
        );
        // Two lines merged by a proxy: a comma no key holds.
        for (name, value) in [
            (&X_API_KEY, "sk_a, sk_b"),
            (&X_API_KEY, "sk_a,"),
            (&AUTHORIZATION, "Bearer sk_a, Bearer sk_b"),
            (&AUTHORIZATION, "bearer sk_a,sk_b"),
        ] {
            assert_eq!(
                presented(&headers(&[(name, value.as_bytes())])),
                Presented::Multiple,
                "{value}"
            );
        }
        // Whichever line came first.
        assert_eq!(
            presented(&headers(&[(&AUTHORIZATION, b"Basic eDp5, Bearer sk_a")])),
            Presented::Multiple
        );
        // Another scheme's parameters may hold commas: still no credential.
        assert_eq!(
            presented(&headers(&[(
                &AUTHORIZATION,
                b"Digest realm=\"x\", nonce=\"y\""
            )])),
            Presented::Nothing
        );
    }
}
