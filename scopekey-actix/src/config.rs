//! What the application registers in app data: the runtime, and optionally
//! an [`AuthConfig`].

use std::sync::{Arc, OnceLock};

use actix_web::{HttpRequest, web};
use scopekey_runtime::ScopeKey;

use crate::error::DEFAULT_REALM;

/// Settings of the HTTP layer, registered with `App::app_data` (optional:
/// without it the realm is `api`).
///
/// ```
/// use scopekey_actix::AuthConfig;
///
/// let config = AuthConfig::new().realm("orders");
/// assert_eq!(config.realm_name(), "orders");
/// ```
#[derive(Debug, Clone)]
pub struct AuthConfig {
    realm: Arc<str>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthConfig {
    /// The defaults: realm `api`.
    pub fn new() -> Self {
        Self {
            realm: Arc::from(DEFAULT_REALM),
        }
    }

    /// The realm named in `WWW-Authenticate` challenges. Characters that
    /// cannot appear in a quoted header parameter (`"`, `\`, controls,
    /// non-ASCII) are dropped; an empty result falls back to `api`.
    pub fn realm(mut self, realm: &str) -> Self {
        let clean: String = realm
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
            .collect();
        self.realm = if clean.trim().is_empty() {
            Arc::from(DEFAULT_REALM)
        } else {
            Arc::from(clean.trim())
        };
        self
    }

    /// The realm in force.
    pub fn realm_name(&self) -> &str {
        &self.realm
    }

    pub(crate) fn realm_arc(&self) -> Arc<str> {
        self.realm.clone()
    }

    /// The configuration registered in the request's app data, or the
    /// defaults.
    pub fn of(req: &HttpRequest) -> &AuthConfig {
        static DEFAULT: OnceLock<AuthConfig> = OnceLock::new();
        req.app_data::<AuthConfig>()
            .or_else(|| req.app_data::<web::Data<AuthConfig>>().map(|d| d.get_ref()))
            .unwrap_or_else(|| DEFAULT.get_or_init(AuthConfig::new))
    }
}

/// The runtime registered in the request's app data: a plain [`ScopeKey`]
/// (`.app_data(keys.clone())`, preferred: it is already a shared handle) or a
/// `web::Data<ScopeKey>`. Where both are registered (at different levels:
/// the app and a scope) and are not the same runtime, which one is the
/// nearer cannot be told: none is used (`None`, so a 500, logged), rather
/// than perhaps the application's where a scope meant its own. Register
/// runtimes the same way at every level.
pub fn runtime(req: &HttpRequest) -> Option<&ScopeKey> {
    let plain = req.app_data::<ScopeKey>();
    let data = req.app_data::<web::Data<ScopeKey>>().map(|d| d.get_ref());
    match (plain, data) {
        (Some(plain), Some(data)) if !plain.same_runtime(data) => {
            tracing::error!(
                path = %req.path(),
                "two scopekey runtimes registered for this request, one as ScopeKey and one \
                 as web::Data<ScopeKey>: register them the same way at every level"
            );
            None
        }
        (plain, data) => plain.or(data),
    }
}
