//! Proof that the right service answered, through the real engine on
//! loopback: small servers that speak each protocol's bytes as the real
//! servers write them (the lab tests run the real servers), and that
//! record every byte a probe sends, so that "one request, no credentials,
//! a FIN and not a reset" is asserted on what arrived.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use probe_core::plan::ServiceKind;
use probe_core::probe::service::{
    Proof, ServiceExchange, ServicePlan, call_unknown_method, sweep_proving,
};
use probe_core::probe::{Host, Observed, ProbeConfig, ProbeResult, Prober, Target};
use probe_core::{Port, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What one connection to a test server carried, and how it ended.
#[derive(Debug, Clone, Default)]
struct Seen {
    bytes: Vec<u8>,
    /// The client closed with a FIN (end of file), not a reset.
    fin: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A server that answers each connection with `answer(received so far)`
/// once `ready(received)` holds (or never, for `None`), then reads until
/// the client leaves, recording everything.
async fn server(
    ready: fn(&[u8]) -> bool,
    answer: fn(&[u8]) -> Option<Vec<u8>>,
    close_after_answer: bool,
) -> (u16, Log) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let l = l.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut answered = false;
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    if !answered && ready(&seen.bytes) {
                        answered = true;
                        match answer(&seen.bytes) {
                            Some(a) => {
                                let _ = s.write_all(&a).await;
                                if close_after_answer {
                                    let _ = s.shutdown().await;
                                }
                            }
                            None if close_after_answer => break,
                            None => {}
                        }
                    }
                    match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                        Ok(Ok(0)) => {
                            seen.fin = true;
                            break;
                        }
                        Ok(Ok(n)) => seen.bytes.extend_from_slice(&buf[..n]),
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                l.lock().unwrap().push(seen);
            });
        }
    });
    (port, log)
}

fn config() -> ProbeConfig {
    ProbeConfig {
        connect_timeout: Duration::from_millis(500),
        exchange_timeout: Duration::from_millis(1500),
        retries: 0,
        ..ProbeConfig::default()
    }
}

/// One path probed as `kind` against `port`, with the check it left.
async fn prove(
    kind: ServiceKind,
    port: u16,
) -> (
    ProbeResult,
    Option<probe_core::probe::service::ServiceCheck>,
) {
    let plan = ServicePlan::of(Some(kind), "svc", "km-1");
    let exchange = Arc::new(ServiceExchange::new(
        vec![plan],
        Duration::from_millis(700),
        None,
    ));
    let prober = Prober::with_exchange(config(), exchange.clone()).unwrap();
    let t = Target::new(Host::Ip(LOCALHOST), Port::new(port).unwrap(), Protocol::Tcp);
    let mut r = sweep_proving(&prober, &exchange, vec![t], &CancellationToken::new()).await;
    (r.remove(0), exchange.check(0))
}

/// The connections a server saw, once they have ended.
async fn seen(log: &Log, n: usize) -> Vec<Seen> {
    for _ in 0..100 {
        if log.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.lock().unwrap().clone()
}

fn http_head_done(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

fn carbon_redirect(_: &[u8]) -> Option<Vec<u8>> {
    Some(
        b"HTTP/1.1 302 Found\r\nLocation: https://km-1:9443/carbon/\r\nServer: WSO2 Carbon Server\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
}

#[tokio::test]
async fn a_carbon_console_redirect_is_a_healthy_http_answer_to_one_head() {
    let (port, log) = server(http_head_done, carbon_redirect, true).await;
    let (r, check) = prove(ServiceKind::Http, port).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let check = check.unwrap();
    assert_eq!(check.proof, Proof::Healthy);
    let a = check.answer.unwrap();
    assert_eq!(a.status.as_deref(), Some("302"));
    assert_eq!(
        a.detail,
        "redirect to https://km-1:9443/carbon/ (not followed)"
    );
    let seen = seen(&log, 1).await;
    assert_eq!(seen.len(), 1, "the redirect was followed: {seen:?}");
    let req = String::from_utf8_lossy(&seen[0].bytes).to_string();
    assert!(
        req.starts_with("HEAD / HTTP/1.1\r\nHost: km-1\r\n"),
        "{req}"
    );
    assert_eq!(req.matches("HTTP/1.1").count(), 1, "one request: {req}");
    assert!(!req.to_ascii_lowercase().contains("authorization"), "{req}");
}

fn refuse_head(b: &[u8]) -> Option<Vec<u8>> {
    Some(if b.starts_with(b"HEAD") {
        b"HTTP/1.1 405 Method Not Allowed\r\nServer: picky/1.0\r\nConnection: close\r\n\r\n"
            .to_vec()
    } else {
        b"HTTP/1.1 200 OK\r\nServer: picky/1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            .to_vec()
    })
}

#[tokio::test]
async fn a_server_refusing_head_gets_one_get_on_a_new_connection() {
    let (port, log) = server(http_head_done, refuse_head, true).await;
    let (r, check) = prove(ServiceKind::Http, port).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let check = check.unwrap();
    assert_eq!(check.proof, Proof::Healthy, "{check:?}");
    assert_eq!(check.answer.unwrap().status.as_deref(), Some("200"));
    let seen = seen(&log, 2).await;
    let methods: Vec<String> = seen
        .iter()
        .map(|s| String::from_utf8_lossy(&s.bytes[..4]).to_string())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(methods.contains(&"HEAD".to_string()) && methods.contains(&"GET ".to_string()));
    for s in &seen {
        assert_eq!(
            String::from_utf8_lossy(&s.bytes)
                .matches("HTTP/1.1\r\n")
                .count(),
            1,
            "one request per connection: {s:?}"
        );
    }
}

#[tokio::test]
async fn a_thrift_port_answered_by_http_is_the_wrong_service() {
    fn any(b: &[u8]) -> bool {
        !b.is_empty()
    }
    fn bad_request(_: &[u8]) -> Option<Vec<u8>> {
        Some(
            b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nConnection: close\r\n\r\n"
                .to_vec(),
        )
    }
    let (port, log) = server(any, bad_request, true).await;
    let (r, check) = prove(ServiceKind::Thrift, port).await;
    assert_eq!(r.observed, Observed::WrongService, "{r:?}");
    assert!(
        r.detail.contains("planned thrift: http 400"),
        "{}",
        r.detail
    );
    let check = check.unwrap();
    assert_eq!(check.proof, Proof::L4);
    let a = check.answer.unwrap();
    assert_eq!(
        (a.protocol.as_str(), a.product.as_deref()),
        ("http", Some("nginx"))
    );
    let seen = seen(&log, 1).await;
    assert_eq!(
        seen[0].bytes,
        call_unknown_method(probe_core::probe::service::Framing::Unframed)
    );
}

#[tokio::test]
async fn an_amqp_port_that_only_accepts_is_the_wrong_service() {
    fn never(_: &[u8]) -> bool {
        false
    }
    fn nothing(_: &[u8]) -> Option<Vec<u8>> {
        None
    }
    let (port, log) = server(never, nothing, false).await;
    let (r, check) = prove(ServiceKind::Amqp, port).await;
    assert_eq!(r.observed, Observed::WrongService, "{r:?}");
    assert!(
        r.detail.contains("nothing answered the amqp request"),
        "{}",
        r.detail
    );
    assert_eq!(check.unwrap().answer, None);
    let seen = seen(&log, 1).await;
    assert_eq!(seen[0].bytes, b"AMQP\x00\x00\x09\x01");
    assert!(seen[0].fin, "the probe left with a reset: {seen:?}");
}

#[tokio::test]
async fn a_framed_thrift_server_is_asked_again_framed_and_proven() {
    fn framed_call(b: &[u8]) -> bool {
        b.len() >= 4
    }
    /// As a `TFramedTransport` server does: an impossible frame length
    /// closes the connection; a framed call of an unknown method gets
    /// its exception.
    fn framed_only(b: &[u8]) -> Option<Vec<u8>> {
        if b[0] == 0x80 {
            return None;
        }
        let mut m = Vec::new();
        m.extend_from_slice(&0x8001_0003u32.to_be_bytes());
        m.extend_from_slice(&14u32.to_be_bytes());
        m.extend_from_slice(b"portcall_proof");
        m.extend_from_slice(&b[b.len() - 5..b.len() - 1]);
        m.push(11);
        m.extend_from_slice(&1i16.to_be_bytes());
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(b"unknown");
        m.push(8);
        m.extend_from_slice(&2i16.to_be_bytes());
        m.extend_from_slice(&1i32.to_be_bytes());
        m.push(0);
        let mut f = (m.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        Some(f)
    }
    let (port, log) = server(framed_call, framed_only, true).await;
    let (r, check) = prove(ServiceKind::Thrift, port).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let check = check.unwrap();
    assert_eq!(check.proof, Proof::Healthy, "{check:?}");
    assert_eq!(
        check.answer.unwrap().status.as_deref(),
        Some("UNKNOWN_METHOD")
    );
    assert_eq!(seen(&log, 2).await.len(), 2);
}
