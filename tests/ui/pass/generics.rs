//! Generic handlers, instantiated at the route.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, web};
use scopekey::requires_scope;

trait Catalog: 'static {
    fn count(&self) -> usize;
}

struct Memory(Vec<u64>);

impl Catalog for Memory {
    fn count(&self) -> usize {
        self.0.len()
    }
}

#[requires_scope("orders:read")]
async fn count<C: Catalog>(catalog: web::Data<C>) -> HttpResponse {
    HttpResponse::Ok().body(catalog.count().to_string())
}

#[requires_scope("orders:read")]
async fn count_where<C>(catalog: web::Data<C>, _filter: web::Query<Vec<(String, String)>>) -> String
where
    C: Catalog,
{
    catalog.count().to_string()
}

fn main() {
    let _app = App::new()
        .app_data(web::Data::new(Memory(vec![1, 2])))
        .route("/count", web::get().to(count::<Memory>))
        .route("/count_where", web::get().to(count_where::<Memory>));
}
