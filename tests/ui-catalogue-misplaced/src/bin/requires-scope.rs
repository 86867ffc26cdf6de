//! A misspelt catalogue table is refused where it is used: without the
//! error, the unlisted `ordrs:read` would compile.

use scopekey::requires_scope;

#[requires_scope("ordrs:read")]
async fn list_orders() -> u8 {
    0
}

fn main() {
    let _ = list_orders;
}
