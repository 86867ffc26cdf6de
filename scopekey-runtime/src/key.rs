//! Key identity and format: [`KeyId`], [`Plaintext`], the checksum, the hash
//! and the display hint.
//!
//! A plaintext key reads `<prefix>_<secret><check>`: `secret` is 32 base62
//! characters from the operating system's CSPRNG (190 bits), `check` is the
//! CRC32 of `<prefix>_<secret>` written as 6 base62 characters, so a mistyped
//! or truncated key is rejected without a database round trip and secret
//! scanners can recognise scopekey keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the random part of a generated key.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum suffix.
pub const CHECK_LEN: usize = 6;
/// The longest plaintext key accepted by [`KeyFormat::parse`]; longer input is
/// refused before any hashing.
pub const MAX_KEY_LEN: usize = 256;
/// The longest key prefix [`KeyFormat::new`] accepts: with the `_`, the
/// secret and the check, a key of it is [`MAX_KEY_LEN`] bytes.
pub const MAX_PREFIX_LEN: usize = MAX_KEY_LEN - 1 - SECRET_LEN - CHECK_LEN;
/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sk";

/// A key's identifier (UUID v7, time-ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub Uuid);

impl KeyId {
    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(KeyId).map_err(|_| {
            // Repeated only when it could be nothing but a mistyped id: a
            // key, or part of one, pasted there is never echoed.
            let id_like = s.len() <= 45
                && s.chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, '-' | '{' | '}' | ':'));
            Error::Invalid(if id_like {
                format!("`{}` is not a key id (a UUID)", s.escape_debug())
            } else {
                "not a key id (a UUID)".to_owned()
            })
        })
    }
}

impl From<Uuid> for KeyId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

/// A plaintext key. It exists once, when a key is created or rotated; it is
/// never stored. `Debug` and `Display` print only the hint. Its memory is
/// wiped when it is dropped (copies made of
/// [`expose_secret`](Self::expose_secret)'s text, a response body say, are
/// the copier's).
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(String);

/// Wipes the text now (it is then empty), for a holder done with it before
/// the value is dropped.
impl Zeroize for Plaintext {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for Plaintext {}

impl Plaintext {
    /// The secret text: hand it to the key's holder, once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The non-secret hint (`sk_…Wx9a`).
    pub fn hint(&self) -> String {
        hint(&self.0)
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({})", self.hint())
    }
}

impl fmt::Display for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

/// The BLAKE3 hash a key is stored and looked up by. No HTTP route, CLI
/// output, audit event or webhook shows it, and its `Debug` is redacted. It
/// travels only between a [`Store`](crate::Store) and the verifier (a
/// custom store sees it in [`KeyRecord`](crate::KeyRecord)), and on
/// PostgreSQL in the change notifications between instances, which any
/// role allowed to connect to the database may `LISTEN` to. A hash does not
/// authenticate: verification hashes what is presented.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub(crate) [u8; 32]);

impl KeyHash {
    /// Wraps raw bytes read from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for a store to write.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Longer than [`MAX_KEY_LEN`].
    TooLong,
    /// Not `<prefix>_<secret><check>` with the configured prefix.
    Shape,
    /// The check characters do not match.
    Checksum,
}

/// The environment variable [`KeyFormat::from_env`] reads the prefix from.
pub const PREFIX_ENV: &str = "SCOPEKEY_KEY_PREFIX";
/// The environment variable [`KeyFormat::from_env`] reads the pepper from
/// (never a command-line option: arguments show in process lists).
pub const PEPPER_ENV: &str = "SCOPEKEY_PEPPER";

/// The key format in force: the prefix, and the hashing pepper.
#[derive(Clone)]
pub struct KeyFormat {
    prefix: String,
    /// Wiped from memory when dropped.
    pepper: Option<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .field("peppered", &self.pepper.is_some())
            .finish()
    }
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
            pepper: None,
        }
    }
}

impl KeyFormat {
    /// A format with this prefix (`[a-z][a-z0-9]*(_[a-z0-9]+)*`, e.g.
    /// `acme_live`), at most [`MAX_PREFIX_LEN`] bytes, so that its keys are
    /// within what [`parse`](Self::parse) accepts.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::Invalid(format!(
                "key prefix is {} bytes long; at most {MAX_PREFIX_LEN} (a key is at most \
                 {MAX_KEY_LEN} bytes)",
                prefix.len()
            )));
        }
        if !valid_prefix(prefix) {
            // Repeated only when too short to be a key pasted in its place.
            let shown = if prefix.len() <= 32 {
                format!("key prefix `{}`", prefix.escape_debug())
            } else {
                "the key prefix (not repeated)".to_owned()
            };
            return Err(Error::Invalid(format!(
                "{shown} must match [a-z][a-z0-9]*(_[a-z0-9]+)*, e.g. `sk` or `acme_live`"
            )));
        }
        Ok(Self {
            prefix: prefix.into(),
            pepper: None,
        })
    }

    /// Keys the hash with a server-side pepper: a stolen database then cannot
    /// be checked against guessed keys without the pepper. Changing the pepper
    /// invalidates every stored key.
    pub fn with_pepper(mut self, pepper: &[u8]) -> Self {
        self.pepper = Some(Zeroizing::new(blake3::derive_key(
            "scopekey 2026 key hash pepper",
            pepper,
        )));
        self
    }

    /// The format a service's environment names, as the `scopekey` CLI and
    /// the demo read it: the prefix from `SCOPEKEY_KEY_PREFIX` (`sk` if
    /// unset) and, if set and not empty, the pepper from `SCOPEKEY_PEPPER`.
    /// A service and its admin tools must agree on both, or keys made by
    /// one are refused by the other.
    ///
    /// ```
    /// # fn main() -> Result<(), scopekey_runtime::Error> {
    /// let format = scopekey_runtime::KeyFormat::from_env()?;
    /// # let _ = format;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_env() -> Result<Self, Error> {
        // Set but empty is an error, as in the CLI: no prefix is valid.
        let prefix = match std::env::var(PREFIX_ENV) {
            Ok(p) => p,
            Err(std::env::VarError::NotPresent) => DEFAULT_PREFIX.to_owned(),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::Invalid(format!("{PREFIX_ENV} is not valid UTF-8")));
            }
        };
        Self::new(&prefix)
            .map_err(|e| Error::Invalid(format!("{PREFIX_ENV}: {e}")))?
            .with_pepper_from_env()
    }

    /// Keys the hash with the pepper in `SCOPEKEY_PEPPER`, if it is set and
    /// not empty (see [`with_pepper`](Self::with_pepper)).
    pub fn with_pepper_from_env(self) -> Result<Self, Error> {
        match std::env::var(PEPPER_ENV) {
            Ok(p) if !p.is_empty() => Ok(self.with_pepper(p.as_bytes())),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(self),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Invalid(format!("{PEPPER_ENV} is not valid UTF-8")))
            }
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate(&self) -> Result<Plaintext, Error> {
        // The random bytes and the secret's text are wiped once the key is
        // made.
        let mut secret = Zeroizing::new(String::with_capacity(SECRET_LEN));
        let mut buf = Zeroizing::new([0u8; 64]);
        while secret.len() < SECRET_LEN {
            getrandom::fill(&mut *buf)
                .map_err(|e| Error::Internal(format!("the system random source failed: {e}")))?;
            // Rejection sampling: 248 = 4 * 62, so accepted bytes are uniform mod 62.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if secret.len() == SECRET_LEN {
                    break;
                }
                secret.push(BASE62[(b % 62) as usize] as char);
            }
        }
        // Sized once, so that no reallocation leaves a copy behind.
        let mut key = String::with_capacity(self.prefix.len() + 1 + SECRET_LEN + CHECK_LEN);
        key.push_str(&self.prefix);
        key.push('_');
        key.push_str(&secret);
        let check = checksum(&key);
        key.extend(check.iter().map(|&b| char::from(b)));
        Ok(Plaintext(key))
    }

    /// Checks a presented key's shape, prefix and checksum; no I/O.
    pub fn parse(&self, presented: &str) -> Result<(), Malformed> {
        if presented.len() > MAX_KEY_LEN {
            return Err(Malformed::TooLong);
        }
        let body = presented
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(Malformed::Shape)?;
        if body.len() < SECRET_LEN + CHECK_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Malformed::Shape);
        }
        let split = presented.len() - CHECK_LEN;
        if checksum(&presented[..split]) != presented.as_bytes()[split..] {
            return Err(Malformed::Checksum);
        }
        Ok(())
    }

    /// The lookup hash of a key (keyed with the pepper, if any).
    pub fn hash(&self, presented: &str) -> KeyHash {
        KeyHash(match &self.pepper {
            Some(pepper) => *blake3::keyed_hash(pepper, presented.as_bytes()).as_bytes(),
            None => *blake3::hash(presented.as_bytes()).as_bytes(),
        })
    }
}

/// Where well-formed keys of any prefix (their check digits matching) lie
/// in `text`, in byte ranges: in text a person typed (a name, a reason,
/// metadata), which must not keep a key, since keys are stored only as
/// hashes. A key is found wherever it sits: after `Bearer%20`, glued after
/// other letters, followed by `_old` or by punctuation.
pub fn keys_in(text: &str) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let body = SECRET_LEN + CHECK_LEN;
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        // A run of letters and digits after a `_`: a key's secret and
        // check, if the text before the `_` ends with a prefix whose check
        // digits match.
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i - start < body || start == 0 || b[start - 1] != b'_' {
            continue;
        }
        let sep = start - 1;
        // A prefix never ends with `_`.
        if sep == 0 || b[sep - 1] == b'_' {
            continue;
        }
        // The run may go on past the key (letters glued after it): a
        // generated key's secret is exactly `SECRET_LEN` long.
        let exact = start + body;
        let ends: &[usize] = if i == exact { &[exact] } else { &[i, exact] };
        // Not back into a key found before: found keys never overlap.
        let lowest = sep
            .saturating_sub(MAX_PREFIX_LEN)
            .max(found.last().map_or(0, |r: &std::ops::Range<usize>| r.end));
        let mut hit = None;
        // Walking back from the `_`, `text[from..sep]` is a prefix exactly
        // when it starts with a lower-case letter: letters, digits and
        // single `_` between them are all it holds so far.
        'prefixes: for from in (lowest..sep).rev() {
            let c = b[from];
            let double_underscore = c == b'_' && b[from + 1] == b'_';
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') || double_underscore {
                break;
            }
            if !c.is_ascii_lowercase() {
                continue;
            }
            for &end in ends {
                let split = end - CHECK_LEN;
                if checksum(&text[from..split]) == b[split..end] {
                    hit = Some(from..end);
                    break 'prefixes;
                }
            }
        }
        found.extend(hit);
    }
    found
}

/// Whether `text` holds a well-formed key (see [`keys_in`]).
pub fn holds_a_key(text: &str) -> bool {
    !keys_in(text).is_empty()
}

/// `text` with every well-formed key in it (see [`keys_in`]) replaced by
/// its hint (`sk_…Wx9a`), as a key is shown everywhere else.
pub fn redact_keys(text: &str) -> std::borrow::Cow<'_, str> {
    let found = keys_in(text);
    if found.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for range in found {
        // Ranges never overlap (see `keys_in`); should one, it merges.
        let range = range.start.max(copied)..range.end.max(copied);
        out.push_str(&text[copied..range.start]);
        out.push_str(&hint(&text[range.clone()]));
        copied = range.end;
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

fn valid_prefix(p: &str) -> bool {
    let mut parts = p.split('_');
    let first = parts.next().unwrap_or_default();
    first.starts_with(|c: char| c.is_ascii_lowercase())
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && parts.all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// CRC32 of `text` as exactly [`CHECK_LEN`] base62 characters (ASCII).
fn checksum(text: &str) -> [u8; CHECK_LEN] {
    let mut n = crc32fast::hash(text.as_bytes());
    let mut out = [b'0'; CHECK_LEN];
    // 62^6 > 2^32, so every CRC32 fits in six digits.
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// The display hint of a key: the prefix and its last four characters.
pub fn hint(key: &str) -> String {
    let (prefix, tail) = key.rsplit_once('_').unwrap_or(("", key));
    let last = tail.len().saturating_sub(4);
    format!("{prefix}_…{}", tail.get(last..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(hash: KeyHash) -> String {
        hash.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key id that does not parse is repeated in the error only when it is
    /// made of a UUID's characters: no key, nor part of one, pasted where an
    /// id belongs is echoed.
    #[test]
    fn key_ids_in_errors() {
        let id = "0190a4a1-7c3e-7f00-8000-000000000001";
        assert_eq!(id.parse::<KeyId>().unwrap().to_string(), id);
        let Err(Error::Invalid(short)) = "abc-123".parse::<KeyId>() else {
            panic!("not an id");
        };
        assert!(short.contains("`abc-123`"), "{short}");
        let key = KeyFormat::default().generate().unwrap();
        let Err(Error::Invalid(long)) = key.expose_secret().parse::<KeyId>() else {
            panic!("a key is not an id");
        };
        assert!(!long.contains(&key.expose_secret()[3..]), "{long}");
        assert!(long.contains("not a key id"), "{long}");
        // A mistyped id of full length is shown, unless it holds a
        // character no UUID has; part of a key is not.
        let typo = "0190a4a1-7c3e-7f00-8000-0000000000001x";
        let Err(Error::Invalid(shown)) = typo.parse::<KeyId>() else {
            panic!("not an id");
        };
        assert!(!shown.contains("0190a4a1"), "x is no hex digit: {shown}");
        let Err(Error::Invalid(shown)) = "0190a4a1-7c3e-7f00-8000-0000000000001".parse::<KeyId>()
        else {
            panic!("one digit too many");
        };
        assert!(
            shown.contains("`0190a4a1-7c3e-7f00-8000-0000000000001`"),
            "{shown}"
        );
        let part = &key.expose_secret()[..20];
        let Err(Error::Invalid(shown)) = part.parse::<KeyId>() else {
            panic!("part of a key is not an id");
        };
        assert!(!shown.contains(part), "{shown}");
    }

    /// Known answers, so that the format cannot drift from what secret
    /// scanners and other implementations were told: the check is CRC32
    /// over `<prefix>_<secret>` (separator included), six big-endian base62
    /// digits over `0-9A-Za-z` (values from Python's `zlib.crc32`); the hash
    /// is BLAKE3 of the whole key text, or BLAKE3 keyed with
    /// `derive_key("scopekey 2026 key hash pepper", pepper)`.
    #[test]
    fn known_answers() {
        let sk = KeyFormat::default();
        let key = "sk_0123456789ABCDEFGHIJKLMNOPQRSTUV1cwdir";
        assert_eq!(sk.parse(key), Ok(()));
        assert!(
            sk.parse("sk_0123456789ABCDEFGHIJKLMNOPQRSTUV1cwdis")
                .is_err()
        );
        let acme = KeyFormat::new("acme_live").unwrap();
        assert_eq!(
            acme.parse("acme_live_abcdefghijklmnopqrstuvwxyz0123453tqBbe"),
            Ok(())
        );
        assert_eq!(
            hex(sk.hash(key)),
            hex(KeyHash(*blake3::hash(key.as_bytes()).as_bytes()))
        );
        assert_eq!(
            hex(sk.hash(key)),
            "b698e9ae81c47df31fe2dab859acea83ecee97fde34a5d80f26b3f87e7b83f24"
        );
        assert_eq!(
            hex(sk.clone().with_pepper(b"pepper").hash(key)),
            "808889852504d776f20a8e6ed71745aa8696d3cf7e9513aac5cd0468360564d0"
        );
        // At least 32 base62 characters of secret: more than 190 bits.
        assert_eq!(SECRET_LEN, 32);
        assert!(32.0 * 62f64.log2() > 190.0);
        let generated = sk.generate().unwrap();
        assert_eq!(generated.expose_secret().len(), "sk_".len() + 32 + 6);
    }

    /// A plaintext is wiped when dropped, and can be wiped sooner.
    #[test]
    fn plaintexts_are_wiped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Plaintext>();
        let mut key = KeyFormat::default().generate().unwrap();
        assert!(!key.expose_secret().is_empty());
        key.zeroize();
        assert_eq!(key.expose_secret(), "");
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let f = KeyFormat::new("acme_live").unwrap();
        let a = f.generate().unwrap();
        let b = f.generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose_secret().starts_with("acme_live_"));
        assert_eq!(
            a.expose_secret().len(),
            "acme_live_".len() + SECRET_LEN + CHECK_LEN
        );
        assert_eq!(f.parse(a.expose_secret()), Ok(()));
        assert_eq!(
            KeyFormat::default().parse(a.expose_secret()),
            Err(Malformed::Shape)
        );
    }

    #[test]
    fn debug_and_display_never_print_the_secret() {
        let k = KeyFormat::default().generate().unwrap();
        let secret = &k.expose_secret()[3..];
        for shown in [format!("{k:?}"), format!("{k}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(&k.hint()));
        }
        assert!(k.hint().starts_with("sk_…") && k.hint().chars().count() == 8);
    }

    #[test]
    fn prefixes() {
        for ok in ["sk", "acme_live", "a1_b2_3"] {
            assert!(KeyFormat::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Sk", "1sk", "sk_", "_sk", "s-k", "sk__x"] {
            assert!(KeyFormat::new(bad).is_err(), "{bad}");
        }
        // The longest prefix still makes keys that verify; one more byte
        // would make keys none could.
        let longest = KeyFormat::new(&"a".repeat(MAX_PREFIX_LEN)).expect("the longest prefix");
        let key = longest.generate().unwrap();
        assert_eq!(key.expose_secret().len(), MAX_KEY_LEN);
        assert_eq!(longest.parse(key.expose_secret()), Ok(()));
        let err = KeyFormat::new(&"a".repeat(MAX_PREFIX_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("at most 217"), "{err}");
    }

    #[test]
    fn keys_in_text_are_found() {
        let key = KeyFormat::default().generate().unwrap();
        let key = key.expose_secret();
        let other = KeyFormat::new("acme_live").unwrap().generate().unwrap();
        for text in [
            key.to_owned(),
            format!("leaked: {key}."),
            format!("\"{key}\", see ticket 12"),
            format!("in the wild as x_{key}"),
            format!("a-{}-b", other.expose_secret()),
            format!("{key}_old"),
            format!("Bearer%20{key}"),
            format!("token%3D{key}&x=1"),
            format!("Foo{key}"),
            format!("{key}xyz"),
        ] {
            assert!(holds_a_key(&text), "{text}");
        }
        // A key whose last letter is the prefix of another glued after it:
        // ranges never overlap, and redacting them does not panic.
        let first = std::iter::repeat_with(|| KeyFormat::default().generate().unwrap())
            .find(|k| {
                k.expose_secret()
                    .ends_with(|c: char| c.is_ascii_lowercase())
            })
            .unwrap();
        let first = first.expose_secret();
        let second = KeyFormat::new(&first[first.len() - 1..])
            .unwrap()
            .generate()
            .unwrap();
        let glued = format!("{first}{}", &second.expose_secret()[1..]);
        let found = keys_in(&glued);
        assert!(
            found.windows(2).all(|w| w[0].end <= w[1].start),
            "{found:?}"
        );
        assert!(!redact_keys(&glued).contains(&first[3..20]));
        let text = format!("leaked: {key}, and {key}.");
        let redacted = redact_keys(&text);
        let shown = hint(key);
        assert_eq!(redacted, format!("leaked: {shown}, and {shown}."));
        assert_eq!(redact_keys("nothing here"), "nothing here");
        // A mistyped key is no key: its check digits do not match.
        let mut typo = key.to_owned();
        typo.replace_range(5..6, if &typo[5..6] == "A" { "B" } else { "A" });
        for text in [
            typo.as_str(),
            "rotated after the audit, see 0190c8f2-0000-7000-8000-000000000000",
            "sk_short",
            "",
        ] {
            assert!(!holds_a_key(text), "{text}");
        }
    }

    #[test]
    fn malformed_keys() {
        let f = KeyFormat::default();
        assert_eq!(f.parse(""), Err(Malformed::Shape));
        assert_eq!(f.parse("sk_short"), Err(Malformed::Shape));
        assert_eq!(
            f.parse(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(Malformed::TooLong)
        );
        let k = f.generate().unwrap();
        let mut s = k.expose_secret().to_owned();
        s.insert(5, '-');
        assert_eq!(f.parse(&s), Err(Malformed::Shape));
    }

    #[test]
    fn pepper_changes_the_hash() {
        let k = KeyFormat::default().generate().unwrap();
        let plain = KeyFormat::default().hash(k.expose_secret());
        let peppered = KeyFormat::default()
            .with_pepper(b"pepper")
            .hash(k.expose_secret());
        assert_ne!(plain, peppered);
        assert_eq!(plain, KeyFormat::default().hash(k.expose_secret()));
    }

    proptest! {
        #[test]
        fn a_single_changed_character_is_caught(pos in 0usize..44, replacement in 0usize..62) {
            let f = KeyFormat::default();
            let key = f.generate().unwrap();
            let original = key.expose_secret();
            let pos = 3 + pos % (original.len() - 3);
            let mut bytes = original.as_bytes().to_vec();
            let new = BASE62[replacement];
            prop_assume!(bytes[pos] != new);
            bytes[pos] = new;
            let changed = String::from_utf8(bytes).unwrap();
            // CRC32 detects every single-character substitution.
            prop_assert_eq!(f.parse(&changed), Err(Malformed::Checksum));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = KeyFormat::new("acme_live").unwrap().parse(&s);
        }
    }
}
