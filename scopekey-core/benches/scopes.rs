//! `cargo bench -p scopekey-core --bench scopes`
//!
//! Scope matching, the work a guard does on every request once the key is
//! verified: a required scope against a key's grants (exact, wildcard
//! action, super-scope, and a miss against many grants, the longest walk),
//! `any`/`all` requirements as `#[requires_scope]` emits them, and parsing
//! (done once per key when it enters the verification cache, and by the
//! management routes).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use scopekey_core::{Grants, Scope, StaticRequirement};

fn grants(items: &[&str]) -> Grants {
    Grants::parse_all(items.iter().copied()).expect("valid grants")
}

/// Sixteen grants, none of which covers `orders:write`.
fn many() -> Grants {
    let items: Vec<String> = (0..16)
        .map(|i| format!("resource{i}.sub:action{i}"))
        .collect();
    Grants::parse_all(items.iter().map(String::as_str)).expect("valid grants")
}

static ANY_ALL: StaticRequirement = StaticRequirement::Any(&[
    StaticRequirement::Scope("orders:admin"),
    StaticRequirement::All(&[
        StaticRequirement::Scope("orders:write"),
        StaticRequirement::Scope("orders:read"),
    ]),
]);

fn scopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("scopes");

    let exact = grants(&["orders:read", "orders:write"]);
    let wildcard = grants(&["billing:read", "orders:*"]);
    let superscope = grants(&["*"]);
    let many = many();
    let required = Scope::parse("orders:write").expect("valid scope");

    group.bench_function("covers/exact", |b| {
        b.iter(|| black_box(&exact).covers(black_box(&required)))
    });
    group.bench_function("covers/wildcard_action", |b| {
        b.iter(|| black_box(&wildcard).covers(black_box(&required)))
    });
    group.bench_function("covers/super_scope", |b| {
        b.iter(|| black_box(&superscope).covers(black_box(&required)))
    });
    group.bench_function("covers/miss_16_grants", |b| {
        b.iter(|| black_box(&many).covers(black_box(&required)))
    });
    // What a guard calls: the requirement as static text.
    group.bench_function("covers_str/exact", |b| {
        b.iter(|| black_box(&exact).covers_str(black_box("orders:write")))
    });
    group.bench_function("requirement/any_all_satisfied", |b| {
        b.iter(|| black_box(&ANY_ALL).is_satisfied_by(black_box(&exact)))
    });
    group.bench_function("requirement/any_all_miss_16_grants", |b| {
        b.iter(|| black_box(&ANY_ALL).is_satisfied_by(black_box(&many)))
    });
    group.bench_function("parse/scope", |b| {
        b.iter(|| Scope::parse(black_box("billing.invoices:read")).is_ok())
    });
    group.bench_function("parse/grants_16", |b| {
        let items: Vec<String> = (0..16)
            .map(|i| format!("resource{i}.sub:action{i}"))
            .collect();
        b.iter(|| Grants::parse_all(black_box(&items).iter().map(String::as_str)).is_ok())
    });
    group.finish();

    // The answers the figures are for.
    assert!(exact.covers(&required) && wildcard.covers(&required));
    assert!(superscope.covers(&required) && !many.covers(&required));
    assert!(ANY_ALL.is_satisfied_by(&exact) && !ANY_ALL.is_satisfied_by(&many));
}

criterion_group!(benches, scopes);
criterion_main!(benches);
