//! One HTTP attempt and what it means: the client (HTTP/1.1, rustls with the
//! ring provider, no redirects, a timeout on every request), the Standard
//! Webhooks headers, the classification of responses, and the backoff.

use std::net::SocketAddr;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::NotifyError;
use super::signature::{Secret, signature_header};
use crate::lifecycle::{host_ip, internal};

/// What a receiver's answer (or silence) means for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx: done.
    Delivered(u16),
    /// 410 Gone: the receiver wants no more; disable the endpoint.
    Gone,
    /// 429, 502, 503, 504: slow down, honouring `Retry-After` if given.
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Any other status, a redirect (never followed), a timeout or a
    /// transport error: retry with backoff.
    Failed { status: Option<u16>, error: String },
}

/// The notifier's HTTP clients: one for the operator's configured
/// endpoints, and one for keys' own rotation webhooks (the holders'),
/// unless those are allowed to be insecure and share the first.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) endpoints: reqwest::Client,
    /// `None` when insecure rotation webhooks are allowed: no checks.
    pub(crate) holders: Option<reqwest::Client>,
}

/// Builds the HTTP clients: HTTP/1.1 only, rustls with the ring provider and
/// the platform's trust store, redirects never followed, and `timeout` on
/// every request, connection included. Without any system CA certificate
/// (a minimal container), set-up fails when `tls_needed_for` says why TLS
/// is needed (an `https` endpoint is configured, or keys' own webhooks,
/// `https`, are to receive successors); otherwise plain `http://` endpoints
/// still work, and an `https` URL (a holder's, when insecure rotation
/// webhooks are allowed) fails at delivery.
///
/// Unless `insecure_holders`, there is a holders' client, which connects
/// only to public addresses: it resolves host names itself and drops every
/// address [`internal`] to the network (a name with no other address fails
/// to connect), and it goes direct, never through a proxy from the
/// environment (`HTTPS_PROXY`), which would resolve the name where the
/// check cannot see it. A holder's URL is set by a caller with
/// `api_keys:write`, not by the operator; the operator's endpoints may be
/// anywhere.
pub(crate) fn clients(
    timeout: std::time::Duration,
    tls_needed_for: Option<&str>,
    insecure_holders: bool,
) -> Result<Clients, NotifyError> {
    let tls = tls(tls_needed_for)?;
    let builder = || {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("scopekey-webhooks/", env!("CARGO_PKG_VERSION")))
    };
    let build = |b: reqwest::ClientBuilder| {
        b.build()
            .map_err(|e| NotifyError::Config(format!("HTTP client setup failed: {e}")))
    };
    let holders = match insecure_holders {
        true => None,
        false => Some(build(
            builder().no_proxy().dns_resolver(Arc::new(PublicOnly)),
        )?),
    };
    Ok(Clients {
        endpoints: build(builder())?,
        holders,
    })
}

/// Resolves host names with the system's resolver and keeps only the
/// addresses that are not [`internal`].
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public = public_only(&host, found)?;
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `found` that are not internal; an error naming `host`
/// if there are none.
fn public_only(
    host: &str,
    found: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let public: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| !internal(addr.ip()))
        .collect();
    if public.is_empty() {
        return Err(format!(
            "`{host}` has no public address (internal and reserved ones, such as loopback, private and link-local, are refused for a key's own webhook)"
        ));
    }
    Ok(public)
}

/// Why a key's own webhook URL may not be posted to, checked at every
/// delivery (the URL was checked when it was set, possibly by a runtime
/// with other settings): it must be `https` on one of `ports`, and an
/// IP-literal host must not be [`internal`] (host names are checked as they
/// resolve, by the holders' client).
pub(crate) fn refused_holder_url(url: &str, ports: &[u16]) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("not a valid URL: {e}")),
    };
    if parsed.scheme() != "https" {
        return Some("refused: a key's own webhook must be https".to_owned());
    }
    let port = parsed.port_or_known_default().unwrap_or_default();
    if !ports.contains(&port) {
        return Some(format!(
            "refused: port {port} is not one this service allows for a key's own webhook"
        ));
    }
    let ip = host_ip(&parsed)?;
    internal(ip).then(|| {
        format!(
            "refused: {ip} is an internal or reserved address (loopback, private, link-local, ...)"
        )
    })
}

fn tls(needed_for: Option<&str>) -> Result<rustls::ClientConfig, NotifyError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Config(format!("TLS setup failed: {e}")))?;
    let tls = match (builder.clone().with_platform_verifier(), needed_for) {
        (Ok(b), _) => b.with_no_client_auth(),
        (Err(e), Some(why)) => {
            return Err(NotifyError::Config(format!(
                "TLS setup failed: https needs the system's CA certificates ({why}): {e}"
            )));
        }
        (Err(e), None) => {
            tracing::warn!(error = %e, "no TLS trust roots; https webhook URLs would fail");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoTrust {
                    reason: e.to_string(),
                    schemes: provider
                        .signature_verification_algorithms
                        .supported_schemes(),
                }))
                .with_no_client_auth()
        }
    };
    Ok(tls)
}

/// A certificate verifier for a machine without trust roots: refuses every
/// server, saying why.
#[derive(Debug)]
struct NoTrust {
    reason: String,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for NoTrust {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.reason.clone()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.reason.clone()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.reason.clone()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// Posts one delivery, signed with every secret, and classifies the answer.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    url: &str,
    secrets: &[Secret],
    id: &str,
    now: OffsetDateTime,
    payload: &str,
) -> Outcome {
    let timestamp = now.unix_timestamp();
    let signature = signature_header(secrets, id, timestamp, payload.as_bytes());
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(payload.to_owned())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            return Outcome::Failed {
                status: None,
                // Without the URL: a credential in it (user information, a
                // token in the query) would reach the outbox and the logs.
                error: format!("{kind}: {}", error_chain(&e.without_url())),
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    classify(status, retry_after)
}

/// A webhook URL as audit events and logs show it: scheme, host and port
/// only. Many receivers take a token in the path (`/services/T0/B0/secret`)
/// or the query, or credentials as user information; the audit log is
/// readable by any key with `api_keys:read`.
pub(crate) fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            // `localhost:8080/hook` reads as the scheme `localhost`.
            (None, _) => format!("{}:", u.scheme()),
        },
        Err(_) => "(not a URL)".to_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The meaning of a status code, per the Standard Webhooks specification.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        410 => Outcome::Gone,
        429 | 502 | 503 | 504 => Outcome::Throttled {
            status,
            retry_after,
        },
        300..=399 => Outcome::Failed {
            status: Some(status),
            error: format!("redirect ({status}) not followed"),
        },
        _ => Outcome::Failed {
            status: Some(status),
            error: format!("HTTP {status}"),
        },
    }
}

/// `Retry-After`: delay-seconds, or an HTTP-date (IMF-fixdate).
pub(crate) fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u32>() {
        return Some(Duration::seconds(i64::from(secs)));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    Some((at - now).max(Duration::ZERO))
}

/// The wait after the `failures`-th failed attempt (1-based): `initial`
/// doubled per earlier failure, capped at `max`, then jittered into its
/// upper half (so the wait is never below half the nominal backoff, and
/// senders that failed together spread out).
pub(crate) fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(40);
    let nominal_ms = initial
        .whole_milliseconds()
        .saturating_mul(1i128 << exp)
        .min(max.whole_milliseconds());
    let half = nominal_ms / 2;
    let jitter = match getrandom::u64() {
        Ok(r) if half > 0 => i128::from(r) % (half + 1),
        // No randomness (or nothing to spread): the full nominal wait.
        _ => half,
    };
    let ms = i64::try_from(nominal_ms - half + jitter).unwrap_or(i64::MAX);
    Duration::milliseconds(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(204, None), Outcome::Delivered(204));
        assert_eq!(classify(410, None), Outcome::Gone);
        assert!(matches!(
            classify(302, None),
            Outcome::Failed {
                status: Some(302),
                ..
            }
        ));
        assert!(matches!(
            classify(503, None),
            Outcome::Throttled { status: 503, .. }
        ));
        assert!(matches!(
            classify(500, None),
            Outcome::Failed {
                status: Some(500),
                ..
            }
        ));
    }

    #[test]
    fn retry_after() {
        let now = time::macros::datetime!(2015-10-21 07:28:00 UTC);
        assert_eq!(parse_retry_after("120", now), Some(Duration::seconds(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::seconds(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let (i, m) = (Duration::seconds(10), Duration::seconds(100));
        for _ in 0..50 {
            let first = backoff(1, i, m);
            assert!(
                first >= Duration::seconds(5) && first <= Duration::seconds(10),
                "{first}"
            );
            let third = backoff(3, i, m);
            assert!(
                third >= Duration::seconds(20) && third <= Duration::seconds(40),
                "{third}"
            );
            let late = backoff(30, i, m);
            assert!(late >= Duration::seconds(50) && late <= m, "{late}");
        }
    }

    #[test]
    fn only_public_addresses_are_kept() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = [
            addr("127.0.0.1:0"),
            addr("93.184.215.14:0"),
            addr("10.1.2.3:0"),
            addr("[::1]:0"),
            addr("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:0"),
            addr("[::ffff:192.168.0.1]:0"),
        ];
        assert_eq!(
            public_only("example.org", mixed).unwrap(),
            [
                addr("93.184.215.14:0"),
                addr("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:0")
            ]
        );
        let internal_only = [addr("169.254.169.254:0"), addr("[fd00::1]:0")];
        let error = public_only("metadata.internal", internal_only).unwrap_err();
        assert!(
            error.contains("`metadata.internal` has no public address"),
            "{error}"
        );
        assert!(public_only("nothing.example", []).is_err());
    }

    #[test]
    fn internal_and_reserved_addresses() {
        let internal_ones = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.192",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ];
        for ip in internal_ones {
            assert!(internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
        ];
        for ip in public {
            assert!(!internal(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn holder_urls_checked_at_delivery() {
        for url in [
            "https://127.0.0.1/hooks",
            "https://127.1/hooks",
            "https://0x7f000001/hooks",
            "https://10.0.0.8:8443/hooks",
            "https://169.254.169.254/latest",
            "https://[::1]/hooks",
            "https://[::ffff:192.168.1.1]/hooks",
        ] {
            let why =
                refused_holder_url(url, &[443, 8443]).unwrap_or_else(|| panic!("{url} allowed"));
            assert!(why.contains("internal or reserved address"), "{url}: {why}");
        }
        let why = refused_holder_url("http://holder.example/hooks", &[443]).unwrap();
        assert!(why.contains("must be https"), "{why}");
        assert!(refused_holder_url("not a url", &[443]).is_some());
        // Names are the resolver's to check; public literals pass.
        assert_eq!(
            refused_holder_url("https://holder.example/hooks", &[443]),
            None
        );
        assert_eq!(refused_holder_url("https://localhost/hooks", &[443]), None);
        assert_eq!(
            refused_holder_url("https://93.184.215.14/hooks", &[443]),
            None
        );
        // A port the service does not allow (any longer), whoever set it.
        let why = refused_holder_url("https://holder.example:6379/hooks", &[443]).unwrap();
        assert!(
            why.contains("port 6379 is not one this service allows"),
            "{why}"
        );
        assert_eq!(
            refused_holder_url("https://holder.example:8443/hooks", &[443, 8443]),
            None
        );
    }

    /// The holders' client never connects to a name that resolves to
    /// loopback, where the operator's client (which holders share when
    /// insecure webhooks are allowed) does.
    #[tokio::test]
    async fn holders_client_resolves_to_public_addresses_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://localhost:{}/",
            listener.local_addr().unwrap().port()
        );
        let timeout = std::time::Duration::from_secs(5);
        let strict = clients(timeout, None, false).unwrap();
        let holders = strict.holders.expect("a holders' client");
        let refused = holders.get(&url).send().await.unwrap_err();
        let chain = error_chain(&refused);
        assert!(
            chain.contains("`localhost` has no public address"),
            "{chain}"
        );
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept());
        assert!(accepted.await.is_err(), "no connection was made");

        let insecure = clients(timeout, None, true).unwrap();
        assert!(insecure.holders.is_none(), "no checks when insecure");
        for client in [strict.endpoints, insecure.endpoints] {
            let sent = tokio::spawn({
                let url = url.clone();
                async move { client.get(url).send().await }
            });
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut conn,
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
            assert_eq!(sent.await.unwrap().unwrap().status(), 204);
        }
    }

    #[test]
    fn shown_urls_keep_only_scheme_host_and_port() {
        for (url, shown) in [
            (
                "https://hooks.example.com/services/T0/B0/secret",
                "https://hooks.example.com",
            ),
            (
                "https://user:pass@hooks.example.com:8443/x?token=t#f",
                "https://hooks.example.com:8443",
            ),
            ("http://127.0.0.1:9000/hooks", "http://127.0.0.1:9000"),
            ("not a url", "(not a URL)"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }
}
