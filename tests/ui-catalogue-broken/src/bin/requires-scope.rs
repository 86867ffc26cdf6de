//! A malformed catalogue is refused where it is used, even by a handler
//! whose own scope is listed correctly.

use scopekey::requires_scope;

#[requires_scope("orders:read")]
async fn list_orders() -> u8 {
    0
}

fn main() {
    let _ = list_orders;
}
