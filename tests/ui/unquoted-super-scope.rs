use actix_web::HttpResponse;
use scopekey::requires_scope;

// Unquoted, and the super-scope: a key may hold `*`, a handler names the
// exact scope it needs.
#[requires_scope(*)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
