//! The command line, as clap derives it. The doc comments here are the
//! `--help` texts.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Args, Parser, Subcommand, ValueEnum};
use scopekey_runtime::scope::Grant;
use scopekey_runtime::{KeyId, Status};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::duration;
use crate::failure::Failure;

const AFTER_HELP: &str = "\
Every command except `migrate` also creates or upgrades the schema first
(idempotent, so it is safe while a server runs; on an up-to-date store it
only reads, needing no DDL rights); pass --no-migrate to refuse that and fail
on a database without the schema instead.

Only `migrate` and `keys create` start a SQLite store whose file is missing;
every other command fails on one (1), so a mistyped path never reads as an
empty store.

Exit status: 0 on success, 1 when the operation failed (unknown id, conflict,
a scope outside the catalogue, a time or metadata the runtime refuses, no
SQLite file, database unreachable) with a one-line message on standard error,
2 on bad usage (unknown option, bad duration, URL or scope, a time or
metadata that does not parse, an in-memory SQLite URL, a bad SCOPEKEY_PEPPER,
SCOPEKEY_ROTATION_SECRET, SCOPEKEY_ROTATION_WEBHOOK_PORTS or catalogue file, a
key given where a file goes),
found before the store is opened. An id that is not a UUID
names no key: 1, like any unknown id. A key pasted on the command line is
never repeated back.

A --scope that is not `resource:action`, `resource:*` or `*` is bad usage (2),
found before the store is opened. With --catalogue, a scope outside the
catalogue is refused by the runtime, as the service's HTTP API refuses it
(400): the operation failed (1). A catalogue file that is missing, unreadable,
malformed, without a [package.metadata.scopekey] scopes list or with another
key in that table (a misspelt `scope`) is bad usage (2), whatever the command.

Environment:
  DATABASE_URL          the key store, when --database-url is not given
  SCOPEKEY_CATALOGUE    the scope catalogue, when --catalogue is not given
  SCOPEKEY_KEY_PREFIX   the key prefix, when --key-prefix is not given
  SCOPEKEY_PEPPER       the hashing pepper, if the service uses one (only read
                        from the environment, never from the command line)
  SCOPEKEY_ROTATION_SECRET
                        the service's rotation secrets (whsec_..., current
                        first), as the service has them: needed by keys
                        create --rotation-webhook; keys rotate seals the
                        lineage's webhook secret anew under the current one
                        (without them it is copied as it is); checked by
                        every command
  SCOPEKEY_ROTATION_WEBHOOK_PORTS
                        the ports a --rotation-webhook URL may name, as the
                        service allows them (`443,8443`; 443 alone unless
                        set); checked by every command";

/// Administers scopekey API keys without the HTTP API: bootstrap the first
/// admin key, rotate or revoke a leaked key, script key management.
#[derive(Debug, Parser)]
#[command(name = "scopekey", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// The key store: `sqlite://path/to/keys.db` (a missing file is created,
    /// readable by its owner only, by `migrate` and `keys create` alone;
    /// other commands fail on it) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true,
        help_heading = "Global options"
    )]
    pub database_url: Option<String>,

    /// The prefix of the service's keys (`sk` unless the service configures
    /// another, such as `acme_live`). Must match the service's, or created
    /// keys will not verify and reported keys read as malformed.
    #[arg(
        long,
        env = "SCOPEKEY_KEY_PREFIX",
        hide_env_values = true,
        value_name = "PREFIX",
        default_value = scopekey_runtime::key::DEFAULT_PREFIX,
        global = true,
        help_heading = "Global options"
    )]
    pub key_prefix: String,

    /// The service's scope catalogue: its Cargo.toml, or the directory of it.
    ///
    /// `keys create` and `keys rotate --scope` then refuse scopes outside
    /// its `[package.metadata.scopekey] scopes` list, as the service does
    /// with `builder.catalogue(scopekey::catalogue!())`: `orders:*` and `*`
    /// pass where they cover a listed scope, and the management scopes
    /// `api_keys:read`, `api_keys:write` and `api_keys:revoke` always.
    /// Without it, any valid scope goes.
    #[arg(
        long,
        env = "SCOPEKEY_CATALOGUE",
        value_name = "PATH",
        global = true,
        help_heading = "Global options"
    )]
    pub catalogue: Option<PathBuf>,

    /// Do not create or upgrade the schema before running the command.
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_migrate: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the key store's schema (idempotent); creates a
    /// missing SQLite file.
    Migrate,
    /// Create, list, show, trace (lineage), rotate and revoke keys; revoke
    /// leaked ones (compromised).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the audit log, newest first.
    Events(EventsArgs),
    /// Delete old `auth.failed` events, the bulk of the audit log.
    ///
    /// Refused keys are sampled into the audit log (up to ten a second per
    /// server process for keys no one holds, by default, plus those of
    /// known keys): run this
    /// from a scheduled job. Every other event is kept. Safe while a server
    /// runs.
    Prune(PruneArgs),
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete the `auth.failed` events older than this (`90d`; `0` deletes
    /// them all).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub auth_failures_older_than: Duration,

    #[command(flatten)]
    pub output: Output,
}

/// `scopekey keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its plaintext, once.
    ///
    /// The plaintext is shown only here: store it at once, it cannot be
    /// retrieved later. Run this against an empty store to bootstrap the
    /// first admin key: `scopekey keys create --name admin --scope '*'`.
    Create(CreateArgs),
    /// List keys, newest first.
    List(ListArgs),
    /// Show one key (never its plaintext).
    Show(ShowArgs),
    /// Rotate a key: print its successor's plaintext, once.
    ///
    /// The old key keeps working for the grace period (24h unless --grace
    /// says otherwise; 0 ends it now), never past its own expiry. The
    /// successor has the same scopes unless --scope names a subset. A key
    /// that was already rotated, is revoked or is expired cannot be rotated.
    Rotate(RotateArgs),
    /// Revoke a key at once (revoking a revoked key changes nothing).
    ///
    /// A running service refuses it on its next request if it revoked it
    /// itself, and within one second otherwise. A successor the key rotated
    /// into that is still live is named on standard error (a leaked key may
    /// have rotated itself into the thief's hands): revoke it too if so.
    Revoke(RevokeArgs),
    /// Revoke every key in a report of leaked plaintext keys.
    ///
    /// Reads one plaintext key a line from FILE, or from standard input when
    /// FILE is `-` or absent; blank lines and lines starting with `#` are
    /// skipped. Each key not revoked yet (expired ones too) is revoked with
    /// reason `compromised` and
    /// audited as `key.compromised`; the keys it minted (created, or
    /// rotated into being, and every successor of a key it created) are
    /// listed, and revoked too with `--revoke-minted`. The report says, per line, `revoked`,
    /// `already_revoked`, `unknown` or `malformed`, and never repeats the
    /// plaintext. Exits 0 once every line is accounted for, whatever the
    /// outcomes.
    Compromised(CompromisedArgs),
    /// Show a key's rotation lineage, oldest first: its ancestors, itself
    /// and its successors.
    Lineage(ShowArgs),
}

/// Output options shared by the commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print one JSON document shaped as the HTTP API's responses.
    #[arg(long)]
    pub json: bool,
}

/// `keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people (1 to 200 characters).
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// A scope the key grants: `resource:action`, `resource:*` or `*`.
    /// Repeat it, or separate scopes with commas. With --catalogue, each
    /// must be in the service's catalogue.
    #[arg(
        long = "scope",
        value_name = "SCOPE",
        required = true,
        value_delimiter = ',',
        value_parser = ScopeParser
    )]
    pub scopes: Vec<String>,

    /// Expire this long after creation: `30d`, `12h`, `90m`, `2w`, `1d12h`.
    /// No expiry unless given.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    pub expires_in: Option<Duration>,

    /// Expire at this time (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "expires_in")]
    pub expires_at: Option<OffsetDateTime>,

    /// A JSON object stored with the key (e.g. `{"team":"billing"}`).
    #[arg(long, value_name = "JSON", value_parser = parse_metadata)]
    pub metadata: Option<Map<String, Value>>,

    /// Rotation policy: the key is due for rotation (and expires, unless
    /// `--expires-in` or `--expires-at` says otherwise) this long after
    /// creation, e.g. `90d`; each successor gets a fresh period.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_period)]
    pub rotate_every: Option<Duration>,

    /// Opt in to automatic rotation: when due, the service's notifier
    /// rotates the key and posts the successor's plaintext to this https
    /// URL, signed with the key's own secret (printed once, with the key).
    /// Needs `--rotate-every` and the service's SCOPEKEY_ROTATION_SECRET;
    /// a port other than 443 needs SCOPEKEY_ROTATION_WEBHOOK_PORTS.
    #[arg(long, value_name = "URL", requires = "rotate_every")]
    pub rotation_webhook: Option<String>,

    #[command(flatten)]
    pub output: Output,
}

/// A status filter.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Usable, not rotated.
    Active,
    /// Rotated, inside its grace period.
    Rotating,
    /// Revoked.
    Revoked,
    /// Past its expiry or grace period.
    Expired,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Active => Status::Active,
            StatusArg::Rotating => Status::Rotating,
            StatusArg::Revoked => Status::Revoked,
            StatusArg::Expired => Status::Expired,
        }
    }
}

/// Paging options shared by the listings.
#[derive(Debug, Clone, Args)]
pub struct Paging {
    /// At most this many items per page (1 to 500; default 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,

    /// Resume after the previous page (its `next_cursor`).
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
    pub cursor: Option<String>,

    /// Fetch every page, not just the first.
    #[arg(long)]
    pub all: bool,
}

/// `keys list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys with this status.
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Option<StatusArg>,

    /// Only keys whose name starts with this text (taken literally).
    #[arg(long, value_name = "TEXT")]
    pub name_prefix: Option<String>,

    #[command(flatten)]
    pub paging: Paging,

    #[command(flatten)]
    pub output: Output,
}

/// `keys show` and `keys lineage`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The key's id (a UUID).
    #[arg(value_name = "ID", value_parser = KeyIdParser)]
    pub id: IdArg,

    #[command(flatten)]
    pub output: Output,
}

/// `keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The id of the key to rotate (a UUID).
    #[arg(value_name = "ID", value_parser = KeyIdParser)]
    pub id: IdArg,

    /// How long the old key keeps working: `24h` (the default), `90m`,
    /// `7d`, or `0` to end it at once. At most 365d.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_grace)]
    pub grace: Option<Duration>,

    /// Give the successor only these scopes (a subset of the old key's).
    /// Repeat it, or separate scopes with commas. With --catalogue, each
    /// must be in the service's catalogue.
    #[arg(
        long = "scope",
        value_name = "SCOPE",
        value_delimiter = ',',
        value_parser = ScopeParser
    )]
    pub scopes: Vec<String>,

    #[command(flatten)]
    pub output: Output,
}

/// `keys revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The id of the key to revoke (a UUID).
    #[arg(value_name = "ID", value_parser = KeyIdParser)]
    pub id: IdArg,

    /// Why, for the audit log (at most 500 characters).
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,

    #[command(flatten)]
    pub output: Output,
}

/// `keys compromised`.
#[derive(Debug, Args)]
pub struct CompromisedArgs {
    /// A file of plaintext keys, one a line; `-` or nothing reads standard
    /// input.
    #[arg(value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,

    /// Where the keys were found (e.g. `github secret scanning`), recorded
    /// in each `key.compromised` audit event.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,

    /// Also revoke the keys each leaked key minted, if not yet revoked:
    /// created, or rotated into being (itself included), and theirs in
    /// turn, with every successor of a key they created, however rotated.
    /// Without it they are only listed.
    #[arg(long)]
    pub revoke_minted: bool,

    #[command(flatten)]
    pub output: Output,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events of this key (its id, a UUID).
    #[arg(long = "key", value_name = "ID", value_parser = KeyIdParser)]
    pub key: Option<IdArg>,

    #[command(flatten)]
    pub paging: Paging,

    #[command(flatten)]
    pub output: Output,
}

/// A key id as given on the command line: a UUID, or something that names
/// no key. The latter is an unknown id, so the command fails with exit
/// status 1 (as the HTTP API answers 404 for it), before the store is
/// opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdArg(Option<KeyId>);

impl IdArg {
    /// The id, or the failure of a value that names no key. The value is not
    /// repeated: an operator who pastes a plaintext key where an id belongs
    /// must not see it echoed into a terminal log or CI output.
    pub fn get(self) -> Result<KeyId, Failure> {
        self.0.ok_or_else(|| {
            Failure::Failed(
                "no key with that id: it is not a key id, which is a UUID such as \
                 0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d (the value is not repeated, in case it \
                 is a secret)"
                    .to_owned(),
            )
        })
    }
}

/// Reads an [`IdArg`]; never a usage error.
#[derive(Debug, Clone, Copy)]
pub struct KeyIdParser;

impl TypedValueParser for KeyIdParser {
    type Value = IdArg;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<IdArg, clap::Error> {
        Ok(IdArg(
            value
                .to_str()
                .and_then(|s| uuid::Uuid::try_parse(s).ok())
                .map(KeyId),
        ))
    }
}

/// Reads a granted scope (`resource:action`, `resource:*` or `*`) with the
/// runtime's own parser, so a malformed one is bad usage, found before the
/// store is opened. The message gives the reason but not the value: a key
/// pasted in its place must not be echoed into a terminal log.
#[derive(Debug, Clone, Copy)]
pub struct ScopeParser;

impl TypedValueParser for ScopeParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let reason = match value.to_str().map(|text| (text, Grant::parse(text))) {
            Some((text, Ok(_))) => return Ok(text.to_owned()),
            Some((_, Err(e))) => e.reason(),
            None => "not UTF-8; a scope is `resource:action`, e.g. `orders:read`".to_owned(),
        };
        let arg = arg.map_or_else(|| "--scope <SCOPE>".to_owned(), ToString::to_string);
        Err(cmd.clone().error(
            ErrorKind::ValueValidation,
            format!(
                "invalid value for '{arg}': {reason} (the value is not repeated, in case it is \
                 a secret)"
            ),
        ))
    }
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time such as 2027-01-31T00:00:00Z ({e})"))
}

fn parse_metadata(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("metadata must be a JSON object, such as {\"team\":\"billing\"}".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn parse_cursor(text: &str) -> Result<String, String> {
    scopekey_runtime::store::Cursor::decode_any(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn database_url_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "scopekey",
            "keys",
            "list",
            "--database-url",
            "sqlite://x.db",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.database_url.as_deref(), Some("sqlite://x.db"));
    }

    #[test]
    fn scopes_repeat_or_split_on_commas() {
        let cli = Cli::try_parse_from([
            "scopekey",
            "keys",
            "create",
            "--name",
            "n",
            "--scope",
            "a:read,b:write",
            "--scope",
            "c:read",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create(args)) = cli.command else {
            panic!("not create");
        };
        assert_eq!(args.scopes, ["a:read", "b:write", "c:read"]);
    }

    #[test]
    fn scopes_follow_the_grammar() {
        let parse = |scope: &str| {
            Cli::try_parse_from([
                "scopekey", "keys", "create", "--name", "n", "--scope", scope,
            ])
        };
        for good in ["orders:read", "orders:*", "*", "billing.invoices:read,a:b"] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("Orders:read", "upper-case letter `O` at byte 0"),
            ("invoices", "missing `:`"),
            ("a b:c", "whitespace at byte 1"),
            ("a:b,", "cannot be empty"),
            ("secret_Orders_Sk", "missing `:`"),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
            let text = err.to_string();
            assert!(
                text.contains("invalid value for '--scope <SCOPE>'"),
                "{text}"
            );
            assert!(text.contains(says), "{bad}: {text}");
            assert!(bad == "a:b," || !text.contains(bad), "echoed: {text}");
        }
        let rotate = Cli::try_parse_from(["scopekey", "keys", "rotate", "x", "--scope", "Bad"]);
        assert!(rotate.is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(parse_metadata("{\"a\":1}").is_ok());
        assert!(parse_metadata("[1]").is_err());
        assert!(parse_metadata("{").is_err());
    }
}
