//! Standard Webhooks signatures: the specification's known-answer vector,
//! and every way a delivery must fail to verify.

#![cfg(feature = "webhooks")]

use scopekey_runtime::notify::signature::{Secret, signature_header};
use scopekey_runtime::notify::{SignatureError, WebhookVerifier, sign, verify};
use time::{Duration, OffsetDateTime};

// The test vector of the Standard Webhooks specification.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1614265330;
const BODY: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn at(offset_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(TIMESTAMP + offset_seconds).unwrap()
}

fn check(signature: &str, body: &[u8], now: OffsetDateTime) -> Result<(), SignatureError> {
    verify(SECRET, ID, &TIMESTAMP.to_string(), signature, body, now)
}

#[test]
fn known_answer_vector() {
    let secret: Secret = SECRET.parse().unwrap();
    assert_eq!(sign(&secret, ID, TIMESTAMP, BODY), SIGNATURE);
    assert_eq!(check(SIGNATURE, BODY, at(0)), Ok(()));
    // The prefix may be left out of the secret, as the reference libraries allow.
    let bare: Secret = SECRET.trim_start_matches("whsec_").parse().unwrap();
    assert_eq!(bare, secret);
    // So may the base64 padding: 32 bytes are 44 characters, one of them `=`.
    let padded = Secret::generate().unwrap();
    let text = padded.to_whsec();
    assert!(text.ends_with('='), "{text}");
    let unpadded: Secret = text.trim_end_matches('=').parse().unwrap();
    assert_eq!(unpadded, padded);
}

#[test]
fn wrong_secret_fails() {
    let other = Secret::generate().unwrap().to_whsec();
    let result = WebhookVerifier::new(&other).unwrap().verify_at(
        ID,
        &TIMESTAMP.to_string(),
        SIGNATURE,
        BODY,
        at(0),
    );
    assert_eq!(result, Err(SignatureError::NoMatchingSignature));
}

#[test]
fn changed_body_id_or_timestamp_fails() {
    assert_eq!(
        check(SIGNATURE, br#"{"test": 2432232315}"#, at(0)),
        Err(SignatureError::NoMatchingSignature)
    );
    assert_eq!(
        check(SIGNATURE, br#"{"test":2432232314}"#, at(0)),
        Err(SignatureError::NoMatchingSignature)
    );
    let v = WebhookVerifier::new(SECRET).unwrap();
    assert_eq!(
        v.verify_at("msg_other", &TIMESTAMP.to_string(), SIGNATURE, BODY, at(0)),
        Err(SignatureError::NoMatchingSignature)
    );
    // A timestamp within tolerance but not the one signed.
    assert_eq!(
        v.verify_at(ID, &(TIMESTAMP + 1).to_string(), SIGNATURE, BODY, at(0)),
        Err(SignatureError::NoMatchingSignature)
    );
}

#[test]
fn timestamp_tolerance() {
    assert_eq!(
        check(SIGNATURE, BODY, at(300)),
        Ok(()),
        "five minutes late is fine"
    );
    assert_eq!(
        check(SIGNATURE, BODY, at(-300)),
        Ok(()),
        "five minutes early is fine"
    );
    assert_eq!(
        check(SIGNATURE, BODY, at(301)),
        Err(SignatureError::TimestampOutOfTolerance)
    );
    assert_eq!(
        check(SIGNATURE, BODY, at(-301)),
        Err(SignatureError::TimestampOutOfTolerance)
    );
    let strict = WebhookVerifier::new(SECRET)
        .unwrap()
        .tolerance(Duration::seconds(10));
    assert_eq!(
        strict.verify_at(ID, &TIMESTAMP.to_string(), SIGNATURE, BODY, at(11)),
        Err(SignatureError::TimestampOutOfTolerance)
    );
    let v = WebhookVerifier::new(SECRET).unwrap();
    for bad in ["", "soon", "1614265330.5", "99999999999999999999"] {
        assert_eq!(
            v.verify_at(ID, bad, SIGNATURE, BODY, at(0)),
            Err(SignatureError::InvalidTimestamp),
            "{bad:?}"
        );
    }
    // Against the system clock, a 2021 timestamp is far out of tolerance.
    assert_eq!(
        v.verify(ID, &TIMESTAMP.to_string(), SIGNATURE, BODY),
        Err(SignatureError::TimestampOutOfTolerance)
    );
}

#[test]
fn empty_or_truncated_signatures_never_pass() {
    let full = SIGNATURE.trim_start_matches("v1,");
    let truncated_b64 = format!("v1,{}", &full[..20]);
    // The first 16 bytes of the right tag, correctly encoded: a truncated MAC.
    let tag = base64_decode(full);
    let truncated_tag = format!("v1,{}", base64_encode(&tag[..16]));
    for bad in [
        "",
        " ",
        "v1,",
        "v1",
        ",",
        "v1, ",
        truncated_b64.as_str(),
        truncated_tag.as_str(),
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,not base64!",
    ] {
        assert_eq!(
            check(bad, BODY, at(0)),
            Err(SignatureError::NoMatchingSignature),
            "{bad:?}"
        );
    }
    assert_eq!(
        WebhookVerifier::new(SECRET).unwrap().verify_at(
            "",
            &TIMESTAMP.to_string(),
            SIGNATURE,
            BODY,
            at(0)
        ),
        Err(SignatureError::MissingId)
    );
}

#[test]
fn several_signatures_while_rotating() {
    let old: Secret = SECRET.parse().unwrap();
    let new = Secret::generate().unwrap();
    let header = signature_header(&[new.clone(), old.clone()], ID, TIMESTAMP, BODY);
    assert_eq!(header.split(' ').count(), 2);
    assert!(header.ends_with(SIGNATURE));
    for secret in [&old, &new] {
        let v = WebhookVerifier::from_secrets([secret.clone()]);
        assert_eq!(
            v.verify_at(ID, &TIMESTAMP.to_string(), &header, BODY, at(0)),
            Ok(())
        );
    }
    // A receiver holding both secrets accepts a signature by either.
    let both = WebhookVerifier::from_secrets([old, new]);
    assert_eq!(
        both.verify_at(ID, &TIMESTAMP.to_string(), SIGNATURE, BODY, at(0)),
        Ok(())
    );
    // Garbage before a valid signature does not hide it.
    let noisy = format!("v1, v2,xyz {SIGNATURE}");
    assert_eq!(check(&noisy, BODY, at(0)), Ok(()));
}

#[test]
fn bad_secrets_are_refused() {
    for bad in [
        "whsec_",
        "",
        "whsec_!!!!",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
    ] {
        assert_eq!(
            WebhookVerifier::new(bad).err(),
            Some(SignatureError::InvalidSecret),
            "{bad:?}"
        );
    }
    let secret: Secret = SECRET.parse().unwrap();
    assert_eq!(format!("{secret:?}"), "Secret(\"whsec_…\")");
    assert_eq!(secret.to_whsec(), SECRET);
}

// Minimal base64 (standard alphabet) so the test does not lean on the code
// under test for encoding.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}
