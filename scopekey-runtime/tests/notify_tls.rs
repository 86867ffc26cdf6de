//! A notifier on a machine without CA certificates (a minimal container)
//! does not start when it would need TLS: with an `https` endpoint
//! configured, and with a rotation secret (keys' own webhooks are `https`,
//! sent with the same TLS set-up), since it would otherwise rotate keys
//! whose successors no holder could ever receive. The test runs its
//! notifiers in a child process (this test binary again) whose trust store
//! is empty (`SSL_CERT_FILE=/dev/null`).

// `SSL_CERT_FILE` empties the trust store where rustls-native-certs reads
// it: on Linux, not where the platform's verifier ignores it.
#![cfg(all(feature = "webhooks", target_os = "linux"))]

use std::process::Command;
use std::sync::Arc;

use scopekey_runtime::ScopeKey;
use scopekey_runtime::notify::{EndpointConfig, Notifier, NotifierConfig, Outbox};
use scopekey_runtime::testing::{Backend, TestDb};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROTATION_SECRET: &str = "whsec_cm90YXRpb24gc2VjcmV0IGZvciB0ZXN0cyBvbmx5IQ==";

/// Set in the child process.
const CHILD: &str = "SCOPEKEY_TEST_NO_ROOTS_CHILD";

#[test]
fn without_trust_roots_no_notifier_that_needs_them_starts() {
    if std::env::var_os(CHILD).is_some() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(child());
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_trust_roots_no_notifier_that_needs_them_starts",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1")
        // rustls-native-certs reads only these when set: no roots at all.
        .env("SSL_CERT_FILE", "/dev/null")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child process failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The child ran this test (not none, as a renamed test would).
    assert!(stdout.contains("1 passed"), "{stdout}");
}

async fn child() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let plain = NotifierConfig {
        endpoints: vec![EndpointConfig::new(
            "http://127.0.0.1:9/hooks",
            SECRET.parse().unwrap(),
        )],
        ..NotifierConfig::default()
    };
    let https = NotifierConfig {
        endpoints: vec![EndpointConfig::new(
            "https://hooks.example/scopekey",
            SECRET.parse().unwrap(),
        )],
        ..NotifierConfig::default()
    };
    let runtime = |secret: bool, insecure: bool| {
        let mut builder =
            ScopeKey::builder_arc(Arc::clone(&db.store)).allow_insecure_rotation_webhooks(insecure);
        if secret {
            builder = builder.rotation_webhook_secret(ROTATION_SECRET.parse().unwrap());
        }
        builder.build()
    };
    let start = |keys: ScopeKey, config: &NotifierConfig| {
        let (url, config) = (db.url.clone(), config.clone());
        async move { Notifier::new(keys, Outbox::connect(&url).await.unwrap(), config) }
    };

    // A rotation secret, holders' webhooks https: refused, saying why.
    let error = start(runtime(true, false), &plain)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("CA certificates"), "{error}");
    assert!(error.contains("rotation secret"), "{error}");
    // An https endpoint: refused too.
    let error = start(runtime(false, false), &https)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("CA certificates"), "{error}");
    assert!(error.contains("https webhook URL is configured"), "{error}");

    // Nothing that needs TLS: plain http endpoints work without roots; so
    // does a runtime allowing insecure rotation webhooks (development),
    // whose holders' https URLs would fail at delivery.
    assert!(start(runtime(false, false), &plain).await.is_ok());
    assert!(start(runtime(true, true), &plain).await.is_ok());
    db.cleanup().await;
}
