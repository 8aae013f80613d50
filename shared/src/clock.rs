//! Wall-clock time as Unix milliseconds, the one representation every store keeps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in Unix milliseconds.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_millis)
}

/// A duration in whole milliseconds, saturating at [`Millis::MAX`].
pub fn duration_millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-26T05:00:00.123Z`.
pub fn rfc3339_millis(millis: Millis) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => "9999-12-31T23:59:59.999Z".to_owned(),
    }
}

/// RFC 3339 in UTC with second precision, for expiry times that are whole seconds.
pub fn rfc3339_seconds(unix_seconds: i64) -> String {
    let formatted = rfc3339_millis(unix_seconds.saturating_mul(1000));
    format!("{}Z", &formatted[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_764_133_200_123),
            "2025-11-26T05:00:00.123Z"
        );
        assert_eq!(rfc3339_seconds(1_764_140_400), "2025-11-26T07:00:00Z");
    }
}
