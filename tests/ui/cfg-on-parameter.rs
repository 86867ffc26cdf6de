use actix_web::{HttpRequest, HttpResponse, web};
use scopekey::requires_scope;

// Every parameter's extractor runs: one cannot be compiled out alone.
#[requires_scope("orders:read")]
async fn list_orders(
    #[cfg(debug_assertions)] page: web::Query<u32>,
    #[cfg_attr(test, cfg_attr(test, cfg(test)))] size: web::Query<u8>,
    req: HttpRequest,
) -> HttpResponse {
    let _ = (page, size, req);
    HttpResponse::Ok().finish()
}

fn main() {}
