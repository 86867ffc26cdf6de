use scopekey::requires_scope;

// Cargo.toml lists `orders:write`; a typo is caught, with the likely scope.
#[requires_scope("orders:wirte")]
async fn create_order() -> &'static str {
    "created"
}

fn main() {
    let _ = create_order();
}
