//! RFC 3339 times as TOCs write them (`2025-01-01T00:00:00Z`, with an
//! optional fraction and a `Z` or `±hh:mm` offset), to Unix seconds and
//! nanoseconds. Go's zero time (`0001-01-01T00:00:00Z`) reads as it is.

/// `(seconds, nanoseconds)` since the Unix epoch, or a reason.
pub fn parse(text: &str) -> Result<(i64, u32), String> {
    let bad = || format!("{text:?} is not an RFC 3339 time");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let s = &b[range];
        if s.iter().all(u8::is_ascii_digit) {
            Ok(s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    // 60: a leap second, which Unix time folds into the next.
    if second > 60 {
        return Err(bad());
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return Err(bad());
        }
        let value = fraction[..n]
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
        nanos = value * 10u32.pow(9 - n as u32);
        rest = &fraction[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = [*h1, *h2];
            let mm = [*m1, *m2];
            if !hh.iter().chain(&mm).all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let minutes = i64::from(hh[0] - b'0') * 600
                + i64::from(hh[1] - b'0') * 60
                + i64::from(mm[0] - b'0') * 10
                + i64::from(mm[1] - b'0');
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    Ok((
        days * 86400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (the
/// well-known era-based conversion).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn times_read_as_date_1_and_go_write_them() {
        // Each against `date -u -d TEXT +%s`.
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok((0, 0)));
        assert_eq!(parse("2025-01-01T00:00:00Z"), Ok((1_735_689_600, 0)));
        assert_eq!(parse("2000-02-29T12:34:56Z"), Ok((951_827_696, 0)));
        assert_eq!(
            parse("2024-03-10T01:02:03.5+02:00"),
            Ok((1_710_025_323, 500_000_000))
        );
        assert_eq!(parse("1969-12-31T23:59:59Z"), Ok((-1, 0)));
        assert_eq!(parse("0001-01-01T00:00:00Z"), Ok((-62_135_596_800, 0)));
        assert_eq!(
            parse("2025-01-01T00:00:00.123456789Z"),
            Ok((1_735_689_600, 123_456_789))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2025-01-01",
            "2025-01-01 00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:00:00",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00.1234567890Z",
            "2025-01-01T00:00:00+0200",
            "20x5-01-01T00:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
