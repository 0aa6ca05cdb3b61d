//! What `portcall probe` sends to a UDP port and which replies prove that
//! it arrived: a valid minimal request of the service portcall knows for
//! the port (a DNS query for `.` NS on 53, an NTP v4 client packet on 123,
//! an SNMP v2c get of sysDescr.0 on 161 when a community was given), or a
//! canary line elsewhere. A `PORTCALL-OK` / `PORTCALL-ERR` line from a
//! portcall canary proves arrival on any port; a service's reply counts
//! only when it answers this very request (DNS id, NTP origin timestamp,
//! SNMP request id).

use std::fmt::Write as _;

use ring::rand::{SecureRandom, SystemRandom};

use super::canary_line::{Answer, parse_answer, probe_line};

/// Options for the live requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// SNMP community for a v2c get of sysDescr.0 on port 161. `None`: no
    /// SNMP request is sent (a community is a credential; portcall uses
    /// one only when told).
    pub snmp_community: Option<String>,
}

/// The service a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpService {
    /// A DNS query for `.` NS.
    Dns,
    /// An NTP v4 client packet.
    Ntp,
    /// An SNMP v2c get of sysDescr.0.
    Snmp,
    /// No service known: a canary line, answered only by a portcall canary.
    Canary,
}

/// One request: the datagram to send and what it expects back.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    /// The protocol spoken.
    pub service: UdpService,
    /// The datagram.
    pub payload: Vec<u8>,
    /// The id that ties a reply to this request (DNS id, NTP transmit
    /// timestamp, SNMP request id), as bytes of the reply to match.
    token: Vec<u8>,
}

/// What an accepted reply showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFacts {
    /// A portcall canary answered: the datagram arrived at its host.
    Canary {
        /// The host the answering agent plays.
        host: String,
        /// `None` for `PORTCALL-OK`, else its reason (`not-this-round`, ...).
        refused: Option<String>,
    },
    /// The service answered this request; the text says what it showed.
    Service(String),
    /// The port sent our own datagram back (an echo service): it arrived.
    Echoed,
}

impl ReplyFacts {
    /// The detail of an `open` result.
    pub fn detail(&self) -> String {
        match self {
            ReplyFacts::Canary {
                host,
                refused: None,
            } => format!("the portcall canary of {host} answered: the datagram arrived"),
            ReplyFacts::Canary {
                host,
                refused: Some(why),
            } => format!("the portcall canary of {host} answered ({why}): the datagram arrived"),
            ReplyFacts::Service(s) => s.clone(),
            ReplyFacts::Echoed => {
                "echoed: the port sent our own datagram back, so it arrived".to_string()
            }
        }
    }

    /// True when the reply came from a portcall canary.
    pub fn is_canary(&self) -> bool {
        matches!(self, ReplyFacts::Canary { .. })
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is not something a probe can do without;
    // a fixed id still works, it only matches stale replies more easily.
    let _ = SystemRandom::new().fill(&mut b);
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

impl ServiceRequest {
    /// The request for `port`: the service portcall knows there, else a
    /// canary line with a fresh nonce.
    pub fn for_port(port: u16, options: &UdpOptions) -> ServiceRequest {
        match (UdpService::for_port(port, options), &options.snmp_community) {
            (UdpService::Dns, _) => ServiceRequest::dns(),
            (UdpService::Ntp, _) => ServiceRequest::ntp(),
            (UdpService::Snmp, Some(community)) => ServiceRequest::snmp(community),
            _ => ServiceRequest::canary(),
        }
    }

    /// A DNS query for `.` NS, recursion not asked for.
    pub fn dns() -> ServiceRequest {
        let id: [u8; 2] = random();
        let mut p = Vec::with_capacity(17);
        p.extend_from_slice(&id);
        // Flags 0 (a standard query), one question, no other records.
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        // QNAME `.`, QTYPE NS (2), QCLASS IN (1).
        p.extend_from_slice(&[0, 0, 2, 0, 1]);
        ServiceRequest {
            service: UdpService::Dns,
            payload: p,
            token: id.to_vec(),
        }
    }

    /// An NTP v4 client packet (mode 3) whose transmit timestamp is random:
    /// a server echoes it as the origin timestamp.
    pub fn ntp() -> ServiceRequest {
        let ts: [u8; 8] = random();
        let mut p = vec![0u8; 48];
        p[0] = 0x23; // LI 0, VN 4, mode 3 (client)
        p[40..48].copy_from_slice(&ts);
        ServiceRequest {
            service: UdpService::Ntp,
            payload: p,
            token: ts.to_vec(),
        }
    }

    /// An SNMP v2c GetRequest for sysDescr.0 (1.3.6.1.2.1.1.1.0).
    pub fn snmp(community: &str) -> ServiceRequest {
        let id: [u8; 4] = random();
        // A positive INTEGER: clear the top bit.
        let id = [id[0] & 0x7f, id[1], id[2], id[3]];
        let oid = [0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 1, 0];
        let varbind = tlv(0x30, &[&oid[..], &[0x05, 0x00]].concat());
        let varbinds = tlv(0x30, &varbind);
        let pdu = tlv(
            0xa0,
            &[
                &tlv(0x02, &id)[..],
                &[0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
                &varbinds,
            ]
            .concat(),
        );
        let msg = tlv(
            0x30,
            &[
                &[0x02, 0x01, 0x01][..],
                &tlv(0x04, community.as_bytes()),
                &pdu,
            ]
            .concat(),
        );
        ServiceRequest {
            service: UdpService::Snmp,
            payload: msg,
            token: id.to_vec(),
        }
    }

    /// A canary line with a random round and nonce: a canary of another
    /// round answers `PORTCALL-ERR <host> not-this-round`, which still
    /// proves arrival. Both are as long as the grammar allows, since a
    /// canary never answers a line without a valid nonce with more bytes
    /// than it received (the line is 139 bytes, room for any host name an
    /// answer may carry).
    pub fn canary() -> ServiceRequest {
        let round: [u8; 32] = random();
        let nonce: [u8; 32] = random();
        ServiceRequest {
            service: UdpService::Canary,
            payload: probe_line(&hex(&round), &hex(&nonce)).into_bytes(),
            token: Vec::new(),
        }
    }

    /// What `reply` proves, or `None` when it is no answer to this request
    /// (ignored, as stray datagrams are).
    pub fn check(&self, reply: &[u8]) -> Option<ReplyFacts> {
        if let Some(facts) = canary_reply(reply) {
            return Some(facts);
        }
        // Our datagram (with its fresh nonce or id) came back from the
        // target's port: only something there that read it can have sent
        // it, which proves arrival as well as any answer.
        if reply == self.payload.as_slice() {
            return Some(ReplyFacts::Echoed);
        }
        match self.service {
            UdpService::Dns => dns_reply(reply, &self.token).map(ReplyFacts::Service),
            UdpService::Ntp => ntp_reply(reply, &self.token).map(ReplyFacts::Service),
            UdpService::Snmp => snmp_reply(reply, &self.token).map(ReplyFacts::Service),
            UdpService::Canary => None,
        }
    }

    /// What silence means for this request, for a `timeout` detail.
    pub fn silence(&self) -> &'static str {
        self.service.silence()
    }
}

impl UdpService {
    /// The service portcall speaks on `port` (SNMP only with a community).
    pub fn for_port(port: u16, options: &UdpOptions) -> UdpService {
        match port {
            53 => UdpService::Dns,
            123 => UdpService::Ntp,
            161 if options.snmp_community.is_some() => UdpService::Snmp,
            _ => UdpService::Canary,
        }
    }

    /// What silence means for this service, for a `timeout` detail (after
    /// "no answer within N ms (k attempts): ").
    pub fn silence(self) -> &'static str {
        match self {
            UdpService::Dns => {
                "dropped, or no DNS server there; UDP cannot be proven without an answer"
            }
            UdpService::Ntp => {
                "dropped, or no NTP server there; UDP cannot be proven without an answer"
            }
            UdpService::Snmp => {
                "dropped, no SNMP agent there, or the community is wrong; UDP cannot be proven without an answer"
            }
            UdpService::Canary => {
                "dropped, or a service that ignores this request; UDP cannot be proven without a canary"
            }
        }
    }
}

fn canary_reply(reply: &[u8]) -> Option<ReplyFacts> {
    let text = std::str::from_utf8(reply).ok()?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return None;
    }
    match parse_answer(line)? {
        Answer::Ok { host, .. } => Some(ReplyFacts::Canary {
            host,
            refused: None,
        }),
        Answer::Err { host, reason } => Some(ReplyFacts::Canary {
            host,
            refused: Some(reason),
        }),
    }
}

/// Name of a DNS response code.
fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("rcode {n}"),
    }
}

/// A DNS response to our query: the id matches and the QR bit is set. Any
/// response code is an answer (REFUSED still proves a DNS server is there).
fn dns_reply(r: &[u8], id: &[u8]) -> Option<String> {
    if r.len() < 12 || r[..2] != *id || r[2] & 0x80 == 0 {
        return None;
    }
    let rcode = rcode_name(r[3] & 0x0f);
    let count = |i: usize| usize::from(u16::from_be_bytes([r[i], r[i + 1]]));
    let (qd, an) = (count(4), count(6));
    let aa = if r[2] & 0x04 != 0 {
        ", authoritative"
    } else {
        ""
    };
    let ns = count_answers_of_type(r, qd, an, 2);
    Some(match ns {
        Some(ns) => format!(
            "DNS answered: rcode {rcode}{aa}, {ns} NS record{}",
            if ns == 1 { "" } else { "s" }
        ),
        None => format!("DNS answered: rcode {rcode}{aa}, {an} answer records"),
    })
}

/// Answers of `rtype` in a DNS message; `None` when it does not parse.
fn count_answers_of_type(r: &[u8], qd: usize, an: usize, rtype: u16) -> Option<usize> {
    let mut at = 12;
    for _ in 0..qd.min(16) {
        at = skip_name(r, at)? + 4;
    }
    let mut n = 0;
    for _ in 0..an.min(256) {
        at = skip_name(r, at)?;
        let head = r.get(at..at + 10)?;
        if u16::from_be_bytes([head[0], head[1]]) == rtype {
            n += 1;
        }
        let len = usize::from(u16::from_be_bytes([head[8], head[9]]));
        at += 10 + len;
        if at > r.len() {
            return None;
        }
    }
    Some(n)
}

/// Past a (possibly compressed) name starting at `at`.
fn skip_name(r: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *r.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return r.get(at + 1).map(|_| at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

/// An NTP server reply (mode 4) whose origin timestamp is our transmit
/// timestamp.
fn ntp_reply(r: &[u8], ts: &[u8]) -> Option<String> {
    if r.len() < 48 || r[0] & 0x07 != 4 || r[24..32] != *ts {
        return None;
    }
    let version = (r[0] >> 3) & 0x07;
    let stratum = r[1];
    Some(if stratum == 0 {
        let code: String = r[12..16]
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(|&b| char::from(b))
            .collect();
        format!("NTP answered: version {version}, kiss-o'-death {code:?}")
    } else {
        format!("NTP answered: version {version}, stratum {stratum}")
    })
}

/// One BER element: `(tag, contents, rest)`.
fn ber(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 {
            return None;
        }
        let bytes = b.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)),
            2 + n,
        )
    };
    let body = b.get(head..head + len)?;
    Some((tag, body, &b[head + len..]))
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    match body.len() {
        n if n < 0x80 => v.push(n as u8),
        n if n < 0x100 => v.extend_from_slice(&[0x81, n as u8]),
        n => v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    v.extend_from_slice(body);
    v
}

/// An SNMP Response-PDU carrying our request id.
fn snmp_reply(r: &[u8], id: &[u8]) -> Option<String> {
    let (0x30, msg, _) = ber(r)? else { return None };
    let (0x02, _version, rest) = ber(msg)? else {
        return None;
    };
    let (0x04, _community, rest) = ber(rest)? else {
        return None;
    };
    let (0xa2, pdu, _) = ber(rest)? else {
        return None;
    };
    let (0x02, rid, rest) = ber(pdu)? else {
        return None;
    };
    // Leading zero bytes do not change an INTEGER.
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|&x| x == 0).collect() };
    if strip(rid) != strip(id) {
        return None;
    }
    let (0x02, status, rest) = ber(rest)? else {
        return None;
    };
    let status = status.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x));
    let descr = (|| {
        let (_, _index, rest) = ber(rest)?;
        let (0x30, list, _) = ber(rest)? else {
            return None;
        };
        let (0x30, vb, _) = ber(list)? else {
            return None;
        };
        let (0x06, _oid, rest) = ber(vb)? else {
            return None;
        };
        let (0x04, value, _) = ber(rest)? else {
            return None;
        };
        let text: String = String::from_utf8_lossy(value)
            .chars()
            .filter(|c| !c.is_control())
            .take(60)
            .collect();
        Some(text)
    })();
    Some(match (status, descr) {
        (0, Some(d)) => format!("SNMP answered: sysDescr {d:?}"),
        (0, None) => "SNMP answered: no sysDescr value".to_string(),
        (s, _) => format!("SNMP answered: error-status {s}"),
    })
}

/// Whether portcall knows a valid request to prove that a live UDP service
/// on `port` answers ([`UdpService::for_port`]: DNS, NTP; SNMP only with
/// the plan's `snmp_community`). Elsewhere a held UDP port cannot be
/// proven: the agent sends nothing to such a port, and the report's join
/// says why.
pub fn live_request_known(port: u16, snmp_community: Option<&str>) -> bool {
    let options = UdpOptions {
        snmp_community: snmp_community.map(str::to_string),
    };
    UdpService::for_port(port, &options) != UdpService::Canary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_ports_get_their_service_and_snmp_only_with_a_community() {
        let none = UdpOptions::default();
        assert_eq!(ServiceRequest::for_port(53, &none).service, UdpService::Dns);
        assert_eq!(
            ServiceRequest::for_port(123, &none).service,
            UdpService::Ntp
        );
        assert_eq!(
            ServiceRequest::for_port(161, &none).service,
            UdpService::Canary
        );
        let public = UdpOptions {
            snmp_community: Some("public".into()),
        };
        assert_eq!(
            ServiceRequest::for_port(161, &public).service,
            UdpService::Snmp
        );
        assert_eq!(
            ServiceRequest::for_port(514, &public).service,
            UdpService::Canary
        );
    }

    #[test]
    fn dns_reply_must_carry_our_id_and_the_qr_bit() {
        let q = ServiceRequest::dns();
        assert_eq!(q.payload.len(), 17);
        // A response with one NS answer, compressed name.
        let mut r = q.payload.clone();
        r[2] = 0x84; // QR + AA
        r[3] = 0x00;
        r[7] = 1; // ANCOUNT 1
        r.extend_from_slice(&[0xc0, 0x0c, 0, 2, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 0x0c]);
        assert_eq!(
            q.check(&r),
            Some(ReplyFacts::Service(
                "DNS answered: rcode NOERROR, authoritative, 1 NS record".into()
            ))
        );
        // Our own query echoed back (no QR) is no DNS answer, but it proves
        // arrival: an echo.
        assert_eq!(q.check(&q.payload), Some(ReplyFacts::Echoed));
        let mut other = r.clone();
        other[0] ^= 0xff;
        assert_eq!(q.check(&other), None);
        let mut refused = q.payload.clone();
        refused[2] = 0x80;
        refused[3] = 5;
        assert_eq!(
            q.check(&refused),
            Some(ReplyFacts::Service(
                "DNS answered: rcode REFUSED, 0 NS records".into()
            ))
        );
        assert_eq!(q.check(&r[..11]), None);
    }

    #[test]
    fn ntp_reply_must_be_a_server_echoing_our_timestamp() {
        let q = ServiceRequest::ntp();
        assert_eq!(q.payload.len(), 48);
        assert_eq!(q.payload[0], 0x23);
        let mut r = vec![0u8; 48];
        r[0] = 0x24; // VN 4, mode 4
        r[1] = 2;
        r[24..32].copy_from_slice(&q.payload[40..48]);
        assert_eq!(
            q.check(&r),
            Some(ReplyFacts::Service(
                "NTP answered: version 4, stratum 2".into()
            ))
        );
        let mut client = r.clone();
        client[0] = 0x23;
        assert_eq!(q.check(&client), None);
        let mut stale = r.clone();
        stale[24] ^= 1;
        assert_eq!(q.check(&stale), None);
    }

    #[test]
    fn snmp_request_is_a_v2c_get_and_only_a_matching_response_counts() {
        let q = ServiceRequest::snmp("public");
        let (tag, msg, rest) = ber(&q.payload).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (_, version, rest) = ber(msg).unwrap();
        assert_eq!(version, [1]);
        let (_, community, rest) = ber(rest).unwrap();
        assert_eq!(community, b"public");
        let (pdu_tag, pdu, _) = ber(rest).unwrap();
        assert_eq!(pdu_tag, 0xa0);
        // sysDescr.0 is in the request.
        assert!(pdu.windows(8).any(|w| w == [0x2b, 6, 1, 2, 1, 1, 1, 0]));
        // The response: same message with tag 0xa2 and a value.
        let (_, rid, _) = ber(pdu).unwrap();
        let oid = [0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 1, 0];
        let value = tlv(0x04, b"Linux lab 6.1");
        let vb = tlv(0x30, &tlv(0x30, &[&oid[..], &value].concat()));
        let resp_pdu = tlv(
            0xa2,
            &[&tlv(0x02, rid)[..], &[2, 1, 0, 2, 1, 0], &vb].concat(),
        );
        let resp = tlv(
            0x30,
            &[&[2, 1, 1][..], &tlv(0x04, b"public"), &resp_pdu].concat(),
        );
        assert_eq!(
            q.check(&resp),
            Some(ReplyFacts::Service(
                "SNMP answered: sysDescr \"Linux lab 6.1\"".into()
            ))
        );
        // The request itself (a GetRequest) is no SNMP answer, only an
        // echo.
        assert_eq!(q.check(&q.payload), Some(ReplyFacts::Echoed));
        let mut almost = q.payload.clone();
        almost.push(0);
        assert_eq!(q.check(&almost), None);
        assert_eq!(q.check(&resp[..resp.len() - 3]), None);
    }

    #[test]
    fn a_canary_line_proves_arrival_on_any_port() {
        for q in [
            ServiceRequest::dns(),
            ServiceRequest::ntp(),
            ServiceRequest::canary(),
        ] {
            assert_eq!(
                q.check(b"PORTCALL-ERR db not-this-round\n"),
                Some(ReplyFacts::Canary {
                    host: "db".into(),
                    refused: Some("not-this-round".into())
                })
            );
            assert_eq!(
                q.check(b"PORTCALL-OK web 00ff\n").map(|f| f.detail()),
                Some("the portcall canary of web answered: the datagram arrived".into())
            );
            assert_eq!(q.check(b"PORTCALL-OK web\n"), None);
            assert_eq!(q.check(b"hello\n"), None);
        }
        let line = String::from_utf8(ServiceRequest::canary().payload).unwrap();
        assert!(
            crate::probe::canary_line::parse_probe_line(&line).is_some(),
            "{line}"
        );
    }
}
