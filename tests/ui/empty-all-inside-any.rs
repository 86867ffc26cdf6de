use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope(any("orders:admin", all()))]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
