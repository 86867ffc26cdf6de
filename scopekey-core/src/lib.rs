//! Scope grammar and matching for scopekey.
//!
//! This crate has no dependencies and no I/O: the `#[requires_scope]` macro
//! validates scope strings at compile time with the very parser the runtime
//! uses to validate the scopes of a key.
//!
//! ```
//! use scopekey_core::{Grant, Grants, Requirement, Scope};
//!
//! let needed: Requirement = "any(orders:admin, all(orders:write, orders:read))".parse()?;
//! let held = Grants::parse_all(["orders:*"])?;
//! assert!(held.satisfies(&needed));
//!
//! // Resources are not prefixes of each other.
//! let refunds = Scope::parse("orders.refunds:write")?;
//! assert!(!Grant::parse("orders:*")?.covers(&refunds));
//! # Ok::<(), scopekey_core::ScopeError>(())
//! ```
//!
//! Grammar (`resource:action`): `resource` and `action` each match
//! `[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*`; exactly one `:`; at most
//! [`MAX_SCOPE_LEN`] bytes. A [`Grant`] (what a key holds) may also be
//! `resource:*` or the super-scope `*`; a [`Scope`] (what a handler requires)
//! never has a wildcard.

use std::fmt;
use std::str::FromStr;

mod requirement;

pub use requirement::{MAX_REQUIREMENT_DEPTH, Requirement, StaticRequirement};

/// The longest scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;

/// Why a scope, grant or requirement failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError {
    input: String,
    position: usize,
    kind: ScopeErrorKind,
    /// Where the scope at fault lies in `input` (all of it, unless the
    /// input is a requirement expression).
    scope: std::ops::Range<usize>,
}

/// The kinds of [`ScopeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeErrorKind {
    /// The string is empty.
    Empty,
    /// The string is longer than [`MAX_SCOPE_LEN`] bytes.
    TooLong,
    /// There is no `:` between resource and action.
    MissingColon,
    /// There is more than one `:`.
    ExtraColon,
    /// The resource (before `:`) is empty.
    EmptyResource,
    /// The action (after `:`) is empty.
    EmptyAction,
    /// An upper-case letter.
    UpperCase,
    /// A whitespace character.
    Whitespace,
    /// A dot-separated segment is empty (`a..b`, `.a`, `a.`).
    EmptySegment,
    /// A segment starts with a digit or `_` instead of a letter.
    SegmentStart,
    /// A character outside `a-z`, `0-9`, `_`, `.`.
    InvalidCharacter,
    /// A wildcard where none is allowed (in a required scope), or in the
    /// wrong place (`*:read`, `orders:wr*`).
    Wildcard,
    /// A malformed requirement expression (`any(...)`, `all(...)`).
    Expression,
    /// `any(...)` and `all(...)` nested more than
    /// [`MAX_REQUIREMENT_DEPTH`] deep.
    TooDeep,
}

impl ScopeError {
    fn new(input: &str, position: usize, kind: ScopeErrorKind) -> Self {
        Self {
            input: input.to_owned(),
            position,
            kind,
            scope: 0..input.len(),
        }
    }

    /// The scope at fault, as written.
    fn scope_text(&self) -> &str {
        self.input.get(self.scope.clone()).unwrap_or(&self.input)
    }

    /// What went wrong.
    pub fn kind(&self) -> ScopeErrorKind {
        self.kind
    }

    /// The byte offset in the input where the problem was found.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The input that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// A one-line explanation without the input, e.g. "upper-case letter `O`
    /// at byte 0; scopes are lower case".
    pub fn reason(&self) -> String {
        let at = self.position;
        let ch = self
            .input
            .get(at..)
            .and_then(|rest| rest.chars().next())
            .map(shown_char)
            .unwrap_or_default();
        match self.kind {
            ScopeErrorKind::Empty => "a scope cannot be empty; write `resource:action`".into(),
            ScopeErrorKind::TooLong => format!(
                "a scope is at most {MAX_SCOPE_LEN} bytes; this one has {}",
                self.scope_text().len()
            ),
            ScopeErrorKind::MissingColon => {
                "missing `:`; a scope is `resource:action`, e.g. `orders:read`".into()
            }
            ScopeErrorKind::ExtraColon => {
                format!("extra `:` at byte {at}; a scope has exactly one `:`")
            }
            ScopeErrorKind::EmptyResource => {
                "the resource before `:` is empty; write `resource:action`".into()
            }
            ScopeErrorKind::EmptyAction => {
                "the action after `:` is empty; write `resource:action`".into()
            }
            ScopeErrorKind::UpperCase => {
                format!("upper-case letter {ch} at byte {at}; scopes are lower case")
            }
            ScopeErrorKind::Whitespace => {
                format!("whitespace at byte {at}; scopes contain no spaces")
            }
            ScopeErrorKind::EmptySegment => format!(
                "empty name at byte {at}; dots separate non-empty names, as in `billing.invoices:read`"
            ),
            ScopeErrorKind::SegmentStart => {
                format!("{ch} at byte {at} starts a name; names start with a letter `a`-`z`")
            }
            ScopeErrorKind::InvalidCharacter => format!(
                "character {ch} at byte {at} is not allowed; use `a`-`z`, `0`-`9`, `_` and `.`"
            ),
            ScopeErrorKind::Wildcard => {
                // A wildcard where a granted scope may have one (the whole
                // action, or the whole scope): refused because the scope is
                // required. Anywhere else it is misplaced for both.
                let scope = self.scope_text();
                let whole_action = scope
                    .strip_suffix(":*")
                    .is_some_and(|resource| !resource.contains('*'))
                    && at + 1 == self.scope.end;
                if scope == "*" {
                    "a required scope cannot be a wildcard (`*` is the super-scope a key may \
                     hold; no handler requires it); name the exact scope, e.g. `orders:read`"
                        .into()
                } else if whole_action {
                    "a required scope cannot be a wildcard; name the exact scope, e.g. `orders:read`"
                        .into()
                } else {
                    format!(
                        "wildcard at byte {at}; a key's scope may be `resource:*` or `*` alone, \
                         and a required scope has none"
                    )
                }
            }
            ScopeErrorKind::Expression => format!("malformed requirement at byte {at}"),
            ScopeErrorKind::TooDeep => format!(
                "`any(...)` and `all(...)` nested more than {MAX_REQUIREMENT_DEPTH} deep \
                 (at byte {at})"
            ),
        }
    }
}

/// A character as a message shows it: an ASCII one as it is (`-`); any other
/// as it is when it prints, escaped when it does not (a control, a
/// zero-width or bidirectional formatting character), and with its code
/// point (`é` (U+00E9)), which tells apart look-alikes such as a Cyrillic
/// `о` and a Latin `o`.
fn shown_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("`{c}`")
    } else {
        format!("`{}` (U+{:04X})", c.escape_debug(), u32::from(c))
    }
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid scope `{}`: {}", self.input, self.reason())
    }
}

impl std::error::Error for ScopeError {}

/// Checks one dot-separated name (`orders`, `billing.invoices`) starting at
/// byte `offset` of `full`.
fn check_name(full: &str, name: &str, offset: usize) -> Result<(), ScopeError> {
    let err = |pos: usize, kind| Err(ScopeError::new(full, offset + pos, kind));
    let mut segment_start = true;
    for (i, c) in name.char_indices() {
        match c {
            'a'..='z' => segment_start = false,
            '0'..='9' | '_' if !segment_start => {}
            '0'..='9' | '_' => return err(i, ScopeErrorKind::SegmentStart),
            '.' if segment_start => return err(i, ScopeErrorKind::EmptySegment),
            '.' => segment_start = true,
            'A'..='Z' => return err(i, ScopeErrorKind::UpperCase),
            '*' => return err(i, ScopeErrorKind::Wildcard),
            c if c.is_whitespace() => return err(i, ScopeErrorKind::Whitespace),
            _ => return err(i, ScopeErrorKind::InvalidCharacter),
        }
    }
    if segment_start {
        // Only reachable for a trailing dot: empty names are rejected earlier.
        return err(name.len(), ScopeErrorKind::EmptySegment);
    }
    Ok(())
}

/// Splits and checks `resource:action`; `wildcard_action` allows `resource:*`.
/// Returns the colon's byte offset.
fn check_scope(s: &str, wildcard_action: bool) -> Result<usize, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::new(s, 0, ScopeErrorKind::Empty));
    }
    if s.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::new(s, MAX_SCOPE_LEN, ScopeErrorKind::TooLong));
    }
    if let Some(i) = s.find(char::is_whitespace) {
        return Err(ScopeError::new(s, i, ScopeErrorKind::Whitespace));
    }
    let Some(colon) = s.find(':') else {
        return Err(ScopeError::new(s, 0, ScopeErrorKind::MissingColon));
    };
    if let Some(extra) = s[colon + 1..].find(':') {
        return Err(ScopeError::new(
            s,
            colon + 1 + extra,
            ScopeErrorKind::ExtraColon,
        ));
    }
    let (resource, action) = (&s[..colon], &s[colon + 1..]);
    if resource.is_empty() {
        return Err(ScopeError::new(s, 0, ScopeErrorKind::EmptyResource));
    }
    check_name(s, resource, 0)?;
    if action.is_empty() {
        return Err(ScopeError::new(s, colon + 1, ScopeErrorKind::EmptyAction));
    }
    if wildcard_action && action == "*" {
        return Ok(colon);
    }
    check_name(s, action, colon + 1)?;
    Ok(colon)
}

/// A required scope: `resource:action`, never a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    text: Box<str>,
    colon: usize,
}

impl Scope {
    /// Parses and validates a required scope.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        if s == "*" {
            return Err(ScopeError::new(s, 0, ScopeErrorKind::Wildcard));
        }
        let colon = check_scope(s, false)?;
        Ok(Self {
            text: s.into(),
            colon,
        })
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before `:`.
    pub fn resource(&self) -> &str {
        &self.text[..self.colon]
    }

    /// The part after `:`.
    pub fn action(&self) -> &str {
        &self.text[self.colon + 1..]
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A granted scope, as held by a key: an exact scope, `resource:*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grant {
    /// `*`: every scope.
    All,
    /// `resource:*`: every action on exactly this resource.
    Resource(Box<str>),
    /// One exact scope.
    Exact(Scope),
}

impl Grant {
    /// Parses and validates a granted scope.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        if s == "*" {
            return Ok(Self::All);
        }
        let colon = check_scope(s, true)?;
        if &s[colon + 1..] == "*" {
            Ok(Self::Resource(s[..colon].into()))
        } else {
            Ok(Self::Exact(Scope {
                text: s.into(),
                colon,
            }))
        }
    }

    /// Whether this grant covers the required scope.
    pub fn covers(&self, scope: &Scope) -> bool {
        self.covers_str(scope.as_str())
    }

    /// Whether this grant covers a required scope given as text. The text is
    /// expected to be a valid [`Scope`]; anything else is never covered
    /// except by `*`.
    pub fn covers_str(&self, scope: &str) -> bool {
        match self {
            Self::All => true,
            Self::Resource(resource) => scope
                .strip_prefix(&**resource)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|action| {
                    !action.is_empty()
                        && scope.len() <= MAX_SCOPE_LEN
                        && check_name(scope, action, 0).is_ok()
                }),
            Self::Exact(exact) => exact.as_str() == scope,
        }
    }

    /// Whether this grant includes everything `other` grants (used to stop a
    /// key from handing out more than it holds).
    pub fn includes(&self, other: &Grant) -> bool {
        match (self, other) {
            (Self::All, _) => true,
            (_, Self::All) => false,
            (Self::Resource(a), Self::Resource(b)) => a == b,
            (Self::Exact(_), Self::Resource(_)) => false,
            (_, Self::Exact(scope)) => self.covers(scope),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Resource(r) => write!(f, "{r}:*"),
            Self::Exact(s) => f.write_str(s.as_str()),
        }
    }
}

impl FromStr for Grant {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The set of scopes a key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<Grant>);

impl Grants {
    /// Wraps already-parsed grants.
    pub fn new(grants: Vec<Grant>) -> Self {
        Self(grants)
    }

    /// Parses every string as a grant; the first invalid one is the error.
    pub fn parse_all<I, S>(items: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        items
            .into_iter()
            .map(|s| Grant::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The grants, in the order given.
    pub fn as_slice(&self) -> &[Grant] {
        &self.0
    }

    /// Whether any grant covers the scope.
    pub fn covers(&self, scope: &Scope) -> bool {
        self.covers_str(scope.as_str())
    }

    /// Whether any grant covers the scope given as text.
    pub fn covers_str(&self, scope: &str) -> bool {
        self.0.iter().any(|g| g.covers_str(scope))
    }

    /// Whether these grants together include `grant`.
    pub fn includes(&self, grant: &Grant) -> bool {
        self.0.iter().any(|g| g.includes(grant))
    }

    /// Whether these grants include every one of `others`.
    pub fn includes_all(&self, others: &Grants) -> bool {
        others.0.iter().all(|g| self.includes(g))
    }

    /// Whether these grants satisfy a requirement.
    pub fn satisfies(&self, requirement: &Requirement) -> bool {
        requirement.is_satisfied_by(self)
    }

    /// Whether these grants satisfy a requirement declared as static data
    /// (what `#[requires_scope]` emits).
    pub fn satisfies_static(&self, requirement: &StaticRequirement) -> bool {
        requirement.is_satisfied_by(self)
    }
}

impl From<Vec<Grant>> for Grants {
    fn from(v: Vec<Grant>) -> Self {
        Self(v)
    }
}

/// Whether `key` looks like a misspelt `name` without being it: the same but
/// for case, `-` and `_` (`scope-key`, `ScopeKey` for `scopekey`), or one
/// edit from it (`scopekeys`, `scopkey`, `scopeky`). How the macro and the
/// CLI find a catalogue table written under another name; one edit, not
/// two, so that another tool's table (`scopekit`, `shopkey`) is left alone.
pub fn near_miss(key: &str, name: &str) -> bool {
    let normal: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect();
    key != name && edit_distance(&normal, name) <= 1
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of adjacent characters each cost one. Behind the "did you
/// mean" suggestions of the macro and the CLI.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the dynamic-programming table: i-2, i-1, i.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("wirte", "write"), 1);
        assert_eq!(edit_distance("scpoes", "scopes"), 1);
        assert_eq!(edit_distance("ca", "abc"), 3);
    }

    #[test]
    fn accepts_the_grammar() {
        for s in [
            "orders:read",
            "billing.invoices:read",
            "a1_b:c_2",
            "a.b.c:d.e",
        ] {
            assert_eq!(Scope::parse(s).unwrap().as_str(), s);
        }
        let s = Scope::parse("billing.invoices:read").unwrap();
        assert_eq!(s.resource(), "billing.invoices");
        assert_eq!(s.action(), "read");
    }

    #[test]
    fn rejects_with_a_reason_and_position() {
        use ScopeErrorKind::*;
        let cases: &[(&str, ScopeErrorKind, usize)] = &[
            ("", Empty, 0),
            ("orders", MissingColon, 0),
            ("orders:read:all", ExtraColon, 11),
            (":read", EmptyResource, 0),
            ("orders:", EmptyAction, 7),
            ("Orders:read", UpperCase, 0),
            ("orders:rEad", UpperCase, 8),
            ("orders :read", Whitespace, 6),
            ("orders..x:read", EmptySegment, 7),
            ("orders.:read", EmptySegment, 7),
            (".orders:read", EmptySegment, 0),
            ("1orders:read", SegmentStart, 0),
            ("orders:_read", SegmentStart, 7),
            ("orders:re-ad", InvalidCharacter, 9),
            ("orders:*", Wildcard, 7),
            ("*", Wildcard, 0),
            ("*:read", Wildcard, 0),
        ];
        for &(input, kind, pos) in cases {
            let err = Scope::parse(input).unwrap_err();
            assert_eq!((err.kind(), err.position()), (kind, pos), "{input}");
            assert!(err.to_string().contains(&format!("`{input}`")));
        }
        let long = format!("a:{}", "b".repeat(MAX_SCOPE_LEN - 1));
        assert_eq!(Scope::parse(&long).unwrap_err().kind(), TooLong);
        assert!(Scope::parse(&long[..MAX_SCOPE_LEN]).is_ok());
    }

    /// A character outside ASCII is shown as it is, with its code point
    /// (not as `\u{e9}`); one that does not print is escaped.
    #[test]
    fn shows_characters_with_their_code_point() {
        let reason = |s: &str| Scope::parse(s).unwrap_err().reason();
        assert_eq!(
            reason("orders:café"),
            "character `é` (U+00E9) at byte 10 is not allowed; use `a`-`z`, `0`-`9`, `_` and `.`"
        );
        // A Cyrillic `о`, which reads as a Latin `o`.
        assert!(reason("\u{43e}rders:read").starts_with("character `\u{43e}` (U+043E) at byte 0"));
        assert!(
            reason("orders:re\u{202e}ad").starts_with("character `\\u{202e}` (U+202E) at byte 9")
        );
        assert!(
            reason("orders:\u{1f600}").starts_with("character `\u{1f600}` (U+1F600) at byte 7")
        );
        assert!(reason("orders:re\u{7}ad").starts_with("character `\\u{7}` (U+0007) at byte 9"));
        // ASCII as it is.
        assert!(reason("orders:re-ad").starts_with("character `-` at byte 9"));
        assert!(reason("orders:_read").starts_with("`_` at byte 7 starts a name"));
    }

    #[test]
    fn grants_and_wildcards() {
        let all = Grant::parse("*").unwrap();
        let orders = Grant::parse("orders:*").unwrap();
        let read = Grant::parse("orders:read").unwrap();
        let s = |x| Scope::parse(x).unwrap();
        assert!(all.covers(&s("x.y:z")));
        assert!(orders.covers(&s("orders:delete")));
        assert!(!orders.covers(&s("orders.refunds:write")));
        assert!(!orders.covers(&s("ordersx:read")));
        assert!(read.covers(&s("orders:read")));
        assert!(!read.covers(&s("orders:write")));
        assert_eq!(
            Grant::parse("orders:w*").unwrap_err().kind(),
            ScopeErrorKind::Wildcard
        );
        assert_eq!(
            Grant::parse("*:*").unwrap_err().kind(),
            ScopeErrorKind::Wildcard
        );
        assert!(all.includes(&orders) && orders.includes(&read) && !read.includes(&orders));
        assert!(!orders.includes(&all));
        assert!(!orders.includes(&Grant::parse("orders.refunds:*").unwrap()));
        assert_eq!(orders.to_string(), "orders:*");
        // Text that is no scope is never covered, but by `*`.
        for text in [
            "orders:READ",
            "orders:a:b",
            "orders:x y",
            "orders:",
            "orders:*",
        ] {
            assert!(!orders.covers_str(text), "{text}");
        }
        assert!(orders.covers_str("orders:read.all"));
        assert!(!orders.covers_str(&format!("orders:{}", "a".repeat(MAX_SCOPE_LEN))));
    }

    /// The message says what is wrong for what was parsed: a wildcard a key
    /// may hold but a handler may not require, or one in the wrong place;
    /// the length of the scope, not of the expression around it.
    #[test]
    fn messages_fit_the_mistake() {
        let required = "a required scope cannot be a wildcard";
        let misplaced = "a key's scope may be `resource:*` or `*` alone";
        for (input, says) in [
            (Scope::parse("orders:*"), required),
            (Scope::parse("*"), required),
            (Scope::parse("*:read"), misplaced),
            (Scope::parse("orders:w*"), misplaced),
        ] {
            let message = input.unwrap_err().to_string();
            assert!(message.contains(says), "{message}");
        }
        for grant in ["*:*", "orders.*:*", "orders:w*"] {
            let message = Grant::parse(grant).unwrap_err().to_string();
            assert!(message.contains(misplaced), "{grant}: {message}");
        }
        let message = "any(orders:*, a:b)"
            .parse::<Requirement>()
            .unwrap_err()
            .to_string();
        assert!(message.contains(required), "{message}");
        let long = format!("any(a:b, a:{})", "b".repeat(127));
        let message = long.parse::<Requirement>().unwrap_err().to_string();
        assert!(message.contains("this one has 129"), "{message}");
    }
}
