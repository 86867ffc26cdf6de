//! Fills a store with many keys, then measures what should not grow with
//! their number: verification on a cache miss, the first page of
//! `GET /api-keys` and of the audit log, and the memory of a runtime whose
//! clients present a million distinct keys. The figures and the commands
//! are in `docs/performance.md`.
//!
//! ```text
//! cargo run --release --example seed -- seed    --database-url URL [--keys 1000000]
//! cargo run --release --example seed -- measure --database-url URL
//! cargo run --release --example seed -- memory  --database-url URL [--keys 1000000]
//!                                                [--cache-capacity 10000] [--concurrency 8]
//! cargo run --release --example seed -- compare --database-url SMALL --large LARGE
//!                                                [--rounds 20] [--warmup 0] [--auth-failures 0]
//! cargo run --release --example seed -- drop    --database-url URL
//! ```
//!
//! - `seed` migrates the store and inserts `--keys` keys (hashes of random
//!   bytes: no plaintext exists for them) and one `key.created` event per
//!   key, with one SQL statement each, and prints the elapsed time. On
//!   PostgreSQL it creates the database first if it does not exist (the
//!   name may hold only `a-z`, `0-9` and `_`). It refuses a store that
//!   already holds keys unless given `--append`.
//! - `measure` creates an admin key and 200 probe keys, then times
//!   verification on a cache miss (the probe keys, and never-seen keys that
//!   walk to random leaves of the hash index), the first pages of the
//!   management routes through the real actix-web service (in process, no
//!   socket), and prints the query plans of those statements.
//! - `memory` verifies `--keys` distinct random keys of valid format (so each
//!   one reaches the store and is cached as unknown) against a runtime whose
//!   cache holds `--cache-capacity` entries for an hour (so only the capacity
//!   can bound it), printing the process's anonymous memory (heap) as it
//!   goes.
//! - `compare` does `measure`'s cache-miss timing on two stores in one
//!   process, alternating between them in blocks of 200 lookups
//!   (`--rounds` blocks each), so that both see the same machine: what a
//!   shared, noisy machine does to the figures lands on both sides of the
//!   ratio alike. `--warmup N` first sends each store N never-seen keys,
//!   untimed, as traffic would; `--auth-failures N` lets each runtime write
//!   up to N `auth.failed` events a second, as a server does (10 by
//!   default there): commits, which reset other connections' caches. It
//!   prints each store's p50, p90, p99, minor page faults a miss (Linux),
//!   and the large/small ratio of the p50s.
//! - `drop` removes the database (PostgreSQL) or the file (SQLite).
//!
//! URLs: `sqlite://path/to/file.db` or `postgres://user@host:port/name`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::{App, test};
use scopekey::actix::ApiKeyAuth;
use scopekey::{Actor, KeyFormat, NewKey, ScopeKey};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Row, SqliteConnection};

type Error = Box<dyn std::error::Error>;

/// How many probe keys `measure` creates (real keys, with plaintexts).
const PROBES: usize = 200;
/// Timed samples per measured case.
const SAMPLES: usize = 1_000;
/// Timed requests per management route.
const REQUESTS: usize = 100;
/// The hint every seeded key carries, so seeded rows are recognisable.
const SEED_HINT: &str = "sk_…seed";

#[derive(Debug)]
struct Args {
    command: String,
    url: String,
    keys: u64,
    cache_capacity: u64,
    concurrency: usize,
    append: bool,
    large: String,
    rounds: usize,
    warmup: usize,
    auth_failures: u32,
}

fn usage() -> Error {
    "usage: seed <seed|measure|memory|compare|drop> --database-url URL [--keys N] [--append] \
     [--cache-capacity N] [--concurrency N] [--large URL] [--rounds N] [--warmup N] [--auth-failures N]"
        .into()
}

fn parse_args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or_else(usage)?;
    if !["seed", "measure", "memory", "compare", "drop"].contains(&command.as_str()) {
        return Err(usage());
    }
    let mut args = Args {
        command,
        url: std::env::var("DATABASE_URL").unwrap_or_default(),
        keys: 1_000_000,
        cache_capacity: 10_000,
        concurrency: 8,
        append: false,
        large: String::new(),
        rounds: 20,
        warmup: 0,
        auth_failures: 0,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.url = value()?,
            "--keys" => args.keys = value()?.replace('_', "").parse()?,
            "--cache-capacity" => args.cache_capacity = value()?.replace('_', "").parse()?,
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--append" => args.append = true,
            "--large" => args.large = value()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--warmup" => args.warmup = value()?.replace('_', "").parse()?,
            "--auth-failures" => args.auth_failures = value()?.parse()?,
            _ => return Err(usage()),
        }
    }
    if args.url.is_empty() {
        return Err("give --database-url (or set DATABASE_URL)".into());
    }
    Ok(args)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn backend(url: &str) -> Result<Backend, Error> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(format!("unsupported database URL: {url}").into())
    }
}

#[actix_web::main]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
    match args.command.as_str() {
        "seed" => seed(&args).await,
        "measure" => measure(&args).await,
        "memory" => memory(&args).await,
        "compare" => compare(&args).await,
        _ => drop_database(&args.url).await,
    }
}

// ---------------------------------------------------------------- databases

/// The database name of a PostgreSQL URL, and the URL of the maintenance
/// database `postgres` on the same server.
fn pg_names(url: &str) -> Result<(String, String), Error> {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let slash = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .ok_or("the PostgreSQL URL names no database")?;
    let name = &base[slash + 1..];
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("database name `{name}`: use only a-z, 0-9 and _").into());
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok((
        name.to_owned(),
        format!("{}/postgres{query}", &base[..slash]),
    ))
}

async fn create_pg_database(url: &str) -> Result<(), Error> {
    let (name, admin_url) = pg_names(url)?;
    let mut admin = PgConnection::connect(&admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        // `name` was checked to be [a-z0-9_]+ above.
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        println!("created database {name}");
    }
    Ok(())
}

async fn drop_database(url: &str) -> Result<(), Error> {
    match backend(url)? {
        Backend::Postgres => {
            let (name, admin_url) = pg_names(url)?;
            let mut admin = PgConnection::connect(&admin_url).await?;
            // `name` was checked to be [a-z0-9_]+.
            admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await?;
            println!("dropped database {name}");
        }
        Backend::Sqlite => {
            let path = sqlite_path(url);
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{path}{suffix}");
                match std::fs::remove_file(&file) {
                    Ok(()) => println!("removed {file}"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{file}: {e}").into()),
                }
            }
        }
    }
    Ok(())
}

fn sqlite_path(url: &str) -> &str {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.split('?').next().unwrap_or(rest)
}

async fn runtime(url: &str) -> Result<(ScopeKey, Arc<dyn scopekey::Store>), Error> {
    runtime_with(url, 0).await
}

/// A runtime over `url` writing at most `auth_failures` `auth.failed`
/// events a second (0 keeps the audit log out of never-seen keys' timing;
/// a server's default is 10, and each is a commit that other connections'
/// page caches notice).
async fn runtime_with(
    url: &str,
    auth_failures: u32,
) -> Result<(ScopeKey, Arc<dyn scopekey::Store>), Error> {
    let store = scopekey::open(url).await?;
    let keys = ScopeKey::builder_arc(Arc::clone(&store))
        .auth_failures_per_second(auth_failures)
        .cache_ttl(Duration::from_secs(3600))
        .build();
    keys.migrate().await?;
    Ok((keys, store))
}

// ---------------------------------------------------------------- seed

async fn seed(args: &Args) -> Result<(), Error> {
    let backend = backend(&args.url)?;
    if backend == Backend::Postgres {
        create_pg_database(&args.url).await?;
    }
    let (keys, _) = runtime(&args.url).await?;
    if !keys.is_empty().await? && !args.append {
        return Err("the store already holds keys; pass --append to add more".into());
    }
    let n = i64::try_from(args.keys)?;
    let now_us = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)?;
    // One key a millisecond, the last one now: pages are newest first.
    let first_us = now_us - n * 1_000;
    println!(
        "seeding {n} keys and {n} key.created events into {}",
        args.url
    );
    let started = Instant::now();
    match backend {
        Backend::Sqlite => seed_sqlite(&args.url, n, first_us).await?,
        Backend::Postgres => seed_postgres(&args.url, n, first_us).await?,
    }
    println!(
        "seeded {n} keys and {n} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn seed_sqlite(url: &str, n: i64, first_us: i64) -> Result<(), Error> {
    let mut c = SqliteConnection::connect(url).await?;
    // A bigger page cache for this connection only: index pages of a
    // million random hashes do not fit the default 2 MiB.
    c.execute("PRAGMA cache_size = -262144").await?;
    let t = Instant::now();
    sqlx::query(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1), \
         u(i, h) AS (SELECT i, lower(hex(randomblob(16))) FROM seq) \
         INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at) \
         SELECT printf('%s-%s-%s-%s-%s', substr(h, 1, 8), substr(h, 9, 4), substr(h, 13, 4), \
                       substr(h, 17, 4), substr(h, 21, 12)), \
                'seed ' || i, '[\"orders:read\"]', '{}', ?3, randomblob(32), ?2 + i * 1000 \
         FROM u",
    )
    .bind(n)
    .bind(first_us)
    .bind(SEED_HINT)
    .execute(&mut c)
    .await?;
    println!("  keys:   {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO scopekey_events (id, key_id, type, actor_key_id, at, details) \
         SELECT printf('%s-%s-%s-%s-%s', substr(h, 1, 8), substr(h, 9, 4), substr(h, 13, 4), \
                       substr(h, 17, 4), substr(h, 21, 12)), \
                id, 'key.created', NULL, created_at, \
                json_object('name', name, 'scopes', json(scopes), 'expires_at', NULL) \
         FROM (SELECT lower(hex(randomblob(16))) AS h, id, created_at, name, scopes \
               FROM scopekey_keys WHERE created_at > ?1 AND hint = ?2)",
    )
    .bind(first_us)
    .bind(SEED_HINT)
    .execute(&mut c)
    .await?;
    println!("  events: {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

async fn seed_postgres(url: &str, n: i64, first_us: i64) -> Result<(), Error> {
    let mut c = PgConnection::connect(url).await?;
    let first = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(first_us) * 1_000)?;
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at) \
         SELECT gen_random_uuid(), 'seed ' || i, '[\"orders:read\"]', '{}', $3, \
                sha256(uuid_send(gen_random_uuid())), $2 + i * interval '1 millisecond' \
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(n)
    .bind(first)
    .bind(SEED_HINT)
    .execute(&mut c)
    .await?;
    println!("  keys:   {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO scopekey_events (id, key_id, type, actor_key_id, at, details) \
         SELECT gen_random_uuid(), id, 'key.created', NULL, created_at, \
                jsonb_build_object('name', name, 'scopes', scopes, 'expires_at', NULL) \
         FROM scopekey_keys WHERE created_at > $1 AND hint = $2",
    )
    .bind(first)
    .bind(SEED_HINT)
    .execute(&mut c)
    .await?;
    println!("  events: {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    // What autovacuum would do within a minute; done now so the plans below
    // are the ones a settled database uses.
    c.execute("ANALYZE scopekey_keys").await?;
    c.execute("ANALYZE scopekey_events").await?;
    println!("  analyze: {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------- measure

/// Median, 90th and 99th percentile and mean of durations, in microseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    format!(
        "p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs   mean {:>8.1} µs   (n = {})",
        at(0.5),
        at(0.9),
        at(0.99),
        mean,
        samples.len()
    )
}

/// The database's version, and how many keys and events it holds.
async fn counts(url: &str) -> Result<(String, i64, i64), Error> {
    let count = "SELECT (SELECT count(*) FROM scopekey_keys) AS k, \
                 (SELECT count(*) FROM scopekey_events) AS e";
    let row = match backend(url)? {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(url).await?;
            let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&mut c)
                .await?;
            let row = sqlx::query(count).fetch_one(&mut c).await?;
            (
                format!("SQLite {version}"),
                row.try_get("k")?,
                row.try_get("e")?,
            )
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(url).await?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut c)
                .await?;
            let row = sqlx::query(count).fetch_one(&mut c).await?;
            (
                format!("PostgreSQL {version}"),
                row.try_get("k")?,
                row.try_get("e")?,
            )
        }
    };
    Ok(row)
}

/// Creates the probe keys through the runtime and returns their plaintexts.
async fn create_probes(keys: &ScopeKey) -> Result<Vec<String>, Error> {
    let mut probes = Vec::with_capacity(PROBES);
    for i in 0..PROBES {
        let k = keys
            .create(
                NewKey::new(format!("probe {i}"), ["orders:read"]),
                Actor::System,
            )
            .await?;
        probes.push(k.plaintext.expose_secret().to_owned());
    }
    Ok(probes)
}

async fn measure(args: &Args) -> Result<(), Error> {
    let (keys, _) = runtime(&args.url).await?;
    let (version, n_keys, n_events) = counts(&args.url).await?;
    println!(
        "store: {} ({version}) — {n_keys} keys, {n_events} events",
        args.url
    );

    let admin = keys
        .create(NewKey::new("scale admin", ["*"]), Actor::System)
        .await?;
    let probes = create_probes(&keys).await?;

    println!("\nverification, cache miss (one lookup by hash each):");
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let key = &probes[i % PROBES];
        keys.invalidate_cache();
        let t = Instant::now();
        keys.verify(key).await?;
        samples.push(t.elapsed());
    }
    println!("  known keys ({PROBES} probes): {}", summary(&mut samples));

    let format = KeyFormat::default();
    let unknown: Vec<String> = (0..SAMPLES)
        .map(|_| format.generate().map(|p| p.expose_secret().to_owned()))
        .collect::<Result<_, _>>()?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for key in &unknown {
        let t = Instant::now();
        let refused = keys.verify(key).await.is_err();
        samples.push(t.elapsed());
        assert!(refused, "a random key verified");
    }
    println!("  never-seen keys:          {}", summary(&mut samples));

    http_pages(&keys, &args.url, admin.plaintext.expose_secret()).await?;
    plans(&args.url).await?;
    Ok(())
}

// ---------------------------------------------------------------- compare

/// One store under comparison: its runtime, its probe keys, and the
/// samples taken so far.
struct Side {
    url: String,
    keys: ScopeKey,
    probes: Vec<String>,
    known: Vec<Duration>,
    unknown: Vec<Duration>,
    /// Minor page faults of the whole process during the known-key and the
    /// never-seen-key blocks: pages first touched, mapped or not.
    faults: [u64; 2],
}

/// The process's minor page faults so far (Linux; 0 elsewhere).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // After the command name in parentheses: state, ppid, pgrp,
            // session, tty_nr, tpgid, flags, minflt.
            let fields = stat.rsplit_once(')')?.1;
            fields.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

async fn compare(args: &Args) -> Result<(), Error> {
    if args.large.is_empty() || args.rounds == 0 {
        return Err("compare needs --large URL and --rounds of at least 1".into());
    }
    let mut sides = Vec::new();
    for url in [&args.url, &args.large] {
        let (keys, _) = runtime_with(url, args.auth_failures).await?;
        let (version, n_keys, _) = counts(url).await?;
        println!("store: {url} ({version}) — {n_keys} keys");
        let probes = create_probes(&keys).await?;
        sides.push(Side {
            url: url.clone(),
            keys,
            probes,
            known: Vec::new(),
            unknown: Vec::new(),
            faults: [0; 2],
        });
    }
    let format = KeyFormat::default();
    for side in &sides {
        for _ in 0..args.warmup {
            let key = format.generate()?;
            assert!(side.keys.verify(key.expose_secret()).await.is_err());
        }
    }
    for round in 0..args.rounds {
        // Alternate which store goes first, so neither always follows the
        // other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &mut sides[i];
            let before = minor_faults();
            for key in &side.probes {
                side.keys.invalidate_cache();
                let t = Instant::now();
                side.keys.verify(key).await?;
                side.known.push(t.elapsed());
            }
            let middle = minor_faults();
            for _ in 0..PROBES {
                let key = format.generate()?;
                let t = Instant::now();
                let refused = side.keys.verify(key.expose_secret()).await.is_err();
                side.unknown.push(t.elapsed());
                assert!(refused, "a random key verified");
            }
            side.faults[0] += middle - before;
            side.faults[1] += minor_faults() - middle;
        }
    }
    println!(
        "\nverification, cache miss, {} alternating blocks of {PROBES}:",
        args.rounds
    );
    let mut p50s = Vec::new();
    for side in &mut sides {
        println!("  {}", side.url);
        println!("    known keys:      {}", summary(&mut side.known));
        println!("    never-seen keys: {}", summary(&mut side.unknown));
        let per_miss = |faults: u64, n: usize| faults as f64 / n as f64;
        println!(
            "    minor page faults a miss: known keys {:.2}, never-seen keys {:.2}",
            per_miss(side.faults[0], side.known.len()),
            per_miss(side.faults[1], side.unknown.len())
        );
        p50s.push((median(&side.known), median(&side.unknown)));
    }
    println!(
        "  large/small, p50: known keys {:.2}×, never-seen keys {:.2}×",
        p50s[1].0 / p50s[0].0,
        p50s[1].1 / p50s[0].1
    );
    Ok(())
}

/// The median of sorted samples, in microseconds.
fn median(sorted: &[Duration]) -> f64 {
    sorted[sorted.len() / 2].as_secs_f64() * 1e6
}

/// Times the management routes through the actix-web service, as a client
/// would see them minus the socket.
async fn http_pages(keys: &ScopeKey, url: &str, admin: &str) -> Result<(), Error> {
    let app = test::init_service(
        App::new()
            .app_data(keys.clone())
            .wrap(ApiKeyAuth::new())
            .configure(scopekey::actix::routes),
    )
    .await;
    let bearer = format!("Bearer {admin}");
    let seeded_id = seeded_key_id(url).await?;

    println!("\nmanagement routes, first page (50 items), through the actix-web service:");
    let get = |uri: String| {
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", bearer.as_str()))
            .to_request()
    };
    let first_page = app.call(get("/api-keys".into())).await?;
    let body: Value = test::read_body_json(first_page).await;
    let cursor = body["next_cursor"].as_str().unwrap_or_default().to_owned();

    let mut cases = vec![
        ("GET /api-keys", "/api-keys".to_owned(), REQUESTS),
        (
            "GET /api-keys (page 2)",
            format!("/api-keys?cursor={cursor}"),
            REQUESTS,
        ),
        (
            "GET /api-keys?status=active",
            "/api-keys?status=active".to_owned(),
            REQUESTS,
        ),
        (
            "GET /api-keys/events",
            "/api-keys/events".to_owned(),
            REQUESTS,
        ),
        (
            "GET /api-keys/{id}/events",
            format!("/api-keys/{seeded_id}/events"),
            REQUESTS,
        ),
    ];
    // Few rows match: served by migration 0003's partial index (without
    // it, a walk of the whole table by creation time); timed fewer times,
    // as it was slow before that index.
    cases.push((
        "GET /api-keys?status=revoked",
        "/api-keys?status=revoked".to_owned(),
        5,
    ));
    for (label, uri, requests) in cases {
        let mut samples = Vec::with_capacity(requests);
        let mut items = 0;
        // One untimed call first: prepares the statements on the connection.
        app.call(get(uri.clone())).await?;
        for _ in 0..requests {
            let t = Instant::now();
            let res = app.call(get(uri.clone())).await?;
            let status = res.status();
            let body = actix_web::body::to_bytes(res.into_body())
                .await
                .map_err(|e| format!("{label}: reading the body: {e}"))?;
            samples.push(t.elapsed());
            if !status.is_success() {
                return Err(format!("{label} answered {status}").into());
            }
            let json: Value = serde_json::from_slice(&body)?;
            items = json["items"].as_array().map_or(0, Vec::len);
        }
        println!("  {label:<30} {items:>3} items   {}", summary(&mut samples));
    }
    Ok(())
}

async fn seeded_key_id(url: &str) -> Result<String, Error> {
    let sql = "SELECT id FROM scopekey_keys WHERE hint = 'sk_…seed' LIMIT 1";
    Ok(match backend(url)? {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(url).await?;
            sqlx::query_scalar::<_, String>(sql)
                .fetch_optional(&mut c)
                .await?
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(url).await?;
            sqlx::query_scalar::<_, uuid::Uuid>(sql)
                .fetch_optional(&mut c)
                .await?
                .map(|u| u.to_string())
        }
    }
    .ok_or("no seeded key: run `seed` first")?)
}

/// The statements behind verification and the first pages, as the stores
/// send them (scopekey-runtime/src/store/{sqlite,postgres}.rs), and the
/// plan the database picks for each.
async fn plans(url: &str) -> Result<(), Error> {
    // The stores' column list (`KEY_COLUMNS` in each store).
    const COLS: &str = "id, name, scopes, metadata, hint, key_hash, created_at, expires_at, \
                        revoked_at, revoked_reason, rotated_at, parent_key_id, last_used_at, \
                        rotation_period_seconds, rotation_webhook_url, rotation_webhook_secret";
    // What a verification that missed the cache reads.
    use scopekey_runtime::store::VERIFY_COLUMNS;
    println!("\nquery plans:");
    match backend(url)? {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(url).await?;
            let cases = [
                (
                    "verification (find_for_verification)",
                    format!("SELECT {VERIFY_COLUMNS} FROM scopekey_keys WHERE key_hash = ?"),
                ),
                (
                    "GET /api-keys, first page",
                    format!(
                        "SELECT {COLS} FROM scopekey_keys WHERE 1 = 1 \
                         ORDER BY created_at DESC, id DESC LIMIT ?5"
                    ),
                ),
                (
                    "GET /api-keys, next page",
                    format!(
                        "SELECT {COLS} FROM scopekey_keys WHERE 1 = 1 \
                         AND (created_at < ?3 OR (created_at = ?3 AND id < ?4)) \
                         ORDER BY created_at DESC, id DESC LIMIT ?5"
                    ),
                ),
                (
                    "GET /api-keys?status=revoked",
                    format!(
                        "SELECT {COLS} FROM scopekey_keys WHERE 1 = 1 \
                         AND revoked_at IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT ?5"
                    ),
                ),
                (
                    "GET /api-keys/events, first page",
                    "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events \
                     WHERE 1 = 1 ORDER BY at DESC, id DESC LIMIT ?4"
                        .to_owned(),
                ),
                (
                    "GET /api-keys/{id}/events",
                    "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events \
                     WHERE 1 = 1 AND key_id = ?1 ORDER BY at DESC, id DESC LIMIT ?4"
                        .to_owned(),
                ),
            ];
            for (label, sql) in cases {
                println!("  {label}:");
                let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut c)
                    .await?;
                for row in rows {
                    println!("    {}", row.try_get::<String, _>("detail")?);
                }
            }
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(url).await?;
            let id = seeded_key_id(url).await?;
            // Each statement is prepared and run six times first, so the plan
            // shown is the one a pooled connection settles on (PostgreSQL
            // may switch to a generic plan after five executions).
            let cases = [
                (
                    "verification (find_for_verification)",
                    "(bytea)",
                    format!("SELECT {VERIFY_COLUMNS} FROM scopekey_keys WHERE key_hash = $1"),
                    "(sha256('x'))".to_owned(),
                ),
                (
                    "GET /api-keys, first page",
                    "(text, timestamptz, timestamptz, uuid, bigint)",
                    format!(
                        "SELECT {COLS} FROM scopekey_keys \
                         WHERE ($1::text IS NULL OR starts_with(name, $1::text)) \
                         AND ($2::timestamptz IS NOT NULL) \
                         AND ($3::timestamptz IS NULL AND $4::uuid IS NULL) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    "(NULL, now(), NULL, NULL, 51)".to_owned(),
                ),
                (
                    "GET /api-keys?status=revoked",
                    "(text, timestamptz, timestamptz, uuid, bigint)",
                    format!(
                        "SELECT {COLS} FROM scopekey_keys \
                         WHERE ($1::text IS NULL OR starts_with(name, $1::text)) \
                         AND ($2::timestamptz IS NOT NULL) AND revoked_at IS NOT NULL \
                         AND ($3::timestamptz IS NULL AND $4::uuid IS NULL) \
                         ORDER BY created_at DESC, id DESC LIMIT $5"
                    ),
                    "(NULL, now(), NULL, NULL, 51)".to_owned(),
                ),
                (
                    "GET /api-keys/events, first page",
                    "(uuid, timestamptz, uuid, bigint)",
                    "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events \
                     WHERE ($1::uuid IS NULL OR key_id = $1::uuid) \
                     AND ($2::timestamptz IS NULL AND $3::uuid IS NULL) \
                     ORDER BY at DESC, id DESC LIMIT $4"
                        .to_owned(),
                    "(NULL, NULL, NULL, 51)".to_owned(),
                ),
                (
                    "GET /api-keys/{id}/events",
                    "(uuid, timestamptz, uuid, bigint)",
                    "SELECT id, key_id, type, actor_key_id, at, details FROM scopekey_events \
                     WHERE ($1::uuid IS NULL OR key_id = $1::uuid) \
                     AND ($2::timestamptz IS NULL AND $3::uuid IS NULL) \
                     ORDER BY at DESC, id DESC LIMIT $4"
                        .to_owned(),
                    format!("('{id}', NULL, NULL, 51)"),
                ),
            ];
            for (i, (label, types, sql, params)) in cases.into_iter().enumerate() {
                println!("  {label}:");
                // Only fixed text and a UUID read back from the database
                // are formatted in.
                c.execute(AssertSqlSafe(format!("PREPARE scale_{i} {types} AS {sql}")))
                    .await?;
                for _ in 0..6 {
                    c.execute(AssertSqlSafe(format!("EXECUTE scale_{i} {params}")))
                        .await?;
                }
                let rows = sqlx::query(AssertSqlSafe(format!(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE scale_{i} {params}"
                )))
                .fetch_all(&mut c)
                .await?;
                for row in rows {
                    println!("    {}", row.try_get::<String, _>(0)?);
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- memory

/// Memory from /proc/self/status (Linux), in MiB: `RssAnon` is the heap
/// and stacks, which is what a cache grows; `RssFile` is the SQLite file
/// mapped into memory (`mmap_size`), shared with the page cache and counted
/// again for every pooled connection that maps it, so `VmRSS` (the sum)
/// says little about the cache.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or_else(|| "?".to_owned(), |kb| format!("{:.1} MiB", kb / 1024.0))
    };
    format!(
        "RssAnon {:>10}   RssFile {:>10}   VmRSS {:>10}",
        field("RssAnon:"),
        field("RssFile:"),
        field("VmRSS:")
    )
}

async fn memory(args: &Args) -> Result<(), Error> {
    let store = scopekey::open(&args.url).await?;
    let keys = ScopeKey::builder_arc(store)
        .cache_capacity(args.cache_capacity)
        // Entries outlive the run, so only the capacity can bound the cache.
        .cache_ttl(Duration::from_secs(3600))
        .build();
    keys.migrate().await?;
    let total = args.keys;
    let tasks = args.concurrency.max(1) as u64;
    println!(
        "verifying {total} distinct never-seen keys, {tasks} at a time, against a cache of {} \
         entries",
        args.cache_capacity
    );
    // Warm the pool and the statement caches before the first reading.
    for _ in 0..tasks * 4 {
        let _ = keys
            .verify(KeyFormat::default().generate()?.expose_secret())
            .await;
    }
    println!("before                {}", rss());
    let started = Instant::now();
    let step = 100_000.min(total).max(1);
    let mut done = 0;
    while done < total {
        let chunk = step.min(total - done);
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let keys = keys.clone();
            let share = chunk / tasks + u64::from(t < chunk % tasks);
            set.spawn(async move {
                let format = KeyFormat::default();
                for _ in 0..share {
                    let key = format.generate()?;
                    if keys.verify(key.expose_secret()).await.is_ok() {
                        return Err(scopekey::Error::Internal("a random key verified".into()));
                    }
                }
                Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        done += chunk;
        println!(
            "{done:>9} keys {:>6.1} s   {}",
            started.elapsed().as_secs_f64(),
            rss()
        );
    }
    println!(
        "{:.0} verifications/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
