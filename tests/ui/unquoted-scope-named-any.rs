use actix_web::HttpResponse;
use scopekey::requires_scope;

// A scope whose resource is `any`, unquoted: not a misused `any(...)`.
#[requires_scope(any:read)]
async fn list_anything() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
