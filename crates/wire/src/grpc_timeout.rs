//! The `grpc-timeout` header, shared by both ends of the wire.
//!
//! Its value is at most 8 digits and a unit: `H` hours, `M` minutes, `S`
//! seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// Name of the header carrying a call's timeout.
pub const HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

const MAX_DIGITS_VALUE: u128 = 99_999_999;

/// Parses a `grpc-timeout` value; `None` when it is malformed.
pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` in the finest unit that fits in 8 digits (rounding up, so
/// the peer never sees a shorter timeout than asked for).
pub fn encode(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (amount, unit) = units
        .iter()
        .map(|&(per_unit, unit)| (nanos.div_ceil(per_unit), unit))
        .find(|&(amount, _)| amount <= MAX_DIGITS_VALUE)
        .unwrap_or((MAX_DIGITS_VALUE, 'H'));
    HeaderValue::from_str(&format!("{amount}{unit}")).expect("digits and a unit are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &'static str) -> Option<Duration> {
        parse(&HeaderValue::from_static(s))
    }

    #[test]
    fn parses_every_unit_and_rejects_malformed_values() {
        assert_eq!(parse_str("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_str("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_str("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_str("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_str("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_str("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "10", "10s", "-1S", "1.5S"] {
            assert_eq!(parse_str(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoding_round_trips_without_shortening() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 3),
            Duration::new(1, 1),
        ] {
            let back = parse(&encode(timeout)).unwrap();
            assert!(back >= timeout, "{timeout:?} came back as {back:?}");
        }
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::from_secs(200)), "200000m");
    }

    proptest::proptest! {
        #[test]
        fn parse_takes_any_text_without_panicking(text in "\\PC{0,12}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse(&value);
            }
        }

        #[test]
        fn any_timeout_round_trips_no_shorter(nanos in 0u64..=u64::MAX / 4) {
            let timeout = Duration::from_nanos(nanos);
            proptest::prop_assert!(parse(&encode(timeout)).unwrap() >= timeout);
        }
    }
}
