//! Property tests for the scope grammar and matching.

use proptest::prelude::*;
use scopekey_core::{Grant, Grants, MAX_SCOPE_LEN, Requirement, Scope};

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z][a-z0-9_]{0,6}", 1..3).prop_map(|parts| parts.join("."))
}

fn scope() -> impl Strategy<Value = String> {
    (name(), name()).prop_map(|(r, a)| format!("{r}:{a}"))
}

proptest! {
    #[test]
    fn valid_scopes_round_trip(s in scope()) {
        let parsed = Scope::parse(&s).unwrap();
        prop_assert_eq!(parsed.as_str(), s.as_str());
        prop_assert_eq!(format!("{}:{}", parsed.resource(), parsed.action()), s.clone());
        prop_assert_eq!(Grant::parse(&s).unwrap(), Grant::Exact(parsed));
    }

    #[test]
    fn parsing_never_panics_and_errors_point_inside(s in "\\PC{0,200}") {
        if let Err(e) = Scope::parse(&s) {
            prop_assert!(e.position() <= s.len().max(MAX_SCOPE_LEN));
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = Grant::parse(&s);
        let _ = s.parse::<Requirement>();
    }

    #[test]
    fn upper_case_or_whitespace_is_always_rejected(s in scope(), at in any::<prop::sample::Index>(), bad in prop::sample::select(vec!['A', 'Z', ' ', '\t', '-', '*'])) {
        let i = at.index(s.len());
        let mut t = s.clone();
        t.insert(i, bad);
        prop_assert!(Scope::parse(&t).is_err());
    }

    #[test]
    fn super_scope_covers_everything(s in scope()) {
        prop_assert!(Grant::All.covers(&Scope::parse(&s).unwrap()));
    }

    #[test]
    fn resource_wildcard_covers_exactly_its_resource(r in name(), other in name(), action in name()) {
        let grant = Grant::parse(&format!("{r}:*")).unwrap();
        let own = format!("{r}:{action}");
        prop_assert!(grant.covers(&Scope::parse(&own).unwrap()));
        // A different resource, including one that merely extends this one.
        if other != r {
            let elsewhere = format!("{other}:{action}");
            prop_assert!(!grant.covers(&Scope::parse(&elsewhere).unwrap()));
        }
        let nested = format!("{r}.{other}:{action}");
        prop_assert!(!grant.covers(&Scope::parse(&nested).unwrap()));
    }

    #[test]
    fn exact_grants_cover_only_themselves(a in scope(), b in scope()) {
        let g = Grant::parse(&a).unwrap();
        prop_assert_eq!(g.covers(&Scope::parse(&b).unwrap()), a == b);
    }

    #[test]
    fn any_and_all_follow_their_parts(held in prop::collection::vec(scope(), 0..4), wanted in prop::collection::vec(scope(), 1..4)) {
        let grants = Grants::parse_all(&held).unwrap();
        let parts: Vec<Requirement> = wanted.iter().map(|s| Requirement::Scope(Scope::parse(s).unwrap())).collect();
        let covered: Vec<bool> = wanted.iter().map(|s| held.contains(s)).collect();
        prop_assert_eq!(grants.satisfies(&Requirement::Any(parts.clone())), covered.iter().any(|&c| c));
        prop_assert_eq!(grants.satisfies(&Requirement::All(parts.clone())), covered.iter().all(|&c| c));
        // The text form round-trips.
        let any = Requirement::Any(parts);
        prop_assert_eq!(any.to_string().parse::<Requirement>().unwrap(), any);
    }

    #[test]
    fn includes_is_consistent_with_covers(a in prop::sample::select(vec!["*", "x:*", "x:r", "y:*"]), s in prop::sample::select(vec!["x:r", "x:w", "y:r", "x.y:r"])) {
        let held = Grant::parse(a).unwrap();
        let wanted = Grant::parse(s).unwrap();
        prop_assert_eq!(held.includes(&wanted), held.covers(&Scope::parse(s).unwrap()));
    }
}
