use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope("orders:read" or "orders:admin")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
