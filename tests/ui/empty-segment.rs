use actix_web::HttpResponse;
use scopekey::requires_scope;

// A dot separates two names: neither side may be empty.
#[requires_scope(any("orders.:read", "orders:read."))]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
