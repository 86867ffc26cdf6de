use actix_web::HttpResponse;
use scopekey::requires_scope;

// 33 levels of `any(...)`: one more than the runtime's parser reads back.
#[requires_scope(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any(any("orders:read"))))))))))))))))))))))))))))))))))]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
