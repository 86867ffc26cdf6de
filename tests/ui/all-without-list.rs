use actix_web::HttpResponse;
use scopekey::requires_scope;

// `all` names a list of requirements: `all("orders:read", "orders.audit:read")`.
#[requires_scope(all)]
async fn audit() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
