//! The probe engine against real sockets on loopback: every outcome that
//! loopback can produce without root (open, refused, silence from a full
//! accept queue, TLS facts, TLS errors, local errors), plus the exchange
//! extension point and the concurrency bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use probe_core::probe::{
    Exchange, ExchangeContext, ExchangeFuture, ExchangeOutcome, Host, Observed, ProbeConfig,
    ProbeResult, ProbeStream, Prober, Target, TlsOptions, TrustRoots,
};
use probe_core::{Port, Protocol};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn target(port: u16, protocol: Protocol) -> Target {
    Target::new(Host::Ip(LOCALHOST), Port::new(port).unwrap(), protocol)
}

fn quick() -> ProbeConfig {
    ProbeConfig {
        connect_timeout: Duration::from_millis(500),
        tls_timeout: Duration::from_millis(500),
        exchange_timeout: Duration::from_millis(500),
        retries: 0,
        ..ProbeConfig::default()
    }
}

async fn probe(config: ProbeConfig, t: Target) -> ProbeResult {
    Prober::new(config).unwrap().probe(t).await
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn listening_port_is_open_and_records_the_source() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = probe(quick(), target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(r.attempts, 1);
    assert_eq!(r.address, Some(SocketAddr::new(LOCALHOST, port)));
    assert_eq!(r.local_address.map(|a| a.ip()), Some(LOCALHOST));
    assert!(r.cert.is_none());
}

#[tokio::test]
async fn nothing_listening_is_refused_on_the_first_attempt() {
    let port = free_port();
    let config = ProbeConfig {
        retries: 3,
        ..quick()
    };
    let r = probe(config, target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Refused, "{r:?}");
    // A reset is an answer: it is never retried.
    assert_eq!(r.attempts, 1);
    assert!(r.detail.starts_with("ECONNREFUSED"), "{}", r.detail);
}

#[tokio::test]
async fn ipv6_loopback_is_probed_too() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let t = probe_core::probe::parse_target(&format!("[::1]:{port}")).unwrap();
    let r = probe(quick(), t[0].clone()).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
}

/// A listener whose accept queue is full: Linux drops further SYNs without
/// answering, which is silence on loopback without a firewall.
fn silent_listener() -> (socket2::Socket, std::net::TcpStream, u16) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
    s.listen(0).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    let filler = std::net::TcpStream::connect((LOCALHOST, port)).unwrap();
    (s, filler, port)
}

#[tokio::test(start_paused = true)]
async fn silence_is_retried_when_its_deadline_passes_and_then_timeout() {
    let (_listener, _filler, port) = silent_listener();
    let config = ProbeConfig {
        connect_timeout: Duration::from_millis(200),
        retries: 2,
        retry_spacing: Duration::from_millis(1000),
        ..ProbeConfig::default()
    };
    let start = tokio::time::Instant::now();
    let r = probe(config, target(port, Protocol::Tcp)).await;
    let elapsed = start.elapsed();
    assert_eq!(r.observed, Observed::Timeout, "{r:?}");
    assert_eq!(r.attempts, 3);
    assert!(r.detail.contains("3 attempts"), "{}", r.detail);
    // No fixed gap between attempts (the retry spacing is only for hosts
    // that reject with ICMP): each starts as the one before it gives up,
    // at 0, 200 and 400 ms, the last ending at 600 ms.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_attempt() {
    let (_listener, _filler, port) = silent_listener();
    let r = probe(quick(), target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Timeout, "{r:?}");
    assert_eq!(r.attempts, 1);
}

#[tokio::test]
async fn a_source_address_that_is_not_local_is_a_local_error() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Binding fails before any packet leaves, so nothing is sent anywhere.
    let config = ProbeConfig {
        source: Some("198.18.0.99".parse().unwrap()),
        ..quick()
    };
    let r = probe(config, target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::LocalError, "{r:?}");
    assert!(r.detail.contains("198.18.0.99"), "{}", r.detail);
    assert_eq!(r.attempts, 0);

    let config = ProbeConfig {
        source: Some("::1".parse().unwrap()),
        ..quick()
    };
    let r = probe(config, target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::LocalError, "{r:?}");
    assert!(r.detail.contains("address family"), "{}", r.detail);
}

#[tokio::test]
async fn a_local_source_address_is_used() {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let source: IpAddr = "127.0.0.9".parse().unwrap();
    let config = ProbeConfig {
        source: Some(source),
        ..quick()
    };
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().1 });
    let r = probe(config, target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(r.local_address.map(|a| a.ip()), Some(source));
    assert_eq!(accept.await.unwrap().ip(), source);
}

#[tokio::test]
async fn a_hosts_sources_bind_per_family_and_the_kernel_chooses_for_the_other() {
    // The host's own addresses: one IPv4, no IPv6.
    let config = ProbeConfig {
        sources: vec!["127.0.0.9".parse().unwrap()],
        ..quick()
    };
    let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let r = probe(config.clone(), target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(
        r.local_address.map(|a| a.ip()),
        Some("127.0.0.9".parse().unwrap())
    );
    // An IPv6 target: no local error; the kernel picks the source.
    let Ok(v6) = TcpListener::bind(("::1", 0)).await else {
        return; // no IPv6 loopback here
    };
    let port = v6.local_addr().unwrap().port();
    let t = Target::new(
        Host::Ip("::1".parse().unwrap()),
        Port::new(port).unwrap(),
        Protocol::Tcp,
    );
    let r = probe(config, t).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(
        r.local_address.map(|a| a.ip()),
        Some("::1".parse().unwrap())
    );
}

struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcall test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test server");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A TLS server on 127.0.0.1 that reports the SNI each client sent.
async fn tls_server(pki: &Pki) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    tls_server_after(pki, Duration::ZERO).await
}

/// [`tls_server`], starting each handshake only `delay` after accepting.
async fn tls_server_after(
    pki: &Pki,
    delay: Duration,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    tls_server_delaying(pki, move |_| delay).await
}

/// [`tls_server`], starting the handshake of its n-th accepted connection
/// (from 0) only `delay(n)` after accepting it.
async fn tls_server_delaying(
    pki: &Pki,
    delay: impl Fn(usize) -> Duration + Send + 'static,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((s, _)) = listener.accept().await {
            let config = config.clone();
            let tx = tx.clone();
            let delay = delay(accepted);
            accepted += 1;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), s);
                let Ok(start) = acceptor.await else { return };
                // Read the SNI from the ClientHello: the prober resets the
                // connection as soon as its side of the handshake is done.
                let _ = tx.send(start.client_hello().server_name().map(str::to_string));
                if let Ok(mut tls) = start.into_stream(config).await {
                    let mut buf = [0u8; 64];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    (port, rx)
}

fn ca_file(pki: &Pki) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &pki.ca_pem).unwrap();
    f
}

#[tokio::test]
async fn latency_is_the_connect_round_trip_and_the_tls_handshake_is_timed_apart() {
    // Regression: latency was the whole attempt, so a slow (or contended)
    // TLS handshake read as network latency, and a timeout's latency was
    // just the timeout.
    let pki = pki();
    let (port, _sni) = tls_server_after(&pki, Duration::from_millis(300)).await;
    let r = probe(quick(), target(port, Protocol::Tls)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let connect = r.connect_time.expect("it connected");
    let tls = r.tls_time.expect("a handshake completed");
    assert!(connect < Duration::from_millis(150), "{connect:?}");
    assert!(tls >= Duration::from_millis(290), "{tls:?}");
    assert!(r.latency >= connect + tls, "{r:?}");

    let plain = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let r = probe(
        quick(),
        target(plain.local_addr().unwrap().port(), Protocol::Tcp),
    )
    .await;
    assert!(r.connect_time.is_some() && r.tls_time.is_none(), "{r:?}");

    let r = probe(quick(), target(free_port(), Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::Refused);
    assert_eq!(
        (r.connect_time, r.tls_time),
        (None, None),
        "never connected"
    );

    let (_listener, _filler, port) = silent_listener();
    let r = probe(quick(), target(port, Protocol::Tls)).await;
    assert_eq!(r.observed, Observed::Timeout);
    assert_eq!(
        (r.connect_time, r.tls_time),
        (None, None),
        "never connected"
    );
}

#[tokio::test]
async fn tls_server_is_open_with_verified_facts_against_the_given_ca() {
    let pki = pki();
    let (port, mut sni) = tls_server(&pki).await;
    let ca = ca_file(&pki);
    let config = ProbeConfig {
        tls: TlsOptions {
            roots: TrustRoots::PemFile(ca.path().to_path_buf()),
            require_verified: true,
        },
        ..quick()
    };
    let t = target(port, Protocol::Tls).with_server_name("localhost");
    let r = probe(config, t).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let c = r.cert.expect("certificate facts");
    assert!(c.verified, "{c:?}");
    assert_eq!(c.verify_error, None);
    assert_eq!(c.subject, "CN=test server");
    assert_eq!(c.issuer, "CN=portcall test ca");
    assert_eq!(c.sans, ["DNS:localhost", "IP:127.0.0.1"]);
    assert!(
        c.not_after.ends_with('Z') && c.not_after.len() == 20,
        "{}",
        c.not_after
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), sni.recv())
            .await
            .expect("the server saw a ClientHello")
            .unwrap()
            .as_deref(),
        Some("localhost")
    );
}

#[tokio::test]
async fn tls_to_an_address_checks_the_ip_san_and_sends_no_sni() {
    let pki = pki();
    let (port, mut sni) = tls_server(&pki).await;
    let ca = ca_file(&pki);
    let config = ProbeConfig {
        tls: TlsOptions {
            roots: TrustRoots::PemFile(ca.path().to_path_buf()),
            require_verified: true,
        },
        ..quick()
    };
    let r = probe(config, target(port, Protocol::Tls)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert!(r.cert.unwrap().verified);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), sni.recv())
            .await
            .expect("the server saw a ClientHello")
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn unverified_certificate_is_open_with_facts_unless_verify_is_asked() {
    let pki = pki();
    let (port, _sni) = tls_server(&pki).await;
    let ca = ca_file(&pki);
    // The right CA but the wrong name.
    let wrong_name = target(port, Protocol::Tls).with_server_name("db1.example");
    let lenient = ProbeConfig {
        tls: TlsOptions {
            roots: TrustRoots::PemFile(ca.path().to_path_buf()),
            require_verified: false,
        },
        ..quick()
    };
    let r = probe(lenient.clone(), wrong_name.clone()).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    let c = r.cert.clone().unwrap();
    assert!(!c.verified);
    assert!(
        c.verify_error
            .unwrap()
            .contains("not valid for name \"db1.example\""),
        "{r:?}"
    );
    assert!(
        r.detail.starts_with("certificate not verified"),
        "{}",
        r.detail
    );

    let strict = ProbeConfig {
        tls: TlsOptions {
            require_verified: true,
            ..lenient.tls.clone()
        },
        ..lenient
    };
    let r = probe(strict, wrong_name).await;
    assert_eq!(r.observed, Observed::TlsError, "{r:?}");
    assert!(
        r.detail.starts_with("certificate not verified"),
        "{}",
        r.detail
    );
    assert_eq!(r.cert.unwrap().subject, "CN=test server");

    // A private CA is not in the system store.
    let system = ProbeConfig {
        tls: TlsOptions {
            roots: TrustRoots::System,
            require_verified: true,
        },
        ..quick()
    };
    let r = probe(
        system,
        target(port, Protocol::Tls).with_server_name("localhost"),
    )
    .await;
    assert_eq!(r.observed, Observed::TlsError, "{r:?}");
    assert!(!r.cert.unwrap().verified);
}

/// A self-signed server certificate for `localhost` / 127.0.0.1, marked as
/// a CA when `ca` (as `openssl req -x509` makes them), with its PEM.
fn self_signed(ca: bool) -> (Pki, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "self-signed server");
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (
        Pki {
            ca_pem: pem.clone(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        },
        pem,
    )
}

/// Regression: `probe --ca FILE` with a self-signed server certificate
/// failed with `CaUsedAsEndEntity`, while `openssl s_client -CAfile FILE`
/// verifies it.
#[tokio::test]
async fn ca_file_pins_a_self_signed_server_certificate() {
    for ca_flag in [true, false] {
        let (server, pem) = self_signed(ca_flag);
        let (port, _sni) = tls_server(&server).await;
        let pinned = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pinned.path(), &pem).unwrap();
        let strict = |file: &std::path::Path| ProbeConfig {
            tls: TlsOptions {
                roots: TrustRoots::PemFile(file.to_path_buf()),
                require_verified: true,
            },
            ..quick()
        };
        for t in [
            target(port, Protocol::Tls).with_server_name("localhost"),
            target(port, Protocol::Tls),
        ] {
            let r = probe(strict(pinned.path()), t).await;
            assert_eq!(r.observed, Observed::Open, "ca={ca_flag}: {r:?}");
            let c = r.cert.unwrap();
            assert!(c.verified, "{c:?}");
            assert_eq!(c.subject, "CN=self-signed server");
        }

        // Pinned, but asked for another name: not verified.
        let r = probe(
            strict(pinned.path()),
            target(port, Protocol::Tls).with_server_name("db1.example"),
        )
        .await;
        assert_eq!(r.observed, Observed::TlsError, "{r:?}");
        let e = r.cert.unwrap().verify_error.unwrap();
        assert!(e.contains("db1.example"), "{e}");

        // Another self-signed certificate in the file pins nothing, and
        // the reason is in words, not rustls's variant names.
        let (_, other) = self_signed(ca_flag);
        let other_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(other_file.path(), &other).unwrap();
        let r = probe(
            strict(other_file.path()),
            target(port, Protocol::Tls).with_server_name("localhost"),
        )
        .await;
        assert_eq!(r.observed, Observed::TlsError, "{r:?}");
        let e = r.cert.unwrap().verify_error.unwrap();
        assert!(e.starts_with("certificate not trusted: "), "{e}");
        assert!(
            !e.contains("UnknownIssuer") && !e.contains("CaUsedAsEndEntity"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn plain_listener_probed_as_tls_is_a_tls_error_with_the_reason() {
    // One that stays silent after accepting: the handshake deadline runs out.
    let silent = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let config = ProbeConfig {
        tls_timeout: Duration::from_millis(300),
        ..quick()
    };
    let r = probe(config.clone(), target(silent_port, Protocol::Tls)).await;
    assert_eq!(r.observed, Observed::TlsError, "{r:?}");
    assert!(
        r.detail.contains("no TLS answer within 300 ms"),
        "{}",
        r.detail
    );
    assert!(r.cert.is_none());

    // One that speaks another protocol first (like SSH or SMTP).
    let banner = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let banner_port = banner.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = banner.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
        }
    });
    let r = probe(config, target(banner_port, Protocol::Tls)).await;
    assert_eq!(r.observed, Observed::TlsError, "{r:?}");
    assert!(r.detail.starts_with("TLS handshake failed"), "{}", r.detail);
    // In words, not rustls's variant name.
    assert!(
        r.detail.contains("this port speaks plain TCP, not TLS")
            && !r.detail.contains("InvalidContentType"),
        "{}",
        r.detail
    );
}

/// Sends a line and expects the server to echo it back, like the canary
/// nonce exchange will.
struct Echo {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    hold: Duration,
}

impl Exchange for Echo {
    fn exchange<'a>(
        &'a self,
        context: ExchangeContext<'a>,
        stream: &'a mut dyn ProbeStream,
    ) -> ExchangeFuture<'a> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.hold).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let nonce = format!("nonce-{}\n", context.index);
            if stream.write_all(nonce.as_bytes()).await.is_err() {
                return ExchangeOutcome::WrongHost {
                    detail: "write failed".to_string(),
                };
            }
            let mut line = String::new();
            let mut reader = BufReader::new(stream).take(128);
            let _ = reader.read_line(&mut line).await;
            if line == nonce {
                ExchangeOutcome::Confirmed {
                    detail: format!("echoed by {}", context.peer),
                }
            } else {
                ExchangeOutcome::WrongHost {
                    detail: format!("answered {line:?}"),
                }
            }
        })
    }
}

async fn echo_server(mangle: bool) -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                let _ = BufReader::new(r).read_line(&mut line).await;
                if mangle {
                    line = "someone else\n".to_string();
                }
                let _ = w.write_all(line.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn exchange_confirms_or_reports_wrong_host_and_concurrency_is_bounded() {
    let good = echo_server(false).await;
    let bad = echo_server(true).await;
    let echo = Arc::new(Echo {
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        hold: Duration::from_millis(30),
    });
    let config = ProbeConfig {
        concurrency: 3,
        ..quick()
    };
    let prober = Prober::with_exchange(config, echo.clone()).unwrap();
    let mut targets: Vec<Target> = (0..12).map(|_| target(good, Protocol::Tcp)).collect();
    targets.push(target(bad, Protocol::Tcp));
    let mut seen = Vec::new();
    let results = prober
        .sweep(targets, &CancellationToken::new(), |i, _| seen.push(i))
        .await;
    assert_eq!(results.len(), 13);
    for r in &results[..12] {
        assert_eq!(r.observed, Observed::Open, "{r:?}");
        assert!(r.detail.starts_with("echoed by 127.0.0.1:"), "{}", r.detail);
    }
    assert_eq!(results[12].observed, Observed::WrongHost);
    assert_eq!(results[12].detail, "answered \"someone else\\n\"");
    seen.sort_unstable();
    assert_eq!(seen, (0..13).collect::<Vec<_>>());
    assert_eq!(echo.most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn exchange_without_an_answer_is_wrong_host_within_its_deadline() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let echo = Arc::new(Echo {
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        hold: Duration::ZERO,
    });
    let config = ProbeConfig {
        exchange_timeout: Duration::from_millis(200),
        ..quick()
    };
    let prober = Prober::with_exchange(config, echo).unwrap();
    let r = prober.probe(target(port, Protocol::Tcp)).await;
    assert_eq!(r.observed, Observed::WrongHost, "{r:?}");
    assert!(r.detail.contains("within 200 ms"), "{}", r.detail);
    assert!(r.latency < Duration::from_millis(450), "{:?}", r.latency);
}

#[tokio::test]
async fn sweep_keeps_input_order_and_cancellation_reports_local_error() {
    let open = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed = free_port();
    let prober = Prober::new(quick()).unwrap();
    let targets = vec![
        target(closed, Protocol::Tcp),
        target(open_port, Protocol::Tcp),
        target(closed, Protocol::Tcp),
    ];
    let results = prober
        .sweep(targets.clone(), &CancellationToken::new(), |_, _| {})
        .await;
    let observed: Vec<Observed> = results.iter().map(|r| r.observed).collect();
    assert_eq!(
        observed,
        [Observed::Refused, Observed::Open, Observed::Refused]
    );
    assert_eq!(results[1].target, targets[1]);

    let cancel = CancellationToken::new();
    cancel.cancel();
    let results = prober.sweep(targets, &cancel, |_, _| {}).await;
    assert!(
        results
            .iter()
            .all(|r| r.observed == Observed::LocalError && r.detail == "cancelled before a result")
    );
}

#[tokio::test]
async fn dns_names_resolve_from_the_hosts_file() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // `localhost` resolves from /etc/hosts; bind the source to IPv4 so the
    // IPv4 answer is the one used.
    let config = ProbeConfig {
        source: Some(LOCALHOST),
        ..quick()
    };
    let t = probe_core::probe::parse_target(&format!("localhost:{port}")).unwrap();
    let r = probe(config, t[0].clone()).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(r.address, Some(SocketAddr::new(LOCALHOST, port)));
}

/// Regression: attempts are no longer raced against the cancel token one by
/// one, so cancelling must abort the attempts in flight instead of waiting
/// for their connect timeouts.
#[tokio::test]
async fn cancelling_a_sweep_aborts_attempts_in_flight() {
    let (_listener, _filler, port) = silent_listener();
    let prober = Prober::new(ProbeConfig {
        connect_timeout: Duration::from_secs(30),
        retries: 0,
        ..ProbeConfig::default()
    })
    .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let results = prober
        .sweep(vec![target(port, Protocol::Tcp); 3], &cancel, |_, _| {})
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the sweep waited {:?} for its attempts",
        started.elapsed()
    );
    for r in &results {
        assert_eq!(r.observed, Observed::LocalError, "{}", r.detail);
        assert!(r.detail.contains("cancelled"), "{}", r.detail);
    }
}

/// A TLS server that behaves like one behind a path-MTU black hole: it
/// answers only connections whose SYN advertised a small MSS (the segments
/// it would send to anyone else are the ones a black hole eats).
async fn mtu_black_hole_server(pki: &Pki) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            let mss = socket2::SockRef::from(&s).tcp_mss().unwrap_or(u32::MAX);
            if mss > 1000 {
                held.push(s);
                continue;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 64];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_tls_stall_that_a_small_mss_clears_is_a_path_mtu_black_hole() {
    let pki = pki();
    let port = mtu_black_hole_server(&pki).await;
    let config = ProbeConfig {
        tls_timeout: Duration::from_millis(300),
        ..quick()
    };
    let r = probe(config.clone(), target(port, Protocol::Tls)).await;
    // What ordinary clients get stands; the second try names the cause.
    assert_eq!(r.observed, Observed::TlsError, "{r:?}");
    assert!(r.path_mtu, "{r:?}");
    assert!(
        r.detail.starts_with("path MTU black hole") && r.detail.contains("536-byte MSS"),
        "{}",
        r.detail
    );
    assert!(r.cert.is_some(), "the second try saw the certificate");

    // Without the second try it is only a stall; a server that is silent
    // to everyone stays "does not seem to speak TLS".
    let r = probe(
        ProbeConfig {
            mtu_retry_mss: None,
            ..config.clone()
        },
        target(port, Protocol::Tls),
    )
    .await;
    assert_eq!((r.observed, r.path_mtu), (Observed::TlsError, false));
    let quiet = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let quiet_port = quiet.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = quiet.accept().await {
            held.push(s);
        }
    });
    let r = probe(config, target(quiet_port, Protocol::Tls)).await;
    assert_eq!((r.observed, r.path_mtu), (Observed::TlsError, false));
    assert!(
        r.detail.contains("does not seem to speak TLS"),
        "{}",
        r.detail
    );
}

/// A TLS server on `ports` ports of 127.0.0.1 served by one thread, one
/// handshake at a time, each after `delay` (a single-threaded server). It
/// stops when the returned flag is set.
fn single_threaded_tls_server(
    pki: &Pki,
    ports: usize,
    delay: Duration,
) -> (Vec<u16>, Arc<std::sync::atomic::AtomicBool>) {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap(),
    );
    let listeners: Vec<std::net::TcpListener> = (0..ports)
        .map(|_| {
            let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let list = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            let mut idle = true;
            for l in &listeners {
                let Ok((mut s, _)) = l.accept() else { continue };
                idle = false;
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                std::thread::sleep(delay);
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut s).is_err() {
                        break;
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    (list, stop)
}

/// The issue-14 case: at default settings a sweep of many TLS ports of one
/// single-threaded server must not queue so many handshakes there that its
/// own queue turns ports into `tls-error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_threaded_tls_server_survives_a_sweep_at_default_settings() {
    let pki = pki();
    let (ports, stop) = single_threaded_tls_server(&pki, 300, Duration::from_millis(4));
    let targets: Vec<Target> = ports.iter().map(|p| target(*p, Protocol::Tls)).collect();
    let prober = Prober::new(ProbeConfig::default()).unwrap();
    let results = prober
        .sweep(targets, &CancellationToken::new(), |_, _| {})
        .await;
    stop.store(true, Ordering::Relaxed);
    let not_open: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.observed != Observed::Open)
        .collect();
    assert!(
        not_open.is_empty(),
        "{} of {} not open, e.g. {:?}",
        not_open.len(),
        results.len(),
        not_open.first()
    );
}

/// The first attempt to a host starts alone, so nothing says yet that a
/// stall there may be our own queue; when its handshake (and the small-MSS
/// try after it) stalls while the host completes handshakes on other ports,
/// the port is tried again rather than reported as not speaking TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_handshake_that_stalls_while_the_host_answers_others_is_tried_again() {
    let pki = pki();
    // The first try and the small-MSS try both wait past the TLS deadline.
    let (slow, _sni) = tls_server_delaying(&pki, |n| {
        if n < 2 {
            Duration::from_millis(1500)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let mut servers = Vec::new();
    let mut targets = vec![target(slow, Protocol::Tls)];
    for _ in 0..5 {
        let (port, sni) = tls_server(&pki).await;
        servers.push(sni);
        targets.push(target(port, Protocol::Tls));
    }
    let results = Prober::new(ProbeConfig::default())
        .unwrap()
        .sweep(targets, &CancellationToken::new(), |_, _| {})
        .await;
    for r in &results {
        assert_eq!(r.observed, Observed::Open, "{r:?}");
    }
    assert!(results[0].attempts >= 2, "{:?}", results[0]);
}

/// A sweep that sees the host answer on other ports gives up on a silent
/// one after a timeout from the measured round trips (100 ms on loopback),
/// not the whole `timeout_ms`; with `adaptive` off it waits `timeout_ms`.
#[tokio::test]
async fn silence_on_a_host_that_answers_elsewhere_gives_up_after_its_round_trip() {
    let (_listener, _filler, silent) = silent_listener();
    let open = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let mut targets = vec![
        target(silent, Protocol::Tcp),
        target(open_port, Protocol::Tcp),
    ];
    targets.extend((0..20).map(|_| target(free_port(), Protocol::Tcp)));
    let config = ProbeConfig {
        connect_timeout: Duration::from_millis(3000),
        retries: 1,
        ..ProbeConfig::default()
    };
    let started = tokio::time::Instant::now();
    let results = Prober::new(config.clone())
        .unwrap()
        .sweep(targets.clone(), &CancellationToken::new(), |_, _| {})
        .await;
    let elapsed = started.elapsed();
    assert_eq!(results[0].observed, Observed::Timeout, "{:?}", results[0]);
    assert_eq!(results[0].attempts, 2);
    assert!(
        results[0].detail.contains("adaptive"),
        "{}",
        results[0].detail
    );
    assert_eq!(results[1].observed, Observed::Open);
    // Two attempts of about 100 ms each, where a fixed deadline is 6 s.
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");

    let fixed = ProbeConfig {
        adaptive: false,
        retries: 0,
        connect_timeout: Duration::from_millis(1000),
        ..config
    };
    let started = tokio::time::Instant::now();
    let results = Prober::new(fixed)
        .unwrap()
        .sweep(targets, &CancellationToken::new(), |_, _| {})
        .await;
    assert_eq!(results[0].observed, Observed::Timeout, "{:?}", results[0]);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(results[0].detail, "no answer within 1000 ms (1 attempt)");
}

/// A UDP socket on loopback that answers each datagram with `reply` (or
/// stays silent when `None`), counting what it received.
async fn udp_responder(reply: Option<&'static [u8]>) -> (u16, Arc<AtomicUsize>) {
    let s = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let port = s.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            if let Some(r) = reply {
                let _ = s.send_to(r, from).await;
            }
        }
    });
    (port, seen)
}

#[tokio::test]
async fn udp_canary_line_is_open_with_arrival_and_the_host_named() {
    let (port, seen) = udp_responder(Some(b"PORTCALL-OK web 00ff\n")).await;
    let r = probe(quick(), target(port, Protocol::Udp)).await;
    assert_eq!(r.observed, Observed::Open, "{r:?}");
    assert_eq!(r.arrived, Some(1));
    assert_eq!(r.attempts, 1);
    assert_eq!(
        r.detail,
        "the portcall canary of web answered: the datagram arrived"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(r.local_address.map(|a| a.ip()), Some(LOCALHOST));
}

#[tokio::test]
async fn udp_silence_and_stray_replies_are_timeout_after_every_retry_never_open() {
    let config = ProbeConfig {
        connect_timeout: Duration::from_millis(150),
        retry_spacing: Duration::from_millis(50),
        retries: 2,
        ..quick()
    };
    for reply in [None, Some(&b"hello, not an answer\n"[..])] {
        let (port, seen) = udp_responder(reply).await;
        let r = probe(config.clone(), target(port, Protocol::Udp)).await;
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert_eq!(r.attempts, 3, "{r:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 3, "every datagram left");
        assert_eq!(r.arrived, None);
        assert!(
            r.detail.ends_with(
                "dropped, or a service that ignores this request; UDP cannot be proven without a canary"
            ),
            "{}",
            r.detail
        );
        assert!(r.walk.is_none());
    }
}

#[tokio::test]
async fn udp_closed_port_is_refused_with_the_icmp_evidence() {
    let closed = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = ProbeConfig {
        retries: 2,
        ..quick()
    };
    let r = probe(config, target(port, Protocol::Udp)).await;
    assert_eq!(r.observed, Observed::Refused, "{r:?}");
    assert_eq!(r.attempts, 1, "ICMP is final, not retried");
    let icmp = r.icmp.expect("the ICMP is evidence");
    assert_eq!(
        (icmp.kind.as_str(), icmp.from.as_str()),
        ("port-unreachable", "127.0.0.1")
    );
}

#[tokio::test]
async fn udp_on_ipv6_loopback_reads_icmpv6_evidence() {
    let Ok(closed) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let t = Target::new(
        Host::Ip("::1".parse().unwrap()),
        Port::new(port).unwrap(),
        Protocol::Udp,
    );
    let r = probe(quick(), t).await;
    assert_eq!(r.observed, Observed::Refused, "{r:?}");
    let icmp = r.icmp.expect("the ICMPv6 is evidence");
    assert_eq!(
        (icmp.kind.as_str(), icmp.from.as_str()),
        ("port-unreachable", "::1")
    );
}
