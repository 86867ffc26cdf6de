//! Every kind of bad input named by the specification, over real HTTP:
//! bodies, field values, ids, query parameters, and credentials.

mod common;

use actix_web::{HttpResponse, get, web};
use common::*;
use scopekey::requires_scope;
use scopekey_runtime::both_backends;
use scopekey_runtime::testing::TestDb;
use serde_json::json;

async fn bad_bodies(db: &TestDb) {
    let app = TestApp::start(db).await;
    let create = |body: Vec<u8>| {
        app.post("/api-keys")
            .bearer(&app.admin)
            .header("Content-Type", "application/json")
            .body(body)
    };

    // Not JSON, truncated JSON, wrong top-level type.
    for raw in [
        &b"{not json"[..],
        b"{\"name\": \"x\",",
        b"[]",
        b"\"x\"",
        b"",
    ] {
        let body = create(raw.to_vec()).send().await.assert_problem(400, None);
        assert!(body["detail"].is_string());
    }

    // Wrong field types, missing or unknown fields; a value of the wrong
    // type is named by where it sits (`None`: nothing to point at).
    for (body, at) in [
        (
            json!({ "name": 42, "scopes": ["orders:read"] }),
            Some("name"),
        ),
        (
            json!({ "name": "x", "scopes": "orders:read" }),
            Some("scopes"),
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read", 2] }),
            Some("scopes[1]"),
        ),
        (json!({ "scopes": ["orders:read"] }), None),
        (json!({ "name": "x" }), None),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_in": 60 }),
            None,
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_in_seconds": "soon" }),
            Some("expires_in_seconds"),
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_at": "tomorrow" }),
            Some("expires_at"),
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "metadata": [1] }),
            Some("metadata"),
        ),
    ] {
        let res = app
            .post("/api-keys")
            .bearer(&app.admin)
            .json(&body)
            .send()
            .await;
        let problem = res.assert_problem(400, None);
        let detail = problem["detail"].as_str().unwrap();
        match at {
            Some(at) => assert!(
                detail.contains(&format!("at `{at}`: ")),
                "{body} -> {detail}"
            ),
            None => assert!(!detail.contains(" at `"), "{body} -> {detail}"),
        }
    }
    // A field written in camelCase is pointed to its name.
    let problem = app
        .post("/api-keys")
        .bearer(&app.admin)
        .json(&json!({ "name": "x", "scopes": ["orders:read"], "expiresInSeconds": 60 }))
        .send()
        .await
        .assert_problem(400, None);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("did you mean `expires_in_seconds`?"),
        "{detail}"
    );

    // Bad values: scopes, names, expiry.
    for (body, needle) in [
        (
            json!({ "name": "x", "scopes": ["Orders:read"] }),
            "upper-case",
        ),
        (json!({ "name": "x", "scopes": ["orders"] }), "missing `:`"),
        (
            json!({ "name": "x", "scopes": ["orders:read:all"] }),
            "extra `:`",
        ),
        (json!({ "name": "x", "scopes": ["orders:wr*"] }), "wildcard"),
        (json!({ "name": "x", "scopes": [] }), "at least one"),
        (json!({ "name": "  ", "scopes": ["orders:read"] }), "name"),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_in_seconds": -5 }),
            "positive",
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_at": "2001-01-01T00:00:00Z" }),
            "future",
        ),
        (
            json!({ "name": "x", "scopes": ["orders:read"], "expires_in_seconds": 60, "expires_at": "2999-01-01T00:00:00Z" }),
            "not both",
        ),
    ] {
        let res = app
            .post("/api-keys")
            .bearer(&app.admin)
            .json(&body)
            .send()
            .await;
        let problem = res.assert_problem(400, None);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body} -> {detail}");
    }

    // A content type other than JSON: 415.
    let valid = serde_json::to_vec(&json!({ "name": "x", "scopes": ["orders:read"] })).unwrap();
    // Nor is a content type that is not ASCII (raw bytes on the wire,
    // which `HeaderValue::to_str` refuses), whatever it starts with.
    for content_type in [
        &b"text/plain"[..],
        b"application/x-www-form-urlencoded",
        b"application/json\xff",
        b"application/json; charset=\xe9",
        b"application/\xc3\xa9+json",
    ] {
        app.post("/api-keys")
            .bearer(&app.admin)
            .body(valid.clone())
            .header("Content-Type", content_type)
            .send()
            .await
            .assert_problem(415, None);
    }
    // Two content types: both must say JSON, in either order.
    for (first, second) in [
        ("application/json", "text/plain"),
        ("text/plain", "application/json"),
    ] {
        app.post("/api-keys")
            .bearer(&app.admin)
            .body(valid.clone())
            .header("Content-Type", first)
            .header("Content-Type", second)
            .send()
            .await
            .assert_problem(415, None);
    }
    // A compressed body: 415 saying so (not "not valid JSON"), on every
    // route with a body, and nothing created; `identity` is no encoding.
    let before = app.key_count().await;
    for (path, encoding) in [
        ("/api-keys", &b"gzip"[..]),
        ("/api-keys", b"br"),
        ("/api-keys", b"\xff"),
        ("/api-keys/compromised", b"deflate"),
    ] {
        let problem = app
            .post(path)
            .bearer(&app.admin)
            .body(valid.clone())
            .header("Content-Type", "application/json")
            .header("Content-Encoding", encoding)
            .send()
            .await
            .assert_problem(415, None);
        assert!(
            problem["detail"].as_str().unwrap().contains("uncompressed"),
            "{problem}"
        );
    }
    assert_eq!(app.key_count().await, before);
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .body(valid.clone())
        .header("Content-Encoding", "identity")
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    // An empty body has nothing to decode, whatever its headers say (`curl
    // -d ''` labels it a form): a rotation with defaults goes.
    let (_, id) = key_and_id(&res.json());
    let res = app
        .post(&format!("/api-keys/{id}/rotate"))
        .bearer(&app.admin)
        .header("Content-Encoding", "gzip")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    // The other routes' bodies name a mistyped value too.
    let successor = res.json()["id"].as_str().unwrap().to_owned();
    let (rotate, revoke) = (
        format!("/api-keys/{successor}/rotate"),
        format!("/api-keys/{successor}/revoke"),
    );
    for (path, body, at) in [
        (
            &*rotate,
            json!({ "scopes": ["orders:read", 7] }),
            "scopes[1]",
        ),
        (&*rotate, json!({ "grace_seconds": "1h" }), "grace_seconds"),
        (&*revoke, json!({ "reason": ["lost"] }), "reason"),
        (
            "/api-keys/compromised",
            json!({ "keys": ["x", null] }),
            "keys[1]",
        ),
        (
            "/api-keys/compromised",
            json!({ "keys": [], "revoke_minted": "yes" }),
            "revoke_minted",
        ),
    ] {
        let problem = app
            .post(path)
            .bearer(&app.admin)
            .json(&body)
            .send()
            .await
            .assert_problem(400, None);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("at `{at}`: ")),
            "{body} -> {detail}"
        );
    }
    // None at all: read as JSON, bad JSON is then a 400.
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .body(valid.clone())
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    app.post("/api-keys")
        .bearer(&app.admin)
        .body("{not json")
        .send()
        .await
        .assert_problem(400, None);
    // `+json` and parameters are fine.
    let res = app
        .post("/api-keys")
        .bearer(&app.admin)
        .header(
            "Content-Type",
            "application/merge-patch+json; charset=utf-8",
        )
        .body(valid.clone())
        .send()
        .await;
    assert_eq!(res.status, 201, "{}", res.text());

    // Too large: 413 (64 KiB for key bodies).
    let big = json!({ "name": "x", "scopes": ["orders:read"], "metadata": { "blob": "a".repeat(70 * 1024) } });
    app.post("/api-keys")
        .bearer(&app.admin)
        .json(&big)
        .send()
        .await
        .assert_problem(413, None);

    // Unauthorized callers get 401/403 before their body is judged.
    app.post("/api-keys")
        .header("Content-Type", "application/json")
        .body(&b"{not json"[..])
        .send()
        .await
        .assert_problem(401, Some(NO_KEY));
    let (reader, _) = key_and_id(&app.create_key("reader", &["orders:read"]).await);
    app.post("/api-keys")
        .bearer(&reader)
        .json(&big)
        .send()
        .await
        .assert_problem(403, Some(&insufficient("api_keys:write")));
    app.stop().await;
}

both_backends!(bad_bodies_are_problems, bad_bodies);

async fn compromised_limits(db: &TestDb) {
    let app = TestApp::start(db).await;
    // 10,000 keys (~600 KiB) fit the report's own, larger limit.
    let keys: Vec<String> = (0..10_000)
        .map(|_| format!("sk_{}", "x".repeat(56)))
        .collect();
    let res = app
        .post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": keys }))
        .send()
        .await;
    assert_eq!(
        res.status,
        200,
        "{}",
        &res.text()[..200.min(res.text().len())]
    );
    let results = res.json()["results"].as_array().unwrap().len();
    assert_eq!(results, 10_000);

    // More keys than a report may hold: 400; more bytes than the limit: 413.
    let keys: Vec<&str> = vec!["k"; 10_001];
    app.post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": keys }))
        .send()
        .await
        .assert_problem(400, None);
    let huge: Vec<String> = (0..20_000).map(|_| "x".repeat(60)).collect();
    app.post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": huge }))
        .send()
        .await
        .assert_problem(413, None);
    app.post("/api-keys/compromised")
        .bearer(&app.admin)
        .json(&json!({ "keys": "sk_not_a_list" }))
        .send()
        .await
        .assert_problem(400, None);
    app.stop().await;
}

both_backends!(compromised_report_has_its_own_limit, compromised_limits);

async fn ids_and_queries(db: &TestDb) {
    let app = TestApp::start(db).await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api-keys/{unknown}"),
        format!("/api-keys/{unknown}/events"),
        "/api-keys/not-a-uuid".to_owned(),
        "/api-keys/not-a-uuid/events".to_owned(),
        "/api-keys/a/b/c".to_owned(),
    ] {
        app.get(&path)
            .bearer(&app.admin)
            .send()
            .await
            .assert_problem(404, None);
    }
    // Each with what its `detail` must say ("": any text), the parser's
    // reason kept (quoted input redacted).
    for (query, reason) in [
        ("status=bogus", ""),
        ("status=ACTIVE", ""),
        ("cursor=nonsense", ""),
        ("cursor=zz.123", ""),
        // Signed times: the year -5000, which PostgreSQL cannot hold.
        (
            "cursor=-30d6d1ed4f08000.00000000000000000000000000000000",
            "",
        ),
        ("cursor=%2B1.00000000000000000000000000000000", ""),
        ("cursor=.00000000000000000000000000000000", ""),
        ("limit=0", ""),
        ("limit=501", ""),
        ("limit=-1", ""),
        ("limit=ten", ""),
        ("status=active&status=revoked", "duplicate field"),
        // Bytes that are not UTF-8 once decoded: not a filter never sent.
        ("name_prefix=%FF", "not UTF-8"),
        ("status=%C3", "not UTF-8"),
        ("name_prefix=ok&%FE=1", "not UTF-8"),
    ] {
        let body = app
            .get(&format!("/api-keys?{query}"))
            .bearer(&app.admin)
            .send()
            .await
            .assert_problem(400, None);
        let detail = body["detail"].as_str();
        assert!(
            detail.is_some_and(|d| d.contains(reason)),
            "{query}: {body}"
        );
    }
    for query in [
        "cursor=nonsense",
        "cursor=-30d6d1ed4f08000.00000000000000000000000000000000",
        "limit=0",
        "cursor=%FF",
    ] {
        app.get(&format!("/api-keys/events?{query}"))
            .bearer(&app.admin)
            .send()
            .await
            .assert_problem(400, None);
    }
    for query in ["limit=1", "limit=500", "status=", "status=active&unknown=1"] {
        let res = app
            .get(&format!("/api-keys?{query}"))
            .bearer(&app.admin)
            .send()
            .await;
        assert_eq!(res.status, 200, "{query}: {}", res.text());
    }
    // A route asked with a method it does not answer: 405 with `Allow`,
    // and nothing changes. Every resource, with every method its `Allow`
    // leaves out; the reading routes list `HEAD`, so it is never asked of
    // them here (see `head_answers_as_get_on_every_reading_route`).
    let id = app.create_key("kept", &["orders:read"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.key_count().await;
    let resources = [
        ("/api-keys".to_owned(), "GET, HEAD, POST"),
        ("/api-keys/self".to_owned(), "GET, HEAD"),
        ("/api-keys/events".to_owned(), "GET, HEAD"),
        ("/api-keys/compromised".to_owned(), "POST"),
        (format!("/api-keys/{id}"), "GET, HEAD"),
        (format!("/api-keys/{id}/rotate"), "POST"),
        (format!("/api-keys/{id}/revoke"), "POST"),
        (format!("/api-keys/{id}/events"), "GET, HEAD"),
    ];
    for (path, allow) in &resources {
        let answered: Vec<&str> = allow.split(", ").collect();
        assert_eq!(
            answered.contains(&"GET"),
            answered.contains(&"HEAD"),
            "a reading route answers HEAD: {path}"
        );
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            if answered.contains(&method) {
                continue;
            }
            let res = app.request(method, path).bearer(&app.admin).send().await;
            if method == "HEAD" {
                // No body, but the same status and headers as the others.
                assert_eq!(res.status, 405, "{method} {path}");
                assert_eq!(
                    res.header("content-type"),
                    Some("application/problem+json"),
                    "{method} {path}"
                );
                assert!(res.body.is_empty(), "{method} {path}: {}", res.text());
            } else {
                res.assert_problem(405, None);
            }
            assert_eq!(res.header("allow"), Some(*allow), "{method} {path}");
        }
    }
    assert_eq!(app.key_count().await, before);
    let kept = app
        .get(&format!("/api-keys/{id}"))
        .bearer(&app.admin)
        .send()
        .await;
    assert_eq!(kept.json()["status"], "active");
    // Without a key the method is judged first, as a path is.
    let res = app
        .request("DELETE", &format!("/api-keys/{id}"))
        .send()
        .await;
    res.assert_problem(405, None);
    app.stop().await;
}

both_backends!(bad_ids_and_query_parameters, ids_and_queries);

/// Checks that `head` is `get` without its body: same status, same
/// headers describing the body, same challenge. The test client asks for no
/// encoding and the server compresses nothing, so a GET answer carries a
/// `Content-Length` equal to the bytes received, and HEAD must carry the
/// same one (not 0, not chunked).
#[track_caller]
fn assert_head_is_get(get: &Response, head: &Response, what: &str) {
    assert_eq!(head.status, get.status, "{what}: {}", get.text());
    assert!(head.body.is_empty(), "{what}: HEAD sent {}", head.text());
    for res in [get, head] {
        assert_eq!(res.header("transfer-encoding"), None, "{what}: {res:?}");
    }
    let length = get.header("content-length");
    assert_eq!(
        length,
        Some(get.body.len().to_string().as_str()),
        "{what}: {get:?}"
    );
    for name in [
        "content-length",
        "content-type",
        "www-authenticate",
        "cache-control",
    ] {
        assert_eq!(head.header(name), get.header(name), "{what}: {name}");
    }
}

async fn head_reads(db: &TestDb) {
    let app = TestApp::start(db).await;
    let (orders, id) = key_and_id(&app.create_key("orders", &["orders:read"]).await);
    let admin = app.admin.clone();
    let lacks_read = insufficient("api_keys:read");
    // Each reading route, and whether it needs `api_keys:read` (`/self`
    // takes any valid key).
    let reading = [
        ("/api-keys".to_owned(), true),
        ("/api-keys/self".to_owned(), false),
        (format!("/api-keys/{id}"), true),
        ("/api-keys/events".to_owned(), true),
        (format!("/api-keys/{id}/events"), true),
    ];
    for (path, needs_read) in &reading {
        let cases = [
            ("admin", Some(&admin), 200, None),
            ("no key", None, 401, Some(NO_KEY)),
            (
                "orders:read",
                Some(&orders),
                if *needs_read { 403 } else { 200 },
                needs_read.then_some(lacks_read.as_str()),
            ),
        ];
        for (who, key, status, challenge) in cases {
            let send = |method: &str| {
                let req = app.request(method, path);
                match key {
                    Some(key) => req.bearer(key),
                    None => req,
                }
            };
            let get = send("GET").send().await;
            let head = send("HEAD").send().await;
            let what = format!("HEAD {path} as {who}");
            if status == 200 {
                assert_eq!(get.status, 200, "{what}: {}", get.text());
                assert!(!get.body.is_empty(), "{what}");
            } else {
                get.assert_problem(status, challenge);
            }
            assert_head_is_get(&get, &head, &what);
        }
    }
    app.stop().await;
}

both_backends!(head_answers_as_get_on_every_reading_route, head_reads);

async fn credentials(db: &TestDb) {
    let app = TestApp::start(db).await;
    let admin = app.admin.clone();
    let bearer = format!("Bearer {admin}");

    // Two credentials, even equal ones: 400 invalid_request.
    for req in [
        app.get("/api-keys/self")
            .header("Authorization", &bearer)
            .header("Authorization", &bearer),
        app.get("/api-keys/self")
            .header("Authorization", &bearer)
            .header("X-API-Key", &admin),
        app.get("/api-keys/self")
            .header("X-API-Key", &admin)
            .header("X-API-Key", &admin),
        // Also on an unguarded route: the middleware refuses before routing.
        app.get("/nowhere")
            .header("Authorization", &bearer)
            .header("X-API-Key", &admin),
        // Two lines a proxy merged into one: a comma no key holds.
        app.get("/api-keys/self")
            .header("X-API-Key", format!("{admin}, {admin}")),
        app.get("/api-keys/self")
            .header("Authorization", format!("{bearer}, {bearer}")),
        app.get("/api-keys/self")
            .header("Authorization", format!("Basic YWRtaW46YWRtaW4=, {bearer}")),
        // Another scheme next to an `X-API-Key`: still two headers.
        app.get("/api-keys/self")
            .header("Authorization", "Basic YWRtaW46YWRtaW4=")
            .header("X-API-Key", &admin),
    ] {
        req.send().await.assert_problem(400, Some(INVALID_REQUEST));
    }

    // Lower-case scheme works; a key in the query string is never read.
    let res = app
        .get("/api-keys/self")
        .header("Authorization", format!("bearer {admin}"))
        .send()
        .await;
    assert_eq!(res.status, 200);
    for param in ["api_key", "key", "access_token", "x-api-key"] {
        app.get(&format!("/api-keys/self?{param}={admin}"))
            .send()
            .await
            .assert_problem(401, Some(NO_KEY));
    }

    // Another scheme counts as no key (RFC 6750 §3.1).
    app.get("/api-keys/self")
        .header("Authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .assert_problem(401, Some(NO_KEY));

    // Malformed tokens: empty, spaces, oversized, not ASCII. All 401
    // invalid_token, none reaching the store (shown in store_failure.rs:
    // the same refusals while the store does not answer).
    for (name, value) in unreadable_credentials(&admin) {
        let res = app.get("/api-keys/self").header(name, &value).send().await;
        res.assert_problem(401, Some(INVALID_TOKEN));
    }

    // Another scheme's credentials are no key, however long (a Kerberos
    // token) or whatever their bytes: public routes answer, guarded ones
    // ask for a key.
    let negotiate = format!("Negotiate {}", "YIIG".repeat(500));
    for value in [negotiate.into_bytes(), b"Basic \xff\xfe".to_vec()] {
        let res = app
            .get("/nowhere")
            .header("Authorization", &value)
            .send()
            .await;
        assert_eq!(res.status, 404, "{}", res.text());
        app.get("/api-keys/self")
            .header("Authorization", &value)
            .send()
            .await
            .assert_problem(401, Some(NO_KEY));
    }

    // A presented bad key is refused even where no key is needed.
    app.get("/nowhere")
        .bearer("sk_nope")
        .send()
        .await
        .assert_problem(401, Some(INVALID_TOKEN));
    assert_eq!(app.get("/nowhere").send().await.status, 404);
    app.stop().await;
}

both_backends!(credential_headers, credentials);

#[get("/guarded")]
#[requires_scope("orders:read")]
async fn guarded() -> HttpResponse {
    HttpResponse::Ok().body("guarded")
}

fn guarded_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(guarded);
}

/// The presenting rules hold without the middleware too: a guarded handler
/// (and the management routes, through their extractor) read the key the
/// same way: two credentials are 400 `invalid_request`, the query string
/// is never read, `X-API-Key` and any case of `Bearer` are accepted.
async fn credentials_without_middleware(db: &TestDb) {
    let setup = Setup {
        extra: guarded_routes,
        middleware: false,
        ..Setup::default()
    };
    let app = TestApp::start_with(db, setup).await;
    let admin = app.admin.clone();
    let bearer = format!("Bearer {admin}");
    for path in ["/guarded", "/api-keys/self"] {
        for req in [
            app.get(path)
                .header("Authorization", &bearer)
                .header("Authorization", &bearer),
            app.get(path)
                .header("Authorization", &bearer)
                .header("X-API-Key", &admin),
            app.get(path)
                .header("X-API-Key", &admin)
                .header("X-API-Key", &admin),
            app.get(path)
                .header("X-API-Key", format!("{admin}, {admin}")),
            app.get(path)
                .header("Authorization", format!("{bearer}, {bearer}")),
            app.get(path)
                .header("Authorization", "Basic YWRtaW46YWRtaW4=")
                .header("X-API-Key", &admin),
        ] {
            req.send().await.assert_problem(400, Some(INVALID_REQUEST));
        }
        for param in ["api_key", "key", "access_token", "x-api-key"] {
            app.get(&format!("{path}?{param}={admin}"))
                .send()
                .await
                .assert_problem(401, Some(NO_KEY));
        }
        let res = app.get(path).header("X-API-Key", &admin).send().await;
        assert_eq!(res.status, 200, "{path} X-API-Key: {}", res.text());
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let res = app
                .get(path)
                .header("Authorization", format!("{scheme} {admin}"))
                .send()
                .await;
            assert_eq!(res.status, 200, "{path} {scheme}: {}", res.text());
        }
        // A bad key is refused as such, not taken for no key.
        app.get(path)
            .bearer("sk_nope")
            .send()
            .await
            .assert_problem(401, Some(INVALID_TOKEN));
    }
    // An unguarded route reads no key at all without the middleware.
    let res = app
        .get("/nowhere")
        .header("Authorization", &bearer)
        .header("X-API-Key", &admin)
        .send()
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    app.stop().await;
}

both_backends!(
    credential_headers_without_middleware,
    credentials_without_middleware
);
