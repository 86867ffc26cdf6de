use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope(c"orders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
