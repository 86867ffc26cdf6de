//! The guard behind `#[requires_scope]`: an extractor that refuses the
//! request unless the caller's key satisfies the handler's requirement.
//!
//! The macro registers each guarded handler's requirement in [`GUARDS`] (a
//! link-time list, so nothing runs at start-up) under an id derived from the
//! requirement's text, and makes the handler's arguments one extractor,
//! [`Guarded<ID, (..)>`](Guarded) (a handler without arguments gets
//! [`Guard<ID>`](Guard) alone): the guard first, and the handler's own
//! extractors only once it has passed. So the guard's refusal comes before
//! any other extractor's answer, also when it must wait for the store (no
//! middleware, a cache miss) and another extractor would fail at once, and
//! the body never runs unless the guard passes.

use std::sync::{Arc, OnceLock};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::{Either, Ready, ready};
use scopekey_core::StaticRequirement;

use crate::config::AuthConfig;
use crate::error::{AuthError, AuthErrorKind};
use crate::extract::{Outcome, judged, verification};

/// One guarded handler: what it requires and where it is.
#[derive(Debug)]
pub struct GuardInfo {
    /// The id the handler's `Guard<ID>` names (a hash of the requirement).
    pub id: u64,
    /// What the handler requires.
    pub requirement: &'static StaticRequirement,
    /// The handler's name.
    pub handler: &'static str,
    /// The module it is defined in.
    pub module: &'static str,
}

/// Every guarded handler linked into the program.
#[linkme::distributed_slice]
pub static GUARDS: [GuardInfo];

/// The guarded handlers linked into this program, for listing which
/// endpoints need which scopes.
pub fn guarded_handlers() -> &'static [GuardInfo] {
    &GUARDS
}

/// What a guard finds under its id.
enum Lookup {
    Found(&'static GuardInfo),
    /// No handler registered the id.
    Missing,
    /// Handlers with different requirements share the id (their
    /// requirements' hashes collide): neither requirement can be told from
    /// the other, so both handlers refuse.
    Ambiguous,
}

fn lookup(id: u64) -> Lookup {
    // Sorted by id once; a binary search over a few dozen ids is cheaper
    // than hashing on every request.
    static INDEX: OnceLock<Box<[Slot]>> = OnceLock::new();
    let index = INDEX.get_or_init(|| index(GUARDS.iter()));
    match index.binary_search_by_key(&id, |(id, _)| *id) {
        Ok(i) => index[i].1.map_or(Lookup::Ambiguous, Lookup::Found),
        Err(_) => Lookup::Missing,
    }
}

/// An id and the one requirement registered under it (`None`: several).
type Slot = (u64, Option<&'static GuardInfo>);

/// The guards sorted by id, one slot per id. Handlers with equal
/// requirements share an id harmlessly; different requirements under one id
/// (a 64-bit hash collision, astronomically unlikely) are logged (here,
/// naming the handlers, and at every refusal) and make the slot empty, so
/// that no handler can be judged by another's requirement: all of them fail
/// closed.
fn index(guards: impl Iterator<Item = &'static GuardInfo>) -> Box<[Slot]> {
    let mut all: Vec<_> = guards.collect();
    all.sort_unstable_by_key(|g| g.id);
    let mut slots: Vec<Slot> = Vec::with_capacity(all.len());
    for guard in all {
        match slots.last_mut() {
            Some((id, slot)) if *id == guard.id => {
                if let Some(first) = *slot
                    && first.requirement != guard.requirement
                {
                    tracing::error!(
                        guard = guard.id,
                        first = %format_args!("{}::{}", first.module, first.handler),
                        first_requires = %first.requirement,
                        second = %format_args!("{}::{}", guard.module, guard.handler),
                        second_requires = %guard.requirement,
                        "two different requirements share one guard id; \
                         both handlers refuse every request (rename a scope)"
                    );
                    *slot = None;
                } else if slot.is_none() {
                    tracing::error!(
                        guard = guard.id,
                        handler = %format_args!("{}::{}", guard.module, guard.handler),
                        requires = %guard.requirement,
                        "another handler shares an ambiguous guard id; it refuses every request"
                    );
                }
            }
            _ => slots.push((guard.id, Some(guard))),
        }
    }
    slots.into_boxed_slice()
}

/// The extractor `#[requires_scope]` adds to a handler. Not meant to be
/// written by hand.
#[derive(Debug)]
pub struct Guard<const ID: u64>(());

impl<const ID: u64> FromRequest for Guard<ID> {
    type Error = AuthError;
    type Future = Either<
        Ready<Result<Self, AuthError>>,
        futures_util::future::LocalBoxFuture<'static, Result<Self, AuthError>>,
    >;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The realm is read only for a refusal.
        let realm = || AuthConfig::of(req).realm_arc();
        // Fail closed: a guard whose requirement cannot be found, or
        // cannot be told apart from another's, refuses.
        let info = match lookup(ID) {
            Lookup::Found(info) => info,
            Lookup::Missing => {
                tracing::error!(
                    guard = ID,
                    "no requirement registered for this guard; refusing"
                );
                return Either::Left(ready(Err(AuthError::new(
                    AuthErrorKind::Misconfigured,
                    realm(),
                ))));
            }
            Lookup::Ambiguous => {
                tracing::error!(
                    guard = ID,
                    "two different requirements share this guard's id; refusing"
                );
                return Either::Left(ready(Err(AuthError::new(
                    AuthErrorKind::Misconfigured,
                    realm(),
                ))));
            }
        };
        // Verified by the middleware: judged in place, no copy, no
        // allocation.
        if let Some(verdict) = judged(req, |outcome| check(info, outcome)) {
            return Either::Left(ready(verdict.map(Guard).map_err(|r| r.into_error(realm))));
        }
        match verification(req) {
            Either::Left(decided) => Either::Left(ready(
                check(info, &decided.into_inner())
                    .map(Guard)
                    .map_err(|kind| kind.into_error(realm)),
            )),
            Either::Right(pending) => {
                let realm = realm();
                Either::Right(Box::pin(async move {
                    check(info, &pending.await)
                        .map(Guard)
                        .map_err(|kind| kind.into_error(|| realm))
                }))
            }
        }
    }
}

/// The extractor `#[requires_scope]` makes of a guarded handler's arguments:
/// the guard first, and only once it has passed, the handler's own
/// extractors `T` (a tuple), so that the guard's refusal always comes
/// first, also when it must wait for the store (no middleware, a cache
/// miss) and another extractor would fail at once. Not meant to be written
/// by hand.
#[derive(Debug)]
pub struct Guarded<const ID: u64, T>(pub T);

impl<const ID: u64, T> FromRequest for Guarded<ID, T>
where
    T: FromRequest + 'static,
{
    type Error = actix_web::Error;
    type Future = Either<
        futures_util::future::MapErr<
            futures_util::future::MapOk<T::Future, fn(T) -> Self>,
            fn(T::Error) -> actix_web::Error,
        >,
        futures_util::future::LocalBoxFuture<'static, Result<Self, actix_web::Error>>,
    >;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        use futures_util::TryFutureExt;
        let rest = |req: &HttpRequest, payload: &mut Payload| {
            T::from_request(req, payload)
                .map_ok(Guarded as fn(T) -> Self)
                .map_err(Into::into as fn(T::Error) -> actix_web::Error)
        };
        match Guard::<ID>::from_request(req, payload) {
            // Decided (the middleware verified the key, or the cache had
            // it): refused at once, or on to the handler's extractors
            // without an allocation.
            Either::Left(decided) => match decided.into_inner() {
                Ok(_) => Either::Left(rest(req, payload)),
                Err(refused) => {
                    let refused = actix_web::Error::from(refused);
                    Either::Right(Box::pin(ready(Err(refused))))
                }
            },
            Either::Right(pending) => {
                let req = req.clone();
                let mut payload = payload.take();
                Either::Right(Box::pin(async move {
                    pending.await?;
                    rest(&req, &mut payload).await
                }))
            }
        }
    }
}

/// Why a guard refuses: an authentication error as it came, or a refusal
/// of its own, made into an error (with the realm) only when needed.
enum Refusal {
    Auth(AuthError),
    Kind(AuthErrorKind),
}

impl Refusal {
    fn into_error(self, realm: impl FnOnce() -> Arc<str>) -> AuthError {
        match self {
            Refusal::Auth(e) => e,
            Refusal::Kind(kind) => AuthError::new(kind, realm()),
        }
    }
}

/// The guard's verdict on a request's authentication outcome.
fn check(info: &GuardInfo, outcome: &Outcome) -> Result<(), Refusal> {
    match outcome.as_ref().map_err(|e| Refusal::Auth(e.clone()))? {
        None => Err(Refusal::Kind(AuthErrorKind::MissingCredentials)),
        Some(p) if info.requirement.is_satisfied_by(p.grants()) => Ok(()),
        Some(p) => {
            tracing::debug!(
                key_id = %p.id,
                handler = info.handler,
                required = %info.requirement,
                "insufficient scope"
            );
            let scopes = info.requirement.scopes().into_iter().map(str::to_owned);
            Err(Refusal::Kind(AuthErrorKind::InsufficientScope(
                scopes.collect(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static READ: StaticRequirement = StaticRequirement::Scope("orders:read");
    static ADMIN: StaticRequirement = StaticRequirement::Scope("orders:admin");

    fn info(id: u64, requirement: &'static StaticRequirement) -> &'static GuardInfo {
        Box::leak(Box::new(GuardInfo {
            id,
            requirement,
            handler: "handler",
            module: "tests",
        }))
    }

    fn find(index: &[Slot], id: u64) -> Option<Option<&'static StaticRequirement>> {
        index
            .binary_search_by_key(&id, |(id, _)| *id)
            .ok()
            .map(|i| index[i].1.map(|g| g.requirement))
    }

    #[test]
    fn equal_requirements_share_an_id() {
        let index = index([info(7, &READ), info(3, &ADMIN), info(7, &READ)].into_iter());
        assert_eq!(index.len(), 2);
        assert_eq!(find(&index, 7), Some(Some(&READ)));
        assert_eq!(find(&index, 3), Some(Some(&ADMIN)));
        assert_eq!(find(&index, 5), None);
    }

    #[test]
    fn different_requirements_under_one_id_are_refused() {
        // Whatever order the linker lists them in, and however many more
        // share the id, neither requirement is served for it.
        for guards in [
            [info(9, &READ), info(9, &ADMIN), info(1, &READ)],
            [info(9, &ADMIN), info(1, &READ), info(9, &READ)],
            [info(9, &READ), info(9, &READ), info(9, &ADMIN)],
        ] {
            let index = index(guards.into_iter());
            assert_eq!(find(&index, 9), Some(None));
        }
        let index = index([info(9, &READ), info(9, &ADMIN), info(1, &READ)].into_iter());
        assert_eq!(find(&index, 1), Some(Some(&READ)));
    }
}
