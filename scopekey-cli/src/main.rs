//! `scopekey`: the admin command for scopekey API keys. Bootstrap the first
//! admin key, rotate or revoke a leaked key during an incident, and script
//! key management in deploy pipelines — without the HTTP API.
//!
//! ```text
//! export DATABASE_URL=sqlite://keys.db      # or postgres://user@host/db
//! scopekey migrate
//! scopekey keys create --name admin --scope '*'
//! scopekey keys create --name billing --scope orders:read --scope orders:write --expires-in 30d --json
//! scopekey keys list --status active
//! scopekey keys show 0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d
//! scopekey keys rotate 0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d --grace 1h
//! scopekey keys revoke 0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d --reason "leaked in CI log"
//! scanner --format=lines | scopekey keys compromised --source "secret scanning"
//! scopekey events --key 0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d
//! scopekey prune --auth-failures-older-than 90d
//! ```
//!
//! # The store
//!
//! `--database-url URL` or `DATABASE_URL`: `sqlite://path/to/keys.db` or
//! `postgres://...`. A SQLite file that is not there is created by
//! `migrate` and `keys create` only; any other command fails on it (exit
//! 1, "no key store at PATH"), so that a mistyped path never reads as an
//! empty store (every leaked key "unknown"). The CLI may run against
//! the same SQLite file as a running service: the runtime opens it in WAL
//! mode with a busy timeout. A revocation made here is refused by a running
//! service within one second (its verification cache's lifetime; on
//! PostgreSQL, services listening for changes drop the entry at once).
//!
//! Every command creates or upgrades the schema first, as the demo service
//! does on start, so a CLI pointed at a fresh database works at once; migrations
//! are idempotent and safe while a service runs, though one that adds an
//! index makes writes wait while it builds (on a large store, run `migrate`
//! at a quiet time). On a store already up to date this only reads which
//! migrations were applied: it takes no lock (on PostgreSQL, sqlx's
//! migration lock is shared with the application's own migrations, and
//! would make a command wait behind one) and needs no DDL rights.
//! `--no-migrate` turns it off, and then a command on a database without
//! the schema fails. `migrate` does only that.
//!
//! The key format must match the service's: `--key-prefix` (or
//! `SCOPEKEY_KEY_PREFIX`, default `sk`), and the hashing pepper, if the
//! service uses one, in `SCOPEKEY_PEPPER` (never an option: arguments show
//! in `ps` and shell history). With the wrong format, created keys do not
//! verify and reported keys read as malformed or unknown.
//!
//! # The scope catalogue
//!
//! A service that restricts keys to its scope catalogue
//! (`builder.catalogue(scopekey::catalogue!())`) refuses other scopes with
//! 400. `--catalogue PATH` (or `SCOPEKEY_CATALOGUE`) makes the CLI refuse
//! them too: PATH is the service's `Cargo.toml` (or its directory), whose
//! `[package.metadata.scopekey] scopes` list — the one
//! `#[requires_scope]` checks handlers against — `keys create` and
//! `keys rotate --scope` then hold scopes to, by the runtime's own rule:
//! `orders:*` and `*` where they cover a listed scope, and the management
//! scopes `api_keys:read`, `api_keys:write` and `api_keys:revoke` always.
//! A scope outside it is refused by the runtime, as over HTTP: the
//! operation failed, exit 1. The file is read before the store is opened,
//! whatever the command: missing, unreadable, not TOML, without that list,
//! with an empty list or an invalid entry, it is bad usage, exit 2.
//!
//! # Commands
//!
//! - `migrate`: create or upgrade the schema.
//! - `keys create --name N --scope S [--scope S ...] [--expires-in 30d |
//!   --expires-at TIME] [--metadata JSON] [--rotate-every 90d]
//!   [--rotation-webhook URL] [--json]`: create a key and print its
//!   plaintext, once. Scopes may also be comma-separated; each must be
//!   `resource:action`, `resource:*` or `*` (and in the `--catalogue`, if
//!   given).
//! - `keys list [--status active|rotating|revoked|expired] [--name-prefix P]
//!   [--limit N] [--cursor C] [--all] [--json]`: keys, newest first, one page
//!   (50 unless `--limit`) or `--all` pages. With `--all`, each page is
//!   written as it arrives (a pipe gets the first lines at once, and one
//!   page is held in memory at a time): a table's column widens where a
//!   later page needs it, and a failure part-way (exit 1) leaves the pages
//!   written before it (with `--json`, closed as one document whose
//!   `next_cursor` resumes at the page that failed), so a script checks
//!   the exit status.
//! - `keys show ID [--json]`: one key.
//! - `keys rotate ID [--grace 24h] [--scope S ...] [--json]`: a successor
//!   with its plaintext, once; the old key works for the grace period
//!   (default 24h, `0` ends it now); `--scope` narrows the successor's scopes.
//! - `keys revoke ID [--reason R] [--json]`: revoke at once (idempotent).
//! - `keys compromised [FILE|-] [--source S] [--revoke-minted] [--json]`:
//!   revoke every key not yet revoked in a list of leaked plaintext keys,
//!   one a line (standard input when FILE is `-` or absent; blank lines and `#`
//!   comments skipped), and report per line `revoked`, `already_revoked`,
//!   `unknown` or `malformed`. The keys a leaked key minted (created, or
//!   rotated into being, itself included, and every successor of a key it
//!   created) are named, and revoked too with `--revoke-minted`. When some
//!   keys are unknown or malformed, a note on standard error asks to check
//!   that `SCOPEKEY_PEPPER` and the key prefix are the service's. The
//!   table's summary goes to standard error, and so does it with `--json`
//!   when standard output is closed before the document is written
//!   (`… | head`): the keys were revoked all the same, and what they
//!   minted is not left unsaid.
//! - `keys lineage ID [--json]`: a key's rotation chain, oldest first.
//! - `events [--key ID] [--limit N] [--cursor C] [--all] [--json]`: the audit
//!   log, newest first (`--all` as for `keys list`).
//! - `prune --auth-failures-older-than DURATION [--json]`: delete the
//!   `auth.failed` events older than that (`0`: all of them); every other
//!   event is kept. Run it from a timer or a cron job: refusals accumulate.
//!
//! Durations (`--expires-in`, `--grace`, `--rotate-every`) read `30d`, `24h`, `90m`, `45s`,
//! `2w`, or combinations such as `1d12h`; a bare `0` is zero.
//!
//! # Output
//!
//! For people: a block of `label value` lines for one key, an aligned table
//! for lists, notes (next-page cursors, "store this key now") on standard
//! error. With `--json`, one JSON document shaped as the HTTP API's: a key
//! object (`id, name, scopes, metadata, hint, status, created_at,
//! expires_at, revoked_at, revoked_reason, rotated_at, parent_key_id,
//! last_used_at, rotation_period_seconds, rotation_webhook_url`), with
//! `key` holding the plaintext after create and rotate (and, after a
//! create with `--rotation-webhook`, `rotation_webhook_secret`: the
//! holder's signing secret, shown this once);
//! `{"items": [...], "next_cursor": ...}` for `keys list`, `keys lineage` and
//! `events` (audit events as `id, key_id, type, actor_key_id, at, details`);
//! `{"results": [{"index", "status", "key_id", "hint", "minted",
//! "minted_truncated", "line"}]}` for `keys compromised`. JSON is indented
//! on a terminal, one line otherwise.
//!
//! The plaintext of a key appears once, in the output of the `create` or
//! `rotate` that made it, and nowhere else: not in `show`, `list`, `events`
//! or `compromised` output, and never in an error message (a bad id is not
//! repeated back, in case a key was pasted in its place).
//!
//! # Exit status
//!
//! - `0`: success (for `keys compromised`: every line was accounted for,
//!   whatever the outcomes).
//! - `1`: the operation failed — unknown id (also one that is not a UUID,
//!   which names no key), conflict (rotating a key that
//!   was already rotated, or is revoked or expired), invalid name, a scope
//!   outside the `--catalogue`, a successor scope its parent lacks, the
//!   database unreachable — with a
//!   one-line message on standard error (for `keys compromised` failing
//!   partway, after the results of the batches before: partial JSON looks
//!   like a whole report's, so a script must check the exit status).
//! - `2`: bad usage — unknown or missing options, no database URL or an
//!   unsupported one, a bad duration, status, limit, cursor, time or
//!   metadata, a `--scope` that breaks the scope grammar (the reason is
//!   given, the value is not repeated), a bad `--key-prefix`,
//!   `SCOPEKEY_PEPPER`, `SCOPEKEY_ROTATION_SECRET`,
//!   `SCOPEKEY_ROTATION_WEBHOOK_PORTS` or `--catalogue` file
//!   (even when the id given names no key), a key given to `keys compromised` where its
//!   report file goes (it is not revoked, nor repeated back). clap prints
//!   the usage for the mistakes it finds itself (options, values it
//!   parses), with any key among the arguments shown as its hint; the others are
//!   one line on standard error.
//!
//! `keys compromised` hands a report to the store in batches of 10,000 keys,
//! each listing (and revoking, with `--revoke-minted`) at most 10,000 minted
//! keys in all; a line whose minted keys that limit left unsearched says
//! so.
//! If a batch after the first fails, the results of the batches before it
//! are printed first, as a whole report's (the same JSON document with
//! `--json`; for people, the summary says up to which line), then the
//! error, with status 1: keys up to the failure may
//! already be revoked, and running the same report again is safe.

mod catalogue;
mod cli;
mod commands;
mod duration;
mod failure;
mod output;

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::cli::Cli;
use crate::failure::{Failure, one_line, redact};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = parse();
    let url = database_url(&cli);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let result = match commands::run(cli, &url, &mut out).await {
        Ok(()) => out.flush().map_err(Failure::from),
        Err(e) => {
            // What was printed before the failure is still worth showing.
            let _ = out.flush();
            Err(e)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message() {
                eprintln!("error: {}", redact(&one_line(message), Some(&url)));
            }
            failure.exit_code()
        }
    }
}

/// The command line, or clap's usage error (exit 2) with any key pasted in
/// the arguments shown as its hint only: clap repeats an unexpected argument, and an
/// operator in a hurry may paste a leaked key or two where they do not go.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            // Every key in the message, wherever clap quoted it, shown as
            // its hint.
            let text = e.render().to_string();
            eprint!("{}", scopekey_runtime::key::redact_keys(&text));
            std::process::exit(e.exit_code());
        }
    }
}

/// The database URL, or a usage error (exit 2). The URL is never repeated:
/// it may carry a password.
fn database_url(cli: &Cli) -> String {
    match cli.database_url.as_deref().map(str::trim) {
        None | Some("") => usage(
            ErrorKind::MissingRequiredArgument,
            "no key store given: pass --database-url URL or set DATABASE_URL \
             (sqlite://path/to/keys.db or postgres://user@host/db)",
        ),
        Some(url)
            if url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://") =>
        {
            url.to_owned()
        }
        Some(_) => usage(
            ErrorKind::ValueValidation,
            "unsupported --database-url / DATABASE_URL: expected sqlite://path/to/keys.db \
             or postgres://user@host/db (the value is not repeated, in case it holds a password)",
        ),
    }
}

/// Prints a usage error the way clap prints its own, and exits with 2.
fn usage(kind: ErrorKind, message: &str) -> ! {
    Cli::command().error(kind, message).exit()
}
