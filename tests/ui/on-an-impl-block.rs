use actix_web::HttpResponse;
use scopekey::requires_scope;

struct Orders;

// On the block, not on the handler inside it.
#[requires_scope("orders:read")]
impl Orders {
    async fn list() -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {}
