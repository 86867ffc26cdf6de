//! Handlers of one expression on one line (no `unused_braces` from the
//! expansion), and generic handlers whose parameters are extractors only
//! once their types are given (a trait without `'static`, a `Query<T>`
//! whose `T` is not bound to `DeserializeOwned`): they compile as they do
//! without the attribute, and are checked where they are registered.
#![deny(warnings)]
#![forbid(unsafe_code)]

use actix_web::{App, HttpResponse, web};
use scopekey::requires_scope;

#[requires_scope("orders:read")]
async fn ping() -> &'static str { "ok" }

#[requires_scope("orders:read")]
async fn formatted(id: web::Path<u64>) -> String { format!("order {id}") }

trait Repo {
    fn count(&self) -> usize;
}

struct Pg;

impl Repo for Pg {
    fn count(&self) -> usize {
        3
    }
}

#[requires_scope("orders:read")]
async fn count<R: Repo>(repo: web::Data<R>) -> HttpResponse {
    HttpResponse::Ok().body(repo.count().to_string())
}

#[requires_scope("orders:read")]
async fn echo<T: std::fmt::Debug>(query: web::Query<T>) -> String {
    format!("{:?}", query.into_inner())
}

fn main() {
    let _app = App::new()
        .app_data(web::Data::new(Pg))
        .route("/ping", web::get().to(ping))
        .route("/orders/{id}", web::get().to(formatted))
        .route("/count", web::get().to(count::<Pg>))
        .route("/echo", web::get().to(echo::<Vec<(String, String)>>));
}
