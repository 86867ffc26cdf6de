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

/// The columns of [`key_rows`].
pub const KEY_HEADERS: &[&str] = &[
    "ID",
    "STATUS",
    "NAME",
    "SCOPES",
    "HINT",
    "EXPIRES",
    "LAST USED",
];

/// Keys as table rows, under [`KEY_HEADERS`].
pub fn key_rows(keys: &[ApiKey]) -> Vec<Vec<String>> {
    keys.iter()
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
        .collect()
}

/// The least width of each of [`KEY_HEADERS`]' columns: an id's, a time's
/// (`never` is shorter), so that pages written one after the other line
/// up whatever each holds.
pub const KEY_WIDTHS: &[usize] = &[36, 8, 0, 0, 0, 20, 20];

/// Keys as an aligned table.
pub fn key_table(out: &mut dyn Write, keys: &[ApiKey]) -> Result<(), Failure> {
    Table::new(KEY_HEADERS)
        .at_least(KEY_WIDTHS)
        .rows(out, &key_rows(keys))
}

/// The columns of [`event_rows`].
pub const EVENT_HEADERS: &[&str] = &["AT", "TYPE", "KEY", "ACTOR", "DETAILS"];

/// The least width of each of [`EVENT_HEADERS`]' columns (a time, an
/// event type as long as `key.compromised`, two ids), as for
/// [`KEY_WIDTHS`].
pub const EVENT_WIDTHS: &[usize] = &[20, 15, 36, 36, 0];

/// Audit events as table rows, under [`EVENT_HEADERS`].
pub fn event_rows(events: &[AuditEvent]) -> Vec<Vec<String>> {
    events
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
        .collect()
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
    Table::new(headers).rows(out, rows)
}

/// A table written a page at a time: the header comes with the first rows,
/// and each column is as wide as its widest cell so far (a later page's
/// wider cell widens the column from there on; lines already written stay
/// as they are). Widths count characters, so `…` takes one; the last
/// column is not padded.
pub struct Table<'h> {
    headers: &'h [&'h str],
    widths: Vec<usize>,
    rows_written: usize,
}

impl<'h> Table<'h> {
    /// A table with these columns, nothing written yet.
    pub fn new(headers: &'h [&'h str]) -> Self {
        Self {
            headers,
            widths: headers.iter().map(|h| h.chars().count()).collect(),
            rows_written: 0,
        }
    }

    /// Each column at least as wide as given, whatever its cells.
    pub fn at_least(mut self, widths: &[usize]) -> Self {
        for (w, least) in self.widths.iter_mut().zip(widths) {
            *w = (*w).max(*least);
        }
        self
    }

    /// How many rows were written.
    pub fn rows_written(&self) -> usize {
        self.rows_written
    }

    /// Writes `rows` (the header first, the first time there are any).
    pub fn rows(&mut self, out: &mut dyn Write, rows: &[Vec<String>]) -> Result<(), Failure> {
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            for (w, cell) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if self.rows_written == 0 {
            let header = self.line(&mut self.headers.iter().copied());
            writeln!(out, "{header}")?;
        }
        for row in rows {
            let line = self.line(&mut row.iter().map(String::as_str));
            writeln!(out, "{line}")?;
        }
        self.rows_written += rows.len();
        Ok(())
    }

    fn line(&self, cells: &mut dyn Iterator<Item = &str>) -> String {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&self.widths).enumerate() {
            text.push_str(cell);
            if i + 1 < self.widths.len() {
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text
    }
}

/// A listing's JSON document (`{"items": [...], "next_cursor": ...}`, as
/// [`json`] writes a [`scopekey_runtime::Page`]) written an item at a time,
/// so that `--all` over a large audit log holds one page in memory, not
/// the whole log.
pub struct JsonItems {
    pretty: bool,
    written: usize,
}

impl JsonItems {
    /// Writes the document's start.
    pub fn begin(out: &mut dyn Write, pretty: bool) -> Result<Self, Failure> {
        out.write_all(if pretty {
            b"{\n  \"items\": ["
        } else {
            b"{\"items\":["
        })?;
        Ok(Self { pretty, written: 0 })
    }

    /// Writes one item, its fields in the order [`json`] writes them (the
    /// item goes through a [`Value`] as there), and nothing of it if it
    /// does not serialize.
    pub fn item<T: serde::Serialize>(
        &mut self,
        out: &mut dyn Write,
        item: &T,
    ) -> Result<(), Failure> {
        let value = serde_json::to_value(item)?;
        let text = if self.pretty {
            serde_json::to_string_pretty(&value)?
        } else {
            serde_json::to_string(&value)?
        };
        if self.written > 0 {
            out.write_all(b",")?;
        }
        if self.pretty {
            // Indented two levels, as `to_writer_pretty` nests it.
            for line in text.lines() {
                write!(out, "\n    {line}")?;
            }
        } else {
            out.write_all(text.as_bytes())?;
        }
        self.written += 1;
        Ok(())
    }

    /// Writes the document's end, with the cursor of the page after.
    pub fn end(self, out: &mut dyn Write, next_cursor: Option<&str>) -> Result<(), Failure> {
        let cursor = serde_json::to_string(&next_cursor)?;
        if !self.pretty {
            writeln!(out, "],\"next_cursor\":{cursor}}}")?;
        } else if self.written > 0 {
            writeln!(out, "\n  ],\n  \"next_cursor\": {cursor}\n}}")?;
        } else {
            writeln!(out, "],\n  \"next_cursor\": {cursor}\n}}")?;
        }
        Ok(())
    }
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
    fn tables_written_by_page_widen_as_they_go() {
        let mut out = Vec::new();
        let mut table = Table::new(&["A", "B", "C"]).at_least(&[0, 3]);
        table.rows(&mut out, &[]).unwrap();
        assert!(out.is_empty(), "no header before the first row");
        let row = |a: &str, b: &str| vec![a.to_owned(), b.to_owned(), "c".to_owned()];
        table.rows(&mut out, &[row("ab", "x")]).unwrap();
        table.rows(&mut out, &[row("abcd", "y")]).unwrap();
        table.rows(&mut out, &[row("e", "z")]).unwrap();
        assert_eq!(table.rows_written(), 3);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A   B    C\nab  x    c\nabcd  y    c\ne     z    c\n");
    }

    /// Written an item at a time, the document is the one `json` writes
    /// for the whole page, in both layouts.
    #[test]
    fn json_items_make_the_page_document() {
        let items = [
            json!({"id": 1, "scopes": ["a:b", "c:d"], "metadata": {}}),
            json!({"id": 2, "nested": {"x": [1, {"y": null}]}, "empty": []}),
        ];
        for count in 0..=items.len() {
            for cursor in [None, Some("18f.abc")] {
                for pretty in [false, true] {
                    let page = json!({"items": &items[..count], "next_cursor": cursor});
                    let mut whole = Vec::new();
                    json(&mut whole, &page, pretty).unwrap();
                    let mut streamed = Vec::new();
                    let mut doc = JsonItems::begin(&mut streamed, pretty).unwrap();
                    for item in &items[..count] {
                        doc.item(&mut streamed, item).unwrap();
                    }
                    doc.end(&mut streamed, cursor).unwrap();
                    assert_eq!(
                        String::from_utf8(streamed).unwrap(),
                        String::from_utf8(whole).unwrap(),
                        "{count} items, cursor {cursor:?}, pretty {pretty}"
                    );
                }
            }
        }
    }

    /// A real item (struct fields, not a `Value`) comes out as `json`
    /// writes it in a whole page: the same fields, in the same order.
    #[test]
    fn json_items_order_fields_as_the_page_document() {
        let event: AuditEvent = serde_json::from_value(json!({
            "id": "0190c8f2-7a6e-7c3b-9d41-2f5e8a1b3c4d",
            "key_id": null,
            "type": "auth.failed",
            "actor_key_id": null,
            "at": "2026-12-07T10:00:00Z",
            "details": {"reason": "unknown", "hint": "sk_…abcd"}
        }))
        .unwrap();
        for pretty in [false, true] {
            let page = scopekey_runtime::Page {
                items: vec![event.clone()],
                next_cursor: None,
            };
            let mut whole = Vec::new();
            json(&mut whole, &serde_json::to_value(&page).unwrap(), pretty).unwrap();
            let mut streamed = Vec::new();
            let mut doc = JsonItems::begin(&mut streamed, pretty).unwrap();
            doc.item(&mut streamed, &event).unwrap();
            doc.end(&mut streamed, None).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(whole).unwrap()
            );
        }
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
