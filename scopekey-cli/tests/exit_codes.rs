//! Exit statuses: 1 with one line on stderr for every kind of failed
//! operation, 2 for every kind of bad usage; nothing secret is echoed.

mod common;

use common::*;
use scopekey_runtime::KeyFormat;
use scopekey_runtime::testing::{Backend, TestDb};

const UNKNOWN_ID: &str = "0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d";

async fn operation_failures_exit_1(db: &TestDb) {
    let url = db.url.as_str();

    // Unknown id, for every command that takes one.
    for args in [
        vec!["keys", "show", UNKNOWN_ID],
        vec!["keys", "show", UNKNOWN_ID, "--json"],
        vec!["keys", "rotate", UNKNOWN_ID],
        vec!["keys", "revoke", UNKNOWN_ID, "--json"],
        vec!["keys", "lineage", UNKNOWN_ID],
        vec!["events", "--key", UNKNOWN_ID],
    ] {
        scopekey(url, &args)
            .fails_with(1)
            .says(&format!("no key with id {UNKNOWN_ID}"));
    }

    // Conflicts: rotating twice, rotating a revoked key, an expired one.
    let key = create(url, "twice", &["orders:read"]);
    let id = str_of(&key, "id");
    scopekey(url, &["keys", "rotate", id, "--json"]).json();
    scopekey(url, &["keys", "rotate", id])
        .fails_with(1)
        .says("already has a successor");

    let key = create(url, "revoked", &["orders:read"]);
    let id = str_of(&key, "id");
    scopekey(url, &["keys", "revoke", id, "--json"]).json();
    scopekey(url, &["keys", "rotate", id, "--json"])
        .fails_with(1)
        .says("it is revoked");

    let key = create(url, "short grace", &["orders:read"]);
    let id = str_of(&key, "id");
    scopekey(url, &["keys", "rotate", id, "--grace", "0", "--json"]).json();
    scopekey(url, &["keys", "rotate", id])
        .fails_with(1)
        .says("it is expired");
    // Expired with no successor: its expiry passed (set in the past by
    // hand, since the CLI reads the wall clock).
    let key = create(url, "expired", &["orders:read"]);
    let id = str_of(&key, "id");
    let just_after_creation = match db.backend() {
        Backend::Sqlite => "created_at + 1",
        Backend::Postgres => "created_at + interval '1 microsecond'",
    };
    db.execute(&format!(
        "UPDATE scopekey_keys SET expires_at = {just_after_creation} WHERE id = '{id}'"
    ))
    .await;
    scopekey(url, &["keys", "rotate", id])
        .fails_with(1)
        .says("it is expired");
    assert_eq!(
        scopekey(url, &["keys", "lineage", id, "--json"]).json()["items"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "no successor"
    );

    // Names and values the runtime refuses (a malformed scope is bad
    // usage: `bad_usage_exits_2_without_touching_the_store`).
    for (args, says) in [
        (
            vec!["keys", "create", "--name", " ", "--scope", "orders:read"],
            "`name` must be",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "orders:read",
                "--expires-at",
                "2000-01-01T00:00:00Z",
            ],
            "must be in the future",
        ),
    ] {
        scopekey(url, &args).fails_with(1).says(says);
    }

    // A successor cannot gain scopes; a reason cannot hold control
    // characters. A malformed scope is bad usage, before anything is read.
    let key = create(url, "narrow", &["orders:read"]);
    let id = str_of(&key, "id");
    scopekey(url, &["keys", "rotate", id, "--scope", "orders:write"])
        .fails_with(1)
        .says("parent did not have");
    scopekey(url, &["keys", "rotate", id, "--scope", "Bad"])
        .fails_with(2)
        .says("invalid value for '--scope <SCOPE>'");
    scopekey(url, &["keys", "revoke", id, "--reason", "a\u{7}b"])
        .fails_with(1)
        .says("`reason`");
    // Nothing of the above changed the key.
    let after = scopekey(url, &["keys", "show", id, "--json"]).json();
    assert_eq!(after["status"], "active");

    // A database without the schema, when told not to migrate.
    let fresh = TempSqlite::new();
    std::fs::File::create(&fresh.path).expect("an empty file");
    scopekey(&fresh.url, &["--no-migrate", "keys", "list"])
        .fails_with(1)
        .says("key store unavailable");
}

scopekey_runtime::both_backends!(operation_failures, operation_failures_exit_1);

#[test]
fn an_unreachable_store_exits_1() {
    // Nothing listens on port 1: refused at once, not after a pool timeout.
    let started = std::time::Instant::now();
    scopekey("postgres://postgres@127.0.0.1:1/nowhere", &["keys", "list"])
        .fails_with(1)
        .says("key store unavailable")
        .says("refused");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let missing_dir = std::env::temp_dir().join(format!(
        "scopekey-no-such-dir-{}/keys.db",
        uuid::Uuid::now_v7().simple()
    ));
    scopekey(&format!("sqlite://{}", missing_dir.display()), &["migrate"])
        .fails_with(1)
        .says("unable to open database file");
}

/// A SQLite path that names no file is a mistake (a typo, the wrong folder),
/// not an empty store: only `migrate` and `keys create` start one. Every
/// other command fails (1) and creates nothing; `keys compromised` above
/// all, which would otherwise find every leaked key unknown and exit 0.
#[test]
fn a_missing_sqlite_file_is_not_an_empty_store() {
    let db = TempSqlite::new();
    let leaked = KeyFormat::default().generate().expect("a key");
    for (args, stdin) in [
        (vec!["keys", "list"], ""),
        (vec!["keys", "list", "--json"], ""),
        (vec!["keys", "show", UNKNOWN_ID], ""),
        (vec!["keys", "rotate", UNKNOWN_ID], ""),
        (vec!["keys", "revoke", UNKNOWN_ID], ""),
        (vec!["keys", "lineage", UNKNOWN_ID], ""),
        (vec!["events"], ""),
        (vec!["keys", "compromised", "-"], leaked.expose_secret()),
        (
            vec!["keys", "compromised", "-", "--json"],
            leaked.expose_secret(),
        ),
    ] {
        scopekey_with_stdin(&db.url, &args, stdin)
            .fails_with(1)
            .says(&format!("no key store at {}", db.path.display()))
            .says("scopekey migrate");
        assert!(!db.path.exists(), "{args:?} created the store");
    }

    // `migrate` starts one; `keys create` too (a first key for a new service).
    scopekey(&db.url, &["migrate"]);
    assert!(db.path.exists());
    scopekey(&db.url, &["keys", "list", "--json"]).json();
    let other = TempSqlite::new();
    create(&other.url, "first", &["orders:read"]);
    assert!(other.path.exists());
}

/// An in-memory SQLite database is gone when the command ends: a key created
/// there could never be used. Bad usage (2), whatever the command.
#[test]
fn an_in_memory_sqlite_database_is_bad_usage() {
    for url in [
        "sqlite::memory:",
        "sqlite://file?mode=memory",
        "sqlite://:memory:",
        "sqlite:",
        "sqlite://",
    ] {
        for args in [
            vec!["migrate"],
            vec!["keys", "create", "--name", "n", "--scope", "orders:read"],
            vec!["keys", "list"],
        ] {
            scopekey(url, &args)
                .fails_with(2)
                .says("in-memory SQLite database");
        }
    }
}

#[test]
fn a_password_in_the_url_is_never_repeated() {
    let run = scopekey(
        "postgres://admin:hunter2secret@127.0.0.1:1/nowhere",
        &["keys", "list"],
    );
    run.fails_with(1);
    assert!(!run.all_output().contains("hunter2secret"), "{run:#?}");

    let run = scopekey("mysql://admin:hunter2secret@db/keys", &["keys", "list"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(!run.all_output().contains("hunter2secret"), "{run:#?}");
    run.says("unsupported --database-url");

    // Nor does --help show DATABASE_URL's value.
    let mut cmd = command();
    cmd.env("DATABASE_URL", "postgres://admin:hunter2secret@db/keys")
        .arg("--help");
    let run = run_cmd(cmd);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("DATABASE_URL"), "{run:#?}");
    assert!(!run.all_output().contains("hunter2secret"), "{run:#?}");
}

fn run_cmd(cmd: std::process::Command) -> Run {
    run(cmd, "")
}

/// Usage errors are found before the store is touched: the SQLite file
/// these run against is never created.
#[test]
fn bad_usage_exits_2_without_touching_the_store() {
    let db = TempSqlite::new();
    let url = db.url.as_str();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Scopes that break the grammar: the reason, from the runtime's
        // parser, before the store is opened (a typo must not create a
        // SQLite file).
        (
            vec!["keys", "create", "--name", "n", "--scope", "Orders:read"],
            "upper-case letter `O` at byte 0",
        ),
        (
            vec!["keys", "create", "--name", "n", "--scope", "orders"],
            "missing `:`",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "orders:read",
                "--json",
                "--scope",
                "a b:c",
            ],
            "whitespace at byte 1",
        ),
        (
            vec!["keys", "create", "--name", "n", "--scope", "orders:read,"],
            "cannot be empty",
        ),
        (
            vec!["keys", "create", "--name", "n", "--scope", "orders:wr*"],
            "wildcard at byte",
        ),
        (
            vec!["keys", "rotate", UNKNOWN_ID, "--scope", "a:b,Bad"],
            "invalid value for '--scope <SCOPE>'",
        ),
        // A rotation period past the runtime's ten years: usage, not a
        // failed operation.
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--rotate-every",
                "3651d",
            ],
            "at most 3650d",
        ),
        // Bad durations.
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in",
                "30",
            ],
            "--expires-in",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in",
                "3x",
            ],
            "unknown unit `x`",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in",
                "0",
            ],
            "more than zero",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in=-1h",
            ],
            "negative",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in",
                "",
            ],
            "empty",
        ),
        (
            vec!["keys", "rotate", UNKNOWN_ID, "--grace", "1.5h"],
            "--grace",
        ),
        (
            vec!["keys", "rotate", UNKNOWN_ID, "--grace", "366d"],
            "at most",
        ),
        (
            vec!["keys", "rotate", UNKNOWN_ID, "--grace", "soon"],
            "not a duration",
        ),
        // Missing required arguments and commands.
        (vec!["keys", "create", "--scope", "a:b"], "--name <NAME>"),
        (vec!["keys", "create", "--name", "n"], "--scope <SCOPE>"),
        (vec!["keys", "show"], "<ID>"),
        (vec!["keys", "rotate"], "<ID>"),
        (vec!["keys", "revoke", "--reason", "x"], "<ID>"),
        (vec!["keys"], "Usage"),
        (vec![], "Usage"),
        // Unknown commands and options, bad filter values.
        (
            vec!["keys", "delete", UNKNOWN_ID],
            "unrecognized subcommand",
        ),
        (vec!["keys", "list", "--colour"], "unexpected argument"),
        (vec!["keys", "list", "--status", "bogus"], "possible values"),
        (vec!["keys", "list", "--limit", "0"], "--limit"),
        (vec!["keys", "list", "--limit", "501"], "--limit"),
        (vec!["events", "--cursor", "junk"], "--cursor"),
        // Another listing's cursor.
        (
            vec!["events", "--cursor", "k.1.00000000000000000000000000000000"],
            "a cursor of the key list, not of the audit log",
        ),
        (
            vec![
                "keys",
                "list",
                "--cursor",
                "e.1.00000000000000000000000000000000",
            ],
            "a cursor of the audit log, not of the key list",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--metadata",
                "[1]",
            ],
            "JSON object",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-at",
                "tomorrow",
            ],
            "RFC 3339",
        ),
        (
            vec![
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "a:b",
                "--expires-in",
                "1d",
                "--expires-at",
                "2030-01-01T00:00:00Z",
            ],
            "cannot be used with",
        ),
        (vec!["--key-prefix", "Bad", "keys", "list"], "key prefix"),
        // A bad key format is bad usage even when the id names no key or
        // the report cannot be read.
        (
            vec!["--key-prefix", "Bad", "keys", "show", "nope"],
            "key prefix",
        ),
        (
            vec!["keys", "lineage", "nope", "--key-prefix", "Bad"],
            "key prefix",
        ),
        (
            vec!["--key-prefix", "Bad", "keys", "rotate", "42"],
            "key prefix",
        ),
        (
            vec!["--key-prefix", "Bad", "keys", "revoke", "0190c8f2"],
            "key prefix",
        ),
        (
            vec!["--key-prefix", "Bad", "events", "--key", "nope"],
            "key prefix",
        ),
        (
            vec![
                "--key-prefix",
                "Bad",
                "keys",
                "compromised",
                "/no/such/report.txt",
            ],
            "key prefix",
        ),
    ];
    for (args, says) in cases {
        let run = scopekey(url, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(says),
            "{args:?} should say {says:?}: {run:#?}"
        );
    }
    assert!(
        !db.path.exists(),
        "a usage error must not create the database"
    );

    // No database at all.
    let run = run_cmd({
        let mut cmd = command();
        cmd.args(["keys", "list"]);
        cmd
    });
    assert_eq!(run.code, 2, "{run:#?}");
    run.says("pass --database-url URL or set DATABASE_URL");
}

/// An id that is not a UUID names no key: exit 1 like any unknown id (the
/// HTTP API answers 404 for it), found before the store is opened.
#[test]
fn an_id_that_is_not_a_uuid_is_unknown() {
    let db = TempSqlite::new();
    for args in [
        vec!["keys", "show", "not-a-uuid"],
        vec!["keys", "show", "does-not-exist", "--json"],
        vec!["keys", "rotate", "42"],
        vec!["keys", "revoke", "0190c8f2"],
        vec!["keys", "lineage", ""],
        vec!["events", "--key", "nope"],
    ] {
        scopekey(&db.url, &args)
            .fails_with(1)
            .says("no key with that id")
            .says("not a key id");
    }
    assert!(!db.path.exists(), "the store was not opened");
}

/// Runs each command with `var` set to `value`: usage (2), the message
/// naming the variable and not its value, and the store not opened.
fn bad_variable_exits_2(var: &str, value: &std::ffi::OsStr, commands: &[Vec<&str>]) {
    let db = TempSqlite::new();
    for args in commands {
        let mut cmd = command();
        cmd.env(var, value)
            .arg("--database-url")
            .arg(&db.url)
            .args(args);
        let run = run_cmd(cmd);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        run.says(var);
        let shown = value.to_string_lossy();
        assert!(!run.all_output().contains(&*shown), "{run:#?}");
    }
    assert!(!db.path.exists(), "the store was not opened");
}

/// A pepper that is not UTF-8 is bad usage, found before the id or the
/// report.
#[test]
fn a_bad_pepper_exits_2_whatever_the_id() {
    use std::os::unix::ffi::OsStrExt;
    let pepper = std::ffi::OsStr::from_bytes(b"\xff pepper");
    bad_variable_exits_2(
        "SCOPEKEY_PEPPER",
        pepper,
        &[
            vec!["keys", "show", "nope"],
            vec!["keys", "lineage", "nope"],
            vec!["keys", "rotate", "nope"],
            vec!["keys", "revoke", "nope"],
            vec!["events", "--key", "nope"],
            vec!["keys", "compromised", "/no/such/report.txt"],
        ],
    );
}

/// A rotation secret that cannot be read, or too short to seal with, is
/// bad usage too, whatever the command (even those that never use it),
/// found before the store is opened; the message names the variable, never
/// its value.
#[test]
fn a_bad_rotation_secret_exits_2_whatever_the_command() {
    use std::os::unix::ffi::OsStrExt;
    let not_base64 = std::ffi::OsStr::from_bytes(b"whsec_!!not-base64!!");
    let not_utf8 = std::ffi::OsStr::from_bytes(b"whsec_\xff");
    let too_short = std::ffi::OsStr::new("whsec_Y2hhbmdlbWU=");
    for secret in [not_base64, not_utf8, too_short] {
        bad_variable_exits_2(
            "SCOPEKEY_ROTATION_SECRET",
            secret,
            &[
                vec!["migrate"],
                vec!["keys", "list"],
                vec!["keys", "revoke", "0190c8f2-0000-7000-8000-000000000000"],
                vec!["keys", "compromised", "/no/such/report.txt"],
                vec!["keys", "create", "--name", "n", "--scope", "a:b"],
            ],
        );
    }
}

#[test]
fn a_plaintext_key_given_as_an_id_is_not_echoed() {
    let db = TempSqlite::new();
    let key = KeyFormat::default().generate().expect("a key");
    let plaintext = key.expose_secret();
    for args in [
        vec!["keys", "show", plaintext],
        vec!["keys", "revoke", plaintext, "--reason", "oops"],
        vec!["keys", "rotate", plaintext],
        vec!["events", "--key", plaintext],
    ] {
        let run = scopekey(&db.url, &args);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(!run.all_output().contains(plaintext), "echoed: {run:#?}");
        assert!(
            !run.all_output().contains(&plaintext[3..20]),
            "echoed: {run:#?}"
        );
        run.says("not a key id");
    }
    // Keys pasted where clap expects no argument: its usage error (2)
    // leaves them out. Another prefix is a key too.
    let other = KeyFormat::new("acme_live")
        .unwrap()
        .generate()
        .expect("a key");
    let id = "0190c8f2-0000-7000-8000-000000000000";
    for args in [
        vec!["keys", "compromised", plaintext, other.expose_secret()],
        vec!["keys", "revoke", id, other.expose_secret()],
        vec!["keys", "show", id, plaintext],
        vec!["events", plaintext],
    ] {
        let run = scopekey(&db.url, &args);
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(run.stderr.contains("unexpected argument"), "{run:#?}");
        for key in [plaintext, other.expose_secret()] {
            assert!(!run.all_output().contains(&key[8..30]), "echoed: {run:#?}");
        }
    }
    // Pasted as an option's value, with punctuation around it, as the
    // key prefix or as a scope: still left out.
    let with_eq = format!("--grace={plaintext}");
    let quoted = format!("'{plaintext}',");
    let scopes = format!("orders:read,{plaintext}");
    for args in [
        vec!["keys", "create", "--name", "n", "--scope", plaintext],
        vec!["keys", "create", "--name", "n", "--scope", &scopes],
        vec!["keys", "rotate", id, "--scope", plaintext],
        vec!["keys", "rotate", id, &with_eq],
        vec!["keys", "list", "--limit", plaintext],
        vec!["keys", "show", id, &quoted],
        vec!["--key-prefix", plaintext, "keys", "show", id],
    ] {
        let run = scopekey(&db.url, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(
            !run.all_output().contains(&plaintext[8..30]),
            "echoed: {run:#?}"
        );
    }
    assert!(!db.path.exists(), "the store was not opened");
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["keys", "create", "--help"],
        vec!["help", "keys", "compromised"],
    ] {
        let mut cmd = command();
        cmd.args(&args);
        let run = run_cmd(cmd);
        assert_eq!(run.code, 0, "{args:?}: {run:#?}");
        assert!(!run.stdout.is_empty());
    }
}

/// Runs the binary with its standard output already closed (a reader that
/// went away: `scopekey ... | head -0`).
fn with_closed_stdout(url: &str, args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut cmd = command();
    cmd.arg("--database-url").arg(url).args(args);
    let output = cmd
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the binary");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A reader that stops early (`keys list | head`) ends a listing quietly
/// (0, nothing on standard error); but a key whose plaintext could not be
/// written exists with nobody holding it: 1, naming the key to revoke.
#[test]
fn a_closed_standard_output() {
    let db = TempSqlite::new();
    // More than stdout's buffer (8 KiB): written while serialized.
    let metadata = serde_json::json!({ "notes": "x".repeat(6_000) }).to_string();
    for i in 0..3 {
        let name = format!("k{i}");
        let args = [
            "keys",
            "create",
            "--name",
            &name,
            "--scope",
            "orders:read",
            "--metadata",
            &metadata,
            "--json",
        ];
        scopekey(&db.url, &args).json();
    }
    for args in [
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["events"],
    ] {
        let run = with_closed_stdout(&db.url, &args);
        assert_eq!(run.code, 0, "{args:?}: {run:#?}");
        assert!(run.stderr.is_empty(), "{args:?}: {run:#?}");
    }
    for json in [false, true] {
        let mut args = vec!["keys", "create", "--name", "lost", "--scope", "orders:read"];
        if json {
            args.push("--json");
        }
        let run = with_closed_stdout(&db.url, &args);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(
            run.stderr.contains("its plaintext could not be written")
                && run.stderr.contains("scopekey keys revoke "),
            "{run:#?}"
        );
    }
    // A warning for people still reaches them, whatever the output's size:
    // a revoked key's live successor.
    let args = [
        "keys",
        "create",
        "--name",
        "rotated",
        "--scope",
        "orders:read",
        "--metadata",
        &metadata,
        "--json",
    ];
    let key = scopekey(&db.url, &args).json();
    let id = str_of(&key, "id");
    scopekey(&db.url, &["keys", "rotate", id, "--json"]).json();
    for json in [false, true] {
        let mut args = vec!["keys", "revoke", id];
        if json {
            args.push("--json");
        }
        let run = with_closed_stdout(&db.url, &args);
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(run.stderr.contains("its successor"), "{run:#?}");
    }
    // So does a compromise report's summary, in either output: the keys
    // were revoked, and what they minted may still be live.
    let leaked = scopekey(
        &db.url,
        &[
            "keys",
            "create",
            "--name",
            "leaked",
            "--scope",
            "orders:read",
            "--json",
        ],
    )
    .json();
    let report = db.path.with_extension("leaked.txt");
    std::fs::write(&report, format!("{}\n", str_of(&leaked, "key"))).expect("write the report");
    let report_arg = report.to_str().expect("a UTF-8 path");
    for (json, summary) in [
        (false, "1 revoked, 0 already revoked"),
        (true, "0 revoked, 1 already revoked"),
    ] {
        let mut args = vec!["keys", "compromised", report_arg];
        if json {
            args.push("--json");
        }
        let run = with_closed_stdout(&db.url, &args);
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(run.stderr.contains(summary), "{run:#?}");
    }
    std::fs::remove_file(&report).ok();
}
