use actix_web::HttpResponse;
use scopekey::requires_scope;

// A handler names the exact scope it needs; wildcards belong to keys.
#[requires_scope("orders:*")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
