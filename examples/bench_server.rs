//! The load benchmark's server: one trivial handler served twice, at
//! `/plain` with no scopekey code on its path, and at `/guarded` behind the
//! [`ApiKeyAuth`] middleware and `#[requires_scope("bench:read")]`, the way
//! an application wires it. `bash benches/load/run.sh` builds it in release
//! mode, drives both routes with `wrk` and compares them; the figures are in
//! `docs/performance.md`.
//!
//! ```text
//! cargo run --release --example bench_server
//! # stdout, one line each, then it serves:
//! # address: 127.0.0.1:41327
//! # key: sk_...
//! ```
//!
//! Environment:
//! - `BIND`: `127.0.0.1:0` unless set (port 0: the system picks a free one,
//!   printed on the `address:` line).
//! - `DATABASE_URL`: `sqlite::memory:` unless set; `postgres://...` works too
//!   (with the cache warm the store is read about once a second).
//! - `BENCH_WORKERS`: actix-web worker threads (default 1: on a 2-core machine
//!   the load generator needs the other core).
//! - `BENCH_MAX_SECONDS`: the server stops by itself after this long
//!   (default 300), so an interrupted benchmark never leaves it behind.
//!
//! SIGINT or SIGTERM stops it at once.
//!
//! `cargo run --release --example bench_server -- --in-process` serves no
//! socket: it calls the same app directly, many times per route, and prints
//! the time per request, which isolates the server-side cost of
//! authentication from the network and the load generator (`BENCH_CALLS`
//! calls per route and round, 200,000 unless set; `BENCH_ONLY=guarded`
//! runs only the routes whose label contains the text).

use std::io::Write;
use std::time::Duration;

use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, HttpResponse, HttpServer, test, web};
use scopekey::actix::{ApiKeyAuth, Background};
use scopekey::{Actor, NewKey, ScopeKey, requires_scope};

/// The response both routes send.
fn body() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// No key, no middleware: the baseline.
async fn plain() -> HttpResponse {
    body()
}

/// The same handler behind a scope check.
#[requires_scope("bench:read")]
async fn guarded() -> HttpResponse {
    body()
}

fn env_number(name: &str, default: u64) -> Result<u64, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("{name}={v:?} is not a number: {e}").into()),
        Err(_) => Ok(default),
    }
}

/// The app: `/plain` outside scopekey, `/guarded` behind the middleware and
/// the scope check.
fn app(
    keys: ScopeKey,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(keys)
        .route("/plain", web::get().to(plain))
        .service(
            web::resource("/guarded")
                .wrap(ApiKeyAuth::new())
                .route(web::get().to(guarded)),
        )
}

/// Calls the app directly: no socket, no HTTP parsing; prints the mean time
/// per request for each route, three rounds each.
async fn in_process(keys: ScopeKey, key: &str) -> Result<(), Box<dyn std::error::Error>> {
    // BENCH_CALLS: fewer calls, e.g. under `valgrind --tool=callgrind`.
    let calls = u32::try_from(env_number("BENCH_CALLS", 200_000)?)?.max(1);
    let service = test::init_service(app(keys)).await;
    let bearer = format!("Bearer {key}");
    let cases: [(&str, &str, Option<&str>); 3] = [
        ("/plain", "/plain", None),
        ("/guarded", "/guarded", Some(&bearer)),
        ("/plain + same header", "/plain", Some(&bearer)),
    ];
    // BENCH_ONLY: only the cases whose label contains it (e.g. `guarded`).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for round in 1..=3 {
        for (label, path, header) in cases {
            if !label.contains(only.as_str()) {
                continue;
            }
            let start = Instant::now();
            for _ in 0..calls {
                let mut req = test::TestRequest::get().uri(path);
                if let Some(h) = header {
                    req = req.insert_header(("Authorization", h));
                }
                let res = service.call(req.to_request()).await?;
                if !res.status().is_success() {
                    return Err(format!("{label} answered {}", res.status()).into());
                }
            }
            let per_call = start.elapsed().as_secs_f64() * 1e9 / f64::from(calls);
            println!("round {round}: {label:<22} {per_call:>7.0} ns per request");
        }
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".to_owned());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let workers = usize::try_from(env_number("BENCH_WORKERS", 1)?)?.max(1);
    let max_seconds = env_number("BENCH_MAX_SECONDS", 300)?;

    let keys = ScopeKey::builder_arc(scopekey::open(&database_url).await?).build();
    keys.migrate().await?;
    let key = keys
        .create(NewKey::new("load benchmark", ["bench:read"]), Actor::System)
        .await?;
    if std::env::args().any(|a| a == "--in-process") {
        return in_process(keys, key.plaintext.expose_secret()).await;
    }
    let background = Background::start(&keys).await?;

    let app_keys = keys.clone();
    let server = HttpServer::new(move || app(app_keys.clone()))
        .workers(workers)
        .shutdown_timeout(1)
        .bind(&bind)?;
    let address = server
        .addrs()
        .first()
        .copied()
        .ok_or("the server bound no address")?;
    let server = server.run();
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "address: {address}")?;
        writeln!(stdout, "key: {}", key.plaintext.expose_secret())?;
        stdout.flush()?;
    }

    let handle = server.handle();
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(Duration::from_secs(max_seconds)).await;
        eprintln!("bench_server: BENCH_MAX_SECONDS={max_seconds} reached; stopping");
        handle.stop(false).await;
    });
    server.await?;
    background.shutdown().await?;
    Ok(())
}
