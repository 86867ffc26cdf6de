use actix_web::HttpResponse;
use scopekey::requires_scope;

// One comma after the requirement is allowed; a second is a typo, not a
// second requirement.
#[requires_scope("orders:read",,)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
