//! The operator's story: create → list → show → rotate → revoke, in human
//! and JSON output, on SQLite and PostgreSQL; the plaintext appears once.

mod common;

use common::*;
use scopekey_runtime::testing::TestDb;
use scopekey_runtime::{ScopeKey, VerifyError};
use serde_json::json;
use time::Duration;

async fn lifecycle(db: &TestDb) {
    let url = db.url.as_str();
    let runtime = ScopeKey::builder_arc(db.store.clone()).build();
    // Every output of the session, to count plaintexts in at the end.
    let mut transcript: Vec<String> = Vec::new();

    // Create, JSON: the HTTP API's 201 body.
    let run = scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "billing job",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
            "--expires-in",
            "30d",
            "--metadata",
            r#"{"team":"billing"}"#,
            "--json",
        ],
    );
    transcript.push(run.all_output());
    assert!(run.stderr.is_empty(), "JSON mode prints no notes: {run:#?}");
    let billing = run.json();
    for field in KEY_FIELDS {
        assert!(
            billing.get(field).is_some(),
            "missing `{field}` in {billing}"
        );
    }
    let billing_key = str_of(&billing, "key").to_owned();
    let billing_id = str_of(&billing, "id").to_owned();
    assert!(billing_key.starts_with("sk_"), "{billing}");
    assert_eq!(billing["name"], "billing job");
    assert_eq!(billing["status"], "active");
    assert_eq!(billing["scopes"], json!(["orders:read", "orders:write"]));
    assert_eq!(billing["metadata"], json!({"team": "billing"}));
    assert_eq!(billing["parent_key_id"], json!(null));
    assert_eq!(billing["revoked_at"], json!(null));
    assert_eq!(billing["last_used_at"], json!(null));
    assert_eq!(
        time_of(&billing, "expires_at") - time_of(&billing, "created_at"),
        Duration::days(30)
    );
    let last4 = &billing_key[billing_key.len() - 4..];
    assert_eq!(billing["hint"], format!("sk_…{last4}"));
    // The key the CLI made works in a running service.
    let principal = runtime
        .verify(&billing_key)
        .await
        .expect("created key verifies");
    assert!(principal.grants().covers_str("orders:write"));

    // Create, for people: a block, the plaintext once, a note on stderr.
    let run = scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "reader",
            "--scope",
            "orders:read",
        ],
    );
    transcript.push(run.all_output());
    assert_eq!(run.code, 0, "{run:#?}");
    let reader_key = block_value(&run.stdout, "key")
        .expect("a key line")
        .to_owned();
    let reader_id = block_value(&run.stdout, "id")
        .expect("an id line")
        .to_owned();
    assert_eq!(block_value(&run.stdout, "name"), Some("reader"));
    assert_eq!(block_value(&run.stdout, "status"), Some("active"));
    assert_eq!(block_value(&run.stdout, "scopes"), Some("orders:read"));
    assert_eq!(block_value(&run.stdout, "expires"), Some("never"));
    run.says("shown only once");
    runtime.verify(&reader_key).await.expect("reader verifies");

    // List, for people: an aligned table, newest first.
    let run = scopekey(url, &["keys", "list"]);
    transcript.push(run.all_output());
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = table(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(rows[0]["ID"], reader_id);
    assert_eq!(rows[0]["NAME"], "reader");
    assert_eq!(rows[0]["STATUS"], "active");
    assert_eq!(rows[0]["EXPIRES"], "never");
    assert_eq!(rows[0]["LAST USED"], "never");
    assert_eq!(rows[1]["ID"], billing_id);
    assert_eq!(rows[1]["NAME"], "billing job");
    assert_eq!(rows[1]["SCOPES"], "orders:read,orders:write");
    assert_eq!(
        rows[1]["HINT"],
        billing["hint"].as_str().unwrap_or_default()
    );

    // List, JSON: {items, next_cursor}, key objects without plaintext.
    let run = scopekey(url, &["keys", "list", "--json"]);
    transcript.push(run.all_output());
    let page = run.json();
    assert_eq!(page["next_cursor"], json!(null));
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    for item in items {
        assert_key_object(item);
    }
    assert_eq!(items[0]["id"], reader_id.as_str());

    // Show, both ways.
    let run = scopekey(url, &["keys", "show", &billing_id, "--json"]);
    transcript.push(run.all_output());
    let shown = run.json();
    assert_key_object(&shown);
    let mut expected = billing.clone();
    if let Some(map) = expected.as_object_mut() {
        map.remove("key");
    }
    assert_eq!(shown, expected, "show repeats create's key object");
    let run = scopekey(url, &["keys", "show", &billing_id]);
    transcript.push(run.all_output());
    assert_eq!(block_value(&run.stdout, "id"), Some(billing_id.as_str()));
    assert_eq!(
        block_value(&run.stdout, "metadata"),
        Some(r#"{"team":"billing"}"#)
    );
    assert!(
        block_value(&run.stdout, "expires").is_some_and(|e| e.contains("(in 29d 23h)")),
        "{}",
        run.stdout
    );
    assert_eq!(
        block_value(&run.stdout, "key"),
        None,
        "no plaintext in show"
    );

    // Rotate, JSON: the successor with its plaintext; the old key in grace.
    let run = scopekey(
        url,
        &["keys", "rotate", &billing_id, "--grace", "1h", "--json"],
    );
    transcript.push(run.all_output());
    let successor = run.json();
    let successor_key = str_of(&successor, "key").to_owned();
    let successor_id = str_of(&successor, "id").to_owned();
    assert_eq!(successor["parent_key_id"], billing_id.as_str());
    assert_eq!(successor["scopes"], billing["scopes"]);
    assert_eq!(successor["name"], "billing job");
    assert_eq!(successor["status"], "active");
    assert_eq!(
        time_of(&successor, "expires_at") - time_of(&successor, "created_at"),
        Duration::days(30),
        "a successor gets the parent's lifetime afresh"
    );
    let old = scopekey(url, &["keys", "show", &billing_id, "--json"]).json();
    assert_eq!(old["status"], "rotating");
    assert_eq!(
        time_of(&old, "expires_at") - time_of(&old, "rotated_at"),
        Duration::hours(1)
    );
    runtime
        .verify(&billing_key)
        .await
        .expect("old key works in grace");
    runtime
        .verify(&successor_key)
        .await
        .expect("successor works");

    // Rotate, for people, with a zero grace and a narrower scope.
    let run = scopekey(
        url,
        &[
            "keys",
            "rotate",
            &successor_id,
            "--grace",
            "0",
            "--scope",
            "orders:read",
        ],
    );
    transcript.push(run.all_output());
    assert_eq!(run.code, 0, "{run:#?}");
    let third_key = block_value(&run.stdout, "key")
        .expect("a key line")
        .to_owned();
    let third_id = block_value(&run.stdout, "id").expect("an id").to_owned();
    assert_eq!(block_value(&run.stdout, "scopes"), Some("orders:read"));
    assert_eq!(
        block_value(&run.stdout, "parent"),
        Some(successor_id.as_str())
    );
    assert_eq!(
        block_value(&run.stdout, "old key"),
        Some(format!("{successor_id} stopped working").as_str())
    );
    run.says("shown only once");
    let previous = scopekey(url, &["keys", "show", &successor_id, "--json"]).json();
    assert_eq!(
        previous["status"], "expired",
        "grace 0 ends the old key now"
    );
    // This process cached the successor above; shared_store.rs bounds how
    // long that lasts. A fresh runtime reads the store.
    let fresh = ScopeKey::builder_arc(db.store.clone()).build();
    assert!(matches!(
        fresh.verify(&successor_key).await,
        Err(VerifyError::Expired)
    ));
    runtime.verify(&third_key).await.expect("third key works");

    // Lineage: oldest first.
    let run = scopekey(url, &["keys", "lineage", &successor_id, "--json"]);
    transcript.push(run.all_output());
    let chain = run.json();
    let ids: Vec<&str> = chain["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| str_of(assert_key_object(k), "id"))
        .collect();
    assert_eq!(ids, [&billing_id, &successor_id, &third_id]);

    // Revoke, JSON: the key object; refused at once in-process.
    let run = scopekey(
        url,
        &[
            "keys",
            "revoke",
            &third_id,
            "--reason",
            "leaked in CI log",
            "--json",
        ],
    );
    transcript.push(run.all_output());
    let revoked = run.json();
    assert_key_object(&revoked);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked in CI log");
    let revoked_at = time_of(&revoked, "revoked_at");
    // Idempotent: again succeeds and changes nothing.
    let again = scopekey(url, &["keys", "revoke", &third_id, "--json"]).json();
    assert_eq!(time_of(&again, "revoked_at"), revoked_at);
    assert_eq!(again["revoked_reason"], "leaked in CI log");

    // Revoke, for people.
    let run = scopekey(url, &["keys", "revoke", &reader_id, "--reason", "unused"]);
    transcript.push(run.all_output());
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(block_value(&run.stdout, "status"), Some("revoked"));
    assert!(
        block_value(&run.stdout, "revoked").is_some_and(|r| r.ends_with("(reason: unused)")),
        "{}",
        run.stdout
    );
    let fresh = ScopeKey::builder_arc(db.store.clone()).build();
    assert!(matches!(
        fresh.verify(&reader_key).await,
        Err(VerifyError::Revoked)
    ));

    // The whole story in the audit log, and the final listing.
    let run = scopekey(url, &["events", "--all", "--json"]);
    transcript.push(run.all_output());
    let events = run.json();
    let mut types: Vec<String> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| str_of(e, "type").to_owned())
        // The refusals above were sampled as `auth.failed`.
        .filter(|t| t.starts_with("key."))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "key.created",
            "key.created",
            "key.revoked",
            "key.revoked",
            "key.rotated",
            "key.rotated",
            "key.rotated",
            "key.rotated"
        ]
    );
    let run = scopekey(url, &["keys", "list"]);
    transcript.push(run.all_output());
    let statuses: Vec<(String, String)> = table(&run.stdout)
        .into_iter()
        .map(|r| (r["ID"].clone(), r["STATUS"].clone()))
        .collect();
    let expected: Vec<(String, String)> = [
        (&third_id, "revoked"),
        (&successor_id, "expired"),
        (&reader_id, "revoked"),
        (&billing_id, "rotating"),
    ]
    .into_iter()
    .map(|(id, status)| (id.clone(), status.to_owned()))
    .collect();
    assert_eq!(statuses, expected, "newest first");

    // Each plaintext appeared exactly once: where it was made.
    for key in [&billing_key, &reader_key, &successor_key, &third_key] {
        assert_eq!(
            occurrences(&transcript, key),
            1,
            "plaintext {key} must appear once in {transcript:#?}"
        );
        // Nor any long piece of it (the hint's four characters are fine).
        assert_eq!(occurrences(&transcript, &key[3..20]), 1);
    }
}

scopekey_runtime::both_backends!(create_list_show_rotate_revoke, lifecycle);

/// `--rotate-every`: the key expires one period after creation, shows its
/// policy in both outputs, and a rotation gives the successor a fresh
/// period. `--rotation-webhook` opts in to automatic rotation and needs a
/// period (bad usage otherwise).
async fn rotate_every(db: &TestDb) {
    let url = db.url.as_str();
    let run = scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "quarterly",
            "--scope",
            "orders:read",
            "--rotate-every",
            "90d",
            "--json",
        ],
    );
    let key = &run.json();
    assert_eq!(key["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(
        time_of(key, "expires_at") - time_of(key, "created_at"),
        Duration::days(90)
    );
    let id = str_of(key, "id").to_owned();

    let shown = scopekey(url, &["keys", "show", &id]);
    assert_eq!(block_value(&shown.stdout, "rotate every"), Some("90d"));

    let rotated = scopekey(url, &["keys", "rotate", &id, "--json"]).json();
    assert_eq!(rotated["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(
        time_of(&rotated, "expires_at") - time_of(&rotated, "created_at"),
        Duration::days(90)
    );

    let args = [
        "keys",
        "create",
        "--name",
        "machine",
        "--scope",
        "orders:read",
        "--rotate-every",
        "30d",
        "--rotation-webhook",
        "https://holder.example/rotate",
    ];
    // Without the service's rotation secret: refused, nothing created.
    scopekey(url, &args)
        .fails_with(1)
        .says("automatic rotation is not enabled");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // The same command, with the service's rotation secret.
    let with_secret = |json: bool| {
        let mut cmd = command();
        cmd.env("SCOPEKEY_ROTATION_SECRET", secret)
            .arg("--database-url")
            .arg(url)
            .args(args);
        if json {
            cmd.arg("--json");
        }
        common::run(cmd, "")
    };
    let auto = with_secret(true).json();
    assert_eq!(
        auto["rotation_webhook_url"],
        "https://holder.example/rotate"
    );
    let holder_secret = str_of(&auto, "rotation_webhook_secret");
    assert!(holder_secret.starts_with("whsec_") && holder_secret != secret);
    let human = with_secret(false);
    assert!(
        block_value(&human.stdout, "webhook secret").is_some_and(|s| s.starts_with("whsec_")),
        "{human:#?}"
    );

    // Another port: refused unless the service's ports, given as it has
    // them, allow it; a list that is not one is bad usage.
    let on_port = |ports: Option<&str>| {
        let mut cmd = command();
        cmd.env("SCOPEKEY_ROTATION_SECRET", secret)
            .env_remove("SCOPEKEY_ROTATION_WEBHOOK_PORTS")
            .arg("--database-url")
            .arg(url)
            .args(&args[..args.len() - 1])
            .args(["https://holder.example:8443/rotate", "--json"]);
        if let Some(ports) = ports {
            cmd.env("SCOPEKEY_ROTATION_WEBHOOK_PORTS", ports);
        }
        common::run(cmd, "")
    };
    on_port(None).fails_with(1).says("port");
    on_port(Some("443")).fails_with(1).says("port");
    let allowed = on_port(Some("443, 8443")).json();
    assert_eq!(
        allowed["rotation_webhook_url"],
        "https://holder.example:8443/rotate"
    );
    on_port(Some("8443x"))
        .fails_with(2)
        .says("SCOPEKEY_ROTATION_WEBHOOK_PORTS");

    scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "orders:read",
            "--rotation-webhook",
            "https://holder.example/rotate",
        ],
    )
    .fails_with(2);
    scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "orders:read",
            "--rotate-every",
            "0d",
        ],
    )
    .fails_with(2);
    scopekey(
        url,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "orders:read",
            "--rotate-every",
            "30d",
            "--rotation-webhook",
            "http://holder.example/",
        ],
    )
    .fails_with(1)
    .says("rotation_webhook_url");
}
scopekey_runtime::both_backends!(rotate_every_works, rotate_every);

/// `keys rotate` without `--grace` leaves the old key the default 24 hours;
/// ids are UUID v7.
async fn default_grace(db: &TestDb) {
    let url = db.url.as_str();
    let created = create(url, "svc", &["orders:read"]);
    let id = str_of(&created, "id").to_owned();
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7, "{id}");
    let successor = scopekey(url, &["keys", "rotate", &id, "--json"]).json();
    assert_eq!(successor["parent_key_id"], id.as_str());
    let old = scopekey(url, &["keys", "show", &id, "--json"]).json();
    assert_eq!(old["status"], "rotating");
    assert_eq!(
        time_of(&old, "expires_at") - time_of(&old, "rotated_at"),
        Duration::hours(24)
    );
}

scopekey_runtime::both_backends!(rotate_default_grace, default_grace);

/// Revoking a key that rotated notes its live successor on standard error
/// (a leaked key may have rotated itself into the thief's hands); the
/// output stays the revoked key alone.
async fn revoking_names_a_live_successor(db: &TestDb) {
    let url = db.url.as_str();
    let key = create(url, "rotated", &["orders:read"]);
    let id = str_of(&key, "id");
    let successor = scopekey(url, &["keys", "rotate", id, "--json"]).json();
    let successor_id = str_of(&successor, "id");

    let run = scopekey(url, &["keys", "revoke", id, "--json"]);
    assert_eq!(run.json()["id"], id, "{run:#?}");
    run.says(&format!("its successor {successor_id}"))
        .says("still live")
        .says(&format!("scopekey keys revoke {successor_id}"));
    assert!(
        !run.stderr.contains(str_of(&successor, "key")),
        "the plaintext is never shown: {run:#?}"
    );

    // Revoked too: nothing to note.
    let run = scopekey(url, &["keys", "revoke", successor_id, "--json"]);
    assert_eq!(run.json()["status"], "revoked");
    assert!(run.stderr.is_empty(), "{run:#?}");
    let run = scopekey(url, &["keys", "revoke", id, "--json"]);
    assert!(run.stderr.is_empty(), "{run:#?}");
}

scopekey_runtime::both_backends!(
    revoke_notes_a_live_successor,
    revoking_names_a_live_successor
);
