//! Checks: every scope against the runtime's own grammar
//! (`scopekey_core::Scope::parse`) and the crate's catalogue; the handler is
//! an `async fn` guarded once. Every error points at the offending tokens,
//! and all of them are reported at once.

use proc_macro2::Span;
use scopekey_core::{MAX_REQUIREMENT_DEPTH, Requirement, Scope, ScopeError};
use syn::{Error, LitStr, Result};

use crate::ast::{self, Handler};
use crate::catalogue::{self, Catalogue, Manifest};

/// Checks the requirement; returns it as the runtime's typed
/// [`Requirement`], whose text form names the guard.
pub(crate) fn requirement(
    requirement: &ast::Requirement,
    manifest: Option<&Manifest>,
) -> Result<Requirement> {
    let mut errors = Errors::default();
    let catalogue = match manifest.map(|m| &m.catalogue) {
        Some(Ok(catalogue)) => catalogue.as_ref(),
        Some(Err(message)) => {
            errors.push(Error::new(Span::call_site(), message));
            None
        }
        None => None,
    };
    let checked = check(requirement, catalogue, 0, &mut errors);
    errors.finish()?;
    // Every scope parsed, so `check` produced a value.
    checked.ok_or_else(|| Error::new(Span::call_site(), "invalid requirement"))
}

/// `depth`: how many `any(...)` / `all(...)` enclose `requirement`.
fn check(
    requirement: &ast::Requirement,
    catalogue: Option<&Catalogue>,
    depth: usize,
    errors: &mut Errors,
) -> Option<Requirement> {
    match requirement {
        ast::Requirement::Scope(lit) => match Scope::parse(&lit.value()) {
            Err(err) => {
                errors.push(scope_error(lit, &err));
                None
            }
            Ok(scope) => {
                if let Some(catalogue) = catalogue
                    && !catalogue.contains(&scope)
                {
                    errors.push(not_in_catalogue(lit, catalogue));
                }
                Some(Requirement::Scope(scope))
            }
        },
        ast::Requirement::Any(call) | ast::Requirement::All(call) => {
            if depth == MAX_REQUIREMENT_DEPTH {
                // The runtime's parser holds text to the same bound, so
                // every guard's requirement reads back from its text.
                errors.push(Error::new_spanned(
                    call.tokens(),
                    format!(
                        "`any(...)` and `all(...)` may nest at most \
                         {MAX_REQUIREMENT_DEPTH} deep; this one is deeper: flatten it \
                         (`any(any(a, b), c)` is `any(a, b, c)`)"
                    ),
                ));
                return None;
            }
            if call.items.is_empty() {
                let name = call.keyword.to_string();
                errors.push(Error::new_spanned(
                    call.tokens(),
                    format!(
                        "`{name}()` needs at least one requirement, \
                         e.g. `{name}(\"orders:read\", \"orders:admin\")`"
                    ),
                ));
                return None;
            }
            let items: Vec<_> = call
                .items
                .iter()
                .map(|item| check(item, catalogue, depth + 1, errors))
                .collect();
            let items = items.into_iter().collect::<Option<Vec<_>>>()?;
            Some(match requirement {
                ast::Requirement::Any(_) => Requirement::Any(items),
                _ => Requirement::All(items),
            })
        }
    }
}

fn scope_error(lit: &LitStr, err: &ScopeError) -> Error {
    let input = err.input();
    let message = if input.is_empty() {
        format!("empty scope: {}", err.reason())
    } else {
        format!("invalid scope `{}`: {}", shorten(input), err.reason())
    };
    Error::new(lit.span(), message)
}

/// The input as shown in a message: escaped, and cut short when long.
fn shorten(input: &str) -> String {
    const SHOWN: usize = 40;
    let escaped: String = input.escape_debug().collect();
    match escaped.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &escaped[..end]),
        None => escaped,
    }
}

fn not_in_catalogue(lit: &LitStr, catalogue: &Catalogue) -> Error {
    let scope = lit.value();
    let hint = match catalogue.suggest(&scope) {
        Some(close) => format!("did you mean `{close}`?"),
        None => "add it to the list if it is a new scope".to_owned(),
    };
    Error::new(
        lit.span(),
        format!(
            "scope `{scope}` is not in this crate's scope catalogue ({}); {hint}",
            catalogue::WHERE
        ),
    )
}

/// Checks the annotated function.
pub(crate) fn handler(handler: &Handler) -> Result<()> {
    let mut errors = Errors::default();
    if handler.sig.asyncness.is_none() {
        let name = &handler.sig.ident;
        errors.push(Error::new_spanned(
            handler.sig.fn_token,
            format!(
                "`#[requires_scope]` goes on an `async fn`: actix-web handlers are async; \
                 write `async fn {name}`"
            ),
        ));
    }
    // The parameters' types become one tuple extracted at once, which no
    // attribute can leave an element out of: a parameter compiled out by
    // `#[cfg]` would still be extracted.
    for input in &handler.sig.inputs {
        let param = match input {
            syn::FnArg::Typed(param) => param,
            syn::FnArg::Receiver(receiver) => {
                // actix-web calls a handler with extractors only: nothing
                // would supply `self`, and the mismatch would surface far
                // away, in terms of the hidden guard's types.
                let name = &handler.sig.ident;
                errors.push(Error::new_spanned(
                    receiver,
                    format!(
                        "a `#[requires_scope]` handler takes no `self`: actix-web has no value \
                         to call it on; remove the receiver to make `{name}` an associated \
                         function, and register it as `YourType::{name}`"
                    ),
                ));
                continue;
            }
        };
        for attr in param.attrs.iter().filter(|a| compiles_out(&a.meta)) {
            errors.push(Error::new_spanned(
                attr,
                "`#[cfg]` on a parameter of a `#[requires_scope]` handler is not supported \
                 (its extractor would still run); put `#[cfg]` on whole handlers instead, \
                 one for each configuration",
            ));
        }
    }
    for attr in &handler.attrs {
        if attr
            .path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "requires_scope")
        {
            errors.push(Error::new_spanned(
                attr,
                "one `#[requires_scope]` per handler: combine requirements \
                 with `all(...)` or `any(...)`",
            ));
        }
    }
    errors.finish()
}

/// Whether an attribute is `#[cfg(...)]`, or a `#[cfg_attr(...)]` that
/// may become one (however deeply nested).
fn compiles_out(meta: &syn::Meta) -> bool {
    if meta.path().is_ident("cfg") {
        return true;
    }
    let syn::Meta::List(list) = meta else {
        return false;
    };
    list.path.is_ident("cfg_attr")
        && list
            .parse_args_with(
                syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
            )
            .is_ok_and(|metas| metas.iter().skip(1).any(compiles_out))
}

/// Collects errors so one compilation reports every mistake.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn manifest(scopes: &str) -> Manifest {
        Manifest {
            path: "Cargo.toml".into(),
            catalogue: Catalogue::from_manifest(&format!(
                "[package.metadata.scopekey]\nscopes = {scopes}\n"
            )),
        }
    }

    fn messages(tokens: proc_macro2::TokenStream, manifest: Option<&Manifest>) -> Vec<String> {
        let parsed = ast::parse_args(tokens).unwrap();
        match requirement(&parsed, manifest) {
            Ok(r) => panic!("accepted {r}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn canonical_text() {
        let parsed = ast::parse_args(quote!(any(
            "orders:admin",
            all(r"orders:read", "orders.audit:read")
        )))
        .unwrap();
        let r = requirement(&parsed, None).unwrap();
        assert_eq!(
            r.to_string(),
            "any(orders:admin, all(orders:read, orders.audit:read))"
        );
    }

    #[test]
    fn grammar_errors_use_the_runtime_reason() {
        let cases = [
            (
                quote!("Orders:read"),
                "invalid scope `Orders:read`: upper-case letter `O` at byte 0; scopes are lower case",
            ),
            (
                quote!("orders:*"),
                "invalid scope `orders:*`: a required scope cannot be a wildcard; \
                 name the exact scope, e.g. `orders:read`",
            ),
            (
                quote!(""),
                "empty scope: a scope cannot be empty; write `resource:action`",
            ),
            (
                quote!("orders read"),
                "invalid scope `orders read`: whitespace at byte 6; scopes contain no spaces",
            ),
        ];
        for (tokens, expected) in cases {
            assert_eq!(messages(tokens, None), [expected]);
        }
        let long = format!("a:{}", "b".repeat(200));
        let got = messages(quote!(#long), None);
        assert!(got[0].starts_with("invalid scope `a:bbbbbbbb"), "{got:?}");
        assert!(got[0].contains("…`: a scope is at most 128 bytes; this one has 202"));
    }

    #[test]
    fn reports_every_error_at_once() {
        let got = messages(quote!(any("A:b", all(), "c:*")), None);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].starts_with("`all()` needs at least one requirement"));
    }

    #[test]
    fn catalogue_membership_and_suggestion() {
        let m = manifest(r#"["orders:read", "orders:write", "reports:*"]"#);
        let parsed = ast::parse_args(quote!(all("orders:write", "reports:x"))).unwrap();
        assert!(requirement(&parsed, Some(&m)).is_ok());
        assert_eq!(
            messages(quote!("orders:wirte"), Some(&m)),
            [
                "scope `orders:wirte` is not in this crate's scope catalogue \
              (Cargo.toml [package.metadata.scopekey] scopes); did you mean `orders:write`?"
            ]
        );
        assert!(
            messages(quote!("users:read"), Some(&m))[0]
                .ends_with("add it to the list if it is a new scope")
        );
        // The management routes' scopes are in every catalogue, as in the
        // runtime; only they are.
        let parsed = ast::parse_args(quote!(all(
            "api_keys:read",
            "api_keys:write",
            "api_keys:revoke"
        )))
        .unwrap();
        assert!(requirement(&parsed, Some(&m)).is_ok());
        assert!(
            messages(quote!("api_keys:delete"), Some(&m))[0].starts_with("scope `api_keys:delete`")
        );
        // Without a catalogue only the grammar counts.
        let none = Manifest {
            path: "Cargo.toml".into(),
            catalogue: Ok(None),
        };
        let parsed = ast::parse_args(quote!("users:read")).unwrap();
        assert!(requirement(&parsed, Some(&none)).is_ok());
    }

    #[test]
    fn a_broken_catalogue_is_an_error() {
        let m = manifest(r#"["Orders:read"]"#);
        let got = messages(quote!("orders:read"), Some(&m));
        assert!(
            got[0].contains("scopes: invalid scope `Orders:read`"),
            "{got:?}"
        );
    }

    #[test]
    fn handler_must_be_async_and_guarded_once() {
        let check = |tokens| match handler(&Handler::parse(tokens).unwrap()) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            check(quote!(
                async fn h() {}
            )),
            ""
        );
        assert!(
            check(quote!(
                fn h() {}
            ))
            .contains("write `async fn h`")
        );
        assert!(
            check(quote!(
                #[scopekey::requires_scope("a:b")]
                async fn h() {}
            ))
            .contains("one `#[requires_scope]` per handler")
        );
        assert_eq!(
            check(quote!(
                async fn h(&self, x: u8) {}
            )),
            "a `#[requires_scope]` handler takes no `self`: actix-web has no value to call \
             it on; remove the receiver to make `h` an associated function, and register it \
             as `YourType::h`"
        );
    }
}
