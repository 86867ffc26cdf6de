//! `keys list` filters and pages, and `events`: shapes, order, cursors.

mod common;

use common::*;
use scopekey_runtime::testing::TestDb;
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| str_of(k, "id").to_owned())
        .collect()
}

async fn keys_by_status_name_and_page(db: &TestDb) {
    let url = db.url.as_str();
    // Oldest first: a0 .. a4, b-active, b-revoked, b-rotating (+ successor), b-expired.
    let mut a_ids = Vec::new();
    for i in 0..5 {
        a_ids.push(str_of(&create(url, &format!("alpha {i}"), &["a:read"]), "id").to_owned());
    }
    let active = create(url, "beta active", &["b:read"]);
    let revoked = create(url, "beta revoked", &["b:read"]);
    scopekey(url, &["keys", "revoke", str_of(&revoked, "id"), "--json"]).json();
    let rotating = create(url, "beta rotating", &["b:read"]);
    let successor = scopekey(url, &["keys", "rotate", str_of(&rotating, "id"), "--json"]).json();
    let expired = create(url, "beta expired", &["b:read"]);
    scopekey(
        url,
        &[
            "keys",
            "rotate",
            str_of(&expired, "id"),
            "--grace",
            "0",
            "--json",
        ],
    )
    .json();

    // Status filters.
    for (status, expected) in [
        ("revoked", vec![&revoked]),
        ("rotating", vec![&rotating]),
        ("expired", vec![&expired]),
    ] {
        let page = scopekey(url, &["keys", "list", "--status", status, "--json"]).json();
        let want: Vec<String> = expected
            .iter()
            .map(|k| str_of(k, "id").to_owned())
            .collect();
        assert_eq!(ids(&page), want, "--status {status}");
        assert!(page["items"][0]["status"] == status);
    }
    let page = scopekey(
        url,
        &["keys", "list", "--status", "active", "--all", "--json"],
    )
    .json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(5 + 1 + 2));
    assert!(
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|k| k["status"] == "active")
    );
    assert!(ids(&page).contains(&str_of(&active, "id").to_owned()));

    // Name prefix, newest first.
    let page = scopekey(url, &["keys", "list", "--name-prefix", "alpha", "--json"]).json();
    let mut newest_first = a_ids.clone();
    newest_first.reverse();
    assert_eq!(ids(&page), newest_first);

    // Pages: --limit, next_cursor, --cursor, and --all.
    let first = scopekey(
        url,
        &[
            "keys",
            "list",
            "--name-prefix",
            "alpha",
            "--limit",
            "2",
            "--json",
        ],
    )
    .json();
    assert_eq!(ids(&first), newest_first[..2]);
    let cursor = str_of(&first, "next_cursor").to_owned();
    let second = scopekey(
        url,
        &[
            "keys",
            "list",
            "--name-prefix",
            "alpha",
            "--limit",
            "2",
            "--cursor",
            &cursor,
            "--json",
        ],
    )
    .json();
    assert_eq!(ids(&second), newest_first[2..4]);
    let all = scopekey(
        url,
        &[
            "keys",
            "list",
            "--name-prefix",
            "alpha",
            "--limit",
            "2",
            "--all",
            "--json",
        ],
    )
    .json();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["next_cursor"], json!(null));

    // For people: the cursor goes to stderr, the table to stdout.
    let run = scopekey(
        url,
        &["keys", "list", "--name-prefix", "alpha", "--limit", "2"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(table(&run.stdout).len(), 2);
    run.says(&format!("add --cursor {cursor}"));
    let run = scopekey(url, &["keys", "list", "--name-prefix", "nobody"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.is_empty());
    run.says("no keys");

    // The whole table: every row aligned, statuses as derived.
    let run = scopekey(url, &["keys", "list", "--all"]);
    let rows = table(&run.stdout);
    assert_eq!(rows.len(), 11);
    let successor_row = &rows[2];
    assert_eq!(successor_row["ID"], str_of(&successor, "id"));
    assert_eq!(successor_row["NAME"], "beta rotating");
    assert_eq!(successor_row["HINT"], str_of(&successor, "hint"));
    // Page by page, the same table (each page written as it arrives, the
    // columns lined up across them), and no cursor to follow.
    let paged = scopekey(url, &["keys", "list", "--limit", "3", "--all"]);
    assert_eq!(paged.code, 0, "{paged:#?}");
    assert_eq!(table(&paged.stdout), rows);
    assert!(!paged.stderr.contains("--cursor"), "{paged:#?}");
}

scopekey_runtime::both_backends!(list_filters_and_pages, keys_by_status_name_and_page);

async fn the_audit_log(db: &TestDb) {
    let url = db.url.as_str();
    let empty = scopekey(url, &["events"]);
    assert_eq!(empty.code, 0, "{empty:#?}");
    empty.says("no events");

    let first = create(url, "first", &["orders:read"]);
    let second = create(url, "second", &["orders:read", "orders:write"]);
    let first_id = str_of(&first, "id");
    let second_id = str_of(&second, "id");
    let successor = scopekey(
        url,
        &["keys", "rotate", second_id, "--grace", "2h", "--json"],
    )
    .json();
    scopekey(
        url,
        &["keys", "revoke", first_id, "--reason", "done", "--json"],
    )
    .json();

    // Everything, newest first, each as the HTTP API's audit event.
    let page = scopekey(url, &["events", "--json"]).json();
    assert_eq!(page["next_cursor"], json!(null));
    let items = page["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().map(|e| str_of(e, "type")).collect();
    assert_eq!(kinds[0], "key.revoked");
    assert_eq!(kinds[kinds.len() - 1], "key.created");
    assert_eq!(items.len(), 5);
    for e in items {
        let object = e.as_object().expect("object");
        let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["actor_key_id", "at", "details", "id", "key_id", "type"]
        );
        assert_eq!(e["actor_key_id"], json!(null), "the CLI acts as the system");
        uuid::Uuid::parse_str(str_of(e, "id")).expect("event id");
        time_of(e, "at");
    }
    let times: Vec<_> = items.iter().map(|e| time_of(e, "at")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(items[0]["key_id"], first_id);
    assert_eq!(items[0]["details"]["reason"], "done");

    // One key's log: its creation and its rotation.
    let page = scopekey(url, &["events", "--key", second_id, "--json"]).json();
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| str_of(e, "type"))
        .collect();
    assert_eq!(kinds, ["key.rotated", "key.created"]);
    let rotated = &page["items"][0];
    assert_eq!(rotated["details"]["successor_key_id"], successor["id"]);
    assert_eq!(rotated["details"]["grace_seconds"], 7200);

    // Pages.
    let first_page = scopekey(url, &["events", "--limit", "3", "--json"]).json();
    assert_eq!(first_page["items"].as_array().map(Vec::len), Some(3));
    let cursor = str_of(&first_page, "next_cursor").to_owned();
    let rest = scopekey(
        url,
        &["events", "--limit", "3", "--cursor", &cursor, "--json"],
    )
    .json();
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(rest["next_cursor"], json!(null));
    let all = scopekey(url, &["events", "--limit", "1", "--all", "--json"]).json();
    assert_eq!(all["items"], page_items(&first_page, &rest));

    // For people: a table.
    let run = scopekey(url, &["events", "--key", first_id]);
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = table(&run.stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["TYPE"], "key.revoked");
    assert_eq!(rows[0]["KEY"], first_id);
    assert_eq!(rows[0]["ACTOR"], "system");
    assert_eq!(rows[0]["DETAILS"], "reason=done");
    assert_eq!(rows[1]["TYPE"], "key.created");

    // Every page, one event a page, as one table.
    let run = scopekey(url, &["events", "--limit", "1", "--all"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let rows = table(&run.stdout);
    let kinds: Vec<&str> = rows.iter().map(|r| r["TYPE"].as_str()).collect();
    let listed: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| str_of(e, "type"))
        .collect();
    assert_eq!(kinds, listed);
    assert!(!run.stderr.contains("--cursor"), "{run:#?}");
}

fn page_items(a: &Value, b: &Value) -> Value {
    let mut items = a["items"].as_array().cloned().unwrap_or_default();
    items.extend(b["items"].as_array().cloned().unwrap_or_default());
    Value::Array(items)
}

scopekey_runtime::both_backends!(events, the_audit_log);
