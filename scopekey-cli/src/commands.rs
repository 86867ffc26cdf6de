//! Each command, run against a [`ScopeKey`] on the store the URL names.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration as StdDuration;

use scopekey_runtime::compromise::MAX_REPORT_KEYS;
use scopekey_runtime::notify::signature::Secret;
use scopekey_runtime::{
    Actor, ApiKey, CompromiseOptions, CompromiseStatus, CreatedKey, KeyFormat, ListEvents,
    ListKeys, NewKey, Page, RotateOptions, ScopeKey, Status, StoreError,
};
use serde_json::{Value, json};

use crate::catalogue;
use crate::cli::{
    Cli, Command, CompromisedArgs, CreateArgs, EventsArgs, IdArg, KeysCommand, ListArgs, Output,
    PruneArgs, RevokeArgs, RotateArgs, ShowArgs,
};
use crate::failure::Failure;
use crate::output::{self, ReportLine};

/// How long to wait for the database before giving up: long enough for a
/// remote server, short enough for an incident.
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(15);

/// Options every command shares, taken from the command line.
struct Globals {
    url: String,
    format: KeyFormat,
    /// `SCOPEKEY_ROTATION_SECRET`, current first (empty when unset).
    rotation_secrets: Vec<Secret>,
    /// `SCOPEKEY_ROTATION_WEBHOOK_PORTS`, if set: the ports keys' own
    /// rotation webhooks may name (443 alone otherwise).
    rotation_webhook_ports: Option<Vec<u16>>,
    /// `--catalogue`: the scopes keys may hold, as listed (`None`: any).
    catalogue: Option<Vec<String>>,
    migrate: bool,
    /// Whether the command may start a key store: create a SQLite file
    /// that is not there.
    may_create: bool,
}

/// An in-memory (or nameless, temporary) SQLite database is bad usage: it
/// is gone when the command ends, with whatever the command created in it.
fn refuse_in_memory(url: &str) -> Result<(), Failure> {
    // No file name at all (`sqlite:`, `sqlite://`): SQLite makes a
    // temporary database, deleted when closed.
    let nameless = matches!(url.split('?').next(), Some("sqlite:" | "sqlite://"));
    if nameless || scopekey_runtime::store::sqlite::is_in_memory(url) {
        return Err(Failure::Usage(
            "an in-memory SQLite database is gone when the command ends: name the service's \
             key store file (sqlite://path/to/keys.db)"
                .into(),
        ));
    }
    Ok(())
}

/// A SQLite file that is not there: only `migrate` and `keys create` start
/// a key store (the file is created, with its schema); every other command
/// needs one. A mistyped path must not read as an empty store, where
/// `keys compromised` would find every leaked key unknown and exit 0.
fn check_sqlite_file(url: &str, may_create: bool) -> Result<(), Failure> {
    use std::str::FromStr;
    if may_create || !url.starts_with("sqlite:") {
        return Ok(());
    }
    // sqlx's own reading of the URL, so the path checked is the one opened.
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| {
        Failure::Failed(crate::failure::chain(&StoreError::new("database error", e)))
    })?;
    let path = options.get_filename();
    // A `file:` URI filename is SQLite's to read: not checked here.
    if path.to_string_lossy().starts_with("file:") {
        return Ok(());
    }
    match path.try_exists() {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::Failed(format!(
                "no key store at {}: the file does not exist (check the path; \
                 `scopekey migrate` starts a new store)",
                path.display()
            )));
        }
        // Not "missing": a folder this user may not read, say.
        Err(e) => {
            return Err(Failure::Failed(format!(
                "cannot reach the key store at {}: {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Runs a parsed command line against the store at `url`, writing the
/// result to `out`.
pub async fn run(cli: Cli, url: &str, out: &mut dyn Write) -> Result<(), Failure> {
    // Bad usage first, whatever the command: a bad prefix, pepper,
    // rotation secret or catalogue file is exit 2 even when an id names no
    // key or a report cannot be read, and nothing is opened (a SQLite file
    // is not created).
    let globals = Globals {
        url: url.to_owned(),
        format: key_format(&cli.key_prefix)?,
        rotation_secrets: scopekey_runtime::notify::rotation_secrets_from_env()
            .map_err(|e| Failure::Usage(e.to_string()))?,
        rotation_webhook_ports: scopekey_runtime::notify::rotation_webhook_ports_from_env()
            .map_err(|e| Failure::Usage(e.to_string()))?,
        catalogue: cli.catalogue.as_deref().map(catalogue::load).transpose()?,
        migrate: !cli.no_migrate || matches!(cli.command, Command::Migrate),
        may_create: matches!(
            cli.command,
            Command::Migrate | Command::Keys(KeysCommand::Create(_))
        ),
    };
    refuse_in_memory(url)?;
    match cli.command {
        Command::Migrate => {
            globals.open().await?;
            writeln!(out, "schema is up to date")?;
            Ok(())
        }
        Command::Keys(KeysCommand::Create(args)) => create(&globals, args, out).await,
        Command::Keys(KeysCommand::List(args)) => list(&globals, args, out).await,
        Command::Keys(KeysCommand::Show(args)) => show(&globals, args, out).await,
        Command::Keys(KeysCommand::Lineage(args)) => lineage(&globals, args, out).await,
        Command::Keys(KeysCommand::Rotate(args)) => rotate(&globals, args, out).await,
        Command::Keys(KeysCommand::Revoke(args)) => revoke(&globals, args, out).await,
        Command::Keys(KeysCommand::Compromised(args)) => compromised(&globals, args, out).await,
        Command::Events(args) => events(&globals, args, out).await,
        Command::Prune(args) => prune(&globals, args, out).await,
    }
}

/// The key format (prefix, pepper) the service's keys use.
fn key_format(prefix: &str) -> Result<KeyFormat, Failure> {
    KeyFormat::new(prefix)
        .map_err(|e| Failure::Usage(format!("--key-prefix: {e}")))?
        .with_pepper_from_env()
        .map_err(|e| Failure::Usage(e.to_string()))
}

impl Globals {
    /// Opens the store and, unless told not to, creates or upgrades its
    /// schema.
    async fn open(&self) -> Result<ScopeKey, Failure> {
        check_sqlite_file(&self.url, self.may_create)?;
        let store = tokio::time::timeout(CONNECT_TIMEOUT, async {
            probe(&self.url).await?;
            scopekey_runtime::open(&self.url)
                .await
                .map_err(Failure::from)
        })
        .await
        .map_err(|_| {
            Failure::Failed(format!(
                "key store unavailable: no answer from the database within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
        let mut builder = ScopeKey::builder_arc(store).key_format(self.format.clone());
        // The service's rotation secret, so that keys created here with a
        // rotation webhook get their holder's signing secret.
        for secret in &self.rotation_secrets {
            builder = builder.rotation_webhook_secret(secret.clone());
        }
        // And its ports: a key created here with a webhook on a port the
        // service allows (and only those) is accepted.
        if let Some(ports) = &self.rotation_webhook_ports {
            builder = builder.rotation_webhook_ports(ports.iter().copied());
        }
        // The service's catalogue: the runtime refuses a scope outside it
        // (exit 1), as the service's HTTP API does (400).
        if let Some(scopes) = &self.catalogue {
            builder = builder
                .catalogue(scopes)
                .map_err(|e| Failure::Usage(format!("--catalogue: {e}")))?;
        }
        let keys = builder.build();
        if self.migrate {
            keys.migrate().await?;
        }
        Ok(keys)
    }
}

/// One plain connection to PostgreSQL first: a pool keeps retrying a
/// refused connection until its acquire timeout, while an operator in an
/// incident wants "connection refused" at once.
async fn probe(url: &str) -> Result<(), Failure> {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let conn = sqlx::PgConnection::connect(url).await.map_err(|e| {
        Failure::Failed(crate::failure::chain(&StoreError::new("database error", e)))
    })?;
    // Closing politely only spares the server a log line; failure is harmless.
    let _ = conn.close().await;
    Ok(())
}

fn pretty() -> bool {
    std::io::stdout().is_terminal()
}

/// A note for people on standard error, after what is already on standard
/// output so the two read in order on a terminal.
fn note(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.flush()?;
    eprintln!("{text}");
    Ok(())
}

/// A warning for people on standard error, written even when standard
/// output is closed (after flushing what is on it, so that a terminal shows
/// them in order).
fn warn(out: &mut dyn Write, text: &str) {
    let _ = out.flush();
    eprintln!("{text}");
}

async fn create(g: &Globals, args: CreateArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let keys = g.open().await?;
    let new = NewKey {
        name: args.name,
        scopes: args.scopes,
        expires_at: args.expires_at,
        expires_in: args.expires_in,
        metadata: args.metadata,
        rotation_period: args.rotate_every,
        rotation_webhook_url: args.rotation_webhook,
    };
    let created = keys.create(new, Actor::System).await?;
    print_created(out, &keys, &created, args.output, Vec::new())
}

/// Prints a created or rotated key with its plaintext: the only place the
/// plaintext is ever written. If it cannot be written, the key exists but
/// nobody holds it: say so, and which key to revoke.
fn print_created(
    out: &mut dyn Write,
    keys: &ScopeKey,
    created: &CreatedKey,
    output: Output,
    extra: Vec<(&'static str, String)>,
) -> Result<(), Failure> {
    write_created(out, keys, created, output, extra).map_err(|e| {
        let why = match e {
            Failure::BrokenPipe => "standard output was closed".to_owned(),
            other => other.message().unwrap_or_default().to_owned(),
        };
        Failure::Failed(format!(
            "key {id} was made but its plaintext could not be written ({why}); \
             revoke it with `scopekey keys revoke {id}`",
            id = created.key.id
        ))
    })
}

fn write_created(
    out: &mut dyn Write,
    keys: &ScopeKey,
    created: &CreatedKey,
    output: Output,
    mut extra: Vec<(&'static str, String)>,
) -> Result<(), Failure> {
    let plaintext = created.plaintext.expose_secret();
    if output.json {
        // The HTTP API's 201 body: the key object, `key` holding the plaintext.
        let mut value = serde_json::to_value(&created.key)?;
        if let Value::Object(map) = &mut value {
            map.insert("key".to_owned(), Value::String(plaintext.to_owned()));
            if let Some(secret) = &created.rotation_webhook_secret {
                map.insert(
                    "rotation_webhook_secret".to_owned(),
                    Value::String(secret.expose_secret().to_owned()),
                );
            }
        }
        output::json(out, &value, pretty())?;
        out.flush()?;
        return Ok(());
    }
    if let Some(secret) = &created.rotation_webhook_secret {
        extra.push(("webhook secret", secret.expose_secret().to_owned()));
    }
    extra.push(("key", plaintext.to_owned()));
    output::key_block(out, &created.key, keys.now(), &extra)?;
    note(
        out,
        "Store this key now: it is shown only once and cannot be retrieved.",
    )
}

/// `--cursor`, checked against the listing it is given to before the store
/// is opened: another listing's cursor is bad usage (exit 2), like one
/// that is no cursor at all.
fn cursor_of(
    cursor: Option<String>,
    listing: scopekey_runtime::store::Listing,
) -> Result<Option<String>, Failure> {
    if let Some(text) = &cursor {
        scopekey_runtime::store::Cursor::decode(text, listing)
            .map_err(|e| Failure::Usage(format!("--cursor: {e}")))?;
    }
    Ok(cursor)
}

async fn list(g: &Globals, args: ListArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let cursor = cursor_of(args.paging.cursor, scopekey_runtime::store::Listing::Keys)?;
    let keys = g.open().await?;
    let mut request = ListKeys {
        status: args.status.map(Into::into),
        name_prefix: args.name_prefix,
        limit: args.paging.limit,
        cursor,
    };
    let first = keys.list(&request).await?;
    let next = async |cursor| {
        request.cursor = Some(cursor);
        keys.list(&request).await
    };
    let listing = Listing {
        json: args.output.json,
        all: args.paging.all,
        headers: output::KEY_HEADERS,
        widths: output::KEY_WIDTHS,
        rows: output::key_rows,
        what: "keys",
    };
    listing.write(out, first, next).await
}

/// How a listing command prints its pages.
struct Listing<T> {
    /// `--json`: one document (`{items, next_cursor}`).
    json: bool,
    /// `--all`: every page, each written as it arrives.
    all: bool,
    headers: &'static [&'static str],
    /// The least width of each column.
    widths: &'static [usize],
    rows: fn(&[T]) -> Vec<Vec<String>>,
    /// What the items are, for `no keys`.
    what: &'static str,
}

impl<T: serde::Serialize> Listing<T> {
    /// Writes `first`, and with `--all` each page `next` fetches after it:
    /// one page in memory at a time, so a whole audit log goes through a
    /// pipe without being held first. A page that fails ends the listing
    /// with the error (exit 1); as JSON, the document is closed first, its
    /// `next_cursor` the page that failed.
    async fn write(
        self,
        out: &mut dyn Write,
        first: Page<T>,
        mut next: impl AsyncFnMut(String) -> Result<Page<T>, scopekey_runtime::Error>,
    ) -> Result<(), Failure> {
        let mut json = if self.json {
            Some(output::JsonItems::begin(out, pretty())?)
        } else {
            None
        };
        let mut table = output::Table::new(self.headers).at_least(self.widths);
        let mut page = first;
        loop {
            match &mut json {
                Some(json) => {
                    for item in &page.items {
                        json.item(out, item)?;
                    }
                }
                None => table.rows(out, &(self.rows)(&page.items))?,
            }
            // Each page on its way before the next is fetched (standard
            // output is buffered).
            out.flush()?;
            match page.next_cursor.take() {
                Some(cursor) if self.all => match next(cursor.clone()).await {
                    Ok(fetched) => page = fetched,
                    Err(e) => {
                        // A page that could not be read (the store gone
                        // part-way): the document written so far is closed,
                        // still one JSON document, its `next_cursor` where
                        // to resume; the exit status says it is not whole.
                        // The store's error is the one reported, whatever
                        // becomes of closing the document.
                        let failure = Failure::from(e);
                        if let Some(json) = json {
                            let _ = json.end(out, Some(&cursor));
                            return Err(failure);
                        }
                        return Err(match failure {
                            Failure::Failed(message) => Failure::Failed(format!(
                                "{message} (the pages before were written; resume with \
                                 --cursor {cursor})"
                            )),
                            other => other,
                        });
                    }
                },
                cursor => {
                    page.next_cursor = cursor;
                    break;
                }
            }
        }
        if let Some(json) = json {
            return json.end(out, page.next_cursor.as_deref());
        }
        if table.rows_written() == 0 {
            eprintln!("no {}", self.what);
            return Ok(());
        }
        more(out, &page, self.what)
    }
}

/// Tells people how to get the next page.
fn more<T>(out: &mut dyn Write, page: &Page<T>, what: &str) -> Result<(), Failure> {
    match &page.next_cursor {
        Some(cursor) => note(
            out,
            &format!("more {what}: add --cursor {cursor} (or --all)"),
        ),
        None => Ok(()),
    }
}

async fn show(g: &Globals, args: ShowArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let id = args.id.get()?;
    let keys = g.open().await?;
    let key = keys.get(id).await?;
    print_key(out, &keys, &key, args.output)
}

fn print_key(
    out: &mut dyn Write,
    keys: &ScopeKey,
    key: &ApiKey,
    output: Output,
) -> Result<(), Failure> {
    if output.json {
        return output::json(out, &serde_json::to_value(key)?, pretty());
    }
    output::key_block(out, key, keys.now(), &[])
}

async fn lineage(g: &Globals, args: ShowArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let id = args.id.get()?;
    let keys = g.open().await?;
    let items = keys.lineage(id).await?;
    if args.output.json {
        let page = Page {
            items,
            next_cursor: None,
        };
        return output::json(out, &serde_json::to_value(&page)?, pretty());
    }
    output::key_table(out, &items)
}

async fn rotate(g: &Globals, args: RotateArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let id = args.id.get()?;
    let keys = g.open().await?;
    let options = RotateOptions {
        grace: args.grace,
        scopes: (!args.scopes.is_empty()).then_some(args.scopes),
    };
    let created = keys.rotate(id, options, Actor::System).await?;
    let mut extra = Vec::new();
    if !args.output.json
        // Only a courtesy line: the rotation is done whatever this read says.
        && let Ok(old) = keys.get(id).await
        && let Some(until) = old.expires_at
    {
        let now = keys.now();
        let text = if until > now {
            format!(
                "{} works until {} (in {})",
                old.id,
                output::when(until),
                crate::duration::format(until - now)
            )
        } else {
            format!("{} stopped working", old.id)
        };
        extra.push(("old key", text));
    }
    print_created(out, &keys, &created, args.output, extra)
}

async fn revoke(g: &Globals, args: RevokeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let id = args.id.get()?;
    let keys = g.open().await?;
    let key = keys
        .revoke(id, args.reason.as_deref(), Actor::System)
        .await?;
    let printed = print_key(out, &keys, &key, args.output);
    let notes = live_successors(&keys, id).await;
    if !notes.is_empty() {
        warn(out, &notes.join("\n"));
    }
    printed
}

/// Notes naming the live successors of a key just revoked: one that leaked
/// may have rotated itself first, and its successor is then a key the thief
/// holds too. The key is revoked whatever happens here: a failure is a note
/// too.
async fn live_successors(keys: &ScopeKey, id: scopekey_runtime::KeyId) -> Vec<String> {
    match keys.successors(id).await {
        Ok(successors) => successors
            .iter()
            .filter(|next| matches!(next.status, Status::Active | Status::Rotating))
            .map(|next| {
                format!(
                    "note: its successor {} ({}) is still live; if the key leaked, the \
                     successor may be in the same hands: `scopekey keys revoke {}`",
                    next.id, next.hint, next.id
                )
            })
            .collect(),
        Err(e) => vec![format!(
            "note: the key is revoked, but its successors could not be checked: {}",
            crate::failure::chain(&e)
        )],
    }
}

/// Reads the report before touching the store, so a missing file fails
/// fast; lines are numbered from 1 as an editor shows them.
///
/// The file's name is never repeated back: an operator in a hurry may
/// have pasted the leaked key in its place. A well-formed key given as the
/// file is bad usage, said so (it was not revoked).
fn read_report(
    args: &CompromisedArgs,
    format: &KeyFormat,
) -> Result<Vec<(usize, String)>, Failure> {
    let mut bytes = Vec::new();
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            if path
                .to_str()
                .is_some_and(|text| format.parse(text.trim()).is_ok())
            {
                return Err(Failure::Usage(
                    "FILE is a key, not a file: nothing was revoked; put the keys in a file, \
                     one a line, or pipe them on standard input (a key on the command line \
                     stays in the shell's history: treat it as leaked there too)"
                        .into(),
                ));
            }
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Failure::Failed(format!("cannot read the report file: {e}")))?;
        }
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading plaintext keys from standard input, one a line; end with Ctrl-D"
                );
            }
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Failed(format!("cannot read standard input: {e}")))?;
        }
    }
    // A byte order mark (Notepad's UTF-8) is no part of the first key.
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    Ok(bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            // A line that is not UTF-8 is no key of ours: it reads malformed.
            let text = String::from_utf8_lossy(line).trim().to_owned();
            (!text.is_empty() && !text.starts_with('#')).then_some((i + 1, text))
        })
        .collect())
}

async fn compromised(
    g: &Globals,
    args: CompromisedArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let report = read_report(&args, &g.format)?;
    let keys = g.open().await?;
    let mut lines = Vec::with_capacity(report.len());
    // The runtime takes at most MAX_REPORT_KEYS at once; a big leak is
    // simply sent in several batches.
    for (batch_no, batch) in report.chunks(MAX_REPORT_KEYS).enumerate() {
        let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
        let options = CompromiseOptions {
            source: args.source.as_deref(),
            revoke_minted: args.revoke_minted,
            ..CompromiseOptions::default()
        };
        let results = match keys
            .report_compromised_with(&texts, options, Actor::System)
            .await
        {
            Ok(results) => results,
            Err(e) => return Err(stopped(out, &lines, args.output, batch_no, e)),
        };
        for mut result in results {
            let (line, _) = batch[result.index];
            result.index += batch_no * MAX_REPORT_KEYS;
            lines.push(ReportLine { line, result });
        }
    }
    print_report(out, &lines, args.output, false)
}

/// Prints the results of the batches before `batch_no`, the one that
/// failed, as a whole report's are (their keys are revoked, and the keys
/// they minted may need review), and returns the failure.
fn stopped(
    out: &mut dyn Write,
    lines: &[ReportLine],
    output: Output,
    batch_no: usize,
    e: scopekey_runtime::Error,
) -> Failure {
    if !lines.is_empty() {
        // The store's failure is what went wrong, not a failure to write
        // what came before it.
        let _ = print_report(out, lines, output, true);
    }
    // Only a report refused whole (too many keys, a bad source) is checked
    // before any key is read; after that, keys before the failure may be
    // revoked, and a report is safe to run again.
    let partway = batch_no > 0 || !matches!(e, scopekey_runtime::Error::Invalid(_));
    if !partway {
        return e.into();
    }
    Failure::Failed(format!(
        "{}; keys of the report before the failure may already be revoked, \
         and running the same report again is safe",
        crate::failure::chain(&e)
    ))
}

/// A report's results: JSON as the HTTP API's body, or a table by line and
/// a summary naming the keys each leaked key minted.
/// `partial`: the report stopped at a failure after these lines (the
/// summary says so; the JSON document is a whole report's).
fn print_report(
    out: &mut dyn Write,
    lines: &[ReportLine],
    output: Output,
    partial: bool,
) -> Result<(), Failure> {
    if output.json {
        // The HTTP API's body, plus each entry's line number in the input.
        let results = lines
            .iter()
            .map(|l| {
                let mut value = serde_json::to_value(&l.result)?;
                if let Value::Object(map) = &mut value {
                    map.insert("line".to_owned(), json!(l.line));
                }
                Ok(value)
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let written = output::json(out, &json!({ "results": results }), pretty())
            .and_then(|()| Ok(out.flush()?));
        if written.is_err() {
            // The document did not reach its reader: the summary (the keys
            // the leaked ones minted, still live) must reach someone.
            warn(out, &report_summary(lines, partial));
        }
        if let Some(hint) = format_hint(lines) {
            warn(out, &hint);
        }
        return written;
    }
    if lines.is_empty() {
        eprintln!("no keys in the input");
        return Ok(());
    }
    // The summary is for people, on standard error, even when the table
    // could not be written (`… | head`): the keys the leaked ones minted,
    // still live, must not go unsaid.
    let written = output::report_table(out, lines);
    warn(out, &report_summary(lines, partial));
    written
}

/// Keys this store does not know are often its own, read with another key
/// format: a note saying so, whatever the output (it goes to standard
/// error).
fn format_hint(lines: &[ReportLine]) -> Option<String> {
    let unknown = lines
        .iter()
        .filter(|l| {
            matches!(
                l.result.status,
                CompromiseStatus::Unknown | CompromiseStatus::Malformed
            )
        })
        .count();
    (unknown > 0).then(|| {
        format!(
            "{unknown} of the keys reported are unknown or malformed here: if they are this \
             service's keys, check that SCOPEKEY_PEPPER and the key prefix (--key-prefix, \
             SCOPEKEY_KEY_PREFIX) are the service's (another pepper makes every key unknown)"
        )
    })
}

/// What a report's table is followed by on standard error: the counts, the
/// keys each leaked key minted, and advice.
fn report_summary(lines: &[ReportLine], partial: bool) -> String {
    let count = |status| lines.iter().filter(|l| l.result.status == status).count();
    let mut summary = format!(
        "{}{} revoked, {} already revoked, {} unknown, {} malformed",
        if partial {
            let last = lines.last().map_or(0, |l| l.line);
            format!("up to line {last}, before the failure: ")
        } else {
            String::new()
        },
        count(CompromiseStatus::Revoked),
        count(CompromiseStatus::AlreadyRevoked),
        count(CompromiseStatus::Unknown),
        count(CompromiseStatus::Malformed),
    );
    let mut live_minted = false;
    for l in lines {
        if l.result.minted.is_empty() {
            if l.result.minted_truncated {
                // The report's limit was spent on the lines before.
                summary.push_str(&format!(
                    "\nline {}: the keys it minted were not looked for (the report's limit \
                     was reached first): report that key again on its own",
                    l.line
                ));
            }
            continue;
        }
        let keys: Vec<String> = l
            .result
            .minted
            .iter()
            .map(|m| format!("{} ({})", m.key_id, m.status))
            .collect();
        live_minted |= l
            .result
            .minted
            .iter()
            .any(|m| matches!(m.status, Status::Active | Status::Rotating));
        summary.push_str(&format!(
            "\nline {}: keys it minted: {}",
            l.line,
            keys.join(", ")
        ));
        if l.result.minted_truncated {
            summary.push_str(" and more (see the audit log for keys whose actor it was)");
        }
    }
    if live_minted {
        summary.push_str(
            "\nkeys a leaked key minted may be in other hands too: review them, or run again \
             with --revoke-minted",
        );
    }
    if let Some(hint) = format_hint(lines) {
        summary.push('\n');
        summary.push_str(&hint);
    }
    summary
}

async fn events(g: &Globals, args: EventsArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let key_id = args.key.map(IdArg::get).transpose()?;
    let cursor = cursor_of(args.paging.cursor, scopekey_runtime::store::Listing::Events)?;
    let keys = g.open().await?;
    let mut request = ListEvents {
        key_id,
        limit: args.paging.limit,
        cursor,
    };
    let first = keys.events(&request).await?;
    let next = async |cursor| {
        request.cursor = Some(cursor);
        keys.events(&request).await
    };
    let listing = Listing {
        json: args.output.json,
        all: args.paging.all,
        headers: output::EVENT_HEADERS,
        widths: output::EVENT_WIDTHS,
        rows: output::event_rows,
        what: "events",
    };
    listing.write(out, first, next).await
}

async fn prune(g: &Globals, args: PruneArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let keys = g.open().await?;
    let older_than = args.auth_failures_older_than;
    let deleted = keys.prune_auth_failures(older_than).await?;
    if args.output.json {
        return output::json(out, &json!({ "deleted": deleted }), pretty());
    }
    writeln!(
        out,
        "deleted {deleted} auth.failed event{} older than {}",
        if deleted == 1 { "" } else { "s" },
        crate::duration::format(older_than)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scopekey_runtime::{CompromiseResult, KeyId, MintedKey};

    /// Standard output as the CLI has it (buffered): what was flushed is
    /// what a reader at the other end of a pipe has.
    struct Buffered {
        pending: Vec<u8>,
        flushed: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    }

    impl Write for Buffered {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.pending.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.flushed.borrow_mut().append(&mut self.pending);
            Ok(())
        }
    }

    /// Names listed one a row, every page (`--all`).
    fn names(json: bool) -> Listing<String> {
        Listing {
            json,
            all: true,
            headers: &["NAME"],
            widths: &[0],
            rows: |names: &[String]| names.iter().map(|n| vec![n.clone()]).collect(),
            what: "names",
        }
    }

    /// A page of one name, and the cursor after it, if any.
    fn page(name: &str, next: Option<&str>) -> Page<String> {
        Page {
            items: vec![name.to_owned()],
            next_cursor: next.map(str::to_owned),
        }
    }

    /// A page that cannot be read.
    async fn unreadable(_: String) -> Result<Page<String>, scopekey_runtime::Error> {
        Err(scopekey_runtime::Error::Unavailable(StoreError::msg(
            "connection reset",
        )))
    }

    /// A page that fails part-way through `--all`: the JSON written is one
    /// document, whose `next_cursor` resumes at the failed page; the error
    /// is the command's.
    #[tokio::test]
    async fn a_failed_page_closes_the_document() {
        let mut out = Vec::new();
        let failed = names(true)
            .write(&mut out, page("first", Some("c1")), unreadable)
            .await;
        assert!(matches!(failed, Err(Failure::Failed(_))), "{failed:?}");
        let doc: Value = serde_json::from_slice(&out).expect("one JSON document");
        assert_eq!(doc, json!({"items": ["first"], "next_cursor": "c1"}));

        // As a table: the error says where to resume.
        let failed = names(false)
            .write(&mut Vec::new(), page("first", Some("c1")), unreadable)
            .await;
        assert!(
            matches!(&failed, Err(Failure::Failed(m)) if m.contains("--cursor c1")),
            "{failed:?}"
        );
    }

    /// With `--all`, each page reaches the reader before the next is
    /// fetched, as a table and as JSON.
    #[tokio::test]
    async fn all_pages_go_out_one_at_a_time() {
        for json in [false, true] {
            let flushed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let mut out = Buffered {
                pending: Vec::new(),
                flushed: std::rc::Rc::clone(&flushed),
            };
            let listing = names(json);
            let seen = std::rc::Rc::clone(&flushed);
            let next = async |cursor: String| {
                let out = String::from_utf8(seen.borrow().clone()).unwrap();
                assert!(
                    out.contains("first"),
                    "{cursor}: the first page was not sent: {out:?}"
                );
                Ok(page("second", None))
            };
            listing
                .write(&mut out, page("first", Some("c1")), next)
                .await
                .unwrap();
            let out = String::from_utf8(flushed.borrow().clone()).unwrap();
            assert!(out.contains("first") && out.contains("second"), "{out}");
        }
    }

    fn line(line: usize, minted: Vec<MintedKey>, minted_truncated: bool) -> ReportLine {
        ReportLine {
            line,
            result: CompromiseResult {
                index: line - 1,
                status: CompromiseStatus::Revoked,
                key_id: Some(KeyId(uuid::Uuid::now_v7())),
                hint: Some("sk_…abcd".into()),
                minted,
                minted_truncated,
            },
        }
    }

    /// A line whose minted keys were not looked for, the report's limit
    /// spent on the lines before, says so (an empty list alone would read
    /// as "minted nothing"); a line cut short within its own keys points to
    /// the audit log.
    #[test]
    fn a_report_says_where_its_limit_cut() {
        let minted = MintedKey {
            key_id: KeyId(uuid::Uuid::now_v7()),
            status: Status::Revoked,
        };
        let lines = [
            line(1, vec![minted.clone()], true),
            line(2, Vec::new(), true),
            line(3, Vec::new(), false),
        ];
        let summary = report_summary(&lines, false);
        assert!(
            summary.starts_with("3 revoked, 0 already revoked"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!(
                "line 1: keys it minted: {} (revoked) and more (see the audit log",
                minted.key_id
            )),
            "{summary}"
        );
        assert!(
            summary.contains("line 2: the keys it minted were not looked for"),
            "{summary}"
        );
        assert!(!summary.contains("line 3"), "{summary}");
    }
}
