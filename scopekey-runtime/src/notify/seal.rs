//! Sealed payloads: an automatic rotation's delivery carries the successor's
//! plaintext, which must never rest in the database in the clear. The body
//! is stored encrypted (AES-256-GCM, a random 96-bit nonce, the delivery id
//! as associated data so a sealed body cannot be moved to another row) under
//! a key derived from the notifier's delivery secret, which lives in the
//! notifier's configuration and never in the database. It is opened only to
//! be sent.
//!
//! Stored form: `sealed:v1:<base64 of nonce ‖ ciphertext ‖ tag>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use uuid::Uuid;

use super::signature::Secret;
use crate::error::StoreError;

const PREFIX: &str = "sealed:v1:";
const CONTEXT: &[u8] = b"scopekey sealed delivery v1";

fn key(secret: &Secret) -> LessSafeKey {
    let bytes = secret.derive(CONTEXT);
    // A 32-byte key is exactly what AES-256-GCM takes.
    match UnboundKey::new(&AES_256_GCM, &bytes) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
    }
}

/// Whether a stored payload is sealed.
pub(crate) fn is_sealed(payload: &str) -> bool {
    payload.starts_with(PREFIX)
}

/// Seals `body` for the delivery `id` under `secret`.
pub(crate) fn seal(secret: &Secret, id: Uuid, body: &str) -> Result<String, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::new("no randomness for a nonce", e))?;
    let mut in_out = body.as_bytes().to_vec();
    key(secret)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.as_bytes()),
            &mut in_out,
        )
        .map_err(|_| StoreError::msg("could not seal a delivery"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    Ok(format!("{PREFIX}{}", BASE64.encode(out)))
}

/// Opens a sealed payload with whichever of `secrets` sealed it; `None` if
/// none did (the secret was changed) or the text was tampered with.
pub(crate) fn open(secrets: &[Secret], id: Uuid, sealed: &str) -> Option<String> {
    let bytes = BASE64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    secrets.iter().find_map(|secret| {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key(secret)
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        let id = Uuid::now_v7();
        let sealed = seal(&a, id, r#"{"key":"sk_secret"}"#).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk_secret"));
        assert_eq!(
            open(&[b.clone(), a.clone()], id, &sealed).as_deref(),
            Some(r#"{"key":"sk_secret"}"#)
        );
        assert_eq!(
            open(&[b], id, &sealed),
            None,
            "another secret cannot open it"
        );
        assert_eq!(
            open(std::slice::from_ref(&a), Uuid::now_v7(), &sealed),
            None,
            "bound to its row"
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(open(std::slice::from_ref(&a), id, &tampered), None);
        assert_ne!(
            seal(&a, id, "x").unwrap(),
            seal(&a, id, "x").unwrap(),
            "fresh nonce"
        );
    }
}
