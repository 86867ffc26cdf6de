//! Human durations: `30d`, `24h`, `90m`, `45s`, `2w`, combinations such as
//! `1d12h`, and a bare `0`.

use time::Duration;

/// Parses a human duration. Units: `w` (weeks), `d`, `h`, `m`, `s`; parts
/// add up (`1d12h` is 36 hours). A number needs a unit, except a bare `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
    const HINT: &str = "use a number and a unit: w, d, h, m or s (e.g. 30d, 24h, 90m, 1d12h)";
    if text.is_empty() {
        return Err(format!("a duration cannot be empty; {HINT}"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{}` is not a duration; {HINT}",
                text.escape_debug()
            ));
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let seconds_per_unit: i64 = match chars.next() {
            Some('w') => 7 * 86_400,
            Some('d') => 86_400,
            Some('h') => 3_600,
            Some('m') => 60,
            Some('s') => 1,
            None => {
                return Err(format!(
                    "`{}` needs a unit after `{number}`; {HINT}",
                    text.escape_debug()
                ));
            }
            Some(other) => {
                return Err(format!(
                    "unknown unit `{}` in `{}`; {HINT}",
                    other.escape_debug(),
                    text.escape_debug()
                ));
            }
        };
        let too_long = || format!("`{}` is too long a duration", text.escape_debug());
        let value: i64 = number.parse().map_err(|_| too_long())?;
        total = value
            .checked_mul(seconds_per_unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(too_long)?;
        rest = chars.as_str();
    }
    // Sanity bound: beyond 100 years is a typo, and keeps times representable.
    if total > 100 * 366 * 86_400 {
        return Err(format!("`{}` is too long a duration", text.escape_debug()));
    }
    Ok(Duration::seconds(total))
}

/// A positive duration (for `--expires-in`).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d <= Duration::ZERO {
        return Err("the duration must be more than zero".to_owned());
    }
    Ok(d)
}

/// A rotation period: more than zero, up to the runtime's maximum (ten
/// years), refused here in the command line's own terms.
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let d = parse_positive(text)?;
    let max = scopekey_runtime::lifecycle::MAX_ROTATION_PERIOD;
    if d > max {
        return Err(format!(
            "a rotation period is at most {}d (ten years)",
            max.whole_days()
        ));
    }
    Ok(d)
}

/// A rotation grace: zero up to the runtime's maximum (365 days).
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    let max = scopekey_runtime::lifecycle::MAX_GRACE;
    if d > max {
        return Err(format!(
            "a grace period is at most {} ({}d)",
            format(max),
            max.whole_days()
        ));
    }
    Ok(d)
}

/// Formats a duration for people, with its two largest units (`29d 23h`,
/// `5m 10s`, `0s`).
pub fn format(d: Duration) -> String {
    let mut secs = d.whole_seconds().unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if parts.is_empty() {
        return "0s".to_owned();
    }
    parts.truncate(2);
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        assert_eq!(parse("30d"), Ok(Duration::days(30)));
        assert_eq!(parse("24h"), Ok(Duration::hours(24)));
        assert_eq!(parse("90m"), Ok(Duration::minutes(90)));
        assert_eq!(parse("45s"), Ok(Duration::seconds(45)));
        assert_eq!(parse("2w"), Ok(Duration::weeks(2)));
        assert_eq!(parse("1d12h"), Ok(Duration::hours(36)));
        assert_eq!(parse("1h30m15s"), Ok(Duration::seconds(5415)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals_say_why() {
        for (bad, says) in [
            ("", "empty"),
            ("30", "needs a unit"),
            ("1d12", "needs a unit"),
            ("3x", "unknown unit `x`"),
            ("30 d", "unknown unit"),
            ("d", "not a duration"),
            ("-1h", "negative"),
            ("1.5h", "unknown unit `.`"),
            ("99999999999999999999s", "too long"),
            ("9999999999999w", "too long"),
            ("200000d", "too long"),
            ("1D", "unknown unit `D`"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn bounds() {
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("1s").is_ok());
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert!(parse_grace("365d").is_ok());
        assert!(parse_grace("366d").unwrap_err().contains("at most"));
        assert!(parse_period("0").is_err());
        assert_eq!(parse_period("3650d"), Ok(Duration::days(3650)));
        assert!(parse_period("3651d").unwrap_err().contains("at most 3650d"));
    }

    #[test]
    fn formatting() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::seconds(59)), "59s");
        assert_eq!(format(Duration::seconds(310)), "5m 10s");
        assert_eq!(format(Duration::hours(36)), "1d 12h");
        assert_eq!(format(Duration::days(30) - Duration::seconds(1)), "29d 23h");
        assert_eq!(format(Duration::days(365)), "365d");
    }
}
