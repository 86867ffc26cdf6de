use actix_web::HttpResponse;
use scopekey::requires_scope;

// A suffix glued to the string (a stray character after the closing quote)
// would be dropped without a word; it is refused instead.
#[requires_scope("orders:read"x)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
