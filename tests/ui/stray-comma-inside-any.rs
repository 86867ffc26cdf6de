use actix_web::HttpResponse;
use scopekey::requires_scope;

// Two commas in a row inside `any(...)`: nothing stands between them.
#[requires_scope(any("orders:read",, "orders:admin"))]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
