const SCOPES: &[&str] = scopekey::catalogue!("orders:read");

fn main() {
    let _ = SCOPES;
}
