//! The demo service: a small orders API guarded by scoped API keys, with the
//! whole key-management API mounted beside it.
//!
//! ```text
//! cargo run --example orders_api
//! # stdout, on first start only:  admin key: sk_...
//! curl localhost:8080/health
//! curl -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
//!      -d '{"name":"reader","scopes":["orders:read"]}' localhost:8080/api-keys
//! curl -H "Authorization: Bearer $READER" localhost:8080/orders
//! ```
//!
//! Environment:
//! - `DATABASE_URL`: `sqlite://scopekey-demo.db` (in the working folder,
//!   created with its schema on first start, readable by its owner only)
//!   unless set; `postgres://...`
//!   works the same. Not an in-memory SQLite database (`sqlite::memory:`):
//!   the notifier opens the store again, and would find another, empty one.
//! - `BIND`: `127.0.0.1:8080` unless set. An empty variable counts as
//!   unset; a setting that does not work is named in the error.
//! - `SCOPEKEY_WEBHOOK_URL`, `SCOPEKEY_WEBHOOK_SECRET` (`whsec_<base64>`
//!   of at least 24 bytes, e.g. `whsec_$(openssl rand -base64 32)`; a
//!   shorter one stops the start, with or without a URL),
//!   `SCOPEKEY_NOTIFIER_INTERVAL_SECONDS` (default 60): the expiry notifier
//!   and its signed webhooks; also `SCOPEKEY_NOTICE_THRESHOLDS` (`14d,1d`)
//!   and `SCOPEKEY_WEBHOOK_EVENTS` (`key.expiring,key.compromised` unless
//!   set or empty; `all` adds the other lifecycle events; a list naming
//!   none, such as `,`, is refused at start; read only with
//!   `SCOPEKEY_WEBHOOK_URL` set).
//! - `SCOPEKEY_ROTATION_SECRET` (`whsec_<base64>`, optional): enables
//!   automatic rotation. Keys created with a `rotation_webhook_url` are then
//!   rotated by the notifier when due, their successors posted to that URL
//!   signed with the key's own secret (returned once at creation as
//!   `rotation_webhook_secret`); the demo then needs the system's CA
//!   certificates (its notifier refuses to start without them).
//!   `SCOPEKEY_ROTATION_WEBHOOK_PORTS` (`443,8443`; 443 alone unless set):
//!   the ports those URLs may name.
//! - `SCOPEKEY_KEY_PREFIX` (default `sk`) and `SCOPEKEY_PEPPER` (optional):
//!   the key format, read as the `scopekey` CLI reads them, so keys made by
//!   either work in both.
//! - `RUST_LOG`: log filter (default `info`); logs go to standard error and
//!   never carry a key.
//!
//! With no key in the store, the first start creates an admin key (`*`)
//! and prints it once, as the only line on standard output. SIGTERM stops
//! the server gracefully, SIGINT and SIGQUIT at once (as actix-web's own
//! handling does); either way the demo then writes the pending last-used
//! times, then gives the notifier's pass in progress five seconds. A
//! second signal while the demo stops ends it at once, without writing
//! them.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, delete, get, post, route, web};
use scopekey::actix::{ApiError, ApiKeyAuth, Background, json_config, path_config, query_config};
use scopekey::{Actor, KeyFormat, NewKey, ScopeKey, requires_scope};
use scopekey::{Notifier, NotifierConfig, Outbox};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// One order.
#[derive(Debug, Clone, Serialize)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
}

/// What `POST /orders` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    item: String,
    quantity: u32,
}

/// The orders, in memory.
#[derive(Debug, Default)]
struct Orders {
    next_id: u64,
    items: Vec<Order>,
}

type Shared = web::Data<Mutex<Orders>>;

fn lock(orders: &Shared) -> MutexGuard<'_, Orders> {
    // A panic while holding the lock cannot leave the list half-written.
    orders.lock().unwrap_or_else(|e| e.into_inner())
}

// HEAD too: load balancers' health checks often use it.
#[route("/health", method = "GET", method = "HEAD")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[get("/orders")]
#[requires_scope("orders:read")]
async fn list_orders(orders: Shared) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "items": lock(&orders).items }))
}

#[post("/orders")]
#[requires_scope("orders:write")]
async fn create_order(orders: Shared, body: web::Json<NewOrder>) -> HttpResponse {
    let NewOrder { item, quantity } = body.into_inner();
    let mut orders = lock(&orders);
    orders.next_id += 1;
    let order = Order {
        id: orders.next_id,
        item,
        quantity,
    };
    orders.items.push(order.clone());
    HttpResponse::Created().json(order)
}

#[delete("/orders/{id}")]
#[requires_scope(any("orders:admin", "orders:delete"))]
async fn delete_order(orders: Shared, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut orders = lock(&orders);
    let before = orders.items.len();
    orders.items.retain(|o| o.id != id);
    if orders.items.len() == before {
        return Err(ApiError::NotFound(format!("no order {id}")));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Unset or empty: the default (as the CLI reads DATABASE_URL).
    let setting = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let database_url = setting("DATABASE_URL", "sqlite://scopekey-demo.db");
    let bind = setting("BIND", "127.0.0.1:8080");
    // The notifier opens the store a second time: an in-memory SQLite
    // database would be another, empty one.
    if scopekey::store::sqlite::is_in_memory(&database_url) {
        return Err(
            "DATABASE_URL: the demo needs a store it can open twice (its notifier \
                    has its own connections): a SQLite file or PostgreSQL, not an in-memory \
                    SQLite database"
                .into(),
        );
    }

    // The same key format as the `scopekey` CLI: SCOPEKEY_KEY_PREFIX and
    // SCOPEKEY_PEPPER, so keys made by either work in both.
    let store = scopekey::open(&database_url)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let mut builder = ScopeKey::builder_arc(store).key_format(KeyFormat::from_env()?);
    // SCOPEKEY_ROTATION_SECRET enables automatic rotation for keys created
    // with a `rotation_webhook_url`.
    for secret in scopekey::notify::rotation_secrets_from_env()? {
        builder = builder.rotation_webhook_secret(secret);
    }
    // SCOPEKEY_ROTATION_WEBHOOK_PORTS: the ports those webhooks may name
    // (443 alone unless set), as the CLI reads it.
    if let Some(ports) = scopekey::notify::rotation_webhook_ports_from_env()? {
        builder = builder.rotation_webhook_ports(ports);
    }
    let keys = builder.build();
    keys.migrate().await?;
    let background = Background::start(&keys).await?;
    // Expiry notices (`key.expiring`, 14 days ahead unless configured) go to
    // the audit log, and to SCOPEKEY_WEBHOOK_URL when it is set.
    let notifier = Notifier::new(
        keys.clone(),
        Outbox::connect(&database_url).await?,
        NotifierConfig::from_env()?,
    )?;
    notifier.register().await?;
    let notifier = notifier.spawn();

    let orders: Shared = web::Data::new(Mutex::new(Orders::default()));
    let app_keys = keys.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_keys.clone())
            .app_data(orders.clone())
            .app_data(json_config())
            .app_data(path_config())
            .app_data(query_config())
            .wrap(ApiKeyAuth::new())
            .service(health)
            .service(list_orders)
            .service(create_order)
            .service(delete_order)
            .configure(scopekey::actix::routes)
    })
    // The demo listens for the stop signals itself (below), from before it
    // prints the admin key.
    .disable_signals()
    .bind(&bind)
    .map_err(|e| format!("BIND={bind}: {e} (an address and port, such as 127.0.0.1:8080)"))?;
    for addr in server.addrs() {
        tracing::info!("listening on http://{addr}");
    }
    // Listening for the stop signals now, before the admin key is printed:
    // a harness that stops the demo as soon as it has read the key gets a
    // clean stop, not the default action of a signal nobody handles.
    let mut signals = StopSignals::listen()?;
    // Only into an empty store, atomically: instances starting together on
    // one fresh database create one admin key between them. Made once
    // everything that could fail has succeeded (a key made and then lost to
    // a failed start could never be printed again), and printed with the
    // socket listening, so whoever reads it can use it at once.
    let first = keys
        .create_first(NewKey::new("admin", ["*"]), Actor::System)
        .await?;
    if first.is_none() {
        tracing::info!(
            "the store already holds keys: no admin key printed (the first start printed \
             one; another: `{}`)",
            cli_hint(&database_url, "keys create --name admin --scope '*'")
        );
    }
    if let Some(admin) = first {
        let mut stdout = std::io::stdout().lock();
        let shown = writeln!(stdout, "admin key: {}", admin.plaintext.expose_secret())
            .and_then(|()| stdout.flush());
        tracing::info!(key_id = %admin.key.id, hint = %admin.key.hint, "created the first admin key");
        if let Err(e) = shown {
            // Standard output is a pipe nobody reads, a full disk, or
            // failing: the key exists but was never shown, and cannot be
            // shown again. Say so, and how to get another, then serve on.
            tracing::error!(
                error = %e,
                key_id = %admin.key.id,
                "could not print the admin key; revoke it and make another with `{}` and `{}`",
                cli_hint(&database_url, &format!("keys revoke {}", admin.key.id)),
                cli_hint(&database_url, "keys create --name admin --scope '*'"),
            );
        }
    }
    // Returns after SIGTERM once in-flight requests are done (at most the
    // server's shutdown timeout, 30 s), after SIGINT or SIGQUIT at once; a
    // second signal while a graceful stop waits ends it at once too.
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let graceful = signals.next().await;
        actix_web::rt::spawn(handle.stop(graceful));
        // Until the demo has exited, a further signal ends it at once. (The
        // server takes its commands in turn: a second stop would wait for
        // the first.)
        signals.next().await;
        tracing::warn!("stopping without writing the pending last-used times");
        std::process::exit(130);
    });
    server.await?;

    // The last-used times first: they are lost if the demo is killed, while
    // an unfinished notifier pass is taken up again by the next start.
    tracing::info!("shutting down: writing last-used times");
    if let Err(e) = background.shutdown().await {
        tracing::warn!(error = %e, "could not write the last-used times");
    }
    // A pass waiting on a slow receiver is cut short: its claimed
    // deliveries are retried once their lease expires.
    if !notifier.shutdown_within(Duration::from_secs(5)).await {
        tracing::info!("the notifier's pass was cut short; its deliveries will be retried");
    }
    Ok(())
}

/// The signals that stop the demo, listened for from its creation on.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    quit: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl StopSignals {
    #[cfg(unix)]
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    #[cfg(windows)]
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            ctrl_c: tokio::signal::windows::ctrl_c()?,
        })
    }

    /// The next signal: whether it asks for a graceful stop (SIGTERM, as
    /// actix-web does; SIGINT and SIGQUIT stop at once).
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => { tracing::info!("SIGTERM: stopping gracefully"); true }
                _ = self.interrupt.recv() => { tracing::info!("SIGINT: stopping"); false }
                _ = self.quit.recv() => { tracing::info!("SIGQUIT: stopping"); false }
            }
        }
        #[cfg(windows)]
        {
            self.ctrl_c.recv().await;
            tracing::info!("Ctrl-C: stopping");
            false
        }
    }
}

/// The command line that runs `command` with the CLI from this workspace
/// against the demo's store, for a log line: a SQLite file's URL written
/// out, any other left to the reader's `DATABASE_URL` (a server's URL may
/// hold a password, in its user information or its query).
fn cli_hint(database_url: &str, command: &str) -> String {
    let url = if database_url.starts_with("sqlite:") {
        format!("'{database_url}'")
    } else {
        "\"$DATABASE_URL\"".to_owned()
    };
    format!("cargo run -p scopekey-cli -- --database-url {url} {command}")
}
