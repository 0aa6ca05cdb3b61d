//! The canary line grammar: the one short line each way of the agents'
//! nonce exchange, bounded in length and alphabet. It lives in the probe
//! layer because both ends use it: the prober sends [`probe_line`] and
//! reads [`parse_answer`] (over TCP through the agents' exchange, over UDP
//! as `portcall probe`'s canary request), the agent's canary listeners read
//! [`parse_probe_line`] and answer.
//!
//! ```text
//! prober -> canary   PORTCALL <round> <nonce>
//! canary -> prober   PORTCALL-OK <host> <nonce>      (or PORTCALL-ERR <host> <why>)
//! ```

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_strictly() {
        assert_eq!(
            parse_probe_line(&probe_line("ab12", "ff00")),
            Some(("ab12", "ff00"))
        );
        for bad in [
            "",
            "PORTCALL",
            "PORTCALL ab",
            "PORTCALL ab cd ef",
            "PORTCALL zz cd",
            "HELLO ab cd",
            &format!("PORTCALL {} cd", "a".repeat(65)),
        ] {
            assert_eq!(parse_probe_line(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_answer("PORTCALL-OK db 00ff\n"),
            Some(Answer::Ok {
                host: "db".into(),
                nonce: "00ff".into()
            })
        );
        assert_eq!(
            parse_answer("PORTCALL-ERR db not-this-round"),
            Some(Answer::Err {
                host: "db".into(),
                reason: "not-this-round".into()
            })
        );
        assert_eq!(parse_answer("PORTCALL-OK db"), None);
        assert_eq!(parse_answer("SSH-2.0-OpenSSH_9.6"), None);
        assert_eq!(parse_answer("PORTCALL-OK db xyz"), None);
    }
}
