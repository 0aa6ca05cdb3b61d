//! AMQP 0-9-1 (RabbitMQ, WSO2's Andes broker): the protocol header, then
//! the server's `Connection.Start`, whose server properties name the
//! product and version. Nothing else is sent: no `Start-Ok`, so no
//! mechanism and no credentials; the probe leaves with a FIN, which the
//! broker logs as a client that closed during the handshake (measured
//! against the alternatives by `scripts/abuse/service_close.sh`).

use tokio::time::Instant;

use super::answer::{Judged, Proof, ServiceAnswer, ServiceCheck, unrecognised};
use super::io::{self, End, text};
use crate::probe::exchange::ProbeStream;

/// The protocol header a 0-9-1 client opens with.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// A method frame's type and its end octet.
const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xce;

/// A whole frame in `buf`: its type, channel and payload.
fn frame(buf: &[u8]) -> Option<(u8, u16, &[u8])> {
    let size = usize::try_from(u32::from_be_bytes(buf.get(3..7)?.try_into().ok()?)).ok()?;
    if size > 128 * 1024 {
        return None;
    }
    let payload = buf.get(7..7 + size)?;
    (*buf.get(7 + size)? == FRAME_END)
        .then(|| (buf[0], u16::from_be_bytes([buf[1], buf[2]]), payload))
}

/// The `product` and `version` of a server-properties field table.
fn properties(mut t: &[u8]) -> (Option<String>, Option<String>) {
    let (mut product, mut version) = (None, None);
    let long = |t: &[u8]| -> Option<usize> {
        usize::try_from(u32::from_be_bytes(t.get(..4)?.try_into().ok()?)).ok()
    };
    while let Some(&n) = t.first() {
        let Some(name) = t.get(1..1 + usize::from(n)) else {
            break;
        };
        let rest = &t[1 + usize::from(n)..];
        let Some((&kind, value)) = rest.split_first() else {
            break;
        };
        // The size of the value, by its type (AMQP 0-9-1 errata, as
        // RabbitMQ writes tables).
        let size = match kind {
            b'S' | b'x' | b'F' | b'A' => long(value).map(|l| 4 + l),
            b't' | b'b' | b'B' => Some(1),
            b's' | b'u' | b'U' => Some(2),
            b'I' | b'i' | b'f' => Some(4),
            b'l' | b'L' | b'd' | b'T' => Some(8),
            b'D' => Some(5),
            b'V' => Some(0),
            _ => None,
        };
        let Some(size) = size.filter(|&s| s <= value.len()) else {
            break;
        };
        if kind == b'S' {
            let v = text(&value[4..size], 80);
            match name {
                b"product" => product = Some(v),
                b"version" => version = Some(v),
                _ => {}
            }
        }
        t = &value[size..];
    }
    (product, version)
}

/// A `Connection.Start` method frame, as an answer (`None` when the bytes
/// are not, or not yet, one).
pub fn parse_connection_start(buf: &[u8]) -> Option<ServiceAnswer> {
    let (kind, channel, p) = frame(buf)?;
    if kind != FRAME_METHOD || channel != 0 || p.get(..4)? != [0, 10, 0, 10] {
        return None;
    }
    let (major, minor) = (*p.get(4)?, *p.get(5)?);
    let len = usize::try_from(u32::from_be_bytes(p.get(6..10)?.try_into().ok()?)).ok()?;
    let table = p.get(10..10 + len)?;
    let (product, version) = properties(table);
    let mut a = ServiceAnswer::of("amqp");
    a.product = product;
    a.version = version;
    a.status = Some("Connection.Start".into());
    a.detail = format!("AMQP {major}-{minor}");
    Some(a)
}

/// The header and the judgement of the server's answer.
pub(super) async fn check(stream: &mut dyn ProbeStream, deadline: Instant) -> Judged {
    let started = Instant::now();
    if !io::send(stream, deadline, AMQP_HEADER).await {
        return unrecognised(Vec::new(), End::Closed, started);
    }
    let (buf, end) = io::read_answer(stream, deadline, 8192, |b| {
        parse_connection_start(b).is_some() || (b.starts_with(b"AMQP") && b.len() >= 8)
    })
    .await;
    if let Some(a) = parse_connection_start(&buf) {
        return Ok(ServiceCheck::proven(Proof::Healthy, a));
    }
    if buf.starts_with(b"AMQP") && buf.len() >= 8 {
        // The broker answers a version it does not speak with its own
        // header: an AMQP server, not one that speaks 0-9-1.
        let mut a = ServiceAnswer::of("amqp");
        a.status = Some("protocol header".into());
        a.detail = format!(
            "the broker speaks AMQP {}-{}-{}, not 0-9-1",
            buf[5], buf[6], buf[7]
        );
        return Ok(ServiceCheck::proven(Proof::Identified, a));
    }
    unrecognised(buf, end, started)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `Connection.Start` as RabbitMQ 3.x writes it (trimmed table).
    pub(crate) fn rabbit_start() -> Vec<u8> {
        let mut table = Vec::new();
        let mut entry = |name: &str, kind: u8, value: &[u8]| {
            table.push(name.len() as u8);
            table.extend_from_slice(name.as_bytes());
            table.push(kind);
            table.extend_from_slice(value);
        };
        let long = |s: &str| {
            let mut v = (s.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(s.as_bytes());
            v
        };
        let caps = {
            let mut c = vec![9u8];
            c.extend_from_slice(b"publisher");
            c.push(b't');
            c.push(1);
            let mut v = (c.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(&c);
            v
        };
        entry("capabilities", b'F', &caps);
        entry("cluster_name", b'S', &long("rabbit@lab"));
        entry("product", b'S', &long("RabbitMQ"));
        entry("version", b'S', &long("3.10.8"));
        let mut p = vec![0, 10, 0, 10, 0, 9];
        p.extend_from_slice(&(table.len() as u32).to_be_bytes());
        p.extend_from_slice(&table);
        p.extend_from_slice(&long("AMQPLAIN PLAIN"));
        p.extend_from_slice(&long("en_US"));
        let mut f = vec![1, 0, 0];
        f.extend_from_slice(&(p.len() as u32).to_be_bytes());
        f.extend_from_slice(&p);
        f.push(FRAME_END);
        f
    }

    #[test]
    fn connection_start_names_the_broker() {
        let a = parse_connection_start(&rabbit_start()).unwrap();
        assert_eq!(a.product.as_deref(), Some("RabbitMQ"));
        assert_eq!(a.version.as_deref(), Some("3.10.8"));
        assert_eq!(a.detail, "AMQP 0-9");
        let s = rabbit_start();
        assert_eq!(parse_connection_start(&s[..s.len() - 1]), None);
        assert_eq!(
            parse_connection_start(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            None
        );
    }
}
