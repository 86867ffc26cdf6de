use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope(one_of("orders:admin", "orders:delete"))]
async fn delete_order() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
