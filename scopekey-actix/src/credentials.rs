//! Reading the presented key from the request headers: the first step of a
//! request's way (header → runtime verification → principal → scope check).
//!
//! Only two places are read: `Authorization: Bearer <key>` (scheme name in
//! any case) and `X-API-Key: <key>`. Never the query string, never a cookie.
//! Nothing here allocates more than one key's worth, hashes, or touches the
//! store, and nothing can panic.

use actix_web::http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// The header that carries a key without a scheme.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The longest header value read as a credential, in bytes. Longer values
/// are refused as invalid tokens before any hashing (a key is well under
/// 100 bytes; the runtime refuses anything over 256 anyway).
pub const MAX_CREDENTIAL_HEADER_LEN: usize = 512;

/// What the request presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No credential this crate understands (no header, or an
    /// `Authorization` scheme other than Bearer: RFC 6750 §3.1 treats an
    /// unsupported method like no authentication).
    Nothing,
    /// A candidate key, to be verified by the runtime (which checks its
    /// format before any lookup).
    Key(String),
    /// A credential refused while reading the header (oversized, not
    /// visible ASCII); the reason is for logs only.
    Unreadable(&'static str),
    /// More than one credential header.
    Multiple,
}

/// Reads the credential headers.
pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let mut authorization = headers.get_all(AUTHORIZATION);
    let mut api_key = headers.get_all(X_API_KEY);
    let (first_auth, first_key) = (authorization.next(), api_key.next());
    let extra = authorization.next().is_some() || api_key.next().is_some();
    match (first_auth, first_key) {
        (None, None) => Presented::Nothing,
        (Some(_), Some(_)) => Presented::Multiple,
        _ if extra => Presented::Multiple,
        (Some(value), None) => match readable(value) {
            Ok(text) => bearer(text),
            Err(why) => Presented::Unreadable(why),
        },
        (None, Some(value)) => match readable(value) {
            Ok(text) => Presented::Key(text.trim_matches([' ', '\t']).to_owned()),
            Err(why) => Presented::Unreadable(why),
        },
    }
}

fn readable(value: &HeaderValue) -> Result<&str, &'static str> {
    if value.len() > MAX_CREDENTIAL_HEADER_LEN {
        return Err("credential header too long");
    }
    value
        .to_str()
        .map_err(|_| "credential header is not visible ASCII")
}

/// `Bearer <token>`, scheme name in any case.
fn bearer(value: &str) -> Presented {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => (scheme, rest.trim_matches([' ', '\t'])),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Nothing;
    }
    // An empty or space-containing token is malformed: the runtime refuses
    // it without a lookup, and records why.
    Presented::Key(token.to_owned())
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
        let cases: &[(&HeaderName, &[u8], Presented)] = &[
            (
                &AUTHORIZATION,
                b"Bearer sk_abc",
                Presented::Key("sk_abc".into()),
            ),
            (
                &AUTHORIZATION,
                b"bearer sk_abc",
                Presented::Key("sk_abc".into()),
            ),
            (
                &AUTHORIZATION,
                b"BEARER   sk_abc  ",
                Presented::Key("sk_abc".into()),
            ),
            (&AUTHORIZATION, b"Bearer", Presented::Key(String::new())),
            (&AUTHORIZATION, b"Bearer a b", Presented::Key("a b".into())),
            (&AUTHORIZATION, b"Basic dXNlcjpwYXNz", Presented::Nothing),
            (&X_API_KEY, b" sk_abc ", Presented::Key("sk_abc".into())),
            (&X_API_KEY, b"", Presented::Key(String::new())),
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
        assert!(matches!(
            presented(&headers(&[(&X_API_KEY, b"sk_\xff\xfe")])),
            Presented::Unreadable(_)
        ));
    }
}
