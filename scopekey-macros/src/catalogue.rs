//! The scope catalogue: `[package.metadata.scopekey] scopes = [...]` in the
//! `Cargo.toml` of the crate being compiled (`$CARGO_MANIFEST_DIR`).
//!
//! The manifest is parsed once per process and path (rustc may expand many
//! handlers in one run), and again only when its text changes (a long-lived
//! rust-analyzer process): the file is read at every expansion and compared
//! with the text parsed, since an edit within one tick of the file system's
//! clock keeps the modification time. Rebuilding when the list changes is
//! the expansion's job: it `include_bytes!`es the manifest, which puts it in
//! the crate's dep-info.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use scopekey_core::{Grant, Scope};
use toml::de::{DeTable, DeValue};

/// Where the catalogue lives, for messages.
pub(crate) const WHERE: &str = "Cargo.toml [package.metadata.scopekey] scopes";

/// The management routes' own scopes (the runtime's `SCOPE_READ`,
/// `SCOPE_WRITE` and `SCOPE_REVOKE`). The runtime counts them in every
/// catalogue, listed or not, so keys that manage keys can always be made;
/// a handler may require them too, as the prebuilt routes do.
pub(crate) const MANAGEMENT_SCOPES: [&str; 3] =
    ["api_keys:read", "api_keys:write", "api_keys:revoke"];

/// The crate's manifest, as far as the macros care.
#[derive(Debug)]
pub(crate) struct Manifest {
    /// Absolute path of `Cargo.toml`, for `include_bytes!`.
    pub path: PathBuf,
    /// `Ok(None)` without a catalogue; `Err` with a message when the manifest
    /// or the catalogue is malformed.
    pub catalogue: Result<Option<Catalogue>, String>,
}

/// The declared scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Catalogue {
    entries: Vec<(String, Grant)>,
}

impl Catalogue {
    /// Reads the catalogue out of a manifest's text.
    pub fn from_manifest(text: &str) -> Result<Option<Self>, String> {
        let doc = DeTable::parse(text).map_err(|e| format!("cannot parse Cargo.toml: {e}"))?;
        let Some(scopekey) = catalogue_table(doc.get_ref())? else {
            return Ok(None);
        };
        // The table is there to declare a catalogue: a misspelt or missing
        // `scopes` must not quietly turn the checks off.
        if let Some(key) = scopekey.keys().find(|key| key.get_ref() != "scopes") {
            return Err(unknown_key(key.get_ref()));
        }
        let Some(scopes) = scopekey.get("scopes") else {
            return Err(format!(
                "Cargo.toml has a [package.metadata.scopekey] table without `{KEY}`: list \
                 this crate's scopes there (`{KEY} = [\"orders:read\"]`), or remove the \
                 table to have no catalogue"
            ));
        };
        let DeValue::Array(scopes) = scopes.get_ref() else {
            return Err(format!(
                "{WHERE} must be an array of strings (`{KEY} = [\"orders:read\"]`), not {}",
                kind(scopes.get_ref())
            ));
        };
        let mut entries = Vec::with_capacity(scopes.len());
        for (i, scope) in scopes.iter().enumerate() {
            let DeValue::String(text) = scope.get_ref() else {
                return Err(format!(
                    "{WHERE} must be an array of strings: entry {} is {}",
                    i + 1,
                    kind(scope.get_ref())
                ));
            };
            let grant = Grant::parse(text).map_err(|e| format!("{WHERE}: {e}"))?;
            entries.push((text.to_string(), grant));
        }
        if entries.is_empty() {
            // It would refuse every scope here, while the runtime reads an
            // empty list as no catalogue at all.
            return Err(format!(
                "{WHERE} is empty: list the scopes this crate uses, or remove it to have no \
                 catalogue"
            ));
        }
        Ok(Some(Self { entries }))
    }

    /// The scopes as listed.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(text, _)| text.as_str())
    }

    /// Whether the catalogue declares `scope`: an entry names it exactly,
    /// or is `resource:*` for its resource, or is `*`; or it is one of the
    /// [`MANAGEMENT_SCOPES`], which every catalogue holds, as in the
    /// runtime.
    pub fn contains(&self, scope: &Scope) -> bool {
        MANAGEMENT_SCOPES.contains(&scope.as_str())
            || self.entries.iter().any(|(_, grant)| grant.covers(scope))
    }

    /// The listed scope closest to `scope`, if it is close enough to be the
    /// one meant: at most one edit in four characters (at least one edit),
    /// counting a swap of neighbours as one edit. Looser limits suggest
    /// `orders:read` for `users:read`.
    ///
    /// A `resource:*` entry stands for that resource with the action as
    /// written (`reports:*` suggests `reports:export` for `reprots:export`),
    /// never for the wildcard itself, which no handler may require; `*`
    /// suggests nothing.
    /// The [`MANAGEMENT_SCOPES`] are candidates too.
    pub fn suggest(&self, scope: &str) -> Option<String> {
        let limit = (scope.chars().count() / 4).max(1);
        let action = scope.split_once(':').map(|(_, action)| action);
        self.entries
            .iter()
            .filter_map(|(text, grant)| match grant {
                Grant::All => None,
                Grant::Resource(resource) => action.map(|a| format!("{resource}:{a}")),
                Grant::Exact(_) => Some(text.clone()),
            })
            .chain(MANAGEMENT_SCOPES.map(str::to_owned))
            .map(|candidate| (scopekey_core::edit_distance(scope, &candidate), candidate))
            .filter(|(distance, _)| *distance <= limit)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, candidate)| candidate)
    }
}

/// The only key `[package.metadata.scopekey]` holds.
const KEY: &str = "scopes";

/// The catalogue's table under `package.metadata`.
const TABLE: &str = "scopekey";

/// `[package.metadata.scopekey]`, or `None` when the manifest has no
/// catalogue. A table that looks meant to be the catalogue but is not read
/// (`[package.metadata.scope-key]`, `[workspace.metadata.scopekey]`) is an
/// error: taken for no catalogue, it would turn every check off without a
/// word.
fn catalogue_table<'a, 'i>(doc: &'a DeTable<'i>) -> Result<Option<&'a DeTable<'i>>, String> {
    let metadata = match doc.get("package") {
        Some(package) => match table(package.get_ref(), "package")?.get("metadata") {
            Some(metadata) => Some(table(metadata.get_ref(), "package.metadata")?),
            None => None,
        },
        None => None,
    };
    if let Some(metadata) = metadata {
        if let Some(scopekey) = metadata.get(TABLE) {
            return match scopekey.get_ref() {
                DeValue::Table(t) => Ok(Some(t)),
                other => Err(format!(
                    "`package.metadata.scopekey` in Cargo.toml must be a table, not {}: write \
                     `[package.metadata.scopekey]` with `scopes = [\"orders:read\", ...]` under it",
                    kind(other)
                )),
            };
        }
        if let Some(key) = metadata
            .keys()
            .find(|key| scopekey_core::near_miss(key.get_ref(), TABLE))
        {
            let shown: String = key.get_ref().escape_debug().collect();
            return Err(format!(
                "Cargo.toml has [package.metadata.{shown}], which scopekey does not read (this \
                 crate would have no scope catalogue); did you mean \
                 `[package.metadata.{TABLE}]`?"
            ));
        }
    }
    if let Some(key) = workspace_table(doc) {
        let shown: String = key.escape_debug().collect();
        return Err(format!(
            "Cargo.toml has [workspace.metadata.{shown}], which scopekey does not read: a \
             crate's scope catalogue is read from its own [package.metadata.{TABLE}] (each \
             crate of a workspace lists its scopes in its own Cargo.toml); move the list there"
        ));
    }
    Ok(None)
}

/// The key of `[workspace.metadata.scopekey]` (or of a near miss of it), if
/// the manifest has one.
fn workspace_table<'a>(doc: &'a DeTable<'_>) -> Option<&'a str> {
    let DeValue::Table(workspace) = doc.get("workspace")?.get_ref() else {
        return None;
    };
    let DeValue::Table(metadata) = workspace.get("metadata")?.get_ref() else {
        return None;
    };
    metadata
        .keys()
        .map(|key| &**key.get_ref())
        .find(|key| *key == TABLE || scopekey_core::near_miss(key, TABLE))
}

/// What a TOML value is, for messages: "a string", "an integer", ...
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The message for a key other than `scopes` in the table, with a "did you
/// mean" when it is close (`scope`, `Scopes`, `scpoes`).
fn unknown_key(key: &str) -> String {
    let shown: String = key.escape_debug().collect();
    let hint = if scopekey_core::edit_distance(&key.to_lowercase(), KEY) <= 2 {
        format!("did you mean `{KEY}`?")
    } else {
        format!("the table holds only `{KEY}`, the list of this crate's scopes")
    };
    format!("unknown key `{shown}` in Cargo.toml [package.metadata.scopekey]; {hint}")
}

fn table<'a, 'i>(value: &'a DeValue<'i>, name: &str) -> Result<&'a DeTable<'i>, String> {
    match value {
        DeValue::Table(t) => Ok(t),
        _ => Err(format!("`{name}` in Cargo.toml must be a table")),
    }
}

/// The manifest of the crate being compiled, or `None` outside Cargo (no
/// `CARGO_MANIFEST_DIR`) or without a readable `Cargo.toml`.
pub(crate) fn load() -> Option<Arc<Manifest>> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    load_from(&Path::new(&dir).join("Cargo.toml"))
}

type Cache = HashMap<PathBuf, (String, Arc<Manifest>)>;

/// The manifest at `path`, made absolute (Cargo gives an absolute
/// `CARGO_MANIFEST_DIR`, but `include_bytes!` would read a relative path
/// from the source file's directory, not from where rustc runs).
fn load_from(path: &Path) -> Option<Arc<Manifest>> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    // Fails only for an empty path, or a relative one without a current
    // directory, which could not be read either.
    let path = std::path::absolute(path).ok()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another expansion panicked mid-insert;
    // the map itself is still usable.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((parsed, manifest)) = cache.get(&path)
        && *parsed == text
    {
        return Some(Arc::clone(manifest));
    }
    let manifest = Arc::new(Manifest {
        catalogue: Catalogue::from_manifest(&text),
        path: path.clone(),
    });
    cache.insert(path, (text, Arc::clone(&manifest)));
    Some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [package]
        name = "shop"
        version = "0.1.0"

        [package.metadata.scopekey]
        scopes = [
            "orders:read",   # comments are fine
            "orders:write",
            "billing.invoices:read",
            "reports:*",
        ]

        [dependencies]
        scopekey = "0.1"
    "#;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    #[test]
    fn reads_the_list() {
        let c = Catalogue::from_manifest(MANIFEST).unwrap().unwrap();
        assert_eq!(
            c.scopes().collect::<Vec<_>>(),
            [
                "orders:read",
                "orders:write",
                "billing.invoices:read",
                "reports:*"
            ]
        );
        assert!(c.contains(&scope("orders:write")));
        assert!(c.contains(&scope("reports:export")));
        assert!(!c.contains(&scope("orders:delete")));
        assert!(!c.contains(&scope("billing:read")));
    }

    #[test]
    fn the_management_scopes_are_always_listed() {
        let c = Catalogue::from_manifest(MANIFEST).unwrap().unwrap();
        for listed in MANAGEMENT_SCOPES {
            assert!(c.contains(&scope(listed)), "{listed}");
        }
        assert!(!c.contains(&scope("api_keys:delete")));
        assert!(!c.contains(&scope("api_keys.admin:read")));
        assert_eq!(c.suggest("api_keys:raed").as_deref(), Some("api_keys:read"));
        assert_eq!(
            c.suggest("api_key:revoke").as_deref(),
            Some("api_keys:revoke")
        );
        // They are not part of the list as written (`catalogue!()`).
        assert_eq!(c.scopes().count(), 4);
    }

    #[test]
    fn other_spellings_of_the_table() {
        let dotted = "[package]\nname = \"x\"\nmetadata.scopekey.scopes = [\"a:b\"]\n";
        let inline = "[package.metadata]\nscopekey = { scopes = [\"a:b\"] }\n";
        for text in [dotted, inline] {
            let c = Catalogue::from_manifest(text).unwrap().unwrap();
            assert_eq!(c.scopes().collect::<Vec<_>>(), ["a:b"]);
        }
    }

    #[test]
    fn no_catalogue() {
        for text in [
            "",
            "[package]\nname = \"x\"\n",
            "[package.metadata.other]\nscopes = [1]\n",
            "[package.metadata.scope]\nscopes = [\"a:b\"]\n",
            "[package.metadata.keys]\nscopes = [\"a:b\"]\n",
            "[workspace.metadata.other]\nscopes = [\"a:b\"]\n",
            "[workspace]\nmetadata = 1\n",
        ] {
            assert_eq!(Catalogue::from_manifest(text), Ok(None), "{text}");
        }
    }

    /// A table meant as the catalogue but under another name, or in the
    /// workspace's metadata, is an error: read as no catalogue, it would
    /// turn every check off without a word.
    #[test]
    fn a_misspelt_or_misplaced_table_is_an_error() {
        let err = |text: &str| Catalogue::from_manifest(text).unwrap_err();
        for key in [
            "scope-key",
            "scope_key",
            "scopekeys",
            "ScopeKey",
            "scopkey",
            "scope-keys",
            "\"scope key\"",
        ] {
            for text in [
                format!("[package.metadata.{key}]\nscopes = [\"a:b\"]\n"),
                format!("[package]\nname = \"x\"\nmetadata.{key}.scopes = [\"a:b\"]\n"),
                format!("[package.metadata]\n{key} = 1\n"),
            ] {
                assert_eq!(
                    err(&text),
                    format!(
                        "Cargo.toml has [package.metadata.{}], which scopekey does not read \
                         (this crate would have no scope catalogue); did you mean \
                         `[package.metadata.scopekey]`?",
                        key.trim_matches('"')
                    ),
                    "{text}"
                );
            }
        }
        for key in ["scopekey", "scope-key"] {
            let text = format!("[workspace.metadata.{key}]\nscopes = [\"a:b\"]\n");
            assert_eq!(
                err(&text),
                format!(
                    "Cargo.toml has [workspace.metadata.{key}], which scopekey does not read: \
                     a crate's scope catalogue is read from its own \
                     [package.metadata.scopekey] (each crate of a workspace lists its scopes \
                     in its own Cargo.toml); move the list there"
                ),
                "{text}"
            );
        }
        // Beside a package without metadata too.
        assert!(
            err("[package]\nname = \"x\"\n[workspace.metadata.scopekey]\nscopes = [\"a:b\"]\n")
                .starts_with("Cargo.toml has [workspace.metadata.scopekey]")
        );
        // With the catalogue in its place, another table is not looked at.
        let both = "[package.metadata.scopekey]\nscopes = [\"a:b\"]\n\
                    [package.metadata.scope-key]\nx = 1\n\
                    [workspace.metadata.scopekey]\nscopes = [\"c:d\"]\n";
        let c = Catalogue::from_manifest(both).unwrap().unwrap();
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["a:b"]);
    }

    #[test]
    fn malformed_catalogues() {
        let err = |text: &str| Catalogue::from_manifest(text).unwrap_err();
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = \"a:b\"\n"),
            "Cargo.toml [package.metadata.scopekey] scopes must be an array of strings \
             (`scopes = [\"orders:read\"]`), not a string"
        );
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = [\"a:b\", 1]\n"),
            "Cargo.toml [package.metadata.scopekey] scopes must be an array of strings: \
             entry 2 is an integer"
        );
        for (value, kind) in [
            ("1.5", "a float"),
            ("true", "a boolean"),
            ("1979-05-27", "a date-time"),
            ("[\"a:b\"]", "an array"),
            ("{ a = 1 }", "a table"),
        ] {
            let text = format!("[package.metadata.scopekey]\nscopes = [{value}]\n");
            assert!(
                err(&text).ends_with(&format!("entry 1 is {kind}")),
                "{value}"
            );
        }
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = [\"Orders:read\"]\n"),
            "Cargo.toml [package.metadata.scopekey] scopes: invalid scope `Orders:read`: \
             upper-case letter `O` at byte 0; scopes are lower case"
        );
        assert!(err("[package.metadata]\nscopekey = 1\n").contains("must be a table"));
        assert!(err("[package.metadata.scopekey]\nscopes = []\n").contains("is empty"));
        assert!(err("[package\n").starts_with("cannot parse Cargo.toml"));
    }

    /// A table that is there but lists nothing under `scopes` is a mistake,
    /// not "no catalogue": it would turn every check off without a word.
    #[test]
    fn a_misspelt_or_missing_list_is_an_error() {
        let err = |text: &str| Catalogue::from_manifest(text).unwrap_err();
        for key in ["scope", "Scopes", "scpoes", "scopess", "\"scopes \""] {
            assert_eq!(
                err(&format!("[package.metadata.scopekey]\n{key} = [\"a:b\"]\n")),
                format!(
                    "unknown key `{}` in Cargo.toml [package.metadata.scopekey]; \
                     did you mean `scopes`?",
                    key.trim_matches('"')
                ),
                "{key}"
            );
        }
        // Beside a good list too, and whatever its value.
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = [\"a:b\"]\nstrict = true\n"),
            "unknown key `strict` in Cargo.toml [package.metadata.scopekey]; the table \
             holds only `scopes`, the list of this crate's scopes"
        );
        assert!(err("[package]\nmetadata.scopekey.scope = 1\n").contains("unknown key `scope`"));
        assert!(
            err("[package.metadata.scopekey]\n\"a\\nb\" = 1\n").contains("unknown key `a\\nb`")
        );
        for text in [
            "[package.metadata.scopekey]\n",
            "[package.metadata]\nscopekey = {}\n",
        ] {
            assert!(
                err(text).starts_with(
                    "Cargo.toml has a [package.metadata.scopekey] table without `scopes`"
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn suggests_close_scopes_only() {
        let c = Catalogue::from_manifest(MANIFEST).unwrap().unwrap();
        let suggest = |s: &str| c.suggest(s);
        assert_eq!(suggest("orders:wirte").as_deref(), Some("orders:write"));
        assert_eq!(suggest("order:read").as_deref(), Some("orders:read"));
        assert_eq!(suggest("orders:reed").as_deref(), Some("orders:read"));
        assert_eq!(
            suggest("billing.invoice:read").as_deref(),
            Some("billing.invoices:read")
        );
        assert_eq!(suggest("users:delete"), None);
        assert_eq!(suggest("users:read"), None);
        assert_eq!(suggest("a:b"), None);
        // `reports:*` stands for `reports:<the action written>`.
        assert_eq!(suggest("reprots:export").as_deref(), Some("reports:export"));
        assert_eq!(suggest("report:x").as_deref(), Some("reports:x"));
        assert_eq!(suggest("reports"), None);
        let everything =
            Catalogue::from_manifest("[package.metadata.scopekey]\nscopes = [\"*\"]\n")
                .unwrap()
                .unwrap();
        assert_eq!(everything.suggest("orders:read"), None);
    }

    #[test]
    fn caches_per_path_until_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("scopekey-macros-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Cargo.toml");
        std::fs::write(&path, MANIFEST).unwrap();
        let first = load_from(&path).unwrap();
        assert!(Arc::ptr_eq(&first, &load_from(&path).unwrap()));
        assert_eq!(first.path, path);
        assert!(matches!(&first.catalogue, Ok(Some(c)) if c.scopes().count() == 4));
        assert!(load_from(&dir.join("missing.toml")).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An edit that keeps the modification time (within one tick of the
    /// file system's clock) and the length is still seen.
    #[test]
    fn sees_an_edit_that_keeps_the_modification_time() {
        let dir = std::env::temp_dir().join(format!("scopekey-macros-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Cargo.toml");
        let write = |text: &str, when: std::time::SystemTime| {
            let file = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &file, text.as_bytes()).unwrap();
            file.set_modified(when).unwrap();
        };
        let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        let scopes = |m: &Manifest| match &m.catalogue {
            Ok(Some(c)) => c.scopes().map(str::to_owned).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        write(MANIFEST, when);
        assert_eq!(scopes(&load_from(&path).unwrap())[1], "orders:write");
        let edited = MANIFEST.replace("orders:write", "orders:wrote");
        assert_eq!(edited.len(), MANIFEST.len());
        write(&edited, when);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), when);
        assert_eq!(scopes(&load_from(&path).unwrap())[1], "orders:wrote");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `include_bytes!` reads a relative path from the source file's
    /// directory: the path kept is absolute.
    #[test]
    fn the_path_is_absolute() {
        // Tests run in the package's directory, which has a Cargo.toml.
        let manifest = load_from(Path::new("Cargo.toml")).unwrap();
        assert!(manifest.path.is_absolute(), "{}", manifest.path.display());
        assert_eq!(
            manifest.path,
            std::env::current_dir().unwrap().join("Cargo.toml")
        );
        assert!(Arc::ptr_eq(
            &manifest,
            &load_from(&std::env::current_dir().unwrap().join("Cargo.toml")).unwrap()
        ));
    }
}
