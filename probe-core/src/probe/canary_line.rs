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
//!
//! Quality samples (`check --samples N`) repeat a path's exchange under its
//! nonce with a sequence number, so a canary counts them beside the nonce
//! (never as strays, never as new nonces) and the prober matches each
//! answer to its sample:
//!
//! ```text
//! prober -> canary   PORTCALL-SAMPLE <round> <nonce> <seq>
//! canary -> prober   PORTCALL-SAMPLE-OK <nonce> <seq>
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

/// Highest sample sequence number a line may carry.
pub const MAX_SEQ: u32 = 999_999;

/// The line of quality sample `seq` of the path whose nonce is `nonce`.
pub fn sample_line(round: &str, nonce: &str, seq: u32) -> String {
    format!("PORTCALL-SAMPLE {round} {nonce} {seq}\n")
}

/// A sample line, parsed: `(round, nonce, seq)`.
pub fn parse_sample_line(line: &str) -> Option<(&str, &str, u32)> {
    let mut it = line.trim_end_matches(['\r', '\n']).split(' ');
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some("PORTCALL-SAMPLE"), Some(round), Some(nonce), Some(seq), None)
            if is_id(round) && is_id(nonce) =>
        {
            Some((round, nonce, parse_seq(seq)?))
        }
        _ => None,
    }
}

/// The canary's answer to sample `seq` of `nonce`: no longer than the
/// sample line it answers, so it cannot amplify.
pub fn sample_answer(nonce: &str, seq: u32) -> String {
    format!("PORTCALL-SAMPLE-OK {nonce} {seq}\n")
}

/// A sample answer, parsed: `(nonce, seq)`.
pub fn parse_sample_answer(line: &str) -> Option<(&str, u32)> {
    let mut it = line.trim_end_matches(['\r', '\n']).split(' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("PORTCALL-SAMPLE-OK"), Some(nonce), Some(seq), None) if is_id(nonce) => {
            Some((nonce, parse_seq(seq)?))
        }
        _ => None,
    }
}

fn parse_seq(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_SEQ)
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The round's nonce key: the coordinator draws one per round and gives it
/// to every agent in `prepare`, over the authenticated control channel, so
/// that a nonce is `<random><tag>` with `tag` a truncated
/// HMAC-SHA256 of the round and the random part. Whoever sniffs the round
/// id (it travels in clear in every probe line) still cannot make a nonce
/// the canaries accept, so forged lines cannot fill a canary's cap.
#[derive(Clone)]
pub struct NonceKey(ring::hmac::Key);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Hex digits of a nonce's random part, and of its tag.
const NONCE_PART: usize = 16;

/// Hex digits of a nonce key on the wire (32 bytes).
pub const NONCE_KEY_HEX: usize = 64;

impl NonceKey {
    /// The key from its wire form: exactly [`NONCE_KEY_HEX`] hex digits.
    pub fn from_hex(hex: &str) -> Option<NonceKey> {
        if hex.len() != NONCE_KEY_HEX || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(NonceKey(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &bytes,
        )))
    }

    fn tag(&self, round: &str, random: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(b"portcall-nonce\0");
        ctx.update(round.as_bytes());
        ctx.update(b"\0");
        ctx.update(random.as_bytes());
        let tag = ctx.sign();
        tag.as_ref()[..NONCE_PART / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The nonce of `round` whose random part is `random` (hex digits; the
    /// first [`NONCE_PART`] are used, and there must be that many).
    pub fn nonce(&self, round: &str, random: &str) -> String {
        let random = &random[..NONCE_PART.min(random.len())];
        format!("{random}{}", self.tag(round, random))
    }

    /// Whether `nonce` was made by [`NonceKey::nonce`] for `round` under
    /// this key. The comparison takes the same time whatever differs.
    pub fn verify(&self, round: &str, nonce: &str) -> bool {
        if nonce.len() != 2 * NONCE_PART || !nonce.is_ascii() {
            return false;
        }
        let (random, tag) = nonce.split_at(NONCE_PART);
        let want = self.tag(round, &random.to_ascii_lowercase());
        let got = tag.to_ascii_lowercase();
        want.bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
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

    #[test]
    fn sample_lines_parse_strictly_and_answers_never_exceed_them() {
        let line = sample_line("ab12", "ff00", 42);
        assert_eq!(parse_sample_line(&line), Some(("ab12", "ff00", 42)));
        assert_eq!(parse_probe_line(&line), None, "never a nonce line");
        let answer = sample_answer("ff00", 42);
        assert!(answer.len() < line.len());
        assert_eq!(parse_sample_answer(&answer), Some(("ff00", 42)));
        assert_eq!(parse_answer(&answer), None, "never a nonce answer");
        for bad in [
            "PORTCALL-SAMPLE ab12 ff00",
            "PORTCALL-SAMPLE ab12 ff00 -1",
            "PORTCALL-SAMPLE ab12 ff00 1000000",
            "PORTCALL-SAMPLE ab12 ff00 1 2",
            "PORTCALL-SAMPLE ab12 zz 1",
            "PORTCALL ab12 ff00 1",
        ] {
            assert_eq!(parse_sample_line(bad), None, "{bad:?}");
        }
        assert_eq!(parse_sample_answer("PORTCALL-SAMPLE-OK ff00 x"), None);
    }

    #[test]
    fn a_nonce_verifies_only_under_its_key_and_round() {
        let key = NonceKey::from_hex(&"ab".repeat(32)).unwrap();
        let other = NonceKey::from_hex(&"cd".repeat(32)).unwrap();
        let n = key.nonce("0011", "0123456789abcdef");
        assert_eq!(n.len(), 32);
        assert!(parse_probe_line(&probe_line("0011", &n)).is_some());
        assert!(key.verify("0011", &n));
        assert!(!key.verify("0012", &n), "another round");
        assert!(!other.verify("0011", &n), "another key");
        let mut forged = n.clone();
        forged.replace_range(31.., if n.ends_with('0') { "1" } else { "0" });
        assert!(!key.verify("0011", &forged));
        assert!(!key.verify("0011", "0123456789abcdef"), "no tag");
        assert!(!key.verify("0011", ""));
        assert!(NonceKey::from_hex("ab").is_none());
        assert!(NonceKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
