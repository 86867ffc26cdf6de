#![doc = include_str!("../README.md")]
//!
//! # Reference
//!
//! - Scopes: [`scope`] (grammar, grants, requirements), checked at compile
//!   time by [`requires_scope`] with the same parser the runtime uses.
//! - Keys and their lifecycle: [`ScopeKey`] (create, verify, rotate, revoke,
//!   list, events, lineage, compromise reports), on a [`Store`]:
//!   [`store::sqlite::SqliteStore`] or [`store::postgres::PgStore`].
//! - actix-web: [`actix`] (middleware, extractors, errors, management routes).

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
