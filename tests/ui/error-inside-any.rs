use actix_web::HttpResponse;
use scopekey::requires_scope;

// Each bad scope is reported where it is written, all of them at once.
#[requires_scope(any("orders:admin", all("orders:read", "Orders.Audit:read"), "orders:*"))]
async fn audit() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
