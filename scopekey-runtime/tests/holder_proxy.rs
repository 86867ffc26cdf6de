//! A key's own rotation webhook never goes through the environment's proxy
//! (`HTTP_PROXY`, `HTTPS_PROXY`): the proxy would resolve the holder's host
//! name where the notifier's check of its addresses cannot see. The
//! operator's endpoints do use it. The test runs its notifier in a child
//! process (this test binary again), with the proxy in the environment.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use scopekey_runtime::notify::{
    DeliveryFilter, DeliveryState, EndpointConfig, Notifier, NotifierConfig, Outbox,
};
use scopekey_runtime::testing::{Backend, TestDb, auto_rotating};
use scopekey_runtime::{Actor, ManualClock, ScopeKey, event_type};
use time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROTATION_SECRET: &str = "whsec_cm90YXRpb24gc2VjcmV0IGZvciB0ZXN0cyBvbmx5IQ==";

/// A proxy that records the request line of every connection it gets and
/// answers 200 (to a plain-HTTP request; a `CONNECT` gets the same and then
/// nothing more).
fn start_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            record.lock().unwrap().push(line.trim_end().to_owned());
            // Drain the headers and a small body, then answer.
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

/// Set in the child process.
const CHILD: &str = "SCOPEKEY_TEST_PROXY_CHILD";

#[test]
fn holders_bypass_the_environment_proxy() {
    if std::env::var_os(CHILD).is_some() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(child());
    }
    let (proxy, seen) = start_proxy();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "holders_bypass_the_environment_proxy",
            "--nocapture",
        ])
        .env(CHILD, "1");
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        command.env(name, &proxy);
    }
    for name in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
        command.env_remove(name);
    }
    let status = command.status().unwrap();
    assert!(
        status.success(),
        "the child's notifier pass failed: {status}"
    );
    // The operator's delivery went through the proxy, and nothing else did.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen, ["POST http://operator.invalid/hooks HTTP/1.1"; 2],
        "only the operator's deliveries reached the proxy"
    );
}

/// One notifier pass with a key due for automatic rotation, whose holder
/// is a name that resolves to loopback, and an operator endpoint on a name
/// only the proxy can reach.
async fn child() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let clock = ManualClock::starting_now();
    let builder = |insecure: bool| {
        ScopeKey::builder_arc(Arc::clone(&db.store))
            .clock(clock.clone())
            .default_grace(Duration::hours(24))
            .rotation_webhook_secret(ROTATION_SECRET.parse().unwrap())
            .allow_insecure_rotation_webhooks(insecure)
            // Port 9 (discard), where nothing listens: the strict runtime
            // allows it, so its refusal is the connection's.
            .rotation_webhook_ports([9])
            .build()
    };
    // A holder on a name that resolves to loopback (accepted by a
    // permissive runtime; served by a strict one).
    let holder_url = "https://localhost:9/rotate";
    builder(true)
        .create(auto_rotating("machine", holder_url), Actor::System)
        .await
        .unwrap();
    let config = NotifierConfig {
        endpoints: vec![
            EndpointConfig::new("http://operator.invalid/hooks", SECRET.parse().unwrap())
                .events([event_type::KEY_ROTATED]),
        ],
        request_timeout: StdDuration::from_secs(5),
        ..NotifierConfig::default()
    };
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let notifier = Notifier::new(builder(false), outbox.clone(), config).unwrap();

    clock.advance(Duration::days(29) + Duration::hours(1));
    let pass = notifier.run_once().await.unwrap();
    assert_eq!(pass.rotated, 1, "{pass:?}");
    // The operator's copy of the rotation went through the proxy (checked
    // by the parent)...
    // (key.rotated is audited on both keys: two deliveries)
    assert_eq!(pass.deliveries.delivered, 2, "{pass:?}");
    // ...and the holder's successor did not: the notifier resolved the
    // name itself and refused its loopback address.
    let deliveries = outbox
        .deliveries(&DeliveryFilter {
            event_type: Some(event_type::KEY_ROTATED.to_owned()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    let failed: Vec<_> = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the holder's, to be retried: {deliveries:?}"
    );
    // (Why goes to the server's log: the outbox says only that it could
    // not connect.)
    let error = failed[0].last_error.as_deref().unwrap_or_default();
    assert_eq!(error, "could not connect");
    db.cleanup().await;
}
