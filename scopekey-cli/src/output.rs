//! What the commands print: aligned tables and blocks for people, one JSON
//! document (shaped as the HTTP API's) for scripts.

use std::io::Write;

use scopekey_runtime::{ApiKey, AuditEvent, CompromiseResult, KeyId};
use serde_json::Value;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::duration;
use crate::failure::Failure;

/// Writes one JSON document: indented for a terminal, one line for a pipe.
pub fn json(out: &mut dyn Write, value: &Value, pretty: bool) -> Result<(), Failure> {
    if pretty {
        serde_json::to_writer_pretty(&mut *out, value)?;
    } else {
        serde_json::to_writer(&mut *out, value)?;
    }
    writeln!(out)?;
    Ok(())
}

/// A time for people: RFC 3339 in UTC, to the second.
pub fn when(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        // Formatting a UTC time with this description cannot fail for the
        // years the time crate represents; fall back to Debug just in case.
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// `in 29d 23h` or `3h 5m ago`.
fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    if t >= now {
        format!("in {}", duration::format(t - now))
    } else {
        format!("{} ago", duration::format(now - t))
    }
}

fn opt_when(t: Option<OffsetDateTime>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), when)
}

/// One key as a block of `label  value` lines, `extra` lines last.
pub fn key_block(
    out: &mut dyn Write,
    key: &ApiKey,
    now: OffsetDateTime,
    extra: &[(&str, String)],
) -> Result<(), Failure> {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", key.id.to_string()),
        ("name", key.name.clone()),
        ("status", key.status.to_string()),
        ("scopes", key.scopes.join(", ")),
        ("hint", key.hint.clone()),
        ("created", when(key.created_at)),
        (
            "expires",
            key.expires_at.map_or_else(
                || "never".to_owned(),
                |t| format!("{} ({})", when(t), relative(t, now)),
            ),
        ),
        (
            "last used",
            key.last_used_at.map_or_else(
                || "never".to_owned(),
                |t| format!("{} ({})", when(t), relative(t, now)),
            ),
        ),
    ];
    if let Some(secs) = key.rotation_period_seconds {
        rows.push((
            "rotate every",
            duration::format(time::Duration::seconds(secs)),
        ));
    }
    if let Some(url) = &key.rotation_webhook_url {
        rows.push(("auto-rotation", format!("successors delivered to {url}")));
    }
    if let Some(t) = key.rotated_at {
        rows.push(("rotated", when(t)));
    }
    if let Some(parent) = key.parent_key_id {
        rows.push(("parent", parent.to_string()));
    }
    if let Some(t) = key.revoked_at {
        let reason = key
            .revoked_reason
            .as_deref()
            .map(|r| format!(" (reason: {r})"))
            .unwrap_or_default();
        rows.push(("revoked", format!("{}{reason}", when(t))));
    }
    if !key.metadata.is_empty() {
        rows.push(("metadata", Value::Object(key.metadata.clone()).to_string()));
    }
    rows.extend(extra.iter().map(|(label, value)| (*label, value.clone())));
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        writeln!(out, "{label:<width$}  {value}")?;
    }
    Ok(())
}

/// Keys as an aligned table.
pub fn key_table(out: &mut dyn Write, keys: &[ApiKey]) -> Result<(), Failure> {
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.status.to_string(),
                k.name.clone(),
                k.scopes.join(","),
                k.hint.clone(),
                opt_when(k.expires_at, "never"),
                opt_when(k.last_used_at, "never"),
            ]
        })
        .collect::<Vec<_>>();
    table(
        out,
        &[
            "ID",
            "STATUS",
            "NAME",
            "SCOPES",
            "HINT",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}

/// Audit events as an aligned table.
pub fn event_table(out: &mut dyn Write, events: &[AuditEvent]) -> Result<(), Failure> {
    let rows = events
        .iter()
        .map(|e| {
            vec![
                when(e.at),
                e.kind.clone(),
                e.key_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                e.actor_key_id
                    .map_or_else(|| "system".to_owned(), |id| id.to_string()),
                compact_details(&e.details),
            ]
        })
        .collect::<Vec<_>>();
    table(out, &["AT", "TYPE", "KEY", "ACTOR", "DETAILS"], &rows)
}

/// `{"reason":"x"}` reads `reason=x`; nulls are left out.
fn compact_details(details: &Value) -> String {
    match details {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line of a compromise report: its line number in the input and the
/// runtime's result.
pub struct ReportLine {
    /// 1-based line number in the input.
    pub line: usize,
    /// The outcome.
    pub result: CompromiseResult,
}

/// A compromise report as an aligned table.
pub fn report_table(out: &mut dyn Write, lines: &[ReportLine]) -> Result<(), Failure> {
    let rows = lines
        .iter()
        .map(|l| {
            vec![
                l.line.to_string(),
                status_name(&l.result),
                l.result
                    .key_id
                    .map_or_else(|| "-".to_owned(), |id: KeyId| id.to_string()),
                l.result.hint.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect::<Vec<_>>();
    table(out, &["LINE", "RESULT", "KEY ID", "HINT"], &rows)
}

/// The snake_case name of a compromise outcome, as in JSON.
pub fn status_name(result: &CompromiseResult) -> String {
    match serde_json::to_value(result.status) {
        Ok(Value::String(s)) => s,
        _ => format!("{:?}", result.status),
    }
}

/// Columns padded to their widest cell (counted in characters, so `…`
/// takes one); the last column is not padded.
fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 < widths.len() {
                text.push_str(cell);
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            } else {
                text.push_str(cell);
            }
        }
        text
    };
    writeln!(out, "{}", line(&mut headers.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_by_characters() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["A", "B", "C"],
            &[
                vec!["sk_…abcd".into(), "x".into(), "last".into()],
                vec!["1".into(), "longer".into(), "z".into()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "A         B       C\nsk_…abcd  x       last\n1         longer  z\n"
        );
    }

    #[test]
    fn details_read_as_pairs() {
        assert_eq!(
            compact_details(&json!({"reason": "leaked", "x": null})),
            "reason=leaked"
        );
        assert_eq!(
            compact_details(&json!({"grace_seconds": 60})),
            "grace_seconds=60"
        );
    }

    #[test]
    fn times_are_utc_seconds() {
        let t = time::macros::datetime!(2026-03-01 12:30:45.123456 +02:00);
        assert_eq!(when(t), "2026-03-01T10:30:45Z");
    }
}
