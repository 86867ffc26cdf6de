use actix_web::HttpResponse;
use scopekey::requires_scope;

const ORDERS_READ: &str = "orders:read";

// Scopes are checked at compile time, so they are written as literals.
#[requires_scope(ORDERS_READ)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _ = ORDERS_READ;
}
