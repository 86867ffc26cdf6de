use actix_web::HttpResponse;
use scopekey::requires_scope;

struct Orders;

// actix-web calls handlers with extractors only: nothing supplies `self`.
impl Orders {
    #[requires_scope("orders:read")]
    async fn list(&self) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {}
