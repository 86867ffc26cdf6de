use actix_web::HttpResponse;
use scopekey::requires_scope;

// Unquoted and invalid: quoting alone would not fix it, so the error says
// what is wrong with the scope instead of offering "Orders:read".
#[requires_scope(Orders:read)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[requires_scope(orders:re-fund)]
async fn refund_order() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
