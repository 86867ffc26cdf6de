use actix_web::HttpResponse;
use scopekey::requires_scope;

// Unquoted, and a wildcard: quoting it would not help, a handler names the
// exact scope it needs.
#[requires_scope(orders:*)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
