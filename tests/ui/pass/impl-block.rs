//! Associated functions in an `impl` block.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, web};
use scopekey::requires_scope;

struct Orders;

impl Orders {
    #[requires_scope("orders:read")]
    async fn list() -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    #[requires_scope(any("orders:admin", "orders:delete"))]
    pub async fn delete(id: web::Path<u64>) -> HttpResponse {
        HttpResponse::Ok().body(format!("deleted {id}"))
    }
}

fn main() {
    let _app = App::new().service(
        web::scope("/orders")
            .route("", web::get().to(Orders::list))
            .route("/{id}", web::delete().to(Orders::delete)),
    );
    let find = |name: &str| {
        scopekey::actix::guarded_handlers()
            .iter()
            .find(|g| g.handler == name)
            .map(|g| g.requirement.to_string())
    };
    assert_eq!(find("list").as_deref(), Some("orders:read"));
    assert_eq!(find("delete").as_deref(), Some("any(orders:admin, orders:delete)"));
}
