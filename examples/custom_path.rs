//! The management routes under a base path of your choosing, with a realm
//! of your own in the challenges.
//!
//! ```text
//! cargo run --example custom_path
//! curl -H "Authorization: Bearer <printed key>" localhost:8080/admin/keys/self
//! curl -i localhost:8080/admin/keys          # 401, WWW-Authenticate: Bearer realm="backoffice"
//! ```

use actix_web::{App, HttpServer};
use scopekey::actix::{ApiKeyAuth, AuthConfig, Background, routes_at};
use scopekey::{Actor, NewKey, ScopeKey};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".to_owned());
    let keys = ScopeKey::builder_arc(scopekey::open(&database_url).await?).build();
    keys.migrate().await?;
    // The last-used flusher and, on PostgreSQL, the change listener.
    let background = Background::start(&keys).await?;
    let first = keys
        .create_first(NewKey::new("admin", ["api_keys:*"]), Actor::System)
        .await?;
    if let Some(admin) = first {
        println!("admin key: {}", admin.plaintext.expose_secret());
    }

    let app_keys = keys.clone();
    HttpServer::new(move || {
        App::new()
            .app_data(app_keys.clone())
            .app_data(AuthConfig::new().realm("backoffice"))
            .wrap(ApiKeyAuth::new())
            .configure(routes_at("/admin/keys"))
    })
    .bind("127.0.0.1:8080")?
    .run()
    .await?;
    background.shutdown().await?; // writes pending last-used times
    Ok(())
}
