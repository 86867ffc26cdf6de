use actix_web::HttpResponse;
use scopekey::requires_scope;

// Named, and not a valid scope either: both are said.
#[requires_scope(scope = "Orders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
