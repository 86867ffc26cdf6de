use scopekey::requires_scope;

#[requires_scope("orders:read")]
struct Orders;

fn main() {}
