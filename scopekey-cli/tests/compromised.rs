//! `keys compromised`: a leak report from standard input or a file, with
//! live, rotating, revoked, unknown and malformed lines; never echoed.

mod common;

use common::*;
use scopekey_runtime::compromise::MAX_REPORT_KEYS;
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{Actor, KeyFormat, RotateOptions, ScopeKey, VerifyError};
use serde_json::json;

async fn report_from_stdin(db: &TestDb) {
    let url = db.url.as_str();
    let runtime = ScopeKey::builder_arc(db.store.clone()).build();

    let live = create(url, "live", &["orders:read"]);
    let gone = create(url, "gone", &["orders:read"]);
    scopekey(url, &["keys", "revoke", str_of(&gone, "id"), "--json"]).json();
    let parent = create(url, "rotating", &["orders:read"]);
    scopekey(url, &["keys", "rotate", str_of(&parent, "id"), "--json"]).json();
    let never_stored = KeyFormat::default().generate().expect("a key");
    let untouched = create(url, "untouched", &["orders:read"]);

    let plaintexts = [
        str_of(&live, "key"),
        str_of(&gone, "key"),
        str_of(&parent, "key"),
        never_stored.expose_secret(),
    ];
    // A checksum typo of a real key, and things that are no key at all.
    let mut typo = plaintexts[0].to_owned();
    let last = typo.pop().expect("non-empty");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let input = format!(
        "# found by the scanner\n\
         {live}\n\
         \n\
         {gone}\r\n\
         \t{rotating}  \n\
         {unknown}\n\
         sk_notakey\n\
         {typo}\n\
         password=hunter2\n",
        live = plaintexts[0],
        gone = plaintexts[1],
        rotating = plaintexts[2],
        unknown = plaintexts[3],
    );

    let run = scopekey_with_stdin(
        url,
        &[
            "keys",
            "compromised",
            "--source",
            "secret scanning",
            "--json",
        ],
        &input,
    );
    let report = run.json();
    let results = report["results"].as_array().expect("results");
    let summary: Vec<(u64, u64, &str)> = results
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["line"].as_u64().expect("line"),
                str_of(r, "status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 2, "revoked"),
            (1, 4, "already_revoked"),
            (2, 5, "revoked"),
            (3, 6, "unknown"),
            (4, 7, "malformed"),
            (5, 8, "malformed"),
            (6, 9, "malformed"),
        ]
    );
    assert_eq!(results[0]["key_id"], live["id"]);
    assert_eq!(results[0]["hint"], live["hint"]);
    assert_eq!(results[1]["key_id"], gone["id"]);
    assert_eq!(results[2]["key_id"], parent["id"]);
    assert_eq!(results[3]["key_id"], json!(null));
    assert_eq!(results[3]["hint"], json!(never_stored.hint()));
    for malformed in &results[4..] {
        assert_eq!(malformed["key_id"], json!(null));
        assert_eq!(malformed["hint"], json!(null));
    }
    // Nothing of the input comes back.
    for secret in plaintexts.iter().copied().chain([typo.as_str(), "hunter2"]) {
        assert!(!run.all_output().contains(secret), "echoed: {run:#?}");
        assert!(!run.all_output().contains(&secret[3..]), "echoed: {run:#?}");
    }

    // Revoked with the reason, audited, refused by a service.
    let shown = scopekey(url, &["keys", "show", str_of(&live, "id"), "--json"]).json();
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revoked_reason"], "compromised");
    let events = scopekey(url, &["events", "--key", str_of(&live, "id"), "--json"]).json();
    assert_eq!(events["items"][0]["type"], "key.compromised");
    assert_eq!(
        events["items"][0]["details"],
        json!({ "reason": "compromised", "source": "secret scanning" })
    );
    let rotating = scopekey(url, &["keys", "show", str_of(&parent, "id"), "--json"]).json();
    assert_eq!(rotating["status"], "revoked", "a key in its grace is live");
    assert!(matches!(
        runtime.verify(plaintexts[0]).await,
        Err(VerifyError::Revoked)
    ));
    let other = scopekey(url, &["keys", "show", str_of(&untouched, "id"), "--json"]).json();
    assert_eq!(
        other["status"], "active",
        "keys not in the report stay live"
    );

    // The same report again, for people: a table by line, a summary.
    let run = scopekey_with_stdin(url, &["keys", "compromised", "-"], &input);
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = table(&run.stdout);
    let by_line: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["LINE"].as_str(), r["RESULT"].as_str()))
        .collect();
    assert_eq!(
        by_line,
        [
            ("2", "already_revoked"),
            ("4", "already_revoked"),
            ("5", "already_revoked"),
            ("6", "unknown"),
            ("7", "malformed"),
            ("8", "malformed"),
            ("9", "malformed"),
        ]
    );
    assert_eq!(rows[0]["KEY ID"], str_of(&live, "id"));
    assert_eq!(rows[6]["HINT"], "-");
    run.says("0 revoked, 3 already revoked, 1 unknown, 3 malformed");
    for secret in plaintexts {
        assert!(!run.all_output().contains(&secret[3..]), "echoed: {run:#?}");
    }
}

scopekey_runtime::both_backends!(compromised_report, report_from_stdin);

async fn report_from_a_file(db: &TestDb) {
    let url = db.url.as_str();
    let live = create(url, "in a file", &["orders:read"]);
    let file = TempSqlite::new(); // Any temporary path of our own will do.
    // Saved by Notepad: a byte order mark before the first key.
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(format!("{}\n", str_of(&live, "key")).as_bytes());
    bytes.extend_from_slice(b"\xff\xfe not UTF-8\n");
    std::fs::write(&file.path, &bytes).expect("write the report");
    let path = file.path.to_str().expect("a UTF-8 temp path");

    let report = scopekey(url, &["keys", "compromised", path, "--json"]).json();
    let statuses: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| str_of(r, "status"))
        .collect();
    assert_eq!(statuses, ["revoked", "malformed"]);

    // An empty report is no failure; a missing file is.
    let run = scopekey_with_stdin(url, &["keys", "compromised", "--json"], "\n\n");
    assert_eq!(run.json(), json!({ "results": [] }));
    let run = scopekey(url, &["keys", "compromised", "/no/such/report.txt"]);
    run.fails_with(1).says("cannot read the report file");

    // The leaked key pasted where the file goes: bad usage, said so, the
    // key neither repeated back nor revoked (nothing was asked of the
    // store).
    let pasted = create(url, "pasted", &["orders:read"]);
    let plaintext = str_of(&pasted, "key");
    for arg in [plaintext.to_owned(), format!(" {plaintext} ")] {
        let run = scopekey(url, &["keys", "compromised", &arg]);
        run.fails_with(2).says("is a key, not a file");
        assert!(!run.all_output().contains(plaintext), "echoed: {run:#?}");
        assert!(
            !run.all_output().contains(&plaintext[3..20]),
            "echoed: {run:#?}"
        );
    }
    let shown = scopekey(url, &["keys", "show", str_of(&pasted, "id"), "--json"]).json();
    assert_eq!(shown["status"], "active");
}

scopekey_runtime::both_backends!(compromised_file, report_from_a_file);

/// A store that fails partway: the one-line error says keys may already
/// be revoked and that the same report can be run again.
async fn store_failure_mid_report(db: &TestDb) {
    let url = db.url.as_str();
    let live = create(url, "leaked", &["orders:read"]);
    // Revoking writes an audit event: without its table, the revocation
    // fails after the key was found.
    db.execute("DROP TABLE scopekey_events").await;
    let report = format!("{}\n", str_of(&live, "key"));
    scopekey_with_stdin(url, &["--no-migrate", "keys", "compromised"], &report)
        .fails_with(1)
        .says("may already be revoked")
        .says("run")
        .says("again is safe");
}

scopekey_runtime::both_backends!(compromised_store_failure, store_failure_mid_report);

/// A report longer than the runtime takes at once goes in batches. When a
/// later batch fails, the results of the batches before it are still
/// printed as a whole report's are (the keys its leaked keys minted among
/// them, to review), then the failure, with exit status 1.
async fn later_batch_fails(db: &TestDb) {
    let url = db.url.as_str();
    let runtime = ScopeKey::builder_arc(db.store.clone()).build();
    // First in the report, a leaked key that rotated itself.
    let first = create(url, "first batch", &["orders:read"]);
    let me = runtime
        .verify(str_of(&first, "key"))
        .await
        .expect("a live key");
    let successor = runtime
        .rotate(me.id, RotateOptions::default(), Actor::Key(&me))
        .await
        .expect("a key may rotate itself");
    // Past the first batch, a leaked key whose revocation the database
    // refuses (a trigger standing in for a store failure).
    let second = create(url, "second batch", &["orders:read"]);
    let refused = str_of(&second, "id");
    if url.starts_with("postgres") {
        db.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$",
        )
        .await;
        db.execute(&format!(
            "CREATE TRIGGER refuse BEFORE UPDATE OF revoked_at ON scopekey_keys \
             FOR EACH ROW WHEN (OLD.id = '{refused}') EXECUTE FUNCTION refuse()"
        ))
        .await;
    } else {
        db.execute(&format!(
            "CREATE TRIGGER refuse BEFORE UPDATE OF revoked_at ON scopekey_keys \
             WHEN OLD.id = '{refused}' BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
        ))
        .await;
    }
    let mut input = format!("{}\n", str_of(&first, "key"));
    for _ in 1..MAX_REPORT_KEYS {
        input.push_str("not a key\n");
    }
    input.push_str(&format!("{}\n", str_of(&second, "key")));
    let hint_given = |stderr: &str| {
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{stderr}");
        assert!(last.contains("refused for the test"), "{stderr}");
        assert!(last.contains("may already be revoked"), "{stderr}");
        assert!(last.contains("again is safe"), "{stderr}");
    };

    // For people: the table and summary of the first batch, then the error.
    let run = scopekey_with_stdin(url, &["keys", "compromised"], &input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let rows = table(&run.stdout);
    assert_eq!(rows.len(), MAX_REPORT_KEYS);
    assert_eq!(
        (rows[0]["LINE"].as_str(), rows[0]["RESULT"].as_str()),
        ("1", "revoked")
    );
    assert_eq!(rows[0]["KEY ID"], str_of(&first, "id"));
    assert!(rows[1..].iter().all(|r| r["RESULT"] == "malformed"));
    assert_eq!(
        rows[MAX_REPORT_KEYS - 1]["LINE"],
        MAX_REPORT_KEYS.to_string()
    );
    let summary = format!(
        "up to line {MAX_REPORT_KEYS}, before the failure: \
         1 revoked, 0 already revoked, 0 unknown, {} malformed",
        MAX_REPORT_KEYS - 1
    );
    assert!(run.stderr.contains(&summary), "{}", run.stderr);
    let minted = format!("line 1: keys it minted: {} (active)", successor.key.id);
    assert!(run.stderr.contains(&minted), "{}", run.stderr);
    assert!(run.stderr.contains("--revoke-minted"), "{}", run.stderr);
    hint_given(&run.stderr);
    // Keys it does not know: perhaps read with another key format.
    assert!(
        run.stderr
            .contains("9999 of the keys reported are unknown or malformed")
    );
    assert!(run.stderr.contains("SCOPEKEY_PEPPER"), "{}", run.stderr);

    // As JSON: the document a whole report gives, for the first batch; on
    // standard error, the key-format note and the failure.
    let run = scopekey_with_stdin(url, &["keys", "compromised", "--json"], &input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    assert!(run.stderr.contains("SCOPEKEY_PEPPER"), "{}", run.stderr);
    hint_given(&run.stderr);
    let partial: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    let results = partial["results"].as_array().expect("results");
    assert_eq!(results.len(), MAX_REPORT_KEYS);
    let whole = scopekey_with_stdin(
        url,
        &["keys", "compromised", "--json"],
        &format!("{}\n", str_of(&first, "key")),
    )
    .json();
    assert_eq!(results[0], whole["results"][0]);
    assert_eq!(
        results[0]["minted"],
        json!([{ "key_id": successor.key.id.to_string(), "status": "active" }])
    );
    let last = &results[MAX_REPORT_KEYS - 1];
    assert_eq!(
        (&last["index"], &last["line"], &last["status"]),
        (
            &json!(MAX_REPORT_KEYS - 1),
            &json!(MAX_REPORT_KEYS),
            &json!("malformed")
        )
    );
}

scopekey_runtime::both_backends!(compromised_later_batch_fails, later_batch_fails);

/// A leaked key that rotated itself: its successor is named, and revoked
/// with `--revoke-minted`.
async fn minted_keys(db: &TestDb) {
    let url = db.url.as_str();
    let runtime = ScopeKey::builder_arc(db.store.clone()).build();
    let leaked = create(url, "leaked", &["orders:read"]);
    let plaintext = str_of(&leaked, "key");
    let me = runtime.verify(plaintext).await.expect("a live key");
    let successor = runtime
        .rotate(me.id, RotateOptions::default(), Actor::Key(&me))
        .await
        .expect("a key may rotate itself");
    let input = format!("{plaintext}\n");

    let run = scopekey_with_stdin(url, &["keys", "compromised"], &input);
    assert_eq!(run.code, 0, "{run:#?}");
    run.says(&format!(
        "line 1: keys it minted: {} (active)",
        successor.key.id
    ))
    .says("run again with --revoke-minted");
    assert!(
        runtime
            .verify(successor.plaintext.expose_secret())
            .await
            .is_ok()
    );

    let report = scopekey_with_stdin(
        url,
        &["keys", "compromised", "--revoke-minted", "--json"],
        &input,
    )
    .json();
    assert_eq!(report["results"][0]["status"], "already_revoked");
    assert_eq!(
        report["results"][0]["minted"],
        json!([{ "key_id": successor.key.id.to_string(), "status": "revoked" }])
    );
    // Revoked by another process: this one's cache would serve it for up
    // to a second.
    runtime.invalidate_cache();
    assert!(matches!(
        runtime.verify(successor.plaintext.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    // Once they are revoked, no advice to revoke them.
    let run = scopekey_with_stdin(url, &["keys", "compromised"], &input);
    run.says(&format!("{} (revoked)", successor.key.id));
    assert!(!run.stderr.contains("--revoke-minted"), "{run:#?}");
    // Every key known: no note about the key format.
    assert!(!run.stderr.contains("SCOPEKEY_PEPPER"), "{run:#?}");
}

scopekey_runtime::both_backends!(compromised_minted, minted_keys);

/// A report run from the CLI is announced as one through the HTTP API is: a
/// `key.compromised` delivery for each endpoint of the service's notifier,
/// waiting in the outbox the service's notifier sends from (the CLI sends
/// nothing itself).
async fn report_is_announced(db: &TestDb) {
    use scopekey_runtime::notify::{
        DeliveryFilter, EndpointConfig, Notifier, NotifierConfig, Outbox,
    };
    let url = db.url.as_str();
    let keys = ScopeKey::builder_arc(db.store.clone()).build();
    let endpoint = EndpointConfig::new(
        "https://hooks.example.com/scopekey",
        "whsec_ZGVtbyB3ZWJob29rIHNlY3JldCwgZm9yIHRlc3Rz"
            .parse()
            .expect("a secret"),
    )
    .events(["key.compromised"]);
    let outbox = Outbox::connect(url).await.expect("the outbox");
    let config = NotifierConfig {
        endpoints: vec![endpoint],
        ..NotifierConfig::default()
    };
    Notifier::new(keys, outbox, config)
        .expect("a notifier")
        .register()
        .await
        .expect("endpoints recorded");

    let leaked = create(url, "leaked", &["orders:read"]);
    let id = str_of(&leaked, "id");
    let run = scopekey_with_stdin(
        url,
        &["keys", "compromised", "-", "--json"],
        str_of(&leaked, "key"),
    );
    assert_eq!(run.json()["results"][0]["status"], "revoked", "{run:#?}");

    let outbox = Outbox::connect(url).await.expect("the outbox");
    let deliveries = outbox
        .deliveries(&DeliveryFilter {
            event_type: Some("key.compromised".into()),
            ..DeliveryFilter::default()
        })
        .await
        .expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    let body: serde_json::Value =
        serde_json::from_str(&deliveries[0].payload).expect("a JSON body");
    assert_eq!(body["type"], "key.compromised", "{body}");
    assert_eq!(body["data"]["id"], id, "{body}");
    assert_eq!(body["data"]["status"], "revoked", "{body}");
}

scopekey_runtime::both_backends!(compromised_announced, report_is_announced);
