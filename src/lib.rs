//! scopekey: least-privilege API keys for actix-web.
#![doc = "placeholder"]

pub use scopekey_macros::*;
pub use scopekey_runtime::*;

/// actix-web integration: middleware, extractors, management routes.
#[cfg(feature = "actix")]
pub mod actix {
    pub use scopekey_actix::*;
}

#[doc(hidden)]
#[cfg(feature = "actix")]
pub mod __private {
    pub use scopekey_actix::__private::*;
}
