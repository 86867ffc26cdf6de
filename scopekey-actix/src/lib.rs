//! actix-web integration for scopekey.
pub mod error;
pub mod extract;
pub mod guard;

#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{GUARDS, Guard, GuardInfo};
    pub use linkme;
    pub use scopekey_core::StaticRequirement;
}
