//! Runs the built `scopekey` binary against per-test databases.

#![allow(dead_code)] // Each test file uses a different part of this.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use time::OffsetDateTime;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_scopekey");

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit status (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and parses standard output as one JSON document.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }

    /// Asserts exit status `code`, nothing on standard output and a single
    /// `error: ...` line on standard error (the operation failures' contract).
    pub fn fails_with(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit status: {self:#?}");
        assert!(self.stdout.is_empty(), "no output on failure: {self:#?}");
        assert!(self.stderr.starts_with("error: "), "{self:#?}");
        if code == 1 {
            assert_eq!(self.stderr.lines().count(), 1, "one line: {self:#?}");
        }
        self
    }

    /// Asserts standard error mentions `text`.
    pub fn says(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr should say {text:?}: {self:#?}"
        );
        self
    }

    /// Everything it printed.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A command for the binary with a clean environment: no `DATABASE_URL` or
/// scopekey settings leak in from the test runner's.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("DATABASE_URL")
        .env_remove("SCOPEKEY_KEY_PREFIX")
        .env_remove("SCOPEKEY_PEPPER")
        .env_remove("SCOPEKEY_ROTATION_SECRET")
        .env_remove("SCOPEKEY_ROTATION_WEBHOOK_PORTS")
        .env_remove("SCOPEKEY_CATALOGUE")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `scopekey --database-url URL ARGS...`.
pub fn scopekey(url: &str, args: &[&str]) -> Run {
    scopekey_with_stdin(url, args, "")
}

/// Runs `scopekey --database-url URL ARGS...` with `stdin` as its input.
pub fn scopekey_with_stdin(url: &str, args: &[&str], stdin: &str) -> Run {
    let mut cmd = command();
    cmd.arg("--database-url").arg(url).args(args);
    run(cmd, stdin)
}

/// The longest one run of the binary may take.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a prepared command, feeding it `stdin`.
pub fn run(mut cmd: Command, stdin: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the scopekey binary");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    // A writer thread, so a child that does not read its input cannot
    // block us on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    // A run that hangs (a lock never released, say) fails the test instead
    // of hanging the suite.
    let pid = child.id().to_string();
    let (finished, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = matches!(
            watched.recv_timeout(RUN_LIMIT),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        if timed_out {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        timed_out
    });
    let output = child
        .wait_with_output()
        .expect("wait for the scopekey binary");
    drop(finished);
    writer.join().expect("stdin writer");
    assert!(
        !watchdog.join().expect("watchdog"),
        "the scopekey binary ran longer than {RUN_LIMIT:?} and was killed: {cmd:?}"
    );
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// The fields of a key object in the HTTP API, all present in every one.
pub const KEY_FIELDS: [&str; 12] = [
    "id",
    "name",
    "scopes",
    "metadata",
    "hint",
    "status",
    "created_at",
    "expires_at",
    "revoked_at",
    "rotated_at",
    "parent_key_id",
    "last_used_at",
];

/// Asserts `v` is a key object as the HTTP API shows it, without a
/// plaintext, and returns it.
pub fn assert_key_object(v: &Value) -> &Value {
    let object = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for field in KEY_FIELDS {
        assert!(object.contains_key(field), "missing `{field}` in {v}");
    }
    assert!(
        !object.contains_key("key"),
        "no plaintext outside create/rotate: {v}"
    );
    assert!(!object.contains_key("key_hash"), "never a hash: {v}");
    uuid::Uuid::parse_str(str_of(v, "id")).expect("id is a UUID");
    assert!(v["scopes"].is_array() && v["metadata"].is_object(), "{v}");
    time_of(v, "created_at");
    v
}

/// The string at `field`.
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {v}"))
}

/// The RFC 3339 time at `field`.
pub fn time_of(v: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(
        str_of(v, field),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("`{field}` is not RFC 3339 ({e}) in {v}"))
}

/// Creates a key through the CLI and returns its JSON (with `key`).
pub fn create(url: &str, name: &str, scopes: &[&str]) -> Value {
    let mut args = vec!["keys", "create", "--name", name, "--json"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    scopekey(url, &args).json()
}

/// The value after `label` in a block of `label  value` lines.
pub fn block_value<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        line.strip_prefix(label)
            .filter(|rest| rest.starts_with("  "))
            .map(str::trim)
    })
}

/// Reads an aligned table: each cell is cut at its header's column (in
/// characters), so a misaligned table reads wrong.
pub fn table(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<char> = lines.next().expect("a header line").chars().collect();
    let mut starts = Vec::new();
    for (i, c) in header.iter().enumerate() {
        if *c != ' ' && (i == 0 || (header[i - 1] == ' ' && i >= 2 && header[i - 2] == ' ')) {
            starts.push(i);
        }
    }
    let cut = |chars: &[char], i: usize| -> String {
        let from = starts[i].min(chars.len());
        let to = starts
            .get(i + 1)
            .copied()
            .unwrap_or(chars.len())
            .min(chars.len());
        chars[from..to].iter().collect::<String>().trim().to_owned()
    };
    let names: Vec<String> = (0..starts.len()).map(|i| cut(&header, i)).collect();
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let cell = cut(&chars, i);
                    // A cell starts exactly at its column: no character of it
                    // spills into the gap before.
                    if starts[i] > 0 && starts[i] <= chars.len() {
                        assert_eq!(chars[starts[i] - 1], ' ', "misaligned `{name}` in {line:?}");
                    }
                    (name.clone(), cell)
                })
                .collect()
        })
        .collect()
}

/// A SQLite file path of its own, removed (with its WAL files) on drop.
pub struct TempSqlite {
    /// The file.
    pub path: std::path::PathBuf,
    /// `sqlite://<path>`.
    pub url: String,
}

impl TempSqlite {
    /// A path that does not exist yet.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "scopekey-cli-test-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        Self { path, url }
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How often `needle` occurs in all of `texts`.
pub fn occurrences(texts: &[String], needle: &str) -> usize {
    texts.iter().map(|t| t.matches(needle).count()).sum()
}
