//! `--catalogue`: the service's scope catalogue, read from the
//! `[package.metadata.scopekey] scopes` list of its `Cargo.toml` — the list
//! `#[requires_scope]` checks handlers against and `scopekey::catalogue!()`
//! hands the runtime — so the CLI refuses the scopes the service's HTTP
//! API refuses.
//!
//! Only the file is read here (every problem with it is bad usage, found
//! before the store is opened). Whether a key's scope is in the catalogue
//! is the runtime's rule ([`ScopeKeyBuilder::catalogue`]), applied to the
//! CLI's keys as to the service's: the management scopes `api_keys:read`,
//! `api_keys:write` and `api_keys:revoke` always belong, `orders:*` and `*`
//! where they cover a listed scope.
//!
//! [`ScopeKeyBuilder::catalogue`]: scopekey_runtime::ScopeKeyBuilder::catalogue

use std::path::Path;

use scopekey_runtime::scope::Grant;
use toml::de::{DeTable, DeValue};

use crate::failure::Failure;

/// Where the list lives in the file, for messages.
const WHERE: &str = "[package.metadata.scopekey] scopes";

/// Reads the catalogue from `path`: a `Cargo.toml`, or a directory holding
/// one. Returns the scopes as listed.
pub fn load(path: &Path) -> Result<Vec<String>, Failure> {
    let file = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_owned()
    };
    // The path is shown (it may come from SCOPEKEY_CATALOGUE, out of
    // sight); any key pasted into it is shown as its hint, as in every
    // error message (`failure::redact`).
    let shown = file.display();
    let usage =
        |why: String| Failure::Usage(format!("--catalogue / SCOPEKEY_CATALOGUE: {shown}: {why}"));
    let text = std::fs::read_to_string(&file).map_err(|e| usage(format!("cannot read it: {e}")))?;
    from_manifest(&text).map_err(usage)
}

/// The catalogue in a manifest's text. Unlike a crate without one (no
/// catalogue, nothing checked), a file named as the catalogue must have
/// it: an operator who names the wrong file learns so at once.
fn from_manifest(text: &str) -> Result<Vec<String>, String> {
    // Where and why, never the line itself: a wrong file named here (a
    // list of leaked keys, an `.env`) must not be printed back.
    let doc = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        });
        format!(
            "not a valid Cargo.toml{at}: {}",
            crate::failure::one_line(e.message())
        )
    })?;
    // A table meant as the list but misspelt or in the workspace's
    // metadata is named, as the macro names it, rather than reported
    // missing.
    let missing = || misplaced(doc.get_ref()).unwrap_or_else(|| format!("it has no {WHERE} list"));
    let mut value = doc.get_ref();
    let mut name = String::new();
    for key in ["package", "metadata", TABLE] {
        name = if name.is_empty() {
            key.to_owned()
        } else {
            format!("{name}.{key}")
        };
        let DeValue::Table(table) = value.get(key).ok_or_else(missing)?.get_ref() else {
            return Err(format!("`{name}` must be a table"));
        };
        value = table;
    }
    // As the macro: a key beside (or instead of) `scopes` is a typo to
    // report, never a list to ignore. The key's name is shown (escaped to
    // one line; like every error message, through `failure::redact`).
    if let Some(key) = value.keys().find(|key| key.get_ref() != "scopes") {
        let key = key.get_ref();
        let shown: String = key.escape_debug().collect();
        let hint = if scopekey_core::edit_distance(&key.to_lowercase(), "scopes") <= 2 {
            "did you mean `scopes`?"
        } else {
            "the table holds only `scopes`"
        };
        return Err(format!(
            "unknown key `{shown}` in [package.metadata.scopekey]; {hint}"
        ));
    }
    let not_strings = || format!("{WHERE} must be an array of strings");
    let DeValue::Array(scopes) = value.get("scopes").ok_or_else(missing)?.get_ref() else {
        return Err(not_strings());
    };
    let mut out = Vec::with_capacity(scopes.len());
    for scope in scopes.iter() {
        let DeValue::String(text) = scope.get_ref() else {
            return Err(not_strings());
        };
        // The macro refuses the same entries, with the same parser.
        // The reason, not the entry (as for --scope).
        Grant::parse(text)
            .map_err(|e| format!("{WHERE}: entry {}: {}", out.len() + 1, e.reason()))?;
        out.push(text.to_string());
    }
    if out.is_empty() {
        // The macro refuses an empty list, and the runtime would read it as
        // no catalogue at all.
        return Err(format!("{WHERE} is empty"));
    }
    Ok(out)
}

/// The catalogue's table under `package.metadata`.
const TABLE: &str = "scopekey";

/// Why a file without `[package.metadata.scopekey]` has no catalogue when
/// it looks meant to have one, by the macro's rule: a key of
/// `package.metadata` near `scopekey` (`scope-key`, `scopekeys`), or the
/// table under `workspace.metadata`, which no crate's catalogue is read
/// from.
fn misplaced(doc: &DeTable) -> Option<String> {
    let metadata = |section: &str| match doc.get(section)?.get_ref() {
        DeValue::Table(t) => match t.get("metadata")?.get_ref() {
            DeValue::Table(metadata) => Some(metadata),
            _ => None,
        },
        _ => None,
    };
    let shown = |key: &str| key.escape_debug().collect::<String>();
    if let Some(key) = metadata("package").and_then(|m| {
        m.keys()
            .map(|k| &**k.get_ref())
            .find(|k| scopekey_core::near_miss(k, TABLE))
    }) {
        return Some(format!(
            "it has no {WHERE} list, but a [package.metadata.{}] table; did you mean \
             `[package.metadata.{TABLE}]`?",
            shown(key)
        ));
    }
    let key = metadata("workspace")?
        .keys()
        .map(|k| &**k.get_ref())
        .find(|k| *k == TABLE || scopekey_core::near_miss(k, TABLE))?;
    Some(format!(
        "it has no {WHERE} list, but a [workspace.metadata.{}] table, which is not read: the \
         catalogue is a crate's own [package.metadata.{TABLE}]; name the Cargo.toml of the \
         service's crate",
        shown(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_list_as_the_macro_does() {
        let manifest = r#"
            [package]
            name = "shop"

            [package.metadata.scopekey]
            scopes = ["orders:read", "reports:*"]   # comments are fine
        "#;
        assert_eq!(
            from_manifest(manifest).unwrap(),
            ["orders:read", "reports:*"]
        );
        let dotted = "[package]\nmetadata.scopekey.scopes = [\"a:b\"]\n";
        let inline = "[package.metadata]\nscopekey = { scopes = [\"a:b\"] }\n";
        for text in [dotted, inline] {
            assert_eq!(from_manifest(text).unwrap(), ["a:b"], "{text}");
        }
    }

    #[test]
    fn refuses_a_file_without_a_good_list() {
        let err = |text: &str| from_manifest(text).unwrap_err();
        for text in [
            "",
            "[package]\nname = \"x\"\n",
            "[package.metadata.scopekey]\n",
            "[package.metadata]\nscopekey = {}\n",
            "[package.metadata.keys]\nscopes = [\"a:b\"]\n",
            "[workspace.metadata.other]\nscopes = [\"a:b\"]\n",
        ] {
            assert_eq!(
                err(text),
                "it has no [package.metadata.scopekey] scopes list",
                "{text}"
            );
        }
        assert!(err("[package\n").starts_with("not a valid Cargo.toml"));
        assert_eq!(
            err("[package.metadata]\nscopekey = 1\n"),
            "`package.metadata.scopekey` must be a table"
        );
        assert!(
            err("[package.metadata.scopekey]\nscopes = \"a:b\"\n").contains("array of strings")
        );
        assert!(err("[package.metadata.scopekey]\nscopes = [1]\n").contains("array of strings"));
        assert!(err("[package.metadata.scopekey]\nscopes = []\n").ends_with("is empty"));
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = [\"a:b\", \"Orders:read\"]\n"),
            "[package.metadata.scopekey] scopes: entry 2: upper-case letter `O` at byte 0; \
             scopes are lower case"
        );
    }

    /// A misspelt list is named, not reported missing; so is any other key
    /// in the table, beside the list or not.
    #[test]
    fn names_an_unknown_key() {
        let err = |text: &str| from_manifest(text).unwrap_err();
        for key in ["scope", "Scopes", "scpoes", "\"scopes \""] {
            assert_eq!(
                err(&format!("[package.metadata.scopekey]\n{key} = [\"a:b\"]\n")),
                format!(
                    "unknown key `{}` in [package.metadata.scopekey]; did you mean `scopes`?",
                    key.trim_matches('"')
                ),
                "{key}"
            );
        }
        assert_eq!(
            err("[package.metadata.scopekey]\nscopes = [\"a:b\"]\nstrict = true\n"),
            "unknown key `strict` in [package.metadata.scopekey]; the table holds only `scopes`"
        );
        // Escaped to one line.
        assert_eq!(
            err("[package.metadata.scopekey]\n\"a\\nb\" = 1\n"),
            "unknown key `a\\nb` in [package.metadata.scopekey]; the table holds only `scopes`"
        );
    }

    /// A misspelt table, or one in the workspace's metadata, is named as
    /// the macro names it, not reported as no list.
    #[test]
    fn names_a_misspelt_or_misplaced_table() {
        let err = |text: &str| from_manifest(text).unwrap_err();
        for key in ["scope-key", "scope_key", "scopekeys", "ScopeKey", "scopkey"] {
            for text in [
                format!("[package.metadata.{key}]\nscopes = [\"a:b\"]\n"),
                format!("[package.metadata]\n{key} = 1\n"),
            ] {
                assert_eq!(
                    err(&text),
                    format!(
                        "it has no [package.metadata.scopekey] scopes list, but a \
                         [package.metadata.{key}] table; did you mean \
                         `[package.metadata.scopekey]`?"
                    ),
                    "{text}"
                );
            }
        }
        for key in ["scopekey", "scope-key"] {
            for text in [
                format!("[workspace.metadata.{key}]\nscopes = [\"a:b\"]\n"),
                format!(
                    "[package]\nname = \"x\"\n[workspace.metadata.{key}]\nscopes = [\"a:b\"]\n"
                ),
            ] {
                assert_eq!(
                    err(&text),
                    format!(
                        "it has no [package.metadata.scopekey] scopes list, but a \
                         [workspace.metadata.{key}] table, which is not read: the catalogue is \
                         a crate's own [package.metadata.scopekey]; name the Cargo.toml of the \
                         service's crate"
                    ),
                    "{text}"
                );
            }
        }
        // With the list in its place, nothing else is looked at.
        let both = "[package.metadata.scopekey]\nscopes = [\"a:b\"]\n\
                    [workspace.metadata.scopekey]\nscopes = [\"c:d\"]\n";
        assert_eq!(from_manifest(both).unwrap(), ["a:b"]);
    }

    /// A wrong file named as the catalogue (a list of leaked keys, an
    /// `.env`) is not printed back: the error says where, not what.
    #[test]
    fn a_wrong_file_is_not_repeated() {
        let key = "sk_live_Xy7kQ2mN9pL4vR8tW1zB6cD3fG5hJ0aE9s8d";
        let pepper = "SCOPEKEY_PEPPER=abcdefghijklmnopqrstuvwxyz0123456789";
        for (text, line) in [
            (format!("{key}\n"), 1),
            (format!("# keys\n{key}\nsk_other\n"), 2),
            (format!("DATABASE_URL=\"x\"\n{pepper}\n"), 2),
            (
                format!("[package.metadata.scopekey]\nscopes = [\"{key}\"]\n"),
                0,
            ),
        ] {
            let e = from_manifest(&text).unwrap_err();
            assert!(!e.contains(key) && !e.contains("abcdefghij"), "{e}");
            assert!(!e.contains('\n'), "{e}");
            if line > 0 {
                assert!(e.contains(&format!("at line {line}, column ")), "{e}");
            }
        }
    }
}
