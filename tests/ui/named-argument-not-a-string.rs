use actix_web::HttpResponse;
use scopekey::requires_scope;

const SCOPE: &str = "orders:read";

// Named, and a constant: the attribute takes the scope string itself.
#[requires_scope(scope = SCOPE)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
