//! A plain handler, mounted with `web::resource(..).route(..)`.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, Responder, web};
use scopekey::requires_scope;

#[requires_scope("orders:write")]
async fn create_order(body: web::Json<String>) -> impl Responder {
    HttpResponse::Created().body(body.into_inner())
}

fn main() {
    let _app = App::new().service(web::resource("/orders").route(web::post().to(create_order)));
    let guard = scopekey::actix::guarded_handlers()
        .iter()
        .find(|g| g.handler == "create_order")
        .expect("the handler is registered");
    assert_eq!(guard.requirement.to_string(), "orders:write");
    assert!(!guard.module.is_empty());
}
