use actix_web::HttpResponse;
use scopekey::requires_scope;

trait Orders {
    #[requires_scope("orders:read")]
    async fn list_orders() -> HttpResponse;
}

fn main() {}
