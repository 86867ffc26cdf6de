use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope("orders.2024:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
