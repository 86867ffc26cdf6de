//! Verifying the presented key, once per request, and handing the verified
//! principal to handlers as extractors.
//!
//! The middleware, `#[requires_scope]` guards and the extractors all call
//! [`authenticate`]. The first call reads the headers and starts the
//! verification; the pending verification is kept in the request's
//! extensions, so every later call (even one running concurrently, as
//! actix polls a handler's extractors together) awaits the same result:
//! a key is verified at most once per request.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};
use scopekey_runtime::{Principal, VerifyError};

use crate::config::{AuthConfig, runtime};
use crate::credentials::{Presented, presented};
use crate::error::{AuthError, AuthErrorKind};

/// The result of authenticating one request.
type Outcome = Result<Option<Principal>, AuthError>;

/// The verification of the current request, shared by everyone who asks.
#[derive(Clone)]
struct Pending(Shared<LocalBoxFuture<'static, Outcome>>);

/// The verified principal of a request: `Ok(None)` if it presented no key,
/// `Err` if it presented a key that is not valid (or more than one), or the
/// store failed. Verifies at most once per request, whoever asks first.
///
/// Reads the runtime from app data (see [`runtime`](crate::runtime())); a
/// missing runtime is an error (500) and is logged, never a pass.
pub async fn authenticate(req: &HttpRequest) -> Result<Option<Principal>, AuthError> {
    verification(req).await
}

/// Starts (or joins) the request's verification. The returned future owns
/// everything it needs: it holds no reference to the request, so keeping it
/// in the request's extensions makes no cycle.
pub(crate) fn verification(req: &HttpRequest) -> impl Future<Output = Outcome> + 'static {
    if let Some(pending) = req.extensions().get::<Pending>() {
        return pending.0.clone();
    }
    let realm = AuthConfig::of(req).realm_arc();
    let fail = |kind| Err(AuthError::new(kind, realm.clone()));
    let future: LocalBoxFuture<'static, Outcome> = match (runtime(req), presented(req.headers())) {
        (None, _) => {
            tracing::error!(
                path = req.path(),
                "no ScopeKey in app data: register it with `App::app_data(keys.clone())`; refusing"
            );
            Box::pin(std::future::ready(fail(AuthErrorKind::Misconfigured)))
        }
        (Some(_), Presented::Nothing) => Box::pin(std::future::ready(Ok(None))),
        (Some(_), Presented::Multiple) => {
            tracing::info!(
                path = req.path(),
                "more than one credential presented; refusing"
            );
            Box::pin(std::future::ready(fail(AuthErrorKind::MultipleCredentials)))
        }
        (Some(_), Presented::Unreadable(why)) => {
            tracing::info!(reason = why, "api key refused before verification");
            Box::pin(std::future::ready(fail(AuthErrorKind::InvalidToken)))
        }
        (Some(keys), Presented::Key(key)) => {
            let keys = keys.clone();
            Box::pin(async move {
                match keys.verify(&key).await {
                    Ok(principal) => Ok(Some(principal)),
                    // The runtime has logged the reason and sampled it into
                    // the audit log; the client learns nothing more.
                    Err(VerifyError::Unavailable(_)) => {
                        Err(AuthError::new(AuthErrorKind::Unavailable, realm))
                    }
                    Err(_) => Err(AuthError::new(AuthErrorKind::InvalidToken, realm)),
                }
            })
        }
    };
    let shared = future.shared();
    req.extensions_mut().insert(Pending(shared.clone()));
    shared
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
    pub fn require(&self, scope: &str) -> Result<(), AuthError> {
        if self.principal.grants().covers_str(scope) {
            Ok(())
        } else {
            Err(AuthError::new(
                AuthErrorKind::InsufficientScope(vec![scope.to_owned()]),
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

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let realm = AuthConfig::of(req).realm_arc();
        let verification = verification(req);
        Box::pin(async move {
            match verification.await? {
                Some(principal) => Ok(Authenticated { principal, realm }),
                None => Err(AuthError::new(AuthErrorKind::MissingCredentials, realm)),
            }
        })
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
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verification = verification(req);
        Box::pin(async move { verification.await.map(MaybeAuthenticated) })
    }
}
