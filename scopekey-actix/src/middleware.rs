//! [`ApiKeyAuth`]: the middleware that verifies a presented key before any
//! handler or extractor runs.

use std::rc::Rc;

use actix_web::Error;
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures_util::TryFutureExt;
use futures_util::future::{Either, LocalBoxFuture, MapOk, Ready, ready};

use crate::config::runtime;
use crate::error::AuthError;
use crate::extract::{RuntimeId, record, started, verification, verify};

/// Verifies the key a request presents, if any, before routing reaches a
/// handler:
///
/// - no key: the request goes on (unguarded routes answer it; guarded
///   handlers and [`Authenticated`](crate::Authenticated) refuse it with 401);
/// - a valid key: the request goes on, its principal kept for the guards and
///   extractors (verified once, not again);
/// - a presented key that is not valid: 401 `invalid_token`, **even on an
///   unguarded route** (a client sending a bad key learns so at once rather
///   than being served as anonymous);
/// - two credentials: 400 `invalid_request`; store failure: 503.
///
/// Every response it gives or passes on, its own refusals included, says
/// that it depends on the presented key (`Vary: Authorization, X-API-Key`,
/// added to the application's own `Vary`), and a response to a request
/// that presented a key gets `Cache-Control: private` unless the
/// application set a `Cache-Control` of its own: a shared cache (a CDN, a
/// reverse proxy) must neither serve one key's answer to a request without
/// it nor keep answering a key after it was revoked. (RFC 9111 keeps shared
/// caches from storing answers to `Authorization` only; `X-API-Key` is a
/// header like any other to them.) Refusals are `no-store` already. So a
/// key refused here and one refused by a handler (revoked while its request
/// ran) get the same headers. An error an inner middleware returns instead
/// of a response is rendered by actix-web outside this one, without them.
///
/// It verifies with the runtime it sees in app data. Wrapped inside a
/// `web::scope` that registers a runtime of its own, it verifies against
/// that one (also when an outer `ApiKeyAuth` already verified against the
/// application's); guards and extractors do the same (see the
/// [crate docs](crate#design-choices)).
///
/// Installing it is optional: guards and extractors verify on their own
/// when it is absent. It makes the refusal of bad keys uniform across
/// routes and happen before any body is read.
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use scopekey_actix::ApiKeyAuth;
/// # async fn run(keys: scopekey_runtime::ScopeKey) -> std::io::Result<()> {
/// HttpServer::new(move || App::new().app_data(keys.clone()).wrap(ApiKeyAuth::new()))
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeyAuth(());

impl ApiKeyAuth {
    /// The middleware. It reads the runtime and the [`AuthConfig`](crate::AuthConfig)
    /// from app data.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S, B> Transform<S, ServiceRequest> for ApiKeyAuth
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ApiKeyAuthService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(ApiKeyAuthService {
            service: Rc::new(service),
        }))
    }
}

/// The service [`ApiKeyAuth`] wraps around the application.
#[derive(Debug)]
pub struct ApiKeyAuthService<S> {
    service: Rc<S>,
}

/// The response type, with the refusal's body beside the application's.
type Response<B> = ServiceResponse<EitherBody<B>>;

/// Decided before routing (the usual case: no key, or a cached one): the
/// application's own future, or the refusal; no allocation.
type Decided<F, B> =
    Either<MapOk<F, fn(ServiceResponse<B>) -> Response<B>>, Ready<Result<Response<B>, Error>>>;

impl<S, B> Service<ServiceRequest> for ApiKeyAuthService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = Error;
    type Future =
        Either<Decided<S::Future, B>, LocalBoxFuture<'static, Result<Response<B>, Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Joined if something before this middleware (a nested one, or the
        // application's own) already verified or started verifying with
        // the runtime this one sees; else verified here and recorded for
        // the guards and extractors.
        let keys = runtime(req.request());
        let id = RuntimeId::of(keys);
        let step = if started(req.request(), id) {
            Either::Left(verification(req.request()))
        } else {
            Either::Right(verify(req.request(), keys))
        };
        match step {
            Either::Left(Either::Left(decided)) => Either::Left(Self::proceed(
                &self.service,
                req,
                decided.into_inner().err(),
            )),
            Either::Right(Either::Left(decided)) => {
                // The outcome moves into the extensions; only a refusal is
                // copied out.
                let outcome = decided.into_inner();
                let refused = outcome.as_ref().err().cloned();
                record(req.request(), id, outcome);
                Either::Left(Self::proceed(&self.service, req, refused))
            }
            // A lookup is needed: the rare path, boxed.
            Either::Left(Either::Right(joined)) => {
                let service = Rc::clone(&self.service);
                Either::Right(Box::pin(async move {
                    let refused = joined.await.err();
                    Self::proceed(&service, req, refused).await
                }))
            }
            Either::Right(Either::Right(fresh)) => {
                let service = Rc::clone(&self.service);
                Either::Right(Box::pin(async move {
                    let outcome = fresh.await;
                    let refused = outcome.as_ref().err().cloned();
                    record(req.request(), id, outcome);
                    Self::proceed(&service, req, refused).await
                }))
            }
        }
    }
}

impl<S, B> ApiKeyAuthService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    /// Answers the refusal, or calls the application; either answer is
    /// marked as depending on the presented key.
    fn proceed(
        service: &S,
        req: ServiceRequest,
        refused: Option<AuthError>,
    ) -> Decided<S::Future, B> {
        match refused {
            None => Either::Left(service.call(req).map_ok(keyed_response as fn(_) -> _)),
            Some(refused) => {
                let mut res = req.error_response(refused).map_into_right_body();
                depends_on_key(&mut res);
                Either::Right(ready(Ok(res)))
            }
        }
    }
}

/// The application's response, marked as depending on the presented key
/// (see [`ApiKeyAuth`]).
fn keyed_response<B>(res: ServiceResponse<B>) -> Response<B> {
    let mut res = res.map_into_left_body();
    depends_on_key(&mut res);
    res
}

/// Marks a response, the application's or this middleware's own refusal,
/// as depending on the presented key: `Vary` on both credential headers
/// always, and `Cache-Control: private` when a key was presented and the
/// response says nothing of caching (refusals say `no-store`). The same
/// for every answer, so that a refusal here and one a handler gives
/// (a key revoked while its request ran) cannot be told apart by their
/// headers.
fn depends_on_key<T>(res: &mut ServiceResponse<T>) {
    use actix_web::http::header::{AUTHORIZATION, HeaderValue, VARY};
    let presented = {
        let headers = res.request().headers();
        headers.contains_key(AUTHORIZATION) || headers.contains_key(crate::credentials::X_API_KEY)
    };
    let headers = res.headers_mut();
    // One `Vary` line, holding the handler's own fields (or an inner
    // middleware's: the two credential headers once, however many of these
    // middlewares the response passes through) and the credential headers.
    const OURS: &str = "Authorization, X-API-Key";
    // The common cases without building a list: no `Vary` yet, or ours
    // alone (an inner middleware's).
    let mut values = headers.get_all(VARY);
    match (values.next(), values.next()) {
        (None, _) => {
            headers.insert(VARY, HeaderValue::from_static(OURS));
            return finish(headers, presented);
        }
        (Some(only), None) if only == OURS => return finish(headers, presented),
        _ => {}
    }
    let read: Option<Vec<&str>> = headers.get_all(VARY).map(|v| v.to_str().ok()).collect();
    let Some(read) = read else {
        // A value that is not text: left as it is, ours beside it (once).
        if !headers.get_all(VARY).any(|v| v == OURS) {
            headers.append(VARY, HeaderValue::from_static(OURS));
        }
        return finish(headers, presented);
    };
    let mut fields: Vec<String> = read
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    if !fields.iter().any(|f| f == "*") {
        for ours in ["Authorization", "X-API-Key"] {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(ours)) {
                fields.push(ours.to_owned());
            }
        }
        if let Ok(value) = HeaderValue::from_str(&fields.join(", ")) {
            headers.insert(VARY, value);
        }
    }
    finish(headers, presented);
}

/// `Cache-Control: private` for an answer to a presented key that says
/// nothing of caching.
fn finish(headers: &mut actix_web::http::header::HeaderMap, presented: bool) {
    use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
    if presented && !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}
