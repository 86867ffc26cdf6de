//! Why a command failed, and the exit status that says so.

use std::fmt::Write as _;
use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The operation failed (unknown id, conflict, invalid scope, store
    /// unreachable): exit status 1.
    Failed(String),
    /// The command line was wrong in a way clap could not see: exit status 2.
    Usage(String),
    /// Standard output was closed early (`scopekey keys list | head`): stop
    /// quietly.
    BrokenPipe,
}

impl Failure {
    /// The process exit status for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Failed(_) => ExitCode::from(1),
            Failure::Usage(_) => ExitCode::from(2),
            Failure::BrokenPipe => ExitCode::SUCCESS,
        }
    }

    /// The one-line message for standard error, if any.
    pub fn message(&self) -> Option<&str> {
        match self {
            Failure::Failed(m) | Failure::Usage(m) => Some(m),
            Failure::BrokenPipe => None,
        }
    }
}

impl From<scopekey_runtime::Error> for Failure {
    fn from(e: scopekey_runtime::Error) -> Self {
        Failure::Failed(chain(&e))
    }
}

impl From<scopekey_runtime::StoreError> for Failure {
    fn from(e: scopekey_runtime::StoreError) -> Self {
        Failure::Failed(chain(&e))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Failed(format!("cannot write the output: {e}"))
        }
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        // Output larger than the buffer is written while it is serialized:
        // a reader gone then is a closed pipe, as anywhere else.
        if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) {
            return Failure::BrokenPipe;
        }
        Failure::Failed(format!("cannot write the output as JSON: {e}"))
    }
}

/// An error and its causes on one line (`key store unavailable: database
/// error: ... connection refused`), each cause once: the store's own message
/// is generic, the useful part is in its source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    one_line(&out)
}

/// Folds a message onto one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes a database password from a message, in case a driver repeats the
/// URL it was given, and shows any key in it as its hint.
pub fn redact(message: &str, database_url: Option<&str>) -> String {
    // Whatever a message quotes (a file's line, a driver's error), a key in
    // it is shown as its hint.
    let message = scopekey_runtime::key::redact_keys(message);
    let Some(url) = database_url else {
        return message.into_owned();
    };
    let mut out = message.replace(url, "<database url>");
    if let Some(password) = password_of(url)
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
}

/// The password of a `scheme://user:password@host/...` URL.
fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.find('@')?];
    userinfo.split_once(':').map(|(_, password)| password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://admin:s3cret@db.internal/keys";
        assert_eq!(
            redact(
                "failed to connect to postgres://admin:s3cret@db.internal/keys",
                Some(url)
            ),
            "failed to connect to <database url>"
        );
        assert_eq!(
            redact("auth failed for s3cret", Some(url)),
            "auth failed for ***"
        );
        assert_eq!(redact("plain", Some("sqlite://x.db")), "plain");
        let key = scopekey_runtime::KeyFormat::default().generate().unwrap();
        let key = key.expose_secret();
        for url in [None, Some("sqlite://x.db")] {
            let shown = redact(&format!("line 1: {key} | oops"), url);
            assert!(!shown.contains(key), "{shown}");
            assert!(shown.contains(&key[key.len() - 4..]), "the hint: {shown}");
        }
        assert_eq!(password_of("postgres://u@h/db"), None);
    }

    #[test]
    fn messages_fit_on_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
