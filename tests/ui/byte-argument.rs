use actix_web::HttpResponse;
use scopekey::requires_scope;

// A byte literal is no scope string.
#[requires_scope(b'o')]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
