//! Without `[package.metadata.scopekey]`, `catalogue!()` is empty and every
//! well-formed scope is accepted.
#![deny(warnings)]

const SCOPES: &[&str] = scopekey::catalogue!();

fn main() {
    assert!(SCOPES.is_empty());
    let at_runtime: &'static [&'static str] = scopekey::catalogue!();
    assert_eq!(at_runtime, SCOPES);
}
