//! Requirements: a scope, or `any(...)` / `all(...)` of requirements.

use std::fmt;
use std::str::FromStr;

use crate::{Grants, Scope, ScopeError, ScopeErrorKind};

/// What a handler needs: one scope, or any/all of nested requirements.
///
/// Text form (what [`fmt::Display`] prints and [`FromStr`] reads):
/// `orders:read`, `any(orders:admin, all(orders:write, orders:read))`;
/// scopes may also be written in double quotes, as in the macro.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// Exactly this scope.
    Scope(Scope),
    /// At least one of these.
    Any(Vec<Requirement>),
    /// Every one of these.
    All(Vec<Requirement>),
}

impl Requirement {
    /// Whether the grants satisfy this requirement.
    pub fn is_satisfied_by(&self, grants: &Grants) -> bool {
        match self {
            Self::Scope(s) => grants.covers(s),
            Self::Any(items) => items.iter().any(|r| r.is_satisfied_by(grants)),
            Self::All(items) => items.iter().all(|r| r.is_satisfied_by(grants)),
        }
    }

    /// Every scope named in the requirement, in order of appearance.
    pub fn scopes(&self) -> Vec<&Scope> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Scope>) {
        match self {
            Self::Scope(s) => out.push(s),
            Self::Any(items) | Self::All(items) => items.iter().for_each(|r| r.collect(out)),
        }
    }
}

impl From<Scope> for Requirement {
    fn from(s: Scope) -> Self {
        Self::Scope(s)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scope(s) => f.write_str(s.as_str()),
            Self::Any(items) => write_call(f, "any", items),
            Self::All(items) => write_call(f, "all", items),
        }
    }
}

fn write_call<T: fmt::Display>(f: &mut fmt::Formatter<'_>, name: &str, items: &[T]) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(")")
}

/// How deep `any(...)` and `all(...)` may nest: `any(all(\"a:b\"))` is 2
/// deep. Deeper text is refused ([`ScopeErrorKind::TooDeep`]) rather than
/// parsed by ever deeper recursion, so no input can exhaust the stack; the
/// `#[requires_scope]` macro holds requirements to the same bound.
pub const MAX_REQUIREMENT_DEPTH: usize = 32;

impl FromStr for Requirement {
    type Err = ScopeError;

    /// Parses a requirement expression: a scope (quoted or not), or
    /// `any(...)` / `all(...)` of requirements, at most
    /// [`MAX_REQUIREMENT_DEPTH`] deep.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = ExprParser {
            input: s,
            pos: 0,
            depth: 0,
        };
        let req = p.requirement()?;
        p.skip_ws();
        if p.pos != s.len() {
            return Err(p.error());
        }
        Ok(req)
    }
}

struct ExprParser<'a> {
    input: &'a str,
    pos: usize,
    /// How many `any(` / `all(` enclose the current position.
    depth: usize,
}

impl ExprParser<'_> {
    fn error(&self) -> ScopeError {
        ScopeError::new(self.input, self.pos, ScopeErrorKind::Expression)
    }

    fn skip_ws(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.input[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn requirement(&mut self) -> Result<Requirement, ScopeError> {
        self.skip_ws();
        let rest = &self.input[self.pos..];
        for (name, any) in [("any", true), ("all", false)] {
            if let Some(after) = rest.strip_prefix(name)
                && after.trim_start().starts_with('(')
            {
                if self.depth == MAX_REQUIREMENT_DEPTH {
                    return Err(ScopeError::new(
                        self.input,
                        self.pos,
                        ScopeErrorKind::TooDeep,
                    ));
                }
                self.depth += 1;
                self.pos += name.len();
                self.eat('(');
                let mut items = Vec::new();
                if !self.eat(')') {
                    loop {
                        items.push(self.requirement()?);
                        if self.eat(')') {
                            break;
                        }
                        if !self.eat(',') {
                            return Err(self.error());
                        }
                        if self.eat(')') {
                            break; // trailing comma
                        }
                    }
                }
                if items.is_empty() {
                    return Err(self.error());
                }
                self.depth -= 1;
                return Ok(if any {
                    Requirement::Any(items)
                } else {
                    Requirement::All(items)
                });
            }
        }
        let start = self.pos;
        let (text, end) = if let Some(quoted) = rest.strip_prefix('"') {
            let close = quoted.find('"').ok_or_else(|| self.error())?;
            (&quoted[..close], start + close + 2)
        } else {
            let len = rest
                .find(|c: char| c == ',' || c == ')' || c == '(' || c.is_whitespace())
                .unwrap_or(rest.len());
            (&rest[..len], start + len)
        };
        let scope = Scope::parse(text).map_err(|mut e| {
            let offset = start + usize::from(rest.starts_with('"'));
            e.input = self.input.to_owned();
            e.position += offset;
            e.scope = offset..offset + text.len();
            e
        })?;
        self.pos = end;
        Ok(Requirement::Scope(scope))
    }
}

/// A requirement as static data: what `#[requires_scope]` emits after checking
/// every scope at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticRequirement {
    /// Exactly this scope (already validated).
    Scope(&'static str),
    /// At least one of these.
    Any(&'static [StaticRequirement]),
    /// Every one of these.
    All(&'static [StaticRequirement]),
}

impl StaticRequirement {
    /// Whether the grants satisfy this requirement.
    pub fn is_satisfied_by(&self, grants: &Grants) -> bool {
        match self {
            Self::Scope(s) => grants.covers_str(s),
            Self::Any(items) => items.iter().any(|r| r.is_satisfied_by(grants)),
            Self::All(items) => items.iter().all(|r| r.is_satisfied_by(grants)),
        }
    }

    /// Every scope named, in order of appearance, without repeats: the value
    /// of the `scope` attribute in an `insufficient_scope` challenge.
    pub fn scopes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<&'static str>) {
        match *self {
            Self::Scope(s) => {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Self::Any(items) | Self::All(items) => items.iter().for_each(|r| r.collect(out)),
        }
    }

    /// Converts to an owned [`Requirement`], validating every scope.
    pub fn to_requirement(&self) -> Result<Requirement, ScopeError> {
        Ok(match self {
            Self::Scope(s) => Requirement::Scope(Scope::parse(s)?),
            Self::Any(items) => Requirement::Any(
                items
                    .iter()
                    .map(Self::to_requirement)
                    .collect::<Result<_, _>>()?,
            ),
            Self::All(items) => Requirement::All(
                items
                    .iter()
                    .map(Self::to_requirement)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl fmt::Display for StaticRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scope(s) => f.write_str(s),
            Self::Any(items) => write_call(f, "any", items),
            Self::All(items) => write_call(f, "all", items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grants;

    #[test]
    fn parses_and_prints_expressions() {
        let r: Requirement = "any(orders:admin, all(\"orders:write\", orders:read))"
            .parse()
            .unwrap();
        assert_eq!(
            r.to_string(),
            "any(orders:admin, all(orders:write, orders:read))"
        );
        assert_eq!(r.scopes().len(), 3);
        assert!("any()".parse::<Requirement>().is_err());
        assert!("any(a:b".parse::<Requirement>().is_err());
        assert!("a:b c:d".parse::<Requirement>().is_err());
        let err = "all(a:b, Orders:x)".parse::<Requirement>().unwrap_err();
        assert_eq!(err.kind(), ScopeErrorKind::UpperCase);
        assert_eq!(err.position(), 9);
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| format!("{}a:b{}", "any(".repeat(depth), ")".repeat(depth));
        let deepest = nested(MAX_REQUIREMENT_DEPTH);
        let parsed: Requirement = deepest.parse().expect("the deepest allowed");
        assert_eq!(parsed.to_string(), deepest, "prints as parsed");
        // Siblings do not add up: depth is nesting, not count.
        let wide = format!("all({}, {})", nested(31), nested(31));
        assert!(wide.parse::<Requirement>().is_ok());
        let err = nested(MAX_REQUIREMENT_DEPTH + 1)
            .parse::<Requirement>()
            .unwrap_err();
        assert_eq!(err.kind(), ScopeErrorKind::TooDeep);
        assert_eq!(err.position(), 4 * MAX_REQUIREMENT_DEPTH);
        assert!(
            err.to_string().contains("nested more than 32 deep"),
            "{err}"
        );
        // Far deeper than any stack would take by recursion: an error, not
        // an abort.
        let err = nested(1_000_000).parse::<Requirement>().unwrap_err();
        assert_eq!(err.kind(), ScopeErrorKind::TooDeep);
    }

    #[test]
    fn any_and_all() {
        let r: Requirement = "any(orders:admin, all(orders:write, orders:read))"
            .parse()
            .unwrap();
        let g = |v: &[&str]| Grants::parse_all(v).unwrap();
        assert!(r.is_satisfied_by(&g(&["orders:admin"])));
        assert!(r.is_satisfied_by(&g(&["orders:write", "orders:read"])));
        assert!(!r.is_satisfied_by(&g(&["orders:write"])));
        assert!(r.is_satisfied_by(&g(&["orders:*"])));
        assert!(r.is_satisfied_by(&g(&["*"])));
        assert!(!r.is_satisfied_by(&g(&[])));

        static S: StaticRequirement = StaticRequirement::Any(&[
            StaticRequirement::Scope("orders:admin"),
            StaticRequirement::All(&[
                StaticRequirement::Scope("orders:write"),
                StaticRequirement::Scope("orders:admin"),
            ]),
        ]);
        assert!(S.is_satisfied_by(&g(&["orders:admin"])));
        assert!(!S.is_satisfied_by(&g(&["orders:write"])));
        assert_eq!(S.scopes(), vec!["orders:admin", "orders:write"]);
        assert_eq!(
            S.to_string(),
            "any(orders:admin, all(orders:write, orders:admin))"
        );
        assert!(S.to_requirement().is_ok());
    }
}
