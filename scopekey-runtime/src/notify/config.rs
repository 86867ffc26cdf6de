//! The notifier's settings, with defaults and an environment reader for
//! services (`SCOPEKEY_WEBHOOK_URL`, `SCOPEKEY_WEBHOOK_SECRET`,
//! `SCOPEKEY_NOTIFIER_INTERVAL_SECONDS`, ...).

use time::Duration;

use super::NotifyError;
use super::signature::Secret;
use crate::model::event_type;

/// The default notice threshold: 14 days before expiry.
pub const DEFAULT_THRESHOLD: Duration = Duration::days(14);

/// Event types an endpoint may subscribe to. `webhook.*` events (failures of
/// delivery itself) are audited but never delivered, so a broken endpoint
/// cannot feed itself.
pub const DELIVERABLE_EVENTS: [&str; 6] = [
    event_type::KEY_EXPIRING,
    event_type::KEY_EXPIRED,
    event_type::KEY_CREATED,
    event_type::KEY_ROTATED,
    event_type::KEY_REVOKED,
    event_type::KEY_COMPROMISED,
];

/// The event types an endpoint receives unless told otherwise: expiry
/// notices, and compromise reports (announced by webhook).
pub const DEFAULT_EVENTS: [&str; 2] = [event_type::KEY_EXPIRING, event_type::KEY_COMPROMISED];

/// The shortest signing or rotation secret accepted, in bytes (the
/// Standard Webhooks specification asks 24 to 64; those scopekey makes are
/// 32 random bytes). A short one could be guessed offline from a signed
/// request, or from a sealed value in the database.
pub const MIN_SECRET_LEN: usize = 24;

/// One receiver of webhooks. `Debug` shows the URL's scheme, host and port
/// only (a path or query may hold a token), and no secret.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// Signing secrets; every delivery carries one signature per secret. Put
    /// the new secret first while rotating, and drop the old one once the
    /// receiver knows the new one.
    pub secrets: Vec<Secret>,
    /// The event types delivered to this endpoint (default:
    /// [`DEFAULT_EVENTS`], `key.expiring` and `key.compromised`). See
    /// [`DELIVERABLE_EVENTS`]. At least one: an endpoint that would receive
    /// nothing, not even `key.compromised`, is refused.
    pub events: Vec<String>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("url", &super::deliver::shown_url(&self.url))
            .field("secrets", &self.secrets)
            .field("events", &self.events)
            .finish()
    }
}

impl EndpointConfig {
    /// An endpoint receiving [`DEFAULT_EVENTS`] (`key.expiring` and
    /// `key.compromised`), signed with one secret.
    pub fn new(url: impl Into<String>, secret: Secret) -> Self {
        Self {
            url: url.into(),
            secrets: vec![secret],
            events: DEFAULT_EVENTS.map(str::to_owned).to_vec(),
        }
    }

    /// Delivers these event types instead (at least one: validation
    /// refuses an empty list).
    pub fn events<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events = events.into_iter().map(Into::into).collect();
        self
    }

    /// Delivers every lifecycle event ([`DELIVERABLE_EVENTS`]).
    pub fn all_events(self) -> Self {
        self.events(DELIVERABLE_EVENTS)
    }

    /// Adds a secret (the next one, during a rotation).
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }
}

/// How long finished deliveries are kept by default (30 days).
pub const DEFAULT_DELIVERY_RETENTION: Duration = Duration::days(30);

/// The longest a notice threshold, `expired_lookback`, `max_backoff`,
/// `lease` or `delivery_retention` may be: ten years (times past the
/// calendar's end cannot be stored). The interval is at most a year
/// ([`MAX_GRACE`](crate::lifecycle::MAX_GRACE)).
pub const MAX_SETTING: Duration = Duration::days(3650);

/// Settings of a [`Notifier`](super::Notifier).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// How often the background task runs a pass (default 60 s; at most 365
    /// days). Real time: this paces the task, while notice and retry times
    /// follow the runtime's clock.
    pub interval: std::time::Duration,
    /// Notice thresholds before expiry (default `[14 d]`), e.g. `[14 d, 1 d]`;
    /// whole seconds.
    pub thresholds: Vec<Duration>,
    /// Record `key.expired` when a live, unrevoked key passes its expiry
    /// (default true). Keys that expired longer than `expired_lookback`
    /// before the pass are left alone, so a first start on an old database
    /// does not flood the log.
    pub record_expired: bool,
    /// See `record_expired` (default 7 days).
    pub expired_lookback: Duration,
    /// Receivers (default none: notices are still recorded in the audit log).
    pub endpoints: Vec<EndpointConfig>,
    /// Each request's time limit, connecting included (default 15 s).
    pub request_timeout: std::time::Duration,
    /// Attempts per delivery before it is given up: marked failed and
    /// audited as `webhook.failed` (default 12: with the default backoff,
    /// about 7 to 15 hours of retries, the waits being jittered). A
    /// delivery is not kept until it is acknowledged, however long that
    /// takes (see the [module docs](super), "Retries"). To retry far
    /// longer, raise this: once the backoff reaches `max_backoff`, each
    /// further attempt adds half to all of it (3 to 6 hours by default), so
    /// `max_attempts: 60` keeps a delivery for about 6 to 12 days.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each
    /// further failure (default 30 s; at least 1 s). Also the longest an
    /// endpoint answering 429, 502, 503 or 504 without `Retry-After` is
    /// paused as a whole (the delivery answered so waits its own backoff).
    pub initial_backoff: Duration,
    /// The longest wait between attempts (default 6 h); also the cap on an
    /// honoured `Retry-After`.
    pub max_backoff: Duration,
    /// How long a claimed delivery is reserved for its sender (default
    /// 5 min). A sender that dies leaves its claims to expire; another
    /// sender then takes them. It must be longer than `request_timeout`;
    /// keep it well above.
    pub lease: Duration,
    /// At most this many deliveries are claimed (and sent concurrently) at
    /// once (default 32).
    pub batch_size: u32,
    /// How long a finished delivery (delivered or failed) stays in the
    /// outbox for inspection before a pass deletes it (default 30 days;
    /// `None` keeps them all). The audit log keeps the events themselves,
    /// and `webhook.failed` for each failure, whatever this says.
    pub delivery_retention: Option<Duration>,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(60),
            thresholds: vec![DEFAULT_THRESHOLD],
            record_expired: true,
            expired_lookback: Duration::days(7),
            endpoints: Vec::new(),
            request_timeout: std::time::Duration::from_secs(15),
            max_attempts: 12,
            initial_backoff: Duration::seconds(30),
            max_backoff: Duration::hours(6),
            lease: Duration::minutes(5),
            batch_size: 32,
            delivery_retention: Some(DEFAULT_DELIVERY_RETENTION),
        }
    }
}

/// Environment variables [`NotifierConfig::from_env`] reads.
pub mod env {
    /// Receiver URL. Unset or empty: no webhooks, notices are still
    /// audited.
    pub const WEBHOOK_URL: &str = "SCOPEKEY_WEBHOOK_URL";
    /// `whsec_<base64>` of at least [`MIN_SECRET_LEN`](super::MIN_SECRET_LEN)
    /// (24) bytes, checked whenever it is set (a shorter one is refused at
    /// start); several, space- or comma-separated, while rotating. Required
    /// with a URL.
    pub const WEBHOOK_SECRET: &str = "SCOPEKEY_WEBHOOK_SECRET";
    /// Seconds between passes.
    pub const INTERVAL_SECONDS: &str = "SCOPEKEY_NOTIFIER_INTERVAL_SECONDS";
    /// Event types to deliver, comma-separated, or `all` (default
    /// [`DEFAULT_EVENTS`](super::DEFAULT_EVENTS): `key.expiring` and
    /// `key.compromised`). A value that names none (`,`) is refused: unset
    /// it for the default.
    pub const WEBHOOK_EVENTS: &str = "SCOPEKEY_WEBHOOK_EVENTS";
    /// Notice thresholds, comma-separated durations such as `14d,1d`.
    pub const NOTICE_THRESHOLDS: &str = "SCOPEKEY_NOTICE_THRESHOLDS";
    /// The server secret of automatic rotation, `whsec_<base64>` (several,
    /// current first, while changing it), for
    /// [`ScopeKeyBuilder::rotation_webhook_secret`](crate::ScopeKeyBuilder::rotation_webhook_secret);
    /// read by [`rotation_secrets_from_env`](super::rotation_secrets_from_env).
    /// Keep it apart from `SCOPEKEY_WEBHOOK_SECRET`: holders of keys never
    /// see it, only secrets derived from it.
    pub const ROTATION_SECRET: &str = "SCOPEKEY_ROTATION_SECRET";
    /// The ports keys' own rotation webhooks may name, comma- or
    /// space-separated (`443,8443`), for
    /// [`ScopeKeyBuilder::rotation_webhook_ports`](crate::ScopeKeyBuilder::rotation_webhook_ports)
    /// (443 alone when unset or empty); read by
    /// [`rotation_webhook_ports_from_env`](super::rotation_webhook_ports_from_env).
    /// The list replaces the default: name 443 in it to keep URLs without a
    /// port (`8443` alone refuses them, and keys already made with one are
    /// then left out of automatic rotation). A service and the `scopekey`
    /// CLI working on one store should agree.
    pub const ROTATION_WEBHOOK_PORTS: &str = "SCOPEKEY_ROTATION_WEBHOOK_PORTS";
}

/// Reads `SCOPEKEY_ROTATION_WEBHOOK_PORTS`: the ports to give
/// [`ScopeKeyBuilder::rotation_webhook_ports`](crate::ScopeKeyBuilder::rotation_webhook_ports),
/// or `None` when unset or empty (the builder's default, 443 alone).
pub fn rotation_webhook_ports_from_env() -> Result<Option<Vec<u16>>, NotifyError> {
    match std::env::var(env::ROTATION_WEBHOOK_PORTS) {
        Ok(v) if !v.trim().is_empty() => parse_ports(&v)
            .map(Some)
            .map_err(|e| NotifyError::Config(format!("{}: {e}", env::ROTATION_WEBHOOK_PORTS))),
        Err(std::env::VarError::NotUnicode(_)) => Err(NotifyError::Config(format!(
            "{} is not valid UTF-8",
            env::ROTATION_WEBHOOK_PORTS
        ))),
        _ => Ok(None),
    }
}

/// Ports separated by commas or whitespace (`443, 8443`), each 1 to 65535,
/// at least one; repeated ones count once.
pub fn parse_ports(value: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for part in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        match part.parse::<u16>() {
            Ok(port) if port > 0 => {
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            _ => return Err(format!("`{part}` is not a port (1 to 65535)")),
        }
    }
    if ports.is_empty() {
        return Err("names no port".into());
    }
    Ok(ports)
}

/// Reads `SCOPEKEY_ROTATION_SECRET` (empty if unset): the secrets to give
/// [`ScopeKeyBuilder::rotation_webhook_secret`](crate::ScopeKeyBuilder::rotation_webhook_secret),
/// current first.
pub fn rotation_secrets_from_env() -> Result<Vec<Secret>, NotifyError> {
    match std::env::var(env::ROTATION_SECRET) {
        Ok(v) if !v.trim().is_empty() => {
            let secrets = secret_list(env::ROTATION_SECRET, &v)?;
            check_secrets(env::ROTATION_SECRET, &secrets)?;
            Ok(secrets)
        }
        // Set but unreadable is a mistake to report, not a secret to drop.
        Err(std::env::VarError::NotUnicode(_)) => Err(NotifyError::Config(format!(
            "{} is not valid UTF-8",
            env::ROTATION_SECRET
        ))),
        _ => Ok(Vec::new()),
    }
}

/// Secrets separated by commas or whitespace.
fn secret_list(name: &str, value: &str) -> Result<Vec<Secret>, NotifyError> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Secret>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NotifyError::Config(format!("{name}: {e}")))
}

/// Refuses a current secret (the first, which signs or seals what is new)
/// shorter than [`MIN_SECRET_LEN`], naming `what`. A shorter one after it
/// is only warned about: kept while changing away from it, it opens or
/// signs alongside the new one until it can be dropped.
pub(crate) fn check_secrets(what: &str, secrets: &[Secret]) -> Result<(), NotifyError> {
    let short = |s: &Secret| s.as_bytes().len() < MIN_SECRET_LEN;
    if secrets.first().is_some_and(short) {
        return Err(NotifyError::Config(format!(
            "{what}: the current secret must be at least {MIN_SECRET_LEN} bytes (Standard \
             Webhooks: 24 to 64); make one with `openssl rand -base64 32` and prefix it with \
             `whsec_`"
        )));
    }
    if secrets.iter().skip(1).any(short) {
        tracing::warn!(
            "{what}: a previous secret is shorter than {MIN_SECRET_LEN} bytes; drop it once \
             the change is done"
        );
    }
    Ok(())
}

impl NotifierConfig {
    /// The defaults, overridden by the environment (see [`env`](mod@env)).
    pub fn from_env() -> Result<Self, NotifyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults, overridden by whatever `lookup` returns for the names in
    /// [`env`](mod@env) (testable without touching the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, NotifyError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::default();
        if let Some(v) = get(env::INTERVAL_SECONDS) {
            let secs: u64 = v.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                NotifyError::Config(format!(
                    "{} must be a positive whole number of seconds",
                    env::INTERVAL_SECONDS
                ))
            })?;
            config.interval = std::time::Duration::from_secs(secs);
        }
        if let Some(v) = get(env::NOTICE_THRESHOLDS) {
            config.thresholds = v
                .split(',')
                .map(|t| parse_duration(t.trim()))
                .collect::<Result<_, _>>()
                .map_err(|e| NotifyError::Config(format!("{}: {e}", env::NOTICE_THRESHOLDS)))?;
        }
        let secrets = get(env::WEBHOOK_SECRET)
            .map(|v| secret_list(env::WEBHOOK_SECRET, &v))
            .transpose()?;
        if let Some(secrets) = &secrets {
            check_secrets(env::WEBHOOK_SECRET, secrets)?;
        }
        if let Some(url) = get(env::WEBHOOK_URL) {
            let secrets = secrets.ok_or_else(|| {
                NotifyError::Config(format!(
                    "{} is set but {} is not: webhooks are always signed",
                    env::WEBHOOK_URL,
                    env::WEBHOOK_SECRET
                ))
            })?;
            let mut endpoint = EndpointConfig {
                url: url.trim().to_owned(),
                secrets,
                events: DEFAULT_EVENTS.map(str::to_owned).to_vec(),
            };
            if let Some(events) = get(env::WEBHOOK_EVENTS) {
                endpoint = if events.trim() == "all" {
                    endpoint.all_events()
                } else {
                    endpoint.events(events.split(',').map(str::trim).filter(|e| !e.is_empty()))
                };
                if endpoint.events.is_empty() {
                    return Err(NotifyError::Config(format!(
                        "{} names no event type; unset it for the default ({}), or set `all`",
                        env::WEBHOOK_EVENTS,
                        DEFAULT_EVENTS.join(", ")
                    )));
                }
            }
            config.endpoints.push(endpoint);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings (also done by [`Notifier::new`](super::Notifier::new)).
    pub fn validate(&self) -> Result<(), NotifyError> {
        let bad = |m: String| Err(NotifyError::Config(m));
        let years = MAX_SETTING.whole_days() / 365;
        if self.thresholds.iter().any(|t| *t <= Duration::ZERO) {
            return bad("notice thresholds must be positive".into());
        }
        // Notices are recorded per threshold in whole seconds: a fraction
        // would be cut off (and under a second, read as the expiry itself).
        if self.thresholds.iter().any(|t| t.subsec_nanoseconds() != 0) {
            return bad("notice thresholds must be whole seconds".into());
        }
        if self.thresholds.iter().any(|t| *t > MAX_SETTING)
            || self.expired_lookback > MAX_SETTING
            || self.max_backoff > MAX_SETTING
            || self.lease > MAX_SETTING
            || self.delivery_retention.is_some_and(|r| r > MAX_SETTING)
        {
            return bad(format!(
                "notice thresholds, expired_lookback, max_backoff, lease and \
                 delivery_retention must be at most {years} years"
            ));
        }
        if self.interval.is_zero() {
            return bad("the notifier interval must be positive".into());
        }
        // At most the longest rotation grace: a key under automatic
        // rotation is due one interval (or grace) before it expires, and a
        // longer interval would either rotate keys with more than a year
        // left (cutting the rest) or pass over one due between two passes.
        if Duration::try_from(self.interval).map_or(true, |i| i > crate::lifecycle::MAX_GRACE) {
            return bad(format!(
                "the notifier interval must be at most {} days",
                crate::lifecycle::MAX_GRACE.whole_days()
            ));
        }
        if self.request_timeout.is_zero() {
            return bad("the request timeout must be positive".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.initial_backoff < Duration::SECOND || self.max_backoff < self.initial_backoff {
            return bad(
                "initial_backoff must be at least a second, and max_backoff at least \
                 initial_backoff"
                    .into(),
            );
        }
        // A claim that lapses while its request may still be running lets
        // another sender send the same delivery again.
        if self.lease <= Duration::try_from(self.request_timeout).unwrap_or(Duration::MAX) {
            return bad("the claim lease must be longer than the request timeout".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.expired_lookback < Duration::ZERO {
            return bad("expired_lookback must not be negative".into());
        }
        if self.delivery_retention.is_some_and(|r| r < Duration::ZERO) {
            return bad("delivery_retention must not be negative".into());
        }
        let mut urls = std::collections::HashSet::new();
        for ep in &self.endpoints {
            // Named by scheme, host and port only: a path or query may hold
            // a token (a chat service's incoming-webhook URL, say).
            let shown = super::deliver::shown_url(&ep.url);
            let url = reqwest::Url::parse(&ep.url)
                .map_err(|e| NotifyError::Config(format!("webhook URL `{shown}`: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return bad(format!("webhook URL `{shown}` must be http or https"));
            }
            if !urls.insert(ep.url.as_str()) {
                return bad(format!(
                    "webhook URL `{shown}` (path and query not shown) is configured twice"
                ));
            }
            if ep.secrets.is_empty() {
                return bad(format!("webhook URL `{shown}` has no signing secret"));
            }
            check_secrets(&format!("webhook URL `{shown}`"), &ep.secrets)?;
            if ep.events.is_empty() {
                return bad(format!(
                    "webhook URL `{shown}` has no event types: it would receive nothing, not \
                     even key.compromised (EndpointConfig::new gives {})",
                    DEFAULT_EVENTS.join(", ")
                ));
            }
            for e in &ep.events {
                if !DELIVERABLE_EVENTS.contains(&e.as_str()) {
                    return bad(format!(
                        "event type `{e}` cannot be delivered; choose from {}",
                        DELIVERABLE_EVENTS.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads `14d`, `12h`, `90m`, `30s` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 14d, 12h, 30m or 90s"))?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("`{text}`: unit must be d, h, m or s")),
    };
    n.checked_mul(scale)
        .filter(|s| *s > 0)
        .map(Duration::seconds)
        .ok_or_else(|| format!("`{text}` must be positive and not absurdly large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("14d"), Ok(Duration::days(14)));
        assert_eq!(parse_duration("90"), Ok(Duration::seconds(90)));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ports_read_as_a_list() {
        assert_eq!(parse_ports("443"), Ok(vec![443]));
        assert_eq!(
            parse_ports(" 443, 8443 443\t9443 "),
            Ok(vec![443, 8443, 9443])
        );
        for bad in ["", ",", "0", "65536", "https", "443;8443", "-1", "44 3x"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn from_env() {
        let vars = HashMap::from([
            (env::WEBHOOK_URL, "http://127.0.0.1:9/hook"),
            (
                env::WEBHOOK_SECRET,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_ZGVtbyB3ZWJob29rIHNlY3JldCwgZm9yIHRlc3Rz",
            ),
            (env::INTERVAL_SECONDS, "5"),
            (env::NOTICE_THRESHOLDS, "14d, 1d"),
            (env::WEBHOOK_EVENTS, "all"),
        ]);
        let c = NotifierConfig::from_lookup(|n| vars.get(n).map(|v| v.to_string())).unwrap();
        assert_eq!(c.interval, std::time::Duration::from_secs(5));
        assert_eq!(c.thresholds, [Duration::days(14), Duration::days(1)]);
        assert_eq!(c.endpoints[0].secrets.len(), 2);
        assert_eq!(c.endpoints[0].events.len(), DELIVERABLE_EVENTS.len());

        let none = NotifierConfig::from_lookup(|_| None).unwrap();
        assert!(none.endpoints.is_empty());
        let unsigned = NotifierConfig::from_lookup(|n| {
            (n == env::WEBHOOK_URL).then(|| "http://127.0.0.1:9/".to_owned())
        });
        assert!(unsigned.is_err());

        // Without SCOPEKEY_WEBHOOK_EVENTS: expiry notices and compromise
        // reports, the default events.
        let plain = NotifierConfig::from_lookup(|n| {
            vars.get(n)
                .filter(|_| n != env::WEBHOOK_EVENTS)
                .map(|v| v.to_string())
        })
        .unwrap();
        assert_eq!(
            plain.endpoints[0].events,
            ["key.expiring", "key.compromised"]
        );
        assert_eq!(
            EndpointConfig::new("http://127.0.0.1:9/", SECRET_FOR_TESTS.parse().unwrap()).events,
            plain.endpoints[0].events
        );
    }

    /// An event list that names nothing is refused, read from the
    /// environment or set in code: the endpoint would receive nothing.
    #[test]
    fn an_empty_event_list_is_refused() {
        for events in [",", " , ,"] {
            let vars = HashMap::from([
                (env::WEBHOOK_URL, "http://127.0.0.1:9/hook"),
                (env::WEBHOOK_SECRET, SECRET_FOR_TESTS),
                (env::WEBHOOK_EVENTS, events),
            ]);
            let error = NotifierConfig::from_lookup(|n| vars.get(n).map(|v| v.to_string()))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("SCOPEKEY_WEBHOOK_EVENTS names no event type"),
                "{events:?}: {error}"
            );
        }
        let endpoint =
            EndpointConfig::new("http://127.0.0.1:9/", SECRET_FOR_TESTS.parse().unwrap())
                .events(Vec::<String>::new());
        let config = NotifierConfig {
            endpoints: vec![endpoint],
            ..NotifierConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("has no event types"), "{error}");
        assert!(error.contains("key.compromised"), "{error}");
    }

    const SECRET_FOR_TESTS: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
}
