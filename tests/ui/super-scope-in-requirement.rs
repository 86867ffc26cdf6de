use actix_web::HttpResponse;
use scopekey::requires_scope;

// `*` is the super-scope a key may hold, never what a handler requires.
#[requires_scope("*")]
async fn everything() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
