//! Compile-time behaviour of `#[requires_scope]` and `catalogue!()`.
//!
//! - `tests/ui/<mistake>.rs`: one misuse each, failing with the message in
//!   the `.stderr` beside it.
//! - `tests/ui/pass/<shape>.rs`: every supported handler shape compiles
//!   without warnings and registers its requirement.
//! - `tests/ui-catalogue/`: a crate with a scope catalogue in its Cargo.toml
//!   (trybuild cannot test that, see its manifest), checked the same way;
//!   `tests/ui-catalogue-broken/`, `tests/ui-catalogue-typo/` and
//!   `tests/ui-catalogue-misplaced/`: crates whose catalogue is malformed,
//!   or whose list or table is misspelt; `tests/ui-catalogue-broken/<variant>/`
//!   the diagnostics of the broken crate with other malformed tables.
//!
//! `TRYBUILD=overwrite cargo test --test trybuild` rewrites the `.stderr`
//! files; read them before committing, they are what users see.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");

    t.pass("tests/ui/pass/resource-route.rs");
    t.pass("tests/ui/pass/route-attribute-above.rs");
    t.pass("tests/ui/pass/route-attribute-below.rs");
    t.pass("tests/ui/pass/impl-block.rs");
    t.pass("tests/ui/pass/request-and-result.rs");
    t.pass("tests/ui/pass/generics.rs");
    t.pass("tests/ui/pass/one-line-and-loose-generics.rs");
    t.pass("tests/ui/pass/attributes-kept.rs");
    t.pass("tests/ui/pass/trailing-commas.rs");
    t.pass("tests/ui/pass/catalogue-without-one.rs");
    t.pass("tests/ui/pass/body-items.rs");
}

/// A crate with a catalogue: every binary in tests/ui-catalogue checked
/// (see [`check_fixture`]), and editing the catalogue rebuilds the crate.
#[test]
fn catalogue() {
    let (target, project) = check_fixture("ui-catalogue");

    // Editing the catalogue must rebuild the crate: the expansion includes
    // the manifest, so it is in the binary's dep-info, which Cargo watches.
    let manifest = project.join("Cargo.toml");
    let deps = target.join("debug/deps");
    let tracked = fs::read_dir(&deps)
        .expect("read deps")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == "d")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("catalogue_lists_scopes-"))
        })
        .any(|path| {
            fs::read_to_string(path).is_ok_and(|d| d.contains(&*manifest.to_string_lossy()))
        });
    assert!(
        tracked,
        "{} is not in the dep-info under {}",
        manifest.display(),
        deps.display()
    );
}

/// A crate whose catalogue is malformed: `#[requires_scope]` and
/// `catalogue!()` both say what is wrong with it (tests/ui-catalogue-broken).
#[test]
fn broken_catalogue() {
    check_fixture("ui-catalogue-broken");
}

/// The other ways a catalogue can be malformed, each the broken crate with
/// its table replaced (`tests/ui-catalogue-broken/<variant>/`):
/// both macros say what is wrong, at the macro's call.
#[test]
fn other_catalogue_mistakes() {
    const TABLE: &str = "[package.metadata.scopekey]\n";
    for (variant, body) in [
        ("empty", "scopes = []"),
        ("not-a-list", "scopes = \"orders:read\""),
        ("not-text", "scopes = [\"orders:read\", 7]"),
        ("no-list", ""),
        ("unknown-key", "scopes = [\"orders:read\"]\nstrict = true"),
    ] {
        check_variant(
            "ui-catalogue-broken",
            Some((variant, &format!("{TABLE}{body}"))),
        );
    }
    // Tables other than the one scopekey reads.
    for variant in [
        (
            "not-a-table",
            "[package.metadata]\nscopekey = [\"orders:read\"]",
        ),
        (
            "workspace-table",
            "[workspace.metadata.scopekey]\nscopes = [\"orders:read\"]",
        ),
    ] {
        check_variant("ui-catalogue-broken", Some(variant));
    }
}

/// A crate whose catalogue is misspelt (`scope = [...]`): an error naming
/// the key, not a crate without a catalogue (tests/ui-catalogue-typo).
#[test]
fn misspelt_catalogue() {
    check_fixture("ui-catalogue-typo");
}

/// A crate whose catalogue table is misspelt (`[package.metadata.scope-key]`):
/// an error naming the right table, not a crate without a catalogue
/// (tests/ui-catalogue-misplaced).
#[test]
fn misplaced_catalogue() {
    check_fixture("ui-catalogue-misplaced");
}

/// Copies `tests/<name>` into `<target>/tests/ui-catalogue/<name>` (as
/// trybuild does with its projects: the workspace's Cargo.lock, so the same
/// dependency versions and `--offline` work, and nothing written into the
/// source tree), `cargo check`s every binary there and compares its
/// diagnostics with `src/bin/<bin>.stderr` (none expected without one).
/// The fixtures share one target directory, so the macro crate is built
/// once for all. Returns the target directory and the project's copy.
fn check_fixture(name: &str) -> (PathBuf, PathBuf) {
    check_variant(name, None)
}

/// [`check_fixture`] of `name`, or of a variant of it: `(variant, table)`
/// replaces its `[package.metadata.scopekey]` table, header included, with
/// `table`, and the diagnostics expected are in
/// `tests/<name>/<variant>/<bin>.stderr`.
fn check_variant(name: &str, variant: Option<(&str, &str)>) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests").join(name);
    let target = target_dir().join("tests/ui-catalogue");
    let project = match variant {
        Some((variant, _)) => target.join(format!("{name}-{variant}")),
        None => target.join(name),
    };
    let bins = copy_fixture(root, &fixture, &project, variant.map(|(_, table)| table));
    let expected_at = |source: &Path| match variant {
        Some((variant, _)) => fixture.join(variant).join(
            source
                .with_extension("stderr")
                .file_name()
                .expect("file name"),
        ),
        None => source.with_extension("stderr"),
    };

    let output = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .args([
            "check",
            "--bins",
            "--keep-going",
            "--offline",
            "--quiet",
            "--color=never",
            "--message-format=json",
            "--config=build.rustflags=[\"--diagnostic-width=140\"]",
        ])
        .output()
        .expect("run cargo");

    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-message"
            || message["message"]["spans"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            continue; // not a diagnostic, or a summary ("aborting due to ...")
        }
        let bin = message["target"]["name"].as_str().unwrap_or_default();
        let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
        let out = found.entry(bin.to_owned()).or_default();
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(rendered.trim_end());
        out.push('\n');
    }

    let overwrite = env::var_os("TRYBUILD").is_some_and(|v| v == "overwrite");
    let mut failures = Vec::new();
    for source in &bins {
        let name = source
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let stderr_path = expected_at(source);
        let actual = found.remove(name).unwrap_or_default();
        let expected = fs::read_to_string(&stderr_path).unwrap_or_default();
        if actual == expected {
            continue;
        }
        if overwrite && !actual.is_empty() {
            fs::create_dir_all(stderr_path.parent().expect("a folder")).expect("create folder");
            fs::write(&stderr_path, &actual).expect("write .stderr");
            eprintln!("wrote {}", stderr_path.display());
        } else {
            let show = |s: &str| match s {
                "" => "(no diagnostics)\n".to_owned(),
                s => s.to_owned(),
            };
            failures.push(format!(
                "{name}: expected\n{}got\n{}",
                show(&expected),
                show(&actual)
            ));
        }
    }
    assert!(
        failures.is_empty() && found.is_empty(),
        "{}\nunexpected diagnostics: {found:?}\ncargo stderr:\n{}",
        failures.join("\n"),
        String::from_utf8_lossy(&output.stderr),
    );
    (target, project)
}

/// Makes `project` a copy of the fixture crate whose dependency points back
/// at this workspace (and whose catalogue table holds `table` instead, if
/// given); returns the fixture's `src/bin/*.rs`. Files are only rewritten
/// when they change, so the check stays incremental.
fn copy_fixture(root: &Path, fixture: &Path, project: &Path, table: Option<&str>) -> Vec<PathBuf> {
    let write = |path: PathBuf, text: &str| {
        if fs::read_to_string(&path).ok().as_deref() != Some(text) {
            fs::write(&path, text).expect("write fixture copy");
        }
    };
    let project_bins = project.join("src/bin");
    fs::create_dir_all(&project_bins).expect("create fixture copy");
    let macros = root.join("scopekey-macros");
    let manifest = fs::read_to_string(fixture.join("Cargo.toml"))
        .expect("read fixture manifest")
        .replace(
            "path = \"../../scopekey-macros\"",
            &format!("path = {:?}", macros.to_str().expect("UTF-8 path")),
        );
    assert!(
        manifest.contains(&*macros.to_string_lossy()),
        "dependency not rewritten"
    );
    let manifest = match table {
        Some(table) => {
            const HEADER: &str = "[package.metadata.scopekey]\n";
            let start = manifest.find(HEADER).expect("a catalogue table");
            let end = manifest[start..]
                .find("\n\n")
                .map_or(manifest.len(), |end| start + end);
            format!("{}{table}{}", &manifest[..start], &manifest[end..])
        }
        None => manifest,
    };
    write(project.join("Cargo.toml"), &manifest);
    write(
        project.join("Cargo.lock"),
        &fs::read_to_string(root.join("Cargo.lock")).expect("read Cargo.lock"),
    );

    let mut bins: Vec<PathBuf> = fs::read_dir(fixture.join("src/bin"))
        .expect("read src/bin")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    bins.sort();
    assert!(!bins.is_empty(), "no fixtures in {}", fixture.display());
    for stale in fs::read_dir(&project_bins).expect("read copy").flatten() {
        if !bins
            .iter()
            .any(|bin| bin.file_name() == Some(&stale.file_name()))
        {
            fs::remove_file(stale.path()).expect("remove stale fixture");
        }
    }
    for bin in &bins {
        let name = bin.file_name().expect("file name");
        write(
            project_bins.join(name),
            &fs::read_to_string(bin).expect("read fixture"),
        );
    }
    bins
}

/// The target directory this test was built in (`<target>/debug/deps/..`),
/// so nested builds land beside trybuild's in `<target>/tests/`.
fn target_dir() -> PathBuf {
    let exe = env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
