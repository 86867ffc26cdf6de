// The README's example serves with actix-web on SQLite: with those
// features trimmed away the crate docs are the reference below alone.
#![cfg_attr(
    all(feature = "sqlite", feature = "actix"),
    doc = include_str!("../README.md")
)]
//!
//! # Reference
//!
//! - Scopes: [`scope`] (grammar, grants, requirements), checked at compile
//!   time by `#[requires_scope]` with the same parser the runtime uses.
//! - Keys and their lifecycle: [`ScopeKey`] (create, verify, rotate, revoke,
//!   list, events, lineage, compromise reports, pruning old `auth.failed`
//!   events), on a [`Store`].
#![cfg_attr(
    feature = "sqlite",
    doc = "- SQLite, the embedded default: [`store::sqlite::SqliteStore`]."
)]
#![cfg_attr(
    feature = "postgres",
    doc = "- PostgreSQL: [`store::postgres::PgStore`]."
)]
#![cfg_attr(
    feature = "actix",
    doc = "- actix-web: [`actix`] (middleware, extractors, errors, management \
           routes) and [`requires_scope`]."
)]
// The README says which features there are; without it, this does.
#![cfg_attr(
    not(all(feature = "sqlite", feature = "actix")),
    doc = "\nFeatures (all on by default): `sqlite`, `postgres`, `actix`, `webhooks`."
)]

pub use scopekey_macros::catalogue;
#[cfg(feature = "actix")]
#[doc = include_str!("../docs/requires_scope.md")]
pub use scopekey_macros::requires_scope;
pub use scopekey_runtime::*;

/// actix-web integration: middleware, extractors, problem+json errors and the
/// prebuilt management routes.
#[cfg(feature = "actix")]
pub mod actix {
    pub use scopekey_actix::*;
}

#[doc(hidden)]
#[cfg(feature = "actix")]
pub mod __private {
    pub use scopekey_actix::__private::*;
}
