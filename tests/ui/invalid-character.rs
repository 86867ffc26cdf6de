use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope("orders:re-fund")]
async fn refund() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
