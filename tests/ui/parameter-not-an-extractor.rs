use actix_web::{App, HttpResponse, get, web};
use scopekey::requires_scope;

// Every parameter of a handler is an extractor (`web::Path<u8>`, not `u8`).
#[get("/orders/{id}")]
#[requires_scope("orders:read")]
async fn order(id: u8) -> HttpResponse {
    HttpResponse::Ok().body(id.to_string())
}

// The same, mounted by hand.
#[requires_scope("orders:read")]
async fn count(req: actix_web::HttpRequest, limit: u32) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {limit}", req.path()))
}

fn main() {
    let _ = App::new()
        .service(order)
        .route("/orders/count", web::get().to(count));
}
