//! Emits the code: the guarded handler and the catalogue slice. Everything
//! is named by absolute path through the facade (`::scopekey::__private`),
//! so users depend on `scopekey` alone.

use proc_macro2::{Delimiter, Group, Literal, Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{Error, FnArg, Ident, LitStr, Result, parse_quote};

use crate::ast::{self, Handler};
use crate::catalogue::{self, Manifest};
use crate::valid;

/// `#[requires_scope(...)]`: parse, check, expand. On error the item comes
/// back unchanged beside the error (actix-web-codegen's
/// `input_and_compile_error`), so the rest of the crate still sees it.
pub(crate) fn requires_scope(args: TokenStream, item: TokenStream) -> TokenStream {
    match try_requires_scope(args, item.clone()) {
        Ok(expanded) => expanded,
        Err(err) => {
            let mut item = item;
            item.extend(err.to_compile_error());
            item
        }
    }
}

fn try_requires_scope(args: TokenStream, item: TokenStream) -> Result<TokenStream> {
    let (requirement, handler) = both(ast::parse_args(args), Handler::parse(item))?;
    let manifest = catalogue::load();
    let (checked, ((), track)) = both(
        valid::requirement(&requirement, manifest.as_deref()),
        both(valid::handler(&handler), track(manifest.as_deref())),
    )?;
    let id = guard_id(&checked.to_string());
    Ok(guarded(handler, &requirement, id, track))
}

/// Both values, or every error of the two.
fn both<A, B>(a: Result<A>, b: Result<B>) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(mut a), Err(b)) => {
            a.combine(b);
            Err(a)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The guard's id: 64-bit FNV-1a of the requirement's canonical text
/// (`any(orders:admin, orders:delete)`). Stable across builds and
/// platforms; equal requirements share an id, which is harmless.
pub(crate) fn guard_id(canonical: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    canonical.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The handler with the guard in front of its extractors and its requirement
/// registered under `id`; `track` from [`track`].
fn guarded(
    handler: Handler,
    requirement: &ast::Requirement,
    id: u64,
    track: TokenStream,
) -> TokenStream {
    let Handler {
        attrs,
        vis,
        mut sig,
        brace,
        inner_attrs,
        body,
    } = handler;
    let id = Literal::u64_suffixed(id);

    // One extractor (`valid` has refused a `self`): the guard alone, or the
    // guard and then the handler's own extractors as a tuple (`Guarded`),
    // which it extracts only once the guard has passed, so that the guard
    // always answers first. The user's patterns are bound from the tuple in
    // a block around the body, so that the body's own items (`use
    // serde_json::Value as Json;`, a `const`, a `use Enum::*;`) cannot change
    // what the patterns mean, as they could not in the handler as written.
    let args = Ident::new("__scopekey_guard", Span::mixed_site());
    let own: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let types = own.iter().map(|t| &t.ty);
    // Each parameter's type checked on its own, spanned on it: a type that
    // is not an extractor is reported where it is written. Not a type that
    // names the function's generic parameters, `Self` or `impl`: whether it
    // is an extractor is known only where the handler is registered, with
    // its types given (`web::Data<R>` needs `R: 'static`, which a generic
    // handler need not promise), as without the attribute.
    let generic: Vec<String> = sig
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let extractors: Vec<TokenStream> = own
        .iter()
        .filter(|t| !names_any(t.ty.to_token_stream(), &generic))
        .map(|t| {
            let ty = &t.ty;
            quote::quote_spanned!(syn::spanned::Spanned::span(ty)=> ::scopekey::__private::extractor::<#ty>();)
        })
        .collect();
    // A pattern goes into the tuple as it is; one with attributes (say
    // `#[allow(unused_variables)]`) is bound by a `let` of its own that
    // carries them.
    let mut patterns = Vec::new();
    let mut attributed = Vec::new();
    for (i, t) in own.iter().enumerate() {
        let pat = &t.pat;
        if t.attrs.is_empty() {
            patterns.push(quote!(#pat));
        } else {
            let temp = Ident::new(&format!("__scopekey_arg{i}"), Span::mixed_site());
            let attrs = &t.attrs;
            patterns.push(quote!(#temp));
            attributed.push(quote!(#(#attrs)* let #pat = #temp;));
        }
    }
    let (extractor, bind): (FnArg, _) = if own.is_empty() {
        (parse_quote!(#args: ::scopekey::__private::Guard<#id>), None)
    } else {
        (
            parse_quote!(#args: ::scopekey::__private::Guarded<#id, (#(#types,)*)>),
            Some(quote!(let (#(#patterns,)*) = #args.0; #(#attributed)*)),
        )
    };
    sig.inputs = std::iter::once(extractor).collect();

    let name = sig.ident.unraw().to_string();
    let static_requirement = static_requirement(requirement);
    // Generated tokens keep the call-site span (lints treat them as macro
    // output); the user's body keeps its own spans and, in both blocks, its
    // braces' span. Inner attributes stay first in the outer block, where
    // they apply to the whole function.
    // The statements in a block of their own only when they declare items
    // (`use`, `const`, `struct`, ...), which would otherwise be in scope
    // for the bindings above: a body of one expression in braces of its own
    // draws rustc's `unused_braces` lint, pointing at the user's braces.
    let body = if declares_items(&body) {
        let mut inner = Group::new(Delimiter::Brace, body);
        inner.set_span(brace);
        quote!(#inner)
    } else {
        body
    };
    let block = quote! {
        #(#inner_attrs)*
        #(#extractors)*
        #bind
        #track
        const _: () = {
            #[::scopekey::__private::linkme::distributed_slice(::scopekey::__private::GUARDS)]
            #[linkme(crate = ::scopekey::__private::linkme)]
            static __SCOPEKEY_GUARD: ::scopekey::__private::GuardInfo =
                ::scopekey::__private::GuardInfo {
                    id: #id,
                    requirement: &#static_requirement,
                    handler: #name,
                    module: ::core::module_path!(),
                };
        };
        #body
    };
    let mut block = Group::new(Delimiter::Brace, block);
    block.set_span(brace);
    quote! {
        #(#attrs)*
        #vis #sig #block
    }
}

/// Whether a type's tokens name one of `generic` (the function's type
/// parameters), `Self` or `impl`.
fn names_any(tokens: TokenStream, generic: &[String]) -> bool {
    tokens.into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => {
            let ident = ident.to_string();
            ident == "Self" || ident == "impl" || generic.contains(&ident)
        }
        proc_macro2::TokenTree::Group(group) => names_any(group.stream(), generic),
        _ => false,
    })
}

/// Whether a body's statements declare an item at their top level (a body
/// that does not parse is taken to, the safe way).
fn declares_items(body: &TokenStream) -> bool {
    match syn::parse::Parser::parse2(syn::Block::parse_within, body.clone()) {
        Ok(stmts) => stmts
            .iter()
            .any(|stmt| matches!(stmt, syn::Stmt::Item(_) | syn::Stmt::Macro(_))),
        Err(_) => true,
    }
}

fn static_requirement(requirement: &ast::Requirement) -> TokenStream {
    let path = quote!(::scopekey::__private::StaticRequirement);
    match requirement {
        ast::Requirement::Scope(lit) => {
            // Re-emitted plain (a raw or escaped literal becomes its value).
            let lit = LitStr::new(&lit.value(), lit.span());
            quote!(#path::Scope(#lit))
        }
        ast::Requirement::Any(call) => {
            let items = call.items.iter().map(static_requirement);
            quote!(#path::Any(&[#(#items),*]))
        }
        ast::Requirement::All(call) => {
            let items = call.items.iter().map(static_requirement);
            quote!(#path::All(&[#(#items),*]))
        }
    }
}

/// Makes the crate depend on its manifest, so editing the catalogue
/// rebuilds it: `include_bytes!` lands the file in rustc's dep-info, which
/// Cargo watches (`proc_macro::tracked_path` is not stable). The path is
/// absolute ([`catalogue::load`]): `include_bytes!` would read a relative
/// one from the source file's directory. A path that is not UTF-8 cannot
/// be written in `include_bytes!`, and without it edits to the catalogue
/// would go unseen: an error, not a quiet stale build.
fn track(manifest: Option<&Manifest>) -> Result<TokenStream> {
    let Some(manifest) = manifest else {
        return Ok(TokenStream::new());
    };
    match manifest.path.to_str() {
        Some(path) => Ok(quote!(
            const _: &[u8] = ::core::include_bytes!(#path);
        )),
        // Without a catalogue there is nothing to go stale (only adding
        // one later would not rebuild the crate by itself).
        None if matches!(manifest.catalogue, Ok(None)) => Ok(TokenStream::new()),
        None => Err(Error::new(
            Span::call_site(),
            format!(
                "this crate's Cargo.toml is at a path that is not UTF-8 ({}): scopekey \
                 cannot watch it for edits to the scope catalogue, so the crate would not \
                 be rebuilt when they change; move the crate to a UTF-8 path",
                manifest.path.display()
            ),
        )),
    }
}

/// `catalogue!()`: the catalogue's scopes as a `&'static [&'static str]`.
pub(crate) fn catalogue(input: TokenStream) -> TokenStream {
    if !input.is_empty() {
        return Error::new_spanned(
            input,
            "`catalogue!()` takes no arguments: it reads the scopes listed in this \
             crate's Cargo.toml under [package.metadata.scopekey]",
        )
        .to_compile_error();
    }
    let manifest = catalogue::load();
    let (scopes, mut error) = match manifest.as_deref().map(|m| &m.catalogue) {
        Some(Ok(Some(catalogue))) => (catalogue.scopes().map(str::to_owned).collect(), None),
        Some(Err(message)) => (Vec::new(), Some(Error::new(Span::call_site(), message))),
        Some(Ok(None)) | None => (Vec::new(), None),
    };
    let track = track(manifest.as_deref()).unwrap_or_else(|err| {
        match &mut error {
            Some(error) => error.combine(err),
            None => error = Some(err),
        }
        TokenStream::new()
    });
    let error = error.map(|e| e.to_compile_error());
    let slice = Ident::new("__SCOPEKEY_CATALOGUE", Span::mixed_site());
    quote! {{
        #error
        #track
        const #slice: &[&str] = &[#(#scopes),*];
        #slice
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_ids_are_stable() {
        // FNV-1a test vectors, then pinned values: changing the hash or the
        // canonical text changes every guard's id.
        assert_eq!(guard_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(guard_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(guard_id("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(guard_id("orders:read"), guard_id("orders:read"));
        assert_ne!(guard_id("orders:read"), guard_id("orders:write"));
        assert_eq!(
            guard_id("any(orders:admin, orders:delete)"),
            PINNED_ANY_ADMIN_DELETE
        );
        // The text hashed is the one the runtime prints for the registered
        // requirement.
        use scopekey_core::StaticRequirement as S;
        let registered = S::Any(&[S::Scope("orders:admin"), S::Scope("orders:delete")]);
        let parsed = ast::parse_args(quote!(any("orders:admin", "orders:delete"))).unwrap();
        let checked = valid::requirement(&parsed, None).unwrap();
        assert_eq!(checked.to_string(), registered.to_string());
    }

    const PINNED_ANY_ADMIN_DELETE: u64 = 7_067_662_686_348_375_298;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        requires_scope(args, item).to_string()
    }

    #[test]
    fn expands_to_the_contract() {
        let out = expand(
            quote!(any("orders:admin", "orders:delete")),
            quote! {
                /// Deletes.
                #[delete("/orders/{id}")]
                pub async fn delete(req: HttpRequest, p: web::Path<u64>) -> Result<HttpResponse, MyErr> {
                    Ok(HttpResponse::Ok().finish())
                }
            },
        );
        let id = guard_id("any(orders:admin, orders:delete)");
        // One extractor: the guard, then the handler's own as a tuple; each
        // of their types checked as an extractor, then their patterns
        // bound, first thing in the body.
        let expected_sig = format!(
            "pub async fn delete (__scopekey_guard : :: scopekey :: __private :: Guarded < {id}u64 , (HttpRequest , web :: Path < u64 > ,) >) -> Result < HttpResponse , MyErr > {{ :: scopekey :: __private :: extractor :: < HttpRequest > () ; :: scopekey :: __private :: extractor :: < web :: Path < u64 > > () ; let (req , p ,) = __scopekey_guard . 0 ;"
        );
        assert!(out.contains(&expected_sig), "{out}");
        assert!(
            out.starts_with("# [doc = r\" Deletes.\"] # [delete (\"/orders/{id}\")]"),
            "{out}"
        );
        for part in [
            "# [:: scopekey :: __private :: linkme :: distributed_slice (:: scopekey :: __private :: GUARDS)]",
            "# [linkme (crate = :: scopekey :: __private :: linkme)]",
            "static __SCOPEKEY_GUARD : :: scopekey :: __private :: GuardInfo",
            &format!("id : {id}u64"),
            "requirement : & :: scopekey :: __private :: StaticRequirement :: Any (& [:: scopekey :: __private :: StaticRequirement :: Scope (\"orders:admin\") , :: scopekey :: __private :: StaticRequirement :: Scope (\"orders:delete\")])",
            "handler : \"delete\"",
            "module : :: core :: module_path ! ()",
            // The body after them: in no block of its own, as it declares
            // no items.
            "} ; Ok (HttpResponse :: Ok () . finish ()) }",
        ] {
            assert!(out.contains(part), "missing {part} in {out}");
        }
        assert!(!out.contains("compile_error"));
    }

    #[test]
    fn inner_attributes_stay_first() {
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h(x: u8) -> u8 {
                    #![allow(unused)]
                    x
                }
            ),
        );
        assert!(out.contains("async fn h (__scopekey_guard :"), "{out}");
        assert!(
            out.contains(
                "{ # ! [allow (unused)] :: scopekey :: __private :: extractor :: < u8 > () ; let (x ,) = __scopekey_guard . 0 ;"
            ),
            "{out}"
        );
    }

    /// The body's items (`use`, `const`, unit structs) are in scope in the
    /// body only, as in the handler as written: the patterns are bound
    /// outside it.
    #[test]
    fn the_body_is_a_block_of_its_own() {
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h(Json(order): Json<NewOrder>) -> u8 {
                    #![allow(unused)]
                    use serde_json::Value as Json;
                    order.x
                }
            ),
        );
        assert!(
            out.contains(
                "{ # ! [allow (unused)] :: scopekey :: __private :: extractor :: < Json < NewOrder > > () ; let (Json (order) ,) = __scopekey_guard . 0 ; const _"
            ),
            "{out}"
        );
        assert!(
            out.ends_with("} ; { use serde_json :: Value as Json ; order . x } }"),
            "{out}"
        );
    }

    #[test]
    fn a_receiver_is_refused() {
        // Nothing would supply `self`: actix-web calls handlers with
        // extractors only.
        for receiver in [quote!(&self), quote!(mut self), quote!(self: Box<Self>)] {
            let item = quote!(
                async fn h(#receiver, x: u8) -> u8 {
                    x
                }
            );
            let out = expand(quote!("a:b"), item.clone());
            assert!(out.starts_with(&item.to_string()), "{out}");
            assert!(
                out.contains("a `#[requires_scope]` handler takes no `self`"),
                "{out}"
            );
            assert!(out.contains("register it as `YourType::h`"), "{out}");
            assert!(!out.contains("__scopekey_guard"), "{out}");
        }
    }

    #[test]
    fn a_handler_without_arguments_gets_the_guard_alone() {
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h() {}
            ),
        );
        let id = guard_id("a:b");
        assert!(
            out.contains(&format!(
                "async fn h (__scopekey_guard : :: scopekey :: __private :: Guard < {id}u64 >)"
            )),
            "{out}"
        );
        assert!(!out.contains("let ("), "{out}");
    }

    #[test]
    fn argument_attributes_are_kept_on_a_binding_of_their_own() {
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h(#[allow(unused_variables)] req: HttpRequest, b: B) {}
            ),
        );
        assert!(
            out.contains(
                "let (__scopekey_arg0 , b ,) = __scopekey_guard . 0 ; # [allow (unused_variables)] let req = __scopekey_arg0 ;"
            ),
            "{out}"
        );
    }

    #[test]
    fn patterns_keep_their_shape() {
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h(mut a: A, web::Path((b, c)): web::Path<(u8, u8)>, _: D) {}
            ),
        );
        assert!(
            out.contains("let (mut a , web :: Path ((b , c)) , _ ,) = __scopekey_guard . 0 ;"),
            "{out}"
        );
        assert!(
            out.contains("(A , web :: Path < (u8 , u8) > , D ,)"),
            "{out}"
        );
    }

    #[test]
    fn errors_return_the_item_unchanged() {
        let item = quote!(
            #[get("/x")]
            async fn h() -> u8 {
                1
            }
        );
        let out = expand(quote!("Orders:read"), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(out.contains("compile_error"));
        assert!(out.contains("upper-case letter"));
        assert!(!out.contains("__scopekey_guard"));
        // Argument and item mistakes are reported together.
        let out = expand(
            quote!(any()),
            quote!(
                fn h() {}
            ),
        );
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }

    #[test]
    fn the_expansion_includes_the_manifest() {
        // Editing the catalogue must rebuild the crate: a guarded handler
        // includes its crate's Cargo.toml, which puts it in the dep-info
        // Cargo watches (the ui-catalogue test shows the same of
        // `catalogue!()` end to end).
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let included = format!(
            ":: core :: include_bytes ! ({:?})",
            manifest.to_str().expect("a UTF-8 path")
        );
        let out = expand(
            quote!("a:b"),
            quote!(
                async fn h() {}
            ),
        );
        assert!(out.contains(&included), "{out}");
        assert!(catalogue(quote!()).to_string().contains(&included));
    }

    /// A manifest whose path `include_bytes!` cannot name is an error, not
    /// a crate that edits to the catalogue would not rebuild.
    #[cfg(unix)]
    #[test]
    fn a_manifest_path_that_is_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9/Cargo.toml"));
        // Without a catalogue, nothing to watch: no error.
        let without = Manifest {
            path: path.to_owned(),
            catalogue: Ok(None),
        };
        assert!(track(Some(&without)).unwrap().is_empty());
        let manifest = Manifest {
            path: path.to_owned(),
            catalogue: Err("any".into()),
        };
        let err = track(Some(&manifest)).unwrap_err().to_string();
        assert_eq!(
            err,
            "this crate's Cargo.toml is at a path that is not UTF-8 (/tmp/caf\u{fffd}/Cargo.toml): \
             scopekey cannot watch it for edits to the scope catalogue, so the crate would not \
             be rebuilt when they change; move the crate to a UTF-8 path"
        );
        assert!(track(None).unwrap().is_empty());
    }

    #[test]
    fn catalogue_rejects_arguments() {
        assert!(
            catalogue(quote!(x))
                .to_string()
                .contains("takes no arguments")
        );
    }
}
