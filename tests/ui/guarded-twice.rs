use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope("orders:read")]
#[requires_scope("orders:write")]
async fn sync_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
