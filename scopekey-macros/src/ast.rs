//! Tokens → a small typed model: the requirement expression (every scope
//! kept as its literal, for spans) and the handler (signature parsed, body
//! kept as tokens).

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use scopekey_core::MAX_REQUIREMENT_DEPTH;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Error, Ident, Lit, LitStr, Result, Signature, Token, Visibility, token};

/// A requirement as written in `#[requires_scope(...)]`.
pub(crate) enum Requirement {
    /// A scope string, e.g. `"orders:read"`.
    Scope(LitStr),
    /// `any(...)`: at least one of the items.
    Any(Call),
    /// `all(...)`: every one of the items.
    All(Call),
}

/// The body of `any(...)` or `all(...)`.
pub(crate) struct Call {
    /// `any` or `all`, for spans.
    pub keyword: Ident,
    /// The parentheses' span, for spans.
    pub paren: Span,
    /// The requirements inside; `valid` rejects an empty list. Left empty,
    /// unparsed, in a call nested deeper than [`MAX_REQUIREMENT_DEPTH`],
    /// which `valid` rejects for that.
    pub items: Vec<Requirement>,
}

impl Call {
    /// The call's tokens (`any(` … `)`), to span an error over all of it.
    pub fn tokens(&self) -> TokenStream {
        let mut group = Group::new(Delimiter::Parenthesis, TokenStream::new());
        group.set_span(self.paren);
        let keyword = &self.keyword;
        quote!(#keyword #group)
    }
}

const EXPECTED: &str = "expected `any(...)`, `all(...)` or a scope string such as \"orders:read\"";

/// Parses the attribute's arguments: exactly one requirement.
pub(crate) fn parse_args(args: TokenStream) -> Result<Requirement> {
    let args = bounded(args);
    let parser = |input: ParseStream| {
        if input.is_empty() {
            return Err(Error::new(
                Span::call_site(),
                "`#[requires_scope]` needs the scope the handler requires, \
                 e.g. `#[requires_scope(\"orders:read\")]`",
            ));
        }
        let requirement = Requirement::parse(input, 0)?;
        let comma: Option<Token![,]> = input.parse()?;
        if comma.is_some() && input.peek(Token![,]) {
            let stray: Token![,] = input.parse()?;
            return Err(Error::new_spanned(
                stray,
                "stray second `,` after the requirement; remove it",
            ));
        }
        if !input.is_empty() {
            let rest: TokenStream = input.parse()?;
            let message = if comma.is_some() {
                "`#[requires_scope]` takes one requirement; to require several scopes, \
                 write `all(\"a:read\", \"b:read\")` (every one) or `any(...)` (at least one)"
            } else {
                "unexpected tokens after the requirement; to combine scopes, write \
                 `any(\"a:read\", \"b:read\")` (at least one) or `all(...)` (every one)"
            };
            return Err(Error::new_spanned(rest, message));
        }
        Ok(requirement)
    };
    parser.parse2(args)
}

/// How deep groups may nest in the arguments: the parentheses of a call
/// nested [`MAX_REQUIREMENT_DEPTH`] deep (too deep already, which `valid`
/// reports over that call) are at this depth.
const MAX_GROUP_DEPTH: usize = MAX_REQUIREMENT_DEPTH + 1;

/// The arguments with the groups at [`MAX_GROUP_DEPTH`] emptied, when any
/// holds tokens (unchanged otherwise): the parser never reads them, and
/// syn copies tokens into its buffer recursively, a few hundred bytes of
/// stack per level, so thousands of levels would overflow the stack before
/// the parser could stop at the limit.
fn bounded(args: TokenStream) -> TokenStream {
    // Parentheses count, as the calls' depth does; other groups (the
    // invisible ones `macro_rules!` puts around a `$s:literal`) count too
    // but only past twice the limit, so a generated attribute at the limit
    // is read as written while no nesting of any kind goes unbounded.
    fn next(group: &Group, depth: usize, levels: usize) -> (usize, usize) {
        let depth = depth + usize::from(group.delimiter() == Delimiter::Parenthesis);
        (depth, levels + 1)
    }
    fn at_limit(depth: usize, levels: usize) -> bool {
        depth == MAX_GROUP_DEPTH || levels == 2 * MAX_GROUP_DEPTH
    }
    fn deeper(stream: TokenStream, depth: usize, levels: usize) -> bool {
        stream.into_iter().any(|token| match token {
            TokenTree::Group(group) => {
                let (depth, levels) = next(&group, depth, levels);
                if at_limit(depth, levels) {
                    !group.stream().is_empty()
                } else {
                    deeper(group.stream(), depth, levels)
                }
            }
            _ => false,
        })
    }
    fn cut(stream: TokenStream, depth: usize, levels: usize) -> TokenStream {
        stream
            .into_iter()
            .map(|token| match token {
                TokenTree::Group(group) => {
                    let (depth, levels) = next(&group, depth, levels);
                    let inner = if at_limit(depth, levels) {
                        TokenStream::new()
                    } else {
                        cut(group.stream(), depth, levels)
                    };
                    let mut cut = Group::new(group.delimiter(), inner);
                    cut.set_span(group.span());
                    TokenTree::Group(cut)
                }
                token => token,
            })
            .collect()
    }
    // Both recurse at most `2 * MAX_GROUP_DEPTH` deep.
    if deeper(args.clone(), 0, 0) {
        cut(args, 0, 0)
    } else {
        args
    }
}

impl Requirement {
    /// `depth`: how many `any(...)` / `all(...)` enclose it, so that
    /// parsing stops past [`MAX_REQUIREMENT_DEPTH`] instead of recursing as
    /// deep as the input goes (thousands of levels would overflow the
    /// stack before `valid` could refuse them).
    fn parse(input: ParseStream, depth: usize) -> Result<Self> {
        if input.peek(Token![,]) {
            // `any("a:b",, "c:d")`, `(, "a:b")`.
            let stray: Token![,] = input.parse()?;
            return Err(Error::new_spanned(
                stray,
                "stray `,` where a requirement should be; remove it",
            ));
        }
        if input.peek(Token![*]) {
            // The super-scope, unquoted (`*`, or `*:read`).
            return Err(unquoted(until_comma(TokenStream::new(), input)?));
        }
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            if !lit.suffix().is_empty() {
                // `"orders:read"x` lexes as one literal with a suffix; the
                // suffix would be silently dropped.
                return Err(Error::new_spanned(
                    &lit,
                    format!(
                        "unexpected suffix `{}` after the scope string; write {:?} alone",
                        lit.suffix(),
                        lit.value()
                    ),
                ));
            }
            return Ok(Self::Scope(lit));
        }
        if input.peek(Lit) {
            let lit: Lit = input.parse()?;
            let found = match &lit {
                Lit::Int(_) | Lit::Float(_) => "a number",
                Lit::Bool(_) => "a boolean",
                Lit::Char(_) => "a character literal; scopes take double quotes",
                Lit::ByteStr(_) => "a byte string; scopes are plain strings",
                Lit::Byte(_) => "a byte literal; scopes are plain strings",
                Lit::CStr(_) => "a C string; scopes are plain strings",
                _ => "a literal that is not a string",
            };
            return Err(Error::new_spanned(
                lit,
                format!("expected a scope string such as \"orders:read\", found {found}"),
            ));
        }
        if input.peek(Ident::peek_any) {
            return Self::parse_word(input, depth);
        }
        if input.peek(token::Bracket) {
            // `["orders:read", "orders:write"]`: a list, meant as "all of
            // them" or "one of them"; which is for the author to say.
            let list: Group = input.parse()?;
            return Err(Error::new(
                list.span(),
                "a list of scopes is written `all(\"a:b\", \"c:d\")` (every one needed) \
                 or `any(\"a:b\", \"c:d\")` (one of them is enough), not in brackets",
            ));
        }
        if input.peek(token::Paren) {
            // `(("orders:read"))`: parentheses around a requirement group
            // nothing; `any` and `all` say how scopes combine.
            let group: Group = input.parse()?;
            return Err(Error::new(
                group.span(),
                "parentheses around a requirement; write it bare, e.g. \
                 `#[requires_scope(\"orders:read\")]`, and combine scopes with `any(...)` \
                 or `all(...)`",
            ));
        }
        Err(input.error(EXPECTED))
    }

    /// `any(...)`, `all(...)`, or a mistake that starts with a word.
    fn parse_word(input: ParseStream, depth: usize) -> Result<Self> {
        let keyword = input.call(Ident::parse_any)?;
        let name = keyword.to_string();
        if input.peek(token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let mut items = Vec::new();
            if depth == MAX_REQUIREMENT_DEPTH {
                // Too deep already: `valid` says so, over this call.
                content.parse::<TokenStream>()?;
            }
            while !content.is_empty() {
                items.push(Requirement::parse(&content, depth + 1)?);
                if content.is_empty() {
                    break;
                }
                if !content.peek(Token![,]) {
                    return Err(content.error(format!(
                        "expected `,` between the requirements of `{name}(...)`, as in \
                         `{name}(\"orders:admin\", \"orders:read\")`"
                    )));
                }
                content.parse::<Token![,]>()?;
            }
            let call = Call {
                keyword,
                paren: paren.span.join(),
                items,
            };
            return match name.as_str() {
                "any" => Ok(Self::Any(call)),
                "all" => Ok(Self::All(call)),
                _ => Err(Error::new_spanned(
                    call.tokens(),
                    format!("unknown `{name}(...)`: {EXPECTED}"),
                )),
            };
        }
        // `scope = "orders:read"`: a named argument, which this attribute
        // does not take (checked before `any`/`all`, which may be the name).
        if input.peek(Token![=]) && !input.peek(Token![==]) && !input.peek(Token![=>]) {
            return Err(named_argument(keyword, input));
        }
        // `any:read` is an unquoted scope whose resource happens to be
        // `any`, not a misused `any(...)`.
        if (name == "any" || name == "all") && !input.peek(Token![:]) {
            return Err(Error::new_spanned(
                keyword,
                format!("`{name}` takes a list in parentheses: `{name}(\"a:read\", \"b:read\")`"),
            ));
        }
        // An unquoted scope (`orders:read`), a constant, a path, a macro.
        Err(unquoted(until_comma(keyword.to_token_stream(), input)?))
    }
}

/// `tokens` and the tokens after them up to the next top-level comma, to
/// show them.
fn until_comma(mut tokens: TokenStream, input: ParseStream) -> Result<TokenStream> {
    while !input.is_empty() && !input.peek(Token![,]) {
        tokens.extend([input.parse::<TokenTree>()?]);
    }
    Ok(tokens)
}

/// The error for an argument that is not a string nor `any`/`all`: an
/// unquoted scope (`orders:read`, `orders:*`, `*`), a constant, a path, a
/// macro; spanned over all of it.
fn unquoted(tokens: TokenStream) -> Error {
    let text = compact(&tokens);
    let single_colon = text.matches(':').count() == 1;
    // Not a constant, call or macro: meant as a scope.
    let plain = !text.contains(['!', '(', '{', '[']);
    let message = if plain && text.contains('*') {
        // Quoting it would only trade this error for the wildcard one.
        let example = match text.split_once(':') {
            Some((resource, _))
                if scopekey_core::Scope::parse(&format!("{resource}:read")).is_ok() =>
            {
                format!("{resource}:read")
            }
            _ => "orders:read".to_owned(),
        };
        // `*` alone is the super-scope: a key may hold it.
        let held = if text == "*" {
            " (a key may hold `*`; no handler requires it)"
        } else {
            ""
        };
        format!(
            "found `{text}`: a required scope never has a wildcard{held}; name the exact \
             scope, as a string, e.g. \"{example}\""
        )
    } else if plain && single_colon {
        // Quote it only when quoting is all it needs: otherwise the
        // quoted form would just fail again.
        match scopekey_core::Scope::parse(&text) {
            Ok(_) => format!("scopes are strings: write \"{text}\""),
            Err(err) => format!(
                "found `{text}`: scopes are written as strings such as \"orders:read\", \
                 and this is not a valid scope either: {}",
                err.reason()
            ),
        }
    } else {
        format!(
            "{EXPECTED}, found `{text}`; scopes are written as string literals \
             so they can be checked at compile time"
        )
    };
    Error::new_spanned(tokens, message)
}

/// The error for `name = value`, spanned over all of it; `input` is just
/// after `name`. The value is shown quoted only when it is a scope string
/// that the plain form would accept.
fn named_argument(name: Ident, input: ParseStream) -> Error {
    let mut tokens = name.to_token_stream();
    let value = input.fork();
    let _ = value.parse::<Token![=]>();
    let literal = value
        .parse::<LitStr>()
        .ok()
        .filter(|lit| lit.suffix().is_empty() && (value.is_empty() || value.peek(Token![,])));
    while !input.is_empty() && !input.peek(Token![,]) {
        match input.parse::<TokenTree>() {
            Ok(token) => tokens.extend([token]),
            Err(_) => break,
        }
    }
    const NO_NAMES: &str = "`#[requires_scope]` takes no named arguments";
    let message = match literal.map(|lit| lit.value()) {
        Some(scope) => match scopekey_core::Scope::parse(&scope) {
            Ok(_) => format!("{NO_NAMES}: write `#[requires_scope({scope:?})]`"),
            Err(err) => format!(
                "{NO_NAMES}, only the scope itself, e.g. `#[requires_scope(\"orders:read\")]`; \
                 and {scope:?} is not a valid scope either: {}",
                err.reason()
            ),
        },
        None => format!(
            "{NO_NAMES}, only the requirement itself: a scope string such as \
             `#[requires_scope(\"orders:read\")]`, or `any(...)` / `all(...)` of them"
        ),
    };
    Error::new_spanned(tokens, message)
}

/// The tokens as one would type them: no spaces, except between two words
/// (`re fund` stays apart, so it is not mistaken for `refund`).
fn compact(tokens: &TokenStream) -> String {
    let mut text = String::new();
    let mut after_word = false;
    for token in tokens.clone() {
        let word = matches!(token, TokenTree::Ident(_) | TokenTree::Literal(_));
        if word && after_word {
            text.push(' ');
        }
        after_word = word;
        text.extend(token.to_string().split_whitespace());
    }
    text
}

/// An annotated function: signature parsed, body kept as tokens (the way
/// `tracing::instrument` does) so the user's code reaches the compiler as
/// written.
pub(crate) struct Handler {
    /// Outer attributes, including doc comments and route attributes.
    pub attrs: Vec<Attribute>,
    /// As written.
    pub vis: Visibility,
    /// As written; `valid` checks it is `async`.
    pub sig: Signature,
    /// The body's braces, for spans.
    pub brace: Span,
    /// `#![...]` at the top of the body: they must stay first.
    pub inner_attrs: Vec<Attribute>,
    /// Everything else in the body.
    pub body: TokenStream,
}

impl Handler {
    /// Parses the item under the attribute.
    pub fn parse(item: TokenStream) -> Result<Self> {
        let parser = |input: ParseStream| {
            let attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            let sig: Signature = input.parse()?;
            if input.peek(Token![;]) {
                return Err(Error::new_spanned(
                    &sig.ident,
                    "`#[requires_scope]` goes on a handler with a body, not a declaration: put it on \
                     the `async fn` that has one (a free function, or one in an `impl` block)",
                ));
            }
            let content;
            let brace = syn::braced!(content in input);
            let inner_attrs = content.call(Attribute::parse_inner)?;
            let body: TokenStream = content.parse()?;
            Ok(Self {
                attrs,
                vis,
                sig,
                brace: brace.span.join(),
                inner_attrs,
                body,
            })
        };
        parser.parse2(item.clone()).map_err(|err| {
            // Our own messages say it all; syn's get the context, unless
            // the item is plainly something else than a function.
            if err.to_string().starts_with("`#[requires_scope]`") {
                return err;
            }
            if let Some((what, span)) = not_a_function(item) {
                return Error::new(
                    span,
                    format!("`#[requires_scope]` goes on an `async fn` handler, not on {what}"),
                );
            }
            Error::new(
                err.span(),
                format!("`#[requires_scope]` goes on an `async fn` handler ({err})"),
            )
        })
    }
}

/// What an item that is not a function is (`a struct`), and where its
/// keyword is; `None` for a function, or for what is no item at all.
fn not_a_function(item: TokenStream) -> Option<(&'static str, proc_macro2::Span)> {
    use syn::spanned::Spanned;
    let item: syn::Item = syn::parse2(item).ok()?;
    let (what, span) = match &item {
        syn::Item::Struct(i) => ("a struct", i.struct_token.span()),
        syn::Item::Enum(i) => ("an enum", i.enum_token.span()),
        syn::Item::Union(i) => ("a union", i.union_token.span()),
        syn::Item::Const(i) => ("a constant", i.const_token.span()),
        syn::Item::Static(i) => ("a static", i.static_token.span()),
        syn::Item::Mod(i) => ("a module", i.mod_token.span()),
        syn::Item::Impl(i) => (
            "an `impl` block (put it on the handler inside)",
            i.impl_token.span(),
        ),
        syn::Item::Trait(i) => ("a trait", i.trait_token.span()),
        syn::Item::Type(i) => ("a type alias", i.type_token.span()),
        syn::Item::Use(i) => ("a `use`", i.use_token.span()),
        syn::Item::ExternCrate(i) => ("an `extern crate`", i.extern_token.span()),
        syn::Item::ForeignMod(i) => ("an `extern` block", i.abi.span()),
        syn::Item::Macro(i) => ("a macro", i.mac.path.span()),
        _ => return None,
    };
    Some((what, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(tokens: TokenStream) -> String {
        match parse_args(tokens) {
            Ok(_) => panic!("parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_nested_requirements() {
        let r = parse_args(quote!(any("orders:admin", all("orders:read", "a.b:c",),))).unwrap();
        let Requirement::Any(any) = r else {
            panic!("not any")
        };
        assert_eq!(any.items.len(), 2);
        assert!(matches!(&any.items[1], Requirement::All(all) if all.items.len() == 2));
        assert!(matches!(
            parse_args(quote!("x:y",)),
            Ok(Requirement::Scope(_))
        ));
    }

    /// Past the depth `valid` allows, the parser stops: thousands of
    /// levels must not overflow the stack on the way to that error.
    #[test]
    fn stops_parsing_past_the_depth_limit() {
        const LEVELS: usize = 20_000;
        // Far less stack than rustc gives a proc macro.
        let parsed = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let mut tokens = quote!("orders:read");
                for _ in 0..LEVELS {
                    tokens = quote!(any(#tokens));
                }
                let parsed = parse_args(tokens).map(|r| {
                    crate::valid::requirement(&r, None)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
                parsed.map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            parsed,
            Ok(Err(format!(
                "`any(...)` and `all(...)` may nest at most {MAX_REQUIREMENT_DEPTH} deep; \
                 this one is deeper: flatten it (`any(any(a, b), c)` is `any(a, b, c)`)"
            )))
        );
        // Just inside the limit, every level is parsed.
        let mut tokens = quote!("orders:read");
        for _ in 0..MAX_REQUIREMENT_DEPTH {
            tokens = quote!(all(#tokens));
        }
        let parsed = parse_args(tokens).unwrap();
        assert!(crate::valid::requirement(&parsed, None).is_ok());

        // The same, each literal in the invisible group `macro_rules!` puts
        // around a `$s:literal`: those do not count as levels.
        let invisible = |tokens: TokenStream| {
            TokenStream::from(TokenTree::Group(Group::new(Delimiter::None, tokens)))
        };
        let mut tokens = invisible(quote!("orders:read"));
        for _ in 0..MAX_REQUIREMENT_DEPTH {
            let inner = invisible(tokens);
            tokens = quote!(all(#inner));
        }
        let parsed = parse_args(tokens).unwrap();
        assert!(crate::valid::requirement(&parsed, None).is_ok());
    }

    #[test]
    fn a_stray_comma_is_named() {
        assert_eq!(
            err(quote!("a:b",,)),
            "stray second `,` after the requirement; remove it"
        );
        assert_eq!(
            err(quote!("a:b",, "c:d")),
            "stray second `,` after the requirement; remove it"
        );
        for tokens in [
            quote!(any("a:b",, "c:d")),
            quote!(all(, "a:b")),
            quote!(,"a:b"),
            quote!(any(all("a:b"),,)),
        ] {
            assert_eq!(
                err(tokens.clone()),
                "stray `,` where a requirement should be; remove it",
                "{tokens}"
            );
        }
        // One comma after the requirement is fine, at every level.
        assert!(parse_args(quote!(any("a:b", all("c:d",),),)).is_ok());
    }

    #[test]
    fn an_unquoted_super_scope_is_a_wildcard() {
        assert_eq!(
            err(quote!(*)),
            "found `*`: a required scope never has a wildcard (a key may hold `*`; no \
             handler requires it); name the exact scope, as a string, e.g. \"orders:read\""
        );
        assert_eq!(err(quote!(any("a:b", *))), err(quote!(*)),);
        assert!(
            err(quote!(*:read))
                .starts_with("found `*:read`: a required scope never has a wildcard;")
        );
        // Up to the next comma, then the rest is not looked at.
        assert!(err(quote!(*, "a:b")).starts_with("found `*`:"));
    }

    #[test]
    fn explains_mistakes() {
        assert!(err(quote!()).contains("needs the scope"));
        assert!(err(quote!("a:b", "c:d")).contains("takes one requirement"));
        assert!(err(quote!(one_of("a:b"))).contains("unknown `one_of(...)`: expected `any(...)`"));
        assert!(err(quote!(42)).contains("found a number"));
        assert!(err(quote!('a')).contains("character literal"));
        assert!(err(quote!(orders:read)).contains("write \"orders:read\""));
        assert!(err(quote!(billing.invoices:read)).contains("write \"billing.invoices:read\""));
        assert!(err(quote!(SCOPE)).contains("found `SCOPE`"));
        assert!(err(quote!(any)).contains("takes a list"));
        assert_eq!(
            err(quote!(any:read)),
            "scopes are strings: write \"any:read\""
        );
        assert_eq!(
            err(quote!(all:write)),
            "scopes are strings: write \"all:write\""
        );
        assert!(err(quote!(any::read)).contains("found `any::read`"));
        assert_eq!(
            err(quote!(orders:*)),
            "found `orders:*`: a required scope never has a wildcard; name the exact \
             scope, as a string, e.g. \"orders:read\""
        );
        assert!(!err(quote!(billing.invoices:*)).contains("write \""));
        assert!(err(quote!(billing.invoices:*)).contains("e.g. \"billing.invoices:read\""));
        assert!(err(quote!(Orders:*)).contains("e.g. \"orders:read\""));
        assert!(err(quote!(orders:wr*)).contains("never has a wildcard"));
        assert_eq!(
            err(quote!("orders:read"x)),
            "unexpected suffix `x` after the scope string; write \"orders:read\" alone"
        );
        assert!(err(quote!(any("a:b", r"c:d"_raw))).contains("suffix `_raw`"));
        assert!(
            err(quote!(any("a:b" "c:d")))
                .contains("expected `,` between the requirements of `any(...)`")
        );
        assert!(err(quote!("a:b" or "c:d")).contains("to combine scopes, write `any("));
    }

    #[test]
    fn quotes_an_unquoted_scope_only_when_that_is_all_it_needs() {
        for (tokens, text, reason) in [
            (
                quote!(Orders:read),
                "Orders:read",
                "upper-case letter `O` at byte 0",
            ),
            (quote!(orders:re-fund), "orders:re-fund", "`-` at byte 9"),
            // Two words stay apart: not taken for `orders:refund`.
            (
                quote!(orders:re fund),
                "orders:re fund",
                "whitespace at byte 9",
            ),
        ] {
            let got = err(tokens);
            assert!(
                got.starts_with(&format!(
                    "found `{text}`: scopes are written as strings such as \"orders:read\", \
                     and this is not a valid scope either: "
                )),
                "{got}"
            );
            assert!(got.contains(reason), "{got}");
            assert!(!got.contains("write \""), "{got}");
        }
        assert_eq!(
            err(quote!(orders : read)),
            "scopes are strings: write \"orders:read\""
        );
    }

    #[test]
    fn named_arguments_are_refused() {
        assert_eq!(
            err(quote!(scope = "orders:read")),
            "`#[requires_scope]` takes no named arguments: write \
             `#[requires_scope(\"orders:read\")]`"
        );
        // The name may be a keyword of the grammar, or a Rust keyword.
        for tokens in [
            quote!(any = "orders:read"),
            quote!(r#type = "orders:read"),
            quote!(scope = r"orders:read",),
        ] {
            assert!(
                err(tokens.clone()).ends_with("write `#[requires_scope(\"orders:read\")]`"),
                "{tokens}"
            );
        }
        // An invalid value is not offered back as the fix.
        let got = err(quote!(scope = "Orders:read"));
        assert!(
            got.starts_with(
                "`#[requires_scope]` takes no named arguments, only the scope itself, \
                 e.g. `#[requires_scope(\"orders:read\")]`; and \"Orders:read\" is not a \
                 valid scope either: upper-case letter"
            ),
            "{got}"
        );
        for tokens in [
            quote!(scope = any("a:b", "c:d")),
            quote!(scope = SCOPE),
            quote!(scope = "a:b"x),
            quote!(scope = "a:b" "c:d"),
        ] {
            let got = err(tokens.clone());
            assert!(
                got.starts_with(
                    "`#[requires_scope]` takes no named arguments, only the requirement itself"
                ),
                "{tokens}: {got}"
            );
        }
        // Everything up to the next comma is spanned (and consumed).
        assert!(err(quote!(scope = "a:b", "c:d")).contains("takes no named arguments"));
    }

    #[test]
    fn keeps_the_body_and_inner_attributes() {
        let h = Handler::parse(quote! {
            /// Docs.
            #[get("/x")]
            pub async fn h(x: u8) -> u8 { #![allow(unused)] let y = x; y }
        })
        .unwrap();
        assert_eq!(h.attrs.len(), 2);
        assert_eq!(h.inner_attrs.len(), 1);
        assert_eq!(h.body.to_string(), "let y = x ; y");
        let Err(err) = Handler::parse(quote!(
            struct S;
        )) else {
            panic!("parsed a struct")
        };
        assert!(err.to_string().contains("goes on an `async fn`"), "{err}");
        // A declaration is already an async fn: one message, not two.
        let Err(err) = Handler::parse(quote!(
            async fn f();
        )) else {
            panic!("parsed a declaration")
        };
        assert_eq!(
            err.to_string(),
            "`#[requires_scope]` goes on a handler with a body, not a declaration: put it on \
                     the `async fn` that has one (a free function, or one in an `impl` block)"
        );
    }
}
