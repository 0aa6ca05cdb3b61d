//! MySQL and MariaDB: the server greets first. The initial handshake
//! packet is healthy; an error packet in its place ("Host ... is not
//! allowed to connect", "Too many connections") is a MySQL server that
//! refuses us: identified, not healthy. No login packet is ever sent, so
//! the server counts one aborted connect per probe (`Aborted_connects`),
//! the least the protocol allows a client without credentials.

use tokio::time::Instant;

use super::answer::{Judged, Proof, ServiceAnswer, ServiceCheck, unrecognised};
use super::io::{self, text};
use crate::probe::exchange::ProbeStream;

/// Whether `buf` holds a whole packet.
fn complete(buf: &[u8]) -> bool {
    buf.len() >= 4 && {
        let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
        buf.len() >= 4 + len
    }
}

/// The greeting (`status` `greeting`, product `MariaDB` or `MySQL`,
/// version) or the error packet (`status` `error 1130`) in `buf`; `None`
/// for anything else.
pub fn parse_greeting(buf: &[u8]) -> Option<ServiceAnswer> {
    if !complete(buf) {
        return None;
    }
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    // The greeting is packet 0 and short.
    if buf[3] != 0 || len > 4096 {
        return None;
    }
    let payload = &buf[4..4 + len];
    let mut a = ServiceAnswer::of("mysql");
    match payload.first()? {
        9 | 10 => {
            let rest = &payload[1..];
            let end = rest.iter().position(|&b| b == 0)?;
            let version = text(&rest[..end], 80);
            if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            a.product = Some(
                if version.contains("MariaDB") {
                    "MariaDB"
                } else {
                    "MySQL"
                }
                .into(),
            );
            a.version = Some(version);
            a.status = Some("greeting".into());
        }
        0xff if payload.len() >= 3 => {
            let code = u16::from_le_bytes([payload[1], payload[2]]);
            a.status = Some(format!("error {code}"));
            a.detail = text(&payload[3..], 160);
        }
        _ => return None,
    }
    Some(a)
}

/// Reads the greeting and judges it.
pub(super) async fn check(stream: &mut dyn ProbeStream, deadline: Instant) -> Judged {
    let started = Instant::now();
    let (buf, end) = io::read_answer(stream, deadline, 4096, complete).await;
    match parse_greeting(&buf) {
        Some(a) if a.status.as_deref() == Some("greeting") => {
            Ok(ServiceCheck::proven(Proof::Healthy, a))
        }
        Some(mut a) => {
            a.detail = format!("{} (the server refuses this client)", a.detail);
            Ok(ServiceCheck::proven(Proof::Identified, a))
        }
        None => unrecognised(buf, end, started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, 0];
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn a_greeting_is_healthy_material_and_a_refusal_is_identified_material() {
        let mut hello = vec![10u8];
        hello.extend_from_slice(b"10.11.6-MariaDB-0+deb12u1\0");
        hello.extend_from_slice(&[1, 0, 0, 0]);
        let a = parse_greeting(&packet(&hello)).unwrap();
        assert_eq!(a.product.as_deref(), Some("MariaDB"));
        assert_eq!(a.version.as_deref(), Some("10.11.6-MariaDB-0+deb12u1"));
        assert_eq!(a.status.as_deref(), Some("greeting"));
        let mut refusal = vec![0xff, 0x6a, 0x04];
        refusal.extend_from_slice(
            b"Host '198.18.0.9' is not allowed to connect to this MariaDB server",
        );
        let r = parse_greeting(&packet(&refusal)).unwrap();
        assert_eq!(r.status.as_deref(), Some("error 1130"));
        assert!(r.detail.starts_with("Host '198.18.0.9' is not allowed"));
        assert_eq!(parse_greeting(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(parse_greeting(&packet(b"\x0aabc\0")), None);
    }
}
