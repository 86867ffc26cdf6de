//! Verifying the presented key, once per request, and handing the verified
//! principal to handlers as extractors.
//!
//! The middleware, `#[requires_scope]` guards and the extractors all call
//! [`authenticate`]. With the middleware installed, it verifies before
//! routing and records the outcome in the request's extensions; guards and
//! extractors then read it without waiting or allocating. Without it, the
//! first guard or extractor starts the verification and keeps the pending
//! verification in the extensions, so every later call (even one running
//! concurrently, as actix polls a handler's extractors together) awaits the
//! same result: a key is verified at most once per request.
//!
//! The outcome is kept with the runtime it was asked of
//! ([`ScopeKey::instance_id`], shared by its clones): a guard or extractor that sees another runtime
//! (a `web::scope` registering one of its own, on a store of its own)
//! verifies the key again against that one, and keeps that answer for the
//! rest of the request. A key is never judged by one store and acted for
//! on another.

use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::FutureExt;
use futures_util::future::{Either, LocalBoxFuture, Ready, Shared, ready};
use scopekey_runtime::scope::Scope;
use scopekey_runtime::{Principal, ScopeKey, VerifyError};

use crate::config::{AuthConfig, runtime};
use crate::credentials::{Presented, presented};
use crate::error::{AuthError, AuthErrorKind};

/// The result of authenticating one request.
pub(crate) type Outcome = Result<Option<Principal>, AuthError>;

/// Which runtime a verification asked ([`ScopeKey::instance_id`], shared
/// by every clone of a runtime). `None`: no runtime was found.
///
/// Two runtimes on one shared store (`ScopeKey::builder_arc` with the same
/// `Arc`) are two: each has its own cache (a revocation through one drops
/// its own entry only) and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeId(Option<usize>);

impl RuntimeId {
    pub(crate) fn of(keys: Option<&ScopeKey>) -> Self {
        Self(keys.map(ScopeKey::instance_id))
    }
}

/// A request's authentication, as kept in its extensions, with the runtime
/// that gave it.
#[derive(Clone)]
struct State {
    runtime: RuntimeId,
    step: Step,
}

#[derive(Clone)]
enum Step {
    /// Started by a guard or extractor; later askers join it.
    Pending(Shared<LocalBoxFuture<'static, Outcome>>),
    /// Finished (the middleware records this before routing).
    Done(Outcome),
}

/// A verification: already decided, or still running.
pub(crate) type Verification<F> = Either<Ready<Outcome>, F>;

/// The verified principal of a request: `Ok(None)` if it presented no key,
/// `Err` if it presented a key that is not valid (or more than one), or the
/// store failed. Verifies at most once per request, whoever asks first.
///
/// Reads the runtime from app data (see [`runtime`](crate::runtime())); a
/// missing runtime is an error (500) and is logged, never a pass.
pub async fn authenticate(req: &HttpRequest) -> Result<Option<Principal>, AuthError> {
    verification(req).await
}

/// Whether this request's verification was already started or done for
/// `runtime` (by an outer middleware of the application's, say).
pub(crate) fn started(req: &HttpRequest, runtime: RuntimeId) -> bool {
    req.extensions()
        .get::<State>()
        .is_some_and(|state| state.runtime == runtime)
}

/// `judge` applied to the request's outcome, if its verification is done
/// (the middleware's usual case) by the runtime this request now sees,
/// without copying the outcome.
pub(crate) fn judged<T>(req: &HttpRequest, judge: impl FnOnce(&Outcome) -> T) -> Option<T> {
    let runtime = RuntimeId::of(runtime(req));
    match req.extensions().get::<State>() {
        Some(State {
            runtime: asked,
            step: Step::Done(outcome),
        }) if *asked == runtime => Some(judge(outcome)),
        _ => None,
    }
}

/// Records a finished verification by `runtime` (the middleware's), for the
/// guards and extractors that follow.
pub(crate) fn record(req: &HttpRequest, runtime: RuntimeId, outcome: Outcome) {
    req.extensions_mut().insert(State {
        runtime,
        step: Step::Done(outcome),
    });
}

/// Starts (or joins) the request's verification. The returned future owns
/// everything it needs: it holds no reference to the request, so keeping it
/// in the request's extensions makes no cycle.
///
/// A verification by another runtime than the one this request now sees
/// (the application's, where a `web::scope` registers its own) is not
/// joined: the key is verified again, against this one, and that answer
/// kept instead.
pub(crate) fn verification(
    req: &HttpRequest,
) -> Verification<Shared<LocalBoxFuture<'static, Outcome>>> {
    let keys = runtime(req);
    let id = RuntimeId::of(keys);
    match req.extensions().get::<State>() {
        Some(State { runtime, step }) if *runtime == id => match step {
            Step::Done(outcome) => return Either::Left(ready(outcome.clone())),
            Step::Pending(pending) => return Either::Right(pending.clone()),
        },
        _ => {}
    }
    let shared = match verify(req, keys) {
        Either::Left(decided) => {
            // Recorded, so that later guards and extractors of this request
            // read the same answer instead of verifying again.
            let outcome = decided.into_inner();
            record(req, id, outcome.clone());
            return Either::Left(ready(outcome));
        }
        Either::Right(running) => running.shared(),
    };
    req.extensions_mut().insert(State {
        runtime: id,
        step: Step::Pending(shared.clone()),
    });
    Either::Right(shared)
}

/// Reads the headers and verifies the presented key with `keys` (the
/// request's runtime, [`runtime`]): decided at once when no lookup is
/// needed (no key, two credentials, an unreadable header, no runtime), else
/// a future that asks the runtime.
pub(crate) fn verify(
    req: &HttpRequest,
    keys: Option<&ScopeKey>,
) -> Verification<LocalBoxFuture<'static, Outcome>> {
    let realm = || AuthConfig::of(req).realm_arc();
    let fail = |kind| Either::Left(ready(Err(AuthError::new(kind, realm()))));
    match (keys, presented(req.headers())) {
        (None, _) => {
            tracing::error!(
                path = req.path(),
                "no ScopeKey in app data: register it with `App::app_data(keys.clone())`; refusing"
            );
            fail(AuthErrorKind::Misconfigured)
        }
        (Some(_), Presented::Nothing) => Either::Left(ready(Ok(None))),
        (Some(_), Presented::Multiple) => {
            tracing::info!(
                path = req.path(),
                "more than one credential presented; refusing"
            );
            fail(AuthErrorKind::MultipleCredentials)
        }
        (Some(keys), Presented::Unreadable(why)) => {
            tracing::info!(reason = why, "api key refused before verification");
            // Audited like any malformed key (a sampled `auth.failed`, no
            // hint): the runtime refuses the empty text at its format check.
            // Nothing of the header itself is kept or hashed.
            let keys = keys.clone();
            let realm = realm();
            Either::Right(Box::pin(async move {
                let _ = keys.verify("").await;
                Err(AuthError::new(AuthErrorKind::InvalidToken, realm))
            }))
        }
        (Some(keys), Presented::Key(key)) => {
            // The hot path: a cached, valid key is decided here, with no
            // copy of the key and no future.
            if let Some(principal) = keys.verify_cached(key) {
                return Either::Left(ready(Ok(Some(principal))));
            }
            let keys = keys.clone();
            // Wiped when the lookup ends, as the runtime's own copies are.
            let key = zeroize::Zeroizing::new(key.to_owned());
            let realm = realm();
            // Boxed: the miss path is rare, and a large future inline would
            // be moved around on every request.
            Either::Right(Box::pin(async move {
                match keys.verify(&key).await {
                    Ok(principal) => Ok(Some(principal)),
                    // The runtime has logged the reason and sampled it into
                    // the audit log; the client learns nothing more.
                    Err(VerifyError::Unavailable(_)) => {
                        Err(AuthError::new(AuthErrorKind::Unavailable, realm))
                    }
                    Err(_) => Err(AuthError::new(AuthErrorKind::InvalidToken, realm)),
                }
            }))
        }
    }
}

/// The verified caller of a request that must present a key: refuses with
/// 401 when none is presented. Dereferences to [`Principal`].
///
/// ```
/// use actix_web::{HttpResponse, get};
/// use scopekey_actix::Authenticated;
///
/// #[get("/whoami")]
/// async fn whoami(caller: Authenticated) -> HttpResponse {
///     HttpResponse::Ok().body(caller.name.to_string())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated {
    principal: Principal,
    realm: Arc<str>,
}

impl Authenticated {
    /// The verified principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Takes the principal out.
    pub fn into_inner(self) -> Principal {
        self.principal
    }

    /// Refuses with 403 (`insufficient_scope`, naming `scope`) unless the
    /// key's grants cover `scope`: for checks decided at run time. Handlers
    /// whose needs are fixed use `#[requires_scope]` instead.
    ///
    /// `scope` must be a valid required scope (`resource:action`, no
    /// wildcard). Text that is not one — built from request data, say —
    /// is covered by no key, not even `*`, and is refused with a 403 that
    /// does not repeat it.
    pub fn require(&self, scope: &str) -> Result<(), AuthError> {
        let Ok(scope) = Scope::parse(scope) else {
            tracing::warn!("a required scope is not a valid scope; refusing");
            return Err(AuthError::new(
                AuthErrorKind::InsufficientScope(Vec::new()),
                self.realm.clone(),
            ));
        };
        if self.principal.grants().covers(&scope) {
            Ok(())
        } else {
            Err(AuthError::new(
                AuthErrorKind::InsufficientScope(vec![scope.as_str().to_owned()]),
                self.realm.clone(),
            ))
        }
    }

    pub(crate) fn realm(&self) -> Arc<str> {
        self.realm.clone()
    }
}

impl Deref for Authenticated {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl Authenticated {
    fn from_outcome(outcome: Outcome, realm: Arc<str>) -> Result<Self, AuthError> {
        match outcome? {
            Some(principal) => Ok(Authenticated { principal, realm }),
            None => Err(AuthError::new(AuthErrorKind::MissingCredentials, realm)),
        }
    }
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future =
        Either<Ready<Result<Self, AuthError>>, LocalBoxFuture<'static, Result<Self, AuthError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let realm = AuthConfig::of(req).realm_arc();
        match verification(req) {
            Either::Left(decided) => {
                Either::Left(ready(Self::from_outcome(decided.into_inner(), realm)))
            }
            Either::Right(pending) => {
                Either::Right(Box::pin(
                    async move { Self::from_outcome(pending.await, realm) },
                ))
            }
        }
    }
}

/// The verified caller, if the request presented a key: `None` without one,
/// but a presented key that is not valid is still refused (401), never
/// treated as absent. (actix's own `Option<Authenticated>` would turn every
/// refusal, even a store failure, into `None`; use this instead.)
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<Principal>);

impl FromRequest for MaybeAuthenticated {
    type Error = AuthError;
    type Future =
        Either<Ready<Result<Self, AuthError>>, LocalBoxFuture<'static, Result<Self, AuthError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        match verification(req) {
            Either::Left(decided) => {
                Either::Left(ready(decided.into_inner().map(MaybeAuthenticated)))
            }
            Either::Right(pending) => {
                Either::Right(Box::pin(
                    async move { pending.await.map(MaybeAuthenticated) },
                ))
            }
        }
    }
}
