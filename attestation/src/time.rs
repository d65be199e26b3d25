//! Verification time, injected by the caller (verifiers never read the clock).

use std::fmt;

/// A point in time, in whole seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Timestamp(u64);

/// A time string that is neither Unix seconds nor `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: use Unix seconds or YYYY-MM-DDTHH:MM:SSZ")]
pub struct TimestampError(String);

impl Timestamp {
    /// From Unix seconds.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Unix seconds.
    pub const fn unix_secs(self) -> u64 {
        self.0
    }

    /// The current system time: for callers at the binary edge, never used by verifiers.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self(secs)
    }

    /// Parse Unix seconds (`1751328000`) or RFC 3339 UTC (`2025-07-01T00:00:00Z`, or a bare
    /// date `2025-07-01`).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = || TimestampError(s.to_owned());
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<u64>().map(Self).map_err(|_| err());
        }
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, t.strip_suffix('Z').ok_or_else(err)?),
            None => (s, "00:00:00"),
        };
        let num = |p: &str| p.parse::<u64>().map_err(|_| err());
        let d: Vec<&str> = date.split('-').collect();
        let t: Vec<&str> = time.split(':').collect();
        let (y, mo, da) = match d.as_slice() {
            [y, m, d] => (num(y)?, num(m)?, num(d)?),
            _ => return Err(err()),
        };
        let (h, mi, se) = match t.as_slice() {
            [h, m, s] => (num(h)?, num(m)?, num(s)?),
            _ => return Err(err()),
        };
        if !(1970..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || !(1..=31).contains(&da)
            || h > 23
            || mi > 59
            || se > 60
        {
            return Err(err());
        }
        let days = days_from_civil(y, mo, da);
        Ok(Self(days * 86_400 + h * 3_600 + mi * 60 + se))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm),
/// for years ≥ 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / 86_400;
        let rem = self.0 % 86_400;
        // civil_from_days
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let t = Timestamp::parse("2025-07-01T00:00:00Z").unwrap();
        assert_eq!(t.unix_secs(), 1_751_328_000);
        assert_eq!(t.to_string(), "2025-07-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse("2026-03-01").unwrap().unix_secs(),
            1_772_323_200
        );
        assert_eq!(Timestamp::parse("12").unwrap().unix_secs(), 12);
        assert!(Timestamp::parse("2026-13-01").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("").is_err());
    }
}
