//! The management routes' scopes belong to every catalogue, as in the
//! runtime: a handler may require them though Cargo.toml does not list them.
//! (A handler that passes every check expands to code that needs the whole
//! `scopekey` facade, which this fixture leaves out; so the typo beside
//! them fails it, and the one error, for the typo alone, shows that
//! `api_keys:read`, `api_keys:write` and `api_keys:revoke` passed.)
use scopekey::requires_scope;

#[requires_scope(any(
    "api_keys:read",
    all("api_keys:write", "api_keys:revoke"),
    "orders:wirte"
))]
async fn manage_keys() -> &'static str {
    "ok"
}

fn main() {
    let _ = manage_keys();
}
