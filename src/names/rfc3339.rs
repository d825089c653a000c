//! RFC 3339 timestamps as IPNS `Validity` carries them: written the way kubo/boxo write them
//! (Go's `time.RFC3339Nano` in UTC), read in any valid RFC 3339 form.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a timestamp could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text is not an RFC 3339 `date-time`.
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Malformed(String),
    /// A field is out of its range (month 13, February 30, hour 24, ...).
    #[error("RFC 3339 timestamp has a field out of range: {0:?}")]
    OutOfRange(String),
    /// The instant lies outside years 0000-9999, which RFC 3339 cannot express.
    #[error("instant outside the years RFC 3339 can express")]
    Unrepresentable,
}

/// RFC 3339 years have exactly four digits.
const MIN_YEAR: i64 = 0;
const MAX_YEAR: i64 = 9999;

/// Formats `t` as kubo does (`2006-01-02T15:04:05.999999999Z07:00` in UTC): nanoseconds with
/// trailing zeros removed, no fraction at all when it is zero, and `Z` for the zone.
pub fn format(t: SystemTime) -> Result<String, TimestampError> {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).map_err(|_| TimestampError::Unrepresentable)?,
            d.subsec_nanos(),
        ),
        Err(e) => {
            // Before 1970: floor to the whole second below, keep the fraction positive.
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).map_err(|_| TimestampError::Unrepresentable)?;
            if d.subsec_nanos() == 0 {
                (-whole, 0)
            } else {
                (-whole - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(TimestampError::Unrepresentable);
    }
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    Ok(out)
}

/// Parses any RFC 3339 `date-time`: `T`/`t` separator, any number of fraction digits (beyond
/// nanoseconds they are truncated), `Z`/`z` or a numeric offset, leap second 60 (read as the
/// first instant of the next minute, as the instant after 23:59:59 is all a clock can name).
pub fn parse(s: &str) -> Result<SystemTime, TimestampError> {
    let malformed = || TimestampError::Malformed(s.to_owned());
    let out_of_range = || TimestampError::OutOfRange(s.to_owned());
    let b = s.as_bytes();
    // Fixed part: "YYYY-MM-DDTHH:MM:SS" is 19 bytes.
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(malformed());
    }
    let year = digits(&b[0..4]).ok_or_else(malformed)?;
    let month = digits(&b[5..7]).ok_or_else(malformed)?;
    let day = digits(&b[8..10]).ok_or_else(malformed)?;
    let hour = digits(&b[11..13]).ok_or_else(malformed)?;
    let minute = digits(&b[14..16]).ok_or_else(malformed)?;
    let second = digits(&b[17..19]).ok_or_else(malformed)?;

    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if rest.first() == Some(&b'.') {
        let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return Err(malformed());
        }
        for (i, c) in rest[1..=count].iter().enumerate() {
            if i < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
        }
        for _ in count..9 {
            nanos *= 10;
        }
        rest = &rest[1 + count..];
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2]).ok_or_else(malformed)?;
            let om = digits(&[*m1, *m2]).ok_or_else(malformed)?;
            if oh > 23 || om > 59 {
                return Err(out_of_range());
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Err(malformed()),
    };

    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(out_of_range());
    }
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + hour * 3600 + minute * 60 + second;
    let utc = local - offset_secs;
    Ok(if utc >= 0 {
        UNIX_EPOCH + Duration::new(utc.unsigned_abs(), nanos)
    } else {
        // utc < 0 and 0 <= nanos < 1e9: the instant is |utc| seconds before the epoch, plus nanos.
        UNIX_EPOCH - Duration::from_secs(utc.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    })
}

/// Parses ASCII decimal digits (at most four here), `None` on anything else.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(format(at(0, 0)).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(format(at(0, 1)).unwrap(), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            format(at(0, 500_000_000)).unwrap(),
            "1970-01-01T00:00:00.5Z"
        );
        // 2006-01-02T15:04:05.999999999Z, Go's reference time.
        assert_eq!(
            format(at(1_136_214_245, 999_999_999)).unwrap(),
            "2006-01-02T15:04:05.999999999Z"
        );
        assert_eq!(
            format(at(951_782_400, 120_000)).unwrap(),
            "2000-02-29T00:00:00.00012Z"
        );
        assert_eq!(
            format(UNIX_EPOCH - Duration::new(1, 0) + Duration::from_nanos(250)).unwrap(),
            "1969-12-31T23:59:59.00000025Z"
        );
    }

    #[test]
    fn parses_round_trip_and_variants() {
        for (s, t) in [
            ("1970-01-01T00:00:00Z", at(0, 0)),
            ("1970-01-01T00:00:00.000000001Z", at(0, 1)),
            (
                "2006-01-02T15:04:05.999999999Z",
                at(1_136_214_245, 999_999_999),
            ),
            (
                "2006-01-02t15:04:05.999999999z",
                at(1_136_214_245, 999_999_999),
            ),
            (
                "2006-01-02T08:04:05.5-07:00",
                at(1_136_214_245, 500_000_000),
            ),
            ("2006-01-02T17:34:05+02:30", at(1_136_214_245, 0)),
            (
                "2006-01-02T15:04:05.1234567891234Z",
                at(1_136_214_245, 123_456_789),
            ),
            ("2016-12-31T23:59:60Z", at(1_483_228_800, 0)),
            (
                "1969-12-31T23:59:59.75Z",
                UNIX_EPOCH - Duration::from_millis(250),
            ),
        ] {
            assert_eq!(parse(s).unwrap(), t, "{s}");
        }
        let far = parse("2123-10-13T14:12:55.123456789Z").unwrap();
        assert_eq!(format(far).unwrap(), "2123-10-13T14:12:55.123456789Z");
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "2006-01-02",
            "2006-01-02 15:04:05Z",
            "2006-01-02T15:04:05",
            "2006-01-02T15:04:05.Z",
            "2006-01-02T15:04:05+0700",
            "2006-13-02T15:04:05Z",
            "2006-02-29T15:04:05Z",
            "2006-01-02T24:04:05Z",
            "2006-01-02T15:04:05+24:00",
            "+006-01-02T15:04:05Z",
            "2006-01-02T15:04:05Zjunk",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert!(parse("2000-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn civil_days_agree() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
