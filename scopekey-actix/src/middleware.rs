//! [`ApiKeyAuth`]: the middleware that verifies a presented key before any
//! handler or extractor runs.

use std::future::{Ready, ready};
use std::rc::Rc;

use actix_web::Error;
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures_util::future::{Either, LocalBoxFuture};

use crate::extract::{record, started, verification, verify};

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
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ApiKeyAuthService {
            service: Rc::new(service),
        }))
    }
}

/// The service [`ApiKeyAuth`] wraps around the application.
#[derive(Debug)]
pub struct ApiKeyAuthService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for ApiKeyAuthService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Joined if something before this middleware (a nested one, or the
        // application's own) already verified or started verifying; else
        // verified here and recorded for the guards and extractors.
        let step = if started(req.request()) {
            Either::Left(verification(req.request()))
        } else {
            Either::Right(verify(req.request()))
        };
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let outcome = match step {
                Either::Left(joined) => joined.await,
                Either::Right(fresh) => {
                    let outcome = fresh.await;
                    record(req.request(), outcome.clone());
                    outcome
                }
            };
            match outcome {
                Ok(_) => service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body),
                Err(refused) => Ok(req.error_response(refused).map_into_right_body()),
            }
        })
    }
}
