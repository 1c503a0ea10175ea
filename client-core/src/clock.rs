//! The device's clock, read in one place.
//!
//! Vietnam keeps one time zone, UTC+7, with no daylight saving, so "today" for the survey's
//! rules (a date of birth may not be in the future) is the calendar date at UTC+7 whatever
//! zone the device happens to be set to.

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::household::Date;

/// Now, in Unix milliseconds. A clock set before 1970 reads as 0 rather than failing a save.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Today's date in Vietnam.
pub fn today() -> Date {
    date_at_ms(now_ms())
}

/// The calendar date in Vietnam at the given Unix milliseconds.
pub fn date_at_ms(ms: i64) -> Date {
    Date::in_vietnam_at_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_turns_at_midnight_in_vietnam() {
        // 2025-10-01T16:59:59Z is 23:59:59 in Hà Nội; one second later it is 2 October.
        let before = 1_759_337_999_000;
        assert_eq!(date_at_ms(before).to_string(), "2025-10-01");
        assert_eq!(date_at_ms(before + 1000).to_string(), "2025-10-02");
    }
}
