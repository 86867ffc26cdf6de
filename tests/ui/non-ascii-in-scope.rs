use actix_web::HttpResponse;
use scopekey::requires_scope;

// The `о` of `оrders` is Cyrillic: the message shows the character and its
// code point.
#[requires_scope("оrders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
