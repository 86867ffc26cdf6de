use actix_web::HttpResponse;
use scopekey::requires_scope;

// The attribute takes the requirement alone, not `name = value`.
#[requires_scope(scope = "orders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
