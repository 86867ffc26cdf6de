use scopekey::requires_scope;

// `refunds:write` is nowhere near a listed scope: no suggestion, just where
// the list lives.
#[requires_scope(any("orders:admin", "refunds:write"))]
async fn refund() -> &'static str {
    "refunded"
}

fn main() {
    let _ = refund();
}
