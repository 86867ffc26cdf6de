//! `catalogue!()` of a misspelt catalogue table: an error, not an empty
//! list (which the runtime reads as no catalogue at all).

const SCOPES: &[&str] = scopekey::catalogue!();

fn main() {
    assert!(SCOPES.is_empty());
}
