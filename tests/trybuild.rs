//! Compile-time behaviour of `#[requires_scope]` and `catalogue!()`.
//!
//! `tests/ui/<mistake>.rs`: one misuse each, failing with the message in the
//! `.stderr` beside it. `tests/ui/pass/<shape>.rs`: every supported handler
//! shape compiles, without warnings, and registers its requirement.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");

    t.pass("tests/ui/pass/resource-route.rs");
    t.pass("tests/ui/pass/route-attribute-above.rs");
    t.pass("tests/ui/pass/route-attribute-below.rs");
    t.pass("tests/ui/pass/impl-block.rs");
    t.pass("tests/ui/pass/request-and-result.rs");
    t.pass("tests/ui/pass/generics.rs");
    t.pass("tests/ui/pass/attributes-kept.rs");
    t.pass("tests/ui/pass/catalogue-without-one.rs");
}
