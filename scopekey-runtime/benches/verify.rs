//! `cargo bench -p scopekey-runtime --bench verify`
//!
//! Verification cost: a cache hit, a cache miss on SQLite and on PostgreSQL
//! (one indexed lookup by hash) for a stored key and for a well-formed key
//! the store does not hold, and a malformed key (refused before any
//! lookup), with 1,000 and 100,000 keys in the store. PostgreSQL cases run
//! when `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! answers.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use scopekey_runtime::testing::{Backend, TestDb};
use scopekey_runtime::{Actor, KeyFormat, NewKey, ScopeKey, VerifyError};
use sqlx::{AssertSqlSafe, Connection};

/// Inserts `n` keys in one statement (hashes of random bytes: no plaintext).
async fn seed(db: &TestDb, n: u64) {
    match db.backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let sql = format!(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}), \
                 u(i, h) AS (SELECT i, lower(hex(randomblob(16))) FROM seq) \
                 INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at) \
                 SELECT printf('%s-%s-%s-%s-%s', substr(h,1,8), substr(h,9,4), substr(h,13,4), substr(h,17,4), substr(h,21,12)), \
                 'seed' || i, '[\"orders:read\"]', '{{}}', 'sk_…seed', randomblob(32), i FROM u"
            );
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let sql = format!(
                "INSERT INTO scopekey_keys (id, name, scopes, metadata, hint, key_hash, created_at) \
                 SELECT gen_random_uuid(), 'seed' || i, '[\"orders:read\"]', '{{}}', 'sk_…seed', \
                 sha256(('seed' || i)::bytea), now() FROM generate_series(1, {n}) AS i"
            );
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query("ANALYZE scopekey_keys")
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("verify");

    for n in [1_000u64, 100_000] {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let Some(db) = rt.block_on(TestDb::new(backend)) else {
                continue;
            };
            rt.block_on(seed(&db, n - 1));
            // No sampled `auth.failed` writes inside the unknown key's
            // timing: the lookup alone.
            let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
                .auth_failures_per_second(0)
                .build();
            let created = rt
                .block_on(keys.create(NewKey::new("probe", ["orders:read"]), Actor::System))
                .unwrap();
            let plaintext = created.plaintext.expose_secret().to_owned();
            let name = match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            };

            if backend == Backend::Sqlite {
                rt.block_on(keys.verify(&plaintext)).unwrap();
                group.bench_function(format!("cache_hit/{n}_keys"), |b| {
                    b.to_async(&rt)
                        .iter(|| async { black_box(keys.verify(&plaintext).await.unwrap()) })
                });
                // The synchronous fast path the actix integration takes
                // (cached for an hour here, so no miss falls inside it).
                let warm = ScopeKey::builder_arc(Arc::clone(&db.store))
                    .cache_ttl(std::time::Duration::from_secs(3600))
                    .build();
                rt.block_on(warm.verify(&plaintext)).unwrap();
                group.bench_function(format!("cache_hit_fast_path/{n}_keys"), |b| {
                    b.iter(|| black_box(warm.verify_cached(&plaintext).unwrap()))
                });
            }
            group.bench_function(format!("cache_miss_{name}/{n}_keys"), |b| {
                b.to_async(&rt).iter_batched(
                    || keys.invalidate_cache(),
                    |()| async { black_box(keys.verify(&plaintext).await.unwrap()) },
                    BatchSize::PerIteration,
                )
            });
            // A well-formed key the store does not hold (a guess, a typo
            // that kept its checksum): the same lookup, finding nothing.
            let unknown = KeyFormat::default().generate().unwrap();
            let unknown = unknown.expose_secret().to_owned();
            assert!(matches!(
                rt.block_on(keys.verify(&unknown)),
                Err(VerifyError::Unknown)
            ));
            group.bench_function(format!("cache_miss_unknown_{name}/{n}_keys"), |b| {
                b.to_async(&rt).iter_batched(
                    || keys.invalidate_cache(),
                    |()| async { black_box(keys.verify(&unknown).await.is_err()) },
                    BatchSize::PerIteration,
                )
            });
            rt.block_on(db.cleanup());
        }
    }

    let db = rt.block_on(TestDb::new(Backend::Sqlite)).unwrap();
    let keys = ScopeKey::builder_arc(Arc::clone(&db.store))
        .auth_failures_per_second(0)
        .build();
    let malformed = "sk_thisisnotavalidkeyatallbecauseitschecksumiswrong";
    // Refused by the format check, not looked up: what this case times.
    assert!(matches!(
        rt.block_on(keys.verify(malformed)),
        Err(VerifyError::Malformed(_))
    ));
    group.bench_function("malformed", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(keys.verify(malformed).await.is_err()) })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
