//! An attribute macro that reads a handler's parameters goes above
//! `#[requires_scope]` (docs/requires_scope.md, "Where it goes"): it
//! expands first and sees them as written. (Below, `#[tracing::instrument]`
//! sees only the hidden extractor and refuses `skip(data)`.)

use actix_web::{App, HttpResponse, test, web};
use scopekey::requires_scope;

#[tracing::instrument(skip(data))]
#[requires_scope("orders:read")]
async fn order(data: web::Data<u32>, id: web::Path<u64>) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {id}", data.get_ref()))
}

/// It compiles, the guard still answers first (no key: 401; a key without
/// the scope: 403), and a key holding the scope reaches the handler, its
/// parameters intact.
#[actix_web::test]
async fn instrument_above_the_guard() {
    let store = scopekey::store::sqlite::SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap();
    let keys = scopekey::ScopeKey::builder(store).build();
    keys.migrate().await.unwrap();
    let reader = keys
        .create(
            scopekey::NewKey::new("reader", ["orders:read"]),
            scopekey::Actor::System,
        )
        .await
        .unwrap();
    let other = keys
        .create(
            scopekey::NewKey::new("other", ["billing:read"]),
            scopekey::Actor::System,
        )
        .await
        .unwrap();
    let app = test::init_service(
        App::new()
            .app_data(keys)
            .app_data(web::Data::new(7u32))
            .route("/orders/{id}", web::get().to(order)),
    )
    .await;
    let res =
        test::call_service(&app, test::TestRequest::get().uri("/orders/1").to_request()).await;
    assert_eq!(res.status(), 401);

    let get = |key: &scopekey::CreatedKey| {
        test::TestRequest::get()
            .uri("/orders/42")
            .insert_header((
                "Authorization",
                format!("Bearer {}", key.plaintext.expose_secret()),
            ))
            .to_request()
    };
    let res = test::call_service(&app, get(&other)).await;
    assert_eq!(res.status(), 403);
    let res = test::call_service(&app, get(&reader)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "7 42");
}
