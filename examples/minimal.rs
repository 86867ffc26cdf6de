//! The smallest guarded app. `cargo run --example minimal`, then
//! `curl -H "Authorization: Bearer <printed key>" localhost:8080/hello`.
use actix_web::{App, HttpServer, get};
use scopekey::actix::ApiKeyAuth;
use scopekey::{Actor, NewKey, ScopeKey, requires_scope};

#[get("/hello")]
#[requires_scope("greetings:read")]
async fn hello() -> &'static str {
    "hello, key holder\n"
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = ScopeKey::builder_arc(scopekey::open("sqlite::memory:").await?).build();
    keys.migrate().await?;
    let key = keys
        .create(NewKey::new("demo", ["greetings:read"]), Actor::System)
        .await?;
    println!("key: {}", key.plaintext.expose_secret());

    HttpServer::new(move || {
        App::new()
            .app_data(keys.clone())
            .wrap(ApiKeyAuth::new())
            .service(hello)
    })
    .bind("127.0.0.1:8080")?
    .run()
    .await?;
    Ok(())
}
