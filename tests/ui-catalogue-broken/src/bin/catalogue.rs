//! `catalogue!()` of a malformed catalogue: an error, not an empty list.

const SCOPES: &[&str] = scopekey::catalogue!();

fn main() {
    assert!(SCOPES.is_empty());
}
