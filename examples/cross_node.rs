//! Measures how soon another node refuses a key revoked on one node, on
//! PostgreSQL: two runtimes ("nodes") with their own connection pools and
//! caches on one database, node A listening for changes (LISTEN/NOTIFY) with
//! a one-minute cache lifetime, so only the change feed can explain a quick
//! refusal. Each trial creates a key on node B, verifies it on node A (now
//! cached there), revokes it on node B, and times how long node A keeps
//! accepting it after the revoking call returned. Prints p50, p90, p99 and
//! the maximum. The figures are in `docs/performance.md`.
//!
//! ```text
//! cargo run --release --example cross_node -- [--database-url URL] [--trials 500]
//!                                             [--kill-listener-every 0]
//! ```
//!
//! `--kill-listener-every N` terminates node A's listener connection (with
//! `pg_terminate_backend`) before every Nth revocation: the notification is
//! lost, and the bound must then come from the cache flush on reconnect.
//! The database URL defaults to `DATABASE_URL`, then
//! `postgres://postgres@127.0.0.1:5432/test`.

use std::time::{Duration, Instant};

use scopekey::{Actor, NewKey, ScopeKey};
use sqlx::{Connection, PgConnection};

type Error = Box<dyn std::error::Error>;

/// Node A gives up waiting for a refusal after this long (the cache
/// lifetime is a minute, so a missed notification shows as a timeout).
const GIVE_UP: Duration = Duration::from_secs(5);

struct Args {
    url: String,
    trials: usize,
    kill_every: usize,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        trials: 500,
        kill_every: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => out.url = value,
            "--trials" => out.trials = value.parse()?,
            "--kill-listener-every" => out.kill_every = value.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if !out.url.starts_with("postgres") {
        return Err("cross-node invalidation is measured on PostgreSQL only".into());
    }
    if out.trials == 0 {
        return Err("--trials must be at least 1".into());
    }
    Ok(out)
}

async fn node(url: &str) -> Result<ScopeKey, Error> {
    let store = scopekey::open(url).await?;
    Ok(ScopeKey::builder_arc(store)
        .cache_ttl(Duration::from_secs(60))
        .build())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let a = node(&args.url).await?;
    let b = node(&args.url).await?;
    a.migrate().await?;
    let listener = a
        .spawn_change_listener()
        .await?
        .ok_or("this store has no change feed")?;
    let mut admin = PgConnection::connect(&args.url).await?;
    let mut samples = Vec::with_capacity(args.trials);
    let mut timeouts = 0;
    for trial in 1..=args.trials {
        let key = b
            .create(
                NewKey::new("cross-node probe", ["probe:read"]),
                Actor::System,
            )
            .await?;
        let plaintext = key.plaintext.expose_secret();
        a.verify(plaintext).await?;
        if args.kill_every > 0 && trial % args.kill_every == 0 {
            sqlx::query(
                // The listener's last statement: its LISTEN, or the feed's
                // check of a quiet connection.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND (query ILIKE 'LISTEN%' OR query = 'SELECT ''scopekey change feed check''')",
            )
            .execute(&mut admin)
            .await?;
        }
        b.revoke(key.key.id, Some("cross-node probe"), Actor::System)
            .await?;
        let start = Instant::now();
        loop {
            if a.verify(plaintext).await.is_err() {
                samples.push(start.elapsed());
                break;
            }
            if start.elapsed() > GIVE_UP {
                timeouts += 1;
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    listener.abort();
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    println!(
        "{} trials, {} refused within {GIVE_UP:?}, {timeouts} not",
        args.trials,
        samples.len()
    );
    if !samples.is_empty() {
        println!(
            "after the revoking call returned: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0)
        );
    }
    // The probes stay in the database, revoked; drop it when done.
    Ok(())
}
