//! Durations as operators write them (`5m`, `90s`, `1h30m`, `500ms`), so
//! `--every` reads like the cron-ish intervals of the tools around it.

use std::time::Duration;

/// Why a duration was rejected. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing was given.
    #[error("duration is empty: expected e.g. 30s, 5m or 1h30m")]
    Empty,
    /// A number with no unit after it.
    #[error("duration {input:?}: {number} needs a unit (ms, s, m, h or d), e.g. {number}m")]
    MissingUnit {
        /// The input as given.
        input: String,
        /// The number without a unit.
        number: String,
    },
    /// A unit that is not one of `ms`, `s`, `m`, `h`, `d`.
    #[error("duration {input:?}: unknown unit {unit:?} (expected ms, s, m, h or d)")]
    BadUnit {
        /// The input as given.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// A unit with no number before it, or another stray character.
    #[error("duration {input:?}: expected a number at {rest:?}")]
    MissingNumber {
        /// The input as given.
        input: String,
        /// The unparsed remainder.
        rest: String,
    },
    /// The total does not fit.
    #[error("duration {input:?} is too large")]
    Overflow {
        /// The input as given.
        input: String,
    },
}

/// Parses a sequence of `<number><unit>` terms, e.g. `5m`, `1h30m`,
/// `500ms`. Units: `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let overflow = || DurationError::Overflow {
        input: input.to_string(),
    };
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationError::MissingNumber {
                input: input.to_string(),
                rest: rest.to_string(),
            });
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let per = match unit {
            "" => {
                return Err(DurationError::MissingUnit {
                    input: input.to_string(),
                    number: number.to_string(),
                });
            }
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => {
                return Err(DurationError::BadUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        let term = u32::try_from(n)
            .ok()
            .and_then(|n| per.checked_mul(n))
            .ok_or_else(overflow)?;
        total = total.checked_add(term).ok_or_else(overflow)?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_operator_durations() {
        let ok = [
            ("5m", 300_000),
            ("30s", 30_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1d", 86_400_000),
            ("1m30s250ms", 90_250),
            (" 2s ", 2_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    #[test]
    fn rejects_bad_durations_naming_the_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        let e = parse_duration("5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"5\": 5 needs a unit (ms, s, m, h or d), e.g. 5m"
        );
        let e = parse_duration("5min").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"5min\": unknown unit \"min\" (expected ms, s, m, h or d)"
        );
        assert!(matches!(
            parse_duration("m5"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("5m 3s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("5000000000s"),
            Err(DurationError::Overflow { .. })
        ));
    }
}
