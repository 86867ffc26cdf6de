//! Items declared in a handler's body (a `use`, a unit struct, a glob
//! import of variants) are the body's own: they do not change what
//! the parameters' patterns mean, as they do not in a plain handler.
#![deny(warnings)]

use actix_web::web::{Json, Query};
use actix_web::{App, HttpResponse, post};
use scopekey::requires_scope;

#[derive(serde::Deserialize)]
struct NewOrder {
    id: u64,
}

#[post("/orders")]
#[requires_scope("orders:write")]
async fn create_order(Json(order): Json<NewOrder>) -> HttpResponse {
    // `Json` in the body is serde_json's value; in the pattern, actix's
    // extractor.
    use serde_json::Value as Json;
    let echo: Json = serde_json::json!({ "id": order.id });
    HttpResponse::Created().json(echo)
}

#[derive(serde::Deserialize)]
struct Page {
    n: u32,
}

#[post("/orders/{id}")]
#[requires_scope("orders:write")]
async fn update_order(Query(page): Query<Page>, Json(order): Json<NewOrder>) -> HttpResponse {
    // A unit struct and a glob import of variants named as the patterns'
    // paths: in the patterns they would be the struct and the variant.
    struct Query;
    use Shape::*;
    let (Query, Json) = (Query, Json);
    HttpResponse::Ok().body(format!("{} {}", page.n, order.id))
}

enum Shape {
    Json,
}

fn main() {
    let _ = App::new()
        .service(create_order)
        .service(update_order);
}
