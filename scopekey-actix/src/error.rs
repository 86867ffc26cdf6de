//! Authentication errors (placeholder until the full problem+json module lands).
use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use scopekey_core::StaticRequirement;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No key presented.
    #[error("no API key was presented")]
    MissingCredentials,
    /// The key does not satisfy the requirement.
    #[error("insufficient scope")]
    InsufficientScope(&'static StaticRequirement),
    /// The guard's requirement is not registered.
    #[error("misconfigured guard")]
    Misconfigured,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::MissingCredentials => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            AuthError::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).finish()
    }
}
