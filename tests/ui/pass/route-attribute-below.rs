//! actix-web's route attribute below `#[requires_scope]`: we keep it on the
//! rewritten function, and actix expands that.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, post, route};
use scopekey::requires_scope;

#[requires_scope("orders:write")]
#[post("/orders")]
async fn create_order() -> HttpResponse {
    HttpResponse::Created().finish()
}

#[requires_scope(all("orders:read", "orders:write"))]
#[route("/orders/sync", method = "PUT", method = "PATCH")]
async fn sync_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _app = App::new().service(create_order).service(sync_orders);
    let handlers = scopekey::actix::guarded_handlers();
    let find = |name: &str| handlers.iter().find(|g| g.handler == name);
    assert_eq!(find("create_order").unwrap().requirement.to_string(), "orders:write");
    assert_eq!(
        find("sync_orders").unwrap().requirement.to_string(),
        "all(orders:read, orders:write)"
    );
}
