//! Shared helpers for the HTTP integration tests: a real server on
//! 127.0.0.1:0 around a runtime with a manual clock, and a small HTTP/1.1
//! client that can send exactly the bytes a test needs (duplicate headers,
//! non-UTF-8 values), which friendlier clients refuse to.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use scopekey::actix::{ApiKeyAuth, AuthConfig};
use scopekey::{Actor, ManualClock, NewKey, ScopeKey};
use scopekey_runtime::testing::TestDb;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the test server is put together.
#[derive(Clone, Copy)]
pub struct Setup {
    /// Install the middleware (the default) or rely on extractors alone.
    pub middleware: bool,
    /// Where the management routes go.
    pub base: &'static str,
    /// Extra routes.
    pub extra: fn(&mut web::ServiceConfig),
    /// A realm other than the default.
    pub realm: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            middleware: true,
            base: "/api-keys",
            extra: |_| {},
            realm: None,
        }
    }
}

/// A running server, its runtime, its clock and an admin key (`*`).
pub struct TestApp {
    pub addr: SocketAddr,
    pub keys: ScopeKey,
    pub clock: ManualClock,
    pub admin: String,
    handle: ServerHandle,
}

impl TestApp {
    /// Starts a server with the management routes on a fresh runtime over
    /// `db`, bootstrapping an admin key the way the demo does.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, Setup::default()).await
    }

    pub async fn start_with(db: &TestDb, setup: Setup) -> Self {
        let clock = ManualClock::starting_now();
        let keys = ScopeKey::builder_arc(db.store.clone())
            .clock(clock.clone())
            .build();
        Self::serve(keys, clock, setup).await
    }

    /// Starts a server around a runtime built by the caller.
    pub async fn serve(keys: ScopeKey, clock: ManualClock, setup: Setup) -> Self {
        assert!(keys.is_empty().await.expect("is_empty"), "a fresh store");
        let admin = keys
            .create(NewKey::new("admin", ["*"]), Actor::System)
            .await
            .expect("bootstrap admin key")
            .plaintext
            .expose_secret()
            .to_owned();
        let handle_keys = keys.clone();
        let server = HttpServer::new(move || {
            let mut config = AuthConfig::new();
            if let Some(realm) = setup.realm {
                config = config.realm(realm);
            }
            App::new()
                .app_data(handle_keys.clone())
                .app_data(config)
                .wrap(actix_web::middleware::Condition::new(
                    setup.middleware,
                    ApiKeyAuth::new(),
                ))
                .configure(scopekey::actix::routes_at(setup.base))
                .configure(setup.extra)
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            addr,
            keys,
            clock,
            admin,
            handle,
        }
    }

    /// How many keys the store holds (up to 500), as the admin lists them.
    pub async fn key_count(&self) -> usize {
        self.get("/api-keys?limit=500")
            .bearer(&self.admin)
            .send()
            .await
            .json()["items"]
            .as_array()
            .expect("items")
            .len()
    }

    /// Stops the server (call before cleaning up the database).
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }

    pub fn request(&self, method: &str, path: &str) -> Request {
        request_to(self.addr, method, path)
    }

    pub fn get(&self, path: &str) -> Request {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str) -> Request {
        self.request("POST", path)
    }

    /// Creates a key through the API with the admin key; returns the 201 body.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> Value {
        let res = self
            .post("/api-keys")
            .bearer(&self.admin)
            .json(&serde_json::json!({ "name": name, "scopes": scopes }))
            .send()
            .await;
        assert_eq!(res.status, 201, "create {name}: {}", res.text());
        res.json()
    }
}

/// A request to any server (another process, say).
pub fn request_to(addr: SocketAddr, method: &str, path: &str) -> Request {
    Request {
        addr,
        method: method.to_owned(),
        path: path.to_owned(),
        headers: Vec::new(),
        body: None,
        chunked: false,
    }
}

/// One request, built up and sent over a fresh connection.
pub struct Request {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    chunked: bool,
}

impl Request {
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub fn bearer(self, key: &str) -> Self {
        self.header("Authorization", format!("Bearer {key}"))
    }

    pub fn json(self, body: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).expect("json"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the body with `Transfer-Encoding: chunked` (8 KiB chunks) and
    /// no `Content-Length`: the server must count the bytes as they come.
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub async fn send(self) -> Response {
        self.send_after(None).await
    }

    /// Connects, then waits at `start` (when given) before writing the
    /// request: requests sent by tasks sharing one barrier reach the server
    /// together, their connections already made.
    pub async fn send_after(self, start: Option<&tokio::sync::Barrier>) -> Response {
        // At the barrier whatever the connection did: a task that failed
        // to connect must not leave the others waiting there for ever.
        let connected = tokio::net::TcpStream::connect(self.addr).await;
        if let Some(start) = start {
            start.wait().await;
        }
        let mut stream = connected.expect("connect to the test server");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.addr
        )
        .into_bytes();
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        let body = self.body.unwrap_or_default();
        if self.chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for chunk in body.chunks(8 * 1024) {
                head.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                head.extend_from_slice(chunk);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"0\r\n\r\n");
        } else {
            if !body.is_empty() || self.method == "POST" {
                head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(&body);
        }
        // The server may answer (413) and close before reading everything;
        // what matters is the answer, so a failed write is not fatal.
        let _ = stream.write_all(&head).await;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if !raw.is_empty() => {
                    eprintln!("connection ended with {e} after the response");
                    break;
                }
                Err(e) => panic!("reading the response: {e}"),
            }
        }
        Response::parse(&raw)
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Self {
            status,
            headers,
            body,
        }
    }

    /// The value of a header (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Checks a problem+json error: status, content type, body status, and
    /// the challenge when one is expected.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, challenge: Option<&str>) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "{body}");
        for field in ["type", "title", "detail"] {
            assert!(body[field].is_string(), "{field} missing: {body}");
        }
        assert_eq!(self.header("www-authenticate"), challenge, "{self:?}");
        body
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

pub const NO_KEY: &str = r#"Bearer realm="api""#;
pub const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;
pub const INVALID_REQUEST: &str = r#"Bearer error="invalid_request""#;

pub fn insufficient(scopes: &str) -> String {
    format!(r#"Bearer error="insufficient_scope", scope="{scopes}""#)
}

/// The `key` (plaintext) and `id` of a 201 body.
pub fn key_and_id(created: &Value) -> (String, String) {
    (
        created["key"].as_str().expect("key").to_owned(),
        created["id"].as_str().expect("id").to_owned(),
    )
}

/// An RFC 3339 time field of a JSON body.
pub fn time_of(v: &Value, field: &str) -> time::OffsetDateTime {
    let text = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {v}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("`{field}` is not RFC 3339 ({e}): {text}"))
}

/// A well-formed key (right prefix and checksum) that no store holds.
pub fn unknown_key() -> String {
    scopekey::KeyFormat::default()
        .generate()
        .expect("generate")
        .expose_secret()
        .to_owned()
}

/// Credentials refused as unreadable, before any lookup, each a header name
/// and its raw value: empty, spaces, two tokens, oversized, not ASCII.
/// `key` is a valid key, which some of them hold.
pub fn unreadable_credentials(key: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Authorization", b"Bearer".to_vec()),
        ("Authorization", b"Bearer    ".to_vec()),
        ("Authorization", format!("Bearer {key} {key}").into_bytes()),
        (
            "Authorization",
            format!("Bearer {key}{}", "A".repeat(600)).into_bytes(),
        ),
        ("X-API-Key", "A".repeat(4000).into_bytes()),
        ("Authorization", b"Bearer sk_\xff\xfe\xfd".to_vec()),
        ("X-API-Key", b"sk_\xc3\xa9t\xc3\xa9".to_vec()),
        ("X-API-Key", Vec::new()),
    ]
}
