//! Procedural macros for [scopekey](https://docs.rs/scopekey): the
//! `#[requires_scope]` attribute and the `catalogue!()` macro.
//!
//! Use them through the `scopekey` crate (`use scopekey::requires_scope;`):
//! the code they expand to names the runtime as `::scopekey::__private::...`.
//! The examples that compile live there; this crate's docs repeat them as
//! text.
//!
//! Each macro works in three phases, one module each: `ast` turns tokens
//! into a small model that keeps every literal's span, `valid` checks the
//! scopes with the runtime's own parser (`scopekey_core`) and against the
//! crate's scope catalogue (`catalogue`), and `expand` emits the code.
//! Every mistake is a compile error pointing at the offending tokens; the
//! item is then returned unchanged beside the error, so the rest of the crate
//! still sees the handler.

mod ast;
mod catalogue;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Declares the scope an actix-web handler requires; a request whose key
/// does not satisfy it is refused (401 without a valid key, 403 with too
/// few scopes) before the handler's other extractors run or answer (a
/// malformed path or body from a caller without a valid key is 401, not
/// 404 or 400), with or without the `ApiKeyAuth` middleware, and the body
/// never runs.
///
/// ```rust,ignore
/// use actix_web::{get, web, HttpResponse, Responder};
/// use scopekey::requires_scope;
///
/// // One scope.
/// #[requires_scope("orders:write")]
/// async fn create_order(body: web::Json<NewOrder>) -> impl Responder { /* ... */ }
///
/// // `any(...)` needs at least one, `all(...)` needs every one; they nest.
/// #[get("/orders/{id}")]
/// #[requires_scope(any("orders:admin", all("orders:read", "orders.audit:read")))]
/// async fn order(path: web::Path<u64>) -> HttpResponse { /* ... */ }
/// ```
///
/// Checked at compile time, each error pointing at the offending literal:
/// the scope grammar (`resource:action`, lower case, no spaces, one `:`, at
/// most 128 bytes, no wildcard in a requirement), `any`/`all` with at least
/// one requirement, and — when the crate's `Cargo.toml` declares a scope
/// catalogue under `[package.metadata.scopekey] scopes = [...]` — that every
/// scope is listed there (with a "did you mean" suggestion).
///
/// The handler keeps its name, visibility, attributes, generics and return
/// type, and its body sees its arguments as written; the function itself
/// takes them as one hidden extractor (the guard, then the handler's own
/// extractors in order, once the guard has passed), binds them in a block
/// around the body (so the body's own items, say `use serde_json::Value as
/// Json;`, do not change what the patterns mean), and registers the
/// requirement in a link-time list. So tests call a guarded handler through
/// actix-web, and attribute macros that read parameters
/// (`#[tracing::instrument]`) go above this one. It works above or below
/// actix-web's route attributes (`#[get]`, `#[post]`, `#[route]`), with
/// `web::resource(..).route(web::post().to(handler))`, and on associated
/// functions in `impl` blocks.
///
/// # Limitations
///
/// - **No receiver.** A method taking `self`, `&self` or `&mut self` is a
///   compile error pointing at the receiver: actix-web calls a handler with
///   extractors only, so nothing would supply `self`. Make it an associated
///   function and register it as `Type::handler`; reach shared state
///   through an extractor such as `web::Data<T>`.
/// - **No trait-impl methods.** The expansion changes the signature (its
///   arguments become one hidden extractor), so a method in an
///   `impl Trait for Type` block would no longer match the trait's
///   declaration and fail to compile. Guard an inherent associated function
///   or a free function and call the trait method from its body.
/// - **The facade must be named `scopekey`.** The expansion names the
///   runtime by the absolute path `::scopekey::__private::...`, so the crate
///   using the attribute must depend on the facade under its own name
///   (`scopekey = "..."` in `[dependencies]`); a renamed dependency
///   (`keys = { package = "scopekey", ... }`) fails with unresolved paths.
///   `catalogue!()` names nothing from the facade and works either way.
#[proc_macro_attribute]
pub fn requires_scope(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::requires_scope(args.into(), item.into()).into()
}

/// The crate's scope catalogue, as a `&'static [&'static str]`: the
/// `scopes` listed under `[package.metadata.scopekey]` in the calling
/// crate's `Cargo.toml`, in order, or an empty slice when there is none.
///
/// ```rust,ignore
/// const SCOPES: &[&str] = scopekey::catalogue!();
/// ```
///
/// Every entry must be a valid granted scope (`orders:read`, `orders:*` or
/// `*`); anything else is a compile error. So is a
/// `[package.metadata.scopekey]` table without `scopes`, or with any other
/// key (`scope = [...]` asks "did you mean `scopes`?"): a misspelt list
/// must not pass for no catalogue. Nor may a misspelt table
/// (`[package.metadata.scope-key]`, `scopekeys`: "did you mean
/// `[package.metadata.scopekey]`?") or one under `[workspace.metadata]`,
/// which is not read. Editing the list rebuilds the crate.
#[proc_macro]
pub fn catalogue(input: TokenStream) -> TokenStream {
    expand::catalogue(input.into()).into()
}
