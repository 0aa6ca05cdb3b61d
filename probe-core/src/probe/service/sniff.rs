//! What answered, when it is not the planned protocol: the first bytes of
//! an answer recognised as one of the protocols portcall knows (so that a
//! `wrong-service` says "HTTP answered" rather than "garbage").

use super::answer::{ServiceAnswer, ServiceCheck, Unrecognised};
use super::io::{End, printable, text};

/// The protocol `bytes` are in, with what they say, where recognisable;
/// `unknown` with the first bytes otherwise; `None` for no bytes.
pub fn describe(bytes: &[u8]) -> Option<ServiceAnswer> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.starts_with(b"HTTP/") {
        return super::http::parse_response(bytes).map(|r| r.answer("http"));
    }
    if let [0x15 | 0x16, 0x03, 0..=0x04, ..] = bytes {
        let mut a = ServiceAnswer::of("tls");
        a.detail = if bytes[0] == 0x15 {
            "a TLS alert: a TLS server read our clear text".into()
        } else {
            "a TLS handshake record".into()
        };
        return Some(a);
    }
    if bytes.starts_with(b"AMQP") {
        let mut a = ServiceAnswer::of("amqp");
        a.detail = format!("protocol header {}", printable(bytes, 8));
        return Some(a);
    }
    if let Some(a) = super::amqp::parse_connection_start(bytes) {
        return Some(a);
    }
    if bytes.starts_with(b"SSH-") {
        let line = bytes.split(|&b| b == b'\r' || b == b'\n').next()?;
        let mut a = ServiceAnswer::of("ssh");
        a.product = Some(text(line, 120));
        return Some(a);
    }
    if let Some(a) = super::mysql::parse_greeting(bytes) {
        return Some(a);
    }
    if let Some(r) = super::thrift::parse_reply(bytes, super::thrift::Framing::Unframed)
        .or_else(|| super::thrift::parse_reply(bytes, super::thrift::Framing::Framed))
    {
        return Some(r);
    }
    let mut a = ServiceAnswer::of("unknown");
    a.detail = format!("first bytes: {}", printable(bytes, 48));
    Some(a)
}

/// The check of a port that did not answer as `planned`: what did answer
/// (or that nothing did), as a wrong service.
pub(super) fn other(planned: &str, u: &Unrecognised) -> ServiceCheck {
    let (bytes, end, waited_ms) = (&u.bytes[..], u.end, u.waited_ms);
    match describe(bytes) {
        Some(a) => {
            let why = format!("{} answered instead", a.summary());
            ServiceCheck::wrong(Some(a), why)
        }
        None => {
            let why = match end {
                End::Silent => format!(
                    "the connection was accepted, but nothing answered the {planned} request within {waited_ms} ms"
                ),
                _ => format!(
                    "the connection was accepted, then closed without a byte in answer to the {planned} request"
                ),
            };
            ServiceCheck::wrong(None, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart_by_their_first_bytes() {
        let http =
            describe(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n\r\n").unwrap();
        assert_eq!(http.protocol, "http");
        assert_eq!(http.status.as_deref(), Some("200"));
        assert_eq!(
            describe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
                .unwrap()
                .protocol,
            "tls"
        );
        assert_eq!(describe(b"AMQP\x00\x00\x09\x01").unwrap().protocol, "amqp");
        let ssh = describe(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").unwrap();
        assert_eq!(ssh.protocol, "ssh");
        assert_eq!(
            ssh.product.as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian-2")
        );
        let odd = describe(b"\x01\x02hello").unwrap();
        assert_eq!(odd.protocol, "unknown");
        assert_eq!(odd.detail, "first bytes: \\x01\\x02hello");
        assert_eq!(describe(b""), None);
    }

    #[test]
    fn silence_and_a_bare_close_are_wrong_services_without_an_answer() {
        let quiet = |end| Unrecognised {
            bytes: Vec::new(),
            end,
            waited_ms: 500,
        };
        let c = other("amqp", &quiet(End::Silent));
        assert_eq!(c.answer, None);
        assert!(
            c.wrong
                .unwrap()
                .contains("nothing answered the amqp request within 500 ms")
        );
        let c = other("thrift", &quiet(End::Closed));
        assert!(c.wrong.unwrap().contains("closed without a byte"));
    }
}
