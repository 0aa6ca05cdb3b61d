//! Durations as operators write them (`5m`, `90s`, `1h30m`, `1.5m`,
//! `500ms`), so `--every` reads like the intervals of the tools around it.
//! The grammar is `humantime`'s (also `5min`, `2h 30m`, `1day`); this module
//! only turns its byte offsets into errors that name the input and say what
//! to write instead.

use std::time::Duration;

/// The longest duration accepted: a hundred years. Longer ones would only
/// overflow the clock arithmetic of the schedule.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The units named in error messages (humantime accepts their long forms
/// too: `sec`, `min`, `hours`, `days`).
const UNITS: &str = "ms, s, m, h or d";

/// Why a duration was rejected. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing was given.
    #[error("duration is empty: expected e.g. 30s, 5m or 1h30m")]
    Empty,
    /// A number with no unit after it.
    #[error("duration {input:?}: {number} needs a unit ({UNITS}), e.g. {number}m or {number}s")]
    MissingUnit {
        /// The input as given.
        input: String,
        /// The number without a unit, as written (`1.5` for `1.5`).
        number: String,
    },
    /// A unit that is not one humantime knows.
    #[error("duration {input:?}: unknown unit {unit:?} (expected {UNITS})")]
    BadUnit {
        /// The input as given.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// A unit with no number before it (`m5`, `-5m`).
    #[error("duration {input:?}: expected a number at {rest:?}")]
    MissingNumber {
        /// The input as given.
        input: String,
        /// The unparsed remainder.
        rest: String,
    },
    /// A character that belongs to no number or unit (`5m,3s`, `1.m`).
    #[error("duration {input:?}: unexpected {found:?} at {rest:?} (write e.g. 1m30s or 90s)")]
    BadCharacter {
        /// The input as given.
        input: String,
        /// The character found.
        found: char,
        /// The remainder from that character on.
        rest: String,
    },
    /// The total is longer than [`MAX_DURATION`], or finer than a
    /// nanosecond.
    #[error("duration {input:?} is too large (at most 100 years) or finer than a nanosecond")]
    Overflow {
        /// The input as given.
        input: String,
    },
}

/// Parses a sequence of `<number><unit>` terms, e.g. `5m`, `1h30m`,
/// `1.5m`, `500ms`. Units: `ms`, `s`, `m`, `h`, `d` and humantime's
/// others (`min`, `hours`, `days`, `w`, ...).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    match humantime::parse_duration(input) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => Err(DurationError::Overflow {
            input: input.to_string(),
        }),
        Err(e) => Err(explain(input, e)),
    }
}

/// Turns humantime's error (byte offsets into `input`) into ours.
fn explain(input: &str, e: humantime::DurationError) -> DurationError {
    use humantime::DurationError as H;
    let owned = || input.to_string();
    let rest = |at: usize| input.get(at..).unwrap_or_default().to_string();
    match e {
        H::Empty => DurationError::Empty,
        H::UnknownUnit { unit, start, .. } if unit.is_empty() => DurationError::MissingUnit {
            input: owned(),
            number: number_before(input, start),
        },
        H::UnknownUnit { unit, .. } => DurationError::BadUnit {
            input: owned(),
            unit,
        },
        H::NumberExpected(at) => DurationError::MissingNumber {
            input: owned(),
            rest: rest(at),
        },
        H::InvalidCharacter(at) => DurationError::BadCharacter {
            input: owned(),
            found: input
                .get(at..)
                .and_then(|s| s.chars().next())
                .unwrap_or(' '),
            rest: rest(at),
        },
        H::NumberOverflow => DurationError::Overflow { input: owned() },
    }
}

/// The number as written just before byte `end` (`1.5` in `1.5`, `30` in
/// `1m 30`): humantime reports only its integer part.
fn number_before(input: &str, end: usize) -> String {
    let head = input.get(..end).unwrap_or(input).trim_end();
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    head[start..].to_string()
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
            // humantime's long forms and spaced terms.
            ("5min", 300_000),
            ("2h 30m", 9_000_000),
            ("1day", 86_400_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    /// The issue: `--every 1.5m` said "1 needs a unit".
    #[test]
    fn fractional_durations_mean_what_they_say() {
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(
            parse_duration("1.5").unwrap_err().to_string(),
            "duration \"1.5\": 1.5 needs a unit (ms, s, m, h or d), e.g. 1.5m or 1.5s"
        );
    }

    #[test]
    fn rejects_bad_durations_naming_the_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        let e = parse_duration("5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"5\": 5 needs a unit (ms, s, m, h or d), e.g. 5m or 5s"
        );
        let e = parse_duration("1m 30").unwrap_err();
        assert!(e.to_string().contains(": 30 needs a unit"), "{e}");
        let e = parse_duration("5mn").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"5mn\": unknown unit \"mn\" (expected ms, s, m, h or d)"
        );
        let e = parse_duration("m5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"m5\": expected a number at \"m5\""
        );
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::MissingNumber { .. })
        ));
        let e = parse_duration("5m,3s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"5m,3s\": unexpected ',' at \",3s\" (write e.g. 1m30s or 90s)"
        );
        assert!(matches!(
            parse_duration("1.m"),
            Err(DurationError::BadCharacter { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("5000000000s"),
            Err(DurationError::Overflow { .. })
        ));
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
    }
}
