//! Handlers taking `HttpRequest` and returning `Result<_, E>`.
#![deny(warnings)]
#![forbid(unsafe_code)]

use std::fmt;

use actix_web::{App, HttpRequest, HttpResponse, ResponseError, delete, web};
use scopekey::requires_scope;

#[derive(Debug)]
struct NotFound;

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no such order")
    }
}

impl ResponseError for NotFound {}

#[delete("/orders/{id}")]
#[requires_scope(any("orders:admin", "orders:delete"))]
pub async fn delete_order(req: HttpRequest, id: web::Path<u64>) -> Result<HttpResponse, NotFound> {
    if *id == 0 {
        return Err(NotFound);
    }
    Ok(HttpResponse::Ok().body(req.path().to_owned()))
}

#[requires_scope("orders:read")]
async fn show(req: HttpRequest) -> actix_web::Result<String> {
    Ok(req.path().to_owned())
}

fn main() {
    let _app = App::new()
        .service(delete_order)
        .route("/show", web::get().to(show));
}
