use actix_web::HttpResponse;
use scopekey::requires_scope;

// The requirement is written bare, not in another pair of parentheses.
#[requires_scope(("orders:read"))]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
