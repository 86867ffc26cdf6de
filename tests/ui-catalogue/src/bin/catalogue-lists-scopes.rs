//! `catalogue!()` is the `scopes` list of this crate's Cargo.toml, in order,
//! usable in constants.

const SCOPES: &[&str] = scopekey::catalogue!();

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(SCOPES.len() == 5);
const _: () = assert!(same(SCOPES[0], "orders:read"));
const _: () = assert!(same(SCOPES[3], "billing.invoices:read"));
const _: () = assert!(same(SCOPES[4], "reports:*"));

fn main() {
    let at_runtime: &'static [&'static str] = scopekey::catalogue!();
    assert_eq!(at_runtime, SCOPES);
}
