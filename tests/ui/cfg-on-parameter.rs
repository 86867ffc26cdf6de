use actix_web::{HttpRequest, HttpResponse, web};
use scopekey::requires_scope;

// Every parameter's extractor runs: one cannot be compiled out alone.
#[requires_scope("orders:read")]
async fn list_orders(
    #[cfg(debug_assertions)] page: web::Query<u32>,
    req: HttpRequest,
) -> HttpResponse {
    let _ = (page, req);
    HttpResponse::Ok().finish()
}

fn main() {}
