//! `--catalogue` / `SCOPEKEY_CATALOGUE`: the CLI holds keys to the
//! service's scope catalogue, read from its Cargo.toml, as the service's
//! HTTP API does. A scope outside it is a refused operation (1, from the
//! runtime); a bad catalogue file is bad usage (2, before the store).

mod common;

use std::path::PathBuf;

use common::*;
use scopekey_runtime::testing::TestDb;

/// A directory of its own with a `Cargo.toml`, removed on drop.
struct Manifest {
    dir: PathBuf,
}

impl Manifest {
    fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "scopekey-cli-catalogue-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the manifest's directory");
        std::fs::write(dir.join("Cargo.toml"), text).expect("write Cargo.toml");
        Self { dir }
    }

    fn path(&self) -> String {
        self.dir.join("Cargo.toml").display().to_string()
    }
}

impl Drop for Manifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SHOP: &str = r#"
[package]
name = "shop"
version = "0.1.0"

[package.metadata.scopekey]
scopes = ["orders:read", "orders:write", "reports:*"]
"#;

/// Runs `scopekey --database-url URL ARGS...` with `SCOPEKEY_CATALOGUE`.
fn with_env(url: &str, catalogue: &str, args: &[&str]) -> Run {
    let mut cmd = command();
    cmd.env("SCOPEKEY_CATALOGUE", catalogue)
        .arg("--database-url")
        .arg(url)
        .args(args);
    run(cmd, "")
}

async fn catalogue_is_applied(db: &TestDb) {
    let url = db.url.as_str();
    let manifest = Manifest::new(SHOP);
    let path = manifest.path();
    let create = |scopes: &str| {
        scopekey(
            url,
            &[
                "--catalogue",
                &path,
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                scopes,
                "--json",
            ],
        )
    };

    // Listed scopes, wildcards that cover one, and the management scopes,
    // which every catalogue holds (as in the runtime and the macro).
    for scopes in [
        "orders:read,orders:write",
        "reports:export",
        "orders:*",
        "*",
        "api_keys:read,api_keys:write,api_keys:revoke",
    ] {
        let key = create(scopes).json();
        let held: Vec<&str> = key["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(held.join(","), scopes);
    }

    // A typo, a wildcard that covers nothing listed, a management scope
    // that is not one: refused by the runtime, exit 1, one line.
    for scopes in ["ordrs:read", "orders:read,billing:*", "api_keys:delete"] {
        create(scopes)
            .fails_with(1)
            .says("is not in the scope catalogue");
    }

    // The same from the environment, and with the directory named.
    let dir = manifest.dir.display().to_string();
    for catalogue in [path.as_str(), dir.as_str()] {
        with_env(
            url,
            catalogue,
            &["keys", "create", "--name", "n", "--scope", "ordrs:read"],
        )
        .fails_with(1)
        .says("is not in the scope catalogue");
        with_env(
            url,
            catalogue,
            &[
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "orders:read",
                "--json",
            ],
        )
        .json();
    }

    // Rotation: `--scope` is held to it too; a key made before the
    // catalogue (without `--catalogue`) keeps what it has.
    let old = create_without(url, &["orders:read", "billing:read"]);
    let id = str_of(&old, "id");
    scopekey(
        url,
        &[
            "--catalogue",
            &path,
            "keys",
            "rotate",
            id,
            "--scope",
            "billing:read",
        ],
    )
    .fails_with(1)
    .says("is not in the scope catalogue");
    let successor = scopekey(
        url,
        &[
            "keys",
            "rotate",
            id,
            "--scope",
            "orders:read",
            "--catalogue",
            &path,
            "--json",
        ],
    )
    .json();
    assert_eq!(successor["scopes"], serde_json::json!(["orders:read"]));

    // Without a catalogue, any valid scope goes.
    create_without(url, &["ordrs:read"]);
}

fn create_without(url: &str, scopes: &[&str]) -> serde_json::Value {
    create(url, "no catalogue", scopes)
}

scopekey_runtime::both_backends!(applied, catalogue_is_applied);

/// Whatever is wrong with the catalogue file, it is bad usage (2), for
/// every command, found before the store is opened (the SQLite file is not
/// created), from the option or the environment.
#[test]
fn a_bad_catalogue_file_exits_2_without_touching_the_store() {
    let db = TempSqlite::new();
    let url = db.url.as_str();
    let empty_dir = Manifest::new("");
    std::fs::remove_file(empty_dir.dir.join("Cargo.toml")).unwrap();
    let missing = empty_dir.dir.join("no-such/Cargo.toml");
    let cases: Vec<(Option<Manifest>, String, &str)> = vec![
        (
            None,
            missing.display().to_string(),
            "cannot read it: No such file",
        ),
        // A directory without a Cargo.toml.
        (
            None,
            empty_dir.dir.display().to_string(),
            "cannot read it: No such file",
        ),
        (
            Some(Manifest::new("[package\n")),
            String::new(),
            "not a valid Cargo.toml",
        ),
        (
            Some(Manifest::new("[package]\nname = \"shop\"\n")),
            String::new(),
            "has no [package.metadata.scopekey] scopes list",
        ),
        (
            Some(Manifest::new("[package.metadata.scopekey]\n")),
            String::new(),
            "has no [package.metadata.scopekey] scopes list",
        ),
        // A misspelt table, or one in the workspace's metadata, is named.
        (
            Some(Manifest::new(&SHOP.replace("scopekey]", "scope-key]"))),
            String::new(),
            "but a [package.metadata.scope-key] table; did you mean `[package.metadata.scopekey]`?",
        ),
        (
            Some(Manifest::new(
                &SHOP.replace("package.metadata", "workspace.metadata"),
            )),
            String::new(),
            "but a [workspace.metadata.scopekey] table, which is not read",
        ),
        (
            Some(Manifest::new("[package.metadata.scopekey]\nother = 1\n")),
            String::new(),
            "unknown key `other` in [package.metadata.scopekey]; the table holds only `scopes`",
        ),
        (
            Some(Manifest::new("[package.metadata.scopekey]\nscopes = []\n")),
            String::new(),
            "is empty",
        ),
        (
            Some(Manifest::new(
                "[package.metadata.scopekey]\nscopes = \"orders:read\"\n",
            )),
            String::new(),
            "must be an array of strings",
        ),
        (
            Some(Manifest::new(
                "[package.metadata.scopekey]\nscopes = [\"Orders:read\"]\n",
            )),
            String::new(),
            "entry 1: upper-case letter `O` at byte 0",
        ),
    ];
    for (manifest, path, says) in &cases {
        let path = manifest
            .as_ref()
            .map_or_else(|| path.clone(), Manifest::path);
        for args in [
            vec!["keys", "create", "--name", "n", "--scope", "orders:read"],
            vec!["keys", "list"],
            vec!["migrate"],
        ] {
            let mut with_option = vec!["--catalogue", path.as_str()];
            with_option.extend(&args);
            for run in [scopekey(url, &with_option), with_env(url, &path, &args)] {
                assert_eq!(run.code, 2, "{path} {args:?}: {run:#?}");
                assert!(run.stdout.is_empty(), "{run:#?}");
                run.says("error: --catalogue / SCOPEKEY_CATALOGUE: ")
                    .says(&path)
                    .says(says);
                assert_eq!(run.stderr.lines().count(), 1, "one line: {run:#?}");
            }
        }
    }
    assert!(
        !db.path.exists(),
        "a bad catalogue must not create the database"
    );
}

/// A misspelt list (`scope = [...]`) is bad usage naming the key, with the
/// right spelling, not a file "without a list" nor a catalogue quietly
/// off; a key's name that is an API key is shown as its hint only.
#[test]
fn a_misspelt_list_is_named() {
    let db = TempSqlite::new();
    let url = db.url.as_str();
    let manifest = Manifest::new(&SHOP.replace("scopes = ", "scope = "));
    let path = manifest.path();
    for run in [
        scopekey(
            url,
            &[
                "--catalogue",
                &path,
                "keys",
                "create",
                "--name",
                "n",
                "--scope",
                "orders:read",
            ],
        ),
        with_env(url, &path, &["keys", "list"]),
    ] {
        run.fails_with(2)
            .says(&path)
            .says("unknown key `scope` in [package.metadata.scopekey]; did you mean `scopes`?");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run:#?}");
    }

    let leaked = scopekey_runtime::KeyFormat::default()
        .generate()
        .expect("a key");
    let leaked = leaked.expose_secret();
    let manifest = Manifest::new(&format!(
        "[package.metadata.scopekey]\nscopes = [\"orders:read\"]\n\"{leaked}\" = 1\n"
    ));
    let run = scopekey(url, &["--catalogue", &manifest.path(), "keys", "list"]);
    run.fails_with(2)
        .says("unknown key `")
        .says(&scopekey_runtime::key::hint(leaked));
    assert!(!run.all_output().contains(leaked), "{run:#?}");
    assert!(
        !db.path.exists(),
        "a bad catalogue must not create the database"
    );
}

#[test]
fn help_documents_the_catalogue() {
    let mut cmd = command();
    cmd.arg("--help");
    let help = run(cmd, "");
    assert_eq!(help.code, 0, "{help:#?}");
    for text in ["--catalogue <PATH>", "SCOPEKEY_CATALOGUE", "api_keys:read"] {
        assert!(help.stdout.contains(text), "--help should say {text:?}");
    }
}
