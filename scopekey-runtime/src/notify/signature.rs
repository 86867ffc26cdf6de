//! Standard Webhooks signatures: signing deliveries, and verifying them on
//! the receiving side.
//!
//! A delivery carries three headers:
//!
//! - `webhook-id`: the delivery's id, the same on every retry (receivers
//!   deduplicate on it);
//! - `webhook-timestamp`: the attempt's time, in Unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   one per secret, space-separated, while a secret is being rotated.
//!
//! Secrets are written `whsec_<base64>`; the HMAC key is the decoded bytes
//! after `whsec_`. Use 24 to 64 random bytes.
//!
//! A receiver written in Rust checks a delivery with [`WebhookVerifier`]:
//!
//! ```
//! use scopekey_runtime::notify::{WebhookVerifier, sign};
//! use scopekey_runtime::notify::signature::Secret;
//!
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let body = br#"{"test": 2432232314}"#;
//! let header = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
//! assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//!
//! let verifier = WebhookVerifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let at = time::OffsetDateTime::from_unix_timestamp(1614265330 + 60)?;
//! verifier.verify_at("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &header, body, at)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard base64, its padding optional: how secrets are read.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a delivery's timestamp may be from the receiver's clock: five
/// minutes either way, as the Standard Webhooks specification recommends.
pub const DEFAULT_TOLERANCE: Duration = Duration::minutes(5);
/// The signature scheme this crate writes and reads.
const VERSION: &str = "v1";
/// Bytes in an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Why a secret could not be read or a delivery did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The secret is not `whsec_<base64>` (or is empty).
    #[error("webhook secret must be `whsec_` followed by base64 (of at least one byte)")]
    InvalidSecret,
    /// `webhook-id` is empty.
    #[error("missing webhook-id")]
    MissingId,
    /// `webhook-timestamp` is not a whole number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// `webhook-timestamp` is further than the tolerance from now: a replay,
    /// or a clock that is badly off.
    #[error("webhook-timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    /// No `v1` signature in `webhook-signature` matches any secret (this
    /// includes an empty header and an empty or truncated `v1,`).
    #[error("no matching webhook signature")]
    NoMatchingSignature,
}

/// A webhook signing secret. `Debug` never shows it; its memory is wiped
/// when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Wipes the bytes now (the secret is then empty: do not sign with it),
/// for a holder done with it before the value is dropped.
impl zeroize::Zeroize for Secret {
    fn zeroize(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

impl Secret {
    /// A secret from raw key bytes (at least one).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, SignatureError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(SignatureError::InvalidSecret);
        }
        Ok(Self(bytes))
    }

    /// A fresh secret of 32 random bytes, from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The text form, `whsec_<base64>`, to hand to a receiver.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// The raw key bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A 32-byte key for another purpose, derived from this secret:
    /// HMAC-SHA256(secret, `context`).
    pub(crate) fn derive(&self, context: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(context);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"whsec_…\")")
    }
}

impl FromStr for Secret {
    type Err = SignatureError;

    /// Reads `whsec_<base64>`. The prefix may be left out, as the Standard
    /// Webhooks libraries allow, and so may the base64 padding (`=`), which
    /// is easily lost copying a secret.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let encoded = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let bytes = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| SignatureError::InvalidSecret)?;
        Self::from_bytes(bytes)
    }
}

/// The tag over `{id}.{timestamp}.{body}`.
fn tag(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One signature, `v1,<base64>`, of a delivery with this id, timestamp and
/// body.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let bytes = tag(secret, id, timestamp, body).finalize().into_bytes();
    format!("{VERSION},{}", BASE64.encode(bytes))
}

/// The `webhook-signature` header value: one signature per secret,
/// space-separated (several while a secret is being rotated).
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks deliveries on the receiving side: signature (constant-time
/// comparison) and timestamp tolerance.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
}

impl WebhookVerifier {
    /// A verifier for one secret in `whsec_<base64>` form, with the default
    /// tolerance of five minutes.
    pub fn new(secret: &str) -> Result<Self, SignatureError> {
        Ok(Self::from_secrets([secret.parse()?]))
    }

    /// A verifier accepting a signature by any of these secrets (while the
    /// sender rotates from one to the next).
    pub fn from_secrets(secrets: impl IntoIterator<Item = Secret>) -> Self {
        Self {
            secrets: secrets.into_iter().collect(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// How far the timestamp may be from now, either way.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance.abs();
        self
    }

    /// Verifies the three headers and the raw body against the system clock.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        self.verify_at(id, timestamp, signature, body, OffsetDateTime::now_utc())
    }

    /// Verifies the three headers and the raw body as of `now`.
    pub fn verify_at(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        if id.is_empty() {
            return Err(SignatureError::MissingId);
        }
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::InvalidTimestamp)?;
        let sent = OffsetDateTime::from_unix_timestamp(ts)
            .map_err(|_| SignatureError::InvalidTimestamp)?;
        if (now - sent).abs() > self.tolerance {
            return Err(SignatureError::TimestampOutOfTolerance);
        }
        for candidate in signature.split_ascii_whitespace() {
            let Some((version, encoded)) = candidate.split_once(',') else {
                continue;
            };
            if version != VERSION {
                continue;
            }
            let Ok(given) = BASE64.decode(encoded) else {
                continue;
            };
            // An empty or truncated tag never passes: only a full-length tag
            // is compared, and `verify_slice` compares in constant time.
            if given.len() != TAG_LEN {
                continue;
            }
            if self
                .secrets
                .iter()
                .any(|s| tag(s, id, ts, body).verify_slice(&given).is_ok())
            {
                return Ok(());
            }
        }
        Err(SignatureError::NoMatchingSignature)
    }
}

/// Verifies one delivery against one `whsec_` secret with the default
/// tolerance, as of `now`: a shorthand for [`WebhookVerifier::verify_at`].
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(), SignatureError> {
    WebhookVerifier::new(secret)?.verify_at(id, timestamp, signature, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret is wiped when dropped, and can be wiped sooner.
    #[test]
    fn secrets_are_wiped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        let mut secret = Secret::generate().unwrap();
        assert_eq!(secret.as_bytes().len(), 32);
        zeroize::Zeroize::zeroize(&mut secret);
        assert!(secret.as_bytes().is_empty());
    }

    #[test]
    fn secret_round_trip_and_debug() {
        let s = Secret::generate().unwrap();
        let text = s.to_whsec();
        assert_eq!(text.parse::<Secret>().unwrap(), s);
        assert!(!format!("{s:?}").contains(&text[6..]));
        assert_eq!(
            "whsec_".parse::<Secret>(),
            Err(SignatureError::InvalidSecret)
        );
        assert_eq!(
            "whsec_!!".parse::<Secret>(),
            Err(SignatureError::InvalidSecret)
        );
    }
}
