//! The canary exchange's line grammar, one short line each way:
//!
//! ```text
//! prober -> canary   PORTCALL <round> <nonce>
//! canary -> prober   PORTCALL-OK <host> <nonce>      (or PORTCALL-ERR <host> <why>)
//! ```
//!
//! Pure text, spoken by the TCP and UDP canaries and by every prober that
//! carries a nonce; kept apart from the listeners so that what speaks it
//! need not import them.

/// Longest exchange line either side reads, newline included.
pub const MAX_LINE: usize = 160;

/// Longest round id or nonce accepted, in hex digits.
const MAX_ID: usize = 64;

/// The line a prober sends after connecting.
pub fn probe_line(round: &str, nonce: &str) -> String {
    format!("PORTCALL {round} {nonce}\n")
}

/// A prober's line, parsed: `(round, nonce)`.
pub fn parse_probe_line(line: &str) -> Option<(&str, &str)> {
    let mut it = line.trim_end_matches(['\r', '\n']).split(' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("PORTCALL"), Some(round), Some(nonce), None) if is_id(round) && is_id(nonce) => {
            Some((round, nonce))
        }
        _ => None,
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a canary answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It recorded the nonce.
    Ok {
        /// The host the answering agent plays.
        host: String,
        /// The nonce it echoes.
        nonce: String,
    },
    /// It refused the line (another round, or garbage).
    Err {
        /// The host the answering agent plays.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A canary's line, parsed.
pub fn parse_answer(line: &str) -> Option<Answer> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (head, rest) = line.split_once(' ')?;
    let (host, tail) = rest.split_once(' ')?;
    let host_ok =
        !host.is_empty() && host.len() <= 64 && host.bytes().all(|b| b.is_ascii_graphic());
    if !host_ok {
        return None;
    }
    match head {
        "PORTCALL-OK" if is_id(tail) => Some(Answer::Ok {
            host: host.to_string(),
            nonce: tail.to_string(),
        }),
        "PORTCALL-ERR" => Some(Answer::Err {
            host: host.to_string(),
            reason: tail.to_string(),
        }),
        _ => None,
    }
}
