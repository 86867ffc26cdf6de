//! No plaintext key ever leaves the service except in the two responses
//! that create one (`POST /api-keys`, `POST /api-keys/{id}/rotate`): not in
//! any other response body, not in any log line.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;
use time::Duration;

/// Every log line of this test binary (every thread: the server's workers
/// too), at debug level and at trace for scopekey's own crates.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,scopekey=trace,scopekey_runtime=trace,scopekey_actix=trace",
            ))
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .expect("the only subscriber in this binary");
        buffer
    })
    .clone()
}

/// How many bytes the capture holds: a mark to read the lines after.
fn logged_len() -> usize {
    logs().lock().unwrap().len()
}

/// What was logged since `mark` (by any thread of this binary: the stories
/// hold [`ONE_STORY_AT_A_TIME`], so only by the running story's server).
fn logged_since(mark: usize) -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()[mark..]).into_owned()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Held for each story: the capture is the whole binary's, so a story
/// running beside another (the other backend's) could find that one's log
/// lines and pass on them. The log checks read only what was logged since
/// their own story began.
static ONE_STORY_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records responses and checks them, and what was logged since it began,
/// against every plaintext seen.
struct Watch {
    secrets: Vec<String>,
    responses: Vec<(String, Response)>,
    /// Where the story's log lines begin.
    mark: usize,
}

impl Watch {
    fn new() -> Self {
        Self {
            secrets: Vec::new(),
            responses: Vec::new(),
            mark: logged_len(),
        }
    }

    fn secret(&mut self, key: &str) -> String {
        self.secrets.push(key.to_owned());
        key.to_owned()
    }

    fn saw(&mut self, label: &str, res: Response) -> Response {
        self.responses.push((label.to_owned(), res.clone()));
        res
    }

    /// The secret part of a key (no prefix), which is what must not leak.
    fn secret_parts(&self) -> Vec<&str> {
        self.secrets.iter().map(|k| &k[3..]).collect()
    }

    fn check(&self) {
        for (label, res) in &self.responses {
            let body = res.text();
            let headers = format!("{:?}", res.headers);
            for secret in self.secret_parts() {
                assert!(!headers.contains(secret), "{label}: headers carry a key");
                assert!(
                    !body.contains(secret),
                    "{label}: body carries a key: {body}"
                );
            }
            assert!(!body.contains("key_hash"), "{label}: {body}");
        }
        let logs = logged_since(self.mark);
        // The capture sees the server's worker threads: refusals are logged there.
        assert!(
            logs.contains("api key refused"),
            "the capture misses the server's logs"
        );
        for secret in self.secret_parts() {
            assert!(
                !logs.contains(secret),
                "a log line carries a key: {}",
                logs.lines()
                    .find(|l| l.contains(secret))
                    .unwrap_or_default()
            );
        }
    }
}

async fn story(db: &TestDb) {
    let _one_at_a_time = ONE_STORY_AT_A_TIME.lock().await;
    let _ = logs();
    let mut w = Watch::new();
    let app = TestApp::start(db).await;
    w.secret(&app.admin);

    // The creating 201s carry their own key and no other.
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "leaky", "scopes": ["orders:read"], "expires_in_seconds": 60 }))
        .send()
        .await;
    assert_eq!(res.status, 201);
    let (key, id) = key_and_id(&res.json());
    let key = w.secret(&key);
    assert!(res.text().contains(&key) && !res.text().contains(&app.admin[3..]));

    let res = app
        .post(&format!("/api-keys/{id}/rotate"))
        .bearer(&key)
        .json(&json!({ "grace_seconds": 5 }))
        .send()
        .await;
    assert_eq!(res.status, 201);
    let (next, next_id) = key_and_id(&res.json());
    let next = w.secret(&next);
    assert!(
        !res.text().contains(&key[3..]),
        "rotation shows the old key"
    );

    // Everything else, recorded and checked.
    let admin = app.admin.clone();
    for (label, req) in [
        ("self", app.get("/api-keys/self").bearer(&key)),
        (
            "self x-api-key",
            app.get("/api-keys/self").header("X-API-Key", &next),
        ),
        ("get", app.get(&format!("/api-keys/{id}")).bearer(&admin)),
        ("list", app.get("/api-keys?limit=500").bearer(&admin)),
        (
            "events",
            app.get("/api-keys/events?limit=500").bearer(&admin),
        ),
        (
            "key events",
            app.get(&format!("/api-keys/{next_id}/events"))
                .bearer(&admin),
        ),
        (
            "query string",
            app.get(&format!("/api-keys/self?api_key={key}")),
        ),
        (
            "two credentials",
            app.get("/api-keys/self")
                .bearer(&key)
                .header("X-API-Key", &key),
        ),
        (
            "key as a wrong type",
            app.post("/api-keys/compromised")
                .bearer(&admin)
                .json(&json!({ "keys": key })),
        ),
        (
            "key in a bad scope",
            app.post("/api-keys")
                .bearer(&admin)
                .json(&json!({ "name": "x", "scopes": [key] })),
        ),
        (
            "key as a name of wrong type",
            app.post("/api-keys")
                .bearer(&admin)
                .json(&json!({ "name": [key], "scopes": ["a:b"] })),
        ),
        (
            "key in an unknown field",
            app.post(&format!("/api-keys/{next_id}/revoke"))
                .bearer(&admin)
                .json(&json!({ key.as_str(): 1 })),
        ),
    ] {
        let res = req.send().await;
        w.saw(label, res);
    }

    app.clock.advance(Duration::seconds(6)); // the old key's grace ends
    let res = app.get("/api-keys/self").bearer(&key).send().await;
    assert_eq!(w.saw("expired", res).status, 401);
    let res = app
        .post("/api-keys/compromised")
        .bearer(&admin)
        .json(&json!({ "keys": [key, next, "sk_garbage"] }))
        .send()
        .await;
    assert_eq!(w.saw("compromised", res).status, 200);
    let res = app.get("/api-keys/self").bearer(&next).send().await;
    assert_eq!(w.saw("revoked", res).status, 401);
    let res = app
        .get(&format!("/api-keys/{next_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(w.saw("revoked key", res).status, 200);

    // Each refusal's reason reaches tracing, on the line that refuses the
    // key (found by the key's hint; a malformed key has none), while the
    // client sees one and the same answer for all four.
    let res = app
        .post("/api-keys")
        .bearer(&admin)
        .json(&json!({ "name": "brief", "scopes": ["orders:read"], "expires_in_seconds": 1 }))
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let brief = w.secret(&key_and_id(&res.json()).0);
    app.clock.advance(Duration::seconds(1));
    let unknown = w.secret(&unknown_key());
    let mut malformed = next.clone();
    let last = malformed.pop().unwrap();
    malformed.push(if last == 'a' { 'b' } else { 'a' });
    let malformed = w.secret(&malformed);
    let mut answers = Vec::new();
    for (reason, presented, well_formed) in [
        ("expired", &brief, true),
        ("revoked", &next, true),
        ("unknown", &unknown, true),
        ("malformed", &malformed, false),
    ] {
        let mark = logged_len();
        let res = app.get("/api-keys/self").bearer(presented).send().await;
        let res = w.saw(reason, res);
        let logged = logged_since(mark);
        let hint = if well_formed {
            format!("hint=Some(\"sk_…{}\")", &presented[presented.len() - 4..])
        } else {
            "hint=None".to_owned()
        };
        let line = logged
            .lines()
            .find(|l| l.contains("api key refused") && l.contains(&hint))
            .unwrap_or_else(|| panic!("{reason}: no refusal with {hint} logged: {logged}"));
        assert!(
            line.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {line}"
        );
        answers.push((reason, res));
    }
    let same = |res: &Response| {
        let headers: Vec<_> = res
            .headers
            .iter()
            .filter(|(name, _)| name != "date")
            .cloned()
            .collect();
        (res.status, headers, res.body.clone())
    };
    let (_, first) = &answers[0];
    first.assert_problem(401, Some(INVALID_TOKEN));
    for (reason, res) in &answers[1..] {
        assert_eq!(same(res), same(first), "{reason} is told apart");
    }

    w.check();
    app.stop().await;
}

both_backends!(no_plaintext_in_responses_or_logs, story);
