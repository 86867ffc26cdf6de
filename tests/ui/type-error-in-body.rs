use actix_web::HttpResponse;
use scopekey::requires_scope;

// Mistakes in the handler's own code are reported in that code.
#[requires_scope("orders:read")]
async fn list_orders() -> HttpResponse {
    "orders"
}

fn main() {}
