//! A trailing comma, after the requirement or inside `any(...)` and
//! `all(...)`, is accepted as Rust accepts it in a call (rustfmt writes one
//! when a long requirement is split over lines).
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, web};
use scopekey::requires_scope;

#[requires_scope("orders:read",)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[requires_scope(any(
    "orders:admin",
    all("orders:read", "orders.audit:read",),
))]
async fn audit_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _app = App::new()
        .route("/orders", web::get().to(list_orders))
        .route("/orders/audit", web::get().to(audit_orders));
    let requirement = |name: &str| {
        scopekey::actix::guarded_handlers()
            .iter()
            .find(|g| g.handler == name)
            .map(|g| g.requirement.to_string())
    };
    assert_eq!(requirement("list_orders").as_deref(), Some("orders:read"));
    assert_eq!(
        requirement("audit_orders").as_deref(),
        Some("any(orders:admin, all(orders:read, orders.audit:read))")
    );
}
