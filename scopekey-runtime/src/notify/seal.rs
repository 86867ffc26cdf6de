//! Sealed values: what automatic rotation must keep in the database but
//! never in the clear — a successor's delivery (it carries the plaintext)
//! and each rotating key's webhook signing secret. They are stored encrypted
//! (AES-256-GCM, a random 96-bit nonce) under a key derived from the
//! runtime's rotation secret, which lives in the service's configuration
//! and never in the database, with associated data binding each value to
//! its use (a delivery's id; the label of key secrets). They are opened
//! only when needed: a delivery to be sent, a key secret to sign it.
//!
//! Stored form: `sealed:v1:<base64 of nonce ‖ ciphertext ‖ tag>`. Any
//! value starting `sealed:` counts as sealed (the outbox's SQL tests the
//! same prefix, `substr(payload, 1, 7) = 'sealed:'`), whatever its version:
//! one of a version this runtime does not know (sealed by a newer one) does
//! not open, like one sealed under a secret it does not hold.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::signature::Secret;
use crate::error::StoreError;

/// What every sealed value starts with, whatever its version.
const SEALED: &str = "sealed:";
/// The version this runtime seals and opens.
const PREFIX: &str = "sealed:v1:";
const CONTEXT: &[u8] = b"scopekey sealed delivery v1";
/// The associated data of a key's sealed webhook secret.
pub(crate) const KEY_SECRET: &[u8] = b"scopekey rotation webhook secret v1";

fn key(secret: &Secret) -> LessSafeKey {
    let bytes = secret.derive(CONTEXT);
    // A 32-byte key is exactly what AES-256-GCM takes.
    match UnboundKey::new(&AES_256_GCM, &bytes) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
    }
}

/// Whether a stored value is sealed, in any version (as the outbox's SQL
/// judges it): never to be sent as it is, whether or not [`open`] can open
/// it.
pub(crate) fn is_sealed(payload: &str) -> bool {
    payload.starts_with(SEALED)
}

/// Seals `plain` under `secret`, bound to `aad`.
pub(crate) fn seal(secret: &Secret, aad: &[u8], plain: &[u8]) -> Result<String, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::new("no randomness for a nonce", e))?;
    let mut in_out = plain.to_vec();
    key(secret)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| StoreError::msg("could not seal a value"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    Ok(format!("{PREFIX}{}", BASE64.encode(out)))
}

/// Opens a sealed value with whichever of `secrets` sealed it; `None` if
/// none did (the secret was changed), it was sealed for another `aad`, in
/// a version other than `v1`, or it was tampered with.
pub(crate) fn open(secrets: &[Secret], aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    secrets.iter().find_map(|secret| {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key(secret)
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        let id = uuid::Uuid::now_v7();
        let sealed = seal(&a, id.as_bytes(), br#"{"key":"sk_secret"}"#).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk_secret"));
        assert_eq!(
            open(&[b.clone(), a.clone()], id.as_bytes(), &sealed).as_deref(),
            Some(&br#"{"key":"sk_secret"}"#[..])
        );
        assert_eq!(
            open(&[b], id.as_bytes(), &sealed),
            None,
            "another secret cannot open it"
        );
        assert_eq!(
            open(std::slice::from_ref(&a), KEY_SECRET, &sealed),
            None,
            "bound to its use"
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            open(std::slice::from_ref(&a), id.as_bytes(), &tampered),
            None
        );
        assert_ne!(
            seal(&a, KEY_SECRET, b"x").unwrap(),
            seal(&a, KEY_SECRET, b"x").unwrap(),
            "fresh nonce"
        );
    }

    /// The outbox's SQL takes any `sealed:` payload for sealed; so does
    /// the notifier, and one of an unknown version does not open.
    #[test]
    fn any_version_is_sealed_and_an_unknown_one_does_not_open() {
        let a = Secret::generate().unwrap();
        let id = uuid::Uuid::now_v7();
        let sealed = seal(&a, id.as_bytes(), b"plain").unwrap();
        let v2 = sealed.replacen("sealed:v1:", "sealed:v2:", 1);
        for payload in [sealed.as_str(), &v2, "sealed:", "sealed:v9:garbage"] {
            assert!(is_sealed(payload), "{payload}");
        }
        assert_eq!(open(std::slice::from_ref(&a), id.as_bytes(), &v2), None);
        assert_eq!(
            open(std::slice::from_ref(&a), id.as_bytes(), "sealed:"),
            None
        );
        for payload in ["", "sealed", "Sealed:v1:x", r#"{"type":"sealed:v1:"}"#] {
            assert!(!is_sealed(payload), "{payload}");
        }
    }
}
