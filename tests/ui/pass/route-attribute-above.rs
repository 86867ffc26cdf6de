//! actix-web's route attribute above `#[requires_scope]`: actix expands first
//! and keeps our attribute on the function it wraps.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, get, route, web};
use scopekey::requires_scope;

#[get("/orders/{id}")]
#[requires_scope(any("orders:admin", all("orders:read", "orders.audit:read")))]
async fn order(path: web::Path<u64>) -> HttpResponse {
    HttpResponse::Ok().body(path.into_inner().to_string())
}

#[route("/orders", method = "GET", method = "HEAD")]
#[requires_scope("orders:read")]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _app = App::new().service(order).service(list_orders);
    let requirement = |name: &str| {
        scopekey::actix::guarded_handlers()
            .iter()
            .find(|g| g.handler == name)
            .map(|g| g.requirement.to_string())
    };
    assert_eq!(
        requirement("order").as_deref(),
        Some("any(orders:admin, all(orders:read, orders.audit:read))")
    );
    assert_eq!(requirement("list_orders").as_deref(), Some("orders:read"));
}
