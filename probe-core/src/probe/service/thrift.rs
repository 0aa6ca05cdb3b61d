//! Apache Thrift, binary protocol: a call of a method no service defines
//! (`portcall_proof`, no arguments). Every Thrift server answers it with a
//! `TApplicationException` of type `UNKNOWN_METHOD` and leaves its state
//! untouched: that exception is the proof. Unframed first (the
//! `TServerSocket` servers WSO2 runs); a server that drops the unframed
//! call without a byte is asked once more, framed, on a new connection.

use tokio::time::Instant;

use super::answer::{Judged, Proof, Retry, ServiceAnswer, ServiceCheck, unrecognised};
use super::io::{self, End, text};
use crate::probe::exchange::ProbeStream;

/// The method called: no Thrift IDL defines it.
const METHOD: &str = "portcall_proof";
/// The call's sequence id, echoed in the answer.
const SEQID: i32 = 0x7063_0001;
/// Binary protocol, strict: version 1 in the high half.
const VERSION_1: u32 = 0x8001_0000;
const CALL: u8 = 1;
const EXCEPTION: u8 = 3;

/// Whether the message has a 4-byte length in front (`TFramedTransport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The message alone (`TBufferedTransport`, `TSocket`).
    Unframed,
    /// A big-endian length, then the message.
    Framed,
}

/// The call: message header, then an empty argument struct.
pub fn call_unknown_method(framing: Framing) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&(VERSION_1 | u32::from(CALL)).to_be_bytes());
    m.extend_from_slice(&(METHOD.len() as u32).to_be_bytes());
    m.extend_from_slice(METHOD.as_bytes());
    m.extend_from_slice(&SEQID.to_be_bytes());
    m.push(0); // field stop: no arguments
    match framing {
        Framing::Unframed => m,
        Framing::Framed => {
            let mut f = (m.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&m);
            f
        }
    }
}

/// A cursor over big-endian fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.i32()?)
            .ok()
            .filter(|&n| n <= 64 * 1024)?;
        self.take(n)
    }
}

/// The names of `TApplicationException` types.
fn exception_type(t: i32) -> String {
    let name = match t {
        0 => "UNKNOWN",
        1 => "UNKNOWN_METHOD",
        2 => "INVALID_MESSAGE_TYPE",
        3 => "WRONG_METHOD_NAME",
        4 => "BAD_SEQUENCE_ID",
        5 => "MISSING_RESULT",
        6 => "INTERNAL_ERROR",
        7 => "PROTOCOL_ERROR",
        _ => return format!("exception type {t}"),
    };
    name.to_owned()
}

/// A whole Thrift message in `buf` (strict binary protocol), as an
/// answer: `status` is the exception type when it is an exception (the
/// answer to our call), else the message type. `None` when the bytes are
/// not (yet) a whole Thrift message.
pub fn parse_reply(buf: &[u8], framing: Framing) -> Option<ServiceAnswer> {
    let mut c = Cursor(buf);
    if framing == Framing::Framed {
        let len = usize::try_from(c.i32()?).ok()?;
        c = Cursor(c.take(len)?);
    }
    let word = c.i32()? as u32;
    if word & 0xffff_0000 != VERSION_1 {
        return None;
    }
    let kind = (word & 0xff) as u8;
    let name = text(c.bytes()?, 64);
    let seqid = c.i32()?;
    let mut a = ServiceAnswer::of("thrift");
    if kind != EXCEPTION {
        a.status = Some(format!("message type {kind}"));
        a.detail = format!("method {name}");
        return Some(a);
    }
    let (mut message, mut etype) = (String::new(), None);
    loop {
        let ftype = c.u8()?;
        if ftype == 0 {
            break;
        }
        let id = c.i16()?;
        match (ftype, id) {
            (11, 1) => message = text(c.bytes()?, 200),
            (8, 2) => etype = Some(c.i32()?),
            // Any other field of the struct: only strings and i32 occur.
            (11, _) => {
                c.bytes()?;
            }
            (8, _) => {
                c.i32()?;
            }
            _ => return None,
        }
    }
    a.status = Some(exception_type(etype.unwrap_or(0)));
    a.detail = if seqid == SEQID {
        message
    } else {
        format!("{message} (sequence id {seqid}, not ours)")
    };
    Some(a)
}

/// The call and the judgement of its answer.
pub(super) async fn check(
    framing: Framing,
    stream: &mut dyn ProbeStream,
    deadline: Instant,
) -> Judged {
    let started = Instant::now();
    if !io::send(stream, deadline, &call_unknown_method(framing)).await {
        return unrecognised(Vec::new(), End::Closed, started);
    }
    let (buf, end) = io::read_answer(stream, deadline, 4096, |b| {
        parse_reply(b, framing).is_some()
    })
    .await;
    match parse_reply(&buf, framing) {
        Some(mut a) => {
            if framing == Framing::Framed {
                a.detail = format!("{} (framed)", a.detail);
            }
            let ours = a.status.as_deref() == Some("UNKNOWN_METHOD");
            Ok(ServiceCheck::proven(
                if ours {
                    Proof::Healthy
                } else {
                    Proof::Identified
                },
                a,
            ))
        }
        // A framed server reads our unframed header as a frame length far
        // over its limit and closes without a byte: ask again, framed.
        None if buf.is_empty() && end == End::Closed && framing == Framing::Unframed => {
            let mut c = ServiceCheck::wrong(
                None,
                "the connection was accepted, then closed without a byte in answer to the unframed thrift call".into(),
            );
            c.again = Some(Retry::ThriftFramed);
            Ok(c)
        }
        None => unrecognised(buf, end, started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Apache Thrift's Python `TSimpleServer` writes for an unknown
    /// method (bytes as the library builds them).
    fn unknown_method_reply(seqid: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&0x8001_0003u32.to_be_bytes());
        m.extend_from_slice(&(METHOD.len() as u32).to_be_bytes());
        m.extend_from_slice(METHOD.as_bytes());
        m.extend_from_slice(&seqid.to_be_bytes());
        let msg = b"Unknown function portcall_proof";
        m.push(11);
        m.extend_from_slice(&1i16.to_be_bytes());
        m.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        m.extend_from_slice(msg);
        m.push(8);
        m.extend_from_slice(&2i16.to_be_bytes());
        m.extend_from_slice(&1i32.to_be_bytes());
        m.push(0);
        m
    }

    #[test]
    fn the_call_is_a_strict_binary_message_with_no_arguments() {
        let c = call_unknown_method(Framing::Unframed);
        assert_eq!(&c[..4], &[0x80, 0x01, 0x00, 0x01]);
        assert_eq!(c.last(), Some(&0));
        let f = call_unknown_method(Framing::Framed);
        assert_eq!(&f[..4], &(c.len() as u32).to_be_bytes());
        assert_eq!(&f[4..], &c[..]);
    }

    #[test]
    fn an_unknown_method_exception_is_read_framed_and_unframed() {
        let reply = unknown_method_reply(SEQID);
        let a = parse_reply(&reply, Framing::Unframed).unwrap();
        assert_eq!(a.protocol, "thrift");
        assert_eq!(a.status.as_deref(), Some("UNKNOWN_METHOD"));
        assert_eq!(a.detail, "Unknown function portcall_proof");
        let mut framed = (reply.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        assert_eq!(parse_reply(&framed, Framing::Framed), Some(a));
        // Incomplete, or not Thrift at all.
        assert_eq!(
            parse_reply(&reply[..reply.len() - 1], Framing::Unframed),
            None
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 400 Bad Request\r\n\r\n", Framing::Unframed),
            None
        );
        assert!(
            parse_reply(&unknown_method_reply(7), Framing::Unframed)
                .unwrap()
                .detail
                .contains("not ours")
        );
    }
}
