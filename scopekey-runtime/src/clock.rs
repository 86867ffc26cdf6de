//! Time, injected: production reads the system clock, tests move a manual one.

use std::fmt;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time (UTC).
    fn now(&self) -> OffsetDateTime;

    /// The current time in whole microseconds since the Unix epoch (rounded
    /// down): what a verification compares against cached entries and
    /// expiry times. Must agree with [`now`](Self::now); override it only
    /// with a cheaper reading of the same clock.
    fn now_unix_micros(&self) -> i64 {
        unix_micros(self.now())
    }
}

/// Whole microseconds since the Unix epoch, rounded down.
pub(crate) fn unix_micros(t: OffsetDateTime) -> i64 {
    // Within ±292,000 years of 1970; times beyond saturate.
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).unwrap_or(if t.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Whole microseconds since the Unix epoch, rounded up: `t <= now` exactly
/// when `unix_micros_ceil(t) <= unix_micros(now)`, for a `now` in whole
/// microseconds.
pub(crate) fn unix_micros_ceil(t: OffsetDateTime) -> i64 {
    let floor = unix_micros(t);
    if t.nanosecond().is_multiple_of(1_000) {
        floor
    } else {
        floor.saturating_add(1)
    }
}

/// The time at `micros` since the Unix epoch (`None` beyond what
/// [`OffsetDateTime`] holds).
pub(crate) fn from_unix_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn now_unix_micros(&self) -> i64 {
        // The system clock read without a calendar conversion: this runs
        // on every verification.
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs())
                .ok()
                .and_then(|s| s.checked_mul(1_000_000))
                .and_then(|s| s.checked_add(i64::from(since.subsec_micros())))
                .unwrap_or(i64::MAX),
            Err(_) => unix_micros(now.into()),
        }
    }
}

/// A clock that moves only when told: for tests of expiry and grace.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// A clock stopped at the current system time, rounded to the microsecond.
    pub fn starting_now() -> Self {
        Self::new(truncate_micros(OffsetDateTime::now_utc()))
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: OffsetDateTime) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        // A poisoned lock still holds a valid time.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}

/// Drops sub-microsecond precision, which neither database keeps.
pub(crate) fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn micros_round_down_and_up() {
        let exact = datetime!(2026-11-29 10:00:00.000_001 UTC);
        let between = datetime!(2026-11-29 10:00:00.000_001_5 UTC);
        assert_eq!(unix_micros(exact), 1_795_946_400_000_001);
        assert_eq!(unix_micros(between), 1_795_946_400_000_001);
        assert_eq!(unix_micros_ceil(exact), 1_795_946_400_000_001);
        assert_eq!(unix_micros_ceil(between), 1_795_946_400_000_002);
        assert_eq!(from_unix_micros(unix_micros(exact)), Some(exact));
        let before_1970 = datetime!(1969-12-31 23:59:59.999_999_5 UTC);
        assert_eq!(unix_micros(before_1970), -1);
        assert_eq!(unix_micros_ceil(before_1970), 0);
    }

    #[test]
    fn the_system_clock_agrees_with_itself() {
        let clock = SystemClock;
        let before = unix_micros(clock.now());
        let fast = clock.now_unix_micros();
        let after = unix_micros(clock.now());
        assert!(before <= fast && fast <= after, "{before} {fast} {after}");
        let manual = ManualClock::new(datetime!(2026-11-29 10:00:00.5 UTC));
        assert_eq!(manual.now_unix_micros(), 1_795_946_400_500_000);
    }
}
