use actix_web::HttpResponse;
use scopekey::requires_scope;

// Several scopes are written with `all(...)` or `any(...)`, not as an array.
#[requires_scope(["orders:read", "orders:write"])]
async fn update_order() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
