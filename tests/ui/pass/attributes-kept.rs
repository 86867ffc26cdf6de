//! Doc comments, attributes, visibility, inner attributes, patterns in
//! arguments and many extractors survive the rewrite, without a warning.
#![deny(warnings)]
#![forbid(unsafe_code)]
// Strict lints a crate may opt into: none fires on the expansion.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    unused_results,
    let_underscore_drop,
    single_use_lifetimes,
    trivial_casts
)]

mod handlers {
    use actix_web::{HttpRequest, HttpResponse, web};
    use scopekey::requires_scope;

    /// Lists orders.
    ///
    /// Documented, and kept documented.
    #[requires_scope("orders:read")]
    #[inline]
    #[cfg_attr(test, allow(dead_code))]
    pub(crate) async fn list_orders(
        #[allow(unused_variables)] req: HttpRequest,
        (path, shop): (web::Path<u32>, web::Data<String>),
        mut query: web::Query<Vec<(String, String)>>,
    ) -> HttpResponse {
        #![allow(clippy::let_and_return)]
        query.0.push((shop.to_string(), path.to_string()));
        let response = HttpResponse::Ok().body(format!("{}", query.0.len()));
        response
    }

    /// Seven extractors of its own, which the guard's extractor takes as
    /// one tuple: the crate still passes `clippy -D warnings`.
    #[requires_scope(r"orders:read")]
    #[allow(clippy::type_complexity)]
    pub(crate) async fn seven(
        a: HttpRequest,
        b: web::Path<u8>,
        c: web::Query<Vec<(String, String)>>,
        d: web::Data<u8>,
        e: web::Data<u16>,
        f: web::Data<u32>,
        g: web::Data<u64>,
    ) -> String {
        format!("{} {b} {} {} {} {} {}", a.path(), c.0.len(), *d, *e, *f, *g)
    }
}

fn main() {
    use actix_web::{App, web};
    let _app = App::new()
        .route("/{page}", web::get().to(handlers::list_orders))
        .route("/seven/{b}", web::get().to(handlers::seven));
}
