use actix_web::HttpResponse;
use scopekey::requires_scope;

// `any` names a list of requirements: `any("orders:admin", "orders:read")`.
#[requires_scope(any)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
