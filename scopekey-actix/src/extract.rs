//! Reading and verifying the presented key (placeholder).
use actix_web::HttpRequest;
use scopekey_runtime::Principal;

use crate::error::AuthError;

/// The verified principal of a request, if it presented a key.
pub async fn authenticate(_req: &HttpRequest) -> Result<Option<Principal>, AuthError> {
    Ok(None)
}
