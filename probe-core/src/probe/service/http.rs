//! HTTP/1.1 (and HTTPS, the same bytes inside the engine's TLS): one `HEAD /`
//! naming the planned host, `Connection: close`; the status line, the
//! `Server` header and a redirect's `Location` are read, the redirect never
//! followed. A `GET` replaces the `HEAD` only on a new connection, after a
//! server refused `HEAD` (405, 501).

use tokio::time::Instant;

use super::answer::{Judged, Proof, Retry, ServiceAnswer, ServiceCheck, ServicePlan, unrecognised};
use super::io::{self, End, text};
use crate::probe::exchange::ProbeStream;

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `HEAD`: the status and headers without a body.
    Head,
    /// `GET`, for servers that refuse `HEAD`; the body is not read.
    Get,
}

/// The request: no credentials, no cookies, one request.
pub fn head_request(method: Method, host: &str) -> Vec<u8> {
    let m = match method {
        Method::Head => "HEAD",
        Method::Get => "GET",
    };
    // A host name with control characters would split the request.
    let host: String = host.chars().filter(|c| !c.is_control()).collect();
    format!(
        "{m} / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcall/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1`.
    pub version: String,
    /// The status code.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
    /// The `Server` header.
    pub server: Option<String>,
    /// The `Location` header.
    pub location: Option<String>,
}

impl Response {
    /// The answer as the report shows it, `protocol` being `http` or `https`.
    pub fn answer(&self, protocol: &str) -> ServiceAnswer {
        let mut a = ServiceAnswer::of(protocol);
        a.status = Some(self.code.to_string());
        if let Some(s) = &self.server {
            // `Apache-Coyote/1.1`, `nginx/1.22.1`: product and version.
            let first = s.split_whitespace().next().unwrap_or(s);
            match first.split_once('/') {
                Some((p, v)) if !p.is_empty() && !v.is_empty() => {
                    a.product = Some(p.to_owned());
                    a.version = Some(v.to_owned());
                }
                _ => a.product = Some(s.clone()),
            }
        }
        a.detail = match &self.location {
            Some(l) if (300..400).contains(&self.code) => format!("redirect to {l} (not followed)"),
            _ => self.reason.clone(),
        };
        a
    }
}

/// Whether the response head is complete (ends with an empty line).
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// The status line and the headers portcall records; `None` when the
/// bytes are not an HTTP response.
pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let head = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf, |end| &buf[..end]);
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let status = lines.next()?;
    let mut parts = status.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code: u16 = parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))?;
    let reason = text(parts.next().unwrap_or("").as_bytes(), 80);
    let mut server = None;
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = text(value.trim().as_bytes(), 200);
        if name.eq_ignore_ascii_case("server") {
            server = Some(value);
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(value);
        }
    }
    Some(Response {
        version: text(version.as_bytes(), 16),
        code,
        reason,
        server,
        location,
    })
}

/// One request and the judgement of its answer.
pub(super) async fn check(
    plan: &ServicePlan,
    method: Method,
    stream: &mut dyn ProbeStream,
    deadline: Instant,
) -> Judged {
    let started = Instant::now();
    let protocol = plan.kind.as_str();
    if !io::send(stream, deadline, &head_request(method, &plan.host)).await {
        return unrecognised(Vec::new(), End::Closed, started);
    }
    let (buf, end) = io::read_answer(stream, deadline, 8 * 1024, head_complete).await;
    let Some(r) = parse_response(&buf) else {
        return unrecognised(buf, end, started);
    };
    let mut answer = r.answer(protocol);
    if method == Method::Get {
        answer.detail = format!("{} (GET: HEAD refused)", answer.detail);
    }
    let healthy = (200..400).contains(&r.code);
    let mut c = ServiceCheck::proven(
        if healthy {
            Proof::Healthy
        } else {
            Proof::Identified
        },
        answer,
    );
    if method == Method::Head && matches!(r.code, 405 | 501) {
        c.again = Some(Retry::HttpGet);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_one_head_naming_the_planned_host_and_nothing_secret() {
        let r = String::from_utf8(head_request(Method::Head, "km-1\r\nX: y")).unwrap();
        assert!(
            r.starts_with("HEAD / HTTP/1.1\r\nHost: km-1X: y\r\n"),
            "{r}"
        );
        assert!(r.ends_with("Connection: close\r\n\r\n"));
        assert!(!r.to_ascii_lowercase().contains("authorization"));
        assert!(!r.to_ascii_lowercase().contains("cookie"));
        assert_eq!(r.matches("\r\n\r\n").count(), 1);
    }

    #[test]
    fn a_carbon_console_redirect_is_read_and_not_followed() {
        let raw = b"HTTP/1.1 302 Found\r\nLocation: https://km-1:9443/carbon/\r\nServer: WSO2 Carbon Server\r\nContent-Length: 0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.code, 302);
        let a = r.answer("https");
        assert_eq!(a.status.as_deref(), Some("302"));
        assert_eq!(a.product.as_deref(), Some("WSO2 Carbon Server"));
        assert_eq!(
            a.detail,
            "redirect to https://km-1:9443/carbon/ (not followed)"
        );
        let nginx = parse_response(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n").unwrap();
        let a = nginx.answer("http");
        assert_eq!(
            (a.product.as_deref(), a.version.as_deref()),
            (Some("nginx"), Some("1.22.1"))
        );
    }

    #[test]
    fn what_is_not_http_is_not_parsed() {
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.1 abc\r\n\r\n"), None);
        assert_eq!(parse_response(b""), None);
        assert!(head_complete(b"HTTP/1.0 200 OK\r\n\r\n"));
        assert!(!head_complete(b"HTTP/1.0 200 OK\r\n"));
    }
}
